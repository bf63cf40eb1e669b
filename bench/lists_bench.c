/*
 * lists_bench.c: the cost per message of the policy lookup with a list file
 * loaded, for bench/lists.sh. Loads the allow and block files given (either
 * may be "-" for none), then times spim_policy_lookup (and the file policy)
 * over N synthetic senders that match nothing, so every structure is
 * probed to the end: the worst case for a message that goes on to the
 * spam checks.
 *
 *   spim_lists_bench ALLOW BLOCK N
 * prints: entries, load ms, ns per message.
 */
#include "policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct spim_policy *p;
    struct spim_policy_files_conf fc = {SPIM_POLICY_DEFAULT_BLOCK_EXT, NULL,
                                        SPIM_POLICY_DEFAULT_BLOCK_TYPES, NULL, 10u << 20};
    struct spim_diag d;
    struct sockaddr_in sin;
    char uri[128], ua[64], entry[256];
    uint64_t t0, t1, t2;
    unsigned long n, hits = 0;

    if (argc != 4) {
        fprintf(stderr, "usage: spim_lists_bench ALLOW|- BLOCK|- N\n");
        return 2;
    }
    n = strtoul(argv[3], NULL, 10);
    memset(&d, 0, sizeof(d));
    if (spim_policy_new(&p) != 0)
        return 1;
    t0 = spim_mono_ns();
    for (int i = 1; i <= 2; i++)
        if (strcmp(argv[i], "-") != 0 &&
            spim_policy_load_list(p, i == 1 ? SPIM_POLICY_ALLOW : SPIM_POLICY_BLOCK, argv[i], &d)) {
            fprintf(stderr, "%s:%u: %s\n", d.file, d.line, d.msg);
            return 1;
        }
    spim_policy_set_files(p, &fc, NULL);
    t1 = spim_mono_ns();
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    for (unsigned long i = 0; i < n; i++) {
        struct spim_policy_who w;

        snprintf(uri, sizeof(uri), "sip:someone%lu@sub%lu.mail.example.org:5060", i, i % 1000);
        snprintf(ua, sizeof(ua), "Client/%lu.%lu (linux)", i % 10, i % 7);
        sin.sin_addr.s_addr = htonl(0xC0A80000u + (uint32_t)(i % 65536));
        w.uri = (struct spim_slice){uri, strlen(uri)};
        w.user_agent = (struct spim_slice){ua, strlen(ua)};
        w.src = (const struct sockaddr *)&sin;
        hits += spim_policy_lookup(p, &w, entry, sizeof(entry)) != SPIM_POLICY_NONE;
    }
    t2 = spim_mono_ns();
    printf("%zu %.1f %.0f %lu\n",
           spim_policy_count(p, SPIM_POLICY_ALLOW) + spim_policy_count(p, SPIM_POLICY_BLOCK),
           (double)(t1 - t0) / 1e6, n ? (double)(t2 - t1) / (double)n : 0.0, hits);
    spim_policy_free(p);
    return 0;
}
