/* Owns everything about running QEMU: the argv builder (and its quoted
 * form), the KVM probe with TCG fallback, starting a VM in its own process
 * group, the serial capture and the ready marker, QMP shutdown, and the
 * guarantee that no VM outlives ingot unless it was detached on purpose. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "qemu.h"
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/proc-util.h"
#include "shared/macro.h"
#include "shared/run.h"
#include "shared/strv.h"
#include "shared/time-util.h"

static const char *const firmware_names[_QEMU_FIRMWARE_MAX] = {
        [QEMU_FIRMWARE_BIOS] = "bios",
        [QEMU_FIRMWARE_UEFI] = "uefi",
};

static const char *const accel_names[_QEMU_ACCEL_MAX] = {
        [QEMU_ACCEL_TCG] = "tcg",
        [QEMU_ACCEL_KVM] = "kvm",
};

const char *qemu_firmware_to_string(enum qemu_firmware f)
{
        return f >= 0 && f < _QEMU_FIRMWARE_MAX ? firmware_names[f] : "auto";
}

int qemu_firmware_from_string(const char *s)
{
        for (int i = 0; i < _QEMU_FIRMWARE_MAX; i++)
                if (streq_ptr(s, firmware_names[i]))
                        return i;
        return -EINVAL;
}

const char *qemu_accel_to_string(enum qemu_accel a)
{
        return a >= 0 && a < _QEMU_ACCEL_MAX ? accel_names[a] : "auto";
}

int qemu_accel_from_string(const char *s)
{
        for (int i = 0; i < _QEMU_ACCEL_MAX; i++)
                if (streq_ptr(s, accel_names[i]))
                        return i;
        return -EINVAL;
}

static void sleep_ms(int ms)
{
        (void)poll(NULL, 0, ms);
}

/* ---- argv builder ---- */

int qemu_argv_add(char ***argv, const char *arg)
{
        return strv_extend(argv, arg);
}

int qemu_argv_addf(char ***argv, const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return strv_consume(argv, s);
}

char *qemu_escape_opt_value(const char *value)
{
        size_t n = 0;
        char *ret, *p;

        for (const char *c = value; *c; c++)
                n += *c == ',' ? 2 : 1;
        ret = malloc(n + 1);
        if (!ret)
                return NULL;
        p = ret;
        for (const char *c = value; *c; c++) {
                *p++ = *c;
                if (*c == ',')
                        *p++ = ',';
        }
        *p = '\0';
        return ret;
}

static bool shell_safe(const char *s)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-", *s))
                        return false;
        return true;
}

