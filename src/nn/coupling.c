/* coupling.c — the notebook's affine CouplingLayer.
 * checkerboard: st = st_net(x*b); s = rescale(tanh(s_raw))*(1-b); t = t*(1-b)
 * channel-wise: (x_change, x_id) = chunk(x) (swapped when reverse_mask); st = st_net(x_id)
 * forward y = (x + t)*exp(s), log-det += sum s; inverse x = y*exp(-s) - t. */
#include <stdio.h>
#include <stdlib.h>

#include "flowdp/condnet.h"
#include "flowdp/error.h"
#include "flowdp/flow.h"

static const fdp_flow_ops COUPLING_OPS;

void fdp_coupling_init(fdp_coupling *l, fdp_params *p, const char *prefix, int C, int mid, int num_blocks,
                       fdp_mask mask, int reverse_mask) {
    char name[2 * FDP_NAME_MAX];
    fdp_flow_begin(&l->base, &COUPLING_OPS, p);
    l->C = C;
    l->mask = mask;
    l->reverse_mask = reverse_mask;
    if (mask == FDP_MASK_CHANNEL) {
        FDP_CHECK(C % 2 == 0, "coupling %s: channel-wise mask needs an even channel count, got %d", prefix, C);
        l->Cc = C / 2;
        l->off = reverse_mask ? C / 2 : 0; /* reverse_mask: (x_id, x_change) */
    } else {
        l->Cc = C;
        l->off = 0;
    }
    snprintf(name, sizeof name, "%s.st_net", prefix);
    l->net = fdp_condnet_resnet_create(p, name, l->Cc, mid, 2 * l->Cc, num_blocks, mask == FDP_MASK_CHECKERBOARD);
    int64_t s[3] = {l->Cc, 1, 1};
    snprintf(name, sizeof name, "%s.rescale.weight_g", prefix);
    l->p_rg = fdp_params_add(p, name, FDP_PARAM, FDP_PFLAG_WEIGHT_DECAY, 3, s);
    snprintf(name, sizeof name, "%s.rescale.weight_v", prefix);
    l->p_rv = fdp_params_add(p, name, FDP_PARAM, 0, 3, s);
    fdp_flow_end(&l->base, p);
}

void fdp_coupling_free(fdp_coupling *l) {
    fdp_condnet_destroy(l->net);
    l->net = NULL;
}

void fdp_coupling_prepare(fdp_coupling *l, fdp_ctx *ctx) {
    fdp_backend *be = ctx->be;
    fdp_condnet_prepare(l->net, ctx);
    const float *v = fdp_params_data(ctx->params, l->p_rv);
    l->rnormsq = fdp_arena_doubles(ctx->arena, l->Cc);
    l->rescale = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)l->Cc);
    be->reduce_rows(be, v, v, 1, l->Cc, 1, l->rnormsq);
    fdp_weightnorm_forward_args a = {v, fdp_params_data(ctx->params, l->p_rg), l->rnormsq, l->rescale, 1};
    be->weightnorm_forward(be, l->Cc, &a);
}

/* the s/t network's input: x*b (checkerboard) or the identity half (channel-wise) */
static fdp_tensor st_input(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor x) {
    fdp_backend *be = ctx->be;
    if (l->mask == FDP_MASK_CHECKERBOARD) {
        fdp_tensor xb = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
        fdp_checkerboard_mul_args a = {x.data, xb.data, x.h, x.w, l->reverse_mask, 0};
        be->checkerboard_mul(be, fdp_numel(x), &a);
        return xb;
    }
    int id_off = l->off == 0 ? l->Cc : 0;
    return fdp_channel_slice(ctx, x, id_off, l->Cc);
}

static fdp_coupling_affine_args affine_args(fdp_coupling *l, fdp_tensor x, fdp_tensor st, fdp_tensor y, float *th,
                                            float *s, int inverse) {
    fdp_coupling_affine_args a = {x.data, st.data, l->rescale, y.data, th, s, l->C, l->Cc, l->off, x.h, x.w,
                                  (int)l->mask, l->reverse_mask, inverse};
    return a;
}

fdp_tensor fdp_coupling_forward(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "coupling: input has %d channels, expected %d", x.c, l->C);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_arena_mark m0 = fdp_arena_get_mark(ctx->arena); /* with no_grad, everything after y is scratch */
    l->th = fdp_arena_tensor(ctx->arena, x.n, l->Cc, x.h, x.w);
    fdp_tensor in = st_input(l, ctx, x);
    fdp_tensor st = l->net->ops->forward(l->net, ctx, in);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor s = fdp_arena_tensor(ctx->arena, x.n, l->Cc, x.h, x.w);
    fdp_coupling_affine_args a = affine_args(l, x, st, y, l->th.data, s.data, 0);
    be->coupling_affine(be, fdp_numel(x), &a);
    double *ldj = fdp_arena_doubles(ctx->arena, x.n);
    be->reduce_rows(be, s.data, NULL, 1, x.n, fdp_sample_numel(s), ldj);
    fdp_axpy_f64_args pa = {ldj, sldj, 1.0};
    be->axpy_f64(be, x.n, &pa);
    fdp_arena_reset(ctx->arena, ctx->no_grad ? m0 : m);
    l->y = y;
    return y;
}

