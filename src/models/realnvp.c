/* realnvp.c — the lecture notebook's RealNVP: building the scales, the
 * recursive forward / inverse / backward, the loss, and PyTorch-like init. */
#include "flowdp/realnvp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/rng.h"

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
    int64_t one[1] = {1};
    m->b_data_constraint = fdp_params_add(&m->params, "data_constraint", FDP_BUFFER, 0, 1, one);
    m->scales = fdp_xcalloc((size_t)num_scales, sizeof *m->scales);
    char prefix[FDP_NAME_MAX] = "flows", name[2 * FDP_NAME_MAX];
    C = in_channels;
    H = height;
    W = width;
    int mid = mid_channels;
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
            fdp_coupling_init(&S->in_c[i], &m->params, name, C, mid, num_blocks, FDP_MASK_CHECKERBOARD, i % 2);
        }
        if (!S->is_last)
            for (int i = 0; i < 3; i++) {
                snprintf(name, sizeof name, "%s.out_couplings.%d", prefix, i);
                fdp_coupling_init(&S->out_c[i], &m->params, name, 4 * C, 2 * mid, num_blocks, FDP_MASK_CHANNEL, i % 2);
            }
        size_t len = strlen(prefix);
        FDP_CHECK(len + 12 < sizeof prefix, "realnvp: too many scales for parameter names");
        memcpy(prefix + len, ".next_block", 12);
        C *= 2;
        H /= 2;
        W /= 2;
        mid *= 2;
    }
    return 0;
}

