/* shards.c — the packed dataset (format: include/flowdp/shards.h): writing one
 * shard, writing and parsing the text index, and the streaming reader (a table
 * of shards, a bounded set of open files, reads grouped by shard and run,
 * checksums verified block by block). Every HDF5 sequence runs under
 * fdp_hdf5_lock(). */
#include "flowdp/h5util.h"
#include "flowdp/shards.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flowdp/hdf5_lock.h"
#include "flowdp/xxh64.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the shard checksum hashes labels as little-endian int32"
#endif

#define SH_PATH_MAX 4096

/* ---- HDF5 plumbing (caller holds the HDF5 lock; flowdp/h5util.h) ---------------- */
static int attr_write_i64(hid_t loc, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}
static int attr_write_u64(hid_t loc, const char *name, uint64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_UINT64, &v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}
static int attr_write_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    hid_t sp = -1, a = -1;
    int rc = -1;
    if (H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0 && (sp = H5Screate(H5S_SCALAR)) >= 0 &&
        (a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0 && H5Awrite(a, t, &v) >= 0)
        rc = 0;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    H5Tclose(t);
    return rc;
}
/* an integer attribute (any integer type in the file); -1 when missing or not an integer */
static int attr_read_int(hid_t loc, const char *name, int is_unsigned, void *out) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = -1;
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1)
        rc = H5Aread(a, is_unsigned ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT64, out) >= 0 ? 0 : -1;
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return rc;
}
/* a string attribute (variable or fixed length) into out; -1 when missing or not a string */
static int attr_read_str(hid_t loc, const char *name, char *out, size_t len) {
    out[0] = 0;
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            char *s = NULL;
            if (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 && H5Tset_cset(mt, H5Tget_cset(ft)) >= 0 &&
                H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(out, len, "%s", s);
                rc = 0;
            }
            if (s) H5free_memory(s);
            if (mt >= 0) H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            char *buf = calloc(n + 1, 1);
            hid_t mt = H5Tcopy(H5T_C_S1);
            if (buf && mt >= 0 && H5Tset_size(mt, n + 1) >= 0 && H5Tset_cset(mt, H5Tget_cset(ft)) >= 0 &&
                H5Aread(a, mt, buf) >= 0) {
                snprintf(out, len, "%s", buf);
                rc = 0;
            }
            if (mt >= 0) H5Tclose(mt);
            free(buf);
        }
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

static int fsync_path(const char *path, int directory) {
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}
static void dir_of(const char *path, char *out, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, len, ".");
    else if (slash == path)
        snprintf(out, len, "/");
    else
        snprintf(out, len, "%.*s", (int)(slash - path), path);
}

/* ---- writer -------------------------------------------------------------------- */
struct fdp_shard_writer {
    char path[SH_PATH_MAX], tmp[SH_PATH_MAX + 32];
    hid_t file, images;
    int64_t count, done;
    int h, w, c;
    int32_t *labels; /* (count): written at finish, after the images in the checksum */
    fdp_xxh64_state hash;
};

static void writer_close_h5(fdp_shard_writer *sw) {
    if (sw->images >= 0) H5Dclose(sw->images);
    if (sw->file >= 0) H5Fclose(sw->file);
    sw->images = sw->file = -1;
}

