/* pt_gemm_avx2.c - AVX2+FMA float32 GEMM on packed B panels: register-blocked micro-kernels, a skinny decode shape, fused epilogue. */
#include "pt_gemm.h"

#ifdef PT_HAVE_AVX2

#include <immintrin.h>
#include "pt_gemm_internal.h"
#include "pt_activation.h"


// ---- block sizes

/* Rows of the main micro-kernel: 6 rows x 16 columns = 12 ymm accumulators, plus 2 for the
 * B row and 1 for the broadcast A value, out of 16 registers. 12 independent FMA chains cover
 * the 4-cycle FMA latency on 2 ports. */
#define PT_GEMM_MR 6

/* Bytes of packed B kept hot in the (per-core) L2 while every row tile sweeps over it; the
 * A rows of one tile (6 x k floats) stay in L1 while they meet all those panels. For a 2 MiB L2;
 * this and PT_GEMM_OVERLAP_B_BYTES shrink with a smaller one (pt_gemm_fit_l2). */
#define PT_GEMM_L2_B_BYTES (1u << 20)

/* How many k steps (= 64-byte panel rows) ahead each B stream is prefetched. The hardware
 * prefetcher stops at 4 KiB pages, and a decode step streams B from memory. */
#ifndef PT_GEMM_PREFETCH_ROWS
#define PT_GEMM_PREFETCH_ROWS 32
#endif

/* Products with at most this many rows (decode steps of batches 1 and 2) read B one panel after
 * the other, a single sequential stream per thread, instead of 4 (1 row) or 2 panels side by
 * side: on an AMD EPYC (Zen 4) memory delivered a single stream per core much faster. The 36
 * decoder GEMMs of the opus-mt-size model (88 MB), alternated in one process: 1 row 0.58x the
 * time at 2 threads (from 19 to 32 GB/s), 0.86x at 1; 2 rows 0.88-0.89x; 4 rows 1.00-1.02x, so
 * from 3 rows on the wide tiles stay. Only the order of the panels changes: same bits. */
#define PT_GEMM_STREAM_ROWS 2

/* A few row tiles (a batched decode step, a short encoder input: 7 to PT_GEMM_OVERLAP_ROWS rows)
 * stream B from memory on the first tile's sweep of a block and then compute from L2 on the others,
 * so memory and arithmetic took turns: at 16 rows the time was about that of 1 row (memory) plus
 * that of 16 rows from L2 (compute). For these the blocks are smaller and every tile's sweep also
 * prefetches its share of the next block into L2, spread over its k steps, so the next block
 * arrives while this one is computed. Opus-mt-size model, 2 threads, alternated in one process,
 * 8-12 rounds: greedy batch 16 0.90-0.93x the time, batch-1 encoder (32 rows) 0.93-0.97x; on the
 * AVX-512 path the same change measured 0.99-1.05x on the Sapphire Rapids machine these figures come
 * from; on the AMD EPYC (Zen 4) it pays there too (PT_GEMM512_OVERLAP_ROWS). */
#define PT_GEMM_OVERLAP_ROWS 48
#define PT_GEMM_OVERLAP_B_BYTES (128u << 10)

/* Widest tile in panels (1 row x 4 panels), i.e. columns of the local tile buffer / 16. */
#define PT_GEMM_MAX_NP 4
#define PT_GEMM_TILE_LD (PT_GEMM_MAX_NP * PT_NR)

// ---- micro-kernel

/* acc[r][*] = sum_kk a[r][kk] * B[kk, panels] over NP consecutive panels, one FMA chain per
 * element, kk ascending; results go to tile (row stride PT_GEMM_TILE_LD).
 * Each (MR, NP) shape is its own function with exactly sized arrays, and the small loops carry
 * unroll pragmas: only fully unrolled does GCC keep acc in registers (otherwise it stores the
 * accumulators to the stack on every k step).
 * Few rows take several panels at once so there are still >= 8 independent chains to cover the
 * FMA latency: 1x4 panels = 8, 2x2 = 8, 3x2 = 12, 4x1 = 8, 5x1 = 10, 6x1 = 12 (products of at
 * most PT_GEMM_STREAM_ROWS rows, memory-bound, take one panel at a time instead: see there).
 * next (or NULL): 64-byte lines to prefetch into L2 meanwhile, line (kk * next_step) >> 16 at step kk,
 * i.e. (k * next_step) >> 16 lines spread evenly over the sweep (see PT_GEMM_OVERLAP_ROWS).
 * The k loop is unrolled twice: a 6x1 step is 12 FMAs (6 cycles on 2 ports) among ~27 other
 * instructions (broadcasts, loads, prefetches, loop and address arithmetic), so the loop's own
 * overhead showed. Separate processes alternated 8 times, the encoder's four shapes (M=512) and
 * 16 x 512 x 2048, AVX2 path: medians 1.06, 1.06, 1.01, 1.00, 1.10x the speed at 1 thread and
 * 1.04, 1.07, 1.00, 1.01, 1.03x at 2. Same bits (the same FMAs in the same order). */
