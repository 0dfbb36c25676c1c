/* The spec: a template and an optional kickstart resolved into one plan,
 * checked in one pass. Everything later stages need is here as plain data:
 * the layout in bytes, every GUID, the package set, the kernel command line,
 * the outputs. The same inputs always give the same spec. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "kickstart.h"
#include "part.h"
#include "shared/macro.h"
#include "template.h"

enum output_format {
        OUTPUT_FORMAT_RAW,
        OUTPUT_FORMAT_QCOW2,
};

struct spec_options {
        const char *template;   /* a path, or a name looked up in the template directories */
        const char *kickstart;  /* likewise; NULL = none */
        const char *version;    /* NULL = the template's Version= */
        const char *output_dir; /* NULL = "." */
        const char *format;     /* "raw" (default) or "qcow2" */
        bool verity;            /* a root-verity partition and dm-verity at boot */
};

struct spec {
        struct template *template;
        struct kickstart *kickstart; /* NULL when none was given */
        char *template_path;         /* as resolved */
        char *kickstart_path;

        char *name;
        char *version;
        char *architecture;
        enum boot_mode boot_mode;
        bool verity; /* the root is opened through dm-verity (--verity) */
        char *stamp; /* NAME_VERSION: the root's GPT name and (cut to 16 bytes) its label */
        uint64_t source_date_epoch;
        uint8_t seed[32]; /* SHA-256 over every input; the disk and partition GUIDs derive from it */
        /* SHA-256 over the name and architecture only: filesystem UUIDs,
         * directory hash seeds, FAT volume ids and the verity salt derive
         * from it, so every version of an image shares them and a new
         * version differs from the last only where its content does (the
         * ext4 metadata checksums are seeded by the filesystem UUID). */
        uint8_t lineage[32];

        struct part_layout *layout;
        char **packages; /* template's plus %packages, minus exclusions */
        char **packages_excluded;
        char *cmdline; /* full kernel command line, root= included; with verity all but
                        * ingot.verity.roothash=, which the build appends */

        enum output_format format;
        char *output_dir;
        char *output_image;
        char *output_manifest;
};

/* Loads, resolves and verifies. Bad input is logged as "file:line: message"
 * and returns -EBADMSG (exit code 2); an unreadable input returns its
 * -errno, also logged. *ret is set only on success, owned by the caller. */
int spec_load(const struct spec_options *opts, struct spec **ret);
struct spec *spec_free(struct spec *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct spec *, spec_free);

/* Resolves a template or kickstart argument: a value containing '/' or
 * ending in suffix is a path; otherwise NAME is looked up as NAME+suffix in
 * $INGOT_DATA_PATH (colon-separated) and then the installed data directory
 * under subdir. Returns a new string or -ENOENT. */
int spec_resolve_input(const char *arg, const char *subdir, const char *suffix, char **ret);

/* The device the initrd opens the verity root as (data/verity/). */
#define SPEC_VERITY_DEVICE "/dev/mapper/ingot-root"

/* Version strings as os-release IMAGE_VERSION allows, [0-9a-z._-]+, that
 * are also one store key component (catalog_word_is_valid): not starting
 * with '.' or '-', at most 64 characters. Image names follow the same rule. */
bool spec_version_is_valid(const char *v);

/* The first word of a kernel command line that only the build may set
 * (root=, init=, rdinit=, rootflags=, rootfstype=, roothash=, rw, ro and
 * the verity options), or NULL; *ret_len is its length. */
const char *spec_cmdline_owned_word(const char *cmdline, size_t *ret_len);

/* The plan as JSON (a new reference) and as text. Password hashes are
 * named by algorithm only. */
json_t *spec_plan_to_json(const struct spec *s);
void spec_plan_print(const struct spec *s, FILE *f);
