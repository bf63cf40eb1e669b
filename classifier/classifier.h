/*
 * classifier.h: text in, verdict out.
 *
 * Four parts, used in this order for each message:
 *   spim_tok_*     the tokenizer for short, obfuscated IM text: it turns
 *                  bytes (repaired to valid UTF-8 first) into distinct
 *                  64-bit token keys, bounded by SPIM_TOK_MAX;
 *   (the caller's counts lookup fills spam/ham counts of each token: the
 *    classifier never sees the store; see struct spim_counts_ops)
 *   spim_bayes_*   the Robinson/Fisher chi-square spam probability;
 *   spim_rules_*   Hyperscan multi-pattern rules from a rules file;
 *   spim_verdict_* the combination into deliver, tag or block, with reasons.
 * spim_classify() runs them all. Nothing here is thread-affine except the
 * scratch: one struct spim_scan per thread.
 */
#ifndef SPIM_CLASSIFIER_H
#define SPIM_CLASSIFIER_H

#include "spim.h"

#include <stddef.h>
#include <stdint.h>

/* --- Tokenizer ------------------------------------------------------------ */

/* Upper bound on the distinct tokens of one message (the rest is ignored). */
#define SPIM_TOK_MAX 1024
/* Upper bound on the bytes of one message the tokenizer reads. */
#define SPIM_TOK_MAX_INPUT (64 * 1024)

/* What a token stands for; part of its hash, so kinds never collide. */
enum spim_tok_kind {
    SPIM_TOK_WORD = 1,
    SPIM_TOK_URL,    /* a URL, a registrable domain or a path word of one */
    SPIM_TOK_NUMBER, /* a number shape, money, percentage */
    SPIM_TOK_PHONE,  /* a phone number or a short code */
    SPIM_TOK_BIGRAM, /* two neighbouring words */
    SPIM_TOK_META,   /* length bucket, has-url, share of capitals, ... */
    SPIM_TOK_EMOJI,
};

/* Optional per-message facts that become meta tokens (all may be NULL/0). */
struct spim_tok_meta {
    struct spim_slice sender_domain;
};

/*
 * Tokenizes text[0..len) into at most cap distinct tokens (keys set, counts
 * zero) and returns how many were written. Any bytes are accepted: invalid
 * UTF-8 is repaired, input beyond SPIM_TOK_MAX_INPUT is ignored.
 * If emit is not NULL it is called for every token (duplicates included)
 * with its kind and normalised text, for tests and `classify --tokens`.
 */
size_t spim_tok_text(const char *text, size_t len, const struct spim_tok_meta *meta,
                     struct spim_token *out, size_t cap,
                     void (*emit)(void *ud, enum spim_tok_kind kind, const char *s, size_t n),
                     void *ud);

/* Name of a kind: "word", "url", "number", "phone", "bigram", "meta", "emoji". */
const char *spim_tok_kind_name(enum spim_tok_kind k);

/* The key of one token of a kind and normalised text (what spim_tok_text hashes). */
uint64_t spim_tok_key(enum spim_tok_kind kind, const char *s, size_t n);

/*
 * Writes a valid UTF-8 copy of in to out (every invalid sequence becomes
 * U+FFFD) and returns its length; out must hold 3 * len bytes.
 */
size_t spim_utf8_repair(const char *in, size_t len, char *out);

/* --- Bayes ----------------------------------------------------------------- */

struct spim_bayes_params {
    double s;            /* strength of the prior (Robinson's s), e.g. 0.45 */
    double x;            /* prior of an unknown token, e.g. 0.5 */
    double min_dev;      /* ignore tokens with |f(w) - 0.5| below this */
    unsigned max_tokens; /* use at most the this many most extreme tokens */
};

/* The defaults chosen for IM text; see docs/classifier.md. */
void spim_bayes_defaults(struct spim_bayes_params *p);

/*
 * Fisher/Robinson chi-square combination: returns the spam probability in
 * [0, 1] (0.5 when nothing is known). toks carry counts from the store.
 * *used, if not NULL, gets the number of tokens that took part.
 */
double spim_bayes_prob(const struct spim_token *toks, size_t n, const struct spim_totals *tot,
                       const struct spim_bayes_params *p, unsigned *used);

/* --- Rules ---------------------------------------------------------------- */

