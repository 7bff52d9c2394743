/* pt_screen.h - a bfloat16 copy of a packed weight matrix and the approximate GEMM over it that
 * screens the output projection of greedy decoding (pytransformer/screen.py bounds its error and
 * recomputes the few columns that could still be the argmax with the exact float32 GEMM). */
#ifndef PT_SCREEN_H
#define PT_SCREEN_H

#include "pt_common.h"
#include "pt_gemm.h"

/* Round each of the pt_packed_b_size(k, n) floats of a packed matrix to bfloat16 (nearest, ties to
 * even; the high 16 bits of the float32 that results), keeping the panel layout, and for every
 * column j < n return upper bounds (within a factor 1 + ~k 2^-24 of the exact values) of
 *     sq_w[j] = sum_kk w^2,   sq_d[j] = sum_kk (w - r)^2     (r = the bf16 value)
 * from which the caller bounds the error of a dot product with the copy. Non-finite values (and
 * values whose square overflows float32) make the sums non-finite: the caller then does not
 * screen. Returns PT_OK or PT_ERR_ARG. */
int pt_pack_bf16_generic(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d);
/* The same, compiled for AVX2 (same bits; PT_ERR_ISA when not compiled in). */
int pt_pack_bf16_avx2(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d);

/* c[i, j] = sum_kk a[i, kk] * R[kk, j] + bias[j] in float32, R the bf16 copy (same layout as
 * pt_gemm.h's packed B). An approximation: the order of the sum is unspecified and differs
 * between paths; only the bound |error| <= gamma_k * sum |a| |R| of any float32 dot product is
 * relied upon. a: (m, k) row stride lda; bias (n,) or NULL; c: (m, n) row stride ldc. */
int pt_gemm_bf16_generic(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                         float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads);
int pt_gemm_bf16_avx2(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                      float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads);
int pt_gemm_bf16_avx512(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                        float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads);

/* The screening GEMM of one path (pt_gemm_bf16_generic / _avx2 / _avx512). */
typedef int (*pt_gemm_bf16_fn)(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                               float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads);

/* What pt_screen_argmax needs besides the row: the bf16 copy rp and the float32 packed matrix bp of
 * the same (k, n) projection, its bias (or NULL), per column err[j] (float64: the bound of
 * |float32 - bf16 dot product| per unit of ||x||), err_max = max err, w_norm_max >= every ||w_j||
 * and ||r_j||, bias_max = max |bias|, and rel / abs_err of the bound (see pytransformer/screen.py). */
typedef struct {
    const uint16_t *rp;
    const float *bp;
    const float *bias;
    const double *err;
    double err_max, w_norm_max, bias_max, rel, abs_err;
    int n, k;
} pt_screen;

/* The greedy token of each of m rows of x (row stride ldx): the first index j of the largest
 * float32 logit x_i . w_j + bias_j that `exact` computes, over the columns not marked in banned
 * (n bytes, or NULL). Approximate logits from `approx` go to g (m x n floats); the columns whose
 * bounds reach the largest lower bound (at most max_cand per row, indices in cand) are recomputed
 * by `exact`, one 16-column panel at a time, single-threaded. Returns 1 with tokens[0..m) set, 0
 * when the caller must compute the full logits instead (x not finite or so large that a logit
 * could overflow, no allowed column, more than max_cand candidates in a row), or a PT_ERR_* code
 * negated. */
int pt_screen_argmax(const pt_screen *s, pt_gemm_bf16_fn approx, pt_gemm_packed_fn exact,
                     const float *x, ptrdiff_t ldx, int m, const uint8_t *banned, int max_cand,
                     int nthreads, float *g, int32_t *cand, long long *tokens);

/* ---- shared by the three paths (not public API) */

/* Rows of a at once (the tallest tile any path uses), and the most rows a greedy step screens:
 * greedy decoding of the opus-mt-size model, 64 steps, 2 threads, screen vs float32 projection
 * measured 1.23x faster at batch 1, 1.17x at 4, level at 8, 0.94x at 16 (the float32 GEMM then
 * reads each weight once for many rows and is compute-bound). */
#define PT_SCREEN_MAX_ROWS 4
/* Panels of the widest tile any path uses. */
#define PT_SCREEN_MAX_NP 8
/* A tile kernel: tile[r * np * PT_NR + q * PT_NR + jj] = sum_kk a[r * lda + kk] * R[kk, panel q col jj]
 * for its own fixed rows and np panels starting at rp (panels pstride values apart). */
typedef void (*pt_screen_tile_fn)(const float *a, ptrdiff_t lda, const uint16_t *rp, size_t pstride, int k,
                                  float *tile);
/* A path's tile kernels by number of rows (index 1..PT_SCREEN_MAX_ROWS): the widest, taking
 * wide_np[rows] panels, and the one-panel kernel for what is left. */
typedef struct {
    pt_screen_tile_fn wide[PT_SCREEN_MAX_ROWS + 1];
    pt_screen_tile_fn one[PT_SCREEN_MAX_ROWS + 1];
    int wide_np[PT_SCREEN_MAX_ROWS + 1];
} pt_screen_tiles;
/* The body of every pt_gemm_bf16_*: checks the arguments, splits the panels into chunks over the
 * threads and runs the path's tiles over each chunk, a group of rows at a time; adds the bias. */
int pt_screen_drive(const pt_screen_tiles *tiles, const float *a, ptrdiff_t lda, const uint16_t *rp,
                    const float *bias, float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads);

static inline float pt_bf16_to_float(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

#endif
