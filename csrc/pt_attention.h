/* pt_attention.h - multi-head scaled dot-product attention with key lengths, causal mask and additive bias. */
#ifndef PT_ATTENTION_H
#define PT_ATTENTION_H

#include "pt_common.h"

/* Strides, in elements, of a (batch, seq, heads, head_dim) tensor whose head_dim axis is contiguous.
 * [B, T, H*dh] row-major: {T*H*dh, H*dh, dh};  a cache laid out [B, H, Tmax, dh]: {H*Tmax*dh, dh, Tmax*dh}. */
typedef struct {
    ptrdiff_t batch, seq, head;
} pt_strides;

/* out[b, t, h, :] = sum_s p[s] v[b, s, h, :],  p = softmax_s( scale * q[b,t,h,:].k[b,s,h,:] + bias[h, t, s] )
 * over the keys s that are valid: s < kv_lengths[b] (all kv_len when kv_lengths == NULL) and,
 * when causal, s <= q_offset + t (q_offset = absolute position of query row 0; the past length when decoding).
 * A query with no valid key gets a zero output.
 * bias: additive score bias (heads, q_len, kv_len) with strides bias_strides {head, q, k} (elements),
 *       shared by every batch row (T5 relative positions), or NULL.
 * scratch: at least pt_attention_scratch_size(kv_len, nthreads) floats, owned by the caller.
 * Parallel over (batch, head) pairs; each output element is computed the same way whatever the
 * thread count or batch composition. */
size_t pt_attention_scratch_size(int kv_len, int nthreads);

/* (Both paths.) Threads pay off once the keys and values read outweigh a parallel region's start
 * and join: decode-time attention reads caches that the weight stream has evicted, so it is
 * memory-bound, and waking a sleeping OpenMP worker costs ~15 us on the development machine. One
 * thread streams E key elements (and as many values) at ~12 GB/s, two at ~20 GB/s plus that
 * wake-up: they break even near E = 56K. Counted in key elements touched (pairs x keys x head_dim).
 * Raised from 8192: the cross- and self-attention of a batch-1 opus-mt-size decode step (16-32K)
 * now run on one thread, 0.47-0.62 -> 0.32-0.44 ms of attention per step (interleaved builds). */
#define PT_ATTN_PARALLEL_GRAIN 65536.0
/* The same with the worker team of pt_pool.h, whose spinning workers need no wake-up: measured
 * with it, a batch-1 opus-mt-size step's attention 0.30 -> 0.24 ms per step (8,192 vs 65,536;
 * profile, 2 threads, alternating builds). */
#define PT_ATTN_POOL_GRAIN 8192.0

int pt_attention_generic(const float *q, pt_strides qs, const float *k, pt_strides ks,
                         const float *v, pt_strides vs, float *out, pt_strides os,
                         const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                         int batch, int heads, int q_len, int kv_len, int head_dim,
                         int causal, int q_offset, float scale, float *scratch, int nthreads);
int pt_attention_avx2(const float *q, pt_strides qs, const float *k, pt_strides ks,
                      const float *v, pt_strides vs, float *out, pt_strides os,
                      const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                      int batch, int heads, int q_len, int kv_len, int head_dim,
                      int causal, int q_offset, float scale, float *scratch, int nthreads);

/* pt_attention_avx2 with its two inner kernels on AVX-512F (pt_attention_avx512.c): scores for
 * pairs and groups of four queries (each 8-lane dot-product chain in one half of a zmm) and the
 * four-query values pass 64 columns at a time. The same bits as pt_attention_avx2; single queries
 * (decode steps) keep the AVX2 score kernel. The batch-16 x 32-token encoder's self-attention
 * (8 heads of 64) 0.93 -> 0.73 ms per layer at 2 threads, 1.73 -> 1.46 at 1 (alternated calls).
 * PT_ERR_ISA when built without AVX-512. */
int pt_attention_avx512(const float *q, pt_strides qs, const float *k, pt_strides ks,
                        const float *v, pt_strides vs, float *out, pt_strides os,
                        const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                        int batch, int heads, int q_len, int kv_len, int head_dim,
                        int causal, int q_offset, float scale, float *scratch, int nthreads);

/* Internal, between pt_attention_avx2.c and pt_attention_avx512.c. Scores: S[i, s] = scale *
 * q_(i).k_s for i < nq (the AVX-512 one takes an even nq), s < nkeys rounded up to 8. Values:
 * out_j[d] = sum_{s<n} p_j[s] v_s[d] for four queries j, one FMA chain per element. */
/* The 8 keys s0 .. s0+7 a score kernel reads; past nkeys the last key again (in bounds, its score
 * lands in a padding column that is never read). */
static inline void pt_attn_key_rows(const float *kb, ptrdiff_t kseq, int s0, int nkeys, const float *kr[8]) {
    for (int j = 0; j < 8; j++) kr[j] = kb + (ptrdiff_t)(s0 + j < nkeys ? s0 + j : nkeys - 1) * kseq;
}
typedef void (*pt_attn_scores_fn)(const float *q0, ptrdiff_t qseq, int nq, const float *kb, ptrdiff_t kseq,
                                  int nkeys, int dh, float scale, float *S, ptrdiff_t ldS);
typedef void (*pt_attn_values4_fn)(const float *const p[4], int n, const float *vb, ptrdiff_t vseq, int dh,
                                   float *const o[4]);
void pt_attn_scores_avx512(const float *q0, ptrdiff_t qseq, int nq, const float *kb, ptrdiff_t kseq,
                           int nkeys, int dh, float scale, float *S, ptrdiff_t ldS);
void pt_attn_values4_avx512(const float *const p[4], int n, const float *vb, ptrdiff_t vseq, int dh,
                            float *const o[4]);

#endif
