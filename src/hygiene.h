/* The hygiene gate: reads an image's root filesystem without mounting it
 * and lists what a sealed image must not carry (virt-sysprep's
 * operations): an initialised machine-id, SSH host keys, root's
 * authorized_keys the kickstart did not put there, shell histories, logs,
 * apt caches and lists, random-seed, DHCP leases, /tmp contents, a
 * resolv.conf left by the build. */
#pragma once

#include <stddef.h>

struct hygiene_finding {
        char *path;   /* inside the image, e.g. "/etc/ssh/ssh_host_ed25519_key" */
        char *reason; /* e.g. "SSH host key" */
};

/* Scans image (raw). Returns the number of findings (0 = clean) and sets
 * ret and ret_n (owned by the caller, free with hygiene_findings_free), or
 * logs and returns a negative errno when the image cannot be read. */
int hygiene_scan(const char *image, struct hygiene_finding **ret, size_t *ret_n);
void hygiene_findings_free(struct hygiene_finding *f, size_t n);
