/* test_conv.c — the CPU backend's oneDNN convolutions and matrix product against
 * the plain-C references (cpu_conv_ref.c): forward, backward data, backward
 * weights on random data over kernel sizes 1/3/5/7, cin != cout, H != W, batch
 * 1 and 3, with and without bias, accumulate 0 and 1; the primitive cache; and
 * matmul in all four transpose combinations with beta 0 and 1. Each group runs
 * three times: with the per-op layout choice, and forced to plain (nchw/oihw)
 * and to blocked (oneDNN's choice plus reorders) through FLOWDP_ONEDNN_LAYOUT,
 * so that both code paths stay right whatever the default picks. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_conv.h"
#include "flowdp/backend.h"
#include "testutil.h"

#define TOL 1e-5

static const fdp_conv_shape shapes[] = {
    /* n cin cout h  w  k */
    {1, 3, 5, 7, 9, 3},    {3, 4, 2, 6, 5, 1},    {3, 6, 8, 9, 7, 5},   {1, 16, 16, 5, 11, 3},
    {3, 17, 33, 8, 6, 3},  {3, 2, 32, 10, 12, 3}, {3, 32, 2, 6, 6, 1},  {1, 5, 3, 12, 10, 7},
    {3, 32, 32, 4, 4, 1},  {1, 64, 4, 3, 5, 1},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static int64_t xsize(fdp_conv_shape s) { return (int64_t)s.n * s.cin * s.h * s.w; }
static int64_t ysize(fdp_conv_shape s) { return (int64_t)s.n * s.cout * s.h * s.w; }
static int64_t wsize(fdp_conv_shape s) { return (int64_t)s.cout * s.cin * s.k * s.k; }

static float *rnd(int64_t n, uint64_t seed) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(p);
    tu_fill_uniform(p, n, seed, -1.0f, 1.0f);
    return p;
}
static float *dup(const float *a, int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(p);
    memcpy(p, a, sizeof(float) * (size_t)n);
    return p;
}

static void expect_close(const float *got, const float *want, int64_t n, const char *what, fdp_conv_shape s) {
    double err = tu_normwise_err(got, want, n, 1e-30);
    if (!(err < TOL)) {
        print_error("%s n=%d cin=%d cout=%d h=%d w=%d k=%d: relative error %g\n", what, s.n, s.cin, s.cout, s.h, s.w,
                    s.k, err);
        fail();
    }
}

/* via = 0: fdp_cpu_conv_* directly; via = 1: through the backend's members */
static void check_forward(fdp_backend *be, int via, fdp_conv_shape s, int with_bias, int accumulate, uint64_t seed) {
    float *x = rnd(xsize(s), seed), *w = rnd(wsize(s), seed + 1), *b = rnd(s.cout, seed + 2);
    float *y = rnd(ysize(s), seed + 3), *yref = dup(y, ysize(s));
    const float *bias = with_bias ? b : NULL;
    if (via)
        be->conv_forward(be, s, x, w, bias, y, accumulate);
    else
        fdp_cpu_conv_forward(be->impl, s, x, w, bias, y, accumulate);
    fdp_conv_ref_forward(s, x, w, bias, yref, accumulate);
    expect_close(y, yref, ysize(s), accumulate ? "forward accumulate" : "forward", s);
    free(x), free(w), free(b), free(y), free(yref);
}

static void check_backward_data(fdp_backend *be, int via, fdp_conv_shape s, int accumulate, uint64_t seed) {
    float *dy = rnd(ysize(s), seed), *w = rnd(wsize(s), seed + 1);
    float *dx = rnd(xsize(s), seed + 2), *dxref = dup(dx, xsize(s));
    if (via)
        be->conv_backward_data(be, s, dy, w, dx, accumulate);
    else
        fdp_cpu_conv_backward_data(be->impl, s, dy, w, dx, accumulate);
    fdp_conv_ref_backward_data(s, dy, w, dxref, accumulate);
    expect_close(dx, dxref, xsize(s), accumulate ? "backward_data accumulate" : "backward_data", s);
    free(dy), free(w), free(dx), free(dxref);
}

static void check_backward_weights(fdp_backend *be, int via, fdp_conv_shape s, int with_dbias, uint64_t seed) {
    float *x = rnd(xsize(s), seed), *dy = rnd(ysize(s), seed + 1);
    /* garbage in the outputs: they must be overwritten, not accumulated into */
    float *dw = rnd(wsize(s), seed + 2), *dwref = rnd(wsize(s), seed + 3);
    float *db = rnd(s.cout, seed + 4), *dbref = rnd(s.cout, seed + 5);
    if (via)
        be->conv_backward_weights(be, s, x, dy, dw, with_dbias ? db : NULL);
    else
        fdp_cpu_conv_backward_weights(be->impl, s, x, dy, dw, with_dbias ? db : NULL);
    fdp_conv_ref_backward_weights(s, x, dy, dwref, with_dbias ? dbref : NULL);
    expect_close(dw, dwref, wsize(s), "backward_weights dw", s);
    if (with_dbias) expect_close(db, dbref, s.cout, "backward_weights dbias", s);
    free(x), free(dy), free(dw), free(dwref), free(db), free(dbref);
}

static void test_forward(void **state) {
    fdp_backend *be = fdp_backend_cpu_create(2);
    for (int i = 0; i < NSHAPES; i++)
        for (int bias = 0; bias < 2; bias++)
            for (int acc = 0; acc < 2; acc++) check_forward(be, (i + bias + acc) & 1, shapes[i], bias, acc, 100u + i);
    fdp_backend_destroy(be);
}

