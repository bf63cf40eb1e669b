/*
 * lists.c: the exclusion and block lists: loading list files and looking a
 * sender up. Every kind of entry has a structure whose lookup cost does not
 * grow with the list: hash sets for URIs, domains and plain User-Agents, a
 * hash set per prefix length for "prefix*" User-Agents, and for networks
 * one sorted array searched once per prefix length present (at most 129
 * binary searches, in practice a handful). Only User-Agent globs with a
 * wildcard elsewhere than at the end are matched one by one.
 */
#include "policy_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ENTRIES 10000000u
#define MAX_FILE (1u << 30)

int spim_policy_new(struct spim_policy **out)
{
    struct spim_policy *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return SPIM_ENOMEM;
    *out = p;
    return 0;
}

static void list_free(struct spim__list *l)
{
    spim__strset_free(&l->uri);
    spim__strset_free(&l->udomain);
    spim__strset_free(&l->domain);
    spim__strset_free(&l->ua_exact);
    spim__strset_free(&l->ua_prefix);
    free(l->nets);
    free(l->globs);
}

void spim_policy_free(struct spim_policy *p)
{
    if (p == NULL)
        return;
    list_free(&p->lists[0]);
    list_free(&p->lists[1]);
    list_free(&p->shadow[0]);
    list_free(&p->shadow[1]);
    free(p->pool.p);
    free(p->block_ext);
    free(p->allow_ext);
    free(p->block_types);
    free(p->allow_types);
    free(p);
}

size_t spim_policy_count(const struct spim_policy *p, enum spim_policy_list which)
{
    if (p == NULL || (which != SPIM_POLICY_ALLOW && which != SPIM_POLICY_BLOCK))
        return 0;
    return p->lists[which - 1].count;
}

size_t spim_policy_count_shadow(const struct spim_policy *p, enum spim_policy_list which)
{
    if (p == NULL || (which != SPIM_POLICY_ALLOW && which != SPIM_POLICY_BLOCK))
        return 0;
    return p->shadow[which - 1].count;
}

/* --- Shared helpers ------------------------------------------------------------ */

int spim__pool_add(struct spim__pool *pool, const char *s, size_t n, uint32_t *off)
{
    if (pool->len + n > UINT32_MAX)
        return SPIM_ETOOBIG;
    if (pool->len + n > pool->cap) {
        size_t cap = pool->cap ? pool->cap : 4096;
        char *np;

        while (cap < pool->len + n)
            cap *= 2;
        np = realloc(pool->p, cap);
        if (np == NULL)
            return SPIM_ENOMEM;
        pool->p = np;
        pool->cap = cap;
    }
    memcpy(pool->p + pool->len, s, n);
    *off = (uint32_t)pool->len;
    pool->len += n;
    return 0;
}

uint64_t spim__key_hash(const char *s, size_t n)
{
    uint64_t h = spim_hash64(s, n, 0x5350494d504f4cULL);

    return h ? h : 1; /* 0 marks an empty slot */
}

static int strset_grow(struct spim__strset *set)
{
    size_t cap = set->cap ? set->cap * 2 : 64;
    struct spim__sent *e = calloc(cap, sizeof(*e));

    if (e == NULL)
        return SPIM_ENOMEM;
    for (size_t i = 0; i < set->cap; i++) {
        size_t j;

        if (set->e[i].h == 0)
            continue;
        for (j = set->e[i].h & (cap - 1); e[j].h != 0; j = (j + 1) & (cap - 1))
            ;
        e[j] = set->e[i];
    }
    free(set->e);
    set->e = e;
    set->cap = cap;
    return 0;
}

const struct spim__sent *spim__strset_find(const struct spim__strset *set,
                                           const struct spim__pool *pool, const char *s, size_t n)
{
    uint64_t h;

    if (set->n == 0)
        return NULL;
    h = spim__key_hash(s, n);
    /* At most half full: an empty slot ends every probe sequence. */
    for (size_t j = h & (set->cap - 1), k = 0; k < set->cap; j = (j + 1) & (set->cap - 1), k++) {
        const struct spim__sent *e = &set->e[j];

        if (e->h == 0)
            return NULL;
        if (e->h == h && e->key_len == n && memcmp(pool->p + e->key_off, s, n) == 0)
            return e;
    }
    return NULL;
}

