/*
 * reports.c: the 607 Unwanted reports (RFC 8197) that recipients send back
 * for messages we delivered, and their per-reporter marks.
 *
 * One "reports" database holds two kinds of keys, told apart by the first
 * byte (see store.h for the layout): 'm' records, one per message, and 'r'
 * marks, one per reporter of a message, so that adding a report is one
 * lookup of the mark and one write of each, whatever the number of
 * reporters. The database is opened on first write, like the audit log, so
 * that a read-only open of an older store still works.
 */
#include "store_int.h"

#include <string.h>

#define REPORT_VERSION 1
#define REPORT_HDR 32 /* version, reporters, learned, reserved, first_us, last_us */
#define KEY_MSG 'm'
#define KEY_MARK 'r'

struct report_add {
    uint64_t msg_key, reporter;
    struct spim_slice sender, text;
    int64_t time_us;
    uint64_t max_entries;
    uint32_t reporters;
    int dup;
    MDB_dbi dbi;
    int fresh;
};

static void msg_key_bytes(unsigned char *k, uint64_t msg_key)
{
    k[0] = KEY_MSG;
    spim__put_be64(k + 1, msg_key);
}

/* The handle in a write transaction: opened (created) the first time. */
static int reports_dbi_write(struct spim_store *st, MDB_txn *txn, MDB_dbi *out, int *fresh)
{
    int rc;

    *fresh = 0;
    if (atomic_load(&st->reports_open)) {
        *out = st->reports;
        return 0;
    }
    rc = mdb_dbi_open(txn, "reports", MDB_CREATE, out);
    if (rc == 0)
        *fresh = 1;
    return rc;
}

/* After a commit that opened the handle: later transactions reuse it. */
static void reports_publish(struct spim_store *st, MDB_dbi dbi, int fresh)
{
    if (fresh && !atomic_load(&st->reports_open)) {
        st->reports = dbi;
        atomic_store(&st->reports_open, 1);
    }
}

static int report_decode(const unsigned char *p, size_t len, uint64_t msg_key,
                         struct spim_report *r)
{
    size_t off = REPORT_HDR;
    struct spim_slice *f[2] = {&r->sender, &r->text};

    if (len < REPORT_HDR || spim_get_le32(p) != REPORT_VERSION)
        return SPIM_ESTORE;
    memset(r, 0, sizeof(*r));
    r->msg_key = msg_key;
    r->reporters = spim_get_le32(p + 4);
    r->learned = spim_get_le32(p + 8);
    r->first_us = (int64_t)spim_get_le64(p + 16);
    r->last_us = (int64_t)spim_get_le64(p + 24);
    for (int i = 0; i < 2; i++) {
        uint32_t n;

        if (len - off < 4)
            return SPIM_ESTORE;
        n = spim_get_le32(p + off);
        off += 4;
        if (n > len - off)
            return SPIM_ESTORE;
        f[i]->p = (const char *)p + off;
        f[i]->len = n;
        off += n;
    }
    return off == len ? 0 : SPIM_ESTORE;
}

/* Whether adding n keys would pass the cap. */
static int over_cap(MDB_txn *txn, MDB_dbi dbi, uint64_t max_entries, size_t n)
{
    MDB_stat ms;

    if (max_entries == 0 || mdb_stat(txn, dbi, &ms) != 0)
        return 0;
    return ms.ms_entries + n > max_entries;
}

static int add_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct report_add *a = ud;
    unsigned char mk[9], rk[17], tb[8], *p;
    MDB_val k = {sizeof(mk), mk}, v, kr = {sizeof(rk), rk}, vr = {sizeof(tb), tb};
    size_t sl = a->sender.len < SPIM_REPORT_SENDER_MAX ? a->sender.len : SPIM_REPORT_SENDER_MAX;
    size_t tl = a->text.len < SPIM_REPORT_TEXT_MAX ? a->text.len : SPIM_REPORT_TEXT_MAX;
    int rc, have;

    rc = reports_dbi_write(st, txn, &a->dbi, &a->fresh);
    if (rc != 0)
        return rc;
    a->dup = 0;
    msg_key_bytes(mk, a->msg_key);
    memcpy(rk, mk, sizeof(mk));
    rk[0] = KEY_MARK;
    spim__put_be64(rk + 9, a->reporter);
    spim_put_le64(tb, (uint64_t)a->time_us);
    rc = mdb_get(txn, a->dbi, &k, &v);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    have = rc == 0;
    if (have && (v.mv_size < REPORT_HDR || spim_get_le32(v.mv_data) != REPORT_VERSION))
        return SPIM_ESTORE;
    rc = mdb_get(txn, a->dbi, &kr, &vr);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    a->dup = rc == 0;
    if (!a->dup && over_cap(txn, a->dbi, a->max_entries, have ? 1 : 2))
        return SPIM_EFULL;
    if (have) {
        /* v dies with the put: the record is copied, changed and written back. */
        unsigned char buf[REPORT_HDR + 8 + SPIM_REPORT_SENDER_MAX + SPIM_REPORT_TEXT_MAX];

        if (v.mv_size > sizeof(buf))
            return SPIM_ESTORE;
        memcpy(buf, v.mv_data, v.mv_size);
        a->reporters = spim_get_le32(buf + 4) + (a->dup ? 0 : 1);
        spim_put_le32(buf + 4, a->reporters);
        spim_put_le64(buf + 24, (uint64_t)a->time_us);
        v.mv_data = buf;
        rc = mdb_put(txn, a->dbi, &k, &v, 0);
        if (rc != 0)
            return rc;
    } else {
        a->reporters = 1;
        v.mv_size = REPORT_HDR + 4 + sl + 4 + tl;
        v.mv_data = NULL;
        rc = mdb_put(txn, a->dbi, &k, &v, MDB_RESERVE);
        if (rc != 0)
            return rc;
        p = v.mv_data;
        spim_put_le32(p, REPORT_VERSION);
        spim_put_le32(p + 4, 1);
        spim_put_le32(p + 8, 0);
        spim_put_le32(p + 12, 0);
        spim_put_le64(p + 16, (uint64_t)a->time_us);
        spim_put_le64(p + 24, (uint64_t)a->time_us);
        spim_put_le32(p + REPORT_HDR, (uint32_t)sl);
        if (sl > 0)
            memcpy(p + REPORT_HDR + 4, a->sender.p, sl);
        spim_put_le32(p + REPORT_HDR + 4 + sl, (uint32_t)tl);
        if (tl > 0)
            memcpy(p + REPORT_HDR + 8 + sl, a->text.p, tl);
    }
    vr.mv_size = sizeof(tb);
    vr.mv_data = tb;
    return mdb_put(txn, a->dbi, &kr, &vr, 0);
}

