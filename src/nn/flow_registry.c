/* flow_registry.c — the registries of flow-layer kinds and conditioning networks (flow.h,
 * condnet.h), and the examples of the two compositions. Apart from flow.c so that the layers
 * call flow.c and the registry calls the layers, never both ways. */
#include "flowdp/condnet.h"
#include "flowdp/flow.h"

/* ---- the registry ---- */
#define FDP_FLOW_KIND_PTR(name) &fdp_flow_kind_##name,
static const fdp_flow_kind *const KINDS[] = {FDP_FLOW_KINDS(FDP_FLOW_KIND_PTR)};

const fdp_flow_kind *const *fdp_flow_kinds(int *n) {
    *n = (int)(sizeof KINDS / sizeof KINDS[0]);
    return KINDS;
}

/* examples of the compositions, from the RealNVP layers (squeeze.c, coupling.c) */
/* variant 1: a settling seq */
static fdp_flow_layer *seq_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    *c = 2;
    *h = 4;
    *w = 4;
    fdp_flow_layer *s = fdp_flow_seq_create(variant ? 32 : 0);
    fdp_flow_seq_add(s, fdp_flow_squeeze_create(0, 0));
    fdp_flow_seq_add(s, fdp_flow_coupling_create(p, "layer.0", 8, 4, 1, FDP_MASK_CHANNEL, 0));
    fdp_flow_seq_add(s, fdp_flow_squeeze_create(0, 1));
    return s;
}
const fdp_flow_kind fdp_flow_kind_seq = {"seq", 2, seq_example, 0};

static fdp_flow_layer *ms_example(fdp_params *p, int variant, int *c, int *h, int *w) {
    (void)variant;
    *c = 4;
    *h = 4;
    *w = 4;
    return fdp_flow_multiscale_create(2, fdp_flow_coupling_create(p, "layer", 2, 4, 1, FDP_MASK_CHECKERBOARD, 1));
}
const fdp_flow_kind fdp_flow_kind_multiscale = {"multiscale", 1, ms_example, 0};

/* ---- conditioning networks (condnet.h) ---- */
#define FDP_CONDNET_KIND_PTR(name) &fdp_condnet_kind_##name,
static const fdp_condnet_kind *const CONDNET_KINDS[] = {FDP_CONDNET_KINDS(FDP_CONDNET_KIND_PTR)};

const fdp_condnet_kind *const *fdp_condnet_kinds(int *n) {
    *n = (int)(sizeof CONDNET_KINDS / sizeof CONDNET_KINDS[0]);
    return CONDNET_KINDS;
}
