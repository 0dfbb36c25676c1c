/* Small macros every module uses: scope-based cleanup, ownership transfer,
 * array sizes. Modelled on systemd's macro.h; nothing here knows ingot. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))

/* Hand a pointer on: returns it and leaves NULL behind, so the cleanup
 * attribute of the old owner does nothing. */
#define TAKE_PTR(p)                                                                                                    \
        ({                                                                                                             \
                typeof(p) _p_ = (p);                                                                                   \
                (p) = NULL;                                                                                            \
                _p_;                                                                                                   \
        })

#define TAKE_FD(fd)                                                                                                    \
        ({                                                                                                             \
                int _fd_ = (fd);                                                                                       \
                (fd) = -1;                                                                                             \
                _fd_;                                                                                                  \
        })

/* Accepts NULL, returns NULL, so "p = x_free(p);" reads as one step. */
static inline void *x_free(void *p)
{
        free(p);
        return NULL;
}

static inline void freep(void *p)
{
        free(*(void **)p);
}

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_close_ _cleanup_(closep)

/* Defines a cleanup function "namep" for a type with its own destructor. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                                        \
        static inline void func##p(type *p)                                                                            \
        {                                                                                                              \
                if (*p)                                                                                                \
                        func(*p);                                                                                      \
        }

static inline const char *strna(const char *s)
{
        return s ? s : "n/a";
}

#define streq(a, b) (strcmp((a), (b)) == 0)

static inline int streq_ptr(const char *a, const char *b)
{
        if (!a || !b)
                return a == b;
        return streq(a, b);
}
