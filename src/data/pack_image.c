/* pack_image.c — flowdp-pack's image decoding (JPEG with libjpeg-turbo, PNG
 * through fdp_png_read: src/io/png.c, strict) to 8-bit RGB, and the centre-crop + exact area-average
 * resize. The rules are written in include/flowdp/pack.h.
 *
 * libjpeg reports fatal errors through error_exit, which must not return: it
 * longjmps back to decode_jpeg (so do its warnings: on_jpeg_emit); everything that must survive the jump lives in
 * the jpeg_job reached through a pointer. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "flowdp/pack.h"
#include "flowdp/png.h"
#include "data_open.h"
#include "pack_internal.h"

typedef struct jpeg_job {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us this pointer */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *rgb;
    uint8_t *row;
} jpeg_job;

static void on_jpeg_error(j_common_ptr cinfo) {
    jpeg_job *j = (jpeg_job *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, j->msg);
    longjmp(j->jump, 1);
}
/* libjpeg's warnings (msg_level -1) say the data is damaged: "premature end of
 * data segment" (JWRN_JPEG_EOF, a truncated file; libjpeg pads it with grey),
 * "corrupt JPEG data: N extraneous bytes", bad Huffman codes, ... Each is
 * treated as an error: a damaged image must not reach the shards silently.
 * Trace messages (msg_level >= 0) are ignored. */
static void on_jpeg_emit(j_common_ptr cinfo, int msg_level) {
    if (msg_level >= 0) return;
    jpeg_job *j = (jpeg_job *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, j->msg);
    longjmp(j->jump, 1);
}

static uint8_t cmyk_channel(int v, int k, int inverted) {
    int x = inverted ? v * k : (255 - v) * (255 - k);
    return (uint8_t)((x + 127) / 255);
}

static int decode_jpeg(FILE *fp, jpeg_job *j, struct jpeg_decompress_struct *ci, int *h, int *w) {
    if (setjmp(j->jump)) {
        jpeg_destroy_decompress(ci);
        return -1;
    }
    jpeg_create_decompress(ci);
    jpeg_stdio_src(ci, fp);
    jpeg_read_header(ci, TRUE);
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    const int W = (int)ci->output_width, H = (int)ci->output_height, comps = ci->output_components;
    if (W < 1 || H < 1 || (uint64_t)W * (uint64_t)H > ((uint64_t)1 << 28) || comps != (cmyk ? 4 : 3)) {
        snprintf(j->msg, sizeof j->msg, "unsupported JPEG layout (%dx%d, %d components)", W, H, comps);
        jpeg_destroy_decompress(ci);
        return -1;
    }
    j->rgb = malloc((size_t)W * (size_t)H * 3);
    j->row = malloc((size_t)W * (size_t)comps);
    if (!j->rgb || !j->row) {
        snprintf(j->msg, sizeof j->msg, "out of memory");
        jpeg_destroy_decompress(ci);
        return -1;
    }
    while (ci->output_scanline < ci->output_height) {
        int y = (int)ci->output_scanline;
        JSAMPROW rp = cmyk ? j->row : j->rgb + (size_t)y * W * 3;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1) {
            snprintf(j->msg, sizeof j->msg, "short read at row %d", y);
            jpeg_destroy_decompress(ci);
            return -1;
        }
        if (cmyk) {
            int inv = ci->saw_Adobe_marker;
            uint8_t *d = j->rgb + (size_t)y * W * 3;
            for (int x = 0; x < W; x++) {
                const uint8_t *p = j->row + 4 * x;
                for (int k = 0; k < 3; k++) d[3 * x + k] = cmyk_channel(p[k], p[3], inv);
            }
        }
    }
    jpeg_finish_decompress(ci);
    jpeg_destroy_decompress(ci);
    *h = H;
    *w = W;
    return 0;
}