char *qemu_argv_to_string(char *const *argv)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return NULL;
        STRV_FOREACH (a, argv) {
                if (a != argv)
                        fputc(' ', f);
                if (shell_safe(*a)) {
                        fputs(*a, f);
                        continue;
                }
                fputc('\'', f);
                for (const char *c = *a; *c; c++)
                        if (*c == '\'')
                                fputs("'\\''", f);
                        else
                                fputc(*c, f);
                fputc('\'', f);
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* "-drive KEY=VALUE,…" style arguments with escaped path values. */
static int add_opt_path(char ***argv, const char *prefix, const char *path, const char *suffix)
{
        _cleanup_free_ char *e = qemu_escape_opt_value(path);

        if (!e)
                return -ENOMEM;
        return qemu_argv_addf(argv, "%s%s%s", prefix, e, suffix ? suffix : "");
}

int qemu_build_argv(const struct qemu_config *c, char ***ret)
{
        _cleanup_strv_free_ char **a = NULL;
        int r = 0;

        if (!c->image || !c->image_format || c->firmware < 0 || c->firmware >= _QEMU_FIRMWARE_MAX || c->accel < 0 ||
            c->accel >= _QEMU_ACCEL_MAX)
                return -EINVAL;
        if (c->firmware == QEMU_FIRMWARE_UEFI && (!c->ovmf_code || !c->ovmf_vars))
                return -EINVAL;

        r = r ?: qemu_argv_add(&a, c->binary ?: QEMU_BINARY);
        r = r ?: qemu_argv_add(&a, "-nodefaults");
        r = r ?: qemu_argv_add(&a, "-no-user-config");
        r = r ?: qemu_argv_add(&a, "-machine");
        r = r ?: qemu_argv_addf(&a, "q35,accel=%s", accel_names[c->accel]);
        r = r ?: qemu_argv_add(&a, "-cpu");
        r = r ?: qemu_argv_add(&a, c->accel == QEMU_ACCEL_KVM ? "host" : "max");
        r = r ?: qemu_argv_add(&a, "-m");
        r = r ?: qemu_argv_addf(&a, "%u", c->memory_mib ?: 512);
        r = r ?: qemu_argv_add(&a, "-smp");
        r = r ?: qemu_argv_addf(&a, "%u", c->cpus ?: 1);
        r = r ?: qemu_argv_add(&a, "-display");
        r = r ?: qemu_argv_add(&a, "none");
        r = r ?: qemu_argv_add(&a, "-no-reboot");
        if (c->firmware == QEMU_FIRMWARE_UEFI) {
                r = r ?: qemu_argv_add(&a, "-drive");
                r = r ?: add_opt_path(&a, "if=pflash,format=raw,unit=0,readonly=on,file=", c->ovmf_code, NULL);
                r = r ?: qemu_argv_add(&a, "-drive");
                r = r ?: add_opt_path(&a, "if=pflash,format=raw,unit=1,file=", c->ovmf_vars, NULL);
        }
        r = r ?: qemu_argv_add(&a, "-drive");
        r = r ?: add_opt_path(&a, "if=virtio,file=", c->image, NULL);
        if (r == 0) {
                /* the last element is the -drive value just added */
                size_t n = strv_length(a);
                char *s;

                if (asprintf(&s, "%s,format=%s%s", a[n - 1], c->image_format, c->snapshot ? ",snapshot=on" : "") < 0)
                        return -ENOMEM;
                free(a[n - 1]);
                a[n - 1] = s;
        }
        /* Guests that wait for entropy (sshd keys, systemd) would stall under TCG. */
        r = r ?: qemu_argv_add(&a, "-device");
        r = r ?: qemu_argv_add(&a, "virtio-rng-pci");
        if (c->serial_stdio) {
                r = r ?: qemu_argv_add(&a, "-chardev");
                if (c->serial_log)
                        r = r ?: add_opt_path(&a, "stdio,id=serial0,signal=on,logfile=", c->serial_log, NULL);
                else
                        r = r ?: qemu_argv_add(&a, "stdio,id=serial0,signal=on");
        } else if (c->serial_log) {
                r = r ?: qemu_argv_add(&a, "-chardev");
                r = r ?: add_opt_path(&a, "file,id=serial0,path=", c->serial_log, NULL);
        }
        if (c->serial_stdio || c->serial_log) {
                r = r ?: qemu_argv_add(&a, "-serial");
                r = r ?: qemu_argv_add(&a, "chardev:serial0");
        }
        if (c->qmp_socket) {
                r = r ?: qemu_argv_add(&a, "-chardev");
                r = r ?: add_opt_path(&a, "socket,id=qmp0,server=on,wait=off,path=", c->qmp_socket, NULL);
                r = r ?: qemu_argv_add(&a, "-mon");
                r = r ?: qemu_argv_add(&a, "chardev=qmp0,mode=control");
        }
        if (c->kernel) {
                r = r ?: qemu_argv_add(&a, "-kernel");
                r = r ?: qemu_argv_add(&a, c->kernel);
                if (c->initrd) {
                        r = r ?: qemu_argv_add(&a, "-initrd");
                        r = r ?: qemu_argv_add(&a, c->initrd);
                }
                if (c->append) {
                        r = r ?: qemu_argv_add(&a, "-append");
                        r = r ?: qemu_argv_add(&a, c->append);
                }
        }
        if (c->user_net) {
                r = r ?: qemu_argv_add(&a, "-netdev");
                r = r ?: qemu_argv_add(&a, "user,id=n0");
                for (size_t i = 0; r == 0 && i < c->n_hostfwd; i++) {
                        size_t n = strv_length(a);
                        char *s;

                        if (asprintf(&s, "%s,hostfwd=tcp:127.0.0.1:%u-:%u", a[n - 1], c->hostfwd[i].host,
                                     c->hostfwd[i].guest) < 0)
                                return -ENOMEM;
                        free(a[n - 1]);
                        a[n - 1] = s;
                }
                r = r ?: qemu_argv_add(&a, "-device");
                r = r ?: qemu_argv_add(&a, "virtio-net-pci,netdev=n0");
        }
        if (c->pidfile) {
                r = r ?: qemu_argv_add(&a, "-pidfile");
                r = r ?: qemu_argv_add(&a, c->pidfile);
        }
        if (c->daemonize)
                r = r ?: qemu_argv_add(&a, "-daemonize");
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

int qemu_detect_image_format(const char *path, const char **ret)
{
        _cleanup_close_ int fd = -1;
        unsigned char magic[4] = { 0 };
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, magic, sizeof(magic));
        if (n < 0)
                return -errno;
        *ret = n == 4 && memcmp(magic, "QFI\xfb", 4) == 0 ? "qcow2" : "raw";
        return 0;
}

int qemu_find_ovmf(const char **ret_code, const char **ret_vars)
{
        static const char *const pairs[][2] = {
                { "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd" },
                { "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd" },
                { "/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd" },
        };

        for (size_t i = 0; i < ELEMENTSOF(pairs); i++)
                if (access(pairs[i][0], R_OK) == 0 && access(pairs[i][1], R_OK) == 0) {
                        *ret_code = pairs[i][0];
                        *ret_vars = pairs[i][1];
                        return 0;
                }
        return -ENOENT;
}

/* ---- every QEMU we start is known here, so a signal or exit kills it ---- */

#define MAX_CHILDREN 16
static struct {
        pid_t pid;
        bool group;
} children[MAX_CHILDREN];

/* The pid too: until the child's setsid() the group does not exist yet. */
static void kill_children(void)
{
        for (size_t i = 0; i < MAX_CHILDREN; i++)
                if (children[i].pid > 0) {
                        if (children[i].group)
                                kill(-children[i].pid, SIGKILL);
                        kill(children[i].pid, SIGKILL);
                }
}

/* Inside a wait loop a signal only kills the VMs and is remembered, so the
 * loop returns and the usual cleanup (run directory) happens; anywhere else
 * it is fatal as usual, after killing the VMs. */
static volatile sig_atomic_t in_wait_loop = 0, got_signal = 0;

static void on_fatal_signal(int sig)
{
        kill_children();
        if (in_wait_loop) {
                got_signal = sig;
                return;
        }
        signal(sig, SIG_DFL);
        raise(sig);
}

int qemu_interrupted(void)
{
        return got_signal;
}

static void install_handlers(void)
{
        static bool installed = false;
        struct sigaction sa = { .sa_handler = on_fatal_signal };

        if (installed)
                return;
        installed = true;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        atexit(kill_children);
}

static void register_child(pid_t pid, bool group)
{
        for (size_t i = 0; i < MAX_CHILDREN; i++)
                if (children[i].pid <= 0) {
                        children[i].group = group;
                        children[i].pid = pid;
                        return;
                }
}

static void unregister_child(pid_t pid)
{
        for (size_t i = 0; i < MAX_CHILDREN; i++)
                if (children[i].pid == pid)
                        children[i].pid = 0;
}

struct spawn_options {
        bool own_group;          /* setsid(): QEMU gets its own session and process group */
        bool die_with_us;        /* PR_SET_PDEATHSIG, so even a SIGKILL of ingot takes QEMU along */
        bool stdio;              /* inherit stdin/stdout; else /dev/null */
        const char *stderr_path; /* NULL = /dev/null */
        const char *tmpdir;      /* TMPDIR for the child: where QEMU's -snapshot file goes, so a
                                  * killed QEMU leaves it in a directory ingot removes */
};

/* fork + exec by argv; returns the pid, or -errno (-ENOENT: no such
 * program) once the exec itself failed. */
static pid_t spawn(char *const *argv, const struct spawn_options *o)
{
        int execp[2], exec_errno = 0;
        pid_t parent = getpid(), pid;
        sigset_t all, old;
        ssize_t n;

        if (pipe2(execp, O_CLOEXEC) < 0)
                return -errno;
        install_handlers();
        /* No signal between fork and registration may leave an unknown child. */
        sigfillset(&all);
        sigprocmask(SIG_BLOCK, &all, &old);
        pid = fork();
        if (pid < 0) {
                int e = errno;
                sigprocmask(SIG_SETMASK, &old, NULL);
                close(execp[0]);
                close(execp[1]);
                return -e;
        }
        if (pid == 0) {
                int fd;

                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                signal(SIGHUP, SIG_DFL);
                signal(SIGPIPE, SIG_DFL);
                sigprocmask(SIG_SETMASK, &old, NULL);
                if (o->own_group)
                        setsid();
                if (o->die_with_us) {
                        prctl(PR_SET_PDEATHSIG, SIGKILL);
                        if (getppid() != parent)
                                _exit(127);
                }
                if (!o->stdio) {
                        fd = open("/dev/null", O_RDWR);
                        if (fd < 0 || dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0)
                                goto fail;
                }
                fd = o->stderr_path ? open(o->stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
                                    : open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
                        goto fail;
                if (o->tmpdir && setenv("TMPDIR", o->tmpdir, 1) < 0)
                        goto fail;
                execvp(argv[0], argv);
        fail : {
                int e = errno;
                ssize_t _unused_ w = write(execp[1], &e, sizeof(e));
        }
                _exit(127);
        }
        register_child(pid, o->own_group);
        sigprocmask(SIG_SETMASK, &old, NULL);

        close(execp[1]);
        do
                n = read(execp[0], &exec_errno, sizeof(exec_errno));
        while (n < 0 && errno == EINTR);
        close(execp[0]);
        if (n == (ssize_t)sizeof(exec_errno) && exec_errno > 0) {
                (void)waitpid(pid, NULL, 0);
                unregister_child(pid);
                return -exec_errno;
        }
        return pid;
}

static void kill_child(pid_t pid, bool group)
{
        if (pid <= 0)
                return;
        if (group)
                kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
}

/* ---- KVM probe ---- */

/* A 64 KiB firmware image (see probe_firmware()): real mode at the reset
 * vector, a GDT, protected mode, identity paging, long mode, CPUID, then
 * 0x2a to isa-debug-exit, which makes QEMU exit with (0x2a << 1) | 1 = 85.
 * Assembled with GNU as from:
 *   cli; xor ax,ax; mov ds,ax; mov ss,ax; mov sp,0x7000; lgdt cs:[gdtr];
 *   cr0.PE=1; ljmp 0x08:pm32; (32-bit) load data segments; zero 0x1000-0x3fff;
 *   PML4[0]=0x2003, PDPT[0]=0x3003, PD[0]=0x83 (2 MiB page); cr4.PAE=1;
 *   cr3=0x1000; EFER.LME=1; cr0.PG=1; ljmp 0x18:lm64; (64-bit) cpuid(1);
 *   out 0xf4, 0x2a; hlt
 * A bare OUT/HLT in real mode is not enough: /dev/kvm may run that and still
 * hang on a real kernel. Linked at 0xf0000, the low alias of the image. */
static const unsigned char probe_code[] = {
        0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x70, 0x2e, 0x66, 0x0f, 0x01, 0x16, 0xb8, 0x00, 0x0f,
        0x20, 0xc0, 0x66, 0x83, 0xc8, 0x01, 0x0f, 0x22, 0xc0, 0x66, 0xea, 0x23, 0x00, 0x0f, 0x00, 0x08, 0x00, 0x66,
        0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbf, 0x00, 0x10, 0x00, 0x00, 0x31, 0xc0, 0xb9, 0x00,
        0x0c, 0x00, 0x00, 0xf3, 0xab, 0xc7, 0x05, 0x00, 0x10, 0x00, 0x00, 0x03, 0x20, 0x00, 0x00, 0xc7, 0x05, 0x00,
        0x20, 0x00, 0x00, 0x03, 0x30, 0x00, 0x00, 0xc7, 0x05, 0x00, 0x30, 0x00, 0x00, 0x83, 0x00, 0x00, 0x00, 0x0f,
        0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8, 0xb9, 0x80,
        0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00,
        0x00, 0x80, 0x0f, 0x22, 0xc0, 0xea, 0x8a, 0x00, 0x0f, 0x00, 0x18, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f,
        0xa2, 0xb0, 0x2a, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00,
        0x00, 0x9a, 0xaf, 0x00, 0x1f, 0x00, 0x98, 0x00, 0x0f, 0x00,
};
#define PROBE_IMAGE_SIZE 65536
#define PROBE_EXIT_CODE 85

static int write_probe_firmware(int fd)
{
        _cleanup_free_ unsigned char *img = calloc(1, PROBE_IMAGE_SIZE);
        /* reset vector: ljmp 0xf000:0x0000 */
        static const unsigned char reset[] = { 0xea, 0x00, 0x00, 0x00, 0xf0 };
        size_t done = 0;

        if (!img)
                return -ENOMEM;
        memcpy(img, probe_code, sizeof(probe_code));
        memcpy(img + PROBE_IMAGE_SIZE - 16, reset, sizeof(reset));
        while (done < PROBE_IMAGE_SIZE) {
                ssize_t n = write(fd, img + done, PROBE_IMAGE_SIZE - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += (size_t)n;
        }
        return 0;
}

static const char *tmp_dir(void)
{
        const char *t = getenv("TMPDIR");
        return t && *t == '/' ? t : "/tmp";
}

/* Returns true when KVM ran the probe to its end in time; why not otherwise
 * goes to the debug log. */
static bool kvm_probe_run(unsigned timeout_sec)
{
        _cleanup_free_ char *fw = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_close_ int fd = -1;
        struct spawn_options so = { .own_group = true, .die_with_us = true };
        double deadline;
        int status = 0, r = 0;
        bool ok = false;
        pid_t pid;

        if (asprintf(&fw, "%s/ingot-kvm-probe-XXXXXX", tmp_dir()) < 0)
                return false;
        fd = mkostemp(fw, O_CLOEXEC);
        if (fd < 0) {
                log_debug("kvm probe: cannot create '%s': %m", fw);
                return false;
        }
        r = write_probe_firmware(fd);
        if (r < 0) {
                log_debug("kvm probe: cannot write '%s': %s", fw, strerror(-r));
                goto out;
        }
        r = r ?: qemu_argv_add(&argv, QEMU_BINARY);
        r = r ?: qemu_argv_add(&argv, "-nodefaults");
        r = r ?: qemu_argv_add(&argv, "-no-user-config");
        r = r ?: qemu_argv_add(&argv, "-machine");
        r = r ?: qemu_argv_add(&argv, "q35,accel=kvm");
        r = r ?: qemu_argv_add(&argv, "-cpu");
        r = r ?: qemu_argv_add(&argv, "host");
        r = r ?: qemu_argv_add(&argv, "-m");
        r = r ?: qemu_argv_add(&argv, "16");
        r = r ?: qemu_argv_add(&argv, "-display");
        r = r ?: qemu_argv_add(&argv, "none");
        r = r ?: qemu_argv_add(&argv, "-no-reboot");
        r = r ?: qemu_argv_add(&argv, "-device");
        r = r ?: qemu_argv_add(&argv, "isa-debug-exit,iobase=0xf4,iosize=0x04");
        r = r ?: qemu_argv_add(&argv, "-bios");
        r = r ?: qemu_argv_add(&argv, fw);
        if (r < 0)
                goto out;

        pid = spawn(argv, &so);
        if (pid < 0) {
                log_debug("kvm probe: cannot run '%s': %s", QEMU_BINARY, strerror((int)-pid));
                goto out;
        }
        deadline = now_mono() + timeout_sec;
        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        break;
                if (w < 0 && errno != EINTR) {
                        kill_child(pid, true);
                        (void)waitpid(pid, &status, 0);
                        break;
                }
                if (now_mono() >= deadline) {
                        log_debug("kvm probe: no answer within %u s", timeout_sec);
                        kill_child(pid, true);
                        (void)waitpid(pid, &status, 0);
                        status = -1;
                        break;
                }
                sleep_ms(20);
        }
        unregister_child(pid);
        ok = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == PROBE_EXIT_CODE;
        if (!ok && status != -1)
                log_debug("kvm probe: qemu ended with status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
out:
        (void)unlink(fw);
        return ok;
}

/* Whether KVM works does not change while the host runs, and a probe
 * that hangs costs its whole timeout: the answer is kept for this boot
 * (keyed by the kernel's boot id) in the cache directory. */
static char *probe_cache_path(void)
{
        _cleanup_free_ char *dir = NULL;
        char *p;

        if (xdg_cache_dir(&dir) < 0 || asprintf(&p, "%s/kvm-probe", dir) < 0)
                return NULL;
        return p;
}

static enum qemu_accel probe_cache_read(void)
{
        _cleanup_free_ char *path = probe_cache_path(), *s = NULL;
        char id[40], *sp;
        int a;

        if (!path || boot_id_get(id) < 0 || read_full_file(path, 128, &s, NULL) < 0)
                return QEMU_ACCEL_AUTO;
        s[strcspn(s, "\n")] = '\0';
        sp = strchr(s, ' ');
        if (!sp || (size_t)(sp - s) != strlen(id) || strncmp(s, id, strlen(id)) != 0)
                return QEMU_ACCEL_AUTO;
        a = qemu_accel_from_string(sp + 1);
        return a == QEMU_ACCEL_KVM || a == QEMU_ACCEL_TCG ? (enum qemu_accel)a : QEMU_ACCEL_AUTO;
}

static void probe_cache_write(enum qemu_accel a)
{
        _cleanup_free_ char *path = probe_cache_path(), *dir = NULL, *line = NULL;
        char id[40];

        if (!path || boot_id_get(id) < 0 || asprintf(&line, "%s %s\n", id, qemu_accel_to_string(a)) < 0)
                return;
        dir = strdup(path);
        if (!dir)
                return;
        *strrchr(dir, '/') = '\0';
        if (mkdir_p(dir, 0755) < 0 || write_file_atomic(path, line, strlen(line), 0644) < 0)
                log_debug("cannot keep the kvm probe's result in '%s'", path);
}

enum qemu_accel qemu_probe_accel(unsigned timeout_sec)
{
        static int cached = QEMU_ACCEL_AUTO;
        const char *env = getenv("INGOT_ACCEL");
        int fd;

        if (cached != QEMU_ACCEL_AUTO)
                return cached;
        if (env && *env && !streq(env, "auto")) {
                int a = qemu_accel_from_string(env);
                if (a >= 0) {
                        log_debug("accelerator %s from $INGOT_ACCEL", env);
                        return (enum qemu_accel)(cached = a);
                }
                log_warning("ignoring $INGOT_ACCEL='%s': not kvm, tcg or auto", env);
        }
        fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                log_debug("kvm not usable: cannot open '/dev/kvm': %m; using tcg");
                return (enum qemu_accel)(cached = QEMU_ACCEL_TCG);
        }
        close(fd);
        cached = probe_cache_read();
        if (cached != QEMU_ACCEL_AUTO) {
                log_debug("kvm probe result from this boot's cache: %s", qemu_accel_to_string(cached));
                return cached;
        }
        if (kvm_probe_run(timeout_sec ?: 3)) {
                log_debug("kvm probe passed; using kvm");
                cached = QEMU_ACCEL_KVM;
        } else {
                log_debug("kvm probe failed; using tcg");
                cached = QEMU_ACCEL_TCG;
        }
        probe_cache_write(cached);
        return cached;
}

/* ---- QMP ---- */

int qmp_parse_message(const char *line, enum qmp_message_type *ret_type, char **ret_detail)
{
        json_t *j, *v;
        enum qmp_message_type t;
        const char *detail = NULL;
        int r = 0;

        j = json_loads(line, JSON_DECODE_ANY, NULL);
        if (!j)
                return -EBADMSG;
        if (!json_is_object(j))
                r = -EBADMSG;
        else if (json_object_get(j, "QMP"))
                t = QMP_MESSAGE_GREETING;
        else if (json_object_get(j, "return"))
                t = QMP_MESSAGE_RETURN;
        else if ((v = json_object_get(j, "error"))) {
                t = QMP_MESSAGE_ERROR;
                detail = json_string_value(json_object_get(v, "desc"));
                if (!detail)
                        detail = "unknown error";
        } else if ((v = json_object_get(j, "event")) && json_is_string(v)) {
                t = QMP_MESSAGE_EVENT;
                detail = json_string_value(v);
        } else
                r = -EBADMSG;
        if (r == 0 && ret_detail) {
                *ret_detail = detail ? strdup(detail) : NULL;
                if (detail && !*ret_detail)
                        r = -ENOMEM;
        }
        if (r == 0)
                *ret_type = t;
        json_decref(j);
        return r;
}

struct qmp {
        int fd;
        char buf[8192];
        size_t len;
};

/* One line within timeout_ms; -ETIMEDOUT, -EPIPE at EOF. */
static int qmp_read_line(struct qmp *q, int timeout_ms, char **ret)
{
        double deadline = now_mono() + timeout_ms / 1000.0;

        for (;;) {
                char *nl = memchr(q->buf, '\n', q->len);
                struct pollfd p = { .fd = q->fd, .events = POLLIN };
                int left, k;
                ssize_t n;

                if (nl) {
                        size_t l = (size_t)(nl - q->buf);
                        char *s = strndup(q->buf, l);
                        if (!s)
                                return -ENOMEM;
                        memmove(q->buf, nl + 1, q->len - l - 1);
                        q->len -= l + 1;
                        *ret = s;
                        return 0;
                }
                if (q->len == sizeof(q->buf))
                        q->len = 0; /* an absurdly long line: drop it */
                left = (int)((deadline - now_mono()) * 1000);
                if (left <= 0)
                        return -ETIMEDOUT;
                k = poll(&p, 1, left);
                if (k < 0 && errno != EINTR)
                        return -errno;
                if (k <= 0)
                        continue;
                n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
                if (n < 0 && errno != EINTR && errno != EAGAIN)
                        return -errno;
                if (n == 0)
                        return -EPIPE;
                if (n > 0)
                        q->len += (size_t)n;
        }
}

/* Waits for a message of type want (events are skipped). */
static int qmp_expect(struct qmp *q, enum qmp_message_type want, int timeout_ms)
{
        for (;;) {
                _cleanup_free_ char *line = NULL, *detail = NULL;
                enum qmp_message_type t;
                int r = qmp_read_line(q, timeout_ms, &line);

                if (r < 0)
                        return r;
                if (qmp_parse_message(line, &t, &detail) < 0)
                        continue;
                if (t == QMP_MESSAGE_EVENT) {
                        log_debug("qmp event %s", strna(detail));
                        continue;
                }
                if (t == QMP_MESSAGE_ERROR) {
                        log_debug("qmp error: %s", strna(detail));
                        return -EIO;
                }
                if (t == want)
                        return 0;
        }
}

static int qmp_execute(struct qmp *q, const char *command, int timeout_ms)
{
        char msg[128];
        int n = snprintf(msg, sizeof(msg), "{\"execute\":\"%s\"}\n", command);

        if (send(q->fd, msg, (size_t)n, MSG_NOSIGNAL) != n)
                return -errno ?: -EIO;
        return qmp_expect(q, QMP_MESSAGE_RETURN, timeout_ms);
}

static int qmp_connect(const char *path, int timeout_ms, struct qmp *q)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        double deadline = now_mono() + timeout_ms / 1000.0;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        for (;;) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

                if (fd < 0)
                        return -errno;
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        q->fd = fd;
                        q->len = 0;
                        r = qmp_expect(q, QMP_MESSAGE_GREETING, timeout_ms);
                        r = r ?: qmp_execute(q, "qmp_capabilities", timeout_ms);
                        if (r < 0) {
                                close(fd);
                                q->fd = -1;
                        }
                        return r;
                }
                r = -errno;
                close(fd);
                if (now_mono() >= deadline)
                        return r;
                sleep_ms(50);
        }
}

