/* glow_nn.c — openai/glow's coupling network f() as a conditioning network (condnet.h):
 * conv3x3 (cin -> width, no bias) - ActNorm - ReLU - conv1x1 (width -> width, no bias) -
 * ActNorm - ReLU - Conv2dZeros 3x3 (width -> cout). The two ActNorms initialize from data
 * on the first training forward (their own flags, global statistics). Saved for backward:
 * the input, the two convolution outputs a1, a2 (the ReLU outputs are recomputed from them)
 * and l_last's convolution output c3. Parameter names (prefix = the coupling's "...f1"):
 * l_1.W, l_1.actnorm.{b, logs, initialized}, l_2.W, l_2.actnorm.*, l_last.{W, b, logs}. */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"
#include "flowdp/rng.h"

static fdp_conv_shape shape1(const fdp_glow_nn *l, fdp_tensor x) {
    fdp_conv_shape s = {x.n, l->base.cin, l->width, x.h, x.w, 3};
    return s;
}
static fdp_conv_shape shape2(const fdp_glow_nn *l, fdp_tensor x) {
    fdp_conv_shape s = {x.n, l->width, l->width, x.h, x.w, 1};
    return s;
}

static fdp_tensor nn_forward(fdp_condnet *net, fdp_ctx *ctx, fdp_tensor x) {
    fdp_glow_nn *l = (fdp_glow_nn *)net;
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == net->cin, "glow NN: input has %d channels, expected %d", x.c, net->cin);
    fdp_tensor h = fdp_arena_tensor(ctx->arena, x.n, net->cout, x.h, x.w);
    fdp_arena_mark m0 = fdp_arena_get_mark(ctx->arena); /* with no_grad, everything after h is scratch */
    fdp_tensor a1 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_tensor a2 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_tensor c3 = fdp_arena_tensor(ctx->arena, x.n, net->cout, x.h, x.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor r1 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_tensor r2 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    be->conv_forward(be, shape1(l, x), x.data, fdp_params_data(ctx->params, l->p_w1), NULL, a1.data, 0);
    fdp_actnorm_apply(&l->an1, ctx, a1, r1, 1, NULL);
    be->conv_forward(be, shape2(l, x), r1.data, fdp_params_data(ctx->params, l->p_w2), NULL, a2.data, 0);
    fdp_actnorm_apply(&l->an2, ctx, a2, r2, 1, NULL);
    fdp_conv_zeros_forward(&l->last, ctx, r2, c3, h);
    if (ctx->no_grad) {
        fdp_arena_reset(ctx->arena, m0);
    } else {
        fdp_arena_reset(ctx->arena, m);
        l->x = x;
        l->a1 = a1;
        l->a2 = a2;
        l->c3 = c3;
    }
    return h;
}

static void nn_backward(fdp_condnet *net, fdp_ctx *ctx, fdp_tensor dh, fdp_tensor dx, int accumulate) {
    fdp_glow_nn *l = (fdp_glow_nn *)net;
    fdp_backend *be = ctx->be;
    fdp_tensor x = l->x;
    FDP_CHECK(x.data && dh.n == x.n && dh.c == net->cout && dh.h == x.h && dh.w == x.w,
              "glow NN: backward without a matching forward");
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    /* recompute the ReLU outputs */
    fdp_tensor r1 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_tensor r2 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_actnorm_recompute(&l->an1, ctx, l->a1, r1, 1);
    fdp_actnorm_recompute(&l->an2, ctx, l->a2, r2, 1);
    /* l_last */
    fdp_tensor dr2 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_conv_zeros_backward(&l->last, ctx, r2, l->c3, dh, dr2.data, 0);
    /* l_2: ActNorm + ReLU, conv1x1 */
    fdp_tensor da2 = fdp_arena_tensor(ctx->arena, x.n, l->width, x.h, x.w);
    fdp_actnorm_grad(&l->an2, ctx, l->a2, r2, dr2, da2.data, 1, NULL);
    be->conv_backward_weights(be, shape2(l, x), r1.data, da2.data, fdp_params_grad(ctx->params, l->p_w2), NULL);
    fdp_tensor dr1 = dr2; /* reuse: dr2 is consumed */
    be->conv_backward_data(be, shape2(l, x), da2.data, fdp_params_data(ctx->params, l->p_w2), dr1.data, 0);
    /* l_1: ActNorm + ReLU, conv3x3 */
    fdp_tensor da1 = da2;
    fdp_actnorm_grad(&l->an1, ctx, l->a1, r1, dr1, da1.data, 1, NULL);
    be->conv_backward_weights(be, shape1(l, x), x.data, da1.data, fdp_params_grad(ctx->params, l->p_w1), NULL);
    if (dx.data)
        be->conv_backward_data(be, shape1(l, x), da1.data, fdp_params_data(ctx->params, l->p_w1), dx.data,
                               accumulate);
    fdp_arena_reset(ctx->arena, m);
}

/* openai's default_initializer: N(0, 0.05) for the two convolutions; the rest starts at 0 */
static void nn_init_values(fdp_condnet *net, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    fdp_glow_nn *l = (fdp_glow_nn *)net;
    (void)hb;
    int idx[2] = {l->p_w1, l->p_w2};
    for (int k = 0; k < 2; k++) {
        const fdp_param_entry *e = &p->entries[idx[k]];
        float *w = hp + e->offset;
        for (int64_t j = 0; j < e->numel; j++)
            w[j] = 0.05f * fdp_philox_normal(seed, FDP_RNG_INIT, (uint64_t)idx[k], 0, (uint64_t)j);
    }
}

static const fdp_condnet_ops GLOW_NN_OPS = {.kind = "glow_nn", .forward = nn_forward, .backward = nn_backward,
                                            .init_values = nn_init_values};

fdp_condnet *fdp_condnet_glow_create(fdp_params *p, const char *prefix, int cin, int width, int cout) {
    char name[2 * FDP_NAME_MAX];
    fdp_glow_nn *l = fdp_xcalloc(1, sizeof *l);
    l->base.ops = &GLOW_NN_OPS;
    l->base.cin = cin;
    l->base.cout = cout;
    l->width = width;
    int64_t s1[4] = {width, cin, 3, 3}, s2[4] = {width, width, 1, 1};
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
    return &l->base;
}

static fdp_condnet *glow_nn_example(fdp_params *p, int *cin, int *h, int *w) {
    *cin = 2;
    *h = 4;
    *w = 4;
    return fdp_condnet_glow_create(p, "net", 2, 8, 4);
}
const fdp_condnet_kind fdp_condnet_kind_glow_nn = {"glow_nn", glow_nn_example};
