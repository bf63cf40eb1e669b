/*
 * body.c: the text of a MESSAGE body, whatever it is wrapped in.
 *
 * text/plain in any charset (iconv to UTF-8), text/html (the text between
 * tags), message/cpim (RFC 3862: the encapsulated MIME entity), and every
 * text part of a multipart body. Notifications
 * (isComposing, IMDN) carry no user text and pass unscored; anything else is
 * a file for the file checks. The body is its declared length and may hold
 * NUL bytes: it is never treated as a C string.
 */
#include "filter.h"
#include "filter_int.h"

#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 4

struct out {
    char *p;
    size_t len, cap;
    int found_text, found_other;
    struct spim_sip_files *files; /* may be NULL */
};

/* The filename parameter of a Content-Disposition value, unquoted. */
static struct spim_slice disp_filename(struct spim_slice d)
{
    struct spim_slice r = {NULL, 0};

    for (size_t i = 0; i + 9 <= d.len; i++) {
        size_t b, e;

        if (strncasecmp(d.p + i, "filename=", 9) != 0 ||
            (i > 0 && d.p[i - 1] != ';' && d.p[i - 1] != ' ' && d.p[i - 1] != '\t'))
            continue;
        b = i + 9;
        if (b < d.len && d.p[b] == '"') {
            e = ++b;
            while (e < d.len && d.p[e] != '"')
                e++;
        } else {
            e = b;
            while (e < d.len && d.p[e] != ';' && d.p[e] != ' ' && d.p[e] != '\t')
                e++;
        }
        r.p = d.p + b;
        r.len = e - b;
        break;
    }
    return r;
}

/* Records a payload that goes to the file checks. */
static void add_file(struct out *o, const char *ct, size_t ctn, struct spim_slice disp,
                     const char *p, size_t n)
{
    struct spim_sip_file *f;

    o->found_other = 1;
    if (o->files == NULL || o->files->n >= SPIM_SIP_MAX_FILES)
        return;
    f = &o->files->f[o->files->n++];
    f->content_type = (struct spim_slice){ct, ctn};
    f->name = disp_filename(disp);
    f->data = (struct spim_slice){p, n};
    f->size = n;
}

static void append(struct out *o, const char *p, size_t n)
{
    if (o->len && o->len < o->cap)
        o->p[o->len++] = '\n';
    if (n > o->cap - o->len)
        n = o->cap - o->len;
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static int is_utf8_name(const char *cs, size_t n)
{
    return n == 0 || spim__slice_ieq(cs, n, "utf-8") || spim__slice_ieq(cs, n, "utf8") ||
           spim__slice_ieq(cs, n, "us-ascii") || spim__slice_ieq(cs, n, "ascii");
}

/* Converts p[0..n) from charset to UTF-8 at the end of o; unknown charsets copy the bytes. */
static void append_converted(struct out *o, const char *cs, size_t csn, const char *p, size_t n)
{
    char name[64];
    iconv_t cd;
    char *in = (char *)p, *outp;
    size_t inleft = n, outleft;

    if (is_utf8_name(cs, csn) || csn >= sizeof(name)) {
        append(o, p, n);
        return;
    }
    memcpy(name, cs, csn);
    name[csn] = '\0';
    cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1) {
        append(o, p, n); /* the tokenizer repairs what is not UTF-8 */
        return;
    }
    if (o->len && o->len < o->cap)
        o->p[o->len++] = '\n';
    outp = o->p + o->len;
    outleft = o->cap - o->len;
    /*
     * Skip what does not convert, one code unit at a time (two bytes in
     * UTF-16, four in UTF-32: one byte would shift every unit after it), so
     * a bad unit loses one character.
     */
    {
        size_t unit = strstr(name, "16") ? 2 : strstr(name, "32") ? 4 : 1;

        for (unsigned guard = 0; inleft > 0 && guard < 65536; guard++) {
            size_t k;

            if (iconv(cd, &in, &inleft, &outp, &outleft) != (size_t)-1)
                break;
            if (errno == E2BIG)
                break;
            k = inleft < unit ? inleft : unit;
            in += k;
            inleft -= k;
        }
    }
    o->len = (size_t)(outp - o->p);
    iconv_close(cd);
}

