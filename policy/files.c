/*
 * files.c: the file-transfer policy (types, extensions, size) and the
 * normalised-text key used by bulk counting. Type and extension lists are
 * short (tens of entries): each is one ",a,b," string searched for ",x,".
 */
#include "policy_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXT 16
#define MAX_TYPE 128

/* Makes ",a,b," of a comma list, lower-cased and trimmed; NULL for an empty list. */
static int make_set(const char *list, int types, char **out, struct spim_diag *d, const char *key)
{
    size_t n, len = 1;
    char *s;
    const char *p = list;

    *out = NULL;
    if (list == NULL || list[0] == '\0')
        return 0;
    n = strlen(list);
    s = malloc(n + 3);
    if (s == NULL)
        return SPIM_ENOMEM;
    s[0] = ',';
    for (unsigned guard = 0; *p != '\0' && guard < 100000; guard++) {
        const char *e = strchr(p, ','), *b = p;

        if (e == NULL)
            e = p + strlen(p);
        while (b < e && (*b == ' ' || *b == '\t' || (!types && *b == '.')))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > b) {
            size_t k = (size_t)(e - b);
            const char *slash = memchr(b, '/', k);

            if (k >= (types ? MAX_TYPE : MAX_EXT) || memchr(b, ' ', k) != NULL ||
                (types && (slash == NULL || slash == b || slash == e - 1)) ||
                (!types && slash != NULL)) {
                spim_diag_set(d, key, 0, 0, "%s: bad %s '%.*s'", key,
                              types ? "type (expected type/subtype)" : "extension", (int)k, b);
                free(s);
                return SPIM_EINVAL;
            }
            for (size_t i = 0; i < k; i++)
                s[len++] = (char)tolower((unsigned char)b[i]);
            s[len++] = ',';
        }
        p = *e == ',' ? e + 1 : e;
        if (*e == '\0')
            break;
    }
    s[len] = '\0';
    if (len == 1) {
        free(s);
        return 0;
    }
    *out = s;
    return 0;
}

int spim_policy_set_files(struct spim_policy *p, const struct spim_policy_files_conf *fc,
                          struct spim_diag *d)
{
    char *be = NULL, *ae = NULL, *bt = NULL, *at = NULL;
    int rc;

    if ((rc = make_set(fc->block_ext, 0, &be, d, "file_block_ext")) != 0 ||
        (rc = make_set(fc->allow_ext, 0, &ae, d, "file_allow_ext")) != 0 ||
        (rc = make_set(fc->block_types, 1, &bt, d, "file_block_types")) != 0 ||
        (rc = make_set(fc->allow_types, 1, &at, d, "file_allow_types")) != 0) {
        free(be);
        free(ae);
        free(bt);
        return rc;
    }
    free(p->block_ext);
    free(p->allow_ext);
    free(p->block_types);
    free(p->allow_types);
    p->block_ext = be;
    p->allow_ext = ae;
    p->block_types = bt;
    p->allow_types = at;
    p->max_size = fc->max_size;
    return 0;
}

static int in_set(const char *set, const char *s, size_t n)
{
    char key[MAX_TYPE + 2];

    if (set == NULL || n == 0 || n > MAX_TYPE)
        return 0;
    key[0] = ',';
    memcpy(key + 1, s, n);
    key[n + 1] = ',';
    key[n + 2] = '\0';
    return strstr(set, key) != NULL;
}

/* A type is in a set as itself or as "major/ *". */
static int type_in_set(const char *set, const char *t, size_t n)
{
    char major[MAX_TYPE + 2];
    const char *slash = memchr(t, '/', n);
    size_t mn;

    if (in_set(set, t, n))
        return 1;
    if (slash == NULL)
        return 0;
    mn = (size_t)(slash - t) + 1;
    memcpy(major, t, mn);
    major[mn] = '*';
    return in_set(set, major, mn + 1);
}

/*
 * The extension of a file name, lower-cased: after the last '.' of the last
 * path component, with trailing dots and blanks removed first (Windows
 * drops them, so "a.exe." runs as a.exe).
 */
