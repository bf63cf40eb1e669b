/*
 * filter.h: the SIP side of spimfilter.
 *
 * spim_sip_*    parse a datagram (raw header scan for positions, libosip2
 *               for validation and fields) into a struct spim_sip_msg that
 *               points into the datagram; extract the text of a MESSAGE.
 * spim_proxy_*  build what a stateless proxy sends: the forwarded request
 *               (our Via on top, Max-Forwards minus one, tag headers), the
 *               forwarded response (our Via value removed) and local answers
 *               (400, 403, 482, 483, 200 to OPTIONS).
 * spim_filter_* the server: UDP workers on SO_REUSEPORT sockets that run each
 *               request through the above and ask the caller's judge for a
 *               verdict on each MESSAGE (struct spim_filter_ops).
 *
 * The filter knows SIP only: classification and quarantine are behind the
 * judge callback. Nothing that arrives on a socket may crash it; a request
 * that does not parse is answered 400 when it can be answered, else dropped.
 */
#ifndef SPIM_FILTER_H
#define SPIM_FILTER_H

#include "spim.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Largest SIP message accepted (a UDP datagram). */
#define SPIM_SIP_MAX 65535

/* --- Parsing ------------------------------------------------------------------ */

struct spim_sip_msg {
    const char *buf; /* the datagram parsed (borrowed) */
    int is_request;
    int status;                     /* responses: the status code */
    struct spim_slice method, ruri; /* requests */
    struct spim_slice call_id, from, to, cseq, user_agent, content_type, content_disposition;
    struct spim_slice pai;      /* the first P-Asserted-Identity value (RFC 3325), or empty */
    int pai_verstat;            /* enum spim_verstat over every P-Asserted-Identity (worst wins) */
    struct spim_slice identity; /* the first Identity (or y) value (RFC 8224), or empty */
    struct spim_slice body;     /* the declared Content-Length bytes */
    size_t headers_end;         /* offset of the empty line ending the headers */
    size_t msg_len;             /* start line + headers + body: what is forwarded */
    size_t via_line;            /* offset of the first Via header line */
    size_t via_value, via_value_end; /* the first Via value (up to a comma or the EOL) */
    size_t via_hdr_end;              /* end of the first Via header line, CRLF included */
    int via_single;                  /* the first Via header holds only one value */
    size_t maxfwd_value, maxfwd_len; /* Max-Forwards value, 0 length when absent */
    size_t cl_line, cl_line_end;     /* the (last) Content-Length header line, if any */
    long max_forwards;               /* -1 when absent */
    uint64_t cseq_num;
    /* The top Via, decoded */
    struct spim_slice via_host, via_branch, via_received, via_rport;
    unsigned via_port;  /* 0 when absent */
    int via_has_rport;  /* ;rport present (with or without a value) */
    unsigned via_count; /* Via values in the message */
    void *osip;         /* the osip_message_t, owned: spim_sip_msg_free */
};

/*
 * Parses buf[0..len) (which must stay alive as long as *m). On failure
 * returns SPIM_EPARSE and writes a short reason to err; m->via_* and the
 * header slices may still be filled enough to answer 400 (check
 * spim_sip_can_answer()).
 */
int spim_sip_parse(const char *buf, size_t len, struct spim_sip_msg *m, char *err, size_t errcap);
/*
 * Makes the SIP parser ready (libosipparser2 is loaded at the first use, not
 * linked); spim_sip_parse calls it. 0, or SPIM_EIO with the reason in err
 * when the library cannot be loaded: serve checks this before it starts.
 */
int spim_sip_init(char *err, size_t errcap);
void spim_sip_msg_free(struct spim_sip_msg *m);
/* Whether m has what a local answer needs: a Via, From, To, Call-ID, CSeq. */
int spim_sip_can_answer(const struct spim_sip_msg *m);
/*
 * The URI of a From, To or P-Asserted-Identity value: inside <...>, or up to
 * the first ';'. A quoted display name is skipped first: it may hold a '<'
 * and a whole other URI ("\"<sip:ceo@corp>\" <sip:x@y>" is sip:x@y). The
 * slice points into v; it is empty when a quote is left open.
 */
struct spim_slice spim_sip_uri_of(struct spim_slice v);

