/*
 * test_rules.c: rules files compiled by Hyperscan, their errors, and what
 * they match. Every test writes its rules to a temporary file and loads it
 * like `serve` would; matching goes through spim_classify without counts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "classifier.h"
#include "classifier_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fx {
    char dir[64];
    char path[128];
    struct spim_rules *rules;
    struct spim_scan *scan;
};

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/spim-rules-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/test.rules", f->dir);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;

    DIR *d;
    struct dirent *de;
    char p[600];

    spim_scan_free(f->scan);
    spim_rules_free(f->rules);
    /* The rules file and any cache files a test left: the directory goes. */
    if ((d = opendir(f->dir)) != NULL) {
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                (size_t)snprintf(p, sizeof(p), "%s/%s", f->dir, de->d_name) < sizeof(p))
                unlink(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Writes text as the rules file, loads it and makes a scan on it. */
static void load(struct fx *f, const char *text)
{
    struct spim_diag d;

    memset(&d, 0, sizeof(d));
    write_file(f->path, text);
    if (spim_rules_load(f->path, &f->rules, &d) != 0)
        fail_msg("%s:%u: %s", d.file, d.line, d.msg);
    assert_int_equal(spim_scan_new(f->rules, &f->scan), 0);
}

static void classify(struct fx *f, const char *text, struct spim_verdict *v)
{
    assert_int_equal(spim_classify(f->scan, NULL, NULL, NULL, NULL, text, strlen(text), NULL, v),
                     0);
}

static int hit(const struct spim_verdict *v, const char *name)
{
    unsigned i;

    for (i = 0; i < v->hits.n; i++) {
        if (strcmp(v->hits.names[i], name) == 0)
            return 1;
    }
    return 0;
}

static const char rules_text[] =
    "# test rules\n"
    "\n"
    "FREE      2.5  /free/\n" /* no i: must match via the normalised text */
    "SHOUT     1    /FREE/\n" /* matches the raw text only */
    "SHORT     3.0  /\\btxt\\b.{0,20}\\b\\d{5}\\b/is\n"
    "   HAM_LOL -1.5 /\\blol\\b/i   \n"
    "POUND     1.25 /\xc2\xa3\\d+/\n"
    "CYR       0.5  /\\p{Cyrillic}+/u\n";

/* The one cache file in dir (its path into out, size returned), or -1. */
static long cache_file(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    struct stat sb;
    long size = -1;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "rules-", 6) != 0)
            continue;
        if ((size_t)snprintf(out, cap, "%s/%s", dir, de->d_name) >= cap)
            fail_msg("path too long");
        assert_int_equal(stat(out, &sb), 0);
        size = (long)sb.st_size;
        n++;
    }
    closedir(d);
    assert_true(n <= 1);
    return size;
}

/* Loads rules_text, checks that two of its rules match, and frees it all again. */
static void load_check_free(struct fx *f)
{
    struct spim_verdict v;

    load(f, rules_text);
    classify(f, "FREE entry! txt WIN to 87121", &v);
    assert_true(hit(&v, "SHORT"));
    assert_true(hit(&v, "SHOUT"));
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);
    f->scan = NULL;
    f->rules = NULL;
}

/* Loads text (so its cache file is written) and frees it all again. */
static void load_free(struct fx *f, const char *text)
{
    load(f, text);
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);
    f->scan = NULL;
    f->rules = NULL;
}

static void test_rules_compiled_cache(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    char cpath[256];
    long size;

    /* Off: nothing is written. */
    setenv("SPIM_RULES_CACHE", "off", 1);
    load(f, rules_text);
    assert_int_equal(cache_file(f->dir, cpath, sizeof(cpath)), -1);
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);

    /* On: the first load writes the database, the second reads it. */
    setenv("SPIM_RULES_CACHE", f->dir, 1);
    load(f, rules_text);
    size = cache_file(f->dir, cpath, sizeof(cpath));
    assert_true(size > 0);
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);
    load_check_free(f);

    /* A damaged cache file is ignored, the rules compiled and the file rewritten. */
    write_file(cpath, "not a hyperscan database");
    load(f, rules_text);
    classify(f, "FREE entry! txt WIN to 87121", &v);
    assert_true(hit(&v, "SHORT"));
    assert_int_equal(cache_file(f->dir, cpath, sizeof(cpath)), size);
    unlink(cpath);
    unsetenv("SPIM_RULES_CACHE");
}

