/* Unit tests for the rootfs stage: the cache (hit, then a corrupt or
 * half-written entry is rebuilt, never used), the directory and tarball
 * sources on a small fixture tree, and kickstart application read back
 * from the output tar (owners, modes, links, %post). Real tar; a static
 * busybox from the host runs %post in the chroot. Runs in a few seconds. */
#include "config.h"

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

#include "rootfs.h"
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/run.h"
#include "spec.h"

struct fixture {
        char dir[64];
        char tree[128];
        char cache[128];
        char work[128];
        FILE *log;
};

static const char *busybox_path(void)
{
        static const char *const candidates[] = { "/bin/busybox", "/usr/bin/busybox" };
        for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
                if (access(candidates[i], X_OK) == 0)
                        return candidates[i];
        return NULL;
}

static void put(const char *root, const char *path, const char *data, mode_t mode)
{
        char p[512], cmd[600];

        snprintf(p, sizeof(p), "%s/%s", root, path);
        snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", p);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(write_file_atomic(p, data, strlen(data), mode), 0);
        assert_int_equal(chmod(p, mode), 0);
}

static void link_(const char *root, const char *path, const char *target)
{
        char p[512], cmd[600];

        snprintf(p, sizeof(p), "%s/%s", root, path);
        snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", p);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(symlink(target, p), 0);
}

