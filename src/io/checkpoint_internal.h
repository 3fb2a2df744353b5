/* checkpoint_internal.h — private to src/io/checkpoint_*.c, the checkpoints of
 * include/flowdp/checkpoint.h (layout, checksum and contract are defined there):
 *   checkpoint_meta.c      the table of root metadata attributes; it alone hashes,
 *                          writes and reads them (and the format/version/checksum)
 *   checkpoint_h5.c        HDF5 plumbing: errors, scalar attributes, strings
 *   checkpoint_sections.c  the data sections: the model's table as sorted dataset
 *                          lists, the file's structure, listing/matching/reading
 *   checkpoint_write.c     the in-memory HDF5 image, its trailer, the atomic save
 *   checkpoint_read.c      the checked open, load, verify, read_header, sections
 *   checkpoint_dir.c       the checkpoint directory: names, newest valid, prune, copy
 * Every function returning int here returns 0, or -1 with err set to a one-line
 * "checkpoint <path>: ..." message. */
#ifndef FLOWDP_CHECKPOINT_INTERNAL_H
#define FLOWDP_CHECKPOINT_INTERNAL_H
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "flowdp/checkpoint.h"
#include "flowdp/error.h"
#include "flowdp/params.h"
#include "flowdp/xxh64.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint checksum hashes host integers and floats as little-endian bytes"
#endif

#define CKPT_PATH_MAX 4096

/* ---- the checksum stream (checkpoint_meta.c; src/core/xxh64.c is the hash) ------- */
typedef fdp_xxh64_state xxh64;
void ckpt_hash_u64(xxh64 *h, uint64_t v);
void ckpt_hash_i64(xxh64 *h, int64_t v);
void ckpt_hash_cstr0(xxh64 *h, const char *s); /* the bytes and one NUL */
void ckpt_hash_bytes(xxh64 *h, const void *data, size_t n);

/* ---- the metadata (checkpoint_meta.c) -------------------------------------------- */
/* The head of the checksummed stream: format, version, every meta field, config. */
void ckpt_meta_hash(xxh64 *h, const fdp_ckpt_meta *m, const char *config);
/* The root attributes "format", "format_version" and every meta field, in that order. */
int ckpt_meta_write(hid_t file, const fdp_ckpt_meta *m, const char *path, fdp_err *err);
/* Check "format" and "format_version", read "checksum" into *checksum and every meta
 * field into *m (zeroed first). */
int ckpt_meta_read(hid_t file, fdp_ckpt_meta *m, uint64_t *checksum, const char *path, fdp_err *err);

/* ---- HDF5 plumbing (checkpoint_h5.c; the shared part is flowdp/h5util.h) -------- */
/* err = "checkpoint <path>: <what>: <HDF5's cause>"; returns -1. */
int ckpt_h5fail(const char *path, fdp_err *err, const char *what);
/* A variable-length UTF-8 string type, or -1. */
hid_t ckpt_str_type(void);
/* A scalar attribute of file type ftype from val (memory type mtype). */
int ckpt_attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *val, const char *path,
                    fdp_err *err);
int ckpt_attr_write_str(hid_t loc, const char *name, const char *val, const char *path, fdp_err *err);
/* Read a scalar numeric attribute of class cls into out (memory type mtype). */
int ckpt_attr_read(hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, void *out, const char *path,
                   fdp_err *err);
/* Read a string attribute into out[len] (refused when it does not fit). */
int ckpt_attr_read_str(hid_t loc, const char *name, char *out, size_t len, const char *path, fdp_err *err);
/* Read a scalar string held by an attribute (is_attr) or a dataset into a malloc'd
 * NUL-terminated *out; `what` names it in errors. */
int ckpt_str_read(hid_t obj, int is_attr, const char *what, char **out, const char *path, fdp_err *err);
/* The size of the open file that obj belongs to, or 0 when unknown. */
uint64_t ckpt_obj_file_size(hid_t obj);

/* ---- the data sections (checkpoint_sections.c) ----------------------------------- */
enum { SEC_PARAMS, SEC_BUFFERS, SEC_OPT_M, SEC_OPT_V, SEC_EMA, SEC_COUNT };
extern const char *const ckpt_sec_path[SEC_COUNT]; /* "params", ..., "ema" */
/* The state's buffer of a section (NULL = absent). */
float *ckpt_sec_data(const fdp_ckpt_state *s, int sec);

/* One dataset of a section: its name, shape, and (for table entries) offset. */
typedef struct ds_info {
    char name[FDP_NAME_MAX];
    int ndim;
    int64_t dims[FDP_MAX_DIMS];
    int64_t numel;
    int64_t offset; /* into the flat buffer of the table; -1 when not from a table */
} ds_info;

/* The entries of kind k of a table, sorted by name (malloc'd; *n_out of them). */
ds_info *ckpt_table_infos(const fdp_params *t, fdp_param_kind k, int *n_out);
/* 1 when name may be a dataset name: non-empty, not ".", no '/'. */
int ckpt_valid_name(const char *name);
/* Every object of the file is known (refuses anything else: the checksum would not
 * cover it); present[sec] = 1 for each section group found. */
int ckpt_check_structure(hid_t file, int present[SEC_COUNT], const char *path, fdp_err *err);
/* The datasets of a section, validated (float32, <= FDP_MAX_DIMS dims, no larger than
 * the file), sorted by name: *out malloc'd. */
int ckpt_list_section(hid_t file, int sec, ds_info **out, int *n_out, const char *path, fdp_err *err);
/* Compare a section of the file with its reference (both sorted by name): the model's
 * table (table != NULL) or, in verify, the file's /params. Copies the reference
 * offsets into file_v. */
int ckpt_match_section(int sec, ds_info *file_v, int nf, const ds_info *ref, int nr, const fdp_params *table,
                       const char *path, fdp_err *err);
/* Read a section's datasets (sorted) into dest (+offset) or a scratch buffer (grown
 * as needed, the caller frees it), feeding them to the checksum. */
int ckpt_read_section(hid_t file, int sec, const ds_info *v, int n, float *dest, float **scratch,
                      int64_t *scratch_cap, xxh64 *h, const char *path, fdp_err *err);

#endif
