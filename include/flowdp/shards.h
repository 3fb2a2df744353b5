/* shards.h — flowdp's packed dataset: HDF5 shard files plus a text index, their
 * writer (used by flowdp-pack) and their streaming reader (used by the loader).
 *
 * ---- The format (version 1) --------------------------------------------------
 * A packed split is a directory holding
 *   <split>.index                    the index (text, below)
 *   <split>-00000-of-000NN.h5 ...    the shards, in order
 * Every shard is an ordinary HDF5 file (h5dump / h5py read it as is):
 *   /images   uint8 (N, H, W, C)  samples in HWC order (C = 1 grey or 3 RGB),
 *             chunked (k, H, W, C) with k = max(1, min(N, 64, 16384 / (H*W*C)))
 *             images per chunk, uncompressed (random reads of single images
 *             stay cheap)
 *   /labels   int32 (N)           class labels, 0-based; -1 = no label
 *   root attributes:
 *     format    string  "flowdp-shard"
 *     version   int64   1
 *     source    string  what was packed (e.g. "npz:/data/Imagenet32_train_npz/train_data_batch_1.npz")
 *     split     string  e.g. "train"
 *     count     int64   N
 *     height, width, channels   int64   H, W, C
 *     first_index  int64  the global index of this shard's first sample
 *     checksum  uint64  XXH64 (seed 0; include/flowdp/xxh64.h) of the N*H*W*C image
 *               bytes in file order followed by the N labels as little-endian
 *               int32, i.e. in python:
 *                 xxhash.xxh64(f["images"][...].tobytes() + f["labels"][...].astype("<i4").tobytes()).intdigest()
 * The index is a text file, one record per line, '#' starts a comment line:
 *     flowdp-shards 1
 *     split train
 *     height 32
 *     width 32
 *     channels 3
 *     count 1281167                      (the sum of the shard counts)
 *     class 0 n01440764                  (optional, folder packs: label -> sub-folder name)
 *     shard train-00000-of-00129.h5 10000   (path relative to the index's directory, count)
 *     ...
 * The global index of a sample is its position in the concatenation of the
 * shards in index order. Shard files and the index are written to a temporary
 * name, fsynced and renamed, so a crash never leaves a half-written one.
 *
 * ---- Threads -----------------------------------------------------------------
 * Every HDF5 call made here is made under fdp_hdf5_lock() (include/flowdp/hdf5_lock.h).
 * A reader object itself is not thread-safe: use one from one thread at a time
 * (the loader uses it from its prefetch thread only). */
#ifndef FLOWDP_SHARDS_H
#define FLOWDP_SHARDS_H
#include <stdint.h>

#include "flowdp/error.h"

#define FDP_SHARD_FORMAT "flowdp-shard"
#define FDP_SHARD_VERSION 1
#define FDP_SHARD_INDEX_MAGIC "flowdp-shards 1"

/* ---- writing one shard -------------------------------------------------------- */
typedef struct fdp_shard_writer fdp_shard_writer;

/* Start the shard `path` for exactly `count` samples of h x w x c (written to
 * path + ".tmp.<pid>" until fdp_shard_writer_finish). NULL + err on failure. */
fdp_shard_writer *fdp_shard_writer_create(const char *path, int64_t count, int h, int w, int c, const char *source,
                                          const char *split, int64_t first_index, fdp_err *err);
/* Append n samples: images (n, h, w, c) uint8 HWC, labels (n). Returns 0 or -1. */
int fdp_shard_writer_append(fdp_shard_writer *sw, const uint8_t *images_nhwc, const int32_t *labels, int64_t n,
                            fdp_err *err);
/* All `count` samples appended: write labels and attributes, close, fsync,
 * rename into place. Frees sw whatever happens. Returns 0 or -1. */
int fdp_shard_writer_finish(fdp_shard_writer *sw, uint64_t *checksum_out, fdp_err *err);
/* Give up: close and remove the temporary file, free sw. */
void fdp_shard_writer_abort(fdp_shard_writer *sw);

/* ---- the index ---------------------------------------------------------------- */
typedef struct fdp_shard_entry {
    char name[256]; /* file name, relative to the index's directory */
    int64_t count;
} fdp_shard_entry;

/* Write the index `path` (atomically: tmp + fsync + rename). class_names may be
 * NULL (n_classes 0). Returns 0 or -1. */
int fdp_shard_index_write(const char *path, const char *split, int h, int w, int c, const fdp_shard_entry *shards,
                          int n_shards, char *const *class_names, int n_classes, fdp_err *err);

/* ---- reading ------------------------------------------------------------------- */
typedef struct fdp_shards fdp_shards;

/* Open a packed split. path: the index file, or a directory holding
 * train.index (train = 1) / test.index (train = 0). Checks the index and, for
 * every shard, that the file exists, is a flowdp shard of this version, and that
 * its datasets and attributes agree with the index (count, shape); checksums are
 * checked by fdp_shards_verify. limit > 0 keeps the first `limit` samples.
 * Memory: O(number of shards) for the table; at most FDP_SHARDS_MAX_OPEN shard
 * files are open at a time, each with a chunk cache of FDP_SHARDS_CHUNK_CACHE
 * bytes, so what a reader holds does not grow with the dataset. */
#define FDP_SHARDS_MAX_OPEN 16
#define FDP_SHARDS_CHUNK_CACHE (256u << 10)
int fdp_shards_open(const char *path, int train, int64_t limit, fdp_shards **out, fdp_err *err);
void fdp_shards_close(fdp_shards *s);

int64_t fdp_shards_count(const fdp_shards *s); /* samples (after the limit) */
void fdp_shards_shape(const fdp_shards *s, int *c, int *h, int *w);
const char *fdp_shards_index_path(const fdp_shards *s);
int fdp_shards_num(const fdp_shards *s);

/* Recompute the checksum of shards part, part + nparts, part + 2*nparts, ... (so
 * that ranks can share the work) reading block by block, and compare it with the
 * stored one. Returns 0, or -1 with an error naming the first bad shard. */
int fdp_shards_verify(fdp_shards *s, int part, int nparts, fdp_err *err);

/* Read samples idx[0..count) (global indices in [0, count())) as uint8
 * (count, c, h, w) NCHW into out, and their labels into labels (may be NULL).
 * Reads are grouped by shard and by contiguous runs. Returns 0 or -1. */
int fdp_shards_read(fdp_shards *s, const int64_t *idx, int count, uint8_t *out_nchw, int32_t *labels, fdp_err *err);

#endif
