/* cpu_conv.h — convolutions and matrix products of the CPU backend.
 *
 * fdp_cpu_conv_* : oneDNN (the v2.6 C API) primitives, created once per shape and
 *                  cached for the life of the backend (cpu_conv_onednn.c).
 * fdp_conv_ref_* : plain-C reference implementations, slow and obviously right,
 *                  used by the tests to check the fast path (cpu_conv_ref.c).
 * Semantics are those of backend.h: stride 1, padding k/2, NCHW, OIHW. */
#ifndef FLOWDP_CPU_CONV_H
#define FLOWDP_CPU_CONV_H
#include "flowdp/backend.h"

typedef struct fdp_cpu_conv fdp_cpu_conv; /* oneDNN engine, stream, primitive cache */

fdp_cpu_conv *fdp_cpu_conv_create(void);
void fdp_cpu_conv_destroy(fdp_cpu_conv *cc);
void fdp_cpu_conv_forward(fdp_cpu_conv *cc, fdp_conv_shape s, const float *x, const float *w, const float *bias,
                          float *y, int accumulate);
void fdp_cpu_conv_backward_data(fdp_cpu_conv *cc, fdp_conv_shape s, const float *dy, const float *w, float *dx,
                                int accumulate);
void fdp_cpu_conv_backward_weights(fdp_cpu_conv *cc, fdp_conv_shape s, const float *x, const float *dy, float *dw,
                                   float *dbias);
void fdp_cpu_matmul(fdp_cpu_conv *cc, int transa, int transb, int M, int N, int K, float alpha, const float *A,
                    const float *B, float beta, float *C);
/* number of cached primitives (for tests: shapes seen twice are not rebuilt) */
int fdp_cpu_conv_cache_size(const fdp_cpu_conv *cc);

void fdp_conv_ref_forward(fdp_conv_shape s, const float *x, const float *w, const float *bias, float *y, int accumulate);
void fdp_conv_ref_backward_data(fdp_conv_shape s, const float *dy, const float *w, float *dx, int accumulate);
void fdp_conv_ref_backward_weights(fdp_conv_shape s, const float *x, const float *dy, float *dw, float *dbias);
void fdp_matmul_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A, const float *B,
                    float beta, float *C);

#endif
