/* realnvp.c — the lecture notebook's RealNVP as a composition of flow layers (flow.h):
 * building the scales, the loss, and the sampler. */
#include "flowdp/realnvp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int fdp_realnvp_build(fdp_realnvp *m, int in_channels, int height, int width, int num_scales, int mid_channels,
                      int num_blocks, fdp_err *err) {
    memset(m, 0, sizeof *m);
    if (in_channels < 1 || height < 1 || width < 1)
        return fdp_err_set(err, "realnvp: input %dx%dx%d is empty", in_channels, height, width);
    if (num_scales < 1) return fdp_err_set(err, "realnvp: num_scales = %d, must be at least 1", num_scales);
    if (mid_channels < 1) return fdp_err_set(err, "realnvp: mid_channels = %d, must be at least 1", mid_channels);
    if (num_blocks < 0) return fdp_err_set(err, "realnvp: num_blocks = %d, must be at least 0", num_blocks);
    /* check every scale before building anything */
    int C = in_channels, H = height, W = width;
    for (int s = 0; s < num_scales - 1; s++) {
        if (H % 2 != 0 || W % 2 != 0)
            return fdp_err_set(err,
                               "realnvp: scale %d of %d gets a %dx%d input, which cannot be squeezed (odd %s); "
                               "with %d scales the input size must be divisible by %lld",
                               s + 1, num_scales, H, W, H % 2 ? "height" : "width", num_scales,
                               num_scales <= 62 ? 1LL << (num_scales - 1) : -1LL);
        C *= 2;
        H /= 2;
        W /= 2;
    }
    m->in_channels = in_channels;
    m->height = height;
    m->width = width;
    m->num_scales = num_scales;
    m->mid_channels = mid_channels;
    m->num_blocks = num_blocks;
    m->data_constraint = 0.9f;
    m->k = 256.0f;
    fdp_params_init(&m->params);
    fdp_params *p = &m->params;
    m->root = fdp_flow_seq_create(0);
    m->logit = fdp_flow_logit_create(p, "", m->data_constraint);
    fdp_flow_seq_add(m->root, m->logit);
    m->scales = fdp_xcalloc((size_t)num_scales, sizeof *m->scales);
    /* the layers, registering their parameters in the notebook's order (scale by scale) */
    char prefix[FDP_NAME_MAX] = "flows", name[2 * FDP_NAME_MAX];
    C = in_channels;
    H = height;
    W = width;
    int mid = mid_channels;
    fdp_flow_layer **couplings = fdp_xcalloc((size_t)num_scales * 7, sizeof *couplings);
    for (int s = 0; s < num_scales; s++) {
        fdp_realnvp_scale *S = &m->scales[s];
        S->C = C;
        S->H = H;
        S->W = W;
        S->mid = mid;
        S->is_last = s == num_scales - 1;
        S->n_in = S->is_last ? 4 : 3;
        for (int i = 0; i < S->n_in; i++) {
            snprintf(name, sizeof name, "%s.in_couplings.%d", prefix, i);
            couplings[7 * s + i] =
                fdp_flow_coupling_create(p, name, C, mid, num_blocks, FDP_MASK_CHECKERBOARD, i % 2);
            S->in_c[i] = (fdp_coupling *)couplings[7 * s + i];
        }
        if (!S->is_last)
            for (int i = 0; i < 3; i++) {
                snprintf(name, sizeof name, "%s.out_couplings.%d", prefix, i);
                couplings[7 * s + 4 + i] =
                    fdp_flow_coupling_create(p, name, 4 * C, 2 * mid, num_blocks, FDP_MASK_CHANNEL, i % 2);
                S->out_c[i] = (fdp_coupling *)couplings[7 * s + 4 + i];
            }
        size_t len = strlen(prefix);
        FDP_CHECK(len + 12 < sizeof prefix, "realnvp: too many scales for parameter names");
        memcpy(prefix + len, ".next_block", 12);
        C *= 2;
        H /= 2;
        W /= 2;
        mid *= 2;
    }
    /* the composition, from the last scale up */
    fdp_flow_layer *next = NULL;
    for (int s = num_scales - 1; s >= 0; s--) {
        fdp_realnvp_scale *S = &m->scales[s];
        fdp_flow_layer *seq = fdp_flow_seq_create(0);
        for (int i = 0; i < S->n_in; i++) fdp_flow_seq_add(seq, couplings[7 * s + i]);
        if (!S->is_last) {
            fdp_flow_seq_add(seq, fdp_flow_squeeze_create(0, 0));
            for (int i = 0; i < 3; i++) fdp_flow_seq_add(seq, couplings[7 * s + 4 + i]);
            fdp_flow_seq_add(seq, fdp_flow_squeeze_create(0, 1));
            fdp_flow_seq_add(seq, fdp_flow_squeeze_create(1, 0));
            fdp_flow_seq_add(seq, fdp_flow_multiscale_create(2 * S->C, next)); /* the other 2C: factored out */
            fdp_flow_seq_add(seq, fdp_flow_squeeze_create(1, 1));
        }
        next = seq;
    }
    free(couplings);
    m->body = next;
    fdp_flow_seq_add(m->root, m->body);
    return 0;
}

