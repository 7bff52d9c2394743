/* pt_attention_generic.c - portable multi-head scaled dot-product attention, and the shared scratch-size rule. */
#include "pt_attention.h"
#include "pt_softmax.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Scratch contract shared by every ISA path: each thread owns a slice of
 * PT_ATTN_QUERY_BLOCK rows of scores, each row padded to a multiple of 16 floats. The portable path
 * uses one row of its slice; the AVX2 path blocks that many queries so K is reused from L1. */
#define PT_ATTN_QUERY_BLOCK 16
#define PT_ATTN_ROW_ALIGN 16

size_t pt_attention_scratch_size(int kv_len, int nthreads) {
    size_t row = (size_t)(kv_len < 1 ? 1 : kv_len);
    row = (row + PT_ATTN_ROW_ALIGN - 1) / PT_ATTN_ROW_ALIGN * PT_ATTN_ROW_ALIGN;
    return (size_t)(nthreads < 1 ? 1 : nthreads) * PT_ATTN_QUERY_BLOCK * row;
}

/* Number of keys query t may see: s < kv_valid and, when causal, s <= q_offset + t. */
static inline int visible_keys(int kv_valid, int causal, int q_offset, int t) {
    if (!causal) return kv_valid;
    long long lim = (long long)q_offset + t + 1;
    if (lim < 0) lim = 0;
    return lim < kv_valid ? (int)lim : kv_valid;
}

// q: (batch, q_len, heads, head_dim) strides qs; k, v: (batch, kv_len, heads, head_dim) strides ks, vs;
// out: (batch, q_len, heads, head_dim) strides os; bias: (heads, q_len, kv_len) strides bias_strides or NULL
int pt_attention_generic(const float *q, pt_strides qs, const float *k, pt_strides ks,
                         const float *v, pt_strides vs, float *out, pt_strides os,
                         const int32_t *kv_lengths, const float *bias, const ptrdiff_t *bias_strides,
                         int batch, int heads, int q_len, int kv_len, int head_dim,
                         int causal, int q_offset, float scale, float *scratch, int nthreads) {
    if (!q || !k || !v || !out || !scratch || (bias && !bias_strides) || batch <= 0 || heads <= 0 ||
        q_len <= 0 || kv_len <= 0 || head_dim <= 0)
        return PT_ERR_ARG;
    const size_t slice = pt_attention_scratch_size(kv_len, 1);
    const int pairs = batch * heads;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nt > pairs) nt = pairs;
    if ((double)pairs * (q_len > 1 ? q_len : 1) * kv_len * head_dim < PT_ATTN_PARALLEL_GRAIN) nt = 1;
    PT_PARALLEL_FOR(nt, pair, pairs,
        const int b = pair / heads, h = pair % heads;
        float *scores = scratch + (size_t)pt_thread_id() * slice;
        int kv_valid = kv_lengths ? kv_lengths[b] : kv_len;
        if (kv_valid > kv_len) kv_valid = kv_len;
        if (kv_valid < 0) kv_valid = 0;
        const float *kb = k + b * ks.batch + h * ks.head;
        const float *vb = v + b * vs.batch + h * vs.head;
        for (int t = 0; t < q_len; t++) {
            const float *qt = q + b * qs.batch + t * qs.seq + h * qs.head;
            float *ot = out + b * os.batch + t * os.seq + h * os.head;
            const int n = visible_keys(kv_valid, causal, q_offset, t);
            if (n == 0) {
                for (int d = 0; d < head_dim; d++) ot[d] = 0.0f;
                continue;
            }
            const float *bt = bias ? bias + h * bias_strides[0] + t * bias_strides[1] : NULL;
            for (int s = 0; s < n; s++) {
                const float *kr = kb + s * ks.seq;
                float dot = 0.0f;
                for (int d = 0; d < head_dim; d++) dot += qt[d] * kr[d];
                scores[s] = dot * scale;
                if (bt) scores[s] += bt[s * bias_strides[2]];
            }
            /* one softmax for the whole library: a fully -inf row comes back as zeros */
            pt_softmax_generic(scores, 0, scores, 0, 1, n, NULL, 1);
            /* out is cleared only now that q_t has been read: out may be the same memory as q */
            for (int d = 0; d < head_dim; d++) ot[d] = 0.0f;
            for (int s = 0; s < n; s++) {
                const float p = scores[s];
                const float *vr = vb + s * vs.seq;
                for (int d = 0; d < head_dim; d++) ot[d] += p * vr[d];
            }
        }
    );
    (void)nt; (void)slice;
    return PT_OK;
}
