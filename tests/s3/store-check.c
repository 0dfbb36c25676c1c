/* store-check: exercises every store operation against a real store (an
 * s3:// URL behind the signature-checking proxy, or a file:// one) and
 * exits non-zero on the first mismatch. tests/integration/test-store-s3.sh
 * runs it; it is built by `make check` but is not a test by itself.
 *
 *   store-check [-n BLOCKS] [-s BLOCK_SIZE] [-j JOBS] [-k] [-v] URL
 *   store-check -G KEY URL      only gets KEY: exit 0 found, 3 absent, 1 error
 *
 * Everything it writes lives under "check-<pid>-<time>/" and is removed
 * at the end when every check passed. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "shared/log.h"
#include "shared/strv.h"
#include "store.h"

static unsigned failures;

#define CHECK(cond, ...)                                                                                               \
        do {                                                                                                           \
                if (!(cond)) {                                                                                         \
                        fprintf(stderr, "store-check: FAIL %s:%d: ", __FILE__, __LINE__);                              \
                        fprintf(stderr, __VA_ARGS__);                                                                  \
                        fputc('\n', stderr);                                                                           \
                        failures++;                                                                                    \
                        return -1;                                                                                     \
                }                                                                                                      \
        } while (0)

static void sha256_hex(const void *data, size_t size, char ret[65])
{
        unsigned char md[32];

        EVP_Digest(data, size, md, NULL, EVP_sha256(), NULL);
        for (size_t i = 0; i < 32; i++)
                sprintf(ret + 2 * i, "%02x", md[i]);
}

static void progress(uint64_t bytes, size_t done, size_t total, void *userdata)
{
        uint64_t *last = userdata;

        last[0] = bytes;
        last[1] = done;
        last[2] = total;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

struct ctx {
        struct store *s;
        char top[64]; /* "check-PID-TIME/" */
        size_t n;
        size_t block_size;
        char **keys;
        char **data;
};

static int check_blocks(struct ctx *c)
{
        _cleanup_free_ struct store_item *items = calloc(c->n, sizeof(*items));
        uint64_t prog[3] = { 0 };
        int r;

        if (!items)
                return -ENOMEM;

        /* none exists yet */
        for (size_t i = 0; i < c->n; i++)
                items[i] = (struct store_item){ .key = c->keys[i], .exists = true };
        r = store_exists_many(c->s, items, c->n);
        CHECK(r == 0, "exists_many before put: %d", r);
        for (size_t i = 0; i < c->n; i++)
                CHECK(!items[i].exists && items[i].result == 0, "%s exists before put", c->keys[i]);

        /* put them all at once */
        for (size_t i = 0; i < c->n; i++)
                items[i] = (struct store_item){ .key = c->keys[i], .data = c->data[i], .size = c->block_size };
        r = store_put_many(c->s, items, c->n, progress, prog);
        CHECK(r == 0, "put_many: %d", r);
        for (size_t i = 0; i < c->n; i++)
                CHECK(items[i].result == 0, "put_many item %zu: %d", i, items[i].result);
        CHECK(prog[0] == (uint64_t)c->n * c->block_size && prog[1] == c->n && prog[2] == c->n,
              "put_many progress %" PRIu64 " bytes %" PRIu64 "/%" PRIu64 " items", prog[0], prog[1], prog[2]);

        for (size_t i = 0; i < c->n; i++)
                items[i] = (struct store_item){ .key = c->keys[i] };
        r = store_exists_many(c->s, items, c->n);
        CHECK(r == 0, "exists_many after put: %d", r);
        for (size_t i = 0; i < c->n; i++)
                CHECK(items[i].exists, "%s missing after put", c->keys[i]);

        /* read them back */
        for (size_t i = 0; i < c->n; i++)
                items[i] = (struct store_item){ .key = c->keys[i] };
        memset(prog, 0, sizeof(prog));
        r = store_get_many(c->s, items, c->n, progress, prog);
        CHECK(r == 0, "get_many: %d", r);
        CHECK(prog[0] == (uint64_t)c->n * c->block_size && prog[1] == c->n, "get_many progress");
        for (size_t i = 0; i < c->n; i++) {
                bool same = items[i].size == c->block_size && memcmp(items[i].data, c->data[i], c->block_size) == 0;

                for (size_t j = i; j < c->n; j++)
                        if (!same)
                                free(items[j].data);
                CHECK(same, "%s read back differs (%zu bytes)", c->keys[i], items[i].size);
                free(items[i].data);
        }

        /* a batch with one absent key: that item alone fails */
        items[0] = (struct store_item){ .key = c->keys[0] };
        items[1] = (struct store_item){ .key = "check-absent/blocks/none" };
        items[2] = (struct store_item){ .key = c->keys[2] };
        r = store_get_many(c->s, items, 3, NULL, NULL);
        free(items[0].data);
        free(items[2].data);
        CHECK(r == -ENOENT, "get_many with an absent key: %d", r);
        CHECK(items[0].result == 0 && items[1].result == -ENOENT && items[2].result == 0,
              "get_many item results %d %d %d", items[0].result, items[1].result, items[2].result);
        return 0;
}

