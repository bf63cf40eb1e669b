/*
 * test_reports.c: 607 reports and snapshots against real LMDB files in a
 * mkdtemp directory: one count per reporter per message, the key cap, the
 * learned flag, cut fields, a read-only store without reports; a snapshot
 * taken while a writer commits is one commit's state, opens as a store and
 * reads the same counts; a copy cut short fails the check.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"

#define setup fx_setup_store
#define teardown fx_teardown

/* What foreach saw: copies, since the slices die with the callback. */
struct seen {
    unsigned n;
    uint64_t key[8];
    uint32_t reporters[8], learned[8];
    size_t sender_len[8], text_len[8];
    char sender[8][64], text[8][64];
};

static int seen_cb(const struct spim_report *r, void *ud)
{
    struct seen *s = ud;

    if (s->n >= 8)
        return -1;
    s->key[s->n] = r->msg_key;
    s->reporters[s->n] = r->reporters;
    s->learned[s->n] = r->learned;
    s->sender_len[s->n] = r->sender.len;
    s->text_len[s->n] = r->text.len;
    snprintf(s->sender[s->n], 64, "%.*s", (int)r->sender.len, r->sender.p);
    snprintf(s->text[s->n], 64, "%.*s", (int)r->text.len, r->text.p);
    s->n++;
    return 0;
}

