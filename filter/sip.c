/*
 * sip.c: one SIP message in a buffer -> struct spim_sip_msg.
 *
 * Two passes. A raw scan of the start line and headers records where things
 * are (the proxy splices its Via and Max-Forwards into the original bytes, so
 * it needs offsets, not a re-serialisation) and validates what libosip2 does
 * not: Content-Length against the bytes present, a negative or non-numeric
 * value. Then libosip2 parses the message for validation and for the fields
 * that need a real grammar (Content-Type parameters, multipart bodies).
 * Every loop is bounded by the buffer length; slices point into the buffer.
 */
#include "filter.h"
#include "filter_int.h"

#include <sys/time.h>
#include <time.h>
#include <osip2/osip.h>
#include <osipparser2/osip_parser.h>

#include <ctype.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_once_t osip_once = PTHREAD_ONCE_INIT;

static void osip_quiet(const char *fi, int li, osip_trace_level_t level, const char *chfr,
                       va_list ap)
{
    (void)fi;
    (void)li;
    (void)level;
    (void)chfr;
    (void)ap;
}

static void osip_init_once(void)
{
    /* libosip2 traces parse errors to stderr itself; we report them our way */
    osip_trace_initialize_func(TRACE_LEVEL0, osip_quiet);
    for (int l = TRACE_LEVEL0; l < END_TRACE_LEVEL; l++)
        osip_trace_disable_level((osip_trace_level_t)l);
    parser_init();
}

