/*
 * test_contacts_table.c: the in-memory contacts table of serve: a miss,
 * the fill from the store and the hit; both directions seen from both
 * sides; a delivery before the store was read merged at the fill; every
 * update handed once (and again after a failed write); a flood of ten
 * times the slots in new pairs, which keeps memory fixed and the dirty
 * entries over the clean ones; saturation; threads delivering, reading and
 * flushing at once, with no update lost.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "policy.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static struct spim_contacts_table *table(size_t slots)
{
    struct spim_contacts_table *t = NULL;

    assert_int_equal(spim_contacts_table_new(slots, &t), 0);
    assert_non_null(t);
    return t;
}

static struct spim_contact rec(uint64_t lo, uint64_t hi, uint32_t n1, uint32_t n2, uint32_t d1,
                               uint32_t d2)
{
    struct spim_contact c = {lo, hi, n1, n2, d1, d2};

    return c;
}

static void assert_view(struct spim_contacts_table *t, uint64_t from, uint64_t to, uint32_t sent,
                        uint32_t received, uint32_t sent_day, uint32_t received_day)
{
    struct spim_contact_view v;

    memset(&v, 0xff, sizeof(v));
    assert_int_equal(spim_contacts_table_get(t, from, to, &v), 1);
    assert_int_equal(v.sent, sent);
    assert_int_equal(v.received, received);
    assert_int_equal(v.sent_day, sent_day);
    assert_int_equal(v.received_day, received_day);
}

static int has(struct spim_contacts_table *t, uint64_t a, uint64_t b)
{
    struct spim_contact_view v;

    return spim_contacts_table_get(t, a, b, &v);
}

static void test_contacts_table_miss_fill_hit(void **state)
{
    struct spim_contacts_table *t = table(100);
    struct spim_contact c = rec(10, 20, 0, 0, 0, 0), out[4];

    size_t mem = spim_contacts_table_memory(t);

    (void)state;
    /* At least the 100 slots asked for, each two keys and two counts. */
    assert_true(mem >= 100 * (2 * sizeof(uint64_t) + 2 * sizeof(uint32_t)));
    assert_int_equal(has(t, 20, 10), 0);
    /* "None in the store" is cached too, so the next message does not read it again. */
    spim_contacts_table_fill(t, &c);
    assert_view(t, 10, 20, 0, 0, 0, 0);
    assert_view(t, 20, 10, 0, 0, 0, 0);
    /* A clean entry takes a newer record from the store; lo > hi is taken in order. */
    c = rec(20, 10, 4, 7, 100, 90); /* 20 -> 10: 4 on day 100; 10 -> 20: 7 on day 90 */
    spim_contacts_table_fill(t, &c);
    assert_view(t, 10, 20, 7, 4, 90, 100);
    assert_view(t, 20, 10, 4, 7, 100, 90);
    /* Nothing was delivered: nothing to write. */
    assert_int_equal(spim_contacts_table_dirty(t, out, 4), 0);
    assert_int_equal(spim_contacts_table_unfilled(t, out, 4), 0);
    spim_contacts_table_free(t);
    spim_contacts_table_free(NULL);
    assert_int_equal(spim_contacts_table_new(10, NULL), SPIM_EINVAL);
}

