/* Unit tests for the partition layout plan: alignment, grow, limits, DPS
 * type GUIDs, and GUID derivation pinned against values computed outside
 * ingot (Python's hmac and uuid modules). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "part.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

static uint8_t seed[32];

static int setup(void **state)
{
        for (size_t i = 0; i < 32; i++)
                seed[i] = (uint8_t)i;
        return 0;
}

static void assert_uuid(const id128_t *id, const char *expected)
{
        char buf[ID128_STRING_MAX];
        assert_string_equal(id128_to_string(id, buf), expected);
}

static void test_default_layout(void **state)
{
        _cleanup_(part_layout_freep) struct part_layout *l = NULL;
        const struct part_request req[] = {
                { .mountpoint = "biosboot", .size = 1 * MiB },
                { .mountpoint = "/boot/efi", .size = 100 * MiB, .fstype = "vfat" },
                { .mountpoint = "/", .grow = true, .fstype = "ext4" },
        };

        assert_int_equal(part_plan(req, 3, 256 * MiB, "x86-64", seed, &l, NULL), 0);
        assert_int_equal(l->n_entries, 3);
        assert_int_equal(l->first_usable, MiB);
        /* 256 MiB minus the backup GPT, rounded down to 1 MiB */
        assert_int_equal(l->last_usable, 255 * MiB);

        assert_int_equal(l->entries[0].number, 1);
        assert_int_equal(l->entries[0].role, PART_ROLE_BIOS_BOOT);
        assert_int_equal(l->entries[0].start, MiB);
        assert_int_equal(l->entries[0].size, MiB);
        assert_null(l->entries[0].fstype);
        assert_null(l->entries[0].label);
        assert_uuid(&l->entries[0].type, "21686148-6449-6e6f-744e-656564454649");

        assert_int_equal(l->entries[1].role, PART_ROLE_ESP);
        assert_int_equal(l->entries[1].start, 2 * MiB);
        assert_int_equal(l->entries[1].size, 100 * MiB);
        assert_uuid(&l->entries[1].type, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_string_equal(l->entries[1].label, "esp");

        /* the root grows to the end of the usable area */
        assert_int_equal(l->entries[2].start, 102 * MiB);
        assert_int_equal(l->entries[2].start + l->entries[2].size, 255 * MiB);
        assert_uuid(&l->entries[2].type, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_string_equal(l->entries[2].name, "root");

        /* pinned: HMAC-SHA256(seed, "disk-uuid") and HMAC-SHA256(seed, root type) */
        assert_uuid(&l->disk_uuid, "55032aa1-72fe-49b9-8291-8fd49a28763e");
        assert_uuid(&l->entries[2].uuid, "cf38dfac-26db-42c8-bf28-2b196560c1b2");
}

static void test_alignment_and_order(void **state)
{
        _cleanup_(part_layout_freep) struct part_layout *l = NULL;
        const struct part_request req[] = {
                { .mountpoint = "/", .size = 300 * MiB + 1, .fstype = "ext4", .label = "rootfs" },
                { .mountpoint = "swap", .size = 64 * MiB, .fstype = "swap" },
                { .mountpoint = "/var", .size = 10 * MiB, .fstype = "ext4" },
        };

        assert_int_equal(part_plan(req, 3, GiB, "x86-64", seed, &l, NULL), 0);
        for (size_t i = 0; i < l->n_entries; i++) {
                assert_int_equal(l->entries[i].start % MiB, 0);
                assert_int_equal(l->entries[i].size % MiB, 0);
                if (i > 0)
                        assert_int_equal(l->entries[i].start, l->entries[i - 1].start + l->entries[i - 1].size);
        }
        assert_int_equal(l->entries[0].size, 301 * MiB); /* rounded up, never down */
        assert_string_equal(l->entries[0].name, "rootfs");
        assert_string_equal(l->entries[0].label, "rootfs");
        assert_null(l->entries[1].label); /* swap has no filesystem label */
        assert_uuid(&l->entries[1].type, "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f");
        assert_uuid(&l->entries[2].type, "4d21b016-b534-45c2-a9fb-5c16e091fd2d");
}

static void test_grow_shares_and_maxsize(void **state)
{
        _cleanup_(part_layout_freep) struct part_layout *l = NULL;
        const struct part_request req[] = {
                { .mountpoint = "/", .size = 100 * MiB, .grow = true, .max_size = 150 * MiB, .fstype = "ext4" },
                { .mountpoint = "/srv", .size = 100 * MiB, .grow = true, .fstype = "ext4" },
                { .mountpoint = "/home", .size = 100 * MiB, .fstype = "ext4" },
        };

        /* usable: 1023 - 1 = 1022 MiB; fixed 300 MiB; 722 MiB to share */
        assert_int_equal(part_plan(req, 3, GiB, "x86-64", seed, &l, NULL), 0);
        assert_int_equal(l->entries[0].size, 150 * MiB); /* capped at --maxsize */
        assert_int_equal(l->entries[2].size, 100 * MiB); /* not growing */
        /* what the capped one could not take went to the other */
        assert_int_equal(l->entries[1].start + l->entries[1].size + 100 * MiB, l->last_usable);
        assert_uuid(&l->entries[1].type, "3b8f8425-20e0-4f3b-907f-1a25a76f98e8");
        assert_uuid(&l->entries[2].type, "933ac7e1-2eb4-4f13-b844-0e14e2aef915");
}

static void test_too_small(void **state)
{
        struct part_layout *l = NULL;
        uint64_t needed = 0;
        const struct part_request req[] = {
                { .mountpoint = "/boot/efi", .size = 200 * MiB, .fstype = "vfat" },
                { .mountpoint = "/", .size = 100 * MiB, .fstype = "ext4" },
        };

        assert_int_equal(part_plan(req, 2, 256 * MiB, "x86-64", seed, &l, &needed), -ENOSPC);
        assert_null(l);
        assert_int_equal(needed, 302 * MiB);
        /* and with exactly that much it fits */
        assert_int_equal(part_plan(req, 2, needed, "x86-64", seed, &l, NULL), 0);
        part_layout_free(l);
}

static void test_invalid(void **state)
{
        struct part_layout *l = NULL;
        const struct part_request zero[] = { { .mountpoint = "/", .fstype = "ext4" } };
        const struct part_request ok[] = { { .mountpoint = "/", .grow = true, .fstype = "ext4" } };

        assert_int_equal(part_plan(zero, 1, GiB, "x86-64", seed, &l, NULL), -EINVAL);
        assert_int_equal(part_plan(ok, 1, GiB, "mips", seed, &l, NULL), -EOPNOTSUPP);
        assert_int_equal(part_plan(ok, 1, 0, "x86-64", seed, &l, NULL), -ENOSPC);
        assert_null(l);
}

static void test_same_type_twice(void **state)
{
        _cleanup_(part_layout_freep) struct part_layout *l = NULL;
        const struct part_request req[] = {
                { .mountpoint = "/", .grow = true, .fstype = "ext4" },
                { .mountpoint = "/data", .size = MiB, .fstype = "ext4" },
                { .mountpoint = "/data2", .size = MiB, .fstype = "ext4" },
        };

        assert_int_equal(part_plan(req, 3, GiB, "x86-64", seed, &l, NULL), 0);
        assert_int_equal(l->entries[1].role, PART_ROLE_GENERIC);
        assert_true(id128_equal(&l->entries[1].type, &l->entries[2].type));
        /* the second of a type gets HMAC(seed, type || le64(1)): pinned */
        assert_uuid(&l->entries[2].uuid, "6b804ab1-5d6d-491d-bd1f-fcb29aa94c44");
        assert_false(id128_equal(&l->entries[1].uuid, &l->entries[2].uuid));
        assert_false(id128_equal(&l->entries[1].fs_uuid, &l->entries[2].fs_uuid));
        assert_false(id128_equal(&l->entries[1].fs_uuid, &l->entries[1].hash_seed));
}

static void test_deterministic_and_seeded(void **state)
{
        _cleanup_(part_layout_freep) struct part_layout *a = NULL, *b = NULL, *c = NULL;
        const struct part_request req[] = { { .mountpoint = "/", .grow = true, .fstype = "ext4" } };
        uint8_t other[32] = { 0 };

        assert_int_equal(part_plan(req, 1, GiB, "x86-64", seed, &a, NULL), 0);
        assert_int_equal(part_plan(req, 1, GiB, "x86-64", seed, &b, NULL), 0);
        assert_int_equal(part_plan(req, 1, GiB, "x86-64", other, &c, NULL), 0);
        assert_true(id128_equal(&a->entries[0].uuid, &b->entries[0].uuid));
        assert_true(id128_equal(&a->entries[0].fs_uuid, &b->entries[0].fs_uuid));
        assert_true(id128_equal(&a->disk_uuid, &b->disk_uuid));
        assert_false(id128_equal(&a->entries[0].uuid, &c->entries[0].uuid));
        assert_false(id128_equal(&a->disk_uuid, &c->disk_uuid));
}

static void test_arm64_root(void **state)
{
        id128_t t;
        char buf[ID128_STRING_MAX];

        assert_int_equal(part_role_type(PART_ROLE_ROOT, "arm64", &t), 0);
        assert_string_equal(id128_to_string(&t, buf), "b921b045-1df0-41c3-af44-4c6f280d3fae");
        assert_int_equal(part_role_type(PART_ROLE_ESP, "arm64", &t), 0);
        assert_string_equal(id128_to_string(&t, buf), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_int_equal(part_role_from_mountpoint("/efi"), PART_ROLE_ESP);
        assert_int_equal(part_role_from_mountpoint("/boot"), PART_ROLE_XBOOTLDR);
        assert_int_equal(part_role_from_mountpoint("/var/tmp"), PART_ROLE_VAR_TMP);
        assert_int_equal(part_role_from_mountpoint("/opt"), PART_ROLE_GENERIC);
        assert_string_equal(part_role_default_fstype(PART_ROLE_ROOT, "erofs"), "erofs");
        assert_null(part_role_default_fstype(PART_ROLE_BIOS_BOOT, "ext4"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_default_layout),
                cmocka_unit_test(test_alignment_and_order),
                cmocka_unit_test(test_grow_shares_and_maxsize),
                cmocka_unit_test(test_too_small),
                cmocka_unit_test(test_invalid),
                cmocka_unit_test(test_same_type_twice),
                cmocka_unit_test(test_deterministic_and_seeded),
                cmocka_unit_test(test_arm64_root),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
