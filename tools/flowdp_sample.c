/* flowdp_sample.c — flowdp-sample: a checkpoint -> a PNG grid of samples, one
 * block per temperature (every prior's standard deviation times T), each block
 * its samples in rows of at most 16. Sample j uses the same latent draw in every
 * block, so blocks differ by temperature only. With --interpolate: test images
 * encoded (model.h's encode), their latents interpolated linearly and decoded,
 * one grid row per pair of images. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/cli.h"
#include "flowdp/cuda.h"
#include "flowdp/dequant.h"
#include "flowdp/loader.h"
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
            "A sample with NaN or Inf pixels is reported with a warning (NaN pixels are drawn black).\n"
            "\n"
            "usage: flowdp-sample CKPT -o grid.png --interpolate I J [--interpolate I J ...] --data PATH\n"
            "                     [--format idx|cifar10|hdf5] [--steps S] [--seed S] [--device D] [--threads K]\n"
            "                     [--no-ema] [--force]\n"
            "Latent interpolation: test images I and J (0-based indices into the test set PATH) are\n"
            "dequantized with the model's stage (noise keyed by --seed and the image's index), encoded to\n"
            "their latents z_I, z_J, and z = (1-a) z_I + a z_J for S values of a evenly spaced from 0 to 1\n"
            "(both included) are decoded at temperature 1. The grid has one row per pair (in the order\n"
            "given) and S columns, 1 pixel apart: its first column is image I and its last image J, as\n"
            "the model reconstructs them. For multi-scale models (RealNVP num_scales > 1, Glow n_levels >\n"
            "1) the factored-out latents are interpolated too: they come from the encoding, not fresh\n"
            "noise. Not with -n or -t.\n"
            "  --interpolate I J   a pair of test-set indices, repeatable up to 64 times\n"
            "  --data PATH         the test set the indices refer to (required with --interpolate)\n"
            "  --format F          idx, cifar10 or hdf5 (default: the checkpoint's [data] format)\n"
            "  --steps S           images per row, 2 to 64 (default 8)\n");
}

typedef struct sample_opts {
    int n, nt, threads, use_ema, force;
    float temps[64];
    unsigned long long seed;
    const char *out, *device, *ckpt;
    /* --interpolate */
    int npairs, steps, set_n;
    long long pairs[64][2];
    const char *data, *format, *interp_only; /* interp_only: the first of --data/--format/--steps given */
} sample_opts;

/* --interpolate I J: I is optarg, J the next argument; 0 or 2 after the message */
static int parse_pair(int argc, char **argv, sample_opts *o) {
    if (o->npairs == 64) {
        fprintf(stderr, "flowdp-sample: --interpolate %s: at most 64 pairs\n", optarg);
        return 2;
    }
    const char *j = optind < argc ? argv[optind] : NULL;
    long long a = parse_count(optarg, INT64_MAX), b = j ? parse_count(j, INT64_MAX) : -1;
    if (a < 0 || b < 0) {
        fprintf(stderr, "flowdp-sample: --interpolate %s %s: expected two test-set indices (0-based)\n", optarg,
                j ? j : "");
        return 2;
    }
    optind++;
    o->pairs[o->npairs][0] = a;
    o->pairs[o->npairs][1] = b;
    o->npairs++;
    return 0;
}

/* the options that go (or do not go) with --interpolate; -1 to go on, else 2 after the message */
static int check_interp_opts(const sample_opts *o) {
    if (!o->npairs) {
        if (o->interp_only) {
            fprintf(stderr, "flowdp-sample: %s is only for --interpolate (see --help)\n", o->interp_only);
            return 2;
        }
        return -1;
    }
    if (o->set_n || o->nt) {
        fprintf(stderr, "flowdp-sample: --interpolate cannot be combined with %s (it decodes at temperature 1)\n",
                o->set_n ? "-n" : "-t");
        return 2;
    }
    if (!o->data) {
        fprintf(stderr, "flowdp-sample: --interpolate needs --data PATH: the test set its indices refer to\n");
        return 2;
    }
    return -1;
}

