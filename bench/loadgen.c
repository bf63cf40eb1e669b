/*
 * loadgen.c: spim_loadgen, a load generator for spimfilter alone, lighter
 * than SIPp. One thread, batched sockets (sendmmsg/recvmmsg), no scenario
 * engine: it is what a proxy in front of the filter would send, and the
 * receiver behind it.
 *
 *   generator  one or more UDP sockets (--bind, then the next ports for
 *              --sources N). Sends SIP MESSAGEs to the filter (--target),
 *              bodies taken in turn from a TSV corpus (label<TAB>text), each
 *              with a unique Call-ID and Via branch and the Via sent-by of
 *              the socket it leaves from, so the filter's answers (its 403,
 *              or the sink's 200 it relays) come back here.
 *   sink       a UDP socket and a TCP listener on the same port (--sink,
 *              the filter's next hop) that answer 200 to every request the
 *              filter forwards (the filter sends a MESSAGE too large for
 *              UDP over TCP, framed by Content-Length; the 200 goes back on
 *              that connection). A UDP 200 goes to the datagram's source,
 *              which is the filter's socket and its Via sent-by; with
 *              --sources N the 200s leave from N sockets (the sink port and
 *              the next ones) so that the filter's SO_REUSEPORT hash may
 *              spread them as it spreads the requests.
 *
 * Open loop at --rate N MESSAGE/s for --duration S seconds, or closed loop
 * (--rate 0: flat-out, at most --window requests unanswered). Then it waits
 * up to --drain seconds for the last answers. A message is lost when no
 * final answer (200 or 403) came back for it; nothing is retransmitted, so
 * any datagram dropped on the way is a loss. While sending at a rate it
 * sleeps until the next --burst is due and then reads everything that came
 * meanwhile (about one wakeup a millisecond), rather than waking for each
 * datagram: it runs on the cores of the filter it measures.
 *
 * With --pid PID (the serve process) it reads utime+stime of
 * /proc/PID/stat before and after and prints the filter's CPU microseconds
 * per message answered.
 *
 * Output: a human summary, then one line "RESULT key=value ..." for
 * scripts (bench/filter-load.sh, bench/soak.sh). Exit status 0 when no
 * message was lost, 1 when some were, 2 on a usage or setup error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64             /* datagrams per sendmmsg/recvmmsg */
#define SLOT 16384           /* receive buffer per datagram (the corpus texts are short) */
#define MAX_BODY 1200        /* longer texts are cut: one MESSAGE per UDP datagram */
#define MAX_SOURCES 16       /* generator sockets */
#define MAX_MSGS (64u << 20) /* messages tracked in one run */
#define LAT_FINE 1000        /* latency buckets of 10 us up to 10 ms ... */
#define LAT_COARSE 990       /* ... then of 1 ms up to 1 s, then one overflow bucket */
#define LAT_N (LAT_FINE + LAT_COARSE + 1)
#define MAX_CONNS 32          /* TCP connections into the sink */
#define CONN_BUF (128 * 1024) /* a TCP request up to 64 KiB, and what follows it */

/* Per-message state bits. */
enum { ST_SENT = 1, ST_FWD = 2, ST_200 = 4, ST_403 = 8, ST_OTHER = 16 };

struct row {
    const char *text;
    size_t len;
    int spam;
};

struct opts {
    struct sockaddr_in target, bind, sink;
    const char *corpus;
    double rate, duration, drain, interval;
    unsigned window, burst, sources, max_body;
    long pid;
};

struct counters {
    uint64_t sent, send_err, fwd, fwd_tcp, fwd_dup, r200, r403, rother, rdup, stray, trunc;
    uint64_t spam_sent, spam_403, ham_sent, ham_403;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spim_loadgen --target HOST:PORT --bind HOST:PORT --sink HOST:PORT\n"
            "                    --corpus FILE.tsv [options]\n"
            "\n"
            "  --target HOST:PORT  spimfilter's listen address\n"
            "  --bind HOST:PORT    the generator's socket (the Via sent-by of its requests)\n"
            "  --sink HOST:PORT    the sink's socket: spimfilter's --next-hop\n"
            "  --corpus FILE       TSV, label<TAB>text a line (a header line is skipped)\n"
            "  --rate N            MESSAGE/s, open loop; 0: flat-out, closed loop (10000)\n"
            "  --duration S        seconds of sending (3)\n"
            "  --window N          flat-out: at most N requests unanswered (256)\n"
            "  --burst N           open loop: sleep until N requests are due, then send them\n"
            "                      and read what came meanwhile (rate/1000: about 1 ms)\n"
            "  --sources N         generator sockets on consecutive ports from --bind, sink\n"
            "                      reply sockets from --sink likewise (1, at most %d)\n"
            "  --drain S           seconds to wait for the last answers (2)\n"
            "  --interval S        print progress every S seconds (0: never)\n"
            "  --max-body N        cut longer texts to N bytes (%d)\n"
            "  --pid PID           the serve process: report its CPU per message\n",
            MAX_SOURCES, MAX_BODY);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    char *end;
    unsigned long port;

    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port == 0 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* A non-blocking UDP socket bound to sa, with large buffers (forced when root). */
