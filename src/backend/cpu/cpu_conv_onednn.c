/* cpu_conv_onednn.c — the CPU backend's convolutions (forward, backward data,
 * backward weights) and matrix product, through oneDNN's v2 C API (Debian's
 * libdnnl 2.6). The plain-C reference beside it (cpu_conv_ref.c) is what the
 * tests check this file against.
 *
 * One cache entry per (shape, op, accumulate, bias present) holds everything a
 * call needs, built on the first call and reused after: the convolution
 * primitive, the reorders between the caller's plain layouts (NCHW data, OIHW
 * weights) and the layouts the primitive wants, and memory objects whose data
 * handles are the only thing set per call. Reorder buffers and scratchpads
 * (user scratchpad mode) live in ONE pool shared by all entries: a call only
 * needs them while it runs, and calls never overlap (one stream, one caller
 * thread). The pool grows only when an entry is built, so once every shape has
 * been seen a call allocates nothing.
 *
 * Layouts: with LAYOUT_BLOCKED the primitive chooses its layouts
 * (dnnl_format_tag_any, e.g. nChw16c / OIhw16i16o) and every call reorders in
 * and out; with LAYOUT_PLAIN the primitive works on nchw / oihw directly. Which
 * is faster per op was measured on the model's shapes (see layout_for below).
 * accumulate: forward uses the sum post-op when the primitive writes the
 * caller's y directly, else the output reorder carries the sum post-op; backward
 * data (no post-ops in oneDNN) writes into a pool buffer that a reorder with the
 * sum post-op adds into dx.
 *
 * Not thread-safe: one fdp_cpu_conv is used by one thread at a time (its
 * threads are oneDNN's OpenMP threads, set by the backend). */
#include <dnnl.h>
#include <dnnl_debug.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_conv.h"
#include "flowdp/error.h"
#include "flowdp/log.h"

enum { OP_FORWARD = 0, OP_BACKWARD_DATA = 1, OP_BACKWARD_WEIGHTS = 2 };
static const char *const op_names[] = {"forward", "backward_data", "backward_weights"};

enum { LAYOUT_PLAIN = 0, LAYOUT_BLOCKED = 1 };

/* what identifies a cache entry */
typedef struct conv_key {
    fdp_conv_shape s;
    int op;         /* OP_* */
    int accumulate; /* forward / backward data: y += / dx += */
    int bias;       /* forward: bias given; backward weights: dbias wanted */
} conv_key;

#define CONV_MAX_USER 4   /* caller tensors per call: fwd x w bias y, bwd-w x dy dw dbias */
#define CONV_MAX_STEPS 6  /* input reorders, the convolution, output reorders */
#define CONV_MAX_POOLED 16 /* memory objects whose buffer lives in the pool */

typedef struct conv_step {
    dnnl_primitive_t prim;
    dnnl_exec_arg_t args[6];
    int nargs;
} conv_step;

typedef struct conv_entry {
    conv_key key;
    conv_step steps[CONV_MAX_STEPS]; /* run in order */
    int nsteps;
    dnnl_memory_t user[CONV_MAX_USER]; /* the caller's tensors, in call order; NULL when absent */
    dnnl_memory_t pooled[CONV_MAX_POOLED];  /* reorder buffers and scratchpads */
    size_t pooled_off[CONV_MAX_POOLED];     /* their byte offsets in the pool */
    int npooled;
    size_t pool_need;  /* bytes of the pool this entry uses */
    unsigned pool_gen; /* the pool generation `pooled` point into */
    int layout;        /* LAYOUT_* the convolution got */
    char impl[48];     /* its implementation name (jit:avx512_core, gemm:jit, ...), for the debug log */
} conv_entry;

struct fdp_cpu_conv {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    conv_entry **entries; /* [n_entries] */
    int n_entries, cap_entries;
    void *pool;           /* [pool_bytes], 64-byte aligned */
    size_t pool_bytes;
    unsigned pool_gen;    /* bumped each time the pool moves */
    int layout_override;  /* -1: per-op choice (layout_for); else LAYOUT_* for every op */
};

