/*
 * tokenizer.c: bytes of a short IM message -> distinct 64-bit token keys.
 *
 * IM and SMS spam is short and obfuscated: "FR33 entry!! txt WIN to 87121",
 * fullwidth letters, zero-width spaces inside words, "f r e e". So the text
 * is first repaired to valid UTF-8 and normalised (NFKC folds fullwidth and
 * compatibility forms, case folding removes capitals, default-ignorable and
 * format characters are dropped), then cut into words, URLs, numbers,
 * phone numbers, short codes and emoji. Obfuscations get an extra token of
 * their plain form (de-leeted words, joined spaced letters) so they share
 * evidence with the plain word, and meta tokens carry what normalisation
 * erased (capitals, exclamation marks, length).
 *
 * Every scan over the text advances by at least one byte per step and stops
 * at its length; token texts are built in fixed buffers and truncated.
 */
#include "classifier_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
/* The keys are spim_hash64 (XXH3) of a few bytes each, tens per message: inlined,
 * the hash costs less than the call into libxxhash did. Same algorithm, same keys. */
#define XXH_INLINE_ALL
#include <xxhash.h>

/* Longest token text (bytes); longer words are cut at a codepoint boundary. */
#define TOK_TEXT_MAX 96
#define WORD_MAX 48
/* Path words of one URL that become tokens: the rest is noise. */
#define URL_PATH_WORDS 8
/* A phone number has at most this many digits; longer runs are cut. */
#define PHONE_DIGITS_MAX 20

/*
 * NFKC + drop default-ignorables; control characters stripped, newlines kept.
 * Case folding comes after the look-alike pass, which needs the case: the
 * capital Cyrillic "Н" imitates 'H', its small "н" imitates nothing.
 */
#define NORM_OPTS                                                                                  \
    (UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_IGNORE | UTF8PROC_STRIPCC |   \
     UTF8PROC_NLF2LF)

/* The look-alike table, generated at build time from ICU's confusables. */
#include "confusables.h"

/* --- UTF-8 repair ----------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p[0..n), or 0 if it is not one. */
static size_t utf8_valid_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = (c == 0xE0) ? 0xA0 : 0x80, hi = (c == 0xED) ? 0x9F : 0xBF;

        if (n < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = (c == 0xF0) ? 0x90 : 0x80, hi = (c == 0xF4) ? 0x8F : 0xBF;

        if (n < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

size_t spim_utf8_repair(const char *in, size_t len, char *out)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, o = 0;

    while (i < len) {
        size_t k;

        /* Runs of ASCII (most IM text) go eight bytes at a time. */
        for (uint64_t w; i + 8 <= len; i += 8, o += 8) {
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            memcpy(out + o, &w, 8);
        }
        if (i < len && p[i] < 0x80) {
            out[o++] = (char)p[i++];
            continue;
        }
        if (i >= len)
            break;
        k = utf8_valid_len(p + i, len - i);
        if (k == 0) {
            /* One U+FFFD per bad byte: simple, and 3 * len always suffices. */
            out[o++] = (char)0xEF;
            out[o++] = (char)0xBF;
            out[o++] = (char)0xBD;
            i++;
            continue;
        }
        memcpy(out + o, p + i, k);
        o += k;
        i += k;
    }
    return o;
}

/* --- Working memory and normalisation ------------------------------------------ */

/*
 * Classes of the bytes of normalised text, for the loops that run over every
 * character: an ASCII letter or digit continues a word (CC_WORD, digits also
 * CC_DIGIT); a blank, and any byte of a non-ASCII character, stops the run
 * of bytes a chunk is scanned in (CC_STOP: the character is then looked at
 * whole); '.' is noted (CC_DOT). Made once, before the first working memory.
 */
enum { CC_WORD = 1, CC_DIGIT = 2, CC_STOP = 4, CC_DOT = 8 };
static uint8_t cclass[256];
static pthread_once_t cclass_once = PTHREAD_ONCE_INIT;

static void cclass_init(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            v = CC_WORD;
        else if (c >= '0' && c <= '9')
            v = CC_WORD | CC_DIGIT;
        else if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c >= 0x80)
            v = CC_STOP;
        else if (c == '.')
            v = CC_DOT;
        cclass[c] = v;
    }
}

int spim__tok_ws_init(struct spim__tok_ws *ws)
{
    pthread_once(&cclass_once, cclass_init);
    memset(ws, 0, sizeof(*ws));
    ws->rep = malloc(3 * (size_t)SPIM_TOK_MAX_INPUT + 1);
    if (ws->rep == NULL)
        goto fail_rep;
    ws->cps = malloc(sizeof(int32_t) * ((size_t)SPIM__NORM_CPS + 1));
    if (ws->cps == NULL)
        goto fail_cps;
    ws->norm = malloc(sizeof(int32_t) * ((size_t)SPIM__NORM_CPS + 1));
    if (ws->norm == NULL)
        goto fail_norm;
    /* Zero now; each run clears only the slots it used. */
    ws->set = calloc(SPIM__TOK_SET_SLOTS + SPIM__TOK_SET_SMALL, sizeof(uint64_t));
    if (ws->set == NULL)
        goto fail_set;
    ws->set_small = ws->set + SPIM__TOK_SET_SLOTS;
    ws->norm[0] = 0;
    return 0;

fail_set:
    free(ws->norm);
fail_norm:
    free(ws->cps);
fail_cps:
    free(ws->rep);
fail_rep:
    memset(ws, 0, sizeof(*ws));
    return SPIM_ENOMEM;
}

void spim__tok_ws_fini(struct spim__tok_ws *ws)
{
    free(ws->set);
    free(ws->norm);
    free(ws->cps);
    free(ws->rep);
    memset(ws, 0, sizeof(*ws));
}

/* Largest k <= n such that s[0..k) ends on a UTF-8 sequence boundary. */
static size_t utf8_floor(const char *s, size_t n)
{
    size_t k = n, steps = 0;

    while (k > 0 && steps < 4 && ((unsigned char)s[k] & 0xC0) == 0x80) {
        k--;
        steps++;
    }
    return k;
}

/* Characters the normalised text drops beyond utf8proc's ignorables. */
static int drop_cp(int32_t c)
{
    /* Format characters (U+200B..U+200F, U+2060..U+2064, U+FEFF, U+00AD, bidi
     * controls) are invisible to a reader and only serve to split words. */
    return c >= 0x80 && utf8proc_category(c) == UTF8PROC_CATEGORY_CF;
}

