/* checkpoint.c — HDF5 checkpoints: atomic save (tmp + fsync + rename + dir
 * fsync), load and verify with an XXH64 checksum over data and metadata, and the
 * checkpoint directory (newest valid, prune, best.h5 copy). Layout and checksum
 * definition: include/flowdp/checkpoint.h. */
#include "flowdp/fsutil.h"
#include "flowdp/h5util.h"
#include "flowdp/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/log.h"
#include "flowdp/xxh64.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint checksum hashes host integers and floats as little-endian bytes"
#endif

#define CKPT_PATH_MAX 4096

/* ---- XXH64: src/core/xxh64.c (the standard xxHash64, streaming) ------------------ */
typedef fdp_xxh64_state xxh64;
#define xxh_update fdp_xxh64_update
#define xxh_init fdp_xxh64_init
#define xxh_digest fdp_xxh64_digest

uint64_t fdp_ckpt_xxh64(const void *data, size_t n, uint64_t seed) {
    xxh64 h;
    xxh_init(&h, seed);
    xxh_update(&h, data, n);
    return xxh_digest(&h);
}

static void hash_u64(xxh64 *h, uint64_t v) { xxh_update(h, &v, 8); }
static void hash_i64(xxh64 *h, int64_t v) { xxh_update(h, &v, 8); }
static void hash_f64(xxh64 *h, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    hash_u64(h, u);
}
static void hash_cstr0(xxh64 *h, const char *s) { xxh_update(h, s, strlen(s) + 1); } /* bytes + NUL */
static void hash_lenstr(xxh64 *h, const char *s) {
    size_t n = strlen(s);
    hash_u64(h, (uint64_t)n);
    xxh_update(h, s, n);
}

/* The head of the checksummed stream: format, version, meta, config. */
static void hash_meta(xxh64 *h, const fdp_ckpt_meta *m, const char *config) {
    hash_cstr0(h, FDP_CKPT_FORMAT);
    hash_u64(h, FDP_CKPT_FORMAT_VERSION);
    hash_i64(h, m->step);
    hash_i64(h, m->epoch);
    hash_i64(h, m->epoch_step);
    hash_u64(h, m->seed);
    hash_i64(h, m->world_size);
    hash_f64(h, m->best_test_bpd);
    hash_f64(h, m->last_test_bpd);
    hash_lenstr(h, m->model_type);
    hash_i64(h, m->nonfinite_skipped);
    hash_i64(h, m->image_c);
    hash_i64(h, m->image_h);
    hash_i64(h, m->image_w);
    hash_i64(h, m->global_batch);
    hash_lenstr(h, config);
}

/* ---- HDF5 plumbing (the shared part is in flowdp/h5util.h) ------------------------ */
static int h5fail(const char *path, fdp_err *err, const char *what) {
    char cause[600];
    fdp_h5_cause(cause, sizeof cause);
    return fdp_err_set(err, "checkpoint %s: %s: %s", path, what, cause);
}

static hid_t make_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *val, const char *path,
                      fdp_err *err) {
    char what[128];
    snprintf(what, sizeof what, "cannot write attribute '%s'", name);
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return h5fail(path, err, what);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) {
        h5fail(path, err, what);
        H5Sclose(sp);
        return -1;
    }
    int rc = 0;
    if (H5Awrite(a, mtype, val) < 0) rc = h5fail(path, err, what);
    H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int attr_write_str(hid_t loc, const char *name, const char *val, const char *path, fdp_err *err) {
    hid_t t = make_str_type();
    if (t < 0) return h5fail(path, err, "cannot make a string type");
    int rc = attr_write(loc, name, t, t, &val, path, err);
    H5Tclose(t);
    return rc;
}

/* Read a scalar numeric attribute of class cls into out (memory type mtype). */
static int attr_read(hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, void *out, const char *path,
                     fdp_err *err) {
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0) return h5fail(path, err, "damaged file: cannot read the root group");
    if (ex == 0) return fdp_err_set(err, "checkpoint %s: missing attribute '%s'", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return h5fail(path, err, "cannot open an attribute");
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = 0;
    if (t < 0 || sp < 0 || H5Tget_class(t) != cls || H5Sget_simple_extent_npoints(sp) != 1)
        rc = fdp_err_set(err, "checkpoint %s: attribute '%s' has the wrong type or size", path, name);
    else if (H5Aread(a, mtype, out) < 0)
        rc = h5fail(path, err, "cannot read an attribute");
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

/* The size of the open file that obj belongs to, or 0 when unknown. */
static uint64_t obj_file_size(hid_t obj) {
    hid_t f = H5Iget_file_id(obj);
    hsize_t size = 0;
    if (f < 0) return 0;
    if (H5Fget_filesize(f, &size) < 0) size = 0;
    H5Fclose(f);
    return (uint64_t)size;
}

/* The length a scalar variable-length string dataset claims, from its raw data: a
 * heap ID (uint32 little-endian length, heap address, index) that no HDF5 checksum
 * covers, and from which HDF5 allocates the string before it finds out that the heap
 * holds less. Returns 0 and *len (UINT64_MAX when the raw data is not contiguous in
 * the file: then it sits in the checksummed object header), or -1 on a read error. */
static int vlen_str_disk_len(hid_t ds, const char *path, uint64_t *len) {
    *len = UINT64_MAX;
    haddr_t off = H5Dget_offset(ds);
    if (off == HADDR_UNDEF) return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    unsigned char b[4];
    ssize_t r = pread(fd, b, 4, (off_t)off);
    int e = r < 0 ? errno : 0;
    close(fd);
    if (r != 4) {
        errno = e; /* 0: the file ends before it */
        return -1;
    }
    *len = (uint64_t)b[0] | (uint64_t)b[1] << 8 | (uint64_t)b[2] << 16 | (uint64_t)b[3] << 24;
    return 0;
}

/* Read a scalar string held by an attribute (is_attr) or a dataset into a
 * malloc'd NUL-terminated buffer. Accepts variable- and fixed-length strings no
 * longer than the file (a damaged length must not make us, or HDF5, allocate more). */
static int str_read(hid_t obj, int is_attr, const char *what, char **out, const char *path, fdp_err *err) {
    *out = NULL;
    hid_t t = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    hid_t sp = is_attr ? H5Aget_space(obj) : H5Dget_space(obj);
    uint64_t file_size = obj_file_size(obj), disk_len = 0;
    int rc = 0, is_var = t >= 0 ? H5Tis_variable_str(t) > 0 : 0;
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        rc = fdp_err_set(err, "checkpoint %s: %s is not a scalar string", path, what);
    } else if (!is_var && (uint64_t)H5Tget_size(t) > file_size) {
        rc = fdp_err_set(err, "checkpoint %s: damaged file: %s claims %llu bytes, more than the file's %llu", path, what,
                         (unsigned long long)H5Tget_size(t), (unsigned long long)file_size);
    } else if (is_var && !is_attr && vlen_str_disk_len(obj, path, &disk_len) != 0) {
        rc = fdp_err_set(err, "checkpoint %s: cannot read the length of %s: %s", path, what,
                         errno ? strerror(errno) : "the file ends before it");
    } else if (is_var && !is_attr && disk_len != UINT64_MAX && disk_len > file_size) {
        rc = fdp_err_set(err, "checkpoint %s: damaged file: %s claims %llu bytes, more than the file's %llu", path, what,
                         (unsigned long long)disk_len, (unsigned long long)file_size);
    } else if (is_var) {
        hid_t mt = make_str_type();
        char *p = NULL;
        herr_t r = mt < 0 ? -1 : is_attr ? H5Aread(obj, mt, &p) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p);
        if (r < 0) {
            char m[160];
            snprintf(m, sizeof m, "cannot read %s", what);
            rc = h5fail(path, err, m);
        } else {
            *out = strdup(p ? p : "");
            if (p) H5free_memory(p);
        }
        if (mt >= 0) H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(t);
        hid_t mt = H5Tcopy(H5T_C_S1);
        char *buf = calloc(1, size + 1);
        herr_t r = (mt < 0 || !buf || H5Tset_size(mt, size) < 0)
                       ? -1
                       : is_attr ? H5Aread(obj, mt, buf) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        if (r < 0) {
            char m[160];
            snprintf(m, sizeof m, "cannot read %s", what);
            rc = h5fail(path, err, m);
            free(buf);
        } else {
            *out = buf;
        }
        if (mt >= 0) H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (rc == 0 && !*out) rc = fdp_err_set(err, "checkpoint %s: out of memory reading %s", path, what);
    return rc;
}

