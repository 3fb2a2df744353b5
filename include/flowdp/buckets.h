/* buckets.h — gradient buckets: the flat gradient buffer (params.h) cut into
 * contiguous pieces that are all-reduced (MPI_Iallreduce, SUM, in place) while
 * backward is still running, then averaged.
 *
 * Layout. Buckets are built from the parameter entries (FDP_PARAM, numel > 0;
 * buffers are not gradients) in REVERSE table order, because backward produces
 * the last parameters' gradients first: bucket 0 holds the last entries. An
 * entry is never split; a bucket is closed as soon as it reaches bucket_mb MiB,
 * so every bucket but the last is >= bucket_mb (one huge entry is a bucket of
 * its own). Bucket k covers grads[offset, offset + count); together the buckets
 * cover [0, n_params) exactly once.
 *
 * One step:
 *     fdp_buckets_begin_step(b);
 *     backward ... fdp_buckets_mark_ready(b, entry) when an entry's gradient is
 *                  final; fdp_buckets_progress(b) between layers
 *     fdp_buckets_wait_all(b, 1.0f / world);   grads now hold the global mean
 *
 * Order (MPI requires non-blocking collectives on one communicator to be
 * started in the same order on every rank): buckets are started strictly in
 * bucket-index order. A bucket whose entries are all ready starts at once if
 * every lower-index bucket has started; otherwise it is deferred and starts
 * right after the last missing one. wait_all starts whatever is left (also
 * buckets with entries never marked ready) in index order too. So the sequence
 * of MPI_Iallreduce calls is identical on every rank whatever the model does.
 * The buckets use their own duplicate of the communicator, so the blocking
 * collectives of synchronized BatchNorm during backward cannot interleave with
 * them.
 *
 * Progress: with MPI on CPU (Open MPI's default, no progress thread), a started
 * MPI_Iallreduce advances only while the process is inside some MPI call.
 * Starting a bucket (MPI_Iallreduce) itself progresses earlier ones;
 * fdp_buckets_progress (MPI_Testall on the started requests) lets the model
 * drive progress between layers, so that most of the reduction is done when
 * wait_all is reached. Without progress calls the result is the same, only
 * the overlap is lost.
 *
 * With one rank, everything but the scaling in wait_all is bookkeeping only.
 * Memory: p->grads is host memory for the CPU backend (MPI_Iallreduce).
 * With the CUDA backend p->grads is device memory: call fdp_buckets_use_nccl
 * once after creation, and the buckets go through NCCL on the backend's
 * communication stream instead (nccl.h: fdp_nccl_bucket_start for a ready
 * bucket, fdp_nccl_query for progress, the not-yet-started buckets fused in one
 * NCCL group and fdp_nccl_bucket_finish, which joins and scales on the compute
 * stream, for wait_all) — the same bucket order, no host synchronization.
 */
#ifndef FLOWDP_BUCKETS_H
#define FLOWDP_BUCKETS_H
#include <stdint.h>

#include "flowdp/comm.h"
#include "flowdp/params.h"

typedef struct fdp_bucket {
    int64_t offset, count;      /* floats: grads[offset, offset + count) */
    int first_entry, last_entry; /* table indices covered (first <= last; buffers in between are skipped) */
    int n_entries;              /* FDP_PARAM entries with numel > 0 in it */
    int n_ready;                /* of them, marked ready this step */
    int req_first, n_req;       /* its requests in fdp_buckets.reqs (more than one above max_chunk floats) */
    int started;                /* MPI_Iallreduce issued this step */
} fdp_bucket;

struct fdp_nccl;
typedef struct fdp_buckets {
    fdp_comm *comm;
    struct fdp_nccl *nccl;      /* NULL: MPI on host gradients; else NCCL on device gradients */
    const fdp_params *params;
    MPI_Comm mpi;               /* duplicate of comm->world (MPI_COMM_NULL with one rank) */
    int n_buckets;
    fdp_bucket *buckets;        /* (n_buckets) */
    int *entry_bucket;          /* (params->count) bucket of each entry, -1 for buffers / empty */
    unsigned char *entry_ready; /* (params->count) marked ready this step */
    int64_t chunk;              /* most floats per MPI_Iallreduce (comm->max_chunk at creation) */
    int n_reqs;
    MPI_Request *reqs;          /* (n_reqs) */
    MPI_Status *statuses;       /* (n_reqs) filled by wait_all (to name a failed bucket) */
    int next_to_start;          /* buckets [0, next_to_start) have started this step */
    int in_step;                /* between begin_step and wait_all */
    double last_wait_s;         /* seconds inside the last wait_all */
} fdp_buckets;

/* Collective (duplicates the communicator). bucket_mb > 0 (PyTorch's default 25). */
fdp_buckets *fdp_buckets_create(fdp_comm *c, const fdp_params *p, double bucket_mb);
void fdp_buckets_destroy(fdp_buckets *b);
/* Device gradients (CUDA backend): reduce through nc instead of MPI. NULL: back to MPI.
 * Only between steps. */
void fdp_buckets_use_nccl(fdp_buckets *b, struct fdp_nccl *nc);
/* Reset the ready flags. Fatal if the previous step's wait_all is missing. */
void fdp_buckets_begin_step(fdp_buckets *b);
/* entry_index's gradient is final; starts its bucket (and deferred later ones)
 * when complete and in turn. No-op for buffers and empty entries. Fatal when
 * the entry is marked twice in one step. */
void fdp_buckets_mark_ready(fdp_buckets *b, int entry_index);
/* Drive started reductions (MPI_Testall). Returns 1 when all started ones are done. */
int fdp_buckets_progress(fdp_buckets *b);
/* Start the buckets not yet started (index order), wait for all, then grads *= scale
 * (skipped when scale == 1). Ends the step. Records the time spent (last_wait_s). */
void fdp_buckets_wait_all(fdp_buckets *b, float scale);
static inline double fdp_buckets_last_wait_s(const fdp_buckets *b) { return b->last_wait_s; }
static inline int fdp_buckets_count(const fdp_buckets *b) { return b->n_buckets; }
static inline const fdp_bucket *fdp_buckets_get(const fdp_buckets *b, int k) { return &b->buckets[k]; }

#endif
