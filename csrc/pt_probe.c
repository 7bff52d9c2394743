/* pt_probe.c - streaming-read bandwidth probe (portable C; the compiler vectorises the inner sum). */
#include "pt_probe.h"

#ifdef _OPENMP
#include <omp.h>
#endif

double pt_probe_read(const float *buf, size_t n, int nthreads) {
    double total = 0.0;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads) reduction(+:total) if(nthreads > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        size_t begin = n * (size_t)tid / (size_t)nth, end = n * (size_t)(tid + 1) / (size_t)nth;
        /* eight partial sums keep the loads independent, so the loop is bound by memory, not by add latency */
        float s[8] = {0};
        size_t i = begin;
        for (; i + 8 <= end; i += 8)
            for (int j = 0; j < 8; j++) s[j] += buf[i + j];
        for (; i < end; i++) s[0] += buf[i];
        total += (double)s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    }
    return total;
}

#ifndef PT_HAVE_AVX2
#include <math.h>
double pt_probe_fma_avx2(long iters, int nthreads) {
    (void)iters; (void)nthreads;
    return NAN;
}
double pt_probe_read_avx2(const float *buf, size_t n, int nthreads) {
    (void)buf; (void)n; (void)nthreads;
    return NAN;
}
#endif
