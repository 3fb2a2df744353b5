/* config.c — the INI configuration: one table row per key (section, key, type,
 * default, range / allowed values, help, offsetof of the fdp_config field), and
 * everything driven by that table: defaults, loading files and strings through
 * inih, --set overrides, validation, writing the whole config back as INI, the
 * --help text and equality.
 *
 * About inih (Debian libinih 55): the installed header says
 * INI_HANDLER_LINENO 0, so the handler gets no line number (and a definition
 * that disagrees with the library build would be undefined behaviour). We parse
 * with ini_parse_stream and our own line reader, which counts lines itself (inih
 * calls it once per line, so its count equals inih's). The reader also
 *  - strips indentation, so inih never treats an indented line as a
 *    continuation of the previous value (its multi-line mode is on by default),
 *  - blanks whole-line comments,
 *  - handles lines longer than inih's fixed line buffer (200 bytes by default,
 *    which would otherwise be split into two "lines"): it splits such a
 *    `key = value` itself and hands inih a short stand-in line whose handler
 *    call is then given the real key and value. So paths of any length work and
 *    fdp_config_to_ini output always loads back.
 * inih strips inline comments that start with ';' after whitespace; we also
 * strip ones starting with '#' (and a ';'/'#' at the very start of a value). */
#include "flowdp/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the key table ----------------------------------------------------------- */

typedef enum { T_INT, T_INT64, T_FLOAT, T_BOOL, T_STRING, T_ENUM } cfg_type;

enum { R_LO = 1, R_HI = 2, R_LO_OPEN = 4, R_HI_OPEN = 8 };
typedef struct cfg_range {
    double lo, hi;
    unsigned flags; /* R_* */
} cfg_range;
#define NO_RANGE {0, 0, 0}
#define GE(a) {(a), 0, R_LO}                                   /* x >= a */
#define GT(a) {(a), 0, R_LO | R_LO_OPEN}                       /* x > a */
#define IN(a, b) {(a), (b), R_LO | R_HI}                       /* [a, b] */
#define IN_OPEN(a, b) {(a), (b), R_LO | R_HI | R_LO_OPEN | R_HI_OPEN} /* (a, b) */
#define IN_CO(a, b) {(a), (b), R_LO | R_HI | R_HI_OPEN}        /* [a, b) */
#define IN_OC(a, b) {(a), (b), R_LO | R_HI | R_LO_OPEN}        /* (a, b] */

typedef struct cfg_key {
    const char *section;
    const char *key;
    size_t offset;             /* of the field in fdp_config */
    cfg_type type;
    const char *def;           /* default, as it would be written in a file */
    cfg_range range;           /* numbers only */
    const char *const *values; /* T_ENUM: allowed names, NULL-terminated; index = enum value */
    const char *help;          /* one line */
} cfg_key;

/* K(train, lr): the section and key names are the struct member names. */
#define K(sec, field) #sec, #field, offsetof(fdp_config, sec.field)

static const char *const E_MODEL[] = {"realnvp", "glow", NULL};
static const char *const E_PERM[] = {"reverse", "shuffle", "invconv", "invconv_lu", NULL};
static const char *const E_COUPLING[] = {"additive", "affine", NULL};
static const char *const E_FORMAT[] = {"idx", "cifar10", "hdf5", NULL};
static const char *const E_DEVICE[] = {"cpu", "cuda", NULL};
static const char *const E_OPT[] = {"adam", "adamax", NULL};
static const char *const E_DECAY[] = {"none", "cosine", "exponential", NULL};
static const char *const E_NONFINITE[] = {"stop", "skip", NULL};
static const char *const E_SIGNAL[] = {"SIGUSR2", "SIGUSR1", "SIGTERM", "none", NULL};
static const char *const E_WRITE_ERR[] = {"continue", "stop", NULL};
static const char *const E_LEVEL[] = {"error", "warn", "info", "debug", NULL};

static const struct {
    const char *name, *help;
} SECTIONS[] = {
    {"model", "the flow architecture (RealNVP keys, then Glow keys)"},
    {"data", "the dataset and its loader"},
    {"train", "optimisation, schedule, devices and the data-parallel run"},
    {"checkpoint", "checkpoints (HDF5, written whole: temp file + fsync + rename)"},
    {"log", "logging and metrics"},
};
#define NSECTIONS ((int)(sizeof SECTIONS / sizeof SECTIONS[0]))

