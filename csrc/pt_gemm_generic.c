/* pt_gemm_generic.c - B packing and the portable float32 GEMM (fallback and test oracle), plus argument checks and work split shared with the AVX2 path. */
#include "pt_gemm.h"
#include "pt_gemm_internal.h"
#include "pt_activation.h"
#include "pt_common.h"   /* pt_parallel_tasks */
#include "pt_cpu.h"      /* pt_cpu_l2_bytes */

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

/* ---- the L2 size the blocks are fitted to (pt_gemm.h) */

/* Set by pt_gemm_set_l2_bytes (0: none); the detected size, looked up once (-1: not yet). Plain
 * word-sized loads and stores: a racing first lookup stores the same value twice. */
static volatile size_t l2_override = 0;
static volatile long l2_detected = -1;

size_t pt_gemm_l2_bytes(void) {
    size_t set = l2_override;
    if (set != 0) return set;
    long d = l2_detected;
    if (d < 0) {
        long v = pt_cpu_l2_bytes();
        d = (v >= (long)PT_GEMM_MIN_L2_BYTES && (size_t)v <= PT_GEMM_MAX_L2_BYTES) ? v : 0;
        l2_detected = d;
    }
    return (size_t)d;
}

int pt_gemm_set_l2_bytes(size_t bytes) {
    if (bytes != 0 && (bytes < PT_GEMM_MIN_L2_BYTES || bytes > PT_GEMM_MAX_L2_BYTES)) return PT_ERR_ARG;
    l2_override = bytes;
    return PT_OK;
}

size_t pt_gemm_fit_l2(size_t tuned_bytes) {
    size_t l2 = pt_gemm_l2_bytes();
    if (l2 == 0 || l2 >= PT_GEMM_TUNED_L2_BYTES) return tuned_bytes;
    return (size_t)((double)tuned_bytes * (double)l2 / (double)PT_GEMM_TUNED_L2_BYTES);
}

/* How a parallel GEMM is cut into chunks. Threads take chunks as they finish the previous one, so a
 * thread slowed down by another process (these machines are shared) or by a narrower edge tile
 * does not hold the whole product back; the region's cache blocking works inside a chunk.
 *
 * Many rows (an encoder: batch x source length): blocks of PT_GEMM_BLOCK_ROWS rows x the panels of
 * PT_GEMM_BLOCK_B_BYTES of packed B, so each chunk's A rows and B panels stay in the core's L2 and
 * there are dozens of chunks to share out. On the 512 x {512, 1536, 2048} x {512, 2048} GEMMs of a
 * batch-16 encoder this was 1.04-1.13x faster over the whole encoder than the earlier 4 chunks of
 * whole panel groups (alternated in one process, 2 threads; 128 rows x 384 KiB the best of 64/128
 * rows x 256/384/768 KiB, the others within noise of it). With a smaller L2 the B bytes shrink in
 * proportion (pt_gemm_fit_l2).
 * Few rows (decode steps, short batches): PT_GEMM_CHUNKS_PER_THREAD chunks of whole panel groups
 * (each thread streams its own share of the weights once) or, with few panels, of row tiles.
 * Products the region streams one panel at a time (at most stream_rows rows: batch-1 decoding) are
 * bound by memory, and with equal chunks a thread that finished first waited for the other's last
 * chunk (the caller waited 0.12-0.38 ms of a 4.5-5 ms batch-1 step, ~10 us per wait). There the
 * first chunks, one per thread, take PT_GEMM_GUIDED_FIRST_PCT percent of the panels and the rest
 * go in chunks of a PT_GEMM_GUIDED_TAIL_PER_THREAD-th of a thread's share of it, so the last chunk
 * to finish is short. Greedy decoding of the opus-mt-size model, alternated in one process (2
 * threads, AMD EPYC Zen 4): batch 1 0.98x the time in both of its memory regimes, batches 2 and 4
 * 0.97-0.99x; 60-90 percent and 2-8 tail chunks per thread all measured 0.98-0.99x. */