static int attr_read_str(hid_t loc, const char *name, char *out, size_t len, const char *path, fdp_err *err) {
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0) return h5fail(path, err, "damaged file: cannot read the root group");
    if (ex == 0) return fdp_err_set(err, "checkpoint %s: missing attribute '%s'", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return h5fail(path, err, "cannot open an attribute");
    char what[96], *s = NULL;
    snprintf(what, sizeof what, "attribute '%s'", name);
    int rc = str_read(a, 1, what, &s, path, err);
    H5Aclose(a);
    if (rc) return rc;
    if (strlen(s) >= len) rc = fdp_err_set(err, "checkpoint %s: attribute '%s' is too long", path, name);
    else memcpy(out, s, strlen(s) + 1);
    free(s);
    return rc;
}

static void fmt_shape(char *out, size_t len, int ndim, const int64_t *dims) {
    size_t o = (size_t)snprintf(out, len, "[");
    for (int d = 0; d < ndim && o < len; d++) o += (size_t)snprintf(out + o, len - o, d ? ", %lld" : "%lld", (long long)dims[d]);
    if (o < len) snprintf(out + o, len - o, "]");
}

/* ---- sections ------------------------------------------------------------------- */
enum { SEC_PARAMS, SEC_BUFFERS, SEC_OPT_M, SEC_OPT_V, SEC_EMA, SEC_COUNT };
static const char *const sec_path[SEC_COUNT] = {"params", "buffers", "optimizer/m", "optimizer/v", "ema"};

static float *sec_data(const fdp_ckpt_state *s, int sec) {
    switch (sec) {
    case SEC_PARAMS: return s->params;
    case SEC_BUFFERS: return s->buffers;
    case SEC_OPT_M: return s->opt_m;
    case SEC_OPT_V: return s->opt_v;
    default: return s->ema;
    }
}

/* One dataset of a section: its name, shape, and (for table entries) offset. */
typedef struct ds_info {
    char name[FDP_NAME_MAX];
    int ndim;
    int64_t dims[FDP_MAX_DIMS];
    int64_t numel;
    int64_t offset; /* into the flat buffer of the table; -1 when not from a table */
} ds_info;

static int ds_info_cmp(const void *a, const void *b) { return strcmp(((const ds_info *)a)->name, ((const ds_info *)b)->name); }

/* The entries of kind k of a table, sorted by name. */
static ds_info *table_infos(const fdp_params *t, fdp_param_kind k, int *n_out) {
    ds_info *v = fdp_xcalloc((size_t)(t->count ? t->count : 1), sizeof *v);
    int n = 0;
    for (int i = 0; i < t->count; i++) {
        const fdp_param_entry *e = &t->entries[i];
        if (e->kind != k) continue;
        ds_info *d = &v[n++];
        snprintf(d->name, sizeof d->name, "%s", e->name);
        d->ndim = e->ndim;
        for (int j = 0; j < e->ndim; j++) d->dims[j] = e->shape[j];
        d->numel = e->numel;
        d->offset = e->offset;
    }
    qsort(v, (size_t)n, sizeof *v, ds_info_cmp);
    *n_out = n;
    return v;
}

static int valid_name(const char *name) { return name[0] && strcmp(name, ".") != 0 && !strchr(name, '/'); }

