/* The QEMU runner: an argv builder that can also print the command quoted,
 * the KVM probe with TCG fallback, serial capture and QMP. A VM runs in its
 * own process group and is killed on every exit path of ingot (also on
 * SIGINT/SIGTERM/SIGHUP) unless it was detached on purpose. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "shared/macro.h"

#define QEMU_BINARY "qemu-system-x86_64"
#define QEMU_READY_MARKER "ingot-ready name=" /* then version=… */

enum qemu_firmware {
        QEMU_FIRMWARE_BIOS,
        QEMU_FIRMWARE_UEFI,
        _QEMU_FIRMWARE_MAX,
        QEMU_FIRMWARE_AUTO = -1, /* uefi when OVMF is installed, else bios */
};

enum qemu_accel {
        QEMU_ACCEL_TCG,
        QEMU_ACCEL_KVM,
        _QEMU_ACCEL_MAX,
        QEMU_ACCEL_AUTO = -1, /* probe once per process */
};

const char *qemu_firmware_to_string(enum qemu_firmware f);
/* Returns the firmware, or -EINVAL for an unknown name ("auto" included). */
int qemu_firmware_from_string(const char *s);
const char *qemu_accel_to_string(enum qemu_accel a);
int qemu_accel_from_string(const char *s);

/* What a VM is made of, as plain data; qemu_build_argv() turns it into an
 * argv. Strings are borrowed. */
struct qemu_config {
        const char *binary;       /* NULL = QEMU_BINARY */
        const char *image;        /* disk image, attached as virtio-blk */
        const char *image_format; /* "raw" or "qcow2" */
        bool snapshot;            /* writes go to a throw-away overlay; the image is never written */
        enum qemu_firmware firmware;
        enum qemu_accel accel;
        const char *ovmf_code;  /* uefi: read-only code flash */
        const char *ovmf_vars;  /* uefi: a writable copy of the variable store */
        unsigned memory_mib;    /* 0 = 512 */
        unsigned cpus;          /* 0 = 1 */
        const char *serial_log; /* the serial port goes to this file ... */
        bool serial_stdio;      /* ... or to stdio, copied to serial_log when that is set */
        const char *qmp_socket; /* NULL = no QMP */
        /* Direct kernel boot and detached instances (all optional, appended
         * after the above; unset = none of these arguments). */
        const char *kernel;  /* -kernel: the firmware is skipped */
        const char *initrd;  /* -initrd, with kernel */
        const char *append;  /* -append, with kernel */
        const char *pidfile; /* -pidfile */
        bool daemonize;      /* -daemonize: QEMU forks off, setsid()s, and outlives its parent */
        bool user_net;       /* -netdev user + virtio-net-pci, with the forwards below */
        const struct qemu_hostfwd *hostfwd;
        size_t n_hostfwd;
};

/* A TCP forward from 127.0.0.1:host to the guest's port on user networking. */
struct qemu_hostfwd {
        unsigned guest;
        unsigned host;
};

/* Appends one argument, or a formatted one, to an argv (a strv). */
int qemu_argv_add(char ***argv, const char *arg);
int qemu_argv_addf(char ***argv, const char *fmt, ...) _printf_(2, 3);
/* QEMU's own escaping for a value inside an option list: ',' becomes ",,".
 * Returns a new string or NULL on ENOMEM. */
char *qemu_escape_opt_value(const char *value);
/* The argv as one line a POSIX shell would read back into the same argv
 * (single quotes where needed), for -v and for error messages. New string. */
char *qemu_argv_to_string(char *const *argv);
/* Builds the argv for c; *ret is a new strv. -EINVAL when c is incomplete
 * (no image, uefi without OVMF paths, AUTO left in firmware or accel). */
int qemu_build_argv(const struct qemu_config *c, char ***ret);

/* "qcow2" when the file starts with the qcow2 magic, else "raw" (static
 * strings). -errno when the file cannot be read. */
int qemu_detect_image_format(const char *path, const char **ret);
/* The OVMF code and variable-store templates (4M pair preferred), static
 * strings; -ENOENT when OVMF is not installed. */
int qemu_find_ovmf(const char **ret_code, const char **ret_vars);

/* Whether KVM really runs a guest: /dev/kvm must open, then a tiny firmware
 * that switches to long mode and writes to isa-debug-exit must make QEMU
 * exit within timeout_sec (on hosts where /dev/kvm exists but hangs, it
 * does not). The answer is kept for the rest of the process, never on disk.
 * $INGOT_ACCEL=kvm|tcg skips the probe. Never fails: TCG is the fallback. */
enum qemu_accel qemu_probe_accel(unsigned timeout_sec);