fdp_shard_writer *fdp_shard_writer_create(const char *path, int64_t count, int h, int w, int c, const char *source,
                                          const char *split, int64_t first_index, fdp_err *err) {
    if (count < 1 || h < 1 || w < 1 || c < 1) {
        fdp_err_set(err, "%s: cannot write a shard of %lld images of %dx%dx%d", path, (long long)count, h, w, c);
        return NULL;
    }
    fdp_shard_writer *sw = calloc(1, sizeof *sw);
    if (!sw) {
        fdp_err_set(err, "%s: out of memory", path);
        return NULL;
    }
    sw->file = sw->images = -1;
    sw->count = count;
    sw->h = h;
    sw->w = w;
    sw->c = c;
    snprintf(sw->path, sizeof sw->path, "%s", path);
    snprintf(sw->tmp, sizeof sw->tmp, "%s.tmp.%ld", path, (long)getpid());
    sw->labels = malloc(sizeof(int32_t) * (size_t)count);
    if (!sw->labels) {
        free(sw);
        fdp_err_set(err, "%s: out of memory", path);
        return NULL;
    }
    fdp_xxh64_init(&sw->hash, 0);
    const int64_t img = (int64_t)h * w * c;
    int64_t k = 16384 / img;
    if (k > 64) k = 64;
    if (k > count) k = count;
    if (k < 1) k = 1;
    char cause[256];
    fdp_hdf5_lock();
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), dcpl = H5Pcreate(H5P_DATASET_CREATE), sp = -1;
    hsize_t dims[4] = {(hsize_t)count, (hsize_t)h, (hsize_t)w, (hsize_t)c};
    hsize_t chunk[4] = {(hsize_t)k, (hsize_t)h, (hsize_t)w, (hsize_t)c};
    int ok = fapl >= 0 && dcpl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) >= 0 &&
             H5Pset_chunk(dcpl, 4, chunk) >= 0 && H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0 &&
             H5Pset_obj_track_times(dcpl, 0) >= 0;
    if (ok) sw->file = H5Fcreate(sw->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    ok = ok && sw->file >= 0 && (sp = H5Screate_simple(4, dims, NULL)) >= 0;
    if (ok) sw->images = H5Dcreate2(sw->file, "images", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ok = ok && sw->images >= 0 && attr_write_str(sw->file, "format", FDP_SHARD_FORMAT) == 0 &&
         attr_write_i64(sw->file, "version", FDP_SHARD_VERSION) == 0 &&
         attr_write_str(sw->file, "source", source ? source : "") == 0 &&
         attr_write_str(sw->file, "split", split ? split : "") == 0 && attr_write_i64(sw->file, "count", count) == 0 &&
         attr_write_i64(sw->file, "height", h) == 0 && attr_write_i64(sw->file, "width", w) == 0 &&
         attr_write_i64(sw->file, "channels", c) == 0 && attr_write_i64(sw->file, "first_index", first_index) == 0;
    if (!ok) fdp_h5_cause(cause, sizeof cause);
    if (sp >= 0) H5Sclose(sp);
    if (fapl >= 0) H5Pclose(fapl);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (!ok) {
        writer_close_h5(sw);
        unlink(sw->tmp);
    }
    fdp_h5_quiet_end(&q);
    fdp_hdf5_unlock();
    if (!ok) {
        fdp_err_set(err, "%s: cannot create the shard (as %s): %s", path, sw->tmp, cause);
        free(sw->labels);
        free(sw);
        return NULL;
    }
    return sw;
}

int fdp_shard_writer_append(fdp_shard_writer *sw, const uint8_t *images_nhwc, const int32_t *labels, int64_t n,
                            fdp_err *err) {
    if (n <= 0) return 0;
    if (sw->done + n > sw->count)
        return fdp_err_set(err, "%s: %lld images appended to a shard of %lld", sw->path, (long long)(sw->done + n),
                           (long long)sw->count);
    const size_t img = (size_t)sw->h * sw->w * sw->c;
    char cause[256];
    fdp_hdf5_lock();
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    hsize_t start[4] = {(hsize_t)sw->done, 0, 0, 0}, cnt[4] = {(hsize_t)n, (hsize_t)sw->h, (hsize_t)sw->w, (hsize_t)sw->c};
    hid_t fsp = H5Dget_space(sw->images), msp = H5Screate_simple(4, cnt, NULL);
    int ok = fsp >= 0 && msp >= 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL) >= 0 &&
             H5Dwrite(sw->images, H5T_NATIVE_UINT8, msp, fsp, H5P_DEFAULT, images_nhwc) >= 0;
    if (!ok) fdp_h5_cause(cause, sizeof cause);
    if (fsp >= 0) H5Sclose(fsp);
    if (msp >= 0) H5Sclose(msp);
    fdp_h5_quiet_end(&q);
    fdp_hdf5_unlock();
    if (!ok)
        return fdp_err_set(err, "%s: cannot write images [%lld, %lld): %s", sw->path, (long long)sw->done,
                           (long long)(sw->done + n), cause);
    fdp_xxh64_update(&sw->hash, images_nhwc, img * (size_t)n);
    memcpy(sw->labels + sw->done, labels, sizeof(int32_t) * (size_t)n);
    sw->done += n;
    return 0;
}

void fdp_shard_writer_abort(fdp_shard_writer *sw) {
    if (!sw) return;
    fdp_hdf5_lock();
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    writer_close_h5(sw);
    fdp_h5_quiet_end(&q);
    fdp_hdf5_unlock();
    unlink(sw->tmp);
    free(sw->labels);
    free(sw);
}

