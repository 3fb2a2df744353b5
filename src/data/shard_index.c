/* shard_index.c — parsing the text index of a packed dataset (format:
 * include/flowdp/shards.h, README "Packed datasets"). Every record is checked
 * where it is read: the magic, the shape lines, the shard lines (a plain file
 * name in the index's directory, each listed once), the declared count. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flowdp/shards.h"
#include "data_open.h"
#include "shards_internal.h"

/* A shard name must stay inside the index's directory: relative, no "..", "."
 * or empty components (so that equal files have equal names). NULL when fine. */
static const char *bad_shard_name(const char *name) {
    if (name[0] == '/') return "absolute paths are not allowed (names are relative to the index's directory)";
    for (const char *c = name; *c;) {
        size_t len = strcspn(c, "/");
        if (len == 0) return "empty path component ('//' or a trailing '/')";
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return "'.' and '..' components are not allowed (names are relative to the index's directory)";
        c += len;
        if (*c == '/') {
            c++;
            if (!*c) return "empty path component ('//' or a trailing '/')";
        }
    }
    return NULL;
}

/* the header keys, each allowed once; the index of key, or -1 */
enum { HDR_KEYS = 5 };
static int header_key(const char *key) {
    static const char *const keys[HDR_KEYS] = {"split", "height", "width", "channels", "count"};
    for (int i = 0; i < HDR_KEYS; i++)
        if (strcmp(key, keys[i]) == 0) return i;
    return -1;
}

static int cmp_shard_path(const void *a, const void *b) {
    return strcmp((*(shard *const *)a)->path, (*(shard *const *)b)->path);
}

/* the first shard listed twice (names are canonical: bad_shard_name), or 0 */
static int find_duplicate(shard *v, int n, const char *path, fdp_err *err) {
    shard **byname = malloc(sizeof *byname * (size_t)n);
    if (!byname) return fdp_err_set(err, "%s: out of memory", path);
    for (int i = 0; i < n; i++) byname[i] = &v[i];
    qsort(byname, (size_t)n, sizeof *byname, cmp_shard_path);
    int rc = 0;
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(byname[i - 1]->path, byname[i]->path) == 0) {
            shard *a = byname[i - 1] < byname[i] ? byname[i - 1] : byname[i];
            shard *b = byname[i - 1] < byname[i] ? byname[i] : byname[i - 1];
            const char *base = strrchr(a->path, '/');
            rc = fdp_err_set(err, "%s: shard entry %d \"%s\" lists the same file as entry %d", path,
                             (int)(b - v) + 1, base ? base + 1 : a->path, (int)(a - v) + 1);
        }
    free(byname);
    return rc;
}

/* the line fgets just read (len = strlen): too long, or holding a NUL byte (then shorter than
 * what was read: ftell moved further)? Before the magic either means a binary file (an IDX
 * file, a shard), which is no index at all. 0 when fine, -1 + err. */
static int check_line(FILE *f, const char *line, size_t len, size_t cap, long *before, int have_magic,
                      const char *path, int lineno, fdp_err *err) {
    long after = ftell(f);
    int has_nul = after >= 0 && *before >= 0 && (long)len != after - *before;
    int too_long = len == cap - 1 && line[len - 1] != '\n';
    *before = after;
    if (!have_magic && (has_nul || too_long))
        return fdp_err_set(err, "%s: not a flowdp shard index (it does not start with '%s'; a binary file?)", path,
                           FDP_SHARD_INDEX_MAGIC);
    if (too_long || has_nul)
        return fdp_err_set(err, "%s:%d: %s", path, lineno, too_long ? "line too long" : "a NUL byte in the line");
    return 0;
}