int qemu_qmp_command(const char *socket_path, const char *command, int timeout_ms)
{
        struct qmp q = { .fd = -1 };
        int r = qmp_connect(socket_path, timeout_ms, &q);

        if (r < 0)
                return r;
        r = qmp_execute(&q, command, timeout_ms);
        close(q.fd);
        return r;
}

/* ---- serial ---- */

#define SERIAL_MAX_LINE 4096

static int serial_end_line(struct qemu_serial *s)
{
        char *line = strndup(s->partial ? s->partial : "", s->partial_len);
        size_t slot;

        if (!line)
                return -ENOMEM;
        s->partial_len = 0;
        if (!s->ready_line) {
                char *m = strstr(line, QEMU_READY_MARKER);
                if (m) {
                        s->ready_line = strdup(m);
                        if (!s->ready_line) {
                                free(line);
                                return -ENOMEM;
                        }
                }
        }
        slot = s->n_lines % QEMU_SERIAL_TAIL;
        free(s->tail[slot]);
        s->tail[slot] = line;
        s->n_lines++;
        return 0;
}

static int serial_add_char(struct qemu_serial *s, char c)
{
        if (!s->partial) {
                s->partial = malloc(SERIAL_MAX_LINE);
                if (!s->partial)
                        return -ENOMEM;
        }
        if (s->partial_len == SERIAL_MAX_LINE) {
                int r = serial_end_line(s);
                if (r < 0)
                        return r;
        }
        s->partial[s->partial_len++] = c;
        return 0;
}