static void test_reports_one_per_reporter(void **state)
{
    struct fx *f = *state;
    struct seen s;
    uint32_t n = 0;
    int dup = -1;

    assert_int_equal(spim_report_add(f->st, 42, 1, sl("sip:spammer@example.com"), sl("cheap pills"),
                                     0, 0, &n, &dup),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(dup, 0);
    /* The same recipient again: counted once, a later sender does not replace the first. */
    assert_int_equal(spim_report_add(f->st, 42, 1, sl("sip:other@example.com"), sl("cheap pills"),
                                     0, 0, &n, &dup),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(dup, 1);
    assert_int_equal(spim_report_add(f->st, 42, 2, sl("sip:other@example.com"), sl("cheap pills"),
                                     0, 0, &n, &dup),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(dup, 0);
    assert_int_equal(
        spim_report_add(f->st, 7, 1, sl("sip:x@example.net"), sl("hello"), 0, 0, &n, NULL), 0);
    assert_int_equal(n, 1);

    memset(&s, 0, sizeof(s));
    assert_int_equal(spim_report_foreach(f->st, seen_cb, &s), 0);
    assert_int_equal(s.n, 2); /* records only, not the marks */
    assert_int_equal(s.key[0], 7);
    assert_int_equal(s.reporters[0], 1);
    assert_int_equal(s.key[1], 42);
    assert_int_equal(s.reporters[1], 2);
    assert_string_equal(s.sender[1], "sip:spammer@example.com");
    assert_string_equal(s.text[1], "cheap pills");
    assert_int_equal(s.learned[1], 0);

    assert_int_equal(spim_report_set_learned(f->st, 42, 1), 0);
    assert_int_equal(spim_report_set_learned(f->st, 43, 1), SPIM_ENOTFOUND);
    assert_int_equal(spim_report_set_learned(f->st, 42, 2), SPIM_EINVAL);
    memset(&s, 0, sizeof(s));
    assert_int_equal(spim_report_foreach(f->st, seen_cb, &s), 0);
    assert_int_equal(s.learned[1], 1);
    assert_int_equal(s.reporters[1], 2);
    assert_string_equal(s.text[1], "cheap pills");
    /* A report after learning keeps the flag. */
    assert_int_equal(spim_report_add(f->st, 42, 3, sl("a"), sl("b"), 0, 0, &n, NULL), 0);
    assert_int_equal(n, 3);
    memset(&s, 0, sizeof(s));
    assert_int_equal(spim_report_foreach(f->st, seen_cb, &s), 0);
    assert_int_equal(s.learned[1], 1);
}

static void test_reports_cap_and_cut(void **state)
{
    struct fx *f = *state;
    char *big = malloc(SPIM_REPORT_TEXT_MAX + 100);
    struct seen s;
    uint32_t n = 0;
    int dup = 0;

    assert_non_null(big);
    memset(big, 'x', SPIM_REPORT_TEXT_MAX + 100);
    /* A record and its mark: 2 keys; a second reporter: 3; a third would be 4. */
    assert_int_equal(spim_report_add(f->st, 1, 1, sl("s"),
                                     (struct spim_slice){big, SPIM_REPORT_TEXT_MAX + 100}, 0, 3, &n,
                                     NULL),
                     0);
    assert_int_equal(spim_report_add(f->st, 1, 2, sl("s"), sl("t"), 0, 3, &n, NULL), 0);
    assert_int_equal(spim_report_add(f->st, 1, 3, sl("s"), sl("t"), 0, 3, &n, NULL), SPIM_EFULL);
    assert_int_equal(spim_report_add(f->st, 2, 1, sl("s"), sl("t"), 0, 3, &n, NULL), SPIM_EFULL);
    /* A reporter already counted still goes through at the cap. */
    assert_int_equal(spim_report_add(f->st, 1, 2, sl("s"), sl("t"), 0, 3, &n, &dup), 0);
    assert_int_equal(dup, 1);
    assert_int_equal(n, 2);
    memset(&s, 0, sizeof(s));
    assert_int_equal(spim_report_foreach(f->st, seen_cb, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.text_len[0], SPIM_REPORT_TEXT_MAX);
    free(big);
}

static void test_reports_rdonly_without_reports(void **state)
{
    struct fx *f = *state;
    struct spim_store *ro = NULL;
    struct seen s;

    spim_store_close(f->st);
    f->st = NULL;
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &ro), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(spim_report_foreach(ro, seen_cb, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(spim_report_add(ro, 1, 1, sl("s"), sl("t"), 0, 0, NULL, NULL), SPIM_EINVAL);
    spim_store_close(ro);
}

/* A writer that commits one spam message with one new token per batch. */
struct writer {
    struct spim_store *st;
    atomic_int stop;
    unsigned done;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;

    while (!atomic_load(&w->stop) && w->done < 100000) {
        struct spim_store_batch *b = NULL;
        struct spim_token t = {.key = 1000 + w->done};

        if (spim_store_batch_new(w->st, &b) != 0 || spim_store_batch_add(b, &t, 1, 1, 1) != 0 ||
            spim_store_batch_commit(b) != 0)
            break;
        w->done++;
    }
    return NULL;
}

static void test_snapshot_consistent_while_writing(void **state)
{
    struct fx *f = *state;
    struct writer w = {.st = f->st};
    struct spim_store *snap = NULL;
    struct spim_store_stats ss;
    struct spim_totals tot;
    struct spim_store_reader *r = NULL;
    struct spim_token t[2] = {{.key = 1000}, {.key = 5}};
    char file[192], sdir[192], data[256];
    struct stat sb;
    pthread_t tid;

    snprintf(file, sizeof(file), "%s/snap.mdb", f->root);
    snprintf(sdir, sizeof(sdir), "%s/model", f->root);
    snprintf(data, sizeof(data), "%s/data.mdb", sdir);
    assert_int_equal(pthread_create(&tid, NULL, writer_main, &w), 0);
    while (w.done < 50)
        usleep(1000);
    assert_int_equal(spim_store_snapshot(f->st, file), 0);
    usleep(20000);
    atomic_store(&w.stop, 1);
    pthread_join(tid, NULL);

    assert_int_equal(mkdir(sdir, 0700), 0);
    assert_int_equal(rename(file, data), 0);
    assert_int_equal(spim_store_check(sdir), 0);
    assert_int_equal(spim_store_open(sdir, SPIM_STORE_RDONLY, 0, &snap), 0);
    /* One commit's state: as many tokens as spam messages counted. */
    assert_int_equal(spim_store_stats(snap, &ss), 0);
    assert_true(ss.spam_msgs >= 50);
    assert_true(ss.spam_msgs < w.done); /* the writer went on after the copy */
    assert_int_equal(ss.tokens, ss.spam_msgs);
    assert_int_equal(spim_store_reader_new(snap, &r), 0);
    assert_int_equal(spim_store_lookup(r, t, 2, &tot), 0);
    assert_int_equal(tot.spam_msgs, ss.spam_msgs);
    for (int i = 0; i < 2; i++)
        assert_int_equal(t[i].spam, t[i].key == 1000 ? 1 : 0);
    spim_store_reader_free(r);
    spim_store_close(snap);

    /* Cut short (a copy still being written): refused before it is opened. */
    assert_int_equal(stat(data, &sb), 0);
    assert_int_equal(truncate(data, sb.st_size - 4096), 0);
    assert_int_equal(spim_store_check(sdir), SPIM_ESTORE);
    assert_int_equal(truncate(data, 100), 0);
    assert_int_not_equal(spim_store_check(sdir), 0);
    assert_int_equal(spim_store_check(f->root), SPIM_ENOTFOUND);
}

static void test_snapshot_bad_target(void **state)
{
    struct fx *f = *state;
    char file[192];

    snprintf(file, sizeof(file), "%s/no/such/dir/snap.mdb", f->root);
    assert_int_not_equal(spim_store_snapshot(f->st, file), 0);
    assert_int_equal(spim_store_snapshot(f->st, ""), SPIM_EINVAL);
    /* A snapshot over an existing file replaces it whole. */
    snprintf(file, sizeof(file), "%s/snap.mdb", f->root);
    assert_int_equal(spim_store_snapshot(f->st, file), 0);
    assert_int_equal(spim_store_snapshot(f->st, file), 0);
    assert_int_equal(access(file, R_OK), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_reports_one_per_reporter),
        T(test_reports_cap_and_cut),
        T(test_reports_rdonly_without_reports),
        T(test_snapshot_consistent_while_writing),
        T(test_snapshot_bad_target),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
