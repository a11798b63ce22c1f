/* tests/test_loader_imatrix.c: calibration statistics end to end without a model.
 * (a) the Gram update (own kernel, any n incl. tails, 1-3 threads) against a double reference;
 * (b) the accumulator: shared inputs (q/k/v) give equal x2 and one Gram matrix, means are sums/count;
 * (c) GGUF save -> load round trip (x2, Gram, sharing restored by the Llama naming rule), no temp
 *     file left, an existing file replaced only on success;
 * (d) llama.cpp's legacy .dat (values = mean * ncall) read back as means;
 * (e) corrupt inputs: truncated .dat, a GGUF without .in_sum2, a Gram diagonal that disagrees. */
#include <unistd.h>

#include "eval/imatrix.h"
#include "loaders/gguf_write.h"
#include "loaders/imatrix.h"
#include "tests/test.h"

static void test_gram(struct rng *g) {
    const int64_t ns[] = {1, 7, 64, 172, 200};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        const int64_t n = ns[k], T = 37;
        float *X = rng_f32(g, (size_t)(n * T), -2, 2);
        const int64_t m = calib_tri_row(n, n);
        for (int nt = 1; nt <= 3; nt++) {
            double *G = calloc((size_t)m, sizeof *G);
            imatrix_gram_update(G, X, T, n, nt);
            imatrix_gram_update(G, X, T, n, nt);   // accumulates
            double maxerr = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i; j < n; j++) {
                    double ref = 0;
                    for (int64_t t = 0; t < T; t++) ref += (double)X[t * n + i] * X[t * n + j];
                    double d = fabs(G[calib_tri_row(n, i) + j - i] - 2 * ref);
                    maxerr = d > maxerr ? d : maxerr;
                }
            // float accumulation of 37 products of |x| <= 2 per call: |err| <= 37 * 4 * 2^-23 * 37 per call
            CHECK(maxerr <= 2 * 37 * 37 * 4 * 1.2e-7, "n=%lld threads=%d: max error %g", (long long)n, nt, maxerr);
            free(G);
        }
        free(X);
    }
}

static void observe_rows(struct imatrix_acc *a, const char *const *names, int n_w, float *X, int64_t n, int64_t T) {
    struct tensor x = {.type = QT_F32, .ne = {n, T}, .data = X, .nbytes = (size_t)(n * T) * 4};
    imatrix_acc_observe(a, names, n_w, &x);
}

