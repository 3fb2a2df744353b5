/* metrics.c — the HDF5 metrics file: rows buffered in memory, appended to an
 * in-memory copy of the file (HDF5's core driver, no backing store) and written
 * out whole as "<path>.tmp.<pid>" + fsync + rename. HDF5 itself never writes to
 * the disk: HDF5 1.10 cannot recover from a failed write (disk full, EFBIG past
 * `ulimit -f`, EIO): H5Fclose fails, the half-closed file stays registered and
 * the library crashes in its atexit handler. Here a disk error is a plain errno,
 * the file on disk is always a complete earlier version, and the rows stay in the
 * in-memory file to be written by the next flush. Layout and policy:
 * include/flowdp/metrics.h.
 *
 * Cost: one flush writes the whole file (about 250 KB for the first 4096 train
 * rows, 56 MB at a million rows); the flush interval grows with the time a write
 * takes (at least 50x it), so writing stays under 2% of wall time. A kill loses at
 * most the rows since the last flush, which a resumed run recomputes anyway (the
 * rows after the checkpoint's step are dropped on resume). */
#include "flowdp/fsutil.h"
#include "flowdp/h5util.h"
#include "flowdp/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/log.h"

#define MET_PATH_MAX 4096
#define MET_MAX_COLS 7

typedef struct col_def {
    const char *name;
    int is_int; /* int64, else float64 */
} col_def;

static const col_def train_cols[] = {{"step", 1},      {"epoch", 0},        {"bpd", 0},      {"lr", 0},
                                     {"grad_norm", 0}, {"images_per_s", 0}, {"wall_time", 0}};
static const col_def test_cols[] = {{"step", 1}, {"epoch", 0}, {"bpd", 0}, {"bpd_stderr", 0}, {"images", 1}};
static const struct {
    const char *name;
    const col_def *cols;
    int ncols;
    hsize_t chunk;
} groups[2] = {{"train", train_cols, 7, 4096}, {"test", test_cols, 5, 256}};

/* Buffered rows of one group, column-wise: col[c] holds n 8-byte values
 * (int64 or float64 per the column). */
typedef struct row_buf {
    int64_t n, cap;
    unsigned char *col[MET_MAX_COLS];
} row_buf;

