/* flowdp_bench.c — flowdp-bench: times training steps on random 8-bit images.
 *
 * Two modes:
 *  - flags (--in/--scales/--mid/--blocks): one process, a RealNVP, forward +
 *    backward + clipped Adam, the way shared/anchors/bench_torch_realnvp.py
 *    times PyTorch; --rebuild: with [train] rebuild_activations' backward;
 *  - --config FILE (any model a config describes, e.g. configs/realnvp_cifar10.ini
 *    or configs/glow_cifar10.ini), run under mpiexec/srun with one rank per GPU:
 *    the trainer's step exactly, the same function fdp_run_step (flowdp/run.h)
 *    on the same run context: dequantization noise, forward, backward with
 *    gradient buckets all-reduced as backward fills them — NCCL on the GPU, MPI
 *    on the CPU —, synchronized BatchNorm, the non-finite agreement, clipping,
 *    the configured optimizer and EMA ([train] lr without its schedule), and it
 *    reports images/s per rank (= per GPU) and in total, the time per step spent
 *    in the gradient all-reduce, and peak memory (device memory with CUDA).
 *  - --data INDEX: the data loader instead: T reader threads (--readers), each
 *    the loader of one rank of a T-rank job reading its batches from packed
 *    shards (decode NHWC -> NCHW float, augmentation when asked).
 * All print as their LAST line `images/s: X  peak_rss_mb: Y` (images/s of one
 * rank from the median step after warm-up; with --data the total over the
 * reader threads). */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "flowdp/cli.h"
#include "flowdp/arena.h"
#include "flowdp/loader.h"
#include "flowdp/buckets.h"
#include "flowdp/comm.h"
#include "flowdp/config.h"
#include "flowdp/dequant.h"
#include "flowdp/cuda.h"
#include "flowdp/log.h"
#include "flowdp/model.h"
#include "flowdp/nccl.h"
#include "flowdp/optim.h"
#include "flowdp/realnvp.h"
#include "flowdp/rng.h"
#include "flowdp/run.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- --data: loader throughput --------------------------------------------------- */
typedef struct reader_job {
    const char *index;
    int rank, world, batch, steps, hflip;
    double translate;
    int64_t images;
    int failed;
    fdp_err err;
} reader_job;

static void *reader_main(void *arg) {
    reader_job *j = arg;
    fdp_source src;
    if (fdp_source_open("hdf5", j->index, 1, 0, &src, &j->err) != 0) {
        j->failed = 1;
        return NULL;
    }
    fdp_loader_opts lo = {.src = &src, .mode = FDP_LOADER_TRAIN, .prefetch = 0, .batch = j->batch, .seed = 1,
                          .rank = j->rank, .world = j->world, .start_step = 0, .end_step = j->steps,
                          .hflip = j->hflip, .translate = j->translate};
    fdp_loader *l = NULL;
    if (fdp_loader_create(&lo, &l, &j->err) != 0) {
        j->failed = 1;
        fdp_source_close(&src);
        return NULL;
    }
    for (const fdp_batch *b; (b = fdp_loader_next(l)) != NULL;) j->images += b->count;
    fdp_loader_destroy(l);
    fdp_source_close(&src);
    return NULL;
}

