/* nn.h — layers with explicit forward, inverse (bijections) and backward.
 *
 * Every layer registers its parameters in an fdp_params table under the
 * PyTorch module path given as `prefix`, so a state_dict maps onto the table one
 * to one. Activations are allocated from ctx->arena; what backward needs is kept
 * in the layer's `saved` fields, valid until the arena is reset (one forward,
 * then one backward, per step). Backward OVERWRITES the gradients of the
 * layer's parameters (each layer is applied once per step), and writes or adds
 * (accumulate) the input gradient.
 *
 * Log-determinants are per-sample double arrays (backend memory) that forward
 * adds to; their gradient dldj is a per-sample float array (d loss / d sldj). */
#ifndef FLOWDP_NN_H
#define FLOWDP_NN_H
#include "flowdp/arena.h"
#include "flowdp/backend.h"
#include "flowdp/params.h"
#include "flowdp/tensor.h"

/* all-reduce (sum) of doubles in backend memory across ranks (synchronized BatchNorm) */
typedef void (*fdp_allreduce_f64_fn)(void *comm, double *buf, int count);

typedef struct fdp_ctx {
    fdp_backend *be;
    fdp_arena *arena;        /* activations and scratch of the current step */
    fdp_params *params;
    int training;            /* 1: BatchNorm uses batch statistics and updates running ones */
    fdp_allreduce_f64_fn allreduce_f64; /* NULL: one process */
    void *comm;
    int world_size;          /* ranks whose batches form the global batch (1 without MPI) */
    int no_grad;             /* 1: no backward will follow; layers free their activations at once */
    /* 1: this forward recomputes, during backward, activations of the forward already run
     * in this step (rebuild_activations). BatchNorm then reuses the statistics of its last
     * forward (l->mean, l->invstd): no batch moments, no all-reduce, no update of the running
     * statistics or num_batches_tracked. */
    int recompute;
    /* called during backward when the gradients of entries [first, last] of the
     * parameter table are final (starts their all-reduce buckets); may be NULL */
    void (*grads_ready)(void *user, int first, int last);
    void *grads_ready_user;
    /* 1: backward computes the gradient with respect to the flow's input even through the
     * parameter-free layers at its head (the logit preprocessing); 0: a flow may stop at its
     * first layer with parameters (training needs no data gradient) */
    int input_grad;
    /* flow.h factor-out layers: per-sample standardized latents (n, latent_dim), written by
     * forward when not NULL, read by inverse; inverse scales every prior's std by temperature */
    float *latent;
    int64_t latent_dim;
    float temperature;
} fdp_ctx;

/* ---- the header of every flow layer (flow.h: the interface and the compositions) ---- */
typedef struct fdp_flow_ops fdp_flow_ops;
typedef struct fdp_flow_layer {
    const fdp_flow_ops *ops;
    int first_entry, last_entry;    /* its entries in the parameter table (last < first: none) */
    int64_t lat_off, lat_len;       /* factor-out layers: its slice of a sample's latent vector */
} fdp_flow_layer;
typedef struct fdp_condnet fdp_condnet; /* condnet.h */

/* ---- weight-normed convolution (WNConv2d; weight = g * v / ||v|| per output channel) ---- */
typedef struct fdp_wnconv {
    int cin, cout, k, has_bias;
    int p_g, p_v, p_b;       /* param indices: weight_g (cout,1,1,1), weight_v (cout,cin,k,k), bias (cout) */
    float *w;                /* (cout,cin,k,k) effective weight of this step (arena) */
    double *normsq;          /* (cout) ||v||^2 of this step (arena) */
} fdp_wnconv;
void fdp_wnconv_init(fdp_wnconv *l, fdp_params *p, const char *prefix, int cin, int cout, int k, int bias);
/* compute the effective weight for this step (call once per forward, before forward) */
void fdp_wnconv_prepare(fdp_wnconv *l, fdp_ctx *ctx);
/* y (n,cout,h,w) = conv(x) (+ y when accumulate) */
void fdp_wnconv_forward(fdp_wnconv *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int accumulate);
/* gradients of g, v, bias from (x, dy); dx (=|+=) input gradient unless dx == NULL */
void fdp_wnconv_backward(fdp_wnconv *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor dy, float *dx, int accumulate);
/* host init as PyTorch's Conv2d (kaiming-uniform v and bias, Philox keyed by entry index), g = ||v|| */
void fdp_wnconv_init_values(const fdp_wnconv *l, const fdp_params *p, float *host_params, uint64_t seed);

