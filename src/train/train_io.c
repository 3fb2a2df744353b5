/* train_io.c — flowdp-train's dealings with the file system and its one-line errors:
 * checkpoints (save from rank 0, load on every rank), the metrics file, the
 * checkpoint directory checked before the first step, the STOPPED marker, and the
 * collective "bad input on some rank" report. The loop is in trainer.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/fsutil.h"
#include "flowdp/hdf5_lock.h"
#include "flowdp/log.h"
#include "flowdp/outpath.h"
#include "flowdp/trainer.h"
#include "trainer_internal.h"

double trn_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}



/* Collective: did any rank see bad input? The lowest such rank prints its message,
 * once for the whole job, as "flowdp-train: <message>" (the program then exits 2). */
int trn_any_bad(trainer *t, int bad, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int trn_any_bad(trainer *t, int bad, const char *fmt, ...) {
    int64_t first = bad ? t->rank : INT64_MAX;
    if (t->world > 1) fdp_comm_allreduce_i64(t->comm, &first, 1, FDP_REDUCE_MIN);
    if (first == INT64_MAX) return 0;
    if (first == t->rank) {
        char msg[8192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s: %s\n", fdp_log_prog(), msg);
        fflush(stderr);
    }
    return 1;
}

/* Can files be created in dir? (root passes permission bits, so try: a read-only
 * mount or a full inode table shows up here.) 0, or -1 with errno. */
int trn_probe_writable(const char *dir) {
    char probe[FDP_CONFIG_STR_MAX + 64];
    snprintf(probe, sizeof probe, "%s/.flowdp-write-test.%ld", dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return -1;
    close(fd);
    unlink(probe);
    return 0;
}

/* Run one metrics call under the HDF5 lock (rank 0). A failure is a warning once per
 * streak of failures (the rows stay in memory and are written by the next flush). */
void trn_metrics_call(trainer *t, int what, const double *v, int64_t nimg) {
    if (t->rank != 0 || !t->metrics) return;
    fdp_err err = {{0}};
    double ep = (double)t->step / (double)t->steps_per_epoch;
    fdp_hdf5_lock();
    int rc;
    if (what == MET_TRAIN_ROW)
        rc = fdp_metrics_train_row(t->metrics, t->step, ep, v[0], v[1], v[2], v[3], v[4], &err);
    else if (what == MET_TEST_ROW)
        rc = fdp_metrics_test_row(t->metrics, t->step, ep, v[0], v[1], nimg, &err);
    else
        rc = fdp_metrics_flush(t->metrics, &err);
    fdp_hdf5_unlock();
    if (rc && !t->metrics_failing)
        fdp_warn("%s; the rows stay in memory and the next flush retries", err.msg);
    else if (!rc && t->metrics_failing && what != MET_TRAIN_ROW)
        fdp_info("metrics written again (step %lld)", (long long)t->step);
    if (rc || what != MET_TRAIN_ROW) t->metrics_failing = rc != 0;
}

/* Rank 0, after every rank checkpointed on a stop signal: <dir>/STOPPED says so, for a
 * job script that cannot see exit code 3 (mpiexec returns 1 when it was sent SIGTERM
 * itself, whatever its ranks returned). Removed when a run starts training. */
void trn_write_stop_marker(trainer *t) {
    char path[FDP_CONFIG_STR_MAX + 32], tmp[FDP_CONFIG_STR_MAX + 64], ck[FDP_CONFIG_STR_MAX + 64];
    snprintf(path, sizeof path, "%s/" FDP_STOP_MARKER, t->ckpt_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    fdp_ckpt_path_for_step(t->ckpt_dir, t->step, ck, sizeof ck);
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    if (f) {
        ok = fprintf(f, "stopped by a signal after every rank checkpointed at step %lld: requeue to continue\n"
                        "checkpoint %s\n", (long long)t->step, ck) > 0;
        ok = (fflush(f) == 0 && fsync(fileno(f)) == 0) && ok;
        ok = fclose(f) == 0 && ok;
    }
    if (ok && rename(tmp, path) == 0) return;
    fdp_warn("cannot write the stop marker %s: %s (exit code 3 still says it)", path, strerror(errno));
    unlink(tmp);
}

/* ---- checkpoints ---------------------------------------------------------------- */
void trn_fill_meta(trainer *t, fdp_ckpt_meta *meta) {
    memset(meta, 0, sizeof *meta);
    meta->step = t->step;
    meta->epoch = t->steps_per_epoch ? t->step / t->steps_per_epoch : 0;
    meta->epoch_step = t->steps_per_epoch ? t->step % t->steps_per_epoch : 0;
    meta->seed = t->seed;
    meta->world_size = t->world;
    meta->best_test_bpd = t->best_bpd;
    meta->last_test_bpd = t->last_bpd;
    snprintf(meta->model_type, sizeof meta->model_type, "%s", t->run.model->type);
    meta->nonfinite_skipped = t->nonfinite_skipped;
    meta->image_c = t->run.model->C;
    meta->image_h = t->run.model->H;
    meta->image_w = t->run.model->W;
    meta->global_batch = (int64_t)t->per_rank_batch * t->world;
}

/* host views of the state (the CPU backend's memory is host memory; a device
 * backend copies into scratch here) */
fdp_ckpt_state trn_host_state(trainer *t, float **scratch) {
    fdp_params *p = t->run.model->params;
    fdp_optimizer *o = t->run.opt;
    fdp_backend *be = t->run.be;
    fdp_ckpt_state s = {p, p->params, p->buffers, fdp_optimizer_m(o), fdp_optimizer_v(o), fdp_optimizer_ema_weights(o)};
    *scratch = NULL;
    if (be->dev != FDP_DEVICE_CPU) {
        size_t np = (size_t)p->n_params, nb = (size_t)p->n_buffers;
        float *h = fdp_xmalloc(sizeof(float) * (4 * np + nb + 1));
        be->to_host(be, h, p->params, sizeof(float) * np);
        be->to_host(be, h + np, fdp_optimizer_m(o), sizeof(float) * np);
        be->to_host(be, h + 2 * np, fdp_optimizer_v(o), sizeof(float) * np);
        be->to_host(be, h + 4 * np, p->buffers, sizeof(float) * nb);
        s.params = h;
        s.opt_m = h + np;
        s.opt_v = h + 2 * np;
        s.buffers = h + 4 * np;
        if (fdp_optimizer_has_ema(o)) {
            be->to_host(be, h + 3 * np, fdp_optimizer_ema_weights(o), sizeof(float) * np);
            s.ema = h + 3 * np;
        }
        *scratch = h;
    }
    return s;
}

/* rank 0 writes ckpt_<step>.h5 (and best.h5 when asked); every rank learns whether it worked */
int trn_save_checkpoint(trainer *t, int also_best) {
    int ok = 1;
    if (t->rank == 0) {
        fdp_hdf5_lock(); /* a loader thread may be reading shards (hdf5_lock.h) */
        char path[FDP_CONFIG_STR_MAX + 64];
        fdp_ckpt_path_for_step(t->ckpt_dir, t->step, path, sizeof path);
        float *scratch;
        fdp_ckpt_state s = trn_host_state(t, &scratch);
        fdp_ckpt_meta meta;
        trn_fill_meta(t, &meta);
        fdp_err err = {{0}};
        double t0 = trn_now_s();
        if (fdp_ckpt_save(path, &s, &meta, t->config_text, &err) != 0) {
            fdp_error("checkpoint at step %lld not written: %s", (long long)t->step, err.msg);
            ok = 0;
        } else {
            fdp_debug("checkpoint %s written in %.2f s", path, trn_now_s() - t0);
            t->last_ckpt_step = t->step;
            if (also_best) {
                char best[FDP_CONFIG_STR_MAX + 16];
                snprintf(best, sizeof best, "%s/best.h5", t->ckpt_dir);
                if (fdp_ckpt_copy_atomic(path, best, &err) != 0) {
                    fdp_error("best checkpoint not written: %s", err.msg);
                    ok = 0;
                }
            }
            if (fdp_ckpt_prune(t->ckpt_dir, t->cfg->checkpoint.keep_last, path, t->step, &err) != 0)
                fdp_warn("pruning old checkpoints: %s", err.msg);
        }
        free(scratch);
        fdp_hdf5_unlock();
    }
    int flag = ok;
    fdp_comm_broadcast(t->comm, &flag, sizeof flag, 0);
    return flag;
}

/* Load path into the model and optimizer (every rank reads it). Returns 0, or -1 with err. */
int trn_load_checkpoint(trainer *t, const char *path, fdp_err *err) {
    fdp_params *p = t->run.model->params;
    size_t np = (size_t)p->n_params, nb = (size_t)p->n_buffers;
    /* into scratch first: a failed load must not leave a half-loaded model */
    float *h = fdp_xmalloc(sizeof(float) * (4 * np + nb + 1));
    int sections = fdp_ckpt_sections(path, err);
    if (sections < 0) {
        free(h);
        return -1;
    }
    int use_ema = fdp_optimizer_has_ema(t->run.opt);
    int have_ema = use_ema && (sections & FDP_CKPT_HAS_EMA);
    if (use_ema && !have_ema)
        fdp_warn("%s has no EMA weights; the EMA starts from the loaded parameters", path);
    fdp_ckpt_state s = {p, h, h + 4 * np, h + np, h + 2 * np, have_ema ? h + 3 * np : NULL};
    fdp_ckpt_meta meta;
    if (fdp_ckpt_load_expect(path, t->run.model->type, &s, &meta, NULL, err) != 0) {
        free(h);
        return -1;
    }
    /* a model of the same parameters may run on another image size (a RealNVP's
     * convolutions do): the checkpoint says which images it learned */
    if (meta.image_c > 0 && (meta.image_c != t->train.c || meta.image_h != t->train.h || meta.image_w != t->train.w)) {
        free(h);
        return fdp_err_set(err, "checkpoint %s was trained on %dx%dx%d images; [data] train %s is %dx%dx%d", path,
                           meta.image_c, meta.image_h, meta.image_w, t->cfg->data.train, t->train.c, t->train.h,
                           t->train.w);
    }
    t->run.be->from_host(t->run.be, p->params, h, sizeof(float) * np);
    t->run.be->from_host(t->run.be, fdp_optimizer_m(t->run.opt), h + np, sizeof(float) * np);
    t->run.be->from_host(t->run.be, fdp_optimizer_v(t->run.opt), h + 2 * np, sizeof(float) * np);
    t->run.be->from_host(t->run.be, p->buffers, h + 4 * np, sizeof(float) * nb);
    if (use_ema) {
        t->run.be->from_host(t->run.be, fdp_optimizer_ema_weights(t->run.opt), have_ema ? h + 3 * np : h,
                             sizeof(float) * np);
        fdp_optimizer_set_ema_updates(t->run.opt, meta.step > 0 ? meta.step : 0);
    }
    free(h);
    t->step = meta.step;
    fdp_optimizer_set_steps(t->run.opt, meta.step - meta.nonfinite_skipped);
    t->best_bpd = meta.best_test_bpd;
    t->last_bpd = meta.last_test_bpd;
    t->nonfinite_skipped = meta.nonfinite_skipped;
    if (meta.seed != t->seed)
        fdp_warn("%s was written with seed %llu, the config says %llu: continuing with the checkpoint's", path,
                 (unsigned long long)meta.seed, (unsigned long long)t->seed);
    t->seed = meta.seed;
    /* keep the global batch of the run that wrote it, whatever the number of ranks now */
    if (meta.global_batch > 0 && meta.global_batch != (int64_t)t->per_rank_batch * t->world) {
        if (meta.global_batch % t->world != 0)
            return fdp_err_set(err, "%s: its global batch %lld cannot be split over %d ranks", path,
                               (long long)meta.global_batch, t->world);
        int b = (int)(meta.global_batch / t->world);
        if (t->rank == 0)
            fdp_warn("%s: written by %d rank(s) with global batch %lld; continuing with %d rank(s) x %d", path,
                 meta.world_size, (long long)meta.global_batch, t->world, b);
        t->per_rank_batch = b;
    }
    fdp_info("resumed from %s at step %lld (epoch %lld)", path, (long long)meta.step, (long long)meta.epoch);
    return 0;
}

/* Rank 0: open (and write) the metrics file. On resume an unreadable one is moved
 * aside and a new one started; a new run replaces only a flowdp metrics file
 * (or anything with --force). 0, or -1 after printing one line. */
/* Is name one of the files a checkpoint directory holds (ckpt_*.h5, best.h5, STOPPED,
 * a writer's temporary)? */
static int ckpt_dir_name(const char *name) {
    return (strncmp(name, "ckpt_", 5) == 0 && strstr(name, ".h5")) || strncmp(name, "best.h5", 7) == 0 ||
           strcmp(name, FDP_STOP_MARKER) == 0;
}

/* Rank 0, before the metrics file is opened: a metrics path that is one of the run's
 * inputs or one of its own checkpoint files is refused, even with --force. 0, or -1
 * with msg. */
static int metrics_collides(trainer *t, const char *mpath, const char *resume_path, char *msg, size_t len) {
    const fdp_config *cfg = t->cfg;
    const struct {
        const char *path, *what;
    } in[] = {{cfg->source_path, "the config file"},
              {cfg->data.train, "the training set ([data] train)"},
              {cfg->data.test, "the test set ([data] test)"},
              {resume_path, "the checkpoint it resumes from"}};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (in[i].path && in[i].path[0] && fdp_out_same_file(mpath, in[i].path) == 1) {
            snprintf(msg, len, "[log] metrics %.4000s: is %s; choose another file", mpath, in[i].what);
            return -1;
        }
    char dir[FDP_CONFIG_STR_MAX + 32];
    fdp_dir_of(mpath, dir, sizeof dir);
    const char *base = strrchr(mpath, '/');
    base = base ? base + 1 : mpath;
    if (ckpt_dir_name(base) && fdp_out_same_file(dir, t->ckpt_dir) == 1) {
        snprintf(msg, len, "[log] metrics %.3900s: is a name the checkpoints use in [checkpoint] dir; choose another file",
                 mpath);
        return -1;
    }
    return 0;
}

int trn_check_ckpt_dir(const char *dir, int force, char *msg, size_t len) {
    DIR *d = opendir(dir);
    if (!d) return 0; /* reported by the writability check */
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        int ours = (strncmp(e->d_name, "ckpt_", 5) == 0 && strlen(e->d_name) > 8 &&
                    strcmp(e->d_name + strlen(e->d_name) - 3, ".h5") == 0) ||
                   strcmp(e->d_name, "best.h5") == 0;
        if (!ours) continue;
        char full[FDP_CONFIG_STR_MAX + 300];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(full, &st) != 0) continue;
        if (!S_ISREG(st.st_mode)) {
            snprintf(msg, len, "[checkpoint] dir: %s is %s, not a checkpoint file; move it away", full,
                     S_ISDIR(st.st_mode) ? "a directory" : S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
            rc = -1;
        } else if (!force && st.st_size > 0 && !fdp_out_is_kind(full, FDP_OUT_HDF5)) {
            snprintf(msg, len, "[checkpoint] dir: %s is named like a checkpoint but is not an HDF5 file; move it "
                               "away or pass --force to let the run replace it", full);
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

int trn_open_metrics(trainer *t, int resumed, int force, const char *resume_path) {
    const fdp_config *cfg = t->cfg;
    char mpath[FDP_CONFIG_STR_MAX + 32];
    if (cfg->log.metrics[0])
        snprintf(mpath, sizeof mpath, "%s", cfg->log.metrics);
    else
        snprintf(mpath, sizeof mpath, "%s/metrics.h5", t->ckpt_dir);
    char why[4096];
    if ((cfg->log.metrics[0] || resumed) && metrics_collides(t, mpath, resumed ? resume_path : NULL, why, sizeof why)) {
        fprintf(stderr, "%s: %s\n", fdp_log_prog(), why);
        return -1;
    }
    fdp_err err = {{0}};
    fdp_hdf5_lock();
    int mode = resumed ? 0 : FDP_METRICS_TRUNCATE | (force ? FDP_METRICS_FORCE : 0);
    t->metrics = fdp_metrics_open(mpath, mode, &err);
    struct stat st;
    /* resuming: a damaged metrics file (HDF5, unreadable) is kept aside for inspection and a
     * new one started; a file of another kind (not HDF5, or another program's HDF5 file) is
     * refused unless --force */
    int foreign = !t->metrics && resumed && (!fdp_out_is_kind(mpath, FDP_OUT_HDF5) || strstr(err.msg, "'format'"));
    if (!t->metrics && resumed && stat(mpath, &st) == 0 && S_ISREG(st.st_mode) && (!foreign || force)) {
        char aside[FDP_CONFIG_STR_MAX + 64];
        snprintf(aside, sizeof aside, "%s.corrupt.%ld", mpath, (long)time(NULL));
        if (rename(mpath, aside) != 0) {
            fprintf(stderr, "%s: %s; and it cannot be moved aside to %s: %s\n", fdp_log_prog(), err.msg, aside, strerror(errno));
        } else {
            fdp_warn("%s; moved aside to %s", err.msg, aside);
            t->metrics = fdp_metrics_open(mpath, FDP_METRICS_TRUNCATE, &err);
            if (!t->metrics) fprintf(stderr, "%s: %s\n", fdp_log_prog(), err.msg);
        }
    } else if (!t->metrics && foreign) {
        fprintf(stderr, "%s: %s; it is not a flowdp metrics file: move it away, choose another [log] metrics, or "
                        "pass --force to move it aside\n", fdp_log_prog(), err.msg);
    } else if (!t->metrics) {
        fprintf(stderr, "%s: %s\n", fdp_log_prog(), err.msg);
    }
    if (t->metrics && resumed && fdp_metrics_truncate_after(t->metrics, t->step, &err) != 0)
        fdp_warn("%s", err.msg); /* written again by the next flush */
    fdp_hdf5_unlock();
    return t->metrics ? 0 : -1;
}

