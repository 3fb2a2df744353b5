/* evaluate.h — test-set bits per dimension, shared by the trainer and flowdp-eval.
 *
 * bpd of an image = (nll + D ln n_bins)/(D ln 2) where nll is in nats of the
 * continuous density (the models' nll already includes the -D ln n_bins term,
 * so bpd = nll/(D ln 2)). With K > 1 noise draws, the importance-weighted
 * estimate nll = -log( (1/K) sum_k exp(-nll_k) ) (log-mean-exp), a tighter bound.
 * Noise for draw k of sample i comes from Philox keyed (seed, FDP_RNG_EVAL, i, k):
 * the same on any number of ranks. Each rank evaluates a contiguous range and
 * the sums are reduced by the caller (one all-reduce at the end). */
#ifndef FLOWDP_EVALUATE_H
#define FLOWDP_EVALUATE_H
#include "flowdp/data.h"
#include "flowdp/loader.h"
#include "flowdp/model.h"

typedef struct fdp_eval_sums {
    double nll;      /* sum of per-image nll (nats) */
    double bpd;      /* sum of per-image bpd */
    double bpd_sq;   /* sum of squares of per-image bpd */
    double count;    /* images */
} fdp_eval_sums;

/* Evaluate images [begin, end) of d in evaluation mode (BatchNorm running
 * statistics), batch by batch, streamed through a range loader with `prefetch`
 * batches read ahead (0 = read in this thread); adds into *sums.
 * batch is clamped to end - begin (the images of this rank): a huge batch means
 * "all at once". Returns 0, or -1 with err (one line: the data does not fit the
 * model, out of memory for the batch); *sums is then partial. Note: the arena
 * itself still aborts (FDP_CHECK) when it cannot grow. */
int fdp_evaluate_range(fdp_model *m, fdp_backend *be, fdp_arena *arena, fdp_source *d, int64_t begin, int64_t end,
                       int batch, int prefetch, uint64_t seed, int draws, fdp_eval_sums *sums, fdp_err *err);
/* fdp_evaluate_range that ends the job (FDP_FATAL, one line) on error; kept for
 * callers that cannot report an error (prefer fdp_evaluate_range). */
void fdp_evaluate(fdp_model *m, fdp_backend *be, fdp_arena *arena, fdp_source *d, int64_t begin, int64_t end,
                  int batch, int prefetch, uint64_t seed, int draws, fdp_eval_sums *sums);
/* Mean and standard error of the mean of the per-image bpd. The standard error
 * needs at least 2 images: with fewer it is NAN (print "n/a", JSON null). */
void fdp_eval_summary(const fdp_eval_sums *s, double *bpd_mean, double *bpd_stderr, double *nll_mean);

#endif
