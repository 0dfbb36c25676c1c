/* Deployment files (*.deploy): what to run, how many, in what shape, on
 * which forwarded ports and how to tell it is healthy. Read from a
 * systemd-style INI file with inih; the keys live in one table in
 * deployfile.c, and one verify pass checks the rules between them. The
 * image reference is only checked for its form here; deploy resolves it in
 * the catalog.
 *
 *   [Deployment]
 *   Name=web                   required, [a-z0-9._-], at most 63 characters
 *   Image=debian-web@1.0.0     required: ami-<17 hex>, NAME@VERSION or NAME:CHANNEL
 *   Count=2                    1..128, default 1
 *   Memory=512M                128M..256G, whole MiB, default 512M
 *   CPUs=1                     1..64, default 1
 *   Ports=80:8080 22:2200      GUEST:HOSTBASE; slot k forwards 127.0.0.1:HOSTBASE+k
 *   MaxSurge=1                 0..Count, default 1
 *   MaxUnavailable=0           0..Count-1, default 0
 *   BootTimeout=300            seconds, 1..86400, default 300
 *   [Health]
 *   ReadyLine=yes              always on; "no" is refused
 *   HTTP=80/                   GUEST-PORT/PATH, expects a 2xx; or
 *   TCP=22                     GUEST-PORT, expects a connection
 *   Interval=2                 seconds between checks, 1..3600, default 2
 *
 * Rolling rules: at least one instance keeps serving (MaxUnavailable <
 * Count), and a rollout must be able to move (MaxSurge + MaxUnavailable >=
 * 1), so Count=1 with MaxUnavailable=0 needs MaxSurge>=1. Instances of a
 * deployment use slots 0 .. Count+MaxSurge-1, and each pair's host range
 * HOSTBASE .. HOSTBASE+Count+MaxSurge-1 must fit below 65536 and not
 * overlap another pair's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/macro.h"

#define DEPLOYFILE_NAME_MAX 63U
#define DEPLOYFILE_COUNT_MAX 128U
#define DEPLOYFILE_CPUS_MAX 64U

enum deploy_health_kind {
        DEPLOY_HEALTH_READY_LINE = 0, /* the serial ready line only */
        DEPLOY_HEALTH_HTTP,           /* plus GET http://127.0.0.1:HOST/PATH answering 2xx */
        DEPLOY_HEALTH_TCP,            /* plus a TCP connection to 127.0.0.1:HOST */
};

struct deploy_port {
        uint16_t guest;
        uint16_t host_base; /* slot k uses host_base + k */
        unsigned line;      /* where the pair was written */
};

struct deployfile {
        char *path;         /* as given */
        uint8_t digest[32]; /* SHA-256 of the file's bytes */

        /* [Deployment] */
        char *name;
        char *image; /* the reference as written, not resolved */
        unsigned count;
        uint64_t memory; /* bytes, a multiple of 1 MiB */
        unsigned cpus;
        struct deploy_port *ports;
        size_t n_ports;
        unsigned max_surge;
        unsigned max_unavailable;
        unsigned boot_timeout; /* seconds */

        /* [Health] */
        enum deploy_health_kind health;
        uint16_t health_port; /* a guest port from ports[]; HTTP and TCP */
        char *health_path;    /* HTTP: starts with '/' */
        unsigned health_interval;

        /* line of each set key, by the key's index in the table */
        unsigned *key_lines;
};

/* Loads path. On bad input logs "file:line: message" (every bad line, up to
 * ten) and returns -EBADMSG; a file that cannot be read is logged and
 * returns its -errno. *ret is set only on success and owned by the caller. */
int deployfile_load(const char *path, struct deployfile **ret);
/* Same from a buffer; name is used in messages. */
int deployfile_load_buffer(const char *name, const char *data, size_t size, struct deployfile **ret);
/* Line where section.key was last set, 0 if it was not. */
unsigned deployfile_key_line(const struct deployfile *d, const char *section, const char *key);

/* How many slots (and host ports per pair) the deployment may use at
 * once: Count + MaxSurge. */
unsigned deployfile_slots(const struct deployfile *d);
/* The host port of pair i for slot. */
uint16_t deployfile_host_port(const struct deployfile *d, size_t i, unsigned slot);
/* The host port that forwards to guest port for slot, 0 if the guest port
 * is not forwarded. */
uint16_t deployfile_host_port_for(const struct deployfile *d, uint16_t guest, unsigned slot);

/* Tries to bind 127.0.0.1:port (TCP, as QEMU's hostfwd will) for every host
 * port of every slot, except those in skip[] (ports the deployment's own
 * running instances hold). The first one taken is logged as
 * "file:line: port N is in use" at its Ports= line and gives -EBADMSG. */
int deployfile_check_ports_free(const struct deployfile *d, const uint16_t *skip, size_t n_skip);

struct deployfile *deployfile_free(struct deployfile *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct deployfile *, deployfile_free);
