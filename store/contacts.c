/*
 * contacts.c: who has written to whom, per unordered pair of parties.
 *
 * One "contacts" database, 16-byte keys (le64 lo, le64 hi) and 16-byte
 * values (four le32: the count and the last day of each direction; see
 * store.h). It is opened on first use like the reports database, with two
 * differences that come from spim_contacts_get being called for nearly
 * every message of a running serve:
 *
 * - The handle is opened once per process and kept (a read transaction that
 *   finds the database commits, which keeps the handle), never opened again
 *   per read. LMDB forbids two transactions of a process calling
 *   mdb_dbi_open at once, so every open of "contacts" here runs under
 *   open_mu, and a reader looks at the handle only after contacts_open says
 *   it is published: a transaction renewed after that sees it.
 * - A get renews one of a few reset read transactions the store keeps
 *   (st->contacts_rd, taken and given back with atomic exchanges) instead
 *   of beginning one: a reset transaction keeps its reader slot, so renew
 *   takes no lock of LMDB's, where a begin takes the reader-table mutex.
 *   A get that finds every kept one taken begins its own and keeps it if a
 *   place is free afterwards, else aborts it.
 *
 * Expiry works in transactions that visit at most CHUNK records and resume
 * at the key after the last one visited, so serve's once-a-second write is
 * never held up behind a long walk.
 */
#include "store_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN 16
#define VAL_LEN 16
#define CHUNK 10000    /* records one expire transaction visits */
#define NBUCKETS 65536 /* of the day histogram: 512 KiB, whatever the database holds */

/* Serialises our mdb_dbi_open calls of "contacts" (LMDB: one at a time per process). */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;

static void key_enc(unsigned char *k, uint64_t lo, uint64_t hi)
{
    spim_put_le64(k, lo);
    spim_put_le64(k + 8, hi);
}

static void val_enc(unsigned char *v, const struct spim_contact *c)
{
    spim_put_le32(v, c->lo_hi_n);
    spim_put_le32(v + 4, c->hi_lo_n);
    spim_put_le32(v + 8, c->lo_hi_day);
    spim_put_le32(v + 12, c->hi_lo_day);
}

/* Fills the counts and days of *c from a stored value. */
static int val_dec(const MDB_val *v, struct spim_contact *c)
{
    const unsigned char *p = v->mv_data;

    if (v->mv_size != VAL_LEN)
        return SPIM_ESTORE;
    c->lo_hi_n = spim_get_le32(p);
    c->hi_lo_n = spim_get_le32(p + 4);
    c->lo_hi_day = spim_get_le32(p + 8);
    c->hi_lo_day = spim_get_le32(p + 12);
    return 0;
}

static uint32_t last_day(const struct spim_contact *c)
{
    return c->lo_hi_day > c->hi_lo_day ? c->lo_hi_day : c->hi_lo_day;
}

/* --- The handle and the kept readers --------------------------------------------- */

/*
 * 0 once the handle is open in this process, SPIM_ENOTFOUND while the store
 * has no contacts database. The check is repeated while it is missing, so
 * that a database another process creates is found; that costs one lookup
 * in LMDB's main database per call until then.
 */
static int dbi_find(struct spim_store *st)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc;

    if (atomic_load(&st->contacts_open))
        return 0;
    pthread_mutex_lock(&open_mu);
    if (atomic_load(&st->contacts_open)) {
        pthread_mutex_unlock(&open_mu);
        return 0;
    }
    rc = spim__read_begin(st, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "contacts", 0, &dbi);
        if (rc == 0) {
            /* Committed, a read transaction keeps the handles it opened. */
            rc = spim__read_commit(st, txn);
            if (rc == 0) {
                st->contacts = dbi;
                atomic_store(&st->contacts_open, 1);
            }
        } else {
            spim__read_end(st, txn);
            rc = spim__err(rc);
        }
    }
    pthread_mutex_unlock(&open_mu);
    return rc;
}

/* The handle in a write transaction, created the first time; open_mu is held then. */
static int dbi_write(struct spim_store *st, MDB_txn *txn, MDB_dbi *out, int *fresh)
{
    int rc;

    *fresh = 0;
    if (atomic_load(&st->contacts_open)) {
        *out = st->contacts;
        return 0;
    }
    rc = mdb_dbi_open(txn, "contacts", MDB_CREATE, out);
    if (rc == 0)
        *fresh = 1;
    return rc;
}

