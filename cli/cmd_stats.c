/*
 * cmd_stats.c: `spimfilter stats`: scrapes the metrics endpoint of a
 * running `serve` (metrics_listen) and prints it, as a short summary or,
 * with --prometheus, as served. It reads nothing else: what it shows is
 * what a Prometheus server would see.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter stats [--config FILE] [--metrics HOST:PORT] [options]\n"
               "\n"
               "  --config FILE        the serve config: its metrics_listen is the endpoint\n"
               "  --metrics HOST:PORT  the endpoint (default metrics_listen, 127.0.0.1:9464)\n"
               "  --prometheus         print the Prometheus text as served\n"
               "  --timeout MS         how long to wait for serve (default 5000)\n"
               "\n"
               "Exits 1 when the endpoint cannot be reached (serve not running, or\n"
               "metrics_listen empty or elsewhere).\n");
}

/* One sample line: "name{label="value",...} 12.5". Returns 0 when it is one. */
static int split_sample(char *line, char **name, char **label, double *value)
{
    char *sp = strrchr(line, ' '), *br, *end;

    if (line[0] == '#' || line[0] == '\0' || sp == NULL)
        return -1;
    *sp = '\0';
    *value = strtod(sp + 1, &end);
    if (end == sp + 1)
        return -1;
    *name = line;
    *label = NULL;
    br = strchr(line, '{');
    if (br != NULL) {
        char *q1 = strchr(br, '"'), *q2 = q1 ? strchr(q1 + 1, '"') : NULL;

        *br = '\0';
        if (q1 != NULL && q2 != NULL) {
            *q2 = '\0';
            *label = q1 + 1;
        }
    }
    return 0;
}

/* The histogram, kept to print a line of percentiles. */
struct hist {
    double le[32], cum[32];
    unsigned n;
    double sum, count;
};

static double hist_quantile(const struct hist *h, double q)
{
    for (unsigned i = 0; i < h->n; i++)
        if (h->cum[i] >= q * h->count)
            return h->le[i];
    return -1;
}

static void print_hist(const struct hist *h)
{
    double p50 = hist_quantile(h, 0.5), p99 = hist_quantile(h, 0.99);

    printf("%-18s count %.0f", "verdict time", h->count);
    if (h->count > 0) {
        printf(", mean %.3f ms", h->sum / h->count * 1e3);
        if (p50 >= 0)
            printf(", 50%% <= %g ms", p50 * 1e3);
        else
            printf(", 50%% > %g ms", h->le[h->n - 1] * 1e3);
        if (p99 >= 0)
            printf(", 99%% <= %g ms", p99 * 1e3);
        else
            printf(", 99%% > %g ms", h->le[h->n - 1] * 1e3);
    }
    printf("\n");
}

/* Hits and shadow hits of one rule name, for the per-rule table. */
struct rule_row {
    char name[64];
    double hits, shadow;
};

/* Both rule tables of metrics.c (256 names and "_other" each) fit. */
#define RULE_ROWS 600

struct rule_rows {
    struct rule_row row[RULE_ROWS];
    unsigned n;
};

/* Adds v to the hits (or shadow hits) of name; names past RULE_ROWS are dropped. */
static void rule_add(struct rule_rows *rr, const char *name, double v, int is_shadow)
{
    unsigned i;

    for (i = 0; i < rr->n; i++)
        if (strcmp(rr->row[i].name, name) == 0)
            break;
    if (i == rr->n) {
        if (rr->n >= RULE_ROWS)
            return;
        snprintf(rr->row[i].name, sizeof(rr->row[i].name), "%s", name);
        rr->row[i].hits = rr->row[i].shadow = 0;
        rr->n++;
    }
    if (is_shadow)
        rr->row[i].shadow += v;
    else
        rr->row[i].hits += v;
}

