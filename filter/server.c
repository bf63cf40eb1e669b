/*
 * server.c: the inline hop. N workers, each with its own SO_REUSEPORT UDP
 * socket and TCP listener on the listen address, its own epoll, buffers and
 * judge state (Hyperscan scratch, LMDB reader), so workers share nothing on
 * the hot path. UDP is read and written in batches (recvmmsg, sendmmsg).
 * TCP is framed by Content-Length; a response to a request that came over
 * TCP finds its connection through our branch (spim_proxy_fwd.conn), which
 * keeps the hop stateless. Each message is handled to completion by the
 * worker that read it: parse, answer locally or forward, at most one
 * message out.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, accept4 */
#include "filter.h"
#include "filter_int.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#define TEXT_CAP (128 * 1024)
#define OUT_CAP (SPIM_SIP_MAX + 8192)
#define BATCH 16
/*
 * The group commit: the answers of blocked messages (their quarantine write
 * deferred by the judge) are held until one commit covers them, at most
 * HOLD_MAX of them and for at most HOLD_NS, across batches; then one
 * transaction and its syncs stand for all of them. With the judge's
 * flush_take/flush_commit, the commit runs in a thread of the worker's own
 * (its syncs wait for the disk, milliseconds in which the worker would
 * otherwise read nothing) while the worker fills the next group; it sends
 * the group's answers once the commit returned. HOLD_MAX stays below the
 * judge's own group (32 in cli/judge.c), so the judge never commits on its
 * own behind the filter's back.
 */
#define HOLD_MAX 30
#define HOLD_NS 10000000ull
#define MAX_CONNS 4096 /* connection slots across workers */
#define CONN_BUF_MAX (SPIM_SIP_MAX + 16384)

/*
 * What we delivered lately, so that a 607 Unwanted coming back (RFC 8197)
 * can be turned into a report about that text. Keyed by a hash of our
 * branch, which the response carries; fixed size, the oldest overwritten,
 * one lock per stripe of slots.
 */
#define SENT_SLOTS 4096
#define SENT_LOCKS 64
#define SENT_TEXT 1024

struct sent {
    uint64_t key;
    uint64_t sender_key, recipient_key; /* the judge's, for ops->delivered (0: none) */
    int counted;                        /* its 2xx was handed to ops->delivered */
    uint16_t from_len, to_len, cid_len, text_len;
    char from[160], to[160], cid[128], text[SENT_TEXT];
};

/* A TCP connection: accepted from upstream, or ours toward the next hop. */
struct conn {
    int fd;
    uint32_t id; /* slot | generation << 12; never 0 */
    int outbound;
    struct spim_filter_worker *owner;
    struct sockaddr_storage peer;
    char *buf;
    size_t len, cap;
    uint64_t last_ns;
};

/* A set of settings spim_filter_reconfigure made; all are kept until the filter is freed. */
struct cfg_gen {
    struct spim_filter_config cfg;
    struct cfg_gen *older;
};

struct spim_filter {
    struct spim_filter_config cfg; /* as started: the sockets, the next hop, our Via, workers */
    /* What a reload can change (who is trusted, the answers, the sizes and
     * timeouts), read once per request or sweep: &cfg, or the newest of cfgs. */
    _Atomic(const struct spim_filter_config *) live;
    struct cfg_gen *cfgs;
    const struct spim_filter_ops *ops;
    void *ud;
    struct sockaddr_storage next;
    socklen_t nextlen;
    unsigned nworkers;
    int *socks, *listens;
    atomic_int stop;
    pthread_t *threads;
    struct spim_filter_worker **ws;
    unsigned started;
    /* connection table: lookups by id from any worker, under lock */
    pthread_mutex_t conns_lock;
    struct conn *conns[MAX_CONNS];
    uint32_t gens[MAX_CONNS];
    struct sent *sent; /* SENT_SLOTS */
    pthread_mutex_t sent_locks[SENT_LOCKS];
};

