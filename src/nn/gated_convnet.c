/* gated_convnet.c — the gated-convolution conditioning network of Lippe's image-flow tutorial
 * (GatedConvNet), as a condnet (condnet.h):
 *   h = conv3x3(x)                                     nn.0           (cin -> hid, bias)
 *   L times: GatedConv  a1 = ConcatELU(h); c1 = conv3x3(a1)            nn.{2l+1}.net.1 (2hid -> hid)
 *                       a2 = ConcatELU(c1); o = conv1x1(a2)            nn.{2l+1}.net.3 (2hid -> 2hid)
 *                       g = h + val * sigmoid(gate), (val, gate) = o's halves
 *            LayerNormChannels  h = LN_c(g) * gamma + beta            nn.{2l+2}.{gamma, beta} (1,hid,1,1)
 *   out = conv3x3(ConcatELU(h))                        nn.{2L+2}      (2hid -> cout, zero-initialized)
 * Parameter names are the tutorial's state_dict names under the prefix (e.g. "…nn.1.net.3.weight").
 * Plain (not weight-normed) convolutions, PyTorch's default init; LayerNorm eps 1e-5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "flowdp/condnet.h"
#include "flowdp/error.h"
#include "flowdp/rng.h"

typedef struct gated_layer {
    int p_w1, p_b1, p_w2, p_b2, p_gamma, p_beta;
    fdp_tensor h, a1, c1, a2, o, g; /* saved: input, activations, LayerNorm input */
    float *mean, *rstd;             /* (n*HW) LayerNorm statistics */
} gated_layer;

typedef struct gated_net {
    fdp_condnet base;
    int hid, L;
    int p_w0, p_b0, p_wl, p_bl;
    gated_layer *layer;
    fdp_tensor x, hL, aL;           /* saved: the input, the last ConcatELU's input and output */
} gated_net;

static int add_conv(fdp_params *p, const char *prefix, int idx, const char *sub, int cin, int cout, int k,
                    int *p_b) {
    char name[2 * FDP_NAME_MAX];
    int64_t sw[4] = {cout, cin, k, k}, sb[1] = {cout};
    snprintf(name, sizeof name, "%s.nn.%d%s.weight", prefix, idx, sub);
    int w = fdp_params_add(p, name, FDP_PARAM, 0, 4, sw);
    snprintf(name, sizeof name, "%s.nn.%d%s.bias", prefix, idx, sub);
    *p_b = fdp_params_add(p, name, FDP_PARAM, 0, 1, sb);
    return w;
}

static void conv(fdp_ctx *ctx, const gated_net *g, int p_w, int p_b, fdp_tensor x, fdp_tensor y) {
    int k = (int)ctx->params->entries[p_w].shape[2];
    fdp_conv_shape s = {x.n, x.c, y.c, x.h, x.w, k};
    (void)g;
    ctx->be->conv_forward(ctx->be, s, x.data, fdp_params_data(ctx->params, p_w), fdp_params_data(ctx->params, p_b),
                          y.data, 0);
}

/* parameter gradients of the convolution and, unless dx is NULL, dx (written or added) */
static void conv_back(fdp_ctx *ctx, int p_w, int p_b, fdp_tensor x, fdp_tensor dy, float *dx, int accumulate) {
    int k = (int)ctx->params->entries[p_w].shape[2];
    fdp_conv_shape s = {x.n, x.c, dy.c, x.h, x.w, k};
    if (dx) ctx->be->conv_backward_data(ctx->be, s, dy.data, fdp_params_data(ctx->params, p_w), dx, accumulate);
    ctx->be->conv_backward_weights(ctx->be, s, x.data, dy.data, fdp_params_grad(ctx->params, p_w),
                                   fdp_params_grad(ctx->params, p_b));
}

static fdp_tensor concat_elu(fdp_ctx *ctx, fdp_tensor x) {
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, 2 * x.c, x.h, x.w);
    fdp_concat_elu_args a = {x.data, y.data, x.c, (int64_t)x.h * x.w};
    ctx->be->concat_elu(ctx->be, fdp_numel(x), &a);
    return y;
}

static void concat_elu_back(fdp_ctx *ctx, fdp_tensor x, fdp_tensor dy, fdp_tensor dx, int accumulate) {
    fdp_concat_elu_backward_args a = {x.data, dy.data, dx.data, x.c, (int64_t)x.h * x.w, accumulate};
    ctx->be->concat_elu_backward(ctx->be, fdp_numel(x), &a);
}

