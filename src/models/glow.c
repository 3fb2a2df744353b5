/* glow.c — the Glow model of openai/glow (model.py: codec, revnet2d, split2d,
 * prior; the preprocessing and the objective of _f_loss), assembled from the
 * flow layers of glow.h / flow.h: one root seq of [squeeze, K x (actnorm,
 * permutation, coupling), split, squeeze, ..., top prior] built from the
 * hyper-parameters with their checks, openai-like initialization (each layer's
 * init_values), the flow forward / inverse / backward as calls on the root,
 * the loss and sampling.
 *
 * Memory: training keeps every layer's saved activations (the stored path), or
 * with rebuild_activations none (fdp_flow_forward_inplace; backward rebuilds
 * each layer's input with its inverse, fdp_flow_backward_rebuild). With
 * ctx->no_grad (evaluation) and in the inverse (sampling) the root seq copies
 * each layer's output into one work tensor and rewinds the arena, so activation
 * memory does not grow with depth; backward does the same for the gradients. */
#include "flowdp/glow.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* module names of the permutation layers (both invconv forms are "invconv", as in openai) */
static const char *const PERM_NAMES[] = {"reverse", "shuffle", "invconv", "invconv"};

void fdp_glow_hparams_from_config(const fdp_config *cfg, fdp_glow_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    hp->n_levels = cfg->model.n_levels;
    hp->depth = cfg->model.depth;
    hp->width = cfg->model.width;
    hp->n_bits_x = cfg->model.n_bits_x;
    hp->learntop = cfg->model.learntop ? 1 : 0;
    hp->permutation = cfg->model.flow_permutation;
    hp->coupling = cfg->model.flow_coupling;
}

int fdp_glow_build(fdp_glow *g, const fdp_glow_hparams *hp, int C, int H, int W, fdp_err *err) {
    memset(g, 0, sizeof *g);
    if (C < 1 || H < 1 || W < 1) return fdp_err_set(err, "glow: input %dx%dx%d is empty", C, H, W);
    if (hp->n_levels < 1) return fdp_err_set(err, "glow: n_levels = %d, must be at least 1", hp->n_levels);
    if (hp->depth < 1)
        return fdp_err_set(err,
                           "glow: depth K = %d: level 1 would have no flow step (each level needs at least one "
                           "actnorm + permutation + coupling)",
                           hp->depth);
    if (hp->width < 1) return fdp_err_set(err, "glow: width = %d, must be at least 1", hp->width);
    if (hp->n_bits_x < 1 || hp->n_bits_x > 8)
        return fdp_err_set(err, "glow: n_bits_x = %d, must be 1..8 (bits per colour channel of 8-bit images)",
                           hp->n_bits_x);
    if ((int)hp->permutation < 0 || (int)hp->permutation > 3)
        return fdp_err_set(err, "glow: flow_permutation = %d is unknown (reverse, shuffle, invconv, invconv_lu)",
                           (int)hp->permutation);
    if ((int)hp->coupling < 0 || (int)hp->coupling > 1)
        return fdp_err_set(err, "glow: flow_coupling = %d is unknown (additive, affine)", (int)hp->coupling);
    /* check every level before building anything */
    int c = C, h = H, w = W, L = hp->n_levels;
    for (int l = 0; l < L; l++) {
        if (h % 2 != 0 || w % 2 != 0) {
            int64_t div = L <= 62 ? (int64_t)1 << L : -1;
            return fdp_err_set(err,
                               "glow: level %d of %d gets a %dx%d input, which cannot be squeezed (odd %s); with %d "
                               "level%s the image size must be divisible by %lld",
                               l + 1, L, h, w, h % 2 ? "height" : "width", L, L == 1 ? "" : "s", (long long)div);
        }
        c *= 4;
        h /= 2;
        w /= 2;
        if (c % 2 != 0)
            return fdp_err_set(err, "glow: level %d: %d channels cannot be split in halves for the coupling", l + 1, c);
        if (l < L - 1) c /= 2;
    }

    g->C = C;
    g->H = H;
    g->W = W;
    g->hp = *hp;
    g->n_bins = 1 << hp->n_bits_x;
    fdp_params_init(&g->params);
    fdp_params *p = &g->params;
    g->levels = fdp_xcalloc((size_t)L, sizeof *g->levels);
    g->root = fdp_flow_seq_create((int64_t)C * H * W);
    char pre[FDP_NAME_MAX], name[2 * FDP_NAME_MAX];
    c = C;
    h = H;
    w = W;
    int64_t off = 0;
    for (int l = 0; l < L; l++) {
        fdp_glow_level *lv = &g->levels[l];
        c *= 4;
        h /= 2;
        w /= 2;
        lv->C = c;
        lv->H = h;
        lv->W = w;
        fdp_flow_seq_add(g->root, fdp_flow_squeeze_create(0, 0)); /* openai's squeeze2d */
        lv->steps = fdp_xcalloc((size_t)hp->depth, sizeof *lv->steps);
        for (int k = 0; k < hp->depth; k++) {
            fdp_glow_step *s = &lv->steps[k];
            int perm = (int)hp->permutation;
            snprintf(pre, sizeof pre, "levels.%d.steps.%d", l, k);
            snprintf(name, sizeof name, "%s.actnorm", pre);
            fdp_flow_layer *an = fdp_flow_actnorm_create(p, name, c);
            s->actnorm = (fdp_actnorm *)an;
            snprintf(name, sizeof name, "%s.%s", pre, PERM_NAMES[perm]);
            if (perm == FDP_PERM_REVERSE || perm == FDP_PERM_SHUFFLE)
                s->perm = fdp_flow_permute_create(p, name, c, perm == FDP_PERM_SHUFFLE);
            else
                s->perm = fdp_flow_invconv_create(p, name, c, perm == FDP_PERM_INVCONV_LU);
            snprintf(name, sizeof name, "%s.f1", pre);
            fdp_flow_layer *cp = fdp_flow_glow_coupling_create(p, name, c, hp->width, hp->coupling == FDP_COUPLING_AFFINE);
            s->coupling = (fdp_glow_coupling *)cp;
            fdp_flow_seq_add(g->root, an);
            fdp_flow_seq_add(g->root, s->perm);
            fdp_flow_seq_add(g->root, cp);
        }
        lv->has_split = l < L - 1;
        if (lv->has_split) {
            lv->eps_off = off;
            lv->eps_len = (int64_t)(c / 2) * h * w;
            snprintf(name, sizeof name, "levels.%d.split", l);
            fdp_flow_layer *sp = fdp_flow_glow_split_create(p, name, c, lv->eps_off, lv->eps_len);
            lv->split = (fdp_glow_split *)sp;
            fdp_flow_seq_add(g->root, sp);
            off += lv->eps_len;
            c /= 2;
        }
    }
    g->topC = c;
    g->topH = h;
    g->topW = w;
    g->top_off = off;
    FDP_CHECK(off + (int64_t)c * h * w == (int64_t)C * H * W, "glow: latent sizes do not add up");
    fdp_flow_layer *pr = fdp_flow_glow_prior_create(p, "prior", c, hp->learntop, off, (int64_t)c * h * w);
    g->prior = (fdp_glow_prior *)pr;
    fdp_flow_seq_add(g->root, pr);
    return 0;
}

