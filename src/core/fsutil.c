/* fsutil.c — see include/flowdp/fsutil.h. */
#include "flowdp/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

void fdp_dir_of(const char *path, char *out, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, len, ".");
    else if (slash == path) snprintf(out, len, "/");
    else snprintf(out, len, "%.*s", (int)(slash - path), path);
}

int fdp_mkdir_p(const char *path) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 1);
    if (!tmp) return ENOMEM;
    memcpy(tmp, path, n + 1);
    int e = 0;
    for (char *p = tmp + 1; *p && !e; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) e = errno;
        *p = '/';
    }
    if (!e && mkdir(tmp, 0755) != 0 && errno != EEXIST) e = errno;
    struct stat st;
    if (!e && stat(tmp, &st) != 0) e = errno;
    else if (!e && !S_ISDIR(st.st_mode)) e = ENOTDIR;
    free(tmp);
    return e;
}

static int write_all(int fd, const void *data, size_t n) {
    for (size_t o = 0; o < n;) {
        ssize_t w = write(fd, (const char *)data + o, n - o);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        o += (size_t)w;
    }
    return 0;
}

int fdp_write_file_sync(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    int e = write_all(fd, data, n);
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    return e;
}

int fdp_read_file(const char *path, unsigned char **out, size_t *n) {
    *out = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno ? errno : EINVAL;
        close(fd);
        return e;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    unsigned char *buf = malloc(cap);
    int e = buf ? 0 : ENOMEM;
    while (!e) {
        if (len == cap) {
            unsigned char *b2 = realloc(buf, cap * 2);
            if (!b2) {
                e = ENOMEM;
                break;
            }
            buf = b2;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno != EINTR) e = errno;
        } else if (r == 0) {
            break;
        } else {
            len += (size_t)r;
        }
    }
    close(fd);
    if (e) {
        free(buf);
        return e;
    }
    *out = buf;
    *n = len;
    return 0;
}

int fdp_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = 0;
    if (fsync(fd) != 0 && errno != EINVAL) e = errno;
    close(fd);
    return e;
}

int fdp_copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return errno;
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return e;
    }
    int e = 0;
    if (ioctl(out, FICLONE, in) != 0) { /* no reflink here: copy the bytes */
        size_t cap = 1 << 20;
        char *buf = malloc(cap);
        e = buf ? 0 : ENOMEM;
        while (!e) {
            ssize_t r = read(in, buf, cap);
            if (r < 0) {
                if (errno != EINTR) e = errno;
                continue;
            }
            if (r == 0) break;
            e = write_all(out, buf, (size_t)r);
        }
        free(buf);
    }
    if (!e && fsync(out) != 0) e = errno;
    if (close(out) != 0 && !e) e = errno;
    close(in);
    return e;
}

int fdp_pread_all(int fd, void *buf, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno;
        if (r == 0) return EIO;
        got += (size_t)r;
    }
    return 0;
}
