/* Owns deployment files: reading a *.deploy INI file with inih, one table of
 * keys with a parser each, the defaults, the verify pass for the rules
 * between keys (ports against the slot count, the rolling limits, the
 * health port), and the check that the host ports are free. As in
 * template.c, our own line reader checks line-level syntax first, so inih
 * only sees lines we accepted and every message names the right line. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ini.h>

#include "catalog.h"
#include "deployfile.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/parse-util.h"
#include "shared/strv.h"

/* A deployment file is a few lines; anything bigger is a wrong path. */
#define DEPLOYFILE_SIZE_MAX (1024U * 1024U)
#define DEPLOYFILE_LINE_MAX 4096U
#define DEPLOYFILE_ERRORS_MAX 10U

#define SIZE_1M (UINT64_C(1) << 20)
#define MEMORY_MIN (UINT64_C(128) << 20)
#define MEMORY_MAX (UINT64_C(256) << 30)
#define BOOT_TIMEOUT_MAX 86400U
#define INTERVAL_MAX 3600U
#define HEALTH_PATH_MAX 1024U

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

static const char *const section_table[] = { "Deployment", "Health" };

struct deploy_parser;
struct deploy_key;

typedef int (*deploy_parse_fn)(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                               void *field);

struct deploy_key {
        const char *section;
        const char *key;
        deploy_parse_fn parse;
        size_t offset;
        const char *def; /* default, also what an empty assignment restores; NULL = zero */
        uint64_t min, max;
};

/* inih calls the reader once per line and the handler for that line before
 * it reads the next one, so "line" is the line the handler is looking at. */
struct deploy_parser {
        struct deployfile *d;
        const char *file;

        const char *data;
        size_t size;
        size_t pos;
        unsigned line;

        bool in_section;
        bool skip_section;
        bool fatal;
        unsigned n_assignments;
        unsigned n_errors;
        int r;
};

static int parser_error(struct deploy_parser *p, int r)
{
        if (p->r == 0 || (r != -EBADMSG && p->r == -EBADMSG))
                p->r = r;
        if (r != -EBADMSG)
                p->fatal = true;
        else if (++p->n_errors >= DEPLOYFILE_ERRORS_MAX && !p->fatal) {
                log_syntax(p->file, 0, "too many errors, giving up");
                p->fatal = true;
        }
        return r;
}

static int log_invalid(struct deploy_parser *p, unsigned line, const struct deploy_key *k, const char *value,
                       const char *reason)
{
        return log_syntax(p->file, line, "invalid %s= '%s': %s", k->key, value, reason);
}

static int log_oom(void)
{
        return log_error_errno(-ENOMEM, "out of memory");
}

static bool isempty_str(const char *s)
{
        return !s || !*s;
}

static int set_string(char **field, const char *value)
{
        char *s = NULL;

        if (!isempty_str(value)) {
                s = strdup(value);
                if (!s)
                        return log_oom();
        }
        free(*field);
        *field = s;
        return 0;
}

/* A deployment name becomes part of directory names and instance
 * hostnames, hence the DNS-label length. */
static int parse_name(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                      void *field)
{
        if (!isempty_str(value)) {
                if (!(islower((unsigned char)value[0]) || isdigit((unsigned char)value[0])))
                        return log_invalid(p, line, k, value,
                                           "use lower-case letters, digits, '.', '_' and '-', starting with a "
                                           "letter or digit");
                for (const char *c = value; *c; c++)
                        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || strchr("._-", *c)))
                                return log_invalid(p, line, k, value,
                                                   "use lower-case letters, digits, '.', '_' and '-', starting with a "
                                                   "letter or digit");
                if (strlen(value) > DEPLOYFILE_NAME_MAX)
                        return log_invalid(p, line, k, value, "longer than 63 characters");
        }
        return set_string(field, value);
}

static int parse_image(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                       void *field)
{
        struct catalog_ref ref;
        int r;

        if (!isempty_str(value)) {
                r = catalog_ref_parse(value, &ref);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        return log_invalid(p, line, k, value,
                                           "expected an image id (ami- and 17 hex digits), NAME@VERSION or "
                                           "NAME:CHANNEL");
                catalog_ref_done(&ref);
        }
        return set_string(field, value);
}

