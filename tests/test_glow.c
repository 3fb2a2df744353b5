/* test_glow.c — Glow (src/models/glow.c and its layers) under docs/ARCHITECTURE.md's
 * invariants:
 *  1. the whole Glow flow (x -> all eps; its log-det = objective - sum log
 *     N(eps; 0, 1)) three ways, on inputs of at most 64 dimensions per sample:
 *     inverse(forward(x)) == x; the per-sample log-det against log|det J| of
 *     the Jacobian built by central finite differences (FD) of the float32
 *     forward, the determinant by LU with partial pivoting in double; backward
 *     (the input gradient and every parameter gradient) against FD of the
 *     scalar S = sum_n c_n * obj_n. Parameters are random (Conv2dZeros
 *     included: at their zero init the couplings would be identities),
 *     ActNorms marked initialized. Each layer on its own (ActNorm, invertible
 *     1x1 conv, reverse / shuffle, additive / affine couplings, the split with
 *     its learned prior, the top prior) is checked the same three ways by
 *     tests/test_flow_layers.c through the flow-layer registry; here only
 *     their initial values (invconv orthogonal, shuffle a permutation).
 *  3. ActNorm's data-dependent init is global: two "ranks" in two threads with
 *     an all-reduce hook over shared memory initialize exactly as one rank with
 *     the concatenated batch (and then agree on loss and averaged gradients).
 *  7. bad configurations are refused with one-line errors naming the problem.
 * Plus Adamax / EMA against a double reference, the preprocessing round trip,
 * and a 30-step training smoke test of configs/glow_tiny.ini on 256
 * Fashion-MNIST images (nll decreases; samples at T 0.5 and 1 finite, in [0,1]).
 *
 * FD scheme (see fd_deriv): Richardson extrapolation of central differences
 * at steps s and s/2 (s = 1e-2 first: O(s^4) truncation, float32 round-off
 * ~1e-7/s), the perturbed value rounded to float and the quotient divided by
 * the difference actually applied. The couplings' NNs have ReLUs; a difference
 * across a kink is wrong whatever the step, so every evaluation records the
 * ReLU pattern (sign of every ActNorm input + bias in the NNs) and only points
 * with the unperturbed pattern are used: the step is halved (to 1e-2/64), then
 * a one-sided second-order difference is tried; derivatives still crossing a
 * kink are left out and counted (at most 2% allowed). Every check prints its
 * worst error next to its tolerance. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/config.h"
#include "flowdp/data.h"
#include "flowdp/error.h"
#include "flowdp/glow.h"
#include "flowdp/model.h"
#include "flowdp/optim.h"
#include "flowdp/rng.h"
#include "testutil.h"

#define H_FD 1e-2          /* first FD step (inputs and parameters) */
#define FD_LEVELS 7        /* steps h, h/2, ..., h/64 */
#define TOL_INV 1e-5       /* max |x - inverse(forward(x))| */
#define TOL_LOGDET 1e-4    /* abs, FD log-det per sample vs the layer's, every column at the full step */
#define TOL_LOGDET_REFINED 1e-3 /* ... when some columns needed smaller steps (kinks) */
#define TOL_GRAD 1e-3      /* normwise, backward vs FD at the full step */
#define TOL_GRAD_REFINED 1e-2 /* normwise, including derivatives taken at smaller steps */
#define MAX_UNRESOLVED 0.02 /* fraction of FD derivatives left out (kinks) */

/* ======================================================================== */
/* numerics helpers                                                          */
/* ======================================================================== */
/* Random parameters for the checks: far from the zero / identity init, well conditioned.
 * Buffers: ActNorm flags 1 (no data-dependent init during the checks), P / sign_s / shuffle kept. */
static void randomize_params(fdp_params *p, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < p->count; i++) {
        const fdp_param_entry *e = &p->entries[i];
        float *d = fdp_params_data(p, i);
        for (int64_t j = 0; j < e->numel; j++) {
            double v;
            if (e->kind == FDP_BUFFER) {
                v = tu_ends_with(e->name, ".initialized") ? 1.0 : d[j];
            } else if (tu_ends_with(e->name, "invconv.W")) {
                v = d[j] + tu_uniform(&s, -0.2, 0.2); /* random orthogonal from the init, perturbed */
            } else if (tu_ends_with(e->name, "invconv.L") || tu_ends_with(e->name, "invconv.U")) {
                v = tu_uniform(&s, -0.3, 0.3);
            } else if (tu_ends_with(e->name, "invconv.log_s")) {
                v = tu_uniform(&s, -0.3, 0.3);
            } else if (tu_ends_with(e->name, ".l_1.W") || tu_ends_with(e->name, ".l_2.W")) {
                v = tu_uniform(&s, -0.4, 0.4);
            } else if (tu_ends_with(e->name, ".l_last.W")) {
                v = tu_uniform(&s, -0.1, 0.1);
            } else if (tu_ends_with(e->name, "split.conv.W")) {
                v = tu_uniform(&s, -0.15, 0.15);
            } else if (tu_ends_with(e->name, ".logs")) {
                v = tu_uniform(&s, -0.15, 0.15); /* times 3 inside exp */
            } else if (tu_ends_with(e->name, ".b")) {
                v = tu_uniform(&s, -0.3, 0.3);
            } else {
                fail_msg("randomize_params: no rule for %s", e->name);
                v = 0.0;
            }
            d[j] = (float)v;
        }
    }
}

/* ======================================================================== */
/* a case under test                                                        */
/* ======================================================================== */
typedef struct gcase gcase;
struct gcase {
    const char *name;
    fdp_backend *be;
    fdp_arena *arena;
    fdp_ctx ctx;
    fdp_params *p;
    int n, c, h, w;  /* input shape */
    int Dout;        /* outputs per sample (= inputs for a bijection) */
    int wy_len;      /* leading outputs per sample that carry weights in the scalar (the rest: 0) */
    void *layer;
    /* one forward from a clean arena at x: y (n*Dout), ld (n) = log|det dy/dx| per sample,
     * obj (n) = what the layer adds to the objective */
    void (*eval)(gcase *t, const float *x, float *y, double *ld, double *obj);
    void (*inv)(gcase *t, const float *y, float *x);
    /* a forward at x, then backward with dy = wy (n*Dout), d obj = c (n): dx (n*Din); parameter grads */
    void (*bwd)(gcase *t, const float *x, const float *wy, const float *c, float *dx);
    /* the ReLU pattern of the last forward (NULL: smooth) */
    int64_t (*pattern)(gcase *t, uint8_t *bits);
    /* FD state */
    float *x;                /* (n*Din) the point */
    const float *wy, *wc;    /* the scalar's weights */
    int scalar;              /* 0: derivatives of (y, ld); 1: of S */
    int64_t nbits;
    uint8_t *base, *bits;
    float *ybuf;
    int64_t n_fd, n_refined, n_onesided, n_unresolved;
};

static int g_din(const gcase *t) { return t->c * t->h * t->w; }
static int g_nin(const gcase *t) { return t->n * g_din(t); }
static int g_nout(const gcase *t) { return t->n * t->Dout; }

static void gc_setup(gcase *t, const char *name, fdp_backend *be, fdp_params *p, int n, int c, int h, int w) {
    memset(t, 0, sizeof *t);
    t->name = name;
    t->be = be;
    t->p = p;
    t->arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = t->arena, .params = p, .training = 1, .world_size = 1};
    t->ctx = ctx;
    t->n = n;
    t->c = c;
    t->h = h;
    t->w = w;
    t->Dout = c * h * w;
    t->wy_len = t->Dout;
    t->nbits = -1;
    assert_true(g_din(t) <= 64 && n <= 8);
}

static void gc_teardown(gcase *t) {
    fdp_arena_destroy(t->arena);
    free(t->x);
    free(t->base);
    free(t->bits);
    free(t->ybuf);
}

static fdp_tensor gc_input(gcase *t, const float *x) {
    fdp_tensor xt = fdp_arena_tensor(t->arena, t->n, t->c, t->h, t->w);
    memcpy(xt.data, x, sizeof(float) * (size_t)g_nin(t));
    return xt;
}
static double *gc_zeros(gcase *t) {
    double *d = fdp_arena_doubles(t->arena, t->n);
    for (int i = 0; i < t->n; i++) d[i] = 0.0;
    return d;
}

