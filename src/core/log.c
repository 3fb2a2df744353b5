/* log.c — rank-aware logging to stderr (info goes to stdout on rank 0). */
#include "flowdp/log.h"
#include "flowdp/error.h"

#include <stdarg.h>
#include <stdio.h>

/* in log.c, not error.c: the logger and the error setter both use it, and error.c already calls
 * into log.c (no two files call into each other) */
char *fdp_escape_line(char *dst, size_t len, const char *src) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (!len) return dst;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 1 < len; p++) {
        char esc = *p == '\n' ? 'n' : *p == '\r' ? 'r' : *p == '\t' ? 't' : 0;
        if (*p >= 0x20 && *p != 0x7f) {
            dst[o++] = (char)*p;
        } else if (esc && o + 2 < len) {
            dst[o++] = '\\';
            dst[o++] = esc;
        } else if (!esc && o + 4 < len) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[*p >> 4];
            dst[o++] = hex[*p & 15];
        } else {
            break;
        }
    }
    dst[o] = 0;
    return dst;
}

static fdp_log_level g_level = FDP_LOG_INFO;
static int g_rank = 0, g_size = 1;
static const char *g_prog = "flowdp";

void fdp_log_set_prog(const char *prog) { g_prog = prog && *prog ? prog : "flowdp"; }
const char *fdp_log_prog(void) { return g_prog; }

void fdp_log_set_level(fdp_log_level level) { g_level = level; }
fdp_log_level fdp_log_get_level(void) { return g_level; }
void fdp_log_set_rank(int rank, int size) { g_rank = rank; g_size = size; }
int fdp_log_rank(void) { return g_rank; }

void fdp_log(fdp_log_level level, const char *fmt, ...) {
    if (level > g_level) return;
    if (level >= FDP_LOG_INFO && g_rank != 0) return;
    FILE *out = level >= FDP_LOG_INFO ? stdout : stderr;
    static const char *tag[] = {"error: ", "warning: ", "", "debug: "};
    char raw[4096], buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    fdp_escape_line(buf, sizeof buf, raw); /* one line, whatever a file name holds */
    if (g_size > 1 && level < FDP_LOG_INFO)
        fprintf(out, "%s [rank %d]: %s%s\n", g_prog, g_rank, tag[level], buf);
    else if (level < FDP_LOG_INFO)
        fprintf(out, "%s: %s%s\n", g_prog, tag[level], buf);
    else
        fprintf(out, "%s%s\n", tag[level], buf);
    fflush(out);
}
