/* tut_coupling.c — the affine CouplingLayer of Lippe's Tutorial 9 (a flow layer, flow.h):
 *   s, t = chunk(net(z * mask)); s = tanh(s / e^sf) e^sf; s, t *= 1 - mask;
 *   forward z = (z + t) exp(s), log-det += sum s; inverse z = z exp(-s) - t.
 * net: the tutorial's GatedConvNet (gated_convnet.c, c_out = 2 C). Names and order are the
 * tutorial's state_dict: "<prefix>.scaling_factor" (C), the buffer "<prefix>.mask" (checkerboard
 * (1,1,H,W) = (i + j) mod 2, channel (1,C,1,1) = 1 on the first C/2 channels; invert: 1 - mask;
 * 1 = conditioning), then "<prefix>.network.nn...". Element-wise math: tutorial_ops.h. */
#include <stdio.h>

#include "flowdp/condnet.h"
#include "flowdp/error.h"
#include "flowdp/flow.h"

typedef struct tut_coupling {
    fdp_flow_layer base;
    fdp_condnet *net;
    int C, H, W, mask_c, invert;
    int p_sf, b_mask;
    fdp_tensor x, nn;               /* saved by forward: the input and the network's output */
} tut_coupling;

static const float *mask_of(const tut_coupling *l, fdp_ctx *ctx) { return fdp_params_data(ctx->params, l->b_mask); }

static void check_input(const tut_coupling *l, fdp_tensor x) {
    FDP_CHECK(x.c == l->C && (l->mask_c || (x.h == l->H && x.w == l->W)),
              "tutorial coupling: input %dx%dx%d, expected %d channels%s", x.c, x.h, x.w, l->C,
              l->mask_c ? "" : " and the mask's size");
}

/* the network's output on x * mask */
static fdp_tensor net_out(tut_coupling *l, fdp_ctx *ctx, fdp_tensor x) {
    fdp_tensor zin = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_tut_mask_mul_args a = {x.data, mask_of(l, ctx), zin.data, x.c, (int64_t)x.h * x.w, l->mask_c, 0};
    ctx->be->tut_mask_mul(ctx->be, fdp_numel(x), &a);
    return l->net->ops->forward(l->net, ctx, zin);
}

static fdp_tensor tc_forward(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    tut_coupling *l = (tut_coupling *)b;
    fdp_backend *be = ctx->be;
    check_input(l, x);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_arena_mark m0 = fdp_arena_get_mark(ctx->arena);
    fdp_tensor nn = net_out(l, ctx, x);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor s = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_tut_coupling_args a = {x.data, nn.data, fdp_params_data(ctx->params, l->p_sf), mask_of(l, ctx), y.data, s.data,
                               x.c, (int64_t)x.h * x.w, l->mask_c, 0};
    be->tut_coupling(be, fdp_numel(x), &a);
    double *ldj = fdp_arena_doubles(ctx->arena, x.n);
    be->reduce_rows(be, s.data, NULL, 1, x.n, fdp_sample_numel(s), ldj);
    fdp_axpy_f64_args pa = {ldj, sldj, 1.0};
    be->axpy_f64(be, x.n, &pa);
    fdp_arena_reset(ctx->arena, ctx->no_grad ? m0 : m);
    l->x = x;
    l->nn = nn;
    return y;
}

static fdp_tensor tc_inverse(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor y) {
    tut_coupling *l = (tut_coupling *)b;
    check_input(l, y);
    /* the conditioning part of y is that of x: the network sees the forward's input */
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor nn = net_out(l, ctx, y);
    fdp_tut_coupling_args a = {y.data, nn.data, fdp_params_data(ctx->params, l->p_sf), mask_of(l, ctx), x.data, NULL,
                               y.c, (int64_t)y.h * y.w, l->mask_c, 1};
    ctx->be->tut_coupling(ctx->be, fdp_numel(y), &a);
    fdp_arena_reset(ctx->arena, m);
    return x;
}

