/* model_io.c — rebuild a model from a checkpoint (see model_io.h). */
#include "flowdp/model_io.h"

#include <stdlib.h>
#include <string.h>

int fdp_model_from_checkpoint(const char *path, fdp_backend *be, int use_ema, fdp_model **out, fdp_config *cfg_out,
                              fdp_ckpt_meta *meta_out, fdp_err *err) {
    *out = NULL;
    fdp_ckpt_meta meta;
    char *text = NULL;
    if (fdp_ckpt_read_header(path, &meta, &text, err) != 0) return -1;
    fdp_config cfg;
    fdp_config_defaults(&cfg);
    char name[FDP_CONFIG_STR_MAX + 32];
    snprintf(name, sizeof name, "%s:/config", path);
    if (fdp_config_load_string(&cfg, text, name, err) != 0) {
        free(text);
        return -1;
    }
    free(text);
    if (meta.image_c <= 0 || meta.image_h <= 0 || meta.image_w <= 0) {
        fdp_config_free(&cfg);
        return fdp_err_set(err, "%s: the checkpoint does not record its image shape", path);
    }
    fdp_model *m = NULL;
    if (fdp_model_create(&cfg, meta.image_c, meta.image_h, meta.image_w, be, 0, &m, err) != 0) {
        fdp_config_free(&cfg);
        return -1;
    }
    int sections = fdp_ckpt_sections(path, err);
    if (sections < 0) {
        fdp_model_destroy(m);
        fdp_config_free(&cfg);
        return -1;
    }
    if (!(sections & FDP_CKPT_HAS_EMA)) use_ema = 0;
    fdp_params *p = m->params;
    size_t np = (size_t)p->n_params, nb = (size_t)p->n_buffers;
    float *h = fdp_xmalloc(sizeof(float) * (2 * np + nb + 1));
    fdp_ckpt_state s = {p, h, h + 2 * np, NULL, NULL, use_ema ? h + np : NULL};
    fdp_ckpt_meta meta2;
    if (fdp_ckpt_load_expect(path, m->type, &s, &meta2, NULL, err) != 0) {
        free(h);
        fdp_model_destroy(m);
        fdp_config_free(&cfg);
        return -1;
    }
    be->from_host(be, p->params, use_ema ? h + np : h, sizeof(float) * np);
    be->from_host(be, p->buffers, h + 2 * np, sizeof(float) * nb);
    free(h);
    if (cfg_out)
        *cfg_out = cfg;
    else
        fdp_config_free(&cfg);
    if (meta_out) *meta_out = meta;
    *out = m;
    return 0;
}
