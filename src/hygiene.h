/* The hygiene gate: reads an image's root filesystem without mounting it
 * and lists what a sealed image must not carry, by the rules the build's
 * sysprep removes by (sysprep-rules.h): an initialised machine-id, SSH
 * host keys, SSH private keys in ~/.ssh, root's authorized_keys the
 * kickstart did not put there, shell histories, logs, apt caches and
 * lists, random-seed, DHCP leases, NetworkManager connections and state,
 * udev's persistent network names, /tmp contents, a resolv.conf left by
 * the build. */
#pragma once

#include <stddef.h>

struct hygiene_finding {
        char *path;   /* inside the image, e.g. "/etc/ssh/ssh_host_ed25519_key" */
        char *reason; /* e.g. "SSH host key" */
};

/* Scans image (raw): the first GPT partition of the x86-64 or arm64 DPS
 * root type, read with debugfs (e2fsprogs) in place, nothing mounted and
 * nothing written. Returns the number of findings (0 = clean) and sets ret
 * and ret_n (owned by the caller, free with hygiene_findings_free; NULL and
 * 0 when clean), sorted by path, one per path; only on success. Otherwise
 * logs and returns a negative errno: -ENXIO when the image has no GPT or no
 * root partition, -EOPNOTSUPP when the root holds no ext2/3/4 filesystem
 * (erofs, vfat, nothing), -EIO when debugfs cannot read it, the errors of
 * probe_image() (-ENOENT, -EMEDIUMTYPE, ...) when the image cannot be
 * opened or holds no partition table, -EINVAL for a path with a '?'
 * (debugfs cannot open it). The root's
 * /usr/lib/ingot/image.json may list root's authorized_keys (the one
 * keepable rule) under "sysprep": {"keep": [...]}; then it is no finding. */
int hygiene_scan(const char *image, struct hygiene_finding **ret, size_t *ret_n);
void hygiene_findings_free(struct hygiene_finding *f, size_t n);
