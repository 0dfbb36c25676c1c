/* Owns the deploy state database: opening it durable (WAL, synchronous=FULL,
 * foreign keys, a busy timeout), the schema and its numbered migrations,
 * transactions, and the rows for deployments, their history and their
 * instances. SQLite is confined here; its result codes become -errno at the
 * call site, logged once with the database path. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "state.h"

/* How long a writer waits for another ingot holding the lock. */
#define STATE_BUSY_TIMEOUT_MS 10000

struct state {
        sqlite3 *db;
        char *path;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize);
#define _cleanup_stmt_ _cleanup_(sqlite3_finalizep)

static const char *const deployment_state_table[_STATE_DEPLOYMENT_MAX] = {
        [STATE_DEPLOYMENT_DEPLOYING] = "deploying",
        [STATE_DEPLOYMENT_DEPLOYED] = "deployed",
        [STATE_DEPLOYMENT_FAILED] = "failed",
        [STATE_DEPLOYMENT_TERMINATED] = "terminated",
};

static const char *const instance_state_table[_STATE_INSTANCE_MAX] = {
        [STATE_INSTANCE_STARTING] = "starting", [STATE_INSTANCE_RUNNING] = "running",
        [STATE_INSTANCE_HEALTHY] = "healthy",   [STATE_INSTANCE_UNHEALTHY] = "unhealthy",
        [STATE_INSTANCE_STOPPING] = "stopping", [STATE_INSTANCE_STOPPED] = "stopped",
        [STATE_INSTANCE_FAILED] = "failed",
};

const char *state_deployment_state_to_string(enum state_deployment_state s)
{
        return s >= 0 && s < _STATE_DEPLOYMENT_MAX ? deployment_state_table[s] : NULL;
}

enum state_deployment_state state_deployment_state_from_string(const char *s)
{
        for (int i = 0; s && i < _STATE_DEPLOYMENT_MAX; i++)
                if (streq(deployment_state_table[i], s))
                        return (enum state_deployment_state)i;
        return _STATE_DEPLOYMENT_INVALID;
}

const char *state_instance_state_to_string(enum state_instance_state s)
{
        return s >= 0 && s < _STATE_INSTANCE_MAX ? instance_state_table[s] : NULL;
}

enum state_instance_state state_instance_state_from_string(const char *s)
{
        for (int i = 0; s && i < _STATE_INSTANCE_MAX; i++)
                if (streq(instance_state_table[i], s))
                        return (enum state_instance_state)i;
        return _STATE_INSTANCE_INVALID;
}

/* Migration n takes the schema from version n to n + 1. Never edit one
 * that has shipped; add the next. */
static const char *const migrations[] = {
        /* 0 → 1 */
        "CREATE TABLE deployments ("
        "  name TEXT PRIMARY KEY NOT NULL,"
        "  file TEXT,"
        "  image_id TEXT,"
        "  image_ref TEXT,"
        "  version TEXT,"
        "  state TEXT NOT NULL CHECK (state IN ('deploying','deployed','failed','terminated')),"
        "  reason TEXT,"
        "  updated INTEGER NOT NULL"
        ");"
        "CREATE TABLE history ("
        "  deployment TEXT NOT NULL REFERENCES deployments(name) ON DELETE CASCADE,"
        "  seq INTEGER NOT NULL CHECK (seq >= 1),"
        "  image_id TEXT NOT NULL,"
        "  version TEXT,"
        "  deployed_at INTEGER NOT NULL,"
        "  PRIMARY KEY (deployment, seq)"
        ");"
        "CREATE TABLE instances ("
        "  id TEXT PRIMARY KEY NOT NULL"
        "    CHECK (length(id) = 19 AND substr(id, 1, 2) = 'i-' AND substr(id, 3) NOT GLOB '*[^0-9a-f]*'),"
        "  deployment TEXT NOT NULL REFERENCES deployments(name) ON DELETE CASCADE,"
        "  image_id TEXT NOT NULL,"
        "  version TEXT,"
        "  slot INTEGER NOT NULL CHECK (slot >= 0),"
        "  ports TEXT NOT NULL DEFAULT '[]',"
        "  dir TEXT,"
        "  pid INTEGER NOT NULL DEFAULT 0,"
        "  state TEXT NOT NULL"
        "    CHECK (state IN ('starting','running','healthy','unhealthy','stopping','stopped','failed')),"
        "  health TEXT,"
        "  created INTEGER NOT NULL,"
        "  updated INTEGER NOT NULL"
        ");"
        "CREATE INDEX instances_deployment ON instances(deployment);"
        /* A slot (and so its host ports) belongs to one live instance. */
        "CREATE UNIQUE INDEX instances_live_slot ON instances(deployment, slot)"
        "  WHERE state NOT IN ('stopped','failed');",
};

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int errno_from_sqlite(sqlite3 *db, int rc)
{
        int sys = db ? sqlite3_system_errno(db) : 0;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EPERM;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_CONSTRAINT:
                switch (rc) {
                case SQLITE_CONSTRAINT_PRIMARYKEY:
                case SQLITE_CONSTRAINT_UNIQUE:
                        return -EEXIST;
                case SQLITE_CONSTRAINT_FOREIGNKEY:
                        return -ENOENT;
                default:
                        return -EINVAL;
                }
        case SQLITE_CANTOPEN:
        case SQLITE_IOERR:
                return sys > 0 ? -sys : -EIO;
        default:
                return -EIO;
        }
}

