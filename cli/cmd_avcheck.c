/*
 * cmd_avcheck.c: `spimfilter av-check`: reads the host's ClamAV config and
 * says whether its scheduled scans (ExcludePath) and its on-access scanner
 * (OnAccessIncludePath/MountPath, OnAccessExcludePath, OnAccessExcludeUname,
 * OnAccessExcludeUID, OnAccessExcludeRootUID) leave the filter's store, its
 * quarantine and its binary alone, and prints the lines to add when not.
 * Why it matters: docs/antivirus.md (on-access scans of the memory-mapped
 * LMDB stall the filter; the quarantine holds malware on purpose).
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_VALUES 64

struct clamconf {
    char *exclude[MAX_VALUES], *include[MAX_VALUES], *oa_exclude[MAX_VALUES];
    char *oa_uname[MAX_VALUES];
    long oa_uid[MAX_VALUES];
    unsigned nexclude, ninclude, noa_exclude, noa_uname, noa_uid;
    int oa_root;
    unsigned example_line; /* the "Example" line that keeps clamd from starting */
};

static void clamconf_free(struct clamconf *c)
{
    for (unsigned i = 0; i < c->nexclude; i++)
        free(c->exclude[i]);
    for (unsigned i = 0; i < c->ninclude; i++)
        free(c->include[i]);
    for (unsigned i = 0; i < c->noa_exclude; i++)
        free(c->oa_exclude[i]);
    for (unsigned i = 0; i < c->noa_uname; i++)
        free(c->oa_uname[i]);
}

static int push(char **arr, unsigned *n, const char *v, const char *path, unsigned line)
{
    if (*n >= MAX_VALUES) {
        fprintf(stderr, "spimfilter av-check: %s:%u: more than %d values of one option\n", path,
                line, MAX_VALUES);
        return -1;
    }
    arr[*n] = strdup(v);
    if (arr[*n] == NULL)
        return -1;
    (*n)++;
    return 0;
}

/* clamd.conf: "Option value" lines, '#' comments; options repeat for lists. */
static int clamconf_load(const char *path, struct clamconf *c)
{
    char *buf, *p, *end;
    size_t len;
    unsigned line = 0;
    int rc = 0;

    memset(c, 0, sizeof(*c));
    if (spim_read_file(path, &buf, &len) != 0) {
        fprintf(stderr, "spimfilter av-check: %s: %s\n", path, strerror(errno));
        return -1;
    }
    end = buf + len;
    for (p = buf; p < end && rc == 0;) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *k, *v, *e;

        if (nl == NULL)
            nl = end;
        *nl = '\0';
        line++;
        k = p;
        p = nl + 1;
        while (*k == ' ' || *k == '\t')
            k++;
        if (*k == '#' || *k == '\0')
            continue;
        for (v = k; *v && *v != ' ' && *v != '\t'; v++)
            ;
        if (*v)
            *v++ = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            *--e = '\0';
        if (strcmp(k, "Example") == 0)
            c->example_line = line;
        else if (strcmp(k, "ExcludePath") == 0)
            rc = push(c->exclude, &c->nexclude, v, path, line);
        else if (strcmp(k, "OnAccessIncludePath") == 0 || strcmp(k, "OnAccessMountPath") == 0)
            rc = push(c->include, &c->ninclude, v, path, line);
        else if (strcmp(k, "OnAccessExcludePath") == 0)
            rc = push(c->oa_exclude, &c->noa_exclude, v, path, line);
        else if (strcmp(k, "OnAccessExcludeUname") == 0)
            rc = push(c->oa_uname, &c->noa_uname, v, path, line);
        else if (strcmp(k, "OnAccessExcludeUID") == 0 && c->noa_uid < MAX_VALUES)
            c->oa_uid[c->noa_uid++] = strtol(v, NULL, 10);
        else if (strcmp(k, "OnAccessExcludeRootUID") == 0)
            c->oa_root =
                strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0;
    }
    free(buf);
    return rc;
}

/* Whether dir is path or one of its parents (component-wise). */
static int covers(const char *dir, const char *path)
{
    size_t n = strlen(dir);

    while (n > 1 && dir[n - 1] == '/')
        n--;
    return strncmp(dir, path, n) == 0 && (path[n] == '\0' || path[n] == '/' || n == 1);
}

