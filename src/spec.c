/* Owns the spec: resolving template and kickstart arguments, joining them,
 * the one verify pass over cross-file rules, the build seed, and printing
 * the plan (text and JSON). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "shared/id128.h"
#include "shared/log.h"
#include "shared/parse-util.h"
#include "shared/strv.h"
#include "spec.h"
#include "verity.h"

/* FAT cannot store times before 1980; a build that names no time uses this
 * instead of the clock (tech.md §5). */
#define SOURCE_DATE_EPOCH_FALLBACK UINT64_C(315532800)

struct spec *spec_free(struct spec *s)
{
        if (!s)
                return NULL;
        template_free(s->template);
        kickstart_free(s->kickstart);
        free(s->template_path);
        free(s->kickstart_path);
        free(s->name);
        free(s->stamp);
        free(s->version);
        free(s->architecture);
        part_layout_free(s->layout);
        strv_free(s->packages);
        strv_free(s->packages_excluded);
        free(s->cmdline);
        free(s->output_dir);
        free(s->output_image);
        free(s->output_manifest);
        free(s);
        return NULL;
}

bool spec_version_is_valid(const char *v)
{
        /* one store key component, as catalog_word_is_valid() wants it:
         * never ".", "..", a hidden name or something that reads as an option */
        if (!v || !*v || strlen(v) > 64 || v[0] == '.' || v[0] == '-')
                return false;
        return strspn(v, "0123456789abcdefghijklmnopqrstuvwxyz._-") == strlen(v);
}

int spec_resolve_input(const char *arg, const char *subdir, const char *suffix, char **ret)
{
        _cleanup_free_ char *dirs = NULL;
        const char *env = getenv("INGOT_DATA_PATH");
        size_t la = strlen(arg), ls = strlen(suffix);
        char *saveptr = NULL;

        if (strchr(arg, '/') || (la >= ls && streq(arg + la - ls, suffix)) || !*arg) {
                char *p = strdup(arg);
                if (!p)
                        return -ENOMEM;
                *ret = p;
                return 0;
        }

        if (asprintf(&dirs, "%s%s%s", env ? env : "", env ? ":" : "", INGOT_DATADIR) < 0) {
                dirs = NULL;
                return -ENOMEM;
        }
        for (char *d = strtok_r(dirs, ":", &saveptr); d; d = strtok_r(NULL, ":", &saveptr)) {
                char *p;

                if (asprintf(&p, "%s/%s/%s%s", d, subdir, arg, suffix) < 0)
                        return -ENOMEM;
                if (access(p, R_OK) == 0) {
                        *ret = p;
                        return 0;
                }
                free(p);
        }
        return -ENOENT;
}

/* An input that cannot be read is bad input too (exit 2), like one that
 * cannot be parsed; the loader has logged why. */
static int input_error(int r)
{
        return r < 0 && r != -ENOMEM ? -EBADMSG : r;
}

static int load_template(struct spec *s, const char *arg)
{
        int r = spec_resolve_input(arg, "templates", ".conf", &s->template_path);

        if (r == -ENOENT)
                return log_error_errno(-EBADMSG,
                                       "no template '%s' (looked for '%s.conf' in $INGOT_DATA_PATH and '%s/templates')",
                                       arg, arg, INGOT_DATADIR);
        if (r < 0)
                return log_error_errno(r, "cannot resolve template '%s': %m", arg);
        return input_error(template_load(s->template_path, &s->template));
}

static void salt_seed(const struct template *t, const char *version, uint8_t ret[32])
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();

        /* Salts for passwords hashed at build time: reproducible, and
         * different for every template and version. */
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        EVP_DigestUpdate(ctx, "ingot-salt-v1", 14);
        EVP_DigestUpdate(ctx, t->digest, 32);
        EVP_DigestUpdate(ctx, version, strlen(version) + 1);
        EVP_DigestFinal_ex(ctx, ret, NULL);
        EVP_MD_CTX_free(ctx);
}

