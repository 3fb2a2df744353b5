/* invconv.c — Glow's invertible 1x1 convolution, y = W x per pixel, in two
 * parameterizations (openai/glow's invertible_1x1_conv):
 *   plain: W (C,C) learned, initialized random orthogonal; log-det = H*W*log|det W|
 *   LU:    W = P L (U + diag(sign_s * exp(log_s))), P and sign_s fixed buffers,
 *          L unit lower / U strictly upper triangular (only those parts of the
 *          stored (C,C) matrices are used); log-det = H*W*sum(log_s)
 * W is applied as a 1x1 convolution (OIHW (C,C,1,1): W[o][i]). log|det W| and
 * W^-1 are computed on the host in double (C is at most a few hundred) every
 * forward / inverse, as openai does in float64; so is the LU chain rule in
 * backward: dW from conv_backward_weights, then dL = P^T dW Us^T (strictly
 * lower), dUs = L^T P^T dW: dU its strictly upper part, dlog_s = diag * s. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"
#include "flowdp/glow.h"
#include "flowdp/rng.h"

double fdp_glow_logabsdet_inverse(const double *A, int n, double *inv, double *scratch) {
    double *LU = scratch;
    memcpy(LU, A, sizeof(double) * (size_t)n * n);
    int *piv = fdp_xmalloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) piv[i] = i;
    double ld = 0.0;
    int singular = 0;
    for (int k = 0; k < n && !singular; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(LU[(size_t)i * n + k]) > fabs(LU[(size_t)p * n + k])) p = i;
        if (!(LU[(size_t)p * n + k] != 0.0)) { /* zero or NaN pivot */
            singular = 1;
            break;
        }
        if (p != k) {
            for (int j = 0; j < n; j++) {
                double t = LU[(size_t)k * n + j];
                LU[(size_t)k * n + j] = LU[(size_t)p * n + j];
                LU[(size_t)p * n + j] = t;
            }
            int t = piv[k];
            piv[k] = piv[p];
            piv[p] = t;
        }
        double d = LU[(size_t)k * n + k];
        ld += log(fabs(d));
        for (int i = k + 1; i < n; i++) {
            double f = LU[(size_t)i * n + k] / d;
            LU[(size_t)i * n + k] = f;
            if (f == 0.0) continue;
            for (int j = k + 1; j < n; j++) LU[(size_t)i * n + j] -= f * LU[(size_t)k * n + j];
        }
    }
    if (singular) {
        if (inv)
            for (int64_t i = 0; i < (int64_t)n * n; i++) inv[i] = NAN;
        free(piv);
        return -INFINITY;
    }
    if (inv) {
        /* (Pi A) = L U: column j of A^-1 solves L U x = Pi e_j, (Pi e_j)[i] = [piv[i] == j] */
        double *col = fdp_xmalloc(sizeof(double) * (size_t)n);
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < n; i++) {
                double s = piv[i] == j ? 1.0 : 0.0;
                for (int k = 0; k < i; k++) s -= LU[(size_t)i * n + k] * col[k];
                col[i] = s;
            }
            for (int i = n - 1; i >= 0; i--) {
                double s = col[i];
                for (int k = i + 1; k < n; k++) s -= LU[(size_t)i * n + k] * col[k];
                col[i] = s / LU[(size_t)i * n + i];
            }
            for (int i = 0; i < n; i++) inv[(size_t)i * n + j] = col[i];
        }
        free(col);
    }
    free(piv);
    return ld;
}

