/* Owns the GPT of an image file: libparted writes the table, a post-pass
 * sets what libparted 3.5 cannot (type GUIDs, unique GUIDs, the disk GUID)
 * plus the attribute bits and the protective MBR's table, and recomputes
 * the CRCs of both copies.
 *
 * Why a post-pass and not an API: libparted 3.5 (Debian 12) has no call
 * for a partition's type GUID (only flags mapped to a few fixed types), its
 * unique GUID or the disk GUID, and it draws all three from a random source.
 * libfdisk could set them, but the design confines partition-table writing
 * to libparted; libguestfs can as well, but needs its appliance. The
 * post-pass edits a handful of fixed fields with the header and
 * entry-array CRC32s recomputed by zlib's crc32(), the CRC the UEFI
 * specification uses, and checks that libparted put each partition where
 * the plan says before it touches anything. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include <parted/parted.h>
#include <zlib.h>

#include "gpt.h"
#include "shared/log.h"
#include "shared/macro.h"

#define GPT_SIGNATURE "EFI PART"
#define GPT_HEADER_MIN 92
#define GPT_ENTRY_SIZE 128
#define GPT_ENTRIES_MAX 1024
/* Entry attribute bit 2: legacy BIOS bootable (UEFI spec 2.10, table 5.7). */
#define GPT_ATTR_LEGACY_BIOS_BOOTABLE (UINT64_C(1) << 2)
/* Bit 60: read-only (Discoverable Partitions Specification), the sealed root. */
#define GPT_ATTR_READ_ONLY (UINT64_C(1) << 60)

/* Byte offsets in the header and in an entry (UEFI spec 2.10, 5.3). */
enum {
        HDR_SIGNATURE = 0,
        HDR_SIZE = 12,
        HDR_CRC = 16,
        HDR_MY_LBA = 24,
        HDR_ALTERNATE_LBA = 32,
        HDR_DISK_GUID = 56,
        HDR_ENTRIES_LBA = 72,
        HDR_N_ENTRIES = 80,
        HDR_ENTRY_SIZE = 84,
        HDR_ENTRIES_CRC = 88,
        ENT_TYPE = 0,
        ENT_UNIQUE = 16,
        ENT_FIRST_LBA = 32,
        ENT_LAST_LBA = 40,
        ENT_ATTRIBUTES = 48,
};

DEFINE_TRIVIAL_CLEANUP_FUNC(PedDevice *, ped_device_destroy);
DEFINE_TRIVIAL_CLEANUP_FUNC(PedDisk *, ped_disk_destroy);
DEFINE_TRIVIAL_CLEANUP_FUNC(PedConstraint *, ped_constraint_destroy);

