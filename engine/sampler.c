/* engine/sampler.c: the sampler chain (see sampler.h). Candidates are (id, logit) pairs; each stage
 * narrows or reweights them; probabilities come from a softmax over what is left. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"

struct cand { int32_t id; float logit; float p; };

struct sampler {
    struct sampler_params p;
    int n_vocab;
    struct cand *c;       // n_vocab candidates
    int32_t *hist;        // ring of recent tokens
    int hist_cap, hist_len, hist_pos;
    int *counts;          // scratch: occurrences per token in the penalty window
    uint64_t rng;
    float mu;             // mirostat state: 2 * tau initially
};

void sampler_params_default(struct sampler_params *p) {
    *p = (struct sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                                 .typical_p = 1.0f, .tfs_z = 1.0f, .repeat_penalty = 1.0f,
                                 .repeat_last_n = 64, .mirostat_tau = 5.0f, .mirostat_eta = 0.1f,
                                 .seed = 0xC0FFEE};
}

struct sampler *sampler_create(const struct sampler_params *p, int n_vocab) {
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->hist_cap = 1 << 16;
    s->hist = malloc((size_t)s->hist_cap * sizeof *s->hist);
    if (!s->c || !s->counts || !s->hist) { sampler_free(s); return NULL; }
    s->rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ULL;
    s->mu = 2.0f * p->mirostat_tau;
    return s;
}

void sampler_free(struct sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->counts);
    free(s->hist);
    free(s);
}

void sampler_accept(struct sampler *s, int32_t token) {
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->hist_cap;
    if (s->hist_len < s->hist_cap) s->hist_len++;
}

float sampler_rand(struct sampler *s) {   // xorshift64*, top 24 bits -> [0, 1)
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

float sampler_mirostat_mu(const struct sampler *s) { return s->mu; }

static int cmp_desc(const void *a, const void *b) {
    float x = ((const struct cand *)a)->logit, y = ((const struct cand *)b)->logit;
    if (x != y) return x > y ? -1 : 1;
    return ((const struct cand *)a)->id - ((const struct cand *)b)->id;   // stable by id
}

// Softmax over c[0..n) (sorted or not); fills p.
static void softmax(struct cand *c, int n) {
    float mx = c[0].logit;
    for (int i = 1; i < n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) { c[i].p = expf(c[i].logit - mx); sum += c[i].p; }
    for (int i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

// Partially sort so that c[0..k) are the k largest, in order (k small: selection via qsort of all
// is O(V log V) = fine for V <= 256k at one call per token).
static void sort_desc(struct cand *c, int n) { qsort(c, (size_t)n, sizeof *c, cmp_desc); }

static void apply_penalties(struct sampler *s, struct cand *c) {
    const struct sampler_params *p = &s->p;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f) return;
    int n = p->repeat_last_n < 0 ? s->hist_len : (p->repeat_last_n < s->hist_len ? p->repeat_last_n : s->hist_len);
    if (n <= 0) return;
    for (int i = 0; i < n; i++) {
        int32_t t = s->hist[(s->hist_pos - 1 - i + s->hist_cap) % s->hist_cap];
        if (t >= 0 && t < s->n_vocab) s->counts[t]++;
    }
    for (int i = 0; i < n; i++) {
        int32_t t = s->hist[(s->hist_pos - 1 - i + s->hist_cap) % s->hist_cap];
        if (t < 0 || t >= s->n_vocab || s->counts[t] == 0) continue;
        float *l = &c[t].logit;   // candidates are still in id order here
        // llama.cpp: divide positive logits by the penalty, multiply negative ones
        *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
        s->counts[t] = 0;   // each distinct token once
    }
}

// Moves the k largest candidates to c[0..k) in descending order: a size-k min-heap, O(n log k),
// so top-k 40 over a 32k vocabulary costs far less than sorting everything.
static void heap_down(struct cand *h, int k, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && cmp_desc(&h[l], &h[m]) > 0) m = l;   // "greater" in cmp_desc = smaller logit
        if (r < k && cmp_desc(&h[r], &h[m]) > 0) m = r;
        if (m == i) return;
        struct cand t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}
static int select_top(struct cand *c, int n, int k) {
    if (k >= n) { sort_desc(c, n); return n; }
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int i = k; i < n; i++)
        if (cmp_desc(&c[i], &c[0]) < 0) { c[0] = c[i]; heap_down(c, k, 0); }
    sort_desc(c, k);
    return k;
}

/* Tail-free sampling (llama.cpp): |second difference| of the sorted probabilities, normalised to
 * sum 1 (uniform when the sum is <= 1e-6); keep the first i candidates where i is the first index
 * (i >= 1) at which the running sum exceeds z. Note: keeps i, not i + 1, as llama.cpp does. */
static int tail_free(struct cand *c, int n, float z) {
    if (z >= 1.0f || n <= 2) return n;
    softmax(c, n);
    float *d2 = malloc((size_t)(n - 2) * sizeof *d2);
    if (!d2) return n;
    double sum = 0;
    for (int i = 0; i < n - 2; i++) {
        float d1a = c[i].p - c[i + 1].p, d1b = c[i + 1].p - c[i + 2].p;
        d2[i] = fabsf(d1a - d1b);
        sum += d2[i];
    }
    int keep = n;
    double cum = 0;
    for (int i = 0; i < n - 2; i++) {
        cum += sum > 1e-6 ? d2[i] / sum : 1.0 / (n - 2);
        if (cum > z && i >= 1) { keep = i; break; }
    }
    free(d2);
    return keep;
}

