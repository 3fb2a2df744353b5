/* checkpoint_dir.c — the checkpoint directory: file names, the newest valid
 * checkpoint, pruning old ones, stale temporaries, and the atomic copy (best.h5).
 * See "Files in a checkpoint directory" in include/flowdp/checkpoint.h. */
#include "checkpoint_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "flowdp/fsutil.h"
#include "flowdp/log.h"

int fdp_ckpt_path_for_step(const char *dir, int64_t step, char *out, size_t len) {
    if (!dir || step < 0 || !out) return -1;
    int n = snprintf(out, len, "%s/ckpt_%09lld.h5", dir, (long long)step);
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

/* "ckpt_<digits>.h5" -> step */
static int parse_ckpt_name(const char *name, int64_t *step) {
    if (strncmp(name, "ckpt_", 5) != 0) return 0;
    const char *p = name + 5;
    int64_t v = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (nd >= 18) return 0;
        v = v * 10 + (*p - '0');
        p++;
        nd++;
    }
    if (nd == 0 || strcmp(p, ".h5") != 0) return 0;
    *step = v;
    return 1;
}

/* "<anything>.h5.tmp.<digits>" -> the writer's pid */
static int parse_tmp_name(const char *name, long *pid) {
    const char *t = strstr(name, ".h5.tmp.");
    if (!t) return 0;
    const char *p = t + 8;
    if (!*p) return 0;
    long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000000L) return 0;
        v = v * 10 + (*p - '0');
    }
    *pid = v;
    return 1;
}

typedef struct ckpt_file {
    int64_t step;
    char name[256];
} ckpt_file;

static int ckpt_file_cmp_desc(const void *a, const void *b) {
    int64_t x = ((const ckpt_file *)a)->step, y = ((const ckpt_file *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* List ckpt_*.h5 of dir, newest step first; remove stale temporaries.
 * Returns 0, 1 when dir does not exist, -1 on error. */
static int scan_dir(const char *dir, ckpt_file **out, int *n_out, fdp_err *err) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 1;
        return fdp_err_set(err, "checkpoint directory %s: cannot open: %s", dir, strerror(errno));
    }
    ckpt_file *v = NULL;
    int n = 0, cap = 0;
    char full[CKPT_PATH_MAX];
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        long pid;
        if (parse_ckpt_name(e->d_name, &step) && strlen(e->d_name) < sizeof v->name) {
            if (n == cap) {
                cap = cap ? 2 * cap : 32;
                v = fdp_xrealloc(v, sizeof *v * (size_t)cap);
            }
            v[n].step = step;
            snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
            n++;
        } else if (parse_tmp_name(e->d_name, &pid) && pid != (long)getpid()) {
            struct stat st;
            if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full) continue;
            if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            double age = difftime(now, st.st_mtime);
            if (age > FDP_CKPT_STALE_TMP_SECONDS) {
                if (unlink(full) == 0)
                    fdp_warn("removed stale temporary file %s (left by a writer that was killed, %.0f s old)", full, age);
                else
                    fdp_warn("cannot remove stale temporary file %s: %s", full, strerror(errno));
            } else {
                fdp_debug("ignoring temporary file %s (%.0f s old: a writer may still be at work)", full, age);
            }
        }
    }
    closedir(d);
    if (n > 1) qsort(v, (size_t)n, sizeof *v, ckpt_file_cmp_desc);
    *out = v;
    *n_out = n;
    return 0;
}

int fdp_ckpt_find_newest_valid(const char *dir, char *out, size_t len, fdp_err *err) {
    ckpt_file *v;
    int n;
    int rc = scan_dir(dir, &v, &n, err);
    if (rc) return rc;
    char full[CKPT_PATH_MAX];
    rc = 1;
    for (int i = 0; i < n; i++) {
        if (snprintf(full, sizeof full, "%s/%s", dir, v[i].name) >= (int)sizeof full) continue;
        fdp_err e = {{0}};
        if (fdp_ckpt_verify(full, NULL, &e) != 0) {
            fdp_warn("skipping invalid checkpoint: %s", e.msg);
            continue;
        }
        if (strlen(full) >= len) rc = fdp_err_set(err, "checkpoint directory %s: path of %s does not fit", dir, v[i].name);
        else {
            memcpy(out, full, strlen(full) + 1);
            rc = 0;
        }
        break;
    }
    free(v);
    return rc;
}

int fdp_ckpt_prune(const char *dir, int keep_last, const char *keep_also, int64_t max_step, fdp_err *err) {
    if (keep_last < 1) return fdp_err_set(err, "checkpoint directory %s: prune needs keep_last >= 1 (got %d)", dir, keep_last);
    struct stat keep_st;
    int have_keep = keep_also && stat(keep_also, &keep_st) == 0;
    ckpt_file *v;
    int n;
    int rc = scan_dir(dir, &v, &n, err);
    if (rc == 1) return 0;
    if (rc) return rc;
    char full[CKPT_PATH_MAX];
    int kept = 0;
    for (int i = 0; i < n && !rc; i++) { /* v: newest step first */
        if (v[i].step > max_step) continue; /* not this run's: never counted, never deleted */
        if (snprintf(full, sizeof full, "%s/%s", dir, v[i].name) >= (int)sizeof full) continue;
        struct stat st;
        if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue; /* not a file of ours */
        if (kept < keep_last || (have_keep && st.st_dev == keep_st.st_dev && st.st_ino == keep_st.st_ino)) {
            kept++;
            continue;
        }
        if (unlink(full) != 0 && errno != ENOENT)
            rc = fdp_err_set(err, "checkpoint directory %s: cannot delete %s: %s", dir, v[i].name, strerror(errno));
        else
            fdp_debug("pruned %s", full);
    }
    free(v);
    return rc;
}

int fdp_ckpt_copy_atomic(const char *src, const char *dst, fdp_err *err) {
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid()) >= (int)sizeof tmp)
        return fdp_err_set(err, "checkpoint %s: path too long", dst);
    fdp_dir_of(dst, dir, sizeof dir);
    unlink(tmp);
    /* an independent file (never a hard link: editing or damaging one must not change
     * the other); copy_file clones the extents where the filesystem can (FICLONE) */
    int e = fdp_copy_file(src, tmp);
    if (e) {
        unlink(tmp);
        return fdp_err_set(err, "checkpoint %s: cannot copy %s to %s: %s", dst, src, tmp, strerror(e));
    }
    if (rename(tmp, dst) != 0) {
        e = errno;
        unlink(tmp);
        return fdp_err_set(err, "checkpoint %s: cannot rename %s over it: %s", dst, tmp, strerror(e));
    }
    e = fdp_fsync_dir(dir);
    if (e) return fdp_err_set(err, "checkpoint %s: written, but cannot fsync directory %s: %s", dst, dir, strerror(e));
    return 0;
}
