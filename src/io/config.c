/* config.c — the INI configuration, driven by the key table of
 * src/io/config_keys.c (values: src/io/config_values.c): defaults, loading files
 * and strings through inih, --set overrides, where each value came from,
 * validation, writing the whole config back as INI, and equality.
 *
 * About inih (Debian libinih 55): the installed header says
 * INI_HANDLER_LINENO 0, so the handler gets no line number (and a definition
 * that disagrees with the library build would be undefined behaviour). We parse
 * with ini_parse_stream and our own line reader, which counts lines itself (inih
 * calls it once per line, so its count equals inih's). The reader also
 *  - strips indentation, so inih never treats an indented line as a
 *    continuation of the previous value (its multi-line mode is on by default),
 *  - blanks whole-line comments,
 *  - splits two kinds of `key = value` lines itself and hands inih a short
 *    stand-in line whose handler call is then given the real key and value:
 *    lines longer than inih's fixed line buffer (200 bytes by default, which
 *    would otherwise be split into two "lines"), so paths of any length work
 *    and fdp_config_to_ini output always loads back; and lines whose value
 *    starts with a quote, because inih would cut `"a ;b"` at its " ;" (inih
 *    strips inline comments that start with ';' after whitespace, quotes or
 *    not). A quoted value ends at the matching quote that is followed only by
 *    whitespace or a comment.
 * We also strip inline comments starting with '#' (and a ';'/'#' at the very
 * start of a value); quotes are removed in apply(), for files and --set alike. */
#define FDP_CONFIG_INTERNAL
#include "flowdp/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYS fdp_cfg_keys
#define NKEYS fdp_cfg_nkeys
#define SECTIONS fdp_cfg_sections
#define NSECTIONS fdp_cfg_nsections
#define is_blank fdp_cfg_is_blank
#define trim fdp_cfg_trim
#define comment_start fdp_cfg_comment_start
#define shown fdp_cfg_shown

_Static_assert(sizeof(fdp_model_type) == sizeof(int) && sizeof(fdp_flow_permutation) == sizeof(int) &&
                   sizeof(fdp_flow_coupling) == sizeof(int) && sizeof(fdp_data_format) == sizeof(int) &&
                   sizeof(fdp_device) == sizeof(int) && sizeof(fdp_optimizer_kind) == sizeof(int) &&
                   sizeof(fdp_lr_decay) == sizeof(int) && sizeof(fdp_on_nonfinite) == sizeof(int) &&
                   sizeof(fdp_stop_signal) == sizeof(int) && sizeof(fdp_on_write_error) == sizeof(int) &&
                   sizeof(fdp_log_level) == sizeof(int) && sizeof(fdp_tutorial_arch) == sizeof(int),
               "enum fields are stored through int *");

static const void *field_cptr(const fdp_config *c, const fdp_cfg_key *k) { return (const char *)c + k->offset; }

/* ---- small string helpers --------------------------------------------------------- */

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = fdp_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

/* Optimal string alignment distance (Levenshtein + adjacent transposition),
 * case-insensitive; large for long strings. */
static int edit_distance(const char *a, const char *b) {
    enum { M = 64 };
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la >= M || lb >= M) return 1000;
    int d[M + 1][M + 1];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int cost = ca != cb;
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) && tolower((unsigned char)a[i - 2]) == cb &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* close enough to suggest */
static int suggest_limit(const char *typed) {
    int n = (int)strlen(typed) / 3;
    return n < 1 ? 1 : (n > 3 ? 3 : n);
}

static int find_section(const char *s) {
    for (int i = 0; i < NSECTIONS; i++)
        if (strcmp(SECTIONS[i].name, s) == 0) return i;
    return -1;
}

static int find_key(const char *section, const char *key) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].key, key) == 0) return i;
    return -1;
}

