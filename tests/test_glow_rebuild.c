/* test_glow_rebuild.c — docs/ARCHITECTURE.md, section "Memory": Glow's rebuilt path
 * ([train] rebuild_activations: the root seq's fdp_flow_forward_inplace keeps no
 * activations, only what the splits and the top prior factor out; backward,
 * fdp_flow_backward_rebuild, rebuilds each layer's input from its output with the
 * inverse and runs that layer's forward and backward again) against the stored path:
 * one training-mode step of a fresh model (the first, so every ActNorm initializes
 * from the data) on the same batch and noise:
 *  - the loss, the per-sample nll, the top latent z, and the parameters and buffers
 *    after the step (ActNorm's data-dependent init) are EXACTLY equal: the forward
 *    does the same arithmetic, in place;
 *  - the gradients agree within a normwise relative error (max |g_r - g_s| / max |g_s|)
 *    of GRAD_TOL: every layer's rebuilt input differs from the stored one by the float
 *    rounding of the inverses (invconv's W^-1 applied in float, the affine coupling's
 *    division by its scale, ActNorm's exp(-3 logs)), accumulated along the flow;
 *  - the grads_ready hook reports the same entry ranges in the same (reverse) order;
 *  - the activation arena's peak is smaller, and does not grow with depth K. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/glow.h"
#include "flowdp/model.h"
#include "testutil.h"

#define GRAD_TOL 1e-4

typedef struct hook_log {
    int n, cap;
    int *first, *last;
} hook_log;

static void record_hook(void *user, int first, int last) {
    hook_log *h = user;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->first = realloc(h->first, sizeof(int) * (size_t)h->cap);
        h->last = realloc(h->last, sizeof(int) * (size_t)h->cap);
        assert_non_null(h->first);
        assert_non_null(h->last);
    }
    h->first[h->n] = first;
    h->last[h->n] = last;
    h->n++;
}

typedef struct step_result {
    double loss, *nll;
    float *z, *grads, *params, *buffers;
    int64_t nz, nparams, nbuffers;
    size_t peak;
    hook_log hooks;
} step_result;

static void free_result(step_result *r) {
    free(r->nll);
    free(r->z);
    free(r->grads);
    free(r->params);
    free(r->buffers);
    free(r->hooks.first);
    free(r->hooks.last);
}

static float *copy_floats(const float *src, int64_t n) {
    float *d = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(d, src, sizeof(float) * (size_t)n);
    return d;
}

typedef struct shape {
    int C, H, W, L, K, width, N;
    const char *perm, *coupling, *learntop;
} shape;

/* one training-mode forward_loss + backward of a fresh model (seed 5) on a fixed batch */
static step_result run_step(const shape *s, int rebuild) {
    char ini[512];
    snprintf(ini, sizeof ini,
             "[model]\ntype = glow\nn_levels = %d\ndepth = %d\nwidth = %d\nflow_permutation = %s\n"
             "flow_coupling = %s\nlearntop = %s\n[train]\nrebuild_activations = %s\n",
             s->L, s->K, s->width, s->perm, s->coupling, s->learntop, rebuild ? "true" : "false");
    fdp_config cfg;
    fdp_err err = {{0}};
    fdp_config_defaults(&cfg);
    if (fdp_config_load_string(&cfg, ini, "glow rebuild test", &err) != 0) fail_msg("%s", err.msg);
    fdp_backend *be = fdp_backend_cpu_create(2);
    fdp_model *m;
    if (fdp_model_create(&cfg, s->C, s->H, s->W, be, 5, &m, &err) != 0) fail_msg("%s", err.msg);
    fdp_glow *g = m->impl;
    fdp_params *p = m->params;
    int N = s->N;
    int64_t D = (int64_t)s->C * s->H * s->W;
    float *x = tu_rand_floats(N * D, 12, 0.0f, 1.0f), *u = tu_rand_floats(N * D, 11, 0.0f, 1.0f);
    for (int64_t i = 0; i < N * D; i++) x[i] = floorf(x[i] * 255.999f) / 255.0f; /* 8-bit pixels */
    step_result r = {0};
    fdp_arena *arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = 1, .world_size = 1,
                   .grads_ready = record_hook, .grads_ready_user = &r.hooks};
    r.nll = malloc(sizeof(double) * (size_t)N);
    r.loss = fdp_model_loss_xu(m, &ctx, fdp_tensor_wrap(x, N, s->C, s->H, s->W, FDP_DEVICE_CPU),
                             fdp_tensor_wrap(u, N, s->C, s->H, s->W, FDP_DEVICE_CPU), r.nll);
    /* the top latent: saved by the stored forward, kept by the rebuilt one */
    fdp_tensor z = rebuild ? g->prior->kept : g->prior->z;
    assert_non_null(z.data);
    r.nz = fdp_numel(z);
    r.z = copy_floats(z.data, r.nz);
    be->memset0(be, p->grads, sizeof(float) * (size_t)p->n_params);
    m->backward(m, &ctx, 1.0f);
    r.nparams = p->n_params;
    r.nbuffers = p->n_buffers;
    r.grads = copy_floats(p->grads, r.nparams);
    r.params = copy_floats(p->params, r.nparams);
    r.buffers = copy_floats(p->buffers, r.nbuffers);
    r.peak = fdp_arena_peak(arena);
    fdp_arena_destroy(arena);
    free(x);
    free(u);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_config_free(&cfg);
    return r;
}