static void test_contacts_table_delivered_both_directions(void **state)
{
    struct spim_contacts_table *t = table(64);
    struct spim_contact c = rec(1, 2, 0, 0, 0, 0), out[4];

    (void)state;
    spim_contacts_table_fill(t, &c);
    spim_contacts_table_delivered(t, 1, 2, 19000, 0);
    spim_contacts_table_delivered(t, 2, 1, 19001, 0);
    spim_contacts_table_delivered(t, 2, 1, 19002, 0);
    assert_view(t, 1, 2, 1, 2, 19000, 19002);
    assert_view(t, 2, 1, 2, 1, 19002, 19000);
    /* An earlier day (a clock step back) does not move the last day back. */
    spim_contacts_table_delivered(t, 1, 2, 18000, 0);
    assert_view(t, 1, 2, 2, 2, 19000, 19002);
    assert_int_equal(spim_contacts_table_dirty(t, out, 4), 1);
    assert_true(out[0].lo == 1 && out[0].hi == 2);
    assert_int_equal(out[0].lo_hi_n, 2);
    assert_int_equal(out[0].hi_lo_n, 2);
    assert_int_equal(out[0].lo_hi_day, 19000);
    assert_int_equal(out[0].hi_lo_day, 19002);
    /* A party writing to itself: one count, seen as sent and received. */
    c = rec(5, 5, 0, 0, 0, 0);
    spim_contacts_table_fill(t, &c);
    spim_contacts_table_delivered(t, 5, 5, 7, 0);
    assert_view(t, 5, 5, 1, 1, 7, 7);
    assert_int_equal(spim_contacts_table_dirty(t, out, 4), 1);
    assert_int_equal(out[0].lo_hi_n, 1);
    assert_int_equal(out[0].hi_lo_n, 0);
    spim_contacts_table_free(t);
}

/*
 * A pair silent for longer than forget_days starts over when it is written
 * to again: its old counts are dropped, in the table and when they come
 * from the store after the delivery, so the recipient's old answer does not
 * make the sender a contact again (the pair is a stranger's first message).
 */
static void test_contacts_table_forgets_silent_pairs(void **state)
{
    struct spim_contacts_table *t = table(64);
    struct spim_contact c = rec(1, 2, 0, 0, 0, 0), out[4];

    (void)state;
    spim_contacts_table_fill(t, &c);
    spim_contacts_table_delivered(t, 1, 2, 1000, 180);
    spim_contacts_table_delivered(t, 2, 1, 1001, 180);
    assert_view(t, 1, 2, 1, 1, 1000, 1001);
    /* 180 days after the last, still remembered; 181, forgotten. */
    spim_contacts_table_delivered(t, 1, 2, 1181, 180);
    assert_view(t, 1, 2, 2, 1, 1181, 1001);
    spim_contacts_table_delivered(t, 1, 2, 1181 + 181, 180);
    assert_view(t, 1, 2, 1, 0, 1362, 0);
    assert_int_equal(spim_contacts_table_dirty(t, out, 4), 1);
    assert_int_equal(out[0].lo_hi_n, 1);
    assert_int_equal(out[0].hi_lo_n, 0);
    /* forget_days 0: never forgotten. */
    spim_contacts_table_delivered(t, 2, 1, 9000, 0);
    assert_view(t, 1, 2, 1, 1, 1362, 9000);

    /* Delivered before the store was read, the store's record long silent:
     * merged in, it is dropped; a recent one is counted on. */
    spim_contacts_table_delivered(t, 30, 40, 5000, 180);
    c = rec(30, 40, 7, 9, 4000, 4100); /* last active on day 4100: 900 days before */
    spim_contacts_table_fill(t, &c);
    assert_view(t, 30, 40, 1, 0, 5000, 0);
    spim_contacts_table_delivered(t, 50, 60, 5000, 180);
    c = rec(50, 60, 7, 9, 4990, 4995);
    spim_contacts_table_fill(t, &c);
    assert_view(t, 50, 60, 8, 9, 5000, 4995);
    spim_contacts_table_free(t);
}

