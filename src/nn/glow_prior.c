/* glow_prior.c — Glow's priors (openai/glow's split2d / split2d_prior and prior):
 *  - split: z1, z2 = z[:, :C/2], z[:, C/2:]; h = Conv2dZeros(z1) (C/2 -> C),
 *    mean = h[:, 0::2], log-std = h[:, 1::2]; log N(z2; mean, exp(logs)^2)
 *    enters the objective, z1 goes on. Seen as a bijection z -> (z1, eps) with
 *    eps = (z2 - mean)/exp(logs), its log-det is -sum(logs) and the density
 *    log N(eps; 0, 1) + that log-det is the log-density above (what the tests check).
 *  - top prior: diagonal Gaussian with a learned per-channel mean / log-std
 *    (learntop: openai's Conv2dZeros applied to zeros, i.e. h = b * exp(3 logs);
 *    mean = h[:C], log-std = h[C:]) or the standard normal.
 * Sampling at temperature T: z = mean + exp(logs) * eps * T. */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"

/* logp[n] += sum over the sample of lp (float elements, summed in double) */
static void add_logp(fdp_ctx *ctx, const float *lp, int n, int64_t per_sample, double *logp) {
    fdp_backend *be = ctx->be;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    double *s = fdp_arena_doubles(ctx->arena, n);
    be->reduce_rows(be, lp, NULL, 1, n, per_sample, s);
    fdp_axpy_f64_args a = {s, logp, 1.0};
    be->axpy_f64(be, n, &a);
    fdp_arena_reset(ctx->arena, m);
}

/* ---- split ------------------------------------------------------------------------- */
void fdp_glow_split_init(fdp_glow_split *l, fdp_params *p, const char *prefix, int C) {
    char name[2 * FDP_NAME_MAX];
    FDP_CHECK(C % 2 == 0 && C >= 2, "glow split %s: needs an even channel count, got %d", prefix, C);
    l->C = C;
    snprintf(name, sizeof name, "%s.conv", prefix);
    fdp_conv_zeros_init(&l->conv, p, name, C / 2, C, 3);
}

fdp_tensor fdp_glow_split_forward(fdp_glow_split *l, fdp_ctx *ctx, fdp_tensor z, double *logp) {
    FDP_CHECK(z.c == l->C, "glow split: input has %d channels, expected %d", z.c, l->C);
    int C2 = l->C / 2;
    fdp_tensor z1 = fdp_channel_slice(ctx, z, 0, C2);
    l->z1 = z1;
    l->z2 = fdp_channel_slice(ctx, z, C2, C2);
    l->c = fdp_arena_tensor(ctx->arena, z.n, l->C, z.h, z.w);
    l->h = fdp_arena_tensor(ctx->arena, z.n, l->C, z.h, z.w);
    l->eps = fdp_arena_tensor(ctx->arena, z.n, C2, z.h, z.w);
    fdp_conv_zeros_forward(&l->conv, ctx, z1, l->c, l->h);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *lp = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(l->z2));
    fdp_glow_gaussian_logp_args a = {l->z2.data, l->h.data, lp, l->eps.data, C2, (int64_t)z.h * z.w, 0};
    ctx->be->glow_gaussian_logp(ctx->be, fdp_numel(l->z2), &a);
    add_logp(ctx, lp, z.n, fdp_sample_numel(l->z2), logp);
    fdp_arena_reset(ctx->arena, m);
    return z1;
}

