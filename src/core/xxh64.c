/* xxh64.c — XXH64, the standard xxHash64 (Yann Collet), streaming. Used for the
 * checkpoint checksum (src/io/checkpoint_meta.c) and trailer (src/io/h5scan.c), the shard checksum (src/data/shards.c) and the
 * cross-rank parameter checksum (fdp_checksum_f32 in src/dist/comm.c).
 * Input words are read as little-endian (the hosts flowdp supports). */
#include "flowdp/xxh64.h"

#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "xxh64.c reads 64-bit words as little-endian"
#endif

#define XXH_P1 0x9E3779B185EBCA87ull
#define XXH_P2 0xC2B2AE3D27D4EB4Full
#define XXH_P3 0x165667B19E3779F9ull
#define XXH_P4 0x85EBCA77C2B2AE63ull
#define XXH_P5 0x27D4EB2F165667C5ull

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t read64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static uint32_t read32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t xxh_round(uint64_t acc, uint64_t in) {
    acc += in * XXH_P2;
    acc = rotl64(acc, 31);
    return acc * XXH_P1;
}
static uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * XXH_P1 + XXH_P4;
}

void fdp_xxh64_init(fdp_xxh64_state *h, uint64_t seed) {
    memset(h, 0, sizeof *h);
    h->seed = seed;
    h->v[0] = seed + XXH_P1 + XXH_P2;
    h->v[1] = seed + XXH_P2;
    h->v[2] = seed;
    h->v[3] = seed - XXH_P1;
}

void fdp_xxh64_update(fdp_xxh64_state *h, const void *data, size_t n) {
    if (n == 0) return;
    const unsigned char *p = data;
    h->total += n;
    if (h->memsize + n < 32) {
        memcpy(h->mem + h->memsize, p, n);
        h->memsize += n;
        return;
    }
    if (h->memsize) {
        size_t fill = 32 - h->memsize;
        memcpy(h->mem + h->memsize, p, fill);
        for (int i = 0; i < 4; i++) h->v[i] = xxh_round(h->v[i], read64(h->mem + 8 * i));
        p += fill;
        n -= fill;
        h->memsize = 0;
    }
    if (n >= 32) {
        /* the lanes in locals: p is read as bytes, which may alias h->v, so a loop on
         * h->v stores and reloads them every round and runs at half the speed */
        uint64_t v1 = h->v[0], v2 = h->v[1], v3 = h->v[2], v4 = h->v[3];
        do {
            v1 = xxh_round(v1, read64(p));
            v2 = xxh_round(v2, read64(p + 8));
            v3 = xxh_round(v3, read64(p + 16));
            v4 = xxh_round(v4, read64(p + 24));
            p += 32;
            n -= 32;
        } while (n >= 32);
        h->v[0] = v1;
        h->v[1] = v2;
        h->v[2] = v3;
        h->v[3] = v4;
    }
    if (n) {
        memcpy(h->mem, p, n);
        h->memsize = n;
    }
}

uint64_t fdp_xxh64_digest(const fdp_xxh64_state *h) {
    uint64_t r;
    if (h->total >= 32) {
        r = rotl64(h->v[0], 1) + rotl64(h->v[1], 7) + rotl64(h->v[2], 12) + rotl64(h->v[3], 18);
        for (int i = 0; i < 4; i++) r = xxh_merge(r, h->v[i]);
    } else {
        r = h->seed + XXH_P5;
    }
    r += h->total;
    const unsigned char *p = h->mem;
    size_t n = h->memsize;
    while (n >= 8) {
        r ^= xxh_round(0, read64(p));
        r = rotl64(r, 27) * XXH_P1 + XXH_P4;
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        r ^= (uint64_t)read32(p) * XXH_P1;
        r = rotl64(r, 23) * XXH_P2 + XXH_P3;
        p += 4;
        n -= 4;
    }
    while (n > 0) {
        r ^= (*p) * XXH_P5;
        r = rotl64(r, 11) * XXH_P1;
        p++;
        n--;
    }
    r ^= r >> 33;
    r *= XXH_P2;
    r ^= r >> 29;
    r *= XXH_P3;
    r ^= r >> 32;
    return r;
}

uint64_t fdp_xxh64(const void *data, size_t len, uint64_t seed) {
    fdp_xxh64_state h;
    fdp_xxh64_init(&h, seed);
    fdp_xxh64_update(&h, data, len);
    return fdp_xxh64_digest(&h);
}
