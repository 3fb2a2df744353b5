/* cuda.h — the CUDA backend's extras beyond backend.h: creating it on a given
 * device, and how it learns this rank's place on its node. Pinned staging,
 * asynchronous upload, the arena allocator and memory statistics are optional
 * members of the backend table (backend.h), not functions here.
 *
 * Everything here links in every build. Built without CUDA (FLOWDP_HAVE_CUDA
 * undefined), fdp_backend_cuda_create returns NULL with "built without CUDA",
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
 *   memory and upload it asynchronously, double-buffered (the backend.h helpers
 *   call the optional members, or do what the CPU backend does without them):
 *       float *hx[2] = {fdp_backend_pinned_alloc(be, bytes), fdp_backend_pinned_alloc(be, bytes)};
 *       uint64_t ticket[2] = {0, 0};
 *       step k:  int s = k & 1;
 *                fdp_backend_upload_wait(be, ticket[s]);     // step k-2's copy has read hx[s]
 *                loader fills hx[s] (gather + augment);
 *                ticket[s] = fdp_backend_upload_async(be, x, hx[s], bytes);
 *                ... forward / backward enqueue behind the copy ...
 *   The copy is ordered on the compute stream, so writing x while the previous
 *   step still reads it cannot happen; the host never waits for the GPU here.
 *
 * Threads: one thread drives a backend (its calls are not thread-safe, like the
 * CPU backend's oneDNN cache). pinned_alloc/free and upload_async/wait may also
 * be called from a loader thread (they make the backend's GPU current there), as
 * long as calls on one backend do not overlap.
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
 * devices (as registered with fdp_cuda_set_node_rank_source by the communicator;
 * device 0 without one). Returns NULL and
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

/* Where fdp_backend_cuda_create(-1) finds this process's place among the ranks of
 * its node: fn fills local_rank and local_size and returns 0, or returns -1 when
 * there is no communicator. src/dist/comm.c registers one while the world
 * communicator exists (and NULL at its finalize); with none registered, device 0.
 * A function pointer, so that the backend never calls into dist. */
typedef int (*fdp_cuda_node_rank_fn)(int *local_rank, int *local_size);
void fdp_cuda_set_node_rank_source(fdp_cuda_node_rank_fn fn);

#endif
