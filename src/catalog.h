/* The catalog: AMI-style image records in a store (store.h), their ids,
 * block lists, names, channels and the liveness rules gc follows. The
 * commands (push, images, show, promote, deprecate, deregister, pull, gc)
 * parse their arguments and call this; deploy resolves references with
 * catalog_resolve().
 *
 * Objects (all JSON, all written with one whole-object put):
 *   images/<ami-id>.json            the record, fields mirroring EC2's Image
 *   blocklists/<ami-id>.json        {block_size, size, blocks: [hex|null]}
 *   names/<name>/<version>.json     {image_id, image_digest}, never rewritten
 *   channels/<name>/<channel>.json  {image_id, version, updated, generation}
 *   blocks/<sha256>                 one block of STORE_BLOCK_SIZE bytes
 *
 * Ids are derived, not drawn: "ami-" + the first 17 hex digits of
 * SHA-256("ingot-ami-v1\n" name "\n" version "\n" image-digest), so a
 * re-push of the same bytes under the same name and version gets the same
 * id, and the snapshot id is derived the same way ("ingot-snap-v1"). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/macro.h"
#include "store.h"

#define CATALOG_RECORD_FORMAT "ingot-image-record-1"
/* "snap-" + 17 hex + NUL fits, and so does "ami-" + 17 hex */
#define CATALOG_ID_MAX 24
#define CATALOG_ID_HEX 17
/* "blocks/" + 64 hex + NUL */
#define CATALOG_BLOCK_KEY_MAX 72
/* EC2's limits on tags */
#define CATALOG_TAGS_MAX 50
#define CATALOG_TAG_KEY_MAX 128
#define CATALOG_TAG_VALUE_MAX 256
/* Records, block lists and pointers are small; anything bigger is not
 * ours and is refused before it is read whole: a record carries its
 * manifest (at most SEAL_MANIFEST_MAX, 64 MiB); names/, channels/ and
 * locks/ objects are a few hundred bytes; a block list is ~70 bytes per
 * MiB of image (256 MiB: a 3.5 TiB image). */
#define CATALOG_OBJECT_MAX (UINT64_C(256) << 20)
#define CATALOG_RECORD_MAX (UINT64_C(65) << 20)
#define CATALOG_POINTER_MAX (UINT64_C(64) << 10)

/* ---- ids ---- */

/* The image id for name, version and the manifest's image digest (64 hex). */
void catalog_image_id(const char *name, const char *version, const char *digest_hex, char ret[static CATALOG_ID_MAX]);
/* The snapshot id of the image's root volume, derived likewise. */
void catalog_snapshot_id(const char *name, const char *version, const char *digest_hex,
                         char ret[static CATALOG_ID_MAX]);
/* "ami-" + 17 lower-case hex digits. */
bool catalog_id_is_valid(const char *s);
/* A name, version or channel: [A-Za-z0-9._-]+, not starting with '.' or
 * '-', at most 128 characters (so it is one store key component and a
 * reference stays unambiguous). */
bool catalog_word_is_valid(const char *s);

/* ---- references ---- */

enum catalog_ref_kind {
        CATALOG_REF_ID,      /* ami-0123456789abcdef0 */
        CATALOG_REF_VERSION, /* NAME@VERSION */
        CATALOG_REF_CHANNEL, /* NAME:CHANNEL */
};

struct catalog_ref {
        enum catalog_ref_kind kind;
        char *id;      /* CATALOG_REF_ID */
        char *name;    /* the others */
        char *version; /* CATALOG_REF_VERSION */
        char *channel; /* CATALOG_REF_CHANNEL */
};

/* Parses a reference; -EINVAL when it is none of the three forms. *ret
 * is the caller's (catalog_ref_done), set on success only. */
int catalog_ref_parse(const char *s, struct catalog_ref *ret);
void catalog_ref_done(struct catalog_ref *r);

/* ---- tags ---- */

/* Parses "K=V" and appends K and V to *tags (a strv of pairs K, V, ...),
 * replacing the value of a key already there. -EINVAL when the tag breaks
 * EC2's rules (empty key, "aws:" prefix, key > 128 or value > 256
 * characters, control characters, more than 50 tags); *ret_error then says
 * which (a static string). */
int catalog_tag_add(char ***tags, const char *kv, const char **ret_error);

/* ---- block lists ---- */

struct catalog_blocklist {
        uint64_t block_size; /* STORE_BLOCK_SIZE when computed here */
        uint64_t size;       /* bytes of the raw image */
        size_t n_blocks;     /* ceil(size / block_size) */
        uint8_t (*hashes)[32];
        bool *zero; /* zero[i]: block i is all zeros, not stored (null) */
};

