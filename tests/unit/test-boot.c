/* Unit tests for the boot stage: the ESP staging directory for uefi, bios
 * and both (compared with tests/data/boot-esp, which the boot integration
 * test also puts on its ESP), file times, and the BIOS install into an image
 * file made with sfdisk and mkfs.vfat (skipped when those tools are absent). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

#include "boot.h"
#include "shared/fileio.h"
#include "shared/run.h"

#define EPOCH UINT64_C(1700000000)
#define MiB (UINT64_C(1) << 20)

struct fixture {
        char dir[64];
        char *kernel, *initrd, *esp, *efi_dir;
        struct template tmpl;
        struct part_entry esp_entry;
        struct part_layout layout;
        struct spec spec;
};

static char *path_in(const char *dir, const char *name)
{
        char *p;
        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static void put(const char *path, const char *text)
{
        assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-boot-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->kernel = path_in(f->dir, "vmlinuz-6.1");
        f->initrd = path_in(f->dir, "initrd.img-6.1");
        f->esp = path_in(f->dir, "esp");
        f->efi_dir = path_in(f->dir, "efi");
        put(f->kernel, "kernel bytes");
        put(f->initrd, "initrd bytes");
        assert_int_equal(mkdir(f->esp, 0755), 0);
        assert_int_equal(mkdir(f->efi_dir, 0755), 0);
        {
                char *p = path_in(f->efi_dir, "systemd-bootx64.efi");
                put(p, "MZ fake systemd-boot");
                free(p);
        }
        setenv("INGOT_SYSTEMD_BOOT_EFI_DIR", f->efi_dir, 1);

        f->tmpl.timeout = 0;
        f->esp_entry = (struct part_entry){ .number = 1, .role = PART_ROLE_ESP, .start = 1 * MiB, .size = 32 * MiB };
        f->layout = (struct part_layout){ .disk_size = 40 * MiB, .entries = &f->esp_entry, .n_entries = 1 };
        f->spec = (struct spec){
                .template = &f->tmpl,
                .name = (char *)"test",
                .version = (char *)"0",
                .architecture = (char *)"x86-64",
                .boot_mode = BOOT_MODE_BOTH,
                .source_date_epoch = EPOCH,
                .layout = &f->layout,
                .cmdline = (char *)"console=ttyS0 panic=-1",
        };
        *state = f;
        return 0;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        return remove(path) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
        free(f->kernel);
        free(f->initrd);
        free(f->esp);
        free(f->efi_dir);
        free(f);
        unsetenv("INGOT_SYSTEMD_BOOT_EFI_DIR");
        return 0;
}

static char *esp_file(const struct fixture *f, const char *rel)
{
        char *p = path_in(f->esp, rel), *data = NULL;
        int r = read_full_file(p, 1 << 20, &data, NULL);

        free(p);
        return r < 0 ? NULL : data;
}

static void assert_same_as_data(const struct fixture *f, const char *rel, const char *data_name)
{
        const char *dir = getenv("INGOT_TEST_DATA");
        _cleanup_free_ char *got = esp_file(f, rel), *want = NULL, *p = NULL;

        assert_non_null(dir);
        assert_true(asprintf(&p, "%s/boot-esp/%s", dir, data_name) > 0);
        assert_int_equal(read_full_file(p, 1 << 20, &want, NULL), 0);
        assert_non_null(got);
        assert_string_equal(got, want);
}

static bool exists(const struct fixture *f, const char *rel)
{
        _cleanup_free_ char *p = path_in(f->esp, rel);
        return access(p, F_OK) == 0;
}

static int check_time(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        return st->st_mtime == (time_t)EPOCH ? 0 : 1;
}

static void test_stage_both(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *k = NULL, *efi = NULL, *efi2 = NULL;

        assert_int_equal(boot_stage_esp(&f->spec, NULL, f->kernel, f->initrd, f->esp), 0);
        k = esp_file(f, "test/0/vmlinuz");
        assert_string_equal(k, "kernel bytes");
        k = x_free(k);
        k = esp_file(f, "test/0/initrd.img");
        assert_string_equal(k, "initrd bytes");
        efi = esp_file(f, "EFI/BOOT/BOOTX64.EFI");
        efi2 = esp_file(f, "EFI/systemd/systemd-bootx64.efi");
        assert_string_equal(efi, "MZ fake systemd-boot");
        assert_string_equal(efi2, "MZ fake systemd-boot");
        assert_same_as_data(f, "loader/loader.conf", "loader.conf");
        assert_same_as_data(f, "loader/entries/test-0.conf", "test-0.conf");
        assert_same_as_data(f, "syslinux/syslinux.cfg", "syslinux.cfg");
        /* every file and directory, the top included, carries SOURCE_DATE_EPOCH */
        assert_int_equal(nftw(f->esp, check_time, 8, FTW_PHYS), 0);
}

static void test_stage_uefi_only_with_timeout(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *conf = NULL;

        f->spec.boot_mode = BOOT_MODE_UEFI;
        f->tmpl.timeout = 5;
        assert_int_equal(boot_stage_esp(&f->spec, NULL, f->kernel, f->initrd, f->esp), 0);
        assert_true(exists(f, "EFI/BOOT/BOOTX64.EFI"));
        assert_false(exists(f, "syslinux"));
        conf = esp_file(f, "loader/loader.conf");
        assert_non_null(strstr(conf, "\ntimeout 5\n"));
}

