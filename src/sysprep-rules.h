/* The one list of what a sealed image must not carry (virt-sysprep's
 * operations, reference/virt-sysprep.pod): the build removes what each
 * rule matches (customize.c, after %post) and the hygiene gate
 * (hygiene.c, `ingot verify --hygiene`) reports what each rule matches, so
 * the two cannot drift apart. The rules are plain data; how a tree is
 * walked is each side's business. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* An uninitialised machine-id, as the build writes it on systemd
 * (machine-id(5): the first boot is a first boot and makes the id). */
#define SYSPREP_MACHINE_ID_UNSET "uninitialized\n"

enum sysprep_match {
        SYSPREP_ANY,        /* any entry, directories too (removed whole) */
        SYSPREP_FILE,       /* a regular file */
        SYSPREP_NONEMPTY,   /* a regular file with data */
        SYSPREP_MACHINE_ID, /* a regular file neither empty nor SYSPREP_MACHINE_ID_UNSET */
};

struct sysprep_rule {
        /* Absolute. "~" is /root and every directory in /home; "~/.ssh" the
         * .ssh directory in each of them. */
        const char *dir;
        const char *glob; /* fnmatch(3) on an entry's name; "*" matches dot files too */
        enum sysprep_match match;
        const char *reason; /* the gate's "leftover: PATH (REASON)" */
        bool recursive;     /* also in the subdirectories, at any depth */
        /* image.json's sysprep.keep may list the path: the kickstart put it
         * there on purpose, so the build leaves it and the gate accepts it */
        bool keepable;
        const char *except[3]; /* fnmatch(3) globs of names the rule never matches */
};

extern const struct sysprep_rule sysprep_rules[];
extern const size_t sysprep_n_rules;

/* Whether the entry called name (in rule->dir) is one the rule is about:
 * its glob and none of its exceptions; "." and ".." never. */
bool sysprep_rule_matches_name(const struct sysprep_rule *rule, const char *name);

/* Whether an entry of that mode and size breaks the rule. For
 * SYSPREP_MACHINE_ID the content decides when its size is that of
 * SYSPREP_MACHINE_ID_UNSET: then *ret_need_content is set and the caller
 * asks sysprep_machine_id_is_set(); otherwise it is cleared. */
bool sysprep_rule_matches_entry(const struct sysprep_rule *rule, mode_t mode, uint64_t size, bool *ret_need_content);

/* Whether a machine-id file's n bytes at data are an initialised id. */
bool sysprep_machine_id_is_set(const char *data, size_t n);