static int bench_data(const char *index, int readers, int batch, int steps, int hflip, double translate) {
    reader_job *jobs = calloc((size_t)readers, sizeof *jobs);
    pthread_t *th = calloc((size_t)readers, sizeof *th);
    if (!jobs || !th) return 2;
    fdp_source probe;
    fdp_err err = {{0}};
    if (fdp_source_open("hdf5", index, 1, 0, &probe, &err) != 0) {
        fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    if (probe.n < (int64_t)batch * readers) {
        fprintf(stderr, "flowdp-bench: %s: %lld images cannot fill one global batch of %d x %d readers\n", index,
                (long long)probe.n, batch, readers);
        fdp_source_close(&probe);
        free(jobs);
        free(th);
        return 2;
    }
    printf("flowdp-bench --data: %s: %lld images of %dx%dx%d; %d reader thread(s) x %d batches of %d%s%s\n",
           probe.desc, (long long)probe.n, probe.c, probe.h, probe.w, readers, steps, batch, hflip ? ", hflip" : "",
           translate > 0 ? ", translate" : "");
    fdp_source_close(&probe);
    double t0 = now_s();
    for (int r = 0; r < readers; r++) {
        jobs[r] = (reader_job){.index = index, .rank = r, .world = readers, .batch = batch, .steps = steps,
                               .hflip = hflip, .translate = translate};
        if (pthread_create(&th[r], NULL, reader_main, &jobs[r]) != 0) {
            fprintf(stderr, "flowdp-bench: cannot start reader threads\n");
            return 2;
        }
    }
    int64_t total = 0;
    int bad = 0;
    for (int r = 0; r < readers; r++) {
        pthread_join(th[r], NULL);
        total += jobs[r].images;
        if (jobs[r].failed && !bad) /* one line: every reader fails alike */
            fprintf(stderr, "flowdp-bench: %s\n", jobs[r].err.msg);
        bad |= jobs[r].failed;
    }
    double el = now_s() - t0;
    free(jobs);
    free(th);
    if (bad) return 2;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%lld images in %.2f s\n", (long long)total, el);
    printf("images/s: %.0f  peak_rss_mb: %.1f\n", (double)total / el, ru.ru_maxrss / 1024.0);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: flowdp-bench [--in CxHxW] [--batch B] [--scales S] [--mid M] [--blocks K] [--steps N]\n"
            "                    [--warmup W] [--threads T] [--device cpu|cuda] [--rebuild]\n"
            "       flowdp-bench --data INDEX [--readers T] [--batch B] [--steps N] [--hflip] [--translate F]\n"
            "       [mpiexec -n R | srun] flowdp-bench --config FILE [--set S.K=V ...] [--in CxHxW] [--batch B]\n"
            "                    [--steps N] [--warmup W] [--threads T] [--device cpu|cuda]\n"
            "Times training steps on random 8-bit images. Without --config: a RealNVP built from the flags,\n"
            "one process (forward + backward + clipped Adam). With --config: the model, optimizer, clipping\n"
            "and per-rank batch of that config, the trainer's step on every rank (gradient buckets through\n"
            "NCCL with --device cuda, through MPI on the CPU; synchronized BatchNorm), reporting images/s\n"
            "per rank (= per GPU) and in total, gradient all-reduce time per step and peak memory.\n"
            "  --config F   a training config (the model, [train] batch_size, optimizer, device)\n"
            "  --set S.K=V  override a config key (repeatable)\n"
            "  --in CxHxW   input shape (default 1x28x28; with --config: 3x32x32 for cifar10 data,\n"
            "               1x28x28 for idx, required for hdf5)\n"
            "  --batch B    images per step and rank (default 64; with --config: [train] batch_size)\n"
            "  --scales S   RealNVP scales (default 2)\n"
            "  --mid M      mid channels of the s/t ResNets (default 32)\n"
            "  --blocks K   residual blocks per s/t ResNet (default 2)\n"
            "  --steps N    timed steps (default 30)\n"
            "  --warmup W   steps excluded from the median (default 3)\n"
            "  --threads T  CPU threads (default: all cores)\n"
            "  --device D   cpu (default; with --config: [train] device) or cuda (this rank's GPU) or cuda:N\n"
            "  --rebuild    without --config: keep no s/t activations, rebuild them in backward (as\n"
            "               [train] rebuild_activations; with --config: --set train.rebuild_activations=true)\n"
            "Prints per-phase times, then as the last line: images/s: X  peak_rss_mb: Y\n"
            "--data INDEX times the data loader on packed shards instead (flowdp-pack): T reader threads\n"
            "(--readers, default 1), each the loader of rank t of a T-rank job, read --steps batches\n"
            "(default 30) of --batch images (default 64) each, with the augmentation asked for; the\n"
            "last line is then the total images/s of the T threads and the peak RSS.\n");
}

/* ---- --config mode: the trainer's step on every rank -------------------------------------- */

/* what the command line asked for (main's parse_args) */
typedef struct bench_opts {
    int C, H, W, batch, scales, mid, blocks, steps, warmup, threads;
    int in_given, batch_given, device_given, rebuild;
    const char *device, *config_path, *data;
    const char **sets;
    int nsets;
    int readers, hflip;
    double translate;
} bench_opts;

static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

/* the config file with the --set overrides, and the image shape, batch, device and threads
 * it implies where the command line did not give them. 0, or 2 after one line from rank 0 */
