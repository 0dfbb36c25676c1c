/* Unit tests for the catalog: derived ids (pinned), references, tags,
 * times, records and block lists to JSON and back, block cutting on
 * synthetic sparse files (holes, written zeros, a short last block), and
 * gc liveness against a file:// store in a temporary directory. */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog.h"
#include "lock.h"
#include "shared/proc-util.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/log.h"
#include "shared/strv.h"
#include "store.h"

#define BS STORE_BLOCK_SIZE
#define DIGEST2 "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
#define DIGEST "abababababababababababababababababababababababababababababababab"

struct fixture {
        char dir[64];
        FILE *log;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        strcpy(f->dir, "/tmp/ingot-catalog-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->log = tmpfile();
        assert_non_null(f->log);
        log_set_stream(f->log);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        rm_rf(f->dir);
        log_set_stream(stderr);
        fclose(f->log);
        free(f);
        return 0;
}

static void test_ids(void **state _unused_)
{
        char id[CATALOG_ID_MAX], id2[CATALOG_ID_MAX], snap[CATALOG_ID_MAX];

        /* pinned: SHA-256("ingot-ami-v1\nbusybox\n1.0.0\n" DIGEST), first
         * 17 hex digits; changing the derivation changes every id */
        catalog_image_id("busybox", "1.0.0", DIGEST, id);
        assert_string_equal(id, "ami-14683f78d9c8446ba");
        catalog_image_id("busybox", "1.0.0", DIGEST, id2);
        assert_string_equal(id, id2);
        catalog_snapshot_id("busybox", "1.0.0", DIGEST, snap);
        assert_string_equal(snap, "snap-0ec1c8bf99da0924c");
        assert_true(catalog_id_is_valid(id));

        /* every input counts */
        catalog_image_id("busybox", "1.0.1", DIGEST, id2);
        assert_string_not_equal(id, id2);
        catalog_image_id("busybox2", "1.0.0", DIGEST, id2);
        assert_string_not_equal(id, id2);
        catalog_image_id("busybox", "1.0.0", DIGEST2, id2);
        assert_string_not_equal(id, id2);
        /* the separator keeps name and version apart */
        catalog_image_id("busybox1", ".0.0", DIGEST, id2);
        assert_string_not_equal(id, id2);

        assert_false(catalog_id_is_valid("ami-14683f78d9c8446b"));
        assert_false(catalog_id_is_valid("ami-14683f78d9c8446bA"));
        assert_false(catalog_id_is_valid("ami-14683f78d9c8446ba0"));
        assert_false(catalog_id_is_valid("snap-14683f78d9c8446ba"));
        assert_false(catalog_id_is_valid(NULL));
}

static void test_refs(void **state _unused_)
{
        struct catalog_ref r;
        static const char *const bad[] = {
                "",         "busybox", "ami-123",   "ami-14683f78d9c8446bz", "@1.0",
                "busybox@", ":stable", "busybox:",  "busybox@1@2",           "busybox:a:b",
                "bu sy@1",  "../x@1",  "busybox@.", "busybox@1/2",           "busybox@-rc",
        };

        assert_int_equal(catalog_ref_parse("ami-14683f78d9c8446ba", &r), 0);
        assert_int_equal(r.kind, CATALOG_REF_ID);
        assert_string_equal(r.id, "ami-14683f78d9c8446ba");
        catalog_ref_done(&r);

        assert_int_equal(catalog_ref_parse("busybox@1.0.0", &r), 0);
        assert_int_equal(r.kind, CATALOG_REF_VERSION);
        assert_string_equal(r.name, "busybox");
        assert_string_equal(r.version, "1.0.0");
        assert_null(r.channel);
        catalog_ref_done(&r);

        assert_int_equal(catalog_ref_parse("web_server:stable", &r), 0);
        assert_int_equal(r.kind, CATALOG_REF_CHANNEL);
        assert_string_equal(r.name, "web_server");
        assert_string_equal(r.channel, "stable");
        assert_null(r.version);
        catalog_ref_done(&r);

        /* a name may start with "ami" as long as it is not an id */
        assert_int_equal(catalog_ref_parse("ami-linux@2", &r), 0);
        assert_int_equal(r.kind, CATALOG_REF_VERSION);
        catalog_ref_done(&r);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(catalog_ref_parse(bad[i], &r), -EINVAL);
}

static void test_tags(void **state _unused_)
{
        _cleanup_strv_free_ char **tags = NULL;
        const char *why = NULL;
        char key[200], value[300], kv[600];

        assert_int_equal(catalog_tag_add(&tags, "team=web", &why), 0);
        assert_int_equal(catalog_tag_add(&tags, "empty=", &why), 0);
        assert_int_equal(catalog_tag_add(&tags, "a=b=c", &why), 0);
        assert_int_equal(catalog_tag_add(&tags, "team=db", &why), 0); /* replaces */
        assert_int_equal(strv_length(tags), 6);
        assert_string_equal(tags[0], "team");
        assert_string_equal(tags[1], "db");
        assert_string_equal(tags[3], "");
        assert_string_equal(tags[4], "a");
        assert_string_equal(tags[5], "b=c");

        assert_int_equal(catalog_tag_add(&tags, "aws:x=1", &why), -EINVAL);
        assert_non_null(strstr(why, "aws:"));
        assert_int_equal(catalog_tag_add(&tags, "AWS:x=1", &why), -EINVAL);
        assert_int_equal(catalog_tag_add(&tags, "=v", &why), -EINVAL);
        assert_int_equal(catalog_tag_add(&tags, "novalue", &why), -EINVAL);
        assert_int_equal(catalog_tag_add(&tags, "k=a\nb", &why), -EINVAL);

        memset(key, 'k', 128);
        key[128] = '\0';
        snprintf(kv, sizeof(kv), "%s=v", key);
        assert_int_equal(catalog_tag_add(&tags, kv, &why), 0);
        memset(key, 'k', 129);
        key[129] = '\0';
        snprintf(kv, sizeof(kv), "%s=v", key);
        assert_int_equal(catalog_tag_add(&tags, kv, &why), -EINVAL);
        memset(value, 'v', 256);
        value[256] = '\0';
        snprintf(kv, sizeof(kv), "long=%s", value);
        assert_int_equal(catalog_tag_add(&tags, kv, &why), 0);
        memset(value, 'v', 257);
        value[257] = '\0';
        snprintf(kv, sizeof(kv), "long=%s", value);
        assert_int_equal(catalog_tag_add(&tags, kv, &why), -EINVAL);

        /* 50 at most; replacing one is still fine at 50 */
        tags = strv_free(tags);
        for (int i = 0; i < CATALOG_TAGS_MAX; i++) {
                snprintf(kv, sizeof(kv), "k%d=v", i);
                assert_int_equal(catalog_tag_add(&tags, kv, &why), 0);
        }
        assert_int_equal(catalog_tag_add(&tags, "k7=new", &why), 0);
        assert_int_equal(catalog_tag_add(&tags, "one-more=v", &why), -EINVAL);
        assert_non_null(strstr(why, "50"));
}

static void test_time(void **state _unused_)
{
        int64_t t;
        char buf[40];

        assert_int_equal(catalog_parse_time("2024-05-01T12:34:56.789Z", 0, &t), 0);
        assert_int_equal(t, INT64_C(1714566896789));
        assert_string_equal(catalog_format_time(t, buf, sizeof(buf)), "2024-05-01T12:34:56.789Z");
        assert_int_equal(catalog_parse_time("2024-05-01", 0, &t), 0);
        assert_int_equal(t, INT64_C(1714521600000));
        assert_int_equal(catalog_parse_time("2024-05-01T12:34", 0, &t), 0);
        assert_int_equal(t, INT64_C(1714566840000));
        assert_int_equal(catalog_parse_time("2024-05-01T12:34:56.7Z", 0, &t), 0);
        assert_int_equal(t, INT64_C(1714566896700));
        assert_int_equal(catalog_parse_time("now", 42, &t), 0);
        assert_int_equal(t, 42);
        assert_int_equal(catalog_parse_time("tomorrow", 0, &t), -EINVAL);
        assert_int_equal(catalog_parse_time("2024-05-01T", 0, &t), -EINVAL);
        assert_int_equal(catalog_parse_time("2024-05-01T12:34:56+02:00", 0, &t), -EINVAL);
}

static struct catalog_record *sample_record(void)
{
        struct catalog_record *r = calloc(1, sizeof(*r));
        char id[CATALOG_ID_MAX], snap[CATALOG_ID_MAX];

