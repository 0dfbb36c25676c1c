#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "proc-util.h"

int boot_id_get(char ret[static 37])
{
        _cleanup_free_ char *s = NULL;
        int r = read_full_file("/proc/sys/kernel/random/boot_id", 64, &s, NULL);

        if (r < 0)
                return r;
        s[strcspn(s, "\n")] = '\0';
        if (strlen(s) != 36)
                return -EINVAL;
        memcpy(ret, s, 37);
        return 0;
}

int proc_start_time(pid_t pid, uint64_t *ret)
{
        _cleanup_free_ char *s = NULL;
        char path[64], *p;
        unsigned long long v;
        int r;

        snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
        r = read_full_file(path, 4096, &s, NULL);
        if (r == -ENOENT)
                return -ESRCH;
        if (r < 0)
                return r;
        /* the command name may hold spaces and ')': fields count from the last ')' */
        p = strrchr(s, ')');
        if (!p)
                return -EBADMSG;
        p++;
        /* fields 3..21 (19 of them) come first, then starttime (22) */
        for (int i = 0; i < 20; i++) {
                p += strspn(p, " ");
                if (i < 19)
                        p += strcspn(p, " ");
        }
        if (sscanf(p, "%llu", &v) != 1)
                return -EBADMSG;
        *ret = v;
        return 0;
}

bool pid_is_alive(pid_t pid)
{
        return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

void test_point(const char *name)
{
        const char *l = getenv("INGOT_TEST_STOP_AT");
        size_t n = strlen(name);

        if (!l)
                return;
        for (const char *p = l; *p;) {
                size_t k = strcspn(p, ",");
                if (k == n && strncmp(p, name, n) == 0) {
                        fprintf(stderr, "ingot: test point %s reached, pid %ld: stopping\n", name, (long)getpid());
                        fflush(stderr);
                        raise(SIGSTOP);
                        return;
                }
                p += k + (p[k] == ',');
        }
}
