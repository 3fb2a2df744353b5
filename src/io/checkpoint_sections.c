/* checkpoint_sections.c — the data sections of a checkpoint (/params, /buffers,
 * /optimizer/m, /optimizer/v, /ema): the model's table as sorted dataset lists, the
 * file's structure, and listing, matching and reading a section of a file. Writing
 * one is in checkpoint_write.c. */
#include "checkpoint_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fmt_shape(char *out, size_t len, int ndim, const int64_t *dims) {
    size_t o = (size_t)snprintf(out, len, "[");
    for (int d = 0; d < ndim && o < len; d++) o += (size_t)snprintf(out + o, len - o, d ? ", %lld" : "%lld", (long long)dims[d]);
    if (o < len) snprintf(out + o, len - o, "]");
}

const char *const ckpt_sec_path[SEC_COUNT] = {"params", "buffers", "optimizer/m", "optimizer/v", "ema"};

float *ckpt_sec_data(const fdp_ckpt_state *s, int sec) {
    switch (sec) {
    case SEC_PARAMS: return s->params;
    case SEC_BUFFERS: return s->buffers;
    case SEC_OPT_M: return s->opt_m;
    case SEC_OPT_V: return s->opt_v;
    default: return s->ema;
    }
}

static int ds_info_cmp(const void *a, const void *b) {
    return strcmp(((const ds_info *)a)->name, ((const ds_info *)b)->name);
}

/* The entries of kind k of a table, sorted by name. */
ds_info *ckpt_table_infos(const fdp_params *t, fdp_param_kind k, int *n_out) {
    ds_info *v = fdp_xcalloc((size_t)(t->count ? t->count : 1), sizeof *v);
    int n = 0;
    for (int i = 0; i < t->count; i++) {
        const fdp_param_entry *e = &t->entries[i];
        if (e->kind != k) continue;
        ds_info *d = &v[n++];
        snprintf(d->name, sizeof d->name, "%s", e->name);
        d->ndim = e->ndim;
        for (int j = 0; j < e->ndim; j++) d->dims[j] = e->shape[j];
        d->numel = e->numel;
        d->offset = e->offset;
    }
    qsort(v, (size_t)n, sizeof *v, ds_info_cmp);
    *n_out = n;
    return v;
}

int ckpt_valid_name(const char *name) { return name[0] && strcmp(name, ".") != 0 && !strchr(name, '/'); }

typedef struct name_list {
    char **names;
    int n, cap;
} name_list;

static herr_t collect_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    name_list *l = data;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->names = fdp_xrealloc(l->names, sizeof *l->names * (size_t)l->cap);
    }
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) return -1;
    l->n++;
    return 0;
}

static void name_list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static int list_links(hid_t loc, const char *gpath, name_list *l, const char *path, fdp_err *err) {
    memset(l, 0, sizeof *l);
    hid_t g = H5Gopen2(loc, gpath, H5P_DEFAULT);
    if (g < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot open group %s", gpath);
        return ckpt_h5fail(path, err, what);
    }
    int rc = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, collect_cb, l) < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot list group %s", gpath);
        rc = ckpt_h5fail(path, err, what);
        name_list_free(l);
    }
    H5Gclose(g);
    return rc;
}

static int in_set(const char *name, const char *const *set, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, set[i]) == 0) return 1;
    return 0;
}

/* Every object of a checkpoint is known: refuse anything else (the checksum
 * would not cover it). Also reports which optional sections exist. */
int ckpt_check_structure(hid_t file, int present[SEC_COUNT], const char *path, fdp_err *err) {
    static const char *const root_ok[] = {"params", "buffers", "optimizer", "ema", "config"};
    static const char *const opt_ok[] = {"m", "v"};
    name_list l;
    if (list_links(file, "/", &l, path, err)) return -1;
    int rc = 0, has_opt = 0;
    for (int i = 0; i < SEC_COUNT; i++) present[i] = 0;
    int has_config = 0;
    for (int i = 0; i < l.n && !rc; i++) {
        if (!in_set(l.names[i], root_ok, 5)) rc = fdp_err_set(err, "checkpoint %s: unexpected object /%s", path, l.names[i]);
        else if (strcmp(l.names[i], "params") == 0) present[SEC_PARAMS] = 1;
        else if (strcmp(l.names[i], "buffers") == 0) present[SEC_BUFFERS] = 1;
        else if (strcmp(l.names[i], "ema") == 0) present[SEC_EMA] = 1;
        else if (strcmp(l.names[i], "optimizer") == 0) has_opt = 1;
        else has_config = 1;
    }
    name_list_free(&l);
    if (rc) return rc;
    if (!present[SEC_PARAMS]) return fdp_err_set(err, "checkpoint %s: missing group /params", path);
    if (!present[SEC_BUFFERS]) return fdp_err_set(err, "checkpoint %s: missing group /buffers", path);
    if (!has_config) return fdp_err_set(err, "checkpoint %s: missing dataset /config", path);
    if (has_opt) {
        if (list_links(file, "/optimizer", &l, path, err)) return -1;
        for (int i = 0; i < l.n && !rc; i++) {
            if (!in_set(l.names[i], opt_ok, 2))
                rc = fdp_err_set(err, "checkpoint %s: unexpected object /optimizer/%s", path, l.names[i]);
            else if (strcmp(l.names[i], "m") == 0) present[SEC_OPT_M] = 1;
            else present[SEC_OPT_V] = 1;
        }
        name_list_free(&l);
    }
    return rc;
}