/* Write one section's datasets in name order and feed them to the checksum. */
static int write_section(hid_t file, int sec, const ds_info *infos, int n, const float *base, xxh64 *h,
                         const char *path, fdp_err *err) {
    char what[FDP_NAME_MAX + 64];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), gcpl = H5Pcreate(H5P_GROUP_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t g = -1;
    int rc = 0;
    if (lcpl < 0 || gcpl < 0 || dcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
        H5Pset_obj_track_times(gcpl, 0) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0) {
        rc = h5fail(path, err, "cannot set up property lists");
        goto done;
    }
    g = H5Gcreate2(file, sec_path[sec], lcpl, gcpl, H5P_DEFAULT);
    if (g < 0) {
        snprintf(what, sizeof what, "cannot create group /%s", sec_path[sec]);
        rc = h5fail(path, err, what);
        goto done;
    }
    hash_cstr0(h, sec_path[sec]);
    hash_u64(h, (uint64_t)n);
    for (int i = 0; i < n && rc == 0; i++) {
        const ds_info *d = &infos[i];
        const float *data = base ? base + d->offset : NULL; /* NULL only when every entry is empty */
        hash_cstr0(h, d->name);
        hash_u64(h, (uint64_t)d->ndim);
        hsize_t dims[FDP_MAX_DIMS];
        for (int j = 0; j < d->ndim; j++) {
            hash_u64(h, (uint64_t)d->dims[j]);
            dims[j] = (hsize_t)d->dims[j];
        }
        if (d->numel > 0) xxh_update(h, data, sizeof(float) * (size_t)d->numel);
        snprintf(what, sizeof what, "cannot write /%s/%s", sec_path[sec], d->name);
        hid_t sp = d->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(d->ndim, dims, NULL);
        if (sp < 0) {
            rc = h5fail(path, err, what);
            break;
        }
        hid_t ds = H5Dcreate2(g, d->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ds < 0) rc = h5fail(path, err, what);
        else if (d->numel > 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
            rc = h5fail(path, err, what);
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(sp);
    }
done:
    if (g >= 0) H5Gclose(g);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (gcpl >= 0) H5Pclose(gcpl);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

/* Build the whole checkpoint as an HDF5 file image in memory (the core driver, no
 * backing store) and return it in *image (malloc'd, *size bytes; the caller writes
 * it to disk). HDF5 never touches the disk here, on purpose: HDF5 1.10 cannot
 * recover from a failed write (disk full, EFBIG past `ulimit -f`, EIO): H5Fclose
 * then fails, the half-closed file stays registered and the library crashes in
 * its atexit handler (H5F__close_cb). Writing the image ourselves turns every disk
 * error into a plain errno. Costs a transient second copy of the checkpoint in
 * rank 0's memory while the image is taken. */
static int build_image(const char *tmp, const char *path, const fdp_ckpt_state *s, const fdp_ckpt_meta *meta,
                       const char *config, void **image_out, size_t *size, fdp_err *err) {
    *image_out = NULL;
    *size = 0;
    /* grow the image in steps of about the raw data size: one or two allocations */
    size_t raw = sizeof(float) * ((size_t)s->table->n_params * 5 + (size_t)s->table->n_buffers) + strlen(config);
    hid_t fapl = fdp_h5_fapl();
    if (fapl < 0 || H5Pset_fapl_core(fapl, raw / 2 + ((size_t)1 << 20), 0) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return h5fail(path, err, "cannot set up file access");
    }
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) {
        char what[CKPT_PATH_MAX + 64];
        snprintf(what, sizeof what, "cannot create %s in memory", tmp);
        h5fail(path, err, what);
        H5Pclose(fapl);
        return -1;
    }
    H5Pclose(fapl);

    xxh64 h;
    xxh_init(&h, 0);
    hash_meta(&h, meta, config);
    int32_t version = FDP_CKPT_FORMAT_VERSION, world = meta->world_size;
    int32_t image[3] = {meta->image_c, meta->image_h, meta->image_w};
    int rc = attr_write_str(file, "format", FDP_CKPT_FORMAT, path, err);
    if (!rc) rc = attr_write(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version, path, err);
    if (!rc) rc = attr_write(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->step, path, err);
    if (!rc) rc = attr_write(file, "epoch", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->epoch, path, err);
    if (!rc) rc = attr_write(file, "epoch_step", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->epoch_step, path, err);
    if (!rc) rc = attr_write(file, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &meta->seed, path, err);
    if (!rc) rc = attr_write(file, "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &world, path, err);
    if (!rc) rc = attr_write(file, "best_test_bpd", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &meta->best_test_bpd, path, err);
    if (!rc) rc = attr_write(file, "last_test_bpd", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &meta->last_test_bpd, path, err);
    if (!rc) rc = attr_write_str(file, "model_type", meta->model_type, path, err);
    if (!rc)
        rc = attr_write(file, "nonfinite_skipped", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->nonfinite_skipped, path,
                        err);
    if (!rc) rc = attr_write(file, "image_c", H5T_STD_I32LE, H5T_NATIVE_INT32, &image[0], path, err);
    if (!rc) rc = attr_write(file, "image_h", H5T_STD_I32LE, H5T_NATIVE_INT32, &image[1], path, err);
    if (!rc) rc = attr_write(file, "image_w", H5T_STD_I32LE, H5T_NATIVE_INT32, &image[2], path, err);
    if (!rc) rc = attr_write(file, "global_batch", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->global_batch, path, err);

    int n_par = 0, n_buf = 0;
    ds_info *par = table_infos(s->table, FDP_PARAM, &n_par), *buf = table_infos(s->table, FDP_BUFFER, &n_buf);
    for (int sec = 0; sec < SEC_COUNT && rc == 0; sec++) {
        const float *base = sec_data(s, sec);
        if (sec >= SEC_OPT_M && !base) continue;
        if (sec == SEC_BUFFERS) rc = write_section(file, sec, buf, n_buf, base, &h, path, err);
        else rc = write_section(file, sec, par, n_par, base, &h, path, err);
    }
    free(par);
    free(buf);

    if (!rc) {
        hid_t t = make_str_type(), sp = H5Screate(H5S_SCALAR);
        hid_t ds = (t < 0 || sp < 0) ? -1 : H5Dcreate2(file, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &config) < 0)
            rc = h5fail(path, err, "cannot write /config");
        if (ds >= 0) H5Dclose(ds);
        if (sp >= 0) H5Sclose(sp);
        if (t >= 0) H5Tclose(t);
    }
    if (!rc) {
        uint64_t sum = xxh_digest(&h);
        rc = attr_write(file, "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &sum, path, err);
    }
    if (!rc && H5Fflush(file, H5F_SCOPE_LOCAL) < 0) rc = h5fail(path, err, "cannot flush");
    if (!rc) { /* the flushed file, byte for byte (H5Fget_file_image flushes, then copies up to the EOA) */
        ssize_t n = H5Fget_file_image(file, NULL, 0);
        void *buf = n > 0 ? malloc((size_t)n) : NULL;
        if (n <= 0) rc = h5fail(path, err, "cannot take the file image");
        else if (!buf) rc = fdp_err_set(err, "checkpoint %s: out of memory for a %lld-byte file image", path, (long long)n);
        else if (H5Fget_file_image(file, buf, (size_t)n) != n) rc = h5fail(path, err, "cannot take the file image");
        if (!rc && fdp_h5_image_fix_superblock(buf, (size_t)n) != 0)
            rc = fdp_err_set(err, "checkpoint %s: the in-memory file image does not start with a version-2 superblock", path);
        if (!rc) {
            *image_out = buf;
            *size = (size_t)n;
        } else {
            free(buf);
        }
    }
    if (H5Fclose(file) < 0 && !rc) rc = h5fail(path, err, "cannot close the in-memory file");
    if (rc) {
        free(*image_out);
        *image_out = NULL;
        *size = 0;
    }
    return rc;
}




int fdp_ckpt_save(const char *path, const fdp_ckpt_state *s, const fdp_ckpt_meta *meta, const char *config_text,
                  fdp_err *err) {
    if (!path || !*path) return fdp_err_set(err, "checkpoint: empty path");
    if (!s || !s->table || !meta) return fdp_err_set(err, "checkpoint %s: nothing to save (NULL state, table or meta)", path);
    const fdp_params *t = s->table;
    if ((t->n_params > 0 && !s->params) || (t->n_buffers > 0 && !s->buffers))
        return fdp_err_set(err, "checkpoint %s: params or buffers missing (NULL)", path);
    if (!memchr(meta->model_type, 0, sizeof meta->model_type))
        return fdp_err_set(err, "checkpoint %s: model_type is not NUL-terminated", path);
    for (int i = 0; i < t->count; i++)
        if (!valid_name(t->entries[i].name))
            return fdp_err_set(err, "checkpoint %s: invalid parameter name '%s' (empty, '.' or contains '/')", path,
                               t->entries[i].name);
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fdp_err_set(err, "checkpoint %s: path too long", path);
    fdp_dir_of(path, dir, sizeof dir);

    /* Create the temporary ourselves first: a clean errno for the common failures
     * (no such directory, permission, read-only filesystem). */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fdp_err_set(err, "checkpoint %s: cannot create %s: %s", path, tmp, strerror(errno));
    close(fd);

    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    void *image = NULL;
    size_t size = 0;
    int rc = build_image(tmp, path, s, meta, config_text ? config_text : "", &image, &size, err);
    fdp_h5_quiet_end(&q);
    if (rc == 0) { /* the trailer: XXH64 of every byte before it (fdp_h5_add_trailer) */
        void *grown = realloc(image, size + FDP_H5_TRAILER_SIZE);
        if (!grown) rc = fdp_err_set(err, "checkpoint %s: out of memory for the file trailer", path);
        else image = grown;
        if (rc == 0) size = fdp_h5_add_trailer(image, size);
    }
    if (rc == 0) {
        int e = fdp_write_file_sync(tmp, image, size);
        if (e) rc = fdp_err_set(err, "checkpoint %s: cannot write %s (%zu bytes): %s", path, tmp, size, strerror(e));
    }
    free(image);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = fdp_err_set(err, "checkpoint %s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    int e = fdp_fsync_dir(dir);
    if (e)
        return fdp_err_set(err, "checkpoint %s: written and renamed, but cannot fsync directory %s: %s", path, dir,
                           strerror(e));
    return 0;
}

/* ---- reading -------------------------------------------------------------------- */
typedef struct name_list {
    char **names;
    int n, cap;
} name_list;

static herr_t collect_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    name_list *l = data;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->names = fdp_xrealloc(l->names, sizeof *l->names * (size_t)l->cap);
    }
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) return -1;
    l->n++;
    return 0;
}

