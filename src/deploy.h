/* Deployments: reconcile a deployment file's instances to its image with a
 * rolling replacement, roll back, list, show logs and terminate. The state
 * lives in SQLite (state.h); each instance is a directory under
 * STATEDIR/instances/ID run by instance.h, so a killed ingot leaves
 * nothing the next run cannot find: deploy and ps adopt running instances
 * recorded in the state and stop the ones that are not.
 *
 * Return values: 0 ok; -EBADMSG bad input (exit 2); other negative errno a
 * failure (exit 1), logged once. */
#pragma once

#include <stdbool.h>

struct deploy_options {
        const char *store_url;  /* NULL = the default store */
        const char *state_dir;  /* NULL = $XDG_STATE_HOME/ingot */
        bool allow_deprecated;
        const char *image;      /* overrides the file's Image= (rollback) */
};

/* ingot deploy FILE */
int deploy_run(const char *file, const struct deploy_options *o);
/* ingot rollback NAME [--to ID]: to NULL = the previous history entry. */
int deploy_rollback(const char *name, const char *to, const struct deploy_options *o);
/* ingot ps [NAME] */
int deploy_ps(const char *state_dir, const char *name, bool json);
/* ingot logs INSTANCE [-f] */
int deploy_logs(const char *state_dir, const char *instance, bool follow);
/* ingot terminate INSTANCE | --deployment NAME (exactly one non-NULL) */
int deploy_terminate(const char *state_dir, const char *instance, const char *deployment);

/* The rolling replacement's arithmetic, apart from any instance: given the
 * old instances (healthy or not) and the new ones already healthy, the next
 * step stops old ones (the unhealthy first, then the ones beyond Count, then
 * as many as MaxUnavailable allows to make room) and starts new ones within
 * Count + MaxSurge. Starting counts nothing healthy until the new ones are;
 * so healthy never falls below Count - MaxUnavailable (unless it already
 * was) and the total never exceeds Count + MaxSurge. A step of all zeros
 * means done. Exposed for its unit test. */
struct rollout_counts {
        unsigned count, surge, unavailable;
        unsigned old_healthy, old_unhealthy, new_n;
};
struct rollout_step {
        unsigned stop_unhealthy, stop_healthy, start;
};
void rollout_next_step(const struct rollout_counts *c, struct rollout_step *ret);
