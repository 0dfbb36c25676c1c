/* Owns the busybox source: the tiny test image. The root is busybox-static
 * with a link per applet, busybox init with the scripts in data/busybox/,
 * minimal /etc files; the kernel is the stock Debian one, from the package
 * the template names (fetched with apt-get download from the host's apt
 * lists), and the initrd is written here as a newc cpio: busybox, the
 * modules for a virtio disk and an ext4 root, and an /init that finds the
 * root by filesystem UUID. The cached initrd is the same for every build;
 * each build appends a second small cpio with its root's UUID, which the
 * kernel unpacks over the first. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "rootfs-internal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/strv.h"

#include "src/data-files.h" /* generated from data/ */

/* What the initrd loads, dependencies first (added from modinfo). */
static const struct {
        const char *name;
        bool required;
} initrd_modules[] = {
        { "virtio_pci", true },    { "virtio_blk", true },  { "crc32c_generic", false },
        { "crc32c_intel", false }, { "ext4", true },        { "erofs", false },
        { "virtio_net", false },   { "virtio_rng", false }, { "virtio_console", false },
        { "button", false },       { "evdev", false },      { "overlay", true },
};

/* ---- newc cpio ---- */

struct cpio {
        FILE *f;
        uint32_t ino;
        uint64_t mtime;
};

static void cpio_pad(struct cpio *c)
{
        long pos = ftell(c->f);
        while (pos % 4) {
                fputc(0, c->f);
                pos++;
        }
}

static void cpio_add(struct cpio *c, const char *name, uint32_t mode, unsigned rmajor, unsigned rminor,
                     const void *data, size_t size)
{
        fprintf(c->f, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ++c->ino, mode, 0u, 0u,
                S_ISDIR(mode) ? 2u : 1u, (uint32_t)c->mtime, size, 0u, 0u, rmajor, rminor, strlen(name) + 1, 0u);
        fwrite(name, 1, strlen(name) + 1, c->f);
        cpio_pad(c);
        if (size)
                fwrite(data, 1, size, c->f);
        cpio_pad(c);
}

static void cpio_trailer(struct cpio *c)
{
        cpio_add(c, "TRAILER!!!", 0, 0, 0, NULL, 0);
}

static int cpio_add_file(struct cpio *c, const char *name, const char *path, uint32_t mode)
{
        _cleanup_free_ char *data = NULL;
        size_t size;
        int r = read_full_file(path, 256 << 20, &data, &size);

        if (r < 0)
                return r;
        cpio_add(c, name, S_IFREG | mode, 0, 0, data, size);
        return 0;
}

/* ---- the kernel package's modules ---- */

static char **module_index; /* "name\tpath" */
static int index_one(const char *path, const struct stat *st _unused_, int type, struct FTW *ftw)
{
        const char *base = path + ftw->base;
        const char *ko = strstr(base, ".ko");
        char *line;

        if (type != FTW_F || !ko)
                return 0;
        if (asprintf(&line, "%.*s\t%s", (int)(ko - base), base, path) < 0)
                return -ENOMEM;
        for (char *p = line; *p != '\t'; p++)
                if (*p == '-')
                        *p = '_';
        return strv_consume(&module_index, line);
}

static const char *module_path(const char *name)
{
        char want[256];
        size_t n;

        snprintf(want, sizeof(want), "%s", name);
        for (char *p = want; *p; p++)
                if (*p == '-')
                        *p = '_';
        n = strlen(want);
        STRV_FOREACH (l, module_index)
                if (strncmp(*l, want, n) == 0 && (*l)[n] == '\t')
                        return *l + n + 1;
        return NULL;
}