/* Adds e (a duplicate key keeps the first entry). */
int spim__strset_add(struct spim__strset *set, const struct spim__pool *pool,
                     const struct spim__sent *e)
{
    size_t j;
    int rc;

    if (spim__strset_find(set, pool, pool->p + e->key_off, e->key_len) != NULL)
        return 0;
    if ((set->n + 1) * 2 > set->cap && (rc = strset_grow(set)) != 0)
        return rc;
    for (j = e->h & (set->cap - 1); set->e[j].h != 0; j = (j + 1) & (set->cap - 1))
        ;
    set->e[j] = *e;
    set->n++;
    return 0;
}

void spim__strset_free(struct spim__strset *set)
{
    free(set->e);
    set->e = NULL;
    set->cap = set->n = 0;
}

int spim__glob(const char *pat, size_t pn, const char *s, size_t sn)
{
    size_t p = 0, i = 0, star_p = (size_t)-1, star_i = 0;

    /* Greedy with one backtrack point: O(pn * sn) at worst, both bounded by the callers. */
    while (i < sn) {
        if (p < pn &&
            (pat[p] == '?' || tolower((unsigned char)pat[p]) == tolower((unsigned char)s[i]))) {
            p++;
            i++;
        } else if (p < pn && pat[p] == '*') {
            star_p = p++;
            star_i = i;
        } else if (star_p != (size_t)-1) {
            p = star_p + 1;
            i = ++star_i;
        } else {
            return 0;
        }
    }
    while (p < pn && pat[p] == '*')
        p++;
    return p == pn;
}

size_t spim_policy_uri_norm(struct spim_slice uri, char *out, size_t cap)
{
    const char *s = uri.p, *e, *at = NULL, *ue;
    size_t n = uri.len, len = 0;
    static const char *schemes[] = {"sip:", "sips:", "im:", "pres:"};

    if (cap == 0)
        return 0;
    out[0] = '\0';
    if (s == NULL)
        return 0;
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    /*
     * A quoted display name may hold anything, '<' and a whole URI included
     * (RFC 3261 25.1 quoted-string): skip it, escapes and all, so that
     * "\"<sip:ceo@corp>\" <sip:x@y>" is x@y.
     */
    if (n > 0 && *s == '"') {
        size_t i = 1;

        while (i < n && s[i] != '"')
            i += s[i] == '\\' ? 2 : 1;
        if (i >= n)
            return 0; /* an unterminated quote: no URI */
        s += i + 1;
        n -= i + 1;
    }
    /* A name-addr: the URI is between the angle brackets. */
    e = n > 0 ? memchr(s, '<', n) : NULL;
    if (e != NULL) {
        n -= (size_t)(e + 1 - s);
        s = e + 1;
    }
    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '<')) {
        s++;
        n--;
    }
    for (size_t k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++) {
        size_t sl = strlen(schemes[k]);

        if (n >= sl && strncasecmp(s, schemes[k], sl) == 0) {
            s += sl;
            n -= sl;
            break;
        }
    }
    /* The URI ends at '>', a blank or its headers ('?'). */
    for (e = s; e < s + n && *e != '>' && *e != '?' && *e != ' ' && *e != '\t'; e++)
        if (*e == '@' && at == NULL)
            at = e;
    /*
     * The user part ends at '@' and may carry parameters of its own
     * (sip:+1555;verstat=...@host;user=phone: they are not part of it); the
     * host ends at its port, its parameters or the end.
     */
    if (at != NULL) {
        for (ue = s; ue < at && *ue != ';'; ue++)
            ;
        for (const char *c = s; c < ue && len + 1 < cap; c++)
            out[len++] = (char)tolower((unsigned char)*c);
        if (len + 1 < cap)
            out[len++] = '@';
        s = at + 1;
    }
    if (s < e && *s == '[') {
        const char *c = s;

        while (c < e && *c != ']')
            c++;
        if (c < e)
            c++;
        e = c;
    } else {
        const char *c = s;

        while (c < e && *c != ':' && *c != ';')
            c++;
        e = c;
    }
    for (const char *c = s; c < e && len + 1 < cap; c++)
        out[len++] = (char)tolower((unsigned char)*c);
    if (at != NULL && e == s) /* "user@" with no host */
        len = 0;
    out[len] = '\0';
    return len;
}

