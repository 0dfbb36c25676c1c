/* Owns the filesystem types of the disk stage (the ops table below) and the
 * programs that make them, all run by argv:
 *
 * ext4: mke2fs writes straight into the image at the partition's offset
 *   (-E offset=). e2fsprogs 1.47.0 (Debian 12) cannot read a tar with -d
 *   (that came in 1.47.1), so the tar is unpacked into a scratch tree inside
 *   a fakeroot session and mke2fs -d runs in the same session: it sees the
 *   owners and modes the tar records, without root. The session's faked is
 *   ingot's own child (fakeroot_start), never a daemon that outlives a
 *   killed ingot. mke2fs -d copies atime and ctime from the scratch tree,
 *   which differ from build to build, so afterwards debugfs sets both to
 *   SOURCE_DATE_EPOCH on every inode in use (mtimes come from the tar,
 *   clamped to SOURCE_DATE_EPOCH; crtime and the superblock times from
 *   E2FSPROGS_FAKE_TIME; the UUID and the directory hash seed from the plan).
 * vfat and swap: built in a scratch file of the partition's size, then
 *   copied in, skipping zero blocks so the image stays sparse. mkfs.vfat
 *   --offset into a larger file chooses another geometry than for the
 *   partition alone, and mcopy 4.0.32 fails on such an image ("Internal
 *   error, size too big"); mkswap has no offset option. The ESP is filled
 *   with mmd and mcopy in sorted order (readdir order differs between
 *   hosts) without -m, so with SOURCE_DATE_EPOCH set mtools stamps every
 *   entry with it, and the staging directory is left untouched. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proc-util.h"
#include "shared/run.h"
#include "shared/strv.h"

#define SIZE_1M (UINT64_C(1) << 20)

static int log_oom(void)
{
        return log_error_errno(-ENOMEM, "out of memory");
}
#define COPY_BLOCK 4096
#define COPY_CHUNK (1024 * 1024)

static const struct {
        const char *program;
        const char *package;
} tool_packages[] = {
        { "mke2fs", "e2fsprogs" },  { "debugfs", "e2fsprogs" },    { "dumpe2fs", "e2fsprogs" },
        { "tune2fs", "e2fsprogs" }, { "mkfs.vfat", "dosfstools" }, { "mmd", "mtools" },
        { "mcopy", "mtools" },      { "mkswap", "util-linux" },    { "faked-sysv", "fakeroot" },
        { "tar", "tar" },
};

static const char *tool_package(const char *program)
{
        for (size_t i = 0; i < ELEMENTSOF(tool_packages); i++)
                if (streq(tool_packages[i].program, program))
                        return tool_packages[i].package;
        return program;
}

/* "64M", "2G", as the templates write sizes. */
static const char *format_size(uint64_t bytes, char buf[static 32])
{
        if (bytes >= (UINT64_C(1) << 30) && bytes % (UINT64_C(1) << 30) == 0)
                snprintf(buf, 32, "%" PRIu64 "G", bytes >> 30);
        else if (bytes % SIZE_1M == 0)
                snprintf(buf, 32, "%" PRIu64 "M", bytes >> 20);
        else
                snprintf(buf, 32, "%" PRIu64 "K", bytes >> 10);
        return buf;
}

/* What mke2fs and mtools say when the content does not fit. */
static bool is_out_of_space(const char *err)
{
        static const char *const patterns[] = {
                "Could not allocate block",
                "Could not allocate inode",
                "No free space",
                "Filesystem too small",
                "Disk full",
        };

        for (size_t i = 0; i < ELEMENTSOF(patterns); i++)
                if (strstr(err, patterns[i]))
                        return true;
        return false;
}

enum {
        RUN_CONTENT = 1 << 0, /* a failure may mean the content does not fit */
};

/* Runs one program for t's partition and logs its failure once. When
 * ret_stdout is given it receives the output (the caller frees it). */
