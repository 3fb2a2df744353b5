/* test_lippe_fixture.c — the tutorial's flow layers (tut_coupling, tut_logit, tut_split, squeeze)
 * are the flows of Lippe's Tutorial 9: for every lippe_*.h5 in $FLOWDP_FIXTURE_DIR (default
 * ../shared/fixtures) the main flows (flows.1..) are built from the file's /config, loaded from
 * /params_init, fed /train/flows/0/z (the output of the dequantization flows.0) and matched
 * layer by layer (/train/flows/<k>/{z,ldj}), then the final z, log_pz, log_px, bpd_per_sample,
 * bpd, and the gradients of the main flows' parameters (backward of the bpd loss), at the
 * tolerances of the file's /tolerance (the fixtures' README); the sample path from /sample/z
 * (and /sample/split_noise) through every layer's inverse to x_logit, x_float and x. Uniform-dequantization files are
 * also run end to end: v = (x + u0)/256 and the logit (flows.0) from /input, then everything.
 * flows.0 of variational-dequantization files is not built yet (its couplings come with the
 * learned dequantization): those parts are skipped, saying so. Uniform-dequantization files are
 * also run through the MODEL ([model] type = tutorial, fdp_model_create from a config matching
 * /config): fdp_model_loss_xu from /input/x, u0 against /train (bpd_per_sample, bpd), its
 * backward against /grads, one Adam step with global-norm clipping (of the bpd gradient, as the
 * tutorial's Lightning step) against /state_after_step, and the loss after it against
 * /after_step. Worst error per group printed. */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/config.h"
#include "flowdp/flow.h"
#include "flowdp/model.h"
#include "flowdp/optim.h"
#include "testutil.h"

enum { MAXL = 32 };
#define LOG2E 1.44269504088896340736
#define PI 3.14159265358979323846

/* ---- reading the fixture with HDF5's C API ---- */
/* a numeric attribute (up to cap values) of obj; returns the count */
static int attr_doubles(hid_t f, const char *obj, const char *name, double *v, int cap) {
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) fail_msg("attribute %s of %s missing", name, obj);
    hid_t sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    assert_true(n >= 1 && n <= cap);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0);
    H5Sclose(sp);
    H5Aclose(a);
    return (int)n;
}
static double attr1(hid_t f, const char *obj, const char *name) {
    double v[8];
    attr_doubles(f, obj, name, v, 8);
    return v[0];
}

/* a string-array attribute of the root: returns count, fills *out (malloc'd strings) */
static int attr_strings(hid_t f, const char *name, char ***out) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    char **raw = calloc((size_t)n + 1, sizeof *raw);
    assert_true(H5Aread(a, t, raw) >= 0);
    char **res = calloc((size_t)n + 1, sizeof *res);
    for (hssize_t i = 0; i < n; i++) res[i] = strdup(raw[i]);
    H5Dvlen_reclaim(t, sp, H5P_DEFAULT, raw);
    free(raw);
    H5Tclose(t);
    H5Sclose(sp);
    H5Aclose(a);
    *out = res;
    return (int)n;
}

static float *read_floats(hid_t f, const char *path, int64_t expect) {
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: missing", path);
    hid_t sp = H5Dget_space(d);
    int64_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n != expect) fail_msg("%s: %lld elements, expected %lld", path, (long long)n, (long long)expect);
    float *buf = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    return buf;
}

static double read_scalar(hid_t f, const char *path) {
    double v;
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: missing", path);
    assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0);
    H5Dclose(d);
    return v;
}

/* max|a - b| / max|ref| over n (a in double or float) */
static double rel_err_d(const double *a, const float *ref, int64_t n) {
    double e = 0.0, s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - ref[i]));
        s = fmax(s, fabs(ref[i]));
    }
    return e / (s > 0 ? s : 1.0);
}
static double rel_err_f(const float *a, const float *ref, int64_t n) {
    return tu_max_abs_diff(a, ref, n) / fmax(tu_max_abs(ref, n), 1e-30);
}

