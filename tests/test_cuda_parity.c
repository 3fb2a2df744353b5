/* test_cuda_parity.c — the CUDA backend against the CPU backend, wherever a GPU
 * exists: every element-wise op of FDP_ELEMENTWISE_OPS on random inputs (all
 * buffers compared after the op), the reductions (reduce_rows, channel_moments,
 * bn_backward_reduce in its three modes, sum_squares, has_nonfinite), conv
 * forward / backward data / backward weights (+bias, accumulate) and matmul in
 * all transpositions, the memory calls (copies, staging, pinned upload, a device
 * arena), Philox fills bit for bit, and the RealNVP fixtures: forward, backward
 * and one clipped Adam step on the GPU against the PyTorch reference and
 * against the CPU backend.
 *
 * Without a GPU every test is skipped, and the reason is printed to stdout:
 *   "test_cuda_parity: skipped: built without CUDA ..." or
 *   "test_cuda_parity: skipped: no CUDA device visible: <cudaGetErrorString> ..."
 * (cmocka's skip() exits 0, so the ctest log carries the reason.) */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/arena.h"
#include "flowdp/backend.h"
#include "flowdp/cuda.h"
#include "flowdp/optim.h"
#include "flowdp/realnvp.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
/* the CUDA driver maps device memory where ASan keeps its shadow gap; and what the
 * driver and NVIDIA's libraries keep until exit is theirs, not a flowdp leak */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0"; }
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libcuda.so\nleak:libcudart.so\nleak:libcudnn\nleak:libcublas\nleak:libnccl.so\n";
}
#endif

static fdp_backend *CPU, *GPU;
static char g_skip_reason[1200];
static int g_selftest; /* FLOWDP_PARITY_SELFTEST=1: a CPU backend plays the GPU */

#define NEED_GPU()                                                             \
    do {                                                                       \
        if (!GPU) {                                                            \
            printf("test_cuda_parity: skipped: %s\n", g_skip_reason);          \
            skip();                                                            \
        }                                                                      \
    } while (0)

/* ---- twins: one buffer per backend with the same initial content ------------------------ */
enum { TN = 8192, NT = 8, NTD = 4 };
typedef struct twin {
    float *c, *g;          /* CPU backend (host) and GPU copies, TN floats */
    float lo, hi;          /* initial range */
} twin;
typedef struct twind {
    double *c, *g;         /* TN doubles */
    double lo, hi;
} twind;
static twin T[NT];
static twind TD[NTD];
static int64_t *IDX_c, *IDX_g; /* 64 row indices */
static float *HOST;             /* TN floats scratch for downloads */
static double *HOSTD;
static uint64_t g_seed = 1;

static void twins_alloc(void) {
    const float lo[NT] = {-2, -2, -1, 0.1f, 0, -2, -1, 0};
    const float hi[NT] = {2, 2, 1, 2, 1, 2, 1, 1};
    for (int i = 0; i < NT; i++) {
        T[i].c = CPU->alloc(CPU, TN * sizeof(float));
        T[i].g = GPU->alloc(GPU, TN * sizeof(float));
        T[i].lo = lo[i];
        T[i].hi = hi[i];
    }
    const double dlo[NTD] = {0.5, -1, -1, 0.5}, dhi[NTD] = {5, 1, 1, 3};
    for (int i = 0; i < NTD; i++) {
        TD[i].c = CPU->alloc(CPU, TN * sizeof(double));
        TD[i].g = GPU->alloc(GPU, TN * sizeof(double));
        TD[i].lo = dlo[i];
        TD[i].hi = dhi[i];
    }
    IDX_c = CPU->alloc(CPU, 64 * sizeof(int64_t));
    IDX_g = GPU->alloc(GPU, 64 * sizeof(int64_t));
    HOST = malloc(TN * sizeof(float));
    HOSTD = malloc(TN * sizeof(double));
}

static void twins_free(void) {
    for (int i = 0; i < NT; i++) {
        CPU->free(CPU, T[i].c);
        GPU->free(GPU, T[i].g);
    }
    for (int i = 0; i < NTD; i++) {
        CPU->free(CPU, TD[i].c);
        GPU->free(GPU, TD[i].g);
    }
    CPU->free(CPU, IDX_c);
    GPU->free(GPU, IDX_g);
    free(HOST);
    free(HOSTD);
}

/* fresh identical random content in every twin */
static void twins_reset(void) {
    g_seed++;
    for (int i = 0; i < NT; i++) {
        tu_fill_uniform(T[i].c, TN, g_seed * 131 + (uint64_t)i, T[i].lo, T[i].hi);
        GPU->from_host(GPU, T[i].g, T[i].c, TN * sizeof(float));
    }
    for (int i = 0; i < NTD; i++) {
        uint64_t s = g_seed * 977 + (uint64_t)i;
        for (int j = 0; j < TN; j++) TD[i].c[j] = tu_uniform(&s, TD[i].lo, TD[i].hi);
        GPU->from_host(GPU, TD[i].g, TD[i].c, TN * sizeof(double));
    }
    for (int r = 0; r < 64; r++) IDX_c[r] = (int64_t)10000000000LL + 7 * r;
    GPU->from_host(GPU, IDX_g, IDX_c, 64 * sizeof(int64_t));
}

/* every twin equal after the op: normwise error <= tol (floor 1e-6) */
static void twins_compare(const char *what, double tol) {
    for (int i = 0; i < NT; i++) {
        GPU->to_host(GPU, HOST, T[i].g, TN * sizeof(float));
        double e = tu_normwise_err(HOST, T[i].c, TN, 1e-6);
        if (!(e <= tol)) fail_msg("%s: float buffer %d differs: normwise %.3g > %.1g", what, i, e, tol);
    }
    for (int i = 0; i < NTD; i++) {
        GPU->to_host(GPU, HOSTD, TD[i].g, TN * sizeof(double));
        double m = 1e-12, d = 0.0;
        for (int j = 0; j < TN; j++) {
            m = fmax(m, fabs(TD[i].c[j]));
            d = fmax(d, fabs(HOSTD[j] - TD[i].c[j]));
            if (isnan(HOSTD[j]) != isnan(TD[i].c[j])) d = INFINITY;
        }
        if (!(d / m <= tol)) fail_msg("%s: double buffer %d differs: normwise %.3g > %.1g", what, i, d / m, tol);
    }
}

/* the op under test, built once per backend: F(i) / D(i) pick that backend's twin */
#define F(i) (gpu ? T[i].g : T[i].c)
#define D(i) (gpu ? TD[i].g : TD[i].c)
#define IDX (gpu ? IDX_g : IDX_c)
typedef void (*op_case)(fdp_backend *be, int gpu, int variant);
static void run_case(const char *name, op_case f, int variants, double tol) {
    for (int v = 0; v < variants; v++) {
        twins_reset();
        f(CPU, 0, v);
        f(GPU, 1, v);
        char what[96];
        snprintf(what, sizeof what, "%s (variant %d)", name, v);
        twins_compare(what, tol);
    }
    printf("  %-26s %d variant(s) match\n", name, variants);
}

/* a small NCHW geometry: N=3, C=4, 6x6 */
enum { NN = 3, CC = 4, HH = 6, WW = 6, HWs = HH * WW, NCHW = NN * CC * HWs };

