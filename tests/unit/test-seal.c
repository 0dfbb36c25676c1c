/* Unit tests for the seal: the block-list digest on synthetic files (holes
 * and written zeros alike, one flipped byte found in the right block and
 * region, short last blocks), the manifest written and read back, malformed
 * manifests refused, and Ed25519 keys and signatures. */
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

#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "sign.h"
#include "spec.h"

#define MiB (UINT64_C(1) << 20)

struct fixture {
        char dir[64];
        FILE *log;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        strcpy(f->dir, "/tmp/ingot-seal-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->log = tmpfile();
        assert_non_null(f->log);
        log_set_stream(f->log);
        unsetenv("SOURCE_DATE_EPOCH");
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        log_set_stream(NULL);
        fclose(f->log);
        assert_int_equal(rm_rf(f->dir), 0);
        free(f);
        return 0;
}

static char *path_in(struct fixture *f, const char *name)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
        return p;
}

/* A disk of 10 MiB + 17 KiB: the table before p1, a gap between p2 and
 * p3, and the tail with the backup GPT (a short last block). p2 is 1.5 MiB,
 * so it ends in a short block too. */
#define DISK_SIZE (10 * MiB + 17 * 1024)
static struct part_entry entries[] = {
        { .number = 1, .name = (char *)"esp", .start = 1 * MiB, .size = 2 * MiB },
        { .number = 3, .name = (char *)"root", .start = 6 * MiB, .size = 4 * MiB },
        { .number = 2, .name = (char *)"data", .start = 3 * MiB, .size = MiB + MiB / 2 },
};
static const struct part_layout layout = { .disk_size = DISK_SIZE, .entries = entries, .n_entries = 3 };

/* Writes len bytes of pattern byte b at offset o. */
static void put(int fd, uint64_t o, size_t len, uint8_t b)
{
        uint8_t *buf = malloc(len);

        memset(buf, b, len);
        assert_int_equal(pwrite(fd, buf, len, (off_t)o), (ssize_t)len);
        free(buf);
}

/* The same bytes twice: sparse (holes) and dense (every zero written). */
static void make_images(struct fixture *f, char **ret_sparse, char **ret_dense)
{
        char *sp = path_in(f, "sparse.raw"), *de = path_in(f, "dense.raw");
        int a = open(sp, O_RDWR | O_CREAT | O_TRUNC, 0644), b = open(de, O_RDWR | O_CREAT | O_TRUNC, 0644);
        static const struct {
                uint64_t off;
                size_t len;
                uint8_t b;
        } data[] = {
                { 0, 512, 0x11 },                  /* protective MBR */
                { 1 * MiB + 4096, 8192, 0x22 },    /* in p1 */
                { 3 * MiB + MiB + 100, 10, 0x33 }, /* p2's short last block */
                { 8 * MiB, MiB, 0x44 },            /* a whole block of p3 */
                { DISK_SIZE - 512, 512, 0x55 },    /* the backup header */
        };

        assert_true(a >= 0 && b >= 0);
        assert_int_equal(ftruncate(a, DISK_SIZE), 0);
        put(b, 0, DISK_SIZE, 0);
        /* a data extent that holds only zeros in the sparse file as well */
        put(a, 5 * MiB, MiB, 0);
        for (size_t i = 0; i < ELEMENTSOF(data); i++) {
                put(a, data[i].off, data[i].len, data[i].b);
                put(b, data[i].off, data[i].len, data[i].b);
        }
        close(a);
        close(b);
        *ret_sparse = sp;
        *ret_dense = de;
}

static struct seal_digest *digest_of(const char *path)
{
        struct seal_digest *d = NULL;

        assert_int_equal(seal_digest_from_layout(&layout, &d), 0);
        assert_int_equal(seal_digest_compute(d, path), 0);
        return d;
}