/*
 * Runs fn in a write transaction; the first write of a process opens (and
 * perhaps creates) the database, and publishes the handle after the commit.
 */
static int contacts_write(struct spim_store *st,
                          int (*fn)(struct spim_store *st, MDB_txn *txn, void *ud), void *ud,
                          MDB_dbi *dbi, int *fresh)
{
    int locked = 0, rc;

    if (st->flags & SPIM_STORE_RDONLY)
        return SPIM_EINVAL;
    if (!atomic_load(&st->contacts_open)) {
        /* Lock order as in dbi_find: open_mu, then the store (in spim__write). */
        pthread_mutex_lock(&open_mu);
        locked = 1;
    }
    rc = spim__write(st, fn, ud);
    if (rc == 0 && *fresh && !atomic_load(&st->contacts_open)) {
        st->contacts = *dbi;
        atomic_store(&st->contacts_open, 1);
    }
    if (locked)
        pthread_mutex_unlock(&open_mu);
    return rc;
}

static MDB_txn *reader_take(struct spim_store *st)
{
    for (int i = 0; i < SPIM__CONTACTS_READERS; i++) {
        MDB_txn *t;

        if (atomic_load(&st->contacts_rd[i]) == NULL)
            continue;
        t = atomic_exchange(&st->contacts_rd[i], NULL);
        if (t != NULL)
            return t;
    }
    return NULL;
}

/* Keeps a reset transaction for the next get, or aborts it (a reset one needs no lock). */
static void reader_give(struct spim_store *st, MDB_txn *t)
{
    for (int i = 0; i < SPIM__CONTACTS_READERS; i++) {
        MDB_txn *expect = NULL;

        if (atomic_compare_exchange_strong(&st->contacts_rd[i], &expect, t))
            return;
    }
    mdb_txn_abort(t);
}

void spim__contacts_close(struct spim_store *st)
{
    for (int i = 0; i < SPIM__CONTACTS_READERS; i++) {
        MDB_txn *t = atomic_exchange(&st->contacts_rd[i], NULL);

        if (t != NULL)
            mdb_txn_abort(t);
    }
}

/* --- Get, put, count ------------------------------------------------------------- */

int spim_contacts_get(struct spim_store *st, uint64_t a, uint64_t b, struct spim_contact *out)
{
    struct spim_contact c;
    unsigned char kb[KEY_LEN];
    MDB_val k = {sizeof(kb), kb}, v;
    MDB_txn *txn;
    int rc;

    if (st == NULL || out == NULL)
        return SPIM_EINVAL;
    memset(&c, 0, sizeof(c));
    c.lo = a < b ? a : b;
    c.hi = a < b ? b : a;
    rc = dbi_find(st);
    if (rc != 0)
        goto out;
    txn = reader_take(st);
    rc = spim__read_renew(st, &txn);
    if (rc != 0) {
        if (txn != NULL)
            mdb_txn_abort(txn); /* left reset by the failed renew */
        goto out;
    }
    key_enc(kb, c.lo, c.hi);
    rc = mdb_get(txn, st->contacts, &k, &v);
    if (rc == 0)
        rc = val_dec(&v, &c);
    spim__read_reset(st, txn);
    reader_give(st, txn);
    rc = spim__err(rc);
out:
    if (rc == 0 || rc == SPIM_ENOTFOUND) {
        if (rc != 0)
            c.lo_hi_n = c.hi_lo_n = c.lo_hi_day = c.hi_lo_day = 0;
        *out = c;
    }
    return rc;
}

/* One record to write, encoded; idx keeps the caller's order for "the later one wins". */
struct rec {
    unsigned char k[KEY_LEN], v[VAL_LEN];
    size_t idx;
    int del;
};

