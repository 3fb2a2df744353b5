/* hdf5_lock.c — the process-wide recursive lock around HDF5 use (why: include/flowdp/hdf5_lock.h). */
#include "flowdp/hdf5_lock.h"

#include <pthread.h>

#include "flowdp/error.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_mutex;

static void init_lock(void) {
    pthread_mutexattr_t a;
    FDP_CHECK(pthread_mutexattr_init(&a) == 0 && pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE) == 0 &&
                  pthread_mutex_init(&g_mutex, &a) == 0,
              "cannot create the HDF5 lock");
    pthread_mutexattr_destroy(&a);
}

void fdp_hdf5_lock(void) {
    pthread_once(&g_once, init_lock);
    FDP_CHECK(pthread_mutex_lock(&g_mutex) == 0, "cannot take the HDF5 lock");
}

void fdp_hdf5_unlock(void) { FDP_CHECK(pthread_mutex_unlock(&g_mutex) == 0, "HDF5 lock released by a thread that does not hold it"); }