        catalog_image_id("busybox", "1.0.0", DIGEST, id);
        catalog_snapshot_id("busybox", "1.0.0", DIGEST, snap);
        r->image_id = strdup(id);
        r->snapshot_id = strdup(snap);
        r->name = strdup("busybox");
        r->version = strdup("1.0.0");
        r->description = strdup("BusyBox \"quoted\" ünïcode");
        r->architecture = strdup("x86_64");
        r->boot_mode = strdup("uefi-preferred");
        r->state = CATALOG_STATE_AVAILABLE;
        r->creation_ms = INT64_C(1714566896789);
        r->deprecation_ms = -1;
        strv_extend(&r->tags, "team");
        strv_extend(&r->tags, "web");
        strv_extend(&r->tags, "empty");
        strv_extend(&r->tags, "");
        strv_extend(&r->channels, "stable");
        r->volume_size_gib = 1;
        r->size = 256 << 20;
        r->digest = strdup(DIGEST);
        r->block_size = BS;
        assert_true(asprintf(&r->block_list, "blocklists/%s.json", id) > 0);
        r->block_list_sha256 = strdup(DIGEST);
        r->blocks_stored = 13;
        r->manifest = json_pack("{s:s, s:s, s:[s, s], s:{s:s}}", "name", "busybox", "version", "1.0.0", "boot_modes",
                                "bios", "uefi", "image", "digest", DIGEST);
        r->manifest_sha256 = strdup(DIGEST);
        r->signature = strdup("c2lnbmF0dXJl\n");
        r->os_image_id = strdup("busybox");
        r->os_image_version = strdup("1.0.0");
        return r;
}

static void test_record_round_trip(void **state _unused_)
{
        _cleanup_(catalog_record_freep) struct catalog_record *r = sample_record(), *back = NULL, *again = NULL;
        _cleanup_free_ char *t1 = NULL, *t2 = NULL, *error = NULL;
        json_t *j;

        j = catalog_record_to_json(r);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "virtualization_type")), "hvm");
        assert_string_equal(json_string_value(json_object_get(j, "root_device_name")), "/dev/xvda");
        assert_string_equal(
                json_string_value(json_object_get(
                        json_object_get(json_array_get(json_object_get(j, "block_device_mappings"), 0), "ebs"),
                        "volume_type")),
                "gp3");
        assert_true(json_is_null(json_object_get(j, "deprecation_time")));
        t1 = catalog_json_format(j);
        json_decref(j);
        assert_non_null(t1);

        assert_int_equal(catalog_record_from_json(t1, strlen(t1), &back, &error), 0);
        assert_string_equal(back->image_id, r->image_id);
        assert_string_equal(back->description, r->description);
        assert_int_equal(back->creation_ms, r->creation_ms);
        assert_int_equal(back->deprecation_ms, -1);
        assert_int_equal(back->state, CATALOG_STATE_AVAILABLE);
        assert_int_equal(strv_length(back->tags), 4);
        assert_string_equal(back->tags[3], "");
        assert_string_equal(back->signature, r->signature);
        assert_null(back->verity_root_hash);
        assert_true(json_equal(back->manifest, r->manifest));

        /* byte for byte the same when written again */
        j = catalog_record_to_json(back);
        t2 = catalog_json_format(j);
        json_decref(j);
        assert_string_equal(t1, t2);

        /* states as shown */
        assert_string_equal(catalog_record_state_string(back, 0), "available");
        back->deprecation_ms = 1000;
        assert_string_equal(catalog_record_state_string(back, 999), "available");
        assert_string_equal(catalog_record_state_string(back, 1000), "deprecated");
        back->state = CATALOG_STATE_DEREGISTERED;
        back->state_reason = strdup("gone");
        assert_string_equal(catalog_record_state_string(back, 1000), "deregistered");
        j = catalog_record_to_json(back);
        t2 = x_free(t2);
        t2 = catalog_json_format(j);
        json_decref(j);
        assert_int_equal(catalog_record_from_json(t2, strlen(t2), &again, &error), 0);
        assert_int_equal(again->state, CATALOG_STATE_DEREGISTERED);
        assert_string_equal(again->state_reason, "gone");
        assert_int_equal(again->deprecation_ms, 1000);
}

