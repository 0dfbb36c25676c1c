/* Unit tests for src/shared: sizes, numbers, booleans, strv, id derivation
 * and the UUID text form, whole-file I/O. */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/parse-util.h"
#include "shared/run.h"
#include "shared/strv.h"

static void test_parse_size(void **state)
{
        uint64_t v = 7;

        assert_int_equal(parse_size("512", 1, &v), 0);
        assert_int_equal(v, 512);
        assert_int_equal(parse_size("512", 1 << 20, &v), 0);
        assert_int_equal(v, UINT64_C(512) << 20);
        assert_int_equal(parse_size("4K", 1, &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(parse_size("256M", 1, &v), 0);
        assert_int_equal(v, UINT64_C(256) << 20);
        assert_int_equal(parse_size("256MiB", 1, &v), 0);
        assert_int_equal(v, UINT64_C(256) << 20);
        assert_int_equal(parse_size("2g", 1, &v), 0);
        assert_int_equal(v, UINT64_C(2) << 30);
        assert_int_equal(parse_size("1T", 1, &v), 0);
        assert_int_equal(v, UINT64_C(1) << 40);

        v = 7;
        assert_int_equal(parse_size("", 1, &v), -EINVAL);
        assert_int_equal(parse_size("-1", 1, &v), -EINVAL);
        assert_int_equal(parse_size("12Q", 1, &v), -EINVAL);
        assert_int_equal(parse_size("1.5G", 1, &v), -EINVAL);
        assert_int_equal(parse_size(" 1G", 1, &v), -EINVAL);
        assert_int_equal(parse_size("1G ", 1, &v), -EINVAL);
        assert_int_equal(parse_size("99999999999999999999", 1, &v), -ERANGE);
        assert_int_equal(parse_size("17179869184G", 1, &v), -ERANGE);
        assert_int_equal(parse_size("18446744073709551615", 2, &v), -ERANGE);
        assert_int_equal(v, 7); /* untouched on failure */
}

static void test_parse_uint64_boolean(void **state)
{
        uint64_t v;
        bool b = false;

        assert_int_equal(parse_uint64("18446744073709551615", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(parse_uint64("18446744073709551616", &v), -ERANGE);
        assert_int_equal(parse_uint64("12a", &v), -EINVAL);
        assert_int_equal(parse_uint64("", &v), -EINVAL);
        assert_int_equal(parse_boolean("yes", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("Off", &b), 0);
        assert_false(b);
        assert_int_equal(parse_boolean("maybe", &b), -EINVAL);
}

static void test_strv(void **state)
{
        _cleanup_strv_free_ char **l = NULL;

        assert_int_equal(strv_length(l), 0);
        assert_int_equal(strv_split_extend(&l, "  a b,,c ", " ,"), 0);
        assert_int_equal(strv_length(l), 3);
        assert_string_equal(l[0], "a");
        assert_string_equal(l[2], "c");
        assert_true(strv_contains(l, "b"));
        assert_int_equal(strv_extend(&l, "b"), 0);
        assert_int_equal(strv_remove(l, "b"), 2);
        assert_int_equal(strv_length(l), 2);
        assert_false(strv_contains(l, "b"));
}

static void test_id128_roundtrip(void **state)
{
        id128_t a, b;
        char buf[ID128_STRING_MAX];

        assert_int_equal(id128_from_string("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", &a), 0);
        assert_string_equal(id128_to_string(&a, buf), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_int_equal(id128_from_string(buf, &b), 0);
        assert_true(id128_equal(&a, &b));
        assert_int_equal(id128_from_string("c12a7328f81f-11d2-ba4b-00a0c93ec93b0", &a), -EINVAL);
        assert_int_equal(id128_from_string("g12a7328-f81f-11d2-ba4b-00a0c93ec93b", &a), -EINVAL);
        assert_int_equal(id128_from_string("", &a), -EINVAL);
}

static void test_id128_derive(void **state)
{
        uint8_t key[32] = { 1, 2, 3 }, other[32] = { 1, 2, 4 };
        id128_t a, b, c;
        char buf[ID128_STRING_MAX];

        id128_derive(key, "disk-uuid", 9, &a);
        id128_derive(key, "disk-uuid", 9, &b);
        id128_derive(other, "disk-uuid", 9, &c);
        assert_true(id128_equal(&a, &b));  /* deterministic */
        assert_false(id128_equal(&a, &c)); /* depends on the key */
        id128_derive(key, "disk-uuiD", 9, &c);
        assert_false(id128_equal(&a, &c)); /* and on the data */
        /* a version-4, RFC 4122 variant UUID */
        id128_to_string(&a, buf);
        assert_int_equal(buf[14], '4');
        assert_non_null(strchr("89ab", buf[19]));
        /* HMAC-SHA256 with an all-zero key over "x", first 16 bytes, v4-marked
         * (value computed independently with Python hmac):
         * pinned so a change to the derivation (which would change every
         * image's GUIDs) cannot go unnoticed. */
        {
                static const uint8_t zero[32];
                id128_derive(zero, "x", 1, &a);
                assert_string_equal(id128_to_string(&a, buf), "4cbc9609-9a64-47ce-8024-61f10549b489");
        }
}

static void test_fileio(void **state)
{
        char dir[] = "/tmp/ingot-test-XXXXXX";
        _cleanup_free_ char *path = NULL, *data = NULL;
        size_t size = 0;

        assert_non_null(mkdtemp(dir));
        assert_true(asprintf(&path, "%s/f", dir) > 0);
        assert_int_equal(write_file_atomic(path, "hello\0world", 11, 0644), 0);
        assert_int_equal(read_full_file(path, 1024, &data, &size), 0);
        assert_int_equal(size, 11);
        assert_memory_equal(data, "hello\0world", 11);
        data = x_free(data);
        assert_int_equal(read_full_file(path, 4, &data, &size), -EFBIG);
        assert_null(data);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(read_full_file(path, 4, &data, &size), -ENOENT);
        assert_int_equal(rmdir(dir), 0); /* no temporary file left behind */
}

static void test_run_argv(void **state)
{
        _cleanup_free_ char *out = NULL, *err = NULL;
        char line[64];

        {
                const char *argv[] = { "sh", "-c", "echo out; echo err1 >&2; echo err2 >&2; exit 3", NULL };
                assert_int_equal(run_argv(argv, NULL, &out, &err), 3);
                assert_string_equal(out, "out\n");
                assert_string_equal(err, "err1\nerr2\n");
                assert_string_equal(run_output_line(err, true, line, sizeof(line)), "err2");
                assert_string_equal(run_output_line(err, false, line, sizeof(line)), "err1");
        }
        out = x_free(out);
        {
                /* the environment is extended, the argument is not re-split */
                const char *env[] = { "INGOT_T=a b", NULL };
                const char *argv[] = { "printenv", "INGOT_T", NULL };
                struct run_options o = { .env = env };
                assert_int_equal(run_argv(argv, &o, &out, NULL), 0);
                assert_string_equal(out, "a b\n");
        }
        {
                const char *argv[] = { "ingot-no-such-program", NULL };
                assert_int_equal(run_argv(argv, NULL, NULL, NULL), -ENOENT);
        }
        {
                const char *argv[] = { "sh", "-c", "kill -TERM $$", NULL };
                assert_int_equal(run_argv(argv, NULL, NULL, NULL), 128 + 15);
        }
        {
                /* the timeout kills the whole process group, grandchildren too */
                const char *argv[] = { "sh", "-c", "sleep 30 & sleep 30", NULL };
                struct run_options o = { .timeout_sec = 1 };
                assert_int_equal(run_argv(argv, &o, NULL, NULL), -ETIMEDOUT);
        }
}

/* True once pid has ended (gone, or a zombie of whoever reaps orphans). */
static bool ended_within(pid_t pid, int seconds)
{
        for (int i = 0; i < seconds * 100; i++) {
                char path[64], buf[512], *p;
                FILE *f;
                size_t n;

                snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
                f = fopen(path, "re");
                if (!f)
                        return true;
                n = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[n] = '\0';
                p = strrchr(buf, ')');
                if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
                        return true;
                nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
        }
        return false;
}

/* A process that starts "sleep 60" by run_spawn() (spawn) or run_argv(),
 * sends its pid up the pipe, and is then SIGKILLed: the sleep must end
 * with it (PR_SET_PDEATHSIG). */
static void check_dies_with_parent(bool spawn)
{
        int p[2];
        pid_t mid, sleeper = 0;

        assert_int_equal(pipe(p), 0);
        mid = fork();
        assert_true(mid >= 0);
        if (mid == 0) {
                const char *argv[] = { "sleep", "60", NULL };
                pid_t pid;
                int fd;

                close(p[0]);
                if (spawn) {
                        if (run_spawn(argv, NULL, SIGKILL, &pid, &fd) < 0)
                                _exit(1);
                        (void)!write(p[1], &pid, sizeof(pid));
                        pause();
                } else {
                        /* run_argv() does not say the pid: the child does, on fd 3 */
                        const char *sh[] = { "sh", "-c", "echo $$ >&3; exec sleep 60", NULL };

                        if (dup2(p[1], 3) < 0)
                                _exit(1);
                        run_argv(sh, NULL, NULL, NULL);
                }
                _exit(0);
        }
        close(p[1]);
        if (spawn)
                assert_int_equal(read(p[0], &sleeper, sizeof(sleeper)), (ssize_t)sizeof(sleeper));
        else {
                char buf[32] = "";
                ssize_t n = read(p[0], buf, sizeof(buf) - 1);

                assert_true(n > 0);
                sleeper = (pid_t)strtol(buf, NULL, 10);
        }
        close(p[0]);
        assert_true(sleeper > 0);
        assert_false(ended_within(sleeper, 0));
        kill(mid, SIGKILL);
        assert_int_equal(waitpid(mid, NULL, 0), mid);
        assert_true(ended_within(sleeper, 5));
}

static void test_run_spawn(void **state)
{
        {
                const char *argv[] = { "sh", "-c", "echo KEY:$$; exec sleep 30", NULL };
                char buf[64] = "";
                pid_t pid;
                int fd;

                assert_int_equal(run_spawn(argv, NULL, SIGKILL, &pid, &fd), 0);
                assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
                assert_true(strncmp(buf, "KEY:", 4) == 0);
                assert_int_equal(strtol(buf + 4, NULL, 10), pid);
                assert_int_equal(run_stop(pid, SIGTERM), 128 + SIGTERM);
                close(fd);
        }
        {
                const char *argv[] = { "sh", "-c", "exit 4", NULL };
                pid_t pid;
                int fd;

                assert_int_equal(run_spawn(argv, NULL, SIGKILL, &pid, &fd), 0);
                assert_int_equal(run_stop(pid, 0), 4);
                close(fd);
        }
        {
                const char *argv[] = { "ingot-no-such-program", NULL };
                pid_t pid = 0;
                int fd = -1;

                assert_int_equal(run_spawn(argv, NULL, SIGKILL, &pid, &fd), -ENOENT);
                assert_int_equal(fd, -1);
        }
        check_dies_with_parent(true);
        check_dies_with_parent(false);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size),   cmocka_unit_test(test_parse_uint64_boolean),
                cmocka_unit_test(test_strv),         cmocka_unit_test(test_id128_roundtrip),
                cmocka_unit_test(test_id128_derive), cmocka_unit_test(test_fileio),
                cmocka_unit_test(test_run_argv),     cmocka_unit_test(test_run_spawn),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
