/*
 * quarantine.c: held messages in the "quar" and "quar_dedup" databases.
 *
 * "quar" maps an 8-byte big-endian id to a record, big-endian so that the
 * B-tree (memcmp order) is id order and "newest first" is a backwards cursor
 * walk. Ids come from the "quar_next" counter in meta, so they grow with
 * time. "quar_dedup" maps the 8-byte little-endian dedup key to the id (LE).
 *
 * A record is explicit, never a struct image (all integers little-endian):
 *   u32 record version (2), u32 status, i64 time_us, u64 dedup_key,
 *   f64 score, f64 spam_probability (IEEE 754 bits as u64), u32 field count
 *   (8), u32 learned (version 2 only), then per field u32 length + bytes:
 *   from, to, call_id, source, rules, reasons, text, raw.
 * Version 1 records (no learned word) are still read, as learned none, and
 * become version 2 when a review changes them.
 * Decoding checks every length against the value, so a short or corrupt
 * record reads as SPIM_ESTORE, never as a read past its end.
 *
 * "audit" maps an 8-byte big-endian sequence number to one review action:
 *   u32 version (1), u32 0, i64 time_us, u64 quar_id, u32 field count (3),
 *   then u32 length + bytes of action, user, detail.
 * It is opened on first use (see store_int.h), so stores made before it
 * existed open read-only as before.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#define REC_VERSION 2
#define REC_NFIELDS 8
#define REC_HDR_V1 44
#define REC_HDR 48
#define REC_OFF_STATUS 4
#define REC_OFF_LEARNED 44
#define AUDIT_VERSION 1
#define AUDIT_HDR 28
#define AUDIT_NFIELDS 3
/* Bounds of one audit line's fields: they are short words and a sentence. */
#define AUDIT_FIELD_MAX 1024
/* Purge: at most this many records examined, and removed, per transaction. */
#define PURGE_SCAN_STEP 4096
#define PURGE_DEL_STEP 512
/* A SIP request is a few KiB; this bounds a record and its decode buffer. */
#define REC_MAX ((size_t)64 << 20)

_Static_assert(sizeof(double) == 8, "double must be IEEE 754 binary64");

static const struct spim_slice *field(const struct spim_quar_entry *e, int i)
{
    const struct spim_slice *f[REC_NFIELDS] = {&e->from,  &e->to,      &e->call_id, &e->source,
                                               &e->rules, &e->reasons, &e->text,    &e->raw};
    return f[i];
}

static uint64_t dbl_bits(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bits_dbl(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof(d));
    return d;
}

/* Size of e's record, or 0 when a field is bad (*err says which way). */
static size_t rec_size(const struct spim_quar_entry *e, int *err)
{
    size_t size = REC_HDR;

    for (int i = 0; i < REC_NFIELDS; i++) {
        const struct spim_slice *s = field(e, i);

        if (s->len > 0 && s->p == NULL) {
            *err = SPIM_EINVAL;
            return 0;
        }
        if (s->len > REC_MAX - 4 || size > REC_MAX - 4 - s->len) {
            *err = SPIM_ETOOBIG;
            return 0;
        }
        size += 4 + s->len;
    }
    return size;
}

static void rec_encode(unsigned char *p, const struct spim_quar_entry *e)
{
    size_t off = REC_HDR;

    spim_put_le32(p, REC_VERSION);
    spim_put_le32(p + REC_OFF_STATUS, e->status);
    spim_put_le64(p + 8, (uint64_t)e->time_us);
    spim_put_le64(p + 16, e->dedup_key);
    spim_put_le64(p + 24, dbl_bits(e->score));
    spim_put_le64(p + 32, dbl_bits(e->spam_probability));
    spim_put_le32(p + 40, REC_NFIELDS);
    spim_put_le32(p + REC_OFF_LEARNED, e->learned);
    for (int i = 0; i < REC_NFIELDS; i++) {
        const struct spim_slice *s = field(e, i);

        spim_put_le32(p + off, (uint32_t)s->len);
        off += 4;
        if (s->len > 0)
            memcpy(p + off, s->p, s->len);
        off += s->len;
    }
}

