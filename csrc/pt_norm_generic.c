/* pt_norm_generic.c - portable layer norm and RMS norm, each optionally fused with a residual add. */
#include <math.h>
#include "pt_norm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define PT_NORM_PARALLEL_GRAIN 16384

/* Aliasing: y and sum_out may be the same memory as x or residual (same strides). Every pass reads
 * element j before any write to element j, and the passes after the first read h back from sum_out
 * when it exists (x may have been overwritten by it) or recompute x + residual otherwise. */

static inline float sum_elem(const float *x, const float *res, const float *h, int j) {
    if (h) return h[j];
    return res ? x[j] + res[j] : x[j];
}

// one row; statistics in float, accumulated left to right
static void layer_norm_row(const float *x, const float *res, float *s, const float *w, const float *b,
                           float *y, int cols, float eps) {
    float sum = 0.0f;
    for (int j = 0; j < cols; j++) {
        float h = res ? x[j] + res[j] : x[j];
        if (s) s[j] = h;
        sum += h;
    }
    const float mean = sum / (float)cols;
    float ss = 0.0f;
    for (int j = 0; j < cols; j++) {
        float d = sum_elem(x, res, s, j) - mean;
        ss += d * d;
    }
    const float rstd = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int j = 0; j < cols; j++) {
        float v = (sum_elem(x, res, s, j) - mean) * rstd;
        if (w) v = v * w[j];
        if (b) v = v + b[j];
        y[j] = v;
    }
}

static void rms_norm_row(const float *x, const float *res, float *s, const float *w, float *y, int cols,
                         float eps) {
    float ss = 0.0f;
    for (int j = 0; j < cols; j++) {
        float h = res ? x[j] + res[j] : x[j];
        if (s) s[j] = h;
        ss += h * h;
    }
    const float rstd = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int j = 0; j < cols; j++) {
        float v = sum_elem(x, res, s, j) * rstd; /* T5 order: normalise, then weight */
        y[j] = w ? w[j] * v : v;
    }
}

/* weight == NULL is accepted as all ones (no affine scale). */
int pt_layer_norm_generic(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                          float *sum_out, ptrdiff_t lds, const float *weight, const float *bias,
                          float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_NORM_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows, layer_norm_row(x + (ptrdiff_t)r * ldx, residual ? residual + (ptrdiff_t)r * ldr : NULL,
                       sum_out ? sum_out + (ptrdiff_t)r * lds : NULL, weight, bias, y + (ptrdiff_t)r * ldy,
                       cols, eps);
    );
    (void)nt;
    return PT_OK;
}

int pt_rms_norm_generic(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                        float *sum_out, ptrdiff_t lds, const float *weight,
                        float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_NORM_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows, rms_norm_row(x + (ptrdiff_t)r * ldx, residual ? residual + (ptrdiff_t)r * ldr : NULL,
                     sum_out ? sum_out + (ptrdiff_t)r * lds : NULL, weight, y + (ptrdiff_t)r * ldy, cols, eps);
    );
    (void)nt;
    return PT_OK;
}
