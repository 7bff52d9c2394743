/* pt_gemm_internal.h - argument checks, work split and the threaded driver shared by every GEMM path (not public API). */
#ifndef PT_GEMM_INTERNAL_H
#define PT_GEMM_INTERNAL_H

#include "pt_gemm.h"

/* Checks the arguments of pt_gemm_packed_*; PT_OK or PT_ERR_ARG. */
int pt_gemm_check_args(const float *a, ptrdiff_t lda, const float *bp, const float *residual, ptrdiff_t ldr,
                       const float *c, ptrdiff_t ldc, int m, int n, int k, int act, int nthreads);
/* Number of threads worth starting for an (m, n, k) product: 1 below the grain size. */
int pt_gemm_team_size(int m, int n, int k, int nthreads);
/* One path's computation of output rows [r0, r1) x panels [p0, p1) on the calling thread. */
typedef void (*pt_gemm_region_fn)(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                                  const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                                  int r0, int r1, int p0, int p1, int n, int k, int act);

/* The body of every pt_gemm_packed_*: checks the arguments, then runs `region` over the whole
 * output, on the calling thread below the grain size, else on a team of threads that take chunks
 * of it dynamically. Chunk edges fall on whole row tiles (row_unit rows, the micro-kernel height)
 * and on whole groups of panel_unit panels (the widest decode kernel) when a chunk spans all rows,
 * or of tile_panels panels (the main multi-row kernel's width) when it is a block of rows.
 * Products of at most stream_rows rows, which the region reads one panel at a time, are cut on
 * single panels into chunks of decreasing size instead (0: never). */
int pt_gemm_drive(pt_gemm_region_fn region, int row_unit, int panel_unit, int tile_panels, int stream_rows,
                  const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                  const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                  int m, int n, int k, int act, int nthreads);

/* The epilogue of one row of a GEMM tile, shared by the AVX2 and AVX-512 paths (defined in
 * pt_gemm_avx2.c): vals holds np panels x 16 accumulated values for output columns j0...; adds
 * the bias, runs the activation over the whole row (many independent vectors in flight), adds
 * the residual and stores the columns below n. res is read before out is written, so it may
 * alias out. Every value gets the same operations wherever its column is. */
void pt_gemm_epilogue_avx2(float *vals, const float *bias, const float *res, float *out, int j0, int np, int n,
                           int act);

/* Before a tile's k loop: asks for the lines of its output rows (and of its residual rows, when
 * there is a residual) into L2, rows [i, i + rows) x the np panels' columns from j0 that lie below n
 * (as the epilogue stores them), so that the epilogue reading the residual and storing the results,
 * a k loop later, finds them there instead of waiting on memory. Prefetches only: no effect on any
 * value. Defined in pt_gemm_avx2.c, used by the AVX2 and AVX-512 paths. */
void pt_gemm_prefetch_out(const float *residual, ptrdiff_t ldr, const float *c, ptrdiff_t ldc, int i, int rows,
                          int j0, int np, int n);

#endif
