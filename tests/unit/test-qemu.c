/* Unit tests for the QEMU runner's pure parts: the argv builder for bios,
 * uefi and qcow2, option-value escaping, shell quoting, QMP messages, the
 * serial line splitter with its ready marker, and image format detection.
 * Nothing here starts a VM. */
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

#include "qemu.h"
#include "shared/strv.h"

static char *joined(const struct qemu_config *c)
{
        _cleanup_strv_free_ char **argv = NULL;

        assert_int_equal(qemu_build_argv(c, &argv), 0);
        return qemu_argv_to_string(argv);
}

static void test_argv_bios_raw(void **state)
{
        struct qemu_config c = {
                .image = "/img/test.raw",
                .image_format = "raw",
                .snapshot = true,
                .firmware = QEMU_FIRMWARE_BIOS,
                .accel = QEMU_ACCEL_TCG,
                .serial_log = "/run/s.log",
                .qmp_socket = "/run/q.sock",
        };
        _cleanup_free_ char *s = joined(&c);

        assert_string_equal(s, "qemu-system-x86_64 -nodefaults -no-user-config -machine q35,accel=tcg -cpu max "
                               "-m 512 -smp 1 -display none -no-reboot "
                               "-drive if=virtio,file=/img/test.raw,format=raw,snapshot=on "
                               "-device virtio-rng-pci "
                               "-chardev file,id=serial0,path=/run/s.log -serial chardev:serial0 "
                               "-chardev socket,id=qmp0,server=on,wait=off,path=/run/q.sock "
                               "-mon chardev=qmp0,mode=control");
        assert_null(strstr(s, "pflash"));
}

static void test_argv_uefi_qcow2_kvm(void **state)
{
        struct qemu_config c = {
                .image = "/img/a.qcow2",
                .image_format = "qcow2",
                .snapshot = false,
                .firmware = QEMU_FIRMWARE_UEFI,
                .accel = QEMU_ACCEL_KVM,
                .ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd",
                .ovmf_vars = "/run/OVMF_VARS.fd",
                .memory_mib = 2048,
                .cpus = 2,
                .serial_stdio = true,
                .serial_log = "/run/s.log",
        };
        _cleanup_free_ char *s = joined(&c);

        assert_string_equal(s, "qemu-system-x86_64 -nodefaults -no-user-config -machine q35,accel=kvm -cpu host "
                               "-m 2048 -smp 2 -display none -no-reboot "
                               "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd "
                               "-drive if=pflash,format=raw,unit=1,file=/run/OVMF_VARS.fd "
                               "-drive if=virtio,file=/img/a.qcow2,format=qcow2 "
                               "-device virtio-rng-pci "
                               "-chardev stdio,id=serial0,signal=on,logfile=/run/s.log -serial chardev:serial0");
}

static void test_argv_incomplete(void **state)
{
        _cleanup_strv_free_ char **argv = NULL;
        struct qemu_config c = { .image = "x", .image_format = "raw", .firmware = QEMU_FIRMWARE_UEFI };

        assert_int_equal(qemu_build_argv(&c, &argv), -EINVAL); /* no OVMF */
        c.firmware = QEMU_FIRMWARE_AUTO;
        assert_int_equal(qemu_build_argv(&c, &argv), -EINVAL);
        c.firmware = QEMU_FIRMWARE_BIOS;
        c.accel = QEMU_ACCEL_AUTO;
        assert_int_equal(qemu_build_argv(&c, &argv), -EINVAL);
        c.accel = QEMU_ACCEL_TCG;
        c.image = NULL;
        assert_int_equal(qemu_build_argv(&c, &argv), -EINVAL);
        assert_null(argv);
}

static void test_escape_and_quote(void **state)
{
        struct qemu_config c = {
                .image = "/tmp/my image,v1's.raw",
                .image_format = "raw",
                .firmware = QEMU_FIRMWARE_BIOS,
                .accel = QEMU_ACCEL_TCG,
        };
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *e = qemu_escape_opt_value("a,b,,c"), *s = NULL, *q = NULL;
        char *const plain[] = { (char *)"echo", (char *)"", (char *)"a b", (char *)"it's", (char *)"x=1,y", NULL };

        assert_string_equal(e, "a,,b,,,,c");
        q = qemu_argv_to_string(plain);
        assert_string_equal(q, "echo '' 'a b' 'it'\\''s' x=1,y");

        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        assert_true(strv_contains(argv, "if=virtio,file=/tmp/my image,,v1's.raw,format=raw"));
        s = qemu_argv_to_string(argv);
        assert_non_null(strstr(s, " 'if=virtio,file=/tmp/my image,,v1'\\''s.raw,format=raw' "));
}

static void test_names(void **state)
{
        assert_string_equal(qemu_firmware_to_string(QEMU_FIRMWARE_UEFI), "uefi");
        assert_string_equal(qemu_firmware_to_string(QEMU_FIRMWARE_AUTO), "auto");
        assert_int_equal(qemu_firmware_from_string("bios"), QEMU_FIRMWARE_BIOS);
        assert_int_equal(qemu_firmware_from_string("efi"), -EINVAL);
        assert_int_equal(qemu_accel_from_string("kvm"), QEMU_ACCEL_KVM);
        assert_int_equal(qemu_accel_from_string(NULL), -EINVAL);
        assert_string_equal(qemu_accel_to_string(QEMU_ACCEL_TCG), "tcg");
}