int spim_sip_init(char *err, size_t errcap)
{
    int rc = spim__osip_load(err, errcap);

    if (rc == 0)
        pthread_once(&osip_once, osip_init_once);
    return rc;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* Case-insensitive compare of a slice with a NUL-terminated name. */
int spim__slice_ieq(const char *p, size_t n, const char *name)
{
    size_t k = strlen(name);

    return n == k && strncasecmp(p, name, k) == 0;
}

static void trim(const char *buf, size_t *b, size_t *e)
{
    while (*b < *e && is_ws(buf[*b]))
        (*b)++;
    while (*e > *b && (is_ws(buf[*e - 1]) || buf[*e - 1] == '\r' || buf[*e - 1] == '\n'))
        (*e)--;
}

static struct spim_slice slice(const char *buf, size_t b, size_t e)
{
    struct spim_slice s = {buf + b, e - b};
    return s;
}

/* Parses an unsigned decimal of at most 9 digits; -1 when not one. */
long spim__parse_uint(const char *p, size_t n)
{
    long v = 0;

    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/*
 * Decodes a Via value "SIP/2.0/UDP host[:port];param=v;..." (LWS allowed
 * around '/' and ';') into the top-Via fields of m.
 */
int spim__decode_via(const char *buf, size_t b, size_t e, struct spim_sip_msg *m)
{
    size_t i = b, hs, he;
    int slashes = 0;

    /* protocol-name / version / transport, then LWS */
    while (i < e && slashes < 2) {
        if (buf[i] == '/')
            slashes++;
        i++;
    }
    if (slashes < 2)
        return -1;
    while (i < e && is_ws(buf[i]))
        i++;
    while (i < e && !is_ws(buf[i]) && buf[i] != ';')
        i++; /* transport */
    while (i < e && is_ws(buf[i]))
        i++;
    hs = i;
    if (i < e && buf[i] == '[') {
        while (i < e && buf[i] != ']')
            i++;
        if (i < e)
            i++;
    } else {
        while (i < e && buf[i] != ':' && buf[i] != ';' && !is_ws(buf[i]))
            i++;
    }
    he = i;
    if (he == hs)
        return -1;
    m->via_host = slice(buf, hs, he);
    m->via_port = 0;
    if (i < e && buf[i] == ':') {
        size_t ps = ++i;
        long port;

        while (i < e && isdigit((unsigned char)buf[i]))
            i++;
        port = spim__parse_uint(buf + ps, i - ps);
        if (port <= 0 || port > 65535)
            return -1;
        m->via_port = (unsigned)port;
    }
    /* parameters */
    while (i < e) {
        size_t ns, ne, vs = 0, ve = 0;

        while (i < e && is_ws(buf[i]))
            i++;
        if (i >= e)
            break;
        if (buf[i] != ';')
            return -1;
        i++;
        while (i < e && is_ws(buf[i]))
            i++;
        ns = i;
        while (i < e && buf[i] != '=' && buf[i] != ';' && !is_ws(buf[i]))
            i++;
        ne = i;
        while (i < e && is_ws(buf[i]))
            i++;
        if (i < e && buf[i] == '=') {
            i++;
            while (i < e && is_ws(buf[i]))
                i++;
            vs = i;
            while (i < e && buf[i] != ';' && !is_ws(buf[i]))
                i++;
            ve = i;
        }
        if (spim__slice_ieq(buf + ns, ne - ns, "branch"))
            m->via_branch = slice(buf, vs, ve);
        else if (spim__slice_ieq(buf + ns, ne - ns, "received"))
            m->via_received = slice(buf, vs, ve);
        else if (spim__slice_ieq(buf + ns, ne - ns, "rport")) {
            /* an empty rport points just past its name: where "=port" goes */
            m->via_has_rport = 1;
            m->via_rport = vs ? slice(buf, vs, ve) : slice(buf, ne, ne);
        }
    }
    return 0;
}

/* End of the first comma-separated value in buf[b..e), or e. */
static size_t first_value_end(const char *buf, size_t b, size_t e)
{
    int quoted = 0;

    for (size_t i = b; i < e; i++) {
        if (buf[i] == '"')
            quoted = !quoted;
        else if (buf[i] == ',' && !quoted)
            return i;
    }
    return e;
}

static unsigned count_values(const char *buf, size_t b, size_t e)
{
    unsigned n = 1;
    int quoted = 0;

    for (size_t i = b; i < e; i++) {
        if (buf[i] == '"')
            quoted = !quoted;
        else if (buf[i] == ',' && !quoted)
            n++;
    }
    return n;
}

/* Offset just past the line that starts at i (its LF), or len. */
static size_t line_end(const char *buf, size_t len, size_t i)
{
    const char *nl = memchr(buf + i, '\n', len - i);

    return nl ? (size_t)(nl - buf) + 1 : len;
}

static int scan(const char *buf, size_t len, struct spim_sip_msg *m, char *err, size_t errcap)
{
    size_t i, sl_end, cl_b = 0, cl_e = 0, body;
    int have_cl = 0, have_via = 0;

    sl_end = line_end(buf, len, 0);
    if (sl_end >= len) {
        snprintf(err, errcap, "no header section");
        return -1;
    }
    {
        size_t e = sl_end, b = 0;

        trim(buf, &b, &e);
        if (e - b > 8 && strncmp(buf, "SIP/2.0 ", 8) == 0) {
            long code = spim__parse_uint(buf + 8, e - b >= 11 ? 3 : 0);

            if (code < 100 || code > 699) {
                snprintf(err, errcap, "bad status line");
                return -1;
            }
            m->is_request = 0;
            m->status = (int)code;
        } else {
            const char *sp1 = memchr(buf, ' ', e), *sp2;

            if (sp1 == NULL || sp1 == buf) {
                snprintf(err, errcap, "bad request line");
                return -1;
            }
            sp2 = memchr(sp1 + 1, ' ', (size_t)(buf + e - sp1 - 1));
            if (sp2 == NULL || sp2 == sp1 + 1 || (size_t)(buf + e - sp2 - 1) != 7 ||
                strncmp(sp2 + 1, "SIP/2.0", 7) != 0) {
                snprintf(err, errcap, "bad request line");
                return -1;
            }
            m->is_request = 1;
            m->method = slice(buf, 0, (size_t)(sp1 - buf));
            m->ruri = slice(buf, (size_t)(sp1 - buf) + 1, (size_t)(sp2 - buf));
        }
    }

    m->max_forwards = -1;
    i = sl_end;
    for (unsigned guard = 0; guard < 4096; guard++) {
        size_t ls = i, le, ns, ne, vs, ve;

        if (i >= len) {
            snprintf(err, errcap, "headers not terminated by an empty line");
            return -1;
        }
        if (buf[i] == '\n' || (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')) {
            m->headers_end = i;
            body = buf[i] == '\n' ? i + 1 : i + 2;
            goto headers_done;
        }
        if (is_ws(buf[i])) {
            snprintf(err, errcap, "continuation line without a header");
            return -1;
        }
        le = line_end(buf, len, i);
        /* folded continuation lines belong to this header */
        while (le < len && is_ws(buf[le]))
            le = line_end(buf, len, le);
        ns = ls;
        while (ns < le && buf[ns] != ':' && buf[ns] != '\n')
            ns++;
        if (ns >= le || buf[ns] != ':') {
            snprintf(err, errcap, "header line without a colon");
            return -1;
        }
        ne = ns;
        while (ne > ls && is_ws(buf[ne - 1]))
            ne--;
        vs = ns + 1;
        ve = le;
        trim(buf, &vs, &ve);
        {
            const char *n = buf + ls;
            size_t nl = ne - ls;

            if (spim__slice_ieq(n, nl, "Via") || spim__slice_ieq(n, nl, "v")) {
                m->via_count += count_values(buf, vs, ve);
                if (!have_via) {
                    have_via = 1;
                    m->via_line = ls;
                    m->via_hdr_end = le;
                    m->via_value = vs;
                    m->via_value_end = first_value_end(buf, vs, ve);
                    {
                        size_t b = vs, e = m->via_value_end;
                        trim(buf, &b, &e);
                        m->via_value_end = e;
                    }
                    m->via_single = m->via_value_end >= ve || first_value_end(buf, vs, ve) == ve;
                    if (spim__decode_via(buf, vs, m->via_value_end, m) != 0) {
                        snprintf(err, errcap, "bad Via header");
                        return -1;
                    }
                }
            } else if (spim__slice_ieq(n, nl, "Max-Forwards")) {
                m->maxfwd_value = vs;
                m->maxfwd_len = ve - vs;
                m->max_forwards = spim__parse_uint(buf + vs, ve - vs);
                if (m->max_forwards < 0 || m->max_forwards > 255) {
                    snprintf(err, errcap, "bad Max-Forwards");
                    return -1;
                }
            } else if (spim__slice_ieq(n, nl, "Content-Length") || spim__slice_ieq(n, nl, "l")) {
                have_cl = 1;
                cl_b = vs;
                cl_e = ve;
                m->cl_line = ls;
                m->cl_line_end = le;
            } else if (spim__slice_ieq(n, nl, "From") || spim__slice_ieq(n, nl, "f")) {
                m->from = slice(buf, vs, ve);
            } else if (spim__slice_ieq(n, nl, "To") || spim__slice_ieq(n, nl, "t")) {
                m->to = slice(buf, vs, ve);
            } else if (spim__slice_ieq(n, nl, "Call-ID") || spim__slice_ieq(n, nl, "i")) {
                m->call_id = slice(buf, vs, ve);
            } else if (spim__slice_ieq(n, nl, "CSeq")) {
                size_t d = vs;

                m->cseq = slice(buf, vs, ve);
                while (d < ve && isdigit((unsigned char)buf[d]))
                    d++;
                /* RFC 3261 8.1.1.5: below 2**31, so up to ten digits */
                m->cseq_num = 0;
                for (size_t k = vs; k < d; k++)
                    m->cseq_num = m->cseq_num * 10 + (uint64_t)(buf[k] - '0');
                if (d == vs || d - vs > 10 || m->cseq_num >= (1ull << 31)) {
                    snprintf(err, errcap, "bad CSeq");
                    return -1;
                }
            } else if (spim__slice_ieq(n, nl, "P-Asserted-Identity")) {
                int vst = spim_sip_verstat(slice(buf, vs, ve));

                if (m->pai.len == 0)
                    m->pai = slice(buf, vs, ve);
                if (vst == SPIM_VERSTAT_FAILED || m->pai_verstat == SPIM_VERSTAT_NONE)
                    m->pai_verstat = vst;
            } else if (spim__slice_ieq(n, nl, "Identity") || spim__slice_ieq(n, nl, "y")) {
                if (m->identity.len == 0)
                    m->identity = slice(buf, vs, ve);
            } else if (spim__slice_ieq(n, nl, "User-Agent")) {
                m->user_agent = slice(buf, vs, ve);
            } else if (spim__slice_ieq(n, nl, "Content-Type") || spim__slice_ieq(n, nl, "c")) {
                m->content_type = slice(buf, vs, ve);
            } else if (spim__slice_ieq(n, nl, "Content-Disposition")) {
                m->content_disposition = slice(buf, vs, ve);
            }
        }
        i = le;
    }
    snprintf(err, errcap, "too many header lines");
    return -1;

headers_done:
    if (have_cl) {
        long cl = spim__parse_uint(buf + cl_b, cl_e - cl_b);

        if (cl < 0) {
            snprintf(err, errcap, "bad Content-Length");
            return -1;
        }
        if ((size_t)cl > len - body) {
            snprintf(err, errcap, "Content-Length %ld larger than the %zu body bytes", cl,
                     len - body);
            return -1;
        }
        m->body = slice(buf, body, body + (size_t)cl);
    } else {
        m->body = slice(buf, body, len);
    }
    m->msg_len = (size_t)(m->body.p - buf) + m->body.len;
    if (!have_via) {
        snprintf(err, errcap, "no Via header");
        return -1;
    }
    return 0;
}

/*
 * libosip2 checks the start line and headers. It is given them alone, with
 * Content-Length: 0: bodies are split here (body.c), and libosip2 5.3 leaks
 * memory on some malformed multipart bodies (found by the fuzzer).
 */
static int osip_parse_headers(osip_message_t *osip, const struct spim_sip_msg *m, char *err,
                              size_t errcap)
{
    static const char tail[] = "Content-Length: 0\r\n\r\n";
    char stack[4096], *copy = stack;
    size_t n = 0, hl = m->headers_end;
    int rc;

    if (hl + sizeof(tail) > sizeof(stack)) {
        copy = malloc(hl + sizeof(tail));
        if (copy == NULL) {
            snprintf(err, errcap, "out of memory");
            return SPIM_ENOMEM;
        }
    }
    if (m->cl_line_end > m->cl_line) {
        memcpy(copy, m->buf, m->cl_line);
        n = m->cl_line;
        memcpy(copy + n, m->buf + m->cl_line_end, hl - m->cl_line_end);
        n += hl - m->cl_line_end;
    } else {
        memcpy(copy, m->buf, hl);
        n = hl;
    }
    memcpy(copy + n, tail, sizeof(tail) - 1);
    n += sizeof(tail) - 1;
    rc = osip_message_parse(osip, copy, n) == OSIP_SUCCESS ? 0 : SPIM_EPARSE;
    if (copy != stack)
        free(copy);
    if (rc != 0)
        snprintf(err, errcap, "libosip2 rejected the message");
    return rc;
}

int spim_sip_parse(const char *buf, size_t len, struct spim_sip_msg *m, char *err, size_t errcap)
{
    osip_message_t *osip = NULL;
    int rc;

    memset(m, 0, sizeof(*m));
    m->buf = buf;
    m->max_forwards = -1;
    if (errcap)
        err[0] = '\0';
    if (len == 0 || len > SPIM_SIP_MAX) {
        snprintf(err, errcap, len ? "message too large" : "empty message");
        return SPIM_EPARSE;
    }
    if (scan(buf, len, m, err, errcap) != 0)
        return SPIM_EPARSE;
    if (m->is_request && (!m->from.len || !m->to.len || !m->call_id.len || !m->cseq.len)) {
        snprintf(err, errcap, "missing From, To, Call-ID or CSeq");
        return SPIM_EPARSE;
    }
    /*
     * Requests are checked by libosip2 as well; a response is only relayed
     * back along the Vias (its top Via checked to be ours, with a branch we
     * made), which the raw scan above decodes: half the messages through the
     * hop, and libosip2 is a fifth of the cost of one.
     */
    if (!m->is_request)
        return 0;
    if ((rc = spim_sip_init(err, errcap)) != 0)
        return rc;
    if (osip_message_init(&osip) != OSIP_SUCCESS) {
        snprintf(err, errcap, "out of memory");
        return SPIM_ENOMEM;
    }
    if ((rc = osip_parse_headers(osip, m, err, errcap)) != 0) {
        osip_message_free(osip);
        return rc;
    }
    m->osip = osip;
    return 0;
}

void spim_sip_msg_free(struct spim_sip_msg *m)
{
    if (m == NULL || m->osip == NULL)
        return;
    osip_message_free((osip_message_t *)m->osip);
    m->osip = NULL;
}

struct spim_slice spim_sip_uri_of(struct spim_slice v)
{
    const char *lt, *gt;
    size_t e = 0;

    while (v.len > 0 && (*v.p == ' ' || *v.p == '\t'))
        v.p++, v.len--;
    if (v.len > 0 && *v.p == '"') {
        size_t i = 1;

        while (i < v.len && v.p[i] != '"')
            i += v.p[i] == '\\' ? 2 : 1;
        if (i >= v.len)
            return (struct spim_slice){v.p, 0};
        v.p += i + 1;
        v.len -= i + 1;
    }
    if (v.len == 0)
        return v; /* an empty value's pointer may be NULL: no memchr on it */
    lt = memchr(v.p, '<', v.len);

    if (lt != NULL) {
        gt = memchr(lt, '>', (size_t)(v.p + v.len - lt));
        if (gt != NULL)
            return (struct spim_slice){lt + 1, (size_t)(gt - lt - 1)};
    }
    while (e < v.len && v.p[e] != ';')
        e++;
    return (struct spim_slice){v.p, e};
}

int spim_sip_can_answer(const struct spim_sip_msg *m)
{
    return m->is_request && m->via_host.len && m->from.len && m->to.len && m->call_id.len &&
           m->cseq.len;
}

/*
 * The verstat URI parameter: the proxy that checked the caller's identity
 * (STIR/SHAKEN: a verified Identity header) says so in the P-Asserted-
 * Identity it passes on (3GPP TS 24.229), as a parameter of the host part
 * or, in a sip: URI with user=phone, of the user part
 * (sip:+1555;verstat=TN-Validation-Passed@host;user=phone). Every value of
 * the header is looked at and the worst result wins: one Failed makes the
 * whole header Failed. Quoted display names are skipped (a verstat written
 * there is the sender's, not the proxy's).
 */
int spim_sip_verstat(struct spim_slice v)
{
    static const char key[] = ";verstat=";
    const size_t kl = sizeof(key) - 1;
    int res = SPIM_VERSTAT_NONE;

    for (size_t i = 0; i < v.len; i++) {
        size_t b, e;

        if (v.p[i] == '"') { /* a quoted string: to its unescaped end */
            for (i++; i < v.len && v.p[i] != '"'; i++)
                if (v.p[i] == '\\')
                    i++;
            continue;
        }
        if (v.p[i] != ';' || v.len - i < kl || !spim__slice_ieq(v.p + i, kl, key))
            continue;
        b = e = i + kl;
        while (e < v.len && v.p[e] != ';' && v.p[e] != '>' && v.p[e] != '?' && v.p[e] != ',' &&
               v.p[e] != '@' && v.p[e] != ' ' && v.p[e] != '\t')
            e++;
        if (spim__slice_ieq(v.p + b, e - b, "TN-Validation-Failed"))
            return SPIM_VERSTAT_FAILED;
        if (spim__slice_ieq(v.p + b, e - b, "TN-Validation-Passed"))
            res = SPIM_VERSTAT_PASSED;
        i = e - 1;
    }
    return res;
}
