/* Owns dm-verity for the sealed root: the hash partition's bytes (verity
 * superblock, format 1, then the hash tree) and the root hash, and their
 * check against an image.
 *
 * The superblock is written by libcryptsetup (crypt_format(CRYPT_VERITY)
 * without CRYPT_VERITY_CREATE_HASH), so its layout is the library's. The
 * tree is computed here because libcryptsetup's own tree creation hashes
 * every block of the data device, holes included, one fread and one hash
 * context per block: 7 s for the 1.7 GiB Debian root on the build hosts
 * (no SHA-NI, 360 MB/s), more than the whole --verity budget. Here holes
 * and zero blocks reuse one precomputed digest and the data blocks are
 * hashed on every core. The result is checked bit for bit against
 * "veritysetup format" in tests/unit/test-verity.c, and verity_check()
 * runs libcryptsetup's own verification ("veritysetup verify") on it.
 *
 * libcryptsetup knows no data offset, so verity_check() copies the root
 * partition's byte range into a sparse scratch file (holes stay holes) and
 * the hash range into another. Salt and superblock UUID derive from the
 * seed: the same data and seed give the same bytes and root hash. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libcryptsetup.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "shared/id128.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "verity.h"

#define DIGEST_SIZE 32
#define SALT_SIZE 32
#define HASHES_PER_BLOCK (VERITY_BLOCK_SIZE / DIGEST_SIZE)
#define MAX_LEVELS 16 /* 128^16 blocks: far beyond any disk */
#define MAX_THREADS 8
#define READ_CHUNK (1024 * 1024)
#define COPY_CHUNK (1024 * 1024)

/* Labels for the seed derivation; changing them changes every image. */
static const char salt_label[] = "verity-salt";
static const char uuid_label[] = "verity-uuid";

DEFINE_TRIVIAL_CLEANUP_FUNC(struct crypt_device *, crypt_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD *, EVP_MD_free);

static void unlink_freep(char **p)
{
        if (*p) {
                (void)unlink(*p);
                free(*p);
        }
}
#define _cleanup_unlink_free_ _cleanup_(unlink_freep)

static int log_oom(void)
{
        return log_error_errno(-ENOMEM, "out of memory");
}

/* The tree as libcryptsetup lays it out: level 0 holds the digests of the
 * data blocks, level i+1 those of level i's blocks; the top level (one
 * block) comes first after the superblock, level 0 last. */
struct tree_geometry {
        uint64_t data_blocks;
        unsigned levels;
        uint64_t level_blocks[MAX_LEVELS];
        uint64_t level_start[MAX_LEVELS]; /* in blocks from the tree's start */
        uint64_t tree_blocks;
};

static void tree_geometry(uint64_t data_blocks, struct tree_geometry *ret)
{
        struct tree_geometry g = { .data_blocks = data_blocks };
        uint64_t pos = 0;

        for (uint64_t n = data_blocks; n > 1 && g.levels < MAX_LEVELS;) {
                n = (n + HASHES_PER_BLOCK - 1) / HASHES_PER_BLOCK;
                g.level_blocks[g.levels++] = n;
                g.tree_blocks += n;
        }
        for (unsigned i = g.levels; i-- > 0;) {
                g.level_start[i] = pos;
                pos += g.level_blocks[i];
        }
        *ret = g;
}

uint64_t verity_hash_size(uint64_t data_size)
{
        struct tree_geometry g;

        tree_geometry((data_size + VERITY_BLOCK_SIZE - 1) / VERITY_BLOCK_SIZE, &g);
        return (1 + g.tree_blocks) * VERITY_BLOCK_SIZE;
}

static void derive_salt(const uint8_t seed[32], uint8_t ret[SALT_SIZE])
{
        unsigned len = 0;

        HMAC(EVP_sha256(), seed, 32, (const uint8_t *)salt_label, strlen(salt_label), ret, &len);
}

/* libcryptsetup's messages, at debug level; the first error is kept for
 * the one message we log. */
struct crypt_log {
        char first_error[256];
};

