/* pt_gemm_generic.c - B packing and the portable float32 GEMM (fallback and test oracle), plus argument checks and work split shared with the AVX2 path. */
#include "pt_gemm.h"
#include "pt_gemm_internal.h"
#include "pt_activation.h"
#include "pt_pool.h"

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

/* One GEMM's work split into chunks, for pt_pool_run. */
typedef struct {
    pt_gemm_region_fn region;
    const float *a, *bp, *bias, *residual;
    float *c;
    ptrdiff_t lda, ldr, ldc;
    int m, n, k, act, npanels, by_panels, unit, extent, units, chunks;
} gemm_job;

static void gemm_chunk(void *ctx, int ch) {
    const gemm_job *j = (const gemm_job *)ctx;
    int lo = (int)((long long)j->units * ch / j->chunks) * j->unit;
    int hi = (int)((long long)j->units * (ch + 1) / j->chunks) * j->unit;
    if (hi > j->extent) hi = j->extent;
    if (j->by_panels)
        j->region(j->a, j->lda, j->bp, j->bias, j->residual, j->ldr, j->c, j->ldc, 0, j->m, lo, hi, j->n, j->k, j->act);
    else
        j->region(j->a, j->lda, j->bp, j->bias, j->residual, j->ldr, j->c, j->ldc, lo, hi, 0, j->npanels, j->n, j->k,
                  j->act);
}

int pt_gemm_drive(pt_gemm_region_fn region, int row_unit, int panel_unit,
                  const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                  const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                  int m, int n, int k, int act, int nthreads) {
    int status = pt_gemm_check_args(a, lda, bp, residual, ldr, c, ldc, m, n, k, act, nthreads);
    if (status != PT_OK) return status;
    int npanels = (n + PT_NR - 1) / PT_NR;
    int team = pt_gemm_team_size(m, n, k, nthreads);
    if (team > 1) {
        /* Whole panels go to chunks when there are enough of them (decode steps have one row, and
         * each chunk then streams its own share of the weights); otherwise whole row tiles. k is
         * never split, so every output element is computed by exactly one thread with the same
         * arithmetic whatever the team size and whichever thread takes its chunk. */
        gemm_job j = {region, a, bp, bias, residual, c, lda, ldr, ldc, m, n, k, act, npanels, 0, 0, 0, 0, 0};
        int row_units = (m + row_unit - 1) / row_unit;
        j.by_panels = npanels >= 4 * team || row_units < 2 * team;
        j.unit = j.by_panels ? panel_unit : row_unit;
        j.extent = j.by_panels ? npanels : m;
        j.units = (j.extent + j.unit - 1) / j.unit;
        j.chunks = j.units < PT_GEMM_CHUNKS_PER_THREAD * team ? j.units : PT_GEMM_CHUNKS_PER_THREAD * team;
        /* The pool first (no sleeping thread to wake for each of a decode step's many short GEMMs);
         * OpenMP when the pool declines (another thread has it, not Linux, disabled). */
        if (pt_pool_run(gemm_chunk, &j, j.chunks, team)) return PT_OK;
#ifdef _OPENMP
        pt_pool_park();
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
        for (int ch = 0; ch < j.chunks; ch++) gemm_chunk(&j, ch);
        return PT_OK;
#else
        for (int ch = 0; ch < j.chunks; ch++) gemm_chunk(&j, ch);
        return PT_OK;
#endif
    }
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