static void test_qmp(void **state)
{
        enum qmp_message_type t;
        char *d = NULL;

        assert_int_equal(qmp_parse_message("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                                           "\"major\": 7}}, \"capabilities\": [\"oob\"]}}",
                                           &t, &d),
                         0);
        assert_int_equal(t, QMP_MESSAGE_GREETING);
        assert_null(d);
        assert_int_equal(qmp_parse_message("{\"return\": {}}", &t, NULL), 0);
        assert_int_equal(t, QMP_MESSAGE_RETURN);
        assert_int_equal(qmp_parse_message("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, "
                                           "\"event\": \"POWERDOWN\"}",
                                           &t, &d),
                         0);
        assert_int_equal(t, QMP_MESSAGE_EVENT);
        assert_string_equal(d, "POWERDOWN");
        d = x_free(d);
        assert_int_equal(qmp_parse_message("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                                           "\"The command foo has not been found\"}}",
                                           &t, &d),
                         0);
        assert_int_equal(t, QMP_MESSAGE_ERROR);
        assert_string_equal(d, "The command foo has not been found");
        d = x_free(d);
        assert_int_equal(qmp_parse_message("not json", &t, &d), -EBADMSG);
        assert_int_equal(qmp_parse_message("[1,2]", &t, &d), -EBADMSG);
        assert_int_equal(qmp_parse_message("{\"foo\": 1}", &t, &d), -EBADMSG);
}

static char *tail_of(const struct qemu_serial *s)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        qemu_serial_print_tail(s, f);
        fclose(f);
        return buf;
}

static void test_serial(void **state)
{
        struct qemu_serial s = { 0 };
        const char *boot = "\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r\n"
                           "[    1.0] Run /init as init process\r\n"
                           "Starting ingot-ready.service\r\n" /* a unit name is not the marker */
                           "[    2.0] random: crng init\r\ningot-ready name=test ver";
        _cleanup_free_ char *t = NULL;

        /* fed in two pieces, the marker line split between them */
        assert_int_equal(qemu_serial_feed(&s, boot, strlen(boot)), 0);
        assert_null(s.ready_line);
        assert_int_equal(qemu_serial_feed(&s, "sion=0\r\n", 8), 1);
        assert_string_equal(s.ready_line, "ingot-ready name=test version=0");
        assert_int_equal(s.n_lines, 5);
        t = tail_of(&s);
        assert_string_equal(t, "    BdsDxe: loading Boot0001\n"
                               "    [    1.0] Run /init as init process\n"
                               "    Starting ingot-ready.service\n"
                               "    [    2.0] random: crng init\n"
                               "    ingot-ready name=test version=0\n");
        qemu_serial_done(&s);
        assert_int_equal(s.n_lines, 0);
        t = x_free(t);
        t = tail_of(&s);
        assert_string_equal(t, "    (no serial output)\n");
}

static void test_serial_tail_keeps_last(void **state)
{
        struct qemu_serial s = { 0 };
        _cleanup_free_ char *t = NULL;
        char line[32];

        for (int i = 0; i < 50; i++) {
                int n = snprintf(line, sizeof(line), "line %d\n", i);
                assert_int_equal(qemu_serial_feed(&s, line, (size_t)n), 0);
        }
        assert_int_equal(qemu_serial_feed(&s, "partial", 7), 0);
        t = tail_of(&s);
        /* 19 complete lines and the unfinished one */
        assert_non_null(strstr(t, "    line 31\n    line 32\n"));
        assert_null(strstr(t, "line 30\n"));
        assert_non_null(strstr(t, "    line 49\n    partial\n"));
        qemu_serial_done(&s);
}

static void test_detect_format(void **state)
{
        char path[] = "/tmp/test-qemu-XXXXXX";
        const char *fmt = NULL;
        int fd = mkstemp(path);

        assert_true(fd >= 0);
        assert_int_equal(qemu_detect_image_format(path, &fmt), 0);
        assert_string_equal(fmt, "raw");
        assert_int_equal(write(fd, "QFI\xfb\0\0\0\3", 8), 8);
        assert_int_equal(qemu_detect_image_format(path, &fmt), 0);
        assert_string_equal(fmt, "qcow2");
        close(fd);
        unlink(path);
        assert_int_equal(qemu_detect_image_format(path, &fmt), -ENOENT);
}

static void test_accel_env(void **state)
{
        /* $INGOT_ACCEL decides without a probe; the answer is then kept */
        setenv("INGOT_ACCEL", "tcg", 1);
        assert_int_equal(qemu_probe_accel(1), QEMU_ACCEL_TCG);
        setenv("INGOT_ACCEL", "kvm", 1);
        assert_int_equal(qemu_probe_accel(1), QEMU_ACCEL_TCG);
        unsetenv("INGOT_ACCEL");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_argv_bios_raw),   cmocka_unit_test(test_argv_uefi_qcow2_kvm),
                cmocka_unit_test(test_argv_incomplete), cmocka_unit_test(test_escape_and_quote),
                cmocka_unit_test(test_names),           cmocka_unit_test(test_qmp),
                cmocka_unit_test(test_serial),          cmocka_unit_test(test_serial_tail_keeps_last),
                cmocka_unit_test(test_detect_format),   cmocka_unit_test(test_accel_env),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