static const cfg_key KEYS[] = {
    /* [model] */
    {K(model, type), T_ENUM, "realnvp", NO_RANGE, E_MODEL,
     "realnvp: Dinh et al. 2017, the lecture notebook's RealNVP; glow: Kingma & Dhariwal 2018 (openai/glow)"},
    {K(model, num_scales), T_INT, "2", GE(1), NULL, "RealNVP: number of scales (coupling blocks + squeeze per scale)"},
    {K(model, mid_channels), T_INT, "64", GE(1), NULL, "RealNVP: channels inside the s/t ResNets"},
    {K(model, num_blocks), T_INT, "8", GE(1), NULL, "RealNVP: residual blocks per s/t ResNet"},
    {K(model, data_constraint), T_FLOAT, "0.9", IN_OPEN(0, 1), NULL,
     "RealNVP preprocessing: x in [0,1] is mapped to [(1-a)/2, (1+a)/2] before the logit"},
    {K(model, n_bits_x), T_INT, "8", IN(1, 8), NULL, "Glow: bits per colour channel the images are quantised to (2^n bins)"},
    {K(model, n_levels), T_INT, "3", GE(1), NULL, "Glow: number of levels L (squeeze + K steps + split each)"},
    {K(model, depth), T_INT, "32", GE(1), NULL, "Glow: flow steps per level K (actnorm, permutation, coupling)"},
    {K(model, width), T_INT, "512", GE(1), NULL, "Glow: channels of the coupling networks"},
    {K(model, flow_permutation), T_ENUM, "invconv_lu", NO_RANGE, E_PERM,
     "Glow: channel mixing between couplings: reverse, fixed random shuffle, invertible 1x1 conv, or 1x1 conv in LU form"},
    {K(model, flow_coupling), T_ENUM, "affine", NO_RANGE, E_COUPLING, "Glow: coupling layer: additive (volume preserving) or affine"},
    {K(model, learntop), T_BOOL, "true", NO_RANGE, NULL, "Glow: learn the mean and log-scale of the top-level prior"},

    /* [data] */
    {K(data, format), T_ENUM, "idx", NO_RANGE, E_FORMAT,
     "dataset format: idx (MNIST/Fashion-MNIST ubyte files), cifar10 (binary batches), hdf5 (flowdp-pack shards)"},
    {K(data, train), T_STRING, "", NO_RANGE, NULL,
     "training set: idx: the images file (train-images-idx3-ubyte); cifar10: the directory with data_batch_1..5.bin; "
     "hdf5: the index file written by flowdp-pack (or its directory: <dir>/train.index)"},
    {K(data, test), T_STRING, "", NO_RANGE, NULL,
     "test set, same convention (idx: t10k-images-idx3-ubyte; cifar10: the directory with test_batch.bin; hdf5: the index "
     "or <dir>/test.index); empty = no test set"},
    {K(data, train_limit), T_INT64, "0", GE(0), NULL, "train on the first N training images only (0 = all; for tests and quick looks)"},
    {K(data, test_limit), T_INT64, "0", GE(0), NULL, "evaluate on the first N test images only (0 = all)"},
    {K(data, prefetch), T_INT, "2", GE(0), NULL, "batches the loader thread prepares ahead, for training and evaluation, any format (0 = load in the training thread)"},
    {K(data, hflip), T_BOOL, "false", NO_RANGE, NULL,
     "augmentation: mirror left-right with probability 1/2, keyed by (seed, epoch, global sample index)"},
    {K(data, translate), T_FLOAT, "0", IN(0, 0.5), NULL,
     "augmentation: random shift by whole pixels, up to floor(this x side) each way, border filled with the nearest "
     "edge pixel (0 = off)"},
    {K(data, verify), T_BOOL, "true", NO_RANGE, NULL,
     "hdf5: check every shard's checksum at start, split over the ranks (false: skip it, e.g. for a requeued job on a "
     "large packed set; the index, shard shapes and counts are always checked)"},

    /* [train] */
    {K(train, device), T_ENUM, "cpu", NO_RANGE, E_DEVICE, "compute device: cpu (oneDNN + OpenMP) or cuda (one GPU per rank)"},
    {K(train, threads), T_INT, "0", GE(0), NULL, "OpenMP threads per rank (0 = all cores available to the rank)"},
    {K(train, batch_size), T_INT, "64", GE(1), NULL, "images per rank per step (global batch = batch_size x ranks)"},
    {K(train, steps), T_INT64, "0", GE(0), NULL, "optimiser steps to train (0 = derive from epochs; steps wins when both are set)"},
    {K(train, epochs), T_FLOAT, "1", GE(0), NULL, "passes over the training set, may be fractional (used when steps = 0)"},
    {K(train, seed), T_INT64, "0", GE(0), NULL, "seed of everything random: init, shuffling, dequantisation noise, augmentation"},
    {K(train, optimizer), T_ENUM, "adam", NO_RANGE, E_OPT, "optimiser: adam or adamax (the infinity-norm variant Glow uses)"},
    {K(train, lr), T_FLOAT, "1e-3", GT(0), NULL, "peak learning rate (after warmup)"},
    {K(train, adam_beta1), T_FLOAT, "0.9", IN_CO(0, 1), NULL, "Adam/Adamax beta1 (first-moment decay)"},
    {K(train, adam_beta2), T_FLOAT, "0.999", IN_CO(0, 1), NULL, "Adam/Adamax beta2 (second-moment decay)"},
    {K(train, adam_eps), T_FLOAT, "1e-8", GT(0), NULL, "Adam/Adamax epsilon"},
    {K(train, weight_decay), T_FLOAT, "5e-5", GE(0), NULL,
     "L2 penalty added to the gradient, applied to the weight-norm scales g only (as the notebook does)"},
    {K(train, max_grad_norm), T_FLOAT, "100", GE(0), NULL, "clip gradients to this global L2 norm (0 = no clipping)"},
    {K(train, warmup_steps), T_INT64, "0", GE(0), NULL, "linear learning-rate warmup from 0 over this many steps (0 = none)"},
    {K(train, lr_decay), T_ENUM, "none", NO_RANGE, E_DECAY,
     "learning-rate decay after warmup: none, cosine (to lr_min at the last step), exponential (x lr_decay_rate per step, floor lr_min)"},
    {K(train, lr_min), T_FLOAT, "0", GE(0), NULL, "lowest learning rate the decay reaches"},
    {K(train, lr_decay_rate), T_FLOAT, "0.999995", IN_OC(0, 1), NULL, "exponential decay: factor per step"},
    {K(train, ema), T_FLOAT, "0", IN_CO(0, 1), NULL,
     "decay of an exponential moving average of the parameters, used for eval and samples (0 = off; e.g. 0.999)"},
    {K(train, eval_every), T_INT64, "0", GE(0), NULL, "evaluate test bpd every N steps (0 = at the end of each epoch)"},
    {K(train, eval_batch_size), T_INT, "500", GE(1), NULL, "images per rank per evaluation batch"},
    {K(train, on_nonfinite), T_ENUM, "stop", NO_RANGE, E_NONFINITE,
     "NaN/Inf in the loss or gradients: stop (every rank exits with a message naming the step) or skip the step (counted in the metrics)"},
    {K(train, rebuild_activations), T_BOOL, "false", NO_RANGE, NULL,
     "RealNVP: keep no s/t-network activations in forward; backward rebuilds each coupling's input from its output "
     "and recomputes its s/t network (activation memory no longer grows with depth; one more s/t forward per step; "
     "gradients equal up to float rounding). Not implemented for glow"},
    {K(train, bucket_mb), T_FLOAT, "25", GT(0), NULL, "gradient all-reduce bucket size in MiB (overlaps communication with backward)"},
    {K(train, check_every), T_INT64, "100", GE(0), NULL, "compare a parameter checksum across ranks every N steps (0 = never)"},
    {K(train, watchdog_s), T_FLOAT, "600", GE(0), NULL, "seconds a rank may wait in one collective (MPI or NCCL) before it aborts the whole job naming itself (0 = never); longer than the slowest checkpoint write"},
    {K(train, signal), T_ENUM, "SIGUSR2", NO_RANGE, E_SIGNAL,
     "signal on which every rank checkpoints and exits 3, for SLURM --signal=USR2@120 (sent to the ranks) and requeue (none = no handler)"},

    /* [checkpoint] */
    {K(checkpoint, dir), T_STRING, "run", NO_RANGE, NULL, "run directory: checkpoints, metrics and samples go here"},
    {K(checkpoint, every), T_INT64, "500", GE(0), NULL, "write a checkpoint every N steps (0 = only at the end and on the signal)"},
    {K(checkpoint, keep_last), T_INT, "3", GE(1), NULL, "keep the newest N periodic checkpoints, delete older ones"},
    {K(checkpoint, keep_best), T_BOOL, "true", NO_RANGE, NULL, "also keep the checkpoint with the best test bpd"},
    {K(checkpoint, on_write_error), T_ENUM, "continue", NO_RANGE, E_WRITE_ERR,
     "a periodic checkpoint cannot be written (disk full, ...): continue training with a warning, or stop (exit 5); a failed final or stop-signal checkpoint always exits 5"},

    /* [log] */
    {K(log, every), T_INT64, "10", GE(1), NULL, "print a log line every N steps (metrics are recorded every step)"},
    {K(log, level), T_ENUM, "info", NO_RANGE, E_LEVEL, "log level"},
    {K(log, metrics), T_STRING, "", NO_RANGE, NULL, "metrics file (HDF5); empty = <checkpoint.dir>/metrics.h5"},
    {K(log, progress), T_BOOL, "true", NO_RANGE, NULL, "show a progress line on rank 0"},
};
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

