/* Owns one instance's lifecycle: the overlay over a base image, the boot
 * files taken from the base's ESP (cached per base), QEMU started detached
 * from ingot (so a deploy survives ingot), the health check, the graceful
 * stop, and the probe that recognises the instance's QEMU after a crash.
 * A pid is only ever signalled after /proc/PID/cmdline shows it runs this
 * instance's overlay: pidfiles outlive processes and pids get reused. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>

#include "instance.h"
#include "probe.h"
#include "qemu.h"
#include "shared/fileio.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/run.h"
#include "shared/strv.h"
#include "shared/time-util.h"

#define START_TIMEOUT_SEC 30 /* QEMU's own start, not the guest's boot */
#define QMP_TIMEOUT_MS 5000

static const char *const status_names[_INSTANCE_STATUS_MAX] = {
        [INSTANCE_RUNNING] = "running",
        [INSTANCE_UNRESPONSIVE] = "unresponsive",
        [INSTANCE_EXITED] = "exited",
        [INSTANCE_MISSING] = "missing",
};

const char *instance_status_to_string(enum instance_status s)
{
        return s >= 0 && s < _INSTANCE_STATUS_MAX ? status_names[s] : NULL;
}

static double now_real(void)
{
        return clock_sec(CLOCK_REALTIME);
}

static void sleep_ms(int ms)
{
        (void)poll(NULL, 0, ms);
}

