/*
 * cmd_classify.c: `spimfilter classify`: the verdict for each message, in
 * input order, as the filter would give it (same engine, same defaults).
 * --explain adds why: every term of the score (Bayes, each rule, shadow
 * inputs) and the tokens that moved Bayes most (spim_classify_ex).
 */
#include "cli.h"

#include <getopt.h>
#include <stdio_ext.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter classify --db DIR [--rules FILE] [--config FILE]\n"
               "                           (--tsv FILE | FILE... | -) [--format text|jsonl]\n"
               "                           [--explain]\n"
               "\n"
               "  --db DIR        the trained store\n"
               "  --rules FILE    a rules file (default: none, or the config's)\n"
               "  --config FILE   take thresholds and rules from a serve config\n"
               "  --tsv FILE      labelled lines; the label is echoed in the output\n"
               "  FILE            one message per file; '-' reads stdin, one message per line\n"
               "  --format F      text (default) or jsonl: verdict, spam_probability, score,\n"
               "                  rules, tokens\n"
               "  --explain       also why: each term of the score with its weight (shadow\n"
               "                  rules and shadow Bayes marked, not added), the strongest\n"
               "                  tokens; jsonl gets evidence and strongest_tokens arrays\n");
}

struct out {
    int jsonl;
    int explain;
    unsigned long index;
    int tty;                      /* stdout is a terminal: written a line at a time */
    struct spim_engine_worker *w; /* let go of the store before a write may block */
};

/* Output is flushed by us, with the store let go, before it reaches this much
 * of the 64 KiB buffer (a line, with --explain, is under 16 KiB). */
#define OUT_FLUSH_AT (32 << 10)

/* The evidence as two JSON arrays, after a comma the caller wrote. */
static void print_evidence_json(const struct spim_evidence *ev)
{
    fputs("\"evidence\":[", stdout);
    for (unsigned i = 0; i < ev->n && i < SPIM_EVIDENCE_MAX; i++) {
        const struct spim_evidence_item *it = &ev->item[i];

        fputs(i ? ",{\"kind\":" : "{\"kind\":", stdout);
        spim_json_str(stdout, it->kind, strlen(it->kind));
        fputs(",\"name\":", stdout);
        spim_json_str(stdout, it->name, strlen(it->name));
        /* %.17g: the weights read back add up to the score, not to a rounding of it. */
        printf(",\"weight\":%.17g,\"shadow\":%s,\"shadow_weight\":%.17g}", it->weight,
               it->shadow ? "true" : "false", it->shadow_weight);
    }
    fputs("],\"strongest_tokens\":[", stdout);
    for (unsigned i = 0; i < ev->ntok && i < SPIM_EVIDENCE_TOKENS; i++) {
        const struct spim_evidence_token *t = &ev->tok[i];

        fputs(i ? ",{\"text\":" : "{\"text\":", stdout);
        spim_json_str(stdout, t->text, strlen(t->text));
        printf(",\"kind\":\"%s\",\"prob\":%.6f,\"ham\":%u,\"spam\":%u}",
               spim_tok_kind_name(t->kind), t->prob, (unsigned)t->ham, (unsigned)t->spam);
    }
    fputs("],", stdout);
}

/*
 * v with decimals (0..6) digits after the point, as printf's "%.*f" writes
 * it in the default rounding mode (the exact binary value, rounded half to
 * even), into p[0..cap) (cap >= 32) and NUL-terminated; returns the length.
 * Values of 2^40 or more, NaN and infinities go through snprintf (cut to
 * cap). Every jsonl line has two of these, and glibc's float conversion was
 * a tenth of a `classify --tsv` run; checked against snprintf on 80 million
 * doubles (random bits, [0,1), exact and near ties).
 */
