/*
 * quarantine.c: held messages in the "quar" and "quar_dedup" databases.
 *
 * "quar" maps an 8-byte big-endian id to a record, big-endian so that the
 * B-tree (memcmp order) is id order and "newest first" is a backwards cursor
 * walk. Ids come from the "quar_next" counter in meta, so they grow with
 * time. "quar_dedup" maps the 8-byte little-endian dedup key to the id (LE).
 *
 * A record is explicit, never a struct image (all integers little-endian):
 *   u32 record version (1), u32 status, i64 time_us, u64 dedup_key,
 *   f64 score, f64 spam_probability (IEEE 754 bits as u64), u32 field count
 *   (8), then per field u32 length + bytes: from, to, call_id, source,
 *   rules, reasons, text, raw.
 * Decoding checks every length against the value, so a short or corrupt
 * record reads as SPIM_ESTORE, never as a read past its end.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#define REC_VERSION 1
#define REC_NFIELDS 8
#define REC_HDR 44
#define REC_OFF_STATUS 4
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

    spim__put_le32(p, REC_VERSION);
    spim__put_le32(p + REC_OFF_STATUS, e->status);
    spim__put_le64(p + 8, (uint64_t)e->time_us);
    spim__put_le64(p + 16, e->dedup_key);
    spim__put_le64(p + 24, dbl_bits(e->score));
    spim__put_le64(p + 32, dbl_bits(e->spam_probability));
    spim__put_le32(p + 40, REC_NFIELDS);
    for (int i = 0; i < REC_NFIELDS; i++) {
        const struct spim_slice *s = field(e, i);

        spim__put_le32(p + off, (uint32_t)s->len);
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
    size_t off = REC_HDR;

    if (len < REC_HDR || spim__get_le32(p) != REC_VERSION || spim__get_le32(p + 40) != REC_NFIELDS)
        return SPIM_ESTORE;
    memset(e, 0, sizeof(*e));
    e->id = id;
    e->status = spim__get_le32(p + REC_OFF_STATUS);
    e->time_us = (int64_t)spim__get_le64(p + 8);
    e->dedup_key = spim__get_le64(p + 16);
    e->score = bits_dbl(spim__get_le64(p + 24));
    e->spam_probability = bits_dbl(spim__get_le64(p + 32));
    for (int i = 0; i < REC_NFIELDS; i++) {
        uint32_t flen;

        if (len - off < 4)
            return SPIM_ESTORE;
        flen = spim__get_le32(p + off);
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

/* --- Put ----------------------------------------------------------------- */

struct put_ctx {
    const struct spim_quar_entry *e;
    size_t size;
    uint64_t id;
    int existed;
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
    spim__put_le64(dk, c->e->dedup_key);
    rc = mdb_get(txn, st->dedup, &dkey, &v);
    if (rc == 0 && v.mv_size == 8) {
        id = spim__get_le64(v.mv_data);
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

    spim__put_le64(iv, id);
    v.mv_size = sizeof(iv);
    v.mv_data = iv;
    if ((rc = mdb_put(txn, st->dedup, &dkey, &v, 0)) != 0 ||
        (rc = spim__meta_put_u64(st, txn, SPIM__META_QUAR_NEXT, id + 1)) != 0)
        return rc;
    c->id = id;
    return 0;
}

int spim_quar_put(struct spim_store *st, const struct spim_quar_entry *e, uint64_t *id_out,
                  int *existed)
{
    struct put_ctx c = {.e = e};
    int rc = 0;

    if (st == NULL || e == NULL || id_out == NULL || existed == NULL || !valid_status(e->status))
        return SPIM_EINVAL;
    c.size = rec_size(e, &rc);
    if (c.size == 0)
        return rc;
    rc = spim__write(st, put_fn, &c);
    if (rc != 0)
        return rc;
    *id_out = c.id;
    *existed = c.existed;
    return 0;
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
        spim__put_le64(dk, e.dedup_key);
        rc = mdb_get(txn, st->dedup, &dkey, &v);
        if (rc == 0 && v.mv_size == 8 && spim__get_le64(v.mv_data) == id)
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

struct status_ctx {
    uint64_t id;
    uint32_t status;
};

static int status_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    const struct status_ctx *c = ud;
    unsigned char ik[8];
    MDB_val ikey = {sizeof(ik), ik}, v;
    struct spim_quar_entry e;
    unsigned char *copy;
    int rc;

    spim__put_be64(ik, c->id);
    rc = mdb_get(txn, st->quar, &ikey, &v);
    if (rc != 0)
        return rc;
    rc = rec_decode(v.mv_data, v.mv_size, c->id, &e);
    if (rc != 0)
        return rc;
    /* Copy first: v points into the map, which the put may rearrange. */
    copy = malloc(v.mv_size);
    if (copy == NULL)
        return SPIM_ENOMEM;
    memcpy(copy, v.mv_data, v.mv_size);
    spim__put_le32(copy + REC_OFF_STATUS, c->status);
    v.mv_data = copy;
    rc = mdb_put(txn, st->quar, &ikey, &v, 0);
    free(copy);
    return rc;
}

int spim_quar_set_status(struct spim_store *st, uint64_t id, uint32_t status)
{
    struct status_ctx c = {id, status};

    if (st == NULL || !valid_status(status))
        return SPIM_EINVAL;
    return spim__write(st, status_fn, &c);
}
