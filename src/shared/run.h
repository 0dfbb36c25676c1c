/* Running programs by argv, never through a shell. One helper forks, execs,
 * captures what the program prints and returns how it ended. It does not
 * log: the caller decides what a failure means and says so once. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct run_options {
        const char *const *env; /* "KEY=VALUE" entries set (or overridden) in the child; NULL = none */
        const char *cwd;        /* NULL = inherit */
        int stdin_fd;           /* fd to read from; -1 or 0 = /dev/null (use RUN_STDIN_INHERIT to pass ours) */
        int stdout_fd;          /* fd to write to instead of capturing; -1 or 0 = capture (or discard) */
        unsigned timeout_sec;   /* 0 = none; on expiry the child's process group is killed */
};

#define RUN_STDIN_INHERIT (-2)

/* Runs argv[0] (looked up in PATH) with argv. Returns the exit status
 * (0..255), 128+N when killed by signal N, -ETIMEDOUT when the timeout hit,
 * or a negative errno when it could not be started (-ENOENT: no such
 * program). When ret_stdout/ret_stderr are given they receive the output
 * (stderr: its last 64 KiB) as NUL-terminated strings the caller frees,
 * set whatever the outcome once the program ran. */
int run_argv(const char *const *argv, const struct run_options *o, char **ret_stdout, char **ret_stderr);

/* Starts argv in the background, for a helper that serves while others
 * run (faked-sysv). Its stdout is a pipe whose read end (O_CLOEXEC) goes
 * to *ret_stdout_fd, which the caller closes; its stderr is discarded.
 * deathsig is sent to it when ingot dies (PR_SET_PDEATHSIG), so it never
 * outlives ingot: SIGTERM for one that must clean up, SIGKILL otherwise.
 * Returns 0 once the program was exec'd, or a negative errno (-ENOENT: no
 * such program). The caller must end it with run_stop(). */
int run_spawn(const char *const *argv, const struct run_options *o, int deathsig, pid_t *ret_pid, int *ret_stdout_fd);

/* Sends sig to a program run_spawn() started (none when sig is 0) and
 * waits for it; returns what run_argv() would for its end. */
int run_stop(pid_t pid, int sig);

/* The first line of s (or the last non-empty one when last), copied into
 * buf, for one-line error messages. */
const char *run_output_line(const char *s, bool last, char *buf, size_t size);
