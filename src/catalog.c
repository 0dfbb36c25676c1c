/* Owns the catalog's objects in the store: derived ids, references, tags,
 * block lists, image records, their JSON forms, and what gc may delete.
 * The commands in cmd-push.c, cmd-images.c and cmd-pull.c drive it. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "lock.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/proc-util.h"
#include "shared/strv.h"

/* ---- ids ---- */

static void derive_id(const char *domain, const char *prefix, const char *name, const char *version,
                      const char *digest_hex, char ret[static CATALOG_ID_MAX])
{
        _cleanup_free_ char *text = NULL;
        uint8_t h[32];
        char hex[65];
        int n;

        n = asprintf(&text, "%s\n%s\n%s\n%s", domain, name, version, digest_hex);
        if (n < 0) {
                /* a few hundred bytes; treat failure as fatal rather than
                 * hand out a wrong id */
                abort();
        }
        sha256_buffer(text, (size_t)n, h);
        hex_encode(h, 32, hex);
        snprintf(ret, CATALOG_ID_MAX, "%s%.*s", prefix, CATALOG_ID_HEX, hex);
}

void catalog_image_id(const char *name, const char *version, const char *digest_hex, char ret[static CATALOG_ID_MAX])
{
        derive_id("ingot-ami-v1", "ami-", name, version, digest_hex, ret);
}

void catalog_snapshot_id(const char *name, const char *version, const char *digest_hex, char ret[static CATALOG_ID_MAX])
{
        derive_id("ingot-snap-v1", "snap-", name, version, digest_hex, ret);
}

static bool is_hex(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return s[n] == '\0';
}

bool catalog_id_is_valid(const char *s)
{
        return s && strncmp(s, "ami-", 4) == 0 && strlen(s) == 4 + CATALOG_ID_HEX && is_hex(s + 4, CATALOG_ID_HEX);
}

