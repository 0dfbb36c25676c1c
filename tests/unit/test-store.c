/* Unit tests for the store: the file:// backend end to end in a temporary
 * directory (objects, prefixes, mtimes, atomic replacement, bad keys), the
 * default store URL, and the S3 backend's pure parts: URL parsing,
 * credentials from the environment and from a credentials file, the
 * encoders SigV4 depends on, the ListObjects parser, the retry classifier
 * and the backoff bounds. One S3 store is opened against a closed port to
 * see retries end in a clear error that holds no secret. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/strv.h"
#include "store-internal.h"
#include "store.h"

struct fixture {
        char dir[64];
        char *url;
        FILE *log;
};

static const char *const env_names[] = {
        "INGOT_STORE",
        "XDG_DATA_HOME",
        "INGOT_S3_ENDPOINT",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "INGOT_S3_STALL_TIMEOUT",
        "INGOT_S3_RETRY_BASE_MS",
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        strcpy(f->dir, "/tmp/ingot-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        assert_true(asprintf(&f->url, "file://%s/store", f->dir) > 0);
        f->log = tmpfile();
        assert_non_null(f->log);
        log_set_stream(f->log);
        for (size_t i = 0; i < ELEMENTSOF(env_names); i++)
                unsetenv(env_names[i]);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        log_set_stream(NULL);
        fclose(f->log);
        assert_int_equal(rm_rf(f->dir), 0);
        free(f->url);
        free(f);
        return 0;
}

/* Everything logged since the last call, NUL-terminated (the caller frees). */
static char *log_take(struct fixture *f)
{
        long size = ftell(f->log);
        char *s = calloc(1, (size_t)size + 1);

        assert_non_null(s);
        rewind(f->log);
        assert_int_equal(fread(s, 1, (size_t)size, f->log), (size_t)size);
        rewind(f->log);
        assert_int_equal(ftruncate(fileno(f->log), 0), 0);
        return s;
}

static char *path_in(struct fixture *f, const char *name)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
        return p;
}

/* ---- keys and the default URL ---- */

