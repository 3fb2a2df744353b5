/* resnet.c — the notebook's ResNet s/t network and ResidualBlock:
 *   x -> in_norm -> (*2 if double_after_norm) -> cat(x, -x) -> relu -> in_conv (3x3)
 *     -> skip = in_skip(h0); for each block: h = block(h); skip += skips[i](h)
 *     -> out_norm(skip) -> relu -> out_conv (1x1)
 *   block(x) = x + out_conv(relu(out_norm(in_conv(relu(in_norm(x)))))) */
#include <stdio.h>
#include <stdlib.h>

#include "flowdp/condnet.h"
#include "flowdp/error.h"
#include "flowdp/nn.h"

void fdp_resnet_init(fdp_resnet *r, fdp_params *p, const char *prefix, int cin, int mid, int cout, int num_blocks,
                     int double_after_norm) {
    char name[2 * FDP_NAME_MAX];
    r->cin = cin;
    r->mid = mid;
    r->cout = cout;
    r->num_blocks = num_blocks;
    r->double_after_norm = double_after_norm;
    /* registration order = PyTorch's: in_norm, in_conv, in_skip, blocks, skips, out_norm, out_conv */
    snprintf(name, sizeof name, "%s.in_norm", prefix);
    fdp_bn_init(&r->in_norm, p, name, cin);
    snprintf(name, sizeof name, "%s.in_conv.conv", prefix);
    fdp_wnconv_init(&r->in_conv, p, name, 2 * cin, mid, 3, 1);
    snprintf(name, sizeof name, "%s.in_skip.conv", prefix);
    fdp_wnconv_init(&r->in_skip, p, name, mid, mid, 1, 1);
    r->blocks = fdp_xcalloc((size_t)(num_blocks ? num_blocks : 1), sizeof *r->blocks);
    r->skips = fdp_xcalloc((size_t)(num_blocks ? num_blocks : 1), sizeof *r->skips);
    for (int i = 0; i < num_blocks; i++) {
        fdp_resblock *b = &r->blocks[i];
        snprintf(name, sizeof name, "%s.blocks.%d.in_norm", prefix, i);
        fdp_bn_init(&b->in_norm, p, name, mid);
        snprintf(name, sizeof name, "%s.blocks.%d.in_conv.conv", prefix, i);
        fdp_wnconv_init(&b->in_conv, p, name, mid, mid, 3, 0);
        snprintf(name, sizeof name, "%s.blocks.%d.out_norm", prefix, i);
        fdp_bn_init(&b->out_norm, p, name, mid);
        snprintf(name, sizeof name, "%s.blocks.%d.out_conv.conv", prefix, i);
        fdp_wnconv_init(&b->out_conv, p, name, mid, mid, 3, 1);
    }
    for (int i = 0; i < num_blocks; i++) {
        snprintf(name, sizeof name, "%s.skips.%d.conv", prefix, i);
        fdp_wnconv_init(&r->skips[i], p, name, mid, mid, 1, 1);
    }
    snprintf(name, sizeof name, "%s.out_norm", prefix);
    fdp_bn_init(&r->out_norm, p, name, mid);
    snprintf(name, sizeof name, "%s.out_conv.conv", prefix);
    fdp_wnconv_init(&r->out_conv, p, name, mid, cout, 1, 1);
}

void fdp_resnet_free(fdp_resnet *r) {
    free(r->blocks);
    free(r->skips);
    r->blocks = NULL;
    r->skips = NULL;
}

void fdp_resnet_prepare(fdp_resnet *r, fdp_ctx *ctx) {
    fdp_bn_prepare(&r->in_norm, ctx);
    fdp_bn_prepare(&r->out_norm, ctx);
    for (int i = 0; i < r->num_blocks; i++) {
        fdp_bn_prepare(&r->blocks[i].in_norm, ctx);
        fdp_bn_prepare(&r->blocks[i].out_norm, ctx);
    }
    fdp_wnconv_prepare(&r->in_conv, ctx);
    fdp_wnconv_prepare(&r->in_skip, ctx);
    for (int i = 0; i < r->num_blocks; i++) {
        fdp_wnconv_prepare(&r->blocks[i].in_conv, ctx);
        fdp_wnconv_prepare(&r->blocks[i].out_conv, ctx);
        fdp_wnconv_prepare(&r->skips[i], ctx);
    }
    fdp_wnconv_prepare(&r->out_conv, ctx);
}

