/* cuda.h — the CUDA backend's extras beyond backend.h: creating it on a given
 * device, pinned host staging for data batches, an arena allocator that goes
 * through any backend, and device-memory statistics.
 *
 * Everything here links in every build. Built without CUDA (FLOWDP_HAVE_CUDA
 * undefined), fdp_backend_cuda_create returns NULL with "built without CUDA",
 * and the staging / arena helpers fall back to host memory for the CPU backend,
 * so callers need no #ifdef.
 *
 * Streams of the CUDA backend. Every backend call is enqueued on ONE compute
 * stream (non-blocking w.r.t. the legacy default stream), so calls are ordered
 * exactly as issued; only to_host, synchronize, sum_squares and has_nonfinite
 * wait on the host. A second, higher-priority stream carries NCCL collectives
 * (nccl.h); the two are ordered with events, never with host waits.
 *
 * Uploading data batches (what the trainer should do):
 *   be->from_host(be, dst, src, bytes) is safe for any host memory: for up to
 *   FDP_CUDA_STAGING_MAX bytes it copies src into one of a few pinned staging
 *   slots (a host memcpy) and enqueues an asynchronous copy from there, so it
 *   returns without waiting for the GPU and src may be reused at once; larger
 *   copies wait for the compute stream (setup-time loads).
 *   To skip even the host memcpy, let the loader write straight into pinned
 *   memory and upload it asynchronously, double-buffered:
 *       float *hx[2] = {fdp_pinned_alloc(be, bytes), fdp_pinned_alloc(be, bytes)};
 *       uint64_t ticket[2] = {0, 0};
 *       step k:  int s = k & 1;
 *                fdp_upload_wait(be, ticket[s]);     // step k-2's copy has read hx[s]
 *                loader fills hx[s] (gather + augment);
 *                ticket[s] = fdp_upload_async(be, x, hx[s], bytes);
 *                ... forward / backward enqueue behind the copy ...
 *   The copy is ordered on the compute stream, so writing x while the previous
 *   step still reads it cannot happen; the host never waits for the GPU here.
 *
 * Threads: one thread drives a backend (its calls are not thread-safe, like the
 * CPU backend's oneDNN cache). fdp_pinned_alloc/free and fdp_upload_async/wait
 * may also be called from a loader thread (they make the backend's GPU current
 * there), as long as calls on one backend do not overlap.
 */
#ifndef FLOWDP_CUDA_H
#define FLOWDP_CUDA_H
#include <stddef.h>
#include <stdint.h>

#include "flowdp/backend.h"
#include "flowdp/error.h"

/* from_host copies up to this many bytes through pinned staging slots */
#define FDP_CUDA_STAGING_MAX ((size_t)64 << 20)

/* The CUDA backend on `device` (0-based CUDA ordinal after CUDA_VISIBLE_DEVICES),
 * or device < 0: the device of this rank, local rank modulo the number of visible
 * devices (fdp_comm_world(); device 0 without a communicator). Returns NULL and
 * fills err: "built without CUDA", "no CUDA device visible: <cudaGetErrorString>",
 * a device index out of range, or a node with fewer GPUs than ranks on it. */
fdp_backend *fdp_backend_cuda_create(int device, fdp_err *err);

/* Visible CUDA devices (cudaGetDeviceCount), or -1 with err filled ("built without
 * CUDA", "no CUDA device visible: ..."). Never fatal: the tests use it to skip. */
int fdp_cuda_device_count(fdp_err *err);
/* The device of this rank: local_rank % count, with one-line errors when the node
 * has more ranks than visible GPUs (and every rank sees more than one, i.e. no
 * per-rank CUDA_VISIBLE_DEVICES binding). Returns the ordinal or -1 with err. */
int fdp_cuda_pick_device(int local_rank, int local_size, fdp_err *err);
/* the CUDA ordinal of a CUDA backend, -1 for other backends */
int fdp_cuda_device_of(const fdp_backend *be);

/* ---- pinned staging (any backend: host memory for the CPU backend) ------------------- */
/* cudaHostAlloc(portable) for CUDA, 64-byte aligned host memory otherwise; fatal on failure */
void *fdp_pinned_alloc(fdp_backend *be, size_t bytes);
void fdp_pinned_free(fdp_backend *be, void *p);
/* dst (backend memory) <- pinned src, enqueued on the compute stream; returns at
 * once with a ticket. src must stay untouched until fdp_upload_wait(be, ticket).
 * CPU backend: a memcpy, ticket 0. */
uint64_t fdp_upload_async(fdp_backend *be, void *dst, const void *pinned_src, size_t bytes);
/* the host waits until the upload with this ticket has read its source (0: no-op) */
void fdp_upload_wait(fdp_backend *be, uint64_t ticket);

/* ---- arena allocator through any backend --------------------------------------------
 * fdp_arena_create(bytes, fdp_backend_arena_alloc, fdp_backend_arena_free, be, be->dev)
 * puts the activations in the backend's memory (device memory for CUDA). */
void *fdp_backend_arena_alloc(void *be, size_t bytes);
void fdp_backend_arena_free(void *be, void *p);

/* ---- device memory statistics (flowdp-bench) ----------------------------------------- */
typedef struct fdp_cuda_mem_stats {
    size_t backend_bytes;       /* live be->alloc bytes now */
    size_t backend_peak;        /* most live be->alloc bytes since creation / the last reset */
    size_t pool_used_high;      /* cudaMallocAsync pool high-water mark of used bytes (0: cudaMalloc mode) */
    size_t pool_reserved_high;  /* its high-water mark of reserved bytes */
    size_t scratch_bytes;       /* cuDNN workspace + reduction scratch + staging slots held */
    size_t device_free, device_total; /* cudaMemGetInfo now (all processes, cuDNN/cuBLAS/NCCL included) */
    int async_pool;             /* 1: memory comes from cudaMallocAsync's pool */
} fdp_cuda_mem_stats;
/* Returns 0, or -1 for a backend that is not CUDA. */
int fdp_cuda_memory_stats(fdp_backend *be, fdp_cuda_mem_stats *s);
/* restart the high-water marks (backend_peak and the pool's) */
void fdp_cuda_reset_peak(fdp_backend *be);

#endif
