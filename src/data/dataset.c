/* dataset.c — the dataset in memory: loading by format name (finding the IDX
 * labels file next to the images), freeing, and gathering a batch as floats. */
#include "flowdp/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flowdp/log.h"
#include "data_open.h"

void fdp_dataset_free(fdp_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

static int stat_kind(const char *path) { /* 0 missing, 1 regular file, 2 directory, 3 other */
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    return S_ISREG(st.st_mode) ? 1 : S_ISDIR(st.st_mode) ? 2 : 3;
}

/* idx: resolve a directory to the standard file name of the split */
static int idx_images_path(const char *path, int train, char *buf, size_t len, fdp_err *err) {
    if (stat_kind(path) != 2) {
        if (snprintf(buf, len, "%s", path) >= (int)len) return fdp_err_set(err, "%s: path too long", path);
        return 0;
    }
    const char *stem = train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
    const char *sep = path[0] && path[strlen(path) - 1] == '/' ? "" : "/";
    for (int gz = 1; gz >= 0; gz--) {
        if (snprintf(buf, len, "%s%s%s%s", path, sep, stem, gz ? ".gz" : "") >= (int)len)
            return fdp_err_set(err, "%s: path too long", path);
        if (stat_kind(buf) != 0) return 0; /* not a regular file: the reader says so */
    }
    return fdp_err_set(err, "%s: missing IDX images file: neither %s nor %s.gz is in this directory", path, stem, stem);
}

/* idx: the labels file beside an images file ("images-idx3" -> "labels-idx1" in the
 * file name); returns 1 and fills buf when such a name can be formed, else 0 */
static int idx_labels_path(const char *images_path, char *buf, size_t len) {
    static const char from[] = "images-idx3", to[] = "labels-idx1";
    const char *slash = strrchr(images_path, '/');
    const char *name = slash ? slash + 1 : images_path;
    const char *hit = NULL;
    for (const char *p = strstr(name, from); p; p = strstr(p + 1, from)) hit = p;
    if (!hit) return 0;
    int r = snprintf(buf, len, "%.*s%s%s", (int)(hit - images_path), images_path, to, hit + strlen(from));
    return r >= 0 && (size_t)r < len;
}

int fdp_dataset_load(const char *format, const char *path, int train, int64_t limit, fdp_dataset *out, fdp_err *err) {
    memset(out, 0, sizeof *out);
    if (!format || !path) return fdp_err_set(err, "dataset: format and path must both be given");
    if (strcmp(format, "cifar10") == 0) return fdp_cifar10_load(path, train, limit, out, err);
    if (strcmp(format, "idx") == 0) {
        char images[4096], labels[4096];
        if (idx_images_path(path, train, images, sizeof images, err) != 0) return -1;
        const char *labels_path = NULL;
        if (idx_labels_path(images, labels, sizeof labels) && stat_kind(labels) != 0) {
            /* a labels file that is there but not a regular file (a FIFO, a directory) is refused, not ignored */
            if (fdp_data_stat_regular(labels, "an IDX labels file", NULL, err) != 0) return -1;
            labels_path = labels;
        }
        if (fdp_idx_load(images, labels_path, limit, out, err) != 0) return -1;
        /* the note only once the images loaded: an error stays one line */
        if (!labels_path) fdp_info("dataset %s: no labels file beside it; loaded images only", images);
        return 0;
    }
    return fdp_err_set(err, "%s: unknown dataset format '%s' (expected idx or cifar10)", path, format);
}

void fdp_dataset_gather_float(const fdp_dataset *d, const int64_t *idx, int count, float *out) {
    const int64_t per = (int64_t)d->c * d->h * d->w;
    for (int i = 0; i < count; i++) {
        FDP_CHECK(idx[i] >= 0 && idx[i] < d->n, "sample index %lld out of range [0, %lld) for %s; hint: sampler and dataset disagree on n",
                  (long long)idx[i], (long long)d->n, d->source);
        const uint8_t *src = d->images + idx[i] * per;
        float *dst = out + (int64_t)i * per;
        for (int64_t j = 0; j < per; j++) dst[j] = (float)src[j] / 255.0f;
    }
}
