/* test_arena.c — the arena: alignment, marks, and no allocation once it has
 * learned a step's peak. */
#include <stdint.h>
#include <string.h>

#include "flowdp/arena.h"
#include "testutil.h"

static void test_alignment_and_reuse(void **state) {
    (void)state;
    fdp_arena *a = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    for (int step = 0; step < 3; step++) {
        fdp_arena_reset_all(a);
        for (int i = 0; i < 40; i++) {
            char *p = fdp_arena_alloc(a, 100000 + (size_t)i * 977);
            assert_int_equal((uintptr_t)p % 64, 0);
            memset(p, i, 100000);
        }
        if (step == 0) assert_true(fdp_arena_block_allocs(a) > 1); /* grew while learning */
    }
    int64_t allocs = fdp_arena_block_allocs(a);
    for (int step = 0; step < 3; step++) {
        fdp_arena_reset_all(a);
        for (int i = 0; i < 40; i++) fdp_arena_alloc(a, 100000 + (size_t)i * 977);
    }
    assert_int_equal(fdp_arena_block_allocs(a), allocs); /* no allocation in later steps */
    fdp_arena_destroy(a);
}

static void test_marks(void **state) {
    (void)state;
    fdp_arena *a = fdp_arena_create(1 << 20, NULL, NULL, NULL, FDP_DEVICE_CPU);
    float *x = fdp_arena_alloc(a, 1000);
    fdp_arena_mark m = fdp_arena_get_mark(a);
    float *y = fdp_arena_alloc(a, 1000);
    fdp_arena_reset(a, m);
    float *z = fdp_arena_alloc(a, 1000);
    assert_ptr_equal(y, z);
    assert_ptr_not_equal(x, z);
    fdp_tensor t = fdp_arena_tensor(a, 2, 3, 4, 5);
    assert_int_equal(fdp_numel(t), 120);
    fdp_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_reuse),
        cmocka_unit_test(test_marks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
