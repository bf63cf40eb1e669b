/*
 * test_store.c: the LMDB store against real files in a mkdtemp directory.
 *
 * No mocks: each test opens a fresh store, and the tests that need what the
 * API cannot produce (a foreign format, a corrupt record) write it with raw
 * LMDB while the store is closed. Cross-process behaviour is tested with
 * fork(); a child never touches the parent's environment (LMDB forbids that)
 * and reports through its exit status.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store.h"
#include "store_int.h" /* spim__reader_whole: which way the reader answered */

#include <dirent.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

#define setup fx_setup_dir
#define teardown fx_teardown

static struct spim_store *open_new(struct fx *f, size_t map_size)
{
    struct spim_store *st = NULL;

    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_CREATE, map_size, &st), 0);
    assert_non_null(st);
    f->st = st;
    return st;
}

static void close_fx(struct fx *f)
{
    spim_store_close(f->st);
    f->st = NULL;
}

/* Writes key = val into the named database with raw LMDB (store closed). */
static void raw_put(const char *dir, const char *db, const void *k, size_t klen, const void *v,
                    size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void learn(struct spim_store *st, const uint64_t *keys, size_t n, int is_spam, int delta)
{
    struct spim_store_batch *b = NULL;
    struct spim_token *toks = calloc(n ? n : 1, sizeof(*toks));

    assert_non_null(toks);
    for (size_t i = 0; i < n; i++)
        toks[i].key = keys[i];
    assert_int_equal(spim_store_batch_new(st, &b), 0);
    assert_int_equal(spim_store_batch_add(b, toks, n, is_spam, delta), 0);
    assert_int_equal(spim_store_batch_commit(b), 0);
    free(toks);
}

/* Looks one key up through r and returns its counts. */
static void counts(struct spim_store_reader *r, uint64_t key, uint32_t *ham, uint32_t *spam,
                   struct spim_totals *t)
{
    struct spim_token tok = {.key = key, .ham = 77, .spam = 77};
    struct spim_totals tt;

    assert_int_equal(spim_store_lookup(r, &tok, 1, t ? t : &tt), 0);
    assert_int_equal(tok.key, key);
    *ham = tok.ham;
    *spam = tok.spam;
}

/* --- Open ---------------------------------------------------------------- */

static void test_store_open_create(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = NULL;
    struct spim_totals t = {9, 9};

    open_new(f, 0);
    assert_true(spim_store_map_size(f->st) >= ((size_t)64 << 20));
    assert_int_equal(spim_store_totals(f->st, &t), 0);
    assert_int_equal(t.ham_msgs, 0);
    assert_int_equal(t.spam_msgs, 0);
    close_fx(f);

    /* Reopens without CREATE, read-write and read-only. */
    assert_int_equal(spim_store_open(f->dir, 0, 0, &st), 0);
    spim_store_close(st);
    st = NULL;
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &st), 0);
    assert_int_equal(spim_store_totals(st, &t), 0);
    spim_store_close(st);
    spim_store_close(NULL);
}

/* LMDB breaks its locks when one process opens an environment twice. */
static void test_store_open_twice_in_process(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = NULL;

    open_new(f, 0);
    assert_int_equal(spim_store_open(f->dir, 0, 0, &st), SPIM_EEXISTS);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &st), SPIM_EEXISTS);
    assert_null(st);
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
}

static void test_store_open_missing(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = (struct spim_store *)(uintptr_t)0x1;

    assert_int_equal(spim_store_open(f->dir, 0, 0, &st), SPIM_ENOTFOUND);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &st), SPIM_ENOTFOUND);
    assert_ptr_equal(st, (struct spim_store *)(uintptr_t)0x1); /* untouched on failure */
    /* An empty directory is no store either, and is not created into. */
    assert_int_equal(mkdir(f->dir, 0700), 0);
    assert_int_equal(spim_store_open(f->dir, 0, 0, &st), SPIM_ENOTFOUND);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_CREATE | SPIM_STORE_RDONLY, 0, &st),
                     SPIM_EINVAL);
    assert_int_equal(spim_store_open(NULL, 0, 0, &st), SPIM_EINVAL);
    assert_ptr_equal(st, (struct spim_store *)(uintptr_t)0x1);
}

static void test_store_open_version_mismatch(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = NULL;
    unsigned char v2[4] = {2, 0, 0, 0};
    unsigned char shortv[2] = {1, 0};

    open_new(f, 0);
    close_fx(f);
    raw_put(f->dir, "meta", "format", 6, v2, sizeof(v2));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &st), SPIM_EVERSION);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_CREATE, 0, &st), SPIM_EVERSION);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &st), SPIM_EVERSION);
    assert_null(st);
    /* A format value of the wrong width is damage, not a version. */
    raw_put(f->dir, "meta", "format", 6, shortv, sizeof(shortv));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &st), SPIM_ESTORE);
    assert_null(st);
}