/* The ASCII letter c imitates (from the generated table), or 0. */
static char confusable_of(int32_t c)
{
    size_t lo = 0, hi = SPIM__CONFUSABLES_N;

    if (c < (int32_t)spim__confusables[0].cp)
        return 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (spim__confusables[mid].cp < (unsigned)c)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < SPIM__CONFUSABLES_N && spim__confusables[lo].cp == (unsigned)c)
        return spim__confusables[lo].ascii;
    return 0;
}

/* Part of a word for the look-alike pass: letters, marks, digits. */
static inline int is_letter(int32_t c);

/* A character that belongs to a word: a letter or mark (is_letter), or a digit. */
static int word_cp(int32_t c)
{
    return is_letter(c) || (c >= '0' && c <= '9');
}

/* A letter of the Latin script (ASCII, Latin-1, Latin Extended-A/B, Additional). */
static int latin_cp(int32_t c)
{
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    return ((c >= 0xC0 && c <= 0x24F) || (c >= 0x1E00 && c <= 0x1EFF)) && c != 0xD7 && c != 0xF7;
}

/*
 * Appends the case fold of c to out[*o..cap). ASCII is folded here; other
 * codepoints through utf8proc's full case folding (which may give up to
 * three codepoints, "ß" -> "ss").
 */
