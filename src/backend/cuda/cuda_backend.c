/* cuda_backend.c — the CUDA backend behind backend.h: device selection, device
 * memory (cudaMallocAsync pool, or cudaMalloc), one compute stream for every
 * call plus a communication stream ordered with events, host<->device copies
 * (pinned staging slots for from_host), the shared element-wise ops through the
 * launchers generated in src/kernels/elementwise.cu, the double-accumulating
 * reductions of cuda_reduce.cu, and the optional members of backend.h (pinned
 * upload, arena allocator, memory statistics). Convolutions and matmul:
 * cuda_conv.c; errors, device memory and stream ordering: cuda_device.c (the layer
 * below both).
 *
 * Built without CUDA (FLOWDP_HAVE_CUDA undefined) this file compiles to the
 * stubs at the end: fdp_backend_cuda_create says "built without CUDA".
 *
 * Environment:
 *   FLOWDP_CUDA_SYNC=1        synchronize and check after every backend call
 *                             (locates an asynchronous kernel fault; slow)
 *   FLOWDP_CUDA_ALLOCATOR=malloc   plain cudaMalloc/cudaFree instead of the
 *                             stream-ordered cudaMallocAsync pool
 *   FLOWDP_CUDA_TF32=1        allow TF32 tensor cores in cuBLAS and cuDNN
 *                             (default: exact FP32, like the CPU backend) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flowdp/backend.h"
#include "flowdp/cuda.h"
#include "flowdp/error.h"
#include "flowdp/log.h"

/* ---- where fdp_backend_cuda_create(-1) finds this rank's place on its node -------------------- */
/* set by the communicator (src/dist/comm.c) while the world communicator exists: a
 * function pointer, so that the backend never calls into dist (dist calls the backend) */
static fdp_cuda_node_rank_fn g_node_rank_source = NULL;

void fdp_cuda_set_node_rank_source(fdp_cuda_node_rank_fn fn) { g_node_rank_source = fn; }

#ifdef FLOWDP_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/cuda_internal.h"

/* ---- devices -------------------------------------------------------------------------------- */

int fdp_cuda_device_count(fdp_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear it: the tests go on without a GPU */
        fdp_err_set(err, "no CUDA device visible: %s (cudaGetDeviceCount: %s)", cudaGetErrorString(e),
                    cudaGetErrorName(e));
        return -1;
    }
    if (n <= 0) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        fdp_err_set(err, "no CUDA device visible: cudaGetDeviceCount found 0 devices (CUDA_VISIBLE_DEVICES=%s)",
                    vis ? vis : "(unset)");
        return -1;
    }
    return n;
}

int fdp_cuda_pick_device(int local_rank, int local_size, fdp_err *err) {
    int n = fdp_cuda_device_count(err);
    if (n < 0) return -1;
    if (local_size > n && n > 1) {
        char host[256] = "?";
        gethostname(host, sizeof host - 1);
        fdp_err_set(err,
                    "host %s runs %d ranks but sees only %d CUDA devices; flowdp needs one GPU per rank: start at most "
                    "%d ranks per node (srun --ntasks-per-node=%d, mpiexec --map-by ppr:%d:node) or bind one GPU per "
                    "rank (srun --gpus-per-task=1)",
                    host, local_size, n, n, n, n);
        return -1;
    }
    /* n == 1 with several local ranks is fine when each rank was given its own GPU
     * (per-rank CUDA_VISIBLE_DEVICES); fdp_nccl_create checks the PCI bus ids */
    return local_rank % n;
}

int fdp_cuda_device_of(const fdp_backend *be) {
    if (!be || be->dev != FDP_DEVICE_CUDA) return -1;
    return ((const fdp_cuda *)be->impl)->device;
}

/* ---- memory ----------------------------------------------------------------------------- */

static size_t table_hash(uintptr_t k, size_t cap) {
    uint64_t h = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static void table_insert(fdp_cuda_alloc_table *t, uintptr_t key, size_t size);

static void table_grow(fdp_cuda_alloc_table *t) {
    size_t old_cap = t->cap;
    uintptr_t *old_key = t->key;
    size_t *old_size = t->size;
    t->cap = old_cap ? old_cap * 2 : 256;
    t->key = fdp_xcalloc(t->cap, sizeof *t->key);
    t->size = fdp_xcalloc(t->cap, sizeof *t->size);
    t->used = t->live = t->bytes = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old_key[i] > 1) table_insert(t, old_key[i], old_size[i]);
    free(old_key);
    free(old_size);
}