static char *path_join(const char *dir, const char *name)
{
        char *p;

        return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* ---- ids ---- */

bool instance_id_valid(const char *s)
{
        if (!s || strncmp(s, INSTANCE_ID_PREFIX, 2) != 0 || strlen(s) != 2 + INSTANCE_ID_HEX)
                return false;
        for (const char *c = s + 2; *c; c++)
                if (!strchr("0123456789abcdef", *c))
                        return false;
        return true;
}

int instance_id_new(char buf[static 20])
{
        unsigned char b[9];

        if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
                return -errno ?: -EIO;
        snprintf(buf, 20, INSTANCE_ID_PREFIX "%01x%02x%02x%02x%02x%02x%02x%02x%02x", b[0] & 0xf, b[1], b[2], b[3], b[4],
                 b[5], b[6], b[7], b[8]);
        return 0;
}

/* ---- loader entries and the command line ---- */

void instance_boot_entry_done(struct instance_boot_entry *e)
{
        e->kernel = x_free(e->kernel);
        e->initrd = x_free(e->initrd);
        e->options = x_free(e->options);
}

int instance_parse_loader_entry(const char *text, struct instance_boot_entry *ret)
{
        struct instance_boot_entry e = { 0 };
        const char *p = text;

        while (*p) {
                const char *eol = strchrnul(p, '\n'), *k = p, *v;
                size_t klen, vlen;
                char **slot = NULL;

                while (k < eol && (*k == ' ' || *k == '\t'))
                        k++;
                for (v = k; v < eol && *v != ' ' && *v != '\t'; v++)
                        ;
                klen = (size_t)(v - k);
                while (v < eol && (*v == ' ' || *v == '\t'))
                        v++;
                vlen = (size_t)(eol - v);
                while (vlen > 0 && strchr(" \t\r", v[vlen - 1]))
                        vlen--;
                if (klen == 5 && strncmp(k, "linux", 5) == 0)
                        slot = &e.kernel;
                else if (klen == 6 && strncmp(k, "initrd", 6) == 0)
                        slot = &e.initrd;
                else if (klen == 7 && strncmp(k, "options", 7) == 0)
                        slot = &e.options;
                /* systemd-boot: a repeated key replaces (linux) or adds (options); one initrd is all we pass */
                if (slot && vlen > 0) {
                        char *s = NULL;

                        if (slot == &e.options && e.options) {
                                if (asprintf(&s, "%s %.*s", e.options, (int)vlen, v) < 0)
                                        s = NULL;
                        } else
                                s = strndup(v, vlen);
                        if (!s) {
                                instance_boot_entry_done(&e);
                                return -ENOMEM;
                        }
                        free(*slot);
                        *slot = s;
                }
                p = *eol ? eol + 1 : eol;
        }
        if (!e.kernel) {
                instance_boot_entry_done(&e);
                return -EBADMSG;
        }
        *ret = e;
        return 0;
}

char *instance_kernel_cmdline(const char *options, const char *hostname)
{
        char *s;

        if (asprintf(&s, "%s%ssystemd.hostname=%s ingot.hostname=%s", options ?: "", options && *options ? " " : "",
                     hostname, hostname) < 0)
                return NULL;
        return s;
}

/* ---- argv and pid checks ---- */

static char *disk_path(const char *dir)
{
        return path_join(dir, "disk.qcow2");
}

int instance_build_argv(const struct instance_runtime *rt, char ***ret)
{
        _cleanup_free_ char *disk = disk_path(rt->dir), *serial = path_join(rt->dir, "serial.log"),
                            *qmp = path_join(rt->dir, "qmp.sock"), *pid = path_join(rt->dir, "qemu.pid");
        struct qemu_hostfwd fwd[INSTANCE_MAX_PORTS];
        struct qemu_config c = {
                .image = disk,
                .image_format = "qcow2",
                .firmware = QEMU_FIRMWARE_BIOS, /* unused with -kernel, but SeaBIOS loads it */
                .accel = rt->accel,
                .memory_mib = rt->memory_mib ?: 256,
                .cpus = rt->cpus ?: 1,
                .serial_log = serial,
                .qmp_socket = qmp,
                .kernel = rt->kernel,
                .initrd = rt->initrd,
                .append = rt->append,
                .pidfile = pid,
                .daemonize = true,
                .user_net = true,
                .hostfwd = fwd,
                .n_hostfwd = rt->n_ports,
        };

        if (!disk || !serial || !qmp || !pid)
                return -ENOMEM;
        if (rt->n_ports > INSTANCE_MAX_PORTS || !rt->kernel || rt->dir[0] != '/')
                return -EINVAL;
        for (size_t i = 0; i < rt->n_ports; i++)
                fwd[i] = (struct qemu_hostfwd){ .guest = rt->ports[i].guest, .host = rt->ports[i].host };
        return qemu_build_argv(&c, ret);
}

bool instance_cmdline_matches(const char *cmdline, size_t n, const char *dir)
{
        _cleanup_free_ char *disk = disk_path(dir), *esc = NULL, *needle = NULL;
        const char *end = cmdline + n, *base;

        if (!disk || n == 0 || cmdline[n - 1] != '\0')
                return false;
        esc = qemu_escape_opt_value(disk);
        if (!esc || asprintf(&needle, "file=%s,", esc) < 0)
                return false;
        base = strrchr(cmdline, '/');
        base = base ? base + 1 : cmdline;
        if (strncmp(base, "qemu-system-", 12) != 0)
                return false;
        for (const char *a = cmdline; a < end; a += strlen(a) + 1)
                if (strstr(a, needle))
                        return true;
        return false;
}

/* Whether pid is alive and is dir's QEMU (a zombie has an empty cmdline). */
static bool pid_is_instance(pid_t pid, const char *dir)
{
        _cleanup_free_ char *buf = NULL;
        char path[64];
        size_t n = 0;

        if (pid <= 1)
                return false;
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        if (read_full_file(path, 1024 * 1024, &buf, &n) < 0)
                return false;
        return instance_cmdline_matches(buf, n, dir);
}

static pid_t read_pidfile(const char *dir)
{
        _cleanup_free_ char *path = path_join(dir, "qemu.pid"), *s = NULL;
        char *end;
        long v;

        if (!path || read_full_file(path, 64, &s, NULL) < 0)
                return 0;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || v <= 1 || v > INT_MAX)
                return 0;
        return (pid_t)v;
}

/* ---- instance.json ---- */

static int read_json(const char *dir, json_t **ret)
{
        _cleanup_free_ char *path = path_join(dir, "instance.json"), *text = NULL;
        json_t *j;
        int r;

        if (!path)
                return -ENOMEM;
        r = read_full_file(path, 1024 * 1024, &text, NULL);
        if (r < 0)
                return r;
        j = json_loads(text, 0, NULL);
        if (!json_is_object(j)) {
                json_decref(j);
                return -EBADMSG;
        }
        *ret = j;
        return 0;
}

static int write_json(const char *dir, json_t *j)
{
        _cleanup_free_ char *path = path_join(dir, "instance.json"), *text = NULL;

        if (!path)
                return -ENOMEM;
        text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!text)
                return -ENOMEM;
        return write_file_atomic(path, text, strlen(text), 0600);
}

static const char *json_str(json_t *j, const char *key)
{
        return json_string_value(json_object_get(j, key));
}

/* ---- boot files from the ESP ---- */

static const char *const mtools_env[] = { "MTOOLS_SKIP_CHECK=1", NULL };

