/*
 * rules.c: a rules file compiled into one Hyperscan block-mode database.
 *
 * All patterns go into a single hs_compile_multi() so that a message is
 * scanned once however many rules there are; each pattern's id is its index,
 * which maps a match, and a compile error (hs_compile_error_t.expression),
 * back to the rule and its line in the file. The database is immutable and
 * shared by every scan; each scan owns a scratch cloned from the prototype
 * allocated here, since Hyperscan scratch may not be used by two threads.
 * This is the only file that includes Hyperscan.
 *
 * Compiling takes Hyperscan a few hundred milliseconds for the bounded
 * repeats of the shipped rules (".{0,40}"), which would dominate a short
 * `spimfilter classify` run. So the compiled database is kept in a cache
 * directory (SPIM_RULES_CACHE, else $XDG_CACHE_HOME/spimfilter, else
 * ~/.cache/spimfilter; SPIM_RULES_CACHE=off disables it), named by a hash of
 * the Hyperscan version and every pattern with its flags, so an edited rule
 * or a new Hyperscan never meets a stale file. A cache file Hyperscan does
 * not accept (another CPU, damage) is ignored and the rules are compiled.
 * Scores and the shadow mark are not in the database (a match reports a
 * pattern's index; what it is worth is looked up in struct rule), so
 * toggling shadow or changing a score reuses the same cache file correctly.
 */
#include "classifier_int.h"

#include <errno.h>
#include <fcntl.h>
#include <hs/hs.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A cache file larger than this is not ours. */
#define CACHE_MAX ((size_t)256 << 20)
/*
 * The cache file: a page of header (CACHE_MAGIC, le64 the image's length,
 * le64 the spim_hash64 with CACHE_SEED of its first CACHE_HASHED bytes, le64
 * the key of the patterns it was compiled from (the one in its name: a file
 * copied under another rules text's name is not used), zeros), then the
 * image: the bytes of
 * the database as hs_deserialize_database_at() laid it out at a page-aligned
 * address. Mapped at a page boundary, it is a database as it was: Hyperscan's
 * bytecode holds offsets only, and the one address-dependent field (the
 * bytecode's offset, for its 64-byte alignment) comes out the same. The
 * seed is in the file's name too: a file of the older format (a serialized
 * database) has another name and is never read as an image.
 */
#define CACHE_HDR 4096
#define CACHE_MAGIC "SPIMHSI2"
/*
 * The hash covers the image's first page only: Hyperscan's header (magic,
 * version, platform, the bytecode's offset and length, its CRC) and the
 * start of the bytecode. The rest is the bytecode, whose CRC
 * hs_alloc_scratch() checks over the length the (hashed) header gives, so
 * that check stays within the image; hashing the whole image as well was a
 * second pass over 320 KiB, a twentieth of the start of a short `classify`.
 */
#define CACHE_HASHED ((size_t)4096)
#define CACHE_SEED 0x72756c6573696d32ull /* "rulesim2"; "rulesim1" named SPIMHSI1 files */

/* The hash the header holds for an image of len bytes. */
static uint64_t image_hash(const void *img, size_t len)
{
    return spim_hash64(img, len < CACHE_HASHED ? len : CACHE_HASHED, CACHE_SEED);
}

enum { DB_HS = 0, DB_COPY = 1, DB_MAPPED = 2 };

/*
 * A cache file not used for CACHE_KEEP_DAYS is removed when another is
 * written (one file per rules text ever loaded would pile up as an
 * operator edits the rules); a file in use is touched once a day when it is
 * loaded, so its modification time says when it was last used. At most
 * CACHE_PRUNE_SCAN directory entries are looked at per save.
 */
#define CACHE_KEEP_DAYS 30
#define CACHE_PRUNE_SCAN 4096

/* Longest line of a rules file; a longer one is an error, not a truncation. */
#define RULE_LINE_MAX 4096
#define RULE_NAME_MAX 63
/* More rules than any sane file has; bounds the arrays grown while reading. */
#define RULES_MAX 100000

