/* fuzz_ckpt_table.h — the small parameter table of the checkpoint fuzz target and
 * of its seed writer (fuzz_ckpt_seeds.c): matrices, vectors, a scalar buffer. */
#ifndef FLOWDP_FUZZ_CKPT_TABLE_H
#define FLOWDP_FUZZ_CKPT_TABLE_H
#include "flowdp/params.h"

static inline void fuzz_ckpt_table(fdp_params *p) {
    fdp_params_init(p);
    const int64_t w[4] = {2, 1, 3, 3}, b[1] = {2}, v[1] = {3};
    fdp_params_add(p, "flows.0.conv.weight_v", FDP_PARAM, 0, 4, w);
    fdp_params_add(p, "flows.0.conv.weight_g", FDP_PARAM, FDP_PFLAG_WEIGHT_DECAY, 1, b);
    fdp_params_add(p, "flows.0.conv.bias", FDP_PARAM, 0, 1, b);
    fdp_params_add(p, "flows.0.norm.running_mean", FDP_BUFFER, 0, 1, v);
    fdp_params_add(p, "flows.0.norm.num_batches_tracked", FDP_BUFFER, FDP_PFLAG_COUNTER, 0, NULL);
}
#endif
