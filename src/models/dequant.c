/* dequant.c — the dequantization stage (dequant.h): uniform dequantization with keyed Philox. */
#include "flowdp/dequant.h"

#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"
#include "flowdp/rng.h"

static void uniform_apply(fdp_dequant *d, fdp_ctx *ctx, fdp_tensor x, const fdp_dequant_key *key, fdp_tensor v,
                          double *logq) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(fdp_same_shape(x, v), "dequantize: output shape differs from the batch");
    int64_t D = fdp_sample_numel(x);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *u = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(x));
    fdp_philox_fill_args pa = {u, key->idx, D, key->seed, key->epoch, key->purpose, 0};
    be->philox_fill(be, fdp_numel(x), &pa);
    fdp_dequant_uniform_args a = {x.data, u, v.data, (float)d->n_bins, (float)(256 / d->n_bins), d->round};
    be->dequant_uniform(be, fdp_numel(x), &a);
    fdp_arena_reset(ctx->arena, m);
    if (logq) memset(logq, 0, sizeof(double) * (size_t)x.n); /* uniform within the bin: log 1 */
}

static const fdp_dequant_ops UNIFORM_OPS = {.kind = "uniform", .apply = uniform_apply};

fdp_dequant *fdp_dequant_uniform_create(int n_bins, int round) {
    FDP_CHECK(n_bins >= 2 && n_bins <= 256 && 256 % n_bins == 0, "dequantize: %d bins (must divide 256)", n_bins);
    fdp_dequant *d = fdp_xcalloc(1, sizeof *d);
    d->ops = &UNIFORM_OPS;
    d->n_bins = n_bins;
    d->round = round;
    return d;
}

int fdp_dequant_create(const fdp_config *cfg, const fdp_model *m, fdp_dequant **out, fdp_err *err) {
    (void)cfg;
    (void)err;
    /* RealNVP (the notebook) and the tutorial (v = (x_int + u)/256) dequantize 255x + u unrounded with
     * 256 bins; Glow (openai) bins rounded pixels. The tutorial's variational dequantization is not
     * built yet: its models get the uniform one. */
    *out = fdp_dequant_uniform_create(m->n_bins, strcmp(m->type, "glow") == 0);
    return 0;
}

void fdp_dequant_destroy(fdp_dequant *d) {
    if (!d) return;
    if (d->ops->destroy) d->ops->destroy(d);
    free(d);
}
