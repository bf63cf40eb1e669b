/*
 * metrics.c: the process-wide counters of metrics.h and their Prometheus
 * text. Every hook is a relaxed atomic add: the counters need no ordering
 * with anything else, a scrape only has to see each one eventually. A
 * rule table (hits, shadow hits) is open addressing over a fixed array; a slot is claimed by a
 * compare-and-swap and published with a release store once its name is
 * written, so readers never see a half-written name.
 */
#include "metrics.h"
#include "spim.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* clang-format off */
static const char *const methods[] = {
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "SUBSCRIBE",
    "NOTIFY", "PUBLISH", "INFO", "PRACK", "UPDATE", "REFER", "other",
};
/* clang-format on */
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

static const char *const verdicts[] = {"delivered", "tagged", "blocked"};
static const char *const kinds[] = {"spimfilter_messages_total", "spimfilter_invites_total"};

/* Upper bounds of the histogram buckets, in nanoseconds and as printed. */
static const uint64_t bucket_ns[SPIM_METRICS_BUCKETS] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000, 100000000,
};
static const char *const bucket_le[SPIM_METRICS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
};

enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_READY = 2 };

struct rule_slot {
    atomic_int state;
    char name[SPIM_METRICS_RULE_NAME];
    atomic_uint_fast64_t hits;
};

/* Counts by name: SPIM_METRICS_MAX_RULES slots, then "_other". */
struct rule_table {
    struct rule_slot slot[SPIM_METRICS_MAX_RULES];
    atomic_uint_fast64_t other;
};

static atomic_uint_fast64_t plain[SPIM_METRIC__COUNT];
static atomic_uint_fast64_t requests[NMETHODS];
static atomic_uint_fast64_t responses[6]; /* 1xx .. 6xx */
static atomic_uint_fast64_t verdict_n[2][3];
static atomic_uint_fast64_t buckets[SPIM_METRICS_BUCKETS + 1]; /* the last is +Inf */
static atomic_uint_fast64_t latency_sum_ns;
static atomic_uint_fast64_t quar_records, quar_bytes;
static struct rule_table rules, shadow, accounts;

static void add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void spim_metrics_inc(enum spim_metric m)
{
    if ((unsigned)m < SPIM_METRIC__COUNT)
        add(&plain[m], 1);
}

void spim_metrics_request(const char *method, size_t len)
{
    size_t i;

    for (i = 0; i + 1 < NMETHODS; i++)
        if (strlen(methods[i]) == len && strncasecmp(methods[i], method, len) == 0)
            break;
    add(&requests[i], 1);
}

void spim_metrics_response(int status)
{
    if (status >= 100 && status <= 699)
        add(&responses[status / 100 - 1], 1);
}

void spim_metrics_verdict(int kind, int verdict)
{
    if ((kind == 0 || kind == 1) && verdict >= 0 && verdict <= 2)
        add(&verdict_n[kind][verdict], 1);
}

void spim_metrics_latency(uint64_t ns)
{
    unsigned b = 0;

    while (b < SPIM_METRICS_BUCKETS && ns > bucket_ns[b])
        b++;
    add(&buckets[b], 1);
    add(&latency_sum_ns, ns);
}

void spim_metrics_set_quarantine(uint64_t records, uint64_t bytes)
{
    atomic_store_explicit(&quar_records, records, memory_order_relaxed);
    atomic_store_explicit(&quar_bytes, bytes, memory_order_relaxed);
}

