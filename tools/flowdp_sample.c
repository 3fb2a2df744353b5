/* flowdp_sample.c — flowdp-sample: a checkpoint -> a PNG grid of samples, one
 * block per temperature (every prior's standard deviation times T), each block
 * its samples in rows of at most 16. Sample j uses the same latent draw in every
 * block, so blocks differ by temperature only. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/cli.h"
#include "flowdp/cuda.h"
#include "flowdp/log.h"
#include "flowdp/model_io.h"
#include "flowdp/outpath.h"
#include "flowdp/png.h"
#include "flowdp/rng.h"
#include "flowdp/run.h"

/* a non-negative decimal integer up to max, or -1 */
static long long parse_count(const char *s, long long max) {
    long long v;
    return fdp_cli_int(s, 0, max, &v) == 0 ? v : -1;
}


static void usage(FILE *f) {
    fprintf(f,
            "usage: flowdp-sample CKPT -o grid.png [-n N] [-t T ...] [--seed S] [--device cpu|cuda] [--threads K]\n"
            "                     [--no-ema] [--force]\n"
            "Draws N samples at each temperature T from the model in checkpoint CKPT and writes a PNG grid:\n"
            "one block per temperature (in the order given), stacked top to bottom with a white gap between\n"
            "blocks; a block holds its N samples in rows of at most 16 (ceil(N/16) rows, row-major). Sample\n"
            "j sits at the same place in every block and shares its latent draw across temperatures.\n"
            "  -n N            samples per temperature, 1 to 4096 (default 8)\n"
            "  -t T            temperature from 0 to 10, repeatable up to 64 times (default 1.0);\n"
            "                  T scales every prior's std\n"
            "  --seed S        seed of the latent draws (default 0)\n"
            "  -o FILE         output PNG (required; written atomically; never the checkpoint)\n"
            "  --force         replace FILE even when it exists and is not a PNG file\n"
            "  --device D      cpu (default) or cuda\n"
            "  --threads K     CPU threads (default all cores)\n"
            "  --no-ema        use the raw weights even when the checkpoint has EMA weights\n"
            "A sample with NaN or Inf pixels is reported with a warning (NaN pixels are drawn black).\n");
}

typedef struct sample_opts {
    int n, nt, threads, use_ema, force;
    float temps[64];
    unsigned long long seed;
    const char *out, *device, *ckpt;
} sample_opts;

/* the command line into *o; returns -1 to go on, else the exit code */
static int parse_args(int argc, char **argv, sample_opts *o) {
    static struct option opts[] = {{"seed", required_argument, 0, 'S'},   {"device", required_argument, 0, 'd'},
                                   {"threads", required_argument, 0, 'k'}, {"no-ema", no_argument, 0, 'E'},
                                   {"force", no_argument, 0, 'f'},         {"help", no_argument, 0, 'h'},
                                   {0, 0, 0, 0}};
    int c;
    char *end, buf[8];
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:t:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            o->n = (int)parse_count(optarg, 4096);
            if (o->n < 1) {
                fprintf(stderr, "flowdp-sample: -n %s: expected a count from 1 to 4096\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (o->nt == 64) {
                fprintf(stderr, "flowdp-sample: -t %s: at most 64 temperatures\n", optarg);
                return 2;
            }
            o->temps[o->nt] = strtof(optarg, &end);
            if (!*optarg || *end || !(o->temps[o->nt] >= 0.0f) || o->temps[o->nt] > 10.0f) {
                fprintf(stderr, "flowdp-sample: -t %s: expected a temperature from 0 to 10\n", optarg);
                return 2;
            }
            o->nt++;
            break;
        case 'o': o->out = optarg; break;
        case 'S': {
            long long v = parse_count(optarg, INT64_MAX);
            if (v < 0) {
                fprintf(stderr, "flowdp-sample: --seed %s: expected a non-negative integer\n", optarg);
                return 2;
            }
            o->seed = (unsigned long long)v;
            break;
        }
        case 'd': o->device = optarg; break;
        case 'k':
            o->threads = (int)parse_count(optarg, 4096);
            if (o->threads < 0) {
                fprintf(stderr, "flowdp-sample: --threads %s: expected 0 (all cores) to 4096\n", optarg);
                return 2;
            }
            break;
        case 'E': o->use_ema = 0; break;
        case 'f': o->force = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "flowdp-sample: unknown or incomplete option '%s' (see --help)\n",
                    fdp_cli_bad_option(argv, buf, sizeof buf));
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "flowdp-sample: no checkpoint given (see --help)\n");
        return 2;
    }
    if (optind < argc - 1) {
        fprintf(stderr, "flowdp-sample: unexpected argument '%s' (see --help)\n", argv[optind + 1]);
        return 2;
    }
    o->ckpt = argv[optind];
    if (!o->out) {
        fprintf(stderr, "flowdp-sample: %s: no output file: give -o FILE.png (see --help)\n", o->ckpt);
        return 2;
    }
    if (o->nt == 0) o->temps[o->nt++] = 1.0f;
    return -1;
}