static void table_insert(fdp_cuda_alloc_table *t, uintptr_t key, size_t size) {
    if ((t->used + 1) * 2 > t->cap) table_grow(t);
    size_t i = table_hash(key, t->cap);
    while (t->key[i] > 1) i = (i + 1) & (t->cap - 1);
    if (t->key[i] == 0) t->used++;
    t->key[i] = key;
    t->size[i] = size;
    t->live++;
    t->bytes += size;
}

/* returns the size, or (size_t)-1 when the pointer is unknown */
static size_t table_remove(fdp_cuda_alloc_table *t, uintptr_t key) {
    if (!t->cap) return (size_t)-1;
    size_t i = table_hash(key, t->cap);
    while (t->key[i] != 0) {
        if (t->key[i] == key) {
            t->key[i] = 1; /* tombstone */
            t->live--;
            t->bytes -= t->size[i];
            return t->size[i];
        }
        i = (i + 1) & (t->cap - 1);
    }
    return (size_t)-1;
}

static size_t backend_live_bytes(const fdp_cuda *cu) { return cu->allocs.bytes; }

static void *cuda_alloc(fdp_backend *be, size_t bytes) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    void *p = fdp_cuda_device_alloc(cu, bytes, "a backend buffer");
    size_t b = bytes ? (bytes + 255) & ~(size_t)255 : 256;
    table_insert(&cu->allocs, (uintptr_t)p, b);
    size_t live = backend_live_bytes(cu);
    if (live > cu->backend_peak) cu->backend_peak = live;
    return p;
}

static void cuda_free(fdp_backend *be, void *p) {
    if (!p) return;
    fdp_cuda *cu = fdp_cuda_impl(be);
    size_t sz = table_remove(&cu->allocs, (uintptr_t)p);
    FDP_CHECK(sz != (size_t)-1, "cuda backend: free of %p, which this backend did not allocate (or freed twice)", p);
    fdp_cuda_device_free(cu, p);
}

static void cuda_memset0(fdp_backend *be, void *p, size_t bytes) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (!bytes) return;
    FDP_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cu->compute), "zeroing device memory");
    FDP_CUDA_DEBUG_SYNC(cu, "memset0");
}

static void cuda_copy(fdp_backend *be, void *dst, const void *src, size_t bytes) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (!bytes || dst == src) return;
    const char *d = dst, *s = src;
    if (d < s + bytes && s < d + bytes) {
        /* overlapping (memmove semantics, as the CPU backend): through a temporary */
        void *tmp = fdp_cuda_raw_alloc(cu, bytes, "an overlapping copy");
        FDP_CUDA_CHECK(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, cu->compute), "copying on device");
        FDP_CUDA_CHECK(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, cu->compute), "copying on device");
        fdp_cuda_raw_free(cu, tmp, bytes);
    } else {
        FDP_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu->compute), "copying on device");
    }
    FDP_CUDA_DEBUG_SYNC(cu, "copy");
}

static void cuda_to_host(fdp_backend *be, void *host_dst, const void *src, size_t bytes) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (!bytes) return;
    FDP_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cu->compute),
                   "copying device -> host");
    FDP_CUDA_CHECK(cudaStreamSynchronize(cu->compute), "waiting for a device -> host copy (errors of earlier kernels "
                                                       "surface here)");
}

