/* trainer.c — the training loop: sharded data into the step (fdp_run_step, src/train/step.c:
 * dequantization noise keyed by (seed, epoch, global sample index), forward/backward,
 * gradient all-reduce, NaN/Inf agreement, clipping, the optimizer), the learning-rate
 * schedule, the non-finite policy, metrics and checkpoints from rank 0, periodic
 * test-set evaluation, signal-driven checkpoint + exit, and exact resume on any number
 * of ranks. Its compute is a run context (flowdp/run.h) built in setup_compute. */
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
#include "flowdp/run.h"
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

/* ---- evaluation --------------------------------------------------------------- */
/* Test-set bpd (every rank). 0, or -1 after one line from the first failing rank. */
static int evaluate(trainer *t, double *bpd, double *stderr_out, int64_t *images) {
    int64_t n = t->test.n, b, e;
    fdp_eval_range(n, t->rank, t->world, &b, &e);
    fdp_eval_sums s = {0, 0, 0, 0};
    fdp_comm_set_phase(t->comm, "evaluation");
    fdp_optimizer_ema_swap(t->run.opt); /* evaluate the EMA weights (when there are) */
    fdp_err err = {{0}};
    int bad = fdp_evaluate_range(t->run.model, t->run.be, t->run.arena, &t->test, b, e, t->cfg->train.eval_batch_size,
                                 t->cfg->data.prefetch, t->seed, 1, &s, &err) != 0;
    fdp_optimizer_ema_swap(t->run.opt);
    if (trn_any_bad(t, bad, "evaluation at step %lld: %s", (long long)t->step, err.msg)) return -1;
    double v[4] = {s.nll, s.bpd, s.bpd_sq, s.count};
    fdp_comm_allreduce_f64(t->comm, v, 4, FDP_REDUCE_SUM);
    fdp_eval_sums g = {v[0], v[1], v[2], v[3]};
    fdp_eval_summary(&g, bpd, stderr_out, NULL);
    *images = (int64_t)v[3];
    return 0;
}

/* XXH64 of this rank's parameters (copied to the host first when they live on the GPU) */
static uint64_t params_checksum(trainer *t) {
    fdp_params *p = t->run.model->params;
    if (!t->run.on_device) return fdp_checksum_f32(p->params, p->n_params);
    float *h = fdp_xmalloc(sizeof(float) * (size_t)(p->n_params ? p->n_params : 1));
    t->run.be->to_host(t->run.be, h, p->params, sizeof(float) * (size_t)p->n_params);
    uint64_t r = fdp_checksum_f32(h, p->n_params);
    free(h);
    return r;
}

/* every rank gets rank 0's bytes of backend memory: NCCL on the device, MPI on the host */
static void broadcast_backend(trainer *t, void *buf, int64_t bytes) {
    if (bytes <= 0 || t->world == 1) return;
    if (t->run.nccl)
        fdp_nccl_broadcast(t->run.nccl, buf, bytes, 0);
    else
        fdp_comm_broadcast(t->comm, buf, bytes, 0);
}

/* what the loop keeps between steps: the progress line's window (the steps since the last line) */
typedef struct loop_state {
    int tty;                /* rank 0 writes a progress line that rewrites itself */
    double t_start, t_window, wait_window, data_wait_window, bpd_window;
    int64_t window_steps, start_step;
} loop_state;

/* One step: this rank's slice of the step's global batch into the run's buffers, then
 * fdp_run_step (noise, forward, backward, all-reduce, clipping, update). A non-finite
 * step is skipped ([train] on_nonfinite = skip: *applied = 0, the step still counts) or
 * stops the run. FDP_EXIT_OK, or FDP_EXIT_NONFINITE after the message. */
