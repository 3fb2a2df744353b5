/* model.c — the fdp_model interface over RealNVP, Glow and the tutorial's flows. */
#include "flowdp/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/glow.h"
#include "flowdp/realnvp.h"
#include "flowdp/tutorial.h"

static double realnvp_forward_loss(fdp_model *m, fdp_ctx *ctx, fdp_tensor v, double *nll) {
    return fdp_realnvp_loss(m->impl, ctx, v, nll);
}
static void realnvp_backward(fdp_model *m, fdp_ctx *ctx, float loss_scale) { fdp_realnvp_backward(m->impl, ctx, loss_scale); }
static fdp_tensor realnvp_sample(fdp_model *m, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    if (temperature != 1.0f) {
        fdp_scale_shift_args a = {z.data, z.data, temperature, 0.0f};
        ctx->be->scale_shift(ctx->be, fdp_numel(z), &a);
    }
    return fdp_realnvp_sample(m->impl, ctx, z, 1);
}
/* z = body(logit(v)) of the root forward, in evaluation mode (BatchNorm's running statistics), no_grad */
static fdp_tensor realnvp_encode(fdp_model *m, fdp_ctx *ctx, fdp_tensor v) {
    fdp_realnvp *r = m->impl;
    fdp_ctx c = *ctx;
    c.training = 0;
    c.no_grad = 1;
    fdp_realnvp_prepare(r, &c);
    double *sldj = fdp_arena_doubles(c.arena, v.n);
    c.be->memset0(c.be, sldj, sizeof(double) * (size_t)v.n);
    return r->root->ops->forward(r->root, &c, v, sldj);
}
static void realnvp_destroy(fdp_model *m) {
    fdp_realnvp_free(m->impl);
    free(m->impl);
}

static double glow_forward_loss(fdp_model *m, fdp_ctx *ctx, fdp_tensor v, double *nll) {
    return fdp_glow_loss(m->impl, ctx, v, nll);
}
static void glow_backward(fdp_model *m, fdp_ctx *ctx, float loss_scale) { fdp_glow_backward(m->impl, ctx, loss_scale); }
static fdp_tensor glow_sample(fdp_model *m, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    return fdp_glow_sample(m->impl, ctx, z, temperature);
}
/* the eps latent vector of v - 0.5 (openai's preprocess), in evaluation mode (no ActNorm init), no_grad */
static fdp_tensor glow_encode(fdp_model *m, fdp_ctx *ctx, fdp_tensor v) {
    fdp_glow *g = m->impl;
    fdp_ctx c = *ctx;
    c.training = 0;
    c.no_grad = 1;
    fdp_tensor y = fdp_arena_tensor(c.arena, v.n, v.c, v.h, v.w);
    fdp_scale_shift_args pa = {v.data, y.data, 1.0f, -0.5f};
    c.be->scale_shift(c.be, fdp_numel(v), &pa);
    fdp_flow_prepare(g->root, &c);
    double *obj = fdp_arena_doubles(c.arena, v.n);
    c.be->memset0(c.be, obj, sizeof(double) * (size_t)v.n);
    fdp_tensor eps;
    fdp_glow_flow_forward(g, &c, y, obj, &eps);
    return eps;
}
static void glow_destroy(fdp_model *m) {
    fdp_glow_free(m->impl);
    free(m->impl);
}

static double tutorial_forward_loss(fdp_model *m, fdp_ctx *ctx, fdp_tensor v, double *nll) {
    return fdp_tutorial_loss(m->impl, ctx, v, nll);
}
static void tutorial_backward(fdp_model *m, fdp_ctx *ctx, float loss_scale) {
    fdp_tutorial_backward(m->impl, ctx, loss_scale);
}
static fdp_tensor tutorial_sample(fdp_model *m, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    return fdp_tutorial_sample(m->impl, ctx, z, temperature);
}
static fdp_tensor tutorial_encode(fdp_model *m, fdp_ctx *ctx, fdp_tensor v) { return fdp_tutorial_encode(m->impl, ctx, v); }
static void tutorial_destroy(fdp_model *m) {
    fdp_tutorial_free(m->impl);
    free(m->impl);
}

/* the fdp_model of an implementation: its table (type and operations) and this instance */
static fdp_model *wrap(const fdp_model *table, int C, int H, int W, int n_bins, fdp_params *params, void *impl) {
    fdp_model *m = fdp_xcalloc(1, sizeof *m);
    *m = *table;
    m->C = C;
    m->H = H;
    m->W = W;
    m->n_bins = n_bins;
    m->params = params;
    m->impl = impl;
    return m;
}

static const fdp_model GLOW_MODEL = {.type = "glow",
                                    .forward_loss = glow_forward_loss,
                                    .backward = glow_backward,
                                    .sample = glow_sample,
                                    .encode = glow_encode,
                                    .destroy = glow_destroy};
