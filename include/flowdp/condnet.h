/* condnet.h — the conditioning network of a coupling layer, as its own interface.
 *
 * A coupling splits its input into an identity part x1 and a changed part x2 and transforms
 * x2 with parameters h = NN(x1). The network is any struct that begins with an fdp_condnet
 * whose ops implement forward and backward (prepare / init_values / destroy optional), so a new
 * network (a gated-convolution ResNet, an attention block) is one file plus one X(name) line in
 * FDP_CONDNET_KINDS and its constructor's declaration below; tests/test_flow_layers.c checks
 * every registered network's backward against finite differences through its example.
 *
 * Contract: forward h (n, cout, h, w) from x (n, cin, h, w), allocated from the arena, saving
 * what backward needs unless ctx->no_grad (ctx->recompute: BatchNorm reuses the statistics of
 * the last forward); backward, after a forward, from dh OVERWRITES the gradients of its
 * parameters and writes (accumulate 0) or adds (1) the input gradient into dx (dx.data may be
 * NULL: not wanted). Parameters are registered under the module path given as prefix. */
#ifndef FLOWDP_CONDNET_H
#define FLOWDP_CONDNET_H
#include <stdint.h>

#include "flowdp/nn.h"

typedef struct fdp_condnet fdp_condnet;

typedef struct fdp_condnet_ops {
    const char *kind;
    fdp_tensor (*forward)(fdp_condnet *net, fdp_ctx *ctx, fdp_tensor x);
    void (*backward)(fdp_condnet *net, fdp_ctx *ctx, fdp_tensor dh, fdp_tensor dx, int accumulate);
    /* optional */
    void (*prepare)(fdp_condnet *net, fdp_ctx *ctx);
    void (*init_values)(fdp_condnet *net, const fdp_params *p, float *host_params, float *host_buffers,
                        uint64_t seed);
    void (*destroy)(fdp_condnet *net);
} fdp_condnet_ops;

struct fdp_condnet {
    const fdp_condnet_ops *ops;
    int cin, cout;
};

static inline void fdp_condnet_prepare(fdp_condnet *n, fdp_ctx *ctx) {
    if (n->ops->prepare) n->ops->prepare(n, ctx);
}
static inline void fdp_condnet_init_values(fdp_condnet *n, const fdp_params *p, float *hp, float *hb,
                                           uint64_t seed) {
    if (n->ops->init_values) n->ops->init_values(n, p, hp, hb, seed);
}
/* destroy (when set) and free the struct */
void fdp_condnet_destroy(fdp_condnet *n);

/* ---- the networks ---- */
/* the notebook's ResNet (BatchNorm, weight-normed convolutions, 2*cin inputs from
 * cat(bn(x), -bn(x))) */
fdp_condnet *fdp_condnet_resnet_create(fdp_params *p, const char *prefix, int cin, int mid, int cout,
                                       int num_blocks, int double_after_norm);
/* the ResNet inside (tests that set its parameters by structure); fatal for another kind */
fdp_resnet *fdp_condnet_as_resnet(fdp_condnet *n);
/* openai/glow's NN: conv3x3 (no bias) - ActNorm - ReLU - conv1x1 - ActNorm - ReLU - Conv2dZeros 3x3 */
fdp_condnet *fdp_condnet_glow_create(fdp_params *p, const char *prefix, int cin, int width, int cout);

/* Lippe's tutorial GatedConvNet: conv3x3 (cin -> hid), num_layers x [GatedConv, LayerNormChannels],
 * ConcatELU, conv3x3 (2 hid -> cout, zero-initialized) */
fdp_condnet *fdp_condnet_gated_create(fdp_params *p, const char *prefix, int cin, int hid, int cout, int num_layers);

/* the registry: an example instance of each (registered in p under "net"; *cin, *h, *w its input) */
typedef struct fdp_condnet_kind {
    const char *name;
    fdp_condnet *(*example)(fdp_params *p, int *cin, int *h, int *w);
} fdp_condnet_kind;
#define FDP_CONDNET_KINDS(X) \
    X(resnet)                \
    X(glow_nn)               \
    X(gated)
#define FDP_CONDNET_DECLARE_KIND(name) extern const fdp_condnet_kind fdp_condnet_kind_##name;
FDP_CONDNET_KINDS(FDP_CONDNET_DECLARE_KIND)
#undef FDP_CONDNET_DECLARE_KIND
const fdp_condnet_kind *const *fdp_condnet_kinds(int *n);

#endif
