/* pack_internal.h — private to flowdp-pack's library (src/data/pack*.c): the
 * planned inputs, the packer's shared state, the npz and image-folder pieces. */
#ifndef FLOWDP_PACK_INTERNAL_H
#define FLOWDP_PACK_INTERNAL_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <zip.h>

#include "flowdp/data.h"
#include "flowdp/pack.h"
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
    int64_t bad_images;   /* --skip-bad: files dropped because they do not decode */
    char first_bad[1024]; /* the first of them: "path: what is wrong" */
    atomic_llong upscaled; /* images whose crop side is under the output side */
    pk_unit *units;
    int n_units;
    atomic_int next_unit;
    atomic_llong done;
    atomic_int failed;
    pthread_mutex_t err_mu;
    fdp_err err;
    char *written; /* (n_shards) 1 when this run wrote shard i */
} packer;

/* ---- npz -------------------------------------------------------------------- */
typedef struct npz {
    zip_t *za;
    zip_file_t *data, *labels;
    zip_int64_t data_i, labels_i;
} npz;

/* 1 when s ends with suffix, ASCII case ignored (pack.c, pack_images.c: here, so that
 * pack_images.c does not call back into pack.c, which calls it) */
static inline int pk_ends_with_ci(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}
/* 1 when name can be written into a line of the shard index: no control characters
 * (a newline would start a record of its own) */
static inline int pk_index_safe_name(const char *name) {
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f) return 0;
    return 1;
}
/* npz (pack_npz.c): open the archive and parse the headers (data required,
 * labels optional), leaving the member streams at their data */
int pk_npz_open(pk_input *in, npz *z, fdp_err *err);
void pk_npz_close(npz *z);
/* read exactly n bytes from a member; -1 + err on a short read or corrupt data */
int pk_zread(zip_file_t *f, void *buf, size_t n, const char *path, const char *member, fdp_err *err);
/* read a member on to its end, where libzip checks the CRC-32; -1 + err on a mismatch */
int pk_zread_to_end(zip_file_t *f, const char *path, const char *member, fdp_err *err);
/* little-endian integer of the labels dtype -> int64 */
int64_t pk_label_value(const uint8_t *p, const fdp_npy_header *h);
/* image folders (pack_images.c): list the files and labels of in; with
 * o->skip_bad, decode each file once and drop the ones that do not decode */
int pk_plan_images(packer *pk, pk_input *in, int64_t remaining, fdp_err *err);

#endif
