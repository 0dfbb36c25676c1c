/* Templates: the base OS, read from a systemd-style INI file with inih.
 * Keys live in one table in template.c; template_load() fills struct
 * template, checks each value's form and the rules between the template's
 * own keys; spec.c checks the template against the kickstart and the
 * layout. docs/templates.md describes every key. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "shared/macro.h"

enum rootfs_source {
        ROOTFS_SOURCE_INVALID = 0,
        ROOTFS_SOURCE_MMDEBSTRAP,
        ROOTFS_SOURCE_TARBALL,
        ROOTFS_SOURCE_DIRECTORY,
        ROOTFS_SOURCE_BUSYBOX,
};

enum boot_mode {
        BOOT_MODE_INVALID = 0,
        BOOT_MODE_BIOS,
        BOOT_MODE_UEFI,
        BOOT_MODE_BOTH,
};

const char *rootfs_source_to_string(enum rootfs_source s);
enum rootfs_source rootfs_source_from_string(const char *s);
const char *boot_mode_to_string(enum boot_mode m);
enum boot_mode boot_mode_from_string(const char *s);

/* Where a key was set, for messages from the verify pass. 0 = not set. */
struct template_overlay {
        char *source;      /* path, relative ones made absolute against the template's directory */
        char *destination; /* absolute path in the image */
        unsigned line;
};

struct template
{
        char *path;         /* as given */
        uint8_t digest[32]; /* SHA-256 of the file's bytes */

        /* [Image] */
        char *name;
        char *version;      /* default version, may be NULL */
        char *architecture; /* "x86-64" (default) or "arm64" */
        char *description;
        bool has_source_date_epoch;
        uint64_t source_date_epoch;

        /* [Rootfs] */
        enum rootfs_source source;
        char *suite;       /* mmdebstrap; busybox (optional) */
        char *variant;     /* mmdebstrap, default "minbase"; NULL for other sources */
        char *mirror;      /* NULL = read from the host's apt sources */
        char *source_path; /* tarball or directory; relative ones made absolute against the template's directory */
        char **packages;   /* strv */

        /* [Kernel] */
        char *kernel_package; /* Debian package the kernel and initrd come from */
        char *kernel;         /* path inside the tree, or NULL = newest /boot/vmlinuz-* */
        char *initrd;
        char *cmdline; /* kernel command line, without root= */

        /* [Boot] */
        enum boot_mode boot_mode; /* never INVALID after loading: both on x86-64, uefi on arm64 */
        unsigned timeout;         /* bootloader menu timeout in seconds */

        /* [Disk] */
        uint64_t disk_size;      /* bytes */
        char *root_fstype;       /* "ext4" (default), "erofs" */
        uint64_t esp_size;       /* bytes */
        uint64_t bios_boot_size; /* bytes */
        uint64_t root_size;      /* bytes; 0 = grow to fill the disk */

        /* [Files] */
        struct template_overlay *overlays;
        size_t n_overlays;

        /* line of each set key, by the key's index in the table; for spec.c */
        unsigned *key_lines;
};

/* Loads path. On bad input logs "file:line: message" and returns -EBADMSG;
 * a file that cannot be read is logged and returns its -errno. Missing keys
 * get their defaults; missing required keys (Name, Source) are errors.
 * *ret is set only on success and owned by the caller. */
int template_load(const char *path, struct template **ret);
/* Same from a buffer; name is used in messages and to resolve overlays. */
int template_load_buffer(const char *name, const char *data, size_t size, struct template **ret);
/* Line where section.key was set, 0 if it was not. */
unsigned template_key_line(const struct template *t, const char *section, const char *key);

struct template *template_free(struct template *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct template *, template_free);
