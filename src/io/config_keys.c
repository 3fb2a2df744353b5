/* config_keys.c — the table of every configuration key (section, key, type,
 * default, range or allowed values, one line of help, offsetof of its field in
 * fdp_config), the --help text printed from it, and enum names. Everything else
 * (loading, --set, validation, to_ini) is driven by this table: src/io/config.c
 * and src/io/config_values.c.
 *
 * Bounds: every size and count has an upper bound that no real job reaches but
 * that stops absurd values when the config is read, instead of an out-of-memory
 * abort or a failure hours later (the products with the image size are checked
 * when the model is built: src/models/model.c). */
#define FDP_CONFIG_INTERNAL
#include "flowdp/config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define NO_RANGE {0, 0, 0}
#define GE(a) {(a), 0, FDP_R_LO}                                                       /* x >= a */
#define GT(a) {(a), 0, FDP_R_LO | FDP_R_LO_OPEN}                                       /* x > a */
#define IN(a, b) {(a), (b), FDP_R_LO | FDP_R_HI}                                       /* [a, b] */
#define IN_OPEN(a, b) {(a), (b), FDP_R_LO | FDP_R_HI | FDP_R_LO_OPEN | FDP_R_HI_OPEN} /* (a, b) */
#define IN_CO(a, b) {(a), (b), FDP_R_LO | FDP_R_HI | FDP_R_HI_OPEN}                   /* [a, b) */
#define IN_OC(a, b) {(a), (b), FDP_R_LO | FDP_R_HI | FDP_R_LO_OPEN}                   /* (a, b] */
#define MAX_STEPS 1e9   /* steps and step intervals */
#define MAX_IMAGES 1e10 /* train_limit / test_limit */

/* K(train, lr): the section and key names are the struct member names. */
#define K(sec, field) #sec, #field, offsetof(fdp_config, sec.field)

static const char *const E_MODEL[] = {"realnvp", "glow", "tutorial", NULL};
static const char *const E_TUT_ARCH[] = {"simple", "multiscale", NULL};
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

const fdp_cfg_section fdp_cfg_sections[] = {
    {"model", "the flow architecture (RealNVP keys, then Glow keys, then the tutorial's)"},
    {"data", "the dataset and its loader"},
    {"train", "optimisation, schedule, devices and the data-parallel run"},
    {"checkpoint", "checkpoints (HDF5, written whole: temp file + fsync + rename)"},
    {"log", "logging and metrics"},
};
#define NSECTIONS ((int)(sizeof SECTIONS / sizeof SECTIONS[0]))

