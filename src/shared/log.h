/* Logging to stderr with a level set once by the command line. Stage code
 * logs where it decides an error; helpers return negative errno and stay
 * quiet. log_*_errno() return the negative errno they were given, so
 * "return log_error_errno(r, ...)" is one line. */
#pragma once

#include <stdarg.h>
#include <stdio.h>

#include "macro.h"

enum log_level {
        LOG_LEVEL_QUIET = 0, /* errors only */
        LOG_LEVEL_NORMAL,    /* errors, warnings, progress */
        LOG_LEVEL_VERBOSE,   /* plus debug detail */
};

void log_set_level(enum log_level level);
/* Where messages go (default stderr); the fuzzers send them to /dev/null. */
void log_set_stream(FILE *f);
enum log_level log_get_level(void);

/* Every call prints one line "ingot: [warning: ]message\n". %m works and
 * refers to the errno given (or to errno for the non-_errno forms). */
int log_full_errno(enum log_level min, const char *prefix, int error, const char *fmt, ...) _printf_(4, 5);

#define log_error(...) log_full_errno(LOG_LEVEL_QUIET, "error: ", 0, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_LEVEL_QUIET, "error: ", (e), __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_LEVEL_NORMAL, "warning: ", 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_LEVEL_NORMAL, "", 0, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_LEVEL_VERBOSE, "debug: ", 0, __VA_ARGS__)

/* Spec errors: "FILE:LINE: message" on stderr; returns -EBADMSG, which the
 * command line turns into exit code 2. line 0 leaves the line out. */
int log_syntax(const char *file, unsigned line, const char *fmt, ...) _printf_(3, 4);
/* The same form for a warning; returns 0. */
int log_syntax_warning(const char *file, unsigned line, const char *fmt, ...) _printf_(3, 4);