static void build_seed(struct spec *s)
{
        static const uint8_t none[32];
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        char epoch[32];

        snprintf(epoch, sizeof(epoch), "%" PRIu64, s->source_date_epoch);
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        EVP_DigestUpdate(ctx, "ingot-seed-v1", 14);
        EVP_DigestUpdate(ctx, s->template->digest, 32);
        EVP_DigestUpdate(ctx, s->kickstart ? s->kickstart->digest : none, 32);
        EVP_DigestUpdate(ctx, s->version, strlen(s->version) + 1);
        EVP_DigestUpdate(ctx, s->architecture, strlen(s->architecture) + 1);
        EVP_DigestUpdate(ctx, epoch, strlen(epoch) + 1);
        EVP_DigestFinal_ex(ctx, s->seed, NULL);
        EVP_MD_CTX_free(ctx);
}

static int resolve_epoch(struct spec *s)
{
        const char *env = getenv("SOURCE_DATE_EPOCH");

        if (env && *env) {
                if (parse_uint64(env, &s->source_date_epoch) < 0)
                        return log_error_errno(-EBADMSG, "invalid SOURCE_DATE_EPOCH '%s': expected seconds since 1970",
                                               env);
        } else if (s->template->has_source_date_epoch)
                s->source_date_epoch = s->template->source_date_epoch;
        else
                s->source_date_epoch = SOURCE_DATE_EPOCH_FALLBACK;
        return 0;
}

static const char *const supported_fstypes[] = { "ext4", "ext3", "ext2", "vfat", "swap", "erofs" };

static bool fstype_is_supported(const char *f)
{
        for (size_t i = 0; i < ELEMENTSOF(supported_fstypes); i++)
                if (streq(f, supported_fstypes[i]))
                        return true;
        return false;
}

static size_t fstype_label_max(const char *f)
{
        if (streq(f, "vfat"))
                return 11;
        if (streq(f, "erofs"))
                return 15;
        return 16; /* ext2/3/4 */
}

/* Checks the kickstart's part lines against each other and the template,
 * filling requests (borrowing strings from the kickstart). */
static int verify_kickstart_parts(const struct spec *s, struct part_request *req, size_t *n)
{
        const struct kickstart *ks = s->kickstart;
        const struct template *t = s->template;
        const struct ks_part *root = NULL;

        for (size_t i = 0; i < ks->n_parts; i++) {
                const struct ks_part *p = &ks->parts[i];
                enum part_role role = part_role_from_mountpoint(p->mountpoint);
                const char *fstype = p->fstype ? p->fstype : part_role_default_fstype(role, t->root_fstype);

                for (size_t j = 0; j < i; j++)
                        if (streq(ks->parts[j].mountpoint, p->mountpoint))
                                return log_syntax(p->loc.file, p->loc.line,
                                                  "duplicate partition for '%s' (first at %s:%u)", p->mountpoint,
                                                  ks->parts[j].loc.file, ks->parts[j].loc.line);
                if (role == PART_ROLE_BIOS_BOOT) {
                        if (p->fstype)
                                return log_syntax(p->loc.file, p->loc.line,
                                                  "a biosboot partition has no filesystem; drop --fstype");
                } else if (!fstype_is_supported(fstype))
                        return log_syntax(p->loc.file, p->loc.line,
                                          "--fstype=%s is not supported: ingot fills filesystems without mounting them "
                                          "(ext4, ext3, ext2, vfat, erofs, swap)",
                                          fstype);
                if (role == PART_ROLE_ESP && !streq(fstype, "vfat"))
                        return log_syntax(p->loc.file, p->loc.line,
                                          "the EFI system partition '%s' must be vfat, not %s", p->mountpoint, fstype);
                if (streq(fstype ? fstype : "", "erofs") && role != PART_ROLE_ROOT)
                        return log_syntax(p->loc.file, p->loc.line, "erofs is only supported for the root filesystem");
                if (streq(fstype ? fstype : "", "swap") != (role == PART_ROLE_SWAP))
                        return log_syntax(p->loc.file, p->loc.line,
                                          "swap partitions are 'part swap' with --fstype=swap");
                if (p->label && fstype && p->label && strlen(p->label) > fstype_label_max(fstype))
                        return log_syntax(p->loc.file, p->loc.line,
                                          "--label '%s' is longer than %s allows (%zu characters)", p->label, fstype,
                                          fstype_label_max(fstype));
                if (p->maxsize && p->maxsize < p->size)
                        return log_syntax(p->loc.file, p->loc.line, "--maxsize is smaller than --size");
                if (p->size == 0 && !p->grow)
                        return log_syntax(p->loc.file, p->loc.line, "partition '%s' needs --size or --grow",
                                          p->mountpoint);
                if (role == PART_ROLE_ROOT)
                        root = p;

                req[*n] = (struct part_request){
                        .mountpoint = p->mountpoint,
                        .size = p->size,
                        .max_size = p->maxsize,
                        .grow = p->grow,
                        .fstype = fstype,
                        .label = p->label,
                };
                (*n)++;
        }
        if (!root)
                return log_syntax(ks->parts[0].loc.file, ks->parts[0].loc.line,
                                  "no root partition: add a 'part /' line");
        return 0;
}

