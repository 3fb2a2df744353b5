/* cifar10.c — the CIFAR-10 binary-version reader.
 *
 * The binary version (cifar-10-binary.tar.gz) unpacks to cifar-10-batches-bin/
 * with data_batch_1.bin .. data_batch_5.bin (10000 records each, the training
 * set) and test_batch.bin (10000 records). A record is 3073 bytes: one label
 * byte (0..9), then the 32x32 red plane, green plane, blue plane, each
 * row-major — which is already one NCHW image (c = 3), so a record's pixels are
 * copied as they are. All file sizes are checked before anything is read, so a
 * bad file is reported before minutes of reading; labels are checked for every
 * record that is kept. */
#include "flowdp/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_open.h"

#define CIFAR_PIXELS 3072 /* 3 * 32 * 32 */
#define CIFAR_RECORD 3073 /* label byte + pixels */
#define CIFAR_CHUNK 1024  /* records per fread */

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int path_join(char *buf, size_t len, const char *dir, const char *name, fdp_err *err) {
    size_t dl = strlen(dir);
    int slash = dl > 0 && dir[dl - 1] == '/';
    int r = snprintf(buf, len, "%s%s%s", dir, slash ? "" : "/", name);
    if (r < 0 || (size_t)r >= len) return fdp_err_set(err, "%s: path too long", dir);
    return 0;
}

/* Read records [0, take) of one file into images/labels; returns 0 or -1. */
static int read_cifar_file(const char *path, int64_t take, uint8_t *images, int32_t *labels, fdp_err *err) {
    FILE *f = fdp_data_fopen_regular(path, "a CIFAR-10 .bin file", NULL, err); /* never blocks on a FIFO */
    if (!f) return -1;
    uint8_t *buf = fdp_xmalloc((size_t)CIFAR_CHUNK * CIFAR_RECORD);
    int rc = 0;
    for (int64_t done = 0; done < take && rc == 0;) {
        int64_t k = take - done < CIFAR_CHUNK ? take - done : CIFAR_CHUNK;
        size_t got = fread(buf, CIFAR_RECORD, (size_t)k, f);
        if (got != (size_t)k) {
            if (ferror(f))
                rc = fdp_err_set(err, "%s: read error at record %lld: %s", path, (long long)(done + (int64_t)got),
                                 strerror(errno));
            else
                rc = fdp_err_set(err, "%s: file ended at record %lld of %lld (did it change while being read?)", path,
                                 (long long)(done + (int64_t)got), (long long)take);
            break;
        }
        for (int64_t i = 0; i < k; i++) {
            const uint8_t *rec = buf + i * CIFAR_RECORD;
            if (rec[0] > 9) {
                rc = fdp_err_set(err, "%s: record %lld has label %u; CIFAR-10 labels are 0..9", path,
                                 (long long)(done + i), rec[0]);
                break;
            }
            labels[done + i] = rec[0];
            memcpy(images + (done + i) * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
        }
        done += k;
    }
    free(buf);
    fclose(f);
    return rc;
}

int fdp_cifar10_load(const char *dir_or_file, int train, int64_t limit, fdp_dataset *out, fdp_err *err) {
    memset(out, 0, sizeof *out);
    if (limit < 0) return fdp_err_set(err, "%s: limit %lld is negative (0 = all)", dir_or_file, (long long)limit);
    struct stat st;
    if (stat(dir_or_file, &st) != 0)
        return fdp_err_set(err, "%s: cannot open CIFAR-10 data (a directory or a .bin file): %s", dir_or_file,
                           strerror(errno));

    static const char *const train_names[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                              "data_batch_4.bin", "data_batch_5.bin"};
    static const char *const test_names[] = {"test_batch.bin"};
    enum { MAX_FILES = 5, PATH_LEN = 4096 };
    char paths[MAX_FILES][PATH_LEN];
    int nfiles = 0;
    const int given_dir = S_ISDIR(st.st_mode);
    if (given_dir) {
        const char *const *names = train ? train_names : test_names;
        nfiles = train ? 5 : 1;
        char base[PATH_LEN], probe[PATH_LEN], nested[PATH_LEN];
        snprintf(base, sizeof base, "%s", dir_or_file);
        /* the directory the official archive unpacks to, when given its parent */
        if (path_join(probe, sizeof probe, base, names[0], err) != 0) return -1;
        if (path_join(nested, sizeof nested, base, "cifar-10-batches-bin", err) != 0) return -1;
        if (stat(probe, &st) != 0 && is_dir(nested)) snprintf(base, sizeof base, "%s", nested);
        for (int i = 0; i < nfiles; i++)
            if (path_join(paths[i], PATH_LEN, base, names[i], err) != 0) return -1;
    } else {
        nfiles = 1;
        if (snprintf(paths[0], PATH_LEN, "%s", dir_or_file) >= PATH_LEN)
            return fdp_err_set(err, "%s: path too long", dir_or_file);
    }

    /* every file's size first */
    int64_t records[MAX_FILES], total = 0;
    for (int i = 0; i < nfiles; i++) {
        if (stat(paths[i], &st) != 0) {
            if (errno == ENOENT)
                return fdp_err_set(err, "%s: missing CIFAR-10 file (the %s set is %s)", paths[i],
                                   train ? "training" : "test",
                                   train ? "data_batch_1.bin .. data_batch_5.bin" : "test_batch.bin");
            return fdp_err_set(err, "%s: cannot open CIFAR-10 file: %s", paths[i], strerror(errno));
        }
        if (!S_ISREG(st.st_mode))
            return fdp_err_set(err, "%s: not a regular file (%s; expected a CIFAR-10 .bin file)", paths[i],
                               fdp_data_mode_name(st.st_mode));
        long long size = (long long)st.st_size;
        if (size == 0) return fdp_err_set(err, "%s: empty file (expected 3073-byte CIFAR-10 records)", paths[i]);
        if (size % CIFAR_RECORD != 0)
            return fdp_err_set(err, "%s: size %lld bytes is not a multiple of the 3073-byte CIFAR-10 record%s", paths[i],
                               size, size % 3074 == 0 ? " (a multiple of 3074: CIFAR-100 binary? not supported)" : "");
        records[i] = size / CIFAR_RECORD;
        total += records[i];
    }
    const int64_t count = (limit > 0 && limit < total) ? limit : total;
    out->images = fdp_xmalloc((size_t)count * CIFAR_PIXELS);
    out->labels = fdp_xmalloc((size_t)count * sizeof *out->labels);
    int64_t at = 0;
    for (int i = 0; i < nfiles && at < count; i++) {
        int64_t take = records[i] < count - at ? records[i] : count - at;
        if (read_cifar_file(paths[i], take, out->images + at * CIFAR_PIXELS, out->labels + at, err) != 0) {
            /* as fdp_dataset_free, which is dataset.c's: dataset.c calls this reader, not the reverse */
            free(out->images);
            free(out->labels);
            memset(out, 0, sizeof *out);
            return -1;
        }
        at += take;
    }
    out->n = count;
    out->c = 3;
    out->h = 32;
    out->w = 32;
    snprintf(out->source, sizeof out->source, "cifar10:%s (%s)", dir_or_file,
             given_dir ? (train ? "train" : "test") : "file");
    return 0;
}
