/*
 * osip_lazy.c: libosipparser2, loaded when the filter first parses a
 * request instead of when any spimfilter process starts.
 *
 * The filter uses six functions of it (below, with the prototypes of its
 * headers, which this file includes so that the compiler holds them to
 * them). Linked the usual way, the library is mapped and relocated in every
 * process of the build that has all the commands, its `classify --tsv` and
 * `train --tsv` too, which never parse SIP: about 0.3 ms of a start-up that
 * a `classify` of a thousand messages spent 7 ms on in all. (The release
 * build's static spimfilter has no SIP code; its twin, and the sanitizer
 * builds, are that build.) So the binary does not link it; the first parse
 * loads it (SPIM_OSIP_SONAME, the soname found at build time) with dlopen
 * and each call is forwarded. spim__osip_load() says why when it cannot be
 * loaded; `serve` checks it before it opens its sockets.
 */
#include "filter_int.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <osip2/osip.h>
#include <osipparser2/osip_parser.h>

#ifndef SPIM_OSIP_SONAME
#define SPIM_OSIP_SONAME "libosipparser2.so.15"
#endif

static struct {
    int (*message_init)(osip_message_t **);
    void (*message_free)(osip_message_t *);
    int (*message_parse)(osip_message_t *, const char *, size_t);
    void (*trace_initialize_func)(osip_trace_level_t, osip_trace_func_t *);
    void (*trace_disable_level)(osip_trace_level_t);
    int (*parser_init)(void);
} lib;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void load(void)
{
    void *h = dlopen(SPIM_OSIP_SONAME, RTLD_NOW | RTLD_LOCAL);
    const char *why;

    if (h == NULL) {
        why = dlerror();
        snprintf(load_error, sizeof(load_error), "cannot load %s: %s", SPIM_OSIP_SONAME,
                 why ? why : "unknown error");
        return;
    }
    if (spim_dl_function(h, "osip_message_init", &lib.message_init, sizeof(lib.message_init)) !=
            0 ||
        spim_dl_function(h, "osip_message_free", &lib.message_free, sizeof(lib.message_free)) !=
            0 ||
        spim_dl_function(h, "osip_message_parse", &lib.message_parse, sizeof(lib.message_parse)) !=
            0 ||
        spim_dl_function(h, "osip_trace_initialize_func", &lib.trace_initialize_func,
                         sizeof(lib.trace_initialize_func)) != 0 ||
        spim_dl_function(h, "osip_trace_disable_level", &lib.trace_disable_level,
                         sizeof(lib.trace_disable_level)) != 0 ||
        spim_dl_function(h, "parser_init", &lib.parser_init, sizeof(lib.parser_init)) != 0) {
        why = dlerror();
        snprintf(load_error, sizeof(load_error), "%s: %s", SPIM_OSIP_SONAME,
                 why ? why : "a symbol is missing");
        memset(&lib, 0, sizeof(lib));
        dlclose(h);
    }
    /* A loaded library stays: parsed messages hold its allocations. */
}

int spim__osip_load(char *err, size_t errcap)
{
    pthread_once(&load_once, load);
    if (lib.message_init != NULL)
        return 0;
    if (err != NULL && errcap > 0)
        snprintf(err, errcap, "%s", load_error);
    return SPIM_EIO;
}

/* The forwarders: only called after spim__osip_load() succeeded. */
int osip_message_init(osip_message_t **sip)
{
    return lib.message_init ? lib.message_init(sip) : OSIP_UNDEFINED_ERROR;
}

void osip_message_free(osip_message_t *sip)
{
    if (lib.message_free)
        lib.message_free(sip);
}

int osip_message_parse(osip_message_t *sip, const char *buf, size_t length)
{
    return lib.message_parse ? lib.message_parse(sip, buf, length) : OSIP_UNDEFINED_ERROR;
}

void osip_trace_initialize_func(osip_trace_level_t level, osip_trace_func_t *func)
{
    if (lib.trace_initialize_func)
        lib.trace_initialize_func(level, func);
}

void osip_trace_disable_level(osip_trace_level_t level)
{
    if (lib.trace_disable_level)
        lib.trace_disable_level(level);
}

int parser_init(void)
{
    return lib.parser_init ? lib.parser_init() : OSIP_UNDEFINED_ERROR;
}
