/* Partition layout: turns partition requests (from kickstart "part" lines
 * or the template's defaults) into a plan in bytes, with type GUIDs from
 * the Discoverable Partitions Specification and every GUID derived from the
 * build seed. Plain data only; writing the GPT (libparted) comes later and
 * reads this plan. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "shared/id128.h"
#include "shared/macro.h"

#define PART_ALIGN (UINT64_C(1) << 20)
#define PART_SECTOR_SIZE 512
/* Backup GPT at the end of the disk: 32 sectors of entries plus the header. */
#define PART_GPT_BACKUP_SIZE (33 * PART_SECTOR_SIZE)

enum part_role {
        PART_ROLE_BIOS_BOOT,
        PART_ROLE_ESP,
        PART_ROLE_XBOOTLDR,
        PART_ROLE_ROOT,
        PART_ROLE_ROOT_VERITY, /* the dm-verity hash tree of the root (--verity) */
        PART_ROLE_SWAP,
        PART_ROLE_HOME,
        PART_ROLE_SRV,
        PART_ROLE_VAR,
        PART_ROLE_VAR_TMP,
        PART_ROLE_GENERIC,
        _PART_ROLE_MAX,
};

/* One requested partition. Strings are borrowed for the call. */
struct part_request {
        const char *mountpoint; /* "/", "/boot/efi", "swap", "biosboot", ... */
        uint64_t size;          /* minimum size in bytes */
        uint64_t max_size;      /* 0 = no limit */
        bool grow;
        const char *fstype; /* "ext4", "vfat", "swap", NULL for biosboot */
        const char *label;  /* filesystem label and GPT name; NULL = default */
};

struct part_entry {
        unsigned number; /* 1-based GPT slot */
        enum part_role role;
        char *mountpoint;
        char *fstype; /* NULL for biosboot */
        char *name;   /* GPT partition name */
        char *label;  /* filesystem label, NULL when no filesystem */
        id128_t type;
        id128_t uuid;      /* GPT partition GUID */
        id128_t fs_uuid;   /* filesystem UUID (FAT: first 32 bits are the volume id) */
        id128_t hash_seed; /* ext4 directory hash seed (mke2fs -E hash_seed=) */
        uint64_t start;    /* bytes */
        uint64_t size;     /* bytes */
        bool grow;
        bool read_only; /* GPT attribute bit 60: the sealed root */
};

struct part_layout {
        uint64_t disk_size;
        id128_t disk_uuid;
        uint64_t first_usable; /* bytes */
        uint64_t last_usable;  /* bytes, exclusive end of the usable area */
        struct part_entry *entries;
        size_t n_entries;
};

/* Maps a mount point to its role; "/" is the root for arch ("x86-64" or
 * "arm64"). Returns the role; unknown absolute paths are PART_ROLE_GENERIC. */
enum part_role part_role_from_mountpoint(const char *mountpoint);
const char *part_role_to_string(enum part_role role);
/* The DPS type GUID for a role on arch; -EOPNOTSUPP for an unknown arch. */
int part_role_type(enum part_role role, const char *arch, id128_t *ret);
/* The default filesystem for a role (root_fstype for the root), NULL when
 * the role has none (biosboot). */
const char *part_role_default_fstype(enum part_role role, const char *root_fstype);

/* Plans n requests on a disk of disk_size bytes. Sizes are rounded up to
 * PART_ALIGN; grow partitions share the free space equally up to their
 * max_size. Returns -ENOSPC when the minimum sizes do not fit (then
 * *ret_needed, if given, is the disk size that would), -EINVAL for a
 * request that makes no sense (zero size without grow). */
int part_plan(const struct part_request *requests, size_t n, uint64_t disk_size, const char *arch,
              const uint8_t seed[32], struct part_layout **ret, uint64_t *ret_needed);

struct part_layout *part_layout_free(struct part_layout *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct part_layout *, part_layout_free);
