/* flow_fd.c — see flow_fd.h.
 *
 * Why the differences watch the ReLUs. The conditioning networks are piecewise smooth: every
 * ReLU whose input crosses 0 puts a kink in L along the coordinate being differentiated, and a
 * central difference whose interval [x - s, x + s] holds a kink at distance d is off by up to
 * half the slope jump, (1 - d/s)/2 of it. The kinks are dense: in training mode every parameter
 * (and every input) moves a BatchNorm's batch statistics and so every ReLU of that channel behind
 * it; a Glow NN's first ActNorm bias moves every unit after it. Measured on the examples, a
 * coordinate of a ResNet convolution or of glow_nn's l_1 has a kink within 1e-2 more often than
 * not, and kinks within 1e-4 of x happen. Guessing them from the differences alone (successive
 * steps agreeing, one-sided differences agreeing) has blind spots: two kinks, or one at the
 * distance where the contaminations of two steps coincide, give agreeing, wrong estimates (seen:
 * 2-4% errors on derivatives rated clean, up to 35% near a kink; the float round-off of L, ~1e-7
 * relative, is 1e-5 at the first step and was never the cause).
 *
 * So the case's backend reports which side of 0 every ReLU input is on: flow_fd.c wraps its
 * bn_act (BatchNorm + ReLU, the ResNet's) and glow_actnorm (ActNorm + ReLU, Glow's NN), the
 * ops through which every registered network's ReLUs go, and hashes the sign pattern of each
 * forward (fd_opts.pattern). The derivative backward computes is that of the piece of L holding
 * x, the points with x's pattern; the FD takes only points in that piece:
 *  - central differences C_k at the steps s_k = FD_H 2^-k, from the largest, at the first k
 *    where x +- s_k and x +- s_(k+1) all have x's pattern, Richardson-extrapolated
 *    ((4 C_k+1 - C_k) / 3: the O(s^2) truncation cancels; the logit's curvature needs it), taken
 *    when the two agree (max|C_k - C_k+1| <= tau * scale: a guard against non-smoothness the
 *    pattern does not see, and against round-off at small steps);
 *  - else, when no central pair lay in x's piece (x within s_(levels-1) of a kink), the
 *    one-sided three-point difference (x, x +- s_k, x +- 2 s_k) on a side whose points have x's
 *    pattern, the largest such k, when it agrees with the next smaller one;
 *  - else "unresolved": counted, left out, and the checks bound how many there may be.
 * Every perturbed value is rounded to float, and the quotient divides by the difference
 * actually applied. Without a pattern function every point counts as x's piece. */
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
    int levels;                     /* steps used: FD_H ... FD_H * 2^-(levels - 1) */
    uint64_t (*pattern)(void *user);
    uint64_t p0;
    double *F;                      /* (2 FD_LEVELS + 1) * m: level k side s at (2k + s), x itself last */
    double xs[2 * FD_LEVELS + 1];
    uint64_t pat[2 * FD_LEVELS + 1];
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
        p->pat[q] = p->pattern ? p->pattern(p->user) : 0;
        *p->target = p->v;
        p->done[q] = 1;
    }
    return p->F + (size_t)q * p->m;
}

