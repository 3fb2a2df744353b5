/* h5util.h — the HDF5 plumbing shared by checkpoints, metrics and shards:
 * silencing HDF5's automatic error-stack printing around calls that may fail
 * expectedly, a one-line cause for the last failure, and the file-access
 * property list of the files flowdp writes. The caller holds the HDF5 lock where
 * threads may be running (include/flowdp/hdf5_lock.h). */
#ifndef FLOWDP_H5UTIL_H
#define FLOWDP_H5UTIL_H
#include <hdf5.h>
#include <stddef.h>

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

#endif