/* ---- FD machinery ---- */
/* evaluate at t->x: out = [y, ld] (scalar == 0) or [S]; the ReLU pattern into bits (if any) */
static void gc_out(gcase *t, double *out, uint8_t *bits) {
    double ld[64], obj[64];
    if (!t->ybuf) t->ybuf = malloc(sizeof(float) * (size_t)g_nout(t));
    t->eval(t, t->x, t->ybuf, ld, obj);
    if (t->scalar) {
        double s = 0.0;
        for (int i = 0; i < t->n; i++)
            for (int j = 0; j < t->wy_len; j++) s += (double)t->wy[(size_t)i * t->Dout + j] * t->ybuf[(size_t)i * t->Dout + j];
        for (int i = 0; i < t->n; i++) s += (double)t->wc[i] * obj[i];
        out[0] = s;
    } else {
        for (int i = 0; i < g_nout(t); i++) out[i] = t->ybuf[i];
        for (int i = 0; i < t->n; i++) out[g_nout(t) + i] = ld[i];
    }
    if (bits && t->pattern) t->pattern(t, bits);
}
static int gc_m(const gcase *t) { return t->scalar ? 1 : g_nout(t) + t->n; }

/* the pattern at t->x (call before differentiating at this point) */
static void gc_set_base(gcase *t) {
    double *out = malloc(sizeof(double) * (size_t)gc_m(t));
    gc_out(t, out, NULL);
    free(out);
    int64_t nb = t->pattern ? t->pattern(t, NULL) : 0;
    if (nb != t->nbits) {
        free(t->base);
        free(t->bits);
        t->nbits = nb;
        t->base = malloc((size_t)(nb ? nb : 1));
        t->bits = malloc((size_t)(nb ? nb : 1));
    }
    if (t->pattern) t->pattern(t, t->base);
}

/* d(out)/d(*target) into d (gc_m doubles): Richardson of central differences at s and s/2
 * for the first s = h, h/2, ... whose four points keep the base ReLU pattern; else the
 * one-sided second-order difference; else 0 returned (a kink in the way; d: central at h).
 * Returns 1 when the full step h was used, 2 when a smaller step or a one-sided difference
 * was (its round-off is larger: ~3 eps_S / s for output noise eps_S ~ 1e-6 at step s). */
static int fd_deriv(gcase *t, float *target, double h, double *d) {
    int m = gc_m(t);
    float v = *target;
    double *f[2 * FD_LEVELS], xs[2 * FD_LEVELS], *f0 = malloc(sizeof(double) * (size_t)m);
    int done[2 * FD_LEVELS] = {0}, clean[2 * FD_LEVELS] = {0};
    for (int k = 0; k < 2 * FD_LEVELS; k++) f[k] = malloc(sizeof(double) * (size_t)m);
    t->n_fd++;
#define PT(k, side)                                                                       \
    do {                                                                                  \
        int q_ = 2 * (k) + (side);                                                        \
        if (!done[q_]) {                                                                  \
            float a_ = (float)((double)v + (side ? -1.0 : 1.0) * h * ldexp(1.0, -(k)));   \
            xs[q_] = a_;                                                                  \
            *target = a_;                                                                 \
            gc_out(t, f[q_], t->bits);                                                    \
            *target = v;                                                                  \
            clean[q_] = !t->pattern || memcmp(t->bits, t->base, (size_t)t->nbits) == 0;   \
            done[q_] = 1;                                                                 \
        }                                                                                 \
    } while (0)
    int ok = 0;
    for (int k = 0; k + 1 < FD_LEVELS && !ok; k++) {
        PT(k, 0);
        PT(k, 1);
        if (!clean[2 * k] || !clean[2 * k + 1]) continue;
        PT(k + 1, 0);
        PT(k + 1, 1);
        if (!clean[2 * k + 2] || !clean[2 * k + 3]) continue;
        double d1 = xs[2 * k] - xs[2 * k + 1], d2 = xs[2 * k + 2] - xs[2 * k + 3];
        for (int i = 0; i < m; i++) {
            double D1 = (f[2 * k][i] - f[2 * k + 1][i]) / d1, D2 = (f[2 * k + 2][i] - f[2 * k + 3][i]) / d2;
            d[i] = (4.0 * D2 - D1) / 3.0;
        }
        if (k > 0) t->n_refined++;
        ok = k > 0 ? 2 : 1;
    }
    if (!ok) {
        /* one-sided: points v, v + s, v + 2s on a side that keeps the pattern */
        gc_out(t, f0, NULL);
        for (int k = FD_LEVELS - 1; k >= 1 && !ok; k--)
            for (int side = 0; side < 2 && !ok; side++) {
                PT(k, side);
                PT(k - 1, side);
                if (!clean[2 * k + side] || !clean[2 * (k - 1) + side]) continue;
                double x0 = v, x1 = xs[2 * k + side], x2 = xs[2 * (k - 1) + side];
                double w0 = (2.0 * x0 - x1 - x2) / ((x0 - x1) * (x0 - x2)), w1 = (x0 - x2) / ((x1 - x0) * (x1 - x2)),
                       w2 = (x0 - x1) / ((x2 - x0) * (x2 - x1));
                for (int i = 0; i < m; i++) d[i] = w0 * f0[i] + w1 * f[2 * k + side][i] + w2 * f[2 * (k - 1) + side][i];
                t->n_refined++;
                t->n_onesided++;
                ok = 2;
            }
    }
    if (!ok) {
        PT(0, 0);
        PT(0, 1);
        for (int i = 0; i < m; i++) d[i] = (f[0][i] - f[1][i]) / (xs[0] - xs[1]);
        t->n_unresolved++;
    }
#undef PT
    for (int k = 0; k < 2 * FD_LEVELS; k++) free(f[k]);
    free(f0);
    return ok;
}

static void gc_fd_reset(gcase *t) { t->n_fd = t->n_refined = t->n_onesided = t->n_unresolved = 0; }

/* ---- check 1: inverse ---- */
static double check_inverse(gcase *t, const float *x) {
    int N = g_nin(t);
    float *y = malloc(sizeof(float) * (size_t)g_nout(t)), *xr = malloc(sizeof(float) * (size_t)N);
    double ld[64], obj[64];
    t->eval(t, x, y, ld, obj);
    t->inv(t, y, xr);
    double e = tu_max_abs_diff(xr, x, N);
    free(y);
    free(xr);
    return e;
}

/* ---- check 2: log-det per sample against the FD Jacobian ---- */
typedef struct ld_report {
    double err, ldmax, off;
    int64_t refined, onesided, unresolved;
} ld_report;

static void check_logdet(gcase *t, const float *x, ld_report *r) {
    int N = g_nin(t), No = g_nout(t), D = g_din(t), m;
    assert_int_equal(N, No);
    t->scalar = 0;
    m = gc_m(t);
    free(t->x);
    t->x = malloc(sizeof(float) * (size_t)N);
    memcpy(t->x, x, sizeof(float) * (size_t)N);
    gc_fd_reset(t);
    gc_set_base(t);
    double *J = malloc(sizeof(double) * (size_t)No * N), *col = malloc(sizeof(double) * (size_t)m), ld0[64], obj0[64];
    float *y0 = malloc(sizeof(float) * (size_t)No);
    t->eval(t, x, y0, ld0, obj0);
    for (int j = 0; j < N; j++) {
        fd_deriv(t, &t->x[j], H_FD, col);
        for (int i = 0; i < No; i++) J[(size_t)i * N + j] = col[i];
    }
    r->err = r->ldmax = r->off = 0.0;
    double *B = malloc(sizeof(double) * (size_t)D * D);
    for (int s = 0; s < t->n; s++) {
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) B[(size_t)i * D + j] = J[(size_t)(s * D + i) * N + s * D + j];
        r->err = fmax(r->err, fabs(tu_lu_logabsdet(B, D) - ld0[s]));
        r->ldmax = fmax(r->ldmax, fabs(ld0[s]));
    }
    for (int i = 0; i < No; i++)
        for (int j = 0; j < N; j++)
            if (i / D != j / D) r->off = fmax(r->off, fabs(J[(size_t)i * N + j]));
    r->refined = t->n_refined;
    r->onesided = t->n_onesided;
    r->unresolved = t->n_unresolved;
    if (isnan(r->err)) r->err = INFINITY;
    free(B);
    free(J);
    free(col);
    free(y0);
}

/* ---- check 3: backward against FD of S ---- */
typedef struct grad_report {
    double input_err, param_err, entry_err;          /* derivatives taken at the full FD step */
    double input_all, param_all, entry_all;          /* every resolved derivative */
    double gmax;
    char worst[FDP_NAME_MAX], worst_all[FDP_NAME_MAX];
    int64_t checked, entries, refined, skipped, fd;
} grad_report;

