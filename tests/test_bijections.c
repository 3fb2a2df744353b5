/* test_bijections.c — invariant 1 of docs/ARCHITECTURE.md: every bijection is tested three
 * ways, on tiny inputs (at most 64 dimensions per Jacobian):
 *   1. inverse(forward(x)) == x;
 *   2. the per-sample log-det that forward adds to sldj equals log|det J| of
 *      the Jacobian built by central finite differences (FD) of the float32
 *      forward, the determinant taken by LU with partial pivoting in double;
 *   3. backward equals FD of the scalar L = sum(w * y) + sum_n c_n * ldj_n
 *      (so dy = w, dldj = c), for the input gradient and the parameter
 *      gradients.
 * Here: squeeze (plain and alt_order) against the notebook's definition, bit
 * for bit, channel slice + cat, the dequantize + logit preprocessing, and the
 * whole RealNVP flow; plus the shapes fdp_realnvp_build must refuse. Each
 * layer on its own (the affine couplings, squeeze's log-det and backward) is
 * checked by tests/test_flow_layers.c through the flow-layer registry. Every
 * check prints its worst error and its tolerance.
 *
 * Choices (all measured; the numbers quoted are worst cases over 31 random
 * draws of inputs and parameters):
 *  - FD step h = 1e-2 (inputs and parameters of the flow). The
 *    perturbed value is x +- h rounded to float, and the quotient divides by
 *    the difference actually applied. The forward's float32 round-off (~1e-7
 *    relative per layer, ~1e-6 absolute after the ten couplings of the flow)
 *    divided by 2h stays ~1e-5..1e-4; the O(h^2) truncation is ~1e-5. A fixed
 *    1e-3 gave 3-10x worse agreement (round-off), 4e-2 more kinks.
 *  - Kinks: the s/t networks are smooth between the kinks of their ReLUs. A
 *    difference across a kink is off by up to half a slope jump whatever h;
 *    before this was handled it produced every disagreement seen (up to 0.1
 *    relative). So each difference also records which saved ReLU outputs are
 *    > 0 and only uses points with the pattern of x, shrinking the step or
 *    going one-sided (fu_fd): the derivative of x's smooth piece, which is what
 *    backward computes. Jacobian columns go down to h/64; gradient elements
 *    that need a step below h/8 (round-off then exceeds the tolerance's
 *    scale) are left out and counted (a sampled tensor tries another element):
 *    at most 20% for the flow in training mode, whose parameters each move
 *    every ReLU downstream (observed <= 12%).
 *  - Evaluation mode (BatchNorm running statistics, given non-trivial values)
 *    makes samples independent: the whole-batch Jacobian is block diagonal
 *    (checked) and each diagonal block gives that sample's log-det. Training
 *    mode (batch statistics) couples the samples; the whole-batch Jacobian is
 *    block triangular and its log-det is the sum of the per-sample log-dets.
 *    Every forward restores the BatchNorm buffers first, so all evaluations
 *    see the same state.
 *  - Besides the FD Jacobian, the Jacobian is assembled row by row from
 *    backward (dy = e_i, dldj = 0, float32): its log-det must match sldj
 *    (1e-4; observed <= 3.5e-6) and it must match the FD Jacobian entry-wise
 *    (normwise 1e-2; observed <= 2.6e-3).
 *  - Log-det tolerances: 1e-3 absolute (observed <= 3e-5 for couplings,
 *    <= 2.4e-4 for the flow per sample); 1e-2 for the flow's whole-batch
 *    training-mode Jacobian, whose 64 columns all move every BatchNorm of ten
 *    couplings (observed <= 4.5e-3; with the Rescale weights set to 0, where
 *    the log-det is exactly 0, FD still gave up to 5e-3).
 *  - The logit map u -> y has a small derivative (dq/du = 1/256) and its
 *    round-off comes from p = (x*255 + u)/256 (the ulp of 255 is 1.5e-5 in
 *    u), so it takes large steps in u; its curvature near p = 0.05 / 0.95
 *    (pixels 0 and 255) makes the O(h^2) term dominate from h = 0.25 on
 *    (log-det off by 8.8e-4 at h = 0.25, 4e-3 at h = 1), so it uses
 *    Richardson extrapolation of the steps 1 and 1/2 (1.2e-4).
 *  - Gradients: normwise error max|a-b| / max|b| over the input gradient, over
 *    all checked parameter elements, and per parameter tensor with the
 *    tensor's scale floored at a fraction of the largest parameter gradient
 *    (several true gradients are exactly zero: conv biases in front of a
 *    training-mode BatchNorm, the Rescale weight_v): 2% for a coupling (every
 *    element checked; observed <= 5.8e-3), 10% for the flow (1-2 elements per
 *    tensor; observed <= 5.6e-3). Other gradient errors observed: input
 *    <= 2.4e-3, all parameters together <= 1.7e-3. Gradients are pre-filled
 *    with NaN, so a gradient backward fails to write is caught. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"
#include "flowdp/nn.h"
#include "flowdp/condnet.h"
#include "flowdp/realnvp.h"
#include "testutil.h"

#define H_FD 1e-2                  /* FD step for the flow (inputs and parameters) */
#define H_FD_LOGIT 1.0             /* FD steps 1 and 1/2 in the noise u for the logit map (Richardson) */
#define TOL_INV_FLOW 1e-4          /* max abs, the whole flow */
#define TOL_LOGDET 1e-3            /* abs, FD log-dets of order 1-10 */
#define TOL_LOGDET_FLOW_TRAIN 1e-2 /* abs, FD log-det of the whole flow's 64x64 training-mode Jacobian */
#define TOL_LOGDET_FLOW_BLOCKS 2e-3 /* abs, FD log-det per sample, eval, of the flow with residual blocks */
#define TOL_LOGDET_BWD 1e-4        /* abs, log-det of the Jacobian assembled (in float32) from backward */
#define TOL_GRAD 1e-2              /* normwise */
#define FD_LEVELS 7                /* FD steps h, h/2, ..., h/64 for Jacobians */
#define FD_GRAD_LEVELS 4           /* FD steps h, ..., h/8 for gradients (smaller ones: left out) */

/* ======================================================================== */
/* numerics helpers                                                          */
/* ======================================================================== */

/* a map from nin floats to nout floats (and nldj per-sample log-dets, may be 0) */
typedef void (*map_fn)(void *st, const float *x, float *y, double *ldj);
typedef struct fd_map {
    map_fn f;
    void *st;
    int nin, nout, nldj;
} fd_map;

/* J (nout x nin, row-major) by central differences with step h (for smooth
 * maps); the divisor is the difference of the float inputs actually applied */
static void fd_jacobian(const fd_map *m, const float *x, double h, double *J) {
    float *xp = malloc(sizeof(float) * (size_t)m->nin);
    float *yp = malloc(sizeof(float) * (size_t)m->nout), *ym = malloc(sizeof(float) * (size_t)m->nout);
    double ldj[64];
    assert_true(m->nldj <= 64);
    memcpy(xp, x, sizeof(float) * (size_t)m->nin);
    for (int j = 0; j < m->nin; j++) {
        float a = (float)((double)x[j] + h), b = (float)((double)x[j] - h);
        double dx = (double)a - (double)b;
        xp[j] = a;
        m->f(m->st, xp, yp, ldj);
        xp[j] = b;
        m->f(m->st, xp, ym, ldj);
        xp[j] = x[j];
        for (int i = 0; i < m->nout; i++) J[(size_t)i * m->nin + j] = ((double)yp[i] - (double)ym[i]) / dx;
    }
    free(xp);
    free(yp);
    free(ym);
}

/* log|det| of the diagonal block [o, o+D) x [o, o+D) of the N x N matrix J */
static double block_logdet(const double *J, int N, int o, int D) {
    double *B = malloc(sizeof(double) * (size_t)D * D);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) B[(size_t)i * D + j] = J[(size_t)(o + i) * N + o + j];
    double r = tu_lu_logabsdet(B, D);
    free(B);
    return r;
}

/* largest |entry| of J outside the n diagonal D x D blocks */
static double offblock_max(const double *J, int n, int D) {
    int N = n * D;
    double m = 0.0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i / D != j / D) m = fmax(m, fabs(J[(size_t)i * N + j]));
    return m;
}

/* Random parameters far from the identity map but well conditioned: BatchNorm
 * weights near 1, biases and running statistics small but non-zero, weight-norm
 * directions random with row norms g in [0.5, 1], Rescale weights g in
 * [rs_lo, rs_hi] with a random sign (|v| >= 0.3, away from the kink of v/|v|). */
