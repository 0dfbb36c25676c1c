/* Owns the printed plan: the spec as JSON (for tools and the tests) and as
 * text (for people). Both list the same facts in the same order, and never
 * a password hash in full. */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/strv.h"
#include "spec.h"

static const struct {
        const char *prefix;
        const char *name;
} crypt_algorithms[] = {
        { "$y$", "yescrypt" }, { "$gy$", "gost-yescrypt" }, { "$7$", "scrypt" },      { "$2b$", "bcrypt" },
        { "$2y$", "bcrypt" },  { "$6$", "sha512crypt" },    { "$5$", "sha256crypt" }, { "$1$", "md5crypt" },
};

/* What the plan says of a password: the algorithm, "locked" or "none". */
static const char *password_summary(const char *hash, bool lock)
{
        if (lock)
                return "locked";
        if (!hash)
                return "none";
        for (size_t i = 0; i < ELEMENTSOF(crypt_algorithms); i++)
                if (strncmp(hash, crypt_algorithms[i].prefix, strlen(crypt_algorithms[i].prefix)) == 0)
                        return crypt_algorithms[i].name;
        return "crypt";
}

static json_t *json_uuid(const id128_t *id)
{
        char buf[ID128_STRING_MAX];

        return json_string(id128_to_string(id, buf));
}

static size_t count_keys(const struct kickstart *ks, const char *user)
{
        size_t n = 0;

        for (size_t i = 0; ks && i < ks->n_sshkeys; i++)
                if (streq(ks->sshkeys[i].username, user))
                        n++;
        return n;
}

static json_t *plan_partitions(const struct part_layout *l)
{
        json_t *a = json_array();

        for (size_t i = 0; i < l->n_entries; i++) {
                const struct part_entry *e = &l->entries[i];
                json_t *p = json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:b}", "number", (json_int_t)e->number,
                                      "role", part_role_to_string(e->role), "mountpoint", e->mountpoint, "name",
                                      e->name, "type_uuid", json_uuid(&e->type), "uuid", json_uuid(&e->uuid), "start",
                                      json_u64(e->start), "size", json_u64(e->size), "grow", e->grow);

                json_object_set_new(p, "read_only", json_boolean(e->read_only));
                json_object_set_new(p, "fstype", json_str_or_null(e->fstype));
                json_object_set_new(p, "label", json_str_or_null(e->label));
                json_object_set_new(p, "fs_uuid",
                                    e->fstype && !streq(e->fstype, "swap") ? json_uuid(&e->fs_uuid) : json_null());
                if (e->fstype && strncmp(e->fstype, "ext", 3) == 0)
                        json_object_set_new(p, "hash_seed", json_uuid(&e->hash_seed));
                if (e->fstype && streq(e->fstype, "vfat")) {
                        char vol[10];
                        snprintf(vol, sizeof(vol), "%02X%02X-%02X%02X", e->fs_uuid.bytes[0], e->fs_uuid.bytes[1],
                                 e->fs_uuid.bytes[2], e->fs_uuid.bytes[3]);
                        json_object_set_new(p, "volume_id", json_string(vol));
                }
                json_array_append_new(a, p);
        }
        return a;
}

static json_t *plan_users(const struct kickstart *ks)
{
        json_t *a = json_array();

        for (size_t i = 0; ks && i < ks->n_users; i++) {
                const struct ks_user *u = &ks->users[i];
                json_t *o = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:s, s:I}", "name", u->name, "uid",
                                      u->has_uid ? json_integer(u->uid) : json_null(), "gid",
                                      u->has_gid ? json_integer(u->gid) : json_null(), "groups", json_strv(u->groups),
                                      "shell", json_str_or_null(u->shell), "homedir", json_str_or_null(u->homedir),
                                      "password", password_summary(u->password_hash, u->lock), "ssh_keys",
                                      (json_int_t)count_keys(ks, u->name));
                json_array_append_new(a, o);
        }
        return a;
}

static json_t *plan_scripts(const struct kickstart *ks)
{
        json_t *a = json_array();

        for (size_t i = 0; ks && i < ks->n_scripts; i++) {
                const struct ks_script *sc = &ks->scripts[i];
                json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:b, s:b, s:o, s:I}", "kind", "post", "file", sc->loc.file,
                                      "line", (json_int_t)sc->loc.line, "interpreter",
                                      sc->interpreter ? sc->interpreter : "/bin/sh", "chroot", !sc->nochroot,
                                      "erroronfail", sc->erroronfail, "log", json_str_or_null(sc->log), "bytes",
                                      (json_int_t)strlen(sc->body ? sc->body : ""));
                json_array_append_new(a, o);
        }
        return a;
}

static const char *selinux_to_string(enum ks_selinux s)
{
        static const char *const names[] = {
                [KS_SELINUX_UNSET] = NULL,
                [KS_SELINUX_DISABLED] = "disabled",
                [KS_SELINUX_PERMISSIVE] = "permissive",
                [KS_SELINUX_ENFORCING] = "enforcing",
        };
        return (size_t)s < ELEMENTSOF(names) ? names[s] : NULL;
}

