/* fuzz_image.c — libFuzzer target: the image-folder decoder of flowdp-pack
 * (src/data/pack_image.c: JPEG through libjpeg-turbo, PNG through the strict
 * strict libpng reader of src/io/png.c), decoding a file by its content exactly
 * as flowdp-pack does, then the centre crop + area average to 8x8 and 3x3. A
 * decoded image must have a positive size within the 2^28-pixel bound; errors
 * are one line naming the file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/pack.h"
#include "fuzz_util.h"

volatile unsigned g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(0, data, size);
    uint8_t *rgb = NULL;
    int h = 0, w = 0;
    fdp_err err = {{0}};
    if (fdp_image_decode_rgb(path, &rgb, &h, &w, &err) == 0) {
        if (!rgb || h < 1 || w < 1 || (uint64_t)h * (uint64_t)w > ((uint64_t)1 << 28)) {
            fprintf(stderr, "fuzz_image: inconsistent image %dx%d\n", h, w);
            abort();
        }
        uint8_t out[8 * 8 * 3];
        fdp_resize_crop_area(rgb, h, w, 3, 8, out);
        fdp_resize_crop_area(rgb, h, w, 3, 3, out);
        unsigned sum = 0;
        for (size_t i = 0; i < (size_t)h * (size_t)w * 3; i++) sum += rgb[i]; /* ASan checks the size */
        g_sink = sum + out[0];
        free(rgb);
    } else if (!err.msg[0] || strchr(err.msg, '\n') || strncmp(err.msg, path, strlen(path)) != 0) {
        fprintf(stderr, "fuzz_image: error message empty, not one line or not naming the file: '%s'\n", err.msg);
        abort();
    }
    return 0;
}