/* Fills *e with slices into p[0..len); SPIM_ESTORE for anything malformed. */
static int rec_decode(const unsigned char *p, size_t len, uint64_t id, struct spim_quar_entry *e)
{
    struct spim_slice *f[REC_NFIELDS] = {&e->from,  &e->to,      &e->call_id, &e->source,
                                         &e->rules, &e->reasons, &e->text,    &e->raw};
    size_t off;
    uint32_t version;

    if (len < REC_HDR_V1 || spim_get_le32(p + 40) != REC_NFIELDS)
        return SPIM_ESTORE;
    version = spim_get_le32(p);
    if (version == 1)
        off = REC_HDR_V1;
    else if (version == REC_VERSION && len >= REC_HDR)
        off = REC_HDR;
    else
        return SPIM_ESTORE;
    memset(e, 0, sizeof(*e));
    e->id = id;
    e->learned = version == 1 ? SPIM_QUAR_LEARNED_NONE : spim_get_le32(p + REC_OFF_LEARNED);
    e->status = spim_get_le32(p + REC_OFF_STATUS);
    e->time_us = (int64_t)spim_get_le64(p + 8);
    e->dedup_key = spim_get_le64(p + 16);
    e->score = bits_dbl(spim_get_le64(p + 24));
    e->spam_probability = bits_dbl(spim_get_le64(p + 32));
    for (int i = 0; i < REC_NFIELDS; i++) {
        uint32_t flen;

        if (len - off < 4)
            return SPIM_ESTORE;
        flen = spim_get_le32(p + off);
        off += 4;
        if (flen > len - off)
            return SPIM_ESTORE;
        f[i]->p = (const char *)p + off;
        f[i]->len = flen;
        off += flen;
    }
    return off == len ? 0 : SPIM_ESTORE;
}

static int valid_status(uint32_t status)
{
    return status <= SPIM_QUAR_DELETED;
}

static int valid_learned(uint32_t learned)
{
    return learned <= SPIM_QUAR_LEARNED_HAM;
}

/* Bytes of the pages a database uses (what the quota counts). */
static int db_bytes(MDB_txn *txn, MDB_dbi dbi, uint64_t *out)
{
    MDB_stat ms;
    int rc = mdb_stat(txn, dbi, &ms);

    if (rc != 0)
        return rc;
    *out = (uint64_t)ms.ms_psize * (ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages);
    return 0;
}

/* --- Put ----------------------------------------------------------------- */

struct put_ctx {
    const struct spim_quar_entry *e;
    size_t size;
    uint64_t max_bytes;
    uint64_t id;
    int existed, over;
};

/* The next id: the counter, but never at or below an id already present. */
static int next_id(struct spim_store *st, MDB_txn *txn, uint64_t *out)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t id;
    int rc;

    rc = spim__meta_get_u64(st, txn, SPIM__META_QUAR_NEXT, &id);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->quar, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) {
        uint64_t last = spim__get_be64(k.mv_data);

        if (last >= id)
            id = last + 1;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (id == 0)
        id = 1;
    if (id == UINT64_MAX)
        return SPIM_EFULL;
    *out = id;
    return 0;
}