/* Appends name after its dependencies (modinfo -F depends). */
static int module_closure(const char *name, char ***order, unsigned depth)
{
        _cleanup_free_ char *deps = NULL, *norm = strdup(name);
        _cleanup_strv_free_ char **list = NULL;
        const char *path;
        int r;

        if (!norm)
                return -ENOMEM;
        for (char *p = norm; *p; p++)
                if (*p == '-')
                        *p = '_';
        if (strv_contains(*order, norm))
                return 0;
        path = module_path(norm);
        if (!path)
                return -ENOENT;
        if (depth > 16)
                return -ELOOP;
        const char *argv[] = { "modinfo", "-F", "depends", path, NULL };
        r = rootfs_run_capture("cannot read module dependencies", argv, NULL, &deps);
        if (r < 0)
                return r;
        if (strv_split_extend(&list, deps, ", \n") < 0)
                return -ENOMEM;
        STRV_FOREACH (d, list) {
                r = module_closure(*d, order, depth + 1);
                if (r < 0)
                        return r == -ENOENT ? log_error_errno(r,
                                                              "module '%s' (needed by '%s') is not in the kernel "
                                                              "package",
                                                              *d, name)
                                            : r;
        }
        return strv_consume(order, TAKE_PTR(norm));
}

static int write_initrd(const struct spec *s, const char *tree, const char *kdir, const char *version, const char *path)
{
        _cleanup_free_ char *moddir = NULL, *busybox = NULL, *list = NULL;
        _cleanup_strv_free_ char **order = NULL;
        struct cpio c = { .mtime = s->source_date_epoch };
        size_t list_size = 0;
        FILE *lf;
        int r;

        if (asprintf(&moddir, "%s/lib/modules/%s", kdir, version) < 0 || asprintf(&busybox, "%s/bin/busybox", tree) < 0)
                return log_oom_rootfs();
        module_index = NULL;
        r = nftw(moddir, index_one, 32, FTW_PHYS);
        if (r != 0) {
                module_index = strv_free(module_index);
                return log_error_errno(r < 0 ? -errno : -ENOMEM, "cannot index the modules in '%s': %m", moddir);
        }
        for (size_t i = 0; i < ELEMENTSOF(initrd_modules); i++) {
                r = module_closure(initrd_modules[i].name, &order, 0);
                if (r == -ENOENT && !initrd_modules[i].required)
                        continue;
                if (r < 0) {
                        module_index = strv_free(module_index);
                        return r == -ENOENT ? log_error_errno(r, "module '%s' is not in the kernel package '%s'",
                                                              initrd_modules[i].name, version)
                                            : log_error_errno(r, "cannot collect the initrd modules: %m");
                }
        }

        c.f = fopen(path, "we");
        if (!c.f) {
                module_index = strv_free(module_index);
                return log_error_errno(-errno, "cannot create '%s': %m", path);
        }
        lf = open_memstream(&list, &list_size);
        if (!lf) {
                fclose(c.f);
                module_index = strv_free(module_index);
                return log_oom_rootfs();
        }
        static const char *const dirs[] = { "bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys" };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
                cpio_add(&c, dirs[i], S_IFDIR | 0755, 0, 0, NULL, 0);
        /* the kernel opens /dev/console before /init runs, devtmpfs or not */
        cpio_add(&c, "dev/console", S_IFCHR | 0600, 5, 1, NULL, 0);
        cpio_add(&c, "init", S_IFREG | 0755, 0, 0, data_busybox_initrd_init, strlen(data_busybox_initrd_init));
        r = cpio_add_file(&c, "bin/busybox", busybox, 0755);
        STRV_FOREACH (m, order) {
                char name[512];
                const char *p = module_path(*m), *base = strrchr(p, '/') + 1;
                if (r < 0)
                        break;
                snprintf(name, sizeof(name), "lib/modules/%s", base);
                r = cpio_add_file(&c, name, p, 0644);
                fprintf(lf, "%s\n", base);
        }
        fclose(lf);
        module_index = strv_free(module_index);
        if (r >= 0) {
                cpio_add(&c, "lib/modules/load.list", S_IFREG | 0644, 0, 0, list, list_size);
                cpio_trailer(&c);
        }
        if (fflush(c.f) != 0 || ferror(c.f))
                r = r < 0 ? r : -EIO;
        fclose(c.f);
        if (r < 0)
                return log_error_errno(r, "cannot write the initrd '%s': %m", path);
        return 0;
}

