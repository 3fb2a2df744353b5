/* checkpoint_read.c — reading a checkpoint: the pass over its bytes, the checked
 * open (format, version, meta), and load, verify, read_header and sections
 * (contract: include/flowdp/checkpoint.h). */
#include "checkpoint_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/h5util.h"

static int has_hdf5_signature(const char *path) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[8];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = read(fd, b, 8);
    close(fd);
    return r == 8 && memcmp(b, sig, 8) == 0;
}

/* ---- the pass over the file's bytes before HDF5 opens it (flowdp/h5util.h) --------
 * Checks the file trailer (XXH64 of every byte before it: any changed byte is
 * refused here, before anything is parsed, the config included) and the global heap
 * collections (libhdf5 1.10.8 hangs on some damaged ones). The last file found whole
 * is remembered (path, inode, size, mtime): a load right after a verify does not
 * read the file twice. Returns 0 or -1 with err. */
static int check_bytes(const char *path, const struct stat *st, fdp_err *err) {
    static struct {
        char path[CKPT_PATH_MAX];
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
    } last;
    if (strcmp(last.path, path) == 0 && last.dev == st->st_dev && last.ino == st->st_ino && last.size == st->st_size &&
        last.mtime.tv_sec == st->st_mtim.tv_sec && last.mtime.tv_nsec == st->st_mtim.tv_nsec)
        return 0;
    fdp_h5_scan sc;
    int e = fdp_h5_prescan(path, UINT64_MAX, &sc);
    if (e) return fdp_err_set(err, "checkpoint %s: cannot read: %s", path, strerror(e));
    if (sc.trailer == FDP_H5_TRAILER_BAD)
        return fdp_err_set(err, "checkpoint %s: damaged file: its checksum does not match its bytes (changed or "
                                "corrupted after it was written); nothing was read from it",
                           path);
    if (sc.bad_gcol)
        return fdp_err_set(err, "checkpoint %s: damaged file: the HDF5 global heap at byte %llu is inconsistent", path,
                           (unsigned long long)(sc.bad_gcol - 1));
    snprintf(last.path, sizeof last.path, "%s", path);
    last.dev = st->st_dev;
    last.ino = st->st_ino;
    last.size = st->st_size;
    last.mtime = st->st_mtim;
    return 0;
}

