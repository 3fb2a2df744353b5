/* optim.h — the optimizer object fdp_optimizer (below: the configured Adam or Adamax and
 * the optional EMA weights behind one interface; what the trainer and flowdp-bench use),
 * the learning-rate schedule, and the pieces it is made of: global-norm gradient clipping, Adam
 * (PyTorch 1.13 semantics: L2 weight decay added to the gradient, bias
 * correction), Adamax and EMA (Polyak) weights (below), with weight decay
 * applied only to the parameters flagged FDP_PFLAG_WEIGHT_DECAY (the
 * notebook's get_param_groups: weight-norm g).
 * Moments live in flat buffers laid out like the parameters. */
#ifndef FLOWDP_OPTIM_H
#define FLOWDP_OPTIM_H
#include <stdint.h>

#include "flowdp/config.h"
#include "flowdp/params.h"

typedef struct fdp_adam {
    float beta1, beta2, eps, weight_decay;
    int64_t step;   /* steps taken */
    float *m, *v;   /* (n_params) backend memory */
    fdp_backend *be;
} fdp_adam;

void fdp_adam_init(fdp_adam *o, const fdp_params *p, float beta1, float beta2, float eps, float weight_decay);
void fdp_adam_free(fdp_adam *o);
/* global L2 norm of all gradients (double accumulation) */
double fdp_grad_global_norm(const fdp_params *p);
/* PyTorch's clip_grad_norm_: the factor max_norm/(norm + 1e-6), or 1 when that is >= 1 or max_norm <= 0 */
float fdp_clip_factor(double norm, double max_norm);
/* one Adam step with learning rate lr on gradients scaled by gscale (the clip factor) */
void fdp_adam_step(fdp_adam *o, fdp_params *p, float lr, float gscale);

/* ---- Adamax (Kingma & Ba 2015, Algorithm 2; what openai/glow trains with) ----
 * Mirrors Adam: the same gradient scaling (clip factor, written back), the same L2
 * weight decay added to the gradient of the FDP_PFLAG_WEIGHT_DECAY entries only
 * (Glow flags none), moments in flat buffers laid out like the parameters:
 *   g = grad*gscale + wd*p;  m = b1*m + (1-b1)*g;  u = max(b2*u, |g|)
 *   p -= lr/(1 - b1^t) * m/(u + eps)
 * openai_lr = 1 multiplies the step by sqrt(1 - b2^t), as openai/glow's optim.adamax
 * does (its alpha_t, copied from its Adam); 0 (the default) is the paper's Adamax.
 * For checkpoints: m -> /optimizer/m, u -> /optimizer/v, step as Adam's. */
typedef struct fdp_adamax {
    float beta1, beta2, eps, weight_decay;
    int openai_lr;  /* 0: lr/(1-b1^t); 1: also * sqrt(1-b2^t) */
    int64_t step;   /* steps taken */
    float *m, *u;   /* (n_params) backend memory: first moment, infinity norm */
    fdp_backend *be;
} fdp_adamax;

void fdp_adamax_init(fdp_adamax *o, const fdp_params *p, float beta1, float beta2, float eps, float weight_decay);
void fdp_adamax_free(fdp_adamax *o);
void fdp_adamax_step(fdp_adamax *o, fdp_params *p, float lr, float gscale);

/* ---- EMA (Polyak) weights: ema = decay*ema + (1-decay)*params after each step ----
 * The first update after init (updates == 0) copies the parameters instead of
 * blending, so the data-dependent ActNorm initialization of the first step (and
 * any init the optimizer never moves) is not averaged with the pre-init values;
 * after a resume set `updates` to the steps taken (any value > 0) once the
 * checkpoint's /ema section is loaded into `w`. Evaluation / sampling with the
 * EMA weights: fdp_ema_swap before, fdp_ema_swap after (exact: a swap), or copy
 * them out with fdp_ema_copy_to (e.g. into a checkpoint's /ema). */
typedef struct fdp_ema {
    float decay;
    int64_t updates;  /* blends done (0: the next update copies) */
    int64_t n;        /* floats (= n_params) */
    float *w;         /* (n_params) backend memory, laid out like the parameters */
    fdp_backend *be;
} fdp_ema;

/* w = the current parameters (updates = 0) */
void fdp_ema_init(fdp_ema *e, const fdp_params *p, float decay);
void fdp_ema_free(fdp_ema *e);
void fdp_ema_update(fdp_ema *e, const fdp_params *p);
/* exchange the parameters and the EMA weights (call again to undo) */
void fdp_ema_swap(fdp_ema *e, fdp_params *p);
/* dst (n_params, backend memory) = the EMA weights */
void fdp_ema_copy_to(const fdp_ema *e, float *dst);

/* ---- the optimizer object: Adam or Adamax, and EMA weights when asked ----------------
 * One object instead of a switch over the optimizer kind in each caller. It keeps the
 * parameters it was made for; fdp_optimizer_step is the kind's step (above) followed by
 * fdp_ema_update when EMA is on, exactly what the trainer did before it existed. */
typedef struct fdp_optim_hparams {
    fdp_optimizer_kind kind;                  /* FDP_OPT_ADAM | FDP_OPT_ADAMAX */
    double beta1, beta2, eps, weight_decay;   /* used as float, as the low-level inits take them */
    double ema;                               /* EMA decay; <= 0: no EMA weights */
} fdp_optim_hparams;
typedef struct fdp_optimizer fdp_optimizer;

/* [train] optimizer, adam_beta1, adam_beta2, adam_eps, weight_decay, ema */
fdp_optim_hparams fdp_optim_hparams_from_config(const fdp_config *cfg);
/* moments zeroed, EMA weights = the current parameters (fdp_ema_init); never NULL */
fdp_optimizer *fdp_optimizer_create(const fdp_optim_hparams *h, fdp_params *p);
void fdp_optimizer_free(fdp_optimizer *o); /* NULL: nothing */
/* one update with learning rate lr on the gradients scaled by gscale (the clip factor),
 * then the EMA update when EMA is on */
void fdp_optimizer_step(fdp_optimizer *o, float lr, float gscale);
fdp_optimizer_kind fdp_optimizer_kind_of(const fdp_optimizer *o);
/* ---- for checkpoints: the moments (Adam m, v; Adamax m, u -> /optimizer/m, /optimizer/v,
 * backend memory laid out like the parameters), the step counter, the EMA weights */
float *fdp_optimizer_m(fdp_optimizer *o);
float *fdp_optimizer_v(fdp_optimizer *o);
int64_t fdp_optimizer_steps(const fdp_optimizer *o);
void fdp_optimizer_set_steps(fdp_optimizer *o, int64_t steps);
int fdp_optimizer_has_ema(const fdp_optimizer *o);
float *fdp_optimizer_ema_weights(fdp_optimizer *o);          /* NULL without EMA */
void fdp_optimizer_set_ema_updates(fdp_optimizer *o, int64_t updates); /* no-op without EMA */
/* exchange the parameters and the EMA weights (again to undo); no-op without EMA */
void fdp_optimizer_ema_swap(fdp_optimizer *o);

/* The learning rate of step (0-based) of total: [train] lr with linear warmup over
 * warmup_steps, then lr_decay (none, cosine to lr_min over the rest, or exponential
 * lr * lr_decay_rate^step, at least lr_min). */
double fdp_lr_at(const fdp_config *cfg, int64_t step, int64_t total);

#endif
