/* actnorm.c — Glow's ActNorm (openai/glow's actnorm: actnorm_center then
 * actnorm_scale): y = (x + b) * exp(3 logs) per channel, log-det
 * H*W*3*sum(logs) per sample, with data-dependent initialization
 * b = -mean, logs = log(1/(std + 1e-6))/3 from the first training batch.
 *
 * The statistics of that batch are GLOBAL: the per-channel sums go through
 * ctx->allreduce_f64 (as synchronized BatchNorm does), so R ranks with B
 * images each initialize exactly like 1 rank with the R*B images. Whether a
 * layer is initialized is the buffer `<prefix>.initialized` (0/1) in the
 * parameter table: checkpoints carry it, and a resumed run, flowdp-eval and
 * flowdp-sample never re-initialize. Initialization happens only when
 * ctx->training and the flag is 0; it writes b, logs and the flag in place
 * (on every rank, with the same values), before the batch is transformed. */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"

void fdp_actnorm_init(fdp_actnorm *l, fdp_params *p, const char *prefix, int C, int ddi) {
    char name[2 * FDP_NAME_MAX];
    int64_t s[1] = {C};
    l->C = C;
    l->ddi = ddi;
    snprintf(name, sizeof name, "%s.b", prefix);
    l->p_b = fdp_params_add(p, name, FDP_PARAM, 0, 1, s);
    snprintf(name, sizeof name, "%s.logs", prefix);
    l->p_logs = fdp_params_add(p, name, FDP_PARAM, 0, 1, s);
    l->b_init = -1;
    if (ddi) {
        snprintf(name, sizeof name, "%s.initialized", prefix);
        l->b_init = fdp_params_add(p, name, FDP_BUFFER, 0, 0, NULL);
    }
    l->x.data = l->y.data = NULL;
}

/* b and logs from the global channel statistics of x */
static void data_init(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x) {
    fdp_backend *be = ctx->be;
    int64_t HW = (int64_t)x.h * x.w;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    double *sums = fdp_arena_doubles(ctx->arena, 2 * (int64_t)l->C);
    be->channel_moments(be, x.data, x.n, l->C, HW, sums, sums + l->C);
    if (ctx->allreduce_f64) ctx->allreduce_f64(ctx->comm, sums, 2 * l->C);
    double count = (double)x.n * (double)HW * (double)(ctx->world_size > 0 ? ctx->world_size : 1);
    fdp_glow_actnorm_ddi_args a = {sums, sums + l->C, count, fdp_params_data(ctx->params, l->p_b),
                                   fdp_params_data(ctx->params, l->p_logs), fdp_params_data(ctx->params, l->b_init),
                                   FDP_GLOW_LOGSCALE};
    be->glow_actnorm_ddi(be, l->C, &a);
    fdp_arena_reset(ctx->arena, m);
}

/* exp(3 logs) per channel (arena), so the element-wise loops take no exp */
static float *channel_scale(fdp_actnorm *l, fdp_ctx *ctx) {
    float *s = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)l->C);
    fdp_glow_channel_scale_args a = {fdp_params_data(ctx->params, l->p_logs), s, FDP_GLOW_LOGSCALE};
    ctx->be->glow_channel_scale(ctx->be, l->C, &a);
    return s;
}

static void apply_op(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int relu, int inverse) {
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_glow_actnorm_args a = {x.data, y.data, fdp_params_data(ctx->params, l->p_b),
                               fdp_params_data(ctx->params, l->p_logs), l->C, (int64_t)x.h * x.w, FDP_GLOW_LOGSCALE,
                               inverse, relu, channel_scale(l, ctx)};
    ctx->be->glow_actnorm(ctx->be, fdp_numel(x), &a);
    fdp_arena_reset(ctx->arena, m);
}

void fdp_actnorm_recompute(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int relu) {
    FDP_CHECK(x.c == l->C && fdp_same_shape(x, y), "actnorm: %d channels given to a layer of %d (or y differs)", x.c,
              l->C);
    apply_op(l, ctx, x, y, relu, 0);
}