/* The ExcludePath regex (POSIX extended, as clamd compiles it) matching path, or NULL. */
static const char *excluded(const struct clamconf *c, const char *path)
{
    for (unsigned i = 0; i < c->nexclude; i++) {
        regex_t re;
        int m;

        if (regcomp(&re, c->exclude[i], REG_EXTENDED | REG_NOSUB) != 0)
            continue;
        m = regexec(&re, path, 0, NULL, 0) == 0;
        regfree(&re);
        if (m)
            return c->exclude[i];
    }
    return NULL;
}

/* A regex that matches exactly the path (prefix when dir). */
static void regex_of(const char *path, int dir, char *out, size_t cap)
{
    size_t n = 0;

    if (cap < 4)
        return;
    out[n++] = '^';
    for (const char *p = path; *p && n + 4 < cap; p++) {
        if (strchr(".[]()*+?{}|^$\\", *p) != NULL)
            out[n++] = '\\';
        out[n++] = *p;
    }
    if (dir)
        out[n++] = '/';
    else
        out[n++] = '$';
    out[n] = '\0';
}

struct item {
    const char *what;
    char path[PATH_MAX];
    int dir;
};

/* Checks one item; prints a line; returns 1 when something is missing. */
static int check_item(const struct clamconf *c, const struct item *it, const char *user, uid_t uid,
                      int *need_exclude, int *need_oa)
{
    char probe[PATH_MAX + 16];
    const char *re, *why = NULL;
    char whybuf[PATH_MAX + 64];
    int missing = 0, watched = 0;

    /* clamd tests ExcludePath on directories and files alike: a file inside counts. */
    snprintf(probe, sizeof(probe), "%s%s", it->path, it->dir ? "/data.mdb" : "");
    re = excluded(c, it->path);
    if (re == NULL && it->dir)
        re = excluded(c, probe);
    printf("%-11s %s\n", it->what, it->path);
    if (re != NULL) {
        printf("  scheduled scans: excluded (ExcludePath %s)\n", re);
    } else {
        printf("  scheduled scans: SCANNED (no ExcludePath matches)\n");
        *need_exclude = missing = 1;
    }
    for (unsigned i = 0; i < c->ninclude && !watched; i++)
        watched = covers(c->include[i], it->path);
    if (!watched) {
        printf("  on-access:       not watched (%s)\n",
               c->ninclude ? "outside every OnAccessIncludePath" : "no OnAccessIncludePath");
        return missing;
    }
    for (unsigned i = 0; i < c->noa_exclude && why == NULL; i++)
        if (covers(c->oa_exclude[i], it->path)) {
            snprintf(whybuf, sizeof(whybuf), "OnAccessExcludePath %s", c->oa_exclude[i]);
            why = whybuf;
        }
    for (unsigned i = 0; i < c->noa_uname && why == NULL; i++)
        if (strcmp(c->oa_uname[i], user) == 0) {
            snprintf(whybuf, sizeof(whybuf), "OnAccessExcludeUname %s", user);
            why = whybuf;
        }
    for (unsigned i = 0; i < c->noa_uid && why == NULL; i++)
        if (uid != (uid_t)-1 && c->oa_uid[i] == (long)uid) {
            snprintf(whybuf, sizeof(whybuf), "OnAccessExcludeUID %ld", c->oa_uid[i]);
            why = whybuf;
        }
    if (why == NULL && c->oa_root && uid == 0)
        why = "OnAccessExcludeRootUID yes";
    if (why != NULL) {
        printf("  on-access:       excluded (%s)\n", why);
    } else {
        printf("  on-access:       SCANNED (watched, and neither the path nor user %s excluded)\n",
               user);
        *need_oa = missing = 1;
    }
    return missing;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter av-check [--config FILE | --db DIR] [--clamd-conf FILE]\n"
               "                           [--user NAME] [--binary PATH]\n"
               "\n"
               "  --config FILE      serve's config: its db is checked\n"
               "  --db DIR           the store (default /var/lib/spimfilter)\n"
               "  --clamd-conf FILE  ClamAV's config (default /etc/clamav/clamd.conf)\n"
               "  --user NAME        the user serve runs as (default: the current user)\n"
               "  --binary PATH      the spimfilter binary (default: this one)\n"
               "\n"
               "Exits 0 when ClamAV leaves the store, the quarantine and the binary alone,\n"
               "1 when a line must be added (printed), 2 on a usage or read error.\n");
}