static int rec_cmp(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    int c = memcmp(x->k, y->k, KEY_LEN);

    if (c != 0)
        return c;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

struct put_args {
    const struct rec *r;
    size_t n;
    MDB_dbi dbi;
    int fresh;
};

static int put_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct put_args *a = ud;
    int rc = dbi_write(st, txn, &a->dbi, &a->fresh);

    if (rc != 0)
        return rc;
    for (size_t i = 0; i < a->n; i++) {
        const struct rec *r = &a->r[i];
        MDB_val k = {KEY_LEN, (void *)r->k}, v = {VAL_LEN, (void *)r->v};

        if (i + 1 < a->n && memcmp(r->k, a->r[i + 1].k, KEY_LEN) == 0)
            continue; /* a later record of the same pair follows */
        if (r->del) {
            rc = mdb_del(txn, a->dbi, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        } else {
            rc = mdb_put(txn, a->dbi, &k, &v, 0);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

int spim_contacts_put_many(struct spim_store *st, const struct spim_contact *c, size_t n)
{
    struct put_args a = {0};
    struct rec *r;
    int rc;

    if (st == NULL || (n > 0 && c == NULL))
        return SPIM_EINVAL;
    if (st->flags & SPIM_STORE_RDONLY)
        return SPIM_EINVAL;
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / sizeof(*r))
        return SPIM_ETOOBIG;
    for (size_t i = 0; i < n; i++)
        if (c[i].lo > c[i].hi)
            return SPIM_EINVAL;
    r = malloc(n * sizeof(*r));
    if (r == NULL)
        return SPIM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        key_enc(r[i].k, c[i].lo, c[i].hi);
        val_enc(r[i].v, &c[i]);
        r[i].idx = i;
        r[i].del = c[i].lo_hi_n == 0 && c[i].hi_lo_n == 0;
    }
    /* Key order: one left-to-right walk of the B-tree, and duplicates side by side. */
    if (n > 1)
        qsort(r, n, sizeof(*r), rec_cmp);
    a.r = r;
    a.n = n;
    rc = contacts_write(st, put_fn, &a, &a.dbi, &a.fresh);
    free(r);
    return rc;
}

struct delivered_args {
    uint64_t from, to;
    uint32_t day;
    MDB_dbi dbi;
    int fresh;
};

static int delivered_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct delivered_args *a = ud;
    struct spim_contact c = {0};
    unsigned char kb[KEY_LEN], vb[VAL_LEN];
    MDB_val k = {sizeof(kb), kb}, v;
    uint32_t *n, *day;
    int rc = dbi_write(st, txn, &a->dbi, &a->fresh);

    if (rc != 0)
        return rc;
    c.lo = a->from < a->to ? a->from : a->to;
    c.hi = a->from < a->to ? a->to : a->from;
    key_enc(kb, c.lo, c.hi);
    rc = mdb_get(txn, a->dbi, &k, &v);
    if (rc == 0)
        rc = val_dec(&v, &c);
    else if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc != 0)
        return rc;
    /* A party writing to itself counts in lo->hi. */
    n = a->from == c.lo ? &c.lo_hi_n : &c.hi_lo_n;
    day = a->from == c.lo ? &c.lo_hi_day : &c.hi_lo_day;
    if (*n < UINT32_MAX)
        (*n)++;
    if (a->day > *day)
        *day = a->day;
    val_enc(vb, &c);
    v.mv_size = sizeof(vb);
    v.mv_data = vb;
    return mdb_put(txn, a->dbi, &k, &v, 0);
}

int spim_contacts_delivered(struct spim_store *st, uint64_t from, uint64_t to, uint32_t day)
{
    struct delivered_args a = {.from = from, .to = to, .day = day};

    if (st == NULL)
        return SPIM_EINVAL;
    return contacts_write(st, delivered_fn, &a, &a.dbi, &a.fresh);
}

int spim_contacts_count(struct spim_store *st, uint64_t *n)
{
    MDB_stat ms;
    MDB_txn *txn;
    int rc;

    if (st == NULL || n == NULL)
        return SPIM_EINVAL;
    rc = dbi_find(st);
    if (rc == SPIM_ENOTFOUND) {
        *n = 0;
        return 0;
    }
    if (rc != 0)
        return rc;
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_stat(txn, st->contacts, &ms);
    spim__read_end(st, txn);
    if (rc == 0)
        *n = ms.ms_entries;
    return spim__err(rc);
}

/* --- Expiry ---------------------------------------------------------------------- */

