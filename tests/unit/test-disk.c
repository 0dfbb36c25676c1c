/* Tests for the disk stage against the real tools: a spec loaded from a
 * template and kickstart in a temporary directory, a root tar with files
 * owned by 0 and 33, an ESP staging directory; then the image is read back
 * with sfdisk, blkid, debugfs, e2fsck and mtools, built twice to compare
 * bytes, and made to fail (content too big, existing file, erofs). Needs
 * no root: run it as any user. */
#include "config.h"

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
#include <jansson.h>

#include "disk.h"
#include "gpt.h"
#include "shared/log.h"
#include "shared/run.h"
#include "spec.h"

#define EPOCH 1700000000

struct fixture {
        char dir[64];
        FILE *log;
        char *root_tar;
        char *esp_dir;
};

static const char template_fmt[] = "[Image]\n"
                                   "Name=disktest\n"
                                   "SourceDateEpoch=1700000000\n"
                                   "[Rootfs]\n"
                                   "Source=directory\n"
                                   "Path=%s/root\n"
                                   "[Boot]\n"
                                   "Mode=both\n"
                                   "[Disk]\n"
                                   "Size=%s\n"
                                   "EspSize=33M\n"
                                   "RootFilesystem=%s\n";

static char *path_in(struct fixture *f, const char *name)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
        return p;
}

static void write_file(const char *path, const void *data, size_t size, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, size), (ssize_t)size);
        assert_int_equal(close(fd), 0);
}

static void make_dirs(struct fixture *f, const char *const *rel)
{
        for (size_t i = 0; rel[i]; i++) {
                _cleanup_free_ char *p = path_in(f, rel[i]);
                assert_int_equal(mkdir(p, 0755), 0);
        }
}

