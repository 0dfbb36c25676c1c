/* ingot pull and ingot gc: the verbs that move or free blocks.
 *
 * pull rebuilds an image from the store into a sparse raw file (in the
 * local cache, or -o), checking every block's SHA-256 as it arrives and
 * the whole image against its manifest before the file gets its final
 * name; a corrupt block is named and nothing finished is left behind.
 *
 * gc deletes blocks and block lists no live record (pending or available,
 * deprecated included) references, and only those older than a grace
 * period, so a push that is writing its pending record right now keeps
 * the blocks it just sent. */
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
#include "sign.h"
#include "store.h"

/* Blocks fetched per get_many batch: 64 x 1 MiB in memory at most. */
#define PULL_BATCH 64
#define GC_GRACE_DEFAULT 3600

enum { ARG_STORE = 0x100, ARG_INSECURE, ARG_JOBS, ARG_DRY_RUN, ARG_GRACE };

static int print_json(json_t *j)
{
        int r;

        if (!j)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        json_decref(j);
        if (r < 0)
                return log_error_errno(-EIO, "cannot write the result"), EXIT_FAILURE_RUN;
        putchar('\n');
        return 0;
}

static int finish_output(int code)
{
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the result: %m"), EXIT_FAILURE_RUN;
        return code;
}

/* PATH.raw → PATH.manifest.json */
static char *manifest_beside(const char *image)
{
        size_t n = strlen(image);
        char *m;

        if (n > 4 && streq(image + n - 4, ".raw"))
                n -= 4;
        if (asprintf(&m, "%.*s.manifest.json", (int)n, image) < 0)
                return NULL;
        return m;
}

