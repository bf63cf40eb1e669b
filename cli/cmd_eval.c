/*
 * cmd_eval.c: `spimfilter eval`: K-fold cross-validation of the whole
 * engine on a labelled TSV.
 *
 * Data line i (0-based, the header not counted) belongs to fold i % K. For
 * each fold a fresh store is made in a mkdtemp directory, the other folds
 * are trained into it exactly as `train` does (learned-message cache
 * included), and the fold is classified exactly as `classify` does (same
 * engine, config, rules). "block" is the spam decision for precision and
 * MCC; "tagged" counts messages tagged and not blocked. Rates are of one
 * thread: messages per second of tokenizing and writing (train) and of
 * classifying (classify).
 */
#include "cli.h"

#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FOLDS_MAX 100

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spimfilter eval --tsv FILE [--folds K] [--format text|jsonl]\n"
            "                       [--rules FILE] [--config FILE]\n"
            "\n"
            "  --tsv FILE      labelled lines: 'spam' or 'ham', a TAB, the text\n"
            "  --folds K       folds (default 5, 2..%d); line i is in fold i %% K\n"
            "  --format F      text (default) or jsonl: one object per fold, then pooled\n"
            "  --rules FILE    a rules file (default: the config's, or none)\n"
            "  --config FILE   thresholds and rules from a serve config\n",
            FOLDS_MAX);
}

struct rec {
    const char *text;
    size_t len;
    int is_spam;
};

struct tally {
    unsigned long spam, ham; /* messages */
    unsigned long spam_block, spam_tag, ham_block, ham_tag;
    unsigned long trained;
    double train_s, classify_s;
};

static void tally_add(struct tally *a, const struct tally *b)
{
    a->spam += b->spam;
    a->ham += b->ham;
    a->spam_block += b->spam_block;
    a->spam_tag += b->spam_tag;
    a->ham_block += b->ham_block;
    a->ham_tag += b->ham_tag;
    a->trained += b->trained;
    a->train_s += b->train_s;
    a->classify_s += b->classify_s;
}

static double pct(unsigned long a, unsigned long b)
{
    return b ? 100.0 * (double)a / (double)b : 0.0;
}

/* Matthews correlation of the block decision; 0 when a margin is empty. */
static double mcc(const struct tally *t)
{
    double tp = (double)t->spam_block, fn = (double)(t->spam - t->spam_block);
    double fp = (double)t->ham_block, tn = (double)(t->ham - t->ham_block);
    double d = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn);

    return d > 0 ? (tp * tn - fp * fn) / sqrt(d) : 0.0;
}

static double precision(const struct tally *t)
{
    unsigned long p = t->spam_block + t->ham_block;

    return p ? (double)t->spam_block / (double)p : 0.0;
}

static void print_tally(const char *name, int fold, const struct tally *t, int jsonl)
{
    double tr = t->train_s > 0 ? (double)t->trained / t->train_s : 0.0;
    double cr = t->classify_s > 0 ? (double)(t->spam + t->ham) / t->classify_s : 0.0;

    if (jsonl) {
        printf("{\"fold\":");
        if (fold >= 0)
            printf("%d", fold);
        else
            printf("\"%s\"", name);
        printf(",\"spam\":%lu,\"ham\":%lu,\"spam_blocked\":%.4f,\"spam_tagged\":%.4f,"
               "\"ham_blocked\":%.4f,\"ham_tagged\":%.4f,\"spam_blocked_n\":%lu,"
               "\"spam_tagged_n\":%lu,\"ham_blocked_n\":%lu,\"ham_tagged_n\":%lu,"
               "\"precision\":%.6f,\"mcc\":%.6f,\"train_per_s\":%.0f,\"classify_per_s\":%.0f}\n",
               t->spam, t->ham, pct(t->spam_block, t->spam), pct(t->spam_tag, t->spam),
               pct(t->ham_block, t->ham), pct(t->ham_tag, t->ham), t->spam_block, t->spam_tag,
               t->ham_block, t->ham_tag, precision(t), mcc(t), tr, cr);
        return;
    }
    printf("%-7s spam blocked %6.2f%%  spam tagged %5.2f%%  ham blocked %5.2f%% (%lu)  "
           "ham tagged %5.2f%%  precision %.4f  MCC %.4f  train %.0f/s  classify %.0f/s\n",
           name, pct(t->spam_block, t->spam), pct(t->spam_tag, t->spam), pct(t->ham_block, t->ham),
           t->ham_block, pct(t->ham_tag, t->ham), precision(t), mcc(t), tr, cr);
}

