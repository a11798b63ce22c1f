/* engine/tokenizer.h: text <-> token ids for the two vocabulary kinds in loaders/loader.h.
 * VOCAB_SPM: SentencePiece BPE over piece scores (Llama-2, TinyLlama, llama2.c tokenizer.bin).
 * VOCAB_BPE: GPT-2 byte-level BPE with merge ranks and a pre-tokenizer (SmolLM2, Llama-3).
 * Tests: tests/test_tokenizer_spm.c, tests/test_tokenizer_bpe.c. CLI: ./tokenize (engine/tokenize_main.c). */
#ifndef ENGINE_TOKENIZER_H
#define ENGINE_TOKENIZER_H

#include "loaders/loader.h"

struct tokenizer;

/* Builds the lookup tables (piece hash map, merge ranks, special-token list) for v.
 * Keeps a pointer to v: v must outlive the tokenizer. Returns NULL with e set on error
 * (ERR_ARG for an empty/unknown vocabulary kind, ERR_OOM). */
struct tokenizer *tokenizer_create(const struct vocab *v, struct err *e);
void tokenizer_free(struct tokenizer *t);

/* Encodes len bytes of UTF-8 text into out[0..max). add_bos: prepend v->bos (if the vocab has one).
 * parse_special: substrings equal to a control / user-defined token's text ("<|im_start|>", "<s>")
 * become that id; otherwise they are tokenized as plain text.
 * Returns the token count, or -1 with e set: invalid UTF-8 (ERR_ARG naming the byte offset),
 * more than max tokens (ERR_ARG), out of memory (ERR_OOM). Thread-safe for a const tokenizer. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *out, int max, struct err *e);

/* Streaming decoder state: bytes of a not yet complete UTF-8 character, and the previous id. */
struct detok {
    unsigned char pending[8];
    int n_pending;
    int32_t prev;
};
void detok_init(struct detok *d);

/* Writes the text of token id to out (at most cap-1 bytes, then a NUL when cap > 0) and returns
 * the number of bytes written. Emits only complete UTF-8 characters: bytes of a split character
 * (SPM <0xNN> byte fallback, BPE byte pieces) wait in d until the character completes; invalid
 * sequences become U+FFFD. Control tokens (BOS/EOS/<|im_end|>...) emit nothing.
 * SPM: '▁' becomes ' ', and a leading space right after BOS is dropped (as SentencePiece and
 * llama2.c run.c do). BPE: GPT-2 byte-level characters are mapped back to bytes.
 * Out-of-range ids emit nothing. */
size_t tokenizer_decode_token(const struct tokenizer *t, struct detok *d, int32_t id, char *out,
                              size_t cap);
/* Ends a stream: leftover incomplete bytes become one U+FFFD (3 bytes). Same output rules. */
size_t detok_flush(struct detok *d, char *out, size_t cap);

/* The raw stored piece of id ("▁the", "Ġthe", "<0x0A>"), or NULL when out of range. */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id);
/* The id of an exact piece string (any token type), or -1 if absent. */
int32_t tokenizer_find(const struct tokenizer *t, const char *piece);

#endif
