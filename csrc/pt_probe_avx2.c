/* pt_probe_avx2.c - FMA throughput probe: enough independent accumulators to fill both FMA ports. */
#include <math.h>
#include "pt_probe.h"

#ifdef PT_HAVE_AVX2
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

double pt_probe_fma_avx2(long iters, int nthreads) {
    double sink = 0.0;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads) reduction(+:sink) if(nthreads > 1)
    {
        __m256 acc[16];
        const __m256 x = _mm256_set1_ps(0.9999999f), y = _mm256_set1_ps(1e-7f);
        for (int j = 0; j < 16; j++) acc[j] = _mm256_set1_ps((float)j);
        for (long i = 0; i < iters; i++) {
            /* 16 chains x 4-cycle latency covers 2 ports x 4 cycles with room to spare */
            for (int j = 0; j < 16; j++) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
        }
        __m256 s = acc[0];
        for (int j = 1; j < 16; j++) s = _mm256_add_ps(s, acc[j]);
        sink += _mm256_cvtss_f32(s);
    }
    return sink;
}
#endif