static uint32_t get_le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
        return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void put_le32(uint8_t *p, uint32_t v)
{
        for (size_t i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
        for (size_t i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

void gpt_guid_to_disk(const id128_t *id, uint8_t ret[16])
{
        const uint8_t *b = id->bytes;
        const uint8_t d[16] = { b[3], b[2], b[1],  b[0],  b[5],  b[4],  b[7],  b[6],
                                b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15] };

        memcpy(ret, d, 16);
}

static int pread_full(int fd, void *buf, size_t size, uint64_t offset)
{
        ssize_t n = pread(fd, buf, size, (off_t)offset);

        if (n < 0)
                return -errno;
        return (size_t)n == size ? 0 : -EIO;
}

static int pwrite_full(int fd, const void *buf, size_t size, uint64_t offset)
{
        ssize_t n = pwrite(fd, buf, size, (off_t)offset);

        if (n < 0)
                return -errno;
        return (size_t)n == size ? 0 : -EIO;
}

/* Reads the header at lba and checks what the post-pass relies on. */
static int header_read(int fd, uint64_t lba, uint8_t hdr[static PART_SECTOR_SIZE])
{
        uint32_t size;
        int r;

        r = pread_full(fd, hdr, PART_SECTOR_SIZE, lba * PART_SECTOR_SIZE);
        if (r < 0)
                return r;
        size = get_le32(hdr + HDR_SIZE);
        if (memcmp(hdr + HDR_SIGNATURE, GPT_SIGNATURE, 8) != 0 || size < GPT_HEADER_MIN || size > PART_SECTOR_SIZE ||
            get_le64(hdr + HDR_MY_LBA) != lba || get_le32(hdr + HDR_ENTRY_SIZE) != GPT_ENTRY_SIZE ||
            get_le32(hdr + HDR_N_ENTRIES) == 0 || get_le32(hdr + HDR_N_ENTRIES) > GPT_ENTRIES_MAX)
                return -EBADMSG;
        return 0;
}

static void header_finish(uint8_t *hdr, const uint8_t disk_guid[16], uint32_t entries_crc)
{
        uint32_t size = get_le32(hdr + HDR_SIZE);

        memcpy(hdr + HDR_DISK_GUID, disk_guid, 16);
        put_le32(hdr + HDR_ENTRIES_CRC, entries_crc);
        put_le32(hdr + HDR_CRC, 0);
        put_le32(hdr + HDR_CRC, (uint32_t)crc32(0L, hdr, size));
}

/* The protective MBR's partition table: one 0xEE entry over the whole
 * disk (UEFI spec 2.10, 5.2.3), byte for byte what libparted writes. Set
 * here as well because Debian's libparted writes a hybrid table instead when
 * it runs on Apple hardware ("Apple mode", PARTED_GPT_APPLE), and the image
 * must not depend on the build host. The boot code area is left alone. */
static void pmbr_table(uint8_t mbr[static PART_SECTOR_SIZE], uint64_t disk_sectors)
{
        static const uint8_t entry[8] = { 0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff };
        uint64_t size = disk_sectors - 1;

        memset(mbr + 446, 0, 64);
        memcpy(mbr + 446, entry, sizeof(entry));
        put_le32(mbr + 446 + 8, 1);
        put_le32(mbr + 446 + 12, size > UINT32_MAX ? UINT32_MAX : (uint32_t)size);
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
}

/* Helper for gpt_write(): does not log; -ESRCH when libparted placed a
 * partition other than where the plan says. */
static int gpt_fixup(const char *path, const struct part_layout *l, bool legacy_boot)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ uint8_t *entries = NULL;
        uint8_t mbr[PART_SECTOR_SIZE], primary[PART_SECTOR_SIZE], backup[PART_SECTOR_SIZE], disk_guid[16];
        size_t n, entries_size;
        uint32_t crc;
        int r;

        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;

        r = pread_full(fd, mbr, sizeof(mbr), 0);
        if (r < 0)
                return r;
        r = header_read(fd, 1, primary);
        if (r < 0)
                return r;
        r = header_read(fd, get_le64(primary + HDR_ALTERNATE_LBA), backup);
        if (r < 0)
                return r;
        n = get_le32(primary + HDR_N_ENTRIES);
        if (get_le32(backup + HDR_N_ENTRIES) != n || n < l->n_entries)
                return -EBADMSG;

        entries_size = n * GPT_ENTRY_SIZE;
        entries = malloc(entries_size);
        if (!entries)
                return -ENOMEM;
        r = pread_full(fd, entries, entries_size, get_le64(primary + HDR_ENTRIES_LBA) * PART_SECTOR_SIZE);
        if (r < 0)
                return r;

        for (size_t i = 0; i < l->n_entries; i++) {
                const struct part_entry *e = &l->entries[i];
                uint8_t *p;

                if (e->number == 0 || e->number > n)
                        return -EINVAL;
                p = entries + (size_t)(e->number - 1) * GPT_ENTRY_SIZE;
                if (get_le64(p + ENT_FIRST_LBA) != e->start / PART_SECTOR_SIZE ||
                    get_le64(p + ENT_LAST_LBA) != (e->start + e->size) / PART_SECTOR_SIZE - 1)
                        return -ESRCH;
                gpt_guid_to_disk(&e->type, p + ENT_TYPE);
                gpt_guid_to_disk(&e->uuid, p + ENT_UNIQUE);
                put_le64(p + ENT_ATTRIBUTES,
                         (legacy_boot && e->role == PART_ROLE_ESP ? GPT_ATTR_LEGACY_BIOS_BOOTABLE : 0) |
                                 (e->read_only ? GPT_ATTR_READ_ONLY : 0));
        }
        crc = (uint32_t)crc32(0L, entries, (uInt)entries_size);
        gpt_guid_to_disk(&l->disk_uuid, disk_guid);
        header_finish(primary, disk_guid, crc);
        header_finish(backup, disk_guid, crc);

        pmbr_table(mbr, l->disk_size / PART_SECTOR_SIZE);

        r = pwrite_full(fd, mbr, sizeof(mbr), 0);
        if (r < 0)
                return r;
        r = pwrite_full(fd, entries, entries_size, get_le64(primary + HDR_ENTRIES_LBA) * PART_SECTOR_SIZE);
        if (r < 0)
                return r;
        r = pwrite_full(fd, entries, entries_size, get_le64(backup + HDR_ENTRIES_LBA) * PART_SECTOR_SIZE);
        if (r < 0)
                return r;
        r = pwrite_full(fd, primary, sizeof(primary), get_le64(primary + HDR_MY_LBA) * PART_SECTOR_SIZE);
        if (r < 0)
                return r;
        r = pwrite_full(fd, backup, sizeof(backup), get_le64(backup + HDR_MY_LBA) * PART_SECTOR_SIZE);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

/* libparted reports problems through a global handler; keep the last
 * message for our own error line instead of letting it print or prompt. */
static char parted_message[256];

static PedExceptionOption parted_handler(PedException *ex)
{
        snprintf(parted_message, sizeof(parted_message), "%s", ex->message ? ex->message : "unknown error");
        if (ex->options & PED_EXCEPTION_CANCEL)
                return PED_EXCEPTION_CANCEL;
        return PED_EXCEPTION_UNHANDLED;
}

static int parted_write(const char *path, const struct part_layout *l)
{
        _cleanup_(ped_device_destroyp) PedDevice *dev = NULL;
        _cleanup_(ped_disk_destroyp) PedDisk *disk = NULL;
        const PedDiskType *gpt;

        dev = ped_device_get(path);
        if (!dev)
                return log_error_errno(-EIO, "cannot open '%s' with libparted: %s", path, parted_message);
        if (dev->sector_size != PART_SECTOR_SIZE)
                return log_error_errno(-EINVAL, "'%s' has %lld-byte sectors, expected %d", path, dev->sector_size,
                                       PART_SECTOR_SIZE);
        gpt = ped_disk_type_get("gpt");
        if (!gpt)
                return log_error_errno(-EOPNOTSUPP, "libparted has no GPT support");
        disk = ped_disk_new_fresh(dev, gpt);
        if (!disk)
                return log_error_errno(-EIO, "cannot create a GPT on '%s': %s", path, parted_message);

        for (size_t i = 0; i < l->n_entries; i++) {
                const struct part_entry *e = &l->entries[i];
                _cleanup_(ped_constraint_destroyp) PedConstraint *c = NULL;
                PedSector start = (PedSector)(e->start / PART_SECTOR_SIZE);
                PedSector end = (PedSector)((e->start + e->size) / PART_SECTOR_SIZE - 1);
                PedPartition *p;

                if (e->start % PART_SECTOR_SIZE || e->size % PART_SECTOR_SIZE || e->size == 0)
                        return log_error_errno(-EINVAL, "partition %u '%s' is not sector-aligned", e->number, e->name);
                p = ped_partition_new(disk, PED_PARTITION_NORMAL, NULL, start, end);
                if (!p)
                        return log_error_errno(-EIO, "cannot create partition %u '%s': %s", e->number, e->name,
                                               parted_message);
                c = ped_constraint_exact(&p->geom);
                if (!c || !ped_disk_add_partition(disk, p, c)) {
                        ped_partition_destroy(p);
                        return log_error_errno(-EIO, "cannot add partition %u '%s' at sector %lld: %s", e->number,
                                               e->name, start, parted_message);
                }
                if (p->num != (int)e->number)
                        return log_error_errno(-EIO, "libparted numbered partition '%s' %d, the plan says %u", e->name,
                                               p->num, e->number);
                if (!ped_partition_set_name(p, e->name))
                        return log_error_errno(-EIO, "cannot name partition %u '%s': %s", e->number, e->name,
                                               parted_message);
        }

        /* To the device only: a regular file has no kernel view to update. */
        if (!ped_disk_commit_to_dev(disk))
                return log_error_errno(-EIO, "cannot write the GPT to '%s': %s", path, parted_message);
        return 0;
}

int gpt_write(const char *path, const struct part_layout *l, bool legacy_boot)
{
        PedExceptionHandler *old = ped_exception_get_handler();
        int r;

        parted_message[0] = '\0';
        ped_exception_set_handler(parted_handler);
        r = parted_write(path, l);
        ped_exception_set_handler(old);
        if (r < 0)
                return r;

        r = gpt_fixup(path, l, legacy_boot);
        if (r == -ESRCH)
                return log_error_errno(-EIO, "libparted placed a partition of '%s' other than planned", path);
        if (r < 0)
                return log_error_errno(r, "cannot set the partition GUIDs in the GPT of '%s': %m", path);
        return 0;
}