/* the point x +- s_k lies in x's piece (no ReLU input changed sign) */
static int fd_same(fd_pts *p, int k, int side) {
    fd_at(p, k, side);
    return p->pat[2 * k + side] == p->p0;
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

/* the largest k >= 1 whose points x +- s_(k+1), x +- s_k, x +- s_(k-1) on this side lie in x's
 * piece and whose one-sided difference agrees with level k+1's; into d */
static int fd_side(fd_pts *p, int side, double scale, double tau, double *d, double *tmp) {
    for (int k = 1; k < p->levels; k++) {
        if (!fd_same(p, k - 1, side) || !fd_same(p, k, side)) continue;
        if (k + 1 >= p->levels || !fd_same(p, k + 1, side)) continue;
        fd_onesided(p, k, side, d);
        fd_onesided(p, k + 1, side, tmp);
        if (fd_agree(d, tmp, p->m, scale, tau)) return k;
    }
    return 0;
}

int fd_deriv(fd_fn f, void *user, int m, float *target, const double *f0, const fd_opts *o, double *d,
             fd_stats *st) {
    double scale = o->scale, tau = o->tau;
    fd_pts p;
    memset(&p, 0, sizeof p);
    p.f = f;
    p.user = user;
    p.m = m;
    p.target = target;
    p.v = *target;
    p.levels = o->levels < FD_LEVELS ? o->levels : FD_LEVELS;
    p.pattern = o->pattern;
    p.F = malloc(sizeof(double) * (size_t)m * (2 * FD_LEVELS + 1));
    if (f0 && (!o->pattern || o->have_p0)) {
        memcpy(p.F + (size_t)2 * FD_LEVELS * m, f0, sizeof(double) * (size_t)m);
        p.xs[2 * FD_LEVELS] = p.v;
        p.pat[2 * FD_LEVELS] = o->p0;
        p.done[2 * FD_LEVELS] = 1;
    }
    fd_at(&p, FD_LEVELS, 0);
    p.p0 = p.pat[2 * FD_LEVELS];
    double *a = malloc(sizeof(double) * (size_t)m), *b = malloc(sizeof(double) * (size_t)m);
    int code = 0, clean = 0;
    st->n++;
    /* the largest central pair inside x's piece */
    for (int k = 0; k + 1 < p.levels && !code; k++) {
        if (!fd_same(&p, k, 0) || !fd_same(&p, k, 1) || !fd_same(&p, k + 1, 0) || !fd_same(&p, k + 1, 1)) continue;
        clean = 1;
        fd_central(&p, k, a);
        fd_central(&p, k + 1, b);
        if (fd_agree(a, b, m, scale, tau)) {
            for (int i = 0; i < m; i++) d[i] = (4.0 * b[i] - a[i]) / 3.0;
            code = k == 0 ? 1 : 2;
        }
    }
    /* a kink closer than the smallest pair: one side of it (not when a pair in x's piece only
     * disagreed: round-off at those steps, which the one-sided differences have more of) */
    if (!code && !clean && p.pattern) {
        int ks[2];
        double *o2[2] = {a, b}, *tmp = malloc(sizeof(double) * (size_t)m);
        for (int side = 0; side < 2; side++) ks[side] = fd_side(&p, side, scale, tau, o2[side], tmp);
        free(tmp);
        int pick = ks[0] && (!ks[1] || ks[0] <= ks[1]) ? 0 : ks[1] ? 1 : -1; /* the larger step */
        if (pick >= 0) {
            memcpy(d, o2[pick], sizeof(double) * (size_t)m);
            code = 2;
            st->onesided++;
        }
    }
    if (!code) {
        fd_central(&p, 0, d);
        st->unresolved++;
    }
    st->refined += code == 2;
    free(p.F);
    free(a);
    free(b);
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
/* the ReLU watch: the case's backend's bn_act and glow_actnorm wrapped; every forward through
 * them adds the positions of its positive ReLU outputs (y > 0 exactly when the ReLU's input is
 * > 0; the ResNet's cat(v, -v) mode has one output per side) to a hash, restarted by lc_begin */
static void (*cpu_bn_act)(fdp_backend *, int64_t, const fdp_bn_act_args *);
static void (*cpu_glow_actnorm)(fdp_backend *, int64_t, const fdp_glow_actnorm_args *);
static uint64_t relu_hash, relu_calls;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void relu_seen(const float *y, int64_t n) {
    relu_calls++;
    for (int64_t i = 0; i < n; i++)
        if (y[i] > 0.0f) relu_hash += mix64((relu_calls << 40) ^ (uint64_t)i);
}

static void watch_bn_act(fdp_backend *be, int64_t n, const fdp_bn_act_args *a) {
    cpu_bn_act(be, n, a);
    if (a->mode != 0) relu_seen(a->y, a->mode == 2 ? 2 * n : n);
}

static void watch_glow_actnorm(fdp_backend *be, int64_t n, const fdp_glow_actnorm_args *a) {
    cpu_glow_actnorm(be, n, a);
    if (a->relu && !a->inverse) relu_seen(a->y, n);
}

static fdp_backend *watched_cpu_backend(void) {
    fdp_backend *be = fdp_backend_cpu_create(1);
    cpu_bn_act = be->bn_act;
    cpu_glow_actnorm = be->glow_actnorm;
    be->bn_act = watch_bn_act;
    be->glow_actnorm = watch_glow_actnorm;
    return be;
}

uint64_t lc_pattern(void *user) { return ((lcase *)user)->pattern; }

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
    relu_hash = relu_calls = 0;
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
    t->pattern = relu_hash;
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
    t->be = watched_cpu_backend();
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
    t->be = watched_cpu_backend();
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
