/* nccl.h — the device communicator of the CUDA backend: NCCL collectives on
 * device buffers, issued on the backend's communication stream and ordered
 * against its compute stream with events (no host waits), the synchronized
 * BatchNorm hook, the gradient-bucket entry points, timing for the benchmark,
 * and an asynchronous-error / hang watchdog.
 *
 * Setup (collective over the MPI communicator):
 *   fdp_backend *be = fdp_backend_create("cuda", 0, &err);  // local rank -> GPU
 *   fdp_nccl *nc;
 *   if (fdp_nccl_create(comm, be, &nc, &err) != 0) { ...every rank gets -1... }
 *   fdp_nccl_watchdog_start(nc, 600.0);
 * fdp_nccl_create checks that no two ranks of a node drive the same GPU (PCI bus
 * id), rank 0 makes an ncclUniqueId, fdp_comm_broadcast sends it, every rank
 * calls ncclCommInitRank on its backend's device. With one rank no NCCL
 * communicator is made and the collectives are identities.
 *
 * Ordering. A collective waits (on the device) for all compute work issued
 * before it, runs on the communication stream, and is NOT awaited by later
 * compute work until fdp_nccl_join (or the hook / broadcast, which join
 * themselves). All ranks must issue the collectives in the same order (one NCCL
 * communicator, one stream, like the MPI rule) — the gradient buckets start in
 * index order and synchronized BatchNorm calls come in program order, so their
 * interleaving is the same on every rank.
 *
 * Failure policy (docs/ARCHITECTURE.md, invariant 6). A failed NCCL call, an asynchronous
 * NCCL error (ncclCommGetAsyncError, polled by the watchdog thread and before
 * each collective), or a communication stream that makes no progress for the
 * watchdog timeout: ncclCommAbort, then FDP_FATAL naming the rank, host and GPU,
 * which MPI_Aborts the job. NCCL's own variables (NCCL_DEBUG=WARN|INFO,
 * NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...) are left to the user.
 *
 * Built without CUDA, fdp_nccl_create returns -1 with "built without CUDA" and
 * the other functions must not be reached (they are fatal), except the hook and
 * fdp_nccl_destroy, which accept NULL. */
#ifndef FLOWDP_NCCL_H
#define FLOWDP_NCCL_H
#include <stdint.h>

#include "flowdp/backend.h"
#include "flowdp/comm.h"
#include "flowdp/error.h"

typedef struct fdp_nccl fdp_nccl;

/* Collective. be must be a CUDA backend on every rank. Returns 0, or -1 with err
 * filled on EVERY rank (not CUDA somewhere, two ranks on one GPU, ncclGetUniqueId
 * failed). A failing ncclCommInitRank is fatal (a half-made communicator would hang). */
int fdp_nccl_create(fdp_comm *c, fdp_backend *be, fdp_nccl **out, fdp_err *err);
/* Collective: waits for the communication stream, ncclCommFinalize, ncclCommDestroy. NULL: no-op. */
void fdp_nccl_destroy(fdp_nccl *nc);
/* Collective: 0 when the ranks of each node use distinct GPUs, else -1 and err
 * ("ranks 0 and 1 on host h both use GPU 0000:3b:00.0 ...") on every rank. */
int fdp_nccl_check_gpus(fdp_comm *c, fdp_backend *be, fdp_err *err);

int fdp_nccl_rank(const fdp_nccl *nc);
int fdp_nccl_size(const fdp_nccl *nc);

/* ---- collectives on device memory (asynchronous; see "Ordering") ------------------------ */
/* in place; n elements; SUM, AVG (ncclAvg), MAX, MIN */
void fdp_nccl_allreduce_f32(fdp_nccl *nc, float *buf, int64_t n, fdp_reduce_op op);
void fdp_nccl_allreduce_f64(fdp_nccl *nc, double *buf, int64_t n, fdp_reduce_op op);
/* bytes from root's buf to everyone's; joins (later compute work sees the data) */
void fdp_nccl_broadcast(fdp_nccl *nc, void *buf, int64_t bytes, int root);
/* later compute work waits (on the device) for every collective issued so far */
void fdp_nccl_join(fdp_nccl *nc);
/* 1 when every collective issued so far has completed (non-blocking) */
int fdp_nccl_query(fdp_nccl *nc);
/* the host waits for every collective issued so far, polling for asynchronous
 * errors (a region of the MPI watchdog too) */
void fdp_nccl_synchronize(fdp_nccl *nc);

/* nn.h's fdp_allreduce_f64_fn for synchronized BatchNorm on device buffers:
 * ctx->allreduce_f64 = fdp_nccl_allreduce_f64_sum_hook; ctx->comm = nc.
 * In-place SUM, then join. NULL comm: no-op. */
void fdp_nccl_allreduce_f64_sum_hook(void *nccl, double *buf, int count);

/* Collectives issued between these two are fused into one NCCL launch
 * (ncclGroupStart/End), e.g. the buckets wait_all starts together. No join,
 * broadcast or hook inside; no nesting. No-ops with one rank. */
void fdp_nccl_group_begin(fdp_nccl *nc);
void fdp_nccl_group_end(fdp_nccl *nc);

/* ---- gradient buckets (what src/dist/buckets.c calls when the backend is CUDA) ------------
 * start_bucket:   fdp_nccl_bucket_start(nc, grads + offset, count)   instead of MPI_Iallreduce
 * progress:       fdp_nccl_query(nc)                                 instead of MPI_Testall
 * wait_all:       [fdp_nccl_group_begin; the buckets not yet started; fdp_nccl_group_end]
 *                 fdp_nccl_bucket_finish(nc, grads, n_params, scale) instead of MPI_Waitall + the
 *                 host loop: joins, then grads *= scale on the compute stream (skipped for 1) */
void fdp_nccl_bucket_start(fdp_nccl *nc, float *dev_grads, int64_t count);
void fdp_nccl_bucket_finish(fdp_nccl *nc, float *dev_grads, int64_t n, float scale);

/* ---- watchdog ---------------------------------------------------------------------------
 * A thread polling every 100 ms: ncclCommGetAsyncError, and whether the
 * communication stream has made progress. No progress for timeout_s while
 * collectives are pending (a dead or stuck peer), or an asynchronous error:
 * ncclCommAbort and FDP_FATAL naming the rank. Choose timeout_s longer than the
 * longest legitimate skew between ranks (checkpoint writes), e.g. 600 s.
 * timeout_s <= 0 stops it. No-op with one rank. */
void fdp_nccl_watchdog_start(fdp_nccl *nc, double timeout_s);

/* ---- timing (flowdp-bench) ---------------------------------------------------------------
 * With timing on, every collective is bracketed by CUDA events on the
 * communication stream. fdp_nccl_take_busy_ms waits for them and returns the sum
 * of the collectives' durations (ms) since the last call, and how many there were. */
void fdp_nccl_set_timing(fdp_nccl *nc, int on);
double fdp_nccl_take_busy_ms(fdp_nccl *nc, int *count);

#endif
