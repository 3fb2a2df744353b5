/* ckpt_compare.c — helper for the end-to-end tests (tests/e2e_*.sh; not a ctest
 * itself): compare two flowdp checkpoints entry by entry.
 *
 * usage: ckpt_compare A.h5 B.h5 [--exact] [--rtol R] [--top K] [--sections params,buffers,optimizer,ema]
 *
 * Each checkpoint is read the way flowdp-eval reads one: its header and stored
 * config say which model; the model is built on the CPU backend only for its
 * name table; then fdp_ckpt_load (which verifies the checksum) fills scratch
 * buffers with the chosen sections. Both name tables must be equal (names and
 * shapes), else the checkpoints are "of different models" (exit 1).
 *
 * The measure is max over elements of |a - b| / (|b| + 1e-3). Prints both steps,
 * the worst entry (name, flat index, a, b) and the measure.
 *   --exact    bit-identical or not; prints the first differing entry otherwise
 *   --rtol R   within tolerance when the measure is <= R (default 1e-5)
 *   --top K    also list the K entries with the largest measure (default 0)
 *   --sections comma-separated subset of params,buffers,optimizer,ema
 *              (default params,buffers,optimizer; optimizer = moments m and v).
 *              A section absent from both files is reported and skipped; absent
 *              from only one is a difference.
 * Exit: 0 equal / within tolerance, 1 not, 2 on error (unreadable or corrupt
 * checkpoint, bad arguments). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/backend.h"
#include "flowdp/checkpoint.h"
#include "flowdp/config.h"
#include "flowdp/model.h"

enum { SEC_PARAMS = 1, SEC_BUFFERS = 2, SEC_OPT = 4, SEC_EMA = 8 };

typedef struct loaded {
    const char *path;
    fdp_model *model;   /* only for its name table */
    fdp_ckpt_meta meta;
    int has;            /* FDP_CKPT_HAS_* of the file */
    float *params;      /* (n_params) */
    float *buffers;     /* (n_buffers) */
    float *opt_m, *opt_v, *ema; /* (n_params) each, NULL when absent or not requested */
} loaded;

static void loaded_free(loaded *l) {
    free(l->params);
    free(l->buffers);
    free(l->opt_m);
    free(l->opt_v);
    free(l->ema);
    if (l->model) fdp_model_destroy(l->model);
}

/* 0, or -1 with a message in err */
static int load_one(loaded *l, const char *path, fdp_backend *be, int want, fdp_err *err) {
    memset(l, 0, sizeof *l);
    l->path = path;
    char *text = NULL;
    if (fdp_ckpt_read_header(path, &l->meta, &text, err) != 0) return -1;
    fdp_config cfg;
    fdp_config_defaults(&cfg);
    char name[FDP_CONFIG_STR_MAX + 32];
    snprintf(name, sizeof name, "%s:/config", path);
    int rc = fdp_config_load_string(&cfg, text ? text : "", name, err);
    free(text);
    if (rc != 0) return -1;
    rc = fdp_model_create(&cfg, l->meta.image_c, l->meta.image_h, l->meta.image_w, be, 0, &l->model, err);
    fdp_config_free(&cfg);
    if (rc != 0) return -1;
    l->has = fdp_ckpt_sections(path, err);
    if (l->has < 0) return -1;
    const fdp_params *p = l->model->params;
    size_t np = (size_t)p->n_params, nb = (size_t)p->n_buffers;
    l->params = calloc(np + 1, sizeof(float));
    l->buffers = calloc(nb + 1, sizeof(float));
    if ((want & SEC_OPT) && (l->has & FDP_CKPT_HAS_OPT_M)) l->opt_m = calloc(np + 1, sizeof(float));
    if ((want & SEC_OPT) && (l->has & FDP_CKPT_HAS_OPT_V)) l->opt_v = calloc(np + 1, sizeof(float));
    if ((want & SEC_EMA) && (l->has & FDP_CKPT_HAS_EMA)) l->ema = calloc(np + 1, sizeof(float));
    fdp_ckpt_state s = {p, l->params, l->buffers, l->opt_m, l->opt_v, l->ema};
    return fdp_ckpt_load(path, &s, NULL, NULL, err);
}

