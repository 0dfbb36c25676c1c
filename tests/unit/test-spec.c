/* Unit tests for the spec: template + kickstart resolved into one plan,
 * the cross-file checks (each a file:line error), determinism of the plan,
 * and that no password hash reaches it. Inputs are written to a temporary
 * directory per test. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/log.h"
#include "shared/strv.h"
#include "spec.h"

struct fixture {
        char dir[64];
        FILE *log;
};

static const char base_template[] = "[Image]\n"
                                    "Name=test\n"
                                    "SourceDateEpoch=1700000000\n"
                                    "[Rootfs]\n"
                                    "Source=mmdebstrap\n"
                                    "Suite=bookworm\n"
                                    "Packages=systemd linux-image-amd64 vim\n"
                                    "[Kernel]\n"
                                    "Package=linux-image-amd64\n"
                                    "CommandLine=console=ttyS0\n"
                                    "[Boot]\n"
                                    "Mode=both\n"
                                    "[Disk]\n"
                                    "Size=1G\n"
                                    "EspSize=64M\n";

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        strcpy(f->dir, "/tmp/ingot-spec-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->log = tmpfile();
        assert_non_null(f->log);
        log_set_stream(f->log);
        unsetenv("SOURCE_DATE_EPOCH");
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];

        log_set_stream(NULL);
        fclose(f->log);
        /* the directory holds only files this test wrote */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static char *write_input(struct fixture *f, const char *name, const char *content)
{
        char *path;
        FILE *o;

        assert_true(asprintf(&path, "%s/%s", f->dir, name) > 0);
        o = fopen(path, "we");
        assert_non_null(o);
        fputs(content, o);
        assert_int_equal(fclose(o), 0);
        return path;
}

/* Everything logged since the last call. */
static char *logged(struct fixture *f)
{
        static char buf[4096];
        size_t n;

        fflush(f->log);
        rewind(f->log);
        n = fread(buf, 1, sizeof(buf) - 1, f->log);
        buf[n] = '\0';
        rewind(f->log);
        assert_int_equal(ftruncate(fileno(f->log), 0), 0);
        return buf;
}

static int load(struct fixture *f, const char *tmpl, const char *ks, const char *version, struct spec **ret)
{
        _cleanup_free_ char *tp = write_input(f, "t.conf", tmpl);
        _cleanup_free_ char *kp = ks ? write_input(f, "k.ks", ks) : NULL;
        struct spec_options o = { .template = tp, .kickstart = kp, .version = version };

        return spec_load(&o, ret);
}

/* Loads and expects -EBADMSG with a message matching "k.ks:LINE: <substr>". */
static void expect_error(struct fixture *f, const char *tmpl, const char *ks, const char *where, const char *what)
{
        struct spec *s = NULL;
        char *msg;

        assert_int_equal(load(f, tmpl, ks, "1.0", &s), -EBADMSG);
        assert_null(s);
        msg = logged(f);
        if (!strstr(msg, where) || !strstr(msg, what))
                fail_msg("expected '%s' ... '%s', got: %s", where, what, msg);
}

static void test_template_only(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = NULL;

        assert_int_equal(load(f, base_template, NULL, "1.0.0", &s), 0);
        assert_string_equal(s->name, "test");
        assert_string_equal(s->version, "1.0.0");
        assert_int_equal(s->source_date_epoch, 1700000000);
        assert_int_equal(s->layout->n_entries, 3);
        assert_int_equal(s->layout->entries[0].role, PART_ROLE_BIOS_BOOT);
        assert_int_equal(s->layout->entries[1].role, PART_ROLE_ESP);
        assert_int_equal(s->layout->entries[1].size, UINT64_C(64) << 20);
        assert_int_equal(s->layout->entries[2].role, PART_ROLE_ROOT);
        assert_string_equal(s->layout->entries[2].fstype, "ext4");
        assert_non_null(strstr(s->cmdline, "console=ttyS0 root=PARTUUID="));
        assert_non_null(strstr(s->cmdline, " ro"));
        assert_string_equal(s->output_image, "./test-1.0.0.raw");
        assert_string_equal(s->output_manifest, "./test-1.0.0.manifest.json");
        assert_string_equal(logged(f), "");
}

