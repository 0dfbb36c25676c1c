/* The kickstart parser: Anaconda syntax read into plain data. It knows
 * nothing of templates or disks; spec.c joins the two and checks the
 * cross-file rules. Every struct here is owned by its struct kickstart and
 * freed by kickstart_free(). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared/macro.h"

/* Where a command came from, for "file:line:" messages. file points into
 * kickstart.files, so it lives as long as the kickstart. */
struct ks_loc {
        const char *file;
        unsigned line;
};

struct ks_part {
        struct ks_loc loc;
        char *mountpoint; /* "/", "/var", "/boot/efi", "swap", "biosboot" */
        uint64_t size;    /* bytes (kickstart gives MiB); 0 = not given */
        uint64_t maxsize; /* bytes; 0 = no limit */
        bool grow;
        char *fstype; /* NULL = the template's default for the mount point */
        char *label;  /* NULL = none given */
};

struct ks_user {
        struct ks_loc loc;
        char *name;
        char *password_hash; /* crypt(3) hash, never plain text; NULL = none */
        bool lock;
        char **groups; /* strv */
        char *shell;
        char *homedir;
        char *gecos;
        bool has_uid;
        uid_t uid;
        bool has_gid;
        gid_t gid;
};

struct ks_sshkey {
        struct ks_loc loc;
        char *username;
        char *key;
};

enum ks_selinux {
        KS_SELINUX_UNSET = 0,
        KS_SELINUX_DISABLED,
        KS_SELINUX_PERMISSIVE,
        KS_SELINUX_ENFORCING,
};

struct ks_script {
        struct ks_loc loc; /* the %post line */
        char *interpreter; /* NULL = /bin/sh */
        bool nochroot;
        bool erroronfail;
        char *log;  /* NULL = none */
        char *body; /* the script text, every line ending in \n; "" when empty */
};

struct kickstart {
        char **files; /* every file read, the top one first, in order */
        /* SHA-256 over every file's bytes, in that order, with the value of
         * each secret-carrying option (rootpw's password, user --password,
         * bootloader --password, ...) replaced by "<secret>": it is
         * published (manifest, image.json, the seed of the GUIDs) and must
         * not be a guessing oracle for a password. Comments and %post
         * bodies are covered as written. */
        uint8_t digest[32];

        struct ks_part *parts;
        size_t n_parts;
        bool clearpart;
        bool zerombr;
        bool autopart;

        char *bootloader_append; /* NULL = none */
        int bootloader_timeout;  /* -1 = not given */

        bool rootpw_set;
        char *rootpw_hash; /* NULL with rootpw_lock = locked, no password */
        bool rootpw_lock;

        struct ks_user *users;
        size_t n_users;
        struct ks_sshkey *sshkeys;
        size_t n_sshkeys;

        char *hostname;
        char *network_bootproto;
        char *network_device;
        bool network_activate;
        bool network_noipv6;
        int network_onboot; /* -1 not given, 0 no, 1 yes */

        char *timezone;
        bool timezone_utc;
        char *lang;
        char *keyboard;

        char **services_enabled;  /* strv */
        char **services_disabled; /* strv */
        enum ks_selinux selinux;
        int firewall;             /* -1 unset, 0 disabled, 1 enabled */
        char **firewall_ports;    /* strv, "22:tcp" */
        char **firewall_services; /* strv */

        char **packages;          /* strv, in order, without duplicates */
        char **packages_excluded; /* strv, without the leading '-' */
        bool packages_ignoremissing;

        struct ks_script *scripts; /* %post sections in file order */
        size_t n_scripts;
};

/* The seed for password salts: crypt(3) salts are derived from it and the
 * user name, so the same inputs give the same hashes. May be NULL (then an
 * all-zero seed is used). The password never feeds the salt: the salt is
 * public, and a fast function of the password in it would bypass yescrypt. */
struct ks_parse_options {
        const uint8_t *salt_seed; /* 32 bytes */
};

/* Parses path (and what it %includes). On bad input logs one
 * "file:line: message" line and returns -EBADMSG; -ENOENT etc. when the top
 * file cannot be read (also logged). *ret is set only on success and the
 * caller owns it. */
int kickstart_parse_file(const char *path, const struct ks_parse_options *opts, struct kickstart **ret);
/* Same, from a buffer; name is used in messages and as the base for
 * relative %include paths (its directory). */
int kickstart_parse_buffer(const char *name, const char *data, size_t size, const struct ks_parse_options *opts,
                           struct kickstart **ret);

struct kickstart *kickstart_free(struct kickstart *ks);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kickstart *, kickstart_free);

/* Splits one line the way a POSIX shell splits words: '…' quotes literally,
 * "…" quotes with \ escaping \ " $ `, a bare \ escapes the next character,
 * an unquoted # starting a word begins a comment. Returns 0 and a strv, or
 * -EBADMSG with a static message in *ret_error (e.g. "unterminated quote"). */
int ks_split_words(const char *line, char ***ret, const char **ret_error);
