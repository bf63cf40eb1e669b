/* net.c: CIDR networks for trusted_sources. */
#include "filter.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int spim_cidr_parse(const char *s, struct spim_cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    long prefix;
    char *end;

    while (*s == ' ' || *s == '\t') {
        s++;
        hl--;
    }
    while (hl > 0 && (s[hl - 1] == ' ' || s[hl - 1] == '\t'))
        hl--;
    if (hl == 0 || hl >= sizeof(host))
        return SPIM_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
    } else {
        return SPIM_EINVAL;
    }
    if (slash != NULL) {
        prefix = strtol(slash + 1, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (end == slash + 1 || *end != '\0' || prefix < 0 || (unsigned long)prefix > out->prefix)
            return SPIM_EINVAL;
        out->prefix = (unsigned)prefix;
    }
    return 0;
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;

    if (memcmp(a, b, bytes) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[bytes] ^ b[bytes]) & (0xFF << (8 - rest))) == 0;
}

int spim_cidr_match(const struct spim_cidr *nets, size_t n, const struct sockaddr_storage *ss)
{
    uint8_t a4[4], a6[16];
    int v4 = 0;

    if (ss->ss_family == AF_INET) {
        memcpy(a4, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        v4 = 1;
    } else if (ss->ss_family == AF_INET6) {
        memcpy(a6, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
        /* an IPv4-mapped address matches IPv4 networks */
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a6)) {
            memcpy(a4, a6 + 12, 4);
            v4 = 1;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (v4 && nets[i].family == AF_INET && prefix_eq(a4, nets[i].addr, nets[i].prefix))
            return 1;
        if (!v4 && nets[i].family == AF_INET6 && prefix_eq(a6, nets[i].addr, nets[i].prefix))
            return 1;
    }
    return 0;
}

int spim_cidr_list_parse(const char *s, struct spim_cidr *out, unsigned cap, unsigned *n, char *bad,
                         size_t badcap)
{
    *n = 0;
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char item[64];
        size_t b = 0;

        while (b < len && (s[b] == ' ' || s[b] == '\t'))
            b++;
        if (len - b > 0) {
            if (len - b >= sizeof(item) || *n >= cap)
                goto fail;
            memcpy(item, s + b, len - b);
            item[len - b] = '\0';
            if (spim_cidr_parse(item, &out[*n]) != 0)
                goto fail;
            (*n)++;
        }
        s += len + (comma ? 1 : 0);
        continue;
    fail:
        snprintf(bad, badcap, "%.*s", (int)(len - b < 60 ? len - b : 60), s + b);
        return SPIM_EINVAL;
    }
    return 0;
}
