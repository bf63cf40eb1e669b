/*
 * metrics_http.c: the metrics endpoint of `serve` and its client, used by
 * `spimfilter stats`.
 *
 * The server is libmicrohttpd (docs/dependencies.md) on its own thread:
 * GET /metrics answers the text of spim_metrics_render, anything else 404
 * or 405. It is bounded like every input: a few connections, a small
 * memory pool per connection, a timeout. It never touches the SIP path; a
 * scrape reads only atomic counters and the quarantine's size (one short
 * LMDB read transaction).
 *
 * The client is a plain HTTP/1.0 GET over one TCP connection with a
 * deadline: no library is needed to read what we serve ourselves.
 */
#include "cli.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 16
#define CONN_TIMEOUT_S 10
#define CONN_MEMORY (32 * 1024)
#define FETCH_MAX (8u << 20) /* a scrape larger than this is not ours */

struct spim_metrics_http {
    struct MHD_Daemon *d;
    struct spim_store *st;
    char last[256]; /* libmicrohttpd's last message, for a failed start */
};

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct spim_metrics_http *h = cls;
    size_t n;

    vsnprintf(h->last, sizeof(h->last), fmt, ap);
    n = strlen(h->last);
    while (n > 0 && (h->last[n - 1] == '\n' || h->last[n - 1] == '\r'))
        h->last[--n] = '\0';
    spim_log(SPIM_LOG_WARN, "metrics: %s", h->last);
}

/* The metrics text in a malloc'd buffer; NULL when out of memory. */
static char *render(size_t *len)
{
    size_t cap = spim_metrics_render(NULL, 0) + 4096;

    /* New rule names may appear between two renders: a few tries, each larger. */
    for (int attempt = 0; attempt < 4; attempt++) {
        char *buf = malloc(cap);
        size_t n;

        if (buf == NULL)
            return NULL;
        n = spim_metrics_render(buf, cap);
        if (n < cap) {
            *len = n;
            return buf;
        }
        free(buf);
        cap = n + 4096;
    }
    return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *text,
                             const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc;

    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct spim_metrics_http *h = cls;
    struct spim_quar_usage u;
    struct MHD_Response *r;
    enum MHD_Result rc;
    size_t len = 0;
    char *text;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(url, "/metrics") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n", "GET, HEAD");
    if (h->st != NULL && spim_quar_usage(h->st, &u) == 0)
        spim_metrics_set_quarantine(u.records, u.bytes);
    text = render(&len);
    if (text == NULL)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
    r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

int spim_metrics_http_start(const char *hostport, struct spim_store *st,
                            struct spim_metrics_http **out, char *err, size_t errcap)
{
    struct spim_metrics_http *h;
    struct addrinfo hints, *res = NULL;
    char host[128], ps[16];
    unsigned port, flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    int rc;

    if (spim_hostport(hostport, host, sizeof(host), &port) != 0) {
        snprintf(err, errcap, "metrics_listen: expected HOST:PORT, got '%s'", hostport);
        return SPIM_EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    snprintf(ps, sizeof(ps), "%u", port);
    if ((rc = getaddrinfo(host, ps, &hints, &res)) != 0 || res == NULL) {
        snprintf(err, errcap, "metrics_listen %s: %s", hostport, gai_strerror(rc));
        return SPIM_ENET;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        freeaddrinfo(res);
        snprintf(err, errcap, "out of memory");
        return SPIM_ENOMEM;
    }
    h->st = st;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_SOCK_ADDR, res->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_MEMORY, MHD_OPTION_END);
    freeaddrinfo(res);
    if (h->d == NULL) {
        snprintf(err, errcap, "metrics_listen %s: %s", hostport,
                 h->last[0] ? h->last : "cannot start the HTTP server");
        free(h);
        return SPIM_ENET;
    }
    *out = h;
    return 0;
}

void spim_metrics_http_stop(struct spim_metrics_http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}

/* --- client ----------------------------------------------------------------------- */

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = spim_mono_ns();

    return now >= deadline ? 0 : (int)((deadline - now) / 1000000u) + 1;
}

/* Waits for ev on fd until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        struct pollfd p = {fd, ev, 0};
        int ms = remaining_ms(deadline), n;

        if (ms == 0)
            return 0;
        n = poll(&p, 1, ms);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Connects to one address before the deadline; the socket, or -1 with err filled. */
