/* Unit tests for the template loader: the shipped templates, defaults, list
 * and reset semantics, path resolution, and every kind of bad input with
 * the file:line its message must name. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <ini.h>

#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/macro.h"
#include "shared/strv.h"
#include "template.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

#define HEAD "[Image]\nName=a\n[Rootfs]\n"
#define DIR_SRC "Source=directory\nPath=/t\n"

/* stderr of the last call, NUL-terminated. */
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

static int load_buffer(const char *name, const char *data, size_t size, struct template **ret)
{
        struct capture c;
        int r;

        capture_begin(&c);
        r = template_load_buffer(name, data, size, ret);
        capture_end(&c);
        return r;
}

static int load_string(const char *text, struct template **ret)
{
        return load_buffer("t.conf", text, strlen(text), ret);
}

static int load_file(const char *path, struct template **ret)
{
        struct capture c;
        int r;

        capture_begin(&c);
        r = template_load(path, ret);
        capture_end(&c);
        return r;
}

static struct template *load_ok(const char *text)
{
        struct template *t = NULL;
        int r = load_string(text, &t);

        if (r < 0)
                fprintf(stderr, "unexpected failure: %s", captured);
        assert_int_equal(r, 0);
        assert_non_null(t);
        return t;
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

/* Line (1-based) of the first line of the file starting with prefix. */
static unsigned line_of(const char *data, const char *prefix)
{
        unsigned line = 1;

        for (const char *s = data; *s; line++) {
                const char *nl = strchr(s, '\n');
                if (strncmp(s, prefix, strlen(prefix)) == 0)
                        return line;
                if (!nl)
                        break;
                s = nl + 1;
        }
        return 0;
}

static void assert_strv_equal(char **l, const char *const *expected)
{
        size_t n = 0;

        while (expected[n])
                n++;
        assert_int_equal(strv_length(l), n);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(l[i], expected[i]);
}

static void assert_digest_of(const struct template *t, const char *data, size_t size)
{
        uint8_t digest[32];

        sha256_buffer(data, size, digest);
        assert_memory_equal(t->digest, digest, 32);
}

static void test_busybox_template(void **state)
{
        _cleanup_free_ char *path = path_in("INGOT_SRCDIR", "templates/busybox.conf"), *data = NULL;
        _cleanup_(template_freep) struct template *t = NULL;
        size_t size;

        if (!path)
                skip();
        assert_int_equal(read_full_file(path, 1 << 20, &data, &size), 0);
        assert_int_equal(load_file(path, &t), 0);
        assert_string_equal(t->path, path);
        assert_digest_of(t, data, size);
        assert_string_equal(t->name, "busybox");
        assert_null(t->version);
        assert_string_equal(t->architecture, "x86-64");
        assert_true(t->has_source_date_epoch);
        assert_int_equal(t->source_date_epoch, 1700000000);
        assert_int_equal(t->source, ROOTFS_SOURCE_BUSYBOX);
        assert_null(t->variant);
        assert_null(t->suite);
        assert_null(t->mirror);
        assert_strv_equal(t->packages, (const char *const[]){ "busybox-static", NULL });
        assert_string_equal(t->kernel_package, "linux-image-amd64");
        assert_null(t->kernel);
        assert_null(t->initrd);
        assert_string_equal(t->cmdline, "console=ttyS0,115200");
        assert_int_equal(t->boot_mode, BOOT_MODE_BOTH);
        assert_int_equal(t->timeout, 0);
        assert_int_equal(t->disk_size, 256 * MiB);
        assert_string_equal(t->root_fstype, "ext4");
        assert_int_equal(t->esp_size, 128 * MiB);
        assert_int_equal(t->bios_boot_size, 1 * MiB);
        assert_int_equal(t->root_size, 0);
        assert_int_equal(t->n_overlays, 0);
        assert_int_equal(template_key_line(t, "Image", "Name"), line_of(data, "Name="));
        assert_int_equal(template_key_line(t, "Disk", "Size"), line_of(data, "Size="));
        assert_int_equal(template_key_line(t, "Disk", "EspSize"), 0);
        assert_string_equal(captured, "");
}

static void test_debian_template(void **state)
{
        _cleanup_free_ char *path = path_in("INGOT_SRCDIR", "templates/debian-12.conf"), *data = NULL;
        _cleanup_(template_freep) struct template *t = NULL;
        size_t size;

        if (!path)
                skip();
        assert_int_equal(read_full_file(path, 1 << 20, &data, &size), 0);
        assert_int_equal(load_file(path, &t), 0);
        assert_digest_of(t, data, size);
        assert_string_equal(t->name, "debian-12");
        assert_string_equal(t->architecture, "x86-64");
        assert_true(t->has_source_date_epoch);
        assert_int_equal(t->source, ROOTFS_SOURCE_MMDEBSTRAP);
        assert_string_equal(t->suite, "bookworm");
        assert_string_equal(t->variant, "minbase");
        assert_null(t->mirror);
        assert_null(t->source_path);
        assert_true(strv_contains(t->packages, "linux-image-amd64"));
        assert_true(strv_contains(t->packages, "systemd-sysv"));
        assert_string_equal(t->kernel_package, "linux-image-amd64");
        assert_string_equal(t->cmdline, "console=ttyS0,115200");
        assert_int_equal(t->boot_mode, BOOT_MODE_BOTH);
        assert_int_equal(t->disk_size, 2 * GiB);
        assert_int_equal(t->esp_size, 256 * MiB);
        assert_string_equal(t->root_fstype, "ext4");
        assert_int_equal(template_key_line(t, "Rootfs", "Suite"), line_of(data, "Suite="));
        assert_string_equal(captured, "");
}

static void test_full_fixture(void **state)
{
        _cleanup_free_ char *path = path_in("INGOT_TEST_DATA", "templates/full.conf");
        _cleanup_free_ char *dir = path_in("INGOT_TEST_DATA", "templates"), *data = NULL, *files = NULL;
        _cleanup_(template_freep) struct template *t = NULL;
        size_t size;

        if (!path)
                skip();
        assert_int_equal(read_full_file(path, 1 << 20, &data, &size), 0);
        assert_int_equal(load_file(path, &t), 0);
        assert_string_equal(t->name, "full.test_1");
        assert_string_equal(t->version, "2.0.1");
        assert_string_equal(t->architecture, "x86-64");
        assert_string_equal(t->description, "Every key ; nothing else");
        assert_int_equal(t->source_date_epoch, 1700000000);
        assert_int_equal(t->source, ROOTFS_SOURCE_MMDEBSTRAP);
        assert_string_equal(t->suite, "bookworm");
        assert_string_equal(t->variant, "standard");
        assert_string_equal(t->mirror, "http://deb.debian.org/debian");
        assert_strv_equal(t->packages,
                          (const char *const[]){ "linux-image-amd64", "systemd-sysv", "udev", "openssh-server",
                                                 "vim=2:9.0.1378-2", "curl/bookworm-backports", NULL });
        assert_string_equal(t->kernel, "/boot/vmlinuz");
        assert_string_equal(t->initrd, "/boot/initrd.img");
        assert_string_equal(t->cmdline, "console=ttyS0,115200 quiet");
        assert_int_equal(t->boot_mode, BOOT_MODE_UEFI);
        assert_int_equal(t->timeout, 5);
        assert_int_equal(t->disk_size, 4 * GiB);
        assert_string_equal(t->root_fstype, "erofs");
        assert_int_equal(t->esp_size, 256 * MiB);
        assert_int_equal(t->bios_boot_size, 2 * MiB);
        assert_int_equal(t->root_size, 1 * GiB);
        assert_int_equal(t->n_overlays, 2);
        assert_true(asprintf(&files, "%s/files/etc", dir) >= 0);
        assert_string_equal(t->overlays[0].source, files);
        assert_string_equal(t->overlays[0].destination, "/etc");
        assert_int_equal(t->overlays[0].line, line_of(data, "Overlay=files"));
        assert_string_equal(t->overlays[1].source, "/srv/motd");
        assert_string_equal(t->overlays[1].destination, "/etc/motd");
        /* A list key remembers its last line. */
        assert_int_equal(template_key_line(t, "Rootfs", "Packages"), line_of(data, "Packages=vim"));
        assert_int_equal(template_key_line(t, "Files", "Overlay"), line_of(data, "Overlay=/srv"));
        assert_int_equal(template_key_line(t, "Kernel", "Kernel"), line_of(data, "Kernel="));
        assert_int_equal(template_key_line(t, "Nope", "Kernel"), 0);
        assert_int_equal(template_key_line(t, "Kernel", "Nope"), 0);
}

static void test_tarball_fixture(void **state)
{
        _cleanup_free_ char *path = path_in("INGOT_TEST_DATA", "templates/tarball.conf");
        _cleanup_free_ char *tar = path_in("INGOT_TEST_DATA", "templates/rootfs/base.tar.zst");
        _cleanup_free_ char *overlay = path_in("INGOT_TEST_DATA", "templates/overlay");
        _cleanup_(template_freep) struct template *t = NULL;

        if (!path)
                skip();
        assert_int_equal(load_file(path, &t), 0);
        assert_int_equal(t->source, ROOTFS_SOURCE_TARBALL);
        assert_string_equal(t->architecture, "arm64");
        /* arm64 has no BIOS: the default boot mode follows. */
        assert_int_equal(t->boot_mode, BOOT_MODE_UEFI);
        assert_string_equal(t->source_path, tar);
        assert_int_equal(t->n_overlays, 1);
        assert_string_equal(t->overlays[0].source, overlay);
        assert_string_equal(t->overlays[0].destination, "/");
}

static void test_defaults(void **state)
{
        static const char text[] = "[Image]\nName=a\n[Rootfs]\nSource=directory\nPath=/srv/tree\n";
        _cleanup_(template_freep) struct template *t = load_ok(text);

        assert_string_equal(t->path, "t.conf");
        assert_digest_of(t, text, strlen(text));
        assert_null(t->version);
        assert_null(t->description);
        assert_string_equal(t->architecture, "x86-64");
        assert_false(t->has_source_date_epoch);
        assert_null(t->variant);
        assert_null(t->packages);
        assert_string_equal(t->source_path, "/srv/tree");
        assert_null(t->kernel_package);
        assert_null(t->cmdline);
        assert_int_equal(t->boot_mode, BOOT_MODE_BOTH);
        assert_int_equal(t->timeout, 0);
        assert_int_equal(t->disk_size, 2 * GiB);
        assert_string_equal(t->root_fstype, "ext4");
        assert_int_equal(t->esp_size, 128 * MiB);
        assert_int_equal(t->bios_boot_size, 1 * MiB);
        assert_int_equal(t->root_size, 0);
        assert_null(t->overlays);
        assert_int_equal(template_key_line(t, "Image", "Name"), 2);
        assert_int_equal(template_key_line(t, "Rootfs", "Path"), 5);
        assert_int_equal(template_key_line(t, "Image", "Architecture"), 0);
}

static void test_syntax_accepted(void **state)
{
        /* BOM, CRLF, indentation, blank lines, both comment styles, spaces
         * around '=', a last line without newline; ';' and '#' inside a
         * value are part of it; an indented line is a key of its own. */
        static const char text[] = "\xef\xbb\xbf# comment\r\n"
                                   "; comment\r\n"
                                   "\r\n"
                                   "  [Image]  \r\n"
                                   "Name = a \r\n"
                                   "Description=x ; y # z\r\n"
                                   "\tVersion=1.0\r\n"
                                   "[Rootfs]\r\n"
                                   "Source=directory\n"
                                   "Path=/t";
        _cleanup_(template_freep) struct template *t = load_ok(text);

        assert_string_equal(t->name, "a");
        assert_string_equal(t->description, "x ; y # z");
        assert_string_equal(t->version, "1.0");
        assert_string_equal(t->source_path, "/t");
        assert_int_equal(template_key_line(t, "Image", "Name"), 5);
        assert_int_equal(template_key_line(t, "Image", "Version"), 7);
        assert_int_equal(template_key_line(t, "Rootfs", "Path"), 10);
        assert_string_equal(captured, "");
}

static void test_last_wins_and_reset(void **state)
{
        _cleanup_(template_freep) struct template *t = load_ok("[Image]\n"
                                                               "Name=first\n"
                                                               "Name=second\n"
                                                               "Version=1\n"
                                                               "Version=\n"
                                                               "SourceDateEpoch=5\n"
                                                               "SourceDateEpoch=\n"
                                                               "[Rootfs]\n"
                                                               "Source=busybox\n"
                                                               "Packages=a1 b2,c3\n"
                                                               "Packages=d4\n"
                                                               "Packages=\n"
                                                               "Packages=e5,,e5  f6\n"
                                                               "[Kernel]\n"
                                                               "Package=linux-image-amd64\n"
                                                               "[Disk]\n"
                                                               "Size=1G\n"
                                                               "Size=\n"
                                                               "EspSize=64M\n"
                                                               "[Boot]\n"
                                                               "Mode=bios\n"
                                                               "Mode=\n"
                                                               "[Files]\n"
                                                               "Overlay=a:/a\n"
                                                               "Overlay=\n"
                                                               "Overlay=b:/b\n"
                                                               "[Image]\n"
                                                               "Description=again\n");

        assert_string_equal(t->name, "second");
        assert_int_equal(template_key_line(t, "Image", "Name"), 3);
        assert_null(t->version);
        assert_int_equal(template_key_line(t, "Image", "Version"), 0);
        assert_false(t->has_source_date_epoch);
        assert_strv_equal(t->packages, (const char *const[]){ "e5", "f6", NULL });
        assert_int_equal(template_key_line(t, "Rootfs", "Packages"), 13);
        /* An empty assignment restores the default. */
        assert_int_equal(t->disk_size, 2 * GiB);
        assert_int_equal(template_key_line(t, "Disk", "Size"), 0);
        assert_int_equal(t->esp_size, 64 * MiB);
        assert_int_equal(t->boot_mode, BOOT_MODE_BOTH);
        assert_int_equal(t->n_overlays, 1);
        assert_string_equal(t->overlays[0].destination, "/b");
        assert_int_equal(t->overlays[0].line, 26);
        assert_string_equal(t->description, "again");
}

static void test_relative_paths(void **state)
{
        static const char text[] = "[Image]\nName=a\n[Rootfs]\nSource=tarball\nPath=%s\n[Files]\nOverlay=%s\n";
        static const struct {
                const char *name, *path, *overlay;
                const char *expect_path, *expect_overlay;
        } cases[] = {
                { "/srv/tmpl/x.conf", "root.tar", "files:/etc", "/srv/tmpl/root.tar", "/srv/tmpl/files" },
                { "/srv/tmpl/x.conf", "./a/b.tar", ".//o:/o", "/srv/tmpl/a/b.tar", "/srv/tmpl/o" },
                { "/srv/tmpl/x.conf", "../r.tar", "/abs:/etc/x", "/srv/tmpl/../r.tar", "/abs" },
                { "/x.conf", "r.tar", "o:/", "/r.tar", "/o" },
                { "/srv/tmpl/x.conf", "/data/r.tar", "o:/", "/data/r.tar", "/srv/tmpl/o" },
        };
        _cleanup_free_ char *cwd = getcwd(NULL, 0);

        assert_non_null(cwd);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(template_freep) struct template *t = NULL;
                _cleanup_free_ char *buf = NULL;

                assert_true(asprintf(&buf, text, cases[i].path, cases[i].overlay) >= 0);
                assert_int_equal(load_buffer(cases[i].name, buf, strlen(buf), &t), 0);
                assert_string_equal(t->source_path, cases[i].expect_path);
                assert_string_equal(t->overlays[0].source, cases[i].expect_overlay);
        }

