/* loader.c — dataset sources (memory or shards), augmentation, and the
 * prefetching loader: a producer thread fills a ring of prefetch + 1 batch
 * slots in step order; the consumer holds at most one slot at a time.
 * Semantics: include/flowdp/loader.h. */
#include "flowdp/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowdp/rng.h"

/* ---- sources ---------------------------------------------------------------- */
int fdp_source_open(const char *format, const char *path, int train, int64_t limit, fdp_source *out, fdp_err *err) {
    memset(out, 0, sizeof *out);
    if (format && strcmp(format, "hdf5") == 0) {
        if (fdp_shards_open(path, train, limit, &out->shards, err) != 0) return -1;
        out->n = fdp_shards_count(out->shards);
        fdp_shards_shape(out->shards, &out->c, &out->h, &out->w);
        snprintf(out->desc, sizeof out->desc, "hdf5:%.500s (%d shard(s))", fdp_shards_index_path(out->shards),
                 fdp_shards_num(out->shards));
        return 0;
    }
    if (format && strcmp(format, "idx") != 0 && strcmp(format, "cifar10") != 0)
        return fdp_err_set(err, "%s: unknown dataset format '%s' (expected idx, cifar10 or hdf5)", path, format);
    if (fdp_dataset_load(format, path, train, limit, &out->mem, err) != 0) return -1;
    out->n = out->mem.n;
    out->c = out->mem.c;
    out->h = out->mem.h;
    out->w = out->mem.w;
    snprintf(out->desc, sizeof out->desc, "%.590s", out->mem.source);
    return 0;
}

int fdp_source_verify(fdp_source *s, int part, int nparts, fdp_err *err) {
    return s->shards ? fdp_shards_verify(s->shards, part, nparts, err) : 0;
}

void fdp_source_close(fdp_source *s) {
    if (!s) return;
    if (s->shards) fdp_shards_close(s->shards);
    fdp_dataset_free(&s->mem);
    memset(s, 0, sizeof *s);
}

int fdp_source_read_u8(fdp_source *s, const int64_t *idx, int count, uint8_t *out, int32_t *labels, fdp_err *err) {
    if (s->shards) return fdp_shards_read(s->shards, idx, count, out, labels, err);
    const int64_t per = (int64_t)s->c * s->h * s->w;
    for (int i = 0; i < count; i++) {
        if (idx[i] < 0 || idx[i] >= s->n)
            return fdp_err_set(err, "%s: sample index %lld out of range [0, %lld)", s->desc, (long long)idx[i],
                               (long long)s->n);
        memcpy(out + i * per, s->mem.images + idx[i] * per, (size_t)per);
        if (labels) labels[i] = s->mem.labels ? s->mem.labels[idx[i]] : -1;
    }
    return 0;
}

/* ---- augmentation ------------------------------------------------------------- */
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void fdp_augment_to_float(const uint8_t *in, int c, int h, int w, uint64_t seed, uint32_t epoch, int64_t g, int hflip,
                          double translate, float *out) {
    const int64_t plane = (int64_t)h * w;
    int tx = (int)(translate * w), ty = (int)(translate * h);
    if (!hflip && tx == 0 && ty == 0) {
        for (int64_t j = 0; j < plane * c; j++) out[j] = (float)in[j] / 255.0f;
        return;
    }
    uint32_t r[4];
    fdp_philox_stream_block(seed, FDP_RNG_AUGMENT, (uint64_t)g, epoch, 0, r);
    int flip = hflip && (r[0] >> 31);
    int dx = tx > 0 ? (int)(r[1] % (uint32_t)(2 * tx + 1)) - tx : 0;
    int dy = ty > 0 ? (int)(r[2] % (uint32_t)(2 * ty + 1)) - ty : 0;
    for (int k = 0; k < c; k++) {
        const uint8_t *src = in + k * plane;
        float *dst = out + k * plane;
        for (int y = 0; y < h; y++) {
            const uint8_t *row = src + (int64_t)clampi(y - dy, 0, h - 1) * w;
            float *drow = dst + (int64_t)y * w;
            for (int x = 0; x < w; x++) {
                int xs = flip ? w - 1 - x : x; /* position in the shifted image */
                drow[x] = (float)row[clampi(xs - dx, 0, w - 1)] / 255.0f;
            }
        }
    }
}

