/*
 * mhd_lazy.c: libmicrohttpd, loaded when serve first starts the metrics
 * endpoint instead of when any spimfilter process starts.
 *
 * Linked the usual way, libmicrohttpd brings GnuTLS and eight more shared
 * libraries (p11-kit, nettle, gmp, ...) into every process: mapping and
 * relocating them and running their constructors takes about 2.7 ms, which
 * is a third of what `spimfilter classify --tsv` of a thousand messages
 * should take in all. Only `serve` with metrics_listen set uses it. So the
 * binary does not link it: these are the six functions cli/metrics_http.c
 * calls, with the signatures of <microhttpd.h>; the first call loads the
 * library (SPIM_MHD_SONAME, set by the build) with dlopen, and each call is
 * forwarded. If it cannot be loaded, MHD_start_daemon returns NULL, as it
 * does for any failure to start, after logging dlerror()'s reason; the
 * other functions are only ever called on what a started daemon handed out.
 */
#include "spim.h"

#include <dlfcn.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#ifndef SPIM_MHD_SONAME
#define SPIM_MHD_SONAME "libmicrohttpd.so.12"
#endif

static struct {
    struct MHD_Daemon *(*start_va)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                                   MHD_AccessHandlerCallback, void *, va_list);
    void (*stop)(struct MHD_Daemon *);
    struct MHD_Response *(*from_buffer)(size_t, void *, enum MHD_ResponseMemoryMode);
    enum MHD_Result (*add_header)(struct MHD_Response *, const char *, const char *);
    enum MHD_Result (*queue)(struct MHD_Connection *, unsigned int, struct MHD_Response *);
    void (*destroy)(struct MHD_Response *);
} mhd;

static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;

static void mhd_load(void)
{
    void *h = dlopen(SPIM_MHD_SONAME, RTLD_NOW | RTLD_LOCAL);

    if (h == NULL) {
        spim_log(SPIM_LOG_ERR, "metrics: cannot load %s: %s", SPIM_MHD_SONAME, dlerror());
        return;
    }
    if (spim_dl_function(h, "MHD_start_daemon_va", &mhd.start_va, sizeof(mhd.start_va)) != 0 ||
        spim_dl_function(h, "MHD_stop_daemon", &mhd.stop, sizeof(mhd.stop)) != 0 ||
        spim_dl_function(h, "MHD_create_response_from_buffer", &mhd.from_buffer,
                         sizeof(mhd.from_buffer)) != 0 ||
        spim_dl_function(h, "MHD_add_response_header", &mhd.add_header, sizeof(mhd.add_header)) !=
            0 ||
        spim_dl_function(h, "MHD_queue_response", &mhd.queue, sizeof(mhd.queue)) != 0 ||
        spim_dl_function(h, "MHD_destroy_response", &mhd.destroy, sizeof(mhd.destroy)) != 0) {
        spim_log(SPIM_LOG_ERR, "metrics: %s: %s", SPIM_MHD_SONAME, dlerror());
        memset(&mhd, 0, sizeof(mhd));
        dlclose(h);
    }
    /* A loaded library stays: a daemon's thread runs its code until stop. */
}

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    struct MHD_Daemon *d;
    va_list ap;

    pthread_once(&mhd_once, mhd_load);
    if (mhd.start_va == NULL)
        return NULL;
    va_start(ap, dh_cls);
    d = mhd.start_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

void MHD_stop_daemon(struct MHD_Daemon *daemon)
{
    if (mhd.stop != NULL)
        mhd.stop(daemon);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
    return mhd.from_buffer != NULL ? mhd.from_buffer(size, buffer, mode) : NULL;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response, const char *header,
                                        const char *content)
{
    return mhd.add_header != NULL ? mhd.add_header(response, header, content) : MHD_NO;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                                   struct MHD_Response *response)
{
    return mhd.queue != NULL ? mhd.queue(connection, status_code, response) : MHD_NO;
}

void MHD_destroy_response(struct MHD_Response *response)
{
    if (mhd.destroy != NULL)
        mhd.destroy(response);
}