static void name_list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static int list_links(hid_t loc, const char *gpath, name_list *l, const char *path, fdp_err *err) {
    memset(l, 0, sizeof *l);
    hid_t g = H5Gopen2(loc, gpath, H5P_DEFAULT);
    if (g < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot open group %s", gpath);
        return h5fail(path, err, what);
    }
    int rc = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, collect_cb, l) < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot list group %s", gpath);
        rc = h5fail(path, err, what);
        name_list_free(l);
    }
    H5Gclose(g);
    return rc;
}

static int in_set(const char *name, const char *const *set, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, set[i]) == 0) return 1;
    return 0;
}

/* Every object of a checkpoint is known: refuse anything else (the checksum
 * would not cover it). Also reports which optional sections exist. */
static int check_structure(hid_t file, int present[SEC_COUNT], const char *path, fdp_err *err) {
    static const char *const root_ok[] = {"params", "buffers", "optimizer", "ema", "config"};
    static const char *const opt_ok[] = {"m", "v"};
    name_list l;
    if (list_links(file, "/", &l, path, err)) return -1;
    int rc = 0, has_opt = 0;
    for (int i = 0; i < SEC_COUNT; i++) present[i] = 0;
    int has_config = 0;
    for (int i = 0; i < l.n && !rc; i++) {
        if (!in_set(l.names[i], root_ok, 5)) rc = fdp_err_set(err, "checkpoint %s: unexpected object /%s", path, l.names[i]);
        else if (strcmp(l.names[i], "params") == 0) present[SEC_PARAMS] = 1;
        else if (strcmp(l.names[i], "buffers") == 0) present[SEC_BUFFERS] = 1;
        else if (strcmp(l.names[i], "ema") == 0) present[SEC_EMA] = 1;
        else if (strcmp(l.names[i], "optimizer") == 0) has_opt = 1;
        else has_config = 1;
    }
    name_list_free(&l);
    if (rc) return rc;
    if (!present[SEC_PARAMS]) return fdp_err_set(err, "checkpoint %s: missing group /params", path);
    if (!present[SEC_BUFFERS]) return fdp_err_set(err, "checkpoint %s: missing group /buffers", path);
    if (!has_config) return fdp_err_set(err, "checkpoint %s: missing dataset /config", path);
    if (has_opt) {
        if (list_links(file, "/optimizer", &l, path, err)) return -1;
        for (int i = 0; i < l.n && !rc; i++) {
            if (!in_set(l.names[i], opt_ok, 2))
                rc = fdp_err_set(err, "checkpoint %s: unexpected object /optimizer/%s", path, l.names[i]);
            else if (strcmp(l.names[i], "m") == 0) present[SEC_OPT_M] = 1;
            else present[SEC_OPT_V] = 1;
        }
        name_list_free(&l);
    }
    return rc;
}