/* The cache file's bytes into a malloc'd buffer (*len its size). */
static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *b;
    long n;

    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    n = ftell(fp);
    assert_true(n > 0);
    rewind(fp);
    b = malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void write_bytes(const char *path, const unsigned char *b, size_t n)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* Loads rules_text with the cache in place, checks the rules still work and the
 * file was written again whole (its bytes are those of a fresh compile). */
static void load_recovers(struct fx *f, const char *cpath, const unsigned char *good, size_t glen)
{
    unsigned char *now;
    size_t n;

    load_check_free(f);
    now = read_all(cpath, &n);
    assert_int_equal(n, glen);
    assert_memory_equal(now, good, glen);
    free(now);
}

/*
 * The cache file is a page of header (magic, length, hash of the image's
 * first page) and then the database as it lies in memory, which is mapped,
 * not copied. Whatever is wrong with a file, the rules are compiled and the
 * file written again: a byte of the bytecode changed (past the hashed page:
 * Hyperscan's CRC, checked when the scratch is allocated, finds it), the
 * file cut short, a header whose length disagrees, a byte of Hyperscan's
 * own header changed, a changed first page whose hash was made to match
 * (the CRC again), and another rules text's database copied under this
 * one's name.
 * Offsets 8 and 16 and the seed are those of CACHE_HDR in rules.c.
 */
static void test_rules_cache_image_checked(void **state)
{
    struct fx *f = *state;
    unsigned char *good, *bad;
    char cpath[256];
    size_t glen;
    uint64_t h;

    setenv("SPIM_RULES_CACHE", f->dir, 1);
    load_free(f, rules_text);
    assert_true(cache_file(f->dir, cpath, sizeof(cpath)) > 4096);
    good = read_all(cpath, &glen);
    assert_memory_equal(good, "SPIMHSI2", 8);
    bad = malloc(glen);
    assert_non_null(bad);

    memcpy(bad, good, glen);
    bad[4096 + glen / 2 - 2048] ^= 0x5a; /* a byte of the database */
    write_bytes(cpath, bad, glen);
    load_recovers(f, cpath, good, glen);

    write_bytes(cpath, good, glen - 100); /* cut short */
    load_recovers(f, cpath, good, glen);

    memcpy(bad, good, glen);
    bad[8] ^= 1; /* the length */
    write_bytes(cpath, bad, glen);
    load_recovers(f, cpath, good, glen);

    /* A byte of Hyperscan's header inside the image (its length field): the
     * hash of the image's first page disagrees. */
    memcpy(bad, good, glen);
    bad[4096 + 8] ^= 0x40;
    write_bytes(cpath, bad, glen);
    load_recovers(f, cpath, good, glen);

    memcpy(bad, good, glen);
    bad[4096 + 2048] ^= 0x5a; /* the bytecode, in the hashed page */
    h = spim_hash64(bad + 4096, 4096, 0x72756c6573696d32ull);
    for (int i = 0; i < 8; i++)
        bad[16 + i] = (unsigned char)(h >> (8 * i));
    write_bytes(cpath, bad, glen);
    load_recovers(f, cpath, good, glen);

    /* Another rules text's database, whole and valid, copied under this name:
     * its header names the other patterns, so it is not used. */
    {
        char keep[300], opath[256];
        unsigned char *other;
        size_t olen;

        snprintf(keep, sizeof(keep), "%s/kept-while-other-loads", f->dir);
        assert_int_equal(rename(cpath, keep), 0);
        load(f, "OTHER 1.0 /\\bsomething else\\b/i\n");
        spim_scan_free(f->scan);
        spim_rules_free(f->rules);
        f->scan = NULL;
        f->rules = NULL;
        assert_true(cache_file(f->dir, opath, sizeof(opath)) > 4096);
        other = read_all(opath, &olen);
        unlink(opath);
        assert_int_equal(rename(keep, cpath), 0);
        write_bytes(cpath, other, olen);
        free(other);
        load_recovers(f, cpath, good, glen);
    }

    free(bad);
    free(good);
    unlink(cpath);
    unsetenv("SPIM_RULES_CACHE");
}

