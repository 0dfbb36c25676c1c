/* Owns the disk stage: the image file from first byte to rename-ready. It
 * creates the file sparse at the planned size, has gpt.c write the
 * partition table and fs.c make each filesystem in place, and removes the
 * file again when anything fails, so nothing half-written looks finished. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"
#include "fs.h"
#include "gpt.h"
#include "shared/log.h"
#include "shared/macro.h"

/* Checks everything that can be checked before a byte is written. */
static int disk_check(const struct spec *s, const struct disk_inputs *in)
{
        const struct part_layout *l = s->layout;

        if (!l || l->n_entries == 0)
                return log_error_errno(-EINVAL, "the spec has no partition layout");
        if (l->disk_size == 0 || l->disk_size % PART_SECTOR_SIZE != 0)
                return log_error_errno(-EINVAL, "the disk size %" PRIu64 " is not a multiple of %d bytes", l->disk_size,
                                       PART_SECTOR_SIZE);
        for (size_t i = 0; i < l->n_entries; i++) {
                const struct part_entry *e = &l->entries[i];
                const struct fs_ops *ops;

                if (e->start < l->first_usable || e->start + e->size > l->last_usable)
                        return log_error_errno(-EINVAL, "partition %u '%s' lies outside the usable area of the disk",
                                               e->number, e->name);
                if (!e->fstype)
                        continue;
                ops = fs_ops_find(e->fstype);
                if (!ops)
                        return log_error_errno(-EOPNOTSUPP, "partition %u '%s' has the unknown filesystem type '%s'",
                                               e->number, e->name, e->fstype);
                if (!ops->make)
                        return log_error_errno(-EOPNOTSUPP,
                                               "%s filesystems are not supported yet: partition %u '%s' needs one "
                                               "(use ext4)",
                                               e->fstype, e->number, e->name);
        }
        if (in->root_tar && access(in->root_tar, R_OK) < 0)
                return log_error_errno(-errno, "cannot read the root filesystem tar '%s': %m", in->root_tar);
        if (in->esp_dir && access(in->esp_dir, R_OK | X_OK) < 0)
                return log_error_errno(-errno, "cannot read the ESP staging directory '%s': %m", in->esp_dir);
        return 0;
}

static int disk_fill(const struct spec *s, const struct disk_inputs *in, const char *path, const char *scratch)
{
        const struct part_layout *l = s->layout;
        size_t esp = SIZE_MAX;
        int r;

        r = gpt_write(path, l, s->boot_mode == BOOT_MODE_BIOS || s->boot_mode == BOOT_MODE_BOTH);
        if (r < 0)
                return r;

        /* the ESP last: what it holds may depend on the other partitions */
        for (size_t k = 0; k <= l->n_entries; k++) {
                size_t i = k < l->n_entries ? k : esp;
                const struct part_entry *e;

                if (k < l->n_entries && l->entries[k].role == PART_ROLE_ESP) {
                        esp = k;
                        continue;
                }
                if (k == l->n_entries) {
                        if (in->before_esp) {
                                r = in->before_esp(path, in->userdata);
                                if (r < 0)
                                        return r;
                        }
                        if (esp == SIZE_MAX)
                                break;
                }
                e = &l->entries[i];
                struct fs_target t = {
                        .image = path,
                        .entry = e,
                        .scratch_dir = scratch,
                        .source_date_epoch = s->source_date_epoch,
                        .tar = e->role == PART_ROLE_ROOT ? in->root_tar : NULL,
                        .dir = e->role == PART_ROLE_ESP ? in->esp_dir : NULL,
                };

                /* No filesystem (biosboot): the partition stays zeros, a hole. */
                if (!e->fstype)
                        continue;
                log_debug("making %s on partition %u '%s'", e->fstype, e->number, e->name);
                r = fs_make(fs_ops_find(e->fstype), &t);
                if (r < 0)
                        return r;
        }
        return 0;
}

int disk_build(const struct spec *s, const struct disk_inputs *in, const char *path)
{
        static const struct disk_inputs none = { 0 };
        _cleanup_free_ char *scratch = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        in = in ? in : &none;
        r = disk_check(s, in);
        if (r < 0)
                return r;

        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return log_error_errno(-errno, "cannot create the image '%s': %m", path);
        /* From here on a failure removes path. */
        if (ftruncate(fd, (off_t)s->layout->disk_size) < 0) {
                r = log_error_errno(-errno, "cannot size the image '%s': %m", path);
                goto finish;
        }
        if ((in->work_dir ? asprintf(&scratch, "%s/disk-scratch-XXXXXX", in->work_dir)
                          : asprintf(&scratch, "%s.scratch-XXXXXX", path)) < 0) {
                scratch = NULL;
                r = log_error_errno(-ENOMEM, "out of memory");
                goto finish;
        }
        if (!mkdtemp(scratch)) {
                r = log_error_errno(-errno, "cannot create a scratch directory beside '%s': %m", path);
                scratch = x_free(scratch);
                goto finish;
        }

        r = disk_fill(s, in, path, scratch);
        if (r >= 0 && fsync(fd) < 0)
                r = log_error_errno(-errno, "cannot write the image '%s': %m", path);

finish:
        if (scratch && rmdir(scratch) < 0)
                log_warning("cannot remove the scratch directory '%s': %m", scratch);
        if (r < 0 && unlink(path) < 0)
                log_warning("cannot remove the partial image '%s': %m", path);
        return r;
}
