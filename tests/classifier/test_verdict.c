/*
 * test_verdict.c: score arithmetic, thresholds and the rule-name list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "classifier.h"

#include <math.h>
#include <string.h>

static void test_verdict_score_and_actions(void **state)
{
    struct spim_thresholds t = {.tag_score = 4.0, .block_score = 8.0, .bayes_weight = 10.0};
    struct spim_rule_hits h = {0};
    struct spim_verdict v;

    (void)state;
    spim_verdict_make(0.5, NULL, &t, &v);
    assert_true(v.score == 0.0);
    assert_int_equal(v.action, SPIM_DELIVER);

    spim_verdict_make(1.0, NULL, &t, &v);
    assert_true(fabs(v.score - 10.0) < 1e-12);
    assert_int_equal(v.action, SPIM_BLOCK);
    assert_true(v.spam_probability == 1.0);

    spim_verdict_make(0.0, NULL, &t, &v);
    assert_true(fabs(v.score + 10.0) < 1e-12);
    assert_int_equal(v.action, SPIM_DELIVER);

    /* Exactly on a threshold counts: >=. 0.7 -> 4 points. */
    spim_verdict_make(0.7, NULL, &t, &v);
    assert_true(fabs(v.score - 4.0) < 1e-9);
    spim_verdict_make(0.75, NULL, &t, &v);
    assert_int_equal(v.action, SPIM_TAG);

    /* Rules add to Bayes: unsure Bayes plus 8 points of rules blocks. */
    h.n = 2;
    h.names[0] = "A";
    h.names[1] = "B";
    h.score = 8.0;
    spim_verdict_make(0.5, &h, &t, &v);
    assert_true(fabs(v.score - 8.0) < 1e-12);
    assert_int_equal(v.action, SPIM_BLOCK);
    assert_int_equal(v.hits.n, 2);

    /* Ham signs pull a tagged message back. */
    h.n = 1;
    h.score = -3.0;
    spim_verdict_make(0.8, &h, &t, &v);
    assert_int_equal(v.action, SPIM_DELIVER);
}

/* Shadow Bayes and shadow rules are computed and kept apart from the score. */
static void test_verdict_shadow_inputs(void **state)
{
    struct spim_thresholds t = {.tag_score = 4.0, .block_score = 8.0, .bayes_weight = 10.0};
    struct spim_rule_hits h = {0};
    struct spim_verdict v;

    (void)state;
    h.n = 1;
    h.names[0] = "A";
    h.scores[0] = 2.0;
    h.score = 2.0;
    h.nshadow = 1;
    h.shadow_names[0] = "S";
    h.shadow_scores[0] = 3.0;
    h.shadow_score = 3.0;
    spim_verdict_make(0.9, &h, &t, &v);
    assert_true(fabs(v.bayes_points - 8.0) < 1e-12);
    assert_true(fabs(v.score - 10.0) < 1e-12);
    assert_true(v.shadow_score == 3.0);
    assert_int_equal(v.action, SPIM_BLOCK);
    assert_int_equal(v.hits.nshadow, 1);

    /* Bayes in shadow: worth the same, added to the shadow sum, not the score. */
    t.bayes_shadow = 1;
    spim_verdict_make(0.9, &h, &t, &v);
    assert_true(fabs(v.bayes_points - 8.0) < 1e-12);
    assert_true(v.score == 2.0);
    assert_true(fabs(v.shadow_score - 11.0) < 1e-12);
    assert_int_equal(v.action, SPIM_DELIVER);
    assert_true(v.spam_probability == 0.9);

    /* The defaults enforce Bayes. */
    spim_thresholds_defaults(&t);
    assert_int_equal(t.bayes_shadow, 0);
}

static void test_verdict_defaults_and_nan(void **state)
{
    struct spim_thresholds t;
    struct spim_verdict v;

    (void)state;
    spim_thresholds_defaults(&t);
    assert_true(t.tag_score < t.block_score);
    assert_true(t.bayes_weight > 0);
    /* NULL thresholds mean the defaults. */
    spim_verdict_make(1.0, NULL, NULL, &v);
    assert_int_equal(v.action, SPIM_BLOCK);
    spim_verdict_make(NAN, NULL, NULL, &v);
    assert_true(v.spam_probability == 0.5);
    assert_int_equal(v.action, SPIM_DELIVER);
}

static void test_verdict_action_names(void **state)
{
    (void)state;
    assert_string_equal(spim_action_name(SPIM_DELIVER), "deliver");
    assert_string_equal(spim_action_name(SPIM_TAG), "tag");
    assert_string_equal(spim_action_name(SPIM_BLOCK), "block");
}

static void test_verdict_rules_list(void **state)
{
    struct spim_rule_hits h = {0};
    struct spim_verdict v;
    char buf[64];

    (void)state;
    spim_verdict_make(0.5, &h, NULL, &v);
    assert_int_equal(spim_verdict_rules(&v, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");

    h.n = 3;
    h.names[0] = "PRIZE_CLAIM";
    h.names[1] = "URGENT";
    h.names[2] = "PREMIUM_09";
    h.score = 7.5;
    spim_verdict_make(0.5, &h, NULL, &v);
    assert_int_equal(spim_verdict_rules(&v, buf, sizeof(buf)),
                     strlen("PRIZE_CLAIM,URGENT,PREMIUM_09"));
    assert_string_equal(buf, "PRIZE_CLAIM,URGENT,PREMIUM_09");
    /* Too small: whole names only, always terminated. */
    assert_int_equal(spim_verdict_rules(&v, buf, 20), strlen("PRIZE_CLAIM,URGENT"));
    assert_string_equal(buf, "PRIZE_CLAIM,URGENT");
    assert_int_equal(spim_verdict_rules(&v, buf, 5), 0);
    assert_string_equal(buf, "");
    assert_int_equal(spim_verdict_rules(&v, buf, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdict_score_and_actions),
        cmocka_unit_test(test_verdict_shadow_inputs),
        cmocka_unit_test(test_verdict_defaults_and_nan),
        cmocka_unit_test(test_verdict_action_names),
        cmocka_unit_test(test_verdict_rules_list),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