/* Cuts the raw image open as fd (size bytes) into blocks from offset 0 and
 * hashes each one. Blocks wholly in a hole (SEEK_DATA/SEEK_HOLE) are never
 * read; data blocks that turn out all zero are marked the same way. The
 * last block may be short. Does not log. */
int catalog_blocklist_compute(int fd, uint64_t size, struct catalog_blocklist **ret);
json_t *catalog_blocklist_to_json(const struct catalog_blocklist *b);
/* -EBADMSG on anything malformed, with a reason in *ret_error (new string). */
int catalog_blocklist_from_json(const char *data, size_t size, struct catalog_blocklist **ret, char **ret_error);
struct catalog_blocklist *catalog_blocklist_free(struct catalog_blocklist *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct catalog_blocklist *, catalog_blocklist_free);
/* Bytes of block i (block_size, or less for the last one). */
uint64_t catalog_blocklist_block_bytes(const struct catalog_blocklist *b, size_t i);
/* Reads rec's block list from s and checks it against the record (its
 * SHA-256 and size). -ENOENT, -EFBIG and -EBADMSG (missing, oversized,
 * corrupt) with the reason in *ret_reason (new string), not logged; the
 * store logs its other errors. */
struct catalog_record;
int catalog_blocklist_load(struct store *s, const struct catalog_record *rec, struct catalog_blocklist **ret,
                           char **ret_reason);
/* "blocks/<hex>" into buf; returns buf. */
char *catalog_block_key(const uint8_t hash[32], char buf[static CATALOG_BLOCK_KEY_MAX]);
/* The distinct keys of b's non-zero blocks, sorted (a new strv). */
int catalog_blocklist_keys(const struct catalog_blocklist *b, char ***ret);

/* ---- records ---- */

enum catalog_state {
        CATALOG_STATE_PENDING,
        CATALOG_STATE_AVAILABLE,
        CATALOG_STATE_DEREGISTERED,
};

struct catalog_record {
        char *image_id;
        char *name;
        char *version;
        char *description;
        char *architecture; /* x86_64 | arm64 */
        char *boot_mode;    /* legacy-bios | uefi | uefi-preferred */
        enum catalog_state state;
        char *state_reason; /* NULL = none */
        int64_t creation_ms;
        int64_t deprecation_ms; /* -1 = not deprecated */
        char **tags;            /* strv of pairs K, V */
        char **channels;        /* informational: channels known to point here */
        char *snapshot_id;
        uint64_t volume_size_gib;
        /* the image in the store */
        uint64_t size;
        char *digest; /* the manifest's image digest, hex */
        uint64_t block_size;
        char *block_list; /* "blocklists/<id>.json" */
        char *block_list_sha256;
        uint64_t blocks_stored;
        json_t *manifest; /* owned reference */
        char *manifest_sha256;
        char *signature; /* base64 + "\n" as in MANIFEST.sig, or NULL */
        char *verity_root_hash;
        char *os_image_id, *os_image_version;
};

struct catalog_record *catalog_record_free(struct catalog_record *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct catalog_record *, catalog_record_free);
json_t *catalog_record_to_json(const struct catalog_record *r);
/* -EBADMSG on anything malformed, with a reason in *ret_error (new string). */
int catalog_record_from_json(const char *data, size_t size, struct catalog_record **ret, char **ret_error);
/* What to show: "pending", "available", "deprecated" (available with a
 * deprecation time at or before now_ms) or "deregistered". */
const char *catalog_record_state_string(const struct catalog_record *r, int64_t now_ms);
const char *catalog_state_to_string(enum catalog_state s);

/* EC2's architecture and boot mode from a manifest's "architecture"
 * (x86-64, arm64, …) and "boot_modes" ([bios, uefi]); NULL when unknown. */
const char *catalog_architecture_from_manifest(const char *arch);
const char *catalog_boot_mode_from_manifest(json_t *boot_modes);

/* ---- time ---- */

int64_t catalog_now_ms(void);
/* "2024-05-01T12:00:00.000Z" into buf (at least 32 bytes). */
char *catalog_format_time(int64_t ms, char *buf, size_t size);
/* "now", or ISO 8601 UTC: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS[.mmm]][Z].
 * -EINVAL when malformed. */
int catalog_parse_time(const char *s, int64_t now_ms, int64_t *ret);

/* ---- the store ---- */

