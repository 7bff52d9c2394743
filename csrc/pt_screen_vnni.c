/* pt_screen_vnni.c - the screen's integer dot products with AVX-512 VNNI: one vpdpbusd multiplies
 * 64 digit-weight pairs (unsigned digits, signed weights) and adds each column's 4 products into its
 * 32-bit lane, a sixth of the instructions of the AVX2 kernel, which matters once several rows share
 * each weight loaded. Exact, like every path: the same bits as pt_screen_logits_generic. */
#include "pt_screen.h"

#ifdef PT_HAVE_AVX512VNNI

#include <immintrin.h>

/* MR rows x one panel: each row has a high-digit and a low-digit accumulator, combined as
 * 128 hi + lo when the block ends. */
#define PT_UNROLL _Pragma("GCC unroll 8")
#define PT_DEFINE_SCREEN_VNNI(MR)                                                                          \
    static void screen_vnni_##MR(const uint32_t *hi, const uint32_t *lo, int ldg, const int8_t *qp, int g0, \
                                 int g1, int32_t *tile) {                                                  \
        __m512i ah[MR], al[MR];                                                                            \
        PT_UNROLL for (int r = 0; r < MR; r++) ah[r] = al[r] = _mm512_setzero_si512();                     \
        for (int gg = g0; gg < g1; gg++) {                                                                 \
            const int8_t *grp = qp + (size_t)gg * PT_SCREEN_GROUP_BYTES;                                   \
            _mm_prefetch((const char *)(grp + PT_SCREEN_PREFETCH_GROUPS * PT_SCREEN_GROUP_BYTES), _MM_HINT_T0); \
            __m512i b = _mm512_loadu_si512((const void *)grp);                                             \
            PT_UNROLL for (int r = 0; r < MR; r++) {                                                       \
                ah[r] = _mm512_dpbusd_epi32(ah[r], _mm512_set1_epi32((int)hi[(size_t)r * ldg + gg]), b);   \
                al[r] = _mm512_dpbusd_epi32(al[r], _mm512_set1_epi32((int)lo[(size_t)r * ldg + gg]), b);   \
            }                                                                                              \
        }                                                                                                  \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            _mm512_storeu_si512((void *)(tile + r * PT_NR), _mm512_add_epi32(_mm512_slli_epi32(ah[r], 7), al[r])); \
    }
PT_DEFINE_SCREEN_VNNI(1)
PT_DEFINE_SCREEN_VNNI(2)
PT_DEFINE_SCREEN_VNNI(3)
PT_DEFINE_SCREEN_VNNI(4)

static const pt_screen_tiles tiles_vnni = {
    {NULL, screen_vnni_1, screen_vnni_2, screen_vnni_3, screen_vnni_4},
};

int pt_screen_logits_vnni(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                          const double *sx, int m, float *g, int nthreads) {
    return pt_screen_drive(&tiles_vnni, s, hi, lo, sx, m, g, nthreads);
}

#else

int pt_screen_logits_vnni(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                          const double *sx, int m, float *g, int nthreads) {
    (void)s; (void)hi; (void)lo; (void)sx; (void)m; (void)g; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
