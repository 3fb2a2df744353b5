/* test_rng.c — Philox4x32-10 against the known-answer vectors of Random123
 * (kat_vectors, philox4x32 with 10 rounds), and the properties flowdp relies on. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "flowdp/backend.h"
#include "kernels/philox.h"
#include "testutil.h"

static void test_known_answers(void **state) {
    (void)state;
    static const uint32_t kat[3][10] = {
        /* ctr[4], key[2], expected[4] */
        {0, 0, 0, 0, 0, 0, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
        {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu,
         0xa20bc7c6u, 0x6d5451fdu},
        {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu,
         0x5001e420u, 0x24126ea1u},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        fdp_philox4x32_10(&kat[t][0], &kat[t][4], out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[t][6 + j]);
    }
}

static void test_uniform_and_normal_moments(void **state) {
    (void)state;
    const int64_t n = 200000;
    double su = 0, su2 = 0, sn = 0, sn2 = 0, umin = 1, umax = 0;
    for (int64_t e = 0; e < n; e++) {
        double u = fdp_philox_uniform(42, FDP_RNG_DEQUANT, 7, 3, (uint64_t)e);
        double z = fdp_philox_normal(42, FDP_RNG_PRIOR, 7, 3, (uint64_t)e);
        su += u; su2 += u * u; sn += z; sn2 += z * z;
        umin = fmin(umin, u); umax = fmax(umax, u);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(isfinite(z));
    }
    assert_true(fabs(su / n - 0.5) < 0.005);
    assert_true(fabs(su2 / n - 1.0 / 3.0) < 0.005);
    assert_true(fabs(sn / n) < 0.01);
    assert_true(fabs(sn2 / n - 1.0) < 0.01);
}

/* the stream depends on (seed, purpose, sample, epoch) and nothing else */
static void test_keying(void **state) {
    (void)state;
    float a = fdp_philox_uniform(1, FDP_RNG_DEQUANT, 100, 0, 5);
    assert_true(a == fdp_philox_uniform(1, FDP_RNG_DEQUANT, 100, 0, 5));
    assert_true(a != fdp_philox_uniform(2, FDP_RNG_DEQUANT, 100, 0, 5));
    assert_true(a != fdp_philox_uniform(1, FDP_RNG_AUGMENT, 100, 0, 5));
    assert_true(a != fdp_philox_uniform(1, FDP_RNG_DEQUANT, 101, 0, 5));
    assert_true(a != fdp_philox_uniform(1, FDP_RNG_DEQUANT, 100, 1, 5));
    assert_true(a != fdp_philox_uniform(1, FDP_RNG_DEQUANT, 100, 0, 6));
    assert_true(a != fdp_philox_uniform(1, FDP_RNG_DEQUANT, 100 + (1ull << 32), 0, 5));
}

/* the backend op fills rows by global sample index: a row's noise does not depend on its position in the batch */
static void test_backend_fill(void **state) {
    (void)state;
    fdp_backend *be = fdp_backend_cpu_create(2);
    const int64_t per = 50000;
    int64_t idx_a[3] = {10, 20, 30}, idx_b[2] = {30, 10};
    float *a = malloc(sizeof(float) * 3 * per), *b = malloc(sizeof(float) * 2 * per);
    fdp_philox_fill_args pa = {a, idx_a, per, 9, 2, FDP_RNG_DEQUANT, 0};
    fdp_philox_fill_args pb = {b, idx_b, per, 9, 2, FDP_RNG_DEQUANT, 0};
    be->philox_fill(be, 3 * per, &pa);
    be->philox_fill(be, 2 * per, &pb);
    for (int64_t e = 0; e < per; e++) {
        assert_true(a[2 * per + e] == b[e]);
        assert_true(a[e] == b[per + e]);
        assert_true(a[e] == fdp_philox_uniform(9, FDP_RNG_DEQUANT, 10, 2, (uint64_t)e));
    }
    free(a);
    free(b);
    fdp_backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_uniform_and_normal_moments),
        cmocka_unit_test(test_keying),
        cmocka_unit_test(test_backend_fill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
