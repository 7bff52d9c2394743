/* pt_probe.c - streaming-read bandwidth probe (portable C; the compiler vectorises the inner sum). */
#include "pt_probe.h"

typedef struct {
    const float *buf;
    size_t n;
    int parts;
    double sums[PT_PROBE_MAX_THREADS];
} read_job;

static void read_part(void *ctx, int t) {
    read_job *j = (read_job *)ctx;
    size_t begin = j->n * (size_t)t / (size_t)j->parts, end = j->n * (size_t)(t + 1) / (size_t)j->parts;
    const float *buf = j->buf;
    /* eight partial sums keep the loads independent, so the loop is bound by memory, not by add latency */
    float s[8] = {0};
    size_t i = begin;
    for (; i + 8 <= end; i += 8)
        for (int k = 0; k < 8; k++) s[k] += buf[i + k];
    for (; i < end; i++) s[0] += buf[i];
    j->sums[t] = (double)s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

double pt_probe_read(const float *buf, size_t n, int nthreads) {
    read_job j;
    j.buf = buf;
    j.n = n;
    j.parts = pt_probe_parts(nthreads);
    return pt_probe_run(j.parts, read_part, &j, j.sums);
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