/* Logs "what: sqlite's message" with the database path and returns -errno. */
static int log_sqlite(struct state *s, int rc, const char *what)
{
        int r = errno_from_sqlite(s->db, rc);

        if (r == 0)
                r = -EIO;
        return log_error_errno(r, "%s in '%s': %s", what, s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

static int state_exec(struct state *s, const char *sql, const char *what)
{
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

        if (rc != SQLITE_OK)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), what);
        return 0;
}

static int state_prepare(struct state *s, const char *sql, sqlite3_stmt **ret, const char *what)
{
        int rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);

        if (rc != SQLITE_OK)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), what);
        return 0;
}

/* Binds NULL for a NULL string, as the schema's optional columns want. */
static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
        return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

/* Runs a statement that returns no rows; *ret_changes (may be NULL) is how
 * many rows it changed. */
static int state_step_done(struct state *s, sqlite3_stmt *st, int bind_rc, const char *what, int *ret_changes)
{
        int rc;

        if (bind_rc != SQLITE_OK)
                return log_sqlite(s, bind_rc, what);
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), what);
        if (ret_changes)
                *ret_changes = sqlite3_changes(s->db);
        return 0;
}

static char *column_strdup(sqlite3_stmt *st, int i, bool *oom)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        char *c;

        if (!t)
                return NULL;
        c = strdup((const char *)t);
        if (!c)
                *oom = true;
        return c;
}

/* ---- transactions ---- */

int state_begin(struct state *s)
{
        if (!sqlite3_get_autocommit(s->db))
                return log_error_errno(-EBUSY, "cannot begin a transaction in '%s': one is already open", s->path);
        return state_exec(s, "BEGIN IMMEDIATE", "cannot begin a transaction");
}

