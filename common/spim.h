/*
 * spim.h: what every spimfilter module shares.
 *
 * One error enum made from one list (SPIM_ERR_MAP), counted slices into a
 * message, the token record that flows tokenizer -> store -> bayes, a
 * diagnostic that says where an input was bad, and a 64-bit hash.
 * Functions return 0 or a negative SPIM_E* value; errno, OSIP_*, HS_* and
 * MDB_* codes are translated at the module edge and never leak out.
 */
#ifndef SPIM_H
#define SPIM_H

#include <stddef.h>
#include <stdint.h>

/* clang-format off */
#define SPIM_ERR_MAP(XX)                                           \
    XX(NOMEM,    "out of memory")                                  \
    XX(INVAL,    "invalid argument")                               \
    XX(IO,       "input/output error")                             \
    XX(PARSE,    "malformed input")                                \
    XX(NOTFOUND, "not found")                                      \
    XX(EXISTS,   "already exists")                                 \
    XX(FULL,     "store is full")                                  \
    XX(STORE,    "store error")                                    \
    XX(VERSION,  "store has another format version")               \
    XX(RULES,    "rules failed to compile")                        \
    XX(TOOBIG,   "input too large")                                \
    XX(NET,      "network error")                                  \
    XX(TIMEOUT,  "timed out")
/* clang-format on */

enum spim_err {
    SPIM_OK = 0,
#define XX(name, msg) SPIM_E##name,
    SPIM__ERR_FIRST = -100,
    SPIM_ERR_MAP(XX)
#undef XX
};

/* Human-readable text for a SPIM_E* code (or 0). Never NULL, static. */
const char *spim_strerror(int err);

/* A counted view into bytes owned by someone else; never NUL-terminated. */
struct spim_slice {
    const char *p;
    size_t len;
};

/*
 * A token of a message: its 64-bit hash key and, once the store has looked
 * it up, how many ham and spam messages of the training set contained it.
 */
struct spim_token {
    uint64_t key;
    uint32_t ham, spam;
};

/* Totals of trained messages, the denominators of the Bayes estimate. */
struct spim_totals {
    uint64_t ham_msgs, spam_msgs;
};

/* Where an input went wrong: filled by parsers that take it (may be NULL). */
struct spim_diag {
    char file[256];
    unsigned line, column;
    char msg[256];
};

/*
 * A text appender into a fixed buffer that counts what it could not write,
 * as snprintf does: after the last spim_put, len >= cap means "cut, call
 * again with len + 1 bytes". buf stays NUL-terminated while cap > 0.
 */
struct spim_out {
    char *buf;
    size_t cap, len;
};
void spim_put(struct spim_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* printf-style fill of a diag; a NULL diag is ignored. */
void spim_diag_set(struct spim_diag *d, const char *file, unsigned line, unsigned column,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Fixed-width little-endian encoders (store records, cache files): the
 * format is explicit, never the host's layout. */
static inline void spim_put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t spim_get_le32(const unsigned char *p)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static inline void spim_put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t spim_get_le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* 64-bit hash of bytes (xxHash XXH3), seeded; stable across runs and hosts. */
uint64_t spim_hash64(const void *p, size_t len, uint64_t seed);

/*
 * For the libraries loaded at first use (filter/osip_lazy.c, cli/mhd_lazy.c):
 * the function name of the dlopen handle h into *slot, a function pointer of
 * size bytes (stored through memcpy, as POSIX allows). 0, or -1 if missing.
 */
int spim_dl_function(void *h, const char *name, void *slot, size_t size);

/* Wall clock in microseconds and monotonic clock in nanoseconds. */
int64_t spim_now_us(void);
uint64_t spim_mono_ns(void);

/* --- Logging: one line per event to stderr, with a level. --- */
enum spim_log_level { SPIM_LOG_ERR = 0, SPIM_LOG_WARN, SPIM_LOG_INFO, SPIM_LOG_DEBUG };
/* The most verbose level printed (default SPIM_LOG_INFO). */
void spim_log_set_level(int level);
int spim_log_enabled(int level);
void spim_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
