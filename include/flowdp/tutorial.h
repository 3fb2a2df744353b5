/* tutorial.h — the flows of Lippe's UvA Tutorial 9 ("Normalizing Flows for Image Modeling") as a
 * flowdp model ([model] type = tutorial), a composition (flow.h) of the tutorial's layers:
 *   simple     (create_simple_flow(use_vardeq=False)): flows.0 the dequantization's logit
 *              (tut_logit, alpha 1e-5, no parameters), flows.1..8 checkerboard couplings
 *              (tut_coupling, GatedConvNet(c_hidden), invert = odd index)
 *   multiscale (create_multiscale_flow()'s main flows): flows.0 as above, flows.1,2 checkerboard
 *              couplings (c_hidden), flows.3 squeeze, flows.4,5 channel couplings on 4C channels
 *              (c_hidden_scale2), flows.6 split (2C channels to the standard-normal prior),
 *              flows.7 squeeze, flows.8..11 channel couplings on 8C channels (c_hidden_scale3).
 *              The tutorial's flows.0 is variational; here it is the uniform one (the variational
 *              dequantization is not built yet).
 * Parameter names are the tutorial's state_dict names (flows.1.network.nn.0.weight, ...), in its
 * order; initialization the tutorial's (PyTorch defaults, nn.8 zero, scaling_factor 0).
 * Loss: v = (x_int + u)/256 (dequant.h, unrounded), nll = -(ldj + sum log N(z; 0, 1)) + D log 256:
 * the tutorial's -log_px (its ldj holds the -D log 256), nats of the discrete data.
 * Latent layout (sample / encode, image-shaped (n, C, H, W)): per sample, the split's factored-out
 * part first (multiscale: 2C x H/2 x W/2 floats), then the final z (C x H x W, or 8C x H/4 x W/4). */
#ifndef FLOWDP_TUTORIAL_H
#define FLOWDP_TUTORIAL_H
#include "flowdp/error.h"
#include "flowdp/flow.h"

typedef struct fdp_tutorial {
    int C, H, W, multiscale;
    int hid[3];                /* c_hidden (simple: hid[0]) */
    double alpha;              /* the logit's, 1e-5 */
    fdp_params params;
    fdp_flow_layer *root;      /* seq[tut_logit, flows.1 ...] */
    int64_t split_len;         /* per-sample floats the split factors out (0: simple) */
    int zc, zh, zw;            /* the final z's shape */
    int rebuild_activations;   /* as realnvp.h */
    /* saved by the last loss, for backward */
    int rebuilt;
    fdp_tensor z;
    double *sldj;
    float *dldj;
} fdp_tutorial;

/* Build the layers and the parameter table (not yet allocated); hid: c_hidden of scales 1..3 */
int fdp_tutorial_build(fdp_tutorial *t, int C, int H, int W, int multiscale, const int hid[3], fdp_err *err);
/* allocate on be and initialize (every layer's init_values) */
void fdp_tutorial_alloc_init(fdp_tutorial *t, fdp_backend *be, uint64_t seed);
void fdp_tutorial_free(fdp_tutorial *t);
/* mean nll (nats per image) of v (dequantized, in [0,1)); per-sample into nll (host) if not NULL */
double fdp_tutorial_loss(fdp_tutorial *t, fdp_ctx *ctx, fdp_tensor v, double *nll);
/* gradients of loss_scale * the last loss */
void fdp_tutorial_backward(fdp_tutorial *t, fdp_ctx *ctx, float loss_scale);
/* images in [0,1]: floor(sigmoid(flows^-1(z)) 256) clamped to 0..255, / 255; z image-shaped
 * (the layout above), every part scaled by temperature; z is not changed */
fdp_tensor fdp_tutorial_sample(fdp_tutorial *t, fdp_ctx *ctx, fdp_tensor z, float temperature);
/* the latent (n, C, H, W, the layout above) of v, no_grad */
fdp_tensor fdp_tutorial_encode(fdp_tutorial *t, fdp_ctx *ctx, fdp_tensor v);

#endif
