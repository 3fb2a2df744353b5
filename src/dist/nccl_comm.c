/* nccl_comm.c — the device communicator (flowdp/nccl.h): an NCCL communicator
 * made from an ncclUniqueId broadcast over MPI, all-reduce / broadcast of device
 * buffers on the CUDA backend's communication stream (ordered against compute
 * with events), the synchronized-BatchNorm hook, the gradient-bucket entry
 * points, event timing, and the watchdog thread that turns an asynchronous NCCL
 * error or a hang into ncclCommAbort + FDP_FATAL naming the rank.
 * Built without CUDA: stubs (create says "built without CUDA"). */
#include "flowdp/nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/cuda.h"
#include "flowdp/error.h"
#include "flowdp/log.h"

#ifdef FLOWDP_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "backend/cuda/cuda_internal.h"

struct fdp_nccl {
    fdp_comm *c;
    fdp_backend *be;
    fdp_cuda *cu;
    ncclComm_t comm;              /* NULL with one rank */
    int rank, size, device;
    char host[MPI_MAX_PROCESSOR_NAME];

    cudaEvent_t done_ev;          /* recorded on the comm stream after every collective */
    atomic_ullong issued;         /* collectives issued (recorded) so far */
    atomic_int failing;           /* someone is already aborting */

    /* watchdog thread */
    pthread_t thread;
    int running;
    atomic_int stop;
    atomic_llong timeout_ns;

    int group_depth;              /* inside fdp_nccl_group_begin/end */

    /* timing */
    int timing;
    cudaEvent_t *t_start, *t_end; /* (t_cap) */
    int t_n, t_cap;
};