/* ---- BatchNorm2d, optionally synchronized across ranks, fused with an activation ---- */
typedef enum { FDP_ACT_NONE = 0, FDP_ACT_RELU = 1, FDP_ACT_RELU_CAT_NEG = 2 } fdp_act;
typedef struct fdp_bn {
    int C;
    float eps, momentum;
    int p_w, p_b, b_mean, b_var, b_count; /* weight, bias; running_mean, running_var, num_batches_tracked */
    float *mean, *invstd;    /* (C) statistics used by the last forward (arena, from fdp_bn_prepare) */
} fdp_bn;
void fdp_bn_init(fdp_bn *l, fdp_params *p, const char *prefix, int C);
/* host init as PyTorch's: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0 */
void fdp_bn_init_values(const fdp_bn *l, const fdp_params *p, float *host_params, float *host_buffers);
/* allocate this step's statistics (C floats each) from the arena; call once per step before
 * forward (like fdp_wnconv_prepare), so they outlive arena resets done after the forward */
void fdp_bn_prepare(fdp_bn *l, fdp_ctx *ctx);
/* y = act(mult * bn(x)); y has 2C channels for FDP_ACT_RELU_CAT_NEG. Training: batch statistics
 * (global over ranks), running statistics updated; else running statistics. ctx->recompute:
 * the statistics of the last forward, nothing updated. */
void fdp_bn_forward(fdp_bn *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, float mult, fdp_act act);
/* from dy at the activation output, the gradients of weight and bias and dx (=|+=) */
void fdp_bn_backward(fdp_bn *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, fdp_tensor dy, fdp_tensor dx, float mult,
                     fdp_act act, int accumulate);

/* ---- the notebook's ResNet s/t network ---- */
typedef struct fdp_resblock {
    fdp_bn in_norm;
    fdp_wnconv in_conv;      /* 3x3, no bias */
    fdp_bn out_norm;
    fdp_wnconv out_conv;     /* 3x3, bias */
    /* saved: (n,mid,h,w) each */
    fdp_tensor x, a, c, b;   /* block input, relu(in_norm(x)), in_conv(a), relu(out_norm(c)) */
} fdp_resblock;

typedef struct fdp_resnet {
    int cin, mid, cout, num_blocks, double_after_norm;
    fdp_bn in_norm;
    fdp_wnconv in_conv;      /* (2*cin -> mid), k 3 */
    fdp_wnconv in_skip;      /* 1x1 */
    fdp_resblock *blocks;
    fdp_wnconv *skips;       /* 1x1 each */
    fdp_bn out_norm;
    fdp_wnconv out_conv;     /* 1x1 mid -> cout */
    /* saved */
    fdp_tensor x;            /* (n,cin,h,w) input */
    fdp_tensor a0;           /* (n,2cin,h,w) relu(cat(bn, -bn)) */
    fdp_tensor h0;           /* (n,mid,h,w) in_conv output */
    fdp_tensor hlast;        /* (n,mid,h,w) output of the last block (h0 when there are none) */
    fdp_tensor skip;         /* (n,mid,h,w) the skip sum */
    fdp_tensor o;            /* (n,mid,h,w) relu(out_norm(skip)) */
} fdp_resnet;
void fdp_resnet_init(fdp_resnet *r, fdp_params *p, const char *prefix, int cin, int mid, int cout, int num_blocks,
                     int double_after_norm);
void fdp_resnet_free(fdp_resnet *r);
void fdp_resnet_prepare(fdp_resnet *r, fdp_ctx *ctx);
/* returns the output (n,cout,h,w), allocated from the arena */
fdp_tensor fdp_resnet_forward(fdp_resnet *r, fdp_ctx *ctx, fdp_tensor x);
/* dx (=|+=) d/dx of the last forward, given dy (n,cout,h,w) */
void fdp_resnet_backward(fdp_resnet *r, fdp_ctx *ctx, fdp_tensor dy, fdp_tensor dx, int accumulate);

