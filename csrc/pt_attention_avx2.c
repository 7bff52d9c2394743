/* pt_attention_avx2.c - AVX2+FMA multi-head scaled dot-product attention (key lengths, causal, bias). */
#include "pt_attention.h"
#include "pt_softmax.h"
#include "pt_simd_avx2.h"

#if defined(PT_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__)

/* Determinism: a score q_t.k_s is always one FMA chain over head_dim in 8-lane chunks (the last chunk
 * masked), reduced by the fixed tree of pt_transpose_sum8, then * scale, then + bias; whichever
 * kernel (1x8 or 2x4) and whichever key group computes it, the instructions per lane are the same.
 * The softmax of a query row sees exactly its visible keys, and the output element d is one FMA chain
 * over those keys in order. Nothing depends on kv_len, q_len, other batch rows or the thread count.
 * pt_attention_avx512 runs this file's code with the AVX-512 scores and values kernels of
 * pt_attention_avx512.c, which keep those per-lane instruction sequences: the same bits. */

#define PT_ATTN_ROW_ALIGN 16 /* must match the rule in pt_attention_scratch_size */

static inline int visible_keys(int kv_valid, int causal, int q_offset, int t) {
    if (!causal) return kv_valid;
    long long lim = (long long)q_offset + t + 1;
    if (lim < 0) lim = 0;
    return lim < kv_valid ? (int)lim : kv_valid;
}

// ---- scores

/* One query against 8 keys: returns the 8 unscaled dot products. */
static inline __m256 dot_1x8(const float *qi, const float *const kr[8], int dh, __m256i tail) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int d = 0;
    for (; d + 8 <= dh; d += 8) {
        __m256 qv = _mm256_loadu_ps(qi + d);
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[0] + d), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[1] + d), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[2] + d), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[3] + d), a3);
        a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[4] + d), a4);
        a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[5] + d), a5);
        a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[6] + d), a6);
        a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[7] + d), a7);
    }
    if (d < dh) {
        __m256 qv = _mm256_maskload_ps(qi + d, tail);
        a0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[0] + d, tail), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[1] + d, tail), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[2] + d, tail), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[3] + d, tail), a3);
        a4 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[4] + d, tail), a4);
        a5 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[5] + d, tail), a5);
        a6 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[6] + d, tail), a6);
        a7 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[7] + d, tail), a7);
    }
    return pt_transpose_sum8(a0, a1, a2, a3, a4, a5, a6, a7);
}

/* Two queries against 4 keys (fewer loads per FMA than 1x8): lanes 0-3 query 0, lanes 4-7 query 1. */
static inline __m256 dot_2x4(const float *q0, const float *q1, const float *const kr[4], int dh, __m256i tail) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int d = 0;
    for (; d + 8 <= dh; d += 8) {
        __m256 x0 = _mm256_loadu_ps(q0 + d), x1 = _mm256_loadu_ps(q1 + d);
        __m256 k0 = _mm256_loadu_ps(kr[0] + d), k1 = _mm256_loadu_ps(kr[1] + d);
        a0 = _mm256_fmadd_ps(x0, k0, a0); b0 = _mm256_fmadd_ps(x1, k0, b0);
        a1 = _mm256_fmadd_ps(x0, k1, a1); b1 = _mm256_fmadd_ps(x1, k1, b1);
        __m256 k2 = _mm256_loadu_ps(kr[2] + d), k3 = _mm256_loadu_ps(kr[3] + d);
        a2 = _mm256_fmadd_ps(x0, k2, a2); b2 = _mm256_fmadd_ps(x1, k2, b2);
        a3 = _mm256_fmadd_ps(x0, k3, a3); b3 = _mm256_fmadd_ps(x1, k3, b3);
    }
    if (d < dh) {
        __m256 x0 = _mm256_maskload_ps(q0 + d, tail), x1 = _mm256_maskload_ps(q1 + d, tail);
        __m256 k0 = _mm256_maskload_ps(kr[0] + d, tail), k1 = _mm256_maskload_ps(kr[1] + d, tail);
        a0 = _mm256_fmadd_ps(x0, k0, a0); b0 = _mm256_fmadd_ps(x1, k0, b0);
        a1 = _mm256_fmadd_ps(x0, k1, a1); b1 = _mm256_fmadd_ps(x1, k1, b1);
        __m256 k2 = _mm256_maskload_ps(kr[2] + d, tail), k3 = _mm256_maskload_ps(kr[3] + d, tail);
        a2 = _mm256_fmadd_ps(x0, k2, a2); b2 = _mm256_fmadd_ps(x1, k2, b2);
        a3 = _mm256_fmadd_ps(x0, k3, a3); b3 = _mm256_fmadd_ps(x1, k3, b3);
    }
    return pt_transpose_sum8(a0, a1, a2, a3, b0, b1, b2, b3);
}

