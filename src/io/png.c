/* png.c — PNG output (single images and sample grids) and input, with libpng.
 *
 * libpng reports errors by longjmp to the setjmp point in png_jmpbuf. To keep
 * that safe, all state that must survive the jump lives in a png_job reached
 * through a pointer (not in locals of the function that calls setjmp), and the
 * work between setjmp and the end is done in a separate function. */
#include "flowdp/png.h"
#include "flowdp/outpath.h"

#include <errno.h>
#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_job {
    png_structp png;
    png_infop info;
    FILE *fp;
    char msg[256];           /* libpng's error message */
    /* write */
    const uint8_t *src;      /* (h, w, ch) */
    /* read: results */
    uint8_t *pixels;         /* (h, w, ch), malloc'd */
    png_bytep *rows;         /* h row pointers into pixels, malloc'd */
    int h, w, ch;
} png_job;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* writing: no warning matters; reading: every warning is an error (a damaged file must
 * not pass: CRC errors of ancillary chunks, "extra compressed data", ...) */
static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}
static void on_png_read_warning(png_structp png, png_const_charp msg) { on_png_error(png, msg); }

/* ---- writing ------------------------------------------------------------------ */

static void write_body(png_job *j) {
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                       PNG_COLOR_TYPE_RGB_ALPHA};
    png_init_io(j->png, j->fp);
    png_set_IHDR(j->png, j->info, (png_uint_32)j->w, (png_uint_32)j->h, 8, color_types[j->ch], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(j->png, j->info);
    size_t row_bytes = (size_t)j->w * (size_t)j->ch;
    for (int y = 0; y < j->h; y++) png_write_row(j->png, j->src + (size_t)y * row_bytes);
    png_write_end(j->png, NULL);
}

static int write_stream(png_job *j) {
    j->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, j, on_png_error, on_png_warning);
    if (!j->png) return snprintf(j->msg, sizeof j->msg, "png_create_write_struct failed"), -1;
    j->info = png_create_info_struct(j->png);
    if (!j->info) {
        png_destroy_write_struct(&j->png, NULL);
        return snprintf(j->msg, sizeof j->msg, "png_create_info_struct failed"), -1;
    }
    if (setjmp(png_jmpbuf(j->png))) {
        png_destroy_write_struct(&j->png, &j->info);
        return -1;
    }
    write_body(j);
    png_destroy_write_struct(&j->png, &j->info);
    return 0;
}

/* outpath.c's "cannot write <path>: <why>" as "cannot write PNG <path>: <why>" */
static int out_err(fdp_err *err, const fdp_err *o) {
    const char *m = o->msg;
    if (strncmp(m, "cannot write ", 13) == 0) m += 13;
    return fdp_err_set(err, "cannot write PNG %s", m);
}

int fdp_png_write(const char *path, const uint8_t *pixels, int height, int width, int channels, fdp_err *err) {
    if (!path || !*path) return fdp_err_set(err, "cannot write PNG: empty path");
    if (!pixels || height < 1 || width < 1 || channels < 1 || channels > 4)
        return fdp_err_set(err, "cannot write PNG %s: bad image %dx%d with %d channels (need >= 1x1, 1..4 channels)",
                           path, height, width, channels);
    if ((int64_t)width * channels > INT_MAX / 2)
        return fdp_err_set(err, "cannot write PNG %s: rows of %d pixels are too wide", path, width);

    /* a temporary file in the same directory, fsynced and renamed over path */
    fdp_out_file out;
    fdp_err oerr = {{0}};
    if (fdp_out_open(&out, path, &oerr) != 0) return out_err(err, &oerr);

    png_job j;
    memset(&j, 0, sizeof j);
    j.fp = out.fp;
    j.src = pixels;
    j.h = height;
    j.w = width;
    j.ch = channels;
    if (write_stream(&j)) {
        fdp_out_abort(&out);
        return fdp_err_set(err, "cannot write PNG %s: libpng: %s", path, j.msg);
    }
    if (fdp_out_commit(&out, &oerr) != 0) return out_err(err, &oerr);
    return 0;
}