static int fs_run(const struct fs_target *t, const char *const *argv, const char *const *env, int flags,
                  char **ret_stdout)
{
        const struct part_entry *e = t->entry;
        struct run_options o = { .env = env };
        _cleanup_free_ char *out = NULL, *err = NULL;
        const char *program = argv[0];
        char line[512], size[32];
        int r;

        if (log_get_level() >= LOG_LEVEL_VERBOSE) {
                _cleanup_free_ char *cmd = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&cmd, &len);

                if (f) {
                        for (size_t i = 0; argv[i]; i++)
                                fprintf(f, "%s%s", i ? " " : "", argv[i]);
                        fclose(f);
                        log_debug("partition %u: %s", e->number, strna(cmd));
                }
        }

        r = run_argv(argv, &o, ret_stdout ? &out : NULL, &err);
        if (r == -ENOENT)
                return log_error_errno(r, "cannot run %s for partition %u '%s': %m (install the package '%s')", program,
                                       e->number, e->name, tool_package(program));
        if (r < 0)
                return log_error_errno(r, "cannot run %s for partition %u '%s': %m", program, e->number, e->name);
        if (r > 0) {
                run_output_line(err, true, line, sizeof(line));
                if ((flags & RUN_CONTENT) && is_out_of_space(err))
                        return log_error_errno(
                                -ENOSPC, "the %s filesystem content does not fit its %s partition %u '%s': %s",
                                part_role_to_string(e->role), format_size(e->size, size), e->number, e->name, line);
                return log_error_errno(-EIO, "%s failed for partition %u '%s': %s", program, e->number, e->name,
                                       line[0] ? line : "no error message");
        }
        if (ret_stdout)
                *ret_stdout = TAKE_PTR(out);
        return 0;
}

static int scratch_path(const struct fs_target *t, const char *suffix, char **ret)
{
        if (asprintf(ret, "%s/p%u.%s", t->scratch_dir, t->entry->number, suffix) < 0)
                return log_oom();
        return 0;
}

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Removes a scratch tree; its directories are owner-writable (fakeroot
 * keeps them so), so no chmod pass is needed. */
