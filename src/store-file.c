/* Owns the file:// store: each object is the file DIR/KEY. A put writes a
 * temporary file beside its final name, fsyncs it, renames it into place
 * and fsyncs the directory, so a reader (or a crash) sees the old object,
 * the new one or none. Temporary names contain '~', which no key may, so
 * list never shows them. The batch calls are store.c's loops: a local
 * disk gains nothing from more requests in flight. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/proc-util.h"
#include "shared/strv.h"
#include "store-internal.h"
#include "store.h"

struct file_store {
        struct store base; /* first, so a struct store * is a struct file_store * */
        char *dir;
        int dir_fd;
};

static struct file_store *FS(struct store *s)
{
        return (struct file_store *)s;
}

static void file_close(struct store *st)
{
        struct file_store *s = FS(st);

        if (s->dir_fd >= 0)
                close(s->dir_fd);
        free(s->dir);
        free(s);
}

static int file_open(const char *url, const struct store_options *o _unused_, struct store **ret)
{
        struct file_store *s;
        const char *path = url + strlen("file://");
        size_t len = strlen(path);
        int r;

        if (path[0] != '/')
                return log_error_errno(-EINVAL, "store '%s': the directory must be an absolute path (file:///DIR)",
                                       url);
        while (len > 1 && path[len - 1] == '/')
                len--;

        s = calloc(1, sizeof(*s));
        if (!s)
                return log_error_errno(-ENOMEM, "out of memory");
        s->dir_fd = -1;
        s->dir = strndup(path, len);
        if (!s->dir) {
                file_close(&s->base);
                return log_error_errno(-ENOMEM, "out of memory");
        }
        r = mkdir_p(s->dir, 0755);
        if (r < 0) {
                log_error_errno(r, "cannot create store directory '%s': %m", s->dir);
                file_close(&s->base);
                return r;
        }
        s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dir_fd < 0) {
                r = log_error_errno(-errno, "cannot open store directory '%s': %m", s->dir);
                file_close(&s->base);
                return r;
        }
        *ret = &s->base;
        return 0;
}