static void test_contacts_table_delivered_before_fill_merges(void **state)
{
    struct spim_contacts_table *t = table(64);
    struct spim_contact c, out[4];

    (void)state;
    /* Delivered with no entry: counted, but it is not the pair's count yet. */
    spim_contacts_table_delivered(t, 9, 3, 500, 0);
    spim_contacts_table_delivered(t, 9, 3, 501, 0);
    assert_int_equal(has(t, 3, 9), 0);
    assert_int_equal(spim_contacts_table_dirty(t, out, 4), 0);
    assert_int_equal(spim_contacts_table_unfilled(t, out, 4), 1);
    assert_true(out[0].lo == 3 && out[0].hi == 9);
    assert_int_equal(out[0].hi_lo_n, 2);
    assert_int_equal(out[0].lo_hi_n, 0);
    /* Still waiting after a dirty pass: listed again. */
    assert_int_equal(spim_contacts_table_unfilled(t, out, 4), 1);
    /* The store's record is merged in: its counts plus the two. */
    c = rec(3, 9, 5, 10, 400, 450);
    spim_contacts_table_fill(t, &c);
    assert_view(t, 9, 3, 12, 5, 501, 400);
    assert_int_equal(spim_contacts_table_unfilled(t, out, 4), 0);
    /* A dirty entry is never overwritten by a (stale) store record. */
    c = rec(3, 9, 0, 0, 0, 0);
    spim_contacts_table_fill(t, &c);
    assert_view(t, 9, 3, 12, 5, 501, 400);
    assert_int_equal(spim_contacts_table_dirty(t, out, 4), 1);
    assert_int_equal(out[0].lo_hi_n, 5);
    assert_int_equal(out[0].hi_lo_n, 12);
    assert_int_equal(out[0].lo_hi_day, 400);
    assert_int_equal(out[0].hi_lo_day, 501);
    spim_contacts_table_free(t);
}

static void test_contacts_table_dirty_hands_each_once(void **state)
{
    struct spim_contacts_table *t = table(1024);
    struct spim_contact out[300];
    unsigned char seen[200];
    size_t got, total = 0;

    (void)state;
    for (uint64_t i = 0; i < 200; i++) {
        struct spim_contact c = rec(i * 2, i * 2 + 1, 0, 0, 0, 0);

        spim_contacts_table_fill(t, &c);
        spim_contacts_table_delivered(t, i * 2, i * 2 + 1, 1, 0);
        spim_contacts_table_delivered(t, i * 2, i * 2 + 1, 2, 0); /* two updates, one record */
    }
    /* In pieces of 64: every pair exactly once, oldest first. */
    memset(seen, 0, sizeof(seen));
    for (int round = 0; round < 10 && (got = spim_contacts_table_dirty(t, out, 64)) > 0; round++) {
        for (size_t k = 0; k < got; k++) {
            uint64_t i = out[k].lo / 2;

            assert_true(i < 200);
            assert_int_equal(i, total + k);
            assert_int_equal(seen[i], 0);
            assert_int_equal(out[k].lo_hi_n, 2);
            seen[i] = 1;
        }
        total += got;
    }
    assert_int_equal(total, 200);
    assert_int_equal(spim_contacts_table_dirty(t, out, 300), 0);
    /* A new delivery hands the pair again, with its whole count. */
    spim_contacts_table_delivered(t, 11, 10, 3, 0);
    assert_int_equal(spim_contacts_table_dirty(t, out, 300), 1);
    assert_true(out[0].lo == 10 && out[0].hi == 11);
    assert_int_equal(out[0].lo_hi_n, 2);
    assert_int_equal(out[0].hi_lo_n, 1);
    /* The write failed: redirty gives it back, once. */
    spim_contacts_table_redirty(t, out, 1);
    assert_int_equal(spim_contacts_table_dirty(t, out, 300), 1);
    assert_int_equal(out[0].hi_lo_n, 1);
    assert_int_equal(spim_contacts_table_dirty(t, out, 300), 0);
    /* A refill from a store that lacks the failed write keeps the larger counts. */
    out[0] = rec(10, 11, 2, 1, 2, 3);
    {
        struct spim_contact stale = rec(10, 11, 2, 0, 2, 0);

        spim_contacts_table_fill(t, &stale);
    }
    spim_contacts_table_redirty(t, out, 1);
    assert_view(t, 10, 11, 2, 1, 2, 3);
    assert_int_equal(spim_contacts_table_dirty(t, out, 300), 1);
    assert_int_equal(spim_contacts_table_dirty_evictions(t), 0);
    spim_contacts_table_free(t);
}