/* Most hits first, then most shadow hits, then by name. */
static int by_hits(const void *a, const void *b)
{
    const struct rule_row *x = a, *y = b;

    if (x->hits != y->hits)
        return x->hits > y->hits ? -1 : 1;
    if (x->shadow != y->shadow)
        return x->shadow > y->shadow ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void print_rules(struct rule_rows *rr)
{
    unsigned shown = 0;

    qsort(rr->row, rr->n, sizeof(rr->row[0]), by_hits);
    for (unsigned i = 0; i < rr->n; i++) {
        if (rr->row[i].hits == 0 && rr->row[i].shadow == 0)
            continue;
        if (shown++ == 0)
            printf("%-34s %10s %10s\n", "rules", "hits", "shadow");
        printf("  %-32s %10.0f %10.0f\n", rr->row[i].name, rr->row[i].hits, rr->row[i].shadow);
    }
    if (shown == 0)
        printf("%-18s none matched\n", "rules");
}

/*
 * The summary: one line per metric, labelled samples on the same line
 * (only those not zero, so the line says what happened), then a table of
 * the rules with their hits and shadow hits, most hits first, and the
 * histogram as count, mean and bucket bounds of the median and the 99th
 * percentile.
 */
static void summary(char *text, const char *where)
{
    char row[64] = "", *save = NULL, *line;
    struct hist h = {{0}, {0}, 0, 0, 0};
    static struct rule_rows rr; /* 50 KB: off the stack */
    int shown = 0, any_hist = 0;

    rr.n = 0;

    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *name, *label, short_name[64];
        double v;
        size_t n;

        if (split_sample(line, &name, &label, &v) != 0)
            continue;
        if (strcmp(name, "spimfilter_build_info") == 0) {
            printf("spimfilter %s, metrics of %s\n", label ? label : "?", where);
            continue;
        }
        if (label != NULL && (strcmp(name, "spimfilter_rule_hits_total") == 0 ||
                              strcmp(name, "spimfilter_shadow_hits_total") == 0)) {
            rule_add(&rr, label, v, strcmp(name, "spimfilter_shadow_hits_total") == 0);
            continue;
        }
        if (strncmp(name, "spimfilter_verdict_seconds", 26) == 0) {
            any_hist = 1;
            if (strcmp(name + 26, "_bucket") == 0 && label != NULL && h.n < 32 &&
                strcmp(label, "+Inf") != 0) {
                h.le[h.n] = strtod(label, NULL);
                h.cum[h.n++] = v;
            } else if (strcmp(name + 26, "_sum") == 0) {
                h.sum = v;
            } else if (strcmp(name + 26, "_count") == 0) {
                h.count = v;
            }
            continue;
        }
        snprintf(short_name, sizeof(short_name), "%s",
                 strncmp(name, "spimfilter_", 11) == 0 ? name + 11 : name);
        n = strlen(short_name);
        if (n > 6 && strcmp(short_name + n - 6, "_total") == 0)
            short_name[n - 6] = '\0';
        for (char *p = short_name; *p; p++)
            if (*p == '_')
                *p = ' ';
        if (strcmp(short_name, row) != 0) {
            if (row[0] != '\0' && !shown)
                printf(" 0");
            if (row[0] != '\0')
                printf("\n");
            snprintf(row, sizeof(row), "%s", short_name);
            printf("%-18s", row);
            shown = 0;
        }
        if (label == NULL) {
            printf(" %.0f", v);
            shown = 1;
        } else if (v != 0) {
            printf(" %s %.0f", label, v);
            shown = 1;
        }
    }
    if (row[0] != '\0')
        printf("%s\n", shown ? "" : " 0");
    print_rules(&rr);
    if (any_hist)
        print_hist(&h);
}

int spim_cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"metrics", required_argument, NULL, 'M'},
        {"prometheus", no_argument, NULL, 'p'},   {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    struct spim_config cfg;
    const char *config = NULL, *metrics = NULL;
    char err[512], *body = NULL, *end;
    size_t len = 0;
    unsigned long timeout = 5000;
    int c, raw = 0, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'M':
            metrics = optarg;
            break;
        case 'p':
            raw = 1;
            break;
        case 't':
            timeout = strtoul(optarg, &end, 10);
            if (*end != '\0' || timeout == 0 || timeout > 600000) {
                fprintf(stderr, "spimfilter stats: --timeout: expected 1..600000 ms\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spimfilter stats: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    spim_config_defaults(&cfg);
    if (config != NULL && spim_config_load(config, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter stats: %s\n", err);
        return 1;
    }
    if (metrics == NULL) {
        if (cfg.metrics_listen[0] == '\0') {
            fprintf(stderr,
                    "spimfilter stats: metrics are off in %s (metrics_listen is empty); "
                    "give --metrics HOST:PORT\n",
                    config ? config : "the config");
            return 1;
        }
        metrics = cfg.metrics_listen;
    }
    rc = spim_metrics_fetch(metrics, (unsigned)timeout, &body, &len, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr,
                "spimfilter stats: cannot reach the metrics endpoint of serve at %s: %s "
                "(is serve running, with metrics_listen = %s?)\n",
                metrics, err, metrics);
        return 1;
    }
    if (raw)
        fwrite(body, 1, len, stdout);
    else
        summary(body, metrics);
    free(body);
    return 0;
}