static void randomize_params(fdp_params *p, uint64_t seed, double rs_lo, double rs_hi) {
    uint64_t s = seed;
    for (int i = 0; i < p->count; i++) {
        const fdp_param_entry *e = &p->entries[i];
        float *d = fdp_params_data(p, i);
        for (int64_t j = 0; j < e->numel; j++) {
            double v;
            if (e->kind == FDP_BUFFER) {
                if (tu_ends_with(e->name, "running_mean"))
                    v = tu_uniform(&s, -0.3, 0.3);
                else if (tu_ends_with(e->name, "running_var"))
                    v = tu_uniform(&s, 0.5, 2.0);
                else
                    v = d[j]; /* counters, data_constraint: keep */
            } else if (tu_ends_with(e->name, "norm.weight")) {
                v = tu_uniform(&s, 0.8, 1.2);
            } else if (tu_ends_with(e->name, "norm.bias")) {
                v = tu_uniform(&s, -0.2, 0.2);
            } else if (tu_ends_with(e->name, "rescale.weight_g")) {
                v = tu_uniform(&s, rs_lo, rs_hi);
            } else if (tu_ends_with(e->name, "rescale.weight_v")) {
                v = tu_uniform(&s, 0.3, 1.0) * (tu_uniform(&s, 0, 1) < 0.5 ? -1.0 : 1.0);
            } else if (tu_ends_with(e->name, "weight_g")) {
                v = tu_uniform(&s, 0.5, 1.0);
            } else if (tu_ends_with(e->name, "weight_v")) {
                v = tu_uniform(&s, -1.0, 1.0);
            } else if (tu_ends_with(e->name, "bias")) {
                v = tu_uniform(&s, -0.2, 0.2);
            } else {
                fail_msg("randomize_params: no rule for %s", e->name);
                v = 0.0;
            }
            d[j] = (float)v;
        }
    }
}

/* ======================================================================== */
/* a flow (coupling layer or the whole RealNVP) under test                  */
/* ======================================================================== */
/* The s/t networks are piecewise smooth: smooth (BatchNorm, convolutions,
 * tanh, exp) between the kinks of their ReLUs. A central difference whose
 * interval crosses a kink mixes two slopes, an error of up to half the slope
 * jump whatever h. So every difference here also records the ReLU pattern
 * (which saved ReLU outputs are > 0) at the points it evaluates, and only
 * uses points where the pattern is the one at x (see fu_fd). */
typedef struct flow_ut {
    const char *name;
    fdp_backend *be;
    fdp_arena *arena;
    fdp_ctx ctx;
    fdp_params *p;
    int n, c, h, w;   /* input = output shape */
    float *buffers0;  /* (p->n_buffers) restored before every forward */
    void *layer;
    void (*prepare)(void *layer, fdp_ctx *ctx);
    fdp_tensor (*forward)(void *layer, fdp_ctx *ctx, fdp_tensor x, double *sldj);
    fdp_tensor (*inverse)(void *layer, fdp_ctx *ctx, fdp_tensor y);
    fdp_tensor (*backward)(void *layer, fdp_ctx *ctx, fdp_tensor dy, const float *dldj);
    /* writes the ReLU pattern of the last forward into bits (if not NULL); returns its length */
    int64_t (*relu_pattern)(void *layer, uint8_t *bits);
    /* finite-difference bookkeeping */
    int64_t nbits;
    uint8_t *base, *bits;       /* (nbits) pattern at the unperturbed point; scratch */
    float *y0;                  /* (N) outputs at x */
    double ldj0[64];
    /* the points of one derivative: level -1..FD_LEVELS-1 (step h*2^-level), side + / - */
    double lv_h;
    float lv_x[2 * (FD_LEVELS + 1)], lv_y[2 * (FD_LEVELS + 1)][64];
    double lv_l[2 * (FD_LEVELS + 1)][64];
    int lv_done[2 * (FD_LEVELS + 1)], lv_clean[2 * (FD_LEVELS + 1)];
    int64_t n_fd, n_refined, n_onesided, n_unresolved;
} flow_ut;

static int fu_D(const flow_ut *f) { return f->c * f->h * f->w; }
static int fu_N(const flow_ut *f) { return f->n * fu_D(f); }

static void fu_restore(flow_ut *f) {
    if (f->p->n_buffers) memcpy(f->p->buffers, f->buffers0, sizeof(float) * (size_t)f->p->n_buffers);
}

/* one forward from a clean state (buffers restored, arena reset, weights prepared) */
static fdp_tensor fu_forward(flow_ut *f, const float *x, double **sldj_out) {
    fu_restore(f);
    fdp_arena_reset_all(f->arena);
    f->prepare(f->layer, &f->ctx);
    fdp_tensor xt = fdp_arena_tensor(f->arena, f->n, f->c, f->h, f->w);
    memcpy(xt.data, x, sizeof(float) * (size_t)fu_N(f));
    double *sldj = fdp_arena_doubles(f->arena, f->n);
    for (int i = 0; i < f->n; i++) sldj[i] = 0.0;
    fdp_tensor y = f->forward(f->layer, &f->ctx, xt, sldj);
    assert_true(fdp_same_shape(xt, y));
    *sldj_out = sldj;
    return y;
}

/* forward, outputs copied out; the ReLU pattern into bits when bits != NULL */
static void fu_eval(flow_ut *f, const float *x, float *y, double *ldj, uint8_t *bits) {
    double *sldj;
    fdp_tensor yt = fu_forward(f, x, &sldj);
    memcpy(y, yt.data, sizeof(float) * (size_t)fu_N(f));
    memcpy(ldj, sldj, sizeof(double) * (size_t)f->n);
    if (bits) f->relu_pattern(f->layer, bits);
}

/* remember the outputs and the ReLU pattern at x (with the current parameters) */
static void fu_set_base(flow_ut *f, const float *x) {
    fu_eval(f, x, f->y0, f->ldj0, NULL);
    int64_t nb = f->relu_pattern(f->layer, NULL);
    if (nb != f->nbits) {
        free(f->base);
        free(f->bits);
        f->nbits = nb;
        f->base = malloc((size_t)(nb ? nb : 1));
        f->bits = malloc((size_t)(nb ? nb : 1));
    }
    f->relu_pattern(f->layer, f->base);
}

/* Derivative of (y, ldj) w.r.t. the float *target (an element of the input x
 * or a parameter; fu_set_base(x) called before), kinks avoided. Candidates,
 * in order of increasing round-off: the central difference at s = h, h/2,
 * h/4, ..., h/64, each used only when x + s and x - s keep the ReLU pattern
 * of x; interleaved with the one-sided three-point difference at 2s (points
 * x, x +- 2s, x +- 4s on a side that keeps the pattern: its round-off is that
 * of a central difference at ~s/2). Both are derivatives of the smooth piece
 * x lies in, which is what backward differentiates. dy (N) and dldj (n)
 * receive the derivatives. Returns 0 when no candidate stayed in x's piece
 * ("unresolved"); dy, dldj then hold the two-point difference towards a side
 * that kept the pattern at the smallest step (else the central one): a poor
 * estimate, counted, and left out of gradient comparisons. */
static void fu_fd_point(flow_ut *f, const float *x, float *target, float v, int level, int side) {
    int k = (level + 1) * 2 + side;
    if (f->lv_done[k]) return;
    double s = f->lv_h * ldexp(1.0, -level) * (side ? -1.0 : 1.0);
    f->lv_x[k] = (float)((double)v + s);
    *target = f->lv_x[k];
    fu_eval(f, x, f->lv_y[k], f->lv_l[k], f->bits);
    *target = v;
    f->lv_clean[k] = memcmp(f->bits, f->base, (size_t)f->nbits) == 0;
    f->lv_done[k] = 1;
}