/* Per build: the cached initrd plus a cpio holding this build's root. */
static int busybox_initrd(const struct spec *s, const char *cached, const char *path)
{
        const struct part_entry *root = NULL;
        _cleanup_free_ char *conf = NULL;
        char uuid[ID128_STRING_MAX];
        struct cpio c = { .mtime = s->source_date_epoch };
        int r;

        for (size_t i = 0; s->layout && i < s->layout->n_entries; i++)
                if (s->layout->entries[i].role == PART_ROLE_ROOT)
                        root = &s->layout->entries[i];
        if (!root)
                return log_error_errno(-EINVAL, "the layout has no root partition for the initrd to find");
        if (asprintf(&conf, "ROOT_UUID=%s\nROOT_FSTYPE=%s\n", id128_to_string(&root->fs_uuid, uuid),
                     root->fstype ? root->fstype : "ext4") < 0)
                return log_oom_rootfs();
        r = copy_file(cached, path, 0644);
        if (r < 0)
                return log_error_errno(r, "cannot copy '%s' to '%s': %m", cached, path);
        c.f = fopen(path, "ae");
        if (!c.f)
                return log_error_errno(-errno, "cannot open '%s': %m", path);
        cpio_add(&c, "etc/ingot-root", S_IFREG | 0644, 0, 0, conf, strlen(conf));
        cpio_trailer(&c);
        r = fflush(c.f) != 0 || ferror(c.f) ? -EIO : 0;
        fclose(c.f);
        if (r < 0)
                return log_error_errno(r, "cannot write '%s': %m", path);
        return 0;
}

/* ---- the root tree ---- */

static int write_tree_file(const char *tree, const char *name, const char *data, mode_t mode)
{
        _cleanup_free_ char *path = NULL, *dir = NULL;
        int r;

        if (asprintf(&path, "%s/%s", tree, name) < 0)
                return -ENOMEM;
        dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        *strrchr(dir, '/') = '\0';
        r = mkdir_p(dir, 0755);
        if (r < 0)
                return r;
        r = write_file_atomic(path, data, strlen(data), mode);
        if (r < 0)
                return r;
        return chmod(path, mode) < 0 ? -errno : 0;
}