static void test_store_permissions(void **state)
{
    struct fx *f = *state;
    struct stat sb;
    char path[256];
    mode_t old = umask(022);

    open_new(f, 0);
    umask(old);
    assert_int_equal(stat(f->dir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    snprintf(path, sizeof(path), "%s/lock.mdb", f->dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
}

static void test_store_rdonly_rejects_writes(void **state)
{
    struct fx *f = *state;
    struct spim_store *ro = NULL;
    struct spim_store_batch *b = NULL;
    struct spim_quar_entry e = {0};
    uint64_t id;
    int existed;

    open_new(f, 0);
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &ro), 0);
    f->st = ro;
    assert_int_equal(spim_store_batch_new(ro, &b), SPIM_EINVAL);
    assert_null(b);
    assert_int_equal(spim_quar_put(ro, &e, &id, &existed), SPIM_EINVAL);
    assert_int_equal(spim_quar_delete(ro, 1), SPIM_EINVAL);
}

/* --- Training and lookup --------------------------------------------------- */

static void test_store_batch_learn_lookup(void **state)
{
    struct fx *f = *state;
    struct spim_store_batch *b = NULL;
    struct spim_store_reader *r = NULL;
    struct spim_token m1[] = {{.key = 1}, {.key = 2}, {.key = 2}, {.key = 0x0100000000000000ull}};
    struct spim_token m2[] = {{.key = 2}, {.key = 3}, {.key = 2}};
    struct spim_token m3[] = {{.key = 1}, {.key = 0}};
    struct spim_token q[] = {{.key = 3}, {.key = 999}, {.key = 0x0100000000000000ull},
                             {.key = 2}, {.key = 1},   {.key = 0}};
    struct spim_totals t;

    open_new(f, 0);
    assert_int_equal(spim_store_batch_new(f->st, &b), 0);
    assert_int_equal(spim_store_batch_add(b, m1, 4, 1, 1), 0);
    assert_int_equal(spim_store_batch_add(b, m2, 3, 1, 1), 0);
    assert_int_equal(spim_store_batch_add(b, m3, 2, 0, 1), 0);
    assert_int_equal(spim_store_batch_add(b, NULL, 0, 0, 1), 0); /* an empty message counts */
    assert_int_equal(spim_store_batch_add(b, m1, 1, 0, 2), SPIM_EINVAL);
    assert_int_equal(spim_store_batch_add(b, NULL, 1, 0, 1), SPIM_EINVAL);
    assert_int_equal(spim_store_batch_commit(b), 0);

    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    assert_int_equal(spim_store_lookup(r, q, 6, &t), 0);
    assert_int_equal(t.spam_msgs, 2);
    assert_int_equal(t.ham_msgs, 2);
    for (size_t i = 0; i < 6; i++) {
        uint32_t ham = 0, spam = 0;

        switch (q[i].key) {
        case 0:
            ham = 1;
            break;
        case 1:
            ham = 1, spam = 1;
            break;
        case 2:
            spam = 2; /* twice in each of two messages: counted once per message */
            break;
        case 3:
        case 0x0100000000000000ull:
            spam = 1;
            break;
        default:
            break;
        }
        assert_int_equal(q[i].ham, ham);
        assert_int_equal(q[i].spam, spam);
    }
    /* The lookup sorted q by the store's order; every key is still there once. */
    {
        uint64_t seen = 0;

        for (size_t i = 0; i < 6; i++)
            seen ^= q[i].key;
        assert_int_equal(seen, 3 ^ 999 ^ 0x0100000000000000ull ^ 2 ^ 1 ^ 0);
    }
    assert_int_equal(spim_store_lookup(r, NULL, 0, &t), 0);
    assert_int_equal(t.spam_msgs, 2);
    spim_store_reader_free(r);
    spim_store_reader_free(NULL);

    /* And it is on disk: a fresh open sees the same. */
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
    assert_int_equal(spim_store_totals(f->st, &t), 0);
    assert_int_equal(t.ham_msgs, 2);
    assert_int_equal(t.spam_msgs, 2);
}

static void test_store_batch_invisible_before_commit(void **state)
{
    struct fx *f = *state;
    struct spim_store_batch *b = NULL;
    struct spim_store_reader *r = NULL;
    struct spim_token m[] = {{.key = 10}, {.key = 11}};
    struct spim_totals t;
    uint32_t ham, spam;

    open_new(f, 0);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    assert_int_equal(spim_store_batch_new(f->st, &b), 0);
    assert_int_equal(spim_store_batch_add(b, m, 2, 1, 1), 0);
    counts(r, 10, &ham, &spam, &t);
    assert_int_equal(spam, 0);
    assert_int_equal(t.spam_msgs, 0);
    spim_store_batch_free(b);
    spim_store_batch_free(NULL);
    counts(r, 10, &ham, &spam, &t);
    assert_int_equal(spam, 0);
    assert_int_equal(t.spam_msgs, 0);
    spim_store_reader_free(r);

    /* Not written either: a reopen finds nothing. */
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    counts(r, 11, &ham, &spam, &t);
    assert_int_equal(ham + spam, 0);
    assert_int_equal(t.spam_msgs + t.ham_msgs, 0);
    spim_store_reader_free(r);
}

static void test_store_unlearn_floors_at_zero(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    const uint64_t k[] = {5, 6};
    const uint64_t unknown[] = {7};
    struct spim_totals t;
    uint32_t ham, spam;

    open_new(f, 0);
    learn(f->st, k, 2, 0, 1);
    learn(f->st, k, 1, 1, 1);
    learn(f->st, k, 2, 0, -1);
    learn(f->st, k, 2, 0, -1); /* one unlearn too many */
    learn(f->st, unknown, 1, 1, -1);
    learn(f->st, unknown, 1, 1, -1);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    counts(r, 5, &ham, &spam, &t);
    assert_int_equal(ham, 0);
    assert_int_equal(spam, 1);
    counts(r, 6, &ham, &spam, &t);
    assert_int_equal(ham + spam, 0);
    counts(r, 7, &ham, &spam, &t);
    assert_int_equal(ham + spam, 0);
    assert_int_equal(t.ham_msgs, 0);
    assert_int_equal(t.spam_msgs, 0); /* one learned, two unlearned */
    spim_store_reader_free(r);
}

#define MANY 60000

static uint64_t many_key(size_t i)
{
    return (uint64_t)i * 0x9E3779B97F4A7C15ull + 12345;
}

static void test_store_map_full_grows(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    struct spim_token *toks = calloc(MANY, sizeof(*toks));
    uint64_t *keys = calloc(MANY, sizeof(*keys));
    struct spim_totals t;
    size_t before;

    assert_non_null(toks);
    assert_non_null(keys);
    open_new(f, 64 << 10);
    before = spim_store_map_size(f->st);
    assert_true(before < (1u << 20));
    for (size_t i = 0; i < MANY; i++)
        keys[i] = many_key(i);
    learn(f->st, keys, MANY, 1, 1);
    learn(f->st, keys, MANY / 2, 0, 1);
    assert_true(spim_store_map_size(f->st) > before);

    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    for (size_t i = 0; i < MANY; i++)
        toks[i].key = keys[i];
    assert_int_equal(spim_store_lookup(r, toks, MANY, &t), 0);
    assert_int_equal(t.spam_msgs, 1);
    assert_int_equal(t.ham_msgs, 1);
    for (size_t i = 0; i < MANY; i++)
        assert_int_equal(toks[i].spam, 1);
    {
        /* The lookup reordered toks, so count the hams rather than index them. */
        size_t hams = 0;

        for (size_t i = 0; i < MANY; i++)
            hams += toks[i].ham;
        assert_int_equal(hams, MANY / 2);
    }
    spim_store_reader_free(r);

    /* Reopened, the store keeps the size it grew to. */
    before = spim_store_map_size(f->st);
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, 0, 64 << 10, &f->st), 0);
    assert_true(spim_store_map_size(f->st) >= before);
    free(toks);
    free(keys);
}

static void test_store_reader_sees_later_commit(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    const uint64_t k[] = {42};
    struct spim_totals t;
    uint32_t ham, spam;

    open_new(f, 0);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    counts(r, 42, &ham, &spam, &t);
    assert_int_equal(spam, 0);
    learn(f->st, k, 1, 1, 1);
    counts(r, 42, &ham, &spam, &t);
    assert_int_equal(spam, 1);
    assert_int_equal(t.spam_msgs, 1);
    learn(f->st, k, 1, 1, 1);
    counts(r, 42, &ham, &spam, &t);
    assert_int_equal(spam, 2);
    spim_store_reader_free(r);
}

/* --- Other processes ------------------------------------------------------- */

static void write_byte(int fd, char c)
{
    assert_int_equal(write(fd, &c, 1), 1);
}

static int read_byte(int fd)
{
    char c;

    return read(fd, &c, 1) == 1 ? c : -1;
}

static int wait_child(pid_t pid)
{
    int status;

    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

/* The child of test_store_other_process_reader: exit 0 when all went well. */
static int reader_child(const char *dir, int to_parent, int from_parent)
{
    struct spim_store *st = NULL;
    struct spim_store_reader *r = NULL;
    struct spim_token tok = {.key = 1000};
    struct spim_totals t;
    int rc = 10;

    if (spim_store_open(dir, SPIM_STORE_RDONLY, 0, &st) != 0)
        return 1;
    if (spim_store_reader_new(st, &r) != 0)
        goto out;
    if (spim_store_lookup(r, &tok, 1, &t) != 0 || tok.spam != 1 || t.spam_msgs != 1)
        goto out;
    write_byte(to_parent, 'r');
    if (read_byte(from_parent) != 't') /* the parent trained again */
        goto out;
    tok.key = 1000;
    if (spim_store_lookup(r, &tok, 1, &t) != 0 || tok.spam != 2 || t.spam_msgs != 2)
        goto out;
    rc = 0;
out:
    spim_store_reader_free(r);
    spim_store_close(st);
    return rc;
}

static void test_store_other_process_reader(void **state)
{
    struct fx *f = *state;
    const uint64_t k[] = {1000};
    int up[2], down[2];
    pid_t pid;

    open_new(f, 0);
    learn(f->st, k, 1, 1, 1);
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        _exit(reader_child(f->dir, up[1], down[0]));
    }
    close(up[1]);
    close(down[0]);
    /* The child opened RDONLY while this process has the store open to write. */
    assert_int_equal(read_byte(up[0]), 'r');
    learn(f->st, k, 1, 1, 1);
    write_byte(down[1], 't');
    assert_int_equal(wait_child(pid), 0);
    close(up[0]);
    close(down[1]);
}

