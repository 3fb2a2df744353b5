/* config.h — the run configuration: an INI file (parsed with inih) plus
 * `--set section.key=value` overrides, turned into typed C fields.
 *
 * The module is table-driven: every key is ONE row in the table in
 * src/io/config_keys.c (section, key, type, default as text, range or allowed values,
 * one line of help, offsetof of its field here). To add a key: add a field to
 * fdp_config below and a row to that table; loading, --set, range checks,
 * fdp_config_to_ini, fdp_config_equal and the --help text all follow from it.
 *
 * Typical use (flowdp-train):
 *     fdp_config cfg; fdp_err err;
 *     fdp_config_defaults(&cfg);
 *     if (fdp_config_load_file(&cfg, path, &err) ||
 *         fdp_config_set(&cfg, "train.lr=3e-4", &err) ||   // each --set, in order
 *         fdp_config_validate(&cfg, &err)) { fprintf(stderr, "%s\n", err.msg); exit(2); }
 *     ...
 *     fdp_config_free(&cfg);
 *
 * File syntax: `[section]` headers and `key = value` lines (`key: value` works
 * too). Whole-line comments start with ; or #; a value may be followed by a
 * comment starting with ; or # that is preceded by whitespace
 * (`lr = 1e-3 ; peak`). Indentation means nothing (indented lines are NOT
 * continuations of the previous value). Lines may be of any length. Booleans
 * accept true/false/1/0/yes/no/on/off, enums their listed names (case does not
 * matter). A key may appear once per file. A value wholly enclosed in a
 * matching pair of double or single quotes is unquoted (`dir = "/scratch/my run"`,
 * `name = 'a ;b' ; comment`: the quotes are removed, what is inside is taken
 * literally; a comment may follow the closing quote unless the line then ends
 * with that same quote character); a value that starts or
 * ends with a quote but is not so enclosed is an error (unbalanced quote). The
 * same holds for --set values. String values cannot have leading/trailing
 * whitespace (even quoted: almost always a mistake); fdp_config_to_ini quotes
 * the values that need it.
 *
 * Every size and count has an upper bound (the table in src/io/config_keys.c,
 * printed by --help), checked when the value is read.
 *
 * Every error is ONE line in err->msg naming the file (or "--set"), the line,
 * the section and key and what is wrong, e.g.
 *     configs/x.ini:7: [train] lr = abc: not a number
 *     configs/x.ini:3: unknown key [train] btach_size (did you mean batch_size?)
 */
#ifndef FLOWDP_CONFIG_H
#define FLOWDP_CONFIG_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "flowdp/error.h"
#include "flowdp/log.h"    /* fdp_log_level: [log] level */
#include "flowdp/tensor.h" /* fdp_device: [train] device */

/* Longest string value + 1 (paths). */
#define FDP_CONFIG_STR_MAX 4096
/* At least the number of keys in the table (checked at compile time). */
#define FDP_CONFIG_MAX_KEYS 80
/* Longest remembered --set text + 1 (longer ones are shortened with "..."). */
#define FDP_CONFIG_ORIGIN_MAX 128

/* Where a key's value came from (see fdp_config_where). */
typedef struct fdp_config_origin {
    int line;                        /* > 0: that line of source_path; 0: default (or an earlier file) */
    char set[FDP_CONFIG_ORIGIN_MAX]; /* "--set model.num_scales=4" when a --set gave it, else "" */
} fdp_config_origin;

/* Enums: the numeric order is the order of the names in the table (and in
 * the comments here). */
typedef enum { FDP_MODEL_REALNVP = 0, FDP_MODEL_GLOW = 1, FDP_MODEL_TUTORIAL = 2 } fdp_model_type;
typedef enum { FDP_TUT_SIMPLE = 0, FDP_TUT_MULTISCALE = 1 } fdp_tutorial_arch;
typedef enum {
    FDP_PERM_REVERSE = 0,
    FDP_PERM_SHUFFLE = 1,
    FDP_PERM_INVCONV = 2,
    FDP_PERM_INVCONV_LU = 3
} fdp_flow_permutation;
typedef enum { FDP_COUPLING_ADDITIVE = 0, FDP_COUPLING_AFFINE = 1 } fdp_flow_coupling;
typedef enum { FDP_DATA_IDX = 0, FDP_DATA_CIFAR10 = 1, FDP_DATA_HDF5 = 2 } fdp_data_format;
typedef enum { FDP_OPT_ADAM = 0, FDP_OPT_ADAMAX = 1 } fdp_optimizer_kind;
typedef enum { FDP_LR_DECAY_NONE = 0, FDP_LR_DECAY_COSINE = 1, FDP_LR_DECAY_EXPONENTIAL = 2 } fdp_lr_decay;
typedef enum { FDP_NONFINITE_STOP = 0, FDP_NONFINITE_SKIP = 1 } fdp_on_nonfinite;
/* the signal that makes every rank checkpoint and exit (SLURM --signal) */
typedef enum {
    FDP_STOP_SIGUSR2 = 0,
    FDP_STOP_SIGUSR1 = 1,
    FDP_STOP_SIGTERM = 2,
    FDP_STOP_NONE = 3
} fdp_stop_signal;
typedef enum { FDP_ON_WRITE_ERROR_CONTINUE = 0, FDP_ON_WRITE_ERROR_STOP = 1 } fdp_on_write_error;

