/* checkpoint_h5.c — the HDF5 plumbing of the checkpoints (the part shared with
 * metrics and shards is flowdp/h5util.h): one-line errors, scalar attributes, and
 * strings read without trusting the lengths a damaged file claims. */
#include "checkpoint_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flowdp/h5util.h"

int ckpt_h5fail(const char *path, fdp_err *err, const char *what) {
    char cause[600];
    fdp_h5_cause(cause, sizeof cause);
    return fdp_err_set(err, "checkpoint %s: %s: %s", path, what, cause);
}

hid_t ckpt_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

int ckpt_attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *val, const char *path,
                    fdp_err *err) {
    char what[128];
    snprintf(what, sizeof what, "cannot write attribute '%s'", name);
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return ckpt_h5fail(path, err, what);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) {
        ckpt_h5fail(path, err, what);
        H5Sclose(sp);
        return -1;
    }
    int rc = 0;
    if (H5Awrite(a, mtype, val) < 0) rc = ckpt_h5fail(path, err, what);
    H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

int ckpt_attr_write_str(hid_t loc, const char *name, const char *val, const char *path, fdp_err *err) {
    hid_t t = ckpt_str_type();
    if (t < 0) return ckpt_h5fail(path, err, "cannot make a string type");
    int rc = ckpt_attr_write(loc, name, t, t, &val, path, err);
    H5Tclose(t);
    return rc;
}

/* Read a scalar numeric attribute of class cls into out (memory type mtype). */
int ckpt_attr_read(hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, void *out, const char *path,
                   fdp_err *err) {
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0) return ckpt_h5fail(path, err, "damaged file: cannot read the root group");
    if (ex == 0) return fdp_err_set(err, "checkpoint %s: missing attribute '%s'", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return ckpt_h5fail(path, err, "cannot open an attribute");
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = 0;
    if (t < 0 || sp < 0 || H5Tget_class(t) != cls || H5Sget_simple_extent_npoints(sp) != 1)
        rc = fdp_err_set(err, "checkpoint %s: attribute '%s' has the wrong type or size", path, name);
    else if (H5Aread(a, mtype, out) < 0)
        rc = ckpt_h5fail(path, err, "cannot read an attribute");
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

/* The size of the open file that obj belongs to, or 0 when unknown. */
uint64_t ckpt_obj_file_size(hid_t obj) {
    hid_t f = H5Iget_file_id(obj);
    hsize_t size = 0;
    if (f < 0) return 0;
    if (H5Fget_filesize(f, &size) < 0) size = 0;
    H5Fclose(f);
    return (uint64_t)size;
}

/* The length a scalar variable-length string dataset claims, from its raw data: a
 * heap ID (uint32 little-endian length, heap address, index) that no HDF5 checksum
 * covers, and from which HDF5 allocates the string before it finds out that the heap
 * holds less. Returns 0 and *len (UINT64_MAX when the raw data is not contiguous in
 * the file: then it sits in the checksummed object header), or -1 on a read error. */
static int vlen_str_disk_len(hid_t ds, const char *path, uint64_t *len) {
    *len = UINT64_MAX;
    haddr_t off = H5Dget_offset(ds);
    if (off == HADDR_UNDEF) return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    unsigned char b[4];
    ssize_t r = pread(fd, b, 4, (off_t)off);
    int e = r < 0 ? errno : 0;
    close(fd);
    if (r != 4) {
        errno = e; /* 0: the file ends before it */
        return -1;
    }
    *len = (uint64_t)b[0] | (uint64_t)b[1] << 8 | (uint64_t)b[2] << 16 | (uint64_t)b[3] << 24;
    return 0;
}

/* Read a scalar string held by an attribute (is_attr) or a dataset into a
 * malloc'd NUL-terminated buffer. Accepts variable- and fixed-length strings no
 * longer than the file (a damaged length must not make us, or HDF5, allocate more). */
int ckpt_str_read(hid_t obj, int is_attr, const char *what, char **out, const char *path, fdp_err *err) {
    *out = NULL;
    hid_t t = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    hid_t sp = is_attr ? H5Aget_space(obj) : H5Dget_space(obj);
    uint64_t file_size = ckpt_obj_file_size(obj), disk_len = 0;
    int rc = 0, is_var = t >= 0 ? H5Tis_variable_str(t) > 0 : 0;
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        rc = fdp_err_set(err, "checkpoint %s: %s is not a scalar string", path, what);
    } else if (!is_var && (uint64_t)H5Tget_size(t) > file_size) {
        rc = fdp_err_set(err, "checkpoint %s: damaged file: %s claims %llu bytes, more than the file's %llu", path, what,
                         (unsigned long long)H5Tget_size(t), (unsigned long long)file_size);
    } else if (is_var && !is_attr && vlen_str_disk_len(obj, path, &disk_len) != 0) {
        rc = fdp_err_set(err, "checkpoint %s: cannot read the length of %s: %s", path, what,
                         errno ? strerror(errno) : "the file ends before it");
    } else if (is_var && !is_attr && disk_len != UINT64_MAX && disk_len > file_size) {
        rc = fdp_err_set(err, "checkpoint %s: damaged file: %s claims %llu bytes, more than the file's %llu", path, what,
                         (unsigned long long)disk_len, (unsigned long long)file_size);
    } else if (is_var) {
        hid_t mt = ckpt_str_type();
        char *p = NULL;
        herr_t r = mt < 0 ? -1 : is_attr ? H5Aread(obj, mt, &p) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p);
        if (r < 0) {
            char m[160];
            snprintf(m, sizeof m, "cannot read %s", what);
            rc = ckpt_h5fail(path, err, m);
        } else {
            *out = strdup(p ? p : "");
            if (p) H5free_memory(p);
        }
        if (mt >= 0) H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(t);
        hid_t mt = H5Tcopy(H5T_C_S1);
        char *buf = calloc(1, size + 1);
        herr_t r = (mt < 0 || !buf || H5Tset_size(mt, size) < 0)
                       ? -1
                       : is_attr ? H5Aread(obj, mt, buf) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        if (r < 0) {
            char m[160];
            snprintf(m, sizeof m, "cannot read %s", what);
            rc = ckpt_h5fail(path, err, m);
            free(buf);
        } else {
            *out = buf;
        }
        if (mt >= 0) H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (rc == 0 && !*out) rc = fdp_err_set(err, "checkpoint %s: out of memory reading %s", path, what);
    return rc;
}

int ckpt_attr_read_str(hid_t loc, const char *name, char *out, size_t len, const char *path, fdp_err *err) {
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0) return ckpt_h5fail(path, err, "damaged file: cannot read the root group");
    if (ex == 0) return fdp_err_set(err, "checkpoint %s: missing attribute '%s'", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return ckpt_h5fail(path, err, "cannot open an attribute");
    char what[96], *s = NULL;
    snprintf(what, sizeof what, "attribute '%s'", name);
    int rc = ckpt_str_read(a, 1, what, &s, path, err);
    H5Aclose(a);
    if (rc) return rc;
    if (strlen(s) >= len) rc = fdp_err_set(err, "checkpoint %s: attribute '%s' is too long", path, name);
    else memcpy(out, s, strlen(s) + 1);
    free(s);
    return rc;
}
