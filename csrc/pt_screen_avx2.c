/* pt_screen_avx2.c - the bfloat16 packing compiled for AVX2, and the screening GEMM over the copy
 * with AVX2+FMA: each 16-value panel row is widened to two float32 vectors (a shift of 16 bits)
 * and used for every row of a. */
#include "pt_screen.h"

#ifdef PT_HAVE_AVX2

#include <immintrin.h>
#include "pt_screen_pack.h"

int pt_pack_bf16_avx2(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d) {
    return pt_pack_bf16_body(packed, k, n, out, sq_w, sq_d);
}

/* k steps ahead that each panel stream is prefetched (a panel row is 32 bytes here). */
#define PT_SCREEN_PREFETCH_ROWS 64

static inline __m256 widen8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* MR rows x NP panels; 16 ymm registers hold MR * NP * 2 accumulators, the MR broadcasts and one
 * widened B vector: (1, 4) = 8 + 1 + 1, (2, 2) = 8 + 2 + 1, (4, 1) = 8 + 4 + 1. */
#define PT_UNROLL _Pragma("GCC unroll 8")
#define PT_DEFINE_SCREEN8(MR, NP)                                                                          \
    static void screen8_##MR##x##NP(const float *a, ptrdiff_t lda, const uint16_t *rp, size_t pstride,     \
                                    int k, float *tile /* MR x NP*16 */) {                                 \
        __m256 acc[MR][2 * NP];                                                                            \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            PT_UNROLL for (int q = 0; q < 2 * NP; q++) acc[r][q] = _mm256_setzero_ps();                    \
        for (int kk = 0; kk < k; kk++) {                                                                   \
            __m256 av[MR];                                                                                 \
            PT_UNROLL for (int r = 0; r < MR; r++) av[r] = _mm256_broadcast_ss(a + r * lda + kk);          \
            PT_UNROLL for (int q = 0; q < 2 * NP; q++) {                                                   \
                const uint16_t *row = rp + (q / 2) * pstride + (size_t)kk * PT_NR + (q % 2) * 8;           \
                if (q % 2 == 0) _mm_prefetch((const char *)(row + PT_SCREEN_PREFETCH_ROWS * PT_NR), _MM_HINT_T0); \
                __m256 b = widen8(row);                                                                    \
                PT_UNROLL for (int r = 0; r < MR; r++) acc[r][q] = _mm256_fmadd_ps(av[r], b, acc[r][q]);   \
            }                                                                                              \
        }                                                                                                  \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            PT_UNROLL for (int q = 0; q < 2 * NP; q++) _mm256_storeu_ps(tile + r * NP * PT_NR + q * 8, acc[r][q]); \
    }
PT_DEFINE_SCREEN8(1, 4)
PT_DEFINE_SCREEN8(1, 1)
PT_DEFINE_SCREEN8(2, 2)
PT_DEFINE_SCREEN8(2, 1)
PT_DEFINE_SCREEN8(3, 1)
PT_DEFINE_SCREEN8(4, 1)

static const pt_screen_tiles tiles_avx2 = {
    {NULL, screen8_1x4, screen8_2x2, screen8_3x1, screen8_4x1},
    {NULL, screen8_1x1, screen8_2x1, screen8_3x1, screen8_4x1},
    {0, 4, 2, 1, 1},
};

int pt_gemm_bf16_avx2(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                      float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    return pt_screen_drive(&tiles_avx2, a, lda, rp, bias, c, ldc, m, n, k, nthreads);
}

#else

int pt_pack_bf16_avx2(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d) {
    (void)packed; (void)k; (void)n; (void)out; (void)sq_w; (void)sq_d;
    return PT_ERR_ISA;
}

int pt_gemm_bf16_avx2(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                      float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    (void)a; (void)lda; (void)rp; (void)bias; (void)c; (void)ldc; (void)m; (void)n; (void)k; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
