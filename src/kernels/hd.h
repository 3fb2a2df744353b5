/* hd.h — the host+device marker for the element-wise math written once.
 * Under nvcc, FDP_HD is __host__ __device__; under cc it is empty, so the CPU
 * backend loops over the very functions the CUDA backend wraps in kernels. */
#ifndef FLOWDP_KERNELS_HD_H
#define FLOWDP_KERNELS_HD_H
#ifdef __CUDACC__
#define FDP_HD __host__ __device__
#else
#define FDP_HD
#endif
#include <math.h>
#include <stdint.h>

/* v where keep is true, else +0.0f, exactly (a NaN or Inf in v is dropped too, like
 * a select) — with a bit mask instead of a branch, so loops over it vectorize. */
FDP_HD static inline float fdp_keep_if(int keep, float v) {
    union {
        float f;
        uint32_t u;
    } b;
    b.f = v;
    b.u &= (uint32_t)0 - (uint32_t)(keep != 0);
    return b.f;
}
#endif
