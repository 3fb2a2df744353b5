/* fuzz_shard_index.c — libFuzzer target: the shard index reader
 * (src/data/shard_index.c through fdp_shards_open). The input is the index
 * text; the shards it names do not exist (or are the index itself), so every
 * run ends in a refusal — the point is the parser: no crash, no leak, no read
 * outside the lines, and one error line naming the index (or, past the parser,
 * a shard path inside the index's directory: names must not escape it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/shards.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(0, data, size);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    fdp_shards *s = NULL;
    fdp_err err = {{0}};
    int rc = fdp_shards_open(path, data[0] & 1, size > 1 ? data[1] & 7 : 0, &s, &err);
    if (rc == 0) { /* only possible when the index names itself as an HDF5 shard: it is not one */
        fprintf(stderr, "fuzz_shard_index: a text file was accepted as its own shard\n");
        abort();
    }
    /* a message about a shard starts with the shard's path: inside dir, no ".." in it */
    const char *colon = strncmp(err.msg, path, strlen(path)) == 0 ? NULL : strstr(err.msg, ": ");
    int escapes = 0;
    /* a ".." component ("/../" or "/.." just before the colon); "/...x" is an ordinary name */
    for (const char *p = err.msg; colon && p + 3 <= colon; p++)
        if (p[0] == '/' && p[1] == '.' && p[2] == '.' && (p + 3 == colon || p[3] == '/')) escapes = 1;
    if (!err.msg[0] || strchr(err.msg, '\n') ||
        (strncmp(err.msg, path, strlen(path)) != 0 && strncmp(err.msg, dir, strlen(dir)) != 0) || escapes) {
        fprintf(stderr, "fuzz_shard_index: error message empty, not one line or not naming the index: '%s'\n", err.msg);
        abort();
    }
    return 0;
}