static void case_fill(fdp_backend *be, int gpu, int v) {
    fdp_fill_args a = {F(1), v ? -0.0f : 1.5f};
    be->fill(be, 5000, &a);
}
static void case_axpby(fdp_backend *be, int gpu, int v) {
    fdp_axpby_args a = {F(0), F(1), 0.7f, v ? 0.0f : -1.3f};
    be->axpby(be, 5000, &a);
}
static void case_scale_shift(fdp_backend *be, int gpu, int v) {
    fdp_scale_shift_args a = {F(0), F(1), 0.7f, 0.25f};
    be->scale_shift(be, 5000, &a);
}
static void case_axpy_f64(fdp_backend *be, int gpu, int v) {
    fdp_axpy_f64_args a = {D(1), D(2), 0.3};
    be->axpy_f64(be, 4000, &a);
}
static void case_f64_to_f32(fdp_backend *be, int gpu, int v) {
    fdp_f64_to_f32_args a = {D(1), F(1), 0.5};
    be->f64_to_f32(be, 4000, &a);
}
static void case_sigmoid(fdp_backend *be, int gpu, int v) {
    fdp_sigmoid_args a = {F(0), F(1)};
    be->sigmoid(be, 5000, &a);
}
static void case_slice_copy(fdp_backend *be, int gpu, int v) {
    fdp_slice_copy_args a = {F(0), F(1), 4, 1, 6, 2, 2, HWs, v ? 1.0f : 0.5f, v};
    be->slice_copy(be, (int64_t)NN * 2 * HWs, &a);
}
static void case_checkerboard_mul(fdp_backend *be, int gpu, int v) {
    fdp_checkerboard_mul_args a = {F(0), F(1), HH, WW, v & 1, v >> 1};
    be->checkerboard_mul(be, NCHW, &a);
}
static void case_dequant_uniform(fdp_backend *be, int gpu, int v) {
    fdp_dequant_uniform_args a = {F(4), F(7), F(1), v ? 32.0f : 256.0f, v ? 8.0f : 1.0f, v};
    be->dequant_uniform(be, NCHW, &a);
}
static void case_logit_forward(fdp_backend *be, int gpu, int v) {
    fdp_logit_forward_args a = {F(7), F(1), F(5), 0.9f};
    be->logit_forward(be, NCHW, &a);
}
static void case_logit_backward(fdp_backend *be, int gpu, int v) {
    fdp_logit_backward_args a = {F(7), F(0), F(2), F(1), 0.9f, NCHW / NN};
    be->logit_backward(be, NCHW, &a);
}
/* gated convolution network (gated_ops.h); C = CC/2 channels where the op doubles them */
static void case_concat_elu(fdp_backend *be, int gpu, int v) {
    fdp_concat_elu_args a = {F(0), F(1), CC / 2, HWs};
    be->concat_elu(be, NCHW / 2, &a);
}
static void case_concat_elu_backward(fdp_backend *be, int gpu, int v) {
    fdp_concat_elu_backward_args a = {F(0), F(2), F(1), CC / 2, HWs, v};
    be->concat_elu_backward(be, NCHW / 2, &a);
}
static void case_gate(fdp_backend *be, int gpu, int v) {
    fdp_gate_args a = {F(0), F(2), F(1), CC / 2, HWs};
    be->gate(be, NCHW / 2, &a);
}
static void case_gate_backward(fdp_backend *be, int gpu, int v) {
    fdp_gate_backward_args a = {F(2), F(0), F(1), CC / 2, HWs};
    be->gate_backward(be, NCHW / 2, &a);
}
static void case_layernorm_channels(fdp_backend *be, int gpu, int v) {
    fdp_layernorm_channels_args a = {F(0), F(3), F(2), F(1), F(5), F(6), CC, HWs, 1e-5f};
    be->layernorm_channels(be, NN * HWs, &a);
}
static void case_layernorm_channels_backward(fdp_backend *be, int gpu, int v) {
    fdp_layernorm_channels_backward_args a = {F(0), F(2), F(3), F(4), F(3), F(1), F(5), CC, HWs};
    be->layernorm_channels_backward(be, NN * HWs, &a);
}
static void case_bn_stats(fdp_backend *be, int gpu, int v) {
    /* sums of a channel of 100 elements: mean in [-1,1], E[x^2] in [1.5, 6] */
    fdp_bn_stats_args a = {D(1), D(3), 100.0, 1e-5f, 0.1f, v == 0, v == 2 ? NULL : F(2), v == 2 ? NULL : F(3),
                           F(5), F(6)};
    if (v == 2) a.training = 1;
    be->bn_stats(be, CC, &a);
}
static void case_bn_act(fdp_backend *be, int gpu, int v) {
    fdp_bn_act_args a = {F(0), F(1), F(2), F(3), F(7), F(6), CC, HWs, v == 1 ? -0.5f : 1.5f, v};
    be->bn_act(be, NCHW, &a);
}
static void case_bn_act_grad(fdp_backend *be, int gpu, int v) {
    fdp_bn_act_grad_args a = {F(0), F(2), F(1), CC, HWs, 1.5f, v};
    be->bn_act_grad(be, NCHW, &a);
}
static void case_bn_grad_coef(fdp_backend *be, int gpu, int v) {
    fdp_bn_grad_coef_args a = {D(1), D(2), 500.0, F(2), F(3), F(7), v == 2 ? NULL : F(1), v == 2 ? NULL : F(5),
                               F(6), F(6) + 16, F(6) + 32, v != 1, v == 1 ? 0.5 : 1.0};
    be->bn_grad_coef(be, CC, &a);
}
static void case_bn_grad_apply(fdp_backend *be, int gpu, int v) {
    fdp_bn_act_grad_args g = {F(0), F(2), NULL, CC, HWs, 1.5f, v % 3};
    fdp_bn_grad_apply_args a = {g, F(4), F(1), F(2), F(3), F(7), F(6), CC, HWs, v >= 3};
    be->bn_grad_apply(be, NCHW, &a);
}
static void case_weightnorm_forward(fdp_backend *be, int gpu, int v) {
    fdp_weightnorm_forward_args a = {F(0), F(3), D(0), F(1), 36};
    be->weightnorm_forward(be, 8 * 36, &a);
}
static void case_weightnorm_backward(fdp_backend *be, int gpu, int v) {
    fdp_weightnorm_backward_args a = {F(0), F(2), F(3), D(0), D(1), F(1), F(5), 36};
    be->weightnorm_backward(be, 8 * 36, &a);
}
/* variants: bit 0 inverse, bit 1 reverse_mask, bit 2 channel mask */
static void case_coupling_affine(fdp_backend *be, int gpu, int v) {
    int mask = (v >> 2) & 1, rev = (v >> 1) & 1;
    int Cc = mask ? CC / 2 : CC, off = mask && rev ? CC / 2 : 0;
    fdp_coupling_affine_args a = {F(0), F(2), F(3), F(1), F(5), F(6), CC, Cc, off, HH, WW, mask, rev, v & 1};
    be->coupling_affine(be, NCHW, &a);
}
static void case_coupling_affine_backward(fdp_backend *be, int gpu, int v) {
    int mask = (v >> 1) & 1, rev = v & 1;
    int Cc = mask ? CC / 2 : CC, off = mask && rev ? CC / 2 : 0;
    fdp_coupling_affine_backward_args a = {F(0), F(2), F(6), F(3), F(7), F(1), F(5), F(4),
                                           CC, Cc, off, HH, WW, mask, rev};
    be->coupling_affine_backward(be, NCHW, &a);
}
/* variants: bit 0 alt order, bit 1 reverse, bit 2 accumulate */
static void case_squeeze(fdp_backend *be, int gpu, int v) {
    fdp_squeeze_args a = {F(0), F(1), CC, HH, WW, v & 1, (v >> 1) & 1, (v >> 2) & 1};
    be->squeeze(be, NCHW, &a);
}
static void case_adam(fdp_backend *be, int gpu, int v) {
    fdp_adam_args a = {F(0), F(2), F(5), F(3), v ? 1.0f : 0.5f, v ? 0.0f : 0.01f, 0.9f, 0.999f, 1e-8f, 1e-3f, 0.3f};
    be->adam(be, 5000, &a);
}
static void case_philox_fill(fdp_backend *be, int gpu, int v) {
    fdp_philox_fill_args a = {F(1), IDX, 101, 0x123456789abcdefULL, 7, v ? FDP_RNG_PRIOR : FDP_RNG_DEQUANT, v};
    be->philox_fill(be, 64 * 101, &a);
}

