/* Clock readings in seconds, as doubles: for timeouts, deadlines and the
 * stage timings ingot prints. */
#pragma once

#include <time.h>

static inline double clock_sec(clockid_t clock)
{
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CLOCK_MONOTONIC: for durations and deadlines */
static inline double now_mono(void)
{
        return clock_sec(CLOCK_MONOTONIC);
}
