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

/*
 * The URI without scheme, port and parameters, lower-cased: "user@host"
 * (parameters of the user part, as in sip:+1555;verstat=x@host;user=phone,
 * dropped too). A quoted display name is skipped, whatever it holds, so
 * "\"<sip:ceo@corp>\" <sip:x@y>" is "x@y". Returns the length (0: none).
 */
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

/* --- Shadow list entries ---------------------------------------------------------
 * A list line may end with the word `shadow` (`uri sip:x@example.com shadow`,
 * `net 10.0.0.0/8 shadow`): the entry is kept apart and never decides;
 * spim_policy_lookup and spim_policy_count see only the other entries. (A
 * User-Agent that really ends in " shadow" is written with a '?' for one of
 * its letters.)
 */
/*
 * Like spim_policy_lookup over the entries marked shadow only: what they
 * would have decided (entry as "block:uri:...").
 */
enum spim_policy_list spim_policy_lookup_shadow(const struct spim_policy *p,
                                                const struct spim_policy_who *w, char *entry,
                                                size_t cap);
/* Shadow entries of a list. */
size_t spim_policy_count_shadow(const struct spim_policy *p, enum spim_policy_list which);

/* --- Contacts table ----------------------------------------------------------------
 * The contacts table of a running serve: what the store's contacts hold,
 * cached, plus the updates not yet written. Lookups and updates are in
 * memory; spim_contacts_table_dirty hands the updates to the caller, who
 * writes them with spim_contacts_put_many (serve does so about once a
 * second), so a busy filter does one write a second, not one per message.
 *
 * Memory is fixed at creation (slots rounded up to a power of two, at least
 * 64, at most 2^30); one mutex guards the table, shared by all the workers
 * of a process. A pair lives in one of PROBES (8) slots from its hash; a new
 * pair takes an empty slot, else the least recently used clean one, else
 * (every probed slot holds an unwritten update) the least recently used
 * dirty one, whose update is then lost and counted
 * (spim_contacts_table_dirty_evictions). A flood of new pairs therefore
 * forgets old clean entries first and never grows the table.
 *
 * A delivered message may come before the store was read for its pair (the
 * entry was evicted between the verdict's lookup and the delivery, or the
 * caller skipped the lookup): _delivered then makes an entry that holds
 * "+1 this direction, store not read yet". Such an entry is not answered by
 * _get (0: read the store) and not handed by _dirty (its counts are not the
 * pair's); _fill merges the store's record into it (the counts added, the
 * later days kept), after which it is handed like any other update.
 * spim_contacts_table_unfilled lists the entries still waiting, so that the
 * flush can read the store for them and none waits forever.
 */
struct spim_contact; /* store.h */
struct spim_contacts_table;

/* *out set only on success: SPIM_ENOMEM, SPIM_EINVAL (out NULL). */
int spim_contacts_table_new(size_t slots, struct spim_contacts_table **out);
/* NULL is a no-op. */
void spim_contacts_table_free(struct spim_contacts_table *t);
/* Bytes the table holds (fixed at creation). */
size_t spim_contacts_table_memory(const struct spim_contacts_table *t);

/* What one party (from) knows of another (to), from from's point of view. */
struct spim_contact_view {
    uint32_t sent, received;         /* delivered from->to, to->from */
    uint32_t sent_day, received_day; /* day of the last one; 0: never */
};
/*
 * 1: in the table, *v filled; 0: not there (the caller reads the store and
 * calls _fill). A party writing to itself (from == to) has sent == received.
 */
int spim_contacts_table_get(struct spim_contacts_table *t, uint64_t from, uint64_t to,
                            struct spim_contact_view *v);
/*
 * Caches a record read from the store (or a zero record with lo/hi set for
 * "none"). Never overwrites a dirty entry. A clean entry is replaced by c
 * (the store is newer); an entry waiting for the store gets c merged in
 * (see above). When every probed slot is dirty the record is not cached (a
 * clean entry never evicts an update). lo > hi is taken in the other order.
 */
void spim_contacts_table_fill(struct spim_contacts_table *t, const struct spim_contact *c);
/*
 * One delivered message from->to on day: count and day updated in memory,
 * entry marked dirty. Counts saturate at UINT32_MAX; the day kept is the
 * later one. A pair silent for more than forget_days (0: never forgotten)
 * starts over: its old counts, in the table or merged from the store when
 * it is filled later, are dropped rather than counted on, so a stranger is
 * not made a contact again by what the pair did long ago.
 */
void spim_contacts_table_delivered(struct spim_contacts_table *t, uint64_t from, uint64_t to,
                                   uint32_t day, uint32_t forget_days);
