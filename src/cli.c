/* Owns the verb table, the global options, help output and exit codes. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "shared/log.h"

static const struct command commands[] = {
        {
                .name = "build",
                .fn = cmd_build,
                .min_args = 0,
                .max_args = 0,
                .usage = "build -t TEMPLATE [-k KICKSTART] [--version V] [-o DIR] [--format raw|qcow2] [--dry-run] "
                         "[--sign-key KEY] [--verity] [--check-reproducible]",
                .summary = "build a bootable disk image from a template and a kickstart",
                .help = "  -t, --template T     template: a path, or a name in the template directory\n"
                        "  -k, --kickstart K    kickstart: a path, or a name in the kickstart directory\n"
                        "      --version V      image version ([0-9a-z._-]; default: the template's Version=)\n"
                        "  -o, --output DIR     where the image and manifest go (default: .)\n"
                        "      --format F       raw (default) or qcow2\n"
                        "  -n, --dry-run        print the plan and stop\n"
                        "      --cache-dir DIR  where bootstrapped roots are cached (default: $XDG_CACHE_HOME/ingot)\n"
                        "      --sign-key KEY   sign the manifest with this Ed25519 private key (ingot keygen)\n"
                        "      --verity         protect the root with dm-verity (hash partition, root hash on the\n"
                        "                       kernel command line, opened by the initrd)\n"
                        "      --check-reproducible\n"
                        "                       build twice in temporary directories and compare byte for byte\n",
        },
        {
                .name = "inspect",
                .fn = cmd_inspect,
                .min_args = 1,
                .max_args = 1,
                .usage = "inspect IMAGE [--no-os | --require-os] [--os-timeout SEC]",
                .summary = "show an image's partitions, filesystems and OS",
                .help = "      --no-os          skip the OS inspection (libguestfs): fast, no VM\n"
                        "      --require-os     fail (exit 1) when the OS cannot be inspected\n"
                        "      --os-timeout SEC give libguestfs at most SEC seconds (default: 300)\n"
                        "      --json           print the report as JSON\n",
        },
        {
                .name = "boot",
                .fn = cmd_boot,
                .min_args = 1,
                .max_args = 1,
                .usage = "boot IMAGE [--firmware uefi|bios] [--timeout SEC] [--memory MiB] [--console | --keep] "
                         "[--serial-log FILE]",
                .summary = "boot an image in a test VM and wait for its ready line",
                .help = "      --firmware F     uefi (default when OVMF is installed), bios or auto\n"
                        "      --timeout SEC    give up after SEC seconds (default: 300 under tcg, 60 with kvm)\n"
                        "      --memory MiB     guest memory (default: 512)\n"
                        "      --cpus N         guest CPUs (default: 1)\n"
                        "      --accel A        kvm, tcg or auto (default: probe kvm, fall back to tcg)\n"
                        "      --console        serial console on this terminal instead of a log\n"
                        "      --keep           leave the VM running; print its pid and QMP socket\n"
                        "      --serial-log F   keep a copy of the serial console output in F\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "verify",
                .fn = cmd_verify,
                .min_args = 1,
                .max_args = 1,
                .usage = "verify IMAGE [--manifest FILE] [--key PUB.pem] | verify --hygiene IMAGE",
                .summary = "check an image against its manifest (digests, signature, verity)",
                .help = "      --manifest FILE  the manifest (default: IMAGE with .raw/.qcow2 replaced by\n"
                        "                       .manifest.json)\n"
                        "      --key PUB.pem    require a signature by this Ed25519 key (MANIFEST.sig)\n"
                        "      --hygiene        instead: scan the root filesystem for sysprep leftovers\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "keygen",
                .fn = cmd_keygen,
                .min_args = 0,
                .max_args = 0,
                .usage = "keygen [-o PREFIX]",
                .summary = "make an Ed25519 key pair for signing manifests",
                .help = "  -o, --output PREFIX  write PREFIX.key (private, 0600) and PREFIX.pub\n"
                        "                       (default: ingot-signing); never overwrites\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "push",
                .fn = cmd_push,
                .min_args = 1,
                .max_args = 1,
                .usage = "push IMAGE [--manifest F] [--channel C] [--tag K=V]... [--description D] [--store URL] "
                         "[--insecure] [--jobs N]",
                .summary = "publish a sealed raw image to a store as an ami-... image",
                .help = "      --manifest FILE  the manifest (default: IMAGE with .raw replaced by .manifest.json);\n"
                        "                       its .sig goes along when present\n"
                        "      --channel C      point channel C of the image's name at it once pushed\n"
                        "      --tag K=V        a tag (repeatable; at most 50; no 'aws:' keys)\n"
                        "      --description D  the description (default: the template's Description=)\n"
                        "      --jobs N         requests in flight at once (default: 8)\n"
                        "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "images",
                .fn = cmd_images,
                .min_args = 0,
                .max_args = 0,
                .usage = "images [--name N] [--all] [--store URL]",
                .summary = "list the images in a store",
                .help = "      --name N         only the images named N\n"
                        "      --all            deregistered images too\n"
                        "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the records as JSON\n",
        },
        {
                .name = "show",
                .fn = cmd_show,
                .min_args = 1,
                .max_args = 1,
                .usage = "show ID|NAME@VERSION|NAME:CHANNEL [--store URL]",
                .summary = "show one image's record",
                .help = "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the record as JSON (with its manifest)\n",
        },
        {
                .name = "promote",
                .fn = cmd_promote,
                .min_args = 2,
                .max_args = 2,
                .usage = "promote ID|NAME@VERSION CHANNEL [--store URL]",
                .summary = "point a channel of the image's name at the image",
                .help = "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "deprecate",
                .fn = cmd_deprecate,
                .min_args = 1,
                .max_args = 1,
                .usage = "deprecate ID|REF [--at TIME] [--store URL]",
                .summary = "mark an image deprecated (now or from a given time)",
                .help = "      --at TIME        'now' (default) or an ISO 8601 UTC time, e.g. 2025-01-31T00:00:00Z\n"
                        "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "deregister",
                .fn = cmd_deregister,
                .min_args = 1,
                .max_args = 1,
                .usage = "deregister ID|REF [--store URL]",
                .summary = "withdraw an image: no more pulls, channels to it removed",
                .help = "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "pull",
                .fn = cmd_pull,
                .min_args = 1,
                .max_args = 1,
                .usage = "pull ID|NAME@VERSION|NAME:CHANNEL [-o PATH] [--store URL]",
                .summary = "fetch an image from a store, verified, into the local cache",
                .help = "  -o, --output PATH    write the image here (default: $XDG_CACHE_HOME/ingot/images/ID.raw);\n"
                        "                       the manifest goes beside it\n"
                        "      --jobs N         requests in flight at once (default: 8)\n"
                        "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "gc",
                .fn = cmd_gc,
                .min_args = 0,
                .max_args = 0,
                .usage = "gc [--dry-run] [--grace SECONDS] [--store URL]",
                .summary = "delete blocks no live image needs",
                .help = "  -n, --dry-run        list what would be deleted, delete nothing\n"
                        "      --grace SEC      keep unreferenced blocks younger than SEC seconds (default: 3600)\n"
                        "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --insecure       s3: do not verify the server's TLS certificate\n"
                        "      --json           print the result as JSON\n",
        },
        {
                .name = "deploy",
                .fn = cmd_deploy,
                .min_args = 1,
                .max_args = 1,
                .usage = "deploy FILE.deploy [--allow-deprecated] [--store URL] [--state-dir DIR]",
                .summary = "run a deployment file's instances, replacing old ones by a rolling update",
                .help = "      --allow-deprecated  deploy a deprecated image\n"
                        "      --store URL      file:///DIR or s3://BUCKET[/PREFIX] (default: $INGOT_STORE, else\n"
                        "                       file://$XDG_DATA_HOME/ingot/store)\n"
                        "      --state-dir DIR  the deploy state (default: $XDG_STATE_HOME/ingot)\n",
        },
        {
                .name = "rollback",
                .fn = cmd_rollback,
                .min_args = 1,
                .max_args = 1,
                .usage = "rollback NAME [--to ID] [--store URL] [--state-dir DIR]",
                .summary = "redeploy the previous image of a deployment",
                .help = "      --to ID          this image instead of the previous one\n"
                        "      --store URL      the store (default: $INGOT_STORE, else the local one)\n"
                        "      --state-dir DIR  the deploy state (default: $XDG_STATE_HOME/ingot)\n",
        },
        {
                .name = "ps",
                .fn = cmd_ps,
                .min_args = 0,
                .max_args = 1,
                .usage = "ps [NAME] [--state-dir DIR]",
                .summary = "list the instances of the deployments",
                .help = "      --state-dir DIR  the deploy state (default: $XDG_STATE_HOME/ingot)\n"
                        "      --json           print the instances as JSON\n",
        },
        {
                .name = "logs",
                .fn = cmd_logs,
                .min_args = 1,
                .max_args = 1,
                .usage = "logs INSTANCE [-f] [--state-dir DIR]",
                .summary = "show an instance's serial console log",
                .help = "  -f, --follow         keep printing while the instance runs\n"
                        "      --state-dir DIR  the deploy state (default: $XDG_STATE_HOME/ingot)\n",
        },
        {
                .name = "terminate",
                .fn = cmd_terminate,
                .min_args = 0,
                .max_args = 1,
                .usage = "terminate INSTANCE | --deployment NAME [--state-dir DIR]",
                .summary = "stop and remove an instance or all of a deployment's",
                .help = "      --deployment NAME  every instance of NAME; the deployment becomes terminated\n"
                        "      --state-dir DIR  the deploy state (default: $XDG_STATE_HOME/ingot)\n",
        },
        {
                .name = "help",
                .fn = NULL, /* handled by cli_main */
                .min_args = 0,
                .max_args = 1,
                .usage = "help [VERB]",
                .summary = "show help for ingot or one verb",
                .help = "",
        },
};

