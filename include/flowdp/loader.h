/* loader.h — the data loader: a dataset source (in memory, or packed HDF5
 * shards streamed from disk), a background thread that prepares the next
 * batches ahead of the training step into a bounded queue, and augmentation.
 *
 * ---- What a batch is -------------------------------------------------------
 * Training: the batch of step `step` on rank `rank` is exactly the sampler's
 * (data.h): epoch = step / steps_per_epoch, the samples
 * fdp_sampler_batch_indices(perm(seed, epoch), step % steps_per_epoch, rank,
 * world, B), as floats (B, C, H, W) = pixel / 255.0f in NCHW order, the same
 * arithmetic as fdp_dataset_gather_float. It depends only on (seed, epoch,
 * step, rank, world): exact resume and rank invariance hold whatever the
 * prefetch depth or the source.
 * Evaluation ("range" mode): the samples [begin, end) in order, in batches of
 * at most `batch`, no augmentation.
 *
 * ---- Augmentation (training only; off by default) ----------------------------
 * The random numbers of sample g in epoch e are block 0 of the Philox stream
 * (seed, FDP_RNG_AUGMENT, sample g, epoch e) — keyed by the GLOBAL sample index,
 * so a sample is augmented the same way whichever rank reads it:
 *   hflip:     mirrored left-right when word 0 >> 31 is 1 (probability 1/2);
 *   translate: T = floor(translate * side) for each axis (side = W for x, H
 *              for y); shifts dx = word1 % (2T+1) - T, dy = word2 % (2T+1) - T
 *              whole pixels (the modulo bias, (2T+1) / 2^32, is below 2^-25
 *              for sides up to 64); out(y, x) = in(clamp(y - dy), clamp(x - dx)),
 *              i.e. the image moves by (dx, dy) and the uncovered border
 *              repeats the nearest edge pixel — Keras ImageDataGenerator's
 *              default fill_mode "nearest", which openai/glow's --dal uses.
 *              Keras draws real-valued shifts and interpolates; flowdp shifts
 *              by whole pixels so that values stay on the 8-bit grid that
 *              dequantization assumes.
 *   The flip is applied after the shift (out = flip(shift(in))).
 *
 * ---- Threads -----------------------------------------------------------------
 * prefetch >= 1: one thread per loader reads, decodes and augments; the
 * consumer calls fdp_loader_next, which blocks only when the next batch is not
 * ready yet (that time is added to fdp_loader_wait_seconds). prefetch = 0: the
 * batch is made in the calling thread inside fdp_loader_next. All HDF5 reads
 * take fdp_hdf5_lock (see hdf5_lock.h for why), so the consumer may use HDF5
 * meanwhile if it takes the lock too. A read error after opening (I/O error,
 * a shard changed under us) is fatal: fdp_loader_next aborts the job with the
 * message (naming the file), since the ranks cannot continue in step. */
#ifndef FLOWDP_LOADER_H
#define FLOWDP_LOADER_H
#include <stdint.h>

#include "flowdp/data.h"
#include "flowdp/error.h"
#include "flowdp/shards.h"

/* A dataset to read from: either in memory (idx, cifar10) or packed shards (hdf5). */
typedef struct fdp_source {
    fdp_dataset mem;     /* the in-memory set (when shards == NULL) */
    fdp_shards *shards;  /* the shard reader (hdf5), or NULL */
    int64_t n;           /* samples */
    int c, h, w;         /* image shape */
    char desc[600];      /* for logs: "idx:/path..." or "hdf5:/path/train.index (12 shards)" */
} fdp_source;

/* format: "idx", "cifar10" (read whole into memory, fdp_dataset_load) or "hdf5"
 * (path = shard index or directory; nothing is read but the index and shard
 * headers). limit > 0 keeps the first `limit` samples. Returns 0 or -1 + err. */
int fdp_source_open(const char *format, const char *path, int train, int64_t limit, fdp_source *out, fdp_err *err);
/* Checksums of the shards part, part + nparts, ... (a no-op for in-memory sets). */
int fdp_source_verify(fdp_source *s, int part, int nparts, fdp_err *err);
void fdp_source_close(fdp_source *s);

/* Read samples idx[0..count) as uint8 NCHW (count, c, h, w); labels may be NULL. */
int fdp_source_read_u8(fdp_source *s, const int64_t *idx, int count, uint8_t *out, int32_t *labels, fdp_err *err);

/* Augment and convert one image: in (c, h, w) uint8 -> out (c, h, w) float in
 * [0, 1], as described above for global sample g in epoch `epoch`. With
 * hflip = 0 and translate = 0 this is exactly out = in / 255.0f. */
void fdp_augment_to_float(const uint8_t *in, int c, int h, int w, uint64_t seed, uint32_t epoch, int64_t g, int hflip,
                          double translate, float *out);

typedef enum { FDP_LOADER_TRAIN = 0, FDP_LOADER_RANGE = 1 } fdp_loader_mode;

typedef struct fdp_loader_opts {
    fdp_source *src;        /* not owned; must outlive the loader */
    fdp_loader_mode mode;
    int prefetch;           /* batches prepared ahead; 0 = in the caller's thread */
    int batch;              /* per-rank batch (train) or the largest eval batch (range) */
    /* train */
    uint64_t seed;
    int rank, world;
    int64_t start_step, end_step; /* batches for steps [start_step, end_step) */
    int hflip;
    double translate;
    /* range */
    int64_t begin, end;
} fdp_loader_opts;

typedef struct fdp_batch {
    const float *x;       /* (count, c, h, w) */
    const int64_t *idx;   /* (count) global sample indices */
    int count;
    int64_t step, epoch;  /* train: the step and epoch this batch is for; range: batch number, 0 */
} fdp_batch;

typedef struct fdp_loader fdp_loader;

/* Returns 0 and *out, or -1 with err (bad options). Starts the thread. */
int fdp_loader_create(const fdp_loader_opts *o, fdp_loader **out, fdp_err *err);
/* The next batch (valid until the next call), or NULL when all are delivered. */
const fdp_batch *fdp_loader_next(fdp_loader *l);
/* Seconds the consumer has spent blocked in fdp_loader_next (or making the batch when prefetch = 0). */
double fdp_loader_wait_seconds(const fdp_loader *l);
void fdp_loader_destroy(fdp_loader *l);

#endif
