/* run.h — the run context and the training step, shared by flowdp-train (through the
 * trainer), flowdp-bench, flowdp-eval and flowdp-sample.
 *
 * The run context (src/train/run.c) holds what a program builds before its first step:
 * backend, device communicator (NCCL with the CUDA backend), model, optimizer object,
 * activation arena, gradient buckets and the training fdp_ctx wired to them (the
 * synchronized-BatchNorm all-reduce hook, grads_ready starting the buckets). Each piece
 * is built by its own call, in the order the program needs, and every piece is
 * optional: flowdp-eval and flowdp-sample build only the backend and the arena and hand
 * in the model they read from a checkpoint (fdp_run_adopt_model). The calls report
 * failures through fdp_err and print nothing: each program keeps its own messages,
 * agreement between ranks and exit codes. fdp_run_free frees whatever was built.
 *
 * The step (src/train/step.c, fdp_run_step) is the one training step of the trainer's
 * loop and of flowdp-bench --config: dequantization noise, forward, backward with the
 * overlapped bucket all-reduce, the one small all-reduce of {loss, non-finite, stop},
 * the non-finite decision, global-norm clipping and the optimizer update (with EMA).
 * docs/ARCHITECTURE.md, "One training step, data flow". */
#ifndef FLOWDP_RUN_H
#define FLOWDP_RUN_H
#include <signal.h>
#include <stdint.h>

#include "flowdp/arena.h"
#include "flowdp/buckets.h"
#include "flowdp/comm.h"
#include "flowdp/config.h"
#include "flowdp/model.h"
#include "flowdp/nccl.h"
#include "flowdp/dequant.h"
#include "flowdp/optim.h"

typedef struct fdp_run {
    const fdp_config *cfg;  /* the run's config; NULL when the model comes from a checkpoint */
    fdp_comm *comm;         /* NULL: one process without a communicator (flowdp-sample) */
    int rank, world;
    fdp_backend *be;
    int on_device;          /* parameters, gradients and activations live in GPU memory */
    fdp_nccl *nccl;         /* the device communicator (CUDA backend), else NULL */
    fdp_model *model;
    fdp_dequant *dequant;   /* the model's dequantization stage (dequant.h; with the model) */
    fdp_optimizer *opt;
    fdp_arena *arena;
    fdp_buckets *buckets;
    fdp_ctx ctx;            /* the training context (complete after fdp_run_buckets) */
    /* the step's buffers (fdp_run_step_buffers), backend memory: the caller puts the
     * batch into x (batch x C x H x W, pixels in [0,1]) and its global sample indices
     * into idx before each fdp_run_step */
    int batch;
    float *x, *u;           /* images, their dequantized values */
    int64_t *idx;
    float *saved_buffers;   /* the model's buffers before the step ([train] on_nonfinite = skip) */
} fdp_run;

/* empty context for this communicator (NULL: rank 0 of 1) and config (may be NULL) */
void fdp_run_init(fdp_run *r, const fdp_config *cfg, fdp_comm *comm);
/* the backend ("cpu", "cuda", "cuda:N"; threads 0 = all cores); local, no collective.
 * 0, or -1 with err */
int fdp_run_backend(fdp_run *r, const char *device, int threads, fdp_err *err);
/* collective over the communicator when the backend is CUDA (checks that no two ranks
 * of a node share a GPU, then ncclCommInitRank) and starts the NCCL watchdog when
 * watchdog_s > 0; nothing on the CPU. 0, or -1 with err */
int fdp_run_nccl(fdp_run *r, double watchdog_s, fdp_err *err);
/* the model the config describes for C x H x W images, initialized from seed, and its
 * dequantization stage. 0, or -1 with err */
int fdp_run_model(fdp_run *r, int C, int H, int W, uint64_t seed, fdp_err *err);
/* a model made elsewhere (fdp_model_from_checkpoint) and its uniform dequantization stage; the run
 * frees both */
void fdp_run_adopt_model(fdp_run *r, fdp_model *m);
/* the optimizer object of the config's [train] section (optimizer, moments, EMA) */
void fdp_run_optimizer(fdp_run *r);
/* the activation arena, in the backend's memory */
void fdp_run_arena(fdp_run *r);
/* collective (duplicates the communicator): the gradient buckets of [train] bucket_mb
 * (through NCCL when there is a device communicator), and the training context: the
 * synchronized-BatchNorm all-reduce hook (MPI or NCCL; none with one rank) and, with
 * more than one rank, grads_ready starting the buckets as backward finishes gradients.
 * Needs the model and the arena. */
void fdp_run_buckets(fdp_run *r);
/* the step's buffers for batch images per rank (needs the model) */
void fdp_run_step_buffers(fdp_run *r, int batch);
/* frees whatever was built (not the communicator or the config) */
void fdp_run_free(fdp_run *r);

/* ---- the training step ------------------------------------------------------------------ */
typedef struct fdp_step_in {
    uint64_t seed;          /* the dequantization noise key: (seed, epoch, global sample index in idx) */
    uint32_t epoch;
    float lr;               /* learning rate of this step (fdp_lr_at) */
    double max_grad_norm;   /* [train] max_grad_norm (<= 0: no clipping) */
    int skip_nonfinite;     /* [train] on_nonfinite = skip: save the buffers, restore them on a bad step */
    /* non-zero once a stop signal arrived on this rank: read when the small all-reduce
     * is made (after backward); NULL: never */
    const volatile sig_atomic_t *stop_signal;
} fdp_step_in;

typedef struct fdp_step_out {
    double nll;             /* this rank's mean nll (nats per image) */
    double loss_sum;        /* the sum over ranks of the finite losses (mean: / world) */
    double gnorm;           /* global gradient norm, identical on every rank */
    int bad;                /* a loss or gradient was not finite somewhere: no update was made
                             * (and with skip_nonfinite the buffers were restored) */
    int bad_loss;           /* ... and it was a loss (else a gradient) */
    const char *first_nonfinite; /* when bad: the first parameter (backward order) whose
                                  * gradient is not finite on this rank, or NULL */
    int stop;               /* some rank got a stop signal */
    double wait_s;          /* host wait in fdp_buckets_wait_all */
} fdp_step_out;

/* Collective. One training step on r->x / r->idx: dequantization noise, forward loss,
 * backward with the overlapped bucket all-reduce (gradients become the mean over the
 * global batch), {loss, non-finite, stop} agreed in one all-reduce, and unless that
 * found a non-finite value, clipping to max_grad_norm and the optimizer update (EMA
 * included). Needs every piece of the run and the step buffers. */
void fdp_run_step(fdp_run *r, const fdp_step_in *in, fdp_step_out *out);

#endif
