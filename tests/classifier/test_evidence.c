/*
 * test_evidence.c: spim_classify_ex and the evidence of a verdict: the
 * enforced weights add up to the score, shadow rules and shadow Bayes are
 * reported but not added, the strongest tokens carry their texts, counts
 * and f(w), and the list and its text are bounded.
 *
 * Counts come from a small table served through struct spim_counts_ops
 * (what a store would hold after training, as in test_bayes.c); the rules
 * are a real file compiled by Hyperscan in a mkdtemp directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "classifier.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

struct table {
    size_t n;
    uint64_t key[64];
    uint32_t ham[64], spam[64];
    struct spim_totals tot;
};

struct fx {
    char dir[64];
    char path[128];
    struct spim_rules *rules;
    struct spim_scan *scan;
    struct table t;
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

/* The table's index of key, or -1. */
static int table_find(const struct table *t, uint64_t key)
{
    for (size_t j = 0; j < t->n; j++)
        if (t->key[j] == key)
            return (int)j;
    return -1;
}

static int table_lookup(void *ud, struct spim_token *toks, size_t n, struct spim_totals *totals)
{
    struct table *t = ud;

    for (size_t i = 0; i < n; i++) {
        int j = table_find(t, toks[i].key);

        toks[i].ham = j < 0 ? 0 : t->ham[j];
        toks[i].spam = j < 0 ? 0 : t->spam[j];
    }
    *totals = t->tot;
    return 0;
}

static const struct spim_counts_ops ops = {.lookup = table_lookup};

static const char rules_text[] = "PRIZE    2.5  /\\bprize\\b/\n"
                                 "FREE     1.5  /\\bfree\\b/\n"
                                 "ENTRY    3    /\\bentry\\b/   shadow\n"
                                 "HAM_LOL -1    /\\blol\\b/i\n"
                                 "HAM_OK  -0.5  /\\bok\\b/ shadow\n";

