/* data.h — datasets in memory, their readers (IDX, CIFAR-10 binary), the
 * distributed sampler and batch assembly.
 *
 * A dataset is read once, whole, into host memory as uint8 NCHW (Fashion-MNIST
 * is 47 MB, CIFAR-10 150 MB). Readers check everything a file promises (magic,
 * header sizes, exact byte counts, label ranges) and report bad input the
 * flowdp way: return -1 and fill an fdp_err with one line naming the file and
 * what is wrong (include/flowdp/error.h).
 *
 * ---- The sampler: which sample goes to which rank at which step --------------
 * Semantics of PyTorch's DistributedSampler(shuffle=True, drop_last=True) fed to
 * a DataLoader(drop_last=True), with one deliberate difference noted below.
 *
 *  1. Global order. For (seed, epoch) the sampler builds ONE permutation `perm`
 *     of [0, n) by Fisher–Yates whose random draws come from the counter-based
 *     Philox generator keyed by (seed, FDP_RNG_SHUFFLE, position, epoch). It
 *     depends only on (seed, epoch, n): every rank computes the same
 *     permutation without communicating, and a resumed run recomputes it.
 *  2. Global batches. With G = world * per_rank_batch (the global batch),
 *     global batch b is perm[b*G .. (b+1)*G). An epoch has
 *     steps = floor(n / G) global batches; the last n - steps*G positions of the
 *     permutation are dropped for that epoch (drop_last). Because the order is
 *     reshuffled every epoch, different samples are dropped each epoch. Drop-last
 *     makes every rank run the same number of full batches, so the collectives
 *     (gradient all-reduce, synchronized BatchNorm) stay in step and no rank
 *     waits on a partner that has run out of data.
 *  3. Rank slices. Rank r takes the CONTIGUOUS sub-range [r*B, (r+1)*B) of each
 *     global batch (B = per_rank_batch). Concatenating the rank slices in rank
 *     order gives exactly the global batch, i.e. exactly the batch a single rank
 *     with batch size G would see at the same step. This is what makes
 *     N ranks x B equal 1 rank x N*B (docs/ARCHITECTURE.md, invariant 3), and a run can
 *     resume on a different number of ranks as long as G is unchanged.
 *     Difference from PyTorch: DistributedSampler gives rank r the strided
 *     positions r, r+R, r+2R, ... of the usable order, and each rank's DataLoader
 *     then cuts B consecutive items. Global batch b then holds the same SET of
 *     samples (positions [b*G, (b+1)*G)) but interleaved across ranks; flowdp
 *     keeps them contiguous so that the concatenation over ranks is the 1-rank
 *     batch in the same order, not just the same set.
 *  4. Evaluation does not drop or pad: the test set is split over ranks into
 *     contiguous ranges [n*r/R, n*(r+1)/R) (fdp_eval_range), every sample is
 *     evaluated exactly once, and the sizes differ by at most one. The eval loop
 *     must therefore not issue per-batch collectives; it sums (nll, count) per
 *     rank and all-reduces the sums once at the end.
 */
#ifndef FLOWDP_DATA_H
#define FLOWDP_DATA_H
#include <stdint.h>

#include "flowdp/error.h"

typedef struct fdp_dataset {
    uint8_t *images; /* (n, c, h, w) uint8 NCHW, pixel values 0..255 */
    int32_t *labels; /* (n) class labels, or NULL when the dataset has none */
    int64_t n;       /* number of samples held */
    int c, h, w;     /* image shape */
    char source[512]; /* what was read, e.g. "idx:/path/train-images-idx3-ubyte.gz" (for logs) */
} fdp_dataset;

/* Release the memory of d and zero it. Safe on a zeroed or already-freed dataset. */
void fdp_dataset_free(fdp_dataset *d);

/* ---- readers: on success fill *out (caller frees with fdp_dataset_free) and
 * return 0; on bad input return -1, fill err, leave *out zeroed. -------------- */

/* IDX files (MNIST, Fashion-MNIST), gzipped (detected by the gzip magic 1f 8b) or
 * plain. images_path: magic 0x00000803 (unsigned bytes, 3 dims: n, h, w),
 * big-endian dims; labels_path (may be NULL): magic 0x00000801 (n), the same n.
 * Every file must hold exactly the bytes its header declares (for a gzipped file:
 * the uncompressed bytes) — a short file and trailing bytes are both errors,
 * checked over the whole file even when limit is set. Limits: 1 <= n <= 2^31,
 * 1 <= h, w <= 65536. limit > 0 keeps only the first `limit` samples; 0 = all.
 * Result: c = 1. */
int fdp_idx_load(const char *images_path, const char *labels_path, int64_t limit, fdp_dataset *out, fdp_err *err);

/* CIFAR-10 binary version. dir_or_file: a directory holding data_batch_1.bin ..
 * data_batch_5.bin (train = 1) or test_batch.bin (train = 0) — or the directory
 * the official archive unpacks to, cifar-10-batches-bin, directly below it — or
 * one .bin file to read alone (train is then ignored). Each record is 3073 bytes:
 * the label (0..9), then 1024 R, 1024 G, 1024 B bytes, each a row-major 32x32
 * plane. Every file's size must be a non-zero multiple of 3073. limit > 0 keeps
 * the first `limit` records in file order; 0 = all. Result: c = 3, h = w = 32. */
int fdp_cifar10_load(const char *dir_or_file, int train, int64_t limit, fdp_dataset *out, fdp_err *err);

/* Dispatch on format: "idx" or "cifar10".
 *  idx: path is the images file; the labels file is the same path with the last
 *       "images-idx3" in the file name replaced by "labels-idx1", read when it
 *       exists (labels are optional). `train` is ignored: the file says which split.
 *       path may also be a directory holding the standard names: then
 *       train-images-idx3-ubyte(.gz) (train = 1) or t10k-images-idx3-ubyte(.gz)
 *       (train = 0) is read, the gzipped one preferred.
 *  cifar10: as fdp_cifar10_load(path, train, ...). */
int fdp_dataset_load(const char *format, const char *path, int train, int64_t limit, fdp_dataset *out, fdp_err *err);

/* ---- the sampler (semantics above) ------------------------------------------ */

/* perm_out (n): the global permutation of [0, n) for (seed, epoch). 0 <= epoch < 2^32. */
void fdp_sampler_epoch_order(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm_out);

/* Global batches (= optimizer steps) per epoch: floor(n / (world * per_rank_batch)). */
int64_t fdp_sampler_steps_per_epoch(int64_t n, int world, int per_rank_batch);

/* global_idx_out (per_rank_batch): the GLOBAL sample indices of rank `rank`'s part
 * of global batch `step_in_epoch` (0 <= step_in_epoch < steps_per_epoch):
 * perm[step*G + rank*B .. step*G + (rank+1)*B), G = world*B, B = per_rank_batch. */
void fdp_sampler_batch_indices(const int64_t *perm, int64_t step_in_epoch, int rank, int world, int per_rank_batch,
                               int64_t *global_idx_out);

/* Evaluation split: rank takes the samples [*begin, *end) = [n*rank/world, n*(rank+1)/world).
 * The ranges of ranks 0..world-1 tile [0, n) exactly. */
void fdp_eval_range(int64_t n, int rank, int world, int64_t *begin, int64_t *end);

/* ---- batch assembly ---------------------------------------------------------- */

/* out (count, c, h, w) float: out[i] = d->images[idx[i]] / 255, values in [0, 1].
 * idx values must lie in [0, d->n). */
void fdp_dataset_gather_float(const fdp_dataset *d, const int64_t *idx, int count, float *out);

#endif