/* samples (of count) with a NaN or Inf value */
static long long count_nonfinite(const float *x, long long count, int64_t D) {
    long long bad = 0;
    for (long long i = 0; i < count; i++)
        for (int64_t k = 0; k < D; k++)
            if (!isfinite(x[i * D + k])) {
                bad++;
                break;
            }
    return bad;
}

/* nt x n samples into grid (temperature-major) */
static void draw_samples(fdp_run *r, const sample_opts *o, float *grid) {
    fdp_model *m = r->model;
    fdp_backend *be = r->be;
    fdp_arena *arena = r->arena;
    int n = o->n;
    int64_t D = (int64_t)m->C * m->H * m->W;
    fdp_ctx ctx = {.be = be, .arena = arena, .params = m->params, .training = 0, .world_size = 1, .no_grad = 1};
    int64_t *hidx = fdp_xmalloc(sizeof(int64_t) * (size_t)n);
    for (int j = 0; j < n; j++) hidx[j] = j;
    for (int r = 0; r < o->nt; r++) {
        fdp_arena_reset_all(arena);
        fdp_tensor z = fdp_arena_tensor(arena, n, m->C, m->H, m->W);
        int64_t *idx = fdp_arena_alloc(arena, sizeof(int64_t) * (size_t)n);
        be->from_host(be, idx, hidx, sizeof(int64_t) * (size_t)n);
        fdp_philox_fill_args pa = {z.data, idx, D, o->seed, 0, FDP_RNG_PRIOR, 1};
        be->philox_fill(be, n * D, &pa);
        fdp_tensor x = m->sample(m, &ctx, z, o->temps[r]);
        be->to_host(be, grid + (size_t)r * n * D, x.data, sizeof(float) * (size_t)(n * D));
    }
    free(hidx);
}

int main(int argc, char **argv) {
    fdp_log_set_prog("flowdp-sample");
    /* a write past RLIMIT_FSIZE (ulimit -f) must fail with EFBIG and be reported
     * like any other write error, not kill the process with SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    sample_opts o = {.n = 8, .use_ema = 1, .device = "cpu"};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    fdp_err err = {{0}};
    /* the output before any work: writable, not the checkpoint, not another kind of file */
    fdp_out_input in[] = {{o.ckpt, "the input checkpoint"}};
    if (fdp_out_check("-o", o.out, FDP_OUT_PNG, o.force, in, 1, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        return 2;
    }
    /* the run context (flowdp/run.h) of sampling: one process, the backend, the checkpoint's model, the arena */
    fdp_run run;
    fdp_run_init(&run, NULL, NULL);
    if (fdp_run_backend(&run, o.device, o.threads, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        return 2;
    }
    fdp_model *m = NULL;
    fdp_ckpt_meta meta;
    if (fdp_model_from_checkpoint(o.ckpt, run.be, o.use_ema, &m, NULL, &meta, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        fdp_run_free(&run);
        return 2;
    }
    fdp_run_adopt_model(&run, m);
    fdp_run_arena(&run);
    int64_t D = (int64_t)m->C * m->H * m->W;
    float *grid = fdp_xmalloc(sizeof(float) * (size_t)o.nt * (size_t)o.n * (size_t)D);
    draw_samples(&run, &o, grid);
    long long total = (long long)o.nt * o.n, bad = count_nonfinite(grid, total, D);
    if (bad > 0)
        fdp_warn("%lld of %lld samples have NaN or Inf pixels (NaN drawn black): the model in %s is not sound", bad,
                 total, o.ckpt);
    int gap = m->H / 2 > 4 ? m->H / 2 : 4; /* between temperature blocks; tiles are 1 pixel apart */
    if (fdp_png_write_blocks(o.out, grid, o.nt, o.n, m->C, m->H, m->W, 16, 1, gap, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        rc = 1;
    } else {
        rc = 0;
        printf("flowdp-sample: %s (step %lld): %d sample(s) x %d temperature(s) -> %s\n", o.ckpt,
               (long long)meta.step, o.n, o.nt, o.out);
    }
    free(grid);
    fdp_run_free(&run);
    return rc;
}
