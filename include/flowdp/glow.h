/* glow.h — Glow (Kingma & Dhariwal 2018) as openai/glow implements it: the
 * layers (ActNorm with data-dependent init, invertible 1x1 convolution plain
 * and LU, reverse / shuffle permutations, additive / affine coupling, split
 * with its learned prior, the top prior) and the multi-level model.
 *
 * Model (L levels, K steps each), on x = preprocess(pixels) + noise/n_bins:
 *   level l: squeeze (openai's squeeze2d = fdp_squeeze plain order)
 *            K x [ActNorm -> permutation (reverse | shuffle | invconv | invconv_lu) -> coupling]
 *            split (all but the last level): z1, z2 = halves; log N(z2; Conv2dZeros(z1)) enters the objective
 *   top:     log N(z; prior) with a learned per-channel mean / log-std (learntop) or N(0, 1)
 * objective[n] = sum of log-dets + prior log-densities (double), nll[n] = -objective[n] + D*ln(n_bins).
 *
 * Every layer follows nn.h: parameters registered under a module path, activations
 * from ctx->arena, backward OVERWRITES its parameter gradients and returns a fresh
 * input gradient. Log-dets / log-densities are per-sample doubles that forward adds
 * to; their gradient dldj is a per-sample float array (d loss / d objective[n]).
 *
 * Parameter names (openai-like module paths; l = level, k = step):
 *   levels.l.steps.k.actnorm.{b, logs}              (C)    + buffer .initialized (scalar)
 *   levels.l.steps.k.shuffle.indices               buffer (C)  output channel c = input channel indices[c]
 *   levels.l.steps.k.invconv.W                      (C, C) y = W x (PyTorch OIHW; openai's TF W is its transpose)
 *   levels.l.steps.k.invconv.{L, U}                 (C, C) only the strict lower / upper part is used
 *   levels.l.steps.k.invconv.log_s                  (C)    + buffers .P (C, C) and .sign_s (C): W = P L (U + diag(sign_s exp(log_s)))
 *   levels.l.steps.k.f1.l_1.W                       (width, C/2, 3, 3) + .l_1.actnorm.{b, logs, initialized}
 *   levels.l.steps.k.f1.l_2.W                       (width, width, 1, 1) + .l_2.actnorm.*
 *   levels.l.steps.k.f1.l_last.{W, b, logs}         W (Cout, width, 3, 3), b/logs (Cout); Cout = C (affine) or C/2
 *   levels.l.split.conv.{W, b, logs}                W (C, C/2, 3, 3), b/logs (C)  (C = channels before the split)
 *   prior.p.{b, logs}                               (2 C_top) mean = h[:C_top], log-std = h[C_top:]  (learntop only)
 * (exp(3*logs) scales every Conv2dZeros output and ActNorm: openai's logscale_factor 3.)
 * Entries are registered in forward order. Every layer is an fdp_flow_layer (flow.h: constructors
 * fdp_flow_actnorm_create ... fdp_flow_glow_prior_create); the model is one seq of them, which
 * reports each layer's range through ctx->grads_ready as its backward finishes (all-reduce buckets).
 *
 * Departures from openai/glow: no edge_bias input channel in the 3x3 convolutions (plain zero
 * padding); the learned top prior is b * exp(3 logs) without Conv2dZeros' W (it multiplies
 * zeros); ActNorm initializes on the first training batch of every rank together (global
 * statistics) instead of a separate 256-image batch on rank 0 broadcast to the others; W's
 * random orthogonal init is Gram-Schmidt of a Philox Gaussian matrix (numpy's QR in openai);
 * activations are stored for backward, or with [train] rebuild_activations rebuilt layer by layer
 * from the outputs with the inverses (openai: memory-saving gradient checkpointing). */
#ifndef FLOWDP_GLOW_H
#define FLOWDP_GLOW_H
#include "flowdp/condnet.h"
#include "flowdp/config.h"
#include "flowdp/error.h"
#include "flowdp/flow.h"
#include "flowdp/nn.h"

