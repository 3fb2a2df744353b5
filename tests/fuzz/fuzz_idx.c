/* fuzz_idx.c — libFuzzer target: the IDX reader (src/data/idx.c), plain or
 * gzipped (the reader detects gzip by its magic). The first byte picks the limit
 * and whether a labels file follows: byte 1..2 give the length of the images part,
 * the rest is the labels file. A loaded set must be consistent (n >= 1, shape
 * within the documented limits, n <= limit). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/data.h"
#include "fuzz_util.h"

volatile unsigned g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int64_t limit = data[0] & 7; /* 0 = all */
    int with_labels = (data[0] >> 3) & 1;
    size_t split = (size_t)data[1] | ((size_t)data[2] << 8);
    data += 3;
    size -= 3;
    if (!with_labels || split > size) split = size;
    const char *img = fuzz_write_file(0, data, split);
    const char *lab = with_labels ? fuzz_write_file(1, data + split, size - split) : NULL;
    fdp_dataset d;
    memset(&d, 0, sizeof d);
    fdp_err err = {{0}};
    if (fdp_idx_load(img, lab, limit, &d, &err) == 0) {
        if (d.n < 1 || d.c != 1 || d.h < 1 || d.w < 1 || d.h > 65536 || d.w > 65536 || (limit > 0 && d.n > limit) ||
            !d.images || (with_labels && !d.labels)) {
            fprintf(stderr, "fuzz_idx: inconsistent dataset n=%lld c=%d h=%d w=%d\n", (long long)d.n, d.c, d.h, d.w);
            abort();
        }
        unsigned sum = 0; /* touch every byte: ASan checks the sizes */
        for (int64_t i = 0; i < d.n * d.h * d.w; i++) sum += d.images[i];
        if (d.labels)
            for (int64_t i = 0; i < d.n; i++) sum += (unsigned)d.labels[i];
        g_sink = sum;
        fdp_dataset_free(&d);
    } else if (!err.msg[0] || strchr(err.msg, '\n') || !strstr(err.msg, "/in")) {
        fprintf(stderr, "fuzz_idx: error message empty, not one line or not naming the file: '%s'\n", err.msg);
        abort();
    }
    return 0;
}
