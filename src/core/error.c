/* error.c — one-line errors for bad input, fatal checks for broken invariants. */
#include "flowdp/error.h"
#include "flowdp/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static fdp_abort_hook g_abort_hook = NULL;

void fdp_set_abort_hook(fdp_abort_hook hook) { g_abort_hook = hook; }

int fdp_err_set(fdp_err *err, const char *fmt, ...) {
    if (!err) return -1;
    char raw[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    fdp_escape_line(err->msg, sizeof err->msg, raw);
    return -1;
}

void fdp_fatal_at(const char *file, int line, const char *fmt, ...) {
    char raw[1024], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    fdp_escape_line(msg, sizeof msg, raw);
    fprintf(stderr, "%s: fatal [rank %d] %s:%d: %s\n", fdp_log_prog(), fdp_log_rank(), file, line, msg);
    fflush(stderr);
    if (g_abort_hook) g_abort_hook(1);
    exit(1);
}

void *fdp_xmalloc_at(const char *file, int line, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fdp_fatal_at(file, line, "out of memory allocating %zu bytes; hint: reduce the batch or the model", bytes);
    return p;
}

void *fdp_xcalloc_at(const char *file, int line, size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fdp_fatal_at(file, line, "out of memory allocating %zu x %zu bytes; hint: reduce the batch or the model", n, size);
    return p;
}

void *fdp_xrealloc_at(const char *file, int line, void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) fdp_fatal_at(file, line, "out of memory reallocating %zu bytes", bytes);
    return q;
}
