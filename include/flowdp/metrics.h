/* metrics.h — the training metrics file (HDF5), appended while training and
 * readable with h5dump / h5py during the run and after a kill -9.
 *
 * ---- Layout (format "flowdp-metrics", format_version 1) --------------------------
 *   /            attributes format = "flowdp-metrics", format_version = 1 (int32)
 *   /train/step          int64    optimizer step after which the row was taken
 *   /train/epoch         float64  fractional epoch
 *   /train/bpd           float64  training bits per dimension
 *   /train/lr            float64  learning rate
 *   /train/grad_norm     float64  global gradient norm before clipping
 *   /train/images_per_s  float64  throughput (all ranks)
 *   /train/wall_time     float64  seconds since the run (first start) began
 *   /test/step           int64
 *   /test/epoch          float64
 *   /test/bpd            float64  test-set bits per dimension
 *   /test/bpd_stderr     float64  its standard error
 *   /test/images         int64    test images evaluated
 * All datasets are 1-D, chunked (/train 4096 rows, /test 256 rows per chunk),
 * unlimited, uncompressed, in the HDF5 1.8 file format. Row i of every dataset of
 * a group is one record: in h5py, `f["train/bpd"][:]` against `f["train/step"][:]`.
 *
 * ---- How writes stay safe ------------------------------------------------------------
 * The writer keeps the whole file in memory (HDF5's core driver, no backing store)
 * and never lets HDF5 write to the disk: a flush appends the buffered rows to the
 * in-memory file and writes its image to "<path>.tmp.<pid>", fsyncs it and renames
 * it over <path> (then fsyncs the directory). So:
 *  - the file on disk is always a complete, readable version: a kill -9, a full
 *    disk, `ulimit -f` or EIO at any moment leaves the previous version;
 *  - a failed write is a plain errno in one line; the rows stay in memory and the
 *    next flush (or close) writes them again;
 *  - a reader (h5py, h5dump) holding the file open keeps reading its old inode.
 * One flush writes the whole file (about 250 KB up to 4096 train rows, 56 MB at a
 * million), so the flush interval grows to at least 50x the last write's time.
 * An existing file with columns of unequal length (written by an older flowdp
 * killed mid-append) is cut to the shortest column on open.
 *
 * ---- Buffering ---------------------------------------------------------------------------
 * Rows are kept in memory and flushed when `max_rows` are buffered, when the
 * oldest buffered row is `max_seconds` old (checked at each append), on every
 * test row, on fdp_metrics_flush and on close. Defaults: max_rows 1 000 000,
 * max_seconds 1.0 (or 50x the last write's time, whichever is longer), i.e. at
 * most one flush per second. A failed flush keeps the rows (-1 + err from that
 * call); the next flush, at an append, fdp_metrics_flush or close, retries.
 */
#ifndef FLOWDP_METRICS_H
#define FLOWDP_METRICS_H
#include <stdint.h>

#include "flowdp/error.h"

#define FDP_METRICS_FORMAT "flowdp-metrics"
#define FDP_METRICS_FORMAT_VERSION 1

typedef struct fdp_metrics fdp_metrics;

/* Open the metrics file (and write it at once, so an unwritable place is found
 * before training). mode 0 (resume): append to an existing file, or create it when
 * absent; an existing file that is not a readable flowdp metrics file is an error
 * naming it. FDP_METRICS_TRUNCATE: start a new file, replacing an existing one
 * atomically, but only when that one is a flowdp metrics file (anything else, a
 * checkpoint, a text file, another HDF5 file, is an error naming it) or with
 * FDP_METRICS_FORCE as well. Columns of unequal length are cut to the shortest.
 * NULL + err on error. */
enum { FDP_METRICS_TRUNCATE = 1, FDP_METRICS_FORCE = 2 };
fdp_metrics *fdp_metrics_open(const char *path, int mode, fdp_err *err);

/* Buffer one row (and flush per the policy above). -1 + err when a flush was due
 * and failed (the rows stay buffered). */
int fdp_metrics_train_row(fdp_metrics *m, int64_t step, double epoch, double train_bpd, double lr, double grad_norm,
                          double images_per_s, double wall_time_s, fdp_err *err);
/* Buffer one test row and flush at once. */
int fdp_metrics_test_row(fdp_metrics *m, int64_t step, double epoch, double test_bpd, double test_bpd_stderr,
                         int64_t images, fdp_err *err);

/* Drop every row (buffered or in the file) with step > `step`, in /train and
 * /test: on resume from a checkpoint at `step`, the rows the killed run wrote
 * after it go, and the file reads like that of an uninterrupted run. Assumes
 * rows are in increasing step order (appends are; a resume that calls this keeps
 * them so): drops the suffix from the first row with step > `step`. */
int fdp_metrics_truncate_after(fdp_metrics *m, int64_t step, fdp_err *err);

/* Write buffered rows now. */
int fdp_metrics_flush(fdp_metrics *m, fdp_err *err);

/* Flush policy: flush when max_rows (>= 1) rows are buffered or the oldest is
 * max_seconds old (<= 0: flush on every row). */
void fdp_metrics_set_flush_policy(fdp_metrics *m, int max_rows, double max_seconds);

/* Rows in the in-memory file and buffered, per group (include_buffered = 0: the
 * rows that a flush has appended, whether or not its write to disk succeeded). */
int64_t fdp_metrics_rows(const fdp_metrics *m, int test, int include_buffered);

/* Flush and free. 0, or -1 + err naming the file and how many rows did not reach
 * it (the file then holds the last version that was written). NULL is fine. */
int fdp_metrics_close(fdp_metrics *m, fdp_err *err);

#endif
