/* ingot boot: boots an image in a throw-away VM (the image is never
 * written), waits for the ready line on the serial console and reports how
 * long it took; then shuts the VM down, or leaves it running (--keep), or
 * hands the console to the user (--console). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli.h"
#include "qemu.h"
#include "shared/fileio.h"
#include "shared/log.h"

#define BOOT_TIMEOUT_TCG 300
#define BOOT_TIMEOUT_KVM 60
#define SHUTDOWN_GRACE_SEC 10

static int parse_positive(const char *verb, const char *opt, const char *value, unsigned max, unsigned *ret)
{
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(value, &end, 10);
        if (errno != 0 || end == value || *end || *value == '-' || v == 0 || v > max)
                return cli_usage_error(verb, "invalid value '%s' for %s (1..%u)", value, opt, max);
        *ret = (unsigned)v;
        return 0;
}

static int print_json(const char *image, const struct qemu_vm *vm, double seconds, bool keep)
{
        json_t *j = json_pack("{s:s, s:s, s:s, s:f, s:s?}", "image", image, "firmware",
                              qemu_firmware_to_string(vm->firmware), "accelerator", qemu_accel_to_string(vm->accel),
                              "boot_seconds", seconds, "ready", vm->serial.ready_line);
        int r;

        if (!j)
                return -ENOMEM;
        if (keep) {
                json_object_set_new(j, "pid", json_integer(vm->pid));
                json_object_set_new(j, "qmp_socket", json_string(vm->qmp_socket));
                json_object_set_new(j, "serial_log", json_string(vm->serial_log));
        }
        r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(4));
        json_decref(j);
        if (r < 0)
                return -EIO;
        putchar('\n');
        return 0;
}

/* --serial-log: a copy of everything the guest printed, kept after the
 * VM's own directory is gone. A failure to save it is only a warning. */
static void save_serial_log(const struct qemu_vm *vm, const char *path)
{
        int r;

        if (!path || !vm->serial_log)
                return;
        r = copy_file(vm->serial_log, path, 0644);
        if (r < 0)
                log_warning("cannot save the serial log as '%s': %s", path, strerror(-r));
}

