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
#include "pull.h"
#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/parse-util.h"
#include "shared/strv.h"
#include "sign.h"
#include "store.h"

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

int cmd_pull(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "output", required_argument, NULL, 'o' },
                                                 { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 { "jobs", required_argument, NULL, ARG_JOBS },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_free_ char *path = NULL, *manifest = NULL, *sig_path = NULL;
        const char *out = NULL, *store_arg = NULL;
        bool insecure = false;
        unsigned jobs = 0;
        struct image_pull_stats st;
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
        r = catalog_store_open(store_arg, insecure, jobs, &s);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
        r = catalog_resolve(s, argv[optind], &rec);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
        r = image_pull(s, rec, out, &path, &manifest, &sig_path, &st);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        if (st.cached)
                log_info("%s is already pulled to '%s'", rec->image_id, path);
        else
                log_info("pulled %s (%s@%s): %zu blocks, %.1f MiB in %.1fs", rec->image_id, rec->name, rec->version,
                         st.blocks, (double)st.bytes / 1048576.0, st.seconds);
        if (ctx->json)
                return finish_output(print_json(
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:o, s:o}", "image_id", rec->image_id, "name",
                                  rec->name, "version", rec->version, "path", path, "manifest", manifest, "signature",
                                  json_str_or_null(sig_path), "cached", st.cached, "blocks_fetched",
                                  json_u64(st.blocks), "bytes_fetched", json_u64(st.bytes))));
        printf("%s\n", path);
        return finish_output(EXIT_OK);
}

int cmd_gc(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "dry-run", no_argument, NULL, 'n' },
                                                 { "grace", required_argument, NULL, ARG_GRACE },
                                                 { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_gc_plan_done) struct catalog_gc_plan p = {};
        struct catalog_gc_result res = {};
        const char *store_arg = NULL;
        bool insecure = false, dry_run = false;
        uint64_t grace = GC_GRACE_DEFAULT;
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
        r = catalog_gc(s, grace, dry_run, &p, &res);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        if (dry_run && !ctx->json)
                STRV_FOREACH (k, p.delete)
                        printf("would delete %s\n", *k);
        log_info("gc%s: %s %zu blocks (%.1f MiB) and %zu block lists; %zu live images, %zu deregistered; "
                 "%zu unreferenced blocks younger than %llus kept; %zu leftovers of killed writers removed",
                 dry_run ? " (dry run)" : "", dry_run ? "would delete" : "deleted", res.n_blocks,
                 (double)res.bytes / 1048576.0, res.n_blocklists, p.n_live_records, p.n_dead_records, p.n_kept_young,
                 (unsigned long long)grace, res.n_temporaries);
        if (ctx->json) {
                json_t *j = json_pack("{s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "dry_run", dry_run,
                                      "blocks_deleted", json_u64(res.n_blocks), "blocklists_deleted",
                                      json_u64(res.n_blocklists), "bytes_deleted", json_u64(res.bytes), "live_images",
                                      json_u64(p.n_live_records), "deregistered_images", json_u64(p.n_dead_records),
                                      "kept_young", json_u64(p.n_kept_young), "temporaries_removed",
                                      json_u64(res.n_temporaries), "keys", json_strv(p.delete));
                return finish_output(print_json(j));
        }
        return finish_output(EXIT_OK);
}