/* The text of HTML: tags dropped, a few entities decoded. */
static void append_html(struct out *o, const char *p, size_t n)
{
    int in_tag = 0;

    if (o->len && o->len < o->cap)
        o->p[o->len++] = '\n';
    for (size_t i = 0; i < n && o->len < o->cap; i++) {
        if (p[i] == '<') {
            in_tag = 1;
            continue;
        }
        if (p[i] == '>') {
            in_tag = 0;
            o->p[o->len++] = ' ';
            continue;
        }
        if (in_tag)
            continue;
        if (p[i] == '&') {
            static const struct {
                const char *ent;
                char c;
            } ents[] = {{"&amp;", '&'},  {"&lt;", '<'},   {"&gt;", '>'},
                        {"&quot;", '"'}, {"&nbsp;", ' '}, {"&#39;", '\''}};
            size_t k;

            for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
                size_t el = strlen(ents[k].ent);

                if (n - i >= el && strncasecmp(p + i, ents[k].ent, el) == 0) {
                    o->p[o->len++] = ents[k].c;
                    i += el - 1;
                    break;
                }
            }
            if (k < sizeof(ents) / sizeof(ents[0]))
                continue;
        }
        o->p[o->len++] = p[i];
    }
}

void spim__parse_ctype(const char *p, size_t n, struct spim_slice *type, struct spim_slice *sub,
                       struct spim_slice *charset, struct spim_slice *boundary)
{
    size_t i = 0, b;

    memset(type, 0, sizeof(*type));
    memset(sub, 0, sizeof(*sub));
    memset(charset, 0, sizeof(*charset));
    memset(boundary, 0, sizeof(*boundary));
    if (p == NULL)
        return;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    b = i;
    while (i < n && p[i] != '/' && p[i] != ';' && p[i] != ' ')
        i++;
    type->p = p + b;
    type->len = i - b;
    if (i < n && p[i] == '/') {
        b = ++i;
        while (i < n && p[i] != ';' && p[i] != ' ' && p[i] != '\t')
            i++;
        sub->p = p + b;
        sub->len = i - b;
    }
    while (i < n) {
        size_t ns, ne;

        while (i < n && p[i] != ';')
            i++;
        if (i >= n)
            break;
        i++;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        ns = i;
        while (i < n && p[i] != '=' && p[i] != ';')
            i++;
        ne = i;
        while (ne > ns && (p[ne - 1] == ' ' || p[ne - 1] == '\t'))
            ne--;
        if (i < n && p[i] == '=') {
            int is_cs = spim__slice_ieq(p + ns, ne - ns, "charset");
            int is_bd = spim__slice_ieq(p + ns, ne - ns, "boundary");

            i++;
            while (i < n && (p[i] == ' ' || p[i] == '\t'))
                i++;
            if (i < n && p[i] == '"') {
                b = ++i;
                while (i < n && p[i] != '"')
                    i++;
            } else {
                b = i;
                while (i < n && p[i] != ';' && p[i] != ' ' && p[i] != '\t')
                    i++;
            }
            if (is_cs)
                *charset = (struct spim_slice){p + b, i - b};
            else if (is_bd)
                *boundary = (struct spim_slice){p + b, i - b};
        }
    }
}

static void extract(struct out *o, const char *ct, size_t ctn, struct spim_slice disp,
                    const char *p, size_t n, int depth);

/* Text of bytes whose structure could not be followed: scored as they are, never skipped. */
static void append_raw(struct out *o, const char *p, size_t n)
{
    append(o, p, n);
    o->found_text = 1;
}

/*
 * message/cpim: CPIM message headers, an empty line, the MIME headers of
 * the encapsulated content (Content-Type among them), an empty line, then
 * the content. Both empty lines may be CRLF or LF.
 */
static void extract_cpim(struct out *o, const char *p, size_t n, int depth)
{
    const struct spim_slice no_disp = {NULL, 0};
    size_t i = 0, ct_b = 0, ct_e = 0;
    int blank = 0;

    for (unsigned guard = 0; i < n && blank < 2 && guard < 512; guard++) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - p) + 1 : n, e = le;

        while (e > i && (p[e - 1] == '\n' || p[e - 1] == '\r'))
            e--;
        if (e == i) {
            blank++;
        } else if (blank == 1 && e - i > 13 && strncasecmp(p + i, "Content-Type:", 13) == 0) {
            ct_b = i + 13;
            ct_e = e;
        }
        i = le;
    }
    if (blank < 2) {
        append_raw(o, p, n); /* not CPIM as RFC 3862 writes it: scored as text */
        return;
    }
    if (ct_e == 0) {
        /* RFC 3862 requires a Content-Type; without one, take it as text */
        append(o, p + i, n - i);
        o->found_text = 1;
        return;
    }
    extract(o, p + ct_b, ct_e - ct_b, no_disp, p + i, n - i, depth + 1);
}

/*
 * multipart (RFC 2046 5.1): parts between lines of "--boundary", the last
 * closed by "--boundary--". Each part has MIME headers, an empty line and
 * its content; the CRLF before a delimiter belongs to the delimiter. Split
 * here rather than by libosip2, whose 5.3 parser drops the last part when
 * it is followed by the close delimiter.
 */
