/* checkpoint_meta.c — the checkpoint's root metadata: one table of the fields of
 * fdp_ckpt_meta, which alone drives hashing, writing and reading them, and the
 * hash helpers of the checksum stream (definition: include/flowdp/checkpoint.h). */
#include "checkpoint_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- the checksum stream ---------------------------------------------------------- */
uint64_t fdp_ckpt_xxh64(const void *data, size_t n, uint64_t seed) {
    xxh64 h;
    fdp_xxh64_init(&h, seed);
    fdp_xxh64_update(&h, data, n);
    return fdp_xxh64_digest(&h);
}

void ckpt_hash_bytes(xxh64 *h, const void *data, size_t n) { fdp_xxh64_update(h, data, n); }
void ckpt_hash_u64(xxh64 *h, uint64_t v) { fdp_xxh64_update(h, &v, 8); }
void ckpt_hash_i64(xxh64 *h, int64_t v) { fdp_xxh64_update(h, &v, 8); }
void ckpt_hash_cstr0(xxh64 *h, const char *s) { fdp_xxh64_update(h, s, strlen(s) + 1); }
static void hash_f64(xxh64 *h, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    ckpt_hash_u64(h, u);
}
static void hash_lenstr(xxh64 *h, const char *s) {
    size_t n = strlen(s);
    ckpt_hash_u64(h, (uint64_t)n);
    fdp_xxh64_update(h, s, n);
}

/* ---- the table -------------------------------------------------------------------------
 * One row per field of fdp_ckpt_meta, in the order of the checksum stream (which is
 * also the order the attributes are written and read; changing it changes every
 * checksum: old checkpoints would no longer verify). The attribute is named like the
 * member; its type follows from the member's C type, so the two cannot drift apart:
 *   type      member      root attribute     hashed as
 *   I32       int         int32              i64 (sign-extended)
 *   I64       int64_t     int64              i64
 *   U64       uint64_t    uint64             u64
 *   F64       double      float64            u64 bit pattern
 *   STR       char[N]     vlen UTF-8 string  u64 strlen, the bytes */
typedef enum { META_I32, META_I64, META_U64, META_F64, META_STR } meta_type;

typedef struct meta_field {
    const char *name; /* the root attribute, = the member's name */
    meta_type type;
    size_t offset;    /* of the member in fdp_ckpt_meta */
    size_t size;      /* of the member (META_STR: its capacity, the NUL included) */
} meta_field;

_Static_assert(sizeof(int) == sizeof(int32_t), "META_I32 members are int, stored as int32");

#define META_MEMBER(member) (((const fdp_ckpt_meta *)0)->member)
#define META_TYPE(member)                                                                                         \
    _Generic(META_MEMBER(member) + 0, int: META_I32, int64_t: META_I64, uint64_t: META_U64, double: META_F64,  \
             const char *: META_STR)
#define META_FIELD(member) {#member, META_TYPE(member), offsetof(fdp_ckpt_meta, member), sizeof META_MEMBER(member)}

static const meta_field meta_fields[] = {
    META_FIELD(step),
    META_FIELD(epoch),
    META_FIELD(epoch_step),
    META_FIELD(seed),
    META_FIELD(world_size),
    META_FIELD(best_test_bpd),
    META_FIELD(last_test_bpd),
    META_FIELD(model_type),
    META_FIELD(nonfinite_skipped),
    META_FIELD(image_c),
    META_FIELD(image_h),
    META_FIELD(image_w),
    META_FIELD(global_batch),
};
#define N_META_FIELDS ((int)(sizeof meta_fields / sizeof meta_fields[0]))

static const void *field_ptr(const fdp_ckpt_meta *m, const meta_field *f) { return (const char *)m + f->offset; }

/* The HDF5 file and memory types and the class of a numeric field. */
static void field_h5types(meta_type t, hid_t *ftype, hid_t *mtype, H5T_class_t *cls) {
    switch (t) {
    case META_I32: *ftype = H5T_STD_I32LE, *mtype = H5T_NATIVE_INT32, *cls = H5T_INTEGER; break;
    case META_I64: *ftype = H5T_STD_I64LE, *mtype = H5T_NATIVE_INT64, *cls = H5T_INTEGER; break;
    case META_U64: *ftype = H5T_STD_U64LE, *mtype = H5T_NATIVE_UINT64, *cls = H5T_INTEGER; break;
    default: *ftype = H5T_IEEE_F64LE, *mtype = H5T_NATIVE_DOUBLE, *cls = H5T_FLOAT; break;
    }
}

