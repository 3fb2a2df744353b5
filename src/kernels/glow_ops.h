/* glow_ops.h — the element-wise math of the Glow layers (ActNorm, the fixed
 * channel permutations, affine/additive coupling with sigmoid scale, the
 * diagonal-Gaussian priors of the split and the top, preprocessing) and of the
 * Adamax optimizer / EMA weights, written once for CPU and GPU like
 * elementwise.h. FDP_GLOW_OPS lists them; elementwise.h appends the list to
 * FDP_ELEMENTWISE_OPS so every backend gets them.
 *
 * Conventions as in elementwise.h: NCHW tensors, "HW" = h*w, per-channel
 * vectors have C entries, double pointers are reductions of the backend.
 * openai/glow's names: logscale_factor (3) multiplies every "logs" parameter
 * (ActNorm and Conv2dZeros), the affine coupling's scale is
 * sigmoid(h[:, 1::2] + 2) with shift h[:, 0::2] (interleaved channels). */
#ifndef FLOWDP_KERNELS_GLOW_OPS_H
#define FLOWDP_KERNELS_GLOW_OPS_H
#include "kernels/hd.h"

#define FDP_GLOW_LOG_2PI 1.8378770664093453f

/* log(sigmoid(a)) and sigmoid(a), 1 - sigmoid(a) without overflow */
FDP_HD static inline float fdp_glow_log_sigmoid(float a) {
    return a >= 0.0f ? -log1pf(expf(-a)) : a - log1pf(expf(a));
}
FDP_HD static inline float fdp_glow_sigmoid(float a) {
    if (a >= 0.0f) return 1.0f / (1.0f + expf(-a));
    float e = expf(a);
    return e / (1.0f + e);
}

/* ---- preprocessing (openai's preprocess + dequantization) -------------------- */
/* x: pixels in [0,1] (integers/255), u: noise in [0,1). With the integer pixel
 * p = round(255 x) and bin = floor(p / bin_div) (bin_div = 2^(8 - n_bits_x)):
 *   y = (bin + u) / n_bins - 0.5 */
typedef struct { const float *x, *u; float *y; float bin_div, n_bins; } fdp_glow_preprocess_args;
FDP_HD static inline void fdp_k_glow_preprocess(int64_t i, const fdp_glow_preprocess_args *a) {
    float p = floorf(a->x[i] * 255.0f + 0.5f);
    p = p < 0.0f ? 0.0f : p > 255.0f ? 255.0f : p;
    float bin = floorf(p / a->bin_div);
    a->y[i] = (bin + a->u[i]) / a->n_bins - 0.5f;
}

/* openai's postprocess, as an image in [0,1]: bin = clip(floor((x + 0.5)*n_bins), 0, n_bins - 1),
 * y = bin * (256/n_bins) / 255 (the lowest 8-bit value of the bin; exact pixels for 8 bits).
 * NaN maps to 0. */
typedef struct { const float *x; float *y; float n_bins; } fdp_glow_postprocess_args;
FDP_HD static inline void fdp_k_glow_postprocess(int64_t i, const fdp_glow_postprocess_args *a) {
    float b = floorf((a->x[i] + 0.5f) * a->n_bins);
    if (!(b >= 0.0f)) b = 0.0f;
    if (b > a->n_bins - 1.0f) b = a->n_bins - 1.0f;
    a->y[i] = b * (256.0f / a->n_bins) / 255.0f;
}

/* ---- ActNorm / Conv2dZeros output scaling ------------------------------------ */
/* per channel: scale[c] = exp(logscale * logs[c]) (computed once per call of a layer,
 * so the element-wise ops below need no exp per element) */
typedef struct { const float *logs; float *scale; float logscale; } fdp_glow_channel_scale_args;
FDP_HD static inline void fdp_k_glow_channel_scale(int64_t c, const fdp_glow_channel_scale_args *a) {
    a->scale[c] = expf(a->logscale * a->logs[c]);
}

