/* comm.c — the MPI communicator: init/finalize (singleton-safe), rank and node
 * layout, chunked blocking collectives, agreement helpers (any-rank flag,
 * cross-rank checksum comparison, XXH64 checksum via flowdp/xxh64.h) and the hang watchdog.
 * See comm.h for the failure policy. */
#include "flowdp/comm.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/cuda.h"
#include "flowdp/error.h"
#include "flowdp/log.h"

/* The world communicator: one of the few globals (docs/ARCHITECTURE.md, invariant 10). */
static fdp_comm *g_world_comm = NULL;

fdp_comm *fdp_comm_world(void) { return g_world_comm; }

/* the CUDA backend's view of this rank's place on its node (fdp_backend_cuda_create(-1)):
 * registered while the world communicator exists, so the backend never calls into dist */
static int world_node_rank(int *local_rank, int *local_size) {
    if (!g_world_comm) return -1;
    *local_rank = g_world_comm->local_rank;
    *local_size = g_world_comm->local_size;
    return 0;
}

/* ---- errors -------------------------------------------------------------------- */

void fdp_mpi_fail_at(const char *file, int line, const char *call, int code) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "unknown MPI error");
    else msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = '\0';
    int name_len = (int)strcspn(call, "(");
    fdp_fatal_at(file, line, "%.*s failed: %s (MPI error %d); hint: another rank may have died, see its message",
                 name_len, call, msg, code);
}

static void comm_abort_hook(int exit_code) {
    /* ends every rank of the job; error.c exits should it ever return */
    MPI_Abort(MPI_COMM_WORLD, exit_code);
}

/* ---- watchdog state ------------------------------------------------------------- */

struct fdp_watchdog {
    atomic_int stop;             /* set by the owner to end the thread */
    atomic_int depth;            /* > 0: inside a collective region (armed) */
    atomic_llong last_kick_ns;   /* CLOCK_MONOTONIC of the last kick or region entry */
    atomic_llong timeout_ns;
    _Atomic(const char *) phase; /* static-lifetime strings only */
    _Atomic(const char *) op;
    int rank;                    /* immutable copies for the message */
    char host[MPI_MAX_PROCESSOR_NAME];
    int running;                 /* owner-side only */
    pthread_t thread;
};

static long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *watchdog_main(void *arg) {
    struct fdp_watchdog *w = arg;
    while (!atomic_load(&w->stop)) {
        long long timeout = atomic_load(&w->timeout_ns);
        long long poll = timeout / 10;
        if (poll < 10000000LL) poll = 10000000LL;   /* 10 ms */
        if (poll > 200000000LL) poll = 200000000LL; /* 200 ms: finalize never waits long */
        struct timespec ts = {(time_t)(poll / 1000000000LL), (long)(poll % 1000000000LL)};
        nanosleep(&ts, NULL);
        if (atomic_load(&w->stop)) break;
        /* depth first, then the time: region entry stores the time before it
         * raises depth, so an armed watchdog never sees a stale time */
        if (atomic_load(&w->depth) <= 0) continue;
        long long idle = monotonic_ns() - atomic_load(&w->last_kick_ns);
        if (idle <= timeout) continue;
        const char *phase = atomic_load(&w->phase);
        const char *op = atomic_load(&w->op);
        fprintf(stderr,
                "%s [rank %d]: error: no progress for %.0f s in %s [%s]; aborting (host %s; hint: another rank is "
                "dead or stuck, see its messages)\n",
                fdp_log_prog(), w->rank, (double)idle * 1e-9, phase ? phase : "(no phase set)", op ? op : "collective", w->host);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
        _exit(1);
    }
    return NULL;
}

void fdp_comm_region_enter(fdp_comm *c, const char *op) {
    struct fdp_watchdog *w = c->wd;
    atomic_store(&w->op, op);
    atomic_store(&w->last_kick_ns, monotonic_ns());
    atomic_fetch_add(&w->depth, 1);
}

void fdp_comm_region_leave(fdp_comm *c) { atomic_fetch_sub(&c->wd->depth, 1); }

void fdp_comm_watchdog_kick(fdp_comm *c) { atomic_store(&c->wd->last_kick_ns, monotonic_ns()); }