int fdp_shards_parse_index(fdp_shards *s, const char *path, shard **out, int *n_out, fdp_err *err) {
    FILE *f = fdp_data_fopen_regular(path, "a flowdp shard index", NULL, err); /* never blocks on a FIFO */
    if (!f) return -1;
    char dir[SH_PATH_MAX];
    dir_of(path, dir, sizeof dir);
    char line[8192];
    int lineno = 0, have_magic = 0, n = 0, cap = 0;
    int64_t declared = -1, sum = 0;
    shard *v = NULL;
    int rc = 0;
    int seen[HDR_KEYS] = {0}; /* the line of each header key, 0 = not yet */
    s->h = s->w = s->c = 0;
    long before = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if ((rc = check_line(f, line, len, sizeof line, &before, have_magic, path, lineno, err)) != 0) break;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!line[0] || line[0] == '#') continue;
        if (!have_magic) {
            if (strcmp(line, FDP_SHARD_INDEX_MAGIC) != 0) {
                rc = fdp_err_set(err, "%s:%d: not a flowdp shard index (it does not start with '%s'; found \"%.60s\")",
                                 path, lineno, FDP_SHARD_INDEX_MAGIC, line);
                break;
            }
            have_magic = 1;
            continue;
        }
        char key[32], name[1024], extra[8];
        long long a = 0;
        int k = sscanf(line, "%31s", key);
        if (k != 1) continue;
        if (strcmp(key, "class") == 0) continue;
        int hk = header_key(key);
        if (hk >= 0 && seen[hk]) {
            rc = fdp_err_set(err, "%s:%d: a second '%s' line (the first is line %d)", path, lineno, key, seen[hk]);
            break;
        }
        if (hk >= 0) seen[hk] = lineno;
        if (hk == 0) continue; /* split */
        if (strcmp(key, "height") == 0 || strcmp(key, "width") == 0 || strcmp(key, "channels") == 0 ||
            strcmp(key, "count") == 0) {
            if (sscanf(line, "%*s %lld %7s", &a, extra) != 1 || a < 1 || a > (strcmp(key, "count") ? 65536 : (1LL << 40))) {
                rc = fdp_err_set(err, "%s:%d: bad %s line: \"%.60s\"", path, lineno, key, line);
                break;
            }
            if (key[0] == 'h') s->h = (int)a;
            else if (key[0] == 'w') s->w = (int)a;
            else if (key[0] == 'c' && key[1] == 'h') s->c = (int)a;
            else declared = a;
            continue;
        }
        if (strcmp(key, "shard") == 0) {
            if (sscanf(line, "%*s %1023s %lld %7s", name, &a, extra) != 2 || a < 1 || strlen(name) >= 256) {
                rc = fdp_err_set(err, "%s:%d: bad shard line (expected \"shard FILE COUNT\"): \"%.60s\"", path, lineno,
                                 line);
                break;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                shard *nv = realloc(v, sizeof *v * (size_t)cap);
                if (!nv) {
                    rc = fdp_err_set(err, "%s: out of memory", path);
                    break;
                }
                v = nv;
            }
            const char *why = bad_shard_name(name);
            if (why) {
                rc = fdp_err_set(err, "%s:%d: shard entry %d \"%.200s\": %s", path, lineno, n + 1, name, why);
                break;
            }
            char full[SH_PATH_MAX + 1100];
            snprintf(full, sizeof full, "%s/%s", dir, name);
            v[n].path = strdup(full);
            v[n].count = a;
            v[n].first = sum;
            v[n].file = v[n].images = -1;
            v[n].last_used = 0;
            if (!v[n].path) {
                rc = fdp_err_set(err, "%s: out of memory", path);
                break;
            }
            n++;
            if (a > (1LL << 40) - sum) { /* counts bounded like the count line: the sum cannot overflow */
                rc = fdp_err_set(err, "%s:%d: shard entry %d: the shards listed so far hold over 2^40 images", path,
                                 lineno, n);
                break;
            }
            sum += a;
            continue;
        }
        rc = fdp_err_set(err, "%s:%d: unknown record \"%s\"", path, lineno, key);
        break;
    }
    if (rc == 0 && ferror(f)) rc = fdp_err_set(err, "%s: read error", path);
    fclose(f);
    if (rc == 0 && !have_magic) rc = fdp_err_set(err, "%s: empty file, not a flowdp shard index", path);
    if (rc == 0 && (s->h < 1 || s->w < 1 || s->c < 1 || declared < 0))
        rc = fdp_err_set(err, "%s: the index lacks a height, width, channels or count line", path);
    if (rc == 0 && n == 0) rc = fdp_err_set(err, "%s: the index lists no shards", path);
    if (rc == 0) rc = find_duplicate(v, n, path, err);
    if (rc == 0 && declared != sum)
        rc = fdp_err_set(err, "%s: count %lld but the shards listed hold %lld images", path, (long long)declared,
                         (long long)sum);
    if (rc != 0) {
        for (int i = 0; i < n; i++) free(v[i].path);
        free(v);
        return -1;
    }
    *out = v;
    *n_out = n;
    return 0;
}