/* Open a checkpoint read-only and check format, version and meta. */
static hid_t open_checked(const char *path, fdp_ckpt_meta *m, uint64_t *checksum, fdp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fdp_err_set(err, "checkpoint %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        fdp_err_set(err, "checkpoint %s: not a regular file", path);
        return -1;
    }
    if (check_bytes(path, &st, err) != 0) return -1;
    hid_t fapl = fdp_h5_fapl();
    if (fapl < 0) {
        ckpt_h5fail(path, err, "cannot set up file access");
        return -1;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (file < 0) {
        char cause[600];
        fdp_h5_cause(cause, sizeof cause);
        H5Pclose(fapl);
        if (!has_hdf5_signature(path))
            fdp_err_set(err, "checkpoint %s: not an HDF5 file (%lld bytes, no HDF5 signature)", path, (long long)st.st_size);
        else
            fdp_err_set(err, "checkpoint %s: truncated or damaged HDF5 file (%lld bytes): %s", path,
                        (long long)st.st_size, cause);
        return -1;
    }
    H5Pclose(fapl);
    if (ckpt_meta_read(file, m, checksum, path, err) != 0) {
        H5Fclose(file);
        return -1;
    }
    return file;
}

/* Read /config into a malloc'd string. */
static int read_config(hid_t file, char **config, const char *path, fdp_err *err) {
    *config = NULL;
    hid_t ds = H5Dopen2(file, "config", H5P_DEFAULT);
    if (ds < 0) return ckpt_h5fail(path, err, "cannot open /config");
    int rc = ckpt_str_read(ds, 0, "/config", config, path, err);
    H5Dclose(ds);
    return rc;
}

/* Every section present, in the checksum's order: listed, matched against the model's
 * table (load: s != NULL) or, for optimizer/ema, the file's /params (verify), read
 * into the state's buffers (or scratch) and fed to the checksum. */
static int read_sections(hid_t file, const int present[SEC_COUNT], fdp_ckpt_state *s, xxh64 *h, const char *path,
                         fdp_err *err) {
    const fdp_params *table = s ? s->table : NULL;
    ds_info *ref_par = NULL, *ref_buf = NULL, *file_par = NULL;
    int n_ref_par = 0, n_ref_buf = 0, n_file_par = 0, rc = 0;
    if (table) {
        ref_par = ckpt_table_infos(table, FDP_PARAM, &n_ref_par);
        ref_buf = ckpt_table_infos(table, FDP_BUFFER, &n_ref_buf);
    }
    float *scratch = NULL;
    int64_t scratch_cap = 0;
    for (int sec = 0; sec < SEC_COUNT && !rc; sec++) {
        if (!present[sec]) continue;
        ds_info *v = NULL;
        int n = 0;
        rc = ckpt_list_section(file, sec, &v, &n, path, err);
        if (rc) break;
        if (table) {
            if (sec == SEC_BUFFERS) rc = ckpt_match_section(sec, v, n, ref_buf, n_ref_buf, table, path, err);
            else rc = ckpt_match_section(sec, v, n, ref_par, n_ref_par, table, path, err);
        } else if (sec >= SEC_OPT_M) {
            rc = ckpt_match_section(sec, v, n, file_par, n_file_par, NULL, path, err);
        }
        if (!rc)
            rc = ckpt_read_section(file, sec, v, n, s ? ckpt_sec_data(s, sec) : NULL, &scratch, &scratch_cap, h, path,
                                   err);
        if (sec == SEC_PARAMS && !table) {
            file_par = v;
            n_file_par = n;
        } else {
            free(v);
        }
    }
    free(scratch);
    free(ref_par);
    free(ref_buf);
    free(file_par);
    return rc;
}

/* Load (s != NULL) or verify (s == NULL) a checkpoint. */
static int ckpt_read(const char *path, const char *want, fdp_ckpt_state *s, fdp_ckpt_meta *meta_out, char **config_out,
                     fdp_err *err) {
    fdp_ckpt_meta m;
    uint64_t stored = 0;
    hid_t file = open_checked(path, &m, &stored, err);
    if (file < 0) return -1;
    int rc = 0;
    if (want && want[0] && strcmp(want, m.model_type) != 0)
        rc = fdp_err_set(err, "checkpoint %s: checkpoint is of another model: model_type '%s', this run is '%s'", path,
                         m.model_type, want);
    int present[SEC_COUNT] = {0};
    if (!rc) rc = ckpt_check_structure(file, present, path, err);
    for (int sec = SEC_OPT_M; sec < SEC_COUNT && !rc && s; sec++)
        if (ckpt_sec_data(s, sec) && !present[sec])
            rc = fdp_err_set(err, "checkpoint %s: has no /%s (saved without it); hint: check fdp_ckpt_sections first", path,
                             ckpt_sec_path[sec]);

    char *config = NULL;
    if (!rc) rc = read_config(file, &config, path, err);
    xxh64 h;
    fdp_xxh64_init(&h, 0);
    if (!rc) ckpt_meta_hash(&h, &m, config);

    if (!rc) rc = read_sections(file, present, s, &h, path, err);
    H5Fclose(file);
    if (!rc) {
        uint64_t computed = fdp_xxh64_digest(&h);
        if (computed != stored)
            rc = fdp_err_set(err, "checkpoint %s: corrupt: checksum mismatch (stored %016llx, computed %016llx)", path,
                             (unsigned long long)stored, (unsigned long long)computed);
    }
    if (!rc) {
        if (meta_out) *meta_out = m;
        if (config_out) {
            *config_out = config;
            config = NULL;
        }
    }
    free(config);
    return rc;
}

int fdp_ckpt_load_expect(const char *path, const char *expect_model_type, fdp_ckpt_state *s, fdp_ckpt_meta *meta,
                         char **config_text, fdp_err *err) {
    if (config_text) *config_text = NULL;
    if (!path || !s || !s->table) return fdp_err_set(err, "checkpoint %s: load needs a state with a table", path ? path : "(null)");
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int rc = ckpt_read(path, expect_model_type, s, meta, config_text, err);
    fdp_h5_quiet_end(&q);
    return rc;
}

int fdp_ckpt_load(const char *path, fdp_ckpt_state *s, fdp_ckpt_meta *meta, char **config_text, fdp_err *err) {
    return fdp_ckpt_load_expect(path, NULL, s, meta, config_text, err);
}

int fdp_ckpt_verify(const char *path, fdp_ckpt_meta *meta_out, fdp_err *err) {
    if (!path) return fdp_err_set(err, "checkpoint: NULL path");
    fdp_ckpt_meta m;
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    int rc = ckpt_read(path, NULL, NULL, &m, NULL, err);
    fdp_h5_quiet_end(&q);
    if (!rc && meta_out) *meta_out = m;
    return rc;
}

int fdp_ckpt_read_header(const char *path, fdp_ckpt_meta *meta, char **config_text, fdp_err *err) {
    if (config_text) *config_text = NULL;
    if (!path) return fdp_err_set(err, "checkpoint: NULL path");
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    fdp_ckpt_meta m;
    uint64_t sum;
    char *config = NULL;
    int rc = -1;
    hid_t file = open_checked(path, &m, &sum, err);
    if (file >= 0) {
        rc = read_config(file, &config, path, err);
        H5Fclose(file);
    }
    fdp_h5_quiet_end(&q);
    if (rc == 0) {
        if (meta) *meta = m;
        if (config_text) {
            *config_text = config;
            config = NULL;
        }
    }
    free(config);
    return rc;
}

int fdp_ckpt_sections(const char *path, fdp_err *err) {
    if (!path) return fdp_err_set(err, "checkpoint: NULL path");
    fdp_h5_quiet q;
    fdp_h5_quiet_begin(&q);
    fdp_ckpt_meta m;
    uint64_t sum;
    int present[SEC_COUNT], rc = -1;
    hid_t file = open_checked(path, &m, &sum, err);
    if (file >= 0) {
        if (ckpt_check_structure(file, present, path, err) == 0)
            rc = (present[SEC_OPT_M] ? FDP_CKPT_HAS_OPT_M : 0) | (present[SEC_OPT_V] ? FDP_CKPT_HAS_OPT_V : 0) |
                 (present[SEC_EMA] ? FDP_CKPT_HAS_EMA : 0);
        H5Fclose(file);
    }
    fdp_h5_quiet_end(&q);
    return rc;
}
