/* flow.h — one interface for every invertible layer, and the compositions models are made of.
 *
 * How to write a layer (docs/ARCHITECTURE.md, "Adding a flow layer"): a struct that begins
 * with an fdp_flow_layer, a table of operations, a constructor that registers its parameters
 * between fdp_flow_begin and fdp_flow_end, and one line in the registry (FDP_FLOW_KINDS below)
 * with a small example instance, through which tests/test_flow_layers.c checks it (inverse,
 * log-det against a finite-difference Jacobian, backward against finite differences, the
 * rebuild pair):
 *
 *   typedef struct { fdp_flow_layer base; int p_scale; } my_layer;
 *   static fdp_tensor my_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) { ... }
 *   ...
 *   static const fdp_flow_ops MY_OPS = {.kind = "my_layer", .forward = my_forward,
 *                                       .inverse = my_inverse, .backward = my_backward};
 *   fdp_flow_layer *fdp_my_layer_create(fdp_params *p, const char *prefix, int C) {
 *       my_layer *l = fdp_xcalloc(1, sizeof *l);
 *       fdp_flow_begin(&l->base, &MY_OPS, p);
 *       l->p_scale = fdp_params_add(p, ...);
 *       fdp_flow_end(&l->base, p);
 *       return &l->base;
 *   }
 *
 * Contract (x: the layer's input (n, c, h, w); y: its output; n never changes):
 *   forward   y from the arena; sldj[n] (backend doubles) += log|det dy/dx| of each sample (for
 *             factor-out layers: + the log-density of what leaves the flow). Saves what backward
 *             needs unless ctx->no_grad.
 *   inverse   x from the arena, given y (factor-out layers read what they factored out from
 *             ctx->latent, scaled by ctx->temperature).
 *   backward  after a forward: from dy (d loss / d y) and dldj[n] (d loss / d sldj[n], backend
 *             floats) OVERWRITES the gradients of its parameters and returns dx from the arena.
 *             Reporting finished gradients (ctx->grads_ready) is the composition's job.
 *   optional: init_values (host values of its parameters and buffers; default zeros), prepare
 *             (once per step before forward / inverse: weight norm, statistics), forward_inplace /
 *             backward_rebuild (rebuild_activations: see fdp_flow_forward_inplace below; without
 *             them a generic version built from forward / inverse / backward is used), destroy
 *             (frees what the layer allocated besides its struct; children are freed by the
 *             composition), is_container (seq / multiscale: they report their children's gradients
 *             and recurse in prepare / init_values themselves).
 *
 * Factor-out layers (Glow's split with its learned prior, the top prior) leave part of the
 * tensor in the latent: forward writes its standardized values to ctx->latent (when not NULL;
 * per sample at [base.lat_off, base.lat_off + base.lat_len) of latent_dim floats), inverse reads
 * them back. */
#ifndef FLOWDP_FLOW_H
#define FLOWDP_FLOW_H
#include <stdint.h>

#include "flowdp/nn.h"

