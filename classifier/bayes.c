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
#include <pthread.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
 *
 * The terms are made by recurrence, t_i = t_{i-1} * m / i from t_0 = e^-m:
 * one exp a call instead of one a term (a message of 40 clues made 80). The
 * sum stops once the terms, falling past their peak at i = m, no longer
 * change it. Where e^-m would underflow (m above CHI2_LINEAR_MAX) the terms
 * are summed in the log domain instead, so the terms that matter are not
 * lost with it; there the tail is below 1e-250 for any v a message can
 * give, and the log-domain sum still reports it.
 */
#define CHI2_LINEAR_MAX 700.0
#define INV_TABLE SPIM_TOK_MAX
static double inv_table[INV_TABLE], log_table[INV_TABLE];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void tables_init(void)
{
    for (unsigned i = 1; i < INV_TABLE; i++) {
        inv_table[i] = 1.0 / (double)i;
        log_table[i] = log((double)i);
    }
}

static double chi2q(double x2, unsigned v)
{
    double m = x2 / 2.0, term, sum;
    unsigned i, half = v / 2;

    if (x2 <= 0.0)
        return 1.0;
    pthread_once(&tables_once, tables_init);
    if (m <= CHI2_LINEAR_MAX) {
        term = sum = exp(-m);
        for (i = 1; i < half; i++) {
            term *= m * (i < INV_TABLE ? inv_table[i] : 1.0 / (double)i);
            sum += term;
            if ((double)i > m && term < sum * 1e-17)
                break;
        }
    } else {
        double lm = log(m), lterm = -m;

        sum = 0.0;
        for (i = 0; i < half; i++) {
            if (i > 0)
                lterm += lm - (i < INV_TABLE ? log_table[i] : log((double)i));
            sum += exp(lterm);
        }
    }
    return sum < 1.0 ? sum : 1.0;
}

/*
 * ln prod f[i] for f in [F_MIN, 1 - F_MIN]: the product, brought back into
 * range with frexp whenever it nears the smallest double, and one log at the
 * end, instead of a log per clue.
 */
struct lnprod {
    double p;
    int e;
};

static inline void lnprod_mul(struct lnprod *lp, double f)
{
    lp->p *= f;
    if (lp->p < 1e-280) {
        int e;

        lp->p = frexp(lp->p, &e);
        lp->e += e;
    }
}

