/* checkpoint.h — HDF5 checkpoints: save atomically, load and verify with a
 * checksum, find the newest valid one on resume, prune old ones.
 *
 * A checkpoint holds everything a run needs to continue bit-for-bit where it
 * stopped, on any number of ranks (docs/ARCHITECTURE.md, invariants 3 and 5): parameters and
 * buffers laid out by the name table (include/flowdp/params.h), the optimizer
 * moments, the EMA weights, the position in the data stream and the config text
 * the run was started with. All functions work on HOST memory; the trainer
 * copies from/to the device.
 *
 * ---- File layout (format "flowdp-checkpoint", format_version 1) --------------
 * HDF5 written with the 1.8 file format (H5Pset_libver_bounds V18..V18): the
 * HDF5 metadata (superblock v2, object headers v2, link B-trees and fractal
 * heaps) carries HDF5's own checksums (the global heap holding the strings does
 * not; the checksum below covers them), files are readable by HDF5 >= 1.8 (h5py,
 * h5dump), and a killed writer never leaves a file that needs `h5clear` (the
 * superblock v3 "open for write" flag). Integers and floats are little-endian;
 * raw data is stored contiguous and uncompressed.
 *
 *   /                       root attributes:
 *       format             string   "flowdp-checkpoint"
 *       format_version     int32    1
 *       checksum           uint64   XXH64 over the content, defined below
 *       step               int64    optimizer steps taken
 *       epoch              int64    current epoch
 *       epoch_step         int64    global batches of this epoch already consumed
 *       seed               uint64   run seed
 *       world_size         int32    ranks of the writing run (informational)
 *       best_test_bpd      float64  +inf when none yet
 *       last_test_bpd      float64
 *       model_type         string   "realnvp" | "glow"
 *       nonfinite_skipped  int64    steps skipped for NaN/Inf
 *       image_c, image_h, image_w  int32  the model's input shape (rebuilding the
 *                          model from the checkpoint alone: flowdp-eval/-sample)
 *       global_batch       int64    ranks x per-rank batch of the writing run
 *   /params/<name>          float32, shape of the entry; every table entry of kind
 *                           FDP_PARAM, <name> = its PyTorch state_dict name
 *                           (dots allowed, '/' not), e.g.
 *                           /params/flows.in_couplings.0.st_net.in_conv.conv.weight_v
 *   /buffers/<name>         float32; every entry of kind FDP_BUFFER (BatchNorm
 *                           running statistics, num_batches_tracked, ...)
 *   /optimizer/m/<name>     float32; optimizer first moment, same names/shapes as
 *                           /params (only when saved with opt_m != NULL)
 *   /optimizer/v/<name>     float32; second moment / Adamax u (opt_v != NULL)
 *   /ema/<name>             float32; EMA weights (ema != NULL)
 *   /config                 scalar variable-length UTF-8 string: the config text
 * Scalars (ndim 0 entries) are HDF5 scalar dataspaces. Strings are
 * variable-length UTF-8 (h5py returns str for the attributes).
 *
 * ---- The checksum --------------------------------------------------------------
 * checksum = XXH64 (seed 0; the standard xxHash64, exposed as fdp_ckpt_xxh64)
 * over the concatenation of, all integers little-endian:
 *   "flowdp-checkpoint" followed by one NUL byte
 *   u64 format_version
 *   i64 step, i64 epoch, i64 epoch_step, u64 seed, i64 world_size
 *   u64 bit pattern of best_test_bpd, u64 bit pattern of last_test_bpd
 *   u64 strlen(model_type), its bytes
 *   i64 nonfinite_skipped
 *   i64 image_c, i64 image_h, i64 image_w, i64 global_batch
 *   u64 strlen(config), its bytes
 *   (the meta fields from step to global_batch are one table in
 *   src/io/checkpoint_meta.c that drives hashing, writing and reading them, in
 *   this order; the int32 attributes are hashed as i64, a float64 as its bit
 *   pattern; tests/data/ckpt_v1_tiny.h5 pins the stream)
 *   then for each section present, in the order params, buffers, optimizer/m,
 *   optimizer/v, ema:
 *     the section path ("params", "buffers", "optimizer/m", "optimizer/v", "ema")
 *     and one NUL byte, u64 number of datasets, then for each dataset in strcmp()
 *     order of the names: the name and one NUL byte, u64 ndim, u64 each dim,
 *     the float32 values as little-endian bytes (row-major).
 * So every byte of data and metadata a load depends on is covered: a flipped
 * bit in raw data (which HDF5 does not checksum) is "corrupt: checksum mismatch",
 * a flipped bit in HDF5 metadata is caught by HDF5 itself.
 *
 * ---- Atomic save (docs/ARCHITECTURE.md, invariant 5) -----------------------------
 * fdp_ckpt_save builds the whole HDF5 file in memory (the core driver: HDF5 never
 * writes to the disk, so a failed write cannot leave HDF5 half-closed), appends the
 * 16-byte trailer (XXH64 of every byte before it; every reader checks it before
 * HDF5 parses anything: include/flowdp/h5util.h), writes it to "<path>.tmp.<pid>"
 * in the same directory, fsync()s it, rename()s it over <path>, then fsync()s the
 * directory.
 * On any failure (cannot create, disk full, quota, permission, HDF5 errors) the
 * temporary file is removed, an existing <path> is left untouched, and -1 is
 * returned with a one-line error naming the path and the cause. HDF5's own error
 * printing is silenced for the duration of each call (and restored afterwards).
 * (If only the final directory fsync fails, the new file is already in place;
 * the error says so.)
 *
 * ---- Files in a checkpoint directory ------------------------------------------------
 *   ckpt_<step, 9+ digits zero-padded>.h5     checkpoints (fdp_ckpt_path_for_step)
 *   best.h5                                   fdp_ckpt_copy_atomic of the best one
 *   <name>.h5.tmp.<pid>                       a writer's temporary file; left over
 *                                             only when a writer was killed
 * Scanning (find_newest_valid, prune) removes temporaries whose mtime is older
 * than FDP_CKPT_STALE_TMP_SECONDS, with a warning, and ignores younger ones: a
 * scan from another process (flowdp-eval watching a running job) must never pull
 * the temporary file out from under a live writer.
 *
 * HDF5 in Debian is built thread-safe, so these calls may run while a loader
 * thread reads HDF5 datasets, but not concurrently with each other on one path.
 */
