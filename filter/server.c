/*
 * server.c: the inline hop. N workers, each with its own SO_REUSEPORT UDP
 * socket on the listen address, its own buffers and its own judge state
 * (Hyperscan scratch, LMDB reader), so workers share nothing on the hot
 * path. Each datagram is handled to completion by the worker that got it:
 * parse, answer locally or forward, at most one datagram out.
 */
#include "filter.h"
#include "filter_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEXT_CAP (128 * 1024)
#define OUT_CAP (SPIM_SIP_MAX + 8192)

struct spim_filter {
    struct spim_filter_config cfg;
    const struct spim_filter_ops *ops;
    void *ud;
    struct sockaddr_storage next;
    socklen_t nextlen;
    unsigned nworkers;
    int *socks;
    atomic_int stop;
    pthread_t *threads;
    struct spim_filter_worker **ws;
    unsigned started;
};

struct spim_filter_worker {
    struct spim_filter *f;
    void *wud;
    int sock;
    char *in, *text, *outp;
    struct spim_sip_files files;
};

static int make_socket(const struct sockaddr_storage *ss, socklen_t sl, char *err, size_t errcap)
{
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1, rcvbuf = 4 << 20;
    struct timeval tv = {0, 200000};

    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &rcvbuf, sizeof(rcvbuf));
    /* a receive timeout so a worker notices a stop request */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (bind(fd, (const struct sockaddr *)ss, sl) != 0) {
        snprintf(err, errcap, "bind: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int resolve_hostport(const char *host, unsigned port, struct sockaddr_storage *ss,
                            socklen_t *sl, char *err, size_t errcap)
{
    struct addrinfo hints, *res = NULL;
    char ps[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%u", port);
    if ((rc = getaddrinfo(host, ps, &hints, &res)) != 0 || res == NULL) {
        snprintf(err, errcap, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int spim_filter_new(const struct spim_filter_config *cfg, const struct spim_filter_ops *ops,
                    void *ud, struct spim_filter **out, char *err, size_t errcap)
{
    struct spim_filter *f;
    struct sockaddr_storage ls;
    socklen_t ll;
    unsigned i;

    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        snprintf(err, errcap, "out of memory");
        return SPIM_ENOMEM;
    }
    f->cfg = *cfg;
    f->ops = ops;
    f->ud = ud;
    if (f->cfg.self.host[0] == '\0') {
        snprintf(f->cfg.self.host, sizeof(f->cfg.self.host), "%s", cfg->listen_host);
        f->cfg.self.port = cfg->listen_port;
    }
    if (f->cfg.block_reason[0] == '\0')
        snprintf(f->cfg.block_reason, sizeof(f->cfg.block_reason), "Forbidden");
    f->nworkers = cfg->workers;
    if (f->nworkers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        f->nworkers = n > 0 ? (unsigned)n : 1;
    }
    if (f->nworkers > 64)
        f->nworkers = 64;
    if (resolve_hostport(cfg->next_host, cfg->next_port, &f->next, &f->nextlen, err, errcap) ||
        resolve_hostport(cfg->listen_host, cfg->listen_port, &ls, &ll, err, errcap))
        goto fail;
    f->socks = calloc(f->nworkers, sizeof(int));
    if (f->socks == NULL)
        goto fail;
    for (i = 0; i < f->nworkers; i++)
        f->socks[i] = -1;
    for (i = 0; i < f->nworkers; i++) {
        f->socks[i] = make_socket(&ls, ll, err, errcap);
        if (f->socks[i] < 0)
            goto fail;
    }
    *out = f;
    return 0;

fail:
    spim_filter_free(f);
    return SPIM_ENET;
}

void spim_filter_free(struct spim_filter *f)
{
    if (f == NULL)
        return;
    if (f->socks != NULL)
        for (unsigned i = 0; i < f->nworkers; i++)
            if (f->socks[i] >= 0)
                close(f->socks[i]);
    free(f->socks);
    free(f);
}

void spim_filter_stop(struct spim_filter *f)
{
    atomic_store(&f->stop, 1);
}

struct spim_filter_worker *spim_filter_worker_new(struct spim_filter *f)
{
    struct spim_filter_worker *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->f = f;
    w->sock = -1;
    w->in = malloc(SPIM_SIP_MAX + 1);
    w->text = malloc(TEXT_CAP);
    w->outp = malloc(OUT_CAP);
    if (w->in == NULL || w->text == NULL || w->outp == NULL)
        goto fail;
    if (f->ops->worker_new != NULL) {
        w->wud = f->ops->worker_new(f->ud);
        if (w->wud == NULL)
            goto fail;
    }
    return w;

fail:
    spim_filter_worker_free(w);
    return NULL;
}

void spim_filter_worker_free(struct spim_filter_worker *w)
{
    if (w == NULL)
        return;
    if (w->wud != NULL && w->f->ops->worker_free != NULL)
        w->f->ops->worker_free(w->wud);
    free(w->in);
    free(w->text);
    free(w->outp);
    free(w);
}

static int only_whitespace(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != '\r' && buf[i] != '\n' && buf[i] != ' ' && buf[i] != '\t' && buf[i] != 0)
            return 0;
    return 1;
}

static void answer(const struct spim_sip_msg *m, int code, const char *reason, const char *extra,
                   const struct sockaddr_storage *src, struct spim_buf *out,
                   struct sockaddr_storage *dst, socklen_t *dstlen)
{
    if (spim_proxy_answer(m, code, reason, extra, src, out, dst, dstlen) != 0)
        out->len = 0;
}

/* The URI of a From or To value: inside <...>, or up to the first ';'. */
static struct spim_slice uri_of(struct spim_slice v)
{
    const char *lt = memchr(v.p, '<', v.len), *gt;
    size_t e = 0;

    if (lt != NULL) {
        gt = memchr(lt, '>', (size_t)(v.p + v.len - lt));
        if (gt != NULL)
            return (struct spim_slice){lt + 1, (size_t)(gt - lt - 1)};
    }
    while (e < v.len && v.p[e] != ';')
        e++;
    return (struct spim_slice){v.p, e};
}

/*
 * Asks the judge about a MESSAGE (its text and files) or an INVITE that
 * offers files. Returns the action, 0 for what needs no judge (a
 * notification, an INVITE without a file offer), or -1 when the judge
 * failed.
 */
static int judge_request(struct spim_filter_worker *w, const struct spim_sip_msg *m, int kind,
                         const struct sockaddr_storage *src, struct spim_filter_result *r)
{
    struct spim_filter *f = w->f;
    struct spim_filter_msg fm;
    char source[64], branch[64];
    size_t tlen = 0;

    if (kind == SPIM_FMSG_MESSAGE) {
        if (spim_sip_body(m, w->text, TEXT_CAP, &tlen, &w->files) == SPIM_BODY_NONE)
            return 0; /* empty, or a notification */
    } else if (spim_sip_sdp_files(m, &w->files) == 0) {
        return 0;
    }
    spim__addr_str(src, source, sizeof(source));
    memset(&fm, 0, sizeof(fm));
    fm.kind = kind;
    fm.text = (struct spim_slice){w->text, tlen};
    fm.raw = (struct spim_slice){m->buf, m->msg_len};
    fm.from = m->from;
    fm.to = m->to;
    fm.from_uri = uri_of(m->from);
    fm.call_id = m->call_id;
    fm.user_agent = m->user_agent;
    fm.files = &w->files;
    fm.src = src;
    fm.source = source;
    spim_proxy_branch(m, branch, sizeof(branch));
    fm.txn_key = spim_hash64(branch, strlen(branch), 0);
    memset(r, 0, sizeof(*r));
    if (f->ops->judge(w->wud, &fm, r) != 0)
        return -1;
    if (r->action == 2)
        spim_log(SPIM_LOG_INFO,
                 "blocked %.*s call-id=%.*s from=%.*s to=%.*s src=%s score=%.2f p=%.4f rules=%s",
                 (int)m->method.len, m->method.p, (int)m->call_id.len, m->call_id.p,
                 (int)m->from.len, m->from.p, (int)m->to.len, m->to.p, source, r->score,
                 r->spam_probability, r->rules[0] ? r->rules : "-");
    return r->action;
}

void spim_filter_handle(struct spim_filter_worker *w, const char *buf, size_t len,
                        const struct sockaddr_storage *src, struct spim_buf *out,
                        struct sockaddr_storage *dst, socklen_t *dstlen)
{
    struct spim_filter *f = w->f;
    struct spim_sip_msg m;
    struct spim_filter_result r;
    char err[128];
    int rc, action;

    out->len = 0;
    if (len == 0 || only_whitespace(buf, len))
        return; /* keep-alives and empty datagrams */
    rc = spim_sip_parse(buf, len, &m, err, sizeof(err));
    if (rc != 0) {
        char s[64];

        spim__addr_str(src, s, sizeof(s));
        spim_log(SPIM_LOG_DEBUG, "unparsable %s from %s: %s", m.is_request ? "request" : "message",
                 s, err);
        if (m.is_request && spim_sip_can_answer(&m))
            answer(&m, 400, "Bad Request", NULL, src, out, dst, dstlen);
        spim_sip_msg_free(&m);
        return;
    }
    if (!m.is_request) {
        if (spim_proxy_forward_response(&m, &f->cfg.self, out, dst, dstlen) != 0)
            out->len = 0; /* not ours, or nowhere to go: dropped */
        goto done;
    }
    if (spim_proxy_is_for_us(&m, &f->cfg.self)) {
        answer(&m, 200, "OK", "Allow: MESSAGE, OPTIONS, INVITE, ACK, CANCEL, BYE\r\n", src, out,
               dst, dstlen);
        goto done;
    }
    if (spim_proxy_is_loop(&m, &f->cfg.self)) {
        answer(&m, 482, "Loop Detected", NULL, src, out, dst, dstlen);
        goto done;
    }
    if (m.max_forwards == 0) {
        answer(&m, 483, "Too Many Hops", NULL, src, out, dst, dstlen);
        goto done;
    }
    action = 0;
    if (spim__slice_ieq(m.method.p, m.method.len, "MESSAGE"))
        action = judge_request(w, &m, SPIM_FMSG_MESSAGE, src, &r);
    else if (spim__slice_ieq(m.method.p, m.method.len, "INVITE") && m.body.len > 0)
        action = judge_request(w, &m, SPIM_FMSG_INVITE, src, &r);
    if (action < 0) {
        answer(&m, 503, "Service Unavailable", "Retry-After: 5\r\n", src, out, dst, dstlen);
        goto done;
    }
    if (action == 2) {
        int code = r.code >= 400 && r.code <= 699 ? r.code : 403;

        answer(&m, code, code == 403 ? f->cfg.block_reason : "Not Acceptable Here", NULL, src, out,
               dst, dstlen);
        goto done;
    }
    if (action == 1) {
        char score[32], prob[32];
        struct spim_proxy_header h[4] = {{"X-SPIM-Verdict", "tag"},
                                         {"X-SPIM-Score", score},
                                         {"X-SPIM-Probability", prob},
                                         {"X-SPIM-Rules", r.rules[0] ? r.rules : "none"}};

        snprintf(score, sizeof(score), "%.2f", r.score);
        snprintf(prob, sizeof(prob), "%.4f", r.spam_probability);
        rc = spim_proxy_forward_request(&m, &f->cfg.self, src, h, 4, out);
    } else {
        rc = spim_proxy_forward_request(&m, &f->cfg.self, src, NULL, 0, out);
    }
    if (rc != 0) {
        answer(&m, 513, "Message Too Large", NULL, src, out, dst, dstlen);
        goto done;
    }
    memcpy(dst, &f->next, f->nextlen);
    *dstlen = f->nextlen;
done:
    spim_sip_msg_free(&m);
}

static void *worker_main(void *arg)
{
    struct spim_filter_worker *w = arg;
    struct spim_filter *f = w->f;
    struct spim_buf out = {w->outp, 0, OUT_CAP};
    struct sockaddr_storage src, dst;
    socklen_t srclen, dstlen;

    while (!atomic_load(&f->stop)) {
        ssize_t n;

        srclen = sizeof(src);
        n = recvfrom(w->sock, w->in, SPIM_SIP_MAX + 1, 0, (struct sockaddr *)&src, &srclen);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                spim_log(SPIM_LOG_WARN, "recvfrom: %s", strerror(errno));
            continue;
        }
        if ((size_t)n > SPIM_SIP_MAX)
            continue; /* cannot happen for UDP; keeps the bound explicit */
        dstlen = 0;
        spim_filter_handle(w, w->in, (size_t)n, &src, &out, &dst, &dstlen);
        if (out.len > 0 && dstlen > 0 &&
            sendto(w->sock, out.p, out.len, 0, (struct sockaddr *)&dst, dstlen) < 0)
            spim_log(SPIM_LOG_WARN, "sendto: %s", strerror(errno));
    }
    return NULL;
}

int spim_filter_start(struct spim_filter *f)
{
    int rc = 0;

    f->threads = calloc(f->nworkers, sizeof(*f->threads));
    f->ws = calloc(f->nworkers, sizeof(*f->ws));
    if (f->threads == NULL || f->ws == NULL)
        return SPIM_ENOMEM;
    for (; f->started < f->nworkers; f->started++) {
        struct spim_filter_worker *w = spim_filter_worker_new(f);

        if (w == NULL) {
            rc = SPIM_ENOMEM;
            break;
        }
        w->sock = f->socks[f->started];
        f->ws[f->started] = w;
        if (pthread_create(&f->threads[f->started], NULL, worker_main, w) != 0) {
            spim_filter_worker_free(w);
            rc = SPIM_ENOMEM;
            break;
        }
    }
    if (rc != 0) {
        spim_filter_stop(f);
        spim_filter_wait(f);
        return rc;
    }
    spim_log(SPIM_LOG_INFO, "serving on %s:%u, next hop %s:%u, %u workers", f->cfg.listen_host,
             f->cfg.listen_port, f->cfg.next_host, f->cfg.next_port, f->started);
    return 0;
}

void spim_filter_wait(struct spim_filter *f)
{
    for (unsigned i = 0; i < f->started; i++) {
        pthread_join(f->threads[i], NULL);
        spim_filter_worker_free(f->ws[i]);
    }
    f->started = 0;
    free(f->threads);
    free(f->ws);
    f->threads = NULL;
    f->ws = NULL;
}
