/* hdf5_lock.h — one process-wide lock around every use of the HDF5 library.
 *
 * Why: the data loader reads HDF5 shards in its prefetch thread while the
 * training thread writes metrics and checkpoints with HDF5. Debian's HDF5 is
 * built thread-safe (one global lock inside the library), but many cluster
 * builds are not, and even a thread-safe build only makes single API calls
 * atomic: HDF5's error-stack settings (H5Eset_auto2, used to silence expected
 * failures) are per-thread there but process-wide in a non-thread-safe build.
 * So flowdp serializes whole sequences of HDF5 calls itself: the shard reader and
 * writer take this lock around each sequence (one read, one open), and the
 * trainer takes it around each metrics/checkpoint call it makes while a loader
 * thread may be running. The lock is recursive (a holder may call a function
 * that takes it again). It is held for milliseconds (one batch's reads or one
 * metrics flush), so neither side waits long.
 * One of the few pieces of global state (the list: docs/ARCHITECTURE.md,
 * invariant 10): HDF5 itself is global state, so its lock must be too. */
#ifndef FLOWDP_HDF5_LOCK_H
#define FLOWDP_HDF5_LOCK_H

void fdp_hdf5_lock(void);
void fdp_hdf5_unlock(void);

#endif