/* Where a walk over the database stands: after key (once started), or done. */
struct pos {
    unsigned char key[KEY_LEN];
    int started, done;
};

/* Looks at one record; returns 1 to remove it. */
typedef int (*visit_fn)(const struct spim_contact *c, void *ud);

/*
 * Visits at most CHUNK records after in (removing those fn asks for when del
 * is set) and writes where it stopped into *out; *in is left alone, so that
 * a write transaction run again after a map resize starts at the same place.
 */
static int visit_chunk(MDB_txn *txn, MDB_dbi dbi, const struct pos *in, struct pos *out, int del,
                       visit_fn fn, void *ud)
{
    MDB_cursor *cur;
    MDB_val k, v;
    unsigned seen = 0;
    int rc;

    *out = *in;
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    if (in->started) {
        k.mv_size = KEY_LEN;
        k.mv_data = (void *)in->key;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == KEY_LEN && memcmp(k.mv_data, in->key, KEY_LEN) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    while (rc == 0 && seen < CHUNK) {
        struct spim_contact c;

        if (k.mv_size != KEY_LEN) {
            rc = SPIM_ESTORE;
            break;
        }
        c.lo = spim_get_le64(k.mv_data);
        c.hi = spim_get_le64((const unsigned char *)k.mv_data + 8);
        if ((rc = val_dec(&v, &c)) != 0)
            break;
        memcpy(out->key, k.mv_data, KEY_LEN); /* before a delete frees it */
        out->started = 1;
        seen++;
        /* After a delete LMDB's MDB_NEXT yields the entry that moved under the cursor. */
        if (fn(&c, ud) && del && (rc = mdb_cursor_del(cur, 0)) != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
        out->done = 1;
        rc = 0;
    }
    mdb_cursor_close(cur);
    return rc;
}

/*
 * Walks the whole database in read transactions of CHUNK records. The walk
 * ends: each round moves strictly forward in key order or stops.
 */
static int walk_read(struct spim_store *st, visit_fn fn, void *ud)
{
    struct pos p, next;

    memset(&p, 0, sizeof(p));
    while (!p.done) {
        MDB_txn *txn;
        int rc = spim__read_begin(st, &txn);

        if (rc != 0)
            return rc;
        rc = visit_chunk(txn, st->contacts, &p, &next, 0, fn, ud);
        spim__read_end(st, txn);
        if (rc != 0)
            return spim__err(rc);
        p = next;
    }
    return 0;
}

/* What expire decided: removed are records before before_day, and below the cut. */
struct expire {
    uint32_t before_day;
    int have_cut;
    uint32_t cut_day;  /* with have_cut: every record with a last day before it goes... */
    uint64_t cut_take; /* ...and this many of those whose last day is cut_day */
    uint64_t taken;    /* of cut_take, committed so far */
    /* Of the running transaction (reset at each attempt). */
    uint64_t chunk_removed, chunk_taken;
    /* The survey: records with a last day >= before_day. */
    uint64_t survivors;
    uint32_t min_day, max_day;
    /* The histogram pass: [lo_d, lo_d + width * NBUCKETS) in buckets of width days. */
    uint64_t *hist;
    uint32_t lo_d, hi_d;
    uint64_t width;
    struct pos in, out;
};

static int survey_fn(const struct spim_contact *c, void *ud)
{
    struct expire *e = ud;
    uint32_t d = last_day(c);

    if (d < e->before_day)
        return 0;
    if (e->survivors == 0 || d < e->min_day)
        e->min_day = d;
    if (e->survivors == 0 || d > e->max_day)
        e->max_day = d;
    e->survivors++;
    return 0;
}

static int hist_fn(const struct spim_contact *c, void *ud)
{
    struct expire *e = ud;
    uint32_t d = last_day(c);

    if (d >= e->before_day && d >= e->lo_d && d <= e->hi_d)
        e->hist[(d - e->lo_d) / e->width]++;
    return 0;
}

/*
 * Finds the cut for removing excess of the survivors, oldest last day
 * first: a histogram of [min_day, max_day] in NBUCKETS buckets, then of the
 * bucket the cut falls in, until a bucket is one day wide (at most two
 * passes, since days are 32 bits).
 */
static int find_cut(struct spim_store *st, struct expire *e, uint64_t excess)
{
    int rc = 0;

    e->hist = malloc(NBUCKETS * sizeof(*e->hist));
    if (e->hist == NULL)
        return SPIM_ENOMEM;
    e->lo_d = e->min_day;
    e->hi_d = e->max_day;
    for (int level = 0; level < 4; level++) {
        uint64_t span = (uint64_t)e->hi_d - e->lo_d + 1, cum = 0, total = 0;
        size_t b, nb;

        e->width = (span + NBUCKETS - 1) / NBUCKETS;
        nb = (size_t)((span + e->width - 1) / e->width);
        memset(e->hist, 0, NBUCKETS * sizeof(*e->hist));
        if ((rc = walk_read(st, hist_fn, e)) != 0)
            break;
        for (b = 0; b < nb; b++)
            total += e->hist[b];
        /* Fewer than counted before (a concurrent delete): remove what is there. */
        if (excess > total)
            excess = total;
        if (excess == 0)
            break; /* nothing left to cut: no cut */
        for (b = 0; b < nb && cum + e->hist[b] < excess; b++)
            cum += e->hist[b];
        excess -= cum;
        e->lo_d = (uint32_t)(e->lo_d + b * e->width);
        if (e->width == 1) {
            e->have_cut = 1;
            e->cut_day = e->lo_d;
            e->cut_take = excess;
            break;
        }
        if ((uint64_t)e->lo_d + e->width - 1 < e->hi_d)
            e->hi_d = (uint32_t)(e->lo_d + e->width - 1);
    }
    free(e->hist);
    e->hist = NULL;
    return rc;
}

static int remove_fn(const struct spim_contact *c, void *ud)
{
    struct expire *e = ud;
    uint32_t d = last_day(c);

    if (d < e->before_day) {
        e->chunk_removed++;
        return 1;
    }
    if (!e->have_cut || d > e->cut_day)
        return 0;
    if (d == e->cut_day) {
        if (e->taken + e->chunk_taken >= e->cut_take)
            return 0;
        e->chunk_taken++;
    }
    e->chunk_removed++;
    return 1;
}

static int remove_chunk_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct expire *e = ud;

    e->chunk_removed = e->chunk_taken = 0;
    return visit_chunk(txn, st->contacts, &e->in, &e->out, 1, remove_fn, e);
}

int spim_contacts_expire(struct spim_store *st, uint32_t before_day, uint64_t max_entries,
                         int dry_run, uint64_t *removed)
{
    struct expire e;
    uint64_t total = 0, entries;
    int rc;

    if (st == NULL || (!dry_run && (st->flags & SPIM_STORE_RDONLY)))
        return SPIM_EINVAL;
    memset(&e, 0, sizeof(e));
    e.before_day = before_day;
    rc = dbi_find(st);
    if (rc == SPIM_ENOTFOUND || (rc == 0 && before_day == 0 && max_entries == 0))
        goto done;
    if (rc != 0)
        return rc;
    if (max_entries > 0) {
        if ((rc = spim_contacts_count(st, &entries)) != 0)
            return rc;
        if (entries > max_entries && (rc = walk_read(st, survey_fn, &e)) != 0)
            return rc;
        if (e.survivors > max_entries && (rc = find_cut(st, &e, e.survivors - max_entries)) != 0)
            return rc;
    }
    if (before_day == 0 && !e.have_cut)
        goto done;
    /* Bounded like walk_read: every round moves forward in key order or stops. */
    while (!e.in.done) {
        if (dry_run) {
            MDB_txn *txn;

            if ((rc = spim__read_begin(st, &txn)) != 0)
                return rc;
            e.chunk_removed = e.chunk_taken = 0;
            rc = visit_chunk(txn, st->contacts, &e.in, &e.out, 0, remove_fn, &e);
            spim__read_end(st, txn);
            rc = spim__err(rc);
        } else {
            rc = spim__write(st, remove_chunk_fn, &e);
        }
        if (rc != 0)
            return rc;
        total += e.chunk_removed;
        e.taken += e.chunk_taken;
        e.in = e.out;
    }
done:
    if (removed != NULL)
        *removed = total;
    return 0;
}