static size_t put_fixed(char *p, size_t cap, double v, int decimals)
{
    char *start = p;
    static const uint64_t p10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    double a = fabs(v);
    char digits[24];
    uint64_t q = 0, ip, fp;
    size_t n = 0;

    if (!(a < 0x1p40) || decimals < 0 || decimals > 6) {
        int r = snprintf(p, cap, "%.*f", decimals, v);

        return r < 0 ? 0 : (size_t)r < cap ? (size_t)r : cap - 1;
    }
    if (signbit(v))
        *p++ = '-';
    /* Below 2^32 the product a * 10^decimals is within 2^-21 of the exact
     * one: rounding it gives the exact rounding unless its fraction is that
     * close to a half (then the exact path below decides). */
    if (a > 0.0 && a * (double)p10[decimals] < 0x1p32) {
        double x = a * (double)p10[decimals], fr = x - (double)(uint64_t)x;

        if (fr < 0.5 - 1e-6 || fr > 0.5 + 1e-6) {
            q = (uint64_t)x + (fr > 0.5);
            goto digits;
        }
    }
    if (a > 0.0) {
        int e, shift;
        /* a = mi * 2^-shift exactly: frexp's mantissa times 2^53 is an integer. */
        uint64_t mi = (uint64_t)ldexp(frexp(a, &e), 53);

        shift = 53 - e; /* at least 14, as a < 2^40 */
        if (shift < 128) {
            __extension__ typedef unsigned __int128 u128;
            u128 prod = (u128)mi * p10[decimals], qq = prod >> shift;
            u128 rem = prod - (qq << shift), half = (u128)1 << (shift - 1);

            if (rem > half || (rem == half && (qq & 1)))
                qq++;
            q = (uint64_t)qq;
        }
    }
digits:
    ip = q / p10[decimals];
    fp = q % p10[decimals];
    do {
        digits[n++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip > 0 && n < sizeof(digits));
    while (n > 0)
        *p++ = digits[--n];
    if (decimals > 0) {
        *p++ = '.';
        for (int i = decimals - 1; i >= 0; i--) {
            p[i] = (char)('0' + fp % 10);
            fp /= 10;
        }
        p += decimals;
    }
    *p = '\0';
    return (size_t)(p - start);
}

/* Appends s (without its NUL) at p; returns the new end. */
static char *cat(char *p, const char *s)
{
    size_t n = strlen(s);

    memcpy(p, s, n);
    return p + n;
}

/* Appends v in decimal, as printf's "%lu" writes it; returns the new end. */
static char *cat_ulong(char *p, unsigned long v)
{
    char d[24];
    size_t n = 0;

    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        *p++ = d[--n];
    return p;
}

static void print(struct out *o, const char *name, const char *label, const char *text, size_t len,
                  const struct spim_verdict *v, const struct spim_evidence *ev)
{
    /* A terminal's line is written now, and may wait on the terminal. */
    if (o->tty)
        spim_engine_worker_release(o->w);
    if (o->jsonl) {
        /* The line is made in one buffer and written with one fwrite: a few
         * fields per line, and printf's parsing, then a stdio call per field,
         * were most of the cost of writing it. Rule names are [A-Za-z0-9_]
         * (the rules parser allows no other), at most 63 bytes each. */
        char pb[32], sb[32], buf[256 + SPIM_RULES_MAX_HITS * 68], *p;

        put_fixed(pb, sizeof(pb), v->spam_probability, 6);
        put_fixed(sb, sizeof(sb), v->score, 3);
        p = cat_ulong(cat(buf, "{\"index\":"), o->index);
        *p++ = ',';
        if (name != NULL) {
            fwrite(buf, 1, (size_t)(p - buf), stdout);
            fputs("\"file\":", stdout);
            spim_json_str(stdout, name, strlen(name));
            fputc(',', stdout);
            p = buf;
        }
        if (label != NULL) /* "spam" or "ham" */
            p = cat(cat(cat(p, "\"label\":\""), label), "\",");
        /* Action names are short words; pb and sb hold under 32 bytes each. */
        p = cat(cat(cat(cat(cat(p, "\"verdict\":\""), spim_action_name(v->action)),
                        "\",\"spam_probability\":"),
                    pb),
                ",\"score\":");
        p = cat(cat(p, sb), ",\"rules\":[");
        for (unsigned i = 0; i < v->hits.n && i < SPIM_RULES_MAX_HITS; i++) {
            size_t nl = strnlen(v->hits.names[i], 64);

            if (i)
                *p++ = ',';
            *p++ = '"';
            memcpy(p, v->hits.names[i], nl);
            p += nl;
            *p++ = '"';
        }
        p = cat(p, "],");
        if (o->explain && ev != NULL) {
            fwrite(buf, 1, (size_t)(p - buf), stdout);
            printf("\"score_exact\":%.17g,\"shadow_score\":%.17g,\"bayes_points\":%.17g,", v->score,
                   v->shadow_score, v->bayes_points);
            print_evidence_json(ev);
            p = buf;
        }
        p = cat_ulong(cat(p, "\"tokens\":"), v->tokens);
        p = cat_ulong(cat(p, ",\"tokens_used\":"), v->tokens_used);
        p = cat(p, "}\n");
        fwrite(buf, 1, (size_t)(p - buf), stdout);
    } else {
        char rules[512];

        spim_verdict_rules(v, rules, sizeof(rules));
        printf("%-7s score=%6.2f p=%.4f", spim_action_name(v->action), v->score,
               v->spam_probability);
        if (label != NULL)
            printf(" label=%-4s", label);
        printf(" rules=%s  ", rules[0] ? rules : "-");
        if (name != NULL)
            printf("%s", name);
        else
            spim_print_excerpt(stdout, text, len, 60);
        fputc('\n', stdout);
        if (o->explain && ev != NULL) {
            char buf[8192];
            size_t n = spim_evidence_format(ev, buf, sizeof(buf));

            /* The whole evidence fits (48 items and 12 tokens of bounded width). */
            fwrite(buf, 1, n < sizeof(buf) ? n : sizeof(buf) - 1, stdout);
            printf("  sum of weights = %.4f (score %.4f)", spim_evidence_sum(ev), v->score);
            if (v->shadow_score != 0.0)
                printf(", shadow inputs would add %+.4f", v->shadow_score);
            fputs("\n\n", stdout);
        }
    }
    o->index++;
}

/* Classifies one text, with the evidence when explaining. */
static int classify(struct spim_engine_worker *w, const struct out *o, const char *text, size_t len,
                    struct spim_verdict *v, struct spim_evidence *ev)
{
    /* A pipe's reader may be slow: the buffer is written out while the batch
     * worker holds no read transaction (a long-held one keeps the pages that
     * train and serve free from reuse, and the store grows). */
    if (!o->tty && __fpending(stdout) >= OUT_FLUSH_AT) {
        spim_engine_worker_release(w);
        fflush(stdout);
    }
    return spim_engine_classify_ex(w, text, len, NULL, v, o->explain ? ev : NULL);
}

/* A record of --tsv: classified and printed. */
struct record_ctx {
    struct spim_engine_worker *w;
    struct out *o;
    struct spim_verdict *v;
    struct spim_evidence *ev;
};
#define RECORD_LOOKUP_FAILED 1

static int classify_record(void *ud, int is_spam, const char *text, size_t len)
{
    struct record_ctx *c = ud;

    if (classify(c->w, c->o, text, len, c->v, c->ev) != 0)
        return RECORD_LOOKUP_FAILED;
    print(c->o, NULL, is_spam ? "spam" : "ham", text, len, c->v, c->ev);
    return 0;
}

int spim_cmd_classify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},     {"rules", required_argument, NULL, 'r'},
        {"config", required_argument, NULL, 'c'}, {"tsv", required_argument, NULL, 't'},
        {"format", required_argument, NULL, 'f'}, {"explain", no_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    struct spim_config cfg;
    struct spim_engine e;
    struct spim_engine_worker *w = NULL;
    struct out o = {0, 0, 0, 0, NULL};
    static struct spim_evidence ev; /* 6 KB: off the stack */
    const char *tsv = NULL, *db = NULL, *rules = NULL, *config = NULL;
    char err[512];
    int c, rc = 1, opened = 0, stdin_in = 0;
    struct spim_verdict v;

    spim_config_defaults(&cfg);
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            db = optarg;
            break;
        case 'r':
            rules = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 't':
            tsv = optarg;
            break;
        case 'f':
            if (strcmp(optarg, "jsonl") == 0)
                o.jsonl = 1;
            else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, "spimfilter classify: --format: text or jsonl\n");
                return 2;
            }
            break;
        case 'x':
            o.explain = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config != NULL && spim_config_load(config, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter classify: %s\n", err);
        return 1;
    }
    if (db != NULL)
        snprintf(cfg.db, sizeof(cfg.db), "%s", db);
    if (rules != NULL)
        snprintf(cfg.rules, sizeof(cfg.rules), "%s", rules);
    if ((db == NULL && config == NULL) || (tsv == NULL && optind >= argc)) {
        usage(stderr);
        return 2;
    }
    /* Into a file or a pipe, a line per message: 64 KiB writes, not 4 KiB ones
     * (glibc takes the size only with a buffer given). */
    o.tty = isatty(STDOUT_FILENO);
    if (!o.tty) {
        static char obuf[64 << 10];

        setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));
    }
    if (spim_engine_open(&e, &cfg, SPIM_ENGINE_BATCH, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter classify: %s\n", err);
        return 1;
    }
    opened = 1;
    /* Messages from files: a batch worker (the token index read in place).
     * From stdin or a pipe (--tsv is read a line at a time), which may wait
     * on its writer for any time: a worker that holds no read transaction
     * between messages. */
    for (int i = optind; i < argc; i++)
        stdin_in |= strcmp(argv[i], "-") == 0;
    if (tsv != NULL)
        stdin_in |= spim_path_is_stream(tsv);
    if ((stdin_in ? spim_engine_worker_new(&e, &w) : spim_engine_worker_batch(&e, &w)) != 0) {
        fprintf(stderr, "spimfilter classify: out of memory\n");
        goto out;
    }
    o.w = w;
    if (tsv != NULL) {
        struct record_ctx ctx = {w, &o, &v, &ev};
        int r = spim_tsv_each(tsv, classify_record, &ctx, err, sizeof(err));

        if (r != 0) {
            fprintf(stderr, "spimfilter classify: %s\n",
                    r == RECORD_LOOKUP_FAILED ? "store lookup failed" : err);
            goto out;
        }
    }
    for (int i = optind; i < argc; i++) {
        char *buf;
        size_t len;

        if (spim_read_file(argv[i], &buf, &len) != 0) {
            fprintf(stderr, "spimfilter classify: %s: cannot read\n", argv[i]);
            goto out;
        }
        if (strcmp(argv[i], "-") == 0) {
            for (char *p = buf, *end = buf + len; p < end;) {
                char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);

                if (ll && p[ll - 1] == '\r')
                    ll--;
                if (ll && classify(w, &o, p, ll, &v, &ev) == 0)
                    print(&o, NULL, NULL, p, ll, &v, &ev);
                p = nl ? nl + 1 : end;
            }
        } else if (classify(w, &o, buf, len, &v, &ev) == 0) {
            print(&o, argv[i], NULL, buf, len, &v, &ev);
        }
        free(buf);
    }
    rc = 0;
out:
    spim_engine_worker_free(w);
    if (opened)
        spim_engine_close(&e);
    return rc;
}
