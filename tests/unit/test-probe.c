/* Unit tests for the probe stage on real images made here with sfdisk,
 * mkfs.vfat --offset and mke2fs -E offset= (no root, no loop devices):
 * every field of the table and the filesystems, MBR, the refusals, the
 * libparted warnings, and the os-release parser. libguestfs (slow, a VM)
 * is left to tests/integration/test-inspect.sh. */
#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "probe.h"
#include "shared/log.h"
#include "shared/run.h"
#include "shared/strv.h"

static char dir[] = "/tmp/test-probe-XXXXXX";
static char gpt_img[256], mbr_img[256], zero_img[256], fs_img[256], grown_img[256], qcow_img[256], swap_img[256];

static const char gpt_script[] =
        "label: gpt\n"
        "label-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n"
        "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, "
        "uuid=AAAAAAAA-0000-4000-8000-000000000001, name=biosboot, attrs=\"LegacyBIOSBootable\"\n"
        "start=4096, size=32768, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
        "uuid=AAAAAAAA-0000-4000-8000-000000000002, name=\"EFI System\"\n"
        "start=36864, size=86016, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, "
        "uuid=AAAAAAAA-0000-4000-8000-000000000003, name=root, attrs=\"RequiredPartition,GUID:59,GUID:60,GUID:63\"\n"
        "start=122880, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
        "uuid=AAAAAAAA-0000-4000-8000-000000000004, name=data\n"
        "start=126976, size=2048, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, "
        "uuid=AAAAAAAA-0000-4000-8000-000000000005, name=lvm\n";

static const char mbr_script[] = "label: dos\n"
                                 "label-id: 0x1234abcd\n"
                                 "start=2048, size=4096, type=83, bootable\n"
                                 "start=6144, size=2048, type=82\n";

static int make_file(const char *path, uint64_t size)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int r;

        if (fd < 0)
                return -1;
        r = ftruncate(fd, (off_t)size);
        close(fd);
        return r;
}

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

/* dd conv=notrunc: src into dst at offset */
static int copy_into(const char *src, const char *dst, off_t offset)
{
        char buf[65536];
        int in = open(src, O_RDONLY | O_CLOEXEC), out = open(dst, O_WRONLY | O_CLOEXEC), r = 0;
        ssize_t n;

        if (in < 0 || out < 0)
                r = -1;
        while (r == 0 && (n = read(in, buf, sizeof(buf))) > 0)
                if (pwrite(out, buf, (size_t)n, offset) != n)
                        r = -1;
                else
                        offset += n;
        if (in >= 0)
                close(in);
        if (out >= 0)
                close(out);
        return r;
}

#define RUN(script, ...) run(script, (const char *const[]){ __VA_ARGS__, NULL })