static inline double lnprod_log(const struct lnprod *lp)
{
    return log(lp->p) + (double)lp->e * M_LN2;
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

/*
 * f(w) of a token counted ham and spam times when both classes are trained
 * (hm, sm their messages, sx = s * x): p(w) = sr / (hr + sr) = spam*hm / d
 * with d = ham*sm + spam*hm, and f(w) made over the one divisor (s + n) * d:
 * one division, not four (each as slow as the rest of the token's work).
 * The products stay exact in a double for counts below 2^26. An unknown
 * token (no count) gets x, from d = 1, not 0/0. Clamped into
 * [F_MIN, 1 - F_MIN]. token_f and the usual case of spim_bayes_prob share it.
 */
/* v clamped into [F_MIN, 1 - F_MIN] (the SSE2 lanes: min and max of the same bounds). */
static inline double f_clamp(double v)
{
    v = v < F_MIN ? F_MIN : v;
    return v > 1.0 - F_MIN ? 1.0 - F_MIN : v;
}

static inline double f_both(double ham, double spam, double hm, double sm, double s, double sx)
{
    double cnt = ham + spam, sh = spam * hm, d = ham * sm + sh;

    d = cnt != 0.0 ? d : 1.0;
    return f_clamp((sx * d + cnt * sh) / ((s + cnt) * d));
}

/*
 * Robinson's f(w) of one token into *f; 0 when the token takes part, -1 when
 * it says nothing (never seen, or within min_dev of 0.5). Shared by the
 * probability and the explain path so both pick the same tokens.
 */
static inline int token_f(const struct spim_token *t, const struct spim_totals *tot,
                          const struct spim_bayes_params *p, double *f)
{
    double hr, sr, pw, cnt, v;

    cnt = (double)t->ham + (double)t->spam;
    if (cnt == 0.0)
        return -1; /* f would be x: no evidence */
    /* Ratios within their class: a token in 10% of spam and 10% of ham is neutral
     * whatever the sizes of the two training sets. */
    if (tot->ham_msgs != 0 && tot->spam_msgs != 0) {
        v = f_both((double)t->ham, (double)t->spam, (double)tot->ham_msgs, (double)tot->spam_msgs,
                   p->s, p->s * p->x);
    } else {
        hr = tot->ham_msgs ? (double)t->ham / (double)tot->ham_msgs : 0.0;
        sr = tot->spam_msgs ? (double)t->spam / (double)tot->spam_msgs : 0.0;
        if (hr + sr <= 0.0)
            return -1;
        pw = sr / (hr + sr);
        v = f_clamp((p->s * p->x + cnt * pw) / (p->s + cnt));
    }
    if (fabs(v - 0.5) < p->min_dev)
        return -1;
    *f = v;
    return 0;
}

double spim_bayes_prob(const struct spim_token *toks, size_t n, const struct spim_totals *tot,
                       const struct spim_bayes_params *p, unsigned *used)
{
    struct spim_bayes_params def;
    struct clue stack_clues[SPIM_TOK_MAX], *clues = stack_clues;
    struct lnprod hp = {1.0, 0}, sp = {1.0, 0};
    size_t i, m = 0, take;
    double prob = 0.5;

    if (used)
        *used = 0;
    if (p == NULL) {
        spim_bayes_defaults(&def);
        p = &def;
    }
    if (toks == NULL || tot == NULL || n == 0 || (tot->ham_msgs == 0 && tot->spam_msgs == 0))
        return 0.5;
    if ((p->max_tokens == 0 || n <= p->max_tokens) && tot->ham_msgs != 0 && tot->spam_msgs != 0) {
        /* Every clue takes part and both classes are trained (the usual
         * case): token_f's arithmetic for every token, without its two
         * branches that depend on the data (a token unknown, a token too
         * neutral: each mispredicted as often as not, and they were most of
         * the cost); a token that is no clue multiplies both products by 1,
         * which changes neither. Same values, same order as below, where
         * the clues are kept in token order unless more than max_tokens of
         * them must be sorted to keep the strongest. */
        const double hm = (double)tot->ham_msgs, sm = (double)tot->spam_msgs;
        const double sx = p->s * p->x;

        i = 0;
#ifdef __SSE2__
        /* Two tokens at a time (SSE2 is part of x86-64): each step is the
         * scalar loop's, on two lanes (IEEE arithmetic, no FMA: the same
         * values), and the products take the factors one after the other as
         * there. The counts, unsigned, go through the signed conversion offset
         * by 2^31 (exact both ways). */
        {
            const __m128d v_hm = _mm_set1_pd(hm), v_sm = _mm_set1_pd(sm), v_sx = _mm_set1_pd(sx);
            const __m128d v_s = _mm_set1_pd(p->s), one = _mm_set1_pd(1.0);
            const __m128d lo = _mm_set1_pd(F_MIN), hi = _mm_set1_pd(1.0 - F_MIN);
            const __m128d half = _mm_set1_pd(0.5), dev = _mm_set1_pd(p->min_dev);
            const __m128d absm = _mm_castsi128_pd(_mm_set1_epi64x(0x7fffffffffffffffll));
            const __m128d two31 = _mm_set1_pd(2147483648.0);
            const __m128i flip = _mm_set1_epi32((int)0x80000000u);

            for (; i + 2 <= n; i += 2) {
                __m128i hs = _mm_unpacklo_epi32(
                    _mm_loadl_epi64((const __m128i *)(const void *)&toks[i].ham),
                    _mm_loadl_epi64((const __m128i *)(const void *)&toks[i + 1].ham));
                __m128d ham = _mm_add_pd(_mm_cvtepi32_pd(_mm_xor_si128(hs, flip)), two31);
                __m128d spam =
                    _mm_add_pd(_mm_cvtepi32_pd(_mm_xor_si128(_mm_srli_si128(hs, 8), flip)), two31);
                __m128d cnt = _mm_add_pd(ham, spam), sh = _mm_mul_pd(spam, v_hm);
                __m128d d = _mm_add_pd(_mm_mul_pd(ham, v_sm), sh);
                __m128d known = _mm_cmpneq_pd(cnt, _mm_setzero_pd()), v, clue;
                double f[2], g[2];
                int c;

                d = _mm_or_pd(_mm_and_pd(known, d), _mm_andnot_pd(known, one));
                v = _mm_div_pd(_mm_add_pd(_mm_mul_pd(v_sx, d), _mm_mul_pd(cnt, sh)),
                               _mm_mul_pd(_mm_add_pd(v_s, cnt), d));
                v = _mm_min_pd(_mm_max_pd(v, lo), hi);
                clue = _mm_and_pd(known, _mm_cmpge_pd(_mm_and_pd(_mm_sub_pd(v, half), absm), dev));
                _mm_storeu_pd(f, _mm_or_pd(_mm_and_pd(clue, v), _mm_andnot_pd(clue, one)));
                _mm_storeu_pd(
                    g, _mm_or_pd(_mm_and_pd(clue, _mm_sub_pd(one, v)), _mm_andnot_pd(clue, one)));
                lnprod_mul(&hp, f[0]);
                lnprod_mul(&sp, g[0]);
                lnprod_mul(&hp, f[1]);
                lnprod_mul(&sp, g[1]);
                c = _mm_movemask_pd(clue);
                m += (size_t)((c & 1) + (c >> 1));
            }
        }
#endif
        for (; i < n; i++) {
            double v = f_both((double)toks[i].ham, (double)toks[i].spam, hm, sm, p->s, sx);
            /* known, and fabs(v - 0.5) >= min_dev, as token_f decides it */
            int clue = (toks[i].ham + (uint64_t)toks[i].spam != 0) & (fabs(v - 0.5) >= p->min_dev);

            lnprod_mul(&hp, clue ? v : 1.0);
            lnprod_mul(&sp, clue ? 1.0 - v : 1.0);
            m += (size_t)clue;
        }
        take = m;
    } else {
        if (n > SPIM_TOK_MAX) {
            clues = malloc(n * sizeof(*clues));
            if (clues == NULL) {
                clues = stack_clues;
                n = SPIM_TOK_MAX;
            }
        }
        for (i = 0; i < n; i++) {
            double f;

            if (token_f(&toks[i], tot, p, &f) != 0)
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
        for (i = 0; i < take; i++) {
            lnprod_mul(&hp, clues[i].f);
            lnprod_mul(&sp, 1.0 - clues[i].f);
        }
        if (clues != stack_clues)
            free(clues);
    }
    if (take > 0) {
        double h = chi2q(-2.0 * lnprod_log(&hp), 2 * (unsigned)take);
        double s = chi2q(-2.0 * lnprod_log(&sp), 2 * (unsigned)take);

        prob = (1.0 + h - s) / 2.0;
    }
    if (used)
        *used = (unsigned)take;
    return prob;
}

/* Is clue a (f, index ia) stronger than b? The order of by_dev_desc, then the index. */
static int stronger(double fa, size_t ia, double fb, size_t ib)
{
    double da = fabs(fa - 0.5), db = fabs(fb - 0.5);

    if (da != db)
        return da > db;
    if (fa != fb)
        return fa > fb;
    return ia < ib;
}

size_t spim__bayes_clues(const struct spim_token *toks, size_t n, const struct spim_totals *tot,
                         const struct spim_bayes_params *p, struct spim__clue *out, size_t cap)
{
    struct spim_bayes_params def;
    size_t i, m = 0, k = 0, take;

    if (p == NULL) {
        spim_bayes_defaults(&def);
        p = &def;
    }
    if (out == NULL || cap == 0 || toks == NULL || tot == NULL || n == 0 ||
        (tot->ham_msgs == 0 && tot->spam_msgs == 0))
        return 0;
    if (n > SPIM_TOK_MAX)
        n = SPIM_TOK_MAX;
    /* The cap strongest by insertion: cap is small (SPIM_EVIDENCE_TOKENS), n bounded. */
    for (i = 0; i < n; i++) {
        double f;
        size_t j;

        if (token_f(&toks[i], tot, p, &f) != 0)
            continue;
        m++;
        if (k == cap && !stronger(f, i, out[k - 1].f, out[k - 1].idx))
            continue;
        j = k < cap ? k++ : cap - 1;
        for (; j > 0 && stronger(f, i, out[j - 1].f, out[j - 1].idx); j--)
            out[j] = out[j - 1];
        out[j].idx = i;
        out[j].f = f;
    }
    /* spim_bayes_prob combined the max_tokens strongest of the m; the k here are
     * the strongest of all, so they are among those unless max_tokens is smaller. */
    take = (p->max_tokens > 0 && m > p->max_tokens) ? p->max_tokens : m;
    return k < take ? k : take;
}