/* --- Loading -------------------------------------------------------------------- */

static int add_str(struct spim_policy *p, struct spim__strset *set, const char *key, size_t kn,
                   const char *disp, size_t dn)
{
    struct spim__sent e = {0};
    int rc;

    if (spim__strset_find(set, &p->pool, key, kn) != NULL)
        return 0;
    if ((rc = spim__pool_add(&p->pool, key, kn, &e.key_off)) != 0 ||
        (rc = spim__pool_add(&p->pool, disp, dn, &e.disp_off)) != 0)
        return rc;
    e.h = spim__key_hash(key, kn);
    e.key_len = (uint16_t)kn;
    e.disp_len = (uint16_t)dn;
    return spim__strset_add(set, &p->pool, &e);
}

static void lower(char *dst, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)tolower((unsigned char)s[i]);
}

static int valid_domain(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.' && s[i] != '_' &&
            s[i] != '[' && s[i] != ']' && s[i] != ':')
            return 0;
    return 1;
}

/* 128-bit mask of the first plen bits. */
static void mask128(uint64_t *hi, uint64_t *lo, unsigned plen)
{
    uint64_t mh = plen >= 64 ? ~0ULL : plen == 0 ? 0 : ~0ULL << (64 - plen);
    uint64_t ml = plen <= 64 ? 0 : plen >= 128 ? ~0ULL : ~0ULL << (128 - plen);

    *hi &= mh;
    *lo &= ml;
}

static void bytes128(const unsigned char b[16], uint64_t *hi, uint64_t *lo)
{
    *hi = *lo = 0;
    for (int i = 0; i < 8; i++) {
        *hi = *hi << 8 | b[i];
        *lo = *lo << 8 | b[i + 8];
    }
}

static int add_net(struct spim_policy *p, struct spim__list *l, const char *v, size_t n,
                   struct spim_diag *d, const char *path, unsigned line)
{
    char buf[64];
    const char *slash;
    unsigned char b[16] = {0};
    struct spim__net net = {0};
    long plen;
    int v4;
    int rc;

    if (n >= sizeof(buf))
        goto bad;
    memcpy(buf, v, n);
    buf[n] = '\0';
    slash = strchr(buf, '/');
    if (slash != NULL)
        buf[slash - buf] = '\0';
    v4 = strchr(buf, ':') == NULL;
    if (v4) {
        b[10] = b[11] = 0xff;
        if (inet_pton(AF_INET, buf, b + 12) != 1)
            goto bad;
    } else if (inet_pton(AF_INET6, buf, b) != 1) {
        goto bad;
    }
    plen = v4 ? 32 : 128;
    if (slash != NULL) {
        char *end;

        errno = 0;
        plen = strtol(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end != '\0' || plen < 0 || plen > (v4 ? 32 : 128))
            goto bad;
    }
    if (v4)
        plen += 96;
    bytes128(b, &net.hi, &net.lo);
    mask128(&net.hi, &net.lo, (unsigned)plen);
    net.plen = (uint8_t)plen;
    if ((rc = spim__pool_add(&p->pool, v, n, &net.disp_off)) != 0)
        return rc;
    net.disp_len = (uint16_t)n;
    if (l->nnets == l->capnets) {
        size_t cap = l->capnets ? l->capnets * 2 : 64;
        struct spim__net *nn = realloc(l->nets, cap * sizeof(*nn));

        if (nn == NULL)
            return SPIM_ENOMEM;
        l->nets = nn;
        l->capnets = cap;
    }
    l->nets[l->nnets++] = net;
    return 0;
bad:
    spim_diag_set(d, path, line, 1, "net: expected ADDRESS or ADDRESS/PREFIX, got '%.*s'", (int)n,
                  v);
    return SPIM_EPARSE;
}