static long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* abort the communicator and the job, naming this rank */
static void nccl_fail_at(fdp_nccl *nc, const char *file, int line, const char *what, ncclResult_t r) {
    if (atomic_exchange(&nc->failing, 1)) {
        /* another thread is already on it: let it finish the job */
        for (;;) {
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
    }
    const char *last = nc->comm ? ncclGetLastError(nc->comm) : NULL;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", last && *last ? last : "(no further detail)");
    if (nc->comm) {
        /* say it before ncclCommAbort, in case that blocks in a broken state */
        fprintf(stderr, "%s [rank %d]: error: NCCL %s (%s); aborting the NCCL communicator\n", fdp_log_prog(), nc->rank, what,
                r == ncclSuccess ? "timed out" : ncclGetErrorString(r));
        fflush(stderr);
        (void)ncclCommAbort(nc->comm); /* ends the uncompleted collectives */
    }
    fdp_fatal_at(file, line,
                 "NCCL %s on rank %d of %d (host %s, GPU %d): %s; %s; hint: rerun with NCCL_DEBUG=WARN (or INFO) "
                 "for NCCL's view; check the other ranks' messages and the network settings (NCCL_SOCKET_IFNAME, "
                 "NCCL_IB_HCA)",
                 what, nc->rank, nc->size, nc->host, nc->device,
                 r == ncclSuccess ? "timed out" : ncclGetErrorString(r), detail);
}
#define NCCL_TRY(nc, call, what)                                                         \
    do {                                                                                 \
        ncclResult_t r_ = (call);                                                        \
        if (r_ != ncclSuccess) nccl_fail_at((nc), __FILE__, __LINE__, (what), r_);       \
    } while (0)

static void check_async(fdp_nccl *nc, const char *file, int line) {
    if (!nc->comm) return;
    ncclResult_t st = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(nc->comm, &st);
    if (r != ncclSuccess) nccl_fail_at(nc, file, line, "ncclCommGetAsyncError failed", r);
    if (st != ncclSuccess && st != ncclInProgress) nccl_fail_at(nc, file, line, "asynchronous error", st);
}

static ncclRedOp_t nccl_op(fdp_reduce_op op) {
    switch (op) {
    case FDP_REDUCE_SUM: return ncclSum;
    case FDP_REDUCE_AVG: return ncclAvg;
    case FDP_REDUCE_MAX: return ncclMax;
    case FDP_REDUCE_MIN: return ncclMin;
    }
    FDP_FATAL("nccl: unknown reduction %d", (int)op);
}

/* ---- setup ---------------------------------------------------------------------------------- */

typedef struct gpu_id {
    char host[MPI_MAX_PROCESSOR_NAME];
    char bus[32]; /* PCI bus id, "0000:3b:00.0" */
    int device;
} gpu_id;

int fdp_nccl_check_gpus(fdp_comm *c, fdp_backend *be, fdp_err *err) {
    gpu_id mine;
    memset(&mine, 0, sizeof mine);
    snprintf(mine.host, sizeof mine.host, "%s", fdp_comm_hostname(c));
    mine.device = fdp_cuda_device_of(be);
    if (mine.device >= 0 && cudaDeviceGetPCIBusId(mine.bus, (int)sizeof mine.bus, mine.device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(mine.bus, sizeof mine.bus, "device-%d", mine.device);
    }
    int n = fdp_comm_size(c);
    gpu_id *all = fdp_xcalloc((size_t)n, sizeof *all);
    fdp_comm_allgather(c, &mine, all, sizeof mine);
    int rc = 0;
    for (int a = 0; a < n && rc == 0; a++) {
        if (all[a].device < 0) {
            fdp_err_set(err, "nccl: rank %d (host %s) has no CUDA backend; every rank needs --device cuda", a,
                        all[a].host);
            rc = -1;
        }
        for (int b = a + 1; b < n && rc == 0; b++)
            if (strcmp(all[a].host, all[b].host) == 0 && strcmp(all[a].bus, all[b].bus) == 0) {
                fdp_err_set(err,
                            "ranks %d and %d on host %s both drive GPU %s (CUDA device %d): the node has fewer GPUs "
                            "than ranks; start at most one rank per GPU (srun --ntasks-per-node=<GPUs per node> "
                            "--gpus-per-task=1, or mpiexec --map-by ppr:<GPUs>:node)",
                            a, b, all[a].host, all[a].bus, all[a].device);
                rc = -1;
            }
    }
    free(all);
    return rc;
}

int fdp_nccl_create(fdp_comm *c, fdp_backend *be, fdp_nccl **out, fdp_err *err) {
    *out = NULL;
    if (fdp_nccl_check_gpus(c, be, err) != 0) return -1;
    fdp_nccl *nc = fdp_xcalloc(1, sizeof *nc);
    nc->c = c;
    nc->be = be;
    nc->cu = fdp_cuda_impl(be);
    nc->rank = fdp_comm_rank(c);
    nc->size = fdp_comm_size(c);
    nc->device = nc->cu->device;
    snprintf(nc->host, sizeof nc->host, "%s", fdp_comm_hostname(c));
    FDP_CUDA_CHECK(cudaSetDevice(nc->device), "selecting the rank's GPU for NCCL");
    FDP_CUDA_CHECK(cudaEventCreateWithFlags(&nc->done_ev, cudaEventDisableTiming), "creating the NCCL done event");
    if (nc->size > 1) {
        struct {
            int ok;
            char msg[256];
            ncclUniqueId id;
        } pkt;
        memset(&pkt, 0, sizeof pkt);
        if (nc->rank == 0) {
            ncclResult_t r = ncclGetUniqueId(&pkt.id);
            pkt.ok = r == ncclSuccess;
            if (!pkt.ok) snprintf(pkt.msg, sizeof pkt.msg, "%s", ncclGetErrorString(r));
        }
        fdp_comm_broadcast(c, &pkt, (int64_t)sizeof pkt, 0);
        if (!pkt.ok) {
            fdp_err_set(err, "nccl: ncclGetUniqueId failed on rank 0 (host %s): %s; hint: NCCL_DEBUG=WARN",
                        nc->rank == 0 ? nc->host : "of rank 0", pkt.msg);
            (void)cudaEventDestroy(nc->done_ev);
            free(nc);
            return -1;
        }
        fdp_comm_region_enter(c, "ncclCommInitRank");
        ncclResult_t r = ncclCommInitRank(&nc->comm, nc->size, pkt.id, nc->rank);
        fdp_comm_region_leave(c);
        if (r != ncclSuccess) {
            nc->comm = NULL;
            nccl_fail_at(nc, __FILE__, __LINE__, "ncclCommInitRank failed", r);
        }
        int ver = 0;
        (void)ncclGetVersion(&ver);
        fdp_debug("nccl: communicator of %d ranks up (NCCL %d), rank %d on GPU %d of host %s", nc->size, ver, nc->rank,
                  nc->device, nc->host);
    }
    *out = nc;
    return 0;
}

static void watchdog_stop(fdp_nccl *nc) {
    if (!nc->running) return;
    atomic_store(&nc->stop, 1);
    pthread_join(nc->thread, NULL);
    nc->running = 0;
}

void fdp_nccl_destroy(fdp_nccl *nc) {
    if (!nc) return;
    watchdog_stop(nc);
    if (nc->comm) {
        fdp_nccl_synchronize(nc);
        NCCL_TRY(nc, ncclCommFinalize(nc->comm), "ncclCommFinalize failed");
        NCCL_TRY(nc, ncclCommDestroy(nc->comm), "ncclCommDestroy failed");
        nc->comm = NULL;
    }
    for (int i = 0; i < nc->t_cap; i++) {
        (void)cudaEventDestroy(nc->t_start[i]);
        (void)cudaEventDestroy(nc->t_end[i]);
    }
    free(nc->t_start);
    free(nc->t_end);
    (void)cudaEventDestroy(nc->done_ev);
    free(nc);
}

int fdp_nccl_rank(const fdp_nccl *nc) { return nc->rank; }
int fdp_nccl_size(const fdp_nccl *nc) { return nc->size; }

/* ---- collectives -------------------------------------------------------------------------- */

static void timing_begin(fdp_nccl *nc) {
    if (!nc->timing) return;
    if (nc->t_n == nc->t_cap) {
        int cap = nc->t_cap ? 2 * nc->t_cap : 64;
        nc->t_start = fdp_xrealloc(nc->t_start, sizeof *nc->t_start * (size_t)cap);
        nc->t_end = fdp_xrealloc(nc->t_end, sizeof *nc->t_end * (size_t)cap);
        for (int i = nc->t_cap; i < cap; i++) {
            FDP_CUDA_CHECK(cudaEventCreate(&nc->t_start[i]), "creating a timing event");
            FDP_CUDA_CHECK(cudaEventCreate(&nc->t_end[i]), "creating a timing event");
        }
        nc->t_cap = cap;
    }
    FDP_CUDA_CHECK(cudaEventRecord(nc->t_start[nc->t_n], nc->cu->comm), "recording a timing event");
}

static void timing_end(fdp_nccl *nc) {
    if (!nc->timing) return;
    FDP_CUDA_CHECK(cudaEventRecord(nc->t_end[nc->t_n], nc->cu->comm), "recording a timing event");
    nc->t_n++;
}

/* after a collective was enqueued: the watchdog's progress marker */
static void issued_one(fdp_nccl *nc) {
    FDP_CUDA_CHECK(cudaEventRecord(nc->done_ev, nc->cu->comm), "recording the NCCL done event");
    atomic_fetch_add(&nc->issued, 1); /* after the record: a watchdog that sees it queries that record or a later one */
    FDP_CUDA_DEBUG_SYNC(nc->cu, "an NCCL collective");
}

static void allreduce(fdp_nccl *nc, void *buf, int64_t n, ncclDataType_t type, fdp_reduce_op op, const char *what) {
    FDP_CHECK(n >= 0, "nccl: all-reduce of %lld elements", (long long)n);
    if (n == 0 || !nc->comm) return; /* one rank: SUM, AVG, MAX, MIN are the identity */
    if (nc->group_depth) {
        /* launched by ncclGroupEnd; markers and timing bracket the whole group */
        fdp_cuda_comm_after_compute(nc->cu);
        NCCL_TRY(nc, ncclAllReduce(buf, buf, (size_t)n, type, nccl_op(op), nc->comm, nc->cu->comm), what);
        return;
    }
    check_async(nc, __FILE__, __LINE__);
    fdp_cuda_comm_after_compute(nc->cu);
    timing_begin(nc);
    NCCL_TRY(nc, ncclAllReduce(buf, buf, (size_t)n, type, nccl_op(op), nc->comm, nc->cu->comm), what);
    timing_end(nc);
    issued_one(nc);
}

void fdp_nccl_group_begin(fdp_nccl *nc) {
    if (!nc->comm) return;
    FDP_CHECK(nc->group_depth == 0, "nccl: groups do not nest here; hint: one fdp_nccl_group_end per begin");
    check_async(nc, __FILE__, __LINE__);
    fdp_cuda_comm_after_compute(nc->cu);
    timing_begin(nc);
    NCCL_TRY(nc, ncclGroupStart(), "ncclGroupStart failed");
    nc->group_depth = 1;
}

void fdp_nccl_group_end(fdp_nccl *nc) {
    if (!nc->comm) return;
    FDP_CHECK(nc->group_depth == 1, "nccl: fdp_nccl_group_end without fdp_nccl_group_begin");
    nc->group_depth = 0;
    NCCL_TRY(nc, ncclGroupEnd(), "ncclGroupEnd failed");
    timing_end(nc);
    issued_one(nc);
}

void fdp_nccl_allreduce_f32(fdp_nccl *nc, float *buf, int64_t n, fdp_reduce_op op) {
    allreduce(nc, buf, n, ncclFloat32, op, "ncclAllReduce (float) failed");
}

void fdp_nccl_allreduce_f64(fdp_nccl *nc, double *buf, int64_t n, fdp_reduce_op op) {
    allreduce(nc, buf, n, ncclFloat64, op, "ncclAllReduce (double) failed");
}

void fdp_nccl_broadcast(fdp_nccl *nc, void *buf, int64_t bytes, int root) {
    FDP_CHECK(root >= 0 && root < nc->size, "nccl: broadcast root %d outside 0..%d", root, nc->size - 1);
    FDP_CHECK(!nc->group_depth, "nccl: broadcast inside a group (it joins; end the group first)");
    if (bytes <= 0 || !nc->comm) return;
    check_async(nc, __FILE__, __LINE__);
    fdp_cuda_comm_after_compute(nc->cu);
    timing_begin(nc);
    NCCL_TRY(nc, ncclBroadcast(buf, buf, (size_t)bytes, ncclUint8, root, nc->comm, nc->cu->comm),
             "ncclBroadcast failed");
    timing_end(nc);
    issued_one(nc);
    fdp_nccl_join(nc);
}

void fdp_nccl_join(fdp_nccl *nc) {
    if (!nc->comm) return;
    FDP_CHECK(!nc->group_depth, "nccl: join inside a group; hint: fdp_nccl_group_end first");
    fdp_cuda_compute_after_comm(nc->cu);
}

int fdp_nccl_query(fdp_nccl *nc) {
    if (!nc->comm) return 1;
    check_async(nc, __FILE__, __LINE__);
    cudaError_t e = cudaEventQuery(nc->done_ev);
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return 0;
    }
    FDP_CUDA_CHECK(e, "querying the NCCL done event");
    return 1;
}

void fdp_nccl_synchronize(fdp_nccl *nc) {
    if (!nc->comm) return;
    fdp_comm_region_enter(nc->c, "NCCL synchronize");
    for (;;) {
        check_async(nc, __FILE__, __LINE__);
        cudaError_t e = cudaEventQuery(nc->done_ev);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) FDP_CUDA_CHECK(e, "waiting for NCCL collectives");
        (void)cudaGetLastError();
        struct timespec ts = {0, 50000}; /* 50 us */
        nanosleep(&ts, NULL);
    }
    fdp_comm_region_leave(nc->c);
}