/* The datasets of a section, validated (float32, <= FDP_MAX_DIMS dims), sorted by name. */
static int list_section(hid_t file, int sec, ds_info **out, int *n_out, const char *path, fdp_err *err) {
    *out = NULL;
    *n_out = 0;
    name_list l;
    if (list_links(file, sec_path[sec], &l, path, err)) return -1;
    hid_t g = H5Gopen2(file, sec_path[sec], H5P_DEFAULT);
    if (g < 0) {
        name_list_free(&l);
        return h5fail(path, err, "cannot open a section group");
    }
    ds_info *v = fdp_xcalloc((size_t)(l.n ? l.n : 1), sizeof *v);
    int rc = 0;
    uint64_t file_size = obj_file_size(g);
    for (int i = 0; i < l.n && !rc; i++) {
        const char *name = l.names[i];
        ds_info *d = &v[i];
        if (strlen(name) >= FDP_NAME_MAX) {
            rc = fdp_err_set(err, "checkpoint %s: name too long in /%s: %.60s...", path, sec_path[sec], name);
            break;
        }
        snprintf(d->name, sizeof d->name, "%s", name);
        d->offset = -1;
        H5O_info_t oi;
        if (H5Oget_info_by_name(g, name, &oi, H5P_DEFAULT) < 0) {
            char what[FDP_NAME_MAX + 64];
            snprintf(what, sizeof what, "damaged file: cannot read /%s/%s", sec_path[sec], name);
            rc = h5fail(path, err, what);
            break;
        }
        if (oi.type != H5O_TYPE_DATASET) {
            rc = fdp_err_set(err, "checkpoint %s: /%s/%s is not a dataset", path, sec_path[sec], name);
            break;
        }
        hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
        if (ds < 0) {
            char what[FDP_NAME_MAX + 64];
            snprintf(what, sizeof what, "damaged file: cannot open /%s/%s", sec_path[sec], name);
            rc = h5fail(path, err, what);
            break;
        }
        hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds);
        if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) {
            rc = fdp_err_set(err, "checkpoint %s: /%s/%s is not float32", path, sec_path[sec], name);
        } else {
            H5S_class_t sc = H5Sget_simple_extent_type(sp);
            int nd = sc == H5S_SCALAR ? 0 : sc == H5S_SIMPLE ? H5Sget_simple_extent_ndims(sp) : -1;
            if (nd < 0 || nd > FDP_MAX_DIMS) {
                rc = fdp_err_set(err, "checkpoint %s: /%s/%s has an unsupported dataspace", path, sec_path[sec], name);
            } else {
                hsize_t dims[FDP_MAX_DIMS];
                if (nd > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
                d->ndim = nd;
                d->numel = 1;
                /* the float32 data must fit in the file: bounds the reads and the allocations */
                uint64_t max_numel = file_size / 4, numel = 1;
                for (int j = 0; j < nd && !rc; j++) {
                    if (dims[j] > 0 && numel > max_numel / dims[j])
                        rc = fdp_err_set(err, "checkpoint %s: damaged file: /%s/%s has a shape larger than the file",
                                         path, sec_path[sec], name);
                    numel *= dims[j];
                    d->dims[j] = (int64_t)dims[j];
                }
                if (!rc && numel > max_numel)
                    rc = fdp_err_set(err, "checkpoint %s: damaged file: /%s/%s has a shape larger than the file", path,
                                     sec_path[sec], name);
                d->numel = (int64_t)numel;
            }
        }
        if (t >= 0) H5Tclose(t);
        if (sp >= 0) H5Sclose(sp);
        H5Dclose(ds);
    }
    H5Gclose(g);
    int n = l.n;
    name_list_free(&l);
    if (rc) {
        free(v);
        return rc;
    }
    qsort(v, (size_t)n, sizeof *v, ds_info_cmp);
    *out = v;
    *n_out = n;
    return 0;
}

static int same_shape(const ds_info *a, const ds_info *b) {
    if (a->ndim != b->ndim) return 0;
    for (int j = 0; j < a->ndim; j++)
        if (a->dims[j] != b->dims[j]) return 0;
    return 1;
}

/* Compare a section of the file with its reference (both sorted by name): the
 * model's table (table != NULL) or, in verify, the file's /params. Copies the
 * reference offsets into the file infos. */
static int match_section(int sec, ds_info *file_v, int nf, const ds_info *ref, int nr, const fdp_params *table,
                         const char *path, fdp_err *err) {
    const char *sp = sec_path[sec];
    char s1[96], s2[96];
    int i = 0, j = 0;
    while (i < nf || j < nr) {
        int c = i == nf ? 1 : j == nr ? -1 : strcmp(file_v[i].name, ref[j].name);
        if (c < 0) { /* in the file, not in the reference */
            if (!table)
                return fdp_err_set(err, "checkpoint %s: /%s/%s has no counterpart in /params", path, sp, file_v[i].name);
            int k = fdp_params_find(table, file_v[i].name);
            return fdp_err_set(err, "checkpoint %s: checkpoint is of another model: /%s/%s is not %s of this model%s",
                               path, sp, file_v[i].name, sec == SEC_BUFFERS ? "a buffer" : "a parameter",
                               k >= 0 ? (table->entries[k].kind == FDP_BUFFER ? " (it is a buffer here)"
                                                                              : " (it is a parameter here)")
                                      : "");
        }
        if (c > 0) { /* in the reference, missing from the file */
            fmt_shape(s2, sizeof s2, ref[j].ndim, ref[j].dims);
            if (!table) return fdp_err_set(err, "checkpoint %s: /params/%s has no counterpart in /%s", path, ref[j].name, sp);
            return fdp_err_set(err, "checkpoint %s: checkpoint is of another model: /%s/%s (shape %s) is missing", path,
                               sp, ref[j].name, s2);
        }
        if (!same_shape(&file_v[i], &ref[j])) {
            fmt_shape(s1, sizeof s1, file_v[i].ndim, file_v[i].dims);
            fmt_shape(s2, sizeof s2, ref[j].ndim, ref[j].dims);
            if (!table)
                return fdp_err_set(err, "checkpoint %s: /%s/%s has shape %s but /params has %s", path, sp,
                                   file_v[i].name, s1, s2);
            return fdp_err_set(err,
                               "checkpoint %s: checkpoint is of another model: /%s/%s has shape %s in the checkpoint "
                               "but %s in this model",
                               path, sp, file_v[i].name, s1, s2);
        }
        file_v[i].offset = ref[j].offset;
        i++;
        j++;
    }
    return 0;
}

/* Read a section's datasets (sorted) into dest (+offset) or a scratch buffer, hashing them. */
static int read_section(hid_t file, int sec, const ds_info *v, int n, float *dest, float **scratch, int64_t *scratch_cap,
                        xxh64 *h, const char *path, fdp_err *err) {
    hid_t g = H5Gopen2(file, sec_path[sec], H5P_DEFAULT);
    if (g < 0) return h5fail(path, err, "cannot open a section group");
    hash_cstr0(h, sec_path[sec]);
    hash_u64(h, (uint64_t)n);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const ds_info *d = &v[i];
        hash_cstr0(h, d->name);
        hash_u64(h, (uint64_t)d->ndim);
        for (int j = 0; j < d->ndim; j++) hash_u64(h, (uint64_t)d->dims[j]);
        if (d->numel == 0) continue;
        float *buf;
        if (dest && d->offset >= 0) {
            buf = dest + d->offset;
        } else {
            if (d->numel > *scratch_cap) {
                free(*scratch);
                *scratch = malloc(sizeof(float) * (size_t)d->numel);
                *scratch_cap = *scratch ? d->numel : 0;
                if (!*scratch) {
                    rc = fdp_err_set(err, "checkpoint %s: out of memory reading /%s/%s", path, sec_path[sec], d->name);
                    break;
                }
            }
            buf = *scratch;
        }
        hid_t ds = H5Dopen2(g, d->name, H5P_DEFAULT);
        char what[FDP_NAME_MAX + 64];
        snprintf(what, sizeof what, "cannot read /%s/%s", sec_path[sec], d->name);
        if (ds < 0) {
            rc = h5fail(path, err, what);
            break;
        }
        if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) rc = h5fail(path, err, what);
        else xxh_update(h, buf, sizeof(float) * (size_t)d->numel);
        H5Dclose(ds);
    }
    H5Gclose(g);
    return rc;
}