int state_commit(struct state *s)
{
        int r = state_exec(s, "COMMIT", "cannot commit");

        /* A failed COMMIT may leave the transaction open; it is lost. */
        if (r < 0 && !sqlite3_get_autocommit(s->db))
                (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

int state_rollback(struct state *s)
{
        if (!s || sqlite3_get_autocommit(s->db))
                return 0;
        if (sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
                return errno_from_sqlite(s->db, sqlite3_extended_errcode(s->db));
        return 0;
}

/* A mutation joins the caller's transaction or opens its own. */
static int write_begin(struct state *s, bool *ret_own)
{
        int r;

        if (!sqlite3_get_autocommit(s->db)) {
                *ret_own = false;
                return 0;
        }
        r = state_exec(s, "BEGIN IMMEDIATE", "cannot begin a transaction");
        if (r < 0)
                return r;
        *ret_own = true;
        return 0;
}

static int write_end(struct state *s, bool own, int r)
{
        if (!own)
                return r;
        if (r < 0) {
                (void)state_rollback(s);
                return r;
        }
        return state_commit(s);
}

/* ---- open, migrate, close ---- */

int state_default_dir(char **ret)
{
        const char *xdg = getenv("XDG_STATE_HOME");
        const char *home = getenv("HOME");
        char *p;

        /* The XDG spec says to ignore a relative path. */
        if (xdg && xdg[0] == '/') {
                if (asprintf(&p, "%s/ingot", xdg) < 0)
                        return -ENOMEM;
                *ret = p;
                return 0;
        }
        if (!home || home[0] != '/') {
                struct passwd *pw = getpwuid(getuid());

                if (!pw || !pw->pw_dir || pw->pw_dir[0] != '/')
                        return log_error_errno(-ENOENT, "cannot find a home directory for the state database, "
                                                        "set XDG_STATE_HOME or use --state-dir");
                home = pw->pw_dir;
        }
        if (asprintf(&p, "%s/.local/state/ingot", home) < 0)
                return -ENOMEM;
        *ret = p;
        return 0;
}

/* The schema version, 0 for a new database. A read: it does not wait for
 * another ingot's write lock. */
static int state_read_version(struct state *s, int64_t *ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc, r;

        r = state_prepare(s,
                          "SELECT CASE WHEN EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'schema_version') THEN 1 ELSE 0 END",
                          &st, "cannot read the schema version");
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot read the schema version");
        if (sqlite3_column_int(st, 0) == 0) {
                *ret = 0;
                return 0;
        }
        st = (sqlite3_finalize(st), NULL);

        r = state_prepare(s, "SELECT coalesce(max(version), 0) FROM schema_version", &st,
                          "cannot read the schema version");
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot read the schema version");
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

static int state_check_version(struct state *s, int64_t version)
{
        if (version < 0 || version > (int64_t)ELEMENTSOF(migrations))
                return log_error_errno(-EPROTONOSUPPORT,
                                       "state database '%s' has schema version %" PRId64
                                       ", this ingot knows up to %zu; use a newer ingot",
                                       s->path, version, ELEMENTSOF(migrations));
        return 0;
}

static int state_migrate(struct state *s)
{
        int64_t version = 0;
        bool own = false;
        int r;

        /* The common case, an up-to-date database, takes no write lock, so
         * "ingot ps" does not wait for a running "ingot deploy". */
        r = state_read_version(s, &version);
        if (r < 0)
                return r;
        r = state_check_version(s, version);
        if (r < 0 || version == (int64_t)ELEMENTSOF(migrations))
                return r;

        r = write_begin(s, &own);
        if (r < 0)
                return r;
        /* again under the lock: another ingot may have migrated meanwhile */
        r = state_read_version(s, &version);
        if (r >= 0)
                r = state_check_version(s, version);
        if (r >= 0)
                r = state_exec(s, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                               "cannot create the schema version table");
        for (size_t i = (size_t)version; r >= 0 && i < ELEMENTSOF(migrations); i++) {
                char sql[96];

                r = state_exec(s, migrations[i], "cannot migrate the schema");
                if (r < 0)
                        break;
                snprintf(sql, sizeof(sql), "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%zu)",
                         i + 1);
                r = state_exec(s, sql, "cannot record the schema version");
        }
        return write_end(s, own, r < 0 ? r : 0);
}

int state_open(const char *dir, struct state **ret)
{
        _cleanup_free_ char *default_dir = NULL;
        _cleanup_(state_closep) struct state *s = NULL;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const unsigned char *mode;
        int rc, r;

        if (!dir) {
                r = state_default_dir(&default_dir);
                if (r == -ENOMEM)
                        return log_error_errno(r, "out of memory");
                if (r < 0)
                        return r;
                dir = default_dir;
        }
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return log_error_errno(r, "cannot create the state directory '%s': %m", dir);

        s = calloc(1, sizeof(*s));
        if (!s)
                return log_error_errno(-ENOMEM, "out of memory");
        if (asprintf(&s->path, "%s/%s", dir, STATE_DB_NAME) < 0) {
                s->path = NULL;
                return log_error_errno(-ENOMEM, "out of memory");
        }

        rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = errno_from_sqlite(s->db, s->db ? sqlite3_extended_errcode(s->db) : rc);
                return log_error_errno(r ? r : -EIO, "cannot open the state database '%s': %s", s->path,
                                       s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        }
        (void)sqlite3_extended_result_codes(s->db, 1);
        (void)sqlite3_busy_timeout(s->db, STATE_BUSY_TIMEOUT_MS);
        /* The database is not for others to read: it names processes and ports. */
        (void)chmod(s->path, 0600);

        r = state_prepare(s, "PRAGMA journal_mode=WAL", &st, "cannot set the journal mode");
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot set the journal mode");
        mode = sqlite3_column_text(st, 0);
        if (!mode || strcmp((const char *)mode, "wal") != 0)
                return log_error_errno(-EOPNOTSUPP, "cannot use a write-ahead log for '%s' (journal mode is %s)",
                                       s->path, mode ? (const char *)mode : "unknown");
        st = (sqlite3_finalize(st), NULL);

        r = state_exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", "cannot set the database options");
        if (r < 0)
                return r;
        r = state_migrate(s);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

struct state *state_close(struct state *s)
{
        if (!s)
                return NULL;
        if (s->db) {
                (void)state_rollback(s);
                /* v2: statements left unfinalised cannot keep the
                 * database open behind our back. */
                (void)sqlite3_close_v2(s->db);
        }
        free(s->path);
        return x_free(s);
}

const char *state_path(const struct state *s)
{
        return s->path;
}

int state_set_busy_timeout(struct state *s, unsigned ms)
{
        int rc = sqlite3_busy_timeout(s->db, ms > INT32_MAX ? INT32_MAX : (int)ms);

        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "cannot set the busy timeout");
        return 0;
}

/* ---- freeing ---- */

void state_deployment_done(struct state_deployment *d)
{
        if (!d)
                return;
        d->name = x_free(d->name);
        d->file = x_free(d->file);
        d->image_id = x_free(d->image_id);
        d->image_ref = x_free(d->image_ref);
        d->version = x_free(d->version);
        d->reason = x_free(d->reason);
}

void state_instance_done(struct state_instance *i)
{
        if (!i)
                return;
        i->deployment = x_free(i->deployment);
        i->image_id = x_free(i->image_id);
        i->version = x_free(i->version);
        i->ports = x_free(i->ports);
        i->n_ports = 0;
        i->dir = x_free(i->dir);
        i->health = x_free(i->health);
}

void state_deployments_free(struct state_deployment *a, size_t n)
{
        for (size_t i = 0; a && i < n; i++)
                state_deployment_done(&a[i]);
        free(a);
}

void state_history_free(struct state_history_entry *a, size_t n)
{
        for (size_t i = 0; a && i < n; i++) {
                free(a[i].image_id);
                free(a[i].version);
        }
        free(a);
}

void state_instances_free(struct state_instance *a, size_t n)
{
        for (size_t i = 0; a && i < n; i++)
                state_instance_done(&a[i]);
        free(a);
}

/* Grows *a (of *n elements) by one zeroed element; returns it or NULL. */
static void *array_grow(void **a, size_t *n, size_t size)
{
        uint8_t *p = reallocarray(*a, *n + 1, size);

        if (!p)
                return NULL;
        memset(p + *n * size, 0, size);
        *a = p;
        return p + (*n)++ * size;
}

/* ---- deployments ---- */

#define DEPLOYMENT_COLUMNS "name, file, image_id, image_ref, version, state, reason, updated"

static int deployment_from_row(struct state *s, sqlite3_stmt *st, struct state_deployment *d)
{
        bool oom = false;

        d->name = column_strdup(st, 0, &oom);
        d->file = column_strdup(st, 1, &oom);
        d->image_id = column_strdup(st, 2, &oom);
        d->image_ref = column_strdup(st, 3, &oom);
        d->version = column_strdup(st, 4, &oom);
        d->state = state_deployment_state_from_string((const char *)sqlite3_column_text(st, 5));
        d->reason = column_strdup(st, 6, &oom);
        d->updated_ms = sqlite3_column_int64(st, 7);
        if (oom)
                return log_error_errno(-ENOMEM, "out of memory");
        if (!d->name || d->state == _STATE_DEPLOYMENT_INVALID)
                return log_error_errno(-EUCLEAN, "malformed deployment row in '%s'", s->path);
        return 0;
}

int state_deployment_get(struct state *s, const char *name, struct state_deployment *ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        struct state_deployment d = {};
        int rc, r;

        r = state_prepare(s, "SELECT " DEPLOYMENT_COLUMNS " FROM deployments WHERE name = ?1", &st,
                          "cannot read a deployment");
        if (r < 0)
                return r;
        rc = bind_text(st, 1, name);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "cannot read a deployment");
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot read a deployment");
        r = deployment_from_row(s, st, &d);
        if (r < 0) {
                state_deployment_done(&d);
                return r;
        }
        *ret = d;
        return 0;
}

int state_deployment_list(struct state *s, struct state_deployment **ret, size_t *ret_n)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        struct state_deployment *a = NULL;
        size_t n = 0;
        int rc, r;

        r = state_prepare(s, "SELECT " DEPLOYMENT_COLUMNS " FROM deployments ORDER BY name", &st,
                          "cannot list deployments");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct state_deployment *d = array_grow((void **)&a, &n, sizeof(*a));

                if (!d) {
                        state_deployments_free(a, n);
                        return log_error_errno(-ENOMEM, "out of memory");
                }
                r = deployment_from_row(s, st, d);
                if (r < 0) {
                        state_deployments_free(a, n);
                        return r;
                }
        }
        if (rc != SQLITE_DONE) {
                state_deployments_free(a, n);
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot list deployments");
        }
        *ret = a;
        *ret_n = n;
        return 0;
}

int state_deployment_upsert(struct state *s, const struct state_deployment *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const char *state = state_deployment_state_to_string(d->state);
        bool own;
        int rc, r;

        if (!d->name || !state)
                return log_error_errno(-EINVAL, "cannot store a deployment without a name or state in '%s'", s->path);
        r = write_begin(s, &own);
        if (r < 0)
                return r;
        r = state_prepare(s,
                          "INSERT INTO deployments (" DEPLOYMENT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                          "ON CONFLICT (name) DO UPDATE SET file = excluded.file, image_id = excluded.image_id, "
                          "image_ref = excluded.image_ref, version = excluded.version, state = excluded.state, "
                          "reason = excluded.reason, updated = excluded.updated",
                          &st, "cannot store a deployment");
        if (r < 0)
                return write_end(s, own, r);
        rc = bind_text(st, 1, d->name);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, d->file);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 3, d->image_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 4, d->image_ref);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 5, d->version);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 6, state);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 7, d->reason);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 8, now_ms());
        r = state_step_done(s, st, rc, "cannot store a deployment", NULL);
        st = (sqlite3_finalize(st), NULL);
        return write_end(s, own, r);
}

