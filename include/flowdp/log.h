/* log.h — logging. Only rank 0 prints info/debug; warnings and errors print on
 * every rank, prefixed with the rank when there is more than one. The rank, the
 * level and the program name are global state (all of it: docs/ARCHITECTURE.md, invariant 10).
 *
 * Every line a program writes to stderr starts with its name, the same way in
 * every program (set once by main with fdp_log_set_prog):
 *   flowdp-train: <file>: <what is wrong>          bad input (exit 2), printed by main
 *   flowdp-train: warning: <text>                  fdp_warn, one rank
 *   flowdp-train [rank 1]: warning: <text>         fdp_warn with more than one rank
 *   flowdp-train: error: <text>                    fdp_error
 *   flowdp-train: fatal [rank 0] file.c:12: <text> FDP_CHECK / FDP_FATAL (exit 1) */
#ifndef FLOWDP_LOG_H
#define FLOWDP_LOG_H

typedef enum { FDP_LOG_ERROR = 0, FDP_LOG_WARN = 1, FDP_LOG_INFO = 2, FDP_LOG_DEBUG = 3 } fdp_log_level;

void fdp_log_set_level(fdp_log_level level);
fdp_log_level fdp_log_get_level(void);
void fdp_log_set_rank(int rank, int size);
int fdp_log_rank(void);
/* The program name that prefixes every stderr line (default "flowdp"); the pointer is kept. */
void fdp_log_set_prog(const char *prog);
const char *fdp_log_prog(void);

void fdp_log(fdp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fdp_info(...) fdp_log(FDP_LOG_INFO, __VA_ARGS__)
#define fdp_warn(...) fdp_log(FDP_LOG_WARN, __VA_ARGS__)
#define fdp_debug(...) fdp_log(FDP_LOG_DEBUG, __VA_ARGS__)
#define fdp_error(...) fdp_log(FDP_LOG_ERROR, __VA_ARGS__)

#endif