static int put_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct put_ctx *c = ud;
    unsigned char dk[8], ik[8], iv[8];
    MDB_val dkey = {sizeof(dk), dk}, ikey = {sizeof(ik), ik}, v;
    uint64_t id;
    int rc;

    c->existed = 0;
    c->over = 0;
    spim_put_le64(dk, c->e->dedup_key);
    rc = mdb_get(txn, st->dedup, &dkey, &v);
    if (rc == 0 && v.mv_size == 8) {
        id = spim_get_le64(v.mv_data);
        spim__put_be64(ik, id);
        rc = mdb_get(txn, st->quar, &ikey, &v);
        if (rc == 0) {
            c->id = id;
            c->existed = 1;
            return 0; /* commits an empty transaction: no write */
        }
        /* A key left by a record deleted without it: overwrite it below. */
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (c->max_bytes > 0) {
        uint64_t used;

        if ((rc = db_bytes(txn, st->quar, &used)) != 0)
            return rc;
        if (used >= c->max_bytes || c->size > c->max_bytes - used) {
            c->over = 1;
            c->id = 0;
            return 0; /* nothing written */
        }
    }

    rc = next_id(st, txn, &id);
    if (rc != 0)
        return rc;
    spim__put_be64(ik, id);
    v.mv_size = c->size;
    v.mv_data = NULL;
    rc = mdb_put(txn, st->quar, &ikey, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc != 0)
        return rc;
    rec_encode(v.mv_data, c->e);

    spim_put_le64(iv, id);
    v.mv_size = sizeof(iv);
    v.mv_data = iv;
    if ((rc = mdb_put(txn, st->dedup, &dkey, &v, 0)) != 0 ||
        (rc = spim__meta_put_u64(st, txn, SPIM__META_QUAR_NEXT, id + 1)) != 0)
        return rc;
    c->id = id;
    return 0;
}

int spim_quar_put_quota(struct spim_store *st, const struct spim_quar_entry *e, uint64_t max_bytes,
                        uint64_t *id_out, int *existed, int *over)
{
    struct put_ctx c = {.e = e, .max_bytes = max_bytes};
    int rc = 0;

    if (st == NULL || e == NULL || id_out == NULL || existed == NULL || over == NULL ||
        !valid_status(e->status) || !valid_learned(e->learned))
        return SPIM_EINVAL;
    c.size = rec_size(e, &rc);
    if (c.size == 0)
        return rc;
    rc = spim__write(st, put_fn, &c);
    if (rc != 0)
        return rc;
    *id_out = c.id;
    *existed = c.existed;
    *over = c.over;
    return 0;
}

struct put_many_ctx {
    struct put_ctx *cs;
    size_t n;
};

static int put_many_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct put_many_ctx *pm = ud;

    for (size_t i = 0; i < pm->n; i++) {
        int rc = put_fn(st, txn, &pm->cs[i]);

        if (rc != 0)
            return rc;
    }
    return 0;
}

int spim_quar_put_many(struct spim_store *st, const struct spim_quar_entry *const *e, size_t n,
                       uint64_t max_bytes, uint64_t *ids, int *existed, int *over)
{
    struct put_ctx cs[64];
    struct put_many_ctx pm = {cs, n};
    int rc = 0;

    if (st == NULL || e == NULL || ids == NULL || existed == NULL || over == NULL ||
        n > sizeof(cs) / sizeof(cs[0]))
        return SPIM_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (e[i] == NULL || !valid_status(e[i]->status) || !valid_learned(e[i]->learned))
            return SPIM_EINVAL;
        memset(&cs[i], 0, sizeof(cs[i]));
        cs[i].e = e[i];
        cs[i].max_bytes = max_bytes;
        cs[i].size = rec_size(e[i], &rc);
        if (cs[i].size == 0)
            return rc;
    }
    if (n == 0)
        return 0;
    rc = spim__write(st, put_many_fn, &pm);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        ids[i] = cs[i].id;
        existed[i] = cs[i].existed;
        over[i] = cs[i].over;
    }
    return 0;
}

int spim_quar_put(struct spim_store *st, const struct spim_quar_entry *e, uint64_t *id_out,
                  int *existed)
{
    int over;

    return spim_quar_put_quota(st, e, 0, id_out, existed, &over);
}

/* --- Read ---------------------------------------------------------------- */

