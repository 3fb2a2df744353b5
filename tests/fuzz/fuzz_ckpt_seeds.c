/* fuzz_ckpt_seeds.c — writes the seed corpus of fuzz_checkpoint: valid checkpoints
 * of the fuzz table (fuzz_ckpt_table.h) with every section, without the EMA,
 * without the optimizer moments, and with odd values (NaN, Inf, an empty config).
 *   fuzz_ckpt_seeds DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/checkpoint.h"
#include "fuzz_ckpt_table.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    fdp_params t;
    fuzz_ckpt_table(&t);
    size_t np = (size_t)t.n_params, nb = (size_t)t.n_buffers;
    float *h = calloc(4 * np + nb, sizeof(float));
    for (size_t i = 0; i < 4 * np + nb; i++) h[i] = (float)i * 0.25f - 3.0f;
    struct {
        const char *name;
        int m, v, ema;
        const char *config;
        int odd;
    } seeds[] = {{"full.h5", 1, 1, 1, "[model]\ntype = realnvp\n", 0},
                 {"no_ema.h5", 1, 1, 0, "[train]\nsteps = 3\n", 0},
                 {"params_only.h5", 0, 0, 0, "", 0},
                 {"odd_values.h5", 1, 1, 0, "[log]\nlevel = debug\n", 1}};
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        if (seeds[k].odd) {
            h[0] = NAN;
            h[1] = INFINITY;
            h[2] = -0.0f;
        }
        fdp_ckpt_state s = {&t, h, h + 4 * np, seeds[k].m ? h + np : NULL, seeds[k].v ? h + 2 * np : NULL,
                            seeds[k].ema ? h + 3 * np : NULL};
        fdp_ckpt_meta meta;
        memset(&meta, 0, sizeof meta);
        meta.step = 7 + (int64_t)k;
        meta.epoch = 1;
        meta.epoch_step = 2;
        meta.seed = 3;
        meta.world_size = 2;
        meta.best_test_bpd = seeds[k].odd ? INFINITY : 3.5;
        meta.last_test_bpd = seeds[k].odd ? NAN : 3.6;
        snprintf(meta.model_type, sizeof meta.model_type, "%s", "realnvp");
        meta.image_c = 1;
        meta.image_h = 4;
        meta.image_w = 4;
        meta.global_batch = 8;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], seeds[k].name);
        fdp_err err = {{0}};
        if (fdp_ckpt_save(path, &s, &meta, seeds[k].config, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        printf("wrote %s\n", path);
    }
    free(h);
    free(t.entries);
    return 0;
}
