/* pt_attention_avx512.c - AVX-512F weighted sum of values for the attention of pt_attention_avx2.c. */
#include "pt_attention.h"

#ifdef PT_HAVE_AVX512

#include <immintrin.h>

/* The four-query values pass of pt_attention_avx2.c with 16 lanes: each V row (64 columns at a time)
 * is loaded once for four queries, 16 zmm accumulators. Every output element is still one FMA chain
 * acc = fma(p_s, v_s[d], acc) over s = 0 .. n-1 from +0, so the results are the AVX2 pass's to the
 * bit; only fewer, wider instructions and a quarter of the passes over V for head_dim 64. */
void pt_attn_values4_avx512(const float *const p[4], int n, const float *vb, ptrdiff_t vseq, int dh,
                            float *const o[4]) {
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
    int d = 0;
    for (; d + 64 <= dh; d += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        __m512 c0 = a0, c1 = a0, c2 = a0, c3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
        const float *vr = vb + d;
        for (int s = 0; s < n; s++, vr += vseq) {
            const __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16);
            const __m512 v2 = _mm512_loadu_ps(vr + 32), v3 = _mm512_loadu_ps(vr + 48);
            __m512 w = _mm512_set1_ps(p0[s]);
            a0 = _mm512_fmadd_ps(w, v0, a0); a1 = _mm512_fmadd_ps(w, v1, a1);
            a2 = _mm512_fmadd_ps(w, v2, a2); a3 = _mm512_fmadd_ps(w, v3, a3);
            w = _mm512_set1_ps(p1[s]);
            b0 = _mm512_fmadd_ps(w, v0, b0); b1 = _mm512_fmadd_ps(w, v1, b1);
            b2 = _mm512_fmadd_ps(w, v2, b2); b3 = _mm512_fmadd_ps(w, v3, b3);
            w = _mm512_set1_ps(p2[s]);
            c0 = _mm512_fmadd_ps(w, v0, c0); c1 = _mm512_fmadd_ps(w, v1, c1);
            c2 = _mm512_fmadd_ps(w, v2, c2); c3 = _mm512_fmadd_ps(w, v3, c3);
            w = _mm512_set1_ps(p3[s]);
            e0 = _mm512_fmadd_ps(w, v0, e0); e1 = _mm512_fmadd_ps(w, v1, e1);
            e2 = _mm512_fmadd_ps(w, v2, e2); e3 = _mm512_fmadd_ps(w, v3, e3);
        }
        float *q0 = o[0] + d, *q1 = o[1] + d, *q2 = o[2] + d, *q3 = o[3] + d;
        _mm512_storeu_ps(q0, a0); _mm512_storeu_ps(q0 + 16, a1); _mm512_storeu_ps(q0 + 32, a2); _mm512_storeu_ps(q0 + 48, a3);
        _mm512_storeu_ps(q1, b0); _mm512_storeu_ps(q1 + 16, b1); _mm512_storeu_ps(q1 + 32, b2); _mm512_storeu_ps(q1 + 48, b3);
        _mm512_storeu_ps(q2, c0); _mm512_storeu_ps(q2 + 16, c1); _mm512_storeu_ps(q2 + 32, c2); _mm512_storeu_ps(q2 + 48, c3);
        _mm512_storeu_ps(q3, e0); _mm512_storeu_ps(q3 + 16, e1); _mm512_storeu_ps(q3 + 32, e2); _mm512_storeu_ps(q3 + 48, e3);
    }
    /* the rest 16 columns at a time, the last group masked */
    for (; d < dh; d += 16) {
        const __mmask16 m = dh - d >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (dh - d)) - 1u);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *vr = vb + d;
        for (int s = 0; s < n; s++, vr += vseq) {
            const __m512 v0 = _mm512_maskz_loadu_ps(m, vr);
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(p0[s]), v0, a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(p1[s]), v0, a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(p2[s]), v0, a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(p3[s]), v0, a3);
        }
        _mm512_mask_storeu_ps(o[0] + d, m, a0); _mm512_mask_storeu_ps(o[1] + d, m, a1);
        _mm512_mask_storeu_ps(o[2] + d, m, a2); _mm512_mask_storeu_ps(o[3] + d, m, a3);
    }
}


// ---- scores

/* 256-bit helpers with AVX-512F alone (the f32x8 forms need AVX-512DQ). */
static inline __m512 pair256(__m256 lo, __m256 hi) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}
static inline __m512 twice256(__m256 x) {
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(x)));
}

/* pt_transpose_sum8 on both 256-bit halves at once: lane j of half h is the sum of the lanes of
 * half h of a_j by the same tree ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). hadd is done as even + odd
 * lanes (the same two operands in the same order), the final 128-bit fold by two-source permutes. */
