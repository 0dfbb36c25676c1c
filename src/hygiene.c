/* Owns the hygiene gate: what a sealed image must not carry (the table in
 * sysprep-rules.c, the one the build's sysprep removes by), checked
 * against the root filesystem read in place. Nothing is
 * mounted: libparted and libblkid (probe_image) find the root partition by
 * its DPS type GUID, and debugfs reads the ext4 filesystem through
 * "IMAGE?offset=N" in catastrophic (read-only, no bitmaps) mode, with a
 * command script on stdin. debugfs echoes each command as "debugfs: CMD"
 * before its output, which is how the answers are told apart. What a rule
 * needs to look at next (the directories in /home, a subdirectory of
 * /var/log, the content of machine-id) is only known from an answer, so
 * the rules are evaluated until they ask for nothing new, one debugfs run
 * per round; a clean image takes two, three with a ~/.ssh in /home.
 * Subdirectories and files are named
 * to debugfs by inode ("<123>"), so names need no quoting. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "hygiene.h"
#include "probe.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/run.h"
#include "shared/strv.h"
#include "sysprep-rules.h"

/* Where the image says which leftovers its kickstart put there on purpose. */
#define IMAGE_JSON_DIR "/usr/lib/ingot"
#define IMAGE_JSON_NAME "image.json"
#define IMAGE_JSON_MAX (1024 * 1024)
/* A corrupt filesystem can loop; real trees are not this deep. */
#define DEPTH_MAX 64
#define DEBUGFS_TIMEOUT_SEC 300

struct entry {
        char *name;
        uint32_t ino;
        uint32_t mode;
        uint64_t size;
};

/* A directory listing or a file's content, asked of debugfs by command. */
struct request {
        char *path;    /* in the image */
        char *command; /* "ls -p /etc", "ls -p <123>", "cat <45>" */
        bool is_cat;
        bool fetched;  /* debugfs ran it (an absent directory lists nothing) */
        bool answered; /* during the run: its echo was seen */
        /* listings */
        struct entry *entries;
        size_t n_entries;
        /* contents */
        uint64_t size; /* as the listing said */
        char *data;
        size_t n_data;
        bool complete; /* n_data == size and the answer ended where expected */
};

struct scan {
        const char *image;
        unsigned partition;
        char *device;              /* "IMAGE?offset=N" */
        struct request **requests; /* each allocated alone: callers hold pointers while more are added */
        size_t n_requests;
        bool pending; /* the last evaluation asked for something not fetched yet */
        unsigned runs;
        char **keep; /* image.json sysprep.keep */
        bool keep_loaded;
        struct hygiene_finding *findings;
        size_t n_findings;
};

static int log_oom(void)
{
        return log_error_errno(-ENOMEM, "out of memory");
}

void hygiene_findings_free(struct hygiene_finding *f, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(f[i].path);
                free(f[i].reason);
        }
        free(f);
}

static void request_free(struct request *r)
{
        if (!r)
                return;
        free(r->path);
        free(r->command);
        for (size_t i = 0; i < r->n_entries; i++)
                free(r->entries[i].name);
        free(r->entries);
        free(r->data);
        free(r);
}

static void scan_done(struct scan *s)
{
        for (size_t i = 0; i < s->n_requests; i++)
                request_free(s->requests[i]);
        free(s->requests);
        free(s->device);
        strv_free(s->keep);
        hygiene_findings_free(s->findings, s->n_findings);
}

static const struct request *find_request(const struct scan *s, const char *path, bool is_cat)
{
        for (size_t i = 0; i < s->n_requests; i++)
                if (s->requests[i]->is_cat == is_cat && streq(s->requests[i]->path, path))
                        return s->requests[i];
        return NULL;
}

/* The listing of path (by inode when ino is not 0), or NULL in *ret when
 * it is not fetched yet: then it is queued and s->pending set. */