#ifndef FLOWDP_CHECKPOINT_H
#define FLOWDP_CHECKPOINT_H
#include <stddef.h>
#include <stdint.h>

#include "flowdp/error.h"
#include "flowdp/params.h"

#define FDP_CKPT_FORMAT "flowdp-checkpoint"
#define FDP_CKPT_FORMAT_VERSION 1
#define FDP_CKPT_STALE_TMP_SECONDS 600

typedef struct fdp_ckpt_meta {
    int64_t step;          /* optimizer steps taken */
    int64_t epoch;         /* current epoch */
    int64_t epoch_step;    /* global batches of this epoch already consumed */
    uint64_t seed;
    int world_size;        /* ranks of the run that wrote it (informational; resume works with any) */
    double best_test_bpd;  /* +inf when none yet */
    double last_test_bpd;
    char model_type[32];   /* "realnvp" | "glow" (NUL-terminated) */
    int64_t nonfinite_skipped;
    int image_c, image_h, image_w; /* the model's input shape */
    int64_t global_batch;          /* ranks x per-rank batch of the writing run (resuming needs the same) */
} fdp_ckpt_meta;

/* All pointers are HOST memory laid out like fdp_params (the caller copies from
 * the device). */
typedef struct fdp_ckpt_state {
    const fdp_params *table; /* names, shapes, offsets, kinds */
    float *params;           /* (table->n_params) */
    float *buffers;          /* (table->n_buffers); may be NULL when n_buffers == 0 */
    float *opt_m;            /* (n_params) optimizer first moment, NULL = absent */
    float *opt_v;            /* (n_params) second moment / Adamax u, NULL = absent */
    float *ema;              /* (n_params) EMA weights, NULL = absent */
} fdp_ckpt_state;

/* Save atomically (see above). config_text may be NULL (stored as ""). Sections
 * opt_m / opt_v / ema are written when their pointer is not NULL. Names must be
 * non-empty, not "." and contain no '/'. meta->model_type must be NUL-terminated.
 * Returns 0, or -1 with err = "checkpoint <path>: <what>: <cause>". */
int fdp_ckpt_save(const char *path, const fdp_ckpt_state *s, const fdp_ckpt_meta *meta, const char *config_text,
                  fdp_err *err);