struct rule {
    char name[RULE_NAME_MAX + 1];
    double score;
    unsigned line;
    int shadow; /* matched and reported, its score not added */
};

struct spim_rules {
    struct rule *rules;
    unsigned n;
    hs_database_t *db; /* NULL when n == 0 */
    int db_own;        /* DB_HS: Hyperscan's; DB_COPY: our copy; DB_MAPPED: in the mapping */
    void *map;         /* DB_MAPPED: the mapping, map_len bytes */
    size_t map_len;
    hs_scratch_t *scratch; /* prototype for hs_clone_scratch */
    /* Some pattern may match a text and not that text with ASCII letters of
     * another case (see case_blind); 0: the raw-text scan can be skipped. */
    int case_sensitive;
};

struct spim__rmatch {
    hs_scratch_t *scratch;
    unsigned char *marks; /* one per rule: matched in this message */
    unsigned n;
};

/* Patterns and flags while reading, freed once compiled. */
struct pending {
    char **exprs;
    unsigned *flags;
    unsigned *ids;
    unsigned cap;
};

static int is_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static int grow(struct spim_rules *r, struct pending *pd)
{
    unsigned ncap = pd->cap ? pd->cap * 2 : 32;
    void *p;

    if (ncap > RULES_MAX)
        ncap = RULES_MAX;
    p = realloc(r->rules, ncap * sizeof(*r->rules));
    if (p == NULL)
        return SPIM_ENOMEM;
    r->rules = p;
    p = realloc(pd->exprs, ncap * sizeof(*pd->exprs));
    if (p == NULL)
        return SPIM_ENOMEM;
    pd->exprs = p;
    p = realloc(pd->flags, ncap * sizeof(*pd->flags));
    if (p == NULL)
        return SPIM_ENOMEM;
    pd->flags = p;
    p = realloc(pd->ids, ncap * sizeof(*pd->ids));
    if (p == NULL)
        return SPIM_ENOMEM;
    pd->ids = p;
    pd->cap = ncap;
    return 0;
}

/*
 * Whether pattern e (Hyperscan flags fl) surely matches a text exactly where
 * it matches that text with some ASCII letters changed in case. Conservative:
 * a caseless pattern qualifies unless it has a group modifier "(?" other
 * than (?: (?= (?! (?<, a property \\p / \\P or a POSIX class (which could
 * switch caselessness off or name a case); a case-sensitive one only when
 * it has no letter and no escaped digit at all but the case-blind escapes \\b \\B \\d \\D
 * \\s \\S \\w \\W (a rule of digits like /\\b09\\d{8}\\b/).
 */
static int case_blind(const char *e, unsigned fl)
{
    const char *p;

    for (p = e; *p != '\0'; p++) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return 0;
            p++;
            /* Escaped digits may be octal codes of letters (\\101 is 'A'). */
            if ((fl & HS_FLAG_CASELESS) ? (*p == 'p' || *p == 'P')
                                        : ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                                           (*p >= '0' && *p <= '9')) &&
                                              strchr("bBdDsSwW", *p) == NULL)
                return 0;
        } else if (*p == '(' && p[1] == '?') {
            if (p[2] != ':' && p[2] != '=' && p[2] != '!' && p[2] != '<')
                return 0;
        } else if (*p == '[' && p[1] == ':') {
            return 0;
        } else if (!(fl & HS_FLAG_CASELESS) &&
                   ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))) {
            return 0;
        }
    }
    return 1;
}

/*
 * Parses one line (NUL-terminated, newline stripped) into rule r->n and its
 * pending pattern. Returns 1 for a rule, 0 for a blank or comment line, or
 * SPIM_EPARSE / SPIM_ENOMEM with diag set.
 */