/* Kinds of MESSAGE body, for what the filter does with it. */
enum spim_body_kind {
    SPIM_BODY_TEXT = 0, /* text found: classify it */
    SPIM_BODY_NONE,     /* empty, or a notification (isComposing, IMDN): pass unscored */
    SPIM_BODY_OTHER,    /* not text (a file, an image): pass to the file checks */
};

/* A payload for the file checks: a non-text body or part, or a named attachment. */
struct spim_sip_file {
    struct spim_slice content_type; /* as written, parameters included */
    struct spim_slice name;         /* Content-Disposition filename, or empty */
    struct spim_slice data;         /* the bytes (empty for an INVITE's offer) */
    uint64_t size;                  /* data.len, or the size the offer declares */
};

#define SPIM_SIP_MAX_FILES 8

struct spim_sip_files {
    unsigned n;
    struct spim_sip_file f[SPIM_SIP_MAX_FILES];
};

/*
 * spim_sip_body_text and, into files (may be NULL), every payload that is
 * not text or that carries a file name (at most SPIM_SIP_MAX_FILES).
 */
enum spim_body_kind spim_sip_body(const struct spim_sip_msg *m, char *out, size_t cap,
                                  size_t *out_len, struct spim_sip_files *files);

/*
 * The files an INVITE's SDP offers (RFC 5547: m=message with
 * a=file-selector name, type, size). Returns how many were found.
 */
unsigned spim_sip_sdp_files(const struct spim_sip_msg *m, struct spim_sip_files *files);

/*
 * Extracts the text of a MESSAGE body into out (UTF-8, at most cap bytes):
 * text/plain in any charset iconv knows, message/cpim's inner content,
 * every text part of a multipart body. Returns the kind; *out_len the bytes.
 */
enum spim_body_kind spim_sip_body_text(const struct spim_sip_msg *m, char *out, size_t cap,
                                       size_t *out_len);

/* --- Proxy --------------------------------------------------------------------- */

/* Who we are on the wire: our Via sent-by. */
struct spim_proxy_self {
    char host[64];
    unsigned port;
};

/* A growable output buffer with a hard cap (SPIM_SIP_MAX + headers we add). */
struct spim_buf {
    char *p;
    size_t len, cap;
};

/* A header to add to a forwarded request, e.g. X-SPIM-Score. */
struct spim_proxy_header {
    const char *name, *value;
};

/* Draws the per-process secret of our branches (spim_filter_new calls it). */
void spim_proxy_init(void);
/* The deterministic branch of our Via for this request (RFC 3261 16.11). */
void spim_proxy_branch(const struct spim_sip_msg *m, char *out, size_t cap);
/* The same for a request that came on TCP connection conn (carried in the branch). */
void spim_proxy_branch_conn(const struct spim_sip_msg *m, uint32_t conn, char *out, size_t cap);

/* Whether the request already carries our Via (a loop: 482). */
int spim_proxy_is_loop(const struct spim_sip_msg *m, const struct spim_proxy_self *self);

/* Whether an OPTIONS request is addressed to the filter itself. */
int spim_proxy_is_for_us(const struct spim_sip_msg *m, const struct spim_proxy_self *self);

/* How a request is forwarded. */
struct spim_proxy_fwd {
    int tcp;       /* our Via says TCP: it goes to the next hop over TCP */
    uint32_t conn; /* the TCP connection it came on (0: UDP), carried in our branch */
    const struct spim_proxy_header *extra;
    size_t nextra;
    const char *branch; /* spim_proxy_branch_conn(m, conn) made already, or NULL */
};

/*
 * Writes the request to forward into out: our Via on top, received/rport on
 * the previous top Via (src is where it came from), Max-Forwards minus one
 * (70 added when absent), extra headers before the empty line; everything
 * else byte for byte. SPIM_ETOOBIG if it does not fit. how may be NULL.
 */
int spim_proxy_forward_request(const struct spim_sip_msg *m, const struct spim_proxy_self *self,
                               const struct sockaddr_storage *src, const struct spim_proxy_fwd *how,
                               struct spim_buf *out);

/*
 * For a response: checks that its top Via is ours (SPIM_ENOTFOUND if not),
 * writes it without our Via value into out and the next hop (the next Via's
 * received/rport or sent-by, port 5060 when none) into *dst, and into
 * *conn the TCP connection the request came on (0: none).
 */
