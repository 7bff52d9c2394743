/* pt_softmax_avx2.c - AVX2+FMA row-wise, max-subtracted softmax with per-row valid lengths. */
#include <math.h>
#include "pt_softmax.h"
#include "pt_simd_avx2.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(PT_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__)

#define PT_SOFTMAX_PARALLEL_GRAIN 16384

/* One row, n valid of cols. Three sweeps (max; exp and sum; scale), each with a masked tail, so every
 * element's bits depend only on the n valid inputs, never on cols or on the row's place in the batch
 * (attention calls this per query row and relies on that). */
static void softmax_row(const float *x, float *y, int n, int cols) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    int j;
    float mx = -INFINITY;
    if (n > 0) {
        __m256 m = ninf;
        for (j = 0; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
        if (j < n) {
            __m256i tm = pt_tail_mask(n - j);
            __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + j, tm), _mm256_castsi256_ps(tm));
            m = _mm256_max_ps(m, v);
        }
        mx = pt_hmax256(m);
    }
    if (n <= 0 || mx == -INFINITY) {
        n = 0;
    } else {
        const __m256 vmx = _mm256_set1_ps(mx);
        __m256 acc = _mm256_setzero_ps();
        for (j = 0; j + 8 <= n; j += 8) {
            __m256 e = pt_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx));
            _mm256_storeu_ps(y + j, e);
            acc = _mm256_add_ps(acc, e);
        }
        if (j < n) {
            __m256i tm = pt_tail_mask(n - j);
            __m256 e = pt_exp256(_mm256_sub_ps(_mm256_maskload_ps(x + j, tm), vmx));
            e = _mm256_and_ps(e, _mm256_castsi256_ps(tm)); /* masked lanes held exp(0 - max) */
            _mm256_maskstore_ps(y + j, tm, e);
            acc = _mm256_add_ps(acc, e);
        }
        /* the max element contributes exp(0) = 1, so sum >= 1: no division by zero */
        const __m256 inv = _mm256_set1_ps(1.0f / pt_hsum256(acc));
        for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), inv));
        if (j < n) {
            __m256i tm = pt_tail_mask(n - j);
            _mm256_maskstore_ps(y + j, tm, _mm256_mul_ps(_mm256_maskload_ps(y + j, tm), inv));
        }
    }
    for (j = n; j < cols; j++) y[j] = 0.0f;
}

int pt_softmax_avx2(const float *x, ptrdiff_t ldx, float *y, ptrdiff_t ldy, int rows, int cols,
                    const int32_t *valid, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_SOFTMAX_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows,
        int n = valid ? valid[r] : cols;
        if (n > cols) n = cols;
        softmax_row(x + (ptrdiff_t)r * ldx, y + (ptrdiff_t)r * ldy, n, cols);
    );
    (void)nt;
    return PT_OK;
}

#else /* built without AVX2 */

int pt_softmax_avx2(const float *x, ptrdiff_t ldx, float *y, ptrdiff_t ldy, int rows, int cols,
                    const int32_t *valid, int nthreads) {
    (void)x; (void)ldx; (void)y; (void)ldy; (void)rows; (void)cols; (void)valid; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
