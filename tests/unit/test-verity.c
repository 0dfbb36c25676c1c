/* Tests for the verity stage against the real tools: a synthetic image
 * with a data range (data, zero blocks and holes) and a hash range; the
 * hash device and root hash verity_format writes are compared byte for
 * byte with what "veritysetup format" makes of a plain copy of the data
 * with the same salt and UUID, and verity_check (libcryptsetup's verify)
 * must accept them and reject one flipped byte anywhere. Needs no root. */
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

#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/run.h"
#include "verity.h"

#define MiB (UINT64_C(1) << 20)
#define DATA_OFFSET MiB
/* 2307 blocks: two tree levels, the last level-0 hash block part-filled. */
#define DATA_SIZE (2307 * UINT64_C(4096))
#define HASH_OFFSET (DATA_OFFSET + DATA_SIZE + 3 * 4096)
#define HASH_SIZE MiB
#define IMAGE_SIZE (HASH_OFFSET + HASH_SIZE + MiB)

struct fixture {
        char dir[64];
        FILE *log;
};

static const uint8_t seed[32] = { 1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };

static char *path_in(struct fixture *f, const char *name)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
        return p;
}

static void pwrite_exact(int fd, const void *buf, size_t size, uint64_t offset)
{
        assert_int_equal(pwrite(fd, buf, size, (off_t)offset), (ssize_t)size);
}

static void pread_exact(int fd, void *buf, size_t size, uint64_t offset)
{
        assert_int_equal(pread(fd, buf, size, (off_t)offset), (ssize_t)size);
}

/* A deterministic pattern that no block repeats. */
static void pattern(uint8_t *buf, size_t size, uint32_t x)
{
        for (size_t i = 0; i < size; i++) {
                x = x * 1103515245u + 12345u;
                buf[i] = (uint8_t)(x >> 16);
        }
}

/* The image: the data range holds data at its start, a hole, a data run
 * with an all-zero block inside, a hole, data in its last block; the
 * hash range starts out full of junk (verity_format must zero it); the
 * bytes around both ranges are junk too (they must not matter). */
static char *make_image(struct fixture *f, const char *name, uint64_t data_size)
{
        char *path = path_in(f, name);
        _cleanup_free_ uint8_t *buf = malloc(HASH_SIZE > 256 * 1024 ? HASH_SIZE : 256 * 1024);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        uint64_t hash_offset = DATA_OFFSET + data_size + 3 * 4096;

        assert_true(fd >= 0);
        assert_non_null(buf);
        assert_int_equal(ftruncate(fd, (off_t)(hash_offset + HASH_SIZE + MiB)), 0);

        if (data_size >= 4 * MiB) {
                pattern(buf, 256 * 1024, 1);
                pwrite_exact(fd, buf, 256 * 1024, DATA_OFFSET);
                pattern(buf, 256 * 1024, 2);
                memset(buf + 8192, 0, 4096);
                pwrite_exact(fd, buf, 256 * 1024, DATA_OFFSET + 2 * MiB + 4096);
        }
        pattern(buf, 4096, 3);
        pwrite_exact(fd, buf, 4096, DATA_OFFSET + data_size - 4096);

        pattern(buf, 4096, 7);
        pwrite_exact(fd, buf, 4096, DATA_OFFSET - 4096);      /* before the data */
        pwrite_exact(fd, buf, 4096, DATA_OFFSET + data_size); /* between */
        pwrite_exact(fd, buf, 4096, hash_offset + HASH_SIZE); /* after the hash range */
        pattern(buf, HASH_SIZE, 8);
        pwrite_exact(fd, buf, HASH_SIZE, hash_offset);
        assert_int_equal(close(fd), 0);
        return path;
}

/* Copies [offset, +size) of path into a new plain file. */
static char *extract(struct fixture *f, const char *path, uint64_t offset, uint64_t size, const char *name)
{
        char *out = path_in(f, name);
        _cleanup_free_ uint8_t *buf = malloc(MiB);
        int in = open(path, O_RDONLY | O_CLOEXEC), o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(in >= 0 && o >= 0);
        assert_non_null(buf);
        for (uint64_t pos = 0; pos < size;) {
                size_t n = size - pos < MiB ? (size_t)(size - pos) : MiB;

                pread_exact(in, buf, n, offset + pos);
                pwrite_exact(o, buf, n, pos);
                pos += n;
        }
        close(in);
        assert_int_equal(close(o), 0);
        return out;
}

