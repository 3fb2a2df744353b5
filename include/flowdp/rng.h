/* rng.h — the counter-based RNG (Philox4x32-10). The functions live in
 * src/kernels/philox.h so that the CPU and the GPU compute the same numbers;
 * read that file's header for how the key and the counter are used. */
#ifndef FLOWDP_RNG_H
#define FLOWDP_RNG_H
#include "kernels/philox.h"
#endif
