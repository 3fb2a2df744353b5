/* mpi_test_nccl.c — the NCCL device communicator under MPI (ctest runs it under
 * `mpiexec -n 2`, and once alone as a singleton), wherever every rank has its
 * own GPU: all-reduce of float/double device buffers (SUM/AVG/MAX/MIN, small and
 * large), broadcast, the synchronized-BatchNorm hook ordered before a compute
 * kernel that reads its result, the gradient-bucket entry points, event timing,
 * and rank invariance: a RealNVP step on the GPUs with the global batch split
 * over the ranks (synchronized BatchNorm over NCCL, gradients averaged over
 * NCCL) equals the same step on the CPU backend over the whole batch in one
 * process — loss, every gradient, the parameters and running statistics after
 * one Adam step — and every rank ends with the same gradients bit for bit.
 *
 * Without a GPU on every rank all tests are skipped (on every rank alike) and
 * the reason is printed to stdout, e.g.
 *   "mpi_test_nccl: skipped: no CUDA device visible: <cudaGetErrorString> ..."
 *   "mpi_test_nccl: skipped: built without CUDA"
 *   "mpi_test_nccl: skipped: ranks 0 and 1 on host h both drive GPU ...". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/arena.h"
#include "flowdp/backend.h"
#include "flowdp/comm.h"
#include "flowdp/cuda.h"
#include "flowdp/nccl.h"
#include "flowdp/nn.h"
#include "flowdp/optim.h"
#include "flowdp/realnvp.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
/* the CUDA driver maps device memory where ASan keeps its shadow gap; and what the
 * driver and NVIDIA's libraries keep until exit is theirs, not a flowdp leak */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0"; }
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libcuda.so\nleak:libcudart.so\nleak:libcudnn\nleak:libcublas\nleak:libnccl.so\n";
}
#endif

static fdp_comm *C;
static fdp_backend *GPU, *CPU;
static fdp_nccl *NC;
static char g_skip_reason[1200];
/* FLOWDP_NCCL_SELFTEST=1 without GPUs: the rank-invariance harness runs with the
 * CPU backend and MPI collectives in place of the GPUs and NCCL (no CUDA code
 * runs; it checks the test's own arithmetic of splitting the batch) */
static int g_selftest;

#define NEED_NCCL()                                                          \
    do {                                                                     \
        if (!NC) {                                                           \
            printf("mpi_test_nccl: skipped: %s\n", g_skip_reason);           \
            skip();                                                          \
        }                                                                    \
    } while (0)

static float *to_gpu(const float *h, int64_t n) {
    float *d = GPU->alloc(GPU, sizeof(float) * (size_t)(n ? n : 1));
    GPU->from_host(GPU, d, h, sizeof(float) * (size_t)n);
    return d;
}

/* ---- all-reduce ---------------------------------------------------------------------------- */
static void test_allreduce(void **state) {
    (void)state;
    NEED_NCCL();
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    const int64_t sizes[] = {1, 37, 5 << 20};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int64_t n = sizes[si];
        float *h = malloc(sizeof(float) * (size_t)n), *back = malloc(sizeof(float) * (size_t)n);
        double *hd = malloc(sizeof(double) * (size_t)n), *backd = malloc(sizeof(double) * (size_t)n);
        float *d = GPU->alloc(GPU, sizeof(float) * (size_t)n);
        double *dd = GPU->alloc(GPU, sizeof(double) * (size_t)n);
        for (fdp_reduce_op op = FDP_REDUCE_SUM; op <= FDP_REDUCE_MIN; op++) {
            for (int64_t i = 0; i < n; i++) {
                h[i] = (float)(R + 1) + 0.25f * (float)(i % 64);
                hd[i] = (double)(R + 1) * 1e-3 + (double)(i % 1000);
            }
            GPU->from_host(GPU, d, h, sizeof(float) * (size_t)n);
            GPU->from_host(GPU, dd, hd, sizeof(double) * (size_t)n);
            fdp_nccl_allreduce_f32(NC, d, n, op);
            fdp_nccl_allreduce_f64(NC, dd, n, op);
            fdp_nccl_join(NC);
            GPU->to_host(GPU, back, d, sizeof(float) * (size_t)n);
            GPU->to_host(GPU, backd, dd, sizeof(double) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                double sum = 0, sumd = 0, mx = -INFINITY, mn = INFINITY, mxd = -INFINITY, mnd = INFINITY;
                for (int r = 0; r < S; r++) {
                    double v = (double)(r + 1) + 0.25 * (double)(i % 64), vd = (double)(r + 1) * 1e-3 + (double)(i % 1000);
                    sum += v, sumd += vd;
                    mx = fmax(mx, v), mn = fmin(mn, v), mxd = fmax(mxd, vd), mnd = fmin(mnd, vd);
                }
                double want = op == FDP_REDUCE_SUM ? sum : op == FDP_REDUCE_AVG ? sum / S : op == FDP_REDUCE_MAX ? mx : mn;
                double wantd = op == FDP_REDUCE_SUM ? sumd : op == FDP_REDUCE_AVG ? sumd / S : op == FDP_REDUCE_MAX ? mxd : mnd;
                if (!(fabs(back[i] - want) <= 1e-6 * fabs(want)))
                    fail_msg("all-reduce f32 op %d n %lld [%lld]: %.9g, expected %.9g", (int)op, (long long)n,
                             (long long)i, (double)back[i], want);
                if (!(fabs(backd[i] - wantd) <= 1e-14 * fabs(wantd)))
                    fail_msg("all-reduce f64 op %d n %lld [%lld]: %.17g, expected %.17g", (int)op, (long long)n,
                             (long long)i, backd[i], wantd);
            }
        }
        GPU->free(GPU, d);
        GPU->free(GPU, dd);
        free(h); free(back); free(hd); free(backd);
    }
    (void)fdp_nccl_query(NC);
    fdp_nccl_synchronize(NC);
    assert_int_equal(fdp_nccl_query(NC), 1);
}

