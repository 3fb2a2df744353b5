/* cuda_reduce.cu — the CUDA backend's reductions, accumulated in double:
 * reduce_rows, channel_moments, bn_backward_reduce (g recomputed per element by
 * the shared fdp_bn_act_grad_value, exactly as the CPU backend does),
 * sum_squares and the non-finite count.
 *
 * All are one segmented reduction: segment c of a (outer, C, inner) tensor is
 * the elements (o*C + c)*inner + i. Pass 1 runs nblk blocks per segment; each
 * block walks its share (row tiles when rows are long, flat indices when they
 * are short), sums per thread, then a block tree (warp shuffles, then one warp
 * over the warp sums) gives one partial per block. Pass 2 sums each segment's
 * nblk partials with one block, the same tree. No atomics: for a given GPU
 * (SM count) and shape the result is the same bit for bit on every run. */
#include <cuda_runtime.h>

#include "backend/cuda/cuda_internal.h"
#include "kernels/elementwise.h"

namespace {

constexpr int RT = 256;            /* threads per block */
constexpr int RWARPS = RT / 32;
constexpr int64_t PER_BLOCK = 4096; /* aim: at least this many elements per block */
constexpr int MAX_NBLK = 1024;

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

/* sum v[] over the block; thread 0 ends with the totals */
template <int NOUT>
__device__ __forceinline__ void block_sum(double (&v)[NOUT]) {
    __shared__ double smem[NOUT][RWARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < NOUT; k++) {
        v[k] = warp_sum(v[k]);
        if (lane == 0) smem[k][warp] = v[k];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int k = 0; k < NOUT; k++) {
            double t = lane < RWARPS ? smem[k][lane] : 0.0;
            v[k] = warp_sum(t);
        }
    }
}

/* ---- per-element contributions (the same expressions as cpu_backend.c) ---- */
struct RowsOp {
    const float *a, *b;
    __device__ __forceinline__ void operator()(int64_t j, double (&v)[1]) const {
        v[0] += b ? (double)a[j] * b[j] : (double)a[j];
    }
};
struct MomentsOp {
    const float *x;
    __device__ __forceinline__ void operator()(int64_t j, double (&v)[2]) const {
        double t = x[j];
        v[0] += t;
        v[1] += t * t;
    }
};
struct BnReduceOp {
    fdp_bn_act_grad_args g;
    const float *x;
    __device__ __forceinline__ void operator()(int64_t j, double (&v)[2]) const {
        double t = fdp_bn_act_grad_value(j, &g);
        v[0] += t;
        v[1] += t * x[j];
    }
};
struct SquaresOp {
    const float *x;
    __device__ __forceinline__ void operator()(int64_t j, double (&v)[1]) const { v[0] += (double)x[j] * x[j]; }
};
struct NonfiniteOp {
    const float *x;
    __device__ __forceinline__ void operator()(int64_t j, double (&v)[1]) const { v[0] += isfinite(x[j]) ? 0.0 : 1.0; }
};

/* pass 1: block b of segment c; with nblk == 1 it writes the outputs directly */
template <int NOUT, class Op>
__global__ void __launch_bounds__(RT) seg_partial(Op op, int outer, int C, int64_t inner, int nblk, double *partial,
                                                  double *out0, double *out1) {
    const int c = (int)(blockIdx.x / (unsigned)nblk), b = (int)(blockIdx.x % (unsigned)nblk);
    double v[NOUT];
#pragma unroll
    for (int k = 0; k < NOUT; k++) v[k] = 0.0;
    if (inner >= RT) {
        /* long rows: tiles of up to 8 RT elements within one row */
        const int64_t tile = 8 * RT;
        const int64_t per_row = (inner + tile - 1) / tile, ntiles = (int64_t)outer * per_row;
        for (int64_t t = b; t < ntiles; t += nblk) {
            const int64_t o = t / per_row, i0 = (t % per_row) * tile;
            const int64_t i1 = i0 + tile < inner ? i0 + tile : inner;
            const int64_t base = (o * C + c) * inner;
            for (int64_t i = i0 + threadIdx.x; i < i1; i += RT) op(base + i, v);
        }
    } else {
        /* short rows: flat index over (o, i) */
        const int64_t total = (int64_t)outer * inner;
        for (int64_t e = (int64_t)b * RT + threadIdx.x; e < total; e += (int64_t)nblk * RT) {
            const int64_t o = e / inner, i = e - o * inner;
            op((o * C + c) * inner + i, v);
        }
    }
    block_sum<NOUT>(v);
    if (threadIdx.x == 0) {
        if (nblk == 1) {
            out0[c] = v[0];
            if (NOUT > 1) out1[c] = v[NOUT - 1];
        } else {
#pragma unroll
            for (int k = 0; k < NOUT; k++) partial[((int64_t)k * C + c) * nblk + b] = v[k];
        }
    }
}

