/*
 * metrics.h: the counters of a running filter, for the Prometheus endpoint.
 *
 * One process-wide set of counters, so that a hook in the hot path is one
 * call with no handle to carry: relaxed atomic adds, no lock, no
 * allocation. Rule hits are counted by name in a fixed table of
 * SPIM_METRICS_MAX_RULES slots filled on first use (a name is never
 * removed); names past the table count under rule="_other", so an
 * attacker who makes new names appear cannot grow memory or the output.
 * Shadow hits (rules and inputs evaluated but not enforced) have a table of
 * their own of the same size and rules.
 * The latency histogram has fixed buckets in seconds (SPIM_METRICS_BUCKETS).
 *
 * spim_metrics_render writes everything in the Prometheus text exposition
 * format (version 0.0.4); the HTTP side lives in cli/metrics_http.c.
 */
#ifndef SPIM_METRICS_H
#define SPIM_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* clang-format off */
/* Plain counters: XX(ID, metric name, help text). */
#define SPIM_METRICS_MAP(XX)                                                                  \
    XX(PARSE_ERRORS, "spimfilter_parse_errors_total", "SIP messages that did not parse")      \
    XX(UNTRUSTED,    "spimfilter_untrusted_total",                                            \
       "requests refused with 403 because their source is not in trusted_sources")            \
    XX(STORE_ERRORS, "spimfilter_store_errors_total",                                         \
       "store reads for a verdict and quarantine writes that failed")                         \
    XX(JUDGE_ERRORS, "spimfilter_verdict_errors_total",                                       \
       "verdicts that could not be made (answered 503, or delivered with on_error = deliver)")  \
    XX(SHADOW_WOULD_BLOCK, "spimfilter_shadow_would_block_total",                             \
       "messages that shadow inputs would have blocked")
/* clang-format on */

enum spim_metric {
#define XX(id, name, help) SPIM_METRIC_##id,
    SPIM_METRICS_MAP(XX)
#undef XX
        SPIM_METRIC__COUNT
};

/* What the judge decided, the label of spimfilter_messages_total. */
enum spim_metric_verdict {
    SPIM_METRIC_DELIVERED = 0,
    SPIM_METRIC_TAGGED = 1,
    SPIM_METRIC_BLOCKED = 2,
};

#define SPIM_METRICS_MAX_RULES 256 /* distinct rule names counted; more go to "_other" */
#define SPIM_METRICS_RULE_NAME 48  /* bytes of a rule name kept, NUL included */
#define SPIM_METRICS_BUCKETS 10    /* upper bounds 0.0001 .. 0.1 s, then +Inf */

/* Adds one to a plain counter. */
void spim_metrics_inc(enum spim_metric m);

/* One SIP request by method (a fixed list, compared ignoring case; else "other"). */
void spim_metrics_request(const char *method, size_t len);

/* One SIP response relayed by the filter, counted by class (1xx .. 6xx). */
void spim_metrics_response(int status);

/* One verdict: kind 0 for a MESSAGE, 1 for an INVITE offering files (filter.h). */
void spim_metrics_verdict(int kind, int verdict);

/*
 * One hit per name in a comma-separated list of matched rules and policy
 * entries ("PRIZE_CLAIM,block:net:10.0.0.0/8,fanout:21>20"). Each item is
 * counted under the part before its first ':' ("block", "fanout"), so values
 * do not become labels; characters outside [A-Za-z0-9_.-] become '_'.
 */
void spim_metrics_rules(const char *list);

/*
 * The same for the shadow inputs that matched (rules marked shadow, shadow
 * Bayes, ...): spimfilter_shadow_hits_total{rule="..."}, same name rules,
 * a table of its own.
 */
void spim_metrics_shadow(const char *list);

/*
 * One MESSAGE of a local account (local_domains) that tripped fan-out or
 * bulk: counted under account="user@host" in the same kind of bounded table
 * (characters outside [A-Za-z0-9_.@+-] become '_'; past the table, "_other").
 */
void spim_metrics_account(const char *account);

/* The time one verdict took, in nanoseconds (spim_mono_ns differences). */
void spim_metrics_latency(uint64_t ns);

/* The quarantine's size, a gauge set by whoever can read the store. */
void spim_metrics_set_quarantine(uint64_t records, uint64_t bytes);

/*
 * Writes every metric in the Prometheus text format into buf[0..cap) and
 * NUL-terminates it when cap > 0. Returns the length the whole text needs
 * (without the NUL), as snprintf does: call again with more room when it is
 * >= cap. The text is at most a few dozen KiB (the rule table is bounded).
 */
size_t spim_metrics_render(char *buf, size_t cap);

/* Sets every counter back to 0 and empties the rule tables (tests only). */
void spim_metrics_reset(void);

#endif