/*
 * A rules file: one rule per line, blank lines and '#' comments ignored:
 *     NAME  SCORE  /PATTERN/FLAGS  [shadow]
 * NAME is [A-Za-z0-9_]{1,63}, SCORE a decimal (negative for ham signs),
 * PATTERN a Hyperscan (PCRE-like) regex, FLAGS letters of i (caseless),
 * s (dot matches newline), m (multi-line), u (UTF-8 and Unicode classes).
 * Patterns match the normalised text (NFKC, case-folded, format characters
 * removed) as well as the raw text repaired to UTF-8.
 * A rule ending in the word `shadow` is matched like the others but its
 * score is not added: it is reported apart (shadow_* of struct
 * spim_rule_hits), to see what a new rule would do before it counts.
 */
struct spim_rules;

#define SPIM_RULES_MAX_HITS 32

/*
 * The rules one message matched, in file order. Names are borrowed from the
 * rules and live as long as they do. Past SPIM_RULES_MAX_HITS matches of a
 * kind the names and scores are dropped but score and shadow_score still
 * count every match.
 */
struct spim_rule_hits {
    unsigned n;
    const char *names[SPIM_RULES_MAX_HITS];
    double scores[SPIM_RULES_MAX_HITS]; /* the score of each of names */
    double score;                       /* sum of the enforced matched rules' scores */
    unsigned nshadow;                   /* shadow rules that matched */
    const char *shadow_names[SPIM_RULES_MAX_HITS];
    double shadow_scores[SPIM_RULES_MAX_HITS];
    double shadow_score; /* what the shadow rules would have added; not in score */
};

/* Loads and compiles path; on error diag names the file and line. */
int spim_rules_load(const char *path, struct spim_rules **out, struct spim_diag *diag);
/*
 * spim_rules_load with flags. SPIM_RULES_MAP: a cached database is used where
 * it lies in the cache file's mapping instead of copied (a short run starts
 * 0.25 ms sooner). For batch commands only: if the cache file is cut short
 * in place while the rules are in use (spimfilter only ever replaces it by a
 * rename), the process is killed by SIGBUS. serve copies.
 */
enum { SPIM_RULES_MAP = 1 << 0 };
int spim_rules_load_ex(const char *path, unsigned flags, struct spim_rules **out,
                       struct spim_diag *diag);
/* Frees; NULL is a no-op. No scan may be using it. */
void spim_rules_free(struct spim_rules *r);
unsigned spim_rules_count(const struct spim_rules *r);

/* --- Verdict ---------------------------------------------------------------- */

enum spim_action {
    SPIM_DELIVER = 0,
    SPIM_TAG = 1,
    SPIM_BLOCK = 2,
};

/* Name of an action: "deliver", "tag", "block". */
const char *spim_action_name(enum spim_action a);

struct spim_thresholds {
    double tag_score;    /* score >= this: tag */
    double block_score;  /* score >= this: block */
    double bayes_weight; /* points the Bayes probability is worth: weight * (p - 0.5) * 2 */
    int bayes_shadow;    /* 1: the Bayes points are computed and reported, not added */
};

void spim_thresholds_defaults(struct spim_thresholds *t);

struct spim_verdict {
    enum spim_action action;
    double spam_probability; /* Bayes, 0..1 */
    double score;            /* bayes points (unless shadow) + enforced rule scores */
    double bayes_points;     /* what the Bayes part is worth, enforced or not */
    double shadow_score;     /* points of every shadow input (rules, Bayes), not in score */
    unsigned tokens;         /* distinct tokens of the message */
    unsigned tokens_used;    /* tokens that took part in the probability */
    int has_link;            /* the text holds a URL or a phone number (its tokens say so) */
    struct spim_rule_hits hits;
};

/* Combines a probability and rule hits into *v with thresholds t. */
void spim_verdict_make(double prob, const struct spim_rule_hits *hits,
                       const struct spim_thresholds *t, struct spim_verdict *v);

/* Writes the rule names of v comma-separated into buf; returns the length. */
size_t spim_verdict_rules(const struct spim_verdict *v, char *buf, size_t cap);

/* --- Classification ----------------------------------------------------------- */

/*
 * The seam to the store: lookup fills ham/spam counts of toks and the totals.
 * prefetch, optional, is told each distinct key as the tokenizer makes it,
 * so that the memory lookup will read can be on its way while the rest of
 * the message is tokenized (a hint: it must not fail or block).
 */
struct spim_counts_ops {
    int (*lookup)(void *ud, struct spim_token *toks, size_t n, struct spim_totals *totals);
    void (*prefetch)(void *ud, uint64_t key);
};