fdp_tensor fdp_resnet_forward(fdp_resnet *r, fdp_ctx *ctx, fdp_tensor x) {
    fdp_arena *A = ctx->arena;
    fdp_backend *be = ctx->be;
    int n = x.n, h = x.h, w = x.w;
    FDP_CHECK(x.c == r->cin, "resnet: input has %d channels, expected %d", x.c, r->cin);
    r->x = x;
    r->a0 = fdp_arena_tensor(A, n, 2 * r->cin, h, w);
    fdp_bn_forward(&r->in_norm, ctx, x, r->a0, r->double_after_norm ? 2.0f : 1.0f, FDP_ACT_RELU_CAT_NEG);
    r->h0 = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_wnconv_forward(&r->in_conv, ctx, r->a0, r->h0, 0);
    r->skip = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_wnconv_forward(&r->in_skip, ctx, r->h0, r->skip, 0);
    fdp_tensor hcur = r->h0;
    for (int i = 0; i < r->num_blocks; i++) {
        fdp_resblock *b = &r->blocks[i];
        b->x = hcur;
        b->a = fdp_arena_tensor(A, n, r->mid, h, w);
        fdp_bn_forward(&b->in_norm, ctx, hcur, b->a, 1.0f, FDP_ACT_RELU);
        b->c = fdp_arena_tensor(A, n, r->mid, h, w);
        fdp_wnconv_forward(&b->in_conv, ctx, b->a, b->c, 0);
        b->b = fdp_arena_tensor(A, n, r->mid, h, w);
        fdp_bn_forward(&b->out_norm, ctx, b->c, b->b, 1.0f, FDP_ACT_RELU);
        fdp_tensor hn = fdp_arena_tensor(A, n, r->mid, h, w);
        be->copy(be, hn.data, hcur.data, sizeof(float) * (size_t)fdp_numel(hcur));
        fdp_wnconv_forward(&b->out_conv, ctx, b->b, hn, 1); /* hn = x + out_conv(...) */
        fdp_wnconv_forward(&r->skips[i], ctx, hn, r->skip, 1);
        hcur = hn;
    }
    r->hlast = hcur;
    r->o = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_bn_forward(&r->out_norm, ctx, r->skip, r->o, 1.0f, FDP_ACT_RELU);
    fdp_tensor y = fdp_arena_tensor(A, n, r->cout, h, w);
    fdp_wnconv_forward(&r->out_conv, ctx, r->o, y, 0);
    return y;
}

void fdp_resnet_backward(fdp_resnet *r, fdp_ctx *ctx, fdp_tensor dy, fdp_tensor dx, int accumulate) {
    fdp_arena *A = ctx->arena;
    int n = r->x.n, h = r->x.h, w = r->x.w;
    fdp_arena_mark m = fdp_arena_get_mark(A);
    /* out_conv, out_norm */
    fdp_tensor d_o = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_wnconv_backward(&r->out_conv, ctx, r->o, dy, d_o.data, 0);
    fdp_tensor d_skip = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_bn_backward(&r->out_norm, ctx, r->skip, r->o, d_o, d_skip, 1.0f, FDP_ACT_RELU, 0);
    /* skip = in_skip(h0) + sum_i skips[i](output of block i); go through the blocks backwards,
     * dh holding the full gradient of the current block's output */
    int nb = r->num_blocks;
    fdp_tensor dh = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_tensor t1 = fdp_arena_tensor(A, n, r->mid, h, w);
    fdp_tensor t2 = fdp_arena_tensor(A, n, r->mid, h, w);
    if (nb > 0)
        fdp_wnconv_backward(&r->skips[nb - 1], ctx, r->hlast, d_skip, dh.data, 0);
    else
        fdp_wnconv_backward(&r->in_skip, ctx, r->h0, d_skip, dh.data, 0);
    for (int i = nb - 1; i >= 0; i--) {
        fdp_resblock *b = &r->blocks[i];
        /* h_out = b->x + out_conv(b->b): dh flows to b->x unchanged, plus the branch */
        fdp_wnconv_backward(&b->out_conv, ctx, b->b, dh, t1.data, 0);      /* t1 = d b */
        fdp_bn_backward(&b->out_norm, ctx, b->c, b->b, t1, t2, 1.0f, FDP_ACT_RELU, 0); /* t2 = d c */
        fdp_wnconv_backward(&b->in_conv, ctx, b->a, t2, t1.data, 0);       /* t1 = d a */
        fdp_bn_backward(&b->in_norm, ctx, b->x, b->a, t1, dh, 1.0f, FDP_ACT_RELU, 1); /* dh += d x */
        /* b->x also feeds the skip conv before it: skips[i-1] or in_skip */
        if (i > 0)
            fdp_wnconv_backward(&r->skips[i - 1], ctx, b->x, d_skip, dh.data, 1);
        else
            fdp_wnconv_backward(&r->in_skip, ctx, r->h0, d_skip, dh.data, 1);
    }
    /* h0 = in_conv(a0), a0 = relu(cat(bn(x), -bn(x))) */
    fdp_tensor d_a0 = fdp_arena_tensor(A, n, 2 * r->cin, h, w);
    fdp_wnconv_backward(&r->in_conv, ctx, r->a0, dh, d_a0.data, 0);
    fdp_bn_backward(&r->in_norm, ctx, r->x, r->a0, d_a0, dx, r->double_after_norm ? 2.0f : 1.0f,
                    FDP_ACT_RELU_CAT_NEG, accumulate);
    fdp_arena_reset(A, m);
}