/* ---- the model: the main flows of the file's config ---- */
typedef struct model {
    fdp_flow_layer *layer[MAXL]; /* layer[k] = flows.k, k = 1..K */
    int K;
    fdp_params p;
} model;

static void build(model *m, hid_t f, int C, int H, int W) {
    double hid[8];
    int nh = attr_doubles(f, "/config", "c_hidden", hid, 8);
    int L = (int)attr1(f, "/config", "num_layers"), multi = (int)attr1(f, "/config", "multiscale");
    int ncoup = (int)attr1(f, "/config", "num_coupling");
    char pre[64];
    fdp_params_init(&m->p);
    int k = 0;
#define ADD(l)                   \
    do {                         \
        fdp_flow_layer *t_ = (l); \
        m->layer[++k] = t_;      \
    } while (0)
#define PRE() (snprintf(pre, sizeof pre, "flows.%d", k + 1), pre)
    if (!multi) {
        for (int i = 0; i < ncoup; i++)
            ADD(fdp_flow_tut_coupling_create(&m->p, PRE(), C, H, W, (int)hid[0], L, FDP_MASK_CHECKERBOARD, i % 2));
    } else {
        assert_int_equal(nh, 3);
        for (int i = 0; i < 2; i++)
            ADD(fdp_flow_tut_coupling_create(&m->p, PRE(), C, H, W, (int)hid[0], L, FDP_MASK_CHECKERBOARD, i % 2));
        ADD(fdp_flow_squeeze_create(0, 0));
        for (int i = 0; i < 2; i++)
            ADD(fdp_flow_tut_coupling_create(&m->p, PRE(), 4 * C, H / 2, W / 2, (int)hid[1], L, FDP_MASK_CHANNEL, i % 2));
        ADD(fdp_flow_tut_split_create(4 * C, 0, (int64_t)2 * C * (H / 2) * (W / 2)));
        ADD(fdp_flow_squeeze_create(0, 0));
        for (int i = 0; i < 4; i++)
            ADD(fdp_flow_tut_coupling_create(&m->p, PRE(), 8 * C, H / 4, W / 4, (int)hid[2], L, FDP_MASK_CHANNEL, i % 2));
    }
#undef ADD
#undef PRE
    m->K = k;
}

/* names, shapes and order against the fixture's state_order (the main flows' part of it); load */
static void load_params(model *m, hid_t f) {
    char **order;
    int norder = attr_strings(f, "state_order", &order), j = 0;
    for (int i = 0; i < norder; i++) {
        if (strncmp(order[i], "flows.0.", 8) == 0) continue;
        if (j >= m->p.count) fail_msg("fixture entry %s not built", order[i]);
        if (strcmp(order[i], m->p.entries[j].name) != 0)
            fail_msg("state_dict entry %d: fixture %s, flowdp %s", i, order[i], m->p.entries[j].name);
        j++;
    }
    assert_int_equal(j, m->p.count);
    for (int i = 0; i < norder; i++) free(order[i]);
    free(order);
    for (int i = 0; i < m->p.count; i++) {
        char path[512];
        snprintf(path, sizeof path, "/params_init/%s", m->p.entries[i].name);
        float *v = read_floats(f, path, m->p.entries[i].numel);
        memcpy(fdp_params_data(&m->p, i), v, sizeof(float) * (size_t)m->p.entries[i].numel);
        free(v);
    }
}

typedef struct worst {
    double z, ldj, bpd, grad;
    const char *grad_name;
} worst;

/* the main flows from z0 (flows.0's output) and ldj0; per-layer and final checks (layer_checks 0:
 * the final ones only); returns the final z (arena) and fills sldj (N) */
