/*
 * cmd_quarantine.c: `spimfilter quarantine`: the operator's review of what
 * the filter blocked.
 *
 *   list     filter, page and print records (a table, or JSON lines)
 *   show     the verdict and text of records; --raw the SIP bytes
 *   release  send a record to the next hop again as a new client
 *            transaction (filter/client.c); released only on a 2xx
 *   confirm  train as spam and mark deleted
 *   delete   mark deleted (the bytes go at the next purge --deleted/expiry)
 *   purge    remove expired (quarantine_days) and, --deleted, deleted ones
 *   log      the audit log of review actions
 *   stats    records per status and the size against quarantine_max_mb
 *
 * The actions take several IDs or the filters of list, print a count, take
 * --dry-run, and write one audit line per record in the same transaction as
 * the change. The store may be in use by a running serve: LMDB lets both
 * work at once. The store is never created here: a missing one is an error.
 * Exit status: 0 all done, 1 something failed (said on stderr), 2 usage.
 */
#include "cli.h"
#include "filter.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PROG "spimfilter quarantine"
/* The bound on records one command selects through filters. */
#define SELECT_MAX 1000000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spimfilter quarantine COMMAND [--db DIR | --config FILE] [options] [ID...]\n"
            "\n"
            "commands:\n"
            "  list               records, newest first (a table, or --format jsonl)\n"
            "  show ID...         verdict, reasons and text; --raw: the SIP request byte for byte\n"
            "  release ID...      send again to the next hop; released only on a 2xx answer\n"
            "                     --learn also trains it as ham (undoing a spam training)\n"
            "  confirm ID...      train as spam and mark deleted\n"
            "  delete ID...       mark deleted (removed at purge --deleted or expiry)\n"
            "  purge              remove records older than quarantine_days now\n"
            "                     [--days N] [--deleted: also every deleted record]\n"
            "  log                the audit log of review actions, newest first\n"
            "  stats              records per status, size against quarantine_max_mb\n"
            "\n"
            "filters (list; release, confirm and delete instead of IDs, held records unless\n"
            "--status says otherwise):\n"
            "  --from TEXT --to TEXT     substring of From / To (any case)\n"
            "  --since TIME --until TIME 2024-05-01, 2024-05-01T13:00:00Z, @EPOCH, or 30m, 2h, "
            "7d ago\n"
            "  --rule NAME               a rule that matched\n"
            "  --min-score N             score at least N\n"
            "  --status S                held, released, deleted or any\n"
            "  --limit N --offset N      paging (list, log)\n"
            "  --all                     every record the other filters leave (for actions)\n"
            "\n"
            "options:\n"
            "  --db DIR                  the store (or db= of --config)\n"
            "  --config FILE             the serve config: db, next_hop, quarantine_days\n"
            "  --next-hop HOST:PORT      where release sends (default next_hop of the config)\n"
            "  --timeout S               release: wait at most S seconds (timer F, 32 s)\n"
            "  --format text|jsonl       output of list, show and log\n"
            "  --dry-run                 say what would be done, change nothing\n");
}

static const char *status_name(uint32_t s)
{
    return s == SPIM_QUAR_HELD       ? "held"
           : s == SPIM_QUAR_RELEASED ? "released"
           : s == SPIM_QUAR_DELETED  ? "deleted"
                                     : "unknown";
}

static const char *learned_name(uint32_t l)
{
    return l == SPIM_QUAR_LEARNED_SPAM ? "spam" : l == SPIM_QUAR_LEARNED_HAM ? "ham" : "none";
}

static void fmt_time(int64_t us, char *out, size_t cap)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian), without timegm. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/*
 * A time for --since/--until, in microseconds: "YYYY-MM-DD[THH:MM[:SS]][Z]"
 * (UTC), "@EPOCH" seconds, or "N[smhd]" that long ago.
 */
static int parse_time(const char *s, int64_t *out)
{
    char *end;
    size_t n = strlen(s);

    if (s[0] == '@') {
        long long v;

        errno = 0;
        v = strtoll(s + 1, &end, 10);
        if (errno || end == s + 1 || *end != '\0')
            return -1;
        *out = (int64_t)v * 1000000;
        return 0;
    }
    if (n >= 2 && strchr("smhd", s[n - 1]) != NULL && s[0] >= '0' && s[0] <= '9') {
        double v, mul = s[n - 1] == 's' ? 1 : s[n - 1] == 'm' ? 60 : s[n - 1] == 'h' ? 3600 : 86400;

        errno = 0;
        v = strtod(s, &end);
        if (errno || end != s + n - 1 || v < 0 || v > 1e6)
            return -1;
        *out = spim_now_us() - (int64_t)(v * mul * 1e6);
        return 0;
    }
    {
        int y, mo, d, h = 0, mi = 0, se = 0, used = 0;

        if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
            return -1;
        if (s[10] == 'T' || s[10] == ' ') {
            int u2 = 0;

            if (sscanf(s + 11, "%2d:%2d%n", &h, &mi, &u2) != 2)
                return -1;
            used = 11 + u2;
            if (s[used] == ':') {
                if (sscanf(s + used + 1, "%2d%n", &se, &u2) != 1)
                    return -1;
                used += 1 + u2;
            }
        }
        if (s[used] == 'Z')
            used++;
        if (s[used] != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
            return -1;
        *out = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400) + h * 3600 + mi * 60 + se) *
               1000000;
        return 0;
    }
}

