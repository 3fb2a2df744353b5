/* trainer.c — the training loop: sharded data, dequantization noise keyed by
 * (seed, epoch, global sample index), forward/backward, gradient all-reduce,
 * NaN/Inf agreement, clipping, Adam with warmup/decay, metrics and checkpoints
 * from rank 0, periodic test-set evaluation, signal-driven checkpoint + exit,
 * and exact resume on any number of ranks. */
#include "flowdp/trainer.h"
#include "trainer_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/arena.h"
#include "flowdp/buckets.h"
#include "flowdp/cuda.h"
#include "flowdp/nccl.h"
#include "flowdp/checkpoint.h"
#include "flowdp/data.h"
#include "flowdp/evaluate.h"
#include "flowdp/fsutil.h"
#include "flowdp/hdf5_lock.h"
#include "flowdp/loader.h"
#include "flowdp/log.h"
#include "flowdp/metrics.h"
#include "flowdp/model.h"
#include "flowdp/optim.h"
#include "flowdp/rng.h"
#include "flowdp/xxh64.h"

/* ---- signals: the handler only sets a flag ---------------------------------- */
static volatile sig_atomic_t g_stop_signal = 0;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

static void install_signals(const fdp_config *cfg) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    if (cfg->train.signal == FDP_STOP_SIGUSR2) sigaction(SIGUSR2, &sa, NULL);
    if (cfg->train.signal == FDP_STOP_SIGUSR1) sigaction(SIGUSR1, &sa, NULL);
}


/* learning rate at step (0-based) of total */
static double lr_at(const fdp_config *cfg, int64_t step, int64_t total) {
    double lr = cfg->train.lr;
    int64_t warm = cfg->train.warmup_steps;
    double f = 1.0;
    if (warm > 0 && step < warm) f = (double)(step + 1) / (double)warm;
    switch (cfg->train.lr_decay) {
    case FDP_LR_DECAY_COSINE: {
        double span = (double)(total - warm);
        double p = span > 0 ? (double)(step - warm) / span : 1.0;
        if (p < 0) p = 0;
        if (p > 1) p = 1;
        lr = cfg->train.lr_min + (lr - cfg->train.lr_min) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
        break;
    }
    case FDP_LR_DECAY_EXPONENTIAL:
        lr = lr * pow(cfg->train.lr_decay_rate, (double)step);
        if (lr < cfg->train.lr_min) lr = cfg->train.lr_min;
        break;
    default: break;
    }
    return lr * f;
}