static int has_hdf5_signature(const char *path) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[8];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = read(fd, b, 8);
    close(fd);
    return r == 8 && memcmp(b, sig, 8) == 0;
}

/* ---- the pass over the file's bytes before HDF5 opens it (flowdp/h5util.h) --------
 * Checks the file trailer (XXH64 of every byte before it: any changed byte is
 * refused here, before anything is parsed, the config included) and the global heap
 * collections (libhdf5 1.10.8 hangs on some damaged ones). The last file found whole
 * is remembered (path, inode, size, mtime): a load right after a verify does not
 * read the file twice. Returns 0 or -1 with err. */
static int check_bytes(const char *path, const struct stat *st, fdp_err *err) {
    static struct {
        char path[CKPT_PATH_MAX];
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
    } last;
    if (strcmp(last.path, path) == 0 && last.dev == st->st_dev && last.ino == st->st_ino && last.size == st->st_size &&
        last.mtime.tv_sec == st->st_mtim.tv_sec && last.mtime.tv_nsec == st->st_mtim.tv_nsec)
        return 0;
    fdp_h5_scan sc;
    int e = fdp_h5_prescan(path, UINT64_MAX, &sc);
    if (e) return fdp_err_set(err, "checkpoint %s: cannot read: %s", path, strerror(e));
    if (sc.trailer == FDP_H5_TRAILER_BAD)
        return fdp_err_set(err, "checkpoint %s: damaged file: its checksum does not match its bytes (changed or "
                                "corrupted after it was written); nothing was read from it",
                           path);
    if (sc.bad_gcol)
        return fdp_err_set(err, "checkpoint %s: damaged file: the HDF5 global heap at byte %llu is inconsistent", path,
                           (unsigned long long)(sc.bad_gcol - 1));
    snprintf(last.path, sizeof last.path, "%s", path);
    last.dev = st->st_dev;
    last.ino = st->st_ino;
    last.size = st->st_size;
    last.mtime = st->st_mtim;
    return 0;
}

