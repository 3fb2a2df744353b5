/* buckets.c — gradient buckets over the flat gradient buffer: entry-aligned
 * contiguous buckets in reverse table order, each all-reduced with
 * MPI_Iallreduce as soon as its entries are ready, strictly in bucket order on
 * every rank. See buckets.h. */
#include "flowdp/buckets.h"

#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"
#include "flowdp/nccl.h"

static int entry_in_buckets(const fdp_param_entry *e) { return e->kind == FDP_PARAM && e->numel > 0; }

fdp_buckets *fdp_buckets_create(fdp_comm *c, const fdp_params *p, double bucket_mb) {
    FDP_CHECK(bucket_mb > 0, "buckets: bucket size %g MiB must be > 0", bucket_mb);
    FDP_CHECK(p->grads != NULL || p->n_params == 0, "buckets: parameters not finalized; hint: fdp_params_finalize first");
    fdp_buckets *b = fdp_xcalloc(1, sizeof *b);
    b->comm = c;
    b->params = p;
    b->mpi = MPI_COMM_NULL;
    b->entry_bucket = fdp_xmalloc(sizeof *b->entry_bucket * (size_t)(p->count ? p->count : 1));
    b->entry_ready = fdp_xcalloc((size_t)(p->count ? p->count : 1), 1);
    b->buckets = fdp_xcalloc((size_t)(p->count ? p->count : 1), sizeof *b->buckets);

    const int64_t target = (int64_t)(bucket_mb * 1024.0 * 1024.0 / sizeof(float)) > 0
                               ? (int64_t)(bucket_mb * 1024.0 * 1024.0 / sizeof(float))
                               : 1; /* floats */
    fdp_bucket *cur = NULL;
    int64_t expect_end = p->n_params; /* walking down: the next entry must end where the bucket starts */
    for (int i = p->count - 1; i >= 0; i--) {
        const fdp_param_entry *e = &p->entries[i];
        b->entry_bucket[i] = -1;
        if (!entry_in_buckets(e)) continue;
        FDP_CHECK(e->offset + e->numel == expect_end,
                  "buckets: parameter '%s' at offset %lld (+%lld) is not contiguous with the next one at %lld; "
                  "hint: the flat gradient buffer must follow the table order",
                  e->name, (long long)e->offset, (long long)e->numel, (long long)expect_end);
        expect_end = e->offset;
        if (!cur) {
            cur = &b->buckets[b->n_buckets++];
            cur->offset = e->offset + e->numel;
            cur->last_entry = i;
        }
        cur->offset = e->offset;
        cur->count += e->numel;
        cur->first_entry = i;
        cur->n_entries++;
        b->entry_bucket[i] = (int)(cur - b->buckets);
        if (cur->count >= target) cur = NULL;
    }
    FDP_CHECK(expect_end == 0, "buckets: gradient buffer [0, %lld) not covered by the table", (long long)expect_end);

    /* requests: one per max_chunk floats of each bucket (one in practice); the
     * chunk is fixed here so that the request count cannot change later */
    b->chunk = c->max_chunk;
    for (int k = 0; k < b->n_buckets; k++) {
        fdp_bucket *bk = &b->buckets[k];
        bk->req_first = b->n_reqs;
        bk->n_req = (int)((bk->count + b->chunk - 1) / b->chunk);
        b->n_reqs += bk->n_req;
    }
    b->reqs = fdp_xmalloc(sizeof *b->reqs * (size_t)(b->n_reqs ? b->n_reqs : 1));
    b->statuses = fdp_xmalloc(sizeof *b->statuses * (size_t)(b->n_reqs ? b->n_reqs : 1));
    for (int r = 0; r < b->n_reqs; r++) b->reqs[r] = MPI_REQUEST_NULL;
    if (c->size > 1) {
        FDP_MPI_CHECK(MPI_Comm_dup(c->world, &b->mpi));
        FDP_MPI_CHECK(MPI_Comm_set_errhandler(b->mpi, MPI_ERRORS_RETURN));
    }
    return b;
}

void fdp_buckets_destroy(fdp_buckets *b) {
    if (!b) return;
    FDP_CHECK(!b->in_step, "buckets: freed with reductions in flight; hint: fdp_buckets_wait_all first");
    if (b->mpi != MPI_COMM_NULL) FDP_MPI_CHECK(MPI_Comm_free(&b->mpi));
    free(b->reqs);
    free(b->statuses);
    free(b->buckets);
    free(b->entry_ready);
    free(b->entry_bucket);
    free(b);
}

void fdp_buckets_use_nccl(fdp_buckets *b, struct fdp_nccl *nc) {
    FDP_CHECK(!b->in_step, "buckets: switched to %s inside a step", nc ? "NCCL" : "MPI");
    b->nccl = nc;
}

void fdp_buckets_begin_step(fdp_buckets *b) {
    FDP_CHECK(!b->in_step, "buckets: begin_step while the previous step is open; hint: call fdp_buckets_wait_all "
                           "once per step");
}

