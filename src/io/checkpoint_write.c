/* checkpoint_write.c — saving a checkpoint: the whole file built as an HDF5 image in
 * memory (metadata, sections, /config, the checksum), the trailer appended, then
 * written to a temporary file, fsync'd and renamed over the target (atomic save:
 * include/flowdp/checkpoint.h). */
#include "checkpoint_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flowdp/fsutil.h"
#include "flowdp/h5util.h"

/* Write one section's datasets in name order and feed them to the checksum. */
static int write_section(hid_t file, int sec, const ds_info *infos, int n, const float *base, xxh64 *h,
                         const char *path, fdp_err *err) {
    char what[FDP_NAME_MAX + 64];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), gcpl = H5Pcreate(H5P_GROUP_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t g = -1;
    int rc = 0;
    if (lcpl < 0 || gcpl < 0 || dcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
        H5Pset_obj_track_times(gcpl, 0) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0) {
        rc = ckpt_h5fail(path, err, "cannot set up property lists");
        goto done;
    }
    g = H5Gcreate2(file, ckpt_sec_path[sec], lcpl, gcpl, H5P_DEFAULT);
    if (g < 0) {
        snprintf(what, sizeof what, "cannot create group /%s", ckpt_sec_path[sec]);
        rc = ckpt_h5fail(path, err, what);
        goto done;
    }
    ckpt_hash_cstr0(h, ckpt_sec_path[sec]);
    ckpt_hash_u64(h, (uint64_t)n);
    for (int i = 0; i < n && rc == 0; i++) {
        const ds_info *d = &infos[i];
        const float *data = base ? base + d->offset : NULL; /* NULL only when every entry is empty */
        ckpt_hash_cstr0(h, d->name);
        ckpt_hash_u64(h, (uint64_t)d->ndim);
        hsize_t dims[FDP_MAX_DIMS];
        for (int j = 0; j < d->ndim; j++) {
            ckpt_hash_u64(h, (uint64_t)d->dims[j]);
            dims[j] = (hsize_t)d->dims[j];
        }
        if (d->numel > 0) ckpt_hash_bytes(h, data, sizeof(float) * (size_t)d->numel);
        snprintf(what, sizeof what, "cannot write /%s/%s", ckpt_sec_path[sec], d->name);
        hid_t sp = d->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(d->ndim, dims, NULL);
        if (sp < 0) {
            rc = ckpt_h5fail(path, err, what);
            break;
        }
        hid_t ds = H5Dcreate2(g, d->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ds < 0) rc = ckpt_h5fail(path, err, what);
        else if (d->numel > 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
            rc = ckpt_h5fail(path, err, what);
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(sp);
    }
done:
    if (g >= 0) H5Gclose(g);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (gcpl >= 0) H5Pclose(gcpl);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

/* An empty HDF5 file in memory (the core driver, no backing store), initial size
 * about half the raw data (grows in steps of that: one or two allocations). */
static hid_t create_image_file(const char *tmp, const char *path, const fdp_ckpt_state *s, const char *config,
                               fdp_err *err) {
    size_t raw = sizeof(float) * ((size_t)s->table->n_params * 5 + (size_t)s->table->n_buffers) + strlen(config);
    hid_t fapl = fdp_h5_fapl();
    if (fapl < 0 || H5Pset_fapl_core(fapl, raw / 2 + ((size_t)1 << 20), 0) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return ckpt_h5fail(path, err, "cannot set up file access");
    }
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) {
        char what[CKPT_PATH_MAX + 64];
        snprintf(what, sizeof what, "cannot create %s in memory", tmp);
        ckpt_h5fail(path, err, what);
    }
    H5Pclose(fapl);
    return file;
}

/* The content: root attributes, the sections present, /config and, last, the
 * checksum attribute over all of it. */
static int write_content(hid_t file, const char *path, const fdp_ckpt_state *s, const fdp_ckpt_meta *meta,
                         const char *config, fdp_err *err) {
    xxh64 h;
    fdp_xxh64_init(&h, 0);
    ckpt_meta_hash(&h, meta, config);
    int rc = ckpt_meta_write(file, meta, path, err);

    int n_par = 0, n_buf = 0;
    ds_info *par = ckpt_table_infos(s->table, FDP_PARAM, &n_par), *buf = ckpt_table_infos(s->table, FDP_BUFFER, &n_buf);
    for (int sec = 0; sec < SEC_COUNT && rc == 0; sec++) {
        const float *base = ckpt_sec_data(s, sec);
        if (sec >= SEC_OPT_M && !base) continue;
        if (sec == SEC_BUFFERS) rc = write_section(file, sec, buf, n_buf, base, &h, path, err);
        else rc = write_section(file, sec, par, n_par, base, &h, path, err);
    }
    free(par);
    free(buf);

    if (!rc) {
        hid_t t = ckpt_str_type(), sp = H5Screate(H5S_SCALAR);
        hid_t ds = (t < 0 || sp < 0) ? -1 : H5Dcreate2(file, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &config) < 0)
            rc = ckpt_h5fail(path, err, "cannot write /config");
        if (ds >= 0) H5Dclose(ds);
        if (sp >= 0) H5Sclose(sp);
        if (t >= 0) H5Tclose(t);
    }
    if (!rc) {
        uint64_t sum = fdp_xxh64_digest(&h);
        rc = ckpt_attr_write(file, "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &sum, path, err);
    }
    return rc;
}

/* The flushed file, byte for byte (H5Fget_file_image flushes, then copies up to the
 * EOA), with the superblock checksum fixed: *image malloc'd, *size bytes. */
static int take_image(hid_t file, const char *path, void **image, size_t *size, fdp_err *err) {
    if (H5Fflush(file, H5F_SCOPE_LOCAL) < 0) return ckpt_h5fail(path, err, "cannot flush");
    int rc = 0;
    ssize_t n = H5Fget_file_image(file, NULL, 0);
    void *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (n <= 0) rc = ckpt_h5fail(path, err, "cannot take the file image");
    else if (!buf) rc = fdp_err_set(err, "checkpoint %s: out of memory for a %lld-byte file image", path, (long long)n);
    else if (H5Fget_file_image(file, buf, (size_t)n) != n) rc = ckpt_h5fail(path, err, "cannot take the file image");
    if (!rc && fdp_h5_image_fix_superblock(buf, (size_t)n) != 0)
        rc = fdp_err_set(err, "checkpoint %s: the in-memory file image does not start with a version-2 superblock",
                         path);
    if (rc) {
        free(buf);
        return rc;
    }
    *image = buf;
    *size = (size_t)n;
    return 0;
}

/* Build the whole checkpoint as an HDF5 file image in memory (the core driver, no
 * backing store) and return it in *image (malloc'd, *size bytes; the caller writes
 * it to disk). HDF5 never touches the disk here, on purpose: HDF5 1.10 cannot
 * recover from a failed write (disk full, EFBIG past `ulimit -f`, EIO): H5Fclose
 * then fails, the half-closed file stays registered and the library crashes in
 * its atexit handler (H5F__close_cb). Writing the image ourselves turns every disk
 * error into a plain errno. Costs a transient second copy of the checkpoint in
 * rank 0's memory while the image is taken. */
static int build_image(const char *tmp, const char *path, const fdp_ckpt_state *s, const fdp_ckpt_meta *meta,
                       const char *config, void **image_out, size_t *size, fdp_err *err) {
    *image_out = NULL;
    *size = 0;
    hid_t file = create_image_file(tmp, path, s, config, err);
    if (file < 0) return -1;
    int rc = write_content(file, path, s, meta, config, err);
    if (!rc) rc = take_image(file, path, image_out, size, err);
    if (H5Fclose(file) < 0 && !rc) rc = ckpt_h5fail(path, err, "cannot close the in-memory file");
    if (rc) {
        free(*image_out);
        *image_out = NULL;
        *size = 0;
    }
    return rc;
}

int fdp_ckpt_save(const char *path, const fdp_ckpt_state *s, const fdp_ckpt_meta *meta, const char *config_text,
                  fdp_err *err) {
    if (!path || !*path) return fdp_err_set(err, "checkpoint: empty path");
    if (!s || !s->table || !meta) return fdp_err_set(err, "checkpoint %s: nothing to save (NULL state, table or meta)", path);
    const fdp_params *t = s->table;
    if ((t->n_params > 0 && !s->params) || (t->n_buffers > 0 && !s->buffers))
        return fdp_err_set(err, "checkpoint %s: params or buffers missing (NULL)", path);
    if (!memchr(meta->model_type, 0, sizeof meta->model_type))
        return fdp_err_set(err, "checkpoint %s: model_type is not NUL-terminated", path);
    for (int i = 0; i < t->count; i++)
        if (!ckpt_valid_name(t->entries[i].name))
            return fdp_err_set(err, "checkpoint %s: invalid parameter name '%s' (empty, '.' or contains '/')", path,
                               t->entries[i].name);
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fdp_err_set(err, "checkpoint %s: path too long", path);
    fdp_dir_of(path, dir, sizeof dir);

    /* Create the temporary ourselves first: a clean errno for the common failures
     * (no such directory, permission, read-only filesystem). */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fdp_err_set(err, "checkpoint %s: cannot create %s: %s", path, tmp, strerror(errno));
    close(fd);

    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    void *image = NULL;
    size_t size = 0;
    int rc = build_image(tmp, path, s, meta, config_text ? config_text : "", &image, &size, err);
    fdp_h5_quiet_end(&q);
    if (rc == 0) { /* the trailer: XXH64 of every byte before it (fdp_h5_add_trailer) */
        void *grown = realloc(image, size + FDP_H5_TRAILER_SIZE);
        if (!grown) rc = fdp_err_set(err, "checkpoint %s: out of memory for the file trailer", path);
        else image = grown;
        if (rc == 0) size = fdp_h5_add_trailer(image, size);
    }
    if (rc == 0) {
        int e = fdp_write_file_sync(tmp, image, size);
        if (e) rc = fdp_err_set(err, "checkpoint %s: cannot write %s (%zu bytes): %s", path, tmp, size, strerror(e));
    }
    free(image);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = fdp_err_set(err, "checkpoint %s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    int e = fdp_fsync_dir(dir);
    if (e)
        return fdp_err_set(err, "checkpoint %s: written and renamed, but cannot fsync directory %s: %s", path, dir,
                           strerror(e));
    return 0;
}