void fdp_invconv_init(fdp_invconv *l, fdp_params *p, const char *prefix, int C, int lu) {
    char name[2 * FDP_NAME_MAX];
    int64_t sm[2] = {C, C}, sv[1] = {C};
    fdp_flow_layer base = l->base; /* set by fdp_flow_invconv_create */
    memset(l, 0, sizeof *l);
    l->base = base;
    l->C = C;
    l->lu = lu;
    l->p_w = l->b_p = l->p_l = l->p_u = l->p_logs = l->b_sign = -1;
    if (!lu) {
        snprintf(name, sizeof name, "%s.W", prefix);
        l->p_w = fdp_params_add(p, name, FDP_PARAM, 0, 2, sm);
    } else {
        /* openai's order: P, L, sign_S, log_S, U */
        snprintf(name, sizeof name, "%s.P", prefix);
        l->b_p = fdp_params_add(p, name, FDP_BUFFER, 0, 2, sm);
        snprintf(name, sizeof name, "%s.L", prefix);
        l->p_l = fdp_params_add(p, name, FDP_PARAM, 0, 2, sm);
        snprintf(name, sizeof name, "%s.sign_s", prefix);
        l->b_sign = fdp_params_add(p, name, FDP_BUFFER, 0, 1, sv);
        snprintf(name, sizeof name, "%s.log_s", prefix);
        l->p_logs = fdp_params_add(p, name, FDP_PARAM, 0, 1, sv);
        snprintf(name, sizeof name, "%s.U", prefix);
        l->p_u = fdp_params_add(p, name, FDP_PARAM, 0, 2, sm);
    }
    size_t cc = (size_t)C * C;
    l->w64 = fdp_xcalloc(cc, sizeof(double));
    l->winv64 = fdp_xcalloc(cc, sizeof(double));
    l->lo64 = fdp_xcalloc(cc, sizeof(double));
    l->up64 = fdp_xcalloc(cc, sizeof(double));
    l->p64 = fdp_xcalloc(cc, sizeof(double));
    l->scratch = fdp_xcalloc(3 * cc + 2 * (size_t)C, sizeof(double));
    l->hbuf = fdp_xcalloc(cc, sizeof(float));
}

void fdp_invconv_free(fdp_invconv *l) {
    free(l->w64);
    free(l->winv64);
    free(l->lo64);
    free(l->up64);
    free(l->p64);
    free(l->scratch);
    free(l->hbuf);
    l->w64 = l->winv64 = l->lo64 = l->up64 = l->p64 = l->scratch = NULL;
    l->hbuf = NULL;
}

