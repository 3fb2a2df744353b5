/* pack_png.c — flowdp-pack's strict PNG decoder. The same conversions as
 * fdp_png_read (src/io/png.c: palette -> RGB, 1/2/4-bit grey -> 8, 16 -> 8 bits
 * scaled, tRNS -> alpha), but nothing damaged passes: libpng's warnings (CRC
 * errors of ancillary chunks, "extra compressed data", "too much image data",
 * ...) are errors, CRC errors of every chunk are errors, the file is read up to
 * IEND, and the image is bounded (2^28 pixels) before anything is allocated.
 *
 * libpng reports errors by longjmp to the setjmp in read_stream; everything
 * that must survive the jump lives in the job reached through a pointer. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pack_internal.h"

typedef struct ppng_job {
    png_structp png;
    png_infop info;
    FILE *fp;
    char msg[256];
    uint8_t *pixels; /* (h, w, ch), malloc'd */
    png_bytep *rows; /* h row pointers into pixels */
    int h, w, ch;
} ppng_job;

static void on_error(png_structp png, png_const_charp msg) {
    ppng_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    ppng_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void read_body(ppng_job *j) {
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

static int read_stream(ppng_job *j) {
    j->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, j, on_error, on_warning);
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

int fdp_pack_png_read(const char *path, uint8_t **pixels, int *h, int *w, int *channels, fdp_err *err) {
    *pixels = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fdp_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fclose(fp);
        return fdp_err_set(err, "%s: not a PNG file (bad signature)", path);
    }
    ppng_job *j = calloc(1, sizeof *j);
    if (!j) {
        fclose(fp);
        return fdp_err_set(err, "%s: out of memory", path);
    }
    j->fp = fp;
    int rc = read_stream(j);
    fclose(fp);
    if (rc) {
        fdp_err_set(err, "%s: bad PNG: %s", path, j->msg[0] ? j->msg : "libpng failed");
        free(j);
        return -1;
    }
    *pixels = j->pixels;
    *h = j->h;
    *w = j->w;
    *channels = j->ch;
    free(j);
    return 0;
}