static int parse_unsigned(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                          void *field)
{
        char reason[96];
        uint64_t v;

        if (parse_uint64(value, &v) < 0) {
                snprintf(reason, sizeof(reason), "expected a number from %" PRIu64 " to %" PRIu64, k->min, k->max);
                return log_invalid(p, line, k, value, reason);
        }
        if (v < k->min) {
                snprintf(reason, sizeof(reason), "must be at least %" PRIu64, k->min);
                return log_invalid(p, line, k, value, reason);
        }
        if (v > k->max) {
                snprintf(reason, sizeof(reason), "must be at most %" PRIu64, k->max);
                return log_invalid(p, line, k, value, reason);
        }
        *(unsigned *)field = (unsigned)v;
        return 0;
}

/* QEMU's -m counts MiB, so sizes are whole MiB. */
static int parse_memory(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                        void *field)
{
        uint64_t v;
        int r;

        r = parse_size(value, 1, &v);
        if (r == -ERANGE)
                return log_invalid(p, line, k, value, "too large");
        if (r < 0)
                return log_invalid(p, line, k, value, "expected a size such as 512M or 2G");
        if (v % SIZE_1M != 0)
                return log_invalid(p, line, k, value, "not a multiple of 1M");
        if (v < MEMORY_MIN)
                return log_invalid(p, line, k, value, "must be at least 128M");
        if (v > MEMORY_MAX)
                return log_invalid(p, line, k, value, "must be at most 256G");
        *(uint64_t *)field = v;
        return 0;
}

/* A TCP port, 1..65535, digits only. */
static int parse_port_number(const char *s, size_t n, uint16_t *ret)
{
        unsigned v = 0;

        if (n == 0 || n > 5)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char)s[i]))
                        return -EINVAL;
                v = v * 10 + (unsigned)(s[i] - '0');
        }
        if (v == 0 || v > 65535)
                return -ERANGE;
        *ret = (uint16_t)v;
        return 0;
}

static int parse_ports(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                       void *field _unused_)
{
        struct deployfile *d = p->d;
        _cleanup_strv_free_ char **words = NULL;
        _cleanup_free_ struct deploy_port *new_ports = NULL;
        struct deploy_port *ports;
        size_t n = 0;
        int r;

        if (isempty_str(value)) {
                d->ports = x_free(d->ports);
                d->n_ports = 0;
                return 0;
        }
        r = strv_split_extend(&words, value, " \t");
        if (r < 0)
                return log_oom();
        new_ports = calloc(strv_length(words), sizeof(*new_ports));
        if (!new_ports)
                return log_oom();

        STRV_FOREACH (w, words) {
                const char *colon = strchr(*w, ':');
                struct deploy_port *np = &new_ports[n];

                if (!colon)
                        return log_syntax(p->file, line, "invalid %s= '%s': '%s' is not GUEST:HOSTBASE", k->key, value,
                                          *w);
                if (parse_port_number(*w, (size_t)(colon - *w), &np->guest) < 0 ||
                    parse_port_number(colon + 1, strlen(colon + 1), &np->host_base) < 0)
                        return log_syntax(p->file, line, "invalid %s= '%s': '%s': ports are numbers from 1 to 65535",
                                          k->key, value, *w);
                np->line = line;
                /* earlier lines, then earlier pairs on this line */
                for (size_t i = 0; i < d->n_ports + n; i++) {
                        const struct deploy_port *o = i < d->n_ports ? &d->ports[i] : &new_ports[i - d->n_ports];

                        if (o->guest == np->guest)
                                return log_syntax(p->file, line, "invalid %s= '%s': guest port %u is forwarded twice",
                                                  k->key, value, np->guest);
                        if (o->host_base == np->host_base)
                                return log_syntax(p->file, line, "invalid %s= '%s': host port %u is used twice", k->key,
                                                  value, np->host_base);
                }
                n++;
        }

        ports = reallocarray(d->ports, d->n_ports + n, sizeof(*ports));
        if (!ports)
                return log_oom();
        d->ports = ports;
        memcpy(d->ports + d->n_ports, new_ports, n * sizeof(*ports));
        d->n_ports += n;
        return 0;
}

static int parse_ready_line(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                            void *field _unused_)
{
        bool b;

        if (parse_boolean(value, &b) < 0)
                return log_invalid(p, line, k, value, "expected yes");
        if (!b)
                return log_invalid(p, line, k, value,
                                   "the serial ready line is always checked; add HTTP= or TCP= for more");
        return 0;
}