json_t *spec_plan_to_json(const struct spec *s)
{
        const struct template *t = s->template;
        const struct kickstart *ks = s->kickstart;
        char hex[65];
        json_t *root, *inputs, *system, *overlays;

        inputs = json_pack("{s:{s:s, s:s}}", "template", "path", s->template_path, "sha256",
                           hex_encode(t->digest, 32, hex));
        if (ks)
                json_object_set_new(inputs, "kickstart",
                                    json_pack("{s:s, s:o, s:s}", "path", s->kickstart_path, "files",
                                              json_strv(ks->files), "sha256", hex_encode(ks->digest, 32, hex)));
        else
                json_object_set_new(inputs, "kickstart", json_null());

        system = json_pack(
                "{s:o, s:o, s:b, s:o, s:o, s:o, s:o}", "hostname", json_str_or_null(ks ? ks->hostname : NULL),
                "timezone", json_str_or_null(ks ? ks->timezone : NULL), "utc", ks ? ks->timezone_utc : false, "lang",
                json_str_or_null(ks ? ks->lang : NULL), "keyboard", json_str_or_null(ks ? ks->keyboard : NULL),
                "selinux", json_str_or_null(ks ? selinux_to_string(ks->selinux) : NULL), "firewall",
                !ks || ks->firewall < 0 ? json_null() : json_boolean(ks->firewall));
        json_object_set_new(system, "network",
                            json_pack("{s:o, s:o, s:b}", "bootproto",
                                      json_str_or_null(ks ? ks->network_bootproto : NULL), "device",
                                      json_str_or_null(ks ? ks->network_device : NULL), "activate",
                                      ks ? ks->network_activate : false));

        overlays = json_array();
        for (size_t i = 0; i < t->n_overlays; i++)
                json_array_append_new(overlays, json_pack("{s:s, s:s}", "source", t->overlays[i].source, "destination",
                                                          t->overlays[i].destination));

        root = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o}", "name", s->name, "version", s->version, "architecture",
                         s->architecture, "boot_mode", boot_mode_to_string(s->boot_mode), "source_date_epoch",
                         json_u64(s->source_date_epoch), "seed", hex_encode(s->seed, 32, hex), "inputs", inputs);

        json_object_set_new(root, "seal",
                            json_pack("{s:b, s:s, s:b}", "read_only_root", true, "stamp", s->stamp, "verity",
                                      s->verity));
        json_object_set_new(root, "rootfs",
                            json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:b}", "source",
                                      rootfs_source_to_string(t->source), "suite", json_str_or_null(t->suite),
                                      "variant", json_str_or_null(t->variant), "mirror", json_str_or_null(t->mirror),
                                      "path", json_str_or_null(t->source_path), "packages", json_strv(s->packages),
                                      "packages_excluded", json_strv(s->packages_excluded), "ignore_missing",
                                      ks ? ks->packages_ignoremissing : false));
        json_object_set_new(root, "kernel",
                            json_pack("{s:o, s:o, s:o, s:s}", "package", json_str_or_null(t->kernel_package), "kernel",
                                      json_str_or_null(t->kernel), "initrd", json_str_or_null(t->initrd), "cmdline",
                                      s->cmdline));
        json_object_set_new(root, "bootloader",
                            json_pack("{s:s, s:I}", "mode", boot_mode_to_string(s->boot_mode), "timeout",
                                      (json_int_t)(ks && ks->bootloader_timeout >= 0 ? (unsigned)ks->bootloader_timeout
                                                                                     : t->timeout)));
        json_object_set_new(root, "disk",
                            json_pack("{s:o, s:I, s:o, s:o, s:o, s:o}", "size", json_u64(s->layout->disk_size),
                                      "sector_size", (json_int_t)PART_SECTOR_SIZE, "uuid",
                                      json_uuid(&s->layout->disk_uuid), "first_usable",
                                      json_u64(s->layout->first_usable), "last_usable",
                                      json_u64(s->layout->last_usable), "partitions", plan_partitions(s->layout)));
        json_object_set_new(root, "system", system);
        json_object_set_new(
                root, "root",
                json_pack("{s:s, s:I}", "password",
                          ks && ks->rootpw_set ? password_summary(ks->rootpw_hash, ks->rootpw_lock) : "locked",
                          "ssh_keys", (json_int_t)count_keys(ks, "root")));
        json_object_set_new(root, "users", plan_users(ks));
        json_object_set_new(root, "services",
                            json_pack("{s:o, s:o}", "enabled", json_strv(ks ? ks->services_enabled : NULL), "disabled",
                                      json_strv(ks ? ks->services_disabled : NULL)));
        json_object_set_new(root, "scripts", plan_scripts(ks));
        json_object_set_new(root, "files", overlays);
        json_object_set_new(root, "outputs",
                            json_pack("{s:s, s:s, s:s}", "format", s->format == OUTPUT_FORMAT_QCOW2 ? "qcow2" : "raw",
                                      "image", s->output_image, "manifest", s->output_manifest));
        return root;
}