static int parse_line(struct spim_rules *r, struct pending *pd, char *line, const char *path,
                      unsigned lineno, struct spim_diag *diag)
{
    char *p = line, *end, *pat, *slash, *f;
    size_t nl, len;
    unsigned hsflags = HS_FLAG_SINGLEMATCH, i;
    int shadow = 0;
    double score;
    struct rule *ru;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    len = strlen(p);
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r'))
        p[--len] = '\0';

    for (nl = 0; is_name_char(p[nl]); nl++)
        ;
    if (nl == 0 || nl > RULE_NAME_MAX || (p[nl] != ' ' && p[nl] != '\t')) {
        spim_diag_set(diag, path, lineno, (unsigned)(p - line) + 1,
                      "expected NAME ([A-Za-z0-9_]{1,63}) SCORE /PATTERN/FLAGS [shadow]");
        return SPIM_EPARSE;
    }
    for (i = 0; i < r->n; i++) {
        if (strlen(r->rules[i].name) == nl && memcmp(r->rules[i].name, p, nl) == 0) {
            spim_diag_set(diag, path, lineno, (unsigned)(p - line) + 1,
                          "rule %.*s: already defined on line %u", (int)nl, p, r->rules[i].line);
            return SPIM_EPARSE;
        }
    }
    p[nl] = '\0';
    end = p + nl + 1;
    while (*end == ' ' || *end == '\t')
        end++;
    errno = 0;
    score = strtod(end, &f);
    if (f == end || errno != 0 || !isfinite(score) || (*f != ' ' && *f != '\t') ||
        memchr(end, 'x', (size_t)(f - end)) != NULL ||
        memchr(end, 'X', (size_t)(f - end)) != NULL) {
        spim_diag_set(diag, path, lineno, (unsigned)(end - line) + 1,
                      "rule %s: expected a decimal score", p);
        return SPIM_EPARSE;
    }
    /* Bounded as the config's scores are: 32 of them can never add up to infinity. */
    if (score < -1000 || score > 1000) {
        spim_diag_set(diag, path, lineno, (unsigned)(end - line) + 1,
                      "rule %s: score %g is outside -1000..1000", p, score);
        return SPIM_EPARSE;
    }
    while (*f == ' ' || *f == '\t')
        f++;
    pat = f;
    slash = strrchr(pat, '/');
    if (*pat != '/' || slash == pat) {
        spim_diag_set(diag, path, lineno, (unsigned)(pat - line) + 1,
                      "rule %s: expected /PATTERN/FLAGS", p);
        return SPIM_EPARSE;
    }
    /* The last '/' ends the pattern; what follows is flags, then at most the word
     * "shadow" after blanks (trailing blanks were stripped above). */
    for (f = slash + 1; *f && *f != ' ' && *f != '\t'; f++) {
        switch (*f) {
        case 'i':
            hsflags |= HS_FLAG_CASELESS;
            break;
        case 's':
            hsflags |= HS_FLAG_DOTALL;
            break;
        case 'm':
            hsflags |= HS_FLAG_MULTILINE;
            break;
        case 'u':
            /* Only then: UCP classes are slower and need valid UTF-8. */
            hsflags |= HS_FLAG_UTF8 | HS_FLAG_UCP;
            break;
        default:
            spim_diag_set(diag, path, lineno, (unsigned)(f - line) + 1,
                          "rule %s: unknown flag '%c' (flags are i, s, m, u)", p, *f);
            return SPIM_EPARSE;
        }
    }
    if (*f != '\0') {
        char *word;

        while (*f == ' ' || *f == '\t')
            f++;
        word = f;
        if (strcmp(word, "shadow") != 0) {
            spim_diag_set(diag, path, lineno, (unsigned)(word - line) + 1,
                          "rule %s: unexpected '%.32s' after /PATTERN/FLAGS (only 'shadow' may "
                          "follow)",
                          p, word);
            return SPIM_EPARSE;
        }
        shadow = 1;
    }
    if (slash == pat + 1) {
        spim_diag_set(diag, path, lineno, (unsigned)(pat - line) + 1, "rule %s: empty pattern", p);
        return SPIM_EPARSE;
    }
    if (r->n == pd->cap) {
        if (pd->cap >= RULES_MAX) {
            spim_diag_set(diag, path, lineno, 1, "more than %u rules", (unsigned)RULES_MAX);
            return SPIM_EPARSE;
        }
        if (grow(r, pd) != 0) {
            spim_diag_set(diag, path, lineno, 1, "out of memory");
            return SPIM_ENOMEM;
        }
    }
    pd->exprs[r->n] = strndup(pat + 1, (size_t)(slash - pat - 1));
    if (pd->exprs[r->n] == NULL) {
        spim_diag_set(diag, path, lineno, 1, "out of memory");
        return SPIM_ENOMEM;
    }
    pd->flags[r->n] = hsflags;
    pd->ids[r->n] = r->n;
    if (!case_blind(pd->exprs[r->n], hsflags))
        r->case_sensitive = 1;
    ru = &r->rules[r->n];
    memcpy(ru->name, p, nl + 1);
    ru->score = score;
    ru->line = lineno;
    ru->shadow = shadow;
    r->n++;
    return 1;
}