static fdp_tensor run_main(model *m, fdp_ctx *ctx, hid_t f, const float *z0, const double *ldj0, int N, int C, int H,
                           int W, int layer_checks, worst *w, double *sldj) {
    fdp_tensor x = fdp_arena_tensor(ctx->arena, N, C, H, W);
    memcpy(x.data, z0, sizeof(float) * (size_t)fdp_numel(x));
    memcpy(sldj, ldj0, sizeof(double) * (size_t)N);
    for (int k = 1; k <= m->K; k++) {
        x = m->layer[k]->ops->forward(m->layer[k], ctx, x, sldj);
        if (!layer_checks) continue;
        char path[128];
        snprintf(path, sizeof path, "/train/flows/%d/z", k);
        float *rz = read_floats(f, path, fdp_numel(x));
        snprintf(path, sizeof path, "/train/flows/%d/ldj", k);
        float *rl = read_floats(f, path, N);
        w->z = fmax(w->z, rel_err_f(x.data, rz, fdp_numel(x)));
        w->ldj = fmax(w->ldj, rel_err_d(sldj, rl, N));
        free(rz);
        free(rl);
    }
    return x;
}

/* final z, log_pz, log_px, bpd_per_sample, bpd; returns the mean bpd */
static double check_final(hid_t f, fdp_tensor z, const double *sldj, int64_t D, worst *w) {
    int N = z.n;
    int64_t Dz = fdp_sample_numel(z);
    float *rz = read_floats(f, "/train/z", fdp_numel(z)), *rpz = read_floats(f, "/train/log_pz", N),
          *rpx = read_floats(f, "/train/log_px", N), *rb = read_floats(f, "/train/bpd_per_sample", N);
    w->z = fmax(w->z, rel_err_f(z.data, rz, fdp_numel(z)));
    double lpz[MAXL], lpx[MAXL], bpd = 0.0;
    assert_true(N <= MAXL);
    for (int i = 0; i < N; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < Dz; j++) {
            double v = z.data[i * Dz + j];
            s += -0.5 * v * v - 0.5 * log(2.0 * PI);
        }
        lpz[i] = s;
        lpx[i] = sldj[i] + s;
        double b = -lpx[i] * LOG2E / (double)D;
        w->bpd = fmax(w->bpd, fabs(b - rb[i]));
        bpd += b / N;
    }
    w->ldj = fmax(w->ldj, fmax(rel_err_d(lpz, rpz, N), rel_err_d(lpx, rpx, N)));
    w->bpd = fmax(w->bpd, fabs(bpd - read_scalar(f, "/train/bpd")));
    free(rz);
    free(rpz);
    free(rpx);
    free(rb);
    return bpd;
}

/* backward of the mean bpd through the main flows; gradients against /grads */
static void check_grads(model *m, fdp_ctx *ctx, hid_t f, fdp_tensor z, int64_t D, worst *w) {
    int N = z.n;
    double c = LOG2E / ((double)N * (double)D);
    fdp_tensor dz = fdp_arena_tensor(ctx->arena, z.n, z.c, z.h, z.w);
    for (int64_t i = 0; i < fdp_numel(z); i++) dz.data[i] = (float)(c * z.data[i]); /* d(-log_pz)/dz */
    float dldj[MAXL];
    for (int i = 0; i < N; i++) dldj[i] = (float)-c;
    for (int k = m->K; k >= 1; k--) dz = m->layer[k]->ops->backward(m->layer[k], ctx, dz, dldj);
    fdp_params *p = &m->p;
    double G = 0.0;
    float *ref[4096];
    assert_true(p->count <= 4096);
    for (int i = 0; i < p->count; i++) {
        ref[i] = NULL;
        if (p->entries[i].kind != FDP_PARAM) continue;
        char path[512];
        snprintf(path, sizeof path, "/grads/%s", p->entries[i].name);
        ref[i] = read_floats(f, path, p->entries[i].numel);
        G = fmax(G, tu_max_abs(ref[i], p->entries[i].numel));
    }
    double floor = attr1(f, "/tolerance", "grad_floor") * G;
    for (int i = 0; i < p->count; i++) {
        if (!ref[i]) continue;
        int64_t n = p->entries[i].numel;
        double e = tu_max_abs_diff(fdp_params_grad(p, i), ref[i], n) / fmax(tu_max_abs(ref[i], n), floor);
        if (e > w->grad) {
            w->grad = e;
            w->grad_name = p->entries[i].name;
        }
        free(ref[i]);
    }
}

