/* Unit tests for the state database: opening and migrating, the durable
 * settings, deployments, history order, instances and their ports, slots,
 * transactions, error mapping, and a child SIGKILLed in the middle of many
 * transactions leaving a consistent prefix behind. */
#include "config.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "shared/fileio.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "state.h"

/* Errors logged while quiet() is on go to log_text instead of stderr. */
static char log_text[16384];
static FILE *log_file;

static void quiet(void)
{
        memset(log_text, 0, sizeof(log_text));
        log_file = fmemopen(log_text, sizeof(log_text) - 1, "w");
        assert_non_null(log_file);
        log_set_stream(log_file);
}

static const char *loud(void)
{
        fclose(log_file);
        log_file = NULL;
        log_set_stream(NULL);
        return log_text;
}

static void assert_logged(const char *expected)
{
        if (log_file)
                fflush(log_file);
        if (!strstr(log_text, expected))
                fail_msg("expected '%s' in the log, got '%s'", expected, log_text);
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

struct fixture {
        char dir[64];
        struct state *s;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/ingot-test-state.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        assert_int_equal(state_open(f->dir, &f->s), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        state_close(f->s);
        assert_int_equal(rm_rf(f->dir), 0);
        free(f);
        return 0;
}

static void insert_deployment(struct state *s, const char *name)
{
        struct state_deployment d = {
                .name = (char *)name,
                .file = (char *)"/srv/web.deploy",
                .image_id = (char *)"ami-0123456789abcdef0",
                .image_ref = (char *)"web@1.0.0",
                .version = (char *)"1.0.0",
                .state = STATE_DEPLOYMENT_DEPLOYING,
        };

        assert_int_equal(state_deployment_upsert(s, &d), 0);
}

static void make_instance(struct state_instance *i, const char *deployment, unsigned slot, enum state_instance_state st)
{
        static struct state_port ports[] = { { 80, 8080 }, { 22, 2200 } };

        *i = (struct state_instance){
                .deployment = (char *)deployment,
                .image_id = (char *)"ami-0123456789abcdef0",
                .version = (char *)"1.0.0",
                .slot = slot,
                .ports = ports,
                .n_ports = 2,
                .dir = (char *)"/run/x",
                .pid = 0,
                .state = st,
        };
        assert_int_equal(state_new_instance_id(i->id), 0);
}

/* Runs one SQL query on the database file with a separate connection and
 * returns the first column of the first row as a new string. */
static char *query1(const char *dir, const char *sql)
{
        _cleanup_free_ char *path = NULL;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char *v = NULL;

        assert_true(asprintf(&path, "%s/state.db", dir) >= 0);
        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                v = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

static void test_open(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *path = NULL, *mode = NULL, *version = NULL, *check = NULL;
        struct stat st;

        assert_true(asprintf(&path, "%s/state.db", f->dir) >= 0);
        assert_string_equal(state_path(f->s), path);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        mode = query1(f->dir, "PRAGMA journal_mode");
        assert_string_equal(mode, "wal");
        version = query1(f->dir, "SELECT version FROM schema_version");
        assert_string_equal(version, "1");
        check = query1(f->dir, "PRAGMA integrity_check");
        assert_string_equal(check, "ok");

        /* reopening migrates nothing and keeps the data */
        insert_deployment(f->s, "web");
        f->s = state_close(f->s);
        assert_int_equal(state_open(f->dir, &f->s), 0);
        version = x_free(version);
        version = query1(f->dir, "SELECT count(*) || ':' || max(version) FROM schema_version");
        assert_string_equal(version, "1:1");
        {
                struct state_deployment d;
                assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
                state_deployment_done(&d);
        }
}

/* QEMU is forked while the database is open: it must not inherit it. */
static void test_cloexec(void **state)
{
        struct fixture *f = *state;
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        unsigned found = 0;

        insert_deployment(f->s, "web"); /* the WAL and shm files are open now */
        d = opendir("/proc/self/fd");
        if (!d)
                skip();
        while ((de = readdir(d))) {
                char link[PATH_MAX + 1] = "", proc[64];
                ssize_t n;
                int fd;

                if (de->d_name[0] == '.')
                        continue;
                fd = atoi(de->d_name);
                snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
                n = readlink(proc, link, sizeof(link) - 1);
                if (n <= 0 || !strstr(link, f->dir))
                        continue;
                found++;
                if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
                        fail_msg("'%s' is open without FD_CLOEXEC", link);
        }
        assert_true(found >= 1);
}

static void test_open_errors(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *sub = NULL, *path = NULL;
        struct state *s = NULL;
        sqlite3 *db;

        /* a database from a newer ingot */
        f->s = state_close(f->s);
        assert_true(asprintf(&path, "%s/state.db", f->dir) >= 0);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "UPDATE schema_version SET version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        quiet();
        assert_int_equal(state_open(f->dir, &s), -EPROTONOSUPPORT);
        assert_null(s);
        assert_logged("has schema version 99, this ingot knows up to 1");

        /* not a database at all */
        assert_true(asprintf(&sub, "%s/junk", f->dir) >= 0);
        assert_int_equal(mkdir(sub, 0700), 0);
        path = x_free(path);
        assert_true(asprintf(&path, "%s/state.db", sub) >= 0);
        {
                char junk[4096];

                memset(junk, 'x', sizeof(junk));
                assert_int_equal(write_file_atomic(path, junk, sizeof(junk), 0600), 0);
        }
        assert_int_equal(state_open(sub, &s), -EUCLEAN);
        assert_null(s);

        /* a directory we cannot create */
        assert_int_equal(state_open("/proc/ingot-no/state", &s) < 0, 1);
        assert_null(s);
        assert_int_equal(state_open(f->dir, &f->s) < 0, 1);
        loud();
        /* leave a usable database for teardown */
        assert_int_equal(rm_rf(f->dir), 0);
        assert_int_equal(mkdir(f->dir, 0700), 0);
        assert_int_equal(state_open(f->dir, &f->s), 0);
}

static void test_default_dir(void **state _unused_)
{
        _cleanup_free_ char *saved_xdg = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;
        _cleanup_free_ char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
        char *d = NULL;

        setenv("XDG_STATE_HOME", "/x/state", 1);
        assert_int_equal(state_default_dir(&d), 0);
        assert_string_equal(d, "/x/state/ingot");
        d = x_free(d);

        /* a relative XDG_STATE_HOME is ignored, as the spec says */
        setenv("XDG_STATE_HOME", "rel", 1);
        setenv("HOME", "/home/u", 1);
        assert_int_equal(state_default_dir(&d), 0);
        assert_string_equal(d, "/home/u/.local/state/ingot");
        d = x_free(d);

        unsetenv("XDG_STATE_HOME");
        assert_int_equal(state_default_dir(&d), 0);
        assert_string_equal(d, "/home/u/.local/state/ingot");
        d = x_free(d);

        if (saved_xdg)
                setenv("XDG_STATE_HOME", saved_xdg, 1);
        if (saved_home)
                setenv("HOME", saved_home, 1);
        else
                unsetenv("HOME");
}

static void test_enums(void **state _unused_)
{
        for (int i = 0; i < _STATE_DEPLOYMENT_MAX; i++)
                assert_int_equal(state_deployment_state_from_string(state_deployment_state_to_string(i)), i);
        for (int i = 0; i < _STATE_INSTANCE_MAX; i++)
                assert_int_equal(state_instance_state_from_string(state_instance_state_to_string(i)), i);
        assert_string_equal(state_deployment_state_to_string(STATE_DEPLOYMENT_TERMINATED), "terminated");
        assert_string_equal(state_instance_state_to_string(STATE_INSTANCE_UNHEALTHY), "unhealthy");
        assert_null(state_deployment_state_to_string(_STATE_DEPLOYMENT_MAX));
        assert_null(state_instance_state_to_string(_STATE_INSTANCE_INVALID));
        assert_int_equal(state_deployment_state_from_string("nope"), _STATE_DEPLOYMENT_INVALID);
        assert_int_equal(state_instance_state_from_string(NULL), _STATE_INSTANCE_INVALID);
}

static void test_deployments(void **state)
{
        struct fixture *f = *state;
        struct state_deployment d = {}, *list = NULL;
        size_t n = 0;

        assert_int_equal(state_deployment_get(f->s, "web", &d), -ENOENT);
        insert_deployment(f->s, "web");
        assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
        assert_string_equal(d.name, "web");
        assert_string_equal(d.file, "/srv/web.deploy");
        assert_string_equal(d.image_id, "ami-0123456789abcdef0");
        assert_string_equal(d.image_ref, "web@1.0.0");
        assert_string_equal(d.version, "1.0.0");
        assert_int_equal(d.state, STATE_DEPLOYMENT_DEPLOYING);
        assert_null(d.reason);
        assert_true(d.updated_ms > 1600000000000);

        /* upsert replaces every field */
        free(d.version);
        d.version = strdup("1.0.1");
        free(d.image_ref);
        d.image_ref = NULL;
        d.state = STATE_DEPLOYMENT_DEPLOYED;
        assert_int_equal(state_deployment_upsert(f->s, &d), 0);
        state_deployment_done(&d);
        assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
        assert_string_equal(d.version, "1.0.1");
        assert_null(d.image_ref);
        assert_int_equal(d.state, STATE_DEPLOYMENT_DEPLOYED);
        state_deployment_done(&d);

        assert_int_equal(state_deployment_set_state(f->s, "web", STATE_DEPLOYMENT_FAILED,
                                                    "i-0123456789abcdef0 did not become healthy in 300 s"),
                         0);
        assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
        assert_int_equal(d.state, STATE_DEPLOYMENT_FAILED);
        assert_string_equal(d.reason, "i-0123456789abcdef0 did not become healthy in 300 s");
        state_deployment_done(&d);
        assert_int_equal(state_deployment_set_state(f->s, "web", STATE_DEPLOYMENT_DEPLOYED, NULL), 0);
        assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
        assert_null(d.reason);
        state_deployment_done(&d);

        assert_int_equal(state_deployment_set_state(f->s, "nope", STATE_DEPLOYMENT_FAILED, NULL), -ENOENT);
        quiet();
        assert_int_equal(state_deployment_set_state(f->s, "web", _STATE_DEPLOYMENT_MAX, NULL), -EINVAL);
        d = (struct state_deployment){ .name = (char *)"x", .state = _STATE_DEPLOYMENT_INVALID };
        assert_int_equal(state_deployment_upsert(f->s, &d), -EINVAL);
        loud();

        insert_deployment(f->s, "api");
        assert_int_equal(state_deployment_list(f->s, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].name, "api");
        assert_string_equal(list[1].name, "web");
        state_deployments_free(list, n);
}

static void test_history(void **state)
{
        struct fixture *f = *state;
        struct state_history_entry *h = NULL;
        size_t n = 99;
        int64_t seq = 0;

        assert_int_equal(state_history_list(f->s, "web", &h, &n), 0);
        assert_int_equal(n, 0);
        assert_null(h);

        /* history belongs to a deployment that exists */
        quiet();
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000001", "1.0.0", &seq), -ENOENT);
        loud();
        assert_logged("cannot append to a deployment's history in '");
        assert_logged(state_path(f->s));
        assert_logged("FOREIGN KEY constraint failed");

        insert_deployment(f->s, "web");
        insert_deployment(f->s, "api");
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000001", "1.0.0", &seq), 0);
        assert_int_equal(seq, 1);
        assert_int_equal(state_history_append(f->s, "api", "ami-0000000000000000a", "2.0", &seq), 0);
        assert_int_equal(seq, 1);
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000002", "1.0.1", &seq), 0);
        assert_int_equal(seq, 2);
        /* a rollback is a deploy like any other: it appends */
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000001", "1.0.0", NULL), 0);

        assert_int_equal(state_history_list(f->s, "web", &h, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(h[0].seq, 3);
        assert_string_equal(h[0].image_id, "ami-00000000000000001");
        assert_int_equal(h[1].seq, 2);
        assert_string_equal(h[1].image_id, "ami-00000000000000002");
        assert_string_equal(h[1].version, "1.0.1");
        assert_int_equal(h[2].seq, 1);
        assert_true(h[0].deployed_at_ms >= h[2].deployed_at_ms);
        state_history_free(h, n);

        assert_int_equal(state_history_list(f->s, "api", &h, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(h[0].version, "2.0");
        state_history_free(h, n);
}

static void test_instance_id(void **state _unused_)
{
        char ids[200][STATE_INSTANCE_ID_MAX];

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                assert_int_equal(state_new_instance_id(ids[i]), 0);
                assert_int_equal(strlen(ids[i]), 19);
                assert_true(state_instance_id_is_valid(ids[i]));
                for (size_t j = 0; j < i; j++)
                        assert_string_not_equal(ids[i], ids[j]);
        }
        assert_true(state_instance_id_is_valid("i-0123456789abcdef0"));
        assert_false(state_instance_id_is_valid("i-0123456789abcdef"));
        assert_false(state_instance_id_is_valid("i-0123456789abcdef00"));
        assert_false(state_instance_id_is_valid("i-0123456789ABCDEF0"));
        assert_false(state_instance_id_is_valid("x-0123456789abcdef0"));
        assert_false(state_instance_id_is_valid(NULL));
}

static void test_instances(void **state)
{
        struct fixture *f = *state;
        struct state_instance a, b, c, got = {}, *list = NULL;
        size_t n = 0;

        insert_deployment(f->s, "web");
        insert_deployment(f->s, "api");
        make_instance(&a, "web", 0, STATE_INSTANCE_STARTING);
        make_instance(&b, "web", 1, STATE_INSTANCE_STARTING);
        make_instance(&c, "api", 0, STATE_INSTANCE_RUNNING);
        c.n_ports = 0;
        c.ports = NULL;
        c.dir = NULL;
        assert_int_equal(state_instance_insert(f->s, &b), 0);
        assert_int_equal(state_instance_insert(f->s, &a), 0);
        assert_int_equal(state_instance_insert(f->s, &c), 0);

        assert_int_equal(state_instance_get(f->s, a.id, &got), 0);
        assert_string_equal(got.id, a.id);
        assert_string_equal(got.deployment, "web");
        assert_string_equal(got.image_id, "ami-0123456789abcdef0");
        assert_string_equal(got.version, "1.0.0");
        assert_int_equal(got.slot, 0);
        assert_int_equal(got.n_ports, 2);
        assert_int_equal(got.ports[0].guest, 80);
        assert_int_equal(got.ports[0].host, 8080);
        assert_int_equal(got.ports[1].guest, 22);
        assert_int_equal(got.ports[1].host, 2200);
        assert_string_equal(got.dir, "/run/x");
        assert_int_equal(got.pid, 0);
        assert_int_equal(got.state, STATE_INSTANCE_STARTING);
        assert_null(got.health);
        assert_true(got.created_ms > 0 && got.created_ms == got.updated_ms);
        state_instance_done(&got);

        assert_int_equal(state_instance_get(f->s, c.id, &got), 0);
        assert_int_equal(got.n_ports, 0);
        assert_null(got.dir);
        state_instance_done(&got);

        assert_int_equal(state_instance_update(f->s, a.id, STATE_INSTANCE_HEALTHY, 4242, "GET / 200"), 0);
        assert_int_equal(state_instance_get(f->s, a.id, &got), 0);
        assert_int_equal(got.state, STATE_INSTANCE_HEALTHY);
        assert_int_equal(got.pid, 4242);
        assert_string_equal(got.health, "GET / 200");
        assert_true(got.updated_ms >= got.created_ms);
        state_instance_done(&got);
        assert_int_equal(state_instance_update(f->s, a.id, STATE_INSTANCE_UNHEALTHY, 4242, NULL), 0);
        assert_int_equal(state_instance_get(f->s, a.id, &got), 0);
        assert_null(got.health);
        state_instance_done(&got);

        /* list all: by deployment, then slot */
        assert_int_equal(state_instance_list(f->s, NULL, &list, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(list[0].id, c.id);
        assert_string_equal(list[1].id, a.id);
        assert_string_equal(list[2].id, b.id);
        state_instances_free(list, n);
        assert_int_equal(state_instance_list(f->s, "web", &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].id, a.id);
        state_instances_free(list, n);
        assert_int_equal(state_instance_list(f->s, "none", &list, &n), 0);
        assert_int_equal(n, 0);
        state_instances_free(list, n);

        /* errors */
        quiet();
        assert_int_equal(state_instance_insert(f->s, &a), -EEXIST);
        make_instance(&got, "nope", 5, STATE_INSTANCE_STARTING);
        assert_int_equal(state_instance_insert(f->s, &got), -ENOENT);
        make_instance(&got, "web", 5, _STATE_INSTANCE_MAX);
        assert_int_equal(state_instance_insert(f->s, &got), -EINVAL);
        make_instance(&got, "web", 5, STATE_INSTANCE_STARTING);
        strcpy(got.id, "i-XYZ");
        assert_int_equal(state_instance_insert(f->s, &got), -EINVAL);
        loud();
        assert_int_equal(state_instance_get(f->s, "i-00000000000000000", &got), -ENOENT);
        assert_int_equal(state_instance_update(f->s, "i-00000000000000000", STATE_INSTANCE_STOPPED, 0, NULL), -ENOENT);
        assert_int_equal(state_instance_delete(f->s, "i-00000000000000000"), -ENOENT);

        assert_int_equal(state_instance_delete(f->s, a.id), 0);
        assert_int_equal(state_instance_get(f->s, a.id, &got), -ENOENT);
        assert_int_equal(state_instance_delete(f->s, a.id), -ENOENT);
}

static void test_slots(void **state)
{
        struct fixture *f = *state;
        struct state_instance i, j;
        unsigned slot = 99;

        insert_deployment(f->s, "web");
        insert_deployment(f->s, "api");
        assert_int_equal(state_allocate_slot(f->s, "web", 3, &slot), 0);
        assert_int_equal(slot, 0);

        make_instance(&i, "web", 0, STATE_INSTANCE_HEALTHY);
        assert_int_equal(state_instance_insert(f->s, &i), 0);
        make_instance(&i, "web", 2, STATE_INSTANCE_HEALTHY);
        assert_int_equal(state_instance_insert(f->s, &i), 0);
        /* the lowest gap */
        assert_int_equal(state_allocate_slot(f->s, "web", 3, &slot), 0);
        assert_int_equal(slot, 1);
        /* another deployment's slots are its own */
        assert_int_equal(state_allocate_slot(f->s, "api", 3, &slot), 0);
        assert_int_equal(slot, 0);

        make_instance(&j, "web", 1, STATE_INSTANCE_STARTING);
        assert_int_equal(state_instance_insert(f->s, &j), 0);
        quiet();
        assert_int_equal(state_allocate_slot(f->s, "web", 3, &slot), -ENOSPC);
        /* two live instances never share a slot */
        make_instance(&i, "web", 1, STATE_INSTANCE_STARTING);
        assert_int_equal(state_instance_insert(f->s, &i), -EEXIST);
        loud();

        /* a stopped or failed instance gives its slot back */
        assert_int_equal(state_instance_update(f->s, j.id, STATE_INSTANCE_STOPPED, 0, NULL), 0);
        assert_int_equal(state_allocate_slot(f->s, "web", 3, &slot), 0);
        assert_int_equal(slot, 1);
        assert_int_equal(state_instance_insert(f->s, &i), 0);
        assert_int_equal(state_instance_update(f->s, i.id, STATE_INSTANCE_FAILED, 0, "boot timeout"), 0);
        assert_int_equal(state_allocate_slot(f->s, "web", 3, &slot), 0);
        assert_int_equal(slot, 1);
        /* with more slots allowed, the next one past the last */
        make_instance(&i, "web", 1, STATE_INSTANCE_RUNNING);
        assert_int_equal(state_instance_insert(f->s, &i), 0);
        assert_int_equal(state_allocate_slot(f->s, "web", 4, &slot), 0);
        assert_int_equal(slot, 3);
}

static void test_transactions(void **state)
{
        struct fixture *f = *state;
        struct state_deployment d;
        struct state_history_entry *h = NULL;
        size_t n;

        /* a rolled back transaction leaves nothing */
        assert_int_equal(state_begin(f->s), 0);
        insert_deployment(f->s, "web");
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000001", "1", NULL), 0);
        quiet();
        assert_int_equal(state_begin(f->s), -EBUSY);
        loud();
        assert_int_equal(state_rollback(f->s), 0);
        assert_int_equal(state_deployment_get(f->s, "web", &d), -ENOENT);
        assert_int_equal(state_history_list(f->s, "web", &h, &n), 0);
        assert_int_equal(n, 0);
        /* rollback without a transaction is harmless */
        assert_int_equal(state_rollback(f->s), 0);

        /* a committed one keeps everything */
        assert_int_equal(state_begin(f->s), 0);
        insert_deployment(f->s, "web");
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000001", "1", NULL), 0);
        assert_int_equal(state_history_append(f->s, "web", "ami-00000000000000002", "2", NULL), 0);
        assert_int_equal(state_deployment_set_state(f->s, "web", STATE_DEPLOYMENT_DEPLOYED, NULL), 0);
        assert_int_equal(state_commit(f->s), 0);
        assert_int_equal(state_history_list(f->s, "web", &h, &n), 0);
        assert_int_equal(n, 2);
        state_history_free(h, n);
        assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
        assert_int_equal(d.state, STATE_DEPLOYMENT_DEPLOYED);
        state_deployment_done(&d);

        /* a failed step in its own transaction changes nothing */
        quiet();
        assert_int_equal(state_commit(f->s) < 0, 1);
        loud();

        /* closing with a transaction open rolls it back */
        assert_int_equal(state_begin(f->s), 0);
        insert_deployment(f->s, "api");
        f->s = state_close(f->s);
        assert_int_equal(state_open(f->dir, &f->s), 0);
        assert_int_equal(state_deployment_get(f->s, "api", &d), -ENOENT);
}

/* Another ingot holding the write lock: we wait, then see -EBUSY. */
static void test_busy(void **state)
{
        struct fixture *f = *state;
        _cleanup_free_ char *path = NULL;
        sqlite3 *db;
        pid_t pid;
        int p[2], status;
        char c;

        assert_true(asprintf(&path, "%s/state.db", f->dir) >= 0);
        /* no SQLite connection may cross a fork */
        f->s = state_close(f->s);
        assert_int_equal(pipe(p), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                /* holds the lock 12 s, more than the busy timeout */
                if (sqlite3_open(path, &db) != SQLITE_OK ||
                    sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
                        _exit(1);
                if (write(p[1], "x", 1) != 1)
                        _exit(1);
                sleep(12);
                _exit(0);
        }
        close(p[1]);
        assert_int_equal(read(p[0], &c, 1), 1);
        close(p[0]);
        assert_int_equal(state_open(f->dir, &f->s), 0);
        quiet();
        assert_int_equal(state_set_busy_timeout(f->s, 200), 0);
        assert_int_equal(state_begin(f->s), -EBUSY);
        {
                struct state_deployment d = { .name = (char *)"web", .state = STATE_DEPLOYMENT_DEPLOYING };
                assert_int_equal(state_deployment_upsert(f->s, &d), -EBUSY);
        }
        loud();
        assert_logged("database is locked");
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        /* the lock died with its holder */
        insert_deployment(f->s, "web");
}

#define KILL_ROUNDS 4

/* The child commits transaction k (one history row seq k and the
 * deployment's version set to k, together) and then writes one byte. */
static _noreturn_ void kill_child(const char *dir, int fd)
{
        struct state *s = NULL;

        log_set_level(LOG_LEVEL_QUIET);
        if (state_open(dir, &s) < 0)
                _exit(1);
        for (int64_t k = 1;; k++) {
                char version[32];
                struct state_deployment d = {
                        .name = (char *)"web",
                        .image_id = (char *)"ami-00000000000000001",
                        .version = version,
                        .state = STATE_DEPLOYMENT_DEPLOYING,
                };
                struct state_instance i = {};

                snprintf(version, sizeof(version), "%" PRId64, k);
                if (state_begin(s) < 0 || state_deployment_upsert(s, &d) < 0 ||
                    state_history_append(s, "web", "ami-00000000000000001", version, NULL) < 0)
                        _exit(2);
                /* and some churn in the instances table */
                i = (struct state_instance){ .deployment = (char *)"web",
                                             .image_id = (char *)"ami-00000000000000001",
                                             .slot = (unsigned)(k % 3),
                                             .state = STATE_INSTANCE_STARTING };
                if (state_new_instance_id(i.id) < 0)
                        _exit(3);
                if (k % 3 == 0) {
                        struct state_instance *l = NULL;
                        size_t n = 0;

                        if (state_instance_list(s, "web", &l, &n) < 0)
                                _exit(4);
                        for (size_t x = 0; x < n; x++)
                                if (state_instance_delete(s, l[x].id) < 0)
                                        _exit(5);
                        state_instances_free(l, n);
                }
                if (state_instance_insert(s, &i) < 0 || state_commit(s) < 0)
                        _exit(6);
                if (write(fd, "c", 1) != 1)
                        _exit(7);
        }
}

/* After n commits of kill_child: every third deletes all, each inserts one. */
static size_t expected_instances(size_t n)
{
        return n < 3 ? n : n - (n / 3) * 3 + 1;
}

static void test_kill(void **state)
{
        struct fixture *f = *state;
        /* commits to see before the kill in each round, then killed mid-flight */
        static const int after[KILL_ROUNDS] = { 1, 17, 40, 5 };
        int64_t acked = 0;

        f->s = state_close(f->s);
        for (int round = 0; round < KILL_ROUNDS; round++) {
                int p[2], status;
                pid_t pid;
                int seen = 0;
                char c;

                assert_int_equal(pipe(p), 0);
                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        close(p[0]);
                        kill_child(f->dir, p[1]);
                }
                close(p[1]);
                while (seen < after[round] && read(p[0], &c, 1) == 1)
                        seen++;
                assert_int_equal(seen, after[round]);
                /* mid-transaction most of the time: the child never pauses */
                if (round % 2)
                        usleep(1000 * (unsigned)round);
                kill(pid, SIGKILL);
                assert_int_equal(waitpid(pid, &status, 0), pid);
                assert_true(WIFSIGNALED(status));
                /* bytes written before the kill are commits too */
                while (read(p[0], &c, 1) == 1)
                        seen++;
                close(p[0]);
                acked = seen;

                /* reopen: the database is whole and holds a prefix */
                {
                        _cleanup_free_ char *check = query1(f->dir, "PRAGMA integrity_check");
                        _cleanup_free_ char *fk = query1(f->dir, "PRAGMA foreign_key_check");
                        struct state_history_entry *h = NULL;
                        struct state_instance *l = NULL;
                        struct state_deployment d;
                        size_t n = 0, m = 0;

                        assert_string_equal(check, "ok");
                        assert_null(fk);
                        assert_int_equal(state_open(f->dir, &f->s), 0);
                        assert_int_equal(state_history_list(f->s, "web", &h, &n), 0);
                        /* every acknowledged commit is there, and at most the
                         * one in flight on top */
                        assert_true((int64_t)n >= acked && (int64_t)n <= acked + 1);
                        for (size_t x = 0; x < n; x++) {
                                char v[32];

                                assert_int_equal(h[x].seq, (int64_t)(n - x));
                                snprintf(v, sizeof(v), "%zu", n - x);
                                assert_string_equal(h[x].version, v);
                        }
                        assert_int_equal(state_deployment_get(f->s, "web", &d), 0);
                        assert_int_equal(atoll(d.version), (long long)n);
                        state_deployment_done(&d);
                        assert_int_equal(state_instance_list(f->s, "web", &l, &m), 0);
                        assert_int_equal(m, expected_instances(n));
                        state_instances_free(l, m);
                        state_history_free(h, n);

                        /* start the next round from an empty database */
                        f->s = state_close(f->s);
                        assert_int_equal(rm_rf(f->dir), 0);
                        assert_int_equal(mkdir(f->dir, 0700), 0);
                }
        }
        assert_int_equal(state_open(f->dir, &f->s), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_default_dir),
                cmocka_unit_test(test_enums),
                cmocka_unit_test(test_instance_id),
                cmocka_unit_test_setup_teardown(test_open, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cloexec, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_deployments, setup, teardown),
                cmocka_unit_test_setup_teardown(test_history, setup, teardown),
                cmocka_unit_test_setup_teardown(test_instances, setup, teardown),
                cmocka_unit_test_setup_teardown(test_slots, setup, teardown),
                cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
                cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kill, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
