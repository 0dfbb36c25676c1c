/* Owns number, size and boolean parsing for spec files. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>

#include "macro.h"
#include "parse-util.h"

int parse_uint64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (!s || !isdigit((unsigned char)*s))
                return -EINVAL;
        for (; isdigit((unsigned char)*s); s++) {
                unsigned d = (unsigned)(*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (*s)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_size(const char *s, uint64_t unit, uint64_t *ret)
{
        static const struct {
                const char *suffix;
                uint64_t factor;
        } table[] = {
                { "", 0 }, /* bare number: the caller's unit */
                { "B", 1ULL },
                { "K", 1ULL << 10 },
                { "KB", 1ULL << 10 },
                { "KiB", 1ULL << 10 },
                { "M", 1ULL << 20 },
                { "MB", 1ULL << 20 },
                { "MiB", 1ULL << 20 },
                { "G", 1ULL << 30 },
                { "GB", 1ULL << 30 },
                { "GiB", 1ULL << 30 },
                { "T", 1ULL << 40 },
                { "TB", 1ULL << 40 },
                { "TiB", 1ULL << 40 },
        };
        uint64_t v = 0;
        const char *p = s;

        if (!s || !isdigit((unsigned char)*s))
                return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
                unsigned d = (unsigned)(*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                uint64_t f = table[i].factor ? table[i].factor : unit;
                if (strcasecmp(p, table[i].suffix) != 0)
                        continue;
                if (f != 0 && v > UINT64_MAX / f)
                        return -ERANGE;
                *ret = v * f;
                return 0;
        }
        return -EINVAL;
}

int parse_boolean(const char *s, bool *ret)
{
        static const char *const yes[] = { "1", "yes", "y", "true", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}