static void cuda_from_host(fdp_backend *be, void *dst, const void *host_src, size_t bytes) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (!bytes) return;
    if (bytes > FDP_CUDA_STAGING_MAX) {
        /* setup-time loads: straight from the caller's memory, then wait so it may be reused */
        FDP_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cu->compute),
                       "copying host -> device");
        FDP_CUDA_CHECK(cudaStreamSynchronize(cu->compute), "waiting for a host -> device copy");
        return;
    }
    int s = cu->stage_next;
    cu->stage_next = (s + 1) % FDP_CUDA_STAGING_SLOTS;
    /* the slot's previous copy must have read it */
    FDP_CUDA_CHECK(cudaEventSynchronize(cu->stage_ev[s]), "waiting for a staging slot");
    if (cu->stage_cap[s] < bytes) {
        size_t want = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes;
        if (cu->stage[s]) FDP_CUDA_CHECK(cudaFreeHost(cu->stage[s]), "freeing a staging slot");
        cu->scratch_bytes -= cu->stage_cap[s];
        cu->stage[s] = NULL;
        cu->stage_cap[s] = 0;
        FDP_CUDA_CHECK(cudaHostAlloc(&cu->stage[s], want, cudaHostAllocPortable), "allocating pinned staging");
        cu->stage_cap[s] = want;
        cu->scratch_bytes += want;
    }
    memcpy(cu->stage[s], host_src, bytes);
    FDP_CUDA_CHECK(cudaMemcpyAsync(dst, cu->stage[s], bytes, cudaMemcpyHostToDevice, cu->compute),
                   "copying host -> device");
    FDP_CUDA_CHECK(cudaEventRecord(cu->stage_ev[s], cu->compute), "recording a staging event");
    FDP_CUDA_DEBUG_SYNC(cu, "from_host");
}

static void cuda_synchronize(fdp_backend *be) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    FDP_CUDA_CHECK(cudaStreamSynchronize(cu->compute), "synchronizing the compute stream");
    FDP_CUDA_CHECK(cudaStreamSynchronize(cu->comm), "synchronizing the communication stream");
}

/* ---- element-wise: the generated launchers, on the compute stream ------------------------ */
#define CUDA_ELEMENTWISE(name)                                                                          \
    static void cuda_##name(fdp_backend *be, int64_t n, const fdp_##name##_args *a) {                   \
        fdp_cuda *cu = fdp_cuda_impl(be);                                                               \
        cudaError_t e_ = fdp_cuda_launch_##name(n, a, cu->compute);                                     \
        if (e_ != cudaSuccess) fdp_cuda_fail_at(__FILE__, __LINE__, "fdp_cuda_launch_" #name, e_,       \
                                                "launching element-wise op " #name);                    \
        FDP_CUDA_DEBUG_SYNC(cu, "element-wise op " #name);                                              \
    }
FDP_ELEMENTWISE_OPS(CUDA_ELEMENTWISE)
#undef CUDA_ELEMENTWISE

/* ---- reductions ----------------------------------------------------------------------------- */
static double *reduce_scratch(fdp_cuda *cu, int nout, int C, int nblk) {
    if (nblk <= 1) return NULL;
    return fdp_cuda_ensure_doubles(cu, &cu->red_scratch, &cu->red_cap, (size_t)nout * (size_t)C * (size_t)nblk,
                                   "reduction scratch");
}

static void cuda_reduce_rows(fdp_backend *be, const float *a, const float *b, int outer, int C, int64_t inner,
                             double *out) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    int nblk = fdp_cuda_reduce_blocks(outer, C, inner, cu->sm_count);
    double *scr = reduce_scratch(cu, 1, C, nblk);
    FDP_CUDA_CHECK(fdp_cuda_reduce_rows_launch(a, b, outer, C, inner, out, nblk, scr, cu->compute), "reduce_rows");
    FDP_CUDA_DEBUG_SYNC(cu, "reduce_rows");
}

static void cuda_channel_moments(fdp_backend *be, const float *x, int outer, int C, int64_t inner, double *sum,
                                 double *sumsq) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    int nblk = fdp_cuda_reduce_blocks(outer, C, inner, cu->sm_count);
    double *scr = reduce_scratch(cu, 2, C, nblk);
    FDP_CUDA_CHECK(fdp_cuda_channel_moments_launch(x, outer, C, inner, sum, sumsq, nblk, scr, cu->compute),
                   "channel_moments");
    FDP_CUDA_DEBUG_SYNC(cu, "channel_moments");
}

static void cuda_bn_backward_reduce(fdp_backend *be, const fdp_bn_act_grad_args *g, const float *x, int outer,
                                    double *sum_g, double *sum_gx) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    int nblk = fdp_cuda_reduce_blocks(outer, g->C, g->HW, cu->sm_count);
    double *scr = reduce_scratch(cu, 2, g->C, nblk);
    FDP_CUDA_CHECK(fdp_cuda_bn_backward_reduce_launch(g, x, outer, sum_g, sum_gx, nblk, scr, cu->compute),
                   "bn_backward_reduce");
    FDP_CUDA_DEBUG_SYNC(cu, "bn_backward_reduce");
}

