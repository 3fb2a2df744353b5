/* elementwise.h — the element-wise math of flowdp, written ONCE.
 *
 * Each operation NAME has an argument struct fdp_NAME_args and a per-element
 * function fdp_k_NAME(i, a) marked FDP_HD (host+device). The CPU backend runs
 * `for i in [0, n): fdp_k_NAME(i, a)` with OpenMP; the CUDA backend wraps the
 * same function in a grid-stride kernel (src/kernels/elementwise.cu). The list
 * FDP_ELEMENTWISE_OPS generates the backend interface members, so adding an op
 * here adds it to every backend.
 *
 * Conventions: NCHW tensors; "HW" is h*w; per-channel vectors have C entries;
 * double pointers are reduction outputs of the backend (see backend.h).
 * Every function writes only the elements owned by index i (no races). */
#ifndef FLOWDP_KERNELS_ELEMENTWISE_H
#define FLOWDP_KERNELS_ELEMENTWISE_H
#include "kernels/hd.h"
#include "kernels/philox.h"
#include "kernels/gated_ops.h"
#include "kernels/glow_ops.h"
#include "kernels/tutorial_ops.h"

/* ---- generic ------------------------------------------------------------- */
/* y[i] = v */
typedef struct { float *y; float v; } fdp_fill_args;
FDP_HD static inline void fdp_k_fill(int64_t i, const fdp_fill_args *a) { a->y[i] = a->v; }

/* y[i] = alpha*x[i] + beta*y[i]  (y is not read when beta == 0) */
typedef struct { const float *x; float *y; float alpha, beta; } fdp_axpby_args;
FDP_HD static inline void fdp_k_axpby(int64_t i, const fdp_axpby_args *a) {
    float r = a->alpha * a->x[i];
    a->y[i] = a->beta == 0.0f ? r : r + a->beta * a->y[i];
}

/* y[i] = alpha*x[i] + c */
typedef struct { const float *x; float *y; float alpha, c; } fdp_scale_shift_args;
FDP_HD static inline void fdp_k_scale_shift(int64_t i, const fdp_scale_shift_args *a) { a->y[i] = a->alpha * a->x[i] + a->c; }

/* y[i] += alpha*x[i] in double (log-det accumulators) */
typedef struct { const double *x; double *y; double alpha; } fdp_axpy_f64_args;
FDP_HD static inline void fdp_k_axpy_f64(int64_t i, const fdp_axpy_f64_args *a) { a->y[i] += a->alpha * a->x[i]; }

/* y[i] = (float)(alpha*x[i]) : doubles to floats */
typedef struct { const double *x; float *y; double alpha; } fdp_f64_to_f32_args;
FDP_HD static inline void fdp_k_f64_to_f32(int64_t i, const fdp_f64_to_f32_args *a) { a->y[i] = (float)(a->alpha * a->x[i]); }

/* y[i] = sigmoid(x[i]) */
typedef struct { const float *x; float *y; } fdp_sigmoid_args;
FDP_HD static inline void fdp_k_sigmoid(int64_t i, const fdp_sigmoid_args *a) {
    a->y[i] = 1.0f / (1.0f + expf(-a->x[i]));
}

/* Channel slice: for i over (N, Cn, HW):
 * dst[n, doff + c, hw] = alpha*src[n, soff + c, hw] (+ dst[...] when accumulate).
 * src has Cs channels, dst has Cd. Implements chunk, cat, split and their grads. */
typedef struct { const float *src; float *dst; int Cs, soff, Cd, doff, Cn; int64_t HW; float alpha; int accumulate; } fdp_slice_copy_args;
FDP_HD static inline void fdp_k_slice_copy(int64_t i, const fdp_slice_copy_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->Cn);
    int64_t n = t / a->Cn;
    float v = a->alpha * a->src[(n * a->Cs + a->soff + c) * a->HW + hw];
    float *d = &a->dst[(n * a->Cd + a->doff + c) * a->HW + hw];
    *d = a->accumulate ? *d + v : v;
}

/* Checkerboard mask of the notebook: b(h,w) = ((h % 2) + w) % 2, reversed: 1 - b. */
FDP_HD static inline int fdp_checkerboard(int64_t h, int64_t w, int reverse) {
    int b = (int)(((h % 2) + w) % 2);
    return reverse ? 1 - b : b;
}