/* S[i, s] = scale * q_(t0+i) . k_s for i < nq, s < nkeys (rounded up to 8; the extra columns hold
 * copies of the last key's score and are never read). Keys outer, queries inner: a group of 8 keys
 * stays in L1 while the whole block of queries passes over it. */
// q0: first query of the block, query stride qseq; kb: keys, stride kseq; S: (nq, ldS)
static void block_scores(const float *q0, ptrdiff_t qseq, int nq, const float *kb, ptrdiff_t kseq,
                         int nkeys, int dh, float scale, float *S, ptrdiff_t ldS) {
    const __m256i tail = pt_tail_mask(dh & 7);
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int s0 = 0; s0 < nkeys; s0 += 8) {
        const float *kr[8];
        pt_attn_key_rows(kb, kseq, s0, nkeys, kr);
        int i = 0;
        if (nq >= 2) {
            for (; i + 2 <= nq; i += 2) {
                const float *qa = q0 + (ptrdiff_t)i * qseq, *qb = qa + qseq;
                __m256 lo = _mm256_mul_ps(dot_2x4(qa, qb, kr, dh, tail), vscale);
                __m256 hi = _mm256_mul_ps(dot_2x4(qa, qb, kr + 4, dh, tail), vscale);
                _mm256_storeu_ps(S + i * ldS + s0, _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_storeu_ps(S + (i + 1) * ldS + s0, _mm256_permute2f128_ps(lo, hi, 0x31));
            }
        }
        for (; i < nq; i++)
            _mm256_storeu_ps(S + i * ldS + s0,
                             _mm256_mul_ps(dot_1x8(q0 + (ptrdiff_t)i * qseq, kr, dh, tail), vscale));
    }
}

// ---- weighted sum of values

/* Every output element is one FMA chain acc = fma(p_s, v_s[d], acc) over s = 0, 1, ... n-1 from acc = 0.
 * The single-query kernel can resume a chain from o (exact: a float round trip through memory), which
 * lets a group of queries with different key counts share the common prefix and finish one by one. */

/* o[d] (from 0 or resumed from o) += sum_{s0<=s<s1} p[s] v_s[d]: 64 (then 32, then 8) columns in registers. */
static void weighted_values_1(const float *p, int s0, int s1, const float *vb, ptrdiff_t vseq, int dh,
                              float *o, int resume) {
    int d = 0;
    for (; d + 64 <= dh; d += 64) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        if (resume) {
            a0 = _mm256_loadu_ps(o + d); a1 = _mm256_loadu_ps(o + d + 8);
            a2 = _mm256_loadu_ps(o + d + 16); a3 = _mm256_loadu_ps(o + d + 24);
            a4 = _mm256_loadu_ps(o + d + 32); a5 = _mm256_loadu_ps(o + d + 40);
            a6 = _mm256_loadu_ps(o + d + 48); a7 = _mm256_loadu_ps(o + d + 56);
        }
        const float *vr = vb + (ptrdiff_t)s0 * vseq + d;
        for (int s = s0; s < s1; s++, vr += vseq) {
            __m256 w = _mm256_broadcast_ss(p + s);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 24), a3);
            a4 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 32), a4);
            a5 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 40), a5);
            a6 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 48), a6);
            a7 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 56), a7);
        }
        _mm256_storeu_ps(o + d, a0); _mm256_storeu_ps(o + d + 8, a1);
        _mm256_storeu_ps(o + d + 16, a2); _mm256_storeu_ps(o + d + 24, a3);
        _mm256_storeu_ps(o + d + 32, a4); _mm256_storeu_ps(o + d + 40, a5);
        _mm256_storeu_ps(o + d + 48, a6); _mm256_storeu_ps(o + d + 56, a7);
    }
    for (; d + 32 <= dh; d += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        if (resume) {
            a0 = _mm256_loadu_ps(o + d); a1 = _mm256_loadu_ps(o + d + 8);
            a2 = _mm256_loadu_ps(o + d + 16); a3 = _mm256_loadu_ps(o + d + 24);
        }
        const float *vr = vb + (ptrdiff_t)s0 * vseq + d;
        for (int s = s0; s < s1; s++, vr += vseq) {
            __m256 w = _mm256_broadcast_ss(p + s);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 24), a3);
        }
        _mm256_storeu_ps(o + d, a0); _mm256_storeu_ps(o + d + 8, a1);
        _mm256_storeu_ps(o + d + 16, a2); _mm256_storeu_ps(o + d + 24, a3);
    }
    for (; d < dh; d += 8) {
        const __m256i m = pt_tail_mask(dh - d < 8 ? dh - d : 8);
        __m256 a0 = resume ? _mm256_maskload_ps(o + d, m) : _mm256_setzero_ps();
        const float *vr = vb + (ptrdiff_t)s0 * vseq + d;
        for (int s = s0; s < s1; s++, vr += vseq)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + s), _mm256_maskload_ps(vr, m), a0);
        _mm256_maskstore_ps(o + d, m, a0);
    }
}