static void test_regions(void **state)
{
        _cleanup_(seal_digest_freep) struct seal_digest *d = NULL;

        assert_int_equal(seal_digest_from_layout(&layout, &d), 0);
        assert_int_equal(d->n_regions, 4);
        /* the table: [0,1M), the gap [4.5M,6M), the tail [10M, end) */
        assert_int_equal(d->regions[0].number, 0);
        assert_int_equal(d->regions[0].n_ranges, 3);
        assert_int_equal(d->regions[0].ranges[1].start, 3 * MiB + MiB + MiB / 2);
        assert_int_equal(d->regions[0].ranges[1].size, MiB + MiB / 2);
        assert_int_equal(d->regions[0].ranges[2].start, 10 * MiB);
        assert_int_equal(d->regions[0].ranges[2].size, 17 * 1024);
        assert_int_equal(d->regions[0].n_blocks, 1 + 2 + 1);
        /* partitions in disk order, whatever the layout's order */
        assert_int_equal(d->regions[1].number, 1);
        assert_int_equal(d->regions[2].number, 2);
        assert_int_equal(d->regions[2].n_blocks, 2);
        assert_int_equal(d->regions[3].number, 3);
        assert_string_equal(d->regions[3].name, "root");
        assert_int_equal(seal_digest_check_layout(d), 0);
}

static void test_holes_and_zeros(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *sp = NULL, *de = NULL;
        _cleanup_(seal_digest_freep) struct seal_digest *a = NULL, *b = NULL;
        size_t region;
        uint64_t s, e;
        uint8_t *zeros = calloc(1, MiB), zd[32], blk[32];

        make_images(f, &sp, &de);
        a = digest_of(sp);
        b = digest_of(de);
        assert_memory_equal(a->digest, b->digest, 32);
        for (size_t i = 0; i < a->n_regions; i++) {
                assert_int_equal(a->regions[i].n_blocks, b->regions[i].n_blocks);
                assert_memory_equal(a->regions[i].digest, b->regions[i].digest, 32);
                assert_memory_equal(a->regions[i].zero, b->regions[i].zero, a->regions[i].n_blocks);
        }
        assert_int_equal(seal_digest_first_difference(a, b, &region, &s, &e), 0);

        /* zero blocks: listed as zero, digest of their zero bytes */
        sha256_buffer(zeros, MiB, zd);
        assert_true(a->regions[3].zero[0]);
        assert_memory_equal(a->regions[3].blocks[0], zd, 32);
        assert_true(a->regions[0].zero[1]); /* the gap's first block: written zeros */
        /* the gap's second block is 0.5 MiB of zeros */
        sha256_buffer(zeros, MiB / 2, zd);
        assert_true(a->regions[0].zero[2]);
        assert_memory_equal(a->regions[0].blocks[2], zd, 32);
        /* data blocks are plain SHA-256 of their bytes */
        assert_false(a->regions[3].zero[2]);
        memset(zeros, 0x44, MiB);
        sha256_buffer(zeros, MiB, blk);
        assert_memory_equal(a->regions[3].blocks[2], blk, 32);
        /* the image digest is the hash of the region digests */
        {
                uint8_t cat[4 * 32], img[32];
                for (size_t i = 0; i < 4; i++)
                        memcpy(cat + 32 * i, a->regions[i].digest, 32);
                sha256_buffer(cat, sizeof(cat), img);
                assert_memory_equal(img, a->digest, 32);
        }
        free(zeros);
}