/* mkdir -p of the directories key lives in, relative to the store. */
static int make_parents(struct file_store *s, const char *key)
{
        _cleanup_free_ char *p = strdup(key);

        if (!p)
                return -ENOMEM;
        for (char *slash = strchr(p, '/'); slash; slash = strchr(slash + 1, '/')) {
                *slash = '\0';
                if (mkdirat(s->dir_fd, p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *slash = '/';
        }
        return 0;
}

/* The directory key lives in, opened (for fsync after a rename). */
static int open_parent(struct file_store *s, const char *key)
{
        const char *slash = strrchr(key, '/');
        _cleanup_free_ char *d = NULL;

        if (!slash)
                return openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        d = strndup(key, (size_t)(slash - key));
        if (!d) {
                errno = ENOMEM;
                return -1;
        }
        return openat(s->dir_fd, d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int write_all(int fd, const void *data, size_t size)
{
        const char *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                size -= (size_t)n;
        }
        return 0;
}

/* This host's boot id, shortened: temporaries are named KEY~BOOT.PID.N so
 * that sweep can tell a writer of this boot (alive or not, by its pid)
 * from one of another host or boot (judged by age alone). */
static const char *boot_tag(void)
{
        static char tag[9];
        char id[37];

        if (!tag[0]) {
                if (boot_id_get(id) < 0)
                        snprintf(tag, sizeof(tag), "00000000");
                else
                        snprintf(tag, sizeof(tag), "%.8s", id);
        }
        return tag;
}

/* Writes data to a new temporary beside key, synced; *ret_tmp is its name. */
static int write_temp(struct file_store *s, const char *key, const void *data, size_t size, char **ret_tmp)
{
        static atomic_uint counter;
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        r = make_parents(s, key);
        if (r < 0)
                return log_error_errno(r, "cannot create the directories of '%s' in '%s': %m", key, s->dir);

        for (unsigned attempt = 0;; attempt++) {
                /* pid and counter keep concurrent writers apart; O_EXCL
                 * steps over what a killed writer with our pid left */
                if (asprintf(&tmp, "%s~%s.%ld.%u", key, boot_tag(), (long)getpid(), atomic_fetch_add(&counter, 1)) <
                    0) {
                        tmp = NULL;
                        return log_error_errno(-ENOMEM, "out of memory");
                }
                fd = openat(s->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 1000)
                        return log_error_errno(-errno, "cannot create '%s' in '%s': %m", tmp, s->dir);
                tmp = x_free(tmp);
        }

        r = write_all(fd, data, size);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && close(TAKE_FD(fd)) < 0)
                r = -errno;
        if (r < 0) {
                (void)unlinkat(s->dir_fd, tmp, 0);
                return log_error_errno(r, "cannot write '%s' in '%s': %m", key, s->dir);
        }
        *ret_tmp = TAKE_PTR(tmp);
        return 0;
}

/* A rename or link is durable once the directory is. */
static int sync_parent(struct file_store *s, const char *key)
{
        _cleanup_close_ int parent = open_parent(s, key);

        if (parent < 0 || fsync(parent) < 0)
                return log_error_errno(-errno, "cannot sync the directory of '%s' in '%s': %m", key, s->dir);
        return 0;
}

static int file_put(struct store *st, const char *key, const void *data, size_t size)
{
        struct file_store *s = FS(st);
        _cleanup_free_ char *tmp = NULL;
        int r;

        r = write_temp(s, key, data, size, &tmp);
        if (r < 0)
                return r;
        if (renameat(s->dir_fd, tmp, s->dir_fd, key) < 0) {
                r = -errno;
                (void)unlinkat(s->dir_fd, tmp, 0);
                return log_error_errno(r, "cannot write '%s' in '%s': %m", key, s->dir);
        }
        return sync_parent(s, key);
}

static int file_get(struct store *st, const char *key, uint64_t max, char **ret_data, size_t *ret_size,
                    char **ret_etag)
{
        struct file_store *s = FS(st);
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, alloc;
        struct stat sb;

        fd = openat(s->dir_fd, key, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return -ENOENT;
                return log_error_errno(-errno, "cannot open '%s' in '%s': %m", key, s->dir);
        }
        if (fstat(fd, &sb) < 0)
                return log_error_errno(-errno, "cannot stat '%s' in '%s': %m", key, s->dir);
        if (!S_ISREG(sb.st_mode)) /* a directory is a prefix, not an object */
                return -ENOENT;
        if ((uint64_t)sb.st_size > max)
                return -EFBIG;

        /* the size is known (objects are replaced, never changed in
         * place), but read to EOF anyway; +1 keeps room for the NUL */
        alloc = (size_t)sb.st_size + 1;
        buf = malloc(alloc);
        if (!buf)
                return log_error_errno(-ENOMEM, "out of memory");
        for (;;) {
                ssize_t n;

                if (size + 1 >= alloc) {
                        char *m;

                        if (size >= max)
                                return -EFBIG;
                        m = realloc(buf, alloc * 2);
                        if (!m)
                                return log_error_errno(-ENOMEM, "out of memory");
                        buf = m;
                        alloc *= 2;
                }
                n = read(fd, buf + size, alloc - size - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(-errno, "cannot read '%s' in '%s': %m", key, s->dir);
                }
                if (n == 0)
                        break;
                size += (size_t)n;
        }
        if (size > max)
                return -EFBIG;
        buf[size] = '\0';
        if (ret_etag) {
                /* the content's SHA-256: what put_cond compares */
                uint8_t h[32];
                char hex[65];

                sha256_buffer(buf, size, h);
                *ret_etag = strdup(hex_encode(h, 32, hex));
                if (!*ret_etag)
                        return log_error_errno(-ENOMEM, "out of memory");
        }
        *ret_data = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

/* Creates key only when absent: link() fails with EEXIST where a rename
 * would replace. Replaces or removes it only when its content still has
 * the SHA-256 etag, under an exclusive flock on KEY~lock that every
 * conditional writer of key takes (plain puts do not touch the objects
 * that are written this way: channels). */
static int file_put_cond(struct store *st, const char *key, const void *data, size_t size, const char *etag)
{
        struct file_store *s = FS(st);
        _cleanup_free_ char *tmp = NULL, *lock = NULL, *cur = NULL, *cur_etag = NULL;
        _cleanup_close_ int lock_fd = -1;
        size_t cur_size;
        int r;

        if (!etag) {
                r = write_temp(s, key, data, size, &tmp);
                if (r < 0)
                        return r;
                r = linkat(s->dir_fd, tmp, s->dir_fd, key, 0) < 0 ? -errno : 0;
                (void)unlinkat(s->dir_fd, tmp, 0);
                if (r == -EEXIST)
                        return r;
                if (r < 0)
                        return log_error_errno(r, "cannot create '%s' in '%s': %m", key, s->dir);
                return sync_parent(s, key);
        }

        r = make_parents(s, key);
        if (r < 0)
                return log_error_errno(r, "cannot create the directories of '%s' in '%s': %m", key, s->dir);
        if (asprintf(&lock, "%s~lock", key) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        lock_fd = openat(s->dir_fd, lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
        if (lock_fd < 0)
                return log_error_errno(-errno, "cannot open '%s' in '%s': %m", lock, s->dir);
        while (flock(lock_fd, LOCK_EX) < 0)
                if (errno != EINTR)
                        return log_error_errno(-errno, "cannot lock '%s' in '%s': %m", lock, s->dir);

        r = file_get(st, key, UINT64_MAX, &cur, &cur_size, &cur_etag);
        if (r == -ENOENT)
                return -ESTALE;
        if (r < 0)
                return r;
        if (!streq(cur_etag, etag))
                return -ESTALE;
        if (!data) {
                if (unlinkat(s->dir_fd, key, 0) < 0)
                        return log_error_errno(-errno, "cannot remove '%s' from '%s': %m", key, s->dir);
                return sync_parent(s, key);
        }
        return file_put(st, key, data, size);
}

static int file_exists(struct store *st, const char *key)
{
        struct file_store *s = FS(st);
        struct stat sb;

        if (fstatat(s->dir_fd, key, &sb, 0) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return 0;
                return log_error_errno(-errno, "cannot stat '%s' in '%s': %m", key, s->dir);
        }
        return S_ISREG(sb.st_mode);
}

static int file_remove(struct store *st, const char *key)
{
        struct file_store *s = FS(st);

        /* empty directories stay: removing them would race a put that
         * has just created them */
        if (unlinkat(s->dir_fd, key, 0) < 0 && errno != ENOENT && errno != ENOTDIR) {
                if (errno == EISDIR)
                        return 0;
                return log_error_errno(-errno, "cannot remove '%s' from '%s': %m", key, s->dir);
        }
        return 0;
}

struct listing {
        const char *prefix;
        char **keys;
        int64_t *mtimes;
        size_t n, alloc;
};

static int listing_add(struct listing *l, const char *key, int64_t mtime)
{
        if (l->n + 1 >= l->alloc) {
                size_t a = l->alloc ? l->alloc * 2 : 64;
                char **k = reallocarray(l->keys, a, sizeof(*k));

                if (!k)
                        return -ENOMEM;
                l->keys = k;
                int64_t *m = reallocarray(l->mtimes, a, sizeof(*m));
                if (!m)
                        return -ENOMEM;
                l->mtimes = m;
                l->alloc = a;
        }
        l->keys[l->n] = strdup(key);
        if (!l->keys[l->n])
                return -ENOMEM;
        l->mtimes[l->n++] = mtime;
        l->keys[l->n] = NULL;
        return 0;
}

/* Could a key under directory rel ("a/b") start with the prefix? */
static bool dir_may_match(const char *rel, const char *prefix)
{
        size_t lr = strlen(rel), lp = strlen(prefix);

        if (lp <= lr) /* the prefix ends within rel: rel must start with it */
                return strncmp(rel, prefix, lp) == 0;
        /* rel + '/' must start the prefix */
        return strncmp(rel, prefix, lr) == 0 && prefix[lr] == '/';
}

/* Adds every object under the store directory rel ("" for the top). */
static int walk(struct file_store *s, const char *rel, struct listing *l)
{
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int r = 0;

        fd = openat(s->dir_fd, *rel ? rel : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        TAKE_FD(fd);

        while (r >= 0) {
                _cleanup_free_ char *path = NULL;
                struct stat sb;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        r = errno ? -errno : 0;
                        break;
                }
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (asprintf(&path, "%s%s%s", rel, *rel ? "/" : "", de->d_name) < 0) {
                        path = NULL;
                        r = -ENOMEM;
                        break;
                }
                if (!store_key_is_valid(path)) /* temporary files, strangers */
                        continue;
                if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT) /* removed meanwhile */
                                r = -errno;
                        continue;
                }
                if (S_ISDIR(sb.st_mode)) {
                        if (dir_may_match(path, l->prefix))
                                r = walk(s, path, l);
                } else if (S_ISREG(sb.st_mode) && strncmp(path, l->prefix, strlen(l->prefix)) == 0)
                        r = listing_add(l, path, (int64_t)sb.st_mtim.tv_sec);
        }
        closedir(d);
        return r;
}

static int file_list(struct store *st, const char *prefix, char ***ret_keys, int64_t **ret_mtimes)
{
        struct file_store *s = FS(st);
        struct listing l = { .prefix = prefix };
        _cleanup_free_ char *top = NULL;
        const char *slash = strrchr(prefix, '/');
        int r;

        /* start at the deepest directory the prefix names in full */
        top = strndup(prefix, slash ? (size_t)(slash - prefix) : 0);
        if (!top)
                return log_error_errno(-ENOMEM, "out of memory");
        r = walk(s, top, &l);
        if (r >= 0 && !l.keys) {
                l.keys = calloc(1, sizeof(*l.keys));
                l.mtimes = calloc(1, sizeof(*l.mtimes));
                if (!l.keys || !l.mtimes)
                        r = -ENOMEM;
        }
        if (r < 0) {
                strv_free(l.keys);
                free(l.mtimes);
                return log_error_errno(r, "cannot list '%s' in '%s': %m", prefix, s->dir);
        }
        store_sort_keys(l.keys, l.mtimes, l.n);
        *ret_keys = l.keys;
        if (ret_mtimes)
                *ret_mtimes = l.mtimes;
        else
                free(l.mtimes);
        return 0;
}

/* Is the temporary name (the part after '~') a leftover? Ours (this
 * boot) when its writer is gone; another host's or boot's when older than
 * older_than. */
static bool temp_is_stale(const char *tail, int64_t mtime, int64_t older_than)
{
        char boot[9];
        long pid;
        unsigned n;
        int end = 0;

        if (streq(tail, "lock"))
                return false; /* put_cond's lock: tiny, and a holder may wait on it */
        if (sscanf(tail, "%8[0-9a-f].%ld.%u%n", boot, &pid, &n, &end) == 3 && tail[end] == '\0' &&
            streq(boot, boot_tag()))
                return !pid_is_alive((pid_t)pid) || mtime < older_than;
        return mtime < older_than;
}

static int sweep_dir(struct file_store *s, const char *rel, int64_t older_than, size_t *removed)
{
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int r = 0;

        fd = openat(s->dir_fd, *rel ? rel : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        TAKE_FD(fd);
        while (r >= 0 && (errno = 0, de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                const char *tilde;
                struct stat sb;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (asprintf(&path, "%s%s%s", rel, *rel ? "/" : "", de->d_name) < 0) {
                        path = NULL;
                        r = -ENOMEM;
                        break;
                }
                if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                        continue; /* removed meanwhile */
                tilde = strchr(de->d_name, '~');
                if (S_ISDIR(sb.st_mode) && !tilde)
                        r = sweep_dir(s, path, older_than, removed);
                else if (S_ISREG(sb.st_mode) && tilde && temp_is_stale(tilde + 1, (int64_t)sb.st_mtim.tv_sec, older_than)) {
                        if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
                                log_debug("removed '%s' from '%s', left by a killed writer", path, s->dir);
                                (*removed)++;
                        } else if (errno != ENOENT)
                                r = -errno;
                }
        }
        if (r >= 0 && errno != 0)
                r = -errno;
        closedir(d);
        return r;
}

static int file_sweep(struct store *st, int64_t older_than, size_t *ret_removed)
{
        struct file_store *s = FS(st);
        int r = sweep_dir(s, "", older_than, ret_removed);

        if (r < 0)
                return log_error_errno(r, "cannot sweep temporaries in '%s': %m", s->dir);
        return 0;
}

const struct store_ops store_file_ops = {
        .scheme = "file",
        .open = file_open,
        .close = file_close,
        .get = file_get,
        .put = file_put,
        .put_cond = file_put_cond,
        .sweep = file_sweep,
        .exists = file_exists,
        .remove = file_remove,
        .list = file_list,
};
