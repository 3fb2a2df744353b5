/* step.c — the training step (flowdp/run.h): the trainer's loop and flowdp-bench --config
 * both run exactly this. docs/ARCHITECTURE.md, "One training step, data flow", steps 2-6. */
#include <math.h>
#include <string.h>

#include "flowdp/rng.h"
#include "flowdp/run.h"

/* first parameter entry (in backward order) whose gradient is not finite */
static const char *first_nonfinite_entry(const fdp_run *r) {
    fdp_params *p = r->model->params;
    for (int i = p->count - 1; i >= 0; i--) {
        if (p->entries[i].kind != FDP_PARAM) continue;
        if (r->be->has_nonfinite(r->be, fdp_params_grad(p, i), p->entries[i].numel)) return p->entries[i].name;
    }
    return NULL;
}

void fdp_run_step(fdp_run *r, const fdp_step_in *in, fdp_step_out *out) {
    fdp_backend *be = r->be;
    fdp_model *m = r->model;
    fdp_params *p = m->params;
    const int B = r->batch;
    memset(out, 0, sizeof *out);

    if (in->skip_nonfinite) be->copy(be, r->saved_buffers, p->buffers, sizeof(float) * (size_t)p->n_buffers);

    fdp_arena_reset_all(r->arena);
    /* ---- dequantization (dequant.h): this rank's batch x -> v (in r->u), the noise keyed by
     * (seed, epoch, global sample index); the one place of the step that draws noise */
    fdp_dequant_key key = {in->seed, in->epoch, FDP_RNG_DEQUANT, r->idx};
    fdp_tensor v = fdp_tensor_wrap(r->u, B, m->C, m->H, m->W, be->dev);
    r->dequant->ops->apply(r->dequant, &r->ctx, fdp_tensor_wrap(r->x, B, m->C, m->H, m->W, be->dev), &key, v, NULL);
    fdp_comm_set_phase(r->comm, "forward");
    double nll = m->forward_loss(m, &r->ctx, v, NULL);
    fdp_comm_set_phase(r->comm, "backward");
    fdp_buckets_begin_step(r->buckets);
    m->backward(m, &r->ctx, 1.0f);
    fdp_comm_set_phase(r->comm, "gradient all-reduce");
    fdp_buckets_wait_all(r->buckets, 1.0f / (float)r->world);
    out->nll = nll;
    out->wait_s = fdp_buckets_last_wait_s(r->buckets);

    /* one small all-reduce: the loss, "something is not finite", "a stop signal arrived" */
    int bad_local = !isfinite(nll);
    double agree[3] = {isfinite(nll) ? nll : 0.0, (double)bad_local, in->stop_signal && *in->stop_signal ? 1.0 : 0.0};
    fdp_comm_allreduce_f64(r->comm, agree, 3, FDP_REDUCE_SUM);
    out->loss_sum = agree[0];
    out->stop = agree[2] > 0;
    out->gnorm = fdp_grad_global_norm(p); /* identical on every rank after the all-reduce */
    out->bad_loss = agree[1] > 0;
    out->bad = out->bad_loss || !isfinite(out->gnorm);
    if (out->bad) {
        out->first_nonfinite = first_nonfinite_entry(r);
        if (in->skip_nonfinite) be->copy(be, p->buffers, r->saved_buffers, sizeof(float) * (size_t)p->n_buffers);
        return;
    }
    fdp_comm_set_phase(r->comm, "optimizer");
    fdp_optimizer_step(r->opt, in->lr, fdp_clip_factor(out->gnorm, in->max_grad_norm));
}