/* One part: MIME headers, an empty line, the content (p[b..e)). */
static void extract_part(struct out *o, const char *p, size_t b, size_t e, int depth)
{
    size_t hs = b, cs = 0, ce = 0, body = 0;
    struct spim_slice disp = {NULL, 0};

    for (unsigned g = 0; hs <= e && g < 64; g++) {
        const char *nl = memchr(p + hs, '\n', e - hs);
        size_t le = nl ? (size_t)(nl - p) : e, ve = le;

        if (ve > hs && p[ve - 1] == '\r')
            ve--;
        if (ve == hs) {
            body = nl ? le + 1 : e;
            break;
        }
        if (ve - hs > 13 && strncasecmp(p + hs, "Content-Type:", 13) == 0) {
            cs = hs + 13;
            ce = ve;
        } else if (ve - hs > 20 && strncasecmp(p + hs, "Content-Disposition:", 20) == 0) {
            disp = (struct spim_slice){p + hs + 20, ve - hs - 20};
        }
        if (nl == NULL)
            break;
        hs = le + 1;
    }
    if (body == 0 || body > e) {
        append_raw(o, p + b, e - b); /* no end to its headers: all of it is text */
        return;
    }
    while (cs < ce && (p[cs] == ' ' || p[cs] == '\t'))
        cs++;
    if (ce)
        extract(o, p + cs, ce - cs, disp, p + body, e - body, depth + 1);
    else
        extract(o, "text/plain", 10, disp, p + body, e - body, depth + 1);
}

/*
 * multipart (RFC 2046 5.1): parts between lines of "--boundary" (followed
 * by padding and the line end), the last closed by "--boundary--". The CRLF
 * before a delimiter belongs to the delimiter. Split here rather than by
 * libosip2, whose 5.3 parser drops the last part when it is followed by the
 * close delimiter. A body that does not follow the grammar (no boundary, no
 * close delimiter, too many parts) is scored as text, never skipped.
 */
static void extract_multipart(struct out *o, struct spim_slice bd, const char *p, size_t n,
                              int depth)
{
    char delim[80];
    size_t dl, i = 0, part = 0;
    int in_part = 0;

    if (bd.len == 0 || bd.len > 70) {
        append_raw(o, p, n);
        return;
    }
    delim[0] = '-';
    delim[1] = '-';
    memcpy(delim + 2, bd.p, bd.len);
    dl = bd.len + 2;
    for (unsigned guard = 0;; guard++) {
        const char *hit = NULL;

        if (guard >= 256) {
            append_raw(o, p + i, n - i); /* more parts than we split: the rest as text */
            return;
        }
        /* the next delimiter line */
        for (size_t j = i; j + dl <= n; j++) {
            if ((j == 0 || p[j - 1] == '\n') && memcmp(p + j, delim, dl) == 0 &&
                (j + dl == n || p[j + dl] == '-' || p[j + dl] == '\r' || p[j + dl] == '\n' ||
                 p[j + dl] == ' ' || p[j + dl] == '\t')) {
                hit = p + j;
                break;
            }
        }
        if (hit == NULL) {
            if (in_part)
                extract_part(o, p, part, n, depth); /* not closed: the last part runs to the end */
            else
                append_raw(o, p, n);
            return;
        }
        if (in_part) {
            size_t e = (size_t)(hit - p);

            if (e > part && p[e - 1] == '\n')
                e--;
            if (e > part && p[e - 1] == '\r')
                e--;
            extract_part(o, p, part, e, depth);
        }
        i = (size_t)(hit - p) + dl;
        if (i + 2 <= n && p[i] == '-' && p[i + 1] == '-')
            return; /* the close delimiter */
        {
            const char *nl = memchr(p + i, '\n', n - i);

            if (nl == NULL)
                return;
            i = (size_t)(nl - p) + 1;
        }
        part = i;
        in_part = 1;
    }
}

static void extract(struct out *o, const char *ct, size_t ctn, struct spim_slice disp,
                    const char *p, size_t n, int depth)
{
    struct spim_slice type, sub, cs, bd;

    if (depth > MAX_DEPTH) {
        append_raw(o, p, n); /* nested deeper than we follow: scored as text */
        return;
    }
    spim__parse_ctype(ct, ctn, &type, &sub, &cs, &bd);
    if (disp_filename(disp).len > 0) {
        /* a named attachment is a file whatever its type; a text one is read too */
        add_file(o, ct, ctn, disp, p, n);
        if (!spim__slice_ieq(type.p, type.len, "text"))
            return;
    }
    if (spim__slice_ieq(type.p, type.len, "text")) {
        if (spim__slice_ieq(sub.p, sub.len, "html"))
            append_html(o, p, n);
        else
            append_converted(o, cs.p, cs.len, p, n);
        o->found_text = 1;
    } else if (spim__slice_ieq(type.p, type.len, "message") &&
               spim__slice_ieq(sub.p, sub.len, "cpim")) {
        extract_cpim(o, p, n, depth);
    } else if (spim__slice_ieq(type.p, type.len, "multipart")) {
        extract_multipart(o, bd, p, n, depth);
    } else if ((spim__slice_ieq(type.p, type.len, "application") &&
                spim__slice_ieq(sub.p, sub.len, "im-iscomposing+xml")) ||
               (spim__slice_ieq(type.p, type.len, "message") &&
                spim__slice_ieq(sub.p, sub.len, "imdn+xml"))) {
        /* notifications: no user text */
    } else if (n > 0) {
        add_file(o, ct, ctn, disp, p, n);
    }
}

