/* npy.c — the .npy header parser (numpy format versions 1.0, 2.0, 3.0).
 *
 * A .npy file: magic "\x93NUMPY", major, minor, the header length (2 bytes
 * little-endian in 1.0, 4 bytes in 2.0/3.0), then the header: a Python dict
 * literal such as {'descr': '|u1', 'fortran_order': False, 'shape': (1281167, 3072), }
 * padded with spaces and ending in '\n'. The data follows. Only what flowdp-pack
 * reads is accepted: integer dtypes, little-endian or byte-sized. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/pack.h"

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* a quoted string at p ('...' or "..."), copied into out; returns past it or NULL */
static const char *parse_str(const char *p, const char *end, char *out, size_t len) {
    if (p >= end || (*p != '\'' && *p != '"')) return NULL;
    char q = *p++;
    size_t n = 0;
    while (p < end && *p != q) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) return NULL; /* printable ASCII only: keys go into messages */
        if (n + 1 < len) out[n++] = *p;
        p++;
    }
    if (p >= end) return NULL;
    out[n] = 0;
    return p + 1;
}

int fdp_npy_parse_header(const uint8_t *buf, size_t len, fdp_npy_header *h, const char *name, fdp_err *err) {
    memset(h, 0, sizeof *h);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return fdp_err_set(err, "%s: not a .npy member (no \\x93NUMPY magic)", name);
    int major = buf[6];
    size_t hlen, pre;
    if (major == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        pre = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return fdp_err_set(err, "%s: truncated .npy header", name);
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        pre = 12;
    } else {
        return fdp_err_set(err, "%s: .npy format version %d.%d is not supported (1.0 to 3.0 are)", name, major, buf[7]);
    }
    if (hlen > 65536) return fdp_err_set(err, "%s: .npy header of %zu bytes is implausibly long", name, hlen);
    if (pre + hlen > len) return fdp_err_set(err, "%s: truncated .npy header (%zu of %zu bytes)", name, len - pre, hlen);
    const char *p = (const char *)buf + pre, *end = p + hlen;
    h->data_offset = pre + hlen;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return fdp_err_set(err, "%s: .npy header is not a dict", name);
    p++;
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    char descr[32] = "";
    for (;;) {
        p = skip_ws(p, end);
        if (p < end && *p == '}') break;
        char key[32];
        p = parse_str(p, end, key, sizeof key);
        if (!p) return fdp_err_set(err, "%s: .npy header: expected a quoted key", name);
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return fdp_err_set(err, "%s: .npy header: expected ':' after '%s'", name, key);
        p = skip_ws(p + 1, end);
        if (strcmp(key, "descr") == 0) {
            p = parse_str(p, end, descr, sizeof descr);
            if (!p) return fdp_err_set(err, "%s: .npy header: descr is not a string (structured dtypes are not supported)", name);
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (end - p >= 4 && memcmp(p, "True", 4) == 0) {
                h->fortran = 1;
                p += 4;
            } else if (end - p >= 5 && memcmp(p, "False", 5) == 0) {
                p += 5;
            } else {
                return fdp_err_set(err, "%s: .npy header: fortran_order is neither True nor False", name);
            }
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (p >= end || *p != '(') return fdp_err_set(err, "%s: .npy header: shape is not a tuple", name);
            p++;
            for (;;) {
                p = skip_ws(p, end);
                if (p < end && *p == ')') {
                    p++;
                    break;
                }
                /* digits within [p, end) only: the header is not NUL-terminated */
                const char *e = p;
                long long v = 0;
                while (e < end && *e >= '0' && *e <= '9') {
                    if (v > (INT64_MAX - 9) / 10)
                        return fdp_err_set(err, "%s: .npy header: dimension %d of the shape is too large (over 2^63)",
                                           name, h->ndim);
                    v = v * 10 + (*e++ - '0');
                }
                if (e == p) return fdp_err_set(err, "%s: .npy header: bad dimension in shape", name);
                if (h->ndim == 8) return fdp_err_set(err, "%s: .npy header: more than 8 dimensions", name);
                h->shape[h->ndim++] = v;
                p = skip_ws(e, end);
                if (p < end && *p == ',') p++;
            }
            have_shape = 1;
        } else {
            return fdp_err_set(err, "%s: .npy header: unknown key '%s'", name, key);
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') p++;
    }
    if (!have_descr || !have_fortran || !have_shape)
        return fdp_err_set(err, "%s: .npy header lacks %s", name, !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    /* descr: byte order ('<' little, '|' not applicable, '=' native = little here), kind, size */
    const char *d = descr;
    char order = 0;
    if (*d == '<' || *d == '|' || *d == '=' || *d == '>') order = *d++;
    char kind = *d;
    int size = atoi(d + 1);
    if ((kind != 'u' && kind != 'i') || (size != 1 && size != 2 && size != 4 && size != 8))
        return fdp_err_set(err, "%s: dtype '%s' is not supported (integer types only, e.g. |u1 or <i8)", name, descr);
    if (order == '>' && size > 1) return fdp_err_set(err, "%s: big-endian dtype '%s' is not supported", name, descr);
    h->kind = kind;
    h->itemsize = size;
    /* the byte count: every product checked (a shape such as (2^40, 2^40) must not wrap) */
    int64_t bytes = size;
    for (int d = 0; d < h->ndim; d++) /* zero dimensions skipped: the others' products must still fit */
        if ((h->shape[d] && __builtin_mul_overflow(bytes, h->shape[d], &bytes)) ||
            bytes > INT64_MAX - (int64_t)h->data_offset) {
            char shape[160] = "";
            size_t n = 0;
            for (int k = 0; k < h->ndim && n < sizeof shape - 24; k++)
                n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", k ? ", " : "", (long long)h->shape[k]);
            return fdp_err_set(err, "%s: .npy shape (%s) of %s is too large: its size in bytes overflows 64 bits", name,
                               shape, descr);
        }
    return 0;
}
