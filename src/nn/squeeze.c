/* squeeze.c — squeeze_2x2 in both orders, its inverse, and the squeeze flow layer. */
#include "flowdp/error.h"
#include "flowdp/flow.h"

fdp_tensor fdp_squeeze(fdp_ctx *ctx, fdp_tensor x, int alt) {
    FDP_CHECK(x.h % 2 == 0 && x.w % 2 == 0, "squeeze: odd spatial size %dx%d", x.h, x.w);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, 4 * x.c, x.h / 2, x.w / 2);
    fdp_squeeze_args a = {x.data, y.data, x.c, x.h, x.w, alt, 0, 0};
    ctx->be->squeeze(ctx->be, fdp_numel(x), &a);
    return y;
}

fdp_tensor fdp_unsqueeze(fdp_ctx *ctx, fdp_tensor x, int alt) {
    FDP_CHECK(x.c % 4 == 0, "unsqueeze: %d channels is not a multiple of 4", x.c);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c / 4, x.h * 2, x.w * 2);
    fdp_squeeze_args a = {x.data, y.data, x.c / 4, x.h * 2, x.w * 2, alt, 1, 0};
    ctx->be->squeeze(ctx->be, fdp_numel(y), &a);
    return y;
}

/* ---- squeeze / unsqueeze as a flow layer (flow.h): a permutation, log-det 0 ---- */
typedef struct squeeze_layer {
    fdp_flow_layer base;
    int alt, unsq;
} squeeze_layer;

/* dir 0: the layer's direction, 1: the other one */
static fdp_tensor sq_apply(const fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, int dir) {
    const squeeze_layer *s = (const squeeze_layer *)l;
    return (s->unsq ^ dir) ? fdp_unsqueeze(ctx, x, s->alt) : fdp_squeeze(ctx, x, s->alt);
}

/* x (in place) permuted; returns its new shape */
static fdp_tensor sq_inplace(const fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, int dir) {
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor t = fdp_flow_overwrite(ctx, x, sq_apply(l, ctx, x, dir));
    fdp_arena_reset(ctx->arena, m);
    return t;
}

static fdp_tensor sq_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    (void)sldj;
    return sq_apply(l, ctx, x, 0);
}
static fdp_tensor sq_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) { return sq_apply(l, ctx, y, 1); }
/* the transpose of a permutation is its inverse */
static fdp_tensor sq_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    (void)dldj;
    return sq_apply(l, ctx, dy, 1);
}
static fdp_tensor sq_forward_inplace(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    (void)sldj;
    return sq_inplace(l, ctx, x, 0);
}
static fdp_tensor sq_backward_rebuild(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy,
                                      const float *dldj) {
    (void)dldj;
    sq_inplace(l, ctx, y, 1);
    return sq_inplace(l, ctx, dy, 1);
}

static const fdp_flow_ops SQUEEZE_OPS = {.kind = "squeeze",
                                         .forward = sq_forward,
                                         .inverse = sq_inverse,
                                         .backward = sq_backward,
                                         .forward_inplace = sq_forward_inplace,
                                         .backward_rebuild = sq_backward_rebuild};

fdp_flow_layer *fdp_flow_squeeze_create(int alt, int unsqueeze) {
    squeeze_layer *s = fdp_xcalloc(1, sizeof *s);
    fdp_flow_begin(&s->base, &SQUEEZE_OPS, NULL);
    s->alt = alt;
    s->unsq = unsqueeze;
    return &s->base;
}

/* variants: squeeze / unsqueeze, plain / alt order */
static fdp_flow_layer *example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)p;
    int unsq = variant / 2;
    *c = unsq ? 8 : 2;
    *h = unsq ? 2 : 4;
    *w = unsq ? 2 : 4;
    return fdp_flow_squeeze_create(variant % 2, unsq);
}
const fdp_flow_kind fdp_flow_kind_squeeze = {"squeeze", 4, example, 0};
