/* Unit tests for the hygiene gate on real images made here without root:
 * a tree in a temporary directory, a GPT written with sfdisk and the tree
 * put into the root partition with mke2fs -d -E offset=. Every kind of
 * leftover, what is allowed (an uninitialised machine-id, symlinks, empty
 * logs, authorized_keys the image keeps on purpose, public keys), and the
 * refusals (no root partition, a root that is not ext4). The build's
 * sysprep (customize_sysprep) runs on the same trees: what it leaves, the
 * gate passes, since both go by the one table of sysprep-rules.c. */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "customize.h"
#include "hygiene.h"
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/run.h"
#include "shared/strv.h"
#include "sysprep-rules.h"

#define TYPE_ROOT_X86_64 "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
#define TYPE_ROOT_ARM64 "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
#define TYPE_LINUX_DATA "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
#define TYPE_ESP "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

/* The root partition: 1 MiB in, 32 MiB long. */
#define PART_START_SECTOR 2048
#define PART_SECTORS 65536

static char dir[] = "/tmp/test-hygiene-XXXXXX";
static unsigned counter;

/* Runs argv with stdin from script (a string) or /dev/null; 0 on success,
 * -ENOENT when the program is missing, -1 on another failure. */
static int run(const char *script, const char *const *argv)
{
        _cleanup_free_ char *err = NULL;
        int fds[2] = { -1, -1 }, r;
        struct run_options o = { .timeout_sec = 60 };

        if (script) {
                if (pipe(fds) < 0)
                        return -1;
                /* small scripts fit into the pipe buffer */
                if (write(fds[1], script, strlen(script)) != (ssize_t)strlen(script))
                        return -1;
                close(fds[1]);
                o.stdin_fd = fds[0];
        }
        r = run_argv(argv, &o, NULL, &err);
        if (fds[0] >= 0)
                close(fds[0]);
        if (r == -ENOENT)
                return r;
        if (r != 0) {
                fprintf(stderr, "%s failed (%d): %s\n", argv[0], r, err ? err : "");
                return -1;
        }
        return 0;
}

#define RUN(script, ...) run(script, (const char *const[]){ __VA_ARGS__, NULL })

/* A new empty tree; the caller frees the path. */
static char *tree_new(void)
{
        char *t;

        assert_true(asprintf(&t, "%s/tree%u", dir, counter++) > 0);
        assert_int_equal(mkdir(t, 0755), 0);
        return t;
}

static void tree_mkdir(const char *tree, const char *path)
{
        _cleanup_free_ char *p = NULL;

        assert_true(asprintf(&p, "%s%s", tree, path) > 0);
        assert_int_equal(mkdir_p(p, 0755), 0);
}

/* Writes content to path (inside tree), making its parents. */
static void tree_put(const char *tree, const char *path, const char *content)
{
        _cleanup_free_ char *p = NULL;
        char *slash;

        assert_true(asprintf(&p, "%s%s", tree, path) > 0);
        slash = strrchr(p, '/');
        *slash = '\0';
        assert_int_equal(mkdir_p(p, 0755), 0);
        *slash = '/';
        assert_int_equal(write_file_atomic(p, content, strlen(content), 0600), 0);
}

static void tree_symlink(const char *tree, const char *path, const char *target)
{
        _cleanup_free_ char *p = NULL;
        char *slash;

        assert_true(asprintf(&p, "%s%s", tree, path) > 0);
        slash = strrchr(p, '/');
        *slash = '\0';
        assert_int_equal(mkdir_p(p, 0755), 0);
        *slash = '/';
        assert_int_equal(symlink(target, p), 0);
}

static bool tree_has(const char *tree, const char *path)
{
        _cleanup_free_ char *p = NULL;
        struct stat st;

        assert_true(asprintf(&p, "%s%s", tree, path) > 0);
        return lstat(p, &st) == 0;
}

/* Removes path (a file, a symlink or an empty directory) from tree. */
static void tree_remove(const char *tree, const char *path)
{
        _cleanup_free_ char *p = NULL;

        assert_true(asprintf(&p, "%s%s", tree, path) > 0);
        assert_int_equal(remove(p), 0);
}

