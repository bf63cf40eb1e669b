/*
 * config.c: the serve configuration. An INI file read with inih (see
 * docs/dependencies.md), keys in an optional [spimfilter] section, every
 * key also settable as a flag; an unknown key or a bad value is an error
 * that names the file and line.
 */
#include "cli.h"

#include <errno.h>
#include <ini.h>
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
    spim_thresholds_defaults(&c->th);
    spim_bayes_defaults(&c->bp);
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
    if (errno || end == v || *end != '\0' || d < lo || d > hi)
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
        if (strcmp(v, "block") == 0)
            c->mode_tag = 0;
        else if (strcmp(v, "tag") == 0)
            c->mode_tag = 1;
        else {
            snprintf(err, errcap, "mode: expected block or tag, got '%s'", v);
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
    } else {
        snprintf(err, errcap, "unknown key '%s'", key);
        return SPIM_EINVAL;
    }
    return 0;
bad:
    snprintf(err, errcap, "%s: bad value '%s'", key, v);
    return SPIM_EINVAL;
}

struct load_ctx {
    struct spim_config *c;
    char err[256];
};

static int on_key(void *ud, const char *section, const char *name, const char *value)
{
    struct load_ctx *lc = ud;

    if (section[0] != '\0' && strcmp(section, "spimfilter") != 0) {
        snprintf(lc->err, sizeof(lc->err), "unknown section [%s]", section);
        return 0;
    }
    return spim_config_set(lc->c, name, value, lc->err, sizeof(lc->err)) == 0;
}

int spim_config_load(const char *path, struct spim_config *c, char *err, size_t errcap)
{
    struct load_ctx lc = {c, ""};
    int rc = ini_parse(path, on_key, &lc);

    if (rc == -1) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return SPIM_EIO;
    }
    if (rc != 0) {
        snprintf(err, errcap, "%s:%d: %s", path, rc, lc.err[0] ? lc.err : "syntax error");
        return SPIM_EPARSE;
    }
    return 0;
}