static int bench_load_config(const bench_opts *o, int rank, fdp_config *cfg, int *C, int *H, int *W, int *batch,
                             const char **device, int *threads) {
    fdp_err err = {{0}};
    fdp_config_defaults(cfg);
    int bad = fdp_config_load_file(cfg, o->config_path, &err) != 0;
    for (int i = 0; !bad && i < o->nsets; i++) bad = fdp_config_set(cfg, o->sets[i], &err) != 0;
    if (!bad) bad = fdp_config_validate(cfg, &err) != 0;
    if (bad) {
        if (rank == 0) fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    fdp_log_set_level(cfg->log.level);
    *C = o->in_given ? o->C : 0, *H = o->H, *W = o->W;
    if (*C <= 0) { /* the image shape of the configured data */
        if (cfg->data.format == FDP_DATA_CIFAR10) *C = 3, *H = *W = 32;
        else if (cfg->data.format == FDP_DATA_IDX) *C = 1, *H = *W = 28;
        else {
            if (rank == 0)
                fprintf(stderr, "flowdp-bench: %s: give the image shape with --in CxHxW for [data] format = hdf5\n",
                        o->config_path);
            return 2;
        }
    }
    *batch = o->batch_given ? o->batch : cfg->train.batch_size;
    *device = o->device_given ? o->device : cfg->train.device == FDP_DEVICE_CUDA ? "cuda" : "cpu";
    *threads = o->threads > 0 ? o->threads : cfg->train.threads;
    return 0;
}

/* the run context (flowdp/run.h) the trainer builds: backend, NCCL with CUDA, model,
 * optimizer, arena, buckets, the step's buffers. 0, or 2 after the error line(s) */
static int bench_setup(fdp_run *r, const char *config_path, int C, int H, int W, int batch, const char *device,
                       int threads) {
    fdp_err err = {{0}};
    int bad = fdp_run_backend(r, device, threads, &err) != 0;
    if (fdp_comm_any(r->comm, bad)) {
        if (bad) fprintf(stderr, "flowdp-bench: rank %d: %s\n", r->rank, err.msg);
        return 2;
    }
    if (fdp_run_nccl(r, 0.0, &err) != 0) {
        if (r->rank == 0) fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    bad = fdp_run_model(r, C, H, W, r->cfg->train.seed, &err) != 0;
    if (fdp_comm_any(r->comm, bad)) {
        if (bad && r->rank == 0) fprintf(stderr, "flowdp-bench: %s: %s\n", config_path, err.msg);
        return 2;
    }
    fdp_run_optimizer(r);
    fdp_run_arena(r);
    fdp_run_buckets(r);
    fdp_run_step_buffers(r, batch);
    if (r->nccl) fdp_nccl_set_timing(r->nccl, 1);
    return 0;
}

/* what the timed steps measured */
typedef struct bench_times {
    double *t_step, *t_comm; /* per step: the step, the host wait in the gradient all-reduce */
    double first_bpd, last_bpd, comm_ms;
    int comm_count, nonfinite;
} bench_times;

/* steps training steps (fdp_run_step, as the trainer's loop runs it) on random 8-bit
 * images, different on every rank; making the images is not timed */
static void bench_steps(fdp_run *r, int steps, int warmup, bench_times *bt) {
    fdp_backend *be = r->be;
    const fdp_config *cfg = r->cfg;
    const int batch = r->batch;
    const int64_t D = (int64_t)r->model->C * r->model->H * r->model->W;
    int64_t *hidx = malloc(sizeof(int64_t) * (size_t)batch);
    float *hx = malloc(sizeof(float) * (size_t)(batch * D));
    if (!hidx || !hx) FDP_FATAL("flowdp-bench: out of memory");
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < batch; i++) hidx[i] = ((int64_t)s * r->world + r->rank) * batch + i;
        be->from_host(be, r->idx, hidx, sizeof(int64_t) * (size_t)batch);
        fdp_philox_fill_args px = {r->x, r->idx, D, 7, 0, FDP_RNG_AUGMENT, 0};
        be->philox_fill(be, batch * D, &px);
        be->to_host(be, hx, r->x, sizeof(float) * (size_t)(batch * D));
        for (int64_t j = 0; j < batch * D; j++) hx[j] = (float)(int)(hx[j] * 256.0f) / 255.0f;
        be->from_host(be, r->x, hx, sizeof(float) * (size_t)(batch * D));
        be->synchronize(be);
        fdp_comm_barrier(r->comm);
        if (s == warmup && r->nccl) (void)fdp_nccl_take_busy_ms(r->nccl, NULL); /* forget the warm-up's collectives */

        /* the trainer's step: noise (seed 7), forward, backward with the buckets, the
         * non-finite agreement, clipping, the update (EMA included); [train] lr without
         * its schedule */
        double t0 = now_s();
        fdp_step_in in = {.seed = 7, .epoch = 0, .lr = (float)cfg->train.lr, .max_grad_norm = cfg->train.max_grad_norm,
                          .skip_nonfinite = cfg->train.on_nonfinite == FDP_NONFINITE_SKIP};
        fdp_step_out so;
        fdp_run_step(r, &in, &so);
        be->synchronize(be);
        bt->t_step[s] = now_s() - t0;
        bt->t_comm[s] = so.wait_s;
        bt->nonfinite += so.bad;
        double bpd = fdp_bpd(so.nll, D);
        if (s == 0) bt->first_bpd = bpd;
        bt->last_bpd = bpd;
    }
    if (r->nccl) bt->comm_ms = fdp_nccl_take_busy_ms(r->nccl, &bt->comm_count);
    free(hx);
    free(hidx);
}