static int train_step(trainer *t, fdp_loader *loader, loop_state *ls, double *lr, fdp_step_out *so, int *applied) {
    const fdp_config *cfg = t->cfg;
    fdp_run *r = &t->run;
    fdp_backend *be = r->be;
    int B = t->per_rank_batch;
    int64_t D = (int64_t)r->model->C * r->model->H * r->model->W;
    /* this rank's slice of the step's global batch (the sampler, data.h) */
    double dw0 = fdp_loader_wait_seconds(loader);
    const fdp_batch *bt = fdp_loader_next(loader);
    FDP_CHECK(bt && bt->step == t->step && bt->count == B, "data loader out of step at step %lld",
              (long long)t->step);
    ls->data_wait_window += fdp_loader_wait_seconds(loader) - dw0;
    be->from_host(be, r->x, bt->x, sizeof(float) * (size_t)(B * D));
    be->from_host(be, r->idx, bt->idx, sizeof(int64_t) * (size_t)B);
    *lr = fdp_lr_at(cfg, t->step, t->total_steps);
    fdp_step_in in = {.seed = t->seed, .epoch = (uint32_t)bt->epoch, .lr = (float)*lr,
                      .max_grad_norm = cfg->train.max_grad_norm,
                      .skip_nonfinite = cfg->train.on_nonfinite == FDP_NONFINITE_SKIP, .stop_signal = &g_stop_signal};
    fdp_run_step(r, &in, so);
    ls->wait_window += so->wait_s;
    *applied = !so->bad;
    if (!so->bad) return FDP_EXIT_OK;
    const char *where = so->first_nonfinite;
    if (in.skip_nonfinite) { /* fdp_run_step restored the buffers */
        t->nonfinite_skipped++;
        fdp_warn("step %lld: non-finite %s%s%s; step skipped (%lld so far)", (long long)t->step,
                 so->bad_loss ? "loss" : "gradient", where ? " first in " : "", where ? where : "",
                 (long long)t->nonfinite_skipped);
        return FDP_EXIT_OK;
    }
    fdp_error("step %lld: non-finite %s%s%s; stopping without writing anything for this step "
              "(last checkpoint: step %lld). Hint: lower [train] lr or set [train] on_nonfinite = skip",
              (long long)t->step, so->bad_loss ? "loss" : "gradient", where ? " (first in " : "",
              where ? where : "", (long long)t->last_ckpt_step);
    if (where) fdp_error("  (the gradient of %s is the first non-finite one)", where);
    return FDP_EXIT_NONFINITE;
}

/* rank 0: the metrics row of the step just taken and, when due, the progress line */
static void log_step(trainer *t, loop_state *ls, double bpd, double lr, double gnorm, double step_time) {
    const fdp_config *cfg = t->cfg;
    int B = t->per_rank_batch;
    ls->bpd_window += bpd;
    ls->window_steps++;
    if (t->rank == 0 && t->metrics) {
        double row[5] = {bpd, lr, gnorm, (double)B * t->world / step_time, trn_now_s() - ls->t_start};
        trn_metrics_call(t, MET_TRAIN_ROW, row, 0);
    }
    if (!(t->rank == 0 && (t->step % cfg->log.every == 0 || t->step == t->total_steps || ls->tty))) return;
    double el = trn_now_s() - ls->t_window;
    double ips = el > 0 ? (double)B * t->world * ls->window_steps / el : 0.0;
    double per_step = (trn_now_s() - ls->t_start) / (double)(t->step - ls->start_step);
    char eta[32];
    format_eta(per_step * (double)(t->total_steps - t->step), eta, sizeof eta);
    double ep_pct = 100.0 * (double)(t->step % t->steps_per_epoch) / (double)t->steps_per_epoch;
    if (t->step % t->steps_per_epoch == 0) ep_pct = 100.0;
    char line[256];
    snprintf(line, sizeof line,
             "step %lld/%lld | epoch %lld %5.1f%% | train bpd %.4f | lr %.2e | |g| %.3g | %.1f img/s | "
             "all-reduce wait %.1f ms | data wait %.1f ms | ETA %s",
             (long long)t->step, (long long)t->total_steps, (long long)((t->step - 1) / t->steps_per_epoch),
             ep_pct, ls->bpd_window / ls->window_steps, lr, gnorm, ips, 1e3 * ls->wait_window / ls->window_steps,
             1e3 * ls->data_wait_window / ls->window_steps, eta);
    if (ls->tty && t->step % cfg->log.every != 0 && t->step != t->total_steps) {
        printf("\r%s\033[K", line);
        fflush(stdout);
    } else {
        printf("%s%s\n", ls->tty ? "\r" : "", line);
        fflush(stdout);
        ls->t_window = trn_now_s();
        ls->window_steps = 0;
        ls->bpd_window = 0.0;
        ls->wait_window = 0.0;
        ls->data_wait_window = 0.0;
    }
}

/* periodic cross-rank parameter checksum: silent divergence is a bug */
static void check_divergence(trainer *t) {
    const fdp_config *cfg = t->cfg;
    if (!(t->world > 1 && cfg->train.check_every > 0 && t->step % cfg->train.check_every == 0)) return;
    int bad_rank = -1;
    uint64_t h = params_checksum(t);
    if (!fdp_comm_check_same_u64(t->comm, h, &bad_rank))
        FDP_FATAL("step %lld: the parameters of rank %d differ from rank 0's (silent divergence); "
                  "hint: a non-deterministic kernel or a corrupted all-reduce",
                  (long long)t->step, bad_rank);
}