/* Runs an mtools program on the ESP; what names the file for the message. */
static int mtools_run(const char *const *argv, const char *what, char **ret_stdout)
{
        _cleanup_free_ char *err = NULL;
        char line[256];
        int r = run_argv(argv, &(struct run_options){ .env = mtools_env, .timeout_sec = 60 }, ret_stdout, &err);

        if (r < 0)
                return log_error_errno(r, "cannot run '%s': %m", argv[0]);
        if (r > 0)
                return log_error_errno(-EIO, "cannot read '%s' from the ESP: %s", what,
                                       run_output_line(err, true, line, sizeof(line)));
        return 0;
}

/* "IMAGE@@OFFSET" for the ESP of image. */
static int esp_spec(const char *image, char **ret)
{
        _cleanup_(probe_image_freep) struct probe_image *img = NULL;
        int r = probe_image(image, &img);

        if (r < 0)
                return r;
        for (size_t i = 0; i < img->n_partitions; i++)
                if (streq_ptr(img->partitions[i].role, "esp"))
                        return asprintf(ret, "%s@@%" PRIu64, image, img->partitions[i].start) < 0 ? -ENOMEM : 0;
        return log_error_errno(-ENOENT, "no ESP in '%s'", image);
}

/* Takes the entry sorted last (the newest version) when there are several:
 * a sealed image has one. */
static int esp_read_entry(const char *spec, struct instance_boot_entry *ret)
{
        _cleanup_free_ char *list = NULL, *text = NULL, *best = NULL;
        int r;

        r = mtools_run((const char *const[]){ "mdir", "-b", "-i", spec, "::/loader/entries", NULL }, "loader/entries",
                       &list);
        if (r < 0)
                return r;
        for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
                size_t n = strlen(line);

                if (n < 5 || !streq(line + n - 5, ".conf"))
                        continue;
                if (!best || strcmp(line, best) > 0) {
                        free(best);
                        best = strdup(line);
                        if (!best)
                                return -ENOMEM;
                }
        }
        if (!best)
                return log_error_errno(-ENOENT, "no loader entry in the ESP of '%s'", spec);
        r = mtools_run((const char *const[]){ "mtype", "-i", spec, best, NULL }, best, &text);
        if (r < 0)
                return r;
        r = instance_parse_loader_entry(text, ret);
        if (r == -EBADMSG)
                return log_error_errno(r, "loader entry '%s' has no 'linux' line", best);
        return r;
}

static int esp_copy(const char *spec, const char *esp_path, const char *to)
{
        _cleanup_free_ char *src = NULL;

        if (asprintf(&src, "::%s", esp_path) < 0)
                return -ENOMEM;
        return mtools_run((const char *const[]){ "mcopy", "-n", "-o", "-i", spec, src, to, NULL }, esp_path, NULL);
}

/* The identity of the base file, so a replaced base is not served stale files. */
static int base_stamp(const char *base, char **ret)
{
        struct stat st;

        if (stat(base, &st) < 0)
                return -errno;
        return asprintf(ret, "%llu %llu %lld %lld.%09ld\n", (unsigned long long)st.st_dev,
                        (unsigned long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                        st.st_mtim.tv_nsec) < 0
                       ? -ENOMEM
                       : 0;
}

static bool cache_valid(const char *cache, const char *stamp)
{
        static const char *const files[] = { "vmlinuz", "initrd.img", "cmdline" };
        _cleanup_free_ char *p = path_join(cache, "stamp"), *s = NULL;

        if (!p || read_full_file(p, 4096, &s, NULL) < 0 || !streq(s, stamp))
                return false;
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *f = path_join(cache, files[i]);
                if (!f || access(f, R_OK) < 0)
                        return false;
        }
        return true;
}

/* Extracts vmlinuz, initrd.img (empty when the entry has none), cmdline and
 * stamp from base's ESP into the existing directory to. */
static int extract_boot(const char *base, const char *stamp, const char *to)
{
        _cleanup_(instance_boot_entry_done) struct instance_boot_entry e = { 0 };
        _cleanup_free_ char *spec = NULL, *k = path_join(to, "vmlinuz"), *i = path_join(to, "initrd.img"),
                            *c = path_join(to, "cmdline"), *s = path_join(to, "stamp");
        int r;

        if (!k || !i || !c || !s)
                return -ENOMEM;
        r = esp_spec(base, &spec);
        if (r < 0)
                return r;
        r = esp_read_entry(spec, &e);
        if (r < 0)
                return r;
        r = esp_copy(spec, e.kernel, k);
        if (r >= 0 && e.initrd)
                r = esp_copy(spec, e.initrd, i);
        else if (r >= 0)
                r = write_file_atomic(i, "", 0, 0644);
        if (r < 0)
                return r;
        r = write_file_atomic(c, e.options ?: "", strlen(e.options ?: ""), 0644);
        r = r ?: write_file_atomic(s, stamp, strlen(stamp), 0644);
        if (r < 0)
                return log_error_errno(r, "cannot write to '%s': %m", to);
        return 0;
}

