/* pack.c — flowdp-pack's driver: plan the inputs (npz, cifar10, idx, image
 * folders), cut them into shards, pack the shards with worker threads, show a
 * progress bar, write the index last. Rules: include/flowdp/pack.h. */
#include "flowdp/pack.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "flowdp/data.h"
#include "flowdp/shards.h"

#define PK_PATH_MAX 4096
#define PK_BLOCK 256 /* images per write */

enum { IN_NPZ, IN_CIFAR, IN_IDX, IN_IMAGES };

typedef struct pk_input {
    int kind;
    char path[PK_PATH_MAX];
    int64_t n;           /* images taken from this input (after the limit) */
    int h, w, c;
    int64_t first;       /* global index of its first image */
    int first_shard, n_shards;
    /* npz */
    int64_t npz_rows;    /* rows in the archive */
    fdp_npy_header data_h, labels_h;
    int has_labels;
    /* cifar10 / idx: loaded whole (small sets) */
    fdp_dataset mem;
    /* images: files and labels, n entries */
    char **files;
    int32_t *labels;
    int64_t n_files;     /* entries of files (n may be smaller: the limit) */
} pk_input;

typedef struct pk_unit { int input, shard; } pk_unit; /* shard = -1: all shards of the input */

typedef struct packer {
    const fdp_pack_opts *o;
    pk_input *in;
    int n_in;
    int64_t per_shard, total;
    int n_shards;
    fdp_shard_entry *entries;
    char **classes;
    int n_classes;
    int64_t skipped;
    pk_unit *units;
    int n_units;
    atomic_int next_unit;
    atomic_llong done;
    atomic_int failed;
    pthread_mutex_t err_mu;
    fdp_err err;
    char *written; /* (n_shards) 1 when this run wrote shard i */
} packer;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int kind_of(const char *format) {
    if (!strcmp(format, "npz")) return IN_NPZ;
    if (!strcmp(format, "cifar10")) return IN_CIFAR;
    if (!strcmp(format, "idx")) return IN_IDX;
    if (!strcmp(format, "images")) return IN_IMAGES;
    return -1;
}

static int ends_with_ci(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* auto: by name and content */
static int guess_kind(const char *path) {
    if (ends_with_ci(path, ".npz")) return IN_NPZ;
    if (ends_with_ci(path, ".bin")) return IN_CIFAR;
    if (strstr(path, "idx3-ubyte")) return IN_IDX;
    if (is_dir(path)) {
        char p[PK_PATH_MAX + 64];
        const char *cif[] = {"data_batch_1.bin", "test_batch.bin", "cifar-10-batches-bin"};
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/%s", path, cif[i]);
            if (access(p, F_OK) == 0) return IN_CIFAR;
        }
        const char *idx[] = {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte",
                             "t10k-images-idx3-ubyte.gz"};
        for (int i = 0; i < 4; i++) {
            snprintf(p, sizeof p, "%s/%s", path, idx[i]);
            if (access(p, F_OK) == 0) return IN_IDX;
        }
        return IN_IMAGES;
    }
    return -1;
}

/* ---- npz -------------------------------------------------------------------- */
typedef struct npz {
    zip_t *za;
    zip_file_t *data, *labels;
    zip_int64_t data_i, labels_i;
} npz;

static void npz_close(npz *z) {
    if (z->data) zip_fclose(z->data);
    if (z->labels) zip_fclose(z->labels);
    if (z->za) zip_discard(z->za);
    memset(z, 0, sizeof *z);
}

/* read exactly n bytes from a member; -1 + err on a short read or corrupt data */
static int zread(zip_file_t *f, void *buf, size_t n, const char *path, const char *member, fdp_err *err) {
    size_t got = 0;
    while (got < n) {
        zip_int64_t r = zip_fread(f, (char *)buf + got, n - got);
        if (r < 0) return fdp_err_set(err, "%s: member %s: %s", path, member, zip_file_strerror(f));
        if (r == 0) return fdp_err_set(err, "%s: member %s is truncated (ends after %zu more bytes, %zu expected)", path, member, got, n);
        got += (size_t)r;
    }
    return 0;
}

