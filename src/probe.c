/* Owns reading an image back: libparted for the table and the layout,
 * libblkid for what libparted 3.5 cannot say (GPT type, partition and disk
 * GUIDs, attribute bits) and for the filesystems, libguestfs for the OS.
 * The two partition readers are cross-checked; a disagreement is a warning
 * in the result, not a failure, since inspect exists to look at images
 * that may be broken. libguestfs runs in a child process with a deadline:
 * guestfs_launch has no timeout and hangs for ever where /dev/kvm exists
 * but does not work (reference/tech.md 7). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <blkid/blkid.h>
#include <guestfs.h>
#include <parted/parted.h>

#include "part.h"
#include "probe.h"
#include "qemu.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/strv.h"
#include "shared/time-util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(blkid_probe, blkid_free_probe);
DEFINE_TRIVIAL_CLEANUP_FUNC(PedDevice *, ped_device_destroy);
DEFINE_TRIVIAL_CLEANUP_FUNC(PedDisk *, ped_disk_destroy);
DEFINE_TRIVIAL_CLEANUP_FUNC(guestfs_h *, guestfs_close);

/* How long KVM gets to bring the appliance up before we assume it hangs
 * and fall back to TCG; a working KVM launches in a few seconds. */
#define PROBE_KVM_LAUNCH_TIMEOUT 60
/* After the child sent its result, how long it may take to shut down. */
#define PROBE_CHILD_GRACE_MS 10000

static const char *const os_status_names[_PROBE_OS_STATUS_MAX] = {
        [PROBE_OS_SKIPPED] = "skipped",
        [PROBE_OS_FOUND] = "found",
        [PROBE_OS_NOT_FOUND] = "not-found",
        [PROBE_OS_FAILED] = "failed",
};

const char *probe_os_status_to_string(enum probe_os_status s)
{
        return s < _PROBE_OS_STATUS_MAX ? os_status_names[s] : NULL;
}

static const struct {
        unsigned bit;
        const char *name;
} gpt_attribute_names[] = {
        { 0, "required" }, { 1, "no-block-io" }, { 2, "legacy-bios-bootable" }, { 59, "growfs" }, { 60, "read-only" },
        { 62, "hidden" },  { 63, "no-auto" },
};