/* ---- initialization: a random orthogonal W (and its P L U) ---------------------- */
void fdp_invconv_init_values(fdp_invconv *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    int C = l->C;
    int stream = l->lu ? l->p_l : l->p_w;
    double *Q = l->scratch, *A = l->scratch + (size_t)C * C;
    for (int64_t j = 0; j < (int64_t)C * C; j++)
        A[j] = fdp_philox_normal(seed, FDP_RNG_INIT, (uint64_t)stream, 0, (uint64_t)j);
    /* modified Gram-Schmidt on the columns of A: Q orthogonal */
    for (int j = 0; j < C; j++) {
        for (int i = 0; i < C; i++) Q[(size_t)i * C + j] = A[(size_t)i * C + j];
        for (int k = 0; k < j; k++) {
            double d = 0.0;
            for (int i = 0; i < C; i++) d += Q[(size_t)i * C + k] * Q[(size_t)i * C + j];
            for (int i = 0; i < C; i++) Q[(size_t)i * C + j] -= d * Q[(size_t)i * C + k];
        }
        double nrm = 0.0;
        for (int i = 0; i < C; i++) nrm += Q[(size_t)i * C + j] * Q[(size_t)i * C + j];
        nrm = sqrt(nrm);
        FDP_CHECK(nrm > 1e-8, "invconv init: degenerate Gaussian matrix (C = %d)", C);
        for (int i = 0; i < C; i++) Q[(size_t)i * C + j] /= nrm;
    }
    if (!l->lu) {
        float *w = hp + p->entries[l->p_w].offset;
        for (int64_t j = 0; j < (int64_t)C * C; j++) w[j] = (float)Q[j];
        return;
    }
    /* Q = P L U (scipy.linalg.lu): Gaussian elimination with partial pivoting, Pi Q = L U, P = Pi^T */
    double *M = A; /* reuse */
    memcpy(M, Q, sizeof(double) * (size_t)C * C);
    int *piv = fdp_xmalloc(sizeof(int) * (size_t)C);
    for (int i = 0; i < C; i++) piv[i] = i;
    for (int k = 0; k < C; k++) {
        int q = k;
        for (int i = k + 1; i < C; i++)
            if (fabs(M[(size_t)i * C + k]) > fabs(M[(size_t)q * C + k])) q = i;
        FDP_CHECK(M[(size_t)q * C + k] != 0.0, "invconv init: singular orthogonal matrix?");
        if (q != k) {
            for (int j = 0; j < C; j++) {
                double t = M[(size_t)k * C + j];
                M[(size_t)k * C + j] = M[(size_t)q * C + j];
                M[(size_t)q * C + j] = t;
            }
            int t = piv[k];
            piv[k] = piv[q];
            piv[q] = t;
        }
        for (int i = k + 1; i < C; i++) {
            double f = M[(size_t)i * C + k] / M[(size_t)k * C + k];
            M[(size_t)i * C + k] = f;
            for (int j = k + 1; j < C; j++) M[(size_t)i * C + j] -= f * M[(size_t)k * C + j];
        }
    }
    float *P = hb + p->entries[l->b_p].offset, *L = hp + p->entries[l->p_l].offset,
          *U = hp + p->entries[l->p_u].offset, *ls = hp + p->entries[l->p_logs].offset,
          *sg = hb + p->entries[l->b_sign].offset;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double v = M[(size_t)i * C + j];
            L[(size_t)i * C + j] = i > j ? (float)v : 0.0f;
            U[(size_t)i * C + j] = i < j ? (float)v : 0.0f;
            P[(size_t)i * C + j] = 0.0f;
        }
    for (int i = 0; i < C; i++) {
        P[(size_t)piv[i] * C + i] = 1.0f; /* (Pi Q)[i] = Q[piv[i]]: Q = Pi^T (L U) */
        double s = M[(size_t)i * C + i];
        sg[i] = s < 0.0 ? -1.0f : 1.0f;
        ls[i] = (float)log(fabs(s));
    }
    free(piv);
}

/* ---- W of this step: host doubles, log|det|, inverse ------------------------------ */
static void download(fdp_invconv *l, fdp_ctx *ctx, int index, double *dst, int64_t count) {
    ctx->be->to_host(ctx->be, l->hbuf, fdp_params_data(ctx->params, index), sizeof(float) * (size_t)count);
    for (int64_t i = 0; i < count; i++) dst[i] = l->hbuf[i];
}

static void upload_f32(fdp_invconv *l, fdp_ctx *ctx, const double *src, float *dst, int transpose, double alpha) {
    int C = l->C;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++)
            l->hbuf[(size_t)i * C + j] = (float)(alpha * (transpose ? src[(size_t)j * C + i] : src[(size_t)i * C + j]));
    ctx->be->from_host(ctx->be, dst, l->hbuf, sizeof(float) * (size_t)C * C);
}

static void prepare(fdp_invconv *l, fdp_ctx *ctx, int need_inverse) {
    int C = l->C;
    size_t cc = (size_t)C * C;
    if (!l->lu) {
        download(l, ctx, l->p_w, l->w64, (int64_t)cc);
        l->logdet = fdp_glow_logabsdet_inverse(l->w64, C, l->winv64, l->scratch);
        l->w = fdp_params_data(ctx->params, l->p_w);
        return;
    }
    double *Lr = l->scratch, *Ur = l->scratch + cc, *v = l->scratch + 2 * cc;
    download(l, ctx, l->p_l, Lr, (int64_t)cc);
    download(l, ctx, l->p_u, Ur, (int64_t)cc);
    download(l, ctx, l->b_p, l->p64, (int64_t)cc);
    download(l, ctx, l->p_logs, v, C);
    download(l, ctx, l->b_sign, v + C, C);
    double ld = 0.0;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            l->lo64[(size_t)i * C + j] = i > j ? Lr[(size_t)i * C + j] : i == j ? 1.0 : 0.0;
            l->up64[(size_t)i * C + j] = i < j ? Ur[(size_t)i * C + j] : i == j ? v[C + i] * exp(v[i]) : 0.0;
        }
    for (int i = 0; i < C; i++) ld += v[i];
    /* W = P (L Us) */
    double *LUs = Lr; /* the raw L is no longer needed */
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0.0;
            for (int k = 0; k <= i && k <= j; k++) s += l->lo64[(size_t)i * C + k] * l->up64[(size_t)k * C + j];
            LUs[(size_t)i * C + j] = s;
        }
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0.0;
            for (int k = 0; k < C; k++) s += l->p64[(size_t)i * C + k] * LUs[(size_t)k * C + j];
            l->w64[(size_t)i * C + j] = s;
        }
    l->logdet = ld;
    if (need_inverse) fdp_glow_logabsdet_inverse(l->w64, C, l->winv64, l->scratch);
    l->w = fdp_arena_alloc(ctx->arena, sizeof(float) * cc);
    upload_f32(l, ctx, l->w64, l->w, 0, 1.0);
}