int spim_report_add(struct spim_store *st, uint64_t msg_key, uint64_t reporter,
                    struct spim_slice sender, struct spim_slice text, int64_t time_us,
                    uint64_t max_entries, uint32_t *reporters, int *dup)
{
    struct report_add a = {
        .msg_key = msg_key,
        .reporter = reporter,
        .sender = sender,
        .text = text,
        .time_us = time_us ? time_us : spim_now_us(),
        .max_entries = max_entries,
    };
    int rc;

    if (st == NULL || (sender.len > 0 && sender.p == NULL) || (text.len > 0 && text.p == NULL))
        return SPIM_EINVAL;
    rc = spim__write(st, add_fn, &a);
    if (rc != 0)
        return rc;
    reports_publish(st, a.dbi, a.fresh);
    if (reporters != NULL)
        *reporters = a.reporters;
    if (dup != NULL)
        *dup = a.dup;
    return 0;
}

int spim_report_foreach(struct spim_store *st, int (*cb)(const struct spim_report *r, void *ud),
                        void *ud)
{
    struct spim_report r;
    unsigned char first[1] = {KEY_MSG};
    MDB_cursor *cur;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {sizeof(first), first}, v;
    int rc, stop = 0;

    if (st == NULL || cb == NULL)
        return SPIM_EINVAL;
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    /* Not yet opened by this process: a handle that lives as long as this txn. */
    if (atomic_load(&st->reports_open))
        dbi = st->reports;
    else if ((rc = mdb_dbi_open(txn, "reports", 0, &dbi)) != 0)
        goto out;
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        goto out;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *kb = k.mv_data;

        if (k.mv_size < 1 || kb[0] != KEY_MSG)
            break; /* past the records: the marks follow */
        if (k.mv_size != 9) {
            rc = SPIM_ESTORE;
            break;
        }
        rc = report_decode(v.mv_data, v.mv_size, spim__get_be64(kb + 1), &r);
        if (rc != 0)
            break;
        stop = cb(&r, ud);
        if (stop != 0)
            break;
    }
    mdb_cursor_close(cur);
out:
    if (rc == MDB_NOTFOUND)
        rc = 0; /* the end of the walk, or no reports database yet */
    spim__read_end(st, txn);
    if (stop != 0)
        return stop < 0 ? stop : 0;
    return spim__err(rc);
}

struct set_learned {
    uint64_t msg_key;
    uint32_t learned;
    MDB_dbi dbi;
    int fresh;
};

static int set_learned_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct set_learned *s = ud;
    unsigned char mk[9];
    MDB_val k = {sizeof(mk), mk}, v;
    MDB_cursor *cur;
    unsigned char buf[REPORT_HDR + 8 + SPIM_REPORT_SENDER_MAX + SPIM_REPORT_TEXT_MAX];
    int rc = reports_dbi_write(st, txn, &s->dbi, &s->fresh);

    if (rc != 0)
        return rc;
    msg_key_bytes(mk, s->msg_key);
    rc = mdb_cursor_open(txn, s->dbi, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (rc == 0 && (v.mv_size < REPORT_HDR || v.mv_size > sizeof(buf)))
        rc = SPIM_ESTORE;
    if (rc == 0) {
        memcpy(buf, v.mv_data, v.mv_size);
        spim_put_le32(buf + 8, s->learned);
        v.mv_data = buf;
        rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? SPIM_ENOTFOUND : rc;
}

int spim_report_set_learned(struct spim_store *st, uint64_t msg_key, uint32_t learned)
{
    struct set_learned s = {.msg_key = msg_key, .learned = learned};
    int rc;

    if (st == NULL || learned > 1)
        return SPIM_EINVAL;
    rc = spim__write(st, set_learned_fn, &s);
    if (rc == 0)
        reports_publish(st, s.dbi, s.fresh);
    return rc;
}
