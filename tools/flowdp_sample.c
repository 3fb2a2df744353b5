/* flowdp_sample.c — flowdp-sample: a checkpoint -> a PNG grid of samples, one
 * row per temperature (every prior's standard deviation times T). Column j uses
 * the same latent draw in every row, so rows differ by temperature only. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/cuda.h"
#include "flowdp/log.h"
#include "flowdp/model_io.h"
#include "flowdp/png.h"
#include "flowdp/rng.h"

/* a non-negative decimal integer up to max, or -1 */
static long long parse_count(const char *s, long long max) {
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == '+') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno == ERANGE || v > (unsigned long long)max) return -1;
    return (long long)v;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: flowdp-sample CKPT -o grid.png [-n N] [-t T ...] [--seed S] [--device cpu|cuda] [--threads K]\n"
            "                     [--no-ema]\n"
            "Draws N samples at each temperature T from the model in checkpoint CKPT and writes a PNG grid\n"
            "(one row per temperature, N columns; column j shares its latent draw across rows).\n"
            "  -n N            samples per temperature (default 8)\n"
            "  -t T            temperature, repeatable (default 1.0); T scales every prior's std\n"
            "  --seed S        seed of the latent draws (default 0)\n"
            "  -o FILE         output PNG (required)\n"
            "  --device D      cpu (default) or cuda\n"
            "  --threads K     CPU threads (default all cores)\n"
            "  --no-ema        use the raw weights even when the checkpoint has EMA weights\n");
}

int main(int argc, char **argv) {
    /* a write past RLIMIT_FSIZE (ulimit -f) must fail with EFBIG and be reported
     * like any other write error, not kill the process with SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    int n = 8, nt = 0, threads = 0, use_ema = 1;
    float temps[64];
    unsigned long long seed = 0;
    const char *out = NULL, *device = "cpu";
    static struct option opts[] = {{"seed", required_argument, 0, 'S'},   {"device", required_argument, 0, 'd'},
                                   {"threads", required_argument, 0, 'k'}, {"no-ema", no_argument, 0, 'E'},
                                   {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "n:t:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            n = (int)strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 4096) {
                fprintf(stderr, "flowdp-sample: -n %s: expected a count from 1 to 4096\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (nt == 64) {
                fprintf(stderr, "flowdp-sample: at most 64 temperatures\n");
                return 2;
            }
            temps[nt] = strtof(optarg, &end);
            if (*end || !(temps[nt] >= 0.0f) || temps[nt] > 10.0f) {
                fprintf(stderr, "flowdp-sample: -t %s: expected a temperature from 0 to 10\n", optarg);
                return 2;
            }
            nt++;
            break;
        case 'o': out = optarg; break;
        case 'S': {
            long long v = parse_count(optarg, INT64_MAX);
            if (v < 0) {
                fprintf(stderr, "flowdp-sample: --seed %s: expected a non-negative integer\n", optarg);
                return 2;
            }
            seed = (unsigned long long)v;
            break;
        }
        case 'd': device = optarg; break;
        case 'k':
            threads = (int)parse_count(optarg, 4096);
            if (threads < 0) {
                fprintf(stderr, "flowdp-sample: --threads %s: expected 0 (all cores) to 4096\n", optarg);
                return 2;
            }
            break;
        case 'E': use_ema = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !out) {
        fprintf(stderr, "flowdp-sample: need one checkpoint and -o FILE (see --help)\n");
        return 2;
    }
    const char *ckpt = argv[optind];
    if (nt == 0) temps[nt++] = 1.0f;
    fdp_err err = {{0}};
    fdp_backend *be = fdp_backend_create(device, threads, &err);
    if (!be) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        return 2;
    }
    fdp_model *m = NULL;
    fdp_ckpt_meta meta;
    if (fdp_model_from_checkpoint(ckpt, be, use_ema, &m, NULL, &meta, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        fdp_backend_destroy(be);
        return 2;
    }
    int64_t D = (int64_t)m->C * m->H * m->W;
    float *grid = fdp_xmalloc(sizeof(float) * (size_t)(nt * n * D));
    fdp_arena *arena = fdp_arena_create(64u << 20, fdp_backend_arena_alloc, fdp_backend_arena_free, be, be->dev);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = m->params, .training = 0, .world_size = 1, .no_grad = 1};
    int64_t *hidx = fdp_xmalloc(sizeof(int64_t) * (size_t)n);
    for (int j = 0; j < n; j++) hidx[j] = j;
    for (int r = 0; r < nt; r++) {
        fdp_arena_reset_all(arena);
        fdp_tensor z = fdp_arena_tensor(arena, n, m->C, m->H, m->W);
        int64_t *idx = fdp_arena_alloc(arena, sizeof(int64_t) * (size_t)n);
        be->from_host(be, idx, hidx, sizeof(int64_t) * (size_t)n);
        fdp_philox_fill_args pa = {z.data, idx, D, seed, 0, FDP_RNG_PRIOR, 1};
        be->philox_fill(be, n * D, &pa);
        fdp_tensor x = m->sample(m, &ctx, z, temps[r]);
        be->to_host(be, grid + (size_t)r * n * D, x.data, sizeof(float) * (size_t)(n * D));
    }
    int rc = 0;
    if (fdp_png_write_grid(out, grid, nt * n, m->C, m->H, m->W, nt, n, 1, &err) != 0) {
        fprintf(stderr, "flowdp-sample: %s\n", err.msg);
        rc = 1;
    } else {
        printf("flowdp-sample: %s (step %lld): %d sample(s) x %d temperature(s) -> %s\n", ckpt, (long long)meta.step, n,
               nt, out);
    }
    free(hidx);
    free(grid);
    fdp_arena_destroy(arena);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    return rc;
}
