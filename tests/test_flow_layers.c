/* test_flow_layers.c — one finite-difference harness over every registered layer (flow.h's
 * FDP_FLOW_KINDS, every variant of each kind's example) and every registered conditioning
 * network (condnet.h's FDP_CONDNET_KINDS): a new layer is tested by being registered. A kind
 * registered without an example fails, by name.
 *
 * Each example runs on the CPU backend with its parameters allocated, initialized by its own
 * init_values, then every parameter element perturbed by U(-0.1, 0.1) (nothing trivially zero:
 * Glow's Conv2dZeros, a zero-initialized ActNorm; buffers such as permutations, LU P / signs,
 * running statistics and flags are kept), and one training forward run first (ActNorm's
 * data-dependent init happens there, before any check). Batches of 2, inputs in (0.1, 0.9)
 * (the logit's domain is (0, 1)). Every forward starts from the saved buffers, so training
 * forwards (BatchNorm running statistics) all see the same state. Checks, one line each with
 * its worst error and tolerance:
 *  1. inverse: inverse(forward(x)) == x in evaluation and training mode (factor-out layers
 *     write the latent they leave in ctx.latent, temperature 1, and their inverse reads it);
 *  2. log-det, evaluation mode: per sample, forward's log-det against log|det J| of the FD
 *     Jacobian of that sample's block (LU in double; the other samples' outputs must not move).
 *     A factor-out layer is seen as the bijection x -> (y, latent slice): its sldj minus the
 *     standard-normal log-density of the latent slice is that log-det;
 *  3. backward against FD of L = sum(w * y) + sum_n a_n * sldj_n (w, a random), in training mode
 *     and, when a training forward changes buffers (batch statistics), in evaluation mode too:
 *     dx (ctx.input_grad = 1, every element) and the parameter gradients (up to PER_ENTRY random
 *     elements per tensor; gradients pre-filled with NaN, so an unwritten one fails);
 *  4. the rebuild pair: fdp_flow_forward_inplace + fdp_flow_backward_rebuild (native or generic)
 *     against forward + backward, training mode: y, sldj, dx, every parameter gradient, the
 *     rebuilt x (normwise 1e-4), the buffers (running statistics updated once), and the arena
 *     back at its mark (forward_inplace may keep what a factor-out layer leaves below it);
 *  5. every condnet: backward (dx and parameter gradients) against FD of sum(w * h), in training
 *     mode (and evaluation mode with batch statistics); dx accumulated when asked, and the same
 *     parameter gradients when dx is not wanted.
 * FD (flow_fd.c): Richardson-extrapolated central differences from step 1e-2 down, taken only
 * from points with x's ReLU sign pattern (the case's backend reports every ReLU's sign: the
 * derivative of x's smooth piece, what backward computes), one-sided next to a kink. Tolerances are those of the harnesses this replaces
 * (test_bijections.c, test_glow.c): log-det 1e-4 absolute with every column at the first steps,
 * 1e-3 when a column needed smaller ones; gradients 1e-2 normwise (per tensor, its scale floored
 * at 2% of the largest parameter gradient: several true gradients are ~0); at most 5% of the
 * derivatives unresolved (left out). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_fd.h"

#define TOL_INV 1e-5            /* max |x - inverse(forward(x))| */
#define TOL_LOGDET 1e-4         /* abs, every FD column at the first steps */
#define TOL_LOGDET_REFINED 1e-3 /* abs, some columns at smaller steps (kinks) */
#define TOL_OFFBLOCK 1e-9       /* evaluation mode: samples independent */
#define TOL_GRAD 1e-2           /* normwise */
#define GRAD_FLOOR 0.02        /* per-tensor scale floor, relative to the largest parameter gradient */
#define TOL_GRAD_KINK 5e-2      /* normwise, with the derivatives taken near a kink (smaller or one-sided steps) */
#define MAX_UNRESOLVED 0.05     /* fraction of FD derivatives left out */
#define PER_ENTRY 8             /* parameter elements checked per tensor */
#define TOL_REBUILD 1e-4        /* normwise, rebuild pair vs forward + backward */

