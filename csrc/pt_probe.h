/* pt_probe.h - machine probes for benchmarks: sustained read bandwidth and FMA throughput. */
#ifndef PT_PROBE_H
#define PT_PROBE_H

#include "pt_common.h"

/* The probes run on the same worker team as the kernels (pt_parallel_tasks), one task per thread,
 * so they measure what a kernel gets and, unlike an OpenMP region of their own, do not leave a
 * spinning worker and an OpenMP thread competing for the cores (which made the worker stop spinning
 * for the decode steps timed right after a probe). At most this many threads. */
#define PT_PROBE_MAX_THREADS 256

/* nthreads clamped to [1, PT_PROBE_MAX_THREADS]: the number of tasks (and result slots) of a probe. */
static inline int pt_probe_parts(int nthreads) {
    return nthreads < 1 ? 1 : nthreads > PT_PROBE_MAX_THREADS ? PT_PROBE_MAX_THREADS : nthreads;
}

/* Runs fn(ctx, t) for every t < parts on the worker team, one task per thread; each task writes
 * sums[t]. Returns their sum. */
static inline double pt_probe_run(int parts, pt_pool_task_fn fn, void *ctx, const double *sums) {
    pt_parallel_tasks(parts, parts, fn, ctx);
    double total = 0.0;
    for (int t = 0; t < parts; t++) total += sums[t];
    return total;
}

/* Reads n floats once, split over nthreads in contiguous chunks, and returns a value that depends
 * on them (a streaming-read probe: time it over a buffer much larger than the last-level cache to
 * get read bandwidth). */
double pt_probe_read(const float *buf, size_t n, int nthreads);
/* Same with AVX2 loads and software prefetch, as the GEMM streams weights; NaN when not compiled in. */
double pt_probe_read_avx2(const float *buf, size_t n, int nthreads);

/* Runs iters rounds of PT_PROBE_CHAINS independent 8-lane FMAs on each of nthreads threads (AVX2
 * path only; returns NaN when it is not compiled in). flops = iters * PT_PROBE_CHAINS * 8 * 2 * nthreads. */
#define PT_PROBE_CHAINS 12
double pt_probe_fma_avx2(long iters, int nthreads);
/* The same with PT_PROBE_CHAINS_512 independent 16-lane AVX-512 FMAs (NaN when not compiled in).
 * flops = iters * PT_PROBE_CHAINS_512 * 16 * 2 * nthreads. */
#define PT_PROBE_CHAINS_512 24
double pt_probe_fma_avx512(long iters, int nthreads);

#endif
