/*
 * test_quarantine.c: the review side of the quarantine against real LMDB
 * files in a mkdtemp directory: the learned flag and its record format
 * (version 1 records still read), mark + audit in one transaction, the
 * audit log, purge by age and of deleted records, the size quota, and a
 * read-only open of a store that has no audit database yet.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store.h"

#include <dirent.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"

#define setup fx_setup_store
#define teardown fx_teardown

static struct spim_quar_entry entry(uint64_t dedup, int64_t time_us, size_t rawlen, char *rawbuf)
{
    struct spim_quar_entry e = {
        .time_us = time_us,
        .status = SPIM_QUAR_HELD,
        .score = 9.5,
        .spam_probability = 0.99,
        .dedup_key = dedup,
        .from = sl("<sip:alice@example.com>;tag=1"),
        .to = sl("<sip:bob@example.org>"),
        .call_id = sl("c@h"),
        .source = sl("127.0.0.1:5060"),
        .rules = sl("URL_SHORTENER"),
        .reasons = sl("score 9.50 >= block_score 8.00"),
        .text = sl("claim your prize"),
        .raw = {rawbuf, rawlen},
    };
    return e;
}

static uint64_t put(struct spim_store *st, uint64_t dedup, int64_t time_us)
{
    static char raw[] = "MESSAGE sip:bob@example.org SIP/2.0\r\n\r\n";
    struct spim_quar_entry e = entry(dedup, time_us, sizeof(raw) - 1, raw);
    uint64_t id = 0;
    int existed = -1;

    assert_int_equal(spim_quar_put(st, &e, &id, &existed), 0);
    assert_int_equal(existed, 0);
    return id;
}

static void get(struct spim_store *st, uint64_t id, struct spim_quar_entry *e)
{
    void *buf = NULL;

    assert_int_equal(spim_quar_get(st, id, e, &buf), 0);
    free(buf); /* only the scalar fields are looked at */
}

static void test_quarantine_learned_roundtrip(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry e;
    uint64_t id = put(f->st, 1, 1000);

    get(f->st, id, &e);
    assert_int_equal(e.learned, SPIM_QUAR_LEARNED_NONE);
    assert_int_equal(spim_quar_mark(f->st, id, SPIM_QUAR_DELETED, SPIM_QUAR_LEARNED_SPAM, NULL), 0);
    get(f->st, id, &e);
    assert_int_equal(e.status, SPIM_QUAR_DELETED);
    assert_int_equal(e.learned, SPIM_QUAR_LEARNED_SPAM);
    /* set_status keeps the learned flag. */
    assert_int_equal(spim_quar_set_status(f->st, id, SPIM_QUAR_RELEASED), 0);
    get(f->st, id, &e);
    assert_int_equal(e.status, SPIM_QUAR_RELEASED);
    assert_int_equal(e.learned, SPIM_QUAR_LEARNED_SPAM);
    assert_int_equal(spim_quar_mark(f->st, id, SPIM_QUAR_HELD, 7, NULL), SPIM_EINVAL);
    assert_int_equal(spim_quar_mark(f->st, id, 9, SPIM_QUAR_LEARNED_HAM, NULL), SPIM_EINVAL);
    assert_int_equal(spim_quar_mark(f->st, id + 1, SPIM_QUAR_HELD, 0, NULL), SPIM_ENOTFOUND);
}

