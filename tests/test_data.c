/* test_data.c — dataset readers (IDX plain and gzipped, CIFAR-10 binary), their
 * error messages on bad files, the distributed sampler (permutation, rank
 * slices, evaluation split), batch gathering, and the real Fashion-MNIST when
 * it is installed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "flowdp/data.h"
#include "flowdp/pack.h"
#include "flowdp/shards.h"
#include "testutil.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* ---- helpers: write files --------------------------------------------------- */

static char g_dir[512]; /* the temp dir of the running test */

static const char *tmp_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", g_dir, name);
    return buf;
}

static int setup_dir(void **state) {
    (void)state;
    char buf[512];
    char *d = tu_mkdtemp(buf, sizeof buf);
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown_dir(void **state) {
    (void)state;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_bytes(const char *path, const uint8_t *b, size_t len, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        if (len) assert_int_equal(gzwrite(f, b, (unsigned)len), (int)len);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        if (len) assert_int_equal(fwrite(b, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
    }
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint8_t pixel_of(int64_t i, int64_t j) { return (uint8_t)((i * 31 + j * 7 + 3) & 255); }

/* An IDX images file of n images h x w; `delta` bytes removed (< 0) or garbage
 * added (> 0) at the end; magic overridable. */
static void write_idx_images(const char *path, uint32_t magic, uint32_t n, uint32_t h, uint32_t w, int delta, int gz) {
    size_t payload = (size_t)n * h * w;
    size_t len = 16 + payload;
    uint8_t *b = calloc(len + (delta > 0 ? (size_t)delta : 0) + 1, 1);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < (size_t)h * w; j++) b[16 + i * h * w + j] = pixel_of((int64_t)i, (int64_t)j);
    for (int k = 0; k < delta; k++) b[len + (size_t)k] = 0xAB;
    write_bytes(path, b, (size_t)((int64_t)len + delta), gz);
    free(b);
}

static uint8_t label_of(int64_t i) { return (uint8_t)((i * 7 + 1) % 10); }

static void write_idx_labels(const char *path, uint32_t magic, uint32_t n, int delta, int gz) {
    size_t len = 8 + (size_t)n;
    uint8_t *b = calloc(len + (delta > 0 ? (size_t)delta : 0) + 1, 1);
    put_be32(b, magic);
    put_be32(b + 4, n);
    for (size_t i = 0; i < n; i++) b[8 + i] = label_of((int64_t)i);
    for (int k = 0; k < delta; k++) b[len + (size_t)k] = 0xCD;
    write_bytes(path, b, (size_t)((int64_t)len + delta), gz);
    free(b);
}

/* CIFAR record k (global numbering `first + k`) */
static uint8_t cifar_label(int64_t g) { return (uint8_t)(g % 10); }
static uint8_t cifar_pixel(int64_t g, int64_t j) { return (uint8_t)((g * 13 + j * 5 + (j / 1024) * 101) & 255); }

static void write_cifar(const char *path, int64_t first, int64_t records, int extra_bytes, int bad_record) {
    size_t len = (size_t)records * 3073 + (size_t)extra_bytes;
    uint8_t *b = calloc(len + 1, 1);
    for (int64_t k = 0; k < records; k++) {
        uint8_t *r = b + k * 3073;
        r[0] = k == bad_record ? 10 : cifar_label(first + k);
        for (int64_t j = 0; j < 3072; j++) r[1 + j] = cifar_pixel(first + k, j);
    }
    write_bytes(path, b, len, 0);
    free(b);
}

static void assert_msg_has(const fdp_err *e, const char *needle) {
    if (!strstr(e->msg, needle)) {
        print_error("error message \"%s\" lacks \"%s\"\n", e->msg, needle);
        fail();
    }
    assert_null(strchr(e->msg, '\n')); /* one line */
}

static void check_idx_contents(const fdp_dataset *d, int64_t n, int h, int w, int with_labels) {
    assert_int_equal(d->n, n);
    assert_int_equal(d->c, 1);
    assert_int_equal(d->h, h);
    assert_int_equal(d->w, w);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < (int64_t)h * w; j++) assert_int_equal(d->images[i * h * w + j], pixel_of(i, j));
    if (with_labels) {
        assert_non_null(d->labels);
        for (int64_t i = 0; i < n; i++) assert_int_equal(d->labels[i], label_of(i));
    } else {
        assert_null(d->labels);
    }
}

/* ---- IDX ---------------------------------------------------------------------- */

static void test_idx_roundtrip(void **state) {
    (void)state;
    char ip[600], lp[600];
    for (int gz = 0; gz <= 1; gz++) {
        tmp_path(ip, sizeof ip, gz ? "im.gz" : "im");
        tmp_path(lp, sizeof lp, gz ? "lb.gz" : "lb");
        write_idx_images(ip, 0x803, 7, 5, 3, 0, gz);
        write_idx_labels(lp, 0x801, 7, 0, gz);
        fdp_dataset d;
        fdp_err e = {{0}};
        assert_int_equal(fdp_idx_load(ip, lp, 0, &d, &e), 0);
        check_idx_contents(&d, 7, 5, 3, 1);
        assert_non_null(strstr(d.source, ip));
        fdp_dataset_free(&d);
        assert_null(d.images);
        fdp_dataset_free(&d); /* twice is fine */

        assert_int_equal(fdp_idx_load(ip, NULL, 3, &d, &e), 0); /* limit, no labels */
        check_idx_contents(&d, 3, 5, 3, 0);
        fdp_dataset_free(&d);
        assert_int_equal(fdp_idx_load(ip, lp, 100, &d, &e), 0); /* limit above n: all */
        check_idx_contents(&d, 7, 5, 3, 1);
        fdp_dataset_free(&d);
    }
    /* a larger gzipped file: the buffer grows over several reads (> 16 MiB) */
    tmp_path(ip, sizeof ip, "big.gz");
    write_idx_images(ip, 0x803, 300, 256, 256, 0, 1);
    fdp_dataset d;
    fdp_err e = {{0}};
    assert_int_equal(fdp_idx_load(ip, NULL, 0, &d, &e), 0);
    check_idx_contents(&d, 300, 256, 256, 0);
    fdp_dataset_free(&d);
}

static void expect_idx_error(const char *images, const char *labels, const char *needle1, const char *needle2) {
    fdp_dataset d;
    memset(&d, 0x5A, sizeof d);
    fdp_err e = {{0}};
    assert_int_equal(fdp_idx_load(images, labels, 0, &d, &e), -1);
    assert_null(d.images);
    assert_null(d.labels);
    assert_int_equal(d.n, 0);
    assert_msg_has(&e, needle1);
    if (needle2) assert_msg_has(&e, needle2);
}

static void test_idx_errors(void **state) {
    (void)state;
    char ip[600], lp[600], p[600];
    for (int gz = 0; gz <= 1; gz++) {
        /* wrong magic: a labels file given as the images */
        tmp_path(p, sizeof p, gz ? "magic.gz" : "magic");
        write_idx_labels(p, 0x801, 7, 0, gz);
        expect_idx_error(p, NULL, "wrong magic 0x00000801", p);
        write_idx_images(p, 0x0d03, 7, 5, 3, 0, gz);
        expect_idx_error(p, NULL, "wrong magic 0x00000d03", "expected 0x00000803");

        /* short file: 16 + 105 expected, 5 missing */
        tmp_path(p, sizeof p, gz ? "short.gz" : "short");
        write_idx_images(p, 0x803, 7, 5, 3, -5, gz);
        expect_idx_error(p, NULL, "file is short: expected 121", "found 116");
        /* shorter than the header */
        write_bytes(p, (const uint8_t *)"\0\0\x08", 3, gz);
        expect_idx_error(p, NULL, "file is short", p);

        /* trailing bytes */
        tmp_path(p, sizeof p, gz ? "trail.gz" : "trail");
        write_idx_images(p, 0x803, 7, 5, 3, 2, gz);
        expect_idx_error(p, NULL, "2 trailing bytes", "found 123");
        tmp_path(lp, sizeof lp, gz ? "trail_lb.gz" : "trail_lb");
        tmp_path(ip, sizeof ip, gz ? "ok.gz" : "ok");
        write_idx_images(ip, 0x803, 7, 5, 3, 0, gz);
        write_idx_labels(lp, 0x801, 7, 1, gz);
        expect_idx_error(ip, lp, "1 trailing bytes", lp);

        /* checked over the whole file even with a limit */
        tmp_path(p, sizeof p, gz ? "short_lim.gz" : "short_lim");
        write_idx_images(p, 0x803, 7, 5, 3, -1, gz);
        fdp_dataset d;
        fdp_err e = {{0}};
        assert_int_equal(fdp_idx_load(p, NULL, 2, &d, &e), -1);
        assert_msg_has(&e, "file is short");

        /* label count mismatch */
        tmp_path(lp, sizeof lp, gz ? "lb6.gz" : "lb6");
        write_idx_labels(lp, 0x801, 6, 0, gz);
        expect_idx_error(ip, lp, "holds 6 labels", "holds 7 images");
        /* the images file as labels */
        expect_idx_error(ip, ip, "wrong magic 0x00000803 for an IDX labels file", "(this is an IDX images file)");

        /* absurd sizes */
        tmp_path(p, sizeof p, gz ? "absurd.gz" : "absurd");
        write_idx_images(p, 0x803, 0, 5, 3, 0, gz);
        expect_idx_error(p, NULL, "declares 0 images", p);
        write_idx_images(p, 0x803, 2, 0, 3, 0, gz);
        expect_idx_error(p, NULL, "images of 0x3", p);
        uint8_t hdr[16];
        put_be32(hdr, 0x803);
        put_be32(hdr + 4, 0x80000001u); /* n = 2^31 + 1 */
        put_be32(hdr + 8, 28);
        put_be32(hdr + 12, 28);
        write_bytes(p, hdr, sizeof hdr, gz);
        expect_idx_error(p, NULL, "declares 2147483649 images", "1 .. 2^31");
        put_be32(hdr + 4, 0x80000000u); /* n = 2^31, 65536 x 65536: 2^63 bytes, no overflow, no huge allocation */
        put_be32(hdr + 8, 65536);
        put_be32(hdr + 12, 65536);
        write_bytes(p, hdr, sizeof hdr, gz);
        expect_idx_error(p, NULL, "file is short: expected 9223372036854775824", "found 16");
        put_be32(hdr + 8, 65537);
        write_bytes(p, hdr, sizeof hdr, gz);
        expect_idx_error(p, NULL, "images of 65537x65536", "1 .. 65536");
    }
    /* missing file */
    tmp_path(p, sizeof p, "does-not-exist");
    expect_idx_error(p, NULL, "cannot open", p);
    tmp_path(ip, sizeof ip, "ok");
    expect_idx_error(ip, p, "cannot open", p);
    /* a directory */
    expect_idx_error(g_dir, NULL, "not a regular file", g_dir);

    /* a truncated gzip stream (compressed bytes cut off) */
    tmp_path(ip, sizeof ip, "full.gz");
    write_idx_images(ip, 0x803, 50, 28, 28, 0, 1);
    FILE *f = fopen(ip, "rb");
    assert_non_null(f);
    uint8_t buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(len > 200 && len < sizeof buf);
    tmp_path(p, sizeof p, "cut.gz");
    write_bytes(p, buf, len / 2, 0);
    expect_idx_error(p, NULL, "truncated", p);
    /* corrupt compressed data */
    for (size_t i = 20; i < len - 20; i++) buf[i] ^= 0x5A;
    write_bytes(p, buf, len, 0);
    expect_idx_error(p, NULL, "gzip", p);
}

/* ---- CIFAR-10 ----------------------------------------------------------------- */

static void check_cifar(const fdp_dataset *d, int64_t first, int64_t n) {
    assert_int_equal(d->n, n);
    assert_int_equal(d->c, 3);
    assert_int_equal(d->h, 32);
    assert_int_equal(d->w, 32);
    assert_non_null(d->labels);
    for (int64_t k = 0; k < n; k++) {
        assert_int_equal(d->labels[k], cifar_label(first + k));
        for (int64_t j = 0; j < 3072; j++) assert_int_equal(d->images[k * 3072 + j], cifar_pixel(first + k, j));
    }
}

static void make_cifar_dir(const char *dir) {
    static const int64_t counts[5] = {2, 3, 1, 2, 4};
    char p[700];
    mkdir(dir, 0700);
    int64_t first = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, i + 1);
        write_cifar(p, first, counts[i], 0, -1);
        first += counts[i];
    }
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    write_cifar(p, 1000, 3, 0, -1);
}