/* Another process grows the map far past ours: we must adopt it, not fault. */
static void test_store_map_resized_by_other_process(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    const uint64_t k[] = {7};
    struct spim_totals t;
    uint32_t ham, spam;
    size_t before;
    pid_t pid;

    open_new(f, 64 << 10);
    before = spim_store_map_size(f->st);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct spim_store *st = NULL;
        struct spim_store_batch *b = NULL;
        struct spim_token *toks = calloc(MANY, sizeof(*toks));
        int rc = 1;

        if (toks == NULL || spim_store_open(f->dir, 0, 0, &st) != 0)
            _exit(2);
        for (size_t i = 0; i < MANY; i++)
            toks[i].key = many_key(i);
        if (spim_store_batch_new(st, &b) == 0 && spim_store_batch_add(b, toks, MANY, 0, 1) == 0 &&
            spim_store_batch_commit(b) == 0)
            rc = 0;
        spim_store_close(st);
        free(toks);
        _exit(rc);
    }
    assert_int_equal(wait_child(pid), 0);
    counts(r, many_key(MANY - 1), &ham, &spam, &t);
    assert_int_equal(ham, 1);
    assert_int_equal(t.ham_msgs, 1);
    assert_true(spim_store_map_size(f->st) > before);
    learn(f->st, k, 1, 1, 1); /* and our writes go on in the bigger map */
    counts(r, 7, &ham, &spam, &t);
    assert_int_equal(spam, 1);
    spim_store_reader_free(r);
}

/* --- Threads --------------------------------------------------------------- */

struct thr {
    struct spim_store *st;
    volatile int *stop;
    int failures;
    unsigned lookups;
};

static void *lookup_thread(void *arg)
{
    struct thr *th = arg;
    struct spim_store_reader *r = NULL;
    struct spim_token toks[32];
    struct spim_totals t;

    if (spim_store_reader_new(th->st, &r) != 0) {
        th->failures++;
        return NULL;
    }
    while (!*th->stop) {
        for (size_t i = 0; i < 32; i++)
            toks[i].key = many_key(i * 97);
        if (spim_store_lookup(r, toks, 32, &t) != 0)
            th->failures++;
        /* Every batch below learns all keys at once: counts match totals. */
        for (size_t i = 0; i < 32; i++)
            if (toks[i].spam != t.spam_msgs)
                th->failures++;
        th->lookups++;
    }
    spim_store_reader_free(r);
    return NULL;
}

static void test_store_threads_lookup_during_growth(void **state)
{
    struct fx *f = *state;
    volatile int stop = 0;
    struct thr th[3];
    pthread_t tid[3];
    uint64_t *keys = calloc(MANY, sizeof(*keys));
    size_t before;

    assert_non_null(keys);
    open_new(f, 64 << 10);
    before = spim_store_map_size(f->st);
    for (size_t i = 0; i < MANY; i++)
        keys[i] = many_key(i);
    for (int i = 0; i < 3; i++) {
        th[i] = (struct thr){.st = f->st, .stop = &stop};
        assert_int_equal(pthread_create(&tid[i], NULL, lookup_thread, &th[i]), 0);
    }
    for (size_t n = MANY / 8; n <= MANY; n += MANY / 8)
        learn(f->st, keys, n, 1, 1);
    stop = 1;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(tid[i], NULL), 0);
        assert_int_equal(th[i].failures, 0);
    }
    assert_true(spim_store_map_size(f->st) > before);
    free(keys);
}

/* --- Quarantine ------------------------------------------------------------ */

static struct spim_quar_entry entry(uint64_t dedup, const char *call_id)
{
    struct spim_quar_entry e = {
        .id = 12345, /* ignored by put */
        .time_us = 1700000000123456,
        .status = SPIM_QUAR_HELD,
        .score = 7.25,
        .spam_probability = 0.9990234375,
        .dedup_key = dedup,
        .from = sl("sip:alice@example.com"),
        .to = sl("sip:bob@example.org"),
        .call_id = sl(call_id),
        .source = sl("192.0.2.7:5060"),
        .rules = sl("url_shortener,crypto_pitch"),
        .reasons = sl("bayes 0.999; rules matched"),
        .text = sl(""),
        .raw = {"MESSAGE sip:bob@example.org SIP/2.0\r\n\0binary", 45},
    };
    return e;
}

static int slice_eq(struct spim_slice a, struct spim_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void assert_entry_eq(const struct spim_quar_entry *a, const struct spim_quar_entry *b)
{
    assert_int_equal(a->time_us, b->time_us);
    assert_int_equal(a->status, b->status);
    assert_true(a->score == b->score);
    assert_true(a->spam_probability == b->spam_probability);
    assert_int_equal(a->dedup_key, b->dedup_key);
    assert_true(slice_eq(a->from, b->from));
    assert_true(slice_eq(a->to, b->to));
    assert_true(slice_eq(a->call_id, b->call_id));
    assert_true(slice_eq(a->source, b->source));
    assert_true(slice_eq(a->rules, b->rules));
    assert_true(slice_eq(a->reasons, b->reasons));
    assert_true(slice_eq(a->text, b->text));
    assert_true(slice_eq(a->raw, b->raw));
}

static void test_quar_put_get(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry e = entry(0xabcdef, "call-1@host"), got;
    void *buf = NULL;
    uint64_t id = 0;
    int existed = -1;

    open_new(f, 64 << 10);
    assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), 0);
    assert_int_equal(existed, 0);
    assert_true(id > 0);
    assert_int_equal(spim_quar_get(f->st, id, &got, &buf), 0);
    assert_non_null(buf);
    assert_int_equal(got.id, id);
    assert_entry_eq(&got, &e);
    free(buf);

    /* Durable: a read-only reopen reads the same record. */
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
    buf = NULL;
    assert_int_equal(spim_quar_get(f->st, id, &got, &buf), 0);
    assert_entry_eq(&got, &e);
    free(buf);
}

static void test_quar_put_large_raw(void **state)
{
    struct fx *f = *state;
    size_t len = 200000; /* far past a page: overflow pages, and a map grow */
    char *raw = malloc(len);
    struct spim_quar_entry e = entry(1, "big"), got;
    void *buf = NULL;
    uint64_t id;
    int existed;

    assert_non_null(raw);
    for (size_t i = 0; i < len; i++)
        raw[i] = (char)(i * 31);
    e.raw = (struct spim_slice){raw, len};
    open_new(f, 64 << 10);
    assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), 0);
    assert_int_equal(spim_quar_get(f->st, id, &got, &buf), 0);
    assert_entry_eq(&got, &e);
    free(buf);
    e.raw.p = NULL;
    assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), SPIM_EINVAL);
    free(raw);
}