static void crypt_log_cb(int level, const char *msg, void *userdata)
{
        struct crypt_log *l = userdata;
        size_t n = strlen(msg);

        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '.'))
                n--;
        log_debug("libcryptsetup: %.*s", (int)n, msg);
        if (l && level == CRYPT_LOG_ERROR && !l->first_error[0])
                snprintf(l->first_error, sizeof(l->first_error), "%.*s", (int)n, msg);
}

static void crypt_debug_begin(void)
{
        if (log_get_level() >= LOG_LEVEL_VERBOSE)
                crypt_set_debug_level(CRYPT_DEBUG_ALL);
}

static void crypt_debug_end(void)
{
        crypt_set_debug_level(CRYPT_DEBUG_NONE);
}

static int hash_block(EVP_MD_CTX *ctx, const EVP_MD *md, const uint8_t *salt, const void *block,
                      uint8_t ret[DIGEST_SIZE])
{
        unsigned len = 0;

        /* Format 1: the salt comes first. */
        if (EVP_DigestInit_ex2(ctx, md, NULL) != 1 || EVP_DigestUpdate(ctx, salt, SALT_SIZE) != 1 ||
            EVP_DigestUpdate(ctx, block, VERITY_BLOCK_SIZE) != 1 || EVP_DigestFinal_ex(ctx, ret, &len) != 1 ||
            len != DIGEST_SIZE)
                return -EIO;
        return 0;
}