/* uniform dequantization end to end: v = (x + u0)/256 (float32), ldj -= log(256) D, the logit */
static double check_end_to_end(model *m, fdp_ctx *ctx, hid_t f, int N, int C, int H, int W, double alpha, worst *w) {
    int64_t D = (int64_t)C * H * W;
    float *x = read_floats(f, "/input/x", N * D), *u = read_floats(f, "/input/u0", N * D);
    float *rv = read_floats(f, "/train/dequant/v", N * D), *rlv = read_floats(f, "/train/dequant/ldj_v", N);
    float *rz0 = read_floats(f, "/train/flows/0/z", N * D), *rl0 = read_floats(f, "/train/flows/0/ldj", N);
    fdp_tensor v = fdp_arena_tensor(ctx->arena, N, C, H, W);
    double sldj[MAXL];
    for (int64_t i = 0; i < N * D; i++) {
        float s = x[i] + u[i];
        v.data[i] = s / 256.0f;
    }
    for (int i = 0; i < N; i++) sldj[i] = -(double)(float)(log(256.0) * (double)D);
    w->z = fmax(w->z, rel_err_f(v.data, rv, N * D));
    w->ldj = fmax(w->ldj, rel_err_d(sldj, rlv, N));
    fdp_flow_layer *logit = fdp_flow_tut_logit_create(alpha);
    fdp_tensor z0 = logit->ops->forward(logit, ctx, v, sldj);
    w->z = fmax(w->z, rel_err_f(z0.data, rz0, N * D));
    w->ldj = fmax(w->ldj, rel_err_d(sldj, rl0, N));
    double ldj0[MAXL];
    memcpy(ldj0, sldj, sizeof(double) * (size_t)N);
    fdp_tensor z = run_main(m, ctx, f, z0.data, ldj0, N, C, H, W, 1, w, sldj);
    double bpd = check_final(f, z, sldj, D, w);
    fdp_flow_destroy(logit);
    free(x); free(u); free(rv); free(rlv); free(rz0); free(rl0);
    return bpd;
}

/* the sample path from /sample/z (split noise through ctx->latent): every layer's inverse against
 * /sample/flows/<k>/z, x_logit, x_float = sigmoid(x_logit) 256 (tut_logit's inverse), x */
static void check_sample(model *m, fdp_ctx *ctx, hid_t f, int N, int C, int H, int W, double alpha) {
    double ls[8], ez = 0.0, ex = 0.0;
    assert_int_equal(attr_doubles(f, "/config", "latent_shape", ls, 8), 4);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, (int)ls[0], (int)ls[1], (int)ls[2], (int)ls[3]);
    assert_int_equal(y.n, N);
    float *sz = read_floats(f, "/sample/z", fdp_numel(y)), *noise = NULL;
    memcpy(y.data, sz, sizeof(float) * (size_t)fdp_numel(y));
    if ((int)attr1(f, "/config", "multiscale")) {
        int64_t len = (int64_t)2 * C * (H / 2) * (W / 2);
        noise = read_floats(f, "/sample/split_noise", N * len);
        ctx->latent = noise;
        ctx->latent_dim = len;
    }
    for (int k = m->K; k >= 1; k--) {
        y = m->layer[k]->ops->inverse(m->layer[k], ctx, y);
        char path[128];
        snprintf(path, sizeof path, "/sample/flows/%d/z", k);
        float *r = read_floats(f, path, fdp_numel(y));
        ez = fmax(ez, rel_err_f(y.data, r, fdp_numel(y)));
        free(r);
    }
    ctx->latent = NULL;
    int64_t n = (int64_t)N * C * H * W, mism = 0;
    float *rl = read_floats(f, "/sample/x_logit", n), *rxf = read_floats(f, "/sample/x_float", n),
          *rx = read_floats(f, "/sample/x", n);
    ez = fmax(ez, rel_err_f(y.data, rl, n));
    fdp_flow_layer *logit = fdp_flow_tut_logit_create(alpha);
    fdp_tensor v = logit->ops->inverse(logit, ctx, y);
    double xt = attr1(f, "/tolerance", "sample_x_float_abs");
    for (int64_t i = 0; i < n; i++) {
        float xf = v.data[i] * 256.0f, xi = fminf(fmaxf(floorf(xf), 0.0f), 255.0f);
        ex = fmax(ex, fabs((double)xf - rxf[i]));
        /* an integer may differ by 1 only where x_float is within tolerance of an integer */
        if (xi != rx[i] && !(fabsf(xi - rx[i]) == 1.0f && fabs(rxf[i] - nearbyint(rxf[i])) <= xt)) mism++;
    }
    double zt = attr1(f, "/tolerance", "sample_z_rel");
    printf("  sample path: per-layer z, x_logit %.2e (tol %.0e)  x_float %.2e (tol %.0e)  x mismatches %lld\n", ez, zt,
           ex, xt, (long long)mism);
    assert_true(ez <= zt && ex <= xt && mism == 0);
    fdp_flow_destroy(logit);
    free(sz); free(noise); free(rl); free(rxf); free(rx);
}

