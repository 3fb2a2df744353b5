/* h5util.h — the HDF5 plumbing shared by checkpoints, metrics and shards:
 * silencing HDF5's automatic error-stack printing around calls that may fail
 * expectedly, a one-line cause for the last failure, and the file-access
 * property list of the files flowdp writes. The caller holds the HDF5 lock where
 * threads may be running (include/flowdp/hdf5_lock.h). */
#ifndef FLOWDP_H5UTIL_H
#define FLOWDP_H5UTIL_H
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* H5Eset_auto2 off between begin and end, restoring what was set before */
typedef struct fdp_h5_quiet {
    H5E_auto2_t func;
    void *data;
} fdp_h5_quiet;
void fdp_h5_quiet_begin(fdp_h5_quiet *q);
void fdp_h5_quiet_end(const fdp_h5_quiet *q);

/* One line describing the last HDF5 failure of this thread: the system error
 * message when HDF5 reports one (disk full, permission, ...) as "<message> (HDF5)",
 * else "HDF5: <its most specific description>". Call it before any other HDF5
 * call (which would clear the error stack). Returns out. */
const char *fdp_h5_cause(char *out, size_t len);

/* File access for the files flowdp writes and rereads (checkpoints, metrics):
 * the 1.8 format (metadata checksums, no superblock status flags), strong close
 * (H5Fclose closes every object of the file), file locking skipped where the
 * filesystem has none (some Lustre/NFS mounts). -1 on failure. */
hid_t fdp_h5_fapl(void);

/* HDF5 1.10.8's H5Fget_file_image returns a version-2 superblock whose checksum does
 * not match its bytes; recompute it in the image img[0, n). 0, or -1 when the image
 * does not start with a version-2 superblock (files made with fdp_h5_fapl do). */
int fdp_h5_image_fix_superblock(unsigned char *img, size_t n);

/* ---- the pass over a file's bytes before HDF5 opens it (src/io/h5scan.c) -------------
 * flowdp's checkpoints end with a 16-byte trailer after the HDF5 file: "FDPXXH64" and
 * the little-endian XXH64 (seed 0) of every byte before it. HDF5 ignores bytes past
 * its end of file; the loader checks them first, so a changed byte anywhere is refused
 * before anything is parsed. */
#define FDP_H5_TRAILER_SIZE 16
/* Append the trailer to image[0, n) (which has room for FDP_H5_TRAILER_SIZE more
 * bytes); returns the new size. */
size_t fdp_h5_add_trailer(void *image, size_t n);
enum { FDP_H5_TRAILER_NONE = 0, FDP_H5_TRAILER_OK = 1, FDP_H5_TRAILER_BAD = 2 };
typedef struct fdp_h5_scan {
    int trailer;       /* FDP_H5_TRAILER_*: none (older file or another writer), matches, or not */
    uint64_t bad_gcol; /* 1 + the offset of an inconsistent global heap collection, 0 if none */
} fdp_h5_scan;
/* Read path once: the trailer when limit covers the whole file, and the global heap
 * collections that start in its first `limit` bytes (UINT64_MAX: all; shards pass a
 * few MiB: their attribute strings sit near the start). 0, or an errno (the file could
 * not be read). */
int fdp_h5_prescan(const char *path, uint64_t limit, fdp_h5_scan *out);

/* 1 when data[0, n) starts with the HDF5 signature (no user block), else 0. */
int fdp_h5_is_hdf5(const void *data, size_t n);

#endif