int spim_proxy_forward_response(const struct spim_sip_msg *m, const struct spim_proxy_self *self,
                                struct spim_buf *out, struct sockaddr_storage *dst,
                                socklen_t *dstlen, uint32_t *conn);

/*
 * A local answer to request m: status line, every Via in order, From, To
 * with a deterministic tag, Call-ID, CSeq, a Server header, extra header
 * lines (may be NULL, each ending CRLF), Content-Length: 0. A 200 without
 * extra lines is a silent drop's: no Server header and a plain tag, so the
 * sender cannot tell it from its recipient's. *dst: where RFC 3261 18.2.2
 * and RFC 3581 say (the source address when rport or received apply).
 */
int spim_proxy_answer(const struct spim_sip_msg *m, int code, const char *reason, const char *extra,
                      const struct sockaddr_storage *src, struct spim_buf *out,
                      struct sockaddr_storage *dst, socklen_t *dstlen);

/* --- Server --------------------------------------------------------------------- */

/* What the judge is told of one MESSAGE, or of an INVITE that offers files. */
enum spim_filter_kind {
    SPIM_FMSG_MESSAGE = 0, /* a MESSAGE: text and/or files */
    SPIM_FMSG_INVITE = 1,  /* an INVITE whose SDP offers files (no text) */
};

struct spim_filter_msg {
    int kind;               /* enum spim_filter_kind */
    struct spim_slice text; /* extracted UTF-8 text (may be empty) */
    struct spim_slice raw;  /* the whole request as received */
    struct spim_slice from, to, call_id, user_agent;
    struct spim_slice from_uri; /* the URI of From, without display name or parameters */
    struct spim_slice ruri;     /* the Request-URI */
    struct spim_slice pai_uri;  /* the URI of P-Asserted-Identity, or empty */
    struct spim_slice identity; /* the Identity header's value, or empty */
    int verstat; /* enum spim_verstat: the proxy's verification result in P-Asserted-Identity */
    const struct spim_sip_files *files; /* payloads for the file checks (n may be 0) */
    const struct sockaddr_storage *src;
    const char *source; /* "ip:port" */
    uint64_t txn_key;   /* same for every retransmission of the request */
};

/*
 * The verification result a proxy passes downstream in the verstat URI
 * parameter of From or P-Asserted-Identity (3GPP TS 24.229, ATIS-1000074:
 * "TN-Validation-Passed", "TN-Validation-Failed", "No-TN-Validation").
 */
enum spim_verstat {
    SPIM_VERSTAT_NONE = 0,   /* absent, or No-TN-Validation */
    SPIM_VERSTAT_PASSED = 1, /* TN-Validation-Passed */
    SPIM_VERSTAT_FAILED = 2, /* TN-Validation-Failed */
};

/* The verstat parameters of a header value (case-insensitive; Failed wins over Passed). */
int spim_sip_verstat(struct spim_slice value);

/* The judge's answer. */
struct spim_filter_result {
    int action; /* enum spim_action of classifier.h: 0 deliver, 1 tag, 2 block */
    double score, spam_probability;
    char rules[512]; /* names of the matched rules and policy entries, comma-separated */
    int code; /* block: the status to answer (0: block_code); 200: a silent drop (200 OK, held) */
    int deferred; /* block: the quarantine write waits for ops->flush (group commit) */
    /* deliver, tag: the judge's keys of sender and recipient, handed back in
     * ops->delivered when a 2xx to this request comes back (0: not counted) */
    uint64_t sender_key, recipient_key;
};

/*
 * A recipient refused a MESSAGE we delivered with 607 Unwanted (RFC 8197):
 * what it was, from the filter's short memory of what it forwarded.
 */
struct spim_filter_report {
    struct spim_slice from_uri; /* the sender */
    struct spim_slice to_uri;   /* the recipient who reported it */
    struct spim_slice text;     /* the text that was delivered (may be cut at 1 KiB) */
    struct spim_slice call_id;
    const char *source; /* who sent the 607: "ip:port" */
};