void fdp_nccl_allreduce_f64_sum_hook(void *nccl, double *buf, int count) {
    fdp_nccl *nc = nccl;
    if (!nc) return;
    fdp_nccl_allreduce_f64(nc, buf, count, FDP_REDUCE_SUM);
    fdp_nccl_join(nc);
}

void fdp_nccl_bucket_start(fdp_nccl *nc, float *dev_grads, int64_t count) {
    fdp_nccl_allreduce_f32(nc, dev_grads, count, FDP_REDUCE_SUM);
}

void fdp_nccl_bucket_finish(fdp_nccl *nc, float *dev_grads, int64_t n, float scale) {
    fdp_nccl_join(nc);
    if (scale != 1.0f && n > 0) {
        fdp_scale_shift_args a = {dev_grads, dev_grads, scale, 0.0f};
        nc->be->scale_shift(nc->be, n, &a);
    }
}

/* ---- watchdog -------------------------------------------------------------------------------- */

static void *watchdog_main(void *arg) {
    fdp_nccl *nc = arg;
    if (cudaSetDevice(nc->device) != cudaSuccess) (void)cudaGetLastError();
    unsigned long long done = atomic_load(&nc->issued); /* collectives known complete */
    long long last_progress = monotonic_ns();
    while (!atomic_load(&nc->stop)) {
        struct timespec ts = {0, 100000000}; /* 100 ms */
        nanosleep(&ts, NULL);
        if (atomic_load(&nc->stop) || atomic_load(&nc->failing)) break;
        check_async(nc, __FILE__, __LINE__);
        unsigned long long issued = atomic_load(&nc->issued);
        long long now = monotonic_ns();
        if (issued == done) {
            last_progress = now;
            continue;
        }
        cudaError_t e = cudaEventQuery(nc->done_ev);
        if (e == cudaSuccess) {
            done = issued;
            last_progress = now;
        } else if (e == cudaErrorNotReady) {
            long long idle = now - last_progress, limit = atomic_load(&nc->timeout_ns);
            if (idle > limit) {
                char what[160];
                snprintf(what, sizeof what,
                         "watchdog: no progress for %.0f s with %llu collective(s) pending (a dead or stuck peer)",
                         (double)idle * 1e-9, issued - done);
                nccl_fail_at(nc, __FILE__, __LINE__, what, ncclSuccess);
            }
        } else {
            nccl_fail_at(nc, __FILE__, __LINE__, "watchdog: the communication stream failed", ncclUnhandledCudaError);
        }
    }
    return NULL;
}

