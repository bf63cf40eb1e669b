/*
 * test_tokenizer.c: what the tokenizer makes of short, obfuscated IM text.
 *
 * Tokens are observed through the emit callback (kind and normalised text)
 * and through the keys written out, which must be spim_tok_key() of them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "classifier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEEN_MAX 4096

struct seen {
    size_t n;
    enum spim_tok_kind kind[SEEN_MAX];
    char text[SEEN_MAX][128];
};

static void collect(void *ud, enum spim_tok_kind kind, const char *s, size_t n)
{
    struct seen *sn = ud;

    if (sn->n >= SEEN_MAX)
        return;
    if (n >= sizeof(sn->text[0]))
        n = sizeof(sn->text[0]) - 1;
    sn->kind[sn->n] = kind;
    memcpy(sn->text[sn->n], s, n);
    sn->text[sn->n][n] = '\0';
    sn->n++;
}

struct run {
    struct seen seen;
    struct spim_token toks[SPIM_TOK_MAX];
    size_t n;
};

static struct run *tok(const char *text, size_t len, const struct spim_tok_meta *meta)
{
    struct run *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    r->n = spim_tok_text(text, len, meta, r->toks, SPIM_TOK_MAX, collect, &r->seen);
    return r;
}

static struct run *toks(const char *text)
{
    return tok(text, strlen(text), NULL);
}

static int emitted(const struct run *r, enum spim_tok_kind kind, const char *s)
{
    size_t i;

    for (i = 0; i < r->seen.n; i++) {
        if (r->seen.kind[i] == kind && strcmp(r->seen.text[i], s) == 0)
            return 1;
    }
    return 0;
}

static int has_key(const struct run *r, enum spim_tok_kind kind, const char *s)
{
    uint64_t k = spim_tok_key(kind, s, strlen(s));
    size_t i;

    for (i = 0; i < r->n; i++) {
        if (r->toks[i].key == k)
            return 1;
    }
    return 0;
}

/* Both views must agree: the callback saw it, and its key was written out. */
static void assert_token(const struct run *r, enum spim_tok_kind kind, const char *s)
{
    if (!emitted(r, kind, s) || !has_key(r, kind, s)) {
        size_t i;

        for (i = 0; i < r->seen.n; i++)
            fprintf(stderr, "  kind %d \"%s\"\n", (int)r->seen.kind[i], r->seen.text[i]);
        fail_msg("missing token kind %d \"%s\"", (int)kind, s);
    }
}

static void test_tok_free_variants_share_word(void **state)
{
    /* Capitals, fullwidth, zero-width space, word joiner, BOM, soft hyphen,
     * spaced and dotted letters: all are the word "free". */
    static const char *const variants[] = {
        "FREE",
        "\xef\xbd\x86\xef\xbd\x92\xef\xbd\x85\xef\xbd\x85", /* ｆｒｅｅ */
        "fr\xe2\x80\x8b"
        "ee", /* U+200B */
        "fr\xe2\x80\x8d"
        "ee", /* U+200D */
        "fr\xe2\x81\xa0"
        "ee", /* U+2060 */
        "fr\xef\xbb\xbf"
        "ee", /* U+FEFF */
        "fr\xc2\xad"
        "ee", /* U+00AD */
        "f r e e",
        "f.r.e.e",
        "F-R-E-E",
        "Fr33",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(variants) / sizeof(*variants); i++) {
        struct run *r = toks(variants[i]);

        assert_token(r, SPIM_TOK_WORD, "free");
        free(r);
    }
}

/* Whether two texts give the same set of keys: one meaning, one set of tokens. */
static int same_keys(const struct run *a, const struct run *b)
{
    size_t i, j;

    if (a->n != b->n)
        return 0;
    for (i = 0; i < a->n; i++) {
        for (j = 0; j < b->n && b->toks[j].key != a->toks[i].key; j++)
            ;
        if (j == b->n)
            return 0;
    }
    return 1;
}