/* Runs argv, expects exit 0 and returns stdout (the caller frees it). */
static char *cmd(const char *const *argv)
{
        char *out = NULL, *err = NULL;
        int r = run_argv(argv, NULL, &out, &err);

        if (r != 0)
                fail_msg("%s exited with %d: %s", argv[0], r, err ? err : "");
        free(err);
        return out;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        static const char *const dirs[] = { "root",         "root/etc",   "root/srv", "root/srv/www", "esp", "esp/EFI",
                                            "esp/EFI/BOOT", "esp/loader", NULL };
        _cleanup_free_ char *p = NULL;

        assert_non_null(f);
        strcpy(f->dir, "/tmp/ingot-disk-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->log = tmpfile();
        assert_non_null(f->log);
        log_set_stream(f->log);
        unsetenv("SOURCE_DATE_EPOCH");

        make_dirs(f, dirs);
        p = path_in(f, "root/etc/hostname");
        write_file(p, "disktest\n", 9, 0644);
        p = x_free(p);
        p = path_in(f, "root/etc/shadow");
        write_file(p, "root:*:19000:0:99999:7:::\n", 26, 0640);
        p = x_free(p);
        p = path_in(f, "root/srv/www/index.html");
        write_file(p, "<p>hello</p>\n", 13, 0644);
        p = x_free(p);
        p = path_in(f, "esp/EFI/BOOT/BOOTX64.EFI");
        write_file(p, "MZ not really an EFI binary\n", 28, 0644);
        p = x_free(p);
        p = path_in(f, "esp/loader/loader.conf");
        write_file(p, "timeout 0\n", 10, 0644);
        p = x_free(p);

        /* etc owned by root, srv by www-data (33), as a rootfs tar would be */
        f->root_tar = path_in(f, "root.tar");
        {
                _cleanup_free_ char *root = path_in(f, "root");
                const char *create[] = { "tar",
                                         "--create",
                                         "--file",
                                         f->root_tar,
                                         "--directory",
                                         root,
                                         "--sort=name",
                                         "--format=gnu",
                                         "--mtime=@1700000000",
                                         "--numeric-owner",
                                         "--owner=0",
                                         "--group=0",
                                         "etc",
                                         NULL };
                const char *append[] = { "tar",
                                         "--append",
                                         "--file",
                                         f->root_tar,
                                         "--directory",
                                         root,
                                         "--sort=name",
                                         "--format=gnu",
                                         "--mtime=@1700000000",
                                         "--numeric-owner",
                                         "--owner=33",
                                         "--group=33",
                                         "srv",
                                         NULL };
                free(cmd(create));
                free(cmd(append));
        }
        f->esp_dir = path_in(f, "esp");
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char c[128];

        log_set_stream(NULL);
        fclose(f->log);
        /* the directory holds only files this test wrote */
        snprintf(c, sizeof(c), "rm -rf '%s'", f->dir);
        assert_int_equal(system(c), 0);
        free(f->root_tar);
        free(f->esp_dir);
        free(f);
        return 0;
}

static char *logged(struct fixture *f)
{
        static char buf[4096];
        size_t n;

        fflush(f->log);
        rewind(f->log);
        n = fread(buf, 1, sizeof(buf) - 1, f->log);
        buf[n] = '\0';
        rewind(f->log);
        assert_int_equal(ftruncate(fileno(f->log), 0), 0);
        return buf;
}

static struct spec *load(struct fixture *f, const char *size, const char *root_fs, const char *ks)
{
        _cleanup_free_ char *tp = path_in(f, "t.conf"), *kp = ks ? path_in(f, "k.ks") : NULL, *text = NULL;
        struct spec_options o = { .template = tp, .kickstart = kp, .version = "1.0" };
        struct spec *s = NULL;

        assert_true(asprintf(&text, template_fmt, f->dir, size, root_fs) > 0);
        write_file(tp, text, strlen(text), 0644);
        if (ks)
                write_file(kp, ks, strlen(ks), 0644);
        if (spec_load(&o, &s) < 0)
                fail_msg("spec_load failed: %s", logged(f));
        return s;
}

/* The default layout plus a swap partition: biosboot, ESP, root, swap. */
static const char ks_swap[] = "part / --size=32 --grow --fstype=ext4\n"
                              "part swap --size=8 --fstype=swap\n";

static const struct part_entry *entry(const struct spec *s, enum part_role role)
{
        for (size_t i = 0; i < s->layout->n_entries; i++)
                if (s->layout->entries[i].role == role)
                        return &s->layout->entries[i];
        fail_msg("no partition with role %s", part_role_to_string(role));
        return NULL;
}

static void assert_id_equal(const char *s, const id128_t *want)
{
        id128_t got;
        char a[ID128_STRING_MAX];

        assert_non_null(s);
        assert_int_equal(id128_from_string(s, &got), 0);
        if (!id128_equal(&got, want))
                fail_msg("got %s, want %s", s, id128_to_string(want, a));
}

static void check_gpt(const struct spec *s, const char *img)
{
        const char *argv[] = { "sfdisk", "--json", img, NULL };
        _cleanup_free_ char *out = cmd(argv);
        json_error_t error;
        json_t *j = json_loads(out, 0, &error), *pt, *parts;

        assert_non_null(j);
        pt = json_object_get(j, "partitiontable");
        assert_string_equal(json_string_value(json_object_get(pt, "label")), "gpt");
        assert_id_equal(json_string_value(json_object_get(pt, "id")), &s->layout->disk_uuid);
        parts = json_object_get(pt, "partitions");
        assert_int_equal(json_array_size(parts), s->layout->n_entries);
        for (size_t i = 0; i < s->layout->n_entries; i++) {
                const struct part_entry *e = &s->layout->entries[i];
                json_t *p = json_array_get(parts, i);
                const char *attrs = json_string_value(json_object_get(p, "attrs"));
                _cleanup_free_ char *node = NULL;

                assert_true(asprintf(&node, "%s%u", img, e->number) > 0);
                assert_string_equal(json_string_value(json_object_get(p, "node")), node);
                assert_int_equal(json_integer_value(json_object_get(p, "start")), e->start / 512);
                assert_int_equal(json_integer_value(json_object_get(p, "size")), e->size / 512);
                assert_id_equal(json_string_value(json_object_get(p, "type")), &e->type);
                assert_id_equal(json_string_value(json_object_get(p, "uuid")), &e->uuid);
                assert_string_equal(json_string_value(json_object_get(p, "name")), e->name);
                if (e->role == PART_ROLE_ESP)
                        assert_string_equal(attrs, "LegacyBIOSBootable");
                else if (e->role == PART_ROLE_ROOT)
                        assert_string_equal(attrs, "GUID:60"); /* read-only, the seal */
                else
                        assert_null(attrs);
        }
        json_decref(j);
}

/* The protective MBR: one 0xEE entry from LBA 1 over the whole disk. */
static void check_pmbr(const struct spec *s, const char *img)
{
        uint8_t mbr[512], want[16] = { 0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00 };
        uint32_t size = (uint32_t)(s->layout->disk_size / 512 - 1);
        int fd = open(img, O_RDONLY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(pread(fd, mbr, sizeof(mbr), 0), (ssize_t)sizeof(mbr));
        close(fd);
        for (size_t i = 0; i < 4; i++)
                want[12 + i] = (uint8_t)(size >> (8 * i));
        assert_memory_equal(mbr + 446, want, 16);
        for (size_t i = 446 + 16; i < 510; i++)
                assert_int_equal(mbr[i], 0);
        assert_int_equal(mbr[510], 0x55);
        assert_int_equal(mbr[511], 0xaa);
}

/* blkid -p -O: the filesystem at the partition's offset. */
static void check_blkid(const char *img, const struct part_entry *e, const char *type, const char *uuid,
                        const char *label)
{
        char offset[32], want[128];
        const char *argv[] = { "blkid", "-p", "-o", "export", "-O", offset, img, NULL };
        _cleanup_free_ char *out = NULL;

        snprintf(offset, sizeof(offset), "%llu", (unsigned long long)e->start);
        out = cmd(argv);
        snprintf(want, sizeof(want), "\nTYPE=%s\n", type);
        assert_non_null(strstr(out, want));
        snprintf(want, sizeof(want), "\nUUID=%s\n", uuid);
        if (!strstr(out, want))
                fail_msg("blkid: no %s in %s", want, out);
        if (label) {
                snprintf(want, sizeof(want), "\nLABEL=%s\n", label);
                assert_non_null(strstr(out, want));
        }
}

static char *ext4_device(const char *img, const struct part_entry *e)
{
        char *d;

        assert_true(asprintf(&d, "%s?offset=%llu", img, (unsigned long long)e->start) > 0);
        return d;
}

static char *debugfs(const char *device, const char *request)
{
        const char *argv[] = { "debugfs", "-R", request, device, NULL };
        return cmd(argv);
}

static void check_root(const char *img, const struct part_entry *e)
{
        _cleanup_free_ char *dev = ext4_device(img, e), *out = NULL;
        char uuid[ID128_STRING_MAX];
        const char *fsck[] = { "e2fsck", "-f", "-n", dev, NULL };

        check_blkid(img, e, "ext4", id128_to_string(&e->fs_uuid, uuid), e->label);
        free(cmd(fsck));

        out = debugfs(dev, "stat /srv/www/index.html");
        assert_non_null(strstr(out, "User:    33   Group:    33"));
        assert_non_null(strstr(out, "mtime: 0x6553f100"));
        assert_non_null(strstr(out, "atime: 0x6553f100"));
        assert_non_null(strstr(out, "ctime: 0x6553f100"));
        out = x_free(out);
        out = debugfs(dev, "stat /etc/shadow");
        assert_non_null(strstr(out, "User:     0   Group:     0"));
        assert_non_null(strstr(out, "Mode:  0640"));
        out = x_free(out);
        out = debugfs(dev, "stat /srv");
        assert_non_null(strstr(out, "User:    33   Group:    33"));
        out = x_free(out);
        out = debugfs(dev, "cat /srv/www/index.html");
        assert_string_equal(out, "<p>hello</p>\n");
        out = x_free(out);
        out = debugfs(dev, "cat /etc/hostname");
        assert_string_equal(out, "disktest\n");
}

static void check_esp(const char *img, const struct part_entry *e)
{
        char volid[16], fat[512];
        const char *mtype[] = { "mtype", "-i", fat, "::/loader/loader.conf", NULL };
        const char *mdir[] = { "mdir", "-b", "-i", fat, "::/EFI/BOOT", NULL };
        _cleanup_free_ char *out = NULL;

        snprintf(volid, sizeof(volid), "%02X%02X-%02X%02X", e->fs_uuid.bytes[0], e->fs_uuid.bytes[1],
                 e->fs_uuid.bytes[2], e->fs_uuid.bytes[3]);
        check_blkid(img, e, "vfat", volid, "ESP");

        setenv("MTOOLS_SKIP_CHECK", "1", 1);
        snprintf(fat, sizeof(fat), "%s@@%llu", img, (unsigned long long)e->start);
        out = cmd(mtype);
        assert_string_equal(out, "timeout 0\n");
        out = x_free(out);
        out = cmd(mdir);
        assert_non_null(strstr(out, "::/EFI/BOOT/BOOTX64.EFI"));
}

static void check_swap(const char *img, const struct part_entry *e)
{
        char uuid[ID128_STRING_MAX];

        check_blkid(img, e, "swap", id128_to_string(&e->fs_uuid, uuid), NULL);
}

/* A partition without a filesystem stays zeros. */
static void check_zero(const char *img, const struct part_entry *e)
{
        int fd = open(img, O_RDONLY | O_CLOEXEC);
        uint8_t *buf = malloc(e->size);

        assert_true(fd >= 0);
        assert_non_null(buf);
        assert_int_equal(pread(fd, buf, e->size, (off_t)e->start), (ssize_t)e->size);
        for (size_t i = 0; i < e->size; i++)
                if (buf[i])
                        fail_msg("byte %zu of partition %u is not zero", i, e->number);
        free(buf);
        close(fd);
}

static void test_build(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "100M", "ext4", ks_swap);
        _cleanup_free_ char *img = path_in(f, "image.raw");
        struct disk_inputs in = { .root_tar = f->root_tar, .esp_dir = f->esp_dir };
        struct stat st;

        assert_int_equal(s->layout->n_entries, 4);
        assert_int_equal(disk_build(s, &in, img), 0);
        assert_string_equal(logged(f), "");

        assert_int_equal(stat(img, &st), 0);
        assert_int_equal(st.st_size, s->layout->disk_size);
        /* sparse: far less allocated than the disk's size */
        assert_true((uint64_t)st.st_blocks * 512 < s->layout->disk_size / 2);

        check_gpt(s, img);
        check_pmbr(s, img);
        check_zero(img, entry(s, PART_ROLE_BIOS_BOOT));
        check_esp(img, entry(s, PART_ROLE_ESP));
        check_root(img, entry(s, PART_ROLE_ROOT));
        check_swap(img, entry(s, PART_ROLE_SWAP));
}

/* Compares two files, naming the first differing offset. */
static void assert_same_bytes(const char *a, const char *b, uint64_t offset, uint64_t size)
{
        int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);
        static uint8_t ba[1 << 20], bb[1 << 20];

        assert_true(fa >= 0 && fb >= 0);
        for (uint64_t pos = offset; pos < offset + size;) {
                size_t want = offset + size - pos < sizeof(ba) ? (size_t)(offset + size - pos) : sizeof(ba);
                ssize_t na = pread(fa, ba, want, (off_t)pos), nb = pread(fb, bb, want, (off_t)pos);

                assert_int_equal(na, (ssize_t)want);
                assert_int_equal(nb, (ssize_t)want);
                if (memcmp(ba, bb, want) != 0)
                        for (size_t i = 0; i < want; i++)
                                if (ba[i] != bb[i])
                                        fail_msg("'%s' and '%s' differ at byte %llu", a, b,
                                                 (unsigned long long)(pos + i));
                pos += want;
        }
        close(fa);
        close(fb);
}