/* " (did you mean [train]?)" or "" */
static void suggest_section(const char *typed, char *out, size_t n) {
    int best = -1, bd = 1000;
    for (int i = 0; i < NSECTIONS; i++) {
        int d = edit_distance(typed, SECTIONS[i].name);
        if (d < bd) bd = d, best = i;
    }
    if (best >= 0 && bd <= suggest_limit(typed))
        snprintf(out, n, " (did you mean [%s]?)", SECTIONS[best].name);
    else
        out[0] = '\0';
}

/* " (did you mean batch_size?)" when close in the same section, else
 * " (did you mean [train] lr?)" when close in another section, else "". */
static void suggest_key(const char *section, const char *typed, char *out, size_t n) {
    int best = -1, bd = 1000, best_other = -1, bd_other = 1000;
    for (int i = 0; i < NKEYS; i++) {
        int d = edit_distance(typed, KEYS[i].key);
        if (section && strcmp(KEYS[i].section, section) == 0) {
            if (d < bd) bd = d, best = i;
        } else if (d < bd_other) {
            bd_other = d, best_other = i;
        }
    }
    int lim = suggest_limit(typed);
    if (best >= 0 && bd <= lim)
        snprintf(out, n, " (did you mean %s?)", KEYS[best].key);
    else if (best_other >= 0 && bd_other <= lim)
        snprintf(out, n, " (did you mean [%s] %s?)", KEYS[best_other].section, KEYS[best_other].key);
    else
        out[0] = '\0';
}

/* ---- where a value came from ------------------------------------------------------ */

/* "--set section.key=value" (the value as typed, trimmed), shortened to fit the origin */
static void remember_set(fdp_config *c, int ki, const char *raw_value) {
    char *o = c->origin[ki].set;
    int w = snprintf(o, FDP_CONFIG_ORIGIN_MAX, "--set %s.%s=%s", KEYS[ki].section, KEYS[ki].key, raw_value);
    if (w >= FDP_CONFIG_ORIGIN_MAX) memcpy(o + FDP_CONFIG_ORIGIN_MAX - 4, "...", 4);
    c->origin[ki].line = 0;
}

/* Where key ki's value came from, without the value: "cfg.ini:5", "--set train.lr=1",
 * "cfg.ini" (a default, or a file loaded before the last one) or "config". */
static const char *origin_loc(const fdp_config *c, int ki, char *buf, size_t n) {
    const fdp_config_origin *o = &c->origin[ki];
    const char *path = c->source_path ? c->source_path : "config";
    if (o->set[0] && memchr(o->set, '\0', FDP_CONFIG_ORIGIN_MAX))
        snprintf(buf, n, "%s", o->set);
    else if (o->line > 0 && c->source_path)
        snprintf(buf, n, "%s:%d", path, o->line);
    else
        snprintf(buf, n, "%s", path);
    return buf;
}

static const char *where_ki(const fdp_config *c, int ki, char *buf, size_t n) {
    const fdp_cfg_key *k = &KEYS[ki];
    origin_loc(c, ki, buf, n);
    if (c->origin[ki].set[0]) return buf;
    char val[FDP_CONFIG_STR_MAX + 32], tmpv[80];
    if (k->type == FDP_CT_STRING && !memchr(field_cptr(c, k), '\0', FDP_CONFIG_STR_MAX))
        snprintf(val, sizeof val, "?");
    else
        fdp_cfg_format_value(k, c, val, sizeof val);
    size_t used = strlen(buf);
    snprintf(buf + used, n - used, ": [%s] %s = %s", k->section, k->key, shown(val, tmpv, sizeof tmpv));
    return buf;
}

const char *fdp_config_where(const fdp_config *c, const char *section, const char *key, char *buf, size_t n) {
    int ki = find_key(section, key);
    if (ki < 0) {
        snprintf(buf, n, "config: [%s] %s", section, key);
        return buf;
    }
    return where_ki(c, ki, buf, n);
}