/* max|a-b| / max(max|b|, floor) over the elements whose FD code is 1 (only_clean) or nonzero */
static double masked_normwise(const float *a, const float *b, const uint8_t *ok, int64_t n, double floor,
                              int only_clean) {
    double m = 0.0, d = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!ok[i] || (only_clean && ok[i] != 1)) continue;
        m = fmax(m, fabs((double)b[i]));
        double e = fabs((double)a[i] - (double)b[i]);
        d = isnan(e) ? INFINITY : fmax(d, e);
    }
    m = fmax(m, floor);
    return m > 0.0 ? d / m : d;
}

/* per_entry <= 0: every element of every parameter tensor; else that many random ones per tensor */
static void check_backward(gcase *t, const float *x, int per_entry, double floor, uint64_t seed, grad_report *r) {
    fdp_params *p = t->p;
    int N = g_nin(t);
    float *wy = tu_rand_floats(g_nout(t), seed, -1.0f, 1.0f), *wc = tu_rand_floats(t->n, seed + 1, -1.0f, 1.0f);
    for (int i = 0; i < t->n; i++)
        for (int j = t->wy_len; j < t->Dout; j++) wy[(size_t)i * t->Dout + j] = 0.0f;
    float *dx = malloc(sizeof(float) * (size_t)N), *g = malloc(sizeof(float) * (size_t)(p->n_params + 1));
    for (int64_t i = 0; i < p->n_params; i++) p->grads[i] = NAN;
    t->bwd(t, x, wy, wc, dx);
    memcpy(g, p->grads, sizeof(float) * (size_t)p->n_params);

    t->scalar = 1;
    t->wy = wy;
    t->wc = wc;
    free(t->x);
    t->x = malloc(sizeof(float) * (size_t)N);
    memcpy(t->x, x, sizeof(float) * (size_t)N);
    gc_fd_reset(t);
    gc_set_base(t);
    double d;
    float *fdx = malloc(sizeof(float) * (size_t)N);
    uint8_t *okx = malloc((size_t)N);
    r->skipped = r->refined = 0;
    for (int j = 0; j < N; j++) {
        okx[j] = (uint8_t)fd_deriv(t, &t->x[j], H_FD, &d);
        r->skipped += !okx[j];
        r->refined += okx[j] == 2;
        fdx[j] = (float)d;
    }
    r->input_err = masked_normwise(dx, fdx, okx, N, 0.0, 1);
    r->input_all = masked_normwise(dx, fdx, okx, N, 0.0, 0);

    int64_t np = p->n_params ? p->n_params : 1, total = 0;
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)np), *start = malloc(sizeof(int64_t) * (size_t)(p->count + 1));
    int *ent = malloc(sizeof(int) * (size_t)(p->count + 1));
    float *fdg = malloc(sizeof(float) * (size_t)np), *ag = malloc(sizeof(float) * (size_t)np);
    uint8_t *okg = malloc((size_t)np);
    uint64_t s = seed + 2;
    int ne = 0;
    for (int e = 0; e < p->count; e++) {
        const fdp_param_entry *pe = &p->entries[e];
        if (pe->kind != FDP_PARAM) continue;
        ent[ne] = e;
        start[ne++] = total;
        int64_t k = per_entry <= 0 || pe->numel <= per_entry ? pe->numel : per_entry;
        if (k == pe->numel) {
            for (int64_t j = 0; j < k; j++) idx[total++] = pe->offset + j;
        } else {
            int64_t first = total;
            while (total - first < k) {
                int64_t j = pe->offset + (int64_t)tu_uniform(&s, 0.0, (double)pe->numel);
                int dup = 0;
                for (int64_t q = first; q < total; q++) dup |= idx[q] == j;
                if (!dup) idx[total++] = j;
            }
        }
    }
    start[ne] = total;
    for (int64_t q = 0; q < total; q++) {
        okg[q] = (uint8_t)fd_deriv(t, &p->params[idx[q]], H_FD, &d);
        r->skipped += !okg[q];
        r->refined += okg[q] == 2;
        fdg[q] = (float)d;
        ag[q] = g[idx[q]];
    }
    double G = 0.0;
    for (int64_t q = 0; q < total; q++)
        if (okg[q]) G = fmax(G, fabs((double)fdg[q]));
    r->gmax = G;
    r->param_err = masked_normwise(ag, fdg, okg, total, 0.0, 1);
    r->param_all = masked_normwise(ag, fdg, okg, total, 0.0, 0);
    r->entry_err = r->entry_all = 0.0;
    r->worst[0] = r->worst_all[0] = 0;
    for (int k = 0; k < ne; k++) {
        for (int clean = 1; clean >= 0; clean--) {
            double e = masked_normwise(ag + start[k], fdg + start[k], okg + start[k], start[k + 1] - start[k],
                                       floor * G, clean);
            double *dst = clean ? &r->entry_err : &r->entry_all;
            if (!(e <= *dst)) {
                *dst = isnan(e) ? INFINITY : e;
                snprintf(clean ? r->worst : r->worst_all, sizeof r->worst, "%s", p->entries[ent[k]].name);
            }
        }
    }
    for (int64_t i = 0; i < p->n_params; i++)
        if (isnan(g[i])) {
            r->entry_err = INFINITY;
            for (int k = 0; k < p->count; k++)
                if (p->entries[k].kind == FDP_PARAM && i >= p->entries[k].offset &&
                    i < p->entries[k].offset + p->entries[k].numel)
                    snprintf(r->worst, sizeof r->worst, "not written: %.140s", p->entries[k].name);
            break;
        }
    r->checked = total;
    r->entries = ne;
    r->fd = t->n_fd;
    t->scalar = 0;
    t->wy = t->wc = NULL;
    free(idx);
    free(start);
    free(ent);
    free(fdg);
    free(ag);
    free(okg);
    free(okx);
    free(fdx);
    free(wy);
    free(wc);
    free(dx);
    free(g);
}

typedef struct tols {
    double inv, logdet, grad;
    int per_entry;   /* parameter elements checked per tensor (0: all) */
    double floor;    /* per-tensor scale floor, relative to the largest parameter gradient */
} tols;

/* the three checks, printed and asserted */
static void check_all(gcase *t, uint64_t seed, float lo, float hi, const tols *tl) {
    int N = g_nin(t);
    float *x = tu_rand_floats(N, seed, lo, hi);
    printf("[%s] n=%d input %dx%dx%d (%d dims per sample)\n", t->name, t->n, t->c, t->h, t->w, g_din(t));
    double inv = check_inverse(t, x);
    ld_report lr;
    check_logdet(t, x, &lr);
    grad_report gr;
    gc_fd_reset(t);
    check_backward(t, x, tl->per_entry, tl->floor, seed + 100, &gr);
    printf("  inverse  max|x - inv(fwd(x))| %.2e (tol %.0e)\n", inv, tl->inv);
    double ldtol = lr.refined ? fmax(tl->logdet, TOL_LOGDET_REFINED) : tl->logdet;
    printf("  log-det  max|log|det J_fd| - ldj| %.2e (tol %.0e%s)  [max|ldj| %.3f; off-sample-block max %.1e; "
           "FD columns refined %lld, one-sided %lld, unresolved %lld]\n",
           lr.err, ldtol, lr.refined ? ", columns refined" : "", lr.ldmax, lr.off, (long long)lr.refined,
           (long long)lr.onesided, (long long)lr.unresolved);
    printf("  backward (FD at the full step, tol %.0e): input %.2e; params (%lld elements of %lld tensors, max|g| %.3f): "
           "all %.2e, worst tensor %.2e (%s; floor %.0f%%)\n",
           tl->grad, gr.input_err, (long long)gr.checked, (long long)gr.entries, gr.gmax, gr.param_err, gr.entry_err,
           gr.worst, 100.0 * tl->floor);
    printf("  backward (with the %lld derivatives refined near ReLU kinks, tol %.0e): input %.2e, params %.2e, worst "
           "tensor %.2e (%s)  [FD unresolved and left out %lld of %lld]\n",
           (long long)gr.refined, fmax(tl->grad, TOL_GRAD_REFINED), gr.input_all, gr.param_all, gr.entry_all,
           gr.worst_all, (long long)gr.skipped, (long long)gr.fd);
    assert_true(inv <= tl->inv);
    assert_true(lr.err <= ldtol);
    assert_true(lr.off <= 1e-9);
    assert_true((double)lr.unresolved <= MAX_UNRESOLVED * N + 1e-9);
    assert_true(gr.input_err <= tl->grad);
    assert_true(gr.param_err <= tl->grad);
    assert_true(gr.entry_err <= tl->grad);
    assert_true(gr.input_all <= fmax(tl->grad, TOL_GRAD_REFINED));
    assert_true(gr.param_all <= fmax(tl->grad, TOL_GRAD_REFINED));
    assert_true(gr.entry_all <= fmax(tl->grad, TOL_GRAD_REFINED));
    assert_true((double)gr.skipped <= MAX_UNRESOLVED * (double)gr.fd);
    free(x);
}

