/* pt_gemm.h - float32 GEMM on pre-packed weight panels, with fused bias, activation and residual. */
#ifndef PT_GEMM_H
#define PT_GEMM_H

#include "pt_common.h"

/* ---- packed B layout (identical for every ISA path)
 * B is a logical (k, n) matrix. It is stored as ceil(n / PT_NR) panels of PT_NR columns;
 * panel p holds columns [p*PT_NR, p*PT_NR + PT_NR), row-major over k, zero-padded past n:
 *     packed[(size_t)p * k * PT_NR + kk * PT_NR + jj] = B[kk, p*PT_NR + jj]
 * so the micro-kernel streams one contiguous panel per PT_NR output columns.
 */

/* Number of floats pt_pack_b writes for a (k, n) matrix. */
size_t pt_packed_b_size(int k, int n);

/* Pack B element (kk, j) = b[kk * rs + j * cs] (strides in elements, may be any sign/size).
 * A Linear weight W stored (n_out, k_in) row-major is B = W^T: rs = 1, cs = k_in.
 * packed: pt_packed_b_size(k, n) floats. Returns PT_OK or PT_ERR_ARG. */
int pt_pack_b(const float *b, ptrdiff_t rs, ptrdiff_t cs, int k, int n, float *packed);
/* pt_pack_b on up to nthreads threads of the worker team when it is free (never OpenMP, so that a
 * process forked after loading keeps its threads), else on the calling thread; the same result. */
int pt_pack_b_mt(const float *b, ptrdiff_t rs, ptrdiff_t cs, int k, int n, float *packed, int nthreads);

/* Read back element (kk, j) of a packed matrix (used to gather embedding rows from a packed tied table). */
static inline float pt_packed_get(const float *packed, int k, int kk, int j) {
    return packed[(size_t)(j / PT_NR) * k * PT_NR + (size_t)kk * PT_NR + (j % PT_NR)];
}

/* c[i, j] = act( sum_k a[i, kk] * B[kk, j] + bias[j] ) + residual[i, j]
 * a:        (m, k), row stride lda, unit column stride
 * bp:       packed B (k, n) from pt_pack_b
 * bias:     (n,) or NULL
 * residual: (m, n), row stride ldr, or NULL; may be the same memory as c (ldr == ldc)
 * c:        (m, n), row stride ldc
 * act:      PT_ACT_*
 * nthreads: OpenMP threads to use (1 = serial); work is split over rows/columns, never over k.
 *
 * Determinism contract: every c[i, j] is computed by the same sequence of float operations
 * whatever m, the position of row i, the thread count or the code path (skinny or blocked):
 * a single accumulator, 0 + a[i,0]*B[0,j] + a[i,1]*B[1,j] + ... in increasing kk order
 * (fused multiply-add on the AVX2 path, separate multiply and add on the generic path),
 * then + bias, then the activation, then + residual. This is what makes a sequence decode to
 * the same bits alone or inside a padded batch.
 */
int pt_gemm_packed_generic(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                           const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                           int m, int n, int k, int act, int nthreads);
int pt_gemm_packed_avx2(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                        const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                        int m, int n, int k, int act, int nthreads);
/* AVX-512F micro-kernels; the same per-element operation sequence (FMA, k ascending) as the AVX2
 * path, so the two give bitwise identical results. */
int pt_gemm_packed_avx512(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                          const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                          int m, int n, int k, int act, int nthreads);
/* Any of the three, as chosen at run time. */
typedef int (*pt_gemm_packed_fn)(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                                 const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                                 int m, int n, int k, int act, int nthreads);

#endif