/* the medians (the slowest rank's), the all-reduce time, memory; rank 0 prints */
static void bench_report(fdp_run *r, int steps, int warmup, bench_times *bt) {
    const int n = steps - warmup, world = r->world, batch = r->batch;
    double med = median_of(bt->t_step + warmup, n), med_wait = median_of(bt->t_comm + warmup, n);
    double slow[2] = {med, med_wait};
    fdp_comm_allreduce_f64(r->comm, slow, 2, FDP_REDUCE_MAX); /* the slowest rank sets the pace */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss[1] = {ru.ru_maxrss / 1024.0};
    fdp_comm_allreduce_f64(r->comm, rss, 1, FDP_REDUCE_MAX);
    fdp_backend_mem_stats ms;
    int have_ms = fdp_backend_memory_stats(r->be, &ms) == 0;
    if (r->rank != 0) return;
    printf("median step %.1f ms on rank 0, %.1f ms on the slowest rank, over %d steps after %d warm-up; "
           "train bpd first %.4f last %.4f\n",
           1e3 * med, 1e3 * slow[0], n, warmup, bt->first_bpd, bt->last_bpd);
    if (bt->nonfinite > 0)
        printf("non-finite loss or gradient in %d of %d steps on rank 0 (not applied, as [train] on_nonfinite)\n",
               bt->nonfinite, steps);
    if (world > 1 && r->nccl)
        printf("gradient all-reduce: NCCL busy %.2f ms per step (%d collectives in %d steps, incl. synchronized "
               "BatchNorm); median host wait in wait_all %.2f ms\n",
               bt->comm_ms / n, bt->comm_count, n, 1e3 * slow[1]);
    else if (world > 1)
        printf("gradient all-reduce: median wait in wait_all %.2f ms per step (slowest rank; the rest overlaps "
               "backward)\n",
               1e3 * slow[1]);
    if (have_ms)
        printf("device memory: peak %.1f MiB in flowdp's allocations, pool high-water %.1f MiB used / %.1f MiB "
               "reserved, %.1f MiB scratch; device %.0f of %.0f MiB in use now\n",
               ms.backend_peak / 1048576.0, ms.pool_used_high / 1048576.0, ms.pool_reserved_high / 1048576.0,
               ms.scratch_bytes / 1048576.0, (ms.device_total - ms.device_free) / 1048576.0,
               ms.device_total / 1048576.0);
    printf("activation arena peak %.1f MiB; total %.2f images/s over %d rank(s)\n",
           (double)fdp_arena_peak(r->arena) / (1 << 20), world * batch / slow[0], world);
    printf("images/s: %.2f  peak_rss_mb: %.1f\n", batch / slow[0], rss[0]);
}