static void test_reproducible(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "100M", "ext4", ks_swap);
        _cleanup_free_ char *a = path_in(f, "a.raw"), *sub = path_in(f, "other"), *b = path_in(f, "other/b.raw");
        struct disk_inputs in = { .root_tar = f->root_tar, .esp_dir = f->esp_dir };
        uint64_t size = s->layout->disk_size;

        assert_int_equal(mkdir(sub, 0755), 0);
        assert_int_equal(disk_build(s, &in, a), 0);
        /* a later second, so unpacked files get other ctimes and atimes */
        sleep(1);
        assert_int_equal(disk_build(s, &in, b), 0);
        assert_string_equal(logged(f), "");

        /* the GPT areas first, for a clearer failure, then everything */
        assert_same_bytes(a, b, 0, PART_ALIGN);
        assert_same_bytes(a, b, size - PART_GPT_BACKUP_SIZE, PART_GPT_BACKUP_SIZE);
        assert_same_bytes(a, b, 0, size);
}

/* A filler that does not compress into holes. */
static void write_noise(const char *path, size_t size)
{
        uint8_t *buf = malloc(size);
        uint64_t x = 88172645463325252ULL;

        assert_non_null(buf);
        for (size_t i = 0; i < size; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t)x;
        }
        write_file(path, buf, size, 0644);
        free(buf);
}