const fdp_cfg_key fdp_cfg_keys[] = {
    /* [model] */
    {K(model, type), FDP_CT_ENUM, "realnvp", NO_RANGE, E_MODEL,
     "realnvp: Dinh et al. 2017, the lecture notebook's RealNVP; glow: Kingma & Dhariwal 2018 (openai/glow); "
     "tutorial: the flows of Lippe's UvA Tutorial 9 (uniform dequantization)"},
    {K(model, num_scales), FDP_CT_INT, "2", IN(1, 16), NULL, "RealNVP: number of scales (coupling blocks + squeeze per scale)"},
    {K(model, mid_channels), FDP_CT_INT, "64", IN(1, 4096), NULL, "RealNVP: channels inside the s/t ResNets"},
    {K(model, num_blocks), FDP_CT_INT, "8", IN(1, 256), NULL, "RealNVP: residual blocks per s/t ResNet"},
    {K(model, data_constraint), FDP_CT_FLOAT, "0.9", IN_OPEN(0, 1), NULL,
     "RealNVP preprocessing: x in [0,1] is mapped to [(1-a)/2, (1+a)/2] before the logit"},
    {K(model, n_bits_x), FDP_CT_INT, "8", IN(1, 8), NULL, "Glow: bits per colour channel the images are quantised to (2^n bins)"},
    {K(model, n_levels), FDP_CT_INT, "3", IN(1, 16), NULL, "Glow: number of levels L (squeeze + K steps + split each)"},
    {K(model, depth), FDP_CT_INT, "32", IN(1, 1024), NULL, "Glow: flow steps per level K (actnorm, permutation, coupling)"},
    {K(model, width), FDP_CT_INT, "512", IN(1, 4096), NULL, "Glow: channels of the coupling networks"},
    {K(model, flow_permutation), FDP_CT_ENUM, "invconv_lu", NO_RANGE, E_PERM,
     "Glow: channel mixing between couplings: reverse, fixed random shuffle, invertible 1x1 conv, or 1x1 conv in LU form"},
    {K(model, flow_coupling), FDP_CT_ENUM, "affine", NO_RANGE, E_COUPLING, "Glow: coupling layer: additive (volume preserving) or affine"},
    {K(model, learntop), FDP_CT_BOOL, "true", NO_RANGE, NULL, "Glow: learn the mean and log-scale of the top-level prior"},
    {K(model, tutorial_arch), FDP_CT_ENUM, "simple", NO_RANGE, E_TUT_ARCH,
     "tutorial: simple (create_simple_flow: 8 checkerboard couplings) or multiscale (create_multiscale_flow: 2 + squeeze, "
     "2 + split, squeeze, 4 couplings)"},
    {K(model, c_hidden), FDP_CT_INT, "32", IN(1, 4096), NULL, "tutorial: GatedConvNet channels (multiscale: of scale 1)"},
    {K(model, c_hidden_scale2), FDP_CT_INT, "48", IN(1, 4096), NULL, "tutorial multiscale: GatedConvNet channels of scale 2"},
    {K(model, c_hidden_scale3), FDP_CT_INT, "64", IN(1, 4096), NULL, "tutorial multiscale: GatedConvNet channels of scale 3"},

    /* [data] */
    {K(data, format), FDP_CT_ENUM, "idx", NO_RANGE, E_FORMAT,
     "dataset format: idx (MNIST/Fashion-MNIST ubyte files), cifar10 (binary batches), hdf5 (flowdp-pack shards)"},
    {K(data, train), FDP_CT_STRING, "", NO_RANGE, NULL,
     "training set: idx: the images file (train-images-idx3-ubyte); cifar10: the directory with data_batch_1..5.bin; "
     "hdf5: the index file written by flowdp-pack (or its directory: <dir>/train.index)"},
    {K(data, test), FDP_CT_STRING, "", NO_RANGE, NULL,
     "test set, same convention (idx: t10k-images-idx3-ubyte; cifar10: the directory with test_batch.bin; hdf5: the index "
     "or <dir>/test.index); empty = no test set"},
    {K(data, train_limit), FDP_CT_INT64, "0", IN(0, MAX_IMAGES), NULL, "train on the first N training images only (0 = all; for tests and quick looks)"},
    {K(data, test_limit), FDP_CT_INT64, "0", IN(0, MAX_IMAGES), NULL, "evaluate on the first N test images only (0 = all)"},
    {K(data, prefetch), FDP_CT_INT, "2", IN(0, 1024), NULL, "batches the loader thread prepares ahead, for training and evaluation, any format (0 = load in the training thread)"},
    {K(data, hflip), FDP_CT_BOOL, "false", NO_RANGE, NULL,
     "augmentation: mirror left-right with probability 1/2, keyed by (seed, epoch, global sample index)"},
    {K(data, translate), FDP_CT_FLOAT, "0", IN(0, 0.5), NULL,
     "augmentation: random shift by whole pixels, up to floor(this x side) each way, border filled with the nearest "
     "edge pixel (0 = off)"},
    {K(data, verify), FDP_CT_BOOL, "true", NO_RANGE, NULL,
     "hdf5: check every shard's checksum at start, split over the ranks (false: skip it, e.g. for a requeued job on a "
     "large packed set; the index, shard shapes and counts are always checked)"},

    /* [train] */
    {K(train, device), FDP_CT_ENUM, "cpu", NO_RANGE, E_DEVICE, "compute device: cpu (oneDNN + OpenMP) or cuda (one GPU per rank)"},
    {K(train, threads), FDP_CT_INT, "0", IN(0, 1024), NULL, "OpenMP threads per rank (0 = all cores available to the rank; more than the online CPUs: a warning)"},
    {K(train, batch_size), FDP_CT_INT, "64", IN(1, 65536), NULL, "images per rank per step (global batch = batch_size x ranks)"},
    {K(train, steps), FDP_CT_INT64, "0", IN(0, MAX_STEPS), NULL, "optimiser steps to train (0 = derive from epochs; steps wins when both are set)"},
    {K(train, epochs), FDP_CT_FLOAT, "1", IN(0, 1e6), NULL, "passes over the training set, may be fractional (used when steps = 0)"},
    {K(train, seed), FDP_CT_INT64, "0", GE(0), NULL, "seed of everything random: init, shuffling, dequantisation noise, augmentation"},
    {K(train, optimizer), FDP_CT_ENUM, "adam", NO_RANGE, E_OPT, "optimiser: adam or adamax (the infinity-norm variant Glow uses)"},
    {K(train, lr), FDP_CT_FLOAT, "1e-3", GT(0), NULL, "peak learning rate (after warmup)"},
    {K(train, adam_beta1), FDP_CT_FLOAT, "0.9", IN_CO(0, 1), NULL, "Adam/Adamax beta1 (first-moment decay)"},
    {K(train, adam_beta2), FDP_CT_FLOAT, "0.999", IN_CO(0, 1), NULL, "Adam/Adamax beta2 (second-moment decay)"},
    {K(train, adam_eps), FDP_CT_FLOAT, "1e-8", GT(0), NULL, "Adam/Adamax epsilon"},
    {K(train, weight_decay), FDP_CT_FLOAT, "5e-5", GE(0), NULL,
     "L2 penalty added to the gradient, applied to the weight-norm scales g only (as the notebook does)"},
    {K(train, max_grad_norm), FDP_CT_FLOAT, "100", GE(0), NULL, "clip gradients to this global L2 norm (0 = no clipping)"},
    {K(train, warmup_steps), FDP_CT_INT64, "0", IN(0, MAX_STEPS), NULL, "linear learning-rate warmup from 0 over this many steps (0 = none)"},
    {K(train, lr_decay), FDP_CT_ENUM, "none", NO_RANGE, E_DECAY,
     "learning-rate decay after warmup: none, cosine (to lr_min at the last step), exponential (x lr_decay_rate per step, floor lr_min)"},
    {K(train, lr_min), FDP_CT_FLOAT, "0", GE(0), NULL, "lowest learning rate the decay reaches"},
    {K(train, lr_decay_rate), FDP_CT_FLOAT, "0.999995", IN_OC(0, 1), NULL, "exponential decay: factor per step"},
    {K(train, ema), FDP_CT_FLOAT, "0", IN_CO(0, 1), NULL,
     "decay of an exponential moving average of the parameters, used for eval and samples (0 = off; e.g. 0.999)"},
    {K(train, eval_every), FDP_CT_INT64, "0", IN(0, MAX_STEPS), NULL, "evaluate test bpd every N steps (0 = at the end of each epoch)"},
    {K(train, eval_batch_size), FDP_CT_INT, "500", IN(1, 65536), NULL, "images per rank per evaluation batch"},
    {K(train, on_nonfinite), FDP_CT_ENUM, "stop", NO_RANGE, E_NONFINITE,
     "NaN/Inf in the loss or gradients: stop (every rank exits with a message naming the step) or skip the step (counted in the metrics)"},
    {K(train, rebuild_activations), FDP_CT_BOOL, "false", NO_RANGE, NULL,
     "keep no activations in forward (RealNVP: the s/t networks'; glow: every flow layer's); backward rebuilds each "
     "layer's input from its output and recomputes it (activation memory no longer grows with depth; one more forward "
     "per step; gradients equal up to float rounding)"},
    {K(train, bucket_mb), FDP_CT_FLOAT, "25", IN_OC(0, 4096), NULL, "gradient all-reduce bucket size in MiB (overlaps communication with backward)"},
    {K(train, check_every), FDP_CT_INT64, "100", IN(0, MAX_STEPS), NULL, "compare a parameter checksum across ranks every N steps (0 = never)"},
    {K(train, watchdog_s), FDP_CT_FLOAT, "600", IN(0, 1e7), NULL, "seconds a rank may wait in one collective (MPI or NCCL) before it aborts the whole job naming itself (0 = never); longer than the slowest checkpoint write"},
    {K(train, signal), FDP_CT_ENUM, "SIGUSR2", NO_RANGE, E_SIGNAL,
     "signal on which every rank checkpoints and exits 3, for SLURM --signal=USR2@120 (sent to the ranks) and requeue (none = no handler)"},

    /* [checkpoint] */
    {K(checkpoint, dir), FDP_CT_STRING, "run", NO_RANGE, NULL, "run directory: checkpoints, metrics and samples go here"},
    {K(checkpoint, every), FDP_CT_INT64, "500", IN(0, MAX_STEPS), NULL, "write a checkpoint every N steps (0 = only at the end and on the signal)"},
    {K(checkpoint, keep_last), FDP_CT_INT, "3", IN(1, 10000), NULL, "keep the newest N periodic checkpoints, delete older ones"},
    {K(checkpoint, keep_best), FDP_CT_BOOL, "true", NO_RANGE, NULL, "also keep the checkpoint with the best test bpd"},
    {K(checkpoint, on_write_error), FDP_CT_ENUM, "continue", NO_RANGE, E_WRITE_ERR,
     "a periodic checkpoint cannot be written (disk full, ...): continue training with a warning, or stop (exit 5); a failed final or stop-signal checkpoint always exits 5"},

    /* [log] */
    {K(log, every), FDP_CT_INT64, "10", IN(1, MAX_STEPS), NULL, "print a log line every N steps (metrics are recorded every step)"},
    {K(log, level), FDP_CT_ENUM, "info", NO_RANGE, E_LEVEL, "log level"},
    {K(log, metrics), FDP_CT_STRING, "", NO_RANGE, NULL, "metrics file (HDF5); empty = <checkpoint.dir>/metrics.h5"},
    {K(log, progress), FDP_CT_BOOL, "true", NO_RANGE, NULL, "show a progress line on rank 0"},
};

