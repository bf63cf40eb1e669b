/*
 * cli.h: what the subcommands of the spimfilter binary share: the config,
 * the engine that joins classifier and store, and output helpers.
 * cli/ is the one place that includes several module headers.
 */
#ifndef SPIM_CLI_H
#define SPIM_CLI_H

#include "classifier.h"
#include "spim.h"
#include "store.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

struct spim_policy;
struct spim_rate;
struct spim_rcpts;
struct spim_contacts_table;

/* --- Config: an INI file (inih), then flags on top. --- */
struct spim_config {
    char listen[128];    /* HOST:PORT */
    char next_hop[128];  /* HOST:PORT */
    char advertise[128]; /* HOST:PORT of our Via; default the listen address */
    char db[PATH_MAX];
    char rules[PATH_MAX];
    char block_reason[64];
    int mode_tag; /* 1: never block, tag instead */
    unsigned workers;
    int log_level;
    struct spim_thresholds th;
    struct spim_bayes_params bp;
    /* the inline path (issue 4) */
    char trusted_sources[1024]; /* comma-separated CIDRs; requests from others get 403 */
    int on_error_deliver;       /* on_error = deliver|reject when the store cannot be read */
    unsigned max_message_size;  /* bytes; larger requests get 513 */
    unsigned udp_max;           /* forwarded requests larger than this go over TCP; 0 never */
    unsigned tcp_idle_timeout;  /* seconds */
    int block_code;             /* 403 or 608 (RFC 8688) */
    char block_call_info[256];  /* 608: the Call-Info URI (purpose=jwscard) */
    /* the quarantine (issue 5) */
    double quarantine_days;     /* held records expire after this; 0 keeps them forever */
    unsigned quarantine_max_mb; /* cap on the quarantine's size; 0 no cap */
    int quarantine_full_tag;    /* quarantine_full = block (store nothing, still 403) | tag */
    /* policy: lists, files, antivirus, fan-out and bulk (issue 6, docs/policy.md) */
    char allow_list[PATH_MAX]; /* exclusion list file: deliver without checks */
    char block_list[PATH_MAX]; /* block list file: always block */
    char file_block_ext[1024], file_allow_ext[1024];     /* comma-separated extensions */
    char file_block_types[1024], file_allow_types[1024]; /* comma-separated media types */
    uint64_t file_max_size;                              /* bytes; 0 no limit */
    int invite_block_code;                               /* 488 or 403 for a blocked INVITE */
    char clamd_socket[108];               /* clamd's LocalSocket; empty: no antivirus scan */
    unsigned clamd_timeout_ms;            /* per scan step; clamd failing follows on_error */
    unsigned fanout_window, fanout_limit; /* seconds; distinct recipients per sender */
    double fanout_score;                  /* points added past the limit */
    unsigned bulk_window, bulk_limit;     /* seconds; distinct recipients per text */
    unsigned bulk_min_length;             /* normalised texts shorter than this never count */
    double bulk_score;
    unsigned rate_entries; /* counter slots per tracker (fixed at start) */
    /* the metrics endpoint of serve (issue 7): HOST:PORT; empty: none */
    char metrics_listen[128];
    /* 607 reports (issue 7, cmd_reports.c) */
    int reports_record;            /* reports = on|off: record 607 Unwanted as spam reports */
    unsigned report_min_reporters; /* distinct reporters before `reports learn` trains one */
    uint64_t report_max_entries;   /* cap on the reports database's keys; 0 no cap */
    /* who writes to whom, per-recipient policy, shadow mode, identity (issue 8, docs/policy.md) */
    int action;                      /* what spam gets: 0 deliver, 1 tag, 2 block, 3 drop */
    int contacts;                    /* contacts = on|off: keep who has written to whom */
    unsigned contacts_days;          /* a pair silent this long is forgotten */
    uint64_t contacts_max;           /* pairs kept in the store (the oldest go first) */
    unsigned contacts_memory;        /* slots of the in-memory contacts table */
    unsigned stranger_messages;      /* a sender's first N messages to someone are first contact */
    double contact_score;            /* points for a message inside an established pair */
    double stranger_score;           /* a stranger's first messages */
    double stranger_link_score;      /* a stranger's first messages with a URL or phone number */
    char recipient_policy[PATH_MAX]; /* the per-recipient policy file; empty: none */
    char local_domains[1024];        /* comma-separated: our users (outbound checks) */
    int identity_min;             /* weakest identity that counts as a contact: 0 any, 1 asserted,
                                     2 verified */
    int identity_verified_header; /* the proxy verifies Identity headers and drops failures */
    double identity_verified_score, identity_asserted_score, identity_failed_score;
};