void fdp_comm_set_phase(fdp_comm *c, const char *phase) { atomic_store(&c->wd->phase, phase); }

static void watchdog_stop(fdp_comm *c) {
    struct fdp_watchdog *w = c->wd;
    if (!w->running) return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    w->running = 0;
}

void fdp_comm_watchdog_start(fdp_comm *c, double timeout_s) {
    struct fdp_watchdog *w = c->wd;
    if (!(timeout_s > 0)) {
        watchdog_stop(c);
        return;
    }
    atomic_store(&w->timeout_ns, (long long)(timeout_s * 1e9));
    if (w->running) return;
    atomic_store(&w->stop, 0);
    int rc = pthread_create(&w->thread, NULL, watchdog_main, w);
    FDP_CHECK(rc == 0, "comm: cannot start the watchdog thread (error %d)", rc);
    w->running = 1;
}

/* ---- life cycle ------------------------------------------------------------------ */

int fdp_comm_init(int *argc, char ***argv, fdp_comm **out, fdp_err *err) {
    *out = NULL;
    if (g_world_comm) return fdp_err_set(err, "comm: fdp_comm_init called twice (use fdp_comm_world())");
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized) return fdp_err_set(err, "comm: MPI was already finalized; it cannot be initialized again");
    int provided = MPI_THREAD_SINGLE, owns = 0;
    if (!initialized) {
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS)
            return fdp_err_set(err, "comm: MPI_Init_thread failed (MPI error %d); hint: is the MPI runtime installed "
                                    "and were we started by mpiexec/srun (or alone)?", rc);
        owns = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    /* from here on, failures are fatal and end the job */
    FDP_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    fdp_comm *c = fdp_xcalloc(1, sizeof *c);
    c->wd = fdp_xcalloc(1, sizeof *c->wd);
    c->owns_mpi = owns;
    c->thread_level = provided;
    c->max_chunk = INT_MAX;
    FDP_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    FDP_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &c->size));
    fdp_log_set_rank(c->rank, c->size);
    fdp_set_abort_hook(comm_abort_hook);

    FDP_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c->world));
    FDP_MPI_CHECK(MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN));
    FDP_MPI_CHECK(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &c->node));
    FDP_MPI_CHECK(MPI_Comm_set_errhandler(c->node, MPI_ERRORS_RETURN));
    FDP_MPI_CHECK(MPI_Comm_rank(c->node, &c->local_rank));
    FDP_MPI_CHECK(MPI_Comm_size(c->node, &c->local_size));
    int len = 0;
    FDP_MPI_CHECK(MPI_Get_processor_name(c->hostname, &len));
    c->hostname[len < MPI_MAX_PROCESSOR_NAME ? len : MPI_MAX_PROCESSOR_NAME - 1] = '\0';

    struct fdp_watchdog *w = c->wd;
    w->rank = c->rank;
    snprintf(w->host, sizeof w->host, "%s", c->hostname);
    atomic_init(&w->stop, 0);
    atomic_init(&w->depth, 0);
    atomic_init(&w->last_kick_ns, monotonic_ns());
    atomic_init(&w->timeout_ns, 0);
    atomic_init(&w->phase, NULL);
    atomic_init(&w->op, NULL);

    if (provided < MPI_THREAD_FUNNELED)
        fdp_warn("comm: MPI provides thread level %d < MPI_THREAD_FUNNELED; only the main thread calls MPI, "
                 "which is fine for this MPI in practice", provided);
    g_world_comm = c;
    fdp_cuda_set_node_rank_source(world_node_rank);
    *out = c;
    return 0;
}

void fdp_comm_finalize(fdp_comm *c) {
    if (!c) return;
    watchdog_stop(c);
    FDP_MPI_CHECK(MPI_Comm_free(&c->node));
    FDP_MPI_CHECK(MPI_Comm_free(&c->world));
    fdp_set_abort_hook(NULL); /* MPI_Abort after MPI_Finalize would be erroneous */
    if (c->owns_mpi) {
        int rc = MPI_Finalize();
        if (rc != MPI_SUCCESS) fdp_warn("comm: MPI_Finalize failed (MPI error %d)", rc);
    }
    if (g_world_comm == c) {
        g_world_comm = NULL;
        fdp_cuda_set_node_rank_source(NULL);
    }
    free(c->wd);
    free(c);
}

