/* pt_activation.h - element-wise activations (ReLU, GELU erf/tanh, SiLU), alone or after a bias. */
#ifndef PT_ACTIVATION_H
#define PT_ACTIVATION_H

#include "pt_common.h"

/* y[i, j] = act(x[i, j] + bias[j]).  x, y: (rows, cols) with row strides ldx, ldy (y may equal x).
 * bias: (cols,) or NULL. Each element goes through the same arithmetic wherever it sits in the
 * row (vector tails are masked, not computed by a different scalar formula). */
int pt_bias_activation_generic(const float *x, ptrdiff_t ldx, const float *bias, float *y, ptrdiff_t ldy,
                               int rows, int cols, int act, int nthreads);
int pt_bias_activation_avx2(const float *x, ptrdiff_t ldx, const float *bias, float *y, ptrdiff_t ldy,
                            int rows, int cols, int act, int nthreads);

/* In-place activation of n contiguous floats; what the GEMM epilogue calls on each output tile. */
void pt_activation_inplace_generic(float *x, size_t n, int act);
void pt_activation_inplace_avx2(float *x, size_t n, int act);

#endif