static void start_bucket(fdp_buckets *b, int k) {
    fdp_bucket *bk = &b->buckets[k];
    bk->started = 1;
    if (b->comm->size == 1) return;
    if (b->nccl) {
        fdp_nccl_bucket_start(b->nccl, b->params->grads + bk->offset, bk->count);
        return;
    }
    const int64_t chunk = b->chunk;
    float *base = b->params->grads + bk->offset;
    for (int r = 0; r < bk->n_req; r++) {
        int64_t off = (int64_t)r * chunk;
        int64_t cnt = bk->count - off < chunk ? bk->count - off : chunk;
        FDP_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, base + off, (int)cnt, MPI_FLOAT, MPI_SUM, b->mpi,
                                     &b->reqs[bk->req_first + r]));
    }
}

/* start every bucket that is complete and whose predecessors have all started */
static void start_in_order(fdp_buckets *b) {
    while (b->next_to_start < b->n_buckets) {
        fdp_bucket *bk = &b->buckets[b->next_to_start];
        if (bk->n_ready < bk->n_entries) break;
        start_bucket(b, b->next_to_start++);
    }
}

void fdp_buckets_mark_ready(fdp_buckets *b, int entry_index) {
    const fdp_params *p = b->params;
    FDP_CHECK(entry_index >= 0 && entry_index < p->count, "buckets: entry %d outside the table (0..%d)", entry_index,
              p->count - 1);
    int k = b->entry_bucket[entry_index];
    if (k < 0) return;
    FDP_CHECK(!b->entry_ready[entry_index],
              "buckets: '%s' marked ready twice in one step; hint: fdp_buckets_wait_all ends a step, mark each "
              "parameter once",
              p->entries[entry_index].name);
    b->in_step = 1;
    b->entry_ready[entry_index] = 1;
    b->buckets[k].n_ready++;
    if (k == b->next_to_start) start_in_order(b);
}

int fdp_buckets_progress(fdp_buckets *b) {
    if (b->comm->size == 1 || b->next_to_start == 0) return 1;
    if (b->nccl) return fdp_nccl_query(b->nccl);
    const fdp_bucket *last = &b->buckets[b->next_to_start - 1];
    int n = last->req_first + last->n_req, done = 0;
    FDP_MPI_CHECK(MPI_Testall(n, b->reqs, &done, MPI_STATUSES_IGNORE));
    return done;
}

/* name the bucket whose reduction failed and MPI's reason */
static void report_failed_request(fdp_buckets *b) {
    for (int k = 0; k < b->n_buckets; k++) {
        const fdp_bucket *bk = &b->buckets[k];
        for (int r = bk->req_first; r < bk->req_first + bk->n_req; r++) {
            int code = b->statuses[r].MPI_ERROR;
            if (code <= MPI_SUCCESS || code == MPI_ERR_PENDING) continue; /* done, pending, or unset */
            char msg[MPI_MAX_ERROR_STRING + 1];
            int len = 0;
            if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) len = 0;
            msg[len] = '\0';
            FDP_FATAL("buckets: the all-reduce of gradient bucket %d (floats [%lld, %lld), '%s' .. '%s') failed: %s "
                      "(MPI error %d); hint: a peer died, or ranks started buckets in different orders",
                      k, (long long)bk->offset, (long long)(bk->offset + bk->count),
                      b->params->entries[bk->first_entry].name, b->params->entries[bk->last_entry].name, msg, code);
        }
    }
}

void fdp_buckets_wait_all(fdp_buckets *b, float scale) {
    double t0 = MPI_Wtime();
    fdp_comm *c = b->comm;
    if (b->nccl) {
        /* device gradients: the rest start as one NCCL group; the join and the scaling are
         * enqueued on the compute stream, the host does not wait here */
        if (c->size > 1 && b->next_to_start < b->n_buckets) {
            fdp_nccl_group_begin(b->nccl);
            while (b->next_to_start < b->n_buckets) start_bucket(b, b->next_to_start++);
            fdp_nccl_group_end(b->nccl);
        }
        b->next_to_start = b->n_buckets;
        fdp_nccl_bucket_finish(b->nccl, b->params->grads, b->params->n_params, scale);
        scale = 1.0f; /* done on the device */
    }
    if (c->size > 1 && !b->nccl) fdp_comm_region_enter(c, "gradient buckets (wait_all)");
    /* the same index order on every rank, ready or not */
    while (b->next_to_start < b->n_buckets) start_bucket(b, b->next_to_start++);
    if (c->size > 1 && !b->nccl) {
        for (int r = 0; r < b->n_reqs; r++) b->statuses[r].MPI_ERROR = MPI_SUCCESS;
        int rc = MPI_Waitall(b->n_reqs, b->reqs, b->statuses);
        if (rc == MPI_ERR_IN_STATUS) report_failed_request(b);
        if (rc != MPI_SUCCESS) fdp_mpi_fail_at(__FILE__, __LINE__, "MPI_Waitall", rc);
        fdp_comm_region_leave(c);
    }
    if (scale != 1.0f) {
        float *g = b->params->grads;
        const int64_t n = b->params->n_params;
#pragma omp parallel for schedule(static) if (n >= (1 << 20))
        for (int64_t i = 0; i < n; i++) g[i] *= scale;
    }
    /* end of the step */
    for (int k = 0; k < b->n_buckets; k++) b->buckets[k].n_ready = 0, b->buckets[k].started = 0;
    memset(b->entry_ready, 0, (size_t)(b->params->count ? b->params->count : 1));
    b->next_to_start = 0;
    b->in_step = 0;
    b->last_wait_s = MPI_Wtime() - t0;
}