/* For i over (N, C, HW), e = scale[c] when scale != NULL, else exp(logscale*logs[c]):
 *   forward: y = (x + b[c]) * e, then relu when relu;   inverse: y = x / e - b[c] */
typedef struct {
    const float *x; float *y; const float *b, *logs; int C; int64_t HW; float logscale; int inverse; int relu;
    const float *scale;
} fdp_glow_actnorm_args;
FDP_HD static inline void fdp_k_glow_actnorm(int64_t i, const fdp_glow_actnorm_args *a) {
    int c = (int)((i / a->HW) % a->C);
    float e = a->scale ? a->scale[c] : expf(a->logscale * a->logs[c]);
    if (a->inverse) {
        a->y[i] = a->x[i] / e - a->b[c];
    } else {
        float v = (a->x[i] + a->b[c]) * e;
        a->y[i] = a->relu && !(v > 0.0f) ? 0.0f : v;
    }
}

/* Backward to the input: g = dy * e (times [y > 0] when relu, y the output), i over (N, C, HW);
 * e as in fdp_k_glow_actnorm */
typedef struct {
    const float *dy, *y; float *dx; const float *logs; int C; int64_t HW; float logscale; int relu;
    const float *scale;
} fdp_glow_actnorm_backward_args;
FDP_HD static inline void fdp_k_glow_actnorm_backward(int64_t i, const fdp_glow_actnorm_backward_args *a) {
    int c = (int)((i / a->HW) % a->C);
    float g = a->relu && !(a->y[i] > 0.0f) ? 0.0f : a->dy[i];
    a->dx[i] = g * (a->scale ? a->scale[c] : expf(a->logscale * a->logs[c]));
}

/* Parameter gradients per channel c (overwritten), from the reductions of the
 * input gradient gx = dy*e over (N, HW): sum_g[c] = sum gx, sum_gx[c] = sum gx*x:
 *   db = sum_g,  dlogs = logscale*(sum_gx + b*sum_g)  [= logscale * sum dy*y]
 *   + logscale*hw*dldj_sum[0] when dldj_sum (log-det = hw*logscale*sum logs, per sample) */
typedef struct {
    const double *sum_g, *sum_gx, *dldj_sum; const float *b; float *db, *dlogs; float logscale; double hw;
} fdp_glow_actnorm_grad_args;
FDP_HD static inline void fdp_k_glow_actnorm_grad(int64_t c, const fdp_glow_actnorm_grad_args *a) {
    double sg = a->sum_g[c];
    double dl = (double)a->logscale * (a->sum_gx[c] + (double)a->b[c] * sg);
    if (a->dldj_sum) dl += (double)a->logscale * a->hw * a->dldj_sum[0];
    a->db[c] = (float)sg;
    a->dlogs[c] = (float)dl;
}

/* Data-dependent initialization per channel c from sums over `count` elements (global batch):
 *   b = -mean, logs = log(1/(std + 1e-6))/logscale (std biased); flag[0] = 1 */
typedef struct { const double *sum, *sumsq; double count; float *b, *logs, *flag; float logscale; } fdp_glow_actnorm_ddi_args;
FDP_HD static inline void fdp_k_glow_actnorm_ddi(int64_t c, const fdp_glow_actnorm_ddi_args *a) {
    double m = a->sum[c] / a->count;
    double var = a->sumsq[c] / a->count - m * m;
    if (var < 0.0) var = 0.0;
    a->b[c] = (float)(-m);
    a->logs[c] = (float)(log(1.0 / (sqrt(var) + 1e-6)) / (double)a->logscale);
    if (c == 0) a->flag[0] = 1.0f;
}

/* y[i] += alpha * s[0] in double (a log-det that is the same for every sample) */
typedef struct { const double *s; double *y; double alpha; } fdp_glow_add_bcast_f64_args;
FDP_HD static inline void fdp_k_glow_add_bcast_f64(int64_t i, const fdp_glow_add_bcast_f64_args *a) {
    a->y[i] += a->alpha * a->s[0];
}