enum { ESC_NONE, ESC_START, ESC_CSI, ESC_OSC };

int qemu_serial_feed(struct qemu_serial *s, const char *data, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)data[i];
                int r = 0;

                switch (s->esc_state) {
                case ESC_START:
                        s->esc_state = c == '[' ? ESC_CSI : c == ']' ? ESC_OSC : ESC_NONE;
                        continue;
                case ESC_CSI:
                        if (c >= 0x40 && c <= 0x7e)
                                s->esc_state = ESC_NONE;
                        continue;
                case ESC_OSC:
                        if (c == 0x07 || c == 0x1b)
                                s->esc_state = ESC_NONE;
                        continue;
                default:
                        break;
                }
                if (c == 0x1b)
                        s->esc_state = ESC_START;
                else if (c == '\n')
                        r = serial_end_line(s);
                else if (c == '\t' || (c >= 0x20 && c != 0x7f))
                        r = serial_add_char(s, (char)c);
                if (r < 0)
                        return r;
        }
        return s->ready_line ? 1 : 0;
}

void qemu_serial_print_tail(const struct qemu_serial *s, FILE *f)
{
        size_t n = s->n_lines < QEMU_SERIAL_TAIL ? s->n_lines : QEMU_SERIAL_TAIL;
        size_t first = s->n_lines - n;

        if (s->partial_len > 0 && n == QEMU_SERIAL_TAIL) {
                first++; /* room for the unfinished line */
                n--;
        }
        for (size_t i = first; i < first + n; i++)
                fprintf(f, "    %s\n", s->tail[i % QEMU_SERIAL_TAIL]);
        if (s->partial_len > 0)
                fprintf(f, "    %.*s\n", (int)s->partial_len, s->partial);
        if (s->n_lines == 0 && s->partial_len == 0)
                fprintf(f, "    (no serial output)\n");
}