/* Flips one byte at off in a copy and checks what the comparison names. */
static void expect_flip(const char *orig, const char *copy, uint64_t off, unsigned number, uint64_t start, uint64_t end)
{
        _cleanup_(seal_digest_freep) struct seal_digest *a = digest_of(orig), *b = NULL;
        size_t region = 99;
        uint64_t s = 0, e = 0;
        uint8_t c;
        int fd;

        assert_int_equal(copy_file(orig, copy, 0644), 0);
        fd = open(copy, O_RDWR);
        assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
        c ^= 0x01;
        assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
        close(fd);
        b = digest_of(copy);

        assert_int_equal(seal_digest_first_difference(a, b, &region, &s, &e), 1);
        assert_int_equal(a->regions[region].number, number);
        assert_int_equal(s, start);
        assert_int_equal(e, end);
        for (size_t i = 0; i < a->n_regions; i++)
                if (i == region)
                        assert_memory_not_equal(a->regions[i].digest, b->regions[i].digest, 32);
                else
                        assert_memory_equal(a->regions[i].digest, b->regions[i].digest, 32);
        assert_memory_not_equal(a->digest, b->digest, 32);
}

static void test_flipped_byte(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *sp = NULL, *de = NULL, *cp = path_in(f, "copy.raw");

        make_images(f, &sp, &de);
        /* in data, in a hole, in short last blocks, in the table's ranges */
        expect_flip(sp, cp, 1 * MiB + 5000, 1, 1 * MiB, 2 * MiB - 1);
        expect_flip(sp, cp, 2 * MiB + 77, 1, 2 * MiB, 3 * MiB - 1);
        expect_flip(sp, cp, 3 * MiB + MiB + 105, 2, 4 * MiB, 4 * MiB + MiB / 2 - 1);
        expect_flip(sp, cp, 9 * MiB + 1, 3, 9 * MiB, 10 * MiB - 1);
        expect_flip(sp, cp, 1024, 0, 0, MiB - 1);
        expect_flip(sp, cp, 5 * MiB + 3, 0, 4 * MiB + MiB / 2, 5 * MiB + MiB / 2 - 1);
        expect_flip(sp, cp, DISK_SIZE - 1, 0, 10 * MiB, DISK_SIZE - 1);
        expect_flip(de, cp, 8 * MiB + 12345, 3, 8 * MiB, 9 * MiB - 1);
}

static void test_wrong_size(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *p = path_in(f, "short.raw");
        _cleanup_(seal_digest_freep) struct seal_digest *d = NULL;
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, DISK_SIZE - 1), 0);
        close(fd);
        assert_int_equal(seal_digest_from_layout(&layout, &d), 0);
        assert_int_equal(seal_digest_compute(d, p), -EBADMSG);
        assert_int_equal(seal_digest_compute(d, "/nonexistent/x.raw"), -ENOENT);
}

static const char test_template[] = "[Image]\n"
                                    "Name=sealtest\n"
                                    "SourceDateEpoch=1700000000\n"
                                    "[Rootfs]\n"
                                    "Source=mmdebstrap\n"
                                    "Suite=bookworm\n"
                                    "Packages=linux-image-amd64\n"
                                    "[Kernel]\n"
                                    "Package=linux-image-amd64\n"
                                    "[Boot]\n"
                                    "Mode=both\n"
                                    "[Disk]\n"
                                    "Size=96M\n"
                                    "EspSize=34M\n";

static struct spec *load_spec(struct fixture *f)
{
        _cleanup_free_ char *tp = path_in(f, "sealtest.conf");
        struct spec_options o = { .template = tp, .version = "1.2.3", .output_dir = f->dir };
        struct spec *s = NULL;

        assert_int_equal(write_file_atomic(tp, test_template, strlen(test_template), 0644), 0);
        assert_int_equal(spec_load(&o, &s), 0);
        return s;
}

/* An image file for s with a little data in each partition. */
static char *make_disk(struct fixture *f, const struct spec *s)
{
        char *p = path_in(f, "disk.raw");
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)s->layout->disk_size), 0);
        put(fd, 0, 4096, 0xee);
        for (size_t i = 0; i < s->layout->n_entries; i++)
                put(fd, s->layout->entries[i].start + 3 * MiB / 2, 1000, (uint8_t)(0x10 + i));
        close(fd);
        return p;
}

