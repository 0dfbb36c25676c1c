/* Unit tests for the instance runtime's pure parts: ids, loader-entry
 * parsing, the kernel command line, the detached QEMU argv (direct kernel
 * boot, port forwards, pidfile/QMP/serial paths) and the check that a pid
 * really is an instance's QEMU. Nothing here starts a VM. */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "instance.h"
#include "shared/fileio.h"
#include "shared/strv.h"

static void test_id(void **state)
{
        char id[20];

        assert_true(instance_id_valid("i-0123456789abcdef0"));
        assert_false(instance_id_valid("i-0123456789abcdef"));
        assert_false(instance_id_valid("i-0123456789abcdef01"));
        assert_false(instance_id_valid("i-0123456789ABCDEF0"));
        assert_false(instance_id_valid("x-0123456789abcdef0"));
        assert_false(instance_id_valid(NULL));
        assert_int_equal(instance_id_new(id), 0);
        assert_true(instance_id_valid(id));
}

static void test_loader_entry(void **state)
{
        struct instance_boot_entry e = { 0 };

        assert_int_equal(instance_parse_loader_entry("# written by ingot\n"
                                                     "title busybox 1.0.0\n"
                                                     "version 1.0.0\n"
                                                     "linux /busybox/1.0.0/vmlinuz\n"
                                                     "initrd  /busybox/1.0.0/initrd.img \r\n"
                                                     "options console=ttyS0,115200 root=PARTUUID=abc ro panic=10\n",
                                                     &e),
                         0);
        assert_string_equal(e.kernel, "/busybox/1.0.0/vmlinuz");
        assert_string_equal(e.initrd, "/busybox/1.0.0/initrd.img");
        assert_string_equal(e.options, "console=ttyS0,115200 root=PARTUUID=abc ro panic=10");
        instance_boot_entry_done(&e);

        /* options lines add up; no trailing newline; tabs; no initrd */
        assert_int_equal(instance_parse_loader_entry("\tlinux\t/k\noptions a=1\noptions b=2", &e), 0);
        assert_string_equal(e.kernel, "/k");
        assert_null(e.initrd);
        assert_string_equal(e.options, "a=1 b=2");
        instance_boot_entry_done(&e);

        /* a key that only starts like one is not it */
        assert_int_equal(instance_parse_loader_entry("linuxefi /x\noptions ro\n", &e), -EBADMSG);
        assert_int_equal(instance_parse_loader_entry("", &e), -EBADMSG);
}

static void test_cmdline(void **state)
{
        _cleanup_free_ char *a = instance_kernel_cmdline("console=ttyS0 ro", "i-0123456789abcdef0");
        _cleanup_free_ char *b = instance_kernel_cmdline("", "h");
        _cleanup_free_ char *c = instance_kernel_cmdline(NULL, "h");

        assert_string_equal(a,
                            "console=ttyS0 ro systemd.hostname=i-0123456789abcdef0 ingot.hostname=i-0123456789abcdef0");
        assert_string_equal(b, "systemd.hostname=h ingot.hostname=h");
        assert_string_equal(c, "systemd.hostname=h ingot.hostname=h");
}

static void test_argv(void **state)
{
        static const struct instance_port ports[] = { { 80, 18080 }, { 22, 12222 } };
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *s = NULL;
        struct instance_runtime rt = {
                .dir = "/var/lib/i/i-0123456789abcdef0",
                .kernel = "/var/lib/i/i-0123456789abcdef0/vmlinuz",
                .initrd = "/var/lib/i/i-0123456789abcdef0/initrd.img",
                .append = "console=ttyS0,115200 ro ingot.hostname=i-0123456789abcdef0",
                .memory_mib = 384,
                .cpus = 2,
                .ports = ports,
                .n_ports = 2,
                .accel = QEMU_ACCEL_TCG,
        };

        assert_int_equal(instance_build_argv(&rt, &argv), 0);
        s = qemu_argv_to_string(argv);
        assert_string_equal(
                s, "qemu-system-x86_64 -nodefaults -no-user-config -machine q35,accel=tcg -cpu max -m 384 -smp 2 "
                   "-display none -no-reboot "
                   "-drive if=virtio,file=/var/lib/i/i-0123456789abcdef0/disk.qcow2,format=qcow2 "
                   "-device virtio-rng-pci "
                   "-chardev file,id=serial0,path=/var/lib/i/i-0123456789abcdef0/serial.log -serial chardev:serial0 "
                   "-chardev socket,id=qmp0,server=on,wait=off,path=/var/lib/i/i-0123456789abcdef0/qmp.sock "
                   "-mon chardev=qmp0,mode=control "
                   "-kernel /var/lib/i/i-0123456789abcdef0/vmlinuz "
                   "-initrd /var/lib/i/i-0123456789abcdef0/initrd.img "
                   "-append 'console=ttyS0,115200 ro ingot.hostname=i-0123456789abcdef0' "
                   "-netdev user,id=n0,hostfwd=tcp:127.0.0.1:18080-:80,hostfwd=tcp:127.0.0.1:12222-:22 "
                   "-device virtio-net-pci,netdev=n0 "
                   "-pidfile /var/lib/i/i-0123456789abcdef0/qemu.pid -daemonize");
        /* never snapshot: the overlay is the instance's own */
        assert_null(strstr(s, "snapshot"));

        /* no forwards: user networking all the same; a relative dir is refused */
        strv_free(argv);
        argv = NULL;
        rt.n_ports = 0;
        rt.initrd = NULL;
        assert_int_equal(instance_build_argv(&rt, &argv), 0);
        free(s);
        s = qemu_argv_to_string(argv);
        assert_non_null(strstr(s, "-netdev user,id=n0 -device virtio-net-pci,netdev=n0 "));
        assert_null(strstr(s, "-initrd"));
        strv_free(argv);
        argv = NULL;
        rt.dir = "relative/dir";
        assert_int_equal(instance_build_argv(&rt, &argv), -EINVAL);
}

