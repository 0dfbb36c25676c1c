/* Owns the order of the stages, their timing, the work directory and the
 * partial-then-rename discipline for the output image. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "boot.h"
#include "build.h"
#include "disk.h"
#include "rootfs.h"
#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/proc-util.h"
#include "shared/run.h"
#include "shared/time-util.h"
#include "sign.h"
#include "verity.h"

/* What a signal must remove: the partial image, manifest and signature.
 * unlink() is safe in a handler; the work directory is swept by the next
 * build instead. */
static char partial_path[4096], partial_manifest[4096], partial_sig[4096];

static void on_signal(int sig)
{
        if (partial_path[0])
                unlink(partial_path);
        if (partial_manifest[0])
                unlink(partial_manifest);
        if (partial_sig[0])
                unlink(partial_sig);
        signal(sig, SIG_DFL);
        raise(sig);
}

int build_cache_dir(const struct build_options *o, char **ret)
{
        char *p;

        if (!o || !o->cache_dir)
                return xdg_cache_dir(ret);
        p = strdup(o->cache_dir);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

/* Work directories are named build-PID; those whose process is gone were
 * left by a killed build and are removed. */
static void sweep_stale_work(const char *work_root)
{
        DIR *d = opendir(work_root);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                long pid;
                char *end, path[4096];

                if (strncmp(de->d_name, "build-", 6) != 0)
                        continue;
                pid = strtol(de->d_name + 6, &end, 10);
                if (*end != '\0' || pid <= 0 || pid > INT32_MAX || pid_is_alive((pid_t)pid))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", work_root, de->d_name);
                log_debug("removing '%s' left by an interrupted build", path);
                rm_rf(path);
        }
        closedir(d);
}

/* The PID in a partial's name, ".NAME.partial-PID" with an optional
 * ".SUFFIX" (".qcow2"; pull's ".N"); 0 when name is no partial. */
static long partial_pid(const char *name)
{
        const char *p = NULL;

        if (name[0] != '.')
                return 0;
        for (const char *q = strstr(name, ".partial-"); q; q = strstr(q + 1, ".partial-"))
                p = q;
        if (!p)
                return 0;
        p += strlen(".partial-");
        if (*p < '1' || *p > '9')
                return 0;
        {
                char *end;
                long pid = strtol(p, &end, 10);

                return *end == '\0' || *end == '.' ? pid : 0;
        }
}

/* The PID of a --check-reproducible directory, ".ingot-repro-PID-N-XXXXXX";
 * 0 when name is none. */
static long repro_pid(const char *name)
{
        const char *prefix = ".ingot-repro-";
        char *end;
        long pid;

        if (strncmp(name, prefix, strlen(prefix)) != 0)
                return 0;
        pid = strtol(name + strlen(prefix), &end, 10);
        return *end == '-' && pid > 0 ? pid : 0;
}

/* What killed builds (and pulls) left in an output directory, whatever
 * image it was for: every partial and --check-reproducible directory whose
 * process is gone. A partial is as large as the disk, so leaving those of
 * other names would fill the directory build after killed build. */
static void sweep_stale_outputs(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                long pid = partial_pid(de->d_name);
                bool is_dir = false;

                if (pid == 0) {
                        pid = repro_pid(de->d_name);
                        is_dir = true;
                }
                if (pid <= 0 || pid > INT32_MAX || pid_is_alive((pid_t)pid))
                        continue;
                if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
                        break;
                log_debug("removing '%s' left by an interrupted build", path);
                if (is_dir)
                        rm_rf(path);
                else
                        unlink(path);
        }
        closedir(d);
}

struct stage_clock {
        const char *name;
        double start;
        bool progress;
};

static void stage_begin(struct stage_clock *c, const char *name, bool progress)
{
        c->name = name;
        c->start = now_mono();
        c->progress = progress;
        if (progress && log_get_level() >= LOG_LEVEL_NORMAL)
                fprintf(stderr, "  %-8s …\r", name);
}

static void stage_end(struct stage_clock *c, const char *detail)
{
        log_info("%-8s %6.1fs%s%s", c->name, now_mono() - c->start, detail ? "  " : "", detail ? detail : "");
}

