/* test_outpath.c — output paths (include/flowdp/outpath.h): the checks before
 * any work (missing, read-only or non-directory parent, a directory as the path,
 * the path being an input through a symlink or a hard link even with force, an
 * existing file of another kind without force, FDP_OUT_DIR), the kind sniffing,
 * and the atomic write (new file, replacement, no temporary file left, an
 * aborted write leaving the old file intact). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flowdp/outpath.h"
#include "testutil.h"

static char g_dir[256];

static const char *in_dir(const char *name) {
    static char buf[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void put(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* whole file into buf (at most len bytes); returns the size */
static size_t get(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, len, f);
    fclose(f);
    return n;
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static const unsigned char PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const unsigned char H5_SIG[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_kinds(void **state) {
    (void)state;
    put(in_dir("a.png"), PNG_SIG, 8);
    put(in_dir("a.h5"), H5_SIG, 8);
    put(in_dir("a.json"), " \n\t{\"x\": 1}\n", 12);
    put(in_dir("a.txt"), "hello\n", 6);
    unsigned char ub[520] = {0}; /* an HDF5 file with a 512-byte user block */
    memcpy(ub + 512, H5_SIG, 8);
    put(in_dir("ub.h5"), ub, sizeof ub);
    assert_int_equal(fdp_out_is_kind(in_dir("a.png"), FDP_OUT_PNG), 1);
    assert_int_equal(fdp_out_is_kind(in_dir("a.png"), FDP_OUT_HDF5), 0);
    assert_int_equal(fdp_out_is_kind(in_dir("a.h5"), FDP_OUT_HDF5), 1);
    assert_int_equal(fdp_out_is_kind(in_dir("ub.h5"), FDP_OUT_HDF5), 1);
    assert_int_equal(fdp_out_is_kind(in_dir("a.h5"), FDP_OUT_JSON), 0);
    assert_int_equal(fdp_out_is_kind(in_dir("a.json"), FDP_OUT_JSON), 1);
    assert_int_equal(fdp_out_is_kind(in_dir("a.txt"), FDP_OUT_JSON), 0);
    assert_int_equal(fdp_out_is_kind(in_dir("a.txt"), FDP_OUT_ANY), 1);
    assert_int_equal(fdp_out_is_kind(g_dir, FDP_OUT_DIR), 1);
    assert_int_equal(fdp_out_is_kind(in_dir("a.txt"), FDP_OUT_DIR), 0);
    assert_int_equal(fdp_out_is_kind(in_dir("missing"), FDP_OUT_PNG), -1);
}

static void test_check_ok(void **state) {
    (void)state;
    fdp_err err = {{0}};
    put(in_dir("old.png"), PNG_SIG, 8);
    put(in_dir("empty.png"), "", 0);
    put(in_dir("in.h5"), H5_SIG, 8);
    fdp_out_input in[] = {{in_dir("in.h5"), "the input checkpoint"}, {NULL, "nothing"}};
    assert_int_equal(fdp_out_check("-o", in_dir("new.png"), FDP_OUT_PNG, 0, in, 2, &err), 0);
    assert_int_equal(fdp_out_check("-o", in_dir("old.png"), FDP_OUT_PNG, 0, in, 2, &err), 0);
    assert_int_equal(fdp_out_check("-o", in_dir("empty.png"), FDP_OUT_PNG, 0, in, 2, &err), 0);
    assert_int_equal(fdp_out_check(NULL, in_dir("x.h5"), FDP_OUT_HDF5, 0, NULL, 0, &err), 0);
    assert_int_equal(count_entries(g_dir), 3); /* the probe file is gone */
}

static void test_check_refusals(void **state) {
    (void)state;
    fdp_err err = {{0}};
    put(in_dir("in.h5"), H5_SIG, 8);
    put(in_dir("notes.txt"), "notes\n", 6);
    assert_int_equal(link(in_dir("in.h5"), in_dir("hard.h5")), 0);
    assert_int_equal(symlink(in_dir("in.h5"), in_dir("soft.h5")), 0);
    fdp_out_input in[] = {{in_dir("in.h5"), "the input checkpoint"}};

    /* the input itself, through a hard link, through a symlink: even with force */
    assert_int_equal(fdp_out_check("--json", in_dir("in.h5"), FDP_OUT_JSON, 1, in, 1, &err), -1);
    assert_non_null(strstr(err.msg, "in.h5: is the input checkpoint; choose another file"));
    assert_non_null(strstr(err.msg, "--json "));
    assert_int_equal(fdp_out_check("-o", in_dir("hard.h5"), FDP_OUT_HDF5, 1, in, 1, &err), -1);
    assert_non_null(strstr(err.msg, "hard.h5: is the input checkpoint ("));
    assert_int_equal(fdp_out_check("-o", in_dir("soft.h5"), FDP_OUT_PNG, 1, in, 1, &err), -1);
    assert_non_null(strstr(err.msg, "is the input checkpoint"));

    /* another kind of file: refused without force, allowed with it */
    assert_int_equal(fdp_out_check("-o", in_dir("notes.txt"), FDP_OUT_PNG, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "-o "));
    assert_non_null(strstr(err.msg, "notes.txt: exists and is not a PNG file; pass --force to replace it"));
    assert_int_equal(fdp_out_check("-o", in_dir("in.h5"), FDP_OUT_JSON, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "is not a JSON file"));
    assert_int_equal(fdp_out_check("-o", in_dir("notes.txt"), FDP_OUT_HDF5, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "is not an HDF5 file"));
    assert_int_equal(fdp_out_check("-o", in_dir("notes.txt"), FDP_OUT_PNG, 1, NULL, 0, &err), 0);

    /* a directory, a missing parent, a parent that is a file, not a regular file */
    assert_int_equal(fdp_out_check("-o", g_dir, FDP_OUT_PNG, 1, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "is a directory"));
    assert_int_equal(fdp_out_check("-o", in_dir("newdir/"), FDP_OUT_PNG, 1, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "is a directory"));
    assert_int_equal(fdp_out_check("-o", in_dir("no/such/x.png"), FDP_OUT_PNG, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "/no/such: No such file or directory"));
    assert_non_null(strstr(err.msg, "cannot write into "));
    assert_int_equal(fdp_out_check("-o", in_dir("notes.txt/x.png"), FDP_OUT_PNG, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "Not a directory"));
    assert_int_equal(fdp_out_check("-o", "/dev/null", FDP_OUT_PNG, 1, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_int_equal(fdp_out_check("-o", "", FDP_OUT_PNG, 1, NULL, 0, &err), -1);
}

/* a read-only directory: by permission bits (non-root) or a read-only bind mount (root) */
static void test_check_read_only(void **state) {
    (void)state;
    fdp_err err = {{0}};
    const char *ro = in_dir("ro");
    assert_int_equal(mkdir(ro, 0755), 0);
    int mounted = 0;
    if (geteuid() == 0) {
        if (mount(ro, ro, NULL, MS_BIND, NULL) != 0 ||
            mount(NULL, ro, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0) {
            umount(ro);
            skip(); /* no mount permission (container) */
        }
        mounted = 1;
    } else {
        assert_int_equal(chmod(ro, 0555), 0);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/x.png", ro);
    int rc = fdp_out_check("-o", path, FDP_OUT_PNG, 1, NULL, 0, &err);
    if (mounted) umount(ro);
    chmod(ro, 0755);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, "cannot write into "));
    assert_true(strstr(err.msg, "Read-only file system") || strstr(err.msg, "Permission denied"));
}

static void test_check_dir_kind(void **state) {
    (void)state;
    fdp_err err = {{0}};
    put(in_dir("file"), "x", 1);
    assert_int_equal(fdp_out_check("checkpoint.dir", in_dir("a/b/c"), FDP_OUT_DIR, 0, NULL, 0, &err), 0);
    assert_int_equal(fdp_out_check("checkpoint.dir", g_dir, FDP_OUT_DIR, 0, NULL, 0, &err), 0);
    assert_int_equal(fdp_out_check("checkpoint.dir", in_dir("file"), FDP_OUT_DIR, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "exists and is not a directory"));
    assert_int_equal(fdp_out_check("checkpoint.dir", in_dir("file/sub"), FDP_OUT_DIR, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "Not a directory"));
}

static void test_atomic_write(void **state) {
    (void)state;
    fdp_err err = {{0}};
    char buf[64];
    const char *p = in_dir("out.json");
    assert_int_equal(fdp_out_write_file(p, "{\"a\": 1}\n", 9, &err), 0);
    assert_int_equal(get(p, buf, sizeof buf), 9);
    assert_memory_equal(buf, "{\"a\": 1}\n", 9);
    assert_int_equal(chmod(p, 0640), 0);
    assert_int_equal(fdp_out_write_file(p, "{}\n", 3, &err), 0); /* replaces, keeps the mode */
    assert_int_equal(get(p, buf, sizeof buf), 3);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(count_entries(g_dir), 1); /* no temporary file left */

    /* an aborted write leaves the old file as it was and no temporary file */
    fdp_out_file o;
    assert_int_equal(fdp_out_open(&o, p, &err), 0);
    assert_non_null(o.fp);
    fputs("{\"half", o.fp);
    fdp_out_abort(&o);
    assert_null(o.fp);
    assert_int_equal(get(p, buf, sizeof buf), 3);
    assert_int_equal(count_entries(g_dir), 1);

    /* open + commit */
    assert_int_equal(fdp_out_open(&o, p, &err), 0);
    fputs("{\"b\": 2}", o.fp);
    assert_int_equal(fdp_out_commit(&o, &err), 0);
    assert_int_equal(get(p, buf, sizeof buf), 8);
    assert_int_equal(count_entries(g_dir), 1);

    /* errors name the path and the reason */
    assert_int_equal(fdp_out_write_file(in_dir("no/such/x"), "x", 1, &err), -1);
    assert_non_null(strstr(err.msg, "no/such/x"));
    assert_non_null(strstr(err.msg, "No such file or directory"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_dir_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
