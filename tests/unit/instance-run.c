/* Drives src/instance.c for tests/integration/test-instance.sh until a
 * command uses it: one subcommand per call, exit 0 on success, 1 on
 * failure (the reason on stderr), 2 on bad usage.
 *   instance-run create DIR BASE ID [MEMORY_MIB [GUEST:HOST...]]
 *   instance-run start DIR
 *   instance-run wait DIR TIMEOUT [http:HOSTPORT[/PATH] | tcp:HOSTPORT]
 *   instance-run stop DIR [GRACE]
 *   instance-run remove DIR
 *   instance-run probe DIR        prints "running PID", "exited", ... */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "shared/log.h"
#include "shared/macro.h"

static int usage(void)
{
        fprintf(stderr, "usage: instance-run create|start|wait|stop|remove|probe DIR ...\n");
        return 2;
}

int main(int argc, char **argv)
{
        const char *cmd, *dir;
        int r;

        if (getenv("INSTANCE_RUN_DEBUG"))
                log_set_level(LOG_LEVEL_VERBOSE);
        if (argc < 3)
                return usage();
        cmd = argv[1];
        dir = argv[2];

        if (streq(cmd, "create")) {
                struct instance_port ports[INSTANCE_MAX_PORTS];
                struct instance_config c = { .dir = dir, .accel = QEMU_ACCEL_AUTO, .ports = ports };

                if (argc < 5 || argc - 6 > INSTANCE_MAX_PORTS)
                        return usage();
                c.base = argv[3];
                c.id = argv[4];
                c.memory_mib = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 10) : 0;
                for (int i = 6; i < argc; i++)
                        if (sscanf(argv[i], "%u:%u", &ports[c.n_ports].guest, &ports[c.n_ports].host) == 2)
                                c.n_ports++;
                        else
                                return usage();
                return instance_create(&c) < 0 ? 1 : 0;
        }
        if (streq(cmd, "start"))
                return instance_start(dir) < 0 ? 1 : 0;
        if (streq(cmd, "wait")) {
                struct instance_health h = { .check = INSTANCE_CHECK_NONE };
                _cleanup_free_ char *reason = NULL;
                double sec = 0;

                if (argc < 4)
                        return usage();
                if (argc > 4 && strncmp(argv[4], "http:", 5) == 0) {
                        char *slash = strchr(argv[4] + 5, '/');
                        h.check = INSTANCE_CHECK_HTTP;
                        h.host_port = (unsigned)strtoul(argv[4] + 5, NULL, 10);
                        h.path = slash;
                } else if (argc > 4 && strncmp(argv[4], "tcp:", 4) == 0) {
                        h.check = INSTANCE_CHECK_TCP;
                        h.host_port = (unsigned)strtoul(argv[4] + 4, NULL, 10);
                } else if (argc > 4)
                        return usage();
                r = instance_wait_healthy(dir, &h, (unsigned)strtoul(argv[3], NULL, 10), &sec, &reason);
                if (r < 0) {
                        fprintf(stderr, "unhealthy (%s): %s\n", strerror(-r), strna(reason));
                        return 1;
                }
                printf("healthy in %.1fs\n", sec);
                return 0;
        }
        if (streq(cmd, "stop")) {
                r = instance_stop(dir, argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 30);
                if (r < 0)
                        return 1;
                printf("%s\n", r == 0 ? "powered off" : "quit or killed");
                return 0;
        }
        if (streq(cmd, "remove"))
                return instance_remove(dir) < 0 ? 1 : 0;
        if (streq(cmd, "probe")) {
                enum instance_status s;
                pid_t pid;

                r = instance_probe(dir, &s, &pid);
                if (r < 0)
                        return 1;
                if (pid > 0)
                        printf("%s %d\n", instance_status_to_string(s), (int)pid);
                else
                        printf("%s\n", instance_status_to_string(s));
                return 0;
        }
        return usage();
}
