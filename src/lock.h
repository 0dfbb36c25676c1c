/* Store locks: what keeps gc from deleting blocks a push is counting on.
 *
 * A store has no lock service, so a lock is an object, locks/KIND-…json,
 * that says who holds it (host, boot id, pid and the process's start time,
 * the operation, when it was taken and last refreshed). Pushes take shared
 * locks, gc takes an exclusive one. Taking one is: write ours, then list
 * locks/; a conflicting lock that is not stale means remove ours, wait a
 * random moment and try again. Two takers write before they list, and the
 * store's listings are read-after-write consistent (S3 since 2020, a local
 * directory always), so the later of two listings sees both locks and at
 * least one of the two backs off: a push and a gc never both proceed.
 *
 * A lock is stale when its holder is gone: on this host (same boot id) at
 * once, when its pid is dead or belongs to a newer process; from another
 * host or boot, when it was not refreshed for STORE_LOCK_STALE_SEC
 * (holders refresh every STORE_LOCK_REFRESH_SEC). Stale locks are removed
 * by whoever finds them, so a SIGKILLed push or gc never blocks the store
 * for good. restic's repository locks work the same way. */
#pragma once

#include <stdbool.h>

#include "shared/macro.h"
#include "store.h"

#define STORE_LOCK_REFRESH_SEC 120
#define STORE_LOCK_STALE_SEC (30 * 60)
/* How long a taker waits for a conflicting holder by default
 * ($INGOT_LOCK_WAIT seconds overrides it). */
#define STORE_LOCK_WAIT_SEC 900

enum store_lock_kind {
        STORE_LOCK_SHARED,    /* push */
        STORE_LOCK_EXCLUSIVE, /* gc */
};

struct store_lock;

/* Takes a lock for operation op ("push", "gc"), waiting while a conflicting
 * live one is held (saying once whose), at most the wait above. -EBUSY
 * (logged, naming the holder) when it stays held; other errors logged. */
int store_lock_take(struct store *s, enum store_lock_kind kind, const char *op, struct store_lock **ret);
/* Rewrites the lock when it is older than STORE_LOCK_REFRESH_SEC; call it
 * between batches of a long operation. -ENOLCK (logged) when the lock is
 * gone (judged stale by another host): what it protected may have changed. */
int store_lock_refresh(struct store_lock *l);
/* Removes the lock (errors logged, not returned) and frees it. */
struct store_lock *store_lock_release(struct store_lock *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct store_lock *, store_lock_release);