static void test_tok_lookalikes_fold_to_latin(void **state)
{
    /* Cyrillic е (U+0435) twice in "frее", capital Cyrillic Е (U+0415) in
     * "FRЕЕ", Greek ο (U+03BF) in "frοm"... each gives exactly the tokens of
     * the plain Latin text, not merely one token in common. */
    static const char *const pairs[][2] = {
        {"fr\xd0\xb5\xd0\xb5", "free"},
        {"FR\xd0\x95\xd0\x95 entry", "FREE entry"},
        {"claim fr\xd0\xb5\xd0\xb5 prize", "claim free prize"},
        {"\xd1\x80\xd0\xb0\xd1\x83pal login", "paypal login"},       /* р а у */
        {"H\xd0\x95LLO fr\xce\xbfm B\xd0\x90NK", "HELLO from BANK"}, /* Е ο А */
        {"\xd0\x9d"
         "ELLO",
         "HELLO"}, /* capital Н looks like H; small н does not */
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(pairs) / sizeof(*pairs); i++) {
        struct run *a = toks(pairs[i][0]), *b = toks(pairs[i][1]);

        if (!same_keys(a, b))
            fail_msg("\"%s\" and \"%s\" differ in tokens", pairs[i][0], pairs[i][1]);
        free(a);
        free(b);
    }
}

static void test_tok_other_scripts_stay(void **state)
{
    /* Words wholly in Cyrillic or Greek are not look-alikes but words:
     * "сор" (Cyrillic, "litter") must not become "cop". */
    struct run *r = toks("\xd1\x81\xd0\xbe\xd1\x80 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5"
                         "\xd1\x82 \xce\xbf\xce\xba");

    (void)state;
    assert_token(r, SPIM_TOK_WORD, "\xd1\x81\xd0\xbe\xd1\x80");
    assert_token(r, SPIM_TOK_WORD, "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"); /* привет */
    assert_token(r, SPIM_TOK_WORD, "\xce\xbf\xce\xba");                                 /* οκ */
    assert_false(emitted(r, SPIM_TOK_WORD, "cop"));
    assert_false(emitted(r, SPIM_TOK_WORD, "ok"));
    free(r);
    /* Accented Latin letters are letters, not look-alikes: "café" stays. */
    r = toks("caf\xc3\xa9");
    assert_token(r, SPIM_TOK_WORD, "caf\xc3\xa9");
    free(r);
}

static void test_tok_leet_adds_plain_word(void **state)
{
    struct run *r = toks("w1n a c4sh pr1ze ca$h 2day 150p");

    (void)state;
    assert_token(r, SPIM_TOK_WORD, "w1n");
    assert_token(r, SPIM_TOK_WORD, "win");
    assert_token(r, SPIM_TOK_WORD, "cash");
    assert_token(r, SPIM_TOK_WORD, "prize");
    assert_token(r, SPIM_TOK_WORD, "2day");
    /* A number with a unit is not leet: no "iso" out of "150". */
    assert_token(r, SPIM_TOK_NUMBER, "money:p3");
    assert_false(emitted(r, SPIM_TOK_WORD, "isop"));
    free(r);
}