static void report(const char *what, const worst *w, double zt, double lt, double bt, double gt) {
    printf("  %-34s z %.2e (tol %.0e)  ldj/log_pz/log_px %.2e (tol %.0e)  bpd %.2e (tol %.0e)", what, w->z, zt, w->ldj,
           lt, w->bpd, bt);
    if (w->grad_name) printf("  grads %.2e (tol %.0e, worst %s)", w->grad, gt, w->grad_name);
    printf("\n");
    assert_true(w->z <= zt && w->ldj <= lt && w->bpd <= bt && w->grad <= gt);
}

/* the model through fdp_model_create (uniform dequantization files) */
static void check_model(hid_t f, int N, int C, int H, int W, double zt, double bt, double gt) {
    int64_t D = (int64_t)C * H * W;
    double hid[8], bpd_scale = LOG2E / (double)D;
    int nh = attr_doubles(f, "/config", "c_hidden", hid, 8), multi = (int)attr1(f, "/config", "multiscale");
    fdp_config cfg;
    fdp_config_defaults(&cfg);
    cfg.model.type = FDP_MODEL_TUTORIAL;
    cfg.model.tutorial_arch = multi ? FDP_TUT_MULTISCALE : FDP_TUT_SIMPLE;
    cfg.model.c_hidden = (int)hid[0];
    if (nh == 3) {
        cfg.model.c_hidden_scale2 = (int)hid[1];
        cfg.model.c_hidden_scale3 = (int)hid[2];
    }
    assert_true(attr1(f, "/config", "num_coupling") == 8 && attr1(f, "/config", "num_layers") == 3 &&
                attr1(f, "/config", "alpha") == 1e-5);
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m;
    fdp_err err = {0};
    if (fdp_model_create(&cfg, C, H, W, be, 0, &m, &err) != 0) fail_msg("fdp_model_create: %s", err.msg);
    model ref = {.p = *m->params};
    load_params(&ref, f); /* names and order against state_order; /params_init */
    fdp_arena *arena = fdp_arena_create(64 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = m->params, .training = 1, .world_size = 1, .temperature = 1.0f};
    float *xi = read_floats(f, "/input/x", N * D), *u = read_floats(f, "/input/u0", N * D);
    fdp_tensor x = fdp_arena_tensor(arena, N, C, H, W), ut = fdp_arena_tensor(arena, N, C, H, W);
    for (int64_t i = 0; i < N * D; i++) x.data[i] = xi[i] / 255.0f;
    memcpy(ut.data, u, sizeof(float) * (size_t)(N * D));
    double nll[MAXL], eb = 0.0;
    double bpd = fdp_model_loss_xu(m, &ctx, x, ut, nll) * bpd_scale;
    float *rb = read_floats(f, "/train/bpd_per_sample", N);
    for (int i = 0; i < N; i++) eb = fmax(eb, fabs(nll[i] * bpd_scale - rb[i]));
    eb = fmax(eb, fabs(bpd - read_scalar(f, "/train/bpd")));
    /* gradients of the mean bpd */
    be->memset0(be, m->params->grads, sizeof(float) * (size_t)m->params->n_params);
    m->backward(m, &ctx, (float)bpd_scale);
    worst w = {0};
    w.bpd = eb;
    fdp_params *p = m->params;
    double G = 0.0;
    for (int i = 0; i < p->count; i++) {
        if (p->entries[i].kind != FDP_PARAM) continue;
        char path[512];
        snprintf(path, sizeof path, "/grads/%s", p->entries[i].name);
        float *g = read_floats(f, path, p->entries[i].numel);
        G = fmax(G, tu_max_abs(g, p->entries[i].numel));
        free(g);
    }
    double floor = attr1(f, "/tolerance", "grad_floor") * G;
    for (int i = 0; i < p->count; i++) {
        if (p->entries[i].kind != FDP_PARAM) continue;
        char path[512];
        snprintf(path, sizeof path, "/grads/%s", p->entries[i].name);
        int64_t n = p->entries[i].numel;
        float *g = read_floats(f, path, n);
        double e = tu_max_abs_diff(fdp_params_grad(p, i), g, n) / fmax(tu_max_abs(g, n), floor);
        if (e > w.grad) {
            w.grad = e;
            w.grad_name = p->entries[i].name;
        }
        free(g);
    }
    double gnorm = fdp_grad_global_norm(p), rgn = read_scalar(f, "/train/grad_norm");
    printf("  (model bpd %.6f vs %.6f, grad norm %.6f vs %.6f)\n", bpd, read_scalar(f, "/train/bpd"), gnorm, rgn);
    report("model (fdp_model_create) from x, u0:", &w, zt, 1.0, bt, gt);
    assert_true(fabs(gnorm - rgn) <= gt * rgn);
    /* one Adam step, gradients clipped to global norm gradient_clip_val */
    fdp_adam opt;
    fdp_adam_init(&opt, p, (float)attr1(f, "/config", "adam_beta1"), (float)attr1(f, "/config", "adam_beta2"),
                  (float)attr1(f, "/config", "adam_eps"), 0.0f);
    double lr = attr1(f, "/config", "lr");
    fdp_adam_step(&opt, p, (float)lr, fdp_clip_factor(gnorm, attr1(f, "/config", "gradient_clip_val")));
    double ep = 0.0;
    for (int i = 0; i < p->count; i++) {
        char path[512];
        snprintf(path, sizeof path, "/state_after_step/%s", p->entries[i].name);
        float *r = read_floats(f, path, p->entries[i].numel);
        ep = fmax(ep, tu_max_abs_diff(fdp_params_data(p, i), r, p->entries[i].numel));
        free(r);
    }
    fdp_arena_reset_all(arena);
    x = fdp_arena_tensor(arena, N, C, H, W);
    ut = fdp_arena_tensor(arena, N, C, H, W);
    for (int64_t i = 0; i < N * D; i++) x.data[i] = xi[i] / 255.0f;
    memcpy(ut.data, u, sizeof(float) * (size_t)(N * D));
    ctx.no_grad = 1;
    double bpd2 = fdp_model_loss_xu(m, &ctx, x, ut, nll) * bpd_scale, ea = fabs(bpd2 - read_scalar(f, "/after_step/bpd"));
    float *ra = read_floats(f, "/after_step/bpd_per_sample", N);
    for (int i = 0; i < N; i++) ea = fmax(ea, fabs(nll[i] * bpd_scale - ra[i]));
    printf("  model after one clipped Adam step: parameters max abs diff %.2e (tol 2 lr = %.0e); bpd %.6f vs %.6f, "
           "worst %.2e (tol %.0e)\n",
           ep, 2 * lr, bpd2, read_scalar(f, "/after_step/bpd"), ea, bt);
    assert_true(ep <= 2 * lr && ea <= bt);
    fdp_adam_free(&opt);
    free(xi); free(u); free(rb); free(ra);
    fdp_arena_destroy(arena);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
}