/* y[i] = x[i]*b(h,w) (+ y[i] when accumulate); x is (N, C, H, W) */
typedef struct { const float *x; float *y; int H, W; int reverse; int accumulate; } fdp_checkerboard_mul_args;
FDP_HD static inline void fdp_k_checkerboard_mul(int64_t i, const fdp_checkerboard_mul_args *a) {
    int64_t hw = i % ((int64_t)a->H * a->W);
    float v = fdp_checkerboard(hw / a->W, hw % a->W, a->reverse) ? a->x[i] : 0.0f;
    a->y[i] = a->accumulate ? a->y[i] + v : v;
}

/* ---- uniform dequantization (dequant.h) ------------------------------------ */
/* For i over (N, C, H, W): pixel x in [0,1] (8-bit value/255), noise u in [0,1):
 *   round 0 (RealNVP, the notebook):  v = (x*(n_bins-1) + u)/n_bins
 *   round 1 (Glow, openai):           p = clip(round(255 x)), bin = floor(p / bin_div), v = (bin + u)/n_bins */
typedef struct { const float *x, *u; float *v; float n_bins, bin_div; int round; } fdp_dequant_uniform_args;
FDP_HD static inline void fdp_k_dequant_uniform(int64_t i, const fdp_dequant_uniform_args *a) {
    if (!a->round) {
        a->v[i] = (a->x[i] * (a->n_bins - 1.0f) + a->u[i]) / a->n_bins;
        return;
    }
    float p = floorf(a->x[i] * 255.0f + 0.5f);
    p = p < 0.0f ? 0.0f : p > 255.0f ? 255.0f : p;
    float bin = floorf(p / a->bin_div);
    a->v[i] = (bin + a->u[i]) / a->n_bins;
}

/* ---- logit (RealNVP preprocessing) ---------------------------------------- */
/* For i over (N, C, H, W): dequantized v in [0,1):
 *   p = ((2v - 1)*bound + 1)/2;  y = log p - log(1-p)
 *   ldj[i] = softplus(y) + softplus(-y) - softplus(log(1-bound) - log(bound))  (= log|dy/dv|)
 * (exactly the notebook's _pre_process after its dequantization). */
typedef struct { const float *v; float *y, *ldj; float bound; } fdp_logit_forward_args;
FDP_HD static inline float fdp_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
FDP_HD static inline void fdp_k_logit_forward(int64_t i, const fdp_logit_forward_args *a) {
    float p = a->v[i];
    p = (2.0f * p - 1.0f) * a->bound;
    p = (p + 1.0f) / 2.0f;
    float y = logf(p) - logf(1.0f - p);
    a->y[i] = y;
    a->ldj[i] = fdp_softplus(y) + fdp_softplus(-y) - fdp_softplus(logf(1.0f - a->bound) - logf(a->bound));
}
/* Its backward, for sample n = i / D: with p as above, dy/dv = bound/(p(1-p)) and
 * d ldj/dv = bound (2p - 1)/(p(1-p)):  dv[i] = (dy[i] + dldj[n] (2p - 1)) * bound/(p(1-p)) */
typedef struct { const float *v, *dy, *dldj; float *dv; float bound; int64_t D; } fdp_logit_backward_args;
FDP_HD static inline void fdp_k_logit_backward(int64_t i, const fdp_logit_backward_args *a) {
    float p = ((2.0f * a->v[i] - 1.0f) * a->bound + 1.0f) / 2.0f;
    float q = p * (1.0f - p);
    a->dv[i] = (a->dy[i] + a->dldj[i / a->D] * (2.0f * p - 1.0f)) * (a->bound / q);
}

/* ---- BatchNorm ------------------------------------------------------------- */
/* Per channel c < C: from sums over M elements (double), the mean and inverse std
 * used to normalize (biased variance), and in training the running statistics
 * updated with the unbiased variance:  running = (1-momentum)*running + momentum*batch.
 * In evaluation (training == 0) mean/invstd come from the running statistics. */
typedef struct {
    const double *sum, *sumsq; double count; float eps, momentum; int training;
    float *running_mean, *running_var; float *mean, *invstd;
} fdp_bn_stats_args;
FDP_HD static inline void fdp_k_bn_stats(int64_t c, const fdp_bn_stats_args *a) {
    if (a->training) {
        double m = a->sum[c] / a->count;
        double var = a->sumsq[c] / a->count - m * m;
        if (var < 0.0) var = 0.0;
        a->mean[c] = (float)m;
        a->invstd[c] = (float)(1.0 / sqrt(var + (double)a->eps));
        if (a->running_mean) {
            double unbiased = a->count > 1.0 ? var * a->count / (a->count - 1.0) : var;
            a->running_mean[c] = (1.0f - a->momentum) * a->running_mean[c] + a->momentum * (float)m;
            a->running_var[c] = (1.0f - a->momentum) * a->running_var[c] + a->momentum * (float)unbiased;
        }
    } else {
        a->mean[c] = a->running_mean[c];
        a->invstd[c] = 1.0f / sqrtf(a->running_var[c] + a->eps);
    }
}

