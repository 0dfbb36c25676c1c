/* One instance's lifecycle, detached from ingot: a qcow2 overlay over a
 * verified base image (never written), the kernel, initrd and command line
 * taken from the image's ESP without mounting it, QEMU started in its own
 * session with a pidfile, a QMP socket and a serial log in the instance's
 * directory, a health check, a graceful stop and a probe that finds the
 * QEMU again after ingot died. Everything an instance is lives in its
 * directory; dir/instance.json says what it is. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "qemu.h"

#define INSTANCE_ID_PREFIX "i-"
#define INSTANCE_ID_HEX 17
#define INSTANCE_MAX_PORTS 16

struct instance_port {
        unsigned guest; /* TCP port in the guest */
        unsigned host;  /* forwarded from 127.0.0.1:host */
};

/* What instance_create() needs. Strings are borrowed. */
struct instance_config {
        const char *id;      /* "i-" + 17 lower-case hex digits */
        const char *dir;     /* the instance's directory; created 0700, must not exist yet */
        const char *base;    /* the verified raw base image; never written */
        unsigned memory_mib; /* 0 = 256 */
        unsigned cpus;       /* 0 = 1 */
        const struct instance_port *ports;
        size_t n_ports;
        const char *hostname;  /* NULL = id */
        enum qemu_accel accel; /* AUTO = qemu_probe_accel() at start */
        /* Where the kernel, initrd and command line taken from base are kept
         * for the next instance of it; NULL = "BASE.boot" beside the base, or
         * (when that cannot be written) the instance's own directory. */
        const char *boot_cache;
};

/* Whether s is "i-" + 17 lower-case hex digits. */
bool instance_id_valid(const char *s);
/* A new random id into buf (at least 20 bytes). -errno when no random bytes. */
int instance_id_new(char buf[static 20]);

/* Creates the instance's directory: dir/disk.qcow2 (an overlay whose
 * backing file is c->base, O(1) in the image size), dir/vmlinuz,
 * dir/initrd.img (links to the per-base cache), dir/instance.json. On
 * failure nothing is left of dir. Logs; returns negative errno. */
int instance_create(const struct instance_config *c);

/* Starts QEMU for the instance in dir, detached: its own session, stdin
 * /dev/null, no parent-death signal, -daemonize with dir/qemu.pid,
 * dir/qmp.sock and dir/serial.log (truncated). Returns once QEMU runs and
 * answers QMP (within a timeout), and records pid and start time in
 * dir/instance.json. -EBUSY when it is running already. On failure no QEMU
 * of the instance is left. Logs; returns negative errno. */
int instance_start(const char *dir);

enum instance_check {
        INSTANCE_CHECK_NONE, /* the serial ready line only */
        INSTANCE_CHECK_TCP,  /* plus a TCP connect to 127.0.0.1:host_port */
        INSTANCE_CHECK_HTTP, /* plus GET http://127.0.0.1:host_port/path answering 2xx */
};

struct instance_health {
        enum instance_check check;
        unsigned host_port;
        const char *path; /* HTTP; NULL = "/" */
        unsigned interval_sec; /* between checks once the ready line is seen; 0 = 1 */
};

/* Waits until the instance is healthy: an "ingot-ready" line in
 * dir/serial.log, then the check. Returns 0 with *ret_seconds (since the
 * start recorded in instance.json; optional); -ETIMEDOUT after timeout_sec,
 * -ECHILD when QEMU is gone. On those two *ret_reason (optional, new
 * string) says why and holds the last serial lines. Logs only unexpected
 * errors: the caller decides what a failed health check means. */
int instance_wait_healthy(const char *dir, const struct instance_health *h, unsigned timeout_sec, double *ret_seconds,
                          char **ret_reason);

/* QMP system_powerdown, up to grace_sec for QEMU to exit, then QMP quit,
 * then SIGKILL to the pid, but only when /proc/PID/cmdline shows it is this
 * instance's QEMU. Returns 0 when the guest powered off or was not
 * running, 1 when QEMU had to be told to quit or killed, negative errno
 * (logged) when it could not be stopped. The pidfile and QMP socket are
 * removed afterwards. */
int instance_stop(const char *dir, unsigned grace_sec);

/* Stops nothing: refuses (-EBUSY) while QEMU runs. Deletes dir. */
int instance_remove(const char *dir);

/* Whether the instance in dir was created with c's memory, CPUs and port
 * forwards (in order): 1 yes, 0 no, negative errno when its instance.json
 * cannot be read. A deployment whose file changed them replaces the
 * instance, as it does for a new image. */
int instance_config_matches(const char *dir, const struct instance_config *c);

enum instance_status {
        INSTANCE_RUNNING,      /* the pid is this instance's QEMU and QMP answers */
        INSTANCE_UNRESPONSIVE, /* the pid is this instance's QEMU but QMP does not answer */
        INSTANCE_EXITED,       /* the instance exists, no QEMU of it runs */
        INSTANCE_MISSING,      /* no instance in dir */
        _INSTANCE_STATUS_MAX,
};
const char *instance_status_to_string(enum instance_status s);

/* What the pidfile, /proc and QMP say about dir. ret_pid (optional) is the
 * QEMU pid when RUNNING or UNRESPONSIVE, else 0. Does not log. */
int instance_probe(const char *dir, enum instance_status *ret, pid_t *ret_pid);

/* ---- pieces, exported for the unit tests ---- */

/* The boot facts of one systemd-boot loader entry. */
struct instance_boot_entry {
        char *kernel;  /* ESP path, "/NAME/VERSION/vmlinuz" */
        char *initrd;  /* may be NULL */
        char *options; /* the kernel command line; may be NULL */
};
/* Parses a loader entry's text (the keys "linux", "initrd", "options";
 * the others ignored). -EBADMSG without "linux". */
int instance_parse_loader_entry(const char *text, struct instance_boot_entry *ret);
void instance_boot_entry_done(struct instance_boot_entry *e);

/* The kernel command line of an instance: options, then
 * systemd.hostname=H ingot.hostname=H. New string or NULL. */
char *instance_kernel_cmdline(const char *options, const char *hostname);

/* The QEMU argv of the instance in dir (absolute), as instance_start() runs it. */
struct instance_runtime {
        const char *dir;
        const char *kernel, *initrd, *append;
        unsigned memory_mib, cpus;
        const struct instance_port *ports;
        size_t n_ports;
        enum qemu_accel accel; /* TCG or KVM */
};
int instance_build_argv(const struct instance_runtime *rt, char ***ret);

/* Whether a /proc/PID/cmdline (NUL-separated, n bytes) is QEMU running the
 * overlay dir/disk.qcow2. */
bool instance_cmdline_matches(const char *cmdline, size_t n, const char *dir);