static void test_too_small(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "100M", "ext4", "part / --size=16 --fstype=ext4\n");
        _cleanup_free_ char *img = path_in(f, "small.raw"), *blob = path_in(f, "root/srv/blob"),
                            *root = path_in(f, "root"), *tar = path_in(f, "big.tar");
        const char *create[] = { "tar", "--create", "--file", tar, "--directory", root, "--numeric-owner", ".", NULL };
        struct disk_inputs in = { .root_tar = tar, .esp_dir = f->esp_dir };
        const char *msg;

        write_noise(blob, 20 << 20);
        free(cmd(create));
        assert_int_equal(disk_build(s, &in, img), -ENOSPC);
        msg = logged(f);
        if (!strstr(msg, "the root filesystem content does not fit its 16M partition 3 'disktest_1.0': "))
                fail_msg("unexpected message: %s", msg);
        assert_int_equal(access(img, F_OK), -1);
        assert_int_equal(errno, ENOENT);
}

static void test_exists(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "100M", "ext4", NULL);
        _cleanup_free_ char *img = path_in(f, "exists.raw");
        struct disk_inputs in = { .root_tar = f->root_tar };
        struct stat st;

        write_file(img, "keep", 4, 0644);
        assert_int_equal(disk_build(s, &in, img), -EEXIST);
        assert_non_null(strstr(logged(f), "cannot create the image"));
        assert_int_equal(stat(img, &st), 0);
        assert_int_equal(st.st_size, 4);
}

static void test_erofs_refused(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load(f, "100M", "erofs", NULL);
        _cleanup_free_ char *img = path_in(f, "erofs.raw");
        struct disk_inputs in = { .root_tar = f->root_tar };

        assert_int_equal(disk_build(s, &in, img), -EOPNOTSUPP);
        assert_non_null(strstr(logged(f), "erofs filesystems are not supported yet"));
        assert_int_equal(access(img, F_OK), -1);
}

static void test_guid_encoding(void **state)
{
        id128_t id;
        uint8_t disk[16];
        /* the ESP type as it lies on disk (UEFI spec, mixed-endian) */
        static const uint8_t want[16] = { 0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
                                          0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b };

        assert_int_equal(id128_from_string("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", &id), 0);
        gpt_guid_to_disk(&id, disk);
        assert_memory_equal(disk, want, 16);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_guid_encoding),
                cmocka_unit_test_setup_teardown(test_build, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reproducible, setup, teardown),
                cmocka_unit_test_setup_teardown(test_too_small, setup, teardown),
                cmocka_unit_test_setup_teardown(test_exists, setup, teardown),
                cmocka_unit_test_setup_teardown(test_erofs_refused, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
