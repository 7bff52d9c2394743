/* pt_gemm_generic.c - B packing and the portable float32 GEMM (fallback and test oracle), plus argument checks and work split shared with the AVX2 path. */
#include "pt_gemm.h"
#include "pt_gemm_internal.h"
#include "pt_activation.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PT_GEMM_GRAIN ((double)(1 << 18))

/* Rows per generic register tile; 4 x 16 floats of accumulators is what SSE2 can hold. */
#define PT_GEMM_GENERIC_MR 4

/* ---- helpers shared with pt_gemm_avx2.c (declared in pt_gemm_internal.h) */

/* Checks the arguments of pt_gemm_packed_*; PT_OK or PT_ERR_ARG. */
int pt_gemm_check_args(const float *a, ptrdiff_t lda, const float *bp, const float *residual, ptrdiff_t ldr,
                       const float *c, ptrdiff_t ldc, int m, int n, int k, int act, int nthreads) {
    if (a == NULL || bp == NULL || c == NULL) return PT_ERR_ARG;
    if (m < 1 || n < 1 || k < 1 || nthreads < 1) return PT_ERR_ARG;
    if (lda < k || ldc < n) return PT_ERR_ARG;
    if (residual != NULL && ldr < n) return PT_ERR_ARG;
    if (act < 0 || act >= PT_ACT_COUNT) return PT_ERR_ARG;
    return PT_OK;
}

/* Number of threads worth starting for an (m, n, k) product: 1 below the grain size. */
int pt_gemm_team_size(int m, int n, int k, int nthreads) {
    if (nthreads <= 1 || (double)m * n * k < PT_GEMM_GRAIN) return 1;
    return nthreads;
}

/* Chunks per thread of a parallel GEMM. Threads take chunks as they finish the previous one, so a
 * thread slowed down by another process (these machines are shared) or by a narrower edge tile
 * does not hold the whole product back. A chunk is still a large block: the region's cache
 * blocking works inside it. */
#define PT_GEMM_CHUNKS_PER_THREAD 2

int pt_gemm_drive(pt_gemm_region_fn region, int row_unit, int panel_unit,
                  const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                  const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                  int m, int n, int k, int act, int nthreads) {
    int status = pt_gemm_check_args(a, lda, bp, residual, ldr, c, ldc, m, n, k, act, nthreads);
    if (status != PT_OK) return status;
    int npanels = (n + PT_NR - 1) / PT_NR;
    int team = pt_gemm_team_size(m, n, k, nthreads);
#ifdef _OPENMP
    if (team > 1) {
        /* Whole panels go to chunks when there are enough of them (decode steps have one row, and
         * each chunk then streams its own share of the weights); otherwise whole row tiles. k is
         * never split, so every output element is computed by exactly one thread with the same
         * arithmetic whatever the team size and whichever thread takes its chunk. */
        int row_units = (m + row_unit - 1) / row_unit;
        int by_panels = npanels >= 4 * team || row_units < 2 * team;
        int unit = by_panels ? panel_unit : row_unit;
        int extent = by_panels ? npanels : m;
        int units = (extent + unit - 1) / unit;
        int chunks = units < PT_GEMM_CHUNKS_PER_THREAD * team ? units : PT_GEMM_CHUNKS_PER_THREAD * team;
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
        for (int ch = 0; ch < chunks; ch++) {
            int lo = (int)((long long)units * ch / chunks) * unit;
            int hi = (int)((long long)units * (ch + 1) / chunks) * unit;
            if (hi > extent) hi = extent;
            if (by_panels)
                region(a, lda, bp, bias, residual, ldr, c, ldc, 0, m, lo, hi, n, k, act);
            else
                region(a, lda, bp, bias, residual, ldr, c, ldc, lo, hi, 0, npanels, n, k, act);
        }
        return PT_OK;
    }
#endif
    (void)team;
    region(a, lda, bp, bias, residual, ldr, c, ldc, 0, m, 0, npanels, n, k, act);
    return PT_OK;
}

// ---- packing

size_t pt_packed_b_size(int k, int n) {
    if (k < 1 || n < 1) return 0;
    return (size_t)((n + PT_NR - 1) / PT_NR) * (size_t)k * PT_NR;
}