static void make_tree(const char *t)
{
        static const char *const applets[] = { "sh", "cat", "echo", "id", "ls", "touch", "false", "true" };
        char cmd[512];

        put(t, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
        put(t, "etc/group", "root:x:0:\nsudo:x:27:\n", 0644);
        put(t, "etc/shadow", "root:*:19000:0:99999:7:::\n", 0640);
        put(t, "etc/skel/.profile", "# profile\n", 0644);
        put(t, "usr/lib/os-release", "ID=fixture\nIMAGE_ID=old\n", 0644);
        link_(t, "etc/os-release", "../usr/lib/os-release");
        put(t, "lib/systemd/system/foo.service",
            "[Unit]\nDescription=foo\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
            "Alias=bar.service\n",
            0644);
        put(t, "lib/systemd/system/old.service",
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n", 0644);
        link_(t, "etc/systemd/system/multi-user.target.wants/old.service", "/lib/systemd/system/old.service");
        put(t, "boot/vmlinuz-1.0", "old kernel", 0644);
        put(t, "boot/vmlinuz-2.0", "new kernel", 0644);
        put(t, "boot/initrd.img-2.0", "new initrd", 0644);
        put(t, "usr/share/zoneinfo/Europe/Paris", "TZif", 0644);
        put(t, "etc/resolv.conf", "nameserver 10.0.0.1\n", 0644);
        put(t, "etc/hosts", "127.0.0.1\tlocalhost\n", 0644);
        snprintf(cmd, sizeof(cmd), "mkdir -p %s/dev %s/proc %s/tmp %s/root %s/bin && cp %s %s/bin/busybox", t, t, t, t,
                 t, busybox_path(), t);
        assert_int_equal(system(cmd), 0);
        for (size_t i = 0; i < sizeof(applets) / sizeof(applets[0]); i++) {
                char p[64];
                snprintf(p, sizeof(p), "bin/%s", applets[i]);
                link_(t, p, "busybox");
        }
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        if (!busybox_path()) {
                fprintf(stderr, "skipping: no static busybox on this machine for %%post in the fixture tree\n");
                exit(77);
        }
        strcpy(f->dir, "/tmp/ingot-rootfs-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->tree, sizeof(f->tree), "%s/tree", f->dir);
        snprintf(f->cache, sizeof(f->cache), "%s/cache", f->dir);
        snprintf(f->work, sizeof(f->work), "%s/work", f->dir);
        make_tree(f->tree);
        f->log = tmpfile();
        assert_non_null(f->log);
        if (!getenv("INGOT_TEST_VERBOSE"))
                log_set_stream(f->log);
        unsetenv("SOURCE_DATE_EPOCH");
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        fclose(f->log);
        free(f);
        return 0;
}

/* The log so far, for checking messages. */
static char *logged(struct fixture *f)
{
        long n;
        char *buf;

        fflush(f->log);
        n = ftell(f->log);
        buf = calloc((size_t)n + 1, 1);
        rewind(f->log);
        assert_int_equal(fread(buf, 1, (size_t)n, f->log), (size_t)n);
        return buf;
}

static const char template_fmt[] = "[Image]\n"
                                   "Name=fixture\n"
                                   "SourceDateEpoch=1700000000\n"
                                   "[Rootfs]\n"
                                   "Source=%s\n"
                                   "Path=%s\n"
                                   "[Boot]\n"
                                   "Mode=uefi\n"
                                   "[Disk]\n"
                                   "Size=256M\n";

static const char full_ks[] =
        "rootpw --iscrypted $6$rootsalt$roothash\n"
        "user --name alice --password $6$salt$alicehash --iscrypted --groups sudo,extra --gecos \"Alice A\"\n"
        "user --name bob --uid 1500 --lock\n"
        "sshkey --username alice \"ssh-ed25519 AAAAkey alice@example\"\n"
        "network --hostname fixture-host\n"
        "timezone Europe/Paris\n"
        "lang de_DE.UTF-8\n"
        "keyboard de\n"
        "services --enabled=foo --disabled=old\n"
        "%post --log=/root/post.log\n"
        "echo hello > /root/post-ran\n"
        "id -u\n"
        "%end\n"
        "%post --nochroot\n"
        "echo outside > \"$INSTALL_ROOT/root/nochroot-ran\"\n"
        "%end\n";

static struct spec *load(struct fixture *f, const char *source, const char *path, const char *ks)
{
        char tpath[256], kpath[256], text[1024];
        struct spec_options o = { .version = "1.2" };
        struct spec *s = NULL;

        snprintf(tpath, sizeof(tpath), "%s/t.conf", f->dir);
        snprintf(text, sizeof(text), template_fmt, source, path);
        assert_int_equal(write_file_atomic(tpath, text, strlen(text), 0644), 0);
        o.template = tpath;
        if (ks) {
                snprintf(kpath, sizeof(kpath), "%s/k.ks", f->dir);
                assert_int_equal(write_file_atomic(kpath, ks, strlen(ks), 0644), 0);
                o.kickstart = kpath;
        }
        assert_int_equal(spec_load(&o, &s), 0);
        return s;
}

/* Runs tar on the output and returns what it printed. */
static char *tar_out(const char *tar, const char *mode, const char *member)
{
        const char *argv[] = { "tar", mode, "--numeric-owner", "--file", tar, member, NULL };
        char *out = NULL;

        assert_int_equal(run_argv(argv, NULL, &out, NULL), 0);
        return out;
}

/* The line of `tar -tv` for member ("./etc/passwd"). */
static char *tar_line(const char *tar, const char *member)
{
        char *out = tar_out(tar, "-tv", member);
        out[strcspn(out, "\n")] = '\0';
        return out;
}

static void test_directory_and_kickstart(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "directory", f->tree, full_ks);
        _cleanup_(rootfs_freep) struct rootfs *r = NULL;
        _cleanup_free_ char *passwd = NULL, *shadow = NULL, *group = NULL, *keys = NULL, *home = NULL, *ssh = NULL,
                            *wants = NULL, *alias = NULL, *old = NULL, *post = NULL, *postlog = NULL, *nochroot = NULL,
                            *hostname = NULL, *tz = NULL, *tzfile = NULL, *osr = NULL, *ready = NULL, *locale = NULL,
                            *resolv = NULL, *kernel = NULL, *bobhome = NULL, *kb = NULL, *hosts = NULL;

        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_false(r->cache_hit);
        assert_string_equal(r->kernel_version, "2.0");
        assert_int_equal(read_full_file(r->kernel, 1024, &kernel, NULL), 0);
        assert_string_equal(kernel, "new kernel");

        passwd = tar_out(r->tar, "-xO", "./etc/passwd");
        assert_non_null(strstr(passwd, "root:x:0:0:root:/root:/bin/sh\n"));
        assert_non_null(strstr(passwd, "alice:x:1000:1000:Alice A:/home/alice:/bin/sh\n"));
        assert_non_null(strstr(passwd, "bob:x:1500:1500::/home/bob:/bin/sh\n"));
        shadow = tar_out(r->tar, "-xO", "./etc/shadow");
        assert_non_null(strstr(shadow, "root:$6$rootsalt$roothash:19000:"));
        assert_non_null(strstr(shadow, "alice:$6$salt$alicehash:19675:0:99999:7:::\n"));
        assert_non_null(strstr(shadow, "bob:!:19675:"));
        group = tar_out(r->tar, "-xO", "./etc/group");
        assert_non_null(strstr(group, "sudo:x:27:alice\n"));
        assert_non_null(strstr(group, "alice:x:1000:\n"));
        assert_non_null(strstr(group, "extra:x:1001:alice\n"));
        assert_non_null(strstr(group, "bob:x:1500:\n"));

        /* owners and modes as the image will have them */
        home = tar_line(r->tar, "./home/alice/");
        assert_non_null(strstr(home, "drwx------ 1000/1000 "));
        ssh = tar_line(r->tar, "./home/alice/.ssh/");
        assert_non_null(strstr(ssh, "drwx------ 1000/1000 "));
        keys = tar_line(r->tar, "./home/alice/.ssh/authorized_keys");
        assert_non_null(strstr(keys, "-rw------- 1000/1000 "));
        free(keys);
        keys = tar_out(r->tar, "-xO", "./home/alice/.ssh/authorized_keys");
        assert_string_equal(keys, "ssh-ed25519 AAAAkey alice@example\n");
        bobhome = tar_line(r->tar, "./home/bob/.profile");
        assert_non_null(strstr(bobhome, "-rw-r--r-- 1500/1500 "));
        /* the build user's files became root's */
        free(passwd);
        passwd = tar_line(r->tar, "./etc/passwd");
        assert_non_null(strstr(passwd, " 0/0 "));
        free(shadow);
        shadow = tar_line(r->tar, "./etc/shadow");
        assert_non_null(strstr(shadow, "-rw-r----- 0/0 "));

        wants = tar_line(r->tar, "./etc/systemd/system/multi-user.target.wants/foo.service");
        assert_non_null(strstr(wants, "-> /lib/systemd/system/foo.service"));
        alias = tar_line(r->tar, "./etc/systemd/system/bar.service");
        assert_non_null(strstr(alias, "-> /lib/systemd/system/foo.service"));
        old = tar_out(r->tar, "-t", "./etc/systemd/system/multi-user.target.wants/");
        assert_null(strstr(old, "old.service"));
        ready = tar_line(r->tar, "./etc/systemd/system/multi-user.target.wants/ingot-ready.service");
        assert_non_null(strstr(ready, "-> /etc/systemd/system/ingot-ready.service"));
        free(ready);
        ready = tar_out(r->tar, "-xO", "./etc/systemd/system/ingot-ready.service");
        assert_non_null(strstr(ready, "ExecStart=/usr/lib/ingot/ready\n"));
        free(ready);
        ready = tar_out(r->tar, "-xO", "./usr/lib/ingot/ready");
        assert_non_null(strstr(ready, "ingot-ready name=$IMAGE_ID version=$IMAGE_VERSION verity=$verity"));

        post = tar_out(r->tar, "-xO", "./root/post-ran");
        assert_string_equal(post, "hello\n");
        postlog = tar_out(r->tar, "-xO", "./root/post.log");
        assert_string_equal(postlog, "0\n"); /* root inside the chroot */
        nochroot = tar_out(r->tar, "-xO", "./root/nochroot-ran");
        assert_string_equal(nochroot, "outside\n");

        hostname = tar_out(r->tar, "-xO", "./etc/hostname");
        assert_string_equal(hostname, "fixture-host\n");
        hosts = tar_out(r->tar, "-xO", "./etc/hosts");
        assert_string_equal(hosts, "127.0.0.1\tlocalhost\n127.0.1.1\tfixture-host\n");
        tz = tar_line(r->tar, "./etc/localtime");
        assert_non_null(strstr(tz, "-> /usr/share/zoneinfo/Europe/Paris"));
        tzfile = tar_out(r->tar, "-xO", "./etc/timezone");
        assert_string_equal(tzfile, "Europe/Paris\n");
        locale = tar_out(r->tar, "-xO", "./etc/default/locale");
        assert_string_equal(locale, "LANG=de_DE.UTF-8\n");
        kb = tar_out(r->tar, "-xO", "./etc/default/keyboard");
        assert_non_null(strstr(kb, "XKBLAYOUT=\"de\"\n"));
        osr = tar_out(r->tar, "-xO", "./etc/os-release");
        assert_string_equal(osr, "ID=fixture\nIMAGE_ID=fixture\nIMAGE_VERSION=1.2\n");
        /* sysprep: a resolv.conf file is a build leftover, whatever the source */
        resolv = tar_out(r->tar, "-t", "./etc/");
        assert_null(strstr(resolv, "./etc/resolv.conf"));
        /* the seal: the image stamp, first-boot machine-id, /var and /tmp in memory */
        free(osr);
        osr = tar_out(r->tar, "-xO", "./usr/lib/ingot/image.json");
        assert_non_null(strstr(osr, "\"name\": \"fixture\""));
        assert_non_null(strstr(osr, "\"version\": \"1.2\""));
        free(post);
        post = tar_out(r->tar, "-xO", "./etc/machine-id");
        assert_string_equal(post, "uninitialized\n");
        free(post);
        post = tar_line(r->tar, "./etc/systemd/system/local-fs.target.wants/var.mount");
        assert_non_null(strstr(post, "-> /etc/systemd/system/var.mount"));
}

static void test_reproducible(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "directory", f->tree, "network --hostname x\n");
        _cleanup_(rootfs_freep) struct rootfs *a = NULL, *b = NULL;
        _cleanup_free_ char *da = NULL, *db = NULL;
        size_t na, nb;

        assert_int_equal(rootfs_build(s, f->cache, f->work, &a), 0);
        assert_int_equal(rootfs_build(s, f->cache, f->work, &b), 0);
        assert_false(a->cache_hit);
        assert_true(b->cache_hit);
        /* same inputs, same bytes, though every file was written anew */
        assert_int_equal(read_full_file(a->tar, 64 << 20, &da, &na), 0);
        assert_int_equal(read_full_file(b->tar, 64 << 20, &db, &nb), 0);
        assert_int_equal(na, nb);
        assert_memory_equal(da, db, na);
}

/* Finds the single cache entry directory. */
static void entry_path(struct fixture *f, char *buf, size_t size)
{
        char cmd[256];
        FILE *p;

        snprintf(cmd, sizeof(cmd), "ls -d %s/rootfs-*[0-9a-f]", f->cache);
        p = popen(cmd, "r");
        assert_non_null(p);
        assert_non_null(fgets(buf, (int)size, p));
        buf[strcspn(buf, "\n")] = '\0';
        pclose(p);
}

static void test_cache_corrupt_rebuilt(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "directory", f->tree, NULL);
        char entry[256], path[320];
        _cleanup_free_ char *msgs = NULL;
        struct rootfs *r = NULL;

        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_false(r->cache_hit);
        r = rootfs_free(r);
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_true(r->cache_hit);
        r = rootfs_free(r);

        /* a flipped byte in the base tar, same size */
        entry_path(f, entry, sizeof(entry));
        snprintf(path, sizeof(path), "%s/base.tar", entry);
        {
                FILE *fp = fopen(path, "r+");
                assert_non_null(fp);
                fseek(fp, 600, SEEK_SET);
                int c = fgetc(fp);
                fseek(fp, 600, SEEK_SET);
                fputc(c ^ 0xff, fp);
                fclose(fp);
        }
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_false(r->cache_hit);
        r = rootfs_free(r);
        msgs = logged(f);
        assert_non_null(strstr(msgs, "does not match its digest"));

        /* a half-written entry: no marker */
        snprintf(path, sizeof(path), "%s/complete", entry);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_false(r->cache_hit);
        r = rootfs_free(r);

        /* a truncated kernel */
        snprintf(path, sizeof(path), "%s/vmlinuz", entry);
        assert_int_equal(truncate(path, 3), 0);
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_false(r->cache_hit);
        r = rootfs_free(r);
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_true(r->cache_hit);
        r = rootfs_free(r);

        /* the work directory is gone with the rootfs */
        {
                char cmd[256];
                snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s)\"", f->work);
                assert_int_equal(system(cmd), 0);
        }
}