int fdp_shard_writer_finish(fdp_shard_writer *sw, uint64_t *checksum_out, fdp_err *err) {
    if (sw->done != sw->count) {
        fdp_err_set(err, "%s: only %lld of %lld images were written", sw->path, (long long)sw->done,
                    (long long)sw->count);
        fdp_shard_writer_abort(sw);
        return -1;
    }
    fdp_xxh64_update(&sw->hash, sw->labels, sizeof(int32_t) * (size_t)sw->count);
    uint64_t sum = fdp_xxh64_digest(&sw->hash);
    char cause[256] = "";
    fdp_hdf5_lock();
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    hsize_t dims[1] = {(hsize_t)sw->count};
    hid_t sp = H5Screate_simple(1, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    int ok = sp >= 0 && dcpl >= 0 && H5Pset_obj_track_times(dcpl, 0) >= 0;
    if (ok) ds = H5Dcreate2(sw->file, "labels", H5T_STD_I32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ok = ok && ds >= 0 && H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, sw->labels) >= 0 &&
         attr_write_u64(sw->file, "checksum", sum) == 0;
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    ok = ok && H5Fflush(sw->file, H5F_SCOPE_LOCAL) >= 0;
    if (!ok) fdp_h5_cause(cause, sizeof cause);
    if (sw->images >= 0 && H5Dclose(sw->images) < 0 && ok) ok = 0, fdp_h5_cause(cause, sizeof cause);
    sw->images = -1;
    if (sw->file >= 0 && H5Fclose(sw->file) < 0 && ok) ok = 0, fdp_h5_cause(cause, sizeof cause);
    sw->file = -1;
    fdp_h5_quiet_end(&q);
    fdp_hdf5_unlock();
    if (ok && fsync_path(sw->tmp, 0) != 0) ok = 0, snprintf(cause, sizeof cause, "fsync: %s", strerror(errno));
    if (ok && rename(sw->tmp, sw->path) != 0) ok = 0, snprintf(cause, sizeof cause, "rename: %s", strerror(errno));
    if (ok) {
        char dir[SH_PATH_MAX];
        dir_of(sw->path, dir, sizeof dir);
        fsync_path(dir, 1);
    }
    if (!ok) {
        fdp_err_set(err, "%s: cannot finish the shard: %s", sw->path, cause);
        unlink(sw->tmp);
    } else if (checksum_out) {
        *checksum_out = sum;
    }
    free(sw->labels);
    free(sw);
    return ok ? 0 : -1;
}

/* ---- the index ------------------------------------------------------------------- */
int fdp_shard_index_write(const char *path, const char *split, int h, int w, int c, const fdp_shard_entry *shards,
                          int n_shards, char *const *class_names, int n_classes, fdp_err *err) {
    char tmp[SH_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return fdp_err_set(err, "%s: cannot write the index: %s", tmp, strerror(errno));
    int64_t total = 0;
    for (int i = 0; i < n_shards; i++) total += shards[i].count;
    fprintf(f, "# flowdp shard index (written by flowdp-pack; format: README.md \"Packed datasets\")\n");
    fprintf(f, "%s\nsplit %s\nheight %d\nwidth %d\nchannels %d\ncount %lld\n", FDP_SHARD_INDEX_MAGIC, split, h, w, c,
            (long long)total);
    for (int i = 0; i < n_classes; i++) fprintf(f, "class %d %s\n", i, class_names[i]);
    for (int i = 0; i < n_shards; i++) fprintf(f, "shard %s %lld\n", shards[i].name, (long long)shards[i].count);
    int bad = ferror(f) != 0;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return fdp_err_set(err, "%s: cannot write the index: %s", path, strerror(e));
    }
    char dir[SH_PATH_MAX];
    dir_of(path, dir, sizeof dir);
    fsync_path(dir, 1);
    return 0;
}

/* ---- reader ------------------------------------------------------------------------ */
typedef struct shard {
    char *path;
    int64_t count, first; /* samples, global index of the first */
    hid_t file, images;   /* -1 when closed */
    uint64_t last_used;
} shard;

struct fdp_shards {
    char index[SH_PATH_MAX];
    int h, w, c;
    int64_t n;        /* samples after the limit */
    int nshards;      /* shards holding samples [0, n) */
    shard *s;
    int open_count;
    uint64_t tick;
    uint8_t *buf;     /* (run of up to BUF_IMAGES, h, w, c) staging for reads */
    int64_t buf_images;
    int64_t *order;   /* (cap) sort scratch */
    int order_cap;
};

int64_t fdp_shards_count(const fdp_shards *s) { return s->n; }
void fdp_shards_shape(const fdp_shards *s, int *c, int *h, int *w) {
    *c = s->c;
    *h = s->h;
    *w = s->w;
}
const char *fdp_shards_index_path(const fdp_shards *s) { return s->index; }
int fdp_shards_num(const fdp_shards *s) { return s->nshards; }

/* caller holds the lock */
static void shard_close(fdp_shards *s, shard *sh) {
    if (sh->images >= 0) H5Dclose(sh->images);
    if (sh->file >= 0) {
        H5Fclose(sh->file);
        s->open_count--;
    }
    sh->images = sh->file = -1;
}

/* Open sh (closing the least recently used shard when FDP_SHARDS_MAX_OPEN are
 * open). check: also compare its attributes and shapes with the index.
 * Caller holds the lock and has silenced HDF5's error printing. */
static int shard_open(fdp_shards *s, shard *sh, int check, fdp_err *err) {
    sh->last_used = ++s->tick;
    if (sh->file >= 0) return 0;
    if (s->open_count >= FDP_SHARDS_MAX_OPEN) {
        shard *lru = NULL;
        for (int i = 0; i < s->nshards; i++)
            if (s->s[i].file >= 0 && (!lru || s->s[i].last_used < lru->last_used)) lru = &s->s[i];
        if (lru) shard_close(s, lru);
    }
    char cause[256];
    if (check) { /* the first open: precise messages (a reopen later skips these two extra file accesses) */
        struct stat st;
        if (stat(sh->path, &st) != 0)
            return fdp_err_set(err, "%s: shard listed in %s: %s", sh->path, s->index, strerror(errno));
        if (H5Fis_hdf5(sh->path) <= 0)
            return fdp_err_set(err, "%s: shard listed in %s is not an HDF5 file (truncated or corrupt?)", sh->path,
                               s->index);
    }
    /* strong close; no file locks: shards are immutable once renamed into place, and many
     * ranks open them read-only, often on parallel file systems without POSIX locks */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) {
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
        H5Pset_file_locking(fapl, 0, 1);
    }
    sh->file = fapl >= 0 ? H5Fopen(sh->path, H5F_ACC_RDONLY, fapl) : -1;
    if (fapl >= 0) H5Pclose(fapl);
    if (sh->file < 0) return fdp_err_set(err, "%s: cannot open the shard: %s", sh->path, fdp_h5_cause(cause, sizeof cause));
    s->open_count++;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0) H5Pset_chunk_cache(dapl, 521, FDP_SHARDS_CHUNK_CACHE, 1.0);
    sh->images = H5Lexists(sh->file, "images", H5P_DEFAULT) > 0 ? H5Dopen2(sh->file, "images", dapl) : -1;
    if (dapl >= 0) H5Pclose(dapl);
    if (sh->images < 0) {
        shard_close(s, sh);
        return fdp_err_set(err, "%s: not a flowdp shard: no dataset 'images'", sh->path);
    }
    if (!check) return 0;
    char fmt[64];
    int64_t version = 0, count = -1, h = -1, w = -1, c = -1;
    if (attr_read_str(sh->file, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, FDP_SHARD_FORMAT) != 0) {
        shard_close(s, sh);
        return fdp_err_set(err, "%s: not a flowdp shard (attribute format is not \"%s\")", sh->path, FDP_SHARD_FORMAT);
    }
    if (attr_read_int(sh->file, "version", 0, &version) != 0 || version != FDP_SHARD_VERSION) {
        shard_close(s, sh);
        return fdp_err_set(err, "%s: shard format version %lld, this flowdp reads version %d", sh->path,
                           (long long)version, FDP_SHARD_VERSION);
    }
    if (attr_read_int(sh->file, "count", 0, &count) != 0 || attr_read_int(sh->file, "height", 0, &h) != 0 ||
        attr_read_int(sh->file, "width", 0, &w) != 0 || attr_read_int(sh->file, "channels", 0, &c) != 0) {
        shard_close(s, sh);
        return fdp_err_set(err, "%s: shard attributes count/height/width/channels missing or not integers", sh->path);
    }
    hid_t sp = H5Dget_space(sh->images), t = H5Dget_type(sh->images);
    hsize_t dims[4] = {0, 0, 0, 0};
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank == 4) H5Sget_simple_extent_dims(sp, dims, NULL);
    int u8 = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_NONE;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (rank != 4 || !u8) {
        shard_close(s, sh);
        return fdp_err_set(err, "%s: dataset 'images' must be uint8 of rank 4 (N, H, W, C)", sh->path);
    }
    if ((int64_t)dims[0] != sh->count || (int64_t)dims[1] != s->h || (int64_t)dims[2] != s->w ||
        (int64_t)dims[3] != s->c || count != sh->count || h != s->h || w != s->w || c != s->c) {
        shard_close(s, sh);
        return fdp_err_set(err,
                           "%s: shard holds images (%llu, %llu, %llu, %llu) (attributes: count %lld, %lldx%lldx%lld) "
                           "but %s lists it with %lld images of %dx%dx%d (HxWxC)",
                           sh->path, (unsigned long long)dims[0], (unsigned long long)dims[1],
                           (unsigned long long)dims[2], (unsigned long long)dims[3], (long long)count, (long long)h,
                           (long long)w, (long long)c, s->index, (long long)sh->count, s->h, s->w, s->c);
    }
    hid_t lab = H5Lexists(sh->file, "labels", H5P_DEFAULT) > 0 ? H5Dopen2(sh->file, "labels", H5P_DEFAULT) : -1;
    hsize_t ldim = 0;
    int lrank = -1, i32 = 0;
    if (lab >= 0) {
        hid_t lsp = H5Dget_space(lab), lt = H5Dget_type(lab);
        lrank = lsp >= 0 ? H5Sget_simple_extent_ndims(lsp) : -1;
        if (lrank == 1) H5Sget_simple_extent_dims(lsp, &ldim, NULL);
        i32 = lt >= 0 && H5Tget_class(lt) == H5T_INTEGER && H5Tget_size(lt) == 4 && H5Tget_sign(lt) == H5T_SGN_2;
        if (lsp >= 0) H5Sclose(lsp);
        if (lt >= 0) H5Tclose(lt);
        H5Dclose(lab);
    }
    if (lrank != 1 || !i32 || (int64_t)ldim != sh->count) {
        shard_close(s, sh);
        return fdp_err_set(err, "%s: dataset 'labels' must be int32 (%lld)", sh->path, (long long)sh->count);
    }
    return 0;
}