static bool requests_have(const struct part_request *req, size_t n, enum part_role role)
{
        for (size_t i = 0; i < n; i++)
                if (part_role_from_mountpoint(req[i].mountpoint) == role)
                        return true;
        return false;
}

static void lineage_ids(struct spec *s)
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();

        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        EVP_DigestUpdate(ctx, "ingot-lineage-v1", 17);
        EVP_DigestUpdate(ctx, s->name, strlen(s->name) + 1);
        EVP_DigestUpdate(ctx, s->architecture, strlen(s->architecture) + 1);
        EVP_DigestFinal_ex(ctx, s->lineage, NULL);
        EVP_MD_CTX_free(ctx);

        for (size_t i = 0; i < s->layout->n_entries; i++) {
                struct part_entry *e = &s->layout->entries[i];
                uint8_t data[8 + 16 + 4];

                /* by type and slot: the same partition of the next version
                 * gets the same ids */
                memcpy(data, "fs-uuid:", 8);
                memcpy(data + 8, e->type.bytes, 16);
                for (size_t b = 0; b < 4; b++)
                        data[24 + b] = (uint8_t)(e->number >> (8 * b));
                id128_derive(s->lineage, data, sizeof(data), &e->fs_uuid);
                memcpy(data, "hashseed", 8);
                id128_derive(s->lineage, data, sizeof(data), &e->hash_seed);
        }
}

/* The sealed root: read-only (GPT attribute 60; fs.c sets the ext4
 * read-only feature from it), named and labelled with the version stamp
 * so the partition table alone says what the image is. */
static int seal_layout(struct spec *s)
{
        for (size_t i = 0; i < s->layout->n_entries; i++) {
                struct part_entry *e = &s->layout->entries[i];
                char *name = NULL, *label = NULL;

                if (e->role != PART_ROLE_ROOT && e->role != PART_ROLE_ROOT_VERITY)
                        continue;
                e->read_only = true;
                if (e->role == PART_ROLE_ROOT_VERITY) {
                        if (asprintf(&name, "%s-verity", s->stamp) < 0)
                                return log_error_errno(-ENOMEM, "out of memory");
                } else {
                        name = strdup(s->stamp);
                        label = e->fstype ? strndup(s->stamp, fstype_label_max(e->fstype)) : NULL;
                        if (!name || (e->fstype && !label)) {
                                free(name);
                                return log_error_errno(-ENOMEM, "out of memory");
                        }
                        free(e->label);
                        e->label = label;
                }
                /* GPT names hold 36 UTF-16 code units */
                if (strlen(name) > 36)
                        name[36] = '\0';
                free(e->name);
                e->name = name;
        }
        return 0;
}

