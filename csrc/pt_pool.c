/* pt_pool.c - the worker team of pt_pool.h (Linux: futex + GCC atomic builtins). */
#define _GNU_SOURCE
#include "pt_pool.h"

#if defined(__linux__) && !defined(PT_NO_POOL)

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define PT_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define PT_CPU_RELAX() ((void)0)
#endif

#define PT_POOL_MAX_WORKERS 255
/* How long a worker spins for the next loop before it sleeps. Chosen from a GOMP_SPINCOUNT sweep
 * on the development machine (pause ~22 ns): batch-1 greedy decoding of the opus-mt-size model
 * gained most with spins of ~0.2 ms (10,000 pauses), less with ~0.07 ms (3,000), i.e. some gaps
 * between a step's loops (Python between kernels, the argmax between steps) are that long.
 * PYTRANSFORMER_SPIN_US changes it. */
#define PT_POOL_SPIN_US_DEFAULT 250
/* After a worker finds it was preempted it does not spin for this many loops (a few decode steps). */
#define PT_POOL_BACKOFF_LOOPS 2048
/* Two preemptions of a worker closer than this mean contended cores. */
#define PT_POOL_CONTENDED_NS 50000000LL
/* 64 pauses of a spin take a microsecond or two; this long means the thread did not run meanwhile. */
#define PT_POOL_GAP_NS 100000LL
/* The caller spins this long for the workers' last tasks, then yields its core between looks. */
#define PT_POOL_CALLER_SPIN_NS 50000

typedef struct {
    int index;
    uint32_t seen;        /* the generation this worker has handled */
    long nivcsw;          /* involuntary context switches at the last look */
    int backoff;          /* loops left without spinning */
    long long last_preempt_ns;
} pt_worker;

/* Loop state. The caller holding run_lock writes job_fn/job_ctx/allowed/finished, then publishes
 * `ticket` (generation << 32 | ntasks << 16 | next task) and `gen` (the futex word). Workers claim
 * tasks by compare-and-swap on `ticket`, so a worker that wakes late for a loop that is over can
 * never take a task of the next one. */
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pt_worker workers[PT_POOL_MAX_WORKERS];
static int nworkers;                  /* under run_lock */
static int enabled = 1;               /* atomic; PYTRANSFORMER_THREAD_POOL=0 or pt_pool_set_enabled(0) */
static int usable = 1;                /* 0 when the fork handlers could not be registered */
static long long spin_ns = PT_POOL_SPIN_US_DEFAULT * 1000LL;
static uint32_t gen;                  /* atomic */
static uint32_t park_seq;             /* atomic: bumped by pt_pool_park */
static uint64_t ticket;               /* atomic */
static int finished;                  /* atomic: tasks of the current loop that have finished */
static int sleepers;                  /* atomic: workers in (or about to enter) futex_wait */
static int allowed;                   /* atomic: workers with index < allowed take tasks */
static long long loops, backoffs;     /* atomic counters for diagnostics */
static __thread int in_worker;
static pt_pool_task_fn job_fn;
static void *job_ctx;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long involuntary_switches(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
    return ru.ru_nivcsw;
}

static void futex_wait(uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* The worker's spin was interrupted for a while: if the scheduler preempted it (rather than the
 * hypervisor taking the vCPU, which no process can help), other threads want this core. Twice
 * within PT_POOL_CONTENDED_NS (a lone preemption is some short task the scheduler ran) and the
 * worker stops spinning for PT_POOL_BACKOFF_LOOPS loops: spinning would take the time slices that
 * the threads it waits for need. Returns 1 when it backed off. */
static int note_interruption(pt_worker *w) {
    long n = involuntary_switches();
    int backed_off = 0;
    if (n > w->nivcsw) {
        long long t = now_ns();
        if (t - w->last_preempt_ns < PT_POOL_CONTENDED_NS) {
            w->backoff = PT_POOL_BACKOFF_LOOPS;
            __atomic_fetch_add(&backoffs, 1, __ATOMIC_RELAXED);
            backed_off = 1;
        }
        w->last_preempt_ns = t;
    }
    w->nivcsw = n;
    return backed_off;
}

/* Waits until `gen` differs from w->seen and returns it. */
static uint32_t wait_for_loop(pt_worker *w) {
    uint32_t g = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
    if (g != w->seen) return g;
    uint32_t park = __atomic_load_n(&park_seq, __ATOMIC_RELAXED);
    if (w->backoff == 0) {
        long long t0 = now_ns(), last = t0;
        for (int i = 1;; i++) {
            PT_CPU_RELAX();
            g = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
            if (g != w->seen) {
                /* a preempted worker usually finds the next loop waiting when it runs again */
                if (now_ns() - last > PT_POOL_GAP_NS) note_interruption(w);
                return g;
            }
            if (__atomic_load_n(&park_seq, __ATOMIC_RELAXED) != park) break;   /* OpenMP's turn */
            if ((i & 63) == 0) {
                long long t = now_ns();
                if (t - last > PT_POOL_GAP_NS && note_interruption(w)) break;
                if (t - t0 > spin_ns) break;
                last = t;
            }
        }
    }
    for (;;) {
        __atomic_fetch_add(&sleepers, 1, __ATOMIC_SEQ_CST);
        g = __atomic_load_n(&gen, __ATOMIC_SEQ_CST);
        if (g == w->seen) futex_wait(&gen, w->seen);
        __atomic_fetch_sub(&sleepers, 1, __ATOMIC_SEQ_CST);
        g = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
        if (g != w->seen) return g;
    }
}