struct tkey { float key; int idx; };
static int cmp_tkey(const void *a, const void *b) {
    const struct tkey *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx - y->idx;   // ties keep the probability order
}

/* Locally typical sampling (llama.cpp): order by |-ln p - H| ascending, keep the shortest prefix
 * whose mass exceeds tp (strictly, as llama.cpp does). */
static int typical(struct cand *c, int n, float tp) {
    if (tp >= 1.0f || n <= 1) return n;
    softmax(c, n);
    double ent = 0;
    for (int i = 0; i < n; i++) if (c[i].p > 0) ent -= c[i].p * log(c[i].p);
    struct cand *tmp = malloc((size_t)n * sizeof *tmp);
    struct tkey *k = malloc((size_t)n * sizeof *k);
    if (!tmp || !k) { free(tmp); free(k); return n; }
    for (int i = 0; i < n; i++) k[i] = (struct tkey){fabsf((float)(-log(c[i].p) - ent)), i};
    qsort(k, (size_t)n, sizeof *k, cmp_tkey);
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
        cum += c[k[i].idx].p;
        if (cum > tp) { keep = i + 1; break; }
    }
    for (int i = 0; i < keep; i++) tmp[i] = c[k[i].idx];
    memcpy(c, tmp, (size_t)keep * sizeof *c);
    free(tmp); free(k);
    sort_desc(c, keep);   // later stages expect descending logits
    return keep;
}

static int top_p(struct cand *c, int n, float tp) {
    if (tp >= 1.0f) return n;
    softmax(c, n);
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (cum >= tp) return i + 1;
    }
    return n;
}

static int min_p(struct cand *c, int n, float mp) {
    if (mp <= 0.0f) return n;
    // p_i >= mp * p_max  <=>  logit_i >= logit_max + log(mp)
    const float thr = c[0].logit + logf(mp);
    int keep = 1;
    while (keep < n && c[keep].logit >= thr) keep++;
    return keep;
}

static int32_t draw(struct sampler *s, struct cand *c, int n) {
    softmax(c, n);
    float r = sampler_rand(s), cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}

static int32_t mirostat(struct sampler *s, struct cand *c, int n) {
    const struct sampler_params *p = &s->p;
    for (int i = 0; i < n; i++) c[i].logit /= p->temp;
    softmax(c, n);
    int keep = n;
    if (p->mirostat == 1) {
        // estimate the Zipf exponent from the top 100 probabilities, then k from mu
        int m = n < 100 ? n : 100;
        double num = 0, den = 0;
        for (int i = 0; i < m - 1; i++) {
            double t = log((i + 2.0) / (i + 1.0)), b = log(c[i].p / c[i + 1].p);
            num += t * b;
            den += t * t;
        }
        double s_hat = den > 0 ? num / den : 1.0, eps = s_hat - 1.0;
        if (eps < 1e-6) eps = 1e-6;
        double k = pow((eps * pow(2.0, s->mu)) / (1.0 - pow((double)s->n_vocab, -eps)), 1.0 / s_hat);
        keep = k < 1 ? 1 : (k > n ? n : (int)k);
    } else {
        // mirostat 2: drop candidates whose surprise -log2 p exceeds mu
        keep = 0;
        while (keep < n && -log2f(c[keep].p) <= s->mu) keep++;
        if (keep == 0) keep = 1;
    }
    int32_t id = draw(s, c, keep);
    float pid = 0;
    for (int i = 0; i < keep; i++) if (c[i].id == id) pid = c[i].p;
    float surprise = -log2f(pid > 0 ? pid : 1e-30f);
    s->mu -= p->mirostat_eta * (surprise - p->mirostat_tau);
    return id;
}

/* The truncation chain and temperature: survivors in c[0..n) with probabilities set. */
static int run_chain(struct sampler *s, const float *logits) {
    const struct sampler_params *p = &s->p;
    struct cand *c = s->c;
    int n = s->n_vocab;
    for (int i = 0; i < n; i++) c[i] = (struct cand){i, logits[i], 0};
    apply_penalties(s, c);
    n = select_top(c, n, (p->top_k > 0 && p->top_k < n) ? p->top_k : n);
    n = tail_free(c, n, p->tfs_z);
    n = typical(c, n, p->typical_p);
    n = top_p(c, n, p->top_p);
    n = min_p(c, n, p->min_p);
    for (int i = 0; i < n; i++) c[i].logit /= p->temp;
    softmax(c, n);
    return n;
}

int sampler_survivors(struct sampler *s, const float *logits, int32_t *ids, float *probs, int max) {
    int n = run_chain(s, logits);
    for (int i = 0; i < n && i < max; i++) { ids[i] = s->c[i].id; probs[i] = s->c[i].p; }
    return n;
}

int32_t sampler_sample(struct sampler *s, const float *logits) {
    const struct sampler_params *p = &s->p;
    struct cand *c = s->c;
    int n = s->n_vocab;
    if (p->temp <= 0.0f) {   // greedy (after the penalties): first maximum
        for (int i = 0; i < n; i++) c[i] = (struct cand){i, logits[i], 0};
        apply_penalties(s, c);
        int32_t best = 0;
        for (int i = 1; i < n; i++) if (c[i].logit > c[best].logit) best = i;
        return best;
    }
    if (p->mirostat == 1 || p->mirostat == 2) {
        for (int i = 0; i < n; i++) c[i] = (struct cand){i, logits[i], 0};
        apply_penalties(s, c);
        sort_desc(c, n);
        return mirostat(s, c, n);
    }
    n = run_chain(s, logits);
    return draw(s, c, n);
}