/* Four queries over the keys they all see, s < n: each row of V is loaded once for four outputs
 * (16 columns x 4 queries in registers), a quarter of the V traffic of four single-query passes. */
static void weighted_values_4(const float *const p[4], int n, const float *vb, ptrdiff_t vseq, int dh,
                              float *const o[4]) {
    int d = 0;
    for (; d + 16 <= dh; d += 16) {
        __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        const float *vr = vb + d;
        for (int s = 0; s < n; s++, vr += vseq) {
            __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
            __m256 w = _mm256_broadcast_ss(p[0] + s);
            a0 = _mm256_fmadd_ps(w, v0, a0); b0 = _mm256_fmadd_ps(w, v1, b0);
            w = _mm256_broadcast_ss(p[1] + s);
            a1 = _mm256_fmadd_ps(w, v0, a1); b1 = _mm256_fmadd_ps(w, v1, b1);
            w = _mm256_broadcast_ss(p[2] + s);
            a2 = _mm256_fmadd_ps(w, v0, a2); b2 = _mm256_fmadd_ps(w, v1, b2);
            w = _mm256_broadcast_ss(p[3] + s);
            a3 = _mm256_fmadd_ps(w, v0, a3); b3 = _mm256_fmadd_ps(w, v1, b3);
        }
        _mm256_storeu_ps(o[0] + d, a0); _mm256_storeu_ps(o[0] + d + 8, b0);
        _mm256_storeu_ps(o[1] + d, a1); _mm256_storeu_ps(o[1] + d + 8, b1);
        _mm256_storeu_ps(o[2] + d, a2); _mm256_storeu_ps(o[2] + d + 8, b2);
        _mm256_storeu_ps(o[3] + d, a3); _mm256_storeu_ps(o[3] + d + 8, b3);
    }
    for (; d < dh; d += 8) {
        const __m256i m = pt_tail_mask(dh - d < 8 ? dh - d : 8);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *vr = vb + d;
        for (int s = 0; s < n; s++, vr += vseq) {
            __m256 v0 = _mm256_maskload_ps(vr, m);
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[0] + s), v0, a0);
            a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[1] + s), v0, a1);
            a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[2] + s), v0, a2);
            a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[3] + s), v0, a3);
        }
        _mm256_maskstore_ps(o[0] + d, m, a0); _mm256_maskstore_ps(o[1] + d, m, a1);
        _mm256_maskstore_ps(o[2] + d, m, a2); _mm256_maskstore_ps(o[3] + d, m, a3);
    }
}

// ---- one (batch, head) pair