/* one (c, h, w) image into the HWC buffer of width W at (y0, x0) */
static void put_tile(uint8_t *buf, int64_t W, int c, int h, int w, const float *img, int64_t y0, int64_t x0) {
    for (int ch = 0; ch < c; ch++) {
        const float *plane = img + (int64_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            uint8_t *dst = buf + ((y0 + y) * W + x0) * c + ch;
            for (int x = 0; x < w; x++) dst[(int64_t)x * c] = fdp_png_quantize(plane[(int64_t)y * w + x]);
        }
    }
}

int fdp_png_write_grid(const char *path, const float *images, int n, int c, int h, int w, int rows, int cols,
                       int pad, fdp_err *err) {
    const char *p = path ? path : "";
    if (!images || n < 1 || (c != 1 && c != 3) || h < 1 || w < 1 || pad < 0 || rows < 0 || cols < 0)
        return fdp_err_set(err,
                           "cannot write PNG grid %s: bad arguments n=%d c=%d h=%d w=%d rows=%d cols=%d pad=%d "
                           "(need n, h, w >= 1, c = 1 or 3, rows, cols, pad >= 0)",
                           p, n, c, h, w, rows, cols, pad);
    if (rows == 0 && cols == 0) {
        cols = 1;
        while ((int64_t)cols * cols < n) cols++;
    }
    if (rows == 0) rows = (int)(((int64_t)n + cols - 1) / cols);
    if (cols == 0) cols = (int)(((int64_t)n + rows - 1) / rows);
    if ((int64_t)rows * cols < n)
        return fdp_err_set(err, "cannot write PNG grid %s: a %dx%d grid has no room for %d images", p, rows, cols, n);
    int64_t H = (int64_t)rows * h + (int64_t)(rows - 1) * pad;
    int64_t W = (int64_t)cols * w + (int64_t)(cols - 1) * pad;
    if (H > (1 << 20) || W > (1 << 20) || H * W * c > ((int64_t)1 << 31))
        return fdp_err_set(err, "cannot write PNG grid %s: %lldx%lld pixels is too large", p, (long long)H,
                           (long long)W);
    uint8_t *buf = malloc((size_t)(H * W * c));
    if (!buf) return fdp_err_set(err, "cannot write PNG grid %s: out of memory", p);
    memset(buf, 255, (size_t)(H * W * c)); /* padding and empty tiles: white */
    for (int i = 0; i < n; i++)
        put_tile(buf, W, c, h, w, images + (int64_t)i * c * h * w, (int64_t)(i / cols) * (h + pad),
                 (int64_t)(i % cols) * (w + pad));
    int rc = fdp_png_write(path, buf, (int)H, (int)W, c, err);
    free(buf);
    return rc;
}

int fdp_png_write_blocks(const char *path, const float *images, int nblocks, int per_block, int c, int h, int w,
                         int cols, int pad, int gap, fdp_err *err) {
    const char *p = path ? path : "";
    if (!images || nblocks < 1 || per_block < 1 || (c != 1 && c != 3) || h < 1 || w < 1 || cols < 1 || pad < 0 ||
        gap < 0)
        return fdp_err_set(err,
                           "cannot write PNG grid %s: bad arguments blocks=%d per_block=%d c=%d h=%d w=%d cols=%d "
                           "pad=%d gap=%d (need blocks, per_block, h, w, cols >= 1, c = 1 or 3, pad, gap >= 0)",
                           p, nblocks, per_block, c, h, w, cols, pad, gap);
    if (cols > per_block) cols = per_block;
    int64_t rows = ((int64_t)per_block + cols - 1) / cols;
    int64_t bh = rows * h + (rows - 1) * pad; /* one block's height */
    int64_t H = nblocks * bh + (int64_t)(nblocks - 1) * gap;
    int64_t W = (int64_t)cols * w + (int64_t)(cols - 1) * pad;
    if (H > (1 << 30) || W > (1 << 20) || H * W * c > ((int64_t)1 << 31))
        return fdp_err_set(err, "cannot write PNG grid %s: %lldx%lld pixels is too large", p, (long long)H,
                           (long long)W);
    uint8_t *buf = malloc((size_t)(H * W * c));
    if (!buf) return fdp_err_set(err, "cannot write PNG grid %s: out of memory", p);
    memset(buf, 255, (size_t)(H * W * c)); /* padding, gaps and empty tiles: white */
    for (int b = 0; b < nblocks; b++)
        for (int i = 0; i < per_block; i++)
            put_tile(buf, W, c, h, w, images + ((int64_t)b * per_block + i) * c * h * w,
                     b * (bh + gap) + (int64_t)(i / cols) * (h + pad), (int64_t)(i % cols) * (w + pad));
    int rc = fdp_png_write(path, buf, (int)H, (int)W, c, err);
    free(buf);
    return rc;
}

