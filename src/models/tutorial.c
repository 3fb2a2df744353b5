/* tutorial.c — the flows of Lippe's Tutorial 9 as a composition of the tutorial's flow layers
 * (tutorial.h): building them, the loss, backward, sample and encode. */
#include "flowdp/tutorial.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fdp_tutorial_build(fdp_tutorial *t, int C, int H, int W, int multiscale, const int hid[3], fdp_err *err) {
    memset(t, 0, sizeof *t);
    if (C < 1 || H < 1 || W < 1) return fdp_err_set(err, "tutorial: input %dx%dx%d is empty", C, H, W);
    for (int i = 0; i < (multiscale ? 3 : 1); i++)
        if (hid[i] < 1) return fdp_err_set(err, "tutorial: c_hidden of scale %d = %d, must be at least 1", i + 1, hid[i]);
    if (multiscale && (H % 4 != 0 || W % 4 != 0))
        return fdp_err_set(err, "tutorial: the multiscale flow squeezes twice, so the image size (%dx%d) must be "
                                "divisible by 4", H, W);
    t->C = C;
    t->H = H;
    t->W = W;
    t->multiscale = multiscale;
    memcpy(t->hid, hid, sizeof t->hid);
    t->alpha = 1e-5;
    fdp_params_init(&t->params);
    fdp_params *p = &t->params;
    t->root = fdp_flow_seq_create(0);
    fdp_flow_seq_add(t->root, fdp_flow_tut_logit_create(t->alpha)); /* flows.0 */
    char pre[32];
    int k = 1;
#define PRE() (snprintf(pre, sizeof pre, "flows.%d", k++), pre)
    if (!multiscale) {
        for (int i = 0; i < 8; i++)
            fdp_flow_seq_add(t->root, fdp_flow_tut_coupling_create(p, PRE(), C, H, W, hid[0], 3, FDP_MASK_CHECKERBOARD, i % 2));
        t->zc = C;
        t->zh = H;
        t->zw = W;
    } else {
        for (int i = 0; i < 2; i++)
            fdp_flow_seq_add(t->root, fdp_flow_tut_coupling_create(p, PRE(), C, H, W, hid[0], 3, FDP_MASK_CHECKERBOARD, i % 2));
        fdp_flow_seq_add(t->root, fdp_flow_squeeze_create(0, 0));
        k++;
        for (int i = 0; i < 2; i++)
            fdp_flow_seq_add(t->root, fdp_flow_tut_coupling_create(p, PRE(), 4 * C, H / 2, W / 2, hid[1], 3,
                                                                   FDP_MASK_CHANNEL, i % 2));
        t->split_len = (int64_t)2 * C * (H / 2) * (W / 2);
        fdp_flow_seq_add(t->root, fdp_flow_tut_split_create(4 * C, 0, t->split_len));
        fdp_flow_seq_add(t->root, fdp_flow_squeeze_create(0, 0));
        k += 2;
        for (int i = 0; i < 4; i++)
            fdp_flow_seq_add(t->root, fdp_flow_tut_coupling_create(p, PRE(), 8 * C, H / 4, W / 4, hid[2], 3,
                                                                   FDP_MASK_CHANNEL, i % 2));
        t->zc = 8 * C;
        t->zh = H / 4;
        t->zw = W / 4;
    }
#undef PRE
    return 0;
}

void fdp_tutorial_free(fdp_tutorial *t) {
    fdp_flow_destroy(t->root);
    fdp_params_free(&t->params);
    memset(t, 0, sizeof *t);
}

void fdp_tutorial_alloc_init(fdp_tutorial *t, fdp_backend *be, uint64_t seed) {
    fdp_flow_alloc_init(t->root, &t->params, be, seed);
}

double fdp_tutorial_loss(fdp_tutorial *t, fdp_ctx *ctx, fdp_tensor v, double *nll) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(v.c == t->C && v.h == t->H && v.w == t->W, "tutorial: input %dx%dx%d, model built for %dx%dx%d", v.c,
              v.h, v.w, t->C, t->H, t->W);
    fdp_flow_prepare(t->root, ctx);
    t->sldj = fdp_arena_doubles(ctx->arena, v.n);
    be->memset0(be, t->sldj, sizeof(double) * (size_t)v.n);
    t->dldj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)v.n);
    float *lat = ctx->latent; /* the split writes no latent here */
    ctx->latent = NULL;
    t->rebuilt = t->rebuild_activations && !ctx->no_grad;
    if (t->rebuilt) {
        fdp_tensor y = fdp_arena_tensor(ctx->arena, v.n, v.c, v.h, v.w);
        be->copy(be, y.data, v.data, sizeof(float) * (size_t)fdp_numel(v));
        t->z = fdp_flow_forward_inplace(t->root, ctx, y, t->sldj);
    } else {
        t->z = t->root->ops->forward(t->root, ctx, v, t->sldj);
    }
    ctx->latent = lat;
    /* -(sldj + log N(z)) over the final z, + D log 256 (the tutorial's ldj -= log(256) D) */
    double D = (double)fdp_sample_numel(v), bins = D * log(256.0);
    double mean = fdp_gaussian_nll(ctx, t->z, t->sldj, 1.0, nll) + bins;
    if (nll)
        for (int i = 0; i < v.n; i++) nll[i] += bins;
    return mean;
}