static int parse_index(fdp_shards *s, const char *path, shard **out, int *n_out, fdp_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return fdp_err_set(err, "%s: cannot open the shard index: %s", path, strerror(errno));
    char dir[SH_PATH_MAX];
    dir_of(path, dir, sizeof dir);
    char line[8192];
    int lineno = 0, have_magic = 0, n = 0, cap = 0;
    int64_t declared = -1, sum = 0;
    shard *v = NULL;
    int rc = 0;
    s->h = s->w = s->c = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = fdp_err_set(err, "%s:%d: line too long", path, lineno);
            break;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!line[0] || line[0] == '#') continue;
        if (!have_magic) {
            if (strcmp(line, FDP_SHARD_INDEX_MAGIC) != 0) {
                rc = fdp_err_set(err, "%s:%d: not a flowdp shard index (expected \"%s\" first, found \"%.60s\")", path,
                                 lineno, FDP_SHARD_INDEX_MAGIC, line);
                break;
            }
            have_magic = 1;
            continue;
        }
        char key[32], name[1024], extra[8];
        long long a = 0;
        int k = sscanf(line, "%31s", key);
        if (k != 1) continue;
        if (strcmp(key, "split") == 0 || strcmp(key, "class") == 0) continue;
        if (strcmp(key, "height") == 0 || strcmp(key, "width") == 0 || strcmp(key, "channels") == 0 ||
            strcmp(key, "count") == 0) {
            if (sscanf(line, "%*s %lld %7s", &a, extra) != 1 || a < 1 || a > (strcmp(key, "count") ? 65536 : (1LL << 40))) {
                rc = fdp_err_set(err, "%s:%d: bad %s line: \"%.60s\"", path, lineno, key, line);
                break;
            }
            if (key[0] == 'h') s->h = (int)a;
            else if (key[0] == 'w') s->w = (int)a;
            else if (key[0] == 'c' && key[1] == 'h') s->c = (int)a;
            else declared = a;
            continue;
        }
        if (strcmp(key, "shard") == 0) {
            if (sscanf(line, "%*s %1023s %lld %7s", name, &a, extra) != 2 || a < 1 || strlen(name) >= 256) {
                rc = fdp_err_set(err, "%s:%d: bad shard line (expected \"shard FILE COUNT\"): \"%.60s\"", path, lineno,
                                 line);
                break;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                shard *nv = realloc(v, sizeof *v * (size_t)cap);
                if (!nv) {
                    rc = fdp_err_set(err, "%s: out of memory", path);
                    break;
                }
                v = nv;
            }
            char full[SH_PATH_MAX + 1100];
            snprintf(full, sizeof full, "%s/%s", dir, name);
            v[n].path = strdup(name[0] == '/' ? name : full);
            v[n].count = a;
            v[n].first = sum;
            v[n].file = v[n].images = -1;
            v[n].last_used = 0;
            if (!v[n].path) {
                rc = fdp_err_set(err, "%s: out of memory", path);
                break;
            }
            n++;
            sum += a;
            continue;
        }
        rc = fdp_err_set(err, "%s:%d: unknown record \"%s\"", path, lineno, key);
        break;
    }
    if (rc == 0 && ferror(f)) rc = fdp_err_set(err, "%s: read error", path);
    fclose(f);
    if (rc == 0 && !have_magic) rc = fdp_err_set(err, "%s: empty file, not a flowdp shard index", path);
    if (rc == 0 && (s->h < 1 || s->w < 1 || s->c < 1 || declared < 0))
        rc = fdp_err_set(err, "%s: the index lacks a height, width, channels or count line", path);
    if (rc == 0 && n == 0) rc = fdp_err_set(err, "%s: the index lists no shards", path);
    if (rc == 0 && declared != sum)
        rc = fdp_err_set(err, "%s: count %lld but the shards listed hold %lld images", path, (long long)declared,
                         (long long)sum);
    if (rc != 0) {
        for (int i = 0; i < n; i++) free(v[i].path);
        free(v);
        return -1;
    }
    *out = v;
    *n_out = n;
    return 0;
}