static const struct command *find_command(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i].name, name))
                        return &commands[i];
        return NULL;
}

/* Edit distance, for "did you mean" hints; names are short. */
static size_t distance(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b), prev[32], cur[32];

        if (la >= 31 || lb >= 31)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                prev[j] = j;
        for (size_t i = 1; i <= la; i++) {
                cur[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
                        size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
                        cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
                }
                memcpy(prev, cur, sizeof(size_t) * (lb + 1));
        }
        return prev[lb];
}

static void print_main_help(void)
{
        printf("usage: ingot [-v|-q] [--json] VERB [ARGS...]\n"
               "       ingot --help | --version | help VERB\n\n"
               "Builds golden machine images and runs them the immutable way.\n\n"
               "verbs:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                printf("  %-10s %s\n", commands[i].name, commands[i].summary);
        printf("\nglobal options (before or after the verb):\n"
               "  -v, --verbose        more detail on stderr\n"
               "  -q, --quiet          errors only\n"
               "      --json           machine-readable output on stdout\n"
               "  -h, --help           this help; 'ingot VERB --help' for a verb\n"
               "      --version        the program version\n\n"
               "exit codes: 0 ok, 1 failure, 2 bad usage or bad input\n"
               "see ingot(1) for more\n");
}

void cli_print_verb_help(const char *verb)
{
        const struct command *c = find_command(verb);

        if (!c)
                return;
        printf("usage: ingot %s\n\n%s\n", c->usage, c->summary);
        if (c->help && *c->help)
                printf("\noptions:\n%s", c->help);
}

int cli_usage_error(const char *verb, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "ingot%s%s: ", verb ? " " : "", verb ? verb : "");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nhint: see 'ingot %s%s--help'\n", verb ? verb : "", verb ? " " : "");
        return EXIT_USAGE;
}