/* ======================================================================== */
/* the layers' initial values (each layer's inverse, log-det and backward:  */
/* tests/test_flow_layers.c, through the flow-layer registry)               */
/* ======================================================================== */
/* invertible 1x1 convolution: W orthogonal (W W^T = I), and for LU, P L U reconstructs it */
static void check_invconv_init(int lu, uint64_t seed) {
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_params p;
    fdp_params_init(&p);
    fdp_invconv l;
    fdp_invconv_init(&l, &p, "invconv", 4, lu);
    fdp_params_finalize(&p, be);
    fdp_invconv_init_values(&l, &p, p.params, p.buffers, seed);
    fdp_arena *a = fdp_arena_create(1 << 16, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = a, .params = &p, .training = 1, .world_size = 1};
    fdp_tensor x = fdp_arena_tensor(a, 1, 4, 1, 1);
    for (int i = 0; i < 4; i++) x.data[i] = (float)i;
    fdp_invconv_forward(&l, &ctx, x, NULL);
    double orth = 0.0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0.0;
            for (int k = 0; k < 4; k++) s += l.w64[i * 4 + k] * l.w64[j * 4 + k];
            orth = fmax(orth, fabs(s - (i == j)));
        }
    printf("[invconv %s init] max|W W^T - I| %.1e, log|det W| %.1e\n", lu ? "LU" : "plain", orth, l.logdet);
    assert_true(orth < 1e-6);
    assert_true(fabs(l.logdet) < 1e-6);
    fdp_arena_destroy(a);
    fdp_invconv_free(&l);
    fdp_params_free(&p);
    fdp_backend_destroy(be);
}
static void test_invconv_init(void **state) {
    (void)state;
    check_invconv_init(0, 21);
    check_invconv_init(1, 22);
}

/* shuffle: a permutation of 0..5, not the identity for this seed */
static void test_shuffle_init(void **state) {
    (void)state;
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_params p;
    fdp_params_init(&p);
    fdp_permute l;
    fdp_permute_init(&l, &p, "shuffle", 6, 1);
    fdp_params_finalize(&p, be);
    fdp_permute_init_values(&l, &p, p.buffers, 32);
    int seen[6] = {0}, moved = 0;
    for (int c = 0; c < 6; c++) {
        int v = (int)fdp_params_data(&p, l.b_perm)[c];
        assert_true(v >= 0 && v < 6 && !seen[v]);
        seen[v] = 1;
        moved += v != c;
    }
    printf("[shuffle init] a permutation of 0..5 moving %d channels\n", moved);
    assert_true(moved > 0);
    fdp_params_free(&p);
    fdp_backend_destroy(be);
}

/* ReLU pattern of a coupling's NN: sign of (a + b) of both ActNorms (their outputs are relu((a + b) e)) */
static int64_t actnorm_bits(const fdp_params *p, const fdp_actnorm *an, fdp_tensor a, uint8_t *bits, int64_t o) {
    int64_t N = fdp_numel(a), HW = (int64_t)a.h * a.w;
    const float *b = fdp_params_data(p, an->p_b);
    if (bits)
        for (int64_t i = 0; i < N; i++) bits[o + i] = a.data[i] + b[(i / HW) % a.c] > 0.0f;
    return o + N;
}
static int64_t coupling_bits(const fdp_params *p, const fdp_glow_coupling *l, uint8_t *bits, int64_t o) {
    const fdp_glow_nn *nn = (const fdp_glow_nn *)l->nn;
    o = actnorm_bits(p, &nn->an1, nn->a1, bits, o);
    return actnorm_bits(p, &nn->an2, nn->a2, bits, o);
}

static double std_normal_logp(const float *e, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += -0.5 * (1.8378770664093453 + (double)e[i] * e[i]);
    return s;
}

/* ======================================================================== */
/* the whole Glow flow: x -> all eps                                          */
/* ======================================================================== */
static void glow_eval(gcase *t, const float *x, float *y, double *ld, double *obj) {
    fdp_glow *g = t->layer;
    fdp_arena_reset_all(t->arena);
    fdp_tensor xt = gc_input(t, x);
    double *o = gc_zeros(t);
    fdp_tensor eps;
    fdp_glow_flow_forward(g, &t->ctx, xt, o, &eps);
    memcpy(y, eps.data, sizeof(float) * (size_t)g_nout(t));
    for (int s = 0; s < t->n; s++) {
        obj[s] = o[s];
        ld[s] = o[s] - std_normal_logp(eps.data + (size_t)s * t->Dout, t->Dout);
    }
}
static void glow_inv(gcase *t, const float *y, float *x) {
    fdp_arena_reset_all(t->arena);
    fdp_tensor e = gc_input(t, y);
    fdp_tensor z = fdp_glow_flow_inverse(t->layer, &t->ctx, e, 1.0f);
    memcpy(x, z.data, sizeof(float) * (size_t)g_nin(t));
}
static void glow_bwd(gcase *t, const float *x, const float *wy, const float *c, float *dx) {
    (void)wy;
    fdp_arena_reset_all(t->arena);
    fdp_tensor xt = gc_input(t, x);
    double *o = gc_zeros(t);
    fdp_glow_flow_forward(t->layer, &t->ctx, xt, o, NULL);
    float *dl = fdp_arena_alloc(t->arena, sizeof(float) * (size_t)t->n);
    memcpy(dl, c, sizeof(float) * (size_t)t->n);
    fdp_tensor d = fdp_glow_flow_backward(t->layer, &t->ctx, dl);
    memcpy(dx, d.data, sizeof(float) * (size_t)g_nin(t));
}
static int64_t glow_pattern(gcase *t, uint8_t *bits) {
    fdp_glow *g = t->layer;
    int64_t o = 0;
    for (int l = 0; l < g->hp.n_levels; l++)
        for (int k = 0; k < g->hp.depth; k++) o = coupling_bits(t->p, g->levels[l].steps[k].coupling, bits, o);
    return o;
}

static void check_glow(const char *name, int n, int C, int H, int W, fdp_flow_permutation perm,
                       fdp_flow_coupling coupling, int learntop, uint64_t seed) {
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_glow g;
    fdp_err err = {{0}};
    fdp_glow_hparams hp = {.n_levels = 2, .depth = 2, .width = 8, .n_bits_x = 8, .learntop = learntop,
                           .permutation = perm, .coupling = coupling};
    assert_int_equal(fdp_glow_build(&g, &hp, C, H, W, &err), 0);
    fdp_glow_alloc_init(&g, be, seed);
    randomize_params(&g.params, seed + 1);
    gcase t;
    gc_setup(&t, name, be, &g.params, n, C, H, W);
    t.layer = &g;
    t.eval = glow_eval;
    t.inv = glow_inv;
    t.bwd = glow_bwd;
    t.pattern = glow_pattern;
    t.wy_len = 0; /* S = sum(c * objective) */
    /* 4 random elements per parameter tensor; per-tensor scale floored at 5% of the largest
     * parameter gradient: the FD noise of S (~1e-6 absolute / step 1e-2) is ~1e-4 absolute */
    tols tl = {TOL_INV, TOL_LOGDET, TOL_GRAD, 4, 0.05};
    check_all(&t, seed + 2, -0.5f, 0.5f, &tl);
    gc_teardown(&t);
    fdp_glow_free(&g);
    fdp_backend_destroy(be);
}
static void test_glow_affine_lu(void **state) {
    (void)state;
    check_glow("Glow L2 K2 width 8, affine, invconv_lu, learntop", 2, 2, 4, 4, FDP_PERM_INVCONV_LU,
               FDP_COUPLING_AFFINE, 1, 71);
}
static void test_glow_additive_invconv(void **state) {
    (void)state;
    check_glow("Glow L2 K2 width 8, additive, invconv, learntop", 2, 1, 8, 8, FDP_PERM_INVCONV, FDP_COUPLING_ADDITIVE,
               1, 72);
}
static void test_glow_affine_shuffle(void **state) {
    (void)state;
    check_glow("Glow L2 K2 width 8, affine, shuffle, N(0,1) top", 2, 3, 4, 4, FDP_PERM_SHUFFLE, FDP_COUPLING_AFFINE,
               0, 73);
}


