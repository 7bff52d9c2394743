/* pt_simd_avx512.h - 16-lane AVX-512F versions of pt_simd_avx2.h's exp and SiLU, for the AVX-512
 * GEMM's epilogue.
 *
 * Bitwise contract: every lane runs the instructions of pt_exp2k256 and of pt_silu256 as it was
 * before its trimmed exp (the same constants, min/max with the same operand order, round-to-nearest,
 * the same FMAs, an IEEE division; masks replace blendv), except that e^x 2^k is scaled by 2^(n+k)
 * with one vscalefps, which rounds once as pt_exp2k256's two power-of-two multiplies do. So a value
 * gets the same bits here as on the AVX2 path (all 2^32 SiLU inputs checked on 2026-11-22, against
 * both the old and the trimmed AVX2 SiLU; a NaN stays NaN, but its sign may differ: the compiler
 * commutes multiplies). tests/test_kernels.py checks special values, random
 * bit patterns and dense sweeps of the ranges near overflow and underflow through the GEMM. */
#ifndef PT_SIMD_AVX512_H
#define PT_SIMD_AVX512_H

#if defined(PT_HAVE_AVX512) && defined(__AVX512F__)

#include <float.h>
#include <immintrin.h>
#include "pt_simd_avx2.h"   /* PT_EXP_* constants, PT_ACT_SCALE_K, PT_ACT_UNSCALE */

/* x | -0.0 with AVX-512F only (_mm512_or_ps needs AVX-512DQ). */
static inline __m512 pt_or_sign512(__m512 x) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
}

/* pt_exp2k256, 16 lanes: the same range reduction and polynomial; the scaling by 2^(n+k) differs in
 * instructions only. */
static inline __m512 pt_exp2k512(__m512 x, int k) {
    const float lowest = -105.0f - 0.693147f * (float)k;
    __m512 xc = _mm512_min_ps(_mm512_set1_ps(PT_EXP_X_MAX), _mm512_max_ps(_mm512_set1_ps(lowest), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(PT_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(PT_EXP_LN2_HI), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(PT_EXP_LN2_LO), r);
    __m512 q = _mm512_set1_ps(PT_EXP_Q5);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(PT_EXP_Q4));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(PT_EXP_Q3));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(PT_EXP_Q2));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(PT_EXP_Q1));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
    __m512 p = _mm512_fmadd_ps(_mm512_mul_ps(r, r), q, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    /* p 2^(n+k) rounded once, as pt_exp2k256's two power-of-two factors do (p 2^n1 is exact there),
     * so the bits are the same: all 2^32 SiLU inputs checked against pt_silu256 (NaN stays NaN).
     * One vscalefps instead of ten integer and multiply steps: SiLU 1.3x faster per value (1 thread). */
    return _mm512_scalef_ps(p, _mm512_add_ps(n, _mm512_set1_ps((float)k)));
}

/* pt_silu256, 16 lanes. */
static inline __m512 pt_silu512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 nax = pt_or_sign512(x);
    __m512 t_scaled = pt_exp2k512(nax, PT_ACT_SCALE_K);
    /* pt_unscale_vs_one256, 16 lanes */
    const __m512 lim = _mm512_set1_ps(PT_ACT_NEGLIGIBLE);
    __mmask16 keep = _mm512_cmp_ps_mask(t_scaled, lim, _CMP_NLT_UQ);
    __m512 t = _mm512_maskz_mov_ps(keep, _mm512_mul_ps(_mm512_max_ps(lim, t_scaled), _mm512_set1_ps(PT_ACT_UNSCALE)));
    __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 sig = _mm512_div_ps(_mm512_mask_blend_ps(neg, one, t_scaled), _mm512_add_ps(one, t));
    __m512 fin = _mm512_mask_blend_ps(neg, one, _mm512_set1_ps(PT_ACT_UNSCALE));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_max_ps(_mm512_set1_ps(-FLT_MAX), x), sig), fin);
}

#endif
#endif