/* Returns the directory holding base's boot files: the cache when it is
 * usable, else dir itself (ret is a new string). */
static int boot_files(const char *base, const char *cache_opt, const char *dir, char **ret)
{
        _cleanup_free_ char *cache = NULL, *stamp = NULL, *tmp = NULL;
        int r;

        r = base_stamp(base, &stamp);
        if (r < 0)
                return log_error_errno(r, "cannot open base image '%s': %m", base);
        if (cache_opt)
                cache = strdup(cache_opt);
        else if (asprintf(&cache, "%s.boot", base) < 0)
                cache = NULL;
        if (!cache)
                return log_error_errno(-ENOMEM, "out of memory");
        if (cache_valid(cache, stamp)) {
                *ret = TAKE_PTR(cache);
                return 0;
        }

        /* Filled under a temporary name and renamed, so a half-extracted cache is never used. */
        if (asprintf(&tmp, "%s.tmp-XXXXXX", cache) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        if (!mkdtemp(tmp)) {
                log_debug("cannot create '%s' (%m); keeping the boot files in the instance", tmp);
                r = extract_boot(base, stamp, dir);
                if (r < 0)
                        return r;
                *ret = strdup(dir);
                return *ret ? 0 : log_error_errno(-ENOMEM, "out of memory");
        }
        (void)chmod(tmp, 0755);
        r = extract_boot(base, stamp, tmp);
        if (r < 0) {
                (void)rm_rf(tmp);
                return r;
        }
        if (rename(tmp, cache) < 0) {
                /* an old cache (stale stamp) or a concurrent create's: replace or accept it */
                if (cache_valid(cache, stamp)) {
                        (void)rm_rf(tmp);
                        *ret = TAKE_PTR(cache);
                        return 0;
                }
                (void)rm_rf(cache);
                if (rename(tmp, cache) < 0) {
                        r = -errno;
                        (void)rm_rf(tmp);
                        return log_error_errno(r, "cannot rename '%s' to '%s': %m", tmp, cache);
                }
        }
        *ret = TAKE_PTR(cache);
        return 0;
}

/* A hard link from the cache (O(1)); a copy across filesystems. */
static int link_or_copy(const char *from_dir, const char *name, const char *to_dir)
{
        _cleanup_free_ char *from = path_join(from_dir, name), *to = path_join(to_dir, name);

        if (!from || !to)
                return -ENOMEM;
        if (streq(from_dir, to_dir))
                return 0;
        if (link(from, to) == 0)
                return 0;
        return copy_file(from, to, 0644);
}

/* ---- create ---- */

static int create_overlay(const char *base, const char *disk)
{
        _cleanup_free_ char *err = NULL;
        const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, disk, NULL };
        char line[256];
        int r = run_argv(argv, &(struct run_options){ .timeout_sec = 60 }, NULL, &err);

        if (r < 0)
                return log_error_errno(r, "cannot run 'qemu-img': %m");
        if (r > 0)
                return log_error_errno(-EIO, "cannot create overlay '%s': %s", disk,
                                       run_output_line(err, true, line, sizeof(line)));
        return 0;
}