static int udp_socket(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), sz = 8 << 20;
    char a[INET_ADDRSTRLEN];

    if (fd < 0) {
        perror("spim_loadgen: socket");
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
        inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
        fprintf(stderr, "spim_loadgen: bind %s:%u: %s\n", a, ntohs(sa->sin_port), strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Loads the corpus: the whole file in memory, rows pointing into it. A first
 * line whose label is neither ham nor spam is a header. Texts are cut to
 * max_body bytes; CR and LF never occur inside a row.
 */
static int load_corpus(const char *path, unsigned max_body, char **data, struct row **rows,
                       size_t *nrows)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 0, len = 0, n = 0, rcap = 1024;
    char *buf = NULL, *p, *end;
    struct row *r;

    if (f == NULL) {
        fprintf(stderr, "spim_loadgen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t got;

        if (len + 65536 > cap) {
            char *nb;

            cap = cap ? cap * 2 : 1 << 20;
            nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    r = malloc(rcap * sizeof(*r));
    if (r == NULL) {
        free(buf);
        return -1;
    }
    for (p = buf, end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *tab;
        char *le = nl ? nl : end;
        int spam;

        if (le > p && le[-1] == '\r')
            le--;
        tab = memchr(p, '\t', (size_t)(le - p));
        if (tab != NULL) {
            size_t ll = (size_t)(tab - p);

            spam = ll == 4 && memcmp(p, "spam", 4) == 0;
            if ((spam || (ll == 3 && memcmp(p, "ham", 3) == 0)) && le > tab + 1) {
                if (n == rcap) {
                    struct row *nr = realloc(r, 2 * rcap * sizeof(*r));

                    if (nr == NULL) {
                        free(r);
                        free(buf);
                        return -1;
                    }
                    r = nr;
                    rcap *= 2;
                }
                r[n].text = tab + 1;
                r[n].len = (size_t)(le - tab - 1);
                if (r[n].len > max_body)
                    r[n].len = max_body;
                r[n].spam = spam;
                n++;
            }
        }
        p = nl ? nl + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "spim_loadgen: %s: no ham/spam rows\n", path);
        free(r);
        free(buf);
        return -1;
    }
    *data = buf;
    *rows = r;
    *nrows = n;
    return 0;
}

/* utime + stime of a process, in seconds; -1 when it cannot be read. */
static double proc_cpu(long pid)
{
    char path[64], buf[2048], *p;
    unsigned long long ut, st;
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: the fields start after the last ')' */
    p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * The machine's busy and total time (/proc/stat, all cores, in ticks): the
 * other processes' share of the cores during a run is busy minus the
 * filter's and ours, so that a run disturbed by other work says so.
 */
static int machine_cpu(double *busy, double *total)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n;

    if (f == NULL)
        return -1;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 7)
        return -1;
    /* user nice system idle iowait irq softirq steal */
    *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
    *total = *busy + (double)(v[3] + v[4]);
    return 0;
}

static double self_cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static unsigned lat_bucket(uint32_t us)
{
    if (us < 10 * LAT_FINE)
        return us / 10;
    if (us < 10 * LAT_FINE + 1000 * LAT_COARSE)
        return LAT_FINE + (us - 10 * LAT_FINE) / 1000;
    return LAT_N - 1;
}

/* The upper edge of bucket b, in microseconds. */
static double lat_edge(unsigned b)
{
    if (b < LAT_FINE)
        return (b + 1) * 10.0;
    if (b < LAT_N - 1)
        return 10.0 * LAT_FINE + (b - LAT_FINE + 1) * 1000.0;
    return 1e6;
}

static double lat_pct(const uint64_t *h, uint64_t total, double pct)
{
    uint64_t want = (uint64_t)((double)total * pct / 100.0 + 0.5), acc = 0;

    if (total == 0)
        return 0;
    if (want == 0)
        want = 1;
    for (unsigned b = 0; b < LAT_N; b++) {
        acc += h[b];
        if (acc >= want)
            return lat_edge(b);
    }
    return lat_edge(LAT_N - 1);
}

/*
 * The message number in a datagram: the digits after our run tag, which
 * starts every Call-ID and Via branch we send. -1 when absent.
 */
static long msg_index(const char *buf, size_t len, const char *tag, size_t taglen)
{
    const char *p = memmem(buf, len, tag, taglen), *e = buf + len;
    unsigned long v = 0;
    int digits = 0;

    if (p == NULL)
        return -1;
    for (p += taglen; p < e && *p >= '0' && *p <= '9' && digits < 12; p++, digits++)
        v = v * 10 + (unsigned long)(*p - '0');
    return digits > 0 ? (long)v : -1;
}

/* Whether header line [p, e) has one of the names (case-insensitive). */
static int hdr_is(const char *p, const char *e, const char *const *names)
{
    const char *colon = memchr(p, ':', (size_t)(e - p));
    size_t n;

    if (colon == NULL)
        return 0;
    n = (size_t)(colon - p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    for (; *names != NULL; names++)
        if (strlen(*names) == n && strncasecmp(p, *names, n) == 0)
            return 1;
    return 0;
}

/*
 * The sink's 200 to request req: every Via, From, To (with our tag when it
 * has none), Call-ID and CSeq copied in order, Content-Length: 0. Returns
 * the length, 0 when it does not fit or the request is not one to answer.
 */
static size_t sink_answer(const char *req, size_t len, char *out, size_t cap)
{
    static const char *const via[] = {"via", "v", NULL}, *const to[] = {"to", "t", NULL};
    static const char *const keep[] = {"from", "f", "call-id", "i", "cseq", NULL};
    const char *p = memchr(req, '\n', len), *e = req + len;
    size_t o;
    int n;

    if (p == NULL || len < 4 || memcmp(req, "ACK ", 4) == 0)
        return 0;
    n = snprintf(out, cap, "SIP/2.0 200 OK\r\n");
    o = (size_t)n;
    for (p++; p < e;) {
        const char *nl = memchr(p, '\n', (size_t)(e - p)), *le;

        if (nl == NULL)
            break;
        le = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        if (le == p)
            break; /* the empty line */
        if (hdr_is(p, le, via) || hdr_is(p, le, keep) || hdr_is(p, le, to)) {
            int is_to = hdr_is(p, le, to);
            size_t l = (size_t)(le - p);

            if (o + l + 32 > cap)
                return 0;
            memcpy(out + o, p, l);
            o += l;
            if (is_to && memmem(p, l, ";tag=", 5) == NULL) {
                memcpy(out + o, ";tag=lgsink", 11);
                o += 11;
            }
            out[o++] = '\r';
            out[o++] = '\n';
        }
        p = nl + 1;
    }
    if (o + 22 > cap)
        return 0;
    memcpy(out + o, "Content-Length: 0\r\n\r\n", 21);
    return o + 21;
}

/* A TCP connection the filter opened to the sink. */
struct conn {
    int fd;
    size_t len;
    char *buf; /* CONN_BUF bytes */
};

/* The constant parts of one source's requests (build_template). */
struct tmpl {
    char part[4][256];
    size_t len[4];
};

struct state {
    struct opts o;
    struct tmpl tmpl[MAX_SOURCES];
    int gen[MAX_SOURCES], sinkfd[MAX_SOURCES];
    struct sockaddr_in gen_addr[MAX_SOURCES];
    struct row *rows;
    size_t nrows;
    char tag[48];
    size_t taglen;
    uint64_t maxmsgs;
    uint8_t *st;
    uint32_t *t_sent; /* microseconds since t0 */
    double t0;
    struct counters c;
    uint64_t lat[LAT_N], nlat;
    uint32_t lat_max, ivl_max; /* the whole run; since the last progress line */
    /* buffers */
    char *txbuf, *rxbuf, *ansbuf;
    struct mmsghdr txm[BATCH], rxm[BATCH], ansm[MAX_SOURCES][BATCH];
    struct iovec txv[BATCH], rxv[BATCH], ansv[MAX_SOURCES][BATCH];
    struct sockaddr_in rxsrc[BATCH], ansdst[MAX_SOURCES][BATCH];
    unsigned nans[MAX_SOURCES];
    /* the sink's TCP side: what the filter sends over TCP (too large for UDP) */
    int tcp_listen;
    struct conn conns[MAX_CONNS];
    unsigned nconns;
};

static uint32_t usec_since(const struct state *s, double t)
{
    double d = (t - s->t0) * 1e6;

    return d <= 0 ? 0 : d >= 4e9 ? 4000000000u : (uint32_t)d;
}

/* Appends the decimal digits of v at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 && n < sizeof(tmp));
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/*
 * The constant parts of the requests of source src, around the three
 * places of the message number and the Content-Length: written once, so
 * that a request costs four copies and four numbers, not a snprintf (the
 * generator shares the cores with the filter it measures).
 */
static int build_template(struct state *s, unsigned src)
{
    struct tmpl *t = &s->tmpl[src];
    char via[INET_ADDRSTRLEN], sink[INET_ADDRSTRLEN];
    unsigned vp = ntohs(s->gen_addr[src].sin_port), sp = ntohs(s->o.sink.sin_port);
    int n[4];

    inet_ntop(AF_INET, &s->gen_addr[src].sin_addr, via, sizeof(via));
    inet_ntop(AF_INET, &s->o.sink.sin_addr, sink, sizeof(sink));
    n[0] = snprintf(t->part[0], sizeof(t->part[0]),
                    "MESSAGE sip:bob@%s:%u SIP/2.0\r\n"
                    "Via: SIP/2.0/UDP %s:%u;branch=z9hG4bK%s",
                    sink, sp, via, vp, s->tag);
    n[1] = snprintf(t->part[1], sizeof(t->part[1]),
                    ";rport\r\n"
                    "Max-Forwards: 70\r\n"
                    "From: <sip:alice@%s:%u>;tag=lg",
                    via, vp);
    n[2] = snprintf(t->part[2], sizeof(t->part[2]),
                    "\r\n"
                    "To: <sip:bob@%s:%u>\r\n"
                    "Call-ID: %s",
                    sink, sp, s->tag);
    n[3] = snprintf(t->part[3], sizeof(t->part[3]),
                    "@%s\r\n"
                    "CSeq: 1 MESSAGE\r\n"
                    "Content-Type: text/plain;charset=UTF-8\r\n"
                    "Content-Length: ",
                    via);
    for (int k = 0; k < 4; k++) {
        if (n[k] < 0 || (size_t)n[k] >= sizeof(t->part[k]))
            return -1;
        t->len[k] = (size_t)n[k];
    }
    return 0;
}

/* Writes message i into buf (at least SLOT bytes); returns its length, 0 when it does not fit. */
static size_t build_request(struct state *s, uint64_t i, unsigned src, char *buf, size_t cap)
{
    const struct row *r = &s->rows[i % s->nrows];
    const struct tmpl *t = &s->tmpl[src];
    char *p = buf;

    /* the parts, three numbers of at most 20 digits, the length and the empty line */
    if (t->len[0] + t->len[1] + t->len[2] + t->len[3] + 4 * 20 + 4 + r->len > cap)
        return 0;
    memcpy(p, t->part[0], t->len[0]);
    p = put_u64(p + t->len[0], i);
    memcpy(p, t->part[1], t->len[1]);
    p = put_u64(p + t->len[1], i);
    memcpy(p, t->part[2], t->len[2]);
    p = put_u64(p + t->len[2], i);
    memcpy(p, t->part[3], t->len[3]);
    p = put_u64(p + t->len[3], r->len);
    memcpy(p, "\r\n\r\n", 4);
    memcpy(p + 4, r->text, r->len);
    return (size_t)(p + 4 - buf) + r->len;
}

/* Sends up to want requests (at most BATCH) from source socket src; returns how many left. */
static unsigned send_batch(struct state *s, unsigned want, unsigned src)
{
    unsigned k, n = 0;
    double t;
    int rc;

    if (want > BATCH)
        want = BATCH;
    if (s->c.sent + want > s->maxmsgs)
        want = (unsigned)(s->maxmsgs - s->c.sent);
    for (k = 0; k < want; k++) {
        size_t len = build_request(s, s->c.sent + k, src, s->txbuf + (size_t)k * SLOT, SLOT);

        if (len == 0)
            break;
        s->txv[k].iov_base = s->txbuf + (size_t)k * SLOT;
        s->txv[k].iov_len = len;
        memset(&s->txm[k].msg_hdr, 0, sizeof(s->txm[k].msg_hdr));
        s->txm[k].msg_hdr.msg_iov = &s->txv[k];
        s->txm[k].msg_hdr.msg_iovlen = 1;
        s->txm[k].msg_hdr.msg_name = &s->o.target;
        s->txm[k].msg_hdr.msg_namelen = sizeof(s->o.target);
        n++;
    }
    if (n == 0)
        return 0;
    rc = sendmmsg(s->gen[src], s->txm, n, 0);
    if (rc < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            s->c.send_err++;
        return 0;
    }
    t = now_s();
    for (k = 0; k < (unsigned)rc; k++) {
        uint64_t i = s->c.sent + k;

        s->st[i] = ST_SENT;
        s->t_sent[i] = usec_since(s, t);
        if (s->rows[i % s->nrows].spam)
            s->c.spam_sent++;
        else
            s->c.ham_sent++;
    }
    s->c.sent += (unsigned)rc;
    return (unsigned)rc;
}

static void rx_prepare(struct state *s)
{
    for (unsigned k = 0; k < BATCH; k++) {
        s->rxv[k].iov_base = s->rxbuf + (size_t)k * SLOT;
        s->rxv[k].iov_len = SLOT;
        memset(&s->rxm[k].msg_hdr, 0, sizeof(s->rxm[k].msg_hdr));
        s->rxm[k].msg_hdr.msg_iov = &s->rxv[k];
        s->rxm[k].msg_hdr.msg_iovlen = 1;
        s->rxm[k].msg_hdr.msg_name = &s->rxsrc[k];
        s->rxm[k].msg_hdr.msg_namelen = sizeof(s->rxsrc[k]);
    }
}

/* Drains a generator socket: the answers to our requests. */
static void recv_answers(struct state *s, int fd)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        int n;
        double t;

        rx_prepare(s);
        n = recvmmsg(fd, s->rxm, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        t = now_s();
        for (int k = 0; k < n; k++) {
            const char *b = s->rxbuf + (size_t)k * SLOT;
            size_t len = s->rxm[k].msg_len;
            long i;
            int code;
            uint8_t bit;

            if (s->rxm[k].msg_hdr.msg_flags & MSG_TRUNC)
                s->c.trunc++;
            if (len < 12 || memcmp(b, "SIP/2.0 ", 8) != 0) {
                s->c.stray++;
                continue;
            }
            code = (b[8] - '0') * 100 + (b[9] - '0') * 10 + (b[10] - '0');
            i = msg_index(b, len, s->tag, s->taglen);
            if (i < 0 || (uint64_t)i >= s->c.sent || code < 200) {
                s->c.stray++;
                continue;
            }
            if (s->st[i] & (ST_200 | ST_403 | ST_OTHER)) {
                s->c.rdup++;
                continue;
            }
            bit = code == 200 ? ST_200 : code == 403 ? ST_403 : ST_OTHER;
            s->st[i] |= bit;
            if (bit == ST_200)
                s->c.r200++;
            else if (bit == ST_403)
                s->c.r403++;
            else
                s->c.rother++;
            if (bit == ST_403 && s->rows[(uint64_t)i % s->nrows].spam)
                s->c.spam_403++;
            else if (bit == ST_403)
                s->c.ham_403++;
            {
                uint32_t us = usec_since(s, t) - s->t_sent[i];

                s->lat[lat_bucket(us)]++;
                s->nlat++;
                if (us > s->lat_max)
                    s->lat_max = us;
                if (us > s->ivl_max)
                    s->ivl_max = us;
            }
        }
        if (n < BATCH)
            return;
    }
}

/* Marks request [b, b+len) as forwarded by the filter; returns its index or -1. */
static long mark_forwarded(struct state *s, const char *b, size_t len, int tcp)
{
    long i = msg_index(b, len, s->tag, s->taglen);

    if (i >= 0 && (uint64_t)i < s->c.sent) {
        if (s->st[i] & ST_FWD)
            s->c.fwd_dup++;
        else
            s->c.fwd++;
        if (tcp)
            s->c.fwd_tcp++;
        s->st[i] |= ST_FWD;
    }
    return i;
}

/* The sink's TCP listener on the sink's first port (same port as UDP, as a SIP hop has). */
static int tcp_listener(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 || listen(fd, 64) != 0) {
        perror("spim_loadgen: tcp sink");
        close(fd);
        return -1;
    }
    return fd;
}

static void tcp_accept(struct state *s)
{
    for (;;) {
        int fd = accept4(s->tcp_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;

        if (fd < 0)
            return;
        if (s->nconns == MAX_CONNS) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        s->conns[s->nconns].fd = fd;
        s->conns[s->nconns].len = 0;
        s->nconns++;
    }
}

/* Content-Length of the header block [p, e), or -1. */
static long content_length(const char *p, const char *e)
{
    static const char *const cl[] = {"content-length", "l", NULL};

    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p)), *le = nl ? nl : e;

        if (hdr_is(p, le, cl)) {
            const char *v = (const char *)memchr(p, ':', (size_t)(le - p)) + 1;
            long n = 0;

            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            if (v == le || *v < '0' || *v > '9')
                return -1;
            for (; v < le && *v >= '0' && *v <= '9' && n < 1000000; v++)
                n = n * 10 + (*v - '0');
            return n;
        }
        p = nl ? nl + 1 : e;
    }
    return -1;
}