static int parse_id(const char *s, uint64_t *id)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-' || v == 0)
        return -1;
    *id = v;
    return 0;
}

static int parse_ulong(const char *s, unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

/* --- Options and filters ----------------------------------------------------- */

struct filters {
    const char *from, *to, *rule;
    int64_t since, until; /* INT64_MIN / INT64_MAX when not given */
    double min_score;
    int has_min_score;
    int status; /* -1: any */
    int status_given;
    unsigned long limit, offset; /* limit 0: no limit */
    int any;                     /* a filter (or --all) was given */
};

struct qopts {
    const char *sub;
    const char *db, *config, *next_hop;
    int jsonl, raw, learn, dry_run, all, deleted;
    double timeout_s, days;
    int has_days;
    struct filters f;
    struct spim_config cfg;
    char user[128];
};

static int slice_icontains(struct spim_slice hay, const char *needle)
{
    size_t n = strlen(needle);

    if (n == 0)
        return 1;
    for (size_t i = 0; i + n <= hay.len; i++)
        if (strncasecmp(hay.p + i, needle, n) == 0)
            return 1;
    return 0;
}

static int has_rule(struct spim_slice rules, const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0, b = 0; i <= rules.len; i++) {
        if (i == rules.len || rules.p[i] == ',') {
            if (i - b == n && memcmp(rules.p + b, name, n) == 0)
                return 1;
            b = i + 1;
        }
    }
    return 0;
}

static int matches(const struct filters *f, const struct spim_quar_entry *e)
{
    if (f->status >= 0 && e->status != (uint32_t)f->status)
        return 0;
    if (e->time_us < f->since || e->time_us >= f->until)
        return 0;
    if (f->has_min_score && !(e->score >= f->min_score))
        return 0;
    if (f->from && !slice_icontains(e->from, f->from))
        return 0;
    if (f->to && !slice_icontains(e->to, f->to))
        return 0;
    if (f->rule && !has_rule(e->rules, f->rule))
        return 0;
    return 1;
}

/* Who runs the command, for the audit log: the login of the real uid (and sudo's caller). */
static void who(char *out, size_t cap)
{
    struct passwd pw, *res = NULL;
    char buf[1024];
    const char *sudo = getenv("SUDO_USER");

    if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
        snprintf(out, cap, "%s", res->pw_name);
    else
        snprintf(out, cap, "uid %u", (unsigned)getuid());
    if (sudo != NULL && sudo[0] != '\0' && getuid() == 0) {
        size_t l = strlen(out);

        snprintf(out + l, cap - l, " (sudo by %s)", sudo);
    }
}

/* --- Output -------------------------------------------------------------------- */

static void json_field(const char *name, struct spim_slice s)
{
    printf(",\"%s\":", name);
    spim_json_str(stdout, s.p, s.len);
}

static void print_json(const struct spim_quar_entry *e, int full)
{
    char ts[32];

    fmt_time(e->time_us, ts, sizeof(ts));
    printf("{\"id\":\"%llu\",\"time\":\"%s\",\"status\":\"%s\",\"learned\":\"%s\","
           "\"score\":%.3f,\"spam_probability\":%.6f",
           (unsigned long long)e->id, ts, status_name(e->status), learned_name(e->learned),
           e->score, e->spam_probability);
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

/*
 * A column of w characters: URIs and rule names are ASCII, so any other
 * byte, and any control (a From may carry a terminal's escapes), shows as
 * '?'; a longer value is cut and ends in an ellipsis.
 */
static void col(struct spim_slice s, int w)
{
    size_t shown = s.len > (size_t)w ? (size_t)w - 1 : s.len;

    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s.p[i];

        fputc(c < 0x20 || c >= 0x7f ? '?' : c, stdout);
    }
    if (shown < s.len)
        fputs("\xE2\x80\xA6", stdout); /* U+2026 */
    printf("%*s  ", w - (int)shown - (shown < s.len), "");
}

static void print_row_header(void)
{
    printf("%-20s  %-6s  %-8s  %-28s  %-28s  %6s  %-24s  %s\n", "TIME", "ID", "STATUS", "FROM",
           "TO", "SCORE", "RULES", "TEXT");
}

static void print_row(const struct spim_quar_entry *e)
{
    char ts[32];

    fmt_time(e->time_us, ts, sizeof(ts));
    printf("%-20s  %-6llu  %-8s  ", ts, (unsigned long long)e->id, status_name(e->status));
    col(spim_sip_uri_of(e->from), 28); /* the address: no display name, no tag */
    col(spim_sip_uri_of(e->to), 28);
    printf("%6.2f  ", e->score);
    col(e->rules, 24);
    spim_print_excerpt(stdout, e->text.p, e->text.len, 60);
    fputc('\n', stdout);
}

