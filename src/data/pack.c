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

#include "pack_internal.h"


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

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* auto: by name and content */
static int guess_kind(const char *path) {
    if (pk_ends_with_ci(path, ".npz")) return IN_NPZ;
    if (pk_ends_with_ci(path, ".bin")) return IN_CIFAR;
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


/* ---- planning ------------------------------------------------------------------- */
static int plan_input(packer *pk, pk_input *in, int64_t remaining, fdp_err *err) {
    int train = strcmp(pk->o->split, "test") != 0;
    switch (in->kind) {
    case IN_NPZ: {
        npz z;
        if (pk_npz_open(in, &z, err) != 0) return -1;
        pk_npz_close(&z);
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
        if (pk_plan_images(pk, in, remaining, err) != 0) return -1;
        break;
    }
    if (in->n > remaining) in->n = remaining;
    return 0;
}

/* ---- packing one unit ---------------------------------------------------------------- */
static int stop_requested(packer *pk) { return atomic_load(&pk->failed) != 0; }

/* where shard s is written during the run: a temporary name, renamed to
 * final_path only when every shard is done (so that a failed run never replaces
 * a shard that existed before it, even with --force) */
static void shard_path(packer *pk, int s, char *out, size_t len) {
    snprintf(out, len, "%s/.%s.part.%ld", pk->o->out_dir, pk->entries[s].name, (long)getpid());
}
static void final_path(packer *pk, int s, char *out, size_t len) {
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
    if (rc == 0 && in->kind == IN_NPZ) rc = pk_npz_open(in, &z, err);
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
                rc = pk_zread(z.data, chw, (size_t)(n * D), in->path, member, err);
                if (rc == 0 && in->has_labels)
                    rc = pk_zread(z.labels, lraw, (size_t)(n * in->labels_h.itemsize), in->path, "labels.npy", err);
                for (int64_t i = 0; i < n && rc == 0; i++) {
                    if (!in->has_labels) {
                        lab[i] = -1;
                        continue;
                    }
                    int64_t v = pk_label_value(lraw + i * in->labels_h.itemsize, &in->labels_h);
                    if (v < 1 || v > INT32_MAX) {
                        char shown[32]; /* an unsigned dtype's value as unsigned: <u8 2^63 + 5 is not negative */
                        if (in->labels_h.kind == 'u') snprintf(shown, sizeof shown, "%llu", (unsigned long long)(uint64_t)v);
                        else snprintf(shown, sizeof shown, "%lld", (long long)v);
                        rc = fdp_err_set(err, "%s: labels.npy[%lld] = %s: expected 1-based class labels (1 .. 2^31-1)",
                                         in->path, (long long)(pos + a + i), shown);
                    }
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
    /* libzip checks a member's CRC-32 only when a read reaches its end: read on past the rows
     * packed (the limit may leave some) so that a damaged member is refused */
    if (rc == 0 && in->kind == IN_NPZ && !stop_requested(pk)) {
        rc = pk_zread_to_end(z.data, in->path, "data.npy", err);
        if (rc == 0 && in->has_labels) rc = pk_zread_to_end(z.labels, in->path, "labels.npy", err);
    }
    if (in->kind == IN_NPZ) pk_npz_close(&z);
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
            if (rc == 0 && (h < S || w < S)) atomic_fetch_add(&pk->upscaled, 1);
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

/* mkdir -p; the directories it made go to made[] (outermost first) so that a
 * failed run can remove them again */
static int mkdir_p(const char *path, char made[][PK_PATH_MAX], int *n_made, int max_made) {
    char tmp[PK_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t len = strlen(tmp);
    for (size_t i = 1; i <= len; i++) {
        if (tmp[i] != '/' && tmp[i] != 0) continue;
        char keep = tmp[i];
        tmp[i] = 0;
        if (mkdir(tmp, 0755) == 0) {
            if (*n_made < max_made) snprintf(made[(*n_made)++], PK_PATH_MAX, "%s", tmp);
        } else if (errno != EEXIST) {
            return -1;
        }
        tmp[i] = keep;
    }
    return is_dir(path) ? 0 : (errno = ENOTDIR, -1);
}

/* inputs: kinds, counts, shapes; then the shard table */
static int plan_all(packer *pk, const char *const *inputs, int n_inputs, fdp_err *err) {
    const fdp_pack_opts *o = pk->o;
    int forced = o->format && strcmp(o->format, "auto") != 0 ? kind_of(o->format) : -2;
    if (forced == -1) return fdp_err_set(err, "--format %s: expected auto, npz, cifar10, idx or images", o->format);
    int64_t remaining = o->limit > 0 ? o->limit : INT64_MAX;
    for (int i = 0; i < n_inputs; i++) {
        pk_input *in = &pk->in[i];
        snprintf(in->path, sizeof in->path, "%s", inputs[i]);
        in->kind = forced >= 0 ? forced : guess_kind(in->path);
        if (in->kind < 0)
            return fdp_err_set(err, "%s: cannot tell the format (not .npz, .bin, *idx3-ubyte* or a directory); give --format",
                               in->path);
        if (i > 0 && in->kind != pk->in[0].kind)
            return fdp_err_set(err, "%s: inputs of different formats in one run", in->path);
        if (remaining == 0) break;
        if (plan_input(pk, in, remaining, err) != 0) return -1;
        if (i > 0 && (in->h != pk->in[0].h || in->w != pk->in[0].w || in->c != pk->in[0].c))
            return fdp_err_set(err, "%s: holds %dx%dx%d images but %s holds %dx%dx%d (HxWxC)", in->path, in->h, in->w,
                               in->c, pk->in[0].path, pk->in[0].h, pk->in[0].w, pk->in[0].c);
        in->first = pk->total;
        pk->total += in->n;
        remaining -= in->n;
    }
    if (pk->total == 0) return fdp_err_set(err, "%s: no images to pack", inputs[0]);
    /* shards: a shard never spans two inputs */
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
    if (!pk->entries || !pk->written || !pk->units) return fdp_err_set(err, "%s: out of memory", o->out_dir);
    return 0;
}

/* ---- no output replaces an input (even with --force) ---------------------------------- */
typedef struct pk_out {
    dev_t dev;
    ino_t ino;
    char path[PK_PATH_MAX * 2];
} pk_out;

/* path (and, depth > 0, what a directory holds, depth levels down) against the existing
 * outputs; -1 + err when one of them is the same file */
static int check_input_tree(const char *path, int depth, const pk_out *outs, int n_outs, fdp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    for (int k = 0; k < n_outs; k++)
        if (outs[k].dev == st.st_dev && outs[k].ino == st.st_ino)
            return fdp_err_set(err, "%s: this output would replace %s, an input of this run (even with --force, no "
                               "input is replaced): choose another --out directory", outs[k].path, path);
    if (!S_ISDIR(st.st_mode) || depth == 0) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PK_PATH_MAX + 512];
        if (snprintf(p, sizeof p, "%s/%s", path, e->d_name) >= (int)sizeof p) continue;
        rc = check_input_tree(p, depth - 1, outs, n_outs, err);
    }
    closedir(d);
    return rc;
}

/* the IDX labels file beside an images file, as fdp_dataset_load finds it; 0 when none */
static int idx_labels_beside(const char *images, char *out, size_t len) {
    const char *slash = strrchr(images, '/'), *name = slash ? slash + 1 : images, *hit = NULL;
    for (const char *p = strstr(name, "images-idx3"); p; p = strstr(p + 1, "images-idx3")) hit = p;
    if (!hit) return 0;
    int r = snprintf(out, len, "%.*slabels-idx1%s", (int)(hit - images), images, hit + strlen("images-idx3"));
    return r >= 0 && (size_t)r < len;
}

/* --force: refuse when an index or shard path that would be replaced is (the same file
 * as) an input, or a file inside an input folder (class/image, cifar-10-batches-bin/x) */
static int refuse_replacing_inputs(packer *pk, const char *index_path, fdp_err *err) {
    pk_out *outs = malloc(sizeof *outs * ((size_t)pk->n_shards + 1));
    if (!outs) return fdp_err_set(err, "%s: out of memory", pk->o->out_dir);
    int n = 0;
    for (int s = -1; s < pk->n_shards; s++) {
        struct stat st;
        if (s < 0) snprintf(outs[n].path, sizeof outs[n].path, "%s", index_path);
        else final_path(pk, s, outs[n].path, sizeof outs[n].path);
        if (stat(outs[n].path, &st) != 0) continue;
        outs[n].dev = st.st_dev;
        outs[n].ino = st.st_ino;
        n++;
    }
    int rc = 0;
    for (int i = 0; i < pk->n_in && rc == 0 && n > 0; i++) {
        const pk_input *in = &pk->in[i];
        rc = check_input_tree(in->path, 2, outs, n, err);
        char lab[PK_PATH_MAX + 16];
        if (rc == 0 && in->kind == IN_IDX && idx_labels_beside(in->path, lab, sizeof lab))
            rc = check_input_tree(lab, 0, outs, n, err);
    }
    free(outs);
    return rc;
}

/* shard names, refusing to replace existing files without --force; the work units */
static int name_shards(packer *pk, const char *index_path, fdp_err *err) {
    const fdp_pack_opts *o = pk->o;
    if (!o->force && access(index_path, F_OK) == 0)
        return fdp_err_set(err, "%s already exists; pass --force to replace it", index_path);
    for (int i = 0; i < pk->n_in; i++) {
        pk_input *in = &pk->in[i];
        for (int k = 0; k < in->n_shards; k++) {
            fdp_shard_entry *e = &pk->entries[in->first_shard + k];
            snprintf(e->name, sizeof e->name, "%s-%05d-of-%05d.h5", o->split, in->first_shard + k, pk->n_shards);
            e->count = shard_count(pk, in, k);
            char p[PK_PATH_MAX * 2];
            final_path(pk, in->first_shard + k, p, sizeof p);
            if (!o->force && access(p, F_OK) == 0)
                return fdp_err_set(err, "%s already exists; pass --force to replace it", p);
            if (in->kind == IN_IMAGES) pk->units[pk->n_units++] = (pk_unit){i, k};
        }
        if (in->kind != IN_IMAGES && in->n_shards > 0) pk->units[pk->n_units++] = (pk_unit){i, -1};
    }
    return o->force ? refuse_replacing_inputs(pk, index_path, err) : 0;
}

/* the workers, the progress bar; -1 + err when a unit failed */
static int run_workers(packer *pk, double t0, fdp_err *err) {
    const fdp_pack_opts *o = pk->o;
    int nt = o->threads < pk->n_units ? o->threads : pk->n_units;
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    int started = 0, rc = 0;
    for (int i = 0; th && i < nt; i++)
        if (pthread_create(&th[i], NULL, worker, pk) == 0) started++;
    if (started == 0) {
        free(th);
        return fdp_err_set(err, "%s: cannot start worker threads", o->out_dir);
    }
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
    free(th);
    if (o->progress) progress_line(pk, t0, 1);
    if (atomic_load(&pk->failed)) {
        *err = pk->err;
        rc = -1;
    } else if (atomic_load(&pk->done) != pk->total) {
        rc = fdp_err_set(err, "%s: packed %lld of %lld images", o->out_dir, (long long)atomic_load(&pk->done),
                         (long long)pk->total);
    }
    return rc;
}

/* every shard done: the temporaries take their final names, then the index */
static int publish(packer *pk, const char *index_path, fdp_err *err) {
    for (int s = 0; s < pk->n_shards; s++) {
        char from[PK_PATH_MAX * 2], to[PK_PATH_MAX * 2];
        shard_path(pk, s, from, sizeof from);
        final_path(pk, s, to, sizeof to);
        if (rename(from, to) != 0) return fdp_err_set(err, "%s: cannot rename the shard into place: %s", to, strerror(errno));
        pk->written[s] = 2; /* renamed: no longer this run's to remove */
    }
    const pk_input *in0 = &pk->in[0];
    return fdp_shard_index_write(index_path, pk->o->split, in0->h, in0->w, in0->c, pk->entries, pk->n_shards,
                                 pk->classes, pk->n_classes, err);
}

static void free_packer(packer *pk) {
    for (int i = 0; pk->in && i < pk->n_in; i++) {
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
}

int fdp_pack(const char *const *inputs, int n_inputs, const fdp_pack_opts *o, fdp_pack_result *res, fdp_err *err) {
    memset(res, 0, sizeof *res);
    if (n_inputs < 1) return fdp_err_set(err, "no input given");
    if (!o->out_dir || !o->out_dir[0]) return fdp_err_set(err, "no output directory given (--out DIR)");
    /* the split goes into file names and index lines: no '/', no blanks, no control characters */
    if (!o->split || !o->split[0] || strpbrk(o->split, "/ \t") || !pk_index_safe_name(o->split) ||
        strlen(o->split) > 64)
        return fdp_err_set(err, "--split '%s': expected a short name without '/', blanks or control characters",
                           o->split ? o->split : "");
    if (o->threads < 1 || (o->per_shard < 1 && o->shards < 1))
        return fdp_err_set(err, "bad options (threads %d, per shard %lld, shards %d)", o->threads,
                           (long long)o->per_shard, o->shards);
    double t0 = now_s();
    packer P;
    memset(&P, 0, sizeof P);
    packer *pk = &P;
    pk->o = o;
    pk->n_in = n_inputs;
    pk->in = calloc((size_t)n_inputs, sizeof *pk->in);
    pthread_mutex_init(&pk->err_mu, NULL);
    int rc = pk->in ? plan_all(pk, inputs, n_inputs, err) : fdp_err_set(err, "%s: out of memory", o->out_dir);
    char made[8][PK_PATH_MAX];
    int n_made = 0;
    if (rc == 0 && mkdir_p(o->out_dir, made, &n_made, 8) != 0)
        rc = fdp_err_set(err, "%s: cannot create the output directory: %s", o->out_dir, strerror(errno));
    snprintf(res->index_path, sizeof res->index_path, "%s/%s.index", o->out_dir, o->split);
    if (rc == 0) rc = name_shards(pk, res->index_path, err);
    if (rc == 0) rc = run_workers(pk, t0, err);
    if (rc == 0) rc = publish(pk, res->index_path, err);
    if (rc != 0 && pk->written) { /* nothing half-done stays: this run's temporaries go */
        for (int s = 0; s < pk->n_shards; s++)
            if (pk->written[s] == 1) {
                char p[PK_PATH_MAX * 2];
                shard_path(pk, s, p, sizeof p);
                unlink(p);
            }
    }
    if (rc != 0)
        for (int i = n_made - 1; i >= 0; i--) rmdir(made[i]); /* only when empty: never anything else's */
    if (rc == 0) {
        res->images = pk->total;
        res->shards = pk->n_shards;
        res->h = pk->in[0].h;
        res->w = pk->in[0].w;
        res->c = pk->in[0].c;
        res->skipped_files = pk->skipped;
        res->bad_images = pk->bad_images;
        snprintf(res->first_bad, sizeof res->first_bad, "%.1000s", pk->first_bad);
        res->upscaled = atomic_load(&pk->upscaled);
    }
    res->seconds = now_s() - t0;
    free_packer(pk);
    return rc;
}
