/* Owns the bootloaders, an ops table: what each puts into the ESP staging
 * directory (before the disk stage) and what each writes into the finished
 * image file (after it). Both load the same kernel and initrd, which live on
 * the ESP under /NAME/VERSION/, with the spec's command line. Every file
 * time is SOURCE_DATE_EPOCH, so the ESP's bytes follow from the inputs. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot.h"
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/run.h"

#define SYSTEMD_BOOT_EFI_DIR "/usr/lib/systemd/boot/efi"
#define SYSLINUX_DIR "syslinux" /* on the ESP; ldlinux.sys and syslinux.cfg go here */
#define MBR_BOOT_CODE_SIZE 440  /* bytes 440..511 hold the disk signature and partition table */

static const char *const gptmbr_paths[] = {
        "/usr/lib/syslinux/mbr/gptmbr.bin",
        "/usr/share/syslinux/gptmbr.bin",
        "/usr/lib/SYSLINUX/gptmbr.bin",
};

struct boot_context {
        const struct spec *spec;
        const char *esp_dir;
        const char *entry_id; /* NAME-VERSION */
        const char *kernel;   /* paths on the ESP, from its root */
        const char *initrd;
        const char *cmdline;  /* the kernel command line */
};

struct bootloader {
        const char *name;
        bool (*wanted)(const struct spec *s);
        /* Writes its files into the ESP staging directory. */
        int (*stage_esp)(const struct boot_context *c);
        /* Writes into the finished image; NULL when there is nothing to do. */
        int (*install)(const struct spec *s, const char *image);
};

/* mkdir -p of rel (a relative path) under root. */
static int mkdir_under(const char *root, const char *rel)
{
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/%s", root, rel) < 0)
                return -ENOMEM;
        for (char *c = p + strlen(root) + 1;; c++) {
                if (*c != '/' && *c != '\0')
                        continue;
                char saved = *c;
                *c = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *c = saved;
                if (!saved)
                        return 0;
        }
}

static int write_under(const char *root, const char *rel, const char *text)
{
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/%s", root, rel) < 0)
                return -ENOMEM;
        return write_file_atomic(p, text, strlen(text), 0644);
}

static int copy_under(const char *from, const char *root, const char *rel)
{
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/%s", root, rel) < 0)
                return -ENOMEM;
        return copy_file(from, p, 0644);
}

static const char *efi_arch(const struct spec *s)
{
        if (streq_ptr(s->architecture, "arm64"))
                return "aa64";
        return "x64";
}

/* ---- systemd-boot ---- */

static bool sd_boot_wanted(const struct spec *s)
{
        return s->boot_mode == BOOT_MODE_UEFI || s->boot_mode == BOOT_MODE_BOTH;
}

