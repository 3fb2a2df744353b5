/* sampler.c — the distributed sampler: the global shuffled order of an epoch,
 * the drop-last split into global batches, each rank's contiguous slice of a
 * global batch, and the no-drop contiguous split of the test set for evaluation.
 * The semantics (and why the slices are contiguous) are written in data.h.
 *
 * The permutation is Fisher–Yates whose draw for position i is taken from the
 * Philox stream (seed, FDP_RNG_SHUFFLE, sample = i, epoch): a pure function of
 * (seed, epoch, i), so the order depends only on (seed, epoch, n) and is the
 * same on every rank and after a resume. Draws are made unbiased by rejection
 * (a 64-bit word below 2^64 mod bound is rejected and the next one is taken). */
#include "flowdp/data.h"

#include "flowdp/rng.h"

/* uniform integer in [0, bound), 1 <= bound, for Fisher–Yates position `pos` */
static uint64_t shuffle_draw(uint64_t seed, uint32_t epoch, uint64_t pos, uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound: [threshold, 2^64) is a multiple of bound */
    for (uint32_t block = 0;; block++) {
        uint32_t o[4];
        fdp_philox_stream_block(seed, FDP_RNG_SHUFFLE, pos, epoch, block, o);
        uint64_t r0 = (uint64_t)o[0] << 32 | o[1];
        if (r0 >= threshold) return r0 % bound;
        uint64_t r1 = (uint64_t)o[2] << 32 | o[3];
        if (r1 >= threshold) return r1 % bound;
    }
}

void fdp_sampler_epoch_order(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm_out) {
    FDP_CHECK(n >= 0 && n <= ((int64_t)1 << 40), "sampler: n = %lld out of range", (long long)n);
    FDP_CHECK(epoch >= 0 && epoch <= (int64_t)UINT32_MAX, "sampler: epoch %lld out of range [0, 2^32)", (long long)epoch);
    for (int64_t i = 0; i < n; i++) perm_out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)shuffle_draw(seed, (uint32_t)epoch, (uint64_t)i, (uint64_t)i + 1);
        int64_t t = perm_out[i];
        perm_out[i] = perm_out[j];
        perm_out[j] = t;
    }
}

int64_t fdp_sampler_steps_per_epoch(int64_t n, int world, int per_rank_batch) {
    FDP_CHECK(n >= 0 && world >= 1 && per_rank_batch >= 1, "sampler: bad n = %lld, world = %d, per-rank batch = %d",
              (long long)n, world, per_rank_batch);
    return n / ((int64_t)world * per_rank_batch);
}

void fdp_sampler_batch_indices(const int64_t *perm, int64_t step_in_epoch, int rank, int world, int per_rank_batch,
                               int64_t *global_idx_out) {
    FDP_CHECK(world >= 1 && per_rank_batch >= 1 && rank >= 0 && rank < world && step_in_epoch >= 0,
              "sampler: bad step %lld, rank %d, world %d, per-rank batch %d", (long long)step_in_epoch, rank, world,
              per_rank_batch);
    const int64_t global_batch = (int64_t)world * per_rank_batch;
    const int64_t *src = perm + step_in_epoch * global_batch + (int64_t)rank * per_rank_batch;
    for (int i = 0; i < per_rank_batch; i++) global_idx_out[i] = src[i];
}

void fdp_eval_range(int64_t n, int rank, int world, int64_t *begin, int64_t *end) {
    FDP_CHECK(n >= 0 && world >= 1 && rank >= 0 && rank < world, "eval split: bad n = %lld, rank %d, world %d",
              (long long)n, rank, world);
    /* n*r/world without overflowing n*r: n = q*world + m, so n*r/world = q*r + m*r/world */
    const int64_t q = n / world, m = n % world;
    *begin = q * rank + m * rank / world;
    *end = q * (rank + 1) + m * (rank + 1) / world;
}
