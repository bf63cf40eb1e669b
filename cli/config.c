/*
 * config.c: the serve configuration. An INI file read with inih (see
 * docs/dependencies.md), keys in an optional [spimfilter] section, every
 * key also settable as a flag; an unknown key or a bad value is an error
 * that names the file and line.
 */
#include "cli.h"
#include "policy.h"

#include <errno.h>
#include <ini.h>
#include "filter.h"
#include <stdlib.h>
#include <string.h>

void spim_config_defaults(struct spim_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->listen, sizeof(c->listen), "127.0.0.1:5070");
    snprintf(c->next_hop, sizeof(c->next_hop), "127.0.0.1:5080");
    snprintf(c->db, sizeof(c->db), "/var/lib/spimfilter");
    snprintf(c->block_reason, sizeof(c->block_reason), "Forbidden");
    c->log_level = SPIM_LOG_INFO;
    snprintf(c->trusted_sources, sizeof(c->trusted_sources), "127.0.0.0/8, ::1/128");
    c->max_message_size = 65535;
    c->udp_max = 1300; /* RFC 3261 18.1.1 */
    c->tcp_idle_timeout = 300;
    c->block_code = 403;
    spim_thresholds_defaults(&c->th);
    spim_bayes_defaults(&c->bp);
    c->quarantine_days = 30;
    c->quarantine_max_mb = 512; /* a bound by default: a spam wave must not fill the disk */
    snprintf(c->file_block_ext, sizeof(c->file_block_ext), "%s", SPIM_POLICY_DEFAULT_BLOCK_EXT);
    snprintf(c->file_block_types, sizeof(c->file_block_types), "%s",
             SPIM_POLICY_DEFAULT_BLOCK_TYPES);
    c->file_max_size = 10u << 20;
    c->invite_block_code = 488;
    c->clamd_timeout_ms = 1000;
    c->fanout_window = 60;
    c->fanout_limit = 20;
    c->fanout_score = 6;
    c->bulk_window = 300;
    c->bulk_limit = 20;
    c->bulk_min_length = 20;
    c->bulk_score = 6;
    c->rate_entries = 65536;
    snprintf(c->metrics_listen, sizeof(c->metrics_listen), "127.0.0.1:9464");
    c->reports_record = 1;
    c->report_min_reporters = 3;
    c->report_max_entries = 1000000;
    c->action = 2;
    c->contacts = 1;
    c->contacts_days = 180;
    c->contacts_max = 2000000;
    c->contacts_memory = 262144;
    c->stranger_messages = 3;
    c->contact_score = -3;
    c->stranger_score = 1;
    c->stranger_link_score = 3;
    c->identity_verified_score = -1;
    c->identity_asserted_score = 0;
    c->identity_failed_score = 4;
}

/* An action name: deliver, tag, block, drop (the per-recipient file has the same words). */
static int parse_action(const char *v)
{
    static const char *const names[] = {"deliver", "tag", "block", "drop"};

    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0)
            return i;
    return -1;
}

/* Points keys of issue 8: name, where, bounds. */
static double *score_key(struct spim_config *c, const char *key)
{
    if (strcmp(key, "contact_score") == 0)
        return &c->contact_score;
    if (strcmp(key, "stranger_score") == 0)
        return &c->stranger_score;
    if (strcmp(key, "stranger_link_score") == 0)
        return &c->stranger_link_score;
    if (strcmp(key, "identity_verified_score") == 0)
        return &c->identity_verified_score;
    if (strcmp(key, "identity_asserted_score") == 0)
        return &c->identity_asserted_score;
    if (strcmp(key, "identity_failed_score") == 0)
        return &c->identity_failed_score;
    return NULL;
}

int spim_hostport(const char *s, char *host, size_t hostcap, unsigned *port)
{
    const char *colon;
    char *end;
    long p;
    size_t hl;

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');

        if (rb == NULL || rb[1] != ':')
            return SPIM_EINVAL;
        colon = rb + 1;
        s++;
        hl = (size_t)(rb - s);
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return SPIM_EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostcap)
        return SPIM_EINVAL;
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || p <= 0 || p > 65535)
        return SPIM_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    *port = (unsigned)p;
    return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    /* decimal only: strtod would take 0x10 as 16, and "inf" or "nan" */
    if (errno || end == v || *end != '\0' || d < lo || d > hi || d != d ||
        strpbrk(v, "xXpPiInN") != NULL)
        return -1;
    *out = d;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);

    if (n >= cap)
        return -1;
    memcpy(dst, v, n + 1);
    return 0;
}