static int parse_health_tcp(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                            void *field _unused_)
{
        struct deployfile *d = p->d;
        uint16_t port;

        if (isempty_str(value)) {
                if (d->health == DEPLOY_HEALTH_TCP) {
                        d->health = DEPLOY_HEALTH_READY_LINE;
                        d->health_port = 0;
                }
                return 0;
        }
        if (parse_port_number(value, strlen(value), &port) < 0)
                return log_invalid(p, line, k, value, "expected a guest port from Ports=, 1 to 65535");
        d->health = DEPLOY_HEALTH_TCP;
        d->health_port = port;
        d->health_path = x_free(d->health_path);
        return 0;
}

static int parse_health_http(struct deploy_parser *p, const struct deploy_key *k, unsigned line, const char *value,
                             void *field _unused_)
{
        struct deployfile *d = p->d;
        const char *slash;
        uint16_t port;

        if (isempty_str(value)) {
                if (d->health == DEPLOY_HEALTH_HTTP) {
                        d->health = DEPLOY_HEALTH_READY_LINE;
                        d->health_port = 0;
                        d->health_path = x_free(d->health_path);
                }
                return 0;
        }
        slash = strchr(value, '/');
        if (!slash || parse_port_number(value, (size_t)(slash - value), &port) < 0)
                return log_invalid(p, line, k, value, "expected GUEST-PORT/PATH such as 80/ or 8080/healthz");
        /* The path goes into a request line as it is. */
        for (const char *c = slash; *c; c++)
                if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
                        return log_invalid(p, line, k, value, "the path must be printable ASCII without spaces");
        if (strlen(slash) > HEALTH_PATH_MAX)
                return log_invalid(p, line, k, value, "the path is longer than 1024 characters");
        if (set_string(&d->health_path, slash) < 0)
                return -ENOMEM;
        d->health = DEPLOY_HEALTH_HTTP;
        d->health_port = port;
        return 0;
}

#define F(field) offsetof(struct deployfile, field)

/* Every key a deployment file may set. key_lines is indexed by position here. */
/* clang-format off */
static const struct deploy_key deploy_keys[] = {
        { "Deployment", "Name",           parse_name,        F(name)                                             },
        { "Deployment", "Image",          parse_image,       F(image)                                            },
        { "Deployment", "Count",          parse_unsigned,    F(count),           .def = "1",   .min = 1, .max = DEPLOYFILE_COUNT_MAX },
        { "Deployment", "Memory",         parse_memory,      F(memory),          .def = "512M"                   },
        { "Deployment", "CPUs",           parse_unsigned,    F(cpus),            .def = "1",   .min = 1, .max = DEPLOYFILE_CPUS_MAX },
        { "Deployment", "Ports",          parse_ports,       F(ports)                                            },
        /* the upper bounds against Count are checked in verify */
        { "Deployment", "MaxSurge",       parse_unsigned,    F(max_surge),       .def = "1",   .min = 0, .max = DEPLOYFILE_COUNT_MAX },
        { "Deployment", "MaxUnavailable", parse_unsigned,    F(max_unavailable), .def = "0",   .min = 0, .max = DEPLOYFILE_COUNT_MAX },
        { "Deployment", "BootTimeout",    parse_unsigned,    F(boot_timeout),    .def = "300", .min = 1, .max = BOOT_TIMEOUT_MAX },
        { "Health",     "ReadyLine",      parse_ready_line,  0,                  .def = "yes"                    },
        { "Health",     "HTTP",           parse_health_http, F(health_path)                                      },
        { "Health",     "TCP",            parse_health_tcp,  F(health_port)                                      },
        { "Health",     "Interval",       parse_unsigned,    F(health_interval), .def = "2",   .min = 1, .max = INTERVAL_MAX },
};
/* clang-format on */

#undef F

static const struct deploy_key *deploy_key_find(const char *section, const char *key, size_t *ret_index)
{
        for (size_t i = 0; i < ELEMENTSOF(deploy_keys); i++)
                if (streq(deploy_keys[i].section, section) && streq(deploy_keys[i].key, key)) {
                        if (ret_index)
                                *ret_index = i;
                        return &deploy_keys[i];
                }
        return NULL;
}

unsigned deployfile_key_line(const struct deployfile *d, const char *section, const char *key)
{
        size_t i;

        if (!d || !d->key_lines || !section || !key || !deploy_key_find(section, key, &i))
                return 0;
        return d->key_lines[i];
}