void fdp_shards_close(fdp_shards *s) {
    if (!s) return;
    fdp_hdf5_lock();
    for (int i = 0; i < s->nshards; i++) shard_close(s, &s->s[i]);
    fdp_hdf5_unlock();
    for (int i = 0; i < s->nshards; i++) free(s->s[i].path);
    free(s->s);
    free(s->buf);
    free(s->order);
    free(s);
}

int fdp_shards_open(const char *path, int train, int64_t limit, fdp_shards **out, fdp_err *err) {
    *out = NULL;
    fdp_shards *s = calloc(1, sizeof *s);
    if (!s) return fdp_err_set(err, "%s: out of memory", path);
    struct stat st;
    if (stat(path, &st) != 0) {
        free(s);
        return fdp_err_set(err, "%s: cannot open the shard index: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        const char *sep = path[strlen(path) - 1] == '/' ? "" : "/";
        if (snprintf(s->index, sizeof s->index, "%s%s%s", path, sep, train ? "train.index" : "test.index") >=
            (int)sizeof s->index) {
            free(s);
            return fdp_err_set(err, "%s: path too long", path);
        }
    } else if (snprintf(s->index, sizeof s->index, "%s", path) >= (int)sizeof s->index) {
        free(s);
        return fdp_err_set(err, "%s: path too long", path);
    }
    int n = 0;
    if (parse_index(s, s->index, &s->s, &n, err) != 0) {
        free(s);
        return -1;
    }
    s->nshards = n;
    int64_t total = s->s[n - 1].first + s->s[n - 1].count;
    s->n = limit > 0 && limit < total ? limit : total;
    /* every shard, even those past the limit, must be what the index says */
    int rc = 0;
    fdp_hdf5_lock();
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = shard_open(s, &s->s[i], 1, err);
        if (rc == 0 && s->open_count >= FDP_SHARDS_MAX_OPEN) shard_close(s, &s->s[i]);
    }
    fdp_h5_quiet_end(&q);
    fdp_hdf5_unlock();
    if (rc != 0) {
        fdp_shards_close(s);
        return -1;
    }
    /* drop the shards past the limit from the table */
    while (s->nshards > 1 && s->s[s->nshards - 1].first >= s->n) {
        fdp_hdf5_lock();
        shard_close(s, &s->s[s->nshards - 1]);
        fdp_hdf5_unlock();
        free(s->s[--s->nshards].path);
    }
    int64_t img = (int64_t)s->h * s->w * s->c;
    s->buf_images = (1 << 20) / img > 1 ? (1 << 20) / img : 1; /* ~1 MiB staging */
    s->buf = malloc((size_t)(s->buf_images * img));
    if (!s->buf) {
        fdp_shards_close(s);
        return fdp_err_set(err, "%s: out of memory", path);
    }
    *out = s;
    return 0;
}

