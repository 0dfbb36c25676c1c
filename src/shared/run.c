/* Owns run_argv(): fork, exec by argv, capture, timeout. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "run.h"

extern char **environ;

#define STDERR_KEEP (64 * 1024)

struct buf {
        char *data;
        size_t size;
        size_t alloc;
        size_t keep; /* 0 = everything */
};

static int buf_append(struct buf *b, const char *p, size_t n)
{
        if (b->keep && n >= b->keep) {
                p += n - b->keep;
                n = b->keep;
                b->size = 0;
        } else if (b->keep && b->size + n > b->keep) {
                size_t drop = b->size + n - b->keep;
                memmove(b->data, b->data + drop, b->size - drop);
                b->size -= drop;
        }
        if (b->size + n + 1 > b->alloc) {
                size_t want = (b->size + n + 1) * 2;
                char *m = realloc(b->data, want);
                if (!m)
                        return -ENOMEM;
                b->data = m;
                b->alloc = want;
        }
        memcpy(b->data + b->size, p, n);
        b->size += n;
        b->data[b->size] = '\0';
        return 0;
}

static char **build_env(const char *const *extra)
{
        size_t n_env = 0, n_extra = 0, k = 0;
        char **e;

        while (environ[n_env])
                n_env++;
        while (extra && extra[n_extra])
                n_extra++;
        e = calloc(n_env + n_extra + 1, sizeof(char *));
        if (!e)
                return NULL;
        for (size_t i = 0; i < n_env; i++) {
                bool overridden = false;
                size_t len = strcspn(environ[i], "=");

                for (size_t j = 0; j < n_extra && !overridden; j++)
                        overridden = strncmp(environ[i], extra[j], len) == 0 && extra[j][len] == '=';
                if (!overridden)
                        e[k++] = environ[i];
        }
        for (size_t j = 0; j < n_extra; j++)
                e[k++] = (char *)extra[j];
        e[k] = NULL;
        return e;
}

static long long now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

_noreturn_ static void child(const char *const *argv, const struct run_options *o, char **env, int out_w, int err_w,
                             int exec_w, pid_t parent, int deathsig)
{
        int in;

        setpgid(0, 0);
        /* Die with ingot: a killed build leaves no mke2fs writing on. An
         * ingot killed before the prctl() would go unnoticed, so the
         * parent is checked after it. */
        if (prctl(PR_SET_PDEATHSIG, deathsig) < 0)
                goto fail;
        if (getppid() != parent) {
                errno = ESRCH;
                goto fail;
        }
        if (o->stdin_fd == RUN_STDIN_INHERIT)
                in = STDIN_FILENO;
        else if (o->stdin_fd > 0)
                in = o->stdin_fd;
        else
                in = open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, STDIN_FILENO) < 0 || dup2(out_w, STDOUT_FILENO) < 0 || dup2(err_w, STDERR_FILENO) < 0)
                goto fail;
        if (o->cwd && chdir(o->cwd) < 0)
                goto fail;
        signal(SIGPIPE, SIG_DFL);
        execvpe(argv[0], (char *const *)argv, env);
fail : {
        int e = errno;
        ssize_t _unused_ w = write(exec_w, &e, sizeof(e));
}
        _exit(127);
}