struct seen {
    uint64_t ids[16];
    size_t n;
    size_t stop_after;
};

static int collect(const struct spim_quar_entry *e, void *ud)
{
    struct seen *s = ud;

    if (s->n < 16)
        s->ids[s->n++] = e->id;
    return s->stop_after && s->n >= s->stop_after;
}

static int fail_cb(const struct spim_quar_entry *e, void *ud)
{
    (void)e;
    (void)ud;
    return SPIM_EIO;
}

static void test_quar_foreach_newest_first(void **state)
{
    struct fx *f = *state;
    struct seen s = {0};
    uint64_t ids[5];
    int existed;

    open_new(f, 0);
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), 0);
    assert_int_equal(s.n, 0);
    for (int i = 0; i < 5; i++) {
        struct spim_quar_entry e = entry(100 + (uint64_t)i, "c");

        assert_int_equal(spim_quar_put(f->st, &e, &ids[i], &existed), 0);
        if (i > 0)
            assert_true(ids[i] > ids[i - 1]);
    }
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), 0);
    assert_int_equal(s.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.ids[i], ids[4 - i]);

    s = (struct seen){.stop_after = 2};
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[1], ids[3]);
    assert_int_equal(spim_quar_foreach(f->st, fail_cb, NULL), SPIM_EIO);
}

struct purge {
    struct spim_store *st;
    int deleted, failed;
};

static int purge_cb(const struct spim_quar_entry *e, void *ud)
{
    struct purge *p = ud;

    if (spim_quar_delete(p->st, e->id) == 0)
        p->deleted++;
    else
        p->failed++;
    return 0;
}

/* A callback may write: the walk goes on over its snapshot. */
static void test_quar_delete_from_foreach(void **state)
{
    struct fx *f = *state;
    struct purge p = {0};
    struct seen s = {0};
    uint64_t id;
    int existed;

    open_new(f, 0);
    for (int i = 0; i < 4; i++) {
        struct spim_quar_entry e = entry(200 + (uint64_t)i, "p");

        assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), 0);
    }
    p.st = f->st;
    assert_int_equal(spim_quar_foreach(f->st, purge_cb, &p), 0);
    assert_int_equal(p.deleted, 4);
    assert_int_equal(p.failed, 0);
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), 0);
    assert_int_equal(s.n, 0);
}

static void test_quar_dedup(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry e = entry(77, "first"), again = entry(77, "retransmission"), got;
    struct seen s = {0};
    uint64_t id1, id2;
    int existed;
    void *buf = NULL;

    open_new(f, 0);
    assert_int_equal(spim_quar_put(f->st, &e, &id1, &existed), 0);
    assert_int_equal(existed, 0);
    assert_int_equal(spim_quar_put(f->st, &again, &id2, &existed), 0);
    assert_int_equal(existed, 1);
    assert_int_equal(id2, id1);
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), 0);
    assert_int_equal(s.n, 1);
    /* The first record stays as written. */
    assert_int_equal(spim_quar_get(f->st, id1, &got, &buf), 0);
    assert_true(slice_eq(got.call_id, sl("first")));
    free(buf);
}

static void test_quar_delete(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry e = entry(55, "x"), got;
    uint64_t id, id2;
    int existed;
    void *buf = (void *)(uintptr_t)0x1;

    open_new(f, 0);
    assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), 0);
    assert_int_equal(spim_quar_delete(f->st, id), 0);
    assert_int_equal(spim_quar_get(f->st, id, &got, &buf), SPIM_ENOTFOUND);
    assert_ptr_equal(buf, (void *)(uintptr_t)0x1);
    assert_int_equal(spim_quar_delete(f->st, id), SPIM_ENOTFOUND);
    /* The dedup key went with it: the same key makes a new record. */
    assert_int_equal(spim_quar_put(f->st, &e, &id2, &existed), 0);
    assert_int_equal(existed, 0);
    assert_true(id2 > id);
}

static void test_quar_set_status(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry e = entry(9, "s"), got;
    uint64_t id;
    int existed;
    void *buf = NULL;

    open_new(f, 0);
    assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), 0);
    assert_int_equal(spim_quar_set_status(f->st, id, SPIM_QUAR_RELEASED), 0);
    assert_int_equal(spim_quar_get(f->st, id, &got, &buf), 0);
    assert_int_equal(got.status, SPIM_QUAR_RELEASED);
    e.status = SPIM_QUAR_RELEASED;
    assert_entry_eq(&got, &e); /* nothing else changed */
    free(buf);
    assert_int_equal(spim_quar_set_status(f->st, id, 99), SPIM_EINVAL);
    assert_int_equal(spim_quar_set_status(f->st, id + 1, SPIM_QUAR_DELETED), SPIM_ENOTFOUND);
}

static void test_quar_not_found(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry got;
    void *buf = NULL;

    open_new(f, 0);
    assert_int_equal(spim_quar_get(f->st, 1, &got, &buf), SPIM_ENOTFOUND);
    assert_null(buf);
    assert_int_equal(spim_quar_delete(f->st, 1), SPIM_ENOTFOUND);
    assert_int_equal(spim_quar_set_status(f->st, 1, SPIM_QUAR_HELD), SPIM_ENOTFOUND);
}

static void test_quar_corrupt_record(void **state)
{
    struct fx *f = *state;
    struct spim_quar_entry e = entry(3, "ok"), e2 = entry(4, "next"), got;
    unsigned char key[8] = {0, 0, 0, 0, 0, 0, 0, 0x50};
    unsigned char bad[60] = {1, 0, 0, 0};
    struct seen s = {0};
    uint64_t id, id2;
    int existed;
    void *buf = NULL;

    open_new(f, 0);
    assert_int_equal(spim_quar_put(f->st, &e, &id, &existed), 0);
    close_fx(f);
    /* A valid header claiming 8 fields, the first of them 2^32-1 bytes long. */
    bad[40] = 8;
    memset(bad + 44, 0xff, 4);
    raw_put(f->dir, "quar", key, sizeof(key), bad, sizeof(bad));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    assert_int_equal(spim_quar_get(f->st, 0x50, &got, &buf), SPIM_ESTORE);
    assert_null(buf);
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), SPIM_ESTORE);
    assert_int_equal(spim_quar_set_status(f->st, 0x50, SPIM_QUAR_RELEASED), SPIM_ESTORE);
    /* Short values too, down to nothing. */
    for (size_t len = 0; len < sizeof(bad); len += 7) {
        close_fx(f);
        raw_put(f->dir, "quar", key, sizeof(key), bad, len);
        assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
        assert_int_equal(spim_quar_get(f->st, 0x50, &got, &buf), SPIM_ESTORE);
    }
    /* A new id goes past the planted one, whatever the counter said. */
    assert_int_equal(spim_quar_put(f->st, &e2, &id2, &existed), 0);
    assert_true(id2 > 0x50);
    /* A corrupt record can still be deleted, and the good ones are intact. */
    assert_int_equal(spim_quar_delete(f->st, 0x50), 0);
    s.n = 0;
    assert_int_equal(spim_quar_foreach(f->st, collect, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], id2);
    assert_int_equal(s.ids[1], id);
}

