/* fuzz_npy.c — libFuzzer target: the .npy header parser (src/data/npy.c) that
 * flowdp-pack runs on every member of an .npz. A parsed header must be
 * consistent: 1..8 dims, an integer dtype of 1/2/4/8 bytes, the data offset
 * inside the buffer, and the byte count (product of the shape times the item
 * size, plus the offset) must fit in 64 bits. Errors are one line naming the
 * member. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size heap copy: ASan sees any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    fdp_npy_header h;
    fdp_err err = {{0}};
    if (fdp_npy_parse_header(buf, size, &h, "x.npz:data.npy", &err) == 0) {
        int bad = h.ndim < 0 || h.ndim > 8 || (h.kind != 'u' && h.kind != 'i') ||
                  (h.itemsize != 1 && h.itemsize != 2 && h.itemsize != 4 && h.itemsize != 8) || h.data_offset > size;
        int64_t bytes = h.itemsize;
        for (int d = 0; d < h.ndim && !bad; d++) {
            if (h.shape[d] < 0) bad = 1;
            else if (h.shape[d] && __builtin_mul_overflow(bytes, h.shape[d], &bytes)) bad = 1;
        }
        if (!bad && bytes > INT64_MAX - (int64_t)h.data_offset) bad = 1;
        if (bad) {
            fprintf(stderr, "fuzz_npy: inconsistent header accepted (ndim %d, kind %c, itemsize %d, offset %zu)\n",
                    h.ndim, h.kind, h.itemsize, h.data_offset);
            abort();
        }
    } else if (!err.msg[0] || strchr(err.msg, '\n') || strncmp(err.msg, "x.npz:data.npy: ", 16) != 0) {
        fprintf(stderr, "fuzz_npy: error message empty, not one line or not naming the member: '%s'\n", err.msg);
        abort();
    }
    free(buf);
    return 0;
}
