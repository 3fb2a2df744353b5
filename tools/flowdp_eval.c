/* flowdp_eval.c — flowdp-eval: a checkpoint + a test set -> bits per dimension
 * (mean and standard error over images), nats per image, as text and JSON.
 * MPI-parallel: run under mpiexec/srun and each rank evaluates a contiguous
 * slice of the test set; the sums are reduced once at the end. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowdp/comm.h"
#include "flowdp/cuda.h"
#include "flowdp/evaluate.h"
#include "flowdp/log.h"
#include "flowdp/model_io.h"

/* a non-negative decimal integer up to max, or -1 */
static long long parse_count(const char *s, long long max) {
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == '+') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno == ERANGE || v > (unsigned long long)max) return -1;
    return (long long)v;
}

/* s as the inside of a JSON string (quotes, backslashes and control characters escaped) */
static const char *json_str(const char *s, char *out, size_t len) {
    size_t o = 0;
    for (; *s && o + 7 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, len - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = 0;
    return out;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: flowdp-eval CKPT [--data PATH] [--format idx|cifar10|hdf5] [--importance-samples K]\n"
            "                   [--json report.json] [--batch B] [--limit N] [--seed S] [--device cpu|cuda]\n"
            "                   [--threads T] [--no-ema]\n"
            "Reports the test-set bits per dimension of the model in CKPT (mean and standard error over\n"
            "images), its nats per image, the images evaluated and the checkpoint's step.\n"
            "  --data PATH               test set (default: [data] test of the checkpoint's config)\n"
            "  --format F                idx, cifar10 or hdf5 (flowdp-pack shards: PATH is the index file\n"
            "                            or its directory; streamed, never loaded whole; every shard's\n"
            "                            checksum is verified first, split over the ranks)\n"
            "                            (default: the checkpoint's [data] format)\n"
            "  --importance-samples K    K > 1: importance-weighted estimate, log-mean-exp over K\n"
            "                            dequantization-noise draws per image (default 1)\n"
            "  --json FILE               also write the report as JSON\n"
            "  --batch B                 images per forward pass (default 256)\n"
            "  --limit N                 only the first N images (default all)\n"
            "  --seed S                  seed of the noise draws (default 0)\n"
            "  --device D, --threads T   backend and CPU threads per rank\n"
            "  --no-ema                  raw weights even when the checkpoint has EMA weights\n"
            "Run under mpiexec -n R (or srun) to split the test set over R ranks.\n");
}