static void test_contacts_table_flood_keeps_dirty(void **state)
{
    const size_t slots = 1024;
    struct spim_contacts_table *t = table(slots);
    size_t mem = spim_contacts_table_memory(t), got, total = 0, old_clean = 0;
    struct spim_contact out[256];

    (void)state;
    assert_true(mem >= slots * 40);
    /* 128 pairs with an update waiting, and 512 clean ones. */
    for (uint64_t i = 0; i < 128; i++) {
        struct spim_contact c = rec(1000000 + i, 2000000 + i, 3, 0, 9, 0);

        spim_contacts_table_fill(t, &c);
        spim_contacts_table_delivered(t, 1000000 + i, 2000000 + i, 10, 0);
    }
    for (uint64_t i = 0; i < 512; i++) {
        struct spim_contact c = rec(3000000 + i, 4000000 + i, 1, 1, 1, 1);

        spim_contacts_table_fill(t, &c);
    }
    /* A flood of ten times the slots in new pairs, as fills after misses. */
    for (uint64_t i = 0; i < 10 * slots; i++) {
        struct spim_contact c = rec(i * 7 + 1, i * 7 + 2, 0, 0, 0, 0);

        assert_int_equal(has(t, c.lo, c.hi), 0);
        spim_contacts_table_fill(t, &c);
    }
    assert_int_equal(spim_contacts_table_memory(t), mem);
    /* The clean ones went, every dirty one stayed, none was lost. */
    for (uint64_t i = 0; i < 512; i++)
        old_clean += (size_t)has(t, 3000000 + i, 4000000 + i);
    assert_true(old_clean < 64);
    for (uint64_t i = 0; i < 128; i++)
        assert_view(t, 1000000 + i, 2000000 + i, 4, 0, 10, 0);
    assert_int_equal(spim_contacts_table_dirty_evictions(t), 0);
    while ((got = spim_contacts_table_dirty(t, out, 256)) > 0 && total < 1000)
        total += got;
    assert_int_equal(total, 128);

    /* A flood of new deliveries must evict updates: counted, memory still fixed. */
    for (uint64_t i = 0; i < 10 * slots; i++)
        spim_contacts_table_delivered(t, 5000000 + i, 6000000 + i, 11, 0);
    assert_int_equal(spim_contacts_table_memory(t), mem);
    assert_true(spim_contacts_table_dirty_evictions(t) >= 10 * slots - (slots + 1));
    assert_true(spim_contacts_table_dirty_evictions(t) < 10 * slots);
    spim_contacts_table_free(t);
}

static void test_contacts_table_saturation(void **state)
{
    struct spim_contacts_table *t = table(64);
    struct spim_contact c = rec(1, 2, UINT32_MAX - 1, UINT32_MAX, 5, 5), out[2];

    (void)state;
    spim_contacts_table_fill(t, &c);
    for (int i = 0; i < 3; i++) {
        spim_contacts_table_delivered(t, 1, 2, 6, 0);
        spim_contacts_table_delivered(t, 2, 1, 6, 0);
    }
    assert_view(t, 1, 2, UINT32_MAX, UINT32_MAX, 6, 6);
    /* The merge of waiting updates saturates too. */
    spim_contacts_table_delivered(t, 7, 8, 1, 0);
    c = rec(7, 8, UINT32_MAX, 0, 1, 0);
    spim_contacts_table_fill(t, &c);
    assert_view(t, 7, 8, UINT32_MAX, 0, 1, 0);
    assert_int_equal(spim_contacts_table_dirty(t, out, 2), 2);
    spim_contacts_table_free(t);
}

/* --- Threads ------------------------------------------------------------------------ */

