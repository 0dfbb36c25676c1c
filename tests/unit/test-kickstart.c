/* Unit tests for the kickstart parser: the lexer, every command's happy
 * path, %include with its limits, password hashing, and one clear
 * "file:line: message" for every kind of malformed input. */
#include "config.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kickstart.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/macro.h"
#include "shared/strv.h"

/* ---- helpers ---- */

static int saved_stderr = -1;
static FILE *capture_file;

/* Everything written to fd 2 between these two goes into a string. */
static void capture_start(void)
{
        fflush(stderr);
        capture_file = tmpfile();
        assert_non_null(capture_file);
        saved_stderr = dup(STDERR_FILENO);
        assert_true(saved_stderr >= 0);
        assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

static char *capture_stop(void)
{
        char *buf;
        long n;

        fflush(stderr);
        assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
        close(saved_stderr);
        saved_stderr = -1;
        n = ftell(capture_file);
        assert_true(n >= 0);
        buf = calloc(1, (size_t)n + 1);
        assert_non_null(buf);
        rewind(capture_file);
        assert_int_equal(fread(buf, 1, (size_t)n, capture_file), (size_t)n);
        fclose(capture_file);
        capture_file = NULL;
        return buf;
}

static size_t count_lines(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                n += *s == '\n';
        return n;
}

/* Lines that are not warnings: a failed parse has exactly one. */
static size_t count_error_lines(const char *s)
{
        size_t n = 0;

        for (const char *l = s; *l;) {
                const char *e = strchrnul(l, '\n');
                const char *w = strstr(l, ": warning: ");
                if (!w || w > e)
                        n++;
                l = *e ? e + 1 : e;
        }
        return n;
}

static const char *test_data(void)
{
        return getenv("INGOT_TEST_DATA");
}

static char *data_path(const char *rel)
{
        char *p;

        assert_true(asprintf(&p, "%s/ks/%s", test_data(), rel) >= 0);
        return p;
}

#define NEED_DATA()                                                                                                    \
        do {                                                                                                           \
                if (!test_data()) {                                                                                    \
                        print_message("INGOT_TEST_DATA is not set, skipping\n");                                       \
                        skip();                                                                                        \
                }                                                                                                      \
        } while (0)

static int parse_text(const char *text, const uint8_t *seed, struct kickstart **ret, char **ret_stderr)
{
        struct ks_parse_options opts = { .salt_seed = seed };
        char *err;
        int r;

        capture_start();
        r = kickstart_parse_buffer("t.ks", text, strlen(text), &opts, ret);
        err = capture_stop();
        if (ret_stderr)
                *ret_stderr = err;
        else
                free(err);
        return r;
}

/* Parses text that must be accepted without a word on stderr. */
static struct kickstart *parse_ok(const char *text)
{
        struct kickstart *ks = NULL;
        char *err = NULL;
        int r;

        r = parse_text(text, NULL, &ks, &err);
        if (r != 0 || *err)
                print_error("unexpected failure %d for:\n%s\nstderr: %s\n", r, text, err);
        assert_int_equal(r, 0);
        assert_string_equal(err, "");
        free(err);
        assert_non_null(ks);
        return ks;
}

/* Input that must fail with -EBADMSG and exactly one line on stderr,
 * which contains want (with its "t.ks:N: " prefix). */
static void expect_error_buf(const char *data, size_t size, const char *want)
{
        struct kickstart *ks = NULL;
        char *err;
        int r;

        capture_start();
        r = kickstart_parse_buffer("t.ks", data, size, NULL, &ks);
        err = capture_stop();
        if (r != -EBADMSG || !strstr(err, want) || count_lines(err) != 1)
                print_error("want -EBADMSG and '%s', got %d and '%s'\n", want, r, err);
        assert_int_equal(r, -EBADMSG);
        assert_null(ks);
        assert_non_null(strstr(err, want));
        assert_int_equal(count_lines(err), 1);
        free(err);
}

static void expect_error(const char *text, const char *want)
{
        expect_error_buf(text, strlen(text), want);
}

static void expect_file_error(const char *path, const char *want)
{
        struct kickstart *ks = NULL;
        char *err;
        int r;

        capture_start();
        r = kickstart_parse_file(path, NULL, &ks);
        err = capture_stop();
        if (r != -EBADMSG || !strstr(err, want) || count_lines(err) != 1)
                print_error("want -EBADMSG and '%s', got %d and '%s'\n", want, r, err);
        assert_int_equal(r, -EBADMSG);
        assert_null(ks);
        assert_non_null(strstr(err, want));
        assert_int_equal(count_lines(err), 1);
        free(err);
}

static char *strv_join(char **l)
{
        size_t n = 1;
        char *s;

        STRV_FOREACH (i, l)
                n += strlen(*i) + 1;
        s = calloc(1, n);
        assert_non_null(s);
        STRV_FOREACH (i, l) {
                if (i != l)
                        strcat(s, "|");
                strcat(s, *i);
        }
        return s;
}

static void assert_strv(char **l, const char *joined)
{
        char *s = strv_join(l);
        assert_string_equal(s, joined);
        free(s);
}

/* ---- the lexer ---- */

static void test_split_words(void **state)
{
        static const struct {
                const char *line;
                const char *words; /* joined with '|'; NULL = error */
                const char *error;
        } cases[] = {
                { "", "", NULL },
                { "   \t ", "", NULL },
                { "# only a comment", "", NULL },
                { "part / --size 512", "part|/|--size|512", NULL },
                { "  a\tb  c ", "a|b|c", NULL },
                { "a #comment here", "a", NULL },
                { "a#b c", "a#b|c", NULL },
                { "a '#not a comment'", "a|#not a comment", NULL },
                { "--append=\"console=tty0 console=ttyS0,115200\"", "--append=console=tty0 console=ttyS0,115200",
                  NULL },
                { "'it''s'", "its", NULL },
                { "'a \\ b'", "a \\ b", NULL },
                { "\"a \\\" \\\\ \\$ \\` \\n\"", "a \" \\ $ ` \\n", NULL },
                { "a\\ b", "a b", NULL },
                { "\\#x", "#x", NULL },
                { "''", "", NULL }, /* one empty word, see below */
                { "x '' y", "x||y", NULL },
                { "pre'mid'\"dle\"post", "premiddlepost", NULL },
                { "'unterminated", NULL, "unterminated quote" },
                { "\"unterminated", NULL, "unterminated quote" },
                { "\"ends with backslash\\\"", NULL, "unterminated quote" },
                { "trailing\\", NULL, "backslash at end of line" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char **words = NULL;
                const char *error = NULL;
                int r;

                r = ks_split_words(cases[i].line, &words, &error);
                if (!cases[i].words) {
                        assert_int_equal(r, -EBADMSG);
                        assert_string_equal(error, cases[i].error);
                        assert_null(words);
                        continue;
                }
                assert_int_equal(r, 0);
                assert_null(error);
                assert_non_null(words);
                assert_strv(words, cases[i].words);
                strv_free(words);
        }

        /* '' is one empty word, not none */
        {
                char **words = NULL;
                assert_int_equal(ks_split_words("''", &words, NULL), 0);
                assert_int_equal(strv_length(words), 1);
                assert_string_equal(words[0], "");
                strv_free(words);
                assert_int_equal(ks_split_words("", &words, NULL), 0);
                assert_int_equal(strv_length(words), 0);
                strv_free(words);
        }
}

/* ---- happy paths ---- */

static void test_full(void **state)
{
        struct kickstart *ks = NULL;
        char *path, *err = NULL;
        int r;

        NEED_DATA();
        path = data_path("full.ks");
        capture_start();
        r = kickstart_parse_file(path, NULL, &ks);
        err = capture_stop();
        assert_string_equal(err, "");
        assert_int_equal(r, 0);

        assert_int_equal(strv_length(ks->files), 1);
        assert_string_equal(ks->files[0], path);

        assert_true(ks->zerombr);
        assert_true(ks->clearpart);
        assert_false(ks->autopart);
        assert_int_equal(ks->n_parts, 4);
        assert_string_equal(ks->parts[0].mountpoint, "biosboot");
        assert_int_equal(ks->parts[0].size, 1ULL << 20);
        assert_null(ks->parts[0].fstype);
        assert_string_equal(ks->parts[1].mountpoint, "/boot/efi");
        assert_string_equal(ks->parts[1].fstype, "efi");
        assert_string_equal(ks->parts[1].label, "ESP");
        assert_int_equal(ks->parts[1].size, 200ULL << 20);
        assert_string_equal(ks->parts[2].mountpoint, "/");
        assert_int_equal(ks->parts[2].size, 1024ULL << 20);
        assert_int_equal(ks->parts[2].maxsize, 4096ULL << 20);
        assert_true(ks->parts[2].grow);
        assert_false(ks->parts[1].grow);
        assert_string_equal(ks->parts[2].fstype, "ext4");
        assert_string_equal(ks->parts[2].label, "root");
        assert_ptr_equal(ks->parts[2].loc.file, ks->files[0]);
        assert_int_equal(ks->parts[2].loc.line, 6);
        assert_string_equal(ks->parts[3].mountpoint, "swap");
        assert_null(ks->parts[3].label);
        assert_int_equal(ks->parts[3].maxsize, 0);

        assert_string_equal(ks->bootloader_append, "console=tty0 console=ttyS0,115200");
        assert_int_equal(ks->bootloader_timeout, 3);

        assert_true(ks->rootpw_set);
        assert_false(ks->rootpw_lock);
        assert_string_equal(
                ks->rootpw_hash,
                "$6$saltsalt$Yx8hqDlO5vQ0kW0vVnZpQ8y2vD6H7WmM0tQfVd3d7KcIuR3eM8p1rS.7qD3mE0T2lZ8vN9bK1cX4yP6oL5nA/");

        assert_int_equal(ks->n_users, 2);
        assert_string_equal(ks->users[0].name, "deploy");
        assert_strv(ks->users[0].groups, "wheel|adm");
        assert_string_equal(ks->users[0].shell, "/bin/bash");
        assert_string_equal(ks->users[0].homedir, "/home/deploy");
        assert_string_equal(ks->users[0].gecos, "Deploy User");
        assert_true(ks->users[0].has_uid);
        assert_int_equal(ks->users[0].uid, 1000);
        assert_true(ks->users[0].has_gid);
        assert_int_equal(ks->users[0].gid, 1000);
        assert_true(ks->users[0].lock);
        assert_null(ks->users[0].password_hash);
        assert_string_equal(ks->users[1].name, "ops");
        assert_false(ks->users[1].has_uid);
        assert_false(ks->users[1].has_gid);
        assert_false(ks->users[1].lock);
        assert_null(ks->users[1].groups);
        assert_non_null(ks->users[1].password_hash);
        assert_true(strncmp(ks->users[1].password_hash, "$y$", 3) == 0);

        assert_int_equal(ks->n_sshkeys, 1);
        assert_string_equal(ks->sshkeys[0].username, "deploy");
        assert_true(strncmp(ks->sshkeys[0].key, "ssh-ed25519 AAAA", 16) == 0);

        assert_string_equal(ks->hostname, "web.example.com");
        assert_string_equal(ks->network_bootproto, "dhcp");
        assert_string_equal(ks->network_device, "eth0");
        assert_true(ks->network_activate);
        assert_true(ks->network_noipv6);
        assert_int_equal(ks->network_onboot, 1);

        assert_string_equal(ks->timezone, "Europe/Berlin");
        assert_true(ks->timezone_utc);
        assert_string_equal(ks->lang, "en_US.UTF-8");
        assert_string_equal(ks->keyboard, "de");

        assert_strv(ks->services_enabled, "nginx|sshd|chronyd");
        assert_strv(ks->services_disabled, "cups");
        assert_int_equal(ks->selinux, KS_SELINUX_ENFORCING);
        assert_int_equal(ks->firewall, 1);
        assert_strv(ks->firewall_ports, "80:tcp|443:tcp");
        assert_strv(ks->firewall_services, "ssh|http");

        assert_strv(ks->packages, "nginx|curl");
        assert_strv(ks->packages_excluded, "nano|vim-tiny");
        assert_true(ks->packages_ignoremissing);

        assert_int_equal(ks->n_scripts, 2);
        assert_string_equal(ks->scripts[0].interpreter, "/bin/bash");
        assert_true(ks->scripts[0].erroronfail);
        assert_false(ks->scripts[0].nochroot);
        assert_string_equal(ks->scripts[0].log, "/root/post.log");
        assert_string_equal(ks->scripts[0].body, "echo \"hello\" > /etc/motd\nprintf '%s\\n' done\n");
        assert_int_equal(ks->scripts[0].loc.line, 32);
        assert_true(ks->scripts[1].nochroot);
        assert_null(ks->scripts[1].interpreter);
        assert_null(ks->scripts[1].log);
        assert_false(ks->scripts[1].erroronfail);
        assert_string_equal(ks->scripts[1].body, "cp /etc/resolv.conf \"$INSTALL_ROOT/etc/resolv.conf\"\n");

        kickstart_free(ks);
        free(path);
        free(err);
}

static void test_defaults(void **state)
{
        struct kickstart *ks = parse_ok("lang C.UTF-8\n");

        assert_int_equal(ks->bootloader_timeout, -1);
        assert_int_equal(ks->firewall, -1);
        assert_int_equal(ks->network_onboot, -1);
        assert_int_equal(ks->selinux, KS_SELINUX_UNSET);
        assert_false(ks->rootpw_set);
        assert_null(ks->packages);
        assert_int_equal(ks->n_scripts, 0);
        assert_int_equal(ks->n_parts, 0);
        kickstart_free(ks);
}

static void test_commands(void **state)
{
        struct kickstart *ks;

        /* "--opt value" and "--opt=value" are the same */
        ks = parse_ok("part / --size=512 --fstype=xfs\npartition /var --size 64 --fstype xfs --grow\n");
        assert_int_equal(ks->n_parts, 2);
        assert_int_equal(ks->parts[0].size, 512ULL << 20);
        assert_string_equal(ks->parts[1].mountpoint, "/var");
        assert_int_equal(ks->parts[1].size, 64ULL << 20);
        assert_true(ks->parts[1].grow);
        kickstart_free(ks);

        ks = parse_ok("autopart --type=plain\nclearpart --none\n");
        assert_true(ks->autopart);
        assert_false(ks->clearpart);
        kickstart_free(ks);

        ks = parse_ok("bootloader --timeout 0\n");
        assert_int_equal(ks->bootloader_timeout, 0);
        assert_null(ks->bootloader_append);
        kickstart_free(ks);

        ks = parse_ok("keyboard us\n");
        assert_string_equal(ks->keyboard, "us");
        kickstart_free(ks);
        ks = parse_ok("keyboard --xlayouts=fr,us\n");
        assert_string_equal(ks->keyboard, "fr");
        kickstart_free(ks);

        ks = parse_ok("selinux --disabled\nfirewall --disabled\n");
        assert_int_equal(ks->selinux, KS_SELINUX_DISABLED);
        assert_int_equal(ks->firewall, 0);
        kickstart_free(ks);
        ks = parse_ok("selinux --permissive\nfirewall\n");
        assert_int_equal(ks->selinux, KS_SELINUX_PERMISSIVE);
        assert_int_equal(ks->firewall, 1);
        kickstart_free(ks);

        ks = parse_ok("timezone Etc/UTC\n");
        assert_string_equal(ks->timezone, "Etc/UTC");
        assert_false(ks->timezone_utc);
        kickstart_free(ks);

        ks = parse_ok("network --bootproto bootp --hostname h1\nnetwork --hostname=h1 --onboot=no\n");
        assert_string_equal(ks->network_bootproto, "dhcp");
        assert_string_equal(ks->hostname, "h1");
        assert_false(ks->network_activate);
        assert_int_equal(ks->network_onboot, 0);
        kickstart_free(ks);

        ks = parse_ok("sshkey --username=root 'ecdsa-sha2-nistp256 AAAAE2VjZHNh x'\n"
                      "sshkey --username root \"ssh-rsa AAAAB3 y\"\n");
        assert_int_equal(ks->n_sshkeys, 2);
        assert_string_equal(ks->sshkeys[1].key, "ssh-rsa AAAAB3 y");
        kickstart_free(ks);

        /* %packages sections merge; an exclusion wins wherever it is */
        ks = parse_ok("%packages\n-vim\nbusybox\n%end\n%packages\nvim\nbusybox\n  # comment\n%end\n");
        assert_strv(ks->packages, "busybox");
        assert_strv(ks->packages_excluded, "vim");
        assert_false(ks->packages_ignoremissing);
        kickstart_free(ks);

        /* an empty %post, %end with a comment, whitespace before %end */
        ks = parse_ok("%post\n%end # done\n%post --logfile /tmp/x\n  %end\n");
        assert_int_equal(ks->n_scripts, 2);
        assert_string_equal(ks->scripts[0].body, "");
        assert_string_equal(ks->scripts[1].log, "/tmp/x");
        kickstart_free(ks);

        /* CRLF line ends and a byte-order mark */
        ks = parse_ok("\xef\xbb\xbflang C.UTF-8\r\ntimezone Etc/UTC --utc\r\n");
        assert_string_equal(ks->lang, "C.UTF-8");
        assert_true(ks->timezone_utc);
        kickstart_free(ks);

        /* no newline at the end of the last line */
        ks = parse_ok("lang C.UTF-8");
        assert_string_equal(ks->lang, "C.UTF-8");
        kickstart_free(ks);
}

static void test_warnings(void **state)
{
        static const char *const ignored[] = {
                "text",     "graphical", "cmdline", "reboot --eject",     "shutdown",
                "poweroff", "halt",      "skipx",   "firstboot --enable", "eula --agreed"
        };
        struct kickstart *ks = NULL;
        char *err = NULL, *text;

        for (size_t i = 0; i < ELEMENTSOF(ignored); i++) {
                char word[32];

                assert_true(asprintf(&text, "lang C.UTF-8\n%s\n", ignored[i]) >= 0);
                assert_int_equal(parse_text(text, NULL, &ks, &err), 0);
                sscanf(ignored[i], "%31s", word);
                assert_non_null(strstr(err, "t.ks:2: warning: ignoring '"));
                assert_non_null(strstr(err, word));
                assert_int_equal(count_lines(err), 1);
                kickstart_free(ks);
                free(err);
                free(text);
        }

        assert_int_equal(parse_text("%packages --excludedocs --nocore\nbusybox\n%end\n", NULL, &ks, &err), 0);
        assert_non_null(strstr(err, "t.ks:1: warning: ignoring option '--excludedocs' of '%packages'"));
        assert_non_null(strstr(err, "t.ks:1: warning: ignoring option '--nocore' of '%packages'"));
        assert_strv(ks->packages, "busybox");
        kickstart_free(ks);
        free(err);
}

/* ---- passwords ---- */

static bool ks_contains(const struct kickstart *ks, const char *needle)
{
        for (size_t i = 0; i < ks->n_users; i++)
                if (ks->users[i].password_hash && strstr(ks->users[i].password_hash, needle))
                        return true;
        return ks->rootpw_hash && strstr(ks->rootpw_hash, needle);
}

static void assert_hash_matches(const char *hash, const char *password)
{
        struct crypt_data *cd = calloc(1, sizeof *cd);
        const char *h;

        assert_non_null(cd);
        h = crypt_rn(password, hash, cd, sizeof *cd);
        assert_non_null(h);
        assert_string_equal(h, hash);
        free(cd);
}

static void test_passwords(void **state)
{
        static const uint8_t seed1[32] = { 1, 2, 3 }, seed2[32] = { 4, 5, 6 };
        struct kickstart *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        const char *text = "rootpw --plaintext hunter2-secret\nuser --name alice --password hunter2-secret\n";

        assert_int_equal(parse_text(text, seed1, &a, NULL), 0);
        assert_int_equal(parse_text(text, seed1, &b, NULL), 0);
        assert_int_equal(parse_text(text, seed2, &c, NULL), 0);
        assert_int_equal(parse_text(text, NULL, &d, NULL), 0);

        assert_true(strncmp(a->rootpw_hash, "$y$", 3) == 0);
        assert_true(strncmp(a->users[0].password_hash, "$y$", 3) == 0);
        /* same inputs, same hash; another seed, another salt */
        assert_string_equal(a->rootpw_hash, b->rootpw_hash);
        assert_string_equal(a->users[0].password_hash, b->users[0].password_hash);
        assert_string_not_equal(a->rootpw_hash, c->rootpw_hash);
        assert_string_not_equal(a->rootpw_hash, d->rootpw_hash);
        /* the salt depends on the user name too */
        assert_string_not_equal(a->rootpw_hash, a->users[0].password_hash);
        /* and the hashes are real */
        assert_hash_matches(a->rootpw_hash, "hunter2-secret");
        assert_hash_matches(c->users[0].password_hash, "hunter2-secret");
        assert_hash_matches(d->rootpw_hash, "hunter2-secret");

        assert_false(ks_contains(a, "hunter2"));
        assert_false(ks_contains(c, "hunter2"));
        assert_false(a->rootpw_lock);
        kickstart_free(a);
        kickstart_free(b);
        kickstart_free(c);
        kickstart_free(d);

        /* no flag at all: plain text too (pykickstart), hashed */
        a = parse_ok("rootpw 'plain text pw'\n");
        assert_true(strncmp(a->rootpw_hash, "$y$", 3) == 0);
        assert_false(ks_contains(a, "plain text"));
        assert_hash_matches(a->rootpw_hash, "plain text pw");
        kickstart_free(a);

        /* --lock alone, and with a password */
        a = parse_ok("rootpw --lock\n");
        assert_true(a->rootpw_set);
        assert_true(a->rootpw_lock);
        assert_null(a->rootpw_hash);
        kickstart_free(a);
        a = parse_ok("rootpw --lock --iscrypted '$y$j9T$abc$def'\n");
        assert_true(a->rootpw_lock);
        assert_string_equal(a->rootpw_hash, "$y$j9T$abc$def");
        kickstart_free(a);
        a = parse_ok("user --name=bob --iscrypted --password=$6$salt$hash --lock\n");
        assert_string_equal(a->users[0].password_hash, "$6$salt$hash");
        assert_true(a->users[0].lock);
        kickstart_free(a);
}

/* ---- includes and the digest ---- */

static void test_include(void **state)
{
        _cleanup_free_ char *main_path = NULL, *common = NULL, *leaf = NULL, *leaf2 = NULL, *all = NULL;
        const char *names[4];
        struct kickstart *ks = NULL;
        char *err = NULL;
        uint8_t want[32];
        size_t n = 0;
        int r;

        NEED_DATA();
        main_path = data_path("include-main.ks");
        capture_start();
        r = kickstart_parse_file(main_path, NULL, &ks);
        err = capture_stop();
        assert_string_equal(err, "");
        free(err);
        assert_int_equal(r, 0);

        assert_int_equal(strv_length(ks->files), 4);
        assert_string_equal(ks->files[0], main_path);
        assert_non_null(strstr(ks->files[1], "/ks/include-common.ks"));
        assert_non_null(strstr(ks->files[2], "/ks/sub/include-leaf.ks"));
        assert_non_null(strstr(ks->files[3], "/ks/sub/include-leaf2.ks"));
        assert_string_equal(ks->lang, "C.UTF-8");
        assert_string_equal(ks->keyboard, "us");
        assert_string_equal(ks->timezone, "Etc/UTC");
        assert_int_equal(ks->selinux, KS_SELINUX_PERMISSIVE);
        assert_strv(ks->packages, "vim");

        /* the digest: SHA-256 over every file's bytes in read order */
        for (size_t i = 0; i < 4; i++)
                names[i] = ks->files[i];
        all = malloc(4 * 4096);
        assert_non_null(all);
        for (size_t i = 0; i < 4; i++) {
                _cleanup_free_ char *d = NULL;
                size_t size;
                assert_int_equal(read_full_file(names[i], 4096, &d, &size), 0);
                memcpy(all + n, d, size);
                n += size;
        }
        sha256_buffer(all, n, want);
        assert_memory_equal(ks->digest, want, 32);
        kickstart_free(ks);

        /* from a buffer: %include resolves beside the buffer's name */
        {
                _cleanup_free_ char *name = data_path("virtual.ks");
                const char *text = "%include include-common.ks\n";
                ks = NULL;
                capture_start();
                r = kickstart_parse_buffer(name, text, strlen(text), NULL, &ks);
                err = capture_stop();
                assert_string_equal(err, "");
                free(err);
                assert_int_equal(r, 0);
                assert_string_equal(ks->keyboard, "us");
                assert_string_equal(ks->files[0], name);
                kickstart_free(ks);
        }
}

static void test_digest(void **state)
{
        const char *text = "lang C.UTF-8\n";
        struct kickstart *a = parse_ok(text), *b = parse_ok(text), *c = parse_ok("lang C.UTF-8 \n");
        uint8_t want[32];

        sha256_buffer(text, strlen(text), want);
        assert_memory_equal(a->digest, want, 32);
        assert_memory_equal(a->digest, b->digest, 32);
        assert_memory_not_equal(a->digest, c->digest, 32);
        kickstart_free(a);
        kickstart_free(b);
        kickstart_free(c);
}

static void assert_same_digest(const char *x, const char *y, bool same)
{
        struct kickstart *a = parse_ok(x), *b = parse_ok(y);

        if ((memcmp(a->digest, b->digest, 32) == 0) != same)
                print_error("the digests of\n%s\nand\n%s\nshould be %s\n", x, y, same ? "the same" : "different");
        assert_true((memcmp(a->digest, b->digest, 32) == 0) == same);
        kickstart_free(a);
        kickstart_free(b);
}

/* The digest (manifest, image.json, the GUIDs' seed) must not let anyone
 * with the image test password guesses: it sees each secret as a marker. */
static void test_digest_secrets(void **state)
{
        static const char *const same[][2] = {
                { "rootpw --plaintext secret\n", "rootpw --plaintext hunter2\n" },
                { "rootpw secret # a comment\n", "rootpw 'another one' # a comment\n" },
                { "rootpw --iscrypted '$y$j9T$abc$def'\n", "rootpw --iscrypted $6$salt$hash\n" },
                { "lang C.UTF-8\nrootpw --plaintext \"a b\" --lock\n", "lang C.UTF-8\nrootpw --plaintext c --lock\n" },
                { "user --name=bob --password=secret\n", "user --name=bob --password=other\n" },
                { "user --name=bob --password secret --plaintext\n", "user --name=bob --password 'x y' --plaintext\n" },
                { "user --name=bob --password=\"a b\"\n", "user --name=bob --password=c\n" },
                { "user --name=bob --iscrypted --password=$6$salt$hash\n",
                  "user --name=bob --iscrypted --password=$y$j9T$abc$def\n" },
        };
        static const char *const different[][2] = {
                { "rootpw --plaintext s\n", "rootpw --iscrypted $6$salt$hash\n" },
                { "rootpw --plaintext s\nlang C.UTF-8\n", "rootpw --plaintext s\nlang en_US.UTF-8\n" },
                { "user --name=bob --password=s\n", "user --name=alice --password=s\n" },
                { "user --name=bob --password=s --gecos x\n", "user --name=bob --password=s --gecos y\n" },
                { "user --name=bob --password=s\n", "user --name=bob --password s\n" },
                { "rootpw --plaintext s\n", "rootpw  --plaintext s\n" },
        };
        static const char with_secret[] = "lang C.UTF-8\nrootpw --plaintext secret\nuser --name=bob --password=pw\n";
        static const char redacted[] =
                "lang C.UTF-8\nrootpw --plaintext <secret>\nuser --name=bob --password=<secret>\n";
        static const char no_secret[] = "rootpw --lock\nuser --name=bob --lock\n";
        struct kickstart *ks;
        uint8_t plain[32];

        for (size_t i = 0; i < ELEMENTSOF(same); i++)
                assert_same_digest(same[i][0], same[i][1], true);
        for (size_t i = 0; i < ELEMENTSOF(different); i++)
                assert_same_digest(different[i][0], different[i][1], false);

        /* not the plain SHA-256 when a secret is there, but that of the
         * text with the values replaced; the plain one when there is none */
        ks = parse_ok(with_secret);
        sha256_buffer(with_secret, strlen(with_secret), plain);
        assert_memory_not_equal(ks->digest, plain, 32);
        sha256_buffer(redacted, strlen(redacted), plain);
        assert_memory_equal(ks->digest, plain, 32);
        kickstart_free(ks);
        ks = parse_ok(no_secret);
        sha256_buffer(no_secret, strlen(no_secret), plain);
        assert_memory_equal(ks->digest, plain, 32);
        kickstart_free(ks);
}

/* A password in an included file is kept out of the digest too, and the
 * files still count in the order read. */
static void test_digest_secrets_include(void **state)
{
        char dir[] = "/tmp/test-kickstart-XXXXXX";
        _cleanup_free_ char *main_path = NULL, *inc = NULL;
        const char *passwords[] = { "rootpw --plaintext one\n", "rootpw --plaintext two\n" };
        static const char main_text[] = "lang C.UTF-8\n%include inc.ks\ntimezone Etc/UTC\n";
        static const char want_text[] =
                "lang C.UTF-8\n%include inc.ks\ntimezone Etc/UTC\nrootpw --plaintext <secret>\n";
        uint8_t digests[2][32], want[32];

        assert_non_null(mkdtemp(dir));
        assert_true(asprintf(&main_path, "%s/main.ks", dir) > 0);
        assert_true(asprintf(&inc, "%s/inc.ks", dir) > 0);
        assert_int_equal(write_file_atomic(main_path, main_text, strlen(main_text), 0644), 0);
        for (size_t i = 0; i < 2; i++) {
                struct kickstart *ks = NULL;
                char *err;

                assert_int_equal(write_file_atomic(inc, passwords[i], strlen(passwords[i]), 0644), 0);
                capture_start();
                assert_int_equal(kickstart_parse_file(main_path, NULL, &ks), 0);
                err = capture_stop();
                assert_string_equal(err, "");
                free(err);
                memcpy(digests[i], ks->digest, 32);
                kickstart_free(ks);
        }
        assert_memory_equal(digests[0], digests[1], 32);
        sha256_buffer(want_text, strlen(want_text), want);
        assert_memory_equal(digests[0], want, 32);
        assert_int_equal(rm_rf(dir), 0);
}

static void test_include_errors(void **state)
{
        _cleanup_free_ char *cycle = NULL, *missing = NULL, *dir = NULL, *empty = NULL;
        char want[4096];

        NEED_DATA();
        cycle = data_path("cycle-a.ks");
        snprintf(want, sizeof want, "cycle-b.ks:1: include cycle: '%s' -> '%s/ks/cycle-b.ks' -> '%s/ks/cycle-a.ks'",
                 cycle, test_data(), test_data());
        expect_file_error(cycle, want);

        missing = data_path("include-missing.ks");
        snprintf(want, sizeof want,
                 "include-missing.ks:2: cannot read included file '%s/ks/does-not-exist.ks': No such file or directory",
                 test_data());
        expect_file_error(missing, want);

        dir = data_path("include-dir.ks");
        expect_file_error(dir, "include-dir.ks:1: included file '");
        expect_file_error(dir, "/ks/sub' is not a regular file");

        empty = data_path("include-empty.ks");
        expect_file_error(empty, "include-empty.ks: empty kickstart");

        expect_error("%include\n", "t.ks:1: '%include' needs exactly one file name");
        expect_error("%include a b\n", "t.ks:1: '%include' needs exactly one file name");
        expect_error("%include /dev/null/x\n", "t.ks:1: cannot read included file '/dev/null/x'");
        expect_error("%include /dev/zero\n", "t.ks:1: included file '/dev/zero' is not a regular file");
        expect_error("%packages\n%include x.ks\n%end\n", "t.ks:2: %include inside a section is not supported");
}

static void test_include_depth(void **state)
{
        char dir[] = "/tmp/test-kickstart-XXXXXX", path[PATH_MAX], text[64];
        struct kickstart *ks = NULL;
        char *err;
        int r;

        assert_non_null(mkdtemp(dir));
        /* d0 includes d1 … includes d17: 17 levels of nesting */
        for (int i = 0; i <= 17; i++) {
                snprintf(path, sizeof path, "%s/d%d.ks", dir, i);
                if (i < 17)
                        snprintf(text, sizeof text, "%%include d%d.ks\n", i + 1);
                else
                        snprintf(text, sizeof text, "lang C.UTF-8\n");
                assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
        }
        /* 16 levels are fine … */
        snprintf(path, sizeof path, "%s/d1.ks", dir);
        capture_start();
        r = kickstart_parse_file(path, NULL, &ks);
        err = capture_stop();
        assert_string_equal(err, "");
        assert_int_equal(r, 0);
        assert_int_equal(strv_length(ks->files), 17);
        assert_string_equal(ks->lang, "C.UTF-8");
        kickstart_free(ks);
        free(err);
        /* … 17 are not */
        snprintf(path, sizeof path, "%s/d0.ks", dir);
        expect_file_error(path, "d16.ks:1: includes nested too deeply (more than 16 levels)");

        for (int i = 0; i <= 17; i++) {
                snprintf(path, sizeof path, "%s/d%d.ks", dir, i);
                unlink(path);
        }
        rmdir(dir);
}

/* ---- malformed input ---- */

static void test_errors(void **state)
{
        static const struct {
                const char *text;
                const char *want;
        } cases[] = {
                /* lexer */
                { "lang 'C.UTF-8\n", "t.ks:1: unterminated quote" },
                { "lang C\\\n", "t.ks:1: backslash at end of line" },
                /* commands and options */
                { "lang C.UTF-8\nfrobnicate --now\n", "t.ks:2: unsupported kickstart command 'frobnicate'" },
                { "url --url http://x\n", "t.ks:1: unsupported kickstart command 'url'" },
                { "part / --size 1 --foo\n", "t.ks:1: unknown option '--foo' for 'part'" },
                { "part / --size 1 --foo=bar\n", "t.ks:1: unknown option '--foo' for 'part'" },
                { "part / -s 1\n", "t.ks:1: unknown option '-s' for 'part'" },
                { "part / --size\n", "t.ks:1: missing value for option '--size' of 'part'" },
                { "part / --size --grow\n", "t.ks:1: missing value for option '--size' of 'part'" },
                { "part / --grow=yes\n", "t.ks:1: option '--grow' of 'part' takes no value" },
                { "part / --label=\n", "t.ks:1: option '--label' of 'part' needs a non-empty value" },
                { "part / --size=big\n",
                  "t.ks:1: invalid value 'big' for option '--size' of 'part': expected a whole number of MiB" },
                { "part / --size=512M\n", "t.ks:1: invalid value '512M' for option '--size'" },
                { "part / --size -5\n", "t.ks:1: invalid value '-5' for option '--size'" },
                { "part / --size 0\n", "t.ks:1: option '--size' of 'part' must be greater than zero" },
                { "part / --size 99999999999999999999999\n",
                  "t.ks:1: value '99999999999999999999999' of option '--size' of 'part' is too large" },
                { "part / --size 17592186044416\n", "is too large" },
                { "part / --maxsize 18446744073709551615\n",
                  "t.ks:1: value '18446744073709551615' of option '--maxsize' of 'part' is too large" },
                { "part / --size 10 --maxsize 5\n", "t.ks:1: '--size' is larger than '--maxsize'" },
                { "part --size 10\n", "t.ks:1: 'part' needs a mount point, 'swap' or 'biosboot'" },
                { "part / /var\n", "t.ks:1: unexpected argument '/var' for 'part'" },
                { "part raid.01 --size 10\n", "t.ks:1: 'part raid.01' is not supported: RAID, LVM and btrfs volumes" },
                { "part pv.01 --size 10\n", "t.ks:1: 'part pv.01' is not supported" },
                { "partition btrfs.1 --size 10\n", "t.ks:1: 'partition btrfs.1' is not supported" },
                { "part var --size 10\n", "t.ks:1: invalid mount point 'var' for 'part'" },
                { "part /var/../etc --size 10\n", "t.ks:1: invalid mount point '/var/../etc'" },
                { "part /var/ --size 10\n", "t.ks:1: invalid mount point '/var/'" },
                { "part / --ondisk=sda\n",
                  "t.ks:1: option '--ondisk' of 'part' is not supported: an image has exactly one disk" },
                { "part / --encrypted --passphrase x\n",
                  "t.ks:1: option '--encrypted' of 'part' is not supported: encrypted partitions" },
                { "part / --fstype zfs\n", "t.ks:1: unsupported file system type 'zfs'" },
                { "part swap --fstype ext4\n", "t.ks:1: '--fstype ext4' does not fit mount point 'swap'" },
                { "part / --fstype swap\n", "t.ks:1: '--fstype swap' does not fit mount point '/'" },
                { "part / --size 1\npart /var --size 1\npart / --size 2\n",
                  "t.ks:3: duplicate partition for '/' (first at t.ks:1)" },
                { "part / --size 1\nautopart\n", "t.ks:2: 'autopart' cannot be combined with 'part' (at t.ks:1)" },
                { "autopart\nlang C\npart / --size 1\n",
                  "t.ks:3: 'part' cannot be combined with 'autopart' (at t.ks:1)" },
                { "autopart --type=lvm\n", "t.ks:1: 'autopart --type=lvm' is not supported" },
                { "autopart --nohome\n", "t.ks:1: option '--nohome' of 'autopart' is not supported" },
                { "clearpart --disklabel=msdos\n",
                  "t.ks:1: 'clearpart --disklabel=msdos' is not supported: ingot always writes a GPT" },
                { "clearpart --drives=sda\n",
                  "t.ks:1: option '--drives' of 'clearpart' is not supported: an image has exactly one disk" },
                { "clearpart --list=sda1\n", "t.ks:1: option '--list' of 'clearpart' is not supported" },
                { "clearpart --all --none\n", "t.ks:1: 'clearpart --none' cannot be combined with other options" },
                { "zerombr yes\n", "t.ks:1: unexpected argument 'yes' for 'zerombr'" },
                { "bootloader --password=x\n", "t.ks:1: option '--password' of 'bootloader' is not supported" },
                { "bootloader --sdboot\n",
                  "t.ks:1: option '--sdboot' of 'bootloader' is not supported: the template chooses" },
                { "bootloader --location=floppy\n",
                  "t.ks:1: invalid value 'floppy' for option '--location' of 'bootloader'" },
                { "bootloader --location=none\n", "t.ks:1: 'bootloader --location=none' is not supported" },
                { "bootloader --timeout=-1\n", "t.ks:1: invalid value '-1' for option '--timeout' of 'bootloader'" },
                { "bootloader --timeout=2147483648\n",
                  "t.ks:1: value '2147483648' of option '--timeout' of 'bootloader' is too large" },
                { "rootpw\n", "t.ks:1: 'rootpw' needs a password or '--lock'" },
                { "rootpw --iscrypted\n", "t.ks:1: 'rootpw' needs a password or '--lock'" },
                { "rootpw --lock --iscrypted\n", "t.ks:1: 'rootpw --iscrypted' needs a password" },
                { "rootpw --iscrypted notahash\n", "t.ks:1: malformed password hash for 'rootpw --iscrypted'" },
                { "rootpw --iscrypted '$6$a:b$c'\n", "t.ks:1: malformed password hash for 'rootpw --iscrypted'" },
                { "rootpw --iscrypted --plaintext x\n",
                  "t.ks:1: '--iscrypted' and '--plaintext' of 'rootpw' conflict" },
                { "rootpw --allow-ssh x\n", "t.ks:1: option '--allow-ssh' of 'rootpw' is not supported" },
                { "rootpw a b\n", "t.ks:1: unexpected argument 'b' for 'rootpw'" },
                { "user --groups=wheel\n", "t.ks:1: 'user' needs '--name'" },
                { "user --name\n", "t.ks:1: missing value for option '--name' of 'user'" },
                { "user --name 'bad name'\n", "t.ks:1: invalid user name 'bad name'" },
                { "user --name root\n", "t.ks:1: 'user --name=root' is not supported: use 'rootpw'" },
                { "user --name a --groups ,\n", "t.ks:1: option '--groups' of 'user' needs a non-empty list" },
                { "user --name a --groups wh:eel\n", "t.ks:1: invalid group name 'wh:eel'" },
                { "user --name a --shell bash\n", "t.ks:1: invalid shell 'bash': expected an absolute path" },
                { "user --name a --homedir /h:x\n", "t.ks:1: invalid home directory '/h:x'" },
                { "user --name a --gecos a:b\n", "t.ks:1: invalid GECOS field 'a:b'" },
                { "user --name a --uid x\n",
                  "t.ks:1: invalid value 'x' for option '--uid' of 'user': expected a whole number" },
                { "user --name a --uid -1\n", "t.ks:1: invalid value '-1' for option '--uid'" },
                { "user --name a --uid 4294967295\n",
                  "t.ks:1: value '4294967295' of option '--uid' of 'user' is too large" },
                { "user --name a --gid 99999999999999999999999\n",
                  "t.ks:1: value '99999999999999999999999' of option '--gid' of 'user' is too large" },
                { "user --name a --uid 0\n", "t.ks:1: '--uid 0' is root's" },
                { "user --name a --iscrypted\n", "t.ks:1: 'user --iscrypted' needs '--password'" },
                { "user --name a --iscrypted --password plain\n",
                  "t.ks:1: malformed password hash for 'user --iscrypted'" },
                { "user --name a\nlang C\nuser --name a\n", "t.ks:3: duplicate user 'a' (first at t.ks:1)" },
                { "sshkey 'ssh-ed25519 AAAA x'\n", "t.ks:1: 'sshkey' needs '--username'" },
                { "sshkey --username a\n", "t.ks:1: 'sshkey' needs a key" },
                { "sshkey --username a not-a-key\n", "t.ks:1: 'not-a-key' does not look like an SSH public key" },
                { "network --hostname a\nnetwork --hostname b\n",
                  "t.ks:2: conflicting network host name 'b' ('a' at t.ks:1)" },
                { "network --device eth0\nnetwork --device eth1\n",
                  "t.ks:2: conflicting network device 'eth1' ('eth0' at t.ks:1)" },
                { "network --hostname -bad-\n", "t.ks:1: invalid host name '-bad-'" },
                { "network --bootproto=static\n", "t.ks:1: 'network --bootproto=static' is not supported: every "
                                                  "instance of an image would get the same address" },
                { "network --ip=10.0.0.2\n", "t.ks:1: option '--ip' of 'network' is not supported" },
                { "network --bootproto=carrier-pigeon\n",
                  "t.ks:1: invalid value 'carrier-pigeon' for option '--bootproto' of 'network'" },
                { "network --onboot=maybe\n", "t.ks:1: invalid value 'maybe' for option '--onboot' of 'network'" },
                { "network --activate --no-activate\n",
                  "t.ks:1: '--activate' and '--no-activate' of 'network' conflict" },
                { "timezone --utc\n", "t.ks:1: 'timezone' needs a time zone such as 'Etc/UTC'" },
                { "timezone ../../etc/passwd\n", "t.ks:1: invalid time zone '../../etc/passwd'" },
                { "timezone Etc/UTC --ntpservers=a\n", "t.ks:1: option '--ntpservers' of 'timezone' is not supported" },
                { "timezone Etc/UTC\nlang C\ntimezone Etc/UTC\n",
                  "t.ks:3: duplicate 'timezone' command (first at t.ks:1)" },
                { "lang\n", "t.ks:1: 'lang' needs a locale such as 'C.UTF-8'" },
                { "lang C en\n", "t.ks:1: unexpected argument 'en' for 'lang'" },
                { "lang C\nlang C\n", "t.ks:2: duplicate 'lang' command (first at t.ks:1)" },
                { "keyboard\n", "t.ks:1: 'keyboard' needs a keymap such as 'us'" },
                { "keyboard us --vckeymap=de\n", "t.ks:1: 'keyboard us' conflicts with '--vckeymap=de'" },
                { "services\n", "t.ks:1: 'services' needs '--enabled' or '--disabled'" },
                { "services --enabled a,b --disabled b\n", "t.ks:1: service 'b' is both enabled and disabled" },
                { "services --enabled a\nservices --disabled a\n",
                  "t.ks:2: service 'a' is both enabled and disabled (see also t.ks:1)" },
                { "selinux\n", "t.ks:1: 'selinux' needs one of '--disabled', '--permissive' or '--enforcing'" },
                { "selinux --disabled --enforcing\n",
                  "t.ks:1: option '--enforcing' of 'selinux' conflicts with an earlier option" },
                { "selinux --disabled\nselinux --disabled\n", "t.ks:2: duplicate 'selinux' command (first at t.ks:1)" },
                { "firewall --port=ssh\n", "t.ks:1: invalid port 'ssh'" },
                { "firewall --port=70000:tcp\n", "t.ks:1: invalid port '70000:tcp'" },
                { "firewall --disabled --service=ssh\n",
                  "t.ks:1: 'firewall --disabled' cannot open ports or services" },
                { "firewall --enabled --disabled\n",
                  "t.ks:1: option '--disabled' of 'firewall' conflicts with an earlier option" },
                { "zerombr\nrootpw --lock\nzerombr\n", "t.ks:3: duplicate 'zerombr' command (first at t.ks:1)" },
                { "rootpw --lock\nrootpw --lock\n", "t.ks:2: duplicate 'rootpw' command (first at t.ks:1)" },
                { "bootloader\nbootloader\n", "t.ks:2: duplicate 'bootloader' command (first at t.ks:1)" },
                { "autopart\nautopart\n", "t.ks:2: duplicate 'autopart' command (first at t.ks:1)" },
                /* sections */
                { "lang C\n%pre\necho hi\n%end\n", "t.ks:2: '%pre' is not supported: it would run on the build host" },
                { "%pre-install\n%end\n", "t.ks:1: '%pre-install' is not supported: it would run on the build host" },
                { "%onerror\n%end\n", "t.ks:1: '%onerror' is not supported" },
                { "%traceback\n%end\n", "t.ks:1: '%traceback' is not supported" },
                { "%ksappend x\n", "t.ks:1: '%ksappend' is not supported: use %include" },
                { "%frob\n", "t.ks:1: unknown section '%frob'" },
                { "%end\n", "t.ks:1: %end without a section" },
                { "lang C\n%post\necho hi\n", "t.ks:2: missing %end for '%post'" },
                { "lang C\n%packages\nvim\n", "t.ks:2: missing %end for '%packages'" },
                { "%packages\nvim\n%post\n%end\n", "t.ks:1: missing %end for '%packages'" },
                { "%post\necho\n%pre\n%end\n", "t.ks:1: missing %end for '%post'" },
                { "%post\n%end now\n", "t.ks:2: unexpected text after %end" },
                { "%post --bogus\n%end\n", "t.ks:1: unknown option '--bogus' for '%post'" },
                { "%post --interpreter\n%end\n", "t.ks:1: missing value for option '--interpreter' of '%post'" },
                { "%post --interpreter python3\n%end\n",
                  "t.ks:1: invalid interpreter 'python3': expected an absolute path" },
                { "%post --log relative.log\n%end\n", "t.ks:1: invalid log file 'relative.log'" },
                { "%post extra\n%end\n", "t.ks:1: unexpected argument 'extra' for '%post'" },
                { "%packages --bogus\n%end\n", "t.ks:1: unknown option '--bogus' for '%packages'" },
                { "%packages --ignorebroken\n%end\n",
                  "t.ks:1: option '--ignorebroken' of '%packages' is not supported" },
                { "%packages\n@core\n%end\n",
                  "t.ks:2: package groups, environments and modules are not supported: '@core'" },
                { "%packages\n-@^minimal-environment\n%end\n",
                  "t.ks:2: package groups, environments and modules are not supported" },
                { "%packages\nvim*\n%end\n", "t.ks:2: package globs are not supported: 'vim*'" },
                { "%packages\nvim emacs\n%end\n", "t.ks:2: invalid package name 'vim emacs'" },
                { "%packages\n-\n%end\n", "t.ks:2: invalid package name '-'" },
                /* whole files */
                { "", "t.ks: empty kickstart: no commands or sections" },
                { "\n\n# just comments\n   \n", "t.ks: empty kickstart: no commands or sections" },
                { "lang C\n\x01\n", "t.ks:2: binary data, not a kickstart file" },
                { "lang C\x7f\n", "t.ks:1: binary data, not a kickstart file" },
                { "lang \xff\xfe\n", "t.ks:1: binary data, not a kickstart file" },
                { "lang \xc3\n", "t.ks:1: binary data, not a kickstart file" },
                { "lang \xc0\xaf\n", "t.ks:1: binary data, not a kickstart file" },
                { "lang \xed\xa0\x80\n", "t.ks:1: binary data, not a kickstart file" },
                { "lang \xf4\x90\x80\x80\n", "t.ks:1: binary data, not a kickstart file" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                expect_error(cases[i].text, cases[i].want);

        /* UTF-8 is text */
        kickstart_free(parse_ok("user --name a --gecos 'Jürgen Müller ✓ 🙂'\n"));
}

static void test_hostile(void **state)
{
        static const char nul[] = "lang C.UTF-8\n\ntimezone\0Etc/UTC\n";
        const size_t big = 1024 * 1024, huge = 5 * 1024 * 1024;
        char *buf;

        expect_error_buf(nul, sizeof nul - 1, "t.ks:3: binary data, not a kickstart file");

        /* a 1 MiB line (calloc + strcpy keep gcc's bounds checker happy
         * under the sanitizers) */
        buf = calloc(1, big + 16);
        if (!buf)
                abort();
        strcpy(buf, "lang C\n# ");
        for (size_t i = 9; i < big + 9; i++)
                buf[i] = 'x';
        buf[big + 9] = '\n';
        expect_error_buf(buf, big + 10, "t.ks:2: line too long (more than 65536 bytes)");
        /* a line of exactly the limit is fine */
        for (size_t i = 0; i < 65536; i++)
                buf[i] = ' ';
        strcpy(buf + 65536 - 7, "lang C\n");
        {
                struct kickstart *ks = NULL;
                assert_int_equal(kickstart_parse_buffer("t.ks", buf, 65536, NULL, &ks), 0);
                assert_string_equal(ks->lang, "C");
                kickstart_free(ks);
        }
        free(buf);

        /* more than 4 MiB in all */
        buf = calloc(1, huge);
        if (!buf)
                abort();
        for (size_t i = 0; i < huge; i++)
                buf[i] = i % 8 == 7 ? '\n' : '#';
        expect_error_buf(buf, huge, "t.ks: kickstart too large (more than 4 MiB)");
        free(buf);

        /* random bytes: never a crash, always one message */
        srand(1);
        buf = malloc(4096);
        assert_non_null(buf);
        for (int round = 0; round < 200; round++) {
                struct kickstart *ks = NULL;
                size_t n = (size_t)(rand() % 4096);
                char *err;
                int r;

                for (size_t i = 0; i < n; i++)
                        buf[i] = (char)(round % 2 ? rand() : "abc -=\"'\\#%\n"[rand() % 13]);
                capture_start();
                r = kickstart_parse_buffer("t.ks", buf, n, NULL, &ks);
                err = capture_stop();
                assert_true(r == 0 || r == -EBADMSG);
                assert_int_equal(count_error_lines(err), r < 0 ? 1 : 0);
                kickstart_free(ks);
                free(err);
        }
        free(buf);
}

static void test_read_errors(void **state)
{
        struct kickstart *ks = NULL;
        char *err;
        int r;

        capture_start();
        r = kickstart_parse_file("/nonexistent/ks.cfg", NULL, &ks);
        err = capture_stop();
        assert_int_equal(r, -ENOENT);
        assert_null(ks);
        assert_non_null(strstr(err, "cannot read kickstart '/nonexistent/ks.cfg': No such file or directory"));
        assert_int_equal(count_lines(err), 1);
        free(err);
}

/* The shipped examples parse cleanly, with no warning. */
static void test_examples(void **state)
{
        static const char *const examples[] = { "kickstart/minimal.ks", "kickstart/web-server.ks" };
        const char *srcdir = getenv("INGOT_SRCDIR");
        _cleanup_free_ char *fallback = NULL;

        if (!srcdir) {
                NEED_DATA();
                assert_true(asprintf(&fallback, "%s/../..", test_data()) >= 0);
                srcdir = fallback;
        }
        for (size_t i = 0; i < ELEMENTSOF(examples); i++) {
                _cleanup_free_ char *path = NULL;
                struct kickstart *ks = NULL;
                char *err;
                int r;

                assert_true(asprintf(&path, "%s/%s", srcdir, examples[i]) >= 0);
                capture_start();
                r = kickstart_parse_file(path, NULL, &ks);
                err = capture_stop();
                if (r != 0 || *err)
                        print_error("%s: %d %s\n", path, r, err);
                assert_int_equal(r, 0);
                assert_string_equal(err, "");
                assert_true(ks->rootpw_set);
                assert_non_null(ks->timezone);
                if (strstr(examples[i], "web-server")) {
                        assert_string_equal(ks->hostname, "web");
                        assert_true(strv_contains(ks->packages, "nginx"));
                        assert_true(strv_contains(ks->services_enabled, "nginx"));
                        assert_int_equal(ks->n_users, 1);
                        assert_string_equal(ks->users[0].name, "deploy");
                        assert_int_equal(ks->n_sshkeys, 1);
                        assert_true(ks->n_scripts >= 1);
                }
                kickstart_free(ks);
                free(err);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_split_words),    cmocka_unit_test(test_full),
                cmocka_unit_test(test_defaults),       cmocka_unit_test(test_commands),
                cmocka_unit_test(test_warnings),       cmocka_unit_test(test_passwords),
                cmocka_unit_test(test_include),        cmocka_unit_test(test_digest),
                cmocka_unit_test(test_digest_secrets), cmocka_unit_test(test_digest_secrets_include),
                cmocka_unit_test(test_include_errors), cmocka_unit_test(test_include_depth),
                cmocka_unit_test(test_errors),         cmocka_unit_test(test_hostile),
                cmocka_unit_test(test_read_errors),    cmocka_unit_test(test_examples),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
