/*
 * classify.c: one message through tokenizer, counts, Bayes, rules, verdict.
 *
 * A struct spim_scan is the per-thread working memory: the tokenizer's
 * buffers (sized once for SPIM_TOK_MAX_INPUT), the token array and the
 * Hyperscan scratch, so classifying a message allocates nothing. The
 * explain path (spim_classify_ex with evidence) allocates nothing either:
 * it re-reads what the scan still holds.
 */
#include "classifier_int.h"

/* explain() fills at most 2 + 2 * SPIM_RULES_MAX_HITS items: the caller's evidence needs room. */
_Static_assert(SPIM_EVIDENCE_MAX >= 2 + 2 * SPIM_RULES_MAX_HITS + 8,
               "SPIM_EVIDENCE_MAX leaves no room for the caller's evidence");

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spim_scan {
    const struct spim_rules *rules; /* borrowed */
    struct spim__rmatch *rm;        /* NULL without rules */
    struct spim__tok_ws ws;
    struct spim_token toks[SPIM_TOK_MAX];
    /* what the last classification left, for spim_scan_explain */
    size_t last_n;
    struct spim_totals last_tot;
};

int spim_scan_new(const struct spim_rules *rules, struct spim_scan **out)
{
    struct spim_scan *s;
    int rc;

    if (out == NULL)
        return SPIM_EINVAL;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = SPIM_ENOMEM;
        goto fail_alloc;
    }
    rc = spim__tok_ws_init(&s->ws);
    if (rc != 0)
        goto fail_ws;
    rc = spim__rmatch_new(rules, &s->rm);
    if (rc != 0)
        goto fail_rm;
    s->rules = rules;
    *out = s;
    return 0;

fail_rm:
    spim__tok_ws_fini(&s->ws);
fail_ws:
    free(s);
fail_alloc:
    return rc;
}

void spim_scan_free(struct spim_scan *s)
{
    if (s == NULL)
        return;
    spim__rmatch_free(s->rm);
    spim__tok_ws_fini(&s->ws);
    free(s);
}

size_t spim_scan_tokens(struct spim_scan *s, const char *text, size_t len,
                        const struct spim_tok_meta *meta, struct spim_token *out, size_t cap)
{
    if (s == NULL)
        return 0;
    spim__tok_prepare(&s->ws, text, len);
    return spim__tok_run(&s->ws, meta, out, cap, NULL, NULL);
}

/* What the explain pass looks for in the tokenizer's output: the keys of the strongest tokens. */
struct find_texts {
    struct spim_evidence *ev;
    uint64_t key[SPIM_EVIDENCE_TOKENS];
    unsigned missing; /* tokens whose text is not found yet */
};

static void on_emit(void *ud, enum spim_tok_kind kind, const char *s, size_t n)
{
    struct find_texts *ft = ud;
    uint64_t key;

    if (ft->missing == 0)
        return;
    key = spim_tok_key(kind, s, n);
    for (unsigned i = 0; i < ft->ev->ntok; i++) {
        struct spim_evidence_token *t = &ft->ev->tok[i];

        if (ft->key[i] != key || t->text[0] != '\0')
            continue;
        spim__utf8_cut(s, n, t->text, sizeof(t->text));
        t->kind = kind;
        ft->missing--;
    }
}

/*
 * The evidence of a verdict just made: the Bayes part, each rule, the shadow
 * inputs, then the strongest tokens with their texts. Token keys are hashes,
 * so the texts come from running the tokenizer again over the text still
 * prepared in s->ws, with no output array (only emit), and matching keys.
 */
static void explain(struct spim_scan *s, const struct spim_tok_meta *meta, size_t n,
                    const struct spim_totals *tot, const struct spim_bayes_params *bp,
                    const struct spim_thresholds *t, const struct spim_verdict *v,
                    struct spim_evidence *ev)
{
    struct spim__clue clues[SPIM_EVIDENCE_TOKENS];
    struct find_texts ft;
    char name[96];
    double rest = v->hits.score;
    unsigned i;
    size_t nc;
    int bshadow = t != NULL && t->bayes_shadow;