/* Per-thread working memory: Hyperscan scratch and token buffers. */
struct spim_scan;

/* rules may be NULL (Bayes only). The scan borrows rules; free it first. */
int spim_scan_new(const struct spim_rules *rules, struct spim_scan **out);
void spim_scan_free(struct spim_scan *s);

/*
 * Tokenizes, looks up, scores and matches text; fills *v. Counts come from
 * ops->lookup(ud, ...). Returns 0 or the lookup's error.
 */
int spim_classify(struct spim_scan *s, const struct spim_counts_ops *ops, void *ud,
                  const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                  const char *text, size_t len, const struct spim_tok_meta *meta,
                  struct spim_verdict *v);

/* --- Evidence: why a verdict is what it is ------------------------------------- */

#define SPIM_EVIDENCE_MAX                                                                          \
    80 /* the classifier fills at most 2 + 2 * SPIM_RULES_MAX_HITS: the rest is the caller's */
#define SPIM_EVIDENCE_TOKENS 12

struct spim_evidence_item {
    char kind[16]; /* "bayes", "rule", and from the caller "list", "policy", "relationship",
                      "identity", "rate", ... */
    char name[96]; /* "PRIZE_CLAIM", "p=0.9931 (23 of 31 tokens)", "stranger, first message
                      with a link" */
    double weight; /* points this item added to the score; 0 for shadow items */
    int shadow;    /* evaluated, not enforced: shadow_weight is what it would have added */
    double shadow_weight;
};

struct spim_evidence_token {
    char text[48]; /* normalised token text as the tokenizer emits it, cut on a UTF-8 boundary */
    enum spim_tok_kind kind;
    double prob; /* Robinson's f(w) used for it */
    uint32_t ham, spam;
};

/* Zero it (memset or = {0}) before the first use; spim_classify_ex does. */
struct spim_evidence {
    unsigned n;
    struct spim_evidence_item item[SPIM_EVIDENCE_MAX];
    unsigned ntok; /* the strongest tokens (furthest from 0.5) that took part */
    struct spim_evidence_token tok[SPIM_EVIDENCE_TOKENS];
};

/* Appends an item (dropped silently past SPIM_EVIDENCE_MAX; name cut to fit). */
void spim_evidence_add(struct spim_evidence *e, const char *kind, const char *name, double weight,
                       int shadow, double shadow_weight);
/* Sum of the enforced weights: equals the verdict's score. */
double spim_evidence_sum(const struct spim_evidence *e);
/*
 * Human-readable, one item a line ("  +4.21  bayes  p=0.9931 ...", shadow
 * items marked "(shadow, would add +3.00)"), then the tokens; returns the
 * length as snprintf does (buf may be NULL with cap 0 to measure).
 */
size_t spim_evidence_format(const struct spim_evidence *e, char *buf, size_t cap);

/*
 * spim_classify with, when ev is not NULL, the evidence filled: one "bayes"
 * item whose weight is the enforced bayes points, one "rule" item per rule hit
 * with its score, shadow rules and shadow Bayes as shadow items, and the
 * strongest tokens. Filling ev costs a second pass of the tokenizer (for the
 * token texts) and is for explain paths only; ev == NULL costs nothing extra.
 * *ev is reset first; the caller may add its own items after (and must then
 * add their weights to v->score itself).
 */
/*
 * The evidence of verdict v that the last spim_classify(_ex) on s made,
 * from what s still holds: no second lookup or rule scan, only the
 * tokenizer pass for the token texts. Give the meta, bp and t of that
 * call; valid until s classifies again. For a caller that learns only
 * after the verdict that it needs the evidence (serve, for what it blocks).
 */
int spim_scan_explain(struct spim_scan *s, const struct spim_tok_meta *meta,
                      const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                      const struct spim_verdict *v, struct spim_evidence *ev);

int spim_classify_ex(struct spim_scan *s, const struct spim_counts_ops *ops, void *ud,
                     const struct spim_bayes_params *bp, const struct spim_thresholds *t,
                     const char *text, size_t len, const struct spim_tok_meta *meta,
                     struct spim_verdict *v, struct spim_evidence *ev);

/*
 * Tokens of the text, for training: writes at most cap distinct keys to out
 * and returns the count (the same tokens spim_classify looks up).
 */
size_t spim_scan_tokens(struct spim_scan *s, const char *text, size_t len,
                        const struct spim_tok_meta *meta, struct spim_token *out, size_t cap);

#endif
