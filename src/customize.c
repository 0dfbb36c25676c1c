/* Owns kickstart application inside the tree: the user namespace runner,
 * users and groups, ssh keys, hostname, time zone, locale, keyboard,
 * services (systemd wants-links as `systemctl --root` writes them, or
 * /etc/rcS.d links for the busybox init), the ready hook, template
 * overlays and %post. Every path in the tree is opened with
 * RESOLVE_IN_ROOT, so a symlink in the tree cannot send a write outside it. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "customize.h"
#include "rootfs-internal.h"
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/run.h"
#include "shared/strv.h"
#include "sysprep-rules.h"

#include "src/data-files.h" /* generated from data/ */

#define POST_TAIL_LINES 20

/* ---- the namespace ---- */

static int read_subid(const char *file, const char *user, uid_t id, unsigned long *ret_start, unsigned long *ret_count)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_strv_free_ char **lines = NULL;
        char idbuf[32];
        int r;

        r = read_full_file(file, 1 << 20, &text, NULL);
        if (r < 0)
                return r;
        if (strv_split_extend(&lines, text, "\n") < 0)
                return -ENOMEM;
        snprintf(idbuf, sizeof(idbuf), "%u", (unsigned)id);
        STRV_FOREACH (l, lines) {
                char name[256];
                unsigned long start, count;
                if (sscanf(*l, "%255[^:]:%lu:%lu", name, &start, &count) != 3)
                        continue;
                if ((user && streq(name, user)) || streq(name, idbuf)) {
                        *ret_start = start;
                        *ret_count = count;
                        return 0;
                }
        }
        return -ENOENT;
}

static int write_map(const char *prog, pid_t pid, unsigned id, unsigned long start, unsigned long count)
{
        char spid[32], sid[32], sstart[32], scount[32];
        const char *argv[] = { prog, spid, "0", sid, "1", "1", sstart, scount, NULL };

        snprintf(spid, sizeof(spid), "%d", (int)pid);
        snprintf(sid, sizeof(sid), "%u", id);
        snprintf(sstart, sizeof(sstart), "%lu", start);
        snprintf(scount, sizeof(scount), "%lu", count);
        return rootfs_run("cannot set up the user namespace", argv, NULL, NULL);
}

static int exit_code_of(int status)
{
        if (WIFEXITED(status))
                return WEXITSTATUS(status) == 0 ? 0 : -WEXITSTATUS(status);
        return -EINTR;
}

_noreturn_ static void namespace_child(int (*fn)(void *), void *userdata, bool root, int ready_w, int go_r)
{
        pid_t pid;
        int status, r;
        char c = 0;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* whatever ingot's handlers do, an interrupt ends the namespace */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        if (!root) {
                if (unshare(CLONE_NEWUSER) < 0) {
                        log_error_errno(-errno, "cannot create a user namespace: %m");
                        _exit(EPERM);
                }
                if (write(ready_w, &c, 1) != 1 || read(go_r, &c, 1) != 1)
                        _exit(EPIPE);
                if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
                        log_error_errno(-errno, "cannot become root in the user namespace: %m");
                        _exit(EPERM);
                }
                setgroups(0, NULL);
        }
        close(ready_w);
        close(go_r);
        if (unshare(CLONE_NEWNS | CLONE_NEWPID) < 0) {
                log_error_errno(-errno, "cannot create mount and pid namespaces: %m");
                _exit(EPERM);
        }
        if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0) {
                log_error_errno(-errno, "cannot make the mounts private: %m");
                _exit(EPERM);
        }
        pid = fork();
        if (pid < 0)
                _exit(ENOMEM);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                r = fn(userdata);
                fflush(NULL); /* _exit() does not, and the log may be buffered */
                _exit(r < 0 ? (-r & 0xff ? -r & 0xff : EIO) : 0);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        _exit(ECHILD);
        if (WIFSIGNALED(status)) {
                log_error("customizing the tree: killed by signal %d", WTERMSIG(status));
                _exit(EINTR);
        }
        _exit(WEXITSTATUS(status));
}

int customize_in_namespace(int (*fn)(void *userdata), void *userdata)
{
        bool root = geteuid() == 0;
        int ready[2] = { -1, -1 }, go[2] = { -1, -1 };
        unsigned long ustart = 0, ucount = 0, gstart = 0, gcount = 0;
        int status, r = 0;
        pid_t pid;
        char c = 0;

        if (!root) {
                struct passwd *pw = getpwuid(getuid());
                struct group *gr = getgrgid(getgid());

                if (read_subid("/etc/subuid", pw ? pw->pw_name : NULL, getuid(), &ustart, &ucount) < 0)
                        return log_error_errno(-ENOENT,
                                               "no subordinate uid range for user '%s' in '/etc/subuid': the tree "
                                               "needs them to hold other owners than root (add one with usermod "
                                               "--add-subuids)",
                                               pw ? pw->pw_name : "?");
                if (read_subid("/etc/subgid", pw ? pw->pw_name : (gr ? gr->gr_name : NULL), getuid(), &gstart,
                               &gcount) < 0)
                        return log_error_errno(-ENOENT,
                                               "no subordinate gid range for user '%s' in '/etc/subgid' (add one "
                                               "with usermod --add-subgids)",
                                               pw ? pw->pw_name : "?");
        }
        if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) {
                r = log_error_errno(-errno, "cannot create a pipe: %m");
                goto finish;
        }
        fflush(NULL);
        pid = fork();
        if (pid < 0) {
                r = log_error_errno(-errno, "cannot fork: %m");
                goto finish;
        }
        if (pid == 0)
                namespace_child(fn, userdata, root, ready[1], go[0]);
        close(ready[1]);
        ready[1] = -1;
        close(go[0]);
        go[0] = -1;
        if (!root) {
                if (read(ready[0], &c, 1) != 1)
                        r = -EPERM; /* the child said why */
                if (r >= 0)
                        r = write_map("newuidmap", pid, (unsigned)getuid(), ustart, ucount);
                if (r >= 0)
                        r = write_map("newgidmap", pid, (unsigned)getgid(), gstart, gcount);
                if (r < 0 && r != -EPERM)
                        kill(pid, SIGKILL);
                else if (r >= 0 && write(go[1], &c, 1) != 1)
                        r = log_error_errno(-EPIPE, "cannot start the namespace");
        }
        close(go[1]);
        go[1] = -1;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        r = r < 0 ? r : -errno;
                        goto finish;
                }
        if (r >= 0)
                r = exit_code_of(status);
finish:
        for (int i = 0; i < 2; i++) {
                if (ready[i] >= 0)
                        close(ready[i]);
                if (go[i] >= 0)
                        close(go[i]);
        }
        return r;
}

/* ---- files in the tree ---- */

struct tree {
        const char *path; /* as on the host */
        int fd;
};

/* Splits "a/b/c" into the opened parent "a/b" (created when mkdirs) and
 * "c". */
static int tree_open_parent(const struct tree *t, const char *path, bool mkdirs, const char **ret_base)
{
        _cleanup_free_ char *dir = NULL;
        const char *slash;
        int fd;

        while (*path == '/')
                path++;
        slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
        if (!dir)
                return -ENOMEM;
        *ret_base = slash ? slash + 1 : path;
        if (!**ret_base || streq(*ret_base, ".") || streq(*ret_base, ".."))
                return -EINVAL;
        fd = rootfs_open_in_root(t->fd, dir, O_RDONLY | O_DIRECTORY, 0);
        if (fd == -ENOENT && mkdirs) {
                const char *base;
                _cleanup_close_ int pfd = tree_open_parent(t, dir, true, &base);
                if (pfd < 0)
                        return pfd;
                if (mkdirat(pfd, base, 0755) < 0 && errno != EEXIST)
                        return -errno;
                fd = rootfs_open_in_root(t->fd, dir, O_RDONLY | O_DIRECTORY, 0);
        }
        return fd;
}

static int tree_mkdir(const struct tree *t, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
        const char *base;
        _cleanup_close_ int dfd = tree_open_parent(t, path, true, &base);
        _cleanup_close_ int fd = -1;

        if (dfd < 0)
                return dfd;
        if (mkdirat(dfd, base, mode) < 0) {
                if (errno != EEXIST)
                        return -errno;
                return 0; /* exists: leave its owner and mode alone */
        }
        fd = openat(dfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0)
                return -errno;
        return 0;
}

static bool tree_exists(const struct tree *t, const char *path)
{
        _cleanup_close_ int fd = rootfs_open_in_root(t->fd, path, O_PATH, 0);
        return fd >= 0;
}

static int tree_read(const struct tree *t, const char *path, char **ret)
{
        _cleanup_close_ int fd = rootfs_open_in_root(t->fd, path, O_RDONLY, 0);
        _cleanup_free_ char *proc = NULL;

        if (fd < 0)
                return fd;
        if (asprintf(&proc, "/proc/self/fd/%d", fd) < 0)
                return -ENOMEM;
        return read_full_file(proc, 16 << 20, ret, NULL);
}