static int cache_path(const char *id, char **ret)
{
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        _cleanup_free_ char *dir = NULL;
        int r;

        if (xdg && *xdg == '/')
                r = asprintf(&dir, "%s/ingot/images", xdg);
        else if (home && *home == '/')
                r = asprintf(&dir, "%s/.cache/ingot/images", home);
        else
                return log_error_errno(-ENXIO, "no cache directory: set -o, $XDG_CACHE_HOME or $HOME");
        if (r < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = mkdir_p(dir, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot create the cache directory '%s': %m", dir);
        if (asprintf(ret, "%s/%s.raw", dir, id) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        return 0;
}

static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = pwrite(fd, (const uint8_t *)buf + done, n - done, (off_t)(off + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                done += (size_t)k;
        }
        return 0;
}

/* True when path already holds what we would write. */
static bool file_equals(const char *path, const char *data, size_t size)
{
        _cleanup_free_ char *cur = NULL;
        size_t n;

        return read_full_file(path, size + 1, &cur, &n) >= 0 && n == size && memcmp(cur, data, size) == 0;
}

/* The block list the record names, checked against the record's hash. */
static int load_blocklist(struct store *s, const struct catalog_record *rec, struct catalog_blocklist **ret)
{
        _cleanup_free_ char *data = NULL, *error = NULL;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
        uint8_t h[32];
        char hex[65];
        size_t size;
        int r;

        r = store_get(s, rec->block_list, &data, &size);
        if (r == -ENOENT)
                return log_error_errno(r, "%s: its block list '%s' is missing from the store", rec->image_id,
                                       rec->block_list);
        if (r < 0)
                return r;
        sha256_buffer(data, size, h);
        if (!streq(hex_encode(h, 32, hex), rec->block_list_sha256))
                return log_error_errno(-EBADMSG, "%s: its block list '%s' is corrupt in the store", rec->image_id,
                                       rec->block_list);
        r = catalog_blocklist_from_json(data, size, &b, &error);
        if (r < 0)
                return log_error_errno(-EBADMSG, "%s: '%s' is not a valid block list: %s", rec->image_id,
                                       rec->block_list, strna(error));
        if (b->size != rec->size)
                return log_error_errno(-EBADMSG, "%s: the block list is for %llu bytes, the record says %llu",
                                       rec->image_id, (unsigned long long)b->size, (unsigned long long)rec->size);
        *ret = TAKE_PTR(b);
        return 0;
}

/* Fetches every stored block of b into fd, checking each one's hash. */
static int fetch_blocks(struct store *s, const struct catalog_blocklist *b, int fd, uint64_t *ret_bytes,
                        size_t *ret_blocks)
{
        struct store_item items[PULL_BATCH];
        char keys[PULL_BATCH][CATALOG_BLOCK_KEY_MAX];
        size_t which[PULL_BATCH];
        uint64_t bytes = 0;
        size_t fetched = 0;
        int r = 0;

        for (size_t i = 0; i < b->n_blocks && r >= 0;) {
                size_t m = 0;

                for (; i < b->n_blocks && m < PULL_BATCH; i++) {
                        if (b->zero[i])
                                continue; /* a hole: ftruncate made it */
                        items[m] = (struct store_item){ .key = catalog_block_key(b->hashes[i], keys[m]) };
                        which[m++] = i;
                }
                if (m == 0)
                        break;
                (void)store_get_many(s, items, m, NULL, NULL);
                for (size_t k = 0; k < m; k++) {
                        size_t bi = which[k];
                        uint8_t h[32];

                        if (r >= 0 && items[k].result == -ENOENT)
                                r = log_error_errno(-ENOENT, "block %zu (%s) is missing from the store", bi,
                                                    items[k].key);
                        else if (r >= 0 && items[k].result < 0)
                                r = items[k].result; /* the store said why */
                        else if (r >= 0) {
                                sha256_buffer(items[k].data, items[k].size, h);
                                if (items[k].size != catalog_blocklist_block_bytes(b, bi) ||
                                    memcmp(h, b->hashes[bi], 32) != 0)
                                        r = log_error_errno(-EBADMSG, "block %zu (%s) is corrupt in the store", bi,
                                                            items[k].key);
                                else {
                                        r = pwrite_full(fd, items[k].data, items[k].size, (uint64_t)bi * b->block_size);
                                        if (r < 0)
                                                log_error_errno(r, "cannot write the image: %m");
                                        bytes += items[k].size;
                                        fetched++;
                                }
                        }
                        free(items[k].data);
                }
        }
        if (r < 0)
                return r;
        *ret_bytes = bytes;
        *ret_blocks = fetched;
        return 0;
}

static int verify_pulled(const char *path, const char *manifest_text, const char *id)
{
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        _cleanup_(seal_digest_freep) struct seal_digest *actual = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        r = seal_manifest_parse(manifest_text, strlen(manifest_text), &m, &error);
        if (r < 0)
                return log_error_errno(-EBADMSG, "%s: the manifest in its record is not valid: %s", id, strna(error));
        r = seal_digest_new_like(m->digest, &actual);
        if (r < 0)
                return log_error_errno(r, "out of memory");
        r = seal_digest_compute(actual, path);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", path);
        if (memcmp(actual->digest, m->digest->digest, 32) != 0)
                return log_error_errno(-EBADMSG, "%s: the pulled image does not match its manifest's digest", id);
        return 0;
}

int cmd_pull(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "output", required_argument, NULL, 'o' },
                                                 { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 { "jobs", required_argument, NULL, ARG_JOBS },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *bl = NULL;
        _cleanup_free_ char *path = NULL, *manifest = NULL, *sig_path = NULL, *partial = NULL, *mtext = NULL;
        _cleanup_close_ int fd = -1;
        const char *out = NULL, *store_arg = NULL;
        bool insecure = false, cached = false, sig_ok;
        unsigned jobs = 0;
        uint64_t bytes = 0;
        size_t blocks = 0;
        struct timespec t0, t1;
        struct stat st;
        uint8_t h[32];
        char hex[65];
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":o:", options, NULL)) >= 0) {
                uint64_t v;

                switch (c) {
                case 'o':
                        out = optarg;
                        break;
                case ARG_STORE:
                        store_arg = optarg;
                        break;
                case ARG_INSECURE:
                        insecure = true;
                        break;
                case ARG_JOBS:
                        if (parse_uint64(optarg, &v) < 0 || v < 1 || v > 256)
                                return cli_usage_error("pull", "--jobs needs a number from 1 to 256, not '%s'", optarg);
                        jobs = (unsigned)v;
                        break;
                case ':':
                        return cli_usage_error("pull", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("pull", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("pull", argc - optind);
        if (r != 0)
                return r;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = catalog_store_open(store_arg, insecure, jobs, &s);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
        r = catalog_resolve(s, argv[optind], &rec);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
        if (rec->state == CATALOG_STATE_DEREGISTERED)
                return log_error("%s (%s@%s) is deregistered: refusing to pull it", rec->image_id, rec->name,
                                 rec->version),
                       EXIT_FAILURE_RUN;
        if (rec->state == CATALOG_STATE_PENDING)
                return log_error("%s (%s@%s) is still pending: its push has not finished", rec->image_id, rec->name,
                                 rec->version),
                       EXIT_FAILURE_RUN;
        if (!rec->manifest)
                return log_error("%s: its record carries no manifest", rec->image_id), EXIT_FAILURE_RUN;
        if (streq(catalog_record_state_string(rec, catalog_now_ms()), "deprecated"))
                log_warning("%s (%s@%s) is deprecated", rec->image_id, rec->name, rec->version);

        if (out)
                path = strdup(out);
        else {
                r = cache_path(rec->image_id, &path);
                if (r < 0)
                        return EXIT_FAILURE_RUN;
        }
        manifest = path ? manifest_beside(path) : NULL;
        if (!path || !manifest || asprintf(&sig_path, "%s%s", manifest, SIGN_SIG_SUFFIX) < 0 ||
            asprintf(&partial, "%s.partial", path) < 0)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;

        /* the manifest's exact bytes, as the build wrote them: the
         * signature is over those */
        mtext = catalog_json_format(rec->manifest);
        if (!mtext)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        sha256_buffer(mtext, strlen(mtext), h);
        sig_ok = rec->signature && streq_ptr(hex_encode(h, 32, hex), rec->manifest_sha256);
        if (rec->signature && !sig_ok)
                log_warning("%s: the manifest was not written by ingot's formatter; its signature is left out",
                            rec->image_id);

        /* a finished pull is renamed into place only once verified */
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == rec->size &&
            file_equals(manifest, mtext, strlen(mtext)))
                cached = true;
        else {
                r = load_blocklist(s, rec, &bl);
                if (r < 0)
                        return EXIT_FAILURE_RUN;
                fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0)
                        return log_error_errno(-errno, "cannot create '%s': %m", partial), EXIT_FAILURE_RUN;
                if (ftruncate(fd, (off_t)rec->size) < 0) {
                        r = log_error_errno(-errno, "cannot size '%s': %m", partial);
                        goto fail;
                }
                r = fetch_blocks(s, bl, fd, &bytes, &blocks);
                if (r < 0)
                        goto fail;
                if (fsync(fd) < 0) {
                        r = log_error_errno(-errno, "cannot write '%s': %m", partial);
                        goto fail;
                }
                fd = (close(fd), -1);

                r = write_file_atomic(manifest, mtext, strlen(mtext), 0644);
                if (r < 0) {
                        log_error_errno(r, "cannot write '%s': %m", manifest);
                        goto fail;
                }
                if (sig_ok)
                        r = write_file_atomic(sig_path, rec->signature, strlen(rec->signature), 0644);
                else if (unlink(sig_path) < 0 && errno != ENOENT)
                        r = -errno;
                if (r < 0) {
                        log_error_errno(r, "cannot write '%s': %m", sig_path);
                        goto fail;
                }
                r = verify_pulled(partial, mtext, rec->image_id);
                if (r < 0)
                        goto fail;
                if (rename(partial, path) < 0) {
                        r = log_error_errno(-errno, "cannot rename '%s' to '%s': %m", partial, path);
                        goto fail;
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (cached)
                log_info("%s is already pulled to '%s'", rec->image_id, path);
        else
                log_info("pulled %s (%s@%s): %zu blocks, %.1f MiB in %.1fs", rec->image_id, rec->name, rec->version,
                         blocks, (double)bytes / 1048576.0,
                         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        if (ctx->json)
                return finish_output(print_json(
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:o, s:o}", "image_id", rec->image_id, "name",
                                  rec->name, "version", rec->version, "path", path, "manifest", manifest, "signature",
                                  json_str_or_null(sig_ok ? sig_path : NULL), "cached", cached, "blocks_fetched",
                                  json_u64(blocks), "bytes_fetched", json_u64(bytes))));
        printf("%s\n", path);
        return finish_output(EXIT_OK);

fail:
        unlink(partial);
        return EXIT_FAILURE_RUN;
}

static bool strv_sorted_has(char *const *l, size_t n, const char *s)
{
        for (size_t lo = 0, hi = n; lo < hi;) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(l[mid], s);
                if (c == 0)
                        return true;
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return false;
}

int cmd_gc(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "dry-run", no_argument, NULL, 'n' },
                                                 { "grace", required_argument, NULL, ARG_GRACE },
                                                 { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_gc_plan_done) struct catalog_gc_plan p = {}, again = {};
        const char *store_arg = NULL;
        bool insecure = false, dry_run = false;
        uint64_t grace = GC_GRACE_DEFAULT, bytes = 0;
        size_t n_blocks = 0, n_lists = 0, n_again;
        int64_t now;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":n", options, NULL)) >= 0) {
                switch (c) {
                case 'n':
                        dry_run = true;
                        break;
                case ARG_GRACE:
                        if (parse_uint64(optarg, &grace) < 0)
                                return cli_usage_error("gc", "--grace needs a number of seconds, not '%s'", optarg);
                        break;
                case ARG_STORE:
                        store_arg = optarg;
                        break;
                case ARG_INSECURE:
                        insecure = true;
                        break;
                case ':':
                        return cli_usage_error("gc", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("gc", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("gc", argc - optind);
        if (r != 0)
                return r;
        r = catalog_store_open(store_arg, insecure, 0, &s);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
        now = catalog_now_ms() / 1000;
        r = catalog_gc_plan(s, now, grace, &p);
        if (r < 0)
                return EXIT_FAILURE_RUN;

        if (!dry_run && p.delete) {
                /* a push may have written its pending record since we
                 * read the records: plan again and delete only what both
                 * plans agree on (the window left is the deletion itself,
                 * which the push's final presence check covers) */
                r = catalog_gc_plan(s, now, grace, &again);
                if (r < 0)
                        return EXIT_FAILURE_RUN;
                n_again = strv_length(again.delete);
                STRV_FOREACH (k, p.delete) {
                        if (!strv_sorted_has(again.delete, n_again, *k))
                                continue;
                        r = store_remove(s, *k);
                        if (r < 0)
                                return EXIT_FAILURE_RUN;
                        if (strncmp(*k, "blocks/", 7) == 0)
                                n_blocks++;
                        else
                                n_lists++;
                }
                bytes = n_blocks == p.n_blocks ? p.bytes : again.bytes;
        } else {
                n_blocks = p.n_blocks;
                n_lists = p.n_blocklists;
                bytes = p.bytes;
                if (dry_run && !ctx->json)
                        STRV_FOREACH (k, p.delete)
                                printf("would delete %s\n", *k);
        }
        log_info("gc%s: %s %zu blocks (%.1f MiB) and %zu block lists; %zu live images, %zu deregistered; "
                 "%zu unreferenced blocks younger than %llus kept",
                 dry_run ? " (dry run)" : "", dry_run ? "would delete" : "deleted", n_blocks, (double)bytes / 1048576.0,
                 n_lists, p.n_live_records, p.n_dead_records, p.n_kept_young, (unsigned long long)grace);
        if (ctx->json) {
                json_t *j = json_pack("{s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "dry_run", dry_run, "blocks_deleted",
                                      json_u64(n_blocks), "blocklists_deleted", json_u64(n_lists), "bytes_deleted",
                                      json_u64(bytes), "live_images", json_u64(p.n_live_records), "deregistered_images",
                                      json_u64(p.n_dead_records), "kept_young", json_u64(p.n_kept_young), "keys",
                                      json_strv(p.delete));
                return finish_output(print_json(j));
        }
        return finish_output(EXIT_OK);
}