static void test_backward_data(void **state) {
    fdp_backend *be = fdp_backend_cpu_create(2);
    for (int i = 0; i < NSHAPES; i++)
        for (int acc = 0; acc < 2; acc++) check_backward_data(be, (i + acc) & 1, shapes[i], acc, 200u + i);
    fdp_backend_destroy(be);
}

static void test_backward_weights(void **state) {
    fdp_backend *be = fdp_backend_cpu_create(2);
    for (int i = 0; i < NSHAPES; i++)
        for (int db = 0; db < 2; db++) check_backward_weights(be, (i + db) & 1, shapes[i], db, 300u + i);
    fdp_backend_destroy(be);
}

/* a shape seen again reuses its primitives; new keys add one entry each; the
 * results of a reused entry are still right (data handles rebound per call) */
static void test_cache(void **state) {
    fdp_backend *be = fdp_backend_cpu_create(2);
    fdp_cpu_conv *cc = be->impl;
    assert_int_equal(fdp_cpu_conv_cache_size(cc), 0);
    fdp_conv_shape s = {3, 6, 8, 9, 7, 3};
    check_forward(be, 0, s, 1, 0, 1);
    check_backward_data(be, 1, s, 0, 2);
    check_backward_weights(be, 0, s, 1, 3);
    int n = fdp_cpu_conv_cache_size(cc);
    assert_int_equal(n, 3);
    for (int rep = 0; rep < 2; rep++) {
        check_forward(be, 1, s, 1, 0, 10u + rep); /* new buffers, same shape */
        check_backward_data(be, 0, s, 0, 20u + rep);
        check_backward_weights(be, 1, s, 1, 30u + rep);
        assert_int_equal(fdp_cpu_conv_cache_size(cc), n);
    }
    /* accumulate and bias presence are part of the key */
    check_forward(be, 0, s, 1, 1, 40);
    assert_int_equal(fdp_cpu_conv_cache_size(cc), n + 1);
    check_forward(be, 0, s, 0, 0, 41);
    assert_int_equal(fdp_cpu_conv_cache_size(cc), n + 2);
    /* another shape grows the pool; the older entries must still be right after */
    fdp_conv_shape big = {3, 33, 40, 16, 15, 5};
    check_forward(be, 1, big, 1, 1, 50);
    check_backward_weights(be, 1, big, 0, 51);
    assert_int_equal(fdp_cpu_conv_cache_size(cc), n + 4);
    check_forward(be, 0, s, 1, 0, 60);
    check_backward_data(be, 0, s, 1, 61);
    check_backward_weights(be, 0, s, 1, 62);
    assert_int_equal(fdp_cpu_conv_cache_size(cc), n + 5);
    fdp_backend_destroy(be);
}

static void test_matmul(void **state) {
    fdp_backend *be = fdp_backend_cpu_create(2);
    const int dims[][3] = {{7, 5, 3}, {1, 9, 4}, {16, 1, 33}, {13, 17, 64}, {64, 64, 100}, {4, 3, 0}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta01 = 0; beta01 < 2; beta01++) {
                    int M = dims[d][0], N = dims[d][1], K = dims[d][2];
                    float alpha = 0.75f, beta = (float)beta01;
                    uint64_t seed = 1000u + 10u * d + 4u * ta + 2u * tb + beta01;
                    float *A = rnd((int64_t)M * K, seed), *B = rnd((int64_t)K * N, seed + 100);
                    float *C = rnd((int64_t)M * N, seed + 200);
                    if (!beta01) /* beta 0: C must not be read (NaN must not leak through) */
                        for (int64_t i = 0; i < (int64_t)M * N; i++) C[i] = NAN;
                    float *Cref = dup(C, (int64_t)M * N);
                    if (d & 1)
                        be->matmul(be, ta, tb, M, N, K, alpha, A, B, beta, C);
                    else
                        fdp_cpu_matmul(be->impl, ta, tb, M, N, K, alpha, A, B, beta, C);
                    fdp_matmul_ref(ta, tb, M, N, K, alpha, A, B, beta, Cref);
                    double err = tu_normwise_err(C, Cref, (int64_t)M * N, 1e-30);
                    if (!(err < TOL) && !(K == 0 && tu_max_abs_diff(C, Cref, (int64_t)M * N) == 0.0)) {
                        print_error("matmul M=%d N=%d K=%d transa=%d transb=%d beta=%g: relative error %g\n", M, N,
                                    K, ta, tb, beta, err);
                        fail();
                    }
                    free(A), free(B), free(C), free(Cref);
                }
    fdp_backend_destroy(be);
}

static int layout_default(void **state) { return unsetenv("FLOWDP_ONEDNN_LAYOUT"); }
static int layout_plain(void **state) { return setenv("FLOWDP_ONEDNN_LAYOUT", "plain", 1); }
static int layout_blocked(void **state) { return setenv("FLOWDP_ONEDNN_LAYOUT", "blocked", 1); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),  cmocka_unit_test(test_backward_data), cmocka_unit_test(test_backward_weights),
        cmocka_unit_test(test_cache),
    };
    const struct CMUnitTest mm[] = {cmocka_unit_test(test_matmul)};
    int failed = 0;
    failed += cmocka_run_group_tests_name("conv, per-op layout", tests, layout_default, layout_default);
    failed += cmocka_run_group_tests_name("conv, plain nchw/oihw", tests, layout_plain, layout_default);
    failed += cmocka_run_group_tests_name("conv, blocked with reorders", tests, layout_blocked, layout_default);
    failed += cmocka_run_group_tests_name("matmul", mm, NULL, NULL);
    return failed;
}
