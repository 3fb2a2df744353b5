/* preprocess.c — RealNVP's logit transform of dequantized pixels (a flow layer) with its
 * log-det, the uniform dequantization kernel's wrapper, and the Gaussian prior / loss (the
 * notebook's RealNVPLoss). */
#include <math.h>
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/flow.h"

fdp_tensor fdp_dequantize(fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, int n_bins, int round) {
    FDP_CHECK(fdp_same_shape(x, u), "dequantize: noise shape differs from the batch");
    fdp_tensor v = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_dequant_uniform_args a = {x.data, u.data, v.data, (float)n_bins, (float)(256 / n_bins), round};
    ctx->be->dequant_uniform(ctx->be, fdp_numel(x), &a);
    return v;
}

fdp_tensor fdp_logit_forward(fdp_ctx *ctx, fdp_tensor v, float bound, double *sldj) {
    fdp_backend *be = ctx->be;
    fdp_tensor y = fdp_arena_tensor(ctx->arena, v.n, v.c, v.h, v.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *ldj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(v));
    double *sum = fdp_arena_doubles(ctx->arena, v.n);
    fdp_logit_forward_args a = {v.data, y.data, ldj, bound};
    be->logit_forward(be, fdp_numel(v), &a);
    be->reduce_rows(be, ldj, NULL, 1, v.n, fdp_sample_numel(v), sum);
    fdp_axpy_f64_args pa = {sum, sldj, 1.0};
    be->axpy_f64(be, v.n, &pa);
    fdp_arena_reset(ctx->arena, m);
    return y;
}

double fdp_gaussian_nll(fdp_ctx *ctx, fdp_tensor z, const double *sldj, double k, double *nll_per_sample) {
    fdp_backend *be = ctx->be;
    int n = z.n;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    double *sq = fdp_arena_doubles(ctx->arena, n);
    be->reduce_rows(be, z.data, z.data, 1, n, fdp_sample_numel(z), sq);
    double hsq[n > 0 ? n : 1], hldj[n > 0 ? n : 1];
    be->to_host(be, hsq, sq, sizeof(double) * (size_t)n);
    be->to_host(be, hldj, sldj, sizeof(double) * (size_t)n);
    fdp_arena_reset(ctx->arena, m);
    double D = (double)fdp_sample_numel(z), mean = 0.0;
    for (int i = 0; i < n; i++) {
        double prior_ll = -0.5 * hsq[i] - 0.5 * D * log(2.0 * 3.14159265358979323846) - D * log(k);
        double nll = -(prior_ll + hldj[i]);
        if (nll_per_sample) nll_per_sample[i] = nll;
        mean += nll;
    }
    return n ? mean / n : 0.0;
}

/* ---- the logit as a flow layer (flow.h) ---- */
typedef struct logit_layer {
    fdp_flow_layer base;
    float bound;
    int b_bound;                    /* buffer data_constraint (1) */
    fdp_tensor v;                   /* saved input */
} logit_layer;

static fdp_tensor lg_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    logit_layer *g = (logit_layer *)l;
    g->v = x;
    return fdp_logit_forward(ctx, x, g->bound, sldj);
}

/* v = (sigmoid(y) - (1 - bound)/2)/bound */
static fdp_tensor lg_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    float b = ((logit_layer *)l)->bound;
    fdp_tensor v = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_sigmoid_args a = {y.data, v.data};
    ctx->be->sigmoid(ctx->be, fdp_numel(y), &a);
    fdp_scale_shift_args sc = {v.data, v.data, 1.0f / b, -(1.0f - b) / (2.0f * b)};
    ctx->be->scale_shift(ctx->be, fdp_numel(v), &sc);
    return v;
}

static fdp_tensor lg_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    logit_layer *g = (logit_layer *)l;
    FDP_CHECK(g->v.data && fdp_same_shape(g->v, dy), "logit: backward without its forward");
    fdp_tensor dv = fdp_arena_tensor(ctx->arena, dy.n, dy.c, dy.h, dy.w);
    fdp_logit_backward_args a = {g->v.data, dy.data, dldj, dv.data, g->bound, fdp_sample_numel(dy)};
    ctx->be->logit_backward(ctx->be, fdp_numel(dy), &a);
    return dv;
}

static void lg_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    (void)hp;
    (void)seed;
    logit_layer *g = (logit_layer *)l;
    hb[p->entries[g->b_bound].offset] = g->bound;
}

static const fdp_flow_ops LOGIT_OPS = {.kind = "logit",
                                       .forward = lg_forward,
                                       .inverse = lg_inverse,
                                       .backward = lg_backward,
                                       .init_values = lg_init_values};

fdp_flow_layer *fdp_flow_logit_create(fdp_params *p, const char *prefix, float bound) {
    logit_layer *g = fdp_xcalloc(1, sizeof *g);
    char name[2 * FDP_NAME_MAX];
    int64_t one[1] = {1};
    snprintf(name, sizeof name, "%sdata_constraint", prefix);
    fdp_flow_begin(&g->base, &LOGIT_OPS, p);
    g->b_bound = fdp_params_add(p, name, FDP_BUFFER, 0, 1, one);
    fdp_flow_end(&g->base, p);
    g->bound = bound;
    return &g->base;
}

void fdp_flow_logit_set_bound(fdp_flow_layer *l, float bound) {
    FDP_CHECK(l->ops == &LOGIT_OPS, "fdp_flow_logit_set_bound on a %s", l->ops->kind);
    ((logit_layer *)l)->bound = bound;
}

static fdp_flow_layer *example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)variant;
    *c = 2;
    *h = 3;
    *w = 3;
    return fdp_flow_logit_create(p, "layer.", 0.9f);
}
const fdp_flow_kind fdp_flow_kind_logit = {"logit", 1, example, 0};