/* ---- errors ------------------------------------------------------------------ */
static void dnnl_fail(const char *file, int line, dnnl_status_t st, const char *fn, const conv_key *k) {
    const char *hint = st == dnnl_unimplemented  ? "oneDNN has no implementation for this case; rerun with ONEDNN_VERBOSE=2"
                       : st == dnnl_out_of_memory ? "out of memory; reduce the batch size"
                                                  : "rerun with ONEDNN_VERBOSE=2 to see oneDNN's view";
    if (k)
        fdp_fatal_at(file, line,
                     "oneDNN %s failed: %s (dnnl_status_t %d) in conv %s n=%d cin=%d cout=%d h=%d w=%d k=%d "
                     "accumulate=%d bias=%d; hint: %s",
                     fn, dnnl_status2str(st), (int)st, op_names[k->op], k->s.n, k->s.cin, k->s.cout, k->s.h, k->s.w,
                     k->s.k, k->accumulate, k->bias, hint);
    fdp_fatal_at(file, line, "oneDNN %s failed: %s (dnnl_status_t %d); hint: %s", fn, dnnl_status2str(st), (int)st,
                 hint);
}
/* DNNL_TRY(key or NULL, dnnl_function, its arguments...) */
#define DNNL_TRY(k, fn, ...)                                                          \
    do {                                                                              \
        dnnl_status_t st_ = fn(__VA_ARGS__);                                          \
        if (st_ != dnnl_success) dnnl_fail(__FILE__, __LINE__, st_, #fn, (k));        \
    } while (0)

/* ---- layout choice -------------------------------------------------------------- */
/* Which layout an op's primitive gets: the faster one end to end (reorders
 * included) on the model's shapes, measured at batch 64 with 2 threads on an
 * AVX-512 machine (min of 25-40 interleaved calls, ms per call):
 *   3x3 convs with >= 12 input channels: blocked (jit:avx512_core) beats plain
 *     (gemm:jit, im2col) 1.3-3x in all three ops, e.g. 32->32 at 28x28
 *     fwd 5.4 vs 11.5, bwd-data 5.4 vs 11.3, bwd-weights 5.7 vs 19.3;
 *   3x3 with few input channels (2, 4): forward and backward weights still
 *     blocked (the kernel reads the nchw input directly; 2->32 at 28x28 bwd-w
 *     0.8 vs 5.1), but backward data is plain (blocked pads cin to 16:
 *     2->32 0.96 vs 2.7, 4->64 at 14x14 0.68 vs 1.09) while cout >= 4 cin;
 *   1x1 convs: plain (a gemm per image, no reorders) for forward and backward
 *     data (32->32 at 28x28 fwd 0.88 vs 1.47, 32->2 0.09 vs 0.38); backward
 *     weights blocked once both channel counts are >= 16 (32->32 1.9 vs 3.3),
 *     plain below (32->2 0.33 vs 0.63, 64->4 0.08 vs 0.21).
 * FLOWDP_ONEDNN_LAYOUT=plain|blocked forces one layout for every op (tests,
 * benchmarks on other machines). */
static int layout_for(const fdp_cpu_conv *cc, const conv_key *k) {
    if (cc->layout_override >= 0) return cc->layout_override;
    const fdp_conv_shape *s = &k->s;
    if (s->k == 1) {
        if (k->op == OP_BACKWARD_WEIGHTS && s->cin >= 16 && s->cout >= 16) return LAYOUT_BLOCKED;
        return LAYOUT_PLAIN;
    }
    if (k->op == OP_BACKWARD_DATA && s->cin <= 8 && 4 * s->cin <= s->cout) return LAYOUT_PLAIN;
    return LAYOUT_BLOCKED;
}

/* ---- building an entry ------------------------------------------------------------ */
static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

static dnnl_memory_t pooled_memory(fdp_cpu_conv *cc, conv_entry *e, const dnnl_memory_desc_t *md, size_t off) {
    FDP_CHECK(e->npooled < CONV_MAX_POOLED, "conv cache: too many pooled buffers in one entry");
    dnnl_memory_t m;
    DNNL_TRY(&e->key, dnnl_memory_create, &m, md, cc->engine, DNNL_MEMORY_NONE);
    e->pooled[e->npooled] = m;
    e->pooled_off[e->npooled] = off;
    e->npooled++;
    return m;
}

static dnnl_primitive_attr_t make_attr(const conv_key *k, int sum) {
    dnnl_primitive_attr_t attr;
    DNNL_TRY(k, dnnl_primitive_attr_create, &attr);
    DNNL_TRY(k, dnnl_primitive_attr_set_scratchpad_mode, attr, dnnl_scratchpad_mode_user);
    if (sum) {
        dnnl_post_ops_t po;
        DNNL_TRY(k, dnnl_post_ops_create, &po);
        DNNL_TRY(k, dnnl_post_ops_append_sum, po, 1.0f);
        DNNL_TRY(k, dnnl_primitive_attr_set_post_ops, attr, po);
        DNNL_TRY(k, dnnl_post_ops_destroy, po);
    }
    return attr;
}

/* a step for primitive descriptor pd (consumed), with its scratchpad (if any) at
 * scratch_off in the pool; returns the scratchpad size */
static size_t add_step(fdp_cpu_conv *cc, conv_entry *e, dnnl_primitive_desc_t pd, const dnnl_exec_arg_t *args,
                       int nargs, size_t scratch_off) {
    FDP_CHECK(e->nsteps < CONV_MAX_STEPS, "conv cache: too many steps in one entry");
    conv_step *st = &e->steps[e->nsteps++];
    DNNL_TRY(&e->key, dnnl_primitive_create, &st->prim, pd);
    memcpy(st->args, args, sizeof(*args) * (size_t)nargs);
    st->nargs = nargs;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (bytes > 0) {
        st->args[st->nargs].arg = DNNL_ARG_SCRATCHPAD;
        st->args[st->nargs].memory = pooled_memory(cc, e, smd, scratch_off);
        st->nargs++;
    }
    DNNL_TRY(&e->key, dnnl_primitive_desc_destroy, pd);
    return bytes;
}

/* how one caller tensor meets the convolution: the memory to give the
 * convolution, plus a reorder step (recorded in pending) when layouts differ or
 * an output must be summed into the caller's tensor */
typedef struct pending_reorder {
    dnnl_memory_t from, to;
    int sum;
} pending_reorder;

static dnnl_memory_t bind_tensor(fdp_cpu_conv *cc, conv_entry *e, int slot, const dnnl_memory_desc_t *user_md,
                                 const dnnl_memory_desc_t *prim_md, int output, int sum, size_t *pool_off,
                                 pending_reorder *pend, int *npend) {
    dnnl_memory_t user;
    DNNL_TRY(&e->key, dnnl_memory_create, &user, user_md, cc->engine, DNNL_MEMORY_NONE);
    e->user[slot] = user;
    if (!sum && dnnl_memory_desc_equal(user_md, prim_md)) return user;
    dnnl_memory_t inner = pooled_memory(cc, e, prim_md, *pool_off);
    *pool_off += align64(dnnl_memory_desc_get_size(prim_md));
    pend[*npend].from = output ? inner : user;
    pend[*npend].to = output ? user : inner;
    pend[*npend].sum = sum;
    (*npend)++;
    return inner;
}

static size_t add_reorders(fdp_cpu_conv *cc, conv_entry *e, const pending_reorder *pend, int npend,
                           size_t scratch_off) {
    size_t scratch = 0;
    for (int i = 0; i < npend; i++) {
        const dnnl_memory_desc_t *from_md, *to_md;
        DNNL_TRY(&e->key, dnnl_memory_get_memory_desc, pend[i].from, &from_md);
        DNNL_TRY(&e->key, dnnl_memory_get_memory_desc, pend[i].to, &to_md);
        dnnl_primitive_attr_t attr = make_attr(&e->key, pend[i].sum);
        dnnl_primitive_desc_t pd;
        DNNL_TRY(&e->key, dnnl_reorder_primitive_desc_create, &pd, from_md, cc->engine, to_md, cc->engine, attr);
        DNNL_TRY(&e->key, dnnl_primitive_attr_destroy, attr);
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, pend[i].from}, {DNNL_ARG_TO, pend[i].to}};
        size_t b = add_step(cc, e, pd, args, 2, scratch_off);
        if (b > scratch) scratch = b;
    }
    return scratch;
}

