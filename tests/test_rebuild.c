/* test_rebuild.c — docs/ARCHITECTURE.md, section "Memory": the RealNVP's rebuilt path
 * (rebuild_activations: forward keeps no s/t-network activations, backward
 * rebuilds each coupling's input from its output with the inverse and
 * recomputes its s/t network) against the stored path, one training-mode step
 * on the same model, batch and noise:
 *  - the loss, z, the per-sample log-dets and the BatchNorm running statistics
 *    (and num_batches_tracked) after the step are EXACTLY equal: the forward
 *    does the same arithmetic in place, and the recomputation reuses the
 *    forward's batch statistics without updating the running ones;
 *  - the gradients agree within a normwise relative error (max |g_r - g_s| over
 *    the whole flat gradient / max |g_s|) of GRAD_TOL, see below;
 *  - the grads_ready hook is called with the same entry ranges in the same
 *    (reverse table) order;
 *  - the activation arena's peak is smaller, and grows much less with the
 *    number of scales (couplings) than the stored path's.
 *
 * GRAD_TOL. The rebuilt input of a coupling differs from the stored one by the
 * float32 rounding of the inverse, x = y*exp(-s) - t: a few ulps relative to
 * |x| + |t| (u = 2^-24 = 6e-8). The last coupling's s/t input is exact (z is
 * kept); every earlier one sees the rebuilt output of the coupling after it, so
 * these ulp-level differences accumulate along the flow (10 couplings on 2
 * scales, 16 on 3) and are amplified by the s/t networks' training-mode
 * BatchNorm (1/std of their inputs) and by exp(s). Measured (printed below):
 * 3.2e-7 (1x8x8), 1.2e-6 (3x8x8), 4.6e-7 (1x28x28) normwise, l2-relative
 * 4.8e-7..9.8e-7: 5-20 u, a few ulps times the number of couplings, as
 * expected. GRAD_TOL = 1e-4 leaves two orders of magnitude for other data and
 * parameters (larger |s|, smaller batch variances), and is still well below
 * what a real mistake (a gradient through the wrong input, a missing term, a
 * wrong mask) produces: those give O(1e-2..1). Statistics updated twice are
 * caught exactly by the running-statistics comparison. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/realnvp.h"
#include "testutil.h"

#define GRAD_TOL 1e-4

typedef struct hook_log {
    int n, cap;
    int *first, *last;
} hook_log;

static void record_hook(void *user, int first, int last) {
    hook_log *h = user;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->first = realloc(h->first, sizeof(int) * (size_t)h->cap);
        h->last = realloc(h->last, sizeof(int) * (size_t)h->cap);
        assert_non_null(h->first);
        assert_non_null(h->last);
    }
    h->first[h->n] = first;
    h->last[h->n] = last;
    h->n++;
}

typedef struct step_result {
    double loss;
    float *z, *grads, *buffers;
    double *sldj;
    int64_t nz, ngrads, nbuffers;
    size_t peak;               /* the arena's peak over forward + backward */
    size_t prepared;           /* of which the per-step weight copies and BatchNorm statistics */
    hook_log hooks;
} step_result;

static void free_result(step_result *r) {
    free(r->z);
    free(r->grads);
    free(r->buffers);
    free(r->sldj);
    free(r->hooks.first);
    free(r->hooks.last);
}

/* one training-mode forward + backward of a fresh model (seed 1) on a fixed batch */
static step_result run_step(int C, int H, int W, int scales, int mid, int blocks, int N, int rebuild) {
    fdp_backend *be = fdp_backend_cpu_create(2);
    fdp_realnvp m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_realnvp_build(&m, C, H, W, scales, mid, blocks, &err), 0);
    fdp_realnvp_alloc_init(&m, be, 1);
    m.rebuild_activations = rebuild;
    fdp_params *p = &m.params;
    int64_t D = (int64_t)C * H * W;
    float *x = malloc(sizeof(float) * (size_t)(N * D)), *u = malloc(sizeof(float) * (size_t)(N * D));
    tu_fill_uniform(u, N * D, 11, 0.0f, 1.0f);
    tu_fill_uniform(x, N * D, 12, 0.0f, 1.0f);
    for (int64_t i = 0; i < N * D; i++) x[i] = floorf(x[i] * 255.999f) / 255.0f; /* 8-bit pixels */
    step_result r = {0};
    fdp_arena *arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = 1, .world_size = 1,
                   .grads_ready = record_hook, .grads_ready_user = &r.hooks};
    r.loss = fdp_realnvp_forward_loss(&m, &ctx, fdp_tensor_wrap(x, N, C, H, W, FDP_DEVICE_CPU),
                                      fdp_tensor_wrap(u, N, C, H, W, FDP_DEVICE_CPU), NULL);
    r.nz = N * D;
    r.z = malloc(sizeof(float) * (size_t)r.nz);
    memcpy(r.z, m.z.data, sizeof(float) * (size_t)r.nz);
    r.sldj = malloc(sizeof(double) * (size_t)N);
    memcpy(r.sldj, m.sldj, sizeof(double) * (size_t)N);
    be->memset0(be, p->grads, sizeof(float) * (size_t)p->n_params);
    fdp_realnvp_backward(&m, &ctx, 1.0f);
    /* backward must not have touched the forward's z */
    assert_memory_equal(r.z, m.z.data, sizeof(float) * (size_t)r.nz);
    r.ngrads = p->n_params;
    r.nbuffers = p->n_buffers;
    r.grads = malloc(sizeof(float) * (size_t)r.ngrads);
    r.buffers = malloc(sizeof(float) * (size_t)r.nbuffers);
    memcpy(r.grads, p->grads, sizeof(float) * (size_t)r.ngrads);
    memcpy(r.buffers, p->buffers, sizeof(float) * (size_t)r.nbuffers);
    r.peak = fdp_arena_peak(arena);
    fdp_arena_destroy(arena);
    /* what fdp_realnvp_prepare alone takes: parameter-sized, the same in both paths */
    arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    ctx.arena = arena;
    fdp_realnvp_prepare(&m, &ctx);
    r.prepared = fdp_arena_peak(arena);
    fdp_arena_destroy(arena);
    free(x);
    free(u);
    fdp_realnvp_free(&m);
    fdp_backend_destroy(be);
    return r;
}