/* ---- the Glow ops (src/kernels/glow_ops.h); designated initializers, so a changed
 * argument struct fails to compile here instead of testing the wrong thing ---- */
static void case_glow_preprocess(fdp_backend *be, int gpu, int v) {
    fdp_glow_preprocess_args a = {.x = F(4), .u = F(7), .y = F(1), .bin_div = v ? 8.0f : 1.0f,
                                  .n_bins = v ? 32.0f : 256.0f};
    be->glow_preprocess(be, NCHW, &a);
}
static void case_glow_postprocess(fdp_backend *be, int gpu, int v) {
    fdp_glow_postprocess_args a = {.x = F(0), .y = F(1), .n_bins = v ? 32.0f : 256.0f};
    be->glow_postprocess(be, NCHW, &a);
}
static void case_glow_actnorm(fdp_backend *be, int gpu, int v) {
    fdp_glow_actnorm_args a = {.x = F(0), .y = F(1), .b = F(2), .logs = F(6), .C = CC, .HW = HWs,
                               .logscale = 3.0f, .inverse = v % 3 == 1, .relu = v % 3 == 2,
                               .scale = v >= 3 ? F(3) : NULL};
    be->glow_actnorm(be, NCHW, &a);
}
static void case_glow_actnorm_backward(fdp_backend *be, int gpu, int v) {
    fdp_glow_actnorm_backward_args a = {.dy = F(0), .y = F(2), .dx = F(1), .logs = F(6), .C = CC, .HW = HWs,
                                        .logscale = 3.0f, .relu = v & 1, .scale = v & 2 ? F(3) : NULL};
    be->glow_actnorm_backward(be, NCHW, &a);
}
static void case_glow_channel_scale(fdp_backend *be, int gpu, int v) {
    fdp_glow_channel_scale_args a = {.logs = F(6), .scale = F(1), .logscale = 3.0f};
    be->glow_channel_scale(be, 64, &a);
}
static void case_glow_actnorm_grad(fdp_backend *be, int gpu, int v) {
    fdp_glow_actnorm_grad_args a = {.sum_g = D(1), .sum_gx = D(2), .dldj_sum = v ? D(3) : NULL, .b = F(2),
                                    .db = F(1), .dlogs = F(5), .logscale = 3.0f, .hw = 36.0};
    be->glow_actnorm_grad(be, CC, &a);
}
static void case_glow_actnorm_ddi(fdp_backend *be, int gpu, int v) {
    fdp_glow_actnorm_ddi_args a = {.sum = D(1), .sumsq = D(3), .count = 1.0, .b = F(1), .logs = F(5), .flag = F(6),
                                   .logscale = 3.0f};
    be->glow_actnorm_ddi(be, CC, &a);
}
static void case_glow_add_bcast_f64(fdp_backend *be, int gpu, int v) {
    fdp_glow_add_bcast_f64_args a = {.s = D(1), .y = D(2), .alpha = 0.5};
    be->glow_add_bcast_f64(be, 1000, &a);
}
/* variants: bit 0 inverse, bit 1 an explicit permutation (else reverse) */
static void case_glow_permute(fdp_backend *be, int gpu, int v) {
    const float perm[CC] = {2, 0, 3, 1};
    if (v & 2) be->from_host(be, F(7), perm, sizeof perm);
    fdp_glow_permute_args a = {.x = F(0), .y = F(1), .perm = v & 2 ? F(7) : NULL, .C = CC, .HW = HWs,
                               .inverse = v & 1};
    be->glow_permute(be, NCHW, &a);
}
/* variants: bit 0 affine, bit 1 inverse */
static void case_glow_coupling(fdp_backend *be, int gpu, int v) {
    fdp_glow_coupling_args a = {.x = F(0), .h = F(2), .y = F(1), .ls = F(5), .C = CC, .HW = HWs, .affine = v & 1,
                                .inverse = v >> 1};
    be->glow_coupling(be, NCHW, &a);
}
static void case_glow_coupling_backward(fdp_backend *be, int gpu, int v) {
    fdp_glow_coupling_backward_args a = {.dy = F(0), .y = F(2), .h = F(6), .dldj = F(7), .dx = F(1), .dh = F(5),
                                         .C = CC, .HW = HWs, .affine = v};
    be->glow_coupling_backward(be, NCHW, &a);
}
static void case_glow_gaussian_logp(fdp_backend *be, int gpu, int v) {
    fdp_glow_gaussian_logp_args a = {.z = F(0), .h = F(2), .lp = F(1), .eps = v & 2 ? NULL : F(5), .Cz = CC,
                                     .HW = HWs, .layout = v & 1};
    be->glow_gaussian_logp(be, NCHW, &a);
}
static void case_glow_gaussian_sample(fdp_backend *be, int gpu, int v) {
    fdp_glow_gaussian_sample_args a = {.eps = F(0), .h = F(2), .z = F(1), .temperature = 0.7f, .Cz = CC, .HW = HWs,
                                       .layout = v};
    be->glow_gaussian_sample(be, NCHW, &a);
}
/* variants: bit 0 layout, bit 1 accumulate */
static void case_glow_gaussian_backward(fdp_backend *be, int gpu, int v) {
    fdp_glow_gaussian_backward_args a = {.z = F(0), .h = F(2), .dlp = F(7), .dz = F(1), .dh = F(5), .Cz = CC,
                                         .HW = HWs, .layout = v & 1, .accumulate = v >> 1};
    be->glow_gaussian_backward(be, NCHW, &a);
}
static void case_glow_prior_vec(fdp_backend *be, int gpu, int v) {
    fdp_glow_prior_vec_args a = {.b = F(2), .logs = F(6), .h = F(1), .logscale = 3.0f};
    be->glow_prior_vec(be, 2 * CC, &a);
}
static void case_glow_prior_grad(fdp_backend *be, int gpu, int v) {
    fdp_glow_prior_grad_args a = {.dsum = D(1), .b = F(2), .logs = F(6), .db = F(1), .dlogs = F(5), .logscale = 3.0f};
    be->glow_prior_grad(be, 2 * CC, &a);
}
static void case_adamax(fdp_backend *be, int gpu, int v) {
    fdp_adamax_args a = {.p = F(0), .grad = F(2), .m = F(5), .u = F(3), .gscale = v ? 1.0f : 0.5f,
                         .wd = v ? 0.0f : 0.01f, .b1 = 0.9f, .b2 = 0.999f, .eps = 1e-8f, .step_size = 1e-3f};
    be->adamax(be, 5000, &a);
}
static void case_swap_f32(fdp_backend *be, int gpu, int v) {
    fdp_swap_f32_args a = {.a = F(0), .b = F(1)};
    be->swap_f32(be, 5000, &a);
}

