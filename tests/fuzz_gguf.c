/* tests/fuzz_gguf.c: libFuzzer target for the model loaders (GGUF first: most inputs the fuzzer
 * grows from a GGUF seed stay GGUF). Not built by `make`; build and run:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE tests/fuzz_gguf.c \
 *         loaders/*.c quant/*.c -lm -o fuzz_gguf && ./fuzz_gguf -max_total_time=30 corpus/
 * Seed corpus: ../shared/data/models/stories260K/stories260K.gguf and small files written by
 * tests/test_loader_gguf.c. Every input must give ERR_OK or an error message; never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loaders/loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    static int fd = -1;
    if (fd < 0) {  // one scratch file per process, rewritten for every input
        snprintf(path, sizeof path, "%s/fuzz_gguf_XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        fd = mkstemp(path);
        if (fd < 0) abort();
    }
    if (ftruncate(fd, 0) != 0) abort();
    for (size_t off = 0; off < size;) {
        ssize_t n = pwrite(fd, data + off, size - off, (off_t)off);
        if (n <= 0) abort();
        off += (size_t)n;
    }
    struct model_file mf;
    struct err e = {0};
    int rc = model_file_open(&mf, path, NULL, &e);
    if (rc == ERR_OK) {
        // touch what a caller would: every tensor's bytes and every token string
        volatile uint8_t sink = 0;
        for (int i = 0; i < mf.n_tensors; i++) {
            const uint8_t *p = mf.tensors[i].data;
            if (mf.tensors[i].nbytes) sink ^= p[0] ^ p[mf.tensors[i].nbytes - 1];
        }
        for (int i = 0; i < mf.vocab.n_tokens; i++) sink ^= (uint8_t)mf.vocab.tokens[i][mf.vocab.lens[i]];
        (void)sink;
        model_file_close(&mf);
    } else if (!strstr(e.msg, path)) {
        fprintf(stderr, "error message does not name the file: %s\n", e.msg);
        abort();
    }
    return 0;
}