static int net_cmp(const void *a, const void *b)
{
    const struct spim__net *x = a, *y = b;

    if (x->plen != y->plen)
        return x->plen < y->plen ? -1 : 1;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return 0;
}

/* Sorts the networks and indexes them by prefix length. */
static void nets_index(struct spim__list *l)
{
    size_t i = 0;

    if (l->nnets > 1)
        qsort(l->nets, l->nnets, sizeof(*l->nets), net_cmp);
    l->nplens = 0;
    for (unsigned plen = 0; plen <= 128; plen++) {
        l->plen_first[plen] = (unsigned)i;
        while (i < l->nnets && l->nets[i].plen == plen)
            i++;
    }
    l->plen_first[129] = (unsigned)i;
    for (int plen = 128; plen >= 0; plen--)
        if (l->plen_first[plen + 1] > l->plen_first[plen])
            l->plens[l->nplens++] = (uint8_t)plen;
}

static int add_ua(struct spim_policy *p, struct spim__list *l, const char *v, size_t n)
{
    char key[SPIM__POLICY_VALUE_MAX + 1];
    const char *wild = NULL;
    int rc;

    lower(key, v, n);
    for (size_t i = 0; i < n; i++)
        if (v[i] == '*' || v[i] == '?') {
            wild = v + i;
            break;
        }
    if (wild == NULL)
        return add_str(p, &l->ua_exact, key, n, v, n);
    if (wild == v + n - 1 && *wild == '*' && n > 1) {
        if ((rc = add_str(p, &l->ua_prefix, key, n - 1, v, n)) != 0)
            return rc;
        l->ua_prefix_len[n - 1] = 1;
        return 0;
    }
    if (l->nglobs == l->capglobs) {
        size_t cap = l->capglobs ? l->capglobs * 2 : 16;
        struct spim__sent *ng = realloc(l->globs, cap * sizeof(*ng));

        if (ng == NULL)
            return SPIM_ENOMEM;
        l->globs = ng;
        l->capglobs = cap;
    }
    memset(&l->globs[l->nglobs], 0, sizeof(l->globs[0]));
    if ((rc = spim__pool_add(&p->pool, v, n, &l->globs[l->nglobs].disp_off)) != 0)
        return rc;
    l->globs[l->nglobs].disp_len = (uint16_t)n;
    l->nglobs++;
    return 0;
}

