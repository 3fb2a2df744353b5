/* cuda_device.c — the lowest layer of the CUDA backend, shared by cuda_backend.c,
 * cuda_conv.c and src/dist/nccl_comm.c (declared in cuda_internal.h): fatal CUDA
 * errors and the FLOWDP_CUDA_SYNC check, device memory (the backend's buffers and
 * its own scratch, with the out-of-memory report), and the event ordering of the
 * compute and communication streams. It calls nothing of the other backend files,
 * so cuda_backend.c -> cuda_conv.c -> cuda_device.c has no cycle.
 *
 * Built without CUDA this file is empty. */
#ifdef FLOWDP_HAVE_CUDA
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "flowdp/error.h"

/* ---- errors --------------------------------------------------------------------------------- */

void fdp_cuda_fail_at(const char *file, int line, const char *call, cudaError_t e, const char *what) {
    const char *hint;
    switch (e) {
    case cudaErrorMemoryAllocation: hint = "out of device memory; reduce the batch size"; break;
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
        hint = "a kernel faulted (possibly an earlier one: errors are reported late); rerun with FLOWDP_CUDA_SYNC=1 or "
               "under compute-sanitizer to find it";
        break;
    case cudaErrorNoKernelImageForDevice:
        hint = "this GPU's architecture is not in the build; reconfigure with CMAKE_CUDA_ARCHITECTURES including it";
        break;
    default: hint = "rerun with FLOWDP_CUDA_SYNC=1 to locate the failing call"; break;
    }
    int name_len = (int)strcspn(call, "(");
    fdp_fatal_at(file, line, "CUDA %.*s failed while %s: %s (%s); hint: %s", name_len, call, what,
                 cudaGetErrorString(e), cudaGetErrorName(e), hint);
}

void fdp_cuda_debug_sync_at(fdp_cuda *cu, const char *file, int line, const char *what) {
    cudaError_t e = cudaStreamSynchronize(cu->compute);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) fdp_cuda_fail_at(file, line, "cudaStreamSynchronize (FLOWDP_CUDA_SYNC)", e, what);
}

/* ---- device memory ----------------------------------------------------------------------- */

static void oom(fdp_cuda *cu, size_t bytes, const char *what, cudaError_t e) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    FDP_FATAL("cuda backend: cannot allocate %.1f MiB for %s on GPU %d (%s): %s; %.0f MiB free of %.0f MiB, flowdp "
              "holds %.0f MiB (+%.0f MiB workspace/scratch); hint: reduce the batch size",
              (double)bytes / 1048576.0, what, cu->device, cu->device_name, cudaGetErrorString(e),
              (double)fr / 1048576.0, (double)tot / 1048576.0, (double)cu->allocs.bytes / 1048576.0,
              (double)cu->scratch_bytes / 1048576.0);
}

void *fdp_cuda_device_alloc(fdp_cuda *cu, size_t bytes, const char *what) {
    void *p = NULL;
    if (bytes == 0) bytes = 256;
    bytes = (bytes + 255) & ~(size_t)255;
    cudaError_t e = cu->async_pool ? cudaMallocAsync(&p, bytes, cu->compute) : cudaMalloc(&p, bytes);
    if (e != cudaSuccess && cu->async_pool) {
        /* the pool keeps freed memory; give it back to the device and try once more */
        (void)cudaGetLastError();
        FDP_CUDA_CHECK(cudaStreamSynchronize(cu->compute), "synchronizing before trimming the memory pool");
        FDP_CUDA_CHECK(cudaMemPoolTrimTo(cu->pool, 0), "trimming the memory pool");
        e = cudaMallocAsync(&p, bytes, cu->compute);
    }
    if (e != cudaSuccess || !p) oom(cu, bytes, what, e);
    FDP_CHECK(((uintptr_t)p & 63) == 0, "cuda backend: device allocation %p not 64-byte aligned", p);
    return p;
}

void fdp_cuda_device_free(fdp_cuda *cu, void *p) {
    if (!p) return;
    if (cu->async_pool) {
        /* the comm stream may still read it (gradients, BatchNorm sums): order the free after it */
        fdp_cuda_compute_after_comm(cu);
        FDP_CUDA_CHECK(cudaFreeAsync(p, cu->compute), "freeing device memory");
    } else {
        FDP_CUDA_CHECK(cudaFree(p), "freeing device memory");
    }
}

void *fdp_cuda_raw_alloc(fdp_cuda *cu, size_t bytes, const char *what) {
    void *p = fdp_cuda_device_alloc(cu, bytes, what);
    cu->scratch_bytes += (bytes + 255) & ~(size_t)255;
    return p;
}

void fdp_cuda_raw_free(fdp_cuda *cu, void *p, size_t bytes) {
    if (!p) return;
    fdp_cuda_device_free(cu, p);
    size_t b = (bytes + 255) & ~(size_t)255;
    cu->scratch_bytes = cu->scratch_bytes >= b ? cu->scratch_bytes - b : 0;
}

double *fdp_cuda_ensure_doubles(fdp_cuda *cu, double **buf, size_t *cap, size_t n, const char *what) {
    if (n > *cap) {
        size_t want = n < 1024 ? 1024 : n + n / 4;
        fdp_cuda_raw_free(cu, *buf, *cap * sizeof(double));
        *buf = fdp_cuda_raw_alloc(cu, want * sizeof(double), what);
        *cap = want;
    }
    return *buf;
}

/* ---- stream ordering (device-side waits, no host blocking) ------------------------------- */

void fdp_cuda_comm_after_compute(fdp_cuda *cu) {
    FDP_CUDA_CHECK(cudaEventRecord(cu->ev_compute, cu->compute), "recording the compute event");
    FDP_CUDA_CHECK(cudaStreamWaitEvent(cu->comm, cu->ev_compute, 0), "ordering comm after compute");
}

void fdp_cuda_compute_after_comm(fdp_cuda *cu) {
    FDP_CUDA_CHECK(cudaEventRecord(cu->ev_comm, cu->comm), "recording the comm event");
    FDP_CUDA_CHECK(cudaStreamWaitEvent(cu->compute, cu->ev_comm, 0), "ordering compute after comm");
}

#else
typedef int fdp_cuda_device_built_without_cuda; /* (ISO C: no empty translation unit) */
#endif