int main(int argc, char **argv) {
    /* a write past RLIMIT_FSIZE (ulimit -f) must fail with EFBIG and be reported
     * like any other write error, not kill the process with SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    fdp_comm *comm = NULL;
    fdp_err err = {{0}};
    if (fdp_comm_init(&argc, &argv, &comm, &err) != 0) {
        fprintf(stderr, "flowdp-eval: %s\n", err.msg);
        return 1;
    }
    int rank = fdp_comm_rank(comm), world = fdp_comm_size(comm);
    const char *data = NULL, *format = NULL, *json = NULL, *device = "cpu";
    int draws = 1, batch = 256, threads = 0, use_ema = 1;
    long long limit = 0;
    unsigned long long seed = 0;
    static struct option opts[] = {{"data", required_argument, 0, 'D'},   {"format", required_argument, 0, 'F'},
                                   {"importance-samples", required_argument, 0, 'K'},
                                   {"json", required_argument, 0, 'J'},   {"batch", required_argument, 0, 'B'},
                                   {"limit", required_argument, 0, 'L'},  {"seed", required_argument, 0, 'S'},
                                   {"device", required_argument, 0, 'd'}, {"threads", required_argument, 0, 'T'},
                                   {"no-ema", no_argument, 0, 'E'},       {"help", no_argument, 0, 'h'},
                                   {0, 0, 0, 0}};
    int c, rc = 0;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'D': data = optarg; break;
        case 'F': format = optarg; break;
        case 'K':
            draws = (int)strtol(optarg, &end, 10);
            if (*end || draws < 1 || draws > 4096) {
                if (rank == 0) fprintf(stderr, "flowdp-eval: --importance-samples %s: expected 1 to 4096\n", optarg);
                rc = 2;
                goto done;
            }
            break;
        case 'J': json = optarg; break;
        case 'B':
            batch = (int)strtol(optarg, &end, 10);
            if (*end || batch < 1) {
                if (rank == 0) fprintf(stderr, "flowdp-eval: --batch %s: expected a positive integer\n", optarg);
                rc = 2;
                goto done;
            }
            break;
        case 'L':
            limit = parse_count(optarg, INT64_MAX);
            if (limit < 0) {
                if (rank == 0) fprintf(stderr, "flowdp-eval: --limit %s: expected a non-negative integer\n", optarg);
                rc = 2;
                goto done;
            }
            break;
        case 'S': {
            long long v = parse_count(optarg, INT64_MAX);
            if (v < 0) {
                if (rank == 0) fprintf(stderr, "flowdp-eval: --seed %s: expected a non-negative integer\n", optarg);
                rc = 2;
                goto done;
            }
            seed = (unsigned long long)v;
            break;
        }
        case 'd': device = optarg; break;
        case 'T':
            threads = (int)parse_count(optarg, 4096);
            if (threads < 0) {
                if (rank == 0) fprintf(stderr, "flowdp-eval: --threads %s: expected 0 (all cores) to 4096\n", optarg);
                rc = 2;
                goto done;
            }
            break;
        case 'E': use_ema = 0; break;
        case 'h':
            if (rank == 0) usage(stdout);
            goto done;
        default:
            if (rank == 0) usage(stderr);
            rc = 2;
            goto done;
        }
    }
    if (optind != argc - 1) {
        if (rank == 0) fprintf(stderr, "flowdp-eval: need exactly one checkpoint (see --help)\n");
        rc = 2;
        goto done;
    }
    const char *ckpt = argv[optind];
    fdp_backend *be = fdp_backend_create(device, threads, &err);
    if (!be) {
        if (rank == 0) fprintf(stderr, "flowdp-eval: %s\n", err.msg);
        rc = 2;
        goto done;
    }
    fdp_model *m = NULL;
    fdp_config cfg;
    fdp_ckpt_meta meta;
    int bad = fdp_model_from_checkpoint(ckpt, be, use_ema, &m, &cfg, &meta, &err) != 0;
    if (fdp_comm_any(comm, bad)) {
        if (bad) fprintf(stderr, "flowdp-eval: %s\n", err.msg);
        fdp_backend_destroy(be);
        rc = 2;
        goto done;
    }
    if (!format) format = cfg.data.format == FDP_DATA_CIFAR10 ? "cifar10" : cfg.data.format == FDP_DATA_IDX ? "idx" : "hdf5";
    if (!data) data = cfg.data.test;
    fdp_source ds;
    memset(&ds, 0, sizeof ds);
    bad = 0;
    if (!data[0]) {
        bad = 1;
        fdp_err_set(&err, "%s has no [data] test; give --data PATH", ckpt);
    } else if (fdp_source_open(format, data, 0, limit, &ds, &err) != 0) {
        bad = 1;
    } else if (fdp_source_verify(&ds, rank, world, &err) != 0) {
        bad = 2; /* only this rank checked that shard: it reports */
    } else if (ds.c != m->C || ds.h != m->H || ds.w != m->W) {
        bad = 1;
        fdp_err_set(&err, "%s holds %dx%dx%d images, the model in %s takes %dx%dx%d", data, ds.c, ds.h, ds.w, ckpt,
                    m->C, m->H, m->W);
    }
    if (fdp_comm_any(comm, bad)) {
        if (bad == 2 || (bad && rank == 0)) fprintf(stderr, "flowdp-eval: %s\n", err.msg);
        rc = 2;
    } else {
        int64_t b, e;
        fdp_eval_range(ds.n, rank, world, &b, &e);
        fdp_arena *arena = fdp_arena_create(64u << 20, fdp_backend_arena_alloc, fdp_backend_arena_free, be, be->dev);
        fdp_eval_sums s = {0, 0, 0, 0};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        fdp_evaluate(m, be, arena, &ds, b, e, batch, 2, seed, draws, &s);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double v[4] = {s.nll, s.bpd, s.bpd_sq, s.count};
        fdp_comm_allreduce_f64(comm, v, 4, FDP_REDUCE_SUM);
        fdp_eval_sums g = {v[0], v[1], v[2], v[3]};
        double bpd, se, nll;
        fdp_eval_summary(&g, &bpd, &se, &nll);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (rank == 0) {
            printf("checkpoint:      %s (step %lld, %s %dx%dx%d)\n", ckpt, (long long)meta.step, m->type, m->C, m->H,
                   m->W);
            printf("data:            %s (%s), %lld images, %d rank(s)\n", data, format, (long long)g.count, world);
            printf("estimate:        %s\n", draws > 1 ? "importance-weighted (log-mean-exp over noise draws)"
                                                       : "single dequantization draw");
            if (draws > 1) printf("noise draws:     %d per image\n", draws);
            printf("test bpd:        %.5f +- %.5f (standard error)\n", bpd, se);
            printf("nats per image:  %.3f\n", nll);
            printf("time:            %.1f s (%.1f images/s per rank)\n", secs, (double)(e - b) * draws / secs);
            if (json) {
                char jc[8192], jd[8192];
                FILE *f = fopen(json, "w");
                if (!f) {
                    fprintf(stderr, "flowdp-eval: cannot write %s\n", json);
                    rc = 1;
                } else {
                    fprintf(f,
                            "{\n  \"checkpoint\": \"%s\",\n  \"step\": %lld,\n  \"model\": \"%s\",\n"
                            "  \"image_shape\": [%d, %d, %d],\n  \"data\": \"%s\",\n  \"format\": \"%s\",\n"
                            "  \"images\": %lld,\n  \"importance_samples\": %d,\n  \"bpd\": %.17g,\n"
                            "  \"bpd_stderr\": %.17g,\n  \"nats_per_image\": %.17g,\n  \"ranks\": %d,\n  \"seconds\": %.3f\n}\n",
                            json_str(ckpt, jc, sizeof jc), (long long)meta.step, m->type, m->C, m->H, m->W,
                            json_str(data, jd, sizeof jd), format, (long long)g.count,
                            draws, bpd, se, nll, world, secs);
                    if (fclose(f) != 0) {
                        fprintf(stderr, "flowdp-eval: error writing %s\n", json);
                        rc = 1;
                    }
                }
            }
        }
        fdp_arena_destroy(arena);
    }
    fdp_source_close(&ds);
    fdp_config_free(&cfg);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
done:
    fdp_comm_finalize(comm);
    return rc;
}
