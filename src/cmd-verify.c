/* ingot verify: checks an image against its manifest (signature first,
 * then every digest, then the verity tree), or with --hygiene scans it for
 * sysprep leftovers. Exit 0 when everything matches, 1 on a difference
 * (the first one named), 2 when the inputs themselves are unusable. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "hygiene.h"
#include "seal.h"
#include "shared/fileio.h"
#include "shared/id128.h"
#include "shared/json-util.h"
#include "shared/log.h"
#include "shared/run.h"
#include "sign.h"
#include "verity.h"

/* The temporary raw copy of a qcow2 image, removed on a signal too. */
static char tmp_dir[4096 - 16], tmp_raw[4096];

static void remove_tmp(void)
{
        if (tmp_raw[0])
                unlink(tmp_raw);
        if (tmp_dir[0])
                rmdir(tmp_dir);
        tmp_raw[0] = tmp_dir[0] = '\0';
}

static void on_signal(int sig)
{
        remove_tmp();
        signal(sig, SIG_DFL);
        raise(sig);
}

static bool is_qcow2(const char *path)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint8_t magic[4];

        return fd >= 0 && pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
               memcmp(magic, "QFI\xfb", 4) == 0;
}

/* Converts a qcow2 image to a sparse raw file in a new temporary
 * directory; sets *ret to it (pointing into tmp_raw). */
static int qcow2_to_raw(const char *image, const char **ret)
{
        const char *tmp = getenv("TMPDIR");
        _cleanup_free_ char *err = NULL;
        char line[256];
        const char *argv[] = { "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", image, tmp_raw, NULL };
        struct sigaction sa = { .sa_handler = on_signal };
        int r;

        snprintf(tmp_dir, sizeof(tmp_dir), "%s/ingot-verify-XXXXXX", tmp && *tmp == '/' ? tmp : "/var/tmp");
        if (!mkdtemp(tmp_dir)) {
                r = -errno;
                tmp_dir[0] = '\0';
                return log_error_errno(r, "cannot create a temporary directory: %m");
        }
        if (snprintf(tmp_raw, sizeof(tmp_raw), "%s/image.raw", tmp_dir) >= (int)sizeof(tmp_raw))
                return log_error_errno(-ENAMETOOLONG, "cannot convert '%s' to raw: %m", image);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        r = run_argv(argv, NULL, NULL, &err);
        if (r != 0)
                return log_error_errno(r < 0 ? r : -EIO, "cannot convert '%s' to raw: qemu-img: %s", image,
                                       r < 0 ? strerror(-r) : run_output_line(err, true, line, sizeof(line)));
        *ret = tmp_raw;
        return 0;
}

/* IMAGE.raw or IMAGE.qcow2 → IMAGE.manifest.json */
static char *default_manifest(const char *image)
{
        size_t n = strlen(image);
        char *m;

        if (n > 4 && streq(image + n - 4, ".raw"))
                n -= 4;
        else if (n > 6 && streq(image + n - 6, ".qcow2"))
                n -= 6;
        if (asprintf(&m, "%.*s.manifest.json", (int)n, image) < 0)
                return NULL;
        return m;
}

static int print_json(json_t *j)
{
        int r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);

        json_decref(j);
        if (r < 0)
                return log_error_errno(-EIO, "cannot write the result"), EXIT_FAILURE_RUN;
        putchar('\n');
        return 0;
}

static int finish_output(int code)
{
        if (fflush(stdout) != 0)
                return log_error_errno(-errno, "cannot write the result: %m"), EXIT_FAILURE_RUN;
        return code;
}