static void test_tok_urls(void **state)
{
    struct run *r = toks("go to bit.ly/Win-Now or www.foo.com, http://x.shop.co.uk/a?b=1 e.g. now");

    (void)state;
    assert_token(r, SPIM_TOK_URL, "host:bit.ly");
    assert_token(r, SPIM_TOK_URL, "dom:bit.ly");
    assert_token(r, SPIM_TOK_URL, "path:win");
    assert_token(r, SPIM_TOK_URL, "path:now");
    assert_token(r, SPIM_TOK_URL, "host:www.foo.com");
    assert_token(r, SPIM_TOK_URL, "dom:foo.com");
    assert_token(r, SPIM_TOK_URL, "host:x.shop.co.uk");
    assert_token(r, SPIM_TOK_URL, "dom:shop.co.uk");
    assert_token(r, SPIM_TOK_META, "shortener");
    assert_token(r, SPIM_TOK_META, "url:1");
    /* "e.g." is no domain. */
    assert_false(emitted(r, SPIM_TOK_URL, "host:e.g"));
    assert_token(r, SPIM_TOK_WORD, "e");
    free(r);

    /* Hosts after dots that are not theirs ("ok...", "12.30", "e.g."), in
     * capitals, after a digit, and in fullwidth forms: each is still found
     * (a message is only scanned for URLs when a dot sits between a label
     * character and a letter). */
    r = toks("ok... at 12.30 e.g. WWW.Win.COM or 2-for-1.biz/x");
    assert_token(r, SPIM_TOK_URL, "host:www.win.com");
    assert_token(r, SPIM_TOK_URL, "host:2-for-1.biz");
    assert_token(r, SPIM_TOK_URL, "path:x");
    free(r);
    /* "ｗｗｗ．ｆｏｏ．ｃｏｍ" */
    r = toks("\xEF\xBD\x97\xEF\xBD\x97\xEF\xBD\x97\xEF\xBC\x8E\xEF\xBD\x86\xEF\xBD\x8F"
             "\xEF\xBD\x8F\xEF\xBC\x8E\xEF\xBD\x83\xEF\xBD\x8F\xEF\xBD\x8D");
    assert_token(r, SPIM_TOK_URL, "host:www.foo.com");
    free(r);
    r = toks("a.1 b. c .d 9.9");
    assert_token(r, SPIM_TOK_META, "url:0");
    free(r);

    r = toks("see you at 5");
    assert_token(r, SPIM_TOK_META, "url:0");
    assert_false(emitted(r, SPIM_TOK_META, "shortener"));
    free(r);
}

static void test_tok_numbers_money_phones(void **state)
{
    struct run *r = toks("Win \xc2\xa3"
                         "1000 cash or $5, 50% off! Call 09061701461 or "
                         "+44 7911 123-456 txt WIN to 87121 at 10 7");

    (void)state;
    assert_token(r, SPIM_TOK_NUMBER, "money");
    assert_token(r, SPIM_TOK_NUMBER,
                 "money:\xc2\xa3"
                 "4");
    assert_token(r, SPIM_TOK_NUMBER, "money:$1");
    assert_token(r, SPIM_TOK_NUMBER, "pct:2");
    assert_token(r, SPIM_TOK_PHONE, "tel:09061701461");
    assert_token(r, SPIM_TOK_PHONE, "telpre:0906");
    assert_token(r, SPIM_TOK_PHONE, "tellen:11");
    assert_token(r, SPIM_TOK_PHONE, "tel:447911123456");
    assert_token(r, SPIM_TOK_PHONE, "sc:87121");
    assert_token(r, SPIM_TOK_PHONE, "sclen:5");
    assert_token(r, SPIM_TOK_NUMBER, "NN");
    assert_token(r, SPIM_TOK_NUMBER, "N");
    free(r);
}

static void test_tok_emoji_bigrams_meta(void **state)
{
    struct spim_tok_meta meta = {{"Example.COM", 11}};
    const char *t = "FREE ENTRY now!!! \xf0\x9f\x98\x80\xe2\x9d\xa4\xef\xb8\x8f";
    struct run *r = tok(t, strlen(t), &meta);

    (void)state;
    assert_token(r, SPIM_TOK_EMOJI, "\xf0\x9f\x98\x80");
    assert_token(r, SPIM_TOK_EMOJI, "\xe2\x9d\xa4");
    assert_token(r, SPIM_TOK_BIGRAM, "free entry");
    assert_token(r, SPIM_TOK_BIGRAM, "entry now");
    assert_token(r, SPIM_TOK_META, "excl:3");
    assert_token(r, SPIM_TOK_META, "caps:3");
    assert_token(r, SPIM_TOK_META, "len:1");
    assert_token(r, SPIM_TOK_META, "from:example.com");
    free(r);
}