static double fetch_result(fdp_cuda *cu, const char *what) {
    FDP_CUDA_CHECK(cudaMemcpyAsync(cu->host_result, cu->dev_result, sizeof(double), cudaMemcpyDeviceToHost,
                                   cu->compute),
                   what);
    FDP_CUDA_CHECK(cudaStreamSynchronize(cu->compute), what);
    return cu->host_result[0];
}

static double cuda_sum_squares(fdp_backend *be, const float *x, int64_t n) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (n <= 0) return 0.0;
    int nblk = fdp_cuda_reduce_blocks(1, 1, n, cu->sm_count);
    double *scr = reduce_scratch(cu, 1, 1, nblk);
    FDP_CUDA_CHECK(fdp_cuda_sum_squares_launch(x, n, cu->dev_result, nblk, scr, cu->compute), "sum_squares");
    return fetch_result(cu, "sum_squares");
}

static int cuda_has_nonfinite(fdp_backend *be, const float *x, int64_t n) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (n <= 0) return 0;
    int nblk = fdp_cuda_reduce_blocks(1, 1, n, cu->sm_count);
    double *scr = reduce_scratch(cu, 1, 1, nblk);
    FDP_CUDA_CHECK(fdp_cuda_count_nonfinite_launch(x, n, cu->dev_result, nblk, scr, cu->compute), "has_nonfinite");
    return fetch_result(cu, "has_nonfinite") > 0.0;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

/* the optional members (defined at the end) */
static void *cuda_pinned_alloc(fdp_backend *be, size_t bytes);
static void cuda_pinned_free(fdp_backend *be, void *p);
static uint64_t cuda_upload_async(fdp_backend *be, void *dst, const void *pinned_src, size_t bytes);
static void cuda_upload_wait(fdp_backend *be, uint64_t ticket);
static void *cuda_arena_alloc(void *be, size_t bytes);
static void cuda_arena_free(void *be, void *p);
static int cuda_memory_stats(fdp_backend *be, fdp_backend_mem_stats *s);
static void cuda_reset_peak(fdp_backend *be);

static void cuda_destroy(fdp_backend *be) {
    if (!be) return;
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (cu) {
        if (cu->compute) (void)cudaStreamSynchronize(cu->compute);
        if (cu->comm) (void)cudaStreamSynchronize(cu->comm);
        if (cu->allocs.live) fdp_debug("cuda backend: %zu buffer(s) still allocated at destroy", cu->allocs.live);
        if (cu->conv) fdp_cuda_conv_destroy(cu, cu->conv);
        if (cu->compute) {
            fdp_cuda_raw_free(cu, cu->red_scratch, cu->red_cap * sizeof(double));
            fdp_cuda_raw_free(cu, cu->dbias, cu->dbias_cap * sizeof(double));
            fdp_cuda_raw_free(cu, cu->dev_result, 2 * sizeof(double));
            (void)cudaStreamSynchronize(cu->compute);
        }
        if (cu->host_result) (void)cudaFreeHost(cu->host_result);
        for (int s = 0; s < FDP_CUDA_STAGING_SLOTS; s++) {
            if (cu->stage[s]) (void)cudaFreeHost(cu->stage[s]);
            if (cu->stage_ev[s]) (void)cudaEventDestroy(cu->stage_ev[s]);
        }
        for (int i = 0; i < FDP_CUDA_UPLOAD_EVENTS; i++)
            if (cu->upload_ev[i]) (void)cudaEventDestroy(cu->upload_ev[i]);
        if (cu->cudnn) (void)cudnnDestroy(cu->cudnn);
        if (cu->cublas) (void)cublasDestroy(cu->cublas);
        if (cu->ev_compute) (void)cudaEventDestroy(cu->ev_compute);
        if (cu->ev_comm) (void)cudaEventDestroy(cu->ev_comm);
        if (cu->compute) (void)cudaStreamDestroy(cu->compute);
        if (cu->comm) (void)cudaStreamDestroy(cu->comm);
        free(cu->allocs.key);
        free(cu->allocs.size);
        free(cu);
    }
    free(be);
}

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* set err from a failed setup call and go to fail */
#define SETUP_TRY(call, what)                                                                                 \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            (void)cudaGetLastError();                                                                         \
            fdp_err_set(err, "CUDA device %d: %s failed: %s (%s)", device, (what), cudaGetErrorString(e_),    \
                        cudaGetErrorName(e_));                                                                \
            goto fail;                                                                                        \
        }                                                                                                     \
    } while (0)

