/*
 * cmd_reports.c: `spimfilter reports list` and `spimfilter reports learn`:
 * the 607 Unwanted reports (RFC 8197) that recipients sent back for
 * messages serve delivered (recorded by spim_judge_report in judge.c).
 *
 * Learning is where the safeguards against abuse bite: a message is
 * trained as spam only once report_min_reporters distinct recipients
 * refused it (the store counts one per recipient per message), never when
 * its sender is on the exclusion (allow) list of the config, and at most
 * once (the record is marked learned, and the learned-message cache of the
 * store keeps a second run from counting it twice).
 */
#include "cli.h"
#include "policy.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "spimfilter reports"
/* Reports trained in one run at most: the rest waits for the next run. */
#define LEARN_MAX 100000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spimfilter reports list  [--db DIR] [--config FILE] [--format text|jsonl]\n"
            "                                [--min-reporters N]\n"
            "       spimfilter reports learn [--db DIR] [--config FILE] [--min-reporters N]\n"
            "                                [--into DIR] [--dry-run]\n"
            "\n"
            "  list                 every reported message: distinct reporters, whether it was\n"
            "                       learned, first and last report, the sender and the text\n"
            "  learn                train as spam the reports of at least N distinct reporters\n"
            "                       not learned yet, whose sender is not on the allow list, and\n"
            "                       mark them learned\n"
            "  --db DIR             the store serve records reports in (db)\n"
            "  --config FILE        the serve config: db, report_min_reporters, allow_list\n"
            "  --min-reporters N    list: only those with N or more; learn: the threshold\n"
            "                       (report_min_reporters, default 3)\n"
            "  --into DIR           learn into another store (the trainer's, docs/scaling.md)\n"
            "  --dry-run            say what learn would train, change nothing\n");
}

static void fmt_time(int64_t us, char *out, size_t cap)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

struct list_ctx {
    int jsonl;
    unsigned min;
    unsigned long shown;
};

static int list_cb(const struct spim_report *r, void *ud)
{
    struct list_ctx *c = ud;
    char first[32], last[32];

    if (r->reporters < c->min)
        return 0;
    fmt_time(r->first_us, first, sizeof(first));
    fmt_time(r->last_us, last, sizeof(last));
    c->shown++;
    if (c->jsonl) {
        printf("{\"key\":\"%016llx\",\"reporters\":%u,\"learned\":%s,\"first\":\"%s\","
               "\"last\":\"%s\",\"sender\":",
               (unsigned long long)r->msg_key, (unsigned)r->reporters,
               r->learned ? "true" : "false", first, last);
        spim_json_str(stdout, r->sender.p, r->sender.len);
        printf(",\"text\":");
        spim_json_str(stdout, r->text.p, r->text.len);
        printf("}\n");
        return 0;
    }
    printf("%016llx  %9u  %-7s  %-20s  %-20s  ", (unsigned long long)r->msg_key,
           (unsigned)r->reporters, r->learned ? "yes" : "no", first, last);
    spim_print_excerpt(stdout, r->sender.p, r->sender.len, 32);
    printf("  ");
    spim_print_excerpt(stdout, r->text.p, r->text.len, 60);
    printf("\n");
    return 0;
}

static int cmd_list(const char *db, int jsonl, unsigned min)
{
    struct spim_store *st = NULL;
    struct list_ctx c = {jsonl, min, 0};
    int rc = spim_store_open(db, SPIM_STORE_RDONLY, 0, &st);

    if (rc == 0) {
        if (!jsonl)
            printf("%-16s  %9s  %-7s  %-20s  %-20s  %-32s  %s\n", "KEY", "REPORTERS", "LEARNED",
                   "FIRST REPORT", "LAST REPORT", "SENDER", "TEXT");
        rc = spim_report_foreach(st, list_cb, &c);
    }
    spim_store_close(st);
    if (rc != 0) {
        fprintf(stderr, PROG " list: %s: %s\n", db, spim_strerror(rc));
        return 1;
    }
    return 0;
}

/* A report to learn: copied out of the read transaction. */
struct pending {
    uint64_t key;
    char *sender, *text;
    size_t sender_len, text_len;
};