int spim_cmd_avcheck(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"db", required_argument, NULL, 'd'},
        {"clamd-conf", required_argument, NULL, 'a'},
        {"user", required_argument, NULL, 'u'},
        {"binary", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *db = NULL, *clamd_conf = "/etc/clamav/clamd.conf";
    const char *user = NULL, *binary = NULL;
    struct spim_config cfg;
    struct clamconf cc;
    struct item items[4];
    struct passwd *pw;
    char err[512], re[PATH_MAX * 2 + 8];
    uid_t uid = geteuid();
    int c, missing = 0, need_exclude[4] = {0}, need_oa = 0, nitems = 3;
    const char *self = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            db = optarg;
            break;
        case 'a':
            clamd_conf = optarg;
            break;
        case 'u':
            user = optarg;
            break;
        case 'b':
            binary = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || (config != NULL && db != NULL)) {
        usage(stderr);
        return 2;
    }
    spim_config_defaults(&cfg);
    if (config != NULL && spim_config_load(config, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter av-check: %s\n", err);
        return 2;
    }
    if (db == NULL)
        db = cfg.db;
    if (user != NULL) {
        /* A user this host does not know now (a DynamicUser= service has its
         * user only while it runs) has no uid to match: only its name counts. */
        pw = getpwnam(user);
        uid = pw != NULL ? pw->pw_uid : (uid_t)-1;
    } else {
        pw = getpwuid(uid);
        user = pw != NULL ? pw->pw_name : "?";
    }
    memset(items, 0, sizeof(items));
    items[0].what = "store";
    items[1].what = "quarantine";
    items[2].what = "binary";
    items[3].what = "binary";
    /* A store that does not exist yet is checked by the path it will have. */
    if (realpath(db, items[0].path) == NULL)
        snprintf(items[0].path, sizeof(items[0].path), "%s", db);
    items[0].dir = 1;
    /* The quarantine is in the store's LMDB environment: the same files. */
    memcpy(items[1].path, items[0].path, sizeof(items[1].path));
    items[1].dir = 1;
    /* This one is spimfilter-serve when a static spimfilter ran it: then the
     * program the operator ran (the unit's ExecStart) is checked too. */
    if (binary == NULL && (self = getenv(SPIM_PROGRAM_ENV)) != NULL && self[0] == '/')
        nitems = 4;
    if (realpath(binary != NULL ? binary : "/proc/self/exe", items[2].path) == NULL)
        snprintf(items[2].path, sizeof(items[2].path), "%s", binary ? binary : "spimfilter");
    if (nitems == 4 && realpath(self, items[3].path) == NULL)
        snprintf(items[3].path, sizeof(items[3].path), "%s", self);
    if (clamconf_load(clamd_conf, &cc) != 0)
        return 2;
    if (uid == (uid_t)-1)
        printf("ClamAV config %s, serve running as %s (no such user on this host now: its "
               "uid is not known, only OnAccessExcludeUname can match it)\n",
               clamd_conf, user);
    else
        printf("ClamAV config %s, serve running as %s (uid %ld)\n", clamd_conf, user, (long)uid);
    if (cc.example_line)
        printf("note: %s:%u has 'Example': clamd does not start with this file as it is\n",
               clamd_conf, cc.example_line);
    for (int i = 0; i < nitems; i++)
        missing |= check_item(&cc, &items[i], user, uid, &need_exclude[i], &need_oa);
    if (missing) {
        printf("\nadd to %s:\n", clamd_conf);
        if (need_exclude[0] || need_exclude[1]) {
            regex_of(items[0].path, 1, re, sizeof(re));
            printf("ExcludePath %s\n", re);
        }
        for (int i = 2; i < nitems; i++) {
            if (need_exclude[i]) {
                regex_of(items[i].path, 0, re, sizeof(re));
                printf("ExcludePath %s\n", re);
            }
        }
        if (need_oa) {
            printf("OnAccessExcludePath %s\n", items[0].path);
            printf("OnAccessExcludeUname %s\n", user);
        }
        printf("then restart clamd (and clamonacc); see docs/antivirus.md\n");
    } else {
        printf("\nOK: ClamAV leaves the store, the quarantine and the binary alone\n");
    }
    clamconf_free(&cc);
    return missing ? 1 : 0;
}
