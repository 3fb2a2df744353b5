/* outpath.c — output paths checked before any work, and written atomically
 * (include/flowdp/outpath.h). */
#include "flowdp/outpath.h"
#include "flowdp/fsutil.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *fdp_out_kind_name(fdp_out_kind kind) {
    switch (kind) {
    case FDP_OUT_PNG: return "PNG";
    case FDP_OUT_JSON: return "JSON";
    case FDP_OUT_HDF5: return "HDF5";
    case FDP_OUT_DIR: return "directory";
    default: return "file";
    }
}

int fdp_out_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b || !*a || !*b) return 0;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* read up to n bytes at offset off; returns the count or -1 */
static ssize_t read_at(int fd, unsigned char *buf, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int content_is_kind(int fd, fdp_out_kind kind, off_t size) {
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const unsigned char h5_sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char buf[512];
    if (kind == FDP_OUT_PNG) {
        ssize_t r = read_at(fd, buf, 8, 0);
        return r < 0 ? -1 : (r == 8 && memcmp(buf, png_sig, 8) == 0);
    }
    if (kind == FDP_OUT_HDF5) { /* the superblock is at 0 or after a user block of 512 * 2^k bytes */
        for (off_t off = 0; off + 8 <= size; off = off ? off * 2 : 512) {
            ssize_t r = read_at(fd, buf, 8, off);
            if (r < 0) return -1;
            if (r == 8 && memcmp(buf, h5_sig, 8) == 0) return 1;
        }
        return 0;
    }
    /* JSON: the first non-blank byte is '{' */
    for (off_t off = 0;; off += (off_t)sizeof buf) {
        ssize_t r = read_at(fd, buf, sizeof buf, off);
        if (r < 0) return -1;
        if (r == 0) return 0;
        for (ssize_t i = 0; i < r; i++) {
            unsigned char ch = buf[i];
            if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') continue;
            return ch == '{';
        }
    }
}

int fdp_out_is_kind(const char *path, fdp_out_kind kind) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (kind == FDP_OUT_DIR) return S_ISDIR(st.st_mode) ? 1 : 0;
    if (kind == FDP_OUT_ANY) return 1;
    if (!S_ISREG(st.st_mode)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = content_is_kind(fd, kind, st.st_size);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

/* the directory part of path ("." when none), malloc'd */
static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = 0;
    }
    return d;
}

/* 0 when dir is a directory we can create files in; else -1 with errno set */
static int dir_writable(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) return errno = ENOTDIR, -1;
    if (access(dir, W_OK | X_OK) != 0) return -1;
    /* root passes access() whatever the permission bits: try for real */
    size_t n = strlen(dir) + 32;
    char *probe = malloc(n);
    if (!probe) return errno = ENOMEM, -1;
    snprintf(probe, n, "%s/.fdp-probe.XXXXXX", dir);
    int fd = mkstemp(probe);
    if (fd < 0) {
        int e = errno;
        free(probe);
        return errno = e, -1;
    }
    close(fd);
    unlink(probe);
    free(probe);
    return 0;
}

/* FDP_OUT_DIR: path a directory if it exists; the nearest existing ancestor writable */
static int check_dir(const char *pre, const char *path, fdp_err *err) {
    struct stat st;
    char *d = strdup(path);
    if (!d) return fdp_err_set(err, "%sout of memory", pre);
    if (stat(d, &st) == 0 && !S_ISDIR(st.st_mode)) {
        free(d);
        return fdp_err_set(err, "%sexists and is not a directory", pre);
    }
    while (stat(d, &st) != 0) { /* up to the nearest existing ancestor */
        if (errno != ENOENT) break;
        char *p = parent_of(d);
        free(d);
        if (!p) return fdp_err_set(err, "%sout of memory", pre);
        d = p;
    }
    int rc = 0;
    if (dir_writable(d) != 0) rc = fdp_err_set(err, "%scannot write into %s: %s", pre, d, strerror(errno));
    free(d);
    return rc;
}