/* ---- 1. inverse ---- */
static void check_inverse(lcase *t) {
    double err[2];
    for (int mode = 0; mode < 2; mode++) {
        t->ctx.training = mode;
        double *sldj;
        fdp_tensor y = lc_forward(t, t->x, NULL, &sldj);
        fdp_tensor xr = t->l->ops->inverse(t->l, &t->ctx, y);
        if (xr.n != t->n || xr.c != t->c || xr.h != t->h || xr.w != t->w)
            fail_msg("[%s] inverse returned %dx%dx%dx%d for a %dx%dx%dx%d input", t->name, xr.n, xr.c, xr.h, xr.w, t->n,
                     t->c, t->h, t->w);
        err[mode] = tu_max_abs_diff(xr.data, t->x, t->n * t->din);
    }
    printf("[%s] inverse: max|inverse(forward(x)) - x| eval %.2e, train %.2e (tol %.0e)%s\n", t->name, err[0], err[1],
           TOL_INV, t->factor_out ? " [through ctx.latent]" : "");
    assert_true(err[0] <= TOL_INV);
    assert_true(err[1] <= TOL_INV);
}

/* ---- 2. log-det against the FD Jacobian ---- */
static double block_logdet(const double *J, int N, int o, int D) {
    double *B = malloc(sizeof(double) * (size_t)D * D);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) B[(size_t)i * D + j] = J[(size_t)(o + i) * N + o + j];
    double r = tu_lu_logabsdet(B, D);
    free(B);
    return r;
}

static void check_logdet(lcase *t) {
    int D = (int)t->din, N = t->n * D;
    if (t->dout + t->lat != t->din)
        fail_msg("[%s] forward maps %lld floats per sample to %lld (+ %lld to the latent): no square Jacobian", t->name,
                 (long long)t->din, (long long)t->dout, (long long)t->lat);
    assert_true(D <= 64);
    t->ctx.training = 0;
    t->scalar = 0;
    int m = lc_fd_len(t);
    double *J = malloc(sizeof(double) * (size_t)N * N), *col = malloc(sizeof(double) * (size_t)m);
    double *base = malloc(sizeof(double) * (size_t)m);
    lc_fd(t, base);
    fd_stats st = {0};
    fd_opts fo = {1.0, FD_TAU, FD_LEVELS, lc_pattern, t->pattern, 1};
    for (int j = 0; j < N; j++) {
        fd_deriv(lc_fd, t, m, &t->x[j], base, &fo, col, &st);
        for (int i = 0; i < N; i++) J[(size_t)i * N + j] = col[i];
    }
    double err = 0.0, ldmax = 0.0, off = 0.0;
    for (int s = 0; s < t->n; s++) {
        double e = fabs(block_logdet(J, N, s * D, D) - base[N + s]);
        err = isnan(e) ? INFINITY : fmax(err, e);
        ldmax = fmax(ldmax, fabs(base[N + s]));
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i / D != j / D) off = fmax(off, fabs(J[(size_t)i * N + j]));
    double tol = st.refined || st.unresolved ? TOL_LOGDET_REFINED : TOL_LOGDET;
    printf("[%s] log-det (eval, FD Jacobian %dx%d per sample%s): max|log|det J| - ldj| %.2e (tol %.0e) "
           "[max|ldj| %.3f; off-sample blocks %.1e; columns refined %lld, one-sided %lld, unresolved %lld of %d]\n",
           t->name, D, D, t->lat ? " of x -> (y, latent)" : "", err, tol, ldmax, off, (long long)st.refined,
           (long long)st.onesided, (long long)st.unresolved, N);
    assert_true(err <= tol);
    assert_true(off <= TOL_OFFBLOCK);
    assert_true((double)st.unresolved <= MAX_UNRESOLVED * N);
    free(J);
    free(col);
    free(base);
}

/* ---- 3. / 5. backward against FD ---- */
/* forward at x, backward with dy = wy, dldj = wa (condnet: dh = wy): dx (n*din) and the
 * gradients (left in the table; pre-filled with NaN) */