static int plan_layout(struct spec *s)
{
        const struct template *t = s->template;
        const struct kickstart *ks = s->kickstart;
        bool want_bios = s->boot_mode == BOOT_MODE_BIOS || s->boot_mode == BOOT_MODE_BOTH;
        size_t n_ks = ks && !ks->autopart ? ks->n_parts : 0;
        _cleanup_free_ struct part_request *req = NULL, *all = NULL;
        size_t n = 0, n_all = 0;
        uint64_t needed = 0;
        int r;

        req = calloc(n_ks + 3, sizeof(*req));
        all = calloc(n_ks + 4, sizeof(*all));
        if (!req || !all)
                return log_error_errno(-ENOMEM, "out of memory");

        if (n_ks > 0) {
                r = verify_kickstart_parts(s, req, &n);
                if (r < 0)
                        return r;
        } else
                req[n++] = (struct part_request){
                        .mountpoint = "/",
                        .size = t->root_size,
                        .grow = t->root_size == 0,
                        .fstype = t->root_fstype,
                };

        /* The boot partitions come first, whether the kickstart named them
         * or not (as "reqpart" would add them). */
        if (want_bios && !requests_have(req, n, PART_ROLE_BIOS_BOOT))
                all[n_all++] = (struct part_request){ .mountpoint = "biosboot", .size = t->bios_boot_size };
        /* The ESP holds the kernel and initrd in every mode: systemd-boot
         * reads them for UEFI, syslinux (installed into the same FAT) for BIOS. */
        if (!requests_have(req, n, PART_ROLE_ESP))
                all[n_all++] =
                        (struct part_request){ .mountpoint = "/boot/efi", .size = t->esp_size, .fstype = "vfat" };
        memcpy(all + n_all, req, n * sizeof(*req));
        n_all += n;

        r = part_plan(all, n_all, t->disk_size, s->architecture, s->seed, &s->layout, &needed);
        if (r >= 0 && s->verity) {
                /* The hash partition follows the root; its size depends on
                 * the root's, so plan once, size it, and plan again (the
                 * root only shrinks, so the tree still fits). */
                size_t root = SIZE_MAX;

                for (size_t i = 0; i < n_all; i++)
                        if (part_role_from_mountpoint(all[i].mountpoint) == PART_ROLE_ROOT)
                                root = i;
                for (size_t i = 0; root != SIZE_MAX && i < s->layout->n_entries; i++)
                        if (s->layout->entries[i].role == PART_ROLE_ROOT) {
                                memmove(all + root + 2, all + root + 1, (n_all - root - 1) * sizeof(*all));
                                all[root + 1] = (struct part_request){
                                        .mountpoint = "root-verity",
                                        .size = verity_hash_size(s->layout->entries[i].size),
                                };
                                n_all++;
                                break;
                        }
                s->layout = part_layout_free(s->layout);
                r = part_plan(all, n_all, t->disk_size, s->architecture, s->seed, &s->layout, &needed);
        }
        if (r == -ENOSPC) {
                unsigned line = template_key_line(t, "Disk", "Size");
                return log_syntax(t->path, line,
                                  "the disk (Size=%" PRIu64
                                  " bytes) is too small for its partitions: they need %" PRIu64 " bytes",
                                  t->disk_size, needed);
        }
        if (r < 0)
                return log_error_errno(r, "cannot plan the partition layout: %m");
        lineage_ids(s);
        return seal_layout(s);
}

static int verify_sshkeys(const struct spec *s)
{
        const struct kickstart *ks = s->kickstart;

        if (!ks)
                return 0;
        for (size_t i = 0; i < ks->n_sshkeys; i++) {
                const struct ks_sshkey *k = &ks->sshkeys[i];
                bool known = streq(k->username, "root");

                for (size_t j = 0; j < ks->n_users && !known; j++)
                        known = streq(ks->users[j].name, k->username);
                if (!known)
                        return log_syntax(k->loc.file, k->loc.line,
                                          "sshkey for unknown user '%s': add a 'user --name=%s' line", k->username,
                                          k->username);
        }
        return 0;
}