static void init_md(const conv_key *k, dnnl_memory_desc_t *md, int ndims, dnnl_dim_t d0, dnnl_dim_t d1,
                    dnnl_dim_t d2, dnnl_dim_t d3, dnnl_format_tag_t tag) {
    dnnl_dims_t dims = {d0, d1, d2, d3};
    DNNL_TRY(k, dnnl_memory_desc_init_by_tag, md, ndims, dims, dnnl_f32, tag);
}

/* The convolution's operation descriptor. dst_md may be a blocked md fixed by
 * an earlier attempt; NULL gives tag `any`/plain by layout. */
typedef struct conv_mds {
    dnnl_memory_desc_t src, wei, bias, dst;         /* as handed to oneDNN */
    dnnl_memory_desc_t src_u, wei_u, bias_u, dst_u; /* the caller's plain layouts */
} conv_mds;

static void make_mds(const conv_key *k, int layout, conv_mds *m) {
    const fdp_conv_shape *s = &k->s;
    dnnl_format_tag_t dt = layout == LAYOUT_BLOCKED ? dnnl_format_tag_any : dnnl_nchw;
    dnnl_format_tag_t wt = layout == LAYOUT_BLOCKED ? dnnl_format_tag_any : dnnl_oihw;
    init_md(k, &m->src, 4, s->n, s->cin, s->h, s->w, dt);
    init_md(k, &m->dst, 4, s->n, s->cout, s->h, s->w, dt);
    init_md(k, &m->wei, 4, s->cout, s->cin, s->k, s->k, wt);
    init_md(k, &m->bias, 1, s->cout, 0, 0, 0, dnnl_a);
    init_md(k, &m->src_u, 4, s->n, s->cin, s->h, s->w, dnnl_nchw);
    init_md(k, &m->dst_u, 4, s->n, s->cout, s->h, s->w, dnnl_nchw);
    init_md(k, &m->wei_u, 4, s->cout, s->cin, s->k, s->k, dnnl_oihw);
    m->bias_u = m->bias;
}

