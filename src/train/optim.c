/* optim.c — global-norm clipping, Adam, Adamax and EMA weights over the flat parameter
 * buffers; the optimizer object over them; the learning-rate schedule. */
#include "flowdp/optim.h"

#include <math.h>
#include <stdlib.h>
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

/* The next run of consecutive parameter entries (from *i) that are contiguous in the
 * flat buffer and share the weight-decay flag: [*begin, *end) and *wd; 0 when none is
 * left. The optimizers make one launch per run. */
static int next_decay_run(const fdp_params *p, int *i, int64_t *begin, int64_t *end, int *wd) {
    while (*i < p->count && p->entries[*i].kind != FDP_PARAM) (*i)++;
    if (*i >= p->count) return 0;
    *wd = (p->entries[*i].flags & FDP_PFLAG_WEIGHT_DECAY) != 0;
    *begin = p->entries[*i].offset;
    *end = *begin + p->entries[*i].numel;
    int j = *i + 1;
    while (j < p->count && (p->entries[j].kind != FDP_PARAM ||
                            (((p->entries[j].flags & FDP_PFLAG_WEIGHT_DECAY) != 0) == *wd &&
                             p->entries[j].offset == *end))) {
        if (p->entries[j].kind == FDP_PARAM) *end += p->entries[j].numel;
        j++;
    }
    *i = j;
    return 1;
}

void fdp_adam_step(fdp_adam *o, fdp_params *p, float lr, float gscale) {
    o->step++;
    double bc1 = 1.0 - pow((double)o->beta1, (double)o->step);
    double bc2 = 1.0 - pow((double)o->beta2, (double)o->step);
    fdp_adam_args a = {NULL, NULL, NULL, NULL, gscale, 0.0f, o->beta1, o->beta2, o->eps,
                       (float)(lr / bc1), (float)sqrt(bc2)};
    /* runs of consecutive entries with the same weight decay, one launch each */
    int i = 0, wd;
    int64_t begin, end;
    while (next_decay_run(p, &i, &begin, &end, &wd)) {
        a.p = p->params + begin;
        a.grad = p->grads + begin;
        a.m = o->m + begin;
        a.v = o->v + begin;
        a.wd = wd ? o->weight_decay : 0.0f;
        p->be->adam(p->be, end - begin, &a);
    }
}

/* ---- Adamax ------------------------------------------------------------------------ */
void fdp_adamax_init(fdp_adamax *o, const fdp_params *p, float beta1, float beta2, float eps, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->be = p->be;
    size_t bytes = sizeof(float) * (size_t)(p->n_params ? p->n_params : 1);
    o->m = p->be->alloc(p->be, bytes);
    o->u = p->be->alloc(p->be, bytes);
    p->be->memset0(p->be, o->m, bytes);
    p->be->memset0(p->be, o->u, bytes);
}

void fdp_adamax_free(fdp_adamax *o) {
    if (o->be) {
        o->be->free(o->be, o->m);
        o->be->free(o->be, o->u);
    }
    memset(o, 0, sizeof *o);
}

void fdp_adamax_step(fdp_adamax *o, fdp_params *p, float lr, float gscale) {
    o->step++;
    double step_size = lr / (1.0 - pow((double)o->beta1, (double)o->step));
    if (o->openai_lr) step_size *= sqrt(1.0 - pow((double)o->beta2, (double)o->step));
    fdp_adamax_args a = {NULL, NULL, NULL, NULL, gscale, 0.0f, o->beta1, o->beta2, o->eps, (float)step_size};
    /* runs of consecutive entries with the same weight decay, one launch each (as Adam) */
    int i = 0, wd;
    int64_t begin, end;
    while (next_decay_run(p, &i, &begin, &end, &wd)) {
        a.p = p->params + begin;
        a.grad = p->grads + begin;
        a.m = o->m + begin;
        a.u = o->u + begin;
        a.wd = wd ? o->weight_decay : 0.0f;
        p->be->adamax(p->be, end - begin, &a);
    }
}

/* ---- EMA ------------------------------------------------------------------------------ */
void fdp_ema_init(fdp_ema *e, const fdp_params *p, float decay) {
    memset(e, 0, sizeof *e);
    e->decay = decay;
    e->be = p->be;
    e->n = p->n_params;
    size_t bytes = sizeof(float) * (size_t)(p->n_params ? p->n_params : 1);
    e->w = p->be->alloc(p->be, bytes);
    p->be->memset0(p->be, e->w, bytes);
    if (p->n_params) p->be->copy(p->be, e->w, p->params, sizeof(float) * (size_t)p->n_params);
}

void fdp_ema_free(fdp_ema *e) {
    if (e->be) e->be->free(e->be, e->w);
    memset(e, 0, sizeof *e);
}

void fdp_ema_update(fdp_ema *e, const fdp_params *p) {
    if (e->updates == 0) {
        if (e->n) e->be->copy(e->be, e->w, p->params, sizeof(float) * (size_t)e->n);
    } else {
        fdp_axpby_args a = {p->params, e->w, 1.0f - e->decay, e->decay};
        e->be->axpby(e->be, e->n, &a);
    }
    e->updates++;
}

