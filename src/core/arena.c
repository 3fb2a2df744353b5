/* arena.c — block-chained bump allocator that consolidates to one block. */
#include "flowdp/arena.h"

#include <stdlib.h>
#include <string.h>

#include "flowdp/error.h"

#define ARENA_ALIGN 64
#define ARENA_MAX_BLOCKS 64

typedef struct arena_block {
    char *base;
    size_t size;
} arena_block;

struct fdp_arena {
    arena_block blocks[ARENA_MAX_BLOCKS];
    int nblocks;
    int cur;        /* block being filled */
    size_t offset;  /* bytes used in blocks[cur] */
    size_t used;    /* bytes in use over all blocks (incl. skipped tails) */
    size_t peak;
    int64_t block_allocs;
    fdp_alloc_fn alloc;
    fdp_free_fn free_fn;
    void *ctx;
    fdp_device dev;
};

static void *host_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, bytes) != 0) return NULL;
    return p;
}
static void host_free(void *ctx, void *p) { (void)ctx; free(p); }

static void add_block(fdp_arena *a, size_t size) {
    FDP_CHECK(a->nblocks < ARENA_MAX_BLOCKS, "arena: more than %d blocks; hint: give a larger initial size", ARENA_MAX_BLOCKS);
    void *p = a->alloc(a->ctx, size);
    FDP_CHECK(p != NULL, "arena: out of memory allocating a block of %zu MiB; hint: reduce the batch size", size >> 20);
    a->blocks[a->nblocks].base = p;
    a->blocks[a->nblocks].size = size;
    a->nblocks++;
    a->block_allocs++;
}

fdp_arena *fdp_arena_create(size_t initial_bytes, fdp_alloc_fn alloc, fdp_free_fn free_fn, void *ctx, fdp_device dev) {
    fdp_arena *a = fdp_xcalloc(1, sizeof *a);
    a->alloc = alloc ? alloc : host_alloc;
    a->free_fn = free_fn ? free_fn : host_free;
    a->ctx = ctx;
    a->dev = dev;
    if (initial_bytes < (1u << 20)) initial_bytes = 1u << 20;
    add_block(a, initial_bytes);
    return a;
}

void fdp_arena_destroy(fdp_arena *a) {
    if (!a) return;
    for (int i = 0; i < a->nblocks; i++) a->free_fn(a->ctx, a->blocks[i].base);
    free(a);
}

void *fdp_arena_alloc(fdp_arena *a, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    while (a->offset + need > a->blocks[a->cur].size) {
        /* the rest of this block is skipped; count it as used so peak is an upper bound */
        a->used += a->blocks[a->cur].size - a->offset;
        if (a->cur + 1 >= a->nblocks) {
            size_t grow = a->blocks[a->cur].size;
            if (grow < need) grow = need;
            add_block(a, grow);
        }
        a->cur++;
        a->offset = 0;
    }
    void *p = a->blocks[a->cur].base + a->offset;
    a->offset += need;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

fdp_tensor fdp_arena_tensor(fdp_arena *a, int n, int c, int h, int w) {
    fdp_tensor t = {NULL, n, c, h, w, a->dev};
    t.data = fdp_arena_alloc(a, sizeof(float) * (size_t)n * c * h * w);
    return t;
}

double *fdp_arena_doubles(fdp_arena *a, int64_t count) { return fdp_arena_alloc(a, sizeof(double) * (size_t)count); }

fdp_arena_mark fdp_arena_get_mark(const fdp_arena *a) {
    fdp_arena_mark m = {a->cur, a->offset};
    return m;
}

void fdp_arena_reset(fdp_arena *a, fdp_arena_mark m) {
    if (m.block == 0 && m.offset == 0 && a->nblocks > 1) {
        /* consolidate: one block as large as the peak, so the next step needs no allocation */
        size_t total = a->peak;
        for (int i = 0; i < a->nblocks; i++) a->free_fn(a->ctx, a->blocks[i].base);
        a->nblocks = 0;
        add_block(a, total + total / 16);
    }
    FDP_CHECK(m.block < a->nblocks, "arena: reset to a mark from a consolidated arena; hint: reset to the start first");
    a->cur = m.block;
    a->offset = m.offset;
    size_t used = m.offset;
    for (int i = 0; i < m.block; i++) used += a->blocks[i].size;
    a->used = used;
}

size_t fdp_arena_peak(const fdp_arena *a) { return a->peak; }
size_t fdp_arena_capacity(const fdp_arena *a) {
    size_t s = 0;
    for (int i = 0; i < a->nblocks; i++) s += a->blocks[i].size;
    return s;
}
int64_t fdp_arena_block_allocs(const fdp_arena *a) { return a->block_allocs; }
