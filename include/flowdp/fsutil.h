/* fsutil.h — the small file-system helpers every writer and reader shares, one copy
 * each: a path's directory, mkdir -p, whole-file write + fsync, whole-file read,
 * a durable directory entry (fsync of the directory), a file copy (a reflink where the
 * filesystem has them), pread of exactly n bytes. Each returns 0 or an errno value
 * (never prints); callers turn that into their one-line error naming the file.
 *
 *   char dir[PATH_MAX];
 *   fdp_dir_of("run/ckpt.h5", dir, sizeof dir);           // "run"
 *   int e = fdp_write_file_sync(tmp, image, n);           // 0 or ENOSPC, EFBIG, ...
 *   if (!e && rename(tmp, path) != 0) e = errno;
 *   if (!e) e = fdp_fsync_dir(dir);
 */
#ifndef FLOWDP_FSUTIL_H
#define FLOWDP_FSUTIL_H
#include <stddef.h>
#include <stdint.h>

/* The directory part of path: "." when it has no '/', "/" for "/x". */
void fdp_dir_of(const char *path, char *out, size_t len);
/* mkdir -p path (mode 0755); it must end as a directory: 0, or an errno (ENOTDIR
 * when path or a parent is a file). */
int fdp_mkdir_p(const char *path);
/* Create or truncate path, write n bytes, fsync, close: 0 or an errno. */
int fdp_write_file_sync(const char *path, const void *data, size_t n);
/* The whole regular file path into *out (malloc'd, *n bytes): 0 or an errno
 * (EISDIR for a directory, EINVAL for another non-regular file). */
int fdp_read_file(const char *path, unsigned char **out, size_t *n);
/* fsync a directory (a rename in it becomes durable): 0 or an errno; filesystems
 * that cannot fsync a directory (EINVAL) count as success. */
int fdp_fsync_dir(const char *dir);
/* Copy src to dst (created or truncated) and fsync it: a reflink (FICLONE: btrfs,
 * XFS) where possible, else the bytes. 0 or an errno. */
int fdp_copy_file(const char *src, const char *dst);
/* pread exactly n bytes at off: 0, or an errno (EIO when the file is shorter). */
int fdp_pread_all(int fd, void *buf, size_t n, uint64_t off);

#endif