fdp_tensor fdp_coupling_inverse(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor y) {
    FDP_CHECK(y.c == l->C, "coupling: input has %d channels, expected %d", y.c, l->C);
    /* the identity part of y equals that of x, so the s/t network sees the same input;
     * an inverse has no backward, so the s/t network's activations are scratch */
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor in = st_input(l, ctx, y);
    fdp_tensor st = l->net->ops->forward(l->net, ctx, in);
    fdp_coupling_affine_args a = affine_args(l, y, st, x, NULL, NULL, 1);
    ctx->be->coupling_affine(ctx->be, fdp_numel(y), &a);
    fdp_arena_reset(ctx->arena, m);
    return x;
}

/* the backward proper: from y (the output), th, dy and dldj, the parameter gradients and dx
 * (written; dx is a separate buffer); uses the s/t network's saved activations */
static void backward_into(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor y, const float *th, fdp_tensor dy,
                          const float *dldj, fdp_tensor dx) {
    fdp_backend *be = ctx->be;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor dst = fdp_arena_tensor(ctx->arena, y.n, 2 * l->Cc, y.h, y.w);
    fdp_tensor dsth = fdp_arena_tensor(ctx->arena, y.n, l->Cc, y.h, y.w);
    fdp_coupling_affine_backward_args a = {dy.data, y.data, th, l->rescale, dldj, dx.data, dst.data,
                                           dsth.data, l->C, l->Cc, l->off, y.h, y.w, (int)l->mask, l->reverse_mask};
    be->coupling_affine_backward(be, fdp_numel(y), &a);
    /* Rescale weight: s = w*th, dw[c] = sum ds*th; then through the weight norm */
    double *dot = fdp_arena_doubles(ctx->arena, 2 * (int64_t)l->Cc);
    be->reduce_rows(be, dsth.data, NULL, y.n, l->Cc, (int64_t)y.h * y.w, dot);
    float *dw = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)l->Cc);
    fdp_f64_to_f32_args cv = {dot, dw, 1.0};
    be->f64_to_f32(be, l->Cc, &cv);
    const float *v = fdp_params_data(ctx->params, l->p_rv);
    be->reduce_rows(be, dw, v, 1, l->Cc, 1, dot + l->Cc);
    fdp_weightnorm_backward_args wa = {dw, v, fdp_params_data(ctx->params, l->p_rg), l->rnormsq, dot + l->Cc,
                                       fdp_params_grad(ctx->params, l->p_rv), fdp_params_grad(ctx->params, l->p_rg),
                                       1};
    be->weightnorm_backward(be, l->Cc, &wa);
    /* through the s/t network into the identity part of x */
    if (l->mask == FDP_MASK_CHECKERBOARD) {
        fdp_tensor dxb = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
        l->net->ops->backward(l->net, ctx, dst, dxb, 0);
        fdp_checkerboard_mul_args ca = {dxb.data, dx.data, y.h, y.w, l->reverse_mask, 1};
        be->checkerboard_mul(be, fdp_numel(y), &ca);
    } else {
        fdp_tensor did = fdp_arena_tensor(ctx->arena, y.n, l->Cc, y.h, y.w);
        l->net->ops->backward(l->net, ctx, dst, did, 0);
        int id_off = l->off == 0 ? l->Cc : 0;
        fdp_slice_copy_args sa = {did.data, dx.data, l->Cc, 0, l->C, id_off, l->Cc, (int64_t)y.h * y.w, 1.0f, 1};
        be->slice_copy(be, fdp_numel(did), &sa);
    }
    fdp_arena_reset(ctx->arena, m);
}

fdp_tensor fdp_coupling_backward(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    fdp_tensor y = l->y;
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    backward_into(l, ctx, y, l->th.data, dy, dldj, dx);
    return dx;
}

/* ---- rebuild_activations: keep nothing, rebuild the input from the output in backward ---- */

void fdp_coupling_forward_inplace(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "coupling: input has %d channels, expected %d", x.c, l->C);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor in = st_input(l, ctx, x);
    fdp_tensor st = l->net->ops->forward(l->net, ctx, in);
    fdp_tensor s = fdp_arena_tensor(ctx->arena, x.n, l->Cc, x.h, x.w);
    /* element-wise: y[i] depends on x[i] and st only, so y may overwrite x; the same
     * arithmetic as fdp_coupling_forward, so the same y and log-det bit for bit */
    fdp_coupling_affine_args a = affine_args(l, x, st, x, NULL, s.data, 0);
    be->coupling_affine(be, fdp_numel(x), &a);
    double *ldj = fdp_arena_doubles(ctx->arena, x.n);
    be->reduce_rows(be, s.data, NULL, 1, x.n, fdp_sample_numel(s), ldj);
    fdp_axpy_f64_args pa = {ldj, sldj, 1.0};
    be->axpy_f64(be, x.n, &pa);
    fdp_arena_reset(ctx->arena, m);
}

