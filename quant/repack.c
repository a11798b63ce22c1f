/* quant/repack.c: natural <-> X8 layout conversion of the native group-64 types (layout in
 * quant/repack.h), and the X8 traits' reference row converters. Scalar and exact: a pack followed
 * by an unpack returns the same bytes. Test: tests/test_quant_repack.c */
#include "quant/repack.h"

#include <pthread.h>
#include <string.h>

#include "quant/quant_ref.h"

int qtype_x8_of(enum qtype t) {
    switch (t) {
    case QT_Q8_G64: return QT_Q8_X8;
    case QT_Q4_G64: return QT_Q4_X8;
    case QT_Q3_G64: return QT_Q3_X8;
    case QT_Q2_G64: return QT_Q2_X8;
    default: return -1;
    }
}

int qtype_natural_of(enum qtype t) {
    switch (t) {
    case QT_Q8_X8: return QT_Q8_G64;
    case QT_Q4_X8: return QT_Q4_G64;
    case QT_Q3_X8: return QT_Q3_G64;
    case QT_Q2_X8: return QT_Q2_G64;
    default: return -1;
    }
}

// codes of the 8 groups of one superblock in code-vector order (cv) <-> packed superblock bytes
static void sb_pack(enum qtype nat, uint8_t *sb, const f16_t d[8], const f16_t m[8], const uint8_t cv[512]) {
    memcpy(sb, d, 16);
    if (nat == QT_Q8_G64) {
        memcpy(sb + 16, cv, 512);
        return;
    }
    memcpy(sb + 16, m, 16);
    uint8_t *c = sb + 32;
    if (nat == QT_Q4_G64) {
        for (int j = 0; j < 4; j++)
            for (int p = 0; p < 64; p++) c[64 * j + p] = (uint8_t)(cv[128 * j + p] | cv[128 * j + 64 + p] << 4);
        return;
    }
    if (nat == QT_Q3_G64) {   // three 3-bit fields per byte, the 6th code's and the 3rd's high bits in P2
        for (int p = 0; p < 64; p++) {
            const uint8_t *q = cv + p;   // q[64 k] = code of vector k
            c[p] = (uint8_t)(q[0] | q[64] << 3 | (q[128] & 3) << 6);
            c[64 + p] = (uint8_t)(q[192] | q[256] << 3 | (q[320] & 3) << 6);
            c[128 + p] = (uint8_t)(q[384] | q[448] << 3 | (q[128] >> 2) << 6 | (q[320] >> 2) << 7);
        }
        return;
    }
    for (int j = 0; j < 2; j++)   // Q2
        for (int p = 0; p < 64; p++) {
            uint8_t v = 0;
            for (int k = 0; k < 4; k++) v |= (uint8_t)((cv[64 * (4 * j + k) + p] & 3) << (2 * k));
            c[64 * j + p] = v;
        }
}

static void sb_unpack(enum qtype nat, const uint8_t *sb, f16_t d[8], f16_t m[8], uint8_t cv[512]) {
    memcpy(d, sb, 16);
    if (nat == QT_Q8_G64) {
        memcpy(cv, sb + 16, 512);
        return;
    }
    memcpy(m, sb + 16, 16);
    const uint8_t *c = sb + 32;
    if (nat == QT_Q4_G64) {
        for (int j = 0; j < 4; j++)
            for (int p = 0; p < 64; p++) {
                cv[128 * j + p] = c[64 * j + p] & 15;
                cv[128 * j + 64 + p] = c[64 * j + p] >> 4;
            }
        return;
    }
    if (nat == QT_Q3_G64) {
        for (int p = 0; p < 64; p++) {
            uint8_t *q = cv + p;
            const uint8_t a = c[p], b = c[64 + p], h = c[128 + p];
            q[0] = a & 7, q[64] = (a >> 3) & 7, q[128] = (uint8_t)(a >> 6 | ((h >> 6) & 1) << 2);
            q[192] = b & 7, q[256] = (b >> 3) & 7, q[320] = (uint8_t)(b >> 6 | (h >> 7) << 2);
            q[384] = h & 7, q[448] = (h >> 3) & 7;
        }
        return;
    }
    for (int j = 0; j < 2; j++)
        for (int p = 0; p < 64; p++)
            for (int k = 0; k < 4; k++) cv[64 * (4 * j + k) + p] = (c[64 * j + p] >> (2 * k)) & 3;
}

// natural block <-> (d, m, 64 codes); Q8 codes are the int8 values as bytes
static void blk_get(enum qtype nat, const uint8_t *b, f16_t *d, f16_t *m, uint8_t q[64]) {
    if (nat == QT_Q8_G64) {
        memcpy(d, b, 2);
        *m = 0;
        memcpy(q, b + 2, 64);
    } else {
        quant_unpack_group(nat, b, d, m, q);
    }
}
static void blk_put(enum qtype nat, uint8_t *b, f16_t d, f16_t m, const uint8_t q[64]) {
    if (nat == QT_Q8_G64) {
        memcpy(b, &d, 2);
        memcpy(b + 2, q, 64);
    } else {
        quant_pack_group(nat, b, d, m, q);
    }
}