struct fdp_metrics {
    char path[MET_PATH_MAX];
    row_buf buf[2];        /* 0 train, 1 test */
    int64_t file_rows[2];  /* rows in the file */
    hsize_t chunk[2];      /* chunk size (rows) of each group in the file */
    hid_t mem;             /* the in-memory file (core driver, no backing store) */
    int dirty;             /* mem holds rows not yet written to path */
    int64_t disk_rows[2];  /* rows of each group in the last version written to path */
    double write_s;        /* seconds the last whole-file write took */
    int max_rows;
    double max_seconds;
    double oldest;         /* time of the oldest buffered row */
    unsigned serial;       /* makes each in-memory file name unique */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- HDF5 plumbing (the shared part is in flowdp/h5util.h) ------------------------ */
static int h5fail(const char *path, fdp_err *err, const char *what) {
    char cause[600];
    fdp_h5_cause(cause, sizeof cause);
    return fdp_err_set(err, "metrics %s: %s: %s", path, what, cause);
}

/* ---- file structure ----------------------------------------------------------------- */
static int create_structure(hid_t file, const char *path, fdp_err *err) {
    hid_t str = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    const char *format = FDP_METRICS_FORMAT;
    int32_t version = FDP_METRICS_FORMAT_VERSION;
    int rc = 0;
    if (str < 0 || sp < 0 || H5Tset_size(str, H5T_VARIABLE) < 0 || H5Tset_cset(str, H5T_CSET_UTF8) < 0) {
        rc = h5fail(path, err, "cannot make types");
    } else {
        hid_t a = H5Acreate2(file, "format", str, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, str, &format) < 0) rc = h5fail(path, err, "cannot write attribute 'format'");
        if (a >= 0) H5Aclose(a);
        if (!rc) {
            a = H5Acreate2(file, "format_version", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
            if (a < 0 || H5Awrite(a, H5T_NATIVE_INT32, &version) < 0)
                rc = h5fail(path, err, "cannot write attribute 'format_version'");
            if (a >= 0) H5Aclose(a);
        }
    }
    if (str >= 0) H5Tclose(str);
    if (sp >= 0) H5Sclose(sp);
    for (int g = 0; g < 2 && !rc; g++) {
        hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
        H5Pset_obj_track_times(gcpl, 0);
        hid_t grp = H5Gcreate2(file, groups[g].name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5Pclose(gcpl);
        if (grp < 0) {
            rc = h5fail(path, err, "cannot create a group");
            break;
        }
        hsize_t dims = 0, maxdims = H5S_UNLIMITED, chunk = groups[g].chunk;
        for (int c = 0; c < groups[g].ncols && !rc; c++) {
            hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            hid_t dsp = H5Screate_simple(1, &dims, &maxdims);
            hid_t ds = -1;
            if (dcpl >= 0 && dsp >= 0 && H5Pset_chunk(dcpl, 1, &chunk) >= 0 && H5Pset_obj_track_times(dcpl, 0) >= 0)
                ds = H5Dcreate2(grp, groups[g].cols[c].name, groups[g].cols[c].is_int ? H5T_STD_I64LE : H5T_IEEE_F64LE,
                                dsp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            if (ds < 0) rc = h5fail(path, err, "cannot create a dataset");
            else H5Dclose(ds);
            if (dcpl >= 0) H5Pclose(dcpl);
            if (dsp >= 0) H5Sclose(dsp);
        }
        H5Gclose(grp);
    }
    return rc;
}

/* Check that file is a flowdp metrics file; report rows per group (the shortest
 * column), whether columns differ in length, and the chunk sizes. */
static int inspect(hid_t file, int64_t rows[2], int ragged[2], hsize_t chunk[2], const char *path, fdp_err *err) {
    htri_t has_format = H5Aexists(file, "format");
    if (has_format < 0) return h5fail(path, err, "damaged file: cannot read the root group");
    if (has_format == 0) return fdp_err_set(err, "metrics %s: not a flowdp metrics file (no 'format' attribute)", path);
    hid_t a = H5Aopen(file, "format", H5P_DEFAULT);
    if (a < 0) return h5fail(path, err, "cannot read attribute 'format'");
    hid_t t = H5Aget_type(a);
    int ok = 0;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        if (H5Aread(a, t, &s) >= 0 && s) {
            ok = strcmp(s, FDP_METRICS_FORMAT) == 0;
            H5free_memory(s);
        }
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    if (!ok) return fdp_err_set(err, "metrics %s: not a flowdp metrics file (wrong 'format' attribute)", path);
    int32_t version = 0;
    a = H5Aopen(file, "format_version", H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT32, &version) < 0) version = -1;
    if (a >= 0) H5Aclose(a);
    if (version != FDP_METRICS_FORMAT_VERSION)
        return fdp_err_set(err, "metrics %s: unsupported format_version %d", path, (int)version);

    for (int g = 0; g < 2; g++) {
        rows[g] = -1;
        ragged[g] = 0;
        chunk[g] = 0;
        for (int c = 0; c < groups[g].ncols; c++) {
            char name[64];
            snprintf(name, sizeof name, "%s/%s", groups[g].name, groups[g].cols[c].name);
            if (H5Lexists(file, groups[g].name, H5P_DEFAULT) <= 0 || H5Lexists(file, name, H5P_DEFAULT) <= 0)
                return fdp_err_set(err, "metrics %s: missing dataset /%s", path, name);
            hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
            if (ds < 0) return h5fail(path, err, "cannot open a dataset");
            hid_t dt = H5Dget_type(ds), sp = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
            hsize_t dims = 0, maxdims = 0, ch = 0;
            int good = dt >= 0 && sp >= 0 && dcpl >= 0 &&
                       H5Tget_class(dt) == (groups[g].cols[c].is_int ? H5T_INTEGER : H5T_FLOAT) &&
                       H5Tget_size(dt) == 8 && H5Sget_simple_extent_ndims(sp) == 1 &&
                       H5Sget_simple_extent_dims(sp, &dims, &maxdims) == 1 && maxdims == H5S_UNLIMITED &&
                       H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 1, &ch) == 1 && ch > 0;
            if (dt >= 0) H5Tclose(dt);
            if (sp >= 0) H5Sclose(sp);
            if (dcpl >= 0) H5Pclose(dcpl);
            H5Dclose(ds);
            if (!good) return fdp_err_set(err, "metrics %s: /%s has the wrong type or shape", path, name);
            if (chunk[g] && chunk[g] != ch)
                return fdp_err_set(err, "metrics %s: /%s has another chunk size than its group", path, name);
            chunk[g] = ch;
            if (rows[g] >= 0 && (int64_t)dims != rows[g]) ragged[g] = 1;
            if (rows[g] < 0 || (int64_t)dims < rows[g]) rows[g] = (int64_t)dims;
        }
    }
    return 0;
}

/* ---- operations on an open file ------------------------------------------------------ */
/* Append rows [skip, buf.n) of each group at the end of the file's datasets. */
static int op_append(hid_t file, fdp_metrics *m, const int64_t *ctx, fdp_err *err) {
    (void)ctx;
    for (int g = 0; g < 2; g++) {
        const row_buf *b = &m->buf[g];
        if (b->n == 0) continue;
        hsize_t start = (hsize_t)m->file_rows[g], count = (hsize_t)b->n, total = start + count;
        for (int c = 0; c < groups[g].ncols; c++) {
            char name[64];
            snprintf(name, sizeof name, "%s/%s", groups[g].name, groups[g].cols[c].name);
            hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
            if (ds < 0) return h5fail(m->path, err, "cannot open a dataset");
            int rc = 0;
            hid_t fsp = -1, msp = -1;
            if (H5Dset_extent(ds, &total) < 0 || (fsp = H5Dget_space(ds)) < 0 ||
                H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
                (msp = H5Screate_simple(1, &count, NULL)) < 0 ||
                H5Dwrite(ds, groups[g].cols[c].is_int ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, msp, fsp, H5P_DEFAULT,
                         b->col[c]) < 0) {
                char what[96];
                snprintf(what, sizeof what, "cannot append to /%s", name);
                rc = h5fail(m->path, err, what);
            }
            if (fsp >= 0) H5Sclose(fsp);
            if (msp >= 0) H5Sclose(msp);
            H5Dclose(ds);
            if (rc) return rc;
        }
    }
    return 0;
}

/* Cut both groups to their shortest column, then to the rows before the first
 * one with step > *ctx. Updates m->file_rows. */
static int op_truncate(hid_t file, fdp_metrics *m, const int64_t *ctx, fdp_err *err) {
    int64_t rows[2];
    int ragged[2];
    hsize_t chunk[2];
    if (inspect(file, rows, ragged, chunk, m->path, err)) return -1;
    for (int g = 0; g < 2; g++) {
        int64_t keep = rows[g];
        if (keep > 0) {
            char name[64];
            snprintf(name, sizeof name, "%s/step", groups[g].name);
            int64_t *steps = malloc(sizeof(int64_t) * (size_t)rows[g]);
            hid_t ds = H5Dopen2(file, name, H5P_DEFAULT), fsp = -1, msp = -1;
            hsize_t start = 0, count = (hsize_t)rows[g];
            int rc = 0;
            if (!steps || ds < 0 || (fsp = H5Dget_space(ds)) < 0 ||
                H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
                (msp = H5Screate_simple(1, &count, NULL)) < 0 ||
                H5Dread(ds, H5T_NATIVE_INT64, msp, fsp, H5P_DEFAULT, steps) < 0)
                rc = h5fail(m->path, err, "cannot read the step column");
            if (fsp >= 0) H5Sclose(fsp);
            if (msp >= 0) H5Sclose(msp);
            if (ds >= 0) H5Dclose(ds);
            if (!rc) {
                for (int64_t i = 0; i < rows[g]; i++)
                    if (steps[i] > *ctx) {
                        keep = i;
                        break;
                    }
            }
            free(steps);
            if (rc) return rc;
        }
        for (int c = 0; c < groups[g].ncols; c++) {
            char name[64];
            snprintf(name, sizeof name, "%s/%s", groups[g].name, groups[g].cols[c].name);
            hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
            hsize_t n = (hsize_t)keep;
            if (ds < 0 || H5Dset_extent(ds, &n) < 0) {
                h5fail(m->path, err, "cannot shrink a dataset");
                if (ds >= 0) H5Dclose(ds);
                return -1;
            }
            H5Dclose(ds);
        }
        if (keep < rows[g])
            fdp_info("metrics %s: dropped %lld %s rows after step %lld", m->path, (long long)(rows[g] - keep),
                     groups[g].name, (long long)*ctx);
        m->file_rows[g] = keep;
    }
    return 0;
}

typedef int (*file_op)(hid_t file, fdp_metrics *m, const int64_t *ctx, fdp_err *err);

/* ---- the in-memory file and writing it out ---------------------------------------- */


/* The in-memory file: created empty (image NULL) or opened from a file image. */
static hid_t mem_open(fdp_metrics *m, const void *image, size_t n, char *cause, size_t len) {
    hid_t fapl = fdp_h5_fapl();
    char name[MET_PATH_MAX + 48];
    snprintf(name, sizeof name, "%s.mem.%ld.%u", m->path, (long)getpid(), m->serial++);
    hid_t f = -1;
    if (fapl >= 0 && H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) >= 0 &&
        (!image || H5Pset_file_image(fapl, (void *)image, n) >= 0))
        f = image ? H5Fopen(name, H5F_ACC_RDWR, fapl) : H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) fdp_h5_cause(cause, len);
    if (fapl >= 0) H5Pclose(fapl);
    return f;
}

