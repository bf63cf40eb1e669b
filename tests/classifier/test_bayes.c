/*
 * test_bayes.c: Robinson/Fisher probabilities against hand-worked values,
 * and spim_classify end to end with counts from a small table.
 *
 * The table is the test's input (what a store would hold after training),
 * served through struct spim_counts_ops; no shipped part is replaced.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct spim_token tk(uint32_t ham, uint32_t spam)
{
    struct spim_token t = {0, ham, spam};

    return t;
}

static void test_bayes_no_evidence_is_half(void **state)
{
    struct spim_totals tot = {100, 100}, none = {0, 0};
    struct spim_token unknown[3] = {tk(0, 0), tk(0, 0), tk(0, 0)};
    struct spim_token neutral[2] = {tk(10, 10), tk(50, 50)};
    unsigned used = 99;

    (void)state;
    assert_true(spim_bayes_prob(NULL, 0, &tot, NULL, &used) == 0.5);
    assert_int_equal(used, 0);
    assert_true(spim_bayes_prob(unknown, 3, &tot, NULL, &used) == 0.5);
    assert_int_equal(used, 0);
    assert_true(spim_bayes_prob(unknown, 3, &none, NULL, &used) == 0.5);
    /* Tokens as common in ham as in spam fall inside min_dev and are dropped. */
    assert_true(spim_bayes_prob(neutral, 2, &tot, NULL, &used) == 0.5);
    assert_int_equal(used, 0);
}

/* With one token chi-square with 2 degrees of freedom is e^-x/2, so H = f,
 * S = 1 - f and the probability is f(w) itself. */
static void test_bayes_single_token_is_robinson_f(void **state)
{
    struct spim_bayes_params p;
    struct spim_totals tot = {10, 10};
    struct spim_token t = tk(0, 3);
    double f;
    unsigned used = 0;

    (void)state;
    spim_bayes_defaults(&p);
    f = (p.s * p.x + 3.0 * 1.0) / (p.s + 3.0);
    assert_true(fabs(spim_bayes_prob(&t, 1, &tot, &p, &used) - f) < 1e-9);
    assert_int_equal(used, 1);

    t = tk(2, 0);
    f = (p.s * p.x + 2.0 * 0.0) / (p.s + 2.0);
    assert_true(fabs(spim_bayes_prob(&t, 1, &tot, &p, &used) - f) < 1e-9);
}

/* p(w) compares shares within each class, not raw counts. */
static void test_bayes_ratios_normalised_by_totals(void **state)
{
    struct spim_bayes_params p;
    struct spim_totals tot = {1000, 100};
    struct spim_token t = tk(10, 1); /* 1% of ham, 1% of spam */
    unsigned used = 7;

    (void)state;
    spim_bayes_defaults(&p);
    p.min_dev = 0.0;
    assert_true(fabs(spim_bayes_prob(&t, 1, &tot, &p, &used) - 0.5) < 1e-9);
    assert_int_equal(used, 1);
}

static void test_bayes_combines_to_extremes(void **state)
{
    struct spim_totals tot = {500, 100};
    struct spim_token spam[6] = {tk(0, 40), tk(1, 30), tk(0, 12), tk(2, 50), tk(0, 8), tk(0, 0)};
    struct spim_token ham[5] = {tk(80, 0), tk(40, 1), tk(30, 0), tk(200, 2), tk(9, 0)};
    struct spim_token mixed[4] = {tk(0, 40), tk(0, 30), tk(80, 0), tk(90, 0)};
    unsigned used;
    double pm;

    (void)state;
    assert_true(spim_bayes_prob(spam, 6, &tot, NULL, &used) > 0.99);
    assert_int_equal(used, 5);
    assert_true(spim_bayes_prob(ham, 5, &tot, NULL, &used) < 0.01);
    /* Strong evidence both ways is unsure, not an average pushed to one end. */
    pm = spim_bayes_prob(mixed, 4, &tot, NULL, &used);
    assert_true(pm > 0.3 && pm < 0.7);
}

static void test_bayes_max_tokens_keeps_extremes(void **state)
{
    struct spim_bayes_params p;
    struct spim_totals tot = {100, 100};
    struct spim_token t[5] = {tk(30, 45), tk(0, 90), tk(40, 55), tk(35, 50), tk(90, 0)};
    unsigned used;
    double pr;

    (void)state;
    spim_bayes_defaults(&p);
    p.max_tokens = 2;
    pr = spim_bayes_prob(t, 5, &tot, &p, &used);
    assert_int_equal(used, 2);
    /* The two kept are the 90/0 pair, which cancel. */
    assert_true(fabs(pr - 0.5) < 1e-6);
    p.max_tokens = 150;
    p.min_dev = 0.0;
    pr = spim_bayes_prob(t, 5, &tot, &p, &used);
    assert_int_equal(used, 5);
    assert_true(pr > 0.5);
}

