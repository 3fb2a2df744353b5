/* fuzz_checkpoint.c — libFuzzer target: the checkpoint loader (src/io/checkpoint_read.c)
 * on any bytes, written to a scratch file (the loader takes a path): verify, read
 * the header, list the sections, and load into a small table (fuzz_ckpt_table.h;
 * the seeds in corpus/checkpoint are valid checkpoints of that table written by
 * fuzz_ckpt_seeds). A refusal must be one line naming the file. A checkpoint that
 * loads must have passed the checksum, so it is one of the seeds' contents.
 * libhdf5 (Debian's, not instrumented) parses the file: see tests/fuzz/README.md for
 * what this target does and does not cover there. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/checkpoint.h"
#include "fuzz_ckpt_table.h"
#include "fuzz_util.h"

static void check_refusal(const fdp_err *err, const char *path) {
    if (!err->msg[0] || strchr(err->msg, '\n') || !strstr(err->msg, path)) {
        fprintf(stderr, "fuzz_checkpoint: refusal empty, not one line or not naming %s: '%s'\n", path, err->msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fdp_params table;
    static int have_table = 0;
    if (!have_table) {
        fuzz_ckpt_table(&table);
        have_table = 1;
    }
    const char *path = fuzz_write_file(0, data, size);
    fdp_ckpt_meta meta;
    fdp_err err = {{0}};
    if (fdp_ckpt_verify(path, &meta, &err) != 0) check_refusal(&err, path);

    char *config = NULL;
    fdp_err herr = {{0}};
    if (fdp_ckpt_read_header(path, &meta, &config, &herr) != 0) check_refusal(&herr, path);
    free(config);
    config = NULL;

    fdp_err serr = {{0}};
    int sections = fdp_ckpt_sections(path, &serr);
    if (sections < 0) {
        check_refusal(&serr, path);
        sections = 0;
    }
    size_t np = (size_t)table.n_params, nb = (size_t)table.n_buffers;
    float *h = calloc(4 * np + nb, sizeof(float));
    if (!h) return 0;
    fdp_ckpt_state s = {&table, h, h + 4 * np, (sections & FDP_CKPT_HAS_OPT_M) ? h + np : NULL,
                        (sections & FDP_CKPT_HAS_OPT_V) ? h + 2 * np : NULL,
                        (sections & FDP_CKPT_HAS_EMA) ? h + 3 * np : NULL};
    fdp_err lerr = {{0}};
    if (fdp_ckpt_load(path, &s, &meta, &config, &lerr) != 0) {
        check_refusal(&lerr, path);
    } else if (!config) {
        fprintf(stderr, "fuzz_checkpoint: loaded without a config text\n");
        abort();
    }
    free(config);
    free(h);
    return 0;
}