/* One `KIND VALUE` line (trimmed, comment removed). */
static int add_line(struct spim_policy *p, struct spim__list *l, const char *s, size_t n,
                    const char *path, unsigned line, struct spim_diag *d)
{
    char key[SPIM__POLICY_VALUE_MAX + 1];
    size_t kn = 0, vb, vn;
    const char *v;

    while (kn < n && s[kn] != ' ' && s[kn] != '\t')
        kn++;
    for (vb = kn; vb < n && (s[vb] == ' ' || s[vb] == '\t'); vb++)
        ;
    v = s + vb;
    vn = n - vb;
    if (vn == 0) {
        spim_diag_set(d, path, line, 1, "expected KIND VALUE (uri, domain, net, ua)");
        return SPIM_EPARSE;
    }
    if (vn > SPIM__POLICY_VALUE_MAX) {
        spim_diag_set(d, path, line, (unsigned)vb + 1, "value longer than %d bytes",
                      SPIM__POLICY_VALUE_MAX);
        return SPIM_EPARSE;
    }
    if (kn == 3 && strncmp(s, "uri", 3) == 0) {
        size_t nn;

        if (vn > 2 && v[0] == '*' && v[1] == '@') {
            if (!valid_domain(v + 2, vn - 2))
                goto bad_value;
            lower(key, v + 2, vn - 2);
            return add_str(p, &l->udomain, key, vn - 2, v, vn);
        }
        nn = spim_policy_uri_norm((struct spim_slice){v, vn}, key, sizeof(key));
        if (nn == 0 || memchr(key, '@', nn) == NULL || key[nn - 1] == '@' || key[0] == '@' ||
            memchr(v, ' ', vn) != NULL)
            goto bad_value;
        return add_str(p, &l->uri, key, nn, v, vn);
    }
    if (kn == 6 && strncmp(s, "domain", 6) == 0) {
        const char *dv = v;
        size_t dn = vn;

        if (dn > 2 && dv[0] == '*' && dv[1] == '.') {
            dv += 2;
            dn -= 2;
        } else if (dn > 1 && dv[0] == '.') {
            dv++;
            dn--;
        }
        if (!valid_domain(dv, dn))
            goto bad_value;
        lower(key, dv, dn);
        return add_str(p, &l->domain, key, dn, v, vn);
    }
    if ((kn == 3 && strncmp(s, "net", 3) == 0) || (kn == 4 && strncmp(s, "cidr", 4) == 0))
        return add_net(p, l, v, vn, d, path, line);
    if (kn == 2 && strncmp(s, "ua", 2) == 0)
        return add_ua(p, l, v, vn);
    spim_diag_set(d, path, line, 1, "unknown kind '%.*s' (expected uri, domain, net or ua)",
                  (int)kn, s);
    return SPIM_EPARSE;
bad_value:
    spim_diag_set(d, path, line, (unsigned)vb + 1, "%.*s: bad value '%.*s'", (int)kn, s, (int)vn,
                  v);
    return SPIM_EPARSE;
}

int spim__read_file(const char *path, size_t max, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL, *nb;
    size_t n = 0, cap = 0, r;

    if (f == NULL)
        return SPIM_EIO;
    do {
        if (n == cap) {
            /* one byte past max is read, to tell "exactly max" from "larger" */
            cap = cap ? cap * 2 : 65536;
            if (cap > max + 1)
                cap = max + 1;
            if (cap <= n || (nb = realloc(b, cap)) == NULL) {
                free(b);
                fclose(f);
                return cap <= n ? SPIM_ETOOBIG : SPIM_ENOMEM;
            }
            b = nb;
        }
        r = fread(b + n, 1, cap - n, f);
        n += r;
    } while (r > 0 && n <= max);
    if (ferror(f) || n > max) {
        free(b);
        fclose(f);
        return n > max ? SPIM_ETOOBIG : SPIM_EIO;
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;
}

/* Whether s[0..n) (trimmed) ends with the word "shadow"; if so *n loses it and its blanks. */
static int strip_shadow(const char *s, size_t *n)
{
    size_t k = *n;

    if (k <= 6 || memcmp(s + k - 6, "shadow", 6) != 0 || (s[k - 7] != ' ' && s[k - 7] != '\t'))
        return 0;
    k -= 6;
    while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == '\t'))
        k--;
    *n = k;
    return 1;
}

int spim_policy_load_list(struct spim_policy *p, enum spim_policy_list which, const char *path,
                          struct spim_diag *d)
{
    struct spim__list *l, *sh, *to;
    char *buf = NULL;
    size_t len = 0, i = 0;
    unsigned line = 0;
    int rc;