static void compare(const shape *s) {
    step_result a = run_step(s, 0), b = run_step(s, 1);
    double e = tu_normwise_err(b.grads, a.grads, a.nparams, 0.0);
    printf("%dx%dx%d L%d K%d width %d %s %s learntop %s batch %d: loss %.9g vs %.9g; gradients normwise %.2e "
           "(tolerance %.0e); arena peak stored %.3f MiB, rebuilt %.3f MiB\n",
           s->C, s->H, s->W, s->L, s->K, s->width, s->perm, s->coupling, s->learntop, s->N, b.loss, a.loss, e,
           GRAD_TOL, a.peak / 1048576.0, b.peak / 1048576.0);
    assert_true(b.loss == a.loss);
    assert_memory_equal(b.nll, a.nll, sizeof(double) * (size_t)s->N);
    assert_int_equal(b.nz, a.nz);
    assert_memory_equal(b.z, a.z, sizeof(float) * (size_t)a.nz);
    assert_memory_equal(b.params, a.params, sizeof(float) * (size_t)a.nparams);
    assert_memory_equal(b.buffers, a.buffers, sizeof(float) * (size_t)a.nbuffers);
    assert_true(isfinite(e) && e < GRAD_TOL);
    assert_true(tu_max_abs(a.grads, a.nparams) > 0.0);
    assert_true(b.peak < a.peak);
    assert_int_equal(b.hooks.n, a.hooks.n);
    for (int i = 0; i < a.hooks.n; i++) {
        assert_int_equal(b.hooks.first[i], a.hooks.first[i]);
        assert_int_equal(b.hooks.last[i], a.hooks.last[i]);
        if (i > 0) assert_true(a.hooks.last[i] < a.hooks.first[i - 1]);
    }
    free_result(&a);
    free_result(&b);
}

static void test_affine_lu(void **state) {
    (void)state;
    shape s = {3, 8, 8, 2, 3, 16, 4, "invconv_lu", "affine", "true"};
    compare(&s);
}
static void test_additive_invconv(void **state) {
    (void)state;
    shape s = {1, 16, 16, 3, 2, 8, 3, "invconv", "additive", "false"};
    compare(&s);
}
static void test_affine_shuffle(void **state) {
    (void)state;
    shape s = {3, 8, 8, 2, 2, 8, 4, "shuffle", "affine", "true"};
    compare(&s);
}
static void test_affine_reverse_one_level(void **state) {
    (void)state;
    shape s = {1, 8, 8, 1, 3, 8, 2, "reverse", "affine", "false"};
    compare(&s);
}

/* the rebuilt path holds the running tensor, what left the flow and one layer's working set:
 * its peak does not grow with K, the stored path's grows with every flow step */
static void test_peak_vs_depth(void **state) {
    (void)state;
    shape s2 = {3, 16, 16, 2, 2, 16, 8, "invconv", "affine", "true"}, s8 = s2;
    s8.K = 8;
    step_result a2 = run_step(&s2, 0), b2 = run_step(&s2, 1), a8 = run_step(&s8, 0), b8 = run_step(&s8, 1);
    printf("3x16x16 L2 width 16 batch 8: arena peak K 2 stored %.3f MiB, rebuilt %.3f MiB; K 8 stored %.3f MiB, "
           "rebuilt %.3f MiB\n",
           a2.peak / 1048576.0, b2.peak / 1048576.0, a8.peak / 1048576.0, b8.peak / 1048576.0);
    assert_true(a8.peak > 2 * a2.peak);
    assert_true(b8.peak <= b2.peak);
    assert_true(b8.peak < a2.peak);
    free_result(&a2);
    free_result(&b2);
    free_result(&a8);
    free_result(&b8);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_affine_lu), cmocka_unit_test(test_additive_invconv),
                                       cmocka_unit_test(test_affine_shuffle),
                                       cmocka_unit_test(test_affine_reverse_one_level),
                                       cmocka_unit_test(test_peak_vs_depth)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