static bool is_zero(const uint8_t *p, size_t n)
{
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* One thread's share of level 0: data blocks [first, end). */
struct level0_job {
        const char *image;
        uint64_t data_offset;
        uint64_t first, end;
        const EVP_MD *md;
        const uint8_t *salt;
        const uint8_t *zero_digest;
        uint8_t *digests; /* digest of data block b at digests + b * DIGEST_SIZE */
        int r;
};

static void fill_zero_digests(struct level0_job *j, uint64_t from, uint64_t to)
{
        for (uint64_t b = from; b < to; b++)
                memcpy(j->digests + b * DIGEST_SIZE, j->zero_digest, DIGEST_SIZE);
}

static int level0_run(struct level0_job *j)
{
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int fd = -1;
        uint64_t b = j->first;

        fd = open(j->image, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ctx = EVP_MD_CTX_new();
        buf = malloc(READ_CHUNK);
        if (!ctx || !buf)
                return -ENOMEM;

        while (b < j->end) {
                off_t at = (off_t)(j->data_offset + b * VERITY_BLOCK_SIZE), data, hole;
                uint64_t data_block, hole_block;

                /* Holes read as zeros: skip them without reading. */
                data = lseek(fd, at, SEEK_DATA);
                if (data < 0 && errno == ENXIO) {
                        fill_zero_digests(j, b, j->end);
                        break;
                }
                if (data < 0)
                        data = at; /* no SEEK_DATA here: read everything */
                data_block = ((uint64_t)data - j->data_offset) / VERITY_BLOCK_SIZE;
                if (data_block > j->end)
                        data_block = j->end;
                fill_zero_digests(j, b, data_block);
                b = data_block;
                if (b >= j->end)
                        break;

                hole = lseek(fd, data, SEEK_HOLE);
                hole_block = hole < 0 ? j->end
                                      : ((uint64_t)hole - j->data_offset + VERITY_BLOCK_SIZE - 1) / VERITY_BLOCK_SIZE;
                if (hole_block > j->end || hole_block <= b)
                        hole_block = j->end;

                while (b < hole_block) {
                        uint64_t n = hole_block - b;
                        ssize_t got;

                        if (n > READ_CHUNK / VERITY_BLOCK_SIZE)
                                n = READ_CHUNK / VERITY_BLOCK_SIZE;
                        got = pread(fd, buf, n * VERITY_BLOCK_SIZE, (off_t)(j->data_offset + b * VERITY_BLOCK_SIZE));
                        if (got < 0)
                                return -errno;
                        if ((size_t)got != n * VERITY_BLOCK_SIZE)
                                return -EIO; /* the range was checked to be inside the file */
                        for (uint64_t i = 0; i < n; i++) {
                                const uint8_t *block = buf + i * VERITY_BLOCK_SIZE;
                                uint8_t *out = j->digests + (b + i) * DIGEST_SIZE;

                                if (is_zero(block, VERITY_BLOCK_SIZE))
                                        memcpy(out, j->zero_digest, DIGEST_SIZE);
                                else if (hash_block(ctx, j->md, j->salt, block, out) < 0)
                                        return -EIO;
                        }
                        b += n;
                }
        }
        return 0;
}

static void *level0_thread(void *userdata)
{
        struct level0_job *j = userdata;

        j->r = level0_run(j);
        return NULL;
}

static unsigned thread_count(uint64_t data_blocks)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        uint64_t n = cpus > 0 ? (uint64_t)cpus : 1;

        if (n > MAX_THREADS)
                n = MAX_THREADS;
        /* Below 64 MiB a thread costs more than it saves. */
        if (n > data_blocks / 16384 + 1)
                n = data_blocks / 16384 + 1;
        return (unsigned)n;
}

/* Computes the tree (g->tree_blocks blocks into tree, zero-padded) and the
 * root hash of [data_offset, +g->data_blocks blocks) of image. */
static int compute_tree(const char *image, uint64_t data_offset, const struct tree_geometry *g, const uint8_t *salt,
                        uint8_t *tree, uint8_t root[DIGEST_SIZE])
{
        _cleanup_(EVP_MD_freep) EVP_MD *md = NULL;
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        _cleanup_free_ uint8_t *single = NULL;
        struct level0_job jobs[MAX_THREADS];
        pthread_t threads[MAX_THREADS];
        unsigned n_threads = thread_count(g->data_blocks), started = 0;
        static const uint8_t zero_block[VERITY_BLOCK_SIZE];
        uint8_t zero_digest[DIGEST_SIZE], *level0;
        int r = 0;

        md = EVP_MD_fetch(NULL, "SHA256", NULL);
        ctx = EVP_MD_CTX_new();
        if (!md || !ctx)
                return -ENOMEM;
        if (hash_block(ctx, md, salt, zero_block, zero_digest) < 0)
                return -EIO;

        /* With one data block there is no tree: the root hash is that
         * block's digest. */
        if (g->levels == 0) {
                single = malloc(DIGEST_SIZE);
                if (!single)
                        return -ENOMEM;
                level0 = single;
        } else
                level0 = tree + g->level_start[0] * VERITY_BLOCK_SIZE;

        for (unsigned i = 0; i < n_threads; i++)
                jobs[i] = (struct level0_job){
                        .image = image,
                        .data_offset = data_offset,
                        .first = g->data_blocks * i / n_threads,
                        .end = g->data_blocks * (i + 1) / n_threads,
                        .md = md,
                        .salt = salt,
                        .zero_digest = zero_digest,
                        .digests = level0,
                };
        for (unsigned i = 1; i < n_threads; i++) {
                r = -pthread_create(&threads[i], NULL, level0_thread, &jobs[i]);
                if (r < 0)
                        break;
                started = i;
        }
        if (r == 0)
                level0_thread(&jobs[0]);
        for (unsigned i = 1; i <= started; i++)
                (void)pthread_join(threads[i], NULL);
        for (unsigned i = 0; r == 0 && i < n_threads; i++)
                r = jobs[i].r;
        if (r < 0)
                return r;

        if (g->levels == 0) {
                memcpy(root, level0, DIGEST_SIZE);
                return 0;
        }

        /* The upper levels are small (1/128 of the one below); runs of
         * identical blocks (the digests of empty space) are hashed once. */
        for (unsigned i = 1; i <= g->levels; i++) {
                const uint8_t *below = tree + g->level_start[i - 1] * VERITY_BLOCK_SIZE, *prev = NULL;
                uint8_t *out = i < g->levels ? tree + g->level_start[i] * VERITY_BLOCK_SIZE : root;
                uint8_t prev_digest[DIGEST_SIZE];

                for (uint64_t b = 0; b < g->level_blocks[i - 1]; b++) {
                        const uint8_t *block = below + b * VERITY_BLOCK_SIZE;

                        if (prev && memcmp(prev, block, VERITY_BLOCK_SIZE) == 0)
                                memcpy(out + b * DIGEST_SIZE, prev_digest, DIGEST_SIZE);
                        else {
                                if (hash_block(ctx, md, salt, block, out + b * DIGEST_SIZE) < 0)
                                        return -EIO;
                                memcpy(prev_digest, out + b * DIGEST_SIZE, DIGEST_SIZE);
                                prev = block;
                        }
                }
        }
        return 0;
}

static int scratch_file(const char *scratch_dir, const char *name, char **ret_path, int *ret_fd)
{
        _cleanup_free_ char *path = NULL;
        int fd;

        if (asprintf(&path, "%s/%s-XXXXXX", scratch_dir, name) < 0)
                return -ENOMEM;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        *ret_path = TAKE_PTR(path);
        *ret_fd = fd;
        return 0;
}

static int pwrite_all(int fd, const void *buf, size_t size, uint64_t offset)
{
        const uint8_t *p = buf;

        while (size > 0) {
                ssize_t n = pwrite(fd, p, size, (off_t)offset);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -EIO;
                p += n, size -= (size_t)n, offset += (uint64_t)n;
        }
        return 0;
}

static int pread_all(int fd, void *buf, size_t size, uint64_t offset)
{
        uint8_t *p = buf;

        while (size > 0) {
                ssize_t n = pread(fd, p, size, (off_t)offset);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -EIO;
                p += n, size -= (size_t)n, offset += (uint64_t)n;
        }
        return 0;
}

/* Zeros [offset, +size) of fd, as a hole where the filesystem can. */
static int zero_range(int fd, uint64_t offset, uint64_t size)
{
        static const uint8_t zeros[64 * 1024];

        if (size == 0)
                return 0;
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)size) == 0)
                return 0;
        while (size > 0) {
                size_t n = size < sizeof(zeros) ? (size_t)size : sizeof(zeros);
                int r = pwrite_all(fd, zeros, n, offset);

                if (r < 0)
                        return r;
                offset += n, size -= n;
        }
        return 0;
}

