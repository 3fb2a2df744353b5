/* optim.h — the optimizer pieces: global-norm gradient clipping and Adam
 * (PyTorch 1.13 semantics: L2 weight decay added to the gradient, bias
 * correction), with weight decay applied only to the parameters flagged
 * FDP_PFLAG_WEIGHT_DECAY (the notebook's get_param_groups: weight-norm g).
 * Moments live in flat buffers laid out like the parameters. */
#ifndef FLOWDP_OPTIM_H
#define FLOWDP_OPTIM_H
#include <stdint.h>

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

#endif
