/* Owns whole-file I/O with the write-temporary-then-rename discipline. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <ftw.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"

int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, alloc = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n;

                if (size + 1 >= alloc) {
                        size_t want = alloc ? alloc * 2 : 4096;
                        char *m;

                        if (alloc > max_size + 1)
                                return -EFBIG;
                        m = realloc(buf, want);
                        if (!m)
                                return -ENOMEM;
                        buf = m;
                        alloc = want;
                }
                n = read(fd, buf + size, alloc - size - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                size += (size_t)n;
                if (size > max_size)
                        return -EFBIG;
        }
        buf[size] = '\0';
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = size;
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t size, unsigned mode)
{
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        const char *p = data;

        if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
                tmp = NULL;
                return -ENOMEM;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0) {
                        int r = -errno;
                        if (r == -EINTR)
                                continue;
                        unlink(tmp);
                        return r;
                }
                p += n;
                size -= (size_t)n;
        }
        if (fsync(fd) < 0 || rename(tmp, path) < 0) {
                int r = -errno;
                unlink(tmp);
                return r;
        }
        return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int rm_one(const char *path, const struct stat *st _unused_, int type, struct FTW *ftw _unused_)
{
        if (type == FTW_DP)
                return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
        return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int rm_rf(const char *path)
{
        struct stat st;
        int r;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlink(path) < 0 ? -errno : 0;
        r = nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        return r < 0 ? -errno : r;
}

int copy_fd(int in, int out)
{
        char buf[1 << 16];

        for (;;) {
                ssize_t n = read(in, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return 0;
                for (ssize_t w = 0; w < n;) {
                        ssize_t k = write(out, buf + w, (size_t)(n - w));
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        w += k;
                }
        }
}

int copy_fd_to_file(int in, const char *to, mode_t mode)
{
        _cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        int r;

        if (out < 0)
                return -errno;
        r = copy_fd(in, out);
        if (r < 0) {
                unlink(to);
                return r;
        }
        if (fchmod(out, mode) < 0)
                return -errno;
        return 0;
}

int copy_file(const char *from, const char *to, mode_t mode)
{
        _cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);

        if (in < 0)
                return -errno;
        return copy_fd_to_file(in, to, mode);
}

int xdg_cache_dir(char **ret)
{
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        int r;

        if (xdg && *xdg == '/')
                r = asprintf(ret, "%s/ingot", xdg);
        else if (home && *home == '/')
                r = asprintf(ret, "%s/.cache/ingot", home);
        else
                return -ENOENT;
        return r < 0 ? -ENOMEM : 0;
}
