/* Unit tests for deployment files: the shipped example, every key, the
 * defaults and their reset, every kind of bad input with the file:line its
 * message must name, and the check that host ports are free. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "deployfile.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/macro.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

/* lines 1-3; the key under test is on line 4 */
#define HEAD "[Deployment]\nName=web\nImage=web@1.0.0\n"

static char captured[64 * 1024];

struct capture {
        int saved;
        FILE *f;
};

static void capture_begin(struct capture *c)
{
        fflush(stderr);
        c->f = tmpfile();
        assert_non_null(c->f);
        c->saved = dup(STDERR_FILENO);
        assert_true(c->saved >= 0);
        assert_true(dup2(fileno(c->f), STDERR_FILENO) >= 0);
}

static void capture_end(struct capture *c)
{
        size_t n;

        fflush(stderr);
        assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
        close(c->saved);
        rewind(c->f);
        n = fread(captured, 1, sizeof(captured) - 1, c->f);
        captured[n] = '\0';
        fclose(c->f);
}

static int load_buffer(const char *data, size_t size, struct deployfile **ret)
{
        struct capture c;
        int r;

        capture_begin(&c);
        r = deployfile_load_buffer("t.deploy", data, size, ret);
        capture_end(&c);
        return r;
}

static int load_string(const char *text, struct deployfile **ret)
{
        return load_buffer(text, strlen(text), ret);
}

static int load_file(const char *path, struct deployfile **ret)
{
        struct capture c;
        int r;

        capture_begin(&c);
        r = deployfile_load(path, ret);
        capture_end(&c);
        return r;
}

static struct deployfile *load_ok(const char *text)
{
        struct deployfile *d = NULL;
        int r = load_string(text, &d);

        if (r < 0)
                fprintf(stderr, "unexpected failure: %s", captured);
        assert_int_equal(r, 0);
        assert_non_null(d);
        return d;
}

/* expected must be a whole line of stderr */
static void assert_captured_line(const char *expected)
{
        size_t n = strlen(expected);

        for (const char *s = captured; *s;) {
                const char *nl = strchr(s, '\n');
                size_t len = nl ? (size_t)(nl - s) : strlen(s);

                if (len == n && memcmp(s, expected, n) == 0)
                        return;
                if (!nl)
                        break;
                s = nl + 1;
        }
        fail_msg("expected line '%s' in stderr, got '%s'", expected, captured);
}

static void assert_captured(const char *expected)
{
        if (!strstr(captured, expected))
                fail_msg("expected '%s' in stderr, got '%s'", expected, captured);
}

static char *path_in(const char *env, const char *rel)
{
        const char *dir = getenv(env);
        char *p;

        if (!dir)
                return NULL;
        assert_true(asprintf(&p, "%s/%s", dir, rel) >= 0);
        return p;
}

static void test_example_web(void **state _unused_)
{
        _cleanup_free_ char *path = path_in("INGOT_SRCDIR", "deploy/web.deploy");
        _cleanup_(deployfile_freep) struct deployfile *d = NULL;

        if (!path)
                skip();
        assert_int_equal(load_file(path, &d), 0);
        assert_string_equal(d->path, path);
        assert_string_equal(d->name, "web");
        assert_string_equal(d->image, "debian-12:stable");
        assert_int_equal(d->count, 2);
        assert_int_equal(d->memory, 512 * MiB);
        assert_int_equal(d->cpus, 1);
        assert_int_equal(d->n_ports, 1);
        assert_int_equal(d->ports[0].guest, 80);
        assert_int_equal(d->ports[0].host_base, 8080);
        assert_int_equal(d->max_surge, 1);
        assert_int_equal(d->max_unavailable, 0);
        assert_int_equal(d->boot_timeout, 300);
        assert_int_equal(d->health, DEPLOY_HEALTH_HTTP);
        assert_int_equal(d->health_port, 80);
        assert_string_equal(d->health_path, "/");
        assert_int_equal(d->health_interval, 2);
        assert_int_equal(deployfile_slots(d), 3);
        assert_int_equal(deployfile_host_port_for(d, 80, 0), 8080);
        assert_int_equal(deployfile_host_port_for(d, 80, 2), 8082);
        assert_int_equal(deployfile_host_port_for(d, 22, 0), 0);
}