static void print_list(FILE *f, const char *title, char *const *l)
{
        fprintf(f, "%-11s", title);
        if (strv_length(l) == 0)
                fputs(" (none)", f);
        STRV_FOREACH (i, l)
                fprintf(f, " %s", *i);
        fputc('\n', f);
}

/* Whole GiB or MiB in short form, else bytes; suffix marks a grown size. */
static const char *format_size(uint64_t bytes, const char *suffix, char buf[static 32])
{
        if (bytes % (UINT64_C(1) << 30) == 0)
                snprintf(buf, 32, "%" PRIu64 "G%s", bytes >> 30, suffix);
        else if (bytes % (UINT64_C(1) << 20) == 0)
                snprintf(buf, 32, "%" PRIu64 "M%s", bytes >> 20, suffix);
        else
                snprintf(buf, 32, "%" PRIu64 "%s", bytes, suffix);
        return buf;
}

void spec_plan_print(const struct spec *s, FILE *f)
{
        const struct template *t = s->template;
        const struct kickstart *ks = s->kickstart;
        char a[ID128_STRING_MAX], b[ID128_STRING_MAX], c[ID128_STRING_MAX], size[32];

        fprintf(f, "image       %s %s (%s, boot %s)\n", s->name, s->version, s->architecture,
                boot_mode_to_string(s->boot_mode));
        fprintf(f, "template    %s\n", s->template_path);
        fprintf(f, "kickstart   %s\n", ks ? s->kickstart_path : "(none)");
        fprintf(f, "epoch       %" PRIu64 "\n", s->source_date_epoch);
        fprintf(f, "rootfs      %s", rootfs_source_to_string(t->source));
        if (t->suite)
                fprintf(f, " %s/%s", t->suite, t->variant ? t->variant : "minbase");
        if (t->source_path)
                fprintf(f, " '%s'", t->source_path);
        fprintf(f, " (mirror: %s)\n", t->mirror ? t->mirror : "host apt sources");
        print_list(f, "packages", s->packages);
        if (s->packages_excluded)
                print_list(f, "excluded", s->packages_excluded);
        fprintf(f, "cmdline     %s%s\n", s->cmdline, s->verity ? " ingot.verity.roothash=(at build)" : "");
        fprintf(f, "seal        read-only root, stamp %s, verity %s\n", s->stamp, s->verity ? "on" : "off");

        fprintf(f, "disk        %s gpt %s\n", format_size(s->layout->disk_size, "", size),
                id128_to_string(&s->layout->disk_uuid, a));
        fprintf(f, "  %-2s %-9s %-10s %10s %-7s %-6s %-12s %-36s %-36s %s\n", "#", "role", "mount", "start", "size",
                "fs", "label", "type", "uuid", "fs-uuid");
        for (size_t i = 0; i < s->layout->n_entries; i++) {
                const struct part_entry *e = &s->layout->entries[i];

                fprintf(f, "  %-2u %-9s %-10s %10" PRIu64 " %-7s %-6s %-12s %-36s %-36s %s\n", e->number,
                        part_role_to_string(e->role), e->mountpoint, e->start,
                        format_size(e->size, e->grow ? "+" : "", size), e->fstype ? e->fstype : "-",
                        e->label ? e->label : "-", id128_to_string(&e->type, a), id128_to_string(&e->uuid, b),
                        e->fstype && !streq(e->fstype, "swap") ? id128_to_string(&e->fs_uuid, c) : "-");
        }

        fprintf(f, "root        password %s, %zu ssh key(s)\n",
                ks && ks->rootpw_set ? password_summary(ks->rootpw_hash, ks->rootpw_lock) : "locked",
                count_keys(ks, "root"));
        for (size_t i = 0; ks && i < ks->n_users; i++)
                fprintf(f, "user        %s password %s, %zu ssh key(s)\n", ks->users[i].name,
                        password_summary(ks->users[i].password_hash, ks->users[i].lock),
                        count_keys(ks, ks->users[i].name));
        if (ks && ks->hostname)
                fprintf(f, "hostname    %s\n", ks->hostname);
        if (ks && ks->timezone)
                fprintf(f, "timezone    %s%s\n", ks->timezone, ks->timezone_utc ? " (utc)" : "");
        print_list(f, "enabled", ks ? ks->services_enabled : NULL);
        print_list(f, "disabled", ks ? ks->services_disabled : NULL);
        fprintf(f, "%%post       %zu script(s)", ks ? ks->n_scripts : 0);
        for (size_t i = 0; ks && i < ks->n_scripts; i++)
                fprintf(f, "%s %s%s", i ? "," : ":", ks->scripts[i].nochroot ? "nochroot " : "",
                        ks->scripts[i].interpreter ? ks->scripts[i].interpreter : "/bin/sh");
        fputc('\n', f);
        fprintf(f, "output      %s\n", s->output_image);
        fprintf(f, "manifest    %s\n", s->output_manifest);
}