/* ======================================================================== */
/* ActNorm data-dependent initialization                                      */
/* ======================================================================== */
static fdp_config tiny_glow_config(void) {
    fdp_config cfg;
    fdp_err err = {{0}};
    fdp_config_defaults(&cfg);
    const char *ini = "[model]\ntype = glow\nn_levels = 2\ndepth = 2\nwidth = 8\nflow_permutation = invconv_lu\n"
                      "flow_coupling = affine\nlearntop = true\n";
    if (fdp_config_load_string(&cfg, ini, "tiny glow", &err) != 0) fail_msg("%s", err.msg);
    return cfg;
}

/* random 8-bit images as the trainer passes them (integers / 255) and noise in [0,1) */
static void random_batch(float *x, float *u, int64_t n, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)(floor(tu_uniform(&s, 0.0, 256.0)) / 255.0);
        u[i] = (float)tu_uniform(&s, 0.0, 1.0);
    }
}

/* per channel of (x + b)*e over (n, hw): max |mean| and max |std - 1| (biased std, in double) */
static void normalized_stats(const fdp_params *p, const fdp_actnorm *an, fdp_tensor x, double *mean_err, double *std_err) {
    const float *b = fdp_params_data(p, an->p_b), *ls = fdp_params_data(p, an->p_logs);
    int64_t HW = (int64_t)x.h * x.w;
    for (int c = 0; c < x.c; c++) {
        double s = 0.0, q = 0.0, e = exp(3.0 * ls[c]);
        for (int n = 0; n < x.n; n++)
            for (int64_t i = 0; i < HW; i++) {
                double v = ((double)x.data[((int64_t)n * x.c + c) * HW + i] + b[c]) * e;
                s += v;
                q += v * v;
            }
        double cnt = (double)x.n * HW, m = s / cnt;
        *mean_err = fmax(*mean_err, fabs(m));
        *std_err = fmax(*std_err, fabs(sqrt(q / cnt - m * m) - 1.0));
    }
}

static void test_actnorm_ddi(void **state) {
    (void)state;
    fdp_config cfg = tiny_glow_config();
    fdp_backend *be = fdp_backend_cpu_create(2);
    fdp_model *m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_model_create(&cfg, 1, 8, 8, be, 3, &m, &err), 0);
    fdp_glow *g = m->impl;
    fdp_params *p = m->params;
    fdp_arena *arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    int n = 16;
    int64_t N = (int64_t)n * 64;
    float *hx = malloc(sizeof(float) * (size_t)N), *hu = malloc(sizeof(float) * (size_t)N);
    random_batch(hx, hu, N, 81);

    /* evaluation mode never initializes */
    fdp_ctx ectx = {.be = be, .arena = arena, .params = p, .training = 0, .world_size = 1, .no_grad = 1};
    fdp_tensor x = fdp_arena_tensor(arena, n, 1, 8, 8), u = fdp_arena_tensor(arena, n, 1, 8, 8);
    memcpy(x.data, hx, sizeof(float) * (size_t)N);
    memcpy(u.data, hu, sizeof(float) * (size_t)N);
    fdp_model_loss_xu(m, &ectx, x, u, NULL);
    int flags = 0, set = 0;
    for (int i = 0; i < p->count; i++)
        if (tu_ends_with(p->entries[i].name, ".initialized")) {
            flags++;
            set += fdp_params_data(p, i)[0] != 0.0f;
        }
    assert_int_equal(set, 0);
    assert_int_equal(flags, 2 * 2 * 3); /* 2 levels x 2 steps x (flow ActNorm + 2 in the NN) */

    /* the first training forward initializes every ActNorm from its input */
    fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = 1, .world_size = 1};
    fdp_arena_reset_all(arena);
    x = fdp_arena_tensor(arena, n, 1, 8, 8);
    u = fdp_arena_tensor(arena, n, 1, 8, 8);
    memcpy(x.data, hx, sizeof(float) * (size_t)N);
    memcpy(u.data, hu, sizeof(float) * (size_t)N);
    double nll = fdp_model_loss_xu(m, &ctx, x, u, NULL);
    double me = 0.0, se = 0.0;
    for (int l = 0; l < g->hp.n_levels; l++)
        for (int k = 0; k < g->hp.depth; k++) {
            fdp_glow_step *st = &g->levels[l].steps[k];
            const fdp_glow_nn *nn = (const fdp_glow_nn *)st->coupling->nn;
            normalized_stats(p, st->actnorm, st->actnorm->x, &me, &se);
            normalized_stats(p, &nn->an1, nn->a1, &me, &se);
            normalized_stats(p, &nn->an2, nn->a2, &me, &se);
        }
    set = 0;
    for (int i = 0; i < p->count; i++)
        if (tu_ends_with(p->entries[i].name, ".initialized")) set += fdp_params_data(p, i)[0] == 1.0f;
    printf("[ActNorm init] %d ActNorms initialized by the first training batch (nll %.2f): outputs per channel "
           "max|mean| %.1e, max|std - 1| %.1e\n",
           set, nll, me, se);
    assert_int_equal(set, flags);
    assert_true(me < 1e-5 && se < 1e-4);
    /* ... and never again: a second training step leaves b, logs alone */
    float *before = malloc(sizeof(float) * (size_t)p->n_params);
    memcpy(before, p->params, sizeof(float) * (size_t)p->n_params);
    random_batch(hx, hu, N, 82);
    fdp_arena_reset_all(arena);
    x = fdp_arena_tensor(arena, n, 1, 8, 8);
    u = fdp_arena_tensor(arena, n, 1, 8, 8);
    memcpy(x.data, hx, sizeof(float) * (size_t)N);
    memcpy(u.data, hu, sizeof(float) * (size_t)N);
    fdp_model_loss_xu(m, &ctx, x, u, NULL);
    assert_memory_equal(before, p->params, sizeof(float) * (size_t)p->n_params);
    free(before);
    free(hx);
    free(hu);
    fdp_arena_destroy(arena);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_config_free(&cfg);
}

/* ---- two ranks simulated by two threads and an all-reduce over shared memory ---- */
typedef struct fake_world {
    pthread_barrier_t bar;
    double *slot[2];
    int calls[2];
} fake_world;
typedef struct fake_rank {
    fake_world *w;
    int rank;
} fake_rank;

/* sum in rank order (both ranks get the same bits), like MPI_Allreduce */
static void fake_allreduce(void *comm, double *buf, int count) {
    fake_rank *r = comm;
    fake_world *w = r->w;
    w->slot[r->rank] = buf;
    w->calls[r->rank]++;
    pthread_barrier_wait(&w->bar);
    double *tmp = malloc(sizeof(double) * (size_t)(count > 0 ? count : 1));
    for (int i = 0; i < count; i++) tmp[i] = w->slot[0][i] + w->slot[1][i];
    pthread_barrier_wait(&w->bar);
    memcpy(buf, tmp, sizeof(double) * (size_t)count);
    free(tmp);
}

typedef struct rank_job {
    fake_rank fr;
    const fdp_config *cfg;
    const float *x, *u; /* this rank's slice */
    int n, world;
    double nll;
    float *params, *grads; /* out (n_params) */
    int64_t np;
    int ok;
} rank_job;

static void *rank_main(void *arg) {
    rank_job *j = arg;
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m = NULL;
    fdp_err err = {{0}};
    j->ok = fdp_model_create(j->cfg, 1, 8, 8, be, 5, &m, &err) == 0;
    if (j->ok) {
        fdp_arena *arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
        fdp_ctx ctx = {.be = be, .arena = arena, .params = m->params, .training = 1, .world_size = j->world};
        if (j->world > 1) {
            ctx.allreduce_f64 = fake_allreduce;
            ctx.comm = &j->fr;
        }
        int64_t N = (int64_t)j->n * 64;
        fdp_tensor x = fdp_arena_tensor(arena, j->n, 1, 8, 8), u = fdp_arena_tensor(arena, j->n, 1, 8, 8);
        memcpy(x.data, j->x, sizeof(float) * (size_t)N);
        memcpy(u.data, j->u, sizeof(float) * (size_t)N);
        j->nll = fdp_model_loss_xu(m, &ctx, x, u, NULL);
        m->backward(m, &ctx, 1.0f);
        j->np = m->params->n_params;
        j->params = malloc(sizeof(float) * (size_t)j->np);
        j->grads = malloc(sizeof(float) * (size_t)j->np);
        memcpy(j->params, m->params->params, sizeof(float) * (size_t)j->np);
        memcpy(j->grads, m->params->grads, sizeof(float) * (size_t)j->np);
        fdp_arena_destroy(arena);
        fdp_model_destroy(m);
    }
    fdp_backend_destroy(be);
    return NULL;
}