static fdp_tensor gn_forward(fdp_condnet *net, fdp_ctx *ctx, fdp_tensor x) {
    gated_net *g = (gated_net *)net;
    fdp_arena *ar = ctx->arena;
    int n = x.n, H = x.h, W = x.w, hid = g->hid;
    int64_t HW = (int64_t)H * W;
    FDP_CHECK(x.c == net->cin, "gated convnet: input has %d channels, expected %d", x.c, net->cin);
    fdp_tensor out = fdp_arena_tensor(ar, n, net->cout, H, W);
    fdp_arena_mark m1 = fdp_arena_get_mark(ar); /* with no_grad, everything after out is scratch */
    g->x = x;
    fdp_tensor h = fdp_arena_tensor(ar, n, hid, H, W);
    conv(ctx, g, g->p_w0, g->p_b0, x, h);
    for (int l = 0; l < g->L; l++) {
        gated_layer *y = &g->layer[l];
        y->h = h;
        y->a1 = concat_elu(ctx, h);
        y->c1 = fdp_arena_tensor(ar, n, hid, H, W);
        conv(ctx, g, y->p_w1, y->p_b1, y->a1, y->c1);
        y->a2 = concat_elu(ctx, y->c1);
        y->o = fdp_arena_tensor(ar, n, 2 * hid, H, W);
        conv(ctx, g, y->p_w2, y->p_b2, y->a2, y->o);
        y->g = fdp_arena_tensor(ar, n, hid, H, W);
        fdp_gate_args ga = {h.data, y->o.data, y->g.data, hid, HW};
        ctx->be->gate(ctx->be, fdp_numel(h), &ga);
        y->mean = fdp_arena_alloc(ar, sizeof(float) * (size_t)(n * HW));
        y->rstd = fdp_arena_alloc(ar, sizeof(float) * (size_t)(n * HW));
        h = fdp_arena_tensor(ar, n, hid, H, W);
        fdp_layernorm_channels_args la = {y->g.data, fdp_params_data(ctx->params, y->p_gamma),
                                          fdp_params_data(ctx->params, y->p_beta), h.data, y->mean, y->rstd, hid,
                                          HW, 1e-5f};
        ctx->be->layernorm_channels(ctx->be, n * HW, &la);
    }
    g->hL = h;
    g->aL = concat_elu(ctx, h);
    conv(ctx, g, g->p_wl, g->p_bl, g->aL, out);
    if (ctx->no_grad) fdp_arena_reset(ar, m1);
    return out;
}

/* LayerNorm backward: dg from dh; gamma / beta gradients written */
static fdp_tensor layernorm_back(fdp_ctx *ctx, const gated_layer *y, fdp_tensor dh) {
    fdp_backend *be = ctx->be;
    fdp_tensor g = y->g, dg = fdp_arena_tensor(ctx->arena, g.n, g.c, g.h, g.w);
    int64_t HW = (int64_t)g.h * g.w;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *dyxhat = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(g));
    double *red = fdp_arena_doubles(ctx->arena, 2 * (int64_t)g.c);
    fdp_layernorm_channels_backward_args a = {g.data, dh.data, fdp_params_data(ctx->params, y->p_gamma), y->mean,
                                              y->rstd, dg.data, dyxhat, g.c, HW};
    be->layernorm_channels_backward(be, g.n * HW, &a);
    be->reduce_rows(be, dyxhat, NULL, g.n, g.c, HW, red);
    be->reduce_rows(be, dh.data, NULL, g.n, g.c, HW, red + g.c);
    fdp_f64_to_f32_args c1 = {red, fdp_params_grad(ctx->params, y->p_gamma), 1.0};
    be->f64_to_f32(be, g.c, &c1);
    fdp_f64_to_f32_args c2 = {red + g.c, fdp_params_grad(ctx->params, y->p_beta), 1.0};
    be->f64_to_f32(be, g.c, &c2);
    fdp_arena_reset(ctx->arena, m);
    return dg;
}

static void gn_backward(fdp_condnet *net, fdp_ctx *ctx, fdp_tensor dout, fdp_tensor dx, int accumulate) {
    gated_net *g = (gated_net *)net;
    fdp_backend *be = ctx->be;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor hL = g->hL;
    int n = hL.n, H = hL.h, W = hL.w, hid = g->hid;
    int64_t HW = (int64_t)H * W;
    fdp_tensor da = fdp_arena_tensor(ctx->arena, n, 2 * hid, H, W);
    conv_back(ctx, g->p_wl, g->p_bl, g->aL, dout, da.data, 0);
    fdp_tensor dh = fdp_arena_tensor(ctx->arena, n, hid, H, W);
    concat_elu_back(ctx, hL, da, dh, 0);
    fdp_tensor dc = fdp_arena_tensor(ctx->arena, n, hid, H, W);
    fdp_tensor dO = fdp_arena_tensor(ctx->arena, n, 2 * hid, H, W);
    for (int l = g->L - 1; l >= 0; l--) {
        gated_layer *y = &g->layer[l];
        fdp_arena_mark ml = fdp_arena_get_mark(ctx->arena);
        fdp_tensor dg = layernorm_back(ctx, y, dh);
        /* g = h + val * sigmoid(gate): dh = dg (+ the path through the convolutions below) */
        fdp_gate_backward_args ga = {y->o.data, dg.data, dO.data, hid, HW};
        be->gate_backward(be, fdp_numel(dg), &ga);
        be->copy(be, dh.data, dg.data, sizeof(float) * (size_t)fdp_numel(dg));
        conv_back(ctx, y->p_w2, y->p_b2, y->a2, dO, da.data, 0);
        concat_elu_back(ctx, y->c1, da, dc, 0);
        conv_back(ctx, y->p_w1, y->p_b1, y->a1, dc, da.data, 0);
        concat_elu_back(ctx, y->h, da, dh, 1);
        fdp_arena_reset(ctx->arena, ml);
    }
    conv_back(ctx, g->p_w0, g->p_b0, g->x, dh, dx.data, accumulate);
    fdp_arena_reset(ctx->arena, m);
}

