// A small thread pool for the forward pass: one task at a time, run by every thread.
//
// A forward pass of a small model issues hundreds of tasks of tens of microseconds each, so
// waking sleeping threads through a condition variable for each would cost more than the work.
// Workers spin on a generation counter for a while (with `pause`), then sleep on a futex; the
// caller only makes the wake-up system call when some worker is asleep.
//
// Spinning assumes every thread has a core. When threads outnumber cores (several instances on
// one node, or other work), a spinning thread would burn its whole time slice while the thread it
// waits for is not even running, turning microseconds into milliseconds per task. So both sides
// offer the core back (`sched_yield`) every few thousand spins; with idle cores that call returns
// at once, so it costs nothing when the pool has the machine to itself.
//
// A worker woken from its futex can be put on the CPU of the thread that woke it (the kernel's
// wake-affine placement) while another CPU sits idle; the two then take turns on one CPU through
// those yields for the whole pass (measured on a 2-vCPU VM: a one-token pass of SmolLM2 took
// 17-36 ms with 300-550 context switches instead of 4-5 ms with 25-70, in about half of the
// requests a server answered). So a worker that finds itself on the caller's CPU steps off it:
// it takes that CPU out of its affinity mask for a moment (the kernel moves it at once) and
// puts its mask back.
#define _GNU_SOURCE
#include "sllm_engine.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { SPIN_ROUNDS = 1 << 16, YIELD_EVERY = 1 << 11 };

struct sllm_pool {
    int threads;
    pthread_t *workers;
    _Atomic uint32_t generation;
    atomic_int pending;
    atomic_int sleepers;
    atomic_bool stopping;
    /// The CPU the caller ran on when it handed out the current task (-1: unknown).
    atomic_int callerCPU;
    sllm_task_fn fn;
    void *context;
};

typedef struct {
    sllm_pool *pool;
    int index;
} worker_start;

static void futex_wait(_Atomic uint32_t *address, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)address, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *address) {
    syscall(SYS_futex, (uint32_t *)address, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

/// Moves the calling thread off `cpu` if it runs there and its mask (read now: a container's
/// CPU set may change) allows another CPU; the mask is left as it was.
static void step_off(int cpu) {
    cpu_set_t allowed;
    if (cpu < 0 || sched_getcpu() != cpu || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    if (CPU_COUNT(&allowed) < 2 || !CPU_ISSET(cpu, &allowed)) return;
    cpu_set_t others = allowed;
    CPU_CLR(cpu, &others);
    if (sched_setaffinity(0, sizeof others, &others) == 0) sched_setaffinity(0, sizeof allowed, &allowed);
}

int sllm_pool_step_off(int cpu) {
    step_off(cpu);
    return sched_getcpu();
}

int sllm_current_cpu(void) { return sched_getcpu(); }

int sllm_allowed_cpus(void) {
    cpu_set_t allowed;
    return sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 0;
}

static void *worker_main(void *argument) {
    worker_start start = *(worker_start *)argument;
    free(argument);
    sllm_pool *pool = start.pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t now;
        int spins = 0;
        while ((now = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ROUNDS) {
                if (spins % YIELD_EVERY == 0) sched_yield();
                else _mm_pause();
                continue;
            }
            atomic_fetch_add(&pool->sleepers, 1);
            if (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen) futex_wait(&pool->generation, seen);
            atomic_fetch_sub(&pool->sleepers, 1);
            spins = 0;
        }
        seen = now;
        if (atomic_load_explicit(&pool->stopping, memory_order_acquire)) return NULL;
        // One cheap check per task (the CPU number); the affinity calls only when it matches.
        int caller = atomic_load_explicit(&pool->callerCPU, memory_order_relaxed);
        if (caller >= 0 && sched_getcpu() == caller) step_off(caller);
        pool->fn(pool->context, start.index, pool->threads);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
    }
}

sllm_pool *sllm_pool_create(int threads) {
    if (threads < 1) threads = 1;
    sllm_pool *pool = calloc(1, sizeof(sllm_pool));
    if (!pool) return NULL;
    pool->threads = threads;
    atomic_store(&pool->callerCPU, -1);
    pool->workers = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 1; i < threads; i++) {
        worker_start *start = malloc(sizeof(worker_start));
        start->pool = pool;
        start->index = i;
        if (pthread_create(&pool->workers[i], NULL, worker_main, start) != 0) {
            free(start);
            pool->threads = i;
            break;
        }
    }
    return pool;
}

int sllm_pool_threads(const sllm_pool *pool) { return pool->threads; }

void sllm_pool_run(sllm_pool *pool, sllm_task_fn fn, void *context) {
    if (pool->threads == 1) {
        fn(context, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->context = context;
    atomic_store_explicit(&pool->callerCPU, sched_getcpu(), memory_order_relaxed);
    atomic_store_explicit(&pool->pending, pool->threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&pool->sleepers, memory_order_seq_cst) > 0) futex_wake_all(&pool->generation);
    fn(context, 0, pool->threads);
    for (unsigned spins = 1; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
        if (spins % YIELD_EVERY == 0) sched_yield();
        else _mm_pause();
    }
}

void sllm_pool_destroy(sllm_pool *pool) {
    if (!pool) return;
    atomic_store_explicit(&pool->stopping, 1, memory_order_release);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_seq_cst);
    futex_wake_all(&pool->generation);
    for (int i = 1; i < pool->threads; i++) pthread_join(pool->workers[i], NULL);
    free(pool->workers);
    free(pool);
}

typedef struct {
    int wtype;
    const void *w;
    size_t wstride;
    int64_t rows;
    const void *a;
    size_t astride;
    int64_t tokens, k;
    float *out;
    int64_t ldo;
} gemm_job;

static void gemm_task(void *context, int thread, int threads) {
    const gemm_job *job = context;
    // Split on multiples of 4 rows so threads do not share output cache lines much.
    const int64_t units = (job->rows + 3) / 4;
    const int64_t r0 = units * thread / threads * 4;
    int64_t r1 = units * (thread + 1) / threads * 4;
    if (r1 > job->rows) r1 = job->rows;
    if (r0 < r1) sllm_gemm(job->wtype, job->w, job->wstride, r0, r1, job->a, job->astride, job->tokens, job->k, job->out, job->ldo);
}

void sllm_pool_gemm(sllm_pool *pool, int wtype, const void *w, size_t wstride, int64_t rows,
                    const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo) {
    gemm_job job = {wtype, w, wstride, rows, a, astride, tokens, k, out, ldo};
    sllm_pool_run(pool, gemm_task, &job);
}