static void test_cifar_roundtrip(void **state) {
    (void)state;
    char dir[600], p[700];
    tmp_path(dir, sizeof dir, "cifar");
    make_cifar_dir(dir);
    fdp_dataset d;
    fdp_err e = {{0}};
    assert_int_equal(fdp_cifar10_load(dir, 1, 0, &d, &e), 0);
    check_cifar(&d, 0, 12); /* files in order 1..5 */
    /* the NCHW layout: channel 1 (G) of image 4 starts at byte 1 + 1024 of its record */
    assert_int_equal(d.images[4 * 3072 + 1024 + 33], cifar_pixel(4, 1024 + 33));
    fdp_dataset_free(&d);
    assert_int_equal(fdp_cifar10_load(dir, 0, 0, &d, &e), 0);
    check_cifar(&d, 1000, 3);
    fdp_dataset_free(&d);
    assert_int_equal(fdp_cifar10_load(dir, 1, 4, &d, &e), 0); /* limit across files */
    check_cifar(&d, 0, 4);
    fdp_dataset_free(&d);
    snprintf(p, sizeof p, "%s/data_batch_2.bin", dir); /* one file alone */
    assert_int_equal(fdp_cifar10_load(p, 0, 0, &d, &e), 0);
    check_cifar(&d, 2, 3);
    fdp_dataset_free(&d);
    /* the parent of cifar-10-batches-bin */
    tmp_path(dir, sizeof dir, "cifar-parent");
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/cifar-10-batches-bin", dir);
    make_cifar_dir(p);
    assert_int_equal(fdp_cifar10_load(dir, 1, 0, &d, &e), 0);
    check_cifar(&d, 0, 12);
    fdp_dataset_free(&d);
}