/* Normalize + affine + activation. For i over the input (N, C, HW):
 *   v = mult*((x - mean[c])*invstd[c]*gamma[c] + beta[c])
 *   mode 0: y[n,c] = v;   mode 1: y[n,c] = relu(v);
 *   mode 2 (the notebook's cat(v, -v) then relu): y has 2C channels,
 *          y[n,c] = relu(v), y[n,C+c] = relu(-v). */
typedef struct {
    const float *x; float *y; const float *mean, *invstd, *gamma, *beta; int C; int64_t HW; float mult; int mode;
} fdp_bn_act_args;
/* the per-element body at a known (n, c, hw); i = (n*C + c)*HW + hw. The CPU backend
 * loops over (n, c) rows and calls it directly (per-channel values hoisted, inner loop
 * vectorized); fdp_k_bn_act (the GPU's entry) decomposes i and calls the same body. */
FDP_HD static inline void fdp_k_bn_act_at(int64_t i, int64_t n, int c, int64_t hw, const fdp_bn_act_args *a) {
    float v = a->mult * ((a->x[i] - a->mean[c]) * a->invstd[c] * a->gamma[c] + a->beta[c]);
    if (a->mode == 0) {
        a->y[i] = v;
    } else if (a->mode == 1) {
        a->y[i] = v > 0.0f ? v : 0.0f;
    } else {
        a->y[(n * 2 * a->C + c) * a->HW + hw] = v > 0.0f ? v : 0.0f;
        a->y[(n * 2 * a->C + a->C + c) * a->HW + hw] = v < 0.0f ? -v : 0.0f;
    }
}
FDP_HD static inline void fdp_k_bn_act(int64_t i, const fdp_bn_act_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    fdp_k_bn_act_at(i, t / a->C, (int)(t % a->C), hw, a);
}

/* Gradient at the BatchNorm output "bn(x)" (before mult and activation), from
 * the gradient dy at the activation output y (same modes as bn_act):
 *   mode 0: g = mult*dy;  mode 1: g = mult*dy*(y > 0);
 *   mode 2: g = mult*(dy[c]*(y[c] > 0) - dy[C+c]*(y[C+c] > 0)).  i over (N, C, HW).
 * fdp_bn_act_grad_value computes g without storing it: the fused backward
 * reduction and bn_grad_apply recompute it instead of reading a g buffer. */
typedef struct { const float *dy, *y; float *g; int C; int64_t HW; float mult; int mode; } fdp_bn_act_grad_args;
FDP_HD static inline float fdp_bn_act_grad_at(int64_t i, int64_t n, int c, int64_t hw, const fdp_bn_act_grad_args *a) {
    /* masks, not branches (fdp_keep_if), so that the loops over it vectorize */
    if (a->mode == 0) return a->mult * a->dy[i];
    if (a->mode == 1) return fdp_keep_if(a->y[i] > 0.0f, a->mult * a->dy[i]);
    int64_t ip = (n * 2 * a->C + c) * a->HW + hw, in = (n * 2 * a->C + a->C + c) * a->HW + hw;
    float g = fdp_keep_if(a->y[ip] > 0.0f, a->dy[ip]) - fdp_keep_if(a->y[in] > 0.0f, a->dy[in]);
    return a->mult * g;
}
FDP_HD static inline float fdp_bn_act_grad_value(int64_t i, const fdp_bn_act_grad_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    return fdp_bn_act_grad_at(i, t / a->C, (int)(t % a->C), hw, a);
}
FDP_HD static inline void fdp_k_bn_act_grad(int64_t i, const fdp_bn_act_grad_args *a) { a->g[i] = fdp_bn_act_grad_value(i, a); }

/* Per channel c: from sum_g = sum g and sum_gx = sum g*x over the M elements of
 * the channel (double, all ranks), the parameter gradients (overwritten)
 *   dbeta = param_scale*sum_g, dgamma = param_scale*invstd*(sum_gx - mean*sum_g)
 * and the coefficients of dx = k1*g + k2 + k3*(x - mean) (training mode):
 *   k1 = gamma*invstd, k2 = -gamma*invstd*sum_g/M, k3 = -gamma*invstd^3*(sum_gx - mean*sum_g)/M.
 * In evaluation mode (training == 0): k1 = gamma*invstd, k2 = k3 = 0. */
