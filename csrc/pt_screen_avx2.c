/* pt_screen_avx2.c - the 8-bit packing compiled for AVX2, and the screen's integer dot products
 * with AVX2: pmaddubsw multiplies the 7-bit digits of the row (unsigned) by the weights (signed)
 * and adds pairs without saturating (2 x 127 x 127 < 2^15), pmaddwd weighs the high digit by 128
 * and adds the pairs into 32-bit lanes, one lane per column and group of 4 k values. */
#include "pt_screen.h"

#ifdef PT_HAVE_AVX2

#include <immintrin.h>
#include "pt_screen_pack.h"

/* The operations listed in pt_screen_pack.h on 8 columns (h = 0: columns 0-7, 1: 8-15) of k row kk:
 * returns q as int32 lanes and updates the sums. */
static inline __m256i quantize8(const float *row, __m256 s, __m256 inv, __m256i *sum, __m256 *w2, __m256 *d2) {
    const __m256 qmax = _mm256_set1_ps((float)PT_SCREEN_Q_MAX), qmin = _mm256_set1_ps(-(float)PT_SCREEN_Q_MAX);
    const __m256 magic = _mm256_set1_ps(PT_SCREEN_MAGIC);
    __m256 w = _mm256_loadu_ps(row);
    __m256 v = _mm256_mul_ps(w, inv);
    v = _mm256_min_ps(v, qmax);                    /* v < 127 ? v : 127 (NaN -> 127) */
    v = _mm256_max_ps(v, qmin);                    /* v > -127 ? v : -127 */
    __m256 r = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
    __m256i iq = _mm256_cvttps_epi32(r);
    *sum = _mm256_add_epi32(*sum, iq);
    __m256 d = _mm256_sub_ps(w, _mm256_mul_ps(r, s));
    *w2 = _mm256_add_ps(*w2, _mm256_mul_ps(w, w));
    *d2 = _mm256_add_ps(*d2, _mm256_mul_ps(d, d));
    return iq;
}

static void pack_i8_range_avx2(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                               double *sq_w, double *sq_d, int p0, int p1) {
    int groups = pt_screen_groups(k);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i byte = _mm256_set1_epi32(0xFF);
    for (int p = p0; p < p1; p++) {
        const float *src = packed + (size_t)p * k * PT_NR;
        int8_t *dst = q + (size_t)p * groups * PT_SCREEN_GROUP_BYTES;
        __m256 amax0 = _mm256_setzero_ps(), amax1 = _mm256_setzero_ps();
        for (int kk = 0; kk < k; kk++) {
            amax0 = _mm256_max_ps(amax0, _mm256_and_ps(_mm256_loadu_ps(src + (size_t)kk * PT_NR), absmask));
            amax1 = _mm256_max_ps(amax1, _mm256_and_ps(_mm256_loadu_ps(src + (size_t)kk * PT_NR + 8), absmask));
        }
        float amax[PT_NR], s[PT_NR], inv[PT_NR], w2[PT_NR], d2[PT_NR];
        int32_t sum[PT_NR];
        _mm256_storeu_ps(amax, amax0);
        _mm256_storeu_ps(amax + 8, amax1);
        for (int jj = 0; jj < PT_NR; jj++) pt_screen_column_scale(amax[jj], &s[jj], &inv[jj]);
        __m256 s0 = _mm256_loadu_ps(s), s1 = _mm256_loadu_ps(s + 8);
        __m256 inv0 = _mm256_loadu_ps(inv), inv1 = _mm256_loadu_ps(inv + 8);
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        __m256 w20 = _mm256_setzero_ps(), w21 = _mm256_setzero_ps(), d20 = _mm256_setzero_ps(), d21 = _mm256_setzero_ps();
        for (int g = 0; g < groups; g++) {
            /* byte t of column jj's 32-bit word is q[4g + t][jj]: pack the group's 4 rows by shifts */
            __m256i word0 = _mm256_setzero_si256(), word1 = _mm256_setzero_si256();
            for (int t = 0; t < PT_SCREEN_GROUP && g * PT_SCREEN_GROUP + t < k; t++) {
                const float *row = src + (size_t)(g * PT_SCREEN_GROUP + t) * PT_NR;
                __m256i q0 = quantize8(row, s0, inv0, &sum0, &w20, &d20);
                __m256i q1 = quantize8(row + 8, s1, inv1, &sum1, &w21, &d21);
                word0 = _mm256_or_si256(word0, _mm256_sll_epi32(_mm256_and_si256(q0, byte), _mm_cvtsi32_si128(8 * t)));
                word1 = _mm256_or_si256(word1, _mm256_sll_epi32(_mm256_and_si256(q1, byte), _mm_cvtsi32_si128(8 * t)));
            }
            int8_t *grp = dst + (size_t)g * PT_SCREEN_GROUP_BYTES;
            _mm256_storeu_si256((__m256i *)grp, word0);
            _mm256_storeu_si256((__m256i *)(grp + 32), word1);
        }
        _mm256_storeu_si256((__m256i *)sum, sum0);
        _mm256_storeu_si256((__m256i *)(sum + 8), sum1);
        _mm256_storeu_ps(w2, w20);
        _mm256_storeu_ps(w2 + 8, w21);
        _mm256_storeu_ps(d2, d20);
        _mm256_storeu_ps(d2 + 8, d21);
        pt_screen_panel_finish(p, k, n, s, sum, w2, d2, scale, qsum, sq_w, sq_d);
    }
}