int spim_quar_get(struct spim_store *st, uint64_t id, struct spim_quar_entry *out, void **buf_out)
{
    unsigned char ik[8];
    MDB_val k = {sizeof(ik), ik}, v;
    MDB_txn *txn;
    void *buf = NULL;
    int rc;

    if (st == NULL || out == NULL || buf_out == NULL)
        return SPIM_EINVAL;
    spim__put_be64(ik, id);
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_get(txn, st->quar, &k, &v);
    if (rc == 0) {
        if (v.mv_size > REC_MAX || v.mv_size < REC_HDR)
            rc = SPIM_ESTORE;
        else if ((buf = malloc(v.mv_size)) == NULL)
            rc = SPIM_ENOMEM;
        else
            memcpy(buf, v.mv_data, v.mv_size);
    }
    spim__read_end(st, txn);
    if (rc != 0)
        return spim__err(rc);
    /* The slices point into our copy, which outlives the transaction. */
    rc = rec_decode(buf, v.mv_size, id, out);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *buf_out = buf;
    return 0;
}

/*
 * The walk holds one read transaction and the store lock shared throughout.
 * A callback may call the store again, writes included (they do not change
 * the snapshot being walked), but a write of its that would need the map to
 * grow fails with SPIM_EFULL instead of waiting for a lock its own thread
 * holds. A negative callback result is returned as is, a positive one stops.
 */
int spim_quar_foreach(struct spim_store *st, int (*cb)(const struct spim_quar_entry *e, void *ud),
                      void *ud)
{
    struct spim_quar_entry e;
    MDB_cursor *cur;
    MDB_txn *txn;
    MDB_val k, v;
    int rc, r = 0;

    if (st == NULL || cb == NULL)
        return SPIM_EINVAL;
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->quar, &cur);
    if (rc != 0)
        goto fail_txn;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        if (k.mv_size != 8) {
            rc = SPIM_ESTORE;
            break;
        }
        rc = rec_decode(v.mv_data, v.mv_size, spim__get_be64(k.mv_data), &e);
        if (rc != 0)
            break;
        /* A positive answer just stops; a negative one is the caller's error. */
        r = cb(&e, ud);
        if (r != 0)
            break;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
fail_txn:
    spim__read_end(st, txn);
    if (r != 0)
        return r < 0 ? r : 0;
    return spim__err(rc);
}

/* --- Delete and status ---------------------------------------------------- */

static int delete_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    uint64_t id = *(const uint64_t *)ud;
    unsigned char ik[8], dk[8];
    MDB_val ikey = {sizeof(ik), ik}, dkey = {sizeof(dk), dk}, v;
    struct spim_quar_entry e;
    int rc;

    spim__put_be64(ik, id);
    rc = mdb_get(txn, st->quar, &ikey, &v);
    if (rc != 0)
        return rc;
    /*
     * A corrupt record is still removed (that is what its owner wants); its
     * dedup key cannot be found then, and put() ignores such a stale key.
     */
    if (rec_decode(v.mv_data, v.mv_size, id, &e) == 0) {
        spim_put_le64(dk, e.dedup_key);
        rc = mdb_get(txn, st->dedup, &dkey, &v);
        if (rc == 0 && v.mv_size == 8 && spim_get_le64(v.mv_data) == id)
            rc = mdb_del(txn, st->dedup, &dkey, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
    }
    return mdb_del(txn, st->quar, &ikey, NULL);
}

int spim_quar_delete(struct spim_store *st, uint64_t id)
{
    if (st == NULL)
        return SPIM_EINVAL;
    return spim__write(st, delete_fn, &id);
}

/* --- Audit log ------------------------------------------------------------ */

/*
 * The audit handle for a write transaction: opened (created) in txn the
 * first time. A handle LMDB opens in a write transaction belongs to the
 * environment once that commits, and is dropped if it aborts; writes are
 * serialised by LMDB, so no two transactions of ours open it at once.
 * *fresh tells the caller to publish it after the commit.
 */
static int audit_dbi_write(struct spim_store *st, MDB_txn *txn, MDB_dbi *out, int *fresh)
{
    int rc;

    *fresh = 0;
    if (atomic_load(&st->audit_open)) {
        *out = st->audit;
        return 0;
    }
    rc = mdb_dbi_open(txn, "audit", MDB_CREATE, out);
    if (rc == 0)
        *fresh = 1;
    return rc;
}