/* Open a checkpoint read-only and check format, version and meta. */
static hid_t open_checked(const char *path, fdp_ckpt_meta *m, uint64_t *checksum, fdp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fdp_err_set(err, "checkpoint %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        fdp_err_set(err, "checkpoint %s: not a regular file", path);
        return -1;
    }
    if (check_bytes(path, &st, err) != 0) return -1;
    hid_t fapl = fdp_h5_fapl();
    if (fapl < 0) {
        h5fail(path, err, "cannot set up file access");
        return -1;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (file < 0) {
        char cause[600];
        fdp_h5_cause(cause, sizeof cause);
        H5Pclose(fapl);
        if (!has_hdf5_signature(path))
            fdp_err_set(err, "checkpoint %s: not an HDF5 file (%lld bytes, no HDF5 signature)", path, (long long)st.st_size);
        else
            fdp_err_set(err, "checkpoint %s: truncated or damaged HDF5 file (%lld bytes): %s", path,
                        (long long)st.st_size, cause);
        return -1;
    }
    H5Pclose(fapl);
    char format[64];
    int32_t version = 0, world = 0, image[3] = {0, 0, 0};
    memset(m, 0, sizeof *m);
    int rc = 0;
    htri_t has_format = H5Aexists(file, "format");
    if (has_format < 0) rc = h5fail(path, err, "damaged file: cannot read the root group");
    else if (has_format == 0) rc = fdp_err_set(err, "checkpoint %s: not a flowdp checkpoint (no 'format' attribute)", path);
    if (!rc) rc = attr_read_str(file, "format", format, sizeof format, path, err);
    if (!rc && strcmp(format, FDP_CKPT_FORMAT) != 0)
        rc = fdp_err_set(err, "checkpoint %s: not a flowdp checkpoint (format '%s', expected '%s')", path, format,
                         FDP_CKPT_FORMAT);
    if (!rc) rc = attr_read(file, "format_version", H5T_INTEGER, H5T_NATIVE_INT32, &version, path, err);
    if (!rc && version != FDP_CKPT_FORMAT_VERSION)
        rc = fdp_err_set(err, "checkpoint %s: unsupported format_version %d (this build reads %d)", path, (int)version,
                         FDP_CKPT_FORMAT_VERSION);
    if (!rc) rc = attr_read(file, "checksum", H5T_INTEGER, H5T_NATIVE_UINT64, checksum, path, err);
    if (!rc) rc = attr_read(file, "step", H5T_INTEGER, H5T_NATIVE_INT64, &m->step, path, err);
    if (!rc) rc = attr_read(file, "epoch", H5T_INTEGER, H5T_NATIVE_INT64, &m->epoch, path, err);
    if (!rc) rc = attr_read(file, "epoch_step", H5T_INTEGER, H5T_NATIVE_INT64, &m->epoch_step, path, err);
    if (!rc) rc = attr_read(file, "seed", H5T_INTEGER, H5T_NATIVE_UINT64, &m->seed, path, err);
    if (!rc) rc = attr_read(file, "world_size", H5T_INTEGER, H5T_NATIVE_INT32, &world, path, err);
    if (!rc) rc = attr_read(file, "best_test_bpd", H5T_FLOAT, H5T_NATIVE_DOUBLE, &m->best_test_bpd, path, err);
    if (!rc) rc = attr_read(file, "last_test_bpd", H5T_FLOAT, H5T_NATIVE_DOUBLE, &m->last_test_bpd, path, err);
    if (!rc) rc = attr_read_str(file, "model_type", m->model_type, sizeof m->model_type, path, err);
    if (!rc) rc = attr_read(file, "nonfinite_skipped", H5T_INTEGER, H5T_NATIVE_INT64, &m->nonfinite_skipped, path, err);
    if (!rc) rc = attr_read(file, "image_c", H5T_INTEGER, H5T_NATIVE_INT32, &image[0], path, err);
    if (!rc) rc = attr_read(file, "image_h", H5T_INTEGER, H5T_NATIVE_INT32, &image[1], path, err);
    if (!rc) rc = attr_read(file, "image_w", H5T_INTEGER, H5T_NATIVE_INT32, &image[2], path, err);
    if (!rc) rc = attr_read(file, "global_batch", H5T_INTEGER, H5T_NATIVE_INT64, &m->global_batch, path, err);
    m->world_size = world;
    m->image_c = image[0];
    m->image_h = image[1];
    m->image_w = image[2];
    if (rc) {
        H5Fclose(file);
        return -1;
    }
    return file;
}

/* Read /config into a malloc'd string. */
static int read_config(hid_t file, char **config, const char *path, fdp_err *err) {
    *config = NULL;
    hid_t ds = H5Dopen2(file, "config", H5P_DEFAULT);
    if (ds < 0) return h5fail(path, err, "cannot open /config");
    int rc = str_read(ds, 0, "/config", config, path, err);
    H5Dclose(ds);
    return rc;
}

/* Load (s != NULL) or verify (s == NULL) a checkpoint. */
static int ckpt_read(const char *path, const char *want, fdp_ckpt_state *s, fdp_ckpt_meta *meta_out, char **config_out,
                     fdp_err *err) {
    const fdp_params *table = s ? s->table : NULL;
    fdp_ckpt_meta m;
    uint64_t stored = 0;
    hid_t file = open_checked(path, &m, &stored, err);
    if (file < 0) return -1;
    int rc = 0;
    if (want && want[0] && strcmp(want, m.model_type) != 0)
        rc = fdp_err_set(err, "checkpoint %s: checkpoint is of another model: model_type '%s', this run is '%s'", path,
                         m.model_type, want);
    int present[SEC_COUNT] = {0};
    if (!rc) rc = check_structure(file, present, path, err);
    for (int sec = SEC_OPT_M; sec < SEC_COUNT && !rc && s; sec++)
        if (sec_data(s, sec) && !present[sec])
            rc = fdp_err_set(err, "checkpoint %s: has no /%s (saved without it); hint: check fdp_ckpt_sections first", path,
                             sec_path[sec]);

    char *config = NULL;
    if (!rc) rc = read_config(file, &config, path, err);
    xxh64 h;
    xxh_init(&h, 0);
    if (!rc) hash_meta(&h, &m, config);

    ds_info *ref_par = NULL, *ref_buf = NULL, *file_par = NULL;
    int n_ref_par = 0, n_ref_buf = 0, n_file_par = 0;
    if (table) {
        ref_par = table_infos(table, FDP_PARAM, &n_ref_par);
        ref_buf = table_infos(table, FDP_BUFFER, &n_ref_buf);
    }
    float *scratch = NULL;
    int64_t scratch_cap = 0;
    for (int sec = 0; sec < SEC_COUNT && !rc; sec++) {
        if (!present[sec]) continue;
        ds_info *v = NULL;
        int n = 0;
        rc = list_section(file, sec, &v, &n, path, err);
        if (rc) break;
        if (table) {
            if (sec == SEC_BUFFERS) rc = match_section(sec, v, n, ref_buf, n_ref_buf, table, path, err);
            else rc = match_section(sec, v, n, ref_par, n_ref_par, table, path, err);
        } else if (sec >= SEC_OPT_M) {
            rc = match_section(sec, v, n, file_par, n_file_par, NULL, path, err);
        }
        if (!rc) rc = read_section(file, sec, v, n, s ? sec_data(s, sec) : NULL, &scratch, &scratch_cap, &h, path, err);
        if (sec == SEC_PARAMS && !table) {
            file_par = v;
            n_file_par = n;
        } else {
            free(v);
        }
    }
    free(scratch);
    free(ref_par);
    free(ref_buf);
    free(file_par);
    H5Fclose(file);
    if (!rc) {
        uint64_t computed = xxh_digest(&h);
        if (computed != stored)
            rc = fdp_err_set(err, "checkpoint %s: corrupt: checksum mismatch (stored %016llx, computed %016llx)", path,
                             (unsigned long long)stored, (unsigned long long)computed);
    }
    if (!rc) {
        if (meta_out) *meta_out = m;
        if (config_out) {
            *config_out = config;
            config = NULL;
        }
    }
    free(config);
    return rc;
}

int fdp_ckpt_load_expect(const char *path, const char *expect_model_type, fdp_ckpt_state *s, fdp_ckpt_meta *meta,
                         char **config_text, fdp_err *err) {
    if (config_text) *config_text = NULL;
    if (!path || !s || !s->table) return fdp_err_set(err, "checkpoint %s: load needs a state with a table", path ? path : "(null)");
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int rc = ckpt_read(path, expect_model_type, s, meta, config_text, err);
    fdp_h5_quiet_end(&q);
    return rc;
}

int fdp_ckpt_load(const char *path, fdp_ckpt_state *s, fdp_ckpt_meta *meta, char **config_text, fdp_err *err) {
    return fdp_ckpt_load_expect(path, NULL, s, meta, config_text, err);
}

int fdp_ckpt_verify(const char *path, fdp_ckpt_meta *meta_out, fdp_err *err) {
    if (!path) return fdp_err_set(err, "checkpoint: NULL path");
    fdp_ckpt_meta m;
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int rc = ckpt_read(path, NULL, NULL, &m, NULL, err);
    fdp_h5_quiet_end(&q);
    if (!rc && meta_out) *meta_out = m;
    return rc;
}

int fdp_ckpt_read_header(const char *path, fdp_ckpt_meta *meta, char **config_text, fdp_err *err) {
    if (config_text) *config_text = NULL;
    if (!path) return fdp_err_set(err, "checkpoint: NULL path");
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    fdp_ckpt_meta m;
    uint64_t sum;
    char *config = NULL;
    int rc = -1;
    hid_t file = open_checked(path, &m, &sum, err);
    if (file >= 0) {
        rc = read_config(file, &config, path, err);
        H5Fclose(file);
    }
    fdp_h5_quiet_end(&q);
    if (rc == 0) {
        if (meta) *meta = m;
        if (config_text) {
            *config_text = config;
            config = NULL;
        }
    }
    free(config);
    return rc;
}

int fdp_ckpt_sections(const char *path, fdp_err *err) {
    if (!path) return fdp_err_set(err, "checkpoint: NULL path");
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    fdp_ckpt_meta m;
    uint64_t sum;
    int present[SEC_COUNT], rc = -1;
    hid_t file = open_checked(path, &m, &sum, err);
    if (file >= 0) {
        if (check_structure(file, present, path, err) == 0)
            rc = (present[SEC_OPT_M] ? FDP_CKPT_HAS_OPT_M : 0) | (present[SEC_OPT_V] ? FDP_CKPT_HAS_OPT_V : 0) |
                 (present[SEC_EMA] ? FDP_CKPT_HAS_EMA : 0);
        H5Fclose(file);
    }
    fdp_h5_quiet_end(&q);
    return rc;
}

/* ---- the checkpoint directory ---------------------------------------------------- */
int fdp_ckpt_path_for_step(const char *dir, int64_t step, char *out, size_t len) {
    if (!dir || step < 0 || !out) return -1;
    int n = snprintf(out, len, "%s/ckpt_%09lld.h5", dir, (long long)step);
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

/* "ckpt_<digits>.h5" -> step */
static int parse_ckpt_name(const char *name, int64_t *step) {
    if (strncmp(name, "ckpt_", 5) != 0) return 0;
    const char *p = name + 5;
    int64_t v = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (nd >= 18) return 0;
        v = v * 10 + (*p - '0');
        p++;
        nd++;
    }
    if (nd == 0 || strcmp(p, ".h5") != 0) return 0;
    *step = v;
    return 1;
}

/* "<anything>.h5.tmp.<digits>" -> the writer's pid */
static int parse_tmp_name(const char *name, long *pid) {
    const char *t = strstr(name, ".h5.tmp.");
    if (!t) return 0;
    const char *p = t + 8;
    if (!*p) return 0;
    long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000000L) return 0;
        v = v * 10 + (*p - '0');
    }
    *pid = v;
    return 1;
}