static const fdp_model TUTORIAL_MODEL = {.type = "tutorial",
                                    .forward_loss = tutorial_forward_loss,
                                    .backward = tutorial_backward,
                                    .sample = tutorial_sample,
                                    .encode = tutorial_encode,
                                    .destroy = tutorial_destroy};
static const fdp_model REALNVP_MODEL = {.type = "realnvp",
                                    .forward_loss = realnvp_forward_loss,
                                    .backward = realnvp_backward,
                                    .sample = realnvp_sample,
                                    .encode = realnvp_encode,
                                    .destroy = realnvp_destroy};

/* ---- checks that need the image shape, as errors about the keys (naming where each value came
 * from: the config file and line, or the --set). The builders check again (their messages name
 * no config), for callers that build without a config. ---- */

/* floats in one activation tensor: kernels index with 32-bit ints, and more is tens of GiB */
#define MAX_TENSOR_FLOATS ((int64_t)INT32_MAX)
/* learnable parameters: with gradients and two optimizer moments, 16 bytes each */
#define MAX_PARAMS ((int64_t)1 << 30)

static int check_batch(const fdp_config *cfg, int64_t per_sample, const char *what, fdp_err *err) {
    int64_t b = cfg->train.batch_size;
    if (b * per_sample > MAX_TENSOR_FLOATS)
        return fdp_config_key_error(cfg, err, "train", "batch_size",
                                    "%lld images x %lld floats per image in %s = %lld floats in one activation "
                                    "tensor (more than %lld; lower the batch size or the model's width)",
                                    (long long)b, (long long)per_sample, what, (long long)(b * per_sample),
                                    (long long)MAX_TENSOR_FLOATS);
    return 0;
}

static int check_params(const fdp_config *cfg, const fdp_params *p, const char *key, fdp_err *err) {
    int64_t n = 0;
    for (int i = 0; i < p->count; i++)
        if (p->entries[i].kind == FDP_PARAM) n += p->entries[i].numel;
    if (n > MAX_PARAMS)
        return fdp_config_key_error(cfg, err, "model", key,
                                    "the model would have %lld parameters (more than %lld: lower [model] %s%s)",
                                    (long long)n, (long long)MAX_PARAMS, key,
                                    cfg->model.type == FDP_MODEL_GLOW       ? ", depth or n_levels"
                                    : cfg->model.type == FDP_MODEL_TUTORIAL ? " or the other c_hidden keys"
                                                                            : ", num_blocks or num_scales");
    return 0;
}

static int check_realnvp(const fdp_config *cfg, int C, int H, int W, fdp_err *err) {
    int n = cfg->model.num_scales, h = H, w = W;
    for (int s = 0; s < n - 1; s++) {
        if (h % 2 != 0 || w % 2 != 0)
            return fdp_config_key_error(cfg, err, "model", "num_scales",
                                        "scale %d of %d would get a %dx%d image, which cannot be squeezed (odd %s); "
                                        "with %d scales the image size (%dx%d) must be divisible by %lld",
                                        s + 1, n, h, w, h % 2 ? "height" : "width", n, H, W, n <= 62 ? 1LL << (n - 1) : -1LL);
        h /= 2;
        w /= 2;
    }
    (void)C;
    /* the widest s/t-network activation: mid_channels at the full image size (scale 1) */
    return check_batch(cfg, (int64_t)cfg->model.mid_channels * H * W, "the s/t networks", err);
}

static int check_glow(const fdp_config *cfg, int C, int H, int W, fdp_err *err) {
    int L = cfg->model.n_levels, h = H, w = W;
    for (int l = 0; l < L; l++) {
        if (h % 2 != 0 || w % 2 != 0)
            return fdp_config_key_error(cfg, err, "model", "n_levels",
                                        "level %d of %d would get a %dx%d image, which cannot be squeezed (odd %s); "
                                        "with %d level%s the image size (%dx%d) must be divisible by %lld",
                                        l + 1, L, h, w, h % 2 ? "height" : "width", L, L == 1 ? "" : "s", H, W,
                                        L <= 62 ? 1LL << L : -1LL);
        h /= 2;
        w /= 2;
    }
    /* the widest coupling-network activation: width channels at level 1 (H/2 x W/2) */
    int64_t per = (int64_t)cfg->model.width * (H / 2) * (W / 2);
    if ((int64_t)C * H * W > per) per = (int64_t)C * H * W;
    return check_batch(cfg, per, "the coupling networks", err);
}

