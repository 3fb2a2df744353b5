/* cuda_internal.h — private to the CUDA backend (src/backend/cuda) and the NCCL
 * communicator (src/dist/nccl_comm.c): the backend state behind be->impl, the
 * check macros, the stream-ordering helpers, and the C declarations of the nvcc
 * launchers (element-wise ops of src/kernels/elementwise.cu, reductions of
 * cuda_reduce.cu). Only included when FLOWDP_HAVE_CUDA is defined. */
#ifndef FLOWDP_CUDA_INTERNAL_H
#define FLOWDP_CUDA_INTERNAL_H
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/elementwise.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- nvcc launchers (C linkage) -------------------------------------------------------- */
/* src/kernels/elementwise.cu: one grid-stride kernel per entry of FDP_ELEMENTWISE_OPS */
#define FDP_CUDA_LAUNCH_DECL(name) \
    cudaError_t fdp_cuda_launch_##name(int64_t n, const fdp_##name##_args *a, cudaStream_t stream);
FDP_ELEMENTWISE_OPS(FDP_CUDA_LAUNCH_DECL)
#undef FDP_CUDA_LAUNCH_DECL

/* cuda_reduce.cu: segmented reductions in double, deterministic (a fixed two-pass
 * tree: per-block partials, then one block per segment). A "segment" c covers the
 * elements ((o*C + c)*inner + i) for o < outer, i < inner. nblk = blocks per
 * segment from fdp_cuda_reduce_blocks; with nblk > 1, scratch holds
 * nout*C*nblk doubles (nout = 1 or 2 outputs). */
int fdp_cuda_reduce_blocks(int outer, int C, int64_t inner, int sm_count);
cudaError_t fdp_cuda_reduce_rows_launch(const float *a, const float *b, int outer, int C, int64_t inner, double *out,
                                        int nblk, double *scratch, cudaStream_t s);
cudaError_t fdp_cuda_channel_moments_launch(const float *x, int outer, int C, int64_t inner, double *sum,
                                            double *sumsq, int nblk, double *scratch, cudaStream_t s);
cudaError_t fdp_cuda_bn_backward_reduce_launch(const fdp_bn_act_grad_args *g, const float *x, int outer,
                                               double *sum_g, double *sum_gx, int nblk, double *scratch,
                                               cudaStream_t s);
cudaError_t fdp_cuda_sum_squares_launch(const float *x, int64_t n, double *out, int nblk, double *scratch,
                                        cudaStream_t s);
cudaError_t fdp_cuda_count_nonfinite_launch(const float *x, int64_t n, double *out, int nblk, double *scratch,
                                            cudaStream_t s);

#ifdef __cplusplus
}
#endif

#ifndef __CUDACC__ /* ---- the C side of the backend ----------------------------------- */
#include <cublas_v2.h>
#include <cudnn.h>

#include "flowdp/backend.h"
#include "flowdp/error.h"

enum { FDP_CUDA_STAGING_SLOTS = 4, FDP_CUDA_UPLOAD_EVENTS = 16 };

typedef struct fdp_cuda_conv fdp_cuda_conv; /* cuda_conv.c: cuDNN descriptor/algorithm cache */

typedef struct fdp_cuda_alloc_table {      /* live be->alloc blocks: pointer -> size */
    uintptr_t *key;                         /* (cap) 0 empty, 1 deleted */
    size_t *size;                           /* (cap) */
    size_t cap, used, live; /* slots, slots ever filled (incl. tombstones), live entries */
    size_t bytes;                           /* sum of live sizes */
} fdp_cuda_alloc_table;

typedef struct fdp_cuda {
    int device;
    char device_name[256];
    int sm_count, cc_major, cc_minor;
    int async_pool;               /* 1: cudaMallocAsync from the device's default pool */
    cudaMemPool_t pool;
    int sync_debug;               /* FLOWDP_CUDA_SYNC=1: synchronize and check after every call */

    cudaStream_t compute;         /* every backend call */
    cudaStream_t comm;            /* NCCL collectives (nccl_comm.c) */
    cudaEvent_t ev_compute;       /* "compute reached here" (comm waits on it) */
    cudaEvent_t ev_comm;          /* "comm reached here" (compute waits on it) */

    cublasHandle_t cublas;        /* on compute */
    cudnnHandle_t cudnn;          /* on compute */
    fdp_cuda_conv *conv;

    /* reductions */
    double *red_scratch;          /* (red_cap) per-block partials */
    size_t red_cap;
    double *dev_result;           /* (2) sum_squares / has_nonfinite result on the device */
    double *host_result;          /* (2) pinned */
    double *dbias;                /* (dbias_cap) conv bias gradient in double before rounding */
    size_t dbias_cap;

    /* from_host staging: pinned slots reused round robin, each with its "read done" event */
    void *stage[FDP_CUDA_STAGING_SLOTS];
    size_t stage_cap[FDP_CUDA_STAGING_SLOTS];
    cudaEvent_t stage_ev[FDP_CUDA_STAGING_SLOTS];
    int stage_next;
    /* fdp_upload_async tickets: ring of events, ticket t uses event t % FDP_CUDA_UPLOAD_EVENTS */
    cudaEvent_t upload_ev[FDP_CUDA_UPLOAD_EVENTS];
    uint64_t upload_seq;

    /* memory accounting */
    fdp_cuda_alloc_table allocs;
    size_t backend_peak;
    size_t scratch_bytes;         /* workspace, reduction scratch and staging held */
} fdp_cuda;

