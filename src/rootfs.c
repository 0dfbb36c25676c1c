/* Owns the rootfs stage: the source ops table (mmdebstrap, tarball,
 * directory here; busybox in rootfs-busybox.c), the bootstrap cache and the
 * hand-over to customize.c, which applies the kickstart to a copy.
 *
 * Cache: <cache_dir>/rootfs-<sha256 of the key text>/ holds base.tar,
 * vmlinuz, initrd, kernel-version, key (the inputs, readable) and, written
 * last, complete: the size and SHA-256 of every other file. An entry is
 * built in .rootfs-<hash>.tmp beside it and renamed into place; a hit needs
 * the marker and every digest to match, else the entry is removed and
 * rebuilt. rootfs-<hash>.lock (flock) keeps two builds of the same key from
 * racing: exclusive while checking or bootstrapping, shared while in use. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "customize.h"
#include "rootfs-internal.h"
#include "rootfs.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/run.h"
#include "shared/strv.h"

/* ---- helpers ---- */

/* A cached file for this build: a hard link when the work directory is on
 * the cache's filesystem (nobody writes either), else a copy. */
static int link_or_copy(const char *from, const char *to)
{
        if (link(from, to) == 0)
                return 0;
        return copy_file(from, to, 0644);
}

int rootfs_sha256_file(const char *path, char hex[static 65], uint64_t *ret_size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        EVP_MD_CTX *ctx;
        uint8_t md[32];
        uint64_t size = 0;
        char *buf;
        int r = 0;

        if (fd < 0)
                return -errno;
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        buf = malloc(1 << 20);
        ctx = EVP_MD_CTX_new();
        if (!buf || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
                r = -ENOMEM;
                goto finish;
        }
        for (;;) {
                ssize_t n = read(fd, buf, 1 << 20);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto finish;
                }
                if (n == 0)
                        break;
                EVP_DigestUpdate(ctx, buf, (size_t)n);
                size += (uint64_t)n;
        }
        EVP_DigestFinal_ex(ctx, md, NULL);
        hex_encode(md, sizeof(md), hex);
        if (ret_size)
                *ret_size = size;
finish:
        EVP_MD_CTX_free(ctx);
        free(buf);
        return r;
}

int rootfs_key_file(FILE *key, const char *name, const char *path)
{
        char hex[65];
        uint64_t size;
        int r = rootfs_sha256_file(path, hex, &size);

        if (r < 0)
                return r;
        fprintf(key, "%s=%s %" PRIu64 "\n", name, hex, size);
        return 0;
}

static int run_full(const char *what, const char *const *argv, const char *cwd, const char *const *env,
                    char **ret_stdout)
{
        _cleanup_free_ char *out = NULL, *err = NULL;
        struct run_options o = { .cwd = cwd, .env = env };
        char line[512];
        int r;

        r = run_argv(argv, &o, ret_stdout ? &out : NULL, &err);
        if (r == -ENOENT)
                return log_error_errno(r, "%s: '%s' is not installed", what, argv[0]);
        if (r < 0)
                return log_error_errno(r, "%s: cannot run '%s': %m", what, argv[0]);
        if (r > 0) {
                log_error("%s: '%s' failed (exit status %d): %s", what, argv[0], r,
                          run_output_line(err, true, line, sizeof(line)));
                return -EIO;
        }
        if (ret_stdout)
                *ret_stdout = TAKE_PTR(out);
        return 0;
}

int rootfs_run(const char *what, const char *const *argv, const char *cwd, const char *const *env)
{
        return run_full(what, argv, cwd, env, NULL);
}

int rootfs_run_capture(const char *what, const char *const *argv, const char *const *env, char **ret_stdout)
{
        return run_full(what, argv, NULL, env, ret_stdout);
}