static void pending_free(struct pending *pd, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++)
        free(pd->exprs[i]);
    free(pd->exprs);
    free(pd->flags);
    free(pd->ids);
}

/* The cache file of these patterns in buf; 0, or -1 when there is no cache. */
static int cache_path(const struct pending *pd, unsigned n, char *buf, size_t cap, uint64_t *key)
{
    const char *env = getenv("SPIM_RULES_CACHE"), *base = NULL, *sub = "";
    const char *ver = hs_version();
    char dir[PATH_MAX];
    uint64_t h;

    if (env != NULL && (env[0] == '\0' || strcmp(env, "off") == 0))
        return -1;
    if (env != NULL) {
        base = env;
    } else if ((base = getenv("XDG_CACHE_HOME")) != NULL && base[0] == '/') {
        sub = "/spimfilter";
    } else if ((base = getenv("HOME")) != NULL && base[0] == '/') {
        sub = "/.cache/spimfilter";
    } else {
        return -1;
    }
    h = spim_hash64(ver, strlen(ver), CACHE_SEED);
    for (unsigned i = 0; i < n; i++) {
        unsigned char fl[4] = {(unsigned char)pd->flags[i], (unsigned char)(pd->flags[i] >> 8),
                               (unsigned char)(pd->flags[i] >> 16),
                               (unsigned char)(pd->flags[i] >> 24)};

        h = spim_hash64(pd->exprs[i], strlen(pd->exprs[i]) + 1, h);
        h = spim_hash64(fl, sizeof(fl), h);
    }
    if ((size_t)snprintf(dir, sizeof(dir), "%s%s", base, sub) >= sizeof(dir))
        return -1;
    /* The parent of ~/.cache/spimfilter may be missing too; both private. */
    if (sub[0] != '\0' && strcmp(sub, "/.cache/spimfilter") == 0) {
        char parent[PATH_MAX];

        if ((size_t)snprintf(parent, sizeof(parent), "%s/.cache", base) < sizeof(parent))
            (void)mkdir(parent, 0700);
    }
    (void)mkdir(dir, 0700);
    *key = h;
    if ((size_t)snprintf(buf, cap, "%s/rules-%016llx.hsdb", dir, (unsigned long long)h) >= cap)
        return -1;
    return 0;
}

/* Writes all of p to fd; 0, or -1. */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void db_free(struct spim_rules *r)
{
    if (r->db == NULL)
        return;
    if (r->db_own == DB_MAPPED)
        munmap(r->map, r->map_len);
    else if (r->db_own == DB_COPY)
        free(r->db);
    else
        hs_free_database(r->db);
    r->db = NULL;
    r->map = NULL;
}

/*
 * The database cached at path, or NULL when there is no cache file or it is
 * not one we wrote whole. With SPIM_RULES_MAP it is used in the file's
 * mapping (DB_MAPPED), with no copy: the start of a short `classify` paid
 * for a fresh 320 KiB database each time (zero-filled pages, then
 * Hyperscan's zeroing and copy into them). spimfilter only ever replaces
 * the file by a rename (cache_save), which leaves a mapping whole; a file
 * cut short in place by someone else would kill the process with SIGBUS,
 * so only batch commands ask for it, and serve gets a copy (DB_COPY).
 * Hyperscan's own checks (magic, version, platform, CRC) run when the
 * scratch is allocated.
 */
