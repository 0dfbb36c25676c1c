/* Unit tests for the rolling replacement's arithmetic (rollout_next_step):
 * known sequences for the usual settings, and every valid combination of
 * Count, MaxSurge and MaxUnavailable (with some old instances unhealthy)
 * simulated to the end, checking at each step that the healthy count never
 * drops below Count - MaxUnavailable (or what it was), the total never
 * exceeds Count + MaxSurge, and the rollout finishes with Count new ones. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "deploy.h"

static void step(struct rollout_counts *c, unsigned stop_unhealthy, unsigned stop_healthy, unsigned start)
{
        struct rollout_step s;

        rollout_next_step(c, &s);
        assert_int_equal(s.stop_unhealthy, stop_unhealthy);
        assert_int_equal(s.stop_healthy, stop_healthy);
        assert_int_equal(s.start, start);
        c->old_unhealthy -= s.stop_unhealthy;
        c->old_healthy -= s.stop_healthy;
        c->new_n += s.start;
}

static void test_sequences(void **state)
{
        (void)state;
        /* the default: one new at a time, an old one stops after it */
        struct rollout_counts c = { .count = 2, .surge = 1, .unavailable = 0, .old_healthy = 2 };
        step(&c, 0, 0, 1);
        step(&c, 0, 1, 1);
        step(&c, 0, 1, 0);
        step(&c, 0, 0, 0);

        /* no surge: stop first, MaxUnavailable at a time */
        c = (struct rollout_counts){ .count = 3, .surge = 0, .unavailable = 1, .old_healthy = 3 };
        step(&c, 0, 1, 1);
        step(&c, 0, 1, 1);
        step(&c, 0, 1, 1);
        step(&c, 0, 0, 0);

        /* surge and unavailability together: two at a time */
        c = (struct rollout_counts){ .count = 4, .surge = 1, .unavailable = 1, .old_healthy = 4 };
        step(&c, 0, 1, 2);
        step(&c, 0, 2, 2);
        step(&c, 0, 1, 0);
        step(&c, 0, 0, 0);

        /* the first deploy: nothing old */
        c = (struct rollout_counts){ .count = 3, .surge = 1, .unavailable = 0 };
        step(&c, 0, 0, 3);
        step(&c, 0, 0, 0);

        /* an unhealthy old one goes at once and makes room */
        c = (struct rollout_counts){ .count = 2, .surge = 1, .unavailable = 0, .old_healthy = 1, .old_unhealthy = 1 };
        step(&c, 1, 0, 2);
        step(&c, 0, 1, 0);

        /* a killed run left one new instance healthy beside the old ones */
        c = (struct rollout_counts){ .count = 2, .surge = 1, .unavailable = 0, .old_healthy = 2, .new_n = 1 };
        step(&c, 0, 1, 1);
        step(&c, 0, 1, 0);

        /* scaling down and up */
        c = (struct rollout_counts){ .count = 1, .surge = 1, .unavailable = 0, .new_n = 1 };
        step(&c, 0, 0, 0);
        c = (struct rollout_counts){ .count = 4, .surge = 2, .unavailable = 0, .new_n = 2 };
        step(&c, 0, 0, 2);
}

static void test_every_combination(void **state)
{
        unsigned runs = 0;

        (void)state;
        for (unsigned count = 1; count <= 8; count++)
                for (unsigned surge = 0; surge <= count; surge++)
                        for (unsigned unav = 0; unav < count; unav++)
                                for (unsigned bad = 0; bad <= 2 && bad <= count; bad++) {
                                        struct rollout_counts c = { .count = count,
                                                                    .surge = surge,
                                                                    .unavailable = unav,
                                                                    .old_healthy = count - bad,
                                                                    .old_unhealthy = bad };
                                        unsigned floor = count - unav, steps = 0;

                                        if (surge + unav == 0)
                                                continue; /* refused by the deployment file */
                                        if (c.old_healthy < floor)
                                                floor = c.old_healthy;
                                        for (;;) {
                                                struct rollout_step s;
                                                unsigned healthy;

                                                rollout_next_step(&c, &s);
                                                if (s.stop_unhealthy + s.stop_healthy + s.start == 0)
                                                        break;
                                                assert_true(s.stop_unhealthy <= c.old_unhealthy);
                                                assert_true(s.stop_healthy <= c.old_healthy);
                                                c.old_unhealthy -= s.stop_unhealthy;
                                                c.old_healthy -= s.stop_healthy;
                                                healthy = c.old_healthy + c.new_n;
                                                /* while the new ones boot */
                                                if (healthy < floor)
                                                        fail_msg("count %u surge %u unavailable %u: %u healthy, "
                                                                 "floor %u",
                                                                 count, surge, unav, healthy, floor);
                                                if (c.old_healthy + c.old_unhealthy + c.new_n + s.start >
                                                    count + surge)
                                                        fail_msg("count %u surge %u unavailable %u: over the "
                                                                 "surge",
                                                                 count, surge, unav);
                                                c.new_n += s.start;
                                                /* the new ones became healthy: they now count */
                                                if (c.old_healthy + c.new_n > floor)
                                                        floor = c.old_healthy + c.new_n < count - unav
                                                                        ? c.old_healthy + c.new_n
                                                                        : count - unav;
                                                assert_true(++steps <= 2 * count + 2);
                                        }
                                        assert_int_equal(c.old_healthy + c.old_unhealthy, 0);
                                        assert_int_equal(c.new_n, count);
                                        runs++;
                                }
        assert_true(runs > 300);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sequences),
                cmocka_unit_test(test_every_combination),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