void fdp_nccl_watchdog_start(fdp_nccl *nc, double timeout_s) {
    if (!(timeout_s > 0)) {
        watchdog_stop(nc);
        return;
    }
    atomic_store(&nc->timeout_ns, (long long)(timeout_s * 1e9));
    if (nc->running || !nc->comm) return;
    atomic_store(&nc->stop, 0);
    int rc = pthread_create(&nc->thread, NULL, watchdog_main, nc);
    FDP_CHECK(rc == 0, "nccl: cannot start the watchdog thread (pthread_create: %d)", rc);
    nc->running = 1;
}

/* ---- timing ---------------------------------------------------------------------------------- */

void fdp_nccl_set_timing(fdp_nccl *nc, int on) {
    if (!on && nc->t_n) (void)fdp_nccl_take_busy_ms(nc, NULL);
    nc->timing = on != 0;
}

double fdp_nccl_take_busy_ms(fdp_nccl *nc, int *count) {
    double total = 0.0;
    if (nc->t_n) {
        FDP_CUDA_CHECK(cudaEventSynchronize(nc->t_end[nc->t_n - 1]), "waiting for the timed collectives");
        for (int i = 0; i < nc->t_n; i++) {
            float ms = 0.0f;
            FDP_CUDA_CHECK(cudaEventElapsedTime(&ms, nc->t_start[i], nc->t_end[i]), "reading a collective's time");
            total += ms;
        }
    }
    if (count) *count = nc->t_n;
    nc->t_n = 0;
    return total;
}

