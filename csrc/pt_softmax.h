/* pt_softmax.h - row-wise, max-subtracted softmax with per-row valid lengths (padding and causal masks). */
#ifndef PT_SOFTMAX_H
#define PT_SOFTMAX_H

#include "pt_common.h"

/* For each row r: the first valid[r] columns get softmax over those columns, the rest get 0.
 * valid == NULL means every column is valid. valid[r] <= 0 gives a row of zeros (never NaN).
 * x, y: (rows, cols), row strides ldx, ldy (y may equal x). -inf inputs inside the valid range are
 * allowed (they become 0); a valid range that is all -inf gives zeros. */
int pt_softmax_generic(const float *x, ptrdiff_t ldx, float *y, ptrdiff_t ldy, int rows, int cols,
                       const int32_t *valid, int nthreads);
int pt_softmax_avx2(const float *x, ptrdiff_t ldx, float *y, ptrdiff_t ldy, int rows, int cols,
                    const int32_t *valid, int nthreads);

#endif
