/*
 * test_metrics.c: the counters of common/metrics.c and their Prometheus
 * text: labels, the bounded rule table, histogram buckets, concurrent adds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char text[256 * 1024];

static int setup(void **state)
{
    (void)state;
    spim_metrics_reset();
    return 0;
}

/* The value of the sample line that starts with name (labels included), or -1. */
static long long sample(const char *name)
{
    size_t n = strlen(name);
    const char *p = text;

    while ((p = strstr(p, name)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtoll(p + n + 1, NULL, 10);
        p += n;
    }
    return -1;
}

static void render(void)
{
    size_t n = spim_metrics_render(text, sizeof(text));

    assert_true(n < sizeof(text));
    assert_int_equal(strlen(text), n);
}

static void test_metrics_counters_and_labels(void **state)
{
    (void)state;
    render();
    assert_int_equal(sample("spimfilter_requests_total{method=\"MESSAGE\"}"), 0);
    assert_int_equal(sample("spimfilter_parse_errors_total"), 0);
    spim_metrics_request("MESSAGE", 7);
    spim_metrics_request("message", 7);
    spim_metrics_request("OPTIONS", 7);
    spim_metrics_request("FOO", 3);
    spim_metrics_request("MESSAGEX", 7); /* only the first 7 bytes are the method */
    spim_metrics_response(200);
    spim_metrics_response(202);
    spim_metrics_response(486);
    spim_metrics_response(99); /* not a status: ignored */
    spim_metrics_inc(SPIM_METRIC_PARSE_ERRORS);
    spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
    spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
    spim_metrics_verdict(0, SPIM_METRIC_BLOCKED);
    spim_metrics_verdict(0, SPIM_METRIC_DELIVERED);
    spim_metrics_verdict(1, SPIM_METRIC_BLOCKED);
    spim_metrics_verdict(0, 7); /* out of range: ignored */
    spim_metrics_set_quarantine(3, 65536);
    render();
    assert_int_equal(sample("spimfilter_requests_total{method=\"MESSAGE\"}"), 3);
    assert_int_equal(sample("spimfilter_requests_total{method=\"OPTIONS\"}"), 1);
    assert_int_equal(sample("spimfilter_requests_total{method=\"other\"}"), 1);
    assert_int_equal(sample("spimfilter_responses_total{class=\"2xx\"}"), 2);
    assert_int_equal(sample("spimfilter_responses_total{class=\"4xx\"}"), 1);
    assert_int_equal(sample("spimfilter_responses_total{class=\"1xx\"}"), 0);
    assert_int_equal(sample("spimfilter_parse_errors_total"), 1);
    assert_int_equal(sample("spimfilter_store_errors_total"), 2);
    assert_int_equal(sample("spimfilter_untrusted_total"), 0);
    assert_int_equal(sample("spimfilter_messages_total{verdict=\"blocked\"}"), 1);
    assert_int_equal(sample("spimfilter_messages_total{verdict=\"delivered\"}"), 1);
    assert_int_equal(sample("spimfilter_messages_total{verdict=\"tagged\"}"), 0);
    assert_int_equal(sample("spimfilter_invites_total{verdict=\"blocked\"}"), 1);
    assert_int_equal(sample("spimfilter_quarantine_records"), 3);
    assert_int_equal(sample("spimfilter_quarantine_bytes"), 65536);
    assert_non_null(strstr(text, "# TYPE spimfilter_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE spimfilter_verdict_seconds histogram\n"));
    assert_non_null(strstr(text, "spimfilter_build_info{version=\"" SPIM_VERSION "\"} 1\n"));
}

static void test_metrics_rule_names(void **state)
{
    (void)state;
    spim_metrics_rules("PRIZE_CLAIM,URL_SHORTENER");
    spim_metrics_rules("PRIZE_CLAIM,block:net:198.51.100.0/24,fanout:21>20,av:Eicar \"x\"");
    spim_metrics_rules("fanout:40>20,we\"ird\nname,,");
    spim_metrics_rules("");
    spim_metrics_rules(NULL);
    render();
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"PRIZE_CLAIM\"}"), 2);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"URL_SHORTENER\"}"), 1);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"block\"}"), 1);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"fanout\"}"), 2);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"av\"}"), 1);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"we_ird_name\"}"), 1);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"_other\"}"), 0);
    /* no value of an entry becomes a label, nothing to escape */
    assert_null(strstr(text, "198.51"));
    assert_null(strstr(text, "Eicar"));
}

static void test_metrics_rule_table_is_bounded(void **state)
{
    char name[32];

    (void)state;
    for (unsigned i = 0; i < SPIM_METRICS_MAX_RULES + 50; i++) {
        snprintf(name, sizeof(name), "R%u", i);
        spim_metrics_rules(name);
    }
    spim_metrics_rules("R0");
    render();
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"R0\"}"), 2);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"_other\"}"), 50);
    /* a name longer than the slot is cut, not overflowed */
    spim_metrics_reset();
    spim_metrics_rules("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    render();
    assert_int_equal(
        sample(
            "spimfilter_rule_hits_total{rule=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}"),
        1);
}

