/* testutil.h — helpers shared by the cmocka tests: cmocka includes, a
 * deterministic random fill, error measures, and where the fixtures are. */
#ifndef FLOWDP_TESTUTIL_H
#define FLOWDP_TESTUTIL_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* deterministic uniform in [lo, hi) from a 64-bit state (splitmix64) */
double tu_uniform(uint64_t *state, double lo, double hi);
void tu_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);
/* max |a-b| / max(max|b|, floor) */
double tu_normwise_err(const float *a, const float *b, int64_t n, double floor);
double tu_max_abs_diff(const float *a, const float *b, int64_t n);
double tu_max_abs(const float *a, int64_t n);
/* n uniform floats in [lo, hi) from seed, malloc'ed (at least one element) */
float *tu_rand_floats(int64_t n, uint64_t seed, float lo, float hi);
/* log|det A| of the n x n row-major matrix A (overwritten), LU with partial pivoting, in double */
double tu_lu_logabsdet(double *A, int n);
int tu_ends_with(const char *s, const char *suffix);
/* FLOWDP_FIXTURE_DIR, or the default the build passes in, or ../shared/fixtures */
const char *tu_fixture_dir(void);
/* a fresh empty directory under $TMPDIR (or /tmp); returns its path (static buffer per call site: copy it) */
char *tu_mkdtemp(char *buf, size_t len);

#endif