static void test_record_malformed(void **state _unused_)
{
        static const char *const bad[] = {
                "",
                "[]",
                "{}",
                "{\"format\": \"ingot-image-record-1\"}",
                "{\"format\": \"other\", \"image_id\": \"ami-14683f78d9c8446ba\"}",
        };
        _cleanup_(catalog_record_freep) struct catalog_record *r = sample_record();
        struct catalog_record *back = NULL;
        json_t *j;
        char *t, *error = NULL;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                assert_int_equal(catalog_record_from_json(bad[i], strlen(bad[i]), &back, &error), -EBADMSG);
                assert_non_null(error);
                error = x_free(error);
        }
        /* one field at a time */
        static const char *const fields[] = { "image_id", "state", "image", "block_device_mappings", "name" };
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                j = catalog_record_to_json(r);
                json_object_set_new(j, fields[i], json_integer(7));
                t = catalog_json_format(j);
                json_decref(j);
                assert_int_equal(catalog_record_from_json(t, strlen(t), &back, &error), -EBADMSG);
                free(t);
                error = x_free(error);
        }
        j = catalog_record_to_json(r);
        json_object_set_new(j, "state", json_string("exploded"));
        t = catalog_json_format(j);
        json_decref(j);
        assert_int_equal(catalog_record_from_json(t, strlen(t), &back, &error), -EBADMSG);
        assert_non_null(strstr(error, "exploded"));
        free(t);
        free(error);
}