int spim_config_set(struct spim_config *c, const char *key, const char *v, char *err, size_t errcap)
{
    char host[128];
    unsigned port;
    double d;

    if (strcmp(key, "listen") == 0 || strcmp(key, "next_hop") == 0 ||
        strcmp(key, "advertise") == 0) {
        char *dst = key[0] == 'l' ? c->listen : key[0] == 'n' ? c->next_hop : c->advertise;

        if (spim_hostport(v, host, sizeof(host), &port) != 0 || copy_str(dst, 128, v) != 0) {
            snprintf(err, errcap, "%s: expected HOST:PORT, got '%s'", key, v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "db") == 0) {
        if (copy_str(c->db, sizeof(c->db), v) != 0 || v[0] == '\0')
            goto bad;
    } else if (strcmp(key, "rules") == 0) {
        if (copy_str(c->rules, sizeof(c->rules), v) != 0)
            goto bad;
    } else if (strcmp(key, "block_reason") == 0) {
        if (copy_str(c->block_reason, sizeof(c->block_reason), v) != 0 || v[0] == '\0' ||
            strpbrk(v, "\r\n") != NULL)
            goto bad;
    } else if (strcmp(key, "mode") == 0) {
        /* the older spelling of action = block|tag */
        if (strcmp(v, "block") == 0)
            c->mode_tag = 0;
        else if (strcmp(v, "tag") == 0)
            c->mode_tag = 1;
        else {
            snprintf(err, errcap, "mode: expected block or tag, got '%s'", v);
            return SPIM_EINVAL;
        }
        c->action = c->mode_tag ? 1 : 2;
    } else if (strcmp(key, "action") == 0) {
        int a = parse_action(v);

        if (a < 0) {
            snprintf(err, errcap, "action: expected block, drop, tag or deliver, got '%s'", v);
            return SPIM_EINVAL;
        }
        c->action = a;
        c->mode_tag = a == 1;
    } else if (score_key(c, key) != NULL) {
        if (parse_double(v, -1000, 1000, score_key(c, key)) != 0)
            goto bad;
    } else if (strcmp(key, "contacts") == 0 || strcmp(key, "identity_verified_header") == 0 ||
               strcmp(key, "bayes_shadow") == 0) {
        int *dst = strcmp(key, "contacts") == 0       ? &c->contacts
                   : strcmp(key, "bayes_shadow") == 0 ? &c->th.bayes_shadow
                                                      : &c->identity_verified_header;

        if (strcmp(v, "on") == 0 || strcmp(v, "yes") == 0)
            *dst = 1;
        else if (strcmp(v, "off") == 0 || strcmp(v, "no") == 0)
            *dst = 0;
        else {
            snprintf(err, errcap, "%s: expected on or off, got '%s'", key, v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "contacts_days") == 0 || strcmp(key, "contacts_memory") == 0 ||
               strcmp(key, "stranger_messages") == 0) {
        unsigned *dst = strcmp(key, "contacts_days") == 0     ? &c->contacts_days
                        : strcmp(key, "contacts_memory") == 0 ? &c->contacts_memory
                                                              : &c->stranger_messages;

        /* the contacts keys need at least 1 (a day, a slot); stranger_messages may be 0 */
        if (parse_double(v, dst != &c->stranger_messages ? 1 : 0, 1e8, &d) != 0 || d != (unsigned)d)
            goto bad;
        *dst = (unsigned)d;
    } else if (strcmp(key, "contacts_max") == 0) {
        if (parse_double(v, 0, 1e12, &d) != 0 || d != (double)(uint64_t)d)
            goto bad;
        c->contacts_max = (uint64_t)d;
    } else if (strcmp(key, "recipient_policy") == 0) {
        if (copy_str(c->recipient_policy, sizeof(c->recipient_policy), v) != 0)
            goto bad;
    } else if (strcmp(key, "local_domains") == 0) {
        if (copy_str(c->local_domains, sizeof(c->local_domains), v) != 0 ||
            strpbrk(v, "@;:/\t") != NULL) {
            snprintf(err, errcap, "local_domains: expected domains separated by commas, got '%s'",
                     v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "identity_min") == 0) {
        if (strcmp(v, "any") == 0)
            c->identity_min = 0;
        else if (strcmp(v, "asserted") == 0)
            c->identity_min = 1;
        else if (strcmp(v, "verified") == 0)
            c->identity_min = 2;
        else {
            snprintf(err, errcap, "identity_min: expected any, asserted or verified, got '%s'", v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "workers") == 0) {
        if (parse_double(v, 0, 64, &d) != 0 || d != (unsigned)d)
            goto bad;
        c->workers = (unsigned)d;
    } else if (strcmp(key, "log_level") == 0) {
        static const char *lv[] = {"error", "warning", "info", "debug"};
        int i;

        for (i = 0; i < 4 && strcmp(v, lv[i]) != 0; i++)
            ;
        if (i == 4) {
            snprintf(err, errcap, "log_level: expected error, warning, info or debug, got '%s'", v);
            return SPIM_EINVAL;
        }
        c->log_level = i;
    } else if (strcmp(key, "tag_score") == 0) {
        if (parse_double(v, -1000, 1000, &c->th.tag_score) != 0)
            goto bad;
    } else if (strcmp(key, "block_score") == 0) {
        if (parse_double(v, -1000, 1000, &c->th.block_score) != 0)
            goto bad;
    } else if (strcmp(key, "bayes_weight") == 0) {
        if (parse_double(v, 0, 1000, &c->th.bayes_weight) != 0)
            goto bad;
    } else if (strcmp(key, "trusted_sources") == 0) {
        struct spim_cidr nets[SPIM_FILTER_MAX_TRUSTED];
        char badv[64];
        unsigned n;

        if (strlen(v) >= sizeof(c->trusted_sources))
            goto bad;
        if (spim_cidr_list_parse(v, nets, SPIM_FILTER_MAX_TRUSTED, &n, badv, sizeof(badv)) != 0) {
            snprintf(err, errcap, "trusted_sources: '%s' is not a network (ADDR/PREFIX)", badv);
            return SPIM_EINVAL;
        }
        memcpy(c->trusted_sources, v, strlen(v) + 1);
    } else if (strcmp(key, "block_code") == 0) {
        if (strcmp(v, "403") == 0)
            c->block_code = 403;
        else if (strcmp(v, "608") == 0)
            c->block_code = 608;
        else {
            snprintf(err, errcap, "block_code: expected 403 or 608, got '%s'", v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "block_call_info") == 0) {
        if (copy_str(c->block_call_info, sizeof(c->block_call_info), v) != 0 ||
            strpbrk(v, "<>\r\n \t") != NULL || strchr(v, ':') == NULL) {
            snprintf(err, errcap, "block_call_info: expected a URI such as https://host/path");
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "on_error") == 0) {
        if (strcmp(v, "deliver") == 0)
            c->on_error_deliver = 1;
        else if (strcmp(v, "reject") == 0)
            c->on_error_deliver = 0;
        else {
            snprintf(err, errcap, "on_error: expected deliver or reject, got '%s'", v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "max_message_size") == 0) {
        if (parse_double(v, 512, 65535, &d) != 0 || d != (unsigned)d)
            goto bad;
        c->max_message_size = (unsigned)d;
    } else if (strcmp(key, "udp_max") == 0) {
        if (parse_double(v, 0, 65535, &d) != 0 || d != (unsigned)d)
            goto bad;
        c->udp_max = (unsigned)d;
    } else if (strcmp(key, "tcp_idle_timeout") == 0) {
        if (parse_double(v, 1, 86400, &d) != 0 || d != (unsigned)d)
            goto bad;
        c->tcp_idle_timeout = (unsigned)d;
    } else if (strcmp(key, "quarantine_days") == 0) {
        /* Fractions are allowed (0.5 is twelve hours); 0 keeps records forever. */
        if (parse_double(v, 0, 36500, &c->quarantine_days) != 0)
            goto bad;
    } else if (strcmp(key, "quarantine_max_mb") == 0) {
        if (parse_double(v, 0, 1048576, &d) != 0 || d != (unsigned)d)
            goto bad;
        c->quarantine_max_mb = (unsigned)d;
    } else if (strcmp(key, "quarantine_full") == 0) {
        if (strcmp(v, "block") == 0)
            c->quarantine_full_tag = 0;
        else if (strcmp(v, "tag") == 0)
            c->quarantine_full_tag = 1;
        else {
            snprintf(err, errcap, "quarantine_full: expected block or tag, got '%s'", v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "allow_list") == 0) {
        if (copy_str(c->allow_list, sizeof(c->allow_list), v) != 0)
            goto bad;
    } else if (strcmp(key, "block_list") == 0) {
        if (copy_str(c->block_list, sizeof(c->block_list), v) != 0)
            goto bad;
    } else if (strcmp(key, "file_block_ext") == 0) {
        if (copy_str(c->file_block_ext, sizeof(c->file_block_ext), v) != 0)
            goto bad;
    } else if (strcmp(key, "file_allow_ext") == 0) {
        if (copy_str(c->file_allow_ext, sizeof(c->file_allow_ext), v) != 0)
            goto bad;
    } else if (strcmp(key, "file_block_types") == 0) {
        if (copy_str(c->file_block_types, sizeof(c->file_block_types), v) != 0)
            goto bad;
    } else if (strcmp(key, "file_allow_types") == 0) {
        if (copy_str(c->file_allow_types, sizeof(c->file_allow_types), v) != 0)
            goto bad;
    } else if (strcmp(key, "file_max_size") == 0) {
        if (parse_double(v, 0, 1e15, &d) != 0 || d != (double)(uint64_t)d)
            goto bad;
        c->file_max_size = (uint64_t)d;
    } else if (strcmp(key, "invite_block_code") == 0) {
        if (strcmp(v, "488") != 0 && strcmp(v, "403") != 0) {
            snprintf(err, errcap, "invite_block_code: expected 488 or 403, got '%s'", v);
            return SPIM_EINVAL;
        }
        c->invite_block_code = v[0] == '4' && v[1] == '8' ? 488 : 403;
    } else if (strcmp(key, "clamd_socket") == 0) {
        if (copy_str(c->clamd_socket, sizeof(c->clamd_socket), v) != 0)
            goto bad;
    } else if (strcmp(key, "clamd_timeout_ms") == 0 || strcmp(key, "fanout_window") == 0 ||
               strcmp(key, "fanout_limit") == 0 || strcmp(key, "bulk_window") == 0 ||
               strcmp(key, "bulk_limit") == 0 || strcmp(key, "bulk_min_length") == 0 ||
               strcmp(key, "rate_entries") == 0) {
        unsigned *dst = key[0] == 'c'                         ? &c->clamd_timeout_ms
                        : strcmp(key, "fanout_window") == 0   ? &c->fanout_window
                        : strcmp(key, "fanout_limit") == 0    ? &c->fanout_limit
                        : strcmp(key, "bulk_window") == 0     ? &c->bulk_window
                        : strcmp(key, "bulk_limit") == 0      ? &c->bulk_limit
                        : strcmp(key, "bulk_min_length") == 0 ? &c->bulk_min_length
                                                              : &c->rate_entries;

        /* A limit of 0 turns the check off; windows and the timeout must be at least 1. */
        if (parse_double(v, 0, 1e8, &d) != 0 || d != (unsigned)d ||
            (d < 1 && (strstr(key, "window") != NULL || key[0] == 'c' || key[0] == 'r')))
            goto bad;
        *dst = (unsigned)d;
    } else if (strcmp(key, "fanout_score") == 0) {
        if (parse_double(v, -1000, 1000, &c->fanout_score) != 0)
            goto bad;
    } else if (strcmp(key, "bulk_score") == 0) {
        if (parse_double(v, -1000, 1000, &c->bulk_score) != 0)
            goto bad;
    } else if (strcmp(key, "metrics_listen") == 0) {
        /* Empty turns the endpoint off. */
        if (v[0] != '\0' && (spim_hostport(v, host, sizeof(host), &port) != 0 ||
                             copy_str(c->metrics_listen, sizeof(c->metrics_listen), v) != 0)) {
            snprintf(err, errcap, "metrics_listen: expected HOST:PORT or empty, got '%s'", v);
            return SPIM_EINVAL;
        }
        if (v[0] == '\0')
            c->metrics_listen[0] = '\0';
    } else if (strcmp(key, "reports") == 0) {
        if (strcmp(v, "on") == 0)
            c->reports_record = 1;
        else if (strcmp(v, "off") == 0)
            c->reports_record = 0;
        else {
            snprintf(err, errcap, "reports: expected on or off, got '%s'", v);
            return SPIM_EINVAL;
        }
    } else if (strcmp(key, "report_min_reporters") == 0) {
        if (parse_double(v, 1, 1e6, &d) != 0 || d != (unsigned)d)
            goto bad;
        c->report_min_reporters = (unsigned)d;
    } else if (strcmp(key, "report_max_entries") == 0) {
        if (parse_double(v, 0, 1e12, &d) != 0 || d != (double)(uint64_t)d)
            goto bad;
        c->report_max_entries = (uint64_t)d;
    } else {
        snprintf(err, errcap, "unknown key '%s'", key);
        return SPIM_EINVAL;
    }
    return 0;
bad:
    snprintf(err, errcap, "%s: bad value '%s'", key, v);
    return SPIM_EINVAL;
}

/*
 * Keys that hold a comma-separated list: given again in the same file, the
 * values add up, so a long list can span lines (inih reads lines of at
 * most INI_MAX_LINE - 1 characters).
 */
static const char *const list_keys[] = {"trusted_sources",  "file_block_ext",   "file_allow_ext",
                                        "file_block_types", "file_allow_types", "local_domains"};
#define NLIST (sizeof(list_keys) / sizeof(list_keys[0]))

struct load_ctx {
    struct spim_config *c;
    char err[256];
    char *lists[NLIST]; /* what the file gave so far for each list key */
};

static int on_key(void *ud, const char *section, const char *name, const char *value)
{
    struct load_ctx *lc = ud;

    if (lc->err[0] != '\0')
        return 1; /* inih goes on after an error: keep the first one, of its line */
    if (section[0] != '\0' && strcmp(section, "spimfilter") != 0) {
        snprintf(lc->err, sizeof(lc->err), "unknown section [%s]", section);
        return 0;
    }
    for (size_t i = 0; i < NLIST; i++) {
        if (strcmp(name, list_keys[i]) == 0) {
            size_t old = lc->lists[i] ? strlen(lc->lists[i]) : 0, add = strlen(value);
            char *n = realloc(lc->lists[i], old + add + 3);

            if (n == NULL) {
                snprintf(lc->err, sizeof(lc->err), "out of memory");
                return 0;
            }
            if (old)
                memcpy(n + old, ", ", 2), old += 2;
            memcpy(n + old, value, add + 1);
            lc->lists[i] = n;
            return spim_config_set(lc->c, name, n, lc->err, sizeof(lc->err)) == 0;
        }
    }
    return spim_config_set(lc->c, name, value, lc->err, sizeof(lc->err)) == 0;
}

int spim_config_load(const char *path, struct spim_config *c, char *err, size_t errcap)
{
    struct load_ctx lc = {c, "", {NULL}};
    char *buf;
    size_t len;
    unsigned line = 1;
    int rc;

    if (spim_read_file(path, &buf, &len) != 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno ? errno : EIO));
        return SPIM_EIO;
    }
    /* inih would cut a long line and call the rest a syntax error: say what it is */
    for (size_t i = 0, start = 0; i <= len; i++) {
        if (i == len || buf[i] == '\n') {
            if (i - start >= INI_MAX_LINE - 1) {
                snprintf(err, errcap,
                         "%s:%u: line longer than %d characters; give a list key again on the "
                         "next line to continue it",
                         path, line, INI_MAX_LINE - 2);
                free(buf);
                return SPIM_EPARSE;
            }
            if (memchr(buf + start, '\0', i - start) != NULL) {
                snprintf(err, errcap, "%s:%u: NUL byte in the config", path, line);
                free(buf);
                return SPIM_EPARSE;
            }
            line++;
            start = i + 1;
        }
    }
    rc = ini_parse_string(buf, on_key, &lc);
    free(buf);
    for (size_t i = 0; i < NLIST; i++)
        free(lc.lists[i]);
    if (rc != 0) {
        snprintf(err, errcap, "%s:%d: %s", path, rc, lc.err[0] ? lc.err : "syntax error");
        return SPIM_EPARSE;
    }
    return 0;
}