const int fdp_cfg_nkeys = (int)(sizeof fdp_cfg_keys / sizeof fdp_cfg_keys[0]);
const int fdp_cfg_nsections = (int)(sizeof fdp_cfg_sections / sizeof fdp_cfg_sections[0]);
_Static_assert(sizeof fdp_cfg_keys / sizeof fdp_cfg_keys[0] <= FDP_CONFIG_MAX_KEYS,
               "raise FDP_CONFIG_MAX_KEYS in include/flowdp/config.h");

void fdp_config_print_help(FILE *f) {
    fprintf(f,
            "Configuration: an INI file (--config FILE), then overrides --set section.key=value (in order).\n"
            "Syntax: [section] headers and key = value lines; comments start with ; or # (after a value: with\n"
            "whitespace before it). A value may be enclosed in \"double\" or 'single' quotes (dir = \"/scratch/my run\";\n"
            "the quotes are removed, the inside is taken literally); an unbalanced quote is an error; --set values\n"
            "are unquoted the same way. Booleans: true|false|1|0|yes|no|on|off; enum names are case-insensitive.\n"
            "A key may appear once per file; unknown sections and keys are errors; numbers out of their range\n"
            "(below) are errors when the config is read.\n");
    for (int s = 0; s < fdp_cfg_nsections; s++) {
        fprintf(f, "\n[%s]  %s\n", fdp_cfg_sections[s].name, fdp_cfg_sections[s].help);
        for (int i = 0; i < fdp_cfg_nkeys; i++) {
            const fdp_cfg_key *k = &fdp_cfg_keys[i];
            if (strcmp(k->section, fdp_cfg_sections[s].name) != 0) continue;
            char type[320], r[96];
            fdp_cfg_range_text(k, r, sizeof r);
            switch (k->type) {
            case FDP_CT_INT: snprintf(type, sizeof type, "int%s%s", *r ? " " : "", r); break;
            case FDP_CT_INT64: snprintf(type, sizeof type, "int64%s%s", *r ? " " : "", r); break;
            case FDP_CT_FLOAT: snprintf(type, sizeof type, "float%s%s", *r ? " " : "", r); break;
            case FDP_CT_BOOL: snprintf(type, sizeof type, "bool"); break;
            case FDP_CT_STRING: snprintf(type, sizeof type, "string"); break;
            case FDP_CT_ENUM: {
                char list[256];
                fdp_cfg_enum_list(k->values, list, sizeof list);
                snprintf(type, sizeof type, "one of %s", list);
                break;
            }
            }
            fprintf(f, "  %-20s %-36s default %s\n      %s\n", k->key, type, *k->def ? k->def : "\"\"", k->help);
        }
    }
}

const char *fdp_config_enum_name(const char *section, const char *key, int value) {
    for (int i = 0; i < fdp_cfg_nkeys; i++) {
        const fdp_cfg_key *k = &fdp_cfg_keys[i];
        if (strcmp(k->section, section) != 0 || strcmp(k->key, key) != 0) continue;
        if (k->type != FDP_CT_ENUM || value < 0) return NULL;
        for (int j = 0; k->values[j]; j++)
            if (j == value) return k->values[j];
        return NULL;
    }
    return NULL;
}