static void test_manifest_mapping(void **state _unused_)
{
        json_t *both = json_pack("[s, s]", "bios", "uefi"), *uefi = json_pack("[s]", "uefi"),
               *bios = json_pack("[s]", "bios"), *none = json_array();

        assert_string_equal(catalog_boot_mode_from_manifest(both), "uefi-preferred");
        assert_string_equal(catalog_boot_mode_from_manifest(uefi), "uefi");
        assert_string_equal(catalog_boot_mode_from_manifest(bios), "legacy-bios");
        assert_null(catalog_boot_mode_from_manifest(none));
        assert_string_equal(catalog_architecture_from_manifest("x86-64"), "x86_64");
        assert_string_equal(catalog_architecture_from_manifest("arm64"), "arm64");
        assert_string_equal(catalog_architecture_from_manifest("aarch64"), "arm64");
        assert_null(catalog_architecture_from_manifest("riscv64"));
        json_decref(both);
        json_decref(uefi);
        json_decref(bios);
        json_decref(none);
}

static void pwrite_byte_run(int fd, uint64_t off, uint64_t n, uint8_t byte)
{
        uint8_t *buf = malloc(n);

        memset(buf, byte, n);
        assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
        free(buf);
}

static void test_blocks(void **state)
{
        struct fixture *f = *state;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL, *back = NULL;
        _cleanup_strv_free_ char **keys = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL, *error = NULL;
        /* 5 full blocks and a short one: hole, data, written zeros, data
         * (same bytes as block 1), one byte at the end, short tail */
        const uint64_t size = 5 * BS + 12345;
        uint8_t *ones = malloc(BS), h[32];
        char key[CATALOG_BLOCK_KEY_MAX];
        json_t *j;
        int fd;

        assert_true(asprintf(&path, "%s/sparse.raw", f->dir) > 0);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)size), 0);
        pwrite_byte_run(fd, 1 * BS, BS, 0x01);
        pwrite_byte_run(fd, 2 * BS, BS, 0x00);
        pwrite_byte_run(fd, 3 * BS, BS, 0x01);
        pwrite_byte_run(fd, 5 * BS - 1, 1, 0x02);
        pwrite_byte_run(fd, 5 * BS + 100, 10, 0x03);

        assert_int_equal(catalog_blocklist_compute(fd, size, &b), 0);
        close(fd);
        assert_int_equal(b->n_blocks, 6);
        assert_int_equal(b->block_size, BS);
        assert_true(b->zero[0]);
        assert_false(b->zero[1]);
        assert_true(b->zero[2]);
        assert_false(b->zero[3]);
        assert_false(b->zero[4]);
        assert_false(b->zero[5]);
        assert_int_equal(catalog_blocklist_block_bytes(b, 5), 12345);
        assert_int_equal(catalog_blocklist_block_bytes(b, 4), BS);
        memset(ones, 0x01, BS);
        sha256_buffer(ones, BS, h);
        assert_memory_equal(b->hashes[1], h, 32);
        assert_memory_equal(b->hashes[3], h, 32);
        assert_string_equal(catalog_block_key(h, key),
                            "blocks/ee78cd29d3a534713b36e6ff6fa3668c8a8f851a542d5eb2401c25ca4e057d02");
        free(ones);

        /* distinct keys: block 1 and 3 are one object */
        assert_int_equal(catalog_blocklist_keys(b, &keys), 0);
        assert_int_equal(strv_length(keys), 3);

        j = catalog_blocklist_to_json(b);
        assert_true(json_is_null(json_array_get(json_object_get(j, "blocks"), 0)));
        text = catalog_json_format(j);
        json_decref(j);
        assert_int_equal(catalog_blocklist_from_json(text, strlen(text), &back, &error), 0);
        assert_int_equal(back->n_blocks, b->n_blocks);
        assert_int_equal(back->size, size);
        assert_memory_equal(back->zero, b->zero, b->n_blocks);
        assert_memory_equal(back->hashes, b->hashes, 32 * b->n_blocks);

        /* the wrong number of blocks for the size */
        catalog_blocklist_free(TAKE_PTR(back));
        {
                const char *t = "{\"block_size\": 1048576, \"size\": 5, \"blocks\": []}";
                assert_int_equal(catalog_blocklist_from_json(t, strlen(t), &back, &error), -EBADMSG);
        }
        assert_null(back);
}

