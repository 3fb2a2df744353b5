/* config_values.c — the values of configuration keys: parsing text into a typed
 * field (with the range checks of the key table), formatting a field back as
 * text (for messages and for fdp_config_to_ini, quoting strings that need it),
 * re-checking a field, quotes, and small string helpers shared by config*.c. */
#define FDP_CONFIG_INTERNAL
#include "flowdp/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void *field_ptr(fdp_config *c, const fdp_cfg_key *k) { return (char *)c + k->offset; }
static const void *field_cptr(const fdp_config *c, const fdp_cfg_key *k) { return (const char *)c + k->offset; }

int fdp_cfg_is_blank(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

char *fdp_cfg_trim(char *s) {
    while (fdp_cfg_is_blank(*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && fdp_cfg_is_blank(s[n - 1])) s[--n] = '\0';
    return s;
}

/* Where an inline comment starts in a value: ';' or '#' at the start or right
 * after whitespace. NULL when there is none. */
char *fdp_cfg_comment_start(const char *v) {
    for (const char *p = v; *p; p++)
        if ((*p == ';' || *p == '#') && (p == v || fdp_cfg_is_blank(p[-1]))) return (char *)p;
    return NULL;
}

/* A value for messages: at most ~60 characters. */
const char *fdp_cfg_shown(const char *v, char *buf, size_t n) {
    if (strlen(v) <= 60) return v;
    snprintf(buf, n, "%.57s...", v);
    return buf;
}

static int is_quote(char ch) { return ch == '"' || ch == '\''; }

int fdp_cfg_unquote(char *v, char **out) {
    size_t n = strlen(v);
    *out = v;
    if (n == 0) return 0;
    if (is_quote(v[0])) {
        if (n < 2 || v[n - 1] != v[0]) return -1;
        v[n - 1] = '\0';
        *out = v + 1;
        return 1;
    }
    return is_quote(v[n - 1]) ? -1 : 0;
}

/* a bound as text: integers in full ("65536", not "6.5536e+04") */
static void bound_text(const fdp_cfg_key *k, double x, char *out, size_t n) {
    if (k->type == FDP_CT_INT || k->type == FDP_CT_INT64)
        snprintf(out, n, "%.0f", x);
    else
        snprintf(out, n, "%g", x);
}

void fdp_cfg_range_text(const fdp_cfg_key *k, char *out, size_t n) {
    const fdp_cfg_range *r = &k->range;
    char lo[40], hi[40];
    bound_text(k, r->lo, lo, sizeof lo);
    bound_text(k, r->hi, hi, sizeof hi);
    if ((r->flags & FDP_R_LO) && (r->flags & FDP_R_HI))
        snprintf(out, n, "in %c%s, %s%c", (r->flags & FDP_R_LO_OPEN) ? '(' : '[', lo, hi,
                 (r->flags & FDP_R_HI_OPEN) ? ')' : ']');
    else if (r->flags & FDP_R_LO)
        snprintf(out, n, "%s %s", (r->flags & FDP_R_LO_OPEN) ? ">" : ">=", lo);
    else if (r->flags & FDP_R_HI)
        snprintf(out, n, "%s %s", (r->flags & FDP_R_HI_OPEN) ? "<" : "<=", hi);
    else
        out[0] = '\0';
}

static int in_range(const fdp_cfg_range *r, double x) {
    if (r->flags & FDP_R_LO) {
        if ((r->flags & FDP_R_LO_OPEN) ? !(x > r->lo) : !(x >= r->lo)) return 0;
    }
    if (r->flags & FDP_R_HI) {
        if ((r->flags & FDP_R_HI_OPEN) ? !(x < r->hi) : !(x <= r->hi)) return 0;
    }
    return 1;
}

void fdp_cfg_enum_list(const char *const *values, char *out, size_t n) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; values[i]; i++) {
        int w = snprintf(out + used, n - used, "%s%s", i ? "|" : "", values[i]);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
}

static int out_of_range(const fdp_cfg_key *k, char *why, size_t n) {
    char r[96];
    fdp_cfg_range_text(k, r, sizeof r);
    snprintf(why, n, "out of range (must be %s)", r);
    return -1;
}

/* Why a string value cannot be stored (NULL when it can). */
static const char *string_problem(const char *v) {
    size_t n = strlen(v);
    if (n >= FDP_CONFIG_STR_MAX) return "too long (at most 4095 characters)";
    if (n > 0 && (fdp_cfg_is_blank(v[0]) || fdp_cfg_is_blank(v[n - 1])))
        return "leading or trailing whitespace is not allowed (almost always a mistake)";
    for (const char *p = v; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) return "contains a control character";
    return NULL;
}

static int parse_integer(const fdp_cfg_key *k, const char *v, void *f, char *why, size_t whyn) {
    if (!*v) return snprintf(why, whyn, "empty value (expected an integer)"), -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end) {
        char *dend;
        double dx = strtod(v, &dend);
        (void)dx;
        snprintf(why, whyn, (dend != v && !*dend) ? "not an integer" : "not a number");
        return -1;
    }
    int has_range = (k->range.flags & (FDP_R_LO | FDP_R_HI)) != 0;
    if (errno == ERANGE) {
        if (has_range) return out_of_range(k, why, whyn);
        return snprintf(why, whyn, "out of range (must fit in a 64-bit integer)"), -1;
    }
    if (k->type == FDP_CT_INT && (x > INT_MAX || x < INT_MIN)) {
        if (has_range) return out_of_range(k, why, whyn);
        return snprintf(why, whyn, "out of range (must be in [%d, %d])", INT_MIN, INT_MAX), -1;
    }
    if (!in_range(&k->range, (double)x)) return out_of_range(k, why, whyn);
    if (k->type == FDP_CT_INT)
        *(int *)f = (int)x;
    else
        *(int64_t *)f = (int64_t)x;
    return 0;
}