/* Opens the store a command was given (--store URL, else the default,
 * see store_url_default()). Logs its errors: -EINVAL for a bad URL
 * (exit 2), others exit 1. */
int catalog_store_open(const char *arg, bool insecure, unsigned jobs, struct store **ret);

/* j as indented JSON plus "\n": the bytes every catalog object is
 * written as. A new string, NULL on ENOMEM. */
char *catalog_json_format(json_t *j);

/* Reads and parses one JSON object: -ENOENT when absent, -EBADMSG
 * (logged) when malformed, other errors logged. */
int catalog_get_json(struct store *s, const char *key, json_t **ret);
/* Writes j as indented JSON plus "\n" (one atomic put). Logs its errors. */
int catalog_put_json(struct store *s, const char *key, json_t *j);

/* Reads images/<id>.json. -ENOENT when there is none (not logged); other
 * errors logged. */
int catalog_record_load(struct store *s, const char *id, struct catalog_record **ret);
int catalog_record_save(struct store *s, const struct catalog_record *r);

/* Finds the record a reference names: an id, NAME@VERSION (through
 * names/) or NAME:CHANNEL (through channels/). Logs its errors: -EINVAL
 * for a malformed reference, -ENOENT when nothing by that reference is in
 * the store. The record may be in any state; the caller decides. */
int catalog_resolve(struct store *s, const char *ref, struct catalog_record **ret);

/* Points channels/<name>/<channel>.json at r ({image_id, version,
 * updated, generation}, generation one past the one read) with a
 * compare-and-swap on the object read: of two promotes that read the same
 * generation, one writes and the other changes nothing. 0: r holds the
 * channel, *ret_winner is r's id, *ret_generation the new generation.
 * -ESTALE (not logged): a concurrent promote won; *ret_winner and
 * *ret_generation say which image and generation the channel holds.
 * Other errors logged. */
int catalog_promote(struct store *s, const struct catalog_record *r, const char *channel, char **ret_winner,
                    uint64_t *ret_generation);
/* Removes channels/<name>/<channel>.json when it points at id, and only if
 * it is still the object read (a concurrent promote elsewhere stands).
 * 1 removed, 0 left alone; errors logged. */
int catalog_channel_drop(struct store *s, const char *name, const char *channel, const char *id);

/* names/<name>/<version>.json, created exclusively for rec. 0 claimed
 * now; 1 already rec's (a re-push); -EEXIST (logged, naming the image that
 * has it) when another image's. */
int catalog_claim_name(struct store *s, const struct catalog_record *rec);
/* 0 when names/ still names rec, -EEXIST (logged) when another image. */
int catalog_name_check(struct store *s, const struct catalog_record *rec);

/* The channels of name that point at id: a new strv of channel names,
 * sorted. */
int catalog_channels_of(struct store *s, const char *name, const char *id, char ***ret);

/* ---- gc ---- */

/* From what is stored (keys and their mtimes) and what live records need
 * (sorted live keys), picks the keys to delete: under blocks/ or
 * blocklists/, not live, and at least grace seconds old. A new strv. */
int catalog_gc_select(char *const *keys, const int64_t *mtimes, char *const *live, int64_t now, uint64_t grace,
                      char ***ret);

struct catalog_gc_plan {
        char **delete; /* keys, sorted */
        size_t n_blocks, n_blocklists;
        size_t n_live_records, n_dead_records;
        size_t n_kept_young; /* unreferenced but within the grace period */
        uint64_t bytes;      /* of the blocks to delete (upper bound for ones no block list names) */
};

/* Reads every record and block list, and works out what gc would delete.
 * Refuses (-EBADMSG, logged) when a record cannot be read: what it needs
 * is unknown then. Logs its errors. */
int catalog_gc_plan(struct store *s, int64_t now, uint64_t grace, struct catalog_gc_plan *ret);
void catalog_gc_plan_done(struct catalog_gc_plan *p);

struct catalog_gc_result {
        size_t n_blocks, n_blocklists;
        size_t n_temporaries; /* leftovers of killed writers removed */
        uint64_t bytes;
};

/* ingot gc: under the store's exclusive lock (lock.h; none for a dry
 * run), plans and deletes what no live record needs and is older than
 * grace seconds, then sweeps what killed writers left. Stops before
 * deleting anything when a record, or a live record's block list, is
 * missing or unreadable. *ret_plan is what was planned. Logs. */
int catalog_gc(struct store *s, uint64_t grace, bool dry_run, struct catalog_gc_plan *ret_plan,
               struct catalog_gc_result *ret);