static void test_tok_dedup_and_cap(void **state)
{
    struct spim_token out[SPIM_TOK_MAX];
    char big[8000];
    size_t n, i, j, len = 0;
    struct run *r = toks("free free FREE free");

    (void)state;
    for (i = 0; i < r->n; i++) {
        for (j = i + 1; j < r->n; j++)
            assert_true(r->toks[i].key != r->toks[j].key);
        assert_int_equal(r->toks[i].ham, 0);
        assert_int_equal(r->toks[i].spam, 0);
    }
    assert_true(r->seen.n > r->n); /* the callback sees the duplicates */
    free(r);

    for (i = 0; len + 16 < sizeof(big); i++)
        len += (size_t)snprintf(big + len, sizeof(big) - len, "w%zux%zu ", i, i * 7);
    n = spim_tok_text(big, len, NULL, out, 5, NULL, NULL);
    assert_int_equal(n, 5);
    n = spim_tok_text(big, len, NULL, out, SPIM_TOK_MAX + 100, NULL, NULL);
    assert_true(n <= SPIM_TOK_MAX);
    assert_int_equal(spim_tok_text(big, len, NULL, NULL, 0, NULL, NULL), 0);
    /* No text still has its meta tokens: length, no URL, capitals, exclamations. */
    assert_int_equal(spim_tok_text(NULL, 0, NULL, out, 5, NULL, NULL), 4);
}

/*
 * A message starts in a small de-duplication set and moves to the large one
 * past 128 tokens: duplicates are dropped on both sides of the move, and
 * every distinct token is kept once. 150 distinct words (each with its
 * bigram), then the same words again in the same order: only the bigram
 * joining the two halves is new, whatever set holds the rest. A second
 * message right after must not see the first one's keys.
 */
static void test_tok_dedup_across_set_growth(void **state)
{
    char text[4096];
    size_t len = 0, i;
    struct run *once, *twice, *after;
    struct spim_scan *sc = NULL;

    (void)state;
    for (i = 0; i < 150; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "word%c%c ", (int)('a' + i % 26),
                                (int)('a' + i / 26));
    once = tok(text, len, NULL);
    memcpy(text + len, text, len);
    twice = tok(text, 2 * len, NULL);
    assert_true(once->n > 128);
    assert_int_equal(twice->n, once->n + 1); /* "wordtf wordaa"; the length bucket is the same */
    for (i = 0; i < twice->n; i++)
        for (size_t j = i + 1; j < twice->n; j++)
            assert_true(twice->toks[i].key != twice->toks[j].key);
    for (i = 0; i < once->n; i++) {
        size_t j;

        for (j = 0; j < twice->n && twice->toks[j].key != once->toks[i].key; j++)
            ;
        assert_true(j < twice->n);
    }
    assert_true(has_key(twice, SPIM_TOK_BIGRAM, "wordtf wordaa"));
    /* The same working memory for the next message (as serve and classify use it). */
    after = calloc(1, sizeof(*after));
    assert_non_null(after);
    assert_int_equal(spim_scan_new(NULL, &sc), 0);
    assert_true(spim_scan_tokens(sc, text, 2 * len, NULL, after->toks, SPIM_TOK_MAX) > 128);
    after->n = spim_scan_tokens(sc, "wordaa wordba", 13, NULL, after->toks, SPIM_TOK_MAX);
    assert_true(has_key(after, SPIM_TOK_WORD, "wordaa"));
    assert_true(has_key(after, SPIM_TOK_WORD, "wordba"));
    assert_true(spim_scan_tokens(sc, text, 100, NULL, after->toks, SPIM_TOK_MAX) > 0);
    after->n = spim_scan_tokens(sc, "wordaa wordba", 13, NULL, after->toks, SPIM_TOK_MAX);
    assert_true(has_key(after, SPIM_TOK_WORD, "wordaa")); /* after a message in the small set */
    spim_scan_free(sc);
    free(once);
    free(twice);
    free(after);
}