/* Lippe's tutorial flows (tutorial_ops.h); C = CC/2 channels where the network output doubles them */
static void case_tut_mask_mul(fdp_backend *be, int gpu, int v) {
    fdp_tut_mask_mul_args a = {F(0), F(4), F(1), CC, HWs, v & 1, v >> 1};
    be->tut_mask_mul(be, NCHW, &a);
}
static void case_tut_coupling(fdp_backend *be, int gpu, int v) {
    fdp_tut_coupling_args a = {F(0), F(2), F(6), F(4), F(1), v & 2 ? NULL : F(5), CC / 2, HWs, v & 1, v >> 1};
    be->tut_coupling(be, NCHW / 2, &a);
}
static void case_tut_coupling_backward(fdp_backend *be, int gpu, int v) {
    fdp_tut_coupling_backward_args a = {F(0), F(2), F(6), F(4), F(7), F(6) + 64, F(1), F(5), F(3), CC / 2, HWs, v};
    be->tut_coupling_backward(be, NCHW / 2, &a);
}
static void case_tut_logit(fdp_backend *be, int gpu, int v) {
    fdp_tut_logit_args a = {F(7), F(1), F(5), (float)(1.0 - 1e-5), (float)(0.5 * 1e-5)};
    be->tut_logit(be, NCHW, &a);
}
static void case_tut_logit_backward(fdp_backend *be, int gpu, int v) {
    fdp_tut_logit_backward_args a = {F(7), F(0), F(2), F(1), (float)(1.0 - 1e-5), (float)(0.5 * 1e-5), NCHW / NN};
    be->tut_logit_backward(be, NCHW, &a);
}
static void case_tut_normal_logp(fdp_backend *be, int gpu, int v) {
    fdp_tut_normal_logp_args a = {F(0), F(1)};
    be->tut_normal_logp(be, NCHW, &a);
}
static void case_tut_normal_logp_backward(fdp_backend *be, int gpu, int v) {
    fdp_tut_normal_logp_backward_args a = {F(0), F(2), F(1), NCHW / NN};
    be->tut_normal_logp_backward(be, NCHW, &a);
}

typedef struct op_entry {
    const char *name;
    op_case f;
    int variants;
    double tol;
} op_entry;
static const op_entry OPS[] = {
    {"fill", case_fill, 2, 0.0},
    {"axpby", case_axpby, 2, 1e-6},
    {"scale_shift", case_scale_shift, 1, 1e-6},
    {"axpy_f64", case_axpy_f64, 1, 1e-15},
    {"f64_to_f32", case_f64_to_f32, 1, 1e-7},
    {"sigmoid", case_sigmoid, 1, 1e-6},
    {"slice_copy", case_slice_copy, 2, 1e-6},
    {"checkerboard_mul", case_checkerboard_mul, 4, 0.0},
    {"dequant_uniform", case_dequant_uniform, 2, 1e-6},
    {"logit_forward", case_logit_forward, 1, 1e-5},
    {"logit_backward", case_logit_backward, 1, 1e-5},
    {"concat_elu", case_concat_elu, 1, 1e-6},
    {"concat_elu_backward", case_concat_elu_backward, 2, 1e-6},
    {"gate", case_gate, 1, 1e-6},
    {"gate_backward", case_gate_backward, 1, 1e-6},
    {"layernorm_channels", case_layernorm_channels, 1, 1e-5},
    {"layernorm_channels_backward", case_layernorm_channels_backward, 1, 1e-5},
    {"bn_stats", case_bn_stats, 3, 1e-6},
    {"bn_act", case_bn_act, 3, 1e-6},
    {"bn_act_grad", case_bn_act_grad, 3, 1e-6},
    {"bn_grad_coef", case_bn_grad_coef, 3, 1e-6},
    {"bn_grad_apply", case_bn_grad_apply, 6, 1e-5},
    {"weightnorm_forward", case_weightnorm_forward, 1, 1e-6},
    {"weightnorm_backward", case_weightnorm_backward, 1, 1e-6},
    {"coupling_affine", case_coupling_affine, 8, 1e-5},
    {"coupling_affine_backward", case_coupling_affine_backward, 4, 1e-5},
    {"squeeze", case_squeeze, 8, 0.0},
    {"adam", case_adam, 2, 1e-5},
    {"philox_fill", case_philox_fill, 2, 1e-6},
    {"glow_preprocess", case_glow_preprocess, 2, 1e-6},
    {"glow_postprocess", case_glow_postprocess, 2, 1e-6},
    {"glow_channel_scale", case_glow_channel_scale, 1, 1e-5},
    {"glow_actnorm", case_glow_actnorm, 6, 1e-5},
    {"glow_actnorm_backward", case_glow_actnorm_backward, 4, 1e-5},
    {"glow_actnorm_grad", case_glow_actnorm_grad, 2, 1e-6},
    {"glow_actnorm_ddi", case_glow_actnorm_ddi, 1, 1e-6},
    {"glow_add_bcast_f64", case_glow_add_bcast_f64, 1, 1e-15},
    {"glow_permute", case_glow_permute, 4, 0.0},
    {"glow_coupling", case_glow_coupling, 4, 1e-5},
    {"glow_coupling_backward", case_glow_coupling_backward, 2, 1e-5},
    {"glow_gaussian_logp", case_glow_gaussian_logp, 4, 1e-5},
    {"glow_gaussian_sample", case_glow_gaussian_sample, 2, 1e-5},
    {"glow_gaussian_backward", case_glow_gaussian_backward, 4, 1e-5},
    {"glow_prior_vec", case_glow_prior_vec, 1, 1e-5},
    {"glow_prior_grad", case_glow_prior_grad, 1, 1e-6},
    {"adamax", case_adamax, 2, 1e-5},
    {"swap_f32", case_swap_f32, 1, 0.0},
    {"tut_mask_mul", case_tut_mask_mul, 4, 1e-6},
    {"tut_coupling", case_tut_coupling, 4, 1e-5},
    {"tut_coupling_backward", case_tut_coupling_backward, 2, 1e-5},
    {"tut_logit", case_tut_logit, 1, 1e-5},
    {"tut_logit_backward", case_tut_logit_backward, 1, 1e-5},
    {"tut_normal_logp", case_tut_normal_logp, 1, 1e-6},
    {"tut_normal_logp_backward", case_tut_normal_logp_backward, 1, 1e-6},
};

/* which ops of FDP_ELEMENTWISE_OPS have no case above (e.g. new Glow ops) */
static int uncovered_ops(char *list, size_t len) {
    static const char *const all[] = {
#define OP_NAME(name) #name,
        FDP_ELEMENTWISE_OPS(OP_NAME)
#undef OP_NAME
    };
    int missing = 0;
    list[0] = '\0';
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        int found = 0;
        for (size_t j = 0; j < sizeof OPS / sizeof OPS[0]; j++) found |= strcmp(all[i], OPS[j].name) == 0;
        if (!found) {
            size_t l = strlen(list);
            snprintf(list + l, len - l, "%s%s", missing ? ", " : "", all[i]);
            missing++;
        }
    }
    return missing;
}