static dnnl_primitive_desc_t forward_pd(fdp_cpu_conv *cc, const conv_key *k, const conv_mds *m, int with_bias,
                                        const dnnl_memory_desc_t *dst, int sum) {
    dnnl_dims_t strides = {1, 1}, pad = {k->s.k / 2, k->s.k / 2};
    dnnl_convolution_desc_t d;
    DNNL_TRY(k, dnnl_convolution_forward_desc_init, &d, dnnl_forward_training, dnnl_convolution_direct, &m->src,
             &m->wei, with_bias ? &m->bias : NULL, dst ? dst : &m->dst, strides, pad, pad);
    dnnl_primitive_attr_t attr = make_attr(k, sum);
    dnnl_primitive_desc_t pd;
    DNNL_TRY(k, dnnl_primitive_desc_create, &pd, &d, attr, cc->engine, NULL);
    DNNL_TRY(k, dnnl_primitive_attr_destroy, attr);
    return pd;
}

static void remember_impl(conv_entry *e, dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) impl = "?";
    snprintf(e->impl, sizeof e->impl, "%s", impl);
}

static conv_entry *build_entry(fdp_cpu_conv *cc, const conv_key *k) {
    conv_entry *e = fdp_xcalloc(1, sizeof *e);
    e->key = *k;
    int layout = e->layout = layout_for(cc, k);
    conv_mds m;
    make_mds(k, layout, &m);
    pending_reorder in[3], out[2];
    int nin = 0, nout = 0;
    size_t off = 0;
    dnnl_primitive_desc_t pd;
    dnnl_exec_arg_t args[4];
    int nargs = 0;

    if (k->op == OP_FORWARD) {
        /* try the sum post-op on the conv itself; if the primitive's y is not the
         * caller's layout, the sum moves to the output reorder instead */
        pd = forward_pd(cc, k, &m, k->bias, NULL, k->accumulate);
        const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        int sum_in_conv = k->accumulate && dnnl_memory_desc_equal(dmd, &m.dst_u);
        if (k->accumulate && !sum_in_conv) {
            dnnl_memory_desc_t fixed = *dmd;
            DNNL_TRY(k, dnnl_primitive_desc_destroy, pd);
            pd = forward_pd(cc, k, &m, k->bias, &fixed, 0);
        }
        remember_impl(e, pd);
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, bind_tensor(cc, e, 0, &m.src_u, smd, 0, 0, &off, in, &nin)};
        args[nargs++] =
            (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, bind_tensor(cc, e, 1, &m.wei_u, wmd, 0, 0, &off, in, &nin)};
        if (k->bias) {
            const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
            args[nargs++] =
                (dnnl_exec_arg_t){DNNL_ARG_BIAS, bind_tensor(cc, e, 2, &m.bias_u, bmd, 0, 0, &off, in, &nin)};
        }
        args[nargs++] = (dnnl_exec_arg_t){
            DNNL_ARG_DST, bind_tensor(cc, e, 3, &m.dst_u, dmd, 1, k->accumulate && !sum_in_conv, &off, out, &nout)};
    } else {
        dnnl_primitive_desc_t hint = forward_pd(cc, k, &m, 0, NULL, 0);
        dnnl_dims_t strides = {1, 1}, pad = {k->s.k / 2, k->s.k / 2};
        dnnl_convolution_desc_t d;
        if (k->op == OP_BACKWARD_DATA)
            DNNL_TRY(k, dnnl_convolution_backward_data_desc_init, &d, dnnl_convolution_direct, &m.src, &m.wei, &m.dst,
                     strides, pad, pad);
        else
            DNNL_TRY(k, dnnl_convolution_backward_weights_desc_init, &d, dnnl_convolution_direct, &m.src, &m.wei,
                     k->bias ? &m.bias : NULL, &m.dst, strides, pad, pad);
        dnnl_primitive_attr_t attr = make_attr(k, 0);
        DNNL_TRY(k, dnnl_primitive_desc_create, &pd, &d, attr, cc->engine, hint);
        DNNL_TRY(k, dnnl_primitive_attr_destroy, attr);
        DNNL_TRY(k, dnnl_primitive_desc_destroy, hint);
        remember_impl(e, pd);
        if (k->op == OP_BACKWARD_DATA) {
            const dnnl_memory_desc_t *dymd = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
            const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            const dnnl_memory_desc_t *dxmd = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0);
            args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST,
                                              bind_tensor(cc, e, 0, &m.dst_u, dymd, 0, 0, &off, in, &nin)};
            args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS,
                                              bind_tensor(cc, e, 1, &m.wei_u, wmd, 0, 0, &off, in, &nin)};
            args[nargs++] = (dnnl_exec_arg_t){
                DNNL_ARG_DIFF_SRC, bind_tensor(cc, e, 2, &m.src_u, dxmd, 1, k->accumulate, &off, out, &nout)};
        } else {
            const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
            const dnnl_memory_desc_t *dymd = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
            const dnnl_memory_desc_t *dwmd = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
            args[nargs++] =
                (dnnl_exec_arg_t){DNNL_ARG_SRC, bind_tensor(cc, e, 0, &m.src_u, smd, 0, 0, &off, in, &nin)};
            args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST,
                                              bind_tensor(cc, e, 1, &m.dst_u, dymd, 0, 0, &off, in, &nin)};
            args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS,
                                              bind_tensor(cc, e, 2, &m.wei_u, dwmd, 1, 0, &off, out, &nout)};
            if (k->bias) {
                const dnnl_memory_desc_t *dbmd = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1);
                args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS,
                                                  bind_tensor(cc, e, 3, &m.bias_u, dbmd, 1, 0, &off, out, &nout)};
            }
        }
    }

    /* steps: input reorders, the convolution, output reorders; all scratchpads
     * share one region after the reorder buffers (the steps run one by one) */
    size_t scratch_off = off, scratch = 0, b;
    b = add_reorders(cc, e, in, nin, scratch_off);
    if (b > scratch) scratch = b;
    b = add_step(cc, e, pd, args, nargs, scratch_off);
    if (b > scratch) scratch = b;
    b = add_reorders(cc, e, out, nout, scratch_off);
    if (b > scratch) scratch = b;
    e->pool_need = scratch_off + align64(scratch);
    return e;
}