/* Copies [offset, +size) of in to the start of out (truncated to size);
 * holes stay holes, data moves inside the kernel. */
static int copy_range_sparse(int in, uint64_t offset, uint64_t size, int out)
{
        uint64_t end = offset + size, pos = offset;

        if (ftruncate(out, 0) < 0 || ftruncate(out, (off_t)size) < 0)
                return -errno;

        while (pos < end) {
                off_t data = lseek(in, (off_t)pos, SEEK_DATA), hole;

                if (data < 0 && errno == ENXIO)
                        break;
                if (data < 0)
                        data = (off_t)pos;
                if ((uint64_t)data >= end)
                        break;
                hole = lseek(in, data, SEEK_HOLE);
                if (hole < 0 || (uint64_t)hole > end)
                        hole = (off_t)end;

                for (off_t from = data, to = data - (off_t)offset; from < hole;) {
                        ssize_t n = copy_file_range(in, &from, out, &to, (size_t)(hole - from), 0);

                        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
                                /* Fall back to read and write for this extent. */
                                _cleanup_free_ uint8_t *buf = malloc(COPY_CHUNK);

                                if (!buf)
                                        return -ENOMEM;
                                while (from < hole) {
                                        size_t want = (size_t)(hole - from < COPY_CHUNK ? hole - from : COPY_CHUNK);
                                        int r = pread_all(in, buf, want, (uint64_t)from);

                                        if (r >= 0)
                                                r = pwrite_all(out, buf, want, (uint64_t)to);
                                        if (r < 0)
                                                return r;
                                        from += (off_t)want, to += (off_t)want;
                                }
                                break;
                        }
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                return -errno;
                        if (n == 0)
                                return -EIO;
                }
                pos = (uint64_t)hole;
        }
        return 0;
}

