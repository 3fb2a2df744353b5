/* fuzz_config.c — libFuzzer target: the INI config loader (src/io/config.c).
 * Any text: load, validate, and when it loads, the round trip through
 * fdp_config_to_ini must load again to an equal config (an oracle beyond "no
 * crash"). Errors must be one line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/config.h"
#include "flowdp/error.h"

static void check_one_line(const fdp_err *err) {
    if (!err->msg[0] || strchr(err->msg, '\n')) {
        fprintf(stderr, "fuzz_config: error message empty or not one line: '%s'\n", err->msg);
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
    int rc = fdp_config_load_string(&c, text, "fuzz.ini", &err);
    if (rc != 0) {
        check_one_line(&err);
    } else {
        fdp_err verr = {{0}};
        if (fdp_config_validate(&c, &verr) != 0) check_one_line(&verr);
        char *ini = fdp_config_to_ini(&c);
        fdp_config d;
        fdp_config_defaults(&d);
        fdp_err rerr = {{0}};
        if (fdp_config_load_string(&d, ini, "roundtrip.ini", &rerr) != 0) {
            fprintf(stderr, "fuzz_config: the config's own INI does not load: %s\n--- input:\n%s\n--- ini:\n%s\n",
                    rerr.msg, text, ini);
            abort();
        }
        if (!fdp_config_equal(&c, &d)) {
            fprintf(stderr, "fuzz_config: the round trip changed the config\n--- input:\n%s\n--- ini:\n%s\n", text, ini);
            abort();
        }
        fdp_config_free(&d);
        free(ini);
    }
    /* a --set assignment from the first line */
    char *nl = strchr(text, '\n');
    if (nl) *nl = 0;
    fdp_err serr = {{0}};
    if (fdp_config_set(&c, text, &serr) != 0) check_one_line(&serr);
    fdp_config_free(&c);
    free(text);
    return 0;
}
