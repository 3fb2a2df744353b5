/* test_png.c — PNG writing and reading: a sample grid read back pixel for
 * pixel (quantisation, tile placement, white padding), single images in every
 * channel count, the atomic write leaving no temporary file, and errors that
 * name the path. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flowdp/png.h"
#include "testutil.h"

/* entries of dir other than . and .. */
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

static void test_quantize(void **state) {
    (void)state;
    assert_int_equal(fdp_png_quantize(0.0f), 0);
    assert_int_equal(fdp_png_quantize(1.0f), 255);
    assert_int_equal(fdp_png_quantize(-3.0f), 0);
    assert_int_equal(fdp_png_quantize(7.0f), 255);
    assert_int_equal(fdp_png_quantize(NAN), 0);
    assert_int_equal(fdp_png_quantize(0.5f), 128); /* 127.5 rounds up */
    assert_int_equal(fdp_png_quantize(1.0f / 255.0f), 1);
    assert_int_equal(fdp_png_quantize(0.498f / 255.0f), 0);
    assert_int_equal(fdp_png_quantize(100.0f / 255.0f), 100);
    for (int i = 0; i <= 255; i++) assert_int_equal(fdp_png_quantize((float)i / 255.0f), i);
}

static void test_grid_round_trip(void **state) {
    (void)state;
    char dir[256], path[512];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/grid.png", dir);
    /* 5 RGB images of 4x3 in a 2x3 grid with 2 pixels of padding; values
     * beyond [0,1] are clamped */
    enum { N = 5, C = 3, H = 4, W = 3, ROWS = 2, COLS = 3, PAD = 2 };
    float img[N * C * H * W];
    tu_fill_uniform(img, N * C * H * W, 7, -0.2f, 1.2f);
    img[0] = 0.5f;
    img[1] = 1.0f / 255.0f;
    fdp_err err = {{0}};
    int rc = fdp_png_write_grid(path, img, N, C, H, W, ROWS, COLS, PAD, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(count_entries(dir), 1); /* no temporary file left */

    uint8_t *px = NULL;
    int h = 0, w = 0, ch = 0;
    rc = fdp_png_read(path, &px, &h, &w, &ch, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(h, ROWS * H + (ROWS - 1) * PAD);
    assert_int_equal(w, COLS * W + (COLS - 1) * PAD);
    assert_int_equal(ch, C);
    int tiles_checked = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int ty = y / (H + PAD), iy = y % (H + PAD), tx = x / (W + PAD), ix = x % (W + PAD);
            int i = ty * COLS + tx;
            for (int c = 0; c < C; c++) {
                uint8_t got = px[((size_t)y * w + x) * C + c];
                if (iy >= H || ix >= W || i >= N) {
                    assert_int_equal(got, 255); /* padding, empty tile */
                } else {
                    float v = img[((i * C + c) * H + iy) * W + ix];
                    float cl = v < 0 ? 0 : (v > 1 ? 1 : v);
                    int want = (int)floor((double)(cl * 255.0f) + 0.5);
                    assert_int_equal(got, want);
                    assert_int_equal(got, fdp_png_quantize(v));
                    tiles_checked++;
                }
            }
        }
    assert_int_equal(tiles_checked, N * C * H * W);
    assert_int_equal(px[0], 128);
    assert_int_equal(px[C], 1); /* image 0, channel 0, pixel (0, 1) */
    free(px);

    /* grey, automatic grid (3 images -> 2x2 with an empty tile), no padding */
    float g[3 * 2 * 2] = {0, 0.25f, 0.5f, 0.75f, 1, 1, 1, 1, 0.1f, 0.2f, 0.3f, 0.4f};
    rc = fdp_png_write_grid(path, g, 3, 1, 2, 2, 0, 0, 0, &err); /* overwrites grid.png */
    assert_int_equal(rc, 0);
    assert_int_equal(fdp_png_read(path, &px, &h, &w, &ch, &err), 0);
    assert_int_equal(h, 4);
    assert_int_equal(w, 4);
    assert_int_equal(ch, 1);
    const uint8_t want[16] = {0, 64, 255, 255, 128, 191, 255, 255, 26, 51, 255, 255, 77, 102, 255, 255};
    assert_memory_equal(px, want, 16);
    free(px);
    assert_int_equal(count_entries(dir), 1);
    remove(path);
    remove(dir);
}

static void test_write_read_channels(void **state) {
    (void)state;
    char dir[256], path[512];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/img.png", dir);
    for (int c = 1; c <= 4; c++) {
        enum { H = 7, W = 5 };
        uint8_t src[H * W * 4];
        for (int i = 0; i < H * W * c; i++) src[i] = (uint8_t)(i * 37 + c);
        fdp_err err = {{0}};
        assert_int_equal(fdp_png_write(path, src, H, W, c, &err), 0);
        uint8_t *px;
        int h, w, ch;
        assert_int_equal(fdp_png_read(path, &px, &h, &w, &ch, &err), 0);
        assert_int_equal(h, H);
        assert_int_equal(w, W);
        assert_int_equal(ch, c);
        assert_memory_equal(px, src, (size_t)H * W * c);
        free(px);
    }
    remove(path);
    remove(dir);
}

static void test_errors(void **state) {
    (void)state;
    char dir[256], path[1024], file[512];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    fdp_err err = {{0}};
    uint8_t px[12] = {0};
    float img[12] = {0};

    /* the parent "directory" is a regular file */
    snprintf(file, sizeof file, "%s/not_a_dir", dir);
    FILE *f = fopen(file, "w");
    fputs("hello, not a PNG\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/x.png", file);
    assert_int_equal(fdp_png_write(path, px, 2, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "Not a directory"));
    assert_null(strchr(err.msg, '\n'));
    assert_int_equal(fdp_png_write_grid(path, img, 1, 3, 2, 2, 1, 1, 0, &err), -1);
    assert_non_null(strstr(err.msg, path));

    /* a directory that does not exist */
    snprintf(path, sizeof path, "%s/no/such/dir/x.png", dir);
    assert_int_equal(fdp_png_write(path, px, 2, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "No such file or directory"));

    /* the target is a directory: the rename fails, the temp file is removed */
    snprintf(path, sizeof path, "%s/sub", dir);
    char sub_file[1100];
    snprintf(sub_file, sizeof sub_file, "%s/keep", path);
    assert_int_equal(mkdir(path, 0755), 0);
    f = fopen(sub_file, "w");
    fclose(f);
    assert_int_equal(fdp_png_write(path, px, 2, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(count_entries(dir), 2); /* not_a_dir and sub: no temp file */

    /* bad arguments */
    snprintf(path, sizeof path, "%s/ok.png", dir);
    assert_int_equal(fdp_png_write(path, px, 0, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(fdp_png_write(path, px, 2, 2, 5, &err), -1);
    assert_int_equal(fdp_png_write_grid(path, img, 1, 2, 2, 2, 1, 1, 0, &err), -1); /* c = 2 */
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(fdp_png_write_grid(path, img, 3, 1, 2, 2, 1, 2, 0, &err), -1); /* 1x2 grid, 3 images */
    assert_non_null(strstr(err.msg, "no room for 3 images"));
    assert_int_equal(count_entries(dir), 2);

    /* reading: missing file, not a PNG, truncated PNG */
    uint8_t *out = (uint8_t *)1;
    int h, w, c;
    snprintf(path, sizeof path, "%s/missing.png", dir);
    assert_int_equal(fdp_png_read(path, &out, &h, &w, &c, &err), -1);
    assert_null(out);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    assert_int_equal(fdp_png_read(file, &out, &h, &w, &c, &err), -1);
    assert_non_null(strstr(err.msg, "not a PNG file"));
    snprintf(path, sizeof path, "%s/ok.png", dir);
    float big[3 * 32 * 32];
    tu_fill_uniform(big, 3 * 32 * 32, 3, 0, 1);
    assert_int_equal(fdp_png_write_grid(path, big, 1, 3, 32, 32, 1, 1, 0, &err), 0);
    f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *bytes = malloc((size_t)size);
    assert_int_equal(fread(bytes, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    f = fopen(path, "wb");
    fwrite(bytes, 1, (size_t)size / 2, f);
    fclose(f);
    free(bytes);
    assert_int_equal(fdp_png_read(path, &out, &h, &w, &c, &err), -1);
    assert_null(out);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "bad PNG"));

    remove(path);
    remove(file);
    remove(sub_file);
    snprintf(path, sizeof path, "%s/sub", dir);
    remove(path);
    remove(dir);
}

/* blocks (the sample grid): 2 blocks of 5 grey 2x3 images in rows of at most 2
 * tiles, 1 pixel between tiles, 3 between blocks; image i of block b at tile
 * (i / 2, i % 2) of block b; empty tiles, padding and the gap white */
static void test_blocks(void **state) {
    (void)state;
    char dir[256], path[512];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/blocks.png", dir);
    enum { NB = 2, PER = 5, H = 2, W = 3, COLS = 2, PAD = 1, GAP = 3, ROWS = 3 };
    float img[NB * PER * H * W];
    for (int i = 0; i < NB * PER; i++)
        for (int k = 0; k < H * W; k++) img[i * H * W + k] = (float)(i * 10 + k) / 255.0f;
    fdp_err err = {{0}};
    assert_int_equal(fdp_png_write_blocks(path, img, NB, PER, 1, H, W, COLS, PAD, GAP, &err), 0);
    uint8_t *px = NULL;
    int h = 0, w = 0, ch = 0;
    assert_int_equal(fdp_png_read(path, &px, &h, &w, &ch, &err), 0);
    int bh = ROWS * H + (ROWS - 1) * PAD;
    assert_int_equal(h, NB * bh + (NB - 1) * GAP);
    assert_int_equal(w, COLS * W + (COLS - 1) * PAD);
    assert_int_equal(ch, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int b = y / (bh + GAP), by = y % (bh + GAP);
            int ty = by / (H + PAD), iy = by % (H + PAD), tx = x / (W + PAD), ix = x % (W + PAD);
            int i = ty * COLS + tx;
            int want = 255;
            if (by < bh && iy < H && ix < W && i < PER) want = (b * PER + i) * 10 + iy * W + ix;
            assert_int_equal(px[(size_t)y * w + x], want);
        }
    free(px);
    /* fewer images than columns: the block is as wide as its images */
    assert_int_equal(fdp_png_write_blocks(path, img, 1, 1, 1, H, W, 16, 1, 4, &err), 0);
    assert_int_equal(fdp_png_read(path, &px, &h, &w, &ch, &err), 0);
    assert_int_equal(h, H);
    assert_int_equal(w, W);
    free(px);
    assert_int_equal(fdp_png_write_blocks(path, img, 1, 1, 2, H, W, 16, 1, 4, &err), -1); /* c = 2 */
    assert_non_null(strstr(err.msg, path));
    remove(path);
    remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_grid_round_trip),
        cmocka_unit_test(test_write_read_channels),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