void fdp_comm_set_max_chunk_for_test(fdp_comm *c, int64_t n) { c->max_chunk = n > 0 && n < INT_MAX ? n : INT_MAX; }

/* ---- blocking collectives ------------------------------------------------------------ */

static MPI_Op mpi_op_of(fdp_reduce_op op) {
    switch (op) {
    case FDP_REDUCE_SUM:
    case FDP_REDUCE_AVG: return MPI_SUM;
    case FDP_REDUCE_MAX: return MPI_MAX;
    case FDP_REDUCE_MIN: return MPI_MIN;
    }
    FDP_FATAL("comm: unknown reduce op %d", (int)op);
}

/* in-place all-reduce of n elements of esize bytes in chunks of at most c->max_chunk */
static void allreduce_chunked(fdp_comm *c, void *buf, int64_t n, MPI_Datatype type, size_t esize, fdp_reduce_op op,
                              const char *what) {
    FDP_CHECK(n >= 0, "comm: %s of %lld elements", what, (long long)n);
    MPI_Op mop = mpi_op_of(op);
    if (n == 0 || c->size == 1) return;
    fdp_comm_region_enter(c, what);
    for (int64_t off = 0; off < n; off += c->max_chunk) {
        int64_t cnt = n - off < c->max_chunk ? n - off : c->max_chunk;
        FDP_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * esize, (int)cnt, type, mop, c->world));
        fdp_comm_watchdog_kick(c);
    }
    fdp_comm_region_leave(c);
}

void fdp_comm_allreduce_f32(fdp_comm *c, float *buf, int64_t n, fdp_reduce_op op) {
    allreduce_chunked(c, buf, n, MPI_FLOAT, sizeof *buf, op, "allreduce_f32");
    if (op == FDP_REDUCE_AVG && c->size > 1) {
        float s = (float)c->size;
        for (int64_t i = 0; i < n; i++) buf[i] /= s;
    }
}

void fdp_comm_allreduce_f64(fdp_comm *c, double *buf, int64_t n, fdp_reduce_op op) {
    allreduce_chunked(c, buf, n, MPI_DOUBLE, sizeof *buf, op, "allreduce_f64");
    if (op == FDP_REDUCE_AVG && c->size > 1) {
        double s = (double)c->size;
        for (int64_t i = 0; i < n; i++) buf[i] /= s;
    }
}

void fdp_comm_allreduce_i64(fdp_comm *c, int64_t *buf, int64_t n, fdp_reduce_op op) {
    allreduce_chunked(c, buf, n, MPI_INT64_T, sizeof *buf, op, "allreduce_i64");
    if (op == FDP_REDUCE_AVG && c->size > 1)
        for (int64_t i = 0; i < n; i++) buf[i] /= c->size;
}

void fdp_comm_allreduce_f64_sum_hook(void *comm, double *buf, int count) {
    fdp_comm *c = comm ? (fdp_comm *)comm : fdp_comm_world();
    if (!c) return;
    fdp_comm_allreduce_f64(c, buf, count, FDP_REDUCE_SUM);
}

void fdp_comm_broadcast(fdp_comm *c, void *buf, int64_t bytes, int root) {
    FDP_CHECK(bytes >= 0, "comm: broadcast of %lld bytes", (long long)bytes);
    FDP_CHECK(root >= 0 && root < c->size, "comm: broadcast root %d outside 0..%d", root, c->size - 1);
    if (bytes == 0 || c->size == 1) return;
    fdp_comm_region_enter(c, "broadcast");
    for (int64_t off = 0; off < bytes; off += c->max_chunk) {
        int64_t cnt = bytes - off < c->max_chunk ? bytes - off : c->max_chunk;
        FDP_MPI_CHECK(MPI_Bcast((char *)buf + off, (int)cnt, MPI_BYTE, root, c->world));
        fdp_comm_watchdog_kick(c);
    }
    fdp_comm_region_leave(c);
}