void fdp_tutorial_backward(fdp_tutorial *t, fdp_ctx *ctx, float loss_scale) {
    fdp_backend *be = ctx->be;
    fdp_tensor z = t->z;
    float inv = loss_scale / (float)z.n;
    fdp_tensor dz = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
    fdp_axpby_args a = {z.data, dz.data, inv, 0.0f};
    be->axpby(be, fdp_numel(z), &a);
    fdp_fill_args f = {t->dldj, -inv};
    be->fill(be, z.n, &f);
    float *lat = ctx->latent;
    ctx->latent = NULL;
    if (t->rebuilt) {
        fdp_tensor y = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
        be->copy(be, y.data, z.data, sizeof(float) * (size_t)fdp_numel(z));
        fdp_flow_backward_rebuild(t->root, ctx, y, dz, t->dldj);
    } else {
        t->root->ops->backward(t->root, ctx, dz, t->dldj);
    }
    ctx->latent = lat;
}

/* per sample: dst[i] = src[off + i], i < len (from_latent), or dst[off + i] = src[i] */
static void latent_part(fdp_ctx *ctx, int n, const float *src, int64_t src_dim, int64_t soff, float *dst,
                        int64_t dst_dim, int64_t doff, int64_t len) {
    fdp_slice_copy_args a = {src, dst, (int)src_dim, (int)soff, (int)dst_dim, (int)doff, (int)len, 1, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, (int64_t)n * len, &a);
}

fdp_tensor fdp_tutorial_sample(fdp_tutorial *t, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(z.c == t->C && z.h == t->H && z.w == t->W, "tutorial: latent %dx%dx%d, model built for %dx%dx%d", z.c,
              z.h, z.w, t->C, t->H, t->W);
    fdp_flow_prepare(t->root, ctx);
    int64_t D = fdp_sample_numel(z), Dz = D - t->split_len;
    fdp_tensor zf = fdp_arena_tensor(ctx->arena, z.n, t->zc, t->zh, t->zw);
    latent_part(ctx, z.n, z.data, D, t->split_len, zf.data, Dz, 0, Dz);
    fdp_scale_shift_args sc = {zf.data, zf.data, temperature, 0.0f};
    be->scale_shift(be, fdp_numel(zf), &sc);
    fdp_ctx saved = *ctx;
    ctx->latent = z.data;
    ctx->latent_dim = D;
    ctx->temperature = temperature;
    fdp_tensor v = t->root->ops->inverse(t->root, ctx, zf); /* tut_logit's inverse: sigmoid */
    ctx->latent = saved.latent;
    ctx->latent_dim = saved.latent_dim;
    ctx->temperature = saved.temperature;
    /* the tutorial's x = clamp(floor(v 256), 0, 255), as an image in [0,1] (on the host: one pass) */
    int64_t n = fdp_numel(v);
    float *h = fdp_xmalloc(sizeof(float) * (size_t)(n ? n : 1));
    be->to_host(be, h, v.data, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = fminf(fmaxf(floorf(h[i] * 256.0f), 0.0f), 255.0f) / 255.0f;
    be->from_host(be, v.data, h, sizeof(float) * (size_t)n);
    free(h);
    return v;
}

fdp_tensor fdp_tutorial_encode(fdp_tutorial *t, fdp_ctx *ctx, fdp_tensor v) {
    FDP_CHECK(v.c == t->C && v.h == t->H && v.w == t->W, "tutorial: input %dx%dx%d, model built for %dx%dx%d", v.c,
              v.h, v.w, t->C, t->H, t->W);
    fdp_flow_prepare(t->root, ctx);
    int64_t D = fdp_sample_numel(v);
    fdp_tensor out = fdp_arena_tensor(ctx->arena, v.n, v.c, v.h, v.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    double *sldj = fdp_arena_doubles(ctx->arena, v.n);
    ctx->be->memset0(ctx->be, sldj, sizeof(double) * (size_t)v.n);
    fdp_ctx saved = *ctx;
    ctx->no_grad = 1;
    ctx->latent = out.data;
    ctx->latent_dim = D;
    fdp_tensor z = t->root->ops->forward(t->root, ctx, v, sldj);
    latent_part(ctx, v.n, z.data, D - t->split_len, 0, out.data, D, t->split_len, D - t->split_len);
    ctx->no_grad = saved.no_grad;
    ctx->latent = saved.latent;
    ctx->latent_dim = saved.latent_dim;
    fdp_arena_reset(ctx->arena, m);
    return out;
}
