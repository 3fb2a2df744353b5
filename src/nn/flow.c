/* flow.c — the flow-layer interface (flow.h): calls through the table, the generic
 * rebuild pair, the two compositions (seq, multiscale) and the registry. */
#include "flowdp/flow.h"

#include <stdlib.h>
#include <string.h>

#include "flowdp/condnet.h"
#include "flowdp/error.h"

void fdp_flow_begin(fdp_flow_layer *l, const fdp_flow_ops *ops, const fdp_params *p) {
    FDP_CHECK(ops && ops->forward && ops->inverse && ops->backward, "flow layer %s: forward, inverse and backward "
              "are required", ops && ops->kind ? ops->kind : "?");
    l->ops = ops;
    l->first_entry = p ? p->count : 0;
    l->last_entry = l->first_entry - 1;
}

void fdp_flow_end(fdp_flow_layer *l, const fdp_params *p) { l->last_entry = p ? p->count - 1 : l->first_entry - 1; }

void fdp_flow_prepare(fdp_flow_layer *l, fdp_ctx *ctx) {
    if (l->ops->prepare) l->ops->prepare(l, ctx);
}

void fdp_flow_init_values(fdp_flow_layer *l, const fdp_params *p, float *host_params, float *host_buffers,
                          uint64_t seed) {
    if (l->ops->init_values) l->ops->init_values(l, p, host_params, host_buffers, seed);
}

void fdp_flow_alloc_init(fdp_flow_layer *root, fdp_params *p, fdp_backend *be, uint64_t seed) {
    fdp_params_finalize(p, be);
    /* zeros, then every layer's own init_values, on the host; then one upload */
    float *hp = fdp_xcalloc((size_t)(p->n_params ? p->n_params : 1), sizeof(float));
    float *hb = fdp_xcalloc((size_t)(p->n_buffers ? p->n_buffers : 1), sizeof(float));
    fdp_flow_init_values(root, p, hp, hb, seed);
    be->from_host(be, p->params, hp, sizeof(float) * (size_t)p->n_params);
    be->from_host(be, p->buffers, hb, sizeof(float) * (size_t)p->n_buffers);
    free(hp);
    free(hb);
}

void fdp_flow_destroy(fdp_flow_layer *l) {
    if (!l) return;
    if (l->ops->destroy) l->ops->destroy(l);
    free(l);
}

void fdp_flow_report(fdp_ctx *ctx, const fdp_flow_layer *l) {
    if (!l->ops->is_container && fdp_flow_has_params(l) && ctx->grads_ready)
        ctx->grads_ready(ctx->grads_ready_user, l->first_entry, l->last_entry);
}

fdp_tensor fdp_flow_overwrite(fdp_ctx *ctx, fdp_tensor x, fdp_tensor t) {
    if (t.data != x.data) ctx->be->copy(ctx->be, x.data, t.data, sizeof(float) * (size_t)fdp_numel(t));
    t.data = x.data;
    return t;
}

/* ---- the generic rebuild pair ---- */
fdp_tensor fdp_flow_forward_inplace(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    if (l->ops->forward_inplace) return l->ops->forward_inplace(l, ctx, x, sldj);
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    int ng = ctx->no_grad;
    ctx->no_grad = 1; /* nothing is kept: backward_rebuild recomputes it */
    fdp_tensor y = l->ops->forward(l, ctx, x, sldj);
    ctx->no_grad = ng;
    FDP_CHECK(fdp_numel(y) == fdp_numel(x), "flow layer %s changes the number of elements but has no "
              "forward_inplace (factor-out layers must keep what leaves the flow themselves)", l->ops->kind);
    y = fdp_flow_overwrite(ctx, x, y);
    fdp_arena_reset(ctx->arena, m);
    return y;
}