static void lc_backward(lcase *t, const float *wy, const float *wa, float *dx) {
    for (int64_t i = 0; i < t->p.n_params; i++) t->p.grads[i] = NAN;
    double *sldj;
    fdp_tensor xt;
    lc_forward(t, t->x, &xt, &sldj);
    fdp_tensor dy = fdp_arena_tensor(t->arena, t->n, t->oc, t->oh, t->ow);
    memcpy(dy.data, wy, sizeof(float) * (size_t)(t->n * t->dout));
    fdp_tensor d;
    if (t->l) {
        float *dl = fdp_arena_alloc(t->arena, sizeof(float) * (size_t)t->n);
        memcpy(dl, wa, sizeof(float) * (size_t)t->n);
        d = t->l->ops->backward(t->l, &t->ctx, dy, dl);
    } else {
        d = fdp_arena_tensor(t->arena, t->n, t->c, t->h, t->w);
        t->net->ops->backward(t->net, &t->ctx, dy, d, 0);
    }
    if (!fdp_same_shape(d, xt))
        fail_msg("[%s] backward returned %dx%dx%dx%d for a %dx%dx%dx%d input", t->name, d.n, d.c, d.h, d.w, t->n, t->c,
                 t->h, t->w);
    memcpy(dx, d.data, sizeof(float) * (size_t)(t->n * t->din));
}

/* normwise errors over the derivatives taken at the first steps (code 1; the others still set
 * the scale) into *clean, and over every resolved one into *all */
static void two_tier(const float *a, const float *b, const uint8_t *code, int64_t n, double floor, double *clean,
                     double *all) {
    uint8_t *c = malloc((size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) c[i] = code[i] == 2 ? 3 : code[i];
    *clean = fd_masked_normwise(a, b, c, n, floor);
    *all = fd_masked_normwise(a, b, code, n, floor);
    free(c);
}

typedef struct grad_report {
    double input_err, param_err, entry_err, input_all, param_all, entry_all, gmax;
    char worst[FDP_NAME_MAX + 16];
    int64_t checked, entries, uncovered;
    fd_stats st;
} grad_report;

/* element number `tried` of entry pe to check: all of them in order when there are at most
 * PER_ENTRY, else distinct random ones (idx[first, total) holds those taken) */
static int64_t next_element(const fdp_param_entry *pe, int64_t tried, uint64_t *s, const int64_t *idx, int64_t first,
                            int64_t total) {
    if (pe->numel <= PER_ENTRY) return pe->offset + tried;
    for (;;) {
        int64_t j = pe->offset + (int64_t)tu_uniform(s, 0.0, (double)pe->numel), dup = 0;
        for (int64_t q = first; q < total; q++) dup |= idx[q] == j;
        if (!dup) return j;
    }
}

/* The parameter gradients against FD: up to PER_ENTRY elements per tensor (an unresolved one is
 * replaced by another, up to 4 times), errors overall and per tensor into r. The FD agreement
 * tests are relative to the scale each tensor is compared at (its largest gradient, floored):
 * a pair whose round-off exceeds a fraction of that tensor's tolerance is not taken. */
static void param_grads(lcase *t, const float *g, uint64_t seed, grad_report *r) {
    fdp_params *p = &t->p;
    int64_t np = p->n_params ? p->n_params : 1, total = 0;
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)np), *start = malloc(sizeof(int64_t) * (size_t)(p->count + 1));
    int *ent = malloc(sizeof(int) * (size_t)(p->count + 1)), ne = 0;
    float *fdg = malloc(sizeof(float) * (size_t)np), *ag = malloc(sizeof(float) * (size_t)np);
    uint8_t *ok = malloc((size_t)np);
    uint64_t s = seed;
    double gs = 0.0, d, f0;
    for (int64_t i = 0; i < p->n_params; i++) gs = fmax(gs, fabs((double)g[i]));
    lc_fd(t, &f0);
    uint64_t p0 = t->pattern;
    r->gmax = 0.0;
    for (int e = 0; e < p->count; e++) {
        const fdp_param_entry *pe = &p->entries[e];
        if (pe->kind != FDP_PARAM) continue;
        ent[ne] = e;
        start[ne++] = total;
        double es = GRAD_FLOOR * gs;
        for (int64_t j = 0; j < pe->numel; j++) es = fmax(es, fabs((double)g[pe->offset + j]));
        int64_t want = pe->numel < PER_ENTRY ? pe->numel : PER_ENTRY, got = 0, tried = 0;
        int64_t cap = pe->numel <= PER_ENTRY ? pe->numel : (pe->numel < want + 4 ? pe->numel : want + 4);
        for (; got < want && tried < cap; tried++, total++) {
            idx[total] = next_element(pe, tried, &s, idx, start[ne - 1], total);
            fd_opts fo = {es, FD_TAU_GRAD, FD_GRAD_LEVELS, lc_pattern, p0, 1};
            ok[total] = (uint8_t)fd_deriv(lc_fd, t, 1, &p->params[idx[total]], &f0, &fo, &d, &r->st);
            fdg[total] = (float)d;
            ag[total] = g[idx[total]];
            got += ok[total] != 0;
            if (ok[total]) r->gmax = fmax(r->gmax, fabs(d));
        }
        r->uncovered += got == 0;
    }
    start[ne] = total;
    two_tier(ag, fdg, ok, total, 0.0, &r->param_err, &r->param_all);
    r->entry_err = r->entry_all = 0.0;
    snprintf(r->worst, sizeof r->worst, "none");
    for (int k = 0; k < ne; k++) {
        double e, ea;
        two_tier(ag + start[k], fdg + start[k], ok + start[k], start[k + 1] - start[k], GRAD_FLOOR * r->gmax, &e,
                 &ea);
        r->entry_all = isnan(ea) ? INFINITY : fmax(r->entry_all, ea);
        if (!(e <= r->entry_err)) {
            r->entry_err = isnan(e) ? INFINITY : e;
            snprintf(r->worst, sizeof r->worst, "%s", p->entries[ent[k]].name);
        }
    }
    for (int64_t i = 0; i < p->n_params; i++) /* an unwritten gradient anywhere fails */
        if (isnan(g[i])) {
            r->entry_err = INFINITY;
            for (int k = 0; k < p->count; k++)
                if (p->entries[k].kind == FDP_PARAM && i >= p->entries[k].offset &&
                    i < p->entries[k].offset + p->entries[k].numel)
                    snprintf(r->worst, sizeof r->worst, "not written: %s", p->entries[k].name);
            break;
        }
    r->checked = total;
    r->entries = ne;
    free(idx);
    free(start);
    free(ent);
    free(fdg);
    free(ag);
    free(ok);
}