void fdp_actnorm_apply(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int relu, double *sldj) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "actnorm: %d channels given to a layer of %d", x.c, l->C);
    if (l->ddi && ctx->training) {
        float flag = 1.0f;
        be->to_host(be, &flag, fdp_params_data(ctx->params, l->b_init), sizeof flag);
        if (flag == 0.0f) data_init(l, ctx, x);
    }
    fdp_actnorm_recompute(l, ctx, x, y, relu);
    if (sldj) {
        /* log-det per sample: H*W*3*sum(logs), the same for every sample */
        fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
        double *s = fdp_arena_doubles(ctx->arena, 1);
        be->reduce_rows(be, fdp_params_data(ctx->params, l->p_logs), NULL, 1, 1, l->C, s);
        fdp_glow_add_bcast_f64_args a = {s, sldj, (double)FDP_GLOW_LOGSCALE * (double)x.h * (double)x.w};
        be->glow_add_bcast_f64(be, x.n, &a);
        fdp_arena_reset(ctx->arena, m);
    }
}

void fdp_actnorm_grad(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, fdp_tensor dy, float *dx, int relu,
                      const float *dldj) {
    fdp_backend *be = ctx->be;
    int64_t HW = (int64_t)x.h * x.w;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_glow_actnorm_backward_args ba = {dy.data, relu ? y.data : NULL,    dx, fdp_params_data(ctx->params, l->p_logs),
                                         l->C,    HW, FDP_GLOW_LOGSCALE, relu, channel_scale(l, ctx)};
    be->glow_actnorm_backward(be, fdp_numel(x), &ba);
    double *sums = fdp_arena_doubles(ctx->arena, 2 * (int64_t)l->C + 1);
    be->reduce_rows(be, dx, NULL, x.n, l->C, HW, sums);
    be->reduce_rows(be, dx, x.data, x.n, l->C, HW, sums + l->C);
    if (dldj) be->reduce_rows(be, dldj, NULL, 1, 1, x.n, sums + 2 * l->C);
    fdp_glow_actnorm_grad_args ga = {sums, sums + l->C, dldj ? sums + 2 * l->C : NULL,
                                     fdp_params_data(ctx->params, l->p_b), fdp_params_grad(ctx->params, l->p_b),
                                     fdp_params_grad(ctx->params, l->p_logs), FDP_GLOW_LOGSCALE, (double)HW};
    be->glow_actnorm_grad(be, l->C, &ga);
    fdp_arena_reset(ctx->arena, m);
}

fdp_tensor fdp_actnorm_forward(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_actnorm_apply(l, ctx, x, y, 0, sldj);
    l->x = x;
    l->y = y;
    return y;
}

fdp_tensor fdp_actnorm_inverse(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor y) {
    FDP_CHECK(y.c == l->C, "actnorm: %d channels given to a layer of %d", y.c, l->C);
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    apply_op(l, ctx, y, x, 0, 1);
    return x;
}

fdp_tensor fdp_actnorm_backward(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    FDP_CHECK(l->x.data && fdp_same_shape(dy, l->y), "actnorm: backward without a matching forward");
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, dy.n, dy.c, dy.h, dy.w);
    fdp_actnorm_grad(l, ctx, l->x, l->y, dy, dx.data, 0, dldj);
    return dx;
}

/* ---- as a flow layer (flow.h) ---- */
static fdp_tensor an_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    return fdp_actnorm_forward((fdp_actnorm *)l, ctx, x, sldj);
}
static fdp_tensor an_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    return fdp_actnorm_inverse((fdp_actnorm *)l, ctx, y);
}
static fdp_tensor an_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    return fdp_actnorm_backward((fdp_actnorm *)l, ctx, dy, dldj);
}
static const fdp_flow_ops ACTNORM_OPS = {.kind = "actnorm", .forward = an_forward, .inverse = an_inverse,
                                         .backward = an_backward};

fdp_flow_layer *fdp_flow_actnorm_create(fdp_params *p, const char *prefix, int C) {
    fdp_actnorm *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &ACTNORM_OPS, p);
    fdp_actnorm_init(l, p, prefix, C, 1);
    fdp_flow_end(&l->base, p);
    return &l->base;
}

static fdp_flow_layer *actnorm_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)variant;
    *c = 3;
    *h = 4;
    *w = 4;
    return fdp_flow_actnorm_create(p, "layer", 3);
}
const fdp_flow_kind fdp_flow_kind_actnorm = {"actnorm", 1, actnorm_example, 0};