/* PyTorch's Conv2d default (kaiming-uniform a = sqrt(5)): U(+-1/sqrt(fan_in)) for weight and bias */
static void init_conv(const fdp_params *p, float *hp, int p_w, int p_b, uint64_t seed, int zero) {
    const fdp_param_entry *w = &p->entries[p_w], *b = &p->entries[p_b];
    double bound = zero ? 0.0 : 1.0 / sqrt((double)(w->shape[1] * w->shape[2] * w->shape[3]));
    for (int64_t j = 0; j < w->numel; j++)
        hp[w->offset + j] =
            (float)(bound * (2.0 * fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)p_w, 0, (uint64_t)j) - 1.0));
    for (int64_t j = 0; j < b->numel; j++)
        hp[b->offset + j] =
            (float)(bound * (2.0 * fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)p_b, 0, (uint64_t)j) - 1.0));
}

static void gn_init_values(fdp_condnet *net, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    (void)hb;
    gated_net *g = (gated_net *)net;
    init_conv(p, hp, g->p_w0, g->p_b0, seed, 0);
    for (int l = 0; l < g->L; l++) {
        gated_layer *y = &g->layer[l];
        init_conv(p, hp, y->p_w1, y->p_b1, seed, 0);
        init_conv(p, hp, y->p_w2, y->p_b2, seed, 0);
        for (int c = 0; c < g->hid; c++) {
            hp[p->entries[y->p_gamma].offset + c] = 1.0f;
            hp[p->entries[y->p_beta].offset + c] = 0.0f;
        }
    }
    init_conv(p, hp, g->p_wl, g->p_bl, seed, 1); /* the tutorial zeroes the last convolution */
}

static void gn_destroy(fdp_condnet *net) { free(((gated_net *)net)->layer); }

static const fdp_condnet_ops GATED_OPS = {.kind = "gated",
                                          .forward = gn_forward,
                                          .backward = gn_backward,
                                          .init_values = gn_init_values,
                                          .destroy = gn_destroy};

fdp_condnet *fdp_condnet_gated_create(fdp_params *p, const char *prefix, int cin, int hid, int cout, int num_layers) {
    FDP_CHECK(cin > 0 && hid > 0 && cout > 0 && num_layers >= 0, "gated convnet %s: bad sizes %d/%d/%d/%d", prefix,
              cin, hid, cout, num_layers);
    gated_net *g = fdp_xcalloc(1, sizeof *g);
    char name[2 * FDP_NAME_MAX];
    g->base.ops = &GATED_OPS;
    g->base.cin = cin;
    g->base.cout = cout;
    g->hid = hid;
    g->L = num_layers;
    g->layer = fdp_xcalloc((size_t)(num_layers ? num_layers : 1), sizeof *g->layer);
    g->p_w0 = add_conv(p, prefix, 0, "", cin, hid, 3, &g->p_b0);
    for (int l = 0; l < num_layers; l++) {
        gated_layer *y = &g->layer[l];
        y->p_w1 = add_conv(p, prefix, 2 * l + 1, ".net.1", 2 * hid, hid, 3, &y->p_b1);
        y->p_w2 = add_conv(p, prefix, 2 * l + 1, ".net.3", 2 * hid, 2 * hid, 1, &y->p_b2);
        int64_t s[4] = {1, hid, 1, 1};
        snprintf(name, sizeof name, "%s.nn.%d.gamma", prefix, 2 * l + 2);
        y->p_gamma = fdp_params_add(p, name, FDP_PARAM, 0, 4, s);
        snprintf(name, sizeof name, "%s.nn.%d.beta", prefix, 2 * l + 2);
        y->p_beta = fdp_params_add(p, name, FDP_PARAM, 0, 4, s);
    }
    g->p_wl = add_conv(p, prefix, 2 * num_layers + 2, "", 2 * hid, cout, 3, &g->p_bl);
    return &g->base;
}

static fdp_condnet *example(fdp_params *p, int *cin, int *h, int *w) {
    *cin = 2;
    *h = 4;
    *w = 4;
    return fdp_condnet_gated_create(p, "net", 2, 4, 4, 2);
}
const fdp_condnet_kind fdp_condnet_kind_gated = {"gated", example};
