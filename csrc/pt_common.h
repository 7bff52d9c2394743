/* pt_common.h - status codes, activation ids and layout constants shared by all pytransformer kernels. */
#ifndef PT_COMMON_H
#define PT_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Kernels that can fail return one of these; the Cython layer turns them into exceptions. */
enum {
    PT_OK = 0,
    PT_ERR_ARG = 1,       /* an argument is out of range (size <= 0, bad enum, NULL where required) */
    PT_ERR_INDEX = 2,     /* a token id is outside the table */
    PT_ERR_ISA = 3        /* the requested ISA path is not compiled in */
};

/* Element-wise activations, usable alone or fused into the GEMM epilogue. */
enum {
    PT_ACT_NONE = 0,
    PT_ACT_RELU = 1,
    PT_ACT_GELU = 2,        /* 0.5 x (1 + erf(x / sqrt 2)) */
    PT_ACT_GELU_TANH = 3,   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    PT_ACT_SILU = 4         /* x * sigmoid(x) */
};
#define PT_ACT_COUNT 5

/* Width of a packed weight panel (columns of B per panel). Two 8-float AVX2 vectors.
 * The packed layout is shared by every ISA path, so a model packed once runs on any of them. */
#define PT_NR 16

/* Sinusoidal position table layouts. */
enum {
    PT_POS_INTERLEAVED = 0, /* the original paper: even dims sin, odd dims cos */
    PT_POS_HALVES = 1       /* first half sin, second half cos (Marian, fairseq, M2M100) */
};

/* ---- threading
 * PT_PARALLEL_FOR(nt_expr, i, n, body...): runs body for i = 0..n-1, split statically over nt
 * OpenMP threads. With one thread it is a plain loop and no parallel region is entered at all:
 * libgomp allocates a team even for an `if(0)` region, which costs more than the small kernels
 * of a decode step (and those are also called from inside other kernels' parallel loops). The
 * worker team (pt_pool.h) is told to stop spinning first, so that OpenMP's threads have
 * the cores. */
#include "pt_pool.h"
#ifdef _OPENMP
#include <omp.h>
static inline int pt_thread_id(void) { return omp_get_thread_num(); }
#define PT_OMP_FOR_NT_ _Pragma("omp parallel for schedule(static) num_threads(pt_nt_)")
#else
static inline int pt_thread_id(void) { return 0; }
#define PT_OMP_FOR_NT_
#endif
#define PT_PARALLEL_FOR(nt_expr, i, n, ...)                                   \
    do {                                                                      \
        const int pt_nt_ = (nt_expr);                                         \
        const int pt_n_ = (n);                                                \
        if (pt_nt_ > 1) {                                                     \
            pt_pool_park();                                                   \
            PT_OMP_FOR_NT_                                                    \
            for (int i = 0; i < pt_n_; i++) { __VA_ARGS__ }                   \
        } else {                                                              \
            for (int i = 0; i < pt_n_; i++) { __VA_ARGS__ }                   \
        }                                                                     \
    } while (0)

/* pt_parallel_tasks(nt, ntasks, fn, ctx): fn(ctx, t) once for every t in [0, ntasks). On the worker
 * team when it takes the loop (no sleeping OpenMP thread to wake, ~15 us per region on the
 * development machine), else on nt OpenMP threads that take tasks as they finish (the team is told
 * to sleep first); with nt <= 1 or a single task, on the calling thread. A task's result must not
 * depend on which thread runs it. The one place where the kernels choose between the two. */
static inline void pt_parallel_tasks(int nt, int ntasks, pt_pool_task_fn fn, void *ctx) {
    if (nt > 1 && ntasks > 1) {
        if (pt_pool_run(fn, ctx, ntasks, nt)) return;
        pt_pool_park();
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
#endif
        for (int t = 0; t < ntasks; t++) fn(ctx, t);
        return;
    }
    for (int t = 0; t < ntasks; t++) fn(ctx, t);
}

/* pt_team_tasks(nt, ntasks, fn, ctx): fn(ctx, t) for every t in [0, ntasks) on the worker team when
 * it takes the loop, else all on the calling thread: never OpenMP. For work done while a model
 * loads (packing weights): a pre-forking server loads, then forks, and a forked child cannot use
 * an OpenMP pool its parent started (it would have to run serial), while the team is fork-safe. */
static inline void pt_team_tasks(int nt, int ntasks, pt_pool_task_fn fn, void *ctx) {
    if (nt > 1 && ntasks > 1 && pt_pool_run(fn, ctx, ntasks, nt)) return;
    for (int t = 0; t < ntasks; t++) fn(ctx, t);
}

/* pt_parallel_ranges(nt, n, fn, ctx): fn(ctx, lo, hi) over [0, n) cut into consecutive ranges, up
 * to PT_RANGES_PER_THREAD per thread (so a thread slowed by another process does not hold the loop
 * back), run by pt_parallel_tasks; with nt <= 1 one call fn(ctx, 0, n). For row loops whose rows
 * are independent: each row's result does not depend on which range or thread computed it. */
typedef void (*pt_range_fn)(void *ctx, int lo, int hi);
#define PT_RANGES_PER_THREAD 4
typedef struct {
    pt_range_fn fn;
    void *ctx;
    int n, parts;
} pt_ranges_job_;
static void pt_ranges_task_(void *job, int t) {
    const pt_ranges_job_ *j = (const pt_ranges_job_ *)job;
    j->fn(j->ctx, (int)((long long)j->n * t / j->parts), (int)((long long)j->n * (t + 1) / j->parts));
}
static inline void pt_ranges_(int nt, int n, pt_range_fn fn, void *ctx, int team_only) {
    if (n <= 0) return;
    int parts = nt <= 1 ? 1 : (n < PT_RANGES_PER_THREAD * nt ? n : PT_RANGES_PER_THREAD * nt);
    pt_ranges_job_ j = {fn, ctx, n, parts};
    if (team_only)
        pt_team_tasks(nt, parts, pt_ranges_task_, &j);
    else
        pt_parallel_tasks(nt, parts, pt_ranges_task_, &j);
}
static inline void pt_parallel_ranges(int nt, int n, pt_range_fn fn, void *ctx) { pt_ranges_(nt, n, fn, ctx, 0); }

/* pt_team_ranges: pt_parallel_ranges on the worker team or the calling thread, never OpenMP (see
 * pt_team_tasks); for packing weights at load, from PT_PACK_PARALLEL_FLOATS floats on. */
static inline void pt_team_ranges(int nt, int n, pt_range_fn fn, void *ctx) { pt_ranges_(nt, n, fn, ctx, 1); }

/* Below this many floats a matrix is packed on one thread. What costs at load is less the copy
 * than the first touch of the source (a memory-mapped weights file) and of fresh destination
 * pages: 4 MiB from a mapped file took 2.2-2.9 ms against 0.65 ms from memory already touched
 * (development machine, one thread), and the team's threads touch their panels in parallel. */
#define PT_PACK_PARALLEL_FLOATS ((size_t)1 << 18)

#endif
