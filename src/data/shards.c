/* shards.c — the streaming reader of the packed dataset (format:
 * include/flowdp/shards.h): a table of shards, a bounded set of open files,
 * reads grouped by shard and run, checksums verified block by block. Every HDF5
 * sequence runs under fdp_hdf5_lock(). The index is parsed by shard_index.c,
 * shards are written by shard_write.c. */
#include "flowdp/h5util.h"
#include "flowdp/shards.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flowdp/hdf5_lock.h"
#include "flowdp/xxh64.h"
#include "data_open.h"
#include "shards_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the shard checksum hashes labels as little-endian int32"
#endif

/* ---- HDF5 plumbing (caller holds the HDF5 lock; flowdp/h5util.h) ---------------- */
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
        /* H5Fis_hdf5, H5Fopen and the prescan open the path themselves: a FIFO would hang them */
        if (!S_ISREG(st.st_mode))
            return fdp_err_set(err, "%s: shard listed in %s is %s, not a regular file", sh->path, s->index,
                               fdp_data_mode_name(st.st_mode));
        if (H5Fis_hdf5(sh->path) <= 0)
            return fdp_err_set(err, "%s: shard listed in %s is not an HDF5 file (truncated or corrupt?)", sh->path,
                               s->index);
        /* libhdf5 1.10.8 hangs on some damaged global heaps (the attribute strings, written
         * first: within the first MiB); check them before it reads any (flowdp/h5util.h) */
        fdp_h5_scan sc;
        int e = fdp_h5_prescan(sh->path, (uint64_t)1 << 20, &sc);
        if (e) return fdp_err_set(err, "%s: shard listed in %s: cannot read: %s", sh->path, s->index, strerror(e));
        if (sc.bad_gcol)
            return fdp_err_set(err, "%s: damaged shard: the HDF5 global heap at byte %llu is inconsistent", sh->path,
                               (unsigned long long)(sc.bad_gcol - 1));
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
    int64_t first = -1;
    if (attr_read_int(sh->file, "first_index", 0, &first) != 0 || first != sh->first) {
        shard_close(s, sh);
        return fdp_err_set(err,
                           "%s: shard entry %d (%s) has first_index %lld but the shards listed before it hold %lld "
                           "images (entries out of order, or a shard of another set?)",
                           s->index, (int)(sh - s->s) + 1, sh->path, (long long)first, (long long)sh->first);
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
    if (fdp_shards_parse_index(s, s->index, &s->s, &n, err) != 0) {
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