static const struct spim_slice *audit_field(const struct spim_quar_audit *a, int i)
{
    const struct spim_slice *f[AUDIT_NFIELDS] = {&a->action, &a->user, &a->detail};
    return f[i];
}

/* Writes a as the next entry of dbi; the quar_id given overrides a's. */
static int audit_put(MDB_txn *txn, MDB_dbi dbi, const struct spim_quar_audit *a, uint64_t quar_id)
{
    unsigned char kb[8], *p;
    MDB_val k = {sizeof(kb), kb}, v;
    MDB_cursor *cur;
    uint64_t seq = 1;
    size_t size = AUDIT_HDR, off = AUDIT_HDR;
    int rc;

    for (int i = 0; i < AUDIT_NFIELDS; i++) {
        const struct spim_slice *f = audit_field(a, i);

        if ((f->len > 0 && f->p == NULL) || f->len > AUDIT_FIELD_MAX)
            return SPIM_EINVAL;
        size += 4 + f->len;
    }
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8)
        seq = spim__get_be64(k.mv_data) + 1;
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    spim__put_be64(kb, seq);
    k.mv_size = sizeof(kb);
    k.mv_data = kb;
    v.mv_size = size;
    v.mv_data = NULL;
    rc = mdb_put(txn, dbi, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc != 0)
        return rc;
    p = v.mv_data;
    spim_put_le32(p, AUDIT_VERSION);
    spim_put_le32(p + 4, 0);
    spim_put_le64(p + 8, (uint64_t)(a->time_us ? a->time_us : spim_now_us()));
    spim_put_le64(p + 16, quar_id);
    spim_put_le32(p + 24, AUDIT_NFIELDS);
    for (int i = 0; i < AUDIT_NFIELDS; i++) {
        const struct spim_slice *f = audit_field(a, i);

        spim_put_le32(p + off, (uint32_t)f->len);
        off += 4;
        if (f->len > 0)
            memcpy(p + off, f->p, f->len);
        off += f->len;
    }
    return 0;
}

static int audit_decode(const unsigned char *p, size_t len, uint64_t seq, struct spim_quar_audit *a)
{
    struct spim_slice *f[AUDIT_NFIELDS] = {&a->action, &a->user, &a->detail};
    size_t off = AUDIT_HDR;

    if (len < AUDIT_HDR || spim_get_le32(p) != AUDIT_VERSION ||
        spim_get_le32(p + 24) != AUDIT_NFIELDS)
        return SPIM_ESTORE;
    memset(a, 0, sizeof(*a));
    a->seq = seq;
    a->time_us = (int64_t)spim_get_le64(p + 8);
    a->quar_id = spim_get_le64(p + 16);
    for (int i = 0; i < AUDIT_NFIELDS; i++) {
        uint32_t flen;

        if (len - off < 4)
            return SPIM_ESTORE;
        flen = spim_get_le32(p + off);
        off += 4;
        if (flen > len - off)
            return SPIM_ESTORE;
        f[i]->p = (const char *)p + off;
        f[i]->len = flen;
        off += flen;
    }
    return off == len ? 0 : SPIM_ESTORE;
}

struct audit_ctx {
    const struct spim_quar_audit *a;
    MDB_dbi dbi;
    int fresh;
};

static int audit_add_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct audit_ctx *c = ud;
    int rc = audit_dbi_write(st, txn, &c->dbi, &c->fresh);

    if (rc != 0)
        return rc;
    return audit_put(txn, c->dbi, c->a, c->a->quar_id);
}

/* After a commit that opened the handle: later transactions reuse it. */
static void audit_publish(struct spim_store *st, const struct audit_ctx *c)
{
    if (c->fresh && !atomic_load(&st->audit_open)) {
        st->audit = c->dbi;
        atomic_store(&st->audit_open, 1);
    }
}