static int setup(void **state)
{
        char offset[64];
        int r;

        if (!mkdtemp(dir))
                return -1;
        snprintf(gpt_img, sizeof(gpt_img), "%s/gpt.raw", dir);
        snprintf(mbr_img, sizeof(mbr_img), "%s/mbr.raw", dir);
        snprintf(zero_img, sizeof(zero_img), "%s/zero.raw", dir);
        snprintf(fs_img, sizeof(fs_img), "%s/fs.ext4", dir);
        snprintf(grown_img, sizeof(grown_img), "%s/grown.raw", dir);
        snprintf(qcow_img, sizeof(qcow_img), "%s/image.qcow2", dir);

        /* 64 MiB GPT: biosboot (empty), ESP (FAT16), root (ext4), two without a fs */
        if (make_file(gpt_img, 64 << 20) < 0)
                return -1;
        r = RUN(gpt_script, "sfdisk", "-q", "--no-reread", "--no-tell-kernel", gpt_img);
        /* --invariant first: after -i it resets the volume id (dosfstools 4.2) */
        if (r == 0)
                r = RUN(NULL, "mkfs.vfat", "--offset=4096", "--invariant", "-i", "5037E596", "-n", "ESP", gpt_img,
                        "16384");
        snprintf(offset, sizeof(offset), "offset=%d", 36864 * 512);
        if (r == 0)
                r = RUN(NULL, "mke2fs", "-q", "-F", "-t", "ext4", "-E", offset, "-U",
                        "11111111-2222-4333-8444-555555555555", "-L", "root", gpt_img, "43008");
        if (r == -ENOENT) {
                fprintf(stderr, "sfdisk, mkfs.vfat or mke2fs missing (fdisk, dosfstools, e2fsprogs)\n");
                exit(77);
        }
        if (r < 0)
                return -1;

        /* MBR with a bootable Linux partition and a swap partition (mkswap
         * 2.38 has no --offset: made aside and copied in) */
        snprintf(swap_img, sizeof(swap_img), "%s/swap", dir);
        if (make_file(mbr_img, 8 << 20) < 0 ||
            RUN(mbr_script, "sfdisk", "-q", "--no-reread", "--no-tell-kernel", mbr_img) < 0 ||
            make_file(swap_img, 1 << 20) < 0 ||
            RUN(NULL, "mkswap", "-q", "-L", "swp", "-U", "22222222-3333-4444-8555-666666666666", swap_img) < 0 ||
            copy_into(swap_img, mbr_img, 6144 * 512) < 0)
                return -1;

        /* zeros; a bare filesystem; a GPT image grown after partitioning */
        if (make_file(zero_img, 4 << 20) < 0 || make_file(fs_img, 8 << 20) < 0 ||
            RUN(NULL, "mke2fs", "-q", "-F", "-t", "ext4", fs_img) < 0 || make_file(grown_img, 8 << 20) < 0 ||
            RUN("label: gpt\nstart=2048, size=4096, type=L\n", "sfdisk", "-q", "--no-reread", "--no-tell-kernel",
                grown_img) < 0 ||
            truncate(grown_img, 16 << 20) < 0)
                return -1;

        /* just the qcow2 magic and some zeros */
        if (make_file(qcow_img, 1 << 20) < 0)
                return -1;
        {
                int fd = open(qcow_img, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || write(fd, "QFI\xfb\0\0\0\3", 8) != 8)
                        return -1;
                close(fd);
        }
        log_set_level(LOG_LEVEL_QUIET);
        return 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(p);
}

