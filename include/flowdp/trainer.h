/* trainer.h — the training loop of flowdp-train (data-parallel over MPI ranks).
 *
 * Exit codes of flowdp-train (also returned by fdp_train_run):
 *   0  FDP_EXIT_OK          finished
 *   1  FDP_EXIT_FATAL       internal error (a message names the rank and the cause)
 *   2  FDP_EXIT_BAD_INPUT   bad config, command line, dataset or checkpoint
 *   3  FDP_EXIT_REQUEUE     stopped by a signal after every rank checkpointed at the
 *                           same step: "checkpointed, please requeue"
 *   4  FDP_EXIT_NONFINITE   NaN/Inf in the loss or gradients ([train] on_nonfinite = stop);
 *                           nothing was written for that step
 *   5  FDP_EXIT_CKPT_FAILED a checkpoint write failed and [checkpoint] on_write_error = stop,
 *                           or the final or stop-signal checkpoint failed (any policy), or
 *                           the metrics file could not be written at the end (it then holds
 *                           the last version that was written; the checkpoints are intact)
 * On exit 3 rank 0 also leaves <[checkpoint] dir>/STOPPED (FDP_STOP_MARKER, two lines:
 * what happened, the checkpoint), for job scripts that cannot see the 3: mpiexec sent
 * SIGTERM returns 1 whatever its ranks returned. A run removes it when it starts.
 * Every output place (the checkpoint directory, the metrics file) is checked before
 * the first step: an unwritable one is exit 2 before any training.
 */
#ifndef FLOWDP_TRAINER_H
#define FLOWDP_TRAINER_H
#include "flowdp/comm.h"
#include "flowdp/config.h"

#define FDP_STOP_MARKER "STOPPED"

enum {
    FDP_EXIT_OK = 0,
    FDP_EXIT_FATAL = 1,
    FDP_EXIT_BAD_INPUT = 2,
    FDP_EXIT_REQUEUE = 3,
    FDP_EXIT_NONFINITE = 4,
    FDP_EXIT_CKPT_FAILED = 5,
};

typedef struct fdp_train_opts {
    const fdp_config *cfg;
    const char *resume;   /* "auto" (newest valid checkpoint in [checkpoint] dir, else start), "none", or a path */
    fdp_comm *comm;
    int force;            /* --force: a new run may replace a [log] metrics file that is not a flowdp metrics file */
} fdp_train_opts;

int fdp_train_run(const fdp_train_opts *o);

#endif
