/* Owns the process-wide log level and the message formats. */
#include "config.h"

#include <errno.h>
#include <stdio.h>

#include "log.h"

static enum log_level current_level = LOG_LEVEL_NORMAL;
static FILE *stream;

void log_set_stream(FILE *f)
{
        stream = f;
}

static FILE *out(void)
{
        return stream ? stream : stderr;
}

void log_set_level(enum log_level level)
{
        current_level = level;
}

enum log_level log_get_level(void)
{
        return current_level;
}

int log_full_errno(enum log_level min, const char *prefix, int error, const char *fmt, ...)
{
        int saved = errno;
        va_list ap;

        if (current_level < min)
                return error < 0 ? error : -error;

        /* %m in fmt means the error we were given, not a stray errno. */
        errno = error != 0 ? (error < 0 ? -error : error) : saved;
        fputs("ingot: ", out());
        fputs(prefix, out());
        va_start(ap, fmt);
        vfprintf(out(), fmt, ap);
        va_end(ap);
        fputc('\n', out());
        errno = saved;
        return error < 0 ? error : -error;
}

static void log_syntax_v(const char *file, unsigned line, const char *prefix, const char *fmt, va_list ap)
{
        if (line > 0)
                fprintf(out(), "%s:%u: %s", file, line, prefix);
        else
                fprintf(out(), "%s: %s", file, prefix);
        vfprintf(out(), fmt, ap);
        fputc('\n', out());
}

int log_syntax(const char *file, unsigned line, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_syntax_v(file, line, "", fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

int log_syntax_warning(const char *file, unsigned line, const char *fmt, ...)
{
        va_list ap;

        if (current_level < LOG_LEVEL_NORMAL)
                return 0;
        va_start(ap, fmt);
        log_syntax_v(file, line, "warning: ", fmt, ap);
        va_end(ap);
        return 0;
}