static void attend_pair(const float *qb, ptrdiff_t qseq, const float *kb, ptrdiff_t kseq,
                        const float *vb, ptrdiff_t vseq, float *ob, ptrdiff_t oseq,
                        const float *bias_h, const ptrdiff_t *bias_strides, int kv_valid,
                        int q_len, int head_dim, int causal, int q_offset, float scale,
                        float *S, ptrdiff_t ldS, int qblock, pt_attn_scores_fn scores,
                        pt_attn_values4_fn values4) {
    for (int t0 = 0; t0 < q_len; t0 += qblock) {
        const int nq = q_len - t0 < qblock ? q_len - t0 : qblock;
        /* the last query of a block sees the most keys */
        const int nmax = visible_keys(kv_valid, causal, q_offset, t0 + nq - 1);
        if (nmax > 0)
            scores(qb + t0 * qseq, qseq, nq, kb, kseq, nmax, head_dim, scale, S, ldS);
        /* probabilities for every query of the block first, then the values in groups of four */
        int first = nq; /* queries before `first` see no key (only with causal and q_offset < 0) */
        for (int i = 0; i < nq; i++) {
            const int t = t0 + i;
            const int n = visible_keys(kv_valid, causal, q_offset, t);
            if (n == 0) {
                float *ot = ob + t * oseq;
                for (int d = 0; d < head_dim; d++) ot[d] = 0.0f;
                continue;
            }
            if (first == nq) first = i;
            float *st = S + i * ldS;
            if (bias_h) {
                const float *bt = bias_h + t * bias_strides[1];
                const ptrdiff_t bk = bias_strides[2];
                for (int s = 0; s < n; s++) st[s] += bt[s * bk];
            }
            pt_softmax_avx2(st, 0, st, 0, 1, n, NULL, 1); /* all -inf gives zeros, hence a zero output */
        }
        int i = first;
        for (; i + 4 <= nq; i += 4) {
            /* visible_keys is nondecreasing in t: the group's first query sees the fewest keys */
            const int common = visible_keys(kv_valid, causal, q_offset, t0 + i);
            const float *p4[4];
            float *o4[4];
            for (int j = 0; j < 4; j++) {
                p4[j] = S + (i + j) * ldS;
                o4[j] = ob + (t0 + i + j) * oseq;
            }
            values4(p4, common, vb, vseq, head_dim, o4);
            for (int j = 1; j < 4; j++) {
                const int n = visible_keys(kv_valid, causal, q_offset, t0 + i + j);
                if (n > common) weighted_values_1(p4[j], common, n, vb, vseq, head_dim, o4[j], 1);
            }
        }
        for (; i < nq; i++) {
            const int n = visible_keys(kv_valid, causal, q_offset, t0 + i);
            weighted_values_1(S + i * ldS, 0, n, vb, vseq, head_dim, ob + (t0 + i) * oseq, 0);
        }
    }
}

/* One call's arguments, for the per-thread tasks below. */
typedef struct {
    const float *q, *k, *v;
    float *out;
    pt_strides qs, ks, vs, os;
    const int32_t *kv_lengths;
    const float *bias;
    const ptrdiff_t *bias_strides;
    int heads, q_len, kv_len, head_dim, causal, q_offset, pairs, nt, qblock;
    float scale;
    float *scratch;
    size_t slice;
    ptrdiff_t ldS;
    pt_attn_scores_fn scores;
    pt_attn_values4_fn values4;
} attn_job;

static void attend_one(const attn_job *j, int pair, float *S) {
    const int b = pair / j->heads, h = pair % j->heads;
    int kv_valid = j->kv_lengths ? j->kv_lengths[b] : j->kv_len;
    if (kv_valid > j->kv_len) kv_valid = j->kv_len;
    if (kv_valid < 0) kv_valid = 0;
    attend_pair(j->q + b * j->qs.batch + h * j->qs.head, j->qs.seq, j->k + b * j->ks.batch + h * j->ks.head, j->ks.seq,
                j->v + b * j->vs.batch + h * j->vs.head, j->vs.seq, j->out + b * j->os.batch + h * j->os.head, j->os.seq,
                j->bias ? j->bias + h * j->bias_strides[0] : NULL, j->bias_strides, kv_valid, j->q_len, j->head_dim,
                j->causal, j->q_offset, j->scale, S, j->ldS, j->qblock, j->scores, j->values4);
}

/* Task t of j->nt: the t-th contiguous share of the (batch, head) pairs, with scratch slice t. */
static void attend_share(void *ctx, int t) {
    const attn_job *j = (const attn_job *)ctx;
    const int lo = (int)((long long)j->pairs * t / j->nt), hi = (int)((long long)j->pairs * (t + 1) / j->nt);
    for (int pair = lo; pair < hi; pair++) attend_one(j, pair, j->scratch + (size_t)t * j->slice);
}

