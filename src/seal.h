/* The seal's record of an image: its digests and the manifest that carries
 * them. The build writes the manifest beside the image; `ingot verify`
 * reads it back and recomputes every digest.
 *
 * The digest ("sha256-block-list") is not `sha256sum` of the file. The raw
 * disk is split into regions that together cover every byte once: one per
 * partition, and "the partition table", which is every byte outside the
 * partitions (primary GPT, gaps, backup GPT) as one or more ranges. Each
 * range is cut into SEAL_BLOCK_SIZE blocks from its own start (the last
 * one may be short):
 *
 *   block digest  = SHA-256(block bytes)
 *   region digest = SHA-256(block digest || block digest || ...)
 *   image digest  = SHA-256(region digest || ...), regions ordered by
 *                   their first byte (so the partition table comes first)
 *
 * A block whose bytes are all zero is listed as null in the manifest; its
 * digest is still SHA-256 of those zero bytes. Blocks lying wholly in a
 * hole of a sparse file are never read, data blocks that turn out to be
 * zero are listed the same way, so a sparse and a dense copy of the same
 * bytes have the same manifest. Each byte is read and hashed once, so the
 * cost follows the data in the image, not its size; the digests of a qcow2
 * image are those of its raw disk bytes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/macro.h"
#include "spec.h"
#include "verity.h"

#define SEAL_BLOCK_SIZE (UINT64_C(1) << 20)
#define SEAL_MANIFEST_FORMAT "ingot-manifest-1"
#define SEAL_DIGEST_ALGORITHM "sha256-block-list"
/* Manifests are small (64 hex digits per MiB of disk); anything bigger is
 * not one of ours. */
#define SEAL_MANIFEST_MAX (UINT64_C(64) << 20)

struct seal_range {
        uint64_t start; /* bytes */
        uint64_t size;
        size_t first_block; /* index of its first block in the region's list */
};

struct seal_region {
        unsigned number;           /* GPT slot; 0 = the partition table */
        char *name;                /* the partition's GPT name; NULL for the partition table */
        struct seal_range *ranges; /* in disk order; a partition has one */
        size_t n_ranges;

        /* Filled by seal_digest_compute(), or read from a manifest. */
        size_t n_blocks;
        uint8_t (*blocks)[32]; /* block digests, zero blocks included */
        bool *zero;            /* zero[i]: block i is all zero bytes (null in the manifest) */
        uint8_t digest[32];
};

struct seal_digest {
        uint64_t size;               /* bytes of the raw disk */
        struct seal_region *regions; /* ordered by first byte; regions[0] is the partition table */
        size_t n_regions;
        uint8_t digest[32];
};

/* The regions of a disk laid out as l, without digests. *ret is the
 * caller's (seal_digest_free). */
int seal_digest_from_layout(const struct part_layout *l, struct seal_digest **ret);
/* A copy of d's regions and size, without digests, to compute into. */
int seal_digest_new_like(const struct seal_digest *d, struct seal_digest **ret);
/* Reads the raw disk image at path and fills every block, region and the
 * image digest of d. The file must be d->size bytes (-EBADMSG otherwise).
 * Returns 0 or a negative errno; does not log. */
int seal_digest_compute(struct seal_digest *d, const char *path);
/* Checks the regions cover [0, size) once, in order; -EBADMSG when not. */
int seal_digest_check_layout(const struct seal_digest *d);
/* The first difference between what a manifest expects and what was
 * computed from the same regions: sets *ret_region (an index) and the
 * absolute byte range [*ret_start, *ret_end] of the first differing block
 * in disk order. Returns 1 when there is one, 0 when everything matches.
 * A region whose digest differs with no differing block (an inconsistent
 * manifest) is reported with its whole first range. */
int seal_digest_first_difference(const struct seal_digest *expected, const struct seal_digest *actual,
                                 size_t *ret_region, uint64_t *ret_start, uint64_t *ret_end);
struct seal_digest *seal_digest_free(struct seal_digest *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct seal_digest *, seal_digest_free);

/* What the build knows besides the spec when it seals. Borrowed. */
struct seal_input {
        const struct spec *spec;
        const char *image_file;             /* the image's file name in the manifest; NULL = from spec */
        enum output_format format;          /* how the image is published (raw or qcow2) */
        const char *rootfs_digest;          /* hex SHA-256 identifying the rootfs input */
        const struct verity_result *verity; /* NULL when the image has no verity */
};

/* The manifest for in and the digests d as JSON (a new reference). */
json_t *seal_manifest_to_json(const struct seal_input *in, const struct seal_digest *d);
/* Hashes raw_image (the raw disk, before any conversion) and writes the
 * manifest to manifest_path: deterministic bytes, JSON_INDENT(2), a final
 * newline, mode 0644, written atomically. Logs its errors. */
int seal_manifest_write(const struct seal_input *in, const char *raw_image, const char *manifest_path);

/* A manifest read back, as far as `ingot verify` needs it. */
struct seal_manifest {
        char *name;
        char *version;
        char *image_file;
        char *image_format;         /* "raw" or "qcow2" */
        struct seal_digest *digest; /* the expected digests and their regions */
        bool has_verity;
        unsigned verity_data_partition;
        unsigned verity_hash_partition;
        uint64_t verity_data_size; /* 0 = the whole data partition */
        uint64_t verity_hash_size; /* 0 = the whole hash partition */
        char *verity_root_hash;
};

/* Parses manifest bytes. Anything malformed (not JSON, another format,
 * missing or mistyped fields, regions that do not tile the disk, block
 * lists of the wrong length) is -EBADMSG with a one-line reason in
 * *ret_error (a new string, set on -EBADMSG only). */
int seal_manifest_parse(const char *data, size_t size, struct seal_manifest **ret, char **ret_error);
struct seal_manifest *seal_manifest_free(struct seal_manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct seal_manifest *, seal_manifest_free);