static void test_kickstart_layout_and_packages(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *s = NULL;
        char uuid[ID128_STRING_MAX];
        const char *ks = "part / --size=300 --fstype=ext4 --label=rootfs\n"
                         "part /var --size=100 --grow\n"
                         "part swap --size=64 --fstype=swap\n"
                         "bootloader --append=\"quiet splash\"\n"
                         "rootpw --lock\n"
                         "%packages\n"
                         "nginx\n"
                         "-vim\n"
                         "%end\n";

        assert_int_equal(load(f, base_template, ks, "1.0.0", &s), 0);
        /* the boot partitions the mode needs come first, then the kickstart's */
        assert_int_equal(s->layout->n_entries, 5);
        assert_int_equal(s->layout->entries[0].role, PART_ROLE_BIOS_BOOT);
        assert_int_equal(s->layout->entries[1].role, PART_ROLE_ESP);
        assert_int_equal(s->layout->entries[2].role, PART_ROLE_ROOT);
        assert_int_equal(s->layout->entries[2].size, UINT64_C(300) << 20);
        /* the sealed root: read-only, named and labelled with the version stamp */
        assert_string_equal(s->layout->entries[2].label, "test_1.0.0");
        assert_string_equal(s->layout->entries[2].name, "test_1.0.0");
        assert_true(s->layout->entries[2].read_only);
        assert_false(s->layout->entries[3].read_only);
        assert_non_null(strstr(s->cmdline, " ro"));
        assert_null(strstr(s->cmdline, " rw"));
        assert_int_equal(s->layout->entries[3].role, PART_ROLE_VAR);
        assert_int_equal(s->layout->entries[4].role, PART_ROLE_SWAP);
        /* /var grew into everything the others left */
        assert_int_equal(s->layout->entries[4].start + s->layout->entries[4].size, s->layout->last_usable);

        id128_to_string(&s->layout->entries[2].uuid, uuid);
        assert_non_null(strstr(s->cmdline, uuid));
        assert_non_null(strstr(s->cmdline, " quiet splash"));

        assert_true(strv_contains(s->packages, "systemd"));
        assert_true(strv_contains(s->packages, "nginx"));
        assert_false(strv_contains(s->packages, "vim"));
        assert_true(strv_contains(s->packages_excluded, "vim"));
}

static void test_plan_is_deterministic(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *a = NULL, *b = NULL, *c = NULL;
        const char *ks = "user --name=ops --password=hunter2 --plaintext\nrootpw --plaintext s3cret\n";
        _cleanup_free_ char *ja = NULL, *jb = NULL, *jc = NULL;
        json_t *j;

        assert_int_equal(load(f, base_template, ks, "1.0.0", &a), 0);
        assert_int_equal(load(f, base_template, ks, "1.0.0", &b), 0);
        assert_int_equal(load(f, base_template, ks, "1.0.1", &c), 0);
        j = spec_plan_to_json(a);
        ja = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        j = spec_plan_to_json(b);
        jb = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        j = spec_plan_to_json(c);
        jc = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        assert_string_equal(ja, jb);
        assert_string_not_equal(ja, jc);
        assert_memory_equal(a->seed, b->seed, 32);
        assert_memory_not_equal(a->seed, c->seed, 32);
        assert_false(id128_equal(&a->layout->disk_uuid, &c->layout->disk_uuid));

        /* hashes are computed, stable, and never in the plan */
        assert_non_null(a->kickstart->users[0].password_hash);
        assert_string_equal(a->kickstart->users[0].password_hash, b->kickstart->users[0].password_hash);
        assert_null(strstr(ja, a->kickstart->users[0].password_hash));
        assert_null(strstr(ja, a->kickstart->rootpw_hash));
        assert_null(strstr(ja, "hunter2"));
        assert_null(strstr(ja, "s3cret"));
        assert_null(strstr(ja, "$y$"));
        assert_non_null(strstr(ja, "\"password\": \"yescrypt\""));
}

static void test_source_date_epoch(void **state)
{
        struct fixture *f = *state;
        _cleanup_(spec_freep) struct spec *a = NULL, *b = NULL;

        setenv("SOURCE_DATE_EPOCH", "1234567890", 1);
        assert_int_equal(load(f, base_template, NULL, "1.0.0", &a), 0);
        assert_int_equal(a->source_date_epoch, 1234567890);
        setenv("SOURCE_DATE_EPOCH", "12x", 1);
        assert_int_equal(load(f, base_template, NULL, "1.0.0", &b), -EBADMSG);
        assert_non_null(strstr(logged(f), "invalid SOURCE_DATE_EPOCH '12x'"));
        unsetenv("SOURCE_DATE_EPOCH");
}

