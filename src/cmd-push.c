/* ingot push: publishes a sealed raw image and its manifest to a store as
 * an AMI-style image. The image is checked against its manifest first; its
 * blocks go to the store once each (content-addressed, so a new version
 * sends only what changed); the record turns "available" last, after every
 * block it names is stored. A push that is interrupted leaves a "pending"
 * record at most, and running it again sends only what is still missing.
 *
 * qcow2 images are refused rather than converted: push reads blocks where
 * they lie with pread and skips holes, which a temporary raw copy of a
 * many-GiB image would only slow down; `qemu-img convert -O raw` is one
 * command away, and the manifest's digests are those of the raw bytes. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "catalog.h"
#include "cli.h"
#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/parse-util.h"
#include "shared/strv.h"
#include "lock.h"
#include "shared/proc-util.h"
#include "sign.h"
#include "spec.h"
#include "store.h"

/* Blocks read into memory per put_many batch: enough to keep every
 * connection of the backend busy (jobs, default 8) several times over,
 * while 64 x 1 MiB = 64 MiB stays small. */
#define PUSH_BATCH_MIN 64
/* Above this many blocks one listing of blocks/ is cheaper than a request
 * per block. */
#define PUSH_LIST_THRESHOLD 64

struct push_block {
        char key[CATALOG_BLOCK_KEY_MAX];
        size_t index; /* its first occurrence in the image */
        uint64_t bytes;
        bool present;
};

struct push_stats {
        size_t total;          /* distinct non-zero blocks */
        size_t zero;           /* zero blocks, not stored */
        size_t already_stored; /* found in the store before sending */
        size_t sent;
        uint64_t bytes_sent, bytes_skipped;
        double seconds;
};

struct progress {
        bool tty;
        size_t done_base, total;
        uint64_t bytes_base, skipped_bytes;
        size_t skipped;
        struct timespec start, last;
};

static double elapsed(const struct timespec *a, const struct timespec *b)
{
        return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress_print(struct progress *p, uint64_t bytes, size_t done, bool final)
{
        struct timespec now;
        double t;

        if (!p->tty)
                return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!final && elapsed(&p->last, &now) < 0.1)
                return;
        p->last = now;
        t = elapsed(&p->start, &now);
        fprintf(stderr, "\r\033[Kpush  %zu/%zu blocks  %.1f MiB sent  %zu skipped  %.1f MiB/s%s", done, p->total,
                (double)bytes / 1048576.0, p->skipped, t > 0 ? (double)bytes / 1048576.0 / t : 0.0, final ? "\n" : "");
        fflush(stderr);
}

static void on_progress(uint64_t bytes_done, size_t items_done, size_t items_total _unused_, void *userdata)
{
        struct progress *p = userdata;

        progress_print(p, p->bytes_base + bytes_done, p->done_base + p->skipped + items_done, false);
}

static int cmp_block_key(const void *a, const void *b)
{
        return strcmp(((const struct push_block *)a)->key, ((const struct push_block *)b)->key);
}