int fdp_config_key_error(const fdp_config *c, fdp_err *err, const char *section, const char *key, const char *fmt,
                         ...) {
    char where[FDP_CONFIG_ORIGIN_MAX + 512], what[1024];
    fdp_config_where(c, section, key, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fdp_err_set(err, "%s: %s", where, what);
}

/* ---- applying one key = value --------------------------------------------------------- */

/* where: "file:line" or "--set"; section_where: the same for the section header's line.
 * value: as written (trimmed, comments removed), quotes still on. line: the file line (0 for
 * --set). seen_line (NULL for --set): per key, the line it was set on in this file (0 = not
 * yet). The key's origin becomes the line, or the --set text when line is 0. */
static int apply(fdp_config *c, const char *where, const char *section_where, const char *section_raw,
                 const char *key_raw, const char *value, int line, int *seen_line, fdp_err *err) {
    char sec[128], key[128], hint[160], tmp[80];
    snprintf(sec, sizeof sec, "%s", section_raw);
    snprintf(key, sizeof key, "%s", key_raw);
    char *s = trim(sec), *k = trim(key);
    if (!*k) return fdp_err_set(err, "%s: missing key name before '='", where);
    if (!*s) {
        suggest_key(NULL, k, hint, sizeof hint);
        int exact = -1;
        for (int i = 0; i < NKEYS; i++)
            if (strcmp(KEYS[i].key, k) == 0) exact = i;
        if (exact >= 0)
            return fdp_err_set(err, "%s: key %s is outside any section (put it under [%s])", where, k,
                               KEYS[exact].section);
        return fdp_err_set(err, "%s: key %s is outside any section%s", where, k, hint);
    }
    if (find_section(s) < 0) {
        suggest_section(s, hint, sizeof hint);
        return fdp_err_set(err, "%s: unknown section [%s]%s", section_where, s, hint);
    }
    int ki = find_key(s, k);
    if (ki < 0) {
        suggest_key(s, k, hint, sizeof hint);
        return fdp_err_set(err, "%s: unknown key [%s] %s%s", where, s, k, hint);
    }
    if (seen_line && seen_line[ki])
        return fdp_err_set(err, "%s: duplicate key [%s] %s (first set on line %d)", where, s, k, seen_line[ki]);
    char *v = xstrdup(value), *inside;
    int rc = 0;
    if (fdp_cfg_unquote(v, &inside) < 0) {
        rc = fdp_err_set(err, "%s: [%s] %s = %s: unbalanced quote (a quoted value must start and end with the same "
                         "quote character)", where, s, k, shown(value, tmp, sizeof tmp));
    } else {
        char why[320];
        if (fdp_cfg_parse_value(&KEYS[ki], inside, c, why, sizeof why))
            rc = fdp_err_set(err, "%s: [%s] %s = %s: %s", where, s, k, shown(value, tmp, sizeof tmp), why);
    }
    free(v);
    if (rc) return rc;
    if (seen_line) seen_line[ki] = line;
    if (line > 0) {
        c->origin[ki].line = line;
        c->origin[ki].set[0] = '\0';
    } else {
        remember_set(c, ki, value);
    }
    return 0;
}
/* ---- parsing a whole text with inih ------------------------------------------------------- */

#define LONG_LINE_NAME "\x01" "flowdp-long-line"

typedef struct parse_state {
    fdp_config *cfg;      /* the copy being filled */
    const char *name;     /* file name for messages */
    const char *pos;      /* read position in the text */
    int lineno;           /* line last handed to inih (1-based) */
    int section_lineno;   /* line of the last [section] header */
    int seen_line[FDP_CONFIG_MAX_KEYS]; /* per key: line it was set on, 0 = not set */
    int long_pending;     /* the current line was too long: use long_name/long_value */
    char *long_buf, *long_name, *long_value;
    int err_line;         /* first error found by the reader or the handler (0 = none) */
    fdp_err err;
} parse_state;

/* Whether the line s (n characters, not blank, no comment) is `key = value` with a value
 * that starts with a quote. */
static int quoted_value(const char *s, size_t n) {
    if (*s == '[') return 0;
    const char *sep = NULL;
    for (size_t i = 0; i < n && !sep; i++)
        if (s[i] == '=' || s[i] == ':') sep = s + i;
    if (!sep) return 0;
    for (size_t i = 0; i < n && s + i < sep; i++)
        if ((s[i] == ';' || s[i] == '#') && (i == 0 || is_blank(s[i - 1]))) return 0; /* a comment first */
    const char *v = sep + 1, *end = s + n;
    while (v < end && is_blank(*v)) v++;
    return v < end && (*v == '"' || *v == '\'');
}

/* The value after '=' (in place): without the blanks around it and without a trailing comment.
 * A value that starts with a quote is the whole rest of the line when that ends with the same
 * quote, else it ends at the first matching quote followed by blanks and a comment (quotes kept:
 * apply() removes them); without either, the comment is stripped as usual (and apply() reports
 * the unbalanced quote). */
static char *value_of(char *v) {
    while (is_blank(*v)) v++;
    if (*v == '"' || *v == '\'') {
        char *t = trim(v);
        size_t n = strlen(t);
        if (n >= 2 && t[n - 1] == t[0]) return t; /* the whole rest of the line (what to_ini writes) */
        for (char *q = v + 1; *q; q++) {
            if (*q != *v) continue;
            char *r = q + 1;
            while (is_blank(*r)) r++;
            if (!*r || ((*r == ';' || *r == '#') && r > q + 1)) {
                q[1] = '\0';
                return v;
            }
        }
    }
    char *cmt = comment_start(v);
    if (cmt) *cmt = '\0';
    return trim(v);
}

/* fgets-style reader for ini_parse_stream: one line per call (see the top of
 * the file for what it does to the line). */
static char *read_line(char *buf, int num, void *stream) {
    parse_state *st = stream;
    free(st->long_buf);
    st->long_buf = st->long_name = st->long_value = NULL;
    st->long_pending = 0;
    if (st->err_line || !*st->pos || num < 4) return NULL;
    const char *line = st->pos, *eol = strchr(line, '\n');
    const char *end = eol ? eol : line + strlen(line);
    st->pos = eol ? eol + 1 : end;
    st->lineno++;
    const char *s = line;
    if (st->lineno == 1 && end - s >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3; /* UTF-8 BOM */
    while (s < end && is_blank(*s)) s++;
    size_t n = (size_t)(end - s);
    if (n == 0 || *s == ';' || *s == '#') { /* blank or whole-line comment */
        strcpy(buf, "\n");
        return buf;
    }
    if (*s == '[') st->section_lineno = st->lineno;
    if (n + 2 <= (size_t)num && !quoted_value(s, n)) {
        memcpy(buf, s, n);
        buf[n] = '\n';
        buf[n + 1] = '\0';
        return buf;
    }
    /* too long for inih's buffer, or a quoted value: split `key = value` here */
    char *copy = fdp_xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    st->long_buf = copy;
    char *sep = strpbrk(copy, "=:");
    char *cmt = comment_start(copy);
    if (*copy == '[' || !sep || (cmt && cmt < sep)) {
        st->err_line = st->lineno;
        fdp_err_set(&st->err, "%s:%d: cannot parse a %zu-character line: expected key = value", st->name,
                    st->lineno, n);
        return NULL;
    }
    *sep = '\0';
    st->long_name = trim(copy);
    st->long_value = value_of(sep + 1);
    st->long_pending = 1;
    snprintf(buf, (size_t)num, "%s=\n", LONG_LINE_NAME);
    return buf;
}

static int handle_pair(void *user, const char *section, const char *name, const char *value) {
    parse_state *st = user;
    if (st->err_line) return 0;
    if (!name) return 1; /* a section start, if inih was built to report those */
    int own = st->long_pending && strcmp(name, LONG_LINE_NAME) == 0;
    if (own) {
        name = st->long_name;
        value = st->long_value;
    }
    char *v = xstrdup(value ? value : "");
    char *cmt = own ? NULL : comment_start(v); /* '#' comments (inih already removed " ;" ones) */
    if (cmt) *cmt = '\0';
    char *vt = trim(v);
    char where[512], section_where[512];
    snprintf(where, sizeof where, "%s:%d", st->name, st->lineno);
    snprintf(section_where, sizeof section_where, "%s:%d", st->name, st->section_lineno);
    int rc = apply(st->cfg, where, section_where, section, name, vt, st->lineno, st->seen_line, &st->err);
    free(v);
    if (rc) {
        st->err_line = st->lineno;
        return 0;
    }
    return 1;
}

/* the text of line n (1-based), trimmed, into out */
static void nth_line(const char *text, int n, char *out, size_t outn) {
    const char *p = text;
    for (int i = 1; i < n && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    out[0] = '\0';
    if (!p) return;
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len >= outn) len = outn - 1;
    memcpy(out, p, len);
    out[len] = '\0';
    char *t = trim(out);
    memmove(out, t, strlen(t) + 1);
}

static int parse_text(fdp_config *c, const char *text, const char *name, fdp_err *err) {
    parse_state *st = fdp_xcalloc(1, sizeof *st);
    fdp_config *tmp = fdp_xmalloc(sizeof *tmp);
    *tmp = *c;
    st->cfg = tmp;
    st->name = name;
    st->pos = text;
    int rc = ini_parse_stream(read_line, st, handle_pair, st);
    free(st->long_buf);
    int result = 0;
    if (st->err_line && (rc <= 0 || rc >= st->err_line)) {
        if (err) *err = st->err;
        result = -1;
    } else if (rc > 0) {
        char line[128], tmpv[80];
        nth_line(text, rc, line, sizeof line);
        if (line[0] == '[' && !strchr(line, ']'))
            fdp_err_set(err, "%s:%d: cannot parse '%s': missing ']' after the section name", name, rc,
                        shown(line, tmpv, sizeof tmpv));
        else
            fdp_err_set(err, "%s:%d: cannot parse '%s': expected [section] or key = value", name, rc,
                        shown(line, tmpv, sizeof tmpv));
        result = -1;
    } else if (rc < 0) {
        fdp_err_set(err, "%s: the INI parser failed (inih error %d)", name, rc);
        result = -1;
    }
    if (result == 0) {
        for (int i = 0; i < NKEYS; i++)
            if (!st->seen_line[i]) tmp->origin[i].line = 0; /* a line of an earlier file */
        char *src = xstrdup(text), *path = xstrdup(name);
        free(c->source_text);
        free(c->source_path);
        *c = *tmp;
        c->source_text = src;
        c->source_path = path;
    }
    free(tmp);
    free(st);
    return result;
}

/* ---- the public functions ---------------------------------------------------------- */
/* ---- the public functions ---------------------------------------------------------- */

void fdp_config_defaults(fdp_config *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < NKEYS; i++) {
        char why[320];
        FDP_CHECK(fdp_cfg_parse_value(&KEYS[i], KEYS[i].def, c, why, sizeof why) == 0,
                  "config table: the default of [%s] %s = %s is invalid: %s; hint: fix the row in src/io/config_keys.c",
                  KEYS[i].section, KEYS[i].key, KEYS[i].def, why);
    }
    c->source_text = NULL;
    c->source_path = NULL;
}

void fdp_config_free(fdp_config *c) {
    if (!c) return;
    free(c->source_text);
    free(c->source_path);
    c->source_text = c->source_path = NULL;
}

int fdp_config_load_string(fdp_config *c, const char *text, const char *name_for_errors, fdp_err *err) {
    return parse_text(c, text, name_for_errors ? name_for_errors : "<string>", err);
}

int fdp_config_load_file(fdp_config *c, const char *path, fdp_err *err) {
    /* O_NONBLOCK: a FIFO without a writer must not block the open forever (a pipe with
     * one, as from `--config <(...)`, is read normally once the flag is cleared) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0) return fdp_err_set(err, "cannot open config %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        close(fd);
        return fdp_err_set(err, "config %s: is a directory, not a config file", path);
    }
    int is_fifo = S_ISFIFO(st.st_mode);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return fdp_err_set(err, "cannot open config %s: %s", path, strerror(errno));
    }
    size_t cap = 4096, len = 0;
    char *buf = fdp_xmalloc(cap);
    for (;;) {
        if (cap - len < 4096) {
            if (cap > ((size_t)16 << 20)) {
                fclose(f);
                free(buf);
                return fdp_err_set(err, "config %s: larger than 16 MiB, not a config file?", path);
            }
            cap *= 2;
            buf = fdp_xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    int saved = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return fdp_err_set(err, "cannot read config %s: %s", path, strerror(saved));
    }
    buf[len] = '\0';
    if (is_fifo && len == 0) {
        free(buf);
        return fdp_err_set(err, "config %s: a FIFO with nothing to read (no writer)", path);
    }
    if (memchr(buf, '\0', len)) {
        free(buf);
        return fdp_err_set(err, "config %s: contains a NUL byte, not a text file?", path);
    }
    int rc = parse_text(c, buf, path, err);
    free(buf);
    return rc;
}

int fdp_config_set(fdp_config *c, const char *assignment, fdp_err *err) {
    char tmpv[80];
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return fdp_err_set(err, "--set '%s': expected section.key=value (e.g. train.lr=3e-4)",
                           shown(assignment, tmpv, sizeof tmpv));
    size_t ln = (size_t)(eq - assignment);
    char *lhs = fdp_xmalloc(ln + 1);
    memcpy(lhs, assignment, ln);
    lhs[ln] = '\0';
    char *v = xstrdup(eq + 1);
    char *l = trim(lhs), *vt = trim(v);
    char *dot = strchr(l, '.');
    int rc;
    if (!dot) {
        char hint[160];
        int exact = -1;
        for (int i = 0; i < NKEYS; i++)
            if (strcmp(KEYS[i].key, l) == 0) exact = i;
        if (exact >= 0)
            snprintf(hint, sizeof hint, " (did you mean %s.%s?)", KEYS[exact].section, KEYS[exact].key);
        else
            hint[0] = '\0';
        rc = fdp_err_set(err, "--set '%s': expected section.key=value%s", shown(assignment, tmpv, sizeof tmpv), hint);
    } else {
        *dot = '\0';
        fdp_config *tmp = fdp_xmalloc(sizeof *tmp);
        *tmp = *c;
        rc = apply(tmp, "--set", "--set", l, dot + 1, vt, 0, NULL, err);
        if (rc == 0) *c = *tmp;
        free(tmp);
    }
    free(lhs);
    free(v);
    return rc;
}

static int key_index(const char *section, const char *key) {
    int ki = find_key(section, key);
    FDP_CHECK(ki >= 0, "config: no key [%s] %s in the table", section, key);
    return ki;
}

/* one line (rank 0) when [train] threads asks for more threads than there are online CPUs */
static void warn_threads(const fdp_config *c) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1 || c->train.threads <= ncpu || fdp_log_rank() != 0) return;
    char loc[FDP_CONFIG_ORIGIN_MAX + 512];
    where_ki(c, key_index("train", "threads"), loc, sizeof loc);
    fdp_warn("%s: more threads per rank than the %ld online CPUs of this machine (oversubscribed threads run "
             "slowly; 0 = all cores)", loc, ncpu);
}

