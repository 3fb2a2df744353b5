/* log.h — logging. Only rank 0 prints info/debug; warnings and errors print on
 * every rank, prefixed with the rank when there is more than one. The rank and
 * the level are the only global state besides the communicator. */
#ifndef FLOWDP_LOG_H
#define FLOWDP_LOG_H

typedef enum { FDP_LOG_ERROR = 0, FDP_LOG_WARN = 1, FDP_LOG_INFO = 2, FDP_LOG_DEBUG = 3 } fdp_log_level;

void fdp_log_set_level(fdp_log_level level);
fdp_log_level fdp_log_get_level(void);
void fdp_log_set_rank(int rank, int size);
int fdp_log_rank(void);

void fdp_log(fdp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fdp_info(...) fdp_log(FDP_LOG_INFO, __VA_ARGS__)
#define fdp_warn(...) fdp_log(FDP_LOG_WARN, __VA_ARGS__)
#define fdp_debug(...) fdp_log(FDP_LOG_DEBUG, __VA_ARGS__)
#define fdp_error(...) fdp_log(FDP_LOG_ERROR, __VA_ARGS__)

#endif
