/*
 * store.h: spimfilter's embedded store (LMDB): token counts and quarantine.
 *
 * One directory holds one LMDB environment with named databases for token
 * counts, meta keys (format version, message totals), the quarantine and its
 * de-duplication index. One struct spim_store per directory per process; it
 * is safe to share between threads. Training writes in one transaction per
 * batch while any number of readers (threads of this process, or other
 * processes such as a running `serve`) go on: a reader sees each committed
 * batch at its next lookup, without a restart.
 *
 * Files are created 0600 and a new directory 0700: the quarantine holds
 * private messages. All functions return 0 or a negative SPIM_E* code.
 */
#ifndef SPIM_STORE_H
#define SPIM_STORE_H

#include "spim.h"

#include <stdint.h>

struct spim_store;

enum {
    SPIM_STORE_CREATE = 1 << 0, /* create the directory and store if missing */
    SPIM_STORE_RDONLY = 1 << 1, /* never write (classify, list) */
};

/* Format version written to new stores; open fails with SPIM_EVERSION on another. */
#define SPIM_STORE_FORMAT 1

/*
 * Opens the store in dir. map_size is the initial LMDB map size in bytes
 * (0: the default, 1 GiB, sparse); it grows on MDB_MAP_FULL and the write retries.
 * *out is set only on success. Missing store without SPIM_STORE_CREATE:
 * SPIM_ENOTFOUND.
 */
int spim_store_open(const char *dir, unsigned flags, size_t map_size, struct spim_store **out);
/* Closes; NULL is a no-op. No reader or batch of it may be alive. */
void spim_store_close(struct spim_store *st);
/*
 * Drops this process's page-table entries of the map (MADV_DONTNEED on the
 * shared, read-only mapping: the data stays in the file and the page cache,
 * and is faulted in again when read). A long-running serve calls it now and
 * then, so that quarantine pages it once touched do not stay in its RSS.
 */
void spim_store_release_pages(struct spim_store *st);
/* The current map size in bytes (grows on MDB_MAP_FULL). */
size_t spim_store_map_size(const struct spim_store *st);

/* --- Training -------------------------------------------------------------
 * A batch gathers counts in memory; commit writes them all in one LMDB write
 * transaction (keys sorted), growing the map and retrying on MDB_MAP_FULL.
 * Nothing of a batch is visible, or written, before commit.
 */
struct spim_store_batch;

int spim_store_batch_new(struct spim_store *st, struct spim_store_batch **out);
/*
 * Adds one message: its distinct tokens (keys only are read; duplicates are
 * counted once) as spam or ham. delta is +1 to learn, -1 to unlearn (counts
 * never go below zero).
 */
int spim_store_batch_add(struct spim_store_batch *b, const struct spim_token *toks, size_t n,
                         int is_spam, int delta);
/* Writes the batch and frees it, whatever the outcome. */
int spim_store_batch_commit(struct spim_store_batch *b);
/* Frees a batch without writing anything; NULL is a no-op. */
void spim_store_batch_free(struct spim_store_batch *b);

/* --- Lookup ---------------------------------------------------------------
 * A reader belongs to one thread and keeps one LMDB read transaction that is
 * reset between lookups and renewed at the next, so it always sees the last
 * committed training.
 */
struct spim_store_reader;

int spim_store_reader_new(struct spim_store *st, struct spim_store_reader **out);
/*
 * A reader for a batch (classify --tsv, eval): its read transaction stays live
 * between lookups, so the token index is read where it lies in the map instead
 * of being copied. Every 64 lookups it checks for a newer commit and, if there
 * is one, moves to it: a commit (by serve, by train) is seen within 64
 * messages, and the pages freed meanwhile are kept from reuse no longer than
 * that. Before anything that may block (a write to a pipe, a read from a
 * terminal), spim_store_reader_release() ends the transaction; the next lookup
 * takes a new one. Free it in the thread that made it. While its transaction
 * is live, the store's map cannot be remapped in this process: a write from
 * its thread that needs a larger map fails with SPIM_EFULL, and one from
 * another thread waits for the release.
 */