/* A record written by the first format (44-byte header, no learned word). */
static void test_quarantine_reads_version1_record(void **state)
{
    struct fx *f = *state;
    const char *fields[8] = {"from", "to", "cid", "1.2.3.4:5", "R1", "why", "text", "RAW"};
    unsigned char rec[256] = {0}, key[8] = {0, 0, 0, 0, 0, 0, 0, 0x42};
    size_t off = 44;
    struct spim_quar_entry e;
    void *buf = NULL;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {sizeof(key), key}, v;

    rec[0] = 1;              /* version 1 */
    rec[4] = SPIM_QUAR_HELD; /* status */
    rec[8] = 0x10;           /* time_us = 16 */
    rec[16] = 0x99;          /* dedup key */
    rec[40] = 8;             /* field count */
    for (int i = 0; i < 8; i++) {
        size_t n = strlen(fields[i]);

        rec[off] = (unsigned char)n;
        memcpy(rec + off + 4, fields[i], n);
        off += 4 + n;
    }
    spim_store_close(f->st);
    f->st = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "quar", 0, &dbi), 0);
    v.mv_size = off;
    v.mv_data = rec;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    assert_int_equal(spim_quar_get(f->st, 0x42, &e, &buf), 0);
    assert_int_equal(e.learned, SPIM_QUAR_LEARNED_NONE);
    assert_int_equal(e.time_us, 16);
    assert_int_equal(e.raw.len, 3);
    assert_memory_equal(e.raw.p, "RAW", 3);
    assert_memory_equal(e.text.p, "text", 4);
    free(buf);
    /* A review rewrites it in the current format, fields intact. */
    assert_int_equal(spim_quar_mark(f->st, 0x42, SPIM_QUAR_RELEASED, SPIM_QUAR_LEARNED_HAM, NULL),
                     0);
    assert_int_equal(spim_quar_get(f->st, 0x42, &e, &buf), 0);
    assert_int_equal(e.status, SPIM_QUAR_RELEASED);
    assert_int_equal(e.learned, SPIM_QUAR_LEARNED_HAM);
    assert_int_equal(e.dedup_key, 0x99);
    assert_memory_equal(e.raw.p, "RAW", 3);
    assert_memory_equal(e.source.p, "1.2.3.4:5", 9);
    free(buf);
}

struct audits {
    unsigned n;
    uint64_t seq[16], quar_id[16];
    char action[16][32], user[16][32];
};

static int collect_audit(const struct spim_quar_audit *a, void *ud)
{
    struct audits *s = ud;

    if (s->n < 16) {
        s->seq[s->n] = a->seq;
        s->quar_id[s->n] = a->quar_id;
        snprintf(s->action[s->n], 32, "%.*s", (int)a->action.len, a->action.p);
        snprintf(s->user[s->n], 32, "%.*s", (int)a->user.len, a->user.p);
    }
    s->n++;
    return 0;
}

