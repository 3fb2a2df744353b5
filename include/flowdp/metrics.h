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
 * ---- How appends stay safe -----------------------------------------------------------
 * HDF5 1.10 locks a file open for writing, and a writer killed while it holds a
 * file open can leave it inconsistent; so the file is never held open: each
 * flush opens it, appends, flushes, closes. Two ways, chosen per flush:
 *  - in place, when the new rows fit in chunks already in the file. The writes
 *    (seen with strace) are: the superblock's "open for write" flag, each
 *    column's 32 KB chunk rewritten in place (old rows with identical bytes),
 *    the object headers with the new extent (same size, same address), the
 *    superblock flag cleared. Nothing is allocated, so a kill -9 at any point
 *    leaves a readable file whose columns are at worst of unequal length by the
 *    rows of that flush; the next open cuts all columns of a group to the
 *    shortest. With the 1.8 format (superblock v2) a flag left set by a killed
 *    writer is ignored by HDF5 (the 1.10 format's superblock v3 would refuse
 *    the file until `h5clear -s`): tested by killing a writer right after
 *    H5Fopen, then appending and reading with h5py / h5dump.
 *  - copy + rename, when a new chunk must be allocated (every 4096 train rows),
 *    for fdp_metrics_truncate_after and repairs, and whenever the in-place open
 *    fails (e.g. a reader holds the file open: HDF5's lock): the file is copied
 *    to "<path>.tmp.<pid>", appended there, fsync'ed and renamed over <path>, so
 *    a kill leaves either the old or the new file. A reader that has the old
 *    file open keeps reading the old inode, undisturbed.
 * A kill therefore loses at most the rows not yet flushed, never the file.
 *
 * ---- Buffering ---------------------------------------------------------------------------
 * Rows are kept in memory and flushed when `max_rows` are buffered, when the
 * oldest buffered row is `max_seconds` old (checked at each append), on every
 * test row, on fdp_metrics_flush and on close. Defaults (see the measurements in
 * metrics.c): max_rows 1 000 000, max_seconds 1.0, i.e. at most one flush per
 * second. A failed flush keeps the rows buffered (-1 + err from that call) and is
 * retried max_seconds later at an append, or by fdp_metrics_flush / close.
 */
#ifndef FLOWDP_METRICS_H
#define FLOWDP_METRICS_H
#include <stdint.h>

#include "flowdp/error.h"

#define FDP_METRICS_FORMAT "flowdp-metrics"
#define FDP_METRICS_FORMAT_VERSION 1

typedef struct fdp_metrics fdp_metrics;

/* Open the metrics file. truncate != 0: start a new file (an existing one is
 * replaced atomically). truncate == 0 (resume): append to an existing file, or
 * create it when absent; an existing file that is not a readable flowdp metrics
 * file is an error naming it (the trainer moves it aside). Columns of unequal
 * length left by a killed writer are cut to the shortest. NULL + err on error. */
fdp_metrics *fdp_metrics_open(const char *path, int truncate, fdp_err *err);

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

/* Rows in the file (flushed) and buffered, per group. */
int64_t fdp_metrics_rows(const fdp_metrics *m, int test, int include_buffered);

/* Flush (a failure is logged as a warning) and free. NULL is fine. */
void fdp_metrics_close(fdp_metrics *m);

#endif