static int fu_fd(flow_ut *f, const float *x, float *target, double h, int levels, double *dy, double *dldj) {
    float v = *target;
    int N = fu_N(f);
    f->n_fd++;
    f->lv_h = h;
    memset(f->lv_done, 0, sizeof f->lv_done);
#define LV(level, side) (((level) + 1) * 2 + (side))
    for (int k = 0; k <= levels; k++) {
        if (k < levels) {
            fu_fd_point(f, x, target, v, k, 0);
            fu_fd_point(f, x, target, v, k, 1);
            int p = LV(k, 0), m = LV(k, 1);
            if (f->lv_clean[p] && f->lv_clean[m]) {
                double d = (double)f->lv_x[p] - (double)f->lv_x[m];
                for (int i = 0; i < N; i++) dy[i] = ((double)f->lv_y[p][i] - (double)f->lv_y[m][i]) / d;
                for (int i = 0; i < f->n; i++) dldj[i] = (f->lv_l[p][i] - f->lv_l[m][i]) / d;
                if (k > 0) f->n_refined++;
                return 1;
            }
        }
        if (k == 0) continue;
        /* one-sided at level k-1: points x, x +- s_{k-1}, x +- 2 s_{k-1} (= level k-2) */
        for (int side = 0; side < 2; side++) {
            int i1 = LV(k - 1, side);
            if (!f->lv_clean[i1]) continue;
            fu_fd_point(f, x, target, v, k - 2, side);
            int i2 = LV(k - 2, side);
            if (!f->lv_clean[i2]) continue;
            double x0 = v, x1 = f->lv_x[i1], x2 = f->lv_x[i2];
            double w0 = (2.0 * x0 - x1 - x2) / ((x0 - x1) * (x0 - x2)), w1 = (x0 - x2) / ((x1 - x0) * (x1 - x2)),
                   w2 = (x0 - x1) / ((x2 - x0) * (x2 - x1));
            for (int i = 0; i < N; i++) dy[i] = w0 * f->y0[i] + w1 * f->lv_y[i1][i] + w2 * f->lv_y[i2][i];
            for (int i = 0; i < f->n; i++) dldj[i] = w0 * f->ldj0[i] + w1 * f->lv_l[i1][i] + w2 * f->lv_l[i2][i];
            f->n_refined++;
            f->n_onesided++;
            return 1;
        }
    }
    /* fallback at the smallest step */
    int p = LV(levels - 1, 0), m = LV(levels - 1, 1);
    int cp = f->lv_clean[p], cm = f->lv_clean[m];
    const float *y1 = cp ? f->lv_y[p] : cm ? f->lv_y[m] : f->lv_y[p], *y2 = cp || cm ? f->y0 : f->lv_y[m];
    const double *l1 = cp ? f->lv_l[p] : cm ? f->lv_l[m] : f->lv_l[p], *l2 = cp || cm ? f->ldj0 : f->lv_l[m];
    double d = cp ? (double)f->lv_x[p] - v : cm ? (double)f->lv_x[m] - v : (double)f->lv_x[p] - (double)f->lv_x[m];
    for (int i = 0; i < N; i++) dy[i] = ((double)y1[i] - (double)y2[i]) / d;
    for (int i = 0; i < f->n; i++) dldj[i] = (l1[i] - l2[i]) / d;
#undef LV
    f->n_refined++;
    f->n_unresolved++;
    return 0;
}

static void fu_fd_reset(flow_ut *f) { f->n_fd = f->n_refined = f->n_onesided = f->n_unresolved = 0; }

/* max |inverse(forward(x)) - x| in the current mode */
static double fu_inverse_err(flow_ut *f, const float *x) {
    double *sldj;
    fdp_tensor y = fu_forward(f, x, &sldj);
    fdp_tensor xr = f->inverse(f->layer, &f->ctx, y);
    assert_true(fdp_same_shape(xr, y));
    return tu_max_abs_diff(xr.data, x, fu_N(f));
}

/* Log-det checks on the whole-batch Jacobian (N = n*D <= 64), built twice:
 * by finite differences (J_fd, the reference) and row by row from backward
 * (row i = dx of backward(dy = e_i, dldj = 0): J_bwd, a cross-check free of
 * FD noise). Evaluation mode: every sample's diagonal block against its sldj,
 * and the off-diagonal blocks must vanish. Training mode: the whole
 * determinant against the sum of the sldj. */
typedef struct logdet_report {
    double fd_err;    /* max |log|det J_fd| - ldj| (per sample in eval, whole batch in training) */
    double bwd_err;   /* the same with J_bwd */
    double jac_diff;  /* max|J_fd - J_bwd| / max|J_bwd| */
    double off;       /* eval: largest entry outside the diagonal blocks, of either Jacobian */
    double ldj_max;   /* max |ldj| (eval), |sum of ldj| (training) */
    int64_t refined, onesided, unresolved;
} logdet_report;

static double logdet_vs(const flow_ut *f, const double *J, const double *ldj, double *ldj_max) {
    int N = fu_N(f), D = fu_D(f);
    double err = 0.0, sum = 0.0;
    *ldj_max = 0.0;
    if (!f->ctx.training) {
        for (int s = 0; s < f->n; s++) {
            err = fmax(err, fabs(block_logdet(J, N, s * D, D) - ldj[s]));
            *ldj_max = fmax(*ldj_max, fabs(ldj[s]));
        }
        return err;
    }
    double *T = malloc(sizeof(double) * (size_t)N * N);
    memcpy(T, J, sizeof(double) * (size_t)N * N);
    for (int s = 0; s < f->n; s++) sum += ldj[s];
    err = fabs(tu_lu_logabsdet(T, N) - sum);
    *ldj_max = fabs(sum);
    free(T);
    return err;
}

static void fu_logdet_check(flow_ut *f, const float *x, double h, int with_fd, logdet_report *r) {
    int N = fu_N(f), D = fu_D(f);
    assert_true(N <= 64 && f->n <= 64);
    double *J = malloc(sizeof(double) * (size_t)N * N), *Jb = malloc(sizeof(double) * (size_t)N * N);
    double *col = malloc(sizeof(double) * (size_t)N), dl[64], ldj[64];
    float *xp = malloc(sizeof(float) * (size_t)N);
    fu_fd_reset(f);
    fu_set_base(f, x);
    memcpy(ldj, f->ldj0, sizeof(double) * (size_t)f->n);
    memcpy(xp, x, sizeof(float) * (size_t)N);
    for (int j = 0; j < N && with_fd; j++) {
        fu_fd(f, xp, &xp[j], h, FD_LEVELS, col, dl);
        for (int i = 0; i < N; i++) J[(size_t)i * N + j] = col[i];
    }
    r->refined = f->n_refined;
    r->onesided = f->n_onesided;
    r->unresolved = f->n_unresolved;
    for (int i = 0; i < N; i++) {
        double *sl;
        fu_forward(f, x, &sl);
        fdp_tensor dyt = fdp_arena_tensor(f->arena, f->n, f->c, f->h, f->w);
        memset(dyt.data, 0, sizeof(float) * (size_t)N);
        dyt.data[i] = 1.0f;
        float *dl0 = fdp_arena_alloc(f->arena, sizeof(float) * (size_t)f->n);
        memset(dl0, 0, sizeof(float) * (size_t)f->n);
        fdp_tensor dxt = f->backward(f->layer, &f->ctx, dyt, dl0);
        for (int j = 0; j < N; j++) Jb[(size_t)i * N + j] = dxt.data[j];
    }
    if (!with_fd) memcpy(J, Jb, sizeof(double) * (size_t)N * N); /* reported as not done */
    double dmax = 0.0, bmax = 0.0;
    for (int64_t i = 0; i < (int64_t)N * N; i++) {
        double d = fabs(J[i] - Jb[i]);
        dmax = isnan(d) ? INFINITY : fmax(dmax, d);
        bmax = fmax(bmax, fabs(Jb[i]));
    }
    r->jac_diff = !with_fd ? NAN : bmax > 0.0 ? dmax / bmax : dmax;
    r->fd_err = !with_fd ? NAN : logdet_vs(f, J, ldj, &r->ldj_max);
    r->bwd_err = logdet_vs(f, Jb, ldj, &r->ldj_max);
    r->off = f->ctx.training ? 0.0 : fmax(offblock_max(J, f->n, D), offblock_max(Jb, f->n, D));
    free(J);
    free(Jb);
    free(col);
    free(xp);
}

typedef struct grad_report {
    double input_err;       /* normwise, input gradient */
    double param_err;       /* normwise over all checked parameter elements together */
    double entry_err;       /* worst per-tensor normwise (scale floored) */
    char worst_entry[FDP_NAME_MAX];
    int64_t checked, entries, skipped;
    int64_t uncovered;      /* parameter tensors without one resolved element */
    double gmax;            /* largest |FD parameter gradient| */
} grad_report;