_Static_assert(sizeof(fdp_model_type) == sizeof(int) && sizeof(fdp_flow_permutation) == sizeof(int) &&
                   sizeof(fdp_flow_coupling) == sizeof(int) && sizeof(fdp_data_format) == sizeof(int) &&
                   sizeof(fdp_device) == sizeof(int) && sizeof(fdp_optimizer_kind) == sizeof(int) &&
                   sizeof(fdp_lr_decay) == sizeof(int) && sizeof(fdp_on_nonfinite) == sizeof(int) &&
                   sizeof(fdp_stop_signal) == sizeof(int) && sizeof(fdp_on_write_error) == sizeof(int) &&
                   sizeof(fdp_log_level) == sizeof(int),
               "enum fields are stored through int *");

static void *field_ptr(fdp_config *c, const cfg_key *k) { return (char *)c + k->offset; }
static const void *field_cptr(const fdp_config *c, const cfg_key *k) { return (const char *)c + k->offset; }

/* ---- small string helpers --------------------------------------------------------- */

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = fdp_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static int is_blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v'; }

/* trim in place, return the start */
static char *trim(char *s) {
    while (is_blank(*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && is_blank(s[n - 1])) s[--n] = '\0';
    return s;
}

/* Where an inline comment starts in a value: ';' or '#' at the start or right
 * after whitespace. NULL when there is none. */
static char *comment_start(const char *v) {
    for (const char *p = v; *p; p++)
        if ((*p == ';' || *p == '#') && (p == v || is_blank(p[-1]))) return (char *)p;
    return NULL;
}

/* A value for messages: at most ~60 characters. */
static const char *shown(const char *v, char *buf, size_t n) {
    if (strlen(v) <= 60) return v;
    snprintf(buf, n, "%.57s...", v);
    return buf;
}

/* Optimal string alignment distance (Levenshtein + adjacent transposition),
 * case-insensitive; large for long strings. */
static int edit_distance(const char *a, const char *b) {
    enum { M = 64 };
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la >= M || lb >= M) return 1000;
    int d[M + 1][M + 1];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int cost = ca != cb;
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) && tolower((unsigned char)a[i - 2]) == cb &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* close enough to suggest */
static int suggest_limit(const char *typed) {
    int n = (int)strlen(typed) / 3;
    return n < 1 ? 1 : (n > 3 ? 3 : n);
}