/* ---- fixed channel permutations -------------------------------------------- */
/* perm[c] (floats holding integers) = the input channel output channel c takes;
 * perm == NULL: reverse (C-1-c). For i over (N, C, HW):
 *   forward: y[n, c] = x[n, perm[c]];  inverse: y[n, perm[c]] = x[n, c] */
typedef struct { const float *x; float *y; const float *perm; int C; int64_t HW; int inverse; } fdp_glow_permute_args;
FDP_HD static inline void fdp_k_glow_permute(int64_t i, const fdp_glow_permute_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->C);
    int64_t n = t / a->C;
    int p = a->perm ? (int)a->perm[c] : a->C - 1 - c;
    int64_t j = (n * a->C + p) * a->HW + hw;
    if (a->inverse)
        a->y[j] = a->x[i];
    else
        a->y[i] = a->x[j];
}

/* ---- coupling ---------------------------------------------------------------- */
/* x, y (N, C, HW); the first C2 = C/2 channels pass through. h is the NN output:
 * additive (N, C2, HW): y2 = x2 + h (inverse x2 = y2 - h);
 * affine (N, C, HW): shift = h[:, 2c], s = sigmoid(h[:, 2c+1] + 2),
 *   forward y2 = (x2 + shift)*s, inverse x2 = y2/s - shift;
 *   ls (N, C2, HW) = log s (for the log-det; not written when NULL or additive). */
typedef struct { const float *x, *h; float *y, *ls; int C; int64_t HW; int affine; int inverse; } fdp_glow_coupling_args;
FDP_HD static inline void fdp_k_glow_coupling(int64_t i, const fdp_glow_coupling_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->C);
    int64_t n = t / a->C;
    int C2 = a->C / 2;
    if (c < C2) {
        a->y[i] = a->x[i];
        return;
    }
    int c2 = c - C2;
    if (!a->affine) {
        float h = a->h[(n * C2 + c2) * a->HW + hw];
        a->y[i] = a->inverse ? a->x[i] - h : a->x[i] + h;
        return;
    }
    float shift = a->h[(n * a->C + 2 * c2) * a->HW + hw];
    float raw = a->h[(n * a->C + 2 * c2 + 1) * a->HW + hw] + 2.0f;
    float s = fdp_glow_sigmoid(raw);
    a->y[i] = a->inverse ? a->x[i] / s - shift : (a->x[i] + shift) * s;
    if (a->ls) a->ls[(n * C2 + c2) * a->HW + hw] = fdp_glow_log_sigmoid(raw);
}

/* Backward of the forward coupling from dy, the output y, h and dldj[n]:
 *   c < C2: dx = dy (the NN's path is added by the caller)
 *   additive: dx2 = dy2, dh = dy2
 *   affine: dx2 = dy2*s, dh[2c] = dy2*s, dh[2c+1] = (dy2*y2 + dldj[n])*(1 - s) */
typedef struct {
    const float *dy, *y, *h, *dldj; float *dx, *dh; int C; int64_t HW; int affine;
} fdp_glow_coupling_backward_args;
FDP_HD static inline void fdp_k_glow_coupling_backward(int64_t i, const fdp_glow_coupling_backward_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->C);
    int64_t n = t / a->C;
    int C2 = a->C / 2;
    float dy = a->dy[i];
    if (c < C2) {
        a->dx[i] = dy;
        return;
    }
    int c2 = c - C2;
    if (!a->affine) {
        a->dx[i] = dy;
        a->dh[(n * C2 + c2) * a->HW + hw] = dy;
        return;
    }
    int64_t js = (n * a->C + 2 * c2) * a->HW + hw, jr = js + a->HW;
    float raw = a->h[jr] + 2.0f;
    float s = fdp_glow_sigmoid(raw), oms = fdp_glow_sigmoid(-raw);
    a->dx[i] = dy * s;
    a->dh[js] = dy * s;
    a->dh[jr] = (dy * a->y[i] + a->dldj[n]) * oms;
}

