/* shards_internal.h — private to src/data/shards.c, shard_index.c and
 * shard_write.c: the reader's tables and small file-system helpers. */
#ifndef FLOWDP_SHARDS_INTERNAL_H
#define FLOWDP_SHARDS_INTERNAL_H
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flowdp/error.h"
#include "flowdp/shards.h"

#define SH_PATH_MAX 4096

typedef struct shard {
    char *path;
    int64_t count, first; /* samples, global index of the first */
    hid_t file, images;   /* -1 when closed */
    uint64_t last_used;
} shard;

struct fdp_shards {
    char index[SH_PATH_MAX];
    int h, w, c;
    int64_t n;        /* samples after the limit */
    int nshards;      /* shards holding samples [0, n) */
    shard *s;
    int open_count;
    uint64_t tick;
    uint8_t *buf;     /* (run of up to BUF_IMAGES, h, w, c) staging for reads */
    int64_t buf_images;
    int64_t *order;   /* (cap) sort scratch */
    int order_cap;
};


/* the directory part of path ("." when there is none) */
static inline void dir_of(const char *path, char *out, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, len, ".");
    else if (slash == path)
        snprintf(out, len, "/");
    else
        snprintf(out, len, "%.*s", (int)(slash - path), path);
}

/* Parse the index at path: shape into s->h/w/c, the shards (paths resolved
 * against the index's directory, first = running sum) into *out (malloc'd). */
int fdp_shards_parse_index(fdp_shards *s, const char *path, shard **out, int *n_out, fdp_err *err);

#endif