/*
 * "name:     value\n", the value as spim_print_text shows it (it came from
 * the network); lines: keep its newlines (the reasons are several lines).
 */
static void show_field(const char *name, struct spim_slice v, int lines)
{
    printf("%-10s", name);
    spim_print_text(stdout, v.p, v.len, SIZE_MAX, lines);
    fputc('\n', stdout);
}

/* The text, each line indented: no line of it can pass for one of the fields above. */
static void show_text(struct spim_slice v)
{
    size_t b = 0;

    while (b <= v.len) {
        const char *nl = v.len > b ? memchr(v.p + b, '\n', v.len - b) : NULL;
        size_t e = nl != NULL ? (size_t)(nl - v.p) : v.len;

        fputs("    ", stdout);
        spim_print_text(stdout, v.p + b, e - b, SIZE_MAX, 1);
        fputc('\n', stdout);
        b = e + 1;
    }
}

static void print_show(const struct spim_quar_entry *e)
{
    char ts[32];

    fmt_time(e->time_us, ts, sizeof(ts));
    printf("id:       %llu\nstatus:   %s\nlearned:  %s\ntime:     %s\n", (unsigned long long)e->id,
           status_name(e->status), learned_name(e->learned), ts);
    show_field("from:", e->from, 0);
    show_field("to:", e->to, 0);
    show_field("call-id:", e->call_id, 0);
    show_field("source:", e->source, 0);
    printf("score:    %.2f\nbayes:    %.4f\n", e->score, e->spam_probability);
    show_field("rules:", e->rules, 0);
    show_field("reasons:", e->reasons, 1);
    printf("size:     %zu bytes of SIP\ntext:\n", e->raw.len);
    /* the text as a person reads it; --raw and --format jsonl give its exact bytes */
    show_text(e->text);
}

/* --- Selection: IDs, or the records the filters match ----------------------------- */

struct sel {
    uint64_t *ids;
    size_t n, cap;
    unsigned long matched; /* before paging */
    const struct filters *f;
    int err;
};

static int sel_cb(const struct spim_quar_entry *e, void *ud)
{
    struct sel *s = ud;

    if (!matches(s->f, e))
        return 0;
    s->matched++;
    if (s->matched <= s->f->offset)
        return 0;
    if (s->f->limit && s->n >= s->f->limit)
        return 0; /* go on counting matches */
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uint64_t *ids = cap > SELECT_MAX ? NULL : realloc(s->ids, cap * sizeof(*ids));

        if (ids == NULL) {
            s->err = SPIM_ENOMEM;
            return 1;
        }
        s->ids = ids;
        s->cap = cap;
    }
    s->ids[s->n++] = e->id;
    return 0;
}

static int select_ids(struct spim_store *st, const struct filters *f, struct sel *s)
{
    int rc;

    memset(s, 0, sizeof(*s));
    s->f = f;
    rc = spim_quar_foreach(st, sel_cb, s);
    return rc != 0 ? rc : s->err;
}

/* --- Training ------------------------------------------------------------------ */

/*
 * Trains text as now_spam (1 spam, 0 ham), undoing what `was` says it was
 * trained as before, in one batch: the path of `spimfilter train`.
 */
static int retrain(struct spim_store *st, struct spim_slice text, uint32_t was, int now_spam)
{
    struct spim_scan *scan = NULL;
    struct spim_store_batch *b = NULL;
    struct spim_token *toks = malloc(SPIM_TOK_MAX * sizeof(*toks));
    size_t n;
    int rc = SPIM_ENOMEM;

    if (toks == NULL || spim_scan_new(NULL, &scan) != 0)
        goto out;
    if ((rc = spim_store_batch_new(st, &b)) != 0)
        goto out;
    n = spim_scan_tokens(scan, text.p, text.len, NULL, toks, SPIM_TOK_MAX);
    if (was == SPIM_QUAR_LEARNED_SPAM && !now_spam)
        rc = spim_store_batch_add(b, toks, n, 1, -1);
    else if (was == SPIM_QUAR_LEARNED_HAM && now_spam)
        rc = spim_store_batch_add(b, toks, n, 0, -1);
    else
        rc = 0;
    if (rc == 0)
        rc = spim_store_batch_add(b, toks, n, now_spam, 1);
    if (rc == 0) {
        rc = spim_store_batch_commit(b);
        b = NULL;
    }
out:
    spim_store_batch_free(b);
    spim_scan_free(scan);
    free(toks);
    return rc;
}

/* --- Actions -------------------------------------------------------------------- */

static int audit_mark(struct spim_store *st, const struct qopts *o, uint64_t id, uint32_t status,
                      uint32_t learned, const char *action, const char *detail)
{
    struct spim_quar_audit a = {
        .action = {action, strlen(action)},
        .user = {o->user, strlen(o->user)},
        .detail = {detail, strlen(detail)},
    };

    return spim_quar_mark(st, id, status, learned, &a);
}

