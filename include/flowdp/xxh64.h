/* xxh64.h — XXH64, the standard xxHash64 (seeded, 64-bit), streaming: init,
 * update any number of times, digest = xxhash's XXH64 of the concatenated bytes
 * (python: xxhash.xxh64); fdp_xxh64() does the same in one call. */
#ifndef FLOWDP_XXH64_H
#define FLOWDP_XXH64_H
#include <stddef.h>
#include <stdint.h>

typedef struct fdp_xxh64_state {
    uint64_t v[4];
    uint64_t total;
    uint64_t seed;
    unsigned char mem[32];
    size_t memsize;
} fdp_xxh64_state;

void fdp_xxh64_init(fdp_xxh64_state *h, uint64_t seed);
void fdp_xxh64_update(fdp_xxh64_state *h, const void *data, size_t n);
uint64_t fdp_xxh64_digest(const fdp_xxh64_state *h);
/* XXH64 of len bytes in one call (init, update, digest). */
uint64_t fdp_xxh64(const void *data, size_t len, uint64_t seed);

#endif