int state_deployment_set_state(struct state *s, const char *name, enum state_deployment_state state, const char *reason)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const char *state_str = state_deployment_state_to_string(state);
        int changes = 0;
        bool own;
        int rc, r;

        if (!state_str)
                return log_error_errno(-EINVAL, "invalid deployment state %d for '%s'", (int)state, s->path);
        r = write_begin(s, &own);
        if (r < 0)
                return r;
        r = state_prepare(s, "UPDATE deployments SET state = ?2, reason = ?3, updated = ?4 WHERE name = ?1", &st,
                          "cannot set a deployment's state");
        if (r < 0)
                return write_end(s, own, r);
        rc = bind_text(st, 1, name);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, state_str);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 3, reason);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 4, now_ms());
        r = state_step_done(s, st, rc, "cannot set a deployment's state", &changes);
        st = (sqlite3_finalize(st), NULL);
        if (r == 0 && changes == 0)
                r = -ENOENT;
        return write_end(s, own, r);
}

/* ---- history ---- */

int state_history_append(struct state *s, const char *deployment, const char *image_id, const char *version,
                         int64_t *ret_seq)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int64_t seq;
        bool own;
        int rc, r;

        r = write_begin(s, &own);
        if (r < 0)
                return r;
        /* seq is read and written under the write lock BEGIN IMMEDIATE took. */
        r = state_prepare(s,
                          "INSERT INTO history (deployment, seq, image_id, version, deployed_at) "
                          "VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM history WHERE deployment = ?1), "
                          "?2, ?3, ?4) RETURNING seq",
                          &st, "cannot append to a deployment's history");
        if (r < 0)
                return write_end(s, own, r);
        rc = bind_text(st, 1, deployment);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, image_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 3, version);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 4, now_ms());
        if (rc != SQLITE_OK)
                return write_end(s, own, log_sqlite(s, rc, "cannot append to a deployment's history"));
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return write_end(
                        s, own,
                        log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot append to a deployment's history"));
        seq = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return write_end(
                        s, own,
                        log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot append to a deployment's history"));
        st = (sqlite3_finalize(st), NULL);
        r = write_end(s, own, 0);
        if (r < 0)
                return r;
        if (ret_seq)
                *ret_seq = seq;
        return 0;
}

int state_history_list(struct state *s, const char *deployment, struct state_history_entry **ret, size_t *ret_n)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        struct state_history_entry *a = NULL;
        size_t n = 0;
        int rc, r;

        r = state_prepare(s,
                          "SELECT seq, image_id, version, deployed_at FROM history WHERE deployment = ?1 "
                          "ORDER BY seq DESC",
                          &st, "cannot read a deployment's history");
        if (r < 0)
                return r;
        rc = bind_text(st, 1, deployment);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "cannot read a deployment's history");
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct state_history_entry *e = array_grow((void **)&a, &n, sizeof(*a));
                bool oom = false;

                if (e) {
                        e->seq = sqlite3_column_int64(st, 0);
                        e->image_id = column_strdup(st, 1, &oom);
                        e->version = column_strdup(st, 2, &oom);
                        e->deployed_at_ms = sqlite3_column_int64(st, 3);
                }
                if (!e || oom) {
                        state_history_free(a, n);
                        return log_error_errno(-ENOMEM, "out of memory");
                }
        }
        if (rc != SQLITE_DONE) {
                state_history_free(a, n);
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot read a deployment's history");
        }
        *ret = a;
        *ret_n = n;
        return 0;
}