/* dL of L = sum(w*y) + sum(c*ldj) from the derivatives of y and ldj */
static double dot_loss(const flow_ut *f, const double *dy, const double *dldj, const float *w, const float *c) {
    double s = 0.0;
    for (int i = 0; i < fu_N(f); i++) s += (double)w[i] * dy[i];
    for (int i = 0; i < f->n; i++) s += (double)c[i] * dldj[i];
    return s;
}

/* max|a-b| over the elements with ok[i], divided by max(max|b| over them, floor) */
static double masked_normwise(const float *a, const float *b, const uint8_t *ok, int64_t n, double floor) {
    double m = 0.0, d = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!ok[i]) continue;
        m = fmax(m, fabs((double)b[i]));
        double e = fabs((double)a[i] - (double)b[i]);
        d = isnan(e) ? INFINITY : fmax(d, e);
    }
    m = fmax(m, floor);
    return m > 0.0 ? d / m : d;
}

/* Backward against FD of L = sum(w*y) + sum c*ldj: the input gradient (all
 * elements) and, for every parameter tensor, min(numel, per_entry) randomly
 * chosen elements (all of them when per_entry <= 0). */
static void fu_check_backward(flow_ut *f, const float *x, double h, int per_entry, double floor, uint64_t seed,
                              grad_report *r) {
    fdp_params *p = f->p;
    int N = fu_N(f);
    float *w = tu_rand_floats(N, seed, -1.0f, 1.0f), *c = tu_rand_floats(f->n, seed + 1, -1.0f, 1.0f);
    float *dx = malloc(sizeof(float) * (size_t)N), *g = malloc(sizeof(float) * (size_t)p->n_params);
    double *dy = malloc(sizeof(double) * (size_t)N), dl[64];

    /* analytic: grads pre-filled with NaN, so an entry backward fails to write shows up */
    for (int64_t i = 0; i < p->n_params; i++) p->grads[i] = NAN;
    double *sldj;
    fu_forward(f, x, &sldj);
    fdp_tensor dyt = fdp_arena_tensor(f->arena, f->n, f->c, f->h, f->w);
    memcpy(dyt.data, w, sizeof(float) * (size_t)N);
    float *dldj = fdp_arena_alloc(f->arena, sizeof(float) * (size_t)f->n);
    memcpy(dldj, c, sizeof(float) * (size_t)f->n);
    fdp_tensor dxt = f->backward(f->layer, &f->ctx, dyt, dldj);
    memcpy(dx, dxt.data, sizeof(float) * (size_t)N);
    memcpy(g, p->grads, sizeof(float) * (size_t)p->n_params);

    /* input gradient */
    fu_set_base(f, x);
    float *xp = malloc(sizeof(float) * (size_t)N), *fdx = malloc(sizeof(float) * (size_t)N);
    uint8_t *okx = malloc((size_t)N);
    memcpy(xp, x, sizeof(float) * (size_t)N);
    r->skipped = 0;
    for (int j = 0; j < N; j++) {
        okx[j] = (uint8_t)fu_fd(f, xp, &xp[j], h, FD_GRAD_LEVELS, dy, dl);
        r->skipped += !okx[j];
        fdx[j] = (float)dot_loss(f, dy, dl, w, c);
    }
    r->input_err = masked_normwise(dx, fdx, okx, N, 0.0);

    /* parameter gradients: FD of the chosen elements (a sampled tensor replaces
     * an unresolved element by another one, up to 4 times), then per-tensor errors */
    int64_t total = 0, np = p->n_params ? p->n_params : 1;
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)np);
    float *fdg = malloc(sizeof(float) * (size_t)np), *ag = malloc(sizeof(float) * (size_t)np);
    uint8_t *okg = malloc((size_t)np);
    int *ent = malloc(sizeof(int) * (size_t)(p->count ? p->count : 1));
    int64_t *ent_start = malloc(sizeof(int64_t) * (size_t)(p->count + 1));
    uint64_t s = seed + 2;
    int ne = 0;
    r->uncovered = 0;
    for (int e = 0; e < p->count; e++) {
        const fdp_param_entry *pe = &p->entries[e];
        if (pe->kind != FDP_PARAM) continue;
        ent[ne] = e;
        ent_start[ne++] = total;
        int64_t want = per_entry <= 0 || pe->numel <= per_entry ? pe->numel : per_entry, got = 0, tried = 0;
        int sampled = want < pe->numel;
        while (got < want && tried < (sampled ? want + 4 : want) && tried < pe->numel) {
            int64_t j = pe->offset + tried;
            if (sampled) /* a random element not tried yet */
                for (int dup = 1; dup;) {
                    j = pe->offset + (int64_t)tu_uniform(&s, 0.0, (double)pe->numel);
                    dup = 0;
                    for (int64_t q = ent_start[ne - 1]; q < total; q++) dup |= idx[q] == j;
                }
            tried++;
            idx[total] = j;
            okg[total] = (uint8_t)fu_fd(f, x, &p->params[j], h, FD_GRAD_LEVELS, dy, dl);
            fdg[total] = (float)dot_loss(f, dy, dl, w, c);
            ag[total] = g[j];
            got += okg[total];
            r->skipped += !okg[total];
            total++;
        }
        r->uncovered += got == 0;
    }
    ent_start[ne] = total;
    double G = 0.0;
    for (int64_t q = 0; q < total; q++)
        if (okg[q]) G = fmax(G, fabs((double)fdg[q]));
    r->gmax = G;
    r->param_err = masked_normwise(ag, fdg, okg, total, 0.0);
    r->entry_err = 0.0;
    r->worst_entry[0] = 0;
    for (int k = 0; k < ne; k++) {
        int64_t o = ent_start[k], len = ent_start[k + 1] - o;
        double e = masked_normwise(ag + o, fdg + o, okg + o, len, floor * G);
        if (!(e <= r->entry_err)) {
            r->entry_err = isnan(e) ? INFINITY : e;
            snprintf(r->worst_entry, sizeof r->worst_entry, "%s", p->entries[ent[k]].name);
        }
    }
    /* an unwritten gradient (still NaN) anywhere fails, checked elements or not */
    for (int64_t i = 0; i < p->n_params; i++)
        if (isnan(g[i])) {
            r->entry_err = INFINITY;
            for (int k = 0; k < p->count; k++)
                if (p->entries[k].kind == FDP_PARAM && i >= p->entries[k].offset &&
                    i < p->entries[k].offset + p->entries[k].numel)
                    snprintf(r->worst_entry, sizeof r->worst_entry, "not written: %.140s", p->entries[k].name);
            break;
        }
    r->checked = total;
    r->entries = ne;
    free(idx);
    free(fdg);
    free(ag);
    free(okg);
    free(okx);
    free(ent);
    free(ent_start);
    free(xp);
    free(fdx);
    free(w);
    free(c);
    free(dx);
    free(dy);
    free(g);
}

static void fu_setup(flow_ut *f, const char *name, fdp_backend *be, fdp_params *p, int n, int c, int h, int w) {
    memset(f, 0, sizeof *f);
    f->name = name;
    f->be = be;
    f->arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = f->arena, .params = p, .training = 0, .world_size = 1};
    f->ctx = ctx;
    f->p = p;
    f->n = n;
    f->c = c;
    f->h = h;
    f->w = w;
    f->buffers0 = malloc(sizeof(float) * (size_t)(p->n_buffers ? p->n_buffers : 1));
    if (p->n_buffers) memcpy(f->buffers0, p->buffers, sizeof(float) * (size_t)p->n_buffers);
    assert_true(fu_N(f) <= 64 && n <= 64);
    f->y0 = malloc(sizeof(float) * (size_t)fu_N(f));
    f->nbits = -1;
}

static void fu_teardown(flow_ut *f) {
    fdp_arena_destroy(f->arena);
    free(f->buffers0);
    free(f->y0);
    free(f->base);
    free(f->bits);
}

typedef struct flow_tols {
    double inv;          /* max |x - inverse(forward(x))| */
    double logdet_eval;  /* FD log-det, per sample, evaluation mode */
    double logdet_train; /* FD log-det, whole batch, training mode */
    double grad_floor;   /* per-tensor gradient scale floor, relative to the largest parameter gradient */
    int per_entry;       /* parameter elements checked per tensor (0: all) */
    int eval_backward;   /* also check backward in evaluation mode */
    double max_skip;     /* largest fraction of FD gradient elements that may be left out */
    int fd_train;        /* FD checks in training mode (else only the Jacobian from backward there) */
    int fd_backward;     /* backward against FD */
} flow_tols;