int fdp_image_decode_rgb(const char *path, uint8_t **rgb, int *h, int *w, fdp_err *err) {
    *rgb = NULL;
    FILE *fp = fdp_data_fopen_regular(path, "a JPEG or PNG image", NULL, err); /* never blocks on a FIFO */
    if (!fp) return -1;
    unsigned char sig[8] = {0};
    size_t got = fread(sig, 1, sizeof sig, fp);
    if (got >= 3 && sig[0] == 0xFF && sig[1] == 0xD8 && sig[2] == 0xFF) {
        rewind(fp);
        jpeg_job *j = calloc(1, sizeof *j);
        struct jpeg_decompress_struct *ci = calloc(1, sizeof *ci);
        if (!j || !ci) {
            free(j);
            free(ci);
            fclose(fp);
            return fdp_err_set(err, "%s: out of memory", path);
        }
        ci->err = jpeg_std_error(&j->pub);
        j->pub.error_exit = on_jpeg_error;
        j->pub.emit_message = on_jpeg_emit;
        int rc = decode_jpeg(fp, j, ci, h, w);
        fclose(fp);
        free(j->row);
        free(ci);
        if (rc != 0) {
            free(j->rgb);
            fdp_err_set(err, "%s: bad JPEG: %s", path, j->msg);
            free(j);
            return -1;
        }
        *rgb = j->rgb;
        free(j);
        return 0;
    }
    fclose(fp);
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (got < 8 || memcmp(sig, png_sig, 8) != 0)
        return fdp_err_set(err, "%s: neither a JPEG nor a PNG file (%s)", path, got < 8 ? "too short" : "bad signature");
    uint8_t *px = NULL;
    int ch = 0;
    if (fdp_png_read(path, &px, h, w, &ch, err) != 0) return -1;
    size_t n = (size_t)*h * (size_t)*w;
    uint8_t *out = malloc(n * 3);
    if (!out) {
        free(px);
        return fdp_err_set(err, "%s: out of memory", path);
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = px + i * (size_t)ch;
        if (ch <= 2) { /* grey (+ alpha) */
            out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = p[0];
        } else { /* RGB (+ alpha) */
            out[3 * i] = p[0];
            out[3 * i + 1] = p[1];
            out[3 * i + 2] = p[2];
        }
    }
    free(px);
    *rgb = out;
    return 0;
}

/* Overlap weights of source pixels with output cells along one axis, in units of
 * 1/S of a pixel: source pixel r spans [r*S, (r+1)*S), output cell o spans
 * [o*m, (o+1)*m). For each o: first source pixel and the weights (<= m/S + 2). */
static void axis_weights(int m, int S, int o, int *first, int *n, int64_t *w) {
    int64_t a = (int64_t)o * m, b = (int64_t)(o + 1) * m; /* cell in 1/S units */
    int r0 = (int)(a / S), r1 = (int)((b - 1) / S);      /* source pixels touched */
    *first = r0;
    *n = r1 - r0 + 1;
    for (int r = r0; r <= r1; r++) {
        int64_t lo = (int64_t)r * S > a ? (int64_t)r * S : a, hi = (int64_t)(r + 1) * S < b ? (int64_t)(r + 1) * S : b;
        w[r - r0] = hi - lo;
    }
}

void fdp_resize_crop_area(const uint8_t *src, int h, int w, int c, int S, uint8_t *dst) {
    const int m = h < w ? h : w;
    const int y0 = (h - m) / 2, x0 = (w - m) / 2;
    const int64_t total = (int64_t)m * m; /* sum of all weights of one cell: (m/S)^2 pixels = m*m units of 1/S^2 */
    const int maxn = m / S + 2;
    int64_t *wx = malloc(sizeof(int64_t) * (size_t)maxn * S), *wy = malloc(sizeof(int64_t) * (size_t)maxn);
    int *fx = malloc(sizeof(int) * (size_t)S), *nx = malloc(sizeof(int) * (size_t)S);
    int64_t *rowacc = malloc(sizeof(int64_t) * (size_t)S * c); /* horizontal sums of one source row */
    int64_t *acc = malloc(sizeof(int64_t) * (size_t)S * c);
    FDP_CHECK(wx && wy && fx && nx && rowacc && acc, "resize: out of memory");
    for (int j = 0; j < S; j++) axis_weights(m, S, j, &fx[j], &nx[j], wx + (size_t)j * maxn);
    for (int i = 0; i < S; i++) {
        int fy, ny;
        axis_weights(m, S, i, &fy, &ny, wy);
        memset(acc, 0, sizeof(int64_t) * (size_t)S * c);
        for (int r = 0; r < ny; r++) {
            const uint8_t *row = src + ((size_t)(y0 + fy + r) * w + x0) * c;
            for (int j = 0; j < S; j++)
                for (int k = 0; k < c; k++) {
                    int64_t sum = 0;
                    for (int q = 0; q < nx[j]; q++) sum += wx[(size_t)j * maxn + q] * row[(size_t)(fx[j] + q) * c + k];
                    rowacc[j * c + k] = sum;
                }
            for (int t = 0; t < S * c; t++) acc[t] += wy[r] * rowacc[t];
        }
        for (int t = 0; t < S * c; t++) dst[(size_t)i * S * c + t] = (uint8_t)((acc[t] + total / 2) / total);
    }
    free(wx);
    free(wy);
    free(fx);
    free(nx);
    free(rowacc);
    free(acc);
}