typedef void (*tile_fn)(const float *const *arow, const float *bp, size_t pstride, int k, float *tile,
                        const char *next, unsigned next_step);

#define PT_UNROLL _Pragma("GCC unroll 8")
#define PT_DEFINE_TILE(MR, NP)                                                                              \
    static void tile_##MR##x##NP(const float *const *arow, const float *bp, size_t pstride, int k,          \
                                 float *tile, const char *next, unsigned next_step) {                       \
        __m256 acc[MR][2 * NP];                                                                             \
        const float *ar[MR];                                                                                \
        PT_UNROLL for (int r = 0; r < MR; r++) {                                                            \
            ar[r] = arow[r];                                                                                \
            PT_UNROLL for (int q = 0; q < 2 * NP; q++) acc[r][q] = _mm256_setzero_ps();                     \
        }                                                                                                   \
        _Pragma("GCC unroll 2")                                                                             \
        for (int kk = 0; kk < k; kk++) {                                                                    \
            __m256 b[2 * NP];                                                                               \
            if (next != NULL)                                                                               \
                _mm_prefetch(next + ((((size_t)kk * next_step) >> 16) << 6), _MM_HINT_T1);                  \
            PT_UNROLL for (int q = 0; q < NP; q++) {                                                        \
                const float *brow = bp + q * pstride + (size_t)kk * PT_NR;                                  \
                _mm_prefetch((const char *)(brow + PT_GEMM_PREFETCH_ROWS * PT_NR), _MM_HINT_T0);            \
                b[2 * q] = _mm256_loadu_ps(brow);                                                           \
                b[2 * q + 1] = _mm256_loadu_ps(brow + 8);                                                   \
            }                                                                                               \
            PT_UNROLL for (int r = 0; r < MR; r++) {                                                        \
                __m256 av = _mm256_broadcast_ss(ar[r] + kk);                                                \
                PT_UNROLL for (int q = 0; q < 2 * NP; q++) acc[r][q] = _mm256_fmadd_ps(av, b[q], acc[r][q]);\
            }                                                                                               \
        }                                                                                                   \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                              \
            PT_UNROLL for (int q = 0; q < 2 * NP; q++)                                                      \
                _mm256_store_ps(tile + r * PT_GEMM_TILE_LD + q * 8, acc[r][q]);                             \
    }
PT_DEFINE_TILE(6, 1)
PT_DEFINE_TILE(5, 1)
PT_DEFINE_TILE(4, 1)
PT_DEFINE_TILE(3, 2)
PT_DEFINE_TILE(3, 1)
PT_DEFINE_TILE(2, 2)
PT_DEFINE_TILE(2, 1)
PT_DEFINE_TILE(1, 4)
PT_DEFINE_TILE(1, 1)

/* Per tile height: the widest kernel (panels at once) and the one-panel kernel for leftovers. */
static const tile_fn wide_tile[PT_GEMM_MR + 1] = {NULL, tile_1x4, tile_2x2, tile_3x2, tile_4x1, tile_5x1, tile_6x1};
static const int wide_panels[PT_GEMM_MR + 1] = {0, 4, 2, 2, 1, 1, 1};
static const tile_fn one_panel_tile[PT_GEMM_MR + 1] = {NULL, tile_1x1, tile_2x1, tile_3x1, tile_4x1, tile_5x1, tile_6x1};

// ---- epilogue