int fdp_out_check(const char *label, const char *path, fdp_out_kind kind, int force, const fdp_out_input *inputs,
                  int n_inputs, fdp_err *err) {
    char pre[1024];
    if (label)
        snprintf(pre, sizeof pre, "%s %s: ", label, path ? path : "");
    else
        snprintf(pre, sizeof pre, "%s: ", path ? path : "");
    if (!path || !*path) return fdp_err_set(err, "%sempty path", label ? label : "output");
    for (int i = 0; i < n_inputs; i++) {
        const char *in = inputs[i].path;
        if (!in || !*in || !fdp_out_same_file(path, in)) continue;
        const char *what = inputs[i].what ? inputs[i].what : "an input";
        if (strcmp(in, path) == 0) return fdp_err_set(err, "%sis %s; choose another file", pre, what);
        return fdp_err_set(err, "%sis %s (%s); choose another file", pre, what, in);
    }
    if (kind == FDP_OUT_DIR) return check_dir(pre, path, err);
    size_t len = strlen(path);
    struct stat st;
    int exists = stat(path, &st) == 0;
    if ((exists && S_ISDIR(st.st_mode)) || path[len - 1] == '/')
        return fdp_err_set(err, "%sis a directory; give a file name", pre);
    if (exists && !S_ISREG(st.st_mode)) return fdp_err_set(err, "%sexists and is not a regular file", pre);
    /* the temporary file "<name>.tmp.<pid>.<k>" must fit a directory entry too */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strlen(base) + 24 > NAME_MAX)
        return fdp_err_set(err, "%sthe file name is too long (%zu bytes; at most %d here, with room for the temporary "
                                "file's suffix)", pre, strlen(base), NAME_MAX - 24);
    char *dir = parent_of(path);
    if (!dir) return fdp_err_set(err, "%sout of memory", pre);
    int rc = 0;
    if (dir_writable(dir) != 0) rc = fdp_err_set(err, "%scannot write into %s: %s", pre, dir, strerror(errno));
    free(dir);
    if (rc || !exists || force || st.st_size == 0 || kind == FDP_OUT_ANY) return rc;
    int is = fdp_out_is_kind(path, kind);
    if (is < 0) return fdp_err_set(err, "%sexists and cannot be read: %s", pre, strerror(errno));
    if (!is)
        return fdp_err_set(err, "%sexists and is not a%s %s file; pass --force to replace it", pre,
                           kind == FDP_OUT_HDF5 ? "n" : "", fdp_out_kind_name(kind));
    return 0;
}

/* ---- atomic writing ------------------------------------------------------------- */

static void out_clear(fdp_out_file *o) {
    free(o->path);
    free(o->tmp);
    memset(o, 0, sizeof *o);
}

int fdp_out_open(fdp_out_file *o, const char *path, fdp_err *err) {
    memset(o, 0, sizeof *o);
    if (!path || !*path) return fdp_err_set(err, "cannot write: empty path");
    size_t tlen = strlen(path) + 48;
    o->path = strdup(path);
    o->tmp = malloc(tlen);
    if (!o->path || !o->tmp) {
        out_clear(o);
        return fdp_err_set(err, "cannot write %s: out of memory", path);
    }
    struct stat st;
    mode_t mode = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (st.st_mode & 07777) : 0666;
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; k++) {
        snprintf(o->tmp, tlen, "%s.tmp.%ld.%d", path, (long)getpid(), k);
        fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        int e = errno;
        out_clear(o);
        return fdp_err_set(err, "cannot write %s: %s", path, strerror(e));
    }
    if (mode != 0666) (void)fchmod(fd, mode); /* keep an existing file's permission bits */
    o->fp = fdopen(fd, "wb");
    if (!o->fp) {
        int e = errno;
        close(fd);
        unlink(o->tmp);
        out_clear(o);
        return fdp_err_set(err, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

void fdp_out_abort(fdp_out_file *o) {
    if (o->fp) fclose(o->fp);
    if (o->tmp) unlink(o->tmp);
    out_clear(o);
}

/* fsync the directory holding path so the rename itself is durable (best effort) */
static void sync_parent(const char *path) {
    char *dir = parent_of(path);
    if (dir) (void)fdp_fsync_dir(dir);
    free(dir);
}

int fdp_out_commit(fdp_out_file *o, fdp_err *err) {
    if (!o->fp) return fdp_err_set(err, "cannot write %s: not open", o->path ? o->path : "");
    int rc = 0;
    errno = 0;
    if (ferror(o->fp) || fflush(o->fp) != 0 || fsync(fileno(o->fp)) != 0)
        rc = fdp_err_set(err, "cannot write %s: %s", o->path, strerror(errno ? errno : EIO));
    if (fclose(o->fp) != 0 && rc == 0) rc = fdp_err_set(err, "cannot write %s: %s", o->path, strerror(errno));
    o->fp = NULL;
    if (rc == 0 && rename(o->tmp, o->path) != 0)
        rc = fdp_err_set(err, "cannot write %s: rename from %s: %s", o->path, o->tmp, strerror(errno));
    if (rc != 0)
        unlink(o->tmp);
    else
        sync_parent(o->path);
    out_clear(o);
    return rc;
}

int fdp_out_write_file(const char *path, const void *data, size_t n, fdp_err *err) {
    fdp_out_file o;
    if (fdp_out_open(&o, path, err) != 0) return -1;
    if (n > 0 && fwrite(data, 1, n, o.fp) != n) {
        int e = errno;
        fdp_out_abort(&o);
        return fdp_err_set(err, "cannot write %s: %s", path, strerror(e ? e : EIO));
    }
    return fdp_out_commit(&o, err);
}