/* Writes the verity superblock for the parameters into block 0 of a
 * scratch file with libcryptsetup and reads it back into sb. */
static int make_superblock(const char *image, uint64_t data_blocks, const uint8_t *salt, const char *uuid,
                           const char *scratch_dir, uint8_t sb[VERITY_BLOCK_SIZE])
{
        _cleanup_unlink_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        struct crypt_log cl = {};
        struct crypt_params_verity p = {
                .hash_name = "sha256",
                .data_device = image, /* only named: data_size is given, nothing is read */
                .salt = (const char *)salt,
                .salt_size = SALT_SIZE,
                .hash_type = 1,
                .data_block_size = VERITY_BLOCK_SIZE,
                .hash_block_size = VERITY_BLOCK_SIZE,
                .data_size = data_blocks,
        };
        int r;

        r = scratch_file(scratch_dir, "verity-hash", &path, &fd);
        if (r < 0)
                return log_error_errno(r, "cannot create a scratch file in '%s': %m", scratch_dir);
        if (ftruncate(fd, VERITY_BLOCK_SIZE) < 0)
                return log_error_errno(-errno, "cannot size '%s': %m", path);

        crypt_set_log_callback(NULL, crypt_log_cb, &cl);
        crypt_debug_begin();
        r = crypt_init(&cd, path);
        if (r >= 0) {
                crypt_set_log_callback(cd, crypt_log_cb, &cl);
                r = crypt_format(cd, CRYPT_VERITY, NULL, NULL, uuid, NULL, 0, &p);
        }
        crypt_debug_end();
        crypt_set_log_callback(NULL, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "cannot write the verity superblock with libcryptsetup: %s",
                                       cl.first_error[0] ? cl.first_error : strerror(-r));

        r = pread_all(fd, sb, VERITY_BLOCK_SIZE, 0);
        if (r < 0)
                return log_error_errno(r, "cannot read the verity superblock from '%s': %m", path);
        return 0;
}

static int check_ranges(int fd, const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset,
                        uint64_t hash_size)
{
        struct stat st;

        if (data_size == 0 || data_size % VERITY_BLOCK_SIZE != 0)
                return log_error_errno(-EINVAL, "the verity data size %" PRIu64 " is not a multiple of %d bytes",
                                       data_size, VERITY_BLOCK_SIZE);
        if (data_offset + data_size < data_offset || hash_offset + hash_size < hash_offset ||
            (data_offset < hash_offset + hash_size && hash_offset < data_offset + data_size))
                return log_error_errno(-EINVAL,
                                       "the verity data range %" PRIu64 "+%" PRIu64 " and hash range %" PRIu64
                                       "+%" PRIu64 " overlap",
                                       data_offset, data_size, hash_offset, hash_size);
        if (fstat(fd, &st) < 0)
                return log_error_errno(-errno, "cannot stat '%s': %m", image);
        if ((uint64_t)st.st_size < data_offset + data_size || (uint64_t)st.st_size < hash_offset + hash_size)
                return log_error_errno(-EINVAL, "'%s' (%" PRIu64 " bytes) ends before its verity ranges", image,
                                       (uint64_t)st.st_size);
        return 0;
}