static inline __m256i lane_mask(int nvalid) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(nvalid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* vals[0..16) += bias[0..ncols) in place; lanes past ncols add 0. */
static void bias_row(float *vals, const float *bias, int ncols) {
    __m256 lo = _mm256_load_ps(vals), hi = _mm256_load_ps(vals + 8);
    if (ncols >= PT_NR) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(bias));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(bias + 8));
    } else {
        lo = _mm256_add_ps(lo, _mm256_maskload_ps(bias, lane_mask(ncols)));
        hi = _mm256_add_ps(hi, _mm256_maskload_ps(bias + 8, lane_mask(ncols - 8)));
    }
    _mm256_store_ps(vals, lo);
    _mm256_store_ps(vals + 8, hi);
}

/* out[0..ncols) = vals + res (res may be NULL, and may alias out: it is read before out is written). */
static void store_row(const float *vals, const float *res, float *out, int ncols) {
    __m256 lo = _mm256_load_ps(vals), hi = _mm256_load_ps(vals + 8);
    if (ncols >= PT_NR) {
        if (res != NULL) {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(res));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(res + 8));
        }
        _mm256_storeu_ps(out, lo);
        _mm256_storeu_ps(out + 8, hi);
        return;
    }
    __m256i mlo = lane_mask(ncols), mhi = lane_mask(ncols - 8);
    if (res != NULL) {
        lo = _mm256_add_ps(lo, _mm256_maskload_ps(res, mlo));
        hi = _mm256_add_ps(hi, _mm256_maskload_ps(res + 8, mhi));
    }
    _mm256_maskstore_ps(out, mlo, lo);
    _mm256_maskstore_ps(out + 8, mhi, hi);
}

/* The lines of [p, p + bytes) into L2 (prefetcht1). */
static void prefetch_l2(const char *p, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
    _mm_prefetch(p + bytes - 1, _MM_HINT_T1);
}

/* The epilogue of a residual GEMM (an FFN-out or attention-out projection) read its residual
 * lines from memory one tile at a time, since nothing had touched them since the previous layer:
 * with the residual aliasing the output, as the models call it, the batch-16 encoder's FFN-out GEMM
 * took 1.034x (1 thread) and 1.023x (2 threads) the time of the same GEMM without a residual.
 * Asking for a tile's residual and output lines before its k loop: opus-mt-size encoder GEMMs,
 * 6 layers, alternated in one process (10-20 rounds, time with / without):
 *   AVX-512, 1 thread: FFN-out 0.966x, attention-out 0.968x, q/k/v 0.994x, FFN-in (SiLU) 0.985x;
 *   AVX-512, 2 threads (two runs): FFN-out 0.99x / 0.96x, attention-out 0.94x / 0.96x,
 *     q/k/v 0.99x, FFN-in 1.00x;
 *   AVX2, 1 / 2 threads: FFN-out 0.963x / 0.968x, attention-out 0.969x / 1.003x, q/k/v
 *     1.007x / 0.991x, FFN-in 1.012x / 0.960x.
 * About 1.5% of the encoder's GEMM time, below what the whole encoder resolves (0.98x, 1.01x at
 * 2 threads, 1.005x at 1, paired medians of 24-30 rounds); greedy batch 1 1.00x, batch 16 0.99x. */
void pt_gemm_prefetch_out(const float *residual, ptrdiff_t ldr, const float *c, ptrdiff_t ldc, int i, int rows,
                          int j0, int np, int n) {
    size_t bytes = (size_t)(n - j0 < np * PT_NR ? n - j0 : np * PT_NR) * sizeof(float);
    for (int r = 0; r < rows; r++) {
        const float *cr = c + (ptrdiff_t)(i + r) * ldc + j0;
        const float *rr = residual != NULL ? residual + (ptrdiff_t)(i + r) * ldr + j0 : NULL;
        if (rr != NULL && rr != cr) prefetch_l2((const char *)rr, bytes);
        prefetch_l2((const char *)cr, bytes);
    }
}

void pt_gemm_epilogue_avx2(float *vals, const float *bias, const float *res, float *out, int j0, int np, int n,
                           int act) {
    if (bias != NULL)
        for (int q = 0; q < np; q++) {
            int jq = j0 + q * PT_NR;
            bias_row(vals + q * PT_NR, bias + jq, n - jq < PT_NR ? n - jq : PT_NR);
        }
    if (act != PT_ACT_NONE) pt_activation_inplace_avx2(vals, (size_t)np * PT_NR, act);
    for (int q = 0; q < np; q++) {
        int jq = j0 + q * PT_NR;
        store_row(vals + q * PT_NR, res != NULL ? res + jq : NULL, out + jq, n - jq < PT_NR ? n - jq : PT_NR);
    }
}

// ---- driver