/*
 * A 2xx response to a MESSAGE we forwarded went back upstream: it was
 * delivered. The parties are the judge's own keys from the request's
 * verdict (struct spim_filter_result), never the response's From and To,
 * which the answering side writes; each forwarded request is counted once,
 * however often its 2xx is retransmitted.
 */
struct spim_filter_delivery {
    uint64_t sender_key, recipient_key;
    int status;
};

struct spim_filter_ops {
    /* Per-worker state (scratch, store reader): called in the worker thread. */
    void *(*worker_new)(void *ud);
    void (*worker_free)(void *wud);
    /*
     * Classifies m and, when the action is block, quarantines it (committed)
     * before returning. Non-zero: the verdict could not be made or stored;
     * the filter then answers 503 and delivers nothing.
     */
    int (*judge)(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r);
    /*
     * Optional: commits what judge deferred (one write for a batch of blocked
     * messages). The filter calls it before sending the answers of a batch;
     * non-zero: nothing was stored, and the deferred blocks are not answered
     * (the sender retransmits, and the next attempt is judged again).
     */
    int (*flush)(void *wud);
    /* Optional: records a 607 report; called in the worker that got the 607. */
    void (*report)(void *wud, const struct spim_filter_report *rep);
    /* Optional: a 2xx to a forwarded MESSAGE was relayed (first contact, judge.c). */
    void (*delivered)(void *wud, const struct spim_filter_delivery *d);
    /*
     * Optional, both or neither: flush in two halves, so that the commit
     * (which waits for the disk) runs in a thread of its own while the worker
     * goes on. flush_take (worker thread) moves what judge deferred into a
     * group and returns it: NULL when nothing was deferred or there is no
     * memory (the filter then calls flush). flush_commit (any thread) commits
     * the group and frees it, with flush's result: 0 stored, else nothing was.
     */
    void *(*flush_take)(void *wud);
    int (*flush_commit)(void *group);
};

/* A network in CIDR form, for trusted_sources. */
struct spim_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};

/* Parses "10.0.0.0/8", "::1/128" or a bare address. */
int spim_cidr_parse(const char *s, struct spim_cidr *out);
/* Parses a comma-separated list into out (at most cap); bad gets the entry that failed. */
int spim_cidr_list_parse(const char *s, struct spim_cidr *out, unsigned cap, unsigned *n, char *bad,
                         size_t badcap);
/* Whether the address is inside one of the n networks. */
int spim_cidr_match(const struct spim_cidr *nets, size_t n, const struct sockaddr_storage *ss);

#define SPIM_FILTER_MAX_TRUSTED 64

struct spim_filter_config {
    char listen_host[64];
    unsigned listen_port;
    char next_host[64];
    unsigned next_port;
    struct spim_proxy_self self; /* our Via; defaults to the listen address */
    unsigned workers;            /* 0: the number of cores */
    char block_reason[64];       /* reason phrase of the 403 */
    int block_code;              /* 403 (0 too) or 608 Rejected (RFC 8688) */
    char block_call_info[256];   /* 608: Call-Info URI (purpose=jwscard), may be empty */
    /* Requests are taken only from these (0 networks: loopback only). */
    struct spim_cidr trusted[SPIM_FILTER_MAX_TRUSTED];
    unsigned ntrusted;
    int on_error_deliver;    /* the judge failed (store unreadable): deliver, else 503 */
    size_t max_message_size; /* larger requests get 513 (0: SPIM_SIP_MAX) */
    size_t udp_max;          /* forwarded requests larger than this go over TCP (0: never) */
    unsigned tcp_idle_s;     /* idle TCP connections are closed after this (0: 300 s) */
    unsigned tcp_max_conns;  /* per worker (0: 1024) */
};

struct spim_filter;

/* Binds the sockets (errors here are the caller's to report) and starts nothing yet. */
int spim_filter_new(const struct spim_filter_config *cfg, const struct spim_filter_ops *ops,
                    void *ud, struct spim_filter **out, char *err, size_t errcap);
/* Starts the worker threads and returns; the caller's thread stays free for signals. */
int spim_filter_start(struct spim_filter *f);
/*
 * Applies a reloaded config's trusted networks, block answer (code, reason,
 * Call-Info), on_error, max_message_size, udp_max and tcp_idle_timeout to
 * the running filter: each request after it sees all of them, none sees a
 * mix. The sockets, the next hop, our Via and the workers stay as started.
 * Call it from one thread at a time; 0 or SPIM_ENOMEM (the old ones stay).
 */
