/* Owns the sysprep rules: the table of what a sealed image must not carry,
 * shared by the build's sysprep (customize.c) and the hygiene gate
 * (hygiene.c). Add a rule here and both follow. */
#include "config.h"

#include <fnmatch.h>
#include <string.h>
#include <sys/stat.h>

#include "shared/macro.h"
#include "sysprep-rules.h"

/* The comments name the virt-sysprep operation a rule comes from. */
const struct sysprep_rule sysprep_rules[] = {
        /* machine-id: the build writes "uninitialized\n" again on systemd */
        { "/etc", "machine-id", SYSPREP_MACHINE_ID, "initialised machine-id" },
        { "/var/lib/dbus", "machine-id", SYSPREP_NONEMPTY, "D-Bus machine-id" },
        /* ssh-hostkeys: every instance makes its own at boot */
        { "/etc/ssh", "ssh_host_*", SYSPREP_ANY, "SSH host key" },
        /* ssh-userdir, but only the private keys: authorized_keys written
         * by the kickstart's sshkey is wanted, the public halves are harmless */
        { "~/.ssh", "id_*", SYSPREP_FILE, "SSH private key", .except = { "*.pub" } },
        { "/root/.ssh", "authorized_keys", SYSPREP_ANY, "root's authorized_keys", .keepable = true },
        /* bash-history and the like */
        { "~", ".bash_history", SYSPREP_FILE, "shell history" },
        { "~", ".ash_history", SYSPREP_FILE, "shell history" },
        { "~", ".sh_history", SYSPREP_FILE, "shell history" },
        { "~", ".zsh_history", SYSPREP_FILE, "shell history" },
        { "~", ".python_history", SYSPREP_FILE, "Python history" },
        { "~", ".lesshst", SYSPREP_FILE, "less history" },
        { "~", ".viminfo", SYSPREP_FILE, "vim history" },
        { "~", ".mysql_history", SYSPREP_FILE, "MySQL history" },
        { "~", ".psql_history", SYSPREP_FILE, "psql history" },
        { "~", ".wget-hsts", SYSPREP_FILE, "wget HSTS database" },
        /* logfiles: empty ones carry nothing and some daemons want them */
        { "/var/log", "*", SYSPREP_NONEMPTY, "log file", .recursive = true },
        /* package-manager-cache */
        { "/var/cache/apt", "*.bin", SYSPREP_ANY, "apt package cache" },
        { "/var/cache/apt/archives", "*.deb", SYSPREP_ANY, "downloaded package" },
        { "/var/lib/apt/lists", "*", SYSPREP_ANY, "apt package list", .except = { "lock", "partial" } },
        { "/var/lib/apt/lists/partial", "*", SYSPREP_ANY, "apt package list" },
        /* random-seed */
        { "/var/lib/systemd", "random-seed", SYSPREP_ANY, "random seed" },
        { "/var/lib/urandom", "random-seed", SYSPREP_ANY, "random seed" },
        /* not virt-sysprep's, the same kind: the key systemd-creds encrypts
         * with, made on first use; in an image every instance would share it */
        { "/var/lib/systemd", "credential.secret", SYSPREP_ANY, "systemd credential secret" },
        /* dhcp-client-state */
        { "/var/lib/dhcp", "*", SYSPREP_ANY, "DHCP lease" },
        { "/var/lib/dhclient", "*", SYSPREP_ANY, "DHCP lease" },
        { "/var/lib/dhcpcd", "*", SYSPREP_ANY, "DHCP lease" },
        { "/var/lib/NetworkManager", "*lease*", SYSPREP_ANY, "DHCP lease" },
        { "/var/lib/systemd/network", "*", SYSPREP_ANY, "DHCP lease" },
        /* NetworkManager's per-machine state: secret_key (the stable IDs
         * and IPv6 addresses derive from it), timestamps, seen-bssids,
         * no-auto-default.state (MAC addresses); NetworkManager.state holds
         * only the on/off switches */
        { "/var/lib/NetworkManager", "*", SYSPREP_ANY, "NetworkManager state",
          .except = { "*lease*", "NetworkManager.state" } },
        /* net-nmconn: connection profiles carry UUIDs, MAC addresses and
         * often Wi-Fi or VPN secrets */
        { "/etc/NetworkManager/system-connections", "*", SYSPREP_ANY, "NetworkManager connection" },
        /* udev-persistent-net: names bound to the build machine's MACs */
        { "/etc/udev/rules.d", "70-persistent-net.rules", SYSPREP_ANY, "udev persistent network names" },
        /* tmp-files */
        { "/tmp", "*", SYSPREP_ANY, "temporary file" },
        { "/var/tmp", "*", SYSPREP_ANY, "temporary file" },
        /* a symlink is the system's own (systemd-resolved's stub) */
        { "/etc", "resolv.conf", SYSPREP_NONEMPTY, "resolv.conf from the build" },
};

const size_t sysprep_n_rules = ELEMENTSOF(sysprep_rules);

bool sysprep_rule_matches_name(const struct sysprep_rule *rule, const char *name)
{
        if (streq(name, ".") || streq(name, "..") || fnmatch(rule->glob, name, 0) != 0)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(rule->except); i++)
                if (rule->except[i] && fnmatch(rule->except[i], name, 0) == 0)
                        return false;
        return true;
}

bool sysprep_rule_matches_entry(const struct sysprep_rule *rule, mode_t mode, uint64_t size, bool *ret_need_content)
{
        *ret_need_content = false;
        switch (rule->match) {
        case SYSPREP_ANY:
                return true;
        case SYSPREP_FILE:
                return S_ISREG(mode);
        case SYSPREP_NONEMPTY:
                return S_ISREG(mode) && size > 0;
        case SYSPREP_MACHINE_ID:
                if (!S_ISREG(mode) || size == 0)
                        return false;
                *ret_need_content = size == strlen(SYSPREP_MACHINE_ID_UNSET);
                return true;
        }
        return true; /* an unknown kind errs on the strict side */
}

bool sysprep_machine_id_is_set(const char *data, size_t n)
{
        return n != strlen(SYSPREP_MACHINE_ID_UNSET) || memcmp(data, SYSPREP_MACHINE_ID_UNSET, n) != 0;
}