static void test_elementwise_ops(void **state) {
    (void)state;
    NEED_GPU();
    twins_alloc();
    for (size_t j = 0; j < sizeof OPS / sizeof OPS[0]; j++) run_case(OPS[j].name, OPS[j].f, OPS[j].variants, OPS[j].tol);
    twins_free();
    char list[1024];
    if (uncovered_ops(list, sizeof list))
        fail_msg("element-wise ops without a CPU/CUDA parity case in tests/test_cuda_parity.c: %s", list);
}

/* ---- reductions -------------------------------------------------------------------------- */
static float *to_gpu(const float *h, int64_t n) {
    float *d = GPU->alloc(GPU, sizeof(float) * (size_t)n);
    GPU->from_host(GPU, d, h, sizeof(float) * (size_t)n);
    return d;
}

static void expect_close_f64(const char *what, const double *gpu_dev, const double *cpu, int n, double tol) {
    double *h = malloc(sizeof(double) * (size_t)n);
    GPU->to_host(GPU, h, gpu_dev, sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++)
        if (!(fabs(h[i] - cpu[i]) <= tol * fmax(1.0, fabs(cpu[i]))))
            fail_msg("%s[%d]: cuda %.17g, cpu %.17g (tol %.1g)", what, i, h[i], cpu[i], tol);
    free(h);
}

static void test_reductions(void **state) {
    (void)state;
    NEED_GPU();
    /* (outer, C, inner): short rows, long rows, one segment, many segments */
    const int shapes[][3] = {{3, 4, 36}, {16, 5, 3000}, {1, 64, 3072}, {64, 32, 16}, {2, 1, 200000}, {7, 3, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int outer = shapes[s][0], C = shapes[s][1];
        int64_t inner = shapes[s][2], n = (int64_t)outer * C * inner;
        float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
        float *y = malloc(sizeof(float) * (size_t)n * 2), *dy = malloc(sizeof(float) * (size_t)n * 2);
        tu_fill_uniform(a, n, 11 + s, -2, 2);
        tu_fill_uniform(b, n, 12 + s, -2, 2);
        tu_fill_uniform(y, 2 * n, 13 + s, -1, 1);
        tu_fill_uniform(dy, 2 * n, 14 + s, -1, 1);
        float *ga = to_gpu(a, n), *gb = to_gpu(b, n), *gy = to_gpu(y, 2 * n), *gdy = to_gpu(dy, 2 * n);
        double *c0 = malloc(sizeof(double) * (size_t)C), *c1 = malloc(sizeof(double) * (size_t)C);
        double *g01 = GPU->alloc(GPU, sizeof(double) * 2 * (size_t)C);
        double tol = 1e-12 * (double)(outer * inner) + 1e-13;
        char what[96];

        CPU->reduce_rows(CPU, a, NULL, outer, C, inner, c0);
        GPU->reduce_rows(GPU, ga, NULL, outer, C, inner, g01);
        snprintf(what, sizeof what, "reduce_rows(%d,%d,%lld)", outer, C, (long long)inner);
        expect_close_f64(what, g01, c0, C, tol);
        CPU->reduce_rows(CPU, a, b, outer, C, inner, c0);
        GPU->reduce_rows(GPU, ga, gb, outer, C, inner, g01);
        snprintf(what, sizeof what, "reduce_rows(a*b, %d,%d,%lld)", outer, C, (long long)inner);
        expect_close_f64(what, g01, c0, C, tol);

        CPU->channel_moments(CPU, a, outer, C, inner, c0, c1);
        GPU->channel_moments(GPU, ga, outer, C, inner, g01, g01 + C);
        snprintf(what, sizeof what, "channel_moments sum (%d,%d,%lld)", outer, C, (long long)inner);
        expect_close_f64(what, g01, c0, C, tol);
        snprintf(what, sizeof what, "channel_moments sumsq (%d,%d,%lld)", outer, C, (long long)inner);
        expect_close_f64(what, g01 + C, c1, C, tol);

        for (int mode = 0; mode < 3; mode++) {
            fdp_bn_act_grad_args gc = {dy, y, NULL, C, inner, 1.5f, mode};
            fdp_bn_act_grad_args gg = {gdy, gy, NULL, C, inner, 1.5f, mode};
            CPU->bn_backward_reduce(CPU, &gc, a, outer, c0, c1);
            GPU->bn_backward_reduce(GPU, &gg, ga, outer, g01, g01 + C);
            snprintf(what, sizeof what, "bn_backward_reduce mode %d sum_g (%d,%d,%lld)", mode, outer, C,
                     (long long)inner);
            expect_close_f64(what, g01, c0, C, tol);
            snprintf(what, sizeof what, "bn_backward_reduce mode %d sum_gx (%d,%d,%lld)", mode, outer, C,
                     (long long)inner);
            expect_close_f64(what, g01 + C, c1, C, tol);
        }

        double sc = CPU->sum_squares(CPU, a, n), sg = GPU->sum_squares(GPU, ga, n);
        if (!(fabs(sc - sg) <= 1e-12 * (double)n * 4 + 1e-13 * sc))
            fail_msg("sum_squares(%lld): cuda %.17g cpu %.17g", (long long)n, sg, sc);
        assert_int_equal(GPU->has_nonfinite(GPU, ga, n), 0);
        /* a NaN at the end, an Inf in the middle */
        float bad = NAN;
        GPU->from_host(GPU, ga + n - 1, &bad, sizeof bad);
        assert_int_equal(GPU->has_nonfinite(GPU, ga, n), 1);
        assert_int_equal(GPU->has_nonfinite(GPU, ga, n - 1), 0);
        bad = -INFINITY;
        GPU->from_host(GPU, ga + n / 2, &bad, sizeof bad);
        assert_int_equal(GPU->has_nonfinite(GPU, ga, n - 1), n / 2 < n - 1);
        printf("  reductions (%d, %d, %lld): match\n", outer, C, (long long)inner);

        GPU->free(GPU, ga); GPU->free(GPU, gb); GPU->free(GPU, gy); GPU->free(GPU, gdy); GPU->free(GPU, g01);
        free(a); free(b); free(y); free(dy); free(c0); free(c1);
    }
    assert_true(GPU->sum_squares(GPU, NULL, 0) == 0.0);
}

/* ---- convolutions and matmul -------------------------------------------------------------- */
static void compare_dev(const char *what, const float *dev, const float *ref, int64_t n, double tol) {
    float *h = malloc(sizeof(float) * (size_t)n);
    GPU->to_host(GPU, h, dev, sizeof(float) * (size_t)n);
    double e = tu_normwise_err(h, ref, n, 1e-6);
    if (!(e <= tol)) fail_msg("%s: normwise error %.3g > %.1g", what, e, tol);
    free(h);
}

static void test_conv(void **state) {
    (void)state;
    NEED_GPU();
    const fdp_conv_shape shapes[] = {{2, 3, 5, 7, 9, 3}, {4, 8, 8, 8, 8, 1}, {1, 2, 4, 5, 5, 5}, {8, 32, 32, 14, 14, 3},
                                     {3, 64, 4, 4, 4, 3}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        fdp_conv_shape s = shapes[si];
        int64_t nx = (int64_t)s.n * s.cin * s.h * s.w, ny = (int64_t)s.n * s.cout * s.h * s.w,
                nw = (int64_t)s.cout * s.cin * s.k * s.k;
        float *x = malloc(sizeof(float) * (size_t)nx), *w = malloc(sizeof(float) * (size_t)nw),
              *b = malloc(sizeof(float) * (size_t)s.cout), *y = malloc(sizeof(float) * (size_t)ny),
              *dy = malloc(sizeof(float) * (size_t)ny), *dx = malloc(sizeof(float) * (size_t)nx),
              *dw = malloc(sizeof(float) * (size_t)nw), *db = malloc(sizeof(float) * (size_t)s.cout);
        tu_fill_uniform(x, nx, 21 + si, -1, 1);
        tu_fill_uniform(w, nw, 22 + si, -0.5f, 0.5f);
        tu_fill_uniform(b, s.cout, 23 + si, -1, 1);
        tu_fill_uniform(dy, ny, 24 + si, -1, 1);
        float *gx = to_gpu(x, nx), *gw = to_gpu(w, nw), *gb = to_gpu(b, s.cout), *gdy = to_gpu(dy, ny);
        float *gy = GPU->alloc(GPU, sizeof(float) * (size_t)ny), *gdx = GPU->alloc(GPU, sizeof(float) * (size_t)nx);
        float *gdw = GPU->alloc(GPU, sizeof(float) * (size_t)nw), *gdb = GPU->alloc(GPU, sizeof(float) * (size_t)s.cout);
        char what[128];
        for (int acc = 0; acc < 2; acc++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                /* forward (accumulating onto dy's values) */
                memcpy(y, dy, sizeof(float) * (size_t)ny);
                GPU->from_host(GPU, gy, dy, sizeof(float) * (size_t)ny);
                CPU->conv_forward(CPU, s, x, w, with_bias ? b : NULL, y, acc);
                GPU->conv_forward(GPU, s, gx, gw, with_bias ? gb : NULL, gy, acc);
                snprintf(what, sizeof what, "conv forward n%d %d->%d %dx%d k%d acc %d bias %d", s.n, s.cin, s.cout,
                         s.h, s.w, s.k, acc, with_bias);
                compare_dev(what, gy, y, ny, 1e-5);
            }
        for (int acc = 0; acc < 2; acc++) {
            memcpy(dx, x, sizeof(float) * (size_t)nx);
            GPU->from_host(GPU, gdx, x, sizeof(float) * (size_t)nx);
            CPU->conv_backward_data(CPU, s, dy, w, dx, acc);
            GPU->conv_backward_data(GPU, s, gdy, gw, gdx, acc);
            snprintf(what, sizeof what, "conv backward data n%d %d->%d %dx%d k%d acc %d", s.n, s.cin, s.cout, s.h, s.w,
                     s.k, acc);
            compare_dev(what, gdx, dx, nx, 1e-5);
        }
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            CPU->conv_backward_weights(CPU, s, x, dy, dw, with_bias ? db : NULL);
            GPU->conv_backward_weights(GPU, s, gx, gdy, gdw, with_bias ? gdb : NULL);
            snprintf(what, sizeof what, "conv backward weights n%d %d->%d %dx%d k%d", s.n, s.cin, s.cout, s.h, s.w,
                     s.k);
            compare_dev(what, gdw, dw, nw, 1e-5);
            if (with_bias) compare_dev("conv backward bias", gdb, db, s.cout, 1e-5);
        }
        printf("  conv n%d %d->%d %dx%d k%d: forward, backward data, backward weights match\n", s.n, s.cin, s.cout,
               s.h, s.w, s.k);
        GPU->free(GPU, gx); GPU->free(GPU, gw); GPU->free(GPU, gb); GPU->free(GPU, gdy);
        GPU->free(GPU, gy); GPU->free(GPU, gdx); GPU->free(GPU, gdw); GPU->free(GPU, gdb);
        free(x); free(w); free(b); free(y); free(dy); free(dx); free(dw); free(db);
    }
}

