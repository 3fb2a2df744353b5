/* wnconv.c — weight-normed convolution: weight = g * v / ||v||, the norm taken
 * per output channel over (cin, k, k), as torch.nn.utils.weight_norm(dim=0). */
#include <math.h>
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/nn.h"
#include "flowdp/rng.h"

void fdp_wnconv_init(fdp_wnconv *l, fdp_params *p, const char *prefix, int cin, int cout, int k, int bias) {
    char name[2 * FDP_NAME_MAX];
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->has_bias = bias;
    /* PyTorch order after weight_norm: bias, weight_g, weight_v */
    l->p_b = -1;
    if (bias) {
        int64_t sb[1] = {cout};
        snprintf(name, sizeof name, "%s.bias", prefix);
        l->p_b = fdp_params_add(p, name, FDP_PARAM, 0, 1, sb);
    }
    int64_t sg[4] = {cout, 1, 1, 1}, sv[4] = {cout, cin, k, k};
    snprintf(name, sizeof name, "%s.weight_g", prefix);
    l->p_g = fdp_params_add(p, name, FDP_PARAM, FDP_PFLAG_WEIGHT_DECAY, 4, sg);
    snprintf(name, sizeof name, "%s.weight_v", prefix);
    l->p_v = fdp_params_add(p, name, FDP_PARAM, 0, 4, sv);
    l->w = NULL;
    l->normsq = NULL;
}

void fdp_wnconv_prepare(fdp_wnconv *l, fdp_ctx *ctx) {
    fdp_backend *be = ctx->be;
    int64_t cols = (int64_t)l->cin * l->k * l->k;
    const float *v = fdp_params_data(ctx->params, l->p_v);
    l->normsq = fdp_arena_doubles(ctx->arena, l->cout);
    l->w = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)(l->cout * cols));
    be->reduce_rows(be, v, v, 1, l->cout, cols, l->normsq);
    fdp_weightnorm_forward_args a = {v, fdp_params_data(ctx->params, l->p_g), l->normsq, l->w, cols};
    be->weightnorm_forward(be, l->cout * cols, &a);
}

static fdp_conv_shape conv_shape(const fdp_wnconv *l, fdp_tensor x) {
    fdp_conv_shape s = {x.n, l->cin, l->cout, x.h, x.w, l->k};
    return s;
}

void fdp_wnconv_forward(fdp_wnconv *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int accumulate) {
    FDP_CHECK(l->w != NULL, "wnconv: forward before prepare");
    FDP_CHECK(x.c == l->cin && y.c == l->cout && x.n == y.n && x.h == y.h && x.w == y.w,
              "wnconv: shape mismatch: x (%d,%d,%d,%d) y (%d,%d,%d,%d) for %d->%d", x.n, x.c, x.h, x.w, y.n, y.c, y.h,
              y.w, l->cin, l->cout);
    const float *b = l->has_bias ? fdp_params_data(ctx->params, l->p_b) : NULL;
    ctx->be->conv_forward(ctx->be, conv_shape(l, x), x.data, l->w, b, y.data, accumulate);
}

void fdp_wnconv_backward(fdp_wnconv *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor dy, float *dx, int accumulate) {
    fdp_backend *be = ctx->be;
    fdp_conv_shape s = conv_shape(l, x);
    int64_t cols = (int64_t)l->cin * l->k * l->k;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    if (dx) be->conv_backward_data(be, s, dy.data, l->w, dx, accumulate);
    float *dw = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)(l->cout * cols));
    double *dot = fdp_arena_doubles(ctx->arena, l->cout);
    be->conv_backward_weights(be, s, x.data, dy.data, dw, l->has_bias ? fdp_params_grad(ctx->params, l->p_b) : NULL);
    const float *v = fdp_params_data(ctx->params, l->p_v);
    be->reduce_rows(be, dw, v, 1, l->cout, cols, dot);
    fdp_weightnorm_backward_args a = {dw, v, fdp_params_data(ctx->params, l->p_g), l->normsq, dot,
                                      fdp_params_grad(ctx->params, l->p_v), fdp_params_grad(ctx->params, l->p_g), cols};
    be->weightnorm_backward(be, l->cout * cols, &a);
    fdp_arena_reset(ctx->arena, m); /* dw and dot were scratch */
}

void fdp_wnconv_init_values(const fdp_wnconv *l, const fdp_params *p, float *host_params, uint64_t seed) {
    /* PyTorch's Conv2d default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
     * weight and the bias; Philox keyed by the entry's index in the table */
    const fdp_param_entry *v = &p->entries[l->p_v], *g = &p->entries[l->p_g];
    double bound = 1.0 / sqrt((double)(v->shape[1] * v->shape[2] * v->shape[3]));
    float *d = host_params + v->offset;
    for (int64_t j = 0; j < v->numel; j++)
        d[j] = (float)(bound * (2.0 * fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)l->p_v, 0, (uint64_t)j) - 1.0));
    /* weight_g = ||v|| per output channel (torch.nn.utils.weight_norm at creation) */
    int64_t cols = v->numel / v->shape[0];
    for (int64_t o = 0; o < v->shape[0]; o++) {
        double s = 0.0;
        for (int64_t c = 0; c < cols; c++) s += (double)d[o * cols + c] * d[o * cols + c];
        host_params[g->offset + o] = (float)sqrt(s);
    }
    if (l->p_b >= 0) {
        const fdp_param_entry *b = &p->entries[l->p_b];
        for (int64_t j = 0; j < b->numel; j++)
            host_params[b->offset + j] =
                (float)(bound * (2.0 * fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)l->p_b, 0, (uint64_t)j) - 1.0));
    }
}