/* ---- the loader ------------------------------------------------------------------ */
typedef struct slot {
    float *x;
    int64_t *idx;
    fdp_batch b;
} slot;

struct fdp_loader {
    fdp_loader_opts o;
    int64_t D;           /* c*h*w */
    int64_t spe;         /* steps per epoch (train) */
    int64_t nbatches;    /* batches to deliver */
    int nslots;
    slot *slots;
    uint8_t *u8;         /* (batch, c, h, w) producer scratch */
    int64_t *perm;       /* (n) current epoch's order (train), producer-owned */
    int64_t perm_epoch;
    /* ring state, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t produced, taken, released;
    int stop, failed, threaded;
    fdp_err err;
    pthread_t thread;
    double wait_s;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* make batch number k (0-based among those this loader delivers) into sl */
static int make_batch(fdp_loader *l, int64_t k, slot *sl, fdp_err *err) {
    const fdp_loader_opts *o = &l->o;
    int count;
    int64_t epoch = 0, step = k;
    if (o->mode == FDP_LOADER_TRAIN) {
        step = o->start_step + k;
        epoch = step / l->spe;
        if (epoch != l->perm_epoch) {
            fdp_sampler_epoch_order(o->seed, epoch, o->src->n, l->perm);
            l->perm_epoch = epoch;
        }
        fdp_sampler_batch_indices(l->perm, step % l->spe, o->rank, o->world, o->batch, sl->idx);
        count = o->batch;
    } else {
        int64_t b0 = o->begin + k * o->batch;
        count = (int)(o->end - b0 < o->batch ? o->end - b0 : o->batch);
        for (int i = 0; i < count; i++) sl->idx[i] = b0 + i;
    }
    if (fdp_source_read_u8(o->src, sl->idx, count, l->u8, NULL, err) != 0) return -1;
    const int aug = o->mode == FDP_LOADER_TRAIN && (o->hflip || o->translate > 0);
    for (int i = 0; i < count; i++)
        fdp_augment_to_float(l->u8 + i * l->D, o->src->c, o->src->h, o->src->w, o->seed, (uint32_t)epoch, sl->idx[i],
                             aug && o->hflip, aug ? o->translate : 0.0, sl->x + i * l->D);
    sl->b.x = sl->x;
    sl->b.idx = sl->idx;
    sl->b.count = count;
    sl->b.step = step;
    sl->b.epoch = epoch;
    return 0;
}

static void *producer(void *arg) {
    fdp_loader *l = arg;
    for (int64_t k = 0; k < l->nbatches; k++) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->produced - l->released >= l->nslots) pthread_cond_wait(&l->cv, &l->mu);
        int stop = l->stop;
        pthread_mutex_unlock(&l->mu);
        if (stop) break;
        fdp_err err = {{0}};
        int rc = make_batch(l, k, &l->slots[k % l->nslots], &err);
        pthread_mutex_lock(&l->mu);
        if (rc != 0) {
            l->failed = 1;
            l->err = err;
        } else {
            l->produced++;
        }
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        if (rc != 0) break;
    }
    return NULL;
}