int fdp_config_validate(const fdp_config *c, fdp_err *err) {
    char loc[FDP_CONFIG_ORIGIN_MAX + 512];
    for (int i = 0; i < NKEYS; i++) {
        char why[320];
        if (fdp_cfg_check_field(&KEYS[i], c, why, sizeof why)) {
            /* the value as it is now (code may have changed it after a --set) */
            char val[FDP_CONFIG_STR_MAX + 32], tmpv[80];
            if (KEYS[i].type == FDP_CT_STRING && !memchr(field_cptr(c, &KEYS[i]), '\0', FDP_CONFIG_STR_MAX))
                snprintf(val, sizeof val, "?");
            else
                fdp_cfg_format_value(&KEYS[i], c, val, sizeof val);
            return fdp_err_set(err, "%s: [%s] %s = %s: %s", origin_loc(c, i, loc, sizeof loc), KEYS[i].section,
                               KEYS[i].key, shown(val, tmpv, sizeof tmpv), why);
        }
    }
    const int64_t steps = c->train.steps, warmup = c->train.warmup_steps;
    if (steps == 0 && c->train.epochs == 0)
        return fdp_err_set(err, "%s: [train] steps = 0 and [train] epochs = 0: nothing to train (set one of them)",
                           origin_loc(c, key_index("train", "epochs"), loc, sizeof loc));
    if (steps > 0 && warmup > steps)
        return fdp_err_set(err, "%s: [train] warmup_steps = %lld is larger than [train] steps = %lld",
                           origin_loc(c, key_index("train", "warmup_steps"), loc, sizeof loc), (long long)warmup,
                           (long long)steps);
    if (c->train.lr_decay != FDP_LR_DECAY_NONE && c->train.lr_min > c->train.lr)
        return fdp_err_set(err, "%s: [train] lr_min = %g is larger than [train] lr = %g (with lr_decay = %s)",
                           origin_loc(c, key_index("train", "lr_min"), loc, sizeof loc), c->train.lr_min, c->train.lr,
                           fdp_config_enum_name("train", "lr_decay", (int)c->train.lr_decay));
    warn_threads(c);
    return 0;
}

