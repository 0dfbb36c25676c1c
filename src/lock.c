/* Store locks (see lock.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "catalog.h"
#include "lock.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/parse-util.h"
#include "shared/proc-util.h"
#include "shared/strv.h"

struct store_lock {
        struct store *store;
        enum store_lock_kind kind;
        char *op;
        char *key;
        char boot_id[37];
        char host[256];
        uint64_t start_time;
        int64_t created_ms, written_ms;
};

static const char *kind_name(enum store_lock_kind k)
{
        return k == STORE_LOCK_EXCLUSIVE ? "exclusive" : "shared";
}

static int lock_write(struct store_lock *l)
{
        char created[40], refreshed[40];
        int64_t now = catalog_now_ms();
        json_t *j;
        int r;

        j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:s, s:s}", "kind", kind_name(l->kind), "operation", l->op,
                      "hostname", l->host, "boot_id", l->boot_id, "pid", (json_int_t)getpid(), "start_time",
                      json_u64(l->start_time), "created", catalog_format_time(l->created_ms, created, sizeof(created)),
                      "refreshed", catalog_format_time(now, refreshed, sizeof(refreshed)));
        if (!j)
                return log_error_errno(-ENOMEM, "out of memory");
        r = catalog_put_json(l->store, l->key, j);
        json_decref(j);
        if (r >= 0)
                l->written_ms = now;
        return r;
}

/* Who holds the lock described by j, for messages. */
static void describe(json_t *j, char *buf, size_t size)
{
        snprintf(buf, size, "%s (pid %lld on %s, since %s)",
                 strna(json_string_value(json_object_get(j, "operation"))),
                 (long long)json_integer_value(json_object_get(j, "pid")),
                 strna(json_string_value(json_object_get(j, "hostname"))),
                 strna(json_string_value(json_object_get(j, "created"))));
}

/* Is the lock object j (listed with mtime, seconds) held by nobody? */
static bool is_stale(const struct store_lock *l, json_t *j, int64_t mtime, int64_t now_ms)
{
        const char *boot = json_string_value(json_object_get(j, "boot_id"));
        json_int_t pid = json_integer_value(json_object_get(j, "pid"));
        json_t *st = json_object_get(j, "start_time");
        int64_t refreshed = -1;

        if (boot && streq(boot, l->boot_id) && pid > 0) {
                uint64_t t;

                if (proc_start_time((pid_t)pid, &t) < 0)
                        return !pid_is_alive((pid_t)pid);
                return !json_is_integer(st) || (uint64_t)json_integer_value(st) != t;
        }
        if (catalog_parse_time(strna(json_string_value(json_object_get(j, "refreshed"))), now_ms, &refreshed) < 0)
                refreshed = mtime * 1000; /* unreadable: judged by the object's age */
        return now_ms - refreshed > (int64_t)STORE_LOCK_STALE_SEC * 1000;
}

/* Looks for a live lock that conflicts with l; removes stale ones on the
 * way. 1 with *holder filled when there is one, 0 when none. */
static int find_conflict(struct store_lock *l, char *holder, size_t size)
{
        _cleanup_strv_free_ char **keys = NULL;
        _cleanup_free_ int64_t *mtimes = NULL;
        int r;

        r = store_list(l->store, "locks/", &keys, &mtimes);
        if (r < 0)
                return r;
        for (size_t i = 0; keys && keys[i]; i++) {
                const char *k = keys[i];
                json_t *j = NULL;

                if (streq(k, l->key))
                        continue;
                if (l->kind == STORE_LOCK_SHARED && strncmp(k, "locks/shared-", 13) == 0)
                        continue; /* shared locks do not conflict */
                r = catalog_get_json(l->store, k, &j);
                if (r == -ENOENT)
                        continue; /* released since the listing */
                if (r < 0 && r != -EBADMSG)
                        return r;
                if (is_stale(l, j, mtimes[i], catalog_now_ms())) {
                        char who[512];

                        describe(j, who, sizeof(who));
                        log_info("removing the stale lock '%s' of %s, which is gone", k, who);
                        json_decref(j);
                        r = store_remove(l->store, k);
                        if (r < 0)
                                return r;
                        continue;
                }
                describe(j, holder, size);
                json_decref(j);
                return 1;
        }
        return 0;
}