int spim_quar_audit_add(struct spim_store *st, const struct spim_quar_audit *a)
{
    struct audit_ctx c = {.a = a};
    int rc;

    if (st == NULL || a == NULL)
        return SPIM_EINVAL;
    rc = spim__write(st, audit_add_fn, &c);
    if (rc == 0)
        audit_publish(st, &c);
    return rc;
}

int spim_quar_audit_foreach(struct spim_store *st,
                            int (*cb)(const struct spim_quar_audit *a, void *ud), void *ud)
{
    struct spim_quar_audit a;
    MDB_cursor *cur;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    int rc, r = 0;

    if (st == NULL || cb == NULL)
        return SPIM_EINVAL;
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    /*
     * Not yet opened by this process: open it in this read transaction; the
     * handle then lives only as long as it (the abort in read_end closes it).
     */
    if (atomic_load(&st->audit_open))
        dbi = st->audit;
    else if ((rc = mdb_dbi_open(txn, "audit", 0, &dbi)) != 0)
        goto fail_txn;
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        goto fail_txn;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        if (k.mv_size != 8) {
            rc = SPIM_ESTORE;
            break;
        }
        rc = audit_decode(v.mv_data, v.mv_size, spim__get_be64(k.mv_data), &a);
        if (rc != 0)
            break;
        r = cb(&a, ud);
        if (r != 0)
            break;
    }
    mdb_cursor_close(cur);
fail_txn:
    if (rc == MDB_NOTFOUND)
        rc = 0; /* the end of the walk, or no audit database yet */
    spim__read_end(st, txn);
    if (r != 0)
        return r < 0 ? r : 0;
    return spim__err(rc);
}

/* --- Status, learned flag and usage ------------------------------------------ */

struct mark_ctx {
    uint64_t id;
    uint32_t status, learned;
    int keep_learned;
    const struct spim_quar_audit *a;
    struct audit_ctx ac;
};

/* Rewrites the record with a new status and learned flag (as version 2). */
static int mark_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct mark_ctx *c = ud;
    unsigned char ik[8];
    MDB_val ikey = {sizeof(ik), ik}, v;
    struct spim_quar_entry e;
    unsigned char *copy;
    size_t size;
    int rc = 0;

    c->ac.fresh = 0;
    spim__put_be64(ik, c->id);
    rc = mdb_get(txn, st->quar, &ikey, &v);
    if (rc != 0)
        return rc;
    /* Copy first: v points into the map, which the put may rearrange. */
    copy = malloc(v.mv_size);
    if (copy == NULL)
        return SPIM_ENOMEM;
    memcpy(copy, v.mv_data, v.mv_size);
    rc = rec_decode(copy, v.mv_size, c->id, &e);
    if (rc != 0)
        goto out;
    e.status = c->status;
    if (!c->keep_learned)
        e.learned = c->learned;
    size = rec_size(&e, &rc);
    if (size == 0)
        goto out;
    v.mv_size = size;
    v.mv_data = NULL;
    rc = mdb_put(txn, st->quar, &ikey, &v, MDB_RESERVE);
    if (rc != 0)
        goto out;
    rec_encode(v.mv_data, &e); /* the slices of e point into copy, not the map */
    if (c->a != NULL) {
        rc = audit_dbi_write(st, txn, &c->ac.dbi, &c->ac.fresh);
        if (rc == 0)
            rc = audit_put(txn, c->ac.dbi, c->a, c->id);
    }
out:
    free(copy);
    return rc;
}

int spim_quar_mark(struct spim_store *st, uint64_t id, uint32_t status, uint32_t learned,
                   const struct spim_quar_audit *a)
{
    struct mark_ctx c = {.id = id, .status = status, .learned = learned, .a = a};
    int rc;

    if (st == NULL || !valid_status(status) || !valid_learned(learned))
        return SPIM_EINVAL;
    rc = spim__write(st, mark_fn, &c);
    if (rc == 0)
        audit_publish(st, &c.ac);
    return rc;
}