static int make_tree(const struct spec *s _unused_, const char *tree)
{
        static const struct {
                const char *path;
                mode_t mode;
        } dirs[] = {
                { "bin", 0755 },      { "sbin", 0755 },          { "usr/bin", 0755 },   { "usr/sbin", 0755 },
                { "etc", 0755 },      { "etc/init.d", 0755 },    { "etc/rcS.d", 0755 }, { "etc/udhcpc", 0755 },
                { "etc/acpi", 0755 }, { "etc/acpi/PWRF", 0755 }, { "dev", 0755 },       { "proc", 0555 },
                { "sys", 0555 },      { "run", 0755 },           { "tmp", 01777 },      { "root", 0700 },
                { "home", 0755 },     { "mnt", 0755 },           { "var", 0755 },       { "var/www", 0755 },
                { "lib", 0755 },
        };
        static const struct {
                const char *path;
                const char *data;
                mode_t mode;
        } files[] = {
                { "etc/inittab", data_busybox_inittab, 0644 },
                { "etc/init.d/rcS", data_busybox_rcS, 0755 },
                { "etc/init.d/rcK", data_busybox_rcK, 0755 },
                { "etc/init.d/httpd", data_busybox_httpd, 0755 },
                { "etc/init.d/network", data_busybox_network, 0755 },
                { "etc/udhcpc/default.script", data_busybox_udhcpc_script, 0755 },
                { "etc/acpi/PWRF/00000080", data_busybox_acpi_power, 0755 },
                { "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644 },
                { "etc/group", "root:x:0:\n", 0644 },
                { "etc/shadow", "root:*:19000:0:99999:7:::\n", 0600 },
                { "etc/shells", "/bin/sh\n/bin/ash\n", 0644 },
                { "etc/os-release", "ID=ingot-busybox\nNAME=\"ingot busybox\"\nPRETTY_NAME=\"ingot busybox\"\n", 0644 },
                { "etc/fstab", "", 0644 },
        };
        _cleanup_free_ char *busybox = NULL, *applets = NULL;
        _cleanup_strv_free_ char **list = NULL;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s/%s", tree, dirs[i].path) < 0)
                        return log_oom_rootfs();
                r = mkdir_p(p, 0755);
                if (r >= 0 && chmod(p, dirs[i].mode) < 0)
                        r = -errno;
                if (r < 0)
                        return log_error_errno(r, "cannot create '%s': %m", p);
        }
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                r = write_tree_file(tree, files[i].path, files[i].data, files[i].mode);
                if (r < 0)
                        return log_error_errno(r, "cannot write '/%s' in the busybox tree: %m", files[i].path);
        }
        {
                static const struct {
                        const char *path, *target;
                } links[] = { { "var/run", "../run" }, { "etc/resolv.conf", "../run/resolv.conf" } };
                for (size_t i = 0; i < ELEMENTSOF(links); i++) {
                        _cleanup_free_ char *p = NULL;
                        if (asprintf(&p, "%s/%s", tree, links[i].path) < 0)
                                return log_oom_rootfs();
                        unlink(p);
                        if (symlink(links[i].target, p) < 0)
                                return log_error_errno(-errno, "cannot create '%s': %m", p);
                }
        }

        /* a link per applet, where the package put none */
        if (asprintf(&busybox, "%s/bin/busybox", tree) < 0)
                return log_oom_rootfs();
        if (access(busybox, X_OK) < 0)
                return log_error_errno(-ENOENT, "no /bin/busybox in the tree: Source=busybox needs busybox-static in "
                                                "Packages=");
        const char *argv[] = { busybox, "--list-full", NULL };
        r = rootfs_run_capture("cannot list the busybox applets", argv, NULL, &applets);
        if (r < 0)
                return r;
        if (strv_split_extend(&list, applets, "\n") < 0)
                return log_oom_rootfs();
        STRV_FOREACH (a, list) {
                _cleanup_free_ char *p = NULL;
                struct stat st;
                if (asprintf(&p, "%s/%s", tree, *a) < 0)
                        return log_oom_rootfs();
                if (lstat(p, &st) == 0)
                        continue;
                if (strchr(*a, '/')) {
                        _cleanup_free_ char *dir = strdup(p);
                        if (!dir)
                                return log_oom_rootfs();
                        *strrchr(dir, '/') = '\0';
                        mkdir_p(dir, 0755);
                }
                if (symlink("/bin/busybox", p) < 0)
                        return log_error_errno(-errno, "cannot create '%s': %m", p);
        }
        return 0;
}

/* ---- apt ---- */

static const char *const apt_lists = "/var/lib/apt/lists";

/* The kernel package to fetch: the one named, or for a metapackage such
 * as linux-image-amd64 the linux-image-* it depends on. */
static int resolve_kernel_package(const char *name, char **ret)
{
        _cleanup_free_ char *out = NULL;
        const char *argv[] = { "apt-cache", "show", "--no-all-versions", name, NULL };
        const char *dep;
        int r;

        r = rootfs_run_capture("cannot look up the kernel package", argv, NULL, &out);
        if (r < 0)
                return log_error_errno(r,
                                       "package '%s' is not in this machine's apt lists: run 'apt-get update' (the "
                                       "busybox image takes its kernel from them)",
                                       name);
        dep = strstr(out, "\nDepends:");
        if (dep) {
                const char *p = strstr(dep, "linux-image-");
                const char *eol = strchr(dep + 1, '\n');
                if (p && (!eol || p < eol)) {
                        *ret = strndup(p, strcspn(p, " ,(\n"));
                        return *ret ? 0 : log_oom_rootfs();
                }
        }
        *ret = strdup(name);
        return *ret ? 0 : log_oom_rootfs();
}