int probe_gpt_attributes_to_strv(uint64_t attributes, char ***l)
{
        for (unsigned bit = 0; bit < 64; bit++) {
                const char *name = NULL;
                char buf[16];
                int r;

                if (!(attributes & (UINT64_C(1) << bit)))
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(gpt_attribute_names); i++)
                        if (gpt_attribute_names[i].bit == bit)
                                name = gpt_attribute_names[i].name;
                if (!name) {
                        snprintf(buf, sizeof(buf), "bit-%u", bit);
                        name = buf;
                }
                r = strv_extend(l, name);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void probe_fs_done(struct probe_fs *fs)
{
        free(fs->type);
        free(fs->label);
        free(fs->uuid);
        free(fs->version);
        free(fs->usage);
        free(fs->volume_id);
}

static void probe_os_done(struct probe_os *os)
{
        char **strings[] = {
                &os->error,    &os->root,          &os->type, &os->distro,        &os->product_name,
                &os->version,  &os->hostname,      &os->arch, &os->os_release_id, &os->os_release_version_id,
                &os->image_id, &os->image_version, &os->accel
        };

        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                *strings[i] = x_free(*strings[i]);
        *os = (struct probe_os){ .status = PROBE_OS_SKIPPED };
}

struct probe_image *probe_image_free(struct probe_image *img)
{
        if (!img)
                return NULL;
        for (size_t i = 0; i < img->n_partitions; i++) {
                struct probe_partition *p = &img->partitions[i];
                free(p->name);
                free(p->type);
                free(p->uuid);
                probe_fs_done(&p->fs);
        }
        free(img->partitions);
        free(img->path);
        free(img->table);
        free(img->disk_uuid);
        strv_free(img->warnings);
        probe_os_done(&img->os);
        free(img);
        return NULL;
}

static int strdup_or_null(const char *s, char **ret)
{
        char *c = NULL;

        if (s) {
                c = strdup(s);
                if (!c)
                        return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static int add_warning(struct probe_image *img, const char *fmt, ...) _printf_(2, 3);
static int add_warning(struct probe_image *img, const char *fmt, ...)
{
        va_list ap;
        char *s;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -ENOMEM;
        /* libparted's messages span lines; a warning is one. */
        for (char *c = s; *c; c++)
                if (*c == '\n')
                        *c = ' ';
        return strv_consume(&img->warnings, s);
}

/* GUIDs in one spelling (lower case), whatever the library gave. */
static int normalize_guid(const char *s, char **ret)
{
        char buf[ID128_STRING_MAX];
        id128_t id;

        if (!s || id128_from_string(s, &id) < 0)
                return strdup_or_null(s, ret);
        return strdup_or_null(id128_to_string(&id, buf), ret);
}

/* The DPS role of a GPT type GUID, for any architecture part.h knows. */
static const char *role_from_type(const char *type)
{
        static const char *const arches[] = { "x86-64", "arm64" };
        id128_t id, t;

        if (!type || id128_from_string(type, &id) < 0)
                return NULL;
        for (enum part_role role = 0; role < _PART_ROLE_MAX; role++)
                for (size_t a = 0; a < ELEMENTSOF(arches); a++)
                        if (part_role_type(role, arches[a], &t) >= 0 && id128_equal(&t, &id))
                                return part_role_to_string(role);
        return NULL;
}

/* libparted reports problems through a global exception handler that by
 * default prints and, for "Fix/Ignore?" questions, waits for an answer.
 * While we read, the handler collects the messages and answers Ignore (we
 * never write), else Cancel. */
static char **parted_messages;

static PedExceptionOption parted_handler(PedException *ex)
{
        /* Out of memory here only loses a message. */
        (void)strv_extend(&parted_messages, ex->message);
        if (ex->options & PED_EXCEPTION_IGNORE)
                return PED_EXCEPTION_IGNORE;
        if (ex->options & PED_EXCEPTION_CANCEL)
                return PED_EXCEPTION_CANCEL;
        return PED_EXCEPTION_UNHANDLED;
}

/* The layout from libparted: table type, sizes, numbers, extents, names.
 * Returns -EMEDIUMTYPE when libparted sees no table, -EIO when it fails. */
static int read_parted(struct probe_image *img)
{
        _cleanup_(ped_device_destroyp) PedDevice *dev = NULL;
        _cleanup_(ped_disk_destroyp) PedDisk *disk = NULL;
        PedDiskType *type;
        bool names;
        size_t n = 0;

        dev = ped_device_get(img->path);
        if (!dev)
                return -EIO;
        type = ped_disk_probe(dev);
        /* "loop" is libparted's name for a bare filesystem: no table */
        if (!type || streq(type->name, "loop"))
                return -EMEDIUMTYPE;
        disk = ped_disk_new(dev);
        if (!disk)
                return -EIO;

        /* libblkid names the MBR table "dos"; so do we. */
        img->table = strdup(streq(disk->type->name, "msdos") ? "dos" : disk->type->name);
        if (!img->table)
                return -ENOMEM;
        img->sector_size = (unsigned)dev->sector_size;
        img->size = (uint64_t)dev->length * (uint64_t)dev->sector_size;
        names = ped_disk_type_check_feature(disk->type, PED_DISK_TYPE_PARTITION_NAME);

        for (PedPartition *p = ped_disk_next_partition(disk, NULL); p; p = ped_disk_next_partition(disk, p))
                if (p->num > 0)
                        n++;
        img->partitions = calloc(n ? n : 1, sizeof(struct probe_partition));
        if (!img->partitions)
                return -ENOMEM;

        for (PedPartition *p = ped_disk_next_partition(disk, NULL); p; p = ped_disk_next_partition(disk, p)) {
                struct probe_partition *e;
                const char *name;

                if (p->num <= 0) /* free space and metadata */
                        continue;
                e = &img->partitions[img->n_partitions++];
                e->number = (unsigned)p->num;
                e->start = (uint64_t)p->geom.start * img->sector_size;
                e->size = (uint64_t)p->geom.length * img->sector_size;
                e->end = e->start + e->size - 1;
                name = names ? ped_partition_get_name(p) : NULL;
                if (strdup_or_null(name, &e->name) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static struct probe_partition *find_partition(struct probe_image *img, unsigned number)
{
        for (size_t i = 0; i < img->n_partitions; i++)
                if (img->partitions[i].number == number)
                        return &img->partitions[i];
        return NULL;
}

/* What libparted cannot say: GUIDs and attribute bits, from libblkid's
 * partition prober, cross-checked against the layout libparted read. */
static int read_blkid_table(struct probe_image *img, int fd)
{
        _cleanup_(blkid_free_probep) blkid_probe pr = NULL;
        blkid_partlist ls;
        blkid_parttable tab;
        int n, r;

        pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        if (blkid_probe_set_device(pr, fd, 0, 0) < 0)
                return -EIO;
        blkid_probe_enable_superblocks(pr, 0);
        blkid_probe_enable_partitions(pr, 1);
        ls = blkid_probe_get_partitions(pr);
        tab = ls ? blkid_partlist_get_table(ls) : NULL;
        if (!tab) {
                /* libparted saw a table (we only get here then); say so. */
                return add_warning(img, "libblkid finds no partition table where libparted finds %s", img->table);
        }
        if (!streq_ptr(blkid_parttable_get_type(tab), img->table))
                r = add_warning(img, "libblkid reads a '%s' table where libparted reads '%s'",
                                strna(blkid_parttable_get_type(tab)), img->table);
        else
                r = 0;
        if (r < 0)
                return r;
        if (streq(img->table, "dos") && blkid_parttable_get_id(tab))
                /* the MBR disk id as fdisk and sfdisk print it */
                r = asprintf(&img->disk_uuid, "0x%s", blkid_parttable_get_id(tab)) < 0 ? -ENOMEM : 0;
        else
                r = normalize_guid(blkid_parttable_get_id(tab), &img->disk_uuid);
        if (r < 0)
                return r;

        n = blkid_partlist_numof_partitions(ls);
        for (int i = 0; i < n; i++) {
                blkid_partition par = blkid_partlist_get_partition(ls, i);
                struct probe_partition *e;
                uint64_t start;
                int partno;

                if (!par)
                        continue;
                partno = blkid_partition_get_partno(par);
                start = (uint64_t)blkid_partition_get_start(par) * 512;
                e = partno > 0 ? find_partition(img, (unsigned)partno) : NULL;
                if (!e) {
                        r = add_warning(img, "libblkid finds partition %d that libparted does not", partno);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (start != e->start || (uint64_t)blkid_partition_get_size(par) * 512 != e->size) {
                        r = add_warning(img, "partition %u: libblkid and libparted disagree on its extent", e->number);
                        if (r < 0)
                                return r;
                }
                if (blkid_partition_get_type_string(par))
                        r = normalize_guid(blkid_partition_get_type_string(par), &e->type);
                else
                        r = asprintf(&e->type, "0x%02x", (unsigned)blkid_partition_get_type(par)) < 0 ? -ENOMEM : 0;
                if (r < 0)
                        return r;
                r = normalize_guid(blkid_partition_get_uuid(par), &e->uuid);
                if (r < 0)
                        return r;
                e->attributes = blkid_partition_get_flags(par);
                if (streq(img->table, "gpt"))
                        e->role = role_from_type(e->type);
                /* libparted truncates nothing, but prefer its name when both
                 * have one; take libblkid's when libparted had none. */
                if (!e->name && blkid_partition_get_name(par)) {
                        r = strdup_or_null(blkid_partition_get_name(par), &e->name);
                        if (r < 0)
                                return r;
                }
        }
        for (size_t i = 0; i < img->n_partitions; i++)
                if (!img->partitions[i].type) {
                        r = add_warning(img, "libblkid does not find partition %u", img->partitions[i].number);
                        if (r < 0)
                                return r;
                }
        return 0;
}

static int lookup_value(blkid_probe pr, const char *name, char **ret)
{
        const char *v = NULL;

        if (blkid_probe_lookup_value(pr, name, &v, NULL) < 0)
                v = NULL;
        return strdup_or_null(v && *v ? v : NULL, ret);
}

/* The filesystem (or other signature) at [offset, offset+size) of fd.
 * Returns 0 also when there is none (fs->type NULL), -EIO on failure. */
static int read_blkid_fs(int fd, uint64_t offset, uint64_t size, struct probe_fs *fs, bool *ret_ambivalent)
{
        _cleanup_(blkid_free_probep) blkid_probe pr = NULL;
        int r;

        *ret_ambivalent = false;
        pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        if (blkid_probe_set_device(pr, fd, (blkid_loff_t)offset, (blkid_loff_t)size) < 0)
                return -EIO;
        blkid_probe_enable_partitions(pr, 0);
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE |
                                                      BLKID_SUBLKS_USAGE | BLKID_SUBLKS_VERSION);
        /* libblkid: 0 found, 1 nothing, -2 more than one signature, -1 error */
        r = blkid_do_safeprobe(pr);
        if (r == 1)
                return 0;
        if (r == -2) {
                *ret_ambivalent = true;
                return 0;
        }
        if (r < 0)
                return -EIO;

        if ((r = lookup_value(pr, "TYPE", &fs->type)) < 0 || (r = lookup_value(pr, "LABEL", &fs->label)) < 0 ||
            (r = lookup_value(pr, "UUID", &fs->uuid)) < 0 || (r = lookup_value(pr, "VERSION", &fs->version)) < 0 ||
            (r = lookup_value(pr, "USAGE", &fs->usage)) < 0)
                return r;
        if (fs->type && streq(fs->type, "vfat"))
                return strdup_or_null(fs->uuid, &fs->volume_id);
        return 0;
}

/* What a file without a partition table holds, for the error message. */
static void describe_content(int fd, char *buf, size_t size)
{
        _cleanup_(blkid_free_probep) blkid_probe pr = NULL;
        uint8_t magic[4];
        const char *type = NULL;

        if (pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) && memcmp(magic, "QFI\xfb", 4) == 0) {
                snprintf(buf, size,
                         "it is a qcow2 image; inspect reads raw images, convert with 'qemu-img convert -O raw'");
                return;
        }
        pr = blkid_new_probe();
        if (pr && blkid_probe_set_device(pr, fd, 0, 0) >= 0) {
                blkid_probe_enable_superblocks(pr, 1);
                if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "TYPE", &type, NULL) >= 0 && type) {
                        snprintf(buf, size, "it holds a bare %s filesystem, not a disk image", type);
                        return;
                }
        }
        snprintf(buf, size, "not a disk image");
}

int probe_image(const char *path, struct probe_image **ret)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        _cleanup_close_ int fd = -1;
        PedExceptionHandler *old_handler;
        struct stat st;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open image '%s': %m", path);
        if (fstat(fd, &st) < 0)
                return log_error_errno(-errno, "cannot open image '%s': %m", path);
        if (S_ISDIR(st.st_mode))
                return log_error_errno(-EISDIR, "cannot open image '%s': %m", path);

        img = calloc(1, sizeof(*img));
        if (!img)
                return log_error_errno(-ENOMEM, "cannot inspect '%s': %m", path);
        img->os.status = PROBE_OS_SKIPPED;
        img->path = strdup(path);
        if (!img->path)
                return log_error_errno(-ENOMEM, "cannot inspect '%s': %m", path);

        old_handler = ped_exception_get_handler();
        ped_exception_set_handler(parted_handler);
        r = read_parted(img);
        ped_exception_set_handler(old_handler);
        if (r == -EMEDIUMTYPE || (r == -EIO && !parted_messages)) {
                char what[160];

                parted_messages = strv_free(parted_messages);
                describe_content(fd, what, sizeof(what));
                return log_error_errno(-EMEDIUMTYPE, "'%s' has no partition table: %s", path, what);
        }
        if (r < 0) {
                r = log_error_errno(r, "cannot read the partition table of '%s': %s", path,
                                    r == -EIO && parted_messages ? parted_messages[strv_length(parted_messages) - 1]
                                                                 : strerror(-r));
                parted_messages = strv_free(parted_messages);
                return r;
        }
        STRV_FOREACH (m, parted_messages) {
                r = add_warning(img, "libparted: %s", *m);
                if (r < 0)
                        break;
        }
        parted_messages = strv_free(parted_messages);
        if (r < 0)
                return log_error_errno(r, "cannot inspect '%s': %m", path);

        r = read_blkid_table(img, fd);
        if (r == -ENOMEM)
                return log_error_errno(r, "cannot inspect '%s': %m", path);
        if (r < 0)
                return log_error_errno(r, "cannot read the partition table of '%s' with libblkid", path);

        for (size_t i = 0; i < img->n_partitions; i++) {
                struct probe_partition *e = &img->partitions[i];
                bool ambivalent;

                r = read_blkid_fs(fd, e->start, e->size, &e->fs, &ambivalent);
                if (r == -ENOMEM)
                        return log_error_errno(r, "cannot inspect '%s': %m", path);
                if (r < 0)
                        return log_error_errno(r, "cannot probe partition %u of '%s' for a filesystem", e->number,
                                               path);
                if (ambivalent) {
                        r = add_warning(img, "partition %u holds more than one filesystem signature", e->number);
                        if (r < 0)
                                return log_error_errno(r, "cannot inspect '%s': %m", path);
                }
        }

        *ret = TAKE_PTR(img);
        return 0;
}

int probe_os_release_value(const char *text, const char *key, char **ret)
{
        size_t klen = strlen(key);

        for (const char *line = text; line && *line;) {
                const char *eol = strchrnul(line, '\n'), *v;

                while (line < eol && (*line == ' ' || *line == '\t'))
                        line++;
                if ((size_t)(eol - line) > klen && strncmp(line, key, klen) == 0 && line[klen] == '=') {
                        char *out, *o, quote = 0;

                        v = line + klen + 1;
                        out = o = malloc((size_t)(eol - v) + 1);
                        if (!out)
                                return -ENOMEM;
                        for (; v < eol; v++) {
                                if (quote && *v == quote)
                                        quote = 0;
                                else if (!quote && (*v == '"' || *v == '\''))
                                        quote = *v;
                                else if (quote != '\'' && *v == '\\' && v + 1 < eol)
                                        *o++ = *++v;
                                else if (!quote && (*v == ' ' || *v == '\t' || *v == '#'))
                                        break;
                                else
                                        *o++ = *v;
                        }
                        *o = 0;
                        *ret = out;
                        return 0;
                }
                line = *eol ? eol + 1 : eol;
        }
        *ret = NULL;
        return 0;
}

static void write_all(int fd, const char *s, size_t n)
{
        while (n > 0) {
                ssize_t k = write(fd, s, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return;
                s += k;
                n -= (size_t)k;
        }
}

/* The child's protocol: a line "launched" once the appliance is up, then
 * one line of JSON, {"error": "..."} or {"root": ..., ...}. */
static _noreturn_ void child_send(int fd, json_t *j)
{
        char *s = json_dumps(j, JSON_COMPACT);

        if (s) {
                write_all(fd, s, strlen(s));
                write_all(fd, "\n", 1);
        }
        _exit(s ? 0 : 1);
}

static void json_set_str(json_t *o, const char *key, const char *v)
{
        if (v)
                json_object_set_new(o, key, json_string(v));
}

static int cmp_mountpoint_len(const void *a, const void *b)
{
        size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
        return la < lb ? -1 : la > lb;
}

/* Runs in the child: everything libguestfs. Never returns. */
static _noreturn_ void os_child(const char *path, bool force_tcg, const char *tmpdir, int fd)
{
        _cleanup_(guestfs_closep) guestfs_h *g = NULL;
        json_t *res = json_object();
        char **roots, **mps;
        const char *root;
        char *s;

        if (!res)
                _exit(1);
        /* Sockets and overlays in our own directory, which the parent removes
         * even when it had to kill us; the appliance cache stays where
         * libguestfs keeps it (TMPDIR or /var/tmp), shared between runs. */
        if (strlen(tmpdir) < 64)
                setenv("XDG_RUNTIME_DIR", tmpdir, 1);

        g = guestfs_create();
        if (!g) {
                json_object_set_new(res, "error",
                                    json_sprintf("cannot create a libguestfs handle: %s", strerror(errno)));
                child_send(fd, res);
        }
        guestfs_set_error_handler(g, NULL, NULL);
        if (guestfs_set_tmpdir(g, tmpdir) < 0)
                goto fail;
        if (force_tcg && guestfs_set_backend_settings(g, (char *[]){ (char *)"force_tcg", NULL }) < 0)
                goto fail;
        if (guestfs_add_drive_opts(g, path, GUESTFS_ADD_DRIVE_OPTS_READONLY, 1, GUESTFS_ADD_DRIVE_OPTS_FORMAT, "raw",
                                   -1) < 0)
                goto fail;
        if (guestfs_launch(g) < 0)
                goto fail;
        write_all(fd, "launched\n", 9);

        roots = guestfs_inspect_os(g);
        if (!roots)
                goto fail;
        if (!roots[0])
                child_send(fd, res); /* no OS */
        root = roots[0];
        json_set_str(res, "root", root);
        json_set_str(res, "type", guestfs_inspect_get_type(g, root));
        json_set_str(res, "distro", guestfs_inspect_get_distro(g, root));
        json_set_str(res, "product_name", guestfs_inspect_get_product_name(g, root));
        json_object_set_new(res, "version",
                            json_sprintf("%d.%d", guestfs_inspect_get_major_version(g, root),
                                         guestfs_inspect_get_minor_version(g, root)));
        json_set_str(res, "hostname", guestfs_inspect_get_hostname(g, root));
        json_set_str(res, "arch", guestfs_inspect_get_arch(g, root));

        /* Mount what the guest's fstab says, shortest mount point first,
         * read-only, to read os-release; a mount that fails only loses that. */
        mps = guestfs_inspect_get_mountpoints(g, root);
        if (mps) {
                size_t n = 0;
                char **pairs;

                while (mps[2 * n])
                        n++;
                /* pairs of (mountpoint, device): sort the pairs by mountpoint */
                pairs = calloc(n + 1, sizeof(char *));
                if (pairs) {
                        for (size_t i = 0; i < n; i++)
                                pairs[i] = mps[2 * i];
                        qsort(pairs, n, sizeof(char *), cmp_mountpoint_len);
                        for (size_t i = 0; i < n; i++)
                                for (size_t k = 0; k < n; k++)
                                        if (mps[2 * k] == pairs[i])
                                                (void)guestfs_mount_ro(g, mps[2 * k + 1], mps[2 * k]);
                }
        } else
                (void)guestfs_mount_ro(g, root, "/");
        s = guestfs_cat(g, "/etc/os-release");
        if (!s)
                s = guestfs_cat(g, "/usr/lib/os-release");
        json_set_str(res, "os_release", s);
        child_send(fd, res);

fail:
        json_object_set_new(res, "error", json_string(strna(guestfs_last_error(g))));
        child_send(fd, res);
}

static int remove_entry(const char *p, const struct stat *st _unused_, int flag _unused_, struct FTW *ftw _unused_)
{
        (void)remove(p);
        return 0;
}

struct attempt {
        bool launched;
        bool timed_out;
        int exit_status; /* of the child, -1 when killed by us */
        double launch_sec, total_sec;
        json_t *result; /* NULL when none arrived */
};

/* One libguestfs run in a child process group, killed at the deadline. */
static int os_attempt(const char *path, bool force_tcg, unsigned timeout_sec, struct attempt *ret)
{
        _cleanup_close_ int rfd = -1;
        char tmpdir[] = "/tmp/ingot-inspect-XXXXXX";
        const char *base = getenv("TMPDIR");
        _cleanup_free_ char *dirbuf = NULL, *buf = NULL;
        size_t len = 0, cap = 0;
        double start = now_mono(), deadline = start + timeout_sec;
        struct attempt a = { .exit_status = -1 };
        bool got_result = false;
        int fds[2], status;
        char *dir;
        pid_t pid;

        if (base && *base && base[0] == '/') {
                if (asprintf(&dirbuf, "%s/ingot-inspect-XXXXXX", base) < 0)
                        return -ENOMEM;
                dir = dirbuf;
        } else
                dir = tmpdir;
        if (!mkdtemp(dir))
                return -errno;
        if (pipe2(fds, O_CLOEXEC) < 0) {
                int e = -errno;
                rmdir(dir);
                return e;
        }
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                int e = -errno;
                close(fds[0]);
                close(fds[1]);
                rmdir(dir);
                return e;
        }
        if (pid == 0) {
                close(fds[0]);
                /* Our own process group, so the deadline kills qemu and the
                 * recovery process with us; and no orphan when ingot dies. */
                setpgid(0, 0);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                os_child(path, force_tcg, dir, fds[1]);
        }
        setpgid(pid, pid); /* also here: no race with the kill below */
        close(fds[1]);
        rfd = fds[0];

        while (!got_result) {
                double left = deadline - now_mono();
                struct pollfd pfd = { .fd = rfd, .events = POLLIN };
                ssize_t k;
                char *nl;

                if (left <= 0) {
                        a.timed_out = true;
                        break;
                }
                k = poll(&pfd, 1, (int)(left * 1000) + 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k == 0)
                        continue; /* the deadline check above ends it */
                if (len + 4096 + 1 > cap) {
                        char *n = realloc(buf, cap = len + 65536);
                        if (!n) {
                                kill(-pid, SIGKILL);
                                waitpid(pid, NULL, 0);
                                nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
                                return -ENOMEM;
                        }
                        buf = n;
                }
                k = read(rfd, buf + len, 4096);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break; /* the child is gone without a result */
                len += (size_t)k;
                buf[len] = 0;
                if (!a.launched && len >= 9 && memcmp(buf, "launched\n", 9) == 0) {
                        a.launched = true;
                        a.launch_sec = now_mono() - start;
                }
                nl = strchr(a.launched ? buf + 9 : buf, '\n');
                if (nl) {
                        *nl = 0;
                        a.result = json_loads(a.launched ? buf + 9 : buf, 0, NULL);
                        a.total_sec = now_mono() - start;
                        got_result = true;
                }
        }

        /* The child exits once it sent its result; then whatever is left of
         * its process group (qemu, the recovery process) goes. On timeout
         * the whole group goes at once. */
        if (a.timed_out)
                kill(-pid, SIGKILL);
        for (int waited = 0;; waited += 50) {
                pid_t w = waitpid(pid, &status, WNOHANG);

                if (w == pid) {
                        if (!a.timed_out)
                                a.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                        break;
                }
                if (w < 0 && errno != EINTR)
                        break;
                if (waited >= PROBE_CHILD_GRACE_MS) {
                        kill(-pid, SIGKILL);
                        (void)waitpid(pid, &status, 0);
                        break;
                }
                usleep(50 * 1000);
        }
        /* qemu and the recovery process may outlive the child by a moment. */
        kill(-pid, SIGKILL);
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        *ret = a;
        return 0;
}

static int set_from_json(json_t *o, const char *key, char **ret)
{
        return strdup_or_null(json_string_value(json_object_get(o, key)), ret);
}

int probe_os(struct probe_image *img, const struct probe_os_options *o)
{
        struct probe_os *os = &img->os;
        unsigned timeout = o && o->timeout_sec ? o->timeout_sec : PROBE_OS_TIMEOUT_DEFAULT;
        const char *env = getenv("LIBGUESTFS_BACKEND_SETTINGS");
        _cleanup_(json_decrefp) json_t *res = NULL;
        struct attempt a = {};
        double used = 0;
        const char *err, *text;
        bool tcg;
        int r;

        probe_os_done(os);
        if (env && *env)
                tcg = false; /* the environment decides; libguestfs reads it */
        else
                tcg = qemu_probe_accel(3) != QEMU_ACCEL_KVM; /* the same probe ingot boot trusts */
        os->accel = strdup(env && *env ? env : tcg ? "tcg" : "kvm");
        if (!os->accel)
                return -ENOMEM;

        if (!tcg && !(env && *env)) {
                unsigned t = timeout < PROBE_KVM_LAUNCH_TIMEOUT ? timeout : PROBE_KVM_LAUNCH_TIMEOUT;

                r = os_attempt(img->path, false, t, &a);
                if (r < 0)
                        return r;
                if (a.timed_out && !a.launched && timeout > t) {
                        log_debug("libguestfs under KVM did not launch within %u s; trying TCG", t);
                        used = t;
                        free(os->accel);
                        os->accel = strdup("tcg");
                        if (!os->accel)
                                return -ENOMEM;
                        json_decref(a.result);
                        r = os_attempt(img->path, true, timeout - t, &a);
                }
        } else
                r = os_attempt(img->path, tcg, timeout, &a);
        if (r < 0)
                return r;
        res = a.result;
        os->launch_sec = used + a.launch_sec;
        os->total_sec = used + a.total_sec;

        if (a.timed_out)
                r = asprintf(&os->error, "libguestfs did not finish within %u s (%s, appliance %s)", timeout, os->accel,
                             a.launched ? "up, inspection hung" : "never came up");
        else if (!res)
                r = asprintf(&os->error, "libguestfs child ended without a result (exit status %d)", a.exit_status);
        else if ((err = json_string_value(json_object_get(res, "error"))))
                /* libguestfs appends lines of debugging advice; keep the first */
                r = asprintf(&os->error, "libguestfs: %.*s", (int)strcspn(err, "\n"), err);
        else
                r = 0;
        if (r < 0)
                return -ENOMEM;
        if (os->error) {
                os->status = PROBE_OS_FAILED;
                log_debug("OS inspection of '%s' failed: %s", img->path, os->error);
                return 0;
        }
        log_debug("libguestfs (%s): appliance up in %.1f s, inspection done in %.1f s", os->accel, os->launch_sec,
                  os->total_sec);

        if (!json_object_get(res, "root")) {
                os->status = PROBE_OS_NOT_FOUND;
                return 0;
        }
        os->status = PROBE_OS_FOUND;
        if (set_from_json(res, "root", &os->root) < 0 || set_from_json(res, "type", &os->type) < 0 ||
            set_from_json(res, "distro", &os->distro) < 0 ||
            set_from_json(res, "product_name", &os->product_name) < 0 ||
            set_from_json(res, "version", &os->version) < 0 || set_from_json(res, "hostname", &os->hostname) < 0 ||
            set_from_json(res, "arch", &os->arch) < 0)
                return -ENOMEM;
        /* "/dev/sda2": the appliance sees our one drive as sda */
        if (os->root && strncmp(os->root, "/dev/sda", 8) == 0 && os->root[8] >= '1' && os->root[8] <= '9')
                os->partition = (unsigned)strtoul(os->root + 8, NULL, 10);
        text = json_string_value(json_object_get(res, "os_release"));
        if (text && (probe_os_release_value(text, "ID", &os->os_release_id) < 0 ||
                     probe_os_release_value(text, "VERSION_ID", &os->os_release_version_id) < 0 ||
                     probe_os_release_value(text, "IMAGE_ID", &os->image_id) < 0 ||
                     probe_os_release_value(text, "IMAGE_VERSION", &os->image_version) < 0))
                return -ENOMEM;
        return 0;
}

static json_t *partition_to_json(const struct probe_partition *e, bool gpt)
{
        _cleanup_strv_free_ char **names = NULL;
        json_t *p = json_object();
        char hex[19];

        snprintf(hex, sizeof(hex), "0x%016" PRIx64, e->attributes);
        (void)probe_gpt_attributes_to_strv(gpt ? e->attributes : 0, &names);
        json_object_set_new(p, "number", json_integer(e->number));
        json_object_set_new(p, "role", json_str_or_null(e->role));
        json_object_set_new(p, "name", json_str_or_null(e->name));
        json_object_set_new(p, "type_uuid", json_str_or_null(e->type));
        json_object_set_new(p, "uuid", json_str_or_null(e->uuid));
        json_object_set_new(p, "start", json_u64(e->start));
        json_object_set_new(p, "end", json_u64(e->end));
        json_object_set_new(p, "size", json_u64(e->size));
        json_object_set_new(p, "attributes", json_string(hex));
        json_object_set_new(p, "attribute_names", json_strv(names));
        json_object_set_new(p, "fstype", json_str_or_null(e->fs.type));
        json_object_set_new(p, "label", json_str_or_null(e->fs.label));
        json_object_set_new(p, "fs_uuid", json_str_or_null(e->fs.uuid));
        json_object_set_new(p, "fs_version", json_str_or_null(e->fs.version));
        json_object_set_new(p, "fs_usage", json_str_or_null(e->fs.usage));
        if (e->fs.volume_id)
                json_object_set_new(p, "volume_id", json_string(e->fs.volume_id));
        return p;
}

static json_t *os_to_json(const struct probe_os *os)
{
        json_t *o = json_object();

        json_object_set_new(o, "status", json_string(probe_os_status_to_string(os->status)));
        if (os->status == PROBE_OS_SKIPPED)
                return o;
        json_object_set_new(o, "accel", json_str_or_null(os->accel));
        if (os->status == PROBE_OS_FAILED) {
                json_object_set_new(o, "error", json_str_or_null(os->error));
                return o;
        }
        if (os->status != PROBE_OS_FOUND)
                return o;
        json_object_set_new(o, "root", json_str_or_null(os->root));
        json_object_set_new(o, "partition", os->partition ? json_integer(os->partition) : json_null());
        json_object_set_new(o, "type", json_str_or_null(os->type));
        json_object_set_new(o, "distro", json_str_or_null(os->distro));
        json_object_set_new(o, "product_name", json_str_or_null(os->product_name));
        json_object_set_new(o, "version", json_str_or_null(os->version));
        json_object_set_new(o, "hostname", json_str_or_null(os->hostname));
        json_object_set_new(o, "arch", json_str_or_null(os->arch));
        json_object_set_new(o, "os_release",
                            json_pack("{s:o, s:o, s:o, s:o}", "id", json_str_or_null(os->os_release_id), "version_id",
                                      json_str_or_null(os->os_release_version_id), "image_id",
                                      json_str_or_null(os->image_id), "image_version",
                                      json_str_or_null(os->image_version)));
        return o;
}

json_t *probe_image_to_json(const struct probe_image *img)
{
        json_t *root = json_object(), *disk = json_object(), *parts = json_array();
        bool gpt = streq_ptr(img->table, "gpt");

        json_object_set_new(root, "image", json_string(img->path));
        json_object_set_new(disk, "table", json_str_or_null(img->table));
        json_object_set_new(disk, "uuid", json_str_or_null(img->disk_uuid));
        json_object_set_new(disk, "size", json_u64(img->size));
        json_object_set_new(disk, "sector_size", json_integer(img->sector_size));
        for (size_t i = 0; i < img->n_partitions; i++)
                json_array_append_new(parts, partition_to_json(&img->partitions[i], gpt));
        json_object_set_new(disk, "partitions", parts);
        json_object_set_new(root, "disk", disk);
        json_object_set_new(root, "os", os_to_json(&img->os));
        json_object_set_new(root, "warnings", json_strv(img->warnings));
        return root;
}

/* "1.5 MiB": one decimal, binary units, for people next to the bytes. */
static const char *format_size(uint64_t v, char *buf, size_t size)
{
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        double d = (double)v;
        size_t u = 0;

        while (d >= 1024 && u + 1 < ELEMENTSOF(units)) {
                d /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, size, "%" PRIu64 " B", v);
        else
                snprintf(buf, size, "%.1f %s", d, units[u]);
        return buf;
}

void probe_image_print(const struct probe_image *img, FILE *f)
{
        bool gpt = streq_ptr(img->table, "gpt");
        char sz[32];

        fprintf(f, "image:        %s\n", img->path);
        fprintf(f, "table:        %s, %s %s\n", strna(img->table), gpt ? "disk GUID" : "disk id",
                strna(img->disk_uuid));
        fprintf(f, "size:         %" PRIu64 " bytes (%s), %u-byte sectors\n", img->size,
                format_size(img->size, sz, sizeof(sz)), img->sector_size);

        for (size_t i = 0; i < img->n_partitions; i++) {
                const struct probe_partition *e = &img->partitions[i];
                _cleanup_strv_free_ char **names = NULL;

                fprintf(f, "\npartition %u:  %s\n", e->number, e->name ? e->name : "(no name)");
                if (e->role)
                        fprintf(f, "  type:       %s (%s)\n", e->role, strna(e->type));
                else
                        fprintf(f, "  type:       %s\n", strna(e->type));
                fprintf(f, "  uuid:       %s\n", strna(e->uuid));
                fprintf(f, "  bytes:      %" PRIu64 "-%" PRIu64 ", %" PRIu64 " (%s)\n", e->start, e->end, e->size,
                        format_size(e->size, sz, sizeof(sz)));
                (void)probe_gpt_attributes_to_strv(gpt ? e->attributes : 0, &names);
                fprintf(f, "  attributes: ");
                if (!e->attributes)
                        fprintf(f, "none\n");
                else {
                        STRV_FOREACH (n, names)
                                fprintf(f, "%s%s", n == names ? "" : ", ", *n);
                        fprintf(f, "%s0x%016" PRIx64 "\n", names ? " = " : "", e->attributes);
                }
                if (!e->fs.type) {
                        fprintf(f, "  filesystem: none found\n");
                        continue;
                }
                fprintf(f, "  filesystem: %s%s%s", e->fs.type, e->fs.version ? " " : "",
                        e->fs.version ? e->fs.version : "");
                if (e->fs.label)
                        fprintf(f, ", label \"%s\"", e->fs.label);
                if (e->fs.uuid)
                        fprintf(f, ", %s %s", e->fs.volume_id ? "volume id" : "uuid", e->fs.uuid);
                if (e->fs.usage && !streq(e->fs.usage, "filesystem"))
                        fprintf(f, " (%s)", e->fs.usage);
                fputc('\n', f);
        }

        fputc('\n', f);
        switch (img->os.status) {
        case PROBE_OS_SKIPPED:
                fprintf(f, "os:           not inspected (--no-os)\n");
                break;
        case PROBE_OS_FAILED:
                fprintf(f, "os:           unknown: %s\n", strna(img->os.error));
                break;
        case PROBE_OS_NOT_FOUND:
                fprintf(f, "os:           none found (libguestfs, %s, %.1f s)\n", strna(img->os.accel),
                        img->os.total_sec);
                break;
        case PROBE_OS_FOUND:
        default:
                fprintf(f, "os:           %s (%s %s %s)\n", strna(img->os.product_name), strna(img->os.type),
                        strna(img->os.distro), strna(img->os.version));
                if (img->os.partition)
                        fprintf(f, "  root:       partition %u (%s)\n", img->os.partition, strna(img->os.root));
                else
                        fprintf(f, "  root:       %s\n", strna(img->os.root));
                fprintf(f, "  hostname:   %s\n", strna(img->os.hostname));
                fprintf(f, "  arch:       %s\n", strna(img->os.arch));
                if (img->os.image_id || img->os.image_version)
                        fprintf(f, "  image:      %s %s\n", strna(img->os.image_id), strna(img->os.image_version));
                fprintf(f, "  inspected:  libguestfs, %s, appliance up in %.1f s, done in %.1f s\n",
                        strna(img->os.accel), img->os.launch_sec, img->os.total_sec);
                break;
        }
        STRV_FOREACH (w, img->warnings)
                fprintf(f, "warning:      %s\n", *w);
}