static void fold_append(int32_t c, int32_t *out, size_t *o, size_t cap)
{
    utf8proc_int32_t tmp[8];
    utf8proc_ssize_t r;
    int bc = 0;

    if (c < 0x80) {
        if (*o < cap)
            out[(*o)++] = (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
        return;
    }
    r = utf8proc_decompose_char(c, tmp, 8, UTF8PROC_CASEFOLD, &bc);
    if (r <= 0 || r > 8) {
        if (*o < cap)
            out[(*o)++] = c;
        return;
    }
    for (utf8proc_ssize_t i = 0; i < r && *o < cap; i++)
        out[(*o)++] = tmp[i];
}

/*
 * cps[0..n) (NFKC, format characters gone) -> norm: look-alikes inside a
 * word that has a Latin letter become that Latin letter ("frее" with a
 * Cyrillic е is "free"), a word wholly in another script stays as it is;
 * then everything is case-folded. Returns the codepoints written.
 */
static size_t fold_words(const int32_t *cps, size_t n, int32_t *norm, size_t cap)
{
    size_t i = 0, o = 0;

    while (i < n) {
        size_t st = i, j;
        int latin = 0, conf = 0;

        if (!word_cp(cps[i])) {
            fold_append(cps[i], norm, &o, cap);
            i++;
            continue;
        }
        while (i < n && word_cp(cps[i])) {
            latin |= latin_cp(cps[i]);
            conf |= cps[i] >= 0x80 && confusable_of(cps[i]) != 0;
            i++;
        }
        for (j = st; j < i; j++) {
            char a = (latin && conf && cps[j] >= 0x80) ? confusable_of(cps[j]) : 0;

            if (a != 0) {
                if (o < cap)
                    norm[o++] = a;
            } else {
                fold_append(cps[j], norm, &o, cap);
            }
        }
    }
    return o;
}

/*
 * The normalisation of pure ASCII, without utf8proc: NFKC and the look-alike
 * pass change nothing, so what is left is what STRIPCC with NLF2LF does
 * (CR LF, CR, VT and FF become LF, HT a space, other controls go) and
 * case folding. The pound signs plain_text lets through are copied.
 * It writes the same bytes utf8proc would, several times faster, and most
 * IM text is ASCII.
 */
#define SWAR_ONES 0x0101010101010101ull
#define SWAR_HIGHS 0x8080808080808080ull

/* 0x80 in each byte of w (all of them below 0x80) that is within [lo, hi]; no carry
 * crosses a byte, as each sum stays below 0x100. */
static inline uint64_t swar_in(uint64_t w, unsigned lo, unsigned hi)
{
    return (w + SWAR_ONES * (0x80 - lo)) & ~(w + SWAR_ONES * (0x7F - hi)) & SWAR_HIGHS;
}

/* How many bytes of a swar_in() mask are set. */
static inline size_t swar_count(uint64_t m)
{
    return (size_t)(((m >> 7) * SWAR_ONES) >> 56);
}

static void prepare_ascii(struct spim__tok_ws *ws)
{
    const unsigned char *in = (const unsigned char *)ws->rep;
    char *out = (char *)ws->norm;
    size_t i, o = 0, n = ws->rep_len, upper = 0, lower = 0, excl = 0, pounds = 0;
    int changed = 0; /* anything but case: a tab, a CR, a control */

    for (i = 0; i < n; i++) {
        unsigned char c;

        /* Eight printable ASCII bytes at a time (most of any IM text): lower-cased
         * and counted in a few word operations, as the byte loop below would. */
        while (i + 8 <= n) {
            uint64_t w, up;

            memcpy(&w, in + i, 8);
            if ((w & SWAR_HIGHS) != 0 || swar_in(w, 0x20, 0x7E) != SWAR_HIGHS)
                break;
            up = swar_in(w, 'A', 'Z');
            upper += swar_count(up);
            lower += swar_count(swar_in(w, 'a', 'z'));
            excl += swar_count(swar_in(w, '!', '!'));
            w |= up >> 2; /* 0x80 >> 2: the 0x20 of lower case, in the same byte */
            memcpy(out + o, &w, 8);
            o += 8;
            i += 8;
        }
        if (i >= n)
            break;
        c = in[i];
        if (c >= 0x80) {
            /* U+00A3 (plain_text let no other non-ASCII through): as it is */
            out[o++] = (char)c;
            out[o++] = (char)in[++i];
            pounds++;
        } else if (c >= 'A' && c <= 'Z') {
            out[o++] = (char)(c + ('a' - 'A'));
            upper++;
        } else if (c >= 0x20 && c < 0x7F) {
            out[o++] = (char)c;
            lower += c >= 'a' && c <= 'z';
            excl += c == '!';
        } else if (c == '\r') {
            out[o++] = '\n';
            if (i + 1 < n && in[i + 1] == '\n')
                i++;
            changed = 1;
        } else if (c == '\n') {
            out[o++] = '\n';
        } else if (c == '\v' || c == '\f') {
            out[o++] = '\n';
            changed = 1;
        } else if (c == '\t') {
            out[o++] = ' ';
            changed = 1;
        } else {
            changed = 1; /* other controls and DEL: dropped */
        }
    }
    ws->ascii_caseonly = !changed;
    out[o] = '\0';
    ws->norm_len = o;
    ws->ascii = 1;
    ws->ascii_cps = o - pounds;
    ws->ascii_letters = upper + lower;
    ws->ascii_upper = upper;
    ws->ascii_excl = excl;
}

/*
 * Whether s is ASCII but for U+00A3 (the pound sign, C2 A3): the only
 * non-ASCII character of most SMS that have one. NFKC, the look-alike pass
 * and case folding leave it as it is, it composes with nothing, it is no
 * letter and not a format character: text like this normalises the way
 * prepare_ascii does it, with the pound sign copied.
 */
static int plain_text(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    uint64_t w;

    while (i < n) {
        if (i + 8 <= n) {
            memcpy(&w, p + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        if (p[i] < 0x80)
            i++;
        else if (p[i] == 0xC2 && i + 1 < n && p[i + 1] == 0xA3)
            i += 2;
        else
            return 0;
    }
    return 1;
}

void spim__tok_prepare(struct spim__tok_ws *ws, const char *text, size_t len)
{
    utf8proc_ssize_t r = 0, w, enc, i;
    size_t src, nf;
    unsigned tries;

    if (text == NULL)
        len = 0;
    if (len > SPIM_TOK_MAX_INPUT)
        len = SPIM_TOK_MAX_INPUT;
    /* Plain text is valid UTF-8: no repair, it is copied as it is. */
    if (plain_text(text, len)) {
        if (len > 0)
            memcpy(ws->rep, text, len);
        ws->rep_len = len;
        ws->rep[len] = '\0';
        prepare_ascii(ws);
        return;
    }
    ws->ascii = 0;
    ws->rep_len = spim_utf8_repair(text, len, ws->rep);
    ws->rep[ws->rep_len] = '\0';
    src = ws->rep_len;

    /* Shorten pathological input (NFKC expanding ligature after ligature)
     * until it fits; each try halves it, so this ends. */
    for (tries = 0; tries < 32; tries++) {
        r = utf8proc_decompose((const utf8proc_uint8_t *)ws->rep, (utf8proc_ssize_t)src, ws->cps,
                               SPIM__NORM_CPS, NORM_OPTS);
        if (r < 0 || r <= SPIM__NORM_CPS)
            break;
        src = utf8_floor(ws->rep, src / 2);
    }
    if (r < 0 || r > SPIM__NORM_CPS)
        r = 0;

    for (w = 0, i = 0; i < r; i++) {
        if (!drop_cp(ws->cps[i]))
            ws->cps[w++] = ws->cps[i];
    }
    /* utf8proc_decompose gives decomposed codepoints; compose them (NFKC). */
    w = utf8proc_normalize_utf32(ws->cps, w, NORM_OPTS);
    if (w < 0)
        w = 0;
    nf = fold_words(ws->cps, (size_t)w, ws->norm, SPIM__NORM_CPS);
    /* Options 0: only the encoding, the text is already normalised. */
    enc = utf8proc_reencode(ws->norm, (utf8proc_ssize_t)nf, 0);
    if (enc < 0) {
        enc = 0;
        ((char *)ws->norm)[0] = '\0';
    }
    ws->norm_len = (size_t)enc;
}

/* --- Keys and the token sink ------------------------------------------------------ */

/*
 * d[0..n) = s[0..n) for the short texts of tokens, with fixed-size moves
 * (overlapping at the end) instead of a call to memcpy for each token.
 */
static inline void copy_short(void *dst, const char *s, size_t n)
{
    unsigned char *d = dst;

    if (n >= 16) {
        size_t i = 0;

        for (; i + 16 <= n; i += 16)
            memcpy(d + i, s + i, 16);
        if (i < n)
            memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else if (n > 0) {
        d[0] = (unsigned char)s[0];
        d[n / 2] = (unsigned char)s[n / 2];
        d[n - 1] = (unsigned char)s[n - 1];
    }
}

/*
 * The key of the token whose kind byte and text are buf[0..len): what
 * XXH3_64bits_withSeed(buf, len, 0) computes (test_tok_keys_stable holds it
 * to that), without its dispatch for these lengths: the keys of a message
 * are tens of hashes of a few bytes each. 0 marks an empty slot of the
 * de-duplication set, so it becomes 1.
 */
static inline uint64_t key_of(const unsigned char *buf, size_t len)
{
    uint64_t k;

    if (len <= 16)
        k = XXH3_len_0to16_64b(buf, len, XXH3_kSecret, 0);
    else if (len <= 128)
        k = XXH3_len_17to128_64b(buf, len, XXH3_kSecret, sizeof(XXH3_kSecret), 0);
    else
        k = XXH3_64bits_withSeed(buf, len, 0);
    return k ? k : 1;
}

uint64_t spim_tok_key(enum spim_tok_kind kind, const char *s, size_t n)
{
    unsigned char buf[1 + 2 * TOK_TEXT_MAX];
    uint64_t k;

    if (n <= sizeof(buf) - 1) {
        buf[0] = (unsigned char)kind;
        copy_short(buf + 1, s, n);
        return key_of(buf, n + 1);
    } else {
        /* Longer than any token the tokenizer makes: chain instead of copying. */
        buf[0] = (unsigned char)kind;
        k = XXH3_64bits_withSeed(s, n, XXH3_64bits_withSeed(buf, 1, 0));
    }
    /* 0 marks an empty slot of the de-duplication set. */
    return k ? k : 1;
}

typedef void (*emit_fn)(void *ud, enum spim_tok_kind kind, const char *s, size_t n);

struct sink {
    struct spim_token *out;
    size_t cap, n;
    uint64_t *set;     /* the set in use: small, then large */
    size_t set_mask;   /* its slots - 1 */
    uint64_t *set_big; /* the large one, SPIM__TOK_SET_SLOTS */
    emit_fn emit;
    void *ud;

    /* The bigram being made: the kind byte, the previous word (prev_len bytes;
     * 0: none), then a blank and the word after it. */
    unsigned char bg[1 + TOK_TEXT_MAX];
    size_t prev_len;
    /* a run of single letters ("f r e e"), joined */
    char spaced[TOK_TEXT_MAX];
    size_t spaced_len, spaced_end;
    unsigned spaced_count;

    int has_url, shortener;
    int link; /* the has-URL meta token or the phone number token was written out */
    struct spim__tok_memo *memo;          /* the working memory's, for adds() */
    void (*hint)(void *ud, uint64_t key); /* each new key (ws->key_hint), or NULL */
    void *hint_ud;
    /* Slots of set taken, cleared at the end; last, and not zeroed: only used[0..n) is read. */
    uint16_t used[SPIM_TOK_MAX];
};

/*
 * Moves the message's keys (out[0..n), all distinct) from the small set to
 * the large one, and clears the small one for the next message.
 */
static void set_grow(struct sink *k)
{
    for (size_t i = 0; i < k->n; i++) {
        size_t slot = (size_t)k->out[i].key & (SPIM__TOK_SET_SLOTS - 1);

        k->set[k->used[i]] = 0;
        while (k->set_big[slot] != 0)
            slot = (slot + 1) & (SPIM__TOK_SET_SLOTS - 1);
        k->set_big[slot] = k->out[i].key;
        k->used[i] = (uint16_t)slot;
    }
    k->set = k->set_big;
    k->set_mask = SPIM__TOK_SET_SLOTS - 1;
}

/* Writes key out once per message (the de-duplication set remembers it). */
static inline void add_key(struct sink *k, uint64_t key)
{
    size_t slot, probes;

    if (k->set_mask == SPIM__TOK_SET_SMALL - 1 && k->n >= SPIM__TOK_SET_SMALL / 2)
        set_grow(k);
    slot = (size_t)key & k->set_mask;
    for (probes = 0; probes <= k->set_mask; probes++) {
        if (k->set[slot] == key)
            return;
        if (k->set[slot] == 0)
            break;
        slot = (slot + 1) & k->set_mask;
    }
    if (probes > k->set_mask)
        return;
    k->set[slot] = key;
    if (k->hint != NULL)
        k->hint(k->hint_ud, key);
    k->used[k->n] = (uint16_t)slot;
    k->out[k->n].key = key;
    k->out[k->n].ham = 0;
    k->out[k->n].spam = 0;
    k->n++;
}

static void add(struct sink *k, enum spim_tok_kind kind, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (n > TOK_TEXT_MAX)
        n = utf8_floor(s, TOK_TEXT_MAX);
    if (k->emit)
        k->emit(k->ud, kind, s, n);
    if (k->n >= k->cap)
        return;
    add_key(k, spim_tok_key(kind, s, n));
}

/*
 * add() of the text p[1..n] (0 < n <= TOK_TEXT_MAX) whose byte p[0] is the
 * caller's to overwrite: the kind goes there and the key is made in place,
 * with no copy of the text.
 */
static inline void add_in_place(struct sink *k, enum spim_tok_kind kind, unsigned char *p, size_t n)
{
    if (k->emit)
        k->emit(k->ud, kind, (const char *)p + 1, n);
    if (k->n >= k->cap)
        return;
    p[0] = (unsigned char)kind;
    add_key(k, key_of(p, n + 1));
}

/* Adds prefix followed by s[0..n) as one token. */
static void addp(struct sink *k, enum spim_tok_kind kind, const char *prefix, const char *s,
                 size_t n)
{
    char buf[TOK_TEXT_MAX];
    size_t pl = strlen(prefix);

    if (pl >= sizeof(buf))
        return;
    if (n > sizeof(buf) - pl)
        n = utf8_floor(s, sizeof(buf) - pl);
    copy_short(buf, prefix, pl);
    copy_short(buf + pl, s, n);
    add(k, kind, buf, pl + n);
}

/*
 * add() of s, a text with static storage (a literal or an entry of a static
 * table): its length and key are found once and kept by its address.
 */
static void adds(struct sink *k, enum spim_tok_kind kind, const char *s)
{
    struct spim__tok_memo *m =
        &k->memo[(((uintptr_t)s >> 2) ^ (uintptr_t)kind) & (SPIM__TOK_MEMO - 1)];

    if (m->s != s || m->kind != (uint32_t)kind) {
        size_t n = strlen(s);

        if (n == 0 || n > TOK_TEXT_MAX) {
            add(k, kind, s, n);
            return;
        }
        m->s = s;
        m->kind = (uint32_t)kind;
        m->len = (uint32_t)n;
        m->key = spim_tok_key(kind, s, n);
    }
    if (k->emit)
        k->emit(k->ud, kind, s, m->len);
    if (k->n >= k->cap)
        return;
    add_key(k, m->key);
}

/* --- Character classes (of the normalised text) ------------------------------------ */

static int32_t cp_at(const char *s, size_t len, size_t i, size_t *clen)
{
    utf8proc_int32_t c = 0;
    utf8proc_ssize_t r;

    if ((unsigned char)s[i] < 0x80) {
        *clen = 1;
        return (unsigned char)s[i];
    }
    r = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
    if (r <= 0) {
        /* Cannot happen on normalised text; step over the byte anyway. */
        *clen = 1;
        return 0xFFFD;
    }
    *clen = (size_t)r;
    return c;
}

static int is_space_above_ascii(int32_t c)
{
    utf8proc_category_t cat = utf8proc_category(c);

    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
           cat == UTF8PROC_CATEGORY_ZP;
}

/* Called for every character: ASCII decided inline, the rest by category. */
static inline int is_space(int32_t c)
{
    if (c < 0x80)
        return c == ' ' || c == '\n' || c == '\t' || c == '\r';
    return is_space_above_ascii(c);
}

static int is_digit(int32_t c)
{
    return c >= '0' && c <= '9';
}

static int is_letter_above_ascii(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
        return 1;
    default:
        return 0;
    }
}

/* Letters and marks (an accent belongs to its word); non-ASCII digits too. Inline for ASCII. */
static inline int is_letter(int32_t c)
{
    if (c < 0x80)
        return (unsigned)((c | 0x20) - 'a') < 26;
    return is_letter_above_ascii(c);
}

static int is_emoji(int32_t c)
{
    if (c >= 0x1F000 && c <= 0x1FAFF)
        return utf8proc_category(c) != UTF8PROC_CATEGORY_SK; /* skin tones modify, not mean */
    return c >= 0x80 && utf8proc_category(c) == UTF8PROC_CATEGORY_SO;
}

static int is_currency(int32_t c)
{
    return c == '$' || (c >= 0x80 && utf8proc_category(c) == UTF8PROC_CATEGORY_SC);
}

/* --- URLs ---------------------------------------------------------------------- */

/* Top-level domains that make a bare "word.tld" a domain; English words
 * such as "in", "me", "it", "to", "us" are left out on purpose. */
static const char *const bare_tlds[] = {
    "com",  "net",  "org",   "info", "biz",  "co",    "uk",   "ly",  "gl",   "gd",   "tv",
    "ws",   "cc",   "tk",    "xyz",  "io",   "eu",    "ru",   "cn",  "de",   "nl",   "fr",
    "es",   "au",   "ca",    "ie",   "ch",   "mobi",  "name", "pro", "top",  "site", "online",
    "club", "link", "click", "app",  "shop", "store", "live", "win", "cash", "loan",
};

static const char *const shorteners[] = {
    "bit.ly",  "bitly.com", "tinyurl.com", "goo.gl",  "t.co",        "ow.ly",   "is.gd",
    "buff.ly", "tiny.cc",   "rebrand.ly",  "cutt.ly", "shorturl.at", "t.ly",    "rb.gy",
    "tr.im",   "v.gd",      "qr.net",      "x.co",    "adf.ly",      "bl.ink",  "lnkd.in",
    "s.id",    "shorte.st", "tiny.one",    "snip.ly", "soo.gd",      "clck.ru", "u.to",
};

static int in_list(const char *s, size_t n, const char *const *list, size_t count)
{
    size_t i;

    for (i = 0; i < count; i++) {
        if (strlen(list[i]) == n && memcmp(list[i], s, n) == 0)
            return 1;
    }
    return 0;
}

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/* strchr("([{<\"'", c) != NULL, without the call (and, as strchr, true for NUL). */
static int url_open_punct(char c)
{
    return c == '(' || c == '[' || c == '{' || c == '<' || c == '"' || c == '\'' || c == '\0';
}

/* strchr(")]}>\"'.,!?;:", c) != NULL, likewise. */
static int url_close_punct(char c)
{
    switch (c) {
    case ')':
    case ']':
    case '}':
    case '>':
    case '"':
    case '\'':
    case '.':
    case ',':
    case '!':
    case '?':
    case ';':
    case ':':
    case '\0':
        return 1;
    default:
        return 0;
    }
}

static int starts(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);

    return n >= l && memcmp(s, lit, l) == 0;
}

/*
 * If the whitespace-delimited chunk s[0..n) is a URL or a bare domain,
 * adds its tokens and returns 1. Bare "word.tld" needs a known TLD so that
 * "f.r.e.e", "e.g." and "a.m." stay words.
 */
static int try_url(struct sink *k, const char *s, size_t n)
{
    size_t h, hl, i, labels = 1, last_dot = 0, prev_dot = 0, lab = 0, words = 0;
    int scheme = 0, www;
    const char *host, *tld, *dom;
    size_t tld_len, dom_len;

    while (n > 0 && url_open_punct(s[0])) {
        s++;
        n--;
    }
    while (n > 0 && url_close_punct(s[n - 1]))
        n--;
    if (starts(s, n, "http://")) {
        scheme = 1;
        s += 7;
        n -= 7;
    } else if (starts(s, n, "https://")) {
        scheme = 1;
        s += 8;
        n -= 8;
    }
    www = starts(s, n, "www.");
    for (h = 0; h < n && host_char(s[h]); h++)
        ;
    hl = h;
    if (hl == 0 || hl > 253 || s[0] == '.' || s[0] == '-' || s[hl - 1] == '.')
        return 0;
    if (h < n && s[h] != '/' && s[h] != '?' && s[h] != '#' && s[h] != ':')
        return 0;
    for (i = 0; i < hl; i++) {
        if (s[i] == '.') {
            if (lab == 0)
                return 0; /* empty label */
            labels++;
            prev_dot = last_dot;
            last_dot = i + 1;
            lab = 0;
        } else if (++lab > 63) {
            return 0;
        }
    }
    if (labels < 2)
        return 0;
    host = s;
    tld = s + last_dot;
    tld_len = hl - last_dot;
    for (i = 0; i < tld_len; i++) {
        if (tld[i] < 'a' || tld[i] > 'z')
            return 0;
    }
    if (tld_len < 2 || tld_len > 6)
        return 0;
    if (!scheme && !www &&
        !in_list(tld, tld_len, bare_tlds, sizeof(bare_tlds) / sizeof(*bare_tlds)))
        return 0;

    /* Registrable domain, approximately: the last two labels, three under
     * a second-level registry such as co.uk. */
    dom = host + prev_dot;
    dom_len = hl - prev_dot;
    if (labels >= 3 && tld_len == 2 && prev_dot > 0) {
        const char *sl = dom;
        size_t sll = last_dot - prev_dot - 1;
        static const char *const slds[] = {"co", "com", "org", "net", "ac", "gov", "ltd", "plc"};

        if (in_list(sl, sll, slds, sizeof(slds) / sizeof(*slds))) {
            size_t j = prev_dot - 1;

            while (j > 0 && host[j - 1] != '.')
                j--;
            dom = host + j;
            dom_len = hl - j;
        }
    }
    k->has_url = 1;
    k->prev_len = 0;
    addp(k, SPIM_TOK_URL, "host:", host, hl);
    addp(k, SPIM_TOK_URL, "dom:", dom, dom_len);
    if (in_list(dom, dom_len, shorteners, sizeof(shorteners) / sizeof(*shorteners)) ||
        in_list(host, hl, shorteners, sizeof(shorteners) / sizeof(*shorteners)))
        k->shortener = 1;

    /* Path words: campaign names and landing pages repeat across a run. */
    i = hl;
    while (i < n && words < URL_PATH_WORDS) {
        size_t st;

        while (i < n && !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            i++;
        st = i;
        while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            i++;
        if (i > st && i - st <= 32) {
            addp(k, SPIM_TOK_URL, "path:", s + st, i - st);
            words++;
        }
    }
    return 1;
}

/*
 * Whether s[0..len) holds a dot after a label character and before a letter
 * ("x.co"): every host try_url takes has one, the dot before its top-level
 * domain, so a message without one has no chunk worth scanning for a URL.
 * Most have none, and the scan costs a pass over each chunk.
 */
static int may_hold_host(const char *s, size_t len)
{
    const char *p = s, *end = s + len;

    while (p + 1 < end && (p = memchr(p + 1, '.', (size_t)(end - p - 1))) != NULL) {
        if (p + 1 < end && p[1] >= 'a' && p[1] <= 'z' && host_char(p[-1]) && p[-1] != '.')
            return 1;
    }
    return 0;
}

/* --- Numbers and phones ---------------------------------------------------------- */

/* "N", "NN", "NNN" for small numbers, buckets for larger ones. */
static void add_number_shape(struct sink *k, size_t digits)
{
    static const char *const shapes[] = {"N", "N", "NN", "NNN", "N4", "N5", "N6", "N7", "N8"};

    if (digits < sizeof(shapes) / sizeof(*shapes))
        adds(k, SPIM_TOK_NUMBER, shapes[digits]);
    else
        adds(k, SPIM_TOK_NUMBER, "N9+");
}

static void add_bucket(struct sink *k, enum spim_tok_kind kind, const char *prefix, size_t v)
{
    char num[24];
    size_t l = 0;
    char tmp[24];
    size_t t = 0;

    do {
        tmp[t++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && t < sizeof(tmp));
    while (t > 0)
        num[l++] = tmp[--t];
    addp(k, kind, prefix, num, l);
}

/*
 * At s[i] (a digit, or '+' before one) tries a phone number: groups of at
 * least two digits joined by single spaces, dashes or dots, 9 digits or more
 * in all. Returns the end offset, or 0 if it is not one.
 */
static size_t try_phone(struct sink *k, const char *s, size_t len, size_t i)
{
    char digits[PHONE_DIGITS_MAX];
    size_t nd = 0, j = i, end = 0, groups = 0;

    if (s[j] == '+')
        j++;
    while (j < len && groups < 8) {
        size_t g = j, gl;

        while (j < len && is_digit((unsigned char)s[j]) && j - g <= PHONE_DIGITS_MAX)
            j++;
        gl = j - g;
        if (gl == 0 || (groups > 0 && gl < 2))
            break;
        if (nd + gl > PHONE_DIGITS_MAX)
            break;
        memcpy(digits + nd, s + g, gl);
        nd += gl;
        end = j;
        groups++;
        if (j + 1 < len && (s[j] == ' ' || s[j] == '-' || s[j] == '.') &&
            is_digit((unsigned char)s[j + 1]))
            j++;
        else
            break;
    }
    if (nd < 9)
        return 0;
    addp(k, SPIM_TOK_PHONE, "tel:", digits, nd);
    addp(k, SPIM_TOK_PHONE, "telpre:", digits, 4);
    add_bucket(k, SPIM_TOK_PHONE, "tellen:", nd);
    {
        size_t before = k->n;

        adds(k, SPIM_TOK_PHONE, "tel");
        k->link |= k->n > before;
    }
    k->prev_len = 0;
    return end;
}

/* Currency s[i..) followed by an amount: "£1000", "$5", "€2.50". */
static size_t try_money(struct sink *k, const char *s, size_t len, size_t i, size_t sym_len)
{
    size_t j = i + sym_len, ints = 0;
    int frac = 0;
    char prefix[16];

    while (j < len) {
        if (is_digit((unsigned char)s[j])) {
            if (!frac)
                ints++;
            j++;
        } else if ((s[j] == ',' || s[j] == '.') && j + 1 < len &&
                   is_digit((unsigned char)s[j + 1]) && !frac) {
            /* "1,000" groups thousands; "2.50" starts pence. */
            if (s[j] == '.')
                frac = 1;
            j++;
        } else {
            break;
        }
        if (j - i > 32)
            break;
    }
    if (ints == 0)
        return 0;
    adds(k, SPIM_TOK_NUMBER, "money");
    memcpy(prefix, "money:", 6);
    memcpy(prefix + 6, s + i, sym_len);
    prefix[6 + sym_len] = '\0';
    add_bucket(k, SPIM_TOK_NUMBER, prefix, ints);
    return j;
}

/* --- Words ------------------------------------------------------------------------- */

/* Digit (or symbol) to the letter it imitates; 0 if it imitates none. */
static char leet_of(char c, int one_as_l)
{
    switch (c) {
    case '0':
        return 'o';
    case '1':
        return one_as_l ? 'l' : 'i';
    case '3':
        return 'e';
    case '4':
        return 'a';
    case '5':
        return 's';
    case '7':
        return 't';
    case '8':
        return 'b';
    case '$':
        return 's';
    case '@':
        return 'a';
    default:
        return 0;
    }
}

/* Adds the de-leeted form of w ("fr33" -> "free"); ones as i, then as l. */
static void add_deleet(struct sink *k, const char *w, size_t n)
{
    char buf[WORD_MAX];
    size_t i;
    int pass, ones = 0;

    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < n && i < sizeof(buf); i++) {
            char c = w[i];

            if ((unsigned char)c >= 0x80 || (c >= 'a' && c <= 'z')) {
                buf[i] = c;
            } else {
                char l = leet_of(c, pass);

                if (l == 0)
                    return;
                ones |= (c == '1');
                buf[i] = l;
            }
        }
        add(k, SPIM_TOK_WORD, buf, i);
        if (!ones)
            break;
    }
}

/* Whether the digits of w (digits of them) are all at its end, three or more. */
static int trailing_code(const char *w, size_t n, size_t digits)
{
    size_t t = 0;

    while (t < n && w[n - 1 - t] >= '0' && w[n - 1 - t] <= '9')
        t++;
    return t >= 3 && t == digits;
}

static void spaced_flush(struct sink *k)
{
    if (k->spaced_count >= 3)
        add(k, SPIM_TOK_WORD, k->spaced, k->spaced_len);
    k->spaced_count = 0;
    k->spaced_len = 0;
}

/*
 * Tracks runs of single letters split by one separator ("f r e e",
 * "f.r.e.e", "f-r-e-e") and adds the joined word when the run ends.
 */
static void spaced_letter(struct sink *k, const char *s, size_t st, size_t en)
{
    int joined = 0;

    if (k->spaced_count > 0 && st > k->spaced_end && st - k->spaced_end <= 2) {
        size_t g;

        joined = 1;
        for (g = k->spaced_end; g < st; g++) {
            if (!(s[g] == ' ' || s[g] == '.' || s[g] == '-' || s[g] == '_' || s[g] == '*' ||
                  s[g] == '/'))
                joined = 0;
        }
    }
    if (!joined)
        spaced_flush(k);
    if (k->spaced_len + (en - st) <= sizeof(k->spaced)) {
        memcpy(k->spaced + k->spaced_len, s + st, en - st);
        k->spaced_len += en - st;
        k->spaced_count++;
    }
    k->spaced_end = en;
}

/*
 * The word w[0..n) (0 < n <= WORD_MAX; w[-1] is the caller's to overwrite)
 * and its bigram with the word before it.
 */
static void add_word(struct sink *k, char *w, size_t n)
{
    add_in_place(k, SPIM_TOK_WORD, (unsigned char *)w - 1, n);
    if (k->prev_len > 0 && k->prev_len + 1 + n <= TOK_TEXT_MAX) {
        k->bg[1 + k->prev_len] = ' ';
        copy_short(k->bg + 2 + k->prev_len, w, n);
        add_in_place(k, SPIM_TOK_BIGRAM, k->bg, k->prev_len + 1 + n);
    }
    copy_short(k->bg + 1, w, n); /* n <= WORD_MAX < TOK_TEXT_MAX */
    k->prev_len = n;
}

/*
 * Reads the word at s[i..): letters, digits, and apostrophes, '$' or '@'
 * between them. Adds its tokens and returns the end offset (> i).
 */
static size_t do_word(struct sink *k, const char *s, size_t len, size_t i)
{
    char wbuf[1 + WORD_MAX], *w = wbuf + 1; /* wbuf[0]: the kind byte of the word's key */
    size_t wl = 0, j = i, cps = 0, letters = 0, digits = 0, lead_digits = 0, clen;
    int full = 0, leetsym = 0;

    while (j < len) {
        int32_t c;
        unsigned char b = (unsigned char)s[j];

        /* A run of ASCII letters and digits, most of any word: counted and
         * kept as the general loop below would, character by character (the
         * digits before the first letter are lead digits; w keeps what fits,
         * and is full from the first character that does not). */
        if (cclass[b] & CC_WORD) {
            size_t st = j, dg = 0, run, room = WORD_MAX - wl;
            unsigned cl;

            while (j < len && ((cl = cclass[(unsigned char)s[j]]) & CC_WORD)) {
                dg += cl >> 1; /* CC_DIGIT */
                j++;
            }
            run = j - st;
            if (letters == 0 && dg > 0) {
                for (size_t q = st; q < j && (cclass[(unsigned char)s[q]] & CC_DIGIT); q++)
                    lead_digits++;
            }
            digits += dg;
            letters += run - dg;
            if (!full) {
                copy_short(w + wl, s + st, run <= room ? run : room);
                wl += run <= room ? run : room;
                full = run > room;
            }
            cps += run;
            continue;
        }
        c = cp_at(s, len, j, &clen);
        if (is_letter(c) || is_digit(c)) {
            if (is_digit(c)) {
                digits++;
                if (letters == 0)
                    lead_digits++;
            } else {
                letters++;
            }
        } else if ((c == '\'' || c == 0x2019 || c == '$' || c == '@') && wl > 0 && j + clen < len) {
            size_t c2l;
            int32_t c2 = cp_at(s, len, j + clen, &c2l);

            if (!(is_letter(c2) || is_digit(c2)))
                break;
            if (c == '$' || c == '@') {
                leetsym = 1;
            } else {
                j += clen; /* "don't" is "dont": apostrophes are spelt both ways */
                continue;
            }
        } else {
            break;
        }
        if (!full && wl + clen <= WORD_MAX) {
            if (clen == 1)
                w[wl] = s[j]; /* not a call to memcpy per letter */
            else
                memcpy(w + wl, s + j, clen);
            wl += clen;
        } else {
            full = 1;
        }
        cps++;
        j += clen;
    }
    if (j == i)
        return i + 1; /* never stall */

    if (letters == 0 && !leetsym) {
        /* Digits only. */
        if (j < len && s[j] == '%') {
            adds(k, SPIM_TOK_NUMBER, "pct");
            add_bucket(k, SPIM_TOK_NUMBER, "pct:", digits);
            spaced_flush(k);
            return j + 1;
        }
        if (digits >= 4 && digits <= 6) {
            /* Premium short codes ("txt WIN to 87121") are re-used by campaigns. */
            addp(k, SPIM_TOK_PHONE, "sc:", w, wl);
            add_bucket(k, SPIM_TOK_PHONE, "sclen:", digits);
        } else {
            add_number_shape(k, digits);
        }
        spaced_flush(k);
        return j;
    }

    if (letters == 1 && digits == 0 && cps == 1)
        spaced_letter(k, s, i, j);
    else
        spaced_flush(k);

    if (digits == 0 && !leetsym) {
        add_word(k, w, wl);
        return j;
    }
    /* Mixed: the word as written, then what it imitates. */
    add_word(k, w, wl);
    if (lead_digits > 0 && lead_digits == digits && lead_digits < wl && !leetsym) {
        /* "150p", "2nd", "10am": a number with a unit, not leet (w may be cut: lead_digits < wl).
         */
        const char *unit = w + lead_digits;
        size_t ul = wl - lead_digits;

        if ((ul == 1 && unit[0] == 'p') || (ul == 3 && memcmp(unit, "ppm", 3) == 0) ||
            (ul == 5 && memcmp(unit, "pence", 5) == 0) ||
            (ul == 3 && memcmp(unit, "gbp", 3) == 0)) {
            adds(k, SPIM_TOK_NUMBER, "money");
            add_bucket(k, SPIM_TOK_NUMBER, "money:p", digits);
        } else {
            add_bucket(k, SPIM_TOK_NUMBER, "unit:", digits);
        }
        return j;
    }
    /* "kl341", "txt82228": a code after a word, not letters in disguise. */
    if (letters >= 2 && !full && !trailing_code(w, wl, digits))
        add_deleet(k, w, wl);
    return j;
}

/* --- The tokenizer ----------------------------------------------------------------- */

static const char *bucket_len(size_t cps)
{
    if (cps <= 10)
        return "len:0";
    if (cps <= 20)
        return "len:1";
    if (cps <= 40)
        return "len:2";
    if (cps <= 80)
        return "len:3";
    if (cps <= 120)
        return "len:4";
    if (cps <= 160)
        return "len:5";
    return "len:6";
}

/* The bucket of upper capitals among letters. */
static const char *caps_bucket(size_t letters, size_t upper)
{
    double share;

    if (letters < 4)
        return "caps:na";
    share = (double)upper / (double)letters;
    if (share < 0.05)
        return "caps:0";
    if (share < 0.2)
        return "caps:1";
    if (share < 0.5)
        return "caps:2";
    if (share < 0.8)
        return "caps:3";
    return "caps:4";
}

/* Share of capitals among the letters of the repaired (not folded) text. */
static const char *bucket_caps(const char *rep, size_t len)
{
    size_t i = 0, letters = 0, upper = 0, clen;

    while (i < len) {
        int32_t c = cp_at(rep, len, i, &clen);
        utf8proc_category_t cat;

        if (c < 0x80) {
            upper += c >= 'A' && c <= 'Z';
            letters += (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
            i += clen;
            continue;
        }
        cat = utf8proc_category(c);
        if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT)
            upper++;
        if (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO)
            letters++;
        i += clen;
    }
    return caps_bucket(letters, upper);
}

size_t spim__tok_run(struct spim__tok_ws *ws, const struct spim_tok_meta *meta,
                     struct spim_token *out, size_t cap, emit_fn emit, void *ud)
{
    struct sink k;
    const char *s = spim__tok_norm(ws);
    size_t len = ws->norm_len, i = 0, clen, excl = 0, cps = 0;
    int chunk_start = 1, hosts = may_hold_host(s, len);

    memset(&k, 0, offsetof(struct sink, used));
    k.out = out;
    k.cap = (out == NULL) ? 0 : (cap > SPIM_TOK_MAX ? SPIM_TOK_MAX : cap);
    k.set = ws->set_small;
    k.set_mask = SPIM__TOK_SET_SMALL - 1;
    k.set_big = ws->set;
    k.memo = ws->memo;
    if (out != NULL) {
        k.hint = ws->key_hint;
        k.hint_ud = ws->key_hint_ud;
    }
    k.emit = emit;
    k.ud = ud;

    if (ws->ascii) {
        cps = ws->ascii_cps;
        excl = ws->ascii_excl;
    } else {
        for (i = 0; i < len; i++) {
            if (((unsigned char)s[i] & 0xC0) != 0x80)
                cps++;
            if (s[i] == '!')
                excl++;
        }
    }
    i = 0;
    while (i < len) {
        int32_t c = cp_at(s, len, i, &clen);
        size_t e;

        if (is_space(c)) {
            chunk_start = 1;
            i += clen;
            continue;
        }
        if (chunk_start && hosts) {
            size_t ce = i, cl2;
            int dot = 0;

            chunk_start = 0;
            while (ce < len) {
                unsigned cl = cclass[(unsigned char)s[ce]];

                if (!(cl & CC_STOP)) { /* ASCII but a blank: a step of one */
                    dot |= cl;
                    ce++;
                } else if ((unsigned char)s[ce] < 0x80 || is_space(cp_at(s, len, ce, &cl2))) {
                    break;
                } else {
                    ce += cl2;
                }
            }
            dot &= CC_DOT;
            /* Without a dot there is no host of two labels: not a URL. */
            if (dot && try_url(&k, s + i, ce - i)) {
                spaced_flush(&k);
                i = ce;
                continue;
            }
        }
        if ((is_digit(c) || (c == '+' && i + 1 < len && is_digit((unsigned char)s[i + 1]))) &&
            (e = try_phone(&k, s, len, i)) > i) {
            spaced_flush(&k);
            i = e;
            continue;
        }
        if (is_currency(c) && i + clen < len && is_digit((unsigned char)s[i + clen]) &&
            (e = try_money(&k, s, len, i, clen)) > i) {
            spaced_flush(&k);
            i = e;
            continue;
        }
        if (is_letter(c) || is_digit(c)) {
            i = do_word(&k, s, len, i);
            continue;
        }
        if (is_emoji(c)) {
            spaced_flush(&k);
            add(&k, SPIM_TOK_EMOJI, s + i, clen);
        }
        i += clen;
    }
    spaced_flush(&k);

    adds(&k, SPIM_TOK_META, bucket_len(cps));
    {
        size_t before = k.n;

        adds(&k, SPIM_TOK_META, k.has_url ? "url:1" : "url:0");
        k.link |= k.has_url && k.n > before;
    }
    if (k.shortener)
        adds(&k, SPIM_TOK_META, "shortener");
    adds(&k, SPIM_TOK_META,
         ws->ascii ? caps_bucket(ws->ascii_letters, ws->ascii_upper)
                   : bucket_caps(ws->rep, ws->rep_len));
    adds(&k, SPIM_TOK_META,
         excl == 0   ? "excl:0"
         : excl == 1 ? "excl:1"
         : excl == 2 ? "excl:2"
                     : "excl:3");
    if (meta != NULL && meta->sender_domain.p != NULL && meta->sender_domain.len > 0) {
        char d[64];
        size_t n = meta->sender_domain.len, j;

        if (n > sizeof(d))
            n = sizeof(d);
        for (j = 0; j < n; j++) {
            char c = meta->sender_domain.p[j];

            d[j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        addp(&k, SPIM_TOK_META, "from:", d, n);
    }
    /* 32 KiB of set per message would cost more than the tokens: clear what was used. */
    for (i = 0; i < k.n; i++)
        k.set[k.used[i]] = 0;
    if (out != NULL)
        ws->has_link = k.link;
    return k.n;
}

size_t spim_tok_text(const char *text, size_t len, const struct spim_tok_meta *meta,
                     struct spim_token *out, size_t cap, emit_fn emit, void *ud)
{
    struct spim__tok_ws ws;
    size_t n;

    if (spim__tok_ws_init(&ws) != 0)
        return 0;
    spim__tok_prepare(&ws, text, len);
    n = spim__tok_run(&ws, meta, out, cap, emit, ud);
    spim__tok_ws_fini(&ws);
    return n;
}