/* ---- running an entry ------------------------------------------------------------ */
static void grow_pool(fdp_cpu_conv *cc, size_t need) {
    if (need <= cc->pool_bytes) return;
    free(cc->pool);
    cc->pool = NULL;
    if (posix_memalign(&cc->pool, 64, need) != 0 || !cc->pool)
        FDP_FATAL("conv cache: out of memory growing the oneDNN buffer pool to %zu MiB; hint: reduce the batch size",
                  need >> 20);
    cc->pool_bytes = need;
    cc->pool_gen++;
}

static conv_entry *find_entry(fdp_cpu_conv *cc, const conv_key *k) {
    for (int i = 0; i < cc->n_entries; i++) {
        conv_entry *e = cc->entries[i];
        const conv_key *q = &e->key;
        if (q->op == k->op && q->accumulate == k->accumulate && q->bias == k->bias && q->s.n == k->s.n &&
            q->s.cin == k->s.cin && q->s.cout == k->s.cout && q->s.h == k->s.h && q->s.w == k->s.w &&
            q->s.k == k->s.k)
            return e;
    }
    if (cc->n_entries == cc->cap_entries) {
        cc->cap_entries = cc->cap_entries ? 2 * cc->cap_entries : 16;
        cc->entries = fdp_xrealloc(cc->entries, sizeof(*cc->entries) * (size_t)cc->cap_entries);
    }
    conv_entry *e = build_entry(cc, k);
    cc->entries[cc->n_entries++] = e;
    grow_pool(cc, e->pool_need);
    fdp_debug("conv cache: %s n=%d cin=%d cout=%d h=%d w=%d k=%d accumulate=%d bias=%d -> %s, %s layout, %d steps, "
              "%zu KiB of the %zu KiB pool",
              op_names[k->op], k->s.n, k->s.cin, k->s.cout, k->s.h, k->s.w, k->s.k, k->accumulate, k->bias, e->impl,
              e->layout == LAYOUT_BLOCKED ? "blocked" : "plain", e->nsteps, e->pool_need >> 10, cc->pool_bytes >> 10);
    return e;
}

