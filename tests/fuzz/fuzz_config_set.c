/* fuzz_config_set.c — libFuzzer target: the --set section.key=value parser of
 * the config (src/io/config.c, fdp_config_set), applied to a fixed base config
 * (configs/tiny_test.ini's content) exactly as flowdp-train applies each --set.
 * The input is one assignment (up to the first newline; several assignments
 * separated by newlines are applied in order). An accepted assignment must keep
 * the config round-tripping through fdp_config_to_ini; refusals are one line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/config.h"
#include "flowdp/error.h"

static const char k_base[] =
    "; tiny_test.ini — a tiny RealNVP on the first 512 Fashion-MNIST images, for the\n"
    "; end-to-end tests (seconds per run even under the sanitizers).\n"
    "[model]\n"
    "type = realnvp\n"
    "num_scales = 2\n"
    "mid_channels = 4\n"
    "num_blocks = 1\n"
    "[data]\n"
    "format = idx\n"
    "train = /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz\n"
    "test = /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz\n"
    "train_limit = 512\n"
    "test_limit = 64\n"
    "[train]\n"
    "threads = 1\n"
    "batch_size = 8\n"
    "steps = 12\n"
    "lr = 1e-3\n"
    "weight_decay = 5e-5\n"
    "max_grad_norm = 100\n"
    "seed = 3\n"
    "eval_every = 6\n"
    "eval_batch_size = 32\n"
    "[checkpoint]\n"
    "dir = run/tiny\n"
    "every = 4\n"
    "keep_last = 3\n"
    "[log]\n"
    "every = 2\n"
    "progress = false\n";

static void check_one_line(const fdp_err *err) {
    if (!err->msg[0] || strchr(err->msg, '\n')) {
        fprintf(stderr, "fuzz_config_set: error message empty or not one line: '%s'\n", err->msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    fdp_config c;
    fdp_config_defaults(&c);
    fdp_err err = {{0}};
    if (fdp_config_load_string(&c, k_base, "base.ini", &err) != 0) {
        fprintf(stderr, "fuzz_config_set: the base config does not load: %s\n", err.msg);
        abort();
    }
    int applied = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        fdp_err serr = {{0}};
        if (fdp_config_set(&c, line, &serr) != 0) check_one_line(&serr);
        else applied++;
    }
    if (applied) {
        fdp_err verr = {{0}};
        if (fdp_config_validate(&c, &verr) != 0) check_one_line(&verr);
        char *ini = fdp_config_to_ini(&c);
        fdp_config d;
        fdp_config_defaults(&d);
        fdp_err rerr = {{0}};
        if (fdp_config_load_string(&d, ini, "roundtrip.ini", &rerr) != 0) {
            fprintf(stderr, "fuzz_config_set: the config's own INI does not load after --set: %s\n--- ini:\n%s\n",
                    rerr.msg, ini);
            abort();
        }
        if (!fdp_config_equal(&c, &d)) {
            fprintf(stderr, "fuzz_config_set: the round trip changed the config after --set\n--- ini:\n%s\n", ini);
            abort();
        }
        fdp_config_free(&d);
        free(ini);
    }
    fdp_config_free(&c);
    free(text);
    return 0;
}
