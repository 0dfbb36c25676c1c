/* Owns the partition layout plan: roles, DPS type GUIDs, sizes in bytes and
 * the derivation of partition, filesystem and disk GUIDs from the seed. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "part.h"

/* GUIDs from the Discoverable Partitions Specification (uapi-group.org). */
static const struct {
        const char *name;
        const char *type_x86_64;
        const char *type_arm64; /* NULL = same as x86-64 */
        const char *default_name;
} roles[_PART_ROLE_MAX] = {
        [PART_ROLE_BIOS_BOOT] = { "biosboot", "21686148-6449-6e6f-744e-656564454649", NULL, "biosboot" },
        [PART_ROLE_ESP] = { "esp", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", NULL, "esp" },
        [PART_ROLE_XBOOTLDR] = { "xbootldr", "bc13c2ff-59e6-4262-a352-b275fd6f7172", NULL, "xbootldr" },
        [PART_ROLE_ROOT] = { "root", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "b921b045-1df0-41c3-af44-4c6f280d3fae",
                             "root" },
        [PART_ROLE_ROOT_VERITY] = { "root-verity", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
                                    "df3300ce-d69f-4c92-978c-9bfb0f38d820", "root-verity" },
        [PART_ROLE_SWAP] = { "swap", "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", NULL, "swap" },
        [PART_ROLE_HOME] = { "home", "933ac7e1-2eb4-4f13-b844-0e14e2aef915", NULL, "home" },
        [PART_ROLE_SRV] = { "srv", "3b8f8425-20e0-4f3b-907f-1a25a76f98e8", NULL, "srv" },
        [PART_ROLE_VAR] = { "var", "4d21b016-b534-45c2-a9fb-5c16e091fd2d", NULL, "var" },
        [PART_ROLE_VAR_TMP] = { "var-tmp", "7ec6f557-3bc5-4aca-b293-16ef5df639d1", NULL, "var-tmp" },
        [PART_ROLE_GENERIC] = { "linux-generic", "0fc63daf-8483-4772-8e79-3d69d8477de4", NULL, "data" },
};

static const struct {
        const char *mountpoint;
        enum part_role role;
} mountpoints[] = {
        /* clang-format off */
        { "biosboot",  PART_ROLE_BIOS_BOOT },
        { "/boot/efi", PART_ROLE_ESP },
        { "/efi",      PART_ROLE_ESP },
        { "/boot",     PART_ROLE_XBOOTLDR },
        { "/",         PART_ROLE_ROOT },
        { "root-verity", PART_ROLE_ROOT_VERITY },
        { "swap",      PART_ROLE_SWAP },
        { "/home",     PART_ROLE_HOME },
        { "/srv",      PART_ROLE_SRV },
        { "/var",      PART_ROLE_VAR },
        { "/var/tmp",  PART_ROLE_VAR_TMP },
        /* clang-format on */
};

enum part_role part_role_from_mountpoint(const char *mountpoint)
{
        for (size_t i = 0; i < ELEMENTSOF(mountpoints); i++)
                if (streq(mountpoint, mountpoints[i].mountpoint))
                        return mountpoints[i].role;
        return PART_ROLE_GENERIC;
}

const char *part_role_to_string(enum part_role role)
{
        return role < _PART_ROLE_MAX ? roles[role].name : NULL;
}

int part_role_type(enum part_role role, const char *arch, id128_t *ret)
{
        const char *s;

        if (role >= _PART_ROLE_MAX)
                return -EINVAL;
        if (streq(arch, "x86-64"))
                s = roles[role].type_x86_64;
        else if (streq(arch, "arm64"))
                s = roles[role].type_arm64 ? roles[role].type_arm64 : roles[role].type_x86_64;
        else
                return -EOPNOTSUPP;
        return id128_from_string(s, ret);
}

const char *part_role_default_fstype(enum part_role role, const char *root_fstype)
{
        switch (role) {
        case PART_ROLE_BIOS_BOOT:
                return NULL;
        case PART_ROLE_ESP:
        case PART_ROLE_XBOOTLDR:
                /* systemd-boot reads both through the firmware's FAT driver */
                return "vfat";
        case PART_ROLE_ROOT:
                return root_fstype;
        case PART_ROLE_SWAP:
                return "swap";
        case PART_ROLE_ROOT_VERITY:
                return NULL; /* a hash tree, written by verity.c */
        default:
                return "ext4";
        }
}

static uint64_t align_up(uint64_t v)
{
        return (v + PART_ALIGN - 1) / PART_ALIGN * PART_ALIGN;
}

struct part_layout *part_layout_free(struct part_layout *l)
{
        if (!l)
                return NULL;
        for (size_t i = 0; i < l->n_entries; i++) {
                free(l->entries[i].mountpoint);
                free(l->entries[i].fstype);
                free(l->entries[i].name);
                free(l->entries[i].label);
        }
        free(l->entries);
        free(l);
        return NULL;
}

/* Grow partitions take equal shares of what is left, in PART_ALIGN steps,
 * each up to its max_size; a share one cannot take goes round again to the
 * others, as Anaconda does. */
static void distribute_free_space(struct part_entry *e, const struct part_request *req, size_t n, uint64_t free_space)
{
        for (;;) {
                size_t n_growing = 0;
                uint64_t share, given = 0;

                for (size_t i = 0; i < n; i++)
                        if (req[i].grow && (req[i].max_size == 0 || e[i].size < req[i].max_size))
                                n_growing++;
                if (n_growing == 0)
                        return;
                share = free_space / n_growing / PART_ALIGN * PART_ALIGN;
                if (share == 0)
                        share = free_space >= PART_ALIGN ? PART_ALIGN : 0;
                if (share == 0)
                        return;
                for (size_t i = 0; i < n && free_space >= PART_ALIGN; i++) {
                        uint64_t add = share;

                        if (!req[i].grow || (req[i].max_size != 0 && e[i].size >= req[i].max_size))
                                continue;
                        if (req[i].max_size != 0 && e[i].size + add > req[i].max_size)
                                add = req[i].max_size - e[i].size;
                        if (add > free_space)
                                add = free_space / PART_ALIGN * PART_ALIGN;
                        e[i].size += add;
                        free_space -= add;
                        given += add;
                }
                if (given == 0)
                        return;
        }
}

static int derive_ids(struct part_layout *l, const char *arch, const uint8_t seed[32])
{
        id128_derive(seed, "disk-uuid", strlen("disk-uuid"), &l->disk_uuid);

        for (size_t i = 0; i < l->n_entries; i++) {
                struct part_entry *e = &l->entries[i];
                uint8_t data[16 + 8];
                uint64_t nth = 0;
                size_t len = 16;
                int r;

                r = part_role_type(e->role, arch, &e->type);
                if (r < 0)
                        return r;
                /* Like systemd-repart: HMAC(seed, type) for the first partition
                 * of a type, HMAC(seed, type || le64(n)) for the n-th after it. */
                for (size_t j = 0; j < i; j++)
                        if (id128_equal(&l->entries[j].type, &e->type))
                                nth++;
                memcpy(data, e->type.bytes, 16);
                if (nth > 0) {
                        for (size_t b = 0; b < 8; b++)
                                data[16 + b] = (uint8_t)(nth >> (8 * b));
                        len += 8;
                }
                id128_derive(seed, data, len, &e->uuid);

                memcpy(data, "fs-uuid:", 8);
                memcpy(data + 8, e->uuid.bytes, 16);
                id128_derive(seed, data, 24, &e->fs_uuid);
                memcpy(data, "hashseed", 8);
                id128_derive(seed, data, 24, &e->hash_seed);
        }
        return 0;
}

int part_plan(const struct part_request *requests, size_t n, uint64_t disk_size, const char *arch,
              const uint8_t seed[32], struct part_layout **ret, uint64_t *ret_needed)
{
        _cleanup_(part_layout_freep) struct part_layout *l = NULL;
        uint64_t usable_end, total = PART_ALIGN, pos;
        int r;

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->entries = calloc(n ? n : 1, sizeof(*l->entries));
        if (!l->entries)
                return -ENOMEM;
        l->n_entries = n;
        l->disk_size = disk_size;
        l->first_usable = PART_ALIGN;

        for (size_t i = 0; i < n; i++) {
                struct part_entry *e = &l->entries[i];
                const char *name;

                if (requests[i].size == 0 && !requests[i].grow)
                        return -EINVAL;
                e->number = (unsigned)i + 1;
                e->role = part_role_from_mountpoint(requests[i].mountpoint);
                e->size = align_up(requests[i].size ? requests[i].size : PART_ALIGN);
                e->grow = requests[i].grow;
                name = requests[i].label ? requests[i].label : roles[e->role].default_name;
                e->mountpoint = strdup(requests[i].mountpoint);
                e->name = strdup(name);
                if (!e->mountpoint || !e->name)
                        return -ENOMEM;
                if (requests[i].fstype) {
                        e->fstype = strdup(requests[i].fstype);
                        if (!e->fstype)
                                return -ENOMEM;
                }
                if (e->fstype && !streq(e->fstype, "swap")) {
                        e->label = strdup(name);
                        if (!e->label)
                                return -ENOMEM;
                }
                if (total > UINT64_MAX - e->size)
                        return -ERANGE;
                total += e->size;
        }

        /* The usable area ends on an alignment boundary before the backup GPT. */
        usable_end =
                disk_size > PART_GPT_BACKUP_SIZE ? (disk_size - PART_GPT_BACKUP_SIZE) / PART_ALIGN * PART_ALIGN : 0;
        if (usable_end < total) {
                if (ret_needed)
                        *ret_needed = total + PART_ALIGN;
                return -ENOSPC;
        }
        l->last_usable = usable_end;
        distribute_free_space(l->entries, requests, n, usable_end - total);

        pos = PART_ALIGN;
        for (size_t i = 0; i < n; i++) {
                l->entries[i].start = pos;
                pos += l->entries[i].size;
        }

        r = derive_ids(l, arch, seed);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}
