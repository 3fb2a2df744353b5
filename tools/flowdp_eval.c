/* flowdp_eval.c — flowdp-eval: a checkpoint + a test set -> bits per dimension
 * (mean and standard error over images), nats per image, as text and JSON.
 * MPI-parallel: run under mpiexec/srun and each rank evaluates a contiguous
 * slice of the test set; the sums are reduced once at the end. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowdp/cli.h"
#include "flowdp/comm.h"
#include "flowdp/cuda.h"
#include "flowdp/evaluate.h"
#include "flowdp/log.h"
#include "flowdp/model_io.h"
#include "flowdp/outpath.h"
#include "flowdp/run.h"

/* a non-negative decimal integer up to max, or -1 */
static long long parse_count(const char *s, long long max) {
    long long v;
    return fdp_cli_int(s, 0, max, &v) == 0 ? v : -1;
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
            "                   [--threads T] [--no-ema] [--force]\n"
            "Reports the test-set bits per dimension of the model in CKPT (mean and standard error over\n"
            "images), its nats per image, the images evaluated and the checkpoint's step.\n"
            "  --data PATH               test set (default: [data] test of the checkpoint's config)\n"
            "  --format F                idx, cifar10 or hdf5 (flowdp-pack shards: PATH is the index file\n"
            "                            or its directory; streamed, never loaded whole; every shard's\n"
            "                            checksum is verified first, split over the ranks)\n"
            "                            (default: the checkpoint's [data] format)\n"
            "  --importance-samples K    K > 1: importance-weighted estimate, log-mean-exp over K\n"
            "                            dequantization-noise draws per image (default 1)\n"
            "  --json FILE               also write the report as JSON (atomically; never an input file;\n"
            "                            the standard error is null with fewer than 2 images)\n"
            "  --force                   replace the --json FILE even when it is not a JSON file\n"
            "  --batch B                 images per forward pass (default 256; more than a rank's\n"
            "                            images means all of them at once)\n"
            "  --limit N                 only the first N images (default all)\n"
            "  --seed S                  seed of the noise draws (default 0)\n"
            "  --device D, --threads T   backend and CPU threads per rank\n"
            "  --no-ema                  raw weights even when the checkpoint has EMA weights\n"
            "Run under mpiexec -n R (or srun) to split the test set over R ranks.\n");
}


typedef struct eval_opts {
    const char *data, *format, *json, *device, *ckpt;
    int draws, batch, threads, use_ema, force;
    long long limit;
    unsigned long long seed;
} eval_opts;

/* a bad value: rank 0 prints "flowdp-eval: OPT VALUE: expected ..."; returns 2 */
static int bad_value(int rank, const char *opt, const char *value, const char *expected) {
    if (rank == 0) fprintf(stderr, "flowdp-eval: %s %s: expected %s\n", opt, value, expected);
    return 2;
}

/* the command line into *o; returns -1 to go on, else the exit code (rank 0 printed) */
static int parse_args(int argc, char **argv, int rank, eval_opts *o) {
    static struct option opts[] = {{"data", required_argument, 0, 'D'},   {"format", required_argument, 0, 'F'},
                                   {"importance-samples", required_argument, 0, 'K'},
                                   {"json", required_argument, 0, 'J'},   {"batch", required_argument, 0, 'B'},
                                   {"limit", required_argument, 0, 'L'},  {"seed", required_argument, 0, 'S'},
                                   {"device", required_argument, 0, 'd'}, {"threads", required_argument, 0, 'T'},
                                   {"no-ema", no_argument, 0, 'E'},       {"force", no_argument, 0, 'f'},
                                   {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    long long v;
    char buf[8];
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'D': o->data = optarg; break;
        case 'F': o->format = optarg; break;
        case 'K':
            if ((v = parse_count(optarg, 4096)) < 1) return bad_value(rank, "--importance-samples", optarg, "1 to 4096");
            o->draws = (int)v;
            break;
        case 'J': o->json = optarg; break;
        case 'B':
            if ((v = parse_count(optarg, INT32_MAX)) < 1) return bad_value(rank, "--batch", optarg, "a positive integer");
            o->batch = (int)v;
            break;
        case 'L':
            if ((o->limit = parse_count(optarg, INT64_MAX)) < 0)
                return bad_value(rank, "--limit", optarg, "a non-negative integer");
            break;
        case 'S':
            if ((v = parse_count(optarg, INT64_MAX)) < 0)
                return bad_value(rank, "--seed", optarg, "a non-negative integer");
            o->seed = (unsigned long long)v;
            break;
        case 'd': o->device = optarg; break;
        case 'T':
            if ((o->threads = (int)parse_count(optarg, 4096)) < 0)
                return bad_value(rank, "--threads", optarg, "0 (all cores) to 4096");
            break;
        case 'E': o->use_ema = 0; break;
        case 'f': o->force = 1; break;
        case 'h':
            if (rank == 0) usage(stdout);
            return 0;
        default:
            if (rank == 0)
                fprintf(stderr, "flowdp-eval: unknown or incomplete option '%s' (see --help)\n",
                        fdp_cli_bad_option(argv, buf, sizeof buf));
            return 2;
        }
    }
    if (optind >= argc) {
        if (rank == 0) fprintf(stderr, "flowdp-eval: no checkpoint given (see --help)\n");
        return 2;
    }
    if (optind < argc - 1) {
        if (rank == 0) fprintf(stderr, "flowdp-eval: unexpected argument '%s' (see --help)\n", argv[optind + 1]);
        return 2;
    }
    o->ckpt = argv[optind];
    return -1;
}