/* evaluation: every eval_every steps, or at the end of each epoch, and at the end.
 * FDP_EXIT_OK (*improved: a new best test bpd), or FDP_EXIT_BAD_INPUT after one line */
static int eval_if_due(trainer *t, const loop_state *ls, int *improved) {
    const fdp_config *cfg = t->cfg;
    *improved = 0;
    int end_of_epoch = t->step % t->steps_per_epoch == 0;
    int do_eval = t->test.n > 0 && ((cfg->train.eval_every > 0 && t->step % cfg->train.eval_every == 0) ||
                                   (cfg->train.eval_every == 0 && end_of_epoch) || t->step == t->total_steps);
    if (!do_eval) return FDP_EXIT_OK;
    double tb, tse;
    int64_t nimg;
    double t0 = trn_now_s();
    if (evaluate(t, &tb, &tse, &nimg) != 0) return FDP_EXIT_BAD_INPUT;
    t->last_bpd = tb;
    *improved = tb < t->best_bpd;
    if (*improved) t->best_bpd = tb;
    char se[32] = "n/a"; /* fewer than 2 images: no standard error */
    if (isfinite(tse)) snprintf(se, sizeof se, "%.4f", tse);
    fdp_info("%stest bpd %.4f ± %s over %lld images at step %lld (epoch %.2f)%s [%.1f s]", ls->tty ? "\r" : "",
             tb, se, (long long)nimg, (long long)t->step, (double)t->step / t->steps_per_epoch,
             *improved ? ", best so far" : "", trn_now_s() - t0);
    double row[2] = {tb, tse};
    trn_metrics_call(t, MET_TEST_ROW, row, nimg);
    return FDP_EXIT_OK;
}

/* the checkpoint when due (periodic, final, stop signal, new best), then the stop-signal
 * exit. FDP_EXIT_OK to go on, else the exit code (FDP_EXIT_CKPT_FAILED, FDP_EXIT_REQUEUE) */
static int checkpoint_if_due(trainer *t, int improved, int stop) {
    const fdp_config *cfg = t->cfg;
    int do_ckpt = (cfg->checkpoint.every > 0 && t->step % cfg->checkpoint.every == 0) || t->step == t->total_steps ||
                  stop || (improved && cfg->checkpoint.keep_best);
    if (do_ckpt) {
        trn_metrics_call(t, MET_FLUSH, NULL, 0);
        fdp_comm_set_phase(t->comm, "checkpoint");
        if (!trn_save_checkpoint(t, improved && cfg->checkpoint.keep_best)) {
            if (cfg->checkpoint.on_write_error == FDP_ON_WRITE_ERROR_STOP) {
                fdp_error("stopping: [checkpoint] on_write_error = stop");
                return FDP_EXIT_CKPT_FAILED;
            }
            /* "continue" covers the periodic checkpoints only: the final one is the
             * result of the run, and the stop-signal one is what exit 3 promises (a
             * requeue after a failed one would resume from an older checkpoint and
             * could fail the same way forever) */
            if (stop || t->step == t->total_steps) {
                fdp_error("the %s checkpoint (step %lld) was not written: exiting with %d although "
                          "[checkpoint] on_write_error = continue",
                          stop ? "stop-signal" : "final", (long long)t->step, FDP_EXIT_CKPT_FAILED);
                return FDP_EXIT_CKPT_FAILED;
            }
            fdp_warn("continuing without this checkpoint ([checkpoint] on_write_error = continue)");
        }
    }
    if (stop) {
        fdp_info("stop signal received: every rank checkpointed at step %lld; exiting with %d (please requeue)",
                 (long long)t->step, FDP_EXIT_REQUEUE);
        if (t->rank == 0) trn_write_stop_marker(t);
        return FDP_EXIT_REQUEUE;
    }
    return FDP_EXIT_OK;
}