static int cmp_block_index(const void *a, const void *b)
{
        size_t x = ((const struct push_block *)a)->index, y = ((const struct push_block *)b)->index;
        return x < y ? -1 : x > y;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The distinct non-zero blocks of b, in image order. */
static int distinct_blocks(const struct catalog_blocklist *b, struct push_block **ret, size_t *ret_n)
{
        _cleanup_free_ struct push_block *l = NULL;
        size_t n = 0, w = 0;

        l = calloc(b->n_blocks ?: 1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_blocks; i++)
                if (!b->zero[i]) {
                        catalog_block_key(b->hashes[i], l[n].key);
                        l[n].index = i;
                        l[n++].bytes = catalog_blocklist_block_bytes(b, i);
                }
        /* qsort is not stable: keep the lowest index of equal keys */
        qsort(l, n, sizeof(*l), cmp_block_key);
        for (size_t i = 0; i < n; i++) {
                if (w > 0 && streq(l[w - 1].key, l[i].key)) {
                        if (l[i].index < l[w - 1].index)
                                l[w - 1] = l[i];
                        continue;
                }
                l[w++] = l[i];
        }
        qsort(l, w, sizeof(*l), cmp_block_index);
        *ret = TAKE_PTR(l);
        *ret_n = w;
        return 0;
}

/* Sets present on each of l that the store holds. */
static int check_present(struct store *s, struct push_block *l, size_t n)
{
        int r;

        if (n > PUSH_LIST_THRESHOLD) {
                _cleanup_strv_free_ char **keys = NULL;
                size_t nk;

                r = store_list(s, "blocks/", &keys, NULL);
                if (r < 0)
                        return r;
                nk = strv_length(keys);
                for (size_t i = 0; i < n; i++) {
                        const char *k = l[i].key;
                        l[i].present = nk > 0 && bsearch(&k, keys, nk, sizeof(char *), cmp_str);
                }
                return 0;
        }

        _cleanup_free_ struct store_item *items = calloc(n ?: 1, sizeof(*items));
        if (!items)
                return log_error_errno(-ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++)
                items[i].key = l[i].key;
        r = store_exists_many(s, items, n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                l[i].present = items[i].exists;
        return 0;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(off + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EIO;
                done += (size_t)k;
        }
        return 0;
}

/* Sends the blocks of l not present, in batches read with pread. Every
 * block is re-hashed as it is read: the image may not change under us. */
static int send_missing(struct store *s, struct store_lock *lock, int fd, const char *image, struct push_block *l,
                        size_t n, unsigned jobs, struct progress *p, struct push_stats *st)
{
        size_t batch = jobs * 2 > PUSH_BATCH_MIN ? jobs * 2 : PUSH_BATCH_MIN;
        _cleanup_free_ struct store_item *items = calloc(batch, sizeof(*items));
        _cleanup_free_ size_t *which = calloc(batch, sizeof(size_t));
        int r = 0;

        if (!items || !which)
                return log_error_errno(-ENOMEM, "out of memory");
        for (size_t i = 0; i < n;) {
                size_t m = 0;

                for (; i < n && m < batch; i++) {
                        uint8_t h[32];
                        char key[CATALOG_BLOCK_KEY_MAX];

                        if (l[i].present)
                                continue;
                        items[m] = (struct store_item){ .key = l[i].key, .size = (size_t)l[i].bytes };
                        items[m].data = malloc(items[m].size);
                        if (!items[m].data) {
                                r = log_error_errno(-ENOMEM, "out of memory");
                                goto out;
                        }
                        which[m++] = i;
                        r = pread_full(fd, items[m - 1].data, items[m - 1].size,
                                       (uint64_t)l[i].index * STORE_BLOCK_SIZE);
                        if (r < 0) {
                                log_error_errno(r, "cannot read '%s': %m", image);
                                goto out;
                        }
                        sha256_buffer(items[m - 1].data, items[m - 1].size, h);
                        if (!streq(catalog_block_key(h, key), l[i].key)) {
                                r = log_error_errno(-EIO, "'%s' changed while it was being pushed (block %zu)", image,
                                                    l[i].index);
                                goto out;
                        }
                }
                if (m == 0)
                        break;
                r = store_lock_refresh(lock);
                if (r < 0)
                        goto out;
                r = store_put_many(s, items, m, on_progress, p);
                for (size_t k = 0; k < m; k++) {
                        if (items[k].result == 0) {
                                l[which[k]].present = true;
                                st->sent++;
                                st->bytes_sent += items[k].size;
                        }
                        items[k].data = x_free(items[k].data);
                }
                p->done_base += m;
                p->bytes_base = st->bytes_sent;
                if (r < 0)
                        return r; /* the store named the block and said why */
                continue;
        out:
                for (size_t k = 0; k < m; k++)
                        items[k].data = x_free(items[k].data);
                return r;
        }
        return 0;
}

/* IMAGE.raw → IMAGE.manifest.json */
static char *default_manifest(const char *image)
{
        size_t n = strlen(image);
        char *m;

        if (n > 4 && streq(image + n - 4, ".raw"))
                n -= 4;
        else if (n > 6 && streq(image + n - 6, ".qcow2"))
                n -= 6;
        if (asprintf(&m, "%.*s.manifest.json", (int)n, image) < 0)
                return NULL;
        return m;
}

/* The Description= of the template the manifest names, when the installed
 * template is the very file that was built from (same SHA-256). */
static char *template_description(json_t *manifest)
{
        json_t *t = json_object_get(json_object_get(manifest, "inputs"), "template");
        const char *file = json_string_value(json_object_get(t, "file")),
                   *sha = json_string_value(json_object_get(t, "sha256"));
        _cleanup_free_ char *name = NULL, *path = NULL, *data = NULL;
        uint8_t h[32];
        char hex[65];
        size_t size, n;
        bool in_image = false;

        if (!file || !sha || strchr(file, '/'))
                return NULL;
        n = strlen(file);
        name = strndup(file, n > 5 && streq(file + n - 5, ".conf") ? n - 5 : n);
        if (!name || spec_resolve_input(name, "templates", ".conf", &path) < 0)
                return NULL;
        if (read_full_file(path, 1 << 20, &data, &size) < 0)
                return NULL;
        sha256_buffer(data, size, h);
        if (!streq(hex_encode(h, 32, hex), sha))
                return NULL;
        for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
                line += strspn(line, " \t");
                if (*line == '[')
                        in_image = strncmp(line, "[Image]", 7) == 0;
                else if (in_image && strncmp(line, "Description=", 12) == 0 && line[12])
                        return strdup(line + 12);
        }
        return NULL;
}

static bool is_qcow2(int fd)
{
        uint8_t magic[4];

        return pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) && memcmp(magic, "QFI\xfb", 4) == 0;
}