int rootfs_tar_dir(const char *dir, const char *tar_path, uint64_t epoch)
{
        _cleanup_free_ char *mtime = NULL, *file = NULL, *map_dir = NULL, *owner_map = NULL, *group_map = NULL,
                            *owner_arg = NULL, *group_arg = NULL;
        int r;

        if (asprintf(&mtime, "--mtime=@%" PRIu64, epoch) < 0 || asprintf(&file, "--file=%s", tar_path) < 0)
                return log_oom_rootfs();

        /* Files the build user owns stand for root's; others keep their
         * owners. GNU tar maps them with --owner-map/--group-map. */
        if (asprintf(&map_dir, "%s.maps", tar_path) < 0 || asprintf(&owner_map, "%s/owner", map_dir) < 0 ||
            asprintf(&group_map, "%s/group", map_dir) < 0)
                return log_oom_rootfs();
        if (mkdir(map_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "cannot create '%s': %m", map_dir);
        {
                char line[64];
                int n = snprintf(line, sizeof(line), "+%u root:0\n", (unsigned)getuid());
                r = write_file_atomic(owner_map, line, (size_t)n, 0600);
                if (r >= 0) {
                        n = snprintf(line, sizeof(line), "+%u root:0\n", (unsigned)getgid());
                        r = write_file_atomic(group_map, line, (size_t)n, 0600);
                }
                if (r < 0) {
                        rm_rf(map_dir);
                        return log_error_errno(r, "cannot write tar owner maps in '%s': %m", map_dir);
                }
        }
        if (asprintf(&owner_arg, "--owner-map=%s", owner_map) < 0 ||
            asprintf(&group_arg, "--group-map=%s", group_map) < 0) {
                rm_rf(map_dir);
                return log_oom_rootfs();
        }

        const char *argv[] = {
                "tar",
                "--create",
                file,
                "--directory",
                dir,
                "--numeric-owner",
                owner_arg,
                group_arg,
                "--sort=name",
                "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                mtime,
                "--clamp-mtime",
                ".",
                NULL,
        };
        r = rootfs_run("cannot pack the tree", argv, NULL, NULL);
        rm_rf(map_dir);
        if (r < 0)
                unlink(tar_path);
        return r;
}

/* Where openat2() is missing (kernels before 5.6, valgrind 3.19), resolve
 * the path one component at a time under rootfd, following symlinks here
 * and restarting absolute ones at the root: what RESOLVE_IN_ROOT does, but
 * not atomic, which is fine for a tree only this build can see. */
static int open_in_root_walk(int rootfd, const char *path, int flags, mode_t mode)
{
        _cleanup_free_ char *todo = strdup(path), *done = strdup("");
        unsigned links = 0;

        if (!todo || !done)
                return -ENOMEM;
        for (;;) {
                char *comp = todo, *rest, *cand, target[4096];
                struct stat st;
                ssize_t n;

                while (*comp == '/')
                        comp++;
                if (!*comp)
                        break;
                rest = comp + strcspn(comp, "/");
                if (*rest)
                        *rest++ = '\0';
                if (streq(comp, ".")) {
                        memmove(todo, rest, strlen(rest) + 1);
                        continue;
                }
                if (streq(comp, "..")) {
                        char *slash = strrchr(done, '/');
                        *(slash ? slash : done) = '\0';
                        memmove(todo, rest, strlen(rest) + 1);
                        continue;
                }
                if (asprintf(&cand, "%s%s%s", done, *done ? "/" : "", comp) < 0)
                        return -ENOMEM;
                if (fstatat(rootfd, cand, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) &&
                    (*rest || !(flags & O_NOFOLLOW))) {
                        char *next;

                        n = readlinkat(rootfd, cand, target, sizeof(target) - 1);
                        free(cand);
                        if (n < 0)
                                return -errno;
                        if (++links > 40)
                                return -ELOOP;
                        target[n] = '\0';
                        if (target[0] == '/')
                                done[0] = '\0';
                        if (asprintf(&next, "%s/%s", target, rest) < 0)
                                return -ENOMEM;
                        free(todo);
                        todo = next;
                        continue;
                }
                free(done);
                done = cand;
                memmove(todo, rest, strlen(rest) + 1);
        }
        {
                int fd = openat(rootfd, *done ? done : ".", flags | O_NOFOLLOW | O_CLOEXEC, mode);
                return fd < 0 ? -errno : fd;
        }
}

int rootfs_open_in_root(int rootfd, const char *path, int flags, mode_t mode)
{
        struct open_how how = {
                .flags = (uint64_t)(flags | O_CLOEXEC),
                .mode = (flags & O_CREAT) ? mode : 0,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        long fd;

        while (*path == '/')
                path++;
        if (!*path)
                path = ".";
        fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
        if (fd < 0 && errno == ENOSYS)
                return open_in_root_walk(rootfd, path, flags, mode);
        return fd < 0 ? -errno : (int)fd;
}

int log_oom_rootfs(void)
{
        return log_error_errno(-ENOMEM, "out of memory");
}

/* ---- finding the kernel and initrd in a tree ---- */

struct tree_reader {
        /* every path in the tree, relative, without "./" */
        char **names;
        /* copies the file at name (following symlinks inside the tree) to to */
        int (*fetch)(const struct tree_reader *t, const char *name, const char *to);
        const char *tar; /* tarball */
        int rootfd;      /* directory */
        char **raw;      /* tarball: names as stored, parallel to names */
};

static const char *skip_dot_slash(const char *s)
{
        while (s[0] == '.' && s[1] == '/')
                s += 2;
        while (*s == '/')
                s++;
        return s;
}

/* "boot/vmlinuz-6.1.0-28-amd64" → the newest by version order. */
static const char *newest_with_prefix(char *const *names, const char *prefix)
{
        const char *best = NULL;
        size_t n = strlen(prefix);

        STRV_FOREACH (p, names)
                if (strncmp(*p, prefix, n) == 0 && (*p)[n] && !strchr(*p + n, '/') &&
                    (!best || strverscmp(*p + n, best + n) > 0))
                        best = *p;
        return best;
}

static int normalize_in_tree(const char *dir, const char *target, char **ret)
{
        _cleanup_free_ char *joined = NULL;
        _cleanup_strv_free_ char **parts = NULL, **out = NULL;
        size_t len = 0;
        char *s;
        int r;

        if (target[0] == '/')
                joined = strdup(target);
        else if (asprintf(&joined, "%s/%s", dir, target) < 0)
                joined = NULL;
        if (!joined)
                return -ENOMEM;
        r = strv_split_extend(&parts, joined, "/");
        if (r < 0)
                return r;
        STRV_FOREACH (p, parts) {
                if (streq(*p, "."))
                        continue;
                if (streq(*p, "..")) {
                        size_t n = strv_length(out);
                        if (n > 0) {
                                free(out[n - 1]);
                                out[n - 1] = NULL;
                        }
                        continue;
                }
                r = strv_extend(&out, *p);
                if (r < 0)
                        return r;
        }
        STRV_FOREACH (p, out)
                len += strlen(*p) + 1;
        s = calloc(len + 1, 1);
        if (!s)
                return -ENOMEM;
        STRV_FOREACH (p, out) {
                if (p != out)
                        strcat(s, "/");
                strcat(s, *p);
        }
        *ret = s;
        return 0;
}

static int tar_fetch(const struct tree_reader *t, const char *name, const char *to)
{
        _cleanup_free_ char *tmp = NULL, *cur = strdup(name);
        int r = -ELOOP;

        if (!cur || asprintf(&tmp, "%s.extract", to) < 0)
                return -ENOMEM;
        for (unsigned depth = 0; depth < 16; depth++) {
                _cleanup_free_ char *member_path = NULL, *next = NULL, *dir = NULL;
                char linkbuf[4096];
                const char *raw = NULL;
                struct stat st;
                ssize_t n;

                for (size_t i = 0; t->names[i]; i++)
                        if (streq(t->names[i], cur))
                                raw = t->raw[i];
                if (!raw)
                        return -ENOENT;
                rm_rf(tmp);
                r = mkdir_p(tmp, 0700);
                if (r < 0)
                        return r;
                const char *argv[] = { "tar",
                                       "--extract",
                                       "--file",
                                       t->tar,
                                       "--directory",
                                       tmp,
                                       "--no-same-owner",
                                       "--no-same-permissions",
                                       "--",
                                       raw,
                                       NULL };
                r = rootfs_run("cannot extract the kernel", argv, NULL, NULL);
                if (r < 0)
                        break;
                if (asprintf(&member_path, "%s/%s", tmp, cur) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (lstat(member_path, &st) < 0) {
                        r = -errno;
                        break;
                }
                if (S_ISREG(st.st_mode)) {
                        r = rename(member_path, to) < 0 ? -errno : 0;
                        if (r >= 0)
                                chmod(to, 0644);
                        break;
                }
                if (!S_ISLNK(st.st_mode)) {
                        r = -EISDIR;
                        break;
                }
                n = readlink(member_path, linkbuf, sizeof(linkbuf) - 1);
                if (n < 0) {
                        r = -errno;
                        break;
                }
                linkbuf[n] = '\0';
                dir = strdup(cur);
                if (!dir) {
                        r = -ENOMEM;
                        break;
                }
                if (strrchr(dir, '/'))
                        *strrchr(dir, '/') = '\0';
                else
                        dir[0] = '\0';
                r = normalize_in_tree(dir, linkbuf, &next);
                if (r < 0)
                        break;
                free(cur);
                cur = TAKE_PTR(next);
                r = -ELOOP;
        }
        rm_rf(tmp);
        return r;
}

static int dir_fetch(const struct tree_reader *t, const char *name, const char *to)
{
        _cleanup_close_ int fd = rootfs_open_in_root(t->rootfd, name, O_RDONLY, 0);

        if (fd < 0)
                return fd;
        return copy_fd_to_file(fd, to, 0644);
}

static int tar_list(const char *tar, char ***ret_names, char ***ret_raw)
{
        _cleanup_free_ char *out = NULL;
        _cleanup_strv_free_ char **raw = NULL, **names = NULL;
        const char *argv[] = { "tar", "--list", "--file", tar, NULL };
        int r;

        r = rootfs_run_capture("cannot list the tree", argv, NULL, &out);
        if (r < 0)
                return r;
        r = strv_split_extend(&raw, out, "\n");
        if (r < 0)
                return log_oom_rootfs();
        STRV_FOREACH (p, raw) {
                _cleanup_free_ char *n = strdup(skip_dot_slash(*p));
                if (!n)
                        return log_oom_rootfs();
                if (*n && n[strlen(n) - 1] == '/')
                        n[strlen(n) - 1] = '\0';
                r = strv_consume(&names, TAKE_PTR(n));
                if (r < 0)
                        return log_oom_rootfs();
        }
        *ret_names = TAKE_PTR(names);
        *ret_raw = TAKE_PTR(raw);
        return 0;
}

/* The kernel, initrd and kernel-version files of a tree into out_dir. */
static int extract_kernel(const struct spec *s, const struct tree_reader *t, const char *where, const char *out_dir)
{
        const struct template *tp = s->template;
        _cleanup_free_ char *kernel = NULL, *initrd = NULL, *version = NULL, *kpath = NULL, *ipath = NULL,
                            *vpath = NULL, *want = NULL;
        const char *k, *base;
        int r;

        if (tp->kernel)
                k = skip_dot_slash(tp->kernel);
        else {
                k = newest_with_prefix(t->names, "boot/vmlinuz-");
                if (!k)
                        return log_error_errno(-ENOENT,
                                               "no kernel in '%s': no /boot/vmlinuz-* (install one, or set Kernel= "
                                               "in the template)",
                                               where);
        }
        kernel = strdup(k);
        base = strrchr(k, '/') ? strrchr(k, '/') + 1 : k;
        version = strdup(strncmp(base, "vmlinuz-", 8) == 0 ? base + 8 : "unknown");
        if (!kernel || !version)
                return log_oom_rootfs();

        if (tp->initrd)
                initrd = strdup(skip_dot_slash(tp->initrd));
        else {
                static const char *const patterns[] = { "boot/initrd.img-%s", "boot/initramfs-%s.img",
                                                        "boot/initrd-%s" };
                for (size_t i = 0; i < ELEMENTSOF(patterns) && !initrd; i++) {
                        want = x_free(want);
                        if (asprintf(&want, patterns[i], version) < 0)
                                return log_oom_rootfs();
                        if (strv_contains(t->names, want))
                                initrd = TAKE_PTR(want);
                }
                if (!initrd)
                        return log_error_errno(-ENOENT,
                                               "no initrd for kernel '%s' in '%s': install initramfs-tools or dracut, "
                                               "or set Initrd= in the template",
                                               version, where);
        }

        if (asprintf(&kpath, "%s/" ROOTFS_KERNEL, out_dir) < 0 || asprintf(&ipath, "%s/" ROOTFS_INITRD, out_dir) < 0 ||
            asprintf(&vpath, "%s/" ROOTFS_KERNEL_VERSION, out_dir) < 0)
                return log_oom_rootfs();
        r = t->fetch(t, kernel, kpath);
        if (r < 0)
                return log_error_errno(r, "cannot copy the kernel '/%s' out of '%s': %m", kernel, where);
        r = t->fetch(t, initrd, ipath);
        if (r < 0)
                return log_error_errno(r, "cannot copy the initrd '/%s' out of '%s': %m", initrd, where);
        r = write_file_atomic(vpath, version, strlen(version), 0644);
        if (r < 0)
                return log_error_errno(r, "cannot write '%s': %m", vpath);
        return 0;
}

static int extract_kernel_from_tar(const struct spec *s, const char *tar, const char *where, const char *out_dir)
{
        _cleanup_strv_free_ char **names = NULL, **raw = NULL;
        struct tree_reader t = { .fetch = tar_fetch, .tar = tar, .rootfd = -1 };
        int r;

        r = tar_list(tar, &names, &raw);
        if (r < 0)
                return r;
        t.names = names;
        t.raw = raw;
        return extract_kernel(s, &t, where, out_dir);
}

/* ---- apt sources: the mirror when the template names none ---- */

struct apt_source {
        char *uri;
        char **suites;
        char **components;
};

static void apt_sources_free(struct apt_source *a, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(a[i].uri);
                strv_free(a[i].suites);
                strv_free(a[i].components);
        }
        free(a);
}

static int apt_source_add(struct apt_source **a, size_t *n, const char *uri, char **suites, char **components)
{
        struct apt_source *m = realloc(*a, (*n + 1) * sizeof(**a));
        if (!m)
                return -ENOMEM;
        *a = m;
        m[*n] = (struct apt_source){ .uri = strdup(uri) };
        if (!m[*n].uri || strv_extend_strv(&m[*n].suites, suites) < 0 ||
            strv_extend_strv(&m[*n].components, components) < 0) {
                (*n)++;
                return -ENOMEM;
        }
        (*n)++;
        return 0;
}

static int parse_one_line_sources(const char *text, struct apt_source **a, size_t *n)
{
        _cleanup_strv_free_ char **lines = NULL;
        int r = strv_split_extend(&lines, text, "\n");

        if (r < 0)
                return r;
        STRV_FOREACH (l, lines) {
                _cleanup_strv_free_ char **w = NULL, **suite = NULL;
                size_t i = 1;
                char *hash = strchr(*l, '#');

                if (hash)
                        *hash = '\0';
                r = strv_split_extend(&w, *l, " \t");
                if (r < 0)
                        return r;
                if (strv_length(w) < 3 || !streq(w[0], "deb"))
                        continue;
                if (w[1][0] == '[') /* options: skip to the closing bracket */
                        while (w[i] && !strchr(w[i], ']'))
                                i++;
                if (w[1][0] == '[')
                        i++;
                if (strv_length(w) < i + 2)
                        continue;
                r = strv_extend(&suite, w[i + 1]);
                if (r < 0)
                        return r;
                r = apt_source_add(a, n, w[i], suite, w + i + 2);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_deb822_sources(const char *text, struct apt_source **a, size_t *n)
{
        const char *s = text;
        int r;

        /* Paragraphs are separated by blank lines; comments start with '#',
         * continuation lines with white space (not needed for these keys). */
        while (*s) {
                const char *end = strstr(s, "\n\n");
                size_t len = end ? (size_t)(end - s) : strlen(s);
                _cleanup_free_ char *para = strndup(s, len);
                _cleanup_strv_free_ char **lines = NULL, **types = NULL, **uris = NULL, **suites = NULL, **comps = NULL;
                bool enabled = true;

                if (!para)
                        return -ENOMEM;
                r = strv_split_extend(&lines, para, "\n");
                if (r < 0)
                        return r;
                STRV_FOREACH (l, lines) {
                        char *colon, *v;

                        if ((*l)[0] == '#' || (*l)[0] == ' ' || (*l)[0] == '\t')
                                continue;
                        colon = strchr(*l, ':');
                        if (!colon)
                                continue;
                        *colon = '\0';
                        v = colon + 1;
                        r = 0;
                        if (strcasecmp(*l, "Types") == 0)
                                r = strv_split_extend(&types, v, " \t");
                        else if (strcasecmp(*l, "URIs") == 0)
                                r = strv_split_extend(&uris, v, " \t");
                        else if (strcasecmp(*l, "Suites") == 0)
                                r = strv_split_extend(&suites, v, " \t");
                        else if (strcasecmp(*l, "Components") == 0)
                                r = strv_split_extend(&comps, v, " \t");
                        else if (strcasecmp(*l, "Enabled") == 0)
                                enabled = !strstr(v, "no");
                        if (r < 0)
                                return r;
                }
                if (enabled && strv_contains(types, "deb"))
                        STRV_FOREACH (u, uris) {
                                r = apt_source_add(a, n, *u, suites, comps);
                                if (r < 0)
                                        return r;
                        }
                if (!end)
                        break;
                s = end + 2;
        }
        return 0;
}

int rootfs_cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The host's apt sources: /etc/apt/sources.list, then sources.list.d's
 * *.list and *.sources in name order, as apt reads them. */
static int read_apt_sources(struct apt_source **ret, size_t *ret_n)
{
        _cleanup_strv_free_ char **files = NULL;
        struct apt_source *a = NULL;
        size_t n = 0;
        DIR *d;
        int r = 0;

        if (access("/etc/apt/sources.list", F_OK) == 0 && strv_extend(&files, "/etc/apt/sources.list") < 0)
                return -ENOMEM;
        d = opendir("/etc/apt/sources.list.d");
        if (d) {
                _cleanup_strv_free_ char **names = NULL;
                struct dirent *de;

                while ((de = readdir(d))) {
                        size_t len = strlen(de->d_name);
                        if ((len > 5 && streq(de->d_name + len - 5, ".list")) ||
                            (len > 8 && streq(de->d_name + len - 8, ".sources")))
                                if (strv_extend(&names, de->d_name) < 0) {
                                        closedir(d);
                                        return -ENOMEM;
                                }
                }
                closedir(d);
                qsort(names, strv_length(names), sizeof(char *), rootfs_cmp_str);
                STRV_FOREACH (f, names) {
                        char *path;
                        if (asprintf(&path, "/etc/apt/sources.list.d/%s", *f) < 0 || strv_consume(&files, path) < 0)
                                return -ENOMEM;
                }
        }
        STRV_FOREACH (f, files) {
                _cleanup_free_ char *text = NULL;
                size_t len = strlen(*f);

                if (read_full_file(*f, 1 << 20, &text, NULL) < 0)
                        continue;
                if (len > 8 && streq(*f + len - 8, ".sources"))
                        r = parse_deb822_sources(text, &a, &n);
                else
                        r = parse_one_line_sources(text, &a, &n);
                if (r < 0) {
                        apt_sources_free(a, n);
                        return r;
                }
        }
        *ret = a;
        *ret_n = n;
        return 0;
}

static bool suite_matches(const char *have, const char *want)
{
        size_t n = strlen(want);

        /* bookworm, bookworm-updates, bookworm-security, bookworm/updates */
        return strncmp(have, want, n) == 0 && (have[n] == '\0' || have[n] == '-' || have[n] == '/');
}

/* mmdebstrap's MIRROR arguments: the template's Mirror=, else one
 * "deb URI SUITE COMPONENTS" line per host source of the template's suite
 * (with its -updates and -security), else the host's main mirror with the
 * template's suite. Never a hard-coded host. */
static int mirror_args(const struct spec *s, char ***ret)
{
        const struct template *t = s->template;
        _cleanup_strv_free_ char **out = NULL;
        struct apt_source *a = NULL;
        size_t n = 0;
        int r;

        if (t->mirror) {
                if (strv_extend(&out, t->mirror) < 0)
                        return log_oom_rootfs();
                *ret = TAKE_PTR(out);
                return 0;
        }
        r = read_apt_sources(&a, &n);
        if (r < 0)
                return log_error_errno(r, "cannot read the apt sources in '/etc/apt': %m");
        for (size_t i = 0; i < n && r >= 0; i++)
                STRV_FOREACH (suite, a[i].suites)
                        if (suite_matches(*suite, t->suite)) {
                                _cleanup_free_ char *line = NULL, *comps = NULL;
                                size_t len = 1;
                                STRV_FOREACH (c, a[i].components)
                                        len += strlen(*c) + 1;
                                comps = calloc(len, 1);
                                if (!comps) {
                                        r = -ENOMEM;
                                        break;
                                }
                                STRV_FOREACH (c, a[i].components) {
                                        if (*comps)
                                                strcat(comps, " ");
                                        strcat(comps, *c);
                                }
                                if (asprintf(&line, "deb %s %s %s", a[i].uri, *suite, *comps ? comps : "main") < 0 ||
                                    strv_consume(&out, TAKE_PTR(line)) < 0) {
                                        r = -ENOMEM;
                                        break;
                                }
                        }
        /* No source of that suite: the first mirror serving a plain suite. */
        for (size_t i = 0; i < n && r >= 0 && !out; i++)
                STRV_FOREACH (suite, a[i].suites)
                        if (!strpbrk(*suite, "-/") && !out) {
                                char *line;
                                if (asprintf(&line, "deb %s %s main", a[i].uri, t->suite) < 0 ||
                                    strv_consume(&out, line) < 0)
                                        r = -ENOMEM;
                        }
        apt_sources_free(a, n);
        if (r < 0)
                return log_oom_rootfs();
        if (!out)
                return log_error_errno(-ENOENT,
                                       "no apt source on this machine to fetch suite '%s' from (read "
                                       "/etc/apt/sources.list and sources.list.d): set Mirror= in the template",
                                       t->suite);
        *ret = TAKE_PTR(out);
        return 0;
}

static const char *debian_arch(const char *arch)
{
        return streq_ptr(arch, "arm64") ? "arm64" : "amd64";
}

/* The package set handed to mmdebstrap: the spec's, plus initramfs-tools
 * when no initrd generator is named (minbase installs no Recommends, and
 * the Debian kernel needs an initrd to find a virtio root). */
static int mmdebstrap_packages(const struct spec *s, char ***ret)
{
        _cleanup_strv_free_ char **p = NULL;

        if (strv_extend_strv(&p, s->packages) < 0)
                return -ENOMEM;
        if (!strv_contains(p, "initramfs-tools") && !strv_contains(p, "dracut") && !strv_contains(p, "dracut-core") &&
            strv_extend(&p, "initramfs-tools") < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(p);
        return 0;
}

static int mmdebstrap_cache_key(const struct spec *s, FILE *key)
{
        _cleanup_strv_free_ char **mirrors = NULL, **pkgs = NULL;
        int r;

        r = mirror_args(s, &mirrors);
        if (r < 0)
                return r;
        if (mmdebstrap_packages(s, &pkgs) < 0)
                return log_oom_rootfs();
        fprintf(key, "suite=%s\nvariant=%s\narch=%s\n", s->template->suite, strna(s->template->variant),
                debian_arch(s->architecture));
        STRV_FOREACH (m, mirrors)
                fprintf(key, "mirror=%s\n", *m);
        STRV_FOREACH (p, pkgs)
                fprintf(key, "package=%s\n", *p);
        fprintf(key, "kernel-package=%s\nkernel=%s\ninitrd=%s\nsource-date-epoch=%" PRIu64 "\n",
                strna(s->template->kernel_package), strna(s->template->kernel), strna(s->template->initrd),
                s->source_date_epoch);
        return 0;
}

static int mmdebstrap_bootstrap(const struct spec *s, const char *out_dir)
{
        _cleanup_strv_free_ char **mirrors = NULL, **pkgs = NULL, **argv = NULL;
        _cleanup_free_ char *tar = NULL, *include = NULL, *variant = NULL, *arch = NULL, *epoch = NULL, *err = NULL;
        size_t len = 1;
        struct run_options o = { 0 };
        char line[512];
        int r;

        r = mirror_args(s, &mirrors);
        if (r < 0)
                return r;
        if (mmdebstrap_packages(s, &pkgs) < 0)
                return log_oom_rootfs();
        STRV_FOREACH (p, pkgs)
                len += strlen(*p) + 1;
        include = calloc(len + strlen("--include="), 1);
        if (!include)
                return log_oom_rootfs();
        strcpy(include, "--include=");
        STRV_FOREACH (p, pkgs) {
                if (p != pkgs)
                        strcat(include, ",");
                strcat(include, *p);
        }
        if (asprintf(&tar, "%s/" ROOTFS_BASE_TAR, out_dir) < 0 ||
            asprintf(&variant, "--variant=%s", s->template->variant ? s->template->variant : "minbase") < 0 ||
            asprintf(&arch, "--architectures=%s", debian_arch(s->architecture)) < 0 ||
            asprintf(&epoch, "SOURCE_DATE_EPOCH=%" PRIu64, s->source_date_epoch) < 0)
                return log_oom_rootfs();

        if (strv_extend(&argv, "mmdebstrap") < 0 ||
            strv_extend(&argv, geteuid() == 0 ? "--mode=root" : "--mode=unshare") < 0 ||
            strv_extend(&argv, variant) < 0 || strv_extend(&argv, arch) < 0 ||
            strv_extend(&argv, pkgs ? include : "--include=") < 0 || strv_extend(&argv, "--format=tar") < 0 ||
            strv_extend(&argv, s->template->suite) < 0 || strv_extend(&argv, tar) < 0 ||
            strv_extend_strv(&argv, mirrors) < 0)
                return log_oom_rootfs();

        const char *env[] = { epoch, NULL };
        o.env = env;
        log_info("bootstrapping %s (%s) with mmdebstrap; this takes a few minutes the first time", s->template->suite,
                 s->template->variant ? s->template->variant : "minbase");
        r = run_argv((const char *const *)argv, &o, NULL, &err);
        if (r == -ENOENT)
                return log_error_errno(r, "cannot bootstrap: 'mmdebstrap' is not installed");
        if (r < 0)
                return log_error_errno(r, "cannot run mmdebstrap: %m");
        if (r > 0) {
                /* mmdebstrap ends with "E: …" lines; the last one is the cause. */
                const char *e = err ? strstr(err, "\nE: ") : NULL;
                log_error("mmdebstrap failed (exit status %d): %s", r,
                          e ? run_output_line(e + 1, false, line, sizeof(line))
                            : run_output_line(err, true, line, sizeof(line)));
                return -EIO;
        }
        return extract_kernel_from_tar(s, tar, "the mmdebstrap tree", out_dir);
}

/* ---- tarball and directory ---- */

static int check_source_path(const struct spec *s, bool want_dir)
{
        const struct template *t = s->template;
        struct stat st;

        if (stat(t->source_path, &st) < 0)
                return log_syntax(t->path, template_key_line(t, "Rootfs", "Path"), "%s '%s' does not exist",
                                  want_dir ? "directory" : "tarball", t->source_path);
        if (want_dir != !!S_ISDIR(st.st_mode))
                return log_syntax(t->path, template_key_line(t, "Rootfs", "Path"), "'%s' is not a %s", t->source_path,
                                  want_dir ? "directory" : "file");
        return 0;
}

static int tarball_cache_key(const struct spec *s, FILE *key)
{
        const struct template *t = s->template;
        int r = check_source_path(s, false);

        if (r < 0)
                return r;
        fprintf(key, "path=%s\nkernel=%s\ninitrd=%s\n", t->source_path, strna(t->kernel), strna(t->initrd));
        r = rootfs_key_file(key, "tarball", t->source_path);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", t->source_path);
        return 0;
}

static int tarball_bootstrap(const struct spec *s, const char *out_dir)
{
        _cleanup_free_ char *tar = NULL;
        int r;

        if (asprintf(&tar, "%s/" ROOTFS_BASE_TAR, out_dir) < 0)
                return log_oom_rootfs();
        /* Kept as it is (tar reads any compression); the copy keeps the
         * entry whole if the original changes. */
        r = copy_file(s->template->source_path, tar, 0644);
        if (r < 0)
                return log_error_errno(r, "cannot copy '%s' to '%s': %m", s->template->source_path, tar);
        return extract_kernel_from_tar(s, tar, s->template->source_path, out_dir);
}

/* A directory's key: every entry's path, type, mode, owner, size, mtime
 * and link target, sorted, hashed. A stat walk, no reads. */
static char **dir_walk_lines;
static size_t dir_walk_prefix;
static int dir_walk_one(const char *path, const struct stat *st, int type _unused_, struct FTW *ftw _unused_)
{
        char target[4096] = "";
        char *line;

        if (S_ISLNK(st->st_mode)) {
                ssize_t n = readlink(path, target, sizeof(target) - 1);
                target[n > 0 ? n : 0] = '\0';
        }
        if (asprintf(&line, "%s %o %u %u %lld %lld.%09ld %s", path + dir_walk_prefix, (unsigned)st->st_mode,
                     (unsigned)st->st_uid, (unsigned)st->st_gid, (long long)st->st_size, (long long)st->st_mtim.tv_sec,
                     st->st_mtim.tv_nsec, target) < 0)
                return -ENOMEM;
        return strv_consume(&dir_walk_lines, line);
}

static int directory_cache_key(const struct spec *s, FILE *key)
{
        const struct template *t = s->template;
        EVP_MD_CTX *ctx;
        uint8_t md[32];
        char hex[65];
        int r = check_source_path(s, true);

        if (r < 0)
                return r;
        dir_walk_lines = NULL;
        dir_walk_prefix = strlen(t->source_path);
        r = nftw(t->source_path, dir_walk_one, 64, FTW_PHYS);
        if (r != 0) {
                dir_walk_lines = strv_free(dir_walk_lines);
                return log_error_errno(r < 0 ? -errno : -r, "cannot walk '%s': %m", t->source_path);
        }
        qsort(dir_walk_lines, strv_length(dir_walk_lines), sizeof(char *), rootfs_cmp_str);
        ctx = EVP_MD_CTX_new();
        if (!ctx) {
                dir_walk_lines = strv_free(dir_walk_lines);
                return log_oom_rootfs();
        }
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        STRV_FOREACH (l, dir_walk_lines)
                EVP_DigestUpdate(ctx, *l, strlen(*l) + 1);
        EVP_DigestFinal_ex(ctx, md, NULL);
        EVP_MD_CTX_free(ctx);
        dir_walk_lines = strv_free(dir_walk_lines);
        fprintf(key, "path=%s\ntree=%s\nuid=%u\nkernel=%s\ninitrd=%s\nsource-date-epoch=%" PRIu64 "\n", t->source_path,
                hex_encode(md, sizeof(md), hex), (unsigned)getuid(), strna(t->kernel), strna(t->initrd),
                s->source_date_epoch);
        return 0;
}

static int directory_bootstrap(const struct spec *s, const char *out_dir)
{
        const char *dir = s->template->source_path;
        _cleanup_free_ char *tar = NULL, *boot = NULL;
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_close_ int rootfd = -1;
        struct tree_reader t = { .fetch = dir_fetch };
        DIR *d;
        int r;

        if (asprintf(&tar, "%s/" ROOTFS_BASE_TAR, out_dir) < 0 || asprintf(&boot, "%s/boot", dir) < 0)
                return log_oom_rootfs();
        r = rootfs_tar_dir(dir, tar, s->source_date_epoch);
        if (r < 0)
                return r;

        rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", dir);
        d = opendir(boot);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        char *n;
                        if (de->d_name[0] == '.')
                                continue;
                        if (asprintf(&n, "boot/%s", de->d_name) < 0 || strv_consume(&names, n) < 0) {
                                closedir(d);
                                return log_oom_rootfs();
                        }
                }
                closedir(d);
        }
        t.names = names;
        t.rootfd = rootfd;
        return extract_kernel(s, &t, dir, out_dir);
}

static const struct rootfs_source_ops mmdebstrap_ops = {
        .name = "mmdebstrap",
        .source = ROOTFS_SOURCE_MMDEBSTRAP,
        .cache_key = mmdebstrap_cache_key,
        .bootstrap = mmdebstrap_bootstrap,
        .scrub_host_files = true,
};

static const struct rootfs_source_ops tarball_ops = {
        .name = "tarball",
        .source = ROOTFS_SOURCE_TARBALL,
        .cache_key = tarball_cache_key,
        .bootstrap = tarball_bootstrap,
};

static const struct rootfs_source_ops directory_ops = {
        .name = "directory",
        .source = ROOTFS_SOURCE_DIRECTORY,
        .cache_key = directory_cache_key,
        .bootstrap = directory_bootstrap,
};

static const struct rootfs_source_ops *const sources[] = {
        &mmdebstrap_ops,
        &tarball_ops,
        &directory_ops,
        &rootfs_busybox_ops,
};

/* ---- the cache ---- */

static const char *const entry_files[] = { ROOTFS_BASE_TAR, ROOTFS_KERNEL, ROOTFS_INITRD, ROOTFS_KERNEL_VERSION,
                                           ROOTFS_KEY };

#define COMPLETE_MAGIC "ingot-rootfs-cache"

static int write_marker(const char *dir)
{
        _cleanup_free_ char *text = NULL, *path = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        int r = 0;

        if (!f)
                return -ENOMEM;
        fprintf(f, COMPLETE_MAGIC " %d\n", ROOTFS_CACHE_FORMAT);
        for (size_t i = 0; i < ELEMENTSOF(entry_files) && r >= 0; i++) {
                _cleanup_free_ char *p = NULL;
                char hex[65];
                uint64_t n;

                if (asprintf(&p, "%s/%s", dir, entry_files[i]) < 0) {
                        r = -ENOMEM;
                        break;
                }
                r = rootfs_sha256_file(p, hex, &n);
                if (r >= 0)
                        fprintf(f, "%s %" PRIu64 " %s\n", hex, n, entry_files[i]);
        }
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/" ROOTFS_COMPLETE, dir) < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, size, 0644);
}

/* 0 when the entry is whole; -ENOENT when there is none; -EBADMSG with a
 * reason when it is there but cannot be trusted. */
static int verify_entry(const char *dir, char *reason, size_t reason_size)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        _cleanup_strv_free_ char **lines = NULL;
        struct stat st;
        bool seen[ELEMENTSOF(entry_files)] = { false };
        int r, format = 0;

        if (stat(dir, &st) < 0)
                return -ENOENT;
        if (asprintf(&path, "%s/" ROOTFS_COMPLETE, dir) < 0)
                return -ENOMEM;
        r = read_full_file(path, 1 << 16, &text, NULL);
        if (r < 0) {
                snprintf(reason, reason_size, "no completion marker");
                return -EBADMSG;
        }
        if (strv_split_extend(&lines, text, "\n") < 0)
                return -ENOMEM;
        if (!lines || sscanf(lines[0], COMPLETE_MAGIC " %d", &format) != 1 || format != ROOTFS_CACHE_FORMAT) {
                snprintf(reason, reason_size, "unreadable completion marker");
                return -EBADMSG;
        }
        for (size_t l = 1; lines[l]; l++) {
                _cleanup_free_ char *file = NULL;
                char want[65], have[65], name[64];
                uint64_t want_size, have_size;
                size_t i;

                if (sscanf(lines[l], "%64s %" SCNu64 " %63s", want, &want_size, name) != 3) {
                        snprintf(reason, reason_size, "unreadable completion marker");
                        return -EBADMSG;
                }
                for (i = 0; i < ELEMENTSOF(entry_files); i++)
                        if (streq(entry_files[i], name))
                                break;
                if (i == ELEMENTSOF(entry_files)) {
                        snprintf(reason, reason_size, "unknown file '%s' in the completion marker", name);
                        return -EBADMSG;
                }
                seen[i] = true;
                if (asprintf(&file, "%s/%s", dir, name) < 0)
                        return -ENOMEM;
                /* sizes first: a truncated file fails without reading it */
                if (stat(file, &st) < 0 || (uint64_t)st.st_size != want_size) {
                        snprintf(reason, reason_size, "'%s' is missing or has the wrong size", name);
                        return -EBADMSG;
                }
                r = rootfs_sha256_file(file, have, &have_size);
                if (r < 0 || !streq(have, want) || have_size != want_size) {
                        snprintf(reason, reason_size, "'%s' does not match its digest", name);
                        return -EBADMSG;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(entry_files); i++)
                if (!seen[i]) {
                        snprintf(reason, reason_size, "'%s' is not in the completion marker", entry_files[i]);
                        return -EBADMSG;
                }
        return 0;
}

static const struct rootfs_source_ops *find_ops(enum rootfs_source source)
{
        for (size_t i = 0; i < ELEMENTSOF(sources); i++)
                if (sources[i]->source == source)
                        return sources[i];
        return NULL;
}

static int cache_key(const struct rootfs_source_ops *ops, const struct spec *s, char **ret_text,
                     char ret_hex[static 65])
{
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        uint8_t md[32];
        FILE *f = open_memstream(&text, &size);
        int r;

        if (!f)
                return log_oom_rootfs();
        fprintf(f, "format=%d\nsource=%s\narchitecture=%s\n", ROOTFS_CACHE_FORMAT, ops->name, strna(s->architecture));
        r = ops->cache_key(s, f);
        if (fclose(f) != 0 && r >= 0)
                r = log_oom_rootfs();
        if (r < 0)
                return r;
        sha256_buffer(text, size, md);
        hex_encode(md, sizeof(md), ret_hex);
        *ret_text = TAKE_PTR(text);
        return 0;
}

/* Makes sure entry holds a whole bootstrap. The caller holds the lock
 * exclusively. */
static int cache_fill(const struct rootfs_source_ops *ops, const struct spec *s, const char *cache_dir, const char *hex,
                      const char *key_text, const char *entry, bool *ret_hit)
{
        _cleanup_free_ char *tmp = NULL, *key_path = NULL;
        char reason[256] = "";
        int r;

        r = verify_entry(entry, reason, sizeof(reason));
        if (r == 0) {
                *ret_hit = true;
                return 0;
        }
        if (r == -EBADMSG) {
                log_warning("cache entry '%s' cannot be trusted (%s): removing it and bootstrapping again", entry,
                            reason);
                r = rm_rf(entry);
                if (r < 0)
                        return log_error_errno(r, "cannot remove the cache entry '%s': %m", entry);
        } else if (r != -ENOENT)
                return log_error_errno(r, "cannot check the cache entry '%s': %m", entry);

        if (asprintf(&tmp, "%s/.rootfs-%s.tmp", cache_dir, hex) < 0 || asprintf(&key_path, "%s/" ROOTFS_KEY, tmp) < 0)
                return log_oom_rootfs();
        /* A leftover of a killed build; we hold the lock, so nobody is
         * writing it. */
        r = rm_rf(tmp);
        if (r < 0)
                return log_error_errno(r, "cannot remove the stale '%s': %m", tmp);
        if (mkdir(tmp, 0755) < 0)
                return log_error_errno(-errno, "cannot create '%s': %m", tmp);

        r = ops->bootstrap(s, tmp);
        if (r >= 0) {
                r = write_file_atomic(key_path, key_text, strlen(key_text), 0644);
                if (r < 0)
                        log_error_errno(r, "cannot write '%s': %m", key_path);
        }
        if (r >= 0) {
                /* the data must be on disk before the marker that vouches for it */
                _cleanup_close_ int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd >= 0)
                        syncfs(fd);
                r = write_marker(tmp);
                if (r < 0)
                        log_error_errno(r, "cannot write the completion marker in '%s': %m", tmp);
        }
        if (r >= 0 && rename(tmp, entry) < 0)
                r = log_error_errno(-errno, "cannot rename '%s' to '%s': %m", tmp, entry);
        if (r < 0) {
                rm_rf(tmp);
                return r;
        }
        {
                _cleanup_close_ int fd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd >= 0)
                        fsync(fd);
        }
        *ret_hit = false;
        return 0;
}

struct rootfs *rootfs_free(struct rootfs *r)
{
        if (!r)
                return NULL;
        if (r->work_dir)
                rm_rf(r->work_dir);
        free(r->work_dir);
        free(r->tar);
        free(r->kernel);
        free(r->initrd);
        free(r->kernel_version);
        return x_free(r);
}

/* The SHA-256 of base.tar, computed once per cache entry and kept beside
 * it (written last, like the entry's marker). */
static int base_digest(const char *entry, const char *tar, char ret[65])
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        int r;

        if (asprintf(&path, "%s/base.tar.sha256", entry) < 0)
                return log_oom_rootfs();
        if (read_full_file(path, 128, &text, NULL) >= 0 && strlen(text) >= 64) {
                memcpy(ret, text, 64);
                ret[64] = '\0';
                return 0;
        }
        r = rootfs_sha256_file(tar, ret, NULL);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", tar);
        r = write_file_atomic(path, ret, 64, 0644);
        if (r < 0)
                log_debug("cannot write '%s': %s", path, strerror(-r));
        return 0;
}