static int teardown(void **state)
{
        return nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_gpt(void **state)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        const struct probe_partition *p;

        assert_int_equal(probe_image(gpt_img, &img), 0);
        assert_string_equal(img->path, gpt_img);
        assert_string_equal(img->table, "gpt");
        assert_string_equal(img->disk_uuid, "01234567-89ab-cdef-0123-456789abcdef");
        assert_int_equal(img->size, 64 << 20);
        assert_int_equal(img->sector_size, 512);
        assert_int_equal(img->n_partitions, 5);
        assert_null(img->warnings);
        assert_int_equal(img->os.status, PROBE_OS_SKIPPED);

        p = &img->partitions[0];
        assert_int_equal(p->number, 1);
        assert_int_equal(p->start, 2048 * 512);
        assert_int_equal(p->size, 2048 * 512);
        assert_int_equal(p->end, 4096 * 512 - 1);
        assert_string_equal(p->name, "biosboot");
        assert_string_equal(p->type, "21686148-6449-6e6f-744e-656564454649");
        assert_string_equal(p->role, "biosboot");
        assert_string_equal(p->uuid, "aaaaaaaa-0000-4000-8000-000000000001");
        assert_int_equal(p->attributes, PROBE_GPT_ATTR_LEGACY_BIOS_BOOTABLE);
        assert_null(p->fs.type);
        assert_null(p->fs.label);
        assert_null(p->fs.uuid);

        p = &img->partitions[1];
        assert_int_equal(p->number, 2);
        assert_int_equal(p->start, 4096 * 512);
        assert_int_equal(p->size, 16 << 20);
        assert_string_equal(p->name, "EFI System");
        assert_string_equal(p->type, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_string_equal(p->role, "esp");
        assert_string_equal(p->uuid, "aaaaaaaa-0000-4000-8000-000000000002");
        assert_int_equal(p->attributes, 0);
        assert_string_equal(p->fs.type, "vfat");
        assert_string_equal(p->fs.label, "ESP");
        assert_string_equal(p->fs.uuid, "5037-E596");
        assert_string_equal(p->fs.volume_id, "5037-E596");
        assert_string_equal(p->fs.version, "FAT16");
        assert_string_equal(p->fs.usage, "filesystem");

        p = &img->partitions[2];
        assert_int_equal(p->number, 3);
        assert_int_equal(p->start, 36864 * 512);
        assert_int_equal(p->size, 86016 * 512);
        assert_string_equal(p->name, "root");
        assert_string_equal(p->role, "root");
        assert_string_equal(p->uuid, "aaaaaaaa-0000-4000-8000-000000000003");
        assert_int_equal(p->attributes, PROBE_GPT_ATTR_REQUIRED | PROBE_GPT_ATTR_GROWFS | PROBE_GPT_ATTR_READ_ONLY |
                                                PROBE_GPT_ATTR_NO_AUTO);
        assert_string_equal(p->fs.type, "ext4");
        assert_string_equal(p->fs.label, "root");
        assert_string_equal(p->fs.uuid, "11111111-2222-4333-8444-555555555555");
        assert_string_equal(p->fs.version, "1.0");
        assert_null(p->fs.volume_id);

        /* the generic Linux type has a DPS role; LVM has none */
        assert_string_equal(img->partitions[3].role, "linux-generic");
        assert_string_equal(img->partitions[4].type, "e6d6d379-f507-44c2-a23c-238f2a3df928");
        assert_null(img->partitions[4].role);
        assert_null(img->partitions[4].fs.type);
}

static void test_gpt_json(void **state)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        _cleanup_free_ char *s = NULL;
        json_t *j, *p;
        const char *key;
        json_t *v;
        const char *const order[] = { "number",  "role",       "name",       "type_uuid",       "uuid",   "start",
                                      "end",     "size",       "attributes", "attribute_names", "fstype", "label",
                                      "fs_uuid", "fs_version", "fs_usage",   "volume_id" };
        size_t i = 0;

        assert_int_equal(probe_image(gpt_img, &img), 0);
        j = probe_image_to_json(img);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "image")), gpt_img);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "os"), "status")), "skipped");
        p = json_array_get(json_object_get(json_object_get(j, "disk"), "partitions"), 1);
        json_object_foreach(p, key, v)
        {
                assert_true(i < ELEMENTSOF(order));
                assert_string_equal(key, order[i++]);
        }
        assert_int_equal(i, ELEMENTSOF(order));
        p = json_array_get(json_object_get(json_object_get(j, "disk"), "partitions"), 2);
        assert_string_equal(json_string_value(json_object_get(p, "attributes")), "0x9800000000000001");
        s = json_dumps(json_object_get(p, "attribute_names"), JSON_COMPACT);
        assert_string_equal(s, "[\"required\",\"growfs\",\"read-only\",\"no-auto\"]");
        json_decref(j);
}

static void test_mbr(void **state)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;

        assert_int_equal(probe_image(mbr_img, &img), 0);
        assert_string_equal(img->table, "dos");
        assert_string_equal(img->disk_uuid, "0x1234abcd");
        assert_int_equal(img->n_partitions, 2);
        assert_null(img->warnings);
        assert_int_equal(img->partitions[0].start, 1 << 20);
        assert_int_equal(img->partitions[0].size, 2 << 20);
        assert_string_equal(img->partitions[0].type, "0x83");
        assert_string_equal(img->partitions[0].uuid, "1234abcd-01");
        assert_int_equal(img->partitions[0].attributes, 0x80);
        assert_null(img->partitions[0].name);
        assert_null(img->partitions[0].role);
        assert_null(img->partitions[0].fs.type);
        assert_string_equal(img->partitions[1].type, "0x82");
        assert_string_equal(img->partitions[1].fs.type, "swap");
        assert_string_equal(img->partitions[1].fs.label, "swp");
        assert_string_equal(img->partitions[1].fs.uuid, "22222222-3333-4444-8555-666666666666");
        assert_string_equal(img->partitions[1].fs.usage, "other");
}