static inline __m512 hadd512(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}
static inline __m512 transpose_sum8x2(const __m512 a[8]) {
    const __m512i lo_idx = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi_idx = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    __m512 t0 = hadd512(a[0], a[1]), t1 = hadd512(a[2], a[3]), t2 = hadd512(a[4], a[5]), t3 = hadd512(a[6], a[7]);
    __m512 u0 = hadd512(t0, t1), u1 = hadd512(t2, t3);
    return _mm512_add_ps(_mm512_permutex2var_ps(u0, lo_idx, u1), _mm512_permutex2var_ps(u0, hi_idx, u1));
}

/* Queries (qa, qb) [and (qc, qd) when quad] against 8 keys: lanes 0-7 of r[0] are qa's 8 unscaled
 * scores, lanes 8-15 qb's; r[1] the same for qc, qd. Each score is the AVX2 kernels' 8-lane FMA
 * chain over head_dim (the last chunk zero-padded) and their reduction tree. */
static inline void dot_pairs_x8(const float *qa, const float *qb, const float *qc, const float *qd, int quad,
                                const float *const kr[8], int dh, __m512 r[2]) {
    __m512 acc0[8], acc1[8];
    for (int j = 0; j < 8; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    int d = 0;
    for (; d + 8 <= dh; d += 8) {
        const __m512 x0 = pair256(_mm256_loadu_ps(qa + d), _mm256_loadu_ps(qb + d));
        if (quad) {
            const __m512 x1 = pair256(_mm256_loadu_ps(qc + d), _mm256_loadu_ps(qd + d));
            for (int j = 0; j < 8; j++) {
                const __m512 kv = twice256(_mm256_loadu_ps(kr[j] + d));
                acc0[j] = _mm512_fmadd_ps(x0, kv, acc0[j]);
                acc1[j] = _mm512_fmadd_ps(x1, kv, acc1[j]);
            }
        } else {
            for (int j = 0; j < 8; j++) acc0[j] = _mm512_fmadd_ps(x0, twice256(_mm256_loadu_ps(kr[j] + d)), acc0[j]);
        }
    }
    if (d < dh) {
        const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(dh - d), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m512 x0 = pair256(_mm256_maskload_ps(qa + d, tail), _mm256_maskload_ps(qb + d, tail));
        const __m512 x1 = quad ? pair256(_mm256_maskload_ps(qc + d, tail), _mm256_maskload_ps(qd + d, tail)) : x0;
        for (int j = 0; j < 8; j++) {
            const __m512 kv = twice256(_mm256_maskload_ps(kr[j] + d, tail));
            acc0[j] = _mm512_fmadd_ps(x0, kv, acc0[j]);
            if (quad) acc1[j] = _mm512_fmadd_ps(x1, kv, acc1[j]);
        }
    }
    r[0] = transpose_sum8x2(acc0);
    if (quad) r[1] = transpose_sum8x2(acc1);
}

/* r's two halves (two queries' 8 scores, times scale) as rows 0 and 1 of S from column s0. */
static inline void store_pair(float *S, ptrdiff_t ldS, int s0, __m512 r, __m512 vscale) {
    r = _mm512_mul_ps(r, vscale);
    _mm256_storeu_ps(S + s0, _mm512_castps512_ps256(r));
    _mm256_storeu_ps(S + ldS + s0, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)));
}

/* block_scores of pt_attention_avx2.c: S[i, s] = scale * q_(t0+i) . k_s for i < nq, s < nkeys
 * (rounded up to 8, the extra columns copies of the last key's score, never read) for an even
 * nq: four queries at a time, then a pair; keys outer, queries inner. A single query (a decode step)
 * gains nothing from 16 lanes (measured 6-10% slower paired with itself): the caller gives an odd
 * count's last query to the AVX2 kernel, whose scores are bitwise these. */
void pt_attn_scores_avx512(const float *q0, ptrdiff_t qseq, int nq, const float *kb, ptrdiff_t kseq,
                           int nkeys, int dh, float scale, float *S, ptrdiff_t ldS) {
    nq &= ~1;
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int s0 = 0; s0 < nkeys; s0 += 8) {
        const float *kr[8];
        pt_attn_key_rows(kb, kseq, s0, nkeys, kr);
        int i = 0;
        for (; i + 4 <= nq; i += 4) {
            const float *qa = q0 + (ptrdiff_t)i * qseq;
            __m512 r[2];
            dot_pairs_x8(qa, qa + qseq, qa + 2 * qseq, qa + 3 * qseq, 1, kr, dh, r);
            store_pair(S + i * ldS, ldS, s0, r[0], vscale);
            store_pair(S + (i + 2) * ldS, ldS, s0, r[1], vscale);
        }
        if (i < nq) { /* one pair left */
            const float *qa = q0 + (ptrdiff_t)i * qseq;
            __m512 r[2];
            dot_pairs_x8(qa, qa + qseq, qa, qa, 0, kr, dh, r);
            store_pair(S + i * ldS, ldS, s0, r[0], vscale);
        }
    }
}

#endif