/* Removes the files LMDB made in dir, then dir. */
static void rm_store_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[PATH_MAX];

    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) < sizeof(p))
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Trains the records outside fold k into e's store. */
static int train_fold(struct spim_engine *e, const struct rec *r, size_t n, unsigned k,
                      unsigned folds, struct tally *t)
{
    struct spim_store_batch *b = NULL;
    struct spim_scan *scan = NULL;
    struct spim_token *toks = malloc(SPIM_TOK_MAX * sizeof(*toks));
    uint64_t t0 = spim_mono_ns();
    int rc;

    if (toks == NULL) {
        rc = SPIM_ENOMEM;
        goto out;
    }
    if ((rc = spim_scan_new(NULL, &scan)) != 0 || (rc = spim_store_batch_new(e->store, &b)) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        size_t nt;

        if (i % folds == k)
            continue;
        nt = spim_scan_tokens(scan, r[i].text, r[i].len, NULL, toks, SPIM_TOK_MAX);
        rc = spim_store_batch_learn(b, spim_store_msg_key(r[i].text, r[i].len), toks, nt,
                                    r[i].is_spam, 1, NULL);
        if (rc != 0)
            goto out;
        t->trained++;
    }
    rc = spim_store_batch_commit(b);
    b = NULL;
    t->train_s = (double)(spim_mono_ns() - t0) / 1e9;
out:
    spim_store_batch_free(b);
    spim_scan_free(scan);
    free(toks);
    return rc;
}

static int classify_fold(struct spim_engine *e, const struct rec *r, size_t n, unsigned k,
                         unsigned folds, struct tally *t)
{
    struct spim_engine_worker *w = NULL;
    struct spim_verdict v;
    uint64_t t0;
    int rc = spim_engine_worker_batch(e, &w);

    if (rc != 0)
        return rc;
    t0 = spim_mono_ns();
    for (size_t i = k; i < n; i += folds) {
        rc = spim_engine_classify(w, r[i].text, r[i].len, NULL, &v);
        if (rc != 0)
            break;
        if (r[i].is_spam) {
            t->spam++;
            t->spam_block += v.action == SPIM_BLOCK;
            t->spam_tag += v.action == SPIM_TAG;
        } else {
            t->ham++;
            t->ham_block += v.action == SPIM_BLOCK;
            t->ham_tag += v.action == SPIM_TAG;
        }
    }
    t->classify_s = (double)(spim_mono_ns() - t0) / 1e9;
    spim_engine_worker_free(w);
    return rc;
}

static int run_fold(const struct spim_config *base, const struct rec *r, size_t n, unsigned k,
                    unsigned folds, struct tally *t)
{
    struct spim_config cfg = *base;
    struct spim_engine e;
    char tmpl[] = "/tmp/spimfilter-eval-XXXXXX", err[512];
    int rc;

    if (mkdtemp(tmpl) == NULL) {
        perror("spimfilter eval: mkdtemp");
        return SPIM_EIO;
    }
    /* A subdirectory so that the store creates it. */
    if ((size_t)snprintf(cfg.db, sizeof(cfg.db), "%s/db", tmpl) >= sizeof(cfg.db)) {
        rmdir(tmpl);
        return SPIM_EINVAL;
    }
    rc = spim_engine_open(&e, &cfg, SPIM_ENGINE_WRITABLE | SPIM_ENGINE_BATCH, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "spimfilter eval: %s\n", err);
        goto out_dir;
    }
    rc = train_fold(&e, r, n, k, folds, t);
    if (rc == 0)
        rc = classify_fold(&e, r, n, k, folds, t);
    if (rc != 0)
        fprintf(stderr, "spimfilter eval: fold %u: %s\n", k, spim_strerror(rc));
    spim_engine_close(&e);