static void test_empty_image(void **state)
{
        struct fixture *f = *state;
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = NULL;
        _cleanup_free_ char *path = NULL;
        int fd;

        assert_true(asprintf(&path, "%s/hole.raw", f->dir) > 0);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_int_equal(ftruncate(fd, (off_t)(3 * BS)), 0);
        assert_int_equal(catalog_blocklist_compute(fd, 3 * BS, &b), 0);
        close(fd);
        assert_int_equal(b->n_blocks, 3);
        for (size_t i = 0; i < 3; i++)
                assert_true(b->zero[i]);
}

static void test_gc_select(void **state _unused_)
{
        char *keys[] = { (char *)"blocklists/ami-00000000000000001.json",
                         (char *)"blocks/aa",
                         (char *)"blocks/bb",
                         (char *)"blocks/cc",
                         (char *)"images/ami-00000000000000001.json",
                         (char *)"names/x/1.json",
                         NULL };
        int64_t mtimes[] = { 0, 0, 0, 990, 0, 0 };
        char *live[] = { (char *)"blocks/bb", NULL };
        _cleanup_strv_free_ char **del = NULL;

        /* blocks/cc is young, blocks/bb live, records and names never */
        assert_int_equal(catalog_gc_select(keys, mtimes, live, 1000, 100, &del), 0);
        assert_int_equal(strv_length(del), 2);
        assert_string_equal(del[0], "blocklists/ami-00000000000000001.json");
        assert_string_equal(del[1], "blocks/aa");
        del = strv_free(del);
        assert_int_equal(catalog_gc_select(keys, mtimes, live, 1000, 0, &del), 0);
        assert_int_equal(strv_length(del), 3);
}

/* Puts a record for name@version in the given state with the blocks of
 * the given bytes (one block each). */
static void put_image(struct store *s, const char *version, enum catalog_state state, const uint8_t *fills, size_t n,
                      char ret_keys[][CATALOG_BLOCK_KEY_MAX])
{
        _cleanup_(catalog_record_freep) struct catalog_record *r = sample_record();
        _cleanup_(catalog_blocklist_freep) struct catalog_blocklist *b = calloc(1, sizeof(*b));
        _cleanup_free_ char *text = NULL;
        char id[CATALOG_ID_MAX], digest[65];
        uint8_t *buf = malloc(BS), h[32];
        json_t *j;

        sha256_buffer(version, strlen(version), h);
        hex_encode(h, 32, digest);
        catalog_image_id("busybox", version, digest, id);
        free(r->image_id);
        r->image_id = strdup(id);
        free(r->version);
        r->version = strdup(version);
        free(r->block_list);
        assert_true(asprintf(&r->block_list, "blocklists/%s.json", id) > 0);
        free(r->digest);
        r->digest = strdup(digest);
        free(r->snapshot_id);
        r->snapshot_id = malloc(CATALOG_ID_MAX);
        catalog_snapshot_id("busybox", version, digest, r->snapshot_id);
        json_object_set_new(r->manifest, "version", json_string(version));
        json_object_set_new(json_object_get(r->manifest, "image"), "digest", json_string(digest));
        r->state = state;

        b->block_size = BS;
        b->size = n * BS;
        r->size = b->size; /* the record and its block list agree, as push writes them */
        b->n_blocks = n;
        b->hashes = calloc(n, 32);
        b->zero = calloc(n, sizeof(bool));
        for (size_t i = 0; i < n; i++) {
                memset(buf, fills[i], BS);
                sha256_buffer(buf, BS, b->hashes[i]);
                catalog_block_key(b->hashes[i], ret_keys[i]);
                assert_int_equal(store_put(s, ret_keys[i], buf, BS), 0);
        }
        free(buf);
        j = catalog_blocklist_to_json(b);
        assert_int_equal(catalog_put_json(s, r->block_list, j), 0);
        {
                _cleanup_free_ char *lt = catalog_json_format(j);
                uint8_t lh[32];
                char lhex[65];

                sha256_buffer(lt, strlen(lt), lh);
                free(r->block_list_sha256);
                r->block_list_sha256 = strdup(hex_encode(lh, 32, lhex));
        }
        json_decref(j);
        assert_int_equal(catalog_record_save(s, r), 0);
        free(text);
        assert_true(asprintf(&text, "names/busybox/%s.json", version) > 0);
        j = json_pack("{s:s, s:s}", "image_id", id, "image_digest", digest);
        assert_int_equal(catalog_put_json(s, text, j), 0);
        json_decref(j);
}