static void test_quarantine_audit_log(void **state)
{
    struct fx *f = *state;
    struct spim_quar_audit a = {.action = sl("release"), .user = sl("alice"), .detail = sl("200")};
    struct spim_quar_audit p = {.action = sl("purge"), .user = sl("serve"), .detail = sl("3")};
    struct audits s = {0};
    uint64_t id = put(f->st, 1, 1000);
    char big[2048];

    /* No audit database yet: an empty walk. */
    assert_int_equal(spim_quar_audit_foreach(f->st, collect_audit, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(spim_quar_mark(f->st, id, SPIM_QUAR_RELEASED, 0, &a), 0);
    assert_int_equal(spim_quar_audit_add(f->st, &p), 0);
    /* mark of a missing record writes no audit line either. */
    assert_int_equal(spim_quar_mark(f->st, id + 5, SPIM_QUAR_RELEASED, 0, &a), SPIM_ENOTFOUND);
    memset(big, 'x', sizeof(big));
    p.detail = (struct spim_slice){big, sizeof(big)};
    assert_int_equal(spim_quar_audit_add(f->st, &p), SPIM_EINVAL);
    assert_int_equal(spim_quar_audit_foreach(f->st, collect_audit, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.action[0], "purge"); /* newest first */
    assert_string_equal(s.user[0], "serve");
    assert_int_equal(s.quar_id[0], 0);
    assert_string_equal(s.action[1], "release");
    assert_string_equal(s.user[1], "alice");
    assert_int_equal(s.quar_id[1], id);
    assert_true(s.seq[0] == s.seq[1] + 1);

    /* The log survives a reopen, read-only too. */
    spim_store_close(f->st);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
    s.n = 0;
    assert_int_equal(spim_quar_audit_foreach(f->st, collect_audit, &s), 0);
    assert_int_equal(s.n, 2);
}

/* A store made before the audit log opens read-only and reads as an empty log. */
static void test_quarantine_rdonly_without_audit(void **state)
{
    struct fx *f = *state;
    struct audits s = {0};

    put(f->st, 1, 1000);
    spim_store_close(f->st);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
    assert_int_equal(spim_quar_audit_foreach(f->st, collect_audit, &s), 0);
    assert_int_equal(s.n, 0);
}

static int count_cb(const struct spim_quar_entry *e, void *ud)
{
    (void)e;
    (*(unsigned *)ud)++;
    return 0;
}

static void test_quarantine_purge(void **state)
{
    struct fx *f = *state;
    uint64_t ids[1500], n = 0;
    unsigned left = 0;
    struct spim_quar_entry e;
    void *buf = NULL;
    int existed;

    /* 1200 old records (more than one purge step), 300 new, one of them deleted. */
    for (int i = 0; i < 1500; i++)
        ids[i] = put(f->st, 100 + (uint64_t)i, i < 1200 ? 1000 + i : 5000000 + i);
    assert_int_equal(spim_quar_set_status(f->st, ids[1400], SPIM_QUAR_DELETED), 0);

    assert_int_equal(spim_quar_purge(f->st, 5000000, 0, 1, &n), 0); /* dry run */
    assert_int_equal(n, 1200);
    assert_int_equal(spim_quar_foreach(f->st, count_cb, &left), 0);
    assert_int_equal(left, 1500);

    assert_int_equal(spim_quar_purge(f->st, 5000000, 0, 0, &n), 0);
    assert_int_equal(n, 1200);
    left = 0;
    assert_int_equal(spim_quar_foreach(f->st, count_cb, &left), 0);
    assert_int_equal(left, 300);
    assert_int_equal(spim_quar_get(f->st, ids[0], &e, &buf), SPIM_ENOTFOUND);
    assert_int_equal(spim_quar_get(f->st, ids[1200], &e, &buf), 0);
    free(buf);

    assert_int_equal(spim_quar_purge(f->st, 0, SPIM_QUAR_PURGE_DELETED, 0, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(spim_quar_get(f->st, ids[1400], &e, &buf), SPIM_ENOTFOUND);

    /* The dedup keys went with them: the same key makes a new record. */
    {
        static char raw[] = "MESSAGE sip:x SIP/2.0\r\n\r\n";
        struct spim_quar_entry again = entry(100, 7, sizeof(raw) - 1, raw);
        uint64_t id;

        assert_int_equal(spim_quar_put(f->st, &again, &id, &existed), 0);
        assert_int_equal(existed, 0);
        assert_true(id > ids[1499]);
    }
    assert_int_equal(spim_quar_purge(f->st, 0, 4, 0, &n), SPIM_EINVAL);
}

static void test_quarantine_quota(void **state)
{
    struct fx *f = *state;
    char *raw = malloc(8192);
    struct spim_quar_usage u0, u1;
    uint64_t id, first = 0;
    unsigned stored = 0;
    int existed, over = 0;

    assert_non_null(raw);
    memset(raw, 'a', 8192);
    assert_int_equal(spim_quar_usage(f->st, &u0), 0);
    assert_int_equal(u0.records, 0);
    for (uint64_t i = 1; i <= 200 && !over; i++) {
        struct spim_quar_entry e = entry(i, 1000, 8192, raw);

        assert_int_equal(spim_quar_put_quota(f->st, &e, 256 << 10, &id, &existed, &over), 0);
        if (!over) {
            stored++;
            if (first == 0)
                first = id;
        } else {
            assert_int_equal(id, 0);
        }
    }
    assert_true(over);
    /* 8 KiB records (overflow pages) under a 256 KiB quota: about 30 fit. */
    assert_true(stored >= 20 && stored <= 32);
    assert_int_equal(spim_quar_usage(f->st, &u1), 0);
    assert_int_equal(u1.records, stored);
    assert_true(u1.bytes <= 256 << 10);
    assert_true(u1.bytes > 200 << 10);
    {
        /* A retransmission of a held record still maps to it when full. */
        struct spim_quar_entry e = entry(1, 1000, 8192, raw);

        assert_int_equal(spim_quar_put_quota(f->st, &e, 256 << 10, &id, &existed, &over), 0);
        assert_int_equal(existed, 1);
        assert_int_equal(over, 0);
        assert_int_equal(id, first);
    }
    /* Space freed by a purge is space again. */
    {
        uint64_t n;
        struct spim_quar_entry e = entry(9999, 1000, 8192, raw);

        assert_int_equal(spim_quar_purge(f->st, 2000, 0, 0, &n), 0);
        assert_int_equal(n, stored);
        assert_int_equal(spim_quar_put_quota(f->st, &e, 256 << 10, &id, &existed, &over), 0);
        assert_int_equal(over, 0);
        assert_true(id > 0);
    }
    free(raw);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_quarantine_learned_roundtrip),
        T(test_quarantine_reads_version1_record),
        T(test_quarantine_audit_log),
        T(test_quarantine_rdonly_without_audit),
        T(test_quarantine_purge),
        T(test_quarantine_quota),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