int run_argv(const char *const *argv, const struct run_options *opts, char **ret_stdout, char **ret_stderr)
{
        static const struct run_options defaults = { 0 };
        const struct run_options *o = opts ? opts : &defaults;
        struct buf out = { 0 }, err = { .keep = STDERR_KEEP };
        int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, execp[2] = { -1, -1 };
        _cleanup_free_ char **env = NULL;
        long long deadline = o->timeout_sec ? now_ms() + (long long)o->timeout_sec * 1000 : 0;
        bool timed_out = false;
        int status = 0, r = 0, exec_errno = 0;
        pid_t pid, parent = getpid();

        env = build_env(o->env);
        if (!env)
                return -ENOMEM;
        if (pipe2(errp, O_CLOEXEC) < 0 || pipe2(execp, O_CLOEXEC) < 0 ||
            (o->stdout_fd <= 0 && pipe2(outp, O_CLOEXEC) < 0)) {
                r = -errno;
                goto finish;
        }

        pid = fork();
        if (pid < 0) {
                r = -errno;
                goto finish;
        }
        if (pid == 0)
                child(argv, o, env, o->stdout_fd > 0 ? o->stdout_fd : outp[1], errp[1], execp[1], parent, SIGKILL);
        setpgid(pid, pid); /* also from here, so a kill cannot race the child's own call */

        close(errp[1]);
        errp[1] = -1;
        close(execp[1]);
        execp[1] = -1;
        if (outp[1] >= 0) {
                close(outp[1]);
                outp[1] = -1;
        }

        for (;;) {
                struct pollfd p[2];
                int n = 0, timeout = -1;

                if (outp[0] >= 0)
                        p[n++] = (struct pollfd){ .fd = outp[0], .events = POLLIN };
                if (errp[0] >= 0)
                        p[n++] = (struct pollfd){ .fd = errp[0], .events = POLLIN };
                if (n == 0)
                        break;
                if (deadline) {
                        long long left = deadline - now_ms();
                        if (left <= 0) {
                                kill(-pid, SIGKILL);
                                timed_out = true;
                                break;
                        }
                        timeout = (int)left;
                }
                if (poll(p, (nfds_t)n, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        kill(-pid, SIGKILL);
                        break;
                }
                for (int i = 0; i < n; i++) {
                        char chunk[8192];
                        ssize_t k;
                        bool is_out = p[i].fd == outp[0];

                        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        k = read(p[i].fd, chunk, sizeof(chunk));
                        if (k > 0) {
                                if (buf_append(is_out ? &out : &err, chunk, (size_t)k) < 0)
                                        r = -ENOMEM;
                                continue;
                        }
                        if (k < 0 && errno == EINTR)
                                continue;
                        close(p[i].fd);
                        if (is_out)
                                outp[0] = -1;
                        else
                                errp[0] = -1;
                }
        }

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        r = r < 0 ? r : -errno;
                        goto finish;
                }
        if (read(execp[0], &exec_errno, sizeof(exec_errno)) == (ssize_t)sizeof(exec_errno) && exec_errno > 0) {
                r = -exec_errno;
                goto finish;
        }
        if (r < 0)
                goto finish;
        if (timed_out)
                r = -ETIMEDOUT;
        else if (WIFEXITED(status))
                r = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                r = 128 + WTERMSIG(status);
        else
                r = -EIO;

        if (ret_stdout) {
                *ret_stdout = out.data ? TAKE_PTR(out.data) : strdup("");
        }
        if (ret_stderr) {
                *ret_stderr = err.data ? TAKE_PTR(err.data) : strdup("");
        }
finish:
        for (size_t i = 0; i < 2; i++) {
                if (outp[i] >= 0)
                        close(outp[i]);
                if (errp[i] >= 0)
                        close(errp[i]);
                if (execp[i] >= 0)
                        close(execp[i]);
        }
        free(out.data);
        free(err.data);
        return r;
}

int run_spawn(const char *const *argv, const struct run_options *opts, int deathsig, pid_t *ret_pid, int *ret_stdout_fd)
{
        static const struct run_options defaults = { 0 };
        const struct run_options *o = opts ? opts : &defaults;
        int outp[2] = { -1, -1 }, execp[2] = { -1, -1 }, null_fd = -1, exec_errno = 0, r = 0;
        _cleanup_free_ char **env = NULL;
        pid_t pid, parent = getpid();
        ssize_t n;

        env = build_env(o->env);
        if (!env)
                return -ENOMEM;
        null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null_fd < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(execp, O_CLOEXEC) < 0) {
                r = -errno;
                goto finish;
        }
        pid = fork();
        if (pid < 0) {
                r = -errno;
                goto finish;
        }
        if (pid == 0)
                child(argv, o, env, outp[1], null_fd, execp[1], parent, deathsig);
        setpgid(pid, pid);
        close(execp[1]);
        execp[1] = -1;
        /* EOF once exec succeeded (the pipe is O_CLOEXEC), else its errno */
        do
                n = read(execp[0], &exec_errno, sizeof(exec_errno));
        while (n < 0 && errno == EINTR);
        if (n == (ssize_t)sizeof(exec_errno)) {
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                r = exec_errno > 0 ? -exec_errno : -EIO;
                goto finish;
        }
        *ret_pid = pid;
        *ret_stdout_fd = TAKE_FD(outp[0]);
finish:
        for (size_t i = 0; i < 2; i++) {
                if (outp[i] >= 0)
                        close(outp[i]);
                if (execp[i] >= 0)
                        close(execp[i]);
        }
        if (null_fd >= 0)
                close(null_fd);
        return r;
}

int run_stop(pid_t pid, int sig)
{
        int status;

        if (sig > 0)
                (void)kill(pid, sig);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return -EIO;
}

const char *run_output_line(const char *s, bool last, char *buf, size_t size)
{
        const char *start = s, *end;

        if (!s || size == 0)
                return "";
        if (last) {
                const char *p = s + strlen(s);
                while (p > s && (p[-1] == '\n' || p[-1] == '\r'))
                        p--;
                end = p;
                while (p > s && p[-1] != '\n')
                        p--;
                start = p;
        } else
                end = start + strcspn(start, "\n");
        snprintf(buf, size, "%.*s", (int)(end - start), start);
        return buf;
}
