/*
 * test_rate.c: distinct counting per window, window restart, bounded
 * memory under a flood of keys, and several threads at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "policy.h"

#include <pthread.h>

static void test_rate_distinct_in_window(void **state)
{
    struct spim_rate *r;

    (void)state;
    assert_int_equal(spim_rate_new(1024, 4096, &r), 0);
    for (unsigned i = 1; i <= 50; i++)
        assert_int_equal(spim_rate_observe(r, 7, i, 10, 100 + i / 10), i);
    /* The same member again does not count. */
    assert_int_equal(spim_rate_observe(r, 7, 3, 10, 105), 50);
    /* Another key is apart. */
    assert_int_equal(spim_rate_observe(r, 8, 3, 10, 105), 1);
    /* After the window: a new one. */
    assert_int_equal(spim_rate_observe(r, 7, 3, 10, 110), 1);
    assert_int_equal(spim_rate_observe(r, 7, 4, 10, 111), 2);
    spim_rate_free(r);
}

static void test_rate_bounded(void **state)
{
    struct spim_rate *r;
    size_t mem;

    (void)state;
    assert_int_equal(spim_rate_new(256, 1024, &r), 0);
    mem = spim_rate_memory(r);
    for (uint64_t k = 1; k <= 200000; k++)
        assert_int_equal(spim_rate_observe(r, k * 0x9e3779b97f4a7c15ULL, k, 60, 1000), 1);
    assert_int_equal(spim_rate_memory(r), mem);
    assert_true(mem < 64 * 1024);
    /* A fresh key still counts exactly. */
    for (unsigned i = 1; i <= 20; i++)
        assert_int_equal(spim_rate_observe(r, 42, i, 60, 1001), i);
    spim_rate_free(r);
}

struct th {
    struct spim_rate *r;
    unsigned base;
};

static void *hammer(void *arg)
{
    struct th *t = arg;

    for (unsigned i = 0; i < 1000; i++)
        spim_rate_observe(t->r, 99, t->base + i, 60, 5);
    return NULL;
}

static void test_rate_threads(void **state)
{
    struct spim_rate *r;
    pthread_t tid[4];
    struct th t[4];

    (void)state;
    assert_int_equal(spim_rate_new(1024, 16384, &r), 0);
    for (unsigned i = 0; i < 4; i++) {
        t[i] = (struct th){r, i * 1000};
        assert_int_equal(pthread_create(&tid[i], NULL, hammer, &t[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);
    assert_int_equal(spim_rate_observe(r, 99, 0, 60, 5), 4000);
    spim_rate_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_distinct_in_window),
        cmocka_unit_test(test_rate_bounded),
        cmocka_unit_test(test_rate_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