static void expect_cifar_error(const char *path, int train, const char *needle1, const char *needle2) {
    fdp_dataset d;
    memset(&d, 0x5A, sizeof d);
    fdp_err e = {{0}};
    assert_int_equal(fdp_cifar10_load(path, train, 0, &d, &e), -1);
    assert_null(d.images);
    assert_null(d.labels);
    assert_msg_has(&e, needle1);
    if (needle2) assert_msg_has(&e, needle2);
}

static void test_cifar_errors(void **state) {
    (void)state;
    char dir[600], p[700];
    tmp_path(dir, sizeof dir, "cifar-bad");
    make_cifar_dir(dir);
    /* size not a multiple of 3073 */
    snprintf(p, sizeof p, "%s/data_batch_3.bin", dir);
    write_cifar(p, 5, 1, 7, -1);
    expect_cifar_error(dir, 1, p, "size 3080 bytes is not a multiple of the 3073-byte");
    expect_cifar_error(p, 1, p, "size 3080");
    write_cifar(p, 5, 2, 2, -1); /* 6148 = 2 * 3074 */
    expect_cifar_error(p, 1, "CIFAR-100", "6148");
    write_cifar(p, 5, 0, 0, -1);
    expect_cifar_error(p, 1, "empty file", p);
    /* a bad label */
    write_cifar(p, 5, 3, 0, 1);
    expect_cifar_error(p, 1, "record 1 has label 10", "0..9");
    expect_cifar_error(dir, 1, p, "record 1 has label 10");
    /* a missing file */
    unlink(p);
    expect_cifar_error(dir, 1, "missing CIFAR-10 file", p);
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    unlink(p);
    expect_cifar_error(dir, 0, "missing CIFAR-10 file", "test_batch.bin");
    tmp_path(p, sizeof p, "no-such-cifar");
    expect_cifar_error(p, 1, "cannot open", p);
}

