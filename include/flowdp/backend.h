/* backend.h — the compute backend interface (one small interface, several
 * implementations: cpu/ always, cuda/ when built with the CUDA toolkit).
 *
 * All pointers passed to a backend function point to memory of that backend
 * (host memory for cpu, device memory for cuda), including the double outputs
 * of reductions. Convolutions are stride 1 with "same" padding (k odd, pad k/2),
 * NCHW data and OIHW weights. The element-wise operations are generated from
 * the list in src/kernels/elementwise.h: each is one static inline per-element
 * function there, which the CPU backend loops over with OpenMP and the CUDA
 * backend wraps in a grid-stride kernel.
 *
 * Optional members (pinned upload, the arena allocator, memory statistics) are
 * NULL when a backend does not have them (the CPU backend has none of them); the
 * fdp_backend_* helpers at the end call them where present and otherwise do what
 * the CPU backend does (host memory, a memmove, no statistics), so callers need
 * neither an #ifdef nor a test of the device. */
#ifndef FLOWDP_BACKEND_H
#define FLOWDP_BACKEND_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"
#include "flowdp/tensor.h"
#include "kernels/elementwise.h"

typedef struct fdp_conv_shape {
    int n;    /* batch */
    int cin;  /* input channels */
    int cout; /* output channels */
    int h, w; /* spatial size (same in and out) */
    int k;    /* kernel size, odd; padding k/2, stride 1 */
} fdp_conv_shape;

typedef struct fdp_backend fdp_backend;

/* device memory statistics (the optional member memory_stats; flowdp-bench) */
typedef struct fdp_backend_mem_stats {
    size_t backend_bytes;       /* live be->alloc bytes now */
    size_t backend_peak;        /* most live be->alloc bytes since creation / the last reset */
    size_t pool_used_high;      /* cudaMallocAsync pool high-water mark of used bytes (0: cudaMalloc mode) */
    size_t pool_reserved_high;  /* its high-water mark of reserved bytes */
    size_t scratch_bytes;       /* cuDNN workspace + reduction scratch + staging slots held */
    size_t device_free, device_total; /* cudaMemGetInfo now (all processes, cuDNN/cuBLAS/NCCL included) */
    int async_pool;             /* 1: memory comes from cudaMallocAsync's pool */
} fdp_backend_mem_stats;

#define FDP_BACKEND_OP_MEMBER(name) void (*name)(fdp_backend * be, int64_t n, const fdp_##name##_args *a);

struct fdp_backend {
    const char *name;  /* "cpu" or "cuda" */
    fdp_device dev;
    int num_threads;   /* cpu: OpenMP threads (also oneDNN's) */
    void *impl;        /* backend-private state (conv primitive cache, streams, ...) */

    /* memory */
    void *(*alloc)(fdp_backend *be, size_t bytes); /* 64-byte aligned; fatal on failure */
    void (*free)(fdp_backend *be, void *p);
    void (*memset0)(fdp_backend *be, void *p, size_t bytes);
    void (*copy)(fdp_backend *be, void *dst, const void *src, size_t bytes); /* within the backend */
    void (*to_host)(fdp_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*from_host)(fdp_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*synchronize)(fdp_backend *be);

    /* convolution: y (n,cout,h,w) = conv(x (n,cin,h,w), w (cout,cin,k,k)) + bias (cout) [+ y if accumulate] */
    void (*conv_forward)(fdp_backend *be, fdp_conv_shape s, const float *x, const float *w, const float *bias,
                         float *y, int accumulate);
    /* dx (n,cin,h,w) = conv_backward_data(dy, w) [+ dx if accumulate] */
    void (*conv_backward_data)(fdp_backend *be, fdp_conv_shape s, const float *dy, const float *w, float *dx,
                               int accumulate);
    /* dw (cout,cin,k,k) = d/dw, dbias (cout) = sum of dy (skipped when NULL); both overwritten */
    void (*conv_backward_weights)(fdp_backend *be, fdp_conv_shape s, const float *x, const float *dy, float *dw,
                                  float *dbias);

    /* C (M,N) = alpha * op(A) op(B) + beta * C, row-major; op = transpose when trans != 0 */
    void (*matmul)(fdp_backend *be, int transa, int transb, int M, int N, int K, float alpha, const float *A,
                   const float *B, float beta, float *C);