fdp_tensor fdp_flow_backward_rebuild(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy,
                                     const float *dldj) {
    if (l->ops->backward_rebuild) return l->ops->backward_rebuild(l, ctx, y, dy, dldj);
    fdp_backend *be = ctx->be;
    fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
    fdp_tensor x = l->ops->inverse(l, ctx, y);
    /* the forward again, on the rebuilt input, to save what backward needs; its log-det goes to
     * scratch (it was counted by forward_inplace) */
    double *scratch = fdp_arena_doubles(ctx->arena, y.n);
    be->memset0(be, scratch, sizeof(double) * (size_t)y.n);
    int rc = ctx->recompute, ng = ctx->no_grad;
    ctx->recompute = 1;
    ctx->no_grad = 0;
    (void)l->ops->forward(l, ctx, x, scratch);
    ctx->recompute = rc;
    ctx->no_grad = ng;
    fdp_tensor dx = l->ops->backward(l, ctx, dy, dldj);
    FDP_CHECK(fdp_same_shape(dx, x), "flow layer %s: backward returned %dx%dx%d for a %dx%dx%d input", l->ops->kind,
              dx.c, dx.h, dx.w, x.c, x.h, x.w);
    fdp_flow_overwrite(ctx, y, x);
    dx = fdp_flow_overwrite(ctx, dy, dx);
    fdp_arena_reset(ctx->arena, m);
    return dx;
}

/* ---- seq ---- */
typedef struct flow_seq {
    fdp_flow_layer base;
    int64_t settle;                 /* floats per sample of the work tensor; 0: no settling */
    fdp_flow_layer **child;
    int n, cap;
    int head;                       /* leading children without parameters */
} flow_seq;

/* copy y into work and rewind the arena to m (y's producer's scratch and y are freed) */
static fdp_tensor settle(fdp_ctx *ctx, float *work, fdp_arena_mark m, fdp_tensor y) {
    ctx->be->copy(ctx->be, work, y.data, sizeof(float) * (size_t)fdp_numel(y));
    fdp_arena_reset(ctx->arena, m);
    return fdp_tensor_wrap(work, y.n, y.c, y.h, y.w, y.dev);
}

static float *seq_work(flow_seq *s, fdp_ctx *ctx, int n) {
    return fdp_arena_alloc(ctx->arena, sizeof(float) * (size_t)((int64_t)n * s->settle));
}

static fdp_tensor settle_checked(flow_seq *s, fdp_ctx *ctx, float *work, fdp_arena_mark m, fdp_tensor y) {
    FDP_CHECK(fdp_sample_numel(y) <= s->settle, "flow seq: a %dx%dx%d tensor does not fit the %lld-float work tensor",
              y.c, y.h, y.w, (long long)s->settle);
    return settle(ctx, work, m, y);
}

static fdp_tensor seq_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    flow_seq *s = (flow_seq *)l;
    float *work = s->settle && ctx->no_grad ? seq_work(s, ctx, x.n) : NULL;
    for (int i = 0; i < s->n; i++) {
        fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
        x = s->child[i]->ops->forward(s->child[i], ctx, x, sldj);
        if (work) x = settle_checked(s, ctx, work, m, x);
    }
    return x;
}

static fdp_tensor seq_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    flow_seq *s = (flow_seq *)l;
    float *work = s->settle ? seq_work(s, ctx, y.n) : NULL;
    for (int i = s->n - 1; i >= 0; i--) {
        fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
        y = s->child[i]->ops->inverse(s->child[i], ctx, y);
        if (work) y = settle_checked(s, ctx, work, m, y);
    }
    return y;
}

/* the first child backward visits: all of them, or, when the input gradient is not wanted,
 * down to the first with parameters */
static int seq_stop(const flow_seq *s, const fdp_ctx *ctx) { return ctx->input_grad ? 0 : s->head; }

static fdp_tensor seq_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    flow_seq *s = (flow_seq *)l;
    float *work = s->settle ? seq_work(s, ctx, dy.n) : NULL;
    for (int i = s->n - 1; i >= seq_stop(s, ctx); i--) {
        fdp_arena_mark m = fdp_arena_get_mark(ctx->arena);
        dy = s->child[i]->ops->backward(s->child[i], ctx, dy, dldj);
        if (work) dy = settle_checked(s, ctx, work, m, dy);
        fdp_flow_report(ctx, s->child[i]);
    }
    return dy;
}

static fdp_tensor seq_forward_inplace(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    flow_seq *s = (flow_seq *)l;
    for (int i = 0; i < s->n; i++) x = fdp_flow_forward_inplace(s->child[i], ctx, x, sldj);
    return x;
}