static int find_section(const char *s) {
    for (int i = 0; i < NSECTIONS; i++)
        if (strcmp(SECTIONS[i].name, s) == 0) return i;
    return -1;
}

static int find_key(const char *section, const char *key) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].key, key) == 0) return i;
    return -1;
}

/* " (did you mean [train]?)" or "" */
static void suggest_section(const char *typed, char *out, size_t n) {
    int best = -1, bd = 1000;
    for (int i = 0; i < NSECTIONS; i++) {
        int d = edit_distance(typed, SECTIONS[i].name);
        if (d < bd) bd = d, best = i;
    }
    if (best >= 0 && bd <= suggest_limit(typed))
        snprintf(out, n, " (did you mean [%s]?)", SECTIONS[best].name);
    else
        out[0] = '\0';
}

/* " (did you mean batch_size?)" when close in the same section, else
 * " (did you mean [train] lr?)" when close in another section, else "". */
static void suggest_key(const char *section, const char *typed, char *out, size_t n) {
    int best = -1, bd = 1000, best_other = -1, bd_other = 1000;
    for (int i = 0; i < NKEYS; i++) {
        int d = edit_distance(typed, KEYS[i].key);
        if (section && strcmp(KEYS[i].section, section) == 0) {
            if (d < bd) bd = d, best = i;
        } else if (d < bd_other) {
            bd_other = d, best_other = i;
        }
    }
    int lim = suggest_limit(typed);
    if (best >= 0 && bd <= lim)
        snprintf(out, n, " (did you mean %s?)", KEYS[best].key);
    else if (best_other >= 0 && bd_other <= lim)
        snprintf(out, n, " (did you mean [%s] %s?)", KEYS[best_other].section, KEYS[best_other].key);
    else
        out[0] = '\0';
}

/* ---- values ------------------------------------------------------------------------- */

static void range_text(const cfg_range *r, char *out, size_t n) {
    if ((r->flags & R_LO) && (r->flags & R_HI))
        snprintf(out, n, "in %c%g, %g%c", (r->flags & R_LO_OPEN) ? '(' : '[', r->lo, r->hi,
                 (r->flags & R_HI_OPEN) ? ')' : ']');
    else if (r->flags & R_LO)
        snprintf(out, n, "%s %g", (r->flags & R_LO_OPEN) ? ">" : ">=", r->lo);
    else if (r->flags & R_HI)
        snprintf(out, n, "%s %g", (r->flags & R_HI_OPEN) ? "<" : "<=", r->hi);
    else
        out[0] = '\0';
}

static int in_range(const cfg_range *r, double x) {
    if (r->flags & R_LO) {
        if ((r->flags & R_LO_OPEN) ? !(x > r->lo) : !(x >= r->lo)) return 0;
    }
    if (r->flags & R_HI) {
        if ((r->flags & R_HI_OPEN) ? !(x < r->hi) : !(x <= r->hi)) return 0;
    }
    return 1;
}

static void enum_list(const char *const *values, char *out, size_t n) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; values[i]; i++) {
        int w = snprintf(out + used, n - used, "%s%s", i ? "|" : "", values[i]);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
}

static int out_of_range(const cfg_key *k, char *why, size_t n) {
    char r[96];
    range_text(&k->range, r, sizeof r);
    snprintf(why, n, "out of range (must be %s)", r);
    return -1;
}

/* Why a string value cannot be stored (NULL when it can). */
static const char *string_problem(const char *v) {
    size_t n = strlen(v);
    if (n >= FDP_CONFIG_STR_MAX) return "too long (at most 4095 characters)";
    if (n > 0 && (is_blank(v[0]) || is_blank(v[n - 1]))) return "leading or trailing whitespace cannot be stored in an INI file";
    for (const char *p = v; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) return "contains a control character";
    if (comment_start(v)) return "';' or '#' at the start or after whitespace would be read back as a comment";
    return NULL;
}

/* Parse text for key k; on success store into the field and return 0, else
 * write the reason into why and return -1 (the field is untouched). */