static int sd_boot_stage_esp(const struct boot_context *c)
{
        const struct spec *s = c->spec;
        const char *dir = getenv("INGOT_SYSTEMD_BOOT_EFI_DIR");
        _cleanup_free_ char *src = NULL, *fallback = NULL, *loader_conf = NULL, *entry = NULL, *entry_path = NULL,
                            *native = NULL;
        char upper[8];
        size_t i;
        int r;

        if (!dir || !*dir)
                dir = SYSTEMD_BOOT_EFI_DIR;
        for (i = 0; efi_arch(s)[i] && i < sizeof(upper) - 1; i++)
                upper[i] = (char)(efi_arch(s)[i] >= 'a' && efi_arch(s)[i] <= 'z' ? efi_arch(s)[i] - 'a' + 'A'
                                                                                 : efi_arch(s)[i]);
        upper[i] = '\0';
        if (asprintf(&src, "%s/systemd-boot%s.efi", dir, efi_arch(s)) < 0 ||
            asprintf(&fallback, "EFI/BOOT/BOOT%s.EFI", upper) < 0 ||
            asprintf(&native, "EFI/systemd/systemd-boot%s.efi", efi_arch(s)) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        if (access(src, R_OK) < 0)
                return log_error_errno(-errno, "cannot read systemd-boot '%s': %m (package systemd-boot-efi)", src);

        r = mkdir_under(c->esp_dir, "EFI/BOOT");
        r = r ?: mkdir_under(c->esp_dir, "EFI/systemd");
        r = r ?: mkdir_under(c->esp_dir, "loader/entries");
        if (r < 0)
                return log_error_errno(r, "cannot create directories in '%s': %m", c->esp_dir);
        r = copy_under(src, c->esp_dir, fallback);
        r = r ?: copy_under(src, c->esp_dir, native);
        if (r < 0)
                return log_error_errno(r, "cannot copy '%s' into '%s': %m", src, c->esp_dir);

        if (asprintf(&loader_conf,
                     "# written by ingot\n"
                     "default %s.conf\n"
                     "timeout %u\n"
                     "editor no\n",
                     c->entry_id, s->template ? s->template->timeout : 0) < 0 ||
            asprintf(&entry,
                     "# written by ingot\n"
                     "title %s %s\n"
                     "version %s\n"
                     "linux %s\n"
                     "initrd %s\n"
                     "options %s\n",
                     s->name, s->version, s->version, c->kernel, c->initrd, strna(c->cmdline)) < 0 ||
            asprintf(&entry_path, "loader/entries/%s.conf", c->entry_id) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = write_under(c->esp_dir, "loader/loader.conf", loader_conf);
        r = r ?: write_under(c->esp_dir, entry_path, entry);
        if (r < 0)
                return log_error_errno(r, "cannot write the systemd-boot configuration in '%s': %m", c->esp_dir);
        return 0;
}

/* ---- syslinux ---- */

static bool syslinux_wanted(const struct spec *s)
{
        return s->boot_mode == BOOT_MODE_BIOS || s->boot_mode == BOOT_MODE_BOTH;
}

static int syslinux_stage_esp(const struct boot_context *c)
{
        const struct spec *s = c->spec;
        unsigned timeout = s->template ? s->template->timeout : 0;
        _cleanup_free_ char *cfg = NULL;
        char timeout_lines[64];
        int r;

        if (!streq_ptr(s->architecture, "x86-64") && s->architecture)
                return log_error_errno(-EOPNOTSUPP, "cannot boot '%s' images with bios: syslinux is x86-64 only",
                                       s->architecture);
        /* PROMPT 0 boots the default at once; TIMEOUT is in tenths of a second. */
        if (timeout > 0)
                snprintf(timeout_lines, sizeof(timeout_lines), "PROMPT 1\nTIMEOUT %u\n", timeout * 10);
        else
                snprintf(timeout_lines, sizeof(timeout_lines), "PROMPT 0\n");
        /* SERIAL has to come first. */
        if (asprintf(&cfg,
                     "SERIAL 0 115200\n"
                     "# written by ingot\n"
                     "DEFAULT %s\n"
                     "%s"
                     "LABEL %s\n"
                     "    LINUX %s\n"
                     "    INITRD %s\n"
                     "    APPEND %s\n",
                     c->entry_id, timeout_lines, c->entry_id, c->kernel, c->initrd, strna(c->cmdline)) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = mkdir_under(c->esp_dir, SYSLINUX_DIR);
        r = r ?: write_under(c->esp_dir, SYSLINUX_DIR "/syslinux.cfg", cfg);
        if (r < 0)
                return log_error_errno(r, "cannot write the syslinux configuration in '%s': %m", c->esp_dir);
        return 0;
}

static const struct part_entry *find_esp(const struct spec *s)
{
        if (!s->layout)
                return NULL;
        for (size_t i = 0; i < s->layout->n_entries; i++)
                if (s->layout->entries[i].role == PART_ROLE_ESP)
                        return &s->layout->entries[i];
        return NULL;
}

static int write_mbr_boot_code(const char *image)
{
        _cleanup_free_ char *code = NULL;
        _cleanup_close_ int fd = -1;
        unsigned char mbr[512];
        const char *path = getenv("INGOT_SYSLINUX_GPTMBR");
        size_t size = 0;
        ssize_t n;
        int r = -ENOENT;

        if (path && *path)
                r = read_full_file(path, 4096, &code, &size);
        else
                for (size_t i = 0; i < ELEMENTSOF(gptmbr_paths) && r == -ENOENT; i++) {
                        path = gptmbr_paths[i];
                        r = read_full_file(path, 4096, &code, &size);
                }
        if (r < 0)
                return log_error_errno(r, "cannot read syslinux's '%s': %m (package syslinux-common)", path);
        if (size == 0 || size > MBR_BOOT_CODE_SIZE)
                return log_error_errno(-EBADMSG, "'%s' is %zu bytes, not MBR boot code (at most %d)", path, size,
                                       MBR_BOOT_CODE_SIZE);

        fd = open(image, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", image);
        n = pread(fd, mbr, sizeof(mbr), 0);
        if (n < 0)
                return log_error_errno(-errno, "cannot read the MBR of '%s': %m", image);
        /* Only a protective MBR: gptmbr.bin boots a GPT disk and nothing else. */
        if (n != (ssize_t)sizeof(mbr) || mbr[510] != 0x55 || mbr[511] != 0xaa || mbr[446 + 4] != 0xee)
                return log_error_errno(-EBADMSG, "cannot install the bios boot code: '%s' has no protective MBR",
                                       image);
        n = pwrite(fd, code, size, 0);
        if (n != (ssize_t)size)
                return log_error_errno(n < 0 ? -errno : -EIO, "cannot write the MBR of '%s': %m", image);
        if (fsync(fd) < 0)
                return log_error_errno(-errno, "cannot write the MBR of '%s': %m", image);
        return 0;
}

static int syslinux_install(const struct spec *s, const char *image)
{
        const struct part_entry *esp = find_esp(s);
        _cleanup_free_ char *out = NULL, *err = NULL;
        char offset[32], epoch[64], line[256];
        const char *env[] = { epoch, NULL };
        int r;

        if (!esp)
                return log_error_errno(-EBADMSG, "cannot install syslinux into '%s': the layout has no ESP", image);
        snprintf(offset, sizeof(offset), "%" PRIu64, esp->start);
        snprintf(epoch, sizeof(epoch), "SOURCE_DATE_EPOCH=%" PRIu64, s->source_date_epoch);
        /* The mtools-based installer: it works on the FAT at that offset of a
         * plain file, with no mount and no loop device. */
        r = run_argv((const char *const[]){ "syslinux", "--install", "--offset", offset, "--directory",
                                            "/" SYSLINUX_DIR, image, NULL },
                     &(struct run_options){ .env = env, .timeout_sec = 300 }, &out, &err);
        if (r == -ENOENT)
                return log_error_errno(r, "cannot run 'syslinux': not installed (package syslinux)");
        if (r < 0)
                return log_error_errno(r, "cannot run 'syslinux' on '%s': %m", image);
        if (r != 0)
                return log_error_errno(-EIO, "syslinux failed on '%s' (exit %d): %s", image, r,
                                       run_output_line(*err ? err : out, true, line, sizeof(line)));
        return write_mbr_boot_code(image);
}

static const struct bootloader bootloaders[] = {
        {
                .name = "systemd-boot",
                .wanted = sd_boot_wanted,
                .stage_esp = sd_boot_stage_esp,
                .install = NULL,
        },
        {
                .name = "syslinux",
                .wanted = syslinux_wanted,
                .stage_esp = syslinux_stage_esp,
                .install = syslinux_install,
        },
};

/* ---- the stage ---- */

static uint64_t clamp_epoch;

static int set_time(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        struct timespec ts[2] = { { .tv_sec = (time_t)clamp_epoch }, { .tv_sec = (time_t)clamp_epoch } };

        (void)st;
        (void)type;
        (void)ftw;
        if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return errno;
        return 0;
}

static bool path_component_ok(const char *s)
{
        return s && *s && !strchr(s, '/') && !streq(s, ".") && !streq(s, "..");
}

int boot_stage_esp(const struct spec *s, const char *cmdline, const char *kernel, const char *initrd,
                   const char *esp_dir)
{
        _cleanup_free_ char *entry_id = NULL, *dir = NULL, *kernel_esp = NULL, *initrd_esp = NULL;
        struct boot_context c = { .spec = s, .esp_dir = esp_dir, .cmdline = cmdline ? cmdline : s->cmdline };
        int r;

        if (!path_component_ok(s->name) || !path_component_ok(s->version))
                return log_error_errno(-EINVAL, "cannot stage the ESP: name '%s' or version '%s' is not a file name",
                                       strna(s->name), strna(s->version));
        if (asprintf(&entry_id, "%s-%s", s->name, s->version) < 0 || asprintf(&dir, "%s/%s", s->name, s->version) < 0 ||
            asprintf(&kernel_esp, "/%s/vmlinuz", dir) < 0 || asprintf(&initrd_esp, "/%s/initrd.img", dir) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        c.entry_id = entry_id;
        c.kernel = kernel_esp;
        c.initrd = initrd_esp;

        r = mkdir_under(esp_dir, dir);
        if (r < 0)
                return log_error_errno(r, "cannot create '%s/%s': %m", esp_dir, dir);
        r = copy_under(kernel, esp_dir, kernel_esp + 1);
        if (r < 0)
                return log_error_errno(r, "cannot copy the kernel '%s' into '%s': %m", kernel, esp_dir);
        r = copy_under(initrd, esp_dir, initrd_esp + 1);
        if (r < 0)
                return log_error_errno(r, "cannot copy the initrd '%s' into '%s': %m", initrd, esp_dir);

        for (size_t i = 0; i < ELEMENTSOF(bootloaders); i++) {
                if (!bootloaders[i].wanted(s))
                        continue;
                log_debug("staging %s in '%s'", bootloaders[i].name, esp_dir);
                r = bootloaders[i].stage_esp(&c);
                if (r < 0)
                        return r;
        }

        /* Depth-first, so a directory's time is set after its entries. */
        clamp_epoch = s->source_date_epoch;
        r = nftw(esp_dir, set_time, 16, FTW_DEPTH | FTW_PHYS);
        if (r != 0)
                return log_error_errno(r > 0 ? -r : -errno, "cannot set file times in '%s': %m", esp_dir);
        return 0;
}

int boot_install_bios(const struct spec *s, const char *image)
{
        for (size_t i = 0; i < ELEMENTSOF(bootloaders); i++) {
                int r;

                if (!bootloaders[i].install || !bootloaders[i].wanted(s))
                        continue;
                log_debug("installing %s into '%s'", bootloaders[i].name, image);
                r = bootloaders[i].install(s, image);
                if (r < 0)
                        return r;
        }
        return 0;
}
