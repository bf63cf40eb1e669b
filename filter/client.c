/*
 * client.c: one SIP non-INVITE client transaction over UDP (RFC 3261
 * 17.1.2), for `spimfilter quarantine release`.
 *
 * The request is the stored MESSAGE, byte for byte, with a new Via of ours
 * on top (a fresh random branch: this is a new transaction, not a
 * retransmission of the one that was blocked) and Max-Forwards minus one.
 * It goes out on a connected UDP socket, so that an ICMP port unreachable
 * comes back as ECONNREFUSED and "the next hop is down" is told apart from
 * "the next hop is slow". Timer E retransmits at T1, doubling up to T2 (at
 * T2 once a provisional response came); timer F (64 * T1, or the caller's
 * shorter timeout) ends the wait. Only a final response ends it early.
 */
#include "filter.h"
#include "filter_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BRANCH_PREFIX "z9hG4bKspr"
/* Our Via, Max-Forwards and slack on top of the largest request accepted. */
#define CLIENT_EXTRA 512

/* 16 hex digits from the kernel's random source (the branch must be unique). */
static int random_hex(char *out, size_t cap)
{
    unsigned char r[8];
    ssize_t got = -1;
    int fd;

    if (cap < 2 * sizeof(r) + 1)
        return SPIM_EINVAL;
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        got = read(fd, r, sizeof(r));
        close(fd);
    }
    if (got != (ssize_t)sizeof(r)) {
        /* No urandom (a chroot): the clock still makes a branch nobody used. */
        uint64_t t = spim_mono_ns() ^ (uint64_t)spim_now_us() << 20 ^ (uint64_t)getpid();

        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (unsigned char)(t >> (8 * i));
    }
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    return 0;
}

int spim_client_build(const char *raw, size_t len, const char *via_host, unsigned via_port,
                      const char *branch, struct spim_buf *out, char *err, size_t errcap)
{
    struct spim_sip_msg m;
    char via[256], mf[32];
    int n, rc;

    out->len = 0;
    rc = spim_sip_parse(raw, len, &m, err, errcap);
    if (rc != 0)
        return rc;
    rc = SPIM_EINVAL;
    if (!m.is_request || m.via_count == 0) {
        snprintf(err, errcap, "the stored message is not a request with a Via");
        goto out;
    }
    if ((m.method.len == 6 && memcmp(m.method.p, "INVITE", 6) == 0) ||
        (m.method.len == 3 && memcmp(m.method.p, "ACK", 3) == 0)) {
        snprintf(err, errcap, "only non-INVITE requests can be sent again");
        goto out;
    }
    if (m.maxfwd_len && m.max_forwards <= 0) {
        snprintf(err, errcap, "Max-Forwards is 0: the request may not be forwarded");
        goto out;
    }
    n = snprintf(via, sizeof(via), "Via: SIP/2.0/UDP %s:%u;branch=%s;rport\r\n", via_host, via_port,
                 branch);
    if (n < 0 || (size_t)n >= sizeof(via)) {
        snprintf(err, errcap, "Via too long");
        goto out;
    }
    /* The pieces in order: start line and headers before the first Via, our Via, the rest. */
    if ((rc = spim__buf_put(out, raw, m.via_line)) != 0 ||
        (rc = spim__buf_put(out, via, (size_t)n)) != 0)
        goto toobig;
    if (m.maxfwd_len) {
        n = snprintf(mf, sizeof(mf), "%ld", m.max_forwards - 1);
        if ((rc = spim__buf_put(out, raw + m.via_line, m.maxfwd_value - m.via_line)) != 0 ||
            (rc = spim__buf_put(out, mf, (size_t)n)) != 0 ||
            (rc = spim__buf_put(out, raw + m.maxfwd_value + m.maxfwd_len,
                                m.msg_len - m.maxfwd_value - m.maxfwd_len)) != 0)
            goto toobig;
    } else {
        if ((rc = spim__buf_put(out, raw + m.via_line, m.headers_end - m.via_line)) != 0 ||
            (rc = spim__buf_put(out, "Max-Forwards: 70\r\n", 18)) != 0 ||
            (rc = spim__buf_put(out, raw + m.headers_end, m.msg_len - m.headers_end)) != 0)
            goto toobig;
    }
    rc = 0;
    goto out;
toobig:
    snprintf(err, errcap, "the request would be too large");
out:
    spim_sip_msg_free(&m);
    return rc;
}