static int do_create(const struct instance_config *c, const char *dir)
{
        _cleanup_free_ char *base = NULL, *boot = NULL, *disk = disk_path(dir), *cmdline_path = NULL, *options = NULL,
                            *cmdline = NULL;
        json_t *ports;
        json_t *j;
        int r;

        if (!disk)
                return log_error_errno(-ENOMEM, "out of memory");
        base = realpath(c->base, NULL);
        if (!base)
                return log_error_errno(-errno, "cannot open base image '%s': %m", c->base);

        r = boot_files(base, c->boot_cache, dir, &boot);
        if (r < 0)
                return r;
        r = link_or_copy(boot, "vmlinuz", dir);
        r = r ?: link_or_copy(boot, "initrd.img", dir);
        if (r < 0)
                return log_error_errno(r, "cannot copy the boot files from '%s' to '%s': %m", boot, dir);
        cmdline_path = path_join(boot, "cmdline");
        if (!cmdline_path)
                return log_error_errno(-ENOMEM, "out of memory");
        r = read_full_file(cmdline_path, 64 * 1024, &options, NULL);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", cmdline_path);
        options[strcspn(options, "\n")] = '\0';
        cmdline = instance_kernel_cmdline(options, c->hostname ?: c->id);
        if (!cmdline)
                return log_error_errno(-ENOMEM, "out of memory");

        r = create_overlay(base, disk);
        if (r < 0)
                return r;

        ports = json_array();
        for (size_t i = 0; i < c->n_ports; i++)
                json_array_append_new(ports, json_pack("{s:I,s:I}", "guest", (json_int_t)c->ports[i].guest, "host",
                                                       (json_int_t)c->ports[i].host));
        j = json_pack("{s:s,s:s,s:s,s:I,s:I,s:o,s:s,s:s,s:s,s:f}", "id", c->id, "hostname", c->hostname ?: c->id,
                      "base", base, "memory_mib", (json_int_t)(c->memory_mib ?: 256), "cpus",
                      (json_int_t)(c->cpus ?: 1), "ports", ports, "accel", qemu_accel_to_string(c->accel), "boot", boot,
                      "cmdline", cmdline, "created", now_real());
        if (!j)
                return log_error_errno(-ENOMEM, "out of memory");
        r = write_json(dir, j);
        json_decref(j);
        if (r < 0)
                return log_error_errno(r, "cannot write '%s/instance.json': %m", dir);
        return 0;
}

int instance_create(const struct instance_config *c)
{
        _cleanup_free_ char *dir = NULL;
        int r;

        if (!instance_id_valid(c->id))
                return log_error_errno(-EINVAL, "invalid instance id '%s'", strna(c->id));
        if (c->n_ports > INSTANCE_MAX_PORTS)
                return log_error_errno(-EINVAL, "too many ports: at most %d", INSTANCE_MAX_PORTS);
        for (size_t i = 0; i < c->n_ports; i++)
                if (c->ports[i].guest == 0 || c->ports[i].guest > 65535 || c->ports[i].host == 0 ||
                    c->ports[i].host > 65535)
                        return log_error_errno(-EINVAL, "invalid port forward %u:%u", c->ports[i].guest,
                                               c->ports[i].host);
        if (mkdir(c->dir, 0700) < 0)
                return log_error_errno(-errno, "cannot create instance directory '%s': %m", c->dir);
        dir = realpath(c->dir, NULL);
        if (!dir) {
                r = log_error_errno(-errno, "cannot resolve '%s': %m", c->dir);
                (void)rmdir(c->dir);
                return r;
        }
        r = do_create(c, dir);
        if (r < 0)
                (void)rm_rf(dir);
        return r;
}

/* ---- probe ---- */

int instance_config_matches(const char *dir, const struct instance_config *c)
{
        json_t *j = NULL, *ports;
        int r;

        r = read_json(dir, &j);
        if (r < 0)
                return r;
        ports = json_object_get(j, "ports");
        r = json_integer_value(json_object_get(j, "memory_mib")) == (json_int_t)(c->memory_mib ?: 256) &&
            json_integer_value(json_object_get(j, "cpus")) == (json_int_t)(c->cpus ?: 1) && json_is_array(ports) &&
            json_array_size(ports) == c->n_ports;
        for (size_t i = 0; r && i < c->n_ports; i++) {
                json_t *p = json_array_get(ports, i);

                r = json_integer_value(json_object_get(p, "guest")) == (json_int_t)c->ports[i].guest &&
                    json_integer_value(json_object_get(p, "host")) == (json_int_t)c->ports[i].host;
        }
        json_decref(j);
        return r;
}

int instance_probe(const char *dir, enum instance_status *ret, pid_t *ret_pid)
{
        _cleanup_free_ char *abs = realpath(dir, NULL), *json = NULL, *qmp = NULL;
        enum instance_status s;
        pid_t pid;

        if (!abs || !(json = path_join(abs, "instance.json")) || access(json, F_OK) < 0) {
                s = INSTANCE_MISSING;
                pid = 0;
        } else {
                pid = read_pidfile(abs);
                if (!pid_is_instance(pid, abs)) {
                        s = INSTANCE_EXITED;
                        pid = 0;
                } else {
                        qmp = path_join(abs, "qmp.sock");
                        if (!qmp)
                                return -ENOMEM;
                        s = qemu_qmp_command(qmp, "query-status", 2000) == 0 ? INSTANCE_RUNNING : INSTANCE_UNRESPONSIVE;
                }
        }
        *ret = s;
        if (ret_pid)
                *ret_pid = pid;
        return 0;
}

/* ---- start ---- */

