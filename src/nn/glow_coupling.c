/* glow_coupling.c — Glow's coupling layer (openai/glow's revnet2d_step
 * coupling part): z1, z2 = x[:, :C/2], x[:, C/2:]; h = NN(z1);
 *   additive: y2 = z2 + h                                       (log-det 0)
 *   affine:   shift = h[:, 0::2], s = sigmoid(h[:, 1::2] + 2); y2 = (z2 + shift)*s   (log-det sum log s)
 * NN is a conditioning network (condnet.h); the model uses openai's f()
 * (fdp_condnet_glow_create, src/nn/glow_nn.c), registered under the coupling's prefix.
 * Saved for backward: the NN output h and y (the NN keeps its own). */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"

void fdp_glow_coupling_init(fdp_glow_coupling *l, fdp_params *p, const char *prefix, int C, int width, int affine) {
    FDP_CHECK(C % 2 == 0 && C >= 2, "glow coupling %s: needs an even channel count, got %d", prefix, C);
    l->C = C;
    l->width = width;
    l->affine = affine;
    l->nn = fdp_condnet_glow_create(p, prefix, C / 2, width, affine ? C : C / 2);
}

void fdp_glow_coupling_free(fdp_glow_coupling *l) {
    fdp_condnet_destroy(l->nn);
    l->nn = NULL;
}

/* h = NN(x1), the NN's input its own copy of the identity half */
static fdp_tensor nn_of(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor x) {
    fdp_tensor z1 = fdp_channel_slice(ctx, x, 0, l->C / 2);
    return l->nn->ops->forward(l->nn, ctx, z1);
}

fdp_tensor fdp_glow_coupling_forward(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "glow coupling: input has %d channels, expected %d", x.c, l->C);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_arena_mark m0 = fdp_arena_get_mark(ctx->arena); /* with no_grad, everything after y is scratch */
    fdp_tensor h = nn_of(l, ctx, x);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *ls = l->affine ? fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)(fdp_numel(x) / 2)) : NULL;
    fdp_glow_coupling_args a = {x.data, h.data, y.data, ls, l->C, (int64_t)x.h * x.w, l->affine, 0};
    be->glow_coupling(be, fdp_numel(x), &a);
    if (l->affine && sldj) {
        double *ldj = fdp_arena_doubles(ctx->arena, x.n);
        be->reduce_rows(be, ls, NULL, 1, x.n, fdp_sample_numel(x) / 2, ldj);
        fdp_axpy_f64_args pa = {ldj, sldj, 1.0};
        be->axpy_f64(be, x.n, &pa);
    }
    fdp_arena_reset(ctx->arena, ctx->no_grad ? m0 : m);
    l->h = h;
    l->y = y;
    return y;
}

fdp_tensor fdp_glow_coupling_inverse(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor y) {
    FDP_CHECK(y.c == l->C, "glow coupling: input has %d channels, expected %d", y.c, l->C);
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    /* y1 = z1: the NN sees the same input; it never initializes its ActNorms here and keeps nothing */
    int training = ctx->training, no_grad = ctx->no_grad;
    ctx->training = 0;
    ctx->no_grad = 1;
    fdp_tensor h = nn_of(l, ctx, y);
    ctx->training = training;
    ctx->no_grad = no_grad;
    fdp_glow_coupling_args a = {y.data, h.data, x.data, NULL, l->C, (int64_t)y.h * y.w, l->affine, 1};
    ctx->be->glow_coupling(ctx->be, fdp_numel(y), &a);
    fdp_arena_reset(ctx->arena, m);
    return x;
}

fdp_tensor fdp_glow_coupling_backward(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    fdp_backend *be = ctx->be;
    fdp_tensor y = l->y;
    FDP_CHECK(y.data && fdp_same_shape(y, dy), "glow coupling: backward without a matching forward");
    int C2 = l->C / 2, cout = l->affine ? l->C : C2;
    int64_t HW = (int64_t)y.h * y.w;
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor dh = fdp_arena_tensor(ctx->arena, y.n, cout, y.h, y.w);
    fdp_glow_coupling_backward_args ba = {dy.data, y.data, l->h.data, dldj, dx.data, dh.data, l->C, HW, l->affine};
    FDP_CHECK(dldj || !l->affine, "glow coupling: affine backward needs dldj");
    be->glow_coupling_backward(be, fdp_numel(y), &ba);
    /* dx[:, :C/2] += d NN(z1) / d z1 */
    fdp_tensor dz1 = fdp_arena_tensor(ctx->arena, y.n, C2, y.h, y.w);
    l->nn->ops->backward(l->nn, ctx, dh, dz1, 0);
    fdp_slice_copy_args sa = {dz1.data, dx.data, C2, 0, l->C, 0, C2, HW, 1.0f, 1};
    be->slice_copy(be, fdp_numel(dz1), &sa);
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

/* ---- as a flow layer (flow.h) ---- */
static fdp_tensor cp_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    return fdp_glow_coupling_forward((fdp_glow_coupling *)l, ctx, x, sldj);
}
static fdp_tensor cp_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    return fdp_glow_coupling_inverse((fdp_glow_coupling *)l, ctx, y);
}
static fdp_tensor cp_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    return fdp_glow_coupling_backward((fdp_glow_coupling *)l, ctx, dy, dldj);
}
static void cp_prepare(fdp_flow_layer *l, fdp_ctx *ctx) { fdp_condnet_prepare(((fdp_glow_coupling *)l)->nn, ctx); }
static void cp_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    fdp_condnet_init_values(((fdp_glow_coupling *)l)->nn, p, hp, hb, seed);
}
static void cp_destroy(fdp_flow_layer *l) { fdp_glow_coupling_free((fdp_glow_coupling *)l); }
static const fdp_flow_ops COUPLING_OPS = {.kind = "glow_coupling", .forward = cp_forward, .inverse = cp_inverse,
                                          .backward = cp_backward, .init_values = cp_init_values,
                                          .prepare = cp_prepare, .destroy = cp_destroy};

fdp_flow_layer *fdp_flow_glow_coupling_create(fdp_params *p, const char *prefix, int C, int width, int affine) {
    fdp_glow_coupling *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &COUPLING_OPS, p);
    fdp_glow_coupling_init(l, p, prefix, C, width, affine);
    fdp_flow_end(&l->base, p);
    return &l->base;
}

/* variant 0: additive, 1: affine */
static fdp_flow_layer *coupling_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    *c = 4;
    *h = 4;
    *w = 4;
    return fdp_flow_glow_coupling_create(p, "layer", 4, 8, variant);
}
const fdp_flow_kind fdp_flow_kind_glow_coupling = {"glow_coupling", 2, coupling_example, 0};