int verity_format(const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset, uint64_t hash_size,
                  const uint8_t seed[32], const char *scratch_dir, struct verity_result *ret)
{
        _cleanup_free_ uint8_t *tree = NULL;
        _cleanup_close_ int fd = -1;
        struct verity_result res = {};
        struct tree_geometry g;
        uint8_t salt[SALT_SIZE], root[DIGEST_SIZE], sb[VERITY_BLOCK_SIZE];
        uint64_t need, tree_size;
        id128_t uuid;
        int r;

        fd = open(image, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", image);
        r = check_ranges(fd, image, data_offset, data_size, hash_offset, hash_size);
        if (r < 0)
                return r;
        need = verity_hash_size(data_size);
        if (hash_size < need)
                return log_error_errno(-ENOSPC,
                                       "the verity hash partition is too small: %" PRIu64 " bytes of data need %" PRIu64
                                       " bytes of hashes, it has %" PRIu64,
                                       data_size, need, hash_size);

        derive_salt(seed, salt);
        id128_derive(seed, uuid_label, strlen(uuid_label), &uuid);
        hex_encode(salt, SALT_SIZE, res.salt);
        id128_to_string(&uuid, res.uuid);

        tree_geometry(data_size / VERITY_BLOCK_SIZE, &g);
        tree_size = g.tree_blocks * VERITY_BLOCK_SIZE;
        tree = calloc(1, tree_size ? (size_t)tree_size : 1);
        if (!tree)
                return log_oom();

        r = make_superblock(image, g.data_blocks, salt, res.uuid, scratch_dir, sb);
        if (r < 0)
                return r;
        r = compute_tree(image, data_offset, &g, salt, tree, root);
        if (r < 0)
                return log_error_errno(r, "cannot hash the verity data of '%s' at %" PRIu64 ": %m", image, data_offset);

        r = pwrite_all(fd, sb, sizeof(sb), hash_offset);
        if (r >= 0)
                r = pwrite_all(fd, tree, (size_t)tree_size, hash_offset + VERITY_BLOCK_SIZE);
        if (r >= 0)
                r = zero_range(fd, hash_offset + need, hash_size - need);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0)
                return log_error_errno(r, "cannot write the verity hash tree into '%s': %m", image);

        hex_encode(root, DIGEST_SIZE, res.root_hash);
        res.data_blocks = g.data_blocks;
        res.hash_size = need;
        log_debug("verity: %" PRIu64 " data blocks, %u levels, %" PRIu64 " bytes of hashes, root hash %s",
                  g.data_blocks, g.levels, need, res.root_hash);
        *ret = res;
        return 0;
}

static int parse_root_hash(const char *s, uint8_t ret[DIGEST_SIZE])
{
        if (!s || strlen(s) != 2 * DIGEST_SIZE)
                return -EINVAL;
        for (size_t i = 0; i < DIGEST_SIZE; i++) {
                unsigned v;

                if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", s[2 * i]) ||
                    !strchr("0123456789abcdefABCDEF", s[2 * i + 1]))
                        return -EINVAL;
                ret[i] = (uint8_t)v;
        }
        return 0;
}

/* Bytes of the hash range past the tree must be zero, as verity_format
 * leaves them: verity itself never reads them. Returns the first offset
 * that is not, or UINT64_MAX. */
static int first_nonzero(int fd, uint64_t offset, uint64_t size, uint64_t *ret)
{
        _cleanup_free_ uint8_t *buf = malloc(COPY_CHUNK);
        uint64_t end = offset + size, pos = offset;

        if (!buf)
                return -ENOMEM;
        *ret = UINT64_MAX;
        while (pos < end) {
                off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
                size_t n;
                int r;

                if (data < 0 && errno == ENXIO)
                        break;
                if (data >= 0)
                        pos = (uint64_t)data;
                if (pos >= end)
                        break;
                n = end - pos < COPY_CHUNK ? (size_t)(end - pos) : COPY_CHUNK;
                r = pread_all(fd, buf, n, pos);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        if (buf[i]) {
                                *ret = pos + i;
                                return 0;
                        }
                pos += n;
        }
        return 0;
}

