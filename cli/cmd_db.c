/*
 * cmd_db.c: `spimfilter db stats` and `spimfilter db prune`: what the store
 * holds, and dropping tokens that carry no weight (seen in too few
 * messages) or are stale (not trained for D days). Prune runs in one write
 * transaction while a running `serve` goes on reading; LMDB reuses the
 * freed pages, the file does not shrink.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter db stats --db DIR [--format text|jsonl]\n"
               "       spimfilter db prune --db DIR [--min-count N] [--max-age-days D] "
               "[--dry-run]\n"
               "       spimfilter db snapshot --db DIR --out FILE\n"
               "\n"
               "  stats            tokens, messages trained, learned-message cache, size on\n"
               "                   disk, map size\n"
               "  prune            drop tokens seen in fewer than N messages (ham + spam) and/or\n"
               "                   tokens (and cached messages) not trained for D days\n"
               "  --dry-run        count what prune would drop, change nothing\n"
               "  snapshot         write a compact, consistent copy of the store to FILE while\n"
               "                   serve and train go on; drop it as DIR/snapshot.mdb of another\n"
               "                   instance and send that serve SIGHUP (docs/scaling.md)\n");
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (*s == '\0' || *s == '-' || *end != '\0' || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int cmd_stats(const char *db, int jsonl)
{
    struct spim_store *st = NULL;
    struct spim_store_stats s;
    int rc = spim_store_open(db, SPIM_STORE_RDONLY, 0, &st);

    if (rc == 0)
        rc = spim_store_stats(st, &s);
    spim_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "spimfilter db stats: %s: %s\n", db, spim_strerror(rc));
        return 1;
    }
    if (jsonl) {
        printf("{\"tokens\":%llu,\"spam_msgs\":%llu,\"ham_msgs\":%llu,\"learned\":%llu,"
               "\"file_bytes\":%llu,\"disk_bytes\":%llu,\"used_bytes\":%llu,\"free_bytes\":%llu,"
               "\"map_size\":%llu}\n",
               (unsigned long long)s.tokens, (unsigned long long)s.spam_msgs,
               (unsigned long long)s.ham_msgs, (unsigned long long)s.learned,
               (unsigned long long)s.file_bytes, (unsigned long long)s.disk_bytes,
               (unsigned long long)s.used_bytes, (unsigned long long)s.free_bytes,
               (unsigned long long)s.map_size);
        return 0;
    }
    printf("store:            %s\n", db);
    printf("tokens:           %llu\n", (unsigned long long)s.tokens);
    printf("messages trained: %llu spam, %llu ham\n", (unsigned long long)s.spam_msgs,
           (unsigned long long)s.ham_msgs);
    printf("learned cache:    %llu messages\n", (unsigned long long)s.learned);
    printf("size on disk:     %.1f MiB (file %.1f MiB, pages in use %.1f MiB, free for reuse "
           "%.1f MiB)\n",
           (double)s.disk_bytes / 1048576.0, (double)s.file_bytes / 1048576.0,
           (double)s.used_bytes / 1048576.0, (double)s.free_bytes / 1048576.0);
    printf("map size:         %.1f MiB\n", (double)s.map_size / 1048576.0);
    return 0;
}

/* LMDB's compacting copy (store.h spim_store_snapshot), renamed into place when whole. */
static int cmd_snapshot(const char *db, const char *out)
{
    struct spim_store *st = NULL;
    struct stat sb;
    int64_t t0 = spim_now_us();
    int rc;

    if (out == NULL) {
        fprintf(stderr, "spimfilter db snapshot: give --out FILE\n");
        return 2;
    }
    rc = spim_store_open(db, SPIM_STORE_RDONLY, 0, &st);
    if (rc == 0)
        rc = spim_store_snapshot(st, out);
    spim_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "spimfilter db snapshot: %s -> %s: %s\n", db, out, spim_strerror(rc));
        return 1;
    }
    printf("snapshot of %s written to %s: %lld bytes in %lld ms\n", db, out,
           stat(out, &sb) == 0 ? (long long)sb.st_size : -1LL,
           (long long)((spim_now_us() - t0) / 1000));
    return 0;
}

static int cmd_prune(const char *db, uint32_t min_count, uint32_t max_age, int dry_run)
{
    struct spim_store *st = NULL;
    uint64_t removed = 0, lrem = 0;
    int rc;

    if (min_count == 0 && max_age == 0) {
        fprintf(stderr, "spimfilter db prune: nothing to prune by: give --min-count N (N >= 1) "
                        "and/or --max-age-days D (D >= 1)\n");
        return 2;
    }
    rc = spim_store_open(db, 0, 0, &st);
    if (rc == 0)
        rc = spim_store_prune(st, min_count, max_age, spim_now_us(), dry_run, &removed, &lrem);
    spim_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "spimfilter db prune: %s: %s\n", db, spim_strerror(rc));
        return 1;
    }
    printf("%s %llu tokens and %llu learned-cache entries\n", dry_run ? "would drop" : "dropped",
           (unsigned long long)removed, (unsigned long long)lrem);
    return 0;
}

int spim_cmd_db(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"format", required_argument, NULL, 'f'},
        {"min-count", required_argument, NULL, 'n'},
        {"max-age-days", required_argument, NULL, 'a'},
        {"dry-run", no_argument, NULL, 'y'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL, *sub, *out = NULL;
    uint32_t min_count = 0, max_age = 0;
    int c, jsonl = 0, dry_run = 0;

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
            if (strcmp(optarg, "jsonl") == 0) {
                jsonl = 1;
            } else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, "spimfilter db: --format: text or jsonl\n");
                return 2;
            }
            break;
        case 'n':
            if (parse_u32(optarg, &min_count) != 0) {
                fprintf(stderr, "spimfilter db: --min-count: a count\n");
                return 2;
            }
            break;
        case 'a':
            if (parse_u32(optarg, &max_age) != 0) {
                fprintf(stderr, "spimfilter db: --max-age-days: a number of days\n");
                return 2;
            }
            break;
        case 'o':
            out = optarg;
            break;
        case 'y':
            dry_run = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (db == NULL || optind < argc - 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(sub, "stats") == 0)
        return cmd_stats(db, jsonl);
    if (strcmp(sub, "snapshot") == 0)
        return cmd_snapshot(db, out);
    if (strcmp(sub, "prune") == 0)
        return cmd_prune(db, min_count, max_age, dry_run);
    fprintf(stderr, "spimfilter db: unknown subcommand '%s'\n", sub);
    usage(stderr);
    return 2;
}
