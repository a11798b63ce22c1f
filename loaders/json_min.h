/* loaders/json_min.h: a small strict JSON (RFC 8259) parser for config.json, safetensors headers
 * and tokenizer.json. The whole document becomes a tree of nodes in one arena; strings are
 * decoded to UTF-8 (escapes incl. \uXXXX surrogate pairs). Hostile-input safe: depth and size
 * limits, invalid UTF-8 / lone surrogates / trailing commas / leading zeros are errors with a byte
 * offset. Test: tests/test_loader_safetensors.c (json section). */
#ifndef LOADERS_JSON_MIN_H
#define LOADERS_JSON_MIN_H

#include "quant/common.h"

#define JSON_MAX_DEPTH 128
#define JSON_MAX_BYTES (1ull << 30)   // 1 GiB of text

enum json_type { JSON_NULL = 0, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_type type;
    uint32_t len;          // string: bytes (without NUL); array/object: number of children
    uint64_t off;          // byte offset of the value in the source text (for error messages)
    const char *key;       // member name when this node is an object member, else NULL
    uint32_t key_len;
    double num;            // JSON_NUMBER
    const char *str;       // JSON_STRING: NUL-terminated UTF-8 (may contain NULs from \u0000)
    struct json *kids;     // JSON_ARRAY / JSON_OBJECT: len children in document order
};

struct json_doc {
    struct json *root;
    void *arena;           // owner of every node and string (freed by json_free)
};

/* Parses text[0, len) (need not be NUL-terminated). `name` (the file name) starts error messages:
 * "<name>: json at byte <off>: <problem>". Returns ERR_OK, ERR_FORMAT or ERR_OOM; on error doc
 * holds nothing. Free with json_free (safe on a zeroed or failed doc). */
int json_parse(struct json_doc *doc, const char *text, size_t len, const char *name, struct err *e);
void json_free(struct json_doc *doc);

/* Lookups. All accept NULL and return NULL/0/false when the node has the wrong type. */
const struct json *json_get(const struct json *obj, const char *key);   // first member named key
size_t json_len(const struct json *v);                                  // children (array/object)
const struct json *json_at(const struct json *v, size_t i);             // i-th child or NULL
const char *json_str(const struct json *v);                             // string value or NULL
bool json_num(const struct json *v, double *out);                       // number
bool json_int(const struct json *v, int64_t *out);                      // integral number in int64
bool json_bool(const struct json *v, bool *out);                        // true/false
bool json_is_null(const struct json *v);                                // missing counts as false
/* String member: json_str(json_get(obj, key)). */
const char *json_get_str(const struct json *obj, const char *key);

#endif
