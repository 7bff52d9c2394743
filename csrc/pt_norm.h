/* pt_norm.h - layer norm and RMS norm, each optionally fused with a residual add. */
#ifndef PT_NORM_H
#define PT_NORM_H

#include "pt_common.h"

/* h = x + residual (residual may be NULL: h = x); if sum_out != NULL, h is stored there;
 * y = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias     (layer norm; bias may be NULL)
 * Statistics in float32 by two passes (mean, then centred variance).
 * x, residual, sum_out, y: (rows, cols), row strides ldx, ldr, lds, ldy. y and sum_out may alias x or residual. */
int pt_layer_norm_generic(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                          float *sum_out, ptrdiff_t lds, const float *weight, const float *bias,
                          float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads);
int pt_layer_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                       float *sum_out, ptrdiff_t lds, const float *weight, const float *bias,
                       float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads);

/* Same, with y = h / sqrt(mean(h^2) + eps) * weight (RMS norm, as in T5). */
int pt_rms_norm_generic(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                        float *sum_out, ptrdiff_t lds, const float *weight,
                        float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads);
int pt_rms_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                     float *sum_out, ptrdiff_t lds, const float *weight,
                     float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads);

#endif