static fdp_tensor seq_backward_rebuild(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy,
                                       const float *dldj) {
    flow_seq *s = (flow_seq *)l;
    for (int i = s->n - 1; i >= seq_stop(s, ctx); i--) {
        dy = fdp_flow_backward_rebuild(s->child[i], ctx, y, dy, dldj);
        y = fdp_tensor_wrap(y.data, dy.n, dy.c, dy.h, dy.w, dy.dev);
        fdp_flow_report(ctx, s->child[i]);
    }
    return dy;
}

static void seq_prepare(fdp_flow_layer *l, fdp_ctx *ctx) {
    flow_seq *s = (flow_seq *)l;
    for (int i = 0; i < s->n; i++) fdp_flow_prepare(s->child[i], ctx);
}

static void seq_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    flow_seq *s = (flow_seq *)l;
    for (int i = 0; i < s->n; i++) fdp_flow_init_values(s->child[i], p, hp, hb, seed);
}

static void seq_destroy(fdp_flow_layer *l) {
    flow_seq *s = (flow_seq *)l;
    for (int i = 0; i < s->n; i++) fdp_flow_destroy(s->child[i]);
    free(s->child);
}

static const fdp_flow_ops SEQ_OPS = {.kind = "seq",
                                     .forward = seq_forward,
                                     .inverse = seq_inverse,
                                     .backward = seq_backward,
                                     .init_values = seq_init_values,
                                     .prepare = seq_prepare,
                                     .forward_inplace = seq_forward_inplace,
                                     .backward_rebuild = seq_backward_rebuild,
                                     .destroy = seq_destroy,
                                     .is_container = 1};

fdp_flow_layer *fdp_flow_seq_create(int64_t settle) {
    flow_seq *s = fdp_xcalloc(1, sizeof *s);
    fdp_flow_begin(&s->base, &SEQ_OPS, NULL);
    s->settle = settle;
    return &s->base;
}

void fdp_flow_seq_add(fdp_flow_layer *l, fdp_flow_layer *child) {
    FDP_CHECK(l->ops == &SEQ_OPS, "fdp_flow_seq_add on a %s", l->ops->kind);
    flow_seq *s = (flow_seq *)l;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        s->child = realloc(s->child, sizeof *s->child * (size_t)s->cap);
        FDP_CHECK(s->child, "out of memory growing a flow seq");
    }
    s->child[s->n++] = child;
    if (s->head == s->n - 1 && !fdp_flow_has_params(child)) s->head = s->n;
    /* the seq's entries span its children's */
    if (fdp_flow_has_params(child)) {
        if (!fdp_flow_has_params(l)) {
            l->first_entry = child->first_entry;
            l->last_entry = child->last_entry;
        } else {
            if (child->first_entry < l->first_entry) l->first_entry = child->first_entry;
            if (child->last_entry > l->last_entry) l->last_entry = child->last_entry;
        }
    }
}

int fdp_flow_seq_count(const fdp_flow_layer *l) { return l->ops == &SEQ_OPS ? ((const flow_seq *)l)->n : 0; }

fdp_flow_layer *fdp_flow_seq_at(const fdp_flow_layer *l, int i) {
    FDP_CHECK(l->ops == &SEQ_OPS && i >= 0 && i < ((const flow_seq *)l)->n, "fdp_flow_seq_at(%d) out of range", i);
    return ((const flow_seq *)l)->child[i];
}

/* ---- multiscale: channels [0, keep) through the child, the rest unchanged ---- */
typedef struct flow_ms {
    fdp_flow_layer base;
    int keep;
    fdp_flow_layer *child;
} flow_ms;

static fdp_tensor ms_apply(flow_ms *s, fdp_ctx *ctx, fdp_tensor x, double *sldj, int dir, const float *dldj) {
    FDP_CHECK(x.c > s->keep, "multiscale: %d channels, keeps %d", x.c, s->keep);
    fdp_tensor keep = fdp_channel_slice(ctx, x, 0, s->keep);
    fdp_tensor rest = fdp_channel_slice(ctx, x, s->keep, x.c - s->keep);
    fdp_flow_layer *c = s->child;
    if (dir == 0) {
        keep = c->ops->forward(c, ctx, keep, sldj);
    } else if (dir == 1) {
        keep = c->ops->inverse(c, ctx, keep);
    } else {
        int ig = ctx->input_grad;
        ctx->input_grad = 1; /* the child's input is inside the flow */
        keep = c->ops->backward(c, ctx, keep, dldj);
        ctx->input_grad = ig;
        fdp_flow_report(ctx, c);
    }
    return fdp_channel_cat(ctx, keep, rest);
}