/* a growing text buffer */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = fdp_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

char *fdp_config_to_ini(const fdp_config *c) {
    sbuf b = {0};
    sb_add(&b, "; flowdp configuration: the complete effective settings (every key)\n");
    for (int s = 0; s < NSECTIONS; s++) {
        sb_add(&b, "\n[");
        sb_add(&b, SECTIONS[s].name);
        sb_add(&b, "]\n");
        for (int i = 0; i < NKEYS; i++) {
            if (strcmp(KEYS[i].section, SECTIONS[s].name) != 0) continue;
            char *v = fdp_xmalloc(FDP_CONFIG_STR_MAX + 64);
            fdp_cfg_format_for_ini(&KEYS[i], c, v, FDP_CONFIG_STR_MAX + 64);
            sb_add(&b, KEYS[i].key);
            sb_add(&b, *v ? " = " : " =");
            sb_add(&b, v);
            sb_add(&b, "\n");
            free(v);
        }
    }
    return b.p;
}

int fdp_config_equal(const fdp_config *a, const fdp_config *b) {
    for (int i = 0; i < NKEYS; i++) {
        const fdp_cfg_key *k = &KEYS[i];
        const void *fa = field_cptr(a, k), *fb = field_cptr(b, k);
        switch (k->type) {
        case FDP_CT_INT:
        case FDP_CT_ENUM:
            if (*(const int *)fa != *(const int *)fb) return 0;
            break;
        case FDP_CT_INT64:
            if (*(const int64_t *)fa != *(const int64_t *)fb) return 0;
            break;
        case FDP_CT_FLOAT:
            if (*(const double *)fa != *(const double *)fb) return 0;
            break;
        case FDP_CT_BOOL:
            if (*(const bool *)fa != *(const bool *)fb) return 0;
            break;
        case FDP_CT_STRING:
            if (strncmp(fa, fb, FDP_CONFIG_STR_MAX) != 0) return 0;
            break;
        }
    }
    return 1;
}