static void check_backward(lcase *t, int training, uint64_t seed) {
    int64_t N = t->n * t->din, No = t->n * t->dout;
    t->ctx.training = training;
    float *wy = tu_rand_floats(No, seed, -1.0f, 1.0f), *wa = tu_rand_floats(t->n, seed + 1, -1.0f, 1.0f);
    float *dx = malloc(sizeof(float) * (size_t)N), *fdx = malloc(sizeof(float) * (size_t)N);
    float *g = malloc(sizeof(float) * (size_t)(t->p.n_params ? t->p.n_params : 1));
    uint8_t *ok = malloc((size_t)N);
    lc_backward(t, wy, wa, dx);
    memcpy(g, t->p.grads, sizeof(float) * (size_t)t->p.n_params);
    grad_report r;
    memset(&r, 0, sizeof r);
    t->scalar = 1;
    t->wy = wy;
    t->wa = wa;
    double gx = tu_max_abs(dx, N), d, f0;
    lc_fd(t, &f0);
    fd_opts fo = {gx, FD_TAU_GRAD, FD_GRAD_LEVELS, lc_pattern, t->pattern, 1};
    for (int64_t j = 0; j < N; j++) {
        ok[j] = (uint8_t)fd_deriv(lc_fd, t, 1, &t->x[j], &f0, &fo, &d, &r.st);
        fdx[j] = (float)d;
    }
    two_tier(dx, fdx, ok, N, 0.0, &r.input_err, &r.input_all);
    param_grads(t, g, seed + 2, &r);
    t->scalar = 0;
    printf("[%s] backward (%s) vs FD of %s: dx %.2e; params %.2e, worst tensor %.2e (%s) (tol %.0e) "
           "[%lld elements of %lld tensors (%lld without a resolved one), max|g| %.3f, floor %.0f%%; FD %lld: "
           "refined %lld, one-sided %lld, unresolved and left out %lld (allowed %.0f%%); with the %lld taken near a "
           "kink: dx %.1e, params %.1e, worst tensor %.1e (tol %.0e)]\n",
           t->name, training ? "train" : "eval", t->l ? "sum(w*y) + sum(a*sldj)" : "sum(w*h)", r.input_err,
           r.param_err, r.entry_err, r.worst, TOL_GRAD, (long long)r.checked, (long long)r.entries,
           (long long)r.uncovered, r.gmax,
           100.0 * GRAD_FLOOR, (long long)r.st.n, (long long)r.st.refined, (long long)r.st.onesided,
           (long long)r.st.unresolved, 100.0 * MAX_UNRESOLVED, (long long)r.st.refined, r.input_all, r.param_all,
           r.entry_all, TOL_GRAD_KINK);
    assert_true(r.input_err <= TOL_GRAD);
    assert_true(r.param_err <= TOL_GRAD);
    assert_true(r.entry_err <= TOL_GRAD);
    assert_true(r.input_all <= TOL_GRAD_KINK && r.param_all <= TOL_GRAD_KINK && r.entry_all <= TOL_GRAD_KINK);
    assert_true((double)r.st.unresolved <= MAX_UNRESOLVED * (double)r.st.n);
    free(wy);
    free(wa);
    free(dx);
    free(fdx);
    free(g);
    free(ok);
}