static bool section_is_known(const char *s, size_t n)
{
        for (size_t i = 0; i < ELEMENTSOF(section_table); i++)
                if (strlen(section_table[i]) == n && strncmp(section_table[i], s, n) == 0)
                        return true;
        return false;
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t n)
{
        size_t len;
        uint32_t c;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf) {
                len = 2;
                c = s[0] & 0x1f;
        } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                c = s[0] & 0x0f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                c = s[0] & 0x07;
        } else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3f);
        }
        if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (len == 4 && (c < 0x10000 || c > 0x10ffff)))
                return 0;
        return len;
}

/* 1 for text, 0 for control bytes (binary), -1 for invalid UTF-8. */
static int line_is_text(const char *s, size_t n)
{
        for (size_t i = 0; i < n;) {
                unsigned char c = (unsigned char)s[i];
                size_t len;

                if ((c < 0x20 && c != '\t' && !(c == '\r' && i == n - 1)) || c == 0x7f)
                        return 0;
                len = utf8_sequence_length((const unsigned char *)s + i, n - i);
                if (len == 0)
                        return -1;
                i += len;
        }
        return 1;
}

/* Checks one stripped line and says whether inih should see it. */
static bool deploy_check_line(struct deploy_parser *p, const char *s, size_t n)
{
        const char *eq;
        size_t k;

        if (n == 0 || s[0] == '#' || s[0] == ';')
                return false;

        if (s[0] == '[') {
                const char *close = memchr(s, ']', n);

                p->in_section = true;
                p->skip_section = true;
                if (!close)
                        parser_error(p, log_syntax(p->file, p->line, "unterminated section header '%.*s'", (int)n, s));
                else if (close != s + n - 1 || n < 3 || memchr(s + 1, '[', n - 2))
                        parser_error(p, log_syntax(p->file, p->line, "invalid section header '%.*s'", (int)n, s));
                else if (!section_is_known(s + 1, n - 2))
                        parser_error(p,
                                     log_syntax(p->file, p->line,
                                                "unknown section %.*s, expected [Deployment] or [Health]", (int)n, s));
                else {
                        p->skip_section = false;
                        return true;
                }
                return false;
        }

        eq = memchr(s, '=', n);
        if (!eq) {
                parser_error(p, log_syntax(p->file, p->line, "expected Key=Value or [Section], got '%.*s'",
                                           (int)MIN(n, 64U), s));
                return false;
        }
        k = (size_t)(eq - s);
        while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == '\t'))
                k--;
        for (size_t i = 0; i < k; i++)
                if (!isalnum((unsigned char)s[i])) {
                        parser_error(p, log_syntax(p->file, p->line, "invalid key name '%.*s'", (int)k, s));
                        return false;
                }
        if (k == 0) {
                parser_error(p, log_syntax(p->file, p->line, "missing key name before '='"));
                return false;
        }
        if (!p->in_section) {
                parser_error(p,
                             log_syntax(p->file, p->line,
                                        "key '%.*s' outside of any section, expected [Deployment] first", (int)k, s));
                return false;
        }
        return !p->skip_section;
}

static char *deploy_reader(char *str, int num, void *stream)
{
        struct deploy_parser *p = stream;
        size_t limit = MIN((size_t)DEPLOYFILE_LINE_MAX, num > 2 ? (size_t)num - 2 : 0);

        if (p->fatal || p->pos >= p->size)
                return NULL;

        const char *s = p->data + p->pos;
        const char *nl = memchr(s, '\n', p->size - p->pos);
        size_t n = nl ? (size_t)(nl - s) : p->size - p->pos;
        int text;

        p->pos += n + (nl ? 1 : 0);
        p->line++;

        if (n > limit) {
                parser_error(p, log_syntax(p->file, p->line, "line too long (more than %zu bytes)", limit));
                return NULL;
        }
        text = line_is_text(s, n);
        if (text == 0) {
                parser_error(p, log_syntax(p->file, p->line, "binary data, not a deployment file"));
                return NULL;
        }
        if (text < 0) {
                parser_error(p, log_syntax(p->file, p->line, "invalid UTF-8"));
                return NULL;
        }

        while (n > 0 && isspace((unsigned char)s[n - 1]))
                n--;
        while (n > 0 && isspace((unsigned char)*s)) {
                s++;
                n--;
        }
        if (!deploy_check_line(p, s, n))
                n = 0;
        memcpy(str, s, n);
        str[n] = '\n';
        str[n + 1] = '\0';
        return str;
}