/* ---- instances ---- */

bool state_instance_id_is_valid(const char *s)
{
        if (!s || strncmp(s, "i-", 2) != 0 || strlen(s) != 2 + STATE_INSTANCE_ID_HEX)
                return false;
        for (size_t i = 2; s[i]; i++)
                if (!strchr("0123456789abcdef", s[i]))
                        return false;
        return true;
}

int state_new_instance_id(char ret[static STATE_INSTANCE_ID_MAX])
{
        static const char hex[] = "0123456789abcdef";
        uint8_t b[(STATE_INSTANCE_ID_HEX + 1) / 2];
        size_t got = 0;

        while (got < sizeof(b)) {
                ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(-errno, "cannot get random bytes for an instance id: %m");
                }
                got += (size_t)n;
        }
        ret[0] = 'i';
        ret[1] = '-';
        for (size_t i = 0; i < STATE_INSTANCE_ID_HEX; i++)
                ret[2 + i] = hex[(b[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
        ret[2 + STATE_INSTANCE_ID_HEX] = '\0';
        return 0;
}

static char *ports_to_json(const struct state_port *p, size_t n)
{
        json_t *a = json_array();
        char *s;

        if (!a)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(a, json_pack("{s:i,s:i}", "guest", (int)p[i].guest, "host", (int)p[i].host)) <
                    0) {
                        json_decref(a);
                        return NULL;
                }
        s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        return s;
}

static int ports_from_json(const char *text, struct state_port **ret, size_t *ret_n)
{
        json_t *a = json_loads(text ? text : "[]", 0, NULL);
        struct state_port *p = NULL;
        size_t n;

        if (!a || !json_is_array(a)) {
                json_decref(a);
                return -EUCLEAN;
        }
        n = json_array_size(a);
        if (n > 0) {
                p = calloc(n, sizeof(*p));
                if (!p) {
                        json_decref(a);
                        return -ENOMEM;
                }
        }
        for (size_t i = 0; i < n; i++) {
                json_t *g = json_object_get(json_array_get(a, i), "guest");
                json_t *h = json_object_get(json_array_get(a, i), "host");

                if (!json_is_integer(g) || !json_is_integer(h) || json_integer_value(g) < 1 ||
                    json_integer_value(g) > 65535 || json_integer_value(h) < 1 || json_integer_value(h) > 65535) {
                        free(p);
                        json_decref(a);
                        return -EUCLEAN;
                }
                p[i].guest = (uint16_t)json_integer_value(g);
                p[i].host = (uint16_t)json_integer_value(h);
        }
        json_decref(a);
        *ret = p;
        *ret_n = n;
        return 0;
}

#define INSTANCE_COLUMNS "id, deployment, image_id, version, slot, ports, dir, pid, state, health, created, updated"

static int instance_from_row(struct state *s, sqlite3_stmt *st, struct state_instance *i)
{
        const char *id = (const char *)sqlite3_column_text(st, 0);
        bool oom = false;
        int r;

        if (!state_instance_id_is_valid(id))
                return log_error_errno(-EUCLEAN, "malformed instance id in '%s'", s->path);
        memcpy(i->id, id, STATE_INSTANCE_ID_MAX);
        i->deployment = column_strdup(st, 1, &oom);
        i->image_id = column_strdup(st, 2, &oom);
        i->version = column_strdup(st, 3, &oom);
        i->slot = (unsigned)sqlite3_column_int64(st, 4);
        i->dir = column_strdup(st, 6, &oom);
        i->pid = (pid_t)sqlite3_column_int64(st, 7);
        i->state = state_instance_state_from_string((const char *)sqlite3_column_text(st, 8));
        i->health = column_strdup(st, 9, &oom);
        i->created_ms = sqlite3_column_int64(st, 10);
        i->updated_ms = sqlite3_column_int64(st, 11);
        if (oom)
                return log_error_errno(-ENOMEM, "out of memory");
        r = ports_from_json((const char *)sqlite3_column_text(st, 5), &i->ports, &i->n_ports);
        if (r == -ENOMEM)
                return log_error_errno(r, "out of memory");
        if (r < 0 || i->state == _STATE_INSTANCE_INVALID)
                return log_error_errno(-EUCLEAN, "malformed row for instance '%s' in '%s'", i->id, s->path);
        return 0;
}

int state_instance_insert(struct state *s, const struct state_instance *i)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_free_ char *ports = NULL;
        const char *state = state_instance_state_to_string(i->state);
        int64_t now = now_ms();
        bool own;
        int rc, r;

        if (!state_instance_id_is_valid(i->id) || !i->deployment || !i->image_id || !state)
                return log_error_errno(-EINVAL,
                                       "cannot store instance '%s' in '%s': id, deployment, image or "
                                       "state missing or malformed",
                                       i->id, s->path);
        ports = ports_to_json(i->ports, i->n_ports);
        if (!ports)
                return log_error_errno(-ENOMEM, "out of memory");

        r = write_begin(s, &own);
        if (r < 0)
                return r;
        r = state_prepare(s,
                          "INSERT INTO instances (" INSTANCE_COLUMNS ") "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                          &st, "cannot store an instance");
        if (r < 0)
                return write_end(s, own, r);
        rc = bind_text(st, 1, i->id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, i->deployment);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 3, i->image_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 4, i->version);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 5, i->slot);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 6, ports);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 7, i->dir);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 8, i->pid);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 9, state);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 10, i->health);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 11, i->created_ms ? i->created_ms : now);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 12, i->updated_ms ? i->updated_ms : now);
        r = state_step_done(s, st, rc, "cannot store an instance", NULL);
        st = (sqlite3_finalize(st), NULL);
        return write_end(s, own, r);
}

