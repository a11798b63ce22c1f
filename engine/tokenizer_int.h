/* engine/tokenizer_int.h: internals shared by engine/tokenizer.c (tables, SPM, special tokens,
 * decoding) and engine/tokenizer_bpe.c (GPT-2 byte-level BPE and its pre-tokenizers).
 * Not a public header: include engine/tokenizer.h instead. */
#ifndef ENGINE_TOKENIZER_INT_H
#define ENGINE_TOKENIZER_INT_H

#include "engine/tokenizer.h"

// Pre-tokenizer families (vocab->pre). See tokenizer_bpe.c for the exact rules.
enum tok_pre {
    PRE_GPT2 = 0,  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    PRE_DIGITS,    // SmolLM/StarCoder: every \p{N} alone first, then the GPT-2 pattern
    PRE_LLAMA3,    // Llama-3: case-insensitive contractions, \p{N}{1,3}, [\r\n] handling
};

// Open-addressing hash map: byte string -> token id (the lowest id wins on duplicates).
struct tok_slot {
    int32_t id;      // -1 = empty
    uint32_t hash;   // full hash of the piece: most misses end here without touching the string
};
struct tok_map {
    struct tok_slot *slots;
    uint32_t mask;   // capacity - 1 (power of two)
};

// BPE merges keyed by the two token ids: (left, right) -> (rank, merged id).
struct pair_map {
    uint64_t *keys;  // (left << 32 | right) + 1; 0 = empty
    int32_t *rank;
    int32_t *id;
    uint32_t mask;
};

struct tokenizer {
    const struct vocab *v;
    struct tok_map map;      // every piece
    uint8_t *mergeable;      // [n_tokens] SPM: 1 if merges may produce this id (not control/unk/byte)
    int32_t byte_tok[256];   // SPM: id of "<0xNN>", -1 if absent
    bool spm_split;          // SPM: no piece has a space marker after another character, so text
                             // can be merged word by word (each run of markers starts a word)
    int32_t *special;        // ids matched by parse_special, longest text first
    int n_special;
    bool special_first[256]; // some special token text starts with this byte
    // BPE only
    struct pair_map merges;
    int32_t byte_sym[256];   // id of the single GPT-2 character for each byte, -1 if absent
    enum tok_pre pre;
    bool ignore_merges;      // Llama-3: a word that is a whole token skips the merges
};

// ------------------------------------------------------------------------------------------------
// Shared helpers (tokenizer.c)

uint32_t tok_hash(const char *s, size_t n);
// id of the piece s[0..n) or -1.
int32_t tok_map_get(const struct tok_map *m, const struct vocab *v, const char *s, size_t n);

/* Decodes one UTF-8 character at s[0..n). Returns its length (1-4) and stores the code point,
 * or 0 when the bytes are not valid UTF-8 (overlong, surrogate, > U+10FFFF, truncated). */
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
int utf8_encode(uint32_t cp, char *out);  // returns 1-4

// Output sink for the encoders: counts and checks capacity.
struct tok_out {
    int32_t *ids;
    int n, max;
    bool overflow;
};
static inline void tok_emit(struct tok_out *o, int32_t id) {
    if (o->n < o->max) o->ids[o->n] = id;
    else o->overflow = true;
    o->n++;
}

// A symbol of the linked-list merge: a byte span of the working text and its current token id.
struct tok_sym {
    int32_t id;       // -1 when the span is not (yet) a token
    uint32_t off, len;
    int32_t prev, next;
};
// A merge candidate: symbols left and right(=left.next) may merge; size = their byte length sum,
// used to detect stale entries (lengths only grow, so a changed sum means a merge happened).
struct tok_cand {
    double prio;      // higher merges first: SPM score, BPE -rank
    int32_t left, right, new_id;
    uint32_t size;
};
struct tok_heap {
    struct tok_cand *a;
    size_t n, cap;
};
int tok_heap_push(struct tok_heap *h, struct tok_cand c);  // 0 or ERR_OOM
struct tok_cand tok_heap_pop(struct tok_heap *h);         // requires h->n > 0

// ------------------------------------------------------------------------------------------------
// BPE (tokenizer_bpe.c)

int bpe_init(struct tokenizer *t, struct err *e);
void bpe_free(struct tokenizer *t);
// Encodes one fragment of validated UTF-8 text (no special tokens inside). 0 or ERR_OOM.
int bpe_encode(const struct tokenizer *t, const char *s, size_t n, struct tok_out *o, struct err *e);
/* Test hook: splits s[0..n) into pre-tokenizer words for vocab->pre name pre_name; stores each
 * word's end offset in ends[0..max) and returns the word count. */
int bpe_pretokenize(const char *pre_name, const char *s, size_t n, size_t *ends, int max);
// Maps one GPT-2 byte-level code point back to its byte; -1 if cp is not one of the 256.
int bpe_cp_to_byte(uint32_t cp);
// Unicode classes used by the pre-tokenizers (full tables for Unicode 14, see tokenizer_bpe.c).
bool uni_is_letter(uint32_t cp);
bool uni_is_number(uint32_t cp);
bool uni_is_space(uint32_t cp);

#endif