static const char spam_text[] = "FREE entry: w1n a prize, txt 87121";
static const char ham_text[] = "see you at lunch, ok? lol";

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    DIR *d;
    struct dirent *de;

    spim_scan_free(f->scan);
    spim_rules_free(f->rules);
    unsetenv("SPIM_RULES_CACHE");
    d = opendir(f->dir);
    while (d != NULL && (de = readdir(d)) != NULL) {
        char p[512];

        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", f->dir, de->d_name);
        unlink(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct spim_diag d;
    FILE *fp;

    if (f == NULL)
        return -1;
    *state = f;
    snprintf(f->dir, sizeof(f->dir), "/tmp/spim-evidence-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/test.rules", f->dir);
    fp = fopen(f->path, "w");
    if (fp == NULL || fputs(rules_text, fp) < 0 || fclose(fp) != 0)
        goto fail;
    setenv("SPIM_RULES_CACHE", f->dir, 1);
    memset(&d, 0, sizeof(d));
    if (spim_rules_load(f->path, &f->rules, &d) != 0) {
        fprintf(stderr, "%s:%u: %s\n", d.file, d.line, d.msg);
        goto fail;
    }
    if (spim_scan_new(f->rules, &f->scan) != 0)
        goto fail;
    f->t.tot.ham_msgs = 400;
    f->t.tot.spam_msgs = 100;
    table_add(&f->t, SPIM_TOK_WORD, "free", 2, 60);
    table_add(&f->t, SPIM_TOK_WORD, "entry", 1, 30);
    table_add(&f->t, SPIM_TOK_WORD, "win", 3, 40);
    table_add(&f->t, SPIM_TOK_WORD, "prize", 0, 35);
    table_add(&f->t, SPIM_TOK_PHONE, "sc:87121", 0, 12);
    table_add(&f->t, SPIM_TOK_WORD, "txt", 5, 25);
    table_add(&f->t, SPIM_TOK_WORD, "see", 60, 2);
    table_add(&f->t, SPIM_TOK_WORD, "you", 150, 40);
    table_add(&f->t, SPIM_TOK_WORD, "lunch", 25, 0);
    table_add(&f->t, SPIM_TOK_BIGRAM, "see you", 30, 0);
    table_add(&f->t, SPIM_TOK_WORD, "ok", 80, 1);
    table_add(&f->t, SPIM_TOK_WORD, "lol", 90, 3);
    return 0;

fail:
    fx_teardown(state);
    return -1;
}

/* The item of kind and name, or NULL. */
static const struct spim_evidence_item *item(const struct spim_evidence *e, const char *kind,
                                             const char *name)
{
    for (unsigned i = 0; i < e->n; i++)
        if (strcmp(e->item[i].kind, kind) == 0 && strncmp(e->item[i].name, name, strlen(name)) == 0)
            return &e->item[i];
    return NULL;
}

static void classify_ex(struct fx *f, const struct spim_thresholds *t,
                        const struct spim_bayes_params *bp, const char *text,
                        struct spim_verdict *v, struct spim_evidence *e)
{
    assert_int_equal(spim_classify_ex(f->scan, &ops, &f->t, bp, t, text, strlen(text), NULL, v, e),
                     0);
}

static void test_evidence_weights_add_up_to_score(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v, plain;
    static struct spim_evidence e;
    const struct spim_evidence_item *it;
    unsigned nbayes = 0;

    classify_ex(f, NULL, NULL, spam_text, &v, &e);
    assert_true(fabs(spim_evidence_sum(&e) - v.score) < 1e-9);
    assert_true(v.spam_probability > 0.99);
    for (unsigned i = 0; i < e.n; i++)
        nbayes += strcmp(e.item[i].kind, "bayes") == 0;
    assert_int_equal(nbayes, 1);
    it = item(&e, "bayes", "p=");
    assert_non_null(it);
    assert_false(it->shadow);
    assert_true(it->weight == v.bayes_points);
    assert_true(v.bayes_points > 9.0);
    assert_non_null(strstr(it->name, "of "));
    it = item(&e, "rule", "PRIZE");
    assert_non_null(it);
    assert_true(it->weight == 2.5 && !it->shadow);
    it = item(&e, "rule", "FREE");
    assert_non_null(it);
    assert_true(it->weight == 1.5 && !it->shadow);
    /* The shadow rule is there, worth 0, with what it would have added. */
    it = item(&e, "rule", "ENTRY");
    assert_non_null(it);
    assert_true(it->shadow && it->weight == 0.0 && it->shadow_weight == 3.0);
    assert_true(v.shadow_score == 3.0);
    assert_true(fabs(v.score - (v.bayes_points + 4.0)) < 1e-9);
    assert_int_equal(v.action, SPIM_BLOCK);

    /* Without evidence the verdict is the same, to the bit. */
    assert_int_equal(
        spim_classify(f->scan, &ops, &f->t, NULL, NULL, spam_text, strlen(spam_text), NULL, &plain),
        0);
    assert_true(plain.score == v.score);
    assert_true(plain.spam_probability == v.spam_probability);
    assert_int_equal(plain.action, v.action);
    assert_int_equal(plain.hits.n, v.hits.n);
    /* The evidence asked for after the verdict (serve's blocks) is the same evidence. */
    {
        static struct spim_evidence late;

        assert_int_equal(spim_scan_explain(f->scan, NULL, NULL, NULL, &plain, &late), 0);
        assert_int_equal(late.n, e.n);
        assert_int_equal(late.ntok, e.ntok);
        for (unsigned i = 0; i < e.n; i++) {
            assert_string_equal(late.item[i].name, e.item[i].name);
            assert_true(late.item[i].weight == e.item[i].weight);
        }
        for (unsigned i = 0; i < e.ntok; i++) {
            assert_string_equal(late.tok[i].text, e.tok[i].text);
            assert_true(late.tok[i].prob == e.tok[i].prob);
        }
    }

    /* A ham message: negative Bayes, an enforced ham rule, a shadow ham rule. */
    classify_ex(f, NULL, NULL, ham_text, &v, &e);
    assert_true(fabs(spim_evidence_sum(&e) - v.score) < 1e-9);
    assert_true(item(&e, "bayes", "p=")->weight < -9.0);
    assert_true(item(&e, "rule", "HAM_LOL")->weight == -1.0);
    it = item(&e, "rule", "HAM_OK");
    assert_true(it != NULL && it->shadow && it->shadow_weight == -0.5);
    assert_true(v.shadow_score == -0.5);
    assert_int_equal(v.action, SPIM_DELIVER);
}

static void test_evidence_shadow_bayes(void **state)
{
    struct fx *f = *state;
    struct spim_thresholds t;
    struct spim_verdict v, enforced;
    static struct spim_evidence e;
    const struct spim_evidence_item *it;

    spim_thresholds_defaults(&t);
    classify_ex(f, &t, NULL, spam_text, &enforced, &e);
    t.bayes_shadow = 1;
    classify_ex(f, &t, NULL, spam_text, &v, &e);
    /* Same probability and points, none of them in the score. */
    assert_true(v.spam_probability == enforced.spam_probability);
    assert_true(v.bayes_points == enforced.bayes_points);
    assert_true(v.score == 4.0);
    assert_true(fabs(v.shadow_score - (v.bayes_points + 3.0)) < 1e-9);
    assert_int_equal(v.action, SPIM_TAG);
    it = item(&e, "bayes", "p=");
    assert_non_null(it);
    assert_true(it->shadow && it->weight == 0.0 && it->shadow_weight == v.bayes_points);
    assert_true(fabs(spim_evidence_sum(&e) - v.score) < 1e-9);
    /* The tokens are still explained: Bayes was computed. */
    assert_true(e.ntok > 0);
}

static void test_evidence_strongest_tokens(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    struct spim_bayes_params bp;
    static struct spim_evidence e;
    double prev = 1.0;
    int saw_prize = 0;

    classify_ex(f, NULL, NULL, spam_text, &v, &e);
    assert_true(e.ntok > 0 && e.ntok <= SPIM_EVIDENCE_TOKENS);
    assert_true(e.ntok <= v.tokens_used);
    spim_bayes_defaults(&bp);
    for (unsigned i = 0; i < e.ntok; i++) {
        const struct spim_evidence_token *t = &e.tok[i];
        int j = table_find(&f->t, spim_tok_key(t->kind, t->text, strlen(t->text)));
        double dev = fabs(t->prob - 0.5), hr, sr, fw;

        /* The text maps back to the token's key, so it is the token's own text. */
        assert_true(j >= 0);
        assert_int_equal(t->ham, f->t.ham[j]);
        assert_int_equal(t->spam, f->t.spam[j]);
        /* Strongest first. */
        assert_true(dev <= prev + 1e-12);
        prev = dev;
        /* f(w) is Robinson's, as the probability used it. */
        hr = (double)t->ham / 400.0;
        sr = (double)t->spam / 100.0;
        fw = (bp.s * bp.x + (t->ham + t->spam) * (sr / (hr + sr))) / (bp.s + t->ham + t->spam);
        assert_true(fabs(t->prob - fw) < 1e-9);
        if (strcmp(t->text, "prize") == 0) {
            saw_prize = 1;
            assert_int_equal(t->kind, SPIM_TOK_WORD);
            assert_true(t->prob > 0.9);
        }
    }
    assert_true(saw_prize);

    /* No more tokens than took part. */
    bp.max_tokens = 2;
    classify_ex(f, NULL, &bp, spam_text, &v, &e);
    assert_int_equal(v.tokens_used, 2);
    assert_int_equal(e.ntok, 2);

    /* No counts: no tokens to show, an unsure Bayes item worth 0. */
    assert_int_equal(spim_classify_ex(f->scan, NULL, NULL, NULL, NULL, spam_text, strlen(spam_text),
                                      NULL, &v, &e),
                     0);
    assert_int_equal(e.ntok, 0);
    assert_true(item(&e, "bayes", "p=0.5000")->weight == 0.0);
    assert_true(fabs(spim_evidence_sum(&e) - v.score) < 1e-9);
}

static void test_evidence_format(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    static struct spim_evidence e;
    char buf[8192], small[40];
    size_t n;

    classify_ex(f, NULL, NULL, spam_text, &v, &e);
    n = spim_evidence_format(&e, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "bayes"));
    assert_non_null(strstr(buf, "  +2.50  rule"));
    assert_non_null(strstr(buf, "ENTRY  (shadow, would add +3.00)"));
    assert_non_null(strstr(buf, "prize"));
    /* As snprintf: the length needed, the text cut and terminated. */
    assert_int_equal(spim_evidence_format(&e, NULL, 0), n);
    assert_int_equal(spim_evidence_format(&e, small, sizeof(small)), n);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_int_equal(strncmp(small, buf, sizeof(small) - 1), 0);
    assert_int_equal(spim_evidence_format(NULL, small, sizeof(small)), 0);
    assert_string_equal(small, "");
}

