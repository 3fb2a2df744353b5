/* flowdp_bench.c — flowdp-bench: times training steps (forward + backward +
 * clipped Adam) of a RealNVP on random 8-bit images, the way
 * shared/anchors/bench_torch_realnvp.py times PyTorch, and prints as its LAST
 * line `images/s: X  peak_rss_mb: Y` (images/s from the median step after
 * warm-up). With --data INDEX it times the data loader instead: T reader
 * threads (--readers), each the loader of one rank of a T-rank job reading its
 * batches from packed shards (decode NHWC -> NCHW float, augmentation when
 * asked); images/s is the total over the threads. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "flowdp/arena.h"
#include "flowdp/loader.h"
#include "flowdp/log.h"
#include "flowdp/optim.h"
#include "flowdp/realnvp.h"
#include "flowdp/rng.h"

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
        if (jobs[r].failed) {
            fprintf(stderr, "flowdp-bench: %s\n", jobs[r].err.msg);
            bad = 1;
        }
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
            "                    [--warmup W] [--threads T] [--device cpu|cuda]\n"
            "       flowdp-bench --data INDEX [--readers T] [--batch B] [--steps N] [--hflip] [--translate F]\n"
            "Times RealNVP training steps (forward + backward + clipped Adam) on random 8-bit images.\n"
            "  --in CxHxW   input shape (default 1x28x28)\n"
            "  --batch B    images per step (default 64)\n"
            "  --scales S   RealNVP scales (default 2)\n"
            "  --mid M      mid channels of the s/t ResNets (default 32)\n"
            "  --blocks K   residual blocks per s/t ResNet (default 2)\n"
            "  --steps N    timed steps (default 30)\n"
            "  --warmup W   steps excluded from the median (default 3)\n"
            "  --threads T  CPU threads (default: all cores)\n"
            "  --device D   cpu (default) or cuda\n"
            "Prints per-phase times, then as the last line: images/s: X  peak_rss_mb: Y\n"
            "--data INDEX times the data loader on packed shards instead (flowdp-pack): T reader threads\n"
            "(--readers, default 1), each the loader of rank t of a T-rank job, read --steps batches\n"
            "(default 30) of --batch images (default 64) each, with the augmentation asked for; the\n"
            "last line is then the total images/s of the T threads and the peak RSS.\n");
}

int main(int argc, char **argv) {
    int C = 1, H = 28, W = 28, batch = 64, scales = 2, mid = 32, blocks = 2, steps = 30, warmup = 3, threads = 0;
    const char *device = "cpu", *data = NULL;
    int readers = 1, hflip = 0;
    double translate = 0.0;
    static struct option opts[] = {{"in", required_argument, 0, 'i'},      {"batch", required_argument, 0, 'b'},
                                   {"scales", required_argument, 0, 's'},  {"mid", required_argument, 0, 'm'},
                                   {"blocks", required_argument, 0, 'k'},  {"steps", required_argument, 0, 'n'},
                                   {"warmup", required_argument, 0, 'w'},  {"threads", required_argument, 0, 't'},
                                   {"device", required_argument, 0, 'd'},  {"help", no_argument, 0, 'h'},
                                   {"data", required_argument, 0, 'D'},    {"readers", required_argument, 0, 'R'},
                                   {"hflip", no_argument, 0, 'F'},         {"translate", required_argument, 0, 'X'},
                                   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (sscanf(optarg, "%dx%dx%d", &C, &H, &W) != 3) {
                fprintf(stderr, "flowdp-bench: --in %s: expected CxHxW, e.g. 1x28x28\n", optarg);
                return 2;
            }
            break;
        case 'b': batch = atoi(optarg); break;
        case 's': scales = atoi(optarg); break;
        case 'm': mid = atoi(optarg); break;
        case 'k': blocks = atoi(optarg); break;
        case 'n': steps = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'd': device = optarg; break;
        case 'D': data = optarg; break;
        case 'R': readers = atoi(optarg); break;
        case 'F': hflip = 1; break;
        case 'X': translate = atof(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "flowdp-bench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (data) {
        if (readers < 1 || readers > 256 || batch < 1 || steps < 1 || translate < 0 || translate > 0.5) {
            fprintf(stderr, "flowdp-bench: --data needs 1 <= readers <= 256, batch >= 1, steps >= 1, 0 <= translate <= 0.5\n");
            return 2;
        }
        return bench_data(data, readers, batch, steps, hflip, translate);
    }
    if (batch < 1 || steps < 1 || warmup < 0 || warmup >= steps) {
        fprintf(stderr, "flowdp-bench: need batch >= 1, steps >= 1 and 0 <= warmup < steps\n");
        return 2;
    }
    fdp_err err = {{0}};
    if (strcmp(device, "cpu") != 0) {
        fprintf(stderr, "flowdp-bench: --device %s: only cpu is wired in yet (the CUDA backend compiles but is untested)\n", device);
        return 2;
    }
    fdp_backend *be = fdp_backend_create(device, threads, &err);
    if (!be) {
        fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    fdp_realnvp m;
    if (fdp_realnvp_build(&m, C, H, W, scales, mid, blocks, &err) != 0) {
        fprintf(stderr, "flowdp-bench: %s\n", err.msg);
        return 2;
    }
    fdp_realnvp_alloc_init(&m, be, 0);
    fdp_adam opt;
    fdp_adam_init(&opt, &m.params, 0.9f, 0.999f, 1e-8f, 0.0f);
    fdp_arena *arena = fdp_arena_create(256u << 20, NULL, NULL, NULL, be->dev);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = &m.params, .training = 1, .world_size = 1};

    int64_t D = (int64_t)C * H * W;
    float *x = be->alloc(be, sizeof(float) * (size_t)(batch * D));
    float *u = be->alloc(be, sizeof(float) * (size_t)(batch * D));
    int64_t *idx = be->alloc(be, sizeof(int64_t) * (size_t)batch);
    double *t_step = calloc((size_t)steps, sizeof(double)), *t_fwd = calloc((size_t)steps, sizeof(double)),
           *t_bwd = calloc((size_t)steps, sizeof(double)), *t_opt = calloc((size_t)steps, sizeof(double));
    printf("flowdp-bench: RealNVP %dx%dx%d scales %d mid %d blocks %d, %lld parameters, batch %d, %d threads, %s\n", C, H,
           W, scales, mid, blocks, (long long)m.params.n_params, batch, be->num_threads, be->name);
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
        fdp_philox_fill_args pu = {u, idx, D, 7, 0, FDP_RNG_DEQUANT, 0};
        be->philox_fill(be, batch * D, &pu);
        be->synchronize(be);

        double t0 = now_s();
        fdp_arena_reset_all(arena);
        double nll = fdp_realnvp_forward_loss(&m, &ctx, fdp_tensor_wrap(x, batch, C, H, W, be->dev),
                                              fdp_tensor_wrap(u, batch, C, H, W, be->dev), NULL);
        be->synchronize(be);
        double t1 = now_s();
        fdp_realnvp_backward(&m, &ctx, 1.0f);
        be->synchronize(be);
        double t2 = now_s();
        double gn = fdp_grad_global_norm(&m.params);
        fdp_adam_step(&opt, &m.params, 1e-3f, fdp_clip_factor(gn, 100.0));
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
    fdp_adam_free(&opt);
    fdp_realnvp_free(&m);
    fdp_backend_destroy(be);
    return 0;
}