/* Rows [r0, r1) x panels [p0, p1) of the output, on one thread.
 * Loop order: panel blocks sized for L2 (outer), row tiles, panels (inner). A row tile's
 * A rows are read from L1 while B panels stream from L2; each B block is fetched from memory
 * once, for a few row tiles ahead of time (PT_GEMM_OVERLAP_ROWS). Decode steps (one row tile) just
 * stream the panels in groups. k is not blocked: every
 * accumulator runs the whole reduction in registers, which is what the determinism contract
 * asks for and what lets residual alias c (nothing is written before the final value). */
static void region_avx2(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                        const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                        int r0, int r1, int p0, int p1, int n, int k, int act) {
    _Alignas(32) float tile[PT_GEMM_MR * PT_GEMM_TILE_LD];
    size_t pstride = (size_t)k * PT_NR;
    size_t panel_bytes = pstride * sizeof(float);
    int ntiles = (r1 - r0 + PT_GEMM_MR - 1) / PT_GEMM_MR;
    int overlap = ntiles >= 2 && r1 - r0 <= PT_GEMM_OVERLAP_ROWS;
    int block = (int)(pt_gemm_fit_l2(overlap ? PT_GEMM_OVERLAP_B_BYTES : PT_GEMM_L2_B_BYTES) / panel_bytes);
    block = block < PT_GEMM_MAX_NP ? PT_GEMM_MAX_NP : block - block % PT_GEMM_MAX_NP;
    int stream = r1 - r0 <= PT_GEMM_STREAM_ROWS;

    for (int pb = p0; pb < p1; pb += block) {
        int pe = p1 - pb < block ? p1 : pb + block;
        for (int i = r0; i < r1; i += PT_GEMM_MR) {
            int rows = r1 - i < PT_GEMM_MR ? r1 - i : PT_GEMM_MR;
            int tile_no = (i - r0) / PT_GEMM_MR;
            const float *arow[PT_GEMM_MR];
            for (int r = 0; r < rows; r++) arow[r] = a + (ptrdiff_t)(i + r) * lda;
            for (int p = pb; p < pe;) {
                int np = !stream && pe - p >= wide_panels[rows] ? wide_panels[rows] : 1;
                /* with overlap: this tile's share (1 / ntiles) of the panels at the same place in
                 * the next block, when there is one */
                const char *next = NULL;
                unsigned next_step = 0;
                int pn = pe + (p - pb);
                if (overlap && pn + np <= p1) {
                    size_t lines = (size_t)np * (size_t)k / (size_t)ntiles;
                    next = (const char *)(bp + (size_t)pn * pstride) + (size_t)tile_no * lines * 64;
                    next_step = (unsigned)((lines << 16) / (size_t)k);
                }
                pt_gemm_prefetch_out(residual, ldr, c, ldc, i, rows, p * PT_NR, np, n);
                (np == wide_panels[rows] ? wide_tile : one_panel_tile)[rows](arow, bp + (size_t)p * pstride, pstride,
                                                                             k, tile, next, next_step);
                for (int r = 0; r < rows; r++) {
                    ptrdiff_t row = i + r;
                    pt_gemm_epilogue_avx2(tile + r * PT_GEMM_TILE_LD, bias,
                                          residual != NULL ? residual + row * ldr : NULL, c + row * ldc,
                                          p * PT_NR, np, n, act);
                }
                p += np;
            }
        }
    }
}

int pt_gemm_packed_avx2(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                        const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                        int m, int n, int k, int act, int nthreads) {
    /* chunks that span all rows are groups of the 1-row kernel's panels, blocks of rows groups of the
     * main kernel's */
    return pt_gemm_drive(region_avx2, PT_GEMM_MR, wide_panels[1], wide_panels[PT_GEMM_MR], PT_GEMM_STREAM_ROWS, a, lda,
                         bp, bias, residual, ldr, c, ldc, m, n, k, act, nthreads);
}

#else /* built without AVX2: keep the symbol so the bindings link, and refuse the path */

int pt_gemm_packed_avx2(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                        const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                        int m, int n, int k, int act, int nthreads) {
    (void)a; (void)lda; (void)bp; (void)bias; (void)residual; (void)ldr; (void)c; (void)ldc;
    (void)m; (void)n; (void)k; (void)act; (void)nthreads;
    return PT_ERR_ISA;
}

#endif /* PT_HAVE_AVX2 */