/* Write the in-memory file to "<path>.tmp.<pid>", fsync, rename over path, fsync the
 * directory. On failure the file at path is untouched and m->dirty stays set. */
static int write_out(fdp_metrics *m, fdp_err *err) {
    double t0 = now_s();
    if (H5Fflush(m->mem, H5F_SCOPE_LOCAL) < 0) return h5fail(m->path, err, "cannot flush the in-memory file");
    ssize_t n = H5Fget_file_image(m->mem, NULL, 0);
    unsigned char *img = n > 0 ? malloc((size_t)n) : NULL;
    int rc = 0;
    if (n <= 0 || !img || H5Fget_file_image(m->mem, img, (size_t)n) != n)
        rc = n > 0 && !img ? fdp_err_set(err, "metrics %s: out of memory for a %lld-byte image", m->path, (long long)n)
                           : h5fail(m->path, err, "cannot take the file image");
    if (!rc && fdp_h5_image_fix_superblock(img, (size_t)n) != 0)
        rc = fdp_err_set(err, "metrics %s: the in-memory image does not start with a version-2 superblock", m->path);
    char tmp[MET_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", m->path, (long)getpid());
    int e = rc ? 0 : fdp_write_file_sync(tmp, img, (size_t)n);
    free(img);
    if (!rc && e) rc = fdp_err_set(err, "metrics %s: cannot write %s: %s", m->path, tmp, strerror(e));
    if (!rc && rename(tmp, m->path) != 0)
        rc = fdp_err_set(err, "metrics %s: cannot rename %s over it: %s", m->path, tmp, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    char dir[MET_PATH_MAX];
    fdp_dir_of(m->path, dir, sizeof dir);
    (void)fdp_fsync_dir(dir); /* best effort: the data is in place either way */
    m->dirty = 0;
    m->disk_rows[0] = m->file_rows[0];
    m->disk_rows[1] = m->file_rows[1];
    m->write_s = now_s() - t0;
    return 0;
}


/* ---- buffering ---------------------------------------------------------------------- */
static void buf_push(row_buf *b, int ncols, const void *vals8) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 256;
        for (int c = 0; c < ncols; c++) b->col[c] = fdp_xrealloc(b->col[c], 8 * (size_t)b->cap);
    }
    for (int c = 0; c < ncols; c++) memcpy(b->col[c] + 8 * b->n, (const unsigned char *)vals8 + 8 * c, 8);
    b->n++;
}


