/* idx.c — the IDX reader (MNIST, Fashion-MNIST): gzipped or plain files,
 * checked against everything the header promises.
 *
 * An IDX file is a 4-byte magic (0x00 0x00, element type, number of dims), one
 * big-endian uint32 per dim, then the elements row-major. flowdp reads images
 * (0x00000803: unsigned bytes; n, h, w) and labels (0x00000801: unsigned bytes; n).
 * The file must hold exactly the bytes its header declares: a short file and
 * trailing bytes are both errors (for a gzipped file these are uncompressed
 * bytes, and a truncated gzip stream is its own error). The whole file is
 * checked even when `limit` keeps only the first samples; the bytes past the
 * limit are read and discarded, never stored. For a gzipped file the buffer
 * grows with the data actually decompressed, so a header that lies about huge
 * sizes cannot make us allocate more than the file holds. */
#include "flowdp/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data_open.h"

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_N ((uint64_t)1 << 31)
#define IDX_MAX_SIDE 65536u

/* ---- one open file, gzipped or plain ------------------------------------------ */

typedef struct idx_file {
    const char *path;
    FILE *plain;        /* plain file, or NULL */
    gzFile gz;          /* gzipped file, or NULL */
    uint64_t plain_size; /* size of the plain file in bytes */
} idx_file;

static void idx_close(idx_file *x) {
    if (x->plain) fclose(x->plain);
    if (x->gz) gzclose(x->gz);
    x->plain = NULL;
    x->gz = NULL;
}

static int idx_open(idx_file *x, const char *path, fdp_err *err) {
    memset(x, 0, sizeof *x);
    x->path = path;
    struct stat st;
    /* never fopen/gzopen the path itself: both block on a FIFO before any check */
    FILE *f = fdp_data_fopen_regular(path, "an IDX file", &st, err);
    if (!f) return -1;
    unsigned char m[2] = {0, 0};
    size_t got = fread(m, 1, 2, f);
    rewind(f);
    if (got == 2 && m[0] == 0x1f && m[1] == 0x8b) {
        int fd = dup(fileno(f)); /* shares the offset, which rewind set to 0 */
        int e = errno;
        fclose(f);
        x->gz = fd >= 0 ? gzdopen(fd, "rb") : NULL;
        if (!x->gz) {
            if (fd >= 0) e = errno, close(fd);
            return fdp_err_set(err, "%s: cannot open gzipped IDX file: %s", path, strerror(e));
        }
        gzbuffer(x->gz, 1u << 17);
        return 0;
    }
    x->plain = f;
    x->plain_size = (uint64_t)st.st_size;
    return 0;
}

/* Read up to len bytes; returns the count (fewer than len only at end of file),
 * or -1 with err set on a read error or a corrupt / truncated gzip stream. */
static int64_t idx_read(idx_file *x, void *buf, uint64_t len, fdp_err *err) {
    uint8_t *p = buf;
    uint64_t done = 0;
    while (done < len) {
        uint64_t chunk = len - done;
        if (chunk > (1u << 30)) chunk = 1u << 30;
        if (x->plain) {
            size_t r = fread(p + done, 1, (size_t)chunk, x->plain);
            done += r;
            if (r < chunk) {
                if (ferror(x->plain)) return fdp_err_set(err, "%s: read error: %s", x->path, strerror(errno));
                break;
            }
        } else {
            int r = gzread(x->gz, p + done, (unsigned)chunk);
            int errnum = Z_OK;
            const char *zmsg = gzerror(x->gz, &errnum);
            size_t pl = strlen(x->path); /* zlib prefixes its message with "path: " */
            if (strncmp(zmsg, x->path, pl) == 0 && zmsg[pl] == ':' && zmsg[pl + 1] == ' ') zmsg += pl + 2;
            if (r < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) {
                if (errnum == Z_BUF_ERROR)
                    return fdp_err_set(err, "%s: the gzip stream ends early (%s): the file is truncated", x->path, zmsg);
                return fdp_err_set(err, "%s: corrupt gzip stream: %s", x->path, zmsg);
            }
            done += (uint64_t)r;
            if ((uint64_t)r < chunk) break;
        }
    }
    return (int64_t)done;
}

