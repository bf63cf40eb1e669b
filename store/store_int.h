/*
 * store_int.h: what store.c and quarantine.c share and nobody else sees.
 *
 * The struct behind the opaque handle, the transaction helpers that own the
 * map-resize protocol, error translation at the LMDB edge and the explicit
 * fixed-width encoders of the on-disk format.
 */
#ifndef SPIM_STORE_INT_H
#define SPIM_STORE_INT_H

#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct open_dir;

/* Reset read transactions spim_contacts_get keeps (contacts.c). */
#define SPIM__CONTACTS_READERS 8

struct spim_store {
    MDB_env *env;
    struct open_dir *dir; /* this process's claim on the directory */
    MDB_dbi tokens, meta, quar, dedup;
    unsigned flags;
    /*
     * mdb_env_set_mapsize() unmaps and remaps the file, so it must not run
     * while any transaction of this process may touch the map. Every
     * transaction holds this lock shared; a resize holds it exclusive.
     */
    pthread_rwlock_t lock;
    /* Written only under the exclusive lock; atomic so map_size() needs none. */
    atomic_size_t map_size;
    /* Set when a remap failed: the env has no usable map and must be closed. */
    atomic_int broken;
    /*
     * The "audit" database is opened on first use (quarantine.c), not by
     * open: a read-only open of a store that never had one must still work.
     * audit_open is set once a write transaction that opened it committed.
     */
    MDB_dbi audit;
    atomic_int audit_open;
    /*
     * The learned-message cache (store.c): message hash -> label. Opened by
     * open; a read-only open of a store that lacks it leaves has_learned 0.
     */
    MDB_dbi learned;
    int has_learned;
    /* The 607 reports database (reports.c): opened on first use, as audit is. */
    MDB_dbi reports;
    atomic_int reports_open;
    /*
     * The contacts database (contacts.c): opened on first use, as reports
     * is, and a few reset read transactions kept for spim_contacts_get, so
     * that a get is a renew and not a begin (which takes LMDB's reader lock).
     */
    MDB_dbi contacts;
    atomic_int contacts_open;
    _Atomic(MDB_txn *) contacts_rd[SPIM__CONTACTS_READERS];
};

/* Meta keys (stored without NUL). */
#define SPIM__META_FORMAT "format"
#define SPIM__META_HAM "ham_msgs"
#define SPIM__META_SPAM "spam_msgs"
/* Bumped by every write to the token counts: readers' caches are valid while it stays. */
#define SPIM__META_GEN "tokens_gen"
#define SPIM__META_QUAR_NEXT "quar_next"
/* The token index: the token table as a reader holds it in memory (store.c). */
#define SPIM__META_INDEX "tokens_index"

/* Translates 0, an MDB_* code, an errno or an already-SPIM code to SPIM_E*. */
int spim__err(int rc);

/*
 * Runs fn inside one write transaction and commits it. fn returns 0, an
 * MDB_* code, an errno or a negative SPIM_E*; on MDB_MAP_FULL the map is
 * doubled and on MDB_MAP_RESIZED adopted, and fn runs again from scratch, so
 * fn must derive everything it writes from the transaction and ud only.
 * Returns 0 or a SPIM_E* code.
 */
int spim__write(struct spim_store *st, int (*fn)(struct spim_store *st, MDB_txn *txn, void *ud),
                void *ud);

/*
 * Begins a read transaction with the store lock held shared (adopting a map
 * grown by another process first). spim__read_end() aborts it and unlocks;
 * call it exactly once per successful begin.
 */
int spim__read_begin(struct spim_store *st, MDB_txn **out);
void spim__read_end(struct spim_store *st, MDB_txn *txn);
/*
 * For a read transaction kept across calls: renew begins (*txn NULL) or
 * renews (a reset *txn) with the lock held shared; on failure a renewed txn
 * stays reset (the caller may abort it, no lock needed). reset resets it
 * and unlocks. commit commits a read transaction (keeping the database
 * handles opened in it) and unlocks.
 */
int spim__read_renew(struct spim_store *st, MDB_txn **txn);
void spim__read_reset(struct spim_store *st, MDB_txn *txn);
int spim__read_commit(struct spim_store *st, MDB_txn *txn);
/* Aborts the read transactions contacts.c keeps; spim_store_close calls it first. */
void spim__contacts_close(struct spim_store *st);

/* Whether r answers from the whole token table it loaded (for tests; see store.c). */
int spim__reader_whole(const struct spim_store_reader *r);

/* Reads a uint64 LE meta value; a missing key reads as 0. */
int spim__meta_get_u64(struct spim_store *st, MDB_txn *txn, const char *key, uint64_t *out);
int spim__meta_put_u64(struct spim_store *st, MDB_txn *txn, const char *key, uint64_t v);

static inline void spim__put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * (7 - i)));
}

static inline uint64_t spim__get_be64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

#endif