/* pass 2: one block per segment sums its nblk partials */
template <int NOUT>
__global__ void __launch_bounds__(RT) seg_final(const double *partial, int C, int nblk, double *out0, double *out1) {
    const int c = blockIdx.x;
    double v[NOUT];
#pragma unroll
    for (int k = 0; k < NOUT; k++) v[k] = 0.0;
    for (int b = threadIdx.x; b < nblk; b += RT) {
#pragma unroll
        for (int k = 0; k < NOUT; k++) v[k] += partial[((int64_t)k * C + c) * nblk + b];
    }
    block_sum<NOUT>(v);
    if (threadIdx.x == 0) {
        out0[c] = v[0];
        if (NOUT > 1) out1[c] = v[NOUT - 1];
    }
}

template <int NOUT, class Op>
cudaError_t seg_reduce(const Op &op, int outer, int C, int64_t inner, double *out0, double *out1, int nblk,
                       double *scratch, cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    if (nblk < 1) nblk = 1;
    if (nblk > 1 && !scratch) return cudaErrorInvalidValue;
    if (outer < 0 || inner < 0) return cudaErrorInvalidValue;
    seg_partial<NOUT, Op><<<(unsigned)((int64_t)C * nblk), RT, 0, s>>>(op, outer, C, inner, nblk, scratch, out0, out1);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || nblk == 1) return e;
    seg_final<NOUT><<<(unsigned)C, RT, 0, s>>>(scratch, C, nblk, out0, out1);
    return cudaGetLastError();
}

} // namespace

extern "C" int fdp_cuda_reduce_blocks(int outer, int C, int64_t inner, int sm_count) {
    if (C <= 0) return 1;
    const int64_t elems = (int64_t)outer * inner; /* per segment */
    int64_t by_size = (elems + PER_BLOCK - 1) / PER_BLOCK;
    int64_t by_gpu = ((int64_t)(sm_count > 0 ? sm_count : 80) * 8 + C - 1) / C; /* ~8 blocks per SM in all */
    int64_t nblk = by_size < by_gpu ? by_size : by_gpu;
    if (nblk < 1) nblk = 1;
    if (nblk > MAX_NBLK) nblk = MAX_NBLK;
    /* one launch: C * nblk blocks must fit a 1-D grid */
    while (nblk > 1 && (int64_t)C * nblk > 0x7fffffffLL) nblk /= 2;
    return (int)nblk;
}

extern "C" cudaError_t fdp_cuda_reduce_rows_launch(const float *a, const float *b, int outer, int C, int64_t inner,
                                                   double *out, int nblk, double *scratch, cudaStream_t s) {
    return seg_reduce<1>(RowsOp{a, b}, outer, C, inner, out, out, nblk, scratch, s);
}

extern "C" cudaError_t fdp_cuda_channel_moments_launch(const float *x, int outer, int C, int64_t inner, double *sum,
                                                       double *sumsq, int nblk, double *scratch, cudaStream_t s) {
    return seg_reduce<2>(MomentsOp{x}, outer, C, inner, sum, sumsq, nblk, scratch, s);
}

extern "C" cudaError_t fdp_cuda_bn_backward_reduce_launch(const fdp_bn_act_grad_args *g, const float *x, int outer,
                                                          double *sum_g, double *sum_gx, int nblk, double *scratch,
                                                          cudaStream_t s) {
    return seg_reduce<2>(BnReduceOp{*g, x}, outer, g->C, g->HW, sum_g, sum_gx, nblk, scratch, s);
}

extern "C" cudaError_t fdp_cuda_sum_squares_launch(const float *x, int64_t n, double *out, int nblk, double *scratch,
                                                   cudaStream_t s) {
    return seg_reduce<1>(SquaresOp{x}, 1, 1, n, out, out, nblk, scratch, s);
}

extern "C" cudaError_t fdp_cuda_count_nonfinite_launch(const float *x, int64_t n, double *out, int nblk,
                                                       double *scratch, cudaStream_t s) {
    return seg_reduce<1>(NonfiniteOp{x}, 1, 1, n, out, out, nblk, scratch, s);
}