static void flip(const char *path, uint64_t offset)
{
        int fd = open(path, O_RDWR | O_CLOEXEC);
        uint8_t b;

        assert_true(fd >= 0);
        pread_exact(fd, &b, 1, offset);
        b ^= 0x40;
        pwrite_exact(fd, &b, 1, offset);
        assert_int_equal(close(fd), 0);
}

static bool have_veritysetup(void)
{
        static const char *const argv[] = { "veritysetup", "--version", NULL };

        return run_argv(argv, NULL, NULL, NULL) == 0;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/ingot-verity-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->log = tmpfile();
        assert_non_null(f->log);
        log_set_stream(f->log);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        log_set_stream(stderr);
        fclose(f->log);
        assert_int_equal(rm_rf(f->dir), 0);
        free(f);
        return 0;
}

/* What the fixture's log says since the last call. */
static char *log_text(struct fixture *f)
{
        long size = ftell(f->log);
        char *s = calloc(1, (size_t)size + 1);

        assert_non_null(s);
        rewind(f->log);
        assert_int_equal(fread(s, 1, (size_t)size, f->log), (size_t)size);
        rewind(f->log);
        assert_int_equal(ftruncate(fileno(f->log), 0), 0);
        return s;
}

static void test_hash_size(void **state)
{
        (void)state;
        /* The sizes "veritysetup format" reports (Hash device size). */
        assert_int_equal(verity_hash_size(64 * MiB), 532480);
        assert_int_equal(verity_hash_size(1700 * MiB), 14045184);
        assert_int_equal(verity_hash_size(4096), 4096);                     /* one block: no tree */
        assert_int_equal(verity_hash_size(128 * 4096), 2 * 4096);           /* one level, one block */
        assert_int_equal(verity_hash_size(129 * 4096), 4 * 4096);           /* 2 + 1 tree blocks */
        assert_int_equal(verity_hash_size(DATA_SIZE), (1 + 19 + 1) * 4096); /* the 2307-block image */
        assert_int_equal(verity_hash_size(16385 * 4096), (1 + 129 + 2 + 1) * 4096);
}

/* verity_format on image, then the same with veritysetup on a plain copy:
 * same root hash, same hash device bytes, the rest of the range zero. */