static void test_broadcast(void **state) {
    (void)state;
    NEED_NCCL();
    enum { N = 1000 };
    unsigned char h[N], want[N];
    for (int i = 0; i < N; i++) {
        h[i] = (unsigned char)(fdp_comm_rank(C) * 31 + i);
        want[i] = (unsigned char)(0 * 31 + i);
    }
    unsigned char *d = GPU->alloc(GPU, N);
    GPU->from_host(GPU, d, h, N);
    fdp_nccl_broadcast(NC, d, N, 0);
    GPU->to_host(GPU, h, d, N);
    assert_memory_equal(h, want, N);
    GPU->free(GPU, d);
}

/* the hook: SUM in place, and a compute kernel issued after it sees the result */
static void test_bn_hook(void **state) {
    (void)state;
    NEED_NCCL();
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    enum { K = 24 };
    double h[K];
    for (int i = 0; i < K; i++) h[i] = (double)(R + 1) * (i + 0.5);
    double *d = GPU->alloc(GPU, sizeof h);
    float *f = GPU->alloc(GPU, sizeof(float) * K);
    GPU->from_host(GPU, d, h, sizeof h);
    fdp_nccl_allreduce_f64_sum_hook(NC, d, K);
    fdp_f64_to_f32_args a = {d, f, 2.0};
    GPU->f64_to_f32(GPU, K, &a); /* on the compute stream: must run after the all-reduce */
    float back[K];
    GPU->to_host(GPU, back, f, sizeof back);
    for (int i = 0; i < K; i++) {
        double want = 0;
        for (int r = 0; r < S; r++) want += (double)(r + 1) * (i + 0.5);
        assert_true(back[i] == (float)(2.0 * want));
    }
    fdp_nccl_allreduce_f64_sum_hook(NULL, d, K); /* no communicator: no-op */
    GPU->free(GPU, d);
    GPU->free(GPU, f);
}

/* buckets: segments started in reverse order, then finish with the 1/size scale */
static void test_bucket_api(void **state) {
    (void)state;
    NEED_NCCL();
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    enum { N = 100003 };
    float *h = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) h[i] = (float)((R + 1) * (i % 97));
    float *g = to_gpu(h, N);
    fdp_nccl_set_timing(NC, 1);
    const int64_t cut[] = {0, 1000, 50000, N};
    /* the last bucket alone (ready first), the other two together as wait_all would */
    fdp_nccl_bucket_start(NC, g + cut[2], cut[3] - cut[2]);
    (void)fdp_nccl_query(NC);
    fdp_nccl_group_begin(NC);
    for (int k = 1; k >= 0; k--) fdp_nccl_bucket_start(NC, g + cut[k], cut[k + 1] - cut[k]);
    fdp_nccl_group_end(NC);
    fdp_nccl_bucket_finish(NC, g, N, 1.0f / (float)S);
    GPU->to_host(GPU, h, g, sizeof(float) * N);
    double rs = 0;
    for (int r = 0; r < S; r++) rs += r + 1;
    for (int i = 0; i < N; i++) {
        float want = (float)(rs * (i % 97)) * (1.0f / (float)S);
        if (h[i] != want) fail_msg("bucketed mean [%d]: %.9g, expected %.9g", i, (double)h[i], (double)want);
    }
    int count = 0;
    double ms = fdp_nccl_take_busy_ms(NC, &count);
    fdp_nccl_set_timing(NC, 0);
    printf("  buckets: 3 all-reduces (1 + a group of 2) took %.3f ms on the comm stream (%d timed)\n", ms, count);
    assert_int_equal(count, S > 1 ? 2 : 0);
    GPU->free(GPU, g);
    free(h);
}