static int convert_qcow2(const char *raw, const char *qcow2)
{
        const char *argv[] = { "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2, NULL };
        _cleanup_free_ char *err = NULL;
        char line[256];
        int r = run_argv(argv, NULL, NULL, &err);

        if (r != 0)
                return log_error_errno(r < 0 ? r : -EIO, "qemu-img convert failed: %s",
                                       r < 0 ? strerror(-r) : run_output_line(err, true, line, sizeof(line)));
        return 0;
}

struct esp_stage {
        const struct spec *s;
        const struct rootfs *root;
        const char *esp, *work;
        struct verity_result *verity; /* filled when s->verity */
};

/* Runs inside the disk stage once the root is made: seals it with
 * dm-verity when asked (the root hash is only known now), then stages the
 * ESP with the command line that names it. */
static int stage_esp(const char *image, void *userdata)
{
        const struct esp_stage *e = userdata;
        const struct spec *s = e->s;
        const struct part_entry *data = NULL, *hash = NULL;
        _cleanup_free_ char *cmdline = NULL;
        double t = now_mono();
        int r;

        if (s->verity) {
                for (size_t i = 0; i < s->layout->n_entries; i++) {
                        const struct part_entry *p = &s->layout->entries[i];

                        if (p->role == PART_ROLE_ROOT)
                                data = p;
                        else if (p->role == PART_ROLE_ROOT_VERITY)
                                hash = p;
                }
                if (!data || !hash)
                        return log_error_errno(-EINVAL, "the layout has no root and root-verity partitions");
                r = verity_format(image, data->start, data->size, hash->start, hash->size, s->lineage, e->work,
                                  e->verity);
                if (r < 0)
                        return r;
                if (asprintf(&cmdline, "%s ingot.verity.roothash=%s", s->cmdline, e->verity->root_hash) < 0)
                        return log_error_errno(-ENOMEM, "out of memory");
                log_info("verity   %6.1fs  root hash %s", now_mono() - t, e->verity->root_hash);
        }
        return boot_stage_esp(s, cmdline, e->root->kernel, e->root->initrd, e->esp);
}

/* Digests the raw disk into the manifest partial and signs it when asked.
 * The rootfs input is named by the SHA-256 of the bootstrap's tree. */
static int seal_stage(const struct spec *s, EVP_PKEY *key, const struct rootfs *root,
                      const struct verity_result *verity, const char *raw, const char *manifest, const char *sig)
{
        int r;

        r = seal_manifest_write(&(struct seal_input){ .spec = s,
                                                      .format = s->format,
                                                      .rootfs_digest = root->base_digest,
                                                      .verity = verity },
                                raw, manifest);
        if (r < 0)
                return r;
        if (!key)
                return 0;
        r = sign_file(key, manifest, sig);
        if (r < 0)
                return log_error_errno(r, "cannot sign the manifest: %m");
        return 0;
}

int build_image(const struct spec *s, const struct build_options *o)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_free_ char *manifest = NULL, *sig = NULL, *sig_final = NULL, *other_image = NULL;
        _cleanup_(rootfs_freep) struct rootfs *root = NULL;
        _cleanup_free_ char *cache = NULL, *work_root = NULL, *work = NULL, *esp = NULL, *raw = NULL, *qcow = NULL;
        const char *base = strrchr(s->output_image, '/');
        struct stage_clock c;
        struct esp_stage esp_ctx;
        struct verity_result verity = { 0 };
        struct sigaction sa = { .sa_handler = on_signal };
        double t0 = now_mono();
        int r;

        /* A signing key that cannot sign is bad input, found before any work. */
        if (o->sign_key) {
                r = sign_load_private_key(o->sign_key, &key);
                if (r == -EBADMSG)
                        return log_error_errno(-EBADMSG, "'%s' is not an Ed25519 private key (PEM)", o->sign_key);
                if (r < 0) {
                        log_error_errno(r, "cannot read the signing key '%s': %m", o->sign_key);
                        return -EBADMSG;
                }
        }
        if (asprintf(&sig_final, "%s%s", s->output_manifest, SIGN_SIG_SUFFIX) < 0)
                return log_error_errno(-ENOMEM, "out of memory");

        r = build_cache_dir(o, &cache);
        if (r < 0)
                return log_error_errno(r, "no cache directory: set XDG_CACHE_HOME or HOME, or give --cache-dir");
        if (asprintf(&work_root, "%s/work", cache) < 0 ||
            asprintf(&work, "%s/build-%ld", work_root, (long)getpid()) < 0 || asprintf(&esp, "%s/esp", work) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = mkdir_p(s->output_dir, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot create output directory '%s': %m", s->output_dir);
        r = mkdir_p(work_root, 0700);
        if (r < 0)
                return log_error_errno(r, "cannot create '%s': %m", work_root);
        sweep_stale_work(work_root);
        sweep_stale_outputs(s->output_dir);
        rm_rf(work);
        r = mkdir_p(esp, 0700);
        if (r < 0)
                return log_error_errno(r, "cannot create '%s': %m", esp);

        /* The partial lives beside the final name (same filesystem, so the
         * rename is atomic) but hidden and never named like an image. */
        if (asprintf(&raw, "%s/.%s.partial-%ld", s->output_dir, base ? base + 1 : s->output_image, (long)getpid()) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        snprintf(partial_path, sizeof(partial_path), "%s", raw);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);

        stage_begin(&c, "rootfs", o->progress);
        r = rootfs_build(s, cache, work, &root);
        if (r < 0)
                goto fail;
        stage_end(&c, root->cache_hit ? "(bootstrap from cache)" : NULL);

        stage_begin(&c, "disk", o->progress);
        esp_ctx = (struct esp_stage){ .s = s, .root = root, .esp = esp, .work = work, .verity = &verity };
        r = disk_build(s,
                       &(struct disk_inputs){ .root_tar = root->tar,
                                              .esp_dir = esp,
                                              .work_dir = work,
                                              .before_esp = stage_esp,
                                              .userdata = &esp_ctx },
                       raw);
        if (r < 0)
                goto fail;
        r = boot_install_bios(s, raw);
        if (r < 0)
                goto fail;
        stage_end(&c, NULL);

        /* The manifest describes the raw disk, so it is made before any
         * conversion; it and its signature are partials until the end. */
        stage_begin(&c, "seal", o->progress);
        if (asprintf(&manifest, "%s/.%s.partial-%ld", s->output_dir, strrchr(s->output_manifest, '/') + 1,
                     (long)getpid()) < 0 ||
            asprintf(&sig, "%s/.%s.partial-%ld", s->output_dir, strrchr(sig_final, '/') + 1, (long)getpid()) < 0) {
                r = log_error_errno(-ENOMEM, "out of memory");
                goto fail;
        }
        snprintf(partial_manifest, sizeof(partial_manifest), "%s", manifest);
        snprintf(partial_sig, sizeof(partial_sig), "%s", sig);
        /* the verity result: filled by the disk stage when s->verity */
        r = seal_stage(s, key, root, s->verity ? &verity : NULL, raw, manifest, sig);
        if (r < 0)
                goto fail;
        stage_end(&c, key ? "(manifest signed)" : NULL);

        if (s->format == OUTPUT_FORMAT_QCOW2) {
                stage_begin(&c, "qcow2", o->progress);
                if (asprintf(&qcow, "%s.qcow2", raw) < 0) {
                        r = log_error_errno(-ENOMEM, "out of memory");
                        goto fail;
                }
                r = convert_qcow2(raw, qcow);
                unlink(raw);
                if (r < 0) {
                        unlink(qcow);
                        goto fail;
                }
                free(raw);
                raw = TAKE_PTR(qcow);
                snprintf(partial_path, sizeof(partial_path), "%s", raw);
                stage_end(&c, NULL);
        }

        /* Whenever a kill comes, the directory holds the old pair, no
         * image, or the new pair, never a manifest beside an image it does
         * not describe: the old image goes first (in either format, as both
         * share the manifest's name) and the old signature with it, then
         * the new manifest and signature are renamed into place, the image
         * last. */
        if (asprintf(&other_image, "%s/%s-%s.%s", s->output_dir, s->name, s->version,
                     s->format == OUTPUT_FORMAT_QCOW2 ? "raw" : "qcow2") < 0) {
                r = log_error_errno(-ENOMEM, "out of memory");
                goto fail;
        }
        {
                const char *old[] = { s->output_image, other_image, sig_final };

                for (size_t i = 0; i < ELEMENTSOF(old); i++)
                        if (unlink(old[i]) < 0 && errno != ENOENT) {
                                r = log_error_errno(-errno, "cannot remove the old '%s': %m", old[i]);
                                goto fail;
                        }
        }
        if (rename(manifest, s->output_manifest) < 0) {
                r = log_error_errno(-errno, "cannot rename the manifest into place as '%s': %m", s->output_manifest);
                goto fail;
        }
        partial_manifest[0] = '\0';
        if (key && rename(sig, sig_final) < 0) {
                r = log_error_errno(-errno, "cannot rename the signature into place as '%s': %m", sig_final);
                unlink(s->output_manifest);
                goto fail;
        }
        partial_sig[0] = '\0';
        if (rename(raw, s->output_image) < 0) {
                r = log_error_errno(-errno, "cannot rename the image into place as '%s': %m", s->output_image);
                unlink(s->output_manifest);
                unlink(sig_final);
                goto fail;
        }
        partial_path[0] = '\0';
        rm_rf(work);
        log_info("built    %6.1fs  %s", now_mono() - t0, s->output_image);
        return 0;

fail:
        unlink(raw);
        if (manifest)
                unlink(manifest);
        if (sig)
                unlink(sig);
        partial_path[0] = partial_manifest[0] = partial_sig[0] = '\0';
        rm_rf(work);
        return r;
}

/* The first byte where a and b differ, as "partition N 'name' at byte X
 * (offset Y in the partition)" or outside the partitions; 0 when they are
 * identical, 1 when they differ (*ret says where), negative errno. */
static int compare_images(const struct spec *s, const char *a, const char *b, char **ret)
{
        _cleanup_close_ int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *ba = malloc(1 << 20), *bb = malloc(1 << 20);
        uint64_t off = 0;

        if (fa < 0 || fb < 0)
                return log_error_errno(-errno, "cannot open the images to compare: %m");
        if (!ba || !bb)
                return log_error_errno(-ENOMEM, "out of memory");
        for (;;) {
                ssize_t na = read(fa, ba, 1 << 20), nb = read(fb, bb, 1 << 20);
                size_t n, i = 0;

                if (na < 0 || nb < 0)
                        return log_error_errno(-errno, "cannot read the images to compare: %m");
                n = (size_t)(na < nb ? na : nb);
                while (i < n && ba[i] == bb[i])
                        i++;
                if (i == n && na == nb) {
                        if (na == 0)
                                return 0;
                        off += (uint64_t)n;
                        continue;
                }
                off += i;
                for (size_t k = 0; k < s->layout->n_entries; k++) {
                        const struct part_entry *e = &s->layout->entries[k];

                        if (off >= e->start && off < e->start + e->size)
                                return asprintf(ret, "partition %u '%s' at byte %" PRIu64 " (offset %" PRIu64
                                                     " in the partition)",
                                                e->number, e->name, off, off - e->start) < 0
                                               ? -ENOMEM
                                               : 1;
                }
                return asprintf(ret, "the partition table or the space between partitions at byte %" PRIu64, off) < 0
                               ? -ENOMEM
                               : 1;
        }
}

/* Moves every file of dir whose name starts with prefix into dest_dir. */
static int move_outputs(const char *dir, const char *dest_dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int r = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)) && r >= 0) {
                _cleanup_free_ char *from = NULL, *to = NULL;

                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&from, "%s/%s", dir, de->d_name) < 0 || asprintf(&to, "%s/%s", dest_dir, de->d_name) < 0)
                        r = -ENOMEM;
                else if (rename(from, to) < 0)
                        r = -errno;
        }
        closedir(d);
        return r;
}