enum root_fs {
        ROOT_EXT4,
        ROOT_VFAT,
        ROOT_NONE,
};

/* A 40 MiB image with a GPT and one partition of type, holding tree as
 * ext4 (or a FAT filesystem, or nothing). The caller frees the path. */
static char *image_new(const char *type, enum root_fs fs, const char *tree)
{
        _cleanup_free_ char *script = NULL;
        char *img, offset[64];
        int fd, r;

        assert_true(asprintf(&img, "%s/image%u.raw", dir, counter++) > 0);
        fd = open(img, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 40 << 20), 0);
        close(fd);

        assert_true(asprintf(&script, "label: gpt\nstart=%d, size=%d, type=%s, name=root\n", PART_START_SECTOR,
                             PART_SECTORS, type) > 0);
        r = RUN(script, "sfdisk", "-q", "--no-reread", "--no-tell-kernel", img);
        if (r == 0 && fs == ROOT_EXT4) {
                snprintf(offset, sizeof(offset), "offset=%d", PART_START_SECTOR * 512);
                r = RUN(NULL, "mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, "-E", offset, img, "32M");
        } else if (r == 0 && fs == ROOT_VFAT) {
                snprintf(offset, sizeof(offset), "--offset=%d", PART_START_SECTOR);
                r = RUN(NULL, "mkfs.vfat", offset, img, "32768");
        }
        if (r == -ENOENT) {
                fprintf(stderr, "sfdisk, mke2fs or mkfs.vfat missing (fdisk, e2fsprogs, dosfstools)\n");
                exit(77);
        }
        assert_int_equal(r, 0);
        return img;
}

/* The tree of a clean image: what a sealed image may carry. */
static char *tree_clean(void)
{
        char *t = tree_new();

        tree_put(t, "/etc/machine-id", "uninitialized\n");
        tree_symlink(t, "/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf");
        tree_put(t, "/etc/ssh/sshd_config", "PermitRootLogin no\n");
        tree_put(t, "/etc/os-release", "ID=test\n");
        tree_symlink(t, "/var/lib/dbus/machine-id", "/etc/machine-id");
        tree_put(t, "/var/log/empty.log", "");
        tree_put(t, "/var/log/apt/eipp.log.xz", "");
        tree_mkdir(t, "/var/log/journal");
        tree_put(t, "/var/lib/apt/lists/lock", "");
        tree_mkdir(t, "/var/lib/apt/lists/partial");
        tree_put(t, "/var/cache/apt/archives/lock", "");
        tree_mkdir(t, "/var/cache/apt/archives/partial");
        tree_mkdir(t, "/var/lib/dhcp");
        tree_put(t, "/var/lib/NetworkManager/NetworkManager.state", "[main]\n");
        tree_mkdir(t, "/var/lib/systemd/network");
        tree_mkdir(t, "/tmp");
        tree_mkdir(t, "/var/tmp");
        tree_symlink(t, "/root/.bash_history", "/dev/null");
        tree_mkdir(t, "/root/.ssh");
        tree_put(t, "/root/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA root@build\n");
        tree_put(t, "/root/.ssh/known_hosts", "example.org ssh-ed25519 AAAA\n");
        tree_put(t, "/home/alice/.profile", "PS1='$ '\n");
        tree_put(t, "/home/alice/.ssh/authorized_keys", "ssh-ed25519 AAAA alice\n"); /* the kickstart's sshkey */
        tree_put(t, "/home/alice/.ssh/id_rsa.pub", "ssh-rsa AAAA alice\n");
        tree_put(t, "/home/alice/.ssh/id_rsa-cert.pub", "ssh-rsa-cert-v01@openssh.com AAAA alice\n");
        tree_put(t, "/home/alice/id_rsa", "not in ~/.ssh\n");
        tree_put(t, "/home/carol/.ssh", "a file, not a directory\n");
        tree_put(t, "/etc/NetworkManager/NetworkManager.conf", "[main]\nplugins=keyfile\n");
        tree_mkdir(t, "/etc/NetworkManager/system-connections");
        tree_put(t, "/etc/udev/rules.d/99-local.rules", "# nothing\n");
        tree_mkdir(t, "/home/alice/.bash_history"); /* not a file: not a history */
        tree_put(t, "/usr/lib/ingot/image.json", "{\"name\": \"test\", \"sysprep\": {\"keep\": []}}\n");
        return t;
}