static void test_stage_bios_only_with_timeout(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *cfg = NULL;

        f->spec.boot_mode = BOOT_MODE_BIOS;
        f->tmpl.timeout = 3;
        assert_int_equal(boot_stage_esp(&f->spec, NULL, f->kernel, f->initrd, f->esp), 0);
        assert_false(exists(f, "EFI"));
        assert_false(exists(f, "loader"));
        assert_true(exists(f, "test/0/vmlinuz"));
        cfg = esp_file(f, "syslinux/syslinux.cfg");
        assert_non_null(strstr(cfg, "\nPROMPT 1\nTIMEOUT 30\n"));
        assert_true(strncmp(cfg, "SERIAL 0 115200\n", 16) == 0);
}

static void test_stage_errors(void **state)
{
        struct fixture *f = *state;
        char *bad = path_in(f->dir, "missing");

        assert_int_equal(boot_stage_esp(&f->spec, NULL, bad, f->initrd, f->esp), -ENOENT);
        free(bad);
        f->spec.name = (char *)"../x";
        assert_int_equal(boot_stage_esp(&f->spec, NULL, f->kernel, f->initrd, f->esp), -EINVAL);
        f->spec.name = (char *)"test";
        setenv("INGOT_SYSTEMD_BOOT_EFI_DIR", f->dir, 1); /* no systemd-boot there */
        assert_int_equal(boot_stage_esp(&f->spec, NULL, f->kernel, f->initrd, f->esp), -ENOENT);
}

static int run(const char *const *argv)
{
        _cleanup_free_ char *out = NULL, *err = NULL;
        int r = run_argv(argv, NULL, &out, &err);
        if (r != 0)
                fprintf(stderr, "%s: %d: %s%s\n", argv[0], r, out ? out : "", err ? err : "");
        return r;
}

static bool have(const char *prog)
{
        _cleanup_free_ char *out = NULL;
        return run_argv((const char *const[]){ "sh", "-c", "command -v \"$0\"", prog, NULL }, NULL, &out, NULL) == 0;
}

static void read_at(const char *path, void *buf, size_t n)
{
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, buf, n, 0), (ssize_t)n);
        close(fd);
}

static void test_install_bios(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *img = path_in(f->dir, "disk.raw"), *mbr = NULL, *spec = NULL, *mtools_img = NULL;
        unsigned char before[512], after[512];
        size_t mbr_size = 0;

        if (!have("sfdisk") || !have("mkfs.vfat") || !have("syslinux") || !have("mmd") ||
            access("/usr/lib/syslinux/mbr/gptmbr.bin", R_OK) < 0)
                skip();
        assert_int_equal(run((const char *const[]){ "truncate", "-s", "40M", img, NULL }), 0);
        assert_true(asprintf(&spec, "label: gpt\nstart=2048, size=65536, type=uefi, attrs=\"LegacyBIOSBootable\"\n") >
                    0);
        {
                char *sf = path_in(f->dir, "layout.sfdisk");
                put(sf, spec);
                assert_int_equal(run((const char *const[]){ "sh", "-c", "sfdisk -q \"$0\" < \"$1\"", img, sf, NULL }),
                                 0);
                free(sf);
        }
        assert_int_equal(
                run((const char *const[]){ "mkfs.vfat", "--invariant", "--offset", "2048", img, "32768", NULL }), 0);
        assert_true(asprintf(&mtools_img, "%s@@1M", img) > 0);
        assert_int_equal(run((const char *const[]){ "mmd", "-i", mtools_img, "::/syslinux", NULL }), 0);

        read_at(img, before, sizeof(before));
        /* uefi only: nothing is written */
        f->spec.boot_mode = BOOT_MODE_UEFI;
        assert_int_equal(boot_install_bios(&f->spec, img), 0);
        read_at(img, after, sizeof(after));
        assert_memory_equal(before, after, 512);

        f->spec.boot_mode = BOOT_MODE_BOTH;
        assert_int_equal(boot_install_bios(&f->spec, img), 0);
        read_at(img, after, sizeof(after));
        assert_int_equal(read_full_file("/usr/lib/syslinux/mbr/gptmbr.bin", 4096, &mbr, &mbr_size), 0);
        assert_true(mbr_size <= 440);
        assert_memory_equal(after, mbr, mbr_size);
        assert_memory_equal(after + 440, before + 440, 512 - 440); /* partition table untouched */
        assert_int_equal(run((const char *const[]){ "mdir", "-a", "-i", mtools_img, "::/syslinux/ldlinux.sys", NULL }),
                         0);
        assert_int_equal(run((const char *const[]){ "sfdisk", "--verify", img, NULL }), 0);

        /* not a GPT disk: refused, the file left alone */
        memset(before, 0, sizeof(before));
        {
                int fd = open(img, O_WRONLY);
                assert_int_equal(pwrite(fd, before, 512, 0), 512);
                close(fd);
        }
        assert_int_equal(boot_install_bios(&f->spec, img), -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_stage_both, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stage_uefi_only_with_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stage_bios_only_with_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stage_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_install_bios, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
