/* Owns the order of the stages, their timing, the work directory and the
 * partial-then-rename discipline for the output image. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/run.h"
#include "verity.h"

/* What a signal must remove: the partial image. unlink() is safe in a
 * handler; the work directory is swept by the next build instead. */
static char partial_path[4096];

static void on_signal(int sig)
{
        if (partial_path[0])
                unlink(partial_path);
        signal(sig, SIG_DFL);
        raise(sig);
}

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int build_cache_dir(const struct build_options *o, char **ret)
{
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        char *p;
        int r;

        if (o && o->cache_dir)
                r = asprintf(&p, "%s", o->cache_dir);
        else if (xdg && *xdg == '/')
                r = asprintf(&p, "%s/ingot", xdg);
        else if (home && *home)
                r = asprintf(&p, "%s/.cache/ingot", home);
        else
                return -ENOENT;
        if (r < 0)
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
                if (*end != '\0' || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno == EPERM))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", work_root, de->d_name);
                log_debug("removing '%s' left by an interrupted build", path);
                rm_rf(path);
        }
        closedir(d);
}

/* Partial images of this name left by killed builds (their PID gone). */
static void sweep_stale_partials(const struct spec *s)
{
        DIR *d = opendir(s->output_dir);
        const char *base = strrchr(s->output_image, '/');
        struct dirent *de;
        char prefix[512];

        if (!d)
                return;
        snprintf(prefix, sizeof(prefix), ".%s.partial-", base ? base + 1 : s->output_image);
        while ((de = readdir(d))) {
                char path[4096];
                long pid;

                if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
                        continue;
                pid = strtol(de->d_name + strlen(prefix), NULL, 10);
                if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", s->output_dir, de->d_name);
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
        c->start = now();
        c->progress = progress;
        if (progress && log_get_level() >= LOG_LEVEL_NORMAL)
                fprintf(stderr, "  %-8s …\r", name);
}

static void stage_end(struct stage_clock *c, const char *detail)
{
        log_info("%-8s %6.1fs%s%s", c->name, now() - c->start, detail ? "  " : "", detail ? detail : "");
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
        double t = now();
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
                r = verity_format(image, data->start, data->size, hash->start, hash->size, s->seed, e->work,
                                  e->verity);
                if (r < 0)
                        return r;
                if (asprintf(&cmdline, "%s ingot.verity.roothash=%s", s->cmdline, e->verity->root_hash) < 0)
                        return log_error_errno(-ENOMEM, "out of memory");
                log_info("verity   %6.1fs  root hash %s", now() - t, e->verity->root_hash);
        }
        return boot_stage_esp(s, cmdline, e->root->kernel, e->root->initrd, e->esp);
}

int build_image(const struct spec *s, const struct build_options *o)
{
        _cleanup_(rootfs_freep) struct rootfs *root = NULL;
        _cleanup_free_ char *cache = NULL, *work_root = NULL, *work = NULL, *esp = NULL, *raw = NULL, *qcow = NULL;
        const char *base = strrchr(s->output_image, '/');
        struct stage_clock c;
        struct esp_stage esp_ctx;
        struct verity_result verity = { 0 };
        struct sigaction sa = { .sa_handler = on_signal };
        double t0 = now();
        int r;

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
        sweep_stale_partials(s);
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

        if (rename(raw, s->output_image) < 0) {
                r = log_error_errno(-errno, "cannot rename the image into place as '%s': %m", s->output_image);
                goto fail;
        }
        partial_path[0] = '\0';
        rm_rf(work);
        log_info("built    %6.1fs  %s", now() - t0, s->output_image);
        return 0;

fail:
        unlink(raw);
        partial_path[0] = '\0';
        rm_rf(work);
        return r;
}