typedef struct fdp_config {
    struct {
        fdp_model_type type;                   /* realnvp | glow | tutorial */
        int num_scales;                        /* RealNVP scales */
        int mid_channels;                      /* RealNVP s/t ResNet channels */
        int num_blocks;                        /* RealNVP residual blocks per s/t net */
        double data_constraint;                /* RealNVP logit squeeze, in (0,1) */
        int n_bits_x;                          /* Glow: bits per colour channel, 1..8 */
        int n_levels;                          /* Glow L */
        int depth;                             /* Glow K: flow steps per level */
        int width;                             /* Glow coupling-net channels */
        fdp_flow_permutation flow_permutation; /* Glow */
        fdp_flow_coupling flow_coupling;       /* Glow */
        bool learntop;                         /* Glow: learned top prior */
        fdp_tutorial_arch tutorial_arch;       /* tutorial: simple | multiscale */
        int c_hidden;                          /* tutorial: GatedConvNet channels (multiscale: scale 1) */
        int c_hidden_scale2, c_hidden_scale3;  /* tutorial multiscale: scales 2 and 3 */
    } model;
    struct {
        fdp_data_format format;          /* idx | cifar10 | hdf5 */
        char train[FDP_CONFIG_STR_MAX];  /* path ("" = not set) */
        char test[FDP_CONFIG_STR_MAX];   /* path ("" = not set) */
        int64_t train_limit;             /* 0 = the whole training set */
        int64_t test_limit;              /* 0 = the whole test set */
        int prefetch;                    /* batches prepared ahead */
        bool hflip;                      /* random horizontal flip */
        double translate;                /* max random shift, fraction of the side */
        bool verify;                     /* hdf5: check shard checksums at start */
    } data;
    struct {
        fdp_device device;               /* cpu | cuda */
        int threads;                     /* OpenMP threads per rank, 0 = all cores */
        int batch_size;                  /* per rank */
        int64_t steps;                   /* 0 = derive from epochs */
        double epochs;
        int64_t seed;
        fdp_optimizer_kind optimizer;    /* adam | adamax */
        double lr, adam_beta1, adam_beta2, adam_eps;
        double weight_decay;             /* on weight-norm g only */
        double max_grad_norm;            /* 0 = no clipping */
        int64_t warmup_steps;
        fdp_lr_decay lr_decay;           /* none | cosine | exponential */
        double lr_min;
        double lr_decay_rate;            /* per step, exponential */
        double ema;                      /* 0 = off */
        int64_t eval_every;              /* steps, 0 = end of each epoch */
        int eval_batch_size;
        fdp_on_nonfinite on_nonfinite;   /* stop | skip */
        bool rebuild_activations;
        double bucket_mb;                /* all-reduce bucket size, MiB */
        int64_t check_every;             /* steps between parameter checksums, 0 = off */
        double watchdog_s;               /* a rank stuck this long in a collective aborts the job, 0 = off */
        fdp_stop_signal signal;
    } train;
    struct {
        char dir[FDP_CONFIG_STR_MAX];
        int64_t every;                   /* steps, 0 = only at the end and on the signal */
        int keep_last;
        bool keep_best;
        fdp_on_write_error on_write_error; /* continue | stop */
    } checkpoint;
    struct {
        int64_t every;                   /* steps between log lines */
        fdp_log_level level;             /* error | warn | info | debug */
        char metrics[FDP_CONFIG_STR_MAX];/* "" = <checkpoint.dir>/metrics.h5 */
        bool progress;
    } log;

    /* The text and path (or name) of the last file/string loaded successfully,
     * malloc'd, owned by the config (fdp_config_free); NULL when nothing was
     * loaded. Not compared by fdp_config_equal, not written by fdp_config_to_ini. */
    char *source_text;
    char *source_path;
    /* Per key (in table order): where its value came from. Not compared, not written. */
    fdp_config_origin origin[FDP_CONFIG_MAX_KEYS];
} fdp_config;

/* Every field to its default; source_text/source_path to NULL. Initialises a
 * fresh struct: it does not free anything (call fdp_config_free first when
 * reusing a loaded config). */
void fdp_config_defaults(fdp_config *c);

/* Free source_text/source_path (and set them to NULL). The typed fields stay. */
void fdp_config_free(fdp_config *c);

/* Apply an INI file ON TOP of the current values (so: defaults, then file,
 * then --set). All or nothing: on error c is unchanged and -1 is returned with
 * the message in err. On success c->source_text/source_path become the file's
 * text and path. A missing/unreadable file is an error naming the path and
 * strerror. Returns 0 or -1. */
int fdp_config_load_file(fdp_config *c, const char *path, fdp_err *err);

/* The same for text in memory; name_for_errors stands in for the file name in
 * messages and becomes c->source_path. */
