/*
 * clamd.c: one scan by clamd over its Unix socket with INSTREAM: "zINSTREAM\0",
 * chunks each prefixed by a 4-byte big-endian length, a zero-length chunk,
 * then one NUL-terminated reply: "stream: OK" or "stream: NAME FOUND" (or an
 * error such as "INSTREAM size limit exceeded. ERROR"). A connection per
 * scan: clamd closes it after the reply. Every step is bounded by a timeout.
 */
#include "policy.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHUNK 65536u

/* Waits for fd to be ready for events within the deadline. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
    for (unsigned guard = 0; guard < 1000; guard++) {
        struct pollfd pfd = {fd, events, 0};
        uint64_t now = spim_mono_ns();
        int rc;

        if (now >= deadline_ns)
            return SPIM_ETIMEOUT;
        rc = poll(&pfd, 1, (int)((deadline_ns - now) / 1000000 + 1));
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return SPIM_ENET;
    }
    return SPIM_ETIMEOUT;
}

static int send_all(int fd, const void *buf, size_t n, uint64_t deadline_ns)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w;
        int rc = wait_fd(fd, POLLOUT, deadline_ns);

        if (rc != 0)
            return rc;
        w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return SPIM_ENET;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int spim_clamd_scan(const char *socket_path, const void *data, size_t len, unsigned timeout_ms,
                    char *found, size_t cap)
{
    struct sockaddr_un sa;
    char reply[512];
    size_t rn = 0, off = 0;
    uint64_t deadline;
    int fd, rc;

    if (cap > 0)
        found[0] = '\0';
    if (socket_path == NULL || strlen(socket_path) >= sizeof(sa.sun_path) ||
        (data == NULL && len > 0))
        return SPIM_EINVAL;
    deadline = spim_mono_ns() + (uint64_t)(timeout_ms ? timeout_ms : 5000) * 1000000u;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SPIM_ENET;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(found, cap, "connect %s: %s", socket_path, strerror(errno));
        close(fd);
        return SPIM_ENET;
    }
    rc = send_all(fd, "zINSTREAM", 10, deadline);
    while (rc == 0) {
        size_t n = len - off > CHUNK ? CHUNK : len - off;
        unsigned char hdr[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                                (unsigned char)(n >> 8), (unsigned char)n};

        rc = send_all(fd, hdr, 4, deadline);
        if (rc == 0 && n > 0)
            rc = send_all(fd, (const char *)data + off, n, deadline);
        off += n;
        if (n == 0)
            break;
    }
    /* Read the reply even after a failed send: clamd may have said why (size limit). */
    while (rn < sizeof(reply) - 1) {
        ssize_t r;
        int wr = wait_fd(fd, POLLIN, deadline);

        if (wr != 0) {
            if (rn == 0 && rc == 0)
                rc = wr;
            break;
        }
        r = recv(fd, reply + rn, sizeof(reply) - 1 - rn, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            break;
        if (memchr(reply + rn, '\0', (size_t)r) != NULL) {
            rn += (size_t)r;
            break;
        }
        rn += (size_t)r;
    }
    close(fd);
    reply[rn] = '\0';
    rn = strlen(reply);
    while (rn > 0 && (reply[rn - 1] == '\n' || reply[rn - 1] == '\r'))
        reply[--rn] = '\0';
    if (rn == 0)
        return rc != 0 ? rc : SPIM_ENET;
    {
        const char *r = reply, *sp;

        if (strncmp(r, "stream: ", 8) == 0)
            r += 8;
        if (strcmp(r, "OK") == 0)
            return 0;
        sp = strrchr(r, ' ');
        if (sp != NULL && strcmp(sp, " FOUND") == 0) {
            snprintf(found, cap, "%.*s", (int)(sp - r), r);
            return 1;
        }
        snprintf(found, cap, "%s", reply);
    }
    return SPIM_ENET;
}