static void run_entry(fdp_cpu_conv *cc, conv_entry *e, void *const ptrs[CONV_MAX_USER]) {
    if (e->pool_gen != cc->pool_gen) {
        for (int i = 0; i < e->npooled; i++)
            DNNL_TRY(&e->key, dnnl_memory_set_data_handle, e->pooled[i], (char *)cc->pool + e->pooled_off[i]);
        e->pool_gen = cc->pool_gen;
    }
    for (int i = 0; i < CONV_MAX_USER; i++)
        if (e->user[i]) DNNL_TRY(&e->key, dnnl_memory_set_data_handle, e->user[i], ptrs[i]);
    for (int i = 0; i < e->nsteps; i++)
        DNNL_TRY(&e->key, dnnl_primitive_execute, e->steps[i].prim, cc->stream, e->steps[i].nargs, e->steps[i].args);
    DNNL_TRY(&e->key, dnnl_stream_wait, cc->stream);
}

static void check_shape(fdp_conv_shape s, const char *op) {
    FDP_CHECK(s.n > 0 && s.cin > 0 && s.cout > 0 && s.h > 0 && s.w > 0 && s.k > 0 && s.k % 2 == 1,
              "conv %s: bad shape n=%d cin=%d cout=%d h=%d w=%d k=%d; hint: all positive, k odd", op, s.n, s.cin,
              s.cout, s.h, s.w, s.k);
}