static int resolve_packages(struct spec *s)
{
        const struct kickstart *ks = s->kickstart;
        int r;

        r = strv_extend_strv(&s->packages, s->template->packages);
        if (r < 0)
                return log_error_errno(r, "out of memory");
        /* the initrd of a --verity image opens the root with veritysetup */
        if (s->verity && s->template->source == ROOTFS_SOURCE_MMDEBSTRAP &&
            !strv_contains(s->packages, "cryptsetup-bin")) {
                r = strv_extend(&s->packages, "cryptsetup-bin");
                if (r < 0)
                        return log_error_errno(r, "out of memory");
        }
        if (!ks)
                return 0;
        STRV_FOREACH (p, ks->packages)
                if (!strv_contains(s->packages, *p)) {
                        r = strv_extend(&s->packages, *p);
                        if (r < 0)
                                return log_error_errno(r, "out of memory");
                }
        STRV_FOREACH (p, ks->packages_excluded) {
                strv_remove(s->packages, *p);
                r = strv_extend(&s->packages_excluded, *p);
                if (r < 0)
                        return log_error_errno(r, "out of memory");
        }
        return 0;
}

const char *spec_cmdline_owned_word(const char *cmdline, size_t *ret_len)
{
        /* prefixes; "rw" and "ro" are whole words */
        static const char *const owned[] = {
                "root=",     "init=",          "rdinit=",       "rootflags=",        "rootfstype=",
                "roothash=", "systemd.verity", "ingot.verity.", "rd.systemd.verity",
        };

        for (const char *w = cmdline; w && *w;) {
                size_t n;

                w += strspn(w, " \t\n");
                n = strcspn(w, " \t\n");
                if (n == 0)
                        break;
                if (n == 2 && (strncmp(w, "rw", 2) == 0 || strncmp(w, "ro", 2) == 0)) {
                        *ret_len = n;
                        return w;
                }
                for (size_t i = 0; i < ELEMENTSOF(owned); i++)
                        if (n >= strlen(owned[i]) && strncmp(w, owned[i], strlen(owned[i])) == 0) {
                                *ret_len = n;
                                return w;
                        }
                w += n;
        }
        return NULL;
}

static int build_cmdline(struct spec *s)
{
        const struct part_entry *root = NULL, *hash = NULL;
        const char *tmpl = s->template->cmdline;
        const char *append = s->kickstart ? s->kickstart->bootloader_append : NULL;
        char uuid[ID128_STRING_MAX], hash_uuid[ID128_STRING_MAX];
        int r;

        for (size_t i = 0; i < s->layout->n_entries; i++)
                if (s->layout->entries[i].role == PART_ROLE_ROOT)
                        root = &s->layout->entries[i];
        if (!root)
                return log_error_errno(-EBADMSG, "the layout has no root partition");
        /* The build says how the root is found, mounted read-only and, with
         * --verity, opened through dm-verity; a kickstart's root=, init= or
         * verity option would fight that or boot past the verified root.
         * kickstart.c refuses most with the line; this is the rule. */
        if (append) {
                size_t n;
                const char *w = spec_cmdline_owned_word(append, &n);

                if (w)
                        return log_syntax(s->kickstart_path, 0,
                                          "'bootloader --append' must not set '%.*s': the build sets how the root is "
                                          "found, mounted and verified, and a second one could bypass it",
                                          (int)n, w);
        }
        for (size_t i = 0; i < s->layout->n_entries; i++)
                if (s->layout->entries[i].role == PART_ROLE_ROOT_VERITY)
                        hash = &s->layout->entries[i];
        /* The root is found by PARTUUID and mounted read-only (the ext4
         * read-only feature keeps it so); with verity the initrd opens it
         * through dm-verity first (data/verity/initramfs-local-top). */
        if (hash)
                r = asprintf(&s->cmdline, "%s%sroot=%s ro ingot.verity.data=%s ingot.verity.hash=%s%s%s",
                             tmpl ? tmpl : "", tmpl && *tmpl ? " " : "", SPEC_VERITY_DEVICE,
                             id128_to_string(&root->uuid, uuid), id128_to_string(&hash->uuid, hash_uuid),
                             append && *append ? " " : "", append ? append : "");
        else
                r = asprintf(&s->cmdline, "%s%sroot=PARTUUID=%s ro%s%s", tmpl ? tmpl : "", tmpl && *tmpl ? " " : "",
                             id128_to_string(&root->uuid, uuid), append && *append ? " " : "", append ? append : "");
        if (r < 0) {
                s->cmdline = NULL;
                return log_error_errno(-ENOMEM, "out of memory");
        }
        return 0;
}