static hs_database_t *cache_load(const char *path, uint64_t key, unsigned flags,
                                 struct spim_rules *r)
{
    const unsigned char *m;
    struct stat sb;
    void *map;
    size_t len;
    /* O_NONBLOCK: a FIFO put there must not hang the open (it fails S_ISREG below). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= CACHE_HDR ||
        (size_t)sb.st_size > CACHE_MAX) {
        close(fd);
        return NULL;
    }
    map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return NULL;
    m = map;
    len = (size_t)sb.st_size - CACHE_HDR;
    if (memcmp(m, CACHE_MAGIC, 8) != 0 || spim_get_le64(m + 8) != len ||
        spim_get_le64(m + 24) != key || spim_get_le64(m + 16) != image_hash(m + CACHE_HDR, len)) {
        munmap(map, (size_t)sb.st_size);
        return NULL;
    }
    if (time(NULL) - sb.st_mtime > 86400)
        (void)utimensat(AT_FDCWD, path, NULL, 0); /* in use: kept by cache_prune */
    if (!(flags & SPIM_RULES_MAP)) {
        /* A copy of our own, which no change to the file can take away: at the
         * same offset from a 64-byte boundary as in the mapping (page-aligned),
         * so the bytecode's offset holds. */
        void *copy = NULL;

        if (posix_memalign(&copy, 64, len) != 0) {
            munmap(map, (size_t)sb.st_size);
            return NULL;
        }
        memcpy(copy, m + CACHE_HDR, len);
        munmap(map, (size_t)sb.st_size);
        r->db_own = DB_COPY;
        return copy;
    }
    r->map = map;
    r->map_len = (size_t)sb.st_size;
    r->db_own = DB_MAPPED;
    return (hs_database_t *)(void *)((char *)map + CACHE_HDR);
}

/* Removes the cache files of path's directory (rules-*) unused for CACHE_KEEP_DAYS. */
static void cache_prune(const char *path)
{
    char dir[PATH_MAX], f[PATH_MAX];
    const char *slash = strrchr(path, '/');
    time_t old = time(NULL) - (time_t)CACHE_KEEP_DAYS * 86400;
    struct dirent *de;
    unsigned seen = 0;
    DIR *d;

    if (slash == NULL || (size_t)(slash - path) >= sizeof(dir))
        return;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    if ((d = opendir(dir)) == NULL)
        return;
    while ((de = readdir(d)) != NULL && seen++ < CACHE_PRUNE_SCAN) {
        struct stat sb;

        if (strncmp(de->d_name, "rules-", 6) != 0 ||
            (size_t)snprintf(f, sizeof(f), "%s/%s", dir, de->d_name) >= sizeof(f) ||
            strcmp(f, path) == 0)
            continue;
        if (lstat(f, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_mtime < old)
            (void)unlink(f);
    }
    closedir(d);
}

/* Writes db to path as an image (see CACHE_HDR), through a temporary file and
 * a rename, then prunes the directory; failures are ignored (the next start
 * compiles again). */
static void cache_save(const char *path, uint64_t key, const hs_database_t *db)
{
    char tmp[PATH_MAX + 32], *bytes = NULL;
    unsigned char hdr[CACHE_HDR];
    size_t len = 0, dbsize = 0;
    void *img = NULL;
    int fd, ok;

    if (hs_serialize_database(db, &bytes, &len) != HS_SUCCESS)
        return;
    if (hs_serialized_database_size(bytes, len, &dbsize) != HS_SUCCESS || dbsize == 0 ||
        dbsize > CACHE_MAX - CACHE_HDR || posix_memalign(&img, CACHE_HDR, dbsize) != 0)
        goto out;
    if (hs_deserialize_database_at(bytes, len, img) != HS_SUCCESS)
        goto out;
    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, CACHE_MAGIC, 8);
    spim_put_le64(hdr + 8, dbsize);
    spim_put_le64(hdr + 16, image_hash(img, dbsize));
    spim_put_le64(hdr + 24, key);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= sizeof(tmp))
        goto out;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out;
    ok = write_all(fd, hdr, sizeof(hdr)) == 0 && write_all(fd, img, dbsize) == 0;
    if (close(fd) != 0 || !ok || rename(tmp, path) != 0)
        unlink(tmp);
    else
        cache_prune(path);