void qemu_serial_done(struct qemu_serial *s)
{
        for (size_t i = 0; i < QEMU_SERIAL_TAIL; i++)
                s->tail[i] = x_free(s->tail[i]);
        s->partial = x_free(s->partial);
        s->ready_line = x_free(s->ready_line);
        s->partial_len = s->n_lines = 0;
        s->esc_state = ESC_NONE;
}

/* ---- the VM ---- */

static bool vm_running(struct qemu_vm *vm)
{
        int status;
        pid_t w;

        if (vm->pid <= 0 || vm->exit_status >= 0)
                return false;
        w = waitpid(vm->pid, &status, WNOHANG);
        if (w == 0)
                return true;
        if (w == vm->pid)
                vm->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        else
                vm->exit_status = 255; /* not our child any more; nothing left to wait for */
        unregister_child(vm->pid);
        return false;
}

static void vm_kill(struct qemu_vm *vm)
{
        int status;

        if (vm->pid <= 0 || vm->exit_status >= 0)
                return;
        kill_child(vm->pid, !vm->console);
        if (waitpid(vm->pid, &status, 0) == vm->pid)
                vm->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        else
                vm->exit_status = 255;
        unregister_child(vm->pid);
}

struct qemu_vm *qemu_vm_free(struct qemu_vm *vm)
{
        if (!vm)
                return NULL;
        if (!vm->detached) {
                vm_kill(vm);
                if (vm->run_dir)
                        (void)rm_rf(vm->run_dir);
        }
        if (vm->serial_fd >= 0)
                close(vm->serial_fd);
        qemu_serial_done(&vm->serial);
        free(vm->run_dir);
        free(vm->serial_log);
        free(vm->qmp_socket);
        free(vm->qemu_log);
        strv_free(vm->argv);
        free(vm);
        return NULL;
}