static void test_store_corrupt_token(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    unsigned char key[8] = {9};
    unsigned char bad[3] = {1, 2, 3};
    struct spim_token tok = {.key = 9};
    struct spim_totals t;
    const uint64_t k[] = {9};
    struct spim_store_batch *b = NULL;

    open_new(f, 0);
    close_fx(f);
    raw_put(f->dir, "tokens", key, sizeof(key), bad, sizeof(bad));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    assert_int_equal(spim_store_lookup(r, &tok, 1, &t), SPIM_ESTORE);
    spim_store_reader_free(r);
    assert_int_equal(spim_store_batch_new(f->st, &b), 0);
    tok.key = k[0];
    assert_int_equal(spim_store_batch_add(b, &tok, 1, 1, 1), 0);
    assert_int_equal(spim_store_batch_commit(b), SPIM_ESTORE);
}

/* --- Learned cache, stats, prune ------------------------------------------- */

/* Learns one message (keys as its tokens) through the cache; returns the outcome. */
static int learn_once(struct spim_store *st, uint64_t msg, const uint64_t *keys, size_t n,
                      int is_spam, int delta)
{
    struct spim_store_batch *b = NULL;
    struct spim_token toks[16];
    int outcome = -1;

    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++)
        toks[i].key = keys[i];
    assert_int_equal(spim_store_batch_new(st, &b), 0);
    assert_int_equal(spim_store_batch_learn(b, msg, toks, n, is_spam, delta, &outcome), 0);
    assert_int_equal(spim_store_batch_commit(b), 0);
    return outcome;
}

static void test_store_learned_cache_counts_once(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 0);
    struct spim_store_reader *r = NULL;
    struct spim_store_batch *b = NULL;
    struct spim_token tok = {.key = 42};
    struct spim_totals t;
    const uint64_t keys[] = {42, 43};
    uint64_t m = spim_store_msg_key("win a prize", 11);
    uint32_t ham, spam;
    int oc;

    assert_int_equal(learn_once(st, m, keys, 2, 1, 1), SPIM_LEARN_NEW);
    /* The same message again, in a later run: no change. */
    assert_int_equal(learn_once(st, m, keys, 2, 1, 1), SPIM_LEARN_DUP);
    /* Twice within one batch: counted once too. */
    assert_int_equal(spim_store_batch_new(st, &b), 0);
    assert_int_equal(spim_store_batch_learn(b, 7, &tok, 1, 0, 1, &oc), 0);
    assert_int_equal(oc, SPIM_LEARN_NEW);
    assert_int_equal(spim_store_batch_learn(b, 7, &tok, 1, 0, 1, &oc), 0);
    assert_int_equal(oc, SPIM_LEARN_DUP);
    assert_int_equal(spim_store_batch_commit(b), 0);

    assert_int_equal(spim_store_reader_new(st, &r), 0);
    counts(r, 42, &ham, &spam, &t);
    assert_int_equal(spam, 1);
    assert_int_equal(ham, 1);
    assert_int_equal(t.spam_msgs, 1);
    assert_int_equal(t.ham_msgs, 1);

    /* Trained as the other label: the counts move, totals too. */
    assert_int_equal(learn_once(st, m, keys, 2, 0, 1), SPIM_LEARN_MOVED);
    counts(r, 43, &ham, &spam, &t);
    assert_int_equal(ham, 1);
    assert_int_equal(spam, 0);
    assert_int_equal(t.spam_msgs, 0);
    assert_int_equal(t.ham_msgs, 2);

    /* Unlearn: only with the label it has, and then it is forgotten. */
    assert_int_equal(learn_once(st, m, keys, 2, 1, -1), SPIM_LEARN_UNKNOWN);
    assert_int_equal(learn_once(st, m, keys, 2, 0, -1), SPIM_LEARN_UNLEARNED);
    counts(r, 43, &ham, &spam, &t);
    assert_int_equal(ham, 0);
    assert_int_equal(t.ham_msgs, 1);
    assert_int_equal(learn_once(st, m, keys, 2, 0, 1), SPIM_LEARN_NEW);
    spim_store_reader_free(r);
}

static void test_store_stats_and_prune(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 0);
    struct spim_store_stats ss;
    struct spim_store_reader *r = NULL;
    uint64_t keys[200], removed = 9, lrem = 9;
    uint32_t ham, spam;
    int64_t now = spim_now_us();

    /* Tokens 0..99 in one message, 100..199 in three: prune below 2 drops 100. */
    for (uint64_t i = 0; i < 200; i++)
        keys[i] = 1000 + i;
    learn(st, keys, 200, 1, 1);
    learn(st, keys + 100, 100, 0, 1);
    learn(st, keys + 100, 100, 1, 1);
    assert_int_equal(learn_once(st, 5, keys, 1, 1, 1), SPIM_LEARN_NEW);
    assert_int_equal(spim_store_stats(st, &ss), 0);
    assert_int_equal(ss.tokens, 200);
    assert_int_equal(ss.learned, 1);
    assert_int_equal(ss.spam_msgs, 3);
    assert_int_equal(ss.ham_msgs, 1);
    assert_true(ss.file_bytes > 0);
    assert_true(ss.used_bytes > 0 && ss.used_bytes <= ss.map_size);

    /* Token 1000 is in two messages now (200-batch and learn_once). */
    assert_int_equal(spim_store_prune(st, 2, 0, now, 1, &removed, &lrem), 0);
    assert_int_equal(removed, 99);
    assert_int_equal(spim_store_stats(st, &ss), 0);
    assert_int_equal(ss.tokens, 200); /* dry run */
    {
        assert_int_equal(spim_store_prune(st, 2, 0, now, 0, &removed, &lrem), 0);
        assert_int_equal(removed, 99);
        assert_int_equal(lrem, 0);
        assert_int_equal(spim_store_stats(st, &ss), 0);
        assert_int_equal(ss.tokens, 101);
        /* the pages the prune freed are counted free, not in use */
        assert_true(ss.free_bytes > 0);
        assert_true(ss.used_bytes + ss.free_bytes <= ss.file_bytes);
    }
    assert_int_equal(spim_store_reader_new(st, &r), 0);
    counts(r, 1001, &ham, &spam, NULL);
    assert_int_equal(spam + ham, 0);
    counts(r, 1150, &ham, &spam, NULL);
    assert_int_equal(spam, 2);
    assert_int_equal(ham, 1);
    spim_store_reader_free(r);

    /* By age: nothing is older than a day today; 40 days on, all is. */
    assert_int_equal(spim_store_prune(st, 0, 30, now, 0, &removed, &lrem), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(spim_store_prune(st, 0, 30, now + 40LL * 86400 * 1000000, 0, &removed, &lrem),
                     0);
    assert_int_equal(removed, 101);
    assert_int_equal(lrem, 1);
    assert_int_equal(spim_store_stats(st, &ss), 0);
    assert_int_equal(ss.tokens, 0);
    assert_int_equal(ss.learned, 0);
    assert_int_equal(ss.spam_msgs, 3); /* totals are of messages, not tokens */
}

/* --- The read path: the whole table, lookups without a transaction ------------ */

/* A spread of keys: hashes are what the tokenizer gives the store. */
static uint64_t nth_key(size_t i)
{
    return spim_hash64(&i, sizeof(i), 99) | 1;
}

