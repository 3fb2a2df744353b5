/* model.c — the fdp_model interface over RealNVP and Glow. */
#include "flowdp/model.h"

#include <stdlib.h>

#include "flowdp/glow.h"
#include "flowdp/realnvp.h"

static double realnvp_forward_loss(fdp_model *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll) {
    return fdp_realnvp_forward_loss(m->impl, ctx, x, u, nll);
}
static void realnvp_backward(fdp_model *m, fdp_ctx *ctx, float loss_scale) { fdp_realnvp_backward(m->impl, ctx, loss_scale); }
static fdp_tensor realnvp_sample(fdp_model *m, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    if (temperature != 1.0f) {
        fdp_scale_shift_args a = {z.data, z.data, temperature, 0.0f};
        ctx->be->scale_shift(ctx->be, fdp_numel(z), &a);
    }
    return fdp_realnvp_sample(m->impl, ctx, z, 1);
}
static void realnvp_destroy(fdp_model *m) {
    fdp_realnvp_free(m->impl);
    free(m->impl);
}

static double glow_forward_loss(fdp_model *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll) {
    return fdp_glow_forward_loss(m->impl, ctx, x, u, nll);
}
static void glow_backward(fdp_model *m, fdp_ctx *ctx, float loss_scale) { fdp_glow_backward(m->impl, ctx, loss_scale); }
static fdp_tensor glow_sample(fdp_model *m, fdp_ctx *ctx, fdp_tensor z, float temperature) {
    return fdp_glow_sample(m->impl, ctx, z, temperature);
}
static void glow_destroy(fdp_model *m) {
    fdp_glow_free(m->impl);
    free(m->impl);
}

static int glow_create(const fdp_config *cfg, int C, int H, int W, fdp_backend *be, uint64_t seed, fdp_model **out,
                       fdp_err *err) {
    fdp_glow *g = fdp_xcalloc(1, sizeof *g);
    fdp_glow_hparams hp;
    fdp_glow_hparams_from_config(cfg, &hp);
    if (fdp_glow_build(g, &hp, C, H, W, err) != 0) {
        fdp_glow_free(g);
        free(g);
        return -1;
    }
    fdp_glow_alloc_init(g, be, seed);
    fdp_model *m = fdp_xcalloc(1, sizeof *m);
    m->type = "glow";
    m->C = C;
    m->H = H;
    m->W = W;
    m->n_bins = g->n_bins;
    m->params = &g->params;
    m->forward_loss = glow_forward_loss;
    m->backward = glow_backward;
    m->sample = glow_sample;
    m->destroy = glow_destroy;
    m->impl = g;
    *out = m;
    return 0;
}

int fdp_model_create(const fdp_config *cfg, int C, int H, int W, fdp_backend *be, uint64_t seed, fdp_model **out,
                     fdp_err *err) {
    *out = NULL;
    if (cfg->model.type == FDP_MODEL_GLOW) return glow_create(cfg, C, H, W, be, seed, out, err);
    if (cfg->model.type != FDP_MODEL_REALNVP)
        return fdp_err_set(err, "[model] type = %d is unknown (realnvp, glow)", (int)cfg->model.type);
    fdp_realnvp *r = fdp_xcalloc(1, sizeof *r);
    if (fdp_realnvp_build(r, C, H, W, cfg->model.num_scales, cfg->model.mid_channels, cfg->model.num_blocks, err) != 0) {
        free(r);
        return -1;
    }
    r->data_constraint = (float)cfg->model.data_constraint;
    r->rebuild_activations = cfg->train.rebuild_activations;
    fdp_realnvp_alloc_init(r, be, seed);
    fdp_model *m = fdp_xcalloc(1, sizeof *m);
    m->type = "realnvp";
    m->C = C;
    m->H = H;
    m->W = W;
    m->n_bins = 256;
    m->params = &r->params;
    m->forward_loss = realnvp_forward_loss;
    m->backward = realnvp_backward;
    m->sample = realnvp_sample;
    m->destroy = realnvp_destroy;
    m->impl = r;
    *out = m;
    return 0;
}

void fdp_model_destroy(fdp_model *m) {
    if (!m) return;
    m->destroy(m);
    free(m);
}