typedef struct {
    const double *sum_g, *sum_gx; double count; const float *mean, *invstd, *gamma;
    float *dgamma, *dbeta; float *k1, *k2, *k3; int training;
    double param_scale; /* dgamma, dbeta *= param_scale: 1/ranks when the sums are already global
                         * (synchronized BatchNorm), since the gradient buckets average over ranks again */
} fdp_bn_grad_coef_args;
FDP_HD static inline void fdp_k_bn_grad_coef(int64_t c, const fdp_bn_grad_coef_args *a) {
    double is = a->invstd[c], gm = a->gamma[c];
    double sg = a->sum_g[c], sgxc = a->sum_gx[c] - (double)a->mean[c] * sg; /* sum g*(x - mean) */
    if (a->dbeta) a->dbeta[c] = (float)(a->param_scale * sg);
    if (a->dgamma) a->dgamma[c] = (float)(a->param_scale * is * sgxc);
    a->k1[c] = (float)(gm * is);
    if (a->training) {
        a->k2[c] = (float)(-gm * is * sg / a->count);
        a->k3[c] = (float)(-gm * is * is * is * sgxc / a->count);
    } else {
        a->k2[c] = 0.0f;
        a->k3[c] = 0.0f;
    }
}

/* dx[i] (=|+=) k1[c]*g + k2[c] + k3[c]*(x[i] - mean[c]) with g = fdp_bn_act_grad_value(i, &grad)
 * (recomputed from dy and y); i over (N, C, HW) */
typedef struct { fdp_bn_act_grad_args grad; const float *x; float *dx; const float *mean, *k1, *k2, *k3; int C; int64_t HW; int accumulate; } fdp_bn_grad_apply_args;
FDP_HD static inline void fdp_k_bn_grad_apply_at(int64_t i, int64_t n, int c, int64_t hw, const fdp_bn_grad_apply_args *a) {
    float g = fdp_bn_act_grad_at(i, n, c, hw, &a->grad);
    float v = a->k1[c] * g + a->k2[c] + a->k3[c] * (a->x[i] - a->mean[c]);
    a->dx[i] = a->accumulate ? a->dx[i] + v : v;
}
FDP_HD static inline void fdp_k_bn_grad_apply(int64_t i, const fdp_bn_grad_apply_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    fdp_k_bn_grad_apply_at(i, t / a->C, (int)(t % a->C), hw, a);
}

/* ---- weight normalization --------------------------------------------------- */
/* w[i] = g[r]*v[i]/sqrt(normsq[r]), r = i / cols (one row per output channel). */
typedef struct { const float *v, *g; const double *normsq; float *w; int64_t cols; } fdp_weightnorm_forward_args;
FDP_HD static inline void fdp_k_weightnorm_forward(int64_t i, const fdp_weightnorm_forward_args *a) {
    int64_t r = i / a->cols;
    a->w[i] = (float)((double)a->g[r] * (double)a->v[i] / sqrt(a->normsq[r]));
}

/* From dw (gradient of the effective weight) and dot[r] = sum dw*v over the row:
 *   dg[r] = dot/|v|,  dv[i] = g/|v| * dw[i] - g*dot/|v|^3 * v[i]   (both overwritten). */
typedef struct { const float *dw, *v, *g; const double *normsq, *dot; float *dv, *dg; int64_t cols; } fdp_weightnorm_backward_args;
FDP_HD static inline void fdp_k_weightnorm_backward(int64_t i, const fdp_weightnorm_backward_args *a) {
    int64_t r = i / a->cols;
    double nrm = sqrt(a->normsq[r]), g = a->g[r], dot = a->dot[r];
    a->dv[i] = (float)(g / nrm * (double)a->dw[i] - g * dot / (nrm * nrm * nrm) * (double)a->v[i]);
    if (i % a->cols == 0) a->dg[r] = (float)(dot / nrm);
}

