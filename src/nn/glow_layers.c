/* glow_layers.c — two small Glow building blocks:
 *  - the fixed channel permutations between couplings (openai's
 *    reverse_features and shuffle_features): y[:, c] = x[:, perm[c]], log-det 0;
 *    the shuffle's permutation is a buffer (checkpoints carry it), drawn once
 *    from Philox at initialization;
 *  - Conv2dZeros (openai's conv2d_zeros): h = (conv(x, W) + b) * exp(3 logs),
 *    W, b, logs zero-initialized, so the layer starts as the zero map (the
 *    couplings start as identities, the split priors as N(0, 1)). Its scale
 *    is an ActNorm without initialization or log-det. openai's edge_bias input
 *    channel (a constant-1 channel marking the zero padding) is left out. */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"
#include "flowdp/rng.h"

/* ---- permutations -------------------------------------------------------------- */
void fdp_permute_init(fdp_permute *l, fdp_params *p, const char *prefix, int C, int shuffle) {
    l->C = C;
    l->shuffle = shuffle;
    l->b_perm = -1;
    if (shuffle) {
        char name[2 * FDP_NAME_MAX];
        int64_t s[1] = {C};
        snprintf(name, sizeof name, "%s.indices", prefix);
        l->b_perm = fdp_params_add(p, name, FDP_BUFFER, 0, 1, s);
    }
}

void fdp_permute_init_values(fdp_permute *l, const fdp_params *p, float *hb, uint64_t seed) {
    if (!l->shuffle) return;
    float *perm = hb + p->entries[l->b_perm].offset;
    for (int c = 0; c < l->C; c++) perm[c] = (float)c;
    /* Fisher-Yates, draws from the stream of this entry */
    for (int i = l->C - 1; i > 0; i--) {
        float u = fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)l->b_perm, 0, (uint64_t)i);
        int j = (int)(u * (float)(i + 1));
        if (j > i) j = i;
        float t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

fdp_tensor fdp_permute_apply(fdp_permute *l, fdp_ctx *ctx, fdp_tensor x, int inverse) {
    FDP_CHECK(x.c == l->C, "permute: %d channels given to a layer of %d", x.c, l->C);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_glow_permute_args a = {x.data, y.data, l->shuffle ? fdp_params_data(ctx->params, l->b_perm) : NULL, l->C,
                               (int64_t)x.h * x.w, inverse};
    ctx->be->glow_permute(ctx->be, fdp_numel(x), &a);
    return y;
}

/* as a flow layer (flow.h): its own backward with the inverse permutation */
static fdp_tensor pm_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    (void)sldj;
    return fdp_permute_apply((fdp_permute *)l, ctx, x, 0);
}
static fdp_tensor pm_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    return fdp_permute_apply((fdp_permute *)l, ctx, y, 1);
}
static fdp_tensor pm_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    (void)dldj;
    return fdp_permute_apply((fdp_permute *)l, ctx, dy, 1);
}
static void pm_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    (void)hp;
    fdp_permute_init_values((fdp_permute *)l, p, hb, seed);
}
static const fdp_flow_ops PERMUTE_OPS = {.kind = "permute", .forward = pm_forward, .inverse = pm_inverse,
                                         .backward = pm_backward, .init_values = pm_init_values};

fdp_flow_layer *fdp_flow_permute_create(fdp_params *p, const char *prefix, int C, int shuffle) {
    fdp_permute *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &PERMUTE_OPS, p);
    fdp_permute_init(l, p, prefix, C, shuffle);
    fdp_flow_end(&l->base, p);
    return &l->base;
}

/* variant 0: reverse, 1: shuffle */
static fdp_flow_layer *permute_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    *c = 6;
    *h = 2;
    *w = 2;
    return fdp_flow_permute_create(p, "layer", 6, variant);
}
const fdp_flow_kind fdp_flow_kind_permute = {"permute", 2, permute_example, 0};

/* ---- Conv2dZeros ------------------------------------------------------------------ */
void fdp_conv_zeros_init(fdp_conv_zeros *l, fdp_params *p, const char *prefix, int cin, int cout, int k) {
    char name[2 * FDP_NAME_MAX];
    int64_t s[4] = {cout, cin, k, k};
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    snprintf(name, sizeof name, "%s.W", prefix);
    l->p_w = fdp_params_add(p, name, FDP_PARAM, 0, 4, s);
    fdp_actnorm_init(&l->scale, p, prefix, cout, 0); /* <prefix>.b, <prefix>.logs */
}

void fdp_conv_zeros_forward(fdp_conv_zeros *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor c, fdp_tensor h) {
    FDP_CHECK(x.c == l->cin && c.c == l->cout && fdp_same_shape(c, h) && x.n == c.n && x.h == c.h && x.w == c.w,
              "conv_zeros: shapes (%d,%d,%d,%d) -> (%d,%d,%d,%d) for %d -> %d", x.n, x.c, x.h, x.w, c.n, c.c, c.h, c.w,
              l->cin, l->cout);
    fdp_conv_shape s = {x.n, l->cin, l->cout, x.h, x.w, l->k};
    ctx->be->conv_forward(ctx->be, s, x.data, fdp_params_data(ctx->params, l->p_w), NULL, c.data, 0);
    fdp_actnorm_recompute(&l->scale, ctx, c, h, 0);
}

void fdp_conv_zeros_backward(fdp_conv_zeros *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor c, fdp_tensor dh, float *dx,
                             int accumulate) {
    fdp_backend *be = ctx->be;
    fdp_conv_shape s = {x.n, l->cin, l->cout, x.h, x.w, l->k};
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor dc = fdp_arena_tensor(ctx->arena, c.n, c.c, c.h, c.w);
    fdp_actnorm_grad(&l->scale, ctx, c, c, dh, dc.data, 0, NULL);
    be->conv_backward_weights(be, s, x.data, dc.data, fdp_params_grad(ctx->params, l->p_w), NULL);
    if (dx) be->conv_backward_data(be, s, dc.data, fdp_params_data(ctx->params, l->p_w), dx, accumulate);
    fdp_arena_reset(ctx->arena, m);
}