out:
    free(img);
    free(bytes); /* hs_serialize_database allocates with malloc (the default allocator) */
}

int spim_rules_load(const char *path, struct spim_rules **out, struct spim_diag *diag)
{
    return spim_rules_load_ex(path, 0, out, diag);
}

int spim_rules_load_ex(const char *path, unsigned flags, struct spim_rules **out,
                       struct spim_diag *diag)
{
    struct spim_rules *r;
    struct pending pd = {0};
    hs_compile_error_t *cerr = NULL;
    char *line;
    FILE *fp;
    unsigned lineno = 0;
    int rc;

    if (path == NULL || out == NULL)
        return SPIM_EINVAL;
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        rc = SPIM_ENOMEM;
        goto fail_alloc;
    }
    line = malloc(RULE_LINE_MAX + 2);
    if (line == NULL) {
        rc = SPIM_ENOMEM;
        goto fail_line;
    }
    fp = fopen(path, "r");
    if (fp == NULL) {
        spim_diag_set(diag, path, 0, 0, "cannot open: %s", strerror(errno));
        rc = errno == ENOENT ? SPIM_ENOTFOUND : SPIM_EIO;
        goto fail_open;
    }
    while (fgets(line, RULE_LINE_MAX + 2, fp) != NULL) {
        size_t l = strlen(line);

        lineno++;
        if (l > 0 && line[l - 1] == '\n') {
            line[--l] = '\0';
        } else if (!feof(fp)) {
            spim_diag_set(diag, path, lineno, 0, "line longer than %d bytes", RULE_LINE_MAX);
            rc = SPIM_EPARSE;
            goto fail_read;
        }
        if (strlen(line) != l) {
            spim_diag_set(diag, path, lineno, (unsigned)strlen(line) + 1, "NUL byte in line");
            rc = SPIM_EPARSE;
            goto fail_read;
        }
        rc = parse_line(r, &pd, line, path, lineno, diag);
        if (rc < 0)
            goto fail_read;
    }
    if (ferror(fp)) {
        spim_diag_set(diag, path, lineno, 0, "read error");
        rc = SPIM_EIO;
        goto fail_read;
    }

    if (r->n > 0) {
        char cpath[PATH_MAX];
        uint64_t ckey = 0;
        int cached = cache_path(&pd, r->n, cpath, sizeof(cpath), &ckey) == 0;
        hs_error_t he = HS_SUCCESS;

        r->db = cached ? cache_load(cpath, ckey, flags, r) : NULL;
        /* A cached database another CPU's build made (Hyperscan checks the
         * platform, and the CRC, here) is dropped and the rules compiled. */
        if (r->db != NULL && hs_alloc_scratch(r->db, &r->scratch) != HS_SUCCESS) {
            db_free(r);
            r->db_own = DB_HS;
        }
        if (r->db == NULL) {
            he = hs_compile_multi((const char *const *)pd.exprs, pd.flags, pd.ids, r->n,
                                  HS_MODE_BLOCK, NULL, &r->db, &cerr);
            if (he == HS_SUCCESS && cached)
                cache_save(cpath, ckey, r->db);
        }
        if (he != HS_SUCCESS) {
            int ex = cerr ? cerr->expression : -1;
            const char *msg = (cerr && cerr->message) ? cerr->message : "compile failed";

            if (ex >= 0 && (unsigned)ex < r->n)
                spim_diag_set(diag, path, r->rules[ex].line, 0, "rule %s: %s", r->rules[ex].name,
                              msg);
            else
                spim_diag_set(diag, path, 0, 0, "%s", msg);
            hs_free_compile_error(cerr);
            r->db = NULL;
            rc = (he == HS_NOMEM) ? SPIM_ENOMEM : SPIM_ERULES;
            goto fail_read;
        }
        if (r->scratch == NULL && hs_alloc_scratch(r->db, &r->scratch) != HS_SUCCESS) {
            spim_diag_set(diag, path, 0, 0, "cannot allocate Hyperscan scratch");
            rc = SPIM_ENOMEM;
            goto fail_scratch;
        }
    }
    pending_free(&pd, r->n);
    fclose(fp);
    free(line);
    *out = r;
    return 0;