enum spim_body_kind spim_sip_body(const struct spim_sip_msg *m, char *out, size_t cap,
                                  size_t *out_len, struct spim_sip_files *files)
{
    struct out o = {out, 0, cap, 0, 0, files};

    *out_len = 0;
    if (files != NULL)
        files->n = 0;
    if (m->body.len == 0)
        return SPIM_BODY_NONE;
    if (m->content_type.len == 0)
        extract(&o, "text/plain", 10, m->content_disposition, m->body.p, m->body.len, 0);
    else
        extract(&o, m->content_type.p, m->content_type.len, m->content_disposition, m->body.p,
                m->body.len, 0);
    *out_len = o.len;
    if (o.found_text)
        return SPIM_BODY_TEXT;
    return o.found_other ? SPIM_BODY_OTHER : SPIM_BODY_NONE;
}

enum spim_body_kind spim_sip_body_text(const struct spim_sip_msg *m, char *out, size_t cap,
                                       size_t *out_len)
{
    return spim_sip_body(m, out, cap, out_len, NULL);
}

/* The value of "key:" inside a file-selector attribute (name is quoted). */
static struct spim_slice selector_value(const char *p, size_t n, const char *key)
{
    struct spim_slice r = {NULL, 0};
    size_t kl = strlen(key);
    int quoted = 0;

    /*
     * A key counts only outside quotes: name:"x size:1" must not set the
     * size, nor name:"x type:text/plain" the type. A quoted value may hold
     * backslash escapes (RFC 4566 does not define them, clients write them).
     */
    for (size_t i = 0; i < n; i++) {
        size_t b, e;

        if (quoted) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                quoted = 0;
            continue;
        }
        if (p[i] == '"') {
            quoted = 1;
            continue;
        }
        if (i + kl > n || (i > 0 && p[i - 1] != ' ') || strncasecmp(p + i, key, kl) != 0)
            continue;
        b = i + kl;
        if (b < n && p[b] == '"') {
            e = ++b;
            while (e < n && p[e] != '"') {
                if (p[e] == '\\' && e + 1 < n)
                    e++;
                e++;
            }
        } else {
            e = b;
            while (e < n && p[e] != ' ')
                e++;
        }
        r.p = p + b;
        r.len = e - b;
        break;
    }
    return r;
}

unsigned spim_sip_sdp_files(const struct spim_sip_msg *m, struct spim_sip_files *files)
{
    struct spim_slice type, sub, cs, bd;
    const char *p = m->body.p;
    size_t n = m->body.len, i = 0;
    int in_message = 0;

    files->n = 0;
    spim__parse_ctype(m->content_type.p, m->content_type.len, &type, &sub, &cs, &bd);
    if (!spim__slice_ieq(type.p, type.len, "application") ||
        !spim__slice_ieq(sub.p, sub.len, "sdp"))
        return 0;
    for (unsigned guard = 0; i < n && guard < 4096; guard++) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - p) : n, e = le;

        if (e > i && p[e - 1] == '\r')
            e--;
        if (e - i >= 2 && p[i] == 'm' && p[i + 1] == '=')
            in_message = e - i >= 9 && strncmp(p + i + 2, "message", 7) == 0;
        else if (in_message && e - i > 16 && strncmp(p + i, "a=file-selector:", 16) == 0 &&
                 files->n < SPIM_SIP_MAX_FILES) {
            struct spim_sip_file *f = &files->f[files->n++];
            struct spim_slice sz;
            long v;

            memset(f, 0, sizeof(*f));
            f->name = selector_value(p + i + 16, e - i - 16, "name:");
            f->content_type = selector_value(p + i + 16, e - i - 16, "type:");
            sz = selector_value(p + i + 16, e - i - 16, "size:");
            v = spim__parse_uint(sz.p, sz.len);
            /* a size too long to read is no reason to pass: it counts as huge */
            f->size = v > 0 ? (uint64_t)v : sz.len > 0 ? UINT64_MAX : 0;
        }
        i = le + 1;
    }
    return files->n;
}
