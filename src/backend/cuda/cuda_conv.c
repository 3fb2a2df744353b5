/* cuda_conv.c — the CUDA backend's convolutions through cuDNN 9 (its legacy
 * convolution API: descriptors + cudnnConvolution{Forward,BackwardData,
 * BackwardFilter}) and its matrix product through cuBLAS (row-major wrapper).
 *
 * Semantics are backend.h's: NCHW float, OIHW weights, stride 1, padding k/2
 * (cross-correlation, as PyTorch and oneDNN). One cache entry per (shape, op)
 * holds the descriptors and the algorithm, chosen ONCE on first use:
 *   FLOWDP_CUDNN_ALGO=find (default) cudnnFind*Algorithm: times the candidates
 *                                    (like torch.backends.cudnn.benchmark=True)
 *   FLOWDP_CUDNN_ALGO=heuristic      cudnnGet*Algorithm_v7: cuDNN's heuristics
 * Among the candidates the fastest (or best ranked) is taken that succeeded, fits
 * the workspace limit (FLOWDP_CUDNN_WORKSPACE_MB, default 1024) and, unless
 * FLOWDP_CUDNN_DETERMINISTIC=0, is deterministic (so two runs give the same bits).
 * Math: exact FP32 (CUDNN_FMA_MATH) unless FLOWDP_CUDA_TF32=1.
 * The workspace is one cached device buffer, grown when an entry needs more.
 * accumulate maps to cuDNN's beta = 1. The bias is added with cudnnAddTensor;
 * the bias gradient is the backend's own double reduction (deterministic),
 * rounded to float.
 *
 * Matmul: C (M,N) = alpha op(A) op(B) + beta C in row-major is, seen column-major,
 * C^T = op(B)^T op(A)^T: one cublasSgemm with the operands swapped.
 *
 * Built without CUDA this file is empty. */
#ifdef FLOWDP_HAVE_CUDA
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "flowdp/log.h"

enum { OP_FORWARD = 0, OP_BACKWARD_DATA = 1, OP_BACKWARD_FILTER = 2 };
static const char *const op_names[] = {"forward", "backward_data", "backward_weights"};

typedef struct conv_entry {
    fdp_conv_shape s;
    int op;
    cudnnTensorDescriptor_t xd, yd, bd; /* x (n,cin,h,w), y (n,cout,h,w), bias (1,cout,1,1) */
    cudnnFilterDescriptor_t wd;         /* (cout,cin,k,k) */
    cudnnConvolutionDescriptor_t cd;
    int algo;                           /* cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t */
    size_t ws;                          /* workspace bytes it needs */
    float time_ms;                      /* cuDNN's measurement (find mode), else -1 */
} conv_entry;

struct fdp_cuda_conv {
    conv_entry **entries;
    int n, cap;
    void *ws;                           /* the shared workspace (device) */
    size_t ws_cap;
    size_t ws_limit;
    int find, deterministic, tf32;
};