static void test_manifest_round_trip(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load_spec(f);
        _cleanup_free_ char *disk = make_disk(f, s), *mp = path_in(f, "m.json"), *mp2 = path_in(f, "m2.json");
        _cleanup_free_ char *text = NULL, *text2 = NULL, *error = NULL;
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        _cleanup_(seal_digest_freep) struct seal_digest *actual = NULL;
        struct seal_input in = { .spec = s, .format = OUTPUT_FORMAT_RAW, .rootfs_digest = "ab" };
        size_t size, size2, region;
        uint64_t a, b;
        json_t *j;

        assert_int_equal(seal_manifest_write(&in, disk, mp), 0);
        assert_int_equal(seal_manifest_write(&in, disk, mp2), 0);
        assert_int_equal(read_full_file(mp, SEAL_MANIFEST_MAX, &text, &size), 0);
        assert_int_equal(read_full_file(mp2, SEAL_MANIFEST_MAX, &text2, &size2), 0);
        /* deterministic bytes, one final newline */
        assert_int_equal(size, size2);
        assert_memory_equal(text, text2, size);
        assert_true(size > 2 && text[size - 1] == '\n' && text[size - 2] != '\n');

        j = json_loads(text, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "format")), "ingot-manifest-1");
        assert_string_equal(json_string_value(json_object_get(j, "name")), "sealtest");
        assert_string_equal(json_string_value(json_object_get(j, "version")), "1.2.3");
        assert_string_equal(json_string_value(json_object_get(j, "created")), "2023-11-14T22:13:20Z");
        assert_int_equal(json_integer_value(json_object_get(j, "source_date_epoch")), 1700000000);
        assert_int_equal(json_array_size(json_object_get(j, "boot_modes")), 2);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "image"), "file")),
                            "sealtest-1.2.3.raw");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "image"), "size")),
                         (json_int_t)s->layout->disk_size);
        assert_true(json_is_null(json_object_get(json_object_get(j, "inputs"), "kickstart")));
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(json_object_get(j, "inputs"), "template"), "file")),
                "sealtest.conf");
        assert_int_equal(json_array_size(json_object_get(j, "partitions")), s->layout->n_entries);
        assert_true(json_is_null(json_object_get(j, "verity")));
        json_decref(j);

        assert_int_equal(seal_manifest_parse(text, size, &m, &error), 0);
        assert_null(error);
        assert_string_equal(m->name, "sealtest");
        assert_string_equal(m->image_format, "raw");
        assert_false(m->has_verity);
        assert_int_equal(m->digest->n_regions, s->layout->n_entries + 1);
        assert_int_equal(m->digest->size, s->layout->disk_size);

        /* what verify does: recompute over the manifest's regions */
        assert_int_equal(seal_digest_new_like(m->digest, &actual), 0);
        assert_int_equal(seal_digest_compute(actual, disk), 0);
        assert_int_equal(seal_digest_first_difference(m->digest, actual, &region, &a, &b), 0);
        assert_memory_equal(m->digest->digest, actual->digest, 32);
}