#define NPAIRS 64
#define PER_THREAD 19200 /* 300 per pair: 150 each way */
#define NTHREADS 4

struct shared {
    struct spim_contacts_table *t;
    atomic_int stop;
    atomic_int bad;
    uint32_t flushed[NPAIRS][2]; /* the last counts the flusher was handed */
};

static void *deliver_main(void *ud)
{
    struct shared *s = ud;

    for (unsigned i = 0; i < PER_THREAD; i++) {
        uint64_t p = i % NPAIRS;
        struct spim_contact_view v;

        /* Every other round over the pairs: lo -> hi, then hi -> lo. */
        if ((i / NPAIRS) % 2 == 0)
            spim_contacts_table_delivered(s->t, 2 * p, 2 * p + 1, 1 + i / 1000, 0);
        else
            spim_contacts_table_delivered(s->t, 2 * p + 1, 2 * p, 1 + i / 1000, 0);
        if (spim_contacts_table_get(s->t, 2 * p, 2 * p + 1, &v) != 1)
            atomic_store(&s->bad, 1);
    }
    return NULL;
}

static void flush_once(struct shared *s)
{
    struct spim_contact out[NPAIRS];
    size_t got = spim_contacts_table_dirty(s->t, out, NPAIRS);

    for (size_t k = 0; k < got; k++) {
        uint64_t p = out[k].lo / 2;

        if (p >= NPAIRS || out[k].hi != out[k].lo + 1 || out[k].lo_hi_n < s->flushed[p][0] ||
            out[k].hi_lo_n < s->flushed[p][1]) {
            atomic_store(&s->bad, 1);
            continue;
        }
        s->flushed[p][0] = out[k].lo_hi_n;
        s->flushed[p][1] = out[k].hi_lo_n;
    }
}

static void *flush_main(void *ud)
{
    struct shared *s = ud;

    /* Bounded: until the deliverers are done, at most a million passes. */
    for (unsigned i = 0; i < 1000000 && !atomic_load(&s->stop); i++)
        flush_once(s);
    return NULL;
}

static void test_contacts_table_threads(void **state)
{
    struct shared s;
    pthread_t th[NTHREADS], fl;

    (void)state;
    memset(&s, 0, sizeof(s));
    s.t = table(4096);
    for (uint64_t p = 0; p < NPAIRS; p++) {
        struct spim_contact c = rec(2 * p, 2 * p + 1, 0, 0, 0, 0);

        spim_contacts_table_fill(s.t, &c);
    }
    assert_int_equal(pthread_create(&fl, NULL, flush_main, &s), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, deliver_main, &s), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&s.stop, 1);
    pthread_join(fl, NULL);
    flush_once(&s);
    assert_int_equal(atomic_load(&s.bad), 0);
    /* Every delivery counted once: in the table and in what was handed last. */
    for (uint64_t p = 0; p < NPAIRS; p++) {
        uint32_t each = NTHREADS * (PER_THREAD / NPAIRS) / 2;

        assert_view(s.t, 2 * p, 2 * p + 1, each, each, 20, 20); /* 1 + 19199 / 1000 */
        assert_int_equal(s.flushed[p][0], each);
        assert_int_equal(s.flushed[p][1], each);
    }
    assert_int_equal(spim_contacts_table_dirty_evictions(s.t), 0);
    spim_contacts_table_free(s.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contacts_table_miss_fill_hit),
        cmocka_unit_test(test_contacts_table_delivered_both_directions),
        cmocka_unit_test(test_contacts_table_forgets_silent_pairs),
        cmocka_unit_test(test_contacts_table_delivered_before_fill_merges),
        cmocka_unit_test(test_contacts_table_dirty_hands_each_once),
        cmocka_unit_test(test_contacts_table_flood_keeps_dirty),
        cmocka_unit_test(test_contacts_table_saturation),
        cmocka_unit_test(test_contacts_table_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