void fdp_comm_allgather(fdp_comm *c, const void *send, void *recv, int64_t bytes_each) {
    FDP_CHECK(bytes_each >= 0, "comm: allgather of %lld bytes", (long long)bytes_each);
    char *mine = (char *)recv + (size_t)c->rank * (size_t)bytes_each;
    int in_place = send == (const void *)mine;
    if (bytes_each == 0) return;
    if (c->size == 1) {
        if (!in_place) memmove(recv, send, (size_t)bytes_each);
        return;
    }
    fdp_comm_region_enter(c, "allgather");
    if (bytes_each <= c->max_chunk) {
        FDP_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : send, (int)bytes_each, MPI_BYTE, recv, (int)bytes_each,
                                    MPI_BYTE, c->world));
    } else {
        /* chunk [off, off+cnt) of every rank's block: receive one element of a
         * type of cnt bytes whose extent is a whole block, starting at recv+off,
         * so rank r's chunk lands at recv + r*bytes_each + off */
        for (int64_t off = 0; off < bytes_each; off += c->max_chunk) {
            int64_t cnt = bytes_each - off < c->max_chunk ? bytes_each - off : c->max_chunk;
            MPI_Datatype chunk, block;
            FDP_MPI_CHECK(MPI_Type_contiguous((int)cnt, MPI_BYTE, &chunk));
            FDP_MPI_CHECK(MPI_Type_create_resized(chunk, 0, (MPI_Aint)bytes_each, &block));
            FDP_MPI_CHECK(MPI_Type_commit(&block));
            FDP_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : (const char *)send + off, (int)cnt, MPI_BYTE,
                                        (char *)recv + off, 1, block, c->world));
            FDP_MPI_CHECK(MPI_Type_free(&block));
            FDP_MPI_CHECK(MPI_Type_free(&chunk));
            fdp_comm_watchdog_kick(c);
        }
    }
    fdp_comm_region_leave(c);
}

void fdp_comm_barrier(fdp_comm *c) {
    if (c->size == 1) return;
    fdp_comm_region_enter(c, "barrier");
    FDP_MPI_CHECK(MPI_Barrier(c->world));
    fdp_comm_region_leave(c);
}

/* ---- agreement --------------------------------------------------------------------------- */

int fdp_comm_any(fdp_comm *c, int flag) {
    int v = flag != 0;
    if (c->size == 1) return v;
    fdp_comm_region_enter(c, "any");
    FDP_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LOR, c->world));
    fdp_comm_region_leave(c);
    return v != 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int fdp_comm_check_same_u64(fdp_comm *c, uint64_t value, int *first_bad_rank) {
    if (first_bad_rank) *first_bad_rank = -1;
    if (c->size == 1) return 1;
    uint64_t *all = fdp_xmalloc(sizeof *all * (size_t)c->size * 2);
    uint64_t *sorted = all + c->size;
    fdp_comm_allgather(c, &value, all, sizeof value);
    int same = 1;
    for (int r = 1; r < c->size; r++) same &= all[r] == all[0];
    if (!same) {
        /* the reference is the most frequent value; rank 0's wins ties */
        memcpy(sorted, all, sizeof *all * (size_t)c->size);
        qsort(sorted, (size_t)c->size, sizeof *sorted, cmp_u64);
        int count0 = 0;
        for (int r = 0; r < c->size; r++) count0 += all[r] == all[0];
        uint64_t ref = all[0];
        int best = count0;
        for (int i = 0; i < c->size;) {
            int j = i;
            while (j < c->size && sorted[j] == sorted[i]) j++;
            if (j - i > best) best = j - i, ref = sorted[i];
            i = j;
        }
        for (int r = 0; r < c->size; r++)
            if (all[r] != ref) {
                if (first_bad_rank) *first_bad_rank = r;
                break;
            }
    }
    free(all);
    return same;
}

uint64_t fdp_checksum_f32(const float *x, int64_t n) {
    FDP_CHECK(n >= 0, "checksum of %lld floats", (long long)n);
    return fdp_xxh64(x, (size_t)n * sizeof *x, 0);
}
