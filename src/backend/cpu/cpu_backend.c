/* cpu_backend.c — the CPU backend: host memory, the shared element-wise
 * functions of src/kernels looped with OpenMP, reductions in double, and
 * convolutions / matrix products through oneDNN (cpu_conv_onednn.c). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_conv.h"
#include "flowdp/backend.h"
#include "flowdp/error.h"

/* below this many elements a loop runs on one thread (fork/join costs more) */
#define CPU_PARALLEL_MIN 16384

static void *cpu_alloc(fdp_backend *be, size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0 || !p)
        FDP_FATAL("cpu backend: out of memory allocating %zu MiB; hint: reduce the batch size", bytes >> 20);
    return p;
}
static void cpu_free(fdp_backend *be, void *p) { free(p); }
static void cpu_memset0(fdp_backend *be, void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(fdp_backend *be, void *dst, const void *src, size_t bytes) {
    if (dst != src) memmove(dst, src, bytes);
}
static void cpu_sync(fdp_backend *be) {}

/* ---- element-wise: one loop per op from the shared list ---------------------- */
#define CPU_ELEMENTWISE(name)                                                      \
    static void cpu_##name(fdp_backend *be, int64_t n, const fdp_##name##_args *a) { \
        if (n < CPU_PARALLEL_MIN || be->num_threads == 1) {                        \
            for (int64_t i = 0; i < n; i++) fdp_k_##name(i, a);                    \
        } else {                                                                   \
            _Pragma("omp parallel for schedule(static)")                           \
            for (int64_t i = 0; i < n; i++) fdp_k_##name(i, a);                    \
        }                                                                          \
    }
FDP_ELEMENTWISE_OPS(CPU_ELEMENTWISE)

/* Per-channel ops, looped by (n, c) rows: the same per-element body (fdp_k_NAME_at)
 * with the channel's values hoisted and the inner loop vectorizable. The args are
 * copied to a local so that stores through the tensors cannot alias them. */
#define CPU_CHANNEL_OP(name)                                                                  \
    static void cpu_rows_##name(fdp_backend *be, int64_t n, const fdp_##name##_args *a) {     \
        int64_t rows = n / a->HW, HW = a->HW;                                                 \
        int C = a->C;                                                                         \
        _Pragma("omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN && be->num_threads > 1)") \
        for (int64_t r = 0; r < rows; r++) {                                                  \
            const fdp_##name##_args la = *a; /* private (see BN_GRAD_APPLY_MODE) */           \
            int64_t nn = r / C, base = r * HW;                                                \
            int c = (int)(r % C);                                                             \
            for (int64_t hw = 0; hw < HW; hw++) fdp_k_##name##_at(base + hw, nn, c, hw, &la); \
        }                                                                                     \
    }
CPU_CHANNEL_OP(bn_act)

/* The local copy of the args is made INSIDE the parallel loop: one made before it
 * would be shared with the outlined OpenMP body, which then reloads its fields
 * (the mode included) on every element and cannot vectorize. */
#define BN_GRAD_APPLY_MODE(MODE, ACC)                                                          \
    static void bn_grad_apply_##MODE##_##ACC(fdp_backend *be, int64_t n, const fdp_bn_grad_apply_args *a) { \
        int64_t rows = n / a->HW, HW = a->HW;                                                  \
        int C = a->C;                                                                          \
        _Pragma("omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN && be->num_threads > 1)") \
        for (int64_t r = 0; r < rows; r++) {                                                   \
            fdp_bn_grad_apply_args la = *a;                                                    \
            la.grad.mode = MODE;                                                               \
            la.accumulate = ACC;                                                               \
            int64_t nn = r / C, base = r * HW;                                                 \
            int c = (int)(r % C);                                                              \
            for (int64_t hw = 0; hw < HW; hw++) fdp_k_bn_grad_apply_at(base + hw, nn, c, hw, &la); \
        }                                                                                      \
    }
BN_GRAD_APPLY_MODE(0, 0)
BN_GRAD_APPLY_MODE(0, 1)
BN_GRAD_APPLY_MODE(1, 0)
BN_GRAD_APPLY_MODE(1, 1)
BN_GRAD_APPLY_MODE(2, 0)
BN_GRAD_APPLY_MODE(2, 1)