int spim_store_reader_snapshot(struct spim_store *st, struct spim_store_reader **out);
/* A snapshot reader ends its read transaction until its next lookup (others: no-op). */
void spim_store_reader_release(struct spim_store_reader *r);
void spim_store_reader_free(struct spim_store_reader *r);
/*
 * Fills toks[i].ham and .spam for every token (0 when unknown) and *totals.
 * Counts read are kept in a per-reader cache while no training is committed.
 */
int spim_store_lookup(struct spim_store_reader *r, struct spim_token *toks, size_t n,
                      struct spim_totals *totals);
/*
 * A hint that key will be looked up soon: starts fetching the slot of the
 * reader's whole token table where it is (nothing without one). Never fails,
 * reads nothing else; call it from the reader's thread.
 */
void spim_store_prefetch(const struct spim_store_reader *r, uint64_t key);
/* Totals only. */
int spim_store_totals(struct spim_store *st, struct spim_totals *totals);

/* --- Quarantine -----------------------------------------------------------
 * A held message: the whole original SIP request and its verdict. Each
 * record has a 64-bit id that grows with time and a de-duplication key (the
 * filter uses a hash of the request's transaction identity) so a
 * retransmission maps to the record already written.
 */
enum spim_quar_status {
    SPIM_QUAR_HELD = 0,
    SPIM_QUAR_RELEASED = 1,
    SPIM_QUAR_DELETED = 2,
};

struct spim_quar_entry {
    uint64_t id;     /* set by put */
    int64_t time_us; /* wall clock of the block */
    uint32_t status; /* enum spim_quar_status */
    double score;
    double spam_probability;
    uint64_t dedup_key;
    struct spim_slice from, to, call_id, source; /* source: "ip:port" */
    struct spim_slice rules;                     /* rule names, comma-separated */
    struct spim_slice reasons;                   /* free text: why it was blocked */
    struct spim_slice text;                      /* the extracted text */
    struct spim_slice raw;                       /* the SIP request, byte for byte */
    uint32_t learned; /* enum spim_quar_learned: what review trained it as */
};

/* What a review command trained a record as, so that a later one can undo it. */
enum spim_quar_learned {
    SPIM_QUAR_LEARNED_NONE = 0,
    SPIM_QUAR_LEARNED_SPAM = 1, /* confirm */
    SPIM_QUAR_LEARNED_HAM = 2,  /* release --learn */
};

/*
 * Writes e (e->id is ignored) and commits before returning, so the caller may
 * answer only after the message is safe. If a record with e->dedup_key
 * exists, nothing is written, *id_out is its id and *existed is 1.
 */
int spim_quar_put(struct spim_store *st, const struct spim_quar_entry *e, uint64_t *id_out,
                  int *existed);
/*
 * Reads one record. The slices of *out point into *buf_out, which the caller
 * frees with free(). SPIM_ENOTFOUND for an unknown id.
 */
int spim_quar_get(struct spim_store *st, uint64_t id, struct spim_quar_entry *out, void **buf_out);
/*
 * Calls cb for every record, newest first, inside one read transaction: the
 * slices live only during the call. cb returns 0 to go on, non-zero to stop.
 */
int spim_quar_foreach(struct spim_store *st, int (*cb)(const struct spim_quar_entry *e, void *ud),
                      void *ud);
/* Removes a record and its de-duplication key. SPIM_ENOTFOUND if absent. */
int spim_quar_delete(struct spim_store *st, uint64_t id);
/* Changes the status of a record. SPIM_ENOTFOUND if absent. */
int spim_quar_set_status(struct spim_store *st, uint64_t id, uint32_t status);

/*
 * spim_quar_put with a quota: when the quarantine already uses max_bytes or
 * more (its B-tree pages, see spim_quar_usage) nothing is written, *over is
 * set to 1 and 0 is returned; a retransmission of a record already held still
 * maps to it (*existed 1). max_bytes 0 means no quota. The size check and the
 * write are one transaction, so concurrent writers never overshoot by more
 * than one record each.
 */
int spim_quar_put_quota(struct spim_store *st, const struct spim_quar_entry *e, uint64_t max_bytes,
                        uint64_t *id_out, int *existed, int *over);