static void remove_runtime_files(const char *dir)
{
        static const char *const names[] = { "qemu.pid", "qmp.sock" };

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *p = path_join(dir, names[i]);
                if (p)
                        (void)unlink(p);
        }
}

/* Kills whatever QEMU of dir the pidfile names (a start that went wrong). */
static void kill_instance_qemu(const char *dir)
{
        pid_t pid = read_pidfile(dir);

        if (pid_is_instance(pid, dir)) {
                (void)kill(pid, SIGKILL);
                for (int i = 0; i < 100 && pid_is_instance(pid, dir); i++)
                        sleep_ms(50);
        }
        remove_runtime_files(dir);
}

static int load_ports(json_t *j, struct instance_port *ports, size_t *ret_n)
{
        json_t *a = json_object_get(j, "ports"), *p;
        size_t i;

        if (!json_is_array(a) || json_array_size(a) > INSTANCE_MAX_PORTS)
                return -EBADMSG;
        json_array_foreach(a, i, p)
        {
                ports[i].guest = (unsigned)json_integer_value(json_object_get(p, "guest"));
                ports[i].host = (unsigned)json_integer_value(json_object_get(p, "host"));
        }
        *ret_n = json_array_size(a);
        return 0;
}

int instance_start(const char *dir_arg)
{
        _cleanup_free_ char *dir = realpath(dir_arg, NULL), *kernel = NULL, *initrd = NULL, *serial = NULL, *qmp = NULL,
                            *cmd = NULL, *err = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        struct instance_port ports[INSTANCE_MAX_PORTS];
        struct instance_runtime rt = { 0 };
        enum instance_status st;
        json_t *j = NULL;
        char line[512];
        int r, fd, accel;
        pid_t pid;

        if (!dir)
                return log_error_errno(-errno, "cannot open instance '%s': %m", dir_arg);
        r = read_json(dir, &j);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s/instance.json': %m", dir);
        r = instance_probe(dir, &st, &pid);
        if (r >= 0 && (st == INSTANCE_RUNNING || st == INSTANCE_UNRESPONSIVE)) {
                json_decref(j);
                return log_error_errno(-EBUSY, "instance '%s' is running already (pid %d)", dir, (int)pid);
        }

        kernel = path_join(dir, "vmlinuz");
        initrd = path_join(dir, "initrd.img");
        serial = path_join(dir, "serial.log");
        qmp = path_join(dir, "qmp.sock");
        if (!kernel || !initrd || !serial || !qmp) {
                json_decref(j);
                return log_error_errno(-ENOMEM, "out of memory");
        }
        accel = qemu_accel_from_string(json_str(j, "accel"));
        rt = (struct instance_runtime){
                .dir = dir,
                .kernel = kernel,
                .initrd = initrd,
                .append = json_str(j, "cmdline"),
                .memory_mib = (unsigned)json_integer_value(json_object_get(j, "memory_mib")),
                .cpus = (unsigned)json_integer_value(json_object_get(j, "cpus")),
                .ports = ports,
                .accel = accel >= 0 ? (enum qemu_accel)accel : qemu_probe_accel(3),
        };
        {
                struct stat sb;
                if (stat(initrd, &sb) == 0 && sb.st_size == 0)
                        rt.initrd = NULL;
        }
        r = load_ports(j, ports, &rt.n_ports);
        if (r >= 0)
                r = instance_build_argv(&rt, &argv);
        if (r < 0) {
                json_decref(j);
                return log_error_errno(r, "cannot build the qemu command line for '%s': %m", dir);
        }

        remove_runtime_files(dir);
        fd = open(serial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                json_decref(j);
                return log_error_errno(r, "cannot create '%s': %m", serial);
        }
        close(fd);

        cmd = qemu_argv_to_string(argv);
        log_debug("running %s", strna(cmd));
        /* -daemonize: the parent exits once QEMU is set up (pidfile written,
         * QMP listening), the daemon has setsid()ed and is no child of ours,
         * so neither run_argv's process group nor its parent-death signal
         * reaches it. */
        r = run_argv((const char *const *)argv, &(struct run_options){ .timeout_sec = START_TIMEOUT_SEC }, NULL, &err);
        if (r != 0) {
                kill_instance_qemu(dir);
                json_decref(j);
                if (r < 0 && r != -ETIMEDOUT)
                        return log_error_errno(r, "cannot run '%s': %m", argv[0]);
                if (r == -ETIMEDOUT)
                        return log_error_errno(r, "qemu did not start within %d s", START_TIMEOUT_SEC);
                return log_error_errno(-EIO, "qemu failed to start instance '%s': %s", dir,
                                       run_output_line(err, true, line, sizeof(line)));
        }

        pid = read_pidfile(dir);
        if (!pid_is_instance(pid, dir)) {
                kill_instance_qemu(dir);
                json_decref(j);
                return log_error_errno(-ESRCH, "qemu exited right after starting instance '%s'", dir);
        }
        r = qemu_qmp_command(qmp, "query-status", QMP_TIMEOUT_MS);
        if (r < 0) {
                kill_instance_qemu(dir);
                json_decref(j);
                return log_error_errno(r, "qemu of instance '%s' does not answer on '%s': %m", dir, qmp);
        }

        json_object_set_new(j, "pid", json_integer(pid));
        json_object_set_new(j, "accel_used", json_string(qemu_accel_to_string(rt.accel)));
        json_object_set_new(j, "started", json_real(now_real()));
        r = write_json(dir, j);
        json_decref(j);
        if (r < 0) {
                kill_instance_qemu(dir);
                return log_error_errno(r, "cannot write '%s/instance.json': %m", dir);
        }
        return 0;
}

