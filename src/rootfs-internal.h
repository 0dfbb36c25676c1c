/* Private to the rootfs stage: the source ops table and the file helpers
 * its source files share. Nothing outside src/rootfs*.c includes this. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "spec.h"

/* Files of a cache entry (and of a bootstrap's out_dir). */
#define ROOTFS_BASE_TAR "base.tar"
#define ROOTFS_KERNEL "vmlinuz"
#define ROOTFS_INITRD "initrd"
#define ROOTFS_KERNEL_VERSION "kernel-version"
#define ROOTFS_KEY "key"
#define ROOTFS_COMPLETE "complete"

/* Bump when what a bootstrap writes changes, so older entries are not hit. */
#define ROOTFS_CACHE_FORMAT 1

struct rootfs_source_ops {
        const char *name;
        enum rootfs_source source;
        /* Writes "key=value" lines naming every input that shapes the
         * bootstrap; the entry's name is the SHA-256 of that text. Logs. */
        int (*cache_key)(const struct spec *s, FILE *key);
        /* Fills out_dir (exists, empty) with base.tar, vmlinuz, initrd and
         * kernel-version. Logs; out_dir is removed by the caller on failure. */
        int (*bootstrap)(const struct spec *s, const char *out_dir);
        /* Writes the per-build initrd from the cached one to path; NULL =
         * the cached one is used as it is. Logs. */
        int (*initrd)(const struct spec *s, const char *cached, const char *path);
        /* The tree came from a bootstrap that copied host files into it
         * (mmdebstrap copies /etc/resolv.conf). */
        bool scrub_host_files;
};

extern const struct rootfs_source_ops rootfs_busybox_ops;

/* Helpers (rootfs.c). They return negative errno and do not log. */
/* SHA-256 of a file's bytes as 64 hex digits plus NUL; and its size. */
int rootfs_sha256_file(const char *path, char hex[static 65], uint64_t *ret_size);
/* Writes "name=<sha256>\n" for a file (a path outside the spec whose bytes
 * shape the result). */
int rootfs_key_file(FILE *key, const char *name, const char *path);
/* Packs dir into tar_path reproducibly: sorted, numeric owners, mtimes
 * clamped to epoch; files owned by the calling user are given to root
 * (the tree was made by us, standing in for root). Logs. */
int rootfs_tar_dir(const char *dir, const char *tar_path, uint64_t epoch);
/* Runs argv; on failure logs "what: program: last line of stderr" and
 * returns -EIO (-ENOENT when the program is missing). */
int rootfs_run(const char *what, const char *const *argv, const char *cwd, const char *const *env);
/* The same, capturing stdout into *ret_stdout. */
int rootfs_run_capture(const char *what, const char *const *argv, const char *const *env, char **ret_stdout);
/* Opens path inside the tree at rootfd, symlinks resolved as if rootfd were
 * "/" (openat2 RESOLVE_IN_ROOT), so a tree cannot point us outside it.
 * Returns the fd or a negative errno. */
int rootfs_open_in_root(int rootfd, const char *path, int flags, mode_t mode);
/* Logs "out of memory", returns -ENOMEM. */
int log_oom_rootfs(void);
/* qsort comparator for char * arrays. */
int rootfs_cmp_str(const void *a, const void *b);