        /* A relative template name resolves against the current directory. */
        {
                _cleanup_(template_freep) struct template *t = NULL;
                _cleanup_free_ char *buf = NULL, *want = NULL, *want_o = NULL;

                assert_true(asprintf(&buf, text, "r.tar", "o:/") >= 0);
                assert_int_equal(load_buffer("sub/x.conf", buf, strlen(buf), &t), 0);
                assert_true(asprintf(&want, "%s/sub/r.tar", cwd) >= 0);
                assert_string_equal(t->source_path, want);
                t = template_free(t);
                assert_int_equal(load_buffer("x.conf", buf, strlen(buf), &t), 0);
                assert_true(asprintf(&want_o, "%s/o", cwd) >= 0);
                assert_string_equal(t->overlays[0].source, want_o);
        }
}

static void test_mirrors(void **state)
{
        static const char *const ok[] = {
                "http://deb.debian.org/debian",     "https://x.example/debian/", "file:///srv/mirror",
                "mirror+file:/etc/apt/mirrors.txt", "tor+http://x.onion/debian",
        };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                _cleanup_(template_freep) struct template *t = NULL;
                _cleanup_free_ char *buf = NULL;

                assert_true(asprintf(&buf, HEAD "Source=mmdebstrap\nSuite=bookworm\nMirror=%s\n", ok[i]) >= 0);
                t = load_ok(buf);
                assert_string_equal(t->mirror, ok[i]);
                assert_string_equal(t->variant, "minbase");
        }
}

