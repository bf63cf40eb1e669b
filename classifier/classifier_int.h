/*
 * classifier_int.h: what the files of classifier/ share and nobody else sees.
 *
 * The tokenizer's working memory (so a struct spim_scan can keep one and the
 * hot path does not allocate per message), the normaliser that the rules
 * also match against, and the Hyperscan matching state of one scan. Only
 * rules.c includes Hyperscan; the others see an opaque struct spim__rmatch.
 */
#ifndef SPIM_CLASSIFIER_INT_H
#define SPIM_CLASSIFIER_INT_H

#include "classifier.h"

#include <stddef.h>
#include <stdint.h>

/* Slots of the de-duplication set: a power of two, at least 2 * SPIM_TOK_MAX. */
#define SPIM__TOK_SET_SLOTS 4096
/* Slots of the small set a message starts with (2 KiB, where the 32 KiB of the
 * large one would take the whole first-level cache): a power of two; a message
 * moves to the large set at half of it. */
#define SPIM__TOK_SET_SMALL 256
/* Slots of the fixed tokens' key memo: a power of two. */
#define SPIM__TOK_MEMO 64

/*
 * Codepoints the normaliser may produce from SPIM_TOK_MAX_INPUT bytes.
 * NFKC can expand one codepoint into up to 18 (U+FDFA); real text grows by
 * far less, and input that would overflow is shortened and retried.
 */
#define SPIM__NORM_CPS (4 * SPIM_TOK_MAX_INPUT)

/*
 * Working memory of the tokenizer, sized once for the largest input:
 * rep holds the repaired input, cps its NFKC codepoints, norm the folded
 * text (look-alikes, case; first as codepoints, then re-encoded in place as
 * UTF-8), set the keys seen in the current message.
 */
struct spim__tok_ws {
    char *rep;           /* 3 * SPIM_TOK_MAX_INPUT bytes */
    int32_t *cps;        /* SPIM__NORM_CPS + 1 codepoints */
    int32_t *norm;       /* SPIM__NORM_CPS + 1 codepoints */
    uint64_t *set;       /* SPIM__TOK_SET_SLOTS keys */
    uint64_t *set_small; /* SPIM__TOK_SET_SMALL keys */
    size_t rep_len;      /* valid bytes in rep after spim__tok_prepare */
    size_t norm_len;     /* valid bytes of UTF-8 at (char *)norm */
    /* Pure ASCII text (and ASCII with pound signs) is folded by the tokenizer
     * itself, which counts on the way what spim__tok_run would count again:
     * codepoints, letters, capitals, '!'. */
    int ascii;
    size_t ascii_cps, ascii_letters, ascii_upper, ascii_excl;
    /* ascii, and the folded text is the input with its ASCII capitals
     * lower-cased and nothing else changed (no tab, CR or control in it) */
    int ascii_caseonly;
    /* The last spim__tok_run with an output array wrote the has-URL meta token
     * or the phone number token: what first contact weighs as a link. */
    int has_link;
    /* Told each distinct key of the next spim__tok_run with an output array
     * (struct spim_counts_ops' prefetch); NULL: nobody. */
    void (*key_hint)(void *ud, uint64_t key);
    void *key_hint_ud;
    /* Keys of the fixed tokens ("url:0", "len:2", "N4", ...), by the address
     * of their static text: made once per working memory, not per message. */
    struct spim__tok_memo {
        const char *s;
        uint64_t key;
        uint32_t len, kind;
    } memo[SPIM__TOK_MEMO];
};

/* Allocates the buffers of ws; 0 or SPIM_ENOMEM (then ws holds nothing). */
int spim__tok_ws_init(struct spim__tok_ws *ws);
void spim__tok_ws_fini(struct spim__tok_ws *ws);

/*
 * Repairs text (at most SPIM_TOK_MAX_INPUT bytes of it) into ws->rep and
 * normalises that into ws->norm (NFKC, default-ignorable and format
 * characters removed, look-alikes inside Latin words folded to Latin, case
 * folded). Afterwards spim__tok_norm(ws) is valid UTF-8
 * of ws->norm_len bytes, NUL-terminated.
 */
void spim__tok_prepare(struct spim__tok_ws *ws, const char *text, size_t len);

static inline const char *spim__tok_norm(const struct spim__tok_ws *ws)
{
    return (const char *)ws->norm;
}

/*
 * Tokenizes the text prepared in ws into out (at most cap distinct keys,
 * cap itself capped at SPIM_TOK_MAX); emit as in spim_tok_text.
 */
size_t spim__tok_run(struct spim__tok_ws *ws, const struct spim_tok_meta *meta,
                     struct spim_token *out, size_t cap,
                     void (*emit)(void *ud, enum spim_tok_kind kind, const char *s, size_t n),
                     void *ud);

/* One token that took part in a Bayes probability: its index in toks, its f(w). */
struct spim__clue {
    size_t idx;
    double f;
};

/*
 * The strongest tokens (furthest from 0.5; ties: spammy first, then earlier)
 * of those spim_bayes_prob(toks, n, tot, p) combines, at most cap of them,
 * strongest first, into out; returns how many. For the explain path: it
 * walks the tokens again, so the probability itself pays nothing for it.
 */
size_t spim__bayes_clues(const struct spim_token *toks, size_t n, const struct spim_totals *tot,
                         const struct spim_bayes_params *p, struct spim__clue *out, size_t cap);

/*
 * Copies s[0..n) into out (cap bytes, NUL included), cut on a UTF-8 boundary
 * when it does not fit; returns the bytes copied. cap 0 writes nothing.
 */
size_t spim__utf8_cut(const char *s, size_t n, char *out, size_t cap);

/* The Hyperscan scratch and match marks of one scan, owned by it. */
struct spim__rmatch;

/* For rules with no patterns *out is NULL and matching finds nothing. */
int spim__rmatch_new(const struct spim_rules *r, struct spim__rmatch **out);
void spim__rmatch_free(struct spim__rmatch *m);

/*
 * Matches the rules against both texts (either may have length 0) and fills
 * *hits with every rule that matched at least one of them, once, in file
 * order. Both texts must be valid UTF-8 (HS_FLAG_UTF8 requires it).
 * b_cased: the caller knows b to be a with some ASCII letters in upper case
 * (else it is compared here, when that matters).
 */
void spim__rules_match(const struct spim_rules *r, struct spim__rmatch *m, const char *a,
                       size_t alen, const char *b, size_t blen, int b_cased,
                       struct spim_rule_hits *hits);

/*
 * Whether some pattern of r may match text b and not its ASCII-lower-cased
 * form a: then spim__rules_match always scans both texts; otherwise it skips
 * b when b differs from a only in the case of ASCII letters.
 */
int spim__rules_case_sensitive(const struct spim_rules *r);

#endif