static void audit_only(struct spim_store *st, const struct qopts *o, uint64_t id,
                       const char *action, const char *detail)
{
    struct spim_quar_audit a = {
        .quar_id = id,
        .action = {action, strlen(action)},
        .user = {o->user, strlen(o->user)},
        .detail = {detail, strlen(detail)},
    };
    int rc = spim_quar_audit_add(st, &a);

    if (rc != 0)
        fprintf(stderr, "%s: audit log: %s\n", PROG, spim_strerror(rc));
}

/* Release one record; 0 when it was delivered (or would be, dry). */
static int do_release(struct spim_store *st, const struct qopts *o,
                      const struct spim_client_opts *co, const struct spim_quar_entry *e)
{
    struct spim_client_result res;
    char err[256], detail[384];
    uint32_t learned = o->learn ? SPIM_QUAR_LEARNED_HAM : e->learned;
    int rc;

    if (e->status == SPIM_QUAR_RELEASED) {
        fprintf(stderr, "%s release: %llu: already released, not sent again\n", PROG,
                (unsigned long long)e->id);
        return -1;
    }
    if (o->dry_run) {
        struct spim_slice from = spim_sip_uri_of(e->from), to = spim_sip_uri_of(e->to);

        printf("would release %llu (", (unsigned long long)e->id);
        spim_print_text(stdout, from.p, from.len, SIZE_MAX, 0);
        fputs(" -> ", stdout);
        spim_print_text(stdout, to.p, to.len, SIZE_MAX, 0);
        printf(") to %s:%u%s\n", co->host, co->port, o->learn ? " and learn it as ham" : "");
        return 0;
    }
    rc = spim_client_request(e->raw.p, e->raw.len, co, &res, err, sizeof(err));
    if (rc == 0 && (res.status < 200 || res.status > 299)) {
        snprintf(err, sizeof(err), "%s:%u answered %d %s", co->host, co->port, res.status,
                 res.reason);
        rc = SPIM_ENET;
    }
    if (rc != 0) {
        fprintf(stderr, "%s release: %llu: not released, still %s: %s\n", PROG,
                (unsigned long long)e->id, status_name(e->status), err);
        snprintf(detail, sizeof(detail), "failed: %s", err);
        audit_only(st, o, e->id, "release", detail);
        return -1;
    }
    /* Delivered: mark it first, so that a failure below can never cause a second delivery. */
    snprintf(detail, sizeof(detail), "%d %s from %s:%u in %llu ms, %u transmission%s%s", res.status,
             res.reason, co->host, co->port, (unsigned long long)res.elapsed_ms, res.sent,
             res.sent == 1 ? "" : "s",
             !o->learn                              ? ""
             : e->learned == SPIM_QUAR_LEARNED_HAM  ? "; already learned as ham"
             : e->learned == SPIM_QUAR_LEARNED_SPAM ? "; learned as ham, spam training undone"
                                                    : "; learned as ham");
    rc = audit_mark(st, o, e->id, SPIM_QUAR_RELEASED, learned,
                    o->learn ? "release+learn" : "release", detail);
    if (rc != 0) {
        fprintf(stderr,
                "%s release: %llu: DELIVERED (%d %s) but the store could not record it: %s; "
                "do not release it again\n",
                PROG, (unsigned long long)e->id, res.status, res.reason, spim_strerror(rc));
        return -1;
    }
    if (o->learn && e->learned != SPIM_QUAR_LEARNED_HAM) {
        rc = retrain(st, e->text, e->learned, 0);
        if (rc != 0) {
            fprintf(stderr, "%s release: %llu: released, but learning failed: %s\n", PROG,
                    (unsigned long long)e->id, spim_strerror(rc));
            spim_quar_mark(st, e->id, SPIM_QUAR_RELEASED, e->learned, NULL);
            return -1;
        }
    }
    printf("released %llu: %s\n", (unsigned long long)e->id, detail);
    return 0;
}

static int do_confirm(struct spim_store *st, const struct qopts *o, const struct spim_quar_entry *e)
{
    const char *what = e->learned == SPIM_QUAR_LEARNED_SPAM ? "already learned as spam"
                       : e->learned == SPIM_QUAR_LEARNED_HAM
                           ? "learned as spam, ham training undone"
                           : "learned as spam";
    int rc;

    if (o->dry_run) {
        printf("would confirm %llu as spam (%s) and mark it deleted\n", (unsigned long long)e->id,
               what);
        return 0;
    }
    rc = audit_mark(st, o, e->id, SPIM_QUAR_DELETED, SPIM_QUAR_LEARNED_SPAM, "confirm", what);
    if (rc == 0 && e->learned != SPIM_QUAR_LEARNED_SPAM) {
        rc = retrain(st, e->text, e->learned, 1);
        if (rc != 0)
            spim_quar_mark(st, e->id, e->status, e->learned, NULL);
    }
    if (rc != 0) {
        fprintf(stderr, "%s confirm: %llu: %s\n", PROG, (unsigned long long)e->id,
                spim_strerror(rc));
        return -1;
    }
    printf("confirmed %llu: %s, marked deleted\n", (unsigned long long)e->id, what);
    return 0;
}

