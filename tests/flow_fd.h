/* flow_fd.h — what tests/test_flow_layers.c is built on: a finite-difference engine that needs
 * no knowledge of the layer (kinks found by the differences themselves), and a test case
 * holding one registered example (a flow layer or a conditioning network) on the CPU backend.
 * tests/flow_fd.c has the code and the reasoning behind the steps and tolerances. */
#ifndef FLOWDP_FLOW_FD_H
#define FLOWDP_FLOW_FD_H
#include <stdint.h>

#include "flowdp/condnet.h"
#include "flowdp/flow.h"
#include "testutil.h"

#define FD_H 1e-2        /* first FD step (inputs and parameters) */
#define FD_LEVELS 7      /* steps FD_H, FD_H/2, ..., FD_H/64 (Jacobian columns) */
#define FD_GRAD_LEVELS 7 /* steps FD_H ... FD_H/64 (gradients; the round-off of L, ~1e-7 relative, over
                          * the step: a pair too noisy to agree is left out, flow_fd.c) */
#define FD_TAU 1e-3      /* two FD estimates agree: max|a - b| <= tau * scale; Jacobian columns */
#define FD_TAU_GRAD 3e-3 /* ... gradients (compared at 1e-2 of the same scale) */
#define LC_BATCH 2       /* samples per example */
#define LC_PERTURB 0.1   /* every parameter element += U(-LC_PERTURB, LC_PERTURB) */

/* out (m doubles) = the function at the current value of the float being differentiated */
typedef void (*fd_fn)(void *user, double *out);
typedef struct fd_stats {
    int64_t n, refined, onesided, unresolved;
} fd_stats;
/* how to differentiate: estimates agree when max|a - b| <= tau * max(scale, max|b|); steps
 * FD_H ... FD_H * 2^-(levels - 1); pattern (may be NULL): the ReLU sign pattern of the last
 * evaluation, only points with x's are used (flow_fd.c); p0: x's, when have_p0 (with f0) */
typedef struct fd_opts {
    double scale, tau;
    int levels;
    uint64_t (*pattern)(void *user);
    uint64_t p0;
    int have_p0;
} fd_opts;
/* d (m doubles) = d out / d *target; f0: out at the unperturbed point when known (else NULL).
 * Returns 1: at the first steps (FD_H, FD_H/2), 2: at smaller steps or one-sided (a kink
 * nearby), 0: unresolved (d: the central difference at FD_H; leave it out). */
int fd_deriv(fd_fn f, void *user, int m, float *target, const double *f0, const fd_opts *o, double *d,
             fd_stats *st);

/* one registered example under test */
typedef struct lcase {
    char name[96];
    fdp_backend *be;
    fdp_arena *arena;
    fdp_ctx ctx;
    fdp_params p;
    fdp_flow_layer *l;       /* a flow layer, or */
    fdp_condnet *net;        /* a conditioning network */
    int factor_out;
    int n, c, h, w;          /* input */
    int oc, oh, ow;          /* output */
    int64_t din, dout, lat;  /* per sample: input, output, latent slice (factor-out layers) floats */
    float *latent;           /* (n * din): ctx.latent, latent_dim = din */
    float *buffers0;         /* restored before every forward */
    int batch_stats;         /* a training forward changes buffers (BatchNorm running statistics) */
    float *x;                /* (n * din) the point */
    /* what lc_fd (the fd_fn) returns: scalar 0: per sample [y, latent slice], then per sample
     * ldj (sldj minus the standard-normal log-density of the latent slice); 1: L = sum(wy * y) +
     * sum(wa * sldj) (a condnet: sum(wy * h)) */
    int scalar;
    const float *wy, *wa;
    uint64_t pattern;        /* the ReLU sign pattern of the last lc_fd (flow_fd.c) */
} lcase;

/* build the kind's variant (example, parameters allocated and initialized, every parameter
 * element perturbed, one training forward for data-dependent init, buffers saved); 0 when the
 * kind has no example */
int lc_open_layer(lcase *t, const fdp_flow_kind *k, int variant);
int lc_open_net(lcase *t, const fdp_condnet_kind *k);
void lc_close(lcase *t);
/* a clean state (buffers restored, arena reset, prepared), x copied into the arena (returned),
 * *sldj (arena, zeroed) */
fdp_tensor lc_begin(lcase *t, const float *x, double **sldj);
/* lc_begin, then the forward (*xt receives the input when not NULL) */
fdp_tensor lc_forward(lcase *t, const float *x, fdp_tensor *xt, double **sldj);
/* the fd_fn of a case (user = the lcase) */
void lc_fd(void *user, double *out);
int lc_fd_len(const lcase *t);
/* fd_opts.pattern of a case (user = the lcase) */
uint64_t lc_pattern(void *user);

/* max|a-b| over the elements with ok[i] (ok NULL: all; ok[i] == 3: in the scale only), over
 * max(max|b| over them, floor); NaN: infinite */
double fd_masked_normwise(const float *a, const float *b, const uint8_t *ok, int64_t n, double floor);
/* largest |x| per coordinate of a vector in double */
double fd_max_abs_d(const double *a, int64_t n);

#endif