static void test_manifest_verity(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load_spec(f);
        _cleanup_free_ char *disk = make_disk(f, s), *mp = path_in(f, "m.json"), *text = NULL, *error = NULL;
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        struct verity_result v = { .root_hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                                   .salt = "00ff",
                                   .uuid = "11111111-2222-4333-8444-555555555555",
                                   .data_blocks = 1000,
                                   .hash_size = 8192 };
        struct seal_input in = { .spec = s, .format = OUTPUT_FORMAT_RAW, .rootfs_digest = "ab", .verity = &v };
        unsigned root = 0, hash = 0;
        size_t size;
        json_t *j, *jv;

        /* stand in a root-verity partition: the ESP plays it here */
        for (size_t i = 0; i < s->layout->n_entries; i++)
                if (s->layout->entries[i].role == PART_ROLE_ROOT)
                        root = s->layout->entries[i].number;
                else if (s->layout->entries[i].role == PART_ROLE_ESP) {
                        s->layout->entries[i].role = PART_ROLE_ROOT_VERITY;
                        hash = s->layout->entries[i].number;
                }
        assert_true(root > 0 && hash > 0);

        assert_int_equal(seal_manifest_write(&in, disk, mp), 0);
        assert_int_equal(read_full_file(mp, SEAL_MANIFEST_MAX, &text, &size), 0);
        j = json_loads(text, 0, NULL);
        jv = json_object_get(j, "verity");
        assert_int_equal(json_integer_value(json_object_get(jv, "data_partition")), root);
        assert_int_equal(json_integer_value(json_object_get(jv, "hash_partition")), hash);
        assert_string_equal(json_string_value(json_object_get(jv, "root_hash")), v.root_hash);
        assert_string_equal(json_string_value(json_object_get(jv, "salt")), "00ff");
        assert_string_equal(json_string_value(json_object_get(jv, "uuid")), v.uuid);
        assert_string_equal(json_string_value(json_object_get(jv, "hash_algorithm")), "sha256");
        assert_int_equal(json_integer_value(json_object_get(jv, "data_block_size")), 4096);
        assert_int_equal(json_integer_value(json_object_get(jv, "hash_block_size")), 4096);
        assert_int_equal(json_integer_value(json_object_get(jv, "data_blocks")), 1000);
        json_decref(j);

        assert_int_equal(seal_manifest_parse(text, size, &m, &error), 0);
        assert_true(m->has_verity);
        assert_int_equal(m->verity_data_partition, root);
        assert_int_equal(m->verity_hash_partition, hash);
        assert_int_equal(m->verity_data_size, 1000 * 4096);
        assert_int_equal(m->verity_hash_size, 8192);
        assert_string_equal(m->verity_root_hash, v.root_hash);
}

/* Parses text expecting -EBADMSG with a reason, and nothing leaked. */
static void expect_bad(const char *text)
{
        struct seal_manifest *m = NULL;
        char *error = NULL;

        assert_int_equal(seal_manifest_parse(text, strlen(text), &m, &error), -EBADMSG);
        assert_null(m);
        assert_non_null(error);
        free(error);
}

/* The good manifest with one change made by edit, then expected bad. */
static void expect_bad_edit(const char *good, void (*edit)(json_t *j))
{
        json_t *j = json_loads(good, 0, NULL);
        char *t;

        assert_non_null(j);
        edit(j);
        t = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        expect_bad(t);
        free(t);
}

static json_t *part(json_t *j, size_t i)
{
        return json_array_get(json_object_get(j, "partitions"), i);
}

static void edit_format(json_t *j)
{
        json_object_set_new(j, "format", json_string("ingot-manifest-2"));
}
static void edit_block_size(json_t *j)
{
        json_object_set_new(json_object_get(j, "digest"), "block_size", json_integer(4096));
}
static void edit_drop_block(json_t *j)
{
        json_array_remove(json_object_get(part(j, 0), "blocks"), 0);
}
static void edit_block_hex(json_t *j)
{
        json_array_set_new(json_object_get(part(j, 0), "blocks"), 0, json_string("xyz"));
}
static void edit_block_value(json_t *j)
{
        /* well-formed, but the partition digest no longer matches */
        json_array_set_new(json_object_get(part(j, 1), "blocks"), 0,
                           json_string("0000000000000000000000000000000000000000000000000000000000000000"));
}
static void edit_image_digest(json_t *j)
{
        json_object_set_new(json_object_get(j, "image"), "digest",
                            json_string("1111111111111111111111111111111111111111111111111111111111111111"));
}
static void edit_overlap(json_t *j)
{
        json_object_set_new(part(j, 1), "start",
                            json_integer(json_integer_value(json_object_get(part(j, 1), "start")) - 4096));
}
static void edit_size(json_t *j)
{
        json_object_set_new(json_object_get(j, "image"), "size", json_string("big"));
}
static void edit_no_partitions(json_t *j)
{
        json_object_del(j, "partitions");
}
static void edit_partition_type(json_t *j)
{
        json_array_set_new(json_object_get(j, "partitions"), 0, json_string("p1"));
}
static void edit_ranges(json_t *j)
{
        json_object_set_new(json_object_get(j, "partition_table"), "ranges", json_object());
}
static void edit_verity(json_t *j)
{
        json_object_set_new(j, "verity",
                            json_pack("{s:i, s:i, s:s}", "data_partition", 9, "hash_partition", 1, "root_hash", "00"));
}

