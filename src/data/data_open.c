/* data_open.c — opening a user's input file without hanging on a FIFO (see
 * data_open.h). */
#include "data_open.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

const char *fdp_data_mode_name(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "not a file";
}

static int refuse(const char *path, const char *what, mode_t mode, fdp_err *err) {
    return fdp_err_set(err, "%s: not a regular file (%s; expected %s)", path, fdp_data_mode_name(mode), what);
}

int fdp_data_stat_regular(const char *path, const char *what, struct stat *st, fdp_err *err) {
    struct stat local;
    if (!st) st = &local;
    if (stat(path, st) != 0) return fdp_err_set(err, "%s: cannot open %s: %s", path, what, strerror(errno));
    if (!S_ISREG(st->st_mode)) return refuse(path, what, st->st_mode, err);
    return 0;
}

int fdp_data_open_regular(const char *path, const char *what, struct stat *st, fdp_err *err) {
    struct stat local;
    if (!st) st = &local;
    /* O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (stat(path, st) == 0 && !S_ISREG(st->st_mode)) return refuse(path, what, st->st_mode, err);
        return fdp_err_set(err, "%s: cannot open %s: %s", path, what, strerror(e));
    }
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return fdp_err_set(err, "%s: cannot stat %s: %s", path, what, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return refuse(path, what, st->st_mode, err);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return fdp_err_set(err, "%s: cannot open %s: fcntl: %s", path, what, strerror(e));
    }
    return fd;
}

FILE *fdp_data_fopen_regular(const char *path, const char *what, struct stat *st, fdp_err *err) {
    int fd = fdp_data_open_regular(path, what, st, err);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        fdp_err_set(err, "%s: cannot open %s: %s", path, what, strerror(e));
    }
    return f;
}