static void test_keys(void **state _unused_)
{
        static const char *const good[] = {
                "blocks/0123abcdef",
                "images/ami-0123456789abcdef0.json",
                "names/web/1.0.1.json",
                "a",
                "channels/x/stable.json",
                "a@b:c=d/_-.x",
                ".hidden",
                "..x",
        };
        static const char *const bad[] = {
                "", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a/.", "sp ace", "a\nb", "a~tmp", "ä", "a?b", "a%2f",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                assert_true(store_key_is_valid(good[i]));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_false(store_key_is_valid(bad[i]));
        assert_false(store_key_is_valid(NULL));

        assert_true(store_prefix_is_valid(""));
        assert_true(store_prefix_is_valid("images/"));
        assert_true(store_prefix_is_valid("blocks/ab"));
        assert_true(store_prefix_is_valid("bl"));
        assert_false(store_prefix_is_valid("/images/"));
        assert_false(store_prefix_is_valid("../"));
        assert_false(store_prefix_is_valid("a//"));
        assert_false(store_prefix_is_valid("a b"));
}

static void test_url_default(void **state)
{
        struct fixture *f = *state;
        char *url;

        assert_int_equal(store_url_default("s3://b", &url), 0);
        assert_string_equal(url, "s3://b");
        free(url);

        setenv("INGOT_STORE", "file:///srv/store", 1);
        assert_int_equal(store_url_default(NULL, &url), 0);
        assert_string_equal(url, "file:///srv/store");
        free(url);
        assert_int_equal(store_url_default("", &url), 0); /* an empty --store is no --store */
        assert_string_equal(url, "file:///srv/store");
        free(url);
        unsetenv("INGOT_STORE");

        setenv("XDG_DATA_HOME", "/xdg", 1);
        assert_int_equal(store_url_default(NULL, &url), 0);
        assert_string_equal(url, "file:///xdg/ingot/store");
        free(url);
        unsetenv("XDG_DATA_HOME");

        char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
        setenv("HOME", "/home/u", 1);
        assert_int_equal(store_url_default(NULL, &url), 0);
        assert_string_equal(url, "file:///home/u/.local/share/ingot/store");
        free(url);
        unsetenv("HOME");
        assert_int_equal(store_url_default(NULL, &url), -ENXIO);
        if (home)
                setenv("HOME", home, 1);
        free(home);
        free(log_take(f));
}

static void test_open_errors(void **state)
{
        struct fixture *f = *state;
        struct store *s = NULL;
        char *log;

        assert_int_equal(store_open("ftp://x/y", NULL, &s), -EINVAL);
        assert_int_equal(store_open("/just/a/path", NULL, &s), -EINVAL);
        assert_int_equal(store_open("file://relative/dir", NULL, &s), -EINVAL);
        assert_null(s);
        log = log_take(f);
        assert_non_null(strstr(log, "unknown store scheme in 'ftp://x/y'"));
        assert_non_null(strstr(log, "must be an absolute path"));
        free(log);
}

/* ---- the file backend ---- */

static void test_file_objects(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        _cleanup_free_ char *dir = path_in(f, "store");
        char *data;
        size_t size;
        struct stat st;

        assert_int_equal(store_open(f->url, NULL, &s), 0);
        assert_int_equal(stat(dir, &st), 0); /* created by open */
        assert_true(S_ISDIR(st.st_mode));
        assert_string_equal(s->url, f->url);

        assert_int_equal(store_exists(s, "images/a.json"), 0);
        assert_int_equal(store_get(s, "images/a.json", &data, &size), -ENOENT);
        assert_int_equal(store_put(s, "images/a.json", "{}", 2), 0);
        assert_int_equal(store_exists(s, "images/a.json"), 1);
        assert_int_equal(store_exists(s, "images"), 0); /* a directory is not an object */
        assert_int_equal(store_get(s, "images", &data, &size), -ENOENT);
        assert_int_equal(store_get(s, "images/a.json/x", &data, &size), -ENOENT);
        assert_int_equal(store_get(s, "images/a.json", &data, &size), 0);
        assert_int_equal(size, 2);
        assert_memory_equal(data, "{}", 2);
        assert_int_equal(data[2], '\0'); /* NUL-terminated past the end */
        free(data);

        /* replaced whole */
        assert_int_equal(store_put(s, "images/a.json", "{\"x\":1}", 7), 0);
        assert_int_equal(store_get(s, "images/a.json", &data, &size), 0);
        assert_int_equal(size, 7);
        free(data);

        /* empty objects exist */
        assert_int_equal(store_put(s, "empty", "", 0), 0);
        assert_int_equal(store_exists(s, "empty"), 1);
        assert_int_equal(store_get(s, "empty", &data, &size), 0);
        assert_int_equal(size, 0);
        free(data);

        assert_int_equal(store_remove(s, "images/a.json"), 0);
        assert_int_equal(store_exists(s, "images/a.json"), 0);
        assert_int_equal(store_remove(s, "images/a.json"), 0); /* absent is fine */
        assert_int_equal(store_remove(s, "no/such/dir/x"), 0);

        /* bad keys never reach the disk */
        assert_int_equal(store_put(s, "../escape", "x", 1), -EINVAL);
        assert_int_equal(store_put(s, "/abs", "x", 1), -EINVAL);
        assert_int_equal(store_get(s, "a//b", &data, &size), -EINVAL);
        assert_int_equal(store_exists(s, "a/../b"), -EINVAL);
        assert_int_equal(store_remove(s, ""), -EINVAL);
        _cleanup_free_ char *escaped = path_in(f, "escape");
        assert_int_equal(access(escaped, F_OK), -1);
        char *log = log_take(f);
        assert_non_null(strstr(log, "invalid store key '../escape'"));
        free(log);
}

static void test_file_list(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        static const char *const keys[] = {
                "blocks/bb",          "blocks/aa",          "blocks/ab",       "images/ami-1.json",
                "names/web/1.0.json", "names/web/1.1.json", "names/db/2.json", "top",
        };
        char **l = NULL;
        int64_t *mt = NULL;

        assert_int_equal(store_open(f->url, NULL, &s), 0);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                assert_int_equal(store_put(s, keys[i], keys[i], strlen(keys[i])), 0);

        /* a known mtime on one object */
        _cleanup_free_ char *p = path_in(f, "store/names/web/1.0.json");
        struct timespec ts[2] = { { .tv_sec = 1700000000 }, { .tv_sec = 1700000000 } };
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
        /* strangers: a temporary file, a file with a bad name, a symlink */
        _cleanup_free_ char *tmp = path_in(f, "store/blocks/cc~123.4");
        assert_int_equal(write_file_atomic(tmp, "x", 1, 0644), 0);
        _cleanup_free_ char *odd = path_in(f, "store/blocks/with space");
        assert_int_equal(write_file_atomic(odd, "x", 1, 0644), 0);
        _cleanup_free_ char *link = path_in(f, "store/blocks/link");
        assert_int_equal(symlink("aa", link), 0);

        assert_int_equal(store_list(s, "", &l, &mt), 0);
        assert_int_equal(strv_length(l), ELEMENTSOF(keys));
        assert_string_equal(l[0], "blocks/aa");
        assert_string_equal(l[1], "blocks/ab");
        assert_string_equal(l[2], "blocks/bb");
        assert_string_equal(l[3], "images/ami-1.json");
        assert_string_equal(l[4], "names/db/2.json");
        assert_string_equal(l[5], "names/web/1.0.json");
        assert_int_equal(mt[5], 1700000000);
        assert_true(mt[0] > 1700000000);
        assert_string_equal(l[7], "top");
        l = strv_free(l);
        mt = x_free(mt);

        assert_int_equal(store_list(s, "blocks/", &l, NULL), 0);
        assert_int_equal(strv_length(l), 3);
        l = strv_free(l);
        assert_int_equal(store_list(s, "blocks/a", &l, &mt), 0); /* a partial component */
        assert_int_equal(strv_length(l), 2);
        assert_string_equal(l[1], "blocks/ab");
        l = strv_free(l);
        mt = x_free(mt);
        assert_int_equal(store_list(s, "names/web/", &l, NULL), 0);
        assert_int_equal(strv_length(l), 2);
        l = strv_free(l);
        assert_int_equal(store_list(s, "names/w", &l, NULL), 0);
        assert_int_equal(strv_length(l), 2);
        l = strv_free(l);
        assert_int_equal(store_list(s, "n", &l, NULL), 0);
        assert_int_equal(strv_length(l), 3);
        l = strv_free(l);
        assert_int_equal(store_list(s, "nothing/", &l, &mt), 0);
        assert_non_null(l);
        assert_null(l[0]);
        l = strv_free(l);
        mt = x_free(mt);
        assert_int_equal(store_list(s, "top/", &l, NULL), 0); /* a file is no directory */
        assert_int_equal(strv_length(l), 0);
        l = strv_free(l);
        assert_int_equal(store_list(s, "../", &l, NULL), -EINVAL);
        free(log_take(f));
}

static void progress(uint64_t bytes, size_t done, size_t total, void *userdata)
{
        uint64_t *x = userdata;

        x[0] = bytes;
        x[1] = done;
        x[2] = total;
}

static void test_file_batches(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        struct store_item items[4] = {
                { .key = "blocks/1", .data = (void *)"one", .size = 3 },
                { .key = "blocks/2", .data = (void *)"two!", .size = 4 },
                { .key = "bad/../key", .data = (void *)"x", .size = 1 },
                { .key = "blocks/3", .data = (void *)"", .size = 0 },
        };
        uint64_t last[3] = { 0 };

        assert_int_equal(store_open(f->url, NULL, &s), 0);
        assert_int_equal(store_put_many(s, items, 4, NULL, NULL), -EINVAL);
        assert_int_equal(items[0].result, 0);
        assert_int_equal(items[2].result, -EINVAL);
        assert_int_equal(items[3].result, 0);

        struct store_item ex[3] = { { .key = "blocks/1" },
                                    { .key = "blocks/9", .exists = true },
                                    { .key = "blocks/3" } };
        assert_int_equal(store_exists_many(s, ex, 3), 0);
        assert_true(ex[0].exists);
        assert_false(ex[1].exists);
        assert_true(ex[2].exists);

        struct store_item get[3] = { { .key = "blocks/2" }, { .key = "blocks/9" }, { .key = "blocks/1" } };
        assert_int_equal(store_get_many(s, get, 3, progress, last), -ENOENT);
        assert_int_equal(get[0].result, 0);
        assert_int_equal(get[0].size, 4);
        assert_memory_equal(get[0].data, "two!", 4);
        assert_int_equal(get[1].result, -ENOENT);
        assert_int_equal(get[2].size, 3);
        assert_int_equal(last[0], 7);
        assert_int_equal(last[1], 3);
        assert_int_equal(last[2], 3);
        free(get[0].data);
        free(get[2].data);
        free(log_take(f));
}

/* No temporary file is left, and a reader sees the old or the new object,
 * never a mix or a short one, while a writer replaces it over and over. */
static void test_file_atomic(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        const size_t size = 1 << 20;
        _cleanup_free_ char *a = malloc(size), *b = malloc(size);
        pid_t pid;
        int status;

        assert_non_null(a);
        assert_non_null(b);
        memset(a, 'a', size);
        memset(b, 'b', size);
        assert_int_equal(store_open(f->url, NULL, &s), 0);
        assert_int_equal(store_put(s, "channels/web/stable.json", a, size), 0);

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int rc = 0;

                for (int i = 0; i < 40 && rc == 0; i++)
                        if (store_put(s, "channels/web/stable.json", i % 2 ? a : b, size) < 0)
                                rc = 1;
                /* free what the parent's cleanups would, for valgrind's view of the child */
                store_close(s);
                free(a);
                free(b);
                _exit(rc);
        }
        for (int i = 0; i < 200; i++) {
                char *data;
                size_t n;

                assert_int_equal(store_get(s, "channels/web/stable.json", &data, &n), 0);
                assert_int_equal(n, size);
                assert_true(memcmp(data, a, size) == 0 || memcmp(data, b, size) == 0);
                free(data);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        char **l = NULL;
        assert_int_equal(store_list(s, "", &l, NULL), 0);
        assert_int_equal(strv_length(l), 1);
        strv_free(l);
        /* nothing else in the directory: no temporary left */
        _cleanup_free_ char *cmd = NULL;
        assert_true(asprintf(&cmd, "test \"$(ls -A '%s/store/channels/web')\" = stable.json", f->dir) > 0);
        assert_int_equal(system(cmd), 0);
}

/* ---- S3: URLs ---- */

static void test_s3_url(void **state)
{
        struct fixture *f = *state;
        struct s3_url u;
        char *log;

        assert_int_equal(s3_url_parse("s3://images", &u), 0);
        assert_string_equal(u.bucket, "images");
        assert_null(u.prefix);
        assert_string_equal(u.region, "us-east-1");
        assert_string_equal(u.endpoint, "https://s3.us-east-1.amazonaws.com");
        s3_url_done(&u);

        assert_int_equal(s3_url_parse("s3://images/some/prefix/?region=eu-west-3", &u), 0);
        assert_string_equal(u.prefix, "some/prefix");
        assert_string_equal(u.region, "eu-west-3");
        assert_string_equal(u.endpoint, "https://s3.eu-west-3.amazonaws.com");
        s3_url_done(&u);

        assert_int_equal(s3_url_parse("s3://images/p?endpoint=http://127.0.0.1:9000/&region=us-east-1", &u), 0);
        assert_string_equal(u.endpoint, "http://127.0.0.1:9000");
        assert_string_equal(u.prefix, "p");
        s3_url_done(&u);
        assert_int_equal(s3_url_parse("s3://images?endpoint=http%3A%2F%2Flocalhost%3A4568", &u), 0);
        assert_string_equal(u.endpoint, "http://localhost:4568");
        s3_url_done(&u);

        /* the environment, below the query */
        setenv("AWS_DEFAULT_REGION", "ap-south-1", 1);
        assert_int_equal(s3_url_parse("s3://images", &u), 0);
        assert_string_equal(u.region, "ap-south-1");
        s3_url_done(&u);
        setenv("AWS_REGION", "eu-central-1", 1);
        setenv("INGOT_S3_ENDPOINT", "https://minio.example:9000", 1);
        assert_int_equal(s3_url_parse("s3://images", &u), 0);
        assert_string_equal(u.region, "eu-central-1");
        assert_string_equal(u.endpoint, "https://minio.example:9000");
        s3_url_done(&u);
        assert_int_equal(s3_url_parse("s3://images?region=us-west-2&endpoint=http://h:1", &u), 0);
        assert_string_equal(u.region, "us-west-2");
        assert_string_equal(u.endpoint, "http://h:1");
        s3_url_done(&u);
        setenv("INGOT_S3_ENDPOINT", "ftp://x", 1);
        assert_int_equal(s3_url_parse("s3://images", &u), -EINVAL);
        unsetenv("INGOT_S3_ENDPOINT");
        unsetenv("AWS_REGION");
        unsetenv("AWS_DEFAULT_REGION");

        static const char *const bad[] = {
                "s3://",
                "s3:///prefix",
                "s3://ab",
                "s3://Bad Bucket",
                "s3://bucket..x",
                "s3://-bucket",
                "s3://bucket/a/../b",
                "s3://bucket/a//b",
                "s3://bucket?region=",
                "s3://bucket?region=us_east",
                "s3://bucket?endpoint=ftp://x",
                "s3://bucket?endpoint=http://user:secret@host",
                "s3://bucket?endpoint=http://host:",
                "s3://bucket?endpoint=http://host:x1",
                "s3://bucket?endpoint=http://",
                "s3://bucket?endpoint=http%3",
                "s3://bucket?color=blue",
                "s3://bucket?region",
                "s3://bucket#frag",
                "file:///x",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (s3_url_parse(bad[i], &u) != -EINVAL)
                        fail_msg("'%s' was accepted", bad[i]);
        }
        log = log_take(f);
        assert_non_null(strstr(log, "unknown parameter 'color'"));
        assert_null(strstr(log, "secret")); /* an endpoint with credentials is not echoed */
        free(log);
}

/* ---- S3: credentials ---- */

static void test_s3_credentials(void **state)
{
        struct fixture *f = *state;
        struct s3_credentials c;
        _cleanup_free_ char *file = path_in(f, "credentials");
        char *log;
        static const char text[] = "# a comment\n"
                                   "[default]\n"
                                   "aws_access_key_id = AKDEFAULT\n"
                                   "aws_secret_access_key = SECRETDEFAULT\n"
                                   "\n"
                                   "[ci]\n"
                                   "aws_access_key_id=AKCI\n"
                                   "aws_secret_access_key=SECRETCI\n"
                                   "aws_session_token=TOKENCI\n"
                                   "region=eu-west-1\n"
                                   "\n"
                                   "[half]\n"
                                   "aws_access_key_id=AKHALF\n";

        /* the environment first */
        setenv("AWS_ACCESS_KEY_ID", "AKENV", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "SECRETENV", 1);
        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
        assert_int_equal(s3_credentials_load(&c), 0);
        assert_string_equal(c.access_key, "AKENV");
        assert_string_equal(c.secret_key, "SECRETENV");
        assert_null(c.session_token);
        s3_credentials_done(&c);
        setenv("AWS_SESSION_TOKEN", "TOKENENV", 1);
        assert_int_equal(s3_credentials_load(&c), 0);
        assert_string_equal(c.session_token, "TOKENENV");
        s3_credentials_done(&c);
        assert_null(c.access_key);
        unsetenv("AWS_SESSION_TOKEN");
        unsetenv("AWS_SECRET_ACCESS_KEY");
        assert_int_equal(s3_credentials_load(&c), -EACCES); /* half set */
        unsetenv("AWS_ACCESS_KEY_ID");

        /* no file */
        assert_int_equal(s3_credentials_load(&c), -EACCES);
        log = log_take(f);
        assert_non_null(strstr(log, "$AWS_SECRET_ACCESS_KEY is not"));
        assert_non_null(strstr(log, "'/nonexistent' cannot be read"));
        assert_null(strstr(log, "SECRETENV"));
        free(log);

        /* the file, by profile */
        assert_int_equal(write_file_atomic(file, text, strlen(text), 0600), 0);
        setenv("AWS_SHARED_CREDENTIALS_FILE", file, 1);
        assert_int_equal(s3_credentials_load(&c), 0);
        assert_string_equal(c.access_key, "AKDEFAULT");
        assert_string_equal(c.secret_key, "SECRETDEFAULT");
        assert_null(c.session_token);
        s3_credentials_done(&c);
        setenv("AWS_PROFILE", "ci", 1);
        assert_int_equal(s3_credentials_load(&c), 0);
        assert_string_equal(c.access_key, "AKCI");
        assert_string_equal(c.secret_key, "SECRETCI");
        assert_string_equal(c.session_token, "TOKENCI");
        s3_credentials_done(&c);
        setenv("AWS_PROFILE", "missing", 1);
        assert_int_equal(s3_credentials_load(&c), -EACCES);
        setenv("AWS_PROFILE", "half", 1);
        assert_int_equal(s3_credentials_load(&c), -EACCES);
        log = log_take(f);
        assert_non_null(strstr(log, "has no profile 'missing'"));
        assert_non_null(strstr(log, file));
        assert_non_null(strstr(log, "profile 'half'"));
        assert_null(strstr(log, "SECRETDEFAULT"));
        assert_null(strstr(log, "SECRETCI"));
        assert_null(strstr(log, "AKHALF"));
        free(log);
        unsetenv("AWS_PROFILE");

        /* ~/.aws/credentials when nothing names a file */
        unsetenv("AWS_SHARED_CREDENTIALS_FILE");
        char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
        _cleanup_free_ char *aws = path_in(f, ".aws"), *cred = path_in(f, ".aws/credentials");
        assert_int_equal(mkdir(aws, 0700), 0);
        assert_int_equal(write_file_atomic(cred, text, strlen(text), 0600), 0);
        setenv("HOME", f->dir, 1);
        assert_int_equal(s3_credentials_load(&c), 0);
        assert_string_equal(c.access_key, "AKDEFAULT");
        s3_credentials_done(&c);
        if (home)
                setenv("HOME", home, 1);
        free(home);
}

/* ---- S3: encoding ---- */

static void test_s3_encode(void **state _unused_)
{
        char *s;

        s = s3_uri_encode("blocks/ab-c_d.e~f", true);
        assert_string_equal(s, "blocks/ab-c_d.e~f");
        free(s);
        s = s3_uri_encode("names/a@b:c=d/1.0 x+y", true);
        assert_string_equal(s, "names/a%40b%3Ac%3Dd/1.0%20x%2By");
        free(s);
        s = s3_uri_encode("a/b", false);
        assert_string_equal(s, "a%2Fb");
        free(s);
        s = s3_uri_encode("\xc3\xa4*", false);
        assert_string_equal(s, "%C3%A4%2A");
        free(s);
        s = s3_uri_encode("", false);
        assert_string_equal(s, "");
        free(s);

        /* sorted by name, every name with '=', values encoded once */
        s = s3_query_build((const char *const[]){ "prefix", "store/blocks/", "list-type", "2", "continuation-token",
                                                  "1/abc+=", NULL });
        assert_string_equal(s, "continuation-token=1%2Fabc%2B%3D&list-type=2&prefix=store%2Fblocks%2F");
        free(s);
        s = s3_query_build((const char *const[]){ "uploads", "", NULL });
        assert_string_equal(s, "uploads=");
        free(s);
        s = s3_query_build((const char *const[]){ "uploadId", "X", "partNumber", "1", NULL });
        assert_string_equal(s, "partNumber=1&uploadId=X");
        free(s);
        s = s3_query_build((const char *const[]){ "b", "2", "a", "z", "b", "1", NULL });
        assert_string_equal(s, "a=z&b=1&b=2");
        free(s);
        s = s3_query_build((const char *const[]){ NULL });
        assert_string_equal(s, "");
        free(s);
}

/* ---- S3: XML ---- */

static const char page1[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<Name>images</Name><Prefix>store/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>"
        "<IsTruncated>true</IsTruncated>"
        "<Contents><Key>store/blocks/aa</Key><LastModified>2023-11-14T22:13:20.000Z</LastModified>"
        "<ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>1</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        "<Contents><Key>store/names/a&amp;b&lt;c&gt;&apos;&quot;/x&#233;&#x41;</Key>"
        "<LastModified>2023-11-14T22:13:21Z</LastModified><Size>2</Size></Contents>"
        "<Contents>\n  <Key>store/IsTruncated</Key>\n  <LastModified>2023-11-14T22:13:22.5Z</LastModified>\n"
        "</Contents>"
        "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
        "</ListBucketResult>";

static const char page2[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                            "<ListBucketResult><Name>images</Name><IsTruncated>false</IsTruncated>"
                            "<Contents><Key>store/z</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
                            "</Contents></ListBucketResult>";

static void test_s3_list_parse(void **state _unused_)
{
        struct s3_list_page p;
        static const char empty[] = "<ListBucketResult><Name>b</Name><KeyCount>0</KeyCount>"
                                    "<IsTruncated>false</IsTruncated></ListBucketResult>";
        static const char v1[] = "<ListBucketResult><IsTruncated>true</IsTruncated><Marker></Marker>"
                                 "<NextMarker>k/2</NextMarker><Contents><Key>k/1</Key></Contents>"
                                 "<Contents><Key>k/2</Key></Contents></ListBucketResult>";

        assert_int_equal(s3_list_parse(page1, strlen(page1), &p), 0);
        assert_int_equal(p.n_keys, 3);
        assert_string_equal(p.keys[0], "store/blocks/aa");
        assert_int_equal(p.mtimes[0], 1700000000);
        assert_string_equal(p.keys[1], "store/names/a&b<c>'\"/x\xc3\xa9"
                                       "A");
        assert_int_equal(p.mtimes[1], 1700000001);
        assert_string_equal(p.keys[2], "store/IsTruncated");
        assert_int_equal(p.mtimes[2], 1700000002);
        assert_null(p.keys[3]);
        assert_true(p.truncated);
        assert_string_equal(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
        s3_list_page_done(&p);

        assert_int_equal(s3_list_parse(page2, strlen(page2), &p), 0);
        assert_int_equal(p.n_keys, 1);
        assert_false(p.truncated);
        assert_null(p.next_token);
        assert_int_equal(p.mtimes[0], 1704067200);
        s3_list_page_done(&p);

        assert_int_equal(s3_list_parse(empty, strlen(empty), &p), 0);
        assert_int_equal(p.n_keys, 0);
        assert_non_null(p.keys);
        assert_null(p.keys[0]);
        s3_list_page_done(&p);

        assert_int_equal(s3_list_parse(v1, strlen(v1), &p), 0);
        assert_int_equal(p.n_keys, 2);
        assert_string_equal(p.next_token, "k/2");
        s3_list_page_done(&p);

        /* only the size given counts: the document cut short is refused */
        assert_int_equal(s3_list_parse(page1, 200, &p), -EBADMSG);
        static const char *const bad[] = {
                "",
                "<Error><Code>NoSuchBucket</Code></Error>",
                "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a&bogus;</Key></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a</Key><LastModified>yesterday</LastModified></Contents>"
                "</ListBucketResult>",
                "<ListBucketResult><Contents><Key></Key></Contents></ListBucketResult>",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (s3_list_parse(bad[i], strlen(bad[i]), &p) != -EBADMSG)
                        fail_msg("accepted: %s", bad[i]);
}

static void test_s3_xml(void **state _unused_)
{
        static const char err[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
                                  "<Message>Please reduce your request rate &amp; retry.</Message>"
                                  "<Resource>/b/k</Resource><RequestId>1</RequestId></Error>";
        char *s, buf[64];

        s = s3_xml_element(err, strlen(err), "Code");
        assert_string_equal(s, "SlowDown");
        free(s);
        s = s3_xml_element(err, strlen(err), "Message");
        assert_string_equal(s, "Please reduce your request rate & retry.");
        free(s);
        assert_null(s3_xml_element(err, strlen(err), "Key"));
        assert_null(s3_xml_element(err, strlen(err), "Cod"));
        assert_null(s3_xml_element(NULL, 0, "Code"));
        s = s3_xml_element("<A/><A>x</A>", 12, "A");
        assert_string_equal(s, "");
        free(s);

        strcpy(buf, "&lt;&gt;&amp;&quot;&apos;&#65;&#x263A;&#x1F600;");
        assert_int_equal(s3_xml_unescape(buf), 0);
        assert_string_equal(buf, "<>&\"'A\xe2\x98\xba\xf0\x9f\x98\x80");
        static const char *const bad[] = { "&",        "&x;",        "&#;",   "&#x;",   "&#0;",
                                           "&#xD800;", "&#x110000;", "&#-1;", "&#12a;", "&amp" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                strcpy(buf, bad[i]);
                if (s3_xml_unescape(buf) != -EBADMSG)
                        fail_msg("accepted: %s", bad[i]);
        }

        int64_t t;
        assert_int_equal(s3_parse_time("1970-01-01T00:00:00Z", &t), 0);
        assert_int_equal(t, 0);
        assert_int_equal(s3_parse_time("2023-11-14T22:13:20.123456Z", &t), 0);
        assert_int_equal(t, 1700000000);
        assert_int_equal(s3_parse_time("2023-11-14T22:13:20", &t), -EINVAL);
        assert_int_equal(s3_parse_time("2023-11-14 22:13:20Z", &t), -EINVAL);
        assert_int_equal(s3_parse_time("", &t), -EINVAL);
}

/* ---- S3: the retry policy ---- */

static void test_s3_classify(void **state _unused_)
{
        assert_int_equal(s3_classify(CURLE_OK, 200, NULL), S3_VERDICT_OK);
        assert_int_equal(s3_classify(CURLE_OK, 204, NULL), S3_VERDICT_OK);
        assert_int_equal(s3_classify(CURLE_OK, 206, NULL), S3_VERDICT_OK);

        static const long transient_status[] = { 500, 502, 503, 504, 429 };
        for (size_t i = 0; i < ELEMENTSOF(transient_status); i++)
                assert_int_equal(s3_classify(CURLE_OK, transient_status[i], NULL), S3_VERDICT_TRANSIENT);
        static const char *const transient_codes[] = {
                "SlowDown",   "RequestTimeout",      "InternalError",       "ServiceUnavailable",
                "Throttling", "ThrottlingException", "RequestLimitExceeded"
        };
        for (size_t i = 0; i < ELEMENTSOF(transient_codes); i++)
                assert_int_equal(s3_classify(CURLE_OK, 400, transient_codes[i]), S3_VERDICT_TRANSIENT);
        /* S3 answers RequestTimeout with 400: the code decides */
        assert_int_equal(s3_classify(CURLE_OK, 400, "RequestTimeout"), S3_VERDICT_TRANSIENT);
        assert_int_equal(s3_classify(CURLE_OK, 503, "SlowDown"), S3_VERDICT_TRANSIENT);

        static const int transient_curl[] = { CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_SEND_ERROR,
                                              CURLE_RECV_ERROR,      CURLE_GOT_NOTHING,        CURLE_PARTIAL_FILE };
        for (size_t i = 0; i < ELEMENTSOF(transient_curl); i++)
                assert_int_equal(s3_classify(transient_curl[i], 0, NULL), S3_VERDICT_TRANSIENT);

        static const long permanent_status[] = { 400, 401, 403, 404, 405, 409, 411, 412, 416, 501, 301 };
        for (size_t i = 0; i < ELEMENTSOF(permanent_status); i++)
                assert_int_equal(s3_classify(CURLE_OK, permanent_status[i], NULL), S3_VERDICT_PERMANENT);
        assert_int_equal(s3_classify(CURLE_OK, 403, "SignatureDoesNotMatch"), S3_VERDICT_PERMANENT);
        assert_int_equal(s3_classify(CURLE_OK, 403, "AccessDenied"), S3_VERDICT_PERMANENT);
        assert_int_equal(s3_classify(CURLE_OK, 404, "NoSuchBucket"), S3_VERDICT_PERMANENT);
        assert_int_equal(s3_classify(CURLE_OK, 400, "InvalidRequest"), S3_VERDICT_PERMANENT);
        assert_int_equal(s3_classify(CURLE_OK, 403, "RequestTimeTooSkewed"), S3_VERDICT_PERMANENT);
        static const int permanent_curl[] = { CURLE_COULDNT_RESOLVE_HOST, CURLE_PEER_FAILED_VERIFICATION,
                                              CURLE_URL_MALFORMAT, CURLE_WRITE_ERROR, CURLE_UNSUPPORTED_PROTOCOL };
        for (size_t i = 0; i < ELEMENTSOF(permanent_curl); i++)
                assert_int_equal(s3_classify(permanent_curl[i], 0, NULL), S3_VERDICT_PERMANENT);
}

static void test_s3_backoff(void **state _unused_)
{
        uint64_t seed = 42;

        for (unsigned attempt = 0; attempt < 12; attempt++) {
                uint64_t limit = (uint64_t)S3_RETRY_BASE_MS << attempt, max = 0, min = UINT64_MAX;

                if (limit > S3_RETRY_CAP_MS)
                        limit = S3_RETRY_CAP_MS;
                limit *= 1000;
                for (int i = 0; i < 2000; i++) {
                        uint64_t d = s3_backoff_usec(attempt, S3_RETRY_BASE_MS, S3_RETRY_CAP_MS, &seed);

                        assert_true(d <= limit);
                        if (d > max)
                                max = d;
                        if (d < min)
                                min = d;
                }
                /* full jitter: spread over the whole range */
                assert_true(max > limit * 9 / 10);
                assert_true(min < limit / 10);
        }
        /* huge attempts do not overflow */
        assert_true(s3_backoff_usec(1000, 200, 5000, &seed) <= 5000 * 1000);
        assert_true(s3_backoff_usec(5, 1, 5000, &seed) <= 32 * 1000);
        seed = 0; /* a zero state still moves */
        assert_true(s3_backoff_usec(10, 200, 5000, &seed) <= 5000 * 1000);
        assert_true(seed != 0);
}

/* A store whose endpoint refuses connections: open works offline, then
 * every request is retried within the budget and fails with a message
 * that names the key and holds no secret. */
static void test_s3_unreachable(void **state)
{
        struct fixture *f = *state;
        _cleanup_(store_closep) struct store *s = NULL;
        struct store_options o = { .jobs = 2 };
        char *data, *log;
        size_t size;
        time_t start;

        setenv("AWS_ACCESS_KEY_ID", "AKUNIT", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "UNIT-SECRET-VALUE", 1);
        setenv("AWS_SESSION_TOKEN", "UNIT-TOKEN-VALUE", 1);
        setenv("INGOT_S3_RETRY_BASE_MS", "1", 1);
        assert_int_equal(store_open("s3://images/pre?endpoint=http://127.0.0.1:1&region=eu-west-1", &o, &s), 0);
        assert_string_equal(s->url, "s3://images/pre?endpoint=http://127.0.0.1:1&region=eu-west-1");

        start = time(NULL);
        assert_int_equal(store_get(s, "blocks/aa", &data, &size), -ECONNREFUSED);
        struct store_item items[5] = { { .key = "blocks/1" },
                                       { .key = "blocks/2" },
                                       { .key = "x/../y" },
                                       { .key = "blocks/4" },
                                       { .key = "blocks/5" } };
        assert_true(store_exists_many(s, items, 5) < 0);
        assert_int_equal(items[2].result, -EINVAL);
        for (size_t i = 0; i < 5; i++)
                assert_true(items[i].result < 0);
        assert_true(time(NULL) - start < 20);

        log = log_take(f);
        assert_non_null(
                strstr(log, "s3 GET 'blocks/aa' in 's3://images/pre?endpoint=http://127.0.0.1:1&region=eu-west-1'"));
        assert_non_null(strstr(log, "gave up after 6 attempts"));
        assert_null(strstr(log, "UNIT-SECRET-VALUE"));
        assert_null(strstr(log, "UNIT-TOKEN-VALUE"));
        assert_null(strstr(log, "AKUNIT"));
        free(log);
        for (size_t i = 0; i < ELEMENTSOF(env_names); i++)
                unsetenv(env_names[i]);
}

static void test_s3_open_errors(void **state)
{
        struct fixture *f = *state;
        struct store *s = NULL;
        char *log;

        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
        assert_int_equal(store_open("s3://images", NULL, &s), -EACCES);
        assert_int_equal(store_open("s3://x", NULL, &s), -EINVAL);
        assert_null(s);
        log = log_take(f);
        assert_non_null(strstr(log, "no S3 credentials"));
        assert_non_null(strstr(log, "/nonexistent/credentials"));
        assert_non_null(strstr(log, "invalid bucket name 'x'"));
        free(log);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_keys, setup, teardown),
                cmocka_unit_test_setup_teardown(test_url_default, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_file_objects, setup, teardown),
                cmocka_unit_test_setup_teardown(test_file_list, setup, teardown),
                cmocka_unit_test_setup_teardown(test_file_batches, setup, teardown),
                cmocka_unit_test_setup_teardown(test_file_atomic, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_url, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_credentials, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_encode, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_list_parse, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_xml, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_classify, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_backoff, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_unreachable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_s3_open_errors, setup, teardown),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);

        curl_global_cleanup();
        return r;
}
