/* preprocess.c — RealNVP's dequantization + logit transform with its log-det,
 * and the Gaussian prior / loss (the notebook's RealNVPLoss). */
#include <math.h>

#include "flowdp/error.h"
#include "flowdp/nn.h"

fdp_tensor fdp_logit_forward(fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, float k, float bound, double *sldj) {
    fdp_backend *be = ctx->be;
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    float *ldj = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)fdp_numel(x));
    fdp_logit_forward_args a = {x.data, u.data, y.data, ldj, k, bound};
    be->logit_forward(be, fdp_numel(x), &a);
    be->reduce_rows(be, ldj, NULL, 1, x.n, fdp_sample_numel(x), sldj);
    fdp_arena_reset(ctx->arena, m);
    return y;
}

double fdp_gaussian_nll(fdp_ctx *ctx, fdp_tensor z, const double *sldj, double k, double *nll_per_sample) {
    fdp_backend *be = ctx->be;
    int n = z.n;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    double *sq = fdp_arena_doubles(ctx->arena, n);
    be->reduce_rows(be, z.data, z.data, 1, n, fdp_sample_numel(z), sq);
    double hsq[n > 0 ? n : 1], hldj[n > 0 ? n : 1];
    be->to_host(be, hsq, sq, sizeof(double) * (size_t)n);
    be->to_host(be, hldj, sldj, sizeof(double) * (size_t)n);
    fdp_arena_reset(ctx->arena, m);
    double D = (double)fdp_sample_numel(z), mean = 0.0;
    for (int i = 0; i < n; i++) {
        double prior_ll = -0.5 * hsq[i] - 0.5 * D * log(2.0 * 3.14159265358979323846) - D * log(k);
        double nll = -(prior_ll + hldj[i]);
        if (nll_per_sample) nll_per_sample[i] = nll;
        mean += nll;
    }
    return n ? mean / n : 0.0;
}