/* fdp_flow_layer (the struct every layer begins with) is defined in nn.h */
struct fdp_flow_ops {
    const char *kind;
    fdp_tensor (*forward)(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
    fdp_tensor (*inverse)(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y);
    fdp_tensor (*backward)(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj);
    /* optional members (NULL: see above) */
    void (*init_values)(fdp_flow_layer *l, const fdp_params *p, float *host_params, float *host_buffers,
                        uint64_t seed);
    void (*prepare)(fdp_flow_layer *l, fdp_ctx *ctx);
    fdp_tensor (*forward_inplace)(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
    fdp_tensor (*backward_rebuild)(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy, const float *dldj);
    void (*destroy)(fdp_flow_layer *l);
    int is_container;
};

/* record the parameter entries a constructor registers between the two calls */
void fdp_flow_begin(fdp_flow_layer *l, const fdp_flow_ops *ops, const fdp_params *p);
void fdp_flow_end(fdp_flow_layer *l, const fdp_params *p);
static inline int fdp_flow_has_params(const fdp_flow_layer *l) { return l->last_entry >= l->first_entry; }

/* calls through the table (prepare / init_values: nothing when the member is NULL) */
void fdp_flow_prepare(fdp_flow_layer *l, fdp_ctx *ctx);
void fdp_flow_init_values(fdp_flow_layer *l, const fdp_params *p, float *host_params, float *host_buffers,
                          uint64_t seed);
/* a model's parameters: allocate the table's flat buffers on be (fdp_params_finalize), set them to
 * zero and then to every layer's init_values from seed (host), upload */
void fdp_flow_alloc_init(fdp_flow_layer *root, fdp_params *p, fdp_backend *be, uint64_t seed);
/* the layer, its children and its struct */
void fdp_flow_destroy(fdp_flow_layer *l);
/* after a leaf layer's backward: its gradients are final (ctx->grads_ready) */
void fdp_flow_report(fdp_ctx *ctx, const fdp_flow_layer *l);

/* ---- rebuild_activations: the pair every layer has, natively or generically ----
 * forward_inplace: x.data is overwritten with y (returned: y's shape, x's data; n*c*h*w may only
 *   shrink, for factor-out layers, which keep what leaves the flow in the arena below the mark
 *   they return to), sldj += its log-det; whatever else the forward allocated is released.
 *   Generic: forward, copy, arena reset.
 * backward_rebuild: after forward_inplace, given y (the layer's output, in place) and dy:
 *   y.data becomes x (rebuilt), dy.data becomes dx (returned: x's shape, dy's data; both buffers
 *   must hold x), parameter gradients written, reported; the arena is left as found.
 *   Generic: x = inverse(y), forward(x) again with ctx->recompute = 1, backward. */
fdp_tensor fdp_flow_forward_inplace(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
fdp_tensor fdp_flow_backward_rebuild(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy,
                                     const float *dldj);
/* the arena-copy helpers the in-place paths share: x (in place) becomes t's values (same numel) */
fdp_tensor fdp_flow_overwrite(fdp_ctx *ctx, fdp_tensor x, fdp_tensor t);

/* ---- compositions ---- */
/* Layers applied in order. settle_floats > 0: outputs that need not be kept (inverse, backward,
 * no_grad forward) are copied into one work tensor of that many floats per sample (at least the
 * largest tensor passing through) and the arena rewound after each layer, so those passes use
 * about one activation whatever the depth (Glow); 0: everything stays in the arena. */
fdp_flow_layer *fdp_flow_seq_create(int64_t settle_floats);
void fdp_flow_seq_add(fdp_flow_layer *seq, fdp_flow_layer *child);
int fdp_flow_seq_count(const fdp_flow_layer *seq);
fdp_flow_layer *fdp_flow_seq_at(const fdp_flow_layer *seq, int i);
/* Channels [0, keep) go through child, the rest pass unchanged (RealNVP's multi-scale split);
 * takes ownership of child. */
fdp_flow_layer *fdp_flow_multiscale_create(int keep, fdp_flow_layer *child);

/* ---- the registered layers' constructors (prefix: the module path of their parameters) ---- */
/* RealNVP (realnvp.h, the notebook): squeeze_2x2 (alt: the notebook's alt_order; unsqueeze: the
 * inverse direction), dequantized pixels in [0,1) -> logit (bound = data_constraint; buffer
 * "<prefix>data_constraint"; its inverse undoes the constraint), the affine coupling with its ResNet */
fdp_flow_layer *fdp_flow_squeeze_create(int alt, int unsqueeze);
fdp_flow_layer *fdp_flow_logit_create(fdp_params *p, const char *prefix, float bound);
void fdp_flow_logit_set_bound(fdp_flow_layer *logit, float bound); /* before init_values */
fdp_flow_layer *fdp_flow_coupling_create(fdp_params *p, const char *prefix, int C, int mid, int num_blocks,
                                         fdp_mask mask, int reverse_mask);
/* Glow (glow.h, openai/glow): ActNorm with data-dependent init, reverse / shuffle permutation,
 * invertible 1x1 convolution (plain / LU), additive / affine coupling with openai's NN, split
 * with its learned prior (C: channels before the split; factors out C/2 at lat_off), top prior */
fdp_flow_layer *fdp_flow_actnorm_create(fdp_params *p, const char *prefix, int C);
fdp_flow_layer *fdp_flow_permute_create(fdp_params *p, const char *prefix, int C, int shuffle);
fdp_flow_layer *fdp_flow_invconv_create(fdp_params *p, const char *prefix, int C, int lu);
fdp_flow_layer *fdp_flow_glow_coupling_create(fdp_params *p, const char *prefix, int C, int width, int affine);
fdp_flow_layer *fdp_flow_glow_split_create(fdp_params *p, const char *prefix, int C, int64_t lat_off,
                                           int64_t lat_len);
fdp_flow_layer *fdp_flow_glow_prior_create(fdp_params *p, const char *prefix, int C, int learn, int64_t lat_off,
                                           int64_t lat_len);

/* Lippe's Tutorial 9 (the fixtures' lippe_*.h5): the affine CouplingLayer with its GatedConvNet
 * (hid channels, num_layers gated layers), scaling factor and mask buffer (checkerboard (1,1,H,W)
 * or channel (1,C,1,1), invert: 1 - mask); the dequantization's logit with alpha (inverse: a
 * plain sigmoid, as the tutorial's sample()); SplitFlow (keeps channels [0, C/2), the rest to a
 * standard-normal prior, written to / read from the latent at lat_off). SqueezeFlow is
 * fdp_flow_squeeze_create(0, 0). */
fdp_flow_layer *fdp_flow_tut_coupling_create(fdp_params *p, const char *prefix, int C, int H, int W, int hid,
                                             int num_layers, fdp_mask mask, int invert);
fdp_flow_layer *fdp_flow_tut_logit_create(double alpha);
fdp_flow_layer *fdp_flow_tut_split_create(int C, int64_t lat_off, int64_t lat_len);

/* ---- the registry: every layer kind, with an example instance for the layer tests ---- */
typedef struct fdp_flow_kind {
    const char *name;
    int n_variants;                 /* configurations its example takes (e.g. plain / LU) */
    /* a small instance of the given variant, registered in p under "layer"; *c, *h, *w: the
     * input shape it takes. factor_out: 1 when its output has fewer elements than its input. */
    fdp_flow_layer *(*example)(fdp_params *p, int variant, int *c, int *h, int *w);
    int factor_out;
} fdp_flow_kind;
/* FDP_FLOW_KINDS lists every registered kind; a new layer adds one X(name) here and defines
 * `const fdp_flow_kind fdp_flow_kind_<name>` in its file. */
#define FDP_FLOW_KINDS(X) \
    X(seq)                \
    X(multiscale)         \
    X(squeeze)            \
    X(logit)              \
    X(coupling)           \
    X(actnorm)            \
    X(permute)            \
    X(invconv)            \
    X(glow_coupling)      \
    X(glow_split)         \
    X(glow_prior)         \
    X(tut_coupling)       \
    X(tut_logit)          \
    X(tut_split)
#define FDP_FLOW_DECLARE_KIND(name) extern const fdp_flow_kind fdp_flow_kind_##name;
FDP_FLOW_KINDS(FDP_FLOW_DECLARE_KIND)
#undef FDP_FLOW_DECLARE_KIND
/* the registered kinds (count into *n) */
const fdp_flow_kind *const *fdp_flow_kinds(int *n);

#endif