int fdp_config_load_string(fdp_config *c, const char *text, const char *name_for_errors, fdp_err *err);

/* One command-line override "section.key=value" (whitespace around the parts
 * is ignored; the value is taken literally, no comment stripping, but enclosing
 * quotes are removed as in a file and an unbalanced quote is an error). Later
 * overrides of the same key win. On error c is unchanged. Returns 0 or -1;
 * errors start with "--set". */
int fdp_config_set(fdp_config *c, const char *assignment, fdp_err *err);

/* Checks that need the whole config (e.g. steps == 0 and epochs == 0), and
 * re-checks every field against its range / allowed values (in case code set a
 * field directly). Errors name where the offending key's value came from. Also
 * warns (one line, through fdp_warn, on rank 0 only) when [train] threads is
 * larger than the number of online CPUs. Returns 0 or -1. */
int fdp_config_validate(const fdp_config *c, fdp_err *err);

/* The WHOLE effective config as INI text, every key of every section, values
 * written so that loading the text onto defaults gives a config that
 * fdp_config_equal()s c (doubles in the shortest form that reads back exactly).
 * malloc'd; the caller frees. Stored in checkpoints. */
char *fdp_config_to_ini(const fdp_config *c);

/* Where the value of [section] key came from, for messages, into buf (returned):
 *   "cfg.ini:5: [model] num_scales = 4"   set on line 5 of the file loaded last
 *   "--set model.num_scales=4"            set by a --set
 *   "cfg.ini: [model] num_scales = 2"     the default (or an earlier file); "config: ..." when
 *                                         nothing was loaded
 * An unknown key gives "config: [section] key". */
const char *fdp_config_where(const fdp_config *c, const char *section, const char *key, char *buf, size_t n);

/* fdp_err_set(err, "<fdp_config_where>: <fmt ...>"): an error about the value of
 * one key, naming where it came from. Returns -1. */
int fdp_config_key_error(const fdp_config *c, fdp_err *err, const char *section, const char *key, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));

/* Every section and key with its type, default, range or allowed values and
 * meaning (what `flowdp-train --help` prints). */
void fdp_config_print_help(FILE *f);

/* 1 when every keyed field is equal (doubles bit-for-bit equal as values,
 * strings by content), else 0. source_text/source_path are ignored. */
int fdp_config_equal(const fdp_config *a, const fdp_config *b);

/* The canonical name of an enum value of a key ("glow" for model.type ==
 * FDP_MODEL_GLOW), for logs; NULL when the key is not an enum or the value is
 * out of range. */
const char *fdp_config_enum_name(const char *section, const char *key, int value);

#ifdef FDP_CONFIG_INTERNAL
/* ---- internal to src/io/config*.c: the key table and value helpers ---------------- */
typedef enum { FDP_CT_INT, FDP_CT_INT64, FDP_CT_FLOAT, FDP_CT_BOOL, FDP_CT_STRING, FDP_CT_ENUM } fdp_cfg_type;
enum { FDP_R_LO = 1, FDP_R_HI = 2, FDP_R_LO_OPEN = 4, FDP_R_HI_OPEN = 8 };
typedef struct fdp_cfg_range {
    double lo, hi;
    unsigned flags; /* FDP_R_* */
} fdp_cfg_range;
typedef struct fdp_cfg_key {
    const char *section;
    const char *key;
    size_t offset;             /* of the field in fdp_config */
    fdp_cfg_type type;
    const char *def;           /* default, as it would be written in a file */
    fdp_cfg_range range;       /* numbers only */
    const char *const *values; /* enums: allowed names, NULL-terminated; index = enum value */
    const char *help;          /* one line */
} fdp_cfg_key;
typedef struct fdp_cfg_section {
    const char *name, *help;
} fdp_cfg_section;
extern const fdp_cfg_key fdp_cfg_keys[];
extern const int fdp_cfg_nkeys;
extern const fdp_cfg_section fdp_cfg_sections[];
extern const int fdp_cfg_nsections;
/* config_values.c */
int fdp_cfg_is_blank(char ch);
char *fdp_cfg_trim(char *s);
char *fdp_cfg_comment_start(const char *v);
const char *fdp_cfg_shown(const char *v, char *buf, size_t n);
void fdp_cfg_range_text(const fdp_cfg_key *k, char *out, size_t n);
void fdp_cfg_enum_list(const char *const *values, char *out, size_t n);
int fdp_cfg_parse_value(const fdp_cfg_key *k, const char *v, fdp_config *c, char *why, size_t whyn);
void fdp_cfg_format_value(const fdp_cfg_key *k, const fdp_config *c, char *out, size_t n);
void fdp_cfg_format_for_ini(const fdp_cfg_key *k, const fdp_config *c, char *out, size_t n);
int fdp_cfg_check_field(const fdp_cfg_key *k, const fdp_config *c, char *why, size_t n);
/* unquote value v in place: 0 not quoted, 1 unquoted (*out = the inside), -1 unbalanced */
int fdp_cfg_unquote(char *v, char **out);
#endif

#endif
