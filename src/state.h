/* The deploy state database (SQLite): deployments, the history of image ids
 * each one ran (what rollback reads), and instances with their slot, ports,
 * process and health. It lives in $XDG_STATE_HOME/ingot/state.db
 * (~/.local/state/ingot/state.db), or DIR/state.db for --state-dir DIR.
 *
 * Durability: WAL journal with synchronous=FULL, so a committed transaction
 * survives a kill or a power cut and an interrupted one leaves no trace.
 * Every mutation below runs in its own transaction, unless the caller has
 * one open with state_begin(), in which case it joins that one (and on an
 * error the caller calls state_rollback()).
 *
 * Errors are logged once, naming the database path, and returned as
 * -errno: SQLITE_BUSY/LOCKED -EBUSY, NOMEM -ENOMEM, READONLY -EROFS,
 * FULL -ENOSPC, CORRUPT/NOTADB -EUCLEAN, a unique or primary key conflict
 * -EEXIST, a CHECK constraint -EINVAL, an unknown deployment in a foreign
 * key -ENOENT, I/O errors the system errno (else -EIO). A row that does not
 * exist is -ENOENT from get/update/delete and is NOT logged: the caller
 * says what it was looking for.
 *
 * Times are milliseconds since the epoch (UTC), as in the catalog. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared/macro.h"

#define STATE_DB_NAME "state.db"
/* the schema this ingot writes; older databases are migrated on open */
#define STATE_SCHEMA_VERSION 1
/* "i-" + 17 hex + NUL */
#define STATE_INSTANCE_ID_MAX 20
#define STATE_INSTANCE_ID_HEX 17

enum state_deployment_state {
        STATE_DEPLOYMENT_DEPLOYING,
        STATE_DEPLOYMENT_DEPLOYED,
        STATE_DEPLOYMENT_FAILED,
        STATE_DEPLOYMENT_TERMINATED,
        _STATE_DEPLOYMENT_MAX,
        _STATE_DEPLOYMENT_INVALID = -1,
};

enum state_instance_state {
        STATE_INSTANCE_STARTING,
        STATE_INSTANCE_RUNNING,
        STATE_INSTANCE_HEALTHY,
        STATE_INSTANCE_UNHEALTHY,
        STATE_INSTANCE_STOPPING,
        STATE_INSTANCE_STOPPED,
        STATE_INSTANCE_FAILED,
        _STATE_INSTANCE_MAX,
        _STATE_INSTANCE_INVALID = -1,
};

const char *state_deployment_state_to_string(enum state_deployment_state s);
enum state_deployment_state state_deployment_state_from_string(const char *s);
const char *state_instance_state_to_string(enum state_instance_state s);
enum state_instance_state state_instance_state_from_string(const char *s);

struct state_deployment {
        char *name;
        char *file;      /* the deployment file's path */
        char *image_id;  /* ami-…, resolved */
        char *image_ref; /* as the file wrote it */
        char *version;
        enum state_deployment_state state;
        char *reason; /* why it failed, NULL = none */
        int64_t updated_ms;
};

struct state_history_entry {
        int64_t seq; /* 1, 2, … per deployment */
        char *image_id;
        char *version;
        int64_t deployed_at_ms;
};

struct state_port {
        uint16_t guest;
        uint16_t host; /* on 127.0.0.1 */
};

struct state_instance {
        char id[STATE_INSTANCE_ID_MAX];
        char *deployment;
        char *image_id;
        char *version;
        unsigned slot;
        struct state_port *ports; /* stored as JSON [{"guest":80,"host":8080},…] */
        size_t n_ports;
        char *dir; /* the instance's directory (overlay, pidfile, QMP, serial log) */
        pid_t pid; /* QEMU's, 0 = none */
        enum state_instance_state state;
        char *health; /* last health result in words, NULL = none yet */
        int64_t created_ms;
        int64_t updated_ms;
};

/* Frees the members, not s itself; s may be zero-filled. */
void state_deployment_done(struct state_deployment *d);
void state_instance_done(struct state_instance *i);
/* Free arrays returned by the list functions (with their n). */
void state_deployments_free(struct state_deployment *a, size_t n);
void state_history_free(struct state_history_entry *a, size_t n);
void state_instances_free(struct state_instance *a, size_t n);

struct state;

/* $XDG_STATE_HOME/ingot, else $HOME/.local/state/ingot (a new string). */
int state_default_dir(char **ret);
/* Opens (creating dir and the database as needed, mode 0700/0600) and
 * migrates DIR/state.db; dir NULL = state_default_dir(). */
int state_open(const char *dir, struct state **ret);
/* Closes; an open transaction is rolled back. Returns NULL. */
struct state *state_close(struct state *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct state *, state_close);
const char *state_path(const struct state *s);
/* How long a write waits for another ingot's lock before -EBUSY (the
 * default is 10 s). */
int state_set_busy_timeout(struct state *s, unsigned ms);

/* BEGIN IMMEDIATE: takes the write lock now (waiting up to the busy
 * timeout), so a read-then-write sequence cannot fail halfway on BUSY.
 * Transactions do not nest: -EBUSY if one is open. */
int state_begin(struct state *s);
int state_commit(struct state *s);
/* Quiet and safe to call without an open transaction. */
int state_rollback(struct state *s);

/* ---- deployments ---- */

/* *ret is the caller's (state_deployment_done), set on success only. */
int state_deployment_get(struct state *s, const char *name, struct state_deployment *ret);
/* Inserts or replaces every field of d->name's row; updated = now. */
int state_deployment_upsert(struct state *s, const struct state_deployment *d);
/* Sets state and reason (NULL clears it); updated = now. */
int state_deployment_set_state(struct state *s, const char *name, enum state_deployment_state state,
                               const char *reason);
/* All deployments by name. */
int state_deployment_list(struct state *s, struct state_deployment **ret, size_t *ret_n);

/* ---- history ---- */

/* Appends a successfully deployed image; ret_seq (may be NULL) gets its seq. */
int state_history_append(struct state *s, const char *deployment, const char *image_id, const char *version,
                         int64_t *ret_seq);
/* Newest first. An unknown deployment has an empty history. */
int state_history_list(struct state *s, const char *deployment, struct state_history_entry **ret, size_t *ret_n);

/* ---- instances ---- */

/* "i-" + 17 hex from getrandom(). Instance ids are the one random thing in
 * ingot: two instances of one image must never share one. */
int state_new_instance_id(char ret[static STATE_INSTANCE_ID_MAX]);
bool state_instance_id_is_valid(const char *s);

/* created and updated are set to now when 0. */
int state_instance_insert(struct state *s, const struct state_instance *i);
int state_instance_get(struct state *s, const char *id, struct state_instance *ret);
/* deployment NULL = all; ordered by deployment, slot, creation. */
int state_instance_list(struct state *s, const char *deployment, struct state_instance **ret, size_t *ret_n);
/* Sets state, pid (0 = none) and health (NULL clears it); updated = now. */
int state_instance_update(struct state *s, const char *id, enum state_instance_state state, pid_t pid,
                          const char *health);
int state_instance_delete(struct state *s, const char *id);
/* The lowest slot in 0..max_slots-1 that no live instance of deployment
 * (one not stopped or failed) holds; -ENOSPC (logged) when all are taken.
 * Within one transaction the slot stays free until an instance takes it;
 * two instances can never hold one slot (a unique index says so). */
int state_allocate_slot(struct state *s, const char *deployment, unsigned max_slots, unsigned *ret);