/*
 * n records in ONE committed write transaction (one sync: the group commit
 * of serve), each as spim_quar_put_quota would; ids, existed and over get
 * one value per record. A later record sees the earlier ones (a
 * retransmission in the same group is found by its de-duplication key).
 */
int spim_quar_put_many(struct spim_store *st, const struct spim_quar_entry *const *e, size_t n,
                       uint64_t max_bytes, uint64_t *ids, int *existed, int *over);

/* How big the quarantine is: records and the bytes of its LMDB pages. */
struct spim_quar_usage {
    uint64_t records;
    uint64_t bytes;
};

int spim_quar_usage(struct spim_store *st, struct spim_quar_usage *out);

/*
 * One line of the audit log ("audit" database): who did what to which
 * record. seq is set by the store (grows by one per entry); time_us 0 means
 * now. The slices are copied on write and borrowed on read (valid during
 * the foreach callback only).
 */
struct spim_quar_audit {
    uint64_t seq;
    int64_t time_us;
    uint64_t quar_id; /* 0 for an action on no single record (purge) */
    struct spim_slice action, user, detail;
};

/* Appends one audit entry in its own transaction. */
int spim_quar_audit_add(struct spim_store *st, const struct spim_quar_audit *a);
/*
 * Calls cb for every audit entry, newest first, in one read transaction
 * (the rules of spim_quar_foreach). A store without an audit log walks
 * nothing and returns 0.
 */
int spim_quar_audit_foreach(struct spim_store *st,
                            int (*cb)(const struct spim_quar_audit *a, void *ud), void *ud);

/*
 * Sets the status and learned flag of a record and, when a is not NULL,
 * appends a (its quar_id becomes id) in the same transaction: a review
 * action and its audit line are written together or not at all.
 * SPIM_ENOTFOUND if absent, SPIM_EINVAL for a bad status or flag.
 */
int spim_quar_mark(struct spim_store *st, uint64_t id, uint32_t status, uint32_t learned,
                   const struct spim_quar_audit *a);

enum {
    SPIM_QUAR_PURGE_DELETED = 1 << 0, /* also remove every record marked deleted */
};

/*
 * Removes every record older than before_us (any status), and with
 * SPIM_QUAR_PURGE_DELETED every deleted one, with their de-duplication keys.
 * Works in transactions of a bounded size so a running serve is never held
 * up for long. dry_run counts without removing. *removed gets the count.
 */
int spim_quar_purge(struct spim_store *st, int64_t before_us, unsigned flags, int dry_run,
                    uint64_t *removed);

/* --- Stats, prune, learned-message cache ------------------------------------
 * Token values are uint32 ham, uint32 spam and uint32 day (days since the
 * Unix epoch of the last training that touched the token); values of 8
 * bytes (no day) from earlier builds are read as day 0, never pruned by age.
 * The "learned" database maps a 64-bit hash of a message's text to the
 * label it was learned with (1 byte: 0 ham, 1 spam) and the day (uint32),
 * so that learning the same message twice counts it once.
 */
struct spim_store_stats {
    uint64_t tokens; /* distinct tokens with a count */
    uint64_t ham_msgs, spam_msgs;
    uint64_t learned;    /* messages in the learned-message cache */
    uint64_t file_bytes; /* size of data.mdb */
    uint64_t disk_bytes; /* blocks data.mdb takes on disk */
    uint64_t used_bytes; /* pages holding data: up to the last page used, less the free ones */
    uint64_t free_bytes; /* pages on LMDB's free list, reused before the file grows */
    uint64_t map_size;
};

/* Fills *out in one read transaction. */
int spim_store_stats(struct spim_store *st, struct spim_store_stats *out);

/*
 * Drops tokens seen in fewer than min_count messages (ham + spam; 0: no such
 * test) or, if max_age_days > 0, last trained more than max_age_days before
 * now_us (learned-cache entries that old are dropped too). One write
 * transaction; *removed (may be NULL) gets the number of tokens dropped and
 * *learned_removed (may be NULL) the cache entries. dry_run counts only.
 */
int spim_store_prune(struct spim_store *st, uint32_t min_count, uint32_t max_age_days,
                     int64_t now_us, int dry_run, uint64_t *removed, uint64_t *learned_removed);

