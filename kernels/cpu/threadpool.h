/* kernels/cpu/threadpool.h: a persistent pool of worker threads; no per-token thread creation.
 * threadpool_run(fn) calls fn(arg, ith, nth) on every thread (the caller is thread 0) and returns
 * when all have finished. Not reentrant: one run at a time per pool. */
#ifndef KERNELS_CPU_THREADPOOL_H
#define KERNELS_CPU_THREADPOOL_H

typedef void (*threadpool_fn)(void *arg, int ith, int nth);
struct threadpool;

struct threadpool *threadpool_create(int n_threads);  // NULL on failure; n_threads >= 1
void threadpool_run(struct threadpool *tp, threadpool_fn fn, void *arg);
int threadpool_size(const struct threadpool *tp);
void threadpool_destroy(struct threadpool *tp);
/* Number of online CPUs (>= 1). */
int cpu_count(void);

#endif