/* ---- affine coupling (the notebook's CouplingLayer) -------------------------- */
/* x and y are (N, Ctot, H, W). The changed part is either the checkerboard
 * positions where b == 0 of all channels (mask 0: Cc = Ctot, off = 0) or the
 * channels [off, off + Cc) (mask 1, channel-wise). st is the s/t network output
 * (N, 2*Cc, H, W): s_raw = st[:, :Cc], t = st[:, Cc:]. rescale[c] is the
 * effective Rescale weight. For i over (N, Ctot, H, W):
 *   changed:   th = tanh(s_raw), s = rescale*th
 *              forward: y = (x + t)*exp(s);  inverse: y = x*exp(-s) - t
 *   unchanged: y = x, th = s = 0
 * th and s are (N, Cc, H, W): th is kept for backward, s is summed into the log-det. */
typedef struct {
    const float *x, *st, *rescale; float *y, *th, *s;
    int Ctot, Cc, off, H, W; int mask; int reverse_mask; int inverse;
} fdp_coupling_affine_args;
FDP_HD static inline int fdp_coupling_changed(int64_t c, int64_t h, int64_t w, int mask, int reverse_mask, int off, int Cc) {
    if (mask == 0) return !fdp_checkerboard(h, w, reverse_mask);
    return c >= off && c < off + Cc;
}
FDP_HD static inline void fdp_k_coupling_affine(int64_t i, const fdp_coupling_affine_args *a) {
    int64_t HW = (int64_t)a->H * a->W;
    int64_t hw = i % HW;
    int64_t t = i / HW;
    int c = (int)(t % a->Ctot);
    int64_t n = t / a->Ctot;
    int cc = a->mask == 0 ? c : c - a->off; /* channel in the changed part */
    if (fdp_coupling_changed(c, hw / a->W, hw % a->W, a->mask, a->reverse_mask, a->off, a->Cc)) {
        int64_t j = (n * a->Cc + cc) * HW + hw;
        float th = tanhf(a->st[(n * 2 * a->Cc + cc) * HW + hw]);
        float tt = a->st[(n * 2 * a->Cc + a->Cc + cc) * HW + hw];
        float s = a->rescale[cc] * th;
        a->y[i] = a->inverse ? a->x[i] * expf(-s) - tt : (a->x[i] + tt) * expf(s);
        if (a->th) a->th[j] = th;
        if (a->s) a->s[j] = s;
    } else {
        a->y[i] = a->x[i];
        if (a->mask == 0) {
            int64_t j = (n * a->Cc + cc) * HW + hw;
            if (a->th) a->th[j] = 0.0f;
            if (a->s) a->s[j] = 0.0f;
        }
    }
}

/* Backward of the forward coupling. Given dy and y (the output), th, the
 * per-sample gradient of the log-det dldj[n], writes for i over (N, Ctot, H, W):
 *   changed:   e = exp(rescale*th); dx = dy*e; dt = dy*e; ds = dy*y + dldj[n]
 *              dst[s_raw] = ds*rescale*(1 - th^2); dst[t] = dt; dsth = ds*th
 *   unchanged: dx = dy (plus the s/t network path, added by the caller);
 *              checkerboard: dst = 0, dsth = 0 there.
 * dsth (N, Cc, H, W) is reduced per channel into the Rescale weight gradient. */
typedef struct {
    const float *dy, *y, *th, *rescale, *dldj; float *dx, *dst, *dsth;
    int Ctot, Cc, off, H, W; int mask; int reverse_mask;
} fdp_coupling_affine_backward_args;
FDP_HD static inline void fdp_k_coupling_affine_backward(int64_t i, const fdp_coupling_affine_backward_args *a) {
    int64_t HW = (int64_t)a->H * a->W;
    int64_t hw = i % HW;
    int64_t t = i / HW;
    int c = (int)(t % a->Ctot);
    int64_t n = t / a->Ctot;
    int cc = a->mask == 0 ? c : c - a->off;
    if (fdp_coupling_changed(c, hw / a->W, hw % a->W, a->mask, a->reverse_mask, a->off, a->Cc)) {
        int64_t j = (n * a->Cc + cc) * HW + hw;
        float th = a->th[j];
        float e = expf(a->rescale[cc] * th);
        float dy = a->dy[i];
        float ds = dy * a->y[i] + a->dldj[n];
        a->dx[i] = dy * e;
        a->dst[(n * 2 * a->Cc + cc) * HW + hw] = ds * a->rescale[cc] * (1.0f - th * th);
        a->dst[(n * 2 * a->Cc + a->Cc + cc) * HW + hw] = dy * e;
        a->dsth[j] = ds * th;
    } else {
        a->dx[i] = a->dy[i];
        if (a->mask == 0) {
            int64_t j = (n * a->Cc + cc) * HW + hw;
            a->dst[(n * 2 * a->Cc + cc) * HW + hw] = 0.0f;
            a->dst[(n * 2 * a->Cc + a->Cc + cc) * HW + hw] = 0.0f;
            a->dsth[j] = 0.0f;
        }
    }
}