static int64_t buf_step(const row_buf *b, int64_t i) {
    int64_t s;
    memcpy(&s, b->col[0] + 8 * i, 8);
    return s;
}



/* Append the buffered rows to the in-memory file, then write it out. Rows that
 * reached the in-memory file leave the buffer even when the write fails: the next
 * flush writes them. */
static int flush_locked(fdp_metrics *m, fdp_err *err) {
    if (m->buf[0].n || m->buf[1].n) {
        if (op_append(m->mem, m, NULL, err) != 0) return -1;
        for (int g = 0; g < 2; g++) {
            m->file_rows[g] += m->buf[g].n;
            m->buf[g].n = 0;
        }
        m->dirty = 1;
    }
    return m->dirty ? write_out(m, err) : 0;
}

int fdp_metrics_flush(fdp_metrics *m, fdp_err *err) {
    if (!m) return 0;
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int rc = flush_locked(m, err);
    fdp_h5_quiet_end(&q);
    return rc;
}

/* ---- public API ---------------------------------------------------------------------- */
/* Open path's contents as the in-memory file (inspected); 0, or -1 + err. */
static int load_existing(fdp_metrics *m, fdp_err *err) {
    unsigned char *img = NULL;
    size_t n = 0;
    int e = fdp_read_file(m->path, &img, &n);
    if (e) return fdp_err_set(err, "metrics %s: cannot read it: %s", m->path, strerror(e));
    char cause[600];
    m->mem = fdp_h5_is_hdf5(img, n) ? mem_open(m, img, n, cause, sizeof cause) : -1;
    free(img);
    if (m->mem < 0) return fdp_err_set(err, "metrics %s: not a flowdp metrics file (not a readable HDF5 file)", m->path);
    int ragged[2];
    if (inspect(m->mem, m->file_rows, ragged, m->chunk, m->path, err) != 0) return -1;
    m->disk_rows[0] = m->file_rows[0];
    m->disk_rows[1] = m->file_rows[1];
    if (ragged[0] || ragged[1]) {
        fdp_warn("metrics %s: columns of unequal length (a writer was killed mid-append); cutting to the shortest",
                 m->path);
        int64_t all = INT64_MAX;
        if (op_truncate(m->mem, m, &all, err) != 0) return -1;
        m->dirty = 1;
    }
    return 0;
}

