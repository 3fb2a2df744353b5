/* shard_write.c — writing the packed dataset (format: include/flowdp/shards.h):
 * one shard (written under a temporary name, fsynced, renamed) and the text
 * index. Every HDF5 sequence runs under fdp_hdf5_lock(). The reader is
 * shards.c, the index parser shard_index.c. */
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
#include "shards_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the shard checksum hashes labels as little-endian int32"
#endif

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
static int fsync_path(const char *path, int directory) {
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
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