out_dir:
    rm_store_dir(cfg.db);
    rmdir(tmpl);
    return rc;
}

int spim_cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tsv", required_argument, NULL, 't'},
        {"folds", required_argument, NULL, 'k'},
        {"format", required_argument, NULL, 'f'},
        {"rules", required_argument, NULL, 'r'},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct spim_config cfg;
    struct spim_tsv tsv;
    struct rec *recs = NULL;
    struct tally pooled;
    const char *path = NULL, *rules = NULL, *config = NULL;
    char err[512], *end;
    size_t n = 0, cap = 0;
    unsigned folds = 5;
    int c, jsonl = 0, rc = 1, r, is_spam;
    const char *text;
    size_t len;

    spim_config_defaults(&cfg);
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            path = optarg;
            break;
        case 'k': {
            unsigned long v = strtoul(optarg, &end, 10);

            if (*optarg == '\0' || *end != '\0' || v < 2 || v > FOLDS_MAX) {
                fprintf(stderr, "spimfilter eval: --folds: 2..%d\n", FOLDS_MAX);
                return 2;
            }
            folds = (unsigned)v;
            break;
        }
        case 'f':
            if (strcmp(optarg, "jsonl") == 0) {
                jsonl = 1;
            } else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, "spimfilter eval: --format: text or jsonl\n");
                return 2;
            }
            break;
        case 'r':
            rules = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (config != NULL && spim_config_load(config, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter eval: %s\n", err);
        return 1;
    }
    if (rules != NULL)
        snprintf(cfg.rules, sizeof(cfg.rules), "%s", rules);
    if (spim_tsv_open(&tsv, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter eval: %s\n", err);
        return 1;
    }
    /* The records point into the TSV's buffer, which lives until the end. */
    while ((r = spim_tsv_next(&tsv, &is_spam, &text, &len, err, sizeof(err))) == 1) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            struct rec *nr = realloc(recs, ncap * sizeof(*nr));

            if (nr == NULL) {
                fprintf(stderr, "spimfilter eval: out of memory\n");
                goto out;
            }
            recs = nr;
            cap = ncap;
        }
        recs[n].text = text;
        recs[n].len = len;
        recs[n].is_spam = is_spam;
        n++;
    }
    if (r < 0) {
        fprintf(stderr, "spimfilter eval: %s\n", err);
        goto out;
    }
    if (n < folds) {
        fprintf(stderr, "spimfilter eval: %s: %zu messages, fewer than %u folds\n", path, n, folds);
        goto out;
    }
    if (!jsonl)
        printf("eval: %s, %zu messages, %u folds, rules %s\n", path, n, folds,
               cfg.rules[0] ? cfg.rules : "(none)");
    memset(&pooled, 0, sizeof(pooled));
    for (unsigned k = 0; k < folds; k++) {
        struct tally t;
        char name[16];

        memset(&t, 0, sizeof(t));
        if (run_fold(&cfg, recs, n, k, folds, &t) != 0)
            goto out;
        snprintf(name, sizeof(name), "fold %u", k);
        print_tally(name, (int)k, &t, jsonl);
        tally_add(&pooled, &t);
    }
    print_tally("pooled", -1, &pooled, jsonl);
    rc = 0;
out:
    free(recs);
    spim_tsv_close(&tsv);
    return rc;
}