/* the shard holding global sample g (binary search) */
static int shard_of(const fdp_shards *s, int64_t g) {
    int lo = 0, hi = s->nshards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->s[mid].first <= g)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* read images [a, a+n) of shard sh into dst (n, h, w, c); caller holds the lock, quiet */
static int read_run(fdp_shards *s, shard *sh, int64_t a, int64_t n, uint8_t *dst, fdp_err *err) {
    if (shard_open(s, sh, 0, err) != 0) return -1;
    hsize_t start[4] = {(hsize_t)a, 0, 0, 0}, cnt[4] = {(hsize_t)n, (hsize_t)s->h, (hsize_t)s->w, (hsize_t)s->c};
    hid_t fsp = H5Dget_space(sh->images), msp = H5Screate_simple(4, cnt, NULL);
    int ok = fsp >= 0 && msp >= 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL) >= 0 &&
             H5Dread(sh->images, H5T_NATIVE_UINT8, msp, fsp, H5P_DEFAULT, dst) >= 0;
    char cause[256];
    if (!ok) fdp_h5_cause(cause, sizeof cause);
    if (fsp >= 0) H5Sclose(fsp);
    if (msp >= 0) H5Sclose(msp);
    if (!ok)
        return fdp_err_set(err, "%s: cannot read images [%lld, %lld): %s", sh->path, (long long)a, (long long)(a + n),
                           cause);
    return 0;
}