/* Looks toks up in groups of 30 (a message) and checks each against the expected counts. */
static void lookup_all(struct spim_store_reader *r, size_t nkeys, const uint32_t *ham,
                       const uint32_t *spam, size_t known)
{
    struct spim_token toks[30];
    struct spim_totals t;

    for (size_t i = 0; i < nkeys; i += 30) {
        size_t n = nkeys - i < 30 ? nkeys - i : 30;

        for (size_t j = 0; j < n; j++) {
            toks[j].key = nth_key(i + j);
            toks[j].ham = toks[j].spam = 77;
        }
        assert_int_equal(spim_store_lookup(r, toks, n, &t), 0);
        for (size_t j = 0; j < n; j++) {
            uint32_t eh = i + j < known ? ham[i + j] : 0, es = i + j < known ? spam[i + j] : 0;

            assert_int_equal(toks[j].key, nth_key(i + j));
            assert_int_equal(toks[j].ham, eh);
            assert_int_equal(toks[j].spam, es);
        }
    }
}

static void test_store_reader_whole_table(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 0);
    struct spim_store_reader *r = NULL;
    enum { KNOWN = 3000, ALL = 3600 };
    static uint32_t ham[KNOWN], spam[KNOWN];
    static uint64_t keys[KNOWN];
    struct spim_token zero = {.key = 0};
    struct spim_totals t;
    size_t n;

    /* Three batches (the first appends into an empty table, the others update it);
     * each touches two thirds of the tokens, so each writes the index. */
    for (int b = 0; b < 3; b++) {
        for (size_t i = n = 0; i < KNOWN; i++) {
            if ((i + (size_t)b) % 3 == 0)
                continue;
            keys[n++] = nth_key(i);
            if (b == 1)
                ham[i]++;
            else
                spam[i]++;
        }
        learn(st, keys, n, b != 1, 1);
    }
    /* The reader copies the index at its first lookup: whole from the start. */
    assert_int_equal(spim_store_reader_new(st, &r), 0);
    lookup_all(r, 30, ham, spam, KNOWN);
    assert_true(spim__reader_whole(r));
    lookup_all(r, ALL, ham, spam, KNOWN);
    assert_int_equal(spim_store_lookup(r, &zero, 1, &t), 0);
    assert_int_equal(zero.ham + zero.spam, 0);
    assert_int_equal(t.spam_msgs, 2);
    assert_int_equal(t.ham_msgs, 1);

    /* A small training (ten tokens) drops the index and the reader's table: the
     * first lookups go to LMDB; once they have missed for a 32nd of the store,
     * the reader builds the whole table and the rest is answered from it. */
    learn(st, keys, 10, 0, 1);
    for (size_t i = n = 0; i < KNOWN && n < 10; i++) { /* keys[] holds the last batch's */
        if ((i + 2) % 3 != 0) {
            ham[i]++;
            n++;
        }
    }
    lookup_all(r, 30, ham, spam, KNOWN);
    assert_false(spim__reader_whole(r));
    lookup_all(r, ALL, ham, spam, KNOWN);
    assert_true(spim__reader_whole(r));
    lookup_all(r, ALL, ham, spam, KNOWN);
    assert_int_equal(spim_store_lookup(r, &zero, 1, &t), 0);
    assert_int_equal(t.ham_msgs, 2);

    /* A large one writes the index again: the new counts, and tokens that became known. */
    for (size_t i = 0; i < KNOWN; i++)
        keys[i] = nth_key(i);
    learn(st, keys, KNOWN, 0, 1);
    for (size_t i = 0; i < KNOWN; i++)
        ham[i]++;
    lookup_all(r, 30, ham, spam, KNOWN);
    assert_true(spim__reader_whole(r));
    lookup_all(r, ALL, ham, spam, KNOWN);
    assert_int_equal(spim_store_lookup(r, &zero, 1, &t), 0);
    assert_int_equal(t.ham_msgs, 3);
    spim_store_reader_free(r);
}

/*
 * A snapshot reader (classify --tsv, eval) reads the store as it was when it
 * was made: with the index written by a large training (read in place), and
 * without one (read from LMDB, then whole); later commits stay unseen while
 * an ordinary reader sees them.
 */
static void test_store_snapshot_reader(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 0);
    struct spim_store_reader *snap = NULL, *snap2 = NULL, *live = NULL;
    enum { KNOWN = 3000, ALL = 3600 };
    static uint32_t ham[KNOWN], spam[KNOWN], ham2[KNOWN];
    static uint64_t keys[KNOWN];
    struct spim_token zero = {.key = 0, .ham = 7, .spam = 7};
    struct spim_totals t;

    for (size_t i = 0; i < KNOWN; i++) {
        keys[i] = nth_key(i);
        spam[i] = 1;
        ham[i] = (i % 2 == 0);
    }
    learn(st, keys, KNOWN, 1, 1);
    for (size_t i = 0; i < KNOWN / 2; i++)
        keys[i] = nth_key(2 * i);
    learn(st, keys, KNOWN / 2, 0, 1); /* touches half the tokens: writes the index */

    assert_int_equal(spim_store_reader_snapshot(st, &snap), 0);
    assert_true(spim__reader_whole(snap)); /* the index, before any lookup */
    lookup_all(snap, ALL, ham, spam, KNOWN);
    assert_int_equal(spim_store_lookup(snap, &zero, 1, &t), 0);
    assert_int_equal(zero.ham + zero.spam, 0);
    assert_int_equal(t.spam_msgs, 1);
    assert_int_equal(t.ham_msgs, 1);

    /* Ten tokens more as ham: a small commit, which deletes the index. */
    for (size_t i = 0; i < 10; i++) {
        keys[i] = nth_key(i);
        ham2[i] = ham[i] + 1;
    }
    for (size_t i = 10; i < KNOWN; i++)
        ham2[i] = ham[i];
    learn(st, keys, 10, 0, 1);

    assert_int_equal(spim_store_reader_new(st, &live), 0);
    lookup_all(live, ALL, ham2, spam, KNOWN);
    /* The snapshot sees the commit within 64 lookups (one token each here),
     * and then the new counts and totals (the index gone: from LMDB). */
    {
        unsigned k;

        for (k = 0; k <= 64; k++) {
            struct spim_token tk = {.key = nth_key(0)};

            assert_int_equal(spim_store_lookup(snap, &tk, 1, &t), 0);
            if (tk.ham == ham2[0])
                break;
            assert_int_equal(tk.ham, ham[0]); /* the old snapshot until then */
        }
        assert_true(k <= 64);
    }
    assert_int_equal(t.ham_msgs, 2);
    lookup_all(snap, ALL, ham2, spam, KNOWN);
    /* Released, it takes a new transaction at its next lookup: the same counts. */
    spim_store_reader_release(snap);
    lookup_all(snap, ALL, ham2, spam, KNOWN);

    /* A snapshot of a store without an index: LMDB first, then the whole table. */
    assert_int_equal(spim_store_reader_snapshot(st, &snap2), 0);
    assert_false(spim__reader_whole(snap2));
    lookup_all(snap2, 30, ham2, spam, KNOWN);
    lookup_all(snap2, ALL, ham2, spam, KNOWN);
    assert_true(spim__reader_whole(snap2));
    lookup_all(snap2, ALL, ham2, spam, KNOWN);
    assert_int_equal(spim_store_lookup(snap2, &zero, 1, &t), 0);
    assert_int_equal(t.ham_msgs, 2);
    spim_store_reader_free(snap2);
    spim_store_reader_free(snap);
    spim_store_reader_free(live);

    /* Freed, it holds nothing: a new snapshot sees the last commit. */
    assert_int_equal(spim_store_reader_snapshot(st, &snap), 0);
    lookup_all(snap, ALL, ham2, spam, KNOWN);
    spim_store_reader_free(snap);
}