/* Sets path's modification time to days ago. */
static void age(const char *path, int days)
{
    struct timespec ts[2];

    ts[0].tv_sec = ts[1].tv_sec = time(NULL) - (time_t)days * 86400;
    ts[0].tv_nsec = ts[1].tv_nsec = 0;
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static int exists(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0;
}

/*
 * Writing a cache file removes the directory's rules-* files unused for 30
 * days, and only those: a file loaded is touched (once a day), so the
 * database of rules in use stays however old it is; a recent file, and a
 * file not named rules-*, stay too.
 */
static void test_rules_cache_pruned(void **state)
{
    struct fx *f = *state;
    char cpath[256], old1[300], old2[300], recent[300], other[300];
    struct stat sb;

    setenv("SPIM_RULES_CACHE", f->dir, 1);
    load_check_free(f);
    assert_true(cache_file(f->dir, cpath, sizeof(cpath)) > 0);
    snprintf(old1, sizeof(old1), "%s/rules-0000000000000001.hsdb", f->dir);
    snprintf(old2, sizeof(old2), "%s/rules-0000000000000002.hsdb.77.tmp", f->dir);
    snprintf(recent, sizeof(recent), "%s/rules-0000000000000003.hsdb", f->dir);
    snprintf(other, sizeof(other), "%s/notes.txt", f->dir);
    write_file(old1, "x");
    write_file(old2, "x");
    write_file(recent, "x");
    write_file(other, "x");
    age(old1, 40);
    age(old2, 31);
    age(recent, 5);
    age(other, 400);
    age(cpath, 45);

    /* rules_text's file is 45 days old but loaded now: touched. */
    load_check_free(f);
    assert_int_equal(stat(cpath, &sb), 0);
    assert_true(time(NULL) - sb.st_mtime < 3600);

    /* Another rules text is compiled and saved: the prune runs. */
    load(f, "OTHER 1.0 /\\bsomething else\\b/i\n");
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);
    f->scan = NULL;
    f->rules = NULL;
    assert_false(exists(old1));
    assert_false(exists(old2));
    assert_true(exists(recent));
    assert_true(exists(other));
    assert_true(exists(cpath));
    unlink(recent);
    unlink(other);
    unlink(cpath);
    unsetenv("SPIM_RULES_CACHE");
}

/*
 * Loaded without SPIM_RULES_MAP (as serve loads them), the rules hold their own
 * copy of the cached database: cutting the cache file short in place while
 * they are in use (a `cp` or `truncate` over it) changes nothing. With the
 * database in the mapping, this would kill the test with SIGBUS.
 */
static void test_rules_cache_copy_survives_truncation(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    char cpath[256];
    FILE *fp;

    setenv("SPIM_RULES_CACHE", f->dir, 1);
    load_check_free(f); /* writes the cache */
    assert_true(cache_file(f->dir, cpath, sizeof(cpath)) > 4096);
    load(f, rules_text);    /* reads it */
    fp = fopen(cpath, "w"); /* cut to nothing, in place */
    assert_non_null(fp);
    fclose(fp);
    classify(f, "FREE entry! txt WIN to 87121", &v);
    assert_true(hit(&v, "SHORT"));
    assert_true(hit(&v, "SHOUT"));
    classify(f, "see you at lunch", &v);
    assert_int_equal(v.hits.n, 0);
    unlink(cpath);
    unsetenv("SPIM_RULES_CACHE");
}

static void test_rules_load_and_match(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;

    load(f, rules_text);
    assert_int_equal(spim_rules_count(f->rules), 6);

    classify(f,
             "FREE entry! txt WIN to 87121 for \xc2\xa3"
             "100",
             &v);
    assert_true(hit(&v, "FREE"));
    assert_true(hit(&v, "SHOUT"));
    assert_true(hit(&v, "SHORT"));
    assert_true(hit(&v, "POUND"));
    assert_false(hit(&v, "HAM_LOL"));
    assert_int_equal(v.hits.n, 4);
    assert_true(v.hits.score > 7.74 && v.hits.score < 7.76);
    /* No counts: Bayes is unsure and adds nothing. */
    assert_true(v.spam_probability == 0.5);
    assert_true(v.score > 7.74 && v.score < 7.76);
    assert_int_equal(v.action, SPIM_TAG);

    classify(f, "lol ok see you", &v);
    assert_int_equal(v.hits.n, 1);
    assert_true(hit(&v, "HAM_LOL"));
    assert_true(v.score < 0);
    assert_int_equal(v.action, SPIM_DELIVER);
}