static int do_delete(struct spim_store *st, const struct qopts *o, const struct spim_quar_entry *e)
{
    int rc;

    if (e->status == SPIM_QUAR_DELETED) {
        printf("%llu is already deleted\n", (unsigned long long)e->id);
        return 1; /* nothing to do, not an error */
    }
    if (o->dry_run) {
        printf("would delete %llu\n", (unsigned long long)e->id);
        return 0;
    }
    rc = audit_mark(st, o, e->id, SPIM_QUAR_DELETED, e->learned, "delete", "marked deleted");
    if (rc != 0) {
        fprintf(stderr, "%s delete: %llu: %s\n", PROG, (unsigned long long)e->id,
                spim_strerror(rc));
        return -1;
    }
    printf("deleted %llu\n", (unsigned long long)e->id);
    return 0;
}

/* Runs the action sub on every selected record; prints the count. */
static int run_action(struct spim_store *st, struct qopts *o, char **ids, int nids)
{
    struct spim_client_opts co;
    struct sel s = {0};
    unsigned long done = 0, failed = 0, skipped = 0;
    size_t n;
    int rel = strcmp(o->sub, "release") == 0, conf = strcmp(o->sub, "confirm") == 0;
    int rc;

    memset(&co, 0, sizeof(co));
    if (rel) {
        const char *hop = o->next_hop ? o->next_hop : o->cfg.next_hop;

        if (spim_hostport(hop, co.host, sizeof(co.host), &co.port) != 0) {
            fprintf(stderr, "%s release: --next-hop: expected HOST:PORT, got '%s'\n", PROG, hop);
            return 2;
        }
        if (o->timeout_s > 0)
            co.timeout_ms = (unsigned)(o->timeout_s * 1000 + 0.5);
    }
    if (nids > 0 && o->f.any) {
        fprintf(stderr, "%s %s: give IDs or filters, not both\n", PROG, o->sub);
        return 2;
    }
    if ((conf || (rel && o->learn)) && !o->dry_run) {
        char model[PATH_MAX + 32];

        if (spim_model_file(o->db, model, sizeof(model)) == 1)
            fprintf(stderr,
                    "%s %s: note: serve classifies with %s, a trainer's snapshot: what is "
                    "learned here goes into %s's own counts, which it does not use; learn on "
                    "the trainer's store (docs/scaling.md)\n",
                    PROG, o->sub, model, o->db);
    }
    if (nids == 0 && !o->f.any) {
        fprintf(stderr, "%s %s: give IDs, or filters (--all for every held record)\n", PROG,
                o->sub);
        return 2;
    }
    if (nids == 0) {
        if (!o->f.status_given)
            o->f.status = SPIM_QUAR_HELD;
        rc = select_ids(st, &o->f, &s);
        if (rc != 0) {
            fprintf(stderr, "%s %s: %s\n", PROG, o->sub, spim_strerror(rc));
            free(s.ids);
            return 1;
        }
    }
    n = nids > 0 ? (size_t)nids : s.n;
    for (size_t i = 0; i < n; i++) {
        struct spim_quar_entry e;
        void *buf = NULL;
        uint64_t id;
        int r;

        if (nids > 0) {
            if (parse_id(ids[i], &id) != 0) {
                fprintf(stderr, "%s %s: '%s' is not an ID\n", PROG, o->sub, ids[i]);
                failed++;
                continue;
            }
        } else {
            id = s.ids[i];
        }
        rc = spim_quar_get(st, id, &e, &buf);
        if (rc != 0) {
            fprintf(stderr, "%s %s: %llu: %s\n", PROG, o->sub, (unsigned long long)id,
                    rc == SPIM_ENOTFOUND ? "no such record" : spim_strerror(rc));
            failed++;
            continue;
        }
        r = rel ? do_release(st, o, &co, &e) : conf ? do_confirm(st, o, &e) : do_delete(st, o, &e);
        free(buf);
        if (r < 0)
            failed++;
        else if (r > 0)
            skipped++;
        else
            done++;
    }
    free(s.ids);
    printf("%s%s %lu, failed %lu", o->dry_run ? "dry run: would have " : "",
           rel    ? "released"
           : conf ? "confirmed"
                  : "deleted",
           done, failed);
    if (skipped)
        printf(", already done %lu", skipped);
    printf("\n");
    return failed ? 1 : 0;
}

/* --- list, show, log, stats, purge ----------------------------------------------- */

struct list_ctx {
    const struct qopts *o;
    unsigned long matched, shown;
};

static int list_one(const struct spim_quar_entry *e, void *ud)
{
    struct list_ctx *lc = ud;
    const struct filters *f = &lc->o->f;

    if (!matches(f, e))
        return 0;
    lc->matched++;
    if (lc->matched <= f->offset || (f->limit && lc->shown >= f->limit))
        return 0;
    lc->shown++;
    if (lc->o->jsonl)
        print_json(e, 0);
    else
        print_row(e);
    return 0;
}

