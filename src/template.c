/* Owns templates: reading a systemd-style INI file with inih, one table of
 * keys with a parser each, the defaults, and the verify pass that checks the
 * template's keys against each other. Line-level syntax (section headers,
 * Key=Value form, line length, binary data) is checked by our ini_reader, so
 * inih only ever sees lines we have accepted and every message names the
 * right line. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/parse-util.h"
#include "shared/strv.h"
#include "template.h"

/* A template is a short text file; anything bigger is a wrong path. */
#define TEMPLATE_SIZE_MAX (1024U * 1024U)
/* Longest line we accept, not counting the newline. */
#define TEMPLATE_LINE_MAX 4096U
#define NAME_MAX_LEN 128U
#define TEMPLATE_ERRORS_MAX 10U

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

#define SIZE_4K (UINT64_C(4) << 10)
#define SIZE_1M (UINT64_C(1) << 20)
/* Year 9999: tools that take SOURCE_DATE_EPOCH choke on more. */
#define SOURCE_DATE_EPOCH_MAX UINT64_C(253402300799)

static const char *const rootfs_source_table[] = {
        [ROOTFS_SOURCE_MMDEBSTRAP] = "mmdebstrap",
        [ROOTFS_SOURCE_TARBALL] = "tarball",
        [ROOTFS_SOURCE_DIRECTORY] = "directory",
        [ROOTFS_SOURCE_BUSYBOX] = "busybox",
};

static const char *const boot_mode_table[] = {
        [BOOT_MODE_BIOS] = "bios",
        [BOOT_MODE_UEFI] = "uefi",
        [BOOT_MODE_BOTH] = "both",
};

static const char *string_table_lookup(const char *const *table, size_t n, int i)
{
        if (i <= 0 || (size_t)i >= n)
                return NULL;
        return table[i];
}

static int string_table_find(const char *const *table, size_t n, const char *s)
{
        if (!s)
                return 0;
        for (size_t i = 1; i < n; i++)
                if (table[i] && streq(table[i], s))
                        return (int)i;
        return 0;
}

const char *rootfs_source_to_string(enum rootfs_source s)
{
        return string_table_lookup(rootfs_source_table, ELEMENTSOF(rootfs_source_table), (int)s);
}

enum rootfs_source rootfs_source_from_string(const char *s)
{
        return (enum rootfs_source)string_table_find(rootfs_source_table, ELEMENTSOF(rootfs_source_table), s);
}

const char *boot_mode_to_string(enum boot_mode m)
{
        return string_table_lookup(boot_mode_table, ELEMENTSOF(boot_mode_table), (int)m);
}

enum boot_mode boot_mode_from_string(const char *s)
{
        return (enum boot_mode)string_table_find(boot_mode_table, ELEMENTSOF(boot_mode_table), s);
}

/* mmdebstrap --variant values. */
static const char *const variant_choices[] = {
        "extract", "custom",    "essential",   "apt",      "required", "minbase",
        "buildd",  "important", "debootstrap", "standard", NULL,
};

/* Root file systems the fs stage can fill without mounting. */
static const char *const root_fstype_choices[] = { "ext4", "erofs", NULL };

static const char *const section_table[] = { "Image", "Rootfs", "Kernel", "Boot", "Disk", "Files" };

struct template_parser;
struct template_key;

typedef int (*template_parse_fn)(struct template_parser *p, const struct template_key *k, unsigned line,
                                 const char *value, void *field);

struct template_key {
        const char *section;
        const char *key;
        template_parse_fn parse;
        size_t offset;
        const char *def;            /* default, also what an empty assignment restores; NULL = zero */
        uint64_t min;               /* sizes: the smallest value accepted (0 is always accepted if min is 0) */
        const char *const *choices; /* string choices, NULL-terminated */
};

/* State shared by the reader and the handler. inih calls the reader once per
 * line and the handler for that line before it reads the next one, so "line"
 * is the line the handler is looking at. */
struct template_parser {
        struct template *t;
        const char *file; /* for messages */
        char *dir;        /* absolute directory relative paths are resolved against */