static int scan(const char *img, struct hygiene_finding **ret, size_t *ret_n)
{
        *ret = (void *)1; /* set only on success */
        *ret_n = 12345;
        return hygiene_scan(img, ret, ret_n);
}

static void assert_clean(const char *img)
{
        struct hygiene_finding *f;
        size_t n;
        int r = scan(img, &f, &n);

        for (size_t i = 0; r > 0 && i < n; i++)
                fprintf(stderr, "unexpected finding: %s (%s)\n", f[i].path, f[i].reason);
        assert_int_equal(r, 0);
        assert_int_equal(n, 0);
        hygiene_findings_free(f, n);
}

/* f holds exactly the paths (and reasons) of want, in this order. */
static void assert_findings(const char *img, const char *const want[][2], size_t n_want)
{
        struct hygiene_finding *f = NULL;
        size_t n = 0;
        int r = scan(img, &f, &n);

        assert_true(r >= 0);
        if ((size_t)r != n_want)
                for (size_t i = 0; i < n; i++)
                        fprintf(stderr, "finding: %s (%s)\n", f[i].path, f[i].reason);
        assert_int_equal(r, n_want);
        assert_int_equal(n, n_want);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(f[i].path, want[i][0]);
                assert_string_equal(f[i].reason, want[i][1]);
        }
        hygiene_findings_free(f, n);
}

static void test_clean(void **state)
{
        _cleanup_free_ char *t = tree_clean(), *img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);

        assert_clean(img);
}

static void test_clean_variants(void **state)
{
        _cleanup_free_ char *t = tree_new(), *img = NULL, *t2 = tree_new(), *img2 = NULL;

        /* an empty machine-id, a bare tree, arm64 */
        tree_put(t, "/etc/machine-id", "");
        img = image_new(TYPE_ROOT_ARM64, ROOT_EXT4, t);
        assert_clean(img);

        /* no machine-id at all, a regular but empty resolv.conf, no image.json */
        tree_put(t2, "/etc/resolv.conf", "");
        tree_put(t2, "/var/lib/dbus/machine-id", "");
        img2 = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t2);
        assert_clean(img2);
}

