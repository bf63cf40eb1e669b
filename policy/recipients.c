/*
 * recipients.c: the per-recipient and per-domain policy file.
 *
 * inih parses the keys, as it does the config file (cli/config.c); a
 * reader of our own hands it the file line by line, which gives us what
 * inih's handler lacks: the line number of every key, every section header
 * (also one with no key, or repeated), and section names longer than
 * inih's 50 bytes. The reader drops leading blanks, so that an indented
 * key is a key and never the continuation of the previous value (inih's
 * multi-line values, off in effect here).
 *
 * Sections go into one array in file order; two open-addressing hash
 * tables index them, exact addresses and domains, by a hash of the
 * lower-cased name, so a lookup is one probe sequence for the address, one
 * per label of its host, and the default: never a walk over the sections.
 */
#include "policy_int.h"

#include <ini.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_SECTIONS 1000000u
#define MAX_FILE ((size_t)64 << 20)
#define NAME_MAX_LEN 127 /* fits struct spim_rcpt_policy.name */
#define HOST_MAX 255     /* of an address looked up; a longer host loses its first labels */
#define SCORE_MAX 1000.0
#define MAX_LABELS 128

/* Open addressing, linear probing, power-of-two capacity, at most half full. */
struct rtable {
    struct rslot {
        uint64_t h;
        uint32_t idx1; /* index + 1 into sec; 0: empty */
    } * s;
    size_t cap, n;
};

struct spim_rcpts {
    struct spim_rcpt_policy *sec; /* file order */
    size_t n, cap;
    struct rtable exact;  /* "user@host", lower-cased */
    struct rtable domain; /* "host" of "@host", lower-cased */
    size_t star1;         /* index + 1 of "[*]"; 0: none */
};

/* --- Tables ---------------------------------------------------------------------- */

static uint64_t key_hash(const char *s, size_t n)
{
    return spim_hash64(s, n, 0x5243505450434cULL);
}

/* The name a table compares: the section's name, without the '@' of a domain. */
static const char *key_of(const struct spim_rcpt_policy *r, size_t *n)
{
    const char *k = r->name[0] == '@' ? r->name + 1 : r->name;

    *n = strlen(k);
    return k;
}

/* key (lower-cased) in t, or NULL. Bounded: an empty slot ends every probe sequence. */
static const struct spim_rcpt_policy *rt_find(const struct spim_rcpts *p, const struct rtable *t,
                                              const char *key, size_t n)
{
    uint64_t h;

    if (t->n == 0)
        return NULL;
    h = key_hash(key, n);
    for (size_t j = h & (t->cap - 1), k = 0; k < t->cap; j = (j + 1) & (t->cap - 1), k++) {
        const struct rslot *s = &t->s[j];
        const struct spim_rcpt_policy *r;
        const char *rk;
        size_t rn;

        if (s->idx1 == 0)
            return NULL;
        if (s->h != h)
            continue;
        r = &p->sec[s->idx1 - 1];
        rk = key_of(r, &rn);
        if (rn == n && strncasecmp(rk, key, n) == 0)
            return r;
    }
    return NULL;
}

static void rt_place(struct rslot *s, size_t cap, uint64_t h, uint32_t idx1)
{
    size_t j;

    for (j = h & (cap - 1); s[j].idx1 != 0; j = (j + 1) & (cap - 1))
        ;
    s[j].h = h;
    s[j].idx1 = idx1;
}

static int rt_add(struct rtable *t, uint64_t h, uint32_t idx1)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct rslot *s = calloc(cap, sizeof(*s));

        if (s == NULL)
            return SPIM_ENOMEM;
        for (size_t i = 0; i < t->cap; i++)
            if (t->s[i].idx1 != 0)
                rt_place(s, cap, t->s[i].h, t->s[i].idx1);
        free(t->s);
        t->s = s;
        t->cap = cap;
    }
    rt_place(t->s, t->cap, h, idx1);
    t->n++;
    return 0;
}

void spim_rcpts_free(struct spim_rcpts *p)
{
    if (p == NULL)
        return;
    free(p->sec);
    free(p->exact.s);
    free(p->domain.s);
    free(p);
}

size_t spim_rcpts_count(const struct spim_rcpts *p)
{
    return p ? p->n : 0;
}

/* --- Loading --------------------------------------------------------------------- */

enum { K_TAG, K_BLOCK, K_ACTION, K_CONTACTS, K_SHADOW, NKEYS };
static const char *const key_names[NKEYS] = {"tag_score", "block_score", "action", "contacts_only",
                                             "shadow"};