int cmd_boot(int argc, char **argv, const struct cli_context *ctx)
{
        enum {
                ARG_FIRMWARE = 0x100,
                ARG_TIMEOUT,
                ARG_MEMORY,
                ARG_CPUS,
                ARG_ACCEL,
                ARG_CONSOLE,
                ARG_KEEP,
                ARG_SERIAL_LOG
        };
        static const struct option options[] = { { "firmware", required_argument, NULL, ARG_FIRMWARE },
                                                 { "timeout", required_argument, NULL, ARG_TIMEOUT },
                                                 { "memory", required_argument, NULL, ARG_MEMORY },
                                                 { "cpus", required_argument, NULL, ARG_CPUS },
                                                 { "accel", required_argument, NULL, ARG_ACCEL },
                                                 { "console", no_argument, NULL, ARG_CONSOLE },
                                                 { "keep", no_argument, NULL, ARG_KEEP },
                                                 { "serial-log", required_argument, NULL, ARG_SERIAL_LOG },
                                                 {} };
        _cleanup_(qemu_vm_freep) struct qemu_vm *vm = NULL;
        struct qemu_vm_options o = { .firmware = QEMU_FIRMWARE_AUTO, .accel = QEMU_ACCEL_AUTO, .memory_mib = 512 };
        unsigned timeout = 0;
        const char *image, *serial_out = NULL;
        double seconds = 0;
        struct stat st;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                switch (c) {
                case ARG_FIRMWARE:
                        if (streq(optarg, "auto"))
                                o.firmware = QEMU_FIRMWARE_AUTO;
                        else if ((r = qemu_firmware_from_string(optarg)) >= 0)
                                o.firmware = r;
                        else
                                return cli_usage_error("boot", "invalid firmware '%s' (uefi, bios or auto)", optarg);
                        break;
                case ARG_ACCEL:
                        if (streq(optarg, "auto"))
                                o.accel = QEMU_ACCEL_AUTO;
                        else if ((r = qemu_accel_from_string(optarg)) >= 0)
                                o.accel = r;
                        else
                                return cli_usage_error("boot", "invalid accelerator '%s' (kvm, tcg or auto)", optarg);
                        break;
                case ARG_TIMEOUT:
                        r = parse_positive("boot", "--timeout", optarg, 24 * 3600, &timeout);
                        if (r != 0)
                                return r;
                        break;
                case ARG_MEMORY:
                        r = parse_positive("boot", "--memory", optarg, 1024 * 1024, &o.memory_mib);
                        if (r != 0)
                                return r;
                        break;
                case ARG_CPUS:
                        r = parse_positive("boot", "--cpus", optarg, 64, &o.cpus);
                        if (r != 0)
                                return r;
                        break;
                case ARG_CONSOLE:
                        o.console = true;
                        break;
                case ARG_KEEP:
                        o.detachable = true;
                        break;
                case ARG_SERIAL_LOG:
                        serial_out = optarg;
                        break;
                case ':':
                        return cli_usage_error("boot", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("boot", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("boot", argc - optind);
        if (r != 0)
                return r;
        if (o.console && o.detachable)
                return cli_usage_error("boot", "--console and --keep exclude each other");
        image = argv[optind];
        o.image = image;

        /* Bad input, so exit code 2, decided before any VM exists. */
        if (stat(image, &st) < 0)
                return log_error_errno(-errno, "cannot open image '%s': %m", image), EXIT_USAGE;
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return log_error("image '%s' is not a file", image), EXIT_USAGE;

        r = qemu_vm_start(&o, &vm);
        if (r < 0)
                return cli_exit_code(r);
        if (!timeout)
                timeout = o.console ? 0 : vm->accel == QEMU_ACCEL_KVM ? BOOT_TIMEOUT_KVM : BOOT_TIMEOUT_TCG;
        log_info("booting '%s' (%s, %s%s)", image, qemu_firmware_to_string(vm->firmware),
                 qemu_accel_to_string(vm->accel), o.console ? ", console attached" : "");

        r = qemu_vm_wait_ready(vm, timeout, &seconds);
        if (r == -EINTR)
                return 128 + qemu_interrupted();
        if (r < 0) {
                if (!o.console) {
                        fprintf(stderr, "last serial lines:\n");
                        qemu_serial_print_tail(&vm->serial, stderr);
                }
                save_serial_log(vm, serial_out);
                return EXIT_FAILURE_RUN; /* the VM goes with vm's cleanup */
        }

        if (o.console) {
                int status;

                fprintf(stderr, "\r\ningot: ready after %.1f s: %s\r\n", seconds, vm->serial.ready_line);
                status = qemu_vm_wait_exit(vm);
                log_debug("qemu exited with status %d", status);
                return qemu_interrupted() ? 128 + qemu_interrupted() : EXIT_OK;
        }

        if (o.detachable) {
                r = qemu_vm_detach(vm);
                if (r < 0)
                        return log_error_errno(r, "the VM stopped right after the ready line"), EXIT_FAILURE_RUN;
        } else
                (void)qemu_vm_shutdown(vm, SHUTDOWN_GRACE_SEC);
        save_serial_log(vm, serial_out);

        if (ctx->json) {
                r = print_json(image, vm, seconds, o.detachable);
                if (r < 0)
                        return log_error_errno(r, "cannot write the result"), EXIT_FAILURE_RUN;
        } else {
                printf("%s\n", vm->serial.ready_line);
                printf("ready after %.1f s (firmware %s, accelerator %s)\n", seconds,
                       qemu_firmware_to_string(vm->firmware), qemu_accel_to_string(vm->accel));
                if (o.detachable)
                        printf("running: pid %d, qmp %s, serial %s\n", (int)vm->pid, vm->qmp_socket, vm->serial_log);
        }
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the result: %m"), EXIT_FAILURE_RUN;
        return EXIT_OK;
}