int state_instance_get(struct state *s, const char *id, struct state_instance *ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        struct state_instance i = {};
        int rc, r;

        r = state_prepare(s, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE id = ?1", &st,
                          "cannot read an instance");
        if (r < 0)
                return r;
        rc = bind_text(st, 1, id);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "cannot read an instance");
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot read an instance");
        r = instance_from_row(s, st, &i);
        if (r < 0) {
                state_instance_done(&i);
                return r;
        }
        *ret = i;
        return 0;
}

int state_instance_list(struct state *s, const char *deployment, struct state_instance **ret, size_t *ret_n)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        struct state_instance *a = NULL;
        size_t n = 0;
        int rc, r;

        r = state_prepare(s,
                          "SELECT " INSTANCE_COLUMNS " FROM instances WHERE ?1 IS NULL OR deployment = ?1 "
                          "ORDER BY deployment, slot, created, id",
                          &st, "cannot list instances");
        if (r < 0)
                return r;
        rc = bind_text(st, 1, deployment);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "cannot list instances");
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct state_instance *i = array_grow((void **)&a, &n, sizeof(*a));

                if (!i) {
                        state_instances_free(a, n);
                        return log_error_errno(-ENOMEM, "out of memory");
                }
                r = instance_from_row(s, st, i);
                if (r < 0) {
                        state_instances_free(a, n);
                        return r;
                }
        }
        if (rc != SQLITE_DONE) {
                state_instances_free(a, n);
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot list instances");
        }
        *ret = a;
        *ret_n = n;
        return 0;
}

