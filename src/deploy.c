/* Owns the deploy procedure (see deploy.h): resolve and pull the image,
 * adopt or clean what a previous run left, then the rolling replacement
 * that never lets the healthy count drop below Count - MaxUnavailable. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "catalog.h"
#include "deploy.h"
#include "deployfile.h"
#include "instance.h"
#include "pull.h"
#include "shared/fileio.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/time-util.h"
#include "state.h"
#include "store.h"

#define STOP_GRACE_SEC 10
#define ADOPT_HEALTH_SEC 2

static const char *str_or_empty(const char *s)
{
        return s ? s : "";
}

/* The instance named on the command line; an unknown id is bad input. */
static int get_instance(struct state *st, const char *id, struct state_instance *ret)
{
        int r = state_instance_get(st, id, ret);

        if (r == -ENOENT)
                return log_error_errno(-EBADMSG, "no instance '%s'", id);
        return r;
}

static int instance_dir(const char *state_dir, const char *id, char **ret)
{
        if (asprintf(ret, "%s/instances/%s", state_dir, id) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        return 0;
}

/* One ingot at a time changes a state directory's instances: deploy,
 * rollback and terminate hold an exclusive flock on STATEDIR/lock for their
 * whole run. The kernel drops it when ingot dies, however it dies, and
 * QEMU never inherits it (O_CLOEXEC). The holder's pid is written in the
 * file only to name it to whoever waits. */
static int lock_state_dir(const char *dir, bool must, int *ret_fd)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        char pid[32] = "";
        ssize_t n;

        if (asprintf(&path, "%s/lock", dir) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return log_error_errno(-errno, "cannot lock '%s': %m", path);
                n = pread(fd, pid, sizeof(pid) - 1, 0);
                pid[n > 0 ? n : 0] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
                if (!must)
                        return -EBUSY;
                return log_error_errno(-EBUSY,
                                       "another ingot (pid %s) is changing the deployments in '%s'; try again when "
                                       "it has finished",
                                       pid[0] ? pid : "unknown", dir);
        }
        n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
                return log_error_errno(-errno, "cannot write '%s': %m", path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

enum lock_mode {
        LOCK_NONE,   /* read only */
        LOCK_TRY,    /* lock if free; *ret_lock stays -1 when another holds it */
        LOCK_MUST,   /* lock or fail with -EBUSY */
};

static int open_state(const char *dir, enum lock_mode mode, struct state **ret_state, char **ret_dir, int *ret_lock)
{
        _cleanup_free_ char *d = NULL;
        _cleanup_(state_closep) struct state *st = NULL;
        int r;

        if (dir)
                d = strdup(dir);
        else {
                r = state_default_dir(&d);
                if (r < 0)
                        return log_error_errno(r, "no state directory: set --state-dir, $XDG_STATE_HOME or $HOME");
        }
        if (!d)
                return log_error_errno(-ENOMEM, "out of memory");
        r = state_open(d, &st);
        if (r < 0)
                return r;
        {
                _cleanup_free_ char *idir = NULL;

                r = instance_dir(d, "", &idir);
                if (r < 0)
                        return r;
                r = mkdir_p(idir, 0700);
                if (r < 0)
                        return log_error_errno(r, "cannot create '%s': %m", idir);
        }
        if (mode != LOCK_NONE) {
                *ret_lock = -EBADF;
                r = lock_state_dir(d, mode == LOCK_MUST, ret_lock);
                if (r < 0 && !(r == -EBUSY && mode == LOCK_TRY))
                        return r;
        }
        *ret_state = TAKE_PTR(st);
        *ret_dir = TAKE_PTR(d);
        return 0;
}

/* Stops and removes one instance and its row. */
static int destroy_instance(struct state *st, const struct state_instance *i)
{
        int r;

        (void)state_instance_update(st, i->id, STATE_INSTANCE_STOPPING, i->pid, i->health);
        r = instance_stop(i->dir, STOP_GRACE_SEC);
        if (r < 0)
                return r;
        r = instance_remove(i->dir);
        if (r < 0 && r != -ENOENT)
                return log_error_errno(r, "cannot remove instance '%s' in '%s': %m", i->id, i->dir);
        r = state_instance_delete(st, i->id);
        if (r < 0 && r != -ENOENT)
                return r;
        return 0;
}

/* Adopts running instances, forgets dead ones, and stops QEMUs in instance
 * directories that have no row (a run killed between creating the
 * directory and recording it, or one whose row was never committed). */
static int reconcile(struct state *st, const char *state_dir)
{
        struct state_instance *all = NULL;
        size_t n = 0;
        _cleanup_free_ char *idir = NULL;
        DIR *d;
        struct dirent *de;
        int r;

        r = state_instance_list(st, NULL, &all, &n);
        if (r < 0)
                return r;
        for (size_t k = 0; k < n; k++) {
                enum instance_status s;
                pid_t pid = 0;

                r = instance_probe(all[k].dir, &s, &pid);
                if (r < 0 || s == INSTANCE_EXITED || s == INSTANCE_MISSING) {
                        log_info("instance %s (%s) is gone: removing it", all[k].id, all[k].deployment);
                        (void)instance_stop(all[k].dir, 1);
                        (void)instance_remove(all[k].dir);
                        r = state_instance_delete(st, all[k].id);
                        if (r < 0 && r != -ENOENT)
                                goto out;
                        continue;
                }
                if (pid != all[k].pid)
                        (void)state_instance_update(st, all[k].id, all[k].state, pid, all[k].health);
        }

        if (instance_dir(state_dir, "", &idir) < 0) {
                r = -ENOMEM;
                goto out;
        }
        d = opendir(idir);
        if (d) {
                while ((de = readdir(d))) {
                        _cleanup_free_ char *p = NULL;
                        bool known = false;

                        if (de->d_name[0] == '.')
                                continue;
                        for (size_t k = 0; k < n && !known; k++)
                                known = streq(all[k].id, de->d_name);
                        if (known)
                                continue;
                        if (asprintf(&p, "%s%s", idir, de->d_name) < 0)
                                continue;
                        log_info("instance directory '%s' is not in the state: stopping and removing it", p);
                        if (instance_stop(p, 2) >= 0)
                                (void)instance_remove(p);
                }
                closedir(d);
        }
        r = 0;
out:
        state_instances_free(all, n);
        return r;
}

static struct instance_health health_of(const struct deployfile *df, unsigned slot)
{
        struct instance_health h = { .check = INSTANCE_CHECK_NONE };

        if (df->health == DEPLOY_HEALTH_HTTP)
                h = (struct instance_health){ .check = INSTANCE_CHECK_HTTP,
                                              .host_port = deployfile_host_port_for(df, df->health_port, slot),
                                              .path = df->health_path };
        else if (df->health == DEPLOY_HEALTH_TCP)
                h = (struct instance_health){ .check = INSTANCE_CHECK_TCP,
                                              .host_port = deployfile_host_port_for(df, df->health_port, slot) };
        h.interval_sec = df->health_interval;
        return h;
}

static bool check_health(struct state *st, const struct deployfile *df, const struct state_instance *i,
                         unsigned timeout)
{
        struct instance_health h = health_of(df, i->slot);
        _cleanup_free_ char *reason = NULL;
        int r;

        r = instance_wait_healthy(i->dir, &h, timeout, NULL, &reason);
        (void)state_instance_update(st, i->id, r >= 0 ? STATE_INSTANCE_HEALTHY : STATE_INSTANCE_UNHEALTHY, i->pid,
                                    r >= 0 ? "healthy" : "unhealthy");
        return r >= 0;
}

struct rollout {
        struct state *st;
        const char *state_dir;
        const struct deployfile *df;
        const struct catalog_record *rec;
        const char *base;
        enum qemu_accel accel;
};

/* Records, creates and starts one new instance; its row first, so a kill at
 * any point leaves either a row the next run probes or a directory it
 * cleans. */
static int start_one(const struct rollout *ro, struct state_instance *ret)
{
        struct state_instance i = { 0 };
        struct instance_port ports[INSTANCE_MAX_PORTS];
        struct state_port sports[INSTANCE_MAX_PORTS];
        _cleanup_free_ char *dir = NULL;
        struct instance_config c;
        unsigned slot;
        pid_t pid = 0;
        enum instance_status s;
        double t0, t1, t2;
        int r;

        if (ro->df->n_ports > INSTANCE_MAX_PORTS)
                return log_error_errno(-E2BIG, "too many ports");
        r = state_new_instance_id(i.id);
        if (r < 0)
                return log_error_errno(r, "cannot make an instance id: %m");
        r = instance_dir(ro->state_dir, i.id, &dir);
        if (r < 0)
                return r;
        r = state_begin(ro->st);
        if (r < 0)
                return r;
        r = state_allocate_slot(ro->st, ro->df->name, deployfile_slots(ro->df), &slot);
        if (r < 0)
                goto rollback;
        for (size_t k = 0; k < ro->df->n_ports; k++) {
                sports[k] = (struct state_port){ .guest = ro->df->ports[k].guest,
                                                 .host = deployfile_host_port(ro->df, k, slot) };
                ports[k] = (struct instance_port){ .guest = sports[k].guest, .host = sports[k].host };
        }
        i.deployment = ro->df->name;
        i.image_id = ro->rec->image_id;
        i.version = ro->rec->version;
        i.slot = slot;
        i.ports = sports;
        i.n_ports = ro->df->n_ports;
        i.dir = dir;
        i.state = STATE_INSTANCE_STARTING;
        r = state_instance_insert(ro->st, &i);
        if (r < 0)
                goto rollback;
        r = state_commit(ro->st);
        if (r < 0)
                goto rollback;

        c = (struct instance_config){
                .id = i.id,
                .dir = dir,
                .base = ro->base,
                .memory_mib = (unsigned)(ro->df->memory >> 20),
                .cpus = ro->df->cpus,
                .ports = ports,
                .n_ports = ro->df->n_ports,
                .hostname = i.id,
                .accel = ro->accel,
        };
        t0 = now_mono();
        r = instance_create(&c);
        t1 = now_mono();
        if (r >= 0)
                r = instance_start(dir);
        t2 = now_mono();
        if (r < 0) {
                if (access(dir, F_OK) == 0) {
                        (void)instance_stop(dir, 1);
                        (void)instance_remove(dir);
                }
                (void)state_instance_delete(ro->st, i.id);
                return r;
        }
        if (instance_probe(dir, &s, &pid) < 0)
                pid = 0;
        (void)state_instance_update(ro->st, i.id, STATE_INSTANCE_RUNNING, pid, NULL);
        log_info("started instance %s (slot %u) of %s: overlay %.2f s, qemu start %.2f s", i.id, slot,
                 ro->rec->image_id, t1 - t0, t2 - t1);
        *ret = (struct state_instance){ .slot = slot, .pid = pid, .dir = TAKE_PTR(dir) };
        memcpy(ret->id, i.id, sizeof(i.id));
        return 0;

rollback:
        state_rollback(ro->st);
        return r;
}

static void fail_deployment(struct state *st, const char *name, const char *reason)
{
        (void)state_deployment_set_state(st, name, STATE_DEPLOYMENT_FAILED, reason);
}

void rollout_next_step(const struct rollout_counts *c, struct rollout_step *ret)
{
        unsigned old_h = c->old_healthy, new_n = c->new_n;
        unsigned max_total = c->count + c->surge, min_healthy = c->count - c->unavailable;
        unsigned want, room, budget, x;

        *ret = (struct rollout_step){ 0 };
        /* an old instance that is not healthy serves nobody: it goes first */
        ret->stop_unhealthy = c->old_unhealthy;
        /* old ones beyond Count, now that the new ones are healthy */
        if (old_h + new_n > c->count) {
                x = old_h + new_n - c->count;
                if (x > old_h)
                        x = old_h;
                old_h -= x;
                ret->stop_healthy += x;
        }
        /* the new instances still wanted start in the room MaxSurge leaves;
         * when that is short, old ones stop to make more, as far as
         * MaxUnavailable allows (every instance counted here is healthy) */
        want = c->count > new_n ? c->count - new_n : 0;
        room = max_total > old_h + new_n ? max_total - (old_h + new_n) : 0;
        if (want > room) {
                budget = old_h + new_n > min_healthy ? old_h + new_n - min_healthy : 0;
                x = want - room;
                if (x > budget)
                        x = budget;
                if (x > old_h)
                        x = old_h;
                old_h -= x;
                room += x;
                ret->stop_healthy += x;
        }
        ret->start = want < room ? want : room;
}

/* Whether the instance was made with the file's Memory=, CPUs= and Ports=
 * (for its slot): a change of any is a change, and instances are replaced,
 * never modified. */
static bool runs_as_file(const struct deployfile *df, const struct state_instance *i)
{
        struct instance_port ports[INSTANCE_MAX_PORTS];
        struct instance_config c = {
                .memory_mib = (unsigned)(df->memory >> 20),
                .cpus = df->cpus,
                .ports = ports,
                .n_ports = df->n_ports,
        };

        if (df->n_ports > INSTANCE_MAX_PORTS)
                return false;
        for (size_t k = 0; k < df->n_ports; k++)
                ports[k] = (struct instance_port){ .guest = df->ports[k].guest,
                                                   .host = deployfile_host_port(df, k, i->slot) };
        return instance_config_matches(i->dir, &c) > 0;
}

/* The index of an old instance still running that is (un)healthy, or -1. */
static int find_old(const bool *is_old, const bool *gone, const bool *healthy, size_t n, bool want_healthy)
{
        for (size_t k = 0; k < n; k++)
                if (is_old[k] && !gone[k] && healthy[k] == want_healthy)
                        return (int)k;
        return -1;
}

static int rollout(const struct rollout *ro)
{
        const struct deployfile *df = ro->df;
        struct state_instance *cur = NULL, fresh[DEPLOYFILE_COUNT_MAX * 2];
        size_t n_cur = 0, n_fresh = 0, undo_from = 0;
        bool *is_old = NULL, *gone = NULL, *healthy = NULL;
        struct rollout_counts c = { .count = df->count, .surge = df->max_surge, .unavailable = df->max_unavailable };
        int r;

        r = state_instance_list(ro->st, df->name, &cur, &n_cur);
        if (r < 0)
                return r;
        is_old = calloc(n_cur + 1, sizeof(bool));
        gone = calloc(n_cur + 1, sizeof(bool));
        healthy = calloc(n_cur + 1, sizeof(bool));
        if (!is_old || !gone || !healthy) {
                r = log_error_errno(-ENOMEM, "out of memory");
                goto out;
        }
        for (size_t k = 0; k < n_cur; k++) {
                bool same = streq(cur[k].image_id, ro->rec->image_id);

                if (same && !runs_as_file(df, &cur[k])) {
                        log_info("instance %s runs with other Memory=, CPUs= or Ports= than '%s': replacing it",
                                 cur[k].id, df->path);
                        same = false;
                }
                /* an instance of the target that a killed run started may
                 * still be booting: give it the boot timeout */
                healthy[k] = check_health(ro->st, df, &cur[k],
                                          same && cur[k].state != STATE_INSTANCE_HEALTHY ? df->boot_timeout
                                                                                         : ADOPT_HEALTH_SEC);
                if (same && healthy[k] && c.new_n < df->count) {
                        c.new_n++;
                        continue;
                }
                if (same && !healthy[k]) {
                        log_info("instance %s of %s is not healthy: replacing it", cur[k].id, cur[k].image_id);
                        (void)destroy_instance(ro->st, &cur[k]);
                        gone[k] = true;
                        continue;
                }
                is_old[k] = true;
                if (healthy[k])
                        c.old_healthy++;
                else
                        c.old_unhealthy++;
        }
        if (c.old_healthy + c.old_unhealthy == 0 && c.new_n == df->count) {
                r = 1; /* up to date */
                goto out;
        }

        while (c.old_healthy + c.old_unhealthy > 0 || c.new_n < df->count) {
                struct rollout_step step;
                size_t first = n_fresh;

                undo_from = first;

                rollout_next_step(&c, &step);
                if (step.stop_unhealthy + step.stop_healthy + step.start == 0) {
                        r = log_error_errno(-EDEADLK, "deployment %s: the rollout cannot move", df->name);
                        goto out;
                }
                for (unsigned j = 0; j < step.stop_unhealthy + step.stop_healthy; j++) {
                        bool h = j >= step.stop_unhealthy;
                        int v = find_old(is_old, gone, healthy, n_cur, h);

                        if (v < 0)
                                break;
                        log_info("stopping instance %s of %s", cur[v].id, cur[v].image_id);
                        r = destroy_instance(ro->st, &cur[v]);
                        if (r < 0)
                                goto out;
                        gone[v] = true;
                        if (h)
                                c.old_healthy--;
                        else
                                c.old_unhealthy--;
                }
                for (unsigned j = 0; j < step.start; j++) {
                        r = start_one(ro, &fresh[n_fresh]);
                        if (r < 0) {
                                fail_deployment(ro->st, df->name, "an instance could not be started");
                                goto undo;
                        }
                        n_fresh++;
                }
                for (size_t j = first; j < n_fresh; j++) {
                        struct instance_health h = health_of(df, fresh[j].slot);
                        _cleanup_free_ char *reason = NULL;
                        double secs = 0;

                        r = instance_wait_healthy(fresh[j].dir, &h, df->boot_timeout, &secs, &reason);
                        if (r < 0) {
                                log_error("instance %s did not become healthy: %s", fresh[j].id, strna(reason));
                                fail_deployment(ro->st, df->name, reason ? reason : "not healthy");
                                goto undo;
                        }
                        (void)state_instance_update(ro->st, fresh[j].id, STATE_INSTANCE_HEALTHY, fresh[j].pid,
                                                    "healthy");
                        log_info("instance %s is healthy after %.1f s", fresh[j].id, secs);
                        c.new_n++;
                }
        }
        r = 0;
        goto out;

undo:
        /* The new instances of this step go; those of earlier steps are
         * healthy and serve in place of old ones already stopped, so they
         * stay: removing them would drop below Count - MaxUnavailable. */
        for (size_t j = undo_from; j < n_fresh; j++) {
                struct state_instance i = { .pid = fresh[j].pid, .dir = fresh[j].dir };
                memcpy(i.id, fresh[j].id, sizeof(i.id));
                (void)destroy_instance(ro->st, &i);
        }
        if (r >= 0)
                r = -ETIMEDOUT;
        if (r == -EBADMSG)
                r = -EIO;
out:
        for (size_t j = 0; j < n_fresh; j++)
                free(fresh[j].dir);
        free(is_old);
        free(gone);
        free(healthy);
        state_instances_free(cur, n_cur);
        return r;
}

static int deploy_file(const char *file, const struct deploy_options *o)
{
        _cleanup_close_ int lock = -EBADF;
        _cleanup_(deployfile_freep) struct deployfile *df = NULL;
        _cleanup_(state_closep) struct state *st = NULL;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_free_ char *state_dir = NULL, *base = NULL, *abs = NULL;
        struct state_deployment old = { 0 };
        struct state_instance *own = NULL;
        size_t n_own = 0;
        uint16_t skip[1024];
        size_t n_skip = 0;
        const char *ref;
        struct image_pull_stats pst = { 0 };
        double t0, t1;
        bool had_old;
        int r;

        r = deployfile_load(file, &df);
        if (r < 0)
                return r;
        abs = realpath(file, NULL);
        if (!abs)
                return log_error_errno(-errno, "cannot resolve '%s': %m", file);
        ref = o->image ? o->image : df->image;

        r = open_state(o->state_dir, LOCK_MUST, &st, &state_dir, &lock);
        if (r < 0)
                return r;
        r = reconcile(st, state_dir);
        if (r < 0)
                return r;

        /* the ports the deployment's own instances hold are not "in use" */
        r = state_instance_list(st, df->name, &own, &n_own);
        if (r < 0)
                return r;
        for (size_t k = 0; k < n_own; k++)
                for (size_t p = 0; p < own[k].n_ports && n_skip < ELEMENTSOF(skip); p++)
                        skip[n_skip++] = own[k].ports[p].host;
        state_instances_free(own, n_own);
        r = deployfile_check_ports_free(df, skip, n_skip);
        if (r < 0)
                return r;

        t0 = now_mono();
        r = catalog_store_open(o->store_url, false, 0, &s);
        if (r < 0)
                return r == -EINVAL ? -EBADMSG : r == -EBADMSG ? -EIO : r;
        r = catalog_resolve(s, ref, &rec);
        if (r < 0) /* a bad reference is bad input; a corrupt record is the store's failure, as on pull */
                return r == -EINVAL ? -EBADMSG : r == -EBADMSG ? -EIO : r;
        if (rec->state == CATALOG_STATE_DEREGISTERED)
                return log_error_errno(-EPERM, "%s (%s@%s) is deregistered: refusing to deploy it", rec->image_id,
                                       rec->name, rec->version);
        if (streq(catalog_record_state_string(rec, catalog_now_ms()), "deprecated") && !o->allow_deprecated)
                return log_error_errno(-EPERM, "%s (%s@%s) is deprecated: pass --allow-deprecated to deploy it",
                                       rec->image_id, rec->name, rec->version);
        t1 = now_mono();
        r = image_pull(s, rec, NULL, &base, NULL, NULL, &pst);
        if (r < 0)
                return r == -EBADMSG ? -EIO : r; /* a corrupt store is no bad input: exit 1, as pull */
        log_info("image %s (%s@%s): resolved in %.2f s, %s in %.2f s", rec->image_id, rec->name, rec->version,
                 t1 - t0, pst.cached ? "in the cache" : "pulled and verified", now_mono() - t1);

        had_old = state_deployment_get(st, df->name, &old) >= 0;
        {
                struct state_deployment d = {
                        .name = df->name,
                        .file = abs,
                        .image_id = rec->image_id,
                        .image_ref = (char *)ref,
                        .version = rec->version,
                        .state = had_old && old.state == STATE_DEPLOYMENT_DEPLOYED &&
                                                 streq_ptr(old.image_id, rec->image_id)
                                         ? STATE_DEPLOYMENT_DEPLOYED
                                         : STATE_DEPLOYMENT_DEPLOYING,
                };
                r = state_deployment_upsert(st, &d);
        }
        state_deployment_done(&old);
        if (r < 0)
                return r;

        struct rollout ro = {
                .st = st,
                .state_dir = state_dir,
                .df = df,
                .rec = rec,
                .base = base,
                .accel = QEMU_ACCEL_AUTO,
        };
        /* the accelerator is probed once per run */
        ro.accel = qemu_probe_accel(5);
        r = rollout(&ro);
        if (r < 0)
                return r;
        if (r == 1) {
                (void)state_deployment_set_state(st, df->name, STATE_DEPLOYMENT_DEPLOYED, NULL);
                printf("deployment %s: up to date (%u instances of %s)\n", df->name, df->count, rec->image_id);
                return 0;
        }
        r = state_begin(st);
        if (r < 0)
                return r;
        r = state_deployment_set_state(st, df->name, STATE_DEPLOYMENT_DEPLOYED, NULL);
        if (r >= 0)
                r = state_history_append(st, df->name, rec->image_id, rec->version, NULL);
        if (r >= 0)
                r = state_commit(st);
        if (r < 0) {
                state_rollback(st);
                return r;
        }
        printf("deployment %s: deployed %u instances of %s (%s@%s)\n", df->name, df->count, rec->image_id, rec->name,
               rec->version);
        return 0;
}

int deploy_run(const char *file, const struct deploy_options *o)
{
        return deploy_file(file, o);
}

int deploy_rollback(const char *name, const char *to, const struct deploy_options *o)
{
        _cleanup_(state_closep) struct state *st = NULL;
        _cleanup_free_ char *state_dir = NULL, *file = NULL, *image = NULL;
        struct state_deployment d = { 0 };
        struct state_history_entry *h = NULL;
        struct deploy_options o2 = *o;
        size_t n = 0;
        int r;

        r = open_state(o->state_dir, LOCK_NONE, &st, &state_dir, NULL);
        if (r < 0)
                return r;
        r = state_deployment_get(st, name, &d);
        if (r == -ENOENT)
                return log_error_errno(-EBADMSG, "no deployment '%s'", name);
        if (r < 0)
                return r;
        file = strdup(d.file);
        r = state_history_list(st, name, &h, &n);
        if (r >= 0) {
                if (to)
                        image = strdup(to);
                else {
                        /* the newest entry that is not what runs now */
                        for (size_t k = 0; k < n && !image; k++)
                                if (!streq(h[k].image_id, d.image_id))
                                        image = strdup(h[k].image_id);
                        if (!image)
                                r = log_error_errno(-ENOENT, "deployment %s: no previous image to roll back to",
                                                    name);
                }
        }
        state_history_free(h, n);
        state_deployment_done(&d);
        if (r < 0)
                return r;
        if (!file || !image)
                return log_error_errno(-ENOMEM, "out of memory");
        st = state_close(st);
        o2.image = image;
        o2.state_dir = state_dir;
        o2.allow_deprecated = true;
        log_info("deployment %s: rolling back to %s", name, image);
        return deploy_file(file, &o2);
}

static const char *status_word(const struct state_instance *i, enum instance_status s)
{
        if (s == INSTANCE_RUNNING)
                return state_instance_state_to_string(i->state);
        return instance_status_to_string(s);
}

/* One line per deployment: what it runs or was last asked to run, and for
 * a failed one why, in two lines: the cause and the serial log's last line
 * (the whole tail is in the deploy's own error). */
static void print_deployments(struct state *st, const char *name)
{
        struct state_deployment *d = NULL;
        size_t n = 0;

        if (state_deployment_list(st, &d, &n) < 0)
                return;
        for (size_t k = 0; k < n; k++) {
                const char *why = d[k].reason, *last;
                size_t len;

                if (name && !streq(d[k].name, name))
                        continue;
                printf("deployment %s: %s, image %s (%s, %s)\n", d[k].name,
                       state_deployment_state_to_string(d[k].state), str_or_empty(d[k].image_ref), d[k].image_id,
                       str_or_empty(d[k].version));
                if (!why)
                        continue;
                len = strcspn(why, "\n");
                printf("  %.*s\n", (int)len, why);
                last = strrchr(why, '\n');
                if (last && last[1])
                        printf("  last serial line: %s\n", last + 1);
        }
        state_deployments_free(d, n);
}

int deploy_ps(const char *state_dir_arg, const char *name, bool json)
{
        _cleanup_close_ int lock = -EBADF;
        _cleanup_(state_closep) struct state *st = NULL;
        _cleanup_free_ char *state_dir = NULL;
        struct state_instance *a = NULL;
        size_t n = 0;
        json_t *arr = NULL;
        int64_t now = catalog_now_ms();
        int r;

        r = open_state(state_dir_arg, LOCK_TRY, &st, &state_dir, &lock);
        if (r < 0)
                return r;
        /* while a deploy runs, it owns the instances: list them as they are */
        if (lock >= 0) {
                r = reconcile(st, state_dir);
                if (r < 0)
                        return r;
        }
        r = state_instance_list(st, name, &a, &n);
        if (r < 0)
                return r;
        if (json)
                arr = json_array();
        else {
                print_deployments(st, name);
                printf("%-20s %-12s %-22s %-10s %-10s %-10s %-16s %s\n", "INSTANCE", "DEPLOYMENT", "IMAGE", "VERSION",
                       "STATE", "HEALTH", "PORTS", "UPTIME");
        }
        for (size_t k = 0; k < n; k++) {
                enum instance_status s = INSTANCE_MISSING;
                char ports[256] = "", *p = ports;
                long up = (long)((now - a[k].created_ms) / 1000);

                (void)instance_probe(a[k].dir, &s, NULL);
                for (size_t j = 0; j < a[k].n_ports; j++)
                        p += snprintf(p, (size_t)(ports + sizeof(ports) - p), "%s%u->%u", j ? "," : "",
                                      a[k].ports[j].host, a[k].ports[j].guest);
                if (json) {
                        json_t *jp = json_array();
                        for (size_t j = 0; j < a[k].n_ports; j++)
                                json_array_append_new(jp, json_pack("{s:i, s:i}", "host", (int)a[k].ports[j].host,
                                                                    "guest", (int)a[k].ports[j].guest));
                        json_array_append_new(
                                arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:i, s:I, s:s}", "instance",
                                               a[k].id, "deployment", a[k].deployment, "image_id", a[k].image_id,
                                               "version", str_or_empty(a[k].version), "state", status_word(&a[k], s),
                                               "health", json_str_or_null(a[k].health), "ports", jp, "pid",
                                               (int)a[k].pid, "uptime_seconds", (json_int_t)up, "dir", a[k].dir));
                } else
                        printf("%-20s %-12s %-22s %-10s %-10s %-10s %-16s %lds\n", a[k].id, a[k].deployment,
                               a[k].image_id, str_or_empty(a[k].version), status_word(&a[k], s), strna(a[k].health),
                               ports, up);
        }
        state_instances_free(a, n);
        if (json) {
                r = json_dumpf(arr, stdout, JSON_INDENT(2));
                json_decref(arr);
                putchar('\n');
                if (r < 0)
                        return log_error_errno(-EIO, "cannot write the result");
        }
        return 0;
}

