/* h5util.c — see include/flowdp/h5util.h. */
#include "flowdp/h5util.h"

#include <stdio.h>
#include <string.h>

void fdp_h5_quiet_begin(fdp_h5_quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void fdp_h5_quiet_end(const fdp_h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

#define CAUSE_DESC_MAX 512

static herr_t innermost_cb(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) snprintf((char *)data, CAUSE_DESC_MAX, "%s", e->desc);
    return 0;
}

const char *fdp_h5_cause(char *out, size_t len) {
    char desc[CAUSE_DESC_MAX] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_cb, desc);
    const char *key = "error message = '";
    const char *em = strstr(desc, key);
    if (em) {
        em += strlen(key);
        const char *end = strchr(em, '\'');
        int n = end ? (int)(end - em) : (int)strlen(em);
        snprintf(out, len, "%.*s (HDF5)", n, em);
    } else if (desc[0]) {
        snprintf(out, len, "HDF5: %s", desc);
    } else {
        snprintf(out, len, "HDF5 error");
    }
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    return out;
}

hid_t fdp_h5_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 || H5Pset_file_locking(fapl, 1, 1) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}