static void test_tok_key_kinds_differ(void **state)
{
    (void)state;
    assert_true(spim_tok_key(SPIM_TOK_WORD, "free", 4) != spim_tok_key(SPIM_TOK_URL, "free", 4));
    assert_true(spim_tok_key(SPIM_TOK_WORD, "free", 4) == spim_tok_key(SPIM_TOK_WORD, "free", 4));
    assert_true(spim_tok_key(SPIM_TOK_WORD, "free", 4) != spim_tok_key(SPIM_TOK_WORD, "fre", 3));
}

/*
 * The keys every trained store holds: XXH3 (seed 0) of the kind byte and the
 * text. A change to how they are computed must give the same values, or
 * every store trained before would silently be a store of unknown tokens.
 * Lengths on each side of XXH3's 16- and 128-byte paths.
 */
static void test_tok_keys_stable(void **state)
{
    static const struct {
        const char *text;
        uint64_t key;
    } want[] = {
        {"", 0xe12ef9d2eb86ceebull},
        {"a", 0x21c8324543049a44ull},
        {"free", 0x75e6d110a2db0b28ull},
        {"see you", 0xf819e8dd7d95ce08ull},
        {"0123456789abcde", 0x63e1109ea9e4cee0ull},
        {"0123456789abcdef", 0x0b8b71321597c08eull},
        {"a fairly long bigram text", 0xd7b1d20a9a5bad0bull},
        {"x1234567890123456789012345678901234567890123456789012345678901234567890123456789012345"
         "67890123456789012345678901234567890123456789",
         0x05fef5ec10d5f1d0ull},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_true(spim_tok_key(SPIM_TOK_WORD, want[i].text, strlen(want[i].text)) == want[i].key);
    assert_true(spim_tok_key(SPIM_TOK_BIGRAM, "see you", 7) == 0xf9549a609c2e80bbull);
}

static void test_tok_utf8_repair(void **state)
{
    char out[64];
    size_t n;

    (void)state;
    n = spim_utf8_repair("a\xff"
                         "b",
                         3, out);
    assert_int_equal(n, 5);
    assert_memory_equal(out,
                        "a\xef\xbf\xbd"
                        "b",
                        5);
    /* Overlong '/', a surrogate and a truncated sequence are all invalid. */
    n = spim_utf8_repair("\xc0\xaf", 2, out);
    assert_int_equal(n, 6);
    n = spim_utf8_repair("\xed\xa0\x80", 3, out);
    assert_int_equal(n, 9);
    n = spim_utf8_repair("\xe2\x82", 2, out);
    assert_int_equal(n, 6);
    /* Valid text is copied as is. */
    n = spim_utf8_repair("\xc2\xa3\xf0\x9f\x98\x80", 6, out);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "\xc2\xa3\xf0\x9f\x98\x80", 6);
}

/* Deterministic garbage: under ASan, any read out of bounds fails here. */
static void test_tok_ascii_fast_path_matches_utf8proc(void **state)
{
    /* Pure ASCII skips utf8proc; a trailing zero-width space (dropped by
     * normalisation) sends the same text through utf8proc. Both must give
     * the same tokens, control characters and line ends included. */
    char all[160], a[256], b[260];
    static const char *const texts[] = {
        "FREE entry!! Txt WIN to 87121\r\nCall 09061701461 now\tor\fnever\vok",
        "a\rb\r\n\nc\x01d\x7f"
        "e \x1b[0m f.r.e.e www.Example.COM/Win-Now 50% \xc2\xa3"
        "1000",
        "",
    };
    size_t i, n = 0;

    (void)state;
    for (i = 1; i < 128; i++)
        all[n++] = (char)i;
    all[n] = '\0';
    for (i = 0; i < sizeof(texts) / sizeof(*texts) + 1; i++) {
        const char *t = i < sizeof(texts) / sizeof(*texts) ? texts[i] : all;
        struct run *x, *y;

        snprintf(a, sizeof(a), "%s", t);
        snprintf(b, sizeof(b), "%s\xe2\x80\x8b", t);
        x = toks(a);
        y = toks(b);
        if (!same_keys(x, y))
            fail_msg("text %zu: the ASCII path and utf8proc differ", i);
        free(x);
        free(y);
    }
}