/* Shadow hits: a table of their own, the same name rules and the same bound. */
static void test_metrics_shadow_hits(void **state)
{
    char name[32];

    (void)state;
    render();
    assert_int_equal(sample("spimfilter_shadow_would_block_total"), 0);
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"_other\"}"), 0);
    assert_non_null(strstr(text, "# TYPE spimfilter_shadow_hits_total counter\n"));
    assert_non_null(strstr(text, "# TYPE spimfilter_shadow_would_block_total counter\n"));
    spim_metrics_rules("PRIZE_CLAIM");
    spim_metrics_shadow("NEW_RULE,bayes,relationship:stranger");
    spim_metrics_shadow("NEW_RULE,we\"ird");
    spim_metrics_shadow(NULL);
    spim_metrics_inc(SPIM_METRIC_SHADOW_WOULD_BLOCK);
    render();
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"NEW_RULE\"}"), 2);
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"bayes\"}"), 1);
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"relationship\"}"), 1);
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"we_ird\"}"), 1);
    assert_int_equal(sample("spimfilter_shadow_would_block_total"), 1);
    /* The two tables do not mix. */
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"PRIZE_CLAIM\"}"), 1);
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"PRIZE_CLAIM\"}"), -1);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"NEW_RULE\"}"), -1);

    /* Bounded as the rule table is, without taking its slots. */
    for (unsigned i = 0; i < SPIM_METRICS_MAX_RULES + 7; i++) {
        snprintf(name, sizeof(name), "S%u", i);
        spim_metrics_shadow(name);
    }
    spim_metrics_rules("AFTER");
    render();
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"_other\"}"),
                     7 + 4); /* NEW_RULE, bayes, relationship, we_ird hold 4 slots */
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"AFTER\"}"), 1);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"_other\"}"), 0);
    spim_metrics_reset();
    render();
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"NEW_RULE\"}"), -1);
    assert_int_equal(sample("spimfilter_shadow_hits_total{rule=\"_other\"}"), 0);
    assert_int_equal(sample("spimfilter_shadow_would_block_total"), 0);
}

static void test_metrics_histogram(void **state)
{
    (void)state;
    spim_metrics_latency(50000);     /* 0.05 ms: first bucket */
    spim_metrics_latency(100000);    /* exactly 0.0001 s: le is inclusive */
    spim_metrics_latency(3000000);   /* 3 ms: le 0.005 */
    spim_metrics_latency(200000000); /* 0.2 s: only +Inf */
    render();
    assert_int_equal(sample("spimfilter_verdict_seconds_bucket{le=\"0.0001\"}"), 2);
    assert_int_equal(sample("spimfilter_verdict_seconds_bucket{le=\"0.0025\"}"), 2);
    assert_int_equal(sample("spimfilter_verdict_seconds_bucket{le=\"0.005\"}"), 3);
    assert_int_equal(sample("spimfilter_verdict_seconds_bucket{le=\"0.1\"}"), 3);
    assert_int_equal(sample("spimfilter_verdict_seconds_bucket{le=\"+Inf\"}"), 4);
    assert_int_equal(sample("spimfilter_verdict_seconds_count"), 4);
    assert_non_null(strstr(text, "spimfilter_verdict_seconds_sum 0.203150000\n"));
}

static void test_metrics_render_reports_needed_size(void **state)
{
    char small[64];
    size_t need, got;

    (void)state;
    need = spim_metrics_render(NULL, 0);
    got = spim_metrics_render(small, sizeof(small));
    assert_int_equal(need, got);
    assert_true(need > sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

#define THREADS 4
#define PER_THREAD 100000

static void *hammer(void *arg)
{
    char name[16];

    snprintf(name, sizeof(name), "T%d", (int)(intptr_t)arg % 2);
    for (int i = 0; i < PER_THREAD; i++) {
        spim_metrics_request("MESSAGE", 7);
        if (i % 100 == 0)
            spim_metrics_rules(name);
    }
    return NULL;
}

static void test_metrics_concurrent_adds(void **state)
{
    pthread_t t[THREADS];

    (void)state;
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    render();
    assert_int_equal(sample("spimfilter_requests_total{method=\"MESSAGE\"}"), THREADS * PER_THREAD);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"T0\"}"),
                     THREADS / 2 * PER_THREAD / 100);
    assert_int_equal(sample("spimfilter_rule_hits_total{rule=\"T1\"}"),
                     THREADS / 2 * PER_THREAD / 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_counters_and_labels, setup, NULL),
        cmocka_unit_test_setup_teardown(test_metrics_rule_names, setup, NULL),
        cmocka_unit_test_setup_teardown(test_metrics_rule_table_is_bounded, setup, NULL),
        cmocka_unit_test_setup_teardown(test_metrics_shadow_hits, setup, NULL),
        cmocka_unit_test_setup_teardown(test_metrics_histogram, setup, NULL),
        cmocka_unit_test_setup_teardown(test_metrics_render_reports_needed_size, setup, NULL),
        cmocka_unit_test_setup_teardown(test_metrics_concurrent_adds, setup, NULL),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