/*
 * Copies at most cap dirty records to out, marks them clean, returns how
 * many. The records are the pair's whole counts (store + updates), for
 * spim_contacts_put_many, oldest update first; a later _delivered makes the
 * entry dirty again and it is handed again. If the write then fails, give
 * the records back with spim_contacts_table_redirty.
 */
size_t spim_contacts_table_dirty(struct spim_contacts_table *t, struct spim_contact *out,
                                 size_t cap);
/*
 * Marks the entries of the n records (handed by _dirty, whose write failed)
 * dirty again, if they are still in the table and nothing newer came.
 */
void spim_contacts_table_redirty(struct spim_contacts_table *t, const struct spim_contact *c,
                                 size_t n);
/*
 * Copies at most cap pairs whose entry waits for the store (see above) to
 * out (lo, hi; the counts are the updates waiting) and returns how many;
 * nothing changes. The caller reads each with spim_contacts_get and gives
 * it to _fill (a zero record when the store has none).
 */
size_t spim_contacts_table_unfilled(struct spim_contacts_table *t, struct spim_contact *out,
                                    size_t cap);
/* Updates lost so far because a dirty entry was evicted (for serve's log). */
uint64_t spim_contacts_table_dirty_evictions(const struct spim_contacts_table *t);

/* --- Recipient policy file -----------------------------------------------------------
 * The policy file: INI sections, one per recipient "user@domain", per domain
 * "@domain" (that domain and, unless a more specific section says otherwise,
 * its subdomains: "@example.com" covers "@chat.example.com"), and "[*]" as the
 * default. Keys (all optional; absent means "as the config says"):
 *     tag_score = 2.5        block_score = 6
 *     action = block|drop|tag|deliver   what a message scored as spam gets:
 *              block (403 + quarantine), drop (200 + quarantine, silent),
 *              tag (delivered with the X-SPIM headers), deliver (untouched)
 *     contacts_only = off|tag|block|drop   every message from a stranger (no
 *              established pair) gets this, whatever its score
 *     shadow = yes|no   evaluate this section and log what it would have done,
 *              but enforce the config's defaults
 * A bad line: SPIM_EPARSE with file:line and what was wrong in d.
 *
 * Syntax is inih's (the config file's): `;` or `#` starts a comment line,
 * ` ;` an inline one; keys and values may be indented (leading blanks are
 * dropped, there are no continuation lines). Names compare without case, as
 * spim_policy_uri_norm lower-cases the whole address. Errors with file:line:
 * a bad or duplicate section name, a key before any section, an unknown or
 * repeated key, a bad value (scores are finite, within +-1000; tag_score
 * above block_score in one section), a line longer than inih's line buffer
 * allows (198 bytes after its leading blanks), a NUL byte. Bounds:
 * 1,000,000 sections, 64 MiB of file, section names of 127 bytes. SPIM_EIO
 * when the file cannot be read, SPIM_ETOOBIG past a bound (both with d set).
 */
enum spim_rcpt_action {
    SPIM_RCPT_UNSET = -1,
    SPIM_RCPT_DELIVER = 0,
    SPIM_RCPT_TAG = 1,
    SPIM_RCPT_BLOCK = 2,
    SPIM_RCPT_DROP = 3,
    SPIM_RCPT_OFF = 4 /* contacts_only = off */
};
struct spim_rcpt_policy {
    char name[128]; /* the section as written: "bob@example.com", "@example.com", "*" */
    unsigned line;  /* where the section starts */
    int has_tag_score, has_block_score;
    double tag_score, block_score;
    int action;        /* enum spim_rcpt_action, UNSET when absent */
    int contacts_only; /* SPIM_RCPT_OFF/TAG/BLOCK/DROP, UNSET when absent */
    int shadow;
};
struct spim_rcpts;
/* *out set only on success. An empty file (or only comments) loads with no section. */
int spim_rcpts_load(const char *path, struct spim_rcpts **out, struct spim_diag *d);
/* NULL is a no-op. */
void spim_rcpts_free(struct spim_rcpts *p);
/* Sections loaded (0 for NULL). */
size_t spim_rcpts_count(const struct spim_rcpts *p);
/*
 * The section for a normalised "user@host" (see spim_policy_uri_norm):
 * exact, then the domain and its parents, then "*"; NULL when none.
 * Immutable: any threads at once. One hash probe per candidate: the
 * address, then each domain from the host up (at most 128 labels), then
 * "*". An address without '@' is taken as a host. The result lives as long
 * as p.
 */
const struct spim_rcpt_policy *spim_rcpts_lookup(const struct spim_rcpts *p, const char *addr,
                                                 size_t len);

#endif