static int check_list(struct ctx *c, const char *prefix, size_t expect_n, char **expect)
{
        _cleanup_strv_free_ char **keys = NULL;
        _cleanup_free_ int64_t *mtimes = NULL;
        int64_t now = (int64_t)time(NULL);
        size_t n;
        int r;

        r = store_list(c->s, prefix, &keys, &mtimes);
        CHECK(r == 0, "list '%s': %d", prefix, r);
        n = strv_length(keys);
        CHECK(n == expect_n, "list '%s': %zu keys, expected %zu", prefix, n, expect_n);
        for (size_t i = 0; i < n; i++) {
                CHECK(i == 0 || strcmp(keys[i - 1], keys[i]) < 0, "list '%s' not sorted at %zu", prefix, i);
                CHECK(mtimes[i] > now - 86400 && mtimes[i] < now + 86400, "list: mtime %" PRId64 " of %s", mtimes[i],
                      keys[i]);
                if (expect)
                        CHECK(streq(keys[i], expect[i]), "list '%s' [%zu]: %s, expected %s", prefix, i, keys[i],
                              expect[i]);
        }
        return 0;
}

static int check_small(struct ctx *c)
{
        _cleanup_free_ char *key = NULL, *data = NULL, *empty = NULL;
        static const char text[] = "{\"id\": \"ami-0123456789abcdef0\"}\n";
        size_t size;
        int r;

        /* a key with every punctuation keys allow: encoded once, signed right */
        assert(asprintf(&key, "%snames/web_server-1.0@x:y=z/1.0.1.json", c->top) > 0);
        r = store_put(c->s, key, text, strlen(text));
        CHECK(r == 0, "put %s: %d", key, r);
        CHECK(store_exists(c->s, key) == 1, "exists %s", key);
        r = store_get(c->s, key, &data, &size);
        CHECK(r == 0 && size == strlen(text) && memcmp(data, text, size) == 0, "get %s: %d", key, r);
        data = x_free(data);

        /* replaced in place (channels are) */
        r = store_put(c->s, key, "x", 1);
        CHECK(r == 0, "overwrite %s: %d", key, r);
        r = store_get(c->s, key, &data, &size);
        CHECK(r == 0 && size == 1 && data[0] == 'x', "get after overwrite %s: %d", key, r);

        /* an empty object */
        free(key);
        assert(asprintf(&key, "%sempty", c->top) > 0);
        r = store_put(c->s, key, "", 0);
        CHECK(r == 0, "put empty: %d", r);
        r = store_get(c->s, key, &empty, &size);
        CHECK(r == 0 && size == 0, "get empty: %d %zu", r, size);

        /* absent things */
        CHECK(store_get(c->s, "check-absent/none", &data, &size) == -ENOENT, "get of an absent key");
        CHECK(store_exists(c->s, "check-absent/none") == 0, "exists of an absent key");
        CHECK(store_remove(c->s, "check-absent/none") == 0, "remove of an absent key");
        CHECK(store_put(c->s, "../escape", "x", 1) == -EINVAL, "an invalid key was accepted");
        return 0;
}