int verity_check(const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset, uint64_t hash_size,
                 const char *root_hash, const char *scratch_dir)
{
        _cleanup_unlink_free_ char *data_path = NULL, *hash_path = NULL;
        _cleanup_close_ int fd = -1, data_fd = -1, hash_fd = -1;
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        /* As "veritysetup verify": CHECK_HASH goes in with the load, and
         * activating without a name only runs the check. */
        struct crypt_params_verity load = { .flags = CRYPT_VERITY_CHECK_HASH }, info = {};
        struct crypt_log cl = {};
        uint8_t root[DIGEST_SIZE];
        uint64_t need, bad;
        int r;

        if (parse_root_hash(root_hash, root) < 0)
                return log_error_errno(-EINVAL, "invalid verity root hash '%s': expected 64 hex digits",
                                       strna(root_hash));
        fd = open(image, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", image);
        r = check_ranges(fd, image, data_offset, data_size, hash_offset, hash_size);
        if (r < 0)
                return r;
        need = verity_hash_size(data_size);
        if (hash_size < need)
                return log_error_errno(-EBADMSG,
                                       "the verity hash partition at %" PRIu64 " is too small for the data (%" PRIu64
                                       " bytes, %" PRIu64 " needed)",
                                       hash_offset, hash_size, need);

        r = first_nonzero(fd, hash_offset + need, hash_size - need, &bad);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", image);
        if (bad != UINT64_MAX)
                return log_error_errno(
                        -EBADMSG, "the verity hash partition has data after the hash tree at offset %" PRIu64, bad);

        r = scratch_file(scratch_dir, "verity-data", &data_path, &data_fd);
        if (r >= 0)
                r = scratch_file(scratch_dir, "verity-hash", &hash_path, &hash_fd);
        if (r < 0)
                return log_error_errno(r, "cannot create a scratch file in '%s': %m", scratch_dir);
        r = copy_range_sparse(fd, data_offset, data_size, data_fd);
        if (r >= 0)
                r = copy_range_sparse(fd, hash_offset, need, hash_fd);
        if (r < 0)
                return log_error_errno(r, "cannot copy the verity ranges of '%s' to '%s': %m", image, scratch_dir);

        crypt_set_log_callback(NULL, crypt_log_cb, &cl);
        crypt_debug_begin();
        r = crypt_init_data_device(&cd, hash_path, data_path);
        if (r >= 0) {
                crypt_set_log_callback(cd, crypt_log_cb, &cl);
                r = crypt_load(cd, CRYPT_VERITY, &load);
                if (r < 0) {
                        /* A damaged superblock is a mismatch, not a failure to check. */
                        crypt_debug_end();
                        crypt_set_log_callback(NULL, NULL, NULL);
                        return log_error_errno(-EBADMSG, "no valid verity superblock at offset %" PRIu64 ": %s",
                                               hash_offset, cl.first_error[0] ? cl.first_error : strerror(-r));
                }
                r = crypt_get_verity_info(cd, &info);
        }
        if (r >= 0 && (info.data_size != data_size / VERITY_BLOCK_SIZE || info.data_block_size != VERITY_BLOCK_SIZE ||
                       info.hash_block_size != VERITY_BLOCK_SIZE)) {
                crypt_debug_end();
                crypt_set_log_callback(NULL, NULL, NULL);
                return log_error_errno(-EBADMSG,
                                       "the verity superblock at offset %" PRIu64 " describes %" PRIu64
                                       " data blocks of %" PRIu32 " bytes, the root partition has %" PRIu64,
                                       hash_offset, info.data_size, info.data_block_size,
                                       data_size / VERITY_BLOCK_SIZE);
        }
        if (r >= 0)
                r = crypt_activate_by_volume_key(cd, NULL, (const char *)root, DIGEST_SIZE, 0);
        crypt_debug_end();
        crypt_set_log_callback(NULL, NULL, NULL);
        /* libcryptsetup 2.6: -EPERM when a block's digest differs from the
         * tree, -EFAULT when the tree's top differs from the root hash. */
        if (r == -EPERM || r == -EFAULT)
                return log_error_errno(-EBADMSG,
                                       "the root partition at %" PRIu64 " or its hash tree at %" PRIu64
                                       " does not match the verity root hash: libcryptsetup: %s",
                                       data_offset, hash_offset,
                                       cl.first_error[0] ? cl.first_error : "verification failed");
        if (r < 0)
                return log_error_errno(r, "cannot check the verity hash tree with libcryptsetup: %s",
                                       cl.first_error[0] ? cl.first_error : strerror(-r));
        return 0;
}