/* ---- dispatch and gather -------------------------------------------------------- */

static void test_dataset_load(void **state) {
    (void)state;
    char dir[600], ip[700], lp[700];
    tmp_path(dir, sizeof dir, "fm");
    mkdir(dir, 0700);
    snprintf(ip, sizeof ip, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(lp, sizeof lp, "%s/train-labels-idx1-ubyte.gz", dir);
    write_idx_images(ip, 0x803, 9, 4, 6, 0, 1);
    write_idx_labels(lp, 0x801, 9, 0, 1);
    fdp_dataset d;
    fdp_err e = {{0}};
    assert_int_equal(fdp_dataset_load("idx", ip, 1, 0, &d, &e), 0); /* labels found beside */
    check_idx_contents(&d, 9, 4, 6, 1);
    fdp_dataset_free(&d);
    assert_int_equal(fdp_dataset_load("idx", dir, 1, 5, &d, &e), 0); /* the directory form */
    check_idx_contents(&d, 5, 4, 6, 1);
    fdp_dataset_free(&d);
    assert_int_equal(fdp_dataset_load("idx", dir, 0, 0, &d, &e), -1); /* no t10k files */
    assert_msg_has(&e, "t10k-images-idx3-ubyte");
    snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte", dir); /* plain, no labels beside */
    write_idx_images(ip, 0x803, 3, 4, 6, 0, 0);
    assert_int_equal(fdp_dataset_load("idx", dir, 0, 0, &d, &e), 0);
    check_idx_contents(&d, 3, 4, 6, 0);
    fdp_dataset_free(&d);
    /* a mismatched labels file beside is an error, not silently ignored */
    snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte", dir);
    write_idx_labels(lp, 0x801, 4, 0, 0);
    assert_int_equal(fdp_dataset_load("idx", ip, 0, 0, &d, &e), -1);
    assert_msg_has(&e, "holds 4 labels");

    tmp_path(dir, sizeof dir, "cifar-disp");
    make_cifar_dir(dir);
    assert_int_equal(fdp_dataset_load("cifar10", dir, 0, 0, &d, &e), 0);
    check_cifar(&d, 1000, 3);
    fdp_dataset_free(&d);
    assert_int_equal(fdp_dataset_load("mnist", dir, 0, 0, &d, &e), -1);
    assert_msg_has(&e, "unknown dataset format 'mnist'");
}

static void test_gather_float(void **state) {
    (void)state;
    uint8_t images[3 * 2 * 2 * 2];
    for (int i = 0; i < 24; i++) images[i] = (uint8_t)(i * 11);
    images[23] = 255;
    fdp_dataset d = {.images = images, .n = 3, .c = 2, .h = 2, .w = 2};
    int64_t idx[4] = {2, 0, 2, 1};
    float out[4 * 8];
    fdp_dataset_gather_float(&d, idx, 4, out);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) assert_true(out[i * 8 + j] == (float)images[idx[i] * 8 + j] / 255.0f);
    assert_true(out[7] == 1.0f);
    assert_true(out[8] == 0.0f);
}

