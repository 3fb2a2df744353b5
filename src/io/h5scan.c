/* h5scan.c — one pass over an HDF5 file's bytes before libhdf5 opens it: the flowdp
 * trailer (XXH64 of every byte before it) and the global heap collections. See
 * include/flowdp/h5util.h.
 *
 * Global heap collections carry no checksum. Variable-length strings (checkpoint and
 * shard attributes, a checkpoint's /config) live in them, and libhdf5 1.10.8 decodes
 * a collection's objects in a loop that never advances on a free-space object of
 * size 0 (H5HG__cache_heap_deserialize: a damaged file hangs the reader forever,
 * found by tests/fuzz/fuzz_checkpoint and fuzz_shard) and walks past the collection
 * on sizes that do not fit. So every collection ("GCOL", version 1, a size that fits
 * in the file) is walked the same way and must end exactly at its end with every
 * object inside it. A byte pattern in raw data that looks like such a collection
 * header but is not one would be refused too: with a 4-byte signature, a version
 * byte, three zero bytes and a plausible size, that takes ~2^-56 per byte. */
#include "flowdp/h5util.h"
#include "flowdp/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flowdp/xxh64.h"

static const unsigned char trailer_magic[8] = {'F', 'D', 'P', 'X', 'X', 'H', '6', '4'};

size_t fdp_h5_add_trailer(void *image, size_t n) {
    unsigned char *t = (unsigned char *)image + n;
    uint64_t sum = fdp_xxh64(image, n, 0);
    memcpy(t, trailer_magic, 8);
    for (int i = 0; i < 8; i++) t[8 + i] = (unsigned char)(sum >> (8 * i));
    return n + FDP_H5_TRAILER_SIZE;
}

static int check_one_gcol(const unsigned char *c, uint64_t size) {
    uint64_t pos = 16; /* "GCOL", version, 3 reserved, 8-byte collection size */
    while (pos < size) {
        if (size - pos < 16) return 0; /* a tail too small for an object header: free space */
        unsigned idx = (unsigned)c[pos] | (unsigned)c[pos + 1] << 8;
        uint64_t osize = 0;
        for (int i = 0; i < 8; i++) osize |= (uint64_t)c[pos + 8 + i] << (8 * i);
        uint64_t need;
        if (idx == 0) {
            need = osize; /* free space: the rest of the collection */
            if (need == 0) return -1;
        } else {
            if (osize > size) return -1;
            need = 16 + ((osize + 7) & ~(uint64_t)7);
        }
        if (need > size - pos) return -1;
        pos += need;
    }
    return 0;
}


int fdp_h5_prescan(const char *path, uint64_t limit, fdp_h5_scan *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    uint64_t fsize = (uint64_t)st.st_size, body = fsize;
    int e = 0;
    unsigned char tail[FDP_H5_TRAILER_SIZE];
    if (limit >= fsize && fsize >= FDP_H5_TRAILER_SIZE + 8) {
        e = fdp_pread_all(fd, tail, sizeof tail, fsize - FDP_H5_TRAILER_SIZE);
        if (!e && memcmp(tail, trailer_magic, 8) == 0) {
            out->trailer = FDP_H5_TRAILER_OK; /* until the hash says otherwise */
            body = fsize - FDP_H5_TRAILER_SIZE;
        }
    }
    uint64_t scan = limit < body ? limit : body;
    fdp_xxh64_state h;
    fdp_xxh64_init(&h, 0);
    enum { BLOCK = 1 << 20 };
    unsigned char *buf = e ? NULL : malloc(BLOCK + 16), *col = NULL;
    if (!e && !buf) e = ENOMEM;
    for (uint64_t base = 0; !e && base < (out->trailer ? body : scan); base += BLOCK) {
        uint64_t end = out->trailer ? body : scan;
        /* this block plus the 15 bytes of a collection header that may start in it */
        size_t want = (size_t)(end - base < BLOCK + 16 ? end - base : BLOCK + 16);
        if ((e = fdp_pread_all(fd, buf, want, base)) != 0) break;
        size_t own = want < BLOCK ? want : BLOCK;
        if (out->trailer) fdp_xxh64_update(&h, buf, own);
        for (size_t i = 0; base + i < scan && i + 16 <= want && i < own && !out->bad_gcol; i++) {
            if (buf[i] != 'G' || memcmp(buf + i, "GCOL\1\0\0\0", 8) != 0) continue;
            uint64_t csize = 0;
            for (int k = 0; k < 8; k++) csize |= (uint64_t)buf[i + 8 + k] << (8 * k);
            uint64_t at = base + i;
            if (csize < 4096 || csize > body - at) continue; /* HDF5 refuses those itself */
            unsigned char *nc = realloc(col, (size_t)csize);
            if (!nc) {
                e = ENOMEM;
                break;
            }
            col = nc;
            if ((e = fdp_pread_all(fd, col, (size_t)csize, at)) != 0) break;
            if (check_one_gcol(col, csize) != 0) out->bad_gcol = at + 1;
        }
    }
    if (!e && out->trailer) {
        uint64_t want = 0;
        for (int i = 0; i < 8; i++) want |= (uint64_t)tail[8 + i] << (8 * i);
        if (fdp_xxh64_digest(&h) != want) out->trailer = FDP_H5_TRAILER_BAD;
    }
    free(col);
    free(buf);
    close(fd);
    return e;
}