struct load {
    const char *path;
    const char *buf;
    size_t len, off;
    unsigned line; /* of the line last handed to inih */
    struct spim_rcpts *p;
    long cur;      /* index of the section being read; -1 before the first */
    unsigned seen; /* bit per key given in it */
    int err;       /* the first error (SPIM_E*), 0 */
    unsigned err_line;
    char msg[256];
};

static void fail(struct load *l, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct load *l, int err, const char *fmt, ...)
{
    va_list ap;

    if (l->err != 0)
        return;
    l->err = err;
    l->err_line = l->line;
    va_start(ap, fmt);
    vsnprintf(l->msg, sizeof(l->msg), fmt, ap);
    va_end(ap);
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* A host: labels of letters, digits, '-' and '_' between single dots, or an [IPv6] reference. */
static int valid_host(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (s[0] == '[') {
        if (n < 3 || s[n - 1] != ']')
            return 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
                return 0;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '.') {
            if (i == 0 || i + 1 == n || s[i - 1] == '.')
                return 0;
        } else if (!isalnum(c) && c != '-' && c != '_') {
            return 0;
        }
    }
    return 1;
}

/* The user part of "user@host": printable, none of the characters that end a URI's user. */
static int valid_user(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]) || strchr("@[];<>\"#", s[i]) != NULL)
            return 0;
    return 1;
}

/* A section header line (leading blanks dropped, s[0] == '['): 0, or l->err set. */
static int section(struct load *l, const char *s, size_t n)
{
    struct spim_rcpts *p = l->p;
    struct spim_rcpt_policy *r;
    const struct spim_rcpt_policy *dup = NULL;
    const char *close = memchr(s, ']', n), *name = s + 1, *at;
    size_t nn, rest;
    char lk[NAME_MAX_LEN + 1];
    int rc;

    if (close == NULL) {
        fail(l, SPIM_EPARSE, "section without ']'");
        return SPIM_EPARSE;
    }
    /* An IPv6 host, "[@[2001:db8::1]]": the name ends at the second bracket. */
    if ((size_t)(close + 1 - s) < n && close[1] == ']')
        close++;
    nn = (size_t)(close - name);
    for (rest = (size_t)(close + 1 - s); rest < n && is_blank(s[rest]); rest++)
        ;
    if (rest < n && s[rest] != ';' && s[rest] != '#') {
        fail(l, SPIM_EPARSE, "text after the section name: '%.*s'", (int)(n - rest), s + rest);
        return SPIM_EPARSE;
    }
    if (nn > NAME_MAX_LEN) {
        fail(l, SPIM_EPARSE, "section name longer than %d bytes", NAME_MAX_LEN);
        return SPIM_EPARSE;
    }
    at = memchr(name, '@', nn);
    if (at == name + 1 && name[0] == '*') {
        /* the list files' spelling of "any user of a domain": say what this file calls it */
        fail(l, SPIM_EPARSE, "bad section name [%.*s]: every user of a domain is [%.*s]", (int)nn,
             name, (int)(nn - 1), name + 1);
        return SPIM_EPARSE;
    }
    if (!(nn == 1 && name[0] == '*') && !(at == name && valid_host(name + 1, nn - 1)) &&
        !(at != NULL && at > name && valid_user(name, (size_t)(at - name)) &&
          valid_host(at + 1, nn - (size_t)(at + 1 - name)))) {
        fail(l, SPIM_EPARSE, "bad section name [%.*s] (expected [user@domain], [@domain] or [*])",
             (int)nn, name);
        return SPIM_EPARSE;
    }
    for (size_t i = 0; i < nn; i++)
        lk[i] = (char)tolower((unsigned char)name[i]);
    lk[nn] = '\0';
    if (nn == 1 && name[0] == '*')
        dup = p->star1 ? &p->sec[p->star1 - 1] : NULL;
    else if (at == name)
        dup = rt_find(p, &p->domain, lk + 1, nn - 1);
    else
        dup = rt_find(p, &p->exact, lk, nn);
    if (dup != NULL) {
        fail(l, SPIM_EPARSE, "section [%.*s] given twice (first at line %u)", (int)nn, name,
             dup->line);
        return SPIM_EPARSE;
    }
    if (p->n >= MAX_SECTIONS) {
        fail(l, SPIM_ETOOBIG, "more than %u sections", MAX_SECTIONS);
        return SPIM_ETOOBIG;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct spim_rcpt_policy *ns;

        if (cap > MAX_SECTIONS)
            cap = MAX_SECTIONS;
        ns = realloc(p->sec, cap * sizeof(*ns));
        if (ns == NULL) {
            fail(l, SPIM_ENOMEM, "out of memory");
            return SPIM_ENOMEM;
        }
        p->sec = ns;
        p->cap = cap;
    }
    r = &p->sec[p->n];
    memset(r, 0, sizeof(*r));
    memcpy(r->name, name, nn);
    r->name[nn] = '\0';
    r->line = l->line;
    r->action = SPIM_RCPT_UNSET;
    r->contacts_only = SPIM_RCPT_UNSET;
    if (nn == 1 && name[0] == '*')
        rc = 0;
    else if (at == name)
        rc = rt_add(&p->domain, key_hash(lk + 1, nn - 1), (uint32_t)p->n + 1);
    else
        rc = rt_add(&p->exact, key_hash(lk, nn), (uint32_t)p->n + 1);
    if (rc != 0) {
        fail(l, rc, "out of memory");
        return rc;
    }
    if (nn == 1 && name[0] == '*')
        p->star1 = p->n + 1;
    l->cur = (long)p->n++;
    l->seen = 0;
    return 0;
}