/* the command line into *o; returns -1 to go on, else the exit code */
static int parse_args(int argc, char **argv, sample_opts *o) {
    static struct option opts[] = {{"seed", required_argument, 0, 'S'},   {"device", required_argument, 0, 'd'},
                                   {"threads", required_argument, 0, 'k'}, {"no-ema", no_argument, 0, 'E'},
                                   {"force", no_argument, 0, 'f'},         {"help", no_argument, 0, 'h'},
                                   {"interpolate", required_argument, 0, 'I'}, {"data", required_argument, 0, 'D'},
                                   {"format", required_argument, 0, 'F'}, {"steps", required_argument, 0, 'P'},
                                   {0, 0, 0, 0}};
    int c;
    char *end, buf[8];
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:t:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            o->n = (int)parse_count(optarg, 4096);
            o->set_n = 1;
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
        case 'I':
            if (parse_pair(argc, argv, o) != 0) return 2;
            break;
        case 'D':
        case 'F':
            if (!o->interp_only) o->interp_only = c == 'D' ? "--data" : "--format";
            *(c == 'D' ? &o->data : &o->format) = optarg;
            break;
        case 'P':
            if (!o->interp_only) o->interp_only = "--steps";
            o->steps = (int)parse_count(optarg, 64);
            if (o->steps < 2) {
                fprintf(stderr, "flowdp-sample: --steps %s: expected a count from 2 to 64\n", optarg);
                return 2;
            }
            break;
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
    if ((c = check_interp_opts(o)) >= 0) return c;
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

/* open and check the test set and the indices; 0, or -1 with err */
static int open_test_set(const sample_opts *o, const fdp_config *cfg, const fdp_model *m, fdp_source *ds,
                         fdp_err *err) {
    const char *format = o->format ? o->format
                         : cfg->data.format == FDP_DATA_CIFAR10 ? "cifar10"
                         : cfg->data.format == FDP_DATA_IDX     ? "idx"
                                                                : "hdf5";
    if (fdp_source_open(format, o->data, 0, 0, ds, err) != 0 || fdp_source_verify(ds, 0, 1, err) != 0) return -1;
    if (ds->c != m->C || ds->h != m->H || ds->w != m->W)
        return fdp_err_set(err, "--data %s holds %dx%dx%d images, the model in %s takes %dx%dx%d", o->data, ds->c,
                           ds->h, ds->w, o->ckpt, m->C, m->H, m->W);
    for (int p = 0; p < o->npairs; p++)
        for (int k = 0; k < 2; k++)
            if (o->pairs[p][k] >= ds->n)
                return fdp_err_set(err, "--interpolate %lld %lld: index %lld is out of range: %s holds %lld images",
                                   o->pairs[p][0], o->pairs[p][1], o->pairs[p][k], o->data, (long long)ds->n);
    return 0;
}

/* one row of o->steps images per pair into grid (pair-major): decode((1-a) z_I + a z_J); 0 or -1 */
static int draw_interpolations(fdp_run *r, const sample_opts *o, fdp_source *ds, float *grid, fdp_err *err) {
    fdp_model *m = r->model;
    fdp_backend *be = r->be;
    int S = o->steps;
    int64_t D = (int64_t)m->C * m->H * m->W;
    fdp_ctx ctx = {.be = be, .arena = r->arena, .params = m->params, .training = 0, .world_size = 1, .no_grad = 1};
    fdp_dequant *dq = NULL;
    if (fdp_dequant_create(NULL, m, &dq, err) != 0) return -1;
    uint8_t *u8 = fdp_xmalloc((size_t)(2 * D));
    float *hx = fdp_xmalloc(sizeof(float) * (size_t)(2 * D)), *hz = fdp_xmalloc(sizeof(float) * (size_t)(S * D));
    int rc = 0;
    for (int p = 0; p < o->npairs && rc == 0; p++) {
        int64_t idx[2] = {o->pairs[p][0], o->pairs[p][1]};
        if ((rc = fdp_source_read_u8(ds, idx, 2, u8, NULL, err)) != 0) break;
        for (int64_t i = 0; i < 2 * D; i++) hx[i] = (float)u8[i] / 255.0f;
        fdp_arena_reset_all(r->arena);
        fdp_tensor x = fdp_arena_tensor(r->arena, 2, m->C, m->H, m->W), v = fdp_arena_tensor(r->arena, 2, m->C, m->H, m->W);
        int64_t *didx = fdp_arena_alloc(r->arena, sizeof idx);
        be->from_host(be, x.data, hx, sizeof(float) * (size_t)(2 * D));
        be->from_host(be, didx, idx, sizeof idx);
        fdp_dequant_key key = {o->seed, 0, FDP_RNG_EVAL, didx}; /* the image's draw, as flowdp-eval's first */
        dq->ops->apply(dq, &ctx, x, &key, v, NULL);
        fdp_tensor z = m->encode(m, &ctx, v);
        be->to_host(be, hx, z.data, sizeof(float) * (size_t)(2 * D));
        for (int s = 0; s < S; s++) {
            float a = (float)s / (float)(S - 1);
            for (int64_t k = 0; k < D; k++) hz[s * D + k] = (1.0f - a) * hx[k] + a * hx[D + k];
        }
        fdp_tensor zs = fdp_arena_tensor(r->arena, S, m->C, m->H, m->W);
        be->from_host(be, zs.data, hz, sizeof(float) * (size_t)(S * D));
        fdp_tensor img = m->sample(m, &ctx, zs, 1.0f);
        be->to_host(be, grid + (size_t)p * S * D, img.data, sizeof(float) * (size_t)(S * D));
    }
    free(u8);
    free(hx);
    free(hz);
    fdp_dequant_destroy(dq);
    return rc;
}

/* --interpolate: the test set, the rows, the grid; the exit code */
static int run_interpolate(fdp_run *r, const sample_opts *o, const fdp_config *cfg, const fdp_ckpt_meta *meta) {
    fdp_model *m = r->model;
    fdp_err err = {{0}};
    if (!m->encode) {
        fprintf(stderr, "flowdp-sample: --interpolate: the %s model in %s cannot encode images\n", m->type, o->ckpt);
        return 2;
    }
    fdp_source ds;
    memset(&ds, 0, sizeof ds);
    if (open_test_set(o, cfg, m, &ds, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        fdp_source_close(&ds);
        return 2;
    }
    fdp_run_arena(r);
    int64_t D = (int64_t)m->C * m->H * m->W;
    float *grid = fdp_xmalloc(sizeof(float) * (size_t)o->npairs * (size_t)o->steps * (size_t)D);
    int rc = 0;
    if (draw_interpolations(r, o, &ds, grid, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        rc = 1;
    } else {
        long long total = (long long)o->npairs * o->steps, bad = count_nonfinite(grid, total, D);
        if (bad > 0)
            fdp_warn("%lld of %lld decoded images have NaN or Inf pixels (NaN drawn black): the model in %s is not sound",
                     bad, total, o->ckpt);
        if (fdp_png_write_grid(o->out, grid, (int)total, m->C, m->H, m->W, o->npairs, o->steps, 1, &err) != 0) {
            fprintf(stderr, "flowdp-sample: %s\n", err.msg);
            rc = 1;
        } else {
            printf("flowdp-sample: %s (step %lld): %d interpolation(s) x %d step(s) between images of %s -> %s\n",
                   o->ckpt, (long long)meta->step, o->npairs, o->steps, o->data, o->out);
        }
    }
    free(grid);
    fdp_source_close(&ds);
    return rc;
}

int main(int argc, char **argv) {
    fdp_log_set_prog("flowdp-sample");
    /* a write past RLIMIT_FSIZE (ulimit -f) must fail with EFBIG and be reported
     * like any other write error, not kill the process with SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    sample_opts o = {.n = 8, .steps = 8, .use_ema = 1, .device = "cpu"};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    fdp_err err = {{0}};
    /* the output before any work: writable, not the checkpoint, not another kind of file */
    fdp_out_input in[] = {{o.ckpt, "the input checkpoint"}, {o.data, "the test set"}};
    if (fdp_out_check("-o", o.out, FDP_OUT_PNG, o.force, in, o.data ? 2 : 1, &err) != 0) {
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
    fdp_config cfg;
    if (fdp_model_from_checkpoint(o.ckpt, run.be, o.use_ema, &m, &cfg, &meta, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        fdp_run_free(&run);
        return 2;
    }
    fdp_run_adopt_model(&run, m);
    if (o.npairs) {
        rc = run_interpolate(&run, &o, &cfg, &meta);
        fdp_config_free(&cfg);
        fdp_run_free(&run);
        return rc;
    }
    fdp_config_free(&cfg);
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