void fdp_glow_free(fdp_glow *g) {
    fdp_flow_destroy(g->root);
    if (g->levels)
        for (int l = 0; l < g->hp.n_levels; l++) free(g->levels[l].steps);
    free(g->levels);
    fdp_params_free(&g->params);
    memset(g, 0, sizeof *g);
}

void fdp_glow_alloc_init(fdp_glow *g, fdp_backend *be, uint64_t seed) {
    /* everything starts at 0 (ActNorms, Conv2dZeros, the top prior, the flags) but what the
     * layers' init_values set: invconv W random orthogonal, shuffle indices, NN convolutions */
    fdp_flow_alloc_init(g->root, &g->params, be, seed);
}

/* ---- the flow: calls on the root seq ------------------------------------------------- */
/* the root's output (and its inverse's input): the top prior leaves an empty tensor */
static fdp_tensor top_empty(const fdp_glow *g, float *data, int n, fdp_device dev) {
    return fdp_tensor_wrap(data, n, 0, g->topH, g->topW, dev);
}

void fdp_glow_flow_forward(fdp_glow *g, fdp_ctx *ctx, fdp_tensor x, double *obj, fdp_tensor *eps_out) {
    FDP_CHECK(x.c == g->C && x.h == g->H && x.w == g->W, "glow: input %dx%dx%d, model built for %dx%dx%d", x.c, x.h,
              x.w, g->C, g->H, g->W);
    float *lat = ctx->latent;
    int64_t dim = ctx->latent_dim;
    if (eps_out) {
        *eps_out = fdp_arena_tensor(ctx->arena, x.n, g->C, g->H, g->W);
        ctx->latent = eps_out->data;
        ctx->latent_dim = fdp_sample_numel(x);
    } else {
        ctx->latent = NULL;
    }
    g->root->ops->forward(g->root, ctx, x, obj);
    ctx->latent = lat;
    ctx->latent_dim = dim;
}

