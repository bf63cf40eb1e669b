/*
 * test_serve_wire.c: a real `spimfilter serve` process on loopback, fed
 * bad datagrams: truncated SIP, Content-Length that claims more than the
 * body, negative Content-Length, garbage bytes, an empty datagram, a full
 * 65,535-byte datagram and a few thousand random mutations of a valid
 * MESSAGE. Each gets a 400 or nothing; afterwards the process is still up
 * and still forwards a valid MESSAGE to the next hop (this test's socket),
 * and SIGTERM stops it cleanly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/tmp/spim-wire-XXXXXX";
static pid_t serve_pid;
static int sock, hop, hop_tcp;
static unsigned serve_port, sock_port, hop_port;

static int bind_any(unsigned *port)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        return -1;
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    *port = ntohs(sin.sin_port);
    return fd;
}

static int run(char *const argv[])
{
    pid_t p = fork();
    int st;

    if (p == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void send_to_serve(const void *p, size_t n)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)serve_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(sendto(sock, p, n, 0, (struct sockaddr *)&sin, sizeof(sin)) == (ssize_t)n);
}

/* Waits up to ms for a datagram on fd; returns its length or -1. */
static ssize_t recv_wait(int fd, char *buf, size_t cap, int ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};

    if (poll(&pfd, 1, ms) <= 0)
        return -1;
    return recv(fd, buf, cap, 0);
}

static void drain(int fd)
{
    char buf[70000];

    while (recv_wait(fd, buf, sizeof(buf), 50) >= 0)
        ;
}

static char conf[512];

