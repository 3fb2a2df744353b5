/* optim.c — global-norm clipping and Adam over the flat parameter buffers. */
#include "flowdp/optim.h"

#include <math.h>
#include <string.h>

void fdp_adam_init(fdp_adam *o, const fdp_params *p, float beta1, float beta2, float eps, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->be = p->be;
    size_t bytes = sizeof(float) * (size_t)(p->n_params ? p->n_params : 1);
    o->m = p->be->alloc(p->be, bytes);
    o->v = p->be->alloc(p->be, bytes);
    p->be->memset0(p->be, o->m, bytes);
    p->be->memset0(p->be, o->v, bytes);
}

void fdp_adam_free(fdp_adam *o) {
    if (o->be) {
        o->be->free(o->be, o->m);
        o->be->free(o->be, o->v);
    }
    memset(o, 0, sizeof *o);
}

double fdp_grad_global_norm(const fdp_params *p) { return sqrt(p->be->sum_squares(p->be, p->grads, p->n_params)); }

float fdp_clip_factor(double norm, double max_norm) {
    if (max_norm <= 0.0) return 1.0f;
    double c = max_norm / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void fdp_adam_step(fdp_adam *o, fdp_params *p, float lr, float gscale) {
    o->step++;
    double bc1 = 1.0 - pow((double)o->beta1, (double)o->step);
    double bc2 = 1.0 - pow((double)o->beta2, (double)o->step);
    fdp_adam_args a = {NULL, NULL, NULL, NULL, gscale, 0.0f, o->beta1, o->beta2, o->eps,
                       (float)(lr / bc1), (float)sqrt(bc2)};
    /* runs of consecutive entries with the same weight decay, one launch each */
    int i = 0;
    while (i < p->count) {
        if (p->entries[i].kind != FDP_PARAM) {
            i++;
            continue;
        }
        int wd = (p->entries[i].flags & FDP_PFLAG_WEIGHT_DECAY) != 0;
        int64_t begin = p->entries[i].offset, end = begin + p->entries[i].numel;
        int j = i + 1;
        while (j < p->count && (p->entries[j].kind != FDP_PARAM ||
                                (((p->entries[j].flags & FDP_PFLAG_WEIGHT_DECAY) != 0) == wd &&
                                 p->entries[j].offset == end))) {
            if (p->entries[j].kind == FDP_PARAM) end += p->entries[j].numel;
            j++;
        }
        a.p = p->params + begin;
        a.grad = p->grads + begin;
        a.m = o->m + begin;
        a.v = o->v + begin;
        a.wd = wd ? o->weight_decay : 0.0f;
        p->be->adam(p->be, end - begin, &a);
        i = j;
    }
}