int rootfs_build(const struct spec *s, const char *cache_dir, const char *work_parent, struct rootfs **ret)
{
        const struct rootfs_source_ops *ops = find_ops(s->template->source);
        _cleanup_(rootfs_freep) struct rootfs *root = NULL;
        _cleanup_free_ char *key_text = NULL, *entry = NULL, *lock = NULL, *cached_kernel = NULL, *cached_initrd = NULL,
                            *cached_tar = NULL, *version_path = NULL, *version = NULL;
        _cleanup_close_ int lock_fd = -1;
        struct customize_options co = { 0 };
        char hex[65];
        bool hit = false;
        int r;

        if (!ops)
                return log_error_errno(-EOPNOTSUPP, "rootfs source '%s' is not supported",
                                       rootfs_source_to_string(s->template->source));
        r = cache_key(ops, s, &key_text, hex);
        if (r < 0)
                return r;
        log_debug("rootfs cache key %s:\n%s", hex, key_text);

        r = mkdir_p(cache_dir, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot create the cache directory '%s': %m", cache_dir);
        if (asprintf(&entry, "%s/rootfs-%s", cache_dir, hex) < 0 || asprintf(&lock, "%s.lock", entry) < 0)
                return log_oom_rootfs();
        lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock_fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", lock);
        while (flock(lock_fd, LOCK_EX) < 0)
                if (errno != EINTR)
                        return log_error_errno(-errno, "cannot lock '%s': %m", lock);

        r = cache_fill(ops, s, cache_dir, hex, key_text, entry, &hit);
        if (r < 0)
                return r;
        /* in use: others may read it too, nobody may remove it */
        flock(lock_fd, LOCK_SH);

        root = calloc(1, sizeof(*root));
        if (!root)
                return log_oom_rootfs();
        root->cache_hit = hit;
        if (asprintf(&root->work_dir, "%s/rootfs-XXXXXX", work_parent) < 0) {
                root->work_dir = NULL;
                return log_oom_rootfs();
        }
        r = mkdir_p(work_parent, 0755);
        if (r < 0 || !mkdtemp(root->work_dir)) {
                r = r < 0 ? r : -errno;
                root->work_dir = x_free(root->work_dir);
                return log_error_errno(r, "cannot create a work directory in '%s': %m", work_parent);
        }
        if (asprintf(&root->tar, "%s/root.tar", root->work_dir) < 0 ||
            asprintf(&root->kernel, "%s/vmlinuz", root->work_dir) < 0 ||
            asprintf(&root->initrd, "%s/initrd.img", root->work_dir) < 0 ||
            asprintf(&cached_kernel, "%s/" ROOTFS_KERNEL, entry) < 0 ||
            asprintf(&cached_initrd, "%s/" ROOTFS_INITRD, entry) < 0 ||
            asprintf(&cached_tar, "%s/" ROOTFS_BASE_TAR, entry) < 0 ||
            asprintf(&version_path, "%s/" ROOTFS_KERNEL_VERSION, entry) < 0)
                return log_oom_rootfs();

        r = read_full_file(version_path, 4096, &version, NULL);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", version_path);
        version[strcspn(version, "\n")] = '\0';
        root->kernel_version = TAKE_PTR(version);

        r = link_or_copy(cached_kernel, root->kernel);
        if (r < 0)
                return log_error_errno(r, "cannot copy '%s' to '%s': %m", cached_kernel, root->kernel);
        if (ops->initrd)
                r = ops->initrd(s, cached_initrd, root->initrd);
        else {
                r = link_or_copy(cached_initrd, root->initrd);
                if (r < 0)
                        log_error_errno(r, "cannot copy '%s' to '%s': %m", cached_initrd, root->initrd);
        }
        if (r < 0)
                return r;

        r = base_digest(entry, cached_tar, root->base_digest);
        if (r < 0)
                return r;

        co.base_tar = cached_tar;
        co.rootfs_digest = root->base_digest;
        co.out_initrd = s->verity ? root->initrd : NULL;
        co.out_tar = root->tar;
        co.scratch_dir = root->work_dir;
        co.scrub_host_files = ops->scrub_host_files;
        r = customize_run(s, &co);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(root);
        return 0;
}