/* Writes all of buf to a non-blocking socket, waiting out a full buffer briefly. */
static int write_all(int fd, const char *buf, size_t len)
{
    for (int tries = 0; len > 0 && tries < 1000; tries++) {
        ssize_t n = write(fd, buf, len);

        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        } else {
            struct pollfd p = {fd, POLLOUT, 0};

            poll(&p, 1, 1);
        }
    }
    return len == 0 ? 0 : -1;
}

/*
 * Reads what connection c has, answers every complete request (framed by
 * Content-Length) with a 200 on the same connection. Returns -1 when the
 * connection is to be closed.
 */
static int tcp_read(struct state *s, struct conn *c)
{
    char ans[SLOT];

    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, CONN_BUF - c->len);

        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        c->len += (size_t)n;
        for (;;) {
            char *he = memmem(c->buf, c->len, "\r\n\r\n", 4);
            long cl;
            size_t total, alen;

            /* CR/LF keep-alives between requests */
            while (c->len > 0 && (c->buf[0] == '\r' || c->buf[0] == '\n')) {
                memmove(c->buf, c->buf + 1, --c->len);
                he = memmem(c->buf, c->len, "\r\n\r\n", 4);
            }
            if (he == NULL) {
                if (c->len == CONN_BUF)
                    return -1;
                break;
            }
            cl = content_length(c->buf, he + 2);
            if (cl < 0 || cl > 65535)
                return -1;
            total = (size_t)(he + 4 - c->buf) + (size_t)cl;
            if (total > c->len)
                break;
            if (memcmp(c->buf, "SIP/2.0 ", 8) != 0) {
                mark_forwarded(s, c->buf, total, 1);
                alen = sink_answer(c->buf, total, ans, sizeof(ans));
                if (alen > 0 && write_all(c->fd, ans, alen) != 0)
                    return -1;
            }
            memmove(c->buf, c->buf + total, c->len - total);
            c->len -= total;
        }
    }
}

