/* run.c — the run context: backend, device communicator, model, optimizer, arena,
 * gradient buckets and the training context, each built by its own call (flowdp/run.h). */
#include "flowdp/run.h"

#include <string.h>

void fdp_run_init(fdp_run *r, const fdp_config *cfg, fdp_comm *comm) {
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->comm = comm;
    r->rank = comm ? fdp_comm_rank(comm) : 0;
    r->world = comm ? fdp_comm_size(comm) : 1;
}

int fdp_run_backend(fdp_run *r, const char *device, int threads, fdp_err *err) {
    /* the GPU of this rank: local rank modulo the visible devices (flowdp/cuda.h) */
    r->be = fdp_backend_create(device, threads, err);
    if (!r->be) return -1;
    r->on_device = r->be->dev != FDP_DEVICE_CPU;
    return 0;
}

int fdp_run_nccl(fdp_run *r, double watchdog_s, fdp_err *err) {
    if (!r->on_device) return 0;
    if (fdp_nccl_create(r->comm, r->be, &r->nccl, err) != 0) return -1;
    if (watchdog_s > 0) fdp_nccl_watchdog_start(r->nccl, watchdog_s);
    return 0;
}

int fdp_run_model(fdp_run *r, int C, int H, int W, uint64_t seed, fdp_err *err) {
    if (fdp_model_create(r->cfg, C, H, W, r->be, seed, &r->model, err) != 0) return -1;
    return fdp_dequant_create(r->cfg, r->model, &r->dequant, err);
}

void fdp_run_adopt_model(fdp_run *r, fdp_model *m) {
    fdp_err err = {{0}};
    r->model = m;
    FDP_CHECK(fdp_dequant_create(NULL, m, &r->dequant, &err) == 0, "%s", err.msg);
}

void fdp_run_optimizer(fdp_run *r) {
    fdp_optim_hparams h = fdp_optim_hparams_from_config(r->cfg);
    r->opt = fdp_optimizer_create(&h, r->model->params);
}

void fdp_run_arena(fdp_run *r) {
    /* activations in the backend's memory (GPU memory for CUDA, aligned host memory for the CPU) */
    r->arena = fdp_arena_create(64u << 20, r->be->arena_alloc, r->be->arena_free, r->be, r->be->dev);
}

/* backward hook: a coupling's (flow step's) gradients are final -> its buckets may start */
static void grads_ready(void *user, int first, int last) {
    fdp_run *r = user;
    const fdp_params *p = r->model->params;
    for (int i = first; i <= last; i++)
        if (p->entries[i].kind == FDP_PARAM && p->entries[i].numel > 0) fdp_buckets_mark_ready(r->buckets, i);
    fdp_buckets_progress(r->buckets);
}

void fdp_run_buckets(fdp_run *r) {
    r->buckets = fdp_buckets_create(r->comm, r->model->params, r->cfg->train.bucket_mb);
    if (r->nccl) fdp_buckets_use_nccl(r->buckets, r->nccl);
    fdp_ctx ctx = {.be = r->be, .arena = r->arena, .params = r->model->params, .training = 1,
                   .allreduce_f64 = fdp_comm_allreduce_f64_sum_hook, .comm = r->comm, .world_size = r->world};
    if (r->nccl) { /* synchronized BatchNorm / ActNorm init on device sums, through NCCL */
        ctx.allreduce_f64 = fdp_nccl_allreduce_f64_sum_hook;
        ctx.comm = r->nccl;
    }
    if (r->world == 1) ctx.allreduce_f64 = NULL;
    if (r->world > 1) {
        ctx.grads_ready = grads_ready;
        ctx.grads_ready_user = r;
    }
    r->ctx = ctx;
}

void fdp_run_step_buffers(fdp_run *r, int batch) {
    fdp_backend *be = r->be;
    const fdp_model *m = r->model;
    const fdp_params *p = m->params;
    int64_t D = (int64_t)m->C * m->H * m->W;
    r->batch = batch;
    r->x = be->alloc(be, sizeof(float) * (size_t)(batch * D));
    r->u = be->alloc(be, sizeof(float) * (size_t)(batch * D));
    r->idx = be->alloc(be, sizeof(int64_t) * (size_t)batch);
    r->saved_buffers = be->alloc(be, sizeof(float) * (size_t)(p->n_buffers ? p->n_buffers : 1));
}

void fdp_run_free(fdp_run *r) {
    fdp_backend *be = r->be;
    if (be) {
        if (r->x) be->free(be, r->x);
        if (r->u) be->free(be, r->u);
        if (r->idx) be->free(be, r->idx);
        if (r->saved_buffers) be->free(be, r->saved_buffers);
    }
    if (r->buckets) fdp_buckets_destroy(r->buckets);
    if (r->nccl) fdp_nccl_destroy(r->nccl);
    if (r->arena) fdp_arena_destroy(r->arena);
    fdp_optimizer_free(r->opt);
    fdp_dequant_destroy(r->dequant);
    if (r->model) fdp_model_destroy(r->model);
    if (be) fdp_backend_destroy(be);
    fdp_comm *comm = r->comm;
    const fdp_config *cfg = r->cfg;
    fdp_run_init(r, cfg, comm);
}