#define CMDLINE(s) s, sizeof(s) /* the trailing NUL of the literal ends the last argument */

static void test_cmdline_matches(void **state)
{
        static const char good[] = "/usr/bin/qemu-system-x86_64\0-m\0256\0-drive\0"
                                   "if=virtio,file=/s/i-1/disk.qcow2,format=qcow2\0-daemonize";
        static const char other_dir[] = "qemu-system-x86_64\0-drive\0if=virtio,file=/s/i-10/disk.qcow2,format=qcow2";
        static const char not_qemu[] = "/bin/sleep\0if=virtio,file=/s/i-1/disk.qcow2,format=qcow2";
        static const char comma[] = "qemu-system-x86_64\0-drive\0if=virtio,file=/s/a,,b/disk.qcow2,format=qcow2";
        _cleanup_free_ char *self = NULL;
        size_t n = 0;

        assert_true(instance_cmdline_matches(CMDLINE(good), "/s/i-1"));
        assert_false(instance_cmdline_matches(CMDLINE(good), "/s/i"));
        assert_false(instance_cmdline_matches(CMDLINE(other_dir), "/s/i-1"));
        assert_false(instance_cmdline_matches(CMDLINE(not_qemu), "/s/i-1"));
        assert_true(instance_cmdline_matches(CMDLINE(comma), "/s/a,b"));
        assert_false(instance_cmdline_matches("", 0, "/s/i-1")); /* a zombie's */
        /* a recycled pid: ours is not an instance's QEMU */
        assert_int_equal(read_full_file("/proc/self/cmdline", 1 << 20, &self, &n), 0);
        assert_false(instance_cmdline_matches(self, n, "/s/i-1"));
}

static void test_probe_missing(void **state)
{
        char tmpl[] = "/tmp/ingot-test-instance-XXXXXX";
        _cleanup_free_ char *json = NULL, *pidf = NULL;
        enum instance_status s;
        pid_t pid = -1;

        assert_int_equal(instance_probe("/nonexistent/i-1", &s, &pid), 0);
        assert_int_equal(s, INSTANCE_MISSING);
        assert_int_equal(pid, 0);

        /* an instance whose pidfile names a live process that is not its QEMU (us) */
        assert_non_null(mkdtemp(tmpl));
        assert_true(asprintf(&json, "%s/instance.json", tmpl) > 0);
        assert_true(asprintf(&pidf, "%s/qemu.pid", tmpl) > 0);
        assert_int_equal(write_file_atomic(json, "{}", 2, 0600), 0);
        {
                char p[32];
                int n = snprintf(p, sizeof(p), "%d\n", (int)getpid());
                assert_int_equal(write_file_atomic(pidf, p, (size_t)n, 0600), 0);
        }
        assert_int_equal(instance_probe(tmpl, &s, &pid), 0);
        assert_int_equal(s, INSTANCE_EXITED);
        /* stop never signals it (we are still here), remove deletes the directory */
        assert_int_equal(instance_stop(tmpl, 1), 0);
        assert_int_equal(instance_remove(tmpl), 0);
        assert_int_equal(access(tmpl, F_OK), -1);
}

static void test_config_matches(void **state)
{
        char tmpl[] = "/tmp/ingot-test-instance-XXXXXX";
        _cleanup_free_ char *json = NULL;
        static const char text[] = "{\"id\": \"i-0123456789abcdef0\", \"memory_mib\": 512, \"cpus\": 2,"
                                   " \"ports\": [{\"guest\": 80, \"host\": 8081}, {\"guest\": 22, \"host\": 2223}]}";
        struct instance_port ports[2] = { { .guest = 80, .host = 8081 }, { .guest = 22, .host = 2223 } };
        struct instance_config c = { .memory_mib = 512, .cpus = 2, .ports = ports, .n_ports = 2 };

        assert_int_equal(instance_config_matches("/nonexistent/i-1", &c), -ENOENT);
        assert_non_null(mkdtemp(tmpl));
        assert_true(asprintf(&json, "%s/instance.json", tmpl) > 0);
        assert_int_equal(write_file_atomic(json, text, strlen(text), 0600), 0);
        assert_int_equal(instance_config_matches(tmpl, &c), 1);
        c.memory_mib = 1024;
        assert_int_equal(instance_config_matches(tmpl, &c), 0);
        c.memory_mib = 512;
        c.cpus = 1;
        assert_int_equal(instance_config_matches(tmpl, &c), 0);
        c.cpus = 2;
        ports[1].host = 2224; /* another base port */
        assert_int_equal(instance_config_matches(tmpl, &c), 0);
        ports[1].host = 2223;
        c.n_ports = 1; /* a forward removed */
        assert_int_equal(instance_config_matches(tmpl, &c), 0);
        c.n_ports = 2;
        assert_int_equal(instance_config_matches(tmpl, &c), 1);
        assert_int_equal(write_file_atomic(json, "[]", 2, 0600), 0);
        assert_int_equal(instance_config_matches(tmpl, &c), -EBADMSG);
        assert_int_equal(instance_remove(tmpl), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_id),
                cmocka_unit_test(test_loader_entry),
                cmocka_unit_test(test_cmdline),
                cmocka_unit_test(test_argv),
                cmocka_unit_test(test_cmdline_matches),
                cmocka_unit_test(test_probe_missing),
                cmocka_unit_test(test_config_matches),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
