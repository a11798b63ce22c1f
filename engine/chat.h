/* engine/chat.h: chat prompt formats. Detects the style from a model's Jinja chat template (by its
 * markers, no Jinja engine) and renders a conversation as the text the model was trained on.
 * Encode the result with tokenizer_encode(..., add_bos = vocab->add_bos, parse_special = true).
 * Test: tests/test_chat.c. */
#ifndef ENGINE_CHAT_H
#define ENGINE_CHAT_H

#include <stdbool.h>

enum chat_style {
    CHAT_NONE = 0,  // plain text: the contents joined by "\n"
    CHAT_ZEPHYR,    // TinyLlama-Chat v1.0: <|user|>\n{msg}</s>\n<|assistant|>\n
    CHAT_CHATML,    // SmolLM2, Qwen: <|im_start|>{role}\n{msg}<|im_end|>\n
    CHAT_LLAMA2,    // Llama-2-chat: [INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{msg} [/INST]
    CHAT_LLAMA3,    // Llama-3-instruct: <|start_header_id|>{role}<|end_header_id|>\n\n{msg}<|eot_id|>
};

struct chat_msg {
    const char *role;     // "system", "user" or "assistant"
    const char *content;
};

/* Style from a Jinja template string (NULL or unrecognised: CHAT_NONE). */
enum chat_style chat_detect(const char *template_str);
const char *chat_style_name(enum chat_style s);  // "none", "zephyr", "chatml", "llama2", "llama3"

/* Renders n messages; add_assistant appends the header that asks the model to answer.
 * The leading BOS (<s>, <|begin_of_text|>) is NOT included: encode with add_bos instead. Llama-2's
 * later turns contain "</s><s>", which parse_special turns into EOS/BOS ids.
 * ChatML: no default system prompt is added (SmolLM2's template adds one when the first message is
 * not "system"; pass it explicitly to match). Returns a malloc'd string (caller frees), or NULL on
 * out of memory. */
char *chat_apply(enum chat_style s, const struct chat_msg *m, int n, bool add_assistant);

#endif