#else /* ---- built without CUDA ------------------------------------------------------------------ */

#define NO_NCCL "built without CUDA (no NCCL in this flowdp; configure with the CUDA toolkit, cuDNN and NCCL)"

int fdp_nccl_create(fdp_comm *c, fdp_backend *be, fdp_nccl **out, fdp_err *err) {
    (void)c;
    (void)be;
    *out = NULL;
    return fdp_err_set(err, "nccl: %s", NO_NCCL);
}

int fdp_nccl_check_gpus(fdp_comm *c, fdp_backend *be, fdp_err *err) {
    (void)c;
    (void)be;
    return fdp_err_set(err, "nccl: %s", NO_NCCL);
}

void fdp_nccl_destroy(fdp_nccl *nc) { FDP_CHECK(nc == NULL, "nccl: %s", NO_NCCL); }
int fdp_nccl_rank(const fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
int fdp_nccl_size(const fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
void fdp_nccl_allreduce_f32(fdp_nccl *nc, float *buf, int64_t n, fdp_reduce_op op) {
    (void)nc; (void)buf; (void)n; (void)op;
    FDP_FATAL("nccl: %s", NO_NCCL);
}
void fdp_nccl_allreduce_f64(fdp_nccl *nc, double *buf, int64_t n, fdp_reduce_op op) {
    (void)nc; (void)buf; (void)n; (void)op;
    FDP_FATAL("nccl: %s", NO_NCCL);
}
void fdp_nccl_broadcast(fdp_nccl *nc, void *buf, int64_t bytes, int root) {
    (void)nc; (void)buf; (void)bytes; (void)root;
    FDP_FATAL("nccl: %s", NO_NCCL);
}
void fdp_nccl_join(fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
int fdp_nccl_query(fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
void fdp_nccl_synchronize(fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
void fdp_nccl_allreduce_f64_sum_hook(void *nccl, double *buf, int count) {
    (void)buf; (void)count;
    FDP_CHECK(nccl == NULL, "nccl: %s", NO_NCCL);
}
void fdp_nccl_bucket_start(fdp_nccl *nc, float *dev_grads, int64_t count) {
    (void)nc; (void)dev_grads; (void)count;
    FDP_FATAL("nccl: %s", NO_NCCL);
}
void fdp_nccl_bucket_finish(fdp_nccl *nc, float *dev_grads, int64_t n, float scale) {
    (void)nc; (void)dev_grads; (void)n; (void)scale;
    FDP_FATAL("nccl: %s", NO_NCCL);
}
void fdp_nccl_group_begin(fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
void fdp_nccl_group_end(fdp_nccl *nc) { (void)nc; FDP_FATAL("nccl: %s", NO_NCCL); }
void fdp_nccl_watchdog_start(fdp_nccl *nc, double timeout_s) { (void)nc; (void)timeout_s; FDP_FATAL("nccl: %s", NO_NCCL); }
void fdp_nccl_set_timing(fdp_nccl *nc, int on) { (void)nc; (void)on; FDP_FATAL("nccl: %s", NO_NCCL); }
double fdp_nccl_take_busy_ms(fdp_nccl *nc, int *count) {
    (void)nc; (void)count;
    FDP_FATAL("nccl: %s", NO_NCCL);
}

#endif