/* Writes path whole (temporary name, rename). An existing file keeps its
 * owner and mode; a new one gets mode, uid, gid. */
static int tree_write_full(const struct tree *t, const char *path, const char *data, size_t size, mode_t mode,
                           uid_t uid, gid_t gid, bool append)
{
        const char *base;
        _cleanup_close_ int dfd = tree_open_parent(t, path, true, &base);
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *tmp = NULL, *old = NULL;
        size_t old_size = 0;
        struct stat st;

        if (dfd < 0)
                return dfd;
        if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (S_ISDIR(st.st_mode))
                        return -EISDIR;
                if (S_ISREG(st.st_mode)) {
                        mode = st.st_mode & 07777;
                        uid = st.st_uid;
                        gid = st.st_gid;
                }
                if (append && S_ISREG(st.st_mode)) {
                        _cleanup_close_ int ofd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                        _cleanup_free_ char *proc = NULL;
                        int r;
                        if (ofd < 0)
                                return -errno;
                        if (asprintf(&proc, "/proc/self/fd/%d", ofd) < 0)
                                return -ENOMEM;
                        r = read_full_file(proc, 16 << 20, &old, &old_size);
                        if (r < 0)
                                return r;
                }
        }
        if (asprintf(&tmp, ".#ingot.%s", base) < 0)
                return -ENOMEM;
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        if ((old_size && write(fd, old, old_size) != (ssize_t)old_size) ||
            (old_size && old[old_size - 1] != '\n' && write(fd, "\n", 1) != 1) ||
            (size && write(fd, data, size) != (ssize_t)size) || fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0 ||
            renameat(dfd, tmp, dfd, base) < 0) {
                int e = errno ? errno : EIO;
                unlinkat(dfd, tmp, 0);
                return -e;
        }
        return 0;
}

static int tree_write(const struct tree *t, const char *path, const char *data, mode_t mode)
{
        return tree_write_full(t, path, data, strlen(data), mode, 0, 0, false);
}