void fdp_realnvp_free(fdp_realnvp *m) {
    for (int s = 0; s < m->num_scales; s++) {
        fdp_realnvp_scale *S = &m->scales[s];
        for (int i = 0; i < S->n_in; i++) fdp_coupling_free(&S->in_c[i]);
        if (!S->is_last)
            for (int i = 0; i < 3; i++) fdp_coupling_free(&S->out_c[i]);
    }
    free(m->scales);
    fdp_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

void fdp_realnvp_alloc_init(fdp_realnvp *m, fdp_backend *be, uint64_t seed) {
    fdp_params *p = &m->params;
    fdp_params_finalize(p, be);
    /* initialize on the host, then upload */
    float *hp = fdp_xcalloc((size_t)(p->n_params ? p->n_params : 1), sizeof(float));
    float *hb = fdp_xcalloc((size_t)(p->n_buffers ? p->n_buffers : 1), sizeof(float));
    for (int i = 0; i < p->count; i++) {
        fdp_param_entry *e = &p->entries[i];
        float *d = (e->kind == FDP_PARAM ? hp : hb) + e->offset;
        if (e->kind == FDP_BUFFER) {
            float v = ends_with(e->name, "running_var") ? 1.0f : 0.0f;
            if (strcmp(e->name, "data_constraint") == 0) v = m->data_constraint;
            for (int64_t j = 0; j < e->numel; j++) d[j] = v;
        } else if (ends_with(e->name, "rescale.weight_g") || ends_with(e->name, "rescale.weight_v") ||
                   (ends_with(e->name, "norm.weight"))) {
            for (int64_t j = 0; j < e->numel; j++) d[j] = 1.0f;
        } else if (ends_with(e->name, "norm.bias")) {
            for (int64_t j = 0; j < e->numel; j++) d[j] = 0.0f;
        } else if (ends_with(e->name, "conv.weight_v")) {
            /* kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
            double bound = 1.0 / sqrt((double)(e->shape[1] * e->shape[2] * e->shape[3]));
            for (int64_t j = 0; j < e->numel; j++)
                d[j] = (float)(bound * (2.0 * fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)i, 0, (uint64_t)j) - 1.0));
            /* weight_g = ||v|| per output channel: the entry registered just before */
            fdp_param_entry *g = &p->entries[i - 1];
            FDP_CHECK(ends_with(g->name, "conv.weight_g"), "realnvp init: %s not after its weight_g", e->name);
            int64_t cols = e->numel / e->shape[0];
            for (int64_t o = 0; o < e->shape[0]; o++) {
                double s = 0.0;
                for (int64_t c = 0; c < cols; c++) s += (double)d[o * cols + c] * d[o * cols + c];
                hp[g->offset + o] = (float)sqrt(s);
            }
        } else if (ends_with(e->name, "conv.bias")) {
            /* fan_in of the conv: the weight_v registered two entries later */
            fdp_param_entry *v = &p->entries[i + 2];
            double bound = 1.0 / sqrt((double)(v->shape[1] * v->shape[2] * v->shape[3]));
            for (int64_t j = 0; j < e->numel; j++)
                d[j] = (float)(bound * (2.0 * fdp_philox_uniform(seed, FDP_RNG_INIT, (uint64_t)i, 0, (uint64_t)j) - 1.0));
        } else if (ends_with(e->name, "conv.weight_g")) {
            /* set with its weight_v */
        } else {
            FDP_FATAL("realnvp init: no rule for parameter %s", e->name);
        }
    }
    be->from_host(be, p->params, hp, sizeof(float) * (size_t)p->n_params);
    be->from_host(be, p->buffers, hb, sizeof(float) * (size_t)p->n_buffers);
    free(hp);
    free(hb);
}

void fdp_realnvp_prepare(fdp_realnvp *m, fdp_ctx *ctx) {
    for (int s = 0; s < m->num_scales; s++) {
        fdp_realnvp_scale *S = &m->scales[s];
        for (int i = 0; i < S->n_in; i++) fdp_coupling_prepare(&S->in_c[i], ctx);
        if (!S->is_last)
            for (int i = 0; i < 3; i++) fdp_coupling_prepare(&S->out_c[i], ctx);
    }
}

static fdp_tensor scale_forward(fdp_realnvp *m, fdp_ctx *ctx, int s, fdp_tensor x, double *sldj) {
    fdp_realnvp_scale *S = &m->scales[s];
    for (int i = 0; i < S->n_in; i++) x = fdp_coupling_forward(&S->in_c[i], ctx, x, sldj);
    if (S->is_last) return x;
    x = fdp_squeeze(ctx, x, 0);
    for (int i = 0; i < 3; i++) x = fdp_coupling_forward(&S->out_c[i], ctx, x, sldj);
    x = fdp_unsqueeze(ctx, x, 0);
    x = fdp_squeeze(ctx, x, 1);
    fdp_tensor keep = fdp_channel_slice(ctx, x, 0, 2 * S->C);
    fdp_tensor split = fdp_channel_slice(ctx, x, 2 * S->C, 2 * S->C);
    keep = scale_forward(m, ctx, s + 1, keep, sldj);
    x = fdp_channel_cat(ctx, keep, split);
    return fdp_unsqueeze(ctx, x, 1);
}

static fdp_tensor scale_inverse(fdp_realnvp *m, fdp_ctx *ctx, int s, fdp_tensor z) {
    fdp_realnvp_scale *S = &m->scales[s];
    fdp_tensor x = z;
    if (!S->is_last) {
        x = fdp_squeeze(ctx, x, 1);
        fdp_tensor keep = fdp_channel_slice(ctx, x, 0, 2 * S->C);
        fdp_tensor split = fdp_channel_slice(ctx, x, 2 * S->C, 2 * S->C);
        keep = scale_inverse(m, ctx, s + 1, keep);
        x = fdp_channel_cat(ctx, keep, split);
        x = fdp_unsqueeze(ctx, x, 1);
        x = fdp_squeeze(ctx, x, 0);
        for (int i = 2; i >= 0; i--) x = fdp_coupling_inverse(&S->out_c[i], ctx, x);
        x = fdp_unsqueeze(ctx, x, 0);
    }
    for (int i = S->n_in - 1; i >= 0; i--) x = fdp_coupling_inverse(&S->in_c[i], ctx, x);
    return x;
}

static fdp_tensor scale_backward(fdp_realnvp *m, fdp_ctx *ctx, int s, fdp_tensor d, const float *dldj) {
    fdp_realnvp_scale *S = &m->scales[s];
    if (!S->is_last) {
        /* the transposes of the forward's permutations, in reverse order */
        d = fdp_squeeze(ctx, d, 1);
        fdp_tensor dkeep = fdp_channel_slice(ctx, d, 0, 2 * S->C);
        fdp_tensor dsplit = fdp_channel_slice(ctx, d, 2 * S->C, 2 * S->C);
        dkeep = scale_backward(m, ctx, s + 1, dkeep, dldj);
        d = fdp_channel_cat(ctx, dkeep, dsplit);
        d = fdp_unsqueeze(ctx, d, 1);
        d = fdp_squeeze(ctx, d, 0);
        for (int i = 2; i >= 0; i--) d = fdp_coupling_backward(&S->out_c[i], ctx, d, dldj);
        d = fdp_unsqueeze(ctx, d, 0);
    }
    for (int i = S->n_in - 1; i >= 0; i--) d = fdp_coupling_backward(&S->in_c[i], ctx, d, dldj);
    return d;
}

/* ---- rebuild_activations: the same flow, every tensor transformed in place ----
 * Forward keeps only the flow's running tensor (which ends as z), per-sample log-dets and,
 * from prepare, the weight-normed weights and BatchNorm statistics; each coupling frees its
 * s/t network at once. Backward walks the flow in reverse and rebuilds every coupling's input
 * from its output (fdp_coupling_backward_rebuild). Permutations go through a scratch copy
 * and back, and the half that moves to the next scale is a slice copied back after it, so
 * the arena holds at most about two images per sample beyond one coupling's working set,
 * whatever the depth. */

/* x (in place) squeezed (unsq 0) or unsqueezed (unsq 1) in the order alt; returns its new shape */
static fdp_tensor permute_inplace(fdp_ctx *ctx, fdp_tensor x, int alt, int unsq) {
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor t = unsq ? fdp_unsqueeze(ctx, x, alt) : fdp_squeeze(ctx, x, alt);
    ctx->be->copy(ctx->be, x.data, t.data, sizeof(float) * (size_t)fdp_numel(x));
    fdp_arena_reset(ctx->arena, m);
    t.data = x.data;
    return t;
}

/* channels [0, part.c) of whole = part */
static void put_channels(fdp_ctx *ctx, fdp_tensor part, fdp_tensor whole) {
    fdp_slice_copy_args a = {part.data, whole.data, part.c, 0, whole.c, 0, part.c, (int64_t)part.h * part.w, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(part), &a);
}

static void scale_forward_rebuild(fdp_realnvp *m, fdp_ctx *ctx, int s, fdp_tensor x, double *sldj) {
    fdp_realnvp_scale *S = &m->scales[s];
    for (int i = 0; i < S->n_in; i++) fdp_coupling_forward_inplace(&S->in_c[i], ctx, x, sldj);
    if (S->is_last) return;
    fdp_tensor q = permute_inplace(ctx, x, 0, 0);
    for (int i = 0; i < 3; i++) fdp_coupling_forward_inplace(&S->out_c[i], ctx, q, sldj);
    q = permute_inplace(ctx, permute_inplace(ctx, q, 0, 1), 1, 0);
    fdp_arena_mark mk = fdp_arena_get_mark(ctx->arena);
    fdp_tensor keep = fdp_channel_slice(ctx, q, 0, 2 * S->C); /* the rest is factored out, stays in q */
    scale_forward_rebuild(m, ctx, s + 1, keep, sldj);
    put_channels(ctx, keep, q);
    fdp_arena_reset(ctx->arena, mk);
    permute_inplace(ctx, q, 1, 1);
}

/* y (in place -> the scale's input, rebuilt), d (in place -> its gradient) */
static void scale_backward_rebuild(fdp_realnvp *m, fdp_ctx *ctx, int s, fdp_tensor y, fdp_tensor d,
                                   const float *dldj) {
    fdp_realnvp_scale *S = &m->scales[s];
    if (!S->is_last) {
        fdp_tensor qy = permute_inplace(ctx, y, 1, 0), qd = permute_inplace(ctx, d, 1, 0);
        fdp_arena_mark mk = fdp_arena_get_mark(ctx->arena);
        fdp_tensor ky = fdp_channel_slice(ctx, qy, 0, 2 * S->C), kd = fdp_channel_slice(ctx, qd, 0, 2 * S->C);
        scale_backward_rebuild(m, ctx, s + 1, ky, kd, dldj);
        put_channels(ctx, ky, qy);
        put_channels(ctx, kd, qd);
        fdp_arena_reset(ctx->arena, mk);
        qy = permute_inplace(ctx, permute_inplace(ctx, qy, 1, 1), 0, 0);
        qd = permute_inplace(ctx, permute_inplace(ctx, qd, 1, 1), 0, 0);
        for (int i = 2; i >= 0; i--) fdp_coupling_backward_rebuild(&S->out_c[i], ctx, qy, qd, dldj);
        y = permute_inplace(ctx, qy, 0, 1);
        d = permute_inplace(ctx, qd, 0, 1);
    }
    for (int i = S->n_in - 1; i >= 0; i--) fdp_coupling_backward_rebuild(&S->in_c[i], ctx, y, d, dldj);
}

fdp_tensor fdp_realnvp_flow_forward(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor y, double *sldj) {
    FDP_CHECK(y.c == m->in_channels && y.h == m->height && y.w == m->width,
              "realnvp: input %dx%dx%d, model built for %dx%dx%d", y.c, y.h, y.w, m->in_channels, m->height, m->width);
    return scale_forward(m, ctx, 0, y, sldj);
}

fdp_tensor fdp_realnvp_flow_inverse(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor z) { return scale_inverse(m, ctx, 0, z); }

fdp_tensor fdp_realnvp_flow_backward(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor dz, const float *dldj) {
    return scale_backward(m, ctx, 0, dz, dldj);
}

double fdp_realnvp_forward_loss(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll) {
    fdp_backend *be = ctx->be;
    fdp_realnvp_prepare(m, ctx);
    m->sldj = fdp_arena_doubles(ctx->arena, x.n);
    m->dldj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)x.n);
    fdp_tensor y = fdp_logit_forward(ctx, x, u, m->k, m->data_constraint, m->sldj);
    m->rebuilt = m->rebuild_activations && !ctx->no_grad;
    if (m->rebuilt) {
        FDP_CHECK(y.c == m->in_channels && y.h == m->height && y.w == m->width,
                  "realnvp: input %dx%dx%d, model built for %dx%dx%d", y.c, y.h, y.w, m->in_channels, m->height,
                  m->width);
        scale_forward_rebuild(m, ctx, 0, y, m->sldj); /* y becomes z */
        m->z = y;
    } else {
        m->z = fdp_realnvp_flow_forward(m, ctx, y, m->sldj);
    }
    (void)be;
    return fdp_gaussian_nll(ctx, m->z, m->sldj, m->k, nll);
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
        scale_backward_rebuild(m, ctx, 0, y, dz, m->dldj);
    } else {
        fdp_realnvp_flow_backward(m, ctx, dz, m->dldj);
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