#define PT_GEMM_CHUNKS_PER_THREAD 2
#define PT_GEMM_BLOCK_ROWS 128
#define PT_GEMM_BLOCK_B_BYTES ((size_t)384 << 10)
#define PT_GEMM_GUIDED_FIRST_PCT 75
#define PT_GEMM_GUIDED_TAIL_PER_THREAD 4
#define PT_GEMM_GUIDED_MAX_CHUNKS 64

/* One GEMM's work cut into blocks of rblock rows x pblock panels, numbered row block fastest (so
 * consecutive chunks share their B panels), for pt_parallel_tasks. */
typedef struct {
    pt_gemm_region_fn region;
    const float *a, *bp, *bias, *residual;
    float *c;
    ptrdiff_t lda, ldr, ldc;
    int m, n, k, act, npanels;
    int rblock, pblock, row_blocks, chunks;
    int guided;                                      /* chunk ch: panels [bounds[ch], bounds[ch + 1]), all rows */
    int bounds[PT_GEMM_GUIDED_MAX_CHUNKS + 1];
} gemm_job;

static void gemm_chunk(void *ctx, int ch) {
    const gemm_job *j = (const gemm_job *)ctx;
    if (j->guided) {
        j->region(j->a, j->lda, j->bp, j->bias, j->residual, j->ldr, j->c, j->ldc, 0, j->m, j->bounds[ch],
                  j->bounds[ch + 1], j->n, j->k, j->act);
        return;
    }
    int r0 = (ch % j->row_blocks) * j->rblock, p0 = (ch / j->row_blocks) * j->pblock;
    int r1 = j->m - r0 < j->rblock ? j->m : r0 + j->rblock;
    int p1 = j->npanels - p0 < j->pblock ? j->npanels : p0 + j->pblock;
    j->region(j->a, j->lda, j->bp, j->bias, j->residual, j->ldr, j->c, j->ldc, r0, r1, p0, p1, j->n, j->k, j->act);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* The decreasing chunks of a streamed product (see above) in j->bounds; 0 when the panels are too
 * few (or the team too large) for them. */
static int gemm_split_guided(gemm_job *j, int team) {
    int first = j->npanels * PT_GEMM_GUIDED_FIRST_PCT / 100 / team;
    if (first < 1 || team + PT_GEMM_GUIDED_TAIL_PER_THREAD * team > PT_GEMM_GUIDED_MAX_CHUNKS) return 0;
    int rest = j->npanels - first * team;
    int tail = rest > 0 ? ceil_div(rest, PT_GEMM_GUIDED_TAIL_PER_THREAD * team) : 1;
    int c = 0, p = 0;
    for (int t = 0; t < team; t++, p += first) j->bounds[c++] = p;
    for (; p < j->npanels; p += tail) j->bounds[c++] = p;       /* at most TAIL_PER_THREAD * team */
    j->bounds[c] = j->npanels;
    j->chunks = c;
    j->row_blocks = 1;
    j->rblock = j->m;
    return 1;
}

/* Sets j's block sizes and chunk count for a team of `team` threads (see above). */
static void gemm_split(gemm_job *j, int row_unit, int panel_unit, int tile_panels, int stream_rows, int team) {
    j->guided = j->m <= stream_rows && j->npanels >= 4 * team && gemm_split_guided(j, team);
    if (j->guided) return;
    int row_units = ceil_div(j->m, row_unit);
    if (row_units >= 2 * team && j->m > PT_GEMM_BLOCK_ROWS) {
        j->rblock = ceil_div(PT_GEMM_BLOCK_ROWS, row_unit) * row_unit;
        size_t fit = pt_gemm_fit_l2(PT_GEMM_BLOCK_B_BYTES) / ((size_t)j->k * PT_NR * sizeof(float));
        /* a whole number of the main micro-kernel's panel groups, at least one */
        int pb = fit < (size_t)tile_panels ? tile_panels : (int)(fit - fit % (size_t)tile_panels);
        j->pblock = pb < j->npanels ? pb : j->npanels;
    } else if (j->npanels >= 4 * team || row_units < 2 * team) {
        int units = ceil_div(j->npanels, panel_unit);
        int chunks = units < PT_GEMM_CHUNKS_PER_THREAD * team ? units : PT_GEMM_CHUNKS_PER_THREAD * team;
        j->rblock = j->m;
        j->pblock = ceil_div(units, chunks) * panel_unit;
    } else {
        int chunks = row_units < PT_GEMM_CHUNKS_PER_THREAD * team ? row_units : PT_GEMM_CHUNKS_PER_THREAD * team;
        j->rblock = ceil_div(row_units, chunks) * row_unit;
        j->pblock = j->npanels;
    }
    j->row_blocks = ceil_div(j->m, j->rblock);
    j->chunks = j->row_blocks * ceil_div(j->npanels, j->pblock);
}

int pt_gemm_drive(pt_gemm_region_fn region, int row_unit, int panel_unit, int tile_panels, int stream_rows,
                  const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                  const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                  int m, int n, int k, int act, int nthreads) {
    int status = pt_gemm_check_args(a, lda, bp, residual, ldr, c, ldc, m, n, k, act, nthreads);
    if (status != PT_OK) return status;
    int npanels = (n + PT_NR - 1) / PT_NR;
    int team = pt_gemm_team_size(m, n, k, nthreads);
    if (team > 1) {
        /* k is never split, so every output element is computed by exactly one thread with the
         * same arithmetic whatever the team size and whichever thread takes its chunk. */
        gemm_job j = {region, a, bp, bias, residual, c, lda, ldr, ldc, m, n, k, act, npanels, 0, 0, 0, 0, 0, {0}};
        gemm_split(&j, row_unit, panel_unit, tile_panels, stream_rows, team);
        /* on the worker team when it is free (no sleeping thread to wake for each of a decode
         * step's many short GEMMs), else OpenMP */
        pt_parallel_tasks(team, j.chunks, gemm_chunk, &j);
        return PT_OK;
    }
    region(a, lda, bp, bias, residual, ldr, c, ldc, 0, m, 0, npanels, n, k, act);
    return PT_OK;
}

// ---- packing

size_t pt_packed_b_size(int k, int n) {
    if (k < 1 || n < 1) return 0;
    return (size_t)((n + PT_NR - 1) / PT_NR) * (size_t)k * PT_NR;
}

/* What pt_pack_b_mt packs, for pack_range. */
typedef struct {
    const float *b;
    ptrdiff_t rs, cs;
    int k, n;
    float *packed;
} pack_job;

/* Panels p0 .. p1-1 of pt_pack_b's layout. */
static void pack_range(void *ctx, int p0, int p1) {
    const pack_job *j = (const pack_job *)ctx;
    const int k = j->k, n = j->n;
    for (int p = p0; p < p1; p++) {
        float *dst = j->packed + (size_t)p * k * PT_NR;
        int j0 = p * PT_NR;
        int nvalid = n - j0 < PT_NR ? n - j0 : PT_NR;
        for (int kk = 0; kk < k; kk++) {
            const float *src = j->b + (ptrdiff_t)kk * j->rs + (ptrdiff_t)j0 * j->cs;
            float *row = dst + (size_t)kk * PT_NR;
            int jj = 0;
            for (; jj < nvalid; jj++) row[jj] = src[(ptrdiff_t)jj * j->cs];
            /* Zero padding keeps the edge panel's extra columns finite, so the kernel can
             * compute full panels and simply not store them. */
            for (; jj < PT_NR; jj++) row[jj] = 0.0f;
        }
    }
}

int pt_pack_b_mt(const float *b, ptrdiff_t rs, ptrdiff_t cs, int k, int n, float *packed, int nthreads) {
    if (b == NULL || packed == NULL || k < 1 || n < 1 || nthreads < 1) return PT_ERR_ARG;
    pack_job j = {b, rs, cs, k, n, packed};
    pt_team_ranges((size_t)k * (size_t)n < PT_PACK_PARALLEL_FLOATS ? 1 : nthreads, (n + PT_NR - 1) / PT_NR,
                   pack_range, &j);
    return PT_OK;
}

int pt_pack_b(const float *b, ptrdiff_t rs, ptrdiff_t cs, int k, int n, float *packed) {
    return pt_pack_b_mt(b, rs, cs, k, n, packed, 1);
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
    return pt_gemm_drive(region_generic, PT_GEMM_GENERIC_MR, 1, 1, 0, a, lda, bp, bias, residual, ldr, c, ldc,
                         m, n, k, act, nthreads);
}