/* The shape of dataset `name` of section sec (open as g) into d: float32, at most
 * FDP_MAX_DIMS dims, data no larger than the file (bounds the reads and the
 * allocations). */
static int dataset_info(hid_t g, int sec, const char *name, uint64_t file_size, ds_info *d, const char *path,
                        fdp_err *err) {
    const char *sp_name = ckpt_sec_path[sec];
    char what[FDP_NAME_MAX + 64];
    H5O_info_t oi;
    if (H5Oget_info_by_name(g, name, &oi, H5P_DEFAULT) < 0) {
        snprintf(what, sizeof what, "damaged file: cannot read /%s/%s", sp_name, name);
        return ckpt_h5fail(path, err, what);
    }
    if (oi.type != H5O_TYPE_DATASET)
        return fdp_err_set(err, "checkpoint %s: /%s/%s is not a dataset", path, sp_name, name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) {
        snprintf(what, sizeof what, "damaged file: cannot open /%s/%s", sp_name, name);
        return ckpt_h5fail(path, err, what);
    }
    int rc = 0;
    hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds);
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) {
        rc = fdp_err_set(err, "checkpoint %s: /%s/%s is not float32", path, sp_name, name);
    } else {
        H5S_class_t sc = H5Sget_simple_extent_type(sp);
        int nd = sc == H5S_SCALAR ? 0 : sc == H5S_SIMPLE ? H5Sget_simple_extent_ndims(sp) : -1;
        if (nd < 0 || nd > FDP_MAX_DIMS) {
            rc = fdp_err_set(err, "checkpoint %s: /%s/%s has an unsupported dataspace", path, sp_name, name);
        } else {
            hsize_t dims[FDP_MAX_DIMS];
            if (nd > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
            d->ndim = nd;
            d->numel = 1;
            /* the float32 data must fit in the file: bounds the reads and the allocations */
            uint64_t max_numel = file_size / 4, numel = 1;
            for (int j = 0; j < nd && !rc; j++) {
                if (dims[j] > 0 && numel > max_numel / dims[j])
                    rc = fdp_err_set(err, "checkpoint %s: damaged file: /%s/%s has a shape larger than the file", path,
                                     sp_name, name);
                numel *= dims[j];
                d->dims[j] = (int64_t)dims[j];
            }
            if (!rc && numel > max_numel)
                rc = fdp_err_set(err, "checkpoint %s: damaged file: /%s/%s has a shape larger than the file", path,
                                 sp_name, name);
            d->numel = (int64_t)numel;
        }
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

int ckpt_list_section(hid_t file, int sec, ds_info **out, int *n_out, const char *path, fdp_err *err) {
    *out = NULL;
    *n_out = 0;
    name_list l;
    if (list_links(file, ckpt_sec_path[sec], &l, path, err)) return -1;
    hid_t g = H5Gopen2(file, ckpt_sec_path[sec], H5P_DEFAULT);
    if (g < 0) {
        name_list_free(&l);
        return ckpt_h5fail(path, err, "cannot open a section group");
    }
    ds_info *v = fdp_xcalloc((size_t)(l.n ? l.n : 1), sizeof *v);
    int rc = 0;
    uint64_t file_size = ckpt_obj_file_size(g);
    for (int i = 0; i < l.n && !rc; i++) {
        const char *name = l.names[i];
        ds_info *d = &v[i];
        if (strlen(name) >= FDP_NAME_MAX) {
            rc = fdp_err_set(err, "checkpoint %s: name too long in /%s: %.60s...", path, ckpt_sec_path[sec], name);
            break;
        }
        snprintf(d->name, sizeof d->name, "%s", name);
        d->offset = -1;
        rc = dataset_info(g, sec, name, file_size, d, path, err);
    }
    H5Gclose(g);
    int n = l.n;
    name_list_free(&l);
    if (rc) {
        free(v);
        return rc;
    }
    qsort(v, (size_t)n, sizeof *v, ds_info_cmp);
    *out = v;
    *n_out = n;
    return 0;
}

static int same_shape(const ds_info *a, const ds_info *b) {
    if (a->ndim != b->ndim) return 0;
    for (int j = 0; j < a->ndim; j++)
        if (a->dims[j] != b->dims[j]) return 0;
    return 1;
}

/* Compare a section of the file with its reference (both sorted by name): the
 * model's table (table != NULL) or, in verify, the file's /params. Copies the
 * reference offsets into the file infos. */
int ckpt_match_section(int sec, ds_info *file_v, int nf, const ds_info *ref, int nr, const fdp_params *table,
                       const char *path, fdp_err *err) {
    const char *sp = ckpt_sec_path[sec];
    char s1[96], s2[96];
    int i = 0, j = 0;
    while (i < nf || j < nr) {
        int c = i == nf ? 1 : j == nr ? -1 : strcmp(file_v[i].name, ref[j].name);
        if (c < 0) { /* in the file, not in the reference */
            if (!table)
                return fdp_err_set(err, "checkpoint %s: /%s/%s has no counterpart in /params", path, sp, file_v[i].name);
            int k = fdp_params_find(table, file_v[i].name);
            return fdp_err_set(err, "checkpoint %s: checkpoint is of another model: /%s/%s is not %s of this model%s",
                               path, sp, file_v[i].name, sec == SEC_BUFFERS ? "a buffer" : "a parameter",
                               k >= 0 ? (table->entries[k].kind == FDP_BUFFER ? " (it is a buffer here)"
                                                                              : " (it is a parameter here)")
                                      : "");
        }
        if (c > 0) { /* in the reference, missing from the file */
            fmt_shape(s2, sizeof s2, ref[j].ndim, ref[j].dims);
            if (!table) return fdp_err_set(err, "checkpoint %s: /params/%s has no counterpart in /%s", path, ref[j].name, sp);
            return fdp_err_set(err, "checkpoint %s: checkpoint is of another model: /%s/%s (shape %s) is missing", path,
                               sp, ref[j].name, s2);
        }
        if (!same_shape(&file_v[i], &ref[j])) {
            fmt_shape(s1, sizeof s1, file_v[i].ndim, file_v[i].dims);
            fmt_shape(s2, sizeof s2, ref[j].ndim, ref[j].dims);
            if (!table)
                return fdp_err_set(err, "checkpoint %s: /%s/%s has shape %s but /params has %s", path, sp,
                                   file_v[i].name, s1, s2);
            return fdp_err_set(err,
                               "checkpoint %s: checkpoint is of another model: /%s/%s has shape %s in the checkpoint "
                               "but %s in this model",
                               path, sp, file_v[i].name, s1, s2);
        }
        file_v[i].offset = ref[j].offset;
        i++;
        j++;
    }
    return 0;
}

/* Read a section's datasets (sorted) into dest (+offset) or a scratch buffer, hashing them. */
int ckpt_read_section(hid_t file, int sec, const ds_info *v, int n, float *dest, float **scratch,
                      int64_t *scratch_cap, xxh64 *h, const char *path, fdp_err *err) {
    hid_t g = H5Gopen2(file, ckpt_sec_path[sec], H5P_DEFAULT);
    if (g < 0) return ckpt_h5fail(path, err, "cannot open a section group");
    ckpt_hash_cstr0(h, ckpt_sec_path[sec]);
    ckpt_hash_u64(h, (uint64_t)n);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const ds_info *d = &v[i];
        ckpt_hash_cstr0(h, d->name);
        ckpt_hash_u64(h, (uint64_t)d->ndim);
        for (int j = 0; j < d->ndim; j++) ckpt_hash_u64(h, (uint64_t)d->dims[j]);
        if (d->numel == 0) continue;
        float *buf;
        if (dest && d->offset >= 0) {
            buf = dest + d->offset;
        } else {
            if (d->numel > *scratch_cap) {
                free(*scratch);
                *scratch = malloc(sizeof(float) * (size_t)d->numel);
                *scratch_cap = *scratch ? d->numel : 0;
                if (!*scratch) {
                    rc = fdp_err_set(err, "checkpoint %s: out of memory reading /%s/%s", path, ckpt_sec_path[sec], d->name);
                    break;
                }
            }
            buf = *scratch;
        }
        hid_t ds = H5Dopen2(g, d->name, H5P_DEFAULT);
        char what[FDP_NAME_MAX + 64];
        snprintf(what, sizeof what, "cannot read /%s/%s", ckpt_sec_path[sec], d->name);
        if (ds < 0) {
            rc = ckpt_h5fail(path, err, what);
            break;
        }
        if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) rc = ckpt_h5fail(path, err, what);
        else ckpt_hash_bytes(h, buf, sizeof(float) * (size_t)d->numel);
        H5Dclose(ds);
    }
    H5Gclose(g);
    return rc;
}