/* the tables must agree in names, kinds and shapes; 0 or 1 (printed) */
static int tables_differ(const fdp_params *a, const fdp_params *b) {
    if (a->count != b->count || a->n_params != b->n_params || a->n_buffers != b->n_buffers) {
        printf("different models: %d entries (%lld params, %lld buffer floats) vs %d (%lld, %lld)\n", a->count,
               (long long)a->n_params, (long long)a->n_buffers, b->count, (long long)b->n_params,
               (long long)b->n_buffers);
        return 1;
    }
    for (int i = 0; i < a->count; i++) {
        const fdp_param_entry *x = &a->entries[i], *y = &b->entries[i];
        int same = strcmp(x->name, y->name) == 0 && x->kind == y->kind && x->ndim == y->ndim &&
                   x->offset == y->offset;
        for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == y->shape[d];
        if (!same) {
            printf("different models: entry %d is %s in A, %s in B (or differs in shape)\n", i, x->name, y->name);
            return 1;
        }
    }
    return 0;
}

/* the K worst entries (by their own max measure), for --top */
typedef struct top_list {
    int k, n;
    double *measure;
    const char **section, **name;
} top_list;

static void top_add(top_list *t, double m, const char *section, const char *name) {
    if (t->k <= 0) return;
    int at = t->n < t->k ? t->n++ : t->k - 1;
    if (at == t->k - 1 && t->n == t->k && m <= t->measure[at]) return;
    t->measure[at] = m;
    t->section[at] = section;
    t->name[at] = name;
    for (int i = at; i > 0 && t->measure[i] > t->measure[i - 1]; i--) {
        double tm = t->measure[i]; t->measure[i] = t->measure[i - 1]; t->measure[i - 1] = tm;
        const char *ts = t->section[i]; t->section[i] = t->section[i - 1]; t->section[i - 1] = ts;
        const char *tn = t->name[i]; t->name[i] = t->name[i - 1]; t->name[i - 1] = tn;
    }
}

typedef struct worst {
    double measure;
    const char *section, *name;
    int64_t index;
    float a, b;
    int found_diff; /* --exact: a differing element was found */
} worst;

/* compare the entries of one kind; section names the checkpoint section */
static void compare_section(const fdp_params *t, fdp_param_kind kind, const char *section, const float *a,
                            const float *b, int exact, worst *w, int64_t *compared, top_list *top) {
    for (int i = 0; i < t->count; i++) {
        const fdp_param_entry *e = &t->entries[i];
        if (e->kind != kind) continue;
        const float *pa = a + e->offset, *pb = b + e->offset;
        double entry_max = 0.0;
        for (int64_t j = 0; j < e->numel && !exact; j++) {
            double m = fabs((double)pa[j] - (double)pb[j]) / (fabs((double)pb[j]) + 1e-3);
            if (!(m <= entry_max)) entry_max = isnan(m) ? INFINITY : m;
        }
        if (!exact) top_add(top, entry_max, section, e->name);
        for (int64_t j = 0; j < e->numel; j++) {
            (*compared)++;
            if (exact) {
                if (w->found_diff) return;
                if (memcmp(&pa[j], &pb[j], sizeof(float)) != 0) {
                    w->found_diff = 1;
                    w->section = section;
                    w->name = e->name;
                    w->index = j;
                    w->a = pa[j];
                    w->b = pb[j];
                    w->measure = fabs((double)pa[j] - (double)pb[j]) / (fabs((double)pb[j]) + 1e-3);
                    return;
                }
                continue;
            }
            double m = fabs((double)pa[j] - (double)pb[j]) / (fabs((double)pb[j]) + 1e-3);
            if (isnan(m)) m = INFINITY; /* a NaN on one side only, or both: never "within tolerance" */
            if (m > w->measure || !w->name) {
                w->measure = m;
                w->section = section;
                w->name = e->name;
                w->index = j;
                w->a = pa[j];
                w->b = pb[j];
            }
        }
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: ckpt_compare A.h5 B.h5 [--exact] [--rtol R] [--top K] [--sections params,buffers,optimizer,ema]\n"
               "exit 0: equal / within tolerance, 1: not, 2: error\n");
}

