/*
 * verdict.c: a probability and rule hits -> deliver, tag or block.
 *
 * The score is additive so an operator can read it: the Bayes probability is
 * worth bayes_weight points at most either way ((p - 0.5) * 2 maps 0..1 to
 * -1..1, so an unsure 0.5 adds nothing), and every matched rule adds its
 * score. Two thresholds on that one number pick the action. Shadow inputs
 * (rules marked shadow, Bayes with bayes_shadow) are computed the same way
 * and summed apart in shadow_score, so an operator can see what they would
 * have done before letting them count.
 */
#include "classifier_int.h"

#include <string.h>

const char *spim_action_name(enum spim_action a)
{
    switch (a) {
    case SPIM_DELIVER:
        return "deliver";
    case SPIM_TAG:
        return "tag";
    case SPIM_BLOCK:
        return "block";
    }
    return "unknown";
}

void spim_thresholds_defaults(struct spim_thresholds *t)
{
    /* Tuned on the SMS Spam Collection, 5-fold; see docs/classifier.md. */
    t->tag_score = 3.0;
    t->block_score = 8.0;
    t->bayes_weight = 10.0;
    t->bayes_shadow = 0;
}

void spim_verdict_make(double prob, const struct spim_rule_hits *hits,
                       const struct spim_thresholds *t, struct spim_verdict *v)
{
    struct spim_thresholds def;

    if (t == NULL) {
        spim_thresholds_defaults(&def);
        t = &def;
    }
    memset(v, 0, sizeof(*v));
    /* NaN would compare false with both thresholds and deliver silently; make it unsure. */
    if (!(prob >= 0.0 && prob <= 1.0))
        prob = 0.5;
    v->spam_probability = prob;
    v->bayes_points = t->bayes_weight * (prob - 0.5) * 2.0;
    if (t->bayes_shadow)
        v->shadow_score = v->bayes_points;
    else
        v->score = v->bayes_points;
    if (hits != NULL) {
        v->hits = *hits;
        if (v->hits.n > SPIM_RULES_MAX_HITS)
            v->hits.n = SPIM_RULES_MAX_HITS;
        if (v->hits.nshadow > SPIM_RULES_MAX_HITS)
            v->hits.nshadow = SPIM_RULES_MAX_HITS;
        v->score += hits->score;
        v->shadow_score += hits->shadow_score;
    }
    if (v->score >= t->block_score)
        v->action = SPIM_BLOCK;
    else if (v->score >= t->tag_score)
        v->action = SPIM_TAG;
    else
        v->action = SPIM_DELIVER;
}

size_t spim_verdict_rules(const struct spim_verdict *v, char *buf, size_t cap)
{
    size_t len = 0;
    unsigned i;

    if (buf == NULL || cap == 0)
        return 0;
    buf[0] = '\0';
    for (i = 0; v != NULL && i < v->hits.n && i < SPIM_RULES_MAX_HITS; i++) {
        const char *name = v->hits.names[i];
        size_t nl = name ? strlen(name) : 0, need = nl + (len > 0);

        /* Whole names only: a cut name would read as another rule. */
        if (nl == 0 || len + need + 1 > cap)
            break;
        if (len > 0)
            buf[len++] = ',';
        memcpy(buf + len, name, nl);
        len += nl;
        buf[len] = '\0';
    }
    return len;
}