/* What spim_store_batch_learn did with a message. */
enum spim_learn_outcome {
    SPIM_LEARN_NEW = 0,       /* counted */
    SPIM_LEARN_DUP = 1,       /* already learned with this label: no change */
    SPIM_LEARN_MOVED = 2,     /* learned with the other label: its counts moved */
    SPIM_LEARN_UNLEARNED = 3, /* delta -1: removed from the counts and the cache */
    SPIM_LEARN_UNKNOWN = 4,   /* delta -1 of a message not learned with this label */
};

/*
 * Like spim_store_batch_add, once per message: msg_key identifies the message
 * (a hash of its text, see spim_store_msg_key). The store's cache and the
 * messages earlier in this batch decide the outcome (*outcome, may be
 * NULL). The cache is written with the batch at commit.
 */
int spim_store_batch_learn(struct spim_store_batch *b, uint64_t msg_key,
                           const struct spim_token *toks, size_t n, int is_spam, int delta,
                           int *outcome);

/* The key of a message for the learned cache: a hash of its bytes. */
uint64_t spim_store_msg_key(const char *text, size_t len);

/* Distinct token entries a batch holds in memory (for committing in chunks). */
size_t spim_store_batch_size(const struct spim_store_batch *b);

/* --- 607 reports (reports.c) -------------------------------------------------
 * A recipient refused a message we delivered with 607 Unwanted (RFC 8197).
 * The "reports" database keeps one record per message and one mark per
 * reporter of it, so that a recipient counts once per message however often
 * it reports and nothing is trained before enough distinct recipients did.
 * The caller makes both keys: msg_key a hash of the message's normalised
 * text (the same text from several senders is one message), reporter a hash
 * of the recipient's normalised URI. The store never sees either in clear
 * beyond the first sender and the text, which it keeps for review.
 *
 * Layout: 'm' + be64 msg_key -> le32 version, le32 reporters, le32 learned,
 * le32 0, le64 first_us, le64 last_us, le32 length + sender, le32 length +
 * text; 'r' + be64 msg_key + be64 reporter -> le64 time_us.
 */
#define SPIM_REPORT_SENDER_MAX 512 /* bytes of the sender kept */
#define SPIM_REPORT_TEXT_MAX 4096  /* bytes of the text kept */

struct spim_report {
    uint64_t msg_key;
    int64_t first_us, last_us; /* first and last report */
    uint32_t reporters;        /* distinct reporters */
    uint32_t learned;          /* 1 once trained as spam (`reports learn`) */
    struct spim_slice sender;  /* the sender of the first report */
    struct spim_slice text;    /* the text of the first report */
};

/*
 * Records that reporter refused msg_key, in one committed transaction. A new
 * message gets a record with sender and text (cut to the _MAX above); a
 * reporter already counted for it changes nothing but last_us and sets *dup
 * (may be NULL). *reporters (may be NULL) gets the distinct reporters after
 * the call. max_entries caps the database's keys (records and marks; 0: no
 * cap): past it a new message or reporter is refused with SPIM_EFULL, so a
 * flood of reports cannot fill the disk. time_us 0 means now.
 */
int spim_report_add(struct spim_store *st, uint64_t msg_key, uint64_t reporter,
                    struct spim_slice sender, struct spim_slice text, int64_t time_us,
                    uint64_t max_entries, uint32_t *reporters, int *dup);
/*
 * Calls cb for every message record in key order inside one read
 * transaction: the slices live only during the call. cb returns 0 to go on,
 * non-zero to stop (a negative value is returned). A store without reports
 * walks nothing and returns 0.
 */
int spim_report_foreach(struct spim_store *st, int (*cb)(const struct spim_report *r, void *ud),
                        void *ud);
/* Sets the learned flag of a record. SPIM_ENOTFOUND if absent. */
int spim_report_set_learned(struct spim_store *st, uint64_t msg_key, uint32_t learned);

/* --- Snapshot (snapshot.c) ---------------------------------------------------
 * A compact, consistent copy of the whole store for other filter instances
 * (docs/scaling.md): LMDB's copy with compaction (MDB_CP_COMPACT), taken in
 * one read transaction, so it is safe while `serve` or `train` write.
 */