static void test_full(void **state _unused_)
{
        _cleanup_free_ char *path = path_in("INGOT_TEST_DATA", "deploy/full.deploy"), *data = NULL;
        _cleanup_(deployfile_freep) struct deployfile *d = NULL;
        uint8_t digest[32];
        size_t size;

        if (!path)
                skip();
        assert_int_equal(read_full_file(path, 1 << 20, &data, &size), 0);
        assert_int_equal(load_file(path, &d), 0);
        sha256_buffer(data, size, digest);
        assert_memory_equal(d->digest, digest, 32);
        assert_string_equal(d->name, "web-1.test_a");
        assert_string_equal(d->image, "ami-0123456789abcdef0");
        assert_int_equal(d->count, 3);
        assert_int_equal(d->memory, 1 * GiB);
        assert_int_equal(d->cpus, 2);
        /* a second Ports= line adds to the first */
        assert_int_equal(d->n_ports, 3);
        assert_int_equal(d->ports[0].guest, 80);
        assert_int_equal(d->ports[0].host_base, 18080);
        assert_int_equal(d->ports[0].line, 8);
        assert_int_equal(d->ports[1].guest, 22);
        assert_int_equal(d->ports[1].host_base, 12200);
        assert_int_equal(d->ports[2].guest, 443);
        assert_int_equal(d->ports[2].host_base, 18443);
        assert_int_equal(d->ports[2].line, 9);
        assert_int_equal(d->max_surge, 2);
        assert_int_equal(d->max_unavailable, 1);
        assert_int_equal(d->boot_timeout, 120);
        assert_int_equal(d->health, DEPLOY_HEALTH_HTTP);
        assert_int_equal(d->health_port, 80);
        assert_string_equal(d->health_path, "/healthz?full=1");
        assert_int_equal(d->health_interval, 5);
        assert_int_equal(deployfile_slots(d), 5);
        assert_int_equal(deployfile_host_port(d, 1, 4), 12204);
        assert_int_equal(deployfile_host_port(d, 3, 0), 0);
        assert_int_equal(deployfile_key_line(d, "Deployment", "Count"), 5);
        assert_int_equal(deployfile_key_line(d, "Health", "HTTP"), 16);
        assert_int_equal(deployfile_key_line(d, "Health", "TCP"), 0);
        assert_int_equal(deployfile_key_line(d, "Nope", "TCP"), 0);
}

static void test_defaults(void **state _unused_)
{
        _cleanup_free_ char *path = path_in("INGOT_TEST_DATA", "deploy/minimal.deploy");
        _cleanup_(deployfile_freep) struct deployfile *d = NULL;

        if (!path)
                skip();
        assert_int_equal(load_file(path, &d), 0);
        assert_string_equal(d->name, "tiny");
        assert_string_equal(d->image, "busybox@1.0.0");
        assert_int_equal(d->count, 1);
        assert_int_equal(d->memory, 512 * MiB);
        assert_int_equal(d->cpus, 1);
        assert_int_equal(d->n_ports, 0);
        assert_null(d->ports);
        assert_int_equal(d->max_surge, 1);
        assert_int_equal(d->max_unavailable, 0);
        assert_int_equal(d->boot_timeout, 300);
        assert_int_equal(d->health, DEPLOY_HEALTH_READY_LINE);
        assert_int_equal(d->health_port, 0);
        assert_null(d->health_path);
        assert_int_equal(d->health_interval, 2);
        assert_int_equal(deployfile_slots(d), 2);
}

