/* png.h — writing and reading 8-bit PNG images (libpng): single images, grids
 * of model samples, and reading back for tests and tools.
 *
 * Writes are atomic (outpath.h's fdp_out_open/fdp_out_commit): the PNG goes to
 * a temporary file in the same directory (<path>.tmp.<pid>.<n>), is flushed and
 * fsynced, then renamed over path, so a crash never leaves a half-written PNG
 * under the final name. Checking the path before any work is the caller's job
 * (fdp_out_check with FDP_OUT_PNG).
 * Errors (bad arguments, cannot open/write/rename, libpng errors) return -1 with
 * ONE line in err naming the path. */
#ifndef FLOWDP_PNG_H
#define FLOWDP_PNG_H
#include <math.h>
#include <stdint.h>

#include "flowdp/error.h"

/* A float in [0,1] to 8 bits, the rule every writer here uses: clamp to [0,1]
 * (NaN -> 0), then floor(v * 255 + 0.5), i.e. v*255 rounded to nearest with
 * ties rounded up. */
static inline uint8_t fdp_png_quantize(float v) {
    if (!(v > 0.0f)) return 0; /* also NaN */
    if (v >= 1.0f) return 255;
    return (uint8_t)floorf(v * 255.0f + 0.5f);
}

/* Write an 8-bit image. pixels: (height, width, channels) row-major (HWC,
 * interleaved); channels 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
 * Returns 0 or -1. */
int fdp_png_write(const char *path, const uint8_t *pixels, int height, int width, int channels, fdp_err *err);

/* Write n images as a grid of rows x cols tiles.
 *   images: (n, c, h, w) NCHW floats, nominally in [0,1]; converted with
 *           fdp_png_quantize (clamped). c = 1 (grey PNG) or 3 (RGB PNG).
 *   Image i goes to row i / cols, column i % cols (row-major).
 *   rows, cols: the grid; rows * cols >= n. 0 means "choose": both 0 ->
 *           cols = ceil(sqrt(n)), rows = ceil(n / cols); only one 0 -> the
 *           fewest that hold n (ceil(n / the other)).
 *   pad: pixels of padding BETWEEN tiles (none around the border), white
 *        (255). Empty tiles (n < rows * cols) are white too.
 * Output size: (rows*h + (rows-1)*pad) x (cols*w + (cols-1)*pad). Returns 0 or -1. */
int fdp_png_write_grid(const char *path, const float *images, int n, int c, int h, int w, int rows, int cols,
                       int pad, fdp_err *err);

/* Write nblocks blocks of per_block images each, stacked vertically (the sample
 * grid: one block per temperature).
 *   images: (nblocks * per_block, c, h, w) NCHW floats, block-major; quantized
 *           as fdp_png_write_grid does. c = 1 or 3.
 *   Image i of block b goes to tile row i / cols, column i % cols of block b,
 *   so a block is ceil(per_block / cols) rows of min(cols, per_block) tiles,
 *   and image i sits at the same place in every block.
 *   pad: white pixels between tiles; gap: white pixels between blocks (take
 *   gap > pad so blocks stand apart). Empty tiles (the last row of a block) are white.
 * Output: nblocks*bh + (nblocks-1)*gap rows, bh = rows*h + (rows-1)*pad; width
 * min(cols,per_block)*w + (min(cols,per_block)-1)*pad. Returns 0 or -1. */
int fdp_png_write_blocks(const char *path, const float *images, int nblocks, int per_block, int c, int h, int w,
                         int cols, int pad, int gap, fdp_err *err);

/* Read a PNG as 8 bits per channel: palette images become RGB (RGBA with
 * transparency), grey below 8 bits becomes 8 bits, 16-bit samples are reduced
 * to 8 (scaled). Strict (flowdp-pack reads image folders with it): every libpng
 * warning and every CRC error is an error, the file is read up to IEND, and an
 * image over 2^28 pixels is refused before anything is allocated. On success
 * *pixels is a malloc'd (h, w, channels) HWC buffer (the caller frees it),
 * *channels is 1..4. Returns 0, or -1 (*pixels = NULL) with a one-line error
 * "<path>: bad PNG: <libpng's reason>". */
int fdp_png_read(const char *path, uint8_t **pixels, int *h, int *w, int *channels, fdp_err *err);

#endif
