/* flow_fd.c — see flow_fd.h.
 *
 * The finite differences know nothing about the layer. The conditioning networks are
 * piecewise smooth (ReLU kinks); a central difference whose interval crosses a kink is off by
 * up to half the slope jump whatever the step. The harnesses before this one recorded each
 * network's ReLU pattern to see kinks; a registry harness cannot, so the differences find them
 * themselves: central differences C_k at the steps s_k = FD_H * 2^-k are taken from the largest
 * down, and the first pair of successive steps that agree (max|C_k - C_k+1| <= FD_TAU * scale)
 * gives the derivative, Richardson-extrapolated ((4 C_k+1 - C_k) / 3: the O(s^2) truncation
 * cancels; the logit's curvature needs it). Between kinks both differences are the derivative up
 * to O(s^2) truncation and float32 round-off (~3e-7 / s relative: below FD_TAU / 2 down to
 * s ~ FD_H/16); a kink inside the larger interval only makes them disagree
 * by its contamination, and what is accepted then carries at most a third of FD_TAU. When no
 * pair agrees, the one-sided three-point differences on each side (points x, x +- s_k,
 * x +- 2 s_k) are tried the same way (fd_fallback); else the derivative is "unresolved":
 * counted, left out of the comparisons, and the checks bound how many there may be.
 * A kink much closer to x than every step shifts all central differences alike, so they agree
 * and are wrong (by up to half the slope jump): an agreeing pair is only taken when the two
 * one-sided differences at the smaller step agree too. This matters in training mode, where
 * every input moves a BatchNorm's batch statistics and so every ReLU behind it: one ReLU input
 * within ~1e-4 of 0 puts a kink next to x along every coordinate of its channel. Every perturbed value is rounded to float, and the quotient divides by the
 * difference actually applied. */
#include "flow_fd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"

/* ---- the FD engine ---- */
typedef struct fd_pts {
    fd_fn f;
    void *user;
    int m;
    float *target;
    float v;
    double tau;
    int levels;                     /* steps used: FD_H ... FD_H * 2^-(levels - 1) */
    double *F;                      /* (2 FD_LEVELS + 1) * m: level k side s at (2k + s), x itself last */
    double xs[2 * FD_LEVELS + 1];
    int done[2 * FD_LEVELS + 1];
} fd_pts;

static const double *fd_at(fd_pts *p, int k, int side) {
    int q = k < FD_LEVELS ? 2 * k + side : 2 * FD_LEVELS;
    if (!p->done[q]) {
        float a = p->v;
        if (k < FD_LEVELS) a = (float)((double)p->v + (side ? -1.0 : 1.0) * FD_H * ldexp(1.0, -k));
        p->xs[q] = a;
        *p->target = a;
        p->f(p->user, p->F + (size_t)q * p->m);
        *p->target = p->v;
        p->done[q] = 1;
    }
    return p->F + (size_t)q * p->m;
}

static void fd_central(fd_pts *p, int k, double *c) {
    const double *a = fd_at(p, k, 0), *b = fd_at(p, k, 1);
    double dx = p->xs[2 * k] - p->xs[2 * k + 1];
    for (int i = 0; i < p->m; i++) c[i] = (a[i] - b[i]) / dx;
}

/* one-sided, second order: points x, x +- s_k, x +- s_(k-1) = 2 s_k (k >= 1) */
static void fd_onesided(fd_pts *p, int k, int side, double *c) {
    const double *f0 = fd_at(p, FD_LEVELS, 0), *f1 = fd_at(p, k, side), *f2 = fd_at(p, k - 1, side);
    double x0 = p->v, x1 = p->xs[2 * k + side], x2 = p->xs[2 * (k - 1) + side];
    double w0 = (2.0 * x0 - x1 - x2) / ((x0 - x1) * (x0 - x2)), w1 = (x0 - x2) / ((x1 - x0) * (x1 - x2)),
           w2 = (x0 - x1) / ((x2 - x0) * (x2 - x1));
    for (int i = 0; i < p->m; i++) c[i] = w0 * f0[i] + w1 * f1[i] + w2 * f2[i];
}