static void print_logdet(const char *mode, const logdet_report *r, double tol) {
    if (isnan(r->fd_err)) {
        printf("  log-det %s: from backward's Jacobian %.2e (tol %.0e)  [|ldj| %.2f; no FD here: see the 0-block flow]\n",
               mode, r->bwd_err, TOL_LOGDET_BWD, r->ldj_max);
        return;
    }
    printf("  log-det %s: FD %.2e (tol %.0e), from backward's Jacobian %.2e (tol %.0e)\n"
           "      [|ldj| %.2f; max|J_fd - J_bwd|/max|J| %.2e; off-block %.1e; FD columns refined %lld, one-sided %lld, "
           "unresolved %lld]\n",
           mode, r->fd_err, tol, r->bwd_err, TOL_LOGDET_BWD, r->ldj_max, r->jac_diff, r->off, (long long)r->refined,
           (long long)r->onesided, (long long)r->unresolved);
}

/* The three checks of a flow: inverse (both modes), log-det (eval per sample;
 * training on the whole batch), backward (training; evaluation when asked). */
static void fu_check_all(flow_ut *f, uint64_t seed, const flow_tols *t) {
    int N = fu_N(f);
    float *x = tu_rand_floats(N, seed, -1.5f, 1.5f);
    logdet_report le, lt;

    printf("[%s] n=%d %dx%dx%d, FD step %.0e\n", f->name, f->n, f->c, f->h, f->w, H_FD);
    f->ctx.training = 0;
    double inv_e = fu_inverse_err(f, x);
    fu_logdet_check(f, x, H_FD, 1, &le);
    f->ctx.training = 1;
    double inv_t = fu_inverse_err(f, x);
    fu_logdet_check(f, x, H_FD, t->fd_train, &lt);
    printf("  inverse  max|x - inv(fwd(x))|: eval %.2e  train %.2e   (tol %.0e)\n", inv_e, inv_t, t->inv);
    print_logdet("eval, per sample  ", &le, t->logdet_eval);
    print_logdet("train, whole batch", &lt, t->logdet_train);
    assert_true(inv_e <= t->inv);
    assert_true(inv_t <= t->inv);
    assert_true(le.fd_err <= t->logdet_eval);
    assert_true(le.bwd_err <= TOL_LOGDET_BWD);
    assert_true(lt.bwd_err <= TOL_LOGDET_BWD);
    assert_true(le.off <= 1e-9);
    assert_true(le.jac_diff <= TOL_GRAD);
    if (t->fd_train) {
        assert_true(lt.fd_err <= t->logdet_train);
        assert_true(lt.jac_diff <= TOL_GRAD);
    }

    for (int mode = 1; t->fd_backward && mode >= (t->eval_backward ? 0 : 1); mode--) {
        grad_report r;
        f->ctx.training = mode;
        fu_fd_reset(f);
        fu_check_backward(f, x, H_FD, t->per_entry, t->grad_floor, seed + 100 + (uint64_t)mode, &r);
        printf("  backward %s: input %.2e;  params (%lld elements of %lld tensors, max|g| %.2f): all %.2e, "
               "worst tensor %.2e (%s; floor %.0f%% of max|g|)   (tol %.0e)\n"
               "      [FD refined %lld, one-sided %lld, unresolved and left out %lld of %lld (allowed %.0f%%); "
               "tensors without a resolved element %lld]\n",
               mode ? "train" : "eval ", r.input_err, (long long)r.checked, (long long)r.entries, r.gmax,
               r.param_err, r.entry_err, r.worst_entry, 100.0 * t->grad_floor, TOL_GRAD, (long long)f->n_refined,
               (long long)f->n_onesided, (long long)r.skipped, (long long)f->n_fd, 100.0 * t->max_skip,
               (long long)r.uncovered);
        assert_true(r.input_err <= TOL_GRAD);
        assert_true(r.param_err <= TOL_GRAD);
        assert_true(r.entry_err <= TOL_GRAD);
        assert_true((double)r.skipped <= t->max_skip * (double)f->n_fd);
    }
    f->ctx.training = 0;
    free(x);
}

/* ======================================================================== */
/* ReLU patterns (the coupling layers themselves: tests/test_flow_layers.c)  */
/* ======================================================================== */
/* the ReLU pattern of an s/t network's last forward: relu(cat(bn, -bn)), each block's two ReLUs, the output ReLU */
static int64_t put_bits(fdp_tensor t, uint8_t *bits, int64_t o) {
    int64_t n = fdp_numel(t);
    if (bits)
        for (int64_t i = 0; i < n; i++) bits[o + i] = t.data[i] > 0.0f;
    return o + n;
}
static int64_t resnet_pattern(const fdp_resnet *r, uint8_t *bits, int64_t o) {
    o = put_bits(r->a0, bits, o);
    for (int i = 0; i < r->num_blocks; i++) {
        o = put_bits(r->blocks[i].a, bits, o);
        o = put_bits(r->blocks[i].b, bits, o);
    }
    return put_bits(r->o, bits, o);
}

/* ======================================================================== */
/* permutations: squeeze, channel slice / cat                                */
/* ======================================================================== */
typedef struct perm_ctx {
    fdp_backend *be;
    fdp_arena *arena;
    fdp_ctx ctx;
    int n, c, h, w;
    int alt, k; /* squeeze order; slice split point */
} perm_ctx;

static void perm_setup(perm_ctx *s, int n, int c, int h, int w) {
    memset(s, 0, sizeof *s);
    s->be = fdp_backend_cpu_create(1);
    s->arena = fdp_arena_create(1 << 16, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = s->be, .arena = s->arena, .params = NULL, .training = 0, .world_size = 1};
    s->ctx = ctx;
    s->n = n;
    s->c = c;
    s->h = h;
    s->w = w;
}
static void perm_teardown(perm_ctx *s) {
    fdp_arena_destroy(s->arena);
    fdp_backend_destroy(s->be);
}

static int64_t perm_numel(const perm_ctx *s) { return (int64_t)s->n * s->c * s->h * s->w; }

static void squeeze_map(void *st, const float *x, float *y, double *ldj) {
    perm_ctx *s = st;
    (void)ldj;
    fdp_arena_reset_all(s->arena);
    fdp_tensor xt = fdp_arena_tensor(s->arena, s->n, s->c, s->h, s->w);
    memcpy(xt.data, x, sizeof(float) * (size_t)perm_numel(s));
    fdp_tensor yt = fdp_squeeze(&s->ctx, xt, s->alt);
    memcpy(y, yt.data, sizeof(float) * (size_t)perm_numel(s));
}

/* the split x -> (x[:, :k], x[:, k:]) as one vector: all of a, then all of b */
static void split_map(void *st, const float *x, float *y, double *ldj) {
    perm_ctx *s = st;
    (void)ldj;
    fdp_arena_reset_all(s->arena);
    fdp_tensor xt = fdp_arena_tensor(s->arena, s->n, s->c, s->h, s->w);
    memcpy(xt.data, x, sizeof(float) * (size_t)perm_numel(s));
    fdp_tensor a = fdp_channel_slice(&s->ctx, xt, 0, s->k), b = fdp_channel_slice(&s->ctx, xt, s->k, s->c - s->k);
    memcpy(y, a.data, sizeof(float) * (size_t)fdp_numel(a));
    memcpy(y + fdp_numel(a), b.data, sizeof(float) * (size_t)fdp_numel(b));
}

/* the concatenation (a, b) -> cat(a, b); the input vector holds all of a, then all of b */
static void cat_map(void *st, const float *x, float *y, double *ldj) {
    perm_ctx *s = st;
    (void)ldj;
    fdp_arena_reset_all(s->arena);
    fdp_tensor a = fdp_arena_tensor(s->arena, s->n, s->k, s->h, s->w);
    fdp_tensor b = fdp_arena_tensor(s->arena, s->n, s->c - s->k, s->h, s->w);
    memcpy(a.data, x, sizeof(float) * (size_t)fdp_numel(a));
    memcpy(b.data, x + fdp_numel(a), sizeof(float) * (size_t)fdp_numel(b));
    fdp_tensor yt = fdp_channel_cat(&s->ctx, a, b);
    memcpy(y, yt.data, sizeof(float) * (size_t)perm_numel(s));
}

/* For a map that only moves values: its FD Jacobian must be a permutation
 * matrix with entries exactly 0 or 1 (log|det| = 0), and the library's
 * backward, given w, must equal J^T w exactly. Returns log|det J|. */