/* Agreement on a bad-input error: 1 when any rank has bad set, and then the
 * lowest such rank prints its msg (one line in all), else 0. Collective. */
static int agree_fail(fdp_comm *comm, int bad, const char *msg) {
    int64_t r = bad ? fdp_comm_rank(comm) : fdp_comm_size(comm);
    fdp_comm_allreduce_i64(comm, &r, 1, FDP_REDUCE_MIN);
    if (r == fdp_comm_size(comm)) return 0;
    if (r == fdp_comm_rank(comm)) fprintf(stderr, "flowdp-eval: %s\n", msg);
    return 1;
}

/* "x" with %.17g, or null when not finite (JSON has no NaN) */
static const char *json_num(double x, char *out, size_t len) {
    if (isfinite(x))
        snprintf(out, len, "%.17g", x);
    else
        snprintf(out, len, "null");
    return out;
}

typedef struct eval_result {
    const char *data, *format;
    const fdp_model *m;
    long long step, images;
    int ranks;
    double bpd, se, nll, secs, per_rank_images;
} eval_result;

static void print_report(const eval_opts *o, const eval_result *r) {
    printf("checkpoint:      %s (step %lld, %s %dx%dx%d)\n", o->ckpt, r->step, r->m->type, r->m->C, r->m->H, r->m->W);
    printf("data:            %s (%s), %lld images, %d rank(s)\n", r->data, r->format, r->images, r->ranks);
    printf("estimate:        %s\n",
           o->draws > 1 ? "importance-weighted (log-mean-exp over noise draws)" : "single dequantization draw");
    if (o->draws > 1) printf("noise draws:     %d per image\n", o->draws);
    if (isfinite(r->se))
        printf("test bpd:        %.5f +- %.5f (standard error)\n", r->bpd, r->se);
    else
        printf("test bpd:        %.5f +- n/a (standard error: needs at least 2 images)\n", r->bpd);
    printf("nats per image:  %.3f\n", r->nll);
    printf("time:            %.1f s (%.1f images/s per rank)\n", r->secs, r->per_rank_images * o->draws / r->secs);
}

/* the JSON report, written atomically; returns 0 or -1 (err) */
static int write_json(const eval_opts *o, const eval_result *r, fdp_err *err) {
    char jc[8192], jd[8192], b[3][64];
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return fdp_err_set(err, "cannot write %s: %s", o->json, strerror(errno));
    fprintf(f,
            "{\n  \"checkpoint\": \"%s\",\n  \"step\": %lld,\n  \"model\": \"%s\",\n"
            "  \"image_shape\": [%d, %d, %d],\n  \"data\": \"%s\",\n  \"format\": \"%s\",\n"
            "  \"images\": %lld,\n  \"importance_samples\": %d,\n  \"bpd\": %s,\n"
            "  \"bpd_stderr\": %s,\n  \"nats_per_image\": %s,\n  \"ranks\": %d,\n  \"seconds\": %.3f\n}\n",
            json_str(o->ckpt, jc, sizeof jc), r->step, r->m->type, r->m->C, r->m->H, r->m->W,
            json_str(r->data, jd, sizeof jd), r->format, r->images, o->draws, json_num(r->bpd, b[0], sizeof b[0]),
            json_num(r->se, b[1], sizeof b[1]), json_num(r->nll, b[2], sizeof b[2]), r->ranks, r->secs);
    int rc = 0;
    if (fclose(f) != 0 || !text)
        rc = fdp_err_set(err, "cannot write %s: out of memory", o->json);
    else
        rc = fdp_out_write_file(o->json, text, len, err);
    free(text);
    return rc;
}

/* open and check the test set; 0, or 2 after the (single) error line */
static int open_data(fdp_comm *comm, const eval_opts *o, const fdp_model *m, fdp_source *ds, fdp_err *err) {
    int rank = fdp_comm_rank(comm), world = fdp_comm_size(comm);
    int bad = 0;
    if (!o->data[0]) {
        bad = 1;
        fdp_err_set(err, "%s has no [data] test; give --data PATH", o->ckpt);
    } else if (fdp_source_open(o->format, o->data, 0, o->limit, ds, err) != 0) {
        bad = 1;
    } else if (fdp_source_verify(ds, rank, world, err) != 0) {
        bad = 1; /* only this rank checked that shard */
    } else if (ds->c != m->C || ds->h != m->H || ds->w != m->W) {
        bad = 1;
        fdp_err_set(err, "%s holds %dx%dx%d images, the model in %s takes %dx%dx%d", o->data, ds->c, ds->h, ds->w,
                    o->ckpt, m->C, m->H, m->W);
    }
    return agree_fail(comm, bad, err->msg) ? 2 : 0;
}