/* ---- 4. the rebuild pair ---- */
typedef struct rb_ref {
    float *y, *dx, *g, *buf;
    double sldj[LC_BATCH];
} rb_ref;

static void rb_reference(lcase *t, const float *wy, const float *wa, rb_ref *ref) {
    size_t nb = (size_t)(t->p.n_buffers ? t->p.n_buffers : 1);
    ref->y = malloc(sizeof(float) * (size_t)(t->n * t->dout + 1));
    ref->dx = malloc(sizeof(float) * (size_t)(t->n * t->din));
    ref->g = malloc(sizeof(float) * (size_t)(t->p.n_params + 1));
    ref->buf = malloc(sizeof(float) * nb);
    double *sldj;
    fdp_tensor y = lc_forward(t, t->x, NULL, &sldj);
    memcpy(ref->y, y.data, sizeof(float) * (size_t)(t->n * t->dout));
    memcpy(ref->sldj, sldj, sizeof(double) * (size_t)t->n);
    lc_backward(t, wy, wa, ref->dx);
    memcpy(ref->g, t->p.grads, sizeof(float) * (size_t)t->p.n_params);
    memcpy(ref->buf, t->p.buffers, sizeof(float) * (size_t)t->p.n_buffers);
}

static int mark_eq(fdp_arena_mark a, fdp_arena_mark b) { return a.block == b.block && a.offset == b.offset; }