static int busybox_cache_key(const struct spec *s, FILE *key)
{
        DIR *d = opendir(apt_lists);
        _cleanup_strv_free_ char **lists = NULL;
        uint8_t md[32];
        char hex[65];
        struct dirent *de;
        size_t size;

        STRV_FOREACH (p, s->packages)
                fprintf(key, "package=%s\n", *p);
        fprintf(key, "kernel-package=%s\nsource-date-epoch=%" PRIu64 "\n", strna(s->template->kernel_package),
                s->source_date_epoch);
        /* The packages come from the host's lists: when they change (apt-get
         * update), so may the versions. */
        if (!d)
                return log_error_errno(-errno,
                                       "cannot read '%s': the busybox image takes its packages from this machine's "
                                       "apt lists (run 'apt-get update'): %m",
                                       apt_lists);
        while ((de = readdir(d))) {
                _cleanup_free_ char *p = NULL;
                struct stat st;
                char *line;
                if (!strstr(de->d_name, "_Packages") && !strstr(de->d_name, "Release"))
                        continue;
                if (asprintf(&p, "%s/%s", apt_lists, de->d_name) < 0 || stat(p, &st) < 0)
                        continue;
                if (asprintf(&line, "apt-list=%s %lld %lld", de->d_name, (long long)st.st_size,
                             (long long)st.st_mtim.tv_sec) < 0 ||
                    strv_consume(&lists, line) < 0) {
                        closedir(d);
                        return log_oom_rootfs();
                }
        }
        closedir(d);
        if (!lists)
                return log_error_errno(-ENOENT,
                                       "no apt lists in '%s': run 'apt-get update' (the busybox image takes its "
                                       "packages from them)",
                                       apt_lists);
        qsort(lists, strv_length(lists), sizeof(char *), rootfs_cmp_str);
        STRV_FOREACH (l, lists)
                fprintf(key, "%s\n", *l);
        /* and from the scripts built into ingot */
        size = 0;
        {
                _cleanup_free_ char *all = NULL;
                FILE *f = open_memstream(&all, &size);
                if (!f)
                        return log_oom_rootfs();
                fputs(data_busybox_initrd_init, f);
                fputs(data_busybox_inittab, f);
                fputs(data_busybox_rcS, f);
                fputs(data_busybox_rcK, f);
                fputs(data_busybox_httpd, f);
                fputs(data_busybox_network, f);
                fputs(data_busybox_udhcpc_script, f);
                fputs(data_busybox_acpi_power, f);
                for (size_t i = 0; i < ELEMENTSOF(initrd_modules); i++)
                        fprintf(f, "%s\n", initrd_modules[i].name);
                fclose(f);
                sha256_buffer(all, size, md);
        }
        fprintf(key, "data=%s\n", hex_encode(md, sizeof(md), hex));
        return 0;
}

