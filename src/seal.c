/* Owns the image digests (the "sha256-block-list" defined in seal.h) and
 * the manifest: writing it during the build, reading it back for verify.
 * Hashing is the one costly step of the seal, so it reads only the data
 * extents of the file, each byte once, with one worker per core. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"

/* SHA-256 of SEAL_BLOCK_SIZE zero bytes (test-seal checks it). */
static const uint8_t zero_block_digest[32] = {
        0x30, 0xe1, 0x49, 0x55, 0xeb, 0xf1, 0x35, 0x22, 0x66, 0xdc, 0x2f, 0xf8, 0x06, 0x7e, 0x68, 0x10,
        0x46, 0x07, 0xe7, 0x50, 0xab, 0xb9, 0xd3, 0xb3, 0x65, 0x82, 0xb8, 0xaf, 0x90, 0x9f, 0xcb, 0x58,
};

#define MAX_WORKERS 8

static uint64_t div_round_up(uint64_t a, uint64_t b)
{
        return a / b + (a % b != 0);
}

static void zero_digest(uint64_t len, uint8_t ret[32])
{
        if (len == SEAL_BLOCK_SIZE) {
                memcpy(ret, zero_block_digest, 32);
                return;
        }
        /* a short last block: at most one per range, so computing is fine */
        static const uint8_t zeros[4096];
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();

        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        for (uint64_t left = len; left > 0;) {
                size_t n = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
                EVP_DigestUpdate(ctx, zeros, n);
                left -= n;
        }
        EVP_DigestFinal_ex(ctx, ret, NULL);
        EVP_MD_CTX_free(ctx);
}

static void region_free_contents(struct seal_region *r)
{
        free(r->name);
        free(r->ranges);
        free(r->blocks);
        free(r->zero);
}

struct seal_digest *seal_digest_free(struct seal_digest *d)
{
        if (!d)
                return NULL;
        for (size_t i = 0; i < d->n_regions; i++)
                region_free_contents(&d->regions[i]);
        free(d->regions);
        free(d);
        return NULL;
}

/* Numbers the blocks of r's ranges and allocates their digests. */
static int region_alloc_blocks(struct seal_region *r)
{
        size_t n = 0;

        for (size_t i = 0; i < r->n_ranges; i++) {
                r->ranges[i].first_block = n;
                n += (size_t)div_round_up(r->ranges[i].size, SEAL_BLOCK_SIZE);
        }
        r->n_blocks = n;
        r->blocks = calloc(n ? n : 1, sizeof(*r->blocks));
        r->zero = calloc(n ? n : 1, sizeof(*r->zero));
        return r->blocks && r->zero ? 0 : -ENOMEM;
}

