/* arena.h — bump allocators for activations and scratch.
 *
 * A training step allocates everything it needs from an arena and releases it
 * all at once with fdp_arena_reset(). The arena grows by adding blocks while it
 * learns the step's peak (first step); at the next reset to the start it merges
 * them into one block of the peak size, so later steps call no malloc/free.
 * Memory comes from the backend's allocator (host or device). */
#ifndef FLOWDP_ARENA_H
#define FLOWDP_ARENA_H
#include <stddef.h>
#include <stdint.h>

#include "flowdp/tensor.h"

typedef struct fdp_arena fdp_arena;
typedef void *(*fdp_alloc_fn)(void *ctx, size_t bytes);
typedef void (*fdp_free_fn)(void *ctx, void *p);

typedef struct fdp_arena_mark {
    int block;     /* index of the current block */
    size_t offset; /* bytes used in it */
} fdp_arena_mark;

/* alloc/free NULL: host memory (64-byte aligned). */
fdp_arena *fdp_arena_create(size_t initial_bytes, fdp_alloc_fn alloc, fdp_free_fn free_fn, void *ctx, fdp_device dev);
void fdp_arena_destroy(fdp_arena *a);
void *fdp_arena_alloc(fdp_arena *a, size_t bytes); /* 64-byte aligned, uninitialized */
fdp_tensor fdp_arena_tensor(fdp_arena *a, int n, int c, int h, int w);
double *fdp_arena_doubles(fdp_arena *a, int64_t count);
fdp_arena_mark fdp_arena_get_mark(const fdp_arena *a);
void fdp_arena_reset(fdp_arena *a, fdp_arena_mark m);
static inline void fdp_arena_reset_all(fdp_arena *a) { fdp_arena_mark m = {0, 0}; fdp_arena_reset(a, m); }
size_t fdp_arena_peak(const fdp_arena *a);    /* largest total ever in use */
size_t fdp_arena_capacity(const fdp_arena *a); /* bytes held */
int64_t fdp_arena_block_allocs(const fdp_arena *a); /* how many times it called its allocator */

#endif