int fdp_cfg_parse_value(const fdp_cfg_key *k, const char *v, fdp_config *c, char *why, size_t whyn) {
    void *f = field_ptr(c, k);
    switch (k->type) {
    case FDP_CT_INT:
    case FDP_CT_INT64: return parse_integer(k, v, f, why, whyn);
    case FDP_CT_FLOAT: {
        if (!*v) return snprintf(why, whyn, "empty value (expected a number)"), -1;
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end) return snprintf(why, whyn, "not a number"), -1;
        if (!isfinite(x)) return snprintf(why, whyn, "not a finite number"), -1;
        if (!in_range(&k->range, x)) return out_of_range(k, why, whyn);
        *(double *)f = x;
        return 0;
    }
    case FDP_CT_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(v, yes[i]) == 0) return *(bool *)f = true, 0;
            if (strcasecmp(v, no[i]) == 0) return *(bool *)f = false, 0;
        }
        snprintf(why, whyn, "not a boolean (true|false|1|0|yes|no|on|off)");
        return -1;
    }
    case FDP_CT_ENUM: {
        for (int i = 0; k->values[i]; i++)
            if (strcasecmp(v, k->values[i]) == 0) return *(int *)f = i, 0;
        char list[256];
        fdp_cfg_enum_list(k->values, list, sizeof list);
        snprintf(why, whyn, "not one of %s", list);
        return -1;
    }
    case FDP_CT_STRING: {
        const char *p = string_problem(v);
        if (p) return snprintf(why, whyn, "%s", p), -1;
        memcpy(f, v, strlen(v) + 1);
        return 0;
    }
    }
    return -1;
}

/* The shortest text that reads back as exactly v: "100" not "1e+02",
 * "1e-8" not "1e-08", "0.30000000000000004" when that is what it takes. */
static void format_double(double v, char *out, size_t n) {
    if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, n, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(out, n, "%.*g", p, v);
        if (strtod(out, NULL) == v) break;
    }
    char *e = strchr(out, 'e');
    if (e) { /* e+05 -> e5, e-08 -> e-8 */
        char *d = e + 1, *src = e + 1;
        if (*src == '+') src++;
        else if (*src == '-') *d++ = *src++;
        while (*src == '0' && src[1]) src++;
        memmove(d, src, strlen(src) + 1);
    }
}

void fdp_cfg_format_value(const fdp_cfg_key *k, const fdp_config *c, char *out, size_t n) {
    const void *f = field_cptr(c, k);
    switch (k->type) {
    case FDP_CT_INT: snprintf(out, n, "%d", *(const int *)f); break;
    case FDP_CT_INT64: snprintf(out, n, "%lld", (long long)*(const int64_t *)f); break;
    case FDP_CT_FLOAT: format_double(*(const double *)f, out, n); break;
    case FDP_CT_BOOL: snprintf(out, n, "%s", *(const bool *)f ? "true" : "false"); break;
    case FDP_CT_ENUM: {
        int i = *(const int *)f, cnt = 0;
        while (k->values[cnt]) cnt++;
        snprintf(out, n, "%s", (i >= 0 && i < cnt) ? k->values[i] : "?");
        break;
    }
    case FDP_CT_STRING: snprintf(out, n, "%s", (const char *)f); break;
    }
}

void fdp_cfg_format_for_ini(const fdp_cfg_key *k, const fdp_config *c, char *out, size_t n) {
    fdp_cfg_format_value(k, c, out, n);
    size_t len = strlen(out);
    if (k->type != FDP_CT_STRING || len == 0) return;
    /* quoted when it would otherwise read back differently: a comment, or quotes of its own
     * at either end (the reader removes exactly one enclosing pair) */
    if (!fdp_cfg_comment_start(out) && !is_quote(out[0]) && !is_quote(out[len - 1])) return;
    if (len + 3 > n) return;
    memmove(out + 1, out, len + 1);
    out[0] = '"';
    out[len + 1] = '"';
    out[len + 2] = '\0';
}

int fdp_cfg_check_field(const fdp_cfg_key *k, const fdp_config *c, char *why, size_t n) {
    const void *f = field_cptr(c, k);
    switch (k->type) {
    case FDP_CT_INT:
        if (!in_range(&k->range, *(const int *)f)) return out_of_range(k, why, n);
        return 0;
    case FDP_CT_INT64:
        if (!in_range(&k->range, (double)*(const int64_t *)f)) return out_of_range(k, why, n);
        return 0;
    case FDP_CT_FLOAT: {
        double x = *(const double *)f;
        if (!isfinite(x)) return snprintf(why, n, "not a finite number"), -1;
        if (!in_range(&k->range, x)) return out_of_range(k, why, n);
        return 0;
    }
    case FDP_CT_BOOL: return 0;
    case FDP_CT_ENUM: {
        int i = *(const int *)f, cnt = 0;
        while (k->values[cnt]) cnt++;
        if (i < 0 || i >= cnt) return snprintf(why, n, "enum value %d is not one of the allowed values", i), -1;
        return 0;
    }
    case FDP_CT_STRING: {
        const char *s = f;
        if (!memchr(s, '\0', FDP_CONFIG_STR_MAX)) return snprintf(why, n, "not NUL-terminated"), -1;
        const char *p = string_problem(s);
        if (p) return snprintf(why, n, "%s", p), -1;
        return 0;
    }
    }
    return 0;
}