static double check_permutation_jacobian(const fd_map *m, const float *x, const float *w, const float *backward_w) {
    int N = m->nin;
    assert_int_equal(m->nout, N);
    double *J = malloc(sizeof(double) * (size_t)N * N);
    fd_jacobian(m, x, H_FD, J);
    int *rows = calloc((size_t)N, sizeof(int)), *cols = calloc((size_t)N, sizeof(int));
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double v = J[(size_t)i * N + j];
            if (v != 0.0 && v != 1.0) fail_msg("Jacobian entry (%d,%d) = %.17g, not 0 or 1", i, j, v);
            rows[i] += v == 1.0;
            cols[j] += v == 1.0;
        }
    for (int i = 0; i < N; i++) {
        if (rows[i] != 1) fail_msg("output %d depends on %d inputs", i, rows[i]);
        if (cols[i] != 1) fail_msg("input %d reaches %d outputs", i, cols[i]);
    }
    /* backward == J^T w (exact: the entries are 0/1 and each column holds one 1) */
    for (int j = 0; j < N; j++) {
        double g = 0.0;
        for (int i = 0; i < N; i++) g += J[(size_t)i * N + j] * (double)w[i];
        if ((float)g != backward_w[j]) fail_msg("backward element %d: %.9g, FD %.9g", j, backward_w[j], g);
    }
    double ld = tu_lu_logabsdet(J, N);
    free(J);
    free(rows);
    free(cols);
    return ld;
}

/* the notebook's squeeze_2x2, written from its definition:
 *  plain: x.permute(0,2,3,1).view(b, h/2, 2, w/2, 2, c).permute(0,1,3,5,2,4).view(b, h/2, w/2, 4c).permute(0,3,1,2)
 *  alt:   conv2d(x, perm_weight, stride=2) with perm_weight[c*4 + k, c] = squeeze_matrix[k],
 *         squeeze_matrix = [[1,0],[0,0]], [[0,0],[0,1]], [[0,1],[0,0]], [[0,0],[1,0]],
 *         then the output channels shuffled: [c*4 for c] + [c*4+1 for c] + [c*4+2 ...] + [c*4+3 ...] */
static void squeeze_reference(const float *x, float *y, int n, int c, int h, int w, int alt) {
    int h2 = h / 2, w2 = w / 2, C4 = 4 * c;
    if (!alt) {
        for (int b = 0; b < n; b++)
            for (int i = 0; i < h2; i++)
                for (int j = 0; j < w2; j++)
                    for (int cc = 0; cc < c; cc++)
                        for (int di = 0; di < 2; di++)
                            for (int dj = 0; dj < 2; dj++) {
                                int oc = (cc * 2 + di) * 2 + dj; /* view (c, 2, 2) -> 4c */
                                y[(((size_t)b * C4 + oc) * h2 + i) * w2 + j] =
                                    x[(((size_t)b * c + cc) * h + 2 * i + di) * w + 2 * j + dj];
                            }
        return;
    }
    static const float sm[4][2][2] = {{{1, 0}, {0, 0}}, {{0, 0}, {0, 1}}, {{0, 1}, {0, 0}}, {{0, 0}, {1, 0}}};
    float *pw = calloc((size_t)C4 * c * 4, sizeof(float)), *pws = malloc(sizeof(float) * (size_t)C4 * c * 4);
    for (int ci = 0; ci < c; ci++)
        for (int k = 0; k < 4; k++)
            for (int di = 0; di < 2; di++)
                for (int dj = 0; dj < 2; dj++) pw[(((size_t)(ci * 4 + k) * c + ci) * 2 + di) * 2 + dj] = sm[k][di][dj];
    for (int o = 0; o < C4; o++) {
        int src = (o % c) * 4 + o / c; /* shuffle_channels[o] */
        memcpy(pws + (size_t)o * c * 4, pw + (size_t)src * c * 4, sizeof(float) * (size_t)c * 4);
    }
    for (int b = 0; b < n; b++)
        for (int o = 0; o < C4; o++)
            for (int i = 0; i < h2; i++)
                for (int j = 0; j < w2; j++) {
                    double acc = 0.0;
                    for (int ci = 0; ci < c; ci++)
                        for (int di = 0; di < 2; di++)
                            for (int dj = 0; dj < 2; dj++)
                                acc += (double)pws[(((size_t)o * c + ci) * 2 + di) * 2 + dj] *
                                       x[(((size_t)b * c + ci) * h + 2 * i + di) * w + 2 * j + dj];
                    y[(((size_t)b * C4 + o) * h2 + i) * w2 + j] = (float)acc;
                }
    free(pw);
    free(pws);
}

static void check_squeeze(int alt, int n, int c, int h, int w, uint64_t seed) {
    perm_ctx s;
    perm_setup(&s, n, c, h, w);
    s.alt = alt;
    int64_t N = perm_numel(&s);
    float *x = tu_rand_floats(N, seed, -2.0f, 2.0f), *ref = malloc(sizeof(float) * (size_t)N);
    float *y = malloc(sizeof(float) * (size_t)N);
    /* forward = the notebook's definition, to the bit */
    squeeze_reference(x, ref, n, c, h, w, alt);
    squeeze_map(&s, x, y, NULL);
    assert_memory_equal(y, ref, sizeof(float) * (size_t)N);
    /* inverse, both ways round, to the bit */
    fdp_arena_reset_all(s.arena);
    fdp_tensor xt = fdp_arena_tensor(s.arena, n, c, h, w);
    memcpy(xt.data, x, sizeof(float) * (size_t)N);
    fdp_tensor yt = fdp_squeeze(&s.ctx, xt, alt);
    assert_int_equal(yt.c, 4 * c);
    assert_int_equal(yt.h, h / 2);
    assert_int_equal(yt.w, w / 2);
    fdp_tensor xr = fdp_unsqueeze(&s.ctx, yt, alt);
    assert_true(fdp_same_shape(xr, xt));
    assert_memory_equal(xr.data, x, sizeof(float) * (size_t)N);
    fdp_tensor zt = fdp_arena_tensor(s.arena, n, 4 * c, h / 2, w / 2);
    memcpy(zt.data, x, sizeof(float) * (size_t)N);
    fdp_tensor zr = fdp_squeeze(&s.ctx, fdp_unsqueeze(&s.ctx, zt, alt), alt);
    assert_memory_equal(zr.data, x, sizeof(float) * (size_t)N);
    printf("[squeeze %s] n=%d %dx%dx%d: equals the notebook's definition and inverts both ways bit-exactly "
           "(log-det, backward: tests/test_flow_layers.c)\n",
           alt ? "alt_order" : "plain", n, c, h, w);
    free(x);
    free(ref);
    free(y);
    perm_teardown(&s);
}

static void test_squeeze_plain(void **state) {
    (void)state;
    check_squeeze(0, 2, 2, 4, 4, 21);
    check_squeeze(0, 1, 1, 8, 8, 22);
}
static void test_squeeze_alt(void **state) {
    (void)state;
    check_squeeze(1, 2, 2, 4, 4, 23);
    check_squeeze(1, 1, 3, 4, 4, 24);
}

