/* kernels/cpu/threadpool.c: persistent workers that spin briefly on a generation counter, then sleep
 * on a condition variable, so back-to-back matmuls in one token pay no wake-up latency. */
#define _GNU_SOURCE
#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct threadpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic unsigned gen;      // bumped for every run
    _Atomic int pending;       // workers still running the current job
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
            if (++spins > 20000) {
                pthread_mutex_lock(&tp->mu);
                while (atomic_load(&tp->gen) == seen && !atomic_load(&tp->stop))
                    pthread_cond_wait(&tp->cv, &tp->mu);
                pthread_mutex_unlock(&tp->mu);
            }
        }
        if (atomic_load(&tp->stop)) return NULL;
        seen = atomic_load(&tp->gen);
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
    atomic_store(&tp->pending, tp->n - 1);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    fn(arg, 0, tp->n);
    while (atomic_load_explicit(&tp->pending, memory_order_acquire) > 0) { /* spin: jobs are short */ }
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