int state_instance_update(struct state *s, const char *id, enum state_instance_state state, pid_t pid,
                          const char *health)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const char *state_str = state_instance_state_to_string(state);
        int changes = 0;
        bool own;
        int rc, r;

        if (!state_str)
                return log_error_errno(-EINVAL, "invalid state %d for instance '%s' in '%s'", (int)state, id, s->path);
        r = write_begin(s, &own);
        if (r < 0)
                return r;
        r = state_prepare(s, "UPDATE instances SET state = ?2, pid = ?3, health = ?4, updated = ?5 WHERE id = ?1", &st,
                          "cannot update an instance");
        if (r < 0)
                return write_end(s, own, r);
        rc = bind_text(st, 1, id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, state_str);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, pid);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 4, health);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 5, now_ms());
        r = state_step_done(s, st, rc, "cannot update an instance", &changes);
        st = (sqlite3_finalize(st), NULL);
        if (r == 0 && changes == 0)
                r = -ENOENT;
        return write_end(s, own, r);
}

int state_instance_delete(struct state *s, const char *id)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int changes = 0;
        bool own;
        int rc, r;

        r = write_begin(s, &own);
        if (r < 0)
                return r;
        r = state_prepare(s, "DELETE FROM instances WHERE id = ?1", &st, "cannot delete an instance");
        if (r < 0)
                return write_end(s, own, r);
        rc = bind_text(st, 1, id);
        r = state_step_done(s, st, rc, "cannot delete an instance", &changes);
        st = (sqlite3_finalize(st), NULL);
        if (r == 0 && changes == 0)
                r = -ENOENT;
        return write_end(s, own, r);
}

int state_allocate_slot(struct state *s, const char *deployment, unsigned max_slots, unsigned *ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        unsigned slot = 0;
        int rc, r;

        r = state_prepare(s,
                          "SELECT DISTINCT slot FROM instances WHERE deployment = ?1 "
                          "AND state NOT IN ('stopped','failed') ORDER BY slot",
                          &st, "cannot find a free slot");
        if (r < 0)
                return r;
        rc = bind_text(st, 1, deployment);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "cannot find a free slot");
        /* Slots come sorted: the first gap is the lowest free one. */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t used = sqlite3_column_int64(st, 0);

                if (used > (int64_t)slot)
                        break;
                if (used == (int64_t)slot)
                        slot++;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return log_sqlite(s, sqlite3_extended_errcode(s->db), "cannot find a free slot");
        if (slot >= max_slots)
                return log_error_errno(-ENOSPC, "deployment '%s' has no free slot: all %u are taken", deployment,
                                       max_slots);
        *ret = slot;
        return 0;
}
