/* util.c: file reading and output helpers of the CLI. */
#include "cli.h"

#include <sys/stat.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int spim_read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 4096, n = 0;
    struct stat sb;
    char *p;

    if (f == NULL)
        return SPIM_EIO;
    /* A file's size is known: one buffer of it, read straight into (a corpus
     * read through a doubling buffer was copied twice over and faulted in
     * three times its size). What is read past it, if it grows, still fits. */
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 &&
        (unsigned long long)sb.st_size < ((size_t)1 << 30))
        cap = (size_t)sb.st_size + 1; /* the +1 sees the end without another doubling */
    p = malloc(cap + 1);
    if (p == NULL)
        goto fail;
    for (;;) {
        size_t r;

        if (n == cap) {
            char *q;

            if (cap > ((size_t)1 << 30))
                goto fail;
            q = realloc(p, cap * 2 + 1);
            if (q == NULL)
                goto fail;
            p = q;
            cap *= 2;
        }
        r = fread(p + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    if (f != stdin)
        fclose(f);
    p[n] = '\0';
    *buf = p;
    *len = n;
    return 0;
fail:
    free(p);
    if (f != stdin)
        fclose(f);
    return SPIM_EIO;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t k;
    unsigned c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4;
    else
        return 0;
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (k == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F)))
        return 0;
    if (k == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F)))
        return 0;
    return k;
}

void spim_json_str(FILE *f, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    fputc('"', f);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(u + i, n - i);

        if (k == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (k == 1) {
            unsigned char c = u[i];

            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        } else {
            fwrite(u + i, 1, k, f);
        }
        i += k;
    }
    fputc('"', f);
}

void spim_print_text(FILE *f, const char *s, size_t n, size_t max, int lines)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t chars = 0;

    for (size_t i = 0; i < n && chars < max; chars++) {
        size_t k = utf8_len(u + i, n - i);

        if (k == 0) {
            fputs("\xEF\xBF\xBD", f);
            i++;
        } else if (k == 1) {
            int keep = lines && (u[i] == '\n' || u[i] == '\t');

            fputc((u[i] < 0x20 && !keep) || u[i] == 0x7f ? ' ' : u[i], f);
            i++;
        } else if ((k == 2 && u[i] == 0xC2 && u[i + 1] < 0xA0) ||
                   (k == 3 && u[i] == 0xE2 && u[i + 1] == 0x80 && u[i + 2] >= 0xA8 &&
                    u[i + 2] <= 0xAE) ||
                   (k == 3 && u[i] == 0xE2 && u[i + 1] == 0x81 && u[i + 2] >= 0xA6 &&
                    u[i + 2] <= 0xA9)) {
            /* U+0080..U+009F, the C1 controls (U+009B is a terminal's CSI);
             * U+2028/U+2029, line and paragraph separators; U+202A..U+202E and
             * U+2066..U+2069, the bidi embeddings, overrides and isolates that
             * can show a text in another order than it is */
            fputc(' ', f);
            i += k;
        } else {
            fwrite(u + i, 1, k, f);
            i += k;
        }
    }
}

void spim_print_excerpt(FILE *f, const char *s, size_t n, size_t max)
{
    spim_print_text(f, s, n, max, 0);
}

int spim_tsv_open(struct spim_tsv *t, const char *path, char *err, size_t errcap)
{
    memset(t, 0, sizeof(*t));
    t->path = path;
    if (spim_read_file(path, &t->buf, &t->len) != 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno ? errno : EIO));
        return SPIM_EIO;
    }
    return 0;
}

void spim_tsv_close(struct spim_tsv *t)
{
    free(t->buf);
    t->buf = NULL;
}

int spim_path_is_stream(const char *path)
{
    struct stat sb;

    return strcmp(path, "-") == 0 ||
           (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode));
}

/* The input buffer of spim_tsv_each: a read per 16 KiB (stdio's own is a
 * page, st_blksize), four pages of memory whatever the file's size. glibc
 * only takes a size from setvbuf together with the buffer. */
#define TSV_READ_BUF (16 << 10)

int spim_tsv_each(const char *path, int (*fn)(void *ud, int is_spam, const char *text, size_t len),
                  void *ud, char *err, size_t errcap)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = NULL, *iobuf = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned lineno = 0;
    int rc = 0;

    if (f == NULL) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return SPIM_EIO;
    }
    /* not stdin's: that would outlive this call (and glibc cannot take it back) */
    if (f != stdin && (iobuf = malloc(TSV_READ_BUF)) != NULL &&
        setvbuf(f, iobuf, _IOFBF, TSV_READ_BUF) != 0) {
        free(iobuf);
        iobuf = NULL;
    }
    err[0] = '\0';
    while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
        struct spim_tsv one = {
            .buf = line, .len = (size_t)got, .pos = 0, .line = lineno, .path = path};
        const char *text;
        size_t len;
        int is_spam, r;

        lineno++;
        r = spim_tsv_next(&one, &is_spam, &text, &len, err, errcap);
        if (r < 0)
            rc = r;
        else if (r == 1)
            rc = fn(ud, is_spam, text, len);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errcap, "%s: read error", path);
        rc = SPIM_EIO;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    free(iobuf);
    return rc;
}

int spim_tsv_next(struct spim_tsv *t, int *is_spam, const char **text, size_t *len, char *err,
                  size_t errcap)
{
    while (t->pos < t->len) {
        char *ls = t->buf + t->pos, *nl = memchr(ls, '\n', t->len - t->pos), *tab;
        size_t ll = nl ? (size_t)(nl - ls) : t->len - t->pos;

        t->pos += ll + (nl ? 1 : 0);
        t->line++;
        if (ll && ls[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            continue;
        tab = memchr(ls, '\t', ll);
        if (tab != NULL && tab - ls == 4 && strncmp(ls, "spam", 4) == 0)
            *is_spam = 1;
        else if (tab != NULL && tab - ls == 3 && strncmp(ls, "ham", 3) == 0)
            *is_spam = 0;
        else if (t->line == 1)
            continue; /* a header */
        else {
            snprintf(err, errcap, "%s:%u: expected 'spam' or 'ham', a TAB, then the text", t->path,
                     t->line);
            return SPIM_EPARSE;
        }
        *text = tab + 1;
        *len = ll - (size_t)(tab + 1 - ls);
        return 1;
    }
    return 0;
}