static void test_actnorm_ddi_two_ranks(void **state) {
    (void)state;
    fdp_config cfg = tiny_glow_config();
    int B = 4;
    int64_t N = (int64_t)2 * B * 64;
    float *x = malloc(sizeof(float) * (size_t)N), *u = malloc(sizeof(float) * (size_t)N);
    random_batch(x, u, N, 91);
    /* one rank, the concatenated batch */
    rank_job ref = {.cfg = &cfg, .x = x, .u = u, .n = 2 * B, .world = 1};
    rank_main(&ref);
    assert_true(ref.ok);
    /* two ranks, B images each */
    fake_world w;
    memset(&w, 0, sizeof w);
    pthread_barrier_init(&w.bar, NULL, 2);
    rank_job r[2];
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        rank_job j = {.fr = {&w, k}, .cfg = &cfg, .x = x + (size_t)k * B * 64, .u = u + (size_t)k * B * 64, .n = B, .world = 2};
        r[k] = j;
        assert_int_equal(pthread_create(&th[k], NULL, rank_main, &r[k]), 0);
    }
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    pthread_barrier_destroy(&w.bar);
    assert_true(r[0].ok && r[1].ok);
    assert_int_equal(r[0].np, ref.np);

    /* the table, to find the ActNorm entries */
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_model_create(&cfg, 1, 8, 8, be, 5, &m, &err), 0);
    const fdp_params *p = m->params;
    double worst = 0.0;
    int nan_entries = 0, tensors = 0, same = 1;
    char worst_name[FDP_NAME_MAX] = "none differs";
    for (int i = 0; i < p->count; i++) {
        const fdp_param_entry *e = &p->entries[i];
        if (e->kind != FDP_PARAM) continue;
        if (!(strstr(e->name, "actnorm.b") || strstr(e->name, "actnorm.logs"))) continue;
        tensors++;
        const float *a = ref.params + e->offset, *b0 = r[0].params + e->offset, *b1 = r[1].params + e->offset;
        same &= memcmp(b0, b1, sizeof(float) * (size_t)e->numel) == 0;
        double er = fmax(tu_normwise_err(b0, a, e->numel, 1e-3), tu_normwise_err(b1, a, e->numel, 1e-3));
        nan_entries += isnan(er);
        if (er > worst) {
            worst = er;
            snprintf(worst_name, sizeof worst_name, "%s", e->name);
        }
    }
    double nll2 = 0.5 * (r[0].nll + r[1].nll), enll = fabs(nll2 - ref.nll) / fabs(ref.nll);
    float *gavg = malloc(sizeof(float) * (size_t)ref.np);
    for (int64_t i = 0; i < ref.np; i++) gavg[i] = 0.5f * (r[0].grads[i] + r[1].grads[i]);
    double eg = tu_normwise_err(gavg, ref.grads, ref.np, 0.0);
    double eall = fmax(tu_normwise_err(r[0].params, ref.params, ref.np, 0.0), tu_normwise_err(r[1].params, ref.params, ref.np, 0.0));
    printf("[ActNorm init, 2 ranks x %d vs 1 rank x %d] %d all-reduces per rank; %d ActNorm b/logs tensors: ranks "
           "bit-identical %s, worst relative difference to 1 rank %.2e (%s; tol 1e-6); all parameters %.2e; "
           "loss %.2e; averaged gradients %.2e (tol 1e-5)\n",
           B, 2 * B, w.calls[0], tensors, same ? "yes" : "NO", worst, worst_name, eall, enll, eg);
    assert_int_equal(w.calls[0], 12);
    assert_true(same);
    assert_int_equal(nan_entries, 0);
    assert_true(worst <= 1e-6);
    assert_true(enll <= 1e-6);
    assert_true(eg <= 1e-5);
    free(gavg);
    for (int k = 0; k < 2; k++) {
        free(r[k].params);
        free(r[k].grads);
    }
    free(ref.params);
    free(ref.grads);
    free(x);
    free(u);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_config_free(&cfg);
}

/* ======================================================================== */
/* evaluation mode (no_grad) and the gradient-bucket hook                     */
/* ======================================================================== */
typedef struct ready_log {
    int *count;   /* per table entry */
    int calls, out_of_order, last_first;
} ready_log;
static void record_ready(void *user, int first, int last) {
    ready_log *r = user;
    for (int i = first; i <= last; i++) r->count[i]++;
    if (r->calls && last >= r->last_first) r->out_of_order++;
    r->last_first = first;
    r->calls++;
}

static void test_nograd_and_hook(void **state) {
    (void)state;
    fdp_config cfg = tiny_glow_config();
    fdp_err err = {{0}};
    assert_int_equal(fdp_config_set(&cfg, "model.depth=6", &err), 0);
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m;
    assert_int_equal(fdp_model_create(&cfg, 1, 8, 8, be, 7, &m, &err), 0);
    fdp_params *p = m->params;
    randomize_params(p, 101);
    int n = 8;
    int64_t N = (int64_t)n * 64;
    float *hx = malloc(sizeof(float) * (size_t)N), *hu = malloc(sizeof(float) * (size_t)N);
    random_batch(hx, hu, N, 102);
    double nll_t[8], nll_e[8];
    size_t peak[2];
    ready_log rl = {calloc((size_t)p->count, sizeof(int)), 0, 0, 0};
    for (int mode = 0; mode < 2; mode++) {
        fdp_arena *arena = fdp_arena_create(1 << 16, NULL, NULL, NULL, FDP_DEVICE_CPU);
        fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = !mode, .world_size = 1, .no_grad = mode};
        if (!mode) {
            ctx.grads_ready = record_ready;
            ctx.grads_ready_user = &rl;
        }
        fdp_tensor x = fdp_arena_tensor(arena, n, 1, 8, 8), u = fdp_arena_tensor(arena, n, 1, 8, 8);
        memcpy(x.data, hx, sizeof(float) * (size_t)N);
        memcpy(u.data, hu, sizeof(float) * (size_t)N);
        fdp_model_loss_xu(m, &ctx, x, u, mode ? nll_e : nll_t);
        peak[mode] = fdp_arena_peak(arena);
        if (!mode) m->backward(m, &ctx, 1.0f);
        fdp_arena_destroy(arena);
    }
    double d = 0.0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs(nll_e[i] - nll_t[i]));
    int params = 0, once = 0, buffers_marked = 0;
    for (int i = 0; i < p->count; i++) {
        if (p->entries[i].kind == FDP_PARAM) {
            params++;
            once += rl.count[i] == 1;
        } else {
            buffers_marked += rl.count[i] > 1;
        }
    }
    printf("[no_grad] K 6: evaluation-mode nll = training-mode nll within %.1e; forward arena peak %zu KiB (no_grad) "
           "vs %zu KiB (stored activations)\n"
           "[grads_ready] %d calls in backward, every one of %d parameter tensors reported exactly once: %s, "
           "ranges in reverse table order: %s\n",
           d, peak[1] >> 10, peak[0] >> 10, rl.calls, params, once == params ? "yes" : "NO",
           rl.out_of_order ? "NO" : "yes");
    assert_true(d == 0.0);
    assert_true(peak[1] * 3 < peak[0]);
    assert_int_equal(once, params);
    assert_int_equal(buffers_marked, 0);
    assert_int_equal(rl.out_of_order, 0);
    free(rl.count);
    free(hx);
    free(hu);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_config_free(&cfg);
}

/* ======================================================================== */
/* bad configurations                                                         */
/* ======================================================================== */
static void expect_model_refused(const fdp_config *cfg, int C, int H, int W, const char *const *parts) {
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m = (fdp_model *)1;
    fdp_err err = {{0}};
    int r = fdp_model_create(cfg, C, H, W, be, 0, &m, &err);
    printf("[fdp_model_create] %dx%dx%d: %d \"%s\"\n", C, H, W, r, err.msg);
    assert_int_equal(r, -1);
    assert_null(m);
    assert_null(strchr(err.msg, '\n'));
    for (int i = 0; parts[i]; i++)
        if (!strstr(err.msg, parts[i])) fail_msg("message \"%s\" does not contain \"%s\"", err.msg, parts[i]);
    fdp_backend_destroy(be);
}

