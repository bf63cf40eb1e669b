/*
 * policy.h: the site's policy beside the spam checks.
 *
 * spim_policy_*  exclusion (allow) and block lists of sender URIs (exact or
 *                *@domain), domains (with their subdomains), source networks
 *                (CIDR) and User-Agent patterns, loaded from files; and the
 *                file-transfer policy (blocked/allowed types and extensions,
 *                a maximum size). A loaded struct spim_policy is immutable:
 *                any number of threads may look up in it at once; a reload
 *                builds a new one beside it.
 * spim_clamd_*   one scan of a payload by clamd over its INSTREAM command.
 * spim_rate_*    bounded, thread-safe counters of distinct members per key in
 *                a window: fan-out (recipients per sender) and bulk
 *                (recipients per normalised text).
 *
 * Nothing here knows SIP beyond a URI and a User-Agent value. Every lookup
 * costs a bounded number of hash probes and binary searches whatever the
 * size of the lists, except User-Agent patterns with a wildcard anywhere
 * but at the end, which are matched one by one (see docs/policy.md).
 */
#ifndef SPIM_POLICY_H
#define SPIM_POLICY_H

#include "spim.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* clang-format off */
/* What is blocked when the config says nothing: executables, scripts, installers. */
#define SPIM_POLICY_DEFAULT_BLOCK_EXT                                                   \
    "exe,scr,com,pif,bat,cmd,js,jse,vbs,vbe,ps1,psm1,msi,msp,jar,wsf,wsh,hta,cpl,dll,"  \
    "lnk,reg,vb,ws,sct,shb,shs,msc,gadget,inf,ins,isp,apk,app,xll,sh"
#define SPIM_POLICY_DEFAULT_BLOCK_TYPES                                                 \
    "application/x-msdownload,application/x-dosexec,application/x-msdos-program,"      \
    "application/x-ms-installer,application/x-msi,application/java-archive,"           \
    "application/x-java-archive,application/x-sh,application/javascript,"              \
    "application/x-javascript,text/javascript,application/hta,application/x-bat,"      \
    "application/vnd.microsoft.portable-executable"
/* clang-format on */

/* Which list a lookup answered from. */
enum spim_policy_list {
    SPIM_POLICY_NONE = 0,  /* in no list */
    SPIM_POLICY_ALLOW = 1, /* excluded: deliver without the spam and file checks */
    SPIM_POLICY_BLOCK = 2, /* always block */
};

struct spim_policy;

/* The file-transfer policy: comma-separated lists, NULL or "" for none. */
struct spim_policy_files_conf {
    const char *block_ext, *allow_ext;     /* extensions, without the dot, any case */
    const char *block_types, *allow_types; /* "type/sub" or "type/ *" (no space) */
    uint64_t max_size;                     /* bytes; 0: no limit */
};

/* An empty policy: no lists, no file rules. *out set only on success. */
int spim_policy_new(struct spim_policy **out);
/* NULL is a no-op. */
void spim_policy_free(struct spim_policy *p);

/*
 * Loads the list file path into list which (SPIM_POLICY_ALLOW or _BLOCK),
 * adding to what it holds. One entry a line, `KIND VALUE`, '#' starts a
 * comment:
 *     uri    sip:alice@example.com   (scheme, port and parameters ignored)
 *     uri    *@example.com           (any user of exactly that domain)
 *     domain example.com             (that domain and its subdomains)
 *     net    192.0.2.0/24            (IPv4 or IPv6, a bare address is /32 or /128)
 *     ua     Linphone*               (User-Agent glob, '*' and '?', case-insensitive)
 * A bad line: SPIM_EPARSE with file and line in d. SPIM_EIO when the file
 * cannot be read, SPIM_ETOOBIG past 10,000,000 entries.
 */
int spim_policy_load_list(struct spim_policy *p, enum spim_policy_list which, const char *path,
                          struct spim_diag *d);
/* Entries of a list. */
size_t spim_policy_count(const struct spim_policy *p, enum spim_policy_list which);

/* Sets the file policy; a bad extension or type: SPIM_EINVAL, with what in d. */
int spim_policy_set_files(struct spim_policy *p, const struct spim_policy_files_conf *fc,
                          struct spim_diag *d);

/* Who sent a message: all fields optional (empty slice, NULL). */
struct spim_policy_who {
    struct spim_slice uri;        /* the From URI: sip:user@host:port;params */
    struct spim_slice user_agent; /* the User-Agent value */
    const struct sockaddr *src;   /* AF_INET or AF_INET6 (v4-mapped is taken as v4) */
};

/*
 * Looks w up in the block list, then the allow list (a block entry wins).
 * Returns the list that matched and writes the entry that decided into
 * entry, e.g. "block:net:198.51.100.0/24" or "allow:domain:example.com"
 * (the value as written in the list file, cut to fit cap).
 */
enum spim_policy_list spim_policy_lookup(const struct spim_policy *p,
                                         const struct spim_policy_who *w, char *entry, size_t cap);

/*
 * Applies the file policy to one payload: its Content-Type (parameters
 * ignored), file name (may be empty) and size. Returns 1 when blocked,
 * with the reason in entry ("file:ext:exe", "file:type:application/
 * x-msdownload", "file:size:20000000>10485760", "file:not-allowed:pdf"),
 * else 0. A blocked type or extension wins over an allowed one; when an
 * allow list is set, a file matching none of its entries is blocked.
 */
int spim_policy_file(const struct spim_policy *p, struct spim_slice content_type,
                     struct spim_slice name, uint64_t size, char *entry, size_t cap);

/* The URI without scheme, port and parameters, lower-cased: "user@host". Returns the length. */
size_t spim_policy_uri_norm(struct spim_slice uri, char *out, size_t cap);

/*
 * The key of a text for bulk counting: lower-cased, runs of digits as one
 * '#', anything not a letter or digit as one space, trimmed. *norm_len gets
 * the length of the normalised text (short texts are not counted as bulk).
 */
uint64_t spim_policy_text_key(const char *text, size_t len, size_t *norm_len);

/* --- clamd ------------------------------------------------------------------ */

/*
 * Streams data[0..len) to the clamd listening on the Unix socket
 * socket_path (INSTREAM) and waits at most timeout_ms for each step.
 * Returns 0 when clamd says OK, 1 when it says FOUND (the signature name in
 * found), or SPIM_ENET (cannot connect, or clamd answered an error, its
 * reply in found), SPIM_ETIMEOUT, SPIM_EINVAL.
 */
int spim_clamd_scan(const char *socket_path, const void *data, size_t len, unsigned timeout_ms,
                    char *found, size_t cap);

/* --- Rate counters ------------------------------------------------------------ */

/*
 * Counts distinct members (recipients) per key (sender, text) in a window
 * that opens at a key's first message and restarts window_s seconds later.
 * Memory is fixed at creation: keys and pairs slots (each rounded up to a
 * power of two); when full, the oldest of a few probed slots is reused, so
 * a flood of new keys forgets old ones but never grows. One mutex guards a
 * tracker: it is shared by all the workers of a process.
 */
struct spim_rate;

int spim_rate_new(size_t keys, size_t pairs, struct spim_rate **out);
void spim_rate_free(struct spim_rate *r);
/* Bytes the tracker holds. */
size_t spim_rate_memory(const struct spim_rate *r);
/*
 * Records that key sent to member at now_s (seconds, monotonic) and returns
 * how many distinct members key reached in its current window, this one
 * included.
 */
unsigned spim_rate_observe(struct spim_rate *r, uint64_t key, uint64_t member, unsigned window_s,
                           uint64_t now_s);

#endif