fdp_metrics *fdp_metrics_open(const char *path, int mode, fdp_err *err) {
    if (!path || !*path || strlen(path) >= MET_PATH_MAX) {
        fdp_err_set(err, "metrics: bad path");
        return NULL;
    }
    fdp_metrics *m = fdp_xcalloc(1, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    m->mem = -1;
    m->max_rows = 1000000;
    m->max_seconds = 1.0;
    m->chunk[0] = groups[0].chunk;
    m->chunk[1] = groups[1].chunk;
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int rc = 0;
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (!exists && errno != ENOENT) {
        rc = fdp_err_set(err, "metrics %s: cannot access: %s", path, strerror(errno));
    } else if (exists && S_ISDIR(st.st_mode)) {
        rc = fdp_err_set(err, "metrics %s: is a directory", path);
    } else if (exists) {
        /* resume appends to it; a new run replaces it, but only when it is a metrics file */
        rc = load_existing(m, err);
        if (rc && (mode & FDP_METRICS_TRUNCATE) && (mode & FDP_METRICS_FORCE)) {
            if (m->mem >= 0) H5Fclose(m->mem);
            m->mem = -1;
            rc = 0;
        } else if (rc && (mode & FDP_METRICS_TRUNCATE)) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            rc = fdp_err_set(err, "%s; a new run replaces only a flowdp metrics file: move it away or choose "
                                  "another [log] metrics", why);
        }
        if (!rc && (mode & FDP_METRICS_TRUNCATE)) {
            if (m->mem >= 0) H5Fclose(m->mem);
            m->mem = -1;
        }
    }
    if (!rc && m->mem < 0) { /* a new file: created in memory and written out at once */
        char cause[600];
        m->file_rows[0] = m->file_rows[1] = 0;
        m->chunk[0] = groups[0].chunk;
        m->chunk[1] = groups[1].chunk;
        m->mem = mem_open(m, NULL, 0, cause, sizeof cause);
        if (m->mem < 0) rc = fdp_err_set(err, "metrics %s: cannot create the in-memory file: %s", path, cause);
        else rc = create_structure(m->mem, path, err);
        m->dirty = 1;
    }
    if (!rc && m->dirty) rc = write_out(m, err);
    fdp_h5_quiet_end(&q);
    if (rc) {
        if (m->mem >= 0) H5Fclose(m->mem);
        free(m);
        return NULL;
    }
    return m;
}