int spim_filter_reconfigure(struct spim_filter *f, const struct spim_filter_config *cfg);
/* Waits until the workers have stopped (after spim_filter_stop) and frees them. */
void spim_filter_wait(struct spim_filter *f);
/* Async-signal-safe: asks the workers to finish what they hold and stop. */
void spim_filter_stop(struct spim_filter *f);
void spim_filter_free(struct spim_filter *f);

/* Where the answer to one message goes. */
enum spim_out_how {
    SPIM_OUT_NONE = 0,     /* nothing to send (dropped, keep-alive) */
    SPIM_OUT_UDP = 1,      /* a datagram to dst */
    SPIM_OUT_CONN = 2,     /* on the TCP connection conn (a response, a local answer) */
    SPIM_OUT_NEXT_TCP = 3, /* to the next hop over TCP (a request too large for UDP) */
};

struct spim_filter_out {
    struct spim_buf buf;
    int how;     /* enum spim_out_how */
    int pending; /* a block whose quarantine write waits for ops->flush */
    struct sockaddr_storage dst;
    socklen_t dstlen;
    uint32_t conn;
};

/*
 * Handles one message as a worker does (in_conn: the TCP connection it came
 * on, 0 for UDP) and says in out what to send where. For tests and the
 * server loop.
 */
struct spim_filter_worker;
struct spim_filter_worker *spim_filter_worker_new(struct spim_filter *f);
void spim_filter_worker_free(struct spim_filter_worker *w);
void spim_filter_handle(struct spim_filter_worker *w, const char *buf, size_t len,
                        const struct sockaddr_storage *src, uint32_t in_conn,
                        struct spim_filter_out *out);

/* --- SIP client ----------------------------------------------------------------
 * One non-INVITE client transaction over UDP (RFC 3261 17.1.2), used to send
 * a quarantined request again (`quarantine release`). See client.c.
 */

#define SPIM_CLIENT_T1_MS 500  /* RFC 3261 T1: first retransmission interval */
#define SPIM_CLIENT_T2_MS 4000 /* RFC 3261 T2: the cap of the doubling */

struct spim_client_opts {
    char host[64]; /* the next hop */
    unsigned port;
    unsigned t1_ms, t2_ms; /* 0: SPIM_CLIENT_T1_MS, SPIM_CLIENT_T2_MS */
    unsigned timeout_ms;   /* timer F; 0: 64 * T1 (32 s) */
};

struct spim_client_result {
    int status;           /* the final response's code; 0 when none came */
    char reason[128];     /* its reason phrase */
    unsigned sent;        /* transmissions of the request (1 + retransmissions) */
    unsigned provisional; /* 1xx responses received */
    char branch[64];      /* the branch of our Via */
    char local[64];       /* our "ip:port": the Via sent-by */
    uint64_t elapsed_ms;
};

/*
 * Writes into out (cap at least len + 512) the request raw[0..len) with a
 * Via "SIP/2.0/UDP via_host:via_port;branch=BRANCH;rport" on top and
 * Max-Forwards minus one (70 added when absent); every other byte as it was.
 * SPIM_EPARSE when raw does not parse, SPIM_EINVAL for a response, an
 * INVITE or ACK, or Max-Forwards 0; err says why.
 */
int spim_client_build(const char *raw, size_t len, const char *via_host, unsigned via_port,
                      const char *branch, struct spim_buf *out, char *err, size_t errcap);

/*
 * Sends raw as a new client transaction to o->host:o->port from an
 * ephemeral port and waits for the final response (1xx are provisional).
 * Returns 0 when a final response came (any code: see res->status),
 * SPIM_ETIMEOUT when timer F fired, SPIM_ENET when the next hop cannot be
 * resolved or is down (ICMP port unreachable on the connected socket), or
 * the build's errors. err always says what happened when non-zero. Blocks
 * the calling thread for at most the timeout.
 */
int spim_client_request(const char *raw, size_t len, const struct spim_client_opts *o,
                        struct spim_client_result *res, char *err, size_t errcap);

#endif
