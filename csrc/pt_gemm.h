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
/* ---- cache blocking
 * The block sizes of the AVX2 and AVX-512 paths (B bytes kept in L2 per row-tile sweep, B bytes per
 * parallel chunk) were measured best on a core with a 2 MiB L2. On a core with a smaller L2 they
 * shrink in proportion to it, so that a block still fits (a 512 KiB L2, as on many AMD EPYC cores,
 * gets a quarter of each); a larger or unknown L2 keeps them. k is never blocked, so the block sizes
 * change the order in which outputs are computed, never their bits. */
#define PT_GEMM_TUNED_L2_BYTES ((size_t)2 << 20)
/* Accepted range of an L2 size (bytes); a detected value outside it counts as unknown. */
#define PT_GEMM_MIN_L2_BYTES ((size_t)16 << 10)
#define PT_GEMM_MAX_L2_BYTES ((size_t)1 << 30)
/* The L2 size the blocks are fitted to: the one set by pt_gemm_set_l2_bytes, else the detected one
 * (pt_cpu_l2_bytes), else 0 (unknown). */
size_t pt_gemm_l2_bytes(void);
/* Fit the blocks to an L2 of `bytes` (within the accepted range; 0 returns to the detected size):
 * for tests and for machines that report their cache wrongly. PT_OK or PT_ERR_ARG. Takes effect
 * for the GEMMs that start afterwards. */
int pt_gemm_set_l2_bytes(size_t bytes);
/* A block size measured best with a PT_GEMM_TUNED_L2_BYTES L2, fitted to pt_gemm_l2_bytes(). */
size_t pt_gemm_fit_l2(size_t tuned_bytes);

/* Any of the three, as chosen at run time. */
typedef int (*pt_gemm_packed_fn)(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                                 const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                                 int m, int n, int k, int act, int nthreads);

#endif