/* Both runs emitted the same tokens, in the same order, and wrote the same keys. */
static int same_run(const struct run *a, const struct run *b)
{
    if (a->n != b->n || a->seen.n != b->seen.n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->toks[i].key != b->toks[i].key)
            return 0;
    for (size_t i = 0; i < a->seen.n; i++)
        if (a->seen.kind[i] != b->seen.kind[i] || strcmp(a->seen.text[i], b->seen.text[i]) != 0)
            return 0;
    return 1;
}

/* Whether t is what the fast path takes: ASCII, and U+00A3 (C2 A3) only beyond it. */
static int plain(const char *t, size_t len)
{
    for (size_t j = 0; j < len; j++) {
        unsigned char c = (unsigned char)t[j];

        if (c >= 0x80 && !(c == 0xC2 && j + 1 < len && (unsigned char)t[j + 1] == 0xA3))
            return 0;
        j += c >= 0x80;
    }
    return 1;
}

/* Tokenizes t as it is (ASCII: the fast path) and with a zero-width space after it (utf8proc). */
static void check_both_paths(const char *t, size_t len, const char *where)
{
    char *b = malloc(len + 4);
    struct run *x, *y;

    assert_non_null(b);
    memcpy(b, t, len);
    memcpy(b + len, "\xe2\x80\x8b", 3);
    x = tok(t, len, NULL);
    y = tok(b, len + 3, NULL);
    if (!same_run(x, y)) {
        for (size_t i = 0; i < x->seen.n || i < y->seen.n; i++)
            fprintf(stderr, "  %-40s %s\n", i < x->seen.n ? x->seen.text[i] : "-",
                    i < y->seen.n ? y->seen.text[i] : "-");
        fail_msg("%s: the ASCII path and utf8proc differ on \"%.*s\"", where, (int)len, t);
    }
    free(x);
    free(y);
    free(b);
}

/*
 * The ASCII path (which also takes ASCII with pound signs) takes shortcuts
 * of its own (no repair, the capitals, '!' and length counted while folding,
 * no URL parse of a chunk without a dot): on every such message of the
 * project's corpora, and on text made to sit on the edges of those
 * shortcuts, it must give what utf8proc's path gives, token for token and in
 * the same order.
 */
static void test_tok_ascii_path_matches_on_corpus(void **state)
{
    static const char *const files[] = {SPIM_SOURCE_DIR "/corpora/im.tsv",
                                        SPIM_SOURCE_DIR "/corpora/samples.tsv"};
    static const char *const edges[] = {
        "e.g. a.m. f.r.e.e x.com www.x y.co.uk/a-b?c=d#e (bit.ly/x). \"http://t.co\"",
        "http://nodot https://also/nodot www. .com com. a..b -a.com a-.com",
        "ABC abcd ABCd Abcdefghijklmnopqrst ABCDEFGHIJKLMNOPQRSt",
        "AAAAAAAAAAAAAAAAAAAb AAAAb AAAAAAAAAAAAAAAb a!b!! !!! ! !!!!",
        "\r\n\r\r\n\t\v\f\x01\x1f\x7f tab\there cr\rhere",
        "f r e e  w-i-n  c_a_s_h  p*r*i*z*e  m/o/n/e/y  a . b",
        "0906170146 +447700900123 07700-900-123 87121 150p 2nd 10am \xc2\xa3"
        "5",
        "$5 $ 5 $$ @home p@ss w0rd don't it's o' 'tis",
        "!",
        "!!",
        "!Win",
        "A",
        "AB!",
        "ABCD",
        "Abcd",
        "aBCDE",
        "",
        "\xc2\xa3",
        "abcdefghi\xc2\xa3", /* 10 characters in 11 bytes: len:0 */
        "\xc2\xa3\xc2\xa3\xc2\xa3"
        "5",
        "WIN \xc2\xa3"
        "1000 CASH \xc2\xa3"
        "2.50/min \xc2\xa3"
        "5 150p",
        "x\xc2\xa3y \xc2\xa3\r\n\xc2\xa3\t! ABC\xc2\xa3"
        "DEF",
    };
    char *line = NULL;
    size_t cap = 0, checked = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(edges) / sizeof(*edges); i++) {
        size_t len = strlen(edges[i]);

        assert_true(plain(edges[i], len));
        check_both_paths(edges[i], len, "edge case");
    }
    for (size_t f = 0; f < sizeof(files) / sizeof(*files); f++) {
        FILE *fp = fopen(files[f], "r");
        ssize_t got;

        assert_non_null(fp);
        while ((got = getline(&line, &cap, fp)) > 0) {
            size_t len = (size_t)got;
            char *tab = memchr(line, '\t', len);
            const char *t = tab ? tab + 1 : line;

            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
            len -= (size_t)(t - line);
            if (!plain(t, len))
                continue;
            check_both_paths(t, len, files[f]);
            checked++;
        }
        fclose(fp);
    }
    free(line);
    assert_true(checked > 300);
}