/* Counts one hit of the rule name[0..n) (already cleaned, n > 0, short enough). */
static void rule_hit(struct rule_table *t, const char *name, size_t n)
{
    uint64_t h = spim_hash64(name, n, 0x3e7);

    for (unsigned probe = 0; probe < SPIM_METRICS_MAX_RULES; probe++) {
        struct rule_slot *s = &t->slot[(h + probe) % SPIM_METRICS_MAX_RULES];
        int st = atomic_load_explicit(&s->state, memory_order_acquire);

        if (st == SLOT_FREE) {
            int expect = SLOT_FREE;

            if (atomic_compare_exchange_strong(&s->state, &expect, SLOT_BUSY)) {
                memcpy(s->name, name, n);
                s->name[n] = '\0';
                atomic_store_explicit(&s->state, SLOT_READY, memory_order_release);
                add(&s->hits, 1);
                return;
            }
            st = expect;
        }
        /* Another thread is writing this slot's name: it is a few stores away. */
        for (unsigned spin = 0; st == SLOT_BUSY && spin < 1000000; spin++)
            st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st != SLOT_READY)
            break;
        if (strncmp(s->name, name, n) == 0 && s->name[n] == '\0') {
            add(&s->hits, 1);
            return;
        }
    }
    add(&t->other, 1);
}

/* Counts each item of a comma-separated list in t (see spim_metrics_rules). */
static void count_list(struct rule_table *t, const char *list)
{
    char name[SPIM_METRICS_RULE_NAME];
    const char *p = list;

    if (p == NULL)
        return;
    /* At most one item per byte of the list: the loop is bounded by its length. */
    while (*p != '\0') {
        size_t n = 0;
        int cut = 0;

        for (; *p != '\0' && *p != ','; p++) {
            char ch = *p;

            if (ch == ':')
                cut = 1;
            if (cut || n + 1 >= sizeof(name))
                continue;
            if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
                ch = '_';
            name[n++] = ch;
        }
        if (n > 0)
            rule_hit(t, name, n);
        if (*p == ',')
            p++;
    }
}

void spim_metrics_rules(const char *list)
{
    count_list(&rules, list);
}

void spim_metrics_shadow(const char *list)
{
    count_list(&shadow, list);
}

void spim_metrics_account(const char *account)
{
    char name[SPIM_METRICS_RULE_NAME];
    size_t n = 0;

    for (const char *p = account; p != NULL && *p != '\0' && n + 1 < sizeof(name); p++) {
        char ch = *p;

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-' || ch == '@' || ch == '+'))
            ch = '_';
        name[n++] = ch;
    }
    if (n > 0)
        rule_hit(&accounts, name, n);
}