    if (p == NULL || path == NULL || (which != SPIM_POLICY_ALLOW && which != SPIM_POLICY_BLOCK))
        return SPIM_EINVAL;
    l = &p->lists[which - 1];
    sh = &p->shadow[which - 1];
    rc = spim__read_file(path, MAX_FILE, &buf, &len);
    if (rc != 0) {
        spim_diag_set(d, path, 0, 0, "%s", rc == SPIM_EIO ? strerror(errno) : spim_strerror(rc));
        return rc;
    }
    while (i < len) {
        const char *s = buf + i, *nl = memchr(s, '\n', len - i);
        size_t n = nl ? (size_t)(nl - s) : len - i, b = 0, m;

        i += n + 1;
        line++;
        /* A comment starts at a '#' that begins the line or follows a blank. */
        for (size_t k = 0; k < n; k++)
            if (s[k] == '#' && (k == 0 || s[k - 1] == ' ' || s[k - 1] == '\t')) {
                n = k;
                break;
            }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
            n--;
        while (b < n && (s[b] == ' ' || s[b] == '\t'))
            b++;
        if (b == n)
            continue;
        /* `KIND VALUE shadow`: kept apart, looked up by spim_policy_lookup_shadow only. */
        m = n - b;
        to = strip_shadow(s + b, &m) ? sh : l;
        n = b + m;
        if (to->count >= MAX_ENTRIES) {
            spim_diag_set(d, path, line, 1, "more than %u entries", MAX_ENTRIES);
            rc = SPIM_ETOOBIG;
            break;
        }
        rc = add_line(p, to, s + b, n - b, path, line, d);
        if (rc != 0) {
            if (rc != SPIM_EPARSE)
                spim_diag_set(d, path, line, 1, "%s", spim_strerror(rc));
            break;
        }
        to->count++;
    }
    free(buf);
    nets_index(l);
    nets_index(sh);
    return rc;
}

/* --- Lookup ----------------------------------------------------------------------- */

static void name_entry(const struct spim_policy *p, enum spim_policy_list which, const char *kind,
                       uint32_t off, uint16_t len, char *entry, size_t cap)
{
    if (cap == 0)
        return;
    snprintf(entry, cap, "%s:%s:%.*s", which == SPIM_POLICY_ALLOW ? "allow" : "block", kind,
             (int)len, p->pool.p + off);
}

