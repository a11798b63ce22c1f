/* engine/chat.c: chat template detection and rendering (see chat.h). The formats follow the
 * models' published templates: TinyLlama-Chat v1.0 (Zephyr), SmolLM2 (ChatML), Meta's Llama-2-chat
 * and Llama-3-instruct. Test: tests/test_chat.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"

enum chat_style chat_detect(const char *t) {
    if (!t || !*t) return CHAT_NONE;
    if (strstr(t, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>")) return CHAT_LLAMA3;
    if (strstr(t, "<|user|>") || strstr(t, "<|assistant|>")) return CHAT_ZEPHYR;
    if (strstr(t, "[INST]")) return CHAT_LLAMA2;
    return CHAT_NONE;
}

const char *chat_style_name(enum chat_style s) {
    switch (s) {
    case CHAT_ZEPHYR: return "zephyr";
    case CHAT_CHATML: return "chatml";
    case CHAT_LLAMA2: return "llama2";
    case CHAT_LLAMA3: return "llama3";
    default: return "none";
    }
}

// Growable string; on OOM it frees itself and further appends do nothing.
struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void put(struct sbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + k + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            free(b->p);
            b->p = NULL;
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

// Appends the strings up to a NULL.
static void puts_n(struct sbuf *b, ...) {
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *));) put(b, s);
    va_end(ap);
}

char *chat_apply(enum chat_style s, const struct chat_msg *m, int n, bool add_assistant) {
    struct sbuf b = {0};
    put(&b, "");  // an empty conversation is "", not NULL
    const char *sys = NULL;  // Llama-2: the system prompt waits for the first user message
    bool first_user = true;
    for (int i = 0; i < n; i++) {
        const char *role = m[i].role ? m[i].role : "user";
        const char *c = m[i].content ? m[i].content : "";
        switch (s) {
        case CHAT_ZEPHYR:
            puts_n(&b, "<|", role, "|>\n", c, "</s>\n", NULL);
            break;
        case CHAT_CHATML:
            puts_n(&b, "<|im_start|>", role, "\n", c, "<|im_end|>\n", NULL);
            break;
        case CHAT_LLAMA3:
            puts_n(&b, "<|start_header_id|>", role, "<|end_header_id|>\n\n", c, "<|eot_id|>", NULL);
            break;
        case CHAT_LLAMA2:
            if (!strcmp(role, "system")) {
                sys = c;
            } else if (!strcmp(role, "assistant")) {
                puts_n(&b, " ", c, " </s>", NULL);
            } else {
                put(&b, first_user ? "[INST] " : "<s>[INST] ");
                if (sys) puts_n(&b, "<<SYS>>\n", sys, "\n<</SYS>>\n\n", NULL);
                puts_n(&b, c, " [/INST]", NULL);
                sys = NULL;
                first_user = false;
            }
            break;
        default:
            puts_n(&b, i ? "\n" : "", c, NULL);
            break;
        }
    }
    if (add_assistant) {
        if (s == CHAT_ZEPHYR) put(&b, "<|assistant|>\n");
        else if (s == CHAT_CHATML) put(&b, "<|im_start|>assistant\n");
        else if (s == CHAT_LLAMA3) put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    return b.p;
}