static void expect_set_refused(const char *assignment, const char *part) {
    fdp_config cfg = tiny_glow_config();
    fdp_err err = {{0}};
    int r = fdp_config_set(&cfg, assignment, &err);
    printf("[fdp_config_set] %s: %d \"%s\"\n", assignment, r, err.msg);
    assert_int_equal(r, -1);
    if (!strstr(err.msg, part)) fail_msg("message \"%s\" does not contain \"%s\"", err.msg, part);
    fdp_config_free(&cfg);
}

static void test_bad_configs(void **state) {
    (void)state;
    /* the config table refuses these values ... */
    expect_set_refused("model.depth=0", "depth");
    expect_set_refused("model.n_bits_x=9", "n_bits_x");
    expect_set_refused("model.flow_permutation=lu_decomposed", "flow_permutation");
    expect_set_refused("model.n_levels=0", "n_levels");
    /* ... and the builder refuses them too when a field is set directly */
    fdp_config cfg = tiny_glow_config();
    cfg.model.depth = 0;
    const char *const a[] = {"depth K = 0", "level 1", NULL};
    expect_model_refused(&cfg, 1, 8, 8, a);
    cfg.model.depth = 2;
    cfg.model.n_bits_x = 9;
    const char *const b[] = {"n_bits_x = 9", "1..8", NULL};
    expect_model_refused(&cfg, 1, 8, 8, b);
    cfg.model.n_bits_x = 8;
    cfg.model.flow_permutation = (fdp_flow_permutation)7;
    const char *const c[] = {"flow_permutation = 7", "unknown", NULL};
    expect_model_refused(&cfg, 1, 8, 8, c);
    cfg.model.flow_permutation = FDP_PERM_SHUFFLE;
    /* shapes: Fashion-MNIST with 3 levels: 28 -> 14 -> 7 -> cannot squeeze at level 2 */
    fdp_err err = {{0}};
    assert_int_equal(fdp_config_set(&cfg, "model.n_levels=3", &err), 0);
    const char *const d[] = {"level 3 of 3", "7x7", "cannot be squeezed", "odd height", "divisible by 8", NULL};
    expect_model_refused(&cfg, 1, 28, 28, d);
    const char *const e[] = {"level 1 of 3", "6x5", "odd width", NULL};
    expect_model_refused(&cfg, 3, 6, 5, e);
    /* and what works: 28x28 with 2 levels, 32x32 with 3 */
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m;
    assert_int_equal(fdp_model_create(&cfg, 3, 32, 32, be, 0, &m, &err), 0);
    fdp_glow *g = m->impl;
    assert_int_equal(g->topC, 48);
    assert_int_equal(g->topH, 4);
    fdp_model_destroy(m);
    assert_int_equal(fdp_config_set(&cfg, "model.n_levels=2", &err), 0);
    assert_int_equal(fdp_model_create(&cfg, 1, 28, 28, be, 0, &m, &err), 0);
    g = m->impl;
    assert_int_equal(g->levels[1].C, 8);
    assert_int_equal(g->levels[1].H, 7);
    assert_int_equal(m->n_bins, 256);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_config_free(&cfg);
}

/* ======================================================================== */
/* preprocessing, Adamax, EMA                                                 */
/* ======================================================================== */
static void test_preprocess_roundtrip(void **state) {
    (void)state;
    fdp_backend *be = fdp_backend_cpu_create(1);
    float x[256], u[256], y[256], z[256];
    for (int i = 0; i < 256; i++) {
        x[i] = (float)(i / 255.0);
        u[i] = 0.5f;
    }
    int bits[3] = {8, 5, 1};
    for (int b = 0; b < 3; b++) {
        int nb = 1 << bits[b], div = 256 / nb;
        fdp_glow_preprocess_args pa = {x, u, y, (float)div, (float)nb};
        be->glow_preprocess(be, 256, &pa);
        fdp_glow_postprocess_args qa = {y, z, (float)nb};
        be->glow_postprocess(be, 256, &qa);
        double epre = 0.0, epost = 0.0;
        for (int i = 0; i < 256; i++) {
            epre = fmax(epre, fabs(y[i] - ((i / div + 0.5) / nb - 0.5)));
            epost = fmax(epost, fabs(z[i] - (double)(i / div * div) / 255.0));
        }
        printf("[preprocess n_bits_x %d] y = (bin + u)/n_bins - 0.5 within %.1e; postprocess(y) = bin*%d/255 within %.1e\n",
               bits[b], epre, div, epost);
        assert_true(epre < 1e-6 && epost < 1e-6);
    }
    fdp_backend_destroy(be);
}

static void test_adamax_ema(void **state) {
    (void)state;
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_params p;
    fdp_params_init(&p);
    int64_t s3[1] = {3}, s2[1] = {2};
    fdp_params_add(&p, "a", FDP_PARAM, 0, 1, s3);
    fdp_params_add(&p, "flag", FDP_BUFFER, 0, 0, NULL);
    fdp_params_add(&p, "b", FDP_PARAM, FDP_PFLAG_WEIGHT_DECAY, 1, s2);
    fdp_params_finalize(&p, be);
    double ref[5], m[5] = {0}, uu[5] = {0};
    for (int i = 0; i < 5; i++) ref[i] = p.params[i] = (float)(0.1 * i - 0.2);
    const float b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.01f, lr = 1e-2f, gs = 0.5f;
    for (int openai = 0; openai < 2; openai++) {
        fdp_adamax o;
        fdp_adamax_init(&o, &p, b1, b2, eps, wd);
        o.openai_lr = openai;
        for (int i = 0; i < 5; i++) m[i] = uu[i] = 0.0;
        double err = 0.0;
        for (int t = 1; t <= 4; t++) {
            for (int i = 0; i < 5; i++) p.grads[i] = (float)(sin(1.0 + i * 0.7 + t) * (i + 1));
            for (int i = 0; i < 5; i++) {
                double g = (double)p.grads[i] * gs + (i >= 3 ? (double)wd * ref[i] : 0.0);
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                uu[i] = fmax(b2 * uu[i], fabs(g));
                double step = lr / (1.0 - pow(b1, t)) * (openai ? sqrt(1.0 - pow(b2, t)) : 1.0);
                ref[i] -= step * m[i] / (uu[i] + eps);
            }
            fdp_adamax_step(&o, &p, lr, gs);
            for (int i = 0; i < 5; i++) err = fmax(err, fabs(p.params[i] - ref[i]));
        }
        printf("[Adamax%s] 4 steps (clip factor %.1f, weight decay on 'b' only) vs double reference: max abs %.1e\n",
               openai ? ", openai lr" : "", gs, err);
        assert_true(err < 1e-6);
        assert_true(fabs(p.grads[0] - (float)(sin(1.0 + 4) * 1) * gs) < 1e-6); /* the clipped gradient written back */
        fdp_adamax_free(&o);
        for (int i = 0; i < 5; i++) p.params[i] = (float)ref[i];
    }
    /* EMA */
    fdp_ema e;
    float w0[5], w1[5];
    memcpy(w0, p.params, sizeof w0);
    fdp_ema_init(&e, &p, 0.9f);
    assert_memory_equal(e.w, p.params, sizeof w0);
    for (int i = 0; i < 5; i++) p.params[i] += 1.0f;
    fdp_ema_update(&e, &p); /* first update: a copy */
    assert_memory_equal(e.w, p.params, sizeof w0);
    memcpy(w1, p.params, sizeof w1);
    for (int i = 0; i < 5; i++) p.params[i] = w1[i] + 2.0f;
    fdp_ema_update(&e, &p); /* 0.9*w1 + 0.1*(w1 + 2) = w1 + 0.2 */
    double ee = 0.0;
    for (int i = 0; i < 5; i++) ee = fmax(ee, fabs(e.w[i] - (w1[i] + 0.2)));
    float cur[5], ema[5];
    memcpy(cur, p.params, sizeof cur);
    memcpy(ema, e.w, sizeof ema);
    fdp_ema_swap(&e, &p);
    assert_memory_equal(p.params, ema, sizeof ema);
    assert_memory_equal(e.w, cur, sizeof cur);
    fdp_ema_swap(&e, &p);
    assert_memory_equal(p.params, cur, sizeof cur);
    float out[5];
    fdp_ema_copy_to(&e, out);
    assert_memory_equal(out, ema, sizeof ema);
    printf("[EMA] first update copies, then ema = 0.9 ema + 0.1 p within %.1e; swap twice restores exactly\n", ee);
    assert_true(ee < 1e-6);
    assert_int_equal(e.updates, 2);
    fdp_ema_free(&e);
    fdp_params_free(&p);
    fdp_backend_destroy(be);
}