static int read_labels(shard *sh, int64_t a, int64_t n, int32_t *dst, fdp_err *err) {
    hid_t ds = H5Dopen2(sh->file, "labels", H5P_DEFAULT);
    hsize_t start[1] = {(hsize_t)a}, cnt[1] = {(hsize_t)n};
    hid_t fsp = ds >= 0 ? H5Dget_space(ds) : -1, msp = H5Screate_simple(1, cnt, NULL);
    int ok = ds >= 0 && fsp >= 0 && msp >= 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL) >= 0 &&
             H5Dread(ds, H5T_NATIVE_INT32, msp, fsp, H5P_DEFAULT, dst) >= 0;
    char cause[256];
    if (!ok) fdp_h5_cause(cause, sizeof cause);
    if (fsp >= 0) H5Sclose(fsp);
    if (msp >= 0) H5Sclose(msp);
    if (ds >= 0) H5Dclose(ds);
    if (!ok)
        return fdp_err_set(err, "%s: cannot read labels [%lld, %lld): %s", sh->path, (long long)a, (long long)(a + n),
                           cause);
    return 0;
}

/* (n, h, w, c) -> image i of out (c, h, w) */
static void hwc_to_chw(const uint8_t *src, int h, int w, int c, uint8_t *dst) {
    if (c == 1) {
        memcpy(dst, src, (size_t)h * w);
        return;
    }
    const int64_t plane = (int64_t)h * w;
    for (int64_t p = 0; p < plane; p++)
        for (int k = 0; k < c; k++) dst[k * plane + p] = src[p * c + k];
}

static int cmp_i64_by_value(const void *a, const void *b, const int64_t *key) {
    int64_t x = key[*(const int64_t *)a], y = key[*(const int64_t *)b];
    return x < y ? -1 : x > y;
}
/* insertion/merge-free sort of positions by idx (batches are small) */
static void sort_positions(int64_t *pos, int n, const int64_t *idx) {
    for (int i = 1; i < n; i++) {
        int64_t p = pos[i];
        int j = i - 1;
        while (j >= 0 && cmp_i64_by_value(&pos[j], &p, idx) > 0) {
            pos[j + 1] = pos[j];
            j--;
        }
        pos[j + 1] = p;
    }
}