/* Load into the caller's buffers, checking everything, and refuse with a one-line
 * error naming the file on: missing file / not HDF5 / truncated or damaged HDF5,
 * wrong `format`, unsupported `format_version`, model_type mismatch
 * (fdp_ckpt_load_expect), names missing
 * from or extra in the checkpoint vs s->table, shape mismatch ("checkpoint is of
 * another model: ..."), a section requested but absent, checksum mismatch
 * ("corrupt: checksum mismatch").
 *  - meta (may be NULL): receives the checkpoint's meta (output only).
 *  - s->params / s->buffers: filled when not NULL (NULL = verify only).
 *  - s->opt_m / opt_v / ema: when not NULL the section must be present in the
 *    file (use fdp_ckpt_sections first to decide) and is filled; when NULL the
 *    section, if present, is still read and checksummed but not copied.
 *  - config_text (may be NULL): receives a malloc'd copy of /config (caller frees).
 * On failure the caller's buffers may have been PARTLY OVERWRITTEN (data is read
 * straight into them before the checksum can be compared): load into scratch
 * buffers and copy on success when the current state must survive a bad file. */
int fdp_ckpt_load(const char *path, fdp_ckpt_state *s, fdp_ckpt_meta *meta, char **config_text, fdp_err *err);
/* fdp_ckpt_load that first refuses a checkpoint whose model_type differs from
 * expect_model_type ("checkpoint is of another model: model_type 'glow', this run
 * is 'realnvp'"), before comparing names and shapes. NULL/"" = any. */
int fdp_ckpt_load_expect(const char *path, const char *expect_model_type, fdp_ckpt_state *s, fdp_ckpt_meta *meta,
                         char **config_text, fdp_err *err);

/* The meta and the config text alone, without reading or checksumming the data
 * (cheap: to learn which model to build before fdp_ckpt_load, which then checks
 * everything). config_text (may be NULL) receives a malloc'd copy. 0 or -1. */
int fdp_ckpt_read_header(const char *path, fdp_ckpt_meta *meta, char **config_text, fdp_err *err);

/* Whole-file check without a model: format, version, structure (sections are
 * float32 datasets; optimizer/ema names and shapes equal /params'), and the
 * checksum. meta_out may be NULL. 0 = valid, -1 = invalid (err says why). */
int fdp_ckpt_verify(const char *path, fdp_ckpt_meta *meta_out, fdp_err *err);

/* Which optional sections a checkpoint holds: a bitwise OR of these, or -1 with
 * err when the file cannot be opened as a checkpoint (no checksum check). */
enum { FDP_CKPT_HAS_OPT_M = 1, FDP_CKPT_HAS_OPT_V = 2, FDP_CKPT_HAS_EMA = 4 };
int fdp_ckpt_sections(const char *path, fdp_err *err);

/* "<dir>/ckpt_<step zero-padded to 9 digits>.h5" into out. 0, or -1 when it
 * does not fit in len or step < 0. */
int fdp_ckpt_path_for_step(const char *dir, int64_t step, char *out, size_t len);

/* Scan dir for ckpt_<digits>.h5 (never *.tmp.*), verify newest step first with
 * fdp_ckpt_verify, warn (fdp_warn) about each invalid one skipped and why.
 * Returns 0 with the newest valid path in out, 1 when there is none (also when
 * dir does not exist), -1 on error (dir unreadable, out too small). Stale
 * temporaries are removed (see above). */
int fdp_ckpt_find_newest_valid(const char *dir, char *out, size_t len, fdp_err *err);

/* Delete ckpt_<digits>.h5 files of dir beyond the newest keep_last (>= 1) by
 * step, among those of a step <= max_step (INT64_MAX: all); files of a later
 * step are left alone and not counted (the trainer passes the step it just wrote:
 * a later one is not this run's, e.g. a damaged file that resume skipped).
 * keep_also (same inode; may be NULL) is never deleted; only regular files are.
 * Also removes stale temporaries. 0 or -1. */
int fdp_ckpt_prune(const char *dir, int keep_last, const char *keep_also, int64_t max_step, fdp_err *err);

/* Make dst an independent copy of src atomically (for best.h5): the bytes copied
 * to "<dst>.tmp.<pid>" (a reflink where the filesystem has them: btrfs, XFS),
 * fsync, rename over dst, fsync of the directory. Never a hard link: editing or
 * damaging one file must not change the other. On failure dst is untouched. 0 or -1. */
int fdp_ckpt_copy_atomic(const char *src, const char *dst, fdp_err *err);

/* The checksum's hash: standard XXH64 of n bytes (exposed for tests/tools). */
uint64_t fdp_ckpt_xxh64(const void *data, size_t n, uint64_t seed);

#endif
