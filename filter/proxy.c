/*
 * proxy.c: what a stateless proxy (RFC 3261 16.11) writes on the wire.
 *
 * Requests are forwarded by splicing into the original bytes: our Via line
 * goes before the first Via header, the old top Via gets received/rport
 * (RFC 3581), Max-Forwards is rewritten, extra headers go before the empty
 * line; every other byte passes as it came. Responses lose our Via value
 * (which may share a line with others: SIPp folds all Vias into one) and go
 * where the next Via says. Local answers copy every Via in order.
 */
#include "filter.h"
#include "filter_int.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>

#define BRANCH_PREFIX "z9hG4bKspf"

int spim__buf_put(struct spim_buf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len)
        return SPIM_ETOOBIG;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int spim__buf_printf(struct spim_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        return SPIM_ETOOBIG;
    b->len += (size_t)n;
    return 0;
}

void spim__addr_str(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        port = ntohs(sin->sin_port);
        snprintf(out, cap, "%s:%u", host, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        port = ntohs(sin6->sin6_port);
        snprintf(out, cap, "[%s]:%u", host, port);
    } else {
        snprintf(out, cap, "?");
    }
}

static void addr_ip(const struct sockaddr_storage *ss, char *out, size_t cap, unsigned *port)
{
    out[0] = '\0';
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)cap);
        *port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, out, (socklen_t)cap);
        *port = ntohs(sin6->sin6_port);
    }
}

/* Resolves host (a numeric address, or a name) and port into *dst. */
static int resolve(const char *host, size_t hostlen, unsigned port, struct sockaddr_storage *dst,
                   socklen_t *dstlen)
{
    char h[256];
    struct addrinfo hints, *res = NULL;
    char ps[16];

    if (hostlen == 0 || hostlen >= sizeof(h))
        return SPIM_EINVAL;
    if (host[0] == '[' && hostlen > 2 && host[hostlen - 1] == ']') {
        host++;
        hostlen -= 2;
    }
    memcpy(h, host, hostlen);
    h[hostlen] = '\0';
    {
        /* a numeric address (what a Via's received holds): no resolver on the hot path */
        struct sockaddr_in *sin = (struct sockaddr_in *)dst;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)dst;

        memset(dst, 0, sizeof(*dst));
        if (inet_pton(AF_INET, h, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)(port ? port : 5060));
            *dstlen = sizeof(*sin);
            return 0;
        }
        if (inet_pton(AF_INET6, h, &sin6->sin6_addr) == 1) {
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons((uint16_t)(port ? port : 5060));
            *dstlen = sizeof(*sin6);
            return 0;
        }
    }
    snprintf(ps, sizeof(ps), "%u", port ? port : 5060);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(h, ps, &hints, &res) != 0 || res == NULL)
        return SPIM_ENET;
    memcpy(dst, res->ai_addr, res->ai_addrlen);
    *dstlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* A per-process secret in every branch: a response must carry one we made. */
static uint64_t branch_secret;

void spim_proxy_init(void)
{
    uint64_t s = 0;

    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = (uint64_t)spim_now_us() ^ ((uint64_t)getpid() << 32);
    branch_secret = s;
}

/*
 * The hash of our branch: the upstream top Via's branch (or its sent-by when
 * it has none), Call-ID, the CSeq number, the TCP connection and the secret.
 * The same for every retransmission, and for a CANCEL or an ACK of a
 * non-2xx, which must take the branch of the INVITE they belong to; and
 * computable again from a response, which carries all of these.
 */
static uint64_t branch_hash(struct spim_slice vbranch, struct spim_slice vhost, unsigned vport,
                            struct spim_slice call_id, uint64_t cseq, uint32_t conn)
{
    uint64_t h = spim_hash64(vbranch.len ? vbranch.p : "", vbranch.len, branch_secret);

    if (vbranch.len == 0)
        h = spim_hash64(vhost.p, vhost.len, h ^ vport);
    h = spim_hash64(call_id.p, call_id.len, h);
    h ^= cseq * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)conn << 17;
    return spim_hash64(&h, sizeof(h), 0x5350494d);
}