static void check_rebuild(lcase *t, uint64_t seed) {
    int64_t N = t->n * t->din, No = t->n * t->dout;
    fdp_flow_layer *l = t->l;
    t->ctx.training = 1;
    float *wy = tu_rand_floats(No, seed, -1.0f, 1.0f), *wa = tu_rand_floats(t->n, seed + 1, -1.0f, 1.0f);
    rb_ref ref;
    rb_reference(t, wy, wa, &ref);
    /* the rebuild path: x, dy (x's size: it receives dx), dldj, sldj allocated before the mark */
    for (int64_t i = 0; i < t->p.n_params; i++) t->p.grads[i] = NAN;
    double *sldj;
    fdp_tensor xt = lc_begin(t, t->x, &sldj);
    fdp_tensor dyb = fdp_arena_tensor(t->arena, t->n, t->c, t->h, t->w);
    memcpy(dyb.data, wy, sizeof(float) * (size_t)No);
    float *dl = fdp_arena_alloc(t->arena, sizeof(float) * (size_t)t->n);
    memcpy(dl, wa, sizeof(float) * (size_t)t->n);
    double *s2 = sldj;
    fdp_arena_mark m0 = fdp_arena_get_mark(t->arena);
    fdp_tensor y = fdp_flow_forward_inplace(l, &t->ctx, xt, s2);
    fdp_arena_mark m1 = fdp_arena_get_mark(t->arena);
    int shape_ok = y.data == xt.data && y.n == t->n && y.c == t->oc && y.h == t->oh && y.w == t->ow;
    double ey = fd_masked_normwise(y.data, ref.y, NULL, No, 1e-30), es = 0.0;
    for (int i = 0; i < t->n; i++) es = fmax(es, fabs(s2[i] - ref.sldj[i]) / fmax(fabs(ref.sldj[i]), 1.0));
    fdp_tensor dy = fdp_tensor_wrap(dyb.data, y.n, y.c, y.h, y.w, y.dev);
    fdp_tensor dx = fdp_flow_backward_rebuild(l, &t->ctx, y, dy, dl);
    int arena_ok = mark_eq(fdp_arena_get_mark(t->arena), m1) && (t->factor_out || mark_eq(m1, m0));
    shape_ok &= dx.data == dyb.data && dx.n == t->n && dx.c == t->c && dx.h == t->h && dx.w == t->w;
    double edx = fd_masked_normwise(dyb.data, ref.dx, NULL, N, 1e-30);
    double eg = fd_masked_normwise(t->p.grads, ref.g, NULL, t->p.n_params, 1e-30);
    double ex = fd_masked_normwise(xt.data, t->x, NULL, N, 1e-30);
    double eb = tu_max_abs_diff(t->p.buffers, ref.buf, t->p.n_buffers);
    const char *how = l->ops->forward_inplace && l->ops->backward_rebuild ? "native"
                      : l->ops->forward_inplace || l->ops->backward_rebuild ? "partly native" : "generic";
    printf("[%s] rebuild pair (%s, train) vs forward + backward: y %.1e, sldj %.1e, dx %.1e, params %.1e, "
           "rebuilt x %.1e (tol %.0e); buffers %.1e; shapes %s; arena back at its mark: %s\n",
           t->name, how, ey, es, edx, eg, ex, TOL_REBUILD, eb, shape_ok ? "ok" : "WRONG", arena_ok ? "yes" : "NO");
    assert_true(shape_ok && arena_ok);
    assert_true(ey <= TOL_REBUILD && es <= TOL_REBUILD && edx <= TOL_REBUILD && eg <= TOL_REBUILD);
    assert_true(ex <= TOL_REBUILD);
    assert_true(eb <= 1e-6);
    free(wy);
    free(wa);
    free(ref.y);
    free(ref.dx);
    free(ref.g);
    free(ref.buf);
}

/* ---- 5. condnets: dx accumulated when asked, the same gradients without dx ---- */
static void check_condnet_modes(lcase *t, uint64_t seed) {
    int64_t N = t->n * t->din, No = t->n * t->dout;
    t->ctx.training = 1;
    float *wy = tu_rand_floats(No, seed, -1.0f, 1.0f), *pre = tu_rand_floats(N, seed + 1, -1.0f, 1.0f);
    float *dx = malloc(sizeof(float) * (size_t)N), *acc = malloc(sizeof(float) * (size_t)N);
    float *g = malloc(sizeof(float) * (size_t)(t->p.n_params + 1));
    lc_backward(t, wy, NULL, dx);
    memcpy(g, t->p.grads, sizeof(float) * (size_t)t->p.n_params);
    for (int pass = 0; pass < 2; pass++) {
        double *sldj;
        lc_forward(t, t->x, NULL, &sldj);
        fdp_tensor dh = fdp_arena_tensor(t->arena, t->n, t->oc, t->oh, t->ow);
        memcpy(dh.data, wy, sizeof(float) * (size_t)No);
        fdp_tensor d = fdp_arena_tensor(t->arena, t->n, t->c, t->h, t->w);
        memcpy(d.data, pre, sizeof(float) * (size_t)N);
        if (pass) d.data = NULL;
        for (int64_t i = 0; i < t->p.n_params; i++) t->p.grads[i] = NAN;
        t->net->ops->backward(t->net, &t->ctx, dh, d, 1);
        if (!pass)
            for (int64_t i = 0; i < N; i++) acc[i] = d.data[i] - pre[i];
    }
    double ea = fd_masked_normwise(acc, dx, NULL, N, 1e-30);
    double eg = fd_masked_normwise(t->p.grads, g, NULL, t->p.n_params, 1e-30);
    printf("[%s] accumulate: dx added to what was there %.1e; dx not wanted (NULL): parameter gradients %.1e "
           "(tol 1e-6)\n", t->name, ea, eg);
    assert_true(ea <= 1e-6 && eg <= 1e-6);
    free(wy);
    free(pre);
    free(dx);
    free(acc);
    free(g);
}

