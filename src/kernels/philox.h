/* philox.h — Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11), the counter-based RNG of flowdp, written once for CPU and GPU.
 *
 * A draw is a pure function of (key, counter): no state, so every rank and every
 * device computes the same number for the same (seed, epoch, sample, element).
 *
 * How flowdp uses the key and the counter (fdp_philox_stream_block):
 *   key     = { seed & 0xffffffff, seed >> 32 }
 *   counter = { block,                        -- element / 4 (uniform) or / 2 (normal)
 *               sample & 0xffffffff,          -- GLOBAL sample index (or row index)
 *               epoch,                        -- epoch (or step, or draw number)
 *               purpose << 24 | (sample >> 32) & 0xffffff }
 *   purpose: FDP_RNG_DEQUANT 1 (dequantization noise), FDP_RNG_AUGMENT 2,
 *            FDP_RNG_PRIOR 3 (sampling z), FDP_RNG_EVAL 4 (importance draws),
 *            FDP_RNG_INIT 5 (parameter initialization), FDP_RNG_SHUFFLE 6.
 * Uniform floats: the top 24 bits of a 32-bit word times 2^-24, in [0, 1).
 * Normals: Box-Muller on a pair of words, computed in double then rounded, so
 * CPU and GPU libm differences stay below float resolution. */
#ifndef FLOWDP_KERNELS_PHILOX_H
#define FLOWDP_KERNELS_PHILOX_H
#include "kernels/hd.h"

enum {
    FDP_RNG_DEQUANT = 1,
    FDP_RNG_AUGMENT = 2,
    FDP_RNG_PRIOR = 3,
    FDP_RNG_EVAL = 4,
    FDP_RNG_INIT = 5,
    FDP_RNG_SHUFFLE = 6,
};

FDP_HD static inline void fdp_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

/* out = Philox4x32-10(ctr, key) */
FDP_HD static inline void fdp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        fdp_mulhilo32(0xD2511F53u, c0, &hi0, &lo0);
        fdp_mulhilo32(0xCD9E8D57u, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

FDP_HD static inline void fdp_philox_stream_block(uint64_t seed, uint32_t purpose, uint64_t sample, uint32_t epoch,
                                                  uint32_t block, uint32_t out[4]) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t ctr[4] = {block, (uint32_t)sample, epoch, (purpose << 24) | ((uint32_t)(sample >> 32) & 0xffffffu)};
    fdp_philox4x32_10(ctr, key, out);
}

FDP_HD static inline float fdp_u32_to_uniform(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* a standard normal from two words (Box-Muller, cosine branch) */
FDP_HD static inline float fdp_u32_pair_to_normal(uint32_t a, uint32_t b) {
    double u1 = ((double)(a >> 8) + 1.0) * (1.0 / 16777216.0); /* (0, 1] */
    double u2 = (double)(b >> 8) * (1.0 / 16777216.0);         /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* element e of the uniform stream of (seed, purpose, sample, epoch) */
FDP_HD static inline float fdp_philox_uniform(uint64_t seed, uint32_t purpose, uint64_t sample, uint32_t epoch, uint64_t e) {
    uint32_t o[4];
    fdp_philox_stream_block(seed, purpose, sample, epoch, (uint32_t)(e / 4), o);
    return fdp_u32_to_uniform(o[e % 4]);
}

/* element e of the normal stream of (seed, purpose, sample, epoch) */
FDP_HD static inline float fdp_philox_normal(uint64_t seed, uint32_t purpose, uint64_t sample, uint32_t epoch, uint64_t e) {
    uint32_t o[4];
    fdp_philox_stream_block(seed, purpose, sample, epoch, (uint32_t)(e / 2), o);
    return e % 2 ? fdp_u32_pair_to_normal(o[2], o[3]) : fdp_u32_pair_to_normal(o[0], o[1]);
}

/* Backend op: out[r*per_sample + e] = uniform (normal == 0) or normal draw e of
 * the stream of sample index[r] (index: per-row global sample ids, backend memory). */
typedef struct {
    float *out; const int64_t *index; int64_t per_sample; uint64_t seed; uint32_t epoch; uint32_t purpose; int normal;
} fdp_philox_fill_args;
FDP_HD static inline void fdp_k_philox_fill(int64_t i, const fdp_philox_fill_args *a) {
    int64_t r = i / a->per_sample, e = i % a->per_sample;
    uint64_t sample = (uint64_t)a->index[r];
    a->out[i] = a->normal ? fdp_philox_normal(a->seed, a->purpose, sample, a->epoch, (uint64_t)e)
                          : fdp_philox_uniform(a->seed, a->purpose, sample, a->epoch, (uint64_t)e);
}

#endif