/* ---- affine coupling (the notebook's CouplingLayer) ---- */
typedef enum { FDP_MASK_CHECKERBOARD = 0, FDP_MASK_CHANNEL = 1 } fdp_mask;
typedef struct fdp_coupling {
    fdp_flow_layer base;     /* flow.h; its first_entry / last_entry span the layer's parameters */
    int C;                   /* channels of the input */
    int Cc;                  /* channels of the changed part (C, or C/2 channel-wise) */
    int off;                 /* channel-wise: first changed channel (0 or C/2) */
    fdp_mask mask;
    int reverse_mask;
    fdp_condnet *net;        /* the s/t network (condnet.h; the notebook's ResNet) */
    int p_rg, p_rv;          /* rescale.weight_g, rescale.weight_v (Cc,1,1) */
    float *rescale;          /* (Cc) effective Rescale weight of this step (arena) */
    double *rnormsq;         /* (Cc) */
    /* saved */
    fdp_tensor y;            /* output of the last forward */
    fdp_tensor th;           /* (n,Cc,h,w) tanh(s_raw) */
} fdp_coupling;
void fdp_coupling_init(fdp_coupling *l, fdp_params *p, const char *prefix, int C, int mid, int num_blocks,
                       fdp_mask mask, int reverse_mask);
void fdp_coupling_free(fdp_coupling *l);
void fdp_coupling_prepare(fdp_coupling *l, fdp_ctx *ctx);
/* y = coupling(x); sldj[n] += log|det J| per sample. Returns y (arena). */
fdp_tensor fdp_coupling_forward(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
/* x = coupling^-1(y) (arena) */
fdp_tensor fdp_coupling_inverse(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor y);
/* from dy and dldj (n), the parameter gradients and dx (arena, returned) */
fdp_tensor fdp_coupling_backward(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj);
/* rebuild_activations. forward_inplace: x.data is overwritten with y = coupling(x), sldj[n] += its
 * log-det, nothing is kept (the s/t network's activations are freed at once); the same arithmetic
 * as fdp_coupling_forward. backward_rebuild: y.data is overwritten with x = coupling^-1(y) and
 * dy.data with dx, after recomputing the s/t network (ctx->recompute) on the identity part of y
 * (= that of x) and writing the parameter gradients; the arena is left as it was found. */
void fdp_coupling_forward_inplace(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
void fdp_coupling_backward_rebuild(fdp_coupling *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy, const float *dldj);

/* ---- squeeze / split (no parameters) ---- */
/* squeeze_2x2: (n,c,h,w) -> (n,4c,h/2,w/2); alt selects the notebook's alt_order */
fdp_tensor fdp_squeeze(fdp_ctx *ctx, fdp_tensor x, int alt);
fdp_tensor fdp_unsqueeze(fdp_ctx *ctx, fdp_tensor x, int alt);
/* channel chunk [c0, c0+nc) as a new tensor; and the concatenation of a and b */
fdp_tensor fdp_channel_slice(fdp_ctx *ctx, fdp_tensor x, int c0, int nc);
fdp_tensor fdp_channel_cat(fdp_ctx *ctx, fdp_tensor a, fdp_tensor b);

/* ---- dequantization + logit (RealNVP) ---- */
/* v = uniformly dequantized pixels in [0,1) from x (8-bit values/255) and noise u in [0,1)
 * (the kernel fdp_k_dequant_uniform: round 0 the notebook's (255x + u)/256 for n_bins 256,
 * round 1 openai's bins); v from the arena */
fdp_tensor fdp_dequantize(fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, int n_bins, int round);
/* y = logit of the dequantized v squashed into [(1-bound)/2, (1+bound)/2]; sldj[n] += its log-det */
fdp_tensor fdp_logit_forward(fdp_ctx *ctx, fdp_tensor v, float bound, double *sldj);

/* ---- Gaussian prior and the loss ---- */
/* nll[n] = 0.5*sum z^2 + D/2*log(2 pi) + D*log(k) - sldj[n] per sample (host doubles out, n entries);
 * returns the batch mean (the notebook's RealNVPLoss). */
double fdp_gaussian_nll(fdp_ctx *ctx, fdp_tensor z, const double *sldj, double k, double *nll_per_sample);
/* bits per dimension of a per-image nll (nats) */
static inline double fdp_bpd(double nll, int64_t dims) { return nll / (0.6931471805599453 * (double)dims); }

#endif