static int fd_agree(const double *a, const double *b, int m, double scale, double tau) {
    double d = 0.0, s = scale;
    for (int i = 0; i < m; i++) {
        double e = fabs(a[i] - b[i]);
        if (isnan(e)) return 0;
        d = fmax(d, e);
        s = fmax(s, fabs(b[i]));
    }
    return d <= tau * s;
}

static double dist(const double *a, const double *b, int m) {
    double d = 0.0;
    for (int i = 0; i < m; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* the first level k >= 2 whose one-sided difference agrees with level k-1's, into o; 0: none */
static int fd_side(fd_pts *p, int side, double scale, double *o, double *tmp) {
    fd_onesided(p, 1, side, tmp);
    for (int k = 2; k < p->levels; k++) {
        fd_onesided(p, k, side, o);
        if (fd_agree(tmp, o, p->m, scale, p->tau)) return k;
        memcpy(tmp, o, sizeof(double) * (size_t)p->m);
    }
    return 0;
}

/* the candidate nearest the hint: the central and both sides' one-sided differences at every step */
static void fd_nearest(fd_pts *p, const double *hint, double *d, double *tmp) {
    double best = INFINITY;
    for (int k = 0; k < p->levels; k++)
        for (int kind = 0; kind < 3; kind++) {
            if (kind == 0)
                fd_central(p, k, tmp);
            else if (k == 0)
                continue;
            else
                fd_onesided(p, k, kind - 1, tmp);
            double e = dist(tmp, hint, p->m);
            if (e < best) {
                best = e;
                memcpy(d, tmp, sizeof(double) * (size_t)p->m);
            }
        }
}

/* No clean pair of central differences: a kink closer than the steps. With a hint (backward's
 * value), x's own piece is unknown but its derivative is one of the one-sided ones: the estimate
 * nearest the hint is taken (a wrong backward is still off all of them; what this cannot see is
 * an error smaller than the kink's slope jump, in this element only). Without one, the
 * one-sided differences of a side that agree with themselves give that side's derivative; both
 * sides, differing: unresolved. */
static int fd_fallback(fd_pts *p, double scale, const double *hint, double *d) {
    int m = p->m;
    double *o[2], *tmp = malloc(sizeof(double) * (size_t)m);
    int ok[2], pick = -1;
    if (hint) {
        fd_nearest(p, hint, d, tmp);
        free(tmp);
        return 1;
    }
    for (int side = 0; side < 2; side++) {
        o[side] = malloc(sizeof(double) * (size_t)m);
        ok[side] = fd_side(p, side, scale, o[side], tmp) != 0;
    }
    if (ok[0] && ok[1])
        pick = fd_agree(o[0], o[1], m, scale, p->tau) ? 0 : -1;
    else if (ok[0] || ok[1])
        pick = ok[0] ? 0 : 1;
    if (pick >= 0) memcpy(d, o[pick], sizeof(double) * (size_t)m);
    free(o[0]);
    free(o[1]);
    free(tmp);
    return pick >= 0;
}

int fd_deriv(fd_fn f, void *user, int m, float *target, const double *f0, const fd_opts *o, double *d,
             fd_stats *st) {
    double scale = o->scale, tau = o->tau;
    const double *hint = o->hint;
    fd_pts p;
    memset(&p, 0, sizeof p);
    p.f = f;
    p.user = user;
    p.m = m;
    p.target = target;
    p.v = *target;
    p.tau = tau;
    p.levels = o->levels < FD_LEVELS ? o->levels : FD_LEVELS;
    p.F = malloc(sizeof(double) * (size_t)m * (2 * FD_LEVELS + 1));
    if (f0) {
        memcpy(p.F + (size_t)2 * FD_LEVELS * m, f0, sizeof(double) * (size_t)m);
        p.xs[2 * FD_LEVELS] = p.v;
        p.done[2 * FD_LEVELS] = 1;
    }
    double *a = malloc(sizeof(double) * (size_t)m), *b = malloc(sizeof(double) * (size_t)m);
    double *ol = malloc(sizeof(double) * (size_t)m), *or = malloc(sizeof(double) * (size_t)m);
    int code = 0;
    st->n++;
    fd_central(&p, 0, a);
    for (int k = 1; k < p.levels && !code; k++) {
        fd_central(&p, k, b);
        if (fd_agree(a, b, m, scale, tau)) {
            /* and no kink inside the smaller interval: the two one-sided differences agree */
            fd_onesided(&p, k, 0, or);
            fd_onesided(&p, k, 1, ol);
            if (fd_agree(or, ol, m, scale, tau)) {
                for (int i = 0; i < m; i++) d[i] = (4.0 * b[i] - a[i]) / 3.0;
                code = k == 1 ? 1 : 2;
            }
        }
        memcpy(a, b, sizeof(double) * (size_t)m);
    }
    if (!code && fd_fallback(&p, scale, hint, d)) {
        code = 2;
        st->onesided++;
    }
    if (!code) {
        fd_central(&p, 0, d);
        st->unresolved++;
    }
    st->refined += code == 2;
    free(p.F);
    free(a);
    free(b);
    free(ol);
    free(or);
    return code;
}

double fd_masked_normwise(const float *a, const float *b, const uint8_t *ok, int64_t n, double floor) {
    double m = 0.0, d = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (ok && !ok[i]) continue;
        m = fmax(m, fabs((double)b[i]));
        if (ok && ok[i] == 3) continue; /* scale only */
        double e = fabs((double)a[i] - (double)b[i]);
        d = isnan(e) ? INFINITY : fmax(d, e);
    }
    m = fmax(m, floor);
    return m > 0.0 ? d / m : d;
}

double fd_max_abs_d(const double *a, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* ---- the case ---- */
static uint64_t name_seed(const char *s, int v) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    h ^= (uint64_t)v * 0x9E3779B97F4A7C15ull;
    /* FLOW_FD_SEED: other draws, to see how the errors spread (the test uses 0) */
    const char *e = getenv("FLOW_FD_SEED");
    return e ? h + 0xD1B54A32D192ED03ull * strtoull(e, NULL, 10) : h;
}

fdp_tensor lc_begin(lcase *t, const float *x, double **sldj_out) {
    if (t->buffers0 && t->p.n_buffers) memcpy(t->p.buffers, t->buffers0, sizeof(float) * (size_t)t->p.n_buffers);
    fdp_arena_reset_all(t->arena);
    if (t->l)
        fdp_flow_prepare(t->l, &t->ctx);
    else
        fdp_condnet_prepare(t->net, &t->ctx);
    fdp_tensor xt = fdp_arena_tensor(t->arena, t->n, t->c, t->h, t->w);
    memcpy(xt.data, x, sizeof(float) * (size_t)(t->n * t->din));
    double *sldj = fdp_arena_doubles(t->arena, t->n);
    for (int i = 0; i < t->n; i++) sldj[i] = 0.0;
    *sldj_out = sldj;
    return xt;
}

fdp_tensor lc_forward(lcase *t, const float *x, fdp_tensor *xt_out, double **sldj_out) {
    fdp_tensor xt = lc_begin(t, x, sldj_out);
    if (xt_out) *xt_out = xt;
    if (t->l) return t->l->ops->forward(t->l, &t->ctx, xt, *sldj_out);
    return t->net->ops->forward(t->net, &t->ctx, xt);
}

static double std_normal_logp(const float *e, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += -0.5 * (1.8378770664093453 + (double)e[i] * e[i]);
    return s;
}

int lc_fd_len(const lcase *t) { return t->scalar ? 1 : (int)(t->n * t->din + t->n); }

void lc_fd(void *user, double *out) {
    lcase *t = user;
    double *sldj;
    fdp_tensor y = lc_forward(t, t->x, NULL, &sldj);
    if (t->scalar) {
        double s = 0.0;
        for (int64_t i = 0; i < t->n * t->dout; i++) s += (double)t->wy[i] * (double)y.data[i];
        for (int i = 0; t->l && i < t->n; i++) s += (double)t->wa[i] * sldj[i];
        out[0] = s;
        return;
    }
    for (int s = 0; s < t->n; s++) {
        double *o = out + (size_t)s * t->din;
        const float *lat = t->latent + (size_t)s * t->din + t->l->lat_off;
        for (int64_t i = 0; i < t->dout; i++) o[i] = y.data[(size_t)s * t->dout + i];
        for (int64_t i = 0; i < t->lat; i++) o[t->dout + i] = lat[i];
        out[(size_t)t->n * t->din + s] = sldj[s] - std_normal_logp(lat, t->lat);
    }
}

/* parameters perturbed, arena and context, the point, one training forward (data-dependent
 * init), the buffers saved, whether a training forward changes them */
static void lc_setup(lcase *t, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < t->p.count; i++) {
        const fdp_param_entry *e = &t->p.entries[i];
        float *d = fdp_params_data(&t->p, i);
        for (int64_t j = 0; e->kind == FDP_PARAM && j < e->numel; j++)
            d[j] += (float)tu_uniform(&s, -LC_PERTURB, LC_PERTURB);
    }
    t->n = LC_BATCH;
    t->din = (int64_t)t->c * t->h * t->w;
    t->arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    t->latent = calloc((size_t)(t->n * t->din), sizeof(float));
    fdp_ctx ctx = {.be = t->be, .arena = t->arena, .params = &t->p, .training = 1, .world_size = 1,
                   .input_grad = 1, .latent = t->latent, .latent_dim = t->din, .temperature = 1.0f};
    t->ctx = ctx;
    /* inputs in (0.1, 0.9): the logit's domain is (0, 1), every other layer takes any value */
    t->x = tu_rand_floats(t->n * t->din, seed + 1, 0.1f, 0.9f);
    double *sldj;
    fdp_tensor y = lc_forward(t, t->x, NULL, &sldj);
    t->oc = y.c;
    t->oh = y.h;
    t->ow = y.w;
    t->dout = (int64_t)y.c * y.h * y.w;
    t->lat = t->l && t->factor_out ? t->l->lat_len : 0;
    size_t nb = (size_t)(t->p.n_buffers ? t->p.n_buffers : 1);
    t->buffers0 = malloc(sizeof(float) * nb);
    if (t->p.n_buffers) memcpy(t->buffers0, t->p.buffers, sizeof(float) * nb);
    lc_forward(t, t->x, NULL, &sldj);
    t->batch_stats = t->p.n_buffers && memcmp(t->buffers0, t->p.buffers, sizeof(float) * nb) != 0;
    memcpy(t->p.buffers, t->buffers0, sizeof(float) * (size_t)t->p.n_buffers);
}

