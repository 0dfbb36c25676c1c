/* Owns the kickstart parser: the line lexer, %include with its limits,
 * the %packages and %post sections, one option table per command, and the
 * derivation of password hashes. Everything it accepts lands in struct
 * kickstart as plain data; everything it cannot honour is an error (or a
 * warning where ignoring it changes nothing), never silently dropped. */
#include "config.h"

#include <crypt.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kickstart.h"
#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/parse-util.h"
#include "shared/strv.h"

/* Limits that keep hostile input cheap: a kickstart is a page or two of
 * text, so anything near these is a mistake or an attack. The size budget
 * covers the main file and every include together, which also bounds what
 * repeated sibling includes can cost. */
#define KS_LINE_MAX ((size_t)64 * 1024)
#define KS_SIZE_MAX ((size_t)4 * 1024 * 1024)
#define KS_INCLUDE_DEPTH_MAX 16
#define KS_FILES_MAX 256
#define KS_MIB (UINT64_C(1) << 20)
#define KS_ID_MAX UINT64_C(4294967294) /* (uid_t) -1 means "no change" to the kernel */

/* ---- small helpers ---- */

static bool isempty(const char *s)
{
        return !s || !*s;
}

static bool startswith(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Free a string that may have held a password. */
static char *erase_free(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
        return NULL;
}

static void erase_freep(char **s)
{
        erase_free(*s);
}

static char **strv_free_erase(char **l)
{
        for (char **i = l; i && *i; i++)
                erase_free(*i);
        free(l);
        return NULL;
}

static void strv_free_erasep(char ***l)
{
        strv_free_erase(*l);
}

#define _cleanup_erase_ _cleanup_(erase_freep)
#define _cleanup_strv_erase_ _cleanup_(strv_free_erasep)

static void md_ctx_freep(EVP_MD_CTX **c)
{
        EVP_MD_CTX_free(*c);
}

static bool in_charset(const char *s, const char *extra)
{
        for (; *s; s++) {
                char c = *s;
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                        continue;
                if (!strchr(extra, c))
                        return false;
        }
        return true;
}

static bool valid_user_name(const char *s)
{
        size_t n = strlen(s);

        /* What useradd and adduser accept by default; anything else would
         * need --force-badname and breaks tools that parse /etc/passwd. */
        if (n == 0 || n > 32)
                return false;
        if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
                return false;
        if (s[n - 1] == '$')
                n--;
        for (size_t i = 0; i < n; i++)
                if (!in_charset((char[]){ s[i], 0 }, "_.-"))
                        return false;
        return true;
}

static bool valid_hostname(const char *s)
{
        size_t label = 0, n = strlen(s);

        if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || !in_charset(s, ".-"))
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (s[i] == '.' || s[i] == '\0') {
                        if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                                return false;
                        label = 0;
                } else
                        label++;
        }
        return true;
}

static bool valid_abs_path(const char *s)
{
        /* Paths end up in /etc/passwd or on an exec line: no ':' and no
         * ".." so they cannot escape what they name. */
        if (s[0] != '/' || strchr(s, ':'))
                return false;
        for (const char *p = s; (p = strstr(p, "..")); p += 2)
                if (p[-1] == '/' && (p[2] == '/' || p[2] == '\0'))
                        return false;
        return true;
}

/* ---- the lexer ---- */

/* ret_spans (optional): where each word's raw text (quotes and all) is in
 * line, as [start, end) pairs of offsets, two per word. */