/* ---- health ---- */

static int tcp_check(unsigned port)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        socklen_t len = sizeof(int);
        int e = 0;

        if (fd < 0)
                return -errno;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                if (errno != EINPROGRESS)
                        return -errno;
                if (poll(&p, 1, 2000) <= 0)
                        return -ETIMEDOUT;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
                        return -errno;
                if (e != 0)
                        return -e;
        }
        return 0;
}

static size_t discard(void *p _unused_, size_t size, size_t n, void *u _unused_)
{
        return size * n;
}

/* 0 on 2xx; else -EIO with what happened in msg. QEMU's user networking
 * accepts the connection before the guest listens, so a TCP connect alone
 * passes early; HTTP sees the guest's answer. */
static int http_check(unsigned port, const char *path, char *msg, size_t size)
{
        CURL *c = curl_easy_init();
        char url[200], errbuf[CURL_ERROR_SIZE] = "";
        long code = 0;
        CURLcode cr;

        if (!c)
                return -ENOMEM;
        snprintf(url, sizeof(url), "http://127.0.0.1:%u%s%s", port, path && *path == '/' ? "" : "/", path ?: "");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        cr = curl_easy_perform(c);
        if (cr == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        if (cr != CURLE_OK) {
                snprintf(msg, size, "GET %s: %.250s", url, *errbuf ? errbuf : curl_easy_strerror(cr));
                return -EIO;
        }
        if (code < 200 || code > 299) {
                snprintf(msg, size, "GET %s: status %ld", url, code);
                return -EIO;
        }
        return 0;
}

static char *make_reason(const char *why, const struct qemu_serial *s)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return NULL;
        fprintf(f, "%s; last serial lines:\n", why);
        qemu_serial_print_tail(s, f);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        /* no trailing newline: the caller prints it as one message */
        if (size > 0 && buf[size - 1] == '\n')
                buf[size - 1] = '\0';
        return buf;
}

static void read_serial(int fd, struct qemu_serial *s)
{
        char buf[8192];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0 || qemu_serial_feed(s, buf, (size_t)n) < 0)
                        return;
        }
}