static void test_matmul(void **state) {
    (void)state;
    NEED_GPU();
    const int M = 7, N = 5, K = 9;
    float A[63], B[45], C0[35], C1[35];
    tu_fill_uniform(A, 63, 31, -1, 1);
    tu_fill_uniform(B, 45, 32, -1, 1);
    tu_fill_uniform(C0, 35, 33, -1, 1);
    float *gA = to_gpu(A, 63), *gB = to_gpu(B, 45), *gC = GPU->alloc(GPU, sizeof C0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bz = 0; bz < 2; bz++) {
                float beta = bz ? 0.0f : 0.3f;
                memcpy(C1, C0, sizeof C0);
                GPU->from_host(GPU, gC, C0, sizeof C0);
                CPU->matmul(CPU, ta, tb, M, N, K, 0.7f, A, B, beta, C1);
                GPU->matmul(GPU, ta, tb, M, N, K, 0.7f, gA, gB, beta, gC);
                char what[64];
                snprintf(what, sizeof what, "matmul transa %d transb %d beta %g", ta, tb, (double)beta);
                compare_dev(what, gC, C1, 35, 1e-6);
            }
    GPU->free(GPU, gA);
    GPU->free(GPU, gB);
    GPU->free(GPU, gC);
    printf("  matmul: 8 variants match\n");
}

