/* comm.h — the communicator: who am I (rank, size, local rank, host), the
 * blocking collectives over MPI, the agreement helpers that keep ranks in step
 * (any-rank flags, parameter-checksum comparison) and a watchdog that turns a
 * hang into an abort.
 *
 * One fdp_comm per process, created by fdp_comm_init() and reachable through
 * fdp_comm_world(); the global state there is besides it is listed in docs/ARCHITECTURE.md, invariant 10.
 *
 * Failure policy (docs/ARCHITECTURE.md, invariant 6, "no hang, no silent divergence"):
 *  - Every MPI call returns its error (MPI_ERRORS_RETURN is set on our
 *    communicators) and a failure becomes FDP_FATAL naming the call and
 *    MPI_Error_string's text.
 *  - fdp_comm_init installs the error.h abort hook: FDP_FATAL / FDP_CHECK on any
 *    rank print "flowdp: fatal [rank R] file:line: ..." and call
 *    MPI_Abort(MPI_COMM_WORLD, code), which ends every rank of the job.
 *  - A rank that dies without MPI_Abort (segfault, OOM kill, exit(1)) is caught
 *    by the launcher: Open MPI's mpiexec aborts the whole job when a rank
 *    terminates abnormally or exits non-zero (its default); under SLURM use
 *    `srun --kill-on-bad-exit=1` (the jobs/ scripts must pass it). Without that, survivors
 *    would wait forever inside their next collective.
 *  - A rank stuck in a collective because a peer is stuck (not dead) is caught
 *    by the watchdog (fdp_comm_watchdog_start): after timeout_s without
 *    progress inside a collective it prints
 *      "flowdp: rank 1: no progress for 60 s in <phase> (<collective>); aborting"
 *    and calls MPI_Abort.
 *  - Collectives must be issued in the same order on every rank. The blocking
 *    ones here go over one communicator; the gradient buckets (buckets.h) use a
 *    duplicate of it so that their non-blocking all-reduces never interleave
 *    with the blocking ones (synchronized BatchNorm runs during backward).
 *
 * Synchronized BatchNorm: set ctx->allreduce_f64 = fdp_comm_allreduce_f64_sum_hook
 * and ctx->comm = the fdp_comm (nn.h).
 *
 * Buffers are host memory (the CPU backend's memory). The CUDA path goes over
 * NCCL, not through these functions.
 */
#ifndef FLOWDP_COMM_H
#define FLOWDP_COMM_H
#include <mpi.h>
#include <stdint.h>

#include "flowdp/error.h"
#include "flowdp/xxh64.h" /* fdp_xxh64, what fdp_checksum_f32 calls */

typedef enum {
    FDP_REDUCE_SUM = 0,
    FDP_REDUCE_AVG = 1, /* sum / size; for int64: truncated toward zero */
    FDP_REDUCE_MAX = 2,
    FDP_REDUCE_MIN = 3,
} fdp_reduce_op;

typedef struct fdp_comm {
    /* who am I; read-only after fdp_comm_init */
    int rank, size;             /* in MPI_COMM_WORLD */
    int local_rank, local_size; /* among the ranks sharing this node (MPI_COMM_TYPE_SHARED) */
    char hostname[MPI_MAX_PROCESSOR_NAME];
    int thread_level;           /* MPI thread support provided (MPI_THREAD_*) */
    int owns_mpi;               /* 1: we called MPI_Init_thread, so finalize calls MPI_Finalize */

    MPI_Comm world;             /* duplicate of MPI_COMM_WORLD, MPI_ERRORS_RETURN */
    MPI_Comm node;              /* ranks of this node, MPI_ERRORS_RETURN */
    int64_t max_chunk;          /* most elements (bytes for broadcast/allgather) per MPI call: INT_MAX */

    struct fdp_watchdog *wd;    /* watchdog state (comm.c; atomics only, shared with its thread) */
} fdp_comm;

/* ---- life cycle ---------------------------------------------------------------- */

/* MPI_Init_thread(MPI_THREAD_FUNNELED) (only the main thread calls MPI; OpenMP
 * workers never do), or adopt an MPI that is already initialized. Works with
 * and without mpiexec (a singleton: size 1). Sets the log rank and the abort
 * hook. Returns 0, or -1 with err filled (already initialized, MPI failure). */
int fdp_comm_init(int *argc, char ***argv, fdp_comm **out, fdp_err *err);
/* Stop the watchdog, free the communicators, MPI_Finalize (when we
 * initialized MPI), remove the abort hook. Collective. NULL is a no-op. */
void fdp_comm_finalize(fdp_comm *c);
/* The communicator made by fdp_comm_init, or NULL before / after. */
fdp_comm *fdp_comm_world(void);

static inline int fdp_comm_rank(const fdp_comm *c) { return c->rank; }
static inline int fdp_comm_size(const fdp_comm *c) { return c->size; }
static inline int fdp_comm_local_rank(const fdp_comm *c) { return c->local_rank; }
static inline int fdp_comm_local_size(const fdp_comm *c) { return c->local_size; }
static inline const char *fdp_comm_hostname(const fdp_comm *c) { return c->hostname; }