static int range_append(struct seal_region *r, uint64_t start, uint64_t size)
{
        struct seal_range *a;

        if (size == 0)
                return 0;
        a = reallocarray(r->ranges, r->n_ranges + 1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        r->ranges = a;
        r->ranges[r->n_ranges++] = (struct seal_range){ .start = start, .size = size };
        return 0;
}

static int cmp_entry_start(const void *a, const void *b)
{
        const struct part_entry *x = *(const struct part_entry *const *)a, *y = *(const struct part_entry *const *)b;

        return x->start < y->start ? -1 : x->start > y->start;
}

int seal_digest_from_layout(const struct part_layout *l, struct seal_digest **ret)
{
        _cleanup_(seal_digest_freep) struct seal_digest *d = NULL;
        _cleanup_free_ const struct part_entry **sorted = NULL;
        uint64_t pos = 0;
        int r;

        d = calloc(1, sizeof(*d));
        sorted = calloc(l->n_entries ? l->n_entries : 1, sizeof(*sorted));
        if (!d || !sorted)
                return -ENOMEM;
        d->regions = calloc(l->n_entries + 1, sizeof(*d->regions));
        if (!d->regions)
                return -ENOMEM;
        d->n_regions = l->n_entries + 1;
        d->size = l->disk_size;

        for (size_t i = 0; i < l->n_entries; i++)
                sorted[i] = &l->entries[i];
        qsort(sorted, l->n_entries, sizeof(*sorted), cmp_entry_start);

        for (size_t i = 0; i < l->n_entries; i++) {
                const struct part_entry *e = sorted[i];
                struct seal_region *p = &d->regions[i + 1];

                if (e->start < pos || e->size == 0 || e->start + e->size > l->disk_size)
                        return -EINVAL;
                r = range_append(&d->regions[0], pos, e->start - pos);
                if (r < 0)
                        return r;
                p->number = e->number;
                p->name = strdup(e->name ? e->name : "");
                if (!p->name)
                        return -ENOMEM;
                r = range_append(p, e->start, e->size);
                if (r < 0)
                        return r;
                pos = e->start + e->size;
        }
        r = range_append(&d->regions[0], pos, l->disk_size - pos);
        if (r < 0)
                return r;
        for (size_t i = 0; i < d->n_regions; i++) {
                r = region_alloc_blocks(&d->regions[i]);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

int seal_digest_new_like(const struct seal_digest *d, struct seal_digest **ret)
{
        _cleanup_(seal_digest_freep) struct seal_digest *n = calloc(1, sizeof(*n));
        int r;

        if (!n)
                return -ENOMEM;
        n->regions = calloc(d->n_regions ? d->n_regions : 1, sizeof(*n->regions));
        if (!n->regions)
                return -ENOMEM;
        n->n_regions = d->n_regions;
        n->size = d->size;
        for (size_t i = 0; i < d->n_regions; i++) {
                struct seal_region *g = &n->regions[i];

                g->number = d->regions[i].number;
                if (d->regions[i].name && !(g->name = strdup(d->regions[i].name)))
                        return -ENOMEM;
                for (size_t k = 0; k < d->regions[i].n_ranges; k++) {
                        r = range_append(g, d->regions[i].ranges[k].start, d->regions[i].ranges[k].size);
                        if (r < 0)
                                return r;
                }
                r = region_alloc_blocks(g);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(n);
        return 0;
}

struct range_ref {
        uint64_t start, size;
};

static int cmp_range_ref(const void *a, const void *b)
{
        const struct range_ref *x = a, *y = b;

        return x->start < y->start ? -1 : x->start > y->start;
}

int seal_digest_check_layout(const struct seal_digest *d)
{
        _cleanup_free_ struct range_ref *all = NULL;
        size_t n = 0, k = 0;
        uint64_t pos = 0;

        if (d->n_regions == 0 || d->regions[0].number != 0)
                return -EBADMSG;
        for (size_t i = 0; i < d->n_regions; i++) {
                if (d->regions[i].n_ranges == 0 || (i > 0 && d->regions[i].number == 0))
                        return -EBADMSG;
                if (i > 0 &&
                    (d->regions[i].n_ranges != 1 || d->regions[i].ranges[0].start < d->regions[i - 1].ranges[0].start))
                        return -EBADMSG;
                n += d->regions[i].n_ranges;
        }
        all = calloc(n, sizeof(*all));
        if (!all)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_regions; i++)
                for (size_t j = 0; j < d->regions[i].n_ranges; j++) {
                        const struct seal_range *g = &d->regions[i].ranges[j];

                        if (g->size == 0 || (j > 0 && g->start <= d->regions[i].ranges[j - 1].start))
                                return -EBADMSG;
                        all[k++] = (struct range_ref){ g->start, g->size };
                }
        qsort(all, n, sizeof(*all), cmp_range_ref);
        for (size_t i = 0; i < n; i++) {
                if (all[i].start != pos || all[i].size > d->size - pos)
                        return -EBADMSG;
                pos += all[i].size;
        }
        return pos == d->size ? 0 : -EBADMSG;
}

/* One block to hash: where it is and where its result goes. */
struct block_job {
        uint64_t offset;
        uint32_t len;
        bool hole; /* wholly inside a hole of the file: zero, never read */
        uint8_t *digest;
        bool *zero;
};

struct hash_pool {
        int fd;
        struct block_job *jobs;
        size_t n_jobs;
        atomic_size_t next;
        atomic_int error;
};

static int cmp_job(const void *a, const void *b)
{
        const struct block_job *x = a, *y = b;

        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static bool all_zero(const uint8_t *p, size_t n)
{
        /* the first byte is zero and every byte equals the one before it */
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int hash_one(int fd, struct block_job *j, uint8_t *buf)
{
        size_t done = 0;

        if (j->hole) {
                *j->zero = true;
                return 0;
        }
        while (done < j->len) {
                ssize_t n = pread(fd, buf + done, j->len - done, (off_t)(j->offset + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO; /* the file shrank under us */
                done += (size_t)n;
        }
        if (all_zero(buf, j->len))
                *j->zero = true;
        else
                SHA256(buf, j->len, j->digest);
        return 0;
}

static void *hash_worker(void *userdata)
{
        struct hash_pool *p = userdata;
        uint8_t *buf = malloc(SEAL_BLOCK_SIZE);

        if (!buf) {
                atomic_store(&p->error, -ENOMEM);
                return NULL;
        }
        for (;;) {
                size_t i = atomic_fetch_add(&p->next, 1);
                int r;

                if (i >= p->n_jobs || atomic_load(&p->error) != 0)
                        break;
                r = hash_one(p->fd, &p->jobs[i], buf);
                if (r < 0) {
                        atomic_store(&p->error, r);
                        break;
                }
        }
        free(buf);
        return NULL;
}

/* Marks the jobs (sorted by offset) that lie wholly inside holes. A file
 * system without SEEK_DATA makes every block data, which is only slower. */
static void mark_holes(int fd, struct block_job *jobs, size_t n)
{
        uint64_t data = 0, hole = 0;
        bool valid = false;

        for (size_t i = 0; i < n; i++) {
                uint64_t o = jobs[i].offset;

                if (!valid || o >= hole) {
                        off_t d = lseek(fd, (off_t)o, SEEK_DATA);

                        if (d < 0) {
                                if (errno != ENXIO)
                                        return; /* no hole information: read everything */
                                data = hole = UINT64_MAX;
                        } else {
                                off_t h = lseek(fd, d, SEEK_HOLE);
                                data = (uint64_t)d;
                                hole = h < 0 ? UINT64_MAX : (uint64_t)h;
                        }
                        valid = true;
                }
                jobs[i].hole = data >= o + jobs[i].len;
        }
}

static unsigned n_workers(size_t n_data_jobs)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        if (n < 1)
                n = 1;
        if (n > MAX_WORKERS)
                n = MAX_WORKERS;
        if ((size_t)n > n_data_jobs)
                n = n_data_jobs ? (long)n_data_jobs : 1;
        return (unsigned)n;
}

static void region_finish(struct seal_region *r)
{
        for (size_t b = 0; b < r->n_blocks; b++)
                if (r->zero[b]) {
                        /* the block's length: full unless last in its range */
                        uint64_t len = SEAL_BLOCK_SIZE;
                        for (size_t k = 0; k < r->n_ranges; k++) {
                                const struct seal_range *g = &r->ranges[k];
                                size_t nb = (size_t)div_round_up(g->size, SEAL_BLOCK_SIZE);
                                if (b == g->first_block + nb - 1 && g->size % SEAL_BLOCK_SIZE)
                                        len = g->size % SEAL_BLOCK_SIZE;
                        }
                        zero_digest(len, r->blocks[b]);
                }
        SHA256((const uint8_t *)r->blocks, r->n_blocks * 32, r->digest);
}

static void digest_finish(struct seal_digest *d)
{
        _cleanup_free_ uint8_t *cat = malloc(d->n_regions * 32 + 1);

        for (size_t i = 0; i < d->n_regions; i++)
                region_finish(&d->regions[i]);
        if (!cat) {
                /* tiny; fall back to hashing region by region */
                EVP_MD_CTX *ctx = EVP_MD_CTX_new();
                EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
                for (size_t i = 0; i < d->n_regions; i++)
                        EVP_DigestUpdate(ctx, d->regions[i].digest, 32);
                EVP_DigestFinal_ex(ctx, d->digest, NULL);
                EVP_MD_CTX_free(ctx);
                return;
        }
        for (size_t i = 0; i < d->n_regions; i++)
                memcpy(cat + 32 * i, d->regions[i].digest, 32);
        SHA256(cat, d->n_regions * 32, d->digest);
}

int seal_digest_compute(struct seal_digest *d, const char *path)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ struct block_job *jobs = NULL;
        struct hash_pool pool = { 0 };
        pthread_t threads[MAX_WORKERS];
        unsigned n_threads = 0, want;
        size_t n = 0, k = 0, n_data = 0;
        struct stat st;
        int r;

        r = seal_digest_check_layout(d);
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return -EINVAL;
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size != d->size)
                return -EBADMSG;
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        for (size_t i = 0; i < d->n_regions; i++)
                n += d->regions[i].n_blocks;
        jobs = calloc(n ? n : 1, sizeof(*jobs));
        if (!jobs)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_regions; i++) {
                struct seal_region *g = &d->regions[i];

                memset(g->zero, 0, g->n_blocks * sizeof(*g->zero));
                for (size_t j = 0; j < g->n_ranges; j++)
                        for (uint64_t o = 0; o < g->ranges[j].size; o += SEAL_BLOCK_SIZE) {
                                size_t b = g->ranges[j].first_block + (size_t)(o / SEAL_BLOCK_SIZE);
                                uint64_t left = g->ranges[j].size - o;

                                jobs[k++] = (struct block_job){
                                        .offset = g->ranges[j].start + o,
                                        .len = (uint32_t)(left < SEAL_BLOCK_SIZE ? left : SEAL_BLOCK_SIZE),
                                        .digest = g->blocks[b],
                                        .zero = &g->zero[b],
                                };
                        }
        }
        /* disk order, so the reads are sequential */
        qsort(jobs, n, sizeof(*jobs), cmp_job);
        if (S_ISREG(st.st_mode))
                mark_holes(fd, jobs, n);
        for (size_t i = 0; i < n; i++)
                n_data += !jobs[i].hole;

        pool.fd = fd;
        pool.jobs = jobs;
        pool.n_jobs = n;
        atomic_init(&pool.next, 0);
        atomic_init(&pool.error, 0);
        want = n_workers(n_data);
        for (unsigned i = 1; i < want; i++) {
                if (pthread_create(&threads[n_threads], NULL, hash_worker, &pool) != 0)
                        break; /* fewer workers is only slower */
                n_threads++;
        }
        hash_worker(&pool);
        for (unsigned i = 0; i < n_threads; i++)
                pthread_join(threads[i], NULL);
        r = atomic_load(&pool.error);
        if (r < 0)
                return r;

        digest_finish(d);
        return 0;
}

static bool block_differs(const struct seal_region *a, const struct seal_region *b, size_t i)
{
        return a->zero[i] != b->zero[i] || memcmp(a->blocks[i], b->blocks[i], 32) != 0;
}

int seal_digest_first_difference(const struct seal_digest *expected, const struct seal_digest *actual,
                                 size_t *ret_region, uint64_t *ret_start, uint64_t *ret_end)
{
        uint64_t best = UINT64_MAX, best_end = 0;
        size_t best_region = 0;

        for (size_t i = 0; i < expected->n_regions && i < actual->n_regions; i++) {
                const struct seal_region *e = &expected->regions[i], *a = &actual->regions[i];

                for (size_t j = 0; j < e->n_ranges; j++) {
                        const struct seal_range *g = &e->ranges[j];
                        bool found = false;

                        if (g->start >= best)
                                break;
                        for (uint64_t o = 0; o < g->size; o += SEAL_BLOCK_SIZE) {
                                size_t b = g->first_block + (size_t)(o / SEAL_BLOCK_SIZE);

                                if (b >= e->n_blocks || b >= a->n_blocks || !block_differs(e, a, b))
                                        continue;
                                if (g->start + o < best) {
                                        uint64_t left = g->size - o;
                                        best = g->start + o;
                                        best_end = best + (left < SEAL_BLOCK_SIZE ? left : SEAL_BLOCK_SIZE) - 1;
                                        best_region = i;
                                }
                                found = true;
                                break;
                        }
                        if (found)
                                break;
                }
                if (best == UINT64_MAX && memcmp(e->digest, a->digest, 32) != 0) {
                        /* no block differs, yet the digest does */
                        best = e->ranges[0].start;
                        best_end = best + e->ranges[0].size - 1;
                        best_region = i;
                }
        }
        if (best == UINT64_MAX)
                return 0;
        *ret_region = best_region;
        *ret_start = best;
        *ret_end = best_end;
        return 1;
}

/* ---- the manifest, written ---- */

static json_t *json_hex(const uint8_t *data, size_t size)
{
        char buf[2 * 64 + 1];

        if (size > 64)
                return json_null();
        return json_string(hex_encode(data, size, buf));
}

static json_t *json_uuid(const id128_t *id)
{
        char buf[ID128_STRING_MAX];

        return json_string(id128_to_string(id, buf));
}

static json_t *blocks_to_json(const struct seal_region *r, const struct seal_range *g)
{
        size_t nb = (size_t)div_round_up(g->size, SEAL_BLOCK_SIZE);
        json_t *a = json_array();

        for (size_t b = g->first_block; b < g->first_block + nb; b++)
                json_array_append_new(a, r->zero[b] ? json_null() : json_hex(r->blocks[b], 32));
        return a;
}

static const char *base_name(const char *p)
{
        const char *s = strrchr(p, '/');

        return s ? s + 1 : p;
}

static const struct part_entry *layout_entry(const struct part_layout *l, unsigned number)
{
        for (size_t i = 0; i < l->n_entries; i++)
                if (l->entries[i].number == number)
                        return &l->entries[i];
        return NULL;
}

static const struct part_entry *layout_role(const struct part_layout *l, enum part_role role)
{
        for (size_t i = 0; i < l->n_entries; i++)
                if (l->entries[i].role == role)
                        return &l->entries[i];
        return NULL;
}

static json_t *manifest_inputs(const struct seal_input *in)
{
        const struct spec *s = in->spec;
        json_t *j = json_object(), *ks = json_null();

        json_object_set_new(j, "template",
                            json_pack("{s:s, s:o}", "file",
                                      base_name(s->template_path ? s->template_path : s->template->path), "sha256",
                                      json_hex(s->template->digest, 32)));
        /* the kickstart's digest is taken with its passwords replaced
         * (kickstart.h): this one is read by anyone with the image */
        if (s->kickstart)
                ks = json_pack("{s:s, s:o}", "file",
                               base_name(s->kickstart_path ? s->kickstart_path : s->kickstart->files[0]), "sha256",
                               json_hex(s->kickstart->digest, 32));
        json_object_set_new(j, "kickstart", ks);
        json_object_set_new(j, "rootfs", json_pack("{s:o}", "sha256", json_str_or_null(in->rootfs_digest)));
        return j;
}

static json_t *manifest_verity(const struct seal_input *in)
{
        const struct part_layout *l = in->spec->layout;
        const struct part_entry *data = layout_role(l, PART_ROLE_ROOT), *hash = layout_role(l, PART_ROLE_ROOT_VERITY);
        const struct verity_result *v = in->verity;
        json_t *j;

        if (!v || !data || !hash)
                return json_null();
        j = json_object();
        json_object_set_new(j, "data_partition", json_integer(data->number));
        json_object_set_new(j, "hash_partition", json_integer(hash->number));
        json_object_set_new(j, "root_hash", json_string(v->root_hash));
        json_object_set_new(j, "salt", json_string(v->salt));
        json_object_set_new(j, "uuid", json_string(v->uuid));
        json_object_set_new(j, "hash_algorithm", json_string("sha256"));
        json_object_set_new(j, "data_block_size", json_integer(VERITY_BLOCK_SIZE));
        json_object_set_new(j, "hash_block_size", json_integer(VERITY_BLOCK_SIZE));
        json_object_set_new(j, "data_blocks", json_u64(v->data_blocks));
        json_object_set_new(j, "hash_size", json_u64(v->hash_size));
        return j;
}

json_t *seal_manifest_to_json(const struct seal_input *in, const struct seal_digest *d)
{
        const struct spec *s = in->spec;
        const struct seal_region *table = &d->regions[0];
        json_t *j = json_object(), *modes = json_array(), *pt, *ranges = json_array(), *parts = json_array();
        char created[64] = "";
        time_t t = (time_t)s->source_date_epoch;
        struct tm tm;

        if (gmtime_r(&t, &tm))
                strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (s->boot_mode == BOOT_MODE_BIOS || s->boot_mode == BOOT_MODE_BOTH)
                json_array_append_new(modes, json_string("bios"));
        if (s->boot_mode == BOOT_MODE_UEFI || s->boot_mode == BOOT_MODE_BOTH)
                json_array_append_new(modes, json_string("uefi"));

        json_object_set_new(j, "format", json_string(SEAL_MANIFEST_FORMAT));
        json_object_set_new(j, "name", json_string(s->name));
        json_object_set_new(j, "version", json_string(s->version));
        json_object_set_new(j, "architecture", json_string(s->architecture));
        json_object_set_new(j, "boot_modes", modes);
        json_object_set_new(j, "created", json_string(created));
        json_object_set_new(j, "source_date_epoch", json_u64(s->source_date_epoch));
        json_object_set_new(j, "inputs", manifest_inputs(in));
        json_object_set_new(j, "image",
                            json_pack("{s:s, s:s, s:o, s:o}", "file",
                                      in->image_file ? in->image_file : base_name(s->output_image), "format",
                                      in->format == OUTPUT_FORMAT_QCOW2 ? "qcow2" : "raw", "size", json_u64(d->size),
                                      "digest", json_hex(d->digest, 32)));
        json_object_set_new(
                j, "digest",
                json_pack("{s:s, s:o}", "algorithm", SEAL_DIGEST_ALGORITHM, "block_size", json_u64(SEAL_BLOCK_SIZE)));

        for (size_t k = 0; k < table->n_ranges; k++)
                json_array_append_new(ranges, json_pack("{s:o, s:o, s:o}", "start", json_u64(table->ranges[k].start),
                                                        "size", json_u64(table->ranges[k].size), "blocks",
                                                        blocks_to_json(table, &table->ranges[k])));
        pt = json_object();
        json_object_set_new(pt, "type", json_string("gpt"));
        json_object_set_new(pt, "disk_guid", json_uuid(&s->layout->disk_uuid));
        json_object_set_new(pt, "digest", json_hex(table->digest, 32));
        json_object_set_new(pt, "ranges", ranges);
        json_object_set_new(j, "partition_table", pt);

        for (size_t i = 1; i < d->n_regions; i++) {
                const struct seal_region *g = &d->regions[i];
                const struct part_entry *e = layout_entry(s->layout, g->number);
                bool has_fs = e && e->fstype && !streq(e->fstype, "swap");
                json_t *p = json_object();

                json_object_set_new(p, "number", json_integer(g->number));
                json_object_set_new(p, "name", json_string(g->name));
                json_object_set_new(p, "role", json_str_or_null(e ? part_role_to_string(e->role) : NULL));
                json_object_set_new(p, "type_guid", e ? json_uuid(&e->type) : json_null());
                json_object_set_new(p, "uuid", e ? json_uuid(&e->uuid) : json_null());
                json_object_set_new(p, "fs_uuid", has_fs ? json_uuid(&e->fs_uuid) : json_null());
                json_object_set_new(p, "fstype", json_str_or_null(e ? e->fstype : NULL));
                json_object_set_new(p, "label", json_str_or_null(e ? e->label : NULL));
                json_object_set_new(p, "start", json_u64(g->ranges[0].start));
                json_object_set_new(p, "size", json_u64(g->ranges[0].size));
                json_object_set_new(p, "read_only", json_boolean(e && e->read_only));
                json_object_set_new(p, "digest", json_hex(g->digest, 32));
                json_object_set_new(p, "blocks", blocks_to_json(g, &g->ranges[0]));
                json_array_append_new(parts, p);
        }
        json_object_set_new(j, "partitions", parts);
        json_object_set_new(j, "verity", manifest_verity(in));
        return j;
}

int seal_manifest_write(const struct seal_input *in, const char *raw_image, const char *manifest_path)
{
        _cleanup_(seal_digest_freep) struct seal_digest *d = NULL;
        _cleanup_free_ char *text = NULL;
        json_t *j;
        int r;

        r = seal_digest_from_layout(in->spec->layout, &d);
        if (r < 0)
                return log_error_errno(r, "cannot plan the image digests: %m");
        r = seal_digest_compute(d, raw_image);
        if (r == -EBADMSG)
                return log_error_errno(-EIO, "'%s' is not the %llu bytes the layout says", raw_image,
                                       (unsigned long long)d->size);
        if (r < 0)
                return log_error_errno(r, "cannot hash '%s': %m", raw_image);

        j = seal_manifest_to_json(in, d);
        text = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        json_decref(j);
        if (!text)
                return log_error_errno(-ENOMEM, "cannot format the manifest");
        {
                size_t n = strlen(text);
                char *t = realloc(text, n + 2);
                if (!t)
                        return log_error_errno(-ENOMEM, "out of memory");
                text = t;
                memcpy(text + n, "\n", 2);
        }
        r = write_file_atomic(manifest_path, text, strlen(text), 0644);
        if (r < 0)
                return log_error_errno(r, "cannot write the manifest '%s': %m", manifest_path);
        return 0;
}

/* ---- the manifest, read back ---- */

struct seal_manifest *seal_manifest_free(struct seal_manifest *m)
{
        if (!m)
                return NULL;
        free(m->name);
        free(m->version);
        free(m->image_file);
        free(m->image_format);
        seal_digest_free(m->digest);
        free(m->verity_root_hash);
        free(m);
        return NULL;
}

static int hex_decode32(const char *s, uint8_t ret[32])
{
        if (!s || strlen(s) != 64)
                return -EINVAL;
        for (size_t i = 0; i < 32; i++) {
                int v = 0;
                for (size_t k = 0; k < 2; k++) {
                        char c = s[2 * i + k];
                        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                        if (x < 0)
                                return -EINVAL;
                        v = v * 16 + x;
                }
                ret[i] = (uint8_t)v;
        }
        return 0;
}

/* Parse errors: the reason, kept for the caller's one message. */
static int bad(char **ret_error, const char *fmt, ...) _printf_(2, 3);
static int bad(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return -EBADMSG;
}

static bool get_u64(json_t *o, const char *key, uint64_t *ret)
{
        json_t *v = json_object_get(o, key);

        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return false;
        *ret = (uint64_t)json_integer_value(v);
        return true;
}

static const char *get_str(json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

/* Reads one range's block list into r (whose blocks are allocated). */
static int parse_blocks(json_t *a, struct seal_region *r, const struct seal_range *g, const char *what,
                        char **ret_error)
{
        size_t nb = (size_t)div_round_up(g->size, SEAL_BLOCK_SIZE);

        if (!json_is_array(a) || json_array_size(a) != nb)
                return bad(ret_error, "%s: \"blocks\" must list %zu block digests", what, nb);
        for (size_t b = 0; b < nb; b++) {
                json_t *v = json_array_get(a, b);

                if (json_is_null(v))
                        r->zero[g->first_block + b] = true;
                else if (hex_decode32(json_string_value(v), r->blocks[g->first_block + b]) < 0)
                        return bad(ret_error, "%s: block %zu is not a SHA-256 digest", what, b);
        }
        return 0;
}

static int parse_digest_field(json_t *o, const char *what, uint8_t ret[32], char **ret_error)
{
        if (hex_decode32(get_str(o, "digest"), ret) < 0)
                return bad(ret_error, "%s: \"digest\" is not a SHA-256 digest", what);
        return 0;
}

static int parse_regions(json_t *root, struct seal_digest *d, char **ret_error)
{
        json_t *pt = json_object_get(root, "partition_table"), *ranges, *parts = json_object_get(root, "partitions");
        struct seal_region *table;
        int r;

        if (!json_is_object(pt) || !json_is_array(ranges = json_object_get(pt, "ranges")) ||
            json_array_size(ranges) == 0)
                return bad(ret_error, "\"partition_table\" has no \"ranges\"");
        if (!json_is_array(parts))
                return bad(ret_error, "no \"partitions\" list");
        d->regions = calloc(json_array_size(parts) + 1, sizeof(*d->regions));
        if (!d->regions)
                return -ENOMEM;
        d->n_regions = json_array_size(parts) + 1;
        table = &d->regions[0];

        for (size_t k = 0; k < json_array_size(ranges); k++) {
                json_t *g = json_array_get(ranges, k);
                uint64_t start, size;

                if (!get_u64(g, "start", &start) || !get_u64(g, "size", &size) || size == 0)
                        return bad(ret_error, "partition table range %zu: no valid \"start\" and \"size\"", k);
                r = range_append(table, start, size);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < json_array_size(parts); i++) {
                json_t *p = json_array_get(parts, i);
                struct seal_region *g = &d->regions[i + 1];
                uint64_t number, start, size;
                const char *name = get_str(p, "name");

                if (!json_is_object(p) || !get_u64(p, "number", &number) || number == 0 || number > 128 ||
                    !get_u64(p, "start", &start) || !get_u64(p, "size", &size) || size == 0 || !name)
                        return bad(ret_error,
                                   "partition entry %zu: no valid \"number\", \"name\", \"start\" and "
                                   "\"size\"",
                                   i + 1);
                g->number = (unsigned)number;
                g->name = strdup(name);
                if (!g->name)
                        return -ENOMEM;
                r = range_append(g, start, size);
                if (r < 0)
                        return r;
        }
        if (seal_digest_check_layout(d) < 0)
                return bad(ret_error, "the partitions (in disk order) and the partition table do not cover the "
                                      "disk exactly once");

        for (size_t i = 0; i < d->n_regions; i++) {
                r = region_alloc_blocks(&d->regions[i]);
                if (r < 0)
                        return r;
        }
        for (size_t k = 0; k < table->n_ranges; k++) {
                r = parse_blocks(json_object_get(json_array_get(ranges, k), "blocks"), table, &table->ranges[k],
                                 "partition table", ret_error);
                if (r < 0)
                        return r;
        }
        r = parse_digest_field(pt, "partition table", table->digest, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_array_size(parts); i++) {
                json_t *p = json_array_get(parts, i);
                struct seal_region *g = &d->regions[i + 1];
                char what[32];

                snprintf(what, sizeof(what), "partition %u", g->number);
                r = parse_blocks(json_object_get(p, "blocks"), g, &g->ranges[0], what, ret_error);
                if (r < 0)
                        return r;
                r = parse_digest_field(p, what, g->digest, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The manifest must agree with itself: each region digest with its
 * blocks, the image digest with the regions. Otherwise a difference could
 * hide in a digest no block comparison looks at. */
static int check_consistent(struct seal_digest *d, const uint8_t image_digest[32], char **ret_error)
{
        _cleanup_free_ uint8_t *saved = malloc(d->n_regions * 32 + 1);

        if (!saved)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_regions; i++)
                memcpy(saved + 32 * i, d->regions[i].digest, 32);
        digest_finish(d);
        for (size_t i = 0; i < d->n_regions; i++)
                if (memcmp(saved + 32 * i, d->regions[i].digest, 32) != 0) {
                        if (d->regions[i].number == 0)
                                return bad(ret_error, "the partition table's digest does not match its blocks");
                        return bad(ret_error, "partition %u's digest does not match its blocks", d->regions[i].number);
                }
        if (memcmp(image_digest, d->digest, 32) != 0)
                return bad(ret_error, "the image digest does not match the partition digests");
        return 0;
}

static const struct seal_region *region_by_number(const struct seal_digest *d, uint64_t number)
{
        for (size_t i = 1; i < d->n_regions; i++)
                if (d->regions[i].number == number)
                        return &d->regions[i];
        return NULL;
}

static int parse_verity(json_t *v, struct seal_manifest *m, char **ret_error)
{
        const struct seal_region *dp, *hp;
        uint64_t data, hash, blocks = 0, hash_size = 0;
        const char *root_hash;
        uint8_t tmp[32];

        if (!v || json_is_null(v))
                return 0;
        root_hash = get_str(v, "root_hash");
        if (!json_is_object(v) || !get_u64(v, "data_partition", &data) || !get_u64(v, "hash_partition", &hash) ||
            !root_hash || hex_decode32(root_hash, tmp) < 0)
                return bad(ret_error, "\"verity\" needs \"data_partition\", \"hash_partition\" and a \"root_hash\"");
        dp = region_by_number(m->digest, data);
        hp = region_by_number(m->digest, hash);
        if (!dp || !hp || dp == hp)
                return bad(ret_error, "\"verity\" names partitions that are not listed");
        /* optional: without them the whole partitions are meant */
        get_u64(v, "data_blocks", &blocks);
        get_u64(v, "hash_size", &hash_size);
        if (blocks > dp->ranges[0].size / VERITY_BLOCK_SIZE || hash_size > hp->ranges[0].size)
                return bad(ret_error, "\"verity\" sizes exceed their partitions");
        m->verity_data_size = blocks * VERITY_BLOCK_SIZE;
        m->verity_hash_size = hash_size;
        m->has_verity = true;
        m->verity_data_partition = (unsigned)data;
        m->verity_hash_partition = (unsigned)hash;
        m->verity_root_hash = strdup(root_hash);
        return m->verity_root_hash ? 0 : -ENOMEM;
}

int seal_manifest_parse(const char *data, size_t size, struct seal_manifest **ret, char **ret_error)
{
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        json_t *root, *image, *dg;
        json_error_t e;
        const char *s;
        uint64_t block_size;
        uint8_t image_digest[32];
        int r;

        *ret_error = NULL;
        root = json_loadb(data, size, JSON_REJECT_DUPLICATES, &e);
        if (!root)
                return bad(ret_error, "not JSON (line %d: %s)", e.line, e.text);

        m = calloc(1, sizeof(*m));
        if (!m) {
                r = -ENOMEM;
                goto finish;
        }
        if (!json_is_object(root) || !(s = get_str(root, "format")) || !streq(s, SEAL_MANIFEST_FORMAT)) {
                r = bad(ret_error, "not an %s manifest", SEAL_MANIFEST_FORMAT);
                goto finish;
        }
        dg = json_object_get(root, "digest");
        if (!(s = get_str(dg, "algorithm")) || !streq(s, SEAL_DIGEST_ALGORITHM) ||
            !get_u64(dg, "block_size", &block_size) || block_size != SEAL_BLOCK_SIZE) {
                r = bad(ret_error, "\"digest\" is not %s with %llu-byte blocks", SEAL_DIGEST_ALGORITHM,
                        (unsigned long long)SEAL_BLOCK_SIZE);
                goto finish;
        }
        image = json_object_get(root, "image");
        if (!json_is_object(image) || !get_str(image, "file") || !get_str(image, "format") ||
            hex_decode32(get_str(image, "digest"), image_digest) < 0) {
                r = bad(ret_error, "\"image\" needs \"file\", \"format\", \"size\" and \"digest\"");
                goto finish;
        }
        m->name = strdup(get_str(root, "name") ?: "");
        m->version = strdup(get_str(root, "version") ?: "");
        m->image_file = strdup(get_str(image, "file"));
        m->image_format = strdup(get_str(image, "format"));
        m->digest = calloc(1, sizeof(*m->digest));
        if (!m->name || !m->version || !m->image_file || !m->image_format || !m->digest) {
                r = -ENOMEM;
                goto finish;
        }
        if (!get_u64(image, "size", &m->digest->size) || m->digest->size == 0) {
                r = bad(ret_error, "\"image\" needs \"file\", \"format\", \"size\" and \"digest\"");
                goto finish;
        }
        r = parse_regions(root, m->digest, ret_error);
        if (r < 0)
                goto finish;
        r = check_consistent(m->digest, image_digest, ret_error);
        if (r < 0)
                goto finish;
        r = parse_verity(json_object_get(root, "verity"), m, ret_error);
        if (r < 0)
                goto finish;
        *ret = TAKE_PTR(m);
        r = 0;
finish:
        json_decref(root);
        return r;
}
