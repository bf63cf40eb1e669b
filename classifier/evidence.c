/*
 * evidence.c: the list of what made a score, for people.
 *
 * A verdict is a sum; the evidence is its terms, each with the input that
 * produced it (the Bayes part, each rule, and whatever the caller adds:
 * lists, policy, rate counters), plus the tokens that moved the Bayes part
 * most. Shadow items are terms that were evaluated and not added, kept in
 * the same list so "what would change if this counted" is one read away.
 * Everything is fixed-size: an explain path must not fail on a message.
 */
#include "classifier_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *spim_tok_kind_name(enum spim_tok_kind k)
{
    switch (k) {
    case SPIM_TOK_WORD:
        return "word";
    case SPIM_TOK_URL:
        return "url";
    case SPIM_TOK_NUMBER:
        return "number";
    case SPIM_TOK_PHONE:
        return "phone";
    case SPIM_TOK_BIGRAM:
        return "bigram";
    case SPIM_TOK_META:
        return "meta";
    case SPIM_TOK_EMOJI:
        return "emoji";
    }
    return "unknown";
}

size_t spim__utf8_cut(const char *s, size_t n, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    if (s == NULL)
        n = 0;
    if (n > cap - 1) {
        n = cap - 1;
        /* Back off continuation bytes so a multi-byte character is not split. */
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    if (n > 0)
        memcpy(out, s, n);
    out[n] = '\0';
    return n;
}

void spim_evidence_add(struct spim_evidence *e, const char *kind, const char *name, double weight,
                       int shadow, double shadow_weight)
{
    struct spim_evidence_item *it;

    if (e == NULL || e->n >= SPIM_EVIDENCE_MAX)
        return;
    it = &e->item[e->n++];
    spim__utf8_cut(kind, kind ? strlen(kind) : 0, it->kind, sizeof(it->kind));
    spim__utf8_cut(name, name ? strlen(name) : 0, it->name, sizeof(it->name));
    it->shadow = shadow != 0;
    /* A shadow item adds nothing by definition; keeping that here means the sum
     * always equals the score whatever the caller passed. */
    it->weight = it->shadow ? 0.0 : weight;
    it->shadow_weight = it->shadow ? shadow_weight : 0.0;
}

double spim_evidence_sum(const struct spim_evidence *e)
{
    double sum = 0.0;

    for (unsigned i = 0; e != NULL && i < e->n && i < SPIM_EVIDENCE_MAX; i++)
        sum += e->item[i].weight;
    return sum;
}

size_t spim_evidence_format(const struct spim_evidence *e, char *buf, size_t cap)
{
    struct spim_out o = {buf, cap, 0};

    if (buf != NULL && cap > 0)
        buf[0] = '\0';
    else
        o.cap = 0;
    if (e == NULL)
        return 0;
    for (unsigned i = 0; i < e->n && i < SPIM_EVIDENCE_MAX; i++) {
        const struct spim_evidence_item *it = &e->item[i];

        spim_put(&o, "  %+7.2f  %-12s %s", it->weight, it->kind, it->name);
        if (it->shadow)
            spim_put(&o, "  (shadow, would add %+.2f)", it->shadow_weight);
        spim_put(&o, "\n");
    }
    if (e->ntok > 0)
        spim_put(&o, "  strongest tokens (f(w), ham, spam):\n");
    for (unsigned i = 0; i < e->ntok && i < SPIM_EVIDENCE_TOKENS; i++) {
        const struct spim_evidence_token *t = &e->tok[i];
        int cps = 0;

        /* Padded by characters, not bytes, so "money:£4" lines up with the rest. */
        for (const char *c = t->text; *c != '\0' && c < t->text + sizeof(t->text); c++)
            cps += ((unsigned char)*c & 0xC0) != 0x80;
        spim_put(&o, "    %.4f  %-6s %s%*s ham %u spam %u\n", t->prob, spim_tok_kind_name(t->kind),
                 t->text, cps < 24 ? 24 - cps : 0, "", (unsigned)t->ham, (unsigned)t->spam);
    }
    return o.len;
}
