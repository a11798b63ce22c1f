/* kernels/cpu/threadpool.c: persistent workers that spin (with PAUSE) on a generation counter for a
 * while, then sleep on a condition variable, so back-to-back matmuls in one token pay no wake-up
 * latency. The caller only takes the mutex when some worker is actually asleep (sleepers > 0), so
 * the steady-state hand-off is one atomic increment and a spin on `pending`: no syscall, no lock.
 * Lost-wakeup argument: a worker increments sleepers (seq_cst) under the mutex and re-checks gen
 * before waiting; the caller bumps gen (seq_cst) and then reads sleepers. Seq_cst orders the two
 * pairs, so either the worker sees the new gen, or the caller sees sleepers > 0 and broadcasts under
 * the mutex, which it can only take once the worker is inside pthread_cond_wait. */
#ifndef _GNU_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#endif
#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

// PAUSE is ~65 cycles on Zen 3 and ~140 on Skylake and later, so this is roughly 0.5-1 ms of spinning
// before a worker goes to sleep: longer than the gaps between the matmuls of one token.
#define SPIN_LIMIT 16384

struct threadpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic unsigned gen;      // bumped for every run
    _Atomic int pending;       // workers still running the current job
    _Atomic int sleepers;      // workers blocked (or about to block) on cv
    _Atomic int stop;
    threadpool_fn fn;
    void *arg;
};

struct worker_arg { struct threadpool *tp; int ith; };

static void *worker_main(void *p) {
    struct worker_arg wa = *(struct worker_arg *)p;
    free(p);
    struct threadpool *tp = wa.tp;
    unsigned seen = 0;
    for (;;) {
        // spin a little (cheap when runs come back to back), then block
        int spins = 0;
        while (atomic_load_explicit(&tp->gen, memory_order_acquire) == seen && !atomic_load(&tp->stop)) {
            if (++spins < SPIN_LIMIT) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&tp->mu);
            atomic_fetch_add(&tp->sleepers, 1);
            while (atomic_load(&tp->gen) == seen && !atomic_load(&tp->stop)) pthread_cond_wait(&tp->cv, &tp->mu);
            atomic_fetch_sub(&tp->sleepers, 1);
            pthread_mutex_unlock(&tp->mu);
            spins = 0;
        }
        if (atomic_load(&tp->stop)) return NULL;
        seen = atomic_load_explicit(&tp->gen, memory_order_acquire);
        tp->fn(tp->arg, wa.ith, tp->n);
        atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_release);
    }
}

int cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

struct threadpool *threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    struct threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    tp->threads = calloc((size_t)n_threads, sizeof *tp->threads);
    if (!tp->threads) { free(tp); return NULL; }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (!wa) { tp->n = i; threadpool_destroy(tp); return NULL; }
        wa->tp = tp;
        wa->ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            tp->n = i;
            threadpool_destroy(tp);
            return NULL;
        }
    }
    return tp;
}

void threadpool_run(struct threadpool *tp, threadpool_fn fn, void *arg) {
    if (tp->n == 1) { fn(arg, 0, 1); return; }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->pending, tp->n - 1, memory_order_relaxed);
    atomic_fetch_add(&tp->gen, 1);   // seq_cst: publishes fn/arg/pending, ordered before the sleepers read
    if (atomic_load(&tp->sleepers) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(arg, 0, tp->n);
    while (atomic_load_explicit(&tp->pending, memory_order_acquire) > 0) cpu_relax();
}

int threadpool_size(const struct threadpool *tp) { return tp->n; }

void threadpool_destroy(struct threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, 1);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp->threads);
    free(tp);
}