/* The size of the store's data file. */
static long data_size(const struct fx *f)
{
    char p[256];
    struct stat sb;

    snprintf(p, sizeof(p), "%s/data.mdb", f->dir);
    assert_int_equal(stat(p, &sb), 0);
    return (long)sb.st_size;
}

/*
 * A snapshot reader keeps freed pages from reuse only while its transaction
 * is live: the data file grows with commits made while it sits held and idle
 * (as a classify blocked on its output pipe would), barely when it is
 * released first, or when it keeps looking up (it moves to the last commit
 * every 64 lookups).
 */
static void test_store_snapshot_does_not_pin(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 0);
    struct spim_store_reader *snap = NULL;
    enum { KNOWN = 3000, ROUNDS = 100 };
    static uint64_t keys[KNOWN];
    long s0, held, released, busy;

    for (size_t i = 0; i < KNOWN; i++)
        keys[i] = nth_key(i);
    learn(st, keys, KNOWN, 1, 1);
    for (int r = 0; r < 20; r++) /* the file at its working size */
        learn(st, keys + (r * 97) % (KNOWN - 50), 50, r % 2, 1);
    assert_int_equal(spim_store_reader_snapshot(st, &snap), 0);

    s0 = data_size(f);
    for (int r = 0; r < ROUNDS; r++)
        learn(st, keys + (r * 31) % (KNOWN - 50), 50, r % 2, 1);
    held = data_size(f) - s0;

    spim_store_reader_release(snap);
    s0 = data_size(f);
    for (int r = 0; r < ROUNDS; r++)
        learn(st, keys + (r * 31) % (KNOWN - 50), 50, r % 2, 1);
    released = data_size(f) - s0;

    s0 = data_size(f);
    for (int r = 0; r < ROUNDS; r++) {
        learn(st, keys + (r * 31) % (KNOWN - 50), 50, r % 2, 1);
        for (int k = 0; k < 65; k++) {
            struct spim_token tk = {.key = keys[k]};
            struct spim_totals t;

            assert_int_equal(spim_store_lookup(snap, &tk, 1, &t), 0);
        }
    }
    busy = data_size(f) - s0;
    spim_store_reader_free(snap);

    print_message("data file growth over %d commits: held %ld, released %ld, looking up %ld\n",
                  ROUNDS, held, released, busy);
    assert_true(held >= 50 * 4096);    /* pinned: each commit's pages are new */
    assert_true(released * 8 <= held); /* reused */
    assert_true(busy * 8 <= held);
}

/*
 * While a snapshot reader lives its thread cannot remap the store: a write
 * from that thread that needs a larger map fails with SPIM_EFULL instead of
 * waiting for itself; once the reader is freed the same write succeeds.
 */
static void test_store_snapshot_blocks_growth(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 64 << 10);
    struct spim_store_reader *snap = NULL;
    struct spim_store_batch *b = NULL;
    struct spim_token *toks = calloc(MANY, sizeof(*toks));
    const uint64_t k[] = {42};
    size_t before = spim_store_map_size(st);

    assert_non_null(toks);
    learn(st, k, 1, 1, 1);
    for (size_t i = 0; i < MANY; i++)
        toks[i].key = many_key(i);
    assert_int_equal(spim_store_reader_snapshot(st, &snap), 0);
    assert_int_equal(spim_store_batch_new(st, &b), 0);
    assert_int_equal(spim_store_batch_add(b, toks, MANY, 1, 1), 0);
    assert_int_equal(spim_store_batch_commit(b), SPIM_EFULL);
    assert_int_equal(spim_store_map_size(st), before);
    spim_store_reader_free(snap);

    for (size_t i = 0; i < MANY; i++)
        toks[i].key = many_key(i);
    assert_int_equal(spim_store_batch_new(st, &b), 0);
    assert_int_equal(spim_store_batch_add(b, toks, MANY, 1, 1), 0);
    assert_int_equal(spim_store_batch_commit(b), 0);
    assert_true(spim_store_map_size(st) > before);
    free(toks);
}

/* Reads the named database's value of key with raw LMDB (store closed) into a malloc'd copy. */
static void *raw_get(const char *dir, const char *db, const void *k, size_t klen, size_t *vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val key = {klen, (void *)k}, val;
    void *copy;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &key, &val), 0);
    copy = malloc(val.mv_size);
    assert_non_null(copy);
    memcpy(copy, val.mv_data, val.mv_size);
    *vlen = val.mv_size;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return copy;
}

/*
 * The whole table holds 16-bit counts: a token counted 65,535 times or more
 * either way is read from LMDB, exactly, whether the table is the index read
 * in place (a snapshot reader), a copy of it (an ordinary reader) or built
 * by the reader itself (after a small training deleted the index); 65,534
 * fits. A token with key 0 is in the table like any other.
 */
static void test_store_index_large_counts(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    enum { N = 600 };
    static uint32_t ham[N], spam[N];
    static uint64_t keys[N + 1];
    /* key, ham, spam as written under the store, before a training adds a spam each */
    static const struct {
        size_t i;
        uint32_t ham, spam;
    } big[] = {
        {0, 70000, 1}, {1, 65535, 0}, {2, 65534, 65533}, {3, 3, 65534}, {4, 0, UINT32_MAX - 1}};
    unsigned char v[8], k0[8] = {0};

    for (size_t i = 0; i < N; i++) {
        keys[i] = nth_key(i);
        spam[i] = 2;
    }
    keys[N] = 0;
    open_new(f, 0);
    learn(f->st, keys, N + 1, 1, 1);
    close_fx(f);
    for (size_t b = 0; b < sizeof(big) / sizeof(big[0]); b++) {
        unsigned char kb[8];

        spim_put_le64(kb, nth_key(big[b].i));
        spim_put_le32(v, big[b].ham);
        spim_put_le32(v + 4, big[b].spam);
        raw_put(f->dir, "tokens", kb, sizeof(kb), v, sizeof(v));
        ham[big[b].i] = big[b].ham;
        spam[big[b].i] = big[b].spam + 1;
    }
    spim_put_le32(v, 5);
    spim_put_le32(v + 4, 9);
    raw_put(f->dir, "tokens", k0, sizeof(k0), v, sizeof(v));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    learn(f->st, keys, N + 1, 1, 1); /* large: writes the index, with the counts above */

    for (int pass = 0; pass < 3; pass++) {
        struct spim_token zero = {.key = 0};
        struct spim_totals t;

        if (pass == 0) {
            assert_int_equal(spim_store_reader_snapshot(f->st, &r), 0);
        } else {
            assert_int_equal(spim_store_reader_new(f->st, &r), 0);
        }
        if (pass == 2) {
            /* A small training deletes the index: the reader builds the table. */
            learn(f->st, keys + 10, 1, 0, 1);
            ham[10]++;
            lookup_all(r, 10, ham, spam, N); /* fewer misses than a 32nd of the store */
            assert_false(spim__reader_whole(r));
        }
        lookup_all(r, N + 60, ham, spam, N);
        assert_true(spim__reader_whole(r));
        lookup_all(r, N + 60, ham, spam, N); /* from the table, the escapes from LMDB */
        assert_int_equal(spim_store_lookup(r, &zero, 1, &t), 0);
        assert_int_equal(zero.ham, 5);
        assert_int_equal(zero.spam, 10);
        spim_store_reader_free(r);
        r = NULL;
    }
}

