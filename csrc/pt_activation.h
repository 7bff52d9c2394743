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

/* The SiLU of the AVX-512 GEMM epilogue (pt_silu512) against the AVX2 one (pt_activation_inplace_avx2,
 * what the AVX2 epilogue runs) for the count float32 bit patterns first, first + 1, ... (count
 * <= 2^32; wraps past 0xffffffff), on up to nthreads threads of the worker team: the bits must be
 * equal, a NaN only needs a NaN. Returns how many differ and the lowest such pattern in *first_diff
 * (untouched when none), or -1 when the AVX-512 path is not compiled in. Defined in
 * pt_gemm_avx512.c; the suite checks all 2^32 inputs with it. */
long long pt_silu_check_paths(uint32_t first, uint64_t count, int nthreads, uint32_t *first_diff);

#endif