bool catalog_word_is_valid(const char *s)
{
        size_t n;

        if (!s || !*s || *s == '.' || *s == '-')
                return false;
        n = strlen(s);
        if (n > 128)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

/* ---- references ---- */

void catalog_ref_done(struct catalog_ref *r)
{
        if (!r)
                return;
        r->id = x_free(r->id);
        r->name = x_free(r->name);
        r->version = x_free(r->version);
        r->channel = x_free(r->channel);
}

int catalog_ref_parse(const char *s, struct catalog_ref *ret)
{
        struct catalog_ref r = {};
        const char *sep;

        if (!s)
                return -EINVAL;
        if (strncmp(s, "ami-", 4) == 0 && !strpbrk(s, "@:")) {
                if (!catalog_id_is_valid(s))
                        return -EINVAL;
                r.kind = CATALOG_REF_ID;
                r.id = strdup(s);
                if (!r.id)
                        return -ENOMEM;
                *ret = r;
                return 0;
        }
        sep = strpbrk(s, "@:");
        if (!sep)
                return -EINVAL;
        r.kind = *sep == '@' ? CATALOG_REF_VERSION : CATALOG_REF_CHANNEL;
        r.name = strndup(s, (size_t)(sep - s));
        if (!r.name)
                return -ENOMEM;
        if (!catalog_word_is_valid(r.name) || !catalog_word_is_valid(sep + 1)) {
                catalog_ref_done(&r);
                return -EINVAL;
        }
        if (r.kind == CATALOG_REF_VERSION)
                r.version = strdup(sep + 1);
        else
                r.channel = strdup(sep + 1);
        if (!r.version && !r.channel) {
                catalog_ref_done(&r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

/* ---- tags ---- */

static bool has_control(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

int catalog_tag_add(char ***tags, const char *kv, const char **ret_error)
{
        const char *eq = strchr(kv, '=');
        _cleanup_free_ char *k = NULL;
        size_t n;

        if (!eq || eq == kv) {
                *ret_error = "a tag is KEY=VALUE with a non-empty key";
                return -EINVAL;
        }
        k = strndup(kv, (size_t)(eq - kv));
        if (!k)
                return -ENOMEM;
        if (strncasecmp(k, "aws:", 4) == 0) {
                *ret_error = "tag keys starting with 'aws:' are reserved";
                return -EINVAL;
        }
        if (strlen(k) > CATALOG_TAG_KEY_MAX) {
                *ret_error = "a tag key has at most 128 characters";
                return -EINVAL;
        }
        if (strlen(eq + 1) > CATALOG_TAG_VALUE_MAX) {
                *ret_error = "a tag value has at most 256 characters";
                return -EINVAL;
        }
        if (has_control(k) || has_control(eq + 1)) {
                *ret_error = "tags may not hold control characters";
                return -EINVAL;
        }
        n = strv_length(*tags);
        for (size_t i = 0; i + 1 < n; i += 2)
                if (streq((*tags)[i], k)) {
                        char *v = strdup(eq + 1);
                        if (!v)
                                return -ENOMEM;
                        free((*tags)[i + 1]);
                        (*tags)[i + 1] = v;
                        return 0;
                }
        if (n / 2 >= CATALOG_TAGS_MAX) {
                *ret_error = "an image has at most 50 tags";
                return -EINVAL;
        }
        if (strv_consume(tags, TAKE_PTR(k)) < 0 || strv_extend(tags, eq + 1) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- block lists ---- */

struct catalog_blocklist *catalog_blocklist_free(struct catalog_blocklist *b)
{
        if (!b)
                return NULL;
        free(b->hashes);
        free(b->zero);
        free(b);
        return NULL;
}

static int blocklist_new(uint64_t block_size, uint64_t size, struct catalog_blocklist **ret)
{
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;

        if (block_size == 0 || block_size > (UINT64_C(1) << 30))
                return -EINVAL;
        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->block_size = block_size;
        b->size = size;
        b->n_blocks = (size_t)((size + block_size - 1) / block_size);
        b->hashes = calloc(b->n_blocks ?: 1, 32);
        b->zero = calloc(b->n_blocks ?: 1, sizeof(bool));
        if (!b->hashes || !b->zero)
                return -ENOMEM;
        *ret = TAKE_PTR(b);
        return 0;
}

uint64_t catalog_blocklist_block_bytes(const struct catalog_blocklist *b, size_t i)
{
        uint64_t start = (uint64_t)i * b->block_size;

        if (start >= b->size)
                return 0;
        return b->size - start < b->block_size ? b->size - start : b->block_size;
}

static bool all_zero(const uint8_t *p, size_t n)
{
        /* compare word-wise; the buffer is malloc-aligned */
        size_t i = 0;

        for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t)) {
                uint64_t w;
                memcpy(&w, p + i, sizeof(w));
                if (w)
                        return false;
        }
        for (; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(off + done));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO; /* the file got shorter under us */
                done += (size_t)k;
        }
        return 0;
}

int catalog_blocklist_compute(int fd, uint64_t size, struct catalog_blocklist **ret)
{
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        /* the start of the next data at or after the offset looked at last;
         * UINT64_MAX when only a hole follows */
        uint64_t next_data = 0;
        int r;

        r = blocklist_new(STORE_BLOCK_SIZE, size, &b);
        if (r < 0)
                return r;
        buf = malloc(STORE_BLOCK_SIZE);
        if (!buf)
                return -ENOMEM;

        for (size_t i = 0; i < b->n_blocks; i++) {
                uint64_t start = (uint64_t)i * b->block_size, n = catalog_blocklist_block_bytes(b, i);

                if (next_data != UINT64_MAX && next_data < start) {
                        off_t o = lseek(fd, (off_t)start, SEEK_DATA);
                        if (o < 0 && errno == ENXIO)
                                next_data = UINT64_MAX;
                        else if (o < 0)
                                next_data = start; /* no SEEK_DATA here: read everything */
                        else
                                next_data = (uint64_t)o;
                }
                if (next_data >= start + n) {
                        b->zero[i] = true; /* wholly in a hole: never read */
                        continue;
                }
                r = pread_full(fd, buf, (size_t)n, start);
                if (r < 0)
                        return r;
                if (all_zero(buf, (size_t)n)) {
                        b->zero[i] = true;
                        continue;
                }
                sha256_buffer(buf, (size_t)n, b->hashes[i]);
        }
        *ret = TAKE_PTR(b);
        return 0;
}

char *catalog_block_key(const uint8_t hash[32], char buf[static CATALOG_BLOCK_KEY_MAX])
{
        memcpy(buf, "blocks/", 7);
        hex_encode(hash, 32, buf + 7);
        return buf;
}

json_t *catalog_blocklist_to_json(const struct catalog_blocklist *b)
{
        json_t *blocks = json_array();
        char hex[65];

        for (size_t i = 0; i < b->n_blocks; i++)
                json_array_append_new(blocks,
                                      b->zero[i] ? json_null() : json_string(hex_encode(b->hashes[i], 32, hex)));
        return json_pack("{s:o, s:o, s:o}", "block_size", json_u64(b->block_size), "size", json_u64(b->size), "blocks",
                         blocks);
}

static int bad(char **ret_error, const char *fmt, ...) _printf_(2, 3);
static int bad(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return -EBADMSG;
}

static int hex_decode32(const char *s, uint8_t ret[32])
{
        if (!s || strlen(s) != 64 || !is_hex(s, 64))
                return -EINVAL;
        for (size_t i = 0; i < 32; i++) {
                unsigned v;
                if (sscanf(s + 2 * i, "%2x", &v) != 1)
                        return -EINVAL;
                ret[i] = (uint8_t)v;
        }
        return 0;
}

static bool get_u64(json_t *o, const char *key, uint64_t *ret)
{
        json_t *v = json_object_get(o, key);

        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return false;
        *ret = (uint64_t)json_integer_value(v);
        return true;
}

int catalog_blocklist_from_json(const char *data, size_t size, struct catalog_blocklist **ret, char **ret_error)
{
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
        json_error_t e;
        json_t *root, *blocks;
        uint64_t bs, sz;
        int r;

        root = json_loadb(data, size, 0, &e);
        if (!root)
                return bad(ret_error, "not JSON: %s (line %d)", e.text, e.line);
        blocks = json_object_get(root, "blocks");
        if (!get_u64(root, "block_size", &bs) || !get_u64(root, "size", &sz) || !json_is_array(blocks)) {
                json_decref(root);
                return bad(ret_error, "needs \"block_size\", \"size\" and \"blocks\"");
        }
        r = blocklist_new(bs, sz, &b);
        if (r < 0) {
                json_decref(root);
                return r == -EINVAL ? bad(ret_error, "bad \"block_size\"") : r;
        }
        if (json_array_size(blocks) != b->n_blocks) {
                size_t n = json_array_size(blocks);
                json_decref(root);
                return bad(ret_error, "%zu blocks listed, %zu expected for %llu bytes", n, b->n_blocks,
                           (unsigned long long)sz);
        }
        for (size_t i = 0; i < b->n_blocks; i++) {
                json_t *v = json_array_get(blocks, i);
                if (json_is_null(v))
                        b->zero[i] = true;
                else if (!json_is_string(v) || hex_decode32(json_string_value(v), b->hashes[i]) < 0) {
                        json_decref(root);
                        return bad(ret_error, "block %zu is not a SHA-256 in hex or null", i);
                }
        }
        json_decref(root);
        *ret = TAKE_PTR(b);
        return 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts l and drops duplicates, in place. */
static void strv_sort_uniq(char **l)
{
        size_t n = strv_length(l), w = 0;

        if (n == 0)
                return;
        qsort(l, n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < n; i++) {
                if (w > 0 && streq(l[w - 1], l[i])) {
                        free(l[i]);
                        continue;
                }
                l[w++] = l[i];
        }
        l[w] = NULL;
}

static bool strv_sorted_contains(char *const *l, size_t n, const char *s)
{
        return n > 0 && bsearch(&s, l, n, sizeof(char *), cmp_str) != NULL;
}

int catalog_blocklist_keys(const struct catalog_blocklist *b, char ***ret)
{
        _cleanup_strv_free_ char **l = NULL;
        char key[CATALOG_BLOCK_KEY_MAX];
        size_t n = 0;

        for (size_t i = 0; i < b->n_blocks; i++)
                n += !b->zero[i];
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        n = 0;
        for (size_t i = 0; i < b->n_blocks; i++)
                if (!b->zero[i]) {
                        l[n] = strdup(catalog_block_key(b->hashes[i], key));
                        if (!l[n++])
                                return -ENOMEM;
                }
        strv_sort_uniq(l);
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- time ---- */

int64_t catalog_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *catalog_format_time(int64_t ms, char *buf, size_t size)
{
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        char s[32];

        if (!gmtime_r(&t, &tm) || strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
                snprintf(s, sizeof(s), "1970-01-01T00:00:00");
        snprintf(buf, size, "%s.%03dZ", s, (int)(ms % 1000));
        return buf;
}

int catalog_parse_time(const char *s, int64_t now_ms, int64_t *ret)
{
        struct tm tm = {};
        const char *p;
        int ms = 0;
        time_t t;

        if (streq(s, "now")) {
                *ret = now_ms;
                return 0;
        }
        p = strptime(s, "%Y-%m-%d", &tm);
        if (!p)
                return -EINVAL;
        if (*p == 'T' || *p == ' ') {
                const char *q = strptime(p + 1, "%H:%M:%S", &tm);
                if (!q)
                        q = strptime(p + 1, "%H:%M", &tm);
                if (!q)
                        return -EINVAL;
                p = q;
                if (*p == '.') {
                        int digits = 0;
                        for (p++; isdigit((unsigned char)*p); p++, digits++)
                                if (digits < 3)
                                        ms = ms * 10 + (*p - '0');
                        if (digits == 0)
                                return -EINVAL;
                        for (; digits < 3; digits++)
                                ms *= 10;
                }
        }
        if (*p == 'Z')
                p++;
        if (*p)
                return -EINVAL;
        t = timegm(&tm);
        if (t == (time_t)-1)
                return -EINVAL;
        *ret = (int64_t)t * 1000 + ms;
        return 0;
}

/* ---- records ---- */

const char *catalog_state_to_string(enum catalog_state s)
{
        switch (s) {
        case CATALOG_STATE_PENDING:
                return "pending";
        case CATALOG_STATE_AVAILABLE:
                return "available";
        case CATALOG_STATE_DEREGISTERED:
                return "deregistered";
        }
        return "unknown";
}

const char *catalog_record_state_string(const struct catalog_record *r, int64_t now_ms)
{
        if (r->state == CATALOG_STATE_AVAILABLE && r->deprecation_ms >= 0 && r->deprecation_ms <= now_ms)
                return "deprecated";
        return catalog_state_to_string(r->state);
}

const char *catalog_architecture_from_manifest(const char *arch)
{
        if (!arch)
                return NULL;
        if (streq(arch, "x86-64") || streq(arch, "x86_64") || streq(arch, "amd64"))
                return "x86_64";
        if (streq(arch, "arm64") || streq(arch, "aarch64"))
                return "arm64";
        return NULL;
}

const char *catalog_boot_mode_from_manifest(json_t *boot_modes)
{
        bool bios = false, uefi = false;
        size_t i;
        json_t *v;

        json_array_foreach(boot_modes, i, v)
        {
                const char *m = json_string_value(v);
                if (m && streq(m, "bios"))
                        bios = true;
                else if (m && streq(m, "uefi"))
                        uefi = true;
        }
        /* both: EC2 says uefi-preferred (UEFI where the instance type has
         * it, legacy BIOS elsewhere) */
        return bios && uefi ? "uefi-preferred" : uefi ? "uefi" : bios ? "legacy-bios" : NULL;
}

struct catalog_record *catalog_record_free(struct catalog_record *r)
{
        if (!r)
                return NULL;
        free(r->image_id);
        free(r->name);
        free(r->version);
        free(r->description);
        free(r->architecture);
        free(r->boot_mode);
        free(r->state_reason);
        strv_free(r->tags);
        strv_free(r->channels);
        free(r->snapshot_id);
        free(r->digest);
        free(r->block_list);
        free(r->block_list_sha256);
        json_decref(r->manifest);
        free(r->manifest_sha256);
        free(r->signature);
        free(r->verity_root_hash);
        free(r->os_image_id);
        free(r->os_image_version);
        free(r);
        return NULL;
}

static json_t *time_or_null(int64_t ms)
{
        char buf[40];

        return ms < 0 ? json_null() : json_string(catalog_format_time(ms, buf, sizeof(buf)));
}

json_t *catalog_record_to_json(const struct catalog_record *r)
{
        json_t *j = json_object(), *tags = json_object(), *bdm, *img, *reason = json_null(), *osr;
        size_t n = strv_length(r->tags);

        for (size_t i = 0; i + 1 < n; i += 2)
                json_object_set_new(tags, r->tags[i], json_string(r->tags[i + 1]));
        if (r->state_reason)
                reason = json_pack("{s:s, s:s}", "code", catalog_state_to_string(r->state), "message", r->state_reason);
        bdm = json_pack("[{s:s, s:{s:s, s:o, s:s, s:b, s:b}}]", "device_name", "/dev/xvda", "ebs", "snapshot_id",
                        r->snapshot_id, "volume_size_gib", json_u64(r->volume_size_gib), "volume_type", "gp3",
                        "delete_on_termination", 1, "encrypted", 0);
        img = json_pack("{s:o, s:s, s:o, s:s, s:s, s:o}", "size", json_u64(r->size), "digest", r->digest, "block_size",
                        json_u64(r->block_size), "block_list", r->block_list, "block_list_sha256", r->block_list_sha256,
                        "blocks_stored", json_u64(r->blocks_stored));
        osr = json_pack("{s:o, s:o}", "IMAGE_ID", json_str_or_null(r->os_image_id), "IMAGE_VERSION",
                        json_str_or_null(r->os_image_version));

        json_object_set_new(j, "format", json_string(CATALOG_RECORD_FORMAT));
        json_object_set_new(j, "image_id", json_string(r->image_id));
        json_object_set_new(j, "name", json_string(r->name));
        json_object_set_new(j, "version", json_string(r->version));
        json_object_set_new(j, "description", json_str_or_null(r->description));
        json_object_set_new(j, "architecture", json_string(r->architecture));
        json_object_set_new(j, "virtualization_type", json_string("hvm"));
        json_object_set_new(j, "hypervisor", json_string("xen"));
        json_object_set_new(j, "boot_mode", json_str_or_null(r->boot_mode));
        json_object_set_new(j, "root_device_name", json_string("/dev/xvda"));
        json_object_set_new(j, "root_device_type", json_string("ebs"));
        json_object_set_new(j, "image_type", json_string("machine"));
        json_object_set_new(j, "block_device_mappings", bdm);
        json_object_set_new(j, "state", json_string(catalog_state_to_string(r->state)));
        json_object_set_new(j, "state_reason", reason);
        json_object_set_new(j, "creation_date", time_or_null(r->creation_ms));
        json_object_set_new(j, "deprecation_time", time_or_null(r->deprecation_ms));
        json_object_set_new(j, "tags", tags);
        json_object_set_new(j, "channels", json_strv(r->channels));
        json_object_set_new(j, "image", img);
        json_object_set_new(j, "manifest", r->manifest ? json_incref(r->manifest) : json_null());
        json_object_set_new(j, "manifest_sha256", json_str_or_null(r->manifest_sha256));
        json_object_set_new(j, "signature", json_str_or_null(r->signature));
        json_object_set_new(j, "verity_root_hash", json_str_or_null(r->verity_root_hash));
        json_object_set_new(j, "os_release", osr);
        return j;
}

/* A copy of a string member, NULL when null or absent; false when it is
 * there but not a string (or on ENOMEM, reported as malformed too: a
 * record is small). */
static bool dup_str(json_t *o, const char *key, bool required, char **ret)
{
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                *ret = NULL;
                return !required;
        }
        if (!json_is_string(v))
                return false;
        *ret = strdup(json_string_value(v));
        return *ret != NULL;
}

static bool get_time(json_t *o, const char *key, int64_t *ret)
{
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                *ret = -1;
                return true;
        }
        return json_is_string(v) && catalog_parse_time(json_string_value(v), 0, ret) >= 0;
}

/* A record's id is derived from its name, version and digest, so the
 * three cannot be edited apart: an id that does not follow, a digest that
 * is not one (or is all zeros), a manifest of another image, a block list
 * key of another id are all signs of a corrupt or forged record. */
static int record_identity_check(const struct catalog_record *r, char **ret_error)
{
        static const char zeros[65] = "0000000000000000000000000000000000000000000000000000000000000000";
        char id[CATALOG_ID_MAX], snap[CATALOG_ID_MAX], *bl = NULL;
        json_t *mimg;
        bool ok;

        if (!catalog_word_is_valid(r->name) || !catalog_word_is_valid(r->version))
                return bad(ret_error, "name '%s' or version '%s' is not valid", r->name, r->version);
        if (strlen(r->digest) != 64 || !is_hex(r->digest, 64) || streq(r->digest, zeros))
                return bad(ret_error, "\"digest\" '%s' is not a SHA-256", r->digest);
        catalog_image_id(r->name, r->version, r->digest, id);
        if (!streq(id, r->image_id))
                return bad(ret_error, "its id %s does not follow from its name, version and digest (%s)", r->image_id,
                           id);
        catalog_snapshot_id(r->name, r->version, r->digest, snap);
        if (!streq(snap, r->snapshot_id))
                return bad(ret_error, "its snapshot id %s does not follow from its name, version and digest",
                           r->snapshot_id);
        if (asprintf(&bl, "blocklists/%s.json", r->image_id) < 0)
                return -ENOMEM;
        ok = streq(bl, r->block_list);
        free(bl);
        if (!ok)
                return bad(ret_error, "its block list '%s' is not its own", r->block_list);
        if (strlen(r->block_list_sha256) != 64 || !is_hex(r->block_list_sha256, 64))
                return bad(ret_error, "\"block_list_sha256\" is not a SHA-256");
        if (r->manifest) {
                mimg = json_object_get(r->manifest, "image");
                if (!streq_ptr(json_string_value(json_object_get(r->manifest, "name")), r->name) ||
                    !streq_ptr(json_string_value(json_object_get(r->manifest, "version")), r->version) ||
                    !streq_ptr(json_string_value(json_object_get(mimg, "digest")), r->digest))
                        return bad(ret_error, "its manifest is of another image (name, version or digest differ)");
        }
        return 0;
}

int catalog_record_from_json(const char *data, size_t size, struct catalog_record **ret, char **ret_error)
{
        _cleanup_(catalog_record_freep) struct catalog_record *r = NULL;
        _cleanup_free_ char *state = NULL;
        json_t *root, *v, *img, *bdm, *osr;
        json_error_t e;
        const char *key;
        int res = -EBADMSG;

        root = json_loadb(data, size, 0, &e);
        if (!root)
                return bad(ret_error, "not JSON: %s (line %d)", e.text, e.line);
        r = calloc(1, sizeof(*r));
        if (!r) {
                json_decref(root);
                return -ENOMEM;
        }
        if (!json_is_object(root)) {
                bad(ret_error, "not a JSON object");
                goto out;
        }
        v = json_object_get(root, "format");
        if (!json_is_string(v) || !streq(json_string_value(v), CATALOG_RECORD_FORMAT)) {
                bad(ret_error, "not an image record (\"format\" is not \"%s\")", CATALOG_RECORD_FORMAT);
                goto out;
        }
        if (!dup_str(root, "image_id", true, &r->image_id) || !catalog_id_is_valid(r->image_id) ||
            !dup_str(root, "name", true, &r->name) || !dup_str(root, "version", true, &r->version) ||
            !dup_str(root, "description", false, &r->description) ||
            !dup_str(root, "architecture", true, &r->architecture) ||
            !dup_str(root, "boot_mode", false, &r->boot_mode) || !dup_str(root, "state", true, &state) ||
            !dup_str(root, "signature", false, &r->signature) ||
            !dup_str(root, "manifest_sha256", false, &r->manifest_sha256) ||
            !dup_str(root, "verity_root_hash", false, &r->verity_root_hash)) {
                bad(ret_error, "missing or mistyped identity fields (image_id, name, version, architecture, state)");
                goto out;
        }
        if (streq(state, "pending"))
                r->state = CATALOG_STATE_PENDING;
        else if (streq(state, "available"))
                r->state = CATALOG_STATE_AVAILABLE;
        else if (streq(state, "deregistered"))
                r->state = CATALOG_STATE_DEREGISTERED;
        else {
                bad(ret_error, "unknown state '%s'", state);
                goto out;
        }
        v = json_object_get(root, "state_reason");
        if (json_is_object(v) && !dup_str(v, "message", false, &r->state_reason)) {
                bad(ret_error, "\"state_reason\" is mistyped");
                goto out;
        }
        if (!get_time(root, "creation_date", &r->creation_ms) ||
            !get_time(root, "deprecation_time", &r->deprecation_ms)) {
                bad(ret_error, "\"creation_date\" or \"deprecation_time\" is not an ISO time");
                goto out;
        }
        v = json_object_get(root, "tags");
        if (v && !json_is_null(v)) {
                if (!json_is_object(v)) {
                        bad(ret_error, "\"tags\" is not an object");
                        goto out;
                }
                json_t *tv;
                json_object_foreach(v, key, tv)
                {
                        if (!json_is_string(tv)) {
                                bad(ret_error, "tag '%s' is not a string", key);
                                goto out;
                        }
                        if (strv_extend(&r->tags, key) < 0 || strv_extend(&r->tags, json_string_value(tv)) < 0) {
                                res = -ENOMEM;
                                goto out;
                        }
                }
        }
        v = json_object_get(root, "channels");
        if (json_is_array(v)) {
                size_t i;
                json_t *c;
                json_array_foreach(v, i,
                                   c) if (json_is_string(c) && strv_extend(&r->channels, json_string_value(c)) < 0)
                {
                        res = -ENOMEM;
                        goto out;
                }
        }
        bdm = json_object_get(json_array_get(json_object_get(root, "block_device_mappings"), 0), "ebs");
        if (!dup_str(bdm, "snapshot_id", true, &r->snapshot_id) ||
            !get_u64(bdm, "volume_size_gib", &r->volume_size_gib)) {
                bad(ret_error, "\"block_device_mappings\" lacks the root volume's snapshot_id and volume_size_gib");
                goto out;
        }
        img = json_object_get(root, "image");
        if (!json_is_object(img) || !get_u64(img, "size", &r->size) || !dup_str(img, "digest", true, &r->digest) ||
            !get_u64(img, "block_size", &r->block_size) || !dup_str(img, "block_list", true, &r->block_list) ||
            !dup_str(img, "block_list_sha256", true, &r->block_list_sha256) ||
            !get_u64(img, "blocks_stored", &r->blocks_stored)) {
                bad(ret_error, "\"image\" needs size, digest, block_size, block_list, block_list_sha256 and "
                               "blocks_stored");
                goto out;
        }
        v = json_object_get(root, "manifest");
        if (json_is_object(v))
                r->manifest = json_incref(v);
        osr = json_object_get(root, "os_release");
        if (json_is_object(osr) && (!dup_str(osr, "IMAGE_ID", false, &r->os_image_id) ||
                                    !dup_str(osr, "IMAGE_VERSION", false, &r->os_image_version))) {
                bad(ret_error, "\"os_release\" is mistyped");
                goto out;
        }
        res = record_identity_check(r, ret_error);
        if (res < 0)
                goto out;
        *ret = TAKE_PTR(r);
        res = 0;
out:
        json_decref(root);
        return res;
}

/* ---- the store ---- */

int catalog_store_open(const char *arg, bool insecure, unsigned jobs, struct store **ret)
{
        _cleanup_free_ char *url = NULL;
        struct store_options o = { .insecure = insecure, .jobs = jobs };
        int r;

        r = store_url_default(arg, &url);
        if (r < 0)
                return r;                /* logged */
        return store_open(url, &o, ret); /* logged */
}

char *catalog_json_format(json_t *j)
{
        _cleanup_free_ char *text = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        char *t;

        if (!text || asprintf(&t, "%s\n", text) < 0)
                return NULL;
        return t;
}

int catalog_get_json(struct store *s, const char *key, json_t **ret)
{
        _cleanup_free_ char *data = NULL;
        json_error_t e;
        size_t size;
        json_t *j;
        int r;

        r = store_get_full(s, key, CATALOG_POINTER_MAX, &data, &size, NULL);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return r; /* the store said why */
        j = json_loadb(data, size, 0, &e);
        if (!j || !json_is_object(j)) {
                json_decref(j);
                return log_error_errno(-EBADMSG, "'%s' in the store is not a JSON object", key);
        }
        *ret = j;
        return 0;
}

int catalog_put_json(struct store *s, const char *key, json_t *j)
{
        _cleanup_free_ char *t = catalog_json_format(j);

        if (!t)
                return log_error_errno(-ENOMEM, "out of memory");
        return store_put(s, key, t, strlen(t)); /* the store logs its errors */
}

/* images/<id>.json, checked: the record's own id must be the key's. */
static int record_read(struct store *s, const char *key, struct catalog_record **ret)
{
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_free_ char *data = NULL, *error = NULL;
        size_t size, n = strlen(key);
        int r;

        r = store_get_full(s, key, CATALOG_RECORD_MAX, &data, &size, NULL);
        if (r == -ENOENT)
                return r;
        if (r == -EFBIG)
                return -EBADMSG; /* logged */
        if (r < 0)
                return r;
        r = catalog_record_from_json(data, size, &rec, &error);
        if (r == -EBADMSG)
                return log_error_errno(r, "'%s' in the store is not a valid image record: %s", key, strna(error));
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", key);
        if (n < 12 || strncmp(key, "images/", 7) != 0 || strlen(rec->image_id) != n - 12 ||
            strncmp(key + 7, rec->image_id, n - 12) != 0)
                return log_error_errno(-EBADMSG, "'%s' in the store holds the record of %s: refusing a misplaced copy",
                                       key, rec->image_id);
        *ret = TAKE_PTR(rec);
        return 0;
}

int catalog_record_load(struct store *s, const char *id, struct catalog_record **ret)
{
        _cleanup_free_ char *key = NULL;

        if (asprintf(&key, "images/%s.json", id) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        return record_read(s, key, ret);
}

int catalog_record_save(struct store *s, const struct catalog_record *r)
{
        _cleanup_free_ char *key = NULL;
        json_t *j;
        int k;

        if (asprintf(&key, "images/%s.json", r->image_id) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        j = catalog_record_to_json(r);
        k = catalog_put_json(s, key, j);
        json_decref(j);
        return k;
}

static int channel_get(struct store *s, const char *key, json_t **ret);

/* The image id a names/ or channels/ pointer holds. */
static int pointer_id(struct store *s, const char *key, const char *ref, char **ret)
{
        json_t *j = NULL;
        const char *id;
        int r;

        r = channel_get(s, key, &j);
        if (r == -ENOENT)
                return log_error_errno(r, "no image '%s' in the store '%s'", ref, s->url);
        if (r < 0)
                return r;
        id = json_string_value(json_object_get(j, "image_id"));
        if (!catalog_id_is_valid(id)) {
                json_decref(j);
                return log_error_errno(-EBADMSG, "'%s' in the store holds no valid \"image_id\"", key);
        }
        *ret = strdup(id);
        json_decref(j);
        return *ret ? 0 : log_error_errno(-ENOMEM, "out of memory");
}

int catalog_resolve(struct store *s, const char *ref, struct catalog_record **ret)
{
        _cleanup_(catalog_ref_done) struct catalog_ref p = {};
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_free_ char *key = NULL, *id = NULL;
        int r;

        r = catalog_ref_parse(ref, &p);
        if (r == -EINVAL)
                return log_error_errno(r, "'%s' is not an image reference (ami-<17 hex>, NAME@VERSION or NAME:CHANNEL)",
                                       ref);
        if (r < 0)
                return log_error_errno(r, "out of memory");
        switch (p.kind) {
        case CATALOG_REF_ID:
                id = TAKE_PTR(p.id);
                break;
        case CATALOG_REF_VERSION:
        case CATALOG_REF_CHANNEL:
                if (asprintf(&key, "%s/%s/%s.json", p.kind == CATALOG_REF_VERSION ? "names" : "channels", p.name,
                             p.kind == CATALOG_REF_VERSION ? p.version : p.channel) < 0)
                        return log_error_errno(-ENOMEM, "out of memory");
                r = pointer_id(s, key, ref, &id);
                if (r < 0)
                        return r;
                break;
        }
        r = catalog_record_load(s, id, &rec);
        if (r >= 0 && p.kind != CATALOG_REF_ID &&
            (!streq(rec->name, p.name) || (p.kind == CATALOG_REF_VERSION && !streq(rec->version, p.version))))
                return log_error_errno(-EBADMSG, "'%s' in the store points at %s, which is %s@%s: refusing it", key, id,
                                       rec->name, rec->version);
        if (r >= 0) {
                *ret = TAKE_PTR(rec);
                return 0;
        }
        if (r == -ENOENT) {
                if (p.kind == CATALOG_REF_ID)
                        return log_error_errno(r, "no image '%s' in the store '%s'", id, s->url);
                return log_error_errno(r,
                                       "'%s' names %s, which has no record in the store '%s' (an interrupted "
                                       "push?)",
                                       ref, id, s->url);
        }
        return r;
}

/* A channel object, read while a concurrent promoter may be replacing it.
 * S3 replaces objects whole, but stores that write in place (s3rver) can
 * show a half-written object for a moment: that is retried, briefly,
 * before it counts as damage. */
static int channel_get_etag(struct store *s, const char *key, json_t **ret, char **ret_etag)
{
        for (unsigned attempt = 0;; attempt++) {
                _cleanup_free_ char *data = NULL, *etag = NULL;
                size_t size;
                json_t *j;
                int r;

                r = store_get_full(s, key, CATALOG_POINTER_MAX, &data, &size, ret_etag ? &etag : NULL);
                if (r < 0)
                        return r;
                j = json_loadb(data, size, 0, NULL);
                if (j && json_is_object(j)) {
                        *ret = j;
                        if (ret_etag)
                                *ret_etag = TAKE_PTR(etag);
                        return 0;
                }
                json_decref(j);
                if (attempt >= 20)
                        return log_error_errno(-EBADMSG, "'%s' in the store is not a JSON object", key);
                usleep(50 * 1000);
        }
}

static int channel_get(struct store *s, const char *key, json_t **ret)
{
        return channel_get_etag(s, key, ret, NULL);
}

/* Reads back a conditional write whose condition failed: when the object
 * holds exactly what we wrote, our write did happen (its answer was lost
 * and the retry found it done). */
static bool holds_exactly(struct store *s, const char *key, const char *text)
{
        _cleanup_free_ char *data = NULL;
        size_t size;

        return store_get_full(s, key, CATALOG_POINTER_MAX, &data, &size, NULL) >= 0 && size == strlen(text) &&
               memcmp(data, text, size) == 0;
}

int catalog_promote(struct store *s, const struct catalog_record *r, const char *channel, char **ret_winner,
                    uint64_t *ret_generation)
{
        _cleanup_free_ char *key = NULL, *etag = NULL, *text = NULL;
        json_t *old = NULL, *j, *now_j = NULL;
        uint64_t generation = 1;
        char when[40];
        const char *id;
        int k;

        if (!catalog_word_is_valid(channel))
                return log_error_errno(-EINVAL, "'%s' is not a channel name ([A-Za-z0-9._-])", channel);
        if (asprintf(&key, "channels/%s/%s.json", r->name, channel) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        k = channel_get_etag(s, key, &old, &etag);
        if (k < 0 && k != -ENOENT)
                return k;
        if (k >= 0) {
                json_t *g = json_object_get(old, "generation");
                if (json_is_integer(g) && json_integer_value(g) >= 0)
                        generation = (uint64_t)json_integer_value(g) + 1;
                json_decref(old);
        }
        test_point("promote-read");
        j = json_pack("{s:s, s:s, s:s, s:o}", "image_id", r->image_id, "version", r->version, "updated",
                      catalog_format_time(catalog_now_ms(), when, sizeof(when)), "generation", json_u64(generation));
        text = j ? catalog_json_format(j) : NULL;
        json_decref(j);
        if (!text)
                return log_error_errno(-ENOMEM, "out of memory");

        /* compare-and-swap on the generation we read: of two promotes
         * that read the same one, exactly one writes; the other is told
         * which image won and changes nothing */
        k = store_put_cond(s, key, text, strlen(text), etag);
        if (k == -EEXIST || k == -ESTALE) {
                if (holds_exactly(s, key, text))
                        k = 0;
                else {
                        k = channel_get(s, key, &now_j);
                        if (k == -ENOENT)
                                return log_error_errno(-ESTALE, "%s:%s was removed while it was being promoted",
                                                       r->name, channel);
                        if (k < 0)
                                return k;
                        id = json_string_value(json_object_get(now_j, "image_id"));
                        if (!catalog_id_is_valid(id)) {
                                json_decref(now_j);
                                return log_error_errno(-EBADMSG, "'%s' in the store holds no valid \"image_id\"",
                                                       key);
                        }
                        *ret_winner = strdup(id);
                        if (ret_generation) {
                                json_t *g = json_object_get(now_j, "generation");
                                *ret_generation = json_is_integer(g) ? (uint64_t)json_integer_value(g) : 0;
                        }
                        json_decref(now_j);
                        return *ret_winner ? -ESTALE : log_error_errno(-ENOMEM, "out of memory");
                }
        }
        if (k < 0)
                return k;
        *ret_winner = strdup(r->image_id);
        if (ret_generation)
                *ret_generation = generation;
        return *ret_winner ? 0 : log_error_errno(-ENOMEM, "out of memory");
}

int catalog_channel_drop(struct store *s, const char *name, const char *channel, const char *id)
{
        _cleanup_free_ char *key = NULL, *etag = NULL;
        json_t *j = NULL;
        bool ours;
        int r;

        if (asprintf(&key, "channels/%s/%s.json", name, channel) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = channel_get_etag(s, key, &j, &etag);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        ours = streq_ptr(json_string_value(json_object_get(j, "image_id")), id);
        json_decref(j);
        if (!ours)
                return 0;
        r = store_remove_cond(s, key, etag);
        if (r == -ESTALE)
                return 0; /* promoted elsewhere meanwhile: that promote stands */
        return r < 0 ? r : 1;
}

int catalog_channels_of(struct store *s, const char *name, const char *id, char ***ret)
{
        _cleanup_strv_free_ char **keys = NULL, **found = NULL;
        _cleanup_free_ char *prefix = NULL;
        int r;

        if (asprintf(&prefix, "channels/%s/", name) < 0)
                return -ENOMEM;
        r = store_list(s, prefix, &keys, NULL);
        if (r < 0)
                return r;
        STRV_FOREACH (k, keys) {
                json_t *j = NULL;
                size_t n = strlen(*k);

                if (n < 5 || !streq(*k + n - 5, ".json"))
                        continue;
                r = catalog_get_json(s, *k, &j);
                if (r == -ENOENT)
                        continue; /* removed since the listing */
                if (r < 0)
                        return r;
                if (streq_ptr(json_string_value(json_object_get(j, "image_id")), id)) {
                        const char *c = *k + strlen(prefix);
                        r = strv_consume(&found, strndup(c, strlen(c) - 5));
                }
                json_decref(j);
                if (r < 0)
                        return log_error_errno(r, "out of memory");
        }
        *ret = TAKE_PTR(found);
        return 0;
}

int catalog_blocklist_load(struct store *s, const struct catalog_record *rec, struct catalog_blocklist **ret,
                           char **ret_reason)
{
        _cleanup_free_ char *data = NULL, *error = NULL;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
        uint8_t h[32];
        char hex[65];
        size_t size;
        int r;

        r = store_get_full(s, rec->block_list, CATALOG_OBJECT_MAX, &data, &size, NULL);
        if (r == -ENOENT)
                return bad(ret_reason, "its block list '%s' is missing from the store", rec->block_list), -ENOENT;
        if (r == -EFBIG)
                return bad(ret_reason, "its block list '%s' is oversized", rec->block_list), -EFBIG;
        if (r < 0)
                return r;
        sha256_buffer(data, size, h);
        if (!streq(hex_encode(h, 32, hex), rec->block_list_sha256))
                return bad(ret_reason, "its block list '%s' is corrupt in the store", rec->block_list);
        r = catalog_blocklist_from_json(data, size, &b, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return bad(ret_reason, "'%s' is not a valid block list: %s", rec->block_list, strna(error));
        if (b->size != rec->size)
                return bad(ret_reason, "the block list is for %llu bytes, the record says %llu",
                           (unsigned long long)b->size, (unsigned long long)rec->size);
        *ret = TAKE_PTR(b);
        return 0;
}

/* ---- gc ---- */

int catalog_gc_select(char *const *keys, const int64_t *mtimes, char *const *live, int64_t now, uint64_t grace,
                      char ***ret)
{
        _cleanup_strv_free_ char **del = NULL;
        size_t n_live = strv_length(live);

        for (size_t i = 0; keys && keys[i]; i++) {
                const char *k = keys[i];

                if (strncmp(k, "blocks/", 7) != 0 && strncmp(k, "blocklists/", 11) != 0)
                        continue;
                if (strv_sorted_contains(live, n_live, k))
                        continue;
                if (mtimes && now - mtimes[i] < (int64_t)grace)
                        continue;
                if (strv_extend(&del, k) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(del);
        return 0;
}

void catalog_gc_plan_done(struct catalog_gc_plan *p)
{
        if (p)
                p->delete = strv_free(p->delete);
}

/* A block's size as some block list says; 0 when none does. */
struct block_size_entry {
        char *key;
        uint64_t size;
};

static int cmp_bse(const void *a, const void *b)
{
        return strcmp(((const struct block_size_entry *)a)->key, ((const struct block_size_entry *)b)->key);
}

int catalog_gc_plan(struct store *s, int64_t now, uint64_t grace, struct catalog_gc_plan *ret)
{
        _cleanup_strv_free_ char **records = NULL, **live = NULL, **keys = NULL, **lists = NULL, **del = NULL;
        _cleanup_free_ int64_t *mtimes = NULL, *list_mtimes = NULL;
        struct block_size_entry *sizes = NULL;
        size_t n_sizes = 0, cap = 0;
        struct catalog_gc_plan p = {};
        int r;

        r = store_list(s, "images/", &records, NULL);
        if (r < 0)
                return r;

        STRV_FOREACH (k, records) {
                _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
                _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
                _cleanup_free_ char *error = NULL;
                bool is_live;

                if (strlen(*k) < 7 + 5 || !streq(*k + strlen(*k) - 5, ".json"))
                        continue;
                r = record_read(s, *k, &rec);
                if (r == -ENOENT)
                        continue;
                if (r == -EBADMSG) {
                        /* what it needs is unknown: deleting anything could break it */
                        r = log_error_errno(r, "'%s' is not a valid image record: refusing to collect anything", *k);
                        goto fail;
                }
                if (r < 0)
                        goto fail;
                is_live = rec->state != CATALOG_STATE_DEREGISTERED;
                if (is_live) {
                        p.n_live_records++;
                        if (strv_extend(&live, rec->block_list) < 0)
                                goto oom;
                } else
                        p.n_dead_records++;

                r = catalog_blocklist_load(s, rec, &b, &error);
                if (r == -ENOENT || r == -EFBIG || r == -EBADMSG) {
                        if (!is_live)
                                continue; /* its blocks are unknown; orphan sizes are estimated */
                        /* which blocks it needs is unknown: any could be them */
                        if (r == -ENOENT)
                                r = log_error_errno(-EBADMSG,
                                                    "image %s (%s) has no block list '%s' in the store: refusing to "
                                                    "collect anything (push it again to restore it, or deregister it)",
                                                    rec->image_id, catalog_state_to_string(rec->state),
                                                    rec->block_list);
                        else
                                r = log_error_errno(-EBADMSG,
                                                    "image %s (%s): %s: refusing to collect anything (push it again "
                                                    "to restore it, or deregister it)",
                                                    rec->image_id, catalog_state_to_string(rec->state), strna(error));
                        goto fail;
                }
                if (r < 0)
                        goto fail;
                for (size_t i = 0; i < b->n_blocks; i++) {
                        char key[CATALOG_BLOCK_KEY_MAX];

                        if (b->zero[i])
                                continue;
                        catalog_block_key(b->hashes[i], key);
                        if (is_live && strv_extend(&live, key) < 0)
                                goto oom;
                        if (n_sizes == cap) {
                                struct block_size_entry *t;
                                cap = cap ? cap * 2 : 256;
                                t = realloc(sizes, cap * sizeof(*sizes));
                                if (!t)
                                        goto oom;
                                sizes = t;
                        }
                        sizes[n_sizes].key = strdup(key);
                        if (!sizes[n_sizes].key)
                                goto oom;
                        sizes[n_sizes++].size = catalog_blocklist_block_bytes(b, i);
                }
        }
        strv_sort_uniq(live);
        if (n_sizes)
                qsort(sizes, n_sizes, sizeof(*sizes), cmp_bse);

        r = store_list(s, "blocks/", &keys, &mtimes);
        if (r >= 0)
                r = store_list(s, "blocklists/", &lists, &list_mtimes);
        if (r < 0)
                goto fail;
        r = catalog_gc_select(keys, mtimes, live, now, grace, &del);
        if (r >= 0) {
                _cleanup_strv_free_ char **del2 = NULL;
                r = catalog_gc_select(lists, list_mtimes, live, now, grace, &del2);
                if (r >= 0)
                        r = strv_extend_strv(&del, del2);
        }
        if (r < 0)
                goto oom;
        strv_sort_uniq(del);

        /* what is unreferenced but young, for the report */
        {
                _cleanup_strv_free_ char **all = NULL;
                r = catalog_gc_select(keys, NULL, live, now, 0, &all);
                if (r < 0)
                        goto oom;
                size_t n_unref = strv_length(all);
                STRV_FOREACH (k, del)
                        if (strncmp(*k, "blocks/", 7) == 0)
                                p.n_blocks++;
                        else
                                p.n_blocklists++;
                p.n_kept_young = n_unref - p.n_blocks;
        }
        STRV_FOREACH (k, del) {
                struct block_size_entry want = { .key = *k }, *f;

                if (strncmp(*k, "blocks/", 7) != 0)
                        continue;
                f = n_sizes ? bsearch(&want, sizes, n_sizes, sizeof(*sizes), cmp_bse) : NULL;
                p.bytes += f ? f->size : STORE_BLOCK_SIZE;
        }
        p.delete = TAKE_PTR(del);
        *ret = p;
        r = 0;
        goto done;
oom:
        r = log_error_errno(-ENOMEM, "out of memory");
fail:
done:
        for (size_t i = 0; i < n_sizes; i++)
                free(sizes[i].key);
        free(sizes);
        return r;
}

int catalog_gc(struct store *s, uint64_t grace, bool dry_run, struct catalog_gc_plan *ret_plan,
               struct catalog_gc_result *ret)
{
        _cleanup_(store_lock_releasep) struct store_lock *lock = NULL;
        _cleanup_(catalog_gc_plan_done) struct catalog_gc_plan p = {};
        struct catalog_gc_result res = {};
        int64_t now;
        size_t i = 0;
        int r;

        /* no push runs while gc plans and deletes: every push checks what
         * the store holds, and turns its record available, under a shared
         * lock (lock.h); a dry run deletes nothing and takes none */
        if (!dry_run) {
                r = store_lock_take(s, STORE_LOCK_EXCLUSIVE, "gc", &lock);
                if (r < 0)
                        return r;
        }
        now = catalog_now_ms() / 1000;
        r = catalog_gc_plan(s, now, grace, &p);
        if (r < 0)
                return r;
        if (!dry_run) {
                test_point("gc-planned");
                STRV_FOREACH (k, p.delete) {
                        if (i++ % 64 == 0) {
                                r = store_lock_refresh(lock);
                                if (r < 0)
                                        return r;
                        }
                        r = store_remove(s, *k);
                        if (r < 0)
                                return r;
                        if (strncmp(*k, "blocks/", 7) == 0)
                                res.n_blocks++;
                        else
                                res.n_blocklists++;
                }
                res.bytes = p.bytes;
                /* what killed writers left: theirs at once when they ran
                 * here, anyone else's once older than the grace period
                 * (an hour at least: a slow writer may still be at it) */
                r = store_sweep(s, now - (int64_t)(grace > 3600 ? grace : 3600), &res.n_temporaries);
                if (r < 0)
                        return r;
        } else {
                res.n_blocks = p.n_blocks;
                res.n_blocklists = p.n_blocklists;
                res.bytes = p.bytes;
        }
        *ret_plan = p;
        p = (struct catalog_gc_plan){};
        *ret = res;
        return 0;
}

int catalog_claim_name(struct store *s, const struct catalog_record *rec)
{
        _cleanup_free_ char *key = NULL, *text = NULL;
        json_t *j;
        int r;

        if (asprintf(&key, "names/%s/%s.json", rec->name, rec->version) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        j = json_pack("{s:s, s:s}", "image_id", rec->image_id, "image_digest", rec->digest);
        text = j ? catalog_json_format(j) : NULL;
        json_decref(j);
        if (!text)
                return log_error_errno(-ENOMEM, "out of memory");

        /* create-exclusive: of two pushes of one version, one creates it */
        r = store_put_cond(s, key, text, strlen(text), NULL);
        if (r == 0) {
                /* a server that ignores If-None-Match would let the other
                 * push "create" it too: ask again, which must fail */
                r = store_put_cond(s, key, text, strlen(text), NULL);
                if (r == 0)
                        log_warning("the store '%s' does not honour conditional writes (If-None-Match): two pushes of "
                                    "one version at the same time cannot be told apart when they happen; the push "
                                    "checks the name again before its record turns available",
                                    s->url);
                else if (r != -EEXIST)
                        return r;
                return 0;
        }
        if (r != -EEXIST)
                return r;
        return catalog_name_check(s, rec) < 0 ? -EEXIST : 1;
}

int catalog_name_check(struct store *s, const struct catalog_record *rec)
{
        _cleanup_free_ char *key = NULL;
        json_t *j = NULL;
        const char *id, *digest;
        int r;

        if (asprintf(&key, "names/%s/%s.json", rec->name, rec->version) < 0)
                return log_error_errno(-ENOMEM, "out of memory");
        r = catalog_get_json(s, key, &j);
        if (r == -ENOENT)
                return log_error_errno(-EIO, "'%s' vanished from the store", key);
        if (r < 0)
                return r;
        id = json_string_value(json_object_get(j, "image_id"));
        digest = json_string_value(json_object_get(j, "image_digest"));
        if (!streq_ptr(digest, rec->digest) || !streq_ptr(id, rec->image_id)) {
                log_error("%s@%s already exists as %s with other bytes: versions are immutable", rec->name,
                          rec->version, strna(id));
                json_decref(j);
                return -EEXIST;
        }
        json_decref(j);
        return 0;
}