/*
 * inih's fgets: the next line of the file, leading blanks dropped. A
 * section header is taken in here, before inih sees it. NULL ends the parse
 * (at the end, or at our first error).
 */
static char *reader(char *str, int num, void *stream)
{
    struct load *l = stream;
    const char *s, *nl;
    size_t n;

    if (l->err != 0 || l->off >= l->len || num < 3)
        return NULL;
    s = l->buf + l->off;
    nl = memchr(s, '\n', l->len - l->off);
    n = nl ? (size_t)(nl - s) : l->len - l->off;
    l->off += n + (nl ? 1 : 0);
    l->line++;
    if (memchr(s, '\0', n) != NULL) {
        fail(l, SPIM_EPARSE, "NUL byte in the line");
        return NULL;
    }
    if (l->line == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
        s += 3; /* a UTF-8 byte order mark */
        n -= 3;
    }
    while (n > 0 && is_blank(*s)) {
        s++;
        n--;
    }
    if (n + 2 > (size_t)num) {
        fail(l, SPIM_EPARSE, "line longer than %d bytes", num - 2);
        return NULL;
    }
    if (n > 0 && s[0] == '[' && section(l, s, n) != 0)
        return NULL;
    memcpy(str, s, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
}

static int parse_score(const char *v, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    /* decimal only: strtod would take 0x10 as 16 */
    if (errno != 0 || end == v || *end != '\0' || !isfinite(d) || d < -SCORE_MAX || d > SCORE_MAX ||
        strpbrk(v, "xXpP") != NULL)
        return -1;
    *out = d;
    return 0;
}

/* v among names (NULL-terminated): its value in vals, or UNSET. */
static int pick(const char *v, const char *const *names, const int *vals)
{
    for (size_t i = 0; names[i] != NULL; i++)
        if (strcasecmp(v, names[i]) == 0)
            return vals[i];
    return SPIM_RCPT_UNSET;
}

static int on_key(void *ud, const char *sec, const char *name, const char *value)
{
    static const char *const actions[] = {"deliver", "tag", "block", "drop", NULL};
    static const int action_vals[] = {SPIM_RCPT_DELIVER, SPIM_RCPT_TAG, SPIM_RCPT_BLOCK,
                                      SPIM_RCPT_DROP};
    static const char *const only[] = {"off", "tag", "block", "drop", NULL};
    static const int only_vals[] = {SPIM_RCPT_OFF, SPIM_RCPT_TAG, SPIM_RCPT_BLOCK, SPIM_RCPT_DROP};
    static const char *const bools[] = {"yes", "no", "on", "off", "true", "false", "1", "0", NULL};
    static const int bool_vals[] = {1, 0, 1, 0, 1, 0, 1, 0};
    struct load *l = ud;
    struct spim_rcpt_policy *r;
    int k, v;

    (void)sec; /* inih cuts it at 50 bytes: ours is l->cur */
    if (l->err != 0)
        return 0;
    if (l->cur < 0) {
        fail(l, SPIM_EPARSE, "key '%s' before any section", name);
        return 0;
    }
    r = &l->p->sec[l->cur];
    for (k = 0; k < NKEYS && strcmp(name, key_names[k]) != 0; k++)
        ;
    if (k == NKEYS) {
        fail(l, SPIM_EPARSE,
             "unknown key '%s' (expected tag_score, block_score, action, contacts_only, shadow)",
             name);
        return 0;
    }
    if (l->seen & (1u << k)) {
        fail(l, SPIM_EPARSE, "%s given twice in [%s]", name, r->name);
        return 0;
    }
    l->seen |= 1u << k;
    switch (k) {
    case K_TAG:
    case K_BLOCK: {
        double d;

        if (parse_score(value, &d) != 0)
            goto bad;
        if (k == K_TAG) {
            r->tag_score = d;
            r->has_tag_score = 1;
        } else {
            r->block_score = d;
            r->has_block_score = 1;
        }
        if (r->has_tag_score && r->has_block_score && r->tag_score > r->block_score) {
            fail(l, SPIM_EPARSE, "tag_score %g above block_score %g in [%s]", r->tag_score,
                 r->block_score, r->name);
            return 0;
        }
        break;
    }
    case K_ACTION:
        if ((v = pick(value, actions, action_vals)) == SPIM_RCPT_UNSET)
            goto bad;
        r->action = v;
        break;
    case K_CONTACTS:
        if ((v = pick(value, only, only_vals)) == SPIM_RCPT_UNSET)
            goto bad;
        r->contacts_only = v;
        break;
    default:
        if ((v = pick(value, bools, bool_vals)) == SPIM_RCPT_UNSET)
            goto bad;
        r->shadow = v;
        break;
    }
    return 1;
bad:
    fail(l, SPIM_EPARSE, "%s: bad value '%s' (expected %s)", name, value,
         k == K_ACTION     ? "block, drop, tag or deliver"
         : k == K_CONTACTS ? "off, tag, block or drop"
         : k == K_SHADOW   ? "yes or no"
                           : "a number within +-1000");
    return 0;
}

int spim_rcpts_load(const char *path, struct spim_rcpts **out, struct spim_diag *d)
{
    struct load l;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (path == NULL || out == NULL)
        return SPIM_EINVAL;
    rc = spim__read_file(path, MAX_FILE, &buf, &len);
    if (rc != 0) {
        spim_diag_set(d, path, 0, 0, "%s",
                      rc == SPIM_EIO       ? strerror(errno)
                      : rc == SPIM_ETOOBIG ? "file larger than 64 MiB"
                                           : spim_strerror(rc));
        return rc;
    }
    memset(&l, 0, sizeof(l));
    l.path = path;
    l.buf = buf;
    l.len = len;
    l.cur = -1;
    l.p = calloc(1, sizeof(*l.p));
    if (l.p == NULL) {
        free(buf);
        return SPIM_ENOMEM;
    }
    rc = ini_parse_stream(reader, &l, on_key, &l);
    free(buf);
    /* The first error wins: ours, or a line inih could not read before it. */
    if (rc > 0 && (l.err == 0 || (unsigned)rc < l.err_line)) {
        spim_diag_set(d, path, (unsigned)rc, 1,
                      "expected [section], key = value, or a comment (';' or '#')");
        rc = SPIM_EPARSE;
    } else if (l.err != 0) {
        spim_diag_set(d, path, l.err_line, 1, "%s", l.msg);
        rc = l.err;
    } else if (rc < 0) {
        spim_diag_set(d, path, 0, 0, "out of memory");
        rc = SPIM_ENOMEM;
    }
    if (rc != 0) {
        spim_rcpts_free(l.p);
        return rc;
    }
    *out = l.p;
    return 0;
}

/* --- Lookup ---------------------------------------------------------------------- */

const struct spim_rcpt_policy *spim_rcpts_lookup(const struct spim_rcpts *p, const char *addr,
                                                 size_t len)
{
    char buf[HOST_MAX + 1];
    const struct spim_rcpt_policy *r;
    const char *host;
    size_t at = (size_t)-1, hn, off = 0;

    if (p == NULL)
        return NULL;
    if (addr == NULL)
        len = 0;
    for (size_t i = len; i > 0; i--)
        if (addr[i - 1] == '@') {
            at = i - 1;
            break;
        }
    if (at != (size_t)-1 && len <= NAME_MAX_LEN && p->exact.n > 0) {
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)tolower((unsigned char)addr[i]);
        if ((r = rt_find(p, &p->exact, buf, len)) != NULL)
            return r;
    }
    host = at == (size_t)-1 ? addr : addr + at + 1;
    hn = at == (size_t)-1 ? len : len - at - 1;
    if (hn > 0 && p->domain.n > 0) {
        /* A host too long to copy: start at the first parent that fits. */
        while (hn - off > HOST_MAX) {
            const char *dot = memchr(host + off, '.', hn - off);

            if (dot == NULL)
                break;
            off = (size_t)(dot + 1 - host);
        }
        if (hn - off <= HOST_MAX) {
            size_t n = hn - off;

            for (size_t i = 0; i < n; i++)
                buf[i] = (char)tolower((unsigned char)host[off + i]);
            /* The host, then each parent: one probe per label. */
            for (size_t b = 0, guard = 0; b < n && guard < MAX_LABELS; guard++) {
                const char *dot;

                if ((r = rt_find(p, &p->domain, buf + b, n - b)) != NULL)
                    return r;
                dot = memchr(buf + b, '.', n - b);
                if (dot == NULL)
                    break;
                b = (size_t)(dot + 1 - buf);
            }
        }
    }
    return p->star1 ? &p->sec[p->star1 - 1] : NULL;
}