fdp_tensor fdp_glow_split_inverse(fdp_glow_split *l, fdp_ctx *ctx, fdp_tensor z1, fdp_tensor eps, float temperature) {
    int C2 = l->C / 2;
    FDP_CHECK(z1.c == C2 && fdp_same_shape(z1, eps), "glow split inverse: z1 %d channels, eps (%d,%d,%d,%d)", z1.c,
              eps.n, eps.c, eps.h, eps.w);
    fdp_tensor z = fdp_arena_tensor(ctx->arena, z1.n, l->C, z1.h, z1.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor c = fdp_arena_tensor(ctx->arena, z1.n, l->C, z1.h, z1.w);
    fdp_tensor h = fdp_arena_tensor(ctx->arena, z1.n, l->C, z1.h, z1.w);
    fdp_tensor z2 = fdp_arena_tensor(ctx->arena, z1.n, C2, z1.h, z1.w);
    fdp_conv_zeros_forward(&l->conv, ctx, z1, c, h);
    int64_t HW = (int64_t)z1.h * z1.w;
    fdp_glow_gaussian_sample_args a = {eps.data, h.data, z2.data, temperature, C2, HW, 0};
    ctx->be->glow_gaussian_sample(ctx->be, fdp_numel(z2), &a);
    fdp_slice_copy_args s1 = {z1.data, z.data, C2, 0, l->C, 0, C2, HW, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(z1), &s1);
    fdp_slice_copy_args s2 = {z2.data, z.data, C2, 0, l->C, C2, C2, HW, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(z2), &s2);
    fdp_arena_reset(ctx->arena, m);
    return z;
}

fdp_tensor fdp_glow_split_backward(fdp_glow_split *l, fdp_ctx *ctx, fdp_tensor dz1, const float *dlogp) {
    fdp_backend *be = ctx->be;
    int C2 = l->C / 2;
    FDP_CHECK(l->z1.data && fdp_same_shape(dz1, l->z1), "glow split: backward without a matching forward");
    int64_t HW = (int64_t)dz1.h * dz1.w;
    fdp_tensor dz = fdp_arena_tensor(ctx->arena, dz1.n, l->C, dz1.h, dz1.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor dz2 = fdp_arena_tensor(ctx->arena, dz1.n, C2, dz1.h, dz1.w);
    fdp_tensor dh = fdp_arena_tensor(ctx->arena, dz1.n, l->C, dz1.h, dz1.w);
    fdp_glow_gaussian_backward_args ga = {l->z2.data, l->h.data, dlogp, dz2.data, dh.data, C2, HW, 0, 0};
    be->glow_gaussian_backward(be, fdp_numel(dz2), &ga);
    /* dz[:, :C2] = dz1 + d(prior)/dz1 ; dz[:, C2:] = dz2 */
    fdp_tensor g1 = fdp_arena_tensor(ctx->arena, dz1.n, C2, dz1.h, dz1.w);
    fdp_axpby_args cp = {dz1.data, g1.data, 1.0f, 0.0f};
    be->axpby(be, fdp_numel(dz1), &cp);
    fdp_conv_zeros_backward(&l->conv, ctx, l->z1, l->c, dh, g1.data, 1);
    fdp_slice_copy_args s1 = {g1.data, dz.data, C2, 0, l->C, 0, C2, HW, 1.0f, 0};
    be->slice_copy(be, fdp_numel(g1), &s1);
    fdp_slice_copy_args s2 = {dz2.data, dz.data, C2, 0, l->C, C2, C2, HW, 1.0f, 0};
    be->slice_copy(be, fdp_numel(dz2), &s2);
    fdp_arena_reset(ctx->arena, m);
    return dz;
}

/* ---- top prior ----------------------------------------------------------------------- */
void fdp_glow_prior_init(fdp_glow_prior *l, fdp_params *p, const char *prefix, int C, int learn) {
    char name[2 * FDP_NAME_MAX];
    int64_t s[1] = {2 * C};
    l->C = C;
    l->learn = learn;
    l->p_b = l->p_logs = -1;
    if (learn) {
        snprintf(name, sizeof name, "%s.p.b", prefix);
        l->p_b = fdp_params_add(p, name, FDP_PARAM, 0, 1, s);
        snprintf(name, sizeof name, "%s.p.logs", prefix);
        l->p_logs = fdp_params_add(p, name, FDP_PARAM, 0, 1, s);
    }
}

/* the (2C) vector [mean, log-std] of this step (arena) */
static float *prior_vec(fdp_glow_prior *l, fdp_ctx *ctx) {
    float *h = fdp_arena_alloc(ctx->arena, sizeof(float) * 2 * (size_t)l->C);
    if (l->learn) {
        fdp_glow_prior_vec_args a = {fdp_params_data(ctx->params, l->p_b), fdp_params_data(ctx->params, l->p_logs), h,
                                     FDP_GLOW_LOGSCALE};
        ctx->be->glow_prior_vec(ctx->be, 2 * l->C, &a);
    } else {
        fdp_fill_args f = {h, 0.0f};
        ctx->be->fill(ctx->be, 2 * l->C, &f);
    }
    return h;
}

void fdp_glow_prior_forward(fdp_glow_prior *l, fdp_ctx *ctx, fdp_tensor z, double *logp) {
    FDP_CHECK(z.c == l->C, "glow prior: input has %d channels, expected %d", z.c, l->C);
    l->h = prior_vec(l, ctx);
    l->z = z;
    l->eps = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *lp = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(z));
    fdp_glow_gaussian_logp_args a = {z.data, l->h, lp, l->eps.data, l->C, (int64_t)z.h * z.w, 1};
    ctx->be->glow_gaussian_logp(ctx->be, fdp_numel(z), &a);
    add_logp(ctx, lp, z.n, fdp_sample_numel(z), logp);
    fdp_arena_reset(ctx->arena, m);
}

fdp_tensor fdp_glow_prior_sample(fdp_glow_prior *l, fdp_ctx *ctx, fdp_tensor eps, float temperature) {
    FDP_CHECK(eps.c == l->C, "glow prior: eps has %d channels, expected %d", eps.c, l->C);
    fdp_tensor z = fdp_arena_tensor(ctx->arena, eps.n, eps.c, eps.h, eps.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *h = prior_vec(l, ctx);
    fdp_glow_gaussian_sample_args a = {eps.data, h, z.data, temperature, l->C, (int64_t)eps.h * eps.w, 1};
    ctx->be->glow_gaussian_sample(ctx->be, fdp_numel(z), &a);
    fdp_arena_reset(ctx->arena, m);
    return z;
}

fdp_tensor fdp_glow_prior_backward(fdp_glow_prior *l, fdp_ctx *ctx, const float *dlogp) {
    fdp_backend *be = ctx->be;
    fdp_tensor z = l->z;
    FDP_CHECK(z.data && l->h, "glow prior: backward without a matching forward");
    int64_t HW = (int64_t)z.h * z.w;
    fdp_tensor dz = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *dh = fdp_arena_alloc(ctx->arena, sizeof(float) * 2 * (size_t)fdp_numel(z));
    fdp_glow_gaussian_backward_args a = {z.data, l->h, dlogp, dz.data, dh, l->C, HW, 1, 0};
    be->glow_gaussian_backward(be, fdp_numel(z), &a);
    if (l->learn) {
        double *dsum = fdp_arena_doubles(ctx->arena, 2 * (int64_t)l->C);
        be->reduce_rows(be, dh, NULL, z.n, 2 * l->C, HW, dsum);
        fdp_glow_prior_grad_args ga = {dsum, fdp_params_data(ctx->params, l->p_b),
                                       fdp_params_data(ctx->params, l->p_logs), fdp_params_grad(ctx->params, l->p_b),
                                       fdp_params_grad(ctx->params, l->p_logs), FDP_GLOW_LOGSCALE};
        be->glow_prior_grad(be, 2 * l->C, &ga);
    }
    fdp_arena_reset(ctx->arena, m);
    return dz;
}

/* ---- as flow layers (flow.h): factor-out layers with their latent slice ---------------- */
/* per sample s: ctx->latent[s * latent_dim + lat_off + i] (to_latent) = or <- t[s * lat_len + i] */
static void latent_io(fdp_ctx *ctx, const fdp_flow_layer *l, fdp_tensor t, int to_latent) {
    int64_t len = fdp_sample_numel(t), D = ctx->latent_dim, off = l->lat_off;
    FDP_CHECK(ctx->latent && len == l->lat_len && off + len <= D,
              "glow %s: latent slice [%lld, +%lld) of %lld floats for a %lld-float part", l->ops->kind,
              (long long)off, (long long)l->lat_len, (long long)D, (long long)len);
    const float *src = to_latent ? t.data : ctx->latent;
    float *dst = to_latent ? ctx->latent : t.data;
    fdp_slice_copy_args a = {src, dst, (int)(to_latent ? len : D), (int)(to_latent ? 0 : off), (int)(to_latent ? D : len),
                             (int)(to_latent ? off : 0), (int)len, 1, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, (int64_t)t.n * len, &a);
}

/* the forward of a rebuild's backward: what backward needs saved again, nothing counted or written out */
static void recompute_begin(fdp_ctx *ctx, fdp_ctx *saved, double **scratch, int n) {
    *saved = *ctx;
    ctx->latent = NULL;
    ctx->no_grad = 0;
    ctx->recompute = 1;
    *scratch = fdp_arena_doubles(ctx->arena, n);
    ctx->be->memset0(ctx->be, *scratch, sizeof(double) * (size_t)n);
}
static void recompute_end(fdp_ctx *ctx, const fdp_ctx *saved) {
    ctx->latent = saved->latent;
    ctx->no_grad = saved->no_grad;
    ctx->recompute = saved->recompute;
}

static fdp_tensor split_fwd(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor z, double *sldj) {
    fdp_glow_split *l = (fdp_glow_split *)b;
    fdp_tensor z1 = fdp_glow_split_forward(l, ctx, z, sldj);
    if (ctx->latent) latent_io(ctx, b, l->eps, 1);
    return z1;
}
static fdp_tensor split_inv(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor z1) {
    fdp_tensor e = fdp_arena_tensor(ctx->arena, z1.n, z1.c, z1.h, z1.w);
    latent_io(ctx, b, e, 0);
    return fdp_glow_split_inverse((fdp_glow_split *)b, ctx, z1, e, ctx->temperature);
}
static fdp_tensor split_bwd(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor dz1, const float *dldj) {
    return fdp_glow_split_backward((fdp_glow_split *)b, ctx, dz1, dldj);
}

/* z2 stays in the arena (below the mark the pass returns to) until backward_rebuild; z1 moves to
 * the front of the buffer */
static fdp_tensor split_fwd_inplace(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_glow_split *l = (fdp_glow_split *)b;
    l->kept = fdp_arena_tensor(ctx->arena, x.n, l->C / 2, x.h, x.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    int ng = ctx->no_grad;
    ctx->no_grad = 1;
    fdp_tensor z1 = split_fwd(b, ctx, x, sldj);
    ctx->no_grad = ng;
    ctx->be->copy(ctx->be, l->kept.data, l->z2.data, sizeof(float) * (size_t)fdp_numel(l->kept));
    z1 = fdp_flow_overwrite(ctx, x, z1);
    fdp_arena_reset(ctx->arena, m);
    return z1;
}

static fdp_tensor split_bwd_rebuild(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy, const float *dldj) {
    fdp_glow_split *l = (fdp_glow_split *)b;
    FDP_CHECK(l->kept.data && fdp_same_shape(y, l->kept) && fdp_same_shape(dy, y),
              "glow split: backward_rebuild without a matching forward_inplace");
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor x = fdp_channel_cat(ctx, y, l->kept);
    fdp_ctx saved;
    double *scratch;
    recompute_begin(ctx, &saved, &scratch, y.n);
    fdp_glow_split_forward(l, ctx, x, scratch);
    recompute_end(ctx, &saved);
    fdp_tensor dx = fdp_glow_split_backward(l, ctx, dy, dldj);
    fdp_flow_overwrite(ctx, y, x);
    dx = fdp_flow_overwrite(ctx, dy, dx);
    l->kept.data = NULL;
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

static const fdp_flow_ops SPLIT_OPS = {.kind = "glow_split", .forward = split_fwd, .inverse = split_inv,
                                       .backward = split_bwd, .forward_inplace = split_fwd_inplace,
                                       .backward_rebuild = split_bwd_rebuild};

fdp_flow_layer *fdp_flow_glow_split_create(fdp_params *p, const char *prefix, int C, int64_t lat_off,
                                           int64_t lat_len) {
    fdp_glow_split *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &SPLIT_OPS, p);
    fdp_glow_split_init(l, p, prefix, C);
    fdp_flow_end(&l->base, p);
    l->base.lat_off = lat_off;
    l->base.lat_len = lat_len;
    return &l->base;
}

static fdp_flow_layer *split_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)variant;
    *c = 4;
    *h = 4;
    *w = 4;
    return fdp_flow_glow_split_create(p, "layer", 4, 0, 2 * 4 * 4);
}
const fdp_flow_kind fdp_flow_kind_glow_split = {"glow_split", 1, split_example, 1};

/* the top prior consumes the whole tensor: its output is empty (c = 0) */
static fdp_tensor prior_fwd(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor z, double *sldj) {
    fdp_glow_prior *l = (fdp_glow_prior *)b;
    fdp_glow_prior_forward(l, ctx, z, sldj);
    if (ctx->latent) latent_io(ctx, b, l->eps, 1);
    return fdp_tensor_wrap(z.data, z.n, 0, z.h, z.w, z.dev);
}
static fdp_tensor prior_inv(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor y) {
    fdp_glow_prior *l = (fdp_glow_prior *)b;
    FDP_CHECK(y.c == 0, "glow prior: inverse of a %d-channel tensor (its output is empty)", y.c);
    fdp_tensor e = fdp_arena_tensor(ctx->arena, y.n, l->C, y.h, y.w);
    latent_io(ctx, b, e, 0);
    return fdp_glow_prior_sample(l, ctx, e, ctx->temperature);
}
static fdp_tensor prior_bwd(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    FDP_CHECK(dy.c == 0, "glow prior: backward of a %d-channel gradient (its output is empty)", dy.c);
    return fdp_glow_prior_backward((fdp_glow_prior *)b, ctx, dldj);
}

/* z stays in the arena (below the mark) until backward_rebuild */
static fdp_tensor prior_fwd_inplace(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_glow_prior *l = (fdp_glow_prior *)b;
    l->kept = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    ctx->be->copy(ctx->be, l->kept.data, x.data, sizeof(float) * (size_t)fdp_numel(x));
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    int ng = ctx->no_grad;
    ctx->no_grad = 1;
    fdp_tensor y = prior_fwd(b, ctx, x, sldj);
    ctx->no_grad = ng;
    fdp_arena_reset(ctx->arena, m);
    return y;
}

static fdp_tensor prior_bwd_rebuild(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy, const float *dldj) {
    fdp_glow_prior *l = (fdp_glow_prior *)b;
    fdp_tensor z = l->kept;
    FDP_CHECK(z.data && y.c == 0 && dy.c == 0 && y.n == z.n,
              "glow prior: backward_rebuild without a matching forward_inplace");
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_ctx saved;
    double *scratch;
    recompute_begin(ctx, &saved, &scratch, z.n);
    fdp_glow_prior_forward(l, ctx, z, scratch);
    recompute_end(ctx, &saved);
    fdp_tensor dz = fdp_glow_prior_backward(l, ctx, dldj);
    fdp_flow_overwrite(ctx, y, z);
    dz = fdp_flow_overwrite(ctx, dy, dz);
    l->kept.data = NULL;
    fdp_arena_reset(ctx->arena, m);
    return dz;
}

static const fdp_flow_ops PRIOR_OPS = {.kind = "glow_prior", .forward = prior_fwd, .inverse = prior_inv,
                                       .backward = prior_bwd, .forward_inplace = prior_fwd_inplace,
                                       .backward_rebuild = prior_bwd_rebuild};

fdp_flow_layer *fdp_flow_glow_prior_create(fdp_params *p, const char *prefix, int C, int learn, int64_t lat_off,
                                           int64_t lat_len) {
    fdp_glow_prior *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &PRIOR_OPS, p);
    fdp_glow_prior_init(l, p, prefix, C, learn);
    fdp_flow_end(&l->base, p);
    l->base.lat_off = lat_off;
    l->base.lat_len = lat_len;
    return &l->base;
}

/* variant 0: N(0, 1), 1: learntop */
static fdp_flow_layer *prior_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    *c = 4;
    *h = 2;
    *w = 2;
    return fdp_flow_glow_prior_create(p, "layer", 4, variant, 0, 4 * 2 * 2);
}
const fdp_flow_kind fdp_flow_kind_glow_prior = {"glow_prior", 2, prior_example, 1};
