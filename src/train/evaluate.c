/* evaluate.c — test-set bpd (optionally importance-weighted over K noise draws). */
#include "flowdp/evaluate.h"
#include "flowdp/dequant.h"

#include <math.h>
#include <stdlib.h>

#include "flowdp/error.h"
#include "flowdp/rng.h"

int fdp_evaluate_range(fdp_model *m, fdp_backend *be, fdp_arena *arena, fdp_source *d, int64_t begin, int64_t end,
                       int batch, int prefetch, uint64_t seed, int draws, fdp_eval_sums *sums, fdp_err *err) {
    if (d->c != m->C || d->h != m->H || d->w != m->W)
        return fdp_err_set(err, "%s holds %dx%dx%d images, the model takes %dx%dx%d", d->desc, d->c, d->h, d->w,
                           m->C, m->H, m->W);
    if (draws < 1) draws = 1;
    if (end <= begin) return 0; /* nothing on this rank */
    /* a batch larger than the range means "all at once" (eval_batch_size may be huge) */
    if (batch < 1 || (int64_t)batch > end - begin) batch = (int)(end - begin);
    int64_t D = (int64_t)m->C * m->H * m->W;
    fdp_ctx ctx = {.be = be, .arena = arena, .params = m->params, .training = 0, .world_size = 1, .no_grad = 1};
    double *nll = malloc(sizeof(double) * (size_t)batch), *acc = malloc(sizeof(double) * (size_t)batch * draws);
    double *logq = malloc(sizeof(double) * (size_t)batch);
    if (!nll || !acc || !logq) {
        free(nll);
        free(acc);
        free(logq);
        return fdp_err_set(err, "evaluation batch of %d images x %d draws: out of memory; use a smaller batch", batch,
                           draws);
    }
    /* the range streams through a loader: a packed test set is never held whole */
    fdp_loader_opts lo = {.src = d, .mode = FDP_LOADER_RANGE, .prefetch = prefetch, .batch = batch, .begin = begin, .end = end};
    fdp_loader *loader = NULL;
    fdp_dequant *dq = NULL;
    if (fdp_dequant_create(NULL, m, &dq, err) != 0 || fdp_loader_create(&lo, &loader, err) != 0) {
        fdp_dequant_destroy(dq);
        free(nll);
        free(acc);
        free(logq);
        return -1;
    }
    for (const fdp_batch *bt; (bt = fdp_loader_next(loader)) != NULL;) {
        int n = bt->count;
        const int64_t *idx = bt->idx;
        const float *hx = bt->x;
        for (int k = 0; k < draws; k++) {
            fdp_arena_reset_all(arena);
            fdp_tensor x = fdp_arena_tensor(arena, n, m->C, m->H, m->W);
            fdp_tensor v = fdp_arena_tensor(arena, n, m->C, m->H, m->W);
            int64_t *didx = fdp_arena_alloc(arena, sizeof(int64_t) * (size_t)n);
            be->from_host(be, x.data, hx, sizeof(float) * (size_t)(n * D));
            be->from_host(be, didx, idx, sizeof(int64_t) * (size_t)n);
            /* importance sample k: the stage's draw keyed by k (dequant.h) */
            fdp_dequant_key key = {seed, (uint32_t)k, FDP_RNG_EVAL, didx};
            dq->ops->apply(dq, &ctx, x, &key, v, logq);
            m->forward_loss(m, &ctx, v, nll);
            for (int i = 0; i < n; i++) acc[(size_t)i * draws + k] = nll[i] + logq[i];
        }
        for (int i = 0; i < n; i++) {
            double v = acc[(size_t)i * draws];
            if (draws > 1) { /* -log mean_k exp(-nll_k) */
                double mx = -INFINITY;
                for (int k = 0; k < draws; k++) mx = fmax(mx, -acc[(size_t)i * draws + k]);
                double s = 0.0;
                for (int k = 0; k < draws; k++) s += exp(-acc[(size_t)i * draws + k] - mx);
                v = -(mx + log(s / draws));
            }
            double bpd = v / (D * log(2.0));
            sums->nll += v;
            sums->bpd += bpd;
            sums->bpd_sq += bpd * bpd;
            sums->count += 1.0;
        }
    }
    fdp_arena_reset_all(arena);
    fdp_loader_destroy(loader);
    fdp_dequant_destroy(dq);
    free(nll);
    free(acc);
    free(logq);
    return 0;
}

void fdp_evaluate(fdp_model *m, fdp_backend *be, fdp_arena *arena, fdp_source *d, int64_t begin, int64_t end,
                  int batch, int prefetch, uint64_t seed, int draws, fdp_eval_sums *sums) {
    fdp_err err = {{0}};
    if (fdp_evaluate_range(m, be, arena, d, begin, end, batch, prefetch, seed, draws, sums, &err) != 0)
        FDP_FATAL("evaluate: %s", err.msg);
}

void fdp_eval_summary(const fdp_eval_sums *s, double *bpd_mean, double *bpd_stderr, double *nll_mean) {
    double n = s->count;
    double mean = n > 0 ? s->bpd / n : NAN;
    double var = n > 1 ? (s->bpd_sq - n * mean * mean) / (n - 1) : 0.0;
    if (var < 0) var = 0;
    if (bpd_mean) *bpd_mean = mean;
    if (bpd_stderr) *bpd_stderr = n > 1 ? sqrt(var / n) : NAN; /* no standard error from one image */
    if (nll_mean) *nll_mean = n > 0 ? s->nll / n : NAN;
}