static void check_fixture(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open fixture %s", path);
    int C = (int)attr1(f, "/config", "in_channels"), H = (int)attr1(f, "/config", "height"),
        W = (int)attr1(f, "/config", "width"), N = (int)attr1(f, "/config", "batch");
    int vardeq = (int)attr1(f, "/config", "use_vardeq");
    double alpha = attr1(f, "/config", "alpha");
    double zt = attr1(f, "/tolerance", "z_rel"), lt = attr1(f, "/tolerance", "ldj_rel"),
           bt = attr1(f, "/tolerance", "bpd_abs"), gt = attr1(f, "/tolerance", "grad_rel");
    assert_true(N <= MAXL);
    int64_t D = (int64_t)C * H * W;
    model m;
    build(&m, f, C, H, W);
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_params_finalize(&m.p, be);
    load_params(&m, f);
    printf("fixture %s: %dx%dx%d batch %d, %d main flows, %lld parameters\n", path, C, H, W, N, m.K,
           (long long)m.p.n_params);
    fdp_arena *arena = fdp_arena_create(64 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = &m.p, .training = 1, .world_size = 1, .input_grad = 1,
                   .temperature = 1.0f};
    for (int k = 1; k <= m.K; k++) fdp_flow_prepare(m.layer[k], &ctx);

    /* the main flows from the fixture's flows.0 output */
    worst w = {0};
    float *z0 = read_floats(f, "/train/flows/0/z", N * D), *l0 = read_floats(f, "/train/flows/0/ldj", N);
    double ldj0[MAXL], sldj[MAXL];
    for (int i = 0; i < N; i++) ldj0[i] = l0[i];
    fdp_tensor z = run_main(&m, &ctx, f, z0, ldj0, N, C, H, W, 1, &w, sldj);
    double bpd = check_final(f, z, sldj, D, &w);
    be->memset0(be, m.p.grads, sizeof(float) * (size_t)m.p.n_params);
    check_grads(&m, &ctx, f, z, D, &w);
    printf("  (bpd %.6f vs %.6f)\n", bpd, read_scalar(f, "/train/bpd"));
    report("main flows from train/flows/0:", &w, zt, lt, bt, gt);

    fdp_arena_reset_all(arena);
    check_sample(&m, &ctx, f, N, C, H, W, alpha);

    /* flows.0 */
    fdp_arena_reset_all(arena);
    if (vardeq) {
        printf("  flows.0 (variational dequantization) skipped: not built yet\n");
    } else {
        worst we = {0};
        bpd = check_end_to_end(&m, &ctx, f, N, C, H, W, alpha, &we);
        printf("  (end to end bpd %.6f)\n", bpd);
        report("end to end from x, u0:", &we, zt, lt, bt, gt);
        check_model(f, N, C, H, W, zt, bt, gt);
    }
    free(z0);
    free(l0);
    fdp_arena_destroy(arena);
    for (int k = 1; k <= m.K; k++) fdp_flow_destroy(m.layer[k]);
    fdp_params_free(&m.p);
    fdp_backend_destroy(be);
    H5Fclose(f);
}

static void test_all_fixtures(void **state) {
    (void)state;
    const char *dir = tu_fixture_dir();
    DIR *d = opendir(dir);
    if (!d) fail_msg("fixture directory %s not found (set FLOWDP_FIXTURE_DIR)", dir);
    struct dirent *e;
    int count = 0;
    char names[64][256];
    while ((e = readdir(d)) && count < 64) {
        size_t L = strlen(e->d_name);
        if (strncmp(e->d_name, "lippe_", 6) == 0 && L > 3 && strcmp(e->d_name + L - 3, ".h5") == 0)
            snprintf(names[count++], sizeof names[0], "%s", e->d_name);
    }
    closedir(d);
    assert_true(count > 0);
    for (int i = 0; i < count; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) fail_msg("path too long: %s", dir);
        check_fixture(path);
    }
    printf("%d fixture(s) matched\n", count);
}

int main(void) {
    H5Eset_auto(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_all_fixtures)};
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    H5close();
    return r;
}
