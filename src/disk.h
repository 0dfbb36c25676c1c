/* The disk stage: a sparse image file with the spec's GPT (written with
 * libparted, then given the spec's derived GUIDs and DPS type GUIDs) and
 * every filesystem created and filled on the host without mounting:
 * ext4 with mke2fs -d from the root tar, vfat with mkfs.vfat + mcopy from a
 * staging directory, swap with mkswap. Filesystem types are an ops table. */
#pragma once

#include "spec.h"

struct disk_inputs {
        const char *root_tar; /* contents of the root filesystem (tar, numeric owners) */
        const char *esp_dir;  /* contents of the ESP (a staging directory); NULL = empty */
        const char *work_dir; /* where scratch files go; NULL = beside the image */
        /* Called once every other partition is made and before the ESP is
         * filled from esp_dir: the place to seal the root (dm-verity) and
         * stage the ESP with a command line that names the root hash.
         * NULL = nothing to do. A negative return fails the build. */
        int (*before_esp)(const char *image, void *userdata);
        void *userdata;
};

/* Writes the whole image to path (which must not exist; the caller renames
 * it into place). On failure logs, removes path and returns a negative
 * errno (-ENOSPC when the content does not fit its partition).
 * The inputs are only read. Scratch files go to a directory beside path
 * (path.scratch-XXXXXX, removed before returning): the root tar is unpacked
 * there, so that filesystem needs room for the root content as well. Needs
 * no root: owners come from the tar through a fakeroot session. */
int disk_build(const struct spec *s, const struct disk_inputs *in, const char *path);