static void add_logdet(fdp_ctx *ctx, double *sldj, int n, double v) {
    fdp_backend *be = ctx->be;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    double *d = fdp_arena_doubles(ctx->arena, 1);
    be->from_host(be, d, &v, sizeof v);
    fdp_glow_add_bcast_f64_args a = {d, sldj, 1.0};
    be->glow_add_bcast_f64(be, n, &a);
    fdp_arena_reset(ctx->arena, m);
}

fdp_tensor fdp_invconv_forward(fdp_invconv *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    FDP_CHECK(x.c == l->C, "invconv: %d channels given to a layer of %d", x.c, l->C);
    prepare(l, ctx, 0);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    fdp_conv_shape s = {x.n, l->C, l->C, x.h, x.w, 1};
    ctx->be->conv_forward(ctx->be, s, x.data, l->w, NULL, y.data, 0);
    if (sldj) add_logdet(ctx, sldj, x.n, (double)x.h * (double)x.w * l->logdet);
    l->x = x;
    return y;
}

fdp_tensor fdp_invconv_inverse(fdp_invconv *l, fdp_ctx *ctx, fdp_tensor y) {
    FDP_CHECK(y.c == l->C, "invconv: %d channels given to a layer of %d", y.c, l->C);
    fdp_tensor x = fdp_arena_tensor(ctx->arena, y.n, y.c, y.h, y.w);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    prepare(l, ctx, 1);
    float *winv = fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)l->C * l->C);
    upload_f32(l, ctx, l->winv64, winv, 0, 1.0);
    fdp_conv_shape s = {y.n, l->C, l->C, y.h, y.w, 1};
    ctx->be->conv_forward(ctx->be, s, y.data, winv, NULL, x.data, 0);
    fdp_arena_reset(ctx->arena, m);
    return x;
}

