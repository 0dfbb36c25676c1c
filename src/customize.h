/* Kickstart application: turns the cached base tree into this build's tree.
 * The base tar is unpacked into a scratch directory inside a user
 * namespace whose uid map covers the build user's subordinate ids (no
 * namespace when already root), so every file keeps its owner; the
 * kickstart and the image identity are applied there, %post runs chrooted
 * (or not, with INSTALL_ROOT), and the tree is packed again reproducibly
 * before the namespace ends. Nothing here needs root, a mount on the host
 * or a VM. */
#pragma once

#include <stdbool.h>

#include "spec.h"

struct customize_options {
        const char *base_tar;    /* the bootstrap's tree; read only */
        const char *out_tar;     /* written whole or not at all */
        const char *scratch_dir; /* exists; the tree goes to scratch_dir/tree and is removed again */
        bool scrub_host_files;   /* drop what the bootstrap copied from the host (/etc/resolv.conf) */
        const char *rootfs_digest; /* SHA-256 (hex) of the base tree, for /usr/lib/ingot/image.json */
        const char *out_initrd;  /* with --verity: the initrd made again in the tree is copied here */
};

/* Unpacks, applies, runs %post and packs, in a child process inside the
 * namespace. Logs (a failed %post --erroronfail with the script's last
 * lines) and returns a negative errno: -EBADMSG for bad input such as an
 * unknown service, -EIO when a %post --erroronfail script failed. */
int customize_run(const struct spec *s, const struct customize_options *o);

/* Applies the spec to an unpacked tree at root, in this process: identity
 * (/etc/os-release IMAGE_ID/IMAGE_VERSION, /usr/lib/ingot/image.json),
 * hostname, time zone, locale, keyboard, root password, users and groups,
 * ssh keys, services, the ready hook, template overlays, %post, then the
 * seal: state on tmpfs, the verity initrd (o->out_initrd), sysprep.
 * o->scratch_dir holds script output. Needs to run as (namespace) root to
 * set owners. Logs. */
int customize_apply(const struct spec *s, const char *root, const struct customize_options *o);

/* The seal's last step on the unpacked tree at root, in this process:
 * removes what the rules of sysprep-rules.h match, the ones the hygiene
 * gate checks, except the paths in keep (NULL: none; image.json's
 * sysprep.keep), and writes an uninitialised machine-id on systemd. Logs
 * and returns a negative errno. customize_apply() runs it last. */
int customize_sysprep(const char *root, char *const *keep);

/* Runs fn(userdata) in a child that is root in a new user namespace
 * mapping the build user to 0 and its /etc/subuid and /etc/subgid ranges
 * to 1…, with its own mount and pid namespaces (as root: mount and pid
 * namespaces only). fn's negative errno comes back as the return value;
 * fn logs its own errors. */
int customize_in_namespace(int (*fn)(void *userdata), void *userdata);