static int bench_config(const bench_opts *o) {
    fdp_comm *comm = NULL;
    fdp_err err = {{0}};
    if (fdp_comm_init(NULL, NULL, &comm, &err) != 0) {
        fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 1;
    }
    fdp_config cfg;
    int C, H, W, batch, threads;
    const char *device;
    int rc = bench_load_config(o, fdp_comm_rank(comm), &cfg, &C, &H, &W, &batch, &device, &threads);
    fdp_run r;
    fdp_run_init(&r, &cfg, comm);
    if (rc == 0) rc = bench_setup(&r, o->config_path, C, H, W, batch, device, threads);
    if (rc == 0) {
        bench_times bt = {.t_step = calloc((size_t)o->steps, sizeof(double)),
                          .t_comm = calloc((size_t)o->steps, sizeof(double))};
        if (!bt.t_step || !bt.t_comm) FDP_FATAL("flowdp-bench: out of memory");
        if (r.rank == 0)
            printf("flowdp-bench: %s (%s) %dx%dx%d, %lld parameters, %d rank(s) x batch %d, %s, %d thread(s) per "
                   "rank, gradient all-reduce via %s\n",
                   o->config_path, r.model->type, C, H, W, (long long)r.model->params->n_params, r.world, batch,
                   r.be->name, r.be->num_threads, r.world == 1 ? "nothing (1 rank)" : r.nccl ? "NCCL" : "MPI");
        bench_steps(&r, o->steps, o->warmup, &bt);
        bench_report(&r, o->steps, o->warmup, &bt);
        free(bt.t_step);
        free(bt.t_comm);
    }
    fdp_run_free(&r);
    fdp_config_free(&cfg);
    fdp_comm_finalize(comm);
    return rc;
}