static void check_slice_cat(int n, int c, int h, int w, int k, uint64_t seed) {
    perm_ctx s;
    perm_setup(&s, n, c, h, w);
    s.k = k;
    int64_t N = perm_numel(&s), Na = (int64_t)n * k * h * w;
    float *x = tu_rand_floats(N, seed, -2.0f, 2.0f);
    /* split then cat == x; cat then split == (a, b); to the bit */
    fdp_tensor xt = fdp_arena_tensor(s.arena, n, c, h, w);
    memcpy(xt.data, x, sizeof(float) * (size_t)N);
    fdp_tensor a = fdp_channel_slice(&s.ctx, xt, 0, k), b = fdp_channel_slice(&s.ctx, xt, k, c - k);
    assert_int_equal(a.c, k);
    assert_int_equal(b.c, c - k);
    fdp_tensor xr = fdp_channel_cat(&s.ctx, a, b);
    assert_true(fdp_same_shape(xr, xt));
    assert_memory_equal(xr.data, x, sizeof(float) * (size_t)N);
    fdp_tensor a2 = fdp_channel_slice(&s.ctx, xr, 0, k), b2 = fdp_channel_slice(&s.ctx, xr, k, c - k);
    assert_memory_equal(a2.data, a.data, sizeof(float) * (size_t)Na);
    assert_memory_equal(b2.data, b.data, sizeof(float) * (size_t)(N - Na));
    /* element (n, k + j) of x is element (n, j) of b */
    for (int bi = 0; bi < n; bi++)
        for (int j = 0; j < (c - k) * h * w; j++)
            assert_true(b.data[(size_t)bi * (c - k) * h * w + j] == x[((size_t)bi * c + k) * h * w + j]);

    /* split: Jacobian a permutation, backward = cat(da, db) (what the model's backward does) */
    float *wv = tu_rand_floats(N, seed + 1, -1.0f, 1.0f), *bw = malloc(sizeof(float) * (size_t)N);
    fdp_arena_reset_all(s.arena);
    fdp_tensor da = fdp_arena_tensor(s.arena, n, k, h, w), db = fdp_arena_tensor(s.arena, n, c - k, h, w);
    memcpy(da.data, wv, sizeof(float) * (size_t)Na);
    memcpy(db.data, wv + Na, sizeof(float) * (size_t)(N - Na));
    memcpy(bw, fdp_channel_cat(&s.ctx, da, db).data, sizeof(float) * (size_t)N);
    fd_map ms = {split_map, &s, (int)N, (int)N, 0};
    double ld_split = check_permutation_jacobian(&ms, x, wv, bw);
    /* cat: backward = (slice(dy, 0, k), slice(dy, k, c-k)) */
    fdp_arena_reset_all(s.arena);
    fdp_tensor dy = fdp_arena_tensor(s.arena, n, c, h, w);
    memcpy(dy.data, wv, sizeof(float) * (size_t)N);
    fdp_tensor ga = fdp_channel_slice(&s.ctx, dy, 0, k), gb = fdp_channel_slice(&s.ctx, dy, k, c - k);
    memcpy(bw, ga.data, sizeof(float) * (size_t)Na);
    memcpy(bw + Na, gb.data, sizeof(float) * (size_t)(N - Na));
    fd_map mc = {cat_map, &s, (int)N, (int)N, 0};
    double ld_cat = check_permutation_jacobian(&mc, x, wv, bw);
    printf("[channel slice + cat] n=%d %dx%dx%d split at %d: inverse both ways bit-exact; FD Jacobians permutations, "
           "log|det| split %.1e cat %.1e; backward (cat / slice of dy) == J^T dy exactly\n",
           n, c, h, w, k, ld_split, ld_cat);
    assert_true(ld_split == 0.0);
    assert_true(ld_cat == 0.0);
    free(x);
    free(wv);
    free(bw);
    perm_teardown(&s);
}

static void test_channel_slice_cat(void **state) {
    (void)state;
    check_slice_cat(2, 8, 2, 2, 4, 31); /* the model's split: 2C of 4C */
    check_slice_cat(2, 4, 2, 2, 1, 32); /* uneven */
    check_slice_cat(4, 4, 2, 2, 3, 33);
}

/* ======================================================================== */
/* dequantization + logit                                                    */
/* ======================================================================== */
/* y = logit((((x*255 + u)/256)*2 - 1)*0.9 + 1)/2) as a map of the noise u for fixed pixels x.
 * Its Jacobian is diagonal. fdp_logit_forward's sldj is log|dy/dq| with q = (x*255 + u)/256
 * the dequantized value (the notebook's), so log|det dy/du| = sldj - D*log(256): the
 * D*log(k) term is the one the loss adds (fdp_gaussian_nll). There is no backward: the
 * input is data. Its inverse on the sample path is sigmoid + undoing the constraint
 * (checked here in double, and through fdp_realnvp_sample with the flow below). */
typedef struct logit_ctx {
    perm_ctx s;
    const float *x;
} logit_ctx;

static void logit_map(void *st, const float *u, float *y, double *ldj) {
    logit_ctx *l = st;
    perm_ctx *s = &l->s;
    fdp_arena_reset_all(s->arena);
    fdp_tensor xt = fdp_arena_tensor(s->arena, s->n, s->c, s->h, s->w);
    fdp_tensor ut = fdp_arena_tensor(s->arena, s->n, s->c, s->h, s->w);
    memcpy(xt.data, l->x, sizeof(float) * (size_t)perm_numel(s));
    memcpy(ut.data, u, sizeof(float) * (size_t)perm_numel(s));
    double *sldj = fdp_arena_doubles(s->arena, s->n);
    for (int i = 0; i < s->n; i++) sldj[i] = 0.0;
    fdp_tensor yt = fdp_logit_forward(&s->ctx, fdp_dequantize(&s->ctx, xt, ut, 256, 0), 0.9f, sldj);
    memcpy(y, yt.data, sizeof(float) * (size_t)perm_numel(s));
    memcpy(ldj, sldj, sizeof(double) * (size_t)s->n);
}

static void check_logit(int n, int c, int h, int w, uint64_t seed) {
    logit_ctx l;
    perm_setup(&l.s, n, c, h, w);
    int N = (int)perm_numel(&l.s), D = c * h * w;
    assert_true(N <= 64);
    float *x = malloc(sizeof(float) * (size_t)N), *u = tu_rand_floats(N, seed, 0.0f, 1.0f);
    uint64_t st = seed + 1;
    /* pixels over the whole range, extremes included */
    for (int i = 0; i < N; i++) x[i] = (float)(floor(tu_uniform(&st, 0.0, 256.0)) / 255.0);
    x[0] = 0.0f;
    x[1] = 1.0f;
    l.x = x;
    fd_map m = {logit_map, &l, N, N, n};
    double *J = malloc(sizeof(double) * (size_t)N * N), ldj[64];
    float *y = malloc(sizeof(float) * (size_t)N);
    /* Richardson: (4 J(h/2) - J(h))/3 cancels the h^2 term of the central differences */
    double *J2 = malloc(sizeof(double) * (size_t)N * N);
    fd_jacobian(&m, u, H_FD_LOGIT, J);
    fd_jacobian(&m, u, H_FD_LOGIT / 2, J2);
    for (int64_t i = 0; i < (int64_t)N * N; i++) J[i] = (4.0 * J2[i] - J[i]) / 3.0;
    free(J2);
    logit_map(&l, u, y, ldj);
    double off = offblock_max(J, N, 1), err = 0.0, dlogk = D * log(256.0);
    for (int s = 0; s < n; s++) err = fmax(err, fabs(block_logdet(J, N, s * D, D) - (ldj[s] - dlogk)));
    /* the inverse of the sample path (sigmoid, undo the constraint) recovers q = (x*255 + u)/256 */
    double inv = 0.0;
    for (int i = 0; i < N; i++) {
        double sg = 1.0 / (1.0 + exp(-(double)y[i]));
        double q = (sg - 0.05) / 0.9;
        inv = fmax(inv, fabs(q - ((double)x[i] * 255.0 + (double)u[i]) / 256.0));
    }
    printf("[logit] n=%d %dx%dx%d: map u -> y (x fixed), h = %.2f and h/2: Jacobian diagonal (off-diagonal max %.1e); "
           "log|det dy/du| = sldj - D*log(256) within %.2e (tol %.0e; sldj %.2f, D*log 256 = %.2f); "
           "sigmoid-inverse recovers q within %.1e\n",
           n, c, h, w, H_FD_LOGIT, off, err, TOL_LOGDET, ldj[0], dlogk, inv);
    assert_true(off == 0.0);
    assert_true(err <= TOL_LOGDET);
    assert_true(inv <= 1e-6);
    free(x);
    free(u);
    free(J);
    free(y);
    perm_teardown(&l.s);
}

static void test_logit(void **state) {
    (void)state;
    check_logit(4, 1, 4, 4, 41);
    check_logit(1, 1, 8, 8, 42);
}

/* ======================================================================== */
/* the whole RealNVP flow                                                    */
/* ======================================================================== */
static void nvp_prepare(void *m, fdp_ctx *ctx) { fdp_realnvp_prepare(m, ctx); }
static fdp_tensor nvp_forward(void *m, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    return fdp_realnvp_flow_forward(m, ctx, x, sldj);
}
static fdp_tensor nvp_inverse(void *m, fdp_ctx *ctx, fdp_tensor z) { return fdp_realnvp_flow_inverse(m, ctx, z); }
static fdp_tensor nvp_backward(void *m, fdp_ctx *ctx, fdp_tensor dz, const float *dldj) {
    return fdp_realnvp_flow_backward(m, ctx, dz, dldj);
}
static int64_t nvp_pattern(void *mv, uint8_t *bits) {
    fdp_realnvp *m = mv;
    int64_t o = 0;
    for (int s = 0; s < m->num_scales; s++) {
        fdp_realnvp_scale *S = &m->scales[s];
        for (int i = 0; i < S->n_in; i++) o = resnet_pattern(fdp_condnet_as_resnet(S->in_c[i]->net), bits, o);
        if (!S->is_last)
            for (int i = 0; i < 3; i++) o = resnet_pattern(fdp_condnet_as_resnet(S->out_c[i]->net), bits, o);
    }
    return o;
}