static void test_every_leftover(void **state)
{
        static const char *const histories[] = {
                ".bash_history", ".ash_history", ".sh_history",    ".zsh_history",  ".python_history",
                ".lesshst",      ".viminfo",     ".mysql_history", ".psql_history", ".wget-hsts",
        };
        static const char *const want[][2] = {
                { "/etc/machine-id", "initialised machine-id" },
                { "/etc/resolv.conf", "resolv.conf from the build" },
                { "/etc/ssh/ssh_host_ed25519_key", "SSH host key" },
                { "/etc/ssh/ssh_host_ed25519_key.pub", "SSH host key" },
                { "/home/alice/.ash_history", "shell history" },
                { "/home/alice/.bash_history", "shell history" },
                { "/home/alice/.lesshst", "less history" },
                { "/home/alice/.mysql_history", "MySQL history" },
                { "/home/alice/.psql_history", "psql history" },
                { "/home/alice/.python_history", "Python history" },
                { "/home/alice/.sh_history", "shell history" },
                { "/home/alice/.viminfo", "vim history" },
                { "/home/alice/.wget-hsts", "wget HSTS database" },
                { "/home/alice/.zsh_history", "shell history" },
                { "/home/bob smith/.zsh_history", "shell history" },
                { "/root/.bash_history", "shell history" },
                { "/root/.ssh/authorized_keys", "root's authorized_keys" },
                { "/tmp/.X0-lock", "temporary file" },
                { "/tmp/dir", "temporary file" },
                { "/var/cache/apt/archives/hello_2.10-3_amd64.deb", "downloaded package" },
                { "/var/cache/apt/pkgcache.bin", "apt package cache" },
                { "/var/cache/apt/srcpkgcache.bin", "apt package cache" },
                { "/var/lib/NetworkManager/internal-1234-eth0.lease", "DHCP lease" },
                { "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease", "apt package list" },
                { "/var/lib/apt/lists/partial/half", "apt package list" },
                { "/var/lib/dbus/machine-id", "D-Bus machine-id" },
                { "/var/lib/dhclient/dhclient-eth0.lease", "DHCP lease" },
                { "/var/lib/dhcp/dhclient.eth0.leases", "DHCP lease" },
                { "/var/lib/systemd/network/lease-2", "DHCP lease" },
                { "/var/lib/systemd/random-seed", "random seed" },
                { "/var/lib/urandom/random-seed", "random seed" },
                { "/var/log/apt/history.log", "log file" },
                { "/var/log/dpkg.log", "log file" },
                { "/var/log/my dir/deep er/x y.log", "log file" },
                { "/var/tmp/build.1", "temporary file" },
        };
        _cleanup_free_ char *t = tree_clean(), *img = NULL, *p = NULL;

        for (size_t i = 0; i < ELEMENTSOF(histories); i++) {
                free(p);
                assert_true(asprintf(&p, "/home/alice/%s", histories[i]) > 0);
                if (streq(histories[i], ".bash_history"))
                        tree_remove(t, p); /* the clean tree's directory */
                tree_put(t, p, "ls\n");
        }
        tree_put(t, "/home/bob smith/.zsh_history", ": 1:0;ls\n");
        tree_remove(t, "/root/.bash_history");
        tree_put(t, "/root/.bash_history", "ls\n");
        tree_remove(t, "/etc/machine-id");
        tree_put(t, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        tree_remove(t, "/var/lib/dbus/machine-id");
        tree_put(t, "/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n");
        tree_remove(t, "/etc/resolv.conf");
        tree_put(t, "/etc/resolv.conf", "nameserver 10.0.2.3\n");
        tree_put(t, "/etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        tree_put(t, "/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA root@build\n");
        tree_put(t, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA someone\n");
        tree_put(t, "/var/log/dpkg.log", "2024-01-01 install\n");
        tree_put(t, "/var/log/apt/history.log", "Start-Date: 2024-01-01\n");
        tree_put(t, "/var/log/my dir/deep er/x y.log", "x\n");
        tree_put(t, "/var/log/my dir/deep er/empty", "");
        tree_put(t, "/var/cache/apt/pkgcache.bin", "cache");
        tree_put(t, "/var/cache/apt/srcpkgcache.bin", "cache");
        tree_put(t, "/var/cache/apt/archives/hello_2.10-3_amd64.deb", "!<arch>\n");
        tree_put(t, "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease", "Origin: Debian\n");
        tree_put(t, "/var/lib/apt/lists/partial/half", "x");
        tree_put(t, "/var/lib/systemd/random-seed", "0123456789abcdef");
        tree_put(t, "/var/lib/urandom/random-seed", "0123456789abcdef");
        tree_put(t, "/var/lib/dhcp/dhclient.eth0.leases", "lease {}\n");
        tree_put(t, "/var/lib/dhclient/dhclient-eth0.lease", "lease {}\n");
        tree_put(t, "/var/lib/NetworkManager/internal-1234-eth0.lease", "ADDRESS=10.0.2.15\n");
        tree_put(t, "/var/lib/systemd/network/lease-2", "ADDRESS=10.0.2.15\n");
        tree_put(t, "/tmp/.X0-lock", "42\n");
        tree_put(t, "/tmp/dir/inside", "x");
        tree_put(t, "/var/tmp/build.1", "");

        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_findings(img, want, ELEMENTSOF(want));
}

static void test_private_keys(void **state)
{
        static const char *const want[][2] = {
                { "/home/alice/.ssh/id_ed25519", "SSH private key" },
                { "/home/bob smith/.ssh/id_ecdsa", "SSH private key" },
                { "/root/.ssh/id_rsa", "SSH private key" },
        };
        _cleanup_free_ char *t = tree_clean(), *img = NULL;

        tree_put(t, "/root/.ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        tree_put(t, "/home/alice/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        tree_put(t, "/home/alice/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA alice\n");
        tree_put(t, "/home/bob smith/.ssh/id_ecdsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        tree_put(t, "/home/bob smith/.ssh/id_ecdsa.pub", "ecdsa-sha2-nistp256 AAAA bob\n");
        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_findings(img, want, ELEMENTSOF(want));
}

static void test_network_state(void **state)
{
        static const char *const want[][2] = {
                { "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
                  "NetworkManager connection" },
                { "/etc/NetworkManager/system-connections/vpn.nmconnection", "NetworkManager connection" },
                { "/etc/udev/rules.d/70-persistent-net.rules", "udev persistent network names" },
                { "/var/lib/NetworkManager/dhclient-eth0.conf", "NetworkManager state" },
                { "/var/lib/NetworkManager/internal-5678-eth0.lease", "DHCP lease" },
                { "/var/lib/NetworkManager/secret_key", "NetworkManager state" },
                { "/var/lib/NetworkManager/timestamps", "NetworkManager state" },
                { "/var/lib/dhcpcd/eth0.lease", "DHCP lease" },
                { "/var/lib/systemd/credential.secret", "systemd credential secret" },
        };
        _cleanup_free_ char *t = tree_clean(), *img = NULL;

        tree_put(t, "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
                 "[connection]\nuuid=0b6b2c7e-3c1a-4e8f-9d51-6a3f6c2b1e11\n");
        tree_put(t, "/etc/NetworkManager/system-connections/vpn.nmconnection", "[vpn-secrets]\npassword=s3cret\n");
        tree_put(t, "/etc/udev/rules.d/70-persistent-net.rules",
                 "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\"\n");
        tree_put(t, "/var/lib/NetworkManager/secret_key", "0123456789abcdef");
        tree_put(t, "/var/lib/NetworkManager/timestamps", "[timestamps]\n");
        tree_put(t, "/var/lib/NetworkManager/dhclient-eth0.conf", "send host-name \"build\";\n");
        tree_put(t, "/var/lib/NetworkManager/internal-5678-eth0.lease", "ADDRESS=10.0.2.15\n");
        tree_put(t, "/var/lib/dhcpcd/eth0.lease", "lease\n");
        tree_put(t, "/var/lib/systemd/credential.secret", "0123456789abcdef");
        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_findings(img, want, ELEMENTSOF(want));
}

/* Every rule of the table, planted once: the gate names each (with the
 * rule's reason) and the build's sysprep removes each. */
static void test_every_rule(void **state)
{
        _cleanup_free_ char *t = tree_clean(), *img = NULL, *img2 = NULL;
        _cleanup_strv_free_ char **planted = NULL;
        struct hygiene_finding *f = NULL;
        size_t n = 0;

        for (size_t i = 0; i < sysprep_n_rules; i++) {
                const struct sysprep_rule *rule = &sysprep_rules[i];
                _cleanup_free_ char *name = strdup(rule->glob), *path = NULL;

                assert_non_null(name);
                for (char *c = name; *c; c++)
                        if (*c == '*')
                                *c = 'x';
                assert_true(sysprep_rule_matches_name(rule, name));
                assert_true(asprintf(&path, "%s%s/%s", rule->dir[0] == '~' ? "/root" : "",
                                     rule->dir + (rule->dir[0] == '~'), name) > 0);
                if (tree_has(t, path)) /* the clean tree's harmless one */
                        tree_remove(t, path);
                tree_put(t, path, "planted\n");
                assert_int_equal(strv_extend(&planted, path), 0);
        }
        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_int_equal(scan(img, &f, &n), (int)sysprep_n_rules);
        for (size_t i = 0; i < sysprep_n_rules; i++) {
                bool found = false;

                for (size_t k = 0; k < n; k++)
                        if (streq(f[k].path, planted[i])) {
                                assert_string_equal(f[k].reason, sysprep_rules[i].reason);
                                found = true;
                        }
                if (!found)
                        fprintf(stderr, "not found: %s\n", planted[i]);
                assert_true(found);
        }
        hygiene_findings_free(f, n);

        assert_int_equal(customize_sysprep(t, NULL), 0);
        img2 = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_clean(img2);
}

/* The build's sysprep on everything the gate knows: what it leaves passes
 * the gate, and it leaves what is wanted. */
static void test_sysprep_then_gate(void **state)
{
        static const char *const wanted[] = {
                "/root/.ssh/id_ed25519.pub",
                "/root/.ssh/known_hosts",
                "/home/alice/.ssh/authorized_keys",
                "/home/alice/.ssh/id_rsa.pub",
                "/home/alice/.ssh/id_rsa-cert.pub",
                "/home/alice/id_rsa",
                "/etc/NetworkManager/NetworkManager.conf",
                "/etc/NetworkManager/system-connections",
                "/etc/udev/rules.d/99-local.rules",
                "/var/lib/NetworkManager/NetworkManager.state",
                "/var/lib/apt/lists/lock",
                "/var/lib/apt/lists/partial",
                "/var/log/empty.log",
                "/etc/resolv.conf",
                "/etc/machine-id",
        };
        static const char *const gone[] = {
                "/root/.ssh/id_rsa",
                "/root/.ssh/authorized_keys",
                "/home/alice/.ssh/id_ed25519",
                "/home/.hidden/.ssh/id_rsa",
                "/home/bob smith/.bash_history",
                "/etc/NetworkManager/system-connections/x.nmconnection",
                "/etc/udev/rules.d/70-persistent-net.rules",
                "/var/lib/NetworkManager/secret_key",
                "/var/lib/systemd/network/lease-2",
                "/var/lib/apt/lists/partial/half",
                "/var/log/my dir/deep er/x y.log",
                "/tmp/dir",
        };
        char *keep[] = { (char *)"/root/.ssh/authorized_keys", NULL };
        _cleanup_free_ char *t = tree_clean(), *img = NULL, *t2 = tree_clean(), *img2 = NULL;

        for (size_t i = 0; i < ELEMENTSOF(gone); i++)
                tree_put(t, gone[i], "planted\n");
        tree_put(t, "/var/log/my dir/deep er/empty", "");
        assert_int_equal(customize_sysprep(t, NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(wanted); i++) {
                if (!tree_has(t, wanted[i]))
                        fprintf(stderr, "sysprep removed '%s'\n", wanted[i]);
                assert_true(tree_has(t, wanted[i]));
        }
        for (size_t i = 0; i < ELEMENTSOF(gone); i++) {
                if (tree_has(t, gone[i]))
                        fprintf(stderr, "sysprep left '%s'\n", gone[i]);
                assert_false(tree_has(t, gone[i]));
        }
        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_clean(img);

        /* kept: root's authorized_keys the kickstart wrote stays, and passes */
        tree_remove(t2, "/usr/lib/ingot/image.json");
        tree_put(t2, "/usr/lib/ingot/image.json",
                 "{\"name\": \"test\", \"sysprep\": {\"keep\": [\"/root/.ssh/authorized_keys\"]}}\n");
        tree_put(t2, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA admin\n");
        tree_put(t2, "/root/.ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        assert_int_equal(customize_sysprep(t2, keep), 0);
        assert_true(tree_has(t2, "/root/.ssh/authorized_keys"));
        assert_false(tree_has(t2, "/root/.ssh/id_rsa"));
        img2 = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t2);
        assert_clean(img2);
}

static void test_machine_id(void **state)
{
        static const char *const want[][2] = { { "/etc/machine-id", "initialised machine-id" } };
        _cleanup_free_ char *t = tree_new(), *img = NULL, *t2 = tree_new(), *img2 = NULL;

        /* as long as "uninitialized\n" but not it: the content decides */
        tree_put(t, "/etc/machine-id", "uninitialized!");
        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_findings(img, want, ELEMENTSOF(want));

        /* without the newline it is not what systemd writes either */
        tree_put(t2, "/etc/machine-id", "uninitialized");
        img2 = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t2);
        assert_findings(img2, want, ELEMENTSOF(want));
}

static void test_authorized_keys_kept(void **state)
{
        static const char *const want[][2] = { { "/root/.ssh/authorized_keys", "root's authorized_keys" } };
        _cleanup_free_ char *t = tree_clean(), *img = NULL, *t2 = tree_clean(), *img2 = NULL, *t3 = tree_new(),
                            *img3 = NULL;

        /* listed in image.json: the kickstart put it there */
        tree_remove(t, "/usr/lib/ingot/image.json");
        tree_put(t, "/usr/lib/ingot/image.json",
                 "{\"name\": \"test\", \"sysprep\": {\"keep\": [\"/etc/motd\", \"/root/.ssh/authorized_keys\"]}}\n");
        tree_put(t, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA admin\n");
        img = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t);
        assert_clean(img);

        /* image.json without it in "keep" */
        tree_put(t2, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA admin\n");
        img2 = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t2);
        assert_findings(img2, want, ELEMENTSOF(want));

        /* an image.json that is not JSON keeps nothing */
        tree_put(t3, "/usr/lib/ingot/image.json", "{\"sysprep\": {\"keep\": [\"/root/.ssh/authorized_keys\"");
        tree_put(t3, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA admin\n");
        img3 = image_new(TYPE_ROOT_X86_64, ROOT_EXT4, t3);
        assert_findings(img3, want, ELEMENTSOF(want));
}

static void test_refusals(void **state)
{
        _cleanup_free_ char *t = tree_clean(), *data = NULL, *vfat = NULL, *none = NULL, *bare = NULL, *missing = NULL,
                            *question = NULL;
        struct hygiene_finding *f;
        size_t n;

        /* no partition of a root type */
        data = image_new(TYPE_LINUX_DATA, ROOT_EXT4, t);
        assert_int_equal(scan(data, &f, &n), -ENXIO);
        assert_ptr_equal(f, (void *)1);

        /* a root that is not ext4, or holds nothing */
        vfat = image_new(TYPE_ROOT_X86_64, ROOT_VFAT, t);
        assert_int_equal(scan(vfat, &f, &n), -EOPNOTSUPP);
        none = image_new(TYPE_ROOT_ARM64, ROOT_NONE, t);
        assert_int_equal(scan(none, &f, &n), -EOPNOTSUPP);

        /* no partition table at all: a bare ext4 filesystem */
        assert_true(asprintf(&bare, "%s/bare.ext4", dir) > 0);
        assert_int_equal(RUN(NULL, "mke2fs", "-q", "-F", "-t", "ext4", "-d", t, bare, "8M"), 0);
        assert_true(scan(bare, &f, &n) < 0);

        assert_true(asprintf(&missing, "%s/missing.raw", dir) > 0);
        assert_int_equal(scan(missing, &f, &n), -ENOENT);

        assert_true(asprintf(&question, "%s/what?.raw", dir) > 0);
        assert_int_equal(scan(question, &f, &n), -EINVAL);
        assert_int_equal(n, 12345);
}

static int setup(void **state)
{
        if (!mkdtemp(dir))
                return -1;
        log_set_level(LOG_LEVEL_QUIET);
        return 0;
}

static int teardown(void **state)
{
        return rm_rf(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_clean),
                cmocka_unit_test(test_clean_variants),
                cmocka_unit_test(test_every_leftover),
                cmocka_unit_test(test_private_keys),
                cmocka_unit_test(test_network_state),
                cmocka_unit_test(test_every_rule),
                cmocka_unit_test(test_sysprep_then_gate),
                cmocka_unit_test(test_machine_id),
                cmocka_unit_test(test_authorized_keys_kept),
                cmocka_unit_test(test_refusals),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
