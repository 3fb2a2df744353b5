/* pack.h — flowdp-pack's library: converting datasets into packed HDF5 shards
 * (format: include/flowdp/shards.h), and the readers it needs: .npz/.npy
 * (the downsampled ImageNet of van den Oord et al.), JPEG/PNG folders with the
 * centre-crop + area-average resize, CIFAR-10 binary and IDX (data.h readers).
 *
 * ---- Inputs ------------------------------------------------------------------
 *  npz      a zip of .npy members (numpy.savez, stored or deflated): `data`
 *           uint8 (N, 3*S*S) or (N, 3, S, S), C order, each row CHW (R plane,
 *           G plane, B plane); `labels` (N) integers, 1-based (ImageNet class
 *           1..1000) — stored 0-based in the shards (label - 1). Members other
 *           than data/labels (e.g. `mean`) are ignored. A missing `labels`
 *           member gives labels -1. The .npy header is parsed (versions 1-3):
 *           descr must be an integer type (data: |u1; labels: i1..i8 / u1..u8,
 *           little-endian), fortran_order False, shape as above; the member
 *           must hold exactly the bytes the header promises.
 *  cifar10  a CIFAR-10 binary .bin file, or a directory (fdp_cifar10_load; the
 *           split "test" reads test_batch.bin, any other split data_batch_1..5).
 *  idx      an IDX images file (labels beside it are used when present), or a
 *           directory (fdp_dataset_load "idx"; split "test" -> t10k-*).
 *  images   a directory with one sub-folder per class; labels are the classes'
 *           positions in the byte-wise sorted list of sub-folder names, files
 *           are taken in sorted order inside each sub-folder (not recursing).
 *           Files named *.jpg, *.jpeg, *.png (any case) are decoded by their
 *           content (JPEG or PNG signature); other names are skipped and
 *           counted. A folder without sub-folders gives unlabeled images (-1).
 *
 * ---- The resize of JPEG/PNG images (images input only) -------------------------
 *  1. decode to 8-bit RGB: JPEG with libjpeg's default decompression settings
 *     (islow DCT, fancy upsampling), grey expanded to RGB by libjpeg; CMYK/YCCK
 *     JPEGs are converted as R = C*K/255 (Adobe, inverted) or
 *     (255-C)(255-K)/255 (not inverted), rounded; PNG through fdp_png_read
 *     (palette -> RGB, 16 -> 8 bits), grey replicated to R=G=B, alpha dropped.
 *  2. centre crop to a square of side m = min(H, W): rows [(H-m)/2, (H-m)/2+m),
 *     columns [(W-m)/2, (W-m)/2+m) (integer division).
 *  3. area average (box filter) from m x m to S x S: output pixel (i, j) is the
 *     mean of the crop over the square [i*m/S, (i+1)*m/S) x [j*m/S, (j+1)*m/S)
 *     in continuous pixel coordinates, each source pixel weighted by the area
 *     it shares with that square (a plain k x k average when m = k*S). Computed
 *     exactly in integers and rounded to nearest, halves up:
 *     out = floor((sum of weight*value + floor(m*m/2)) / (m*m)), the weights
 *     in units of 1/S^2 of a source pixel (they sum to m*m per output pixel).
 *     (m < S upsamples with the same rule.)
 *
 * ---- Shards -------------------------------------------------------------------
 * The samples of all inputs, in input order, are cut into shards of
 * `per_shard` images (or `per_shard` = ceil(total / shards) when a shard count
 * is asked for); a shard never spans two input files, so each input's last
 * shard may be smaller (and the count of shards may exceed the asked one by
 * up to inputs - 1). With threads > 1, inputs (npz, cifar10, idx: one input
 * each) and shards (images folders: one shard each) are packed in parallel;
 * HDF5 writes are serialized by fdp_hdf5_lock, decoding and resizing run in
 * parallel. */
#ifndef FLOWDP_PACK_H
#define FLOWDP_PACK_H
#include <stddef.h>
#include <stdint.h>

#include "flowdp/error.h"

typedef struct fdp_pack_opts {
    const char *out_dir;   /* created when missing */
    const char *split;     /* "train", "test", ...: file names and the index name <split>.index */
    const char *format;    /* "auto", "npz", "cifar10", "idx", "images" */
    int64_t per_shard;     /* images per shard (used when shards == 0) */
    int shards;            /* > 0: aim for this many shards */
    int size;              /* images input: output side S (required); npz: 0 or the archive's S */
    int64_t limit;         /* > 0: pack only the first `limit` images of the inputs */
    int threads;           /* >= 1 */
    int progress;          /* print a progress bar to stderr */
    int force;             /* replace an existing index / shards of the same names */
    int skip_bad;          /* images input: skip files that do not decode cleanly (else: refuse) */
} fdp_pack_opts;

/* the largest --size flowdp-pack accepts (image folders are resized to S x S) */
#define FDP_PACK_MAX_SIZE 1024

typedef struct fdp_pack_result {
    int64_t images;
    int shards;
    int h, w, c;
    double seconds;
    int64_t skipped_files; /* images input: files whose names are not .jpg/.jpeg/.png */
    int64_t bad_images;    /* images input with skip_bad: files skipped because they did not decode */
    char first_bad[1024];  /* the first of them: "path: what is wrong" */
    int64_t upscaled;      /* images input: images whose crop side was smaller than size (enlarged) */
    char index_path[4200];
} fdp_pack_result;

/* Pack inputs[0..n_inputs) (all of one format) into o->out_dir. Shards are
 * written under temporary names and renamed into place only when every shard is
 * done, the index last. On error nothing this run wrote is left behind (no
 * index, no shards, no temporaries; an output directory it created is removed
 * when empty), no file that existed before is changed, and -1 is returned.
 * Damaged JPEG/PNG files (libjpeg warnings such as a premature end of data,
 * libpng warnings and CRC errors) are refused unless o->skip_bad. */
int fdp_pack(const char *const *inputs, int n_inputs, const fdp_pack_opts *o, fdp_pack_result *res, fdp_err *err);

/* ---- pieces, exposed for tests --------------------------------------------------- */
typedef struct fdp_npy_header {
    char kind;        /* 'u' unsigned or 'i' signed integer ('f', 'b', ... are rejected) */
    int itemsize;     /* bytes per element */
    int fortran;      /* 1 when fortran_order is True */
    int ndim;
    int64_t shape[8];
    size_t data_offset; /* bytes before the data (magic + version + length + header) */
} fdp_npy_header;

/* Parse a .npy header from the first `len` bytes of a member (at least 10;
 * header lengths up to 64 KiB are accepted); name is for messages. */
int fdp_npy_parse_header(const uint8_t *buf, size_t len, fdp_npy_header *h, const char *name, fdp_err *err);

/* Decode a JPEG or PNG file (by content) to 8-bit RGB (h, w, 3), malloc'd.
 * Strict: any libjpeg/libpng warning (truncated data, CRC error, ...) is an error. */
int fdp_image_decode_rgb(const char *path, uint8_t **rgb, int *h, int *w, fdp_err *err);

/* Centre crop + area average of an (h, w, c) HWC image to (S, S, c) (rules above). */
void fdp_resize_crop_area(const uint8_t *src, int h, int w, int c, int S, uint8_t *dst);

#endif
