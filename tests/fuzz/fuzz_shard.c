/* fuzz_shard.c — libFuzzer target: one HDF5 shard opened and read through the
 * reader (src/data/shards.c). The input is the shard file (slot 1, "in1"); a
 * fixed index beside it (slot 0) lists it with 4 images of 2x2x1. Open (the
 * structure and attribute checks, first_index included), read every sample and
 * label, verify the checksum. Refusals are one line naming a file; a shard that
 * passes must give labels and pixels without sanitizer reports. Seeds:
 * corpus/shard (valid shards written by flowdp-pack, and damaged ones). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/shards.h"
#include "fuzz_util.h"

static const char k_index[] = "flowdp-shards 1\nsplit train\nheight 2\nwidth 2\nchannels 1\ncount 4\nshard in1 4\n";

volatile unsigned g_sink;

static void check_err(const fdp_err *err, const char *dir) {
    if (!err->msg[0] || strchr(err->msg, '\n') || strncmp(err->msg, dir, strlen(dir)) != 0) {
        fprintf(stderr, "fuzz_shard: error message empty, not one line or not naming a file: '%s'\n", err->msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *index = fuzz_write_file(0, (const uint8_t *)k_index, sizeof k_index - 1);
    fuzz_write_file(1, data, size);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", index);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    fdp_shards *s = NULL;
    fdp_err err = {{0}};
    if (fdp_shards_open(index, 1, 0, &s, &err) != 0) {
        check_err(&err, dir);
        return 0;
    }
    int64_t idx[4] = {3, 0, 2, 1};
    uint8_t px[4 * 4];
    int32_t lab[4];
    unsigned sum = 0;
    if (fdp_shards_read(s, idx, 4, px, lab, &err) == 0) {
        for (int i = 0; i < 16; i++) sum += px[i];
        for (int i = 0; i < 4; i++) sum += (unsigned)lab[i];
    } else {
        check_err(&err, dir);
    }
    fdp_err verr = {{0}};
    if (fdp_shards_verify(s, 0, 1, &verr) != 0) check_err(&verr, dir);
    g_sink = sum;
    fdp_shards_close(s);
    return 0;
}
