/* cpu_conv_ref.c — plain-C reference convolutions and matrix product, with
 * double accumulation. Slow and obviously right: the tests check the oneDNN path
 * against these. */
#include <string.h>

#include "backend/cpu/cpu_conv.h"

void fdp_conv_ref_forward(fdp_conv_shape s, const float *x, const float *w, const float *bias, float *y, int accumulate) {
    int p = s.k / 2;
    for (int n = 0; n < s.n; n++)
        for (int o = 0; o < s.cout; o++)
            for (int h = 0; h < s.h; h++)
                for (int ww = 0; ww < s.w; ww++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int c = 0; c < s.cin; c++)
                        for (int kh = 0; kh < s.k; kh++) {
                            int ih = h + kh - p;
                            if (ih < 0 || ih >= s.h) continue;
                            for (int kw = 0; kw < s.k; kw++) {
                                int iw = ww + kw - p;
                                if (iw < 0 || iw >= s.w) continue;
                                acc += (double)x[(((size_t)n * s.cin + c) * s.h + ih) * s.w + iw] *
                                       w[(((size_t)o * s.cin + c) * s.k + kh) * s.k + kw];
                            }
                        }
                    float *dst = &y[(((size_t)n * s.cout + o) * s.h + h) * s.w + ww];
                    *dst = accumulate ? *dst + (float)acc : (float)acc;
                }
}

void fdp_conv_ref_backward_data(fdp_conv_shape s, const float *dy, const float *w, float *dx, int accumulate) {
    int p = s.k / 2;
    for (int n = 0; n < s.n; n++)
        for (int c = 0; c < s.cin; c++)
            for (int ih = 0; ih < s.h; ih++)
                for (int iw = 0; iw < s.w; iw++) {
                    double acc = 0.0;
                    for (int o = 0; o < s.cout; o++)
                        for (int kh = 0; kh < s.k; kh++) {
                            int h = ih - kh + p;
                            if (h < 0 || h >= s.h) continue;
                            for (int kw = 0; kw < s.k; kw++) {
                                int ww = iw - kw + p;
                                if (ww < 0 || ww >= s.w) continue;
                                acc += (double)dy[(((size_t)n * s.cout + o) * s.h + h) * s.w + ww] *
                                       w[(((size_t)o * s.cin + c) * s.k + kh) * s.k + kw];
                            }
                        }
                    float *dst = &dx[(((size_t)n * s.cin + c) * s.h + ih) * s.w + iw];
                    *dst = accumulate ? *dst + (float)acc : (float)acc;
                }
}

void fdp_conv_ref_backward_weights(fdp_conv_shape s, const float *x, const float *dy, float *dw, float *dbias) {
    int p = s.k / 2;
    for (int o = 0; o < s.cout; o++) {
        if (dbias) {
            double b = 0.0;
            for (int n = 0; n < s.n; n++)
                for (int i = 0; i < s.h * s.w; i++) b += dy[((size_t)n * s.cout + o) * s.h * s.w + i];
            dbias[o] = (float)b;
        }
        for (int c = 0; c < s.cin; c++)
            for (int kh = 0; kh < s.k; kh++)
                for (int kw = 0; kw < s.k; kw++) {
                    double acc = 0.0;
                    for (int n = 0; n < s.n; n++)
                        for (int h = 0; h < s.h; h++) {
                            int ih = h + kh - p;
                            if (ih < 0 || ih >= s.h) continue;
                            for (int ww = 0; ww < s.w; ww++) {
                                int iw = ww + kw - p;
                                if (iw < 0 || iw >= s.w) continue;
                                acc += (double)dy[(((size_t)n * s.cout + o) * s.h + h) * s.w + ww] *
                                       x[(((size_t)n * s.cin + c) * s.h + ih) * s.w + iw];
                            }
                        }
                    dw[(((size_t)o * s.cin + c) * s.k + kh) * s.k + kw] = (float)acc;
                }
    }
}

void fdp_matmul_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A, const float *B,
                    float beta, float *C) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                float a = transa ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
                float b = transb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                acc += (double)a * b;
            }
            float r = alpha * (float)acc;
            C[(size_t)i * N + j] = beta == 0.0f ? r : r + beta * C[(size_t)i * N + j];
        }
}