static int maybe_flush(fdp_metrics *m, int force, fdp_err *err) {
    int64_t pending = m->buf[0].n + m->buf[1].n;
    if (pending == 0) return 0;
    double interval = m->max_seconds > 0 && m->max_seconds < 50 * m->write_s ? 50 * m->write_s : m->max_seconds;
    if (!force && pending < m->max_rows && (m->max_seconds > 0 && now_s() - m->oldest < interval)) return 0;
    int rc = fdp_metrics_flush(m, err);
    if (rc) m->oldest = now_s(); /* retry after max_seconds, not at every row */
    return rc;
}

int fdp_metrics_train_row(fdp_metrics *m, int64_t step, double epoch, double train_bpd, double lr, double grad_norm,
                          double images_per_s, double wall_time_s, fdp_err *err) {
    unsigned char v[8 * 7];
    double d[6] = {epoch, train_bpd, lr, grad_norm, images_per_s, wall_time_s};
    memcpy(v, &step, 8);
    memcpy(v + 8, d, sizeof d);
    if (m->buf[0].n + m->buf[1].n == 0) m->oldest = now_s();
    buf_push(&m->buf[0], 7, v);
    return maybe_flush(m, 0, err);
}

int fdp_metrics_test_row(fdp_metrics *m, int64_t step, double epoch, double test_bpd, double test_bpd_stderr,
                         int64_t images, fdp_err *err) {
    unsigned char v[8 * 5];
    double d[3] = {epoch, test_bpd, test_bpd_stderr};
    memcpy(v, &step, 8);
    memcpy(v + 8, d, sizeof d);
    memcpy(v + 32, &images, 8);
    if (m->buf[0].n + m->buf[1].n == 0) m->oldest = now_s();
    buf_push(&m->buf[1], 5, v);
    return maybe_flush(m, 1, err);
}

int fdp_metrics_truncate_after(fdp_metrics *m, int64_t step, fdp_err *err) {
    for (int g = 0; g < 2; g++) {
        row_buf *b = &m->buf[g];
        for (int64_t i = 0; i < b->n; i++)
            if (buf_step(b, i) > step) {
                b->n = i;
                break;
            }
    }
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int64_t before[2] = {m->file_rows[0], m->file_rows[1]};
    int rc = op_truncate(m->mem, m, &step, err);
    if (!rc && (m->file_rows[0] != before[0] || m->file_rows[1] != before[1])) m->dirty = 1;
    if (!rc && m->dirty) rc = write_out(m, err);
    fdp_h5_quiet_end(&q);
    return rc;
}

void fdp_metrics_set_flush_policy(fdp_metrics *m, int max_rows, double max_seconds) {
    m->max_rows = max_rows < 1 ? 1 : max_rows;
    m->max_seconds = max_seconds;
}

int64_t fdp_metrics_rows(const fdp_metrics *m, int test, int include_buffered) {
    int g = test ? 1 : 0;
    return m->file_rows[g] + (include_buffered ? m->buf[g].n : 0);
}

int fdp_metrics_close(fdp_metrics *m, fdp_err *err) {
    if (!m) return 0;
    int rc = fdp_metrics_flush(m, err);
    int64_t pending = m->buf[0].n + m->buf[1].n + m->file_rows[0] + m->file_rows[1] - m->disk_rows[0] - m->disk_rows[1];
    if (rc) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        fdp_err_set(err, "%s (the last %lld rows are not in the file)", why, (long long)(pending > 0 ? pending : 0));
    }
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    if (m->mem >= 0) H5Fclose(m->mem); /* in memory: cannot fail on the disk */
    fdp_h5_quiet_end(&q);
    for (int g = 0; g < 2; g++)
        for (int c = 0; c < MET_MAX_COLS; c++) free(m->buf[g].col[c]);
    free(m);
    return rc;
}