int instance_wait_healthy(const char *dir_arg, const struct instance_health *h, unsigned timeout_sec,
                          double *ret_seconds, char **ret_reason)
{
        _cleanup_free_ char *dir = realpath(dir_arg, NULL), *serial = NULL;
        _cleanup_close_ int fd = -1;
        struct qemu_serial s = { 0 };
        double deadline = now_mono() + timeout_sec, started = 0;
        char why[768] = "", check_msg[512] = "";
        json_t *j = NULL;
        pid_t pid;
        int r;

        if (!dir)
                return log_error_errno(-errno, "cannot open instance '%s': %m", dir_arg);
        r = read_json(dir, &j);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s/instance.json': %m", dir);
        started = json_number_value(json_object_get(j, "started"));
        pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
        json_decref(j);
        serial = path_join(dir, "serial.log");
        if (!serial)
                return log_error_errno(-ENOMEM, "out of memory");
        fd = open(serial, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", serial);

        for (;;) {
                bool alive = pid_is_instance(pid, dir);

                read_serial(fd, &s); /* after the liveness check, so a last line is not missed */
                if (s.ready_line) {
                        if (!h || h->check == INSTANCE_CHECK_NONE)
                                r = 0;
                        else if (h->check == INSTANCE_CHECK_TCP) {
                                r = tcp_check(h->host_port);
                                if (r < 0)
                                        snprintf(check_msg, sizeof(check_msg), "connect to 127.0.0.1:%u: %s",
                                                 h->host_port, strerror(-r));
                        } else
                                r = http_check(h->host_port, h->path, check_msg, sizeof(check_msg));
                        if (r == 0) {
                                if (ret_seconds)
                                        *ret_seconds = started > 0 ? now_real() - started : 0;
                                qemu_serial_done(&s);
                                return 0;
                        }
                }
                if (!alive) {
                        snprintf(why, sizeof(why), "qemu of instance '%s' exited (pid %d)%s%s", dir, (int)pid,
                                 s.ready_line ? " after the ready line" : " before the ready line",
                                 *check_msg ? "; last check: " : "");
                        strncat(why, check_msg, sizeof(why) - strlen(why) - 1);
                        r = -ECHILD;
                        break;
                }
                if (now_mono() >= deadline) {
                        if (!s.ready_line)
                                snprintf(why, sizeof(why), "no ready line ('" QEMU_READY_MARKER "…') within %u s",
                                         timeout_sec);
                        else
                                snprintf(why, sizeof(why),
                                         "ready line seen, but the health check failed within %u s: %s", timeout_sec,
                                         check_msg);
                        r = -ETIMEDOUT;
                        break;
                }
                /* the serial log is read often (the ready line is cheap to
                 * see); the check waits its interval */
                sleep_ms(s.ready_line ? (h && h->interval_sec ? h->interval_sec : 1) * 1000 : 200);
        }
        if (ret_reason)
                *ret_reason = make_reason(why, &s);
        qemu_serial_done(&s);
        return r;
}

/* ---- stop and remove ---- */

static bool wait_gone(pid_t pid, const char *dir, double seconds)
{
        double deadline = now_mono() + seconds;

        while (pid_is_instance(pid, dir)) {
                if (now_mono() >= deadline)
                        return false;
                sleep_ms(100);
        }
        return true;
}

int instance_stop(const char *dir_arg, unsigned grace_sec)
{
        _cleanup_free_ char *dir = realpath(dir_arg, NULL), *qmp = NULL;
        pid_t pid;
        int r;

        if (!dir)
                return log_error_errno(-errno, "cannot open instance '%s': %m", dir_arg);
        pid = read_pidfile(dir);
        if (!pid_is_instance(pid, dir)) {
                remove_runtime_files(dir);
                return 0;
        }
        qmp = path_join(dir, "qmp.sock");
        if (!qmp)
                return log_error_errno(-ENOMEM, "out of memory");
        r = qemu_qmp_command(qmp, "system_powerdown", 2000);
        if (r < 0)
                log_debug("qmp system_powerdown on '%s': %s", qmp, strerror(-r));
        else if (wait_gone(pid, dir, grace_sec)) {
                remove_runtime_files(dir);
                return 0;
        }
        /* The guest ignored the power button (or QMP is gone): QEMU's own
         * quit still closes the overlay cleanly; SIGKILL is the last resort. */
        if (r >= 0) {
                log_debug("instance '%s' did not power off within %u s; sending quit", dir, grace_sec);
                if (qemu_qmp_command(qmp, "quit", 2000) >= 0 && wait_gone(pid, dir, 5)) {
                        remove_runtime_files(dir);
                        return 1;
                }
        }
        log_debug("killing qemu (pid %d) of instance '%s'", (int)pid, dir);
        /* checked again right before the signal: the pid must still be this QEMU */
        if (pid_is_instance(pid, dir) && kill(pid, SIGKILL) < 0 && errno != ESRCH)
                return log_error_errno(-errno, "cannot kill qemu (pid %d) of instance '%s': %m", (int)pid, dir);
        if (!wait_gone(pid, dir, 10))
                return log_error_errno(-ETIMEDOUT, "qemu (pid %d) of instance '%s' does not die", (int)pid, dir);
        remove_runtime_files(dir);
        return 1;
}

int instance_remove(const char *dir)
{
        enum instance_status s;
        pid_t pid;
        int r;

        r = instance_probe(dir, &s, &pid);
        if (r < 0)
                return log_error_errno(r, "cannot probe instance '%s': %m", dir);
        if (s == INSTANCE_RUNNING || s == INSTANCE_UNRESPONSIVE)
                return log_error_errno(-EBUSY, "instance '%s' is still running (pid %d)", dir, (int)pid);
        if (s == INSTANCE_MISSING && access(dir, F_OK) < 0)
                return 0;
        r = rm_rf(dir);
        if (r < 0)
                return log_error_errno(r, "cannot remove '%s': %m", dir);
        return 0;
}
