/* pt_screen_avx512.c - the screening GEMM over a bfloat16 packed matrix with AVX-512F: a 16-value
 * panel row is one load, a widening and a shift to a float32 zmm, used for every row of a. */
#include "pt_screen.h"

#ifdef PT_HAVE_AVX512

#include <immintrin.h>

#define PT_SCREEN_PREFETCH_ROWS 64

static inline __m512 widen16(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* MR rows x NP panels: 8 independent FMA chains for one row (memory-bound: 8 streams in flight),
 * 4 x 4 = 16 for more rows. */
#define PT_UNROLL _Pragma("GCC unroll 8")
#define PT_DEFINE_SCREEN16(MR, NP)                                                                         \
    static void screen16_##MR##x##NP(const float *a, ptrdiff_t lda, const uint16_t *rp, size_t pstride,    \
                                     int k, float *tile /* MR x NP*16 */) {                                \
        __m512 acc[MR][NP];                                                                                \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            PT_UNROLL for (int q = 0; q < NP; q++) acc[r][q] = _mm512_setzero_ps();                        \
        for (int kk = 0; kk < k; kk++) {                                                                   \
            __m512 b[NP];                                                                                  \
            PT_UNROLL for (int q = 0; q < NP; q++) {                                                       \
                const uint16_t *row = rp + q * pstride + (size_t)kk * PT_NR;                               \
                _mm_prefetch((const char *)(row + PT_SCREEN_PREFETCH_ROWS * PT_NR), _MM_HINT_T0);          \
                b[q] = widen16(row);                                                                       \
            }                                                                                              \
            PT_UNROLL for (int r = 0; r < MR; r++) {                                                       \
                __m512 av = _mm512_set1_ps(a[r * lda + kk]);                                               \
                PT_UNROLL for (int q = 0; q < NP; q++) acc[r][q] = _mm512_fmadd_ps(av, b[q], acc[r][q]);   \
            }                                                                                              \
        }                                                                                                  \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            PT_UNROLL for (int q = 0; q < NP; q++) _mm512_storeu_ps(tile + r * NP * PT_NR + q * PT_NR, acc[r][q]); \
    }
PT_DEFINE_SCREEN16(1, 8)
PT_DEFINE_SCREEN16(1, 1)
PT_DEFINE_SCREEN16(2, 4)
PT_DEFINE_SCREEN16(2, 1)
PT_DEFINE_SCREEN16(3, 4)
PT_DEFINE_SCREEN16(3, 1)
PT_DEFINE_SCREEN16(4, 4)
PT_DEFINE_SCREEN16(4, 1)

static const pt_screen_tiles tiles_avx512 = {
    {NULL, screen16_1x8, screen16_2x4, screen16_3x4, screen16_4x4},
    {NULL, screen16_1x1, screen16_2x1, screen16_3x1, screen16_4x1},
    {0, 8, 4, 4, 4},
};

int pt_gemm_bf16_avx512(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                        float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    return pt_screen_drive(&tiles_avx512, a, lda, rp, bias, c, ldc, m, n, k, nthreads);
}

#else

int pt_gemm_bf16_avx512(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                        float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    (void)a; (void)lda; (void)rp; (void)bias; (void)c; (void)ldc; (void)m; (void)n; (void)k; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