/* ---- diagonal Gaussian priors -------------------------------------------------- */
/* The mean and log-std of latent element (n, c, hw) of a (N, Cz, HW) tensor:
 *   layout 0 (split prior): h (N, 2*Cz, HW), mean = h[n, 2c], logs = h[n, 2c+1]
 *   layout 1 (top prior):   h (2*Cz) per channel, mean = h[c], logs = h[Cz + c] */
FDP_HD static inline void fdp_glow_gauss_at(const float *h, int layout, int64_t n, int c, int Cz, int64_t hw,
                                            int64_t HW, float *mean, float *logs, int64_t *jm, int64_t *jl) {
    if (layout == 0) {
        *jm = (n * 2 * Cz + 2 * c) * HW + hw;
        *jl = *jm + HW;
        *mean = h[*jm];
        *logs = h[*jl];
    } else {
        *jm = (n * 2 * Cz + c) * HW + hw; /* where the backward's dh goes: (N, 2*Cz, HW) */
        *jl = (n * 2 * Cz + Cz + c) * HW + hw;
        *mean = h[c];
        *logs = h[Cz + c];
    }
}

/* lp[i] = log N(z; mean, exp(logs)^2) = -0.5*(log 2pi + 2 logs + eps^2), eps = (z - mean)*exp(-logs)
 * (eps written when not NULL); i over (N, Cz, HW) */
typedef struct { const float *z, *h; float *lp, *eps; int Cz; int64_t HW; int layout; } fdp_glow_gaussian_logp_args;
FDP_HD static inline void fdp_k_glow_gaussian_logp(int64_t i, const fdp_glow_gaussian_logp_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->Cz);
    int64_t n = t / a->Cz;
    float mean, logs;
    int64_t jm, jl;
    fdp_glow_gauss_at(a->h, a->layout, n, c, a->Cz, hw, a->HW, &mean, &logs, &jm, &jl);
    float e = (a->z[i] - mean) * expf(-logs);
    a->lp[i] = -0.5f * (FDP_GLOW_LOG_2PI + 2.0f * logs + e * e);
    if (a->eps) a->eps[i] = e;
}

/* z[i] = mean + exp(logs) * eps[i] * temperature */
typedef struct { const float *eps, *h; float *z; float temperature; int Cz; int64_t HW; int layout; } fdp_glow_gaussian_sample_args;
FDP_HD static inline void fdp_k_glow_gaussian_sample(int64_t i, const fdp_glow_gaussian_sample_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->Cz);
    int64_t n = t / a->Cz;
    float mean, logs;
    int64_t jm, jl;
    fdp_glow_gauss_at(a->h, a->layout, n, c, a->Cz, hw, a->HW, &mean, &logs, &jm, &jl);
    a->z[i] = mean + expf(logs) * a->eps[i] * a->temperature;
}

/* Gradients of sum_n dlp[n] * sum lp[n, ...] (per-sample weights):
 *   dz = -w*eps*exp(-logs) (written, or added when accumulate), dmean = -dz, dlogs = w*(eps^2 - 1)
 * into dh (N, 2*Cz, HW) at the positions fdp_glow_gauss_at names (layout 1: reduce per channel after). */
typedef struct {
    const float *z, *h, *dlp; float *dz, *dh; int Cz; int64_t HW; int layout; int accumulate;
} fdp_glow_gaussian_backward_args;
FDP_HD static inline void fdp_k_glow_gaussian_backward(int64_t i, const fdp_glow_gaussian_backward_args *a) {
    int64_t hw = i % a->HW;
    int64_t t = i / a->HW;
    int c = (int)(t % a->Cz);
    int64_t n = t / a->Cz;
    float mean, logs;
    int64_t jm, jl;
    fdp_glow_gauss_at(a->h, a->layout, n, c, a->Cz, hw, a->HW, &mean, &logs, &jm, &jl);
    float w = a->dlp[n], is = expf(-logs);
    float e = (a->z[i] - mean) * is;
    float dz = -w * e * is;
    a->dz[i] = a->accumulate ? a->dz[i] + dz : dz;
    a->dh[jm] = -dz;
    a->dh[jl] = w * (e * e - 1.0f);
}