static size_t extension(struct spim_slice name, char *out)
{
    size_t n = name.len, b = 0, dot = (size_t)-1, k;

    if (n > SPIM__POLICY_VALUE_MAX)
        n = SPIM__POLICY_VALUE_MAX;
    while (n > 0 && (name.p[n - 1] == '.' || name.p[n - 1] == ' ' || name.p[n - 1] == '\t'))
        n--;
    for (size_t i = 0; i < n; i++) {
        if (name.p[i] == '/' || name.p[i] == '\\') {
            b = i + 1;
            dot = (size_t)-1;
        } else if (name.p[i] == '.') {
            dot = i;
        }
    }
    if (dot == (size_t)-1 || dot < b || n - dot - 1 == 0 || n - dot - 1 >= MAX_EXT)
        return 0;
    k = n - dot - 1;
    for (size_t i = 0; i < k; i++)
        out[i] = (char)tolower((unsigned char)name.p[dot + 1 + i]);
    out[k] = '\0';
    return k;
}

/* The media type without parameters, lower-cased. */
static size_t media_type(struct spim_slice ct, char *out)
{
    size_t b = 0, e, k = 0;

    while (b < ct.len && (ct.p[b] == ' ' || ct.p[b] == '\t' || ct.p[b] == '"'))
        b++;
    for (e = b; e < ct.len && ct.p[e] != ';' && ct.p[e] != ' ' && ct.p[e] != '\t' && ct.p[e] != '"';
         e++)
        ;
    if (e - b >= MAX_TYPE)
        return 0;
    for (size_t i = b; i < e; i++)
        out[k++] = (char)tolower((unsigned char)ct.p[i]);
    out[k] = '\0';
    return k;
}

int spim_policy_file(const struct spim_policy *p, struct spim_slice content_type,
                     struct spim_slice name, uint64_t size, char *entry, size_t cap)
{
    char ext[MAX_EXT], type[MAX_TYPE];
    size_t en, tn;

    if (cap > 0)
        entry[0] = '\0';
    if (p == NULL)
        return 0;
    en = extension(name, ext);
    tn = media_type(content_type, type);
    if (en > 0 && in_set(p->block_ext, ext, en)) {
        snprintf(entry, cap, "file:ext:%s", ext);
        return 1;
    }
    if (tn > 0 && type_in_set(p->block_types, type, tn)) {
        snprintf(entry, cap, "file:type:%s", type);
        return 1;
    }
    if (p->max_size > 0 && size > p->max_size) {
        snprintf(entry, cap, "file:size:%llu>%llu", (unsigned long long)size,
                 (unsigned long long)p->max_size);
        return 1;
    }
    if ((p->allow_ext != NULL || p->allow_types != NULL) &&
        !(en > 0 && in_set(p->allow_ext, ext, en)) &&
        !(tn > 0 && type_in_set(p->allow_types, type, tn))) {
        snprintf(entry, cap, "file:not-allowed:%s", en > 0 ? ext : tn > 0 ? type : "-");
        return 1;
    }
    return 0;
}

uint64_t spim_policy_text_key(const char *text, size_t len, size_t *norm_len)
{
    char buf[4096];
    size_t n = 0;
    int last = ' ';

    /* Only the first 4 KiB count: enough to tell copies of a message apart. */
    for (size_t i = 0; i < len && n < sizeof(buf); i++) {
        unsigned char c = (unsigned char)text[i];
        int out;

        if (c >= 0x80)
            out = c; /* UTF-8 bytes pass (letters of other scripts) */
        else if (isalpha(c))
            out = tolower(c);
        else if (isdigit(c))
            out = '#';
        else
            out = ' ';
        if ((out == ' ' && last == ' ') || (out == '#' && last == '#'))
            continue;
        buf[n++] = (char)out;
        last = out;
    }
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    if (norm_len != NULL)
        *norm_len = n;
    return spim_hash64(buf, n, 0x42554c4bULL);
}