        const char *data;
        size_t size;
        size_t pos;
        unsigned line;

        bool in_section;   /* a section header has been seen */
        bool skip_section; /* inside a section we already complained about */
        bool fatal;        /* stop reading: binary data, over-long line, out of memory */
        unsigned n_assignments;
        unsigned n_errors;
        int r; /* first error */
};

static int parser_error(struct template_parser *p, int r)
{
        if (p->r == 0 || (r != -EBADMSG && p->r == -EBADMSG))
                p->r = r;
        if (r != -EBADMSG)
                p->fatal = true;
        /* Every bad line is reported, but a file that is not a template at
         * all (a wrong path) should not scroll the screen away. */
        else if (++p->n_errors >= TEMPLATE_ERRORS_MAX && !p->fatal) {
                log_syntax(p->file, 0, "too many errors, giving up");
                p->fatal = true;
        }
        return r;
}

static int log_invalid(struct template_parser *p, unsigned line, const struct template_key *k, const char *value,
                       const char *reason)
{
        return log_syntax(p->file, line, "invalid %s= '%s': %s", k->key, value, reason);
}

static int log_oom(void)
{
        return log_error_errno(-ENOMEM, "out of memory");
}

/* "2G", "128M", "4K" when exact, else bytes. */
static const char *format_size(uint64_t v, char buf[static 32])
{
        static const char suffix[] = "TGMK";

        for (unsigned i = 0; i < 4; i++) {
                unsigned shift = 10 * (4 - i);
                if (v != 0 && v % (UINT64_C(1) << shift) == 0) {
                        snprintf(buf, 32, "%" PRIu64 "%c", v >> shift, suffix[i]);
                        return buf;
                }
        }
        snprintf(buf, 32, "%" PRIu64, v);
        return buf;
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

static bool string_has_only(const char *s, const char *extra)
{
        for (; *s; s++)
                if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || strchr(extra, *s)))
                        return false;
        return true;
}

/* Debian package names: [a-z0-9][a-z0-9+.-]+ (Debian policy 5.6.1). */
static bool package_name_is_valid(const char *s, size_t n)
{
        if (n < 2 || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || strchr("+.-", s[i])))
                        return false;
        return true;
}

/* A package as apt takes it: a name, optionally followed by ":ARCH",
 * "=VERSION" or "/RELEASE". */
static bool package_spec_is_valid(const char *s)
{
        size_t n = strcspn(s, ":=/");

        if (!package_name_is_valid(s, n))
                return false;
        if (!s[n])
                return true;
        if (!s[n + 1])
                return false;
        for (const char *c = s + n + 1; *c; c++)
                if (!(isalnum((unsigned char)*c) || strchr(".+~:=/_-", *c)))
                        return false;
        return true;
}

/* An absolute path without "." or ".." components. */
static bool path_is_normal_absolute(const char *s)
{
        if (s[0] != '/')
                return false;
        for (const char *c = s; *c;) {
                size_t n;

                c += strspn(c, "/");
                n = strcspn(c, "/");
                if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
                        return false;
                c += n;
        }
        return true;
}

/* Relative paths are resolved against the template's directory, so a
 * template and the files it names can move together. */
static int resolve_path(struct template_parser *p, const char *value, char **ret)
{
        char *s;

        while (value[0] == '.' && value[1] == '/')
                value += 2 + strspn(value + 2, "/");
        if (value[0] == '/')
                s = strdup(value);
        else if (asprintf(&s, "%s%s%s", p->dir, streq(p->dir, "/") ? "" : "/", value) < 0)
                s = NULL;
        if (!s)
                return log_oom();
        *ret = s;
        return 0;
}

static int parse_string(struct template_parser *p _unused_, const struct template_key *k _unused_,
                        unsigned line _unused_, const char *value, void *field)
{
        return set_string(field, value);
}

static int parse_name(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                      void *field)
{
        if (!isempty_str(value)) {
                if (!isalnum((unsigned char)value[0]) || !string_has_only(value, "._-"))
                        return log_invalid(
                                p, line, k, value,
                                "use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit");
                if (strlen(value) > NAME_MAX_LEN)
                        return log_invalid(p, line, k, value, "longer than 128 characters");
        }
        return set_string(field, value);
}