/*
 * The textbook form, for comparison: f(w) with four divisions, the sum of
 * logs, and the chi-square tail summed in the log domain term by term.
 */
static double ref_f(const struct spim_token *t, const struct spim_totals *tot, double s, double x)
{
    double hr = (double)t->ham / (double)tot->ham_msgs,
           sr = (double)t->spam / (double)tot->spam_msgs;
    double n = (double)t->ham + (double)t->spam, v = (s * x + n * (sr / (hr + sr))) / (s + n);

    return v < 1e-6 ? 1e-6 : v > 1.0 - 1e-6 ? 1.0 - 1e-6 : v;
}

static double ref_chi2q(double x2, unsigned v)
{
    double m = x2 / 2.0, lterm = -m, sum = 0.0;

    for (unsigned i = 0; i < v / 2; i++) {
        if (i > 0)
            lterm += log(m) - log((double)i);
        sum += exp(lterm);
    }
    return sum < 1.0 ? sum : 1.0;
}

static double ref_prob(const struct spim_token *t, size_t n, const struct spim_totals *tot)
{
    double hs = 0.0, ss = 0.0;
    unsigned m = 0;

    for (size_t i = 0; i < n; i++) {
        double f = ref_f(&t[i], tot, 1.0, 0.5);

        if (fabs(f - 0.5) < 0.1)
            continue;
        hs += log(f);
        ss += log(1.0 - f);
        m++;
    }
    if (m == 0)
        return 0.5;
    return (1.0 + ref_chi2q(-2.0 * hs, 2 * m) - ref_chi2q(-2.0 * ss, 2 * m)) / 2.0;
}

/*
 * spim_bayes_prob takes shortcuts (one division per token, a product with
 * one log, the tail's terms by recurrence, switching to the log domain where
 * e^-m underflows): on random messages of 1 to 1,000 tokens, counts up to a
 * million, and clue sets from one-sided to mixed, it stays within 1e-9 of
 * the textbook form, on both sides of the switch.
 */
/*
 * The usual case takes two tokens at a time: an unknown token (no clue, a
 * factor of 1) put first moves every token to the other lane, and the
 * probability must come out bit for bit the same, for odd and even counts,
 * counts above 2^31 and clues on one lane only; a token alone (taken on its
 * own) gives what it gives in either lane beside an unknown one.
 */
static void test_bayes_lanes_agree(void **state)
{
    static struct spim_token t[SPIM_TOK_MAX], u[SPIM_TOK_MAX];
    struct spim_bayes_params p;
    uint64_t seed = 0x9E3779B97F4A7C15ull;

    (void)state;
    spim_bayes_defaults(&p);
    p.max_tokens = 0;
    for (int round = 0; round < 2000; round++) {
        struct spim_totals tot;
        size_t n;
        unsigned used1, used2;
        double a, b;

        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        n = 1 + (size_t)(seed % 200);
        tot.ham_msgs = 1 + (seed >> 32) % 100000;
        tot.spam_msgs = 1 + (seed >> 12) % 100000;
        for (size_t i = 0; i < n; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            t[i] = tk((uint32_t)(seed % 50), (uint32_t)((seed >> 20) % 50));
            if ((seed >> 40) % 7 == 0)
                t[i].ham = 0x80000000u + (uint32_t)(seed >> 44); /* past 2^31 */
            if ((seed >> 50) % 5 == 0)
                t[i].ham = t[i].spam = 0; /* unknown: no clue */
        }
        u[0] = tk(0, 0);
        memcpy(u + 1, t, n * sizeof(t[0]));
        a = spim_bayes_prob(t, n, &tot, &p, &used1);
        b = spim_bayes_prob(u, n + 1, &tot, &p, &used2);
        assert_memory_equal(&a, &b, sizeof(a));
        assert_int_equal(used1, used2);
        /* One token alone (the one-at-a-time loop) and beside an unknown one,
         * in either lane. */
        for (size_t i = 0; i < n && i < 4; i++) {
            struct spim_token pair[2] = {t[i], tk(0, 0)};
            double one = spim_bayes_prob(&t[i], 1, &tot, &p, NULL), x, y;

            x = spim_bayes_prob(pair, 2, &tot, &p, NULL);
            pair[0] = tk(0, 0);
            pair[1] = t[i];
            y = spim_bayes_prob(pair, 2, &tot, &p, NULL);
            assert_memory_equal(&one, &x, sizeof(one));
            assert_memory_equal(&one, &y, sizeof(one));
        }
    }
}

