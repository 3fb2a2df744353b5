/* cli.c — see include/flowdp/cli.h. */
#include "flowdp/cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fdp_cli_int(const char *s, long long min, long long max, long long *out) {
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno == ERANGE || v > (unsigned long long)max || (long long)v < min) return -1;
    *out = (long long)v;
    return 0;
}

int fdp_cli_double(const char *s, double min, double max, double *out) {
    if (!s || !*s || *s == ' ') return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v) || v < min || v > max) return -1;
    *out = v;
    return 0;
}

const char *fdp_cli_bad_option(char **argv, char *buf, size_t len) {
    const char *a = optind >= 1 ? argv[optind - 1] : "";
    if (optopt > 0 && optopt < 128 && !(a[0] == '-' && a[1] == '-') && !(a[0] == '-' && strchr(a + 1, optopt))) {
        snprintf(buf, len, "-%c", optopt);
        return buf;
    }
    return a;
}
