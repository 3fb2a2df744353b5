/* backend.h — the compute backend interface (one small interface, several
 * implementations: cpu/ always, cuda/ when built with the CUDA toolkit).
 *
 * All pointers passed to a backend function point to memory of that backend
 * (host memory for cpu, device memory for cuda), including the double outputs
 * of reductions. Convolutions are stride 1 with "same" padding (k odd, pad k/2),
 * NCHW data and OIHW weights. The element-wise operations are generated from
 * the list in src/kernels/elementwise.h: each is one static inline per-element
 * function there, which the CPU backend loops over with OpenMP and the CUDA
 * backend wraps in a grid-stride kernel. */
#ifndef FLOWDP_BACKEND_H
#define FLOWDP_BACKEND_H
#include <stddef.h>
#include <stdint.h>

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

    void (*destroy)(fdp_backend *be);
};

/* Create a backend by name ("cpu" or "cuda"). threads <= 0: all cores.
 * Returns NULL and fills err when the name is unknown or the device missing. */
struct fdp_err;
fdp_backend *fdp_backend_create(const char *name, int threads, struct fdp_err *err);
void fdp_backend_destroy(fdp_backend *be);
fdp_backend *fdp_backend_cpu_create(int threads);

#endif
