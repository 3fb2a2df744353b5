/* tutorial_ops.h — the element-wise math of the flows of Lippe's Tutorial 9 (the affine
 * CouplingLayer with its scaling factor and mask buffer, the dequantization's logit with
 * alpha, SplitFlow's standard-normal prior), written once for CPU and GPU like elementwise.h,
 * which appends FDP_TUTORIAL_OPS to FDP_ELEMENTWISE_OPS. NCHW tensors, HW = h*w.
 * Masks are the tutorial's buffers: checkerboard (1,1,H,W) (mask_c 0: indexed by the pixel) or
 * channel (1,C,1,1) (mask_c 1: indexed by the channel); 1 = conditioning (kept). The order of
 * the float32 operations follows the tutorial's PyTorch code. */
#ifndef FLOWDP_KERNELS_TUTORIAL_OPS_H
#define FLOWDP_KERNELS_TUTORIAL_OPS_H
#include "kernels/hd.h"

FDP_HD static inline float fdp_tut_mask(const float *mask, int64_t i, int C, int64_t HW, int mask_c) {
    return mask_c ? mask[(i / HW) % C] : mask[i % HW];
}

/* for i over (N, C, HW): y = x * mask (+ y when accumulate) */
typedef struct { const float *x, *mask; float *y; int C; int64_t HW; int mask_c, accumulate; } fdp_tut_mask_mul_args;
FDP_HD static inline void fdp_k_tut_mask_mul(int64_t i, const fdp_tut_mask_mul_args *a) {
    float v = a->x[i] * fdp_tut_mask(a->mask, i, a->C, a->HW, a->mask_c);
    a->y[i] = a->accumulate ? a->y[i] + v : v;
}

/* the coupling, for i over (N, C, HW); nn (N, 2C, HW) = (s, t) halves, sf (C) the scaling factor:
 *   e = exp(sf), s = tanh(s / e) * e, s *= 1 - mask, t *= 1 - mask;
 *   forward y = (x + t) * exp(s); inverse y = x * exp(-s) - t;  s (when not NULL) = the masked s */
typedef struct {
    const float *x, *nn, *sf, *mask; float *y, *s; int C; int64_t HW; int mask_c, inverse;
} fdp_tut_coupling_args;
FDP_HD static inline void fdp_k_tut_coupling(int64_t i, const fdp_tut_coupling_args *a) {
    int64_t CHW = (int64_t)a->C * a->HW, n = i / CHW, r = i % CHW;
    int c = (int)(r / a->HW);
    float e = expf(a->sf[c]), om = 1.0f - fdp_tut_mask(a->mask, i, a->C, a->HW, a->mask_c);
    float s = tanhf(a->nn[n * 2 * CHW + r] / e) * e;
    s = s * om;
    float t = a->nn[n * 2 * CHW + CHW + r] * om;
    a->y[i] = a->inverse ? a->x[i] * expf(-s) - t : (a->x[i] + t) * expf(s);
    if (a->s) a->s[i] = s;
}
/* its backward from the input x, dy and dldj (per sample): dx = dy exp(s) (the direct part),
 * dnn (N, 2C, HW) = (d s_raw, d t), dsf (N, C, HW) the per-element terms of d sf (reduced by the
 * caller): with y = (x + t) exp(s), g = (dy y + dldj) (1 - mask), th = tanh(r / e):
 * d r = g (1 - th^2), d sf = g (e th - (1 - th^2) r), d t = dy exp(s) (1 - mask) */
typedef struct {
    const float *x, *nn, *sf, *mask, *dy, *dldj; float *dx, *dnn, *dsf; int C; int64_t HW; int mask_c;
} fdp_tut_coupling_backward_args;
FDP_HD static inline void fdp_k_tut_coupling_backward(int64_t i, const fdp_tut_coupling_backward_args *a) {
    int64_t CHW = (int64_t)a->C * a->HW, n = i / CHW, r = i % CHW;
    int c = (int)(r / a->HW);
    float e = expf(a->sf[c]), om = 1.0f - fdp_tut_mask(a->mask, i, a->C, a->HW, a->mask_c);
    float raw = a->nn[n * 2 * CHW + r], th = tanhf(raw / e);
    float s = th * e * om, t = a->nn[n * 2 * CHW + CHW + r] * om;
    float es = expf(s), y = (a->x[i] + t) * es, dy = a->dy[i];
    float g = (dy * y + a->dldj[n]) * om, d1 = 1.0f - th * th;
    a->dx[i] = dy * es;
    a->dnn[n * 2 * CHW + r] = g * d1;
    a->dnn[n * 2 * CHW + CHW + r] = dy * es * om;
    a->dsf[i] = g * (e * th - d1 * raw);
}

/* the dequantization's logit (Dequantization.sigmoid(reverse=True)), for i over (N, D):
 * v' = v (1 - alpha) + 0.5 alpha (float32 constants oma = 1 - alpha, ha = 0.5 alpha),
 * ldj = -log v' - log(1 - v') (the caller adds log(1 - alpha) D), z = log v' - log(1 - v') */
typedef struct { const float *v; float *z, *ldj; float oma, ha; } fdp_tut_logit_args;
FDP_HD static inline void fdp_k_tut_logit(int64_t i, const fdp_tut_logit_args *a) {
    float m = a->v[i] * a->oma;
    float vp = m + a->ha;
    float lv = logf(vp), l1 = logf(1.0f - vp);
    a->ldj[i] = -lv - l1;
    a->z[i] = lv - l1;
}
/* its backward: dv = oma (dz (1/v' + 1/(1 - v')) + dldj[n] (1/(1 - v') - 1/v')), D per sample */
typedef struct { const float *v, *dz, *dldj; float *dv; float oma, ha; int64_t D; } fdp_tut_logit_backward_args;
FDP_HD static inline void fdp_k_tut_logit_backward(int64_t i, const fdp_tut_logit_backward_args *a) {
    float m = a->v[i] * a->oma;
    float vp = m + a->ha;
    float p = 1.0f / vp, q = 1.0f / (1.0f - vp);
    a->dv[i] = a->oma * (a->dz[i] * (p + q) + a->dldj[i / a->D] * (q - p));
}

/* SplitFlow's prior: lp = log N(z; 0, 1) = -z^2/2 - log sqrt(2 pi) (torch's Normal.log_prob) */
#define FDP_TUT_LOG_SQRT_2PI 0.91893853320467274f
typedef struct { const float *z; float *lp; } fdp_tut_normal_logp_args;
FDP_HD static inline void fdp_k_tut_normal_logp(int64_t i, const fdp_tut_normal_logp_args *a) {
    float z = a->z[i];
    a->lp[i] = -(z * z) / 2.0f - FDP_TUT_LOG_SQRT_2PI;
}
/* its backward: dz = -dldj[n] z, D per sample */
typedef struct { const float *z, *dldj; float *dz; int64_t D; } fdp_tut_normal_logp_backward_args;
FDP_HD static inline void fdp_k_tut_normal_logp_backward(int64_t i, const fdp_tut_normal_logp_backward_args *a) {
    a->dz[i] = -a->dldj[i / a->D] * a->z[i];
}

#define FDP_TUTORIAL_OPS(X)      \
    X(tut_mask_mul)              \
    X(tut_coupling)              \
    X(tut_coupling_backward)     \
    X(tut_logit)                 \
    X(tut_logit_backward)        \
    X(tut_normal_logp)           \
    X(tut_normal_logp_backward)

#endif