/* ---- rank invariance: N ranks x B/N on GPUs == 1 process x B on the CPU ------------------------- */
static void test_rank_invariance(void **state) {
    (void)state;
    if (!g_selftest) NEED_NCCL();
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    const int Ch = 1, H = 8, W = 8, SC = 2, MID = 8, NB = 1, B = 8;
    if (B % S != 0) {
        printf("mpi_test_nccl: rank invariance skipped: global batch %d does not split over %d ranks\n", B, S);
        skip();
    }
    const int b = B / S;
    const int64_t D = (int64_t)Ch * H * W;
    float *hx = malloc(sizeof(float) * (size_t)(B * D)), *hu = malloc(sizeof(float) * (size_t)(B * D));
    tu_fill_uniform(hu, B * D, 77, 0.0f, 1.0f);
    tu_fill_uniform(hx, B * D, 78, 0.0f, 1.0f);
    for (int64_t i = 0; i < B * D; i++) hx[i] = floorf(hx[i] * 255.999f) / 255.0f;
    fdp_err err = {{0}};

    /* reference: the CPU backend, the whole batch, one process */
    fdp_realnvp mc;
    assert_int_equal(fdp_realnvp_build(&mc, Ch, H, W, SC, MID, NB, &err), 0);
    fdp_realnvp_alloc_init(&mc, CPU, 5);
    fdp_arena *ac = fdp_arena_create(16 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx cc = {.be = CPU, .arena = ac, .params = &mc.params, .training = 1, .world_size = 1};
    double nll_ref = fdp_realnvp_forward_loss(&mc, &cc, fdp_tensor_wrap(hx, B, Ch, H, W, FDP_DEVICE_CPU),
                                              fdp_tensor_wrap(hu, B, Ch, H, W, FDP_DEVICE_CPU), NULL);
    CPU->memset0(CPU, mc.params.grads, sizeof(float) * (size_t)mc.params.n_params);
    fdp_realnvp_backward(&mc, &cc, 1.0f);
    double gn_ref = fdp_grad_global_norm(&mc.params);

    /* the GPUs: this rank's slice, synchronized BatchNorm and gradients over NCCL */
    fdp_realnvp mg;
    assert_int_equal(fdp_realnvp_build(&mg, Ch, H, W, SC, MID, NB, &err), 0);
    fdp_realnvp_alloc_init(&mg, GPU, 5);
    fdp_params *p = &mg.params;
    fdp_arena *ag = fdp_arena_create(16 << 20, GPU->arena_alloc, GPU->arena_free, GPU, GPU->dev);
    fdp_ctx gc = {.be = GPU, .arena = ag, .params = p, .training = 1, .allreduce_f64 = fdp_nccl_allreduce_f64_sum_hook,
                  .comm = NC, .world_size = S};
    if (g_selftest) {
        gc.allreduce_f64 = fdp_comm_allreduce_f64_sum_hook;
        gc.comm = C;
    }
    float *x = to_gpu(hx + (int64_t)R * b * D, b * D), *u = to_gpu(hu + (int64_t)R * b * D, b * D);
    double nll = fdp_realnvp_forward_loss(&mg, &gc, fdp_tensor_wrap(x, b, Ch, H, W, GPU->dev),
                                          fdp_tensor_wrap(u, b, Ch, H, W, GPU->dev), NULL);
    GPU->memset0(GPU, p->grads, sizeof(float) * (size_t)p->n_params);
    fdp_realnvp_backward(&mg, &gc, 1.0f);
    /* two buckets, the later half first (backward order) */
    int64_t half = p->n_params / 2;
    if (g_selftest) {
        fdp_comm_allreduce_f32(C, p->grads, p->n_params, FDP_REDUCE_SUM);
        for (int64_t i = 0; i < p->n_params; i++) p->grads[i] *= 1.0f / (float)S;
    } else {
        fdp_nccl_bucket_start(NC, p->grads + half, p->n_params - half);
        fdp_nccl_bucket_start(NC, p->grads, half);
        fdp_nccl_bucket_finish(NC, p->grads, p->n_params, 1.0f / (float)S);
    }
    fdp_comm_allreduce_f64(C, &nll, 1, FDP_REDUCE_AVG);
    double gn = fdp_grad_global_norm(p);

    float *g = malloc(sizeof(float) * (size_t)p->n_params);
    GPU->to_host(GPU, g, p->grads, sizeof(float) * (size_t)p->n_params);
    double eg = tu_normwise_err(g, mc.params.grads, p->n_params, 1e-6);
    int bad_rank = -1;
    int same = fdp_comm_check_same_u64(C, fdp_checksum_f32(g, p->n_params), &bad_rank);

    /* one clipped Adam step on both */
    fdp_adam oc, og;
    fdp_adam_init(&oc, &mc.params, 0.9f, 0.999f, 1e-8f, 0.0f);
    fdp_adam_init(&og, p, 0.9f, 0.999f, 1e-8f, 0.0f);
    fdp_adam_step(&oc, &mc.params, 1e-3f, fdp_clip_factor(gn_ref, 1.0));
    fdp_adam_step(&og, p, 1e-3f, fdp_clip_factor(gn, 1.0));
    float *pp = malloc(sizeof(float) * (size_t)p->n_params), *pb = malloc(sizeof(float) * (size_t)p->n_buffers);
    GPU->to_host(GPU, pp, p->params, sizeof(float) * (size_t)p->n_params);
    GPU->to_host(GPU, pb, p->buffers, sizeof(float) * (size_t)p->n_buffers);
    double ep = tu_max_abs_diff(pp, mc.params.params, p->n_params);
    double eb = tu_normwise_err(pb, mc.params.buffers, p->n_buffers, 1.0);
    printf("  rank invariance (%d x %d on GPUs vs 1 x %d on the CPU): nll %.2e grad_norm %.2e grads %.2e "
           "params after Adam %.2e running stats %.2e; ranks agree: %s\n",
           S, b, B, fabs(nll - nll_ref) / fabs(nll_ref), fabs(gn - gn_ref) / gn_ref, eg, ep, eb, same ? "yes" : "NO");
    assert_true(same);
    assert_true(fabs(nll - nll_ref) <= 1e-5 * fabs(nll_ref));
    assert_true(fabs(gn - gn_ref) <= 1e-4 * gn_ref);
    assert_true(eg < 1e-3);
    assert_true(ep <= 2e-3);
    assert_true(eb < 1e-5);

    fdp_adam_free(&oc);
    fdp_adam_free(&og);
    GPU->free(GPU, x);
    GPU->free(GPU, u);
    fdp_arena_destroy(ag);
    fdp_arena_destroy(ac);
    fdp_realnvp_free(&mg);
    fdp_realnvp_free(&mc);
    free(hx); free(hu); free(g); free(pp); free(pb);
}

int main(int argc, char **argv) {
    fdp_err err = {{0}};
    if (fdp_comm_init(&argc, &argv, &C, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    fdp_comm_watchdog_start(C, 120.0);
    fdp_comm_set_phase(C, "mpi_test_nccl");
    CPU = fdp_backend_cpu_create(1);
    /* built without CUDA this says so ("built without CUDA ..."); else it names the CUDA error */
    GPU = fdp_backend_cuda_create(-1, &err);
    int have = GPU != NULL;
    if (!have) snprintf(g_skip_reason, sizeof g_skip_reason, "%.1000s", err.msg);
    /* every rank skips alike: a rank with a GPU must not wait for one without */
    if (fdp_comm_any(C, !have)) {
        if (have) snprintf(g_skip_reason, sizeof g_skip_reason, "another rank has no usable CUDA device");
    } else if (fdp_nccl_create(C, GPU, &NC, &err) != 0) {
        snprintf(g_skip_reason, sizeof g_skip_reason, "%.1000s", err.msg);
        NC = NULL;
    }
    const char *self = getenv("FLOWDP_NCCL_SELFTEST");
    if (!NC && self && *self && strcmp(self, "0") != 0) {
        g_selftest = 1;
        fdp_backend_destroy(GPU);
        GPU = fdp_backend_cpu_create(1);
        printf("mpi_test_nccl: FLOWDP_NCCL_SELFTEST: rank invariance with the CPU backend and MPI, the harness only\n");
    }
    if (NC) fdp_nccl_watchdog_start(NC, 120.0);
    else printf("mpi_test_nccl: skipped: %s\n", g_skip_reason);
    fflush(stdout);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allreduce),  cmocka_unit_test(test_broadcast),       cmocka_unit_test(test_bn_hook),
        cmocka_unit_test(test_bucket_api), cmocka_unit_test(test_rank_invariance),
    };
    char group[64];
    snprintf(group, sizeof group, "mpi_test_nccl[rank %d/%d]", fdp_comm_rank(C), fdp_comm_size(C));
    int failed = _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], NULL, NULL);
    int any_failed = fdp_comm_any(C, failed != 0);
    fdp_nccl_destroy(NC);
    fdp_backend_destroy(GPU);
    fdp_backend_destroy(CPU);
    fdp_comm_finalize(C);
    return any_failed ? 1 : 0;
}