/* The image against its manifest, as ingot verify does: every digest. */
static int verify_image(const char *image, const struct seal_manifest *m)
{
        _cleanup_(seal_digest_freep) struct seal_digest *actual = NULL;
        uint64_t start, end;
        size_t region;
        int r;

        r = seal_digest_new_like(m->digest, &actual);
        if (r < 0)
                return log_error_errno(r, "out of memory");
        r = seal_digest_compute(actual, image);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", image);
        if (seal_digest_first_difference(m->digest, actual, &region, &start, &end) > 0 ||
            memcmp(m->digest->digest, actual->digest, 32) != 0) {
                const struct seal_region *g = &m->digest->regions[region];
                if (g->number == 0)
                        return log_error_errno(-EBADMSG,
                                               "'%s' does not match its manifest: the partition table differs at "
                                               "bytes %llu-%llu; refusing to push",
                                               image, (unsigned long long)start, (unsigned long long)end);
                return log_error_errno(-EBADMSG,
                                       "'%s' does not match its manifest: partition %u '%s' differs at bytes "
                                       "%llu-%llu; refusing to push",
                                       image, g->number, g->name, (unsigned long long)start, (unsigned long long)end);
        }
        return 0;
}

static int print_result(const struct cli_context *ctx, const struct catalog_record *rec, const char *state,
                        const struct push_stats *st, bool already, const char *channel, const char *channel_id)
{
        if (ctx->json) {
                json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:f}", "image_id",
                                      rec->image_id, "name", rec->name, "version", rec->version, "state", state,
                                      "already_available", already, "blocks_total", json_u64(st->total), "blocks_zero",
                                      json_u64(st->zero), "blocks_already_stored", json_u64(st->already_stored),
                                      "blocks_sent", json_u64(st->sent), "bytes_sent", json_u64(st->bytes_sent),
                                      "bytes_skipped", json_u64(st->bytes_skipped), "channel",
                                      json_str_or_null(channel), "seconds", st->seconds);
                if (!j)
                        return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
                if (channel_id)
                        json_object_set_new(j, "channel_image_id", json_string(channel_id));
                int r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(4));
                json_decref(j);
                if (r < 0)
                        return log_error_errno(-EIO, "cannot write the result"), EXIT_FAILURE_RUN;
                putchar('\n');
        } else
                printf("%s\n", rec->image_id);
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the result: %m"), EXIT_FAILURE_RUN;
        return EXIT_OK;
}

static void log_summary(const struct catalog_record *rec, const struct push_stats *st)
{
        log_info("%s %s@%s: blocks: %zu total, %zu already stored, %zu sent, %zu zero (not stored); "
                 "%.1f MiB sent in %.1fs (%.1f MiB/s)",
                 rec->image_id, rec->name, rec->version, st->total, st->already_stored, st->sent, st->zero,
                 (double)st->bytes_sent / 1048576.0, st->seconds,
                 st->seconds > 0 ? (double)st->bytes_sent / 1048576.0 / st->seconds : 0.0);
}