static void test_keys(void **state _unused_)
{
        struct deployfile *d;

        /* an empty assignment restores the default, Ports= empties the list */
        d = load_ok(HEAD "Count=3\nCount=\nMemory=2G\nMemory=\nPorts=80:8080\nPorts=\nPorts=22:2200\n"
                         "[Health]\nHTTP=22/\nHTTP=\n");
        assert_int_equal(d->count, 1);
        assert_int_equal(d->memory, 512 * MiB);
        assert_int_equal(d->n_ports, 1);
        assert_int_equal(d->ports[0].guest, 22);
        assert_int_equal(d->health, DEPLOY_HEALTH_READY_LINE);
        assert_null(d->health_path);
        deployfile_free(d);

        /* TCP health, sizes in other spellings, surge 0 with unavailable 1 */
        d = load_ok(HEAD "Count=2\nMemory=2048MiB\nCPUs=64\nPorts=22:2200\nMaxSurge=0\nMaxUnavailable=1\n"
                         "BootTimeout=86400\n[Health]\nReadyLine=true\nTCP=22\nInterval=3600\n");
        assert_int_equal(d->memory, 2 * GiB);
        assert_int_equal(d->cpus, 64);
        assert_int_equal(d->max_surge, 0);
        assert_int_equal(d->max_unavailable, 1);
        assert_int_equal(d->boot_timeout, 86400);
        assert_int_equal(d->health, DEPLOY_HEALTH_TCP);
        assert_int_equal(d->health_port, 22);
        assert_int_equal(d->health_interval, 3600);
        assert_int_equal(deployfile_slots(d), 2);
        deployfile_free(d);

        /* comments, blank lines, white space, a BOM, CRLF, the edges */
        d = load_ok("\xef\xbb\xbf# c\n; c\n\n[Deployment]\r\n  Name = a \r\nImage=n:canary\nCount=128\nMaxSurge=128\n"
                    "Memory=256G\nPorts=1:1 65535:65279\n[Health]\n");
        assert_string_equal(d->name, "a");
        assert_string_equal(d->image, "n:canary");
        assert_int_equal(d->count, 128);
        assert_int_equal(d->memory, 256 * GiB);
        assert_int_equal(d->ports[1].host_base, 65279);
        assert_int_equal(deployfile_host_port(d, 1, 255), 65534);
        deployfile_free(d);

        /* Memory at its minimum, a 63-character name */
        d = load_ok("[Deployment]\nName=abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0\n"
                    "Image=ami-abcdef0123456789a\nMemory=128M\n");
        assert_int_equal(d->memory, 128 * MiB);
        deployfile_free(d);
}

struct bad_case {
        const char *text;
        const char *expected; /* a whole line of stderr */
};

