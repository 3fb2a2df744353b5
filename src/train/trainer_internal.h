/* trainer_internal.h — what src/train/trainer.c (the loop) and src/train/train_io.c
 * (checkpoints, metrics, output places, one-line errors) share: the trainer's state
 * and the helpers of train_io.c. Not a public header. */
#ifndef FLOWDP_TRAINER_INTERNAL_H
#define FLOWDP_TRAINER_INTERNAL_H
#include <stdint.h>

#include "flowdp/arena.h"
#include "flowdp/buckets.h"
#include "flowdp/checkpoint.h"
#include "flowdp/comm.h"
#include "flowdp/config.h"
#include "flowdp/data.h"
#include "flowdp/loader.h"
#include "flowdp/metrics.h"
#include "flowdp/model.h"
#include "flowdp/nccl.h"
#include "flowdp/optim.h"
#include "flowdp/run.h"

typedef struct trainer {
    const fdp_config *cfg;
    fdp_comm *comm;
    int rank, world;
    fdp_run run;         /* backend, device communicator, model, optimizer, arena, buckets */
    fdp_source train, test; /* in memory (idx, cifar10) or streamed from shards (hdf5) */
    fdp_metrics *metrics;
    int metrics_failing; /* the last metrics write failed (warned once per streak) */
    int per_rank_batch;
    int64_t steps_per_epoch, total_steps, step;
    uint64_t seed;
    double best_bpd, last_bpd;
    int64_t nonfinite_skipped;
    char *config_text;
    char ckpt_dir[FDP_CONFIG_STR_MAX];
    int64_t last_ckpt_step;
} trainer;

double trn_now_s(void);
/* Collective: did any rank see bad input? The lowest such rank prints its message,
 * once for the whole job, as "flowdp-train: <message>" (the program then exits 2). */
int trn_any_bad(trainer *t, int bad, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Can files be created in dir? 0, or -1 with errno. */
int trn_probe_writable(const char *dir);
/* One metrics call on rank 0 under the HDF5 lock; failures warn once per streak. */
enum { MET_TRAIN_ROW, MET_TEST_ROW, MET_FLUSH };
void trn_metrics_call(trainer *t, int what, const double *v, int64_t nimg);
/* Rank 0 after a stop-signal checkpoint: <dir>/STOPPED (flowdp/trainer.h). */
void trn_write_stop_marker(trainer *t);
/* Rank 0 writes ckpt_<step>.h5 (and best.h5 when asked); every rank learns whether it
 * worked (1) or not (0). */
int trn_save_checkpoint(trainer *t, int also_best);
/* Load path into the model and optimizer (every rank). 0, or -1 with err. */
int trn_load_checkpoint(trainer *t, const char *path, fdp_err *err);
/* Rank 0: open (and write) the metrics file; 0, or -1 after one line. A path that is
 * one of the run's inputs (config, data, the checkpoint it resumes from) or a name
 * its checkpoints use is refused, even with force. */
int trn_open_metrics(trainer *t, int resumed, int force, const char *resume_path);
/* Rank 0, before the first step: ckpt_*.h5 and best.h5 in dir must be regular files,
 * and HDF5 files unless force (the run would replace them). 0, or -1 with msg. */
int trn_check_ckpt_dir(const char *dir, int force, char *msg, size_t len);

#endif