/* ---- blocking collectives (all ranks, same order) --------------------------------
 * In place. Any count works: above c->max_chunk (INT_MAX) elements the call is
 * split into chunks. Under one rank they return at once (AVG is the identity). */
void fdp_comm_allreduce_f32(fdp_comm *c, float *buf, int64_t n, fdp_reduce_op op);
void fdp_comm_allreduce_f64(fdp_comm *c, double *buf, int64_t n, fdp_reduce_op op);
void fdp_comm_allreduce_i64(fdp_comm *c, int64_t *buf, int64_t n, fdp_reduce_op op);
void fdp_comm_broadcast(fdp_comm *c, void *buf, int64_t bytes, int root);
/* recv (size * bytes_each) receives rank r's send block at r * bytes_each. */
void fdp_comm_allgather(fdp_comm *c, const void *send, void *recv, int64_t bytes_each);
void fdp_comm_barrier(fdp_comm *c);

/* nn.h's fdp_allreduce_f64_fn: in-place SUM over ranks (synchronized BatchNorm).
 * comm is an fdp_comm*; NULL means fdp_comm_world() (no-op when there is none). */
void fdp_comm_allreduce_f64_sum_hook(void *comm, double *buf, int count);

/* ---- agreement ------------------------------------------------------------------- */

/* Logical OR of flag over ranks: "did any rank get SIGTERM / see a NaN?" */
int fdp_comm_any(fdp_comm *c, int flag);
/* Allgather value and compare. Returns 1 when every rank holds the same value.
 * Otherwise returns 0 and sets *first_bad_rank (if not NULL) to the lowest rank
 * whose value differs from the majority value (ties: rank 0's value counts as
 * the reference), so with 2 ranks and rank 1 differing it names rank 1. */
int fdp_comm_check_same_u64(fdp_comm *c, uint64_t value, int *first_bad_rank);
/* XXH64 (seed 0) of the n floats' bytes as they lie in memory: deterministic,
 * 14-18 GB/s on the 2-core dev VM (4 independent 64-bit lanes). Ranks of one job share a byte order, so
 * equal parameters give equal checksums everywhere. Host memory. */
uint64_t fdp_checksum_f32(const float *x, int64_t n);

/* ---- watchdog ----------------------------------------------------------------------
 * A thread that checks, every min(timeout/10, 1 s), whether this rank has been
 * inside a collective region for more than timeout_s since the last kick; if so
 * it prints one line naming the rank, the phase and the collective, and calls
 * MPI_Abort(MPI_COMM_WORLD, 1) (then _exit(1) should that return). The thread
 * touches only atomics, the clock, stderr and MPI_Abort. (MPI_Abort from a
 * non-main thread is outside MPI_THREAD_FUNNELED's letter; Open MPI and MPICH
 * implement it as a process-level kill of the job, which is what we want.)
 *
 * Every collective in comm.c and fdp_buckets_wait_all are regions (entering one
 * kicks). Outside regions the watchdog never fires, so long local work (a
 * checkpoint on rank 0) is never mistaken for a hang on rank 0 — but the OTHER
 * ranks then wait in their next collective: choose timeout_s longer than the
 * longest legitimate skew between ranks (checkpoint write, evaluation on rank 0),
 * e.g. 600 s for training. timeout_s <= 0 stops the watchdog. Calling start
 * again changes the timeout. */
void fdp_comm_watchdog_start(fdp_comm *c, double timeout_s);
/* "still making progress": resets the timer (e.g. between chunks of long work
 * inside a region). Cheap: one clock read and one atomic store. */
void fdp_comm_watchdog_kick(fdp_comm *c);
/* Label for the watchdog's message, e.g. "step 1200 backward". The string must
 * live as long as the comm (a literal): the thread reads the pointer only. */
void fdp_comm_set_phase(fdp_comm *c, const char *phase);
/* Region brackets used by the collectives (and buckets.c); may nest. op names
 * the collective (a literal). */
void fdp_comm_region_enter(fdp_comm *c, const char *op);
void fdp_comm_region_leave(fdp_comm *c);

/* ---- internals shared with buckets.c and the tests --------------------------------- */

/* FDP_FATAL for a failed MPI call: "MPI_Allreduce failed: <MPI_Error_string>". */
void fdp_mpi_fail_at(const char *file, int line, const char *call, int code) __attribute__((noreturn));
#define FDP_MPI_CHECK(call)                                                      \
    do {                                                                         \
        int fdp_mpi_rc_ = (call);                                                \
        if (fdp_mpi_rc_ != MPI_SUCCESS) fdp_mpi_fail_at(__FILE__, __LINE__, #call, fdp_mpi_rc_); \
    } while (0)
/* TEST ONLY: lower the per-call chunk (elements, or bytes for broadcast and
 * allgather) so that the >INT_MAX splitting is exercised with small buffers.
 * n <= 0 restores INT_MAX. Must be the same on every rank. */
void fdp_comm_set_max_chunk_for_test(fdp_comm *c, int64_t n);

#endif
