/* realnvp.h — the lecture notebook's RealNVP, assembled from nn.h layers.
 *
 * Per scale (in_channels C, mid channels M, at H x W):
 *   3 checkerboard couplings (masks 0,1,0) [a 4th, mask 1, on the last scale]
 *   not last: squeeze -> 3 channel-wise couplings (4C channels, 2M mid; masks 0,1,0) -> unsqueeze
 *             -> alt-order squeeze -> first 2C channels go to the next scale (2C channels, 2M mid),
 *                the other 2C are factored out -> cat -> alt-order unsqueeze
 * z comes back in the input's layout (the notebook re-assembles it), with a
 * standard normal prior over all of it. Parameter names are the notebook's
 * state_dict names (flows.next_block.in_couplings.2.st_net.in_conv.conv.weight_v).
 *
 * The preprocessing is the notebook's: dequantize (x*255 + u)/256, squash into
 * [0.05, 0.95] with data_constraint 0.9, logit; its log-det enters the loss. */
#ifndef FLOWDP_REALNVP_H
#define FLOWDP_REALNVP_H
#include "flowdp/error.h"
#include "flowdp/flow.h"

typedef struct fdp_realnvp_scale {
    int C, H, W, mid, is_last;
    int n_in;                  /* 3, or 4 on the last scale */
    fdp_coupling *in_c[4];     /* checkerboard (layers of the composition) */
    fdp_coupling *out_c[3];    /* channel-wise, on the squeezed tensor */
} fdp_realnvp_scale;

/* The composition (flow.h): root = seq[logit, body]; body = scale 0, where scale s =
 * seq[in_c..., (not last:) squeeze, out_c x 3, unsqueeze, squeeze(alt), multiscale(2C: scale
 * s+1), unsqueeze(alt)]. Parameters: the buffer data_constraint (the logit's), then every
 * scale's couplings in order. */
typedef struct fdp_realnvp {
    int in_channels, height, width, num_scales, mid_channels, num_blocks;
    float data_constraint;     /* 0.9; set before alloc_init */
    float k;                   /* number of pixel values, 256 */
    fdp_realnvp_scale *scales; /* (num_scales) */
    fdp_flow_layer *root;      /* seq[logit, body] */
    fdp_flow_layer *logit;
    fdp_flow_layer *body;      /* the flow on logit space */
    fdp_params params;
    /* 1: forward_loss (unless ctx->no_grad) keeps no activations and backward rebuilds each
     * layer's input from its output ([train] rebuild_activations); 0: the stored path */
    int rebuild_activations;
    /* saved by the last forward_loss, for backward */
    int rebuilt;               /* which path it took */
    fdp_tensor z;              /* (n,C,H,W) */
    double *sldj;              /* (n) backend memory */
    float *dldj;               /* (n) backend memory */
} fdp_realnvp;

/* Build the model and its parameter table (not yet allocated). Refuses shapes
 * it cannot take (odd size at a squeeze), naming the scale. */
int fdp_realnvp_build(fdp_realnvp *m, int in_channels, int height, int width, int num_scales, int mid_channels,
                      int num_blocks, fdp_err *err);
/* Allocate the flat buffers on be and initialize like PyTorch's defaults
 * (Conv2d kaiming-uniform, then weight norm g = ||v||; BatchNorm 1/0; Rescale 1),
 * drawing from Philox with the given seed. */
void fdp_realnvp_alloc_init(fdp_realnvp *m, fdp_backend *be, uint64_t seed);
void fdp_realnvp_free(fdp_realnvp *m);

/* compute the weight-normed weights for this step (after every parameter update) */
void fdp_realnvp_prepare(fdp_realnvp *m, fdp_ctx *ctx);
/* z = flows(y), sldj += log-det (y already preprocessed). flow_forward / flow_backward are
 * the stored path whatever rebuild_activations says (forward_loss / backward choose). */
fdp_tensor fdp_realnvp_flow_forward(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor y, double *sldj);
/* y = flows^-1(z) */
fdp_tensor fdp_realnvp_flow_inverse(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor z);
/* dy from dz and dldj, parameter gradients written */
fdp_tensor fdp_realnvp_flow_backward(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor dz, const float *dldj);

/* The whole forward of a batch: prepare, logit, flows, nll. v: dequantized pixels in [0,1)
 * (n,C,H,W) (dequant.h). Returns the mean nll (nats per image, the notebook's RealNVPLoss:
 * it counts the D*log(256) of the bins); per-sample nll into nll (host, n) if not NULL. */
double fdp_realnvp_loss(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor v, double *nll);
/* the same from pixels x in [0,1] and uniform noise u in [0,1) (the notebook's dequantization) */
double fdp_realnvp_forward_loss(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll);
/* Backward of the last forward_loss: gradients of mean nll * loss_scale
 * (loss_scale 1: the gradient of this batch's mean). */
void fdp_realnvp_backward(fdp_realnvp *m, fdp_ctx *ctx, float loss_scale);
/* Samples: x = sigmoid(flows^-1(z)), undoing the data constraint when
 * undo_constraint (the notebook's sample() does not: pass 0 to match it). */
fdp_tensor fdp_realnvp_sample(fdp_realnvp *m, fdp_ctx *ctx, fdp_tensor z, int undo_constraint);

#endif