static void cpu_rows_bn_grad_apply(fdp_backend *be, int64_t n, const fdp_bn_grad_apply_args *a) {
    static void (*const fns[3][2])(fdp_backend *, int64_t, const fdp_bn_grad_apply_args *) = {
        {bn_grad_apply_0_0, bn_grad_apply_0_1}, {bn_grad_apply_1_0, bn_grad_apply_1_1}, {bn_grad_apply_2_0, bn_grad_apply_2_1}};
    fns[a->grad.mode][a->accumulate != 0](be, n, a);
}

/* ---- reductions -------------------------------------------------------------- */
static void cpu_reduce_rows(fdp_backend *be, const float *a, const float *b, int outer, int C, int64_t inner,
                            double *out) {
    int64_t total = (int64_t)outer * C * inner;
    int par = total >= CPU_PARALLEL_MIN && be->num_threads > 1;
    if (C >= be->num_threads || !par) {
#pragma omp parallel for schedule(static) if (par)
        for (int c = 0; c < C; c++) {
            double acc = 0.0;
            for (int o = 0; o < outer; o++) {
                const float *pa = a + ((int64_t)o * C + c) * inner;
                if (b) {
                    const float *pb = b + ((int64_t)o * C + c) * inner;
                    for (int64_t i = 0; i < inner; i++) acc += (double)pa[i] * pb[i];
                } else {
                    for (int64_t i = 0; i < inner; i++) acc += pa[i];
                }
            }
            out[c] = acc;
        }
    } else {
        /* few rows: split each row's inner range over the threads */
        for (int c = 0; c < C; c++) {
            double acc = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : acc) collapse(2)
            for (int o = 0; o < outer; o++)
                for (int64_t i = 0; i < inner; i++) {
                    int64_t j = ((int64_t)o * C + c) * inner + i;
                    acc += b ? (double)a[j] * b[j] : (double)a[j];
                }
            out[c] = acc;
        }
    }
}

/* Deterministic double accumulation in FDP_LANES independent partial sums (lane j
 * takes the elements i with i % FDP_LANES == j, then the lanes are added in order):
 * the same result on every run and thread count, and no serial dependency chain, so
 * the loops vectorize. */
#define FDP_LANES 8

static void cpu_channel_moments(fdp_backend *be, const float *x, int outer, int C, int64_t inner, double *sum,
                                double *sumsq) {
    int par = (int64_t)outer * C * inner >= CPU_PARALLEL_MIN && be->num_threads > 1;
#pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < C; c++) {
        double s[FDP_LANES] = {0}, q[FDP_LANES] = {0};
        for (int o = 0; o < outer; o++) {
            const float *p = x + ((int64_t)o * C + c) * inner;
            int64_t i = 0;
            for (; i + FDP_LANES <= inner; i += FDP_LANES)
                for (int j = 0; j < FDP_LANES; j++) {
                    double v = p[i + j];
                    s[j] += v;
                    q[j] += v * v;
                }
            for (; i < inner; i++) {
                double v = p[i];
                s[i % FDP_LANES] += v;
                q[i % FDP_LANES] += v * v;
            }
        }
        double ts = 0.0, tq = 0.0;
        for (int j = 0; j < FDP_LANES; j++) {
            ts += s[j];
            tq += q[j];
        }
        sum[c] = ts;
        sumsq[c] = tq;
    }
}

/* One copy of the loop per activation mode (the mode a compile-time constant, so the
 * per-element body has no branches left and vectorizes). */
#define BN_BACKWARD_REDUCE_MODE(MODE)                                                          \
    static void bn_backward_reduce_mode##MODE(const fdp_bn_act_grad_args *g, const float *x, int outer, \
                                              double *sum_g, double *sum_gx, int par) {         \
        int C = g->C;                                                                          \
        int64_t inner = g->HW;                                                                 \
        _Pragma("omp parallel for schedule(static) if (par)")                                  \
        for (int c = 0; c < C; c++) {                                                          \
            fdp_bn_act_grad_args lg = *g; /* private (see BN_GRAD_APPLY_MODE) */               \
            lg.mode = MODE;                                                                    \
            const float *xp = x;                                                               \
            double s[FDP_LANES] = {0}, q[FDP_LANES] = {0};                                     \
            for (int o = 0; o < outer; o++) {                                                  \
                int64_t base = ((int64_t)o * C + c) * inner;                                   \
                int64_t i = 0;                                                                 \
                for (; i + FDP_LANES <= inner; i += FDP_LANES)                                 \
                    for (int j = 0; j < FDP_LANES; j++) {                                      \
                        double v = fdp_bn_act_grad_at(base + i + j, o, c, i + j, &lg);         \
                        s[j] += v;                                                             \
                        q[j] += v * xp[base + i + j];                                           \
                    }                                                                          \
                for (; i < inner; i++) {                                                       \
                    double v = fdp_bn_act_grad_at(base + i, o, c, i, &lg);                     \
                    s[i % FDP_LANES] += v;                                                     \
                    q[i % FDP_LANES] += v * xp[base + i];                                       \
                }                                                                              \
            }                                                                                  \
            double ts = 0.0, tq = 0.0;                                                         \
            for (int j = 0; j < FDP_LANES; j++) {                                              \
                ts += s[j];                                                                    \
                tq += q[j];                                                                    \
            }                                                                                  \
            sum_g[c] = ts;                                                                     \
            sum_gx[c] = tq;                                                                    \
        }                                                                                      \
    }