static void test_refusals(void **state)
{
        struct probe_image *img = NULL;
        char missing[300];

        snprintf(missing, sizeof(missing), "%s/missing.raw", dir);
        assert_int_equal(probe_image(missing, &img), -ENOENT);
        assert_int_equal(probe_image(dir, &img), -EISDIR);
        assert_int_equal(probe_image(zero_img, &img), -EMEDIUMTYPE);
        assert_int_equal(probe_image(fs_img, &img), -EMEDIUMTYPE);
        assert_int_equal(probe_image(qcow_img, &img), -EMEDIUMTYPE);
        assert_null(img);
}

/* libparted asks "Fix/Ignore?" when the backup GPT is not at the end; the
 * probe answers Ignore, never writes, and keeps the message. */
static void test_grown_image_warns(void **state)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        struct stat before, after;

        assert_int_equal(stat(grown_img, &before), 0);
        assert_int_equal(probe_image(grown_img, &img), 0);
        assert_int_equal(stat(grown_img, &after), 0);
        assert_int_equal(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
        assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
        assert_int_equal(img->n_partitions, 1);
        assert_string_equal(img->partitions[0].role, "linux-generic");
        assert_non_null(img->warnings);
        assert_non_null(strstr(img->warnings[0], "libparted: "));
        assert_null(strchr(img->warnings[0], '\n'));
}

static void test_os_release(void **state)
{
        const char *text = "NAME=\"Debian GNU/Linux\"\n"
                           "# IMAGE_ID=commented\n"
                           "  ID=debian\n"
                           "VERSION_ID='12'\n"
                           "IMAGE_ID=golden\n"
                           "IMAGE_VERSION=\"1.2.3\" # trailing comment\n"
                           "PRETTY_NAME=\"say \\\"hi\\\"\"\n"
                           "IMAGE_IDX=no";
        char *v;

        assert_int_equal(probe_os_release_value(text, "ID", &v), 0);
        assert_string_equal(v, "debian");
        free(v);
        assert_int_equal(probe_os_release_value(text, "VERSION_ID", &v), 0);
        assert_string_equal(v, "12");
        free(v);
        assert_int_equal(probe_os_release_value(text, "IMAGE_ID", &v), 0);
        assert_string_equal(v, "golden");
        free(v);
        assert_int_equal(probe_os_release_value(text, "IMAGE_VERSION", &v), 0);
        assert_string_equal(v, "1.2.3");
        free(v);
        assert_int_equal(probe_os_release_value(text, "NAME", &v), 0);
        assert_string_equal(v, "Debian GNU/Linux");
        free(v);
        assert_int_equal(probe_os_release_value(text, "PRETTY_NAME", &v), 0);
        assert_string_equal(v, "say \"hi\"");
        free(v);
        assert_int_equal(probe_os_release_value(text, "VARIANT", &v), 0);
        assert_null(v);
        assert_int_equal(probe_os_release_value("", "ID", &v), 0);
        assert_null(v);
}

static void test_attribute_names(void **state)
{
        _cleanup_strv_free_ char **l = NULL;

        assert_int_equal(probe_gpt_attributes_to_strv(
                                 (UINT64_C(1) << 48) | PROBE_GPT_ATTR_HIDDEN | PROBE_GPT_ATTR_NO_BLOCK_IO, &l),
                         0);
        assert_int_equal(strv_length(l), 3);
        assert_string_equal(l[0], "no-block-io");
        assert_string_equal(l[1], "bit-48");
        assert_string_equal(l[2], "hidden");
        assert_string_equal(probe_os_status_to_string(PROBE_OS_NOT_FOUND), "not-found");
        assert_null(probe_os_status_to_string(_PROBE_OS_STATUS_MAX));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_gpt),
                cmocka_unit_test(test_gpt_json),
                cmocka_unit_test(test_mbr),
                cmocka_unit_test(test_refusals),
                cmocka_unit_test(test_grown_image_warns),
                cmocka_unit_test(test_os_release),
                cmocka_unit_test(test_attribute_names),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
