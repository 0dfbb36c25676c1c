/* The catalog verbs that read and change records, not blocks: ingot
 * images, show, promote, deprecate and deregister.
 *
 * Records are immutable except for their state and deprecation time;
 * channels are the only objects rewritten in place. Deregistering an image
 * also removes the channel pointers that name it, so NAME:CHANNEL never
 * resolves to an image that can no longer be pulled or deployed; its
 * names/ entry stays, so the version cannot be reused for other bytes. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "catalog.h"
#include "cli.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/strv.h"
#include "store.h"

struct store_args {
        const char *store;
        bool insecure;
};

enum { ARG_STORE = 0x100, ARG_INSECURE, ARG_NAME, ARG_ALL, ARG_AT };

/* The options every verb here takes; returns 1 when c was one of them. */
static int store_option(int c, struct store_args *a)
{
        if (c == ARG_STORE)
                a->store = optarg;
        else if (c == ARG_INSECURE)
                a->insecure = true;
        else
                return 0;
        return 1;
}

static int open_store(const struct store_args *a, struct store **ret)
{
        int r = catalog_store_open(a->store, a->insecure, 0, ret);

        return r == -EINVAL ? EXIT_USAGE : r < 0 ? EXIT_FAILURE_RUN : 0;
}

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

static int resolve_exit(int r)
{
        return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
}

/* The record as shown: stored fields, the state as of now, and the
 * channels that point at it now (the stored list is only what was known
 * when it was written). */
static json_t *record_view(struct store *s, const struct catalog_record *rec, int64_t now, bool with_manifest)
{
        _cleanup_strv_free_ char **channels = NULL;
        json_t *j = catalog_record_to_json(rec);

        if (!j)
                return NULL;
        json_object_set_new(j, "state", json_string(catalog_record_state_string(rec, now)));
        if (catalog_channels_of(s, rec->name, rec->image_id, &channels) >= 0)
                json_object_set_new(j, "channels", json_strv(channels));
        if (!with_manifest)
                json_object_del(j, "manifest");
        return j;
}

static int cmp_rec(const void *a, const void *b)
{
        const struct catalog_record *x = *(struct catalog_record *const *)a, *y = *(struct catalog_record *const *)b;
        int c = strcmp(x->name, y->name);

        if (c)
                return c;
        if (x->creation_ms != y->creation_ms)
                return x->creation_ms < y->creation_ms ? -1 : 1;
        return strcmp(x->version, y->version);
}

