/* The pull stage: an image's blocks from the store into a sparse raw file,
 * each block's hash checked on arrival and the whole image against its
 * manifest before it is renamed into place (see pull.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "pull.h"
#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "sign.h"
#include "store.h"

/* Blocks fetched per get_many batch: 64 x 1 MiB in memory at most. */
#define PULL_BATCH 64

/* PATH.raw → PATH.manifest.json */
static char *manifest_beside(const char *image)
{
        size_t n = strlen(image);
        char *m;

        if (n > 4 && streq(image + n - 4, ".raw"))
                n -= 4;
        if (asprintf(&m, "%.*s.manifest.json", (int)n, image) < 0)
                return NULL;
        return m;
}

int image_cache_path(const char *id, char **ret)
{
        _cleanup_free_ char *top = NULL, *dir = NULL;
        int r;

        r = xdg_cache_dir(&top);
        if (r == -ENOENT)
                return log_error_errno(-ENXIO, "no cache directory: set -o, $XDG_CACHE_HOME or $HOME");
        if (r < 0 || asprintf(&dir, "%s/images", top) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = mkdir_p(dir, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot create the cache directory '%s': %m", dir);
        if (asprintf(ret, "%s/%s.raw", dir, id) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        return 0;
}

static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = pwrite(fd, (const uint8_t *)buf + done, n - done, (off_t)(off + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                done += (size_t)k;
        }
        return 0;
}

/* True when path already holds what we would write. */
static bool file_equals(const char *path, const char *data, size_t size)
{
        _cleanup_free_ char *cur = NULL;
        size_t n;

        return read_full_file(path, size + 1, &cur, &n) >= 0 && n == size && memcmp(cur, data, size) == 0;
}

/* The block list the record names, checked against the record's hash. */
static int load_blocklist(struct store *s, const struct catalog_record *rec, struct catalog_blocklist **ret)
{
        _cleanup_free_ char *data = NULL, *error = NULL;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
        uint8_t h[32];
        char hex[65];
        size_t size;
        int r;

        r = store_get(s, rec->block_list, &data, &size);
        if (r == -ENOENT)
                return log_error_errno(r, "%s: its block list '%s' is missing from the store", rec->image_id,
                                       rec->block_list);
        if (r < 0)
                return r;
        sha256_buffer(data, size, h);
        if (!streq(hex_encode(h, 32, hex), rec->block_list_sha256))
                return log_error_errno(-EBADMSG, "%s: its block list '%s' is corrupt in the store", rec->image_id,
                                       rec->block_list);
        r = catalog_blocklist_from_json(data, size, &b, &error);
        if (r < 0)
                return log_error_errno(-EBADMSG, "%s: '%s' is not a valid block list: %s", rec->image_id,
                                       rec->block_list, strna(error));
        if (b->size != rec->size)
                return log_error_errno(-EBADMSG, "%s: the block list is for %llu bytes, the record says %llu",
                                       rec->image_id, (unsigned long long)b->size, (unsigned long long)rec->size);
        *ret = TAKE_PTR(b);
        return 0;
}

/* Fetches every stored block of b into fd, checking each one's hash. */
static int fetch_blocks(struct store *s, const struct catalog_blocklist *b, int fd, uint64_t *ret_bytes,
                        size_t *ret_blocks)
{
        struct store_item items[PULL_BATCH];
        char keys[PULL_BATCH][CATALOG_BLOCK_KEY_MAX];
        size_t which[PULL_BATCH];
        uint64_t bytes = 0;
        size_t fetched = 0;
        int r = 0;

        for (size_t i = 0; i < b->n_blocks && r >= 0;) {
                size_t m = 0;

                for (; i < b->n_blocks && m < PULL_BATCH; i++) {
                        if (b->zero[i])
                                continue; /* a hole: ftruncate made it */
                        items[m] = (struct store_item){ .key = catalog_block_key(b->hashes[i], keys[m]) };
                        which[m++] = i;
                }
                if (m == 0)
                        break;
                (void)store_get_many(s, items, m, NULL, NULL);
                for (size_t k = 0; k < m; k++) {
                        size_t bi = which[k];
                        uint8_t h[32];

                        if (r >= 0 && items[k].result == -ENOENT)
                                r = log_error_errno(-ENOENT, "block %zu (%s) is missing from the store", bi,
                                                    items[k].key);
                        else if (r >= 0 && items[k].result < 0)
                                r = items[k].result; /* the store said why */
                        else if (r >= 0) {
                                sha256_buffer(items[k].data, items[k].size, h);
                                if (items[k].size != catalog_blocklist_block_bytes(b, bi) ||
                                    memcmp(h, b->hashes[bi], 32) != 0)
                                        r = log_error_errno(-EBADMSG, "block %zu (%s) is corrupt in the store", bi,
                                                            items[k].key);
                                else {
                                        r = pwrite_full(fd, items[k].data, items[k].size, (uint64_t)bi * b->block_size);
                                        if (r < 0)
                                                log_error_errno(r, "cannot write the image: %m");
                                        bytes += items[k].size;
                                        fetched++;
                                }
                        }
                        free(items[k].data);
                }
        }
        if (r < 0)
                return r;
        *ret_bytes = bytes;
        *ret_blocks = fetched;
        return 0;
}

static int verify_pulled(const char *path, const char *manifest_text, const char *id)
{
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        _cleanup_(seal_digest_freep) struct seal_digest *actual = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        r = seal_manifest_parse(manifest_text, strlen(manifest_text), &m, &error);
        if (r < 0)
                return log_error_errno(-EBADMSG, "%s: the manifest in its record is not valid: %s", id, strna(error));
        r = seal_digest_new_like(m->digest, &actual);
        if (r < 0)
                return log_error_errno(r, "out of memory");
        r = seal_digest_compute(actual, path);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", path);
        if (memcmp(actual->digest, m->digest->digest, 32) != 0)
                return log_error_errno(-EBADMSG, "%s: the pulled image does not match its manifest's digest", id);
        return 0;
}

int image_pull(struct store *s, const struct catalog_record *rec, const char *out, char **ret_path,
               char **ret_manifest, char **ret_sig_path, struct image_pull_stats *ret_stats)
{
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *bl = NULL;
        _cleanup_free_ char *path = NULL, *manifest = NULL, *sig_path = NULL, *partial = NULL, *mtext = NULL;
        _cleanup_close_ int fd = -1;
        bool cached = false, sig_ok;
        uint64_t bytes = 0;
        size_t blocks = 0;
        struct timespec t0, t1;
        struct stat st;
        uint8_t h[32];
        char hex[65];
        int r;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (rec->state == CATALOG_STATE_DEREGISTERED)
                return log_error_errno(-EPERM, "%s (%s@%s) is deregistered: refusing to pull it", rec->image_id,
                                       rec->name, rec->version);
        if (rec->state == CATALOG_STATE_PENDING)
                return log_error_errno(-EPERM, "%s (%s@%s) is still pending: its push has not finished",
                                       rec->image_id, rec->name, rec->version);
        if (!rec->manifest)
                return log_error_errno(-EBADMSG, "%s: its record carries no manifest", rec->image_id);
        if (streq(catalog_record_state_string(rec, catalog_now_ms()), "deprecated"))
                log_warning("%s (%s@%s) is deprecated", rec->image_id, rec->name, rec->version);

        if (out)
                path = strdup(out);
        else {
                r = image_cache_path(rec->image_id, &path);
                if (r < 0)
                        return r;
        }
        manifest = path ? manifest_beside(path) : NULL;
        if (!path || !manifest || asprintf(&sig_path, "%s%s", manifest, SIGN_SIG_SUFFIX) < 0 ||
            asprintf(&partial, "%s.partial", path) < 0)
                return log_error_errno(-ENOMEM, "out of memory");

        /* the manifest's exact bytes, as the build wrote them: the
         * signature is over those */
        mtext = catalog_json_format(rec->manifest);
        if (!mtext)
                return log_error_errno(-ENOMEM, "out of memory");
        sha256_buffer(mtext, strlen(mtext), h);
        sig_ok = rec->signature && streq_ptr(hex_encode(h, 32, hex), rec->manifest_sha256);
        if (rec->signature && !sig_ok)
                log_warning("%s: the manifest was not written by ingot's formatter; its signature is left out",
                            rec->image_id);

        /* a finished pull is renamed into place only once verified */
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == rec->size &&
            file_equals(manifest, mtext, strlen(mtext)))
                cached = true;
        else {
                r = load_blocklist(s, rec, &bl);
                if (r < 0)
                        return r;
                fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0)
                        return log_error_errno(-errno, "cannot create '%s': %m", partial);
                if (ftruncate(fd, (off_t)rec->size) < 0) {
                        r = log_error_errno(-errno, "cannot size '%s': %m", partial);
                        goto fail;
                }
                r = fetch_blocks(s, bl, fd, &bytes, &blocks);
                if (r < 0)
                        goto fail;
                if (fsync(fd) < 0) {
                        r = log_error_errno(-errno, "cannot write '%s': %m", partial);
                        goto fail;
                }
                fd = (close(fd), -1);

                r = write_file_atomic(manifest, mtext, strlen(mtext), 0644);
                if (r < 0) {
                        log_error_errno(r, "cannot write '%s': %m", manifest);
                        goto fail;
                }
                if (sig_ok)
                        r = write_file_atomic(sig_path, rec->signature, strlen(rec->signature), 0644);
                else if (unlink(sig_path) < 0 && errno != ENOENT)
                        r = -errno;
                if (r < 0) {
                        log_error_errno(r, "cannot write '%s': %m", sig_path);
                        goto fail;
                }
                r = verify_pulled(partial, mtext, rec->image_id);
                if (r < 0)
                        goto fail;
                if (rename(partial, path) < 0) {
                        r = log_error_errno(-errno, "cannot rename '%s' to '%s': %m", partial, path);
                        goto fail;
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (ret_stats)
                *ret_stats = (struct image_pull_stats){
                        .cached = cached,
                        .bytes = bytes,
                        .blocks = blocks,
                        .seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                };
        if (ret_path)
                *ret_path = TAKE_PTR(path);
        if (ret_manifest)
                *ret_manifest = TAKE_PTR(manifest);
        if (ret_sig_path)
                *ret_sig_path = sig_ok ? TAKE_PTR(sig_path) : NULL;
        return 0;

fail:
        unlink(partial);
        return r;
}