static void check_realnvp(int n, int C, int H, int W, int scales, int mid, int blocks, const flow_tols *t,
                          uint64_t seed) {
    char name[128];
    snprintf(name, sizeof name, "RealNVP flow, %d scales, mid %d, %d block%s", scales, mid, blocks, blocks == 1 ? "" : "s");
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_realnvp m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_realnvp_build(&m, C, H, W, scales, mid, blocks, &err), 0);
    fdp_realnvp_alloc_init(&m, be, seed);
    randomize_params(&m.params, seed + 1, 0.3, 0.7);
    flow_ut f;
    fu_setup(&f, name, be, &m.params, n, C, H, W);
    f.layer = &m;
    f.prepare = nvp_prepare;
    f.forward = nvp_forward;
    f.inverse = nvp_inverse;
    f.backward = nvp_backward;
    f.relu_pattern = nvp_pattern;
    fu_check_all(&f, seed + 2, t);

    /* the sample path inverts the preprocessing too: sample(flow(logit(x, u)), undo constraint) == q */
    int N = fu_N(&f);
    float *x = malloc(sizeof(float) * (size_t)N), *u = tu_rand_floats(N, seed + 3, 0.0f, 1.0f);
    uint64_t st = seed + 4;
    for (int i = 0; i < N; i++) x[i] = (float)(floor(tu_uniform(&st, 0.0, 256.0)) / 255.0);
    f.ctx.training = 0;
    fu_restore(&f);
    fdp_arena_reset_all(f.arena);
    fdp_realnvp_prepare(&m, &f.ctx);
    fdp_tensor xt = fdp_arena_tensor(f.arena, n, C, H, W), ut = fdp_arena_tensor(f.arena, n, C, H, W);
    memcpy(xt.data, x, sizeof(float) * (size_t)N);
    memcpy(ut.data, u, sizeof(float) * (size_t)N);
    double *sldj = fdp_arena_doubles(f.arena, n);
    for (int i = 0; i < n; i++) sldj[i] = 0.0;
    fdp_tensor y = fdp_logit_forward(&f.ctx, fdp_dequantize(&f.ctx, xt, ut, (int)m.k, 0), m.data_constraint, sldj);
    fdp_tensor z = fdp_realnvp_flow_forward(&m, &f.ctx, y, sldj);
    fdp_tensor q = fdp_realnvp_sample(&m, &f.ctx, z, 1);
    double e = 0.0;
    for (int i = 0; i < N; i++) e = fmax(e, fabs((double)q.data[i] - ((double)x[i] * 255.0 + u[i]) / 256.0));
    printf("  sample path: sample(flow(logit(x, u)), undo_constraint) vs (x*255 + u)/256: max abs %.2e (tol 1e-5)\n", e);
    assert_true(e <= 1e-5);
    free(x);
    free(u);
    fu_teardown(&f);
    fdp_realnvp_free(&m);
    fdp_backend_destroy(be);
}

/* Every finite-difference check runs on flows without residual blocks (the
 * blocks are covered by tests/test_flow_layers.c's couplings): with blocks
 * the flow has ~2.3x more ReLUs, so close to their kinks in training mode that
 * some Jacobian columns have no usable step at all (measured: whole-batch FD
 * log-det off by 38 from one such column, the Jacobian from backward right to
 * 1e-6). Per-tensor floor 10%: 1-2 elements per tensor, FD round-off up to
 * ~5e-4 of the largest gradient. */
static void test_realnvp_flow_1x4x4(void **state) {
    (void)state;
    flow_tols t = {TOL_INV_FLOW, TOL_LOGDET, TOL_LOGDET_FLOW_TRAIN, 0.1, 2, 0, 0.2, 1, 1};
    check_realnvp(4, 1, 4, 4, 2, 4, 0, &t, 51);
}
static void test_realnvp_flow_2x4x4(void **state) {
    (void)state;
    flow_tols t = {TOL_INV_FLOW, TOL_LOGDET, TOL_LOGDET_FLOW_TRAIN, 0.1, 1, 0, 0.2, 1, 1};
    check_realnvp(2, 2, 4, 4, 2, 4, 0, &t, 52);
}
/* With one residual block per s/t network: inverse (both modes), the sample
 * path, the log-det of backward's Jacobian (both modes), and the per-sample
 * FD log-det in evaluation mode (observed <= 1.0e-3 over 31 draws; tolerance
 * 2e-3 as its columns need the smallest steps). */
static void test_realnvp_flow_1x4x4_blocks(void **state) {
    (void)state;
    flow_tols t = {TOL_INV_FLOW, TOL_LOGDET_FLOW_BLOCKS, 0.0, 0.1, 0, 0, 0.0, 0, 0};
    check_realnvp(4, 1, 4, 4, 2, 4, 1, &t, 53);
}

/* ======================================================================== */
/* shapes fdp_realnvp_build refuses / accepts                                */
/* ======================================================================== */
static void expect_refused(int C, int H, int W, int scales, const char *const *parts) {
    fdp_realnvp m;
    fdp_err err = {{0}};
    int r = fdp_realnvp_build(&m, C, H, W, scales, 4, 1, &err);
    printf("[realnvp_build] %dx%dx%d with %d scales: %d \"%s\"\n", C, H, W, scales, r, err.msg);
    assert_int_equal(r, -1);
    for (int i = 0; parts[i]; i++)
        if (!strstr(err.msg, parts[i])) fail_msg("message \"%s\" does not contain \"%s\"", err.msg, parts[i]);
    fdp_realnvp_free(&m); /* a refused model holds nothing and may be freed */
}

static void test_realnvp_build_shapes(void **state) {
    (void)state;
    const char *const a[] = {"scale 3 of 4", "7x7", "cannot be squeezed", "odd", "divisible by 8", NULL};
    expect_refused(1, 28, 28, 4, a);
    const char *const b[] = {"scale 2 of 3", "3x3", "cannot be squeezed", "odd", NULL};
    expect_refused(1, 6, 6, 3, b);
    const char *const c[] = {"scale 2 of 3", "4x3", "cannot be squeezed", "odd width", NULL};
    expect_refused(1, 8, 6, 3, c);
    const char *const d[] = {"scale 1 of 2", "5x4", "odd height", NULL};
    expect_refused(3, 5, 4, 2, d);
    const char *const e[] = {"num_scales", NULL};
    expect_refused(1, 8, 8, 0, e);

    fdp_realnvp m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_realnvp_build(&m, 1, 28, 28, 3, 4, 1, &err), 0);
    assert_int_equal(m.num_scales, 3);
    assert_int_equal(m.scales[2].H, 7);
    assert_int_equal(m.scales[2].W, 7);
    assert_int_equal(m.scales[2].C, 4);
    fdp_realnvp_free(&m);
    /* a single scale never squeezes: any size */
    assert_int_equal(fdp_realnvp_build(&m, 1, 7, 5, 1, 4, 1, &err), 0);
    fdp_realnvp_free(&m);
}

/* ======================================================================== */
static void test_lu_helper(void **state) {
    (void)state;
    /* needs pivoting (zero leading entry): det = 0*(1*1-0*0) - 2*(1*1-0*3) + 1*(1*0-1*3) = -5 */
    double A[9] = {0, 2, 1, 1, 1, 0, 3, 0, 1};
    assert_true(fabs(tu_lu_logabsdet(A, 3) - log(5.0)) < 1e-14);
    double B[4] = {1, 2, 2, 4};
    assert_true(tu_lu_logabsdet(B, 2) == -INFINITY);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lu_helper),
        cmocka_unit_test(test_squeeze_plain),
        cmocka_unit_test(test_squeeze_alt),
        cmocka_unit_test(test_channel_slice_cat),
        cmocka_unit_test(test_logit),
        cmocka_unit_test(test_realnvp_flow_1x4x4),
        cmocka_unit_test(test_realnvp_flow_2x4x4),
        cmocka_unit_test(test_realnvp_flow_1x4x4_blocks),
        cmocka_unit_test(test_realnvp_build_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