static int parse_value(const cfg_key *k, const char *v, fdp_config *c, char *why, size_t whyn) {
    void *f = field_ptr(c, k);
    switch (k->type) {
    case T_INT:
    case T_INT64: {
        if (!*v) return snprintf(why, whyn, "empty value (expected an integer)"), -1;
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (end == v || *end) {
            char *dend;
            double dx = strtod(v, &dend);
            (void)dx;
            snprintf(why, whyn, (dend != v && !*dend) ? "not an integer" : "not a number");
            return -1;
        }
        if (errno == ERANGE) return snprintf(why, whyn, "out of range (must fit in a 64-bit integer)"), -1;
        if (k->type == T_INT && x > INT_MAX) return snprintf(why, whyn, "out of range (must be <= %d)", INT_MAX), -1;
        if (k->type == T_INT && x < INT_MIN) {
            if (k->range.flags & R_LO) return out_of_range(k, why, whyn);
            return snprintf(why, whyn, "out of range (must be >= %d)", INT_MIN), -1;
        }
        if (!in_range(&k->range, (double)x)) return out_of_range(k, why, whyn);
        if (k->type == T_INT)
            *(int *)f = (int)x;
        else
            *(int64_t *)f = (int64_t)x;
        return 0;
    }
    case T_FLOAT: {
        if (!*v) return snprintf(why, whyn, "empty value (expected a number)"), -1;
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end) return snprintf(why, whyn, "not a number"), -1;
        if (!isfinite(x)) return snprintf(why, whyn, "not a finite number"), -1;
        if (!in_range(&k->range, x)) return out_of_range(k, why, whyn);
        *(double *)f = x;
        return 0;
    }
    case T_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(v, yes[i]) == 0) return *(bool *)f = true, 0;
            if (strcasecmp(v, no[i]) == 0) return *(bool *)f = false, 0;
        }
        snprintf(why, whyn, "not a boolean (true|false|1|0|yes|no|on|off)");
        return -1;
    }
    case T_ENUM: {
        for (int i = 0; k->values[i]; i++)
            if (strcasecmp(v, k->values[i]) == 0) return *(int *)f = i, 0;
        char list[256];
        enum_list(k->values, list, sizeof list);
        snprintf(why, whyn, "not one of %s", list);
        return -1;
    }
    case T_STRING: {
        const char *p = string_problem(v);
        if (p) return snprintf(why, whyn, "%s", p), -1;
        memcpy(f, v, strlen(v) + 1);
        return 0;
    }
    }
    return -1;
}

/* The shortest text that reads back as exactly v: "100" not "1e+02",
 * "1e-8" not "1e-08", "0.30000000000000004" when that is what it takes. */
static void format_double(double v, char *out, size_t n) {
    if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, n, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(out, n, "%.*g", p, v);
        if (strtod(out, NULL) == v) break;
    }
    char *e = strchr(out, 'e');
    if (e) { /* e+05 -> e5, e-08 -> e-8 */
        char *d = e + 1, *src = e + 1;
        if (*src == '+') src++;
        else if (*src == '-') *d++ = *src++;
        while (*src == '0' && src[1]) src++;
        memmove(d, src, strlen(src) + 1);
    }
}

/* The value of key k in c as it is written in a file. */
static void format_value(const cfg_key *k, const fdp_config *c, char *out, size_t n) {
    const void *f = field_cptr(c, k);
    switch (k->type) {
    case T_INT: snprintf(out, n, "%d", *(const int *)f); break;
    case T_INT64: snprintf(out, n, "%lld", (long long)*(const int64_t *)f); break;
    case T_FLOAT: format_double(*(const double *)f, out, n); break;
    case T_BOOL: snprintf(out, n, "%s", *(const bool *)f ? "true" : "false"); break;
    case T_ENUM: {
        int i = *(const int *)f, cnt = 0;
        while (k->values[cnt]) cnt++;
        snprintf(out, n, "%s", (i >= 0 && i < cnt) ? k->values[i] : "?");
        break;
    }
    case T_STRING: snprintf(out, n, "%s", (const char *)f); break;
    }
}

/* Check the stored value of k against its type's rules (for validate). */
static int check_field(const cfg_key *k, const fdp_config *c, char *why, size_t n) {
    const void *f = field_cptr(c, k);
    switch (k->type) {
    case T_INT:
        if (!in_range(&k->range, *(const int *)f)) return out_of_range(k, why, n);
        return 0;
    case T_INT64:
        if (!in_range(&k->range, (double)*(const int64_t *)f)) return out_of_range(k, why, n);
        return 0;
    case T_FLOAT: {
        double x = *(const double *)f;
        if (!isfinite(x)) return snprintf(why, n, "not a finite number"), -1;
        if (!in_range(&k->range, x)) return out_of_range(k, why, n);
        return 0;
    }
    case T_BOOL: return 0;
    case T_ENUM: {
        int i = *(const int *)f, cnt = 0;
        while (k->values[cnt]) cnt++;
        if (i < 0 || i >= cnt) return snprintf(why, n, "enum value %d is not one of the allowed values", i), -1;
        return 0;
    }
    case T_STRING: {
        const char *s = f;
        if (!memchr(s, '\0', FDP_CONFIG_STR_MAX)) return snprintf(why, n, "not NUL-terminated"), -1;
        const char *p = string_problem(s);
        if (p) return snprintf(why, n, "%s", p), -1;
        return 0;
    }
    }
    return 0;
}

/* ---- applying one key = value --------------------------------------------------------- */

/* where: "file:line" or "--set"; section_where: the same for the section
 * header's line. seen_line (NULL for --set): per key, the line it was set on
 * in this file (0 = not yet). */
