/* pt_screen.h - an 8-bit copy of a packed weight matrix and the exact integer dot products that
 * screen the output projection of greedy decoding (pytransformer/screen.py bounds the error of
 * the approximate logits and recomputes the few columns that could still be the argmax with the
 * float32 GEMM).
 *
 * Weights: column j is stored as integers q in [-127, 127] with a power-of-two scale s_j, so that
 * r = s_j q is a float32 value and w - r is exact in float32. A row x of the step is quantized
 * the same way to 14 bits (x' = s_x xq, |xq| <= 8191) and split into two 7-bit digits,
 * xq + 8192 = 128 hi + lo, so that every path (portable C, AVX2 pmaddubsw without saturation,
 * AVX-512 VNNI vpdpbusd) computes sum_k xq q_j exactly in integers: the approximate logit x' . r + b_j is the same on
 * every path, rounded once to float32. */
#ifndef PT_SCREEN_H
#define PT_SCREEN_H

#include "pt_common.h"
#include "pt_gemm.h"

/* k values per 32-bit lane of a panel group (one pmaddubsw + pmaddwd pair). */
#define PT_SCREEN_GROUP 4
/* Bytes of one panel group: 16 columns x 4 k values. */
#define PT_SCREEN_GROUP_BYTES (PT_NR * PT_SCREEN_GROUP)
/* The quantized row: |xq| <= PT_SCREEN_X_MAX, stored as xq + PT_SCREEN_X_OFFSET = 128 hi + lo. */
#define PT_SCREEN_X_MAX 8191
#define PT_SCREEN_X_OFFSET 8192
/* Weights' integer range and the clamp of their scale exponents (2^e stays a normal float32,
 * and so does its reciprocal). */
#define PT_SCREEN_Q_MAX 127
#define PT_SCREEN_EXP_MIN (-100)
#define PT_SCREEN_EXP_MAX 121

/* Groups of 4 k values of a (k, n) matrix, and the bytes of its 8-bit copy (panels x groups x 64;
 * 0 for a bad shape). */
int pt_screen_groups(int k);
size_t pt_screen_q_size(int k, int n);

/* The 8-bit copy of a packed matrix (pt_gemm.h's layout). Panel p (columns 16p..16p+15) holds
 * pt_screen_groups(k) groups of 64 bytes; byte jj * 4 + t of group g is q[4g + t][16p + jj]
 * (zero beyond k and n). For every column j < n:
 *     scale[j] = s_j = 2^e_j, e_j chosen so that the column's largest |w| / s_j lies in
 *                [64, 128) (clamped to [PT_SCREEN_EXP_MIN, PT_SCREEN_EXP_MAX]),
 *     q        = round(w / s_j) (nearest, ties to even), clamped to [-127, 127],
 *     qsum[j]  = sum_k q,
 * and upper bounds (within a factor 1 + ~k 2^-24 of the exact values) of
 *     sq_w[j] = sum_k w^2,   sq_d[j] = sum_k (w - s_j q)^2.
 * Non-finite weights (and weights whose square overflows float32) make the sums non-finite: the
 * caller then does not screen. Panels are independent: up to nthreads threads of the worker team
 * share them when it is free (never OpenMP: see pt_team_tasks), with the same results.
 * Returns PT_OK or PT_ERR_ARG. */
int pt_pack_i8_generic(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                       double *sq_w, double *sq_d, int nthreads);
/* The same, compiled for AVX2 (same bits; PT_ERR_ISA when not compiled in). */
int pt_pack_i8_avx2(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                    double *sq_w, double *sq_d, int nthreads);

/* What a screened argmax needs besides the row: the 8-bit copy q with its per-column scale and
 * qsum, the float32 packed matrix bp of the same (k, n) projection and its bias (or NULL); per
 * column err[j] (float64: the bound of |float32 logit - approximate logit| per unit of ||x||,
 * see pytransformer/screen.py), err_max = max err, w_norm_max >= every ||w_j|| and ||s_j q_j||,
 * bias_max = max |bias|, and the constants rel, slack and abs_err of the bound. */
typedef struct {
    const int8_t *q;
    const double *scale;
    const int32_t *qsum;
    const float *bp;
    const float *bias;
    const double *err;
    double err_max, w_norm_max, bias_max, rel, slack, abs_err;
    int n, k;
} pt_screen;

/* The approximate logits of one path: for rows i < m,
 *     g[i * n + j] = float32((sum_k xq_i q_j) * s_j * sx[i] + bias_j)
 * from the digits hi, lo (m rows of pt_screen_groups(k) uint32 words, each 4 digits in 0..127,
 * byte t for k value 4g + t). Exact up to that final rounding: every path gives the same bits. */
typedef int (*pt_screen_logits_fn)(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                                   const double *sx, int m, float *g, int nthreads);
int pt_screen_logits_generic(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                             const double *sx, int m, float *g, int nthreads);
int pt_screen_logits_avx2(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                          const double *sx, int m, float *g, int nthreads);
/* With AVX-512 VNNI (PT_ERR_ISA when not compiled in; the caller checks pt_cpu_has_avx512_vnni). */
int pt_screen_logits_vnni(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                          const double *sx, int m, float *g, int nthreads);