void fdp_coupling_backward_rebuild(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy, const float *dldj) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(y.c == l->C && fdp_same_shape(y, dy), "coupling: rebuild backward: y %dx%dx%dx%d, dy %dx%dx%dx%d, %d channels",
              y.n, y.c, y.h, y.w, dy.n, dy.c, dy.h, dy.w, l->C);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    /* the identity part of y is the identity part of x, so this is the forward's s/t input */
    fdp_tensor in = st_input(l, ctx, y);
    int prev = ctx->recompute;
    ctx->recompute = 1; /* BatchNorm: the forward's statistics, no running-statistics update */
    fdp_tensor st = l->net->ops->forward(l->net, ctx, in);
    ctx->recompute = prev;
    /* x = coupling^-1(y), and th = tanh(s_raw) as the forward computed it */
    fdp_tensor th = fdp_arena_tensor(ctx->arena, y.n, l->Cc, y.h, y.w);
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_coupling_affine_args a = affine_args(l, y, st, x, th.data, NULL, 1);
    be->coupling_affine(be, fdp_numel(y), &a);
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    backward_into(l, ctx, y, th.data, dy, dldj, dx);
    be->copy(be, y.data, x.data, sizeof(float) * (size_t)fdp_numel(y));
    be->copy(be, dy.data, dx.data, sizeof(float) * (size_t)fdp_numel(y));
    fdp_arena_reset(ctx->arena, m); /* the s/t network's activations, x, dx */
}

/* ---- as a flow layer (flow.h) ---- */
static fdp_tensor op_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    return fdp_coupling_forward((fdp_coupling *)l, ctx, x, sldj);
}
static fdp_tensor op_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    return fdp_coupling_inverse((fdp_coupling *)l, ctx, y);
}
static fdp_tensor op_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    return fdp_coupling_backward((fdp_coupling *)l, ctx, dy, dldj);
}
static void op_prepare(fdp_flow_layer *l, fdp_ctx *ctx) { fdp_coupling_prepare((fdp_coupling *)l, ctx); }
static void op_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    fdp_coupling *c = (fdp_coupling *)l;
    /* Rescale's weight norm starts at g = v = 1 (the notebook's ones init) */
    for (int i = 0; i < c->Cc; i++) {
        hp[p->entries[c->p_rg].offset + i] = 1.0f;
        hp[p->entries[c->p_rv].offset + i] = 1.0f;
    }
    fdp_condnet_init_values(c->net, p, hp, hb, seed);
}
static fdp_tensor op_forward_inplace(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_coupling_forward_inplace((fdp_coupling *)l, ctx, x, sldj);
    return x;
}
static fdp_tensor op_backward_rebuild(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy,
                                      const float *dldj) {
    fdp_coupling_backward_rebuild((fdp_coupling *)l, ctx, y, dy, dldj);
    return dy;
}
static void op_destroy(fdp_flow_layer *l) { fdp_coupling_free((fdp_coupling *)l); }

static const fdp_flow_ops COUPLING_OPS = {.kind = "coupling",
                                          .forward = op_forward,
                                          .inverse = op_inverse,
                                          .backward = op_backward,
                                          .init_values = op_init_values,
                                          .prepare = op_prepare,
                                          .forward_inplace = op_forward_inplace,
                                          .backward_rebuild = op_backward_rebuild,
                                          .destroy = op_destroy};

fdp_flow_layer *fdp_flow_coupling_create(fdp_params *p, const char *prefix, int C, int mid, int num_blocks,
                                         fdp_mask mask, int reverse_mask) {
    fdp_coupling *l = fdp_xcalloc(1, sizeof *l);
    fdp_coupling_init(l, p, prefix, C, mid, num_blocks, mask, reverse_mask);
    return &l->base;
}

/* variants: checkerboard / channel-wise, each with and without reverse_mask */
static fdp_flow_layer *example(fdp_params *p, int variant, int *c, int *h, int *w) {
    int channel = variant / 2;
    *c = channel ? 4 : 2;
    *h = 4;
    *w = 4;
    return fdp_flow_coupling_create(p, "layer", *c, 4, 1, channel ? FDP_MASK_CHANNEL : FDP_MASK_CHECKERBOARD,
                                    variant % 2);
}
const fdp_flow_kind fdp_flow_kind_coupling = {"coupling", 4, example, 0};
