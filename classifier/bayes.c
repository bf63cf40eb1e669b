/*
 * bayes.c: Robinson's token probabilities, combined with Fisher's method.
 *
 * Each token gets f(w) = (s*x + n*p(w)) / (s + n), where p(w) is the share
 * of spam among the token's appearances after both counts are divided by the
 * number of trained messages of their class (so an unbalanced training set
 * does not bias every token), n the number of messages that contained it,
 * s the strength of the prior x. Tokens close to 0.5 say nothing and are
 * dropped; of the rest the max_tokens most extreme are combined as in
 * bogofilter and SpamBayes:
 *     H = C^-1(-2 ln prod f(w), 2m)       (near 1 when the f are all high)
 *     S = C^-1(-2 ln prod (1 - f(w)), 2m) (near 1 when the f are all low)
 *     I = (1 + H - S) / 2
 * with C^-1 the chi-square survival function. I is 0.5 both with no
 * evidence and with strong evidence both ways, which is what lets a
 * message of five words stay "unsure" instead of being forced to an end.
 */
#include "classifier_int.h"

#include <math.h>
#include <stdlib.h>

/* Keeps f away from 0 and 1 so the logarithms stay finite. */
#define F_MIN 1e-6

void spim_bayes_defaults(struct spim_bayes_params *p)
{
    /* Tuned on the SMS Spam Collection, 5-fold; see docs/classifier.md. */
    p->s = 1.0;
    p->x = 0.5;
    p->min_dev = 0.1;
    p->max_tokens = 150;
}

/*
 * Upper tail of the chi-square distribution with v (even) degrees of
 * freedom at x2: P(X >= x2) = e^-m * sum_{i < v/2} m^i / i!, m = x2 / 2.
 * Summed in the log domain so a large m does not underflow e^-m before the
 * terms that matter are added.
 */
static double chi2q(double x2, unsigned v)
{
    double m = x2 / 2.0, lterm, sum = 0.0, lm;
    unsigned i, half = v / 2;

    if (x2 <= 0.0)
        return 1.0;
    lm = log(m);
    lterm = -m;
    for (i = 0; i < half; i++) {
        if (i > 0)
            lterm += lm - log((double)i);
        sum += exp(lterm);
    }
    return sum < 1.0 ? sum : 1.0;
}

struct clue {
    double f, dev;
};

static int by_dev_desc(const void *a, const void *b)
{
    const struct clue *x = a, *y = b;

    if (x->dev > y->dev)
        return -1;
    if (x->dev < y->dev)
        return 1;
    /* Equal deviations: spammy first, so the order does not depend on qsort. */
    return (x->f > y->f) ? -1 : (x->f < y->f);
}

double spim_bayes_prob(const struct spim_token *toks, size_t n, const struct spim_totals *tot,
                       const struct spim_bayes_params *p, unsigned *used)
{
    struct spim_bayes_params def;
    struct clue stack_clues[SPIM_TOK_MAX], *clues = stack_clues;
    size_t i, m = 0, take;
    double hsum = 0.0, ssum = 0.0, h, s, prob = 0.5;

    if (used)
        *used = 0;
    if (p == NULL) {
        spim_bayes_defaults(&def);
        p = &def;
    }
    if (toks == NULL || tot == NULL || n == 0 || (tot->ham_msgs == 0 && tot->spam_msgs == 0))
        return 0.5;
    if (n > SPIM_TOK_MAX) {
        clues = malloc(n * sizeof(*clues));
        if (clues == NULL) {
            clues = stack_clues;
            n = SPIM_TOK_MAX;
        }
    }

    for (i = 0; i < n; i++) {
        double hr, sr, pw, cnt, f;

        cnt = (double)toks[i].ham + (double)toks[i].spam;
        if (cnt == 0.0)
            continue; /* f would be x: no evidence */
        /* Ratios within their class: a token in 10% of spam and 10% of ham is neutral
         * whatever the sizes of the two training sets. */
        hr = tot->ham_msgs ? (double)toks[i].ham / (double)tot->ham_msgs : 0.0;
        sr = tot->spam_msgs ? (double)toks[i].spam / (double)tot->spam_msgs : 0.0;
        if (hr + sr <= 0.0)
            continue;
        pw = sr / (hr + sr);
        f = (p->s * p->x + cnt * pw) / (p->s + cnt);
        if (f < F_MIN)
            f = F_MIN;
        if (f > 1.0 - F_MIN)
            f = 1.0 - F_MIN;
        if (fabs(f - 0.5) < p->min_dev)
            continue;
        clues[m].f = f;
        clues[m].dev = fabs(f - 0.5);
        m++;
    }
    take = m;
    if (p->max_tokens > 0 && take > p->max_tokens) {
        qsort(clues, m, sizeof(*clues), by_dev_desc);
        take = p->max_tokens;
    }
    if (take > 0) {
        for (i = 0; i < take; i++) {
            hsum += log(clues[i].f);
            ssum += log(1.0 - clues[i].f);
        }
        h = chi2q(-2.0 * hsum, 2 * (unsigned)take);
        s = chi2q(-2.0 * ssum, 2 * (unsigned)take);
        prob = (1.0 + h - s) / 2.0;
    }
    if (used)
        *used = (unsigned)take;
    if (clues != stack_clues)
        free(clues);
    return prob;
}