/* evaluate, reduce, report; returns the exit code (agreed by every rank) */
static int run_eval(fdp_run *run, const eval_opts *o, fdp_source *ds, const fdp_ckpt_meta *meta) {
    fdp_comm *comm = run->comm;
    fdp_model *m = run->model;
    int rank = run->rank, world = run->world;
    fdp_err err = {{0}};
    int64_t b, e;
    fdp_eval_range(ds->n, rank, world, &b, &e);
    fdp_run_arena(run);
    fdp_eval_sums s = {0, 0, 0, 0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int bad = fdp_evaluate_range(m, run->be, run->arena, ds, b, e, o->batch, 2, o->seed, o->draws, &s, &err) != 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (agree_fail(comm, bad, err.msg)) return 2;
    double v[4] = {s.nll, s.bpd, s.bpd_sq, s.count};
    fdp_comm_allreduce_f64(comm, v, 4, FDP_REDUCE_SUM);
    fdp_eval_sums g = {v[0], v[1], v[2], v[3]};
    eval_result r = {.data = o->data, .format = o->format, .m = m, .step = (long long)meta->step,
                     .images = (long long)g.count, .ranks = world, .per_rank_images = (double)(e - b)};
    fdp_eval_summary(&g, &r.bpd, &r.se, &r.nll);
    r.secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    int failed = 0;
    if (rank == 0) {
        print_report(o, &r);
        fflush(stdout);
        if (o->json && write_json(o, &r, &err) != 0) {
            fprintf(stderr, "flowdp-eval: %s\n", err.msg);
            failed = 1;
        }
    }
    return fdp_comm_any(comm, failed) ? 1 : 0;
}

int main(int argc, char **argv) {
    fdp_log_set_prog("flowdp-eval");
    /* a write past RLIMIT_FSIZE (ulimit -f) must fail with EFBIG and be reported
     * like any other write error, not kill the process with SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    fdp_comm *comm = NULL;
    fdp_err err = {{0}};
    if (fdp_comm_init(&argc, &argv, &comm, &err) != 0) {
        fprintf(stderr, "flowdp-eval: %s\n", err.msg);
        return 1;
    }
    int rank = fdp_comm_rank(comm);
    eval_opts o = {.device = "cpu", .draws = 1, .batch = 256, .use_ema = 1};
    int rc = parse_args(argc, argv, rank, &o);
    if (rc >= 0) goto done;
    rc = 2;
    /* the JSON output before any work (rank 0 writes it, so rank 0 checks it) */
    fdp_out_input in[2] = {{o.ckpt, "the input checkpoint"}, {o.data, "the test set"}};
    int bad = rank == 0 && o.json && fdp_out_check("--json", o.json, FDP_OUT_JSON, o.force, in, 2, &err) != 0;
    if (agree_fail(comm, bad, err.msg)) goto done;
    /* the run context (flowdp/run.h) of an evaluation: the backend, the checkpoint's model, the arena */
    fdp_run run;
    fdp_run_init(&run, NULL, comm);
    bad = fdp_run_backend(&run, o.device, o.threads, &err) != 0;
    if (agree_fail(comm, bad, err.msg)) {
        fdp_run_free(&run);
        goto done;
    }
    fdp_model *m = NULL;
    fdp_config cfg;
    fdp_ckpt_meta meta;
    bad = fdp_model_from_checkpoint(o.ckpt, run.be, o.use_ema, &m, &cfg, &meta, &err) != 0;
    if (!bad) fdp_run_adopt_model(&run, m);
    if (agree_fail(comm, bad, err.msg)) {
        if (!bad) fdp_config_free(&cfg);
        fdp_run_free(&run);
        goto done;
    }
    if (!o.format)
        o.format = cfg.data.format == FDP_DATA_CIFAR10 ? "cifar10" : cfg.data.format == FDP_DATA_IDX ? "idx" : "hdf5";
    if (!o.data) { /* the test set named by the checkpoint: not the output either */
        o.data = cfg.data.test;
        in[1].path = o.data;
        bad = rank == 0 && o.json && fdp_out_check("--json", o.json, FDP_OUT_JSON, 1, in, 2, &err) != 0;
    }
    fdp_source ds;
    memset(&ds, 0, sizeof ds);
    if (!agree_fail(comm, bad, err.msg) && (rc = open_data(comm, &o, m, &ds, &err)) == 0)
        rc = run_eval(&run, &o, &ds, &meta);
    else
        rc = 2;
    fdp_source_close(&ds);
    fdp_config_free(&cfg);
    fdp_run_free(&run);
done:
    fdp_comm_finalize(comm);
    return rc;
}
