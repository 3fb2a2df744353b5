/* tensor.h — a 4-D float32 tensor in NCHW layout: a shape, a device tag and a
 * pointer into an arena (or into a flat parameter buffer). Tensors never own
 * their memory. */
#ifndef FLOWDP_TENSOR_H
#define FLOWDP_TENSOR_H
#include <stdint.h>

typedef enum { FDP_DEVICE_CPU = 0, FDP_DEVICE_CUDA = 1 } fdp_device;

typedef struct fdp_tensor {
    float *data;    /* (n, c, h, w) row-major, contiguous */
    int n, c, h, w;
    fdp_device dev;
} fdp_tensor;

static inline int64_t fdp_numel(fdp_tensor t) { return (int64_t)t.n * t.c * t.h * t.w; }
static inline int64_t fdp_sample_numel(fdp_tensor t) { return (int64_t)t.c * t.h * t.w; }
static inline fdp_tensor fdp_tensor_wrap(float *data, int n, int c, int h, int w, fdp_device dev) {
    fdp_tensor t = {data, n, c, h, w, dev};
    return t;
}
static inline int fdp_same_shape(fdp_tensor a, fdp_tensor b) {
    return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
}

#endif