/* ---- as a conditioning network (condnet.h) ---- */
typedef struct resnet_net {
    fdp_condnet base;
    fdp_resnet r;
} resnet_net;

static fdp_tensor rn_forward(fdp_condnet *n, fdp_ctx *ctx, fdp_tensor x) {
    return fdp_resnet_forward(&((resnet_net *)n)->r, ctx, x);
}
static void rn_backward(fdp_condnet *n, fdp_ctx *ctx, fdp_tensor dh, fdp_tensor dx, int accumulate) {
    fdp_resnet *r = &((resnet_net *)n)->r;
    if (dx.data) {
        fdp_resnet_backward(r, ctx, dh, dx, accumulate);
        return;
    }
    /* dx not wanted (condnet.h): the ResNet always writes one, so into scratch */
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor scratch = fdp_arena_tensor(ctx->arena, r->x.n, r->x.c, r->x.h, r->x.w);
    fdp_resnet_backward(r, ctx, dh, scratch, 0);
    fdp_arena_reset(ctx->arena, m);
}
static void rn_prepare(fdp_condnet *n, fdp_ctx *ctx) { fdp_resnet_prepare(&((resnet_net *)n)->r, ctx); }
static void rn_init_values(fdp_condnet *n, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    fdp_resnet *r = &((resnet_net *)n)->r;
    fdp_bn_init_values(&r->in_norm, p, hp, hb);
    fdp_wnconv_init_values(&r->in_conv, p, hp, seed);
    fdp_wnconv_init_values(&r->in_skip, p, hp, seed);
    for (int i = 0; i < r->num_blocks; i++) {
        fdp_bn_init_values(&r->blocks[i].in_norm, p, hp, hb);
        fdp_wnconv_init_values(&r->blocks[i].in_conv, p, hp, seed);
        fdp_bn_init_values(&r->blocks[i].out_norm, p, hp, hb);
        fdp_wnconv_init_values(&r->blocks[i].out_conv, p, hp, seed);
        fdp_wnconv_init_values(&r->skips[i], p, hp, seed);
    }
    fdp_bn_init_values(&r->out_norm, p, hp, hb);
    fdp_wnconv_init_values(&r->out_conv, p, hp, seed);
}
static void rn_destroy(fdp_condnet *n) { fdp_resnet_free(&((resnet_net *)n)->r); }

static const fdp_condnet_ops RESNET_OPS = {.kind = "resnet",
                                           .forward = rn_forward,
                                           .backward = rn_backward,
                                           .prepare = rn_prepare,
                                           .init_values = rn_init_values,
                                           .destroy = rn_destroy};

fdp_condnet *fdp_condnet_resnet_create(fdp_params *p, const char *prefix, int cin, int mid, int cout, int num_blocks,
                                       int double_after_norm) {
    resnet_net *n = fdp_xcalloc(1, sizeof *n);
    n->base.ops = &RESNET_OPS;
    n->base.cin = cin;
    n->base.cout = cout;
    fdp_resnet_init(&n->r, p, prefix, cin, mid, cout, num_blocks, double_after_norm);
    return &n->base;
}

fdp_resnet *fdp_condnet_as_resnet(fdp_condnet *n) {
    FDP_CHECK(n->ops == &RESNET_OPS, "condnet %s is not a resnet", n->ops->kind);
    return &((resnet_net *)n)->r;
}

static fdp_condnet *rn_example(fdp_params *p, int *cin, int *h, int *w) {
    *cin = 2;
    *h = 4;
    *w = 4;
    return fdp_condnet_resnet_create(p, "net", 2, 4, 4, 1, 1);
}
const fdp_condnet_kind fdp_condnet_kind_resnet = {"resnet", rn_example};