static int glow_create(const fdp_config *cfg, int C, int H, int W, fdp_backend *be, uint64_t seed, fdp_model **out,
                       fdp_err *err) {
    fdp_glow *g = fdp_xcalloc(1, sizeof *g);
    fdp_glow_hparams hp;
    fdp_glow_hparams_from_config(cfg, &hp);
    if (check_glow(cfg, C, H, W, err) != 0 || fdp_glow_build(g, &hp, C, H, W, err) != 0 ||
        check_params(cfg, &g->params, "width", err) != 0) {
        fdp_glow_free(g);
        free(g);
        return -1;
    }
    g->rebuild = cfg->train.rebuild_activations;
    fdp_glow_alloc_init(g, be, seed);
    *out = wrap(&GLOW_MODEL, C, H, W, g->n_bins, &g->params, g);
    return 0;
}

static int tutorial_create(const fdp_config *cfg, int C, int H, int W, fdp_backend *be, uint64_t seed,
                           fdp_model **out, fdp_err *err) {
    int multi = cfg->model.tutorial_arch == FDP_TUT_MULTISCALE;
    if (multi && (H % 4 != 0 || W % 4 != 0))
        return fdp_config_key_error(cfg, err, "model", "tutorial_arch",
                                    "the multiscale flow squeezes twice, so the image size (%dx%d) must be divisible "
                                    "by 4 (%s is odd after %s squeeze)",
                                    H, W, H % 4 ? "the height" : "the width", (H % 2 || W % 2) ? "the first" : "the second");
    /* the widest activation: ConcatELU's 2 c_hidden channels at full size (scale 1) */
    int64_t per = (int64_t)2 * cfg->model.c_hidden * H * W;
    if (multi && (int64_t)2 * cfg->model.c_hidden_scale2 * (H / 2) * (W / 2) > per)
        per = (int64_t)2 * cfg->model.c_hidden_scale2 * (H / 2) * (W / 2);
    if (multi && (int64_t)2 * cfg->model.c_hidden_scale3 * (H / 4) * (W / 4) > per)
        per = (int64_t)2 * cfg->model.c_hidden_scale3 * (H / 4) * (W / 4);
    if (check_batch(cfg, per, "the gated conv nets", err) != 0) return -1;
    int hid[3] = {cfg->model.c_hidden, cfg->model.c_hidden_scale2, cfg->model.c_hidden_scale3};
    fdp_tutorial *t = fdp_xcalloc(1, sizeof *t);
    if (fdp_tutorial_build(t, C, H, W, multi, hid, err) != 0) {
        free(t);
        return -1;
    }
    if (check_params(cfg, &t->params, "c_hidden", err) != 0) {
        fdp_tutorial_free(t);
        free(t);
        return -1;
    }
    t->rebuild_activations = cfg->train.rebuild_activations;
    fdp_tutorial_alloc_init(t, be, seed);
    *out = wrap(&TUTORIAL_MODEL, C, H, W, 256, &t->params, t);
    return 0;
}

int fdp_model_create(const fdp_config *cfg, int C, int H, int W, fdp_backend *be, uint64_t seed, fdp_model **out,
                     fdp_err *err) {
    *out = NULL;
    if (cfg->model.type == FDP_MODEL_GLOW) return glow_create(cfg, C, H, W, be, seed, out, err);
    if (cfg->model.type == FDP_MODEL_TUTORIAL) return tutorial_create(cfg, C, H, W, be, seed, out, err);
    if (cfg->model.type != FDP_MODEL_REALNVP)
        return fdp_err_set(err, "[model] type = %d is unknown (realnvp, glow, tutorial)", (int)cfg->model.type);
    if (check_realnvp(cfg, C, H, W, err) != 0) return -1;
    fdp_realnvp *r = fdp_xcalloc(1, sizeof *r);
    if (fdp_realnvp_build(r, C, H, W, cfg->model.num_scales, cfg->model.mid_channels, cfg->model.num_blocks, err) != 0) {
        free(r);
        return -1;
    }
    if (check_params(cfg, &r->params, "mid_channels", err) != 0) {
        fdp_realnvp_free(r);
        free(r);
        return -1;
    }
    r->data_constraint = (float)cfg->model.data_constraint;
    r->rebuild_activations = cfg->train.rebuild_activations;
    fdp_realnvp_alloc_init(r, be, seed);
    *out = wrap(&REALNVP_MODEL, C, H, W, 256, &r->params, r);
    return 0;
}

void fdp_model_destroy(fdp_model *m) {
    if (!m) return;
    m->destroy(m);
    free(m);
}

double fdp_model_loss_xu(fdp_model *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll) {
    int round = strcmp(m->type, "glow") == 0; /* as fdp_dequant_create (the tutorial: unrounded, 256 bins) */
    return m->forward_loss(m, ctx, fdp_dequantize(ctx, x, u, m->n_bins, round), nll);
}