static int apply(fdp_config *c, const char *where, const char *section_where, const char *section_raw,
                 const char *key_raw, const char *value, int line, int *seen_line, fdp_err *err) {
    char sec[128], key[128], hint[160], tmp[80];
    snprintf(sec, sizeof sec, "%s", section_raw);
    snprintf(key, sizeof key, "%s", key_raw);
    char *s = trim(sec), *k = trim(key);
    if (!*k) return fdp_err_set(err, "%s: missing key name before '='", where);
    if (!*s) {
        suggest_key(NULL, k, hint, sizeof hint);
        int exact = -1;
        for (int i = 0; i < NKEYS; i++)
            if (strcmp(KEYS[i].key, k) == 0) exact = i;
        if (exact >= 0)
            return fdp_err_set(err, "%s: key %s is outside any section (put it under [%s])", where, k,
                               KEYS[exact].section);
        return fdp_err_set(err, "%s: key %s is outside any section%s", where, k, hint);
    }
    if (find_section(s) < 0) {
        suggest_section(s, hint, sizeof hint);
        return fdp_err_set(err, "%s: unknown section [%s]%s", section_where, s, hint);
    }
    int ki = find_key(s, k);
    if (ki < 0) {
        suggest_key(s, k, hint, sizeof hint);
        return fdp_err_set(err, "%s: unknown key [%s] %s%s", where, s, k, hint);
    }
    if (seen_line && seen_line[ki])
        return fdp_err_set(err, "%s: duplicate key [%s] %s (first set on line %d)", where, s, k, seen_line[ki]);
    char why[320];
    if (parse_value(&KEYS[ki], value, c, why, sizeof why))
        return fdp_err_set(err, "%s: [%s] %s = %s: %s", where, s, k, shown(value, tmp, sizeof tmp), why);
    if (seen_line) seen_line[ki] = line;
    return 0;
}

/* ---- parsing a whole text with inih ------------------------------------------------------- */

#define LONG_LINE_NAME "\x01" "flowdp-long-line"

typedef struct parse_state {
    fdp_config *cfg;      /* the copy being filled */
    const char *name;     /* file name for messages */
    const char *pos;      /* read position in the text */
    int lineno;           /* line last handed to inih (1-based) */
    int section_lineno;   /* line of the last [section] header */
    int seen_line[NKEYS]; /* per key: line it was set on, 0 = not set */
    int long_pending;     /* the current line was too long: use long_name/long_value */
    char *long_buf, *long_name, *long_value;
    int err_line;         /* first error found by the reader or the handler (0 = none) */
    fdp_err err;
} parse_state;

/* fgets-style reader for ini_parse_stream: one line per call (see the top of
 * the file for what it does to the line). */
static char *read_line(char *buf, int num, void *stream) {
    parse_state *st = stream;
    free(st->long_buf);
    st->long_buf = st->long_name = st->long_value = NULL;
    st->long_pending = 0;
    if (st->err_line || !*st->pos || num < 4) return NULL;
    const char *line = st->pos, *eol = strchr(line, '\n');
    const char *end = eol ? eol : line + strlen(line);
    st->pos = eol ? eol + 1 : end;
    st->lineno++;
    const char *s = line;
    if (st->lineno == 1 && end - s >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3; /* UTF-8 BOM */
    while (s < end && is_blank(*s)) s++;
    size_t n = (size_t)(end - s);
    if (n == 0 || *s == ';' || *s == '#') { /* blank or whole-line comment */
        strcpy(buf, "\n");
        return buf;
    }
    if (*s == '[') st->section_lineno = st->lineno;
    if (n + 2 <= (size_t)num) {
        memcpy(buf, s, n);
        buf[n] = '\n';
        buf[n + 1] = '\0';
        return buf;
    }
    /* too long for inih's buffer: split `key = value` here */
    char *copy = fdp_xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    st->long_buf = copy;
    char *sep = strpbrk(copy, "=:");
    char *cmt = comment_start(copy);
    if (*copy == '[' || !sep || (cmt && cmt < sep)) {
        st->err_line = st->lineno;
        fdp_err_set(&st->err, "%s:%d: cannot parse a %zu-character line: expected key = value", st->name,
                    st->lineno, n);
        return NULL;
    }
    *sep = '\0';
    st->long_name = trim(copy);
    char *value = sep + 1;
    while (is_blank(*value)) value++;
    cmt = comment_start(value);
    if (cmt) *cmt = '\0';
    st->long_value = trim(value);
    st->long_pending = 1;
    snprintf(buf, (size_t)num, "%s=\n", LONG_LINE_NAME);
    return buf;
}

static int handle_pair(void *user, const char *section, const char *name, const char *value) {
    parse_state *st = user;
    if (st->err_line) return 0;
    if (!name) return 1; /* a section start, if inih was built to report those */
    if (st->long_pending && strcmp(name, LONG_LINE_NAME) == 0) {
        name = st->long_name;
        value = st->long_value;
    }
    char *v = xstrdup(value ? value : "");
    char *cmt = comment_start(v); /* '#' comments (inih already removed " ;" ones) */
    if (cmt) *cmt = '\0';
    char *vt = trim(v);
    char where[512], section_where[512];
    snprintf(where, sizeof where, "%s:%d", st->name, st->lineno);
    snprintf(section_where, sizeof section_where, "%s:%d", st->name, st->section_lineno);
    int rc = apply(st->cfg, where, section_where, section, name, vt, st->lineno, st->seen_line, &st->err);
    free(v);
    if (rc) {
        st->err_line = st->lineno;
        return 0;
    }
    return 1;
}

/* the text of line n (1-based), trimmed, into out */
static void nth_line(const char *text, int n, char *out, size_t outn) {
    const char *p = text;
    for (int i = 1; i < n && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    out[0] = '\0';
    if (!p) return;
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len >= outn) len = outn - 1;
    memcpy(out, p, len);
    out[len] = '\0';
    char *t = trim(out);
    memmove(out, t, strlen(t) + 1);
}

static int parse_text(fdp_config *c, const char *text, const char *name, fdp_err *err) {
    parse_state *st = fdp_xcalloc(1, sizeof *st);
    fdp_config *tmp = fdp_xmalloc(sizeof *tmp);
    *tmp = *c;
    st->cfg = tmp;
    st->name = name;
    st->pos = text;
    int rc = ini_parse_stream(read_line, st, handle_pair, st);
    free(st->long_buf);
    int result = 0;
    if (st->err_line && (rc <= 0 || rc >= st->err_line)) {
        if (err) *err = st->err;
        result = -1;
    } else if (rc > 0) {
        char line[128], tmpv[80];
        nth_line(text, rc, line, sizeof line);
        if (line[0] == '[' && !strchr(line, ']'))
            fdp_err_set(err, "%s:%d: cannot parse '%s': missing ']' after the section name", name, rc,
                        shown(line, tmpv, sizeof tmpv));
        else
            fdp_err_set(err, "%s:%d: cannot parse '%s': expected [section] or key = value", name, rc,
                        shown(line, tmpv, sizeof tmpv));
        result = -1;
    } else if (rc < 0) {
        fdp_err_set(err, "%s: the INI parser failed (inih error %d)", name, rc);
        result = -1;
    }
    if (result == 0) {
        char *src = xstrdup(text), *path = xstrdup(name);
        free(c->source_text);
        free(c->source_path);
        *c = *tmp;
        c->source_text = src;
        c->source_path = path;
    }
    free(tmp);
    free(st);
    return result;
}

/* ---- the public functions ---------------------------------------------------------- */

void fdp_config_defaults(fdp_config *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < NKEYS; i++) {
        char why[320];
        FDP_CHECK(parse_value(&KEYS[i], KEYS[i].def, c, why, sizeof why) == 0,
                  "config table: the default of [%s] %s = %s is invalid: %s; hint: fix the row in src/io/config.c",
                  KEYS[i].section, KEYS[i].key, KEYS[i].def, why);
    }
    c->source_text = NULL;
    c->source_path = NULL;
}