/* the backend's function table */
static void cuda_fill_table(fdp_backend *be) {
    be->name = "cuda";
    be->dev = FDP_DEVICE_CUDA;
    be->num_threads = 1;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->memset0 = cuda_memset0;
    be->copy = cuda_copy;
    be->to_host = cuda_to_host;
    be->from_host = cuda_from_host;
    be->synchronize = cuda_synchronize;
    be->conv_forward = fdp_cuda_conv_forward;
    be->conv_backward_data = fdp_cuda_conv_backward_data;
    be->conv_backward_weights = fdp_cuda_conv_backward_weights;
    be->matmul = fdp_cuda_matmul;
    be->reduce_rows = cuda_reduce_rows;
    be->channel_moments = cuda_channel_moments;
    be->bn_backward_reduce = cuda_bn_backward_reduce;
    be->sum_squares = cuda_sum_squares;
    be->has_nonfinite = cuda_has_nonfinite;
#define CUDA_ASSIGN(name) be->name = cuda_##name;
    FDP_ELEMENTWISE_OPS(CUDA_ASSIGN)
#undef CUDA_ASSIGN
    be->pinned_alloc = cuda_pinned_alloc;
    be->pinned_free = cuda_pinned_free;
    be->upload_async = cuda_upload_async;
    be->upload_wait = cuda_upload_wait;
    be->arena_alloc = cuda_arena_alloc;
    be->arena_free = cuda_arena_free;
    be->memory_stats = cuda_memory_stats;
    be->reset_peak = cuda_reset_peak;
    be->destroy = cuda_destroy;
}

