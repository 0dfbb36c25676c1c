/* Reading an image back: the partition table (libparted for the layout,
 * libblkid for the GPT GUIDs and attribute bits), the filesystem in each
 * partition (libblkid), and the OS inside (libguestfs, in a child process
 * with a deadline, because guestfs_launch has no timeout of its own and
 * hangs forever on hosts where /dev/kvm exists but does not work).
 * Nothing here writes to the image. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "shared/macro.h"

/* GPT attribute bits with a name (UEFI 2.10 5.3.3, and the DPS bits). */
#define PROBE_GPT_ATTR_REQUIRED (UINT64_C(1) << 0)
#define PROBE_GPT_ATTR_NO_BLOCK_IO (UINT64_C(1) << 1)
#define PROBE_GPT_ATTR_LEGACY_BIOS_BOOTABLE (UINT64_C(1) << 2)
#define PROBE_GPT_ATTR_GROWFS (UINT64_C(1) << 59)
#define PROBE_GPT_ATTR_READ_ONLY (UINT64_C(1) << 60)
#define PROBE_GPT_ATTR_HIDDEN (UINT64_C(1) << 62)
#define PROBE_GPT_ATTR_NO_AUTO (UINT64_C(1) << 63)

/* The filesystem (or other signature) libblkid found in a partition. Every
 * string is NULL when the partition holds nothing libblkid knows. */
struct probe_fs {
        char *type; /* "ext4", "vfat", "swap", ... */
        char *label;
        char *uuid;      /* as libblkid prints it ("5037-E596" for FAT) */
        char *version;   /* "1.0", "FAT32", ... */
        char *usage;     /* "filesystem", "other", "crypto", "raid" */
        char *volume_id; /* FAT only: the volume serial, same text as uuid */
};

struct probe_partition {
        unsigned number;     /* 1-based slot */
        uint64_t start;      /* bytes */
        uint64_t end;        /* bytes, inclusive: the last byte of the partition */
        uint64_t size;       /* bytes */
        char *name;          /* GPT partition name; NULL for MBR */
        char *type;          /* GPT type GUID (lower case), or "0x83" for MBR */
        const char *role;    /* DPS role from part.h ("esp", "root", ...), NULL when unknown; static */
        char *uuid;          /* GPT partition GUID (lower case); MBR: "<disk id>-<nn>" */
        uint64_t attributes; /* GPT attribute bits; MBR: the boot flag 0x80 */
        struct probe_fs fs;
};

enum probe_os_status {
        PROBE_OS_SKIPPED,   /* not asked for (--no-os) */
        PROBE_OS_FOUND,     /* libguestfs found an operating system */
        PROBE_OS_NOT_FOUND, /* the appliance ran, but no OS root was found */
        PROBE_OS_FAILED,    /* libguestfs could not run (error or timeout): see error */
        _PROBE_OS_STATUS_MAX,
};

struct probe_os {
        enum probe_os_status status;
        char *error;        /* PROBE_OS_FAILED: why, as one line */
        char *root;         /* appliance device of the root, "/dev/sda2" */
        unsigned partition; /* the root's partition number, 0 when not a partition */
        char *type;         /* "linux", "windows", ... */
        char *distro;       /* "debian", "fedora", ..., "unknown" */
        char *product_name;
        char *version; /* "MAJOR.MINOR" */
        char *hostname;
        char *arch;
        char *os_release_id;         /* /etc/os-release ID= */
        char *os_release_version_id; /* VERSION_ID= */
        char *image_id;              /* IMAGE_ID= (ingot's version stamp) */
        char *image_version;         /* IMAGE_VERSION= */
        char *accel;                 /* how the appliance ran: "tcg", "kvm:tcg" (libguestfs' default) */
        double launch_sec;           /* guestfs_launch wall time */
        double total_sec;            /* launch plus inspection */
};

struct probe_image {
        char *path;
        char *table;     /* "gpt" or "dos" (libblkid's names) */
        char *disk_uuid; /* GPT disk GUID (lower case); MBR: "0x1234abcd" */
        uint64_t size;   /* bytes */
        unsigned sector_size;
        struct probe_partition *partitions;
        size_t n_partitions;
        char **warnings; /* strv: what libparted complained of, where libparted and libblkid disagree */
        struct probe_os os;
};

/* Reads the partition table and the filesystems of the image at path.
 * Logs and returns: -ENOENT (and other open errors) when the file cannot be
 * opened, -EISDIR for a directory, -EMEDIUMTYPE when it holds no partition
 * table (the message says what it holds instead, e.g. a bare filesystem or
 * a qcow2 image), -EIO when a library fails. On success *ret is a new
 * probe_image the caller frees with probe_image_free(); its os is SKIPPED. */
int probe_image(const char *path, struct probe_image **ret);

struct probe_os_options {
        unsigned timeout_sec; /* for the whole libguestfs run; 0 = PROBE_OS_TIMEOUT_DEFAULT */
};
#define PROBE_OS_TIMEOUT_DEFAULT 300

/* Runs libguestfs inspection on img->path (read-only) and fills img->os.
 * libguestfs runs in a child process in its own process group, killed with
 * everything it started when the deadline passes. The appliance runs under
 * TCG unless KVM looks usable (then KVM first and TCG when that times out
 * during launch); LIBGUESTFS_BACKEND_SETTINGS in the environment overrides
 * the choice. A failure of libguestfs is not an error of this call: it
 * returns 0 with os.status PROBE_OS_FAILED and os.error set (logged at
 * debug level). Returns negative errno only when it cannot run at all
 * (-ENOMEM, fork or pipe failure), without logging. */
int probe_os(struct probe_image *img, const struct probe_os_options *o);

/* The value of key in os-release text (shell-like quoting and escapes
 * undone), newly allocated into *ret; NULL there when the key is absent.
 * Returns 0 or -ENOMEM. */
int probe_os_release_value(const char *text, const char *key, char **ret);

const char *probe_os_status_to_string(enum probe_os_status s);
/* "required", "no-block-io", "legacy-bios-bootable", "growfs", "read-only",
 * "hidden", "no-auto", or "bit-N" for the others, appended to *l. */
int probe_gpt_attributes_to_strv(uint64_t attributes, char ***l);

/* The image as JSON, keys in a fixed order (see ingot(1)). New reference. */
json_t *probe_image_to_json(const struct probe_image *img);
/* The same facts as text for people. */
void probe_image_print(const struct probe_image *img, FILE *f);

struct probe_image *probe_image_free(struct probe_image *img);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct probe_image *, probe_image_free);
