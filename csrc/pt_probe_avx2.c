/* pt_probe_avx2.c - machine probes with AVX2: FMA throughput and streaming-read bandwidth. */
#include <math.h>
#include "pt_probe.h"

#ifdef PT_HAVE_AVX2
#include <immintrin.h>
/* One probe's work: parts tasks (one per thread), each with its own result slot. */
typedef struct {
    const float *buf;
    size_t n;
    long iters;
    int parts;
    double sums[PT_PROBE_MAX_THREADS];
} probe_job;

static void fma_part(void *ctx, int t) {
    probe_job *j = (probe_job *)ctx;
    /* 12 chains cover 2 ports x 4-cycle latency with room to spare, and with the two
     * constants they fit the 16 ymm registers: 16 chains would spill and measure the spills */
    __m256 acc[PT_PROBE_CHAINS];
    const __m256 x = _mm256_set1_ps(0.9999999f), y = _mm256_set1_ps(1e-7f);
    for (int c = 0; c < PT_PROBE_CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (long i = 0; i < j->iters; i++) {
        for (int c = 0; c < PT_PROBE_CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
    }
    __m256 s = acc[0];
    for (int c = 1; c < PT_PROBE_CHAINS; c++) s = _mm256_add_ps(s, acc[c]);
    j->sums[t] = _mm256_cvtss_f32(s);
}

static double run_parts(probe_job *j, int nthreads, pt_pool_task_fn fn) {
    j->parts = pt_probe_parts(nthreads);
    return pt_probe_run(j->parts, fn, j, j->sums);
}

double pt_probe_fma_avx2(long iters, int nthreads) {
    probe_job j;
    j.buf = NULL;
    j.n = 0;
    j.iters = iters;
    return run_parts(&j, nthreads, fma_part);
}

static void read_part(void *ctx, int t) {
    probe_job *j = (probe_job *)ctx;
    const float *buf = j->buf;
    size_t lines = j->n / 32;
    size_t begin = lines * (size_t)t / (size_t)j->parts * 32, end = lines * (size_t)(t + 1) / (size_t)j->parts * 32;
    /* four independent sums of whole cache lines: bound by memory, not by add latency; lines
     * prefetched 2 KiB ahead as the GEMM's weight streams are (the hardware prefetchers stop at
     * 4 KiB pages, and one core's demand misses alone do not keep enough reads in flight) */
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = begin; i < end; i += 32) {
        _mm_prefetch((const char *)(buf + i + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(buf + i + 528), _MM_HINT_T0);
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(buf + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(buf + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(buf + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(buf + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    j->sums[t] = _mm256_cvtss_f32(s);
}

double pt_probe_read_avx2(const float *buf, size_t n, int nthreads) {
    probe_job j;
    j.buf = buf;
    j.n = n;
    j.iters = 0;
    return run_parts(&j, nthreads, read_part);
}

#endif
