/* batchnorm.c — BatchNorm2d (PyTorch semantics), synchronized across ranks when
 * ctx->allreduce_f64 is set, fused with the activation that follows it.
 * Training: normalize with the batch mean and biased variance of the GLOBAL
 * batch; running stats <- (1-momentum)*running + momentum*(mean, unbiased var).
 * Evaluation: running statistics. Sums are taken in double.
 * Recomputation (ctx->recompute, rebuild_activations): the statistics the
 * step's forward computed are reused as they are, so the recomputed output
 * normalizes exactly as the forward did, no collective is issued (nothing to
 * order across ranks) and the running statistics are updated once per step. */
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/nn.h"

void fdp_bn_init(fdp_bn *l, fdp_params *p, const char *prefix, int C) {
    char name[2 * FDP_NAME_MAX];
    int64_t s[1] = {C};
    l->C = C;
    l->eps = 1e-5f;
    l->momentum = 0.1f;
    snprintf(name, sizeof name, "%s.weight", prefix);
    l->p_w = fdp_params_add(p, name, FDP_PARAM, 0, 1, s);
    snprintf(name, sizeof name, "%s.bias", prefix);
    l->p_b = fdp_params_add(p, name, FDP_PARAM, 0, 1, s);
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    l->b_mean = fdp_params_add(p, name, FDP_BUFFER, 0, 1, s);
    snprintf(name, sizeof name, "%s.running_var", prefix);
    l->b_var = fdp_params_add(p, name, FDP_BUFFER, 0, 1, s);
    snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);
    l->b_count = fdp_params_add(p, name, FDP_BUFFER, FDP_PFLAG_COUNTER, 0, NULL);
    l->mean = l->invstd = NULL;
}

void fdp_bn_prepare(fdp_bn *l, fdp_ctx *ctx) {
    l->mean = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)l->C);
    l->invstd = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)l->C);
}

void fdp_bn_forward(fdp_bn *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, float mult, fdp_act act) {
    fdp_backend *be = ctx->be;
    FDP_CHECK(x.c == l->C, "batchnorm: %d channels given to a layer of %d", x.c, l->C);
    FDP_CHECK(l->mean != NULL, "batchnorm: forward before prepare");
    int64_t HW = (int64_t)x.h * x.w;
    fdp_bn_act_args aa = {x.data, y.data, l->mean, l->invstd, fdp_params_data(ctx->params, l->p_w),
                          fdp_params_data(ctx->params, l->p_b), l->C, HW, mult, (int)act};
    if (ctx->recompute) { /* the statistics of this step's forward, untouched */
        be->bn_act(be, fdp_numel(x), &aa);
        return;
    }
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_bn_stats_args sa = {NULL, NULL, 0.0, l->eps, l->momentum, ctx->training,
                            fdp_params_data(ctx->params, l->b_mean), fdp_params_data(ctx->params, l->b_var),
                            l->mean, l->invstd};
    if (ctx->training) {
        double *sums = fdp_arena_doubles(ctx->arena, 2 * (int64_t)l->C);
        be->channel_moments(be, x.data, x.n, l->C, HW, sums, sums + l->C);
        if (ctx->allreduce_f64) ctx->allreduce_f64(ctx->comm, sums, 2 * l->C);
        sa.sum = sums;
        sa.sumsq = sums + l->C;
        sa.count = (double)x.n * (double)HW * (double)(ctx->world_size > 0 ? ctx->world_size : 1);
        /* num_batches_tracked += 1 (a float counter; exact up to 2^24 steps) */
        float *cnt = fdp_params_data(ctx->params, l->b_count);
        fdp_fill_args fa = {cnt, 0.0f};
        float host;
        be->to_host(be, &host, cnt, sizeof host);
        fa.v = host + 1.0f;
        be->fill(be, 1, &fa);
    }
    be->bn_stats(be, l->C, &sa);
    fdp_arena_reset(ctx->arena, m); /* the sums were scratch */
    be->bn_act(be, fdp_numel(x), &aa);
}

void fdp_bn_backward(fdp_bn *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, fdp_tensor dy, fdp_tensor dx, float mult,
                     fdp_act act, int accumulate) {
    fdp_backend *be = ctx->be;
    int64_t HW = (int64_t)x.h * x.w;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_bn_act_grad_args ga = {dy.data, y.data, NULL, l->C, HW, mult, (int)act};
    double *sums = fdp_arena_doubles(ctx->arena, 2 * (int64_t)l->C);
    be->bn_backward_reduce(be, &ga, x.data, x.n, sums, sums + l->C);
    int synced = ctx->allreduce_f64 && ctx->training && ctx->world_size > 1;
    if (synced) ctx->allreduce_f64(ctx->comm, sums, 2 * l->C);
    float *k = fdp_arena_alloc(ctx->arena, sizeof(float) * 3 * (size_t)l->C);
    fdp_bn_grad_coef_args ca = {sums, sums + l->C,
                                (double)x.n * (double)HW * (double)(ctx->world_size > 0 ? ctx->world_size : 1),
                                l->mean, l->invstd, fdp_params_data(ctx->params, l->p_w),
                                fdp_params_grad(ctx->params, l->p_w), fdp_params_grad(ctx->params, l->p_b),
                                k, k + l->C, k + 2 * l->C, ctx->training, synced ? 1.0 / ctx->world_size : 1.0};
    be->bn_grad_coef(be, l->C, &ca);
    fdp_bn_grad_apply_args pa = {ga, x.data, dx.data, l->mean, k, k + l->C, k + 2 * l->C, l->C, HW, accumulate};
    be->bn_grad_apply(be, fdp_numel(x), &pa);
    fdp_arena_reset(ctx->arena, m);
}

void fdp_bn_init_values(const fdp_bn *l, const fdp_params *p, float *host_params, float *host_buffers) {
    /* weight 1, bias 0; running_mean 0, running_var 1, num_batches_tracked 0 */
    for (int c = 0; c < l->C; c++) {
        host_params[p->entries[l->p_w].offset + c] = 1.0f;
        host_params[p->entries[l->p_b].offset + c] = 0.0f;
        host_buffers[p->entries[l->b_mean].offset + c] = 0.0f;
        host_buffers[p->entries[l->b_var].offset + c] = 1.0f;
    }
    host_buffers[p->entries[l->b_count].offset] = 0.0f;
}