static void test_bayes_matches_reference(void **state)
{
    static struct spim_token t[SPIM_TOK_MAX];
    struct spim_bayes_params p;
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    double worst = 0.0;
    unsigned high_m = 0;

    (void)state;
    spim_bayes_defaults(&p);
    p.max_tokens = 0; /* all clues, as the reference takes them */
    for (int round = 0; round < 3000; round++) {
        struct spim_totals tot;
        size_t n;
        unsigned used;
        double pr, want, hs = 0.0;
        int lean;

        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        n = 1 + (size_t)(seed % 1000);
        lean = (int)((seed >> 20) % 3); /* 0 hammy, 1 spammy, 2 mixed */
        tot.ham_msgs = 1 + (seed >> 32) % 1000000;
        tot.spam_msgs = 1 + (seed >> 12) % 1000000;
        for (size_t i = 0; i < n; i++) {
            uint32_t a, b;

            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            a = (uint32_t)(seed % 1000000);
            b = (uint32_t)((seed >> 24) % ((seed >> 50) % 4 == 0 ? 1000000 : 30));
            if (lean == 1 || (lean == 2 && (seed >> 60) % 2))
                t[i] = tk(b, a); /* spam-heavy */
            else
                t[i] = tk(a, b);
            if (t[i].ham + t[i].spam == 0)
                t[i].spam = 1;
            {
                double f = ref_f(&t[i], &tot, 1.0, 0.5);

                if (fabs(f - 0.5) >= 0.1)
                    hs += log(f);
            }
        }
        pr = spim_bayes_prob(t, n, &tot, &p, &used);
        want = ref_prob(t, n, &tot);
        if (fabs(pr - want) > worst)
            worst = fabs(pr - want);
        high_m += -hs > 700.0;
        assert_true(fabs(pr - want) < 1e-9);
    }
    /* Both branches of the tail were taken. */
    assert_true(high_m > 100);
    assert_true(high_m < 2900);
    assert_true(worst < 1e-9);
}

/* --- spim_classify with a small table of trained counts --------------------------- */

struct table {
    size_t n;
    uint64_t key[64];
    uint32_t ham[64], spam[64];
    struct spim_totals tot;
    int fail;
};

static void table_add(struct table *t, enum spim_tok_kind kind, const char *s, uint32_t ham,
                      uint32_t spam)
{
    assert_true(t->n < 64);
    t->key[t->n] = spim_tok_key(kind, s, strlen(s));
    t->ham[t->n] = ham;
    t->spam[t->n] = spam;
    t->n++;
}

static int table_lookup(void *ud, struct spim_token *toks, size_t n, struct spim_totals *totals)
{
    struct table *t = ud;
    size_t i, j;

    if (t->fail)
        return SPIM_ESTORE;
    for (i = 0; i < n; i++) {
        toks[i].ham = toks[i].spam = 0;
        for (j = 0; j < t->n; j++) {
            if (t->key[j] == toks[i].key) {
                toks[i].ham = t->ham[j];
                toks[i].spam = t->spam[j];
            }
        }
    }
    *totals = t->tot;
    return 0;
}

/* What a prefetch hint was told, and what the lookup after it was asked. */
struct hinted {
    struct table t;
    uint64_t told[SPIM_TOK_MAX], asked[SPIM_TOK_MAX];
    size_t ntold, nasked;
};

static void hint_record(void *ud, uint64_t key)
{
    struct hinted *h = ud;

    if (h->ntold < SPIM_TOK_MAX)
        h->told[h->ntold] = key;
    h->ntold++;
}

static int hinted_lookup(void *ud, struct spim_token *toks, size_t n, struct spim_totals *totals)
{
    struct hinted *h = ud;

    for (size_t i = 0; i < n && i < SPIM_TOK_MAX; i++)
        h->asked[i] = toks[i].key;
    h->nasked = n;
    return table_lookup(&h->t, toks, n, totals);
}

/*
 * The prefetch hint of struct spim_counts_ops is told every key the lookup
 * then asks for, each once and in the same order, before the lookup; the
 * verdict is the one without the hint.
 */
