/* pack_images.c — flowdp-pack's image-folder planning: the class sub-folders,
 * the image files in sorted order, and (--skip-bad) the files that do not decode
 * cleanly dropped before the shards are cut. Rules: include/flowdp/pack.h. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_open.h"
#include "pack_internal.h"

/* ---- images folders ---------------------------------------------------------------- */
typedef struct strv {
    char **v;
    int n, cap;
} strv;
static int strv_push(strv *s, const char *x) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **nv = realloc(s->v, sizeof(char *) * (size_t)cap);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->n++;
    return 0;
}
static void strv_free(strv *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* entries of dir: sub-directories into dirs (may be NULL), image-named files into files */
static int list_dir(const char *dir, strv *dirs, strv *files, int64_t *skipped, fdp_err *err) {
    DIR *d = opendir(dir);
    if (!d) return fdp_err_set(err, "%s: cannot read the directory: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        if (e->d_name[0] == '.') continue;
        char p[PK_PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) { /* a dangling link, say: counted with the other skipped files */
            (*skipped)++;
            continue;
        }
        const int image_name = pk_ends_with_ci(e->d_name, ".jpg") || pk_ends_with_ci(e->d_name, ".jpeg") ||
                               pk_ends_with_ci(e->d_name, ".png");
        if (S_ISDIR(st.st_mode)) {
            if (dirs && strv_push(dirs, e->d_name) != 0) rc = fdp_err_set(err, "%s: out of memory", dir);
        } else if (image_name && !S_ISREG(st.st_mode)) { /* a FIFO would hang the decoder */
            rc = fdp_err_set(err, "%s: not a regular file (%s; expected a JPEG or PNG image)", p,
                             fdp_data_mode_name(st.st_mode));
        } else if (image_name) {
            if (strv_push(files, e->d_name) != 0) rc = fdp_err_set(err, "%s: out of memory", dir);
        } else {
            (*skipped)++;
        }
    }
    closedir(d);
    if (dirs && dirs->n > 1) qsort(dirs->v, (size_t)dirs->n, sizeof(char *), cmp_str);
    if (files->n > 1) qsort(files->v, (size_t)files->n, sizeof(char *), cmp_str);
    return rc;
}

/* --skip-bad: decode the files in order until `want` good ones are found (the
 * rest stays unchecked: the limit drops it), dropping the ones that fail; the
 * first failure is kept for the report */
static void drop_bad_images(packer *pk, pk_input *in, int64_t want) {
    int64_t keep = 0, i = 0;
    for (; i < in->n_files && keep < want; i++) {
        uint8_t *rgb = NULL;
        int h = 0, w = 0;
        fdp_err e = {{0}};
        if (fdp_image_decode_rgb(in->files[i], &rgb, &h, &w, &e) != 0) {
            if (pk->bad_images++ == 0) snprintf(pk->first_bad, sizeof pk->first_bad, "%.1000s", e.msg);
            free(in->files[i]);
            continue;
        }
        free(rgb);
        in->files[keep] = in->files[i];
        in->labels[keep] = in->labels[i];
        keep++;
    }
    for (; i < in->n_files; i++, keep++) {
        in->files[keep] = in->files[i];
        in->labels[keep] = in->labels[i];
    }
    in->n_files = in->n = keep;
}

int pk_plan_images(packer *pk, pk_input *in, int64_t remaining, fdp_err *err) {
    if (pk->o->size < 1) return fdp_err_set(err, "%s: packing an image folder needs --size S (the output side)", in->path);
    strv dirs = {0}, top = {0}, all = {0};
    int64_t cap = 0, n = 0;
    int rc = list_dir(in->path, &dirs, &top, &pk->skipped, err);
    if (rc == 0 && dirs.n > 0 && top.n > 0)
        rc = fdp_err_set(err, "%s: holds %d image file(s) beside %d class sub-folder(s); put every image in a class "
                         "folder", in->path, top.n, dirs.n);
    if (rc == 0 && in != pk->in)
        rc = fdp_err_set(err, "%s: only one image folder can be packed per run (its sub-folders are the classes)", in->path);
    for (int i = 0; i < dirs.n && rc == 0; i++)
        if (!pk_index_safe_name(dirs.v[i]))
            rc = fdp_err_set(err, "%s/%s: a class folder whose name holds a control character: the shard index cannot "
                             "carry it (rename the folder)", in->path, dirs.v[i]);
    if (rc == 0 && dirs.n > 0) {
        pk->classes = dirs.v;
        pk->n_classes = dirs.n;
        memset(&dirs, 0, sizeof dirs);
    }
    int nclass = pk->n_classes;
    int ngroups = top.n > 0 || nclass == 0 ? 1 : nclass;
    for (int g = 0; g < ngroups && rc == 0; g++) {
        strv files = {0};
        char sub[PK_PATH_MAX * 2];
        const int labeled = top.n == 0 && nclass > 0;
        if (labeled) {
            snprintf(sub, sizeof sub, "%s/%s", in->path, pk->classes[g]);
            rc = list_dir(sub, NULL, &files, &pk->skipped, err);
        } else {
            snprintf(sub, sizeof sub, "%s", in->path);
            files = top;
            memset(&top, 0, sizeof top);
        }
        for (int i = 0; i < files.n && rc == 0; i++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                char **nf = realloc(in->files, sizeof(char *) * (size_t)cap);
                int32_t *nl = realloc(in->labels, sizeof(int32_t) * (size_t)cap);
                if (nf) in->files = nf;
                if (nl) in->labels = nl;
                if (!nf || !nl) {
                    rc = fdp_err_set(err, "%s: out of memory", in->path);
                    break;
                }
            }
            char p[PK_PATH_MAX * 3];
            snprintf(p, sizeof p, "%s/%s", sub, files.v[i]);
            if (!(in->files[n] = strdup(p))) {
                rc = fdp_err_set(err, "%s: out of memory", in->path);
                break;
            }
            in->labels[n] = labeled ? g : -1;
            n++;
            in->n_files = n;
        }
        strv_free(&files);
    }
    strv_free(&dirs);
    strv_free(&top);
    strv_free(&all);
    in->n = n;
    in->h = in->w = pk->o->size;
    in->c = 3;
    if (rc == 0 && n == 0) rc = fdp_err_set(err, "%s: no .jpg/.jpeg/.png files found", in->path);
    if (rc == 0 && pk->o->skip_bad) {
        drop_bad_images(pk, in, remaining);
        if (in->n == 0)
            rc = fdp_err_set(err, "%s: none of the %lld image file(s) decodes (--skip-bad skipped them all; the first: %s)",
                             in->path, (long long)pk->bad_images, pk->first_bad);
    }
    return rc;
}