static void write_conf(const char *text)
{
    FILE *f = fopen(conf, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    char tsv[512], db[512], port[64], hopa[64];
    FILE *f;
    unsigned tries;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(tsv, sizeof(tsv), "%s/train.tsv", dir);
    snprintf(db, sizeof(db), "%s/db", dir);
    f = fopen(tsv, "w");
    assert_non_null(f);
    fputs("label\ttext\nspam\tWIN a free prize now call 09061234567\nham\tsee you at lunch\n", f);
    fclose(f);
    {
        char *argv[] = {SPIMFILTER_BIN, "train", "--db", db, "--tsv", tsv, NULL};
        assert_int_equal(run(argv), 0);
    }
    sock = bind_any(&sock_port);
    hop = bind_any(&hop_port);
    assert_true(sock >= 0 && hop >= 0);
    {
        /* the next hop also listens on TCP, on the same port, for large requests */
        struct sockaddr_in sin;
        int one = 1;

        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)hop_port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        hop_tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* not inherited by serve */
        setsockopt(hop_tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        assert_int_equal(bind(hop_tcp, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(listen(hop_tcp, 4), 0);
    }
    /* a free port for serve: bind one, release it, hand it over */
    {
        int t = bind_any(&serve_port);
        close(t);
    }
    snprintf(port, sizeof(port), "127.0.0.1:%u", serve_port);
    snprintf(conf, sizeof(conf), "%s/serve.conf", dir);
    write_conf("log_level = error\n");
    snprintf(hopa, sizeof(hopa), "127.0.0.1:%u", hop_port);
    serve_pid = fork();
    if (serve_pid == 0) {
        char *argv[] = {SPIMFILTER_BIN, "serve",      "--config", conf,   "--listen",
                        port,           "--next-hop", hopa,       "--db", db,
                        "--workers",    "2",          NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    /* wait until it answers an OPTIONS addressed to it */
    for (tries = 0; tries < 50; tries++) {
        char msg[512], buf[2048];
        int n = snprintf(msg, sizeof(msg),
                         "OPTIONS sip:127.0.0.1:%u SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%u;"
                         "branch=z9hG4bKping%u\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: "
                         "<sip:127.0.0.1>\r\nCall-ID: ping%u\r\nCSeq: 1 OPTIONS\r\n"
                         "Content-Length: 0\r\n\r\n",
                         serve_port, sock_port, tries, tries);
        send_to_serve(msg, (size_t)n);
        if (recv_wait(sock, buf, sizeof(buf), 100) > 0 && strncmp(buf, "SIP/2.0 200", 11) == 0)
            return 0;
    }
    fail_msg("serve did not answer OPTIONS on port %u", serve_port);
    return -1;
}

static int teardown(void **state)
{
    char cmd[600];
    int st = 0;

    (void)state;
    if (serve_pid > 0) {
        kill(serve_pid, SIGTERM);
        waitpid(serve_pid, &st, 0);
    }
    close(sock);
    close(hop);
    if (hop_tcp >= 0)
        close(hop_tcp);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return -1;
    return 0;
}

static int message(char *out, size_t cap, const char *cid, const char *body, const char *cl)
{
    char clbuf[32];

    if (cl == NULL) {
        snprintf(clbuf, sizeof(clbuf), "%zu", strlen(body));
        cl = clbuf;
    }
    return snprintf(out, cap,
                    "MESSAGE sip:bob@127.0.0.1:%u SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%u;"
                    "branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\nFrom: "
                    "<sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: %s\r\n"
                    "CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: %s\r\n\r\n%s",
                    hop_port, sock_port, cid, cid, cl, body);
}

static int alive(void)
{
    int st;

    return waitpid(serve_pid, &st, WNOHANG) == 0;
}

static void expect_400_or_nothing(const void *p, size_t n, int want_400)
{
    char buf[70000];
    ssize_t r;

    send_to_serve(p, n);
    r = recv_wait(sock, buf, sizeof(buf) - 1, 300);
    if (want_400) {
        assert_true(r > 0);
        buf[r] = '\0';
        assert_non_null(strstr(buf, "SIP/2.0 400 "));
    } else if (r > 0) {
        buf[r] = '\0';
        assert_non_null(strstr(buf, "SIP/2.0 400 "));
    }
    /* nothing of it reached the next hop */
    assert_true(recv_wait(hop, buf, sizeof(buf), 10) < 0);
    assert_true(alive());
}

static void test_serve_wire_bad_datagrams(void **state)
{
    char msg[4096];
    int n;

    (void)state;
    n = message(msg, sizeof(msg), "cl-more", "short", "500");
    expect_400_or_nothing(msg, (size_t)n, 1);
    n = message(msg, sizeof(msg), "cl-neg", "body", "-1");
    expect_400_or_nothing(msg, (size_t)n, 1);
    n = message(msg, sizeof(msg), "cl-abc", "body", "abc");
    expect_400_or_nothing(msg, (size_t)n, 1);
    n = message(msg, sizeof(msg), "trunc", "hello there", NULL);
    expect_400_or_nothing(msg, (size_t)n / 2, 0);
    expect_400_or_nothing("\x00\xff\x13garbage\r\n\r\n", 13, 0);
    expect_400_or_nothing("", 0, 0);
    expect_400_or_nothing("\r\n\r\n", 4, 0);
    {
        char *big = malloc(65507); /* the largest IPv4 UDP payload */

        assert_non_null(big);
        memset(big, 'A', 65507);
        expect_400_or_nothing(big, 65507, 0);
        free(big);
    }
}

static void test_serve_wire_random_mutations(void **state)
{
    char base[4096], m[4096];
    int n = message(base, sizeof(base), "fuzz", "free prize, call now", NULL);
    unsigned seed = 12345;

    (void)state;
    for (int i = 0; i < 3000; i++) {
        size_t len = (size_t)n;

        memcpy(m, base, (size_t)n);
        for (int k = 0; k < 1 + i % 8; k++) {
            seed = seed * 1103515245u + 12345u;
            m[(seed >> 8) % len] = (char)(seed >> 16);
        }
        if (i % 5 == 0) {
            seed = seed * 1103515245u + 12345u;
            len = (seed >> 8) % len;
        }
        send_to_serve(m, len);
        if (i % 100 == 0) {
            drain(sock);
            drain(hop);
            assert_true(alive());
        }
    }
    drain(sock);
    drain(hop);
    assert_true(alive());
}

static void test_serve_wire_still_forwards(void **state)
{
    char msg[4096], buf[70000];
    int n = message(msg, sizeof(msg), "after", "see you at lunch", NULL);
    ssize_t r;

    (void)state;
    drain(hop);
    send_to_serve(msg, (size_t)n);
    r = recv_wait(hop, buf, sizeof(buf) - 1, 2000);
    assert_true(r > 0);
    buf[r] = '\0';
    assert_non_null(strstr(buf, "MESSAGE sip:bob@"));
    assert_non_null(strstr(buf, "\r\nVia: SIP/2.0/UDP 127.0.0.1:"));
    assert_non_null(strstr(buf, "Max-Forwards: 69\r\n"));
    assert_true(alive());
}

/* The lines of a request a response copies: Via, From, To, Call-ID, CSeq. */
static size_t response_for(const char *req, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "SIP/2.0 200 OK\r\n");
    const char *p = strstr(req, "\r\n") + 2, *end = strstr(req, "\r\n\r\n");

    while (p < end) {
        const char *e = strstr(p, "\r\n");

        if (strncasecmp(p, "Via:", 4) == 0 || strncasecmp(p, "From:", 5) == 0 ||
            strncasecmp(p, "To:", 3) == 0 || strncasecmp(p, "Call-ID:", 8) == 0 ||
            strncasecmp(p, "CSeq:", 5) == 0)
            n += (size_t)snprintf(out + n, cap - n, "%.*s\r\n", (int)(e - p), p);
        p = e + 2;
    }
    n += (size_t)snprintf(out + n, cap - n, "Content-Length: 0\r\n\r\n");
    return n;
}

/* Reads one forwarded request from the next hop's UDP socket and answers it 200. */
static void hop_answer_udp(char *req, size_t cap)
{
    struct sockaddr_in from;
    socklen_t fl = sizeof(from);
    char resp[8192];
    ssize_t r;
    size_t n;
    struct pollfd pfd = {hop, POLLIN, 0};

    assert_true(poll(&pfd, 1, 2000) == 1);
    r = recvfrom(hop, req, cap - 1, 0, (struct sockaddr *)&from, &fl);
    assert_true(r > 0);
    req[r] = '\0';
    n = response_for(req, resp, sizeof(resp));
    assert_true(sendto(hop, resp, n, 0, (struct sockaddr *)&from, fl) == (ssize_t)n);
}

static int tcp_connect(unsigned port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* Reads from fd until want status lines arrived or 3 s passed. */
static size_t read_responses(int fd, char *buf, size_t cap, int want)
{
    size_t n = 0;

    for (int i = 0; i < 30; i++) {
        int count = 0;
        const char *p = buf;
        ssize_t r;

        buf[n] = '\0';
        while ((p = strstr(p, "SIP/2.0 ")) != NULL) {
            count++;
            p++;
        }
        if (count >= want)
            break;
        r = recv_wait(fd, buf + n, cap - n - 1, 100);
        if (r > 0)
            n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static void test_serve_wire_tcp_framing(void **state)
{
    char m1[2048], m2[2048], m3[2048], all[8192], req[70000], resp[8192];
    int fd = tcp_connect(serve_port), n1, n2, n3;
    struct sockaddr_in me;
    socklen_t ml = sizeof(me);

    (void)state;
    drain(hop);
    getsockname(fd, (struct sockaddr *)&me, &ml);
    /* a TCP upstream: its Via says TCP and its own address */
    n1 = message(m1, sizeof(m1), "tcp-1", "see you at lunch", NULL);
    n2 = message(m2, sizeof(m2), "tcp-2", "WIN a free prize now call 09061234567", NULL);
    n3 = message(m3, sizeof(m3), "tcp-3", "ok talk later", NULL);
    memcpy(all, m1, (size_t)n1);
    memcpy(all + n1, m2, (size_t)n2);
    memcpy(all + n1 + n2, m3, 40);
    /* two whole requests and the start of a third in one segment */
    assert_true(send(fd, all, (size_t)n1 + (size_t)n2 + 40, 0) > 0);
    hop_answer_udp(req, sizeof(req)); /* tcp-1 forwarded over UDP, answered */
    assert_non_null(strstr(req, "Call-ID: tcp-1"));
    /* the branch of a TCP-received request names its connection */
    assert_non_null(strstr(req, ";branch=z9hG4bKspf"));
    usleep(100000);
    assert_true(send(fd, m3 + 40, (size_t)n3 - 40, 0) > 0);
    hop_answer_udp(req, sizeof(req));
    assert_non_null(strstr(req, "Call-ID: tcp-3"));
    /* every answer on the connection the requests came on: 200, 403 (spam), 200 */
    read_responses(fd, resp, sizeof(resp), 3);
    assert_non_null(strstr(resp, "SIP/2.0 200 OK\r\n"));
    assert_non_null(strstr(resp, "SIP/2.0 403 "));
    assert_non_null(strstr(strstr(resp, "SIP/2.0 200 OK") + 1, "SIP/2.0 200 OK"));
    close(fd);
    assert_true(alive());
}

static void test_serve_wire_large_goes_tcp(void **state)
{
    char body[3000], msg[8192], req[70000], resp[8192];
    int n, c;
    size_t got = 0;

    (void)state;
    memset(body, 'a', sizeof(body) - 1);
    for (size_t i = 5; i < sizeof(body) - 1; i += 6)
        body[i] = ' ';
    body[sizeof(body) - 1] = '\0';
    n = message(msg, sizeof(msg), "big-1", body, NULL);
    send_to_serve(msg, (size_t)n);
    /* more than 1300 bytes: the filter opens a TCP connection to the next hop */
    {
        struct pollfd pfd = {hop_tcp, POLLIN, 0};

        assert_true(poll(&pfd, 1, 2000) == 1);
    }
    c = accept(hop_tcp, NULL, NULL);
    assert_true(c >= 0);
    while (got < (size_t)n + 100) {
        ssize_t r = recv_wait(c, req + got, sizeof(req) - got - 1, 1000);

        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") && strstr(req, body))
            break;
    }
    assert_non_null(strstr(req, "Via: SIP/2.0/TCP 127.0.0.1:"));
    assert_non_null(strstr(req, body));
    /* the answer comes back on that connection and goes out to the sender by UDP */
    n = (int)response_for(req, resp, sizeof(resp));
    assert_true(send(c, resp, (size_t)n, 0) == n);
    assert_true(recv_wait(sock, resp, sizeof(resp) - 1, 2000) > 0);
    assert_int_equal(strncmp(resp, "SIP/2.0 200 OK", 14), 0);
    close(c);
    assert_true(alive());
}

/*
 * SIGHUP while MESSAGEs flow: none is lost; a config that fails to load is
 * refused and the old one keeps working; a good one takes effect (mode = tag
 * forwards the spam with the tag headers instead of blocking it).
 */
static void test_serve_wire_reload(void **state)
{
    char msg[2048], req[70000], cid[32];
    unsigned forwarded = 0;
    int n;

    (void)state;
    drain(hop);
    drain(sock);
    for (int i = 0; i < 200; i++) {
        if (i % 40 == 20) {
            write_conf(i % 80 == 20 ? "log_level = error\nno_such_key = 1\n"
                                    : "log_level = error\n");
            kill(serve_pid, SIGHUP);
        }
        snprintf(cid, sizeof(cid), "reload-%d", i);
        n = message(msg, sizeof(msg), cid, "see you at lunch", NULL);
        send_to_serve(msg, (size_t)n);
        if (recv_wait(hop, req, sizeof(req) - 1, 1000) > 0)
            forwarded++;
    }
    assert_int_equal(forwarded, 200);
    assert_true(alive());

    /* before: the spam is blocked */
    n = message(msg, sizeof(msg), "reload-spam-1", "WIN a free prize now call 09061234567", NULL);
    send_to_serve(msg, (size_t)n);
    assert_true(recv_wait(sock, req, sizeof(req) - 1, 1000) > 0);
    assert_int_equal(strncmp(req, "SIP/2.0 403", 11), 0);
    /* after mode = tag: forwarded, tagged */
    write_conf("log_level = error\nmode = tag\n");
    kill(serve_pid, SIGHUP);
    usleep(300000);
    n = message(msg, sizeof(msg), "reload-spam-2", "WIN a free prize now call 09061234567", NULL);
    send_to_serve(msg, (size_t)n);
    n = (int)recv_wait(hop, req, sizeof(req) - 1, 1000);
    assert_true(n > 0);
    req[n] = '\0';
    assert_non_null(strstr(req, "\r\nX-SPIM-Verdict: tag\r\n"));
    assert_non_null(strstr(req, "\r\nX-SPIM-Score: "));
    write_conf("log_level = error\n");
    kill(serve_pid, SIGHUP);
    usleep(300000);
}

/* A MESSAGE to sip:RUSER@... with the From and To values given, as a proxy would send it. */
static int message_as(char *out, size_t cap, const char *cid, const char *ruser, const char *from,
                      const char *to, const char *body)
{
    return snprintf(out, cap,
                    "MESSAGE sip:%s@127.0.0.1:%u SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%u;"
                    "branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\nFrom: %s;tag=a\r\nTo: %s\r\n"
                    "Call-ID: %s\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %zu\r\n\r\n%s",
                    ruser, hop_port, sock_port, cid, from, to, cid, strlen(body), body);
}

/* Sends m and says what came of it: 1 forwarded to the next hop, the status code answered, or 0. */
static int outcome(const char *m, int n, char *req, size_t cap)
{
    ssize_t r;

    drain(hop);
    drain(sock);
    send_to_serve(m, (size_t)n);
    r = recv_wait(hop, req, cap - 1, 700);
    if (r > 0) {
        req[r] = '\0';
        return 1;
    }
    r = recv_wait(sock, req, cap - 1, 300);
    return r > 12 && strncmp(req, "SIP/2.0 ", 8) == 0 ? atoi(req + 8) : 0;
}

/* Replaces the first `from` in buf[0..n) (NUL-terminated, room to grow) with `to`. */
static size_t swap(char *buf, size_t n, const char *from, const char *to)
{
    char *p = strstr(buf, from);
    size_t fl = strlen(from), tl = strlen(to);

    assert_non_null(p);
    memmove(p + tl, p + fl, n - (size_t)(p - buf) - fl + 1);
    memcpy(p, to, tl);
    return n - fl + tl;
}

/* A response from the next hop's socket to serve. */
static void to_serve_from_hop(const char *p, size_t n)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)serve_port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

    assert_true(sendto(hop, p, n, 0, (struct sockaddr *)&sin, sizeof(sin)) == (ssize_t)n);
}

/*
 * First contact cannot be forged (issue 8): only a 2xx to a request we
 * forwarded counts, with that request's parties, once; the parties are the
 * Request-URI's and the sender's (a display name holding a URI, To, or
 * writing to oneself change nothing). carol takes contacts only.
 */
static void test_serve_wire_contacts_hold(void **state)
{
    char ini[600], text[1200], m[4096], req[70000], resp[8192];
    const char *bland = "see you at lunch";
    FILE *f;
    int n;
    size_t rn;

    (void)state;
    snprintf(ini, sizeof(ini), "%s/recipients.ini", dir);
    f = fopen(ini, "w");
    assert_non_null(f);
    fputs("[carol@127.0.0.1]\ncontacts_only = block\n", f);
    fclose(f);
    snprintf(text, sizeof(text), "log_level = error\nrecipient_policy = %s\n", ini);
    write_conf(text);
    kill(serve_pid, SIGHUP);
    usleep(300000);

    /* a stranger to carol is refused */
    n = message_as(m, sizeof(m), "ct-1", "carol", "<sip:attacker@127.0.0.1>",
                   "<sip:carol@127.0.0.1>", bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 403);
    /* attacker -> accomplice; the accomplice answers 200 (three times) "from carol to attacker" */
    n = message_as(m, sizeof(m), "ct-2", "accomplice", "<sip:attacker@127.0.0.1>",
                   "<sip:accomplice@127.0.0.1>", bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 1);
    rn = response_for(req, resp, sizeof(resp));
    rn =
        swap(resp, rn, "From: <sip:attacker@127.0.0.1>;tag=a", "From: <sip:carol@127.0.0.1>;tag=x");
    rn = swap(resp, rn, "To: <sip:accomplice@127.0.0.1>", "To: <sip:attacker@127.0.0.1>");
    for (int i = 0; i < 3; i++)
        to_serve_from_hop(resp, rn);
    usleep(200000);
    n = message_as(m, sizeof(m), "ct-3", "carol", "<sip:attacker@127.0.0.1>",
                   "<sip:carol@127.0.0.1>", bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 403);

    /* the real thing: carol writes to attacker and it is delivered; then attacker may answer */
    n = message_as(m, sizeof(m), "ct-4", "attacker", "<sip:carol@127.0.0.1>",
                   "<sip:attacker@127.0.0.1>", bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 1);
    rn = response_for(req, resp, sizeof(resp));
    to_serve_from_hop(resp, rn);
    assert_true(recv_wait(sock, req, sizeof(req) - 1, 1000) > 0); /* the 200, relayed */
    n = message_as(m, sizeof(m), "ct-5", "carol", "<sip:attacker@127.0.0.1>",
                   "<sip:carol@127.0.0.1>", bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 1);

    /* a display name holding attacker's URI does not make mallory attacker */
    n = message_as(m, sizeof(m), "ct-6", "carol",
                   "\"<sip:attacker@127.0.0.1>\" <sip:mallory@127.0.0.1>", "<sip:carol@127.0.0.1>",
                   bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 403);
    /* the recipient is the Request-URI's: To naming attacker changes nothing */
    n = message_as(m, sizeof(m), "ct-7", "carol", "<sip:mallory@127.0.0.1>",
                   "<sip:attacker@127.0.0.1>", bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 403);
    /* writing "as carol" to carol is no conversation */
    n = message_as(m, sizeof(m), "ct-8", "carol", "<sip:carol@127.0.0.1>", "<sip:carol@127.0.0.1>",
                   bland);
    assert_int_equal(outcome(m, n, req, sizeof(req)), 403);
    assert_true(alive());
    write_conf("log_level = error\n");
    kill(serve_pid, SIGHUP);
    usleep(300000);
}

/* A next hop that refuses TCP still gets the large request, over UDP (RFC 3261 18.1.1). */
static void test_serve_wire_large_falls_back_to_udp(void **state)
{
    char body[3000], msg[8192], req[70000];
    int n;
    ssize_t r;

    (void)state;
    close(hop_tcp); /* nothing listens on TCP any more: connects are refused */
    hop_tcp = -1;
    usleep(200000); /* the filter notices its old connection closed */
    memset(body, 'b', sizeof(body) - 1);
    for (size_t i = 7; i < sizeof(body) - 1; i += 8)
        body[i] = ' ';
    body[sizeof(body) - 1] = '\0';
    drain(hop);
    n = message(msg, sizeof(msg), "big-udp", body, NULL);
    send_to_serve(msg, (size_t)n);
    r = recv_wait(hop, req, sizeof(req) - 1, 3000);
    if (r <= 0) {
        r = recv_wait(sock, req, sizeof(req) - 1, 100);
        fail_msg("not forwarded; the sender got: %.60s", r > 0 ? req : "(nothing)");
    }
    req[r] = '\0';
    assert_non_null(strstr(req, "Via: SIP/2.0/UDP 127.0.0.1:"));
    assert_non_null(strstr(req, body));
    assert_true(alive());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve_wire_bad_datagrams),
        cmocka_unit_test(test_serve_wire_random_mutations),
        cmocka_unit_test(test_serve_wire_still_forwards),
        cmocka_unit_test(test_serve_wire_tcp_framing),
        cmocka_unit_test(test_serve_wire_large_goes_tcp),
        cmocka_unit_test(test_serve_wire_reload),
        cmocka_unit_test(test_serve_wire_large_falls_back_to_udp),
        cmocka_unit_test(test_serve_wire_contacts_hold),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup, teardown);
}