static unsigned wait_limit(void)
{
        const char *e = getenv("INGOT_LOCK_WAIT");
        uint64_t v;

        if (!e)
                return STORE_LOCK_WAIT_SEC;
        if (parse_uint64(e, &v) >= 0 && v < 86400 * 7)
                return (unsigned)v;
        log_warning("$INGOT_LOCK_WAIT='%s' is not a number of seconds below a week: waiting the default %us", e,
                    STORE_LOCK_WAIT_SEC);
        return STORE_LOCK_WAIT_SEC;
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int store_lock_take(struct store *s, enum store_lock_kind kind, const char *op, struct store_lock **ret)
{
        _cleanup_(store_lock_releasep) struct store_lock *l = NULL;
        uint8_t rnd[8];
        char hex[17], holder[512] = "";
        unsigned limit = wait_limit();
        int64_t start = catalog_now_ms();
        bool said = false;
        int r;

        l = calloc(1, sizeof(*l));
        if (!l)
                return log_error_errno(-ENOMEM, "out of memory");
        l->store = s;
        l->kind = kind;
        l->op = strdup(op);
        if (!l->op)
                return log_error_errno(-ENOMEM, "out of memory");
        if (boot_id_get(l->boot_id) < 0)
                snprintf(l->boot_id, sizeof(l->boot_id), "unknown");
        if (gethostname(l->host, sizeof(l->host) - 1) < 0)
                snprintf(l->host, sizeof(l->host), "unknown");
        (void)proc_start_time(getpid(), &l->start_time);
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                return log_error_errno(-EIO, "cannot draw a lock id: %m");
        if (asprintf(&l->key, "locks/%s-%.8s-%ld-%s.json", kind_name(kind), l->boot_id, (long)getpid(),
                     hex_encode(rnd, sizeof(rnd), hex)) < 0) {
                l->key = NULL;
                return log_error_errno(-ENOMEM, "out of memory");
        }
        l->created_ms = catalog_now_ms();

        for (unsigned attempt = 0;; attempt++) {
                r = lock_write(l);
                if (r < 0)
                        return r;
                r = find_conflict(l, holder, sizeof(holder));
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                /* back off: keeping ours while waiting could hold the
                 * other one up for as long as it holds us up */
                r = store_remove(s, l->key);
                if (r < 0)
                        return r;
                if (catalog_now_ms() - start >= (int64_t)limit * 1000) {
                        free(TAKE_PTR(l->key));
                        return log_error_errno(-EBUSY, "the store '%s' is locked by %s: %s did not run (waited %us)",
                                               s->url, holder, op, limit);
                }
                if (!said) {
                        log_info("waiting for %s to finish", holder);
                        said = true;
                }
                test_point("lock-wait");
                rnd[0] = 0;
                (void)getrandom(rnd, 2, 0);
                sleep_ms(200 + (unsigned)(rnd[0] | rnd[1] << 8) % (attempt < 5 ? 300 : 1800));
        }
        *ret = TAKE_PTR(l);
        return 0;
}

int store_lock_refresh(struct store_lock *l)
{
        int r;

        if (!l || catalog_now_ms() - l->written_ms < (int64_t)STORE_LOCK_REFRESH_SEC * 1000)
                return 0;
        r = store_exists(l->store, l->key);
        if (r < 0)
                return r;
        if (r == 0)
                return log_error_errno(-ENOLCK, "the %s lock '%s' was removed by someone who judged it stale",
                                       kind_name(l->kind), l->key);
        return lock_write(l);
}

struct store_lock *store_lock_release(struct store_lock *l)
{
        if (!l)
                return NULL;
        if (l->key)
                (void)store_remove(l->store, l->key);
        free(l->key);
        free(l->op);
        free(l);
        return NULL;
}
