/* glow_ops.h — the element-wise math of the Glow layers (ActNorm, invertible
 * 1x1 convolution helpers, affine/additive coupling with sigmoid scale, split
 * prior, preprocessing), written once for CPU and GPU like elementwise.h.
 * FDP_GLOW_OPS lists them; elementwise.h appends the list to
 * FDP_ELEMENTWISE_OPS so every backend gets them. */
#ifndef FLOWDP_KERNELS_GLOW_OPS_H
#define FLOWDP_KERNELS_GLOW_OPS_H
#include "kernels/hd.h"

#define FDP_GLOW_OPS(X)

#endif