int qemu_vm_start(const struct qemu_vm_options *o, struct qemu_vm **ret)
{
        _cleanup_(qemu_vm_freep) struct qemu_vm *vm = NULL;
        _cleanup_free_ char *vars = NULL, *cmd = NULL;
        struct qemu_config c = { 0 };
        const char *code = NULL, *vars_template = NULL;
        struct stat st;
        pid_t pid;
        int r, fd;

        if (stat(o->image, &st) < 0)
                return log_error_errno(-errno, "cannot open image '%s': %m", o->image);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return log_error_errno(-EBADMSG, "image '%s' is not a file", o->image);

        vm = calloc(1, sizeof(*vm));
        if (!vm)
                return log_error_errno(-ENOMEM, "out of memory");
        vm->serial_fd = -1;
        vm->exit_status = -1;
        vm->console = o->console;

        c.image = o->image;
        c.snapshot = true;
        r = qemu_detect_image_format(o->image, &c.image_format);
        if (r < 0)
                return log_error_errno(r, "cannot read image '%s': %m", o->image);

        c.firmware = o->firmware;
        if (c.firmware == QEMU_FIRMWARE_AUTO)
                c.firmware = qemu_find_ovmf(&code, &vars_template) >= 0 ? QEMU_FIRMWARE_UEFI : QEMU_FIRMWARE_BIOS;
        else if (c.firmware == QEMU_FIRMWARE_UEFI && qemu_find_ovmf(&code, &vars_template) < 0)
                return log_error_errno(-ENOENT,
                                       "cannot boot with uefi: no OVMF firmware in '/usr/share/OVMF' (package ovmf)");
        vm->firmware = c.firmware;
        c.accel = o->accel == QEMU_ACCEL_AUTO ? qemu_probe_accel(3) : o->accel;
        vm->accel = c.accel;
        c.memory_mib = o->memory_mib;
        c.cpus = o->cpus;

        if (asprintf(&vm->run_dir, "%s/ingot-boot-XXXXXX", tmp_dir()) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        if (!mkdtemp(vm->run_dir)) {
                r = -errno;
                vm->run_dir = x_free(vm->run_dir);
                return log_error_errno(r, "cannot create a directory in '%s': %m", tmp_dir());
        }
        if (asprintf(&vm->serial_log, "%s/serial.log", vm->run_dir) < 0 ||
            asprintf(&vm->qmp_socket, "%s/qmp.sock", vm->run_dir) < 0 ||
            asprintf(&vm->qemu_log, "%s/qemu.log", vm->run_dir) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        if (c.firmware == QEMU_FIRMWARE_UEFI) {
                if (asprintf(&vars, "%s/OVMF_VARS.fd", vm->run_dir) < 0)
                        return log_error_errno(-ENOMEM, "out of memory");
                r = copy_file(vars_template, vars, 0600);
                if (r < 0)
                        return log_error_errno(r, "cannot copy '%s' to '%s': %m", vars_template, vars);
                c.ovmf_code = code;
                c.ovmf_vars = vars;
        }
        /* Created (empty) before QEMU starts, so the reader can open it now. */
        fd = open(vm->serial_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return log_error_errno(-errno, "cannot create '%s': %m", vm->serial_log);
        close(fd);
        vm->serial_fd = open(vm->serial_log, O_RDONLY | O_CLOEXEC);
        if (vm->serial_fd < 0)
                return log_error_errno(-errno, "cannot open '%s': %m", vm->serial_log);
        c.serial_log = vm->serial_log;
        c.serial_stdio = o->console;
        c.qmp_socket = vm->qmp_socket;

        r = qemu_build_argv(&c, &vm->argv);
        if (r < 0)
                return log_error_errno(r, "cannot build the qemu command line: %m");
        cmd = qemu_argv_to_string(vm->argv);
        log_debug("running %s", strna(cmd));

        vm->started = now_mono();
        pid = spawn(vm->argv, &(struct spawn_options){ .own_group = !o->console,
                                                       .die_with_us = !o->detachable,
                                                       .stdio = o->console,
                                                       .stderr_path = vm->qemu_log,
                                                       .tmpdir = vm->run_dir });
        if (pid < 0)
                return log_error_errno((int)pid, "cannot run '%s': %m", vm->argv[0]);
        vm->pid = pid;
        *ret = TAKE_PTR(vm);
        return 0;
}

static void vm_read_serial(struct qemu_vm *vm)
{
        char buf[8192];

        for (;;) {
                ssize_t n = read(vm->serial_fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;
                if (qemu_serial_feed(&vm->serial, buf, (size_t)n) < 0)
                        return;
        }
}

/* QEMU's own last complaint, for the message when it died. */
static void vm_qemu_error(struct qemu_vm *vm, char *buf, size_t size)
{
        _cleanup_free_ char *log = NULL;

        buf[0] = '\0';
        if (read_full_file(vm->qemu_log, 1024 * 1024, &log, NULL) < 0)
                return;
        run_output_line(log, true, buf, size);
}

static int wait_ready(struct qemu_vm *vm, unsigned timeout_sec, double *ret_seconds)
{
        double deadline = timeout_sec ? vm->started + timeout_sec : 0;

        for (;;) {
                bool running = vm_running(vm);

                if (got_signal) {
                        log_error("interrupted by signal %d; the VM was killed", (int)got_signal);
                        return -EINTR;
                }

                vm_read_serial(vm); /* after the exit check, so a last line is not missed */
                if (vm->serial.ready_line) {
                        *ret_seconds = now_mono() - vm->started;
                        return 0;
                }
                if (!running) {
                        char err[512];

                        /* -no-reboot: a guest that powers off, reboots or panics ends QEMU with 0 */
                        vm_qemu_error(vm, err, sizeof(err));
                        if (vm->exit_status == 0)
                                log_error("the VM shut down or rebooted before the ready line");
                        else if (*err)
                                log_error("the VM exited with status %d before the ready line: %s", vm->exit_status,
                                          err);
                        else
                                log_error("the VM exited with status %d before the ready line", vm->exit_status);
                        return -ECHILD;
                }
                if (deadline && now_mono() >= deadline) {
                        log_error("no ready line ('" QEMU_READY_MARKER "…') on the serial console within %u s",
                                  timeout_sec);
                        return -ETIMEDOUT;
                }
                sleep_ms(100);
        }
}

int qemu_vm_wait_ready(struct qemu_vm *vm, unsigned timeout_sec, double *ret_seconds)
{
        int r;

        in_wait_loop = 1;
        r = wait_ready(vm, timeout_sec, ret_seconds);
        in_wait_loop = 0;
        return r;
}

int qemu_vm_wait_exit(struct qemu_vm *vm)
{
        in_wait_loop = 1;
        while (vm_running(vm)) {
                vm_read_serial(vm);
                sleep_ms(100);
        }
        in_wait_loop = 0;
        vm_read_serial(vm);
        return vm->exit_status;
}

static bool wait_exit_for(struct qemu_vm *vm, double seconds)
{
        double deadline = now_mono() + seconds;

        while (vm_running(vm)) {
                if (now_mono() >= deadline)
                        return false;
                sleep_ms(50);
        }
        return true;
}

int qemu_vm_shutdown(struct qemu_vm *vm, unsigned grace_sec)
{
        struct qmp q = { .fd = -1 };
        int r;

        if (!vm_running(vm))
                return 0;
        r = qmp_connect(vm->qmp_socket, 2000, &q);
        if (r < 0)
                log_debug("cannot talk to qmp at '%s': %s", vm->qmp_socket, strerror(-r));
        else {
                r = qmp_execute(&q, "system_powerdown", 2000);
                if (r < 0)
                        log_debug("qmp system_powerdown: %s", strerror(-r));
                else if (wait_exit_for(vm, grace_sec)) {
                        close(q.fd);
                        return 0;
                }
                log_debug("no power-off within %u s; sending quit", grace_sec);
                (void)qmp_execute(&q, "quit", 2000);
                close(q.fd);
                if (wait_exit_for(vm, 3))
                        return 0;
        }
        log_debug("killing qemu (pid %d)", (int)vm->pid);
        vm_kill(vm);
        return -ETIMEDOUT;
}

int qemu_vm_detach(struct qemu_vm *vm)
{
        if (!vm_running(vm))
                return -ESRCH;
        vm->detached = true;
        unregister_child(vm->pid);
        return 0;
}
