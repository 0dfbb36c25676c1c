/* ingot keygen: makes the Ed25519 key pair `ingot build --sign-key` signs
 * with and `ingot verify --key` checks against. Never overwrites a key. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "shared/log.h"
#include "sign.h"

int cmd_keygen(int argc, char **argv, const struct cli_context *ctx)
{
        static const struct option options[] = { { "output", required_argument, NULL, 'o' }, {} };
        const char *prefix = "ingot-signing";
        char fp[SIGN_FINGERPRINT_MAX];
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":o:", options, NULL)) >= 0) {
                switch (c) {
                case 'o':
                        prefix = optarg;
                        break;
                case ':':
                        return cli_usage_error("keygen", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("keygen", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("keygen", argc - optind);
        if (r != 0)
                return r;
        if (!*prefix)
                return cli_usage_error("keygen", "-o needs a file name prefix");

        r = sign_keygen(prefix, fp);
        if (r == -EEXIST) {
                char path[4096];

                snprintf(path, sizeof(path), "%s%s", prefix, SIGN_KEY_SUFFIX);
                if (access(path, F_OK) < 0)
                        snprintf(path, sizeof(path), "%s%s", prefix, SIGN_PUB_SUFFIX);
                log_error("'%s' already exists: not overwriting a key", path);
                return EXIT_FAILURE_RUN;
        }
        if (r < 0)
                return log_error_errno(r, "cannot write the key pair '%s%s': %m", prefix, SIGN_KEY_SUFFIX),
                       EXIT_FAILURE_RUN;

        if (ctx->json) {
                json_t *j = json_pack("{s:s+, s:s+, s:s}", "private_key", prefix, SIGN_KEY_SUFFIX, "public_key", prefix,
                                      SIGN_PUB_SUFFIX, "fingerprint", fp);
                r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
                json_decref(j);
                if (r < 0)
                        return log_error_errno(-EIO, "cannot write the result"), EXIT_FAILURE_RUN;
                putchar('\n');
        } else
                printf("private key: %s%s (keep it secret)\npublic key:  %s%s\nfingerprint: %s\n", prefix,
                       SIGN_KEY_SUFFIX, prefix, SIGN_PUB_SUFFIX, fp);
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the result: %m"), EXIT_FAILURE_RUN;
        return EXIT_OK;
}