/* The verdict says whether the text holds a URL or a phone number (first contact weighs it). */
static void test_verdict_has_link(void **state)
{
    static const struct {
        const char *text;
        int link;
    } cases[] = {
        {"can you look at this www.example.com/report", 1},
        {"the photos are at https://photos.example.net/a/1", 1},
        {"see example.org", 1},
        {"call me on 07700 900123 tonight", 1},
        {"are you free to talk", 0},
        {"meet at 6, room 12", 0},
        {"", 0},
    };
    struct spim_scan *scan;
    struct spim_verdict v;

    (void)state;
    assert_int_equal(spim_scan_new(NULL, &scan), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(spim_classify(scan, NULL, NULL, NULL, NULL, cases[i].text,
                                       strlen(cases[i].text), NULL, &v),
                         0);
        if (v.has_link != cases[i].link)
            fail_msg("'%s': has_link %d, expected %d", cases[i].text, v.has_link, cases[i].link);
    }
    /* It is what the tokens hold: a message past the token cap has no room left
     * for the URL's meta token, and says no link, as its tokens do. */
    {
        static char big[20000];
        size_t len = 0;

        for (unsigned w = 0; len + 40 < sizeof(big) - 40 && w < 1200; w++)
            len += (size_t)snprintf(big + len, sizeof(big) - len, "w%ux ", w);
        len += (size_t)snprintf(big + len, sizeof(big) - len, "www.example.com/x");
        assert_int_equal(spim_classify(scan, NULL, NULL, NULL, NULL, big, len, NULL, &v), 0);
        assert_int_equal(v.tokens, SPIM_TOK_MAX);
        assert_int_equal(v.has_link, 0);
        assert_int_equal(spim_classify(scan, NULL, NULL, NULL, NULL, big + len - 17, 17, NULL, &v),
                         0);
        assert_int_equal(v.has_link, 1);
    }
    spim_scan_free(scan);
}

