/* pt_probe_avx512.c - FMA throughput with 16-lane AVX-512 FMAs: the peak the AVX-512 GEMM is measured against. */
#include <math.h>
#include "pt_probe.h"

#ifdef PT_HAVE_AVX512
#include <immintrin.h>

typedef struct {
    long iters;
    double sums[PT_PROBE_MAX_THREADS];
} fma_job;

static void fma_part(void *ctx, int t) {
    fma_job *j = (fma_job *)ctx;
    /* 24 chains: 2 ports x 4-cycle latency needs 8; 24 fit the 32 zmm registers with the constants */
    __m512 acc[PT_PROBE_CHAINS_512];
    const __m512 x = _mm512_set1_ps(0.9999999f), y = _mm512_set1_ps(1e-7f);
    for (int c = 0; c < PT_PROBE_CHAINS_512; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < j->iters; i++) {
        /* unrolled, or GCC keeps the 24 accumulators in memory and measures store forwarding */
#pragma GCC unroll 24
        for (int c = 0; c < PT_PROBE_CHAINS_512; c++) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
    }
    __m512 s = acc[0];
    for (int c = 1; c < PT_PROBE_CHAINS_512; c++) s = _mm512_add_ps(s, acc[c]);
    j->sums[t] = _mm512_reduce_add_ps(s);
}

double pt_probe_fma_avx512(long iters, int nthreads) {
    fma_job j;
    j.iters = iters;
    return pt_probe_run(pt_probe_parts(nthreads), fma_part, &j, j.sums);
}

#else

double pt_probe_fma_avx512(long iters, int nthreads) {
    (void)iters; (void)nthreads;
    return NAN;
}

#endif