static void test_manifest_malformed(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = load_spec(f);
        _cleanup_free_ char *disk = make_disk(f, s), *mp = path_in(f, "m.json"), *text = NULL;
        struct seal_input in = { .spec = s, .format = OUTPUT_FORMAT_QCOW2, .rootfs_digest = "ab" };
        size_t size;

        assert_int_equal(seal_manifest_write(&in, disk, mp), 0);
        assert_int_equal(read_full_file(mp, SEAL_MANIFEST_MAX, &text, &size), 0);

        expect_bad("");
        expect_bad("{");
        expect_bad("[]");
        expect_bad("null");
        expect_bad("{\"format\": \"ingot-manifest-1\"}");
        expect_bad("{\"format\": \"ingot-manifest-1\", \"format\": \"ingot-manifest-1\"}");
        expect_bad_edit(text, edit_format);
        expect_bad_edit(text, edit_block_size);
        expect_bad_edit(text, edit_drop_block);
        expect_bad_edit(text, edit_block_hex);
        expect_bad_edit(text, edit_block_value);
        expect_bad_edit(text, edit_image_digest);
        expect_bad_edit(text, edit_overlap);
        expect_bad_edit(text, edit_size);
        expect_bad_edit(text, edit_no_partitions);
        expect_bad_edit(text, edit_partition_type);
        expect_bad_edit(text, edit_ranges);
        expect_bad_edit(text, edit_verity);
        /* truncated anywhere: an error, never a crash */
        for (size_t n = 0; n < size; n += size / 50 + 1) {
                struct seal_manifest *m = NULL;
                char *error = NULL;
                assert_int_equal(seal_manifest_parse(text, n, &m, &error), -EBADMSG);
                free(error);
        }
}

