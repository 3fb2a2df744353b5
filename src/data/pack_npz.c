/* pack_npz.c — flowdp-pack's .npz reader (a zip of .npy members, libzip): the
 * member headers, their sizes checked against the shapes (every product checked
 * for overflow), streaming reads. Rules: include/flowdp/pack.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "data_open.h"
#include "pack_internal.h"

void pk_npz_close(npz *z) {
    if (z->data) zip_fclose(z->data);
    if (z->labels) zip_fclose(z->labels);
    if (z->za) zip_discard(z->za);
    memset(z, 0, sizeof *z);
}

/* read exactly n bytes from a member; -1 + err on a short read or corrupt data */
int pk_zread(zip_file_t *f, void *buf, size_t n, const char *path, const char *member, fdp_err *err) {
    size_t got = 0;
    while (got < n) {
        zip_int64_t r = zip_fread(f, (char *)buf + got, n - got);
        if (r < 0 && zip_error_code_zip(zip_file_get_error(f)) == ZIP_ER_CRC)
            return fdp_err_set(err, "%s: member %s fails its CRC-32 check (CRC error): the archive is damaged", path,
                               member);
        if (r < 0) return fdp_err_set(err, "%s: member %s: %s", path, member, zip_file_strerror(f));
        if (r == 0) return fdp_err_set(err, "%s: member %s is truncated (ends after %zu more bytes, %zu expected)", path, member, got, n);
        got += (size_t)r;
    }
    return 0;
}

/* read a member on to its end, where libzip checks the CRC-32; -1 + err on a mismatch */
int pk_zread_to_end(zip_file_t *f, const char *path, const char *member, fdp_err *err) {
    char scratch[1 << 14];
    for (;;) {
        zip_int64_t r = zip_fread(f, scratch, sizeof scratch);
        if (r == 0) return 0;
        if (r > 0) continue;
        if (zip_error_code_zip(zip_file_get_error(f)) == ZIP_ER_CRC)
            return fdp_err_set(err, "%s: member %s fails its CRC-32 check (CRC error): the archive is damaged", path,
                               member);
        return fdp_err_set(err, "%s: member %s: %s", path, member, zip_file_strerror(f));
    }
}

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return le16(p) | le16(p + 2) << 16; }

/* the name of a member listed twice in the central directory of the zip at fd (libzip
 * refuses such an archive with "File already exists"); 1 when found */
static int npz_duplicate_name(int fd, char *out, size_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 22) return 0;
    size_t tail = st.st_size < 65535 + 22 ? (size_t)st.st_size : 65535 + 22;
    uint8_t *buf = malloc(tail), *cd = NULL;
    int found = 0;
    if (!buf || pread(fd, buf, tail, st.st_size - (off_t)tail) != (ssize_t)tail) goto done;
    size_t i = tail - 22;
    while (i > 0 && le32(buf + i) != 0x06054b50u) i--;
    if (le32(buf + i) != 0x06054b50u) goto done;
    uint32_t n = le16(buf + i + 10), cd_size = le32(buf + i + 12), cd_off = le32(buf + i + 16);
    if (cd_size > (64u << 20) || (uint64_t)cd_off + cd_size > (uint64_t)st.st_size || n > 4096) goto done;
    cd = malloc(cd_size ? cd_size : 1);
    if (!cd || pread(fd, cd, cd_size, cd_off) != (ssize_t)cd_size) goto done;
    const uint8_t *names[4096];
    uint32_t lens[4096], k = 0;
    for (const uint8_t *p = cd; k < n && p + 46 <= cd + cd_size && le32(p) == 0x02014b50u; k++) {
        lens[k] = le16(p + 28);
        names[k] = p + 46;
        if (names[k] + lens[k] > cd + cd_size) break;
        for (uint32_t j = 0; j < k && !found; j++)
            if (lens[j] == lens[k] && memcmp(names[j], names[k], lens[k]) == 0) {
                snprintf(out, len, "%.*s", (int)(lens[k] < 255 ? lens[k] : 255), (const char *)names[k]);
                found = 1;
            }
        if (found) break;
        p = names[k] + lens[k] + le16(p + 30) + le16(p + 32);
    }
done:
    free(buf);
    free(cd);
    return found;
}

/* the archive at in->path through a descriptor opened without blocking (a FIFO would hang
 * zip_open) */
