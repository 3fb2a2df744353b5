/* params.h — parameters, buffers and gradients in flat buffers with a name table.
 *
 * A model registers every learnable parameter and every buffer (BatchNorm
 * running statistics, ...) by its PyTorch state_dict name while it is built;
 * then fdp_params_finalize() allocates ONE flat buffer for all parameters, one
 * for their gradients (same layout), and one for the buffers. Entries keep
 * registration order, which is the order of PyTorch's named_parameters(), so
 * gradients fill the flat buffer from the end while backward runs (buckets for
 * the all-reduce). Checkpoints, all-reduce, clipping and the optimizer walk this
 * table. */
#ifndef FLOWDP_PARAMS_H
#define FLOWDP_PARAMS_H
#include <stdint.h>

#include "flowdp/backend.h"

#define FDP_NAME_MAX 160
#define FDP_MAX_DIMS 4

typedef enum { FDP_PARAM = 0, FDP_BUFFER = 1 } fdp_param_kind;

enum {
    FDP_PFLAG_WEIGHT_DECAY = 1, /* receives weight decay (the notebook: weight-norm g) */
    FDP_PFLAG_COUNTER = 2,      /* an integer counter kept as float (num_batches_tracked) */
};

typedef struct fdp_param_entry {
    char name[FDP_NAME_MAX]; /* state_dict name, e.g. flows.in_couplings.0.st_net.in_conv.conv.weight_v */
    fdp_param_kind kind;
    int flags;
    int ndim;
    int64_t shape[FDP_MAX_DIMS];
    int64_t numel;
    int64_t offset;          /* in floats, into params/grads (FDP_PARAM) or buffers (FDP_BUFFER) */
} fdp_param_entry;

typedef struct fdp_params {
    fdp_param_entry *entries;
    int count, capacity;
    int64_t n_params;  /* floats in params and grads */
    int64_t n_buffers; /* floats in buffers */
    fdp_backend *be;   /* whose memory the flat buffers live in */
    float *params;     /* (n_params) */
    float *grads;      /* (n_params) */
    float *buffers;    /* (n_buffers) */
} fdp_params;

void fdp_params_init(fdp_params *p);
/* Register an entry; returns its index. shape has ndim entries (ndim 0 = scalar). */
int fdp_params_add(fdp_params *p, const char *name, fdp_param_kind kind, int flags, int ndim, const int64_t *shape);
/* Allocate the flat buffers on be (params and buffers zeroed). */
void fdp_params_finalize(fdp_params *p, fdp_backend *be);
void fdp_params_free(fdp_params *p);
/* Lookup by name; -1 when absent. */
int fdp_params_find(const fdp_params *p, const char *name);
/* Pointer to an entry's data (params or buffers) and to its gradient (params only). */
float *fdp_params_data(const fdp_params *p, int index);
float *fdp_params_grad(const fdp_params *p, int index);
/* Number of learnable parameters (floats) */
static inline int64_t fdp_params_count(const fdp_params *p) { return p->n_params; }

#endif