int spim_quar_set_status(struct spim_store *st, uint64_t id, uint32_t status)
{
    struct mark_ctx c = {.id = id, .status = status, .keep_learned = 1};

    if (st == NULL || !valid_status(status))
        return SPIM_EINVAL;
    return spim__write(st, mark_fn, &c);
}

int spim_quar_usage(struct spim_store *st, struct spim_quar_usage *out)
{
    MDB_stat ms;
    MDB_txn *txn;
    uint64_t bytes = 0;
    int rc;

    if (st == NULL || out == NULL)
        return SPIM_EINVAL;
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_stat(txn, st->quar, &ms);
    if (rc == 0)
        rc = db_bytes(txn, st->quar, &bytes);
    spim__read_end(st, txn);
    if (rc != 0)
        return spim__err(rc);
    out->records = ms.ms_entries;
    out->bytes = bytes;
    return 0;
}

/* --- Purge --------------------------------------------------------------------- */

struct purge_ctx {
    int64_t before_us;
    unsigned flags;
    int dry_run;
    uint64_t from;    /* first id to examine in this step */
    uint64_t next;    /* out: where the next step starts */
    uint64_t removed; /* out: removed (or, dry, matching) in this step */
    int done;         /* out: the walk reached the end */
};

/* One bounded step of the purge: examines ids from c->from upwards. */
static int purge_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct purge_ctx *c = ud;
    unsigned char ik[8], dk[8];
    MDB_val k = {sizeof(ik), ik}, v, dkey = {sizeof(dk), dk}, dv;
    struct spim_quar_entry e;
    MDB_cursor *cur;
    unsigned scanned = 0;
    int rc;

    c->removed = 0;
    c->done = 0;
    rc = mdb_cursor_open(txn, st->quar, &cur);
    if (rc != 0)
        return rc;
    spim__put_be64(ik, c->from);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t id;
        int dec;

        if (k.mv_size != 8) {
            rc = SPIM_ESTORE;
            break;
        }
        id = spim__get_be64(k.mv_data);
        if (scanned++ >= PURGE_SCAN_STEP || c->removed >= PURGE_DEL_STEP) {
            c->next = id;
            break;
        }
        dec = rec_decode(v.mv_data, v.mv_size, id, &e);
        /* A corrupt record is left for `delete`: its age cannot be known. */
        if (dec != 0 || !(e.time_us < c->before_us ||
                          ((c->flags & SPIM_QUAR_PURGE_DELETED) && e.status == SPIM_QUAR_DELETED)))
            continue;
        c->removed++;
        if (c->dry_run)
            continue;
        spim_put_le64(dk, e.dedup_key);
        rc = mdb_get(txn, st->dedup, &dkey, &dv);
        if (rc == 0 && dv.mv_size == 8 && spim_get_le64(dv.mv_data) == id)
            rc = mdb_del(txn, st->dedup, &dkey, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        c->done = 1;
        rc = 0;
    }
    return rc;
}

int spim_quar_purge(struct spim_store *st, int64_t before_us, unsigned flags, int dry_run,
                    uint64_t *removed)
{
    struct purge_ctx c = {.before_us = before_us, .flags = flags, .dry_run = dry_run, .from = 0};
    uint64_t total = 0;
    int rc;

    if (st == NULL || removed == NULL || (flags & ~(unsigned)SPIM_QUAR_PURGE_DELETED))
        return SPIM_EINVAL;
    *removed = 0;
    for (;;) {
        if (dry_run) {
            MDB_txn *txn;

            rc = spim__read_begin(st, &txn);
            if (rc != 0)
                return rc;
            rc = spim__err(purge_fn(st, txn, &c));
            spim__read_end(st, txn);
        } else {
            rc = spim__write(st, purge_fn, &c);
        }
        if (rc != 0)
            break;
        total += c.removed;
        *removed = total;
        if (c.done)
            break;
        c.from = c.next;
    }
    return rc;
}