static int busybox_bootstrap(const struct spec *s, const char *out_dir)
{
        _cleanup_free_ char *work = NULL, *debs = NULL, *tree = NULL, *kdir = NULL, *kpkg = NULL, *prefix = NULL,
                            *version = NULL, *vmlinuz = NULL, *out = NULL;
        _cleanup_strv_free_ char **argv = NULL, **files = NULL;
        DIR *d;
        struct dirent *de;
        int r;

        if (s->template->mirror || s->template->suite)
                log_warning("Source=busybox takes its packages from this machine's apt lists; Suite= and Mirror= "
                            "are not used");
        r = resolve_kernel_package(s->template->kernel_package, &kpkg);
        if (r < 0)
                return r;
        if (asprintf(&work, "%s/work", out_dir) < 0 || asprintf(&debs, "%s/debs", work) < 0 ||
            asprintf(&tree, "%s/tree", work) < 0 || asprintf(&kdir, "%s/kernel", work) < 0 ||
            asprintf(&prefix, "%s_", kpkg) < 0)
                return log_oom_rootfs();
        if ((r = mkdir_p(debs, 0755)) < 0 || (r = mkdir_p(tree, 0755)) < 0 || (r = mkdir_p(kdir, 0755)) < 0)
                return log_error_errno(r, "cannot create '%s': %m", work);

        log_info("fetching %s and %zu package(s) for the busybox image", kpkg, strv_length(s->packages));
        if (strv_extend(&argv, "apt-get") < 0 || strv_extend(&argv, "download") < 0 ||
            (geteuid() == 0 && (strv_extend(&argv, "-o") < 0 || strv_extend(&argv, "APT::Sandbox::User=root") < 0)) ||
            strv_extend_strv(&argv, s->packages) < 0 || strv_extend(&argv, kpkg) < 0)
                return log_oom_rootfs();
        r = rootfs_run("cannot download the busybox image's packages (are this machine's apt lists current? run "
                       "'apt-get update')",
                       (const char *const *)argv, debs, NULL);
        if (r < 0)
                return r;

        d = opendir(debs);
        if (!d)
                return log_error_errno(-errno, "cannot read '%s': %m", debs);
        while ((de = readdir(d)))
                if (strstr(de->d_name, ".deb") && strv_extend(&files, de->d_name) < 0) {
                        closedir(d);
                        return log_oom_rootfs();
                }
        closedir(d);
        qsort(files, strv_length(files), sizeof(char *), rootfs_cmp_str);
        STRV_FOREACH (f, files) {
                _cleanup_free_ char *deb = NULL;
                bool kernel = strncmp(*f, prefix, strlen(prefix)) == 0;
                if (asprintf(&deb, "%s/%s", debs, *f) < 0)
                        return log_oom_rootfs();
                const char *x[] = { "dpkg-deb", "-x", deb, kernel ? kdir : tree, NULL };
                r = rootfs_run("cannot unpack a package", x, NULL, NULL);
                if (r < 0)
                        return r;
        }

        r = make_tree(s, tree);
        if (r < 0)
                return r;
        if (asprintf(&out, "%s/" ROOTFS_BASE_TAR, out_dir) < 0)
                return log_oom_rootfs();
        r = rootfs_tar_dir(tree, out, s->source_date_epoch);
        if (r < 0)
                return r;

        version = strdup(strncmp(kpkg, "linux-image-", 12) == 0 ? kpkg + 12 : kpkg);
        if (!version || asprintf(&vmlinuz, "%s/boot/vmlinuz-%s", kdir, version) < 0)
                return log_oom_rootfs();
        free(out);
        if (asprintf(&out, "%s/" ROOTFS_KERNEL, out_dir) < 0)
                return log_oom_rootfs();
        r = copy_file(vmlinuz, out, 0644);
        if (r < 0)
                return log_error_errno(r, "cannot copy the kernel '%s' of package '%s': %m", vmlinuz, kpkg);
        free(out);
        if (asprintf(&out, "%s/" ROOTFS_INITRD, out_dir) < 0)
                return log_oom_rootfs();
        r = write_initrd(s, tree, kdir, version, out);
        if (r < 0)
                return r;
        free(out);
        if (asprintf(&out, "%s/" ROOTFS_KERNEL_VERSION, out_dir) < 0)
                return log_oom_rootfs();
        r = write_file_atomic(out, version, strlen(version), 0644);
        if (r < 0)
                return log_error_errno(r, "cannot write '%s': %m", out);
        r = rm_rf(work);
        if (r < 0)
                return log_error_errno(r, "cannot remove '%s': %m", work);
        return 0;
}

const struct rootfs_source_ops rootfs_busybox_ops = {
        .name = "busybox",
        .source = ROOTFS_SOURCE_BUSYBOX,
        .cache_key = busybox_cache_key,
        .bootstrap = busybox_bootstrap,
        .initrd = busybox_initrd,
};
