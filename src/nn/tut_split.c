/* tut_split.c — SplitFlow of Lippe's Tutorial 9 (a factor-out flow layer, flow.h): channels
 * [0, C/2) stay in the flow, [C/2, C) (z_split) go to a standard-normal prior:
 * log-det += sum log N(z_split; 0, 1). Forward writes z_split to ctx->latent (when not NULL) at
 * [lat_off, lat_off + lat_len) of each sample; inverse reads it back, scaled by ctx->temperature
 * (the tutorial's sample() draws it from the prior). Element-wise math: tutorial_ops.h. */
#include "flowdp/error.h"
#include "flowdp/flow.h"

typedef struct tut_split {
    fdp_flow_layer base;
    int C;
    fdp_tensor z2;                  /* saved: what left the flow */
    fdp_tensor kept;                /* forward_inplace: z_split, below the arena mark, for backward_rebuild */
} tut_split;

/* per sample s: ctx->latent[s * latent_dim + lat_off + i] (to_latent) = or <- t[s * lat_len + i] */
static void latent_io(fdp_ctx *ctx, const fdp_flow_layer *l, fdp_tensor t, int to_latent) {
    int64_t len = fdp_sample_numel(t), D = ctx->latent_dim, off = l->lat_off;
    FDP_CHECK(ctx->latent && len == l->lat_len && off + len <= D,
              "tutorial split: latent slice [%lld, +%lld) of %lld floats for a %lld-float part", (long long)off,
              (long long)l->lat_len, (long long)D, (long long)len);
    const float *src = to_latent ? t.data : ctx->latent;
    float *dst = to_latent ? ctx->latent : t.data;
    fdp_slice_copy_args a = {src, dst, (int)(to_latent ? len : D), (int)(to_latent ? 0 : off), (int)(to_latent ? D : len),
                             (int)(to_latent ? off : 0), (int)len, 1, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, (int64_t)t.n * len, &a);
}

static fdp_tensor ts_forward(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    tut_split *l = (tut_split *)b;
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "tutorial split: input has %d channels, expected %d", x.c, l->C);
    int keep = l->C / 2;
    fdp_tensor z1 = fdp_channel_slice(ctx, x, 0, keep);
    fdp_tensor z2 = fdp_channel_slice(ctx, x, keep, l->C - keep);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *lp = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(z2));
    double *sum = fdp_arena_doubles(ctx->arena, x.n);
    fdp_tut_normal_logp_args a = {z2.data, lp};
    be->tut_normal_logp(be, fdp_numel(z2), &a);
    be->reduce_rows(be, lp, NULL, 1, x.n, fdp_sample_numel(z2), sum);
    fdp_axpy_f64_args pa = {sum, sldj, 1.0};
    be->axpy_f64(be, x.n, &pa);
    fdp_arena_reset(ctx->arena, m);
    if (ctx->latent) latent_io(ctx, b, z2, 1);
    l->z2 = z2;
    return z1;
}

static fdp_tensor ts_inverse(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor z1) {
    tut_split *l = (tut_split *)b;
    fdp_tensor x = fdp_arena_tensor(ctx->arena, z1.n, l->C, z1.h, z1.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor e = fdp_arena_tensor(ctx->arena, z1.n, l->C - l->C / 2, z1.h, z1.w);
    latent_io(ctx, b, e, 0);
    fdp_scale_shift_args sc = {e.data, e.data, ctx->temperature, 0.0f};
    ctx->be->scale_shift(ctx->be, fdp_numel(e), &sc);
    fdp_tensor cat = fdp_channel_cat(ctx, z1, e);
    ctx->be->copy(ctx->be, x.data, cat.data, sizeof(float) * (size_t)fdp_numel(x));
    fdp_arena_reset(ctx->arena, m);
    return x;
}

/* dx = cat(dz1, -dldj z_split) */
static fdp_tensor grad_into(fdp_ctx *ctx, fdp_tensor z2, fdp_tensor dz1, const float *dldj) {
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, dz1.n, dz1.c + z2.c, dz1.h, dz1.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor dz2 = fdp_arena_tensor(ctx->arena, z2.n, z2.c, z2.h, z2.w);
    fdp_tut_normal_logp_backward_args a = {z2.data, dldj, dz2.data, fdp_sample_numel(z2)};
    ctx->be->tut_normal_logp_backward(ctx->be, fdp_numel(z2), &a);
    fdp_tensor cat = fdp_channel_cat(ctx, dz1, dz2);
    ctx->be->copy(ctx->be, dx.data, cat.data, sizeof(float) * (size_t)fdp_numel(dx));
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

static fdp_tensor ts_backward(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor dz1, const float *dldj) {
    tut_split *l = (tut_split *)b;
    FDP_CHECK(l->z2.data && l->z2.n == dz1.n && l->z2.h == dz1.h && l->z2.w == dz1.w && dz1.c == l->C / 2,
              "tutorial split: backward without its forward");
    return grad_into(ctx, l->z2, dz1, dldj);
}

/* z_split stays in the arena (below the mark the pass returns to) until backward_rebuild */
static fdp_tensor ts_forward_inplace(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    tut_split *l = (tut_split *)b;
    l->kept = fdp_arena_tensor(ctx->arena, x.n, l->C - l->C / 2, x.h, x.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor z1 = ts_forward(b, ctx, x, sldj);
    ctx->be->copy(ctx->be, l->kept.data, l->z2.data, sizeof(float) * (size_t)fdp_numel(l->kept));
    z1 = fdp_flow_overwrite(ctx, x, z1);
    fdp_arena_reset(ctx->arena, m);
    return z1;
}

static fdp_tensor ts_backward_rebuild(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy, const float *dldj) {
    tut_split *l = (tut_split *)b;
    FDP_CHECK(l->kept.data && fdp_same_shape(dy, y) && y.n == l->kept.n && y.h == l->kept.h && y.w == l->kept.w,
              "tutorial split: backward_rebuild without a matching forward_inplace");
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor x = fdp_channel_cat(ctx, y, l->kept);
    fdp_tensor dx = grad_into(ctx, l->kept, dy, dldj);
    fdp_flow_overwrite(ctx, y, x);
    dx = fdp_flow_overwrite(ctx, dy, dx);
    l->kept.data = NULL;
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

static const fdp_flow_ops TUT_SPLIT_OPS = {.kind = "tut_split",
                                           .forward = ts_forward,
                                           .inverse = ts_inverse,
                                           .backward = ts_backward,
                                           .forward_inplace = ts_forward_inplace,
                                           .backward_rebuild = ts_backward_rebuild};

fdp_flow_layer *fdp_flow_tut_split_create(int C, int64_t lat_off, int64_t lat_len) {
    FDP_CHECK(C >= 2, "tutorial split: %d channels", C);
    tut_split *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &TUT_SPLIT_OPS, NULL);
    l->C = C;
    l->base.lat_off = lat_off;
    l->base.lat_len = lat_len;
    return &l->base;
}

static fdp_flow_layer *example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)p;
    (void)variant;
    *c = 4;
    *h = 4;
    *w = 4;
    return fdp_flow_tut_split_create(4, 0, 2 * 4 * 4);
}
const fdp_flow_kind fdp_flow_kind_tut_split = {"tut_split", 1, example, 1};