static void test_sign(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *prefix = path_in(f, "k1"), *prefix2 = path_in(f, "k2"), *key = NULL, *pub = NULL,
                            *pub2 = NULL, *sig = NULL, *garbage = path_in(f, "garbage.pem"), *before = NULL,
                            *after = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *priv = NULL, *pubk = NULL, *pubk2 = NULL, *x = NULL;
        char fp[SIGN_FINGERPRINT_MAX], fp2[SIGN_FINGERPRINT_MAX], fpp[SIGN_FINGERPRINT_MAX];
        static const char msg[] = "{\"format\": \"ingot-manifest-1\"}\n";
        struct stat st;
        size_t n;

        assert_true(asprintf(&key, "%s.key", prefix) > 0);
        assert_true(asprintf(&pub, "%s.pub", prefix) > 0);
        assert_true(asprintf(&pub2, "%s.pub", prefix2) > 0);
        assert_int_equal(sign_keygen(prefix, fp), 0);
        assert_int_equal(sign_keygen(prefix2, fp2), 0);
        assert_int_equal(strncmp(fp, "SHA256:", 7), 0);
        assert_int_equal(strlen(fp), 7 + 64);
        assert_string_not_equal(fp, fp2);
        assert_int_equal(stat(key, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        /* never overwritten */
        assert_int_equal(read_full_file(key, 4096, &before, &n), 0);
        assert_int_equal(sign_keygen(prefix, NULL), -EEXIST);
        assert_int_equal(read_full_file(key, 4096, &after, &n), 0);
        assert_string_equal(before, after);
        assert_non_null(strstr(before, "BEGIN PRIVATE KEY"));

        assert_int_equal(sign_load_private_key(key, &priv), 0);
        assert_int_equal(sign_load_public_key(pub, &pubk), 0);
        assert_int_equal(sign_load_public_key(pub2, &pubk2), 0);
        assert_int_equal(sign_fingerprint(pubk, fpp), 0);
        assert_string_equal(fp, fpp);

        assert_int_equal(sign_data(priv, msg, strlen(msg), &sig), 0);
        assert_int_equal(strlen(sig), 89);
        assert_int_equal(sig[88], '\n');
        assert_int_equal(sign_verify(pubk, msg, strlen(msg), sig, strlen(sig)), 0);
        /* tampered data, the wrong key, a mangled signature */
        assert_int_equal(sign_verify(pubk, msg, strlen(msg) - 1, sig, strlen(sig)), -EBADMSG);
        assert_int_equal(sign_verify(pubk2, msg, strlen(msg), sig, strlen(sig)), -EBADMSG);
        sig[10] = sig[10] == 'A' ? 'B' : 'A';
        assert_int_equal(sign_verify(pubk, msg, strlen(msg), sig, strlen(sig)), -EBADMSG);
        assert_int_equal(sign_verify(pubk, msg, strlen(msg), "", 0), -EBADMSG);
        assert_int_equal(sign_verify(pubk, msg, strlen(msg), "!!!!", 4), -EBADMSG);

        /* key files that are not what they should be */
        assert_int_equal(write_file_atomic(garbage, "hello\n", 6, 0644), 0);
        assert_int_equal(sign_load_private_key(garbage, &x), -EBADMSG);
        assert_int_equal(sign_load_public_key(garbage, &x), -EBADMSG);
        assert_int_equal(sign_load_private_key(pub, &x), -EBADMSG);
        assert_int_equal(sign_load_private_key("/nonexistent/k.key", &x), -ENOENT);
        assert_null(x);
        /* a private key file stands for its public key */
        assert_int_equal(sign_load_public_key(key, &x), 0);
        assert_int_equal(sign_fingerprint(x, fpp), 0);
        assert_string_equal(fp, fpp);
}

static void test_sign_file(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *prefix = path_in(f, "k"), *key = NULL, *pub = NULL, *m = path_in(f, "m.json"),
                            *sp = path_in(f, "m.json.sig"), *data = NULL, *sig = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *priv = NULL, *pubk = NULL;
        size_t n, sn;

        assert_true(asprintf(&key, "%s.key", prefix) > 0);
        assert_true(asprintf(&pub, "%s.pub", prefix) > 0);
        assert_int_equal(sign_keygen(prefix, NULL), 0);
        assert_int_equal(sign_load_private_key(key, &priv), 0);
        assert_int_equal(sign_load_public_key(pub, &pubk), 0);
        assert_int_equal(write_file_atomic(m, "{\"a\": 1}\n", 9, 0644), 0);
        assert_int_equal(sign_file(priv, m, sp), 0);
        assert_int_equal(read_full_file(m, 4096, &data, &n), 0);
        assert_int_equal(read_full_file(sp, 4096, &sig, &sn), 0);
        assert_int_equal(sign_verify(pubk, data, n, sig, sn), 0);
        /* the manifest edited after signing */
        data[6] = '2';
        assert_int_equal(sign_verify(pubk, data, n, sig, sn), -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_regions),
                cmocka_unit_test_setup_teardown(test_holes_and_zeros, setup, teardown),
                cmocka_unit_test_setup_teardown(test_flipped_byte, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrong_size, setup, teardown),
                cmocka_unit_test_setup_teardown(test_manifest_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_manifest_verity, setup, teardown),
                cmocka_unit_test_setup_teardown(test_manifest_malformed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sign, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sign_file, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
