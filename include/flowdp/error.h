/* error.h — errors and check macros.
 *
 * Two kinds of failure:
 *  - bad input (config, dataset, checkpoint, command line): functions return -1
 *    and fill an fdp_err with ONE line naming the file and what is wrong; the
 *    caller decides (print and exit cleanly, fall back, ...).
 *  - broken invariants / failed library calls: FDP_CHECK aborts the whole job
 *    with file:line, the message and a hint. Under MPI the abort hook set by
 *    src/dist ends every rank (MPI_Abort) so that nothing hangs.
 */
#ifndef FLOWDP_ERROR_H
#define FLOWDP_ERROR_H
#include <stddef.h>

typedef struct fdp_err {
    char msg[4096]; /* one line, no trailing newline; empty when no error (room for a PATH_MAX path) */
} fdp_err;

/* Fill err (if not NULL) with a printf-formatted one-line message; returns -1 so
 * that `return fdp_err_set(err, ...)` reads naturally. Control characters in the
 * result (a newline in a file name, say) are written as \n, \r, \t or \xHH, so
 * the message stays one line whatever the arguments hold. */
int fdp_err_set(fdp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "flowdp: <file>:<line>: <message>" and abort the job (exit code 1, or the
 * abort hook). Never returns. */
void fdp_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* The hook called by fdp_fatal_at after printing (src/dist sets MPI_Abort). */
typedef void (*fdp_abort_hook)(int exit_code);
void fdp_set_abort_hook(fdp_abort_hook hook);

/* Copy src to dst (len bytes) with control characters escaped as fdp_err_set does;
 * returns dst. For one-line messages printed without an fdp_err. */
char *fdp_escape_line(char *dst, size_t len, const char *src);

#define FDP_FATAL(...) fdp_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
/* FDP_CHECK(cond, "what went wrong; hint: what to do", args...) */
#define FDP_CHECK(cond, ...)                                        \
    do {                                                            \
        if (!(cond)) fdp_fatal_at(__FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

/* Allocation that cannot fail silently (setup time only, never inside a step). */
void *fdp_xmalloc_at(const char *file, int line, size_t bytes);
void *fdp_xcalloc_at(const char *file, int line, size_t n, size_t size);
void *fdp_xrealloc_at(const char *file, int line, void *p, size_t bytes);
#define fdp_xmalloc(b) fdp_xmalloc_at(__FILE__, __LINE__, (b))
#define fdp_xcalloc(n, s) fdp_xcalloc_at(__FILE__, __LINE__, (n), (s))
#define fdp_xrealloc(p, b) fdp_xrealloc_at(__FILE__, __LINE__, (p), (b))

#endif