/*
 * Writes the copy to the file path (mode 0600): first to a temporary file
 * beside it, flushed to disk, then renamed over path, so path is either the
 * old file or a whole new one. The copy holds everything the store holds,
 * quarantine included. SPIM_EEXISTS when the temporary file exists.
 */
int spim_store_snapshot(struct spim_store *st, const char *path);

/*
 * Checks, before spim_store_open(dir), that dir/data.mdb is at least as long
 * as the pages its newest meta page says are in use. A copy cut short (still
 * being copied into place) fails with SPIM_ESTORE here; opened, it would be
 * read past its end through the map, which kills the process with SIGBUS.
 * Reads only the meta pages; may create dir/lock.mdb.
 */
int spim_store_check(const char *dir);

/* --- Contacts (contacts.c) ----------------------------------------------------
 * Who has written to whom: one record per unordered pair of parties (64-bit
 * hashes of normalised URIs, the caller's), holding for each direction the
 * delivered messages (saturating) and the day (days since the Unix epoch) of
 * the last one. "lo" is the party with the smaller hash.
 *
 * Layout ("contacts" database, every integer fixed-width little-endian):
 * key le64 lo, le64 hi (16 bytes; lo <= hi) -> le32 lo_hi_n, le32 hi_lo_n,
 * le32 lo_hi_day, le32 hi_lo_day (16 bytes); a value of another size is
 * SPIM_ESTORE. The database is created by the first write: a store without
 * it (older, or never written to) reads as holding no pair, also opened
 * read-only. A get reuses one of a few reset read transactions the store
 * keeps (renewed, not begun), so it costs one B-tree lookup and no lock of
 * LMDB's; it sees every write committed before it began.
 */
struct spim_contact {
    uint64_t lo, hi;           /* the parties, lo < hi (lo == hi: a party writing to itself) */
    uint32_t lo_hi_n, hi_lo_n; /* delivered messages lo->hi and hi->lo, saturating at UINT32_MAX */
    uint32_t lo_hi_day, hi_lo_day; /* day of the last one in each direction; 0: never */
};
/* Reads the pair's record: 0 and *out filled, SPIM_ENOTFOUND when none (out zeroed, lo/hi set). */
int spim_contacts_get(struct spim_store *st, uint64_t a, uint64_t b, struct spim_contact *out);
/*
 * Writes n records (overwriting) in ONE write transaction, growing the map on
 * MDB_MAP_FULL. A record with lo > hi is SPIM_EINVAL (nothing is written); a
 * record with both counts 0 removes the pair; of two records of one pair the
 * later in c wins. The records are written in key order, so a large batch
 * walks the B-tree once. n 0 writes nothing and succeeds.
 */
int spim_contacts_put_many(struct spim_store *st, const struct spim_contact *c, size_t n);
/*
 * Removes records whose both days are before before_day, then, while more
 * than max_entries remain (0: no cap), the ones with the oldest last day.
 * In bounded transactions (so a running serve is not held up); dry_run counts.
 *
 * The last day of a record is the later of its two days. The cap is applied
 * in read passes that need fixed memory whatever the database holds: one
 * counts the records and their range of days, one makes a histogram of 65,536
 * buckets (a second one, inside the bucket of the cut, when the days span
 * more than 65,536 values); then the removing pass deletes every record
 * before the cut day and as many at the cut day as needed. Each transaction
 * visits at most 10,000 records. Records a concurrent writer adds between the passes are not
 * counted against the cap until the next run. *removed (may be NULL) gets
 * the records removed (dry_run: that would be). dry_run works on a read-only
 * store; a real run there is SPIM_EINVAL.
 */
int spim_contacts_expire(struct spim_store *st, uint32_t before_day, uint64_t max_entries,
                         int dry_run, uint64_t *removed);
/* Records held. */
int spim_contacts_count(struct spim_store *st, uint64_t *n);
/*
 * One delivered message from->to on day, read, counted (saturating; the day
 * kept is the later one) and written in its own write transaction. For tools
 * and tests: serve counts in memory (spim_contacts_table_*, policy.h) and
 * writes with spim_contacts_put_many about once a second.
 */
int spim_contacts_delivered(struct spim_store *st, uint64_t from, uint64_t to, uint32_t day);

#endif
