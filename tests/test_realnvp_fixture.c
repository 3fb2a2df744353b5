/* test_realnvp_fixture.c — the C RealNVP is the notebook's RealNVP: every
 * realnvp_*.h5 in $FLOWDP_FIXTURE_DIR (default ../shared/fixtures) is matched,
 * layer for layer and gradient for gradient, with the tolerances of the
 * fixtures' README: training-mode z, sldj, nll, grad_norm; every gradient; the
 * whole state after one clipped Adam step (running statistics included);
 * evaluation-mode z and sldj; the sample path x = sigmoid(inverse(z)).
 * The worst error of each group is printed. */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/optim.h"
#include "flowdp/realnvp.h"
#include "testutil.h"

/* ---- reading the fixture with HDF5's C API ---- */
static double attr_double(hid_t f, const char *obj, const char *name) {
    double v = NAN;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0);
    H5Aclose(a);
    return v;
}

/* a string-array attribute of the root: returns count, fills *out (malloc'd strings) */
static int attr_strings(hid_t f, const char *name, char ***out) {
    if (H5Aexists(f, name) <= 0) {
        *out = NULL;
        return 0;
    }
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
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

static void free_strings(char **s, int n) {
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

static int64_t dset_numel(hid_t f, const char *path) {
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Dclose(d);
    return n;
}

static float *read_floats(hid_t f, const char *path, int64_t expect) {
    int64_t n = dset_numel(f, path);
    if (n != expect) fail_msg("%s: %lld elements, expected %lld", path, (long long)n, (long long)expect);
    float *buf = malloc(sizeof(float) * (size_t)(n ? n : 1));
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    return buf;
}

static double read_scalar(hid_t f, const char *path) {
    double v;
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0);
    H5Dclose(d);
    return v;
}

/* load every entry of the table (params and buffers) from group `grp` */
static void load_state(hid_t f, const char *grp, fdp_params *p) {
    for (int i = 0; i < p->count; i++) {
        char path[512];
        snprintf(path, sizeof path, "/%s/%s", grp, p->entries[i].name);
        float *v = read_floats(f, path, p->entries[i].numel);
        memcpy(fdp_params_data(p, i), v, sizeof(float) * (size_t)p->entries[i].numel);
        free(v);
    }
}

static int in_list(char **list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0) return 1;
    return 0;
}