static void test_gc_plan(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL;
        _cleanup_free_ char *url = NULL;
        struct catalog_gc_plan p = {};
        char live_keys[2][CATALOG_BLOCK_KEY_MAX], pending_keys[1][CATALOG_BLOCK_KEY_MAX],
                dead_keys[2][CATALOG_BLOCK_KEY_MAX], orphan[1][CATALOG_BLOCK_KEY_MAX];
        int64_t now = catalog_now_ms() / 1000;

        assert_true(asprintf(&url, "file://%s/store", f->dir) > 0);
        assert_int_equal(store_open(url, &(struct store_options){}, &s), 0);

        /* available: blocks 1, 2; pending: block 3; deregistered: blocks
         * 2 (shared with the live one) and 4 */
        put_image(s, "1", CATALOG_STATE_AVAILABLE, (const uint8_t[]){ 1, 2 }, 2, live_keys);
        put_image(s, "2", CATALOG_STATE_PENDING, (const uint8_t[]){ 3 }, 1, pending_keys);
        put_image(s, "3", CATALOG_STATE_DEREGISTERED, (const uint8_t[]){ 2, 4 }, 2, dead_keys);
        {
                uint8_t *buf = calloc(1, 100), h[32];
                buf[0] = 5;
                sha256_buffer(buf, 100, h);
                catalog_block_key(h, orphan[0]);
                assert_int_equal(store_put(s, orphan[0], buf, 100), 0);
                free(buf);
        }

        /* everything is young: nothing goes */
        assert_int_equal(catalog_gc_plan(s, now, 3600, &p), 0);
        assert_null(p.delete);
        assert_int_equal(p.n_live_records, 2);
        assert_int_equal(p.n_dead_records, 1);
        assert_int_equal(p.n_kept_young, 2);
        catalog_gc_plan_done(&p);

        /* past the grace period: the dead image's own block and list, and
         * the orphan; never block 2, which the live image shares */
        assert_int_equal(catalog_gc_plan(s, now + 7200, 3600, &p), 0);
        assert_int_equal(strv_length(p.delete), 3);
        assert_int_equal(p.n_blocks, 2);
        assert_int_equal(p.n_blocklists, 1);
        assert_true(strv_contains(p.delete, dead_keys[1]));
        assert_true(strv_contains(p.delete, orphan[0]));
        assert_false(strv_contains(p.delete, dead_keys[0]));
        assert_false(strv_contains(p.delete, live_keys[0]));
        assert_false(strv_contains(p.delete, pending_keys[0]));
        /* the dead block's size is known from its list; the orphan's is not */
        assert_int_equal(p.bytes, BS + BS);
        catalog_gc_plan_done(&p);

        /* the references resolve */
        assert_int_equal(catalog_resolve(s, "busybox@1", &rec), 0);
        assert_int_equal(rec->state, CATALOG_STATE_AVAILABLE);
        rec = catalog_record_free(rec);
        assert_int_equal(catalog_resolve(s, "busybox@9", &rec), -ENOENT);
        assert_int_equal(catalog_resolve(s, "busybox:stable", &rec), -ENOENT);
        assert_int_equal(catalog_resolve(s, "not a ref", &rec), -EINVAL);

        /* an unreadable record stops gc: what it needs is unknown */
        assert_int_equal(store_put(s, "images/ami-00000000000000000.json", "{", 1), 0);
        assert_int_equal(catalog_gc_plan(s, now + 7200, 3600, &p), -EBADMSG);
}

static void test_promote(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_(catalog_record_freep) struct catalog_record *rec = NULL, *got = NULL;
        _cleanup_free_ char *url = NULL, *winner = NULL;
        _cleanup_strv_free_ char **ch = NULL;
        char keys[1][CATALOG_BLOCK_KEY_MAX];
        uint64_t gen = 0;

        assert_true(asprintf(&url, "file://%s/store", f->dir) > 0);
        assert_int_equal(store_open(url, &(struct store_options){}, &s), 0);
        put_image(s, "1", CATALOG_STATE_AVAILABLE, (const uint8_t[]){ 1 }, 1, keys);
        assert_int_equal(catalog_resolve(s, "busybox@1", &rec), 0);
        assert_int_equal(catalog_promote(s, rec, "stable", &winner, &gen), 0);
        assert_string_equal(winner, rec->image_id);
        assert_int_equal(gen, 1);
        winner = x_free(winner);
        assert_int_equal(catalog_promote(s, rec, "stable", &winner, &gen), 0);
        assert_int_equal(gen, 2);
        assert_int_equal(catalog_resolve(s, "busybox:stable", &got), 0);
        assert_string_equal(got->image_id, rec->image_id);
        assert_int_equal(catalog_channels_of(s, "busybox", rec->image_id, &ch), 0);
        assert_int_equal(strv_length(ch), 1);
        assert_string_equal(ch[0], "stable");
}