int cmd_push(int argc, char **argv, const struct cli_context *ctx)
{
        enum { ARG_MANIFEST = 0x100, ARG_CHANNEL, ARG_TAG, ARG_DESCRIPTION, ARG_STORE, ARG_INSECURE, ARG_JOBS };
        static const struct option options[] = { { "manifest", required_argument, NULL, ARG_MANIFEST },
                                                 { "channel", required_argument, NULL, ARG_CHANNEL },
                                                 { "tag", required_argument, NULL, ARG_TAG },
                                                 { "description", required_argument, NULL, ARG_DESCRIPTION },
                                                 { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 { "jobs", required_argument, NULL, ARG_JOBS },
                                                 {} };
        _cleanup_free_ char *manifest_default = NULL, *mdata = NULL, *sig = NULL, *sig_path = NULL, *error = NULL,
                            *list_text = NULL, *blkey = NULL, *description = NULL, *winner = NULL;
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *bl = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL, *old = NULL;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(store_lock_releasep) struct store_lock *lock = NULL;
        _cleanup_strv_free_ char **tags = NULL;
        _cleanup_free_ struct push_block *blocks = NULL;
        _cleanup_close_ int fd = -1;
        const char *image, *manifest = NULL, *channel = NULL, *store_arg = NULL, *arch, *mode;
        struct progress prog = { .tty = isatty(STDERR_FILENO) && log_get_level() >= LOG_LEVEL_NORMAL };
        struct push_stats st = {};
        struct timespec t0, t1;
        bool insecure = false, existed = false;
        unsigned jobs = 0;
        size_t msize, sig_size, n_blocks = 0;
        json_t *mj;
        json_error_t je;
        uint8_t h[32];
        char hex[65], id[CATALOG_ID_MAX], snap[CATALOG_ID_MAX];
        struct stat stt;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                const char *why = NULL;
                uint64_t v;

                switch (c) {
                case ARG_MANIFEST:
                        manifest = optarg;
                        break;
                case ARG_CHANNEL:
                        if (!catalog_word_is_valid(optarg))
                                return cli_usage_error("push", "'%s' is not a channel name ([A-Za-z0-9._-])", optarg);
                        channel = optarg;
                        break;
                case ARG_TAG:
                        r = catalog_tag_add(&tags, optarg, &why);
                        if (r == -ENOMEM)
                                return log_error_errno(r, "out of memory"), EXIT_FAILURE_RUN;
                        if (r < 0)
                                return cli_usage_error("push", "bad --tag '%s': %s", optarg, why);
                        break;
                case ARG_DESCRIPTION:
                        description = strdup(optarg);
                        if (!description)
                                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
                        break;
                case ARG_STORE:
                        store_arg = optarg;
                        break;
                case ARG_INSECURE:
                        insecure = true;
                        break;
                case ARG_JOBS:
                        if (parse_uint64(optarg, &v) < 0 || v < 1 || v > 256)
                                return cli_usage_error("push", "--jobs needs a number from 1 to 256, not '%s'", optarg);
                        jobs = (unsigned)v;
                        break;
                case ':':
                        return cli_usage_error("push", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("push", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("push", argc - optind);
        if (r != 0)
                return r;
        image = argv[optind];
        clock_gettime(CLOCK_MONOTONIC, &t0);

        /* the inputs: an image, its manifest, maybe a signature */
        fd = open(image, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot read the image '%s': %m", image), EXIT_USAGE;
        if (fstat(fd, &stt) < 0 || !S_ISREG(stt.st_mode))
                return log_error("cannot read the image '%s': not a regular file", image), EXIT_USAGE;
        if (is_qcow2(fd))
                return log_error("'%s' is a qcow2 image: push takes raw images; convert it with "
                                 "'qemu-img convert -O raw %s IMAGE.raw' and push that with --manifest",
                                 image, image),
                       EXIT_USAGE;
        if (!manifest) {
                manifest = manifest_default = default_manifest(image);
                if (!manifest)
                        return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        }
        r = read_full_file(manifest, SEAL_MANIFEST_MAX, &mdata, &msize);
        if (r < 0)
                return log_error_errno(r, "cannot read the manifest '%s': %m", manifest), EXIT_USAGE;
        r = seal_manifest_parse(mdata, msize, &m, &error);
        if (r == -EBADMSG)
                return log_error("'%s' is not a valid manifest: %s", manifest, strna(error)), EXIT_USAGE;
        if (r < 0)
                return log_error_errno(r, "cannot read the manifest '%s': %m", manifest), EXIT_FAILURE_RUN;
        if (!catalog_word_is_valid(m->name) || !catalog_word_is_valid(m->version))
                return log_error("'%s': name '%s' or version '%s' cannot be published ([A-Za-z0-9._-])", manifest,
                                 m->name, m->version),
                       EXIT_USAGE;
        mj = json_loadb(mdata, msize, 0, &je);
        if (!mj)
                return log_error("'%s' is not a valid manifest: %s", manifest, je.text), EXIT_USAGE;
        arch = catalog_architecture_from_manifest(json_string_value(json_object_get(mj, "architecture")));
        mode = catalog_boot_mode_from_manifest(json_object_get(mj, "boot_modes"));
        if (!arch) {
                log_error("'%s': architecture '%s' has no EC2 name (x86_64 or arm64)", manifest,
                          strna(json_string_value(json_object_get(mj, "architecture"))));
                json_decref(mj);
                return EXIT_USAGE;
        }
        if ((uint64_t)stt.st_size != m->digest->size) {
                json_decref(mj);
                return log_error("'%s' is %llu bytes, its manifest says %llu: refusing to push", image,
                                 (unsigned long long)stt.st_size, (unsigned long long)m->digest->size),
                       EXIT_FAILURE_RUN;
        }
        if (asprintf(&sig_path, "%s%s", manifest, SIGN_SIG_SUFFIX) < 0) {
                json_decref(mj);
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        }
        r = read_full_file(sig_path, 4096, &sig, &sig_size);
        if (r < 0 && r != -ENOENT) {
                json_decref(mj);
                return log_error_errno(r, "cannot read the signature '%s': %m", sig_path), EXIT_USAGE;
        }

        /* the record, before anything is sent */
        rec = calloc(1, sizeof(*rec));
        if (!rec) {
                json_decref(mj);
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        }
        rec->manifest = mj;
        hex_encode(m->digest->digest, 32, hex);
        catalog_image_id(m->name, m->version, hex, id);
        catalog_snapshot_id(m->name, m->version, hex, snap);
        sha256_buffer(mdata, msize, h);
        rec->image_id = strdup(id);
        rec->snapshot_id = strdup(snap);
        rec->name = strdup(m->name);
        rec->version = strdup(m->version);
        rec->digest = strdup(hex);
        rec->manifest_sha256 = strdup(hex_encode(h, 32, hex));
        rec->architecture = strdup(arch);
        rec->boot_mode = mode ? strdup(mode) : NULL;
        rec->description = description ? TAKE_PTR(description) : template_description(mj);
        if (!rec->description && asprintf(&rec->description, "%s %s", m->name, m->version) < 0)
                rec->description = NULL;
        rec->tags = TAKE_PTR(tags);
        rec->signature = TAKE_PTR(sig);
        rec->verity_root_hash = m->verity_root_hash ? strdup(m->verity_root_hash) : NULL;
        /* the build writes them into /etc/os-release from the same fields */
        rec->os_image_id = strdup(m->name);
        rec->os_image_version = strdup(m->version);
        rec->size = m->digest->size;
        rec->volume_size_gib = (rec->size + (UINT64_C(1) << 30) - 1) >> 30 ?: 1;
        rec->block_size = STORE_BLOCK_SIZE;
        rec->deprecation_ms = -1;
        if (asprintf(&rec->block_list, "blocklists/%s.json", id) < 0)
                rec->block_list = NULL;
        if (!rec->image_id || !rec->snapshot_id || !rec->name || !rec->version || !rec->digest ||
            !rec->manifest_sha256 || !rec->architecture || !rec->description || !rec->block_list || !rec->os_image_id ||
            !rec->os_image_version || (m->verity_root_hash && !rec->verity_root_hash))
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        if (channel && strv_extend(&rec->channels, channel) < 0)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;

        /* nothing goes out that does not match the manifest */
        r = verify_image(image, m);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        r = catalog_blocklist_compute(fd, rec->size, &bl);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", image), EXIT_FAILURE_RUN;
        r = distinct_blocks(bl, &blocks, &n_blocks);
        if (r < 0)
                return log_error_errno(r, "out of memory"), EXIT_FAILURE_RUN;
        st.total = n_blocks;
        for (size_t i = 0; i < bl->n_blocks; i++)
                st.zero += bl->zero[i];
        rec->blocks_stored = n_blocks;
        {
                json_t *j = catalog_blocklist_to_json(bl);
                list_text = j ? catalog_json_format(j) : NULL;
                json_decref(j);
                if (!list_text)
                        return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
                sha256_buffer(list_text, strlen(list_text), h);
                rec->block_list_sha256 = strdup(hex_encode(h, 32, hex));
                if (!rec->block_list_sha256)
                        return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        }

        r = catalog_store_open(store_arg, insecure, jobs, &s);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;

        /* gc deletes nothing while we hold this (lock.h): what we find
         * stored stays stored until the record that names it is written */
        r = store_lock_take(s, STORE_LOCK_SHARED, "push", &lock);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        test_point("push-locked");

        /* versions are immutable: the same bytes again are a no-op */
        r = catalog_claim_name(s, rec);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        existed = r > 0;
        test_point("push-claimed");
        r = existed ? catalog_record_load(s, rec->image_id, &old) : -ENOENT;
        if (r < 0 && r != -ENOENT)
                return EXIT_FAILURE_RUN;
        if (old && old->state == CATALOG_STATE_DEREGISTERED)
                return log_error("%s@%s was deregistered as %s: versions are immutable, push it as a new version",
                                 rec->name, rec->version, rec->image_id),
                       EXIT_FAILURE_RUN;
        if (old && old->state == CATALOG_STATE_AVAILABLE) {
                st.already_stored = st.total;
                for (size_t i = 0; i < n_blocks; i++)
                        st.bytes_skipped += blocks[i].bytes;
                log_info("%s@%s is already available as %s: nothing sent", rec->name, rec->version, rec->image_id);
                lock = store_lock_release(lock);
                if (channel) {
                        r = catalog_promote(s, old, channel, &winner, NULL);
                        if (r < 0 && r != -ESTALE)
                                return EXIT_FAILURE_RUN;
                }
                clock_gettime(CLOCK_MONOTONIC, &t1);
                st.seconds = elapsed(&t0, &t1);
                log_summary(old, &st);
                return print_result(ctx, old, catalog_record_state_string(old, catalog_now_ms()), &st, true, channel,
                                    winner);
        }

        /* the block list and a pending record first, so gc keeps the
         * blocks while they are sent; the record turns available last */
        if (asprintf(&blkey, "blocklists/%s.json", rec->image_id) < 0)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        r = store_put(s, blkey, list_text, strlen(list_text));
        if (r < 0)
                return EXIT_FAILURE_RUN;
        rec->state = CATALOG_STATE_PENDING;
        rec->creation_ms = catalog_now_ms();
        r = catalog_record_save(s, rec);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        test_point("push-pending");

        r = check_present(s, blocks, n_blocks);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        for (size_t i = 0; i < n_blocks; i++)
                if (blocks[i].present) {
                        st.already_stored++;
                        st.bytes_skipped += blocks[i].bytes;
                }
        prog.total = n_blocks;
        prog.skipped = st.already_stored;
        clock_gettime(CLOCK_MONOTONIC, &prog.start);
        prog.last = (struct timespec){};
        r = send_missing(s, lock, fd, image, blocks, n_blocks, jobs ?: 8, &prog, &st);
        if (r < 0) {
                if (prog.tty)
                        fputc('\n', stderr);
                return EXIT_FAILURE_RUN;
        }
        progress_print(&prog, st.bytes_sent, st.already_stored + st.sent, true);

        /* every block the record names must be there before it turns
         * available: look again (a gc running beside us could have taken
         * a block we found), and send what went missing */
        for (size_t i = 0; i < n_blocks; i++)
                blocks[i].present = false;
        r = check_present(s, blocks, n_blocks);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        for (size_t i = 0; i < n_blocks; i++)
                if (!blocks[i].present) {
                        log_warning("block %s vanished from the store during the push; sending it again",
                                    blocks[i].key);
                        r = send_missing(s, lock, fd, image, blocks, n_blocks, jobs ?: 8, &prog, &st);
                        if (r < 0)
                                return EXIT_FAILURE_RUN;
                        break;
                }

        /* the name is still ours (a store that ignores conditional
         * writes could have let another push take it), and the lock too */
        r = catalog_name_check(s, rec);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        r = store_lock_refresh(lock);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        test_point("push-checked");
        rec->state = CATALOG_STATE_AVAILABLE;
        r = catalog_record_save(s, rec);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        lock = store_lock_release(lock);
        if (channel) {
                r = catalog_promote(s, rec, channel, &winner, NULL);
                if (r < 0 && r != -ESTALE)
                        return EXIT_FAILURE_RUN;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        st.seconds = elapsed(&t0, &t1);
        log_summary(rec, &st);
        if (winner && !streq(winner, rec->image_id))
                log_warning("channel '%s' of '%s' was promoted to %s at the same time, which won", channel, rec->name,
                            winner);
        return print_result(ctx, rec, "available", &st, false, channel, winner);
}