/* ---- reading ------------------------------------------------------------------ */

static void read_body(png_job *j) {
    png_structp png = j->png;
    png_infop info = j->info;
    png_init_io(png, j->fp);
    png_set_sig_bytes(png, 8);
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_set_user_limits(png, 1u << 16, 1u << 16);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_read_info(png, info);
    uint64_t pixels = (uint64_t)png_get_image_width(png, info) * png_get_image_height(png, info);
    if (pixels > ((uint64_t)1 << 28)) png_error(png, "image too large (over 2^28 pixels)");
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (depth == 16) {
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
        png_set_scale_16(png);
#else
        png_set_strip_16(png);
#endif
    }
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    j->w = (int)png_get_image_width(png, info);
    j->h = (int)png_get_image_height(png, info);
    j->ch = png_get_channels(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if (j->w < 1 || j->h < 1 || j->ch < 1 || j->ch > 4 || row_bytes != (size_t)j->w * (size_t)j->ch)
        png_error(png, "unexpected layout after conversion to 8 bits");
    j->pixels = malloc(row_bytes * (size_t)j->h);
    j->rows = malloc(sizeof(png_bytep) * (size_t)j->h);
    if (!j->pixels || !j->rows) png_error(png, "out of memory");
    for (int y = 0; y < j->h; y++) j->rows[y] = j->pixels + (size_t)y * row_bytes;
    png_read_image(png, j->rows);
    png_read_end(png, info); /* the chunks after the image data, up to IEND: their CRCs too */
}

static int read_stream(png_job *j) {
    j->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, j, on_png_error, on_png_read_warning);
    if (!j->png) return snprintf(j->msg, sizeof j->msg, "png_create_read_struct failed"), -1;
    j->info = png_create_info_struct(j->png);
    if (!j->info) {
        png_destroy_read_struct(&j->png, NULL, NULL);
        return snprintf(j->msg, sizeof j->msg, "png_create_info_struct failed"), -1;
    }
    if (setjmp(png_jmpbuf(j->png))) {
        png_destroy_read_struct(&j->png, &j->info, NULL);
        free(j->pixels);
        free(j->rows);
        j->pixels = NULL;
        j->rows = NULL;
        return -1;
    }
    read_body(j);
    png_destroy_read_struct(&j->png, &j->info, NULL);
    free(j->rows);
    j->rows = NULL;
    return 0;
}

int fdp_png_read(const char *path, uint8_t **pixels, int *h, int *w, int *channels, fdp_err *err) {
    *pixels = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fdp_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fclose(fp);
        return fdp_err_set(err, "%s: not a PNG file (bad signature)", path);
    }
    png_job j;
    memset(&j, 0, sizeof j);
    j.fp = fp;
    int rc = read_stream(&j);
    fclose(fp);
    if (rc) return fdp_err_set(err, "%s: bad PNG: %s", path, j.msg[0] ? j.msg : "libpng failed");
    *pixels = j.pixels;
    *h = j.h;
    *w = j.w;
    *channels = j.ch;
    return 0;
}
