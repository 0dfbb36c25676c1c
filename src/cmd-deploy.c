/* ingot deploy, rollback, ps, logs and terminate: argument parsing only;
 * the work is in deploy.c. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "deploy.h"
#include "shared/log.h"

enum { ARG_STORE = 0x100, ARG_STATE_DIR, ARG_ALLOW_DEPRECATED, ARG_TO, ARG_DEPLOYMENT };

static int exit_of(int r)
{
        if (r >= 0)
                return EXIT_OK;
        return r == -EBADMSG ? EXIT_USAGE : EXIT_FAILURE_RUN;
}

/* Parses the options all five verbs share plus their own; returns 0 or an exit code. */
static int parse(const char *verb, int argc, char **argv, struct deploy_options *o, const char **to,
                 const char **deployment, bool *follow)
{
        static const struct option options[] = { { "store", required_argument, NULL, ARG_STORE },
                                                 { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                                                 { "allow-deprecated", no_argument, NULL, ARG_ALLOW_DEPRECATED },
                                                 { "to", required_argument, NULL, ARG_TO },
                                                 { "deployment", required_argument, NULL, ARG_DEPLOYMENT },
                                                 { "follow", no_argument, NULL, 'f' },
                                                 {} };
        int c;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":f", options, NULL)) >= 0) {
                switch (c) {
                case ARG_STORE:
                        o->store_url = optarg;
                        break;
                case ARG_STATE_DIR:
                        o->state_dir = optarg;
                        break;
                case ARG_ALLOW_DEPRECATED:
                        o->allow_deprecated = true;
                        break;
                case ARG_TO:
                        if (!to)
                                goto unknown;
                        *to = optarg;
                        break;
                case ARG_DEPLOYMENT:
                        if (!deployment)
                                goto unknown;
                        *deployment = optarg;
                        break;
                case 'f':
                        if (!follow)
                                goto unknown;
                        *follow = true;
                        break;
                case ':':
                        return cli_usage_error(verb, "option '%s' needs a value", argv[optind - 1]);
                default:
                unknown:
                        return cli_usage_error(verb, "unknown option '%s'", argv[optind - 1]);
                }
        }
        return 0;
}

int cmd_deploy(int argc, char **argv, const struct cli_context *ctx)
{
        struct deploy_options o = { 0 };
        int r;

        (void)ctx;
        r = parse("deploy", argc, argv, &o, NULL, NULL, NULL);
        if (r == 0)
                r = cli_check_args("deploy", argc - optind);
        if (r != 0)
                return r;
        return exit_of(deploy_run(argv[optind], &o));
}

int cmd_rollback(int argc, char **argv, const struct cli_context *ctx)
{
        struct deploy_options o = { 0 };
        const char *to = NULL;
        int r;

        (void)ctx;
        r = parse("rollback", argc, argv, &o, &to, NULL, NULL);
        if (r == 0)
                r = cli_check_args("rollback", argc - optind);
        if (r != 0)
                return r;
        return exit_of(deploy_rollback(argv[optind], to, &o));
}

int cmd_ps(int argc, char **argv, const struct cli_context *ctx)
{
        struct deploy_options o = { 0 };
        int r;

        r = parse("ps", argc, argv, &o, NULL, NULL, NULL);
        if (r == 0)
                r = cli_check_args("ps", argc - optind);
        if (r != 0)
                return r;
        return exit_of(deploy_ps(o.state_dir, optind < argc ? argv[optind] : NULL, ctx->json));
}

int cmd_logs(int argc, char **argv, const struct cli_context *ctx)
{
        struct deploy_options o = { 0 };
        bool follow = false;
        int r;

        (void)ctx;
        r = parse("logs", argc, argv, &o, NULL, NULL, &follow);
        if (r == 0)
                r = cli_check_args("logs", argc - optind);
        if (r != 0)
                return r;
        return exit_of(deploy_logs(o.state_dir, argv[optind], follow));
}

int cmd_terminate(int argc, char **argv, const struct cli_context *ctx)
{
        struct deploy_options o = { 0 };
        const char *deployment = NULL;
        int r;

        (void)ctx;
        r = parse("terminate", argc, argv, &o, NULL, &deployment, NULL);
        if (r == 0)
                r = cli_check_args("terminate", argc - optind);
        if (r != 0)
                return r;
        if (!!deployment == (optind < argc))
                return cli_usage_error("terminate", "give either an instance or --deployment NAME");
        return exit_of(deploy_terminate(o.state_dir, deployment ? NULL : argv[optind], deployment));
}