static zip_t *npz_open_archive(const char *path, fdp_err *err) {
    int fd = fdp_data_open_regular(path, "an .npz archive", NULL, err);
    if (fd < 0) return NULL;
    int code = 0;
    zip_t *za = zip_fdopen(fd, ZIP_CHECKCONS, &code); /* read-only; owns fd on success */
    if (za) return za;
    char dup[256];
    if (code == ZIP_ER_EXISTS && npz_duplicate_name(fd, dup, sizeof dup))
        fdp_err_set(err, "%s: two members named %s (a duplicate member: which one is meant is ambiguous)", path, dup);
    else if (code == ZIP_ER_EXISTS)
        fdp_err_set(err, "%s: two members have the same name (a duplicate member)", path);
    else {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        fdp_err_set(err, "%s: cannot open as .npz (zip) archive: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
    }
    close(fd);
    return NULL;
}

/* labels.npy must be 1-D with one label per row of data.npy */
static int check_labels_shape(const pk_input *in, fdp_err *err) {
    const fdp_npy_header *h = &in->labels_h;
    if (h->ndim == 1 && h->shape[0] == in->npz_rows) return 0;
    char shape[200] = "";
    size_t n = 0;
    for (int k = 0; k < h->ndim && n < sizeof shape - 24; k++)
        n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", k ? ", " : "", (long long)h->shape[k]);
    if (h->ndim == 1) snprintf(shape + n, sizeof shape - n, ",");
    return fdp_err_set(err, "%s: labels.npy has shape (%s): expected a 1-D array of %lld labels (N,), one per row of "
                       "data.npy", in->path, shape, (long long)in->npz_rows);
}

/* open the archive and parse the headers (data required, labels optional); leaves
 * the member streams positioned at their data */
int pk_npz_open(pk_input *in, npz *z, fdp_err *err) {
    memset(z, 0, sizeof *z);
    z->za = npz_open_archive(in->path, err);
    if (!z->za) return -1;
    z->data_i = zip_name_locate(z->za, "data.npy", ZIP_FL_NODIR);
    z->labels_i = zip_name_locate(z->za, "labels.npy", ZIP_FL_NODIR);
    if (z->data_i < 0) {
        pk_npz_close(z);
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
            pk_npz_close(z);
            return fdp_err_set(err, "%s: cannot stat member %s", in->path, names[m]);
        }
        *fs[m] = zip_fopen_index(z->za, (zip_uint64_t)idx[m], 0);
        if (!*fs[m]) {
            fdp_err_set(err, "%s: cannot open member %s: %s", in->path, names[m], zip_strerror(z->za));
            pk_npz_close(z);
            return -1;
        }
        /* the header: magic, version and length (10 bytes; 12 from version 2.0), then its declared length */
        uint8_t head[12];
        char what[PK_PATH_MAX + 32];
        snprintf(what, sizeof what, "%s:%s", in->path, names[m]);
        size_t first = st.size < 10 ? (size_t)st.size : 10;
        if (pk_zread(*fs[m], head, first, in->path, names[m], err) != 0) {
            pk_npz_close(z);
            return -1;
        }
        if (first < 10 || memcmp(head, "\x93NUMPY", 6) != 0) {
            pk_npz_close(z);
            return fdp_err_set(err, "%s: %s", what, first < 10 ? "truncated .npy header (under 10 bytes)" : "not a .npy member (no \\x93NUMPY magic)");
        }
        if (head[6] >= 2 && st.size >= 12) {
            if (pk_zread(*fs[m], head + 10, 2, in->path, names[m], err) != 0) {
                pk_npz_close(z);
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
            pk_npz_close(z);
            return fdp_err_set(err, "%s: truncated .npy header (%llu bytes in the member, header needs %zu)", what,
                               (unsigned long long)st.size, hl);
        }
        uint8_t *hb = malloc(hl);
        if (!hb) {
            pk_npz_close(z);
            return fdp_err_set(err, "%s: out of memory", in->path);
        }
        memcpy(hb, head, first);
        int rc = pk_zread(*fs[m], hb + first, hl - first, in->path, names[m], err) != 0 ? -1
                                                                                   : fdp_npy_parse_header(hb, hl, h, what, err);
        free(hb);
        if (rc != 0) {
            pk_npz_close(z);
            return -1;
        }
        if (h->fortran) {
            pk_npz_close(z);
            return fdp_err_set(err, "%s: fortran_order True is not supported (save the array in C order)", what);
        }
        /* no overflow: fdp_npy_parse_header checked every product and the sum */
        int64_t bytes = h->itemsize;
        for (int d = 0; d < h->ndim; d++) bytes *= h->shape[d];
        uint64_t want = (uint64_t)bytes + h->data_offset;
        if ((uint64_t)st.size != want) {
            pk_npz_close(z);
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
    if (D >= 3 && D <= 3LL * 65536 * 65536) { /* S = isqrt(D / 3), exact in integers */
        int64_t lo = 1, hi = 65536; /* the largest S with 3*S*S <= D */
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (mid * mid * 3 <= D) lo = mid;
            else hi = mid - 1;
        }
        S = lo;
    }
    if (D < 3 || S * S * 3 != D || S > 65536) {
        pk_npz_close(z);
        return fdp_err_set(err,
                           "%s: data.npy is %c%d with shape of %d dims; supported: uint8 (N, 3*S*S) or (N, 3, S, S), "
                           "rows in CHW order",
                           in->path, d->kind, d->itemsize * 8, d->ndim);
    }
    in->npz_rows = d->shape[0];
    in->h = in->w = (int)S;
    in->c = 3;
    in->has_labels = z->labels_i >= 0;
    if (in->has_labels && check_labels_shape(in, err) != 0) {
        pk_npz_close(z);
        return -1;
    }
    return 0;
}

/* little-endian integer of the labels dtype -> int64 */
int64_t pk_label_value(const uint8_t *p, const fdp_npy_header *h) {
    uint64_t u = 0;
    for (int b = 0; b < h->itemsize; b++) u |= (uint64_t)p[b] << (8 * b);
    if (h->kind == 'i' && h->itemsize < 8 && (u >> (8 * h->itemsize - 1)) & 1) u |= ~(uint64_t)0 << (8 * h->itemsize);
    return (int64_t)u;
}