static int connect_to(const struct addrinfo *ai, uint64_t deadline, char *err, size_t errcap)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), soerr = 0;
    socklen_t sl = sizeof(soerr);

    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(err, errcap, "%s", strerror(errno));
            close(fd);
            return -1;
        }
        if (wait_fd(fd, POLLOUT, deadline) != 1) {
            snprintf(err, errcap, "no answer to the connection");
            close(fd);
            return -1;
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0) {
            snprintf(err, errcap, "%s", strerror(soerr));
            close(fd);
            return -1;
        }
    }
    return fd;
}

int spim_metrics_fetch(const char *hostport, unsigned timeout_ms, char **body, size_t *len,
                       char *err, size_t errcap)
{
    struct addrinfo hints, *res = NULL, *ai;
    uint64_t deadline = spim_mono_ns() + (uint64_t)(timeout_ms ? timeout_ms : 5000) * 1000000u;
    char host[128], ps[16], req[256];
    char *buf = NULL, *hdr_end;
    size_t n = 0, cap = 0, off;
    unsigned port;
    int fd = -1, rc, reqlen;

    if (spim_hostport(hostport, host, sizeof(host), &port) != 0) {
        snprintf(err, errcap, "expected HOST:PORT, got '%s'", hostport);
        return SPIM_EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%u", port);
    if ((rc = getaddrinfo(host, ps, &hints, &res)) != 0 || res == NULL) {
        snprintf(err, errcap, "%s: %s", host, gai_strerror(rc));
        return SPIM_ENET;
    }
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = connect_to(ai, deadline, err, errcap);
    freeaddrinfo(res);
    if (fd < 0)
        return SPIM_ENET;
    reqlen = snprintf(req, sizeof(req),
                      "GET /metrics HTTP/1.0\r\nHost: %s\r\nUser-Agent: spimfilter/%s\r\n\r\n",
                      hostport, SPIM_VERSION);
    for (off = 0; off < (size_t)reqlen;) {
        ssize_t k = send(fd, req + off, (size_t)reqlen - off, MSG_NOSIGNAL);

        if (k > 0) {
            off += (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) != 1)
                goto timeout;
        } else {
            snprintf(err, errcap, "send: %s", strerror(errno));
            goto fail_net;
        }
    }
    /* HTTP/1.0: the server closes the connection after the response. */
    for (;;) {
        ssize_t k;

        if (cap - n < 4096) {
            char *nb;

            if (cap >= FETCH_MAX) {
                snprintf(err, errcap, "the answer is larger than %u bytes", FETCH_MAX);
                rc = SPIM_ETOOBIG;
                goto fail;
            }
            nb = realloc(buf, cap ? cap * 2 : 16384);
            if (nb == NULL) {
                snprintf(err, errcap, "out of memory");
                rc = SPIM_ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = cap ? cap * 2 : 16384;
        }
        k = recv(fd, buf + n, cap - n - 1, 0);
        if (k > 0) {
            n += (size_t)k;
        } else if (k == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) != 1)
                goto timeout;
        } else {
            snprintf(err, errcap, "recv: %s", strerror(errno));
            goto fail_net;
        }
    }
    close(fd);
    fd = -1;
    buf[n] = '\0';
    hdr_end = strstr(buf, "\r\n\r\n");
    if (n < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || hdr_end == NULL) {
        snprintf(err, errcap, "not an HTTP answer");
        rc = SPIM_EPARSE;
        goto fail;
    }
    if (strncmp(buf + 8, " 200", 4) != 0) {
        char *eol = strstr(buf, "\r\n");

        snprintf(err, errcap, "HTTP answer '%.*s'", (int)(eol - buf), buf);
        rc = SPIM_EPARSE;
        goto fail;
    }
    off = (size_t)(hdr_end + 4 - buf);
    memmove(buf, buf + off, n - off + 1);
    *body = buf;
    *len = n - off;
    return 0;

timeout:
    snprintf(err, errcap, "no answer within %u ms", timeout_ms ? timeout_ms : 5000);
    rc = SPIM_ETIMEOUT;
    goto fail;
fail_net:
    rc = SPIM_ENET;
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}