/* As os-release IMAGE_VERSION= allows. */
static int parse_version(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                         void *field)
{
        if (!isempty_str(value)) {
                if (!string_has_only(value, "._-"))
                        return log_invalid(p, line, k, value, "use lower-case letters, digits, '.', '_' and '-'");
                if (strlen(value) > NAME_MAX_LEN)
                        return log_invalid(p, line, k, value, "longer than 128 characters");
        }
        return set_string(field, value);
}

static int parse_architecture(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                              void *field)
{
        static const struct {
                const char *name;
                const char *canonical;
        } table[] = {
                { "x86-64", "x86-64" }, { "x86_64", "x86-64" }, { "amd64", "x86-64" },
                { "arm64", "arm64" },   { "aarch64", "arm64" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(value, table[i].name))
                        return set_string(field, table[i].canonical);
        return log_invalid(p, line, k, value, "expected x86-64 or arm64");
}

static int parse_source_date_epoch(struct template_parser *p, const struct template_key *k, unsigned line,
                                   const char *value, void *field)
{
        uint64_t v;
        int r;

        if (isempty_str(value)) {
                p->t->has_source_date_epoch = false;
                *(uint64_t *)field = 0;
                return 0;
        }
        r = parse_uint64(value, &v);
        if (r < 0 || v > SOURCE_DATE_EPOCH_MAX)
                return log_invalid(p, line, k, value, "expected seconds since 1970-01-01 UTC, at most 253402300799");
        p->t->has_source_date_epoch = true;
        *(uint64_t *)field = v;
        return 0;
}

static int parse_rootfs_source(struct template_parser *p, const struct template_key *k, unsigned line,
                               const char *value, void *field)
{
        enum rootfs_source s = ROOTFS_SOURCE_INVALID;

        if (!isempty_str(value)) {
                s = rootfs_source_from_string(value);
                if (s == ROOTFS_SOURCE_INVALID)
                        return log_invalid(p, line, k, value, "expected mmdebstrap, tarball, directory or busybox");
        }
        *(enum rootfs_source *)field = s;
        return 0;
}

static int parse_boot_mode(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                           void *field)
{
        enum boot_mode m = BOOT_MODE_INVALID;

        if (!isempty_str(value)) {
                m = boot_mode_from_string(value);
                if (m == BOOT_MODE_INVALID)
                        return log_invalid(p, line, k, value, "expected bios, uefi or both");
        }
        *(enum boot_mode *)field = m;
        return 0;
}

static int parse_choice(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                        void *field)
{
        char expected[256] = "expected ";

        if (isempty_str(value))
                return set_string(field, NULL);
        for (const char *const *c = k->choices; *c; c++)
                if (streq(*c, value))
                        return set_string(field, value);
        for (const char *const *c = k->choices; *c; c++) {
                if (c != k->choices)
                        strncat(expected, c[1] ? ", " : " or ", sizeof(expected) - strlen(expected) - 1);
                strncat(expected, *c, sizeof(expected) - strlen(expected) - 1);
        }
        return log_invalid(p, line, k, value, expected);
}

/* Debian and Ubuntu suite and codename spellings. */
static int parse_suite(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                       void *field)
{
        if (!isempty_str(value) && (!isalnum((unsigned char)value[0]) || !string_has_only(value, "._-")))
                return log_invalid(p, line, k, value, "expected a suite or codename such as bookworm or stable");
        return set_string(field, value);
}

/* Anything apt takes as a URI: scheme ":" rest, no white space. */
static int parse_mirror(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                        void *field)
{
        if (!isempty_str(value)) {
                size_t n = 0;

                if (!isalpha((unsigned char)value[0]))
                        n = SIZE_MAX;
                else
                        while (isalnum((unsigned char)value[n]) || (value[n] && strchr("+.-", value[n])))
                                n++;
                if (n == SIZE_MAX || value[n] != ':' || !value[n + 1] || strpbrk(value, " \t"))
                        return log_invalid(p, line, k, value, "expected a URL such as http://deb.debian.org/debian");
        }
        return set_string(field, value);
}

static int parse_local_path(struct template_parser *p, const struct template_key *k _unused_, unsigned line _unused_,
                            const char *value, void *field)
{
        char *s = NULL;
        int r;

        if (!isempty_str(value)) {
                r = resolve_path(p, value, &s);
                if (r < 0)
                        return r;
        }
        free(*(char **)field);
        *(char **)field = s;
        return 0;
}

static int parse_tree_path(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                           void *field)
{
        if (!isempty_str(value) && !path_is_normal_absolute(value))
                return log_invalid(p, line, k, value, "expected an absolute path inside the image without '.' or '..'");
        return set_string(field, value);
}

static int parse_packages(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                          void *field)
{
        char ***l = field;
        _cleanup_strv_free_ char **words = NULL;
        int r;

        if (isempty_str(value)) {
                *l = strv_free(*l);
                return 0;
        }
        r = strv_split_extend(&words, value, " \t,");
        if (r < 0)
                return log_oom();
        STRV_FOREACH (w, words)
                if (!package_spec_is_valid(*w))
                        return log_syntax(p->file, line, "invalid %s= '%s': '%s' is not a Debian package name", k->key,
                                          value, *w);
        STRV_FOREACH (w, words) {
                if (strv_contains(*l, *w))
                        continue;
                r = strv_extend(l, *w);
                if (r < 0)
                        return log_oom();
        }
        return 0;
}

static int parse_package(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                         void *field)
{
        if (!isempty_str(value) && !package_name_is_valid(value, strlen(value)))
                return log_invalid(p, line, k, value, "not a Debian package name");
        return set_string(field, value);
}

/* The root comes from the partition table; a second root= would fight it. */
static int parse_cmdline(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                         void *field)
{
        for (const char *c = value; *c;) {
                size_t n;

                c += strspn(c, " \t");
                n = strcspn(c, " \t");
                if (n >= 5 && strncmp(c, "root=", 5) == 0)
                        return log_invalid(p, line, k, value, "must not set root=, the build adds it");
                c += n;
        }
        return set_string(field, value);
}

static int parse_seconds(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                         void *field)
{
        uint64_t v = 0;

        if (!isempty_str(value) && (parse_uint64(value, &v) < 0 || v > UINT_MAX))
                return log_invalid(p, line, k, value, "expected a number of seconds");
        *(unsigned *)field = (unsigned)v;
        return 0;
}

/* Sizes are multiples of 4 KiB: the file system block size, so a size never
 * leaves a partial block for the layout to round. */
static int parse_disk_size(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                           void *field)
{
        char buf[32], reason[96];
        uint64_t v = 0;
        int r;

        if (!isempty_str(value)) {
                r = parse_size(value, 1, &v);
                if (r == -ERANGE)
                        return log_invalid(p, line, k, value, "too large");
                if (r < 0)
                        return log_invalid(p, line, k, value, "expected a size such as 512M or 2G");
                if (v % SIZE_4K != 0)
                        return log_invalid(p, line, k, value, "not a multiple of 4K");
                if (v < k->min && !(v == 0 && k->min == 0)) {
                        snprintf(reason, sizeof(reason), "must be at least %s", format_size(k->min, buf));
                        return log_invalid(p, line, k, value, reason);
                }
        }
        *(uint64_t *)field = v;
        return 0;
}

static int parse_overlay(struct template_parser *p, const struct template_key *k, unsigned line, const char *value,
                         void *field _unused_)
{
        struct template *t = p->t;
        _cleanup_free_ char *source = NULL, *destination = NULL;
        const char *colon;
        struct template_overlay *o;
        int r;

        if (isempty_str(value)) {
                for (size_t i = 0; i < t->n_overlays; i++) {
                        free(t->overlays[i].source);
                        free(t->overlays[i].destination);
                }
                t->overlays = x_free(t->overlays);
                t->n_overlays = 0;
                return 0;
        }
        colon = strchr(value, ':');
        if (!colon || colon == value || !colon[1])
                return log_invalid(p, line, k, value, "expected SOURCE:DESTINATION");
        if (!path_is_normal_absolute(colon + 1))
                return log_invalid(p, line, k, value,
                                   "the destination must be an absolute path inside the image without '.' or '..'");
        source = strndup(value, (size_t)(colon - value));
        destination = strdup(colon + 1);
        if (!source || !destination)
                return log_oom();
        o = reallocarray(t->overlays, t->n_overlays + 1, sizeof(*o));
        if (!o)
                return log_oom();
        t->overlays = o;
        o = &t->overlays[t->n_overlays];
        r = resolve_path(p, source, &o->source);
        if (r < 0)
                return r;
        o->destination = TAKE_PTR(destination);
        o->line = line;
        t->n_overlays++;
        return 0;
}

#define F(field) offsetof(struct template, field)

/* Every key a template may set. key_lines is indexed by position here. */
/* clang-format off */
static const struct template_key template_keys[] = {
        { "Image",  "Name",            parse_name,              F(name)              },
        { "Image",  "Version",         parse_version,           F(version)           },
        { "Image",  "Architecture",    parse_architecture,      F(architecture),     .def = "x86-64" },
        { "Image",  "Description",     parse_string,            F(description)       },
        { "Image",  "SourceDateEpoch", parse_source_date_epoch, F(source_date_epoch) },
        { "Rootfs", "Source",          parse_rootfs_source,     F(source)            },
        { "Rootfs", "Suite",           parse_suite,             F(suite)             },
        { "Rootfs", "Variant",         parse_choice,            F(variant),          .choices = variant_choices },
        { "Rootfs", "Mirror",          parse_mirror,            F(mirror)            },
        { "Rootfs", "Path",            parse_local_path,        F(source_path)       },
        { "Rootfs", "Packages",        parse_packages,          F(packages)          },
        { "Kernel", "Package",         parse_package,           F(kernel_package)    },
        { "Kernel", "Kernel",          parse_tree_path,         F(kernel)            },
        { "Kernel", "Initrd",          parse_tree_path,         F(initrd)            },
        { "Kernel", "CommandLine",     parse_cmdline,           F(cmdline)           },
        { "Boot",   "Mode",            parse_boot_mode,         F(boot_mode)         },
        { "Boot",   "Timeout",         parse_seconds,           F(timeout),          .def = "0" },
        { "Disk",   "Size",            parse_disk_size,         F(disk_size),        .def = "2G",  .min = 16 * SIZE_1M },
        { "Disk",   "RootFilesystem",  parse_choice,            F(root_fstype),      .def = "ext4", .choices = root_fstype_choices },
        /* FAT32 needs about 33 MiB with 512-byte sectors; 128M holds
         * systemd-boot and one Debian kernel with its initrd. */
        { "Disk",   "EspSize",         parse_disk_size,         F(esp_size),         .def = "128M", .min = 33 * SIZE_1M },
        { "Disk",   "BiosBootSize",    parse_disk_size,         F(bios_boot_size),   .def = "1M",  .min = 64 * 1024 },
        /* 0 = grow to fill the disk; a fixed root is checked in verify. */
        { "Disk",   "RootSize",        parse_disk_size,         F(root_size),        .def = "0"   },
        { "Files",  "Overlay",         parse_overlay,           F(overlays)          },
};
/* clang-format on */

#undef F

static const struct template_key *template_key_find(const char *section, const char *key, size_t *ret_index)
{
        for (size_t i = 0; i < ELEMENTSOF(template_keys); i++)
                if (streq(template_keys[i].section, section) && streq(template_keys[i].key, key)) {
                        if (ret_index)
                                *ret_index = i;
                        return &template_keys[i];
                }
        return NULL;
}

unsigned template_key_line(const struct template *t, const char *section, const char *key)
{
        size_t i;

        if (!t || !t->key_lines || !section || !key || !template_key_find(section, key, &i))
                return 0;
        return t->key_lines[i];
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

/* Checks one line (without its newline, already stripped) and says whether
 * inih should see it. */
static bool template_check_line(struct template_parser *p, const char *s, size_t n)
{
        const char *eq;
        size_t k;

        if (n == 0 || s[0] == '#' || s[0] == ';')
                return false;

        if (s[0] == '[') {
                const char *close = memchr(s, ']', n);

                /* Keys below a rejected header belong to it, not to the
                 * section before, and are not reported one by one. */
                p->in_section = true;
                p->skip_section = true;
                if (!close)
                        parser_error(p, log_syntax(p->file, p->line, "unterminated section header '%.*s'", (int)n, s));
                else if (close != s + n - 1 || n < 3 || memchr(s + 1, '[', n - 2))
                        parser_error(p, log_syntax(p->file, p->line, "invalid section header '%.*s'", (int)n, s));
                else if (!section_is_known(s + 1, n - 2))
                        parser_error(p, log_syntax(p->file, p->line, "unknown section %.*s", (int)n, s));
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
                parser_error(p, log_syntax(p->file, p->line,
                                           "key '%.*s' outside of any section, expected a [Section] header first",
                                           (int)k, s));
                return false;
        }
        /* Keys of a section we rejected were reported with it. */
        return !p->skip_section;
}

static char *template_reader(char *str, int num, void *stream)
{
        struct template_parser *p = stream;
        size_t limit = MIN((size_t)TEMPLATE_LINE_MAX, num > 2 ? (size_t)num - 2 : 0);

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
                parser_error(p, log_syntax(p->file, p->line, "binary data, not a template"));
                return NULL;
        }
        if (text < 0) {
                parser_error(p, log_syntax(p->file, p->line, "invalid UTF-8"));
                return NULL;
        }

        /* Strip as inih would, so our view of the line matches its view. */
        while (n > 0 && isspace((unsigned char)s[n - 1]))
                n--;
        while (n > 0 && isspace((unsigned char)*s)) {
                s++;
                n--;
        }
        if (!template_check_line(p, s, n))
                n = 0;
        memcpy(str, s, n);
        str[n] = '\n';
        str[n + 1] = '\0';
        return str;
}

static int template_handler(void *user, const char *section, const char *name, const char *value)
{
        struct template_parser *p = user;
        const struct template_key *k;
        size_t i;
        int r;

        k = template_key_find(section, name, &i);
        if (!k) {
                parser_error(p, log_syntax(p->file, p->line, "unknown key '%s' in section [%s]", name, section));
                return 1;
        }
        p->n_assignments++;
        /* An empty assignment restores the default, as in systemd. */
        r = k->parse(p, k, p->line, isempty_str(value) && k->def ? k->def : value, (uint8_t *)p->t + k->offset);
        if (r < 0) {
                parser_error(p, r);
                return r == -EBADMSG;
        }
        p->t->key_lines[i] = isempty_str(value) ? 0 : p->line;
        return 1;
}

static const char *package_basename(const char *spec, char *buf, size_t size)
{
        size_t n = strcspn(spec, ":=/");

        snprintf(buf, size, "%.*s", (int)n, spec);
        return buf;
}

static int log_not_applicable(const struct template *t, const char *section, const char *key, const char *applies)
{
        return log_syntax(t->path, template_key_line(t, section, key), "%s= does not apply to Source=%s, only to %s",
                          key, rootfs_source_to_string(t->source), applies);
}

/* Rules between keys, all checked, each reported at the line of the key
 * that breaks it (or the file alone for a key that is missing). */
static int template_verify(struct template *t)
{
        unsigned source_line = template_key_line(t, "Rootfs", "Source");
        bool debian = t->source == ROOTFS_SOURCE_MMDEBSTRAP || t->source == ROOTFS_SOURCE_BUSYBOX;
        bool local = t->source == ROOTFS_SOURCE_TARBALL || t->source == ROOTFS_SOURCE_DIRECTORY;
        int r = 0;

        if (!t->name)
                r = log_syntax(t->path, 0, "missing required key Name= in [Image]");
        if (t->source == ROOTFS_SOURCE_INVALID)
                r = log_syntax(t->path, 0, "missing required key Source= in [Rootfs]");

        if (t->source == ROOTFS_SOURCE_MMDEBSTRAP && !t->suite)
                r = log_syntax(t->path, source_line, "Source=mmdebstrap needs Suite= in [Rootfs], e.g. Suite=bookworm");
        if (local && !t->source_path)
                r = log_syntax(t->path, source_line, "Source=%s needs Path= in [Rootfs]",
                               rootfs_source_to_string(t->source));
        if (t->source == ROOTFS_SOURCE_BUSYBOX && !t->kernel_package)
                r = log_syntax(t->path, source_line,
                               "Source=busybox needs Package= in [Kernel]: the kernel and initrd come from that Debian "
                               "package");

        if (t->source != ROOTFS_SOURCE_INVALID) {
                if (t->variant && t->source != ROOTFS_SOURCE_MMDEBSTRAP)
                        r = log_not_applicable(t, "Rootfs", "Variant", "mmdebstrap");
                if (t->source_path && !local)
                        r = log_not_applicable(t, "Rootfs", "Path", "tarball and directory");
                if (!debian) {
                        if (t->suite)
                                r = log_not_applicable(t, "Rootfs", "Suite", "mmdebstrap and busybox");
                        if (t->mirror)
                                r = log_not_applicable(t, "Rootfs", "Mirror", "mmdebstrap and busybox");
                        if (t->packages)
                                r = log_not_applicable(t, "Rootfs", "Packages", "mmdebstrap and busybox");
                        if (t->kernel_package)
                                r = log_syntax(t->path, template_key_line(t, "Kernel", "Package"),
                                               "Package= does not apply to Source=%s: the kernel comes from the tree",
                                               rootfs_source_to_string(t->source));
                }
        }
        if (t->source == ROOTFS_SOURCE_MMDEBSTRAP && !t->variant) {
                t->variant = strdup("minbase");
                if (!t->variant)
                        return log_oom();
        }
        /* An mmdebstrap tree gets its initrd from the kernel package's
         * postinst, so the package must be installed, not fetched aside. */
        if (t->source == ROOTFS_SOURCE_MMDEBSTRAP && t->kernel_package) {
                bool found = false;
                char buf[256];

                STRV_FOREACH (pkg, t->packages)
                        if (streq(package_basename(*pkg, buf, sizeof(buf)), t->kernel_package))
                                found = true;
                if (!found)
                        r = log_syntax(t->path, template_key_line(t, "Kernel", "Package"),
                                       "Package=%s is not in [Rootfs] Packages=: with Source=mmdebstrap the kernel is "
                                       "installed in the tree",
                                       t->kernel_package);
        }

        /* BIOS boot exists on x86 only. */
        if (streq(t->architecture, "arm64") && (t->boot_mode == BOOT_MODE_BIOS || t->boot_mode == BOOT_MODE_BOTH))
                r = log_syntax(t->path, template_key_line(t, "Boot", "Mode"),
                               "Mode=%s needs Architecture=x86-64: arm64 boots with UEFI only",
                               boot_mode_to_string(t->boot_mode));
        if (t->boot_mode == BOOT_MODE_INVALID)
                t->boot_mode = streq(t->architecture, "arm64") ? BOOT_MODE_UEFI : BOOT_MODE_BOTH;

        if (t->root_size != 0 && t->root_size < 16 * SIZE_1M)
                r = log_syntax(t->path, template_key_line(t, "Disk", "RootSize"),
                               "RootSize= must be 0 (grow to fill the disk) or at least 16M");
        else if (t->root_size >= t->disk_size) {
                char a[32], b[32];

                r = log_syntax(t->path, template_key_line(t, "Disk", "RootSize"),
                               "RootSize=%s does not fit in Size=%s: the disk also holds the partition table and the "
                               "boot partitions",
                               format_size(t->root_size, a), format_size(t->disk_size, b));
        }
        return r;
}

static struct template *template_new(void)
{
        struct template *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->key_lines = calloc(ELEMENTSOF(template_keys), sizeof(*t->key_lines));
        if (!t->key_lines)
                return template_free(t);
        return t;
}

/* The template's directory as an absolute path. */
static int template_dir(const char *name, char **ret)
{
        _cleanup_free_ char *cwd = NULL;
        const char *slash = strrchr(name, '/');
        size_t n = slash ? (size_t)(slash - name) : 0;
        char *s;

        if (slash && slash == name) {
                s = strdup("/");
        } else if (name[0] == '/') {
                s = strndup(name, n);
        } else {
                cwd = getcwd(NULL, 0);
                if (!cwd)
                        return log_error_errno(-errno, "cannot get the current directory: %m");
                if (asprintf(&s, "%s%s%.*s", cwd, n > 0 ? "/" : "", (int)n, name) < 0)
                        s = NULL;
        }
        if (!s)
                return log_oom();
        *ret = s;
        return 0;
}

int template_load_buffer(const char *name, const char *data, size_t size, struct template **ret)
{
        _cleanup_(template_freep) struct template *t = NULL;
        _cleanup_free_ char *dir = NULL;
        struct template_parser p;
        bool saved_multiline = ini_allow_multiline, saved_inline = ini_allow_inline_comments;
        int saved_max_line = ini_max_line;
        int r;

        if (size > TEMPLATE_SIZE_MAX)
                return log_syntax(name, 0, "larger than 1 MiB, not a template");

        t = template_new();
        if (!t)
                return log_oom();
        t->path = strdup(name);
        if (!t->path)
                return log_oom();
        sha256_buffer(data, size, t->digest);
        r = template_dir(name, &dir);
        if (r < 0)
                return r;

        p = (struct template_parser){ .t = t, .file = name, .dir = dir, .data = data, .size = size };
        if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
                p.pos = 3;

        for (size_t i = 0; i < ELEMENTSOF(template_keys); i++) {
                const struct template_key *k = &template_keys[i];
                if (k->def) {
                        r = k->parse(&p, k, 0, k->def, (uint8_t *)t + k->offset);
                        if (r < 0)
                                return r;
                }
        }

        /* Debian's inih reads these at run time. Values are everything after
         * '=' as in systemd (no inline comments, no indented continuation
         * lines), and a line may be as long as our reader allows. */
        ini_allow_multiline = false;
        ini_allow_inline_comments = false;
        ini_max_line = (int)TEMPLATE_LINE_MAX + 3;
        r = ini_parse_stream(template_reader, &p, template_handler, &p);
        ini_allow_multiline = saved_multiline;
        ini_allow_inline_comments = saved_inline;
        ini_max_line = saved_max_line;

        if (p.r < 0)
                return p.r;
        if (r != 0)
                /* Our reader should have caught anything inih rejects. */
                return log_syntax(name, r > 0 ? (unsigned)r : 0, "syntax error");
        if (p.n_assignments == 0)
                return log_syntax(name, 0, "no settings, not a template (expected [Image] and [Rootfs] sections)");

        r = template_verify(t);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(t);
        return 0;
}

int template_load(const char *path, struct template **ret)
{
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r;

        r = read_full_file(path, TEMPLATE_SIZE_MAX, &data, &size);
        if (r == -EFBIG)
                return log_syntax(path, 0, "larger than 1 MiB, not a template");
        if (r < 0)
                return log_error_errno(r, "cannot read template '%s': %m", path);
        return template_load_buffer(path, data, size, ret);
}

struct template *template_free(struct template *t)
{
        if (!t)
                return NULL;
        free(t->path);
        free(t->name);
        free(t->version);
        free(t->architecture);
        free(t->description);
        free(t->suite);
        free(t->variant);
        free(t->mirror);
        free(t->source_path);
        strv_free(t->packages);
        free(t->kernel_package);
        free(t->kernel);
        free(t->initrd);
        free(t->cmdline);
        free(t->root_fstype);
        for (size_t i = 0; i < t->n_overlays; i++) {
                free(t->overlays[i].source);
                free(t->overlays[i].destination);
        }
        free(t->overlays);
        free(t->key_lines);
        return x_free(t);
}
