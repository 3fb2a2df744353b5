/* h5util.c — see include/flowdp/h5util.h. */
#include "flowdp/h5util.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

void fdp_h5_quiet_begin(fdp_h5_quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void fdp_h5_quiet_end(const fdp_h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

#define CAUSE_DESC_MAX 512

static herr_t innermost_cb(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) snprintf((char *)data, CAUSE_DESC_MAX, "%s", e->desc);
    return 0;
}

const char *fdp_h5_cause(char *out, size_t len) {
    char desc[CAUSE_DESC_MAX] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_cb, desc);
    const char *key = "error message = '";
    const char *em = strstr(desc, key);
    if (em) {
        em += strlen(key);
        const char *end = strchr(em, '\'');
        int n = end ? (int)(end - em) : (int)strlen(em);
        snprintf(out, len, "%.*s (HDF5)", n, em);
    } else if (desc[0]) {
        snprintf(out, len, "HDF5: %s", desc);
    } else {
        snprintf(out, len, "HDF5 error");
    }
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    return out;
}

hid_t fdp_h5_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 || H5Pset_file_locking(fapl, 1, 1) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

/* Bob Jenkins' lookup3 hashlittle, byte-wise: HDF5's metadata checksum
 * (H5_checksum_lookup3, initval 0), stored little-endian after the checksummed bytes. */
#define L3_ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
static uint32_t lookup3(const unsigned char *k, size_t length, uint32_t initval) {
    uint32_t a, b, c;
    a = b = c = 0xdeadbeefu + (uint32_t)length + initval;
    while (length > 12) {
        a += k[0] + ((uint32_t)k[1] << 8) + ((uint32_t)k[2] << 16) + ((uint32_t)k[3] << 24);
        b += k[4] + ((uint32_t)k[5] << 8) + ((uint32_t)k[6] << 16) + ((uint32_t)k[7] << 24);
        c += k[8] + ((uint32_t)k[9] << 8) + ((uint32_t)k[10] << 16) + ((uint32_t)k[11] << 24);
        a -= c, a ^= L3_ROT(c, 4), c += b;
        b -= a, b ^= L3_ROT(a, 6), a += c;
        c -= b, c ^= L3_ROT(b, 8), b += a;
        a -= c, a ^= L3_ROT(c, 16), c += b;
        b -= a, b ^= L3_ROT(a, 19), a += c;
        c -= b, c ^= L3_ROT(b, 4), b += a;
        length -= 12;
        k += 12;
    }
    if (length == 0) return c;
    uint32_t w[3] = {0, 0, 0}; /* the zero-padded tail, little-endian words */
    for (size_t i = 0; i < length; i++) w[i / 4] += (uint32_t)k[i] << (8 * (i % 4));
    a += w[0], b += w[1], c += w[2];
    c ^= b, c -= L3_ROT(b, 14);
    a ^= c, a -= L3_ROT(c, 11);
    b ^= a, b -= L3_ROT(a, 25);
    c ^= b, c -= L3_ROT(b, 16);
    a ^= c, a -= L3_ROT(c, 4);
    b ^= a, b -= L3_ROT(a, 14);
    c ^= b, c -= L3_ROT(b, 24);
    return c;
}
#undef L3_ROT

/* HDF5 1.10.8's H5Fget_file_image returns a version-2 superblock whose checksum
 * does not match its bytes (an image written as is does not open: "incorrect
 * metadata checksum"). Recompute it. The superblock (at offset 0: we created the
 * file) is signature(8) version(1) sizes(2) flags(1) 4 addresses of 8 bytes and
 * the checksum of those 44 bytes. Returns 0, or -1 when it is not that superblock. */
int fdp_h5_image_fix_superblock(unsigned char *img, size_t n) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (n < 48 || memcmp(img, sig, 8) != 0 || img[8] != 2 || img[9] != 8 || img[10] != 8) return -1;
    uint32_t sum = lookup3(img, 44, 0);
    for (int i = 0; i < 4; i++) img[44 + i] = (unsigned char)(sum >> (8 * i));
    return 0;
}

int fdp_h5_is_hdf5(const void *data, size_t n) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    return n >= 8 && memcmp(data, sig, 8) == 0;
}

/* HDF5's own atexit handler closes what is still open. A file whose metadata was
 * damaged (a checkpoint written by another tool, without flowdp's trailer) can fail
 * to close; the handler then loops, prints "infinite loop closing library" and a
 * page of ids. flowdp never leaves a file open for writing (checkpoints and metrics
 * are written from memory images), so there is nothing for the handler to save:
 * switch it off before the library starts. */
__attribute__((constructor)) static void no_hdf5_atexit(void) { H5dont_atexit(); }
