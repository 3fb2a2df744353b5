/* backend.c — choosing a backend at run time (--device cpu|cuda|cuda:N).
 * "cuda" takes this rank's GPU (local rank modulo the visible devices, see
 * flowdp/cuda.h); "cuda:N" takes CUDA device N. Without a usable GPU the error
 * says why: "built without CUDA", or "no CUDA device visible: <cudaGetErrorString>". */
#include <stdlib.h>
#include <string.h>

#include "flowdp/backend.h"
#include "flowdp/cuda.h"
#include "flowdp/error.h"

fdp_backend *fdp_backend_create(const char *name, int threads, fdp_err *err) {
    if (strcmp(name, "cpu") == 0) return fdp_backend_cpu_create(threads);
    if (strcmp(name, "cuda") == 0 || strncmp(name, "cuda:", 5) == 0) {
        int device = -1;
        if (name[4] == ':') {
            char *end;
            long d = strtol(name + 5, &end, 10);
            if (name[5] == '\0' || *end != '\0' || d < 0 || d > 1024) {
                fdp_err_set(err, "--device %s: expected cuda or cuda:N with N a CUDA device number", name);
                return NULL;
            }
            device = (int)d;
        }
        fdp_err sub = {{0}};
        fdp_backend *be = fdp_backend_cuda_create(device, &sub);
        if (!be) fdp_err_set(err, "--device %s: %s", name, sub.msg);
        return be;
    }
    fdp_err_set(err, "unknown device '%s' (expected cpu, cuda or cuda:N)", name);
    return NULL;
}

void fdp_backend_destroy(fdp_backend *be) {
    if (be) be->destroy(be);
}