/* ======================================================================== */
/* a short training run of configs/glow_tiny.ini                              */
/* ======================================================================== */
static void test_train_smoke(void **state) {
    (void)state;
    const char *src = getenv("FLOWDP_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/configs/glow_tiny.ini", src && *src ? src : "..");
    fdp_config cfg;
    fdp_err err = {{0}};
    fdp_config_defaults(&cfg);
    if (fdp_config_load_file(&cfg, path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(cfg.model.type, FDP_MODEL_GLOW);
    fdp_dataset ds;
    if (fdp_dataset_load("idx", cfg.data.train, 1, 256, &ds, &err) != 0) {
        printf("[train smoke] skipped: %s\n", err.msg);
        fdp_config_free(&cfg);
        skip();
    }
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m;
    uint64_t seed = (uint64_t)cfg.train.seed;
    assert_int_equal(fdp_model_create(&cfg, ds.c, ds.h, ds.w, be, seed, &m, &err), 0);
    fdp_params *p = m->params;
    fdp_adamax opt;
    fdp_adamax_init(&opt, p, (float)cfg.train.adam_beta1, (float)cfg.train.adam_beta2, (float)cfg.train.adam_eps,
                    (float)cfg.train.weight_decay);
    fdp_ema ema;
    fdp_ema_init(&ema, p, (float)cfg.train.ema);
    fdp_arena *arena = fdp_arena_create(8 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    int B = 16, steps = 30; /* 16, not the config's 32: the sanitizer build's element-wise loops dominate */
    int64_t D = (int64_t)ds.c * ds.h * ds.w;
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)B);
    double nll[30];
    fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = 1, .world_size = 1};
    for (int s = 0; s < steps; s++) {
        fdp_arena_reset_all(arena);
        for (int i = 0; i < B; i++) idx[i] = ((int64_t)s * B + i) % ds.n;
        fdp_tensor x = fdp_arena_tensor(arena, B, ds.c, ds.h, ds.w), u = fdp_arena_tensor(arena, B, ds.c, ds.h, ds.w);
        int64_t *di = fdp_arena_alloc(arena, sizeof(int64_t) * (size_t)B);
        memcpy(di, idx, sizeof(int64_t) * (size_t)B);
        fdp_dataset_gather_float(&ds, idx, B, x.data);
        fdp_philox_fill_args na = {u.data, di, D, seed, (uint32_t)((int64_t)s * B / ds.n), FDP_RNG_DEQUANT, 0};
        be->philox_fill(be, B * D, &na);
        nll[s] = fdp_model_loss_xu(m, &ctx, x, u, NULL);
        m->backward(m, &ctx, 1.0f);
        double gn = fdp_grad_global_norm(p);
        assert_true(isfinite(nll[s]) && isfinite(gn));
        fdp_adamax_step(&opt, p, (float)cfg.train.lr, fdp_clip_factor(gn, cfg.train.max_grad_norm));
        fdp_ema_update(&ema, p);
    }
    double first = 0.0, last = 0.0;
    for (int s = 0; s < 5; s++) {
        first += nll[s] / 5;
        last += nll[steps - 5 + s] / 5;
    }
    printf("[train smoke] %s: %d steps of %d Fashion-MNIST images (of %lld), Adamax lr %.0e: bpd %.3f (first 5 steps) "
           "-> %.3f (last 5)\n",
           path, steps, B, (long long)ds.n, cfg.train.lr, fdp_bpd(first, D), fdp_bpd(last, D));
    assert_true(last < first - 0.05 * D * log(2.0)); /* at least 0.05 bpd better */

    /* samples: finite, in [0,1], at T 0.5 and 1, raw and EMA weights */
    fdp_ctx sctx = {.be = be, .arena = arena, .params = p, .training = 0, .world_size = 1, .no_grad = 1};
    float temps[2] = {0.5f, 1.0f};
    for (int use_ema = 0; use_ema < 2; use_ema++) {
        if (use_ema) fdp_ema_swap(&ema, p);
        for (int k = 0; k < 2; k++) {
            fdp_arena_reset_all(arena);
            int n = 8;
            fdp_tensor z = fdp_arena_tensor(arena, n, ds.c, ds.h, ds.w);
            int64_t *di = fdp_arena_alloc(arena, sizeof(int64_t) * (size_t)n);
            for (int i = 0; i < n; i++) di[i] = i;
            fdp_philox_fill_args pa = {z.data, di, D, seed, 0, FDP_RNG_PRIOR, 1};
            be->philox_fill(be, n * D, &pa);
            fdp_tensor img = m->sample(m, &sctx, z, temps[k]);
            int bad = 0;
            double mean = 0.0;
            for (int64_t i = 0; i < fdp_numel(img); i++) {
                float v = img.data[i];
                bad += !(v >= 0.0f && v <= 1.0f);
                mean += v / (double)fdp_numel(img);
            }
            printf("  samples %s, T %.1f: %d values outside [0,1] or not finite; mean pixel %.3f\n",
                   use_ema ? "EMA" : "raw", temps[k], bad, mean);
            assert_int_equal(bad, 0);
        }
        if (use_ema) fdp_ema_swap(&ema, p);
    }
    free(idx);
    fdp_arena_destroy(arena);
    fdp_ema_free(&ema);
    fdp_adamax_free(&opt);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_dataset_free(&ds);
    fdp_config_free(&cfg);
}

/* ======================================================================== */
/* the shipped Glow configs load, validate and build for their images        */
/* ======================================================================== */
static void test_configs_build(void **state) {
    (void)state;
    const char *src = getenv("FLOWDP_SOURCE_DIR");
    struct {
        const char *file;
        int C, H, W;
    } cfgs[] = {{"glow_tiny.ini", 1, 28, 28},
                {"glow_cifar10.ini", 3, 32, 32},
                {"glow_imagenet32.ini", 3, 32, 32},
                {"glow_imagenet64.ini", 3, 64, 64}};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/configs/%s", src && *src ? src : "..", cfgs[i].file);
        fdp_config cfg;
        fdp_err err = {{0}};
        fdp_config_defaults(&cfg);
        if (fdp_config_load_file(&cfg, path, &err) != 0 || fdp_config_validate(&cfg, &err) != 0)
            fail_msg("%s", err.msg);
        assert_int_equal(cfg.model.type, FDP_MODEL_GLOW);
        fdp_glow g;
        fdp_glow_hparams hp;
        fdp_glow_hparams_from_config(&cfg, &hp);
        if (fdp_glow_build(&g, &hp, cfgs[i].C, cfgs[i].H, cfgs[i].W, &err) != 0) fail_msg("%s: %s", path, err.msg);
        printf("[%s] %dx%dx%d: L %d K %d width %d, %s, %s: %.2fM parameters, %d table entries, top %dx%dx%d; "
               "%s, batch %d, lr %g, warmup %lld, ema %g\n",
               cfgs[i].file, cfgs[i].C, cfgs[i].H, cfgs[i].W, hp.n_levels, hp.depth, hp.width,
               fdp_config_enum_name("model", "flow_permutation", (int)hp.permutation),
               fdp_config_enum_name("model", "flow_coupling", (int)hp.coupling), (double)g.params.n_params / 1e6,
               g.params.count, g.topC, g.topH, g.topW, fdp_config_enum_name("train", "optimizer", cfg.train.optimizer),
               cfg.train.batch_size, cfg.train.lr, (long long)cfg.train.warmup_steps, cfg.train.ema);
        assert_int_equal(cfg.train.optimizer, FDP_OPT_ADAMAX);
        fdp_glow_free(&g);
        fdp_config_free(&cfg);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invconv_init),
        cmocka_unit_test(test_shuffle_init),
        cmocka_unit_test(test_glow_affine_lu),
        cmocka_unit_test(test_glow_additive_invconv),
        cmocka_unit_test(test_glow_affine_shuffle),
        cmocka_unit_test(test_actnorm_ddi),
        cmocka_unit_test(test_actnorm_ddi_two_ranks),
        cmocka_unit_test(test_nograd_and_hook),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_preprocess_roundtrip),
        cmocka_unit_test(test_adamax_ema),
        cmocka_unit_test(test_configs_build),
        cmocka_unit_test(test_train_smoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