static fdp_tensor tc_backward(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    tut_coupling *l = (tut_coupling *)b;
    fdp_backend *be = ctx->be;
    fdp_tensor x = l->x;
    FDP_CHECK(x.data && fdp_same_shape(x, dy), "tutorial coupling: backward without its forward");
    int64_t HW = (int64_t)x.h * x.w;
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor dnn = fdp_arena_tensor(ctx->arena, x.n, 2 * x.c, x.h, x.w);
    float *dsf = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(x));
    fdp_tut_coupling_backward_args a = {x.data, l->nn.data, fdp_params_data(ctx->params, l->p_sf), mask_of(l, ctx),
                                        dy.data, dldj, dx.data, dnn.data, dsf, x.c, HW, l->mask_c};
    be->tut_coupling_backward(be, fdp_numel(x), &a);
    double *dot = fdp_arena_doubles(ctx->arena, x.c);
    be->reduce_rows(be, dsf, NULL, x.n, x.c, HW, dot);
    fdp_f64_to_f32_args cv = {dot, fdp_params_grad(ctx->params, l->p_sf), 1.0};
    be->f64_to_f32(be, x.c, &cv);
    /* through the network into the conditioning part: dx += mask * d(z * mask) */
    fdp_tensor dzin = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    l->net->ops->backward(l->net, ctx, dnn, dzin, 0);
    fdp_tut_mask_mul_args ma = {dzin.data, mask_of(l, ctx), dx.data, x.c, HW, l->mask_c, 1};
    be->tut_mask_mul(be, fdp_numel(x), &ma);
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

static void tc_prepare(fdp_flow_layer *b, fdp_ctx *ctx) { fdp_condnet_prepare(((tut_coupling *)b)->net, ctx); }

/* the mask; scaling_factor 0 (the tutorial's zeros); the network's own init */
static void tc_init_values(fdp_flow_layer *b, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    tut_coupling *l = (tut_coupling *)b;
    float *mask = hb + p->entries[l->b_mask].offset;
    if (l->mask_c) {
        for (int c = 0; c < l->C; c++) mask[c] = (float)((c < l->C / 2) ^ l->invert);
    } else {
        for (int i = 0; i < l->H; i++)
            for (int j = 0; j < l->W; j++) mask[i * l->W + j] = (float)(((i + j) % 2) ^ l->invert);
    }
    for (int c = 0; c < l->C; c++) hp[p->entries[l->p_sf].offset + c] = 0.0f;
    fdp_condnet_init_values(l->net, p, hp, hb, seed);
}

static void tc_destroy(fdp_flow_layer *b) {
    tut_coupling *l = (tut_coupling *)b;
    fdp_condnet_destroy(l->net);
    l->net = NULL;
}

static const fdp_flow_ops TUT_COUPLING_OPS = {.kind = "tut_coupling",
                                              .forward = tc_forward,
                                              .inverse = tc_inverse,
                                              .backward = tc_backward,
                                              .init_values = tc_init_values,
                                              .prepare = tc_prepare,
                                              .destroy = tc_destroy};

fdp_flow_layer *fdp_flow_tut_coupling_create(fdp_params *p, const char *prefix, int C, int H, int W, int hid,
                                             int num_layers, fdp_mask mask, int invert) {
    FDP_CHECK(mask == FDP_MASK_CHECKERBOARD || mask == FDP_MASK_CHANNEL, "tutorial coupling %s: unknown mask", prefix);
    FDP_CHECK(mask == FDP_MASK_CHECKERBOARD || C >= 2, "tutorial coupling %s: a channel mask needs 2 channels or more",
              prefix);
    tut_coupling *l = fdp_xcalloc(1, sizeof *l);
    char name[2 * FDP_NAME_MAX];
    l->C = C;
    l->H = H;
    l->W = W;
    l->mask_c = mask == FDP_MASK_CHANNEL;
    l->invert = invert ? 1 : 0;
    fdp_flow_begin(&l->base, &TUT_COUPLING_OPS, p);
    int64_t sc[1] = {C}, sm[4] = {1, l->mask_c ? C : 1, l->mask_c ? 1 : H, l->mask_c ? 1 : W};
    snprintf(name, sizeof name, "%s.scaling_factor", prefix);
    l->p_sf = fdp_params_add(p, name, FDP_PARAM, 0, 1, sc);
    snprintf(name, sizeof name, "%s.mask", prefix);
    l->b_mask = fdp_params_add(p, name, FDP_BUFFER, 0, 4, sm);
    snprintf(name, sizeof name, "%s.network", prefix);
    l->net = fdp_condnet_gated_create(p, name, C, hid, 2 * C, num_layers);
    fdp_flow_end(&l->base, p);
    return &l->base;
}

/* variants: checkerboard / channel mask, each plain and inverted */
static fdp_flow_layer *example(fdp_params *p, int variant, int *c, int *h, int *w) {
    int channel = variant / 2;
    *c = channel ? 4 : 1;
    *h = 4;
    *w = 4;
    return fdp_flow_tut_coupling_create(p, "layer", *c, *h, *w, 4, 1, channel ? FDP_MASK_CHANNEL : FDP_MASK_CHECKERBOARD,
                                        variant % 2);
}
const fdp_flow_kind fdp_flow_kind_tut_coupling = {"tut_coupling", 4, example, 0};
