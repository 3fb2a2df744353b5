/* params.c — the name table and its flat buffers. */
#include "flowdp/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"

void fdp_params_init(fdp_params *p) { memset(p, 0, sizeof *p); }

int fdp_params_add(fdp_params *p, const char *name, fdp_param_kind kind, int flags, int ndim, const int64_t *shape) {
    FDP_CHECK(p->params == NULL && p->buffers == NULL, "params: '%s' registered after finalize", name);
    FDP_CHECK(ndim >= 0 && ndim <= FDP_MAX_DIMS, "params: '%s' has %d dims", name, ndim);
    FDP_CHECK(strlen(name) < FDP_NAME_MAX, "params: name too long: %s", name);
    FDP_CHECK(fdp_params_find(p, name) < 0, "params: '%s' registered twice", name);
    if (p->count == p->capacity) {
        p->capacity = p->capacity ? 2 * p->capacity : 64;
        p->entries = fdp_xrealloc(p->entries, sizeof *p->entries * (size_t)p->capacity);
    }
    fdp_param_entry *e = &p->entries[p->count];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->kind = kind;
    e->flags = flags;
    e->ndim = ndim;
    e->numel = 1;
    for (int d = 0; d < ndim; d++) {
        e->shape[d] = shape[d];
        e->numel *= shape[d];
    }
    if (kind == FDP_PARAM) {
        e->offset = p->n_params;
        p->n_params += e->numel;
    } else {
        e->offset = p->n_buffers;
        p->n_buffers += e->numel;
    }
    return p->count++;
}

void fdp_params_finalize(fdp_params *p, fdp_backend *be) {
    p->be = be;
    size_t np = sizeof(float) * (size_t)(p->n_params ? p->n_params : 1);
    size_t nb = sizeof(float) * (size_t)(p->n_buffers ? p->n_buffers : 1);
    p->params = be->alloc(be, np);
    p->grads = be->alloc(be, np);
    p->buffers = be->alloc(be, nb);
    be->memset0(be, p->params, np);
    be->memset0(be, p->grads, np);
    be->memset0(be, p->buffers, nb);
}

void fdp_params_free(fdp_params *p) {
    if (p->be) {
        p->be->free(p->be, p->params);
        p->be->free(p->be, p->grads);
        p->be->free(p->be, p->buffers);
    }
    free(p->entries);
    memset(p, 0, sizeof *p);
}

int fdp_params_find(const fdp_params *p, const char *name) {
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->entries[i].name, name) == 0) return i;
    return -1;
}

float *fdp_params_data(const fdp_params *p, int index) {
    const fdp_param_entry *e = &p->entries[index];
    return (e->kind == FDP_PARAM ? p->params : p->buffers) + e->offset;
}

float *fdp_params_grad(const fdp_params *p, int index) {
    const fdp_param_entry *e = &p->entries[index];
    FDP_CHECK(e->kind == FDP_PARAM, "params: '%s' is a buffer and has no gradient", e->name);
    return p->grads + e->offset;
}