int main(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL};
    int npaths = 0, exact = 0, want = SEC_PARAMS | SEC_BUFFERS | SEC_OPT;
    double rtol = 1e-5;
    int topk = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--exact") == 0) {
            exact = 1;
        } else if (strcmp(argv[i], "--rtol") == 0 && i + 1 < argc) {
            char *end;
            rtol = strtod(argv[++i], &end);
            if (*end || !(rtol >= 0)) {
                fprintf(stderr, "ckpt_compare: --rtol %s: expected a number >= 0\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--top") == 0 && i + 1 < argc) {
            char *end;
            topk = (int)strtol(argv[++i], &end, 10);
            if (*end || topk < 0 || topk > 100000) {
                fprintf(stderr, "ckpt_compare: --top %s: expected a count >= 0\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--sections") == 0 && i + 1 < argc) {
            want = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (strcmp(tok, "params") == 0) want |= SEC_PARAMS;
                else if (strcmp(tok, "buffers") == 0) want |= SEC_BUFFERS;
                else if (strcmp(tok, "optimizer") == 0) want |= SEC_OPT;
                else if (strcmp(tok, "ema") == 0) want |= SEC_EMA;
                else {
                    fprintf(stderr, "ckpt_compare: unknown section '%s' (params, buffers, optimizer, ema)\n", tok);
                    return 2;
                }
            }
            if (!want) {
                fprintf(stderr, "ckpt_compare: --sections: nothing chosen\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "ckpt_compare: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (npaths < 2) {
            paths[npaths++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (npaths != 2) {
        usage(stderr);
        return 2;
    }

    fdp_err err = {{0}};
    fdp_backend *be = fdp_backend_create("cpu", 1, &err);
    if (!be) {
        fprintf(stderr, "ckpt_compare: %s\n", err.msg);
        return 2;
    }
    loaded A, B;
    memset(&A, 0, sizeof A);
    memset(&B, 0, sizeof B);
    int rc = 2;
    if (load_one(&A, paths[0], be, want, &err) != 0 || load_one(&B, paths[1], be, want, &err) != 0) {
        fprintf(stderr, "ckpt_compare: %s\n", err.msg);
        goto out;
    }
    printf("A: %s (step %lld)\nB: %s (step %lld)\n", A.path, (long long)A.meta.step, B.path, (long long)B.meta.step);
    const fdp_params *t = A.model->params;
    if (tables_differ(t, B.model->params)) {
        rc = 1;
        goto out;
    }

    worst w;
    memset(&w, 0, sizeof w);
    int64_t compared = 0;
    int missing = 0;
    top_list top = {topk, 0, calloc((size_t)topk + 1, sizeof(double)), calloc((size_t)topk + 1, sizeof(char *)),
                    calloc((size_t)topk + 1, sizeof(char *))};
    if (want & SEC_PARAMS) compare_section(t, FDP_PARAM, "params", A.params, B.params, exact, &w, &compared, &top);
    if (want & SEC_BUFFERS) compare_section(t, FDP_BUFFER, "buffers", A.buffers, B.buffers, exact, &w, &compared, &top);
    struct {
        int bit;
        const char *section;
        float *a, *b;
        int want_bit;
    } opt[3] = {{FDP_CKPT_HAS_OPT_M, "optimizer/m", A.opt_m, B.opt_m, SEC_OPT},
                {FDP_CKPT_HAS_OPT_V, "optimizer/v", A.opt_v, B.opt_v, SEC_OPT},
                {FDP_CKPT_HAS_EMA, "ema", A.ema, B.ema, SEC_EMA}};
    for (int k = 0; k < 3; k++) {
        if (!(want & opt[k].want_bit)) continue;
        int ha = (A.has & opt[k].bit) != 0, hb = (B.has & opt[k].bit) != 0;
        if (!ha && !hb) {
            printf("section %s: absent from both, skipped\n", opt[k].section);
        } else if (ha != hb) {
            printf("section %s: present only in %s\n", opt[k].section, ha ? "A" : "B");
            missing = 1;
        } else {
            compare_section(t, FDP_PARAM, opt[k].section, opt[k].a, opt[k].b, exact, &w, &compared, &top);
        }
    }

    if (exact) {
        if (w.found_diff) {
            printf("first difference: /%s/%s [%lld]: A %.9g (%a) vs B %.9g (%a), measure %.3e\n", w.section, w.name,
                   (long long)w.index, (double)w.a, (double)w.a, (double)w.b, (double)w.b, w.measure);
            printf("NOT bit-identical\n");
            rc = 1;
        } else {
            printf("%lld values compared: bit-identical%s\n", (long long)compared,
                   missing ? ", but a section is missing from one file" : "");
            rc = missing ? 1 : 0;
        }
    } else {
        if (w.name)
            printf("worst: /%s/%s [%lld]: A %.9g vs B %.9g\n", w.section, w.name, (long long)w.index, (double)w.a,
                   (double)w.b);
        for (int i = 0; i < top.n; i++)
            printf("  top %d: /%s/%s: max measure %.3e\n", i + 1, top.section[i], top.name[i], top.measure[i]);
        printf("max |a-b|/(|b|+1e-3) = %.6e over %lld values (rtol %.3g)\n", w.measure, (long long)compared, rtol);
        int ok = w.measure <= rtol && !missing;
        printf("%s\n", ok ? "within tolerance" : "NOT within tolerance");
        rc = ok ? 0 : 1;
    }
    free(top.measure);
    free(top.section);
    free(top.name);
out:
    loaded_free(&A);
    loaded_free(&B);
    fdp_backend_destroy(be);
    return rc;
}