static void test_rules_match_normalised_text(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;

    load(f, rules_text);
    /* Fullwidth, zero-width space inside and soft hyphen: all "free". */
    classify(f, "\xef\xbd\x86\xef\xbd\x92\xef\xbd\x85\xef\xbd\x85", &v);
    assert_true(hit(&v, "FREE"));
    assert_false(hit(&v, "SHOUT"));
    classify(f,
             "fr\xe2\x80\x8b"
             "ee",
             &v);
    assert_true(hit(&v, "FREE"));
    classify(f,
             "fr\xc2\xad"
             "ee",
             &v);
    assert_true(hit(&v, "FREE"));
    /* A UTF-8 rule with a Unicode class, on text with invalid bytes repaired. */
    classify(f, "\xff\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb7 \xfe", &v);
    assert_true(hit(&v, "CYR"));
    classify(f, "nothing here", &v);
    assert_int_equal(v.hits.n, 0);
}

static void test_rules_bad_pattern_names_line(void **state)
{
    struct fx *f = *state;
    struct spim_diag d;

    memset(&d, 0, sizeof(d));
    write_file(f->path, "# ok so far\n"
                        "GOOD 1 /fine/i\n"
                        "\n"
                        "BROKEN 2 /a(b/\n"
                        "LATER 1 /x/\n");
    assert_int_equal(spim_rules_load(f->path, &f->rules, &d), SPIM_ERULES);
    assert_null(f->rules);
    assert_string_equal(d.file, f->path);
    assert_int_equal(d.line, 4);
    assert_non_null(strstr(d.msg, "rule BROKEN: "));
    /* Hyperscan's own words follow the rule name. */
    assert_true(strlen(d.msg) > strlen("rule BROKEN: "));
}

static void test_rules_bad_syntax_names_line(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *text;
        unsigned line;
        const char *needle;
    } cases[] = {
        {"A 1 /a/\nB notanumber /b/\n", 2, "score"},
        {"A 1 /a/\nB 1e308 /b/\n", 2, "outside -1000..1000"},
        {"A -1001 /a/\n", 1, "outside -1000..1000"},
        {"A 0x10 /a/\n", 1, "decimal score"},
        {"A 1 /a/\n\n# c\nB 1 b\n", 4, "PATTERN"},
        {"A 1 /a/q\n", 1, "flag"},
        {"A-B 1 /a/\n", 1, "NAME"},
        {"A 1 /a/\nA 2 /b/\n", 2, "already defined on line 1"},
        {"A 1 //\n", 1, "empty"},
        {"JUSTNAME\n", 1, "NAME"},
        /* Only the word shadow may follow the flags, after a blank. */
        {"A 1 /a/\nB 1 /b/i enforce\n", 2, "unexpected 'enforce'"},
        {"A 1 /a/ shadow shadow\n", 1, "only 'shadow' may follow"},
        {"A 1 /a/ Shadow\n", 1, "unexpected 'Shadow'"},
        {"A 1 /a/shadow\n", 1, "flag"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        struct spim_diag d;
        struct spim_rules *r = NULL;

        memset(&d, 0, sizeof(d));
        write_file(f->path, cases[i].text);
        assert_int_equal(spim_rules_load(f->path, &r, &d), SPIM_EPARSE);
        assert_null(r);
        assert_string_equal(d.file, f->path);
        if (d.line != cases[i].line || strstr(d.msg, cases[i].needle) == NULL)
            fail_msg("case %zu: line %u: %s", i, d.line, d.msg);
    }
}

static int shadow_hit(const struct spim_verdict *v, const char *name, double *score)
{
    for (unsigned i = 0; i < v->hits.nshadow; i++) {
        if (strcmp(v->hits.shadow_names[i], name) == 0) {
            *score = v->hits.shadow_scores[i];
            return 1;
        }
    }
    return 0;
}