static int split_words(const char *line, char *word, char ***ret, size_t **ret_spans, const char **ret_error)
{
        _cleanup_strv_erase_ char **l = NULL;
        _cleanup_free_ size_t *spans = NULL;
        size_t n = 0, n_words = 0, start = 0;
        bool in_word = false;
        int r;

        for (const char *p = line;;) {
                char c = *p;

                if (c == '\0' || c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
                        if (in_word) {
                                r = strv_consume(&l, strndup(word, n));
                                if (r < 0)
                                        return r;
                                if (ret_spans) {
                                        size_t *m = reallocarray(spans, 2 * (n_words + 1), sizeof(*m));

                                        if (!m)
                                                return -ENOMEM;
                                        spans = m;
                                        spans[2 * n_words] = start;
                                        spans[2 * n_words + 1] = (size_t)(p - line);
                                }
                                n_words++;
                                in_word = false;
                                n = 0;
                        }
                        if (c == '\0')
                                break;
                        p++;
                        continue;
                }
                if (c == '#' && !in_word)
                        break;
                if (!in_word)
                        start = (size_t)(p - line);
                in_word = true;
                if (c == '\'') {
                        const char *e = strchr(p + 1, '\'');
                        if (!e) {
                                *ret_error = "unterminated quote";
                                return -EBADMSG;
                        }
                        memcpy(word + n, p + 1, (size_t)(e - p - 1));
                        n += (size_t)(e - p - 1);
                        p = e + 1;
                } else if (c == '"') {
                        for (p++;; p++) {
                                if (*p == '\0') {
                                        *ret_error = "unterminated quote";
                                        return -EBADMSG;
                                }
                                if (*p == '"')
                                        break;
                                if (*p == '\\' && p[1] != '\0' && strchr("\\\"$`", p[1]))
                                        p++;
                                word[n++] = *p;
                        }
                        p++;
                } else if (c == '\\') {
                        if (p[1] == '\0') {
                                *ret_error = "backslash at end of line";
                                return -EBADMSG;
                        }
                        word[n++] = p[1];
                        p += 2;
                } else {
                        word[n++] = c;
                        p++;
                }
        }
        if (!l) {
                l = calloc(1, sizeof(char *));
                if (!l)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        if (ret_spans)
                *ret_spans = TAKE_PTR(spans);
        return 0;
}

static int split_words_spans(const char *line, char ***ret, size_t **ret_spans, const char **ret_error)
{
        const char *error = NULL;
        size_t size = strlen(line) + 1;
        char *word;
        int r;

        /* No word is longer than the line it comes from. */
        word = malloc(size);
        if (!word)
                return -ENOMEM;
        r = split_words(line, word, ret, ret_spans, &error);
        explicit_bzero(word, size);
        free(word);
        if (ret_error)
                *ret_error = error;
        return r;
}

int ks_split_words(const char *line, char ***ret, const char **ret_error)
{
        return split_words_spans(line, ret, NULL, ret_error);
}

/* ---- the parser state ---- */

/* A file as read, kept until the digest is taken, and the secrets found in
 * it: [start, end) byte ranges the digest sees as KS_SECRET_MARKER. */
struct ks_read_file {
        char *data;
        size_t size;
        size_t *secrets; /* start, end pairs, in increasing order */
        size_t n_secrets;
};

struct ks_parser {
        struct kickstart *ks;
        const uint8_t *salt_seed;
        size_t total_size;
        size_t n_files;
        struct ks_read_file *read; /* n_files of them, in the order read */
        size_t line_offset;        /* of the line being parsed, in its file */

        /* The files being read, outermost first: their canonical paths to
         * find cycles, their names for the message. */
        char *stack_ids[KS_INCLUDE_DEPTH_MAX + 1];
        const char *stack_names[KS_INCLUDE_DEPTH_MAX + 1];
        size_t stack_files[KS_INCLUDE_DEPTH_MAX + 1]; /* their index in read[] */
        unsigned depth;

        bool has_content;
        struct ks_loc first[32]; /* by index in ks_commands[], for singletons */
        struct ks_loc autopart_loc;
        struct ks_loc hostname_loc, device_loc, bootproto_loc;
        struct ks_loc services_loc;
};

static int ks_oom(void)
{
        return -ENOMEM;
}

/* ---- option tables ---- */

struct ks_option;
typedef int (*ks_option_fn)(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value,
                            void *data);

struct ks_option {
        const char *name; /* "--size" */
        bool has_value;   /* "--size 5" / "--size=5" vs a flag */
        ks_option_fn parse;
        size_t offset;   /* of the field in the command's argument struct */
        int ltype;       /* the value opt_enum stores */
        uint64_t max;    /* opt_uint's upper bound */
        const char *str; /* why an option is refused or ignored; opt_const's string */
};

#define FIELD(data, o, type) ((type *)((char *)(data) + (o)->offset))

/* clang-format off */
#define OPT_FLAG(n, fn, type, field) { .name = n, .parse = fn, .offset = offsetof(type, field) }
#define OPT_VALUE(n, fn, type, field) \
        { .name = n, .has_value = true, .parse = fn, .offset = offsetof(type, field) }
#define OPT_UINT(n, type, field, m) \
        { .name = n, .has_value = true, .parse = opt_uint, .offset = offsetof(type, field), .max = (m) }
#define OPT_ENUM(n, type, field, v) \
        { .name = n, .parse = opt_enum, .offset = offsetof(type, field), .ltype = (v) }
#define OPT_CONST(n, type, field, s) \
        { .name = n, .parse = opt_const, .offset = offsetof(type, field), .str = (s) }
#define OPT_REFUSE(n, v, why) { .name = n, .has_value = (v), .parse = opt_refuse, .str = (why) }
#define OPT_WARN(n, v, why) { .name = n, .has_value = (v), .parse = opt_warn, .str = (why) }
/* clang-format on */

static int opt_true(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value, void *data)
{
        *FIELD(data, o, bool) = true;
        return 0;
}

static int opt_enum(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value, void *data)
{
        int *f = FIELD(data, o, int);

        /* -1 is "not given" in every argument struct that uses this. */
        if (*f != -1 && *f != o->ltype)
                return log_syntax(loc->file, loc->line, "option '%s' of '%s' conflicts with an earlier option", o->name,
                                  cmd);
        *f = o->ltype;
        return 0;
}

static int opt_string(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value,
                      void *data)
{
        char **f = FIELD(data, o, char *);
        char *s;

        if (isempty(value))
                return log_syntax(loc->file, loc->line, "option '%s' of '%s' needs a non-empty value", o->name, cmd);
        s = strdup(value);
        if (!s)
                return ks_oom();
        erase_free(*f);
        *f = s;
        return 0;
}

static int opt_list(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value, void *data)
{
        char ***f = FIELD(data, o, char **);
        size_t n = strv_length(*f);
        int r;

        r = strv_split_extend(f, value, ",");
        if (r < 0)
                return r;
        if (strv_length(*f) == n)
                return log_syntax(loc->file, loc->line, "option '%s' of '%s' needs a non-empty list", o->name, cmd);
        return 0;
}

static int opt_const(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value,
                     void *data)
{
        return strv_extend(FIELD(data, o, char **), o->str);
}

static int opt_mib(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value, void *data)
{
        uint64_t v;
        int r;

        /* pykickstart takes a whole number of MiB, no units. */
        r = parse_uint64(value, &v);
        if (r == -ERANGE || (r == 0 && v > UINT64_MAX / KS_MIB))
                return log_syntax(loc->file, loc->line, "value '%s' of option '%s' of '%s' is too large", value,
                                  o->name, cmd);
        if (r < 0)
                return log_syntax(loc->file, loc->line,
                                  "invalid value '%s' for option '%s' of '%s': expected a whole number of MiB", value,
                                  o->name, cmd);
        if (v == 0)
                return log_syntax(loc->file, loc->line, "option '%s' of '%s' must be greater than zero", o->name, cmd);
        *FIELD(data, o, uint64_t) = v * KS_MIB;
        return 0;
}

static int opt_uint(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value, void *data)
{
        uint64_t v;
        int r;

        r = parse_uint64(value, &v);
        if (r == -ERANGE || (r == 0 && v > o->max))
                return log_syntax(loc->file, loc->line, "value '%s' of option '%s' of '%s' is too large", value,
                                  o->name, cmd);
        if (r < 0)
                return log_syntax(loc->file, loc->line,
                                  "invalid value '%s' for option '%s' of '%s': expected a whole number", value, o->name,
                                  cmd);
        *FIELD(data, o, uint64_t) = v;
        return 0;
}

static int opt_refuse(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value,
                      void *data)
{
        return log_syntax(loc->file, loc->line, "option '%s' of '%s' is not supported: %s", o->name, cmd, o->str);
}

static int opt_warn(const struct ks_loc *loc, const char *cmd, const struct ks_option *o, const char *value, void *data)
{
        return log_syntax_warning(loc->file, loc->line, "ignoring option '%s' of '%s': %s", o->name, cmd, o->str);
}

/* Walks argv[1…]: options through the table (both "--opt value" and
 * "--opt=value"), the rest into args[], at most max_args of them. */
static int ks_parse_args(const struct ks_loc *loc, char **argv, const struct ks_option *table, size_t n_table,
                         void *data, const char **args, size_t max_args, size_t *ret_n_args)
{
        const char *cmd = argv[0];
        size_t n_args = 0;
        int r;

        for (size_t i = 1; argv[i]; i++) {
                const char *w = argv[i], *eq, *value = NULL;
                const struct ks_option *o = NULL;
                size_t len;

                if (w[0] != '-' || w[1] == '\0') {
                        if (n_args >= max_args)
                                return log_syntax(loc->file, loc->line, "unexpected argument '%s' for '%s'", w, cmd);
                        args[n_args++] = w;
                        continue;
                }
                eq = strchr(w, '=');
                len = eq ? (size_t)(eq - w) : strlen(w);
                for (size_t j = 0; j < n_table; j++)
                        if (strlen(table[j].name) == len && strncmp(table[j].name, w, len) == 0) {
                                o = &table[j];
                                break;
                        }
                if (!o)
                        return log_syntax(loc->file, loc->line, "unknown option '%.*s' for '%s'", (int)len, w, cmd);
                if (o->has_value) {
                        if (eq)
                                value = eq + 1;
                        else if (argv[i + 1] && !startswith(argv[i + 1], "--"))
                                value = argv[++i];
                        else
                                return log_syntax(loc->file, loc->line, "missing value for option '%s' of '%s'",
                                                  o->name, cmd);
                } else if (eq)
                        return log_syntax(loc->file, loc->line, "option '%s' of '%s' takes no value", o->name, cmd);
                r = o->parse(loc, cmd, o, value, data);
                if (r < 0)
                        return r;
        }
        if (ret_n_args)
                *ret_n_args = n_args;
        return 0;
}

#define PARSE_ARGS(loc, argv, table, data, args, max, ret_n)                                                           \
        ks_parse_args((loc), (argv), (table), ELEMENTSOF(table), (data), (args), (max), (ret_n))

/* ---- passwords ---- */

/* yescrypt with a salt derived from the seed and the user name, so the
 * same kickstart and seed give the same /etc/shadow. The password itself
 * must not feed the salt: the salt is public, and a fast HMAC of the
 * password in it would let anyone skip yescrypt's cost. */
static int ks_hash_password(const uint8_t *seed, const char *user, const char *password, char **ret)
{
        static const uint8_t zero_seed[32];
        static const char context[] = "ingot kickstart password salt\n";
        uint8_t mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        char setting[CRYPT_GENSALT_OUTPUT_SIZE];
        _cleanup_free_ char *msg = NULL;
        struct crypt_data *cd;
        const char *h;
        char *s = NULL;
        size_t n;

        n = strlen(context) + strlen(user);
        msg = malloc(n + 1);
        if (!msg)
                return -ENOMEM;
        stpcpy(stpcpy(msg, context), user);
        if (!HMAC(EVP_sha256(), seed ? seed : zero_seed, 32, (const uint8_t *)msg, n, mac, &mac_len) || mac_len < 16)
                return -EIO;
        if (!crypt_gensalt_rn("$y$", 0, (const char *)mac, 16, setting, sizeof setting))
                return -EINVAL;

        /* struct crypt_data is 32 KiB: too big for the stack of a fuzzer. */
        cd = calloc(1, sizeof *cd);
        if (!cd)
                return -ENOMEM;
        h = crypt_rn(password, setting, cd, sizeof *cd);
        if (h && h[0] == '$')
                s = strdup(h);
        explicit_bzero(cd, sizeof *cd);
        free(cd);
        if (!h || !s)
                return h ? -ENOMEM : -EINVAL;
        *ret = s;
        return 0;
}

static bool valid_crypt_hash(const char *s)
{
        size_t dollars = 0;

        /* "$id$[params$]salt$hash": only the crypt(3) alphabet, so nothing
         * can break the /etc/shadow line it is written to. */
        if (s[0] != '$' || !in_charset(s, "./$=,+-"))
                return false;
        for (; *s; s++)
                dollars += *s == '$';
        return dollars >= 3;
}

/* Turns what rootpw or user was given into a hash: hashes plain text,
 * checks an --iscrypted one. */
static int ks_password(struct ks_parser *p, const struct ks_loc *loc, const char *cmd, const char *user,
                       const char *password, bool iscrypted, char **ret)
{
        int r;

        if (iscrypted) {
                if (!valid_crypt_hash(password))
                        return log_syntax(loc->file, loc->line,
                                          "malformed password hash for '%s --iscrypted': expected a crypt(3) "
                                          "hash such as '$y$…' or '$6$…'",
                                          cmd);
                *ret = strdup(password);
                return *ret ? 0 : ks_oom();
        }
        r = ks_hash_password(p->salt_seed, user, password, ret);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return log_syntax(loc->file, loc->line, "cannot hash the password of '%s': %s", user, strerror(-r));
        return 0;
}

/* ---- commands ---- */

typedef int (*ks_command_fn)(struct ks_parser *p, const struct ks_loc *loc, char **argv);

/* part / partition */

struct part_args {
        uint64_t size, maxsize;
        bool grow;
        char *fstype, *label;
};

static const struct ks_option part_options[] = {
        OPT_VALUE("--size", opt_mib, struct part_args, size),
        OPT_VALUE("--maxsize", opt_mib, struct part_args, maxsize),
        OPT_FLAG("--grow", opt_true, struct part_args, grow),
        OPT_VALUE("--fstype", opt_string, struct part_args, fstype),
        OPT_VALUE("--label", opt_string, struct part_args, label),
        OPT_WARN("--asprimary", false, "a GPT has no primary or logical partitions"),
        OPT_REFUSE("--ondisk", true, "an image has exactly one disk"),
        OPT_REFUSE("--ondrive", true, "an image has exactly one disk"),
        OPT_REFUSE("--onpart", true, "partitions are always created new"),
        OPT_REFUSE("--usepart", true, "partitions are always created new"),
        OPT_REFUSE("--noformat", false, "every file system is created new"),
        OPT_REFUSE("--resize", false, "partitions are always created new"),
        OPT_REFUSE("--start", true, "ingot places the partitions"),
        OPT_REFUSE("--end", true, "ingot places the partitions"),
        OPT_REFUSE("--recommended", false, "give --size"),
        OPT_REFUSE("--hibernation", false, "give --size"),
        OPT_REFUSE("--fsoptions", true, "mount options are not configured"),
        OPT_REFUSE("--mkfsoptions", true, "ingot makes file systems with its own reproducible options"),
        OPT_REFUSE("--fsprofile", true, "ingot makes file systems with its own reproducible options"),
        OPT_REFUSE("--encrypted", false, "encrypted partitions are not supported"),
        OPT_REFUSE("--passphrase", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--luks-version", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--cipher", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--pbkdf", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--escrowcert", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--backuppassphrase", false, "encrypted partitions are not supported"),
};

static void part_args_done(struct part_args *a)
{
        free(a->fstype);
        free(a->label);
}

static int cmd_part(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        static const char *const fstypes[] = {
                "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "efi", "swap", "biosboot"
        };
        _cleanup_(part_args_done) struct part_args a = {};
        struct kickstart *ks = p->ks;
        const char *args[1], *mp, *cmd = argv[0];
        struct ks_part *parts, *n;
        size_t n_args;
        bool known = false;
        int r;

        r = PARSE_ARGS(loc, argv, part_options, &a, args, 1, &n_args);
        if (r < 0)
                return r;
        if (p->autopart_loc.file)
                return log_syntax(loc->file, loc->line, "'%s' cannot be combined with 'autopart' (at %s:%u)", cmd,
                                  p->autopart_loc.file, p->autopart_loc.line);
        if (n_args == 0)
                return log_syntax(loc->file, loc->line, "'%s' needs a mount point, 'swap' or 'biosboot'", cmd);
        mp = args[0];
        if (startswith(mp, "raid.") || startswith(mp, "pv.") || startswith(mp, "btrfs."))
                return log_syntax(loc->file, loc->line,
                                  "'%s %s' is not supported: RAID, LVM and btrfs volumes are not supported", cmd, mp);
        if (!streq(mp, "swap") && !streq(mp, "biosboot") &&
            (!valid_abs_path(mp) || strstr(mp, "//") || (mp[1] && mp[strlen(mp) - 1] == '/')))
                return log_syntax(loc->file, loc->line, "invalid mount point '%s' for '%s'", mp, cmd);
        if (a.fstype) {
                for (size_t i = 0; i < ELEMENTSOF(fstypes); i++)
                        known = known || streq(a.fstype, fstypes[i]);
                if (!known)
                        return log_syntax(loc->file, loc->line, "unsupported file system type '%s'", a.fstype);
                if ((streq(mp, "swap") || streq(mp, "biosboot") || streq(a.fstype, "swap") ||
                     streq(a.fstype, "biosboot")) &&
                    !streq(mp, a.fstype))
                        return log_syntax(loc->file, loc->line, "'--fstype %s' does not fit mount point '%s'", a.fstype,
                                          mp);
        }
        if (a.maxsize > 0 && a.size > a.maxsize)
                return log_syntax(loc->file, loc->line, "'--size' is larger than '--maxsize'");
        for (size_t i = 0; i < ks->n_parts; i++)
                if (streq(ks->parts[i].mountpoint, mp) && !streq(mp, "swap"))
                        return log_syntax(loc->file, loc->line, "duplicate partition for '%s' (first at %s:%u)", mp,
                                          ks->parts[i].loc.file, ks->parts[i].loc.line);

        parts = reallocarray(ks->parts, ks->n_parts + 1, sizeof *parts);
        if (!parts)
                return ks_oom();
        ks->parts = parts;
        n = &parts[ks->n_parts];
        *n = (struct ks_part){
                .loc = *loc,
                .mountpoint = strdup(mp),
                .size = a.size,
                .maxsize = a.maxsize,
                .grow = a.grow,
                .fstype = TAKE_PTR(a.fstype),
                .label = TAKE_PTR(a.label),
        };
        ks->n_parts++; /* counted first so kickstart_free() frees it either way */
        return n->mountpoint ? 0 : ks_oom();
}

/* clearpart */

struct clearpart_args {
        bool all, none, initlabel, linux_;
        char *disklabel;
};

static const struct ks_option clearpart_options[] = {
        OPT_FLAG("--all", opt_true, struct clearpart_args, all),
        OPT_FLAG("--none", opt_true, struct clearpart_args, none),
        OPT_FLAG("--initlabel", opt_true, struct clearpart_args, initlabel),
        OPT_FLAG("--linux", opt_true, struct clearpart_args, linux_),
        OPT_VALUE("--disklabel", opt_string, struct clearpart_args, disklabel),
        OPT_REFUSE("--drives", true, "an image has exactly one disk"),
        OPT_REFUSE("--list", true, "an image starts empty, there are no partitions to pick"),
        OPT_REFUSE("--cdl", false, "DASD disks are not supported"),
};

static int cmd_clearpart(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_free_ char *disklabel = NULL;
        struct clearpart_args a = {};
        int r;

        r = PARSE_ARGS(loc, argv, clearpart_options, &a, NULL, 0, NULL);
        disklabel = a.disklabel;
        if (r < 0)
                return r;
        if (a.none && (a.all || a.linux_ || a.initlabel))
                return log_syntax(loc->file, loc->line, "'clearpart --none' cannot be combined with other options");
        if (disklabel && !streq(disklabel, "gpt"))
                return log_syntax(loc->file, loc->line,
                                  "'clearpart --disklabel=%s' is not supported: ingot always writes a GPT", disklabel);
        /* On a new, empty image every form of clearing is the same. */
        p->ks->clearpart = !a.none;
        return 0;
}

static int cmd_zerombr(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        int r;

        r = ks_parse_args(loc, argv, NULL, 0, NULL, NULL, 0, NULL);
        if (r < 0)
                return r;
        p->ks->zerombr = true;
        return 0;
}

/* autopart */

struct autopart_args {
        char *type;
        bool nolvm;
};

#define AUTOPART_WHY "autopart takes the template's layout; write 'part' lines to change it"
static const struct ks_option autopart_options[] = {
        OPT_VALUE("--type", opt_string, struct autopart_args, type),
        OPT_FLAG("--nolvm", opt_true, struct autopart_args, nolvm),
        OPT_REFUSE("--fstype", true, AUTOPART_WHY),
        OPT_REFUSE("--nohome", false, AUTOPART_WHY),
        OPT_REFUSE("--noboot", false, AUTOPART_WHY),
        OPT_REFUSE("--noswap", false, AUTOPART_WHY),
        OPT_REFUSE("--hibernation", false, AUTOPART_WHY),
        OPT_REFUSE("--encrypted", false, "encrypted partitions are not supported"),
        OPT_REFUSE("--passphrase", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--luks-version", true, "encrypted partitions are not supported"),
        OPT_REFUSE("--cipher", true, "encrypted partitions are not supported"),
};

static int cmd_autopart(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_free_ char *type = NULL;
        struct autopart_args a = {};
        int r;

        r = PARSE_ARGS(loc, argv, autopart_options, &a, NULL, 0, NULL);
        type = a.type;
        if (r < 0)
                return r;
        if (type && !streq(type, "plain"))
                return log_syntax(loc->file, loc->line,
                                  "'autopart --type=%s' is not supported: only plain partitions are", type);
        if (p->ks->n_parts > 0)
                return log_syntax(loc->file, loc->line, "'autopart' cannot be combined with 'part' (at %s:%u)",
                                  p->ks->parts[0].loc.file, p->ks->parts[0].loc.line);
        p->ks->autopart = true;
        p->autopart_loc = *loc;
        return 0;
}

/* bootloader */

struct bootloader_args {
        char *append, *location;
        uint64_t timeout; /* UINT64_MAX = not given */
};

#define BOOTLOADER_WHY "the template chooses and installs the bootloader"
static const struct ks_option bootloader_options[] = {
        OPT_VALUE("--append", opt_string, struct bootloader_args, append),
        OPT_UINT("--timeout", struct bootloader_args, timeout, INT_MAX),
        OPT_VALUE("--location", opt_string, struct bootloader_args, location),
        OPT_REFUSE("--password", true, "bootloader passwords are not supported"),
        OPT_REFUSE("--iscrypted", false, "bootloader passwords are not supported"),
        OPT_REFUSE("--md5pass", true, "bootloader passwords are not supported"),
        OPT_REFUSE("--driveorder", true, "an image has exactly one disk"),
        OPT_REFUSE("--boot-drive", true, "an image has exactly one disk"),
        OPT_REFUSE("--leavebootorder", false, BOOTLOADER_WHY),
        OPT_REFUSE("--disabled", false, BOOTLOADER_WHY),
        OPT_REFUSE("--nombr", false, BOOTLOADER_WHY),
        OPT_REFUSE("--sdboot", false, BOOTLOADER_WHY),
        OPT_REFUSE("--extlinux", false, BOOTLOADER_WHY),
};

static int cmd_bootloader(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        static const char *const locations[] = { "mbr", "boot", "partition" };
        struct bootloader_args a = { .timeout = UINT64_MAX };
        _cleanup_free_ char *append = NULL, *location = NULL;
        bool known = false;
        int r;

        r = PARSE_ARGS(loc, argv, bootloader_options, &a, NULL, 0, NULL);
        append = a.append;
        location = a.location;
        if (r < 0)
                return r;
        if (location) {
                for (size_t i = 0; i < ELEMENTSOF(locations); i++)
                        known = known || streq(location, locations[i]);
                if (streq(location, "none"))
                        return log_syntax(loc->file, loc->line,
                                          "'bootloader --location=none' is not supported: " BOOTLOADER_WHY);
                if (!known)
                        return log_syntax(loc->file, loc->line,
                                          "invalid value '%s' for option '--location' of "
                                          "'bootloader': expected mbr, boot or partition",
                                          location);
        }
        /* the build owns how the root is found and opened: a root=,
         * init= or verity option of the kickstart's would fight it, or,
         * with --verity, boot past the verified root */
        for (const char *w = append; w && *w;) {
                static const char *const owned[] = { "root=",    "init=", "rootflags=", "rootfstype=", "roothash=",
                                                     "systemd.verity", "ingot.verity.", "rd.systemd.verity" };
                size_t n;

                w += strspn(w, " \t");
                n = strcspn(w, " \t");
                if (n == 0)
                        break;
                if ((n == 2 && strncmp(w, "rw", 2) == 0) || (n == 2 && strncmp(w, "ro", 2) == 0))
                        return log_syntax(loc->file, loc->line,
                                          "'bootloader --append' must not set '%.*s': the root is mounted read-only "
                                          "by the build",
                                          (int)n, w);
                for (size_t i = 0; i < ELEMENTSOF(owned); i++)
                        if (strncmp(w, owned[i], strlen(owned[i])) == 0)
                                return log_syntax(loc->file, loc->line,
                                                  "'bootloader --append' must not set '%.*s': the build sets how the "
                                                  "root is found and verified, and a second one could bypass it",
                                                  (int)n, w);
                w += n;
        }
        p->ks->bootloader_append = TAKE_PTR(append);
        p->ks->bootloader_timeout = a.timeout == UINT64_MAX ? -1 : (int)a.timeout;
        return 0;
}

/* rootpw */

struct password_args {
        char *name, *password, *shell, *homedir, *gecos;
        char **groups;
        bool iscrypted, plaintext, lock;
        uint64_t uid, gid;
};

static void password_args_done(struct password_args *a)
{
        free(a->name);
        erase_free(a->password);
        free(a->shell);
        free(a->homedir);
        free(a->gecos);
        strv_free(a->groups);
}

static const struct ks_option rootpw_options[] = {
        OPT_FLAG("--iscrypted", opt_true, struct password_args, iscrypted),
        OPT_FLAG("--plaintext", opt_true, struct password_args, plaintext),
        OPT_FLAG("--lock", opt_true, struct password_args, lock),
        OPT_REFUSE("--allow-ssh", false, "ingot does not configure password logins over SSH"),
};

static int cmd_rootpw(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_(password_args_done) struct password_args a = {};
        const char *args[1];
        size_t n_args;
        int r;

        r = PARSE_ARGS(loc, argv, rootpw_options, &a, args, 1, &n_args);
        if (r < 0)
                return r;
        if (a.iscrypted && a.plaintext)
                return log_syntax(loc->file, loc->line, "'--iscrypted' and '--plaintext' of 'rootpw' conflict");
        if (n_args == 0) {
                if (!a.lock)
                        return log_syntax(loc->file, loc->line, "'rootpw' needs a password or '--lock'");
                if (a.iscrypted || a.plaintext)
                        return log_syntax(loc->file, loc->line, "'rootpw --%s' needs a password",
                                          a.iscrypted ? "iscrypted" : "plaintext");
        } else {
                /* Without --iscrypted a password is plain text (pykickstart),
                 * and plain text is never stored. */
                r = ks_password(p, loc, "rootpw", "root", args[0], a.iscrypted, &p->ks->rootpw_hash);
                if (r < 0)
                        return r;
        }
        p->ks->rootpw_set = true;
        p->ks->rootpw_lock = a.lock;
        return 0;
}

/* user */

static const struct ks_option user_options[] = {
        OPT_VALUE("--name", opt_string, struct password_args, name),
        OPT_VALUE("--password", opt_string, struct password_args, password),
        OPT_FLAG("--iscrypted", opt_true, struct password_args, iscrypted),
        OPT_FLAG("--plaintext", opt_true, struct password_args, plaintext),
        OPT_FLAG("--lock", opt_true, struct password_args, lock),
        OPT_VALUE("--groups", opt_list, struct password_args, groups),
        OPT_VALUE("--shell", opt_string, struct password_args, shell),
        OPT_VALUE("--homedir", opt_string, struct password_args, homedir),
        OPT_VALUE("--gecos", opt_string, struct password_args, gecos),
        OPT_UINT("--uid", struct password_args, uid, KS_ID_MAX),
        OPT_UINT("--gid", struct password_args, gid, KS_ID_MAX),
};

static int cmd_user(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_(password_args_done) struct password_args a = { .uid = UINT64_MAX, .gid = UINT64_MAX };
        struct kickstart *ks = p->ks;
        struct ks_user *users, *u;
        int r;

        r = PARSE_ARGS(loc, argv, user_options, &a, NULL, 0, NULL);
        if (r < 0)
                return r;
        if (!a.name)
                return log_syntax(loc->file, loc->line, "'user' needs '--name'");
        if (!valid_user_name(a.name))
                return log_syntax(loc->file, loc->line, "invalid user name '%s'", a.name);
        if (streq(a.name, "root"))
                return log_syntax(loc->file, loc->line, "'user --name=root' is not supported: use 'rootpw'");
        STRV_FOREACH (g, a.groups)
                if (!valid_user_name(*g))
                        return log_syntax(loc->file, loc->line, "invalid group name '%s'", *g);
        if (a.shell && !valid_abs_path(a.shell))
                return log_syntax(loc->file, loc->line, "invalid shell '%s': expected an absolute path", a.shell);
        if (a.homedir && !valid_abs_path(a.homedir))
                return log_syntax(loc->file, loc->line, "invalid home directory '%s': expected an absolute path",
                                  a.homedir);
        if (a.gecos && strchr(a.gecos, ':'))
                return log_syntax(loc->file, loc->line, "invalid GECOS field '%s': it cannot contain ':'", a.gecos);
        if (a.uid == 0)
                return log_syntax(loc->file, loc->line, "'--uid 0' is root's");
        if (a.iscrypted && a.plaintext)
                return log_syntax(loc->file, loc->line, "'--iscrypted' and '--plaintext' of 'user' conflict");
        if ((a.iscrypted || a.plaintext) && !a.password)
                return log_syntax(loc->file, loc->line, "'user --%s' needs '--password'",
                                  a.iscrypted ? "iscrypted" : "plaintext");
        for (size_t i = 0; i < ks->n_users; i++)
                if (streq(ks->users[i].name, a.name))
                        return log_syntax(loc->file, loc->line, "duplicate user '%s' (first at %s:%u)", a.name,
                                          ks->users[i].loc.file, ks->users[i].loc.line);

        users = reallocarray(ks->users, ks->n_users + 1, sizeof *users);
        if (!users)
                return ks_oom();
        ks->users = users;
        u = &users[ks->n_users++];
        *u = (struct ks_user){
                .loc = *loc,
                .name = TAKE_PTR(a.name),
                .lock = a.lock,
                .groups = TAKE_PTR(a.groups),
                .shell = TAKE_PTR(a.shell),
                .homedir = TAKE_PTR(a.homedir),
                .gecos = TAKE_PTR(a.gecos),
                .has_uid = a.uid != UINT64_MAX,
                .uid = a.uid != UINT64_MAX ? (uid_t)a.uid : 0,
                .has_gid = a.gid != UINT64_MAX,
                .gid = a.gid != UINT64_MAX ? (gid_t)a.gid : 0,
        };
        if (a.password)
                return ks_password(p, loc, "user", u->name, a.password, a.iscrypted, &u->password_hash);
        return 0;
}

/* sshkey */

struct sshkey_args {
        char *username;
};

static const struct ks_option sshkey_options[] = {
        OPT_VALUE("--username", opt_string, struct sshkey_args, username),
};

static bool looks_like_ssh_key(const char *key)
{
        static const char *const prefixes[] = { "ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-" };
        const char *p = key;

        /* authorized_keys options may come first; the key type follows. */
        while (*p) {
                size_t n = strcspn(p, " \t");
                for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                        if (startswith(p, prefixes[i]) && p[n] != '\0')
                                return true;
                p += n;
                p += strspn(p, " \t");
        }
        return false;
}

static int cmd_sshkey(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_free_ char *username = NULL;
        struct sshkey_args a = {};
        struct kickstart *ks = p->ks;
        struct ks_sshkey *keys, *k;
        const char *args[1];
        size_t n_args;
        int r;

        r = PARSE_ARGS(loc, argv, sshkey_options, &a, args, 1, &n_args);
        username = a.username;
        if (r < 0)
                return r;
        if (!username)
                return log_syntax(loc->file, loc->line, "'sshkey' needs '--username'");
        if (!valid_user_name(username))
                return log_syntax(loc->file, loc->line, "invalid user name '%s'", username);
        if (n_args == 0)
                return log_syntax(loc->file, loc->line, "'sshkey' needs a key");
        if (!looks_like_ssh_key(args[0]))
                return log_syntax(loc->file, loc->line,
                                  "'%s' does not look like an SSH public key (\"ssh-ed25519 AAAA… comment\")", args[0]);

        keys = reallocarray(ks->sshkeys, ks->n_sshkeys + 1, sizeof *keys);
        if (!keys)
                return ks_oom();
        ks->sshkeys = keys;
        k = &keys[ks->n_sshkeys++];
        *k = (struct ks_sshkey){ .loc = *loc, .username = TAKE_PTR(username), .key = strdup(args[0]) };
        return k->key ? 0 : ks_oom();
}

/* network */

struct network_args {
        char *hostname, *bootproto, *device, *onboot;
        bool activate, no_activate, noipv6;
};

#define NETWORK_STATIC_WHY "every instance of an image would get the same address; use DHCP"
#define NETWORK_WHY "ingot configures one interface by DHCP"
static const struct ks_option network_options[] = {
        OPT_VALUE("--hostname", opt_string, struct network_args, hostname),
        OPT_VALUE("--bootproto", opt_string, struct network_args, bootproto),
        OPT_VALUE("--device", opt_string, struct network_args, device),
        OPT_VALUE("--onboot", opt_string, struct network_args, onboot),
        OPT_FLAG("--activate", opt_true, struct network_args, activate),
        OPT_FLAG("--no-activate", opt_true, struct network_args, no_activate),
        OPT_FLAG("--noipv6", opt_true, struct network_args, noipv6),
        OPT_REFUSE("--ip", true, NETWORK_STATIC_WHY),
        OPT_REFUSE("--ipv6", true, NETWORK_STATIC_WHY),
        OPT_REFUSE("--netmask", true, NETWORK_STATIC_WHY),
        OPT_REFUSE("--gateway", true, NETWORK_STATIC_WHY),
        OPT_REFUSE("--ipv6gateway", true, NETWORK_STATIC_WHY),
        OPT_REFUSE("--nameserver", true, NETWORK_STATIC_WHY),
        OPT_REFUSE("--mtu", true, NETWORK_WHY),
        OPT_REFUSE("--vlanid", true, NETWORK_WHY),
        OPT_REFUSE("--bondslaves", true, NETWORK_WHY),
        OPT_REFUSE("--bondopts", true, NETWORK_WHY),
        OPT_REFUSE("--teamslaves", true, NETWORK_WHY),
        OPT_REFUSE("--bridgeslaves", true, NETWORK_WHY),
        OPT_REFUSE("--essid", true, NETWORK_WHY),
        OPT_REFUSE("--wpakey", true, NETWORK_WHY),
};

static void network_args_done(struct network_args *a)
{
        free(a->hostname);
        free(a->bootproto);
        free(a->device);
        free(a->onboot);
}

/* Several network lines may add to one interface; they may not disagree. */
static int network_set(const struct ks_loc *loc, const char *what, char **field, struct ks_loc *field_loc, char **value)
{
        if (!*value)
                return 0;
        if (*field && !streq(*field, *value))
                return log_syntax(loc->file, loc->line, "conflicting network %s '%s' ('%s' at %s:%u)", what, *value,
                                  *field, field_loc->file, field_loc->line);
        free(*field);
        *field = TAKE_PTR(*value);
        *field_loc = *loc;
        return 0;
}

static int cmd_network(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        static const char *const bootprotos[] = { "dhcp", "bootp", "static", "query", "ibft" };
        _cleanup_(network_args_done) struct network_args a = {};
        struct kickstart *ks = p->ks;
        bool known = false, onboot = true;
        int r;

        r = PARSE_ARGS(loc, argv, network_options, &a, NULL, 0, NULL);
        if (r < 0)
                return r;
        if (a.activate && a.no_activate)
                return log_syntax(loc->file, loc->line, "'--activate' and '--no-activate' of 'network' conflict");
        if (a.hostname && !valid_hostname(a.hostname))
                return log_syntax(loc->file, loc->line, "invalid host name '%s'", a.hostname);
        if (a.device && !in_charset(a.device, "_.:-"))
                return log_syntax(loc->file, loc->line, "invalid network device '%s'", a.device);
        if (a.onboot && parse_boolean(a.onboot, &onboot) < 0)
                return log_syntax(loc->file, loc->line,
                                  "invalid value '%s' for option '--onboot' of 'network': expected yes or no",
                                  a.onboot);
        if (a.bootproto) {
                for (size_t i = 0; i < ELEMENTSOF(bootprotos); i++)
                        known = known || streq(a.bootproto, bootprotos[i]);
                if (!known)
                        return log_syntax(loc->file, loc->line,
                                          "invalid value '%s' for option '--bootproto' of "
                                          "'network': expected dhcp",
                                          a.bootproto);
                if (streq(a.bootproto, "static"))
                        return log_syntax(loc->file, loc->line,
                                          "'network --bootproto=static' is not supported: " NETWORK_STATIC_WHY);
                if (!streq(a.bootproto, "dhcp") && !streq(a.bootproto, "bootp"))
                        return log_syntax(loc->file, loc->line,
                                          "'network --bootproto=%s' is not supported: " NETWORK_WHY, a.bootproto);
                /* bootp is pykickstart's old name for dhcp */
                free(a.bootproto);
                a.bootproto = strdup("dhcp");
                if (!a.bootproto)
                        return ks_oom();
        }
        r = network_set(loc, "host name", &ks->hostname, &p->hostname_loc, &a.hostname);
        if (r >= 0)
                r = network_set(loc, "device", &ks->network_device, &p->device_loc, &a.device);
        if (r >= 0)
                r = network_set(loc, "boot protocol", &ks->network_bootproto, &p->bootproto_loc, &a.bootproto);
        if (r < 0)
                return r;
        ks->network_activate = ks->network_activate || a.activate;
        ks->network_noipv6 = ks->network_noipv6 || a.noipv6;
        if (a.onboot)
                ks->network_onboot = onboot;
        return 0;
}

/* timezone, lang, keyboard */

struct locale_args {
        bool utc, nontp;
        char *vckeymap;
        char **xlayouts;
};

static void locale_args_done(struct locale_args *a)
{
        free(a->vckeymap);
        strv_free(a->xlayouts);
}

static const struct ks_option timezone_options[] = {
        OPT_FLAG("--utc", opt_true, struct locale_args, utc),
        OPT_FLAG("--isUtc", opt_true, struct locale_args, utc),
        OPT_FLAG("--nontp", opt_true, struct locale_args, nontp),
        OPT_REFUSE("--ntpservers", true, "ingot does not configure time servers"),
};

static int cmd_timezone(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_(locale_args_done) struct locale_args a = {};
        const char *args[1];
        size_t n_args;
        int r;

        r = PARSE_ARGS(loc, argv, timezone_options, &a, args, 1, &n_args);
        if (r < 0)
                return r;
        if (n_args == 0)
                return log_syntax(loc->file, loc->line, "'timezone' needs a time zone such as 'Etc/UTC'");
        /* A name under /usr/share/zoneinfo, nothing that climbs out of it. */
        if (args[0][0] == '/' || strstr(args[0], "..") || !in_charset(args[0], "/_+-"))
                return log_syntax(loc->file, loc->line, "invalid time zone '%s'", args[0]);
        p->ks->timezone = strdup(args[0]);
        p->ks->timezone_utc = a.utc;
        return p->ks->timezone ? 0 : ks_oom();
}

static const struct ks_option lang_options[] = {
        OPT_REFUSE("--addsupport", true, "ingot configures one locale"),
};

static int cmd_lang(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        const char *args[1];
        size_t n_args;
        int r;

        r = PARSE_ARGS(loc, argv, lang_options, NULL, args, 1, &n_args);
        if (r < 0)
                return r;
        if (n_args == 0)
                return log_syntax(loc->file, loc->line, "'lang' needs a locale such as 'C.UTF-8'");
        if (!in_charset(args[0], "_.@-"))
                return log_syntax(loc->file, loc->line, "invalid locale '%s'", args[0]);
        p->ks->lang = strdup(args[0]);
        return p->ks->lang ? 0 : ks_oom();
}

static const struct ks_option keyboard_options[] = {
        OPT_VALUE("--vckeymap", opt_string, struct locale_args, vckeymap),
        OPT_VALUE("--xlayouts", opt_list, struct locale_args, xlayouts),
        OPT_REFUSE("--switch", true, "ingot configures the console keymap only"),
};

static int cmd_keyboard(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_(locale_args_done) struct locale_args a = {};
        const char *args[1], *map;
        size_t n_args;
        int r;

        r = PARSE_ARGS(loc, argv, keyboard_options, &a, args, 1, &n_args);
        if (r < 0)
                return r;
        if (n_args > 0 && a.vckeymap && !streq(args[0], a.vckeymap))
                return log_syntax(loc->file, loc->line, "'keyboard %s' conflicts with '--vckeymap=%s'", args[0],
                                  a.vckeymap);
        /* The legacy "keyboard us" is the console keymap; the first X
         * layout stands in when only those are given. */
        map = n_args > 0 ? args[0] : a.vckeymap ? a.vckeymap : a.xlayouts ? a.xlayouts[0] : NULL;
        if (!map)
                return log_syntax(loc->file, loc->line, "'keyboard' needs a keymap such as 'us'");
        if (!in_charset(map, "_.()-"))
                return log_syntax(loc->file, loc->line, "invalid keymap '%s'", map);
        p->ks->keyboard = strdup(map);
        return p->ks->keyboard ? 0 : ks_oom();
}

/* services */

struct services_args {
        char **enabled, **disabled;
};

static void services_args_done(struct services_args *a)
{
        strv_free(a->enabled);
        strv_free(a->disabled);
}

static const struct ks_option services_options[] = {
        OPT_VALUE("--enabled", opt_list, struct services_args, enabled),
        OPT_VALUE("--disabled", opt_list, struct services_args, disabled),
};

static int services_merge(char ***into, char **from)
{
        STRV_FOREACH (s, from) {
                int r;
                if (strv_contains(*into, *s))
                        continue;
                r = strv_extend(into, *s);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int cmd_services(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_(services_args_done) struct services_args a = {};
        struct kickstart *ks = p->ks;
        int r;

        r = PARSE_ARGS(loc, argv, services_options, &a, NULL, 0, NULL);
        if (r < 0)
                return r;
        if (!a.enabled && !a.disabled)
                return log_syntax(loc->file, loc->line, "'services' needs '--enabled' or '--disabled'");
        for (char **l = a.enabled; l; l = l == a.enabled ? a.disabled : NULL)
                STRV_FOREACH (s, l)
                        if (!in_charset(*s, "@._:\\-"))
                                return log_syntax(loc->file, loc->line, "invalid service name '%s'", *s);
        r = services_merge(&ks->services_enabled, a.enabled);
        if (r >= 0)
                r = services_merge(&ks->services_disabled, a.disabled);
        if (r < 0)
                return r;
        /* Merged across lines, so the conflict may span two of them. */
        STRV_FOREACH (s, ks->services_enabled)
                if (strv_contains(ks->services_disabled, *s)) {
                        if (p->services_loc.file &&
                            (p->services_loc.file != loc->file || p->services_loc.line != loc->line))
                                return log_syntax(loc->file, loc->line,
                                                  "service '%s' is both enabled and disabled (see also %s:%u)", *s,
                                                  p->services_loc.file, p->services_loc.line);
                        return log_syntax(loc->file, loc->line, "service '%s' is both enabled and disabled", *s);
                }
        if (!p->services_loc.file)
                p->services_loc = *loc;
        return 0;
}

/* selinux, firewall */

struct security_args {
        int mode;
        char **ports, **services;
};

static void security_args_done(struct security_args *a)
{
        strv_free(a->ports);
        strv_free(a->services);
}

static const struct ks_option selinux_options[] = {
        OPT_ENUM("--disabled", struct security_args, mode, KS_SELINUX_DISABLED),
        OPT_ENUM("--permissive", struct security_args, mode, KS_SELINUX_PERMISSIVE),
        OPT_ENUM("--enforcing", struct security_args, mode, KS_SELINUX_ENFORCING),
};

static int cmd_selinux(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        struct security_args a = { .mode = -1 };
        int r;

        r = PARSE_ARGS(loc, argv, selinux_options, &a, NULL, 0, NULL);
        if (r < 0)
                return r;
        if (a.mode < 0)
                return log_syntax(loc->file, loc->line,
                                  "'selinux' needs one of '--disabled', '--permissive' or '--enforcing'");
        p->ks->selinux = (enum ks_selinux)a.mode;
        return 0;
}

#define FIREWALL_WHY "ingot opens ports and services only"
static const struct ks_option firewall_options[] = {
        OPT_ENUM("--enabled", struct security_args, mode, 1),
        OPT_ENUM("--enable", struct security_args, mode, 1),
        OPT_ENUM("--disabled", struct security_args, mode, 0),
        OPT_ENUM("--disable", struct security_args, mode, 0),
        OPT_VALUE("--port", opt_list, struct security_args, ports),
        OPT_VALUE("--service", opt_list, struct security_args, services),
        OPT_CONST("--ssh", struct security_args, services, "ssh"),
        OPT_CONST("--http", struct security_args, services, "http"),
        OPT_CONST("--smtp", struct security_args, services, "smtp"),
        OPT_CONST("--ftp", struct security_args, services, "ftp"),
        OPT_REFUSE("--trust", true, FIREWALL_WHY),
        OPT_REFUSE("--remove-service", true, FIREWALL_WHY),
        OPT_REFUSE("--use-system-defaults", false, FIREWALL_WHY),
};

static bool valid_port(const char *s)
{
        static const char *const protos[] = { "tcp", "udp", "sctp", "dccp" };
        const char *colon = strchr(s, ':');
        char *end;

        /* "22:tcp" or "8000-8010:udp" */
        if (!colon)
                return false;
        for (int i = 0; i < 2; i++) {
                unsigned long v;
                if (*s < '0' || *s > '9')
                        return false;
                errno = 0;
                v = strtoul(s, &end, 10);
                if (errno != 0 || v == 0 || v > 65535)
                        return false;
                s = end;
                if (*s != '-' || i == 1)
                        break;
                s++;
        }
        if (s != colon)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(protos); i++)
                if (streq(colon + 1, protos[i]))
                        return true;
        return false;
}

static int cmd_firewall(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_(security_args_done) struct security_args a = { .mode = -1 };
        struct kickstart *ks = p->ks;
        int r;

        r = PARSE_ARGS(loc, argv, firewall_options, &a, NULL, 0, NULL);
        if (r < 0)
                return r;
        if (a.mode == 0 && (a.ports || a.services))
                return log_syntax(loc->file, loc->line, "'firewall --disabled' cannot open ports or services");
        STRV_FOREACH (s, a.ports)
                if (!valid_port(*s))
                        return log_syntax(loc->file, loc->line, "invalid port '%s': expected such as '22:tcp'", *s);
        STRV_FOREACH (s, a.services)
                if (!in_charset(*s, "._-"))
                        return log_syntax(loc->file, loc->line, "invalid firewall service '%s'", *s);
        /* pykickstart: a bare "firewall" enables it. */
        ks->firewall = a.mode < 0 ? 1 : a.mode;
        ks->firewall_ports = TAKE_PTR(a.ports);
        ks->firewall_services = TAKE_PTR(a.services);
        return 0;
}

/* The command table. Singletons may appear once; ignored commands are
 * those whose only effect is on an installer that does not exist here. */
struct ks_command {
        const char *name;
        ks_command_fn parse;
        bool singleton;
        const char *ignore; /* non-NULL: warn with this reason and go on */
};

#define KS_IGNORE_UI "there is no installer interface"
#define KS_IGNORE_END "the build ends by itself, there is no installer to stop"
static const struct ks_command ks_commands[] = {
        { "autopart", cmd_autopart, true, NULL },
        { "bootloader", cmd_bootloader, true, NULL },
        { "clearpart", cmd_clearpart, true, NULL },
        { "firewall", cmd_firewall, true, NULL },
        { "keyboard", cmd_keyboard, true, NULL },
        { "lang", cmd_lang, true, NULL },
        { "network", cmd_network, false, NULL },
        { "part", cmd_part, false, NULL },
        { "partition", cmd_part, false, NULL },
        { "rootpw", cmd_rootpw, true, NULL },
        { "selinux", cmd_selinux, true, NULL },
        { "services", cmd_services, false, NULL },
        { "sshkey", cmd_sshkey, false, NULL },
        { "timezone", cmd_timezone, true, NULL },
        { "user", cmd_user, false, NULL },
        { "zerombr", cmd_zerombr, true, NULL },
        { "cmdline", NULL, false, KS_IGNORE_UI },
        { "graphical", NULL, false, KS_IGNORE_UI },
        { "text", NULL, false, KS_IGNORE_UI },
        { "eula", NULL, false, "there is no installer to accept a licence in" },
        { "firstboot", NULL, false, "ingot does not configure a first-boot wizard" },
        { "skipx", NULL, false, "ingot does not configure X" },
        { "halt", NULL, false, KS_IGNORE_END },
        { "poweroff", NULL, false, KS_IGNORE_END },
        { "reboot", NULL, false, KS_IGNORE_END },
        { "shutdown", NULL, false, KS_IGNORE_END },
};

_Static_assert(ELEMENTSOF(ks_commands) <= ELEMENTSOF(((struct ks_parser *)NULL)->first), "ks_parser.first too small");

static int ks_command(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        for (size_t i = 0; i < ELEMENTSOF(ks_commands); i++) {
                const struct ks_command *c = &ks_commands[i];

                if (!streq(c->name, argv[0]))
                        continue;
                if (c->ignore)
                        return log_syntax_warning(loc->file, loc->line, "ignoring '%s': %s", c->name, c->ignore);
                if (c->singleton) {
                        if (p->first[i].file)
                                return log_syntax(loc->file, loc->line, "duplicate '%s' command (first at %s:%u)",
                                                  c->name, p->first[i].file, p->first[i].line);
                        p->first[i] = *loc;
                }
                return c->parse(p, loc, argv);
        }
        return log_syntax(loc->file, loc->line, "unsupported kickstart command '%s'", argv[0]);
}

/* ---- sections ---- */

enum ks_section_kind {
        KS_SECTION_NONE,
        KS_SECTION_PACKAGES,
        KS_SECTION_POST,
};

struct ks_section {
        enum ks_section_kind kind;
        struct ks_loc loc;
        struct ks_script script; /* %post being collected */
        size_t body_len, body_alloc;
};

static void ks_section_done(struct ks_section *s)
{
        free(s->script.interpreter);
        free(s->script.log);
        free(s->script.body);
}

struct packages_args {
        bool ignoremissing;
};

#define PACKAGES_MANAGER_WHY "the template's package manager settings apply"
static const struct ks_option packages_options[] = {
        OPT_FLAG("--ignoremissing", opt_true, struct packages_args, ignoremissing),
        OPT_WARN("--excludedocs", false, "documentation is installed as the template installs it"),
        OPT_WARN("--nocore", false, "there are no package groups, so no core group to leave out"),
        OPT_WARN("--default", false, "there are no package groups"),
        OPT_WARN("--nodefaults", false, "there are no package groups"),
        OPT_WARN("--exclude-weakdeps", false, PACKAGES_MANAGER_WHY),
        OPT_WARN("--excludeWeakdeps", false, PACKAGES_MANAGER_WHY),
        OPT_WARN("--inst-langs", true, PACKAGES_MANAGER_WHY),
        OPT_WARN("--instLangs", true, PACKAGES_MANAGER_WHY),
        OPT_WARN("--timeout", true, PACKAGES_MANAGER_WHY),
        OPT_WARN("--retries", true, PACKAGES_MANAGER_WHY),
        OPT_WARN("--multilib", false, "there is no multilib"),
        OPT_REFUSE("--ignorebroken", false, "a broken package set fails the build"),
};

static const struct ks_option post_options[] = {
        OPT_FLAG("--nochroot", opt_true, struct ks_script, nochroot),
        OPT_FLAG("--erroronfail", opt_true, struct ks_script, erroronfail),
        OPT_VALUE("--interpreter", opt_string, struct ks_script, interpreter),
        OPT_VALUE("--log", opt_string, struct ks_script, log),
        OPT_VALUE("--logfile", opt_string, struct ks_script, log),
};

static const struct {
        const char *name;
        const char *why;
} ks_refused_sections[] = {
        { "%pre", "it would run on the build host" },
        { "%pre-install", "it would run on the build host" },
        { "%onerror", "there is no installer whose errors it could handle" },
        { "%traceback", "there is no installer whose errors it could handle" },
        { "%addon", "installer add-ons are not supported" },
        { "%anaconda", "there is no installer to configure" },
        { "%ksappend", "use %include" },
};

static bool is_section_header(const char *name)
{
        if (streq(name, "%packages") || streq(name, "%post") || streq(name, "%include"))
                return true;
        for (size_t i = 0; i < ELEMENTSOF(ks_refused_sections); i++)
                if (streq(name, ks_refused_sections[i].name))
                        return true;
        return false;
}

static int ks_section_begin(struct ks_parser *p, struct ks_section *s, const struct ks_loc *loc, char **argv)
{
        int r;

        if (streq(argv[0], "%packages")) {
                struct packages_args a = {};

                r = PARSE_ARGS(loc, argv, packages_options, &a, NULL, 0, NULL);
                if (r < 0)
                        return r;
                p->ks->packages_ignoremissing = p->ks->packages_ignoremissing || a.ignoremissing;
                s->kind = KS_SECTION_PACKAGES;
        } else if (streq(argv[0], "%post")) {
                r = PARSE_ARGS(loc, argv, post_options, &s->script, NULL, 0, NULL);
                if (r < 0)
                        return r;
                if (s->script.interpreter && !valid_abs_path(s->script.interpreter))
                        return log_syntax(loc->file, loc->line, "invalid interpreter '%s': expected an absolute path",
                                          s->script.interpreter);
                if (s->script.log && !valid_abs_path(s->script.log))
                        return log_syntax(loc->file, loc->line, "invalid log file '%s': expected an absolute path",
                                          s->script.log);
                s->script.loc = *loc;
                s->kind = KS_SECTION_POST;
        } else if (streq(argv[0], "%end"))
                return log_syntax(loc->file, loc->line, "%%end without a section");
        else {
                for (size_t i = 0; i < ELEMENTSOF(ks_refused_sections); i++)
                        if (streq(argv[0], ks_refused_sections[i].name))
                                return log_syntax(loc->file, loc->line, "'%s' is not supported: %s", argv[0],
                                                  ks_refused_sections[i].why);
                return log_syntax(loc->file, loc->line, "unknown section '%s'", argv[0]);
        }
        s->loc = *loc;
        p->has_content = true;
        return 0;
}

static int ks_section_end(struct ks_parser *p, struct ks_section *s)
{
        struct kickstart *ks = p->ks;

        if (s->kind == KS_SECTION_POST) {
                struct ks_script *scripts;

                if (!s->script.body) {
                        s->script.body = strdup("");
                        if (!s->script.body)
                                return ks_oom();
                }
                scripts = reallocarray(ks->scripts, ks->n_scripts + 1, sizeof *scripts);
                if (!scripts)
                        return ks_oom();
                ks->scripts = scripts;
                scripts[ks->n_scripts++] = s->script;
        }
        *s = (struct ks_section){};
        return 0;
}

static int ks_script_append(struct ks_section *s, const char *line)
{
        size_t n = strlen(line);

        if (s->body_len + n + 2 > s->body_alloc) {
                size_t want = (s->body_len + n + 2) * 2;
                char *b = realloc(s->script.body, want);
                if (!b)
                        return ks_oom();
                s->script.body = b;
                s->body_alloc = want;
        }
        memcpy(s->script.body + s->body_len, line, n);
        s->body_len += n;
        s->script.body[s->body_len++] = '\n';
        s->script.body[s->body_len] = '\0';
        return 0;
}

static int ks_package(struct ks_parser *p, const struct ks_loc *loc, char *line)
{
        struct kickstart *ks = p->ks;
        char *item, *end, *name;
        bool exclude;

        /* One item a line; '#' starts a comment anywhere (pykickstart). */
        line[strcspn(line, "#")] = '\0';
        item = line + strspn(line, " \t\r\f\v");
        end = item + strlen(item);
        while (end > item && strchr(" \t\r\f\v", end[-1]))
                *--end = '\0';
        if (*item == '\0')
                return 0;
        exclude = item[0] == '-';
        name = item + exclude;
        if (name[0] == '@')
                return log_syntax(loc->file, loc->line,
                                  "package groups, environments and modules are not supported: '%s'", name);
        if (strpbrk(name, "*?["))
                return log_syntax(loc->file, loc->line, "package globs are not supported: '%s'", name);
        if (*name == '\0' || *name == '-' || !in_charset(name, "+._:=~-"))
                return log_syntax(loc->file, loc->line, "invalid package name '%s'", item);
        if (exclude)
                return strv_contains(ks->packages_excluded, name) ? 0 : strv_extend(&ks->packages_excluded, name);
        return strv_contains(ks->packages, name) ? 0 : strv_extend(&ks->packages, name);
}

/* ---- files ---- */

static int ks_parse_text(struct ks_parser *p, const char *file, const char *data, size_t size);

/* Text, not binary: UTF-8 without control characters other than
 * whitespace, and no line longer than KS_LINE_MAX. */
static int ks_check_text(const char *file, const char *data, size_t size)
{
        const uint8_t *d = (const uint8_t *)data;
        size_t line_start = 0;
        unsigned line = 1;

        for (size_t i = 0; i < size;) {
                uint8_t c = d[i];
                size_t n = 1;

                if (c == '\n') {
                        line++;
                        line_start = ++i;
                        continue;
                }
                if (i - line_start >= KS_LINE_MAX)
                        return log_syntax(file, line, "line too long (more than %zu bytes)", KS_LINE_MAX);
                if (c >= 0x80) {
                        /* The UTF-8 length and the range of the second byte that
                         * rule out overlong forms, surrogates and > U+10FFFF. */
                        uint8_t lo = 0x80, hi = 0xbf;

                        if (c >= 0xc2 && c <= 0xdf)
                                n = 2;
                        else if (c >= 0xe0 && c <= 0xef) {
                                n = 3;
                                lo = c == 0xe0 ? 0xa0 : 0x80;
                                hi = c == 0xed ? 0x9f : 0xbf;
                        } else if (c >= 0xf0 && c <= 0xf4) {
                                n = 4;
                                lo = c == 0xf0 ? 0x90 : 0x80;
                                hi = c == 0xf4 ? 0x8f : 0xbf;
                        } else
                                n = 0;
                        if (n == 0 || size - i < n || d[i + 1] < lo || d[i + 1] > hi)
                                n = 0;
                        for (size_t j = 2; n != 0 && j < n; j++)
                                if ((d[i + j] & 0xc0) != 0x80)
                                        n = 0;
                } else if ((c < 0x20 && c != '\t' && c != '\r' && c != '\f' && c != '\v') || c == 0x7f)
                        n = 0;
                if (n == 0)
                        return log_syntax(file, line, "binary data, not a kickstart file");
                i += n;
        }
        return 0;
}

/* ---- the digest ---- */

/* What the digest sees instead of a secret. */
#define KS_SECRET_MARKER "<secret>"

/* The kickstart's digest goes into the manifest, image.json and the seed
 * of every derived GUID, all readable by anyone with the image; a plain
 * SHA-256 of a file with "rootpw --plaintext hunter2" in it would let them
 * test guesses offline at hash speed. So the digest covers the text with
 * the value of each option below replaced by KS_SECRET_MARKER. Crypted
 * hashes (--iscrypted) are replaced too: that hash is in the image's
 * /etc/shadow anyway, but one rule, "no password value reaches the
 * digest", is easier to trust than one with exceptions. Options ingot
 * refuses are listed as well: the parse fails before any digest is
 * taken, and the list stays right if one is accepted some day. */
static const struct ks_secret {
        const char *command;
        bool args; /* its arguments (not options) are secrets: rootpw's password */
        const char *options[3];
} ks_secrets[] = {
        { "rootpw", true, { NULL } },
        { "user", false, { "--password" } },
        { "bootloader", false, { "--password", "--md5pass" } },
        { "part", false, { "--passphrase" } },
        { "partition", false, { "--passphrase" } },
        { "autopart", false, { "--passphrase" } },
        { "network", false, { "--wpakey" } },
};

static bool ks_secret_option(const struct ks_secret *k, const char *w, size_t len)
{
        for (size_t i = 0; i < ELEMENTSOF(k->options) && k->options[i]; i++)
                if (strlen(k->options[i]) == len && strncmp(k->options[i], w, len) == 0)
                        return true;
        return false;
}

static int ks_add_secret(struct ks_parser *p, size_t start, size_t end)
{
        struct ks_read_file *f = &p->read[p->stack_files[p->depth - 1]];
        size_t *n;

        n = reallocarray(f->secrets, 2 * (f->n_secrets + 1), sizeof(*n));
        if (!n)
                return -ENOMEM;
        f->secrets = n;
        n[2 * f->n_secrets] = start;
        n[2 * f->n_secrets + 1] = end;
        f->n_secrets++;
        return 0;
}

/* Records where the secrets of a command line are in its file. argv[i]'s
 * raw text is spans[2i] to spans[2i + 1] from offset. Words are told
 * apart as ks_parse_args() does: an argument is a word that does not start
 * with '-' (or is "-"), "--opt=value" carries its value, and "--opt value"
 * takes the next word unless it starts with "--". */
static int ks_note_secrets(struct ks_parser *p, char **argv, const size_t *spans, size_t offset)
{
        const char *data = p->read[p->stack_files[p->depth - 1]].data;
        const struct ks_secret *k = NULL;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(ks_secrets); i++)
                if (streq(ks_secrets[i].command, argv[0]))
                        k = &ks_secrets[i];
        if (!k)
                return 0;
        for (size_t i = 1; argv[i]; i++) {
                const char *w = argv[i], *eq;
                size_t start = offset + spans[2 * i], end = offset + spans[2 * i + 1];

                if (w[0] != '-' || w[1] == '\0') {
                        if (k->args && (r = ks_add_secret(p, start, end)) < 0)
                                return r;
                        continue;
                }
                eq = strchr(w, '=');
                if (!ks_secret_option(k, w, eq ? (size_t)(eq - w) : strlen(w)))
                        continue;
                if (eq) {
                        /* the raw word's first '=' ends the name: names hold none */
                        const char *raw = memchr(data + start, '=', end - start);

                        r = ks_add_secret(p, raw ? (size_t)(raw - data) + 1 : start, end);
                } else if (argv[i + 1] && !startswith(argv[i + 1], "--")) {
                        i++;
                        r = ks_add_secret(p, offset + spans[2 * i], offset + spans[2 * i + 1]);
                } else
                        r = 0;
                if (r < 0)
                        return r;
        }
        return 0;
}

/* SHA-256 over every file read, in the order read, each with its secrets
 * replaced by KS_SECRET_MARKER. */
static int ks_digest(const struct ks_parser *p, uint8_t ret[static 32])
{
        _cleanup_(md_ctx_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();

        if (!md)
                return -ENOMEM;
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
                return -EIO;
        for (size_t i = 0; i < p->n_files; i++) {
                const struct ks_read_file *f = &p->read[i];
                size_t pos = 0;

                for (size_t k = 0; k < f->n_secrets; k++) {
                        size_t start = f->secrets[2 * k], end = f->secrets[2 * k + 1];

                        if (start < pos || end < start || end > f->size)
                                return -EINVAL; /* a bug, not input */
                        if (EVP_DigestUpdate(md, f->data + pos, start - pos) != 1 ||
                            EVP_DigestUpdate(md, KS_SECRET_MARKER, strlen(KS_SECRET_MARKER)) != 1)
                                return -EIO;
                        pos = end;
                }
                if (EVP_DigestUpdate(md, f->data + pos, f->size - pos) != 1)
                        return -EIO;
        }
        if (EVP_DigestFinal_ex(md, ret, NULL) != 1)
                return -EIO;
        return 0;
}

static void ks_parser_done(struct ks_parser *p)
{
        for (size_t i = 0; i < p->n_files; i++) {
                explicit_bzero(p->read[i].data, p->read[i].size);
                free(p->read[i].data);
                free(p->read[i].secrets);
        }
        free(p->read);
}

/* Reads a file once: counts it against the limits, records its name and
 * keeps a copy for the digest (ks_digest). On success *ret_name points
 * into ks->files. */
static int ks_add_file(struct ks_parser *p, const struct ks_loc *loc, const char *name, const char *data, size_t size,
                       const char **ret_name)
{
        struct ks_read_file *n;
        int r;

        if (loc && p->n_files >= KS_FILES_MAX)
                return log_syntax(loc->file, loc->line, "too many included files (more than %d)", KS_FILES_MAX);
        if (size > KS_SIZE_MAX - p->total_size)
                return log_syntax(loc ? loc->file : name, loc ? loc->line : 0,
                                  "kickstart too large (more than %zu MiB with its includes)", KS_SIZE_MAX / KS_MIB);
        r = strv_extend(&p->ks->files, name);
        if (r < 0)
                return r;
        n = reallocarray(p->read, p->n_files + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        p->read = n;
        n[p->n_files] = (struct ks_read_file){ .data = malloc(size ? size : 1), .size = size };
        if (!n[p->n_files].data)
                return -ENOMEM;
        memcpy(n[p->n_files].data, data, size);
        p->total_size += size;
        p->n_files++;
        *ret_name = p->ks->files[strv_length(p->ks->files) - 1];
        return 0;
}

static int ks_push(struct ks_parser *p, const char *name, const char *id, const char *data, size_t size)
{
        int r;

        p->stack_ids[p->depth] = strdup(id);
        if (!p->stack_ids[p->depth])
                return ks_oom();
        p->stack_files[p->depth] = p->n_files - 1; /* ks_add_file() came just before */
        p->stack_names[p->depth++] = name;
        r = ks_parse_text(p, name, data, size);
        p->depth--;
        p->stack_ids[p->depth] = x_free(p->stack_ids[p->depth]);
        return r;
}

static int ks_include(struct ks_parser *p, const struct ks_loc *loc, char **argv)
{
        _cleanup_free_ char *path = NULL, *id = NULL, *data = NULL, *chain = NULL;
        const char *name, *arg = argv[1], *slash;
        struct stat st;
        size_t size = 0, n;
        int r;

        if (!arg || argv[2])
                return log_syntax(loc->file, loc->line, "'%%include' needs exactly one file name");
        if (isempty(arg))
                return log_syntax(loc->file, loc->line, "'%%include' needs a non-empty file name");

        /* Relative to the directory of the file that includes it. */
        slash = strrchr(loc->file, '/');
        if (arg[0] == '/' || !slash)
                path = strdup(arg);
        else if (asprintf(&path, "%.*s/%s", (int)(slash - loc->file), loc->file, arg) < 0)
                path = NULL;
        if (!path)
                return ks_oom();

        if (p->depth > KS_INCLUDE_DEPTH_MAX)
                return log_syntax(loc->file, loc->line, "includes nested too deeply (more than %d levels)",
                                  KS_INCLUDE_DEPTH_MAX);
        /* Only regular files: "%include /dev/stdin" would wait forever. */
        if (stat(path, &st) < 0)
                return log_syntax(loc->file, loc->line, "cannot read included file '%s': %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return log_syntax(loc->file, loc->line, "included file '%s' is not a regular file", path);
        id = realpath(path, NULL);
        if (!id)
                return log_syntax(loc->file, loc->line, "cannot read included file '%s': %s", path, strerror(errno));
        for (unsigned i = 0; i < p->depth; i++) {
                if (!streq(p->stack_ids[i], id))
                        continue;
                n = 0;
                for (unsigned j = i; j < p->depth; j++)
                        n += strlen(p->stack_names[j]) + 6;
                chain = malloc(n + strlen(path) + 3);
                if (!chain)
                        return ks_oom();
                chain[0] = '\0';
                for (unsigned j = i; j < p->depth; j++)
                        strcat(strcat(strcat(chain, "'"), p->stack_names[j]), "' -> ");
                strcat(strcat(strcat(chain, "'"), path), "'");
                return log_syntax(loc->file, loc->line, "include cycle: %s", chain);
        }

        r = read_full_file(path, KS_SIZE_MAX - p->total_size, &data, &size);
        if (r == -EFBIG)
                return log_syntax(loc->file, loc->line, "kickstart too large (more than %zu MiB with its includes)",
                                  KS_SIZE_MAX / KS_MIB);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return log_syntax(loc->file, loc->line, "cannot read included file '%s': %s", path, strerror(-r));
        r = ks_add_file(p, loc, path, data, size, &name);
        if (r >= 0)
                r = ks_push(p, name, id, data, size);
        explicit_bzero(data, size);
        return r;
}

static int ks_line(struct ks_parser *p, struct ks_section *s, const struct ks_loc *loc, char *line)
{
        _cleanup_strv_erase_ char **argv = NULL;
        _cleanup_free_ size_t *spans = NULL;
        const char *error = NULL, *t = line + strspn(line, " \t\r\f\v");
        int r;

        if (s->kind != KS_SECTION_NONE) {
                if (t[0] == '%') {
                        size_t n = strcspn(t, " \t\r\f\v#");
                        _cleanup_free_ char *word = strndup(t, n);

                        if (!word)
                                return ks_oom();
                        if (streq(word, "%end")) {
                                t += n;
                                t += strspn(t, " \t\r\f\v");
                                if (*t != '\0' && *t != '#')
                                        return log_syntax(loc->file, loc->line, "unexpected text after %%end");
                                return ks_section_end(p, s);
                        }
                        if (streq(word, "%include"))
                                return log_syntax(loc->file, loc->line, "%%include inside a section is not supported");
                        if (is_section_header(word))
                                return log_syntax(s->loc.file, s->loc.line, "missing %%end for '%s'",
                                                  s->kind == KS_SECTION_POST ? "%post" : "%packages");
                }
                if (s->kind == KS_SECTION_PACKAGES)
                        return ks_package(p, loc, line);
                return ks_script_append(s, line);
        }

        if (t[0] == '\0' || t[0] == '#')
                return 0;
        r = split_words_spans(t, &argv, &spans, &error);
        if (r == -EBADMSG)
                return log_syntax(loc->file, loc->line, "%s", error);
        if (r < 0)
                return r;
        if (!argv[0])
                return 0;
        r = ks_note_secrets(p, argv, spans, p->line_offset + (size_t)(t - line));
        if (r < 0)
                return r;
        if (argv[0][0] == '%') {
                if (streq(argv[0], "%include"))
                        return ks_include(p, loc, argv);
                return ks_section_begin(p, s, loc, argv);
        }
        p->has_content = true;
        return ks_command(p, loc, argv);
}

static int ks_parse_text(struct ks_parser *p, const char *file, const char *data, size_t size)
{
        _cleanup_(ks_section_done) struct ks_section s = {};
        size_t pos = 0;
        unsigned line = 0;
        int r;

        r = ks_check_text(file, data, size);
        if (r < 0)
                return r;
        if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
                pos = 3; /* a byte-order mark some editors write */

        while (pos < size) {
                const char *nl = memchr(data + pos, '\n', size - pos);
                size_t len = nl ? (size_t)(nl - (data + pos)) : size - pos;
                _cleanup_erase_ char *copy = NULL;
                struct ks_loc loc = { .file = file, .line = ++line };

                if (len > 0 && data[pos + len - 1] == '\r')
                        len--;
                copy = strndup(data + pos, len);
                if (!copy)
                        return ks_oom();
                p->line_offset = pos;
                pos += nl ? (size_t)(nl - (data + pos)) + 1 : size - pos;
                r = ks_line(p, &s, &loc, copy);
                if (r < 0)
                        return r;
        }
        if (s.kind != KS_SECTION_NONE)
                return log_syntax(s.loc.file, s.loc.line, "missing %%end for '%s'",
                                  s.kind == KS_SECTION_POST ? "%post" : "%packages");
        return 0;
}

/* The cross-command rules that need the whole kickstart. */
static int ks_verify(struct ks_parser *p, const char *name)
{
        struct kickstart *ks = p->ks;

        if (!p->has_content)
                return log_syntax(name, 0, "empty kickstart: no commands or sections");
        /* An exclusion wins over an inclusion wherever each was written
         * (pykickstart), so a shared %include can be trimmed. */
        STRV_FOREACH (s, ks->packages_excluded)
                strv_remove(ks->packages, *s);
        return 0;
}

static int ks_parse_top(const char *name, const char *id, const char *data, size_t size,
                        const struct ks_parse_options *opts, struct kickstart **ret)
{
        _cleanup_(kickstart_freep) struct kickstart *ks = NULL;
        _cleanup_(ks_parser_done) struct ks_parser p = {};
        const char *file;
        int r;

        if (size > KS_SIZE_MAX)
                return log_syntax(name, 0, "kickstart too large (more than %zu MiB)", KS_SIZE_MAX / KS_MIB);
        ks = calloc(1, sizeof *ks);
        if (!ks)
                return log_error_errno(-ENOMEM, "cannot parse kickstart '%s': %m", name);
        ks->bootloader_timeout = -1;
        ks->firewall = -1;
        ks->network_onboot = -1;

        p = (struct ks_parser){ .ks = ks, .salt_seed = opts ? opts->salt_seed : NULL };
        r = ks_add_file(&p, NULL, name, data, size, &file);
        if (r >= 0)
                r = ks_push(&p, file, id, data, size);
        if (r >= 0)
                r = ks_verify(&p, name);
        if (r == -EBADMSG)
                return r;
        if (r < 0)
                return log_error_errno(r, "cannot parse kickstart '%s': %m", name);
        r = ks_digest(&p, ks->digest);
        if (r < 0)
                return log_error_errno(r, "cannot take the digest of kickstart '%s': %m", name);
        *ret = TAKE_PTR(ks);
        return 0;
}

int kickstart_parse_buffer(const char *name, const char *data, size_t size, const struct ks_parse_options *opts,
                           struct kickstart **ret)
{
        _cleanup_free_ char *id = NULL;

        /* The canonical path finds a cycle back to this file; a buffer
         * that is no file is known by its name. */
        id = realpath(name, NULL);
        return ks_parse_top(name, id ? id : name, data, size, opts, ret);
}

int kickstart_parse_file(const char *path, const struct ks_parse_options *opts, struct kickstart **ret)
{
        _cleanup_free_ char *data = NULL, *id = NULL;
        size_t size = 0;
        int r;

        r = read_full_file(path, KS_SIZE_MAX, &data, &size);
        if (r == -EFBIG)
                return log_syntax(path, 0, "kickstart too large (more than %zu MiB)", KS_SIZE_MAX / KS_MIB);
        if (r < 0)
                return log_error_errno(r, "cannot read kickstart '%s': %m", path);
        id = realpath(path, NULL);
        r = ks_parse_top(path, id ? id : path, data, size, opts, ret);
        explicit_bzero(data, size);
        return r;
}

struct kickstart *kickstart_free(struct kickstart *ks)
{
        if (!ks)
                return NULL;
        strv_free(ks->files);
        for (size_t i = 0; i < ks->n_parts; i++) {
                free(ks->parts[i].mountpoint);
                free(ks->parts[i].fstype);
                free(ks->parts[i].label);
        }
        free(ks->parts);
        free(ks->bootloader_append);
        free(ks->rootpw_hash);
        for (size_t i = 0; i < ks->n_users; i++) {
                free(ks->users[i].name);
                free(ks->users[i].password_hash);
                strv_free(ks->users[i].groups);
                free(ks->users[i].shell);
                free(ks->users[i].homedir);
                free(ks->users[i].gecos);
        }
        free(ks->users);
        for (size_t i = 0; i < ks->n_sshkeys; i++) {
                free(ks->sshkeys[i].username);
                free(ks->sshkeys[i].key);
        }
        free(ks->sshkeys);
        free(ks->hostname);
        free(ks->network_bootproto);
        free(ks->network_device);
        free(ks->timezone);
        free(ks->lang);
        free(ks->keyboard);
        strv_free(ks->services_enabled);
        strv_free(ks->services_disabled);
        strv_free(ks->firewall_ports);
        strv_free(ks->firewall_services);
        strv_free(ks->packages);
        strv_free(ks->packages_excluded);
        for (size_t i = 0; i < ks->n_scripts; i++) {
                free(ks->scripts[i].interpreter);
                free(ks->scripts[i].log);
                free(ks->scripts[i].body);
        }
        free(ks->scripts);
        free(ks);
        return NULL;
}
