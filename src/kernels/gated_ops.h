/* gated_ops.h — the element-wise math of the gated-convolution network (Lippe's GatedConvNet:
 * ConcatELU, the gated residual x + val * sigmoid(gate), LayerNorm over channels), written once
 * for CPU and GPU like elementwise.h, which appends FDP_GATED_OPS to FDP_ELEMENTWISE_OPS.
 * NCHW tensors, HW = h*w; "per pixel" ops run over i < N*HW and loop over the channels. */
#ifndef FLOWDP_KERNELS_GATED_OPS_H
#define FLOWDP_KERNELS_GATED_OPS_H
#include "kernels/hd.h"

FDP_HD static inline float fdp_elu(float v) { return v > 0.0f ? v : expm1f(v); }
FDP_HD static inline float fdp_elu_grad(float v) { return v > 0.0f ? 1.0f : expf(v); }

/* ConcatELU, for i over (N, C, HW): y (N, 2C, HW) = cat(elu(x), elu(-x)) */
typedef struct { const float *x; float *y; int C; int64_t HW; } fdp_concat_elu_args;
FDP_HD static inline void fdp_k_concat_elu(int64_t i, const fdp_concat_elu_args *a) {
    int64_t CHW = (int64_t)a->C * a->HW, n = i / CHW, r = i % CHW;
    float x = a->x[i];
    a->y[n * 2 * CHW + r] = fdp_elu(x);
    a->y[n * 2 * CHW + CHW + r] = fdp_elu(-x);
}
/* its backward: dx = dy1 elu'(x) - dy2 elu'(-x)  (+ dx when accumulate) */
typedef struct { const float *x, *dy; float *dx; int C; int64_t HW; int accumulate; } fdp_concat_elu_backward_args;
FDP_HD static inline void fdp_k_concat_elu_backward(int64_t i, const fdp_concat_elu_backward_args *a) {
    int64_t CHW = (int64_t)a->C * a->HW, n = i / CHW, r = i % CHW;
    float x = a->x[i];
    float d = a->dy[n * 2 * CHW + r] * fdp_elu_grad(x) - a->dy[n * 2 * CHW + CHW + r] * fdp_elu_grad(-x);
    a->dx[i] = a->accumulate ? a->dx[i] + d : d;
}

/* the gated residual, for i over (N, C, HW): o (N, 2C, HW) = (val, gate) halves,
 * y = h + val * sigmoid(gate) */
typedef struct { const float *h, *o; float *y; int C; int64_t HW; } fdp_gate_args;
FDP_HD static inline float fdp_gate_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
FDP_HD static inline void fdp_k_gate(int64_t i, const fdp_gate_args *a) {
    int64_t CHW = (int64_t)a->C * a->HW, n = i / CHW, r = i % CHW;
    a->y[i] = a->h[i] + a->o[n * 2 * CHW + r] * fdp_gate_sigmoid(a->o[n * 2 * CHW + CHW + r]);
}
/* its backward into do (N, 2C, HW): dval = dy s, dgate = dy val s (1 - s) (dh = dy: the caller's) */
typedef struct { const float *o, *dy; float *dout; int C; int64_t HW; } fdp_gate_backward_args;
FDP_HD static inline void fdp_k_gate_backward(int64_t i, const fdp_gate_backward_args *a) {
    int64_t CHW = (int64_t)a->C * a->HW, n = i / CHW, r = i % CHW;
    float val = a->o[n * 2 * CHW + r], s = fdp_gate_sigmoid(a->o[n * 2 * CHW + CHW + r]), dy = a->dy[i];
    a->dout[n * 2 * CHW + r] = dy * s;
    a->dout[n * 2 * CHW + CHW + r] = dy * val * s * (1.0f - s);
}

/* LayerNorm over the channels of each pixel, for i over (N, HW): mean and biased variance of
 * x[n, :, p] (double sums), y = (x - mean) rstd * gamma[c] + beta[c], rstd = 1/sqrt(var + eps);
 * mean, rstd (N*HW) kept for backward */
typedef struct {
    const float *x, *gamma, *beta; float *y, *mean, *rstd; int C; int64_t HW; float eps;
} fdp_layernorm_channels_args;
FDP_HD static inline void fdp_k_layernorm_channels(int64_t i, const fdp_layernorm_channels_args *a) {
    int64_t n = i / a->HW, p = i % a->HW, base = n * a->C * a->HW + p;
    double s = 0.0, sq = 0.0;
    for (int c = 0; c < a->C; c++) {
        double v = a->x[base + c * a->HW];
        s += v;
        sq += v * v;
    }
    double mean = s / a->C, var = sq / a->C - mean * mean;
    if (var < 0.0) var = 0.0;
    float m = (float)mean, r = (float)(1.0 / sqrt(var + (double)a->eps));
    a->mean[i] = m;
    a->rstd[i] = r;
    for (int c = 0; c < a->C; c++) {
        int64_t j = base + c * a->HW;
        a->y[j] = (a->x[j] - m) * r * a->gamma[c] + a->beta[c];
    }
}
/* its backward, per pixel: xhat = (x - mean) rstd, g = dy gamma,
 * dx = rstd (g - mean_c(g) - xhat mean_c(g xhat)); dyxhat = dy xhat (reduced by the caller into
 * d gamma; d beta is the reduction of dy) */
typedef struct {
    const float *x, *dy, *gamma, *mean, *rstd; float *dx, *dyxhat; int C; int64_t HW;
} fdp_layernorm_channels_backward_args;
FDP_HD static inline void fdp_k_layernorm_channels_backward(int64_t i, const fdp_layernorm_channels_backward_args *a) {
    int64_t n = i / a->HW, p = i % a->HW, base = n * a->C * a->HW + p;
    float m = a->mean[i], r = a->rstd[i];
    double s1 = 0.0, s2 = 0.0;
    for (int c = 0; c < a->C; c++) {
        int64_t j = base + c * a->HW;
        float xh = (a->x[j] - m) * r, g = a->dy[j] * a->gamma[c];
        s1 += g;
        s2 += (double)g * xh;
    }
    float m1 = (float)(s1 / a->C), m2 = (float)(s2 / a->C);
    for (int c = 0; c < a->C; c++) {
        int64_t j = base + c * a->HW;
        float xh = (a->x[j] - m) * r, g = a->dy[j] * a->gamma[c];
        a->dx[j] = r * (g - m1 - xh * m2);
        a->dyxhat[j] = a->dy[j] * xh;
    }
}

#define FDP_GATED_OPS(X)              \
    X(concat_elu)                     \
    X(concat_elu_backward)            \
    X(gate)                           \
    X(gate_backward)                  \
    X(layernorm_channels)             \
    X(layernorm_channels_backward)

#endif