static void test_evidence_add_is_bounded(void **state)
{
    static struct spim_evidence e;
    char name[256];
    size_t k = 0;

    (void)state;
    memset(&e, 0, sizeof(e));
    /* 100 two-byte characters: the name is cut on a character boundary. */
    for (int i = 0; i < 100; i++) {
        name[k++] = '\xc3';
        name[k++] = '\xa9';
    }
    name[k] = '\0';
    spim_evidence_add(&e, "a-kind-longer-than-sixteen", name, 1.5, 0, 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(strlen(e.item[0].kind), sizeof(e.item[0].kind) - 1);
    assert_int_equal(strlen(e.item[0].name) % 2, 0);
    assert_true(strlen(e.item[0].name) >= sizeof(e.item[0].name) - 2);
    /* A shadow item adds nothing whatever weight it is given. */
    spim_evidence_add(&e, "policy", "would block", 5.0, 1, 5.0);
    assert_true(e.item[1].weight == 0.0 && e.item[1].shadow_weight == 5.0);
    assert_true(spim_evidence_sum(&e) == 1.5);
    for (int i = 0; i < SPIM_EVIDENCE_MAX + 10; i++)
        spim_evidence_add(&e, "rate", NULL, 1.0, 0, 0);
    assert_int_equal(e.n, SPIM_EVIDENCE_MAX);
    assert_true(spim_evidence_sum(&e) == 1.5 + (SPIM_EVIDENCE_MAX - 2));
    assert_string_equal(e.item[2].name, "");
    spim_evidence_add(NULL, "rule", "X", 1, 0, 0); /* no-op */
    assert_true(spim_evidence_sum(NULL) == 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_evidence_weights_add_up_to_score, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_evidence_shadow_bayes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_evidence_strongest_tokens, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_evidence_format, fx_setup, fx_teardown),
        cmocka_unit_test(test_evidence_add_is_bounded),
        cmocka_unit_test(test_verdict_has_link),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