static double l2_rel(const float *a, const float *b, int64_t n) {
    double d = 0.0, s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(d / s);
}

static void compare(int C, int H, int W, int scales, int mid, int blocks, int N) {
    step_result s = run_step(C, H, W, scales, mid, blocks, N, 0);
    step_result r = run_step(C, H, W, scales, mid, blocks, N, 1);
    double e = tu_normwise_err(r.grads, s.grads, s.ngrads, 0.0), e2 = l2_rel(r.grads, s.grads, s.ngrads);
    printf("%dx%dx%d scales %d mid %d blocks %d batch %d: loss %.9g vs %.9g; gradients normwise %.2e (l2 %.2e, "
           "tolerance %.0e); arena peak stored %.2f MiB, rebuilt %.2f MiB\n",
           C, H, W, scales, mid, blocks, N, r.loss, s.loss, e, e2, GRAD_TOL, s.peak / 1048576.0, r.peak / 1048576.0);
    assert_true(r.loss == s.loss);
    assert_memory_equal(r.z, s.z, sizeof(float) * (size_t)s.nz);
    assert_memory_equal(r.sldj, s.sldj, sizeof(double) * (size_t)N);
    assert_int_equal(r.nbuffers, s.nbuffers);
    assert_memory_equal(r.buffers, s.buffers, sizeof(float) * (size_t)s.nbuffers);
    assert_true(isfinite(e) && e < GRAD_TOL);
    assert_true(r.peak < s.peak);
    /* the same gradient buckets become ready in the same order: reverse table order */
    assert_int_equal(r.hooks.n, s.hooks.n);
    for (int i = 0; i < s.hooks.n; i++) {
        assert_int_equal(r.hooks.first[i], s.hooks.first[i]);
        assert_int_equal(r.hooks.last[i], s.hooks.last[i]);
        if (i > 0) assert_true(s.hooks.last[i] < s.hooks.first[i - 1]);
    }
    free_result(&s);
    free_result(&r);
}

/* the fixtures' shapes (test_realnvp_fixture) */
static void test_1x8x8(void **state) {
    (void)state;
    compare(1, 8, 8, 2, 8, 2, 4);
}
static void test_3x8x8(void **state) {
    (void)state;
    compare(3, 8, 8, 3, 8, 2, 4);
}
/* MNIST-sized */
static void test_1x28x28(void **state) {
    (void)state;
    compare(1, 28, 28, 2, 8, 1, 4);
}

/* Memory against depth: more scales = more couplings. The stored path keeps every coupling's
 * s/t activations, so its peak grows with each one; the rebuilt path keeps the running tensor
 * and one coupling's working set (the largest is on the first scale). Both hold the per-step
 * weight copies of prepare (parameter-sized, growing with depth either way), which are taken
 * out here: activations = peak - prepared. */
static void test_peak_vs_depth(void **state) {
    (void)state;
    double as[3], ar[3];
    for (int s = 1; s <= 3; s++) {
        step_result a = run_step(1, 16, 16, s, 8, 1, 16, 0), b = run_step(1, 16, 16, s, 8, 1, 16, 1);
        assert_int_equal(a.prepared, b.prepared);
        as[s - 1] = (double)(a.peak - a.prepared) / 1048576.0;
        ar[s - 1] = (double)(b.peak - b.prepared) / 1048576.0;
        printf("1x16x16 batch 16 scales %d: arena peak stored %.3f MiB, rebuilt %.3f MiB, of which weight copies "
               "%.3f MiB; activations stored %.3f MiB, rebuilt %.3f MiB\n",
               s, a.peak / 1048576.0, b.peak / 1048576.0, a.prepared / 1048576.0, as[s - 1], ar[s - 1]);
        assert_true(b.peak < a.peak);
        free_result(&a);
        free_result(&b);
    }
    printf("activation growth from 1 to 3 scales: stored %+.3f MiB, rebuilt %+.3f MiB\n", as[2] - as[0],
           ar[2] - ar[0]);
    assert_true(as[2] - as[0] > 0.5 * as[0]);       /* the stored path grows with the couplings */
    assert_true(ar[2] - ar[0] < 0.1 * (as[2] - as[0])); /* the rebuilt one hardly at all */
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_1x8x8), cmocka_unit_test(test_3x8x8),
                                       cmocka_unit_test(test_1x28x28), cmocka_unit_test(test_peak_vs_depth)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