static int deploy_handler(void *user, const char *section, const char *name, const char *value)
{
        struct deploy_parser *p = user;
        const struct deploy_key *k;
        size_t i;
        int r;

        k = deploy_key_find(section, name, &i);
        if (!k) {
                parser_error(p, log_syntax(p->file, p->line, "unknown key '%s' in section [%s]", name, section));
                return 1;
        }
        p->n_assignments++;
        /* An empty assignment restores the default, as in systemd. */
        r = k->parse(p, k, p->line, isempty_str(value) && k->def ? k->def : value, (uint8_t *)p->d + k->offset);
        if (r < 0) {
                parser_error(p, r);
                return r == -EBADMSG;
        }
        p->d->key_lines[i] = isempty_str(value) ? 0 : p->line;
        return 1;
}

unsigned deployfile_slots(const struct deployfile *d)
{
        return d->count + d->max_surge;
}

uint16_t deployfile_host_port(const struct deployfile *d, size_t i, unsigned slot)
{
        if (i >= d->n_ports || (unsigned)d->ports[i].host_base + slot > 65535)
                return 0;
        return (uint16_t)(d->ports[i].host_base + slot);
}

uint16_t deployfile_host_port_for(const struct deployfile *d, uint16_t guest, unsigned slot)
{
        for (size_t i = 0; i < d->n_ports; i++)
                if (d->ports[i].guest == guest)
                        return deployfile_host_port(d, i, slot);
        return 0;
}

/* Rules between keys, all checked, each reported at the line of the key
 * that breaks it (or the file alone for a key that is missing). */
static int deployfile_verify(struct deployfile *d)
{
        unsigned slots = deployfile_slots(d);
        int r = 0;

        if (!d->name)
                r = log_syntax(d->path, 0, "missing required key Name= in [Deployment]");
        if (!d->image)
                r = log_syntax(d->path, 0, "missing required key Image= in [Deployment]");

        if (d->max_unavailable >= d->count)
                r = log_syntax(d->path, deployfile_key_line(d, "Deployment", "MaxUnavailable"),
                               "MaxUnavailable=%u must be less than Count=%u: at least one instance keeps serving "
                               "during a rollout",
                               d->max_unavailable, d->count);
        else if (d->max_surge + d->max_unavailable == 0)
                r = log_syntax(d->path, deployfile_key_line(d, "Deployment", "MaxSurge"),
                               "MaxSurge=0 with MaxUnavailable=0 leaves a rollout no way to replace an instance, "
                               "set MaxSurge=1 or more");
        if (d->max_surge > d->count)
                r = log_syntax(d->path, deployfile_key_line(d, "Deployment", "MaxSurge"),
                               "MaxSurge=%u must be at most Count=%u", d->max_surge, d->count);

        for (size_t i = 0; i < d->n_ports; i++) {
                unsigned last = (unsigned)d->ports[i].host_base + slots - 1;

                if (last > 65535) {
                        r = log_syntax(d->path, d->ports[i].line,
                                       "Ports= %u:%u: %u slots (Count+MaxSurge) need host ports up to %u, beyond 65535",
                                       d->ports[i].guest, d->ports[i].host_base, slots, last);
                        continue;
                }
                for (size_t j = 0; j < i; j++) {
                        unsigned a = d->ports[j].host_base, b = d->ports[i].host_base;

                        if (a < b + slots && b < a + slots) {
                                r = log_syntax(d->path, d->ports[i].line,
                                               "Ports= %u:%u overlaps %u:%u: each pair takes %u host ports "
                                               "(Count+MaxSurge)",
                                               d->ports[i].guest, b, d->ports[j].guest, a, slots);
                                break;
                        }
                }
        }

        if (d->health == DEPLOY_HEALTH_HTTP || d->health == DEPLOY_HEALTH_TCP) {
                const char *key = d->health == DEPLOY_HEALTH_HTTP ? "HTTP" : "TCP";
                bool found = false;

                for (size_t i = 0; i < d->n_ports; i++)
                        if (d->ports[i].guest == d->health_port)
                                found = true;
                if (!found)
                        r = log_syntax(d->path, deployfile_key_line(d, "Health", key),
                                       "%s= checks guest port %u, which Ports= does not forward", key, d->health_port);
        }
        if (deployfile_key_line(d, "Health", "HTTP") > 0 && deployfile_key_line(d, "Health", "TCP") > 0)
                r = log_syntax(d->path,
                               MAX(deployfile_key_line(d, "Health", "HTTP"), deployfile_key_line(d, "Health", "TCP")),
                               "HTTP= and TCP= both set, choose one");
        return r;
}