static void format_and_compare(struct fixture *f, const char *image, uint64_t data_size, struct verity_result *ret)
{
        uint64_t hash_offset = DATA_OFFSET + data_size + 3 * 4096, need = verity_hash_size(data_size);
        _cleanup_free_ char *data = NULL, *hash = NULL, *out = NULL, *want = NULL, *got = NULL, *rest = NULL;
        _cleanup_free_ char *root = NULL;
        char expect_line[128];
        struct verity_result res;
        int fd;

        assert_int_equal(verity_format(image, DATA_OFFSET, data_size, hash_offset, HASH_SIZE, seed, f->dir, &res), 0);
        assert_int_equal(strlen(res.root_hash), 64);
        assert_int_equal(res.data_blocks, data_size / 4096);
        assert_int_equal(res.hash_size, need);

        /* The rest of the hash range is zero, the bytes after it untouched. */
        rest = malloc(HASH_SIZE - need + 1);
        assert_non_null(rest);
        fd = open(image, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        pread_exact(fd, rest, HASH_SIZE - need + 1, hash_offset + need);
        for (uint64_t i = 0; i < HASH_SIZE - need; i++)
                assert_int_equal(rest[i], 0);
        assert_int_not_equal(rest[HASH_SIZE - need], 0);
        close(fd);

        if (!have_veritysetup()) {
                print_message("veritysetup not installed (cryptsetup-bin): not compared with the real tool\n");
                *ret = res;
                return;
        }
        data = extract(f, image, DATA_OFFSET, data_size, "plain-data");
        hash = path_in(f, "cli-hash");
        (void)unlink(hash);
        {
                const char *const argv[] = { "veritysetup",
                                             "format",
                                             data,
                                             hash,
                                             "--hash=sha256",
                                             "--format=1",
                                             "--data-block-size=4096",
                                             "--hash-block-size=4096",
                                             "--salt",
                                             res.salt,
                                             "--uuid",
                                             res.uuid,
                                             NULL };
                _cleanup_free_ char *err = NULL;
                int r = run_argv(argv, NULL, &out, &err);

                if (r != 0)
                        fail_msg("veritysetup format exited %d: %s", r, strna(err));
        }
        snprintf(expect_line, sizeof(expect_line), "Root hash:      \t%s\n", res.root_hash);
        if (!strstr(out, expect_line))
                fail_msg("veritysetup printed another root hash than %s:\n%s", res.root_hash, out);

        want = extract(f, hash, 0, need, "cli-hash-copy");
        got = extract(f, image, hash_offset, need, "our-hash");
        {
                _cleanup_free_ char *a = NULL, *b = NULL;
                size_t na = 0, nb = 0;
                struct stat st;

                assert_int_equal(stat(hash, &st), 0);
                assert_int_equal((uint64_t)st.st_size, need);
                assert_int_equal(read_full_file(want, 64 * MiB, &a, &na), 0);
                assert_int_equal(read_full_file(got, 64 * MiB, &b, &nb), 0);
                assert_int_equal(na, nb);
                for (size_t i = 0; i < na; i++)
                        if (a[i] != b[i])
                                fail_msg("hash device differs from veritysetup's at byte %zu", i);
        }
        unlink(data), unlink(hash), unlink(want), unlink(got);
        *ret = res;
}

static void test_format_matches_veritysetup(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *image = make_image(f, "image", DATA_SIZE);
        struct verity_result res;

        format_and_compare(f, image, DATA_SIZE, &res);
        assert_int_equal(res.hash_size, 21 * 4096);
}

/* Three tree levels (more than 128 * 128 blocks), mostly holes. */
static void test_format_three_levels(void **state)
{
        struct fixture *f = *state;
        uint64_t size = 16385 * UINT64_C(4096) + 40 * MiB;
        _cleanup_free_ char *image = make_image(f, "image3", size);
        struct verity_result res;

        format_and_compare(f, image, size, &res);
}

static void test_one_block(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *image = make_image(f, "image1", 4096);
        struct verity_result res;

        format_and_compare(f, image, 4096, &res);
        assert_int_equal(
                verity_check(image, DATA_OFFSET, 4096, DATA_OFFSET + 4 * 4096, HASH_SIZE, res.root_hash, f->dir), 0);
}

static void test_reproducible(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *a = make_image(f, "a", DATA_SIZE), *b = make_image(f, "b", DATA_SIZE);
        _cleanup_free_ char *da = NULL, *db = NULL, *sub = path_in(f, "scratch2");
        struct verity_result ra, rb, rc;
        uint8_t other[32];
        size_t na, nb;

        assert_int_equal(mkdir(sub, 0755), 0);
        assert_int_equal(verity_format(a, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, seed, f->dir, &ra), 0);
        assert_int_equal(verity_format(b, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, seed, sub, &rb), 0);
        assert_string_equal(ra.root_hash, rb.root_hash);
        assert_string_equal(ra.salt, rb.salt);
        assert_string_equal(ra.uuid, rb.uuid);
        assert_int_equal(read_full_file(a, 64 * MiB, &da, &na), 0);
        assert_int_equal(read_full_file(b, 64 * MiB, &db, &nb), 0);
        assert_int_equal(na, nb);
        assert_memory_equal(da, db, na);

        /* The scratch directories are left empty. */
        {
                const char *const argv[] = { "find", sub, "-mindepth", "1", NULL };
                _cleanup_free_ char *out = NULL;

                assert_int_equal(run_argv(argv, NULL, &out, NULL), 0);
                assert_string_equal(out, "");
        }

        /* Another seed: another salt, UUID and root hash. */
        memcpy(other, seed, sizeof(other));
        other[0] ^= 1;
        assert_int_equal(verity_format(b, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, other, sub, &rc), 0);
        assert_string_not_equal(ra.root_hash, rc.root_hash);
        assert_string_not_equal(ra.salt, rc.salt);
        assert_string_not_equal(ra.uuid, rc.uuid);
}

static void expect_bad(struct fixture *f, const char *image, const char *root_hash, const char *what)
{
        _cleanup_free_ char *text = NULL;

        int r;

        free(log_text(f));
        r = verity_check(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, root_hash, f->dir);
        text = log_text(f);
        if (getenv("TEST_VERITY_SHOW"))
                print_message("%s", text);
        if (r != -EBADMSG)
                fail_msg("verity_check returned %d for a flipped %s, expected -EBADMSG: %s", r, what, text);
        if (!strstr(text, what))
                fail_msg("expected '%s' in the message, got: %s", what, text);
        /* One message line. */
        assert_non_null(strchr(text, '\n'));
        assert_null(strchr(strchr(text, '\n') + 1, '\n'));
}

static void test_check(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *image = make_image(f, "image", DATA_SIZE);
        struct verity_result res;
        char wrong[65];

        assert_int_equal(verity_format(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, seed, f->dir, &res), 0);
        assert_int_equal(verity_check(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, res.root_hash, f->dir), 0);

        /* A data byte (in a data run, then in a hole), restored after each. */
        flip(image, DATA_OFFSET + 5000);
        expect_bad(f, image, res.root_hash, "does not match the verity root hash");
        flip(image, DATA_OFFSET + 5000);
        flip(image, DATA_OFFSET + MiB + 17);
        expect_bad(f, image, res.root_hash, "position 1048576");
        flip(image, DATA_OFFSET + MiB + 17);
        assert_int_equal(verity_check(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, res.root_hash, f->dir), 0);

        /* A byte of the tree: level 0, then the top level. */
        flip(image, HASH_OFFSET + 2 * 4096 + 100);
        expect_bad(f, image, res.root_hash, "does not match the verity root hash");
        flip(image, HASH_OFFSET + 2 * 4096 + 100);
        flip(image, HASH_OFFSET + 4096 + 3);
        expect_bad(f, image, res.root_hash, "does not match the verity root hash");
        flip(image, HASH_OFFSET + 4096 + 3);

        /* The superblock's salt, then its magic. */
        flip(image, HASH_OFFSET + 100);
        expect_bad(f, image, res.root_hash, "does not match the verity root hash");
        flip(image, HASH_OFFSET + 100);
        flip(image, HASH_OFFSET);
        expect_bad(f, image, res.root_hash, "no valid verity superblock");
        flip(image, HASH_OFFSET);

        /* Junk after the tree, inside the hash range. */
        flip(image, HASH_OFFSET + HASH_SIZE - 1);
        expect_bad(f, image, res.root_hash, "after the hash tree");
        flip(image, HASH_OFFSET + HASH_SIZE - 1);

        /* Another root hash. */
        memcpy(wrong, res.root_hash, sizeof(wrong));
        wrong[10] = wrong[10] == '0' ? '1' : '0';
        expect_bad(f, image, wrong, "does not match the verity root hash");

        assert_int_equal(verity_check(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, res.root_hash, f->dir), 0);
        assert_int_equal(verity_check(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, "abc", f->dir), -EINVAL);
}

static void test_errors(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *image = make_image(f, "image", DATA_SIZE), *missing = path_in(f, "missing");
        _cleanup_free_ char *text = NULL;
        struct verity_result res;

        free(log_text(f));
        assert_int_equal(verity_format(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, 4 * 4096, seed, f->dir, &res),
                         -ENOSPC);
        text = log_text(f);
        assert_non_null(strstr(text, "too small"));
        assert_int_equal(verity_format(image, DATA_OFFSET, DATA_SIZE - 1, HASH_OFFSET, HASH_SIZE, seed, f->dir, &res),
                         -EINVAL);
        assert_int_equal(
                verity_format(image, DATA_OFFSET, DATA_SIZE, DATA_OFFSET + 4096, HASH_SIZE, seed, f->dir, &res),
                -EINVAL);
        assert_int_equal(verity_format(image, DATA_OFFSET, DATA_SIZE, IMAGE_SIZE, HASH_SIZE, seed, f->dir, &res),
                         -EINVAL);
        assert_int_equal(verity_format(missing, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, seed, f->dir, &res),
                         -ENOENT);
        assert_int_equal(verity_format(image, DATA_OFFSET, DATA_SIZE, HASH_OFFSET, HASH_SIZE, seed, missing, &res),
                         -ENOENT);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hash_size),
                cmocka_unit_test_setup_teardown(test_format_matches_veritysetup, setup, teardown),
                cmocka_unit_test_setup_teardown(test_format_three_levels, setup, teardown),
                cmocka_unit_test_setup_teardown(test_one_block, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reproducible, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