void fdp_realnvp_free(fdp_realnvp *m) {
    fdp_flow_destroy(m->root);
    free(m->scales);
    fdp_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

void fdp_realnvp_alloc_init(fdp_realnvp *m, fdp_backend *be, uint64_t seed) {
    fdp_flow_logit_set_bound(m->logit, m->data_constraint);
    fdp_flow_alloc_init(m->root, &m->params, be, seed);
}

void fdp_realnvp_prepare(fdp_realnvp *m, fdp_ctx *ctx) { fdp_flow_prepare(m->root, ctx); }

fdp_tensor fdp_realnvp_flow_forward(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor y, double *sldj) {
    FDP_CHECK(y.c == m->in_channels && y.h == m->height && y.w == m->width,
              "realnvp: input %dx%dx%d, model built for %dx%dx%d", y.c, y.h, y.w, m->in_channels, m->height, m->width);
    return m->body->ops->forward(m->body, ctx, y, sldj);
}

fdp_tensor fdp_realnvp_flow_inverse(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor z) {
    return m->body->ops->inverse(m->body, ctx, z);
}

fdp_tensor fdp_realnvp_flow_backward(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor dz, const float *dldj) {
    return m->body->ops->backward(m->body, ctx, dz, dldj);
}

double fdp_realnvp_loss(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor v, double *nll) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(v.c == m->in_channels && v.h == m->height && v.w == m->width,
              "realnvp: input %dx%dx%d, model built for %dx%dx%d", v.c, v.h, v.w, m->in_channels, m->height, m->width);
    fdp_realnvp_prepare(m, ctx);
    m->sldj = fdp_arena_doubles(ctx->arena, v.n);
    be->memset0(be, m->sldj, sizeof(double) * (size_t)v.n);
    m->dldj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)v.n);
    m->rebuilt = m->rebuild_activations && !ctx->no_grad;
    if (m->rebuilt) {
        /* every layer works in place on a copy of v, which becomes z */
        fdp_tensor y = fdp_arena_tensor(ctx->arena, v.n, v.c, v.h, v.w);
        be->copy(be, y.data, v.data, sizeof(float) * (size_t)fdp_numel(v));
        m->z = fdp_flow_forward_inplace(m->root, ctx, y, m->sldj);
    } else {
        m->z = m->root->ops->forward(m->root, ctx, v, m->sldj);
    }
    return fdp_gaussian_nll(ctx, m->z, m->sldj, m->k, nll);
}

double fdp_realnvp_forward_loss(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll) {
    return fdp_realnvp_loss(m, ctx, fdp_dequantize(ctx, x, u, (int)m->k, 0), nll);
}

void fdp_realnvp_backward(fdp_realnvp *m, fdp_ctx *ctx, float loss_scale) {
    fdp_backend *be = ctx->be;
    fdp_tensor z = m->z;
    /* loss = loss_scale * mean_n (0.5*|z_n|^2 - sldj_n + const) */
    float inv = loss_scale / (float)z.n;
    fdp_tensor dz = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
    fdp_axpby_args a = {z.data, dz.data, inv, 0.0f};
    be->axpby(be, fdp_numel(z), &a);
    fdp_fill_args f = {m->dldj, -inv};
    be->fill(be, z.n, &f);
    if (m->rebuilt) {
        /* rebuild in a copy, so that m->z stays the forward's z */
        fdp_tensor y = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
        be->copy(be, y.data, z.data, sizeof(float) * (size_t)fdp_numel(z));
        fdp_flow_backward_rebuild(m->root, ctx, y, dz, m->dldj);
    } else {
        m->root->ops->backward(m->root, ctx, dz, m->dldj);
    }
}

fdp_tensor fdp_realnvp_sample(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor z, int undo_constraint) {
    fdp_realnvp_prepare(m, ctx);
    fdp_tensor y = fdp_realnvp_flow_inverse(m, ctx, z);
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_sigmoid_args a = {y.data, x.data};
    ctx->be->sigmoid(ctx->be, fdp_numel(y), &a);
    if (undo_constraint) {
        /* sigmoid gives s = ((2p-1)*bound + 1)/2, so p = (s - (1-bound)/2)/bound */
        float b = m->data_constraint;
        fdp_scale_shift_args sc = {x.data, x.data, 1.0f / b, -(1.0f - b) / (2.0f * b)};
        ctx->be->scale_shift(ctx->be, fdp_numel(x), &sc);
    }
    return x;
}