void x8_pack_row(enum qtype x8, void *restrict dst, const void *restrict src, int64_t n) {
    const enum qtype nat = (enum qtype)qtype_natural_of(x8);
    const size_t bb = qtype_traits[nat].block_bytes;
    const int64_t ng = n / QK_G64, nsb = ng / X8_GROUPS;
    const uint8_t *s = src;
    uint8_t *o = dst;
    for (int64_t sb = 0; sb < nsb; sb++) {
        f16_t d[8], m[8];
        uint8_t q[64], cv[512];
        for (int l = 0; l < 8; l++) {
            blk_get(nat, s + (size_t)(8 * sb + l) * bb, &d[l], &m[l], q);
            for (int i = 0; i < 64; i++) cv[x8_pos(l, i)] = q[i];
        }
        sb_pack(nat, o + (size_t)sb * 8 * bb, d, m, cv);
    }
    memcpy(o + (size_t)nsb * 8 * bb, s + (size_t)nsb * 8 * bb, (size_t)(ng - 8 * nsb) * bb);   // tail groups
}

void x8_unpack_row(enum qtype x8, void *restrict dst, const void *restrict src, int64_t n) {
    const enum qtype nat = (enum qtype)qtype_natural_of(x8);
    const size_t bb = qtype_traits[nat].block_bytes;
    const int64_t ng = n / QK_G64, nsb = ng / X8_GROUPS;
    const uint8_t *s = src;
    uint8_t *o = dst;
    for (int64_t sb = 0; sb < nsb; sb++) {
        f16_t d[8], m[8];
        uint8_t q[64], cv[512];
        sb_unpack(nat, s + (size_t)sb * 8 * bb, d, m, cv);
        for (int l = 0; l < 8; l++) {
            for (int i = 0; i < 64; i++) q[i] = cv[x8_pos(l, i)];
            blk_put(nat, o + (size_t)(8 * sb + l) * bb, d[l], nat == QT_Q8_G64 ? 0 : m[l], q);
        }
    }
    memcpy(o + (size_t)nsb * 8 * bb, s + (size_t)nsb * 8 * bb, (size_t)(ng - 8 * nsb) * bb);
}

struct pjob {
    enum qtype x8;
    uint8_t *dst;
    const uint8_t *src;
    int64_t n, r0, r1;
    size_t rb;
};

static void *pjob_run(void *arg) {
    struct pjob *j = arg;
    for (int64_t r = j->r0; r < j->r1; r++) x8_pack_row(j->x8, j->dst + (size_t)r * j->rb, j->src + (size_t)r * j->rb, j->n);
    return NULL;
}

void x8_pack_matrix(enum qtype x8, void *restrict dst, const void *restrict src, int64_t n, int64_t rows,
                    int n_threads) {
    int nt = n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads;
    if (nt > rows) nt = rows > 0 ? (int)rows : 1;
    struct pjob jobs[64];
    pthread_t tid[64];
    bool started[64] = {false};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (struct pjob){.x8 = x8, .dst = dst, .src = src, .n = n, .r0 = rows * k / nt,
                                .r1 = rows * (k + 1) / nt, .rb = qtype_row_bytes(x8, n)};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, pjob_run, &jobs[k]) == 0;
    }
    pjob_run(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else pjob_run(&jobs[k]);
    }
}

void dequantize_row_x8_ref(enum qtype x8, float *restrict out, const void *restrict src, int64_t n) {
    const enum qtype nat = (enum qtype)qtype_natural_of(x8);
    const size_t bb = qtype_traits[nat].block_bytes;
    const int64_t ng = n / QK_G64, nsb = ng / X8_GROUPS;
    uint8_t tmp[8 * 66];
    for (int64_t sb = 0; sb < nsb; sb++) {
        x8_unpack_row(x8, tmp, (const uint8_t *)src + (size_t)sb * 8 * bb, X8_WEIGHTS);
        qtype_traits[nat].dequantize_row(out + sb * X8_WEIGHTS, tmp, X8_WEIGHTS);
    }
    qtype_traits[nat].dequantize_row(out + nsb * X8_WEIGHTS, (const uint8_t *)src + (size_t)nsb * 8 * bb,
                                     n - nsb * X8_WEIGHTS);
}

void quantize_row_x8_ref(enum qtype x8, void *restrict dst, const float *restrict src, int64_t n) {
    const enum qtype nat = (enum qtype)qtype_natural_of(x8);
    const size_t bb = qtype_traits[nat].block_bytes;
    const int64_t ng = n / QK_G64, nsb = ng / X8_GROUPS;
    uint8_t tmp[8 * 66];
    for (int64_t sb = 0; sb < nsb; sb++) {
        qtype_traits[nat].quantize_row(tmp, src + sb * X8_WEIGHTS, X8_WEIGHTS);
        x8_pack_row(x8, (uint8_t *)dst + (size_t)sb * 8 * bb, tmp, X8_WEIGHTS);
    }
    qtype_traits[nat].quantize_row((uint8_t *)dst + (size_t)nsb * 8 * bb, src + nsb * X8_WEIGHTS,
                                   n - nsb * X8_WEIGHTS);
}

#define X8_ROW_FNS(name, T)                                                                      \
    void dequantize_row_##name##_ref(float *restrict out, const void *restrict src, int64_t n) { \
        dequantize_row_x8_ref(T, out, src, n);                                                   \
    }                                                                                            \
    void quantize_row_##name##_ref(void *restrict dst, const float *restrict src, int64_t n) {   \
        quantize_row_x8_ref(T, dst, src, n);                                                     \
    }
X8_ROW_FNS(q8_x8, QT_Q8_X8)
X8_ROW_FNS(q4_x8, QT_Q4_X8)
X8_ROW_FNS(q3_x8, QT_Q3_X8)
X8_ROW_FNS(q2_x8, QT_Q2_X8)