/* Read and discard the rest of the file; returns how many bytes were left, or -1. */
static int64_t idx_count_rest(idx_file *x, fdp_err *err) {
    uint8_t scratch[1 << 16];
    int64_t total = 0;
    for (;;) {
        int64_t r = idx_read(x, scratch, sizeof scratch, err);
        if (r < 0) return -1;
        total += r;
        if (r < (int64_t)sizeof scratch) return total;
    }
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* ---- one IDX file: header checks and the first `limit` items ------------------ */

typedef struct idx_contents {
    uint32_t dims[3];  /* n, then h, w for images */
    int ndim;
    int64_t count;     /* items stored in data: min(n, limit) */
    uint8_t *data;     /* (count, item bytes) */
} idx_contents;

static const char *gz_note(const idx_file *x) { return x->gz ? " uncompressed" : ""; }

/* the magic and the dimensions (checked) into out; *item_bytes: bytes per item */
static int idx_read_header(idx_file *x, const char *path, uint32_t want_magic, idx_contents *out,
                           uint64_t *item_bytes, fdp_err *err) {
    const int is_images = want_magic == IDX_MAGIC_IMAGES;
    const char *kind = is_images ? "images" : "labels";
    const int ndim = (int)(want_magic & 0xffu);
    const uint64_t header_bytes = 4u + 4u * (uint64_t)ndim;
    unsigned char hdr[16];
    int64_t got = idx_read(x, hdr, 4, err);
    if (got < 0) return -1;
    if (got < 4)
        return fdp_err_set(err, "%s: file is short: %lld%s bytes, an IDX header needs at least 4", path,
                           (long long)got, gz_note(x));
    uint32_t magic = be32(hdr);
    if (magic != want_magic) {
        const char *hint = "";
        if (magic == IDX_MAGIC_LABELS) hint = " (this is an IDX labels file)";
        else if (magic == IDX_MAGIC_IMAGES) hint = " (this is an IDX images file)";
        else if (hdr[0] != 0 || hdr[1] != 0) hint = " (not an IDX file)";
        return fdp_err_set(err, "%s: wrong magic 0x%08x for an IDX %s file, expected 0x%08x (unsigned bytes, %d dims)%s",
                           path, magic, kind, want_magic, ndim, hint);
    }
    got = idx_read(x, hdr + 4, 4u * (uint64_t)ndim, err);
    if (got < 0) return -1;
    if ((uint64_t)got < 4u * (uint64_t)ndim)
        return fdp_err_set(err, "%s: file is short: %llu%s bytes, the IDX %s header needs %llu", path,
                           (unsigned long long)(4 + got), gz_note(x), kind, (unsigned long long)header_bytes);
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) out->dims[d] = be32(hdr + 4 + 4 * d);
    /* sizes: n <= 2^31, sides <= 2^16, so n * h * w <= 2^63 fits in uint64 */
    uint64_t n = out->dims[0];
    if (n < 1 || n > IDX_MAX_N)
        return fdp_err_set(err, "%s: header declares %llu %s; expected 1 .. 2^31", path, (unsigned long long)n, kind);
    *item_bytes = 1;
    if (is_images) {
        for (int d = 1; d < 3; d++)
            if (out->dims[d] < 1 || out->dims[d] > IDX_MAX_SIDE)
                return fdp_err_set(err, "%s: header declares images of %ux%u; each side must be 1 .. 65536", path,
                                   out->dims[1], out->dims[2]);
        *item_bytes = (uint64_t)out->dims[1] * out->dims[2];
    }
    return 0;
}

/* up to want bytes of payload into out->data (allocated); *have: bytes read */
static int idx_read_payload(idx_file *x, const char *path, const char *kind, uint64_t want, idx_contents *out,
                            uint64_t *have, fdp_err *err) {
    /* plain: the size is verified, allocate at once; gzip: grow with the data */
    uint64_t cap = x->plain ? want : (want < ((uint64_t)16 << 20) ? want : ((uint64_t)16 << 20));
    if (cap > (uint64_t)SIZE_MAX)
        return fdp_err_set(err, "%s: %llu bytes of %s do not fit in memory", path, (unsigned long long)want, kind);
    out->data = malloc(cap ? (size_t)cap : 1);
    if (!out->data)
        return fdp_err_set(err, "%s: cannot allocate %llu bytes for the %s", path, (unsigned long long)cap, kind);
    *have = 0;
    for (;;) {
        int64_t r = idx_read(x, out->data + *have, cap - *have, err);
        if (r < 0) return -1;
        *have += (uint64_t)r;
        if (*have < cap || cap == want) return 0; /* end of file, or done */
        uint64_t ncap = cap * 2 < want ? cap * 2 : want;
        uint8_t *p = realloc(out->data, (size_t)ncap);
        if (!p)
            return fdp_err_set(err, "%s: cannot allocate %llu bytes for the %s", path, (unsigned long long)ncap, kind);
        out->data = p;
        cap = ncap;
    }
}

