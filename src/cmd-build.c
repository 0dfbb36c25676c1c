/* ingot build: options in; the plan (--dry-run) or the image out. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "shared/log.h"
#include "build.h"
#include "spec.h"

int cmd_build(int argc, char **argv, const struct cli_context *ctx)
{
        enum { ARG_VERSION = 0x100, ARG_FORMAT, ARG_CACHE_DIR, ARG_VERITY, ARG_CHECK_REPRODUCIBLE, ARG_SIGN_KEY };
        static const struct option options[] = { { "template", required_argument, NULL, 't' },
                                                 { "kickstart", required_argument, NULL, 'k' },
                                                 { "version", required_argument, NULL, ARG_VERSION },
                                                 { "output", required_argument, NULL, 'o' },
                                                 { "format", required_argument, NULL, ARG_FORMAT },
                                                 { "dry-run", no_argument, NULL, 'n' },
                                                 { "cache-dir", required_argument, NULL, ARG_CACHE_DIR },
                                                 { "verity", no_argument, NULL, ARG_VERITY },
                                                 { "sign-key", required_argument, NULL, ARG_SIGN_KEY },
                                                 { "check-reproducible", no_argument, NULL,
                                                   ARG_CHECK_REPRODUCIBLE },
                                                 {} };
        struct spec_options o = { 0 };
        struct build_options b = { .progress = isatty(STDERR_FILENO) };
        _cleanup_(spec_freep) struct spec *s = NULL;
        bool dry_run = false, check_reproducible = false;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":t:k:o:n", options, NULL)) >= 0) {
                switch (c) {
                case 't':
                        o.template = optarg;
                        break;
                case 'k':
                        o.kickstart = optarg;
                        break;
                case ARG_VERSION:
                        o.version = optarg;
                        break;
                case 'o':
                        o.output_dir = optarg;
                        break;
                case ARG_FORMAT:
                        o.format = optarg;
                        break;
                case 'n':
                        dry_run = true;
                        break;
                case ARG_CACHE_DIR:
                        b.cache_dir = optarg;
                        break;
                case ARG_SIGN_KEY:
                        b.sign_key = optarg;
                        break;
                case ARG_VERITY:
                        o.verity = true;
                        break;
                case ARG_CHECK_REPRODUCIBLE:
                        check_reproducible = true;
                        break;
                case ':':
                        return cli_usage_error("build", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("build", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("build", argc - optind);
        if (r != 0)
                return r;
        if (!o.template)
                return cli_usage_error("build", "no template: give -t TEMPLATE");
        if (check_reproducible && dry_run)
                return cli_usage_error("build", "--check-reproducible builds; it cannot go with --dry-run");
        if (check_reproducible)
                return cli_exit_code(build_check_reproducible(&o, &b));
        r = spec_load(&o, &s);
        if (r < 0)
                return cli_exit_code(r);
        if (!dry_run)
                return cli_exit_code(build_image(s, &b));

        if (ctx->json) {
                json_t *j = spec_plan_to_json(s);
                r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
                json_decref(j);
                if (r < 0)
                        return log_error_errno(-EIO, "cannot write the plan"), EXIT_FAILURE_RUN;
                putchar('\n');
        } else
                spec_plan_print(s, stdout);
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the plan: %m"), EXIT_FAILURE_RUN;
        return EXIT_OK;
}