static fdp_tensor ms_forward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    return ms_apply((flow_ms *)l, ctx, x, sldj, 0, NULL);
}
static fdp_tensor ms_inverse(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y) {
    return ms_apply((flow_ms *)l, ctx, y, NULL, 1, NULL);
}
static fdp_tensor ms_backward(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor dy, const float *dldj) {
    return ms_apply((flow_ms *)l, ctx, dy, NULL, 2, dldj);
}

/* channels [0, part.c) of whole = part */
static void put_channels(fdp_ctx *ctx, fdp_tensor part, fdp_tensor whole) {
    fdp_slice_copy_args a = {part.data, whole.data, part.c, 0, whole.c, 0, part.c, (int64_t)part.h * part.w, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(part), &a);
}

static fdp_tensor ms_forward_inplace(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor x, double *sldj) {
    flow_ms *s = (flow_ms *)l;
    fdp_arena_mark mk = fdp_arena_get_mark(ctx->arena);
    fdp_tensor keep = fdp_channel_slice(ctx, x, 0, s->keep); /* the rest stays in x */
    fdp_tensor out = fdp_flow_forward_inplace(s->child, ctx, keep, sldj);
    FDP_CHECK(fdp_same_shape(out, keep), "multiscale: the child changes the shape of its channels");
    put_channels(ctx, keep, x);
    fdp_arena_reset(ctx->arena, mk);
    return x;
}

static fdp_tensor ms_backward_rebuild(fdp_flow_layer *l, fdp_ctx *ctx, fdp_tensor y, fdp_tensor dy,
                                      const float *dldj) {
    flow_ms *s = (flow_ms *)l;
    fdp_arena_mark mk = fdp_arena_get_mark(ctx->arena);
    fdp_tensor ky = fdp_channel_slice(ctx, y, 0, s->keep), kd = fdp_channel_slice(ctx, dy, 0, s->keep);
    int ig = ctx->input_grad;
    ctx->input_grad = 1;
    fdp_flow_backward_rebuild(s->child, ctx, ky, kd, dldj);
    ctx->input_grad = ig;
    fdp_flow_report(ctx, s->child);
    put_channels(ctx, ky, y);
    put_channels(ctx, kd, dy);
    fdp_arena_reset(ctx->arena, mk);
    return dy;
}

static void ms_prepare(fdp_flow_layer *l, fdp_ctx *ctx) { fdp_flow_prepare(((flow_ms *)l)->child, ctx); }
static void ms_init_values(fdp_flow_layer *l, const fdp_params *p, float *hp, float *hb, uint64_t seed) {
    fdp_flow_init_values(((flow_ms *)l)->child, p, hp, hb, seed);
}
static void ms_destroy(fdp_flow_layer *l) { fdp_flow_destroy(((flow_ms *)l)->child); }

static const fdp_flow_ops MS_OPS = {.kind = "multiscale",
                                    .forward = ms_forward,
                                    .inverse = ms_inverse,
                                    .backward = ms_backward,
                                    .init_values = ms_init_values,
                                    .prepare = ms_prepare,
                                    .forward_inplace = ms_forward_inplace,
                                    .backward_rebuild = ms_backward_rebuild,
                                    .destroy = ms_destroy,
                                    .is_container = 1};

fdp_flow_layer *fdp_flow_multiscale_create(int keep, fdp_flow_layer *child) {
    flow_ms *s = fdp_xcalloc(1, sizeof *s);
    fdp_flow_begin(&s->base, &MS_OPS, NULL);
    s->keep = keep;
    s->child = child;
    s->base.first_entry = child->first_entry;
    s->base.last_entry = child->last_entry;
    return &s->base;
}

/* ---- conditioning networks (condnet.h) ---- */
void fdp_condnet_destroy(fdp_condnet *n) {
    if (!n) return;
    if (n->ops->destroy) n->ops->destroy(n);
    free(n);
}