/* A shadow rule matches and is reported with its score, which is not added. */
static void test_rules_shadow_reported_not_added(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    double sc = 0;

    load(f, "FREE 2.5 /free/\n"
            "SHORT 3.0 /\\btxt\\b.{0,20}\\b\\d{5}\\b/is   shadow\n"
            "HAM_LOL -1.5 /\\blol\\b/i\tshadow \n"
            "POUND 1.25 /\xc2\xa3\\d+/\n");
    assert_int_equal(spim_rules_count(f->rules), 4);
    classify(f,
             "free entry! txt WIN to 87121 for \xc2\xa3"
             "100 lol",
             &v);
    assert_int_equal(v.hits.n, 2);
    assert_true(hit(&v, "FREE"));
    assert_true(hit(&v, "POUND"));
    assert_false(hit(&v, "SHORT"));
    assert_true(v.hits.scores[0] == 2.5 && v.hits.scores[1] == 1.25);
    assert_true(v.hits.score == 3.75);
    assert_int_equal(v.hits.nshadow, 2);
    assert_true(shadow_hit(&v, "SHORT", &sc) && sc == 3.0);
    assert_true(shadow_hit(&v, "HAM_LOL", &sc) && sc == -1.5);
    assert_true(v.hits.shadow_score == 1.5);
    /* The score is the enforced rules (Bayes unsure: 0); shadow apart. */
    assert_true(v.score == 3.75);
    assert_true(v.shadow_score == 1.5);
    assert_int_equal(v.action, SPIM_TAG);
    /* The rule-name list (what serve reports) holds the enforced rules only. */
    {
        char buf[64];

        spim_verdict_rules(&v, buf, sizeof(buf));
        assert_string_equal(buf, "FREE,POUND");
    }
}

/* Toggling shadow reuses the one cached database and never a stale verdict. */
static void test_rules_shadow_toggle_with_cache(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    char cpath[256];
    long size;
    double sc;

    setenv("SPIM_RULES_CACHE", f->dir, 1);
    load(f, "SHORT 3.0 /\\btxt\\b.{0,20}\\b\\d{5}\\b/is\nFREE 1 /free/\n");
    classify(f, "free txt WIN to 87121", &v);
    assert_true(hit(&v, "SHORT") && v.score == 4.0 && v.hits.nshadow == 0);
    size = cache_file(f->dir, cpath, sizeof(cpath));
    assert_true(size > 0);
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);

    load(f, "SHORT 3.0 /\\btxt\\b.{0,20}\\b\\d{5}\\b/is shadow\nFREE 1 /free/\n");
    classify(f, "free txt WIN to 87121", &v);
    assert_false(hit(&v, "SHORT"));
    assert_true(shadow_hit(&v, "SHORT", &sc) && sc == 3.0);
    assert_true(v.score == 1.0 && v.shadow_score == 3.0);
    /* Still one cache file: the database does not depend on the mark. */
    assert_int_equal(cache_file(f->dir, cpath, sizeof(cpath)), size);
    spim_scan_free(f->scan);
    spim_rules_free(f->rules);

    load(f, "SHORT 3.0 /\\btxt\\b.{0,20}\\b\\d{5}\\b/is\nFREE 1 /free/\n");
    classify(f, "free txt WIN to 87121", &v);
    assert_true(hit(&v, "SHORT") && v.score == 4.0 && v.hits.nshadow == 0);
    unlink(cpath);
    unsetenv("SPIM_RULES_CACHE");
}

static void test_rules_missing_and_empty_file(void **state)
{
    struct fx *f = *state;
    struct spim_diag d;
    struct spim_verdict v;
    struct spim_rules *r = NULL;

    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_rules_load("/nonexistent/spim.rules", &r, &d), SPIM_ENOTFOUND);
    assert_null(r);
    assert_string_equal(d.file, "/nonexistent/spim.rules");

    load(f, "# nothing but comments\n\n");
    assert_int_equal(spim_rules_count(f->rules), 0);
    classify(f, "free txt 87121", &v);
    assert_int_equal(v.hits.n, 0);
    assert_int_equal(v.action, SPIM_DELIVER);
}

static void test_rules_scans_share_database(void **state)
{
    struct fx *f = *state;
    struct spim_scan *other = NULL;
    struct spim_verdict v1, v2;
    const char *t = "txt STOP to 80062 for free";

    load(f, rules_text);
    /* A second scan clones its own scratch from the same database. */
    assert_int_equal(spim_scan_new(f->rules, &other), 0);
    classify(f, t, &v1);
    assert_int_equal(spim_classify(other, NULL, NULL, NULL, NULL, t, strlen(t), NULL, &v2), 0);
    assert_int_equal(v1.hits.n, v2.hits.n);
    assert_true(hit(&v2, "SHORT"));
    spim_scan_free(other);
}

/* Rules that are all caseless (or letterless) skip the raw-text scan of
 * ASCII text; the hits are those both scans find. */