/* The learned top prior's per-channel vector: h[c] = b[c]*exp(logscale*logs[c]) (c < 2*Cz) */
typedef struct { const float *b, *logs; float *h; float logscale; } fdp_glow_prior_vec_args;
FDP_HD static inline void fdp_k_glow_prior_vec(int64_t c, const fdp_glow_prior_vec_args *a) {
    a->h[c] = a->b[c] * expf(a->logscale * a->logs[c]);
}
/* ... and its parameter gradients from dsum[c] = sum over (n, hw) of d/dh[c]:
 *   db = dsum*e, dlogs = logscale*dsum*b*e (overwritten) */
typedef struct { const double *dsum; const float *b, *logs; float *db, *dlogs; float logscale; } fdp_glow_prior_grad_args;
FDP_HD static inline void fdp_k_glow_prior_grad(int64_t c, const fdp_glow_prior_grad_args *a) {
    double e = exp((double)a->logscale * (double)a->logs[c]);
    a->db[c] = (float)(a->dsum[c] * e);
    a->dlogs[c] = (float)((double)a->logscale * a->dsum[c] * (double)a->b[c] * e);
}

/* ---- optimizer: Adamax, EMA swap ---------------------------------------------- */
/* Adamax (Kingma & Ba 2015, Alg. 2; openai/glow's optim.adamax) with the gradient
 * scaled by gscale (clipping; written back like Adam's) and L2 weight decay added:
 *   g = grad*gscale + wd*p;  m = b1*m + (1-b1)*g;  u = max(b2*u, |g|)
 *   p -= step_size * m / (u + eps),  step_size = lr/(1 - b1^t) [* sqrt(1 - b2^t) openai-style] */
typedef struct { float *p, *grad, *m, *u; float gscale, wd, b1, b2, eps, step_size; } fdp_adamax_args;
FDP_HD static inline void fdp_k_adamax(int64_t i, const fdp_adamax_args *a) {
    float g = a->grad[i];
    if (a->gscale != 1.0f) {
        g *= a->gscale;
        a->grad[i] = g;
    }
    if (a->wd != 0.0f) g += a->wd * a->p[i];
    float m = a->m[i] * a->b1 + (1.0f - a->b1) * g;
    float u = fmaxf(a->b2 * a->u[i], fabsf(g));
    a->m[i] = m;
    a->u[i] = u;
    a->p[i] = a->p[i] - a->step_size * (m / (u + a->eps));
}

/* exchange a[i] and b[i] (EMA weights <-> parameters) */
typedef struct { float *a, *b; } fdp_swap_f32_args;
FDP_HD static inline void fdp_k_swap_f32(int64_t i, const fdp_swap_f32_args *a) {
    float t = a->a[i];
    a->a[i] = a->b[i];
    a->b[i] = t;
}

#define FDP_GLOW_OPS(X)        \
    X(glow_preprocess)         \
    X(glow_postprocess)        \
    X(glow_actnorm)            \
    X(glow_actnorm_backward)   \
    X(glow_actnorm_grad)       \
    X(glow_actnorm_ddi)        \
    X(glow_add_bcast_f64)      \
    X(glow_permute)            \
    X(glow_coupling)           \
    X(glow_coupling_backward)  \
    X(glow_gaussian_logp)      \
    X(glow_gaussian_sample)    \
    X(glow_gaussian_backward)  \
    X(glow_prior_vec)          \
    X(glow_prior_grad)         \
    X(adamax)                  \
    X(swap_f32)                \
    X(glow_channel_scale)

#endif