/* clang-format off */
static const struct bad_case bad_cases[] = {
        { HEAD "Replicas=2\n", "t.deploy:4: unknown key 'Replicas' in section [Deployment]" },
        { HEAD "[Health]\nCount=2\n", "t.deploy:5: unknown key 'Count' in section [Health]" },
        { HEAD "[Service]\nA=b\n", "t.deploy:4: unknown section [Service], expected [Deployment] or [Health]" },
        { "Name=web\n", "t.deploy:1: key 'Name' outside of any section, expected [Deployment] first" },
        { HEAD "[Deployment\n", "t.deploy:4: unterminated section header '[Deployment'" },
        { HEAD "just words\n", "t.deploy:4: expected Key=Value or [Section], got 'just words'" },
        { HEAD "=1\n", "t.deploy:4: missing key name before '='" },
        { HEAD "Co-unt=1\n", "t.deploy:4: invalid key name 'Co-unt'" },
        { HEAD "Count=0\n", "t.deploy:4: invalid Count= '0': must be at least 1" },
        { HEAD "Count=129\n", "t.deploy:4: invalid Count= '129': must be at most 128" },
        { HEAD "Count=-1\n", "t.deploy:4: invalid Count= '-1': expected a number from 1 to 128" },
        { HEAD "Count=two\n", "t.deploy:4: invalid Count= 'two': expected a number from 1 to 128" },
        { HEAD "Count=99999999999999999999999\n",
          "t.deploy:4: invalid Count= '99999999999999999999999': expected a number from 1 to 128" },
        { HEAD "Memory=64M\n", "t.deploy:4: invalid Memory= '64M': must be at least 128M" },
        { HEAD "Memory=512G\n", "t.deploy:4: invalid Memory= '512G': must be at most 256G" },
        { HEAD "Memory=99999999999T\n", "t.deploy:4: invalid Memory= '99999999999T': too large" },
        { HEAD "Memory=1000K\n", "t.deploy:4: invalid Memory= '1000K': not a multiple of 1M" },
        { HEAD "Memory=lots\n", "t.deploy:4: invalid Memory= 'lots': expected a size such as 512M or 2G" },
        { HEAD "CPUs=0\n", "t.deploy:4: invalid CPUs= '0': must be at least 1" },
        { HEAD "CPUs=65\n", "t.deploy:4: invalid CPUs= '65': must be at most 64" },
        { HEAD "Ports=80\n", "t.deploy:4: invalid Ports= '80': '80' is not GUEST:HOSTBASE" },
        { HEAD "Ports=0:8080\n", "t.deploy:4: invalid Ports= '0:8080': '0:8080': ports are numbers from 1 to 65535" },
        { HEAD "Ports=80:65536\n",
          "t.deploy:4: invalid Ports= '80:65536': '80:65536': ports are numbers from 1 to 65535" },
        { HEAD "Ports=80:-8080\n",
          "t.deploy:4: invalid Ports= '80:-8080': '80:-8080': ports are numbers from 1 to 65535" },
        { HEAD "Ports=http:8080\n",
          "t.deploy:4: invalid Ports= 'http:8080': 'http:8080': ports are numbers from 1 to 65535" },
        { HEAD "Ports=80:8080 80:9090\n", "t.deploy:4: invalid Ports= '80:8080 80:9090': guest port 80 is forwarded twice" },
        { HEAD "Ports=80:8080\nPorts=80:9090\n", "t.deploy:5: invalid Ports= '80:9090': guest port 80 is forwarded twice" },
        { HEAD "Ports=80:8080 443:8080\n",
          "t.deploy:4: invalid Ports= '80:8080 443:8080': host port 8080 is used twice" },
        { HEAD "Ports=80:8080 443:8081\n",
          "t.deploy:4: Ports= 443:8081 overlaps 80:8080: each pair takes 2 host ports (Count+MaxSurge)" },
        { HEAD "Ports=443:8081\nCount=4\nPorts=80:8077\n",
          "t.deploy:6: Ports= 80:8077 overlaps 443:8081: each pair takes 5 host ports (Count+MaxSurge)" },
        { HEAD "Ports=80:65535\n",
          "t.deploy:4: Ports= 80:65535: 2 slots (Count+MaxSurge) need host ports up to 65536, beyond 65535" },
        { "[Deployment]\nImage=web@1.0.0\n", "t.deploy: missing required key Name= in [Deployment]" },
        { "[Deployment]\nName=web\n", "t.deploy: missing required key Image= in [Deployment]" },
        { "[Deployment]\nName=Web\n",
          "t.deploy:2: invalid Name= 'Web': use lower-case letters, digits, '.', '_' and '-', starting with a letter or "
          "digit" },
        { "[Deployment]\nName=-web\n",
          "t.deploy:2: invalid Name= '-web': use lower-case letters, digits, '.', '_' and '-', starting with a letter "
          "or digit" },
        { "[Deployment]\nName=abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01\n",
          "t.deploy:2: invalid Name= 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01': longer than "
          "63 characters" },
        { "[Deployment]\nName=web\nImage=ami-123\n",
          "t.deploy:3: invalid Image= 'ami-123': expected an image id (ami- and 17 hex digits), NAME@VERSION or "
          "NAME:CHANNEL" },
        { "[Deployment]\nName=web\nImage=web\n",
          "t.deploy:3: invalid Image= 'web': expected an image id (ami- and 17 hex digits), NAME@VERSION or "
          "NAME:CHANNEL" },
        { "[Deployment]\nName=web\nImage=web@\n",
          "t.deploy:3: invalid Image= 'web@': expected an image id (ami- and 17 hex digits), NAME@VERSION or "
          "NAME:CHANNEL" },
        { "[Deployment]\nName=web\nImage=ami-0123456789abcdefg\n",
          "t.deploy:3: invalid Image= 'ami-0123456789abcdefg': expected an image id (ami- and 17 hex digits), "
          "NAME@VERSION or NAME:CHANNEL" },
        { HEAD "MaxUnavailable=1\n",
          "t.deploy:4: MaxUnavailable=1 must be less than Count=1: at least one instance keeps serving during a "
          "rollout" },
        { HEAD "MaxSurge=0\n",
          "t.deploy:4: MaxSurge=0 with MaxUnavailable=0 leaves a rollout no way to replace an instance, set "
          "MaxSurge=1 or more" },
        { HEAD "Count=2\nMaxSurge=3\n", "t.deploy:5: MaxSurge=3 must be at most Count=2" },
        { HEAD "BootTimeout=0\n", "t.deploy:4: invalid BootTimeout= '0': must be at least 1" },
        { HEAD "BootTimeout=86401\n", "t.deploy:4: invalid BootTimeout= '86401': must be at most 86400" },
        { HEAD "[Health]\nReadyLine=no\n",
          "t.deploy:5: invalid ReadyLine= 'no': the serial ready line is always checked; add HTTP= or TCP= for more" },
        { HEAD "[Health]\nReadyLine=maybe\n", "t.deploy:5: invalid ReadyLine= 'maybe': expected yes" },
        { HEAD "Ports=80:8080\n[Health]\nHTTP=80\n",
          "t.deploy:6: invalid HTTP= '80': expected GUEST-PORT/PATH such as 80/ or 8080/healthz" },
        { HEAD "Ports=80:8080\n[Health]\nHTTP=80/a\x7f\n",
          "t.deploy:6: binary data, not a deployment file" },
        { HEAD "Ports=80:8080\n[Health]\nHTTP=80/a b\n",
          "t.deploy:6: invalid HTTP= '80/a b': the path must be printable ASCII without spaces" },
        { HEAD "Ports=80:8080\n[Health]\nHTTP=443/\n",
          "t.deploy:6: HTTP= checks guest port 443, which Ports= does not forward" },
        { HEAD "[Health]\nTCP=22\n", "t.deploy:5: TCP= checks guest port 22, which Ports= does not forward" },
        { HEAD "[Health]\nTCP=99999\n", "t.deploy:5: invalid TCP= '99999': expected a guest port from Ports=, 1 to 65535" },
        { HEAD "Ports=80:8080 22:2200\n[Health]\nHTTP=80/\nTCP=22\n", "t.deploy:7: HTTP= and TCP= both set, choose one" },
        { HEAD "[Health]\nInterval=0\n", "t.deploy:5: invalid Interval= '0': must be at least 1" },
        { HEAD "[Health]\nInterval=3601\n", "t.deploy:5: invalid Interval= '3601': must be at most 3600" },
        { "", "t.deploy: no settings, not a deployment file (expected a [Deployment] section)" },
        { "# only a comment\n\n[Deployment]\n",
          "t.deploy: no settings, not a deployment file (expected a [Deployment] section)" },
        { HEAD "Name=\xff\xfe\n", "t.deploy:4: invalid UTF-8" },
        { "\x7f" "ELF\x02\x01\x01\x00\x00\x00", "t.deploy:1: binary data, not a deployment file" },
};
/* clang-format on */

