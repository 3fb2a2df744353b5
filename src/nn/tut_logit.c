/* tut_logit.c — the logit of the dequantization of Lippe's Tutorial 9 (Dequantization.sigmoid
 * with reverse=True), a flow layer (flow.h) on dequantized pixels v in (0, 1):
 *   v' = v (1 - alpha) + 0.5 alpha, log-det += log(1 - alpha) D + sum(-log v' - log(1 - v')),
 *   z = log v' - log(1 - v').
 * The constants are rounded to float32 as PyTorch rounds them ((1 - alpha), 0.5 alpha,
 * log(1 - alpha) D). The inverse is the tutorial's sample(): a plain sigmoid, which does not
 * undo alpha (so inverse(forward(v)) = v (1 - alpha) + 0.5 alpha). */
#include <math.h>

#include "flowdp/error.h"
#include "flowdp/flow.h"

typedef struct tut_logit {
    fdp_flow_layer base;
    double alpha;
    fdp_tensor v;                   /* saved input */
} tut_logit;

static fdp_tensor tl_forward(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor v, double *sldj) {
    tut_logit *l = (tut_logit *)b;
    fdp_backend *be = ctx->be;
    int n = v.n;
    int64_t D = fdp_sample_numel(v);
    fdp_tensor z = fdp_arena_tensor(ctx->arena, v.n, v.c, v.h, v.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *ldj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(v));
    double *sum = fdp_arena_doubles(ctx->arena, n);
    fdp_tut_logit_args a = {v.data, z.data, ldj, (float)(1.0 - l->alpha), (float)(0.5 * l->alpha)};
    be->tut_logit(be, fdp_numel(v), &a);
    be->reduce_rows(be, ldj, NULL, 1, n, D, sum);
    /* log(1 - alpha) D, a float32 constant, for every sample */
    double hc[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) hc[i] = (double)(float)(log(1.0 - l->alpha) * (double)D);
    double *cst = fdp_arena_doubles(ctx->arena, n);
    be->from_host(be, cst, hc, sizeof(double) * (size_t)n);
    fdp_axpy_f64_args ca = {cst, sldj, 1.0};
    be->axpy_f64(be, n, &ca);
    fdp_axpy_f64_args pa = {sum, sldj, 1.0};
    be->axpy_f64(be, n, &pa);
    fdp_arena_reset(ctx->arena, m);
    l->v = v;
    return z;
}

static fdp_tensor tl_inverse(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor z) {
    (void)b;
    fdp_tensor v = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
    fdp_sigmoid_args a = {z.data, v.data};
    ctx->be->sigmoid(ctx->be, fdp_numel(z), &a);
    return v;
}

static fdp_tensor tl_backward(fdp_flow_layer *b, fdp_ctx *ctx, fdp_tensor dz, const float *dldj) {
    tut_logit *l = (tut_logit *)b;
    FDP_CHECK(l->v.data && fdp_same_shape(l->v, dz), "tutorial logit: backward without its forward");
    fdp_tensor dv = fdp_arena_tensor(ctx->arena, dz.n, dz.c, dz.h, dz.w);
    fdp_tut_logit_backward_args a = {l->v.data, dz.data, dldj, dv.data, (float)(1.0 - l->alpha),
                                     (float)(0.5 * l->alpha), fdp_sample_numel(dz)};
    ctx->be->tut_logit_backward(ctx->be, fdp_numel(dz), &a);
    return dv;
}

static const fdp_flow_ops TUT_LOGIT_OPS = {
    .kind = "tut_logit", .forward = tl_forward, .inverse = tl_inverse, .backward = tl_backward};

fdp_flow_layer *fdp_flow_tut_logit_create(double alpha) {
    FDP_CHECK(alpha >= 0.0 && alpha < 1.0, "tutorial logit: alpha %g outside [0, 1)", alpha);
    tut_logit *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &TUT_LOGIT_OPS, NULL);
    l->alpha = alpha;
    return &l->base;
}

static fdp_flow_layer *example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)p;
    (void)variant;
    *c = 2;
    *h = 3;
    *w = 3;
    return fdp_flow_tut_logit_create(1e-5);
}
const fdp_flow_kind fdp_flow_kind_tut_logit = {"tut_logit", 1, example, 0};