typedef struct ckpt_file {
    int64_t step;
    char name[256];
} ckpt_file;

static int ckpt_file_cmp_desc(const void *a, const void *b) {
    int64_t x = ((const ckpt_file *)a)->step, y = ((const ckpt_file *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* List ckpt_*.h5 of dir, newest step first; remove stale temporaries.
 * Returns 0, 1 when dir does not exist, -1 on error. */
static int scan_dir(const char *dir, ckpt_file **out, int *n_out, fdp_err *err) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 1;
        return fdp_err_set(err, "checkpoint directory %s: cannot open: %s", dir, strerror(errno));
    }
    ckpt_file *v = NULL;
    int n = 0, cap = 0;
    char full[CKPT_PATH_MAX];
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        long pid;
        if (parse_ckpt_name(e->d_name, &step) && strlen(e->d_name) < sizeof v->name) {
            if (n == cap) {
                cap = cap ? 2 * cap : 32;
                v = fdp_xrealloc(v, sizeof *v * (size_t)cap);
            }
            v[n].step = step;
            snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
            n++;
        } else if (parse_tmp_name(e->d_name, &pid) && pid != (long)getpid()) {
            struct stat st;
            if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full) continue;
            if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            double age = difftime(now, st.st_mtime);
            if (age > FDP_CKPT_STALE_TMP_SECONDS) {
                if (unlink(full) == 0)
                    fdp_warn("removed stale temporary file %s (left by a writer that was killed, %.0f s old)", full, age);
                else
                    fdp_warn("cannot remove stale temporary file %s: %s", full, strerror(errno));
            } else {
                fdp_debug("ignoring temporary file %s (%.0f s old: a writer may still be at work)", full, age);
            }
        }
    }
    closedir(d);
    if (n > 1) qsort(v, (size_t)n, sizeof *v, ckpt_file_cmp_desc);
    *out = v;
    *n_out = n;
    return 0;
}

int fdp_ckpt_find_newest_valid(const char *dir, char *out, size_t len, fdp_err *err) {
    ckpt_file *v;
    int n;
    int rc = scan_dir(dir, &v, &n, err);
    if (rc) return rc;
    char full[CKPT_PATH_MAX];
    rc = 1;
    for (int i = 0; i < n; i++) {
        if (snprintf(full, sizeof full, "%s/%s", dir, v[i].name) >= (int)sizeof full) continue;
        fdp_err e = {{0}};
        if (fdp_ckpt_verify(full, NULL, &e) != 0) {
            fdp_warn("skipping invalid checkpoint: %s", e.msg);
            continue;
        }
        if (strlen(full) >= len) rc = fdp_err_set(err, "checkpoint directory %s: path of %s does not fit", dir, v[i].name);
        else {
            memcpy(out, full, strlen(full) + 1);
            rc = 0;
        }
        break;
    }
    free(v);
    return rc;
}

int fdp_ckpt_prune(const char *dir, int keep_last, const char *keep_also, fdp_err *err) {
    if (keep_last < 1) return fdp_err_set(err, "checkpoint directory %s: prune needs keep_last >= 1 (got %d)", dir, keep_last);
    struct stat keep_st;
    int have_keep = keep_also && stat(keep_also, &keep_st) == 0;
    ckpt_file *v;
    int n;
    int rc = scan_dir(dir, &v, &n, err);
    if (rc == 1) return 0;
    if (rc) return rc;
    char full[CKPT_PATH_MAX];
    for (int i = keep_last; i < n; i++) {
        if (snprintf(full, sizeof full, "%s/%s", dir, v[i].name) >= (int)sizeof full) continue;
        struct stat st;
        if (have_keep && stat(full, &st) == 0 && st.st_dev == keep_st.st_dev && st.st_ino == keep_st.st_ino) continue;
        if (unlink(full) != 0 && errno != ENOENT) {
            rc = fdp_err_set(err, "checkpoint directory %s: cannot delete %s: %s", dir, v[i].name, strerror(errno));
            break;
        }
        fdp_debug("pruned %s", full);
    }
    free(v);
    return rc;
}


int fdp_ckpt_copy_atomic(const char *src, const char *dst, fdp_err *err) {
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid()) >= (int)sizeof tmp)
        return fdp_err_set(err, "checkpoint %s: path too long", dst);
    fdp_dir_of(dst, dir, sizeof dir);
    unlink(tmp);
    /* an independent file (never a hard link: editing or damaging one must not change
     * the other); copy_file clones the extents where the filesystem can (FICLONE) */
    int e = fdp_copy_file(src, tmp);
    if (e) {
        unlink(tmp);
        return fdp_err_set(err, "checkpoint %s: cannot copy %s to %s: %s", dst, src, tmp, strerror(e));
    }
    if (rename(tmp, dst) != 0) {
        e = errno;
        unlink(tmp);
        return fdp_err_set(err, "checkpoint %s: cannot rename %s over it: %s", dst, tmp, strerror(e));
    }
    e = fdp_fsync_dir(dir);
    if (e) return fdp_err_set(err, "checkpoint %s: written, but cannot fsync directory %s: %s", dst, dir, strerror(e));
    return 0;
}