struct spim_filter_worker {
    struct spim_filter *f;
    void *wud;
    int sock, listen, ep;
    char *in, *text;
    struct spim_sip_files files;
    size_t text_len;                /* of the text judged for the message in hand */
    struct sockaddr_storage src_of; /* the source src_str was written for */
    char src_str[64];
    struct spim_slice fm_from_uri;
    struct spim_filter_out out;
    struct conn *next_conn; /* our TCP connection to the next hop */
    uint64_t tcp_retry_ns;  /* after a refused connect: not before this */
    unsigned nconns;
    /* batches */
    char *rbuf[BATCH];
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH];
    struct sockaddr_storage rsrc[BATCH];
    char *sbuf[BATCH];
    struct mmsghdr smsg[BATCH];
    struct iovec siov[BATCH];
    struct sockaddr_storage sdst[BATCH];
    /* UDP answers held for the group commit: set cur fills, the other may be committing */
    struct held {
        char *buf[HOLD_MAX];
        struct mmsghdr msg[HOLD_MAX];
        struct iovec iov[HOLD_MAX];
        struct sockaddr_storage dst[HOLD_MAX];
    } held[2];
    unsigned cur, nheld;
    uint64_t held_ns; /* when the oldest of set cur was held */
    /* the commit thread (committer_main): one group at a time, under cmu */
    pthread_t committer;
    int committer_on;
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    void *job;               /* the group handed over (flush_take), NULL when idle */
    unsigned job_set, job_n; /* its answers: held[job_set], job_n of them */
    int quit;
};

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int make_socket(const struct sockaddr_storage *ss, socklen_t sl, int type, char *err,
                       size_t errcap)
{
    int fd = socket(ss->ss_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1,
        bufsz = 4 << 20;

    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (type == SOCK_DGRAM) {
        /*
         * The receive buffer is what rides out a moment without CPU (another
         * process on the cores, a burst): at 30,000 MESSAGE/s each of two
         * workers takes in some 40 MB/s of datagram memory (1.3 KB a datagram
         * in the kernel's count, a request or an answer to relay), so 4 MB
         * (the kernel doubles it) lasts 200 ms, 8 MB 400 ms. Past
         * net.core.rmem_max when the process may (CAP_NET_ADMIN), else as
         * much of 4 MB as rmem_max allows.
         */
        int rcv = 8 << 20;

        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) != 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    }
    if (bind(fd, (const struct sockaddr *)ss, sl) != 0) {
        snprintf(err, errcap, "bind %s: %s", type == SOCK_DGRAM ? "udp" : "tcp", strerror(errno));
        close(fd);
        return -1;
    }
    if (type == SOCK_STREAM && listen(fd, 512) != 0) {
        snprintf(err, errcap, "listen: %s", strerror(errno));
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

/*
 * SO_REUSEPORT picks a socket by a hash of the 4-tuple, so all the datagrams
 * of one upstream (Kamailio sends from one socket) would land on one worker.
 * A classic BPF program that returns a random index spreads them over all
 * workers; the hop is stateless, so any worker may take any datagram. If the
 * kernel refuses it, the hash stays: slower, not wrong.
 */
static void spread_datagrams(struct spim_filter *f)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_RANDOM)),
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, f->nworkers),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(code) / sizeof(code[0])), code};

    if (f->nworkers > 1 &&
        setsockopt(f->socks[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0)
        spim_log(SPIM_LOG_INFO, "udp: cannot spread datagrams over workers: %s", strerror(errno));
}

/* The defaults of what a config leaves at 0 or empty. */
static void cfg_defaults(struct spim_filter_config *c)
{
    if (c->block_code != 608)
        c->block_code = 403;
    if (c->block_reason[0] == '\0')
        snprintf(c->block_reason, sizeof(c->block_reason), "Forbidden");
    if (c->ntrusted == 0) {
        spim_cidr_parse("127.0.0.0/8", &c->trusted[0]);
        spim_cidr_parse("::1/128", &c->trusted[1]);
        c->ntrusted = 2;
    }
    if (c->max_message_size == 0 || c->max_message_size > SPIM_SIP_MAX)
        c->max_message_size = SPIM_SIP_MAX;
    if (c->tcp_idle_s == 0)
        c->tcp_idle_s = 300;
    if (c->tcp_max_conns == 0)
        c->tcp_max_conns = 1024;
}

int spim_filter_reconfigure(struct spim_filter *f, const struct spim_filter_config *cfg)
{
    struct cfg_gen *g = malloc(sizeof(*g));

    if (g == NULL)
        return SPIM_ENOMEM;
    /* the fixed part as started, the rest from cfg */
    g->cfg = f->cfg;
    memcpy(g->cfg.trusted, cfg->trusted, sizeof(g->cfg.trusted));
    g->cfg.ntrusted = cfg->ntrusted;
    memcpy(g->cfg.block_reason, cfg->block_reason, sizeof(g->cfg.block_reason));
    g->cfg.block_code = cfg->block_code;
    memcpy(g->cfg.block_call_info, cfg->block_call_info, sizeof(g->cfg.block_call_info));
    g->cfg.on_error_deliver = cfg->on_error_deliver;
    g->cfg.max_message_size = cfg->max_message_size;
    g->cfg.udp_max = cfg->udp_max;
    g->cfg.tcp_idle_s = cfg->tcp_idle_s;
    cfg_defaults(&g->cfg);
    g->older = f->cfgs;
    f->cfgs = g;
    atomic_store_explicit(&f->live, &g->cfg, memory_order_release);
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
    spim_proxy_init();
    pthread_mutex_init(&f->conns_lock, NULL);
    for (i = 0; i < SENT_LOCKS; i++)
        pthread_mutex_init(&f->sent_locks[i], NULL);
    f->cfg = *cfg;
    if (ops->report != NULL || ops->delivered != NULL) {
        f->sent = calloc(SENT_SLOTS, sizeof(*f->sent));
        if (f->sent == NULL) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
    }
    f->ops = ops;
    f->ud = ud;
    if (f->cfg.self.host[0] == '\0') {
        snprintf(f->cfg.self.host, sizeof(f->cfg.self.host), "%s", cfg->listen_host);
        f->cfg.self.port = cfg->listen_port;
    }
    cfg_defaults(&f->cfg);
    atomic_store(&f->live, &f->cfg);
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
    f->listens = calloc(f->nworkers, sizeof(int));
    if (f->socks == NULL || f->listens == NULL)
        goto fail;
    for (i = 0; i < f->nworkers; i++)
        f->socks[i] = f->listens[i] = -1;
    if (((struct sockaddr_in *)&ls)->sin_port != 0) {
        /*
         * SO_REUSEPORT would let a second filter share the port with this one
         * and take half its traffic: probe with plain sockets first.
         */
        int types[2] = {SOCK_DGRAM, SOCK_STREAM};

        for (int t = 0; t < 2; t++) {
            int fd = socket(ls.ss_family, types[t] | SOCK_CLOEXEC, 0), one = 1, used;

            /* SO_REUSEADDR: connections in TIME_WAIT from a previous run do not count */
            if (fd >= 0)
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            used = fd >= 0 && bind(fd, (const struct sockaddr *)&ls, ll) != 0;

            if (fd >= 0)
                close(fd);
            if (used) {
                snprintf(err, errcap, "%s port %u is in use (another spimfilter?)",
                         t ? "tcp" : "udp", cfg->listen_port);
                goto fail;
            }
        }
    }
    for (i = 0; i < f->nworkers; i++) {
        f->socks[i] = make_socket(&ls, ll, SOCK_DGRAM, err, errcap);
        if (f->socks[i] < 0)
            goto fail;
        if (i == 0 && ((struct sockaddr_in *)&ls)->sin_port == 0) {
            /* port 0 (tests): every worker takes the port the first one got */
            socklen_t l2 = ll;

            getsockname(f->socks[0], (struct sockaddr *)&ls, &l2);
        }
        f->listens[i] = make_socket(&ls, ll, SOCK_STREAM, err, errcap);
        if (f->listens[i] < 0)
            goto fail;
    }
    spread_datagrams(f);
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
    for (unsigned i = 0; i < f->nworkers; i++) {
        if (f->socks != NULL && f->socks[i] >= 0)
            close(f->socks[i]);
        if (f->listens != NULL && f->listens[i] >= 0)
            close(f->listens[i]);
    }
    free(f->socks);
    free(f->listens);
    free(f->sent);
    while (f->cfgs != NULL) {
        struct cfg_gen *g = f->cfgs;

        f->cfgs = g->older;
        free(g);
    }
    pthread_mutex_destroy(&f->conns_lock);
    for (unsigned i = 0; i < SENT_LOCKS; i++)
        pthread_mutex_destroy(&f->sent_locks[i]);
    free(f);
}

void spim_filter_stop(struct spim_filter *f)
{
    atomic_store(&f->stop, 1);
}

/* --- connections ------------------------------------------------------------ */

static struct conn *conn_new(struct spim_filter_worker *w, int fd,
                             const struct sockaddr_storage *peer, int outbound)
{
    struct spim_filter *f = w->f;
    struct conn *c;
    struct epoll_event ev;
    unsigned slot;

    if (!outbound && w->nconns >= f->cfg.tcp_max_conns)
        return NULL; /* our own connection to the next hop is never refused */
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    pthread_mutex_lock(&f->conns_lock);
    for (slot = 1; slot < MAX_CONNS && f->conns[slot] != NULL; slot++)
        ;
    if (slot == MAX_CONNS) {
        pthread_mutex_unlock(&f->conns_lock);
        free(c);
        return NULL;
    }
    f->gens[slot] = (f->gens[slot] + 1) & 0xFFFFF;
    c->id = slot | (f->gens[slot] << 12);
    f->conns[slot] = c;
    pthread_mutex_unlock(&f->conns_lock);
    c->fd = fd;
    c->owner = w;
    c->outbound = outbound;
    c->peer = *peer;
    c->last_ns = spim_mono_ns();
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
    w->nconns++;
    return c;
}

static void conn_close(struct spim_filter_worker *w, struct conn *c)
{
    struct spim_filter *f = w->f;

    pthread_mutex_lock(&f->conns_lock);
    f->conns[c->id & 0xFFF] = NULL;
    pthread_mutex_unlock(&f->conns_lock);
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (w->next_conn == c)
        w->next_conn = NULL;
    w->nconns--;
    free(c->buf);
    free(c);
}

/* Writes all of p to fd, waiting at most rounds * 100 ms when the socket is full. */
static int write_some(int fd, const char *p, size_t n, unsigned rounds, int wait_ms)
{
    for (unsigned guard = 0; n > 0 && guard < rounds; guard++) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

        if (k > 0) {
            p += k;
            n -= (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {fd, POLLOUT, 0};

            if (poll(&pfd, 1, wait_ms) <= 0)
                return -1;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return n == 0 ? 0 : -1;
}

static int write_all(int fd, const char *p, size_t n)
{
    return write_some(fd, p, n, 64, 100);
}

/* Sends on the connection with that id, whichever worker owns it. */
static int conn_send(struct spim_filter *f, uint32_t id, const char *p, size_t n)
{
    struct conn *c;
    int rc = -1;

    pthread_mutex_lock(&f->conns_lock);
    c = f->conns[id & 0xFFF];
    if (c != NULL && c->id == id) {
        /*
         * Under the table lock, which every worker takes: a short wait only.
         * A peer that does not read its answers loses the connection (a cut
         * message would break its framing); its owner sees the shutdown.
         */
        rc = write_some(c->fd, p, n, 4, 5);
        if (rc != 0)
            shutdown(c->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&f->conns_lock);
    return rc;
}

/* Our TCP connection to the next hop, connected on first use. */
static struct conn *next_conn(struct spim_filter_worker *w)
{
    struct spim_filter *f = w->f;
    int fd, one = 1;

    if (w->next_conn != NULL)
        return w->next_conn;
    fd = socket(f->next.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    {
        /* a bounded connect: the next hop is near, or down */
        struct timeval tv = {1, 0};

        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (connect(fd, (const struct sockaddr *)&f->next, f->nextlen) != 0 || set_nonblock(fd) != 0) {
        spim_log(SPIM_LOG_WARN, "tcp connect to the next hop %s:%u: %s", f->cfg.next_host,
                 f->cfg.next_port, strerror(errno));
        close(fd);
        return NULL;
    }
    w->next_conn = conn_new(w, fd, &f->next, 1);
    if (w->next_conn == NULL)
        close(fd);
    return w->next_conn;
}

/* --- 607 reports ----------------------------------------------------------------- */

static uint64_t branch_key(const char *p, size_t n)
{
    return spim_hash64(p, n, 0x607) | 1; /* never 0: 0 marks a free slot */
}

static void copy_cut(char *dst, uint16_t *dl, size_t cap, struct spim_slice s)
{
    size_t n = s.len < cap ? s.len : cap;

    memcpy(dst, s.p, n);
    *dl = (uint16_t)n;
}

/* Remembers a MESSAGE we deliver: sender, recipient, text, by our branch. */
static void sent_remember(struct spim_filter *f, const struct spim_sip_msg *m, const char *branch,
                          struct spim_slice from_uri, struct spim_slice text,
                          const struct spim_filter_result *r)
{
    uint64_t key = branch_key(branch, strlen(branch));
    size_t slot = key % SENT_SLOTS;
    struct sent *s = &f->sent[slot];
    pthread_mutex_t *lk = &f->sent_locks[slot % SENT_LOCKS];
    struct spim_slice to = m->to;
    const char *lt = memchr(to.p, '<', to.len), *gt;

    if (lt != NULL && (gt = memchr(lt, '>', (size_t)(to.p + to.len - lt))) != NULL)
        to = (struct spim_slice){lt + 1, (size_t)(gt - lt - 1)};
    pthread_mutex_lock(lk);
    s->key = key;
    s->sender_key = r->sender_key;
    s->recipient_key = r->recipient_key;
    s->counted = 0;
    copy_cut(s->from, &s->from_len, sizeof(s->from), from_uri);
    copy_cut(s->to, &s->to_len, sizeof(s->to), to);
    copy_cut(s->cid, &s->cid_len, sizeof(s->cid), m->call_id);
    copy_cut(s->text, &s->text_len, sizeof(s->text), text);
    pthread_mutex_unlock(lk);
}

/*
 * A 2xx to a request we forwarded and remembered: the judge's parties of
 * that request go to ops->delivered, once per request (a retransmitted 2xx,
 * or a 2xx to anything else, counts nothing).
 */
static void sent_delivered(struct spim_filter_worker *w, const struct spim_sip_msg *m)
{
    struct spim_filter *f = w->f;
    uint64_t key = branch_key(m->via_branch.p, m->via_branch.len);
    size_t slot = key % SENT_SLOTS;
    struct spim_filter_delivery d = {0, 0, m->status};

    pthread_mutex_lock(&f->sent_locks[slot % SENT_LOCKS]);
    if (f->sent[slot].key == key && !f->sent[slot].counted && f->sent[slot].sender_key != 0) {
        d.sender_key = f->sent[slot].sender_key;
        d.recipient_key = f->sent[slot].recipient_key;
        f->sent[slot].counted = 1;
    }
    pthread_mutex_unlock(&f->sent_locks[slot % SENT_LOCKS]);
    if (d.sender_key != 0)
        f->ops->delivered(w->wud, &d);
}

/* A 607 to a MESSAGE we delivered: hands the report to the caller. */
static void sent_report(struct spim_filter_worker *w, const struct spim_sip_msg *m,
                        const struct sockaddr_storage *src)
{
    struct spim_filter *f = w->f;
    uint64_t key = branch_key(m->via_branch.p, m->via_branch.len);
    size_t slot = key % SENT_SLOTS;
    struct sent copy;
    int found;
    char source[64];
    struct spim_filter_report rep;

    if (f->sent == NULL)
        return;
    pthread_mutex_lock(&f->sent_locks[slot % SENT_LOCKS]);
    found = f->sent[slot].key == key;
    if (found) {
        copy = f->sent[slot];
        f->sent[slot].key = 0; /* one report per delivery, whatever the retransmissions */
    }
    pthread_mutex_unlock(&f->sent_locks[slot % SENT_LOCKS]);
    if (!found)
        return;
    spim__addr_str(src, source, sizeof(source));
    rep.from_uri = (struct spim_slice){copy.from, copy.from_len};
    rep.to_uri = (struct spim_slice){copy.to, copy.to_len};
    rep.text = (struct spim_slice){copy.text, copy.text_len};
    rep.call_id = (struct spim_slice){copy.cid, copy.cid_len};
    rep.source = source;
    f->ops->report(w->wud, &rep);
}

/*
 * Whether the next hop takes TCP: connects on first use; after a refusal,
 * not tried again for 10 s (a UDP-only next hop costs one attempt a while).
 */
static int next_tcp_usable(struct spim_filter_worker *w)
{
    uint64_t now = spim_mono_ns();

    if (w->next_conn != NULL) {
        /* the next hop may have closed it while idle: do not write into a dead one */
        struct pollfd pfd = {w->next_conn->fd, POLLRDHUP, 0};

        if (poll(&pfd, 1, 0) == 0)
            return 1;
        conn_close(w, w->next_conn);
    }
    if (now < w->tcp_retry_ns)
        return 0;
    if (next_conn(w) != NULL)
        return 1;
    w->tcp_retry_ns = now + 10000000000ull;
    spim_log(SPIM_LOG_WARN, "next hop refuses TCP: large requests go over UDP for 10 s");
    return 0;
}

static int same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
    return 0;
}

/* --- one message ----------------------------------------------------------------- */

static int only_whitespace(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != '\r' && buf[i] != '\n' && buf[i] != ' ' && buf[i] != '\t' && buf[i] != 0)
            return 0;
    return 1;
}

/* A local answer: on the connection the request came on, or as a datagram. */
static void answer(const struct spim_sip_msg *m, int code, const char *reason, const char *extra,
                   const struct sockaddr_storage *src, uint32_t in_conn,
                   struct spim_filter_out *out)
{
    out->how = SPIM_OUT_NONE;
    if (spim_proxy_answer(m, code, reason, extra, src, &out->buf, &out->dst, &out->dstlen) != 0) {
        out->buf.len = 0;
        return;
    }
    if (in_conn != 0) {
        out->how = SPIM_OUT_CONN;
        out->conn = in_conn;
    } else {
        out->how = SPIM_OUT_UDP;
    }
}

/*
 * Asks the judge about a MESSAGE (its text and files) or an INVITE that
 * offers files. Returns the action, 0 for what needs no judge (a
 * notification, an INVITE without a file offer), or -1 when the judge
 * failed.
 */
static int judge_request(struct spim_filter_worker *w, const struct spim_sip_msg *m, int kind,
                         const struct sockaddr_storage *src, uint32_t in_conn,
                         const char *fwd_branch, struct spim_filter_result *r)
{
    struct spim_filter *f = w->f;
    struct spim_filter_msg fm;
    char branch[64];
    const char *source = w->src_str;
    size_t tlen = 0;

    if (kind == SPIM_FMSG_MESSAGE) {
        if (spim_sip_body(m, w->text, TEXT_CAP, &tlen, &w->files) == SPIM_BODY_NONE)
            return 0; /* empty, or a notification */
    } else if (spim_sip_sdp_files(m, &w->files) == 0) {
        return 0;
    }
    if (w->src_str[0] == '\0' || memcmp(&w->src_of, src, sizeof(w->src_of)) != 0) {
        /* requests come from a few proxies: their "ip:port" is written once, not per message */
        memcpy(&w->src_of, src, sizeof(w->src_of));
        spim__addr_str(src, w->src_str, sizeof(w->src_str));
    }
    memset(&fm, 0, sizeof(fm));
    fm.kind = kind;
    fm.text = (struct spim_slice){w->text, tlen};
    fm.raw = (struct spim_slice){m->buf, m->msg_len};
    fm.from = m->from;
    fm.to = m->to;
    fm.from_uri = spim_sip_uri_of(m->from);
    w->text_len = tlen;
    w->fm_from_uri = fm.from_uri;
    fm.call_id = m->call_id;
    fm.user_agent = m->user_agent;
    fm.ruri = m->ruri;
    fm.pai_uri = m->pai.len ? spim_sip_uri_of(m->pai) : m->pai;
    fm.identity = m->identity;
    /* Only the proxy's P-Asserted-Identity: From is the sender's to write. */
    fm.verstat = m->pai_verstat;
    fm.files = &w->files;
    fm.src = src;
    fm.source = source;
    /* the transaction's key: the branch without the connection, so a retransmission that
     * comes on another TCP connection is still the same request */
    if (in_conn != 0)
        spim_proxy_branch(m, branch, sizeof(branch));
    fm.txn_key = spim_hash64(in_conn != 0 ? branch : fwd_branch,
                             strlen(in_conn != 0 ? branch : fwd_branch), 0);
    memset(r, 0, sizeof(*r));
    if (f->ops->judge(w->wud, &fm, r) != 0)
        return -1;
    if (r->action == 2)
        spim_log(SPIM_LOG_INFO,
                 "%s %.*s call-id=%.*s from=%.*s to=%.*s src=%s score=%.2f p=%.4f rules=%s",
                 r->code == 200 ? "dropped (answered 200)" : "blocked", (int)m->method.len,
                 m->method.p, (int)m->call_id.len, m->call_id.p, (int)m->from.len, m->from.p,
                 (int)m->to.len, m->to.p, source, r->score, r->spam_probability,
                 r->rules[0] ? r->rules : "-");
    return r->action;
}

void spim_filter_handle(struct spim_filter_worker *w, const char *buf, size_t len,
                        const struct sockaddr_storage *src, uint32_t in_conn,
                        struct spim_filter_out *out)
{
    struct spim_filter *f = w->f;
    const struct spim_filter_config *c = atomic_load_explicit(&f->live, memory_order_acquire);
    struct spim_sip_msg m;
    struct spim_filter_result r;
    struct spim_proxy_header h[4];
    struct spim_proxy_fwd how = {0, in_conn, NULL, 0, NULL};
    char fwd_branch[64]; /* our branch for this request: made once, used three times */
    char err[128], score[32], prob[32];
    int rc, action, judged_text;

    out->buf.len = 0;
    out->how = SPIM_OUT_NONE;
    out->pending = 0;
    if (len == 0 || only_whitespace(buf, len))
        return; /* keep-alives and empty datagrams */
    rc = spim_sip_parse(buf, len, &m, err, sizeof(err));
    if (rc == 0 && m.is_request && !spim_cidr_match(c->trusted, c->ntrusted, src)) {
        /* neither an open relay nor a reflector: refused, not forwarded, not stored */
        char s[64];

        spim__addr_str(src, s, sizeof(s));
        spim_log(SPIM_LOG_WARN, "refused %.*s from untrusted source %s", (int)m.method.len,
                 m.method.p, s);
        spim_metrics_inc(SPIM_METRIC_UNTRUSTED);
        answer(&m, 403, "Source Not Trusted", NULL, src, in_conn, out);
        goto done;
    }
    if (rc != 0) {
        char s[64];

        spim__addr_str(src, s, sizeof(s));
        spim_metrics_inc(SPIM_METRIC_PARSE_ERRORS);
        spim_log(SPIM_LOG_DEBUG, "unparsable %s from %s: %s", m.is_request ? "request" : "message",
                 s, err);
        if (m.is_request && spim_sip_can_answer(&m) &&
            spim_cidr_match(c->trusted, c->ntrusted, src))
            answer(&m, 400, "Bad Request", NULL, src, in_conn, out);
        goto done;
    }
    if (!m.is_request) {
        /* responses come from the next hop (or a trusted proxy); others are not relayed */
        if (!spim_cidr_match(c->trusted, c->ntrusted, src) && !same_ip(src, &f->next))
            goto done;
        spim_metrics_response(m.status);
        if (m.status == 607 && f->sent != NULL && m.cseq.len > 7 &&
            spim__slice_ieq(m.cseq.p + m.cseq.len - 7, 7, "MESSAGE") &&
            spim_cidr_match(c->trusted, c->ntrusted, src))
            sent_report(w, &m, src);
        if (spim_proxy_forward_response(&m, &f->cfg.self, &out->buf, &out->dst, &out->dstlen,
                                        &out->conn) != 0) {
            out->buf.len = 0; /* not ours, or nowhere to go: dropped */
        } else {
            out->how = out->conn ? SPIM_OUT_CONN : SPIM_OUT_UDP;
            if (m.status >= 200 && m.status < 300 && f->ops->delivered != NULL)
                sent_delivered(w, &m);
        }
        goto done;
    }
    spim_metrics_request(m.method.p, m.method.len);
    if (m.msg_len > c->max_message_size) {
        answer(&m, 513, "Message Too Large", NULL, src, in_conn, out);
        goto done;
    }
    if (spim_proxy_is_for_us(&m, &f->cfg.self)) {
        answer(&m, 200, "OK", "Allow: MESSAGE, OPTIONS, INVITE, ACK, CANCEL, BYE\r\n", src, in_conn,
               out);
        goto done;
    }
    if (spim_proxy_is_loop(&m, &f->cfg.self)) {
        answer(&m, 482, "Loop Detected", NULL, src, in_conn, out);
        goto done;
    }
    if (m.max_forwards == 0) {
        answer(&m, 483, "Too Many Hops", NULL, src, in_conn, out);
        goto done;
    }
    action = 0;
    w->text_len = 0;
    r.sender_key = r.recipient_key = 0;
    spim_proxy_branch_conn(&m, in_conn, fwd_branch, sizeof(fwd_branch));
    how.branch = fwd_branch;
    if (spim__slice_ieq(m.method.p, m.method.len, "MESSAGE"))
        action = judge_request(w, &m, SPIM_FMSG_MESSAGE, src, in_conn, fwd_branch, &r);
    else if (spim__slice_ieq(m.method.p, m.method.len, "INVITE") && m.body.len > 0)
        action = judge_request(w, &m, SPIM_FMSG_INVITE, src, in_conn, fwd_branch, &r);
    judged_text = w->text_len > 0;
    if (action < 0) {
        if (!c->on_error_deliver) {
            answer(&m, 503, "Service Unavailable", "Retry-After: 5\r\n", src, in_conn, out);
            goto done;
        }
        action = 0; /* on_error = deliver: unscored */
    }
    if (action == 2) {
        int code = r.code >= 400 && r.code <= 699 ? r.code : c->block_code;
        char callinfo[300];

        if (r.code == 200) {
            /* a silent drop: held like a block, but the sender is told it was delivered */
            answer(&m, 200, "OK", NULL, src, in_conn, out);
        } else if (code == 608) {
            /* RFC 8688: an intermediary rejects on the recipient's behalf, with redress */
            callinfo[0] = '\0';
            if (c->block_call_info[0] != '\0')
                snprintf(callinfo, sizeof(callinfo), "Call-Info: <%s>;purpose=jwscard\r\n",
                         c->block_call_info);
            answer(&m, 608, "Rejected", callinfo[0] ? callinfo : NULL, src, in_conn, out);
        } else {
            answer(&m, code, code == 403 ? c->block_reason : "Not Acceptable Here", NULL, src,
                   in_conn, out);
        }
        out->pending = r.deferred;
        goto done;
    }
    if (action == 1) {
        snprintf(score, sizeof(score), "%.2f", r.score);
        snprintf(prob, sizeof(prob), "%.4f", r.spam_probability);
        h[0] = (struct spim_proxy_header){"X-SPIM-Verdict", "tag"};
        h[1] = (struct spim_proxy_header){"X-SPIM-Score", score};
        h[2] = (struct spim_proxy_header){"X-SPIM-Probability", prob};
        h[3] = (struct spim_proxy_header){"X-SPIM-Rules", r.rules[0] ? r.rules : "none"};
        how.extra = h;
        how.nextra = 4;
    }
    /*
     * RFC 3261 18.1.1, RFC 3428: a request too large for UDP goes to the next
     * hop over TCP; if the next hop refuses TCP, over UDP after all (18.1.1
     * says to retry with UDP then).
     */
    how.tcp = 0;
    rc = spim_proxy_forward_request(&m, &f->cfg.self, src, &how, &out->buf);
    if (rc == 0 && c->udp_max > 0 && out->buf.len > c->udp_max && next_tcp_usable(w)) {
        how.tcp = 1;
        rc = spim_proxy_forward_request(&m, &f->cfg.self, src, &how, &out->buf);
    }
    if (rc != 0) {
        answer(&m, 513, "Message Too Large", NULL, src, in_conn, out);
        goto done;
    }
    if (f->sent != NULL && (judged_text || r.sender_key != 0))
        sent_remember(f, &m, fwd_branch, w->fm_from_uri, (struct spim_slice){w->text, w->text_len},
                      &r);
    if (how.tcp) {
        out->how = SPIM_OUT_NEXT_TCP;
    } else {
        out->how = SPIM_OUT_UDP;
        memcpy(&out->dst, &f->next, f->nextlen);
        out->dstlen = f->nextlen;
    }
done:
    spim_sip_msg_free(&m);
}

/* --- the worker ------------------------------------------------------------------ */

struct spim_filter_worker *spim_filter_worker_new(struct spim_filter *f)
{
    struct spim_filter_worker *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->f = f;
    w->sock = w->listen = w->ep = -1;
    pthread_mutex_init(&w->cmu, NULL);
    pthread_cond_init(&w->ccv, NULL);
    w->in = malloc(SPIM_SIP_MAX + 1);
    w->text = malloc(TEXT_CAP);
    w->out.buf.p = malloc(OUT_CAP);
    w->out.buf.cap = OUT_CAP;
    if (w->in == NULL || w->text == NULL || w->out.buf.p == NULL)
        goto fail;
    for (unsigned i = 0; i < BATCH; i++) {
        w->rbuf[i] = malloc(SPIM_SIP_MAX + 1);
        w->sbuf[i] = malloc(OUT_CAP);
        if (w->rbuf[i] == NULL || w->sbuf[i] == NULL)
            goto fail;
    }
    for (unsigned s = 0; s < 2; s++)
        for (unsigned i = 0; i < HOLD_MAX; i++)
            if ((w->held[s].buf[i] = malloc(OUT_CAP)) == NULL)
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
    if (w->ep >= 0) {
        struct spim_filter *f = w->f;

        /* close what this worker still owns */
        for (unsigned i = 1; i < MAX_CONNS; i++) {
            struct conn *c;

            pthread_mutex_lock(&f->conns_lock);
            c = f->conns[i];
            if (c != NULL && c->owner != w)
                c = NULL;
            pthread_mutex_unlock(&f->conns_lock);
            if (c != NULL)
                conn_close(w, c);
        }
        close(w->ep);
    }
    if (w->wud != NULL && w->f->ops->worker_free != NULL)
        w->f->ops->worker_free(w->wud);
    for (unsigned i = 0; i < BATCH; i++) {
        free(w->rbuf[i]);
        free(w->sbuf[i]);
    }
    for (unsigned s = 0; s < 2; s++)
        for (unsigned i = 0; i < HOLD_MAX; i++)
            free(w->held[s].buf[i]);
    pthread_mutex_destroy(&w->cmu);
    pthread_cond_destroy(&w->ccv);
    free(w->in);
    free(w->text);
    free(w->out.buf.p);
    free(w);
}

/* Sends what one handled message produced, except UDP (batched by the caller). */
static void send_out(struct spim_filter_worker *w, struct spim_filter_out *o)
{
    struct conn *c;

    if (o->buf.len == 0)
        return;
    switch (o->how) {
    case SPIM_OUT_UDP:
        if (sendto(w->sock, o->buf.p, o->buf.len, 0, (struct sockaddr *)&o->dst, o->dstlen) < 0)
            spim_log(SPIM_LOG_WARN, "sendto: %s", strerror(errno));
        break;
    case SPIM_OUT_CONN:
        if (conn_send(w->f, o->conn, o->buf.p, o->buf.len) != 0)
            spim_log(SPIM_LOG_INFO, "tcp connection %x is gone; message dropped", o->conn);
        break;
    case SPIM_OUT_NEXT_TCP:
        c = next_conn(w);
        if (c == NULL || write_all(c->fd, o->buf.p, o->buf.len) != 0) {
            if (c != NULL)
                conn_close(w, c);
            spim_log(SPIM_LOG_WARN, "cannot send over tcp to the next hop; dropped");
        }
        break;
    default:
        break;
    }
}

/* Sends n prepared datagrams in as few calls as the kernel takes. */
static void send_dgrams(int sock, struct mmsghdr *msgs, int n)
{
    for (int sent = 0, guard = 0; sent < n && guard < 4 * BATCH + 4 * HOLD_MAX; guard++) {
        int k = sendmmsg(sock, msgs + sent, (unsigned)(n - sent), 0);

        if (k > 0) {
            sent += k;
        } else if (errno != EINTR) {
            /* one bad destination must not hold back the others */
            spim_log(SPIM_LOG_WARN, "sendmmsg: %s", strerror(errno));
            sent++;
        }
    }
}

/*
 * Commits the deferred quarantine writes, then sends the answers held for
 * them; when the commit fails, the held answers are dropped: nothing was
 * stored, so nothing may say it was (the senders retransmit, and each
 * attempt is judged again). 0 when there was nothing to commit.
 */
static int commit(struct spim_filter_worker *w)
{
    int rc = w->f->ops->flush != NULL ? w->f->ops->flush(w->wud) : 0;

    if (w->nheld > 0 && rc == 0)
        send_dgrams(w->sock, w->held[w->cur].msg, (int)w->nheld);
    else if (w->nheld > 0)
        spim_log(SPIM_LOG_WARN, "%u blocked messages not stored: not answered", w->nheld);
    w->nheld = 0;
    return rc;
}

/*
 * The commit thread: commits the group it is handed (ops->flush_commit),
 * then sends its answers, or drops them when the commit failed, as commit()
 * does. Stops once quit is set and no group is left.
 */
static void *committer_main(void *arg)
{
    struct spim_filter_worker *w = arg;

    pthread_mutex_lock(&w->cmu);
    for (;;) {
        void *g;
        unsigned set, n;
        int rc;

        while (w->job == NULL && !w->quit)
            pthread_cond_wait(&w->ccv, &w->cmu);
        if (w->job == NULL)
            break;
        g = w->job;
        set = w->job_set;
        n = w->job_n;
        pthread_mutex_unlock(&w->cmu);
        rc = w->f->ops->flush_commit(g);
        if (rc == 0)
            send_dgrams(w->sock, w->held[set].msg, (int)n);
        else
            spim_log(SPIM_LOG_WARN, "%u blocked messages not stored: not answered", n);
        pthread_mutex_lock(&w->cmu);
        w->job = NULL;
        pthread_cond_broadcast(&w->ccv);
    }
    pthread_mutex_unlock(&w->cmu);
    return NULL;
}

/*
 * Closes the group being held: hands it to the commit thread and goes on
 * with the other set of answers. While the previous group is still being
 * committed, a group that may grow waits (wait = 0), a full one waits for
 * it (wait = 1). Without a commit thread, or when the judge cannot hand
 * the group over, commits here.
 */
static void close_group(struct spim_filter_worker *w, int wait)
{
    void *g;

    if (w->nheld == 0)
        return;
    if (!w->committer_on) {
        commit(w);
        return;
    }
    pthread_mutex_lock(&w->cmu);
    if (w->job != NULL && !wait) {
        pthread_mutex_unlock(&w->cmu);
        return;
    }
    while (w->job != NULL)
        pthread_cond_wait(&w->ccv, &w->cmu);
    pthread_mutex_unlock(&w->cmu);
    g = w->f->ops->flush_take(w->wud);
    if (g == NULL) {
        commit(w); /* nothing deferred after all, or no memory to hand it over */
        return;
    }
    pthread_mutex_lock(&w->cmu);
    w->job = g;
    w->job_set = w->cur;
    w->job_n = w->nheld;
    pthread_cond_signal(&w->ccv);
    pthread_mutex_unlock(&w->cmu);
    w->cur ^= 1;
    w->nheld = 0;
}

/* Whether the held answers have waited long enough: at most HOLD_NS after the first. */
static int hold_due(const struct spim_filter_worker *w, uint64_t now)
{
    return w->nheld > 0 && now - w->held_ns >= HOLD_NS;
}

/*
 * Holds the UDP answer of a blocked message until the commit that stores
 * it (a copy: the batch's buffers are reused); commits when HOLD_MAX wait.
 */
static void hold(struct spim_filter_worker *w, const struct spim_filter_out *o)
{
    struct held *h = &w->held[w->cur];
    unsigned k = w->nheld;

    if (w->nheld == 0)
        w->held_ns = spim_mono_ns();
    memcpy(h->buf[k], o->buf.p, o->buf.len);
    h->dst[k] = o->dst;
    h->iov[k] = (struct iovec){h->buf[k], o->buf.len};
    memset(&h->msg[k], 0, sizeof(h->msg[k]));
    h->msg[k].msg_hdr.msg_iov = &h->iov[k];
    h->msg[k].msg_hdr.msg_iovlen = 1;
    h->msg[k].msg_hdr.msg_name = &h->dst[k];
    h->msg[k].msg_hdr.msg_namelen = o->dstlen;
    if (++w->nheld == HOLD_MAX)
        close_group(w, 1);
}

/*
 * Reads a batch of datagrams, handles them and sends the UDP answers in one
 * batch, except those of blocked messages: they wait for the group commit
 * (hold), which the caller runs when it is due.
 */
static int udp_batch(struct spim_filter_worker *w)
{
    int n, ns = 0;

    for (int i = 0; i < BATCH; i++) {
        w->riov[i] = (struct iovec){w->rbuf[i], SPIM_SIP_MAX + 1};
        memset(&w->rmsg[i], 0, sizeof(w->rmsg[i]));
        w->rmsg[i].msg_hdr.msg_iov = &w->riov[i];
        w->rmsg[i].msg_hdr.msg_iovlen = 1;
        w->rmsg[i].msg_hdr.msg_name = &w->rsrc[i];
        w->rmsg[i].msg_hdr.msg_namelen = sizeof(w->rsrc[i]);
    }
    n = recvmmsg(w->sock, w->rmsg, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        struct spim_filter_out o = {{w->sbuf[ns], 0, OUT_CAP}, 0, 0, {0}, 0, 0};

        if (w->rmsg[i].msg_len > SPIM_SIP_MAX)
            continue;
        spim_filter_handle(w, w->rbuf[i], w->rmsg[i].msg_len, &w->rsrc[i], 0, &o);
        if (o.pending && o.how != SPIM_OUT_UDP && commit(w) != 0)
            continue; /* not stored: no answer */
        if (o.pending && o.how == SPIM_OUT_UDP && o.buf.len > 0) {
            hold(w, &o);
        } else if (o.how == SPIM_OUT_UDP && o.buf.len > 0) {
            w->sdst[ns] = o.dst;
            w->siov[ns] = (struct iovec){o.buf.p, o.buf.len};
            memset(&w->smsg[ns], 0, sizeof(w->smsg[ns]));
            w->smsg[ns].msg_hdr.msg_iov = &w->siov[ns];
            w->smsg[ns].msg_hdr.msg_iovlen = 1;
            w->smsg[ns].msg_hdr.msg_name = &w->sdst[ns];
            w->smsg[ns].msg_hdr.msg_namelen = o.dstlen;
            ns++;
        } else {
            send_out(w, &o);
        }
    }
    send_dgrams(w->sock, w->smsg, ns);
    return n;
}

/* The Content-Length of a header block (-1 invalid, 0 when absent). */
static long frame_content_length(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - p) + 1 : n, k = i, ve;

        while (k < le && p[k] != ':')
            k++;
        if (k < le) {
            size_t ne = k;

            while (ne > i && (p[ne - 1] == ' ' || p[ne - 1] == '\t'))
                ne--;
            if (spim__slice_ieq(p + i, ne - i, "Content-Length") ||
                spim__slice_ieq(p + i, ne - i, "l")) {
                k++;
                while (k < le && (p[k] == ' ' || p[k] == '\t'))
                    k++;
                ve = le;
                while (ve > k && (p[ve - 1] == '\r' || p[ve - 1] == '\n' || p[ve - 1] == ' ' ||
                                  p[ve - 1] == '\t'))
                    ve--;
                return spim__parse_uint(p + k, ve - k);
            }
        }
        i = le;
    }
    return 0;
}

/*
 * Reads what the connection has and handles every complete message in its
 * buffer (framed by Content-Length; keep-alive CRLFs skipped, a double
 * CRLF ping answered with CRLF, RFC 5626). Returns -1 to close it.
 */
/*
 * A request whose headers are in c->buf[0..hdr) declares a body that makes
 * it larger than a connection takes: answers 513 when the headers say where
 * to (RFC 3261 21.5.14), before the caller closes the connection (the rest
 * of the stream cannot be framed without reading the body through).
 */
static void too_large(struct spim_filter_worker *w, struct conn *c, size_t hdr, size_t total)
{
    struct spim_sip_msg m;
    char err[128];

    /* the body is not there: the parse fails, but the headers are read */
    (void)spim_sip_parse(c->buf, hdr, &m, err, sizeof(err));
    spim_log(SPIM_LOG_INFO, "tcp: a message of %zu bytes, more than the %d taken: %s", total,
             SPIM_SIP_MAX, m.is_request && spim_sip_can_answer(&m) ? "513, closing" : "closing");
    if (m.is_request && spim_sip_can_answer(&m) && !c->outbound) {
        w->out.buf.len = 0;
        answer(&m, 513, "Message Too Large", NULL, &c->peer, c->id, &w->out);
        send_out(w, &w->out);
    }
    spim_sip_msg_free(&m);
}

/* Handles every complete message in the connection's buffer; -1 to close it. */
static int conn_frame(struct spim_filter_worker *w, struct conn *c)
{
    for (unsigned guard = 0; c->len > 0 && guard < 1024; guard++) {
        size_t skip = 0, total;
        const char *end;
        long cl;

        while (skip < c->len && (c->buf[skip] == '\r' || c->buf[skip] == '\n'))
            skip++;
        if (skip >= 4 && !c->outbound)
            write_all(c->fd, "\r\n", 2); /* pong */
        if (skip) {
            memmove(c->buf, c->buf + skip, c->len - skip);
            c->len -= skip;
            continue;
        }
        end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end == NULL)
            return c->len >= CONN_BUF_MAX ? -1 : 0;
        cl = frame_content_length(c->buf, (size_t)(end - c->buf) + 2);
        if (cl < 0) {
            spim_log(SPIM_LOG_INFO, "tcp: bad Content-Length, closing the connection");
            return -1;
        }
        total = (size_t)(end - c->buf) + 4 + (size_t)cl;
        if (total > CONN_BUF_MAX || total > SPIM_SIP_MAX) {
            too_large(w, c, (size_t)(end - c->buf) + 4, total);
            return -1;
        }
        if (c->len < total)
            return 0;
        w->out.buf.len = 0;
        spim_filter_handle(w, c->buf, total, &c->peer, c->outbound ? 0 : c->id, &w->out);
        if (!w->out.pending || commit(w) == 0)
            send_out(w, &w->out);
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
    return 0;
}

/* Reads what the connection has, handling messages as they complete. */
static int conn_read(struct spim_filter_worker *w, struct conn *c)
{
    for (unsigned guard = 0; guard < 64; guard++) {
        ssize_t k;

        if (c->cap - c->len < 4096 && c->cap < CONN_BUF_MAX) {
            size_t nc = c->cap ? c->cap * 2 : 8192;
            char *nb;

            if (nc > CONN_BUF_MAX)
                nc = CONN_BUF_MAX;
            nb = realloc(c->buf, nc);
            if (nb == NULL)
                return -1;
            c->buf = nb;
            c->cap = nc;
        }
        if (c->len == c->cap)
            return -1; /* one message larger than we take */
        k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (k == 0)
            return -1;
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->len += (size_t)k;
        c->last_ns = spim_mono_ns();
        /* handle what is complete before reading more: pipelining never overflows */
        if (conn_frame(w, c) != 0)
            return -1;
    }
    return 0;
}

static void accept_all(struct spim_filter_worker *w)
{
    for (unsigned guard = 0; guard < 64; guard++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        int fd = accept4(w->listen, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC),
            one = 1;

        if (fd < 0)
            return;
        const struct spim_filter_config *c =
            atomic_load_explicit(&w->f->live, memory_order_acquire);

        if (!spim_cidr_match(c->trusted, c->ntrusted, &peer)) {
            close(fd); /* untrusted: no connection at all */
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (conn_new(w, fd, &peer, 0) == NULL) {
            spim_log(SPIM_LOG_WARN, "tcp: too many connections, refused one");
            close(fd);
        }
    }
}

static void sweep_idle(struct spim_filter_worker *w)
{
    struct spim_filter *f = w->f;
    const struct spim_filter_config *live = atomic_load_explicit(&f->live, memory_order_acquire);
    uint64_t now = spim_mono_ns(), idle = (uint64_t)live->tcp_idle_s * 1000000000ull;

    for (unsigned i = 1; i < MAX_CONNS; i++) {
        struct conn *c;

        /* owner is read under the lock: another worker may free its own at any time */
        pthread_mutex_lock(&f->conns_lock);
        c = f->conns[i];
        if (c != NULL && c->owner != w)
            c = NULL;
        pthread_mutex_unlock(&f->conns_lock);
        if (c != NULL && now - c->last_ns > idle)
            conn_close(w, c);
    }
}

static void *worker_main(void *arg)
{
    struct spim_filter_worker *w = arg;
    struct spim_filter *f = w->f;
    struct epoll_event ev, evs[64];
    uint64_t last_sweep = spim_mono_ns();

    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) {
        spim_log(SPIM_LOG_ERR, "epoll_create1: %s", strerror(errno));
        return NULL;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = &w->sock;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->sock, &ev);
    ev.data.ptr = &w->listen;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->listen, &ev);
    if (f->ops->flush_take != NULL && f->ops->flush_commit != NULL)
        w->committer_on = pthread_create(&w->committer, NULL, committer_main, w) == 0;
    while (!atomic_load(&f->stop)) {
        int timeout = 200, n;

        if (w->nheld > 0) {
            /* wake when the held answers are due (1 ms while the last group commits) */
            uint64_t now = spim_mono_ns();
            uint64_t left = hold_due(w, now) ? 1000000 : w->held_ns + HOLD_NS - now;

            timeout = (int)((left + 999999) / 1000000);
        }
        n = epoll_wait(w->ep, evs, 64, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &w->sock) {
                /* under load, read batch after batch before waiting again (bounded) */
                for (unsigned g = 0; g < 16; g++) {
                    int got = udp_batch(w);

                    if (hold_due(w, spim_mono_ns()))
                        close_group(w, 0);
                    if (got != BATCH)
                        break;
                }
            } else if (evs[i].data.ptr == &w->listen) {
                accept_all(w);
            } else {
                struct conn *c = evs[i].data.ptr;

                if (conn_read(w, c) != 0)
                    conn_close(w, c);
            }
        }
        if (hold_due(w, spim_mono_ns()))
            close_group(w, 0);
        if (spim_mono_ns() - last_sweep > 1000000000ull) {
            sweep_idle(w);
            last_sweep = spim_mono_ns();
        }
    }
    /* the answers still held: stored and sent before the worker goes */
    close_group(w, 1);
    if (w->committer_on) {
        pthread_mutex_lock(&w->cmu);
        w->quit = 1;
        pthread_cond_signal(&w->ccv);
        pthread_mutex_unlock(&w->cmu);
        pthread_join(w->committer, NULL);
        w->committer_on = 0;
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
        w->listen = f->listens[f->started];
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
    spim_log(SPIM_LOG_INFO, "serving on %s:%u (udp, tcp), next hop %s:%u, %u workers",
             f->cfg.listen_host, f->cfg.listen_port, f->cfg.next_host, f->cfg.next_port,
             f->started);
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