void spim_config_defaults(struct spim_config *c);
/* Loads path over *c; on error says "path:line: reason" in err and returns SPIM_EPARSE. */
int spim_config_load(const char *path, struct spim_config *c, char *err, size_t errcap);
/* Applies one key=value (the same keys as the file); "where" prefixes errors. */
int spim_config_set(struct spim_config *c, const char *key, const char *value, char *err,
                    size_t errcap);
/* Splits "host:port" ("[v6]:port" too). */
int spim_hostport(const char *s, char *host, size_t hostcap, unsigned *port);

/* --- Engine: tokenizer, store counts, Bayes, rules, verdict. ---
 *
 * What SIGHUP reloads (config, rules, lists) is one immutable, reference-
 * counted struct spim_engine_conf. spim_engine_reload builds a new one
 * beside the current and swaps one pointer; each worker notices the new
 * generation at its next message, builds its scratch for the new rules and
 * drops its reference to the old conf, which is freed by the last one.
 * A conf that fails to load is refused and the old one stays.
 */
struct spim_engine_conf {
    int refs; /* guarded by the engine's lock */
    uint64_t generation;
    struct spim_config cfg;
    struct spim_rules *rules;   /* may be NULL */
    struct spim_policy *policy; /* lists and file policy of cfg; never NULL */
    struct spim_rcpts *rcpts;   /* the recipient_policy file; NULL when none */
};

struct spim_engine {
    struct spim_store *store;
    pthread_mutex_t lock;
    struct spim_engine_conf *conf; /* current; swapped under lock */
    _Atomic uint64_t generation;
    /* Fan-out and bulk counters: shared by the workers, kept across reloads. */
    struct spim_rate *fanout, *bulk;
    /* Who has written to whom (contacts = on), shared by the workers; NULL when off. */
    struct spim_contacts_table *contacts;
    /* The token counts classified with (model.c); swapped under lock. */
    struct spim_engine_model *model;
    _Atomic uint64_t model_generation;
    char model_root[PATH_MAX]; /* the store directory, where snapshots are dropped */
    unsigned rules_flags;      /* for spim_rules_load_ex, at open and at every reload */
};

struct spim_engine_worker {
    struct spim_engine *e;
    struct spim_store_reader *reader;
    struct spim_scan *scan;
    struct spim_engine_conf *conf;   /* the one scan was built for; a reference */
    struct spim_engine_model *model; /* the one reader reads; a reference */
    /* serve's blocked messages waiting for the group commit (judge.c) */
    unsigned npend;
    struct spim_quar_entry pend[32];
    char *pend_buf[32]; /* each entry's slices point into its own copy */
};

/*
 * Opens the store (read-only unless SPIM_ENGINE_WRITABLE) and loads the rules
 * of cfg. SPIM_ENGINE_BATCH: a batch command (classify, eval), which may use
 * the cached rules database in place (SPIM_RULES_MAP; serve copies it) and
 * judges no SIP traffic (no fan-out or bulk counters).
 */
enum { SPIM_ENGINE_WRITABLE = 1 << 0, SPIM_ENGINE_BATCH = 1 << 1 };

/* Set by a static spimfilter to its own path when it execs spimfilter-serve
 * for a network command (main.c): the program the operator ran. */
#define SPIM_PROGRAM_ENV "SPIMFILTER_PROGRAM"
int spim_engine_open(struct spim_engine *e, const struct spim_config *cfg, unsigned flags,
                     char *err, size_t errcap);
void spim_engine_close(struct spim_engine *e);
/* Loads cfg's rules (and lists) and makes them current; on error keeps the old. */
int spim_engine_reload(struct spim_engine *e, const struct spim_config *cfg, char *err,
                       size_t errcap);
int spim_engine_worker_new(struct spim_engine *e, struct spim_engine_worker **out);
/* A worker for one batch of messages: it reads the store through a snapshot
 * reader (spim_store_reader_snapshot), so it does not see training committed
 * after it was made. For classify and eval, not for serve. */
int spim_engine_worker_batch(struct spim_engine *e, struct spim_engine_worker **out);
/* A batch worker lets go of the store's pages before something that may block
 * (its next message takes them again); a no-op for other workers. */