static int cmd_list(struct spim_store *st, const struct qopts *o)
{
    struct list_ctx lc = {o, 0, 0};
    int rc;

    if (!o->jsonl)
        print_row_header();
    rc = spim_quar_foreach(st, list_one, &lc);
    if (rc != 0) {
        fprintf(stderr, "%s list: %s\n", PROG, spim_strerror(rc));
        return 1;
    }
    if (!o->jsonl)
        printf("%lu shown of %lu matching\n", lc.shown, lc.matched);
    return 0;
}

static int cmd_show(struct spim_store *st, const struct qopts *o, char **ids, int nids)
{
    int rc = 0;

    if (nids == 0) {
        fprintf(stderr, "%s show: give one or more IDs\n", PROG);
        return 2;
    }
    for (int i = 0; i < nids; i++) {
        struct spim_quar_entry e;
        void *buf = NULL;
        uint64_t id;
        int err;

        if (parse_id(ids[i], &id) != 0) {
            fprintf(stderr, "%s show: '%s' is not an ID\n", PROG, ids[i]);
            rc = 1;
            continue;
        }
        err = spim_quar_get(st, id, &e, &buf);
        if (err != 0) {
            fprintf(stderr, "%s show: %s: %s\n", PROG, ids[i],
                    err == SPIM_ENOTFOUND ? "no such record" : spim_strerror(err));
            rc = 1;
            continue;
        }
        if (o->raw)
            fwrite(e.raw.p, 1, e.raw.len, stdout);
        else if (o->jsonl)
            print_json(&e, 1);
        else {
            if (i > 0)
                fputc('\n', stdout);
            print_show(&e);
        }
        free(buf);
    }
    return rc;
}

struct log_ctx {
    const struct qopts *o;
    unsigned long seen, shown;
};

static int log_one(const struct spim_quar_audit *a, void *ud)
{
    struct log_ctx *lc = ud;
    char ts[32];

    if (a->time_us < lc->o->f.since || a->time_us >= lc->o->f.until)
        return 0;
    lc->seen++;
    if (lc->seen <= lc->o->f.offset || (lc->o->f.limit && lc->shown >= lc->o->f.limit))
        return 0;
    lc->shown++;
    fmt_time(a->time_us, ts, sizeof(ts));
    if (lc->o->jsonl) {
        printf("{\"seq\":%llu,\"time\":\"%s\",\"id\":\"%llu\"", (unsigned long long)a->seq, ts,
               (unsigned long long)a->quar_id);
        json_field("action", a->action);
        json_field("user", a->user);
        json_field("detail", a->detail);
        printf("}\n");
    } else {
        printf("%-20s  %-16.*s  %-14.*s  %-6llu  ", ts, (int)a->user.len, a->user.p,
               (int)a->action.len, a->action.p, (unsigned long long)a->quar_id);
        /* the detail holds a next hop's reason phrase: a store written by an
         * older build may have it with the escapes in it */
        spim_print_text(stdout, a->detail.p, a->detail.len, SIZE_MAX, 0);
        fputc('\n', stdout);
    }
    return 0;
}

static int cmd_log(struct spim_store *st, const struct qopts *o)
{
    struct log_ctx lc = {o, 0, 0};
    int rc;

    if (!o->jsonl)
        printf("%-20s  %-16s  %-14s  %-6s  %s\n", "TIME", "USER", "ACTION", "ID", "DETAIL");
    rc = spim_quar_audit_foreach(st, log_one, &lc);
    if (rc != 0) {
        fprintf(stderr, "%s log: %s\n", PROG, spim_strerror(rc));
        return 1;
    }
    if (!o->jsonl)
        printf("%lu entries shown\n", lc.shown);
    return 0;
}

struct stats_ctx {
    unsigned long by_status[4];
    int64_t oldest, newest;
};

static int stats_one(const struct spim_quar_entry *e, void *ud)
{
    struct stats_ctx *sc = ud;

    sc->by_status[e->status <= SPIM_QUAR_DELETED ? e->status : 3]++;
    if (sc->oldest == 0 || e->time_us < sc->oldest)
        sc->oldest = e->time_us;
    if (e->time_us > sc->newest)
        sc->newest = e->time_us;
    return 0;
}

static int cmd_stats(struct spim_store *st, const struct qopts *o)
{
    struct stats_ctx sc = {{0}, 0, 0};
    struct spim_quar_usage u;
    char t1[32] = "-", t2[32] = "-";
    int rc;

    if ((rc = spim_quar_foreach(st, stats_one, &sc)) != 0 || (rc = spim_quar_usage(st, &u)) != 0) {
        fprintf(stderr, "%s stats: %s\n", PROG, spim_strerror(rc));
        return 1;
    }
    if (sc.newest) {
        fmt_time(sc.oldest, t1, sizeof(t1));
        fmt_time(sc.newest, t2, sizeof(t2));
    }
    printf("records:  %llu (held %lu, released %lu, deleted %lu)\n", (unsigned long long)u.records,
           sc.by_status[0], sc.by_status[1], sc.by_status[2]);
    printf("oldest:   %s\nnewest:   %s\n", t1, t2);
    if (o->cfg.quarantine_max_mb)
        printf("size:     %.2f MB of quarantine_max_mb %u (%.1f%%)\n", (double)u.bytes / 1048576.0,
               o->cfg.quarantine_max_mb,
               100.0 * (double)u.bytes / ((double)o->cfg.quarantine_max_mb * 1048576.0));
    else
        printf("size:     %.2f MB (no quarantine_max_mb)\n", (double)u.bytes / 1048576.0);
    if (o->cfg.quarantine_days > 0)
        printf("expiry:   after %g days (quarantine_days)\n", o->cfg.quarantine_days);
    else
        printf("expiry:   never (quarantine_days 0)\n");
    return 0;
}