static void hash_field(xxh64 *h, const fdp_ckpt_meta *m, const meta_field *f) {
    const void *p = field_ptr(m, f);
    switch (f->type) {
    case META_I32: {
        int v;
        memcpy(&v, p, sizeof v);
        ckpt_hash_i64(h, v);
        break;
    }
    case META_I64: {
        int64_t v;
        memcpy(&v, p, sizeof v);
        ckpt_hash_i64(h, v);
        break;
    }
    case META_U64: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        ckpt_hash_u64(h, v);
        break;
    }
    case META_F64: {
        double v;
        memcpy(&v, p, sizeof v);
        hash_f64(h, v);
        break;
    }
    case META_STR: hash_lenstr(h, p); break;
    }
}

void ckpt_meta_hash(xxh64 *h, const fdp_ckpt_meta *m, const char *config) {
    ckpt_hash_cstr0(h, FDP_CKPT_FORMAT);
    ckpt_hash_u64(h, FDP_CKPT_FORMAT_VERSION);
    for (int i = 0; i < N_META_FIELDS; i++) hash_field(h, m, &meta_fields[i]);
    hash_lenstr(h, config);
}

int ckpt_meta_write(hid_t file, const fdp_ckpt_meta *m, const char *path, fdp_err *err) {
    int32_t version = FDP_CKPT_FORMAT_VERSION;
    int rc = ckpt_attr_write_str(file, "format", FDP_CKPT_FORMAT, path, err);
    if (!rc) rc = ckpt_attr_write(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version, path, err);
    for (int i = 0; i < N_META_FIELDS && !rc; i++) {
        const meta_field *f = &meta_fields[i];
        if (f->type == META_STR) {
            rc = ckpt_attr_write_str(file, f->name, field_ptr(m, f), path, err);
        } else {
            hid_t ftype, mtype;
            H5T_class_t cls;
            field_h5types(f->type, &ftype, &mtype, &cls);
            rc = ckpt_attr_write(file, f->name, ftype, mtype, field_ptr(m, f), path, err);
        }
    }
    return rc;
}

/* "format" and "format_version": this is a flowdp checkpoint this build reads. */
static int check_format(hid_t file, const char *path, fdp_err *err) {
    char format[64];
    int32_t version = 0;
    htri_t has_format = H5Aexists(file, "format");
    if (has_format < 0) return ckpt_h5fail(path, err, "damaged file: cannot read the root group");
    if (has_format == 0)
        return fdp_err_set(err, "checkpoint %s: not a flowdp checkpoint (no 'format' attribute)", path);
    if (ckpt_attr_read_str(file, "format", format, sizeof format, path, err)) return -1;
    if (strcmp(format, FDP_CKPT_FORMAT) != 0)
        return fdp_err_set(err, "checkpoint %s: not a flowdp checkpoint (format '%s', expected '%s')", path, format,
                           FDP_CKPT_FORMAT);
    if (ckpt_attr_read(file, "format_version", H5T_INTEGER, H5T_NATIVE_INT32, &version, path, err)) return -1;
    if (version != FDP_CKPT_FORMAT_VERSION)
        return fdp_err_set(err, "checkpoint %s: unsupported format_version %d (this build reads %d)", path,
                           (int)version, FDP_CKPT_FORMAT_VERSION);
    return 0;
}

int ckpt_meta_read(hid_t file, fdp_ckpt_meta *m, uint64_t *checksum, const char *path, fdp_err *err) {
    memset(m, 0, sizeof *m);
    int rc = check_format(file, path, err);
    if (!rc) rc = ckpt_attr_read(file, "checksum", H5T_INTEGER, H5T_NATIVE_UINT64, checksum, path, err);
    for (int i = 0; i < N_META_FIELDS && !rc; i++) {
        const meta_field *f = &meta_fields[i];
        void *p = (char *)m + f->offset;
        if (f->type == META_STR) {
            rc = ckpt_attr_read_str(file, f->name, p, f->size, path, err);
        } else {
            hid_t ftype, mtype;
            H5T_class_t cls;
            field_h5types(f->type, &ftype, &mtype, &cls);
            rc = ckpt_attr_read(file, f->name, cls, mtype, p, path, err);
        }
    }
    return rc;
}
