/* pt_activation_avx2.c - AVX2+FMA element-wise activations (ReLU, GELU erf/tanh, SiLU), alone or after a bias. */
#include "pt_activation.h"
#include "pt_simd_avx2.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(PT_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__)

#define PT_ACT_PARALLEL_GRAIN 32768

/* One row: y = act(x + bias). The tail is the same vector code on masked loads/stores, so an element's
 * bits never depend on its column or on the row length (the GEMM relies on this for its 16-wide tiles).
 * The switch on act sits outside the loop; the macro keeps the five loops identical otherwise. */
#define PT_ACT_ROW_LOOP(FN)                                                              \
    do {                                                                                 \
        size_t i = 0;                                                                    \
        for (; i + 8 <= n; i += 8) {                                                     \
            __m256 h = _mm256_loadu_ps(x + i);                                           \
            if (bias) h = _mm256_add_ps(h, _mm256_loadu_ps(bias + i));                   \
            _mm256_storeu_ps(y + i, FN(h));                                              \
        }                                                                                \
        if (i < n) {                                                                     \
            __m256i m = pt_tail_mask((int)(n - i));                                      \
            __m256 h = _mm256_maskload_ps(x + i, m);                                     \
            if (bias) h = _mm256_add_ps(h, _mm256_maskload_ps(bias + i, m));             \
            _mm256_maskstore_ps(y + i, m, FN(h));                                        \
        }                                                                                \
    } while (0)

static inline __m256 act_identity(__m256 x) { return x; }

// x, y: (n,) (y may equal x); bias: (n,) or NULL
static void act_row(const float *x, const float *bias, float *y, size_t n, int act) {
    switch (act) {
    case PT_ACT_NONE: PT_ACT_ROW_LOOP(act_identity); break;
    case PT_ACT_RELU: PT_ACT_ROW_LOOP(pt_relu256); break;
    case PT_ACT_GELU: PT_ACT_ROW_LOOP(pt_gelu_erf256); break;
    case PT_ACT_GELU_TANH: PT_ACT_ROW_LOOP(pt_gelu_tanh256); break;
    case PT_ACT_SILU: PT_ACT_ROW_LOOP(pt_silu256); break;
    default: break;
    }
}

void pt_activation_inplace_avx2(float *x, size_t n, int act) {
    if (act <= PT_ACT_NONE || act >= PT_ACT_COUNT) return;
    act_row(x, NULL, x, n, act);
}

// x, y: (rows, cols), row strides ldx, ldy (y may equal x); bias: (cols,) or NULL
int pt_bias_activation_avx2(const float *x, ptrdiff_t ldx, const float *bias, float *y, ptrdiff_t ldy,
                            int rows, int cols, int act, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0 || act < 0 || act >= PT_ACT_COUNT) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_ACT_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows, act_row(x + (ptrdiff_t)r * ldx, bias, y + (ptrdiff_t)r * ldy, (size_t)cols, act);
    );
    (void)nt;
    return PT_OK;
}

#else /* built without AVX2: keep the symbols so the dispatcher links, and refuse the path */

#include "pt_activation.h"

void pt_activation_inplace_avx2(float *x, size_t n, int act) { pt_activation_inplace_generic(x, n, act); }

int pt_bias_activation_avx2(const float *x, ptrdiff_t ldx, const float *bias, float *y, ptrdiff_t ldy,
                            int rows, int cols, int act, int nthreads) {
    (void)x; (void)ldx; (void)bias; (void)y; (void)ldy; (void)rows; (void)cols; (void)act; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