static void test_tok_survives_garbage(void **state)
{
    static const char *const pieces[] = {
        "\xff",
        "\xc2",
        "\xe2\x80",
        "\xf0\x9f\x98",
        "http://",
        "www.",
        ".",
        "+",
        "4",
        "1",
        "$",
        "\xc2\xa3",
        "%",
        " ",
        "!",
        "a",
        "Z",
        "'",
        "@",
        "\xe2\x80\x8b",
        "\xef\xb7\xba",
        "-",
        "bit.ly/",
        "\n",
        "\0",
        "\xf0\x9f\x98\x80",
    };
    size_t cap = SPIM_TOK_MAX_INPUT + 4096, len, iter;
    char *buf = malloc(cap);
    struct spim_token *out = malloc(sizeof(*out) * SPIM_TOK_MAX);
    uint32_t x = 12345;

    (void)state;
    assert_non_null(buf);
    assert_non_null(out);
    for (iter = 0; iter < 300; iter++) {
        size_t want = (iter % 10 == 0) ? cap - 8 : (size_t)(x % 400);

        for (len = 0; len < want;) {
            const char *p;
            size_t pl;

            x = x * 1103515245u + 12345u;
            if ((x >> 16) % 3 == 0) {
                buf[len++] = (char)(x >> 8);
                continue;
            }
            p = pieces[(x >> 16) % (sizeof(pieces) / sizeof(*pieces))];
            pl = p[0] ? strlen(p) : 1;
            if (len + pl > want)
                break;
            memcpy(buf + len, p, pl);
            len += pl;
        }
        assert_true(spim_tok_text(buf, len, NULL, out, SPIM_TOK_MAX, NULL, NULL) <= SPIM_TOK_MAX);
    }
    /* NFKC expands U+FDFA 18-fold: a whole input of it must still be bounded. */
    for (len = 0; len + 3 <= cap; len += 3)
        memcpy(buf + len, "\xef\xb7\xba", 3);
    assert_true(spim_tok_text(buf, len, NULL, out, SPIM_TOK_MAX, NULL, NULL) > 0);
    free(out);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tok_free_variants_share_word),
        cmocka_unit_test(test_tok_keys_stable),
        cmocka_unit_test(test_tok_dedup_across_set_growth),
        cmocka_unit_test(test_tok_lookalikes_fold_to_latin),
        cmocka_unit_test(test_tok_other_scripts_stay),
        cmocka_unit_test(test_tok_leet_adds_plain_word),
        cmocka_unit_test(test_tok_urls),
        cmocka_unit_test(test_tok_numbers_money_phones),
        cmocka_unit_test(test_tok_emoji_bigrams_meta),
        cmocka_unit_test(test_tok_dedup_and_cap),
        cmocka_unit_test(test_tok_key_kinds_differ),
        cmocka_unit_test(test_tok_utf8_repair),
        cmocka_unit_test(test_tok_ascii_fast_path_matches_utf8proc),
        cmocka_unit_test(test_tok_ascii_path_matches_on_corpus),
        cmocka_unit_test(test_tok_survives_garbage),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