static int idx_read_file(const char *path, uint32_t want_magic, int64_t limit, idx_contents *out, fdp_err *err) {
    memset(out, 0, sizeof *out);
    const int is_images = want_magic == IDX_MAGIC_IMAGES;
    const char *kind = is_images ? "images" : "labels";
    const uint64_t header_bytes = 4u + 4u * (uint64_t)(want_magic & 0xffu);

    idx_file x;
    if (idx_open(&x, path, err) != 0) return -1;
    uint64_t item_bytes = 1, have = 0;
    if (idx_read_header(&x, path, want_magic, out, &item_bytes, err) != 0) goto fail;
    const uint64_t n = out->dims[0];
    const uint64_t payload = n * item_bytes;
    const uint64_t expected = header_bytes + payload;
    char what[128];
    if (is_images)
        snprintf(what, sizeof what, "%llu-byte header + %llu images of %ux%u", (unsigned long long)header_bytes,
                 (unsigned long long)n, out->dims[1], out->dims[2]);
    else
        snprintf(what, sizeof what, "%llu-byte header + %llu labels", (unsigned long long)header_bytes,
                 (unsigned long long)n);

    if (x.plain && x.plain_size != expected) { /* plain: the size is known before reading */
        if (x.plain_size < expected)
            fdp_err_set(err, "%s: file is short: expected %llu bytes (%s), found %llu", path,
                        (unsigned long long)expected, what, (unsigned long long)x.plain_size);
        else
            fdp_err_set(err, "%s: %llu trailing bytes: expected %llu bytes (%s), found %llu", path,
                        (unsigned long long)(x.plain_size - expected), (unsigned long long)expected, what,
                        (unsigned long long)x.plain_size);
        goto fail;
    }

    const uint64_t count = (limit > 0 && (uint64_t)limit < n) ? (uint64_t)limit : n;
    const uint64_t want = count * item_bytes;
    if (idx_read_payload(&x, path, kind, want, out, &have, err) != 0) goto fail;
    int64_t rest = 0;
    if (have == want) {
        rest = idx_count_rest(&x, err);
        if (rest < 0) goto fail;
    }
    const uint64_t found = header_bytes + have + (uint64_t)rest;
    if (found < expected) {
        fdp_err_set(err, "%s: file is short: expected %llu%s bytes (%s), found %llu", path,
                    (unsigned long long)expected, gz_note(&x), what, (unsigned long long)found);
        goto fail;
    }
    if (found > expected) {
        fdp_err_set(err, "%s: %llu trailing bytes: expected %llu%s bytes (%s), found %llu", path,
                    (unsigned long long)(found - expected), (unsigned long long)expected, gz_note(&x), what,
                    (unsigned long long)found);
        goto fail;
    }
    out->count = (int64_t)count;
    idx_close(&x);
    return 0;

fail:
    idx_close(&x);
    free(out->data);
    memset(out, 0, sizeof *out);
    return -1;
}

int fdp_idx_load(const char *images_path, const char *labels_path, int64_t limit, fdp_dataset *out, fdp_err *err) {
    memset(out, 0, sizeof *out);
    if (limit < 0) return fdp_err_set(err, "%s: limit %lld is negative (0 = all)", images_path, (long long)limit);
    idx_contents im, lb;
    memset(&lb, 0, sizeof lb);
    if (idx_read_file(images_path, IDX_MAGIC_IMAGES, limit, &im, err) != 0) return -1;
    if (labels_path) {
        if (idx_read_file(labels_path, IDX_MAGIC_LABELS, limit, &lb, err) != 0) {
            free(im.data);
            return -1;
        }
        if (lb.dims[0] != im.dims[0]) {
            fdp_err_set(err, "%s: holds %u labels but %s holds %u images", labels_path, lb.dims[0], images_path,
                        im.dims[0]);
            free(im.data);
            free(lb.data);
            return -1;
        }
        out->labels = fdp_xmalloc((size_t)lb.count * sizeof *out->labels);
        for (int64_t i = 0; i < lb.count; i++) out->labels[i] = lb.data[i];
        free(lb.data);
    }
    out->images = im.data;
    out->n = im.count;
    out->c = 1;
    out->h = (int)im.dims[1];
    out->w = (int)im.dims[2];
    snprintf(out->source, sizeof out->source, "idx:%s", images_path);
    return 0;
}
