/* The pull stage: an image's blocks from the store into a sparse raw file,
 * each block's hash checked on arrival and the whole image against its
 * manifest before it is renamed into place (see pull.h). */
#include "config.h"

#include <errno.h>
#include <dirent.h>
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
#include "shared/proc-util.h"
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

/* The block list the record names, checked against the record. */
static int load_blocklist(struct store *s, const struct catalog_record *rec, struct catalog_blocklist **ret)
{
        _cleanup_free_ char *reason = NULL;
        int r = catalog_blocklist_load(s, rec, ret, &reason);

        if (r == -ENOENT || r == -EFBIG || r == -EBADMSG)
                return log_error_errno(r == -ENOENT ? r : -EBADMSG, "%s: %s", rec->image_id, strna(reason));
        return r;
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

static int verify_pulled(const char *path, const char *manifest_text, const char *id, bool quiet)
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
                return quiet ? -EBADMSG
                             : log_error_errno(-EBADMSG, "%s: the pulled image does not match its manifest's digest",
                                               id);
        return 0;
}

/* The cache's proof that ID.raw was verified: the record's digest and
 * the file's identity and times when it was. Any write to the file
 * changes its mtime and ctime (which no one but the kernel sets), so a
 * stamp that matches is proof the bytes are still those verified; one
 * that does not means verify again. */
#define STAMP_FORMAT "ingot-verified-1"

static char *stamp_path(const char *path)
{
        char *p;

        return asprintf(&p, "%s.verified", path) < 0 ? NULL : p;
}

static int stamp_line(const char *path, const char *digest, char **ret)
{
        struct stat st;

        if (stat(path, &st) < 0)
                return -errno;
        if (asprintf(ret, "%s %s %llu %llu %llu %lld.%09ld %lld.%09ld\n", STAMP_FORMAT, digest,
                     (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
                     (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long long)st.st_ctim.tv_sec,
                     st.st_ctim.tv_nsec) < 0)
                return -ENOMEM;
        return 0;
}

static bool stamp_valid(const char *path, const char *digest)
{
        _cleanup_free_ char *sp = stamp_path(path), *want = NULL;

        return sp && stamp_line(path, digest, &want) >= 0 && file_equals(sp, want, strlen(want));
}

/* Partials are PATH's directory/.BASE.partial-PID.N: one per pull, so two
 * pulls of one image never write one file; those of pulls that are gone
 * are removed by the next pull into the directory. */
static int partial_create(const char *path, char **ret_partial, int *ret_fd)
{
        static unsigned counter;
        _cleanup_free_ char *dir = NULL;
        const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
        _cleanup_free_ char *prefix = NULL;
        DIR *d;
        struct dirent *de;

        dir = slash ? strndup(path, (size_t)(slash - path) ?: 1) : strdup(".");
        if (!dir || asprintf(&prefix, ".%s.partial-", base) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        d = opendir(dir);
        if (d) {
                while ((de = readdir(d))) {
                        _cleanup_free_ char *old = NULL;
                        long pid;

                        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
                                continue;
                        pid = strtol(de->d_name + strlen(prefix), NULL, 10);
                        if (pid <= 0 || pid_is_alive((pid_t)pid))
                                continue;
                        if (asprintf(&old, "%s/%s", dir, de->d_name) >= 0 && unlink(old) == 0)
                                log_debug("removed '%s', left by an interrupted pull", old);
                }
                closedir(d);
        }
        for (unsigned attempt = 0;; attempt++) {
                char *p;
                int fd;

                if (asprintf(&p, "%s/%s%ld.%u", dir, prefix, (long)getpid(), counter++) < 0)
                        return log_error_errno(-ENOMEM, "out of memory");
                fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        *ret_partial = p;
                        *ret_fd = fd;
                        return 0;
                }
                if (errno != EEXIST || attempt > 100) {
                        int r = log_error_errno(-errno, "cannot create '%s': %m", p);
                        free(p);
                        return r;
                }
                free(p);
        }
}

int image_pull(struct store *s, const struct catalog_record *rec, const char *out, char **ret_path,
               char **ret_manifest, char **ret_sig_path, struct image_pull_stats *ret_stats)
{
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *bl = NULL;
        _cleanup_free_ char *path = NULL, *manifest = NULL, *sig_path = NULL, *partial = NULL, *mtext = NULL,
                            *stamp = NULL, *line = NULL;
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
        stamp = path ? stamp_path(path) : NULL;
        if (!path || !manifest || !stamp || asprintf(&sig_path, "%s%s", manifest, SIGN_SIG_SUFFIX) < 0)
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

        /* What is there already is used only when proven: the cache by a
         * stamp the file's last change would have broken, -o PATH by
         * verifying it again (size and manifest alone prove nothing) */
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == rec->size &&
            file_equals(manifest, mtext, strlen(mtext))) {
                if (!out)
                        cached = stamp_valid(path, rec->digest);
                if (!cached) {
                        log_debug("'%s' is there: verifying it against the manifest", path);
                        cached = verify_pulled(path, mtext, rec->image_id, true) >= 0;
                        if (cached && !out && (stamp_line(path, rec->digest, &line) < 0 ||
                                               write_file_atomic(stamp, line, strlen(line), 0644) < 0))
                                log_debug("cannot write '%s'", stamp);
                        if (!cached)
                                log_info("'%s' does not match its manifest: pulling it again", path);
                }
        }
        if (!cached) {
                r = load_blocklist(s, rec, &bl);
                if (r < 0)
                        return r;
                r = partial_create(path, &partial, &fd);
                if (r < 0)
                        return r;
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
                r = verify_pulled(partial, mtext, rec->image_id, false);
                if (r < 0)
                        goto fail;
                test_point("pull-verified");

                /* from here on no state may look finished and be wrong:
                 * the old image (or stamp) goes before the new manifest
                 * comes, and the new image gets its name last */
                if (unlink(out ? path : stamp) < 0 && errno != ENOENT) {
                        r = log_error_errno(-errno, "cannot remove the old '%s': %m", out ? path : stamp);
                        goto fail;
                }
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
                if (rename(partial, path) < 0) {
                        r = log_error_errno(-errno, "cannot rename '%s' to '%s': %m", partial, path);
                        goto fail;
                }
                if (!out) {
                        r = stamp_line(path, rec->digest, &line);
                        if (r >= 0)
                                r = write_file_atomic(stamp, line, strlen(line), 0644);
                        if (r < 0)
                                return log_error_errno(r, "cannot write '%s': %m", stamp);
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