/* ---- one test per registered kind ---- */
static void describe(const lcase *t, const char *ops_kind) {
    printf("[%s] %s: input %dx%dx%d -> output %dx%dx%d (n=%d%s), %lld parameters, %lld buffer floats%s\n", t->name,
           ops_kind, t->c, t->h, t->w, t->oc, t->oh, t->ow, t->n, t->lat ? ", factor-out" : "",
           (long long)t->p.n_params, (long long)t->p.n_buffers, t->batch_stats ? ", batch statistics" : "");
}

static void test_flow_kind(void **state) {
    const fdp_flow_kind *k = *state;
    if (!k->example || k->n_variants <= 0)
        fail_msg("flow kind \"%s\" is registered without an example (example %s, n_variants %d): every kind in "
                 "FDP_FLOW_KINDS needs one, through which this harness checks it",
                 k->name, k->example ? "set" : "NULL", k->n_variants);
    for (int v = 0; v < k->n_variants; v++) {
        lcase t;
        assert_true(lc_open_layer(&t, k, v));
        describe(&t, t.l->ops->kind);
        if (strcmp(t.l->ops->kind, k->name) != 0)
            fail_msg("flow kind \"%s\": its example is a \"%s\" layer", k->name, t.l->ops->kind);
        uint64_t seed = 1000u + 17u * (uint64_t)v;
        check_inverse(&t);
        check_logdet(&t);
        check_backward(&t, 1, seed);
        if (t.batch_stats) check_backward(&t, 0, seed + 10);
        check_rebuild(&t, seed + 20);
        lc_close(&t);
    }
}

static void test_condnet_kind(void **state) {
    const fdp_condnet_kind *k = *state;
    if (!k->example)
        fail_msg("condnet kind \"%s\" is registered without an example: every kind in FDP_CONDNET_KINDS needs one, "
                 "through which this harness checks it", k->name);
    lcase t;
    assert_true(lc_open_net(&t, k));
    describe(&t, t.net->ops->kind);
    if (strcmp(t.net->ops->kind, k->name) != 0)
        fail_msg("condnet kind \"%s\": its example is a \"%s\" network", k->name, t.net->ops->kind);
    check_backward(&t, 1, 2000);
    if (t.batch_stats) check_backward(&t, 0, 2010);
    check_condnet_modes(&t, 2020);
    lc_close(&t);
}

int main(void) {
    int nk, nc;
    const fdp_flow_kind *const *kinds = fdp_flow_kinds(&nk);
    const fdp_condnet_kind *const *nets = fdp_condnet_kinds(&nc);
    struct CMUnitTest *tests = calloc((size_t)(nk + nc), sizeof *tests);
    char (*names)[96] = calloc((size_t)(nk + nc), sizeof *names);
    for (int i = 0; i < nk + nc; i++) {
        int flow = i < nk;
        snprintf(names[i], sizeof names[i], "%s %s", flow ? "flow kind" : "condnet kind",
                 flow ? kinds[i]->name : nets[i - nk]->name);
        tests[i].name = names[i];
        tests[i].test_func = flow ? test_flow_kind : test_condnet_kind;
        tests[i].initial_state = flow ? (void *)(uintptr_t)kinds[i] : (void *)(uintptr_t)nets[i - nk];
    }
    int r = _cmocka_run_group_tests("test_flow_layers", tests, (size_t)(nk + nc), NULL, NULL);
    free(tests);
    free(names);
    return r;
}