static void remove_tree(const char *path)
{
        if (nftw(path, remove_cb, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
                log_warning("cannot remove the scratch tree '%s': %m", path);
}

/* Creates an empty scratch file of the partition's size. */
static int scratch_file(const struct fs_target *t, char **ret)
{
        _cleanup_free_ char *p = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        r = scratch_path(t, "img", &p);
        if (r < 0)
                return r;
        fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return log_error_errno(-errno, "cannot create '%s': %m", p);
        if (ftruncate(fd, (off_t)t->entry->size) < 0) {
                r = log_error_errno(-errno, "cannot size '%s': %m", p);
                unlink(p);
                return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

static bool is_zero(const uint8_t *p, size_t n)
{
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Copies the non-zero blocks of src into image at offset. The image's
 * partition area is still all zeros (holes), so skipping keeps it sparse. */
static int copy_sparse(const char *src, const char *image, uint64_t offset, uint64_t size)
{
        _cleanup_close_ int in = -1, out = -1;
        _cleanup_free_ uint8_t *buf = NULL;
        off_t pos = 0, end = (off_t)size;

        in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return -errno;
        out = open(image, O_WRONLY | O_CLOEXEC);
        if (out < 0)
                return -errno;
        buf = malloc(COPY_CHUNK);
        if (!buf)
                return -ENOMEM;

        while (pos < end) {
                off_t data = lseek(in, pos, SEEK_DATA), hole;

                if (data < 0 && errno == ENXIO)
                        break;
                if (data < 0)
                        data = pos; /* no SEEK_DATA here: read everything */
                hole = lseek(in, data, SEEK_HOLE);
                if (hole < 0 || hole > end)
                        hole = end;

                for (pos = data; pos < hole;) {
                        size_t want = (size_t)(hole - pos < COPY_CHUNK ? hole - pos : COPY_CHUNK);
                        ssize_t n = pread(in, buf, want, pos);

                        if (n < 0)
                                return -errno;
                        if (n == 0)
                                return -EIO;
                        for (size_t i = 0; i < (size_t)n;) {
                                size_t run_start, run_end;

                                while (i < (size_t)n &&
                                       is_zero(buf + i, (size_t)n - i < COPY_BLOCK ? (size_t)n - i : COPY_BLOCK))
                                        i += COPY_BLOCK;
                                if (i >= (size_t)n)
                                        break;
                                run_start = i;
                                while (i < (size_t)n &&
                                       !is_zero(buf + i, (size_t)n - i < COPY_BLOCK ? (size_t)n - i : COPY_BLOCK))
                                        i += COPY_BLOCK;
                                run_end = i < (size_t)n ? i : (size_t)n;
                                if (pwrite(out, buf + run_start, run_end - run_start,
                                           (off_t)offset + pos + (off_t)run_start) != (ssize_t)(run_end - run_start))
                                        return errno > 0 ? -errno : -EIO;
                        }
                        pos += n;
                }
        }
        return fsync(out) < 0 ? -errno : 0;
}

static int copy_into_image(const struct fs_target *t, const char *src)
{
        int r = copy_sparse(src, t->image, t->entry->start, t->entry->size);

        if (r < 0)
                return log_error_errno(r, "cannot copy partition %u '%s' into '%s': %m", t->entry->number,
                                       t->entry->name, t->image);
        return 0;
}

/* ext4 */

static uint64_t clamp_epoch;

/* mtimes newer than SOURCE_DATE_EPOCH (directories tar created implicitly,
 * the tree's top) are clamped to it; files without an owner read bit get
 * one on the real file so mke2fs can read them: fakeroot keeps the mode
 * the tar records and shows that one to mke2fs. */
static int clamp_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        if ((uint64_t)st->st_mtime > clamp_epoch) {
                struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = (time_t)clamp_epoch } };

                if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
                        return -1;
        }
        if (S_ISREG(st->st_mode) && !(st->st_mode & S_IRUSR) && chmod(path, (st->st_mode & 07777) | S_IRUSR) < 0)
                return -1;
        return 0;
}

/* The inodes in use, from dumpe2fs's per-group "Free inodes:" lists. */
static int used_inodes(const char *dump, uint32_t **ret, size_t *ret_n)
{
        _cleanup_free_ uint32_t *list = NULL;
        _cleanup_free_ uint8_t *used = NULL;
        unsigned long long count = 0, per_group = 0, first = 0;
        const char *p;
        long group = -1;
        size_t n = 0;

        if ((p = strstr(dump, "\nInode count:")))
                count = strtoull(p + strlen("\nInode count:"), NULL, 10);
        if ((p = strstr(dump, "\nInodes per group:")))
                per_group = strtoull(p + strlen("\nInodes per group:"), NULL, 10);
        if ((p = strstr(dump, "\nFirst inode:")))
                first = strtoull(p + strlen("\nFirst inode:"), NULL, 10);
        if (count == 0 || per_group == 0 || first == 0 || count > UINT32_MAX)
                return -EBADMSG;

        used = malloc(count + 1);
        if (!used)
                return -ENOMEM;
        memset(used, 1, count + 1);
        used[0] = 0;

        for (p = dump; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                if (strncmp(p, "Group ", 6) == 0) {
                        group = strtol(p + 6, NULL, 10);
                        continue;
                }
                if (strncmp(p, "  Free inodes: ", 15) != 0)
                        continue;
                if (group < 0)
                        return -EBADMSG;
                /* "a-b, c, d-e" up to the end of the line */
                for (const char *q = p + 15; *q && *q != '\n';) {
                        char *end;
                        unsigned long long a = strtoull(q, &end, 10), b = a;

                        if (end == q)
                                return -EBADMSG;
                        if (*end == '-')
                                b = strtoull(end + 1, &end, 10);
                        if (a == 0 || b < a || b > count)
                                return -EBADMSG;
                        memset(used + a, 0, b - a + 1);
                        q = end;
                        while (*q == ',' || *q == ' ')
                                q++;
                }
        }
        if (group < 0)
                return -EBADMSG;

        list = calloc(count, sizeof(uint32_t));
        if (!list)
                return -ENOMEM;
        for (unsigned long long i = 1; i <= count; i++)
                /* the root and the inodes past the reserved ones; the reserved
                 * ones mke2fs stamps with E2FSPROGS_FAKE_TIME */
                if (used[i] && (i == 2 || i >= first))
                        list[n++] = (uint32_t)i;
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

static int ext4_fix_times(const struct fs_target *t, const char *device, const char *const *env)
{
        const char *dumpe2fs[] = { "dumpe2fs", device, NULL };
        const char *debugfs[] = { "debugfs", "-w", "-f", NULL, device, NULL };
        _cleanup_free_ char *dump = NULL, *script = NULL;
        _cleanup_free_ uint32_t *inodes = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_close_ int null = -1;
        size_t n = 0;
        int r;

        r = fs_run(t, dumpe2fs, env, 0, &dump);
        if (r < 0)
                return r;
        r = used_inodes(dump, &inodes, &n);
        if (r < 0)
                return log_error_errno(r, "cannot read the inodes in use on partition %u '%s' from dumpe2fs: %m",
                                       t->entry->number, t->entry->name);

        r = scratch_path(t, "debugfs", &script);
        if (r < 0)
                return r;
        f = fopen(script, "wxe");
        if (!f)
                return log_error_errno(-errno, "cannot create '%s': %m", script);
        for (size_t i = 0; i < n; i++)
                fprintf(f, "sif <%" PRIu32 "> atime @%" PRIu64 "\nsif <%" PRIu32 "> ctime @%" PRIu64 "\n", inodes[i],
                        t->source_date_epoch, inodes[i], t->source_date_epoch);
        if (fflush(f) != 0 || ferror(f)) {
                r = log_error_errno(-EIO, "cannot write '%s'", script);
                goto finish;
        }

        /* debugfs exits 0 even when a command fails; its stderr says so. */
        debugfs[3] = script;
        null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null < 0) {
                r = log_error_errno(-errno, "cannot open /dev/null: %m");
                goto finish;
        }
        {
                struct run_options o = { .env = env, .stdout_fd = null };
                _cleanup_free_ char *err = NULL;
                char line[512] = "";

                r = run_argv(debugfs, &o, NULL, &err);
                if (r < 0) {
                        r = log_error_errno(r, "cannot run debugfs for partition %u '%s': %m", t->entry->number,
                                            t->entry->name);
                        goto finish;
                }
                for (const char *p = err; p && *p && !line[0]; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                        if (*p != '\n' && strncmp(p, "debugfs ", 8) != 0)
                                run_output_line(p, false, line, sizeof(line));
                if (r > 0 || line[0])
                        r = log_error_errno(-EIO, "debugfs failed for partition %u '%s': %s", t->entry->number,
                                            t->entry->name, line[0] ? line : "no error message");
        }
finish:
        unlink(script);
        return r;
}

/* fakeroot without its script. The script starts faked-sysv as a daemon
 * (it forks away from its caller), so a SIGKILL of ingot left faked
 * running under init, with its SysV message queues and semaphore. Here
 * faked-sysv runs in the foreground as ingot's child with
 * PR_SET_PDEATHSIG(SIGTERM): when ingot dies, faked gets SIGTERM, on
 * which it removes its IPC objects and exits; the clients run by run_argv
 * die with ingot too (SIGKILL). The clients get what the script gives them
 * (fakeroot 1.31): FAKEROOTKEY, the library by LD_LIBRARY_PATH and
 * LD_PRELOAD, FAKED_MODE. One faked serves the unpack and mke2fs: it reads
 * its queue in order, so mke2fs's first stat is answered after tar's last
 * chown is recorded, as the script's save file (-s, then -i) gave before;
 * the image is the same byte for byte. */
#define FAKEROOT_LIB "libfakeroot-sysv.so"
#define FAKEROOT_START_TIMEOUT_MS 30000

struct fakeroot {
        pid_t pid; /* 0 = not running */
        int stdout_fd;
        char *key, *library_path, *preload; /* "NAME=VALUE" for the clients */
};

static const char *const fakeroot_lib_dirs[] = {
#if defined(__x86_64__)
        "/usr/lib/x86_64-linux-gnu/libfakeroot",
#elif defined(__aarch64__)
        "/usr/lib/aarch64-linux-gnu/libfakeroot",
#endif
        "/usr/lib64/libfakeroot",
        "/usr/lib/libfakeroot",
        "/usr/lib32/libfakeroot",
};

/* Stops faked (SIGTERM: it removes its IPC objects) and frees f. */
static void fakeroot_stop(struct fakeroot *f)
{
        if (f->pid > 0)
                (void)run_stop(f->pid, SIGTERM);
        if (f->stdout_fd >= 0)
                close(f->stdout_fd);
        free(f->key);
        free(f->library_path);
        free(f->preload);
        *f = (struct fakeroot){ .stdout_fd = -1 };
}

/* Reads faked's "KEY:PID" line; the key is what the clients need. */
static int fakeroot_read_key(int fd, char *buf, size_t size)
{
        size_t n = 0;

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t k;
                int q = poll(&p, 1, FAKEROOT_START_TIMEOUT_MS);

                if (q < 0 && errno == EINTR)
                        continue;
                if (q < 0)
                        return -errno;
                if (q == 0)
                        return -ETIMEDOUT;
                k = read(fd, buf + n, size - 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EPROTO;
                n += (size_t)k;
                buf[n] = '\0';
                if (strchr(buf, '\n'))
                        break;
                if (n == size - 1)
                        return -EPROTO;
        }
        buf[strcspn(buf, ":")] = '\0';
        if (!buf[0] || strspn(buf, "0123456789") != strlen(buf))
                return -EPROTO;
        return 0;
}

static int fakeroot_start(const struct fs_target *t, struct fakeroot *ret)
{
        const char *argv[] = { "faked-sysv", "--foreground", NULL };
        const char *env[] = { "FAKED_MODE=unknown-is-root", NULL };
        const char *dir = NULL, *ld_path = getenv("LD_LIBRARY_PATH"), *ld_preload = getenv("LD_PRELOAD");
        struct fakeroot f = { .stdout_fd = -1 };
        char key[64];
        int r;

        /* as the script: a nested session would talk to the outer faked */
        if (getenv("FAKEROOTKEY"))
                return log_error_errno(-EINVAL,
                                       "cannot run fakeroot for partition %u '%s': FAKEROOTKEY is set "
                                       "(ingot runs under fakeroot), and fakeroot does not nest",
                                       t->entry->number, t->entry->name);
        for (size_t i = 0; i < ELEMENTSOF(fakeroot_lib_dirs) && !dir; i++) {
                _cleanup_free_ char *lib = NULL;

                if (asprintf(&lib, "%s/" FAKEROOT_LIB, fakeroot_lib_dirs[i]) < 0)
                        return log_oom();
                if (access(lib, R_OK) == 0)
                        dir = fakeroot_lib_dirs[i];
        }
        if (!dir)
                return log_error_errno(-ENOENT,
                                       "cannot find " FAKEROOT_LIB " for partition %u '%s' (install the "
                                       "package 'fakeroot')",
                                       t->entry->number, t->entry->name);

        r = run_spawn(argv, &(struct run_options){ .env = env }, SIGTERM, &f.pid, &f.stdout_fd);
        if (r == -ENOENT)
                return log_error_errno(r,
                                       "cannot run faked-sysv for partition %u '%s': %m (install the package "
                                       "'fakeroot')",
                                       t->entry->number, t->entry->name);
        if (r < 0)
                return log_error_errno(r, "cannot run faked-sysv for partition %u '%s': %m", t->entry->number,
                                       t->entry->name);
        r = fakeroot_read_key(f.stdout_fd, key, sizeof(key));
        if (r < 0) {
                fakeroot_stop(&f);
                return log_error_errno(r, "faked-sysv did not start for partition %u '%s': %s", t->entry->number,
                                       t->entry->name,
                                       r == -ETIMEDOUT ? "it printed no key in 30 s"
                                       : r == -EPROTO  ? "it printed no KEY:PID line"
                                                       : strerror(-r));
        }
        if (asprintf(&f.key, "FAKEROOTKEY=%s", key) < 0)
                f.key = NULL;
        if (asprintf(&f.library_path, "LD_LIBRARY_PATH=%s%s%s", dir, ld_path ? ":" : "", ld_path ? ld_path : "") < 0)
                f.library_path = NULL;
        if (asprintf(&f.preload, "LD_PRELOAD=" FAKEROOT_LIB "%s%s", ld_preload ? ":" : "",
                     ld_preload ? ld_preload : "") < 0)
                f.preload = NULL;
        if (!f.key || !f.library_path || !f.preload) {
                fakeroot_stop(&f);
                return log_oom();
        }
        *ret = f;
        return 0;
}

/* Unpacks t->tar into tree inside the fakeroot session f. */
static int ext4_unpack(const struct fs_target *t, const struct fakeroot *f, const char *tree)
{
        const char *untar[] = { "tar",          "--extract",          "--file",          t->tar, "--directory", tree,
                                "--same-owner", "--same-permissions", "--numeric-owner", NULL };
        const char *env[] = { f->key, f->library_path, f->preload, "FAKED_MODE=unknown-is-root", NULL };
        int r;

        if (mkdir(tree, 0755) < 0)
                return log_error_errno(-errno, "cannot create '%s': %m", tree);
        r = fs_run(t, untar, env, 0, NULL);
        if (r < 0)
                return r;
        clamp_epoch = t->source_date_epoch;
        if (nftw(tree, clamp_cb, 16, FTW_PHYS) < 0)
                return log_error_errno(-errno, "cannot prepare the unpacked tree '%s': %m", tree);
        return 0;
}

static int ext4_make(const struct fs_target *t)
{
        const struct part_entry *e = t->entry;
        _cleanup_free_ char *tree = NULL, *device = NULL, *ext = NULL, *size = NULL, *fake = NULL;
        char uuid[ID128_STRING_MAX], seed[ID128_STRING_MAX];
        struct fakeroot f = { .stdout_fd = -1 };
        const char *env[2], *mke2fs_env[6] = { NULL };
        const char *argv[32];
        size_t k = 0;
        int r;

        if (asprintf(&fake, "E2FSPROGS_FAKE_TIME=%" PRIu64, t->source_date_epoch) < 0 ||
            asprintf(&ext,
                     "offset=%" PRIu64 ",hash_seed=%s,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,"
                     "nodiscard",
                     e->start, id128_to_string(&e->hash_seed, seed)) < 0 ||
            asprintf(&size, "%" PRIu64 "k", e->size / 1024) < 0 ||
            asprintf(&device, "%s?offset=%" PRIu64, t->image, e->start) < 0)
                return log_oom();
        env[0] = mke2fs_env[0] = fake;
        env[1] = NULL;

        if (t->tar) {
                r = scratch_path(t, "tree", &tree);
                if (r < 0)
                        return r;
                r = fakeroot_start(t, &f);
                if (r < 0)
                        return r;
                test_point("build-fakeroot"); /* test-build-kill kills ingot here */
                r = ext4_unpack(t, &f, tree);
                if (r < 0)
                        goto finish;
                mke2fs_env[1] = f.key;
                mke2fs_env[2] = f.library_path;
                mke2fs_env[3] = f.preload;
                mke2fs_env[4] = "FAKED_MODE=unknown-is-root";
        }
        argv[k++] = "mke2fs";
        argv[k++] = "-q";
        argv[k++] = "-F";
        argv[k++] = "-t";
        argv[k++] = "ext4";
        argv[k++] = "-U";
        argv[k++] = id128_to_string(&e->fs_uuid, uuid);
        if (e->label) {
                argv[k++] = "-L";
                argv[k++] = e->label;
        }
        if (e->read_only) {
                /* nothing writes a sealed root, so it needs no journal;
                 * two backup superblocks instead of one per 3^n/5^n/7^n
                 * group: each carries the label (the version stamp), and
                 * each would cost a block in an incremental push */
                argv[k++] = "-O";
                argv[k++] = "^has_journal,sparse_super2";
        }
        argv[k++] = "-E";
        argv[k++] = ext;
        if (tree) {
                argv[k++] = "-d";
                argv[k++] = tree;
        }
        argv[k++] = t->image;
        argv[k++] = size;
        argv[k] = NULL;

        r = fs_run(t, argv, mke2fs_env, RUN_CONTENT, NULL);
        fakeroot_stop(&f);
        if (r < 0)
                goto finish;
        if (tree)
                r = ext4_fix_times(t, device, env);
        if (r >= 0 && e->read_only) {
                /* the seal: the kernel refuses to mount it writable, even
                 * on "mount -o remount,rw" (tech.md §6); tune2fs's
                 * superblock time comes from E2FSPROGS_FAKE_TIME */
                const char *tune[] = { "tune2fs", "-O", "read-only", device, NULL };
                _cleanup_free_ char *out = NULL;

                r = fs_run(t, tune, env, 0, &out);
        }
finish:
        fakeroot_stop(&f);
        if (tree)
                remove_tree(tree);
        return r;
}

/* vfat */

static int cmp_name(const struct dirent **a, const struct dirent **b)
{
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_dots(const struct dirent *d)
{
        return !streq(d->d_name, ".") && !streq(d->d_name, "..");
}

/* Sorts one staging entry into files (full paths) or dirs (names). */
static int vfat_classify(const struct fs_target *t, const char *dir, const char *name, char ***files, char ***dirs)
{
        _cleanup_free_ char *p = NULL;
        struct stat st;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return log_oom();
        if (stat(p, &st) < 0)
                return log_error_errno(-errno, "cannot read '%s': %m", p);
        if (S_ISDIR(st.st_mode))
                return strv_extend(dirs, name) < 0 ? log_oom() : 0;
        if (S_ISREG(st.st_mode))
                return strv_consume(files, TAKE_PTR(p)) < 0 ? log_oom() : 0;
        return log_error_errno(-EINVAL, "'%s' cannot go on the FAT of partition %u '%s': not a file or directory", p,
                               t->entry->number, t->entry->name);
}

/* Copies dir/rel into the FAT at ::/rel: the files in one mcopy call,
 * then each subdirectory (mmd) and its content, all in byte order. */
static int vfat_fill(const struct fs_target *t, const char *fat, const char *const *env, const char *rel)
{
        _cleanup_free_ char *abs = NULL, *target = NULL;
        _cleanup_strv_free_ char **files = NULL, **dirs = NULL;
        struct dirent **names = NULL;
        int n, r = 0;

        if (asprintf(&abs, "%s%s", t->dir, rel) < 0 || asprintf(&target, "::%s/", rel) < 0)
                return log_oom();
        n = scandir(abs, &names, not_dots, cmp_name);
        if (n < 0)
                return log_error_errno(-errno, "cannot read '%s': %m", abs);
        for (int i = 0; i < n; i++) {
                if (r >= 0)
                        r = vfat_classify(t, abs, names[i]->d_name, &files, &dirs);
                free(names[i]);
        }
        free(names);
        if (r < 0)
                return r;

        if (files) {
                size_t nf = strv_length(files), k = 0;
                _cleanup_free_ const char **argv = calloc(nf + 7, sizeof(char *));

                if (!argv)
                        return log_oom();
                argv[k++] = "mcopy";
                argv[k++] = "-p";
                argv[k++] = "-Q";
                argv[k++] = "-i";
                argv[k++] = fat;
                STRV_FOREACH (f, files)
                        argv[k++] = *f;
                argv[k++] = target;
                argv[k] = NULL;
                r = fs_run(t, argv, env, RUN_CONTENT, NULL);
                if (r < 0)
                        return r;
        }
        STRV_FOREACH (d, dirs) {
                _cleanup_free_ char *sub = NULL, *fat_dir = NULL;

                if (asprintf(&sub, "%s/%s", rel, *d) < 0 || asprintf(&fat_dir, "::%s", sub) < 0)
                        return log_oom();
                {
                        const char *mmd[] = { "mmd", "-i", fat, fat_dir, NULL };

                        r = fs_run(t, mmd, env, RUN_CONTENT, NULL);
                }
                if (r < 0)
                        return r;
                r = vfat_fill(t, fat, env, sub);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int vfat_make(const struct fs_target *t)
{
        const struct part_entry *e = t->entry;
        _cleanup_free_ char *fat = NULL, *epoch = NULL, *hidden = NULL;
        char volid[9], label[12] = "";
        const char *env[4];
        const char *argv[16];
        size_t k = 0;
        int r;

        if (asprintf(&epoch, "SOURCE_DATE_EPOCH=%" PRIu64, t->source_date_epoch) < 0 ||
            asprintf(&hidden, "%" PRIu64, e->start / 512) < 0)
                return log_oom();
        env[0] = epoch;
        env[1] = "TZ=UTC"; /* FAT stores local time */
        env[2] = "MTOOLS_SKIP_CHECK=1";
        env[3] = NULL;
        /* The volume id is the first 32 bits of the filesystem UUID. */
        snprintf(volid, sizeof(volid), "%02x%02x%02x%02x", e->fs_uuid.bytes[0], e->fs_uuid.bytes[1],
                 e->fs_uuid.bytes[2], e->fs_uuid.bytes[3]);
        for (size_t i = 0; e->label && e->label[i] && i < sizeof(label) - 1; i++) {
                label[i] = e->label[i] >= 'a' && e->label[i] <= 'z' ? (char)(e->label[i] - 'a' + 'A') : e->label[i];
                label[i + 1] = '\0';
        }

        r = scratch_file(t, &fat);
        if (r < 0)
                return r;

        argv[k++] = "mkfs.vfat";
        argv[k++] = "--invariant";
        argv[k++] = "-i";
        argv[k++] = volid;
        /* what --offset would have set: the partition's first sector */
        argv[k++] = "-h";
        argv[k++] = hidden;
        if (label[0]) {
                argv[k++] = "-n";
                argv[k++] = label;
        }
        /* FAT32 needs 65525 clusters: about 33 MiB with 512-byte ones. */
        if (e->size >= 33 * SIZE_1M) {
                argv[k++] = "-F";
                argv[k++] = "32";
        } else if (e->size >= 4 * SIZE_1M) {
                argv[k++] = "-F";
                argv[k++] = "16";
        }
        argv[k++] = fat;
        argv[k] = NULL;

        r = fs_run(t, argv, env, 0, NULL);
        if (r >= 0 && t->dir)
                r = vfat_fill(t, fat, env, "");
        if (r >= 0)
                r = copy_into_image(t, fat);
        unlink(fat);
        return r;
}

/* swap */

static int swap_make(const struct fs_target *t)
{
        const struct part_entry *e = t->entry;
        _cleanup_free_ char *img = NULL;
        char uuid[ID128_STRING_MAX];
        const char *argv[8];
        size_t k = 0;
        int r;

        r = scratch_file(t, &img);
        if (r < 0)
                return r;
        argv[k++] = "mkswap";
        argv[k++] = "-q";
        argv[k++] = "-U";
        argv[k++] = id128_to_string(&e->fs_uuid, uuid);
        if (e->label) {
                argv[k++] = "-L";
                argv[k++] = e->label;
        }
        argv[k++] = img;
        argv[k] = NULL;

        r = fs_run(t, argv, NULL, 0, NULL);
        if (r >= 0)
                r = copy_into_image(t, img);
        unlink(img);
        return r;
}

static const struct fs_ops fs_table[] = {
        { .name = "ext4", .takes_tar = true, .make = ext4_make },
        { .name = "vfat", .takes_dir = true, .make = vfat_make },
        { .name = "swap", .make = swap_make },
        /* mkfs.erofs (erofs-utils) is not among the stage's tools yet. */
        { .name = "erofs", .takes_tar = true, .make = NULL },
};

const struct fs_ops *fs_ops_find(const char *fstype)
{
        if (!fstype)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(fs_table); i++)
                if (streq(fs_table[i].name, fstype))
                        return &fs_table[i];
        return NULL;
}

int fs_make(const struct fs_ops *ops, const struct fs_target *t)
{
        const struct part_entry *e = t->entry;

        if (!ops->make)
                return log_error_errno(-EOPNOTSUPP,
                                       "%s filesystems are not supported yet: partition %u '%s' needs one (use "
                                       "ext4)",
                                       ops->name, e->number, e->name);
        if (t->tar && !ops->takes_tar)
                return log_error_errno(-EINVAL, "partition %u '%s' (%s) cannot be filled from a tar", e->number,
                                       e->name, ops->name);
        if (t->dir && !ops->takes_dir)
                return log_error_errno(-EINVAL, "partition %u '%s' (%s) cannot be filled from a directory", e->number,
                                       e->name, ops->name);
        return ops->make(t);
}