static int cmd_purge(struct spim_store *st, const struct qopts *o)
{
    double days = o->has_days ? o->days : o->cfg.quarantine_days;
    int64_t before = days > 0 ? spim_now_us() - (int64_t)(days * 86400e6) : INT64_MIN;
    char detail[128];
    uint64_t n = 0;
    int rc;

    rc = spim_quar_purge(st, before, o->deleted ? SPIM_QUAR_PURGE_DELETED : 0, o->dry_run, &n);
    if (rc != 0) {
        fprintf(stderr, "%s purge: %s (%llu removed before the error)\n", PROG, spim_strerror(rc),
                (unsigned long long)n);
        return 1;
    }
    if (days > 0)
        snprintf(detail, sizeof(detail), "%llu older than %g days%s", (unsigned long long)n, days,
                 o->deleted ? " or deleted" : "");
    else
        snprintf(detail, sizeof(detail), "%llu %s", (unsigned long long)n,
                 o->deleted ? "deleted (no expiry: quarantine_days 0)"
                            : "(no expiry: quarantine_days 0)");
    printf("%s %s\n", o->dry_run ? "dry run: would purge" : "purged", detail);
    if (!o->dry_run && n > 0)
        audit_only(st, o, 0, "purge", detail);
    return 0;
}

/* --- Entry ---------------------------------------------------------------------- */

enum {
    OPT_DB = 1000,
    OPT_CONFIG,
    OPT_FORMAT,
    OPT_RAW,
    OPT_LEARN,
    OPT_DRY,
    OPT_NEXT_HOP,
    OPT_TIMEOUT,
    OPT_FROM,
    OPT_TO,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_RULE,
    OPT_MIN_SCORE,
    OPT_STATUS,
    OPT_LIMIT,
    OPT_OFFSET,
    OPT_ALL,
    OPT_DAYS,
    OPT_DELETED,
    OPT_HELP,
};

static int parse_opts(int argc, char **argv, struct qopts *o)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, OPT_DB},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"raw", no_argument, NULL, OPT_RAW},
        {"learn", no_argument, NULL, OPT_LEARN},
        {"dry-run", no_argument, NULL, OPT_DRY},
        {"next-hop", required_argument, NULL, OPT_NEXT_HOP},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"from", required_argument, NULL, OPT_FROM},
        {"to", required_argument, NULL, OPT_TO},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"rule", required_argument, NULL, OPT_RULE},
        {"min-score", required_argument, NULL, OPT_MIN_SCORE},
        {"status", required_argument, NULL, OPT_STATUS},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"offset", required_argument, NULL, OPT_OFFSET},
        {"all", no_argument, NULL, OPT_ALL},
        {"days", required_argument, NULL, OPT_DAYS},
        {"deleted", no_argument, NULL, OPT_DELETED},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DB:
            o->db = optarg;
            break;
        case OPT_CONFIG:
            o->config = optarg;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "jsonl") == 0)
                o->jsonl = 1;
            else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, "%s: --format: text or jsonl\n", PROG);
                return 2;
            }
            break;
        case OPT_RAW:
            o->raw = 1;
            break;
        case OPT_LEARN:
            o->learn = 1;
            break;
        case OPT_DRY:
            o->dry_run = 1;
            break;
        case OPT_NEXT_HOP:
            o->next_hop = optarg;
            break;
        case OPT_TIMEOUT:
            errno = 0;
            o->timeout_s = strtod(optarg, &end);
            if (errno || end == optarg || *end != '\0' || !(o->timeout_s > 0) ||
                o->timeout_s > 3600) {
                fprintf(stderr, "%s: --timeout: seconds, more than 0\n", PROG);
                return 2;
            }
            break;
        case OPT_FROM:
            o->f.from = optarg;
            o->f.any = 1;
            break;
        case OPT_TO:
            o->f.to = optarg;
            o->f.any = 1;
            break;
        case OPT_SINCE:
        case OPT_UNTIL:
            if (parse_time(optarg, c == OPT_SINCE ? &o->f.since : &o->f.until) != 0) {
                fprintf(stderr,
                        "%s: --%s: expected YYYY-MM-DD[THH:MM[:SS]][Z], @EPOCH or N[smhd], got "
                        "'%s'\n",
                        PROG, c == OPT_SINCE ? "since" : "until", optarg);
                return 2;
            }
            o->f.any = 1;
            break;
        case OPT_RULE:
            o->f.rule = optarg;
            o->f.any = 1;
            break;
        case OPT_MIN_SCORE:
            errno = 0;
            o->f.min_score = strtod(optarg, &end);
            if (errno || end == optarg || *end != '\0') {
                fprintf(stderr, "%s: --min-score: a number, got '%s'\n", PROG, optarg);
                return 2;
            }
            o->f.has_min_score = 1;
            o->f.any = 1;
            break;
        case OPT_STATUS:
            o->f.status = strcmp(optarg, "held") == 0       ? SPIM_QUAR_HELD
                          : strcmp(optarg, "released") == 0 ? SPIM_QUAR_RELEASED
                          : strcmp(optarg, "deleted") == 0  ? SPIM_QUAR_DELETED
                          : strcmp(optarg, "any") == 0      ? -1
                                                            : -2;
            if (o->f.status == -2) {
                fprintf(stderr, "%s: --status: held, released, deleted or any\n", PROG);
                return 2;
            }
            o->f.status_given = 1;
            o->f.any = 1;
            break;
        case OPT_LIMIT:
        case OPT_OFFSET:
            if (parse_ulong(optarg, c == OPT_LIMIT ? &o->f.limit : &o->f.offset) != 0) {
                fprintf(stderr, "%s: --%s: a count\n", PROG, c == OPT_LIMIT ? "limit" : "offset");
                return 2;
            }
            break;
        case OPT_ALL:
            o->all = 1;
            o->f.any = 1;
            break;
        case OPT_DAYS:
            errno = 0;
            o->days = strtod(optarg, &end);
            if (errno || end == optarg || *end != '\0' || o->days < 0) {
                fprintf(stderr, "%s: --days: a number of days, 0 or more\n", PROG);
                return 2;
            }
            o->has_days = 1;
            break;
        case OPT_DELETED:
            o->deleted = 1;
            break;
        case OPT_HELP:
            usage(stdout);
            return -1;
        default:
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