/* Claims and runs tasks of loop g until none is left; returns how many it ran. */
static int run_tasks(uint32_t g) {
    int ran = 0;
    uint64_t t = __atomic_load_n(&ticket, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((uint32_t)(t >> 32) != g) break;
        int next = (int)(t & 0xffff), n = (int)((t >> 16) & 0xffff);
        if (next >= n) break;
        if (!__atomic_compare_exchange_n(&ticket, &t, t + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;                      /* t now holds the current value */
        job_fn(job_ctx, next);
        __atomic_fetch_add(&finished, 1, __ATOMIC_RELEASE);
        ran++;
        t = __atomic_load_n(&ticket, __ATOMIC_ACQUIRE);
    }
    return ran;
}

static void *worker_main(void *arg) {
    pt_worker *w = (pt_worker *)arg;
    in_worker = 1;
    w->nivcsw = involuntary_switches();
    for (;;) {
        uint32_t g = wait_for_loop(w);
        w->seen = g;
        if (w->backoff > 0) w->backoff--;
        if (w->index < __atomic_load_n(&allowed, __ATOMIC_ACQUIRE)) run_tasks(g);
    }
    return NULL;
}

static void before_fork(void) { pthread_mutex_lock(&run_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&run_lock); }
static void after_fork_child(void) {
    /* Only the forking thread exists in the child: no workers; new ones start on demand. */
    nworkers = 0;
    __atomic_store_n(&sleepers, 0, __ATOMIC_RELAXED);
    pthread_mutex_init(&run_lock, NULL);
}

static void init_once(void) {
    const char *e = getenv("PYTRANSFORMER_THREAD_POOL");
    if (e != NULL && e[0] == '0' && e[1] == '\0') enabled = 0;
    const char *s = getenv("PYTRANSFORMER_SPIN_US");
    if (s != NULL && s[0] != '\0') {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v >= 0 && v <= 1000000) spin_ns = v * 1000LL;
    }
    if (pthread_atfork(before_fork, after_fork_parent, after_fork_child) != 0) usable = enabled = 0;
}

/* Starts workers up to `want` (under run_lock); returns how many exist. */
static int start_workers(int want) {
    if (nworkers >= want) return nworkers;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* signals stay with the application's threads */
    while (nworkers < want) {
        pt_worker *w = &workers[nworkers];
        w->index = nworkers;
        w->seen = __atomic_load_n(&gen, __ATOMIC_RELAXED);
        w->backoff = 0;
        w->last_preempt_ns = 0;
        pthread_attr_t attr;
        pthread_t th;
        if (pthread_attr_init(&attr) != 0) break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int rc = pthread_create(&th, &attr, worker_main, w);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return nworkers;
}

int pt_pool_available(void) {
    pthread_once(&once, init_once);
    return __atomic_load_n(&enabled, __ATOMIC_RELAXED);
}

void pt_pool_set_enabled(int on) {
    pthread_once(&once, init_once);
    __atomic_store_n(&enabled, on != 0 && usable, __ATOMIC_RELAXED);
    pt_pool_park();
}

int pt_pool_workers(void) {
    pthread_mutex_lock(&run_lock);
    int n = nworkers;
    pthread_mutex_unlock(&run_lock);
    return n;
}

void pt_pool_park(void) {
    __atomic_fetch_add(&park_seq, 1, __ATOMIC_RELAXED);
}

long long pt_pool_loops(void) { return __atomic_load_n(&loops, __ATOMIC_RELAXED); }
long long pt_pool_backoffs(void) { return __atomic_load_n(&backoffs, __ATOMIC_RELAXED); }

int pt_pool_run(pt_pool_task_fn fn, void *ctx, int ntasks, int nthreads) {
    if (fn == NULL || ntasks < 2 || ntasks > 0xffff || nthreads < 2 || in_worker) return 0;
    if (!pt_pool_available()) return 0;
#ifdef _OPENMP
    if (omp_in_parallel()) return 0;
#endif
    if (pthread_mutex_trylock(&run_lock) != 0) return 0;
    int want = nthreads - 1;
    if (want > ntasks - 1) want = ntasks - 1;
    if (want > PT_POOL_MAX_WORKERS) want = PT_POOL_MAX_WORKERS;
    if (start_workers(want) < want) {
        pthread_mutex_unlock(&run_lock);
        return 0;
    }
    job_fn = fn;
    job_ctx = ctx;
    __atomic_store_n(&finished, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&allowed, want, __ATOMIC_RELAXED);
    uint32_t g = __atomic_load_n(&gen, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&ticket, ((uint64_t)g << 32) | ((uint64_t)ntasks << 16), __ATOMIC_RELEASE);
    __atomic_store_n(&gen, g, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sleepers, __ATOMIC_SEQ_CST) > 0) futex_wake_all(&gen);
    run_tasks(g);
    if (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) < ntasks) {
        long long t0 = now_ns();
        for (int i = 1; __atomic_load_n(&finished, __ATOMIC_ACQUIRE) < ntasks; i++) {
            if ((i & 63) == 0 && now_ns() - t0 > PT_POOL_CALLER_SPIN_NS)
                sched_yield();
            else
                PT_CPU_RELAX();
        }
    }
    __atomic_fetch_add(&loops, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&run_lock);
    return 1;
}

#else   /* not Linux: no pool, callers use OpenMP */

int pt_pool_run(pt_pool_task_fn fn, void *ctx, int ntasks, int nthreads) {
    (void)fn; (void)ctx; (void)ntasks; (void)nthreads;
    return 0;
}
int pt_pool_available(void) { return 0; }
void pt_pool_set_enabled(int on) { (void)on; }
void pt_pool_park(void) {}
int pt_pool_workers(void) { return 0; }
long long pt_pool_loops(void) { return 0; }
long long pt_pool_backoffs(void) { return 0; }

#endif