int cli_check_args(const char *verb, int n)
{
        const struct command *c = find_command(verb);

        if (!c)
                return EXIT_USAGE;
        if (n < c->min_args)
                return cli_usage_error(verb, "missing argument (usage: ingot %s)", c->usage);
        if (c->max_args >= 0 && n > c->max_args)
                return cli_usage_error(verb, "too many arguments (usage: ingot %s)", c->usage);
        return 0;
}

int cli_exit_code(int r)
{
        if (r >= 0)
                return EXIT_OK;
        return r == -EBADMSG ? EXIT_USAGE : EXIT_FAILURE_RUN;
}

/* Global options may come anywhere before "--"; they are taken out so each
 * verb sees only its own. Returns the new argc or -1 on "--help"/"--version"
 * seen before the verb (handled by the caller). */
static int strip_global_options(int argc, char **argv, struct cli_context *ctx)
{
        int w = 1;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (streq(a, "--")) {
                        while (i < argc)
                                argv[w++] = argv[i++];
                        break;
                }
                if (streq(a, "-v") || streq(a, "--verbose"))
                        log_set_level(LOG_LEVEL_VERBOSE);
                else if (streq(a, "-q") || streq(a, "--quiet"))
                        log_set_level(LOG_LEVEL_QUIET);
                else if (streq(a, "--json"))
                        ctx->json = true;
                else
                        argv[w++] = argv[i];
        }
        argv[w] = NULL;
        return w;
}

int cli_main(int argc, char **argv)
{
        struct cli_context ctx = { 0 };
        const struct command *c;
        const char *verb;

        argc = strip_global_options(argc, argv, &ctx);
        if (argc < 2) {
                print_main_help();
                return EXIT_USAGE;
        }
        verb = argv[1];
        if (streq(verb, "--help") || streq(verb, "-h")) {
                print_main_help();
                return EXIT_OK;
        }
        if (streq(verb, "--version")) {
                printf("ingot %s\n", PACKAGE_VERSION);
                return EXIT_OK;
        }
        if (verb[0] == '-')
                return cli_usage_error(NULL, "unknown option '%s'", verb);

        c = find_command(verb);
        if (!c) {
                const struct command *best = NULL;
                size_t best_d = SIZE_MAX;

                for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                        size_t d = distance(verb, commands[i].name);
                        if (d < best_d) {
                                best_d = d;
                                best = &commands[i];
                        }
                }
                fprintf(stderr, "ingot: unknown verb '%s'\n", verb);
                if (best && best_d <= 2)
                        fprintf(stderr, "hint: did you mean 'ingot %s'? See 'ingot --help'\n", best->name);
                else
                        fprintf(stderr, "hint: see 'ingot --help' for the verbs\n");
                return EXIT_USAGE;
        }

        if (streq(c->name, "help")) {
                if (argc > 3)
                        return cli_check_args("help", argc - 2);
                if (argc == 2) {
                        print_main_help();
                        return EXIT_OK;
                }
                if (!find_command(argv[2])) {
                        fprintf(stderr, "ingot help: unknown verb '%s'\nhint: see 'ingot --help' for the verbs\n",
                                argv[2]);
                        return EXIT_USAGE;
                }
                cli_print_verb_help(argv[2]);
                return EXIT_OK;
        }

        for (int i = 2; i < argc && !streq(argv[i], "--"); i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        cli_print_verb_help(c->name);
                        return EXIT_OK;
                }
        return c->fn(argc - 1, argv + 1, &ctx);
}