static void header(struct spim_out *o, const char *name, const char *type, const char *help)
{
    spim_put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_labelled(struct spim_out *o, struct rule_table *t, const char *name,
                            const char *label, const char *help)
{
    header(o, name, "counter", help);
    for (unsigned i = 0; i < SPIM_METRICS_MAX_RULES; i++)
        if (atomic_load_explicit(&t->slot[i].state, memory_order_acquire) == SLOT_READY)
            spim_put(o, "%s{%s=\"%s\"} %llu\n", name, label, t->slot[i].name,
                     (unsigned long long)get(&t->slot[i].hits));
    spim_put(o, "%s{%s=\"_other\"} %llu\n", name, label, (unsigned long long)get(&t->other));
}

static void render_table(struct spim_out *o, struct rule_table *t, const char *name,
                         const char *help)
{
    render_labelled(o, t, name, "rule", help);
}

static void reset_table(struct rule_table *t)
{
    for (unsigned i = 0; i < SPIM_METRICS_MAX_RULES; i++) {
        atomic_store(&t->slot[i].hits, 0);
        atomic_store(&t->slot[i].state, SLOT_FREE);
    }
    atomic_store(&t->other, 0);
}

size_t spim_metrics_render(char *buf, size_t cap)
{
    struct spim_out o = {buf, cap, 0};
    uint64_t cum = 0, sum_ns;

    if (cap > 0)
        buf[0] = '\0';
    header(&o, "spimfilter_build_info", "gauge", "the version of the running filter");
    spim_put(&o, "spimfilter_build_info{version=\"%s\"} 1\n", SPIM_VERSION);
#define XX(id, name, help)                                                                         \
    header(&o, name, "counter", help);                                                             \
    spim_put(&o, "%s %llu\n", name, (unsigned long long)get(&plain[SPIM_METRIC_##id]));
    SPIM_METRICS_MAP(XX)
#undef XX
    header(&o, "spimfilter_requests_total", "counter",
           "SIP requests taken from trusted sources that parsed, by method");
    for (size_t i = 0; i < NMETHODS; i++)
        spim_put(&o, "spimfilter_requests_total{method=\"%s\"} %llu\n", methods[i],
                 (unsigned long long)get(&requests[i]));
    header(&o, "spimfilter_responses_total", "counter",
           "SIP responses received, by class (relayed on when the top Via is ours)");
    for (int i = 0; i < 6; i++)
        spim_put(&o, "spimfilter_responses_total{class=\"%dxx\"} %llu\n", i + 1,
                 (unsigned long long)get(&responses[i]));
    for (int k = 0; k < 2; k++) {
        header(&o, kinds[k], "counter",
               k == 0 ? "MESSAGE requests judged, by verdict"
                      : "INVITE requests offering files judged, by verdict");
        for (int v = 0; v < 3; v++)
            spim_put(&o, "%s{verdict=\"%s\"} %llu\n", kinds[k], verdicts[v],
                     (unsigned long long)get(&verdict_n[k][v]));
    }
    render_table(&o, &rules, "spimfilter_rule_hits_total",
                 "matches of each rule and policy entry kind in judged requests");
    render_table(&o, &shadow, "spimfilter_shadow_hits_total",
                 "matches of each shadow rule and input (evaluated, not enforced)");
    render_labelled(&o, &accounts, "spimfilter_outbound_flagged_total", "account",
                    "MESSAGEs of local accounts (local_domains) that tripped fan-out or bulk");
    header(&o, "spimfilter_quarantine_records", "gauge", "records held in the quarantine");
    spim_put(&o, "spimfilter_quarantine_records %llu\n", (unsigned long long)get(&quar_records));
    header(&o, "spimfilter_quarantine_bytes", "gauge",
           "bytes of the quarantine's store pages (what quarantine_max_mb counts)");
    spim_put(&o, "spimfilter_quarantine_bytes %llu\n", (unsigned long long)get(&quar_bytes));
    header(&o, "spimfilter_verdict_seconds", "histogram",
           "time to judge one request: policy, classification, quarantine write");
    for (unsigned b = 0; b <= SPIM_METRICS_BUCKETS; b++) {
        cum += get(&buckets[b]);
        spim_put(&o, "spimfilter_verdict_seconds_bucket{le=\"%s\"} %llu\n",
                 b < SPIM_METRICS_BUCKETS ? bucket_le[b] : "+Inf", (unsigned long long)cum);
    }
    sum_ns = get(&latency_sum_ns);
    spim_put(&o, "spimfilter_verdict_seconds_sum %llu.%09llu\n",
             (unsigned long long)(sum_ns / 1000000000u),
             (unsigned long long)(sum_ns % 1000000000u));
    spim_put(&o, "spimfilter_verdict_seconds_count %llu\n", (unsigned long long)cum);
    return o.len;
}

void spim_metrics_reset(void)
{
    for (unsigned i = 0; i < SPIM_METRIC__COUNT; i++)
        atomic_store(&plain[i], 0);
    for (size_t i = 0; i < NMETHODS; i++)
        atomic_store(&requests[i], 0);
    for (int i = 0; i < 6; i++)
        atomic_store(&responses[i], 0);
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++)
            atomic_store(&verdict_n[k][v], 0);
    for (unsigned b = 0; b <= SPIM_METRICS_BUCKETS; b++)
        atomic_store(&buckets[b], 0);
    atomic_store(&latency_sum_ns, 0);
    atomic_store(&quar_records, 0);
    atomic_store(&quar_bytes, 0);
    reset_table(&rules);
    reset_table(&shadow);
    reset_table(&accounts);
}