static int resolve(const char *host, unsigned port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct addrinfo hints, *ai = NULL;
    char ps[8];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%u", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || ai == NULL)
        return SPIM_ENET;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *sl = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* Whether response r belongs to our transaction: our branch on top, our method in CSeq. */
static int is_ours(const struct spim_sip_msg *r, const char *branch, struct spim_slice method)
{
    size_t bl = strlen(branch);

    if (r->is_request || r->via_branch.len != bl || memcmp(r->via_branch.p, branch, bl) != 0)
        return 0;
    return r->cseq.len > method.len &&
           memcmp(r->cseq.p + r->cseq.len - method.len, method.p, method.len) == 0;
}

/*
 * The reason phrase of the status line in buf, for the operator's terminal
 * and the audit log: printable ASCII kept, any other byte (a control, a
 * terminal's escape, UTF-8) as '?'. The line ends at CR or LF.
 */
static void reason_of(const char *buf, size_t len, char *out, size_t cap)
{
    size_t ll = 0, skip = 12, n, i; /* "SIP/2.0 200 " */

    while (ll < len && buf[ll] != '\r' && buf[ll] != '\n')
        ll++;
    n = ll > skip ? ll - skip : 0;
    if (n >= cap)
        n = cap - 1;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[skip + i];

        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[n] = '\0';
}

static uint64_t ms_since(uint64_t t0)
{
    return (spim_mono_ns() - t0) / 1000000u;
}

int spim_client_request(const char *raw, size_t len, const struct spim_client_opts *o,
                        struct spim_client_result *res, char *err, size_t errcap)
{
    struct sockaddr_storage dst, me;
    socklen_t dl = sizeof(dst), ml = sizeof(me);
    struct spim_buf req = {NULL, 0, 0};
    struct spim_sip_msg rq;
    char *rbuf = NULL, host[INET6_ADDRSTRLEN + 2], ip[INET6_ADDRSTRLEN];
    unsigned t1, t2, timeout, interval, lport;
    uint64_t t0 = spim_mono_ns(), next_tx;
    int fd = -1, rc;

    memset(res, 0, sizeof(*res));
    if (errcap)
        err[0] = '\0';
    t1 = o->t1_ms ? o->t1_ms : SPIM_CLIENT_T1_MS;
    t2 = o->t2_ms ? o->t2_ms : SPIM_CLIENT_T2_MS;
    timeout = o->timeout_ms ? o->timeout_ms : 64 * t1;
    if (resolve(o->host, o->port, &dst, &dl) != 0) {
        snprintf(err, errcap, "cannot resolve %s", o->host);
        return SPIM_ENET;
    }
    fd = socket(dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, dl) != 0 ||
        getsockname(fd, (struct sockaddr *)&me, &ml) != 0) {
        snprintf(err, errcap, "socket to %s:%u: %s", o->host, o->port, strerror(errno));
        rc = SPIM_ENET;
        goto out;
    }
    if (me.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&me;

        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(host, sizeof(host), "[%s]", ip);
        lport = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&me;

        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        lport = ntohs(s4->sin_port);
    }
    snprintf(res->local, sizeof(res->local), "%s:%u", host, lport);
    memcpy(res->branch, BRANCH_PREFIX, sizeof(BRANCH_PREFIX));
    random_hex(res->branch + sizeof(BRANCH_PREFIX) - 1,
               sizeof(res->branch) - sizeof(BRANCH_PREFIX) + 1);

    req.cap = SPIM_SIP_MAX + CLIENT_EXTRA;
    req.p = malloc(req.cap);
    rbuf = malloc(SPIM_SIP_MAX + 1);
    if (req.p == NULL || rbuf == NULL) {
        snprintf(err, errcap, "out of memory");
        rc = SPIM_ENOMEM;
        goto out;
    }
    rc = spim_client_build(raw, len, host, lport, res->branch, &req, err, errcap);
    if (rc != 0)
        goto out;
    /* The method, to match CSeq of responses; parsed again from what we send. */
    rc = spim_sip_parse(req.p, req.len, &rq, err, errcap);
    if (rc != 0)
        goto out;

    interval = t1;
    next_tx = 0; /* send at once */
    rc = SPIM_ETIMEOUT;
    for (;;) {
        uint64_t now = ms_since(t0);
        struct pollfd pfd = {fd, POLLIN, 0};
        int wait, pr;

        if (now >= timeout)
            break;
        if (now >= next_tx) {
            if (send(fd, req.p, req.len, 0) < 0) {
                rc = errno == ECONNREFUSED ? SPIM_ENET : SPIM_EIO;
                snprintf(err, errcap, "send to %s:%u: %s", o->host, o->port, strerror(errno));
                break;
            }
            res->sent++;
            next_tx = now + interval;
            /* Timer E doubles up to T2; once a 1xx came it stays at T2. */
            interval = res->provisional ? t2 : (interval * 2 < t2 ? interval * 2 : t2);
        }
        wait = (int)((next_tx < timeout ? next_tx : timeout) - now);
        pr = poll(&pfd, 1, wait > 0 ? wait : 0);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            snprintf(err, errcap, "poll: %s", strerror(errno));
            rc = SPIM_EIO;
            break;
        }
        if (pr == 0)
            continue;
        {
            ssize_t n = recv(fd, rbuf, SPIM_SIP_MAX, 0);
            struct spim_sip_msg r;
            char perr[128];

            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                rc = errno == ECONNREFUSED ? SPIM_ENET : SPIM_EIO;
                if (errno == ECONNREFUSED)
                    snprintf(err, errcap,
                             "%s:%u refused the request (ICMP port unreachable): the next hop "
                             "is down",
                             o->host, o->port);
                else
                    snprintf(err, errcap, "recv from %s:%u: %s", o->host, o->port, strerror(errno));
                break;
            }
            /* Anything that is not a response of ours is ignored, as a UAC does. */
            if (spim_sip_parse(rbuf, (size_t)n, &r, perr, sizeof(perr)) != 0) {
                spim_sip_msg_free(&r);
                continue;
            }
            if (!is_ours(&r, res->branch, rq.method)) {
                spim_sip_msg_free(&r);
                continue;
            }
            if (r.status < 200) {
                if (!res->provisional && interval < t2)
                    next_tx = ms_since(t0) + t2; /* Proceeding: retransmit at T2 */
                res->provisional++;
                interval = t2;
                spim_sip_msg_free(&r);
                continue;
            }
            res->status = r.status;
            reason_of(rbuf, (size_t)n, res->reason, sizeof(res->reason));
            spim_sip_msg_free(&r);
            rc = 0;
            break;
        }
    }
    if (rc == SPIM_ETIMEOUT)
        snprintf(err, errcap, "no final response from %s:%u within %u ms (%u transmissions%s)",
                 o->host, o->port, timeout, res->sent,
                 res->provisional ? ", a provisional response came" : "");
    spim_sip_msg_free(&rq);
out:
    res->elapsed_ms = ms_since(t0);
    free(rbuf);
    free(req.p);
    if (fd >= 0)
        close(fd);
    return rc;
}
