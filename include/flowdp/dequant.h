/* dequant.h — dequantization as a stage: 8-bit pixels -> continuous values for the flow.
 *
 *   fdp_dequant *dq;
 *   fdp_dequant_create(cfg, model, &dq, &err);              // the kind the config names (uniform)
 *   fdp_dequant_key key = {seed, epoch, FDP_RNG_DEQUANT, idx};
 *   dq->ops->apply(dq, &ctx, x, &key, v, logq);             // v (n,C,H,W) in [0,1), logq[n]
 *   double nll = model->forward_loss(model, &ctx, v, per_sample);  // + logq[n] per sample
 *   fdp_dequant_destroy(dq);
 *
 * The trainer, flowdp-eval (each importance sample is one key: epoch = the draw) and flowdp-bench
 * call the stage; nothing else draws dequantization noise. Its randomness is keyed Philox (rng.h):
 * the draw for image idx[i] depends on (seed, epoch, purpose, idx[i]) only, so it is the same
 * whatever the rank count, batch split or device.
 *
 * Units: the model's nll is -log p(v) in nats plus D*log(n_bins) (the discrete data's nats for
 * a dequantization uniform over each pixel's bin); logq[n] is the stage's log-density of its noise
 * within the bins, log q(u | x) with u in [0,1)^D: 0 for uniform dequantization, so the bound on
 * -log P(x) is nll[n] + logq[n]. A learned (variational) dequantization implements the same ops
 * with parameters of its own.
 *
 * Adding a dequantization: one file implementing fdp_dequant_ops and a branch in
 * fdp_dequant_create (docs/ARCHITECTURE.md, "Adding a dequantization"). */
#ifndef FLOWDP_DEQUANT_H
#define FLOWDP_DEQUANT_H
#include <stdint.h>

#include "flowdp/config.h"
#include "flowdp/model.h"

typedef struct fdp_dequant_key {
    uint64_t seed;
    uint32_t epoch;             /* training: the epoch; evaluation: the draw k */
    uint32_t purpose;           /* FDP_RNG_DEQUANT (training, bench) or FDP_RNG_EVAL */
    const int64_t *idx;         /* (n) backend memory: each image's index in its dataset */
} fdp_dequant_key;

typedef struct fdp_dequant fdp_dequant;
typedef struct fdp_dequant_ops {
    const char *kind;
    /* v (n,C,H,W, the caller's memory) from x (n,C,H,W: 8-bit value/255); logq (host, n doubles)
     * = log q(u | x) per sample unless NULL. Scratch from ctx->arena, released. */
    void (*apply)(fdp_dequant *d, fdp_ctx *ctx, fdp_tensor x, const fdp_dequant_key *key, fdp_tensor v,
                  double *logq);
    void (*destroy)(fdp_dequant *d); /* optional */
} fdp_dequant_ops;

struct fdp_dequant {
    const fdp_dequant_ops *ops;
    int n_bins;                 /* bins per channel the model expects (256 for 8 bits) */
    int round;                  /* 1: openai's binning (pixels rounded, then n_bins bins); 0: the notebook's */
};

/* uniform noise over each pixel's bin (the first implementation) */
fdp_dequant *fdp_dequant_uniform_create(int n_bins, int round);
/* the dequantization the config and the model call for (today: uniform, with the model's bins) */
int fdp_dequant_create(const fdp_config *cfg, const fdp_model *m, fdp_dequant **out, fdp_err *err);
void fdp_dequant_destroy(fdp_dequant *d);

#endif