static struct deployfile *deployfile_new(void)
{
        struct deployfile *d = calloc(1, sizeof(*d));

        if (!d)
                return NULL;
        d->key_lines = calloc(ELEMENTSOF(deploy_keys), sizeof(*d->key_lines));
        if (!d->key_lines)
                return deployfile_free(d);
        return d;
}

int deployfile_load_buffer(const char *name, const char *data, size_t size, struct deployfile **ret)
{
        _cleanup_(deployfile_freep) struct deployfile *d = NULL;
        struct deploy_parser p;
        bool saved_multiline = ini_allow_multiline, saved_inline = ini_allow_inline_comments;
        int saved_max_line = ini_max_line;
        int r;

        if (size > DEPLOYFILE_SIZE_MAX)
                return log_syntax(name, 0, "larger than 1 MiB, not a deployment file");

        d = deployfile_new();
        if (!d)
                return log_oom();
        d->path = strdup(name);
        if (!d->path)
                return log_oom();
        sha256_buffer(data, size, d->digest);

        p = (struct deploy_parser){ .d = d, .file = name, .data = data, .size = size };
        if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
                p.pos = 3;

        for (size_t i = 0; i < ELEMENTSOF(deploy_keys); i++) {
                const struct deploy_key *k = &deploy_keys[i];
                if (k->def) {
                        r = k->parse(&p, k, 0, k->def, (uint8_t *)d + k->offset);
                        if (r < 0)
                                return r;
                }
        }

        ini_allow_multiline = false;
        ini_allow_inline_comments = false;
        ini_max_line = (int)DEPLOYFILE_LINE_MAX + 3;
        r = ini_parse_stream(deploy_reader, &p, deploy_handler, &p);
        ini_allow_multiline = saved_multiline;
        ini_allow_inline_comments = saved_inline;
        ini_max_line = saved_max_line;

        if (p.r < 0)
                return p.r;
        if (r != 0)
                return log_syntax(name, r > 0 ? (unsigned)r : 0, "syntax error");
        if (p.n_assignments == 0)
                return log_syntax(name, 0, "no settings, not a deployment file (expected a [Deployment] section)");

        r = deployfile_verify(d);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

int deployfile_load(const char *path, struct deployfile **ret)
{
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r;

        r = read_full_file(path, DEPLOYFILE_SIZE_MAX, &data, &size);
        if (r == -EFBIG)
                return log_syntax(path, 0, "larger than 1 MiB, not a deployment file");
        if (r < 0) {
                log_error_errno(r, "cannot read deployment file '%s': %m", path);
                /* a file that is not there is bad input, like a bad one */
                return r == -ENOMEM ? r : -EBADMSG;
        }
        return deployfile_load_buffer(path, data, size, ret);
}

static bool port_skipped(uint16_t port, const uint16_t *skip, size_t n_skip)
{
        for (size_t i = 0; i < n_skip; i++)
                if (skip && skip[i] == port)
                        return true;
        return false;
}

int deployfile_check_ports_free(const struct deployfile *d, const uint16_t *skip, size_t n_skip)
{
        unsigned slots = deployfile_slots(d);

        for (size_t i = 0; i < d->n_ports; i++)
                for (unsigned slot = 0; slot < slots; slot++) {
                        uint16_t port = deployfile_host_port(d, i, slot);
                        struct sockaddr_in sa = {
                                .sin_family = AF_INET,
                                .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                        };
                        _cleanup_close_ int fd = -1;
                        int one = 1;

                        if (port == 0 || port_skipped(port, skip, n_skip))
                                continue;
                        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                        if (fd < 0)
                                return log_error_errno(-errno, "cannot create a socket to check ports: %m");
                        /* As QEMU's slirp does for hostfwd: a port in
                         * TIME_WAIT is free for it, so it is for us. */
                        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                                return log_error_errno(-errno, "cannot set SO_REUSEADDR: %m");
                        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                                if (errno == EADDRINUSE)
                                        return log_syntax(d->path, d->ports[i].line, "port %u is in use", port);
                                return log_syntax(d->path, d->ports[i].line, "port %u cannot be bound: %s", port,
                                                  strerror(errno));
                        }
                }
        return 0;
}

struct deployfile *deployfile_free(struct deployfile *d)
{
        if (!d)
                return NULL;
        free(d->path);
        free(d->name);
        free(d->image);
        free(d->ports);
        free(d->health_path);
        free(d->key_lines);
        return x_free(d);
}