struct learn_ctx {
    unsigned min;
    struct pending *p;
    size_t n, cap;
    unsigned long below, done_before;
    int err;
};

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int learn_cb(const struct spim_report *r, void *ud)
{
    struct learn_ctx *c = ud;
    struct pending *p;

    if (r->learned) {
        c->done_before++;
        return 0;
    }
    if (r->reporters < c->min) {
        c->below++;
        return 0;
    }
    if (c->n == LEARN_MAX)
        return 1; /* the rest at the next run */
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct pending *np = realloc(c->p, cap * sizeof(*np));

        if (np == NULL) {
            c->err = SPIM_ENOMEM;
            return SPIM_ENOMEM;
        }
        c->p = np;
        c->cap = cap;
    }
    p = &c->p[c->n];
    p->key = r->msg_key;
    p->sender = dup_bytes(r->sender.p, r->sender.len);
    p->text = dup_bytes(r->text.p, r->text.len);
    p->sender_len = r->sender.len;
    p->text_len = r->text.len;
    if (p->sender == NULL || p->text == NULL) {
        free(p->sender);
        free(p->text);
        c->err = SPIM_ENOMEM;
        return SPIM_ENOMEM;
    }
    c->n++;
    return 0;
}

/* The allow list of cfg, or NULL when it has none. */
static int load_allow(const struct spim_config *cfg, struct spim_policy **out)
{
    struct spim_diag d;
    int rc;

    *out = NULL;
    if (cfg->allow_list[0] == '\0')
        return 0;
    if ((rc = spim_policy_new(out)) != 0)
        return rc;
    memset(&d, 0, sizeof(d));
    rc = spim_policy_load_list(*out, SPIM_POLICY_ALLOW, cfg->allow_list, &d);
    if (rc != 0) {
        fprintf(stderr, PROG " learn: %s:%u: %s\n", d.file[0] ? d.file : cfg->allow_list, d.line,
                d.msg[0] ? d.msg : spim_strerror(rc));
        spim_policy_free(*out);
        *out = NULL;
    }
    return rc;
}

struct learn_opts {
    const char *db, *into;
    unsigned min;
    int dry_run;
};

/* "VERB KEY as spam: TEXT", the text as spim_print_text shows it (a sender wrote it). */
static void say_learned(const char *verb, const struct pending *r)
{
    printf("%s %016llx as spam: ", verb, (unsigned long long)r->key);
    spim_print_text(stdout, r->text, r->text_len, SIZE_MAX, 0);
    fputc('\n', stdout);
}