static int want(struct scan *s, const char *path, uint32_t ino, bool is_cat, uint64_t size, const struct request **ret)
{
        const struct request *have = find_request(s, path, is_cat);
        struct request **n, *r;

        if (have) {
                if (!have->fetched)
                        s->pending = true;
                *ret = have->fetched ? have : NULL;
                return 0;
        }

        n = reallocarray(s->requests, s->n_requests + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        s->requests = n;
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->is_cat = is_cat;
        r->size = size;
        r->path = strdup(path);
        if (!r->path || (ino ? asprintf(&r->command, "%s <%" PRIu32 ">", is_cat ? "cat" : "ls -p", ino)
                             : asprintf(&r->command, "%s %s", is_cat ? "cat" : "ls -p", path)) < 0) {
                r->command = NULL;
                request_free(r);
                return -ENOMEM;
        }
        s->requests[s->n_requests++] = r;
        s->pending = true;
        *ret = NULL;
        return 0;
}

static int want_listing(struct scan *s, const char *path, uint32_t ino, const struct request **ret)
{
        return want(s, path, ino, false, 0, ret);
}

static int want_content(struct scan *s, const char *path, const struct entry *e, const struct request **ret)
{
        return want(s, path, e->ino, true, e->size, ret);
}

static const struct entry *listing_find(const struct request *l, const char *name)
{
        for (size_t i = 0; i < l->n_entries; i++)
                if (streq(l->entries[i].name, name))
                        return &l->entries[i];
        return NULL;
}

static bool is_dot(const char *name)
{
        return streq(name, ".") || streq(name, "..");
}

static char *path_join(const char *dir, const char *name)
{
        char *p;

        if (asprintf(&p, "%s%s%s", dir, streq(dir, "/") ? "" : "/", name) < 0)
                return NULL;
        return p;
}

/* image.json's sysprep.keep, loaded once; absent or unreadable means
 * nothing is kept. *ret_ready is false while it is being fetched. */
static int load_keep(struct scan *s, bool *ret_ready)
{
        const struct request *dir, *file;
        const struct entry *e;
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_error_t err;
        json_t *keep;
        int r;

        *ret_ready = s->keep_loaded;
        if (s->keep_loaded)
                return 0;
        r = want_listing(s, IMAGE_JSON_DIR, 0, &dir);
        if (r < 0 || !dir)
                return r;
        e = listing_find(dir, IMAGE_JSON_NAME);
        if (e && S_ISREG(e->mode) && e->size <= IMAGE_JSON_MAX) {
                r = want_content(s, IMAGE_JSON_DIR "/" IMAGE_JSON_NAME, e, &file);
                if (r < 0 || !file)
                        return r;
                j = file->complete ? json_loadb(file->data, file->n_data, 0, &err) : NULL;
                if (!j)
                        log_warning("cannot read '%s' in the root filesystem of '%s'%s%s; keeping nothing",
                                    IMAGE_JSON_DIR "/" IMAGE_JSON_NAME, s->image, file->complete ? ": " : "",
                                    file->complete ? err.text : "");
                keep = json_object_get(json_object_get(j, "sysprep"), "keep");
                for (size_t i = 0; i < json_array_size(keep); i++) {
                        const char *v = json_string_value(json_array_get(keep, i));

                        if (v && strv_extend(&s->keep, v) < 0)
                                return -ENOMEM;
                }
        } else if (e)
                log_warning("'%s' in the root filesystem of '%s' is not a regular file of at most %d bytes; "
                            "keeping nothing",
                            IMAGE_JSON_DIR "/" IMAGE_JSON_NAME, s->image, IMAGE_JSON_MAX);
        s->keep_loaded = true;
        *ret_ready = true;
        return 0;
}

/* Whether entry e at path breaks the rule; *ret_ready false while a file
 * content it needs is being fetched. */
static int entry_matches(struct scan *s, const struct sysprep_rule *rule, const char *path, const struct entry *e,
                         bool *ret_match, bool *ret_ready)
{
        const struct request *c;
        bool need_content;
        int r;

        *ret_ready = true;
        *ret_match = sysprep_rule_matches_entry(rule, e->mode, e->size, &need_content);
        if (!*ret_match || !need_content)
                return 0;
        r = want_content(s, path, e, &c);
        if (r < 0)
                return r;
        if (!c) {
                *ret_ready = false;
                return 0;
        }
        /* unreadable counts as initialised: the gate errs on the strict side */
        *ret_match = !c->complete || sysprep_machine_id_is_set(c->data, c->n_data);
        return 0;
}

static int add_finding(struct scan *s, const char *path, const char *reason)
{
        struct hygiene_finding *n = reallocarray(s->findings, s->n_findings + 1, sizeof(*n));

        if (!n)
                return -ENOMEM;
        s->findings = n;
        n[s->n_findings] = (struct hygiene_finding){ .path = strdup(path), .reason = strdup(reason) };
        if (!n[s->n_findings].path || !n[s->n_findings].reason) {
                free(n[s->n_findings].path);
                free(n[s->n_findings].reason);
                return -ENOMEM;
        }
        s->n_findings++;
        return 0;
}

static int apply_rule(struct scan *s, const struct sysprep_rule *rule, const char *dir, uint32_t ino, unsigned depth)
{
        const struct request *l;
        int r;

        if (depth > DEPTH_MAX)
                return -ELOOP;
        r = want_listing(s, dir, ino, &l);
        if (r < 0 || !l)
                return r;

        for (size_t i = 0; i < l->n_entries; i++) {
                const struct entry *e = &l->entries[i];
                _cleanup_free_ char *path = NULL;
                bool match = false, ready;

                if (is_dot(e->name))
                        continue;
                path = path_join(dir, e->name);
                if (!path)
                        return -ENOMEM;
                if (sysprep_rule_matches_name(rule, e->name)) {
                        r = entry_matches(s, rule, path, e, &match, &ready);
                        if (r < 0)
                                return r;
                        if (match && ready && rule->keepable) {
                                r = load_keep(s, &ready);
                                if (r < 0)
                                        return r;
                                if (ready && strv_contains(s->keep, path))
                                        match = false;
                        }
                        if (match && ready) {
                                r = add_finding(s, path, rule->reason);
                                if (r < 0)
                                        return r;
                        }
                }
                if (rule->recursive && S_ISDIR(e->mode)) {
                        r = apply_rule(s, rule, path, e->ino, depth + 1);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* Applies rule in sub (a relative path like ".ssh", or "" for the home
 * itself) of the home dir, whose inode is ino: each component is looked up
 * by inode, so names need no quoting. A component that is not there, or
 * not a directory, leaves nothing to check. */
static int apply_rule_in_home(struct scan *s, const struct sysprep_rule *rule, const char *dir, uint32_t ino,
                              const char *sub)
{
        _cleanup_free_ char *path = strdup(dir);
        unsigned depth = 1;
        int r;

        if (!path)
                return -ENOMEM;
        while (*sub) {
                size_t n = strcspn(sub, "/");
                _cleanup_free_ char *name = strndup(sub, n);
                const struct request *l;
                const struct entry *e;
                char *next;

                if (!name)
                        return -ENOMEM;
                sub += n + (sub[n] == '/');
                if (n == 0)
                        continue;
                r = want_listing(s, path, ino, &l);
                if (r < 0 || !l)
                        return r;
                e = listing_find(l, name);
                if (!e || !S_ISDIR(e->mode))
                        return 0;
                next = path_join(path, name);
                if (!next)
                        return -ENOMEM;
                free(path);
                path = next;
                ino = e->ino;
                depth++;
        }
        return apply_rule(s, rule, path, ino, depth);
}

/* One pass over the rules with what is fetched so far. */
static int evaluate(struct scan *s)
{
        const struct request *home;
        int r;

        hygiene_findings_free(s->findings, s->n_findings);
        s->findings = NULL;
        s->n_findings = 0;
        s->pending = false;

        r = want_listing(s, "/home", 0, &home);
        if (r < 0)
                return r;
        for (size_t i = 0; i < sysprep_n_rules; i++) {
                const struct sysprep_rule *rule = &sysprep_rules[i];
                _cleanup_free_ char *in_root = NULL;
                const char *sub;

                if (rule->dir[0] != '~') {
                        r = apply_rule(s, rule, rule->dir, 0, 0);
                        if (r < 0)
                                return r;
                        continue;
                }
                /* "~" and "~/.ssh": in /root by path, in each home by inode */
                sub = rule->dir + 1 + (rule->dir[1] == '/');
                in_root = path_join("/root", sub);
                if (!in_root)
                        return -ENOMEM;
                r = apply_rule(s, rule, *sub ? in_root : "/root", 0, 0);
                if (r < 0)
                        return r;
                for (size_t k = 0; home && k < home->n_entries; k++) {
                        const struct entry *e = &home->entries[k];
                        _cleanup_free_ char *path = NULL;

                        if (is_dot(e->name) || !S_ISDIR(e->mode))
                                continue;
                        path = path_join("/home", e->name);
                        if (!path)
                                return -ENOMEM;
                        r = apply_rule_in_home(s, rule, path, e->ino, sub);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* "/ino/mode/uid/gid/name/size/" (directories: "name//"), as debugfs's
 * "ls -p" prints an entry. Names cannot hold '/'. */
static int parse_entry(const char *line, size_t len, struct entry *ret)
{
        const char *p = line, *end = line + len, *name, *sep;
        unsigned long long ino, mode, size = 0;
        char *q;

        if (len < 2 || *p != '/' || end[-1] != '/')
                return -EBADMSG;
        ino = strtoull(p + 1, &q, 10);
        if (*q != '/' || ino == 0 || ino > UINT32_MAX)
                return -EBADMSG;
        mode = strtoull(q + 1, &q, 8);
        if (*q != '/' || mode > UINT32_MAX)
                return -EBADMSG;
        p = q + 1;
        for (int field = 0; field < 2; field++) { /* uid, gid */
                p = memchr(p, '/', (size_t)(end - p));
                if (!p)
                        return -EBADMSG;
                p++;
        }
        name = p;
        for (sep = end - 2; sep >= name && *sep != '/'; sep--)
                ;
        if (sep <= name)
                return -EBADMSG;
        if (sep + 1 < end - 1) {
                size = strtoull(sep + 1, &q, 10);
                if (q != end - 1)
                        return -EBADMSG;
        }
        *ret = (struct entry){ .ino = (uint32_t)ino, .mode = (uint32_t)mode, .size = size };
        ret->name = strndup(name, (size_t)(sep - name));
        return ret->name ? 0 : -ENOMEM;
}

static struct request *answer_for(struct scan *s, const char *cmd, size_t len)
{
        for (size_t i = 0; i < s->n_requests; i++) {
                struct request *r = s->requests[i];

                if (!r->fetched && !r->answered && strlen(r->command) == len && memcmp(r->command, cmd, len) == 0)
                        return r;
        }
        return NULL;
}

#define ECHO "debugfs: "

/* Splits debugfs's stdout into the answers of the unfetched requests. */
static int parse_answers(struct scan *s, const char *out)
{
        struct request *cur = NULL;
        const char *p = out;
        int r;

        while (*p) {
                const char *eol = strchrnul(p, '\n'), *next = *eol ? eol + 1 : eol;

                if (strncmp(p, ECHO, strlen(ECHO)) == 0) {
                        cur = answer_for(s, p + strlen(ECHO), (size_t)(eol - p - strlen(ECHO)));
                        p = next;
                        if (cur)
                                cur->answered = true;
                        if (cur && cur->is_cat) {
                                /* the file's bytes as they are, then the next echo */
                                size_t avail = strlen(p), n = cur->size < avail ? (size_t)cur->size : avail;

                                cur->data = strndup(p, n);
                                if (!cur->data)
                                        return -ENOMEM;
                                cur->n_data = n;
                                p += n;
                                cur->complete = n == cur->size && (!*p || strncmp(p, ECHO, strlen(ECHO)) == 0);
                                cur = NULL;
                        }
                        continue;
                }
                if (cur && eol > p) {
                        struct entry e, *n;

                        r = parse_entry(p, (size_t)(eol - p), &e);
                        if (r == -ENOMEM)
                                return r;
                        if (r >= 0) {
                                n = reallocarray(cur->entries, cur->n_entries + 1, sizeof(*n));
                                if (!n) {
                                        free(e.name);
                                        return -ENOMEM;
                                }
                                cur->entries = n;
                                n[cur->n_entries++] = e;
                        } else
                                log_debug("debugfs: cannot parse '%.*s' in the answer to '%s'", (int)(eol - p), p,
                                          cur->command);
                }
                p = next;
        }
        return 0;
}

/* The first line of debugfs's stderr that says something (not its banner). */
static const char *debugfs_error(const char *err, char *buf, size_t size)
{
        for (const char *p = err; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                if (*p != '\n' && strncmp(p, "debugfs ", 8) != 0)
                        return run_output_line(p, false, buf, size);
        return "no error message";
}

/* Runs debugfs once for every request not fetched yet: listings first,
 * file contents last (a NUL in a file ends what can be parsed). */
static int fetch(struct scan *s)
{
        static const char *const env[] = { "DEBUGFS_PAGER=__none__", "PAGER=__none__", NULL };
        const char *argv[] = { "debugfs", "-c", "-f", "-", s->device, NULL };
        _cleanup_free_ char *out = NULL, *err = NULL, *script = NULL;
        _cleanup_close_ int fd = -1;
        size_t len = 0;
        char line[512];
        FILE *f;
        int r;

        f = open_memstream(&script, &len);
        if (!f)
                return log_oom();
        for (int cat = 0; cat <= 1; cat++)
                for (size_t i = 0; i < s->n_requests; i++)
                        if (!s->requests[i]->fetched && s->requests[i]->is_cat == cat)
                                fprintf(f, "%s\n", s->requests[i]->command);
        if (fclose(f) != 0)
                return log_oom();

        fd = memfd_create("ingot-hygiene", MFD_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot create a memory file for the debugfs script: %m");
        if (write(fd, script, len) != (ssize_t)len || lseek(fd, 0, SEEK_SET) < 0)
                return log_error_errno(errno > 0 ? -errno : -EIO, "cannot write the debugfs script: %m");

        s->runs++;
        r = run_argv(argv, &(struct run_options){ .env = env, .stdin_fd = fd, .timeout_sec = DEBUGFS_TIMEOUT_SEC },
                     &out, &err);
        if (r == -ENOENT)
                return log_error_errno(r, "cannot run debugfs to read '%s': %m (install the package 'e2fsprogs')",
                                       s->image);
        if (r < 0)
                return log_error_errno(r, "cannot run debugfs to read '%s': %m", s->image);
        if (r > 0)
                return log_error_errno(-EIO, "debugfs cannot read the root filesystem of '%s' (partition %u): %s",
                                       s->image, s->partition, debugfs_error(err, line, sizeof(line)));

        r = parse_answers(s, out);
        if (r < 0)
                return log_oom();
        for (size_t i = 0; i < s->n_requests; i++)
                s->requests[i]->fetched = true;
        return 0;
}

static int finding_cmp(const void *a, const void *b)
{
        return strcmp(((const struct hygiene_finding *)a)->path, ((const struct hygiene_finding *)b)->path);
}

static int find_root(struct scan *s, uint64_t *ret_offset)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        const struct probe_partition *root = NULL;
        int r;

        r = probe_image(s->image, &img);
        if (r < 0)
                return r; /* logged */
        if (!streq_ptr(img->table, "gpt"))
                return log_error_errno(-ENXIO, "'%s' has no GPT, so no root partition to scan", s->image);
        for (size_t i = 0; i < img->n_partitions; i++)
                if (streq_ptr(img->partitions[i].role, "root")) {
                        if (!root)
                                root = &img->partitions[i];
                        else
                                log_debug("'%s': more than one root partition; scanning partition %u", s->image,
                                          root->number);
                }
        if (!root)
                return log_error_errno(-ENXIO,
                                       "'%s' has no root partition (no GPT partition of the x86-64 or arm64 root type)",
                                       s->image);
        s->partition = root->number;
        if (!root->fs.type)
                return log_error_errno(-EOPNOTSUPP,
                                       "the root partition %u of '%s' holds no filesystem libblkid knows; the hygiene "
                                       "scan reads ext4 only",
                                       root->number, s->image);
        if (!streq(root->fs.type, "ext4") && !streq(root->fs.type, "ext3") && !streq(root->fs.type, "ext2"))
                return log_error_errno(-EOPNOTSUPP,
                                       "the root partition %u of '%s' holds %s; the hygiene scan reads ext4 only",
                                       root->number, s->image, root->fs.type);
        *ret_offset = root->start;
        return 0;
}

int hygiene_scan(const char *image, struct hygiene_finding **ret, size_t *ret_n)
{
        _cleanup_(scan_done) struct scan s = { .image = image };
        const struct request *top;
        struct timespec t0, t1;
        uint64_t offset = 0;
        size_t n;
        int r;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        /* unix_io takes what follows the first '?' as its options */
        if (strchr(image, '?'))
                return log_error_errno(-EINVAL, "cannot scan '%s': debugfs cannot open a path with a '?'", image);
        r = find_root(&s, &offset);
        if (r < 0)
                return r;
        if (asprintf(&s.device, "%s?offset=%" PRIu64, image, offset) < 0) {
                s.device = NULL;
                return log_oom();
        }

        /* The top directory first: if it lists nothing, nothing was read. */
        r = want_listing(&s, "/", 0, &top);
        if (r >= 0)
                r = evaluate(&s);
        while (r >= 0 && s.pending) {
                if (s.runs > DEPTH_MAX + 4) {
                        r = -ELOOP;
                        break;
                }
                r = fetch(&s);
                if (r < 0)
                        return r; /* logged */
                top = find_request(&s, "/", false);
                if (!top || !listing_find(top, "."))
                        return log_error_errno(-EIO,
                                               "debugfs reads no top directory in the root filesystem of '%s' "
                                               "(partition %u)",
                                               image, s.partition);
                r = evaluate(&s);
        }
        if (r == -ELOOP)
                return log_error_errno(r,
                                       "the root filesystem of '%s' (partition %u) is nested deeper than %d "
                                       "directories; is it corrupt?",
                                       image, s.partition, DEPTH_MAX);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(r, "cannot scan the root filesystem of '%s' (partition %u): %m", image,
                                       s.partition);

        if (s.n_findings > 0)
                qsort(s.findings, s.n_findings, sizeof(*s.findings), finding_cmp);
        n = 0;
        for (size_t i = 0; i < s.n_findings; i++) {
                if (n > 0 && streq(s.findings[n - 1].path, s.findings[i].path)) {
                        free(s.findings[i].path);
                        free(s.findings[i].reason);
                        continue;
                }
                s.findings[n++] = s.findings[i];
        }
        s.n_findings = n;

        clock_gettime(CLOCK_MONOTONIC, &t1);
        log_debug("hygiene scan of '%s' (partition %u): %zu finding(s), %u debugfs run(s), %.2f s", image, s.partition,
                  n, s.runs, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        *ret = TAKE_PTR(s.findings);
        *ret_n = n;
        s.n_findings = 0;
        return (int)n;
}