int fdp_shards_read(fdp_shards *s, const int64_t *idx, int count, uint8_t *out_nchw, int32_t *labels, fdp_err *err) {
    if (count <= 0) return 0;
    for (int i = 0; i < count; i++)
        if (idx[i] < 0 || idx[i] >= s->n)
            return fdp_err_set(err, "%s: sample index %lld out of range [0, %lld)", s->index, (long long)idx[i],
                               (long long)s->n);
    if (count > s->order_cap) {
        free(s->order);
        s->order = malloc(sizeof(int64_t) * (size_t)count);
        if (!s->order) {
            s->order_cap = 0;
            return fdp_err_set(err, "%s: out of memory", s->index);
        }
        s->order_cap = count;
    }
    /* sorted positions: contiguous increasing runs of global indices are one read each */
    int sorted = 1;
    for (int i = 0; i < count; i++) {
        s->order[i] = i;
        if (i && idx[i] != idx[i - 1] + 1) sorted = 0;
    }
    if (!sorted) sort_positions(s->order, count, idx);
    const int64_t img = (int64_t)s->h * s->w * s->c;
    int rc = 0;
    fdp_hdf5_lock();
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    for (int i = 0; i < count && rc == 0;) {
        int64_t g = idx[s->order[i]];
        int si = shard_of(s, g);
        shard *sh = &s->s[si];
        int64_t a = g - sh->first, n = 1;
        while (i + n < count && n < s->buf_images && idx[s->order[i + n]] == g + n && g + n < sh->first + sh->count) n++;
        rc = read_run(s, sh, a, n, s->buf, err);
        if (rc == 0 && labels) {
            int32_t lb[64];
            for (int64_t j0 = 0; j0 < n && rc == 0; j0 += 64) {
                int64_t m = n - j0 < 64 ? n - j0 : 64;
                rc = read_labels(sh, a + j0, m, lb, err);
                for (int64_t j = 0; j < m && rc == 0; j++) labels[s->order[i + j0 + j]] = lb[j];
            }
        }
        for (int64_t j = 0; j < n && rc == 0; j++)
            hwc_to_chw(s->buf + j * img, s->h, s->w, s->c, out_nchw + s->order[i + j] * img);
        i += (int)n;
    }
    fdp_h5_quiet_end(&q);
    fdp_hdf5_unlock();
    return rc;
}

int fdp_shards_verify(fdp_shards *s, int part, int nparts, fdp_err *err) {
    if (nparts < 1) nparts = 1;
    const int64_t img = (int64_t)s->h * s->w * s->c;
    int32_t *lab = NULL;
    int rc = 0;
    for (int i = part; i < s->nshards && rc == 0; i += nparts) {
        shard *sh = &s->s[i];
        fdp_xxh64_state h;
        fdp_xxh64_init(&h, 0);
        uint64_t stored = 0;
        fdp_hdf5_lock();
        fdp_h5_quiet q;
        fdp_h5_quiet_begin(&q);
        rc = shard_open(s, sh, 0, err);
        if (rc == 0 && attr_read_int(sh->file, "checksum", 1, &stored) != 0)
            rc = fdp_err_set(err, "%s: shard has no integer attribute 'checksum'", sh->path);
        fdp_h5_quiet_end(&q);
        fdp_hdf5_unlock();
        /* block by block, releasing the lock in between so that a training thread is not held up */
        for (int64_t a = 0; a < sh->count && rc == 0; a += s->buf_images) {
            int64_t n = sh->count - a < s->buf_images ? sh->count - a : s->buf_images;
            fdp_hdf5_lock();
            fdp_h5_quiet_begin(&q);
            rc = read_run(s, sh, a, n, s->buf, err);
            fdp_h5_quiet_end(&q);
            fdp_hdf5_unlock();
            if (rc == 0) fdp_xxh64_update(&h, s->buf, (size_t)(n * img));
        }
        if (rc == 0) {
            lab = malloc(sizeof(int32_t) * (size_t)sh->count);
            if (!lab) {
                rc = fdp_err_set(err, "%s: out of memory", sh->path);
                break;
            }
            fdp_hdf5_lock();
            fdp_h5_quiet_begin(&q);
            rc = shard_open(s, sh, 0, err);
            if (rc == 0) rc = read_labels(sh, 0, sh->count, lab, err);
            fdp_h5_quiet_end(&q);
            fdp_hdf5_unlock();
            if (rc == 0) fdp_xxh64_update(&h, lab, sizeof(int32_t) * (size_t)sh->count);
            free(lab);
            lab = NULL;
        }
        if (rc == 0) {
            uint64_t got = fdp_xxh64_digest(&h);
            if (got != stored)
                rc = fdp_err_set(err,
                                 "%s: shard checksum mismatch (stored %016llx, computed %016llx): the file is corrupt; "
                                 "pack it again",
                                 sh->path, (unsigned long long)stored, (unsigned long long)got);
        }
    }
    return rc;
}