static void test_bayes_prefetch_hint_told_each_key(void **state)
{
    static const struct spim_counts_ops with = {.lookup = hinted_lookup, .prefetch = hint_record};
    static const struct spim_counts_ops without = {.lookup = hinted_lookup};
    static struct hinted h;
    struct spim_scan *s = NULL;
    struct spim_verdict v1, v2;
    const char *msg = "FREE entry!! w1n a prize, txt WIN to 87121 or see www.win-now.example/x "
                      "free free f r e e";

    (void)state;
    memset(&h, 0, sizeof(h));
    h.t.tot.ham_msgs = 400;
    h.t.tot.spam_msgs = 100;
    table_add(&h.t, SPIM_TOK_WORD, "free", 2, 60);
    table_add(&h.t, SPIM_TOK_WORD, "prize", 0, 35);
    assert_int_equal(spim_scan_new(NULL, &s), 0);
    assert_int_equal(spim_classify(s, &with, &h, NULL, NULL, msg, strlen(msg), NULL, &v1), 0);
    assert_true(h.nasked > 10);
    assert_int_equal(h.ntold, h.nasked);
    assert_memory_equal(h.told, h.asked, h.nasked * sizeof(uint64_t));
    h.ntold = 0;
    assert_int_equal(spim_classify(s, &without, &h, NULL, NULL, msg, strlen(msg), NULL, &v2), 0);
    assert_int_equal(h.ntold, 0);
    assert_true(v1.spam_probability == v2.spam_probability);
    assert_int_equal(v1.action, v2.action);
    assert_int_equal(v1.tokens, v2.tokens);
    spim_scan_free(s);
}

static void test_bayes_classify_end_to_end(void **state)
{
    static const struct spim_counts_ops ops = {.lookup = table_lookup};
    struct table t;
    struct spim_scan *s = NULL;
    struct spim_verdict v;
    const char *spam = "FR33 entry: w1n a prize, txt 87121";
    const char *ham = "see you at lunch, ok?";

    (void)state;
    memset(&t, 0, sizeof(t));
    t.tot.ham_msgs = 400;
    t.tot.spam_msgs = 100;
    table_add(&t, SPIM_TOK_WORD, "free", 2, 60);
    table_add(&t, SPIM_TOK_WORD, "entry", 1, 30);
    table_add(&t, SPIM_TOK_WORD, "win", 3, 40);
    table_add(&t, SPIM_TOK_WORD, "prize", 0, 35);
    table_add(&t, SPIM_TOK_PHONE, "sc:87121", 0, 12);
    table_add(&t, SPIM_TOK_WORD, "see", 60, 2);
    table_add(&t, SPIM_TOK_WORD, "you", 150, 40);
    table_add(&t, SPIM_TOK_WORD, "lunch", 25, 0);
    table_add(&t, SPIM_TOK_BIGRAM, "see you", 30, 0);
    table_add(&t, SPIM_TOK_WORD, "ok", 80, 1);

    assert_int_equal(spim_scan_new(NULL, &s), 0);
    assert_int_equal(spim_classify(s, &ops, &t, NULL, NULL, spam, strlen(spam), NULL, &v), 0);
    assert_true(v.spam_probability > 0.99);
    assert_int_equal(v.action, SPIM_BLOCK);
    assert_true(v.tokens > 5);
    assert_true(v.tokens_used >= 5);
    assert_int_equal(v.hits.n, 0);

    assert_int_equal(spim_classify(s, &ops, &t, NULL, NULL, ham, strlen(ham), NULL, &v), 0);
    assert_true(v.spam_probability < 0.01);
    assert_int_equal(v.action, SPIM_DELIVER);

    /* Training sees the same tokens that classification looks up. */
    {
        struct spim_token a[SPIM_TOK_MAX], b[SPIM_TOK_MAX];
        size_t na = spim_scan_tokens(s, spam, strlen(spam), NULL, a, SPIM_TOK_MAX);
        size_t nb = spim_tok_text(spam, strlen(spam), NULL, b, SPIM_TOK_MAX, NULL, NULL);

        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof(*a));
    }

    /* A store error is the caller's to see. */
    t.fail = 1;
    assert_int_equal(spim_classify(s, &ops, &t, NULL, NULL, ham, strlen(ham), NULL, &v),
                     SPIM_ESTORE);
    spim_scan_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bayes_no_evidence_is_half),
        cmocka_unit_test(test_bayes_matches_reference),
        cmocka_unit_test(test_bayes_lanes_agree),
        cmocka_unit_test(test_bayes_single_token_is_robinson_f),
        cmocka_unit_test(test_bayes_ratios_normalised_by_totals),
        cmocka_unit_test(test_bayes_combines_to_extremes),
        cmocka_unit_test(test_bayes_max_tokens_keeps_extremes),
        cmocka_unit_test(test_bayes_classify_end_to_end),
        cmocka_unit_test(test_bayes_prefetch_hint_told_each_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