/* An index that does not check out (another generation, cut short, not one) is not used. */
static void test_store_index_checked(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    static const char ikey[] = "tokens_index";
    static uint32_t ham[600], spam[600];
    uint64_t keys[600];
    unsigned char *idx, junk[64] = {0};
    size_t ilen;

    for (size_t i = 0; i < 600; i++) {
        keys[i] = nth_key(i);
        spam[i] = 1;
    }
    open_new(f, 0);
    learn(f->st, keys, 600, 1, 1);
    close_fx(f);
    idx = raw_get(f->dir, "meta", ikey, sizeof(ikey) - 1, &ilen);
    assert_true(ilen > 40);
    for (int c = 0; c < 3; c++) {
        if (c == 0) {
            idx[8] ^= 1; /* the generation */
            raw_put(f->dir, "meta", ikey, sizeof(ikey) - 1, idx, ilen);
        } else if (c == 1) {
            idx[8] ^= 1;
            raw_put(f->dir, "meta", ikey, sizeof(ikey) - 1, idx, ilen - 16);
        } else {
            raw_put(f->dir, "meta", ikey, sizeof(ikey) - 1, junk, sizeof(junk));
        }
        assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
        assert_int_equal(spim_store_reader_new(f->st, &r), 0);
        lookup_all(r, 10, ham, spam, 600);
        assert_false(spim__reader_whole(r));
        lookup_all(r, 600, ham, spam, 600);
        spim_store_reader_free(r);
        close_fx(f);
    }
    free(idx);
}

/*
 * A value that is not a token's: a large training still commits, but writes
 * no index; the reader keeps to per-token lookups, which report it.
 */
static void test_store_reader_whole_table_corrupt(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    uint64_t keys[600];
    unsigned char bad_key[8] = {2}, bad[3] = {1, 2, 3};
    static uint32_t ham[600], spam[600];
    struct spim_token tok = {.key = 2};
    struct spim_totals t;

    for (size_t i = 0; i < 600; i++) {
        keys[i] = nth_key(i);
        spam[i] = 1;
        ham[i] = 1;
    }
    open_new(f, 0);
    learn(f->st, keys, 600, 1, 1);
    close_fx(f);
    raw_put(f->dir, "tokens", bad_key, sizeof(bad_key), bad, sizeof(bad));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    learn(f->st, keys, 600, 0, 1); /* large: it would write the index */
    close_fx(f);
    assert_int_equal(spim_store_open(f->dir, SPIM_STORE_RDONLY, 0, &f->st), 0);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    lookup_all(r, 10, ham, spam, 600);
    assert_false(spim__reader_whole(r));
    lookup_all(r, 600, ham, spam, 600);
    assert_false(spim__reader_whole(r));
    assert_int_equal(spim_store_lookup(r, &tok, 1, &t), SPIM_ESTORE);
    spim_store_reader_free(r);
}

/* Updates into a table that has tokens: counts move, zeros are removed, old 8-byte values grow. */
static void test_store_batch_into_existing(void **state)
{
    struct fx *f = *state;
    struct spim_store_reader *r = NULL;
    struct spim_store_stats ss;
    uint64_t keys[1500];
    unsigned char old_key[8] = {5}, old_val[8] = {4, 0, 0, 0, 6, 0, 0, 0};
    const uint64_t k5[] = {5};
    uint32_t ham, spam;

    for (size_t i = 0; i < 1500; i++)
        keys[i] = nth_key(i);
    open_new(f, 0);
    close_fx(f);
    raw_put(f->dir, "tokens", old_key, sizeof(old_key), old_val, sizeof(old_val));
    assert_int_equal(spim_store_open(f->dir, 0, 0, &f->st), 0);
    learn(f->st, keys, 1000, 1, 1);       /* 0..999 spam */
    learn(f->st, keys + 500, 1000, 0, 1); /* 500..1499 ham */
    learn(f->st, keys, 100, 1, -1);       /* 0..99 back to nothing */
    learn(f->st, k5, 1, 1, 1);            /* the old value, updated */
    assert_int_equal(spim_store_stats(f->st, &ss), 0);
    assert_int_equal(ss.tokens, 1401);
    assert_int_equal(spim_store_reader_new(f->st, &r), 0);
    for (size_t i = 0; i < 1500; i++) {
        counts(r, keys[i], &ham, &spam, NULL);
        assert_int_equal(spam, i >= 100 && i < 1000);
        assert_int_equal(ham, i >= 500);
    }
    counts(r, 5, &ham, &spam, NULL);
    assert_int_equal(ham, 4);
    assert_int_equal(spam, 7);
    spim_store_reader_free(r);
}

/* A batch that found the learned cache empty sees what another batch commits meanwhile. */
static void test_store_learned_empty_then_commit(void **state)
{
    struct fx *f = *state;
    struct spim_store *st = open_new(f, 0);
    struct spim_store_batch *b = NULL;
    struct spim_token tok = {.key = 42};
    const uint64_t keys[] = {42};
    int oc = -1;

    assert_int_equal(spim_store_batch_new(st, &b), 0);
    assert_int_equal(spim_store_batch_learn(b, 1, &tok, 1, 1, 1, &oc), 0);
    assert_int_equal(oc, SPIM_LEARN_NEW);
    assert_int_equal(learn_once(st, 2, keys, 1, 1, 1), SPIM_LEARN_NEW);
    assert_int_equal(spim_store_batch_learn(b, 2, &tok, 1, 1, 1, &oc), 0);
    assert_int_equal(oc, SPIM_LEARN_DUP);
    assert_int_equal(spim_store_batch_learn(b, 3, &tok, 1, 1, 1, &oc), 0);
    assert_int_equal(oc, SPIM_LEARN_NEW);
    assert_int_equal(spim_store_batch_commit(b), 0);
    assert_int_equal(learn_once(st, 3, keys, 1, 0, 1), SPIM_LEARN_MOVED);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_store_open_create),
        T(test_store_open_missing),
        T(test_store_open_twice_in_process),
        T(test_store_open_version_mismatch),
        T(test_store_permissions),
        T(test_store_rdonly_rejects_writes),
        T(test_store_batch_learn_lookup),
        T(test_store_batch_invisible_before_commit),
        T(test_store_unlearn_floors_at_zero),
        T(test_store_map_full_grows),
        T(test_store_reader_sees_later_commit),
        T(test_store_other_process_reader),
        T(test_store_map_resized_by_other_process),
        T(test_store_threads_lookup_during_growth),
        T(test_store_corrupt_token),
        T(test_quar_put_get),
        T(test_quar_put_large_raw),
        T(test_quar_foreach_newest_first),
        T(test_quar_dedup),
        T(test_quar_delete_from_foreach),
        T(test_quar_delete),
        T(test_quar_set_status),
        T(test_quar_not_found),
        T(test_quar_corrupt_record),
        T(test_store_learned_cache_counts_once),
        T(test_store_stats_and_prune),
        T(test_store_reader_whole_table),
        T(test_store_reader_whole_table_corrupt),
        T(test_store_snapshot_reader),
        T(test_store_snapshot_blocks_growth),
        T(test_store_snapshot_does_not_pin),
        T(test_store_index_checked),
        T(test_store_index_large_counts),
        T(test_store_batch_into_existing),
        T(test_store_learned_empty_then_commit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
