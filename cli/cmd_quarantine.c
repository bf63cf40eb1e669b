/*
 * cmd_quarantine.c: `spimfilter quarantine list|show|delete`: review what
 * the filter blocked. The store may be in use by a running serve: LMDB lets
 * both work at once.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter quarantine list   --db DIR [--format text|jsonl]\n"
               "       spimfilter quarantine show   --db DIR [--format text|jsonl] [--raw] ID\n"
               "       spimfilter quarantine delete --db DIR ID...\n");
}

static const char *status_name(uint32_t s)
{
    return s == SPIM_QUAR_HELD       ? "held"
           : s == SPIM_QUAR_RELEASED ? "released"
           : s == SPIM_QUAR_DELETED  ? "deleted"
                                     : "unknown";
}

static void fmt_time(int64_t us, char *out, size_t cap)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void json_field(const char *name, struct spim_slice s)
{
    printf(",\"%s\":", name);
    spim_json_str(stdout, s.p, s.len);
}

static void print_json(const struct spim_quar_entry *e, int full)
{
    char ts[32];

    fmt_time(e->time_us, ts, sizeof(ts));
    printf("{\"id\":\"%llu\",\"time\":\"%s\",\"status\":\"%s\",\"score\":%.3f,"
           "\"spam_probability\":%.6f",
           (unsigned long long)e->id, ts, status_name(e->status), e->score, e->spam_probability);
    json_field("from", e->from);
    json_field("to", e->to);
    json_field("call_id", e->call_id);
    json_field("source", e->source);
    printf(",\"rules\":[");
    for (size_t i = 0, b = 0, first = 1; i <= e->rules.len; i++) {
        if (i == e->rules.len || e->rules.p[i] == ',') {
            if (i > b) {
                if (!first)
                    fputc(',', stdout);
                spim_json_str(stdout, e->rules.p + b, i - b);
                first = 0;
            }
            b = i + 1;
        }
    }
    fputc(']', stdout);
    json_field("reasons", e->reasons);
    json_field("text", e->text);
    if (full)
        json_field("raw", e->raw);
    printf("}\n");
}

struct list_ctx {
    int jsonl;
    unsigned long n;
};

static int list_one(const struct spim_quar_entry *e, void *ud)
{
    struct list_ctx *lc = ud;
    char ts[32];

    lc->n++;
    if (lc->jsonl) {
        print_json(e, 0);
        return 0;
    }
    fmt_time(e->time_us, ts, sizeof(ts));
    printf("%-20s  %-20llu  %-8s  %-28.*s  %-28.*s  %6.2f  %-20.*s  ", ts,
           (unsigned long long)e->id, status_name(e->status), (int)e->from.len, e->from.p,
           (int)e->to.len, e->to.p, e->score, (int)e->rules.len, e->rules.p);
    spim_print_excerpt(stdout, e->text.p, e->text.len, 60);
    fputc('\n', stdout);
    return 0;
}

static int parse_id(const char *s, uint64_t *id)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-')
        return -1;
    *id = v;
    return 0;
}

int spim_cmd_quarantine(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"format", required_argument, NULL, 'f'},
        {"raw", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL, *sub;
    int c, jsonl = 0, raw = 0, rc = 1, err;
    struct spim_store *st = NULL;

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
        case 'f':
            if (strcmp(optarg, "jsonl") == 0)
                jsonl = 1;
            else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, "spimfilter quarantine: --format: text or jsonl\n");
                return 2;
            }
            break;
        case 'r':
            raw = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    optind++; /* argv + 1 was parsed */
    if (db == NULL) {
        fprintf(stderr, "spimfilter quarantine: --db DIR is required\n");
        return 2;
    }
    if (strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0 && strcmp(sub, "delete") != 0) {
        fprintf(stderr, "spimfilter quarantine: unknown command '%s'\n", sub);
        usage(stderr);
        return 2;
    }
    err = spim_store_open(db, strcmp(sub, "delete") == 0 ? 0 : SPIM_STORE_RDONLY, 0, &st);
    if (err != 0) {
        fprintf(stderr, "spimfilter quarantine: %s: %s\n", db, spim_strerror(err));
        return 1;
    }
    if (strcmp(sub, "list") == 0) {
        struct list_ctx lc = {jsonl, 0};

        if (!jsonl)
            printf("%-20s  %-20s  %-8s  %-28s  %-28s  %6s  %-20s  %s\n", "TIME", "ID", "STATUS",
                   "FROM", "TO", "SCORE", "RULES", "TEXT");
        err = spim_quar_foreach(st, list_one, &lc);
        if (err != 0)
            fprintf(stderr, "spimfilter quarantine: %s\n", spim_strerror(err));
        else
            rc = 0;
    } else if (strcmp(sub, "show") == 0) {
        struct spim_quar_entry e;
        void *buf = NULL;
        uint64_t id;

        if (optind >= argc || parse_id(argv[optind], &id) != 0) {
            fprintf(stderr, "spimfilter quarantine show: give one numeric ID\n");
            goto out;
        }
        err = spim_quar_get(st, id, &e, &buf);
        if (err != 0) {
            fprintf(stderr, "spimfilter quarantine show: %s: %s\n", argv[optind],
                    spim_strerror(err));
            goto out;
        }
        if (raw) {
            fwrite(e.raw.p, 1, e.raw.len, stdout);
        } else if (jsonl) {
            print_json(&e, 1);
        } else {
            char ts[32];

            fmt_time(e.time_us, ts, sizeof(ts));
            printf("id:       %llu\nstatus:   %s\ntime:     %s\nfrom:     %.*s\nto:       %.*s\n"
                   "call-id:  %.*s\nsource:   %.*s\nscore:    %.2f\nbayes:    %.4f\n"
                   "rules:    %.*s\nreasons:  %.*s\n\n",
                   (unsigned long long)e.id, status_name(e.status), ts, (int)e.from.len, e.from.p,
                   (int)e.to.len, e.to.p, (int)e.call_id.len, e.call_id.p, (int)e.source.len,
                   e.source.p, e.score, e.spam_probability, (int)e.rules.len, e.rules.p,
                   (int)e.reasons.len, e.reasons.p);
            fwrite(e.text.p, 1, e.text.len, stdout);
            fputc('\n', stdout);
        }
        free(buf);
        rc = 0;
    } else {
        unsigned long done = 0;

        if (optind >= argc) {
            fprintf(stderr, "spimfilter quarantine delete: give one or more IDs\n");
            goto out;
        }
        rc = 0;
        for (int i = optind; i < argc; i++) {
            uint64_t id;

            if (parse_id(argv[i], &id) != 0) {
                fprintf(stderr, "spimfilter quarantine delete: '%s' is not an ID\n", argv[i]);
                rc = 1;
                continue;
            }
            err = spim_quar_delete(st, id);
            if (err != 0) {
                fprintf(stderr, "spimfilter quarantine delete: %s: %s\n", argv[i],
                        spim_strerror(err));
                rc = 1;
            } else {
                done++;
            }
        }
        printf("deleted %lu\n", done);
    }
out:
    spim_store_close(st);
    return rc;
}
