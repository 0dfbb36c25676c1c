/* The command line: a table of verbs, global options, help and the exit
 * code convention (0 ok, 1 failure, 2 bad usage or bad input). Verbs live
 * in cmd-VERB.c and only parse their arguments and call stage code. */
#pragma once

#include <stdbool.h>

#include "shared/macro.h"

enum {
        EXIT_OK = 0,
        EXIT_FAILURE_RUN = 1,
        EXIT_USAGE = 2,
};

struct cli_context {
        bool json;
};

struct command {
        const char *name;
        /* argv[0] is the verb; options already stripped of the global ones */
        int (*fn)(int argc, char **argv, const struct cli_context *ctx);
        int min_args; /* positional arguments after options */
        int max_args; /* -1 = any number */
        const char *usage;
        const char *summary;
        const char *help; /* the options, one per line */
};

/* Runs the command line; returns the exit code. */
int cli_main(int argc, char **argv);

/* Checks a verb's positional argument count against its table entry; on
 * mismatch prints the usage error and returns EXIT_USAGE, else 0. */
int cli_check_args(const char *verb, int n_positional);
/* One-line usage error plus hint, returns EXIT_USAGE. */
int cli_usage_error(const char *verb, const char *fmt, ...) _printf_(2, 3);
/* Prints a verb's help to stdout. */
void cli_print_verb_help(const char *verb);
/* Maps a stage's negative errno to an exit code: bad input (-EBADMSG) is 2,
 * anything else 1. */
int cli_exit_code(int r);

int cmd_build(int argc, char **argv, const struct cli_context *ctx);
int cmd_boot(int argc, char **argv, const struct cli_context *ctx);
int cmd_inspect(int argc, char **argv, const struct cli_context *ctx);
int cmd_verify(int argc, char **argv, const struct cli_context *ctx);
int cmd_keygen(int argc, char **argv, const struct cli_context *ctx);
int cmd_push(int argc, char **argv, const struct cli_context *ctx);
int cmd_images(int argc, char **argv, const struct cli_context *ctx);
int cmd_show(int argc, char **argv, const struct cli_context *ctx);
int cmd_promote(int argc, char **argv, const struct cli_context *ctx);
int cmd_deprecate(int argc, char **argv, const struct cli_context *ctx);
int cmd_deregister(int argc, char **argv, const struct cli_context *ctx);
int cmd_pull(int argc, char **argv, const struct cli_context *ctx);
int cmd_gc(int argc, char **argv, const struct cli_context *ctx);
int cmd_deploy(int argc, char **argv, const struct cli_context *ctx);
int cmd_rollback(int argc, char **argv, const struct cli_context *ctx);
int cmd_ps(int argc, char **argv, const struct cli_context *ctx);
int cmd_logs(int argc, char **argv, const struct cli_context *ctx);
int cmd_terminate(int argc, char **argv, const struct cli_context *ctx);