/* ---- flags mode: one process, a RealNVP built from the flags, phases timed apart ------------ */
static int bench_flags(const bench_opts *o) {
    const int C = o->C, H = o->H, W = o->W, batch = o->batch, steps = o->steps, warmup = o->warmup;
    fdp_err err = {{0}};
    fdp_backend *be = fdp_backend_create(o->device, o->threads, &err);
    if (!be) {
        fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    fdp_realnvp m;
    if (fdp_realnvp_build(&m, C, H, W, o->scales, o->mid, o->blocks, &err) != 0) {
        fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    fdp_realnvp_alloc_init(&m, be, 0);
    m.rebuild_activations = o->rebuild;
    fdp_optim_hparams hp = {.kind = FDP_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
    fdp_optimizer *opt = fdp_optimizer_create(&hp, &m.params);
    fdp_arena *arena = fdp_arena_create(256u << 20, be->arena_alloc, be->arena_free, be, be->dev);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = &m.params, .training = 1, .world_size = 1};
    fdp_dequant *dq = fdp_dequant_uniform_create(256, 0); /* the notebook's */

    int64_t D = (int64_t)C * H * W;
    float *x = be->alloc(be, sizeof(float) * (size_t)(batch * D));
    float *u = be->alloc(be, sizeof(float) * (size_t)(batch * D));
    int64_t *idx = be->alloc(be, sizeof(int64_t) * (size_t)batch);
    double *t_step = calloc((size_t)steps, sizeof(double)), *t_fwd = calloc((size_t)steps, sizeof(double)),
           *t_bwd = calloc((size_t)steps, sizeof(double)), *t_opt = calloc((size_t)steps, sizeof(double));
    printf("flowdp-bench: RealNVP %dx%dx%d scales %d mid %d blocks %d, %lld parameters, batch %d, %d threads, %s, "
           "activations %s\n",
           C, H, W, o->scales, o->mid, o->blocks, (long long)m.params.n_params, batch, be->num_threads, be->name,
           o->rebuild ? "rebuilt in backward" : "stored");
    double first_bpd = 0.0, last_bpd = 0.0;
    for (int s = 0; s < steps; s++) {
        /* random 8-bit images and dequantization noise (not timed) */
        for (int i = 0; i < batch; i++) idx[i] = (int64_t)s * batch + i;
        fdp_philox_fill_args px = {x, idx, D, 7, 0, FDP_RNG_AUGMENT, 0};
        be->philox_fill(be, batch * D, &px);
        float *hx = malloc(sizeof(float) * (size_t)(batch * D));
        be->to_host(be, hx, x, sizeof(float) * (size_t)(batch * D));
        for (int64_t j = 0; j < batch * D; j++) hx[j] = (float)(int)(hx[j] * 256.0f) / 255.0f;
        be->from_host(be, x, hx, sizeof(float) * (size_t)(batch * D));
        free(hx);
        fdp_dequant_key key = {7, 0, FDP_RNG_DEQUANT, idx};
        dq->ops->apply(dq, &ctx, fdp_tensor_wrap(x, batch, C, H, W, be->dev), &key,
                       fdp_tensor_wrap(u, batch, C, H, W, be->dev), NULL);
        be->synchronize(be);

        double t0 = now_s();
        fdp_arena_reset_all(arena);
        double nll = fdp_realnvp_loss(&m, &ctx, fdp_tensor_wrap(u, batch, C, H, W, be->dev), NULL);
        be->synchronize(be);
        double t1 = now_s();
        fdp_realnvp_backward(&m, &ctx, 1.0f);
        be->synchronize(be);
        double t2 = now_s();
        double gn = fdp_grad_global_norm(&m.params);
        fdp_optimizer_step(opt, 1e-3f, fdp_clip_factor(gn, 100.0));
        be->synchronize(be);
        double t3 = now_s();
        t_step[s] = t3 - t0;
        t_fwd[s] = t1 - t0;
        t_bwd[s] = t2 - t1;
        t_opt[s] = t3 - t2;
        double bpd = fdp_bpd(nll, D);
        if (s == 0) first_bpd = bpd;
        last_bpd = bpd;
    }
    qsort(t_step + warmup, (size_t)(steps - warmup), sizeof(double), cmp_double);
    qsort(t_fwd + warmup, (size_t)(steps - warmup), sizeof(double), cmp_double);
    qsort(t_bwd + warmup, (size_t)(steps - warmup), sizeof(double), cmp_double);
    qsort(t_opt + warmup, (size_t)(steps - warmup), sizeof(double), cmp_double);
    int med = warmup + (steps - warmup) / 2;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("median step %.1f ms (forward %.1f, backward %.1f, clip+adam %.1f) over %d steps after %d warm-up\n",
           1e3 * t_step[med], 1e3 * t_fwd[med], 1e3 * t_bwd[med], 1e3 * t_opt[med], steps - warmup, warmup);
    printf("train bpd first %.4f last %.4f; activation arena peak %.1f MiB\n", first_bpd, last_bpd,
           (double)fdp_arena_peak(arena) / (1 << 20));
    printf("images/s: %.2f  peak_rss_mb: %.1f\n", batch / t_step[med], ru.ru_maxrss / 1024.0);
    free(t_step); free(t_fwd); free(t_bwd); free(t_opt);
    be->free(be, x);
    be->free(be, u);
    be->free(be, idx);
    fdp_arena_destroy(arena);
    fdp_optimizer_free(opt);
    fdp_dequant_destroy(dq);
    fdp_realnvp_free(&m);
    fdp_backend_destroy(be);
    return 0;
}

/* an integer option within [lo, hi], else one line naming it and exit 2 */
#define INT_OPT(var, name, lo, hi)                                                                              \
    do {                                                                                                        \
        long long v_;                                                                                           \
        if (fdp_cli_int(optarg, lo, hi, &v_) != 0) {                                                            \
            fprintf(stderr, "flowdp-bench: %s %s: expected an integer from %lld to %lld\n", name, optarg,        \
                    (long long)(lo), (long long)(hi));                                                          \
            return 2;                                                                                           \
        }                                                                                                       \
        var = (int)v_;                                                                                          \
    } while (0)

/* the options into *o; -1 to go on, else the exit code (after the message or --help) */
static int parse_args(int argc, char **argv, bench_opts *o) {
    static struct option opts[] = {{"in", required_argument, 0, 'i'},      {"batch", required_argument, 0, 'b'},
                                   {"scales", required_argument, 0, 's'},  {"mid", required_argument, 0, 'm'},
                                   {"blocks", required_argument, 0, 'k'},  {"steps", required_argument, 0, 'n'},
                                   {"warmup", required_argument, 0, 'w'},  {"threads", required_argument, 0, 't'},
                                   {"device", required_argument, 0, 'd'},  {"config", required_argument, 0, 'c'},
                                   {"set", required_argument, 0, 'S'},     {"help", no_argument, 0, 'h'},
                                   {"rebuild", no_argument, 0, 'r'},       {"data", required_argument, 0, 'D'},
                                   {"readers", required_argument, 0, 'R'}, {"hflip", no_argument, 0, 'F'},
                                   {"translate", required_argument, 0, 'X'}, {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (sscanf(optarg, "%dx%dx%d", &o->C, &o->H, &o->W) != 3 || o->C < 1 || o->H < 1 || o->W < 1 ||
                o->C > 64 || o->H > 4096 || o->W > 4096) {
                fprintf(stderr, "flowdp-bench: --in %s: expected CxHxW with C 1..64 and H, W 1..4096, e.g. 1x28x28\n",
                        optarg);
                return 2;
            }
            o->in_given = 1;
            break;
        case 'c': o->config_path = optarg; break;
        case 'S': o->sets[o->nsets++] = optarg; break;
        case 'b': INT_OPT(o->batch, "--batch", 1, 65536); o->batch_given = 1; break;
        case 's': INT_OPT(o->scales, "--scales", 1, 16); break;
        case 'm': INT_OPT(o->mid, "--mid", 1, 4096); break;
        case 'k': INT_OPT(o->blocks, "--blocks", 1, 256); break;
        case 'n': INT_OPT(o->steps, "--steps", 1, 1000000); break;
        case 'w': INT_OPT(o->warmup, "--warmup", 0, 1000000); break;
        case 't': INT_OPT(o->threads, "--threads", 0, 1024); break;
        case 'd': o->device = optarg; o->device_given = 1; break;
        case 'r': o->rebuild = 1; break;
        case 'D': o->data = optarg; break;
        case 'R': INT_OPT(o->readers, "--readers", 1, 256); break;
        case 'F': o->hflip = 1; break;
        case 'X':
            if (fdp_cli_double(optarg, 0.0, 0.5, &o->translate) != 0) {
                fprintf(stderr, "flowdp-bench: --translate %s: expected a number from 0 to 0.5\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: {
            char buf[8];
            fprintf(stderr, "flowdp-bench: unknown or incomplete option '%s' (see --help)\n",
                    fdp_cli_bad_option(argv, buf, sizeof buf));
            return 2;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "flowdp-bench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    return -1;
}

/* the checks between the options (after --data, which takes its own); -1 to go on, else 2 */
static int check_args(const bench_opts *o) {
    if (o->in_given && (int64_t)o->batch * o->C * o->H * o->W > ((int64_t)1 << 28)) {
        fprintf(stderr, "flowdp-bench: --in %dx%dx%d with --batch %d: %lld values per image batch, more than 2^28 "
                        "(a smaller batch or image)\n",
                o->C, o->H, o->W, o->batch, (long long)o->batch * o->C * o->H * o->W);
        return 2;
    }
    if (o->warmup >= o->steps) {
        fprintf(stderr, "flowdp-bench: --warmup %d: must be below --steps %d\n", o->warmup, o->steps);
        return 2;
    }
    if (o->config_path && o->rebuild) {
        fprintf(stderr, "flowdp-bench: --rebuild is for the flags mode; with --config use --set train.rebuild_activations=true\n");
        return 2;
    }
    if (!o->config_path && o->nsets > 0) {
        fprintf(stderr, "flowdp-bench: --set needs --config\n");
        return 2;
    }
    return -1;
}

int main(int argc, char **argv) {
    fdp_log_set_prog("flowdp-bench");
    bench_opts o = {.C = 1, .H = 28, .W = 28, .batch = 64, .scales = 2, .mid = 32, .blocks = 2, .steps = 30,
                    .warmup = 3, .threads = 0, .device = "cpu", .readers = 1};
    o.sets = calloc((size_t)argc + 1, sizeof *o.sets);
    int rc = parse_args(argc, argv, &o);
    if (rc < 0 && o.data) {
        if (o.config_path) {
            fprintf(stderr, "flowdp-bench: --data and --config are separate modes (see --help)\n");
            rc = 2;
        } else {
            rc = bench_data(o.data, o.readers, o.batch, o.steps, o.hflip, o.translate);
        }
    }
    if (rc < 0) rc = check_args(&o);
    if (rc < 0) rc = o.config_path ? bench_config(&o) : bench_flags(&o);
    free(o.sets);
    return rc;
}
