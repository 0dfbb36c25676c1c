/* Facts about this host's processes, for telling a live writer's leftovers
 * (temporaries, locks) from a dead one's, and the test points the
 * concurrency tests stop ingot at. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* /proc/sys/kernel/random/boot_id (36 characters + NUL). */
int boot_id_get(char ret[static 37]);

/* The process's start time in clock ticks since boot (field 22 of
 * /proc/PID/stat): with the boot id it names one process for good, where
 * a pid alone may be reused. -ESRCH when there is no such process. */
int proc_start_time(pid_t pid, uint64_t *ret);

/* True when pid runs (or may: EPERM) on this host. */
bool pid_is_alive(pid_t pid);

/* A named point in a protocol (e.g. "push-pending"). When
 * $INGOT_TEST_STOP_AT lists it (comma-separated), ingot says so on stderr
 * ("ingot: test point NAME reached, pid N: stopping") and stops itself
 * with SIGSTOP, so a test can run something beside it, then SIGCONT or
 * SIGKILL it there. Does nothing otherwise. */
void test_point(const char *name);