int pt_pack_b(const float *b, ptrdiff_t rs, ptrdiff_t cs, int k, int n, float *packed) {
    if (b == NULL || packed == NULL || k < 1 || n < 1) return PT_ERR_ARG;
    int npanels = (n + PT_NR - 1) / PT_NR;
    for (int p = 0; p < npanels; p++) {
        float *dst = packed + (size_t)p * k * PT_NR;
        int j0 = p * PT_NR;
        int nvalid = n - j0 < PT_NR ? n - j0 : PT_NR;
        for (int kk = 0; kk < k; kk++) {
            const float *src = b + (ptrdiff_t)kk * rs + (ptrdiff_t)j0 * cs;
            float *row = dst + (size_t)kk * PT_NR;
            int jj = 0;
            for (; jj < nvalid; jj++) row[jj] = src[(ptrdiff_t)jj * cs];
            /* Zero padding keeps the edge panel's extra columns finite, so the kernel can
             * compute full panels and simply not store them. */
            for (; jj < PT_NR; jj++) row[jj] = 0.0f;
        }
    }
    return PT_OK;
}

// ---- portable GEMM

/* Bias, activation and residual on one 16-wide tile row, then store the ncols valid columns.
 * The activation always sees all 16 values so every column gets the same treatment. */
static void epilogue_row_generic(float *vals, const float *bias, const float *res, float *out, int ncols, int act) {
    if (bias != NULL)
        for (int j = 0; j < ncols; j++) vals[j] = vals[j] + bias[j];
    if (act != PT_ACT_NONE) pt_activation_inplace_generic(vals, PT_NR, act);
    if (res != NULL)
        for (int j = 0; j < ncols; j++) vals[j] = vals[j] + res[j];
    for (int j = 0; j < ncols; j++) out[j] = vals[j];
}

/* One PT_GEMM_GENERIC_MR x PT_NR tile: rows i0.. of a (clamped to the last valid row, whose
 * duplicate results are discarded) times panel p. Separate multiply and add, k ascending. */
static void tile_generic(const float *a, ptrdiff_t lda, const float *panel, const float *bias,
                         const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                         int i0, int rows, int j0, int ncols, int k, int act) {
    const float *arow[PT_GEMM_GENERIC_MR];
    float acc[PT_GEMM_GENERIC_MR][PT_NR];
    for (int r = 0; r < PT_GEMM_GENERIC_MR; r++) {
        arow[r] = a + (ptrdiff_t)(i0 + (r < rows ? r : rows - 1)) * lda;
        for (int j = 0; j < PT_NR; j++) acc[r][j] = 0.0f;
    }
    for (int kk = 0; kk < k; kk++) {
        const float *brow = panel + (size_t)kk * PT_NR;
        for (int r = 0; r < PT_GEMM_GENERIC_MR; r++) {
            float av = arow[r][kk];
            for (int j = 0; j < PT_NR; j++) acc[r][j] = acc[r][j] + av * brow[j];
        }
    }
    for (int r = 0; r < rows; r++) {
        ptrdiff_t i = i0 + r;
        epilogue_row_generic(acc[r], bias != NULL ? bias + j0 : NULL,
                             residual != NULL ? residual + i * ldr + j0 : NULL, c + i * ldc + j0, ncols, act);
    }
}

static void region_generic(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                           const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                           int r0, int r1, int p0, int p1, int n, int k, int act) {
    for (int p = p0; p < p1; p++) {
        const float *panel = bp + (size_t)p * k * PT_NR;
        int j0 = p * PT_NR;
        int ncols = n - j0 < PT_NR ? n - j0 : PT_NR;
        for (int i = r0; i < r1; i += PT_GEMM_GENERIC_MR) {
            int rows = r1 - i < PT_GEMM_GENERIC_MR ? r1 - i : PT_GEMM_GENERIC_MR;
            tile_generic(a, lda, panel, bias, residual, ldr, c, ldc, i, rows, j0, ncols, k, act);
        }
    }
}

int pt_gemm_packed_generic(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                           const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                           int m, int n, int k, int act, int nthreads) {
    return pt_gemm_drive(region_generic, PT_GEMM_GENERIC_MR, 1, a, lda, bp, bias, residual, ldr, c, ldc,
                         m, n, k, act, nthreads);
}