/* Quantize the m rows of x (row stride ldx) for the screen: digits into hi, lo (as above), the
 * scales sx[i] = 2^e, and for each row ||x|| and ||x - sx xq|| (float64, rounded to nearest: the
 * caller's slack covers the rounding). Returns 0 when a row is not finite. */
int pt_screen_quantize(const float *x, ptrdiff_t ldx, int m, int k, uint32_t *hi, uint32_t *lo,
                       double *sx, double *x_norm, double *e_norm);

/* The greedy token of each of m rows of x (row stride ldx): the first index j of the largest
 * float32 logit x_i . w_j + bias_j that `exact` computes, over the columns not marked in banned
 * (n bytes, or NULL). Approximate logits from `approx` go to g (m x n floats); digits is a
 * workspace of 2 m pt_screen_groups(k) words; the columns whose bounds reach the largest lower
 * bound (at most max_cand per row, row i's indices in cand[i * max_cand...]) are recomputed by
 * `exact`, one 16-column panel at a time (rows in parallel, each on one thread). Returns 1 with tokens[0..m) set, 0 when the caller must
 * compute the full logits instead (x not finite or so large that a logit could overflow, no
 * allowed column, more than max_cand candidates in a row), or a PT_ERR_* code negated. */
int pt_screen_argmax(const pt_screen *s, pt_screen_logits_fn approx, pt_gemm_packed_fn exact,
                     const float *x, ptrdiff_t ldx, int m, const uint8_t *banned, int max_cand,
                     int nthreads, uint32_t *digits, float *g, int32_t *cand, long long *tokens);

/* ---- shared by the paths (not public API) */

/* The most rows a greedy step screens (a batch of more sequences computes the full logits), by
 * the path's dot products: opus-mt-size projection (58,101 x 512), 2 threads, a 120 MB sweep
 * between calls, the screened argmax against the float32 GEMM + argmax measured
 *   VNNI: 2.8x faster at 1 row, 2.1x at 4, 1.5x at 8, 1.4x at 12, 1.3x at 16;
 *   AVX2: 2.2-2.3x at 4 rows, 1.5x at 8, 1.05-1.09x at 12, 1.05-1.13x at 16 (pmaddubsw is
 *   compute-bound once several rows share each weight). AVX2 was held to 4 rows when it measured
 *   1.0x at 8 and 0.8x at 16; remeasured after the AVX2 GEMM changes (two runs), and greedy
 *   decoding on the AVX2 path (32 tokens, alternated in one process) with up to 16 rows screened
 *   against up to 4: batch 8 0.84-0.88x the time, batch 16 0.97-0.99x, at 1 and 2 threads.
 *   The portable path keeps 4 (its integer and float loops were not compared). */
#define PT_SCREEN_MAX_ROWS 16
#define PT_SCREEN_MAX_ROWS_GENERIC 4
/* Rows of a at once in a tile kernel; more rows run in groups of this many, each group over a
 * chunk of panels that stays in L2, so the copy still comes from memory once. */
#define PT_SCREEN_TILE_ROWS 4
/* Groups per call of a tile kernel: its int32 lanes then cannot overflow (each group adds at
 * most 4 x 16383 x 127 in magnitude; 256 of them stay below 2^31). */
#define PT_SCREEN_BLOCK_GROUPS 256
/* Groups ahead that a tile kernel prefetches its panel's stream (a group is one 64-byte line). */
#define PT_SCREEN_PREFETCH_GROUPS 16
/* A tile kernel: for its own fixed rows r and the one panel at qp, groups [g0, g1) (at most
 * PT_SCREEN_BLOCK_GROUPS):
 *     tile[r * 16 + jj] = sum over those groups of (128 hi + lo) . q
 * hi/lo rows are ldg words apart. One panel at a time, so each thread reads one stream of the copy:
 * tiles over 2-4 panels side by side (rows 1-2 on AVX2, 1-4 with VNNI) took 1.03-1.16x the time of
 * greedy decoding on this project's AMD EPYC (Zen 4) machine at batches 1, 2, 4 and 16, 1 and 2
 * threads, as the GEMM's few-row products do (PT_GEMM512_STREAM_ROWS in pt_gemm_avx512.c). */
typedef void (*pt_screen_tile_fn)(const uint32_t *hi, const uint32_t *lo, int ldg, const int8_t *qp,
                                  int g0, int g1, int32_t *tile);
/* A path's tile kernels by number of rows (index 1..PT_SCREEN_TILE_ROWS). */
typedef struct {
    pt_screen_tile_fn rows[PT_SCREEN_TILE_ROWS + 1];
} pt_screen_tiles;
/* The body of every pt_screen_logits_*: checks the arguments, splits the panels into chunks over
 * the threads and runs the path's tiles over each chunk; scales, adds the bias, rounds. */
int pt_screen_drive(const pt_screen_tiles *tiles, const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                    const double *sx, int m, float *g, int nthreads);

#endif