    /* out[c] = sum over o < outer, i < inner of a[(o*C + c)*inner + i] * (b ? b[same] : 1), in double.
     * Per channel of an NCHW tensor: outer = n, C = c, inner = h*w.
     * Per sample:                    outer = 1, C = n, inner = c*h*w. */
    void (*reduce_rows)(fdp_backend *be, const float *a, const float *b, int outer, int C, int64_t inner,
                        double *out);
    /* per channel of x (outer, C, inner): sum[c] = sum x, sumsq[c] = sum x^2, in double, one pass */
    void (*channel_moments)(fdp_backend *be, const float *x, int outer, int C, int64_t inner, double *sum,
                            double *sumsq);
    /* BatchNorm backward sums in one pass, g recomputed per element from (dy, y) by
     * fdp_bn_act_grad_value: sum_g[c] = sum g, sum_gx[c] = sum g*x; x is (outer = N, C, inner = HW) */
    void (*bn_backward_reduce)(fdp_backend *be, const fdp_bn_act_grad_args *g, const float *x, int outer,
                               double *sum_g, double *sum_gx);
    /* sum of squares of x[0..n), in double, returned to the host */
    double (*sum_squares)(fdp_backend *be, const float *x, int64_t n);
    /* 1 if any x[i] is NaN or Inf */
    int (*has_nonfinite)(fdp_backend *be, const float *x, int64_t n);

    /* element-wise operations, one member per entry of FDP_ELEMENTWISE_OPS */
    FDP_ELEMENTWISE_OPS(FDP_BACKEND_OP_MEMBER)

    /* ---- optional members: NULL when the backend does not have them ------------------------
     * Pinned staging and asynchronous upload (CUDA: cudaHostAlloc'ed host memory, copies
     * enqueued on the compute stream; see flowdp/cuda.h for the double-buffered pattern).
     * May be called from a loader thread as long as calls on one backend do not overlap. */
    void *(*pinned_alloc)(fdp_backend *be, size_t bytes); /* fatal on failure */
    void (*pinned_free)(fdp_backend *be, void *p);
    /* dst (backend memory) <- pinned src, returns at once with a ticket; src must stay
     * untouched until upload_wait(be, ticket) */
    uint64_t (*upload_async)(fdp_backend *be, void *dst, const void *pinned_src, size_t bytes);
    /* the host waits until the upload with this ticket has read its source (0: no-op) */
    void (*upload_wait)(fdp_backend *be, uint64_t ticket);
    /* the arena's allocator (arena.h's fdp_alloc_fn / fdp_free_fn, ctx = the backend):
     *   fdp_arena_create(bytes, be->arena_alloc, be->arena_free, be, be->dev)
     * puts the activations in the backend's memory; NULL (CPU): the arena's own
     * 64-byte aligned host memory, which is what the CPU backend's alloc gives */
    void *(*arena_alloc)(void *be, size_t bytes);
    void (*arena_free)(void *be, void *p);
    /* memory statistics: fills s and returns 0 */
    int (*memory_stats)(fdp_backend *be, fdp_backend_mem_stats *s);
    /* restart the high-water marks (backend_peak and the pool's) */
    void (*reset_peak)(fdp_backend *be);

    void (*destroy)(fdp_backend *be);
};

/* Create a backend by name ("cpu" or "cuda"). threads <= 0: all cores.
 * Returns NULL and fills err when the name is unknown or the device missing. */
struct fdp_err;
fdp_backend *fdp_backend_create(const char *name, int threads, struct fdp_err *err);
void fdp_backend_destroy(fdp_backend *be);
fdp_backend *fdp_backend_cpu_create(int threads);

/* ---- the optional members with the CPU backend's behaviour as the default -------------------- */
/* pinned staging: be->pinned_alloc, else 64-byte aligned host memory; fatal on failure */
static inline void *fdp_backend_pinned_alloc(fdp_backend *be, size_t bytes) {
    if (be && be->pinned_alloc) return be->pinned_alloc(be, bytes);
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0 || !p)
        FDP_FATAL("out of host memory allocating %zu MiB of staging; hint: reduce the batch size", bytes >> 20);
    return p;
}
static inline void fdp_backend_pinned_free(fdp_backend *be, void *p) {
    if (!p) return;
    if (be && be->pinned_free)
        be->pinned_free(be, p);
    else
        free(p);
}
/* be->upload_async, else a copy at once (ticket 0) */
static inline uint64_t fdp_backend_upload_async(fdp_backend *be, void *dst, const void *pinned_src, size_t bytes) {
    if (be->upload_async) return be->upload_async(be, dst, pinned_src, bytes);
    if (bytes && dst != pinned_src) memmove(dst, pinned_src, bytes);
    return 0;
}
static inline void fdp_backend_upload_wait(fdp_backend *be, uint64_t ticket) {
    if (be->upload_wait) be->upload_wait(be, ticket);
}
/* be->memory_stats: 0 and s filled; without it -1 and s zeroed */
static inline int fdp_backend_memory_stats(fdp_backend *be, fdp_backend_mem_stats *s) {
    if (be && be->memory_stats) return be->memory_stats(be, s);
    memset(s, 0, sizeof *s);
    return -1;
}

#endif
