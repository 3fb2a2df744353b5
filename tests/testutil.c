/* testutil.c — see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double tu_uniform(uint64_t *state, double lo, double hi) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * ((double)(z >> 11) / 9007199254740992.0);
}

void tu_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) x[i] = (float)tu_uniform(&s, lo, hi);
}

double tu_max_abs(const float *a, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

double tu_max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        m = fmax(m, d);
    }
    return m;
}

double tu_normwise_err(const float *a, const float *b, int64_t n, double floor) {
    double s = fmax(tu_max_abs(b, n), floor);
    return tu_max_abs_diff(a, b, n) / s;
}

const char *tu_fixture_dir(void) {
    const char *d = getenv("FLOWDP_FIXTURE_DIR");
    if (d && *d) return d;
    d = getenv("FLOWDP_FIXTURE_DIR_DEFAULT");
    if (d && *d) return d;
    return "../shared/fixtures";
}

char *tu_mkdtemp(char *buf, size_t len) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, len, "%s/flowdp-test-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(buf);
}

float *tu_rand_floats(int64_t n, uint64_t seed, float lo, float hi) {
    float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
    tu_fill_uniform(x, n, seed, lo, hi);
    return x;
}

double tu_lu_logabsdet(double *A, int n) {
    double s = 0.0;
    for (int k = 0; k < n; k++) {
        int piv = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(A[(size_t)i * n + k]) > fabs(A[(size_t)piv * n + k])) piv = i;
        if (A[(size_t)piv * n + k] == 0.0) return -INFINITY;
        if (piv != k)
            for (int j = 0; j < n; j++) {
                double t = A[(size_t)k * n + j];
                A[(size_t)k * n + j] = A[(size_t)piv * n + j];
                A[(size_t)piv * n + j] = t;
            }
        double d = A[(size_t)k * n + k];
        s += log(fabs(d));
        for (int i = k + 1; i < n; i++) {
            double f = A[(size_t)i * n + k] / d;
            if (f == 0.0) continue;
            for (int j = k + 1; j < n; j++) A[(size_t)i * n + j] -= f * A[(size_t)k * n + j];
        }
    }
    return s;
}

int tu_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}