/* ---- memory, staging, arena ------------------------------------------------------------------ */
static void test_memory(void **state) {
    (void)state;
    NEED_GPU();
    enum { M = 300000 };
    float *h = malloc(sizeof(float) * M), *h2 = malloc(sizeof(float) * M);
    tu_fill_uniform(h, M, 41, -1, 1);
    float *d = GPU->alloc(GPU, sizeof(float) * M), *d2 = GPU->alloc(GPU, sizeof(float) * M);
    assert_true(((uintptr_t)d & 63) == 0);
    GPU->from_host(GPU, d, h, sizeof(float) * M);
    memset(h2, 0, sizeof(float) * M);
    GPU->copy(GPU, d2, d, sizeof(float) * M);
    GPU->to_host(GPU, h2, d2, sizeof(float) * M);
    assert_memory_equal(h, h2, sizeof(float) * M);
    /* overlapping copy = memmove */
    GPU->copy(GPU, d + 10, d, sizeof(float) * 1000);
    GPU->to_host(GPU, h2, d, sizeof(float) * 1010);
    assert_memory_equal(h2 + 10, h, sizeof(float) * 1000);
    GPU->memset0(GPU, d, sizeof(float) * M);
    GPU->to_host(GPU, h2, d, sizeof(float) * M);
    for (int i = 0; i < M; i++) assert_true(h2[i] == 0.0f);
    /* many small from_host in a row reuse the staging slots (sources reused at once) */
    for (int r = 0; r < 20; r++) {
        for (int i = 0; i < 1000; i++) h2[i] = (float)(r * 1000 + i);
        GPU->from_host(GPU, d + r * 1000, h2, sizeof(float) * 1000);
    }
    GPU->to_host(GPU, h2, d, sizeof(float) * 20000);
    for (int i = 0; i < 20000; i++) assert_true(h2[i] == (float)i);
    /* pinned double-buffered upload */
    float *pin[2] = {fdp_backend_pinned_alloc(GPU, sizeof(float) * M), fdp_backend_pinned_alloc(GPU, sizeof(float) * M)};
    uint64_t ticket[2] = {0, 0};
    for (int k = 0; k < 6; k++) {
        int s = k & 1;
        fdp_backend_upload_wait(GPU, ticket[s]);
        for (int i = 0; i < M; i++) pin[s][i] = (float)(k + i);
        ticket[s] = fdp_backend_upload_async(GPU, k & 1 ? d2 : d, pin[s], sizeof(float) * M);
    }
    GPU->to_host(GPU, h2, d, sizeof(float) * M); /* k = 4 */
    for (int i = 0; i < M; i += 997) assert_true(h2[i] == (float)(4 + i));
    GPU->to_host(GPU, h2, d2, sizeof(float) * M); /* k = 5 */
    for (int i = 0; i < M; i += 997) assert_true(h2[i] == (float)(5 + i));
    fdp_backend_pinned_free(GPU, pin[0]);
    fdp_backend_pinned_free(GPU, pin[1]);
    /* a device arena through the backend allocator */
    fdp_arena *ar = fdp_arena_create(1 << 20, GPU->arena_alloc, GPU->arena_free, GPU, GPU->dev);
    float *p1 = fdp_arena_alloc(ar, 3 << 20), *p2 = fdp_arena_alloc(ar, 100);
    GPU->from_host(GPU, p1, h, 1000 * sizeof(float));
    GPU->from_host(GPU, p2, h, 25 * sizeof(float));
    fdp_arena_reset_all(ar); /* consolidates into one device block */
    p1 = fdp_arena_alloc(ar, 4 << 20);
    GPU->from_host(GPU, p1, h, 1000 * sizeof(float));
    GPU->to_host(GPU, h2, p1, 1000 * sizeof(float));
    assert_memory_equal(h, h2, 1000 * sizeof(float));
    fdp_arena_destroy(ar);
    fdp_backend_mem_stats ms;
    if (g_selftest) {
        assert_int_equal(fdp_backend_memory_stats(GPU, &ms), -1);
        GPU->free(GPU, d);
        GPU->free(GPU, d2);
        free(h);
        free(h2);
        return;
    }
    assert_int_equal(fdp_backend_memory_stats(GPU, &ms), 0);
    assert_true(ms.backend_peak >= ms.backend_bytes && ms.backend_bytes >= 2 * sizeof(float) * M);
    assert_true(ms.device_total > 0);
    printf("  memory: live %.1f MiB, peak %.1f MiB, pool high %.1f MiB, device free %.0f of %.0f MiB\n",
           ms.backend_bytes / 1048576.0, ms.backend_peak / 1048576.0, ms.pool_used_high / 1048576.0,
           ms.device_free / 1048576.0, ms.device_total / 1048576.0);
    GPU->free(GPU, d);
    GPU->free(GPU, d2);
    free(h);
    free(h2);
}

/* ---- Philox: bit for bit --------------------------------------------------------------------- */
static void test_philox_bits(void **state) {
    (void)state;
    NEED_GPU();
    enum { ROWS = 48, PER = 3 * 32 * 32 + 1 };
    int64_t idx[ROWS];
    for (int r = 0; r < ROWS; r++) idx[r] = r * 1000003LL + (r % 3 ? (int64_t)1 << 33 : 0);
    int64_t *gi = GPU->alloc(GPU, sizeof idx);
    GPU->from_host(GPU, gi, idx, sizeof idx);
    float *c = malloc(sizeof(float) * ROWS * PER), *h = malloc(sizeof(float) * ROWS * PER);
    float *g = GPU->alloc(GPU, sizeof(float) * ROWS * PER);
    for (int normal = 0; normal < 2; normal++) {
        fdp_philox_fill_args ac = {c, idx, PER, 0xfeedbeefcafeULL, 3, FDP_RNG_DEQUANT, normal};
        fdp_philox_fill_args ag = {g, gi, PER, 0xfeedbeefcafeULL, 3, FDP_RNG_DEQUANT, normal};
        CPU->philox_fill(CPU, (int64_t)ROWS * PER, &ac);
        GPU->philox_fill(GPU, (int64_t)ROWS * PER, &ag);
        GPU->to_host(GPU, h, g, sizeof(float) * ROWS * PER);
        int64_t differ = 0;
        int max_ulp = 0;
        for (int64_t i = 0; i < (int64_t)ROWS * PER; i++) {
            int32_t a, b;
            memcpy(&a, &c[i], 4);
            memcpy(&b, &h[i], 4);
            if (a != b) {
                differ++;
                int d = abs(a - b);
                if (d > max_ulp) max_ulp = d;
            }
        }
        printf("  philox %s: %lld of %d values differ in their bits (max %d ulp)\n", normal ? "normal" : "uniform",
               (long long)differ, ROWS * PER, max_ulp);
        /* uniforms are integer arithmetic: identical. Normals go through double
         * log/cos (CUDA's vs glibc's, both faithfully rounded) and one rounding to
         * float: identical in practice, 1 ulp tolerated. */
        if (!normal) assert_int_equal(differ, 0);
        else assert_true(max_ulp <= 1);
    }
    GPU->free(GPU, gi);
    GPU->free(GPU, g);
    free(c);
    free(h);
}

/* ---- RealNVP fixtures: forward / backward / one Adam step, CPU vs CUDA vs PyTorch ------------ */
static double attr_double(hid_t f, const char *obj, const char *name) {
    double v = NAN;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0);
    H5Aclose(a);
    return v;
}

static float *read_floats(hid_t f, const char *path, int64_t expect) {
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: missing in the fixture", path);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n != expect) fail_msg("%s: %lld elements, expected %lld", path, (long long)n, (long long)expect);
    float *buf = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    return buf;
}

static double read_scalar(hid_t f, const char *path) {
    double v;
    hid_t d = H5Dopen(f, path, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0);
    H5Dclose(d);
    return v;
}

/* one backend's run of a fixture: everything copied back to the host */
typedef struct run_result {
    float *z, *grads, *params, *buffers; /* after forward / backward / the Adam step */
    double *sldj, nll, gnorm;
    int64_t n_params, n_buffers;
} run_result;

