/* cli.h — strict command-line values for every program, one copy: a number is
 * all digits (no sign, no trailing text, no overflow) within a range, and the
 * option named in an error is the one the user typed.
 *
 *   long long v;
 *   if (fdp_cli_int(optarg, 1, 65536, &v) != 0)
 *       return fprintf(stderr, "flowdp-x: --batch %s: expected an integer from 1 to 65536\n", optarg), 2;
 *   ...
 *   default: // getopt refused an option
 *       fprintf(stderr, "flowdp-x: unknown or incomplete option '%s' (see --help)\n",
 *               fdp_cli_bad_option(argv, buf, sizeof buf));
 */
#ifndef FLOWDP_CLI_H
#define FLOWDP_CLI_H
#include <stddef.h>

/* s as a decimal integer in [min, max] (min >= 0): 0, or -1 (nothing set). */
int fdp_cli_int(const char *s, long long min, long long max, long long *out);
/* s as a finite decimal number in [min, max]: 0, or -1. */
int fdp_cli_double(const char *s, double min, double max, double *out);
/* After getopt_long returned '?' or ':': the argument it refused, or "-c" for a
 * short option inside a cluster ("-xq"); uses optind/optopt. */
const char *fdp_cli_bad_option(char **argv, char *buf, size_t len);

#endif