/* Renames a --check-reproducible directory ".ingot-repro-PID-N-XXXXXX" to
 * ".ingot-repro-kept-N-XXXXXX"; on success *dir is the new name (the old
 * one freed) and *ret_image the image's path in it. */
static int keep_repro_dir(char **dir, const char *image, char **ret_image)
{
        const char *mark = "/.ingot-repro-";
        _cleanup_free_ char *kept = NULL, *kept_image = NULL;
        const char *p = strstr(*dir, mark), *n;

        if (!p)
                return -EINVAL;
        p += strlen(mark);
        n = strchr(p, '-');
        if (!n || asprintf(&kept, "%.*skept%s", (int)(p - *dir), *dir, n) < 0 ||
            asprintf(&kept_image, "%s%s", kept, image + strlen(*dir)) < 0)
                return -ENOMEM;
        if (rename(*dir, kept) < 0)
                return -errno;
        free(*dir);
        *dir = TAKE_PTR(kept);
        *ret_image = TAKE_PTR(kept_image);
        return 0;
}

int build_check_reproducible(const struct spec_options *so, const struct build_options *o)
{
        _cleanup_(spec_freep) struct spec *first = NULL, *second = NULL, *final = NULL;
        _cleanup_free_ char *dir1 = NULL, *dir2 = NULL, *where = NULL;
        struct spec_options a = *so, b = *so;
        const char *out = so->output_dir ? so->output_dir : ".";
        int r;

        /* the final spec first: bad input fails before anything is built */
        r = spec_load(so, &final);
        if (r < 0)
                return r;
        r = mkdir_p(out, 0755);
        if (r < 0)
                return log_error_errno(r, "cannot create output directory '%s': %m", out);
        /* named by our PID, so that the next build removes them when we
         * are killed (sweep_stale_outputs) */
        sweep_stale_outputs(out);
        if (asprintf(&dir1, "%s/.ingot-repro-%ld-1-XXXXXX", out, (long)getpid()) < 0 ||
            asprintf(&dir2, "%s/.ingot-repro-%ld-2-XXXXXX", out, (long)getpid()) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        if (!mkdtemp(dir1) || !mkdtemp(dir2)) {
                r = log_error_errno(-errno, "cannot create a directory in '%s': %m", out);
                goto finish;
        }
        a.output_dir = dir1;
        b.output_dir = dir2;
        r = spec_load(&a, &first);
        if (r >= 0)
                r = spec_load(&b, &second);
        if (r < 0)
                goto finish;

        log_info("reproducibility check: first build in %s", dir1);
        r = build_image(first, o);
        if (r < 0)
                goto finish;
        log_info("reproducibility check: second build in %s", dir2);
        r = build_image(second, o);
        if (r < 0)
                goto finish;

        r = compare_images(final, first->output_image, second->output_image, &where);
        if (r < 0)
                goto finish;
        if (r > 0) {
                _cleanup_free_ char *kept1 = NULL, *kept2 = NULL;

                /* kept for inspection, under names without our PID, which
                 * the next build's sweep would take for a killed run's */
                r = keep_repro_dir(&dir1, first->output_image, &kept1);
                if (r >= 0)
                        r = keep_repro_dir(&dir2, second->output_image, &kept2);
                if (r < 0) {
                        log_error_errno(r, "cannot keep the differing images: %m");
                        goto finish;
                }
                log_error("not reproducible: the two builds differ first in %s; both are kept: %s and %s", where, kept1,
                          kept2);
                dir1 = x_free(dir1);
                dir2 = x_free(dir2);
                return -EIO;
        }
        r = move_outputs(dir1, out);
        if (r < 0) {
                log_error_errno(r, "cannot move the image from '%s' to '%s': %m", dir1, out);
                goto finish;
        }
        log_info("reproducible: two builds in separate directories are identical: %s", final->output_image);
        r = 0;
finish:
        if (dir1)
                rm_rf(dir1);
        if (dir2)
                rm_rf(dir2);
        return r;
}