fdp_tensor fdp_glow_flow_inverse(fdp_glow *g, fdp_ctx *ctx, fdp_tensor eps, float temperature) {
    FDP_CHECK(eps.c == g->C && eps.h == g->H && eps.w == g->W, "glow: latent %dx%dx%d, model built for %dx%dx%d",
              eps.c, eps.h, eps.w, g->C, g->H, g->W);
    fdp_ctx saved = *ctx;
    ctx->latent = eps.data;
    ctx->latent_dim = fdp_sample_numel(eps);
    ctx->temperature = temperature;
    fdp_tensor x = g->root->ops->inverse(g->root, ctx, top_empty(g, eps.data, eps.n, eps.dev));
    ctx->latent = saved.latent;
    ctx->latent_dim = saved.latent_dim;
    ctx->temperature = saved.temperature;
    return x;
}

fdp_tensor fdp_glow_flow_backward(fdp_glow *g, fdp_ctx *ctx, const float *dobj) {
    fdp_tensor zt = g->prior->z;
    FDP_CHECK(zt.data, "glow: backward without a forward");
    int ig = ctx->input_grad;
    ctx->input_grad = 1; /* dx is asked for */
    fdp_tensor dx = g->root->ops->backward(g->root, ctx, top_empty(g, zt.data, zt.n, zt.dev), dobj);
    ctx->input_grad = ig;
    return dx;
}

/* ---- the model interface ---------------------------------------------------------------- */
double fdp_glow_loss(fdp_glow *g, fdp_ctx *ctx, fdp_tensor v, double *nll) {
    fdp_backend *be = ctx->be;
    int n = v.n;
    int64_t D = fdp_sample_numel(v);
    g->n = n;
    g->obj = fdp_arena_doubles(ctx->arena, n);
    be->memset0(be, g->obj, sizeof(double) * (size_t)n);
    g->dobj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)n);
    /* openai's preprocess: x = (bin + u)/n_bins - 0.5, v = (bin + u)/n_bins from the stage */
    fdp_tensor y = fdp_arena_tensor(ctx->arena, n, v.c, v.h, v.w);
    fdp_scale_shift_args pa = {v.data, y.data, 1.0f, -0.5f};
    be->scale_shift(be, fdp_numel(v), &pa);
    fdp_flow_prepare(g->root, ctx); /* per-step layer state (none of Glow's layers has any today) */
    g->rebuilt = NULL;
    if (g->rebuild && !ctx->no_grad) {
        /* rebuild_activations: nothing kept but what leaves the flow; backward rebuilds each
         * layer's input from its output */
        float *lat = ctx->latent;
        ctx->latent = NULL;
        fdp_flow_forward_inplace(g->root, ctx, y, g->obj);
        ctx->latent = lat;
        g->rebuilt = y.data;
    } else {
        fdp_glow_flow_forward(g, ctx, y, g->obj, NULL);
    }
    /* nll = -(objective) + D ln(n_bins): the discrete data's nats (openai's -D*log(n_bins) term) */
    double *h = fdp_xmalloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    be->to_host(be, h, g->obj, sizeof(double) * (size_t)n);
    double mean = 0.0, dl = (double)D * log((double)g->n_bins);
    for (int i = 0; i < n; i++) {
        double val = -h[i] + dl;
        if (nll) nll[i] = val;
        mean += val;
    }
    free(h);
    return n ? mean / n : 0.0;
}

double fdp_glow_forward_loss(fdp_glow *g, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll) {
    return fdp_glow_loss(g, ctx, fdp_dequantize(ctx, x, u, g->n_bins, 1), nll);
}

void fdp_glow_backward(fdp_glow *g, fdp_ctx *ctx, float loss_scale) {
    FDP_CHECK(g->dobj && g->n > 0, "glow: backward without forward_loss");
    /* loss = loss_scale * mean_n(-obj_n + const) */
    fdp_fill_args f = {g->dobj, -loss_scale / (float)g->n};
    ctx->be->fill(ctx->be, g->n, &f);
    fdp_device dev = ctx->be->dev;
    if (g->rebuilt) {
        float *dy = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)g->n * (size_t)g->C * g->H * g->W);
        fdp_flow_backward_rebuild(g->root, ctx, top_empty(g, g->rebuilt, g->n, dev), top_empty(g, dy, g->n, dev),
                                  g->dobj);
        g->rebuilt = NULL;
    } else {
        fdp_tensor zt = g->prior->z;
        FDP_CHECK(zt.data, "glow: backward without a forward");
        g->root->ops->backward(g->root, ctx, top_empty(g, zt.data, zt.n, dev), g->dobj);
    }
}

fdp_tensor fdp_glow_sample(fdp_glow *g, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    fdp_flow_prepare(g->root, ctx);
    fdp_tensor x = fdp_glow_flow_inverse(g, ctx, z, temperature);
    fdp_tensor img = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_glow_postprocess_args a = {x.data, img.data, (float)g->n_bins};
    ctx->be->glow_postprocess(ctx->be, fdp_numel(x), &a);
    return img;
}