void fdp_ema_swap(fdp_ema *e, fdp_params *p) {
    fdp_swap_f32_args a = {e->w, p->params};
    e->be->swap_f32(e->be, e->n, &a);
}

void fdp_ema_copy_to(const fdp_ema *e, float *dst) {
    if (e->n) e->be->copy(e->be, dst, e->w, sizeof(float) * (size_t)e->n);
}

/* ---- the optimizer object ------------------------------------------------------------- */
struct fdp_optimizer {
    fdp_optimizer_kind kind;
    fdp_params *p;
    fdp_adam adam;      /* kind == FDP_OPT_ADAM */
    fdp_adamax adamax;  /* kind == FDP_OPT_ADAMAX */
    int use_ema;
    fdp_ema ema;        /* use_ema */
};

fdp_optim_hparams fdp_optim_hparams_from_config(const fdp_config *cfg) {
    fdp_optim_hparams h = {cfg->train.optimizer, cfg->train.adam_beta1, cfg->train.adam_beta2,
                           cfg->train.adam_eps,  cfg->train.weight_decay, cfg->train.ema};
    return h;
}

fdp_optimizer *fdp_optimizer_create(const fdp_optim_hparams *h, fdp_params *p) {
    fdp_optimizer *o = fdp_xmalloc(sizeof *o);
    memset(o, 0, sizeof *o);
    o->kind = h->kind;
    o->p = p;
    if (o->kind == FDP_OPT_ADAMAX)
        fdp_adamax_init(&o->adamax, p, (float)h->beta1, (float)h->beta2, (float)h->eps, (float)h->weight_decay);
    else
        fdp_adam_init(&o->adam, p, (float)h->beta1, (float)h->beta2, (float)h->eps, (float)h->weight_decay);
    o->use_ema = h->ema > 0.0;
    if (o->use_ema) fdp_ema_init(&o->ema, p, (float)h->ema);
    return o;
}

void fdp_optimizer_free(fdp_optimizer *o) {
    if (!o) return;
    if (o->kind == FDP_OPT_ADAMAX)
        fdp_adamax_free(&o->adamax);
    else
        fdp_adam_free(&o->adam);
    if (o->use_ema) fdp_ema_free(&o->ema);
    free(o);
}

void fdp_optimizer_step(fdp_optimizer *o, float lr, float gscale) {
    if (o->kind == FDP_OPT_ADAMAX)
        fdp_adamax_step(&o->adamax, o->p, lr, gscale);
    else
        fdp_adam_step(&o->adam, o->p, lr, gscale);
    if (o->use_ema) fdp_ema_update(&o->ema, o->p);
}

fdp_optimizer_kind fdp_optimizer_kind_of(const fdp_optimizer *o) { return o->kind; }
float *fdp_optimizer_m(fdp_optimizer *o) { return o->kind == FDP_OPT_ADAMAX ? o->adamax.m : o->adam.m; }
float *fdp_optimizer_v(fdp_optimizer *o) { return o->kind == FDP_OPT_ADAMAX ? o->adamax.u : o->adam.v; }
int64_t fdp_optimizer_steps(const fdp_optimizer *o) {
    return o->kind == FDP_OPT_ADAMAX ? o->adamax.step : o->adam.step;
}

void fdp_optimizer_set_steps(fdp_optimizer *o, int64_t steps) {
    if (o->kind == FDP_OPT_ADAMAX)
        o->adamax.step = steps;
    else
        o->adam.step = steps;
}

int fdp_optimizer_has_ema(const fdp_optimizer *o) { return o->use_ema; }
float *fdp_optimizer_ema_weights(fdp_optimizer *o) { return o->use_ema ? o->ema.w : NULL; }

void fdp_optimizer_set_ema_updates(fdp_optimizer *o, int64_t updates) {
    if (o->use_ema) o->ema.updates = updates;
}

void fdp_optimizer_ema_swap(fdp_optimizer *o) {
    if (o->use_ema) fdp_ema_swap(&o->ema, o->p);
}

/* ---- the learning-rate schedule -------------------------------------------------------- */
double fdp_lr_at(const fdp_config *cfg, int64_t step, int64_t total) {
    double lr = cfg->train.lr;
    int64_t warm = cfg->train.warmup_steps;
    double f = 1.0;
    if (warm > 0 && step < warm) f = (double)(step + 1) / (double)warm;
    switch (cfg->train.lr_decay) {
    case FDP_LR_DECAY_COSINE: {
        double span = (double)(total - warm);
        double p = span > 0 ? (double)(step - warm) / span : 1.0;
        if (p < 0) p = 0;
        if (p > 1) p = 1;
        lr = cfg->train.lr_min + (lr - cfg->train.lr_min) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
        break;
    }
    case FDP_LR_DECAY_EXPONENTIAL:
        lr = lr * pow(cfg->train.lr_decay_rate, (double)step);
        if (lr < cfg->train.lr_min) lr = cfg->train.lr_min;
        break;
    default: break;
    }
    return lr * f;
}