static int resolve_outputs(struct spec *s, const struct spec_options *o)
{
        const char *dir = o->output_dir ? o->output_dir : ".";
        const char *ext;

        if (!o->format || streq(o->format, "raw"))
                s->format = OUTPUT_FORMAT_RAW;
        else if (streq(o->format, "qcow2"))
                s->format = OUTPUT_FORMAT_QCOW2;
        else
                return log_error_errno(-EBADMSG, "unknown --format '%s': expected raw or qcow2", o->format);
        ext = s->format == OUTPUT_FORMAT_QCOW2 ? "qcow2" : "raw";

        s->output_dir = strdup(dir);
        if (!s->output_dir || asprintf(&s->output_image, "%s/%s-%s.%s", dir, s->name, s->version, ext) < 0 ||
            asprintf(&s->output_manifest, "%s/%s-%s.manifest.json", dir, s->name, s->version) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        return 0;
}

int spec_load(const struct spec_options *o, struct spec **ret)
{
        _cleanup_(spec_freep) struct spec *s = NULL;
        struct ks_parse_options kopts;
        uint8_t salt[32];
        const char *version;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return log_error_errno(-ENOMEM, "out of memory");

        r = load_template(s, o->template);
        if (r < 0)
                return r;

        version = o->version ? o->version : s->template->version;
        if (!version)
                return log_error_errno(-EBADMSG, "no image version: give --version or set Version= in [Image] of '%s'",
                                       s->template_path);
        if (!spec_version_is_valid(version))
                return log_error_errno(-EBADMSG,
                                       "invalid version '%s': use at most 64 lower-case letters, digits, '.', '_' "
                                       "and '-', starting with a letter or digit (as os-release IMAGE_VERSION)",
                                       version);
        s->version = strdup(version);
        s->name = strdup(s->template->name);
        s->architecture = strdup(s->template->architecture);
        if (!s->version || !s->name || !s->architecture)
                return log_error_errno(-ENOMEM, "out of memory");
        s->boot_mode = s->template->boot_mode;
        s->verity = o->verity;
        if (s->verity && s->template->source == ROOTFS_SOURCE_BUSYBOX)
                return log_error_errno(-EBADMSG,
                                       "--verity: the busybox template's initrd cannot open dm-verity; use a "
                                       "template with initramfs-tools (e.g. debian-12)");
        if (!spec_version_is_valid(s->name))
                return log_syntax(s->template_path, template_key_line(s->template, "Image", "Name"),
                                  "invalid Name= '%s': use at most 64 lower-case letters, digits, '.', '_' and "
                                  "'-', starting with a letter or digit (as os-release IMAGE_ID)",
                                  s->name);
        if (asprintf(&s->stamp, "%s_%s", s->name, s->version) < 0) {
                s->stamp = NULL;
                return log_error_errno(-ENOMEM, "out of memory");
        }

        if (o->kickstart) {
                r = spec_resolve_input(o->kickstart, "kickstart", ".ks", &s->kickstart_path);
                if (r == -ENOENT)
                        return log_error_errno(
                                -EBADMSG,
                                "no kickstart '%s' (looked for '%s.ks' in $INGOT_DATA_PATH and '%s/kickstart')",
                                o->kickstart, o->kickstart, INGOT_DATADIR);
                if (r < 0)
                        return log_error_errno(r, "cannot resolve kickstart '%s': %m", o->kickstart);
                salt_seed(s->template, s->version, salt);
                kopts = (struct ks_parse_options){ .salt_seed = salt };
                r = kickstart_parse_file(s->kickstart_path, &kopts, &s->kickstart);
                if (r < 0)
                        return input_error(r);
        }

        r = resolve_epoch(s);
        if (r < 0)
                return r;
        build_seed(s);

        r = verify_sshkeys(s);
        if (r < 0)
                return r;
        r = plan_layout(s);
        if (r < 0)
                return r;
        r = resolve_packages(s);
        if (r < 0)
                return r;
        r = build_cmdline(s);
        if (r < 0)
                return r;
        r = resolve_outputs(s, o);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}
