/* The rootfs stage: produces the root tree for a spec, as a tar with
 * numeric owners (so no root is needed to hold it), plus the kernel and
 * initrd the boot stage puts on the ESP. Sources are an ops table
 * (mmdebstrap, tarball, directory, busybox). The bootstrap result is cached
 * under the cache directory, keyed by a hash of every input that shapes it;
 * the kickstart is then applied to a copy, inside a user namespace, on every
 * build. */
#pragma once

#include "shared/macro.h"
#include "spec.h"

struct rootfs {
        char *work_dir;       /* per-build directory holding the files below; removed by rootfs_free() */
        char *tar;            /* the final tree: kickstart applied, %post run, ready hook and identity installed */
        char *kernel;         /* vmlinuz for the ESP */
        char *initrd;         /* initrd for the ESP */
        char *kernel_version; /* e.g. "6.1.0-28-amd64" */
        bool cache_hit;       /* the bootstrap came from the cache */
        char base_digest[65]; /* SHA-256 (hex) of the bootstrap's tree (base.tar): the rootfs input */
};

/* Builds (or takes from cache_dir) the base tree, then applies the
 * kickstart. Logs and returns a negative errno on failure (-EBADMSG for bad
 * input such as a missing tarball); a failed %post --erroronfail logs the
 * script's output. work_parent is where the per-build work directory goes. */
int rootfs_build(const struct spec *s, const char *cache_dir, const char *work_parent, struct rootfs **ret);
struct rootfs *rootfs_free(struct rootfs *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rootfs *, rootfs_free);