/* ---- sampler -------------------------------------------------------------------- */

static int is_permutation(const int64_t *p, int64_t n) {
    char *seen = calloc((size_t)n + 1, 1);
    int ok = 1;
    for (int64_t i = 0; i < n && ok; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_sampler_permutation(void **state) {
    (void)state;
    const int64_t n = 1000;
    int64_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    fdp_sampler_epoch_order(42, 0, n, a);
    assert_true(is_permutation(a, n));
    fdp_sampler_epoch_order(42, 0, n, b);
    assert_memory_equal(a, b, n * sizeof *a); /* same (seed, epoch): same order */
    int64_t fixed = 0;
    for (int64_t i = 0; i < n; i++) fixed += a[i] == i;
    assert_true(fixed < 10); /* shuffled (expected 1 fixed point) */
    fdp_sampler_epoch_order(42, 1, n, b);
    assert_true(is_permutation(b, n));
    assert_memory_not_equal(a, b, n * sizeof *a); /* epochs differ */
    fdp_sampler_epoch_order(43, 0, n, b);
    assert_memory_not_equal(a, b, n * sizeof *a); /* seeds differ */
    /* the prefix does not depend on the calls before it (no hidden state) */
    fdp_sampler_epoch_order(42, 0, n, b);
    assert_memory_equal(a, b, n * sizeof *a);
    /* edge sizes */
    fdp_sampler_epoch_order(1, 0, 0, b);
    fdp_sampler_epoch_order(1, 0, 1, b);
    assert_int_equal(b[0], 0);
    /* uniform over the 6 orders of 3 elements (Fisher–Yates done right) */
    int counts[3][3][3] = {{{0}}};
    const int epochs = 6000;
    for (int ep = 0; ep < epochs; ep++) {
        int64_t p[3];
        fdp_sampler_epoch_order(7, ep, 3, p);
        assert_true(is_permutation(p, 3));
        counts[p[0]][p[1]][p[2]]++;
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++)
                if (i != j && j != k && i != k) assert_in_range(counts[i][j][k], 850, 1150); /* 1000 +- 5 sigma */
    free(a);
    free(b);
}

static void test_sampler_rank_slices(void **state) {
    (void)state;
    const int64_t n = 103;
    int64_t perm[103];
    fdp_sampler_epoch_order(5, 3, n, perm);
    assert_int_equal(fdp_sampler_steps_per_epoch(n, 2, 4), 12); /* 103 / 8, drop last 7 */
    assert_int_equal(fdp_sampler_steps_per_epoch(n, 1, 8), 12);
    assert_int_equal(fdp_sampler_steps_per_epoch(n, 3, 5), 6);
    assert_int_equal(fdp_sampler_steps_per_epoch(7, 2, 4), 0);
    for (int world = 1; world <= 4; world++) {
        const int B = 24 / world; /* the global batch stays 24 */
        const int64_t steps = fdp_sampler_steps_per_epoch(n, world, B);
        assert_int_equal(steps, 4);
        char seen[103] = {0};
        for (int64_t s = 0; s < steps; s++) {
            int64_t one[24], cat[24];
            fdp_sampler_batch_indices(perm, s, 0, 1, 24, one); /* 1 rank x 24 */
            for (int r = 0; r < world; r++) fdp_sampler_batch_indices(perm, s, r, world, B, cat + r * B);
            assert_memory_equal(one, cat, sizeof one); /* concatenation over ranks == the 1-rank batch */
            for (int i = 0; i < 24; i++) {
                assert_int_equal(seen[cat[i]], 0); /* no sample twice in an epoch */
                seen[cat[i]] = 1;
            }
        }
    }
    /* world 2, B 4: rank r of step s is perm[8s + 4r .. 8s + 4r + 4) */
    int64_t got[4];
    fdp_sampler_batch_indices(perm, 5, 1, 2, 4, got);
    assert_memory_equal(got, perm + 44, sizeof got);
}

static void test_eval_ranges(void **state) {
    (void)state;
    const int64_t ns[] = {0, 1, 2, 7, 10, 13, 101, 10000};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const int64_t n = ns[t];
        for (int world = 1; world <= 5; world++) {
            int *hits = calloc((size_t)n + 1, sizeof *hits);
            int64_t prev_end = 0, lo = n, hi = 0;
            for (int r = 0; r < world; r++) {
                int64_t b, e;
                fdp_eval_range(n, r, world, &b, &e);
                assert_int_equal(b, prev_end); /* contiguous, in rank order */
                assert_true(e >= b);
                assert_int_equal(b, n * r / world);
                for (int64_t i = b; i < e; i++) hits[i]++;
                prev_end = e;
                lo = e - b < lo ? e - b : lo;
                hi = e - b > hi ? e - b : hi;
            }
            assert_int_equal(prev_end, n);
            for (int64_t i = 0; i < n; i++) assert_int_equal(hits[i], 1); /* every sample exactly once */
            assert_true(hi - lo <= 1);                                    /* balanced */
            free(hits);
        }
    }
    /* no overflow for huge n */
    int64_t b, e;
    fdp_eval_range(INT64_MAX, 2, 3, &b, &e);
    assert_int_equal(e, INT64_MAX);
    assert_true(b > INT64_MAX / 3 && b < e);
}

/* ---- the real Fashion-MNIST ----------------------------------------------------- */

static void test_fashion_mnist(void **state) {
    (void)state;
    struct stat st;
    if (stat(FASHION_DIR "/train-images-idx3-ubyte.gz", &st) != 0) {
        print_message("[  SKIPPED ] Fashion-MNIST is not installed at " FASHION_DIR "\n");
        skip();
    }
    static const int first_train[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    static const int first_test[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    for (int train = 1; train >= 0; train--) {
        fdp_dataset d;
        fdp_err e = {{0}};
        int rc = fdp_dataset_load("idx", FASHION_DIR, train, 0, &d, &e);
        if (rc != 0) print_error("%s\n", e.msg);
        assert_int_equal(rc, 0);
        const int64_t n = train ? 60000 : 10000;
        assert_int_equal(d.n, n);
        assert_int_equal(d.c, 1);
        assert_int_equal(d.h, 28);
        assert_int_equal(d.w, 28);
        assert_non_null(d.labels);
        int64_t hist[10] = {0};
        for (int64_t i = 0; i < n; i++) {
            assert_in_range(d.labels[i], 0, 9);
            hist[d.labels[i]]++;
        }
        for (int k = 0; k < 10; k++) assert_int_equal(hist[k], n / 10); /* balanced classes */
        for (int i = 0; i < 10; i++) assert_int_equal(d.labels[i], train ? first_train[i] : first_test[i]);
        uint64_t sum = 0, first_sum = 0;
        for (int64_t i = 0; i < n * 784; i++) sum += d.images[i];
        for (int64_t i = 0; i < 784; i++) first_sum += d.images[i];
        assert_int_equal(sum, train ? 3431114169ull : 573469082ull); /* mean pixel 72.94 / 73.15 */
        assert_int_equal(first_sum, train ? 76247 : 33456);
        fdp_dataset_free(&d);
    }
    /* a limit reads the same first samples */
    fdp_dataset d;
    fdp_err e = {{0}};
    assert_int_equal(fdp_idx_load(FASHION_DIR "/t10k-images-idx3-ubyte.gz", FASHION_DIR "/t10k-labels-idx1-ubyte.gz",
                                  10, &d, &e),
                     0);
    assert_int_equal(d.n, 10);
    for (int i = 0; i < 10; i++) assert_int_equal(d.labels[i], first_test[i]);
    fdp_dataset_free(&d);
}

/* odd files where a data file is expected: a FIFO never hangs a reader (O_NONBLOCK, then
 * refused), a binary file is no shard index, a header key stated twice is named, pack never
 * replaces its own input (even with --force), a class folder name the index cannot carry */
static void test_odd_files(void **state) {
    (void)state;
    char p[600], q[600], out[600];
    fdp_dataset d;
    fdp_shards *s = NULL;
    fdp_err err = {{0}};
    tmp_path(p, sizeof p, "fifo-images-idx3-ubyte");
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(fdp_dataset_load("idx", p, 1, 0, &d, &err), -1);
    assert_msg_has(&err, "fifo-images-idx3-ubyte: not a regular file (a FIFO");
    assert_int_equal(fdp_dataset_load("cifar10", p, 1, 0, &d, &err), -1);
    assert_msg_has(&err, "not a regular file (a FIFO");
    assert_int_equal(fdp_shards_open(p, 1, 0, &s, &err), -1);
    assert_msg_has(&err, "not a regular file (a FIFO");
    /* an IDX file as the index: binary from its first line */
    tmp_path(q, sizeof q, "n-images-idx3-ubyte");
    write_idx_images(q, 0x803, 64, 28, 28, 0, 0);
    assert_int_equal(fdp_shards_open(q, 1, 0, &s, &err), -1);
    assert_msg_has(&err, "n-images-idx3-ubyte: not a flowdp shard index (it does not start with 'flowdp-shards 1'");
    /* pack it, then an index that states its height twice */
    const char *in[1] = {q};
    fdp_pack_opts o = {.out_dir = tmp_path(out, sizeof out, "o"), .split = "train", .format = "auto",
                       .per_shard = 40, .threads = 1};
    fdp_pack_result r;
    if (fdp_pack(in, 1, &o, &r, &err) != 0) fail_msg("%s", err.msg);
    tmp_path(p, sizeof p, "o/dup.index");
    FILE *f = fopen(p, "w");
    fputs("flowdp-shards 1\nheight 28\nwidth 28\nchannels 1\nheight 14\ncount 64\n"
          "shard train-00000-of-00002.h5 40\nshard train-00001-of-00002.h5 24\n", f);
    fclose(f);
    assert_int_equal(fdp_shards_open(p, 1, 0, &s, &err), -1);
    assert_msg_has(&err, "dup.index:5: a second 'height' line (the first is line 2)");
    /* --force never replaces an input: here the input is (a hard link to) shard 0 */
    tmp_path(p, sizeof p, "o/train-00000-of-00002.h5");
    struct stat before, after;
    assert_int_equal(unlink(p), 0);
    assert_int_equal(link(q, p), 0);
    assert_int_equal(stat(q, &before), 0);
    o.force = 1;
    assert_int_equal(fdp_pack(in, 1, &o, &r, &err), -1);
    assert_msg_has(&err, "train-00000-of-00002.h5: this output would replace");
    assert_msg_has(&err, "an input of this run");
    assert_int_equal(stat(q, &after), 0);
    assert_true(before.st_ino == after.st_ino && before.st_mtime == after.st_mtime);
    /* a class folder named with a newline would write an index line of its own */
    const char *mk[] = {"im", "im/a", "im/c\nshard evil.h5 5"};
    for (int i = 0; i < 3; i++) assert_int_equal(mkdir(tmp_path(p, sizeof p, mk[i]), 0700), 0);
    in[0] = tmp_path(q, sizeof q, "im");
    o.out_dir = tmp_path(out, sizeof out, "o_im");
    o.size = 4;
    o.force = 0;
    assert_int_equal(fdp_pack(in, 1, &o, &r, &err), -1);
    assert_msg_has(&err, "im/c\\nshard evil.h5 5: a class folder whose name holds a control character");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idx_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_errors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_cifar_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_cifar_errors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_dataset_load, setup_dir, teardown_dir),
        cmocka_unit_test(test_gather_float),
        cmocka_unit_test(test_sampler_permutation),
        cmocka_unit_test(test_sampler_rank_slices),
        cmocka_unit_test(test_eval_ranges),
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test_setup_teardown(test_odd_files, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
