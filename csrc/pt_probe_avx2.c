/* pt_probe_avx2.c - machine probes with AVX2: FMA throughput and streaming-read bandwidth. */
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
        /* 12 chains cover 2 ports x 4-cycle latency with room to spare, and with the two
         * constants they fit the 16 ymm registers: 16 chains would spill and measure the spills */
        __m256 acc[PT_PROBE_CHAINS];
        const __m256 x = _mm256_set1_ps(0.9999999f), y = _mm256_set1_ps(1e-7f);
        for (int j = 0; j < PT_PROBE_CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
        for (long i = 0; i < iters; i++) {
            for (int j = 0; j < PT_PROBE_CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
        }
        __m256 s = acc[0];
        for (int j = 1; j < PT_PROBE_CHAINS; j++) s = _mm256_add_ps(s, acc[j]);
        sink += _mm256_cvtss_f32(s);
    }
    return sink;
}

double pt_probe_read_avx2(const float *buf, size_t n, int nthreads) {
    double total = 0.0;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads) reduction(+:total) if(nthreads > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        size_t lines = n / 32;
        size_t begin = lines * (size_t)tid / (size_t)nth * 32, end = lines * (size_t)(tid + 1) / (size_t)nth * 32;
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
        total += _mm256_cvtss_f32(s);
    }
    return total;
}
#endif