int deploy_logs(const char *state_dir_arg, const char *id, bool follow)
{
        _cleanup_(state_closep) struct state *st = NULL;
        _cleanup_free_ char *state_dir = NULL, *log = NULL;
        struct state_instance i = { 0 };
        FILE *f;
        char buf[65536];
        int r;

        r = open_state(state_dir_arg, LOCK_NONE, &st, &state_dir, NULL);
        if (r < 0)
                return r;
        r = get_instance(st, id, &i);
        if (r < 0)
                return r;
        r = asprintf(&log, "%s/serial.log", i.dir) < 0 ? -ENOMEM : 0;
        if (r < 0) {
                state_instance_done(&i);
                return log_error_errno(r, "out of memory");
        }
        f = fopen(log, "re");
        if (!f) {
                r = log_error_errno(-errno, "cannot open '%s': %m", log);
                state_instance_done(&i);
                return r;
        }
        for (;;) {
                size_t k = fread(buf, 1, sizeof(buf), f);
                enum instance_status s;

                if (k > 0) {
                        fwrite(buf, 1, k, stdout);
                        continue;
                }
                fflush(stdout);
                if (!follow)
                        break;
                if (instance_probe(i.dir, &s, NULL) < 0 || s != INSTANCE_RUNNING) {
                        k = fread(buf, 1, sizeof(buf), f);
                        fwrite(buf, 1, k, stdout);
                        break;
                }
                clearerr(f);
                usleep(300000);
        }
        fclose(f);
        state_instance_done(&i);
        return 0;
}