/*
 * Writes BRANCH_PREFIX, h in 16 hex digits and, for a TCP connection,
 * "c" and conn in 8 (the response finds its way back to that connection).
 * By hand: it is done for every request and every response, and snprintf
 * was a visible part of that. Cut to cap like snprintf.
 */
static void branch_str(uint64_t h, uint32_t conn, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    char s[sizeof(BRANCH_PREFIX) + 16 + 9];
    size_t n = sizeof(BRANCH_PREFIX) - 1;

    memcpy(s, BRANCH_PREFIX, n);
    for (int i = 15; i >= 0; i--)
        s[n++] = hex[(h >> (4 * i)) & 0xF];
    if (conn != 0) {
        s[n++] = 'c';
        for (int i = 7; i >= 0; i--)
            s[n++] = hex[(conn >> (4 * i)) & 0xF];
    }
    if (cap == 0)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

void spim_proxy_branch_conn(const struct spim_sip_msg *m, uint32_t conn, char *out, size_t cap)
{
    uint64_t h =
        branch_hash(m->via_branch, m->via_host, m->via_port, m->call_id, m->cseq_num, conn);

    branch_str(h, conn, out, cap);
}

void spim_proxy_branch(const struct spim_sip_msg *m, char *out, size_t cap)
{
    spim_proxy_branch_conn(m, 0, out, cap);
}

static int sent_by_is_us(const struct spim_slice *host, unsigned port,
                         const struct spim_proxy_self *self)
{
    return spim__slice_ieq(host->p, host->len, self->host) && (port ? port : 5060) == self->port;
}

/* Calls fn for each Via value of the message (raw offsets); stops when fn returns non-zero. */
static int each_via(const char *buf, const struct spim_sip_msg *m,
                    int (*fn)(const char *buf, size_t b, size_t e, void *ud), void *ud)
{
    size_t i = m->via_line;
    size_t end = m->headers_end;

    for (unsigned guard = 0; i < end && guard < 4096; guard++) {
        const char *nl = memchr(buf + i, '\n', end - i);
        size_t le = nl ? (size_t)(nl - buf) + 1 : end, ns = i, vs, ve;

        while (le < end && (buf[le] == ' ' || buf[le] == '\t')) {
            nl = memchr(buf + le, '\n', end - le);
            le = nl ? (size_t)(nl - buf) + 1 : end;
        }
        while (ns < le && buf[ns] != ':')
            ns++;
        if (ns < le) {
            size_t ne = ns;

            while (ne > i && (buf[ne - 1] == ' ' || buf[ne - 1] == '\t'))
                ne--;
            if (spim__slice_ieq(buf + i, ne - i, "Via") || spim__slice_ieq(buf + i, ne - i, "v")) {
                vs = ns + 1;
                ve = le;
                while (vs < ve) {
                    size_t c = vs;
                    int q = 0;

                    while (c < ve && (q || buf[c] != ',')) {
                        if (buf[c] == '"')
                            q = !q;
                        c++;
                    }
                    if (fn(buf, vs, c, ud))
                        return 1;
                    vs = c + 1;
                }
            }
        }
        i = le;
    }
    return 0;
}

/* Whether filling the top Via's rport needs "=" (";rport") or not (";rport=" or ";rport=N"). */
static int rport_needs_eq(const struct spim_sip_msg *m)
{
    return m->via_rport.len == 0 && !(m->via_rport.p > m->buf && m->via_rport.p[-1] == '=');
}

struct loop_ctx {
    const struct spim_proxy_self *self;
};

/* Whether BRANCH_PREFIX occurs in p[0..n). */
static int contains_prefix(const char *p, size_t n)
{
    const size_t k = sizeof(BRANCH_PREFIX) - 1;

    for (const char *z = p; n >= k && (z = memchr(z, 'z', (size_t)(p + n - k + 1 - z))) != NULL;
         z++)
        if (memcmp(z, BRANCH_PREFIX, k) == 0)
            return 1;
    return 0;
}

static int via_is_ours(const char *buf, size_t b, size_t e, void *ud)
{
    const struct loop_ctx *lc = ud;
    struct spim_sip_msg v;

    /* ours carries a branch of ours: without one anywhere in it, no need to decode it */
    if (!contains_prefix(buf + b, e > b ? e - b : 0))
        return 0;
    memset(&v, 0, sizeof(v));
    while (b < e && (buf[b] == ' ' || buf[b] == '\t' || buf[b] == '\r' || buf[b] == '\n'))
        b++;
    while (e > b &&
           (buf[e - 1] == ' ' || buf[e - 1] == '\t' || buf[e - 1] == '\r' || buf[e - 1] == '\n'))
        e--;
    if (spim__decode_via(buf, b, e, &v) != 0)
        return 0;
    return sent_by_is_us(&v.via_host, v.via_port, lc->self) && v.via_branch.len >= 10 &&
           strncmp(v.via_branch.p, BRANCH_PREFIX, 10) == 0;
}

int spim_proxy_is_loop(const struct spim_sip_msg *m, const struct spim_proxy_self *self)
{
    struct loop_ctx lc = {self};

    return each_via(m->buf, m, via_is_ours, &lc);
}

int spim_proxy_is_for_us(const struct spim_sip_msg *m, const struct spim_proxy_self *self)
{
    const char *p = m->ruri.p;
    size_t n = m->ruri.len, i, hs;
    long port = 5060;

    if (!spim__slice_ieq(m->method.p, m->method.len, "OPTIONS"))
        return 0;
    if (n < 4 || strncasecmp(p, "sip:", 4) != 0 || memchr(p, '@', n) != NULL)
        return 0;
    i = hs = 4;
    while (i < n && p[i] != ':' && p[i] != ';' && p[i] != '?')
        i++;
    if (!spim__slice_ieq(p + hs, i - hs, self->host))
        return 0;
    if (i < n && p[i] == ':') {
        size_t ps = ++i;

        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        port = spim__parse_uint(p + ps, i - ps);
    }
    return port == (long)self->port;
}

/*
 * A bounded writer for the short strings a forwarded request gets (our
 * Via, rport, received, Max-Forwards, extra headers): memcpy and digits
 * rather than snprintf, which was a visible part of every request's cost.
 * over is set, and nothing more written, once something does not fit.
 */
struct wr {
    char *p, *end;
    int over;
};

static void wr_put(struct wr *w, const char *s, size_t n)
{
    if (w->over || n > (size_t)(w->end - w->p)) {
        w->over = 1;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

static void wr_str(struct wr *w, const char *s)
{
    wr_put(w, s, strlen(s));
}

static void wr_uint(struct wr *w, unsigned long v)
{
    char t[24];
    size_t n = 0;

    do {
        t[sizeof(t) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 && n < sizeof(t));
    wr_put(w, t + sizeof(t) - n, n);
}

/* One splice into the original request: at off, drop del bytes and insert ins. */
struct edit {
    size_t off, del;
    const char *ins;
    size_t inslen;
};

static int apply_edits(const char *buf, size_t len, struct edit *ed, size_t ned,
                       struct spim_buf *out)
{
    size_t pos = 0;
    int rc;

    /* insertion sort: a handful of edits, and equal offsets keep their order */
    for (size_t i = 1; i < ned; i++) {
        struct edit t = ed[i];
        size_t j = i;

        while (j > 0 && ed[j - 1].off > t.off) {
            ed[j] = ed[j - 1];
            j--;
        }
        ed[j] = t;
    }
    for (size_t i = 0; i < ned; i++) {
        if (ed[i].off < pos || ed[i].off > len)
            return SPIM_EINVAL;
        if ((rc = spim__buf_put(out, buf + pos, ed[i].off - pos)) != 0 ||
            (rc = spim__buf_put(out, ed[i].ins, ed[i].inslen)) != 0)
            return rc;
        pos = ed[i].off + ed[i].del;
    }
    return spim__buf_put(out, buf + pos, len - pos);
}

int spim_proxy_forward_request(const struct spim_sip_msg *m, const struct spim_proxy_self *self,
                               const struct sockaddr_storage *src, const struct spim_proxy_fwd *how,
                               struct spim_buf *out)
{
    static const struct spim_proxy_fwd udp = {0, 0, NULL, 0, NULL};
    const struct spim_proxy_header *extra;
    size_t nextra;
    char via[256], branch[64], ip[INET6_ADDRSTRLEN], rport[16], received[80], mf[32];
    char hdrs[2048];
    struct edit ed[6];
    size_t ned = 0, hl = 0;
    unsigned sport;

    if (how == NULL)
        how = &udp;
    extra = how->extra;
    nextra = how->nextra;
    out->len = 0;
    if (how->branch != NULL)
        snprintf(branch, sizeof(branch), "%s", how->branch);
    else
        spim_proxy_branch_conn(m, how->conn, branch, sizeof(branch));
    {
        struct wr w = {via, via + sizeof(via), 0};

        wr_str(&w, how->tcp ? "Via: SIP/2.0/TCP " : "Via: SIP/2.0/UDP ");
        wr_str(&w, self->host);
        wr_put(&w, ":", 1);
        wr_uint(&w, self->port);
        wr_str(&w, ";branch=");
        wr_str(&w, branch);
        wr_put(&w, "\r\n", 2);
        if (w.over)
            return SPIM_ETOOBIG;
        ed[ned++] = (struct edit){m->via_line, 0, via, (size_t)(w.p - via)};
    }

    addr_ip(src, ip, sizeof(ip), &sport);
    if (m->via_has_rport) {
        /* RFC 3581: rport is the port it came from, whatever the client wrote there */
        struct wr w = {rport, rport + sizeof(rport), 0};

        if (rport_needs_eq(m))
            wr_put(&w, "=", 1);
        wr_uint(&w, sport);
        ed[ned++] = (struct edit){(size_t)(m->via_rport.p - m->buf), m->via_rport.len, rport,
                                  (size_t)(w.p - rport)};
    }
    {
        struct spim_slice h = m->via_host;

        if (h.len > 2 && h.p[0] == '[') {
            h.p++;
            h.len -= 2;
        }
        if (m->via_received.len > 0) {
            /* a received the client wrote itself is replaced by the truth */
            if (!spim__slice_ieq(m->via_received.p, m->via_received.len, ip))
                ed[ned++] = (struct edit){(size_t)(m->via_received.p - m->buf), m->via_received.len,
                                          ip, strlen(ip)};
        } else if (!spim__slice_ieq(h.p, h.len, ip) || m->via_has_rport) {
            struct wr w = {received, received + sizeof(received), 0};

            wr_str(&w, ";received=");
            wr_str(&w, ip);
            ed[ned++] = (struct edit){m->via_value_end, 0, received, (size_t)(w.p - received)};
        }
    }
    if (m->maxfwd_len) {
        struct wr w = {mf, mf + sizeof(mf), 0};

        wr_uint(&w, m->max_forwards > 0 ? (unsigned long)m->max_forwards - 1 : 0);
        ed[ned++] = (struct edit){m->maxfwd_value, m->maxfwd_len, mf, (size_t)(w.p - mf)};
    } else {
        static const char mf70[] = "Max-Forwards: 70\r\n";

        ed[ned++] = (struct edit){m->headers_end, 0, mf70, sizeof(mf70) - 1};
    }
    {
        struct wr w = {hdrs, hdrs + sizeof(hdrs), 0};

        for (size_t i = 0; i < nextra; i++) {
            wr_str(&w, extra[i].name);
            wr_put(&w, ": ", 2);
            wr_str(&w, extra[i].value);
            wr_put(&w, "\r\n", 2);
        }
        if (w.over)
            return SPIM_ETOOBIG;
        hl = (size_t)(w.p - hdrs);
    }
    if (hl)
        ed[ned++] = (struct edit){m->headers_end, 0, hdrs, hl};
    return apply_edits(m->buf, m->msg_len, ed, ned, out);
}

struct nth_ctx {
    unsigned want, seen;
    size_t b, e;
};

static int via_nth(const char *buf, size_t b, size_t e, void *ud)
{
    struct nth_ctx *c = ud;

    (void)buf;
    if (c->seen++ == c->want) {
        c->b = b;
        c->e = e;
        return 1;
    }
    return 0;
}

int spim_proxy_forward_response(const struct spim_sip_msg *m, const struct spim_proxy_self *self,
                                struct spim_buf *out, struct sockaddr_storage *dst,
                                socklen_t *dstlen, uint32_t *conn)
{
    const char *buf = m->buf;
    struct nth_ctx nc = {1, 0, 0, 0};
    struct spim_sip_msg next;
    struct edit ed;
    size_t b, e;
    long port;
    int rc;

    out->len = 0;
    if (!sent_by_is_us(&m->via_host, m->via_port, self) || m->via_branch.len < 10 ||
        strncmp(m->via_branch.p, BRANCH_PREFIX, 10) != 0)
        return SPIM_ENOTFOUND;
    *conn = 0;
    if (m->via_branch.len == 10 + 16 + 9 && m->via_branch.p[26] == 'c') {
        char hex[9];

        memcpy(hex, m->via_branch.p + 27, 8);
        hex[8] = '\0';
        *conn = (uint32_t)strtoul(hex, NULL, 16);
    }
    if (!each_via(buf, m, via_nth, &nc))
        return SPIM_ENOTFOUND; /* no Via left to send it to */
    b = nc.b;
    e = nc.e;
    while (b < e && (buf[b] == ' ' || buf[b] == '\t' || buf[b] == '\r' || buf[b] == '\n'))
        b++;
    while (e > b &&
           (buf[e - 1] == ' ' || buf[e - 1] == '\t' || buf[e - 1] == '\r' || buf[e - 1] == '\n'))
        e--;
    memset(&next, 0, sizeof(next));
    if (spim__decode_via(buf, b, e, &next) != 0)
        return SPIM_EPARSE;
    {
        /* only a branch we made: computed again from what the response carries */
        char want[64];
        uint64_t h = branch_hash(next.via_branch, next.via_host, next.via_port, m->call_id,
                                 m->cseq_num, *conn);

        branch_str(h, *conn, want, sizeof(want));
        if (!spim__slice_ieq(m->via_branch.p, m->via_branch.len, want))
            return SPIM_ENOTFOUND;
    }
    port = next.via_rport.len ? spim__parse_uint(next.via_rport.p, next.via_rport.len) : -1;
    if (port <= 0 || port > 65535)
        port = next.via_port ? (long)next.via_port : 5060;
    if (next.via_received.len)
        rc = resolve(next.via_received.p, next.via_received.len, (unsigned)port, dst, dstlen);
    else
        rc = resolve(next.via_host.p, next.via_host.len, (unsigned)port, dst, dstlen);
    if (rc != 0)
        return rc;

    if (m->via_single) {
        ed = (struct edit){m->via_line, m->via_hdr_end - m->via_line, "", 0};
    } else {
        /* our value shares the line: drop it, its comma and the space after */
        size_t c = m->via_value_end;

        while (c < m->via_hdr_end && buf[c] != ',')
            c++;
        if (c < m->via_hdr_end)
            c++;
        while (c < m->via_hdr_end &&
               (buf[c] == ' ' || buf[c] == '\t' || buf[c] == '\r' || buf[c] == '\n'))
            c++;
        ed = (struct edit){m->via_value, c - m->via_value, "", 0};
    }
    return apply_edits(buf, m->msg_len, &ed, 1, out);
}

struct copy_ctx {
    struct spim_buf *out;
    const struct spim_sip_msg *m;
    const struct sockaddr_storage *src;
    unsigned n;
    int rc;
};

/*
 * Copies one Via value as a line of its own. The top one gets what RFC
 * 3581 asks of a server that answers: rport filled with the source port and
 * received with the source address.
 */
static int via_copy(const char *buf, size_t b, size_t e, void *ud)
{
    struct copy_ctx *c = ud;
    const struct spim_sip_msg *m = c->m;

    while (b < e && (buf[b] == ' ' || buf[b] == '\t' || buf[b] == '\r' || buf[b] == '\n'))
        b++;
    while (e > b &&
           (buf[e - 1] == ' ' || buf[e - 1] == '\t' || buf[e - 1] == '\r' || buf[e - 1] == '\n'))
        e--;
    if (c->n++ == 0 && m->via_has_rport) {
        size_t at = (size_t)(m->via_rport.p - buf), after = at + m->via_rport.len;
        char ip[INET6_ADDRSTRLEN];
        unsigned port;

        addr_ip(c->src, ip, sizeof(ip), &port);
        if (at >= b && after <= e) {
            c->rc =
                spim__buf_printf(c->out, "Via: %.*s%s%u%.*s", (int)(at - b), buf + b,
                                 rport_needs_eq(m) ? "=" : "", port, (int)(e - after), buf + after);
            if (c->rc == 0 && m->via_received.len == 0)
                c->rc = spim__buf_printf(c->out, ";received=%s", ip);
            if (c->rc == 0)
                c->rc = spim__buf_printf(c->out, "\r\n");
            return c->rc != 0;
        }
    }
    if ((c->rc = spim__buf_printf(c->out, "Via: %.*s\r\n", (int)(e - b), buf + b)) != 0)
        return 1;
    return 0;
}

static int has_tag(const struct spim_slice *to)
{
    for (size_t i = 0; i + 5 <= to->len; i++)
        if (to->p[i] == ';' && strncasecmp(to->p + i + 1, "tag=", 4) == 0)
            return 1;
    return 0;
}

int spim_proxy_answer(const struct spim_sip_msg *m, int code, const char *reason, const char *extra,
                      const struct sockaddr_storage *src, struct spim_buf *out,
                      struct sockaddr_storage *dst, socklen_t *dstlen)
{
    struct copy_ctx cc = {out, m, src, 0, 0};
    /* a silent drop's 200 (no extra lines) must not say who wrote it */
    int quiet = code == 200 && extra == NULL;
    int rc;

    out->len = 0;
    if (!spim_sip_can_answer(m))
        return SPIM_EINVAL;
    if ((rc = spim__buf_printf(out, "SIP/2.0 %d %s\r\n", code, reason)) != 0)
        return rc;
    each_via(m->buf, m, via_copy, &cc);
    if (cc.rc != 0)
        return cc.rc;
    rc = spim__buf_printf(out, "From: %.*s\r\nTo: %.*s", (int)m->from.len, m->from.p,
                          (int)m->to.len, m->to.p);
    if (rc == 0 && !has_tag(&m->to)) {
        uint64_t h = spim_hash64(m->call_id.p, m->call_id.len, m->cseq_num);

        h = spim_hash64(m->from.p, m->from.len, h);
        h = spim_hash64(m->via_branch.p, m->via_branch.len, h);
        rc = spim__buf_printf(out, quiet ? ";tag=%016llx" : ";tag=spf%016llx",
                              (unsigned long long)h);
    }
    if (rc == 0)
        rc = spim__buf_printf(out, "\r\nCall-ID: %.*s\r\nCSeq: %.*s\r\n", (int)m->call_id.len,
                              m->call_id.p, (int)m->cseq.len, m->cseq.p);
    if (rc == 0 && !quiet)
        rc = spim__buf_printf(out, "Server: spimfilter/%s\r\n", SPIM_VERSION);
    if (rc == 0 && extra != NULL)
        rc = spim__buf_printf(out, "%s", extra);
    if (rc == 0)
        rc = spim__buf_printf(out, "Content-Length: 0\r\n\r\n");
    if (rc != 0)
        return rc;

    /* RFC 3261 18.2.2 with RFC 3581: the source address, its port when rport asks */
    memcpy(dst, src, sizeof(*dst));
    *dstlen = src->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (!m->via_has_rport) {
        unsigned port = m->via_port ? m->via_port : 5060;

        if (dst->ss_family == AF_INET)
            ((struct sockaddr_in *)dst)->sin_port = htons((uint16_t)port);
        else if (dst->ss_family == AF_INET6)
            ((struct sockaddr_in6 *)dst)->sin6_port = htons((uint16_t)port);
    }
    return 0;
}