static void run_fixture(hid_t f, fdp_backend *be, run_result *r) {
    int C = (int)attr_double(f, "/config", "in_channels"), H = (int)attr_double(f, "/config", "height"),
        W = (int)attr_double(f, "/config", "width"), S = (int)attr_double(f, "/config", "num_scales"),
        MID = (int)attr_double(f, "/config", "mid_channels"), NB = (int)attr_double(f, "/config", "num_blocks"),
        N = (int)attr_double(f, "/config", "batch");
    double lr = attr_double(f, "/config", "lr"), max_norm = attr_double(f, "/config", "max_grad_norm");
    fdp_realnvp m;
    fdp_err err = {{0}};
    assert_int_equal(fdp_realnvp_build(&m, C, H, W, S, MID, NB, &err), 0);
    fdp_realnvp_alloc_init(&m, be, 1);
    fdp_params *p = &m.params;
    r->n_params = p->n_params;
    r->n_buffers = p->n_buffers;
    for (int i = 0; i < p->count; i++) {
        char path[512];
        snprintf(path, sizeof path, "/params_init/%s", p->entries[i].name);
        float *v = read_floats(f, path, p->entries[i].numel);
        be->from_host(be, fdp_params_data(p, i), v, sizeof(float) * (size_t)p->entries[i].numel);
        free(v);
    }
    int64_t D = (int64_t)C * H * W;
    float *hx = read_floats(f, "/input/x", N * D), *hu = read_floats(f, "/input/u", N * D);
    float *x = be->alloc(be, sizeof(float) * (size_t)(N * D)), *u = be->alloc(be, sizeof(float) * (size_t)(N * D));
    be->from_host(be, x, hx, sizeof(float) * (size_t)(N * D));
    be->from_host(be, u, hu, sizeof(float) * (size_t)(N * D));
    fdp_arena *arena = fdp_arena_create(64 << 20, be->arena_alloc, be->arena_free, be, be->dev);
    fdp_ctx ctx = {.be = be, .arena = arena, .params = p, .training = 1, .world_size = 1};
    r->nll = fdp_realnvp_forward_loss(&m, &ctx, fdp_tensor_wrap(x, N, C, H, W, be->dev),
                                      fdp_tensor_wrap(u, N, C, H, W, be->dev), NULL);
    r->z = malloc(sizeof(float) * (size_t)(N * D));
    r->sldj = malloc(sizeof(double) * (size_t)N);
    be->to_host(be, r->z, m.z.data, sizeof(float) * (size_t)(N * D));
    be->to_host(be, r->sldj, m.sldj, sizeof(double) * (size_t)N);
    be->memset0(be, p->grads, sizeof(float) * (size_t)p->n_params);
    fdp_realnvp_backward(&m, &ctx, 1.0f);
    r->gnorm = fdp_grad_global_norm(p);
    r->grads = malloc(sizeof(float) * (size_t)p->n_params);
    be->to_host(be, r->grads, p->grads, sizeof(float) * (size_t)p->n_params);
    fdp_adam opt;
    fdp_adam_init(&opt, p, (float)attr_double(f, "/config", "adam_beta1"), (float)attr_double(f, "/config", "adam_beta2"),
                  (float)attr_double(f, "/config", "adam_eps"), 0.0f);
    fdp_adam_step(&opt, p, (float)lr, fdp_clip_factor(r->gnorm, max_norm));
    r->params = malloc(sizeof(float) * (size_t)p->n_params);
    r->buffers = malloc(sizeof(float) * (size_t)(p->n_buffers ? p->n_buffers : 1));
    be->to_host(be, r->params, p->params, sizeof(float) * (size_t)p->n_params);
    be->to_host(be, r->buffers, p->buffers, sizeof(float) * (size_t)p->n_buffers);
    fdp_adam_free(&opt);
    fdp_arena_destroy(arena);
    be->free(be, x);
    be->free(be, u);
    free(hx);
    free(hu);
    fdp_realnvp_free(&m);
}

static void free_result(run_result *r) {
    free(r->z);
    free(r->grads);
    free(r->params);
    free(r->buffers);
    free(r->sldj);
}

static void check_fixture(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open fixture %s", path);
    int C = (int)attr_double(f, "/config", "in_channels"), H = (int)attr_double(f, "/config", "height"),
        W = (int)attr_double(f, "/config", "width"), N = (int)attr_double(f, "/config", "batch");
    int64_t D = (int64_t)C * H * W;
    double lr = attr_double(f, "/config", "lr");
    run_result rc, rg;
    run_fixture(f, CPU, &rc);
    run_fixture(f, GPU, &rg);

    /* the GPU against PyTorch, with test_realnvp_fixture.c's tolerances */
    float *ref_z = read_floats(f, "/train/z", N * D), *ref_sldj = read_floats(f, "/train/sldj", N);
    double ref_nll = read_scalar(f, "/train/nll"), ref_gnorm = read_scalar(f, "/train/grad_norm");
    double ez = tu_normwise_err(rg.z, ref_z, N * D, 0.0), esl = 0.0, sl_scale = 0.0;
    for (int i = 0; i < N; i++) sl_scale = fmax(sl_scale, fabs(ref_sldj[i]));
    for (int i = 0; i < N; i++) esl = fmax(esl, fabs(rg.sldj[i] - ref_sldj[i]) / sl_scale);
    double enll = fabs(rg.nll - ref_nll) / fabs(ref_nll), egn = fabs(rg.gnorm - ref_gnorm) / ref_gnorm;
    /* the GPU against the CPU backend */
    int64_t np = rg.n_params;
    assert_int_equal(rc.n_params, rg.n_params);
    double cz = tu_normwise_err(rg.z, rc.z, N * D, 0.0);
    double cg = tu_normwise_err(rg.grads, rc.grads, np, 1e-6);
    double cp = tu_max_abs_diff(rg.params, rc.params, np);
    double cb = tu_normwise_err(rg.buffers, rc.buffers, rg.n_buffers, 1.0);
    printf("  %s: cuda vs PyTorch: z %.2e sldj %.2e nll %.2e grad_norm %.2e | cuda vs cpu: z %.2e grads %.2e "
           "params after Adam %.2e (2*lr %.0e) running statistics %.2e\n",
           path, ez, esl, enll, egn, cz, cg, cp, 2 * lr, cb);
    assert_true(ez < 1e-4);
    assert_true(esl < 1e-5);
    assert_true(enll < 1e-5);
    assert_true(egn < 1e-4);
    assert_true(cz < 1e-4);
    assert_true(cg < 1e-2);
    assert_true(cp <= 2 * lr);
    assert_true(cb < 1e-5);
    free(ref_z);
    free(ref_sldj);
    free_result(&rc);
    free_result(&rg);
    H5Fclose(f);
}

static void test_realnvp_fixtures(void **state) {
    (void)state;
    NEED_GPU();
    const char *dir = tu_fixture_dir();
    DIR *d = opendir(dir);
    if (!d) fail_msg("fixture directory %s not found (set FLOWDP_FIXTURE_DIR)", dir);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d))) {
        size_t L = strlen(e->d_name);
        if (strncmp(e->d_name, "realnvp_", 8) != 0 || L < 4 || strcmp(e->d_name + L - 3, ".h5") != 0) continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) fail_msg("path too long");
        check_fixture(path);
        count++;
    }
    closedir(d);
    assert_true(count > 0);
}

int main(void) {
    H5Eset_auto(H5E_DEFAULT, NULL, NULL);
    CPU = fdp_backend_cpu_create(2);
    fdp_err err = {{0}};
    /* built without CUDA this says so ("built without CUDA ..."); else it names the CUDA error */
    GPU = fdp_backend_cuda_create(-1, &err);
    if (!GPU) snprintf(g_skip_reason, sizeof g_skip_reason, "%.1000s", err.msg);
    const char *self = getenv("FLOWDP_PARITY_SELFTEST");
    if (!GPU && self && *self && strcmp(self, "0") != 0) {
        /* the harness itself checked on a machine without a GPU: a second CPU
         * backend stands in for CUDA (no CUDA code runs; not a parity result) */
        GPU = fdp_backend_cpu_create(1);
        g_selftest = 1;
        printf("test_cuda_parity: FLOWDP_PARITY_SELFTEST: CPU (2 threads) vs CPU (1 thread), the harness only\n");
    }
    if (!GPU) {
        printf("test_cuda_parity: skipped: %s\n", g_skip_reason);
        char list[1024];
        if (uncovered_ops(list, sizeof list))
            printf("test_cuda_parity: note: element-wise ops without a parity case yet: %s\n", list);
        fflush(stdout);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elementwise_ops), cmocka_unit_test(test_reductions), cmocka_unit_test(test_conv),
        cmocka_unit_test(test_matmul),          cmocka_unit_test(test_memory),     cmocka_unit_test(test_philox_bits),
        cmocka_unit_test(test_realnvp_fixtures),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fdp_backend_destroy(GPU);
    fdp_backend_destroy(CPU);
    H5close();
    return rc;
}
