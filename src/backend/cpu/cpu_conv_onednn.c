/* cpu_conv_onednn.c — PLACEHOLDER while the oneDNN path is being written: calls
 * the reference implementation. To be replaced by the oneDNN primitives. */
#include <stdlib.h>

#include "backend/cpu/cpu_conv.h"
#include "flowdp/error.h"

struct fdp_cpu_conv { int dummy; };
fdp_cpu_conv *fdp_cpu_conv_create(void) { return fdp_xcalloc(1, sizeof(fdp_cpu_conv)); }
void fdp_cpu_conv_destroy(fdp_cpu_conv *cc) { free(cc); }
void fdp_cpu_conv_forward(fdp_cpu_conv *cc, fdp_conv_shape s, const float *x, const float *w, const float *bias, float *y, int accumulate) { fdp_conv_ref_forward(s, x, w, bias, y, accumulate); }
void fdp_cpu_conv_backward_data(fdp_cpu_conv *cc, fdp_conv_shape s, const float *dy, const float *w, float *dx, int accumulate) { fdp_conv_ref_backward_data(s, dy, w, dx, accumulate); }
void fdp_cpu_conv_backward_weights(fdp_cpu_conv *cc, fdp_conv_shape s, const float *x, const float *dy, float *dw, float *dbias) { fdp_conv_ref_backward_weights(s, x, dy, dw, dbias); }
void fdp_cpu_matmul(fdp_cpu_conv *cc, int transa, int transb, int M, int N, int K, float alpha, const float *A, const float *B, float beta, float *C) { fdp_matmul_ref(transa, transb, M, N, K, alpha, A, B, beta, C); }
int fdp_cpu_conv_cache_size(const fdp_cpu_conv *cc) { return 0; }