/* ---- squeeze ----------------------------------------------------------------- */
/* Maps the un-squeezed element (n, c, h, w) of (N, C, H, W) to its squeezed place
 * in (N, 4C, H/2, W/2):
 *   plain (squeeze_2x2):        channel c*4 + 2*(h%2) + (w%2)
 *   alt_order (the notebook's perm_weight): channel k*C + c with
 *        k = 0 for (0,0), 1 for (1,1), 2 for (0,1), 3 for (1,0).
 * For i over the un-squeezed tensor: reverse == 0: y(squeezed)[j] = x[i];
 * reverse == 1 (unsqueeze): y[i] = x(squeezed)[j]. (accumulate adds.) */
typedef struct { const float *x; float *y; int C, H, W; int alt; int reverse; int accumulate; } fdp_squeeze_args;
FDP_HD static inline void fdp_k_squeeze(int64_t i, const fdp_squeeze_args *a) {
    int64_t w = i % a->W;
    int64_t t = i / a->W;
    int64_t h = t % a->H;
    t /= a->H;
    int64_t c = t % a->C;
    int64_t n = t / a->C;
    int di = (int)(h % 2), dj = (int)(w % 2);
    int64_t oc;
    if (a->alt) {
        int k = di == 0 ? (dj == 0 ? 0 : 2) : (dj == 1 ? 1 : 3);
        oc = (int64_t)k * a->C + c;
    } else {
        oc = c * 4 + 2 * di + dj;
    }
    int64_t H2 = a->H / 2, W2 = a->W / 2;
    int64_t j = ((n * 4 * a->C + oc) * H2 + h / 2) * W2 + w / 2;
    if (a->reverse) {
        a->y[i] = a->accumulate ? a->y[i] + a->x[j] : a->x[j];
    } else {
        a->y[j] = a->accumulate ? a->y[j] + a->x[i] : a->x[i];
    }
}

/* ---- optimizer ------------------------------------------------------------------ */
/* Adam (PyTorch 1.13 semantics) with the gradient scaled by gscale (clipping) and
 * L2 weight decay added to the gradient:
 *   g = grad*gscale + wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
 *   p -= step_size * m / (sqrt(v)/bc2_sqrt + eps),  step_size = lr/(1 - b1^t).
 * The clipped gradient is written back (as PyTorch's clip_grad_norm_ does). */
typedef struct {
    float *p, *grad, *m, *v; float gscale, wd, b1, b2, eps, step_size, bc2_sqrt;
} fdp_adam_args;
FDP_HD static inline void fdp_k_adam(int64_t i, const fdp_adam_args *a) {
    float g = a->grad[i];
    if (a->gscale != 1.0f) {
        g *= a->gscale;
        a->grad[i] = g;
    }
    if (a->wd != 0.0f) g += a->wd * a->p[i];
    float m = a->m[i] * a->b1 + (1.0f - a->b1) * g;
    float v = a->v[i] * a->b2 + (1.0f - a->b2) * g * g;
    a->m[i] = m;
    a->v[i] = v;
    float denom = sqrtf(v) / a->bc2_sqrt + a->eps;
    a->p[i] = a->p[i] - a->step_size * (m / denom);
}

/* The list of operations (generates backend members and implementations). */
#define FDP_ELEMENTWISE_OPS(X)       \
    X(fill)                          \
    X(axpby)                         \
    X(scale_shift)                   \
    X(axpy_f64)                      \
    X(f64_to_f32)                    \
    X(sigmoid)                       \
    X(slice_copy)                    \
    X(checkerboard_mul)              \
    X(dequant_uniform)               \
    X(logit_forward)                 \
    X(logit_backward)                \
    X(bn_stats)                      \
    X(bn_act)                        \
    X(bn_act_grad)                   \
    X(bn_grad_coef)                  \
    X(bn_grad_apply)                 \
    X(weightnorm_forward)            \
    X(weightnorm_backward)           \
    X(coupling_affine)               \
    X(coupling_affine_backward)      \
    X(squeeze)                       \
    X(adam)                          \
    X(philox_fill)                   \
    FDP_GATED_OPS(X)                 \
    FDP_GLOW_OPS(X)                  \
    FDP_TUTORIAL_OPS(X)

#endif