static int verify_hygiene(const char *image, const char *raw, const struct cli_context *ctx)
{
        struct hygiene_finding *f = NULL;
        size_t n = 0;
        int r;

        r = hygiene_scan(raw, &f, &n);
        if (r < 0)
                return EXIT_FAILURE_RUN; /* the scan said why */
        if (ctx->json) {
                json_t *a = json_array();

                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, json_pack("{s:s, s:s}", "path", f[i].path, "reason", f[i].reason));
                r = print_json(
                        json_pack("{s:s, s:s, s:o}", "image", image, "hygiene", n ? "dirty" : "clean", "findings", a));
                if (r != 0) {
                        hygiene_findings_free(f, n);
                        return r;
                }
        } else if (n == 0)
                printf("%s: hygiene: clean\n", image);
        else
                for (size_t i = 0; i < n; i++)
                        printf("%s: leftover: %s (%s)\n", image, f[i].path, f[i].reason);
        hygiene_findings_free(f, n);
        return finish_output(n ? EXIT_FAILURE_RUN : EXIT_OK);
}

struct verify_result {
        const char *status;    /* "ok", "differs", "signature-failed", "size-differs", "verity-failed" */
        const char *signature; /* "ok", "not-checked", "unsigned", "failed" */
        char fingerprint[SIGN_FINGERPRINT_MAX];
        const char *verity; /* NULL (none), "ok", "not-checked", "failed" */
        const char *verity_reason;
        size_t n_partitions;
        bool have_digest;
        uint8_t digest[32];
        const struct seal_region *diff; /* the first differing region */
        uint64_t diff_start, diff_end;
        uint64_t size, expected_size;
};

static int report(const char *image, const char *manifest, const struct verify_result *v, const struct cli_context *ctx,
                  int code)
{
        char hex[65] = "";

        if (v->have_digest)
                hex_encode(v->digest, 32, hex);
        if (ctx->json) {
                json_t *j = json_object(), *d = json_null();

                json_object_set_new(j, "image", json_string(image));
                json_object_set_new(j, "manifest", json_string(manifest));
                json_object_set_new(j, "status", json_string(v->status));
                json_object_set_new(j, "signature", json_string(v->signature));
                json_object_set_new(j, "key_fingerprint", json_str_or_null(v->fingerprint[0] ? v->fingerprint : NULL));
                json_object_set_new(j, "partitions_checked", json_u64(v->n_partitions));
                json_object_set_new(j, "image_digest", json_str_or_null(v->have_digest ? hex : NULL));
                if (v->diff)
                        d = json_pack("{s:s, s:o, s:o, s:o, s:o}", "region",
                                      v->diff->number ? "partition" : "partition-table", "number",
                                      v->diff->number ? json_integer(v->diff->number) : json_null(), "name",
                                      json_str_or_null(v->diff->name), "start", json_u64(v->diff_start), "end",
                                      json_u64(v->diff_end));
                json_object_set_new(j, "difference", d);
                json_object_set_new(j, "verity", json_str_or_null(v->verity));
                int r = print_json(j);
                if (r != 0)
                        return r;
                return finish_output(code);
        }
        if (code != EXIT_OK)
                return code;
        printf("%s: ok: %zu partition%s and the partition table match the manifest, image digest %s, signature: ",
               image, v->n_partitions, v->n_partitions == 1 ? "" : "s", hex);
        if (streq(v->signature, "ok"))
                printf("ok (%s)", v->fingerprint);
        else if (streq(v->signature, "not-checked"))
                printf("not checked (no --key)");
        else
                printf("unsigned");
        if (v->verity && streq(v->verity, "ok"))
                printf(", verity: ok");
        else if (v->verity)
                printf(", verity: not checked (%s)", v->verity_reason);
        putchar('\n');
        return finish_output(code);
}