/* Connects to the QMP socket (retrying until timeout_ms), negotiates
 * capabilities and runs one argument-less command (e.g. "query-status",
 * "system_powerdown"). Returns 0 on a "return" answer, -EIO on an "error"
 * one, -ETIMEDOUT, or the connect errno (-ENOENT, -ECONNREFUSED). Does not log. */
int qemu_qmp_command(const char *socket_path, const char *command, int timeout_ms);

/* QMP messages, one JSON object per line. */
enum qmp_message_type {
        QMP_MESSAGE_GREETING,
        QMP_MESSAGE_RETURN,
        QMP_MESSAGE_ERROR,
        QMP_MESSAGE_EVENT,
};
/* Classifies one line. ret_detail (optional, new string) is the event name
 * or the error's "desc". -EBADMSG for anything else. */
int qmp_parse_message(const char *line, enum qmp_message_type *ret_type, char **ret_detail);

/* Serial output as lines: ANSI escape sequences, CRs and other control
 * characters dropped. Keeps the last QEMU_SERIAL_TAIL lines. */
#define QEMU_SERIAL_TAIL 20
struct qemu_serial {
        char *partial; /* the unfinished last line */
        size_t partial_len;
        char *tail[QEMU_SERIAL_TAIL]; /* ring of complete lines */
        size_t n_lines;               /* complete lines seen so far */
        int esc_state;                /* inside an escape sequence */
        char *ready_line;             /* from the marker on, when seen; owned here */
};
/* Feeds bytes; returns 1 once the ready marker has been seen, else 0, or
 * -ENOMEM. */
int qemu_serial_feed(struct qemu_serial *s, const char *data, size_t n);
/* Writes the last lines (the unfinished one included) to f, each indented. */
void qemu_serial_print_tail(const struct qemu_serial *s, FILE *f);
void qemu_serial_done(struct qemu_serial *s);

/* A running VM. */
struct qemu_vm_options {
        const char *image;
        enum qemu_firmware firmware; /* AUTO allowed */
        enum qemu_accel accel;       /* AUTO allowed */
        unsigned memory_mib;
        unsigned cpus;
        bool console;    /* serial on our stdio, QEMU in our process group */
        bool detachable; /* QEMU may outlive ingot (qemu_vm_detach) */
};

struct qemu_vm {
        pid_t pid;
        enum qemu_firmware firmware;
        enum qemu_accel accel;
        char *run_dir; /* serial.log, qmp.sock, qemu.log, OVMF_VARS copy; removed by qemu_vm_free() */
        char *serial_log;
        char *qmp_socket;
        char *qemu_log; /* QEMU's own stderr */
        char **argv;
        double started; /* CLOCK_MONOTONIC seconds */
        int serial_fd;
        struct qemu_serial serial;
        int exit_status; /* once reaped: exit code or 128+signal; -1 while running */
        bool detached;
        bool console;
};

/* Starts the VM (image snapshot=on, so it is never written). Logs and
 * returns negative errno: -ENOENT for a missing image, -EBADMSG for one
 * that is not a file. */
int qemu_vm_start(const struct qemu_vm_options *o, struct qemu_vm **ret);
/* Waits for the ready marker on the serial port. timeout_sec 0 = no limit.
 * Returns 0 with *ret_seconds (since start), -ETIMEDOUT, -ECHILD when
 * QEMU exited first, or -EINTR on SIGINT/SIGTERM/SIGHUP. Logs the failure; vm->serial keeps the last lines. */
int qemu_vm_wait_ready(struct qemu_vm *vm, unsigned timeout_sec, double *ret_seconds);
/* The signal (SIGINT, SIGTERM, SIGHUP) that arrived during a wait, else 0.
 * The VMs are already dead then; the caller cleans up and exits 128+N. */
int qemu_interrupted(void);
/* Waits for QEMU to exit on its own (console mode). */
int qemu_vm_wait_exit(struct qemu_vm *vm);
/* QMP system_powerdown, then quit after grace_sec, then SIGKILL to the
 * process group; always reaps. Returns 0 when QEMU went down gracefully. */
int qemu_vm_shutdown(struct qemu_vm *vm, unsigned grace_sec);
/* Leaves QEMU running past ingot: qemu_vm_free() then neither kills it nor
 * removes run_dir. Only for VMs started detachable. */
int qemu_vm_detach(struct qemu_vm *vm);
/* Kills (unless detached), reaps, removes run_dir (unless detached), frees. */
struct qemu_vm *qemu_vm_free(struct qemu_vm *vm);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct qemu_vm *, qemu_vm_free);
