/* glow_coupling.c — Glow's coupling layer (openai/glow's revnet2d_step
 * coupling part): z1, z2 = x[:, :C/2], x[:, C/2:]; h = NN(z1);
 *   additive: y2 = z2 + h                                       (log-det 0)
 *   affine:   shift = h[:, 0::2], s = sigmoid(h[:, 1::2] + 2); y2 = (z2 + shift)*s   (log-det sum log s)
 * with openai's f(): NN = conv3x3 (C/2 -> width, no bias) - ActNorm - ReLU -
 * conv1x1 (width -> width, no bias) - ActNorm - ReLU - Conv2dZeros 3x3. The
 * two ActNorms initialize from data like the flow's (their own flags).
 * Saved for backward: the NN input z1, the two convolution outputs a1, a2
 * (the ReLU outputs are recomputed from them), l_last's c3 and h, and y. */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"
#include "flowdp/rng.h"

void fdp_glow_coupling_init(fdp_glow_coupling *l, fdp_params *p, const char *prefix, int C, int width, int affine) {
    char name[2 * FDP_NAME_MAX];
    FDP_CHECK(C % 2 == 0 && C >= 2, "glow coupling %s: needs an even channel count, got %d", prefix, C);
    l->first_entry = p->count;
    l->C = C;
    l->width = width;
    l->affine = affine;
    int C2 = C / 2, cout = affine ? C : C2;
    int64_t s1[4] = {width, C2, 3, 3}, s2[4] = {width, width, 1, 1};
    snprintf(name, sizeof name, "%s.l_1.W", prefix);
    l->p_w1 = fdp_params_add(p, name, FDP_PARAM, 0, 4, s1);
    snprintf(name, sizeof name, "%s.l_1.actnorm", prefix);
    fdp_actnorm_init(&l->an1, p, name, width, 1);
    snprintf(name, sizeof name, "%s.l_2.W", prefix);
    l->p_w2 = fdp_params_add(p, name, FDP_PARAM, 0, 4, s2);
    snprintf(name, sizeof name, "%s.l_2.actnorm", prefix);
    fdp_actnorm_init(&l->an2, p, name, width, 1);
    snprintf(name, sizeof name, "%s.l_last", prefix);
    fdp_conv_zeros_init(&l->last, p, name, width, cout, 3);
    l->last_entry = p->count - 1;
}

void fdp_glow_coupling_init_values(fdp_glow_coupling *l, const fdp_params *p, float *hp, uint64_t seed) {
    /* openai's default_initializer: N(0, 0.05) */
    int idx[2] = {l->p_w1, l->p_w2};
    for (int k = 0; k < 2; k++) {
        const fdp_param_entry *e = &p->entries[idx[k]];
        float *w = hp + e->offset;
        for (int64_t j = 0; j < e->numel; j++)
            w[j] = 0.05f * fdp_philox_normal(seed, FDP_RNG_INIT, (uint64_t)idx[k], 0, (uint64_t)j);
    }
}

static fdp_conv_shape shape1(const fdp_glow_coupling *l, fdp_tensor x) {
    fdp_conv_shape s = {x.n, l->C / 2, l->width, x.h, x.w, 3};
    return s;
}
static fdp_conv_shape shape2(const fdp_glow_coupling *l, fdp_tensor x) {
    fdp_conv_shape s = {x.n, l->width, l->width, x.h, x.w, 1};
    return s;
}

/* h = NN(z1) into the caller's a1, a2, c3, h; r1, r2 scratch. ddi: the ActNorms may initialize. */
static void nn_forward(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor z1, fdp_tensor a1, fdp_tensor a2, fdp_tensor c3,
                       fdp_tensor h, int ddi) {
    fdp_backend *be = ctx->be;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor r1 = fdp_arena_tensor(ctx->arena, a1.n, a1.c, a1.h, a1.w);
    fdp_tensor r2 = fdp_arena_tensor(ctx->arena, a2.n, a2.c, a2.h, a2.w);
    be->conv_forward(be, shape1(l, z1), z1.data, fdp_params_data(ctx->params, l->p_w1), NULL, a1.data, 0);
    if (ddi)
        fdp_actnorm_apply(&l->an1, ctx, a1, r1, 1, NULL);
    else
        fdp_actnorm_recompute(&l->an1, ctx, a1, r1, 1);
    be->conv_forward(be, shape2(l, z1), r1.data, fdp_params_data(ctx->params, l->p_w2), NULL, a2.data, 0);
    if (ddi)
        fdp_actnorm_apply(&l->an2, ctx, a2, r2, 1, NULL);
    else
        fdp_actnorm_recompute(&l->an2, ctx, a2, r2, 1);
    fdp_conv_zeros_forward(&l->last, ctx, r2, c3, h);
    fdp_arena_reset(ctx->arena, m);
}