static void test_bad_input(void **state _unused_)
{
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                struct deployfile *d = NULL;
                int r = load_string(bad_cases[i].text, &d);

                if (r != -EBADMSG)
                        fail_msg("case %zu: expected -EBADMSG, got %d (%s)", i, r, captured);
                assert_null(d);
                assert_captured_line(bad_cases[i].expected);
        }
}

/* Every bad line is reported, not only the first. */
static void test_all_errors_reported(void **state _unused_)
{
        struct deployfile *d = NULL;

        assert_int_equal(load_string("[Deployment]\nName=web\nCount=0\nCPUs=0\nFoo=1\n", &d), -EBADMSG);
        assert_captured_line("t.deploy:3: invalid Count= '0': must be at least 1");
        assert_captured_line("t.deploy:4: invalid CPUs= '0': must be at least 1");
        assert_captured_line("t.deploy:5: unknown key 'Foo' in section [Deployment]");
        assert_null(d);

        /* a flood of bad lines stops at ten */
        {
                char text[4096] = "[Deployment]\n";

                for (int i = 0; i < 50; i++)
                        strcat(text, "Bad=1\n");
                assert_int_equal(load_string(text, &d), -EBADMSG);
                assert_captured_line("t.deploy: too many errors, giving up");
                assert_null(strstr(captured, "t.deploy:12:"));
        }
}