/* ---- errors ------------------------------------------------------------------------------- */
static void cudnn_fail(const char *file, int line, cudnnStatus_t st, const char *fn, const conv_entry *e) {
    const char *hint = st == CUDNN_STATUS_NOT_SUPPORTED     ? "cuDNN has no algorithm for this case; try FLOWDP_CUDNN_ALGO=heuristic or FLOWDP_CUDNN_DETERMINISTIC=0"
                       : st == CUDNN_STATUS_ALLOC_FAILED    ? "out of device memory; reduce the batch size or FLOWDP_CUDNN_WORKSPACE_MB"
                       : st == CUDNN_STATUS_EXECUTION_FAILED ? "a kernel failed (maybe an earlier one); rerun with FLOWDP_CUDA_SYNC=1"
                                                             : "rerun with CUDNN_LOGERR_DBG=1 CUDNN_LOGDEST_DBG=stderr for cuDNN's view";
    if (e)
        fdp_fatal_at(file, line, "cuDNN %s failed: %s in conv %s n=%d cin=%d cout=%d h=%d w=%d k=%d; hint: %s", fn,
                     cudnnGetErrorString(st), op_names[e->op], e->s.n, e->s.cin, e->s.cout, e->s.h, e->s.w, e->s.k,
                     hint);
    fdp_fatal_at(file, line, "cuDNN %s failed: %s; hint: %s", fn, cudnnGetErrorString(st), hint);
}
#define CUDNN_TRY(e, fn, ...)                                                         \
    do {                                                                              \
        cudnnStatus_t st_ = fn(__VA_ARGS__);                                          \
        if (st_ != CUDNN_STATUS_SUCCESS) cudnn_fail(__FILE__, __LINE__, st_, #fn, (e)); \
    } while (0)

static void cublas_fail(const char *file, int line, cublasStatus_t st, const char *fn, int M, int N, int K) {
    fdp_fatal_at(file, line, "cuBLAS %s failed: %s (M=%d N=%d K=%d); hint: %s", fn, cublasGetStatusString(st), M, N, K,
                 st == CUBLAS_STATUS_ALLOC_FAILED ? "out of device memory" : "rerun with FLOWDP_CUDA_SYNC=1");
}

/* ---- the cache -------------------------------------------------------------------------------- */
static long env_long(const char *name, long dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    return *end ? dflt : x;
}

fdp_cuda_conv *fdp_cuda_conv_create(fdp_cuda *cu) {
    (void)cu;
    fdp_cuda_conv *cc = fdp_xcalloc(1, sizeof *cc);
    const char *mode = getenv("FLOWDP_CUDNN_ALGO");
    cc->find = !(mode && strcmp(mode, "heuristic") == 0);
    cc->deterministic = env_long("FLOWDP_CUDNN_DETERMINISTIC", 1) != 0;
    cc->tf32 = env_long("FLOWDP_CUDA_TF32", 0) != 0;
    long mb = env_long("FLOWDP_CUDNN_WORKSPACE_MB", 1024);
    cc->ws_limit = (size_t)(mb > 0 ? mb : 1024) << 20;
    return cc;
}

void fdp_cuda_conv_destroy(fdp_cuda *cu, fdp_cuda_conv *cc) {
    if (!cc) return;
    for (int i = 0; i < cc->n; i++) {
        conv_entry *e = cc->entries[i];
        if (e->xd) cudnnDestroyTensorDescriptor(e->xd);
        if (e->yd) cudnnDestroyTensorDescriptor(e->yd);
        if (e->bd) cudnnDestroyTensorDescriptor(e->bd);
        if (e->wd) cudnnDestroyFilterDescriptor(e->wd);
        if (e->cd) cudnnDestroyConvolutionDescriptor(e->cd);
        free(e);
    }
    free(cc->entries);
    fdp_cuda_raw_free(cu, cc->ws, cc->ws_cap);
    free(cc);
}

size_t fdp_cuda_conv_workspace_bytes(const fdp_cuda_conv *cc) { return cc ? cc->ws_cap : 0; }
int fdp_cuda_conv_cache_size(const fdp_cuda_conv *cc) { return cc ? cc->n : 0; }

static int same_shape(fdp_conv_shape a, fdp_conv_shape b) {
    return a.n == b.n && a.cin == b.cin && a.cout == b.cout && a.h == b.h && a.w == b.w && a.k == b.k;
}

/* pick from cuDNN's candidate list (fields common to the three perf structs) */
#define PICK_ALGO(cc, perf, count, out_algo, out_time, out_ok)                                        \
    do {                                                                                              \
        out_ok = 0;                                                                                   \
        for (int pass_ = 0; pass_ < 2 && !out_ok; pass_++)                                            \
            for (int i_ = 0; i_ < (count) && !out_ok; i_++) {                                         \
                if ((perf)[i_].status != CUDNN_STATUS_SUCCESS) continue;                              \
                if ((perf)[i_].memory > (cc)->ws_limit) continue;                                     \
                if (pass_ == 0 && (cc)->deterministic && (perf)[i_].determinism != CUDNN_DETERMINISTIC) \
                    continue;                                                                         \
                out_algo = (int)(perf)[i_].algo;                                                      \
                out_time = (cc)->find ? (perf)[i_].time : -1.0f;                                      \
                out_ok = pass_ == 0 ? 1 : 2;                                                          \
            }                                                                                         \
    } while (0)

static conv_entry *get_entry(fdp_backend *be, fdp_conv_shape s, int op) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    fdp_cuda_conv *cc = cu->conv;
    for (int i = 0; i < cc->n; i++)
        if (cc->entries[i]->op == op && same_shape(cc->entries[i]->s, s)) return cc->entries[i];

    FDP_CHECK(s.k >= 1 && s.k % 2 == 1 && s.n > 0 && s.cin > 0 && s.cout > 0 && s.h > 0 && s.w > 0,
              "cuda conv: bad shape n=%d cin=%d cout=%d h=%d w=%d k=%d (k must be odd)", s.n, s.cin, s.cout, s.h,
              s.w, s.k);
    FDP_CHECK((int64_t)s.n * s.cin * s.h * s.w < INT32_MAX && (int64_t)s.n * s.cout * s.h * s.w < INT32_MAX,
              "cuda conv: tensor of more than 2^31 elements (n=%d cin=%d cout=%d h=%d w=%d); hint: smaller batches",
              s.n, s.cin, s.cout, s.h, s.w);
    conv_entry *e = fdp_xcalloc(1, sizeof *e);
    e->s = s;
    e->op = op;
    CUDNN_TRY(e, cudnnCreateTensorDescriptor, &e->xd);
    CUDNN_TRY(e, cudnnCreateTensorDescriptor, &e->yd);
    CUDNN_TRY(e, cudnnCreateTensorDescriptor, &e->bd);
    CUDNN_TRY(e, cudnnCreateFilterDescriptor, &e->wd);
    CUDNN_TRY(e, cudnnCreateConvolutionDescriptor, &e->cd);
    CUDNN_TRY(e, cudnnSetTensor4dDescriptor, e->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.n, s.cin, s.h, s.w);
    CUDNN_TRY(e, cudnnSetTensor4dDescriptor, e->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.n, s.cout, s.h, s.w);
    CUDNN_TRY(e, cudnnSetTensor4dDescriptor, e->bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, s.cout, 1, 1);
    CUDNN_TRY(e, cudnnSetFilter4dDescriptor, e->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.cout, s.cin, s.k, s.k);
    CUDNN_TRY(e, cudnnSetConvolution2dDescriptor, e->cd, s.k / 2, s.k / 2, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
              CUDNN_DATA_FLOAT);
    /* exact FP32 unless TF32 is allowed: set before the search so that only such
     * algorithms are offered, and again after (cuDNN may report DEFAULT_MATH) */
    cudnnMathType_t math = cc->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    CUDNN_TRY(e, cudnnSetConvolutionMathType, e->cd, math);

    int ok = 0, returned = 0;
    float t = -1.0f;
    cudnnMathType_t chosen_math = math;
    if (op == OP_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        if (cc->find)
            CUDNN_TRY(e, cudnnFindConvolutionForwardAlgorithm, cu->cudnn, e->xd, e->wd, e->cd, e->yd,
                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf);
        else
            CUDNN_TRY(e, cudnnGetConvolutionForwardAlgorithm_v7, cu->cudnn, e->xd, e->wd, e->cd, e->yd,
                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf);
        PICK_ALGO(cc, perf, returned, e->algo, t, ok);
        for (int i = 0; i < returned; i++)
            if ((int)perf[i].algo == e->algo && perf[i].status == CUDNN_STATUS_SUCCESS) {
                chosen_math = perf[i].mathType;
                break;
            }
    } else if (op == OP_BACKWARD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        if (cc->find)
            CUDNN_TRY(e, cudnnFindConvolutionBackwardDataAlgorithm, cu->cudnn, e->wd, e->yd, e->cd, e->xd,
                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf);
        else
            CUDNN_TRY(e, cudnnGetConvolutionBackwardDataAlgorithm_v7, cu->cudnn, e->wd, e->yd, e->cd, e->xd,
                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf);
        PICK_ALGO(cc, perf, returned, e->algo, t, ok);
        for (int i = 0; i < returned; i++)
            if ((int)perf[i].algo == e->algo && perf[i].status == CUDNN_STATUS_SUCCESS) {
                chosen_math = perf[i].mathType;
                break;
            }
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        if (cc->find)
            CUDNN_TRY(e, cudnnFindConvolutionBackwardFilterAlgorithm, cu->cudnn, e->xd, e->yd, e->cd, e->wd,
                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf);
        else
            CUDNN_TRY(e, cudnnGetConvolutionBackwardFilterAlgorithm_v7, cu->cudnn, e->xd, e->yd, e->cd, e->wd,
                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf);
        PICK_ALGO(cc, perf, returned, e->algo, t, ok);
        for (int i = 0; i < returned; i++)
            if ((int)perf[i].algo == e->algo && perf[i].status == CUDNN_STATUS_SUCCESS) {
                chosen_math = perf[i].mathType;
                break;
            }
    }
    if (!ok)
        cudnn_fail(__FILE__, __LINE__, CUDNN_STATUS_NOT_SUPPORTED,
                   cc->find ? "cudnnFindConvolution*Algorithm (no usable algorithm)"
                            : "cudnnGetConvolution*Algorithm_v7 (no usable algorithm)",
                   e);
    if (ok == 2)
        fdp_warn("cuda conv %s n=%d cin=%d cout=%d %dx%d k=%d: no deterministic cuDNN algorithm fits; using "
                 "algorithm %d (results may vary in the last bits between runs)",
                 op_names[op], s.n, s.cin, s.cout, s.h, s.w, s.k, e->algo);
    if (!cc->tf32) chosen_math = CUDNN_FMA_MATH;
    CUDNN_TRY(e, cudnnSetConvolutionMathType, e->cd, chosen_math);
    e->time_ms = t;

    size_t ws = 0;
    if (op == OP_FORWARD)
        CUDNN_TRY(e, cudnnGetConvolutionForwardWorkspaceSize, cu->cudnn, e->xd, e->wd, e->cd, e->yd,
                  (cudnnConvolutionFwdAlgo_t)e->algo, &ws);
    else if (op == OP_BACKWARD_DATA)
        CUDNN_TRY(e, cudnnGetConvolutionBackwardDataWorkspaceSize, cu->cudnn, e->wd, e->yd, e->cd, e->xd,
                  (cudnnConvolutionBwdDataAlgo_t)e->algo, &ws);
    else
        CUDNN_TRY(e, cudnnGetConvolutionBackwardFilterWorkspaceSize, cu->cudnn, e->xd, e->yd, e->cd, e->wd,
                  (cudnnConvolutionBwdFilterAlgo_t)e->algo, &ws);
    e->ws = ws;
    if (ws > cc->ws_cap) {
        fdp_cuda_raw_free(cu, cc->ws, cc->ws_cap);
        cc->ws = fdp_cuda_raw_alloc(cu, ws, "the cuDNN workspace");
        cc->ws_cap = ws;
    }
    if (cc->n == cc->cap) {
        cc->cap = cc->cap ? 2 * cc->cap : 32;
        cc->entries = fdp_xrealloc(cc->entries, sizeof *cc->entries * (size_t)cc->cap);
    }
    cc->entries[cc->n++] = e;
    fdp_debug("cuda conv %s n=%d cin=%d cout=%d %dx%d k=%d: algorithm %d (%s, %.3f ms), workspace %.1f MiB, math %d",
              op_names[op], s.n, s.cin, s.cout, s.h, s.w, s.k, e->algo, cc->find ? "find" : "heuristic",
              (double)e->time_ms, (double)ws / 1048576.0, (int)chosen_math);
    return e;
}

