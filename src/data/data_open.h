/* data_open.h — private to src/data: opening a user's input file without hanging.
 *
 * fopen/gzopen/open block on a FIFO until a writer appears, before any check can
 * run; libzip and libhdf5 open paths themselves. These helpers open with
 * O_NONBLOCK (which never blocks), refuse anything that is not a regular file with
 * one line ("PATH: not a regular file (a FIFO; expected WHAT)"), then clear
 * O_NONBLOCK. fdp_data_stat_regular is the check for paths that a library opens
 * itself (stat first, then the library). */
#ifndef FLOWDP_DATA_OPEN_H
#define FLOWDP_DATA_OPEN_H
#include <stdio.h>
#include <sys/stat.h>

#include "flowdp/error.h"

/* "a FIFO", "a directory", "a character device", ... for a non-regular st_mode */
const char *fdp_data_mode_name(mode_t mode);

/* stat(path): 0 when it is a regular file (*st filled when st is not NULL); else -1
 * and err: "PATH: cannot open WHAT: strerror" or "PATH: not a regular file (a FIFO;
 * expected WHAT)". what: "an IDX file", "a CIFAR-10 .bin file", ... */
int fdp_data_stat_regular(const char *path, const char *what, struct stat *st, fdp_err *err);

/* open(path, O_RDONLY) without blocking on a FIFO; refuses non-regular files as
 * above. Returns the descriptor (O_NONBLOCK cleared, close-on-exec), or -1 + err. */
int fdp_data_open_regular(const char *path, const char *what, struct stat *st, fdp_err *err);

/* the same as a FILE * opened "rb"; NULL + err */
FILE *fdp_data_fopen_regular(const char *path, const char *what, struct stat *st, fdp_err *err);

#endif