static void test_huge_input(void **state _unused_)
{
        struct deployfile *d = NULL;
        size_t n = 1024 * 1024 - 64;
        _cleanup_free_ char *text = malloc(n + 1);
        _cleanup_free_ char *big = malloc(2 * 1024 * 1024);

        /* a 1 MB line */
        assert_non_null(text);
        strcpy(text, HEAD "Name=");
        memset(text + strlen(text), 'a', n - strlen(text) - 1);
        text[n - 1] = '\n';
        text[n] = '\0';
        assert_int_equal(load_buffer(text, n, &d), -EBADMSG);
        assert_captured_line("t.deploy:4: line too long (more than 4096 bytes)");

        /* a line of exactly the limit is read */
        memset(text, 0, n);
        strcpy(text, HEAD "Ports=");
        memset(text + strlen(text), ' ', 4096 - strlen("Ports="));
        strcat(text, "\n");
        d = load_ok(text);
        assert_int_equal(d->n_ports, 0);
        d = deployfile_free(d);

        /* more than 1 MiB */
        assert_non_null(big);
        memset(big, '#', 2 * 1024 * 1024);
        assert_int_equal(load_buffer(big, 2 * 1024 * 1024, &d), -EBADMSG);
        assert_captured_line("t.deploy: larger than 1 MiB, not a deployment file");

        /* binary garbage with NULs */
        {
                unsigned char garbage[512];

                for (size_t i = 0; i < sizeof(garbage); i++)
                        garbage[i] = (unsigned char)(i * 131 + 7);
                assert_int_equal(load_buffer((const char *)garbage, sizeof(garbage), &d), -EBADMSG);
                assert_captured("t.deploy:1: ");
        }
        assert_null(d);
}

static void test_files(void **state _unused_)
{
        _cleanup_free_ char *unknown = path_in("INGOT_TEST_DATA", "deploy/bad-unknown-key.deploy");
        _cleanup_free_ char *zero = path_in("INGOT_TEST_DATA", "deploy/bad-count-zero.deploy");
        _cleanup_free_ char *overlap = path_in("INGOT_TEST_DATA", "deploy/bad-overlap.deploy");
        _cleanup_free_ char *expected = NULL;
        struct deployfile *d = NULL;

        if (!unknown)
                skip();
        assert_int_equal(load_file(unknown, &d), -EBADMSG);
        assert_true(asprintf(&expected, "%s:4: unknown key 'Replicas' in section [Deployment]", unknown) >= 0);
        assert_captured_line(expected);
        expected = x_free(expected);

        assert_int_equal(load_file(zero, &d), -EBADMSG);
        assert_true(asprintf(&expected, "%s:4: invalid Count= '0': must be at least 1", zero) >= 0);
        assert_captured_line(expected);
        expected = x_free(expected);

        assert_int_equal(load_file(overlap, &d), -EBADMSG);
        assert_true(asprintf(&expected,
                             "%s:5: Ports= 443:8083 overlaps 80:8080: each pair takes 5 host ports (Count+MaxSurge)",
                             overlap) >= 0);
        assert_captured_line(expected);

        /* a missing file is bad input (exit 2), like a malformed one */
        assert_int_equal(load_file("/nonexistent/x.deploy", &d), -EBADMSG);
        assert_captured("cannot read deployment file '/nonexistent/x.deploy'");
        assert_null(d);
}