void spim_engine_worker_release(struct spim_engine_worker *w);
void spim_engine_worker_free(struct spim_engine_worker *w);
/* Moves the worker to the current conf if a reload happened; cheap otherwise. */
int spim_engine_worker_sync(struct spim_engine_worker *w);
int spim_engine_classify(struct spim_engine_worker *w, const char *text, size_t len,
                         const struct spim_tok_meta *meta, struct spim_verdict *v);
/* The evidence of the worker's last classification, verdict v (see spim_scan_explain). */
int spim_engine_explain(struct spim_engine_worker *w, const struct spim_verdict *v,
                        struct spim_evidence *ev);
/* spim_engine_classify with the evidence of the verdict in *ev (see spim_classify_ex). */
int spim_engine_classify_ex(struct spim_engine_worker *w, const char *text, size_t len,
                            const struct spim_tok_meta *meta, struct spim_verdict *v,
                            struct spim_evidence *ev);

/* --- Model (model.c): where the token counts come from, and snapshots. ---
 *
 * The counts the workers read are one reference-counted struct
 * spim_engine_model: at first the engine's own store, or a snapshot of a
 * trainer's store (docs/scaling.md). spim_engine_snapshot_load moves the file
 * an operator dropped as DIR/snapshot.mdb into a directory of its own
 * (DIR/model.N/data.mdb), checks and opens it read-only, and swaps one
 * pointer; each worker makes a new reader at its next message (in
 * spim_engine_worker_sync) and drops the old model, whose files the last
 * reference removes. The quarantine and the reports stay in the engine's own
 * store whatever the model.
 */
struct spim_engine_model {
    int refs; /* guarded by the engine's lock */
    uint64_t generation;
    struct spim_store *store; /* counts; the engine's store (not owned) when dir is empty */
    char dir[PATH_MAX];       /* a snapshot's directory, closed at the last release */
    int retired;              /* replaced by a newer one: its directory goes with it */
};

/* The engine's own store as the first model (spim_engine_open calls it). */
int spim_engine_model_init(struct spim_engine *e);
/* Drops the engine's reference (spim_engine_close, before the store closes). */
void spim_engine_model_fini(struct spim_engine *e);
/* The current model with a reference taken; never NULL after init. */
struct spim_engine_model *spim_engine_model_get(struct spim_engine *e);
void spim_engine_model_release(struct spim_engine *e, struct spim_engine_model *m);
/* Moves the worker's reader to the current model if it changed; cheap otherwise. */
int spim_engine_model_sync(struct spim_engine_worker *w);
/*
 * Looks for DIR/snapshot.mdb and, when there is one, makes it the model. At
 * startup without one, the newest DIR/model.N left by an earlier run is
 * used again (and older ones removed). Returns 1 when the model changed, 0
 * when there was nothing to load, or an error with err filled: the file was
 * incomplete or not a store, and the running model stays (an incomplete
 * file is put back as DIR/snapshot.mdb for the next SIGHUP).
 */
int spim_engine_snapshot_load(struct spim_engine *e, int startup, char *err, size_t errcap);
/*
 * The counts serve classifies with when they are not the store's own: a
 * snapshot dropped as DB/snapshot.mdb, else the newest DB/model.N an earlier
 * run moved there (what spim_engine_snapshot_load would take, found the
 * same way, moving nothing). 1 with its path in buf, or 0.
 */
int spim_model_file(const char *db, char *buf, size_t cap);

/* --- The serve judge (judge.c): struct spim_filter_ops of filter.h. --- */
struct spim_filter_msg;
struct spim_filter_result;
void *spim_judge_worker_new(void *engine);
void spim_judge_worker_free(void *wud);
int spim_judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r);
/* Commits the quarantine writes spim_judge deferred (one transaction). */
int spim_judge_flush(void *wud);
/*
 * The same in two halves (the filter's ops.flush_take, flush_commit): take
 * moves the deferred writes out of the worker (NULL: none, or no memory),
 * commit writes them in one transaction from any thread and frees the group.
 */
void *spim_judge_flush_take(void *wud);
int spim_judge_flush_commit(void *group);
struct spim_filter_report;
/*
 * A 607 Unwanted for a MESSAGE we delivered (the filter's ops.report):
 * recorded in the store's reports (one count per recipient per normalised
 * text) unless reports = off, the sender is on the exclusion (allow) list,
 * or the recipient reports itself. Never fails the filter: errors are logged.
 */