static void test_acc_and_files(struct rng *g) {
    const int64_t n = 64, n2 = 128;
    struct imatrix_acc *a = imatrix_acc_new(true, 2);
    const char *qkv[3] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"};
    const char *down[1] = {"blk.0.ffn_down.weight"};
    float *X1 = rng_f32(g, (size_t)(n * 10), -1, 1), *X2 = rng_f32(g, (size_t)(n * 6), -1, 1);
    float *D = rng_f32(g, (size_t)(n2 * 16), -3, 3);
    observe_rows(a, qkv, 3, X1, n, 10);
    observe_rows(a, down, 1, D, n2, 16);
    observe_rows(a, qkv, 3, X2, n, 6);
    struct calib c;
    struct err e = {0};
    CHECK(imatrix_acc_finish(a, &c, &e) == 0, "%s", e.msg);
    CHECK(c.n == 4, "%d entries", c.n);
    const struct calib_entry *q = calib_find(&c, qkv[0]), *v = calib_find(&c, qkv[2]), *d = calib_find(&c, down[0]);
    CHECK(q && v && d, "entries missing");
    if (!q || !v || !d) return;
    CHECK(q->count == 16 && d->count == 16, "counts %g %g", q->count, d->count);
    for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int t = 0; t < 10; t++) s += (double)X1[t * n + j] * X1[t * n + j];
        for (int t = 0; t < 6; t++) s += (double)X2[t * n + j] * X2[t * n + j];
        CHECK_NEAR(q->x2[j], s / 16, 1e-6, "x2[%lld]", (long long)j);
        CHECK(v->x2[j] == q->x2[j], "shared input x2 differs");
        CHECK_NEAR(q->xtx[calib_tri_row(n, j)], q->x2[j], 1e-6, "Gram diagonal vs x2");
    }
    CHECK(q->xtx && !v->xtx && calib_xtx(&c, v) == q->xtx, "v does not share q's Gram matrix");
    // (c) round trip through a GGUF; the target exists beforehand and is replaced
    char path[256];
    snprintf(path, sizeof path, "tests/out/imatrix_test_%d.gguf", (int)getpid());
    FILE *f = fopen(path, "w");
    if (f) fputs("old", f), fclose(f);
    c.chunks = 2, c.chunk_size = 8;
    snprintf(c.dataset, sizeof c.dataset, "calib.txt");
    CHECK(imatrix_save(&c, path, &e) == 0, "%s", e.msg);
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%d", path, (int)getpid());
    CHECK(access(tmpname, F_OK) != 0, "temporary file left behind");
    struct calib r;
    CHECK(imatrix_load(&r, path, &e) == 0, "%s", e.msg);
    CHECK(r.n == c.n, "%d vs %d entries", r.n, c.n);
    for (int i = 0; i < c.n; i++) {
        const struct calib_entry *x = &c.e[i], *y = calib_find(&r, x->name);
        CHECK(y && y->n == x->n && y->count == x->count, "%s", x->name);
        if (!y) continue;
        for (int64_t j = 0; j < x->n; j++) CHECK_NEAR(y->x2[j], x->x2[j], 1e-6 * (x->x2[j] + 1e-6), "%s x2", x->name);
        const float *gx = calib_xtx(&c, x), *gy = calib_xtx(&r, y);
        CHECK((gx == NULL) == (gy == NULL), "%s: Gram presence", x->name);
        if (gx && gy)
            for (int64_t j = 0; j < calib_tri_row(x->n, x->n); j++) CHECK_NEAR(gy[j], gx[j], 1e-6 * (fabsf(gx[j]) + 1e-6), "%s Gram", x->name);
    }
    calib_free(&r);
    // (d) legacy .dat: entry "a.weight" with ncall 4 and values = mean * 4
    char dat[256];
    snprintf(dat, sizeof dat, "tests/out/imatrix_test_%d.dat", (int)getpid());
    f = fopen(dat, "wb");
    int32_t ne = 1, len = 8, ncall = 4, nval = 3, last = 4, dl = 5;
    float vals[3] = {4.0f, 8.0f, 0.4f};
    fwrite(&ne, 4, 1, f), fwrite(&len, 4, 1, f), fwrite("a.weight", 1, 8, f);
    fwrite(&ncall, 4, 1, f), fwrite(&nval, 4, 1, f), fwrite(vals, 4, 3, f);
    fwrite(&last, 4, 1, f), fwrite(&dl, 4, 1, f), fwrite("c.txt", 1, 5, f);
    fclose(f);
    CHECK(imatrix_load(&r, dat, &e) == 0, "%s", e.msg);
    const struct calib_entry *ae = calib_find(&r, "a.weight");
    CHECK(ae && ae->n == 3 && ae->x2[0] == 1.0f && ae->x2[1] == 2.0f && fabsf(ae->x2[2] - 0.1f) < 1e-7f, "legacy values");
    CHECK(r.chunks == 4 && strcmp(r.dataset, "c.txt") == 0, "legacy trailer: %d '%s'", r.chunks, r.dataset);
    calib_free(&r);
    // (e) truncated legacy file
    f = fopen(dat, "wb");
    fwrite(&ne, 4, 1, f), fwrite(&len, 4, 1, f), fwrite("a.weight", 1, 8, f), fwrite(&ncall, 4, 1, f), fwrite(&nval, 4, 1, f), fwrite(vals, 4, 2, f);
    fclose(f);
    CHECK(imatrix_load(&r, dat, &e) == ERR_FORMAT, "truncated .dat accepted");
    CHECK(strstr(e.msg, "truncated") != NULL, "message: %s", e.msg);
    // a GGUF with no imatrix tensors
    struct gguf_writer *w = gguf_writer_create();
    const int64_t ne1[1] = {4};
    float four[4] = {1, 2, 3, 4};
    gguf_writer_add_tensor(w, "x.weight", QT_F32, 1, ne1, four, 16);
    CHECK(gguf_writer_write(w, path, &e) == 0, "%s", e.msg);
    CHECK(imatrix_load(&r, path, &e) == ERR_FORMAT && strstr(e.msg, "not an imatrix"), "model GGUF accepted: %s", e.msg);
    gguf_writer_free(w);
    // a Gram diagonal that disagrees with in_sum2 (files of two runs mixed)
    c.e[0].xtx[0] *= 2;
    CHECK(imatrix_save(&c, path, &e) == 0, "%s", e.msg);
    CHECK(imatrix_load(&r, path, &e) == ERR_FORMAT && strstr(e.msg, "disagrees"), "mixed Gram accepted: %s", e.msg);
    CHECK(imatrix_load(&r, "tests/out/does-not-exist.gguf", &e) == ERR_IO, "missing file");
    unlink(path), unlink(dat);
    calib_free(&c);
    imatrix_acc_free(a);
    free(X1), free(X2), free(D);
}

int main(void) {
    test_begin("test_loader_imatrix");
    struct rng g;
    rng_init(&g, 0);
    test_gram(&g);
    test_acc_and_files(&g);
    return test_end();
}