    memset(ev, 0, sizeof(*ev));
    snprintf(name, sizeof(name), "p=%.4f (%u of %u tokens)", v->spam_probability, v->tokens_used,
             v->tokens);
    spim_evidence_add(ev, "bayes", name, bshadow ? 0.0 : v->bayes_points, bshadow,
                      bshadow ? v->bayes_points : 0.0);
    for (i = 0; i < v->hits.n && i < SPIM_RULES_MAX_HITS; i++) {
        spim_evidence_add(ev, "rule", v->hits.names[i], v->hits.scores[i], 0, 0.0);
        rest -= v->hits.scores[i];
    }
    /* Matches past SPIM_RULES_MAX_HITS have no names but count in the score. */
    if (v->hits.n >= SPIM_RULES_MAX_HITS && rest != 0.0)
        spim_evidence_add(ev, "rule", "(more rules than fit)", rest, 0, 0.0);
    for (i = 0; i < v->hits.nshadow && i < SPIM_RULES_MAX_HITS; i++)
        spim_evidence_add(ev, "rule", v->hits.shadow_names[i], 0.0, 1, v->hits.shadow_scores[i]);

    nc = spim__bayes_clues(s->toks, n, tot, bp, clues, SPIM_EVIDENCE_TOKENS);
    memset(&ft, 0, sizeof(ft));
    ft.ev = ev;
    for (i = 0; i < nc; i++) {
        struct spim_evidence_token *et = &ev->tok[i];
        const struct spim_token *tk = &s->toks[clues[i].idx];

        et->prob = clues[i].f;
        et->ham = tk->ham;
        et->spam = tk->spam;
        ft.key[i] = tk->key;
    }
    ev->ntok = (unsigned)nc;
    ft.missing = (unsigned)nc;
    if (nc > 0)
        (void)spim__tok_run(&s->ws, meta, NULL, 0, on_emit, &ft);
    for (i = 0; i < nc; i++)
        if (ev->tok[i].text[0] == '\0')
            snprintf(ev->tok[i].text, sizeof(ev->tok[i].text), "%s", "?");
}

int spim_classify_ex(struct spim_scan *s, const struct spim_counts_ops *ops, void *ud,
                     const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                     const char *text, size_t len, const struct spim_tok_meta *meta,
                     struct spim_verdict *v, struct spim_evidence *ev)
{
    struct spim_totals tot = {0, 0};
    struct spim_rule_hits hits;
    size_t n;
    unsigned used = 0;
    double prob = 0.5;
    unsigned tokens;

    if (s == NULL || v == NULL)
        return SPIM_EINVAL;
    spim__tok_prepare(&s->ws, text, len);
    s->ws.key_hint = ops != NULL && ops->lookup != NULL ? ops->prefetch : NULL;
    s->ws.key_hint_ud = ud;
    n = spim__tok_run(&s->ws, meta, s->toks, SPIM_TOK_MAX, NULL, NULL);
    s->ws.key_hint = NULL;
    tokens = (unsigned)n;
    if (ops != NULL && ops->lookup != NULL && n > 0) {
        int rc = ops->lookup(ud, s->toks, n, &tot);

        if (rc != 0)
            return rc;
        prob = spim_bayes_prob(s->toks, n, &tot, bp, &used);
    }
    /* The normalised text defeats the obfuscations; the repaired raw text
     * keeps what normalisation folds away (capitals, fullwidth forms). */
    spim__rules_match(s->rules, s->rm, spim__tok_norm(&s->ws), s->ws.norm_len, s->ws.rep,
                      s->ws.rep_len, s->ws.ascii && s->ws.ascii_caseonly, &hits);
    spim_verdict_make(prob, &hits, t, v);
    v->tokens = tokens;
    v->tokens_used = used;
    v->has_link = s->ws.has_link;
    s->last_n = n;
    s->last_tot = tot;
    if (ev != NULL)
        explain(s, meta, n, &tot, bp, t, v, ev);
    return 0;
}

int spim_scan_explain(struct spim_scan *s, const struct spim_tok_meta *meta,
                      const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                      const struct spim_verdict *v, struct spim_evidence *ev)
{
    if (s == NULL || v == NULL || ev == NULL)
        return SPIM_EINVAL;
    explain(s, meta, s->last_n, &s->last_tot, bp, t, v, ev);
    return 0;
}

int spim_classify(struct spim_scan *s, const struct spim_counts_ops *ops, void *ud,
                  const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                  const char *text, size_t len, const struct spim_tok_meta *meta,
                  struct spim_verdict *v)
{
    return spim_classify_ex(s, ops, ud, bp, t, text, len, meta, v, NULL);
}
