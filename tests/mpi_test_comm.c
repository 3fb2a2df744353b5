/* mpi_test_comm.c — the communicator and the gradient buckets under MPI
 * (ctest runs it under `mpiexec -n 2`, and once alone as a singleton):
 * rank/size/local rank, all-reduce f32/f64/i64 with SUM/AVG/MAX/MIN on known
 * values, the >INT_MAX chunking (with a small test-only chunk), broadcast,
 * all-gather, fdp_comm_any, the checksum comparison naming the odd rank, XXH64
 * known answers, the synchronized-BatchNorm hook, and the gradient buckets:
 * entry-aligned boundaries covering the buffer once, and the bucketed average
 * equal bit for bit to a plain all-reduce, with and without every entry marked
 * ready, in rank-dependent marking orders.
 *
 * Every test uses only collectives that all ranks reach; a watchdog (60 s)
 * turns a mismatch after a failed assertion into an abort instead of a hang. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowdp/backend.h"
#include "flowdp/buckets.h"
#include "flowdp/comm.h"
#include "flowdp/nn.h"
#include "flowdp/params.h"
#include "testutil.h"

static fdp_comm *C; /* the process's communicator, for the tests */

/* exact equality of two numbers (float or double), printing both on failure */
#define assert_exact(a, b)                                                                      \
    do {                                                                                        \
        double a_ = (double)(a), b_ = (double)(b);                                              \
        if (a_ != b_) fail_msg("%s = %.17g, expected %s = %.17g", #a, a_, #b, b_);              \
    } while (0)

/* ---- who am I ---------------------------------------------------------------------- */

static void test_rank_size_local(void **state) {
    (void)state;
    assert_ptr_equal(fdp_comm_world(), C);
    assert_true(fdp_comm_size(C) >= 1);
    assert_true(fdp_comm_rank(C) >= 0 && fdp_comm_rank(C) < fdp_comm_size(C));
    assert_true(fdp_comm_local_size(C) >= 1 && fdp_comm_local_size(C) <= fdp_comm_size(C));
    assert_true(fdp_comm_local_rank(C) >= 0 && fdp_comm_local_rank(C) < fdp_comm_local_size(C));
    assert_true(strlen(fdp_comm_hostname(C)) > 0);
    /* local_size = number of ranks on my host; local ranks are 0..local_size-1 there */
    int n = fdp_comm_size(C);
    char *hosts = calloc((size_t)n, MPI_MAX_PROCESSOR_NAME);
    int *lr = calloc((size_t)n, sizeof *lr);
    char mine[MPI_MAX_PROCESSOR_NAME] = {0};
    snprintf(mine, sizeof mine, "%s", fdp_comm_hostname(C));
    fdp_comm_allgather(C, mine, hosts, MPI_MAX_PROCESSOR_NAME);
    int my_lr = fdp_comm_local_rank(C);
    fdp_comm_allgather(C, &my_lr, lr, sizeof my_lr);
    int same_host = 0, below = 0;
    for (int r = 0; r < n; r++)
        if (strcmp(hosts + (size_t)r * MPI_MAX_PROCESSOR_NAME, mine) == 0) {
            same_host++;
            if (r < fdp_comm_rank(C)) below++;
        }
    assert_int_equal(same_host, fdp_comm_local_size(C));
    assert_int_equal(below, fdp_comm_local_rank(C)); /* split key = world rank: ordered by rank */
    free(hosts);
    free(lr);
}

/* ---- all-reduce --------------------------------------------------------------------- */

enum { NRED = 37 };

static void test_allreduce_f32(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    for (fdp_reduce_op op = FDP_REDUCE_SUM; op <= FDP_REDUCE_MIN; op++) {
        float buf[NRED], want[NRED];
        for (int i = 0; i < NRED; i++) {
            buf[i] = (float)(R + 1) + 0.25f * (float)i;
            float sum = 0, mx = -INFINITY, mn = INFINITY;
            for (int r = 0; r < S; r++) {
                float v = (float)(r + 1) + 0.25f * (float)i;
                sum += v;
                mx = fmaxf(mx, v);
                mn = fminf(mn, v);
            }
            want[i] = op == FDP_REDUCE_SUM ? sum : op == FDP_REDUCE_AVG ? sum / (float)S : op == FDP_REDUCE_MAX ? mx : mn;
        }
        fdp_comm_allreduce_f32(C, buf, NRED, op);
        for (int i = 0; i < NRED; i++) assert_exact(buf[i], want[i]);
    }
}

static void test_allreduce_f64(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    for (fdp_reduce_op op = FDP_REDUCE_SUM; op <= FDP_REDUCE_MIN; op++) {
        double buf[NRED], want[NRED];
        for (int i = 0; i < NRED; i++) {
            /* rank 1 holds the largest value at even i and the smallest at odd i */
            buf[i] = (i % 2 ? -1.0 : 1.0) * (R + 0.5) * 1e10 + i;
            double sum = 0, mx = -INFINITY, mn = INFINITY;
            for (int r = 0; r < S; r++) {
                double v = (i % 2 ? -1.0 : 1.0) * (r + 0.5) * 1e10 + i;
                sum += v;
                mx = fmax(mx, v);
                mn = fmin(mn, v);
            }
            want[i] = op == FDP_REDUCE_SUM ? sum : op == FDP_REDUCE_AVG ? sum / S : op == FDP_REDUCE_MAX ? mx : mn;
        }
        fdp_comm_allreduce_f64(C, buf, NRED, op);
        for (int i = 0; i < NRED; i++) assert_exact(buf[i], want[i]);
    }
}

static void test_allreduce_i64(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    for (fdp_reduce_op op = FDP_REDUCE_SUM; op <= FDP_REDUCE_MIN; op++) {
        int64_t buf[NRED], want[NRED];
        for (int i = 0; i < NRED; i++) {
            /* above 2^32 so that a 32-bit path would show; odd sums test AVG truncation */
            buf[i] = ((int64_t)R + 1) * 5000000000LL * (i % 3 == 1 ? -1 : 1) + i + R;
            int64_t sum = 0, mx = INT64_MIN, mn = INT64_MAX;
            for (int r = 0; r < S; r++) {
                int64_t v = ((int64_t)r + 1) * 5000000000LL * (i % 3 == 1 ? -1 : 1) + i + r;
                sum += v;
                mx = v > mx ? v : mx;
                mn = v < mn ? v : mn;
            }
            want[i] = op == FDP_REDUCE_SUM ? sum : op == FDP_REDUCE_AVG ? sum / S : op == FDP_REDUCE_MAX ? mx : mn;
        }
        fdp_comm_allreduce_i64(C, buf, NRED, op);
        for (int i = 0; i < NRED; i++) assert_true(buf[i] == want[i]);
    }
}

/* The >INT_MAX path: the same code with a chunk of 7 elements (bytes for
 * broadcast / allgather), so that 1000 elements take 143 calls, the last short. */
static void test_chunking(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    fdp_comm_set_max_chunk_for_test(C, 7);
    assert_int_equal(C->max_chunk, 7);
    enum { N = 1000 };
    float *f = malloc(N * sizeof *f);
    double *d = malloc(N * sizeof *d);
    int64_t *q = malloc(N * sizeof *q);
    for (int i = 0; i < N; i++) f[i] = (float)(R * N + i), d[i] = R * 0.5 + i, q[i] = (int64_t)R << 40 | i;
    fdp_comm_allreduce_f32(C, f, N, FDP_REDUCE_SUM);
    fdp_comm_allreduce_f64(C, d, N, FDP_REDUCE_MAX);
    fdp_comm_allreduce_i64(C, q, N, FDP_REDUCE_SUM);
    int64_t rsum = (int64_t)S * (S - 1) / 2;
    for (int i = 0; i < N; i++) {
        assert_exact(f[i], (float)(rsum * N + (int64_t)S * i));
        assert_exact(d[i], (S - 1) * 0.5 + i);
        assert_true(q[i] == (rsum << 40) + (int64_t)S * i);
    }
    /* broadcast 1001 bytes from the last rank */
    unsigned char *bytes = malloc(1001);
    for (int i = 0; i < 1001; i++) bytes[i] = (unsigned char)(R == S - 1 ? i * 7 + 3 : 0xEE);
    fdp_comm_broadcast(C, bytes, 1001, S - 1);
    for (int i = 0; i < 1001; i++) assert_int_equal(bytes[i], (unsigned char)(i * 7 + 3));
    /* allgather 50 bytes each through the resized-type path, then in place */
    unsigned char send[50], *recv = malloc((size_t)S * 50);
    for (int i = 0; i < 50; i++) send[i] = (unsigned char)(R * 50 + i);
    fdp_comm_allgather(C, send, recv, 50);
    for (int r = 0; r < S; r++)
        for (int i = 0; i < 50; i++) assert_int_equal(recv[r * 50 + i], (unsigned char)(r * 50 + i));
    memset(recv, 0, (size_t)S * 50);
    memcpy(recv + R * 50, send, 50);
    fdp_comm_allgather(C, recv + R * 50, recv, 50);
    for (int r = 0; r < S; r++)
        for (int i = 0; i < 50; i++) assert_int_equal(recv[r * 50 + i], (unsigned char)(r * 50 + i));
    fdp_comm_set_max_chunk_for_test(C, 0);
    assert_int_equal(C->max_chunk, INT_MAX);
    free(f);
    free(d);
    free(q);
    free(bytes);
    free(recv);
}

/* ---- broadcast, allgather, barrier ---------------------------------------------------------- */

static void test_broadcast_allgather(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    for (int root = 0; root < S; root++) {
        double v[5];
        for (int i = 0; i < 5; i++) v[i] = R == root ? root * 100.0 + i : -1.0;
        fdp_comm_broadcast(C, v, sizeof v, root);
        for (int i = 0; i < 5; i++) assert_exact(v[i], root * 100.0 + i);
    }
    int64_t mine[3] = {R * 10, R * 10 + 1, R * 10 + 2};
    int64_t *all = malloc(sizeof *all * 3 * (size_t)S);
    fdp_comm_allgather(C, mine, all, sizeof mine);
    for (int r = 0; r < S; r++)
        for (int j = 0; j < 3; j++) assert_true(all[r * 3 + j] == r * 10 + j);
    free(all);
    fdp_comm_barrier(C);
}

/* ---- agreement ----------------------------------------------------------------------------- */

static void test_any(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    assert_int_equal(fdp_comm_any(C, 0), 0);
    assert_int_equal(fdp_comm_any(C, 1), 1);
    assert_int_equal(fdp_comm_any(C, R == S - 1 ? 42 : 0), 1); /* only the last rank "got SIGTERM" */
    assert_int_equal(fdp_comm_any(C, R == 0), 1);
}

static void test_check_same(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    int bad = 123;
    assert_int_equal(fdp_comm_check_same_u64(C, 0xDEADBEEFCAFEF00DULL, &bad), 1);
    assert_int_equal(bad, -1);
    /* the last rank's parameters diverged */
    uint64_t v = R == S - 1 && S > 1 ? 0x1111 : 0x2222;
    int same = fdp_comm_check_same_u64(C, v, &bad);
    if (S == 1) {
        assert_int_equal(same, 1);
        assert_int_equal(bad, -1);
    } else {
        assert_int_equal(same, 0);
        assert_int_equal(bad, S - 1);
    }
    /* the checksum of equal data is equal everywhere; a one-bit change is caught */
    float x[1000];
    tu_fill_uniform(x, 1000, 7, -1, 1);
    if (R == S - 1 && S > 1) x[500] = nextafterf(x[500], 2.0f);
    same = fdp_comm_check_same_u64(C, fdp_checksum_f32(x, 1000), &bad);
    assert_int_equal(same, S == 1);
    if (S > 1) assert_int_equal(bad, S - 1);
}

static void test_xxh64_known_answers(void **state) {
    (void)state;
    /* the reference XXH64 (seed 0) vectors published with xxHash and its bindings */
    assert_true(fdp_xxh64("", 0, 0) == 0xEF46DB3751D8E999ULL);
    assert_true(fdp_xxh64("a", 1, 0) == 0xD24EC4F1A98C6E5BULL);
    assert_true(fdp_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
    const char *s = "Nobody inspects the spammish repetition"; /* 39 bytes: stripes + tail */
    assert_true(fdp_xxh64(s, strlen(s), 0) == 0xFBCEA83C8A378BF1ULL);
    const char *fox = "The quick brown fox jumps over the lazy dog";
    assert_true(fdp_xxh64(fox, strlen(fox), 0) == 0x0B242D361FDA71BCULL);
    char a32[32];
    memset(a32, 'a', 32);
    assert_true(fdp_xxh64(a32, 32, 0) == 0x856E843298F99AD7ULL);
    /* a long input and a seed, values from the independent one-shot implementation that
     * passed the vectors above before flowdp had one XXH64; then the streaming path fed
     * in uneven pieces (buffered tails, stripes split across calls) gives the same */
    unsigned char b[1000];
    for (int i = 0; i < 1000; i++) b[i] = (unsigned char)(i * 7 + 3);
    assert_true(fdp_xxh64(b, 1000, 0) == 0x5f235fa033f1a3fbULL);
    assert_true(fdp_xxh64(b, 1000, 0x9E3779B97F4A7C15ULL) == 0x442acd0a822e86f6ULL);
    static const size_t pieces[] = {1, 3, 7, 31, 32, 33, 64, 5, 0, 95, 200};
    fdp_xxh64_state st;
    fdp_xxh64_init(&st, 0x9E3779B97F4A7C15ULL);
    size_t off = 0;
    for (size_t k = 0; off < 1000; k++) {
        size_t m = pieces[k % (sizeof pieces / sizeof pieces[0])];
        if (m > 1000 - off) m = 1000 - off;
        fdp_xxh64_update(&st, b + off, m);
        off += m;
    }
    assert_true(fdp_xxh64_digest(&st) == 0x442acd0a822e86f6ULL);
    /* fdp_checksum_f32 = XXH64 of the bytes; deterministic; sensitive to every float */
    float x[4099];
    tu_fill_uniform(x, 4099, 11, -3, 3);
    uint64_t h = fdp_checksum_f32(x, 4099);
    assert_true(h == fdp_xxh64(x, sizeof x, 0));
    assert_true(h == fdp_checksum_f32(x, 4099));
    for (int i = 0; i < 4099; i += 97) {
        float keep = x[i];
        x[i] = -x[i];
        assert_true(fdp_checksum_f32(x, 4099) != h);
        x[i] = keep;
    }
    assert_true(fdp_checksum_f32(x, 4098) != h);
}

static void test_sync_bn_hook(void **state) {
    (void)state;
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    /* used exactly as batchnorm.c does: ctx.allreduce_f64(ctx.comm, sums, 2 * C) */
    fdp_ctx ctx = {0};
    ctx.allreduce_f64 = fdp_comm_allreduce_f64_sum_hook; /* nn.h's fdp_allreduce_f64_fn */
    ctx.comm = C;
    ctx.world_size = S;
    double buf[6];
    for (int i = 0; i < 6; i++) buf[i] = R + 0.5 * i;
    ctx.allreduce_f64(ctx.comm, buf, 6);
    for (int i = 0; i < 6; i++) assert_exact(buf[i], S * (S - 1) / 2.0 + S * 0.5 * i);
    for (int i = 0; i < 6; i++) buf[i] = 1.0;
    ctx.allreduce_f64(NULL, buf, 6); /* NULL: the world communicator */
    for (int i = 0; i < 6; i++) assert_exact(buf[i], (double)S);
}

static void test_watchdog_quiet_when_progressing(void **state) {
    (void)state;
    /* armed at 60 s by main; with a short timeout, quick collectives and long work
     * outside any collective must not fire (the firing is tested by mpi_test_abort) */
    fdp_comm_watchdog_start(C, 1.5);
    fdp_comm_set_phase(C, "watchdog quiet test");
    for (int i = 0; i < 10; i++) {
        fdp_comm_barrier(C);
        fdp_comm_watchdog_kick(C);
    }
    struct timespec ts = {2, 0}; /* 2 s > timeout, but outside any collective */
    nanosleep(&ts, NULL);
    fdp_comm_barrier(C);
    fdp_comm_watchdog_start(C, 60.0);
    fdp_comm_set_phase(C, "mpi_test_comm");
}

/* ---- gradient buckets ---------------------------------------------------------------------- */

/* A table like a model's: parameters of many sizes with buffers in between and
 * one empty parameter. */
static fdp_backend *BE;

static void make_params(fdp_params *p) {
    fdp_params_init(p);
    static const int64_t sizes[] = {64, 3, 1000, 1, 257, 4096, 31, 700, 700, 12, 5000, 2, 129, 0, 333, 90};
    char name[64];
    for (int i = 0; i < (int)(sizeof sizes / sizeof sizes[0]); i++) {
        snprintf(name, sizeof name, "layers.%d.weight", i);
        int64_t shape[1] = {sizes[i]};
        fdp_params_add(p, name, FDP_PARAM, 0, 1, shape);
        if (i % 4 == 1) {
            snprintf(name, sizeof name, "layers.%d.running_mean", i);
            fdp_params_add(p, name, FDP_BUFFER, 0, 1, shape);
        }
    }
    fdp_params_finalize(p, BE);
}

static void test_bucket_layout(void **state) {
    (void)state;
    fdp_params p;
    make_params(&p);
    const double mbs[] = {1e-9, 0.001, 0.004, 0.02, 25.0};
    for (int m = 0; m < 5; m++) {
        fdp_buckets *b = fdp_buckets_create(C, &p, mbs[m]);
        const int64_t target = (int64_t)(mbs[m] * 1024 * 1024 / 4) > 0 ? (int64_t)(mbs[m] * 1024 * 1024 / 4) : 1;
        int64_t end = p.n_params;
        int n_param_entries = 0;
        for (int i = 0; i < p.count; i++) n_param_entries += p.entries[i].kind == FDP_PARAM && p.entries[i].numel > 0;
        int seen_entries = 0;
        for (int k = 0; k < fdp_buckets_count(b); k++) {
            const fdp_bucket *bk = fdp_buckets_get(b, k);
            /* reverse order, contiguous, no gap, no overlap */
            assert_true(bk->offset + bk->count == end);
            assert_true(bk->count > 0);
            end = bk->offset;
            /* entry aligned: starts at its first entry, ends at its last entry's end */
            assert_true(p.entries[bk->first_entry].offset == bk->offset);
            assert_true(p.entries[bk->last_entry].offset + p.entries[bk->last_entry].numel == bk->offset + bk->count);
            int members = 0;
            for (int i = bk->first_entry; i <= bk->last_entry; i++)
                if (p.entries[i].kind == FDP_PARAM && p.entries[i].numel > 0) {
                    assert_int_equal(b->entry_bucket[i], k);
                    members++;
                }
            assert_int_equal(members, bk->n_entries);
            seen_entries += members;
            /* about bucket_mb: every bucket but the last reaches the target, and
             * would be below it without its last-added (lowest) entry */
            if (k < fdp_buckets_count(b) - 1) {
                assert_true(bk->count >= target);
                assert_true(bk->count - p.entries[bk->first_entry].numel < target);
            }
        }
        assert_true(end == 0);
        assert_int_equal(seen_entries, n_param_entries);
        for (int i = 0; i < p.count; i++)
            if (p.entries[i].kind != FDP_PARAM || p.entries[i].numel == 0) assert_int_equal(b->entry_bucket[i], -1);
        if (m == 0) assert_int_equal(fdp_buckets_count(b), n_param_entries); /* one entry each */
        if (m == 4) assert_int_equal(fdp_buckets_count(b), 1);
        fdp_buckets_destroy(b);
    }
    fdp_params_free(&p);
}

/* fill this rank's gradients, compute the expected global mean with one plain
 * all-reduce, then run a bucketed step marking `mark` entries in the given order */
static void bucketed_step_matches(fdp_buckets *b, fdp_params *p, uint64_t seed, const int *order, int n_order,
                                  int progress) {
    const int R = fdp_comm_rank(C), S = fdp_comm_size(C);
    tu_fill_uniform(p->grads, p->n_params, seed * 1000 + (uint64_t)R, -1, 1);
    float *want = malloc(sizeof *want * (size_t)p->n_params);
    memcpy(want, p->grads, sizeof *want * (size_t)p->n_params);
    fdp_comm_allreduce_f32(C, want, p->n_params, FDP_REDUCE_SUM);
    const float scale = 1.0f / (float)S;
    for (int64_t i = 0; i < p->n_params; i++) want[i] *= scale;

    fdp_buckets_begin_step(b);
    for (int j = 0; j < n_order; j++) {
        fdp_buckets_mark_ready(b, order[j]);
        if (progress) fdp_buckets_progress(b);
    }
    fdp_buckets_wait_all(b, scale);
    assert_true(fdp_buckets_last_wait_s(b) >= 0.0);
    assert_memory_equal(p->grads, want, sizeof *want * (size_t)p->n_params); /* bit for bit */
    free(want);
}

static void run_bucket_equivalence(double bucket_mb) {
    const int R = fdp_comm_rank(C);
    fdp_params p;
    make_params(&p);
    fdp_buckets *b = fdp_buckets_create(C, &p, bucket_mb);
    int *order = malloc(sizeof *order * (size_t)p.count);

    /* 1: backward order (last entry first), progress between "layers" */
    for (int j = 0; j < p.count; j++) order[j] = p.count - 1 - j;
    bucketed_step_matches(b, &p, 1, order, p.count, 1);
    /* 2: again (the step state resets), without progress calls */
    bucketed_step_matches(b, &p, 2, order, p.count, 0);
    /* 3: forward order: every bucket waits for bucket 0, whose last entry comes last */
    for (int j = 0; j < p.count; j++) order[j] = j;
    bucketed_step_matches(b, &p, 3, order, p.count, 1);
    /* 4: some entries never marked (every third skipped), and the marking order
     * differs between ranks: starts still happen in bucket order everywhere */
    int n = 0;
    for (int j = 0; j < p.count; j++)
        if (j % 3 != 1) order[n++] = R % 2 ? j : p.count - 1 - j;
    bucketed_step_matches(b, &p, 4, order, n, 1);
    /* 5: nothing marked at all: wait_all starts everything */
    bucketed_step_matches(b, &p, 5, order, 0, 0);
    /* 6: only the first entry marked: its bucket is the last, so nothing starts early */
    order[0] = 0;
    bucketed_step_matches(b, &p, 6, order, 1, 1);

    free(order);
    fdp_buckets_destroy(b);
    fdp_params_free(&p);
}

static void test_buckets_equal_plain_allreduce(void **state) {
    (void)state;
    run_bucket_equivalence(0.004); /* ~1000 floats: several buckets */
    run_bucket_equivalence(1e-9);  /* one bucket per entry */
    run_bucket_equivalence(25.0);  /* one bucket */
}

static void test_buckets_chunked_requests(void **state) {
    (void)state;
    /* buckets above the per-call limit are all-reduced in several requests */
    fdp_comm_set_max_chunk_for_test(C, 100);
    fdp_params p;
    make_params(&p);
    fdp_buckets *b = fdp_buckets_create(C, &p, 0.01);
    int multi = 0;
    for (int k = 0; k < fdp_buckets_count(b); k++) multi |= fdp_buckets_get(b, k)->n_req > 1;
    assert_true(multi);
    int *order = malloc(sizeof *order * (size_t)p.count);
    for (int j = 0; j < p.count; j++) order[j] = p.count - 1 - j;
    bucketed_step_matches(b, &p, 7, order, p.count, 1);
    free(order);
    fdp_buckets_destroy(b);
    fdp_params_free(&p);
    fdp_comm_set_max_chunk_for_test(C, 0);
}

static void test_buckets_scale_only(void **state) {
    (void)state;
    /* identical gradients on every rank: the average is the gradient itself */
    fdp_params p;
    make_params(&p);
    fdp_buckets *b = fdp_buckets_create(C, &p, 0.004);
    for (int64_t i = 0; i < p.n_params; i++) p.grads[i] = 0.5f * (float)(i % 17);
    fdp_buckets_begin_step(b);
    fdp_buckets_wait_all(b, 1.0f / (float)fdp_comm_size(C));
    for (int64_t i = 0; i < p.n_params; i++) assert_exact(p.grads[i], 0.5f * (float)(i % 17));
    fdp_buckets_destroy(b);
    fdp_params_free(&p);
}

int main(int argc, char **argv) {
    fdp_err err = {{0}};
    if (fdp_comm_init(&argc, &argv, &C, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    fdp_comm_watchdog_start(C, 60.0);
    fdp_comm_set_phase(C, "mpi_test_comm");
    BE = fdp_backend_cpu_create(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_size_local),
        cmocka_unit_test(test_allreduce_f32),
        cmocka_unit_test(test_allreduce_f64),
        cmocka_unit_test(test_allreduce_i64),
        cmocka_unit_test(test_chunking),
        cmocka_unit_test(test_broadcast_allgather),
        cmocka_unit_test(test_any),
        cmocka_unit_test(test_check_same),
        cmocka_unit_test(test_xxh64_known_answers),
        cmocka_unit_test(test_sync_bn_hook),
        cmocka_unit_test(test_watchdog_quiet_when_progressing),
        cmocka_unit_test(test_bucket_layout),
        cmocka_unit_test(test_buckets_equal_plain_allreduce),
        cmocka_unit_test(test_buckets_chunked_requests),
        cmocka_unit_test(test_buckets_scale_only),
    };
    char group[64];
    snprintf(group, sizeof group, "mpi_test_comm[rank %d/%d]", fdp_comm_rank(C), fdp_comm_size(C));
    int failed = _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], NULL, NULL);
    /* every rank reports the job's outcome */
    int any_failed = fdp_comm_any(C, failed != 0);
    fdp_backend_destroy(BE);
    fdp_comm_finalize(C);
    return any_failed ? 1 : 0;
}
