/* backend.c — choosing a backend at run time (--device cpu|cuda). */
#include <string.h>

#include "flowdp/backend.h"
#include "flowdp/error.h"

fdp_backend *fdp_backend_create(const char *name, int threads, fdp_err *err) {
    if (strcmp(name, "cpu") == 0) return fdp_backend_cpu_create(threads);
    if (strcmp(name, "cuda") == 0) {
        fdp_err_set(err, "--device cuda: this build has no CUDA backend yet (only the shared kernels are compiled "
                         "with nvcc); use --device cpu");
        return NULL;
    }
    fdp_err_set(err, "unknown device '%s' (expected cpu or cuda)", name);
    return NULL;
}

void fdp_backend_destroy(fdp_backend *be) {
    if (be) be->destroy(be);
}