int fdp_loader_create(const fdp_loader_opts *o, fdp_loader **out, fdp_err *err) {
    *out = NULL;
    if (!o->src || o->batch < 1 || o->prefetch < 0)
        return fdp_err_set(err, "loader: bad options (batch %d, prefetch %d)", o->batch, o->prefetch);
    fdp_loader *l = calloc(1, sizeof *l);
    if (!l) return fdp_err_set(err, "loader: out of memory");
    l->o = *o;
    l->D = (int64_t)o->src->c * o->src->h * o->src->w;
    l->perm_epoch = -1;
    if (o->mode == FDP_LOADER_TRAIN) {
        l->spe = fdp_sampler_steps_per_epoch(o->src->n, o->world, o->batch);
        if (l->spe < 1 || o->rank < 0 || o->rank >= o->world || o->start_step < 0 || o->end_step < o->start_step) {
            free(l);
            return fdp_err_set(err, "%s: %lld samples cannot fill one global batch of %d x %d (or bad step range)",
                               o->src->desc, (long long)o->src->n, o->batch, o->world);
        }
        l->nbatches = o->end_step - o->start_step;
        l->perm = malloc(sizeof(int64_t) * (size_t)o->src->n);
    } else {
        if (o->begin < 0 || o->end > o->src->n || o->begin > o->end) {
            free(l);
            return fdp_err_set(err, "%s: bad range [%lld, %lld) of %lld samples", o->src->desc, (long long)o->begin,
                               (long long)o->end, (long long)o->src->n);
        }
        l->nbatches = (o->end - o->begin + o->batch - 1) / o->batch;
    }
    l->nslots = o->prefetch + 1;
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->u8 = malloc((size_t)(o->batch * l->D));
    int oom = !l->slots || !l->u8 || (o->mode == FDP_LOADER_TRAIN && !l->perm);
    for (int i = 0; !oom && i < l->nslots; i++) {
        l->slots[i].x = malloc(sizeof(float) * (size_t)(o->batch * l->D));
        l->slots[i].idx = malloc(sizeof(int64_t) * (size_t)o->batch);
        oom = !l->slots[i].x || !l->slots[i].idx;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (oom) {
        fdp_loader_destroy(l);
        return fdp_err_set(err, "loader: out of memory for %d batches of %d images", o->prefetch + 1, o->batch);
    }
    if (o->prefetch > 0 && l->nbatches > 0) {
        if (pthread_create(&l->thread, NULL, producer, l) != 0) {
            fdp_loader_destroy(l);
            return fdp_err_set(err, "loader: cannot start the prefetch thread");
        }
        l->threaded = 1;
    }
    *out = l;
    return 0;
}

const fdp_batch *fdp_loader_next(fdp_loader *l) {
    double t0 = now_s();
    if (!l->threaded) {
        if (l->taken >= l->nbatches) return NULL;
        fdp_err err = {{0}};
        slot *sl = &l->slots[0];
        if (make_batch(l, l->taken, sl, &err) != 0) FDP_FATAL("data loader: %s", err.msg);
        l->taken++;
        l->wait_s += now_s() - t0;
        return &sl->b;
    }
    pthread_mutex_lock(&l->mu);
    if (l->taken > l->released) { /* give back the slot handed out last time */
        l->released = l->taken;
        pthread_cond_broadcast(&l->cv);
    }
    if (l->taken >= l->nbatches) {
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    while (l->produced <= l->taken && !l->failed) pthread_cond_wait(&l->cv, &l->mu);
    if (l->produced <= l->taken && l->failed) {
        fdp_err e = l->err;
        pthread_mutex_unlock(&l->mu);
        FDP_FATAL("data loader: %s", e.msg);
    }
    slot *sl = &l->slots[l->taken % l->nslots];
    l->taken++;
    pthread_mutex_unlock(&l->mu);
    l->wait_s += now_s() - t0;
    return &sl->b;
}

double fdp_loader_wait_seconds(const fdp_loader *l) { return l->wait_s; }

void fdp_loader_destroy(fdp_loader *l) {
    if (!l) return;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    for (int i = 0; l->slots && i < l->nslots; i++) {
        free(l->slots[i].x);
        free(l->slots[i].idx);
    }
    free(l->slots);
    free(l->u8);
    free(l->perm);
    free(l);
}