static int check_signature(const char *manifest, const char *data, size_t size, const char *key_path,
                           struct verify_result *v)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_free_ char *sig_path = NULL, *sig = NULL;
        size_t sig_size;
        int r;

        if (asprintf(&sig_path, "%s%s", manifest, SIGN_SIG_SUFFIX) < 0)
                return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        if (!key_path) {
                v->signature = access(sig_path, F_OK) == 0 ? "not-checked" : "unsigned";
                return EXIT_OK;
        }
        r = sign_load_public_key(key_path, &k);
        if (r == -EBADMSG)
                return log_error("'%s' is not an Ed25519 public key", key_path), EXIT_USAGE;
        if (r < 0)
                return log_error_errno(r, "cannot read the key '%s': %m", key_path), EXIT_USAGE;
        r = sign_fingerprint(k, v->fingerprint);
        if (r < 0)
                return log_error_errno(r, "cannot read the key '%s': %m", key_path), EXIT_USAGE;

        r = read_full_file(sig_path, 4096, &sig, &sig_size);
        if (r == -ENOENT) {
                v->signature = "unsigned";
                log_error("manifest '%s' is not signed (no '%s')", manifest, sig_path);
                return EXIT_FAILURE_RUN;
        }
        if (r < 0 && r != -EFBIG)
                return log_error_errno(r, "cannot read the signature '%s': %m", sig_path), EXIT_FAILURE_RUN;
        if (r == -EFBIG || sign_verify(k, data, size, sig, sig_size) < 0) {
                v->signature = "failed";
                log_error("manifest signature does not verify with '%s' (%s)", key_path, v->fingerprint);
                return EXIT_FAILURE_RUN;
        }
        v->signature = "ok";
        return EXIT_OK;
}

static const struct seal_region *region_by_number(const struct seal_digest *d, unsigned number)
{
        for (size_t i = 1; i < d->n_regions; i++)
                if (d->regions[i].number == number)
                        return &d->regions[i];
        return NULL;
}

static int check_verity(const char *image, const char *raw, const struct seal_manifest *m, struct verify_result *v)
{
        const struct seal_region *dp = region_by_number(m->digest, m->verity_data_partition),
                                 *hp = region_by_number(m->digest, m->verity_hash_partition);
        const char *tmp = getenv("TMPDIR");
        int r;

        if (!m->has_verity)
                return EXIT_OK;
        /* the whole hash partition, as the build formatted it: past the
         * tree it must be zero */
        r = verity_check(raw, dp->ranges[0].start, m->verity_data_size ?: dp->ranges[0].size, hp->ranges[0].start,
                         hp->ranges[0].size, m->verity_root_hash, tmp && *tmp == '/' ? tmp : "/var/tmp");
        if (r == -EOPNOTSUPP) {
                v->verity = "not-checked";
                v->verity_reason = "this ingot cannot check verity";
                return EXIT_OK;
        }
        if (r == -EBADMSG) {
                v->verity = "failed";
                v->status = "verity-failed";
                log_error("%s: verity partition %u '%s' does not match the root hash of the manifest", image,
                          hp->number, hp->name);
                return EXIT_FAILURE_RUN;
        }
        if (r < 0) {
                v->verity = "failed";
                v->status = "verity-failed";
                log_error_errno(r, "%s: cannot check the verity hash tree: %m", image);
                return EXIT_FAILURE_RUN;
        }
        v->verity = "ok";
        return EXIT_OK;
}

