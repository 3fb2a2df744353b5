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
#endif
