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
 * (0: the default, 64 MiB); it grows on MDB_MAP_FULL and the write retries.
 * *out is set only on success. Missing store without SPIM_STORE_CREATE:
 * SPIM_ENOTFOUND.
 */
int spim_store_open(const char *dir, unsigned flags, size_t map_size, struct spim_store **out);
/* Closes; NULL is a no-op. No reader or batch of it may be alive. */
void spim_store_close(struct spim_store *st);
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
void spim_store_reader_free(struct spim_store_reader *r);
/*
 * Fills toks[i].ham and .spam for every token (0 when unknown) and *totals.
 * May reorder toks (it sorts them by key for locality).
 */
int spim_store_lookup(struct spim_store_reader *r, struct spim_token *toks, size_t n,
                      struct spim_totals *totals);
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

#endif