BN_BACKWARD_REDUCE_MODE(0)
BN_BACKWARD_REDUCE_MODE(1)
BN_BACKWARD_REDUCE_MODE(2)

static void cpu_bn_backward_reduce(fdp_backend *be, const fdp_bn_act_grad_args *g, const float *x, int outer,
                                   double *sum_g, double *sum_gx) {
    int par = (int64_t)outer * g->C * g->HW >= CPU_PARALLEL_MIN && be->num_threads > 1;
    if (g->mode == 0) bn_backward_reduce_mode0(g, x, outer, sum_g, sum_gx, par);
    else if (g->mode == 1) bn_backward_reduce_mode1(g, x, outer, sum_g, sum_gx, par);
    else bn_backward_reduce_mode2(g, x, outer, sum_g, sum_gx, par);
}

static double cpu_sum_squares(fdp_backend *be, const float *x, int64_t n) {
    double acc = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
    return acc;
}

static int cpu_has_nonfinite(fdp_backend *be, const float *x, int64_t n) {
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
    return bad;
}

/* ---- convolution / matmul: oneDNN ------------------------------------------- */
static void cpu_conv_forward(fdp_backend *be, fdp_conv_shape s, const float *x, const float *w, const float *bias,
                             float *y, int accumulate) {
    fdp_cpu_conv_forward(be->impl, s, x, w, bias, y, accumulate);
}
static void cpu_conv_backward_data(fdp_backend *be, fdp_conv_shape s, const float *dy, const float *w, float *dx,
                                   int accumulate) {
    fdp_cpu_conv_backward_data(be->impl, s, dy, w, dx, accumulate);
}
static void cpu_conv_backward_weights(fdp_backend *be, fdp_conv_shape s, const float *x, const float *dy, float *dw,
                                      float *dbias) {
    fdp_cpu_conv_backward_weights(be->impl, s, x, dy, dw, dbias);
}
static void cpu_matmul(fdp_backend *be, int transa, int transb, int M, int N, int K, float alpha, const float *A,
                       const float *B, float beta, float *C) {
    fdp_cpu_matmul(be->impl, transa, transb, M, N, K, alpha, A, B, beta, C);
}

static void cpu_destroy(fdp_backend *be) {
    if (!be) return;
    fdp_cpu_conv_destroy(be->impl);
    free(be);
}

fdp_backend *fdp_backend_cpu_create(int threads) {
    fdp_backend *be = fdp_xcalloc(1, sizeof *be);
    if (threads <= 0) threads = omp_get_max_threads(); /* OMP_NUM_THREADS, else all cores */
    omp_set_num_threads(threads);
    be->name = "cpu";
    be->dev = FDP_DEVICE_CPU;
    be->num_threads = threads;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->memset0 = cpu_memset0;
    be->copy = cpu_copy;
    be->to_host = cpu_copy;
    be->from_host = cpu_copy;
    be->synchronize = cpu_sync;
    be->conv_forward = cpu_conv_forward;
    be->conv_backward_data = cpu_conv_backward_data;
    be->conv_backward_weights = cpu_conv_backward_weights;
    be->matmul = cpu_matmul;
    be->reduce_rows = cpu_reduce_rows;
    be->channel_moments = cpu_channel_moments;
    be->bn_backward_reduce = cpu_bn_backward_reduce;
    be->sum_squares = cpu_sum_squares;
    be->has_nonfinite = cpu_has_nonfinite;
#define CPU_ASSIGN(name) be->name = cpu_##name;
    FDP_ELEMENTWISE_OPS(CPU_ASSIGN)
#undef CPU_ASSIGN
    be->bn_act = cpu_rows_bn_act;
    be->bn_grad_apply = cpu_rows_bn_grad_apply;
    be->destroy = cpu_destroy;
    be->impl = fdp_cpu_conv_create();
    return be;
}
