/* ingot inspect: options in, what the probe stage read out of the image
 * printed as text or JSON. An OS that libguestfs cannot inspect is a fact
 * of the report (exit 0) unless --require-os asks for it. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include <jansson.h>

#include "cli.h"
#include "probe.h"
#include "shared/log.h"

int cmd_inspect(int argc, char **argv, const struct cli_context *ctx)
{
        enum { ARG_NO_OS = 0x100, ARG_REQUIRE_OS, ARG_OS_TIMEOUT };
        static const struct option options[] = { { "no-os", no_argument, NULL, ARG_NO_OS },
                                                 { "require-os", no_argument, NULL, ARG_REQUIRE_OS },
                                                 { "os-timeout", required_argument, NULL, ARG_OS_TIMEOUT },
                                                 {} };
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        struct probe_os_options os_options = { 0 };
        bool no_os = false, require_os = false;
        const char *path;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                switch (c) {
                case ARG_NO_OS:
                        no_os = true;
                        break;
                case ARG_REQUIRE_OS:
                        require_os = true;
                        break;
                case ARG_OS_TIMEOUT: {
                        char *end;
                        unsigned long v;

                        errno = 0;
                        v = strtoul(optarg, &end, 10);
                        if (errno != 0 || end == optarg || *end || v == 0 || v > 86400 || optarg[0] == '-')
                                return cli_usage_error("inspect", "invalid --os-timeout '%s': seconds, 1 to 86400",
                                                       optarg);
                        os_options.timeout_sec = (unsigned)v;
                        break;
                }
                case ':':
                        return cli_usage_error("inspect", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("inspect", argc - optind);
        if (r != 0)
                return r;
        if (no_os && require_os)
                return cli_usage_error("inspect", "--no-os and --require-os exclude each other");
        path = argv[optind];

        r = probe_image(path, &img);
        if (r < 0)
                /* a path that names no image is bad input, like a bad spec */
                return r == -ENOENT || r == -ENOTDIR || r == -EISDIR ? EXIT_USAGE : EXIT_FAILURE_RUN;

        if (!no_os) {
                r = probe_os(img, &os_options);
                if (r < 0)
                        return log_error_errno(r, "cannot inspect the OS in '%s': %m", path), EXIT_FAILURE_RUN;
        }

        if (ctx->json) {
                json_t *j = probe_image_to_json(img);
                r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
                json_decref(j);
                if (r < 0)
                        return log_error_errno(-EIO, "cannot write the report"), EXIT_FAILURE_RUN;
                putchar('\n');
        } else
                probe_image_print(img, stdout);
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the report: %m"), EXIT_FAILURE_RUN;

        if (require_os && img->os.status != PROBE_OS_FOUND) {
                if (img->os.status == PROBE_OS_FAILED)
                        log_error("cannot inspect the OS in '%s': %s", path, img->os.error);
                else
                        log_error("no operating system found in '%s'", path);
                return EXIT_FAILURE_RUN;
        }
        if (img->os.status == PROBE_OS_FAILED)
                log_warning("OS of '%s' unknown: %s", path, img->os.error);
        return EXIT_OK;
}