static int train_loop(trainer *t) {
    const fdp_config *cfg = t->cfg;
    int B = t->per_rank_batch;
    int64_t D = (int64_t)t->run.model->C * t->run.model->H * t->run.model->W;
    /* the batches of steps [t->step, total_steps), prepared ahead by the loader thread */
    fdp_loader_opts lo = {.src = &t->train, .mode = FDP_LOADER_TRAIN, .prefetch = cfg->data.prefetch, .batch = B,
                          .seed = t->seed, .rank = t->rank, .world = t->world, .start_step = t->step,
                          .end_step = t->total_steps, .hflip = cfg->data.hflip, .translate = cfg->data.translate};
    fdp_loader *loader = NULL;
    fdp_err lerr = {{0}};
    FDP_CHECK(fdp_loader_create(&lo, &loader, &lerr) == 0, "%s", lerr.msg);
    fdp_run_step_buffers(&t->run, B);
    loop_state ls = {.tty = isatty(STDOUT_FILENO) && cfg->log.progress && t->rank == 0, .t_start = trn_now_s(),
                     .t_window = trn_now_s(), .start_step = t->step};
    int rc = FDP_EXIT_OK;

    while (t->step < t->total_steps) {
        double ts = trn_now_s();
        double lr;
        fdp_step_out so;
        int applied;
        if ((rc = train_step(t, loader, &ls, &lr, &so, &applied)) != FDP_EXIT_OK) break;
        t->step++;
        if (!applied) continue; /* skipped: no metrics row, evaluation or checkpoint for it */
        log_step(t, &ls, fdp_bpd(so.loss_sum / t->world, D), lr, so.gnorm, trn_now_s() - ts);
        check_divergence(t);
        int improved;
        if ((rc = eval_if_due(t, &ls, &improved)) != FDP_EXIT_OK) break;
        if ((rc = checkpoint_if_due(t, improved, so.stop)) != FDP_EXIT_OK) break;
    }
    /* how long the training thread waited for data (rank 0's view), over this run */
    double run_s = trn_now_s() - ls.t_start, data_wait = fdp_loader_wait_seconds(loader);
    fdp_loader_destroy(loader); /* no HDF5 use by a loader thread after this */
    if (t->step > ls.start_step)
        fdp_info("data wait: %.3f s of %.1f s training (%.2f%%), %.2f ms per step; prefetch %d", data_wait, run_s,
                 run_s > 0 ? 100.0 * data_wait / run_s : 0.0, 1e3 * data_wait / (double)(t->step - ls.start_step),
                 cfg->data.prefetch);
    if (rc == FDP_EXIT_OK && t->step >= t->total_steps) {
        if (isfinite(t->best_bpd))
            fdp_info("finished: %lld steps, best test bpd %.4f; checkpoints in %s", (long long)t->step, t->best_bpd,
                     t->ckpt_dir);
        else
            fdp_info("finished: %lld steps (no test set); checkpoints in %s", (long long)t->step, t->ckpt_dir);
        /* the arena also serves evaluation batches ([train] eval_batch_size) */
        fdp_info("activation arena peak %.2f MiB on rank 0 (training steps and evaluation)",
                 (double)fdp_arena_peak(t->run.arena) / 1048576.0);
    }
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

/* the run context (flowdp/run.h): backend, device communicator, model, optimizer, arena */
static int setup_compute(trainer *t) {
    const fdp_config *cfg = t->cfg;
    fdp_err err = {{0}};
    const char *device = cfg->train.device == FDP_DEVICE_CUDA ? "cuda" : "cpu";
    fdp_run_init(&t->run, cfg, t->comm);
    int bad = fdp_run_backend(&t->run, device, cfg->train.threads, &err) != 0;
    if (trn_any_bad(t, bad, "%s: [train] device = %s: %s", cfg->source_path ? cfg->source_path : "config", device,
                    err.msg)) {
        return FDP_EXIT_BAD_INPUT;
    }
    /* collective with CUDA: checks that no two ranks of a node share a GPU, then ncclCommInitRank */
    if (fdp_run_nccl(&t->run, cfg->train.watchdog_s > 0 ? cfg->train.watchdog_s : 600.0, &err) != 0) {
        if (t->rank == 0) fprintf(stderr, "%s: %s\n", fdp_log_prog(), err.msg);
        return FDP_EXIT_BAD_INPUT;
    }
    if (fdp_run_model(&t->run, t->train.c, t->train.h, t->train.w, t->seed, &err) != 0) {
        if (t->rank == 0) fprintf(stderr, "%s: %s\n", fdp_log_prog(), err.msg);
        return FDP_EXIT_BAD_INPUT;
    }
    fdp_run_optimizer(&t->run);
    fdp_run_arena(&t->run);
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
        fdp_params *p = t->run.model->params;
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
    fdp_run_buckets(&t->run); /* and the training context (the all-reduce hooks) */
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
             t->run.model->type, t->run.model->C, t->run.model->H, t->run.model->W, (long long)t->run.model->params->n_params, t->world,
             t->per_rank_batch, t->per_rank_batch * t->world, (long long)t->train.n, (long long)t->test.n,
             (long long)t->total_steps, (long long)t->steps_per_epoch, t->run.be->name, t->run.be->num_threads,
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
    free(t->config_text);
    fdp_run_free(&t->run);
    fdp_source_close(&t->train);
    fdp_source_close(&t->test);
    return rc;
}