/* A listening socket on an ephemeral loopback port; returns the fd. */
static int listen_any(uint16_t *ret_port)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 1), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

static void test_ports_in_use(void **state _unused_)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *text = NULL, *expected = NULL;
        struct deployfile *d;
        struct capture c;
        uint16_t port, skip[2];
        int r;

        fd = listen_any(&port);
        if (port < 1000 || port > 65000)
                skip();

        /* slot 0 of the second pair, written on line 5 */
        assert_true(asprintf(&text, HEAD "Ports=22:%u\nPorts=80:%u\n", port - 500, port) >= 0);
        d = load_ok(text);
        capture_begin(&c);
        r = deployfile_check_ports_free(d, NULL, 0);
        capture_end(&c);
        if (r == -EBADMSG && !strstr(captured, "t.deploy:5:"))
                skip(); /* port - 500 .. is taken by something else on this machine */
        assert_int_equal(r, -EBADMSG);
        assert_true(asprintf(&expected, "t.deploy:5: port %u is in use", port) >= 0);
        assert_captured_line(expected);

        /* the deployment's own instances hold it: not an error */
        skip[0] = port;
        skip[1] = (uint16_t)(port + 1);
        capture_begin(&c);
        r = deployfile_check_ports_free(d, skip, 2);
        capture_end(&c);
        assert_true(r == 0 || !strstr(captured, expected));
        deployfile_free(d);
        text = x_free(text);
        expected = x_free(expected);

        /* the port of the last slot (MaxSurge) counts too */
        assert_true(asprintf(&text, HEAD "Count=2\nPorts=80:%u\n", port - 2) >= 0);
        d = load_ok(text);
        assert_int_equal(deployfile_slots(d), 3);
        capture_begin(&c);
        r = deployfile_check_ports_free(d, NULL, 0);
        capture_end(&c);
        assert_int_equal(r, -EBADMSG);
        assert_true(asprintf(&expected, "t.deploy:5: port %u is in use", port) >= 0);
        if (!strstr(captured, expected) && !strstr(captured, "is in use"))
                fail_msg("got '%s'", captured);
        deployfile_free(d);
}

static void test_ports_free(void **state _unused_)
{
        _cleanup_free_ char *text = NULL;
        struct deployfile *d;
        uint16_t port;
        int fd, r;

        fd = listen_any(&port);
        close(fd);
        /* no ports: nothing to check */
        d = load_ok(HEAD);
        assert_int_equal(deployfile_check_ports_free(d, NULL, 0), 0);
        deployfile_free(d);

        assert_true(asprintf(&text, HEAD "MaxSurge=0\nCount=2\nMaxUnavailable=1\nPorts=80:%u\n", port) >= 0);
        d = load_ok(text);
        assert_int_equal(deployfile_slots(d), 2);
        r = deployfile_check_ports_free(d, (const uint16_t[]){ (uint16_t)(port + 1) }, 1);
        /* port was free a moment ago; another process may have taken it since */
        assert_true(r == 0 || r == -EBADMSG);
        deployfile_free(d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_example_web),  cmocka_unit_test(test_full),
                cmocka_unit_test(test_defaults),     cmocka_unit_test(test_keys),
                cmocka_unit_test(test_bad_input),    cmocka_unit_test(test_all_errors_reported),
                cmocka_unit_test(test_huge_input),   cmocka_unit_test(test_files),
                cmocka_unit_test(test_ports_in_use), cmocka_unit_test(test_ports_free),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