static int cmd_learn(const struct learn_opts *o, const struct spim_config *cfg)
{
    struct spim_store *st = NULL, *target = NULL;
    struct spim_policy *allow = NULL;
    struct spim_scan *scan = NULL;
    struct spim_store_batch *b = NULL;
    struct spim_token *toks = NULL;
    struct learn_ctx c = {.min = o->min};
    unsigned char *train = NULL;
    unsigned long learned = 0, dup = 0, excluded = 0;
    int rc, ret = 1;

    if ((rc = load_allow(cfg, &allow)) != 0)
        return 1;
    rc = spim_store_open(o->db, o->dry_run ? SPIM_STORE_RDONLY : 0, 0, &st);
    if (rc != 0) {
        fprintf(stderr, PROG " learn: %s: %s\n", o->db, spim_strerror(rc));
        goto out;
    }
    rc = spim_report_foreach(st, learn_cb, &c);
    if (rc != 0 || c.err != 0) {
        fprintf(stderr, PROG " learn: %s: reading reports: %s\n", o->db,
                spim_strerror(rc ? rc : c.err));
        goto out;
    }
    train = calloc(c.n ? c.n : 1, 1);
    toks = malloc(SPIM_TOK_MAX * sizeof(*toks));
    if (train == NULL || toks == NULL || spim_scan_new(NULL, &scan) != 0) {
        fprintf(stderr, PROG " learn: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < c.n; i++) {
        struct spim_policy_who who = {{c.p[i].sender, c.p[i].sender_len}, {NULL, 0}, NULL};
        char entry[384];

        if (allow != NULL &&
            spim_policy_lookup(allow, &who, entry, sizeof(entry)) == SPIM_POLICY_ALLOW) {
            excluded++;
            printf("skipped %016llx: sender ", (unsigned long long)c.p[i].key);
            spim_print_text(stdout, c.p[i].sender, c.p[i].sender_len, SIZE_MAX, 0);
            printf(" is excluded (%s)\n", entry);
            continue;
        }
        train[i] = 1;
    }
    if (o->dry_run) {
        unsigned long would = 0;

        for (size_t i = 0; i < c.n; i++) {
            if (!train[i])
                continue;
            say_learned("would learn", &c.p[i]);
            would++;
        }
        printf("dry run: would learn %lu reports as spam, %lu skipped (excluded sender), %lu "
               "below %u reporters, %lu learned before\n",
               would, excluded, c.below, o->min, c.done_before);
        ret = 0;
        goto out;
    }
    if (o->into != NULL && strcmp(o->into, o->db) != 0) {
        rc = spim_store_open(o->into, 0, 0, &target);
        if (rc != 0) {
            fprintf(stderr, PROG " learn: --into %s: %s\n", o->into, spim_strerror(rc));
            goto out;
        }
    }
    if ((rc = spim_store_batch_new(target ? target : st, &b)) != 0)
        goto fail_store;
    for (size_t i = 0; i < c.n; i++) {
        size_t nt;
        int oc = SPIM_LEARN_NEW;

        if (!train[i])
            continue;
        nt = spim_scan_tokens(scan, c.p[i].text, c.p[i].text_len, NULL, toks, SPIM_TOK_MAX);
        rc = spim_store_batch_learn(b, spim_store_msg_key(c.p[i].text, c.p[i].text_len), toks, nt,
                                    1, 1, &oc);
        if (rc != 0)
            goto fail_store;
        if (oc == SPIM_LEARN_DUP)
            dup++;
        else
            learned++;
    }
    rc = spim_store_batch_commit(b); /* frees b */
    b = NULL;
    if (rc != 0)
        goto fail_store;
    /*
     * Marked after the training committed: a crash in between leaves them
     * unmarked, and the next run finds them in the learned cache (a dup).
     */
    for (size_t i = 0; i < c.n; i++) {
        if (train[i] && (rc = spim_report_set_learned(st, c.p[i].key, 1)) != 0)
            goto fail_store;
        if (train[i])
            say_learned("learned", &c.p[i]);
    }
    printf("learned %lu reports as spam (%lu already in the counts), %lu skipped (excluded "
           "sender), %lu below %u reporters, %lu learned before\n",
           learned, dup, excluded, c.below, o->min, c.done_before);
    ret = 0;
    goto out;

fail_store:
    fprintf(stderr, PROG " learn: %s: %s\n", target ? o->into : o->db, spim_strerror(rc));
out:
    spim_store_batch_free(b);
    spim_scan_free(scan);
    free(toks);
    free(train);
    for (size_t i = 0; i < c.n; i++) {
        free(c.p[i].sender);
        free(c.p[i].text);
    }
    free(c.p);
    spim_store_close(target);
    spim_store_close(st);
    spim_policy_free(allow);
    return ret;
}

int spim_cmd_reports(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},     {"config", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, 'f'}, {"min-reporters", required_argument, NULL, 'n'},
        {"into", required_argument, NULL, 'i'},   {"dry-run", no_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    struct spim_config cfg;
    struct learn_opts lo = {0};
    const char *db = NULL, *config = NULL, *sub, *min = NULL;
    char err[512];
    int c, jsonl = 0;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    sub = argv[1];
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            db = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'f':
            if (strcmp(optarg, "jsonl") == 0) {
                jsonl = 1;
            } else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, PROG ": --format: text or jsonl\n");
                return 2;
            }
            break;
        case 'n':
            min = optarg;
            break;
        case 'i':
            lo.into = optarg;
            break;
        case 'y':
            lo.dry_run = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc - 1) {
        usage(stderr);
        return 2;
    }
    spim_config_defaults(&cfg);
    if (config != NULL && spim_config_load(config, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return 1;
    }
    if (db != NULL && spim_config_set(&cfg, "db", db, err, sizeof(err)) != 0) {
        fprintf(stderr, PROG ": --%s\n", err);
        return 2;
    }
    if (min != NULL && spim_config_set(&cfg, "report_min_reporters", min, err, sizeof(err)) != 0) {
        fprintf(stderr, PROG ": --min-reporters: a count from 1\n");
        return 2;
    }
    if (db == NULL && config == NULL) {
        fprintf(stderr, PROG ": give --db DIR or --config FILE\n");
        return 2;
    }
    if (strcmp(sub, "list") == 0)
        return cmd_list(cfg.db, jsonl, min != NULL ? cfg.report_min_reporters : 0);
    if (strcmp(sub, "learn") == 0) {
        lo.db = cfg.db;
        lo.min = cfg.report_min_reporters;
        return cmd_learn(&lo, &cfg);
    }
    fprintf(stderr, PROG ": unknown subcommand '%s'\n", sub);
    usage(stderr);
    return 2;
}
