/* test_interp.c — model.h's encode, the latent flowdp-sample --interpolate decodes, for RealNVP and
 * Glow: small multi-scale models (2 scales / 2 levels, so factored-out latents are in play) with
 * every learnable parameter moved off its initial value (Glow's zero-initialized couplings and
 * split priors would otherwise be identities), images dequantized by the model's own stage.
 * What is checked, per model:
 *   - decode(encode(v)) at temperature 1 against what the model's sample() can give back:
 *     RealNVP's sample is continuous (sigmoid, constraint undone), so it must give v itself to
 *     float tolerance, and v lies in the pixel's bin [x, x + 1/255) scaled by 255/256, so its
 *     PNG quantization (fdp_png_quantize) is within one 8-bit level of the image; Glow's sample
 *     postprocesses to the bin's pixel, so it must give the image x back exactly (a pixel whose
 *     noise sits within float round-off of its bin's lower edge may land one bin lower: at most
 *     1% of the pixels, and never more than one level away);
 *   - the latent is not trivial: it differs from v, and decoding a shifted latent (z + 0.5) gives
 *     images that differ from x (so the round trip is not vacuous);
 *   - encode is deterministic (two calls give the same latent). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/arena.h"
#include "flowdp/backend.h"
#include "flowdp/config.h"
#include "flowdp/dequant.h"
#include "flowdp/model.h"
#include "flowdp/png.h"
#include "flowdp/rng.h"
#include "testutil.h"

/* every learnable parameter (not the buffers: BatchNorm statistics, ActNorm flags) + U(-a, a) */
static void perturb_params(fdp_model *m, fdp_backend *be, double a, uint64_t seed) {
    fdp_params *p = m->params;
    size_t n = (size_t)p->n_params;
    float *h = malloc(sizeof(float) * (n ? n : 1));
    be->to_host(be, h, p->params, sizeof(float) * n);
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) h[i] += (float)tu_uniform(&s, -a, a);
    be->from_host(be, p->params, h, sizeof(float) * n);
    free(h);
}

static void check_round_trip(const char *ini, int glow) {
    enum { N = 4, C = 1, H = 8, W = 8, D = C * H * W };
    fdp_config cfg;
    fdp_err err = {{0}};
    fdp_config_defaults(&cfg);
    if (fdp_config_load_string(&cfg, ini, "interp test", &err) != 0) fail_msg("%s", err.msg);
    fdp_backend *be = fdp_backend_cpu_create(1);
    fdp_model *m = NULL;
    assert_int_equal(fdp_model_create(&cfg, C, H, W, be, 11, &m, &err), 0);
    assert_non_null(m->encode);
    perturb_params(m, be, 0.05, 99);
    fdp_arena *arena = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = m->params, .training = 0, .world_size = 1, .no_grad = 1};
    float hx[N * D], hv[N * D], hz[N * D], hz2[N * D], hs[N * D];
    uint64_t s = 5;
    for (int i = 0; i < N * D; i++) hx[i] = (float)(floor(tu_uniform(&s, 0.0, 256.0)) / 255.0);
    int64_t hidx[N] = {0, 1, 2, 3};
    fdp_dequant *dq = NULL;
    assert_int_equal(fdp_dequant_create(NULL, m, &dq, &err), 0);
    fdp_tensor x = fdp_arena_tensor(arena, N, C, H, W), v = fdp_arena_tensor(arena, N, C, H, W);
    int64_t *idx = fdp_arena_alloc(arena, sizeof hidx);
    memcpy(x.data, hx, sizeof hx);
    memcpy(idx, hidx, sizeof hidx);
    fdp_dequant_key key = {7, 0, FDP_RNG_EVAL, idx};
    dq->ops->apply(dq, &ctx, x, &key, v, NULL);
    memcpy(hv, v.data, sizeof hv);
    fdp_tensor z = m->encode(m, &ctx, v);
    assert_true(z.n == N && z.c == C && z.h == H && z.w == W);
    memcpy(hz, z.data, sizeof hz);
    memcpy(hz2, m->encode(m, &ctx, v).data, sizeof hz2);
    assert_memory_equal(hz, hz2, sizeof hz);
    double zdiff = 0.0;
    for (int i = 0; i < N * D; i++) zdiff = fmax(zdiff, fabs(hz[i] - hv[i]));
    assert_true(zdiff > 0.1);
    memcpy(hs, m->sample(m, &ctx, z, 1.0f).data, sizeof hs);
    double worst = 0.0;
    int off_one = 0, bad = 0;
    for (int i = 0; i < N * D; i++) {
        int want = (int)lrintf(hx[i] * 255.0f), got = fdp_png_quantize(hs[i]);
        if (!glow) worst = fmax(worst, fabs(hs[i] - hv[i]));
        if (got != want) off_one++;
        if (abs(got - want) > 1) bad++;
    }
    if (!glow) printf("realnvp: max |sample(encode(v)) - v| %.3g (tolerance 1e-4)\n", worst);
    printf("%s: 8-bit pixels of sample(encode(v)) one level off the image %d of %d, more than one level %d\n", m->type,
           off_one, N * D, bad);
    assert_int_equal(bad, 0);
    if (!glow) assert_true(worst < 1e-4);
    if (glow) assert_true(off_one * 100 <= N * D);
    /* a shifted latent decodes to other images */
    fdp_tensor z2 = fdp_arena_tensor(arena, N, C, H, W);
    for (int i = 0; i < N * D; i++) z2.data[i] = hz[i] + 0.5f;
    const float *o = m->sample(m, &ctx, z2, 1.0f).data;
    int moved = 0;
    for (int i = 0; i < N * D; i++) moved += fdp_png_quantize(o[i]) != (int)lrintf(hx[i] * 255.0f);
    assert_true(moved > N * D / 4);
    fdp_dequant_destroy(dq);
    fdp_arena_destroy(arena);
    fdp_model_destroy(m);
    fdp_backend_destroy(be);
    fdp_config_free(&cfg);
}

static void test_realnvp_encode(void **state) {
    (void)state;
    check_round_trip("[model]\ntype = realnvp\nnum_scales = 2\nmid_channels = 4\nnum_blocks = 1\n", 0);
}

static void test_glow_encode(void **state) {
    (void)state;
    check_round_trip("[model]\ntype = glow\nn_levels = 2\ndepth = 2\nwidth = 8\nflow_permutation = invconv_lu\n"
                     "flow_coupling = affine\nlearntop = true\n",
                     1);
}

/* the tutorial's models decode to floor(256 sigmoid(.)) bins as Glow does (its sample does not
 * undo alpha = 1e-5, so a pixel whose noise sits within ~256 alpha of a bin edge may land one
 * level off) */
static void test_tutorial_simple_encode(void **state) {
    (void)state;
    check_round_trip("[model]\ntype = tutorial\ntutorial_arch = simple\nc_hidden = 4\n", 1);
}

static void test_tutorial_multiscale_encode(void **state) {
    (void)state;
    check_round_trip("[model]\ntype = tutorial\ntutorial_arch = multiscale\nc_hidden = 4\nc_hidden_scale2 = 4\n"
                     "c_hidden_scale3 = 4\n",
                     1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_realnvp_encode),
        cmocka_unit_test(test_glow_encode),
        cmocka_unit_test(test_tutorial_simple_encode),
        cmocka_unit_test(test_tutorial_multiscale_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