void fdp_config_free(fdp_config *c) {
    if (!c) return;
    free(c->source_text);
    free(c->source_path);
    c->source_text = c->source_path = NULL;
}

int fdp_config_load_string(fdp_config *c, const char *text, const char *name_for_errors, fdp_err *err) {
    return parse_text(c, text, name_for_errors ? name_for_errors : "<string>", err);
}

int fdp_config_load_file(fdp_config *c, const char *path, fdp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return fdp_err_set(err, "cannot open config %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = fdp_xmalloc(cap);
    for (;;) {
        if (cap - len < 4096) {
            if (cap > ((size_t)16 << 20)) {
                fclose(f);
                free(buf);
                return fdp_err_set(err, "config %s: larger than 16 MiB, not a config file?", path);
            }
            cap *= 2;
            buf = fdp_xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    int saved = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return fdp_err_set(err, "cannot read config %s: %s", path, strerror(saved));
    }
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        return fdp_err_set(err, "config %s: contains a NUL byte, not a text file?", path);
    }
    int rc = parse_text(c, buf, path, err);
    free(buf);
    return rc;
}

int fdp_config_set(fdp_config *c, const char *assignment, fdp_err *err) {
    char tmpv[80];
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return fdp_err_set(err, "--set '%s': expected section.key=value (e.g. train.lr=3e-4)",
                           shown(assignment, tmpv, sizeof tmpv));
    size_t ln = (size_t)(eq - assignment);
    char *lhs = fdp_xmalloc(ln + 1);
    memcpy(lhs, assignment, ln);
    lhs[ln] = '\0';
    char *v = xstrdup(eq + 1);
    char *l = trim(lhs), *vt = trim(v);
    char *dot = strchr(l, '.');
    int rc;
    if (!dot) {
        char hint[160];
        int exact = -1;
        for (int i = 0; i < NKEYS; i++)
            if (strcmp(KEYS[i].key, l) == 0) exact = i;
        if (exact >= 0)
            snprintf(hint, sizeof hint, " (did you mean %s.%s?)", KEYS[exact].section, KEYS[exact].key);
        else
            hint[0] = '\0';
        rc = fdp_err_set(err, "--set '%s': expected section.key=value%s", shown(assignment, tmpv, sizeof tmpv), hint);
    } else {
        *dot = '\0';
        fdp_config *tmp = fdp_xmalloc(sizeof *tmp);
        *tmp = *c;
        rc = apply(tmp, "--set", "--set", l, dot + 1, vt, 0, NULL, err);
        if (rc == 0) *c = *tmp;
        free(tmp);
    }
    free(lhs);
    free(v);
    return rc;
}

int fdp_config_validate(const fdp_config *c, fdp_err *err) {
    const char *where = c->source_path ? c->source_path : "config";
    for (int i = 0; i < NKEYS; i++) {
        char why[320], val[FDP_CONFIG_STR_MAX + 32], tmpv[80];
        if (check_field(&KEYS[i], c, why, sizeof why)) {
            if (KEYS[i].type == T_STRING && !memchr(field_cptr(c, &KEYS[i]), '\0', FDP_CONFIG_STR_MAX))
                snprintf(val, sizeof val, "?");
            else
                format_value(&KEYS[i], c, val, sizeof val);
            return fdp_err_set(err, "%s: [%s] %s = %s: %s", where, KEYS[i].section, KEYS[i].key,
                               shown(val, tmpv, sizeof tmpv), why);
        }
    }
    const int64_t steps = c->train.steps, warmup = c->train.warmup_steps;
    if (steps == 0 && c->train.epochs == 0)
        return fdp_err_set(err, "%s: [train] steps = 0 and [train] epochs = 0: nothing to train (set one of them)",
                           where);
    if (steps > 0 && warmup > steps)
        return fdp_err_set(err, "%s: [train] warmup_steps = %lld is larger than [train] steps = %lld", where,
                           (long long)warmup, (long long)steps);
    if (c->train.rebuild_activations && c->model.type == FDP_MODEL_GLOW)
        return fdp_err_set(err, "%s: [train] rebuild_activations = true is not implemented for [model] type = glow "
                           "(RealNVP only); set it to false", where);
    if (c->train.lr_decay != FDP_LR_DECAY_NONE && c->train.lr_min > c->train.lr)
        return fdp_err_set(err, "%s: [train] lr_min = %g is larger than [train] lr = %g (with lr_decay = %s)", where,
                           c->train.lr_min, c->train.lr, E_DECAY[c->train.lr_decay]);
    return 0;
}

/* a growing text buffer */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = fdp_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

char *fdp_config_to_ini(const fdp_config *c) {
    sbuf b = {0};
    sb_add(&b, "; flowdp configuration: the complete effective settings (every key)\n");
    for (int s = 0; s < NSECTIONS; s++) {
        sb_add(&b, "\n[");
        sb_add(&b, SECTIONS[s].name);
        sb_add(&b, "]\n");
        for (int i = 0; i < NKEYS; i++) {
            if (strcmp(KEYS[i].section, SECTIONS[s].name) != 0) continue;
            char *v = fdp_xmalloc(FDP_CONFIG_STR_MAX + 64);
            format_value(&KEYS[i], c, v, FDP_CONFIG_STR_MAX + 64);
            sb_add(&b, KEYS[i].key);
            sb_add(&b, *v ? " = " : " =");
            sb_add(&b, v);
            sb_add(&b, "\n");
            free(v);
        }
    }
    return b.p;
}

void fdp_config_print_help(FILE *f) {
    fprintf(f,
            "Configuration: an INI file (--config FILE), then overrides --set section.key=value (in order).\n"
            "Syntax: [section] headers and key = value lines; comments start with ; or # (after a value: with\n"
            "whitespace before it). Booleans: true|false|1|0|yes|no|on|off; enum names are case-insensitive.\n"
            "A key may appear once per file; unknown sections and keys are errors.\n");
    for (int s = 0; s < NSECTIONS; s++) {
        fprintf(f, "\n[%s]  %s\n", SECTIONS[s].name, SECTIONS[s].help);
        for (int i = 0; i < NKEYS; i++) {
            const cfg_key *k = &KEYS[i];
            if (strcmp(k->section, SECTIONS[s].name) != 0) continue;
            char type[320], r[96];
            range_text(&k->range, r, sizeof r);
            switch (k->type) {
            case T_INT: snprintf(type, sizeof type, "int%s%s", *r ? " " : "", r); break;
            case T_INT64: snprintf(type, sizeof type, "int64%s%s", *r ? " " : "", r); break;
            case T_FLOAT: snprintf(type, sizeof type, "float%s%s", *r ? " " : "", r); break;
            case T_BOOL: snprintf(type, sizeof type, "bool"); break;
            case T_STRING: snprintf(type, sizeof type, "string"); break;
            case T_ENUM: {
                char list[256];
                enum_list(k->values, list, sizeof list);
                snprintf(type, sizeof type, "one of %s", list);
                break;
            }
            }
            fprintf(f, "  %-20s %-36s default %s\n      %s\n", k->key, type, *k->def ? k->def : "\"\"", k->help);
        }
    }
}

int fdp_config_equal(const fdp_config *a, const fdp_config *b) {
    for (int i = 0; i < NKEYS; i++) {
        const cfg_key *k = &KEYS[i];
        const void *fa = field_cptr(a, k), *fb = field_cptr(b, k);
        switch (k->type) {
        case T_INT:
        case T_ENUM:
            if (*(const int *)fa != *(const int *)fb) return 0;
            break;
        case T_INT64:
            if (*(const int64_t *)fa != *(const int64_t *)fb) return 0;
            break;
        case T_FLOAT:
            if (*(const double *)fa != *(const double *)fb) return 0;
            break;
        case T_BOOL:
            if (*(const bool *)fa != *(const bool *)fb) return 0;
            break;
        case T_STRING:
            if (strncmp(fa, fb, FDP_CONFIG_STR_MAX) != 0) return 0;
            break;
        }
    }
    return 1;
}

const char *fdp_config_enum_name(const char *section, const char *key, int value) {
    int i = find_key(section, key);
    if (i < 0 || KEYS[i].type != T_ENUM || value < 0) return NULL;
    for (int j = 0; KEYS[i].values[j]; j++)
        if (j == value) return KEYS[i].values[j];
    return NULL;
}