static inline fdp_cuda *fdp_cuda_impl(fdp_backend *be) { return (fdp_cuda *)be->impl; }

/* ---- cuda_device.c: the lowest layer (calls nothing of cuda_backend.c / cuda_conv.c) ---- */
/* FDP_CUDA_CHECK(call, "what it was doing") : fatal with cudaGetErrorName/String */
void fdp_cuda_fail_at(const char *file, int line, const char *call, cudaError_t e, const char *what)
    __attribute__((noreturn));
#define FDP_CUDA_CHECK(call, what)                                                        \
    do {                                                                                  \
        cudaError_t fdp_cuda_e_ = (call);                                                 \
        if (fdp_cuda_e_ != cudaSuccess) fdp_cuda_fail_at(__FILE__, __LINE__, #call, fdp_cuda_e_, (what)); \
    } while (0)
/* after enqueuing work: with FLOWDP_CUDA_SYNC=1 wait and check (locates async faults) */
void fdp_cuda_debug_sync_at(fdp_cuda *cu, const char *file, int line, const char *what);
#define FDP_CUDA_DEBUG_SYNC(cu, what)                                                     \
    do {                                                                                  \
        if ((cu)->sync_debug) fdp_cuda_debug_sync_at((cu), __FILE__, __LINE__, (what));   \
    } while (0)

/* device memory, stream-ordered on compute in pool mode (frees wait for the comm
 * stream), 256-byte granules, fatal with the memory situation when out of memory;
 * be->alloc counts it in its table */
void *fdp_cuda_device_alloc(fdp_cuda *cu, size_t bytes, const char *what);
void fdp_cuda_device_free(fdp_cuda *cu, void *p);
/* raw device memory for the backend's own buffers (stream-ordered on compute in
 * pool mode); counted in scratch_bytes, not in the be->alloc statistics */
void *fdp_cuda_raw_alloc(fdp_cuda *cu, size_t bytes, const char *what);
void fdp_cuda_raw_free(fdp_cuda *cu, void *p, size_t bytes);
/* grow a double scratch buffer to hold n doubles (contents not kept) */
double *fdp_cuda_ensure_doubles(fdp_cuda *cu, double **buf, size_t *cap, size_t n, const char *what);

/* stream ordering (device-side waits, no host blocking) */
void fdp_cuda_comm_after_compute(fdp_cuda *cu);  /* comm stream waits for the compute work issued so far */
void fdp_cuda_compute_after_comm(fdp_cuda *cu);  /* compute stream waits for the comm work issued so far */

/* ---- cuda_conv.c (uses only cuda_device.c) ---- */
fdp_cuda_conv *fdp_cuda_conv_create(fdp_cuda *cu);
void fdp_cuda_conv_destroy(fdp_cuda *cu, fdp_cuda_conv *cc);
void fdp_cuda_conv_forward(fdp_backend *be, fdp_conv_shape s, const float *x, const float *w, const float *bias,
                           float *y, int accumulate);
void fdp_cuda_conv_backward_data(fdp_backend *be, fdp_conv_shape s, const float *dy, const float *w, float *dx,
                                 int accumulate);
void fdp_cuda_conv_backward_weights(fdp_backend *be, fdp_conv_shape s, const float *x, const float *dy, float *dw,
                                    float *dbias);
void fdp_cuda_matmul(fdp_backend *be, int transa, int transb, int M, int N, int K, float alpha, const float *A,
                     const float *B, float beta, float *C);
size_t fdp_cuda_conv_workspace_bytes(const fdp_cuda_conv *cc);
int fdp_cuda_conv_cache_size(const fdp_cuda_conv *cc);
#endif /* !__CUDACC__ */

#endif
