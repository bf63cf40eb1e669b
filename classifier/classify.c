/*
 * classify.c: one message through tokenizer, counts, Bayes, rules, verdict.
 *
 * A struct spim_scan is the per-thread working memory: the tokenizer's
 * buffers (sized once for SPIM_TOK_MAX_INPUT), the token array and the
 * Hyperscan scratch, so classifying a message allocates nothing.
 */
#include "classifier_int.h"

#include <stdlib.h>
#include <string.h>

struct spim_scan {
    const struct spim_rules *rules; /* borrowed */
    struct spim__rmatch *rm;        /* NULL without rules */
    struct spim__tok_ws ws;
    struct spim_token toks[SPIM_TOK_MAX];
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

int spim_classify(struct spim_scan *s, const struct spim_counts_ops *ops, void *ud,
                  const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                  const char *text, size_t len, const struct spim_tok_meta *meta,
                  struct spim_verdict *v)
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
    n = spim__tok_run(&s->ws, meta, s->toks, SPIM_TOK_MAX, NULL, NULL);
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
                      s->ws.rep_len, &hits);
    spim_verdict_make(prob, &hits, t, v);
    v->tokens = tokens;
    v->tokens_used = used;
    return 0;
}