/* ---- the three convolutions --------------------------------------------------------------------- */
void fdp_cuda_conv_forward(fdp_backend *be, fdp_conv_shape s, const float *x, const float *w, const float *bias,
                           float *y, int accumulate) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    conv_entry *e = get_entry(be, s, OP_FORWARD);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUDNN_TRY(e, cudnnConvolutionForward, cu->cudnn, &one, e->xd, x, e->wd, w, e->cd,
              (cudnnConvolutionFwdAlgo_t)e->algo, cu->conv->ws, e->ws, &beta, e->yd, y);
    if (bias) CUDNN_TRY(e, cudnnAddTensor, cu->cudnn, &one, e->bd, bias, &one, e->yd, y);
    FDP_CUDA_DEBUG_SYNC(cu, "conv_forward");
}

void fdp_cuda_conv_backward_data(fdp_backend *be, fdp_conv_shape s, const float *dy, const float *w, float *dx,
                                 int accumulate) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    conv_entry *e = get_entry(be, s, OP_BACKWARD_DATA);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUDNN_TRY(e, cudnnConvolutionBackwardData, cu->cudnn, &one, e->wd, w, e->yd, dy, e->cd,
              (cudnnConvolutionBwdDataAlgo_t)e->algo, cu->conv->ws, e->ws, &beta, e->xd, dx);
    FDP_CUDA_DEBUG_SYNC(cu, "conv_backward_data");
}