/* The source as 128 bits (IPv4 and v4-mapped IPv6 as ::ffff:a.b.c.d); 0 when none. */
static int src128(const struct sockaddr *sa, uint64_t *hi, uint64_t *lo)
{
    unsigned char b[16] = {0};

    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        b[10] = b[11] = 0xff;
        memcpy(b + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(b, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else {
        return 0;
    }
    bytes128(b, hi, lo);
    return 1;
}

static const struct spim__net *net_find(const struct spim__list *l, uint64_t hi, uint64_t lo)
{
    for (unsigned k = 0; k < l->nplens; k++) {
        unsigned plen = l->plens[k];
        size_t a = l->plen_first[plen], b = l->plen_first[plen + 1];
        uint64_t mh = hi, ml = lo;

        mask128(&mh, &ml, plen);
        while (a < b) {
            size_t m = a + (b - a) / 2;
            const struct spim__net *n = &l->nets[m];

            if (n->hi == mh && n->lo == ml)
                return n;
            if (n->hi < mh || (n->hi == mh && n->lo < ml))
                a = m + 1;
            else
                b = m;
        }
    }
    return NULL;
}

static int list_lookup(const struct spim_policy *p, const struct spim__list *l,
                       enum spim_policy_list which, const char *uri, size_t un, const char *ua,
                       size_t uan, int has_src, uint64_t hi, uint64_t lo, char *entry, size_t cap)
{
    const struct spim__sent *e;
    const char *dom;
    size_t dn;

    if (l->count == 0)
        return 0;
    if (un > 0) {
        const char *at = memchr(uri, '@', un);

        if (at != NULL && (e = spim__strset_find(&l->uri, &p->pool, uri, un)) != NULL) {
            name_entry(p, which, "uri", e->disp_off, e->disp_len, entry, cap);
            return 1;
        }
        dom = at ? at + 1 : uri;
        dn = un - (size_t)(dom - uri);
        if ((e = spim__strset_find(&l->udomain, &p->pool, dom, dn)) != NULL) {
            name_entry(p, which, "uri", e->disp_off, e->disp_len, entry, cap);
            return 1;
        }
        /* The domain, then each parent domain: at most one probe per label. */
        for (unsigned guard = 0; dn > 0 && guard < 128; guard++) {
            const char *dot;

            if ((e = spim__strset_find(&l->domain, &p->pool, dom, dn)) != NULL) {
                name_entry(p, which, "domain", e->disp_off, e->disp_len, entry, cap);
                return 1;
            }
            dot = memchr(dom, '.', dn);
            if (dot == NULL)
                break;
            dn -= (size_t)(dot + 1 - dom);
            dom = dot + 1;
        }
    }
    if (has_src && l->nnets > 0) {
        const struct spim__net *n = net_find(l, hi, lo);

        if (n != NULL) {
            name_entry(p, which, "net", n->disp_off, n->disp_len, entry, cap);
            return 1;
        }
    }
    if (uan > 0) {
        if ((e = spim__strset_find(&l->ua_exact, &p->pool, ua, uan)) != NULL) {
            name_entry(p, which, "ua", e->disp_off, e->disp_len, entry, cap);
            return 1;
        }
        if (l->ua_prefix.n > 0)
            for (size_t k = uan; k >= 1; k--) {
                if (!l->ua_prefix_len[k])
                    continue;
                if ((e = spim__strset_find(&l->ua_prefix, &p->pool, ua, k)) != NULL) {
                    name_entry(p, which, "ua", e->disp_off, e->disp_len, entry, cap);
                    return 1;
                }
            }
        for (size_t k = 0; k < l->nglobs; k++) {
            const struct spim__sent *g = &l->globs[k];

            if (spim__glob(p->pool.p + g->disp_off, g->disp_len, ua, uan)) {
                name_entry(p, which, "ua", g->disp_off, g->disp_len, entry, cap);
                return 1;
            }
        }
    }
    return 0;
}

/* Looks w up in ls[1] (block), then ls[0] (allow): the lists proper, or the shadow ones. */
static enum spim_policy_list lookup_in(const struct spim_policy *p, const struct spim__list *ls,
                                       const struct spim_policy_who *w, char *entry, size_t cap)
{
    char uri[SPIM__POLICY_VALUE_MAX + 1], ua[SPIM__POLICY_VALUE_MAX + 1];
    size_t un = 0, uan = w->user_agent.len;
    uint64_t hi = 0, lo = 0;
    int has_src;

    if (cap > 0)
        entry[0] = '\0';
    if (ls[0].count == 0 && ls[1].count == 0)
        return SPIM_POLICY_NONE;
    if (w->uri.len > 0)
        un = spim_policy_uri_norm(w->uri, uri, sizeof(uri));
    if (uan > SPIM__POLICY_VALUE_MAX)
        uan = SPIM__POLICY_VALUE_MAX;
    while (uan > 0 && (w->user_agent.p[uan - 1] == ' ' || w->user_agent.p[uan - 1] == '\t'))
        uan--;
    lower(ua, w->user_agent.p, uan);
    has_src = src128(w->src, &hi, &lo);
    if (list_lookup(p, &ls[1], SPIM_POLICY_BLOCK, uri, un, ua, uan, has_src, hi, lo, entry, cap))
        return SPIM_POLICY_BLOCK;
    if (list_lookup(p, &ls[0], SPIM_POLICY_ALLOW, uri, un, ua, uan, has_src, hi, lo, entry, cap))
        return SPIM_POLICY_ALLOW;
    return SPIM_POLICY_NONE;
}

enum spim_policy_list spim_policy_lookup(const struct spim_policy *p,
                                         const struct spim_policy_who *w, char *entry, size_t cap)
{
    if (p == NULL) {
        if (cap > 0)
            entry[0] = '\0';
        return SPIM_POLICY_NONE;
    }
    return lookup_in(p, p->lists, w, entry, cap);
}

enum spim_policy_list spim_policy_lookup_shadow(const struct spim_policy *p,
                                                const struct spim_policy_who *w, char *entry,
                                                size_t cap)
{
    if (p == NULL) {
        if (cap > 0)
            entry[0] = '\0';
        return SPIM_POLICY_NONE;
    }
    return lookup_in(p, p->shadow, w, entry, cap);
}