static void tcp_close(struct state *s, unsigned k)
{
    close(s->conns[k].fd);
    s->conns[k].fd = s->conns[s->nconns - 1].fd;
    s->conns[k].len = s->conns[s->nconns - 1].len;
    /* swap the buffers so none is lost */
    {
        char *b = s->conns[k].buf;

        s->conns[k].buf = s->conns[s->nconns - 1].buf;
        s->conns[s->nconns - 1].buf = b;
    }
    s->nconns--;
}

/* Drains the sink socket: what the filter forwards. Answers each request 200. */
static void recv_forwarded(struct state *s)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        int n;

        rx_prepare(s);
        n = recvmmsg(s->sinkfd[0], s->rxm, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        memset(s->nans, 0, sizeof(s->nans));
        for (int k = 0; k < n; k++) {
            const char *b = s->rxbuf + (size_t)k * SLOT;
            size_t len = s->rxm[k].msg_len, alen;
            long i;
            unsigned src, j;
            char *a;

            if (len < 8 || memcmp(b, "SIP/2.0 ", 8) == 0) {
                s->c.stray++;
                continue;
            }
            i = mark_forwarded(s, b, len, 0);
            src = i >= 0 ? (unsigned)((uint64_t)i % s->o.sources) : 0;
            j = s->nans[src];
            a = s->ansbuf + ((size_t)src * BATCH + j) * SLOT;
            alen = sink_answer(b, len, a, SLOT);
            if (alen == 0)
                continue;
            s->ansv[src][j].iov_base = a;
            s->ansv[src][j].iov_len = alen;
            s->ansdst[src][j] = s->rxsrc[k];
            memset(&s->ansm[src][j].msg_hdr, 0, sizeof(s->ansm[src][j].msg_hdr));
            s->ansm[src][j].msg_hdr.msg_iov = &s->ansv[src][j];
            s->ansm[src][j].msg_hdr.msg_iovlen = 1;
            s->ansm[src][j].msg_hdr.msg_name = &s->ansdst[src][j];
            s->ansm[src][j].msg_hdr.msg_namelen = sizeof(s->ansdst[src][j]);
            s->nans[src]++;
        }
        for (unsigned src = 0; src < s->o.sources; src++) {
            unsigned done = 0;

            /* a full send buffer is waited out briefly: a 200 dropped here is a loss */
            for (int tries = 0; done < s->nans[src] && tries < 1000; tries++) {
                int rc = sendmmsg(s->sinkfd[src], s->ansm[src] + done, s->nans[src] - done, 0);

                if (rc > 0)
                    done += (unsigned)rc;
                else if (rc < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    break;
            }
        }
        if (n < BATCH)
            return;
    }
}