/* ---- the interface ------------------------------------------------------------------ */
fdp_cpu_conv *fdp_cpu_conv_create(void) {
    fdp_cpu_conv *cc = fdp_xcalloc(1, sizeof *cc);
    DNNL_TRY(NULL, dnnl_engine_create, &cc->engine, dnnl_cpu, 0);
    DNNL_TRY(NULL, dnnl_stream_create, &cc->stream, cc->engine, dnnl_stream_default_flags);
    cc->pool_gen = 1;
    cc->layout_override = -1;
    const char *env = getenv("FLOWDP_ONEDNN_LAYOUT");
    if (env && strcmp(env, "plain") == 0) cc->layout_override = LAYOUT_PLAIN;
    if (env && strcmp(env, "blocked") == 0) cc->layout_override = LAYOUT_BLOCKED;
    return cc;
}

void fdp_cpu_conv_destroy(fdp_cpu_conv *cc) {
    if (!cc) return;
    for (int i = 0; i < cc->n_entries; i++) {
        conv_entry *e = cc->entries[i];
        for (int j = 0; j < e->nsteps; j++) dnnl_primitive_destroy(e->steps[j].prim);
        for (int j = 0; j < CONV_MAX_USER; j++)
            if (e->user[j]) dnnl_memory_destroy(e->user[j]);
        for (int j = 0; j < e->npooled; j++) dnnl_memory_destroy(e->pooled[j]);
        free(e);
    }
    free(cc->entries);
    free(cc->pool);
    dnnl_stream_destroy(cc->stream);
    dnnl_engine_destroy(cc->engine);
    free(cc);
}

void fdp_cpu_conv_forward(fdp_cpu_conv *cc, fdp_conv_shape s, const float *x, const float *w, const float *bias,
                          float *y, int accumulate) {
    check_shape(s, "forward");
    conv_key k = {s, OP_FORWARD, accumulate != 0, bias != NULL};
    void *const ptrs[CONV_MAX_USER] = {(void *)x, (void *)w, (void *)bias, y};
    run_entry(cc, find_entry(cc, &k), ptrs);
}

void fdp_cpu_conv_backward_data(fdp_cpu_conv *cc, fdp_conv_shape s, const float *dy, const float *w, float *dx,
                                int accumulate) {
    check_shape(s, "backward_data");
    conv_key k = {s, OP_BACKWARD_DATA, accumulate != 0, 0};
    void *const ptrs[CONV_MAX_USER] = {(void *)dy, (void *)w, dx, NULL};
    run_entry(cc, find_entry(cc, &k), ptrs);
}

void fdp_cpu_conv_backward_weights(fdp_cpu_conv *cc, fdp_conv_shape s, const float *x, const float *dy, float *dw,
                                   float *dbias) {
    check_shape(s, "backward_weights");
    conv_key k = {s, OP_BACKWARD_WEIGHTS, 0, dbias != NULL};
    void *const ptrs[CONV_MAX_USER] = {(void *)x, (void *)dy, dw, dbias};
    run_entry(cc, find_entry(cc, &k), ptrs);
}

void fdp_cpu_matmul(fdp_cpu_conv *cc, int transa, int transb, int M, int N, int K, float alpha, const float *A,
                    const float *B, float beta, float *C) {
    FDP_CHECK(M >= 0 && N >= 0 && K >= 0, "matmul: negative size M=%d N=%d K=%d", M, N, K);
    if (M == 0 || N == 0) return;
    if (K == 0) { /* op(A)op(B) is zero; dnnl_sgemm wants lda >= 1 */
        for (size_t i = 0; i < (size_t)M * N; i++) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
        return;
    }
    /* row-major: op(A) is MxK, stored MxK (lda K) or, transposed, KxM (lda M) */
    dnnl_status_t st = dnnl_sgemm(transa ? 'T' : 'N', transb ? 'T' : 'N', M, N, K, alpha, A, transa ? M : K, B,
                                  transb ? K : N, beta, C, N);
    FDP_CHECK(st == dnnl_success,
              "oneDNN dnnl_sgemm failed: %s (dnnl_status_t %d) for transa=%d transb=%d M=%d N=%d K=%d; hint: "
              "rerun with ONEDNN_VERBOSE=2",
              dnnl_status2str(st), (int)st, transa, transb, M, N, K);
}

int fdp_cpu_conv_cache_size(const fdp_cpu_conv *cc) { return cc->n_entries; }