/* open the archive and parse the headers (data required, labels optional); leaves
 * the member streams positioned at their data */
static int npz_open(pk_input *in, npz *z, fdp_err *err) {
    memset(z, 0, sizeof *z);
    int code = 0;
    z->za = zip_open(in->path, ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!z->za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        fdp_err_set(err, "%s: cannot open as .npz (zip) archive: %s", in->path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    z->data_i = zip_name_locate(z->za, "data.npy", ZIP_FL_NODIR);
    z->labels_i = zip_name_locate(z->za, "labels.npy", ZIP_FL_NODIR);
    if (z->data_i < 0) {
        npz_close(z);
        return fdp_err_set(err, "%s: no member data.npy in the archive", in->path);
    }
    const char *names[2] = {"data.npy", "labels.npy"};
    zip_int64_t idx[2] = {z->data_i, z->labels_i};
    fdp_npy_header *hs[2] = {&in->data_h, &in->labels_h};
    zip_file_t **fs[2] = {&z->data, &z->labels};
    for (int m = 0; m < 2; m++) {
        if (idx[m] < 0) continue;
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(z->za, (zip_uint64_t)idx[m], 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
            npz_close(z);
            return fdp_err_set(err, "%s: cannot stat member %s", in->path, names[m]);
        }
        *fs[m] = zip_fopen_index(z->za, (zip_uint64_t)idx[m], 0);
        if (!*fs[m]) {
            fdp_err_set(err, "%s: cannot open member %s: %s", in->path, names[m], zip_strerror(z->za));
            npz_close(z);
            return -1;
        }
        /* the header: magic, version and length (10 bytes; 12 from version 2.0), then its declared length */
        uint8_t head[12];
        char what[PK_PATH_MAX + 32];
        snprintf(what, sizeof what, "%s:%s", in->path, names[m]);
        size_t first = st.size < 10 ? (size_t)st.size : 10;
        if (zread(*fs[m], head, first, in->path, names[m], err) != 0) {
            npz_close(z);
            return -1;
        }
        if (first < 10 || memcmp(head, "\x93NUMPY", 6) != 0) {
            npz_close(z);
            return fdp_err_set(err, "%s: %s", what, first < 10 ? "truncated .npy header (under 10 bytes)" : "not a .npy member (no \\x93NUMPY magic)");
        }
        if (head[6] >= 2 && st.size >= 12) {
            if (zread(*fs[m], head + 10, 2, in->path, names[m], err) != 0) {
                npz_close(z);
                return -1;
            }
            first = 12;
        }
        fdp_npy_header *h = hs[m];
        size_t hl = head[6] == 1 ? (size_t)(head[8] | head[9] << 8) + 10
                    : first == 12 ? (size_t)(head[8] | head[9] << 8 | head[10] << 16 | (size_t)head[11] << 24) + 12
                                  : (size_t)-1;
        if (head[6] < 1 || head[6] > 3) hl = first; /* the parser names the version */
        if (hl > 65536 + 12 || hl > st.size) {
            npz_close(z);
            return fdp_err_set(err, "%s: truncated .npy header (%llu bytes in the member, header needs %zu)", what,
                               (unsigned long long)st.size, hl);
        }
        uint8_t *hb = malloc(hl);
        if (!hb) {
            npz_close(z);
            return fdp_err_set(err, "%s: out of memory", in->path);
        }
        memcpy(hb, head, first);
        int rc = zread(*fs[m], hb + first, hl - first, in->path, names[m], err) != 0 ? -1
                                                                                   : fdp_npy_parse_header(hb, hl, h, what, err);
        free(hb);
        if (rc != 0) {
            npz_close(z);
            return -1;
        }
        if (h->fortran) {
            npz_close(z);
            return fdp_err_set(err, "%s: fortran_order True is not supported (save the array in C order)", what);
        }
        int64_t elems = 1;
        for (int d = 0; d < h->ndim; d++) elems *= h->shape[d];
        uint64_t want = (uint64_t)elems * (uint64_t)h->itemsize + h->data_offset;
        if ((uint64_t)st.size != want) {
            npz_close(z);
            return fdp_err_set(err, "%s: %s: the header promises %llu bytes of data, the member holds %llu",
                               what, (uint64_t)st.size < want ? "truncated .npy" : "trailing bytes after the .npy data",
                               (unsigned long long)(want - h->data_offset),
                               (unsigned long long)(st.size - h->data_offset));
        }
    }
    fdp_npy_header *d = &in->data_h;
    int64_t D = 0;
    if (d->kind == 'u' && d->itemsize == 1 && d->ndim == 2)
        D = d->shape[1];
    else if (d->kind == 'u' && d->itemsize == 1 && d->ndim == 4 && d->shape[1] == 3 && d->shape[2] == d->shape[3])
        D = 3 * d->shape[2] * d->shape[3];
    int64_t S = 0;
    while (S * S * 3 < D) S++;
    if (D < 3 || S * S * 3 != D || S > 65536) {
        npz_close(z);
        return fdp_err_set(err,
                           "%s: data.npy is %c%d with shape of %d dims; supported: uint8 (N, 3*S*S) or (N, 3, S, S), "
                           "rows in CHW order",
                           in->path, d->kind, d->itemsize * 8, d->ndim);
    }
    in->npz_rows = d->shape[0];
    in->h = in->w = (int)S;
    in->c = 3;
    in->has_labels = z->labels_i >= 0;
    if (in->has_labels && (in->labels_h.ndim != 1 || in->labels_h.shape[0] != in->npz_rows)) {
        npz_close(z);
        return fdp_err_set(err, "%s: labels.npy has shape of %d dims (first %lld) but data.npy has %lld rows", in->path,
                           in->labels_h.ndim, in->labels_h.ndim ? (long long)in->labels_h.shape[0] : 0LL,
                           (long long)in->npz_rows);
    }
    return 0;
}

/* little-endian integer of the labels dtype -> int64 */
static int64_t label_value(const uint8_t *p, const fdp_npy_header *h) {
    uint64_t u = 0;
    for (int b = 0; b < h->itemsize; b++) u |= (uint64_t)p[b] << (8 * b);
    if (h->kind == 'i' && h->itemsize < 8 && (u >> (8 * h->itemsize - 1)) & 1) u |= ~(uint64_t)0 << (8 * h->itemsize);
    return (int64_t)u;
}

/* ---- images folders ---------------------------------------------------------------- */
typedef struct strv {
    char **v;
    int n, cap;
} strv;
static int strv_push(strv *s, const char *x) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **nv = realloc(s->v, sizeof(char *) * (size_t)cap);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->n++;
    return 0;
}
static void strv_free(strv *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* entries of dir: sub-directories into dirs (may be NULL), image-named files into files */
static int list_dir(const char *dir, strv *dirs, strv *files, int64_t *skipped, fdp_err *err) {
    DIR *d = opendir(dir);
    if (!d) return fdp_err_set(err, "%s: cannot read the directory: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        if (e->d_name[0] == '.') continue;
        char p[PK_PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (dirs && strv_push(dirs, e->d_name) != 0) rc = fdp_err_set(err, "%s: out of memory", dir);
        } else if (ends_with_ci(e->d_name, ".jpg") || ends_with_ci(e->d_name, ".jpeg") || ends_with_ci(e->d_name, ".png")) {
            if (strv_push(files, e->d_name) != 0) rc = fdp_err_set(err, "%s: out of memory", dir);
        } else {
            (*skipped)++;
        }
    }
    closedir(d);
    if (dirs && dirs->n > 1) qsort(dirs->v, (size_t)dirs->n, sizeof(char *), cmp_str);
    if (files->n > 1) qsort(files->v, (size_t)files->n, sizeof(char *), cmp_str);
    return rc;
}

static int plan_images(packer *pk, pk_input *in, fdp_err *err) {
    if (pk->o->size < 1) return fdp_err_set(err, "%s: packing an image folder needs --size S (the output side)", in->path);
    strv dirs = {0}, top = {0}, all = {0};
    int64_t cap = 0, n = 0;
    int rc = list_dir(in->path, &dirs, &top, &pk->skipped, err);
    if (rc == 0 && dirs.n > 0 && top.n > 0)
        rc = fdp_err_set(err, "%s: holds %d image file(s) beside %d class sub-folder(s); put every image in a class "
                         "folder", in->path, top.n, dirs.n);
    if (rc == 0 && in != pk->in)
        rc = fdp_err_set(err, "%s: only one image folder can be packed per run (its sub-folders are the classes)", in->path);
    if (rc == 0 && dirs.n > 0) {
        pk->classes = dirs.v;
        pk->n_classes = dirs.n;
        memset(&dirs, 0, sizeof dirs);
    }
    int nclass = pk->n_classes;
    int ngroups = top.n > 0 || nclass == 0 ? 1 : nclass;
    for (int g = 0; g < ngroups && rc == 0; g++) {
        strv files = {0};
        char sub[PK_PATH_MAX * 2];
        const int labeled = top.n == 0 && nclass > 0;
        if (labeled) {
            snprintf(sub, sizeof sub, "%s/%s", in->path, pk->classes[g]);
            rc = list_dir(sub, NULL, &files, &pk->skipped, err);
        } else {
            snprintf(sub, sizeof sub, "%s", in->path);
            files = top;
            memset(&top, 0, sizeof top);
        }
        for (int i = 0; i < files.n && rc == 0; i++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                char **nf = realloc(in->files, sizeof(char *) * (size_t)cap);
                int32_t *nl = realloc(in->labels, sizeof(int32_t) * (size_t)cap);
                if (nf) in->files = nf;
                if (nl) in->labels = nl;
                if (!nf || !nl) {
                    rc = fdp_err_set(err, "%s: out of memory", in->path);
                    break;
                }
            }
            char p[PK_PATH_MAX * 3];
            snprintf(p, sizeof p, "%s/%s", sub, files.v[i]);
            if (!(in->files[n] = strdup(p))) {
                rc = fdp_err_set(err, "%s: out of memory", in->path);
                break;
            }
            in->labels[n] = labeled ? g : -1;
            n++;
            in->n_files = n;
        }
        strv_free(&files);
    }
    strv_free(&dirs);
    strv_free(&top);
    strv_free(&all);
    in->n = n;
    in->h = in->w = pk->o->size;
    in->c = 3;
    if (rc == 0 && n == 0) rc = fdp_err_set(err, "%s: no .jpg/.jpeg/.png files found", in->path);
    return rc;
}

/* ---- planning ------------------------------------------------------------------- */
static int plan_input(packer *pk, pk_input *in, int64_t remaining, fdp_err *err) {
    int train = strcmp(pk->o->split, "test") != 0;
    switch (in->kind) {
    case IN_NPZ: {
        npz z;
        if (npz_open(in, &z, err) != 0) return -1;
        npz_close(&z);
        in->n = in->npz_rows;
        if (pk->o->size > 0 && pk->o->size != in->h)
            return fdp_err_set(err, "%s: holds %dx%d images but --size %d was asked (npz images are not resized)",
                               in->path, in->h, in->w, pk->o->size);
        break;
    }
    case IN_CIFAR:
    case IN_IDX:
        if (fdp_dataset_load(in->kind == IN_CIFAR ? "cifar10" : "idx", in->path, train, remaining, &in->mem, err) != 0)
            return -1;
        in->n = in->mem.n;
        in->h = in->mem.h;
        in->w = in->mem.w;
        in->c = in->mem.c;
        if (pk->o->size > 0 && (pk->o->size != in->h || pk->o->size != in->w))
            return fdp_err_set(err, "%s: holds %dx%d images but --size %d was asked (only image folders are resized)",
                               in->path, in->h, in->w, pk->o->size);
        break;
    case IN_IMAGES:
        if (plan_images(pk, in, err) != 0) return -1;
        break;
    }
    if (in->n > remaining) in->n = remaining;
    return 0;
}

/* ---- packing one unit ---------------------------------------------------------------- */
static int stop_requested(packer *pk) { return atomic_load(&pk->failed) != 0; }

static void shard_path(packer *pk, int s, char *out, size_t len) {
    snprintf(out, len, "%s/%s", pk->o->out_dir, pk->entries[s].name);
}

static int64_t shard_count(packer *pk, pk_input *in, int k) {
    int64_t a = (int64_t)k * pk->per_shard, b = a + pk->per_shard < in->n ? a + pk->per_shard : in->n;
    return b - a;
}

/* write shard k of input in, images produced by fill(block) */
static int pack_mem_or_npz(packer *pk, pk_input *in, fdp_err *err) {
    const int64_t D = (int64_t)in->h * in->w * in->c;
    uint8_t *chw = malloc((size_t)(PK_BLOCK * D)), *hwc = malloc((size_t)(PK_BLOCK * D));
    int32_t *lab = malloc(sizeof(int32_t) * PK_BLOCK);
    uint8_t *lraw = malloc((size_t)PK_BLOCK * 8);
    npz z;
    memset(&z, 0, sizeof z);
    int rc = 0;
    if (!chw || !hwc || !lab || !lraw) rc = fdp_err_set(err, "%s: out of memory", in->path);
    if (rc == 0 && in->kind == IN_NPZ) rc = npz_open(in, &z, err);
    char src[PK_PATH_MAX + 16];
    snprintf(src, sizeof src, "%s:%s", in->kind == IN_NPZ ? "npz" : in->kind == IN_CIFAR ? "cifar10" : "idx", in->path);
    int64_t pos = 0;
    for (int k = 0; k < in->n_shards && rc == 0 && !stop_requested(pk); k++) {
        int s = in->first_shard + k;
        char path[PK_PATH_MAX * 2];
        shard_path(pk, s, path, sizeof path);
        int64_t cnt = shard_count(pk, in, k);
        fdp_shard_writer *sw = fdp_shard_writer_create(path, cnt, in->h, in->w, in->c, src, pk->o->split,
                                                       in->first + pos, err);
        if (!sw) {
            rc = -1;
            break;
        }
        for (int64_t a = 0; a < cnt && rc == 0 && !stop_requested(pk); a += PK_BLOCK) {
            int64_t n = cnt - a < PK_BLOCK ? cnt - a : PK_BLOCK;
            if (in->kind == IN_NPZ) {
                char member[PK_PATH_MAX + 32];
                snprintf(member, sizeof member, "data.npy (rows %lld..%lld)", (long long)(pos + a), (long long)(pos + a + n));
                rc = zread(z.data, chw, (size_t)(n * D), in->path, member, err);
                if (rc == 0 && in->has_labels)
                    rc = zread(z.labels, lraw, (size_t)(n * in->labels_h.itemsize), in->path, "labels.npy", err);
                for (int64_t i = 0; i < n && rc == 0; i++) {
                    if (!in->has_labels) {
                        lab[i] = -1;
                        continue;
                    }
                    int64_t v = label_value(lraw + i * in->labels_h.itemsize, &in->labels_h);
                    if (v < 1 || v > INT32_MAX)
                        rc = fdp_err_set(err, "%s: labels.npy[%lld] = %lld: expected 1-based class labels (>= 1)",
                                         in->path, (long long)(pos + a + i), (long long)v);
                    lab[i] = (int32_t)(v - 1);
                }
            } else {
                memcpy(chw, in->mem.images + (pos + a) * D, (size_t)(n * D));
                for (int64_t i = 0; i < n; i++) lab[i] = in->mem.labels ? in->mem.labels[pos + a + i] : -1;
            }
            if (rc != 0) break;
            /* CHW -> HWC */
            const int64_t plane = (int64_t)in->h * in->w;
            for (int64_t i = 0; i < n; i++)
                for (int64_t p = 0; p < plane; p++)
                    for (int c = 0; c < in->c; c++) hwc[i * D + p * in->c + c] = chw[i * D + c * plane + p];
            rc = fdp_shard_writer_append(sw, hwc, lab, n, err);
            if (rc == 0) atomic_fetch_add(&pk->done, n);
        }
        if (rc == 0 && stop_requested(pk)) rc = -2;
        if (rc == 0) {
            rc = fdp_shard_writer_finish(sw, NULL, err);
            if (rc == 0) pk->written[s] = 1;
        } else {
            fdp_shard_writer_abort(sw);
        }
        pos += cnt;
    }
    if (in->kind == IN_NPZ) npz_close(&z);
    free(chw);
    free(hwc);
    free(lab);
    free(lraw);
    return rc == -2 ? 0 : rc;
}

static int pack_images_shard(packer *pk, pk_input *in, int k, fdp_err *err) {
    const int S = in->h;
    const int64_t D = (int64_t)S * S * 3;
    int s = in->first_shard + k;
    int64_t a0 = (int64_t)k * pk->per_shard, cnt = shard_count(pk, in, k);
    char path[PK_PATH_MAX * 2], src[PK_PATH_MAX + 16];
    shard_path(pk, s, path, sizeof path);
    snprintf(src, sizeof src, "images:%s", in->path);
    uint8_t *hwc = malloc((size_t)(64 * D));
    if (!hwc) return fdp_err_set(err, "%s: out of memory", in->path);
    fdp_shard_writer *sw = fdp_shard_writer_create(path, cnt, S, S, 3, src, pk->o->split, in->first + a0, err);
    int rc = sw ? 0 : -1;
    for (int64_t a = 0; a < cnt && rc == 0 && !stop_requested(pk); a += 64) {
        int64_t n = cnt - a < 64 ? cnt - a : 64;
        for (int64_t i = 0; i < n && rc == 0; i++) {
            uint8_t *rgb = NULL;
            int h = 0, w = 0;
            rc = fdp_image_decode_rgb(in->files[a0 + a + i], &rgb, &h, &w, err);
            if (rc == 0) fdp_resize_crop_area(rgb, h, w, 3, S, hwc + i * D);
            free(rgb);
        }
        if (rc == 0) rc = fdp_shard_writer_append(sw, hwc, in->labels + a0 + a, n, err);
        if (rc == 0) atomic_fetch_add(&pk->done, n);
    }
    if (sw) {
        if (rc == 0 && !stop_requested(pk)) {
            rc = fdp_shard_writer_finish(sw, NULL, err);
            if (rc == 0) pk->written[s] = 1;
        } else {
            fdp_shard_writer_abort(sw);
        }
    }
    free(hwc);
    return rc;
}

static void *worker(void *arg) {
    packer *pk = arg;
    for (;;) {
        int u = atomic_fetch_add(&pk->next_unit, 1);
        if (u >= pk->n_units || stop_requested(pk)) break;
        pk_input *in = &pk->in[pk->units[u].input];
        fdp_err err = {{0}};
        int rc = pk->units[u].shard < 0 ? pack_mem_or_npz(pk, in, &err) : pack_images_shard(pk, in, pk->units[u].shard, &err);
        if (rc != 0) {
            pthread_mutex_lock(&pk->err_mu);
            if (!atomic_load(&pk->failed)) pk->err = err;
            atomic_store(&pk->failed, 1);
            pthread_mutex_unlock(&pk->err_mu);
            break;
        }
    }
    return NULL;
}

static void progress_line(packer *pk, double t0, int final) {
    int64_t done = atomic_load(&pk->done);
    double el = now_s() - t0, rate = el > 0 ? (double)done / el : 0.0;
    double frac = pk->total > 0 ? (double)done / (double)pk->total : 1.0;
    char bar[31];
    int fill = (int)(frac * 30 + 0.5);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double eta = rate > 0 ? (double)(pk->total - done) / rate : -1;
    char etas[32];
    if (eta < 0)
        snprintf(etas, sizeof etas, "?");
    else
        snprintf(etas, sizeof etas, "%dm%02ds", (int)(eta / 60), (int)eta % 60);
    fprintf(stderr, "\rpack [%s] %5.1f%% %lld/%lld images | %.0f img/s | ETA %s\033[K%s", bar, 100.0 * frac,
            (long long)done, (long long)pk->total, rate, etas, final ? "\n" : "");
    fflush(stderr);
}

static int mkdir_p(const char *path) {
    char tmp[PK_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int fdp_pack(const char *const *inputs, int n_inputs, const fdp_pack_opts *o, fdp_pack_result *res, fdp_err *err) {
    memset(res, 0, sizeof *res);
    if (n_inputs < 1) return fdp_err_set(err, "flowdp-pack: no input given");
    if (!o->out_dir || !o->out_dir[0]) return fdp_err_set(err, "flowdp-pack: no output directory given (--out DIR)");
    if (!o->split || !o->split[0] || strchr(o->split, '/') || strlen(o->split) > 64)
        return fdp_err_set(err, "flowdp-pack: --split '%s': expected a short name without '/'", o->split ? o->split : "");
    if (o->threads < 1 || (o->per_shard < 1 && o->shards < 1))
        return fdp_err_set(err, "flowdp-pack: bad options (threads %d, per shard %lld, shards %d)", o->threads,
                           (long long)o->per_shard, o->shards);
    double t0 = now_s();
    packer P;
    memset(&P, 0, sizeof P);
    packer *pk = &P;
    pk->o = o;
    pk->n_in = n_inputs;
    pk->in = calloc((size_t)n_inputs, sizeof *pk->in);
    pthread_mutex_init(&pk->err_mu, NULL);
    int rc = pk->in ? 0 : fdp_err_set(err, "flowdp-pack: out of memory");
    int forced = o->format && strcmp(o->format, "auto") != 0 ? kind_of(o->format) : -2;
    if (rc == 0 && forced == -1)
        rc = fdp_err_set(err, "flowdp-pack: --format %s: expected auto, npz, cifar10, idx or images", o->format);
    /* plan: kinds, counts, shapes */
    int64_t remaining = o->limit > 0 ? o->limit : INT64_MAX;
    for (int i = 0; i < n_inputs && rc == 0; i++) {
        pk_input *in = &pk->in[i];
        snprintf(in->path, sizeof in->path, "%s", inputs[i]);
        in->kind = forced >= 0 ? forced : guess_kind(in->path);
        if (in->kind < 0) {
            rc = fdp_err_set(err, "%s: cannot tell the format (not .npz, .bin, *idx3-ubyte* or a directory); give --format",
                             in->path);
            break;
        }
        if (i > 0 && in->kind != pk->in[0].kind) {
            rc = fdp_err_set(err, "%s: inputs of different formats in one run", in->path);
            break;
        }
        if (remaining == 0) break;
        rc = plan_input(pk, in, remaining, err);
        if (rc == 0 && i > 0 && (in->h != pk->in[0].h || in->w != pk->in[0].w || in->c != pk->in[0].c))
            rc = fdp_err_set(err, "%s: holds %dx%dx%d images but %s holds %dx%dx%d (HxWxC)", in->path, in->h, in->w,
                             in->c, pk->in[0].path, pk->in[0].h, pk->in[0].w, pk->in[0].c);
        in->first = pk->total;
        pk->total += in->n;
        remaining -= in->n;
    }
    if (rc == 0 && pk->total == 0) rc = fdp_err_set(err, "%s: no images to pack", inputs[0]);
    /* shards: a shard never spans two inputs */
    if (rc == 0) {
        pk->per_shard = o->shards > 0 ? (pk->total + o->shards - 1) / o->shards : o->per_shard;
        for (int i = 0; i < n_inputs; i++) {
            pk_input *in = &pk->in[i];
            in->first_shard = pk->n_shards;
            in->n_shards = (int)((in->n + pk->per_shard - 1) / pk->per_shard);
            pk->n_shards += in->n_shards;
        }
        pk->entries = calloc((size_t)pk->n_shards, sizeof *pk->entries);
        pk->written = calloc((size_t)pk->n_shards, 1);
        pk->units = calloc((size_t)pk->n_shards + (size_t)n_inputs, sizeof *pk->units);
        if (!pk->entries || !pk->written || !pk->units) rc = fdp_err_set(err, "flowdp-pack: out of memory");
    }
    if (rc == 0 && mkdir_p(o->out_dir) != 0)
        rc = fdp_err_set(err, "%s: cannot create the output directory: %s", o->out_dir, strerror(errno));
    snprintf(res->index_path, sizeof res->index_path, "%s/%s.index", o->out_dir, o->split);
    if (rc == 0 && !o->force && access(res->index_path, F_OK) == 0)
        rc = fdp_err_set(err, "%s already exists; pass --force to replace it", res->index_path);
    for (int i = 0; i < n_inputs && rc == 0; i++) {
        pk_input *in = &pk->in[i];
        for (int k = 0; k < in->n_shards; k++) {
            fdp_shard_entry *e = &pk->entries[in->first_shard + k];
            snprintf(e->name, sizeof e->name, "%s-%05d-of-%05d.h5", o->split, in->first_shard + k, pk->n_shards);
            e->count = shard_count(pk, in, k);
            char p[PK_PATH_MAX * 2];
            shard_path(pk, in->first_shard + k, p, sizeof p);
            if (!o->force && access(p, F_OK) == 0) {
                rc = fdp_err_set(err, "%s already exists; pass --force to replace it", p);
                break;
            }
            if (in->kind == IN_IMAGES) pk->units[pk->n_units++] = (pk_unit){i, k};
        }
        if (in->kind != IN_IMAGES && in->n_shards > 0) pk->units[pk->n_units++] = (pk_unit){i, -1};
    }
    /* pack */
    if (rc == 0) {
        int nt = o->threads < pk->n_units ? o->threads : pk->n_units;
        pthread_t *th = calloc((size_t)nt, sizeof *th);
        int started = 0;
        for (int i = 0; th && i < nt; i++)
            if (pthread_create(&th[i], NULL, worker, pk) == 0) started++;
        if (started == 0) {
            rc = fdp_err_set(err, "flowdp-pack: cannot start worker threads");
        } else {
            /* wait (polling every 20 ms), redrawing the progress bar every 0.25 s */
            double last_draw = now_s();
            for (;;) {
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
                int64_t done = atomic_load(&pk->done);
                if (o->progress && now_s() - last_draw >= 0.25) {
                    progress_line(pk, t0, 0);
                    last_draw = now_s();
                }
                if (done >= pk->total || atomic_load(&pk->failed)) break;
                /* all units taken and finished? (a worker that failed sets failed) */
                if (atomic_load(&pk->next_unit) >= pk->n_units + started) break;
            }
            for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
            if (o->progress) progress_line(pk, t0, 1);
            if (atomic_load(&pk->failed)) {
                *err = pk->err;
                rc = -1;
            } else if (atomic_load(&pk->done) != pk->total) {
                rc = fdp_err_set(err, "flowdp-pack: packed %lld of %lld images", (long long)atomic_load(&pk->done),
                                 (long long)pk->total);
            }
        }
        free(th);
    }
    if (rc == 0)
        rc = fdp_shard_index_write(res->index_path, o->split, pk->in[0].h, pk->in[0].w, pk->in[0].c, pk->entries,
                                   pk->n_shards, pk->classes, pk->n_classes, err);
    if (rc != 0 && pk->written) { /* nothing half-done stays: the shards of this run go */
        for (int s = 0; s < pk->n_shards; s++)
            if (pk->written[s]) {
                char p[PK_PATH_MAX * 2];
                shard_path(pk, s, p, sizeof p);
                unlink(p);
            }
    }
    if (rc == 0) {
        res->images = pk->total;
        res->shards = pk->n_shards;
        res->h = pk->in[0].h;
        res->w = pk->in[0].w;
        res->c = pk->in[0].c;
        res->skipped_files = pk->skipped;
    }
    res->seconds = now_s() - t0;
    for (int i = 0; pk->in && i < n_inputs; i++) {
        pk_input *in = &pk->in[i];
        fdp_dataset_free(&in->mem);
        for (int64_t k = 0; in->files && k < in->n_files; k++) free(in->files[k]);
        free(in->files);
        free(in->labels);
    }
    for (int i = 0; i < pk->n_classes; i++) free(pk->classes[i]);
    free(pk->classes);
    free(pk->in);
    free(pk->entries);
    free(pk->written);
    free(pk->units);
    pthread_mutex_destroy(&pk->err_mu);
    return rc;
}
