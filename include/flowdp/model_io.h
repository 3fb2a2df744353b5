/* model_io.h — a model rebuilt from a checkpoint alone (flowdp-eval,
 * flowdp-sample): the config text stored in the checkpoint says which model,
 * the checkpoint's image shape says for what input, and the parameters and
 * buffers (or the EMA weights) are loaded by name. */
#ifndef FLOWDP_MODEL_IO_H
#define FLOWDP_MODEL_IO_H
#include "flowdp/checkpoint.h"
#include "flowdp/config.h"
#include "flowdp/model.h"

/* cfg_out (may be NULL) receives the checkpoint's configuration; meta_out (may be NULL) its metadata.
 * use_ema: take the EMA weights when the checkpoint has them. */
int fdp_model_from_checkpoint(const char *path, fdp_backend *be, int use_ema, fdp_model **out, fdp_config *cfg_out,
                              fdp_ckpt_meta *meta_out, fdp_err *err);

#endif