static void test_rules_case_blind_skips_raw_scan(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;

    load(f, "WIN   1 /\\bwin(ner)?\\b/i\n"
            "NUM   1 /\\b09\\d{3}\\b/\n"
            "CLAIM 1 /claim\\s+now/is\n");
    assert_int_equal(spim__rules_case_sensitive(f->rules), 0);
    classify(f, "WINNER! Call 09123 to CLAIM NOW", &v);
    assert_int_equal(v.hits.n, 3);
    assert_true(hit(&v, "WIN") && hit(&v, "NUM") && hit(&v, "CLAIM"));
    classify(f, "a winner", &v);
    assert_int_equal(v.hits.n, 1);
    assert_true(hit(&v, "WIN"));
    classify(f, "Claim\tnow", &v); /* the tab makes the texts differ: both scanned */
    assert_int_equal(v.hits.n, 1);
    assert_true(hit(&v, "CLAIM"));
    classify(f, "nothing here 0912", &v);
    assert_int_equal(v.hits.n, 0);
}

/* One case-sensitive rule, or a caseless one that may turn caselessness
 * off, keeps both scans. */
static void test_rules_case_sensitive_keeps_raw_scan(void **state)
{
    struct fx *f = *state;
    struct spim_verdict v;
    static const char *const sensitive[] = {
        "WIN 1 /\\bwin\\b/i\nSHOUT 1 /FREE/\n",
        "WIN 1 /\\bwin\\b/i\nSHOUT 1 /(?-i:FREE)/i\n",
        "WIN 1 /\\bwin\\b/i\nSHOUT 1 /\\x46REE/\n",
        "WIN 1 /\\bwin\\b/i\nSHOUT 1 /\\106REE/\n",
    };
    unsigned i;

    for (i = 0; i < sizeof(sensitive) / sizeof(sensitive[0]); i++) {
        spim_scan_free(f->scan);
        spim_rules_free(f->rules);
        f->scan = NULL;
        f->rules = NULL;
        load(f, sensitive[i]);
        assert_int_equal(spim__rules_case_sensitive(f->rules), 1);
        classify(f, "WIN FREE stuff", &v);
        assert_int_equal(v.hits.n, 2);
        assert_true(hit(&v, "WIN") && hit(&v, "SHOUT"));
        classify(f, "win free stuff", &v);
        assert_int_equal(v.hits.n, 1);
        assert_true(hit(&v, "WIN"));
    }
}

static void test_rules_default_file(void **state)
{
    struct spim_rules *r = NULL;
    struct spim_scan *s = NULL;
    struct spim_diag d;
    struct spim_verdict v;
    const char *spam = "URGENT! You have won a guaranteed \xc2\xa3"
                       "1000 cash prize. "
                       "Call 09061701461 to claim. T&C PO Box 1234 150p/min";
    const char *ham = "haha ok i'll be home by 7 :)";

    (void)state;
    memset(&d, 0, sizeof(d));
    if (spim_rules_load(SPIM_SOURCE_DIR "/rules/default.rules", &r, &d) != 0)
        fail_msg("%s:%u: %s", d.file, d.line, d.msg);
    assert_true(spim_rules_count(r) >= 20);
    assert_int_equal(spim_scan_new(r, &s), 0);
    assert_int_equal(spim_classify(s, NULL, NULL, NULL, NULL, spam, strlen(spam), NULL, &v), 0);
    assert_true(v.hits.score >= 8.0);
    assert_int_equal(v.action, SPIM_BLOCK);
    assert_int_equal(spim_classify(s, NULL, NULL, NULL, NULL, ham, strlen(ham), NULL, &v), 0);
    assert_true(v.hits.score < 0);
    assert_int_equal(v.action, SPIM_DELIVER);
    spim_scan_free(s);
    spim_rules_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rules_load_and_match, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_match_normalised_text, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_bad_pattern_names_line, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_bad_syntax_names_line, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_missing_and_empty_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_scans_share_database, fx_setup, fx_teardown),
        cmocka_unit_test(test_rules_default_file),
        cmocka_unit_test_setup_teardown(test_rules_case_blind_skips_raw_scan, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_case_sensitive_keeps_raw_scan, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_compiled_cache, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_cache_image_checked, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_cache_pruned, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_cache_copy_survives_truncation, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_shadow_reported_not_added, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_rules_shadow_toggle_with_cache, fx_setup, fx_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