fdp_tensor fdp_invconv_backward(fdp_invconv *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    fdp_backend *be = ctx->be;
    fdp_tensor x = l->x;
    FDP_CHECK(x.data && fdp_same_shape(x, dy), "invconv: backward without a matching forward");
    int C = l->C;
    size_t cc = (size_t)C * C;
    fdp_conv_shape s = {x.n, C, C, x.h, x.w, 1};
    fdp_tensor dx = fdp_arena_tensor(ctx->arena, x.n, x.c, x.h, x.w);
    be->conv_backward_data(be, s, dy.data, l->w, dx.data, 0);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    /* sum over the batch of d loss / d log-det, times H*W: the log-det's weight */
    double *d = fdp_arena_doubles(ctx->arena, 1), sd = 0.0;
    if (dldj) {
        be->reduce_rows(be, dldj, NULL, 1, 1, x.n, d);
        be->to_host(be, &sd, d, sizeof sd);
    }
    double hw_sd = (double)x.h * (double)x.w * sd;
    if (!l->lu) {
        /* dW = conv part + H*W*sum(dldj) * W^-T */
        float *gw = fdp_params_grad(ctx->params, l->p_w);
        be->conv_backward_weights(be, s, x.data, dy.data, gw, NULL);
        float *t = fdp_arena_alloc(ctx->arena, sizeof(float) * cc);
        upload_f32(l, ctx, l->winv64, t, 1, hw_sd);
        fdp_axpby_args a = {t, gw, 1.0f, 1.0f};
        be->axpby(be, (int64_t)cc, &a);
    } else {
        float *g = fdp_arena_alloc(ctx->arena, sizeof(float) * cc);
        be->conv_backward_weights(be, s, x.data, dy.data, g, NULL);
        double *G = l->scratch, *dM = l->scratch + cc, *T = l->scratch + 2 * cc;
        be->to_host(be, l->hbuf, g, sizeof(float) * cc);
        for (size_t i = 0; i < cc; i++) G[i] = l->hbuf[i];
        /* dM = P^T G */
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                double v = 0.0;
                for (int k = 0; k < C; k++) v += l->p64[(size_t)k * C + i] * G[(size_t)k * C + j];
                dM[(size_t)i * C + j] = v;
            }
        /* dL = dM Us^T, strictly lower */
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                double v = 0.0;
                if (i > j)
                    for (int k = 0; k < C; k++) v += dM[(size_t)i * C + k] * l->up64[(size_t)j * C + k];
                T[(size_t)i * C + j] = v;
            }
        upload_f32(l, ctx, T, fdp_params_grad(ctx->params, l->p_l), 0, 1.0);
        /* dUs = L^T dM: strictly upper -> dU, diagonal * s -> dlog_s */
        double *dls = G; /* G is no longer needed */
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                double v = 0.0;
                if (i <= j)
                    for (int k = 0; k < C; k++) v += l->lo64[(size_t)k * C + i] * dM[(size_t)k * C + j];
                if (i == j) {
                    dls[i] = v * l->up64[(size_t)i * C + i] + hw_sd;
                    v = 0.0;
                }
                T[(size_t)i * C + j] = v;
            }
        upload_f32(l, ctx, T, fdp_params_grad(ctx->params, l->p_u), 0, 1.0);
        for (int i = 0; i < C; i++) l->hbuf[i] = (float)dls[i];
        be->from_host(be, fdp_params_grad(ctx->params, l->p_logs), l->hbuf, sizeof(float) * (size_t)C);
    }
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

/* ---- as a flow layer (flow.h) ---- */
static fdp_tensor ic_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    return fdp_invconv_forward((fdp_invconv *)l, ctx, x, sldj);
}
static fdp_tensor ic_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    return fdp_invconv_inverse((fdp_invconv *)l, ctx, y);
}
static fdp_tensor ic_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    return fdp_invconv_backward((fdp_invconv *)l, ctx, dy, dldj);
}
static void ic_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    fdp_invconv_init_values((fdp_invconv *)l, p, hp, hb, seed);
}
static void ic_destroy(fdp_flow_layer *l) { fdp_invconv_free((fdp_invconv *)l); }
static const fdp_flow_ops INVCONV_OPS = {.kind = "invconv", .forward = ic_forward, .inverse = ic_inverse,
                                         .backward = ic_backward, .init_values = ic_init_values,
                                         .destroy = ic_destroy};

fdp_flow_layer *fdp_flow_invconv_create(fdp_params *p, const char *prefix, int C, int lu) {
    fdp_invconv *l = fdp_xcalloc(1, sizeof *l);
    fdp_flow_begin(&l->base, &INVCONV_OPS, p);
    fdp_invconv_init(l, p, prefix, C, lu);
    fdp_flow_end(&l->base, p);
    return &l->base;
}

/* variant 0: plain, 1: LU */
static fdp_flow_layer *invconv_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    *c = 4;
    *h = 4;
    *w = 4;
    return fdp_flow_invconv_create(p, "layer", 4, variant);
}
const fdp_flow_kind fdp_flow_kind_invconv = {"invconv", 2, invconv_example, 0};