int cmd_images(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 { "name", required_argument, NULL, ARG_NAME },
                                                 { "all", no_argument, NULL, ARG_ALL },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_strv_free_ char **keys = NULL;
        struct store_args sa = {};
        const char *name = NULL;
        struct catalog_record **recs = NULL;
        size_t n = 0;
        bool all = false;
        int64_t now = catalog_now_ms();
        int c, r, code = EXIT_OK;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                if (store_option(c, &sa))
                        continue;
                switch (c) {
                case ARG_NAME:
                        if (!catalog_word_is_valid(optarg))
                                return cli_usage_error("images", "'%s' is not an image name", optarg);
                        name = optarg;
                        break;
                case ARG_ALL:
                        all = true;
                        break;
                case ':':
                        return cli_usage_error("images", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("images", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("images", argc - optind);
        if (r != 0)
                return r;
        r = open_store(&sa, &s);
        if (r != 0)
                return r;
        r = store_list(s, "images/", &keys, NULL);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        recs = calloc(strv_length(keys) + 1, sizeof(*recs));
        if (!recs)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        STRV_FOREACH (k, keys) {
                _cleanup_free_ char *id = NULL;
                struct catalog_record *rec = NULL;
                size_t len = strlen(*k);

                if (len < 12 || !streq(*k + len - 5, ".json"))
                        continue;
                id = strndup(*k + 7, len - 12);
                if (!id || !catalog_id_is_valid(id))
                        continue;
                r = catalog_record_load(s, id, &rec);
                if (r == -ENOENT)
                        continue;
                if (r < 0) {
                        code = EXIT_FAILURE_RUN; /* said why; list the others */
                        continue;
                }
                if ((name && !streq(rec->name, name)) || (!all && rec->state == CATALOG_STATE_DEREGISTERED)) {
                        catalog_record_free(rec);
                        continue;
                }
                recs[n++] = rec;
        }
        qsort(recs, n, sizeof(*recs), cmp_rec);

        if (ctx->json) {
                json_t *a = json_array();
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, record_view(s, recs[i], now, false));
                r = print_json(a);
                if (r != 0)
                        code = r;
        } else {
                printf("%-21s  %-16s  %-12s  %-12s  %-24s  %s\n", "IMAGE ID", "NAME", "VERSION", "STATE", "CREATED",
                       "CHANNELS");
                for (size_t i = 0; i < n; i++) {
                        _cleanup_strv_free_ char **ch = NULL;
                        char when[40];

                        (void)catalog_channels_of(s, recs[i]->name, recs[i]->image_id, &ch);
                        printf("%-21s  %-16s  %-12s  %-12s  %-24s  ", recs[i]->image_id, recs[i]->name,
                               recs[i]->version, catalog_record_state_string(recs[i], now),
                               catalog_format_time(recs[i]->creation_ms, when, sizeof(when)));
                        STRV_FOREACH (x, ch)
                                printf("%s%s", x == ch ? "" : ",", *x);
                        printf("%s\n", ch ? "" : "-");
                }
        }
        for (size_t i = 0; i < n; i++)
                catalog_record_free(recs[i]);
        free(recs);
        return finish_output(code);
}

int cmd_show(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_strv_free_ char **ch = NULL;
        struct store_args sa = {};
        int64_t now = catalog_now_ms();
        char when[40];
        size_t nt;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                if (store_option(c, &sa))
                        continue;
                if (c == ':')
                        return cli_usage_error("show", "option '%s' needs a value", argv[optind - 1]);
                return cli_usage_error("show", "unknown option '%s'", argv[optind - 1]);
        }
        r = cli_check_args("show", argc - optind);
        if (r != 0)
                return r;
        r = open_store(&sa, &s);
        if (r != 0)
                return r;
        r = catalog_resolve(s, argv[optind], &rec);
        if (r < 0)
                return resolve_exit(r);
        if (ctx->json)
                return finish_output(print_json(record_view(s, rec, now, true)));

        (void)catalog_channels_of(s, rec->name, rec->image_id, &ch);
        printf("image_id:       %s\n", rec->image_id);
        printf("name:           %s\n", rec->name);
        printf("version:        %s\n", rec->version);
        printf("description:    %s\n", strna(rec->description));
        printf("state:          %s\n", catalog_record_state_string(rec, now));
        if (rec->state_reason)
                printf("state_reason:   %s\n", rec->state_reason);
        printf("created:        %s\n", catalog_format_time(rec->creation_ms, when, sizeof(when)));
        if (rec->deprecation_ms >= 0)
                printf("deprecation:    %s\n", catalog_format_time(rec->deprecation_ms, when, sizeof(when)));
        printf("architecture:   %s\n", rec->architecture);
        printf("boot_mode:      %s\n", strna(rec->boot_mode));
        printf("root device:    /dev/xvda (ebs, %s, %llu GiB, gp3)\n", rec->snapshot_id,
               (unsigned long long)rec->volume_size_gib);
        printf("size:           %llu bytes, %llu blocks stored of %llu bytes each\n", (unsigned long long)rec->size,
               (unsigned long long)rec->blocks_stored, (unsigned long long)rec->block_size);
        printf("digest:         %s\n", rec->digest);
        printf("signed:         %s\n", rec->signature ? "yes" : "no");
        if (rec->verity_root_hash)
                printf("verity:         %s\n", rec->verity_root_hash);
        printf("channels:      ");
        STRV_FOREACH (x, ch)
                printf(" %s", *x);
        printf("%s\n", ch ? "" : " -");
        nt = strv_length(rec->tags);
        printf("tags:          ");
        for (size_t i = 0; i + 1 < nt; i += 2)
                printf(" %s=%s", rec->tags[i], rec->tags[i + 1]);
        printf("%s\n", nt ? "" : " -");
        return finish_output(EXIT_OK);
}

int cmd_promote(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_free_ char *winner = NULL;
        struct store_args sa = {};
        const char *channel;
        uint64_t generation = 0;
        bool won;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                if (store_option(c, &sa))
                        continue;
                if (c == ':')
                        return cli_usage_error("promote", "option '%s' needs a value", argv[optind - 1]);
                return cli_usage_error("promote", "unknown option '%s'", argv[optind - 1]);
        }
        r = cli_check_args("promote", argc - optind);
        if (r != 0)
                return r;
        channel = argv[optind + 1];
        if (!catalog_word_is_valid(channel))
                return cli_usage_error("promote", "'%s' is not a channel name ([A-Za-z0-9._-])", channel);
        r = open_store(&sa, &s);
        if (r != 0)
                return r;
        r = catalog_resolve(s, argv[optind], &rec);
        if (r < 0)
                return resolve_exit(r);
        if (rec->state == CATALOG_STATE_DEREGISTERED)
                return log_error("%s is deregistered: it cannot be promoted", rec->image_id), EXIT_FAILURE_RUN;
        if (rec->state == CATALOG_STATE_PENDING)
                return log_error("%s is still pending (an interrupted push?): push it again first", rec->image_id),
                       EXIT_FAILURE_RUN;
        r = catalog_promote(s, rec, channel, &winner, &generation);
        if (r < 0 && r != -ESTALE)
                return EXIT_FAILURE_RUN;
        won = streq(winner, rec->image_id);
        if (!won)
                log_error("%s:%s was promoted to %s (generation %llu) by a concurrent promote, which won; %s was not "
                          "promoted",
                          rec->name, channel, winner, (unsigned long long)generation, rec->image_id);
        else
                log_info("%s:%s -> %s (%s), generation %llu", rec->name, channel, rec->image_id, rec->version,
                         (unsigned long long)generation);
        if (ctx->json)
                return finish_output(
                        print_json(json_pack("{s:s, s:s, s:s, s:s, s:o, s:b}", "name", rec->name, "channel", channel,
                                             "image_id", winner, "requested", rec->image_id, "generation",
                                             json_u64(generation), "won", won))
                                ?: (won ? EXIT_OK : EXIT_FAILURE_RUN));
        printf("%s\n", winner);
        return finish_output(won ? EXIT_OK : EXIT_FAILURE_RUN);
}

