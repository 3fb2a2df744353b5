/* model.h — one small interface over the flow models (RealNVP and Glow),
 * so that the trainer, flowdp-eval and flowdp-sample do not care which it is. */
#ifndef FLOWDP_MODEL_H
#define FLOWDP_MODEL_H
#include "flowdp/config.h"
#include "flowdp/nn.h"

typedef struct fdp_model fdp_model;
struct fdp_model {
    const char *type;         /* "realnvp" | "glow" */
    int C, H, W;              /* image shape */
    int n_bins;               /* pixel values (256 for 8 bits) */
    fdp_params *params;       /* the name table and flat buffers */
    /* mean nll (nats/image) of the batch v (dequantized pixels in [0,1), from dequant.h's stage;
     * the nll counts the D*log(n_bins) of the bins); per-sample nll into nll (host) when not NULL.
     * Saves what backward needs unless ctx->no_grad. */
    double (*forward_loss)(fdp_model *m, fdp_ctx *ctx, fdp_tensor v, double *nll);
    /* gradients of loss_scale * (mean nll of the last forward_loss) */
    void (*backward)(fdp_model *m, fdp_ctx *ctx, float loss_scale);
    /* images in [0,1] from standard-normal z (the shape of the image), every prior's
     * standard deviation scaled by temperature */
    fdp_tensor (*sample)(fdp_model *m, fdp_ctx *ctx, fdp_tensor z, float temperature);
    /* optional (NULL: the model cannot encode): the standardized latent (n,C,H,W, arena) of the
     * dequantized batch v, laid out as sample() takes it, so that sample(encode(v), 1) gives the
     * images back; multi-scale models put their factored-out latents in it too. Evaluation mode,
     * no_grad. */
    fdp_tensor (*encode)(fdp_model *m, fdp_ctx *ctx, fdp_tensor v);
    void (*destroy)(fdp_model *m);
    void *impl;
};

/* Build the model the config describes for C x H x W images, allocate its
 * parameters on be and initialize them from seed. -1 with a one-line error
 * when the configuration cannot take that shape. */
int fdp_model_create(const fdp_config *cfg, int C, int H, int W, fdp_backend *be, uint64_t seed, fdp_model **out,
                     fdp_err *err);
void fdp_model_destroy(fdp_model *m);
/* forward_loss of pixels x in [0,1] dequantized with the given uniform noise u in [0,1) the way the
 * model's own uniform stage would (dequant.h; for tests and references that supply their noise) */
double fdp_model_loss_xu(fdp_model *m, fdp_ctx *ctx, fdp_tensor x, fdp_tensor u, double *nll);

#endif