fdp_backend *fdp_backend_cuda_create(int device, fdp_err *err) {
    int count = fdp_cuda_device_count(err);
    if (count < 0) return NULL;
    if (device < 0) {
        int local_rank = 0, local_size = 1;
        int have = g_node_rank_source && g_node_rank_source(&local_rank, &local_size) == 0;
        device = have ? fdp_cuda_pick_device(local_rank, local_size, err) : 0;
        if (device < 0) return NULL;
    } else if (device >= count) {
        fdp_err_set(err, "CUDA device %d requested, but only %d visible (0..%d; CUDA_VISIBLE_DEVICES=%s)", device,
                    count, count - 1, getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "(unset)");
        return NULL;
    }

    fdp_backend *be = fdp_xcalloc(1, sizeof *be);
    fdp_cuda *cu = fdp_xcalloc(1, sizeof *cu);
    be->impl = cu;
    cu->device = device;
    SETUP_TRY(cudaSetDevice(device), "cudaSetDevice");
    struct cudaDeviceProp prop;
    SETUP_TRY(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    snprintf(cu->device_name, sizeof cu->device_name, "%s", prop.name);
    cu->sm_count = prop.multiProcessorCount;
    cu->cc_major = prop.major;
    cu->cc_minor = prop.minor;
    if (cu->cc_major < 8) {
        fdp_err_set(err,
                    "CUDA device %d (%s) has compute capability %d.%d; this build carries kernels for sm_80 and sm_90 "
                    "(and PTX they JIT from) only; hint: reconfigure with -DCMAKE_CUDA_ARCHITECTURES=%d%d",
                    device, cu->device_name, cu->cc_major, cu->cc_minor, cu->cc_major, cu->cc_minor);
        goto fail;
    }
    cu->sync_debug = env_flag("FLOWDP_CUDA_SYNC");
    int tf32 = env_flag("FLOWDP_CUDA_TF32");

    int least = 0, greatest = 0;
    SETUP_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
    SETUP_TRY(cudaStreamCreateWithPriority(&cu->compute, cudaStreamNonBlocking, least), "creating the compute stream");
    SETUP_TRY(cudaStreamCreateWithPriority(&cu->comm, cudaStreamNonBlocking, greatest), "creating the comm stream");
    SETUP_TRY(cudaEventCreateWithFlags(&cu->ev_compute, cudaEventDisableTiming), "cudaEventCreate");
    SETUP_TRY(cudaEventCreateWithFlags(&cu->ev_comm, cudaEventDisableTiming), "cudaEventCreate");
    for (int s = 0; s < FDP_CUDA_STAGING_SLOTS; s++)
        SETUP_TRY(cudaEventCreateWithFlags(&cu->stage_ev[s], cudaEventDisableTiming), "cudaEventCreate");
    for (int i = 0; i < FDP_CUDA_UPLOAD_EVENTS; i++)
        SETUP_TRY(cudaEventCreateWithFlags(&cu->upload_ev[i], cudaEventDisableTiming), "cudaEventCreate");

    /* the stream-ordered pool: frees and re-allocations (arena consolidation) do not
     * synchronize the device; memory stays cached in the pool (threshold: keep all) */
    int pools = 0;
    const char *alloc_env = getenv("FLOWDP_CUDA_ALLOCATOR");
    int want_pool = !(alloc_env && strcmp(alloc_env, "malloc") == 0);
    SETUP_TRY(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device), "cudaDeviceGetAttribute");
    if (pools && want_pool) {
        SETUP_TRY(cudaDeviceGetDefaultMemPool(&cu->pool, device), "cudaDeviceGetDefaultMemPool");
        uint64_t keep = UINT64_MAX;
        SETUP_TRY(cudaMemPoolSetAttribute(cu->pool, cudaMemPoolAttrReleaseThreshold, &keep),
                  "cudaMemPoolSetAttribute(release threshold)");
        cu->async_pool = 1;
    }

    cublasStatus_t bs = cublasCreate(&cu->cublas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        fdp_err_set(err, "CUDA device %d: cublasCreate failed: %s", device, cublasGetStatusString(bs));
        goto fail;
    }
    if ((bs = cublasSetStream(cu->cublas, cu->compute)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetMathMode(cu->cublas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH)) !=
            CUBLAS_STATUS_SUCCESS) {
        fdp_err_set(err, "CUDA device %d: cuBLAS setup failed: %s", device, cublasGetStatusString(bs));
        goto fail;
    }
    cudnnStatus_t ds = cudnnCreate(&cu->cudnn);
    if (ds == CUDNN_STATUS_SUCCESS) ds = cudnnSetStream(cu->cudnn, cu->compute);
    if (ds != CUDNN_STATUS_SUCCESS) {
        fdp_err_set(err, "CUDA device %d: cuDNN setup failed: %s (cuDNN library %zu, headers %d)", device,
                    cudnnGetErrorString(ds), cudnnGetVersion(), CUDNN_VERSION);
        goto fail;
    }

    cu->dev_result = fdp_cuda_raw_alloc(cu, 2 * sizeof(double), "reduction results");
    SETUP_TRY(cudaHostAlloc((void **)&cu->host_result, 2 * sizeof(double), cudaHostAllocPortable),
              "cudaHostAlloc(reduction results)");
    cu->conv = fdp_cuda_conv_create(cu);

    cuda_fill_table(be);
    fdp_debug("cuda backend: device %d %s (sm_%d%d, %d SMs), %s allocator, %s math, cuDNN %zu, sync debug %s", device,
              cu->device_name, cu->cc_major, cu->cc_minor, cu->sm_count,
              cu->async_pool ? "cudaMallocAsync pool" : "cudaMalloc", tf32 ? "TF32" : "FP32", cudnnGetVersion(),
              cu->sync_debug ? "on" : "off");
    return be;
fail:
    cuda_destroy(be);
    return NULL;
}
#undef SETUP_TRY

/* ---- the optional members of backend.h: pinned upload, arena allocator, memory statistics ---- */

/* These may be called from a loader thread: make the backend's GPU current there,
 * or the thread's first CUDA call would create a context on device 0. */
static void bind_device(fdp_cuda *cu) { FDP_CUDA_CHECK(cudaSetDevice(cu->device), "selecting the backend's GPU"); }

static void *cuda_pinned_alloc(fdp_backend *be, size_t bytes) {
    bind_device(fdp_cuda_impl(be));
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocPortable);
    if (e != cudaSuccess)
        FDP_FATAL("cudaHostAlloc of %zu MiB of pinned staging failed: %s; hint: pinned memory is limited "
                  "(ulimit -l, container limits); use smaller batches",
                  bytes >> 20, cudaGetErrorString(e));
    return p;
}