#define FDP_GLOW_LOGSCALE 3.0f /* openai's logscale_factor */

/* ---- ActNorm: y = (x + b) * exp(3 logs) per channel ------------------------------ */
/* As a flow layer (fdp_flow_actnorm_create) its base is used; inside other layers (Conv2dZeros,
 * the coupling's NN) it is not. */
typedef struct fdp_actnorm {
    fdp_flow_layer base;
    int C;
    int ddi;                 /* data-dependent init on the first training forward */
    int p_b, p_logs, b_init; /* params b (C), logs (C); buffer initialized (scalar), -1 when !ddi */
    /* saved by the last forward (flow step use) */
    fdp_tensor x, y;         /* (n,C,h,w) input and output */
} fdp_actnorm;
void fdp_actnorm_init(fdp_actnorm *l, fdp_params *p, const char *prefix, int C, int ddi);
/* y = act((x + b)*e) into y (allocated by the caller). When ctx->training and the
 * initialized flag is 0: b, logs from the channel statistics of x over the GLOBAL batch
 * (ctx->allreduce_f64), flag set to 1. sldj (may be NULL) += H*W*3*sum(logs) per sample. */
void fdp_actnorm_apply(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int relu, double *sldj);
/* From dy at the output y (after the activation), dx (written, the caller's memory) and
 * the gradients of b and logs; dldj (n) the log-det gradient or NULL (no log-det). */
void fdp_actnorm_grad(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, fdp_tensor dy, float *dx, int relu,
                      const float *dldj);