static uint64_t answered(const struct state *s)
{
    return s->c.r200 + s->c.r403 + s->c.rother;
}

static void progress(struct state *s, double t)
{
    printf("progress t=%.0f sent=%" PRIu64 " answered=%" PRIu64 " in_flight=%" PRIu64
           " forwarded=%" PRIu64 " max_latency_us=%" PRIu32 "\n",
           t - s->t0, s->c.sent, answered(s), s->c.sent - answered(s), s->c.fwd, s->ivl_max);
    fflush(stdout);
    s->ivl_max = 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"target", required_argument, NULL, 't'},
        {"bind", required_argument, NULL, 'b'},
        {"sink", required_argument, NULL, 's'},
        {"corpus", required_argument, NULL, 'c'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"window", required_argument, NULL, 'w'},
        {"burst", required_argument, NULL, 'B'},
        {"sources", required_argument, NULL, 'S'},
        {"drain", required_argument, NULL, 'D'},
        {"interval", required_argument, NULL, 'i'},
        {"max-body", required_argument, NULL, 'm'},
        {"pid", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, have = 0;
    double v;

    memset(o, 0, sizeof(*o));
    o->rate = 10000;
    o->duration = 3;
    o->drain = 2;
    o->window = 256;
    o->burst = 0; /* rate / 1000, see main */
    o->sources = 1;
    o->max_body = MAX_BODY;
    o->pid = -1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;

        switch (c) {
        case 't':
            bad = parse_addr(optarg, &o->target);
            have |= 1;
            break;
        case 'b':
            bad = parse_addr(optarg, &o->bind);
            have |= 2;
            break;
        case 's':
            bad = parse_addr(optarg, &o->sink);
            have |= 4;
            break;
        case 'c':
            o->corpus = optarg;
            have |= 8;
            break;
        case 'r':
            bad = parse_num(optarg, 0, 10e6, &o->rate);
            break;
        case 'd':
            bad = parse_num(optarg, 0.1, 86400, &o->duration);
            break;
        case 'D':
            bad = parse_num(optarg, 0, 600, &o->drain);
            break;
        case 'i':
            bad = parse_num(optarg, 0, 86400, &o->interval);
            break;
        case 'w':
            bad = parse_num(optarg, 1, 1e6, &v);
            o->window = (unsigned)v;
            break;
        case 'B':
            bad = parse_num(optarg, 1, BATCH, &v);
            o->burst = (unsigned)v;
            break;
        case 'S':
            bad = parse_num(optarg, 1, MAX_SOURCES, &v);
            o->sources = (unsigned)v;
            break;
        case 'm':
            bad = parse_num(optarg, 1, SLOT - 1024, &v);
            o->max_body = (unsigned)v;
            break;
        case 'p':
            bad = parse_num(optarg, 1, 1e9, &v);
            o->pid = (long)v;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            bad = 1;
        }
        if (bad) {
            if (c != '?')
                fprintf(stderr, "spim_loadgen: bad value '%s'\n", optarg ? optarg : "");
            return -1;
        }
    }
    if (have != 15 || optind < argc) {
        usage(stderr);
        return -1;
    }
    if (ntohs(o->bind.sin_port) + o->sources - 1 > 65535 ||
        ntohs(o->sink.sin_port) + o->sources - 1 > 65535)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static struct state s;
    char *corpus_data = NULL;
    double t, t_end_send, t_end, next_progress, cpu0 = -1, cpu1 = -1, self0, wall;
    double mbusy0 = 0, mtotal0 = 0, mbusy1 = 0, mtotal1 = 0;
    int have_machine;
    uint64_t lost, fwd_no_answer = 0;
    int rc = 2;
    unsigned src_rr = 0;

    if (parse_opts(argc, argv, &s.o) != 0)
        return 2;
    for (unsigned k = 0; k < MAX_SOURCES; k++)
        s.gen[k] = s.sinkfd[k] = -1;
    s.tcp_listen = -1;
    if (load_corpus(s.o.corpus, s.o.max_body, &corpus_data, &s.rows, &s.nrows) != 0)
        return 2;
    if (s.o.burst == 0) {
        /* about one wakeup a millisecond, whatever the rate */
        double b = s.o.rate / 1000.0;

        s.o.burst = b < 1 ? 1 : b > BATCH ? BATCH : (unsigned)b;
    }
    s.maxmsgs = s.o.rate > 0 ? (uint64_t)(s.o.rate * s.o.duration * 1.05) + BATCH
                             : (uint64_t)(200000.0 * s.o.duration) + BATCH;
    if (s.maxmsgs > MAX_MSGS)
        s.maxmsgs = MAX_MSGS;
    s.st = calloc(s.maxmsgs, 1);
    s.t_sent = calloc(s.maxmsgs, sizeof(*s.t_sent));
    s.txbuf = malloc((size_t)BATCH * SLOT);
    s.rxbuf = malloc((size_t)BATCH * SLOT);
    s.ansbuf = malloc((size_t)MAX_SOURCES * BATCH * SLOT);
    if (s.st == NULL || s.t_sent == NULL || s.txbuf == NULL || s.rxbuf == NULL ||
        s.ansbuf == NULL) {
        fprintf(stderr, "spim_loadgen: out of memory\n");
        goto out;
    }
    for (unsigned k = 0; k < s.o.sources; k++) {
        struct sockaddr_in sa = s.o.sink;

        s.gen_addr[k] = s.o.bind;
        s.gen_addr[k].sin_port = htons((uint16_t)(ntohs(s.o.bind.sin_port) + k));
        sa.sin_port = htons((uint16_t)(ntohs(s.o.sink.sin_port) + k));
        s.gen[k] = udp_socket(&s.gen_addr[k]);
        s.sinkfd[k] = udp_socket(&sa);
        if (s.gen[k] < 0 || s.sinkfd[k] < 0)
            goto out;
    }
    s.tcp_listen = tcp_listener(&s.o.sink);
    if (s.tcp_listen < 0)
        goto out;
    for (unsigned k = 0; k < MAX_CONNS; k++) {
        s.conns[k].fd = -1;
        s.conns[k].buf = malloc(CONN_BUF);
        if (s.conns[k].buf == NULL)
            goto out;
    }
    /* A run tag in every Call-ID and branch: answers to an earlier run are strays. */
    snprintf(s.tag, sizeof(s.tag), "lg%lx%lx-", (unsigned long)getpid(),
             (unsigned long)time(NULL) & 0xffffff);
    s.taglen = strlen(s.tag);
    for (unsigned k = 0; k < s.o.sources; k++)
        if (build_template(&s, k) != 0) {
            fprintf(stderr, "spim_loadgen: request template too long\n");
            goto out;
        }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    if (s.o.pid > 0 && (cpu0 = proc_cpu(s.o.pid)) < 0) {
        fprintf(stderr, "spim_loadgen: cannot read /proc/%ld/stat\n", s.o.pid);
        goto out;
    }
    self0 = self_cpu();
    have_machine = machine_cpu(&mbusy0, &mtotal0) == 0;
    s.t0 = now_s();
    t_end_send = s.t0 + s.o.duration;
    t_end = t_end_send + s.o.drain;
    next_progress = s.o.interval > 0 ? s.t0 + s.o.interval : 1e300;
    for (;;) {
        struct pollfd pfd[MAX_SOURCES + 2 + MAX_CONNS];
        struct timespec ts;
        double wait = 0.005;
        unsigned np = 0;
        int paced = 0;

        t = now_s();
        if (interrupted)
            break;
        if (t >= next_progress) {
            progress(&s, t);
            next_progress += s.o.interval;
        }
        if (t < t_end_send && s.c.sent < s.maxmsgs) {
            if (s.o.rate > 0) {
                uint64_t due = (uint64_t)((t - s.t0) * s.o.rate) + 1;

                while (due > s.c.sent && s.c.sent < s.maxmsgs) {
                    unsigned want = (unsigned)(due - s.c.sent < BATCH ? due - s.c.sent : BATCH);

                    if (send_batch(&s, want, src_rr) == 0)
                        break;
                    src_rr = (src_rr + 1) % s.o.sources;
                }
                /* sleep until a burst is due */
                wait = ((double)(s.c.sent + s.o.burst) / s.o.rate) - (now_s() - s.t0);
                if (wait > 0.005)
                    wait = 0.005;
                paced = 1;
            } else {
                while (s.c.sent - answered(&s) < s.o.window && s.c.sent < s.maxmsgs) {
                    uint64_t room = s.o.window - (s.c.sent - answered(&s));

                    if (send_batch(&s, (unsigned)(room < BATCH ? room : BATCH), src_rr) == 0)
                        break;
                    src_rr = (src_rr + 1) % s.o.sources;
                }
            }
        } else if (t >= t_end || answered(&s) >= s.c.sent) {
            break;
        }
        for (unsigned k = 0; k < s.o.sources; k++) {
            pfd[np].fd = s.gen[k];
            pfd[np++].events = POLLIN;
        }
        pfd[np].fd = s.sinkfd[0];
        pfd[np++].events = POLLIN;
        pfd[np].fd = s.tcp_listen;
        pfd[np++].events = POLLIN;
        for (unsigned k = 0; k < s.nconns; k++) {
            pfd[np].fd = s.conns[k].fd;
            pfd[np++].events = POLLIN;
        }
        if (wait < 0)
            wait = 0;
        if (paced && wait > 0) {
            /*
             * While sending at a rate, answers are not waited for one by one:
             * sleep until the next burst, then read all that came meanwhile.
             * A wakeup per datagram would cost this process (and so the
             * filter, on the same cores) more than the datagram itself; the
             * latencies measured are late by at most one burst interval.
             */
            struct timespec sl = {0, (long)(wait * 1e9)};

            nanosleep(&sl, NULL);
            wait = 0;
        }
        ts.tv_sec = 0;
        ts.tv_nsec = (long)(wait * 1e9);
        if (ppoll(pfd, np, &ts, NULL) > 0) {
            unsigned base = s.o.sources + 2, nc = s.nconns;

            if (pfd[s.o.sources].revents & POLLIN)
                recv_forwarded(&s);
            /* from the last, so that closing one (a swap with the last) skips none */
            for (unsigned k = nc; k-- > 0;)
                if ((pfd[base + k].revents & (POLLIN | POLLHUP | POLLERR)) &&
                    tcp_read(&s, &s.conns[k]) != 0)
                    tcp_close(&s, k);
            if (pfd[s.o.sources + 1].revents & POLLIN)
                tcp_accept(&s);
            for (unsigned k = 0; k < s.o.sources; k++)
                if (pfd[k].revents & POLLIN)
                    recv_answers(&s, s.gen[k]);
        }
    }
    wall = now_s() - s.t0;
    if (s.o.pid > 0)
        cpu1 = proc_cpu(s.o.pid);
    have_machine = have_machine && machine_cpu(&mbusy1, &mtotal1) == 0 && mtotal1 > mtotal0;

    /* The send phase's real length: the achieved rate is over it. */
    {
        double send_time = wall < s.o.duration ? wall : s.o.duration;
        double srate = (double)s.c.sent / send_time, arate = (double)answered(&s) / send_time;
        double self = self_cpu() - self0, cpu_us = -1, others = -1;

        for (uint64_t i = 0; i < s.c.sent; i++)
            if ((s.st[i] & ST_FWD) && !(s.st[i] & (ST_200 | ST_403 | ST_OTHER)))
                fwd_no_answer++;
        lost = s.c.sent - answered(&s);
        if (cpu0 >= 0 && cpu1 >= 0 && answered(&s) > 0)
            cpu_us = (cpu1 - cpu0) * 1e6 / (double)answered(&s);
        if (have_machine) {
            /* cores busy on the machine, less the filter's and ours */
            double cores = (double)sysconf(_SC_NPROCESSORS_ONLN);

            others = cores * (mbusy1 - mbusy0) / (mtotal1 - mtotal0) - self / wall -
                     (cpu0 >= 0 && cpu1 >= 0 ? (cpu1 - cpu0) / wall : 0);
            if (others < 0)
                others = 0;
        }
        printf("spim_loadgen: %s %.0f MESSAGE/s for %.1f s, %u source socket(s), corpus %zu rows\n",
               s.o.rate > 0 ? "open loop at" : "flat-out (closed loop), window",
               s.o.rate > 0 ? s.o.rate : (double)s.o.window, s.o.duration, s.o.sources, s.nrows);
        printf("  sent %" PRIu64 " (%.0f/s), answered %" PRIu64 " (%.0f/s): 200 %" PRIu64
               ", 403 %" PRIu64 ", other %" PRIu64 "\n",
               s.c.sent, srate, answered(&s), arate, s.c.r200, s.c.r403, s.c.rother);
        printf("  forwarded to the sink %" PRIu64 " (over TCP %" PRIu64 ", duplicates %" PRIu64
               "), forwarded but unanswered %" PRIu64 "\n",
               s.c.fwd, s.c.fwd_tcp, s.c.fwd_dup, fwd_no_answer);
        printf("  LOST %" PRIu64 " (%.3f%%), duplicate answers %" PRIu64 ", strays %" PRIu64
               ", send errors %" PRIu64 "\n",
               lost, s.c.sent ? 100.0 * (double)lost / (double)s.c.sent : 0.0, s.c.rdup, s.c.stray,
               s.c.send_err);
        printf("  verdicts: spam blocked %" PRIu64 "/%" PRIu64 ", ham blocked %" PRIu64 "/%" PRIu64
               "\n",
               s.c.spam_403, s.c.spam_sent, s.c.ham_403, s.c.ham_sent);
        printf("  latency us: p50 %.0f, p90 %.0f, p99 %.0f, p99.9 %.0f, max %" PRIu32 "\n",
               lat_pct(s.lat, s.nlat, 50), lat_pct(s.lat, s.nlat, 90), lat_pct(s.lat, s.nlat, 99),
               lat_pct(s.lat, s.nlat, 99.9), s.lat_max);
        if (cpu_us >= 0)
            printf("  spimfilter (pid %ld) CPU: %.1f us per message (%.2f cores)\n", s.o.pid,
                   cpu_us, (cpu1 - cpu0) / wall);
        printf("  loadgen CPU: %.1f us per message (%.2f cores)\n",
               answered(&s) ? self * 1e6 / (double)answered(&s) : 0.0, self / wall);
        if (others >= 0)
            printf("  other processes on the machine meanwhile: %.2f cores\n", others);
        printf("RESULT rate=%.0f duration=%.2f sources=%u sent=%" PRIu64 " send_rate=%.0f"
               " answered=%" PRIu64 " answer_rate=%.0f ok200=%" PRIu64 " r403=%" PRIu64
               " other=%" PRIu64 " forwarded=%" PRIu64 " fwd_tcp=%" PRIu64 " lost=%" PRIu64
               " dup=%" PRIu64 " p50_us=%.0f p99_us=%.0f max_us=%" PRIu32 " cpu_us_per_msg=%.2f"
               " loadgen_us_per_msg=%.2f others_cores=%.2f\n",
               s.o.rate, send_time, s.o.sources, s.c.sent, srate, answered(&s), arate, s.c.r200,
               s.c.r403, s.c.rother, s.c.fwd, s.c.fwd_tcp, lost, s.c.rdup,
               lat_pct(s.lat, s.nlat, 50), lat_pct(s.lat, s.nlat, 99), s.lat_max, cpu_us,
               answered(&s) ? self * 1e6 / (double)answered(&s) : 0.0, others);
        rc = lost == 0 && s.c.rother == 0 && !interrupted ? 0 : 1;
    }
out:
    for (unsigned k = 0; k < s.nconns; k++)
        close(s.conns[k].fd);
    for (unsigned k = 0; k < MAX_CONNS; k++)
        free(s.conns[k].buf);
    if (s.tcp_listen >= 0)
        close(s.tcp_listen);
    for (unsigned k = 0; k < MAX_SOURCES; k++) {
        if (s.gen[k] >= 0)
            close(s.gen[k]);
        if (s.sinkfd[k] >= 0)
            close(s.sinkfd[k]);
    }
    free(s.st);
    free(s.t_sent);
    free(s.txbuf);
    free(s.rxbuf);
    free(s.ansbuf);
    free(s.rows);
    free(corpus_data);
    return rc;
}