static void test_tarball(void **state)
{
        struct fixture *f = *state;
        char tar[256], cmd[512];
        _cleanup_free_ char *msgs = NULL, *hostname = NULL;
        struct spec *s;
        struct rootfs *r = NULL;

        snprintf(tar, sizeof(tar), "%s/base.tar.gz", f->dir);
        snprintf(cmd, sizeof(cmd), "tar -czf %s -C %s .", tar, f->tree);
        assert_int_equal(system(cmd), 0);
        s = load(f, "tarball", tar, "network --hostname from-tar\n");
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        assert_string_equal(r->kernel_version, "2.0");
        hostname = tar_out(r->tar, "-xO", "./etc/hostname");
        assert_string_equal(hostname, "from-tar\n");
        r = rootfs_free(r);
        s = spec_free(s);

        /* a missing tarball is bad input, reported at the template's Path= line */
        s = load(f, "tarball", "/nonexistent/base.tar", NULL);
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), -EBADMSG);
        assert_null(r);
        msgs = logged(f);
        assert_non_null(strstr(msgs, "t.conf:6: tarball '/nonexistent/base.tar' does not exist"));
        spec_free(s);
}

static void test_bad_service_and_post(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *msgs = NULL, *out = NULL;
        struct rootfs *r = NULL;
        struct spec *s;

        s = load(f, "directory", f->tree, "services --enabled=nosuch\n");
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), -EBADMSG);
        msgs = logged(f);
        assert_non_null(strstr(msgs, "unit 'nosuch.service' is not installed in the image"));
        s = spec_free(s);

        s = load(f, "directory", f->tree, "%post --erroronfail\necho first line\necho the cause >&2\nexit 3\n%end\n");
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), -EIO);
        free(msgs);
        msgs = logged(f);
        assert_non_null(strstr(msgs, "%post --erroronfail script failed (exit status 3); its last lines:\n"
                                     "first line\nthe cause"));
        s = spec_free(s);

        /* without --erroronfail a failure is a warning and the build goes on */
        s = load(f, "directory", f->tree, "%post\nexit 1\n%end\n%post\necho after > /root/after\n%end\n");
        assert_int_equal(rootfs_build(s, f->cache, f->work, &r), 0);
        free(msgs);
        msgs = logged(f);
        assert_non_null(strstr(msgs, "warning: "));
        assert_non_null(strstr(msgs, "%post script failed (exit status 1), going on"));
        out = tar_out(r->tar, "-xO", "./root/after");
        assert_string_equal(out, "after\n");
        /* nothing of the script stays in the tree */
        free(out);
        out = tar_out(r->tar, "-t", "./tmp/");
        assert_null(strstr(out, "ingot-post"));
        r = rootfs_free(r);
        spec_free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_directory_and_kickstart, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reproducible, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_corrupt_rebuilt, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tarball, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_service_and_post, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