/* y = act((x + b)*e) with the current parameters, never initializing (inverse paths, recomputation) */
void fdp_actnorm_recompute(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor y, int relu);
/* as a flow step (saves x, y; returns y from the arena) */
fdp_tensor fdp_actnorm_forward(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
fdp_tensor fdp_actnorm_inverse(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor y);
fdp_tensor fdp_actnorm_backward(fdp_actnorm *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj);

/* ---- invertible 1x1 convolution (plain or LU) ------------------------------------- */
typedef struct fdp_invconv {
    fdp_flow_layer base;
    int C, lu;
    int p_w;                        /* plain: W (C,C) */
    int b_p, p_l, p_u, p_logs, b_sign; /* LU: P (C,C) buffer, L, U (C,C), log_s (C), sign_s (C) buffer */
    /* host memory (double), from the last forward / inverse */
    double *w64;                    /* (C,C) W */
    double *winv64;                 /* (C,C) W^-1 */
    double *lo64, *up64;            /* (C,C) LU: unit lower L, upper U + diag(s) */
    double *p64;                    /* (C,C) LU: P */
    double *scratch;                /* (3*C*C + 2*C) */
    float *hbuf;                    /* (C*C) float staging */
    double logdet;                  /* log|det W| */
    float *w;                       /* (C,C) the W this step used (backend memory: params or arena) */
    fdp_tensor x;                   /* saved input (n,C,h,w) */
} fdp_invconv;
void fdp_invconv_init(fdp_invconv *l, fdp_params *p, const char *prefix, int C, int lu);
void fdp_invconv_free(fdp_invconv *l);
/* host init of W (random orthogonal, QR of a Gaussian from Philox) and, for LU, its P, L, U, s */
void fdp_invconv_init_values(fdp_invconv *l, const fdp_params *p, float *host_params, float *host_buffers,
                             uint64_t seed);
fdp_tensor fdp_invconv_forward(fdp_invconv *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
fdp_tensor fdp_invconv_inverse(fdp_invconv *l, fdp_ctx *ctx, fdp_tensor y);
fdp_tensor fdp_invconv_backward(fdp_invconv *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj);
/* log|det A| and A^-1 (inv may be NULL) of the n x n row-major A, LU with partial pivoting
 * in double; scratch (n*n). Returns -inf (inverse NaN) when A is singular. */
double fdp_glow_logabsdet_inverse(const double *A, int n, double *inv, double *scratch);

/* ---- reverse / shuffle permutations (log-det 0) ------------------------------------ */
typedef struct fdp_permute {
    fdp_flow_layer base;
    int C, shuffle;
    int b_perm;                     /* shuffle: buffer indices (C); -1 for reverse */
} fdp_permute;
void fdp_permute_init(fdp_permute *l, fdp_params *p, const char *prefix, int C, int shuffle);
/* host init: a Fisher-Yates shuffle from Philox (FDP_RNG_INIT) */
void fdp_permute_init_values(fdp_permute *l, const fdp_params *p, float *host_buffers, uint64_t seed);
/* y = permuted x (inverse: the inverse permutation); also its own backward with inverse flipped */
fdp_tensor fdp_permute_apply(fdp_permute *l, fdp_ctx *ctx, fdp_tensor x, int inverse);

/* ---- Conv2dZeros: (conv3x3(x, W) + b) * exp(3 logs), all zero-initialized ------------ */
typedef struct fdp_conv_zeros {
    int cin, cout, k;
    int p_w;                        /* W (cout, cin, k, k) */
    fdp_actnorm scale;              /* b, logs (cout), no init */
} fdp_conv_zeros;
void fdp_conv_zeros_init(fdp_conv_zeros *l, fdp_params *p, const char *prefix, int cin, int cout, int k);
/* c = conv(x, W) and h = (c + b)*exp(3 logs), both (n,cout,h,w) given by the caller (they are
 * what backward needs: the caller keeps them) */
void fdp_conv_zeros_forward(fdp_conv_zeros *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor c, fdp_tensor h);
/* from the forward's x and c and dh: the parameter gradients (written) and the input
 * gradient into dx (written, or added when accumulate) unless dx == NULL */
void fdp_conv_zeros_backward(fdp_conv_zeros *l, fdp_ctx *ctx, fdp_tensor x, fdp_tensor c, fdp_tensor dh, float *dx,
                             int accumulate);

/* ---- openai's NN (condnet.h: fdp_condnet_glow_create, src/nn/glow_nn.c) -------------- */
/* conv3x3 (cin -> width, no bias) - ActNorm - ReLU - conv1x1 (width -> width, no bias) - ActNorm -
 * ReLU - Conv2dZeros 3x3 (width -> cout). Its ActNorms initialize from data on the first
 * training forward (their own flags). */
typedef struct fdp_glow_nn {
    fdp_condnet base;
    int width;
    int p_w1, p_w2;                 /* l_1.W (width, cin, 3, 3), l_2.W (width, width, 1, 1) */
    fdp_actnorm an1, an2;           /* l_1.actnorm, l_2.actnorm (with ReLU) */
    fdp_conv_zeros last;            /* l_last */
    /* saved */
    fdp_tensor x;                   /* (n,cin,h,w) input */
    fdp_tensor a1, a2;              /* (n,width,h,w) conv outputs before ActNorm (the ReLU outputs are recomputed) */
    fdp_tensor c3;                  /* (n,cout,h,w) l_last's convolution output */
} fdp_glow_nn;

/* ---- coupling (additive / affine) with a conditioning network (openai's NN) ---------- */
typedef struct fdp_glow_coupling {
    fdp_flow_layer base;
    int C, width, affine;
    fdp_condnet *nn;                /* C/2 -> C (affine) or C/2 (additive), prefix "<prefix>" */
    /* saved */
    fdp_tensor h;                   /* (n,Cout,h,w) NN output */
    fdp_tensor y;                   /* (n,C,h,w) the coupling's output */
} fdp_glow_coupling;
void fdp_glow_coupling_init(fdp_glow_coupling *l, fdp_params *p, const char *prefix, int C, int width, int affine);
void fdp_glow_coupling_free(fdp_glow_coupling *l);
fdp_tensor fdp_glow_coupling_forward(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor x, double *sldj);
fdp_tensor fdp_glow_coupling_inverse(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor y);
fdp_tensor fdp_glow_coupling_backward(fdp_glow_coupling *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj);

/* ---- split with its learned prior ------------------------------------------------- */
typedef struct fdp_glow_split {
    fdp_flow_layer base;
    int C;                          /* channels of the input; z1, z2 have C/2 */
    fdp_conv_zeros conv;            /* C/2 -> C: mean = h[:, 0::2], logs = h[:, 1::2] */
    fdp_tensor z1, z2, eps;         /* saved: (n,C/2,h,w) each */
    fdp_tensor c, h;                /* saved: (n,C,h,w) conv output, prior parameters */
    fdp_tensor kept;                /* rebuild: z2 of the last forward_inplace (arena) */
} fdp_glow_split;
void fdp_glow_split_init(fdp_glow_split *l, fdp_params *p, const char *prefix, int C);
/* z1 (returned) = z[:, :C/2]; logp[n] += log N(z2; mean, exp(logs)); l->eps = (z2 - mean)/exp(logs) */
fdp_tensor fdp_glow_split_forward(fdp_glow_split *l, fdp_ctx *ctx, fdp_tensor z, double *logp);
/* z = cat(z1, mean + exp(logs)*eps*temperature) */
fdp_tensor fdp_glow_split_inverse(fdp_glow_split *l, fdp_ctx *ctx, fdp_tensor z1, fdp_tensor eps, float temperature);
/* dz from dz1 (gradient of the kept half) and dlogp (n); parameter gradients written */
fdp_tensor fdp_glow_split_backward(fdp_glow_split *l, fdp_ctx *ctx, fdp_tensor dz1, const float *dlogp);

/* ---- top prior ---------------------------------------------------------------------- */
typedef struct fdp_glow_prior {
    fdp_flow_layer base;
    int C, learn;
    int p_b, p_logs;                /* (2C) when learn, else -1 */
    float *h;                       /* (2C) mean, log-std vector of this step (arena) */
    fdp_tensor z, eps;              /* saved */
    fdp_tensor kept;                /* rebuild: z of the last forward_inplace (arena) */
} fdp_glow_prior;
void fdp_glow_prior_init(fdp_glow_prior *l, fdp_params *p, const char *prefix, int C, int learn);
void fdp_glow_prior_forward(fdp_glow_prior *l, fdp_ctx *ctx, fdp_tensor z, double *logp);
fdp_tensor fdp_glow_prior_sample(fdp_glow_prior *l, fdp_ctx *ctx, fdp_tensor eps, float temperature);
fdp_tensor fdp_glow_prior_backward(fdp_glow_prior *l, fdp_ctx *ctx, const float *dlogp);

/* ---- the model ----------------------------------------------------------------------- */
/* the layers of one flow step, owned by the model's root seq (for inspection) */
typedef struct fdp_glow_step {
    fdp_actnorm *actnorm;
    fdp_flow_layer *perm;           /* fdp_permute (reverse / shuffle) or fdp_invconv (invconv / invconv_lu) */
    fdp_glow_coupling *coupling;
} fdp_glow_step;

typedef struct fdp_glow_level {
    int C, H, W;                    /* after the squeeze */
    fdp_glow_step *steps;           /* (depth) */
    int has_split;
    fdp_glow_split *split;
    int64_t eps_off, eps_len;       /* where its split eps sits in a sample's latent vector (eps_out layout) */
} fdp_glow_level;

typedef struct fdp_glow_hparams {
    int n_levels, depth, width, n_bits_x, learntop;
    fdp_flow_permutation permutation;
    fdp_flow_coupling coupling;
} fdp_glow_hparams;

typedef struct fdp_glow {
    int C, H, W;                    /* image shape */
    fdp_glow_hparams hp;
    int n_bins;                     /* 2^n_bits_x */
    fdp_glow_level *levels;         /* (n_levels) */
    fdp_glow_prior *prior;
    /* the flow: one seq (settling C*H*W floats per sample) of [squeeze, K x (actnorm, permutation,
     * coupling), split, squeeze, ..., top prior] */
    fdp_flow_layer *root;
    int rebuild;                    /* [train] rebuild_activations: forward_inplace / backward_rebuild */
    int topC, topH, topW;
    int64_t top_off;                /* the top eps' offset in a sample's latent vector */
    fdp_params params;
    /* saved by the last forward_loss, for backward */
    double *obj;                    /* (n) objective (backend memory) */
    float *dobj;                    /* (n) */
    float *rebuilt;                 /* rebuild: the in-place buffer of the last forward_loss (n*C*H*W) */
    int n;
} fdp_glow;

void fdp_glow_hparams_from_config(const fdp_config *cfg, fdp_glow_hparams *hp);
/* Build the model and its parameter table (not yet allocated). Refuses, with a one-line
 * error naming the level, shapes it cannot take and bad hyper-parameters. */
int fdp_glow_build(fdp_glow *g, const fdp_glow_hparams *hp, int C, int H, int W, fdp_err *err);
/* Allocate the flat buffers on be and initialize as openai/glow: ActNorms 0 (set by the
 * data on the first training step), invconv W random orthogonal, NN convs N(0, 0.05),
 * Conv2dZeros and the top prior 0, shuffles random; Philox with seed. */
void fdp_glow_alloc_init(fdp_glow *g, fdp_backend *be, uint64_t seed);
void fdp_glow_free(fdp_glow *g);

/* The flow on preprocessed x (n,C,H,W): obj[n] += log-dets and prior log-densities.
 * eps_out (may be NULL): the standardized latents (n,C,H,W) laid out per sample as
 * [split eps of level 0, level 1, ..., top eps], each flattened (c, h, w). */
void fdp_glow_flow_forward(fdp_glow *g, fdp_ctx *ctx, fdp_tensor x, double *obj, fdp_tensor *eps_out);
/* x from the standardized latents eps (the eps_out layout), every prior's std scaled by temperature */
fdp_tensor fdp_glow_flow_inverse(fdp_glow *g, fdp_ctx *ctx, fdp_tensor eps, float temperature);
/* dx (n,C,H,W) from dobj (n) = d loss / d obj[n]; parameter gradients written */
fdp_tensor fdp_glow_flow_backward(fdp_glow *g, fdp_ctx *ctx, const float *dobj);

/* The model interface (model.h): x pixels in [0,1] (integers/255), u noise in [0,1);
 * y = (floor(round(255 x) / 2^(8 - n_bits_x)) + u) / n_bins - 0.5 (openai's preprocess + uniform
 * dequantization); returns the mean nll in nats of the discrete data per image,
 * nll = -(objective) + D ln(n_bins), per sample into nll (host, n) when not NULL. */
/* the loss from dequantized pixels v in [0,1) (dequant.h, round = 1) */
double fdp_glow_loss(fdp_glow *g, fdp_ctx *ctx, fdp_tensor v, double *nll);
double fdp_glow_forward_loss(fdp_glow *g, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll);
void fdp_glow_backward(fdp_glow *g, fdp_ctx *ctx, float loss_scale);
/* Images in [0,1] from standard-normal z (n,C,H,W) at the given temperature: x = flow^-1 of the
 * latents (eps_out layout), then openai's postprocess: bin = clip(floor((x + 0.5)*n_bins), 0,
 * n_bins - 1), pixel = bin * (256/n_bins) / 255, i.e. the lowest 8-bit value of the bin (for
 * 8 bits exactly the pixel the bin came from; NaN maps to 0). */
fdp_tensor fdp_glow_sample(fdp_glow *g, fdp_ctx *ctx, fdp_tensor z, float temperature);

#endif