int cmd_deprecate(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 { "at", required_argument, NULL, ARG_AT },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        struct store_args sa = {};
        int64_t now = catalog_now_ms(), at = now;
        char when[40];
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                if (store_option(c, &sa))
                        continue;
                switch (c) {
                case ARG_AT:
                        if (catalog_parse_time(optarg, now, &at) < 0)
                                return cli_usage_error("deprecate",
                                                       "--at needs 'now' or an ISO 8601 UTC time "
                                                       "(YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z]), not '%s'",
                                                       optarg);
                        break;
                case ':':
                        return cli_usage_error("deprecate", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("deprecate", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("deprecate", argc - optind);
        if (r != 0)
                return r;
        r = open_store(&sa, &s);
        if (r != 0)
                return r;
        r = catalog_resolve(s, argv[optind], &rec);
        if (r < 0)
                return resolve_exit(r);
        if (rec->state == CATALOG_STATE_DEREGISTERED)
                return log_error("%s is deregistered", rec->image_id), EXIT_FAILURE_RUN;
        rec->deprecation_ms = at;
        r = catalog_record_save(s, rec);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        catalog_format_time(at, when, sizeof(when));
        log_info("%s (%s@%s) %s deprecated %s %s", rec->image_id, rec->name, rec->version, at <= now ? "is" : "will be",
                 at <= now ? "since" : "at", when);
        if (ctx->json)
                return finish_output(
                        print_json(json_pack("{s:s, s:s, s:s}", "image_id", rec->image_id, "deprecation_time", when,
                                             "state", catalog_record_state_string(rec, now))));
        printf("%s\n", rec->image_id);
        return finish_output(EXIT_OK);
}

int cmd_deregister(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "store", required_argument, NULL, ARG_STORE },
                                                 { "insecure", no_argument, NULL, ARG_INSECURE },
                                                 {} };
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_strv_free_ char **ch = NULL, **removed = NULL;
        struct store_args sa = {};
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                if (store_option(c, &sa))
                        continue;
                if (c == ':')
                        return cli_usage_error("deregister", "option '%s' needs a value", argv[optind - 1]);
                return cli_usage_error("deregister", "unknown option '%s'", argv[optind - 1]);
        }
        r = cli_check_args("deregister", argc - optind);
        if (r != 0)
                return r;
        r = open_store(&sa, &s);
        if (r != 0)
                return r;
        r = catalog_resolve(s, argv[optind], &rec);
        if (r < 0)
                return resolve_exit(r);
        if (rec->state != CATALOG_STATE_DEREGISTERED) {
                free(rec->state_reason);
                rec->state_reason = strdup("deregistered by ingot deregister");
                rec->state = CATALOG_STATE_DEREGISTERED;
                r = catalog_record_save(s, rec);
                if (r < 0)
                        return EXIT_FAILURE_RUN;
        }

        /* channels pointing at it would resolve to an image nobody can
         * pull: drop the ones that do as of this reading (the record says
         * deregistered already, so no promote can add one now) */
        r = catalog_channels_of(s, rec->name, rec->image_id, &ch);
        if (r < 0)
                return EXIT_FAILURE_RUN;
        STRV_FOREACH (x, ch) {
                r = catalog_channel_drop(s, rec->name, *x, rec->image_id);
                if (r < 0)
                        return EXIT_FAILURE_RUN;
                if (r == 0)
                        continue; /* promoted elsewhere since: that stands */
                log_info("removed channel %s:%s, which pointed at %s", rec->name, *x, rec->image_id);
                if (strv_extend(&removed, *x) < 0)
                        return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        }
        log_info("%s (%s@%s) is deregistered; 'ingot gc' frees the blocks no other image uses", rec->image_id,
                 rec->name, rec->version);
        if (ctx->json)
                return finish_output(print_json(json_pack("{s:s, s:s, s:o}", "image_id", rec->image_id, "state",
                                                          "deregistered", "channels_removed", json_strv(removed))));
        printf("%s\n", rec->image_id);
        return finish_output(EXIT_OK);
}