static void test_version(void **state)
{
        struct fixture *f = *state;
        struct spec *s = NULL;

        assert_true(spec_version_is_valid("1.0.0"));
        assert_true(spec_version_is_valid("2024.05_rc-1"));
        assert_false(spec_version_is_valid(""));
        assert_false(spec_version_is_valid("1.0 beta"));
        assert_false(spec_version_is_valid("V1"));
        assert_false(spec_version_is_valid("."));
        assert_false(spec_version_is_valid(".."));
        assert_false(spec_version_is_valid("-x"));
        assert_false(spec_version_is_valid(".1"));
        assert_false(spec_version_is_valid("1/2"));
        assert_true(spec_version_is_valid("1.01234567890123456789012345678901234567890123456789012345678901"));
        assert_false(spec_version_is_valid("1.012345678901234567890123456789012345678901234567890123456789012"));
        assert_int_equal(load(f, base_template, NULL, "1.0 beta", &s), -EBADMSG);
        assert_non_null(strstr(logged(f), "invalid version '1.0 beta'"));
        assert_int_equal(load(f, base_template, NULL, NULL, &s), -EBADMSG);
        assert_non_null(strstr(logged(f), "no image version"));
        assert_null(s);
}

static void test_cmdline_owned_word(void **state)
{
        static const struct {
                const char *cmdline, *word;
        } cases[] = {
                { "", NULL },
                { "console=ttyS0 quiet", NULL },
                { "rootwait rootdelay=2 initrd=x rwx rox", NULL },
                { "quiet root=/dev/sda1", "root=/dev/sda1" },
                { "init=/bin/sh", "init=/bin/sh" },
                { "a rdinit=/bin/sh b", "rdinit=/bin/sh" },
                { "rootflags=x", "rootflags=x" },
                { "rootfstype=ext2", "rootfstype=ext2" },
                { "roothash=00", "roothash=00" },
                { "\trw", "rw" },
                { "quiet ro", "ro" },
                { "systemd.verity_root_data=/dev/x", "systemd.verity_root_data=/dev/x" },
                { "rd.systemd.verity=1", "rd.systemd.verity=1" },
                { "ingot.verity.roothash=00 quiet", "ingot.verity.roothash=00" },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                size_t n = 0;
                const char *w = spec_cmdline_owned_word(cases[i].cmdline, &n);

                if (!cases[i].word) {
                        assert_null(w);
                        continue;
                }
                assert_non_null(w);
                assert_int_equal(n, strlen(cases[i].word));
                assert_memory_equal(w, cases[i].word, n);
        }
}

static void test_cross_checks(void **state)
{
        struct fixture *f = *state;

        expect_error(f, base_template, "part / --size=100\npart /var --size=10\npart / --size=5\n",
                     "k.ks:3: duplicate partition for '/'", "k.ks:1");
        expect_error(f, base_template, "part / --size=100 --fstype=xfs\n", "k.ks:1:", "--fstype=xfs is not supported");
        expect_error(f, base_template, "part / --size=100\npart /boot/efi --size=64 --fstype=ext4\n",
                     "k.ks:2:", "must be vfat");
        expect_error(f, base_template, "part /var --size=100\n", "k.ks:1:", "no root partition");
        expect_error(f, base_template, "part / --size=100\npart biosboot --size=1 --fstype=ext4\n",
                     "k.ks:2:", "biosboot");
        expect_error(f, base_template, "part / --size=100 --label=a-label-far-too-long\n", "k.ks:1:", "longer than");
        expect_error(f, base_template, "part / --size=900\npart /var --size=200\n", "t.conf:14:", "too small");
        expect_error(f, base_template, "user --name=ops\nsshkey --username=nobody \"ssh-ed25519 AAAA\"\n",
                     "k.ks:2:", "unknown user 'nobody'");
        expect_error(f, base_template, "user --name=root\n", "k.ks:1:", "use 'rootpw'");
}

static void test_missing_inputs(void **state)
{
        struct fixture *f = *state;
        struct spec *s = NULL;
        struct spec_options o = { .template = "/nonexistent/t.conf", .version = "1" };
        char *msg;

        assert_int_equal(spec_load(&o, &s), -EBADMSG);
        msg = logged(f);
        assert_non_null(strstr(msg, "/nonexistent/t.conf"));

        o.template = "no-such-template-name";
        assert_int_equal(spec_load(&o, &s), -EBADMSG);
        assert_non_null(strstr(logged(f), "no template 'no-such-template-name'"));
        assert_null(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_template_only, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kickstart_layout_and_packages, setup, teardown),
                cmocka_unit_test_setup_teardown(test_plan_is_deterministic, setup, teardown),
                cmocka_unit_test_setup_teardown(test_source_date_epoch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_version, setup, teardown),
                cmocka_unit_test(test_cmdline_owned_word),
                cmocka_unit_test_setup_teardown(test_cross_checks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_inputs, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