/* The store's compare-and-swap on the file backend: create-exclusive,
 * replace and remove only while the etag holds. */
static void test_put_cond(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_free_ char *url = NULL, *data = NULL, *etag = NULL, *etag2 = NULL;
        size_t size;

        assert_true(asprintf(&url, "file://%s/store", f->dir) > 0);
        assert_int_equal(store_open(url, &(struct store_options){}, &s), 0);
        assert_int_equal(store_put_cond(s, "channels/a/b.json", "one", 3, NULL), 0);
        assert_int_equal(store_put_cond(s, "channels/a/b.json", "two", 3, NULL), -EEXIST);
        assert_int_equal(store_get_full(s, "channels/a/b.json", 100, &data, &size, &etag), 0);
        assert_memory_equal(data, "one", 3);
        data = x_free(data);
        assert_int_equal(store_put_cond(s, "channels/a/b.json", "two", 3, etag), 0);
        /* the etag read before is stale now: neither replace nor remove */
        assert_int_equal(store_put_cond(s, "channels/a/b.json", "three", 5, etag), -ESTALE);
        assert_int_equal(store_remove_cond(s, "channels/a/b.json", etag), -ESTALE);
        assert_int_equal(store_get_full(s, "channels/a/b.json", 100, &data, &size, &etag2), 0);
        assert_memory_equal(data, "two", 3);
        data = x_free(data);
        assert_int_equal(store_get_full(s, "channels/a/b.json", 2, &data, &size, NULL), -EFBIG);
        assert_int_equal(store_remove_cond(s, "channels/a/b.json", etag2), 0);
        assert_int_equal(store_exists(s, "channels/a/b.json"), 0);
        assert_int_equal(store_put_cond(s, "channels/a/b.json", "x", 1, etag2), -ESTALE);
}