int pt_pack_i8_avx2(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                    double *sq_w, double *sq_d, int nthreads) {
    return pt_pack_i8_drive(pack_i8_range_avx2, packed, k, n, q, scale, qsum, sq_w, sq_d, nthreads);
}

/* MR rows x one panel; the panel is two ymm halves (columns 0-7, 8-15), each (row, half) one
 * accumulator; the digits are broadcast from memory as they are needed. */
#define PT_UNROLL _Pragma("GCC unroll 8")
#define PT_DEFINE_SCREEN_I8(MR)                                                                            \
    static void screen_i8_##MR(const uint32_t *hi, const uint32_t *lo, int ldg, const int8_t *qp, int g0,  \
                               int g1, int32_t *tile) {                                                    \
        const __m256i w128 = _mm256_set1_epi16(128), w1 = _mm256_set1_epi16(1);                            \
        __m256i acc[MR][2];                                                                                \
        PT_UNROLL for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();             \
        for (int gg = g0; gg < g1; gg++) {                                                                 \
            const int8_t *grp = qp + (size_t)gg * PT_SCREEN_GROUP_BYTES;                                   \
            _mm_prefetch((const char *)(grp + PT_SCREEN_PREFETCH_GROUPS * PT_SCREEN_GROUP_BYTES), _MM_HINT_T0); \
            __m256i b0 = _mm256_loadu_si256((const __m256i *)grp);                                         \
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(grp + 32));                                  \
            PT_UNROLL for (int r = 0; r < MR; r++) {                                                       \
                __m256i h = _mm256_set1_epi32((int)hi[(size_t)r * ldg + gg]);                              \
                __m256i l = _mm256_set1_epi32((int)lo[(size_t)r * ldg + gg]);                              \
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_add_epi32(                                  \
                    _mm256_madd_epi16(_mm256_maddubs_epi16(h, b0), w128),                                  \
                    _mm256_madd_epi16(_mm256_maddubs_epi16(l, b0), w1)));                                  \
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_add_epi32(                                  \
                    _mm256_madd_epi16(_mm256_maddubs_epi16(h, b1), w128),                                  \
                    _mm256_madd_epi16(_mm256_maddubs_epi16(l, b1), w1)));                                  \
            }                                                                                              \
        }                                                                                                  \
        PT_UNROLL for (int r = 0; r < MR; r++) {                                                           \
            _mm256_storeu_si256((__m256i *)(tile + r * PT_NR), acc[r][0]);                                 \
            _mm256_storeu_si256((__m256i *)(tile + r * PT_NR + 8), acc[r][1]);                             \
        }                                                                                                  \
    }
PT_DEFINE_SCREEN_I8(1)
PT_DEFINE_SCREEN_I8(2)
PT_DEFINE_SCREEN_I8(3)
PT_DEFINE_SCREEN_I8(4)

static const pt_screen_tiles tiles_avx2 = {
    {NULL, screen_i8_1, screen_i8_2, screen_i8_3, screen_i8_4},
};

int pt_screen_logits_avx2(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                          const double *sx, int m, float *g, int nthreads) {
    return pt_screen_drive(&tiles_avx2, s, hi, lo, sx, m, g, nthreads);
}

#else

int pt_pack_i8_avx2(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                    double *sq_w, double *sq_d, int nthreads) {
    (void)packed; (void)k; (void)n; (void)q; (void)scale; (void)qsum; (void)sq_w; (void)sq_d; (void)nthreads;
    return PT_ERR_ISA;
}

int pt_screen_logits_avx2(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                          const double *sx, int m, float *g, int nthreads) {
    (void)s; (void)hi; (void)lo; (void)sx; (void)m; (void)g; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