static int tree_unlink(const struct tree *t, const char *path)
{
        const char *base;
        _cleanup_close_ int dfd = tree_open_parent(t, path, false, &base);

        if (dfd == -ENOENT)
                return 0;
        if (dfd < 0)
                return dfd;
        if (unlinkat(dfd, base, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

static int tree_symlink(const struct tree *t, const char *path, const char *target)
{
        const char *base;
        _cleanup_close_ int dfd = tree_open_parent(t, path, true, &base);
        char buf[4096];
        ssize_t n;

        if (dfd < 0)
                return dfd;
        n = readlinkat(dfd, base, buf, sizeof(buf) - 1);
        if (n >= 0) {
                buf[n] = '\0';
                if (streq(buf, target))
                        return 0;
        }
        if (unlinkat(dfd, base, 0) < 0 && errno != ENOENT)
                return -errno;
        if (symlinkat(target, dfd, base) < 0)
                return -errno;
        return 0;
}

static bool tree_is_busybox(const struct tree *t);

/* ---- identity, hostname, locale ---- */

static int set_os_release(const struct tree *t, const struct spec *s)
{
        _cleanup_free_ char *text = NULL, *out = NULL;
        _cleanup_strv_free_ char **lines = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        /* follows the /etc/os-release → ../usr/lib/os-release link inside the tree */
        r = tree_read(t, "etc/os-release", &text);
        if (r < 0)
                r = tree_read(t, "usr/lib/os-release", &text);
        if (r < 0 && r != -ENOENT)
                return r;
        if (text && strv_split_extend(&lines, text, "\n") < 0)
                return -ENOMEM;
        f = open_memstream(&out, &size);
        if (!f)
                return -ENOMEM;
        STRV_FOREACH (l, lines)
                if (strncmp(*l, "IMAGE_ID=", 9) != 0 && strncmp(*l, "IMAGE_VERSION=", 14) != 0)
                        fprintf(f, "%s\n", *l);
        fprintf(f, "IMAGE_ID=%s\nIMAGE_VERSION=%s\n", s->name, s->version);
        if (fclose(f) != 0)
                return -ENOMEM;
        /* a file of its own, not through the link into /usr */
        r = tree_unlink(t, "etc/os-release");
        if (r < 0)
                return r;
        return tree_write(t, "etc/os-release", out, 0644);
}

static int apply_system(const struct tree *t, const struct spec *s, bool scrub)
{
        const struct kickstart *ks = s->kickstart;
        _cleanup_free_ char *buf = NULL;
        int r;

        r = set_os_release(t, s);
        if (r < 0)
                return log_error_errno(r, "cannot write '/etc/os-release' in the tree: %m");
        if (scrub) {
                r = tree_unlink(t, "etc/resolv.conf");
                if (r < 0)
                        return log_error_errno(r, "cannot remove '/etc/resolv.conf' from the tree: %m");
        }
        /* the host's name must not leak into the image: the kickstart's, else the image's */
        if (asprintf(&buf, "%s\n", ks && ks->hostname ? ks->hostname : s->name) < 0)
                return log_oom_rootfs();
        r = tree_write(t, "etc/hostname", buf, 0644);
        if (r < 0)
                return log_error_errno(r, "cannot write '/etc/hostname' in the tree: %m");
        /* as the Debian installer does, so sudo and friends resolve the
         * name without DNS */
        {
                _cleanup_free_ char *hosts = NULL, *line = NULL;
                const char *name = ks && ks->hostname ? ks->hostname : s->name;
                if (tree_read(t, "etc/hosts", &hosts) >= 0 && !strstr(hosts, "127.0.1.1")) {
                        if (asprintf(&line, "127.0.1.1\t%s\n", name) < 0)
                                return log_oom_rootfs();
                        r = tree_write_full(t, "etc/hosts", line, strlen(line), 0644, 0, 0, true);
                        if (r < 0)
                                return log_error_errno(r, "cannot write '/etc/hosts' in the tree: %m");
                }
        }
        if (!ks)
                return 0;

        if (ks->timezone) {
                _cleanup_free_ char *target = NULL, *zone = NULL;

                if (asprintf(&target, "/usr/share/zoneinfo/%s", ks->timezone) < 0 ||
                    asprintf(&zone, "%s\n", ks->timezone) < 0)
                        return log_oom_rootfs();
                /* busybox has no zoneinfo and needs none for UTC */
                if (!tree_exists(t, target) && !tree_is_busybox(t))
                        log_warning("time zone '%s' has no '%s' in the tree (is tzdata installed?); linking it "
                                    "anyway",
                                    ks->timezone, target);
                r = tree_symlink(t, "etc/localtime", target);
                if (r >= 0)
                        r = tree_write(t, "etc/timezone", zone, 0644);
                if (r >= 0 && ks->timezone_utc)
                        r = tree_write(t, "etc/adjtime", "0.0 0 0.0\n0\nUTC\n", 0644);
                if (r < 0)
                        return log_error_errno(r, "cannot set the time zone in the tree: %m");
        }
        if (ks->lang) {
                buf = x_free(buf);
                if (asprintf(&buf, "LANG=%s\n", ks->lang) < 0)
                        return log_oom_rootfs();
                r = tree_write(t, "etc/default/locale", buf, 0644);
                if (r < 0)
                        return log_error_errno(r, "cannot write '/etc/default/locale' in the tree: %m");
        }
        if (ks->keyboard) {
                buf = x_free(buf);
                if (asprintf(&buf,
                             "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"%s\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n"
                             "BACKSPACE=\"guess\"\n",
                             ks->keyboard) < 0)
                        return log_oom_rootfs();
                r = tree_write(t, "etc/default/keyboard", buf, 0644);
                if (r < 0)
                        return log_error_errno(r, "cannot write '/etc/default/keyboard' in the tree: %m");
        }
        return 0;
}

/* ---- users and groups ---- */

struct db {
        const char *path;
        char **lines;
        bool present;
        bool changed;
};

static int db_load(const struct tree *t, struct db *d, const char *path)
{
        _cleanup_free_ char *text = NULL;
        int r;

        d->path = path;
        r = tree_read(t, path, &text);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        d->present = true;
        return strv_split_extend(&d->lines, text, "\n");
}

static int db_save(const struct tree *t, struct db *d, mode_t mode, gid_t gid)
{
        _cleanup_free_ char *out = NULL;
        size_t size = 0;
        FILE *f;

        if (!d->changed)
                return 0;
        f = open_memstream(&out, &size);
        if (!f)
                return -ENOMEM;
        STRV_FOREACH (l, d->lines)
                fprintf(f, "%s\n", *l);
        if (fclose(f) != 0)
                return -ENOMEM;
        return tree_write_full(t, d->path, out, size, mode, 0, gid, false);
}

/* The line for name, or NULL. */
static char **db_find(struct db *d, const char *name)
{
        size_t n = strlen(name);

        for (char **l = d->lines; l && *l; l++)
                if (strncmp(*l, name, n) == 0 && (*l)[n] == ':')
                        return l;
        return NULL;
}

/* Field i (0-based) of a colon-separated line into buf. */
static const char *field(const char *line, unsigned i, char *buf, size_t size)
{
        const char *p = line;

        for (; i > 0 && p; i--) {
                p = strchr(p, ':');
                if (p)
                        p++;
        }
        if (!p)
                return "";
        snprintf(buf, size, "%.*s", (int)strcspn(p, ":"), p);
        return buf;
}

static int db_add(struct db *d, char *line)
{
        d->changed = true;
        return strv_consume(&d->lines, line);
}

static bool id_used(struct db *d, unsigned field_index, unsigned long id)
{
        char buf[32];

        STRV_FOREACH (l, d->lines)
                if (strtoul(field(*l, field_index, buf, sizeof(buf)), NULL, 10) == id && *buf)
                        return true;
        return false;
}

/* The first id ≥ 1000 above every id already in that range, as adduser
 * picks them: the same tree gives the same ids. */
static unsigned long next_id(struct db *d, unsigned field_index)
{
        unsigned long next = 1000;
        char buf[32];

        STRV_FOREACH (l, d->lines) {
                unsigned long id = strtoul(field(*l, field_index, buf, sizeof(buf)), NULL, 10);
                if (*buf && id >= 1000 && id < 60000 && id + 1 > next)
                        next = id + 1;
        }
        return next;
}

/* Replaces the 2nd field (the password) of name's shadow line. */
static int shadow_set(struct db *shadow, const char *name, const char *pw, unsigned long lastchg)
{
        char **l = db_find(shadow, name);
        char *line;

        if (!l) {
                if (asprintf(&line, "%s:%s:%lu:0:99999:7:::", name, pw, lastchg) < 0)
                        return -ENOMEM;
                return db_add(shadow, line);
        }
        {
                const char *rest = strchr(*l + strlen(name) + 1, ':');
                if (asprintf(&line, "%s:%s%s", name, pw, rest ? rest : ":::::::") < 0)
                        return -ENOMEM;
        }
        free(*l);
        *l = line;
        shadow->changed = true;
        return 0;
}

/* Adds user to the member list (4th field) of group. */
static int group_add_member(struct db *group, const char *gname, const char *user, unsigned member_field)
{
        char **l = db_find(group, gname);
        char members[4096];
        const char *cur;
        _cleanup_strv_free_ char **list = NULL;
        char *line, *prefix_end;
        size_t prefix;

        if (!l)
                return -ENOENT;
        cur = field(*l, member_field, members, sizeof(members));
        if (strv_split_extend(&list, cur, ",") < 0)
                return -ENOMEM;
        if (strv_contains(list, user))
                return 0;
        /* everything up to the member field stays */
        prefix_end = *l;
        for (unsigned i = 0; i < member_field; i++) {
                prefix_end = strchr(prefix_end, ':');
                if (!prefix_end)
                        return -EBADMSG;
                prefix_end++;
        }
        prefix = (size_t)(prefix_end - *l);
        if (asprintf(&line, "%.*s%s%s%s", (int)prefix, *l, cur, *cur ? "," : "", user) < 0)
                return -ENOMEM;
        free(*l);
        *l = line;
        group->changed = true;
        return 0;
}

static int ensure_group(struct db *group, struct db *gshadow, const char *name, bool has_gid, unsigned long gid,
                        unsigned long *ret_gid)
{
        char **l = db_find(group, name);
        char buf[32], *line;
        int r;

        if (l) {
                *ret_gid = strtoul(field(*l, 2, buf, sizeof(buf)), NULL, 10);
                return 0;
        }
        if (!has_gid)
                gid = next_id(group, 2);
        if (asprintf(&line, "%s:x:%lu:", name, gid) < 0)
                return -ENOMEM;
        r = db_add(group, line);
        if (r >= 0 && gshadow->present) {
                if (asprintf(&line, "%s:!::", name) < 0)
                        return -ENOMEM;
                r = db_add(gshadow, line);
        }
        *ret_gid = gid;
        return r;
}

static int copy_skel(const struct tree *t, const char *home, uid_t uid, gid_t gid)
{
        _cleanup_close_ int fd = rootfs_open_in_root(t->fd, "etc/skel", O_RDONLY | O_DIRECTORY, 0);
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (fd < 0)
                return 0;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        fd = -1;
        while ((de = readdir(d)) && r >= 0) {
                _cleanup_free_ char *src = NULL, *dst = NULL, *data = NULL;
                if (de->d_type != DT_REG)
                        continue;
                if (asprintf(&src, "etc/skel/%s", de->d_name) < 0 || asprintf(&dst, "%s/%s", home, de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                r = tree_read(t, src, &data);
                if (r >= 0 && !tree_exists(t, dst))
                        r = tree_write_full(t, dst, data, strlen(data), 0644, uid, gid, false);
        }
        closedir(d);
        return r;
}

static int apply_users(const struct tree *t, const struct spec *s)
{
        const struct kickstart *ks = s->kickstart;
        struct db passwd = { 0 }, shadow = { 0 }, group = { 0 }, gshadow = { 0 };
        unsigned long lastchg = (unsigned long)(s->source_date_epoch / 86400);
        struct stat st;
        gid_t shadow_gid = 0;
        mode_t shadow_mode = 0640;
        int r;

        if (!ks || (!ks->rootpw_set && ks->n_users == 0 && ks->n_sshkeys == 0))
                return 0;
        if ((r = db_load(t, &passwd, "etc/passwd")) < 0 || (r = db_load(t, &shadow, "etc/shadow")) < 0 ||
            (r = db_load(t, &group, "etc/group")) < 0 || (r = db_load(t, &gshadow, "etc/gshadow")) < 0) {
                log_error_errno(r, "cannot read the user database in the tree: %m");
                goto finish;
        }
        {
                _cleanup_close_ int fd = rootfs_open_in_root(t->fd, "etc/shadow", O_RDONLY, 0);
                if (fd >= 0 && fstat(fd, &st) == 0) {
                        shadow_gid = st.st_gid;
                        shadow_mode = st.st_mode & 07777;
                }
        }

        if (ks->rootpw_set) {
                _cleanup_free_ char *pw = NULL;
                if (asprintf(&pw, "%s%s", ks->rootpw_lock ? "!" : "", ks->rootpw_hash ? ks->rootpw_hash : "") < 0) {
                        r = log_oom_rootfs();
                        goto finish;
                }
                r = shadow_set(&shadow, "root", pw, lastchg);
                if (r < 0) {
                        log_oom_rootfs();
                        goto finish;
                }
        }

        for (size_t i = 0; i < ks->n_users; i++) {
                const struct ks_user *u = &ks->users[i];
                _cleanup_free_ char *home = NULL, *line = NULL, *pw = NULL;
                const char *shell = u->shell;
                unsigned long uid, gid;

                if (db_find(&passwd, u->name)) {
                        r = log_syntax(u->loc.file, u->loc.line, "user '%s' already exists in the image", u->name);
                        goto finish;
                }
                if (u->has_uid && id_used(&passwd, 2, u->uid)) {
                        r = log_syntax(u->loc.file, u->loc.line, "uid %u of user '%s' is taken in the image",
                                       (unsigned)u->uid, u->name);
                        goto finish;
                }
                uid = u->has_uid ? u->uid : next_id(&passwd, 2);
                if (u->has_gid) {
                        char buf[256];
                        bool found = false;
                        STRV_FOREACH (l, group.lines)
                                if (strtoul(field(*l, 2, buf, sizeof(buf)), NULL, 10) == u->gid && *buf)
                                        found = true;
                        gid = u->gid;
                        if (!found)
                                r = ensure_group(&group, &gshadow, u->name, true, u->gid, &gid);
                } else
                        r = ensure_group(&group, &gshadow, u->name, !id_used(&group, 2, uid), uid, &gid);
                if (r < 0)
                        goto oom;
                STRV_FOREACH (g, u->groups) {
                        unsigned long ignored;
                        r = ensure_group(&group, &gshadow, *g, false, 0, &ignored);
                        if (r >= 0)
                                r = group_add_member(&group, *g, u->name, 3);
                        if (r >= 0 && gshadow.present && db_find(&gshadow, *g))
                                r = group_add_member(&gshadow, *g, u->name, 3);
                        if (r < 0)
                                goto oom;
                }
                if (!shell)
                        shell = tree_exists(t, "bin/bash") ? "/bin/bash" : "/bin/sh";
                if (u->homedir)
                        home = strdup(u->homedir);
                else if (asprintf(&home, "/home/%s", u->name) < 0)
                        home = NULL;
                if (!home || asprintf(&line, "%s:x:%lu:%lu:%s:%s:%s", u->name, uid, gid, u->gecos ? u->gecos : "", home,
                                      shell) < 0)
                        goto oom;
                r = db_add(&passwd, TAKE_PTR(line));
                if (r < 0)
                        goto oom;
                /* a hash, "!hash"/"!" when locked, "*" for no password at all */
                if (asprintf(&pw, "%s%s", u->lock ? "!" : "",
                             u->password_hash ? u->password_hash : (u->lock ? "" : "*")) < 0)
                        goto oom;
                r = shadow_set(&shadow, u->name, pw, lastchg);
                if (r < 0)
                        goto oom;
                r = tree_mkdir(t, "home", 0755, 0, 0);
                if (r >= 0)
                        r = tree_mkdir(t, home, 0700, (uid_t)uid, (gid_t)gid);
                if (r >= 0)
                        r = copy_skel(t, home, (uid_t)uid, (gid_t)gid);
                if (r < 0) {
                        log_error_errno(r, "cannot create the home directory '%s' of user '%s': %m", home, u->name);
                        goto finish;
                }
        }

        for (size_t i = 0; i < ks->n_sshkeys; i++) {
                const struct ks_sshkey *k = &ks->sshkeys[i];
                char **l = db_find(&passwd, k->username);
                char home[4096], buf[32], *dir = NULL, *file = NULL, *key = NULL;
                uid_t uid;
                gid_t gid;

                if (!l) {
                        r = log_syntax(k->loc.file, k->loc.line, "sshkey for unknown user '%s'", k->username);
                        goto finish;
                }
                uid = (uid_t)strtoul(field(*l, 2, buf, sizeof(buf)), NULL, 10);
                gid = (gid_t)strtoul(field(*l, 3, buf, sizeof(buf)), NULL, 10);
                field(*l, 5, home, sizeof(home));
                if (asprintf(&dir, "%s/.ssh", home) < 0 || asprintf(&file, "%s/authorized_keys", dir) < 0 ||
                    asprintf(&key, "%s\n", k->key) < 0) {
                        free(dir);
                        free(file);
                        goto oom;
                }
                r = tree_mkdir(t, home, 0700, uid, gid);
                if (r >= 0)
                        r = tree_mkdir(t, dir, 0700, uid, gid);
                if (r >= 0)
                        r = tree_write_full(t, file, key, strlen(key), 0600, uid, gid, true);
                if (r < 0)
                        log_error_errno(r, "cannot write '%s' in the tree: %m", file);
                free(dir);
                free(file);
                free(key);
                if (r < 0)
                        goto finish;
        }

        if ((r = db_save(t, &passwd, 0644, 0)) < 0 || (r = db_save(t, &group, 0644, 0)) < 0 ||
            (r = db_save(t, &shadow, shadow_mode, shadow_gid)) < 0 || (r = db_save(t, &gshadow, 0640, shadow_gid)) < 0)
                log_error_errno(r, "cannot write the user database in the tree: %m");
        goto finish;
oom:
        r = log_oom_rootfs();
finish:
        strv_free(passwd.lines);
        strv_free(shadow.lines);
        strv_free(group.lines);
        strv_free(gshadow.lines);
        return r;
}

/* ---- services ---- */

static const char *const unit_dirs[] = { "usr/lib/systemd/system", "lib/systemd/system", "etc/systemd/system" };

static bool tree_is_systemd(const struct tree *t)
{
        return tree_exists(t, "usr/lib/systemd/system") || tree_exists(t, "lib/systemd/system");
}

static bool tree_is_busybox(const struct tree *t)
{
        return tree_exists(t, "etc/init.d/rcS") && tree_exists(t, "bin/busybox");
}

/* The unit's file as a path in the image ("/lib/systemd/system/x.service")
 * and its text; an instance falls back to its template. */
static int find_unit(const struct tree *t, const char *unit, char **ret_path, char **ret_text)
{
        _cleanup_free_ char *template_name = NULL;
        const char *at = strchr(unit, '@'), *dot = strrchr(unit, '.');

        if (at && dot && at + 1 < dot && asprintf(&template_name, "%.*s%s", (int)(at + 1 - unit), unit, dot) < 0)
                return -ENOMEM;
        for (int pass = 0; pass < 2; pass++) {
                const char *name = pass == 0 ? unit : template_name;
                if (!name)
                        break;
                for (size_t i = 0; i < ELEMENTSOF(unit_dirs); i++) {
                        _cleanup_free_ char *path = NULL;
                        if (asprintf(&path, "/%s/%s", unit_dirs[i], name) < 0)
                                return -ENOMEM;
                        if (tree_read(t, path, ret_text) >= 0) {
                                *ret_path = TAKE_PTR(path);
                                return 0;
                        }
                }
        }
        return -ENOENT;
}

/* Values of key= in the [Install] section, space-separated, appended. */
static int install_values(const char *text, const char *key, char ***ret)
{
        _cleanup_strv_free_ char **lines = NULL;
        bool in_install = false;
        size_t n = strlen(key);

        if (strv_split_extend(&lines, text, "\n") < 0)
                return -ENOMEM;
        STRV_FOREACH (l, lines) {
                const char *p = *l + strspn(*l, " \t");
                if (*p == '[') {
                        in_install = strncmp(p, "[Install]", 9) == 0;
                        continue;
                }
                if (in_install && strncmp(p, key, n) == 0 && p[n] == '=' &&
                    strv_split_extend(ret, p + n + 1, " \t") < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int unit_name(const char *service, char **ret)
{
        if (strchr(service, '.'))
                *ret = strdup(service);
        else if (asprintf(ret, "%s.service", service) < 0)
                *ret = NULL;
        return *ret ? 0 : -ENOMEM;
}

static const char *ks_file(const struct spec *s)
{
        return s->kickstart && s->kickstart->files ? s->kickstart->files[0] : s->template_path;
}

static int enable_unit(const struct tree *t, const struct spec *s, const char *service, unsigned depth)
{
        _cleanup_free_ char *unit = NULL, *path = NULL, *text = NULL;
        _cleanup_strv_free_ char **wanted = NULL, **required = NULL, **alias = NULL, **also = NULL;
        int r;

        if (unit_name(service, &unit) < 0)
                return log_oom_rootfs();
        r = find_unit(t, unit, &path, &text);
        if (r == -ENOENT)
                return log_syntax(ks_file(s), 0,
                                  "services --enabled: unit '%s' is not installed in the image (add its package to "
                                  "%%packages)",
                                  unit);
        if (r < 0)
                return log_error_errno(r, "cannot read unit '%s' in the tree: %m", unit);
        if (install_values(text, "WantedBy", &wanted) < 0 || install_values(text, "RequiredBy", &required) < 0 ||
            install_values(text, "Alias", &alias) < 0 || install_values(text, "Also", &also) < 0)
                return log_oom_rootfs();
        if (!wanted && !required && !alias && !also) {
                log_warning("unit '%s' has no [Install] section: nothing to enable", unit);
                return 0;
        }
        for (int kind = 0; kind < 2; kind++)
                STRV_FOREACH (target, kind == 0 ? wanted : required) {
                        _cleanup_free_ char *link = NULL;
                        if (asprintf(&link, "etc/systemd/system/%s.%s/%s", *target, kind == 0 ? "wants" : "requires",
                                     unit) < 0)
                                return log_oom_rootfs();
                        r = tree_symlink(t, link, path);
                        if (r < 0)
                                return log_error_errno(r, "cannot enable '%s': cannot link '/%s': %m", unit, link);
                }
        STRV_FOREACH (a, alias) {
                _cleanup_free_ char *link = NULL;
                if (asprintf(&link, "etc/systemd/system/%s", *a) < 0)
                        return log_oom_rootfs();
                r = tree_symlink(t, link, path);
                if (r < 0)
                        return log_error_errno(r, "cannot enable '%s': cannot link '/%s': %m", unit, link);
        }
        if (depth < 4)
                STRV_FOREACH (a, also) {
                        r = enable_unit(t, s, *a, depth + 1);
                        if (r < 0)
                                return r;
                }
        log_debug("enabled unit '%s'", unit);
        return 0;
}

static int disable_unit(const struct tree *t, const char *service)
{
        _cleanup_free_ char *unit = NULL, *path = NULL, *text = NULL;
        _cleanup_strv_free_ char **alias = NULL;
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int r;

        if (unit_name(service, &unit) < 0)
                return log_oom_rootfs();
        if (find_unit(t, unit, &path, &text) < 0)
                log_warning("services --disabled: unit '%s' is not installed in the image", unit);
        else if (install_values(text, "Alias", &alias) < 0)
                return log_oom_rootfs();
        STRV_FOREACH (a, alias) {
                _cleanup_free_ char *link = NULL;
                if (asprintf(&link, "etc/systemd/system/%s", *a) < 0)
                        return log_oom_rootfs();
                tree_unlink(t, link);
        }
        fd = rootfs_open_in_root(t->fd, "etc/systemd/system", O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return 0;
        d = fdopendir(fd);
        if (!d)
                return log_error_errno(-errno, "cannot read '/etc/systemd/system' in the tree: %m");
        fd = -1;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                _cleanup_free_ char *link = NULL;
                if (!((n > 6 && streq(de->d_name + n - 6, ".wants")) ||
                      (n > 9 && streq(de->d_name + n - 9, ".requires"))))
                        continue;
                if (asprintf(&link, "etc/systemd/system/%s/%s", de->d_name, unit) < 0) {
                        closedir(d);
                        return log_oom_rootfs();
                }
                r = tree_unlink(t, link);
                if (r < 0) {
                        closedir(d);
                        return log_error_errno(r, "cannot disable '%s': cannot remove '/%s': %m", unit, link);
                }
        }
        closedir(d);
        return 0;
}

/* The busybox init runs /etc/rcS.d/S* in order, like sysvinit's rcS.d. */
static int busybox_service(const struct tree *t, const struct spec *s, const char *service, bool enable)
{
        _cleanup_free_ char *script = NULL, *link = NULL, *target = NULL;
        int r;

        if (asprintf(&script, "etc/init.d/%s", service) < 0 || asprintf(&link, "etc/rcS.d/S50%s", service) < 0 ||
            asprintf(&target, "../init.d/%s", service) < 0)
                return log_oom_rootfs();
        if (!enable) {
                r = tree_unlink(t, link);
                return r < 0 ? log_error_errno(r, "cannot remove '/%s' in the tree: %m", link) : 0;
        }
        if (!tree_exists(t, script))
                return log_syntax(ks_file(s), 0,
                                  "services --enabled: service '%s' does not exist in the busybox image (no "
                                  "/etc/init.d/%s)",
                                  service, service);
        r = tree_symlink(t, link, target);
        return r < 0 ? log_error_errno(r, "cannot link '/%s' in the tree: %m", link) : 0;
}

static int apply_services(const struct tree *t, const struct spec *s)
{
        const struct kickstart *ks = s->kickstart;
        bool systemd = tree_is_systemd(t), busybox = !systemd && tree_is_busybox(t);
        int r;

        if (!ks || (!ks->services_enabled && !ks->services_disabled))
                return 0;
        if (!systemd && !busybox)
                return log_error_errno(-EOPNOTSUPP,
                                       "services: the tree has neither systemd nor the busybox init, so services "
                                       "cannot be enabled");
        STRV_FOREACH (sv, ks->services_disabled) {
                r = systemd ? disable_unit(t, *sv) : busybox_service(t, s, *sv, false);
                if (r < 0)
                        return r;
        }
        STRV_FOREACH (sv, ks->services_enabled) {
                r = systemd ? enable_unit(t, s, *sv, 0) : busybox_service(t, s, *sv, true);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* "network --bootproto=dhcp": systemd-networkd asks for an address on the
 * device (every ethernet when none is named). The busybox init runs udhcpc
 * itself (data/busybox/network). Static addresses are not applied yet. */
static int apply_network(const struct tree *t, const struct spec *s)
{
        const struct kickstart *ks = s->kickstart;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!ks || !ks->network_bootproto || !tree_is_systemd(t))
                return 0;
        if (!streq(ks->network_bootproto, "dhcp")) {
                log_warning("%s: network --bootproto=%s is not applied (only dhcp is)", ks_file(s),
                            ks->network_bootproto);
                return 0;
        }
        if (!tree_exists(t, "lib/systemd/systemd-networkd") && !tree_exists(t, "usr/lib/systemd/systemd-networkd"))
                return log_error_errno(-EBADMSG, "%s: network --bootproto=dhcp needs systemd-networkd in the image",
                                       ks_file(s));
        if (asprintf(&text,
                     "# Written by ingot from the kickstart's network line.\n"
                     "[Match]\n"
                     "Name=%s\n"
                     "\n"
                     "[Network]\n"
                     "DHCP=%s\n",
                     ks->network_device && !streq(ks->network_device, "link") ? ks->network_device : "en* eth*",
                     ks->network_noipv6 ? "ipv4" : "yes") < 0)
                return log_oom_rootfs();
        r = tree_write(t, "etc/systemd/network/80-ingot.network", text, 0644);
        if (r < 0)
                return log_error_errno(r, "cannot write the network configuration in the tree: %m");
        r = enable_unit(t, s, "systemd-networkd.service", 0);
        if (r < 0)
                return r;
        /* not systemd-networkd-wait-online (its Also=): a VM booted without
         * a NIC would wait two minutes for network-online.target and then
         * count it as a failed unit; services that listen on 0.0.0.0 do not
         * need an address to start */
        r = tree_unlink(t, "etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service");
        if (r < 0)
                return log_error_errno(r, "cannot remove the wait-online link from the tree: %m");
        return 0;
}

/* systemd images say they are up with a oneshot unit after
 * multi-user.target; the busybox init prints the line itself, from
 * /etc/os-release. */
static int install_unit(const struct tree *t, const char *name, const char *text, const char *wanted_by);
static int run_script(const struct tree *t, const struct spec *s, const struct ks_script *sc, size_t index,
                      const char *scratch);

static const char ready_script[] =
        "#!/bin/sh\n"
        "# Written by ingot: the line 'ingot boot' waits for on the console, with\n"
        "# the version stamp from /etc/os-release and whether / is on dm-verity.\n"
        ". /etc/os-release\n"
        "verity=off\n"
        "[ -x /usr/lib/ingot/verity-status ] && verity=$(/usr/lib/ingot/verity-status)\n"
        "echo \"ingot-ready name=$IMAGE_ID version=$IMAGE_VERSION verity=$verity\"\n";

static const char ready_unit[] =
        "# Written by ingot: tells 'ingot boot' on the console that the image is up.\n"
        "[Unit]\n"
        "Description=Report that the image is up\n"
        "After=multi-user.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "ExecStart=/usr/lib/ingot/ready\n"
        "StandardOutput=tty\n"
        "TTYPath=/dev/console\n"
        "StandardError=journal\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n";

static int install_ready_hook(const struct tree *t, const struct spec *s)
{
        int r;

        (void)s;
        if (!tree_is_systemd(t)) {
                if (!tree_is_busybox(t))
                        log_warning("the tree has neither systemd nor the busybox init: no ready line is installed, "
                                    "'ingot boot' will time out");
                return 0;
        }
        r = tree_write(t, "usr/lib/ingot/ready", ready_script, 0755);
        if (r >= 0)
                r = tree_write(t, "usr/lib/ingot/verity-status", data_verity_ingot_verity_status, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot install the ready script in the tree: %m");
        return install_unit(t, "ingot-ready.service", ready_unit, "multi-user.target");
}

/* --verity: the initrd must open the root through dm-verity before it
 * mounts it. initramfs-tools gets a hook (veritysetup and dm-verity into
 * the initrd) and a local-top script (data/verity/), and the initrd is made
 * again inside the tree; the build takes it from there. */
static int install_verity(const struct tree *t, const struct spec *s, const char *scratch)
{
        static char body[] = "set -e\nupdate-initramfs -u -k all\n";
        static const struct ks_script regen = {
                .body = body,
                .erroronfail = true,
                .loc = { .file = "(ingot --verity)", .line = 1 },
        };
        int r;

        if (!s->verity)
                return 0;
        if (!tree_exists(t, "usr/share/initramfs-tools/hook-functions"))
                return log_error_errno(-EBADMSG, "--verity needs initramfs-tools in the image (its initrd opens the "
                                                 "verity root); the tree has none");
        if (!tree_exists(t, "sbin/veritysetup") && !tree_exists(t, "usr/sbin/veritysetup"))
                return log_error_errno(-EBADMSG, "--verity needs veritysetup in the image (package cryptsetup-bin)");
        r = tree_write(t, "etc/initramfs-tools/hooks/ingot-verity", data_verity_initramfs_hook, 0755);
        if (r >= 0)
                r = tree_write(t, "etc/initramfs-tools/scripts/local-top/ingot-verity", data_verity_initramfs_local_top,
                               0755);
        if (r < 0)
                return log_error_errno(r, "cannot install the verity initrd hooks in the tree: %m");
        return run_script(t, s, &regen, 1000, scratch);
}

/* ---- the seal: state on tmpfs, identity, first-boot secrets, sysprep ---- */

/* The root is mounted read-only and its ext4 has the read-only feature,
 * so what must be writable lives in memory: /tmp a tmpfs, /var an overlay
 * whose upper layer is a tmpfs under /run (the image's /var stays visible
 * below it, so nginx's /var/www, dpkg's database and the rest of
 * /var/lib keep working). Every boot starts from the image again. */
static const char unit_state[] =
        "# Written by ingot: the writable layer of /var lives in memory.\n"
        "[Unit]\n"
        "Description=Writable state for the read-only image\n"
        "DefaultDependencies=no\n"
        "Before=var.mount\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        "ExecStart=/bin/mkdir -p /run/ingot/var/upper /run/ingot/var/work\n";

static const char unit_var[] =
        "# Written by ingot: /var as an overlay on the read-only image.\n"
        "[Unit]\n"
        "Description=/var, writable, in memory over the image's\n"
        "DefaultDependencies=no\n"
        "Requires=ingot-state.service\n"
        "After=ingot-state.service\n"
        "Conflicts=umount.target\n"
        "Before=local-fs.target umount.target systemd-journal-flush.service\n"
        "\n"
        "[Mount]\n"
        "What=overlay\n"
        "Where=/var\n"
        "Type=overlay\n"
        "Options=lowerdir=/var,upperdir=/run/ingot/var/upper,workdir=/run/ingot/var/work\n"
        "\n"
        "[Install]\n"
        "WantedBy=local-fs.target\n";

static const char unit_tmp[] =
        "# Written by ingot: /tmp in memory (the root is read-only).\n"
        "[Unit]\n"
        "Description=Temporary Directory /tmp\n"
        "ConditionPathIsSymbolicLink=!/tmp\n"
        "DefaultDependencies=no\n"
        "Conflicts=umount.target\n"
        "Before=local-fs.target umount.target\n"
        "After=swap.target\n"
        "\n"
        "[Mount]\n"
        "What=tmpfs\n"
        "Where=/tmp\n"
        "Type=tmpfs\n"
        "Options=mode=1777,strictatime,nosuid,nodev,size=50%,nr_inodes=1m\n"
        "\n"
        "[Install]\n"
        "WantedBy=local-fs.target\n";

/* No host keys in the image (sysprep); every instance makes its own at
 * boot, under /run because /etc is read-only: Ed25519 and ECDSA only, as
 * an RSA key takes minutes to make in an emulated (TCG) guest. */
static const char unit_ssh_keys[] =
        "# Written by ingot: this instance's SSH host keys (the image has none).\n"
        "[Unit]\n"
        "Description=SSH host keys for this instance\n"
        "Before=ssh.service\n"
        "ConditionPathExists=/usr/bin/ssh-keygen\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        "ExecStart=/bin/mkdir -p -m 0700 /run/ingot/ssh\n"
        "ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N \"\" -f /run/ingot/ssh/ssh_host_ed25519_key\n"
        "ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N \"\" -f /run/ingot/ssh/ssh_host_ecdsa_key\n";

static const char sshd_host_keys[] =
        "# Written by ingot: the image is read-only and carries no host keys;\n"
        "# ingot-ssh-host-keys.service makes them at boot.\n"
        "HostKey /run/ingot/ssh/ssh_host_ed25519_key\n"
        "HostKey /run/ingot/ssh/ssh_host_ecdsa_key\n";

static int install_unit(const struct tree *t, const char *name, const char *text, const char *wanted_by)
{
        _cleanup_free_ char *path = NULL, *link = NULL, *target = NULL;
        int r;

        if (asprintf(&path, "etc/systemd/system/%s", name) < 0 || asprintf(&target, "/%s", path) < 0)
                return log_oom_rootfs();
        r = tree_write(t, path, text, 0644);
        if (r >= 0 && wanted_by) {
                if (asprintf(&link, "etc/systemd/system/%s.wants/%s", wanted_by, name) < 0)
                        return log_oom_rootfs();
                r = tree_symlink(t, link, target);
        }
        if (r < 0)
                return log_error_errno(r, "cannot install '%s' in the tree: %m", name);
        return 0;
}

static int install_state(const struct tree *t)
{
        int r;

        if (!tree_is_systemd(t))
                return 0; /* the busybox init mounts them itself (data/busybox/rcS) */
        r = install_unit(t, "ingot-state.service", unit_state, NULL);
        if (r >= 0)
                r = install_unit(t, "var.mount", unit_var, "local-fs.target");
        if (r >= 0)
                r = install_unit(t, "tmp.mount", unit_tmp, "local-fs.target");
        if (r >= 0 && tree_exists(t, "usr/sbin/sshd")) {
                r = install_unit(t, "ingot-ssh-host-keys.service", unit_ssh_keys, "ssh.service");
                if (r >= 0 && (r = tree_write(t, "etc/ssh/sshd_config.d/ingot-host-keys.conf", sshd_host_keys, 0644)) < 0)
                        log_error_errno(r, "cannot write the sshd host key configuration in the tree: %m");
        }
        return r;
}

/* /usr/lib/ingot/image.json: the version stamp, machine-readable, and
 * what the hygiene gate may find on purpose. */
static const char *file_name(const char *path)
{
        const char *slash = path ? strrchr(path, '/') : NULL;

        return slash ? slash + 1 : path;
}

/* What the hygiene gate may find on purpose, and the build's sysprep
 * leaves: root's authorized_keys when the kickstart's sshkey wrote it.
 * The caller frees *ret. */
static int sysprep_keep(const struct spec *s, char ***ret)
{
        const struct kickstart *ks = s->kickstart;
        _cleanup_strv_free_ char **keep = NULL;

        for (size_t i = 0; ks && i < ks->n_sshkeys; i++)
                if (streq(ks->sshkeys[i].username, "root")) {
                        if (strv_extend(&keep, "/root/.ssh/authorized_keys") < 0)
                                return log_oom_rootfs();
                        break;
                }
        *ret = TAKE_PTR(keep);
        return 0;
}

static int install_image_json(const struct tree *t, const struct spec *s, const char *rootfs_digest,
                              char *const *keep_paths)
{
        const struct kickstart *ks = s->kickstart;
        json_t *j, *keep = json_array(), *kick = json_null();
        char *text;
        char tdigest[65], kdigest[65];
        int r;

        STRV_FOREACH (k, keep_paths)
                if (keep)
                        json_array_append_new(keep, json_string(*k));
        if (ks)
                kick = json_pack("{s:s, s:s}", "file", file_name(s->kickstart_path), "sha256",
                                 hex_encode(ks->digest, 32, kdigest));
        j = json_pack("{s:s, s:s, s:s, s:I, s:b, s:{s:{s:s, s:s}, s:o, s:{s:s?}}, s:{s:o}}", "name", s->name,
                      "version", s->version, "architecture", s->architecture, "source_date_epoch",
                      (json_int_t)s->source_date_epoch, "verity", s->verity, "inputs", "template", "file",
                      file_name(s->template_path), "sha256", hex_encode(s->template->digest, 32, tdigest),
                      "kickstart", kick, "rootfs", "sha256", rootfs_digest, "sysprep", "keep", keep);
        if (!j)
                return log_oom_rootfs();
        text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(j);
        if (!text)
                return log_oom_rootfs();
        r = tree_write_full(t, "usr/lib/ingot/image.json", text, strlen(text), 0644, 0, 0, false);
        if (r >= 0)
                r = tree_write_full(t, "usr/lib/ingot/image.json", "\n", 1, 0644, 0, 0, true);
        free(text);
        if (r < 0)
                return log_error_errno(r, "cannot write '/usr/lib/ingot/image.json' in the tree: %m");
        return 0;
}

/* Removes name in dfd, directories with everything in them. */
static int remove_at(int dfd, const char *name)
{
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -errno;
        fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        fd = -1; /* now d's */
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") && r >= 0)
                        r = remove_at(dirfd(d), de->d_name);
        closedir(d);
        if (r >= 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
                r = -errno;
        return r;
}

/* A corrupt or hostile tree can nest without end; real ones do not. */
#define SYSPREP_DEPTH_MAX 64

/* Whether the machine-id file name in dfd holds an initialised id;
 * unreadable counts as one, as in the gate. */
static bool machine_id_is_set_at(int dfd, const char *name)
{
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        char buf[sizeof(SYSPREP_MACHINE_ID_UNSET)];
        ssize_t n;

        if (fd < 0)
                return true;
        n = read(fd, buf, sizeof(buf));
        return n < 0 || sysprep_machine_id_is_set(buf, (size_t)n);
}

/* Applies rule in the open directory dfd (closed here), which is path in
 * the image: removes what the hygiene gate would report there. */
static int sysprep_dir(const struct sysprep_rule *rule, int dfd, const char *path, char *const *keep,
                       unsigned depth)
{
        DIR *d = fdopendir(dfd);
        struct dirent *de;
        int r = 0;

        if (!d) {
                r = -errno;
                close(dfd);
                return r;
        }
        while (r >= 0 && (de = readdir(d))) {
                _cleanup_free_ char *p = NULL;
                bool match, need_content;
                struct stat st;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (asprintf(&p, "%s/%s", path, de->d_name) < 0) {
                        p = NULL;
                        r = -ENOMEM;
                        break;
                }
                match = sysprep_rule_matches_name(rule, de->d_name) &&
                        sysprep_rule_matches_entry(rule, st.st_mode, (uint64_t)st.st_size, &need_content);
                if (match && need_content)
                        match = machine_id_is_set_at(dirfd(d), de->d_name);
                if (match && rule->keepable && strv_contains(keep, p))
                        match = false;
                if (match)
                        r = remove_at(dirfd(d), de->d_name);
                else if (rule->recursive && S_ISDIR(st.st_mode)) {
                        int sub;

                        if (depth >= SYSPREP_DEPTH_MAX) {
                                r = -ELOOP;
                                break;
                        }
                        sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        r = sub < 0 ? -errno : sysprep_dir(rule, sub, p, keep, depth + 1);
                }
        }
        closedir(d);
        return r;
}

/* Applies rule in dir, a path in the image ("/etc/ssh"). */
static int sysprep_rule_apply(const struct tree *t, const struct sysprep_rule *rule, const char *dir,
                              char *const *keep)
{
        int fd = rootfs_open_in_root(t->fd, dir + 1, O_RDONLY | O_DIRECTORY, 0);
        int r;

        if (fd == -ENOENT || fd == -ENOTDIR)
                return 0;
        if (fd < 0)
                return log_error_errno(fd, "sysprep: cannot open '%s' in the tree: %m", dir);
        r = sysprep_dir(rule, fd, dir, keep, 0);
        if (r == -ENOMEM)
                return log_oom_rootfs();
        if (r < 0)
                return log_error_errno(r, "sysprep: cannot clean '%s' in the tree: %m", dir);
        return 0;
}

/* A "~" rule ("~", "~/.ssh") in /root and in every directory in /home. */
static int sysprep_rule_apply_homes(const struct tree *t, const struct sysprep_rule *rule, char *const *keep)
{
        const char *sub = rule->dir + 1;
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int home = -1;
        struct dirent *de;
        DIR *d;
        int r;

        if (asprintf(&dir, "/root%s", sub) < 0)
                return log_oom_rootfs();
        r = sysprep_rule_apply(t, rule, dir, keep);
        if (r < 0)
                return r;
        home = rootfs_open_in_root(t->fd, "home", O_RDONLY | O_DIRECTORY, 0);
        if (home == -ENOENT || home == -ENOTDIR)
                return 0;
        if (home < 0)
                return log_error_errno(home, "sysprep: cannot open '/home' in the tree: %m");
        d = fdopendir(home);
        if (!d)
                return log_error_errno(-errno, "sysprep: cannot read '/home' in the tree: %m");
        home = -1; /* now d's */
        r = 0;
        while (r >= 0 && (de = readdir(d))) {
                struct stat st;

                /* as the gate sees /home: its directories, not what symlinks point at */
                if (streq(de->d_name, ".") || streq(de->d_name, "..") ||
                    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                free(dir);
                if (asprintf(&dir, "/home/%s%s", de->d_name, sub) < 0) {
                        dir = NULL;
                        r = log_oom_rootfs();
                        break;
                }
                r = sysprep_rule_apply(t, rule, dir, keep);
        }
        closedir(d);
        return r;
}

/* Runs last, after %post: whatever the bootstrap, the packages and the
 * scripts left that belongs to one machine or one build, by the rules
 * the hygiene gate checks (sysprep-rules.c). keep: the paths the
 * kickstart put there on purpose (image.json's sysprep.keep). */
static int sysprep(const struct tree *t, char *const *keep)
{
        int r;

        for (size_t i = 0; i < sysprep_n_rules; i++) {
                const struct sysprep_rule *rule = &sysprep_rules[i];

                r = rule->dir[0] == '~' ? sysprep_rule_apply_homes(t, rule, keep)
                                        : sysprep_rule_apply(t, rule, rule->dir, keep);
                if (r < 0)
                        return r;
        }
        /* machine-id: "uninitialized" makes systemd treat the first boot as
         * one and create it then (machine-id(5)), per instance; the rule
         * above removed an initialised one */
        if (tree_is_systemd(t)) {
                r = tree_unlink(t, "etc/machine-id");
                if (r >= 0)
                        r = tree_write(t, "etc/machine-id", SYSPREP_MACHINE_ID_UNSET, 0444);
                if (r < 0)
                        return log_error_errno(r, "sysprep: cannot reset '/etc/machine-id' in the tree: %m");
        }
        return 0;
}

int customize_sysprep(const char *root, char *const *keep)
{
        _cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct tree t = { .path = root, .fd = fd };

        if (fd < 0)
                return log_error_errno(-errno, "cannot open the tree '%s': %m", root);
        return sysprep(&t, keep);
}

/* ---- template overlays ---- */

static int apply_overlays(const struct tree *t, const struct spec *s)
{
        const struct template *tp = s->template;

        for (size_t i = 0; i < tp->n_overlays; i++) {
                const struct template_overlay *ov = &tp->overlays[i];
                const char *base;
                _cleanup_close_ int dfd = tree_open_parent(t, ov->destination, true, &base);
                char dest[64 + 256];
                int r;

                if (dfd < 0)
                        return log_error_errno(dfd, "cannot create the parent of '%s' in the tree: %m",
                                               ov->destination);
                /* the child sees the parent through its own fd table, so a
                 * symlink in the tree cannot redirect the copy */
                if (fcntl(dfd, F_SETFD, 0) < 0)
                        return log_error_errno(-errno, "cannot pass '%s' on: %m", ov->destination);
                snprintf(dest, sizeof(dest), "/proc/self/fd/%d/%s", dfd, base);
                const char *argv[] = {
                        "cp",       "-R", "-T", "--no-dereference", "--preserve=mode,timestamps,links", "--",
                        ov->source, dest, NULL
                };
                r = rootfs_run("cannot copy an overlay into the tree", argv, NULL, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- %post ---- */

static int last_lines(const char *text, unsigned n, char **ret)
{
        const char *p = text + strlen(text);
        unsigned seen = 0;

        while (p > text && (p[-1] == '\n'))
                p--;
        for (const char *q = p; q > text; q--)
                if (q[-1] == '\n' && ++seen == n) {
                        *ret = strndup(q, (size_t)(p - q));
                        return *ret ? 0 : -ENOMEM;
                }
        *ret = strndup(text, (size_t)(p - text));
        return *ret ? 0 : -ENOMEM;
}

_noreturn_ static void script_child(const struct tree *t, const struct spec *s, const struct ks_script *sc,
                                    const char *script, int out, const char *install_root)
{
        char epoch_env[64];
        const char *interp = sc->interpreter ? sc->interpreter : "/bin/sh";
        const char *argv[] = { interp, script, NULL };
        char root_env[4096 + 32];
        const char *env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              "HOME=/root",
                              "LANG=C.UTF-8",
                              "DEBIAN_FRONTEND=noninteractive",
                              epoch_env,
                              NULL,
                              NULL };
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(epoch_env, sizeof(epoch_env), "SOURCE_DATE_EPOCH=%" PRIu64, s->source_date_epoch);
        if (in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
                _exit(127);
        if (install_root) {
                snprintf(root_env, sizeof(root_env), "INSTALL_ROOT=%s", install_root);
                env[5] = root_env;
                if (chdir("/") < 0)
                        _exit(127);
        } else {
                int dev, proc, rootfd;
                /* /dev and /proc for the script, in a mount namespace of its
                 * own so nothing stays mounted in the tree afterwards */
                if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0) {
                        dprintf(2, "ingot: cannot create a mount namespace for %%post: %m\n");
                        _exit(127);
                }
                /* the tree as seen from the new mount namespace: mounts and
                 * chroot must happen on its mounts, not the parent's */
                rootfd = open(t->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (rootfd < 0) {
                        dprintf(2, "ingot: cannot open the tree: %m\n");
                        _exit(127);
                }
                dev = rootfs_open_in_root(rootfd, "dev", O_PATH | O_DIRECTORY, 0);
                proc = rootfs_open_in_root(rootfd, "proc", O_PATH | O_DIRECTORY, 0);
                if (dev >= 0) {
                        char p[64];
                        snprintf(p, sizeof(p), "/proc/self/fd/%d", dev);
                        if (mount("/dev", p, "none", MS_BIND | MS_REC, NULL) < 0)
                                dprintf(2, "ingot: warning: no /dev for %%post: %m\n");
                }
                if (proc >= 0) {
                        char p[64];
                        snprintf(p, sizeof(p), "/proc/self/fd/%d", proc);
                        if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
                            mount("/proc", p, "none", MS_BIND | MS_REC, NULL) < 0)
                                dprintf(2, "ingot: warning: no /proc for %%post: %m\n");
                }
                if (fchdir(rootfd) < 0 || chroot(".") < 0 || chdir("/") < 0) {
                        dprintf(2, "ingot: cannot chroot into the tree: %m\n");
                        _exit(127);
                }
        }
        execve(interp, (char *const *)argv, (char *const *)env);
        dprintf(2, "ingot: cannot execute the %%post interpreter '%s': %m\n", interp);
        _exit(127);
}

static int run_script(const struct tree *t, const struct spec *s, const struct ks_script *sc, size_t index,
                      const char *scratch)
{
        _cleanup_free_ char *script = NULL, *host_script = NULL, *log_path = NULL, *output = NULL, *tail = NULL;
        _cleanup_close_ int out = -1;
        int status, r;
        pid_t pid;

        if (asprintf(&log_path, "%s/post-%zu.log", scratch, index) < 0)
                return log_oom_rootfs();
        if (sc->nochroot) {
                if (asprintf(&host_script, "%s/post-%zu", scratch, index) < 0)
                        return log_oom_rootfs();
                r = write_file_atomic(host_script, sc->body, strlen(sc->body), 0700);
        } else {
                if (asprintf(&script, "/tmp/ingot-post-%zu", index) < 0)
                        return log_oom_rootfs();
                r = tree_mkdir(t, "tmp", 01777, 0, 0);
                if (r >= 0)
                        r = tree_write_full(t, script, sc->body, strlen(sc->body), 0700, 0, 0, false);
        }
        if (r < 0)
                return log_error_errno(r, "cannot write the %%post script of %s:%u: %m", sc->loc.file, sc->loc.line);
        out = open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0)
                return log_error_errno(-errno, "cannot create '%s': %m", log_path);

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return log_error_errno(-errno, "cannot fork: %m");
        if (pid == 0)
                script_child(t, s, sc, sc->nochroot ? host_script : script, out, sc->nochroot ? t->path : NULL);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return log_error_errno(-errno, "cannot wait for %%post: %m");
        if (script)
                tree_unlink(t, script);
        if (host_script)
                unlink(host_script);

        r = read_full_file(log_path, 64 << 20, &output, NULL);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", log_path);
        if (*output && log_get_level() >= LOG_LEVEL_VERBOSE)
                log_debug("%%post at %s:%u said:\n%s", sc->loc.file, sc->loc.line, output);
        if (sc->log) {
                r = sc->nochroot ? write_file_atomic(sc->log, output, strlen(output), 0600)
                                 : tree_write_full(t, sc->log, output, strlen(output), 0600, 0, 0, false);
                if (r < 0)
                        return log_error_errno(r, "cannot write the %%post log '%s': %m", sc->log);
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        if (last_lines(output, POST_TAIL_LINES, &tail) < 0)
                return log_oom_rootfs();
        {
                char how[64];
                if (WIFEXITED(status))
                        snprintf(how, sizeof(how), "exit status %d", WEXITSTATUS(status));
                else
                        snprintf(how, sizeof(how), "signal %d", WTERMSIG(status));
                if (sc->erroronfail) {
                        log_error("%s:%u: %%post --erroronfail script failed (%s)%s%s", sc->loc.file, sc->loc.line, how,
                                  *tail ? "; its last lines:\n" : " and printed nothing", tail);
                        return -EIO;
                }
                log_warning("%s:%u: %%post script failed (%s), going on (no --erroronfail)%s%s", sc->loc.file,
                            sc->loc.line, how, *tail ? "; its last lines:\n" : "", tail);
        }
        return 0;
}

static int apply_post(const struct tree *t, const struct spec *s, const char *scratch)
{
        const struct kickstart *ks = s->kickstart;
        bool policy = false;
        int r = 0;

        if (!ks || ks->n_scripts == 0)
                return 0;
        /* as mmdebstrap's hooks do: no daemon starts from a package installed in %post */
        if (tree_exists(t, "usr/sbin") && !tree_exists(t, "usr/sbin/policy-rc.d")) {
                r = tree_write_full(t, "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 20, 0755, 0, 0, false);
                policy = r >= 0;
        }
        for (size_t i = 0; i < ks->n_scripts; i++) {
                r = run_script(t, s, &ks->scripts[i], i, scratch);
                if (r < 0)
                        break;
        }
        if (policy)
                tree_unlink(t, "usr/sbin/policy-rc.d");
        return r;
}

/* Copies the initrd update-initramfs made in the tree to out. */
static int take_initrd(const struct tree *t, const char *out)
{
        _cleanup_close_ int boot = rootfs_open_in_root(t->fd, "boot", O_RDONLY | O_DIRECTORY, 0);
        _cleanup_free_ char *name = NULL;
        _cleanup_close_ int fd = -1;
        struct dirent *de;
        DIR *d;
        int r;

        if (boot < 0)
                return log_error_errno(boot, "no /boot in the tree: %m");
        d = fdopendir(boot);
        if (!d)
                return log_error_errno(-errno, "cannot read /boot in the tree: %m");
        boot = -1;
        while ((de = readdir(d)))
                if (strncmp(de->d_name, "initrd.img-", 11) == 0 && (!name || strcmp(de->d_name, name) > 0)) {
                        free(name);
                        name = strdup(de->d_name);
                }
        fd = name ? openat(dirfd(d), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -ENOENT;
        /* out may be a hard link into the cache: replace it, never write through it */
        (void)unlink(out);
        r = fd < 0 ? (name ? -errno : -ENOENT) : copy_fd_to_file(fd, out, 0644);
        closedir(d);
        if (r < 0)
                return log_error_errno(r, "cannot take the initrd made for --verity from the tree: %m");
        return 0;
}

int customize_apply(const struct spec *s, const char *root, const struct customize_options *o)
{
        _cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct tree t = { .path = root, .fd = fd };
        _cleanup_strv_free_ char **keep = NULL;
        int r;

        if (fd < 0)
                return log_error_errno(-errno, "cannot open the tree '%s': %m", root);
        r = sysprep_keep(s, &keep);
        if (r >= 0)
                r = apply_overlays(&t, s);
        if (r >= 0)
                r = apply_system(&t, s, o->scrub_host_files);
        if (r >= 0)
                r = apply_users(&t, s);
        if (r >= 0)
                r = apply_services(&t, s);
        if (r >= 0)
                r = apply_network(&t, s);
        if (r >= 0)
                r = install_ready_hook(&t, s);
        if (r >= 0)
                r = install_image_json(&t, s, o->rootfs_digest ? o->rootfs_digest : "", keep);
        if (r >= 0)
                r = apply_post(&t, s, o->scratch_dir);
        /* the seal, after %post so nothing it does can undo it */
        if (r >= 0)
                r = install_state(&t);
        if (r >= 0)
                r = install_verity(&t, s, o->scratch_dir);
        if (r >= 0 && s->verity && o->out_initrd)
                r = take_initrd(&t, o->out_initrd);
        if (r >= 0) {
                struct timespec a, b;

                clock_gettime(CLOCK_MONOTONIC, &a);
                r = sysprep(&t, keep);
                clock_gettime(CLOCK_MONOTONIC, &b);
                log_debug("sysprep took %.2fs",
                          (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
        }
        return r;
}

/* ---- unpack, apply, pack ---- */

struct run_ctx {
        const struct spec *s;
        const struct customize_options *o;
};

static int customize_worker(void *userdata)
{
        const struct run_ctx *c = userdata;
        _cleanup_free_ char *tree = NULL;
        int r;

        if (asprintf(&tree, "%s/tree", c->o->scratch_dir) < 0)
                return log_oom_rootfs();
        r = rm_rf(tree);
        if (r < 0)
                return log_error_errno(r, "cannot remove the stale '%s': %m", tree);
        if (mkdir(tree, 0755) < 0)
                return log_error_errno(-errno, "cannot create '%s': %m", tree);
        /* The tree lives only as long as this namespace: on a tmpfs it
         * unpacks ~15× faster than on the disk (20k files), and a killed
         * build leaves no files of other owners behind. INGOT_TREE_ON_DISK=1
         * for trees larger than memory. */
        if (!getenv("INGOT_TREE_ON_DISK") && mount("ingot-tree", tree, "tmpfs", MS_NODEV, "mode=0755") < 0)
                log_debug("no tmpfs for the tree (%s), unpacking on disk", strerror(errno));

        /* Device nodes cannot be made in a user namespace and are not
         * wanted in the image (devtmpfs provides them): left out. */
        const char *argv[] = { "tar",
                               "--extract",
                               "--file",
                               c->o->base_tar,
                               "--directory",
                               tree,
                               "--numeric-owner",
                               "--same-owner",
                               "--same-permissions",
                               "--anchored",
                               "--exclude=./dev/*",
                               "--exclude=dev/*",
                               NULL };
        r = rootfs_run("cannot unpack the base tree", argv, NULL, NULL);
        if (r >= 0)
                r = customize_apply(c->s, tree, c->o);
        if (r >= 0)
                r = rootfs_tar_dir(tree, c->o->out_tar, c->s->source_date_epoch);
        /* only here, inside the namespace, may files of other owners be removed */
        if (umount2(tree, MNT_DETACH) < 0)
                rm_rf(tree);
        rmdir(tree);
        return r;
}

int customize_run(const struct spec *s, const struct customize_options *o)
{
        struct run_ctx c = { .s = s, .o = o };

        return customize_in_namespace(customize_worker, &c);
}