static void format_eta(double s, char *out, size_t len) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(out, len, "?");
        return;
    }
    int64_t t = (int64_t)(s + 0.5);
    if (t >= 3600)
        snprintf(out, len, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
    else
        snprintf(out, len, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
}

static void opt_step(trainer *t, float lr, float gscale) {
    if (t->adamax)
        fdp_adamax_step(&t->optx, t->model->params, lr, gscale);
    else
        fdp_adam_step(&t->opt, t->model->params, lr, gscale);
    if (t->use_ema) fdp_ema_update(&t->ema, t->model->params);
}

/* ---- evaluation --------------------------------------------------------------- */
/* Test-set bpd (every rank). 0, or -1 after one line from the first failing rank. */
static int evaluate(trainer *t, double *bpd, double *stderr_out, int64_t *images) {
    int64_t n = t->test.n, b, e;
    fdp_eval_range(n, t->rank, t->world, &b, &e);
    fdp_eval_sums s = {0, 0, 0, 0};
    fdp_comm_set_phase(t->comm, "evaluation");
    if (t->use_ema) fdp_ema_swap(&t->ema, t->model->params); /* evaluate the EMA weights */
    fdp_err err = {{0}};
    int bad = fdp_evaluate_range(t->model, t->be, t->arena, &t->test, b, e, t->cfg->train.eval_batch_size,
                                 t->cfg->data.prefetch, t->seed, 1, &s, &err) != 0;
    if (t->use_ema) fdp_ema_swap(&t->ema, t->model->params);
    if (trn_any_bad(t, bad, "evaluation at step %lld: %s", (long long)t->step, err.msg)) return -1;
    double v[4] = {s.nll, s.bpd, s.bpd_sq, s.count};
    fdp_comm_allreduce_f64(t->comm, v, 4, FDP_REDUCE_SUM);
    fdp_eval_sums g = {v[0], v[1], v[2], v[3]};
    fdp_eval_summary(&g, bpd, stderr_out, NULL);
    *images = (int64_t)v[3];
    return 0;
}

/* backward hook: a coupling's gradients are final -> its buckets may start */
static void grads_ready(void *user, int first, int last) {
    trainer *t = user;
    const fdp_params *p = t->model->params;
    for (int i = first; i <= last; i++)
        if (p->entries[i].kind == FDP_PARAM && p->entries[i].numel > 0) fdp_buckets_mark_ready(t->buckets, i);
    fdp_buckets_progress(t->buckets);
}

/* first parameter entry (in backward order) whose gradient is not finite */
static const char *first_nonfinite_entry(trainer *t) {
    fdp_params *p = t->model->params;
    for (int i = p->count - 1; i >= 0; i--) {
        if (p->entries[i].kind != FDP_PARAM) continue;
        if (t->be->has_nonfinite(t->be, fdp_params_grad(p, i), p->entries[i].numel)) return p->entries[i].name;
    }
    return NULL;
}

/* XXH64 of this rank's parameters (copied to the host first when they live on the GPU) */
static uint64_t params_checksum(trainer *t) {
    fdp_params *p = t->model->params;
    if (!t->on_device) return fdp_checksum_f32(p->params, p->n_params);
    float *h = fdp_xmalloc(sizeof(float) * (size_t)(p->n_params ? p->n_params : 1));
    t->be->to_host(t->be, h, p->params, sizeof(float) * (size_t)p->n_params);
    uint64_t r = fdp_checksum_f32(h, p->n_params);
    free(h);
    return r;
}

/* every rank gets rank 0's bytes of backend memory: NCCL on the device, MPI on the host */
static void broadcast_backend(trainer *t, void *buf, int64_t bytes) {
    if (bytes <= 0 || t->world == 1) return;
    if (t->nccl)
        fdp_nccl_broadcast(t->nccl, buf, bytes, 0);
    else
        fdp_comm_broadcast(t->comm, buf, bytes, 0);
}

static int train_loop(trainer *t) {
    const fdp_config *cfg = t->cfg;
    fdp_backend *be = t->be;
    fdp_model *m = t->model;
    fdp_params *p = m->params;
    int B = t->per_rank_batch;
    int64_t D = (int64_t)m->C * m->H * m->W;
    /* the batches of steps [t->step, total_steps), prepared ahead by the loader thread */
    fdp_loader_opts lo = {.src = &t->train, .mode = FDP_LOADER_TRAIN, .prefetch = cfg->data.prefetch, .batch = B,
                          .seed = t->seed, .rank = t->rank, .world = t->world, .start_step = t->step,
                          .end_step = t->total_steps, .hflip = cfg->data.hflip, .translate = cfg->data.translate};
    fdp_loader *loader = NULL;
    fdp_err lerr = {{0}};
    FDP_CHECK(fdp_loader_create(&lo, &loader, &lerr) == 0, "%s", lerr.msg);
    float *x = be->alloc(be, sizeof(float) * (size_t)(B * D));
    float *u = be->alloc(be, sizeof(float) * (size_t)(B * D));
    int64_t *didx = be->alloc(be, sizeof(int64_t) * (size_t)B);
    float *saved_buffers = be->alloc(be, sizeof(float) * (size_t)(p->n_buffers ? p->n_buffers : 1));
    fdp_ctx ctx = {.be = be, .arena = t->arena, .params = p, .training = 1, .allreduce_f64 = fdp_comm_allreduce_f64_sum_hook, .comm = t->comm, .world_size = t->world};
    if (t->nccl) { /* synchronized BatchNorm / ActNorm init on device sums, through NCCL */
        ctx.allreduce_f64 = fdp_nccl_allreduce_f64_sum_hook;
        ctx.comm = t->nccl;
    }
    if (t->world == 1) ctx.allreduce_f64 = NULL;
    if (t->world > 1) {
        ctx.grads_ready = grads_ready;
        ctx.grads_ready_user = t;
    }
    int tty = isatty(STDOUT_FILENO) && cfg->log.progress && t->rank == 0;
    double t_start = trn_now_s(), t_window = trn_now_s(), wait_window = 0.0, data_wait_window = 0.0;
    int64_t window_steps = 0, start_step = t->step;
    double bpd_window = 0.0;
    int rc = FDP_EXIT_OK;

    while (t->step < t->total_steps) {
        double ts = trn_now_s();
        /* this rank's slice of the step's global batch (the sampler, data.h) and its noise */
        double dw0 = fdp_loader_wait_seconds(loader);
        const fdp_batch *bt = fdp_loader_next(loader);
        FDP_CHECK(bt && bt->step == t->step && bt->count == B, "data loader out of step at step %lld",
                  (long long)t->step);
        data_wait_window += fdp_loader_wait_seconds(loader) - dw0;
        int64_t epoch = bt->epoch;
        be->from_host(be, x, bt->x, sizeof(float) * (size_t)(B * D));
        be->from_host(be, didx, bt->idx, sizeof(int64_t) * (size_t)B);
        if (cfg->train.on_nonfinite == FDP_NONFINITE_SKIP)
            be->copy(be, saved_buffers, p->buffers, sizeof(float) * (size_t)p->n_buffers);

        fdp_arena_reset_all(t->arena);
        /* the dequantization stage (dequant.h): noise keyed by (seed, epoch, image) */
        fdp_dequant_key key = {t->seed, (uint32_t)epoch, FDP_RNG_DEQUANT, didx};
        fdp_tensor v = fdp_tensor_wrap(u, B, m->C, m->H, m->W, be->dev);
        t->dequant->ops->apply(t->dequant, &ctx, fdp_tensor_wrap(x, B, m->C, m->H, m->W, be->dev), &key, v, NULL);
        fdp_comm_set_phase(t->comm, "forward");
        double nll = m->forward_loss(m, &ctx, v, NULL);
        fdp_comm_set_phase(t->comm, "backward");
        fdp_buckets_begin_step(t->buckets);
        m->backward(m, &ctx, 1.0f);
        fdp_comm_set_phase(t->comm, "gradient all-reduce");
        fdp_buckets_wait_all(t->buckets, 1.0f / (float)t->world);
        wait_window += fdp_buckets_last_wait_s(t->buckets);

        /* one small all-reduce: the loss, "something is not finite", "a stop signal arrived" */
        int bad_local = !isfinite(nll);
        double agree[3] = {isfinite(nll) ? nll : 0.0, (double)bad_local, g_stop_signal ? 1.0 : 0.0};
        fdp_comm_allreduce_f64(t->comm, agree, 3, FDP_REDUCE_SUM);
        double gnorm = fdp_grad_global_norm(p); /* identical on every rank after the all-reduce */
        int bad = agree[1] > 0 || !isfinite(gnorm);
        if (bad) {
            const char *where = first_nonfinite_entry(t);
            if (cfg->train.on_nonfinite == FDP_NONFINITE_SKIP) {
                t->nonfinite_skipped++;
                be->copy(be, p->buffers, saved_buffers, sizeof(float) * (size_t)p->n_buffers);
                fdp_warn("step %lld: non-finite %s%s%s; step skipped (%lld so far)", (long long)t->step,
                         agree[1] > 0 ? "loss" : "gradient", where ? " first in " : "", where ? where : "",
                         (long long)t->nonfinite_skipped);
                t->step++;
                continue;
            }
            fdp_error("step %lld: non-finite %s%s%s; stopping without writing anything for this step "
                      "(last checkpoint: step %lld). Hint: lower [train] lr or set [train] on_nonfinite = skip",
                      (long long)t->step, agree[1] > 0 ? "loss" : "gradient", where ? " (first in " : "",
                      where ? where : "", (long long)t->last_ckpt_step);
            if (where) fdp_error("  (the gradient of %s is the first non-finite one)", where);
            rc = FDP_EXIT_NONFINITE;
            break;
        }
        double lr = lr_at(cfg, t->step, t->total_steps);
        fdp_comm_set_phase(t->comm, "optimizer");
        opt_step(t, (float)lr, fdp_clip_factor(gnorm, cfg->train.max_grad_norm));
        t->step++;
        double bpd = fdp_bpd(agree[0] / t->world, D);
        double step_time = trn_now_s() - ts;
        bpd_window += bpd;
        window_steps++;

        if (t->rank == 0 && t->metrics) {
            double row[5] = {bpd, lr, gnorm, (double)B * t->world / step_time, trn_now_s() - t_start};
            trn_metrics_call(t, MET_TRAIN_ROW, row, 0);
        }
        if (t->rank == 0 && (t->step % cfg->log.every == 0 || t->step == t->total_steps || tty)) {
            double el = trn_now_s() - t_window;
            double ips = el > 0 ? (double)B * t->world * window_steps / el : 0.0;
            double per_step = (trn_now_s() - t_start) / (double)(t->step - start_step);
            char eta[32];
            format_eta(per_step * (double)(t->total_steps - t->step), eta, sizeof eta);
            double ep_pct = 100.0 * (double)(t->step % t->steps_per_epoch) / (double)t->steps_per_epoch;
            if (t->step % t->steps_per_epoch == 0) ep_pct = 100.0;
            char line[256];
            snprintf(line, sizeof line,
                     "step %lld/%lld | epoch %lld %5.1f%% | train bpd %.4f | lr %.2e | |g| %.3g | %.1f img/s | "
                     "all-reduce wait %.1f ms | data wait %.1f ms | ETA %s",
                     (long long)t->step, (long long)t->total_steps, (long long)((t->step - 1) / t->steps_per_epoch),
                     ep_pct, bpd_window / window_steps, lr, gnorm, ips, 1e3 * wait_window / window_steps,
                     1e3 * data_wait_window / window_steps, eta);
            if (tty && t->step % cfg->log.every != 0 && t->step != t->total_steps) {
                printf("\r%s\033[K", line);
                fflush(stdout);
            } else {
                printf("%s%s\n", tty ? "\r" : "", line);
                fflush(stdout);
                t_window = trn_now_s();
                window_steps = 0;
                bpd_window = 0.0;
                wait_window = 0.0;
                data_wait_window = 0.0;
            }
        }

        /* periodic cross-rank parameter checksum: silent divergence is a bug */
        if (t->world > 1 && cfg->train.check_every > 0 && t->step % cfg->train.check_every == 0) {
            int bad_rank = -1;
            uint64_t h = params_checksum(t);
            if (!fdp_comm_check_same_u64(t->comm, h, &bad_rank))
                FDP_FATAL("step %lld: the parameters of rank %d differ from rank 0's (silent divergence); "
                          "hint: a non-deterministic kernel or a corrupted all-reduce",
                          (long long)t->step, bad_rank);
        }

        /* evaluation: every eval_every steps, or at the end of each epoch */
        int end_of_epoch = t->step % t->steps_per_epoch == 0;
        int do_eval = t->test.n > 0 && ((cfg->train.eval_every > 0 && t->step % cfg->train.eval_every == 0) ||
                                       (cfg->train.eval_every == 0 && end_of_epoch) || t->step == t->total_steps);
        int improved = 0;
        if (do_eval) {
            double tb, tse;
            int64_t nimg;
            double t0 = trn_now_s();
            if (evaluate(t, &tb, &tse, &nimg) != 0) {
                rc = FDP_EXIT_BAD_INPUT;
                break;
            }
            t->last_bpd = tb;
            improved = tb < t->best_bpd;
            if (improved) t->best_bpd = tb;
            char se[32] = "n/a"; /* fewer than 2 images: no standard error */
            if (isfinite(tse)) snprintf(se, sizeof se, "%.4f", tse);
            fdp_info("%stest bpd %.4f ± %s over %lld images at step %lld (epoch %.2f)%s [%.1f s]", tty ? "\r" : "",
                     tb, se, (long long)nimg, (long long)t->step, (double)t->step / t->steps_per_epoch,
                     improved ? ", best so far" : "", trn_now_s() - t0);
            double row[2] = {tb, tse};
            trn_metrics_call(t, MET_TEST_ROW, row, nimg);
        }
        int stop = agree[2] > 0;
        int do_ckpt = (cfg->checkpoint.every > 0 && t->step % cfg->checkpoint.every == 0) || t->step == t->total_steps ||
                      stop || (improved && cfg->checkpoint.keep_best);
        if (do_ckpt) {
            trn_metrics_call(t, MET_FLUSH, NULL, 0);
            fdp_comm_set_phase(t->comm, "checkpoint");
            if (!trn_save_checkpoint(t, improved && cfg->checkpoint.keep_best)) {
                if (cfg->checkpoint.on_write_error == FDP_ON_WRITE_ERROR_STOP) {
                    fdp_error("stopping: [checkpoint] on_write_error = stop");
                    rc = FDP_EXIT_CKPT_FAILED;
                    break;
                }
                /* "continue" covers the periodic checkpoints only: the final one is the
                 * result of the run, and the stop-signal one is what exit 3 promises (a
                 * requeue after a failed one would resume from an older checkpoint and
                 * could fail the same way forever) */
                if (stop || t->step == t->total_steps) {
                    fdp_error("the %s checkpoint (step %lld) was not written: exiting with %d although "
                              "[checkpoint] on_write_error = continue",
                              stop ? "stop-signal" : "final", (long long)t->step, FDP_EXIT_CKPT_FAILED);
                    rc = FDP_EXIT_CKPT_FAILED;
                    break;
                }
                fdp_warn("continuing without this checkpoint ([checkpoint] on_write_error = continue)");
            }
        }
        if (stop) {
            fdp_info("stop signal received: every rank checkpointed at step %lld; exiting with %d (please requeue)",
                     (long long)t->step, FDP_EXIT_REQUEUE);
            if (t->rank == 0) trn_write_stop_marker(t);
            rc = FDP_EXIT_REQUEUE;
            break;
        }
    }
    /* how long the training thread waited for data (rank 0's view), over this run */
    double run_s = trn_now_s() - t_start, data_wait = fdp_loader_wait_seconds(loader);
    fdp_loader_destroy(loader); /* no HDF5 use by a loader thread after this */
    if (t->step > start_step)
        fdp_info("data wait: %.3f s of %.1f s training (%.2f%%), %.2f ms per step; prefetch %d", data_wait, run_s,
                 run_s > 0 ? 100.0 * data_wait / run_s : 0.0, 1e3 * data_wait / (double)(t->step - start_step),
                 cfg->data.prefetch);
    if (rc == FDP_EXIT_OK && t->step >= t->total_steps) {
        if (isfinite(t->best_bpd))
            fdp_info("finished: %lld steps, best test bpd %.4f; checkpoints in %s", (long long)t->step, t->best_bpd,
                     t->ckpt_dir);
        else
            fdp_info("finished: %lld steps (no test set); checkpoints in %s", (long long)t->step, t->ckpt_dir);
        /* the arena also serves evaluation batches ([train] eval_batch_size) */
        fdp_info("activation arena peak %.2f MiB on rank 0 (training steps and evaluation)",
                 (double)fdp_arena_peak(t->arena) / 1048576.0);
    }
    be->free(be, x);
    be->free(be, u);
    be->free(be, didx);
    be->free(be, saved_buffers);
    return rc;
}

/* ---- set-up, in the order fdp_train_run calls it; each returns FDP_EXIT_OK or the
 * exit code after one line from one rank (fdp_train_run's cleanup frees what was made) */

/* the data: idx/cifar10 are held in memory by every rank; hdf5 shards are streamed (each
 * rank reads only its samples) and their checksums are verified once, split over the
 * ranks: rank r checks shards r, r + world, ... */
static int setup_data(trainer *t) {
    const fdp_config *cfg = t->cfg;
    fdp_err err = {{0}};
    const char *fmt = cfg->data.format == FDP_DATA_CIFAR10 ? "cifar10" : cfg->data.format == FDP_DATA_IDX ? "idx" : "hdf5";
    if (!cfg->data.train[0]) {
        if (t->rank == 0)
            fprintf(stderr, "%s: %s: [data] train is not set\n", fdp_log_prog(), cfg->source_path ? cfg->source_path : "config");
        return FDP_EXIT_BAD_INPUT;
    }
    int bad = fdp_source_open(fmt, cfg->data.train, 1, cfg->data.train_limit, &t->train, &err) != 0;
    if (!bad && cfg->data.test[0]) bad = fdp_source_open(fmt, cfg->data.test, 0, cfg->data.test_limit, &t->test, &err) != 0;
    if (!bad && cfg->data.verify) bad = fdp_source_verify(&t->train, t->rank, t->world, &err) != 0;
    if (!bad && cfg->data.verify) bad = fdp_source_verify(&t->test, t->rank, t->world, &err) != 0;
    if (trn_any_bad(t, bad, "%s", err.msg)) return FDP_EXIT_BAD_INPUT;
    bad = t->test.n > 0 && (t->test.c != t->train.c || t->test.h != t->train.h || t->test.w != t->train.w);
    if (trn_any_bad(t, bad, "test set %s is %dx%dx%d but the training set is %dx%dx%d", cfg->data.test, t->test.c,
                    t->test.h, t->test.w, t->train.c, t->train.h, t->train.w)) {
        return FDP_EXIT_BAD_INPUT;
    }
    /* every rank must run the same configuration and see the same image shape (a rank
     * given other arguments would otherwise fail in a collective, or hang) */
    char *cfg_text = fdp_config_to_ini(cfg);
    uint64_t same = fdp_xxh64(cfg_text, strlen(cfg_text), 0) ^ (uint64_t)(t->train.c * 1000003 + t->train.h * 1009 + t->train.w);
    free(cfg_text);
    int first_bad = -1;
    if (t->world > 1 && !fdp_comm_check_same_u64(t->comm, same, &first_bad)) {
        if (t->rank == 0)
            fprintf(stderr, "%s: the configuration or image shape of rank %d differs from rank 0's (check the "
                            "arguments and files each rank gets)\n", fdp_log_prog(), first_bad);
        return FDP_EXIT_BAD_INPUT;
    }

    return FDP_EXIT_OK;
}

/* backend, device communicator, model, optimizer, arena */
static int setup_compute(trainer *t) {
    const fdp_config *cfg = t->cfg;
    fdp_err err = {{0}};
    int bad;
    /* the GPU of this rank: local rank modulo the visible devices (flowdp/cuda.h) */
    t->be = fdp_backend_create(cfg->train.device == FDP_DEVICE_CUDA ? "cuda" : "cpu", cfg->train.threads, &err);
    bad = t->be == NULL;
    if (trn_any_bad(t, bad, "%s: [train] device = %s: %s", cfg->source_path ? cfg->source_path : "config",
                    cfg->train.device == FDP_DEVICE_CUDA ? "cuda" : "cpu", err.msg)) {
        return FDP_EXIT_BAD_INPUT;
    }
    t->on_device = cfg->train.device == FDP_DEVICE_CUDA;
    if (t->on_device) {
        /* collective: checks that no two ranks of a node share a GPU, then ncclCommInitRank */
        if (fdp_nccl_create(t->comm, t->be, &t->nccl, &err) != 0) {
            if (t->rank == 0) fprintf(stderr, "%s: %s\n", fdp_log_prog(), err.msg);
            return FDP_EXIT_BAD_INPUT;
        }
        fdp_nccl_watchdog_start(t->nccl, cfg->train.watchdog_s > 0 ? cfg->train.watchdog_s : 600.0);
    }
    if (fdp_model_create(cfg, t->train.c, t->train.h, t->train.w, t->be, t->seed, &t->model, &err) != 0 ||
        fdp_dequant_create(cfg, t->model, &t->dequant, &err) != 0) {
        if (t->rank == 0) fprintf(stderr, "%s: %s\n", fdp_log_prog(), err.msg);
        return FDP_EXIT_BAD_INPUT;
    }
    t->adamax = cfg->train.optimizer == FDP_OPT_ADAMAX;
    if (t->adamax)
        fdp_adamax_init(&t->optx, t->model->params, (float)cfg->train.adam_beta1, (float)cfg->train.adam_beta2,
                        (float)cfg->train.adam_eps, (float)cfg->train.weight_decay);
    else
        fdp_adam_init(&t->opt, t->model->params, (float)cfg->train.adam_beta1, (float)cfg->train.adam_beta2,
                      (float)cfg->train.adam_eps, (float)cfg->train.weight_decay);
    t->use_ema = cfg->train.ema > 0.0;
    if (t->use_ema) fdp_ema_init(&t->ema, t->model->params, (float)cfg->train.ema);
    /* activations in the backend's memory (GPU memory for CUDA, aligned host memory for the CPU) */
    t->arena = fdp_arena_create(64u << 20, t->be->arena_alloc, t->be->arena_free, t->be, t->be->dev);
    t->config_text = fdp_config_to_ini(cfg);

    return FDP_EXIT_OK;
}

/* the checkpoint directory (usable, no foreign files named like ours), then resume:
 * the newest valid checkpoint, the one named by --resume, or rank 0's initial weights */
static int setup_resume(trainer *t, const fdp_train_opts *o, char *rpath, size_t rlen, int *resumed) {
    fdp_err err = {{0}};
    int bad;
    bad = 0;
    const char *what = "";
    if (t->rank == 0 && (bad = fdp_mkdir_p(t->ckpt_dir)) != 0) {
        what = "cannot create it";
    } else if (t->rank == 0 && trn_probe_writable(t->ckpt_dir) != 0) {
        what = "cannot write into it";
        bad = errno;
    }
    char dir_msg[4096] = "";
    int dir_bad = !bad && t->rank == 0 && trn_check_ckpt_dir(t->ckpt_dir, o->force, dir_msg, sizeof dir_msg) != 0;
    if (trn_any_bad(t, dir_bad, "%s", dir_msg)) {
        return FDP_EXIT_BAD_INPUT;
    }
    if (trn_any_bad(t, bad != 0, "[checkpoint] dir %s: %s: %s", t->ckpt_dir, what, strerror(bad))) {
        return FDP_EXIT_BAD_INPUT;
    }
    if (strcmp(o->resume, "none") != 0) {
        int found = 0;
        if (strcmp(o->resume, "auto") == 0) {
            if (t->rank == 0) {
                int r = fdp_ckpt_find_newest_valid(t->ckpt_dir, rpath, rlen, &err);
                if (r < 0) fdp_warn("looking for checkpoints in %s: %s", t->ckpt_dir, err.msg);
                found = r == 0;
            }
            fdp_comm_broadcast(t->comm, &found, sizeof found, 0);
            fdp_comm_broadcast(t->comm, rpath, rlen, 0);
        } else {
            snprintf(rpath, rlen, "%s", o->resume);
            found = 1;
        }
        if (found) {
            bad = trn_load_checkpoint(t, rpath, &err) != 0;
            if (trn_any_bad(t, bad, "cannot resume: %s", err.msg)) {
                return FDP_EXIT_BAD_INPUT;
            }
            *resumed = 1;
            t->last_ckpt_step = t->step;
        } else if (t->rank == 0) {
            fdp_info("no checkpoint in %s: starting from scratch", t->ckpt_dir);
        }
    }
    if (!*resumed) {
        /* every rank initialized from the same seed; broadcast anyway so that rank 0 is the truth */
        fdp_params *p = t->model->params;
        broadcast_backend(t, p->params, (int64_t)sizeof(float) * p->n_params);
        broadcast_backend(t, p->buffers, (int64_t)sizeof(float) * p->n_buffers);
    }

    return FDP_EXIT_OK;
}

/* steps per epoch and in all, the gradient buckets */
static int setup_schedule(trainer *t) {
    const fdp_config *cfg = t->cfg;
    t->steps_per_epoch = fdp_sampler_steps_per_epoch(t->train.n, t->world, t->per_rank_batch);
    if (t->steps_per_epoch < 1) {
        if (t->rank == 0)
            fprintf(stderr, "%s: %s: %lld training images cannot fill one global batch of %d x %d ranks\n",
                    fdp_log_prog(), cfg->data.train, (long long)t->train.n, t->per_rank_batch, t->world);
        return FDP_EXIT_BAD_INPUT;
    }
    t->total_steps = cfg->train.steps > 0 ? cfg->train.steps : (int64_t)ceil(cfg->train.epochs * (double)t->steps_per_epoch);
    if (cfg->train.warmup_steps > t->total_steps) { /* [train] epochs: known only now */
        if (t->rank == 0)
            fprintf(stderr, "%s: %s: [train] warmup_steps = %lld is larger than the %lld steps of [train] epochs = %g\n",
                    fdp_log_prog(), cfg->source_path ? cfg->source_path : "config", (long long)cfg->train.warmup_steps,
                    (long long)t->total_steps, cfg->train.epochs);
        return FDP_EXIT_BAD_INPUT;
    }
    t->buckets = fdp_buckets_create(t->comm, t->model->params, cfg->train.bucket_mb);
    if (t->nccl) fdp_buckets_use_nccl(t->buckets, t->nccl);
    return FDP_EXIT_OK;
}

int fdp_train_run(const fdp_train_opts *o) {
    const fdp_config *cfg = o->cfg;
    trainer T;
    memset(&T, 0, sizeof T);
    trainer *t = &T;
    t->cfg = cfg;
    t->comm = o->comm;
    t->rank = fdp_comm_rank(o->comm);
    t->world = fdp_comm_size(o->comm);
    /* a rank stuck in one collective longer than this (a peer hangs without dying) aborts the job */
    if (t->world > 1 && cfg->train.watchdog_s > 0) fdp_comm_watchdog_start(o->comm, cfg->train.watchdog_s);
    t->seed = (uint64_t)cfg->train.seed;
    t->best_bpd = INFINITY;
    t->last_bpd = NAN;
    t->per_rank_batch = cfg->train.batch_size;
    t->last_ckpt_step = -1;
    snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s", cfg->checkpoint.dir);
    fdp_err err = {{0}};
    int rc = setup_data(t);
    if (rc == FDP_EXIT_OK) rc = setup_compute(t);
    char rpath[FDP_CONFIG_STR_MAX + 64] = "";
    int resumed = 0;
    if (rc == FDP_EXIT_OK) rc = setup_resume(t, o, rpath, sizeof rpath, &resumed);
    if (rc == FDP_EXIT_OK) rc = setup_schedule(t);
    /* the metrics file (rank 0): opened and written now, so an unwritable place stops the run here */
    if (rc == FDP_EXIT_OK && fdp_comm_any(t->comm, t->rank == 0 && trn_open_metrics(t, resumed, o->force, rpath) != 0))
        rc = FDP_EXIT_BAD_INPUT;
    if (rc != FDP_EXIT_OK) goto out;

    fdp_info("flowdp-train: %s %dx%dx%d, %lld parameters | %d rank(s) x batch %d = %d | %lld train / %lld test images | "
             "%lld steps (%lld per epoch) | %s, %d thread(s) per rank | activations %s",
             t->model->type, t->model->C, t->model->H, t->model->W, (long long)t->model->params->n_params, t->world,
             t->per_rank_batch, t->per_rank_batch * t->world, (long long)t->train.n, (long long)t->test.n,
             (long long)t->total_steps, (long long)t->steps_per_epoch, t->be->name, t->be->num_threads,
             cfg->train.rebuild_activations ? "rebuilt in backward" : "stored");
    install_signals(cfg);
    if (t->rank == 0) { /* a requeued run has started: the stop marker of the last one is done */
        char marker[FDP_CONFIG_STR_MAX + 32];
        snprintf(marker, sizeof marker, "%s/" FDP_STOP_MARKER, t->ckpt_dir);
        if (unlink(marker) != 0 && errno != ENOENT) fdp_warn("cannot remove %s: %s", marker, strerror(errno));
    }
    if (t->step >= t->total_steps) {
        fdp_info("nothing to do: the checkpoint is at step %lld of %lld", (long long)t->step, (long long)t->total_steps);
    } else {
        rc = train_loop(t);
    }

out:
    if (t->world > 1) fdp_comm_watchdog_start(o->comm, 0);
    if (t->metrics && fdp_metrics_close(t->metrics, &err) != 0) {
        fdp_error("%s", err.msg);
        if (rc == FDP_EXIT_OK || rc == FDP_EXIT_REQUEUE) rc = FDP_EXIT_CKPT_FAILED;
    }
    if (t->buckets) fdp_buckets_destroy(t->buckets);
    if (t->nccl) fdp_nccl_destroy(t->nccl);
    free(t->config_text);
    if (t->arena) fdp_arena_destroy(t->arena);
    if (t->model) {
        if (t->adamax)
            fdp_adamax_free(&t->optx);
        else
            fdp_adam_free(&t->opt);
        if (t->use_ema) fdp_ema_free(&t->ema);
        fdp_model_destroy(t->model);
    }
    fdp_dequant_destroy(t->dequant);
    if (t->be) fdp_backend_destroy(t->be);
    fdp_source_close(&t->train);
    fdp_source_close(&t->test);
    return rc;
}
