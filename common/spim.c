/* spim.c: the shared error strings, diagnostics, hash and clocks. */
#include "spim.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

const char *spim_strerror(int err)
{
    switch (err) {
    case SPIM_OK:
        return "success";
#define XX(name, msg)                                                                              \
    case SPIM_E##name:                                                                             \
        return msg;
        SPIM_ERR_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

void spim_diag_set(struct spim_diag *d, const char *file, unsigned line, unsigned column,
                   const char *fmt, ...)
{
    va_list ap;

    if (d == NULL)
        return;
    snprintf(d->file, sizeof(d->file), "%s", file ? file : "");
    d->line = line;
    d->column = column;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
    va_end(ap);
}

uint64_t spim_hash64(const void *p, size_t len, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, len, seed);
}

int64_t spim_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t spim_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int log_level = SPIM_LOG_INFO;

void spim_log_set_level(int level)
{
    log_level = level;
}

int spim_log_enabled(int level)
{
    return level <= log_level;
}

void spim_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warning", "info", "debug"};
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    if (level > log_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n,
                          ".%03ldZ spimfilter %s: ", ts.tv_nsec / 1000000,
                          names[level < 0   ? 0
                                : level > 3 ? 3
                                            : level]);
    va_start(ap, fmt);
    if (n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    /* A line often holds what a sender wrote (From, Call-ID, a reason): its
     * controls, C1 ones included (U+009B is a terminal's CSI), become '?', so
     * that a log read in a terminal runs no escape and no line is forged. */
    for (unsigned char *c = (unsigned char *)line + (n < sizeof(line) ? n : 0); *c != '\0'; c++) {
        if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
            *c = '?';
        else if (*c == 0xC2 && c[1] >= 0x80 && c[1] < 0xA0)
            c[0] = c[1] = '?';
    }
    /* one write per line, so lines of several threads do not interleave */
    fprintf(stderr, "%s\n", line);
}

void spim_put(struct spim_out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->len < o->cap ? o->buf + o->len : NULL, o->len < o->cap ? o->cap - o->len : 0,
                  fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

int spim_dl_function(void *h, const char *name, void *slot, size_t size)
{
    void *p = dlsym(h, name);

    if (p == NULL || size != sizeof(p))
        return -1;
    memcpy(slot, &p, size);
    return 0;
}
