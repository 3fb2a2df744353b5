/* elementwise.cu — the shared element-wise functions of elementwise.h wrapped
 * in grid-stride CUDA kernels, one per entry of FDP_ELEMENTWISE_OPS, plus a
 * launcher for each. This is the CUDA side of the "written once" scheme: the
 * arithmetic inside is the very code the CPU backend runs and the tests check. */
#include <cuda_runtime.h>

#include "kernels/elementwise.h"

#define FDP_CUDA_KERNEL(name)                                                              \
    __global__ void fdp_cuda_kernel_##name(int64_t n, fdp_##name##_args a) {             \
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;            \
             i += (int64_t)blockDim.x * gridDim.x)                                         \
            fdp_k_##name(i, &a);                                                           \
    }                                                                                      \
    extern "C" cudaError_t fdp_cuda_launch_##name(int64_t n, const fdp_##name##_args *a, cudaStream_t stream) { \
        if (n <= 0) return cudaSuccess;                                                    \
        int threads = 256;                                                                 \
        int64_t blocks = (n + threads - 1) / threads;                                      \
        if (blocks > 65535 * 8) blocks = 65535 * 8;                                        \
        fdp_cuda_kernel_##name<<<(unsigned)blocks, threads, 0, stream>>>(n, *a);           \
        return cudaGetLastError();                                                         \
    }
FDP_ELEMENTWISE_OPS(FDP_CUDA_KERNEL)