int deploy_terminate(const char *state_dir_arg, const char *id, const char *deployment)
{
        _cleanup_close_ int lock = -EBADF;
        _cleanup_(state_closep) struct state *st = NULL;
        _cleanup_free_ char *state_dir = NULL;
        struct state_instance *a = NULL;
        size_t n = 0;
        int r, ret = 0;

        r = open_state(state_dir_arg, LOCK_MUST, &st, &state_dir, &lock);
        if (r < 0)
                return r;
        if (id) {
                struct state_instance i = { 0 };

                r = get_instance(st, id, &i);
                if (r < 0)
                        return r;
                r = destroy_instance(st, &i);
                if (r >= 0)
                        printf("terminated %s\n", i.id);
                state_instance_done(&i);
                return r;
        }
        {
                struct state_deployment d = { 0 };
                r = state_deployment_get(st, deployment, &d);
                if (r == -ENOENT)
                        return log_error_errno(-EBADMSG, "no deployment '%s'", deployment);
                if (r < 0)
                        return r;
                state_deployment_done(&d);
        }
        r = state_instance_list(st, deployment, &a, &n);
        if (r < 0)
                return r;
        for (size_t k = 0; k < n; k++) {
                r = destroy_instance(st, &a[k]);
                if (r < 0)
                        ret = r;
                else
                        printf("terminated %s\n", a[k].id);
        }
        state_instances_free(a, n);
        if (ret < 0)
                return ret;
        return state_deployment_set_state(st, deployment, STATE_DEPLOYMENT_TERMINATED, NULL);
}