int main(int argc, char **argv)
{
        struct store_options o = { 0 };
        struct ctx c = { .n = 40, .block_size = 1 << 20 };
        _cleanup_strv_free_ char **sorted = NULL;
        _cleanup_free_ char *prefix = NULL;
        const char *get_only = NULL;
        size_t n_top;
        int opt, r;

        while ((opt = getopt(argc, argv, "n:s:j:kvG:")) >= 0)
                switch (opt) {
                case 'G':
                        get_only = optarg;
                        break;
                case 'n':
                        c.n = strtoul(optarg, NULL, 10);
                        break;
                case 's':
                        c.block_size = strtoul(optarg, NULL, 10);
                        break;
                case 'j':
                        o.jobs = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'k':
                        o.insecure = true;
                        break;
                case 'v':
                        log_set_level(LOG_LEVEL_VERBOSE);
                        break;
                default:
                        return 2;
                }
        if (optind + 1 != argc || c.n < 3 || c.block_size == 0) {
                fprintf(stderr, "usage: store-check [-n BLOCKS>=3] [-s BLOCK_SIZE] [-j JOBS] [-k] [-v] URL\n");
                return 2;
        }

        r = store_open(argv[optind], &o, &c.s);
        if (r < 0)
                return 1;
        if (get_only) {
                char *data;
                size_t size;

                r = store_get(c.s, get_only, &data, &size);
                store_close(c.s);
                if (r == -ENOENT)
                        return 3;
                if (r < 0)
                        return 1;
                free(data);
                return 0;
        }
        snprintf(c.top, sizeof(c.top), "check-%ld-%ld/", (long)getpid(), (long)time(NULL));

        c.keys = calloc(c.n + 1, sizeof(char *));
        c.data = calloc(c.n, sizeof(char *));
        assert(c.keys && c.data);
        for (size_t i = 0; i < c.n; i++) {
                char hex[65];

                c.data[i] = malloc(c.block_size);
                assert(c.data[i]);
                for (size_t off = 0; off < c.block_size;) {
                        ssize_t k = getrandom(c.data[i] + off, c.block_size - off, 0);
                        assert(k > 0);
                        off += (size_t)k;
                }
                sha256_hex(c.data[i], c.block_size, hex);
                assert(asprintf(&c.keys[i], "%sblocks/%s", c.top, hex) > 0);
        }
        sorted = calloc(c.n + 1, sizeof(char *));
        assert(sorted);
        for (size_t i = 0; i < c.n; i++)
                sorted[i] = strdup(c.keys[i]);
        qsort(sorted, c.n, sizeof(char *), cmp_str);

        if (check_blocks(&c) < 0)
                goto out;
        if (check_small(&c) < 0)
                goto out;
        assert(asprintf(&prefix, "%sblocks/", c.top) > 0);
        if (check_list(&c, prefix, c.n, sorted) < 0)
                goto out;
        n_top = c.n + 2; /* the blocks, the names/ object, "empty" */
        if (check_list(&c, c.top, n_top, NULL) < 0)
                goto out;
        /* a partial last component matches as a string prefix */
        free(prefix);
        assert(asprintf(&prefix, "%snam", c.top) > 0);
        if (check_list(&c, prefix, 1, NULL) < 0)
                goto out;

        /* remove one block, then everything */
        r = store_remove(c.s, c.keys[0]);
        if (r != 0 || store_exists(c.s, c.keys[0]) != 0) {
                fprintf(stderr, "store-check: FAIL: remove %s: %d\n", c.keys[0], r);
                failures++;
                goto out;
        }
        free(prefix);
        assert(asprintf(&prefix, "%sblocks/", c.top) > 0);
        strv_remove(sorted, c.keys[0]);
        if (check_list(&c, prefix, c.n - 1, sorted) < 0)
                goto out;
        {
                _cleanup_strv_free_ char **all = NULL;

                r = store_list(c.s, c.top, &all, NULL);
                STRV_FOREACH (k, all)
                        if (r >= 0)
                                r = store_remove(c.s, *k);
                if (r < 0) {
                        failures++;
                        goto out;
                }
        }
        if (check_list(&c, c.top, 0, NULL) < 0)
                goto out;

out:
        for (size_t i = 0; i < c.n; i++)
                free(c.data[i]);
        free(c.data);
        strv_free(c.keys);
        store_close(c.s);
        if (failures) {
                fprintf(stderr, "store-check: %u failure(s) against '%s'\n", failures, argv[optind]);
                return 1;
        }
        printf("store-check: ok: %zu blocks of %zu bytes through '%s'\n", c.n, c.block_size, argv[optind]);
        return 0;
}