static void test_architectures(void **state)
{
        static const struct {
                const char *value, *canonical;
        } cases[] = {
                { "x86-64", "x86-64" }, { "x86_64", "x86-64" }, { "amd64", "x86-64" },
                { "arm64", "arm64" },   { "aarch64", "arm64" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(template_freep) struct template *t = NULL;
                _cleanup_free_ char *buf = NULL;

                assert_true(asprintf(&buf, "[Image]\nName=a\nArchitecture=%s\n[Rootfs]\nSource=directory\nPath=/t\n",
                                     cases[i].value) >= 0);
                t = load_ok(buf);
                assert_string_equal(t->architecture, cases[i].canonical);
        }
}

static void test_enum_strings(void **state)
{
        for (int i = ROOTFS_SOURCE_MMDEBSTRAP; i <= ROOTFS_SOURCE_BUSYBOX; i++) {
                const char *s = rootfs_source_to_string((enum rootfs_source)i);
                assert_non_null(s);
                assert_int_equal(rootfs_source_from_string(s), i);
        }
        for (int i = BOOT_MODE_BIOS; i <= BOOT_MODE_BOTH; i++) {
                const char *s = boot_mode_to_string((enum boot_mode)i);
                assert_non_null(s);
                assert_int_equal(boot_mode_from_string(s), i);
        }
        assert_string_equal(rootfs_source_to_string(ROOTFS_SOURCE_TARBALL), "tarball");
        assert_string_equal(boot_mode_to_string(BOOT_MODE_UEFI), "uefi");
        assert_null(rootfs_source_to_string(ROOTFS_SOURCE_INVALID));
        assert_null(rootfs_source_to_string((enum rootfs_source)99));
        assert_null(boot_mode_to_string(BOOT_MODE_INVALID));
        assert_int_equal(rootfs_source_from_string("Tarball"), ROOTFS_SOURCE_INVALID);
        assert_int_equal(rootfs_source_from_string(NULL), ROOTFS_SOURCE_INVALID);
        assert_int_equal(boot_mode_from_string(""), BOOT_MODE_INVALID);
}

static const struct bad_case {
        const char *text;
        const char *message;
} bad_cases[] = {
        /* line-level syntax */
        { "", "t.conf: no settings, not a template" },
        { "# only\n; comments\n\n", "t.conf: no settings, not a template" },
        { "Name=a\n[Image]\n", "t.conf:1: key 'Name' outside of any section" },
        { "[Image\nName=a\n", "t.conf:1: unterminated section header '[Image'" },
        { "[Image] x\nName=a\n", "t.conf:1: invalid section header '[Image] x'" },
        { "[]\n", "t.conf:1: invalid section header '[]'" },
        { "[Image]\nName=a\n[Foo]\nBar=1\nBaz=2\n", "t.conf:3: unknown section [Foo]" },
        { "[image]\nName=a\n", "t.conf:1: unknown section [image]" },
        { "[Image]\nName\n", "t.conf:2: expected Key=Value or [Section], got 'Name'" },
        { "[Image]\nName: a\n", "t.conf:2: expected Key=Value or [Section], got 'Name: a'" },
        { "[Image]\nNa me=a\n", "t.conf:2: invalid key name 'Na me'" },
        { "[Image]\n=a\n", "t.conf:2: missing key name before '='" },
        { HEAD DIR_SRC "Foo=1\n", "t.conf:6: unknown key 'Foo' in section [Rootfs]" },
        { HEAD DIR_SRC "[Disk]\nname=a\n", "t.conf:7: unknown key 'name' in section [Disk]" },
        { HEAD DIR_SRC "[Image]\nKernel=/k\n", "t.conf:7: unknown key 'Kernel' in section [Image]" },

        /* values */
        { HEAD DIR_SRC "[Disk]\nSize=12Q\n", "t.conf:7: invalid Size= '12Q': expected a size such as 512M or 2G" },
        { HEAD DIR_SRC "[Disk]\nSize=-1G\n", "t.conf:7: invalid Size= '-1G': expected a size" },
        { HEAD DIR_SRC "[Disk]\nSize=99999999999999999999\n",
          "t.conf:7: invalid Size= '99999999999999999999': too large" },
        { HEAD DIR_SRC "[Disk]\nSize=99999999T\n", "t.conf:7: invalid Size= '99999999T': too large" },
        { HEAD DIR_SRC "[Disk]\nSize=1000000\n", "t.conf:7: invalid Size= '1000000': not a multiple of 4K" },
        { HEAD DIR_SRC "[Disk]\nSize=8M\n", "t.conf:7: invalid Size= '8M': must be at least 16M" },
        { HEAD DIR_SRC "[Disk]\nEspSize=32M\n", "t.conf:7: invalid EspSize= '32M': must be at least 33M" },
        { HEAD DIR_SRC "[Disk]\nBiosBootSize=0\n", "t.conf:7: invalid BiosBootSize= '0': must be at least 64K" },
        { HEAD DIR_SRC "[Disk]\nRootSize=8M\n",
          "t.conf:7: RootSize= must be 0 (grow to fill the disk) or at least 16M" },
        { HEAD DIR_SRC "[Disk]\nRootSize=2G\n", "t.conf:7: RootSize=2G does not fit in Size=2G" },
        { HEAD DIR_SRC "[Disk]\nRootFilesystem=xfs\n",
          "t.conf:7: invalid RootFilesystem= 'xfs': expected ext4 or erofs" },
        { HEAD "Source=foo\n", "t.conf:4: invalid Source= 'foo': expected mmdebstrap, tarball, directory or busybox" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nVariant=tiny\n",
          "t.conf:6: invalid Variant= 'tiny': expected extract, custom, essential, apt, required, minbase, buildd, "
          "important, debootstrap or standard" },
        { HEAD "Source=mmdebstrap\nSuite=book worm\n", "t.conf:5: invalid Suite= 'book worm'" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nMirror=deb.debian.org\n",
          "t.conf:6: invalid Mirror= 'deb.debian.org': expected a URL" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nMirror=http\n", "t.conf:6: invalid Mirror= 'http': expected a URL" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nMirror=http://a b\n", "t.conf:6: invalid Mirror= 'http://a b'" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nPackages=vim Emacs\n",
          "t.conf:6: invalid Packages= 'vim Emacs': 'Emacs' is not a Debian package name" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nPackages=vim=\n", "'vim=' is not a Debian package name" },
        { HEAD DIR_SRC "[Boot]\nMode=sideways\n", "t.conf:7: invalid Mode= 'sideways': expected bios, uefi or both" },
        { HEAD DIR_SRC "[Boot]\nTimeout=soon\n", "t.conf:7: invalid Timeout= 'soon': expected a number of seconds" },
        { HEAD DIR_SRC "[Boot]\nTimeout=99999999999\n", "t.conf:7: invalid Timeout= '99999999999'" },
        { "[Image]\nName=Foo Bar\n", "t.conf:2: invalid Name= 'Foo Bar': use lower-case letters" },
        { "[Image]\nName=-a\n", "t.conf:2: invalid Name= '-a'" },
        { "[Image]\nName=a\nVersion=1.0 beta\n", "t.conf:3: invalid Version= '1.0 beta'" },
        { "[Image]\nName=a\nVersion=V1\n", "t.conf:3: invalid Version= 'V1'" },
        { "[Image]\nName=a\nArchitecture=mips\n", "t.conf:3: invalid Architecture= 'mips': expected x86-64 or arm64" },
        { "[Image]\nName=a\nSourceDateEpoch=yesterday\n", "t.conf:3: invalid SourceDateEpoch= 'yesterday'" },
        { "[Image]\nName=a\nSourceDateEpoch=-1\n", "t.conf:3: invalid SourceDateEpoch= '-1'" },
        { "[Image]\nName=a\nSourceDateEpoch=999999999999\n", "t.conf:3: invalid SourceDateEpoch= '999999999999'" },
        { HEAD DIR_SRC "[Kernel]\nKernel=boot/vmlinuz\n",
          "t.conf:7: invalid Kernel= 'boot/vmlinuz': expected an absolute path" },
        { HEAD DIR_SRC "[Kernel]\nInitrd=/boot/../x\n", "t.conf:7: invalid Initrd= '/boot/../x'" },
        { HEAD DIR_SRC "[Kernel]\nCommandLine=quiet root=/dev/sda1\n",
          "t.conf:7: invalid CommandLine= 'quiet root=/dev/sda1': must not set root=" },
        { HEAD DIR_SRC "[Kernel]\nPackage=Linux\n", "t.conf:7: invalid Package= 'Linux': not a Debian package name" },
        { HEAD DIR_SRC "[Files]\nOverlay=files\n", "t.conf:7: invalid Overlay= 'files': expected SOURCE:DESTINATION" },
        { HEAD DIR_SRC "[Files]\nOverlay=:/etc\n", "t.conf:7: invalid Overlay= ':/etc': expected SOURCE:DESTINATION" },
        { HEAD DIR_SRC "[Files]\nOverlay=files:etc\n",
          "t.conf:7: invalid Overlay= 'files:etc': the destination must be an absolute path" },
        { HEAD DIR_SRC "[Files]\nOverlay=files:/etc/../x\n", "t.conf:7: invalid Overlay= 'files:/etc/../x'" },

        /* missing keys and cross-field rules */
        { "[Rootfs]\n" DIR_SRC, "t.conf: missing required key Name= in [Image]" },
        { "[Image]\nName=a\n", "t.conf: missing required key Source= in [Rootfs]" },
        { "[Image]\nName=a\nName=\n[Rootfs]\n" DIR_SRC, "t.conf: missing required key Name= in [Image]" },
        { HEAD "Source=mmdebstrap\n", "t.conf:4: Source=mmdebstrap needs Suite= in [Rootfs]" },
        { HEAD "Source=tarball\n", "t.conf:4: Source=tarball needs Path= in [Rootfs]" },
        { HEAD "Source=directory\n", "t.conf:4: Source=directory needs Path= in [Rootfs]" },
        { HEAD "Source=busybox\n", "t.conf:4: Source=busybox needs Package= in [Kernel]" },
        { HEAD DIR_SRC "Variant=minbase\n",
          "t.conf:6: Variant= does not apply to Source=directory, only to mmdebstrap" },
        { HEAD DIR_SRC "Suite=bookworm\n", "t.conf:6: Suite= does not apply to Source=directory" },
        { HEAD DIR_SRC "Mirror=http://x/\n", "t.conf:6: Mirror= does not apply to Source=directory" },
        { HEAD DIR_SRC "Packages=vim\n", "t.conf:6: Packages= does not apply to Source=directory" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nPath=/x\n", "t.conf:6: Path= does not apply to Source=mmdebstrap" },
        { HEAD DIR_SRC "[Kernel]\nPackage=linux-image-amd64\n",
          "t.conf:7: Package= does not apply to Source=directory" },
        { HEAD "Source=mmdebstrap\nSuite=bookworm\nPackages=systemd-sysv\n[Kernel]\nPackage=linux-image-amd64\n",
          "t.conf:8: Package=linux-image-amd64 is not in [Rootfs] Packages=" },
        { "[Image]\nName=a\nArchitecture=arm64\n[Rootfs]\n" DIR_SRC "[Boot]\nMode=both\n",
          "t.conf:8: Mode=both needs Architecture=x86-64" },
};

static void test_bad_input(void **state)
{
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                struct template *t = NULL;
                int r = load_string(bad_cases[i].text, &t);

                if (r != -EBADMSG)
                        fail_msg("case %zu: expected -EBADMSG, got %d for:\n%s", i, r, bad_cases[i].text);
                assert_null(t);
                if (!strstr(captured, bad_cases[i].message))
                        fail_msg("case %zu: expected '%s' in stderr, got '%s'", i, bad_cases[i].message, captured);
        }
}

static void test_all_errors_reported(void **state)
{
        struct template *t = NULL;

        /* Every bad line is reported, keys of an unknown section are not. */
        assert_int_equal(load_string("[Image]\nName=a\nFoo=1\n[Nope]\nX=1\nY=2\n[Rootfs]\nBar=2\n" DIR_SRC
                                     "[Disk]\nSize=1Q\n",
                                     &t),
                         -EBADMSG);
        assert_null(t);
        assert_captured("t.conf:3: unknown key 'Foo' in section [Image]\n");
        assert_captured("t.conf:4: unknown section [Nope]\n");
        assert_captured("t.conf:8: unknown key 'Bar' in section [Rootfs]\n");
        assert_captured("t.conf:12: invalid Size= '1Q'");
        assert_null(strstr(captured, ":5:"));
        assert_null(strstr(captured, ":6:"));

        /* Keys below a rejected header are not reported one by one. */
        assert_int_equal(load_string("[Image\nName=a\n", &t), -EBADMSG);
        assert_string_equal(captured, "t.conf:1: unterminated section header '[Image'\n");

        /* A file that is not a template stops after ten errors. */
        {
                _cleanup_free_ char *many = NULL;
                size_t n = 0;

                many = malloc(100 * 16);
                assert_non_null(many);
                for (unsigned i = 0; i < 100; i++)
                        n += (size_t)sprintf(many + n, "root:x:%u:0::\n", i);
                assert_int_equal(load_buffer("t.conf", many, n, &t), -EBADMSG);
                assert_captured("t.conf:10: expected Key=Value or [Section], got 'root:x:9:0::'\n"
                                "t.conf: too many errors, giving up\n");
                assert_null(strstr(captured, "t.conf:11:"));
        }

        /* The verify pass reports every broken rule too. */
        assert_int_equal(load_string("[Disk]\nSize=1G\n", &t), -EBADMSG);
        assert_captured("t.conf: missing required key Name= in [Image]\n");
        assert_captured("t.conf: missing required key Source= in [Rootfs]\n");
}

static void test_long_lines(void **state)
{
        const size_t max = 4096;
        _cleanup_free_ char *buf = malloc(2 * 1024 * 1024);
        struct template *t = NULL;
        size_t n;

        assert_non_null(buf);

        /* The longest line we take: 4096 bytes before the newline. */
        n = (size_t)sprintf(buf, "[Image]\nName=a\nDescription=");
        memset(buf + n, 'x', max - strlen("Description="));
        n += max - strlen("Description=");
        n += (size_t)sprintf(buf + n, "\n[Rootfs]\n" DIR_SRC);
        assert_int_equal(load_buffer("t.conf", buf, n, &t), 0);
        assert_int_equal(strlen(t->description), max - strlen("Description="));
        t = template_free(t);

        /* One byte more is an error, not a truncated value. */
        n = (size_t)sprintf(buf, "[Image]\nName=a\nDescription=");
        memset(buf + n, 'x', max + 1 - strlen("Description="));
        n += max + 1 - strlen("Description=");
        n += (size_t)sprintf(buf + n, "\n[Rootfs]\n" DIR_SRC);
        assert_int_equal(load_buffer("t.conf", buf, n, &t), -EBADMSG);
        assert_captured("t.conf:3: line too long (more than 4096 bytes)\n");

        /* A 1 MB line, with no newline at the end either. */
        n = (size_t)sprintf(buf, "[Image]\nName=");
        memset(buf + n, 'a', 1000 * 1000);
        n += 1000 * 1000;
        assert_int_equal(load_buffer("t.conf", buf, n, &t), -EBADMSG);
        assert_captured("t.conf:2: line too long (more than 4096 bytes)\n");
        /* Reported once, and nothing after it. */
        assert_int_equal(strchr(captured, '\n') - captured + 1, (ptrdiff_t)strlen(captured));

        /* More than 1 MiB in all. */
        memset(buf, '#', 2 * 1024 * 1024);
        for (size_t i = 100; i < 2 * 1024 * 1024; i += 100)
                buf[i] = '\n';
        assert_int_equal(load_buffer("t.conf", buf, 2 * 1024 * 1024, &t), -EBADMSG);
        assert_captured("t.conf: larger than 1 MiB, not a template\n");

        /* inih's run-time settings are put back. */
        assert_int_equal(ini_max_line, 200);
        assert_true(ini_allow_multiline);
        assert_true(ini_allow_inline_comments);
}

static void test_binary(void **state)
{
        static const char nul[] = "[Image]\nName=a\nDescription=x\0y\n[Rootfs]\n";
        static const char ctl[] = "[Image]\nName=a\n\x01\x02\x03\n";
        static const char elf[] = "\x7f"
                                  "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0";
        static const char latin1[] = "[Image]\nName=a\nDescription=caf\xe9\n";
        static const char utf8[] = "[Image]\nName=a\nDescription=caf\xc3\xa9 \xe2\x82\xac\n[Rootfs]\n" DIR_SRC;
        static const char overlong[] = "[Image]\nName=a\nDescription=\xc0\xaf\n";
        static const char cr[] = "[Image]\nName=a\rVersion=1\n";
        struct template *t = NULL;

        assert_int_equal(load_buffer("t.conf", nul, sizeof(nul) - 1, &t), -EBADMSG);
        assert_captured("t.conf:3: binary data, not a template\n");
        assert_int_equal(load_buffer("t.conf", ctl, sizeof(ctl) - 1, &t), -EBADMSG);
        assert_captured("t.conf:3: binary data, not a template\n");
        assert_int_equal(load_buffer("t.conf", elf, sizeof(elf) - 1, &t), -EBADMSG);
        assert_captured("t.conf:1: binary data, not a template\n");
        assert_int_equal(load_buffer("t.conf", cr, sizeof(cr) - 1, &t), -EBADMSG);
        assert_captured("t.conf:2: binary data, not a template\n");
        assert_int_equal(load_buffer("t.conf", latin1, sizeof(latin1) - 1, &t), -EBADMSG);
        assert_captured("t.conf:3: invalid UTF-8\n");
        assert_int_equal(load_buffer("t.conf", overlong, sizeof(overlong) - 1, &t), -EBADMSG);
        assert_captured("t.conf:3: invalid UTF-8\n");
        assert_null(t);

        assert_int_equal(load_buffer("t.conf", utf8, sizeof(utf8) - 1, &t), 0);
        assert_string_equal(t->description, "caf\xc3\xa9 \xe2\x82\xac");
        t = template_free(t);
}

static void test_file_errors(void **state)
{
        _cleanup_free_ char *bad = path_in("INGOT_TEST_DATA", "templates/bad-unknown-key.conf");
        _cleanup_free_ char *dir = path_in("INGOT_TEST_DATA", "templates");
        _cleanup_free_ char *expected = NULL;
        char tmp[] = "/tmp/test-template-XXXXXX";
        struct template *t = NULL;
        int fd;

        assert_int_equal(load_file("/nonexistent/x.conf", &t), -ENOENT);
        assert_captured("cannot read template '/nonexistent/x.conf': No such file or directory");
        assert_null(t);

        /* A file too big to be a template is bad input, not an I/O error. */
        fd = mkstemp(tmp);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 2 * 1024 * 1024), 0);
        close(fd);
        assert_int_equal(load_file(tmp, &t), -EBADMSG);
        assert_captured(": larger than 1 MiB, not a template");
        unlink(tmp);

        if (!bad)
                skip();
        assert_int_equal(load_file(dir, &t), -EISDIR);
        assert_captured("cannot read template '");
        assert_int_equal(load_file(bad, &t), -EBADMSG);
        assert_true(asprintf(&expected, "%s:7: unknown key 'Compression' in section [Rootfs]\n", bad) >= 0);
        assert_string_equal(captured, expected);
        assert_null(t);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_busybox_template),
                cmocka_unit_test(test_debian_template),
                cmocka_unit_test(test_full_fixture),
                cmocka_unit_test(test_tarball_fixture),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_syntax_accepted),
                cmocka_unit_test(test_last_wins_and_reset),
                cmocka_unit_test(test_relative_paths),
                cmocka_unit_test(test_mirrors),
                cmocka_unit_test(test_architectures),
                cmocka_unit_test(test_enum_strings),
                cmocka_unit_test(test_bad_input),
                cmocka_unit_test(test_all_errors_reported),
                cmocka_unit_test(test_long_lines),
                cmocka_unit_test(test_binary),
                cmocka_unit_test(test_file_errors),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
