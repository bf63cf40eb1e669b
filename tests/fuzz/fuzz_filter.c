/*
 * fuzz_filter.c: libFuzzer target over the whole per-message path of the
 * filter: parse (raw scan + libosip2) -> body text and files -> classify
 * (real tokenizer, Hyperscan rules from rules/default.rules, Bayes over a
 * real LMDB store trained on a few lines) -> forward or answer. Each input
 * is one datagram from a trusted source, and once more as a TCP-received
 * message.
 *
 *   CC=clang cmake -S . -B build/fuzz -DSPIM_FUZZ=ON
 *   cmake --build build/fuzz --target fuzz_filter
 *   build/fuzz/tests/fuzz/fuzz_filter -max_total_time=60 tests/inputs/sip
 */
#include "classifier.h"
#include "filter.h"
#include "store.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fz {
    struct spim_store *store;
    struct spim_rules *rules;
    struct spim_store_reader *reader;
    struct spim_scan *scan;
    struct spim_bayes_params bp;
    struct spim_thresholds th;
};

static struct fz fz;
static struct spim_filter *filter;
static struct spim_filter_worker *worker;
static char *outbuf;

static int lookup(void *ud, struct spim_token *t, size_t n, struct spim_totals *tot)
{
    return spim_store_lookup(ud, t, n, tot);
}

static const struct spim_counts_ops counts = {.lookup = lookup};

static void *wnew(void *ud)
{
    return ud;
}

static int judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    struct fz *z = wud;
    struct spim_verdict v;

    if (spim_classify(z->scan, &counts, z->reader, &z->bp, &z->th, m->text.p, m->text.len, NULL,
                      &v) != 0)
        return -1;
    r->action = (int)v.action;
    r->score = v.score;
    r->spam_probability = v.spam_probability;
    spim_verdict_rules(&v, r->rules, sizeof(r->rules));
    return 0;
}

static const struct spim_filter_ops ops = {.worker_new = wnew, .judge = judge};

static void train(void)
{
    static const char *spam[] = {"WIN a free prize now call 09061234567", "claim your cash"};
    static const char *ham[] = {"see you at lunch", "ok talk later"};
    struct spim_store_batch *b;
    struct spim_token toks[SPIM_TOK_MAX];

    if (spim_store_batch_new(fz.store, &b) != 0)
        abort();
    for (int i = 0; i < 2; i++) {
        size_t n = spim_scan_tokens(fz.scan, spam[i], strlen(spam[i]), NULL, toks, SPIM_TOK_MAX);
        spim_store_batch_add(b, toks, n, 1, 1);
        n = spim_scan_tokens(fz.scan, ham[i], strlen(ham[i]), NULL, toks, SPIM_TOK_MAX);
        spim_store_batch_add(b, toks, n, 0, 1);
    }
    if (spim_store_batch_commit(b) != 0)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/spim-fuzz-XXXXXX", err[128];
    struct spim_filter_config cfg;
    struct spim_diag d;

    (void)argc;
    (void)argv;
    spim_log_set_level(-1);
    if (mkdtemp(dir) == NULL || spim_store_open(dir, SPIM_STORE_CREATE, 0, &fz.store) != 0 ||
        spim_rules_load(SPIM_SOURCE_DIR "/rules/default.rules", &fz.rules, &d) != 0 ||
        spim_store_reader_new(fz.store, &fz.reader) != 0 || spim_scan_new(fz.rules, &fz.scan) != 0)
        abort();
    spim_bayes_defaults(&fz.bp);
    spim_thresholds_defaults(&fz.th);
    train();
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.listen_host, sizeof(cfg.listen_host), "127.0.0.1");
    snprintf(cfg.next_host, sizeof(cfg.next_host), "127.0.0.1");
    cfg.next_port = 5080;
    snprintf(cfg.self.host, sizeof(cfg.self.host), "127.0.0.1");
    cfg.self.port = 5070;
    cfg.workers = 1;
    cfg.udp_max = 1300;
    if (spim_filter_new(&cfg, &ops, &fz, &filter, err, sizeof(err)) != 0)
        abort();
    worker = spim_filter_worker_new(filter);
    outbuf = malloc(SPIM_SIP_MAX + 8192);
    if (worker == NULL || outbuf == NULL)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_storage src;
    struct sockaddr_in *sin = (struct sockaddr_in *)&src;
    struct spim_filter_out out;

    if (size > SPIM_SIP_MAX)
        return 0;
    memset(&src, 0, sizeof(src));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(5060);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (uint32_t conn = 0; conn < 2; conn++) {
        memset(&out, 0, sizeof(out));
        out.buf = (struct spim_buf){outbuf, 0, SPIM_SIP_MAX + 8192};
        spim_filter_handle(worker, (const char *)data, size, &src, conn ? 0x1001 : 0, &out);
        if (out.buf.len > out.buf.cap)
            abort();
    }
    return 0;
}