fdp_tensor fdp_glow_coupling_forward(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "glow coupling: input has %d channels, expected %d", x.c, l->C);
    int C2 = l->C / 2, cout = l->affine ? l->C : C2;
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_arena_mark m0 = fdp_arena_get_mark(ctx->arena); /* with no_grad, everything after y is scratch */
    l->z1 = fdp_channel_slice(ctx, x, 0, C2);
    l->a1 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    l->a2 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    l->c3 = fdp_arena_tensor(ctx->arena, x.n, cout, x.h, x.w);
    l->h = fdp_arena_tensor(ctx->arena, x.n, cout, x.h, x.w);
    nn_forward(l, ctx, l->z1, l->a1, l->a2, l->c3, l->h, 1);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *ls = l->affine ? fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)(fdp_numel(x) / 2)) : NULL;
    fdp_glow_coupling_args a = {x.data, l->h.data, y.data, ls, l->C, (int64_t)x.h * x.w, l->affine, 0};
    be->glow_coupling(be, fdp_numel(x), &a);
    if (l->affine && sldj) {
        double *ldj = fdp_arena_doubles(ctx->arena, x.n);
        be->reduce_rows(be, ls, NULL, 1, x.n, fdp_sample_numel(x) / 2, ldj);
        fdp_axpy_f64_args pa = {ldj, sldj, 1.0};
        be->axpy_f64(be, x.n, &pa);
    }
    fdp_arena_reset(ctx->arena, ctx->no_grad ? m0 : m);
    l->y = y;
    return y;
}

fdp_tensor fdp_glow_coupling_inverse(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor y) {
    FDP_CHECK(y.c == l->C, "glow coupling: input has %d channels, expected %d", y.c, l->C);
    int C2 = l->C / 2, cout = l->affine ? l->C : C2;
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    /* y1 = z1: the NN sees the same input */
    fdp_tensor z1 = fdp_channel_slice(ctx, y, 0, C2);
    fdp_tensor a1 = fdp_arena_tensor(ctx->arena, y.n, l->width, y.h, y.w);
    fdp_tensor a2 = fdp_arena_tensor(ctx->arena, y.n, l->width, y.h, y.w);
    fdp_tensor c3 = fdp_arena_tensor(ctx->arena, y.n, cout, y.h, y.w);
    fdp_tensor h = fdp_arena_tensor(ctx->arena, y.n, cout, y.h, y.w);
    nn_forward(l, ctx, z1, a1, a2, c3, h, 0);
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
    /* recompute the ReLU outputs */
    fdp_tensor r1 = fdp_arena_tensor(ctx->arena, y.n, l->width, y.h, y.w);
    fdp_tensor r2 = fdp_arena_tensor(ctx->arena, y.n, l->width, y.h, y.w);
    fdp_actnorm_recompute(&l->an1, ctx, l->a1, r1, 1);
    fdp_actnorm_recompute(&l->an2, ctx, l->a2, r2, 1);
    /* l_last */
    fdp_tensor dr2 = fdp_arena_tensor(ctx->arena, y.n, l->width, y.h, y.w);
    fdp_conv_zeros_backward(&l->last, ctx, r2, l->c3, dh, dr2.data, 0);
    /* l_2: ActNorm + ReLU, conv1x1 */
    fdp_tensor da2 = fdp_arena_tensor(ctx->arena, y.n, l->width, y.h, y.w);
    fdp_actnorm_grad(&l->an2, ctx, l->a2, r2, dr2, da2.data, 1, NULL);
    be->conv_backward_weights(be, shape2(l, y), r1.data, da2.data, fdp_params_grad(ctx->params, l->p_w2), NULL);
    fdp_tensor dr1 = dr2; /* reuse: dr2 is consumed */
    be->conv_backward_data(be, shape2(l, y), da2.data, fdp_params_data(ctx->params, l->p_w2), dr1.data, 0);
    /* l_1: ActNorm + ReLU, conv3x3 */
    fdp_tensor da1 = da2;
    fdp_actnorm_grad(&l->an1, ctx, l->a1, r1, dr1, da1.data, 1, NULL);
    be->conv_backward_weights(be, shape1(l, y), l->z1.data, da1.data, fdp_params_grad(ctx->params, l->p_w1), NULL);
    fdp_tensor dz1 = fdp_arena_tensor(ctx->arena, y.n, C2, y.h, y.w);
    be->conv_backward_data(be, shape1(l, y), da1.data, fdp_params_data(ctx->params, l->p_w1), dz1.data, 0);
    fdp_slice_copy_args sa = {dz1.data, dx.data, C2, 0, l->C, 0, C2, HW, 1.0f, 1};
    be->slice_copy(be, fdp_numel(dz1), &sa);
    fdp_arena_reset(ctx->arena, m);
    return dx;
}