/* Temporaries of writers that are gone go; a live writer's stay. */
static void test_sweep(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_free_ char *url = NULL, *dead = NULL, *live = NULL, *old = NULL, *lock = NULL;
        char boot[37];
        size_t n = 0;
        pid_t child;

        assert_int_equal(boot_id_get(boot), 0);
        assert_true(asprintf(&url, "file://%s/store", f->dir) > 0);
        assert_int_equal(store_open(url, &(struct store_options){}, &s), 0);
        assert_int_equal(store_put(s, "blocks/aa", "x", 1), 0);
        child = fork();
        if (child == 0)
                _exit(0);
        assert_int_equal(waitpid(child, NULL, 0), child);
        assert_true(asprintf(&dead, "%s/store/blocks/aa~%.8s.%ld.0", f->dir, boot, (long)child) > 0);
        assert_true(asprintf(&live, "%s/store/blocks/aa~%.8s.%ld.0", f->dir, boot, (long)getpid()) > 0);
        assert_true(asprintf(&old, "%s/store/blocks/aa~0000beef.1.0", f->dir) > 0);
        assert_true(asprintf(&lock, "%s/store/blocks/aa~lock", f->dir) > 0);
        assert_int_equal(write_file_atomic(dead, "d", 1, 0644), 0);
        assert_int_equal(write_file_atomic(live, "l", 1, 0644), 0);
        assert_int_equal(write_file_atomic(old, "o", 1, 0644), 0);
        assert_int_equal(write_file_atomic(lock, "", 0, 0644), 0);
        /* another host's, young: kept; ours of a dead pid: removed */
        assert_int_equal(store_sweep(s, 0, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(access(dead, F_OK), -1);
        assert_int_equal(access(live, F_OK), 0);
        assert_int_equal(access(old, F_OK), 0);
        /* older than the limit: another host's goes too, the lock stays */
        assert_int_equal(store_sweep(s, INT64_MAX, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(access(old, F_OK), -1);
        assert_int_equal(access(lock, F_OK), 0);
        assert_int_equal(store_exists(s, "blocks/aa"), 1);
}

/* Locks: shared ones coexist, an exclusive one conflicts, a dead
 * holder's lock is stale and removed. */
static void test_locks(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_free_ char *url = NULL;
        _cleanup_strv_free_ char **keys = NULL;
        struct store_lock *a = NULL, *b = NULL, *x = NULL;
        char boot[37], *text = NULL;
        pid_t child;

        setenv("INGOT_LOCK_WAIT", "0", 1);
        assert_int_equal(boot_id_get(boot), 0);
        assert_true(asprintf(&url, "file://%s/store", f->dir) > 0);
        assert_int_equal(store_open(url, &(struct store_options){}, &s), 0);
        assert_int_equal(store_lock_take(s, STORE_LOCK_SHARED, "push", &a), 0);
        assert_int_equal(store_lock_take(s, STORE_LOCK_SHARED, "push", &b), 0);
        assert_int_equal(store_lock_take(s, STORE_LOCK_EXCLUSIVE, "gc", &x), -EBUSY);
        a = store_lock_release(a);
        assert_int_equal(store_lock_take(s, STORE_LOCK_EXCLUSIVE, "gc", &x), -EBUSY);
        b = store_lock_release(b);
        assert_int_equal(store_lock_take(s, STORE_LOCK_EXCLUSIVE, "gc", &x), 0);
        assert_int_equal(store_lock_take(s, STORE_LOCK_SHARED, "push", &a), -EBUSY);
        assert_int_equal(store_lock_refresh(x), 0);
        x = store_lock_release(x);

        /* a holder that is gone: its lock is removed by the next taker */
        child = fork();
        if (child == 0)
                _exit(0);
        assert_int_equal(waitpid(child, NULL, 0), child);
        assert_true(asprintf(&text,
                             "{\"kind\": \"exclusive\", \"operation\": \"gc\", \"hostname\": \"h\", \"boot_id\": "
                             "\"%s\", \"pid\": %ld, \"start_time\": 1, \"created\": \"2020-01-01T00:00:00.000Z\", "
                             "\"refreshed\": \"2020-01-01T00:00:00.000Z\"}\n",
                             boot, (long)child) > 0);
        assert_int_equal(store_put(s, "locks/exclusive-dead.json", text, strlen(text)), 0);
        free(text);
        /* another host's, refreshed just now: live */
        {
                char now[40];
                catalog_format_time(catalog_now_ms(), now, sizeof(now));
                assert_true(asprintf(&text,
                                     "{\"kind\": \"exclusive\", \"operation\": \"gc\", \"hostname\": \"other\", "
                                     "\"boot_id\": \"00000000-0000-0000-0000-000000000000\", \"pid\": 1, "
                                     "\"refreshed\": \"%s\"}\n",
                                     now) > 0);
        }
        assert_int_equal(store_put(s, "locks/exclusive-other.json", text, strlen(text)), 0);
        free(text);
        assert_int_equal(store_lock_take(s, STORE_LOCK_SHARED, "push", &a), -EBUSY);
        assert_int_equal(store_exists(s, "locks/exclusive-dead.json"), 0);
        assert_int_equal(store_remove(s, "locks/exclusive-other.json"), 0);
        assert_int_equal(store_lock_take(s, STORE_LOCK_SHARED, "push", &a), 0);
        a = store_lock_release(a);
        assert_int_equal(store_list(s, "locks/", &keys, NULL), 0);
        assert_int_equal(strv_length(keys), 0);
        unsetenv("INGOT_LOCK_WAIT");
}

/* A record's identity fields must agree: id, name, version, digest. */
static void test_record_identity(void **state _unused_)
{
        _cleanup_(catalog_record_freep) struct catalog_record *r = sample_record(), *back = NULL;
        _cleanup_free_ char *t = NULL, *error = NULL;
        json_t *j;

        free(r->version);
        r->version = strdup("1.0.1"); /* the id was derived for 1.0.0 */
        j = catalog_record_to_json(r);
        t = catalog_json_format(j);
        json_decref(j);
        assert_int_equal(catalog_record_from_json(t, strlen(t), &back, &error), -EBADMSG);
        assert_non_null(strstr(error, "does not follow"));
        catalog_record_free(r);
        r = sample_record();
        json_object_set_new(json_object_get(r->manifest, "image"), "digest", json_string("ab"));
        j = catalog_record_to_json(r);
        free(t);
        t = catalog_json_format(j);
        json_decref(j);
        free(error);
        error = NULL;
        assert_int_equal(catalog_record_from_json(t, strlen(t), &back, &error), -EBADMSG);
        assert_non_null(strstr(error, "manifest is of another image"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ids),
                cmocka_unit_test(test_refs),
                cmocka_unit_test(test_tags),
                cmocka_unit_test(test_time),
                cmocka_unit_test(test_record_round_trip),
                cmocka_unit_test(test_record_malformed),
                cmocka_unit_test(test_manifest_mapping),
                cmocka_unit_test(test_gc_select),
                cmocka_unit_test_setup_teardown(test_blocks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_empty_image, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gc_plan, setup, teardown),
                cmocka_unit_test_setup_teardown(test_put_cond, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
                cmocka_unit_test_setup_teardown(test_locks, setup, teardown),
                cmocka_unit_test(test_record_identity),
                cmocka_unit_test_setup_teardown(test_promote, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