static void cuda_pinned_free(fdp_backend *be, void *p) {
    if (!p) return;
    bind_device(fdp_cuda_impl(be));
    FDP_CUDA_CHECK(cudaFreeHost(p), "freeing pinned staging");
}

static uint64_t cuda_upload_async(fdp_backend *be, void *dst, const void *pinned_src, size_t bytes) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (!bytes) return 0;
    bind_device(cu);
    FDP_CUDA_CHECK(cudaMemcpyAsync(dst, pinned_src, bytes, cudaMemcpyHostToDevice, cu->compute),
                   "an asynchronous upload");
    uint64_t t = ++cu->upload_seq;
    FDP_CUDA_CHECK(cudaEventRecord(cu->upload_ev[t % FDP_CUDA_UPLOAD_EVENTS], cu->compute), "recording an upload");
    FDP_CUDA_DEBUG_SYNC(cu, "upload_async");
    return t;
}

static void cuda_upload_wait(fdp_backend *be, uint64_t ticket) {
    if (!ticket) return;
    fdp_cuda *cu = fdp_cuda_impl(be);
    bind_device(cu);
    /* if the ring wrapped, the event now marks a LATER upload on the same stream:
     * waiting for it is still correct (stream order), only longer */
    FDP_CUDA_CHECK(cudaEventSynchronize(cu->upload_ev[ticket % FDP_CUDA_UPLOAD_EVENTS]), "waiting for an upload");
}

/* the arena's allocator (arena.h's fdp_alloc_fn, ctx = the backend): activations in device memory */
static void *cuda_arena_alloc(void *be, size_t bytes) {
    fdp_backend *b = be;
    return b->alloc(b, bytes);
}

static void cuda_arena_free(void *be, void *p) {
    fdp_backend *b = be;
    b->free(b, p);
}

static int cuda_memory_stats(fdp_backend *be, fdp_backend_mem_stats *s) {
    memset(s, 0, sizeof *s);
    fdp_cuda *cu = fdp_cuda_impl(be);
    s->backend_bytes = backend_live_bytes(cu);
    s->backend_peak = cu->backend_peak;
    s->scratch_bytes = cu->scratch_bytes + fdp_cuda_conv_workspace_bytes(cu->conv);
    s->async_pool = cu->async_pool;
    if (cu->async_pool) {
        uint64_t v = 0;
        if (cudaMemPoolGetAttribute(cu->pool, cudaMemPoolAttrUsedMemHigh, &v) == cudaSuccess) s->pool_used_high = v;
        if (cudaMemPoolGetAttribute(cu->pool, cudaMemPoolAttrReservedMemHigh, &v) == cudaSuccess)
            s->pool_reserved_high = v;
    }
    if (cudaMemGetInfo(&s->device_free, &s->device_total) != cudaSuccess) (void)cudaGetLastError();
    return 0;
}

static void cuda_reset_peak(fdp_backend *be) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    cu->backend_peak = backend_live_bytes(cu);
    if (cu->async_pool) {
        uint64_t zero = 0;
        (void)cudaMemPoolSetAttribute(cu->pool, cudaMemPoolAttrUsedMemHigh, &zero);
        (void)cudaMemPoolSetAttribute(cu->pool, cudaMemPoolAttrReservedMemHigh, &zero);
    }
}

#else /* ---- built without CUDA: stubs ------------------------------------------------------- */

static const char no_cuda[] = "built without CUDA (this flowdp was configured without the CUDA toolkit, cuDNN and "
                              "NCCL, or with -DFLOWDP_CUDA=OFF); use --device cpu or rebuild with CUDA";

fdp_backend *fdp_backend_cuda_create(int device, fdp_err *err) {
    (void)device;
    fdp_err_set(err, "%s", no_cuda);
    return NULL;
}

int fdp_cuda_device_count(fdp_err *err) {
    fdp_err_set(err, "%s", no_cuda);
    return -1;
}

int fdp_cuda_pick_device(int local_rank, int local_size, fdp_err *err) {
    (void)local_rank;
    (void)local_size;
    fdp_err_set(err, "%s", no_cuda);
    return -1;
}

int fdp_cuda_device_of(const fdp_backend *be) {
    (void)be;
    return -1;
}

#endif
