/* fuzz_cifar10.c — libFuzzer target: the CIFAR-10 binary reader
 * (src/data/cifar10.c) on one .bin file. The first byte picks the limit. A loaded
 * set must be 3x32x32 with labels 0..9. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/data.h"
#include "fuzz_util.h"

volatile unsigned g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int64_t limit = data[0] & 3;
    const char *path = fuzz_write_file(0, data + 1, size - 1);
    fdp_dataset d;
    memset(&d, 0, sizeof d);
    fdp_err err = {{0}};
    if (fdp_cifar10_load(path, 1, limit, &d, &err) == 0) {
        if (d.n < 1 || d.c != 3 || d.h != 32 || d.w != 32 || (limit > 0 && d.n > limit) || !d.images || !d.labels) {
            fprintf(stderr, "fuzz_cifar10: inconsistent dataset n=%lld c=%d h=%d w=%d\n", (long long)d.n, d.c, d.h, d.w);
            abort();
        }
        unsigned sum = 0; /* touch every byte: ASan checks the sizes */
        for (int64_t i = 0; i < d.n * 3 * 32 * 32; i++) sum += d.images[i];
        for (int64_t i = 0; i < d.n; i++) {
            if (d.labels[i] < 0 || d.labels[i] > 9) {
                fprintf(stderr, "fuzz_cifar10: label %d out of range\n", (int)d.labels[i]);
                abort();
            }
        }
        g_sink = sum;
        fdp_dataset_free(&d);
    } else if (!err.msg[0] || strchr(err.msg, '\n') || !strstr(err.msg, "/in0")) {
        fprintf(stderr, "fuzz_cifar10: error message empty, not one line or not naming the file: '%s'\n", err.msg);
        abort();
    }
    return 0;
}