static int attention_run(const float *q, pt_strides qs, const float *k, pt_strides ks,
                         const float *v, pt_strides vs, float *out, pt_strides os,
                         const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                         int batch, int heads, int q_len, int kv_len, int head_dim,
                         int causal, int q_offset, float scale, float *scratch, int nthreads,
                         pt_attn_scores_fn scores, pt_attn_values4_fn values4) {
    if (!q || !k || !v || !out || !scratch || (bias && !bias_strides) || batch <= 0 || heads <= 0 ||
        q_len <= 0 || kv_len <= 0 || head_dim <= 0)
        return PT_ERR_ARG;
    /* the per-thread slice is defined by pt_attention_scratch_size; rows of scores padded to 16 */
    attn_job j = {q, k, v, out, qs, ks, vs, os, kv_lengths, bias, bias_strides, heads, q_len, kv_len, head_dim,
                  causal, q_offset, batch * heads, 1, 0, scale, scratch, pt_attention_scratch_size(kv_len, 1), 0,
                  scores, values4};
    j.ldS = ((ptrdiff_t)kv_len + PT_ATTN_ROW_ALIGN - 1) / PT_ATTN_ROW_ALIGN * PT_ATTN_ROW_ALIGN;
    j.qblock = (int)(j.slice / (size_t)j.ldS);
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nt > j.pairs) nt = j.pairs;
    const double grain = pt_pool_available() ? PT_ATTN_POOL_GRAIN : PT_ATTN_PARALLEL_GRAIN;
    if ((double)j.pairs * (q_len > 1 ? q_len : 1) * kv_len * head_dim < grain) nt = 1;
    j.nt = nt;
    pt_parallel_tasks(nt, nt, attend_share, &j);
    return PT_OK;
}

int pt_attention_avx2(const float *q, pt_strides qs, const float *k, pt_strides ks,
                      const float *v, pt_strides vs, float *out, pt_strides os,
                      const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                      int batch, int heads, int q_len, int kv_len, int head_dim,
                      int causal, int q_offset, float scale, float *scratch, int nthreads) {
    return attention_run(q, qs, k, ks, v, vs, out, os, kv_lengths, bias, bias_strides, batch, heads, q_len,
                         kv_len, head_dim, causal, q_offset, scale, scratch, nthreads, block_scores, weighted_values_4);
}

#ifdef PT_HAVE_AVX512
/* Scores on AVX-512 for pairs of queries, on AVX2 for an odd count's last one (same bits). */
static void block_scores_avx512(const float *q0, ptrdiff_t qseq, int nq, const float *kb, ptrdiff_t kseq,
                                int nkeys, int dh, float scale, float *S, ptrdiff_t ldS) {
    const int even = nq & ~1;
    if (even) pt_attn_scores_avx512(q0, qseq, even, kb, kseq, nkeys, dh, scale, S, ldS);
    if (nq & 1)
        block_scores(q0 + (ptrdiff_t)even * qseq, qseq, 1, kb, kseq, nkeys, dh, scale, S + (ptrdiff_t)even * ldS, ldS);
}
#endif

#else /* built without AVX2 */

int pt_attention_avx2(const float *q, pt_strides qs, const float *k, pt_strides ks,
                      const float *v, pt_strides vs, float *out, pt_strides os,
                      const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                      int batch, int heads, int q_len, int kv_len, int head_dim,
                      int causal, int q_offset, float scale, float *scratch, int nthreads) {
    (void)q; (void)qs; (void)k; (void)ks; (void)v; (void)vs; (void)out; (void)os; (void)kv_lengths;
    (void)bias; (void)bias_strides; (void)batch; (void)heads; (void)q_len; (void)kv_len; (void)head_dim;
    (void)causal; (void)q_offset; (void)scale; (void)scratch; (void)nthreads;
    return PT_ERR_ISA;
}

#endif

/* Defined once for every build: the AVX2 attention with the AVX-512 kernels when both are compiled
 * in (the pyx calls it only on the avx512 path), else PT_ERR_ISA. */
int pt_attention_avx512(const float *q, pt_strides qs, const float *k, pt_strides ks,
                        const float *v, pt_strides vs, float *out, pt_strides os,
                        const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                        int batch, int heads, int q_len, int kv_len, int head_dim,
                        int causal, int q_offset, float scale, float *scratch, int nthreads) {
#if defined(PT_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__) && defined(PT_HAVE_AVX512)
    return attention_run(q, qs, k, ks, v, vs, out, os, kv_lengths, bias, bias_strides, batch, heads, q_len,
                         kv_len, head_dim, causal, q_offset, scale, scratch, nthreads, block_scores_avx512,
                         pt_attn_values4_avx512);
#else
    (void)q; (void)qs; (void)k; (void)ks; (void)v; (void)vs; (void)out; (void)os; (void)kv_lengths;
    (void)bias; (void)bias_strides; (void)batch; (void)heads; (void)q_len; (void)kv_len; (void)head_dim;
    (void)causal; (void)q_offset; (void)scale; (void)scratch; (void)nthreads;
    return PT_ERR_ISA;
#endif
}

