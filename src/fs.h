/* Filesystems made and filled straight into a partition of an image file,
 * without mounting, loop devices or root: ext4 with mke2fs -d, vfat with
 * mkfs.vfat + mmd/mcopy, swap with mkswap. Each type is an ops table entry;
 * every UUID, hash seed, volume id and timestamp comes from the partition's
 * plan entry and SOURCE_DATE_EPOCH, so the same inputs give the same bytes. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "part.h"

/* Where and what to write. Everything is borrowed for the call. */
struct fs_target {
        const char *image;              /* the disk image file, already its full size */
        const struct part_entry *entry; /* the partition: offset, size, ids, label */
        const char *scratch_dir;        /* an empty directory beside the image for temporary files;
                                         * the ops remove what they put there */
        uint64_t source_date_epoch;     /* every timestamp in the filesystem */
        const char *tar;                /* content as a tar (numeric owners kept); NULL = empty */
        const char *dir;                /* content as a directory (read only); NULL = empty */
};

struct fs_ops {
        const char *name; /* the plan's fstype: "ext4", "vfat", "swap", ... */
        bool takes_tar;   /* content comes as fs_target.tar */
        bool takes_dir;   /* content comes as fs_target.dir */
        /* Creates and fills the filesystem; logs its failure once (naming
         * the program and its last stderr line) and returns a negative
         * errno, -ENOSPC when the content does not fit the partition. */
        int (*make)(const struct fs_target *t);
};

/* The ops for fstype, NULL when the type is unknown. A known type whose
 * tools are not supported yet (erofs) has make == NULL: fs_make() refuses it. */
const struct fs_ops *fs_ops_find(const char *fstype);

/* Checks that t's content fits the type, then calls ops->make. Logs. */
int fs_make(const struct fs_ops *ops, const struct fs_target *t);
