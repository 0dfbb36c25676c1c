/* Owns the strv helpers declared in strv.h. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "strv.h"

size_t strv_length(char *const *l)
{
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

bool strv_contains(char *const *l, const char *s)
{
        STRV_FOREACH (i, l)
                if (streq(*i, s))
                        return true;
        return false;
}

int strv_consume(char ***l, char *s)
{
        size_t n = strv_length(*l);
        char **m;

        if (!s)
                return -ENOMEM;
        m = reallocarray(*l, n + 2, sizeof(char *));
        if (!m) {
                free(s);
                return -ENOMEM;
        }
        m[n] = s;
        m[n + 1] = NULL;
        *l = m;
        return 0;
}

int strv_extend(char ***l, const char *s)
{
        return strv_consume(l, strdup(s));
}

int strv_extend_strv(char ***l, char *const *other)
{
        STRV_FOREACH (i, other) {
                int r = strv_extend(l, *i);
                if (r < 0)
                        return r;
        }
        return 0;
}

int strv_split_extend(char ***l, const char *s, const char *sep)
{
        while (*s) {
                size_t n;
                int r;

                s += strspn(s, sep);
                n = strcspn(s, sep);
                if (n == 0)
                        break;
                r = strv_consume(l, strndup(s, n));
                if (r < 0)
                        return r;
                s += n;
        }
        return 0;
}

size_t strv_remove(char **l, const char *s)
{
        size_t removed = 0;
        char **w = l;

        if (!l)
                return 0;
        for (char **i = l; *i; i++) {
                if (streq(*i, s)) {
                        free(*i);
                        removed++;
                } else
                        *w++ = *i;
        }
        *w = NULL;
        return removed;
}

char **strv_free(char **l)
{
        for (char **i = l; i && *i; i++)
                free(*i);
        free(l);
        return NULL;
}

void strv_freep(char ***l)
{
        strv_free(*l);
}