int spim_cmd_quarantine(int argc, char **argv)
{
    static const char *const subs[] = {"list",   "show",  "release", "confirm",
                                       "delete", "purge", "log",     "stats"};
    struct qopts o;
    struct spim_store *st = NULL;
    char err[512];
    int rc, writes, nsub = (int)(sizeof(subs) / sizeof(subs[0])), i;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    memset(&o, 0, sizeof(o));
    o.sub = argv[1];
    o.f.status = -1;
    o.f.since = INT64_MIN;
    o.f.until = INT64_MAX;
    for (i = 0; i < nsub && strcmp(o.sub, subs[i]) != 0; i++)
        ;
    if (i == nsub) {
        fprintf(stderr, "%s: unknown command '%s'\n", PROG, o.sub);
        usage(stderr);
        return 2;
    }
    optind = 1;
    rc = parse_opts(argc - 1, argv + 1, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    optind++; /* argv + 1 was parsed */
    spim_config_defaults(&o.cfg);
    if (o.config != NULL && spim_config_load(o.config, &o.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        return 1;
    }
    if (o.db == NULL && o.config == NULL) {
        fprintf(stderr, "%s: --db DIR (or --config FILE) is required\n", PROG);
        return 2;
    }
    if (o.db == NULL)
        o.db = o.cfg.db;
    if ((o.learn && strcmp(o.sub, "release") != 0) || (o.raw && strcmp(o.sub, "show") != 0) ||
        (o.deleted && strcmp(o.sub, "purge") != 0)) {
        fprintf(stderr, "%s %s: --learn is for release, --raw for show, --deleted for purge\n",
                PROG, o.sub);
        return 2;
    }
    if (optind < argc && (strcmp(o.sub, "list") == 0 || strcmp(o.sub, "purge") == 0 ||
                          strcmp(o.sub, "log") == 0 || strcmp(o.sub, "stats") == 0)) {
        fprintf(stderr, "%s %s: unexpected argument '%s'\n", PROG, o.sub, argv[optind]);
        return 2;
    }
    writes = strcmp(o.sub, "release") == 0 || strcmp(o.sub, "confirm") == 0 ||
             strcmp(o.sub, "delete") == 0 || strcmp(o.sub, "purge") == 0;
    if (writes && o.dry_run)
        writes = 0;
    rc = spim_store_open(o.db, writes ? 0 : SPIM_STORE_RDONLY, 0, &st);
    if (rc != 0) {
        fprintf(stderr, "%s: %s: %s%s\n", PROG, o.db, spim_strerror(rc),
                rc == SPIM_ENOTFOUND ? " (no store there: serve or train creates one)" : "");
        return 1;
    }
    who(o.user, sizeof(o.user));
    if (strcmp(o.sub, "list") == 0)
        rc = cmd_list(st, &o);
    else if (strcmp(o.sub, "show") == 0)
        rc = cmd_show(st, &o, argv + optind, argc - optind);
    else if (strcmp(o.sub, "log") == 0)
        rc = cmd_log(st, &o);
    else if (strcmp(o.sub, "stats") == 0)
        rc = cmd_stats(st, &o);
    else if (strcmp(o.sub, "purge") == 0)
        rc = cmd_purge(st, &o);
    else
        rc = run_action(st, &o, argv + optind, argc - optind);
    spim_store_close(st);
    return rc;
}