void fdp_cuda_conv_backward_weights(fdp_backend *be, fdp_conv_shape s, const float *x, const float *dy, float *dw,
                                    float *dbias) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    conv_entry *e = get_entry(be, s, OP_BACKWARD_FILTER);
    const float one = 1.0f, zero = 0.0f;
    CUDNN_TRY(e, cudnnConvolutionBackwardFilter, cu->cudnn, &one, e->xd, x, e->yd, dy, e->cd,
              (cudnnConvolutionBwdFilterAlgo_t)e->algo, cu->conv->ws, e->ws, &zero, e->wd, dw);
    if (dbias) {
        /* sum of dy per output channel, in double, then rounded */
        double *acc = fdp_cuda_ensure_doubles(cu, &cu->dbias, &cu->dbias_cap, (size_t)s.cout, "the bias gradient");
        be->reduce_rows(be, dy, NULL, s.n, s.cout, (int64_t)s.h * s.w, acc);
        fdp_f64_to_f32_args a = {acc, dbias, 1.0};
        be->f64_to_f32(be, s.cout, &a);
    }
    FDP_CUDA_DEBUG_SYNC(cu, "conv_backward_weights");
}

/* ---- matmul ----------------------------------------------------------------------------------- */
void fdp_cuda_matmul(fdp_backend *be, int transa, int transb, int M, int N, int K, float alpha, const float *A,
                     const float *B, float beta, float *C) {
    fdp_cuda *cu = fdp_cuda_impl(be);
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        /* C = beta*C (C not read when beta == 0, as in BLAS) */
        if (beta == 0.0f) {
            be->memset0(be, C, sizeof(float) * (size_t)M * (size_t)N);
        } else {
            fdp_axpby_args a = {C, C, beta, 0.0f};
            be->axpby(be, (int64_t)M * N, &a);
        }
        return;
    }
    /* row-major X (r, c) with leading dimension c is column-major X^T (c, r) */
    int lda = transa ? M : K, ldb = transb ? K : N;
    cublasStatus_t st = cublasSgemm(cu->cublas, transb ? CUBLAS_OP_T : CUBLAS_OP_N, transa ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    N, M, K, &alpha, B, ldb, A, lda, &beta, C, N);
    if (st != CUBLAS_STATUS_SUCCESS) cublas_fail(__FILE__, __LINE__, st, "cublasSgemm", M, N, K);
    FDP_CUDA_DEBUG_SYNC(cu, "matmul");
}

#else
typedef int fdp_cuda_conv_built_without_cuda; /* (ISO C: no empty translation unit) */
#endif