static int verify_manifest(const char *image, const char *raw, const char *manifest, const char *key_path,
                           const struct cli_context *ctx)
{
        _cleanup_free_ char *data = NULL, *error = NULL;
        _cleanup_(seal_manifest_freep) struct seal_manifest *m = NULL;
        _cleanup_(seal_digest_freep) struct seal_digest *actual = NULL;
        struct verify_result v = { .status = "ok" };
        size_t size, region;
        struct stat st;
        int r;

        r = read_full_file(manifest, SEAL_MANIFEST_MAX, &data, &size);
        if (r < 0)
                return log_error_errno(r, "cannot read the manifest '%s': %m", manifest), EXIT_USAGE;

        /* nothing in the manifest is trusted before its signature */
        r = check_signature(manifest, data, size, key_path, &v);
        if (r == EXIT_USAGE)
                return r;
        if (r != EXIT_OK) {
                v.status = "signature-failed";
                return report(image, manifest, &v, ctx, r);
        }

        r = seal_manifest_parse(data, size, &m, &error);
        if (r == -EBADMSG)
                return log_error("'%s' is not a valid manifest: %s", manifest, strna(error)), EXIT_USAGE;
        if (r < 0)
                return log_error_errno(r, "cannot read the manifest '%s': %m", manifest), EXIT_FAILURE_RUN;
        v.n_partitions = m->digest->n_regions - 1;

        if (stat(raw, &st) < 0)
                return log_error_errno(-errno, "cannot read '%s': %m", raw), EXIT_FAILURE_RUN;
        v.size = (uint64_t)st.st_size;
        v.expected_size = m->digest->size;
        if (S_ISREG(st.st_mode) && v.size != v.expected_size) {
                v.status = "size-differs";
                log_error("%s: the disk is %llu bytes, the manifest says %llu", image, (unsigned long long)v.size,
                          (unsigned long long)v.expected_size);
                return report(image, manifest, &v, ctx, EXIT_FAILURE_RUN);
        }

        r = seal_digest_new_like(m->digest, &actual);
        if (r < 0)
                return log_error_errno(r, "out of memory"), EXIT_FAILURE_RUN;
        r = seal_digest_compute(actual, raw);
        if (r < 0)
                return log_error_errno(r, "cannot read '%s': %m", raw), EXIT_FAILURE_RUN;
        memcpy(v.digest, actual->digest, 32);
        v.have_digest = true;

        if (seal_digest_first_difference(m->digest, actual, &region, &v.diff_start, &v.diff_end) > 0) {
                v.diff = &m->digest->regions[region];
                v.status = "differs";
                if (v.diff->number == 0)
                        log_error("%s: partition table differs from the manifest at bytes %llu-%llu", image,
                                  (unsigned long long)v.diff_start, (unsigned long long)v.diff_end);
                else
                        log_error("%s: partition %u '%s' differs from the manifest at bytes %llu-%llu", image,
                                  v.diff->number, v.diff->name, (unsigned long long)v.diff_start,
                                  (unsigned long long)v.diff_end);
                return report(image, manifest, &v, ctx, EXIT_FAILURE_RUN);
        }

        r = check_verity(image, raw, m, &v);
        return report(image, manifest, &v, ctx, r);
}

int cmd_verify(int argc, char **argv, const struct cli_context *ctx)
{
        enum { ARG_MANIFEST = 0x100, ARG_KEY, ARG_HYGIENE };
        static const struct option options[] = { { "manifest", required_argument, NULL, ARG_MANIFEST },
                                                 { "key", required_argument, NULL, ARG_KEY },
                                                 { "hygiene", no_argument, NULL, ARG_HYGIENE },
                                                 {} };
        _cleanup_free_ char *manifest_default = NULL;
        const char *image, *raw, *manifest = NULL, *key = NULL;
        bool hygiene = false;
        struct stat st;
        int c, r;

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                switch (c) {
                case ARG_MANIFEST:
                        manifest = optarg;
                        break;
                case ARG_KEY:
                        key = optarg;
                        break;
                case ARG_HYGIENE:
                        hygiene = true;
                        break;
                case ':':
                        return cli_usage_error("verify", "option '%s' needs a value", argv[optind - 1]);
                default:
                        return cli_usage_error("verify", "unknown option '%s'", argv[optind - 1]);
                }
        }
        r = cli_check_args("verify", argc - optind);
        if (r != 0)
                return r;
        if (hygiene && (manifest || key))
                return cli_usage_error("verify", "--hygiene takes no --manifest or --key");
        image = argv[optind];

        if (stat(image, &st) < 0)
                return log_error_errno(-errno, "cannot read the image '%s': %m", image), EXIT_USAGE;
        if (S_ISDIR(st.st_mode))
                return log_error("cannot read the image '%s': is a directory", image), EXIT_USAGE;
        if (!manifest) {
                manifest = manifest_default = default_manifest(image);
                if (!manifest)
                        return log_error_errno(-ENOMEM, "out of memory"), EXIT_FAILURE_RUN;
        }
        if (!hygiene && access(manifest, F_OK) < 0)
                return log_error_errno(-errno, "cannot read the manifest '%s': %m", manifest), EXIT_USAGE;

        raw = image;
        if (is_qcow2(image)) {
                r = qcow2_to_raw(image, &raw);
                if (r < 0) {
                        remove_tmp();
                        return EXIT_FAILURE_RUN;
                }
        }
        r = hygiene ? verify_hygiene(image, raw, ctx) : verify_manifest(image, raw, manifest, key, ctx);
        remove_tmp();
        return r;
}