static void check_fixture(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open fixture %s", path);
    int C = (int)attr_double(f, "/config", "in_channels"), H = (int)attr_double(f, "/config", "height"),
        W = (int)attr_double(f, "/config", "width"), S = (int)attr_double(f, "/config", "num_scales"),
        MID = (int)attr_double(f, "/config", "mid_channels"), NB = (int)attr_double(f, "/config", "num_blocks"),
        N = (int)attr_double(f, "/config", "batch");
    double lr = attr_double(f, "/config", "lr"), max_norm = attr_double(f, "/config", "max_grad_norm");
    printf("fixture %s: %dx%dx%d scales %d mid %d blocks %d batch %d\n", path, C, H, W, S, MID, NB, N);

    fdp_backend *be = fdp_backend_cpu_create(2);
    fdp_realnvp m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_realnvp_build(&m, C, H, W, S, MID, NB, &err), 0);
    fdp_realnvp_alloc_init(&m, be, 1);
    fdp_params *p = &m.params;

    /* the name table is the state_dict, in the same order */
    char **learn, **order, **zero;
    int nlearn = attr_strings(f, "learnable", &learn), norder = attr_strings(f, "state_order", &order);
    int nzero = attr_strings(f, "zero_grad", &zero);
    assert_int_equal(norder, p->count);
    int li = 0;
    for (int i = 0; i < p->count; i++) {
        if (strcmp(order[i], p->entries[i].name) != 0)
            fail_msg("state_dict entry %d: fixture %s, flowdp %s", i, order[i], p->entries[i].name);
        if (p->entries[i].kind == FDP_PARAM) assert_string_equal(learn[li++], p->entries[i].name);
    }
    assert_int_equal(li, nlearn);

    load_state(f, "params_init", p);
    int64_t D = (int64_t)C * H * W;
    float *x = read_floats(f, "/input/x", N * D), *u = read_floats(f, "/input/u", N * D);
    fdp_arena *arena = fdp_arena_create(64 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = 1, .world_size = 1};

    /* ---- training-mode forward ---- */
    fdp_tensor tx = fdp_tensor_wrap(x, N, C, H, W, FDP_DEVICE_CPU), tu = fdp_tensor_wrap(u, N, C, H, W, FDP_DEVICE_CPU);
    double nll = fdp_realnvp_forward_loss(&m, &ctx, tx, tu, NULL);
    float *ref_z = read_floats(f, "/train/z", N * D), *ref_sldj = read_floats(f, "/train/sldj", N);
    double ez = tu_normwise_err(m.z.data, ref_z, N * D, 0.0);
    double esl = 0.0, sl_scale = 0.0;
    for (int i = 0; i < N; i++) sl_scale = fmax(sl_scale, fabs(ref_sldj[i]));
    for (int i = 0; i < N; i++) esl = fmax(esl, fabs(m.sldj[i] - ref_sldj[i]) / sl_scale);
    double ref_nll = read_scalar(f, "/train/nll");
    double enll = fabs(nll - ref_nll) / fabs(ref_nll);
    printf("  train forward: z %.2e  sldj %.2e  nll %.2e (nll %.6f vs %.6f, bpd %.6f)\n", ez, esl, enll, nll, ref_nll,
           fdp_bpd(nll, D));
    assert_true(ez < 1e-4);
    assert_true(esl < 1e-5);
    assert_true(enll < 1e-5);

    /* ---- gradients ---- */
    be->memset0(be, p->grads, sizeof(float) * (size_t)p->n_params);
    fdp_realnvp_backward(&m, &ctx, 1.0f);
    double gnorm = fdp_grad_global_norm(p), ref_gnorm = read_scalar(f, "/train/grad_norm");
    double egn = fabs(gnorm - ref_gnorm) / ref_gnorm;
    double G = 0.0;
    for (int i = 0; i < p->count; i++) {
        if (p->entries[i].kind != FDP_PARAM) continue;
        char gp[512];
        snprintf(gp, sizeof gp, "/grads/%s", p->entries[i].name);
        float *g = read_floats(f, gp, p->entries[i].numel);
        G = fmax(G, tu_max_abs(g, p->entries[i].numel));
        free(g);
    }
    double eg = 0.0, ezg = 0.0;
    const char *worst = "";
    for (int i = 0; i < p->count; i++) {
        if (p->entries[i].kind != FDP_PARAM) continue;
        char gp[512];
        snprintf(gp, sizeof gp, "/grads/%s", p->entries[i].name);
        float *g = read_floats(f, gp, p->entries[i].numel);
        const float *mine = fdp_params_grad(p, i);
        if (in_list(zero, nzero, p->entries[i].name)) {
            /* true gradient 0: both codes give rounding noise; check against the absolute floor */
            double e = tu_max_abs_diff(mine, g, p->entries[i].numel) / (1e-4 * G);
            ezg = fmax(ezg, e);
        } else {
            double e = tu_normwise_err(mine, g, p->entries[i].numel, 1e-4 * G);
            if (e > eg) {
                eg = e;
                worst = p->entries[i].name;
            }
        }
        free(g);
    }
    printf("  gradients: grad_norm %.2e (%.6f vs %.6f)  worst normwise %.2e (%s)  zero-grad noise/floor %.2f\n", egn,
           gnorm, ref_gnorm, eg, worst, ezg);
    assert_true(egn < 1e-4);
    assert_true(eg < 1e-2);
    assert_true(ezg < 1.0);

    /* ---- one clipped Adam step; compare the whole state ---- */
    fdp_adam opt;
    fdp_adam_init(&opt, p, (float)attr_double(f, "/config", "adam_beta1"), (float)attr_double(f, "/config", "adam_beta2"),
                  (float)attr_double(f, "/config", "adam_eps"), 0.0f);
    fdp_adam_step(&opt, p, (float)lr, fdp_clip_factor(gnorm, max_norm));
    int64_t total = 0, beyond = 0;
    double worst_param = 0.0, worst_buf = 0.0, worst_zero = 0.0;
    for (int i = 0; i < p->count; i++) {
        char sp[512], ip[512];
        snprintf(sp, sizeof sp, "/state_after_step/%s", p->entries[i].name);
        snprintf(ip, sizeof ip, "/params_init/%s", p->entries[i].name);
        int64_t n = p->entries[i].numel;
        float *ref = read_floats(f, sp, n);
        const float *mine = fdp_params_data(p, i);
        if (p->entries[i].kind == FDP_BUFFER) {
            /* relative to the statistic's size: running variances reach 1e2 and more */
            worst_buf = fmax(worst_buf, tu_normwise_err(mine, ref, n, 1.0));
        } else if (in_list(zero, nzero, p->entries[i].name)) {
            float *init = read_floats(f, ip, n);
            worst_zero = fmax(worst_zero, tu_max_abs_diff(mine, init, n));
            free(init);
        } else {
            for (int64_t j = 0; j < n; j++) {
                double d = fabs((double)mine[j] - ref[j]);
                total++;
                beyond += d > 1e-5;
                worst_param = fmax(worst_param, d);
            }
        }
        free(ref);
    }
    printf("  after Adam step: %lld of %lld elements beyond 1e-5 (%.4f%%), worst %.2e (2*lr %.0e); buffers (normwise) %.2e; "
           "zero-grad params moved %.2e\n",
           (long long)beyond, (long long)total, 100.0 * beyond / total, worst_param, 2 * lr, worst_buf, worst_zero);
    assert_true(beyond <= total / 1000);
    assert_true(worst_param <= 2 * lr);
    assert_true(worst_buf < 1e-5);
    assert_true(worst_zero <= 2 * lr);

    /* ---- evaluation mode, model loaded from state_after_step ---- */
    load_state(f, "state_after_step", p);
    fdp_arena_reset_all(arena);
    ctx.training = 0;
    fdp_realnvp_forward_loss(&m, &ctx, tx, tu, NULL);
    float *ref_ez = read_floats(f, "/eval/z", N * D), *ref_esl = read_floats(f, "/eval/sldj", N);
    double eez = tu_normwise_err(m.z.data, ref_ez, N * D, 0.0), eesl = 0.0;
    sl_scale = 0.0;
    for (int i = 0; i < N; i++) sl_scale = fmax(sl_scale, fabs(ref_esl[i]));
    for (int i = 0; i < N; i++) eesl = fmax(eesl, fabs(m.sldj[i] - ref_esl[i]) / sl_scale);
    /* ---- the sample path ---- */
    fdp_arena_reset_all(arena);
    float *sz = read_floats(f, "/sample/z", N * D), *sx = read_floats(f, "/sample/x", N * D);
    fdp_tensor xs = fdp_realnvp_sample(&m, &ctx, fdp_tensor_wrap(sz, N, C, H, W, FDP_DEVICE_CPU), 0);
    double es = tu_max_abs_diff(xs.data, sx, N * D);
    printf("  eval: z %.2e  sldj %.2e   sample x max abs %.2e\n", eez, eesl, es);
    assert_true(eez < 1e-4);
    assert_true(eesl < 1e-5);
    assert_true(es < 1e-4);

    free(x); free(u); free(ref_z); free(ref_sldj); free(ref_ez); free(ref_esl); free(sz); free(sx);
    free_strings(learn, nlearn); free_strings(order, norder); free_strings(zero, nzero);
    fdp_adam_free(&opt);
    fdp_arena_destroy(arena);
    fdp_realnvp_free(&m);
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
        if (strncmp(e->d_name, "realnvp_", 8) == 0 && L > 3 && strcmp(e->d_name + L - 3, ".h5") == 0)
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