void spim_judge_report(void *wud, const struct spim_filter_report *rep);
struct spim_filter_delivery;
/* A 2xx to a forwarded MESSAGE (the filter's ops.delivered): the pair's contacts count it. */
void spim_judge_delivered(void *wud, const struct spim_filter_delivery *d);
/*
 * Writes the contacts the workers noted since the last call (one write
 * transaction); serve calls it about once a second and at the end.
 * Returns how many records were written, or an error.
 */
int spim_judge_contacts_sync(struct spim_engine *e);

/* --- The metrics endpoint (metrics_http.c): common/metrics.h over HTTP. --- */
struct spim_metrics_http;
/*
 * Serves GET /metrics on hostport ("127.0.0.1:9464") from its own thread
 * (libmicrohttpd), reading the quarantine's size from st (may be NULL) at
 * each scrape. On failure err says why and nothing runs.
 */
int spim_metrics_http_start(const char *hostport, struct spim_store *st,
                            struct spim_metrics_http **out, char *err, size_t errcap);
/* Stops the server and waits for its thread; NULL is a no-op. */
void spim_metrics_http_stop(struct spim_metrics_http *h);
/*
 * GET http://hostport/metrics within timeout_ms: the body in a malloc'd
 * NUL-terminated *body (the caller frees). SPIM_ENET, SPIM_ETIMEOUT or
 * SPIM_EPARSE (not an HTTP 200) with err saying what happened.
 */
int spim_metrics_fetch(const char *hostport, unsigned timeout_ms, char **body, size_t *len,
                       char *err, size_t errcap);

/* --- Output --- */
/* Writes s[0..n) as a JSON string (quoted, escaped; invalid UTF-8 as U+FFFD). */
void spim_json_str(FILE *f, const char *s, size_t n);
/*
 * Writes at most max characters of s for a person to read, cut on a UTF-8
 * boundary: control characters (C0, DEL, C1: what a terminal takes as
 * escapes), Unicode's line separators and bidi overrides as spaces, but
 * newlines and tabs kept when lines is set; invalid UTF-8 as U+FFFD. Text
 * from the network is never written raw to a terminal.
 */
void spim_print_text(FILE *f, const char *s, size_t n, size_t max, int lines);
/* spim_print_text on one line: an excerpt for a table's column. */
void spim_print_excerpt(FILE *f, const char *s, size_t n, size_t max);

/* --- Subcommands: argc/argv start at the subcommand name. --- */
int spim_cmd_train(int argc, char **argv);
int spim_cmd_classify(int argc, char **argv);
int spim_cmd_serve(int argc, char **argv);
int spim_cmd_quarantine(int argc, char **argv);
int spim_cmd_eval(int argc, char **argv);
int spim_cmd_db(int argc, char **argv);
int spim_cmd_avcheck(int argc, char **argv);
int spim_cmd_stats(int argc, char **argv);
int spim_cmd_reports(int argc, char **argv);

/*
 * A labelled TSV corpus: `spam|ham<TAB>text` per line. A first line whose
 * label is neither is a header and skipped; empty lines are skipped; any
 * other bad line is an error naming the file and line.
 */
struct spim_tsv {
    char *buf;
    size_t len, pos;
    unsigned line; /* of the record just returned, 1-based */
    const char *path;
};

int spim_tsv_open(struct spim_tsv *t, const char *path, char *err, size_t errcap);
void spim_tsv_close(struct spim_tsv *t);
/* 1: a record in is_spam, text and len; 0: the end; <0: an error described in err. */
int spim_tsv_next(struct spim_tsv *t, int *is_spam, const char **text, size_t *len, char *err,
                  size_t errcap);

/*
 * Calls fn(ud, is_spam, text, len) for each record of the TSV at path ("-":
 * stdin) with the rules of spim_tsv_next, reading a line at a time: a corpus
 * of any size takes one line of memory. 0; fn's nonzero return, which ends
 * it; or an error described in err (the file and line). text lives until fn
 * returns.
 */
int spim_tsv_each(const char *path, int (*fn)(void *ud, int is_spam, const char *text, size_t len),
                  void *ud, char *err, size_t errcap);

/* Whether path is "-" (stdin) or a pipe, FIFO, socket or device: input that
 * can be read once only, and may wait on its writer. */
int spim_path_is_stream(const char *path);

/* Reads a whole file (or stdin for "-") into a malloc'd buffer. */
int spim_read_file(const char *path, char **buf, size_t *len);

#endif