fail_scratch:
    db_free(r);
fail_read:
    pending_free(&pd, r->n);
    fclose(fp);
fail_open:
    free(line);
fail_line:
    free(r->rules);
    free(r);
fail_alloc:
    return rc;
}

void spim_rules_free(struct spim_rules *r)
{
    if (r == NULL)
        return;
    hs_free_scratch(r->scratch);
    db_free(r);
    free(r->rules);
    free(r);
}

unsigned spim_rules_count(const struct spim_rules *r)
{
    return r ? r->n : 0;
}

int spim__rules_case_sensitive(const struct spim_rules *r)
{
    return r ? r->case_sensitive : 0;
}

int spim__rmatch_new(const struct spim_rules *r, struct spim__rmatch **out)
{
    struct spim__rmatch *m;

    *out = NULL;
    if (r == NULL || r->n == 0)
        return 0;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto fail_alloc;
    m->marks = calloc(r->n, 1);
    if (m->marks == NULL)
        goto fail_marks;
    if (hs_clone_scratch(r->scratch, &m->scratch) != HS_SUCCESS)
        goto fail_scratch;
    m->n = r->n;
    *out = m;
    return 0;

fail_scratch:
    free(m->marks);
fail_marks:
    free(m);
fail_alloc:
    return SPIM_ENOMEM;
}

void spim__rmatch_free(struct spim__rmatch *m)
{
    if (m == NULL)
        return;
    hs_free_scratch(m->scratch);
    free(m->marks);
    free(m);
}

/* Whether a is b with its ASCII capitals lower-cased, all else the same. */
static int lower_of(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];

        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if ((unsigned char)a[i] != c)
            return 0;
    }
    return 1;
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to,
                    unsigned int flags, void *ctx)
{
    struct spim__rmatch *m = ctx;

    (void)from;
    (void)to;
    (void)flags;
    if (id < m->n)
        m->marks[id] = 1;
    return 0;
}

void spim__rules_match(const struct spim_rules *r, struct spim__rmatch *m, const char *a,
                       size_t alen, const char *b, size_t blen, int b_cased,
                       struct spim_rule_hits *hits)
{
    unsigned i;

    hits->n = 0;
    hits->score = 0.0;
    hits->nshadow = 0;
    hits->shadow_score = 0.0;
    if (r == NULL || m == NULL || r->db == NULL || m->n != r->n)
        return;
    memset(m->marks, 0, m->n);
    /* A scan error (only HS_SCRATCH_IN_USE or a corrupt database) leaves the
     * marks it got: the rules are a second opinion, Bayes still decides. */
    if (alen > 0)
        (void)hs_scan(r->db, a, (unsigned)alen, 0, m->scratch, on_match, m);
    /* When every pattern is case-blind and b differs from a only in ASCII
     * case (most ASCII text, whose normalisation is lower-casing), b can
     * match nothing a did not. */
    if (blen > 0 && (r->case_sensitive || (!b_cased && (alen != blen || !lower_of(a, b, blen)))))
        (void)hs_scan(r->db, b, (unsigned)blen, 0, m->scratch, on_match, m);
    for (i = 0; i < m->n; i++) {
        const struct rule *ru = &r->rules[i];

        if (!m->marks[i])
            continue;
        if (ru->shadow) {
            hits->shadow_score += ru->score;
            if (hits->nshadow < SPIM_RULES_MAX_HITS) {
                hits->shadow_names[hits->nshadow] = ru->name;
                hits->shadow_scores[hits->nshadow++] = ru->score;
            }
            continue;
        }
        hits->score += ru->score;
        if (hits->n < SPIM_RULES_MAX_HITS) {
            hits->names[hits->n] = ru->name;
            hits->scores[hits->n++] = ru->score;
        }
    }
}