int lc_open_layer(lcase *t, const fdp_flow_kind *k, int variant) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s/%d", k->name, variant);
    if (!k->example || k->n_variants <= 0) return 0;
    t->be = fdp_backend_cpu_create(1);
    fdp_params_init(&t->p);
    t->l = k->example(&t->p, variant, &t->c, &t->h, &t->w);
    t->factor_out = k->factor_out;
    fdp_params_finalize(&t->p, t->be);
    uint64_t seed = name_seed(k->name, variant);
    fdp_flow_init_values(t->l, &t->p, t->p.params, t->p.buffers, seed);
    lc_setup(t, seed);
    return 1;
}

int lc_open_net(lcase *t, const fdp_condnet_kind *k) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "condnet %s", k->name);
    if (!k->example) return 0;
    t->be = fdp_backend_cpu_create(1);
    fdp_params_init(&t->p);
    t->net = k->example(&t->p, &t->c, &t->h, &t->w);
    fdp_params_finalize(&t->p, t->be);
    uint64_t seed = name_seed(k->name, 0);
    fdp_condnet_init_values(t->net, &t->p, t->p.params, t->p.buffers, seed);
    lc_setup(t, seed);
    return 1;
}

void lc_close(lcase *t) {
    if (t->l) fdp_flow_destroy(t->l);
    if (t->net) fdp_condnet_destroy(t->net);
    if (t->be) {
        fdp_params_free(&t->p);
        fdp_arena_destroy(t->arena);
        fdp_backend_destroy(t->be);
    }
    free(t->latent);
    free(t->buffers0);
    free(t->x);
    memset(t, 0, sizeof *t);
}
