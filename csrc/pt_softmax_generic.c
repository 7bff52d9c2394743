/* pt_softmax_generic.c - portable row-wise, max-subtracted softmax with per-row valid lengths. */
#include <math.h>
#include "pt_softmax.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define PT_SOFTMAX_PARALLEL_GRAIN 16384

/* The oracle version, in double throughout (x - max, exp, sum, division) and rounded once, so its
 * only error is that last rounding. x - max <= 0: no overflow. A valid range that is all -inf has
 * max -inf and is answered with zeros before any inf - inf can appear. */
int pt_softmax_generic(const float *x, ptrdiff_t ldx, float *y, ptrdiff_t ldy, int rows, int cols,
                       const int32_t *valid, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_SOFTMAX_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows,
        const float *xr = x + (ptrdiff_t)r * ldx;
        float *yr = y + (ptrdiff_t)r * ldy;
        int n = valid ? valid[r] : cols;
        if (n > cols) n = cols;
        if (n < 0) n = 0;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = xr[j] > mx ? xr[j] : mx;
        if (n == 0 || mx == -INFINITY) {
            for (int j = 0; j < cols; j++) yr[j] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int j = 0; j < n; j++) sum += exp((double)xr[j] - mx);
        for (int j = 0; j < n; j++) yr[j] = (float)(exp((double)xr[j] - mx) / sum); /* safe when y == x */
        for (int j = n; j < cols; j++) yr[j] = 0.0f;
    );
    (void)nt;
    return PT_OK;
}
