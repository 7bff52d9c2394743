/* pt_probe_avx512.c - FMA throughput with 16-lane AVX-512 FMAs: the peak the AVX-512 GEMM is measured against. */
#include <math.h>
#include "pt_probe.h"

#ifdef PT_HAVE_AVX512
#include <immintrin.h>

double pt_probe_fma_avx512(long iters, int nthreads) {
    double sink = 0.0;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads) reduction(+:sink) if(nthreads > 1)
    {
        /* 24 chains: 2 ports x 4-cycle latency needs 8; 24 fit the 32 zmm registers with the constants */
        __m512 acc[PT_PROBE_CHAINS_512];
        const __m512 x = _mm512_set1_ps(0.9999999f), y = _mm512_set1_ps(1e-7f);
        for (int j = 0; j < PT_PROBE_CHAINS_512; j++) acc[j] = _mm512_set1_ps((float)j);
        for (long i = 0; i < iters; i++) {
            /* unrolled, or GCC keeps the 24 accumulators in memory and measures store forwarding */
#pragma GCC unroll 24
            for (int j = 0; j < PT_PROBE_CHAINS_512; j++) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
        }
        __m512 s = acc[0];
        for (int j = 1; j < PT_PROBE_CHAINS_512; j++) s = _mm512_add_ps(s, acc[j]);
        sink += _mm512_reduce_add_ps(s);
    }
    return sink;
}

#else

double pt_probe_fma_avx512(long iters, int nthreads) {
    (void)iters; (void)nthreads;
    return NAN;
}

#endif
