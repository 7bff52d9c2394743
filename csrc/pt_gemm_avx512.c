/* pt_gemm_avx512.c - AVX-512F float32 GEMM on packed B panels: one zmm per panel row, register-blocked micro-kernels, skinny decode shapes, the AVX2 epilogue (SiLU in 16 lanes, with its exhaustive check against the AVX2 one). */
#include <stdint.h>
#include "pt_activation.h"
#include "pt_gemm.h"

#ifdef PT_HAVE_AVX512

#include <immintrin.h>
#include "pt_gemm_internal.h"
#include "pt_simd_avx512.h"


/* Bitwise equality with pt_gemm_packed_avx2: a 16-wide panel row is one zmm here and two ymm
 * there, but every lane still runs acc = fma(a[i,kk], B[kk,j], acc) from +0 with kk ascending,
 * and a lane's FMA rounds the same at either width. The epilogue (bias, activation, residual,
 * store) is the AVX2 path's own, pt_gemm_epilogue_avx2, except that SiLU runs 16 lanes at a time
 * with the AVX2 instruction sequence per lane (pt_simd_avx512.h), so the results match to the bit.
 * k is never blocked (see region_avx512). */

// ---- block sizes

/* Rows of the main micro-kernel: 8 rows x 3 panels = 24 zmm accumulators, plus 3 for the B rows
 * and 1 for the broadcast A value, out of 32 registers. 24 independent FMA chains cover the
 * 4-cycle FMA latency on 2 ports; each B row loaded feeds 8 FMAs and each A broadcast 3. The
 * 8-row A tile (8 x k floats) stays in the 48 KiB L1 for k up to ~1000.
 * Tried on this (shared, noisy) Sapphire Rapids machine against 12x2, 6x4, 14x2 and 16x1 main
 * tiles: 8x3 was level with 12x2 and ahead of the others on the square and encoder shapes; 16x1
 * (one broadcast per FMA) was clearly slowest. */
#define PT_GEMM512_MR 8

/* Bytes of packed B kept hot in the (per-core) L2 while every row tile sweeps over it, for a 2 MiB
 * L2 (shrinks with a smaller one: pt_gemm_fit_l2). */
#ifndef PT_GEMM512_L2_B_BYTES
#define PT_GEMM512_L2_B_BYTES (1u << 20)
#endif

/* How many k steps (= 64-byte panel rows) ahead each B stream is prefetched. The hardware
 * prefetcher stops at 4 KiB pages, and a decode step streams B from memory. */
#ifndef PT_GEMM512_PREFETCH_ROWS
#define PT_GEMM512_PREFETCH_ROWS 32
#endif

/* Products with at most this many rows (decode steps of batches up to 7) read B one panel after
 * the other, a single sequential stream per thread, instead of 8 (1 row), 4 (2-6 rows) or 3
 * panels side by side: B comes from memory once and the arithmetic is light, and on an AMD EPYC
 * (Zen 4, 2 threads) memory delivered a single stream per core much faster than several 32-128
 * KiB apart. The 36 decoder GEMMs of the opus-mt-size model (88 MB), alternated in one process:
 * 1 row 0.70-0.80x the time at 1 and 2 threads (from 22 to 28 GB/s at 2 threads, where the
 * bandwidth probe reads 31), 2 rows 0.82-0.92x, 4 rows 0.77-0.89x, 5-7 rows 0.86-0.93x; 8 rows
 * 1.02-1.14x, 16 rows 1.10-1.13x, so from 8 rows on the wide tiles stay.
 * Only the order in which panels are visited changes: same bits.
 * (The earlier 8-stream choice was measured on a Sapphire Rapids machine.) */
#define PT_GEMM512_STREAM_ROWS 7

/* Products of PT_GEMM512_STREAM_ROWS + 1 to this many rows (batched decode steps, short inputs) go
 * through B one group of the 8-row kernel's panels (3) at a time: every row tile computes the group,
 * the first from memory and the others from L2, and each tile also prefetches its share (1 / tiles)
 * of the next group into L2, one row of each panel every `tiles` k steps, so memory streams the next
 * group while this one is computed. In blocks of 16 panels swept by one row tile after the other,
 * memory and arithmetic took turns: the first sweep waited for memory, the others for the FMAs.
 * The 36 decoder GEMMs of the opus-mt-size model (88 MB), the two orders alternated call by call in
 * one process on the AMD EPYC (Zen 4), medians of 21 paired ratios: 2 threads 8 rows 0.88x the
 * time, 9 rows 0.86x, 12 rows 0.95x, 16 rows 0.92x, 24 rows 0.89x, 32 rows 0.94x, 48 rows 0.97x
 * (64 rows 0.98x); 1 thread 8 rows 0.85x, 16 rows 0.88x, 32 rows 0.96x (64 rows 1.00x). Greedy
 * decoding, alternated: batch 8 0.93x, batch 16 0.96x at 2 threads, batch 16 0.94x at 1. (The
 * AVX2 path's PT_GEMM_OVERLAP_ROWS is the same idea with its own tiles.)
 * Same bits: the same kernels' FMAs, only the order of the tiles and the prefetches change. */
#define PT_GEMM512_OVERLAP_ROWS 48

/* Widest tile in panels (the 1-row decode kernel), i.e. columns of the local tile buffer / 16. */
#define PT_GEMM512_MAX_NP 8
#define PT_GEMM512_TILE_LD (PT_GEMM512_MAX_NP * PT_NR)

// ---- micro-kernels

/* tile[r][q*16 + j] = sum_kk a[r*lda + kk] * panel_q[kk*16 + j], one FMA chain per element,
 * kk ascending, for MR rows and NP consecutive panels (pstride floats apart).
 * Each (MR, NP) shape is its own function with exactly sized arrays and fully unrolled small
 * loops, so that GCC keeps the accumulators in registers.
 * The _pf variants (PT_GEMM512_OVERLAP_ROWS) also prefetch into L2, from pf, one 64-byte row of each
 * of the NP panels (pstride floats apart) every pf_every k steps, pf_rows rows in all; the plain
 * ones ignore pf, pf_every and pf_rows, and their loop is the same as without them. */
typedef void (*tile512_fn)(const float *a, ptrdiff_t lda, const float *bp, size_t pstride, int k, float *tile,
                           const float *pf, int pf_every, int pf_rows);

#define PT_UNROLL _Pragma("GCC unroll 16")
#define PT_DEFINE_TILE512_AS(NAME, MR, NP, PF)                                                             \
    static void NAME(const float *a, ptrdiff_t lda, const float *bp, size_t pstride, int k, float *tile,   \
                     const float *pf, int pf_every, int pf_rows) {                                         \
        __m512 acc[MR][NP];                                                                                \
        int countdown = 1;                                                                                 \
        if (!(PF)) (void)pf, (void)pf_every, (void)pf_rows;                                                \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            PT_UNROLL for (int q = 0; q < NP; q++) acc[r][q] = _mm512_setzero_ps();                        \
        for (int kk = 0; kk < k; kk++) {                                                                   \
            __m512 b[NP];                                                                                  \
            PT_UNROLL for (int q = 0; q < NP; q++) {                                                       \
                const float *brow = bp + q * pstride + (size_t)kk * PT_NR;                                 \
                _mm_prefetch((const char *)(brow + PT_GEMM512_PREFETCH_ROWS * PT_NR), _MM_HINT_T0);        \
                b[q] = _mm512_loadu_ps(brow);                                                              \
            }                                                                                              \
            if ((PF) && pf_rows > 0 && --countdown == 0) {                                                 \
                PT_UNROLL for (int q = 0; q < NP; q++)                                                     \
                    _mm_prefetch((const char *)(pf + q * pstride), _MM_HINT_T1);                           \
                pf += PT_NR;                                                                               \
                pf_rows--;                                                                                 \
                countdown = pf_every;                                                                      \
            }                                                                                              \
            PT_UNROLL for (int r = 0; r < MR; r++) {                                                       \
                __m512 av = _mm512_set1_ps(a[r * lda + kk]);                                               \
                PT_UNROLL for (int q = 0; q < NP; q++) acc[r][q] = _mm512_fmadd_ps(av, b[q], acc[r][q]);   \
            }                                                                                              \
        }                                                                                                  \
        PT_UNROLL for (int r = 0; r < MR; r++)                                                             \
            PT_UNROLL for (int q = 0; q < NP; q++)                                                         \
                _mm512_store_ps(tile + r * PT_GEMM512_TILE_LD + q * PT_NR, acc[r][q]);                     \
    }
#define PT_DEFINE_TILE512(MR, NP) PT_DEFINE_TILE512_AS(tile512_##MR##x##NP, MR, NP, 0)
#define PT_DEFINE_TILE512_PF(MR, NP) PT_DEFINE_TILE512_AS(tile512_##MR##x##NP##_pf, MR, NP, 1)

/* Per tile height, the panel widths used (widest first): at least 8 independent chains
 * (rows x panels) where possible to hide the FMA latency (1 x 8 for the last row of a larger
 * product, its B block coming from L2). Products of at most PT_GEMM512_STREAM_ROWS rows take the
 * one-panel kernels only (see there). */
PT_DEFINE_TILE512(1, 8) PT_DEFINE_TILE512(1, 4) PT_DEFINE_TILE512(1, 2) PT_DEFINE_TILE512(1, 1)
PT_DEFINE_TILE512(2, 4) PT_DEFINE_TILE512(2, 2) PT_DEFINE_TILE512(2, 1)
PT_DEFINE_TILE512(3, 4) PT_DEFINE_TILE512(3, 2) PT_DEFINE_TILE512(3, 1)
PT_DEFINE_TILE512(4, 4) PT_DEFINE_TILE512(4, 2) PT_DEFINE_TILE512(4, 1)
PT_DEFINE_TILE512(5, 4) PT_DEFINE_TILE512(5, 2) PT_DEFINE_TILE512(5, 1)
PT_DEFINE_TILE512(6, 4) PT_DEFINE_TILE512(6, 2) PT_DEFINE_TILE512(6, 1)
PT_DEFINE_TILE512(7, 3) PT_DEFINE_TILE512(7, 2) PT_DEFINE_TILE512(7, 1)
PT_DEFINE_TILE512(8, 3) PT_DEFINE_TILE512(8, 2) PT_DEFINE_TILE512(8, 1)
/* The overlap order's blocks are one group of the 8-row kernel's panels (3), so it takes widths of at most 3. */
PT_DEFINE_TILE512_PF(1, 2) PT_DEFINE_TILE512_PF(1, 1)
PT_DEFINE_TILE512_PF(2, 2) PT_DEFINE_TILE512_PF(2, 1)
PT_DEFINE_TILE512_PF(3, 2) PT_DEFINE_TILE512_PF(3, 1)
PT_DEFINE_TILE512_PF(4, 2) PT_DEFINE_TILE512_PF(4, 1)
PT_DEFINE_TILE512_PF(5, 2) PT_DEFINE_TILE512_PF(5, 1)
PT_DEFINE_TILE512_PF(6, 2) PT_DEFINE_TILE512_PF(6, 1)
PT_DEFINE_TILE512_PF(7, 3) PT_DEFINE_TILE512_PF(7, 2) PT_DEFINE_TILE512_PF(7, 1)
PT_DEFINE_TILE512_PF(8, 3) PT_DEFINE_TILE512_PF(8, 2) PT_DEFINE_TILE512_PF(8, 1)

/* kernels[rows][w] is the w-th widest kernel for a tile of `rows` rows and takes
 * kernel_panels[rows][w] panels; each list ends with the one-panel kernel, so any number of
 * remaining panels is covered greedily. kernels_pf / kernel_panels_pf: the same for the overlap
 * order. */
#define PT_GEMM512_WIDTHS 4
static const tile512_fn kernels[PT_GEMM512_MR + 1][PT_GEMM512_WIDTHS] = {
    {NULL},
    {tile512_1x8, tile512_1x4, tile512_1x2, tile512_1x1},
    {tile512_2x4, tile512_2x2, tile512_2x1},
    {tile512_3x4, tile512_3x2, tile512_3x1},
    {tile512_4x4, tile512_4x2, tile512_4x1},
    {tile512_5x4, tile512_5x2, tile512_5x1},
    {tile512_6x4, tile512_6x2, tile512_6x1},
    {tile512_7x3, tile512_7x2, tile512_7x1},
    {tile512_8x3, tile512_8x2, tile512_8x1},
};
static const int kernel_panels[PT_GEMM512_MR + 1][PT_GEMM512_WIDTHS] = {
    {0}, {8, 4, 2, 1}, {4, 2, 1}, {4, 2, 1}, {4, 2, 1}, {4, 2, 1}, {4, 2, 1}, {3, 2, 1}, {3, 2, 1},
};
static const tile512_fn kernels_pf[PT_GEMM512_MR + 1][PT_GEMM512_WIDTHS] = {
    {NULL},
    {tile512_1x2_pf, tile512_1x1_pf},
    {tile512_2x2_pf, tile512_2x1_pf},
    {tile512_3x2_pf, tile512_3x1_pf},
    {tile512_4x2_pf, tile512_4x1_pf},
    {tile512_5x2_pf, tile512_5x1_pf},
    {tile512_6x2_pf, tile512_6x1_pf},
    {tile512_7x3_pf, tile512_7x2_pf, tile512_7x1_pf},
    {tile512_8x3_pf, tile512_8x2_pf, tile512_8x1_pf},
};
static const int kernel_panels_pf[PT_GEMM512_MR + 1][PT_GEMM512_WIDTHS] = {
    {0}, {2, 1}, {2, 1}, {2, 1}, {2, 1}, {2, 1}, {2, 1}, {3, 2, 1}, {3, 2, 1},
};

// ---- epilogue

/* pt_gemm_epilogue_avx2 with SiLU in 16 lanes: the activation is most of an encoder FFN-in GEMM's
 * epilogue, and one zmm per panel row halves its instructions. Bias then activation then residual,
 * as there; the bias add keeps bias_row's operand order (vals + bias). Other activations: the AVX2
 * epilogue. */
static void epilogue_avx512(float *vals, const float *bias, const float *res, float *out, int j0, int np, int n,
                            int act) {
    if (act != PT_ACT_SILU) {
        pt_gemm_epilogue_avx2(vals, bias, res, out, j0, np, n, act);
        return;
    }
    for (int q = 0; q < np; q++) {
        int jq = j0 + q * PT_NR;
        __m512 v = _mm512_load_ps(vals + q * PT_NR);
        if (bias != NULL) {
            int cols = n - jq < PT_NR ? n - jq : PT_NR;
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps((__mmask16)((1u << cols) - 1u), bias + jq));
        }
        _mm512_store_ps(vals + q * PT_NR, pt_silu512(v));
    }
    pt_gemm_epilogue_avx2(vals, NULL, res, out, j0, np, n, PT_ACT_NONE);
}

// ---- the exhaustive SiLU check (pt_activation.h)

/* Bit patterns per task of the check, and per buffer inside a task. */
#define SILU_CHECK_TASK ((uint64_t)1 << 22)
#define SILU_CHECK_BUF 1024

typedef struct {
    uint32_t first;
    uint64_t count;
    long long diffs;      /* updated atomically */
    uint32_t lowest;      /* offset of the lowest differing pattern from first; atomic min */
} silu_check_job;

static void silu_check_task(void *ctx, int t) {
    silu_check_job *j = (silu_check_job *)ctx;
    _Alignas(64) float x2[SILU_CHECK_BUF], x5[SILU_CHECK_BUF];
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    uint64_t off0 = (uint64_t)t * SILU_CHECK_TASK;
    uint64_t off1 = j->count - off0 < SILU_CHECK_TASK ? j->count : off0 + SILU_CHECK_TASK;
    long long diffs = 0;
    uint32_t lowest = UINT32_MAX;
    for (uint64_t off = off0; off < off1; off += SILU_CHECK_BUF) {
        int len = off1 - off < SILU_CHECK_BUF ? (int)(off1 - off) : SILU_CHECK_BUF;
        /* the patterns first + off + i (mod 2^32), both copies */
        for (int i = 0; i < len; i += 16) {
            __m512i bits = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)(j->first + off + (uint64_t)i)), iota);
            _mm512_store_si512((void *)(x2 + i), bits);
            _mm512_store_si512((void *)(x5 + i), bits);
        }
        pt_activation_inplace_avx2(x2, (size_t)len, PT_ACT_SILU);
        for (int i = 0; i < len; i += 16) {
            __mmask16 m = len - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - i)) - 1u);
            __m512 v5 = pt_silu512(_mm512_maskz_loadu_ps(m, x5 + i));
            __m512 v2 = _mm512_maskz_loadu_ps(m, x2 + i);
            __mmask16 same = _mm512_cmpeq_epi32_mask(_mm512_castps_si512(v2), _mm512_castps_si512(v5));
            __mmask16 nans = _mm512_cmp_ps_mask(v2, v2, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(v5, v5, _CMP_UNORD_Q);
            __mmask16 bad = (__mmask16)(m & ~(same | nans));
            if (bad) {
                if (diffs == 0) lowest = (uint32_t)(off + (uint64_t)i + (uint64_t)__builtin_ctz(bad));
                diffs += __builtin_popcount(bad);
            }
        }
    }
    if (diffs > 0) {
        __atomic_fetch_add(&j->diffs, diffs, __ATOMIC_RELAXED);
        uint32_t cur = __atomic_load_n(&j->lowest, __ATOMIC_RELAXED);
        while (lowest < cur &&
               !__atomic_compare_exchange_n(&j->lowest, &cur, lowest, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
    }
}

long long pt_silu_check_paths(uint32_t first, uint64_t count, int nthreads, uint32_t *first_diff) {
    if (count > ((uint64_t)1 << 32) || nthreads < 1) return -1;
    silu_check_job j = {first, count, 0, UINT32_MAX};
    int tasks = (int)((count + SILU_CHECK_TASK - 1) / SILU_CHECK_TASK);
    if (tasks > 0) pt_parallel_tasks(nthreads < tasks ? nthreads : tasks, tasks, silu_check_task, &j);
    if (j.diffs > 0 && first_diff != NULL) *first_diff = (uint32_t)(first + j.lowest);
    return j.diffs;
}

// ---- driver

/* Rows [r0, r1) x panels [p0, p1) of the output, on one thread.
 * Loop order: panel blocks sized for L2 (outer), row tiles, panels (inner). A row tile's A rows
 * are re-read from L1/L2 while the B block streams from L2; each B block comes from memory once.
 * Up to PT_GEMM512_STREAM_ROWS rows the panels stream one after the other; up to
 * PT_GEMM512_OVERLAP_ROWS the blocks are one kernel group and the next is prefetched meanwhile (see
 * there). k is not blocked: every
 * accumulator runs the whole reduction in registers, as the determinism contract asks, and
 * nothing is written to c before its final value (so residual may alias c). */
static void region_avx512(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                          const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                          int r0, int r1, int p0, int p1, int n, int k, int act) {
    _Alignas(64) float tile[PT_GEMM512_MR * PT_GEMM512_TILE_LD];
    size_t pstride = (size_t)k * PT_NR;
    size_t panel_bytes = pstride * sizeof(float);
    int stream = r1 - r0 <= PT_GEMM512_STREAM_ROWS;
    int overlap = !stream && r1 - r0 <= PT_GEMM512_OVERLAP_ROWS;
    int ntiles = (r1 - r0 + PT_GEMM512_MR - 1) / PT_GEMM512_MR;
    int share = (k + ntiles - 1) / ntiles;           /* rows of each next panel one tile prefetches */
    const tile512_fn (*kern)[PT_GEMM512_WIDTHS] = overlap ? kernels_pf : kernels;
    const int (*widths)[PT_GEMM512_WIDTHS] = overlap ? kernel_panels_pf : kernel_panels;
    int block = kernel_panels[PT_GEMM512_MR][0];
    if (!overlap) {
        block = (int)(pt_gemm_fit_l2(PT_GEMM512_L2_B_BYTES) / panel_bytes);
        block = block < PT_GEMM512_MAX_NP ? PT_GEMM512_MAX_NP : block - block % PT_GEMM512_MAX_NP;
    }

    for (int pb = p0; pb < p1; pb += block) {
        int pe = p1 - pb < block ? p1 : pb + block;
        for (int i = r0; i < r1; i += PT_GEMM512_MR) {
            int rows = r1 - i < PT_GEMM512_MR ? r1 - i : PT_GEMM512_MR;
            int t = (i - r0) / PT_GEMM512_MR;
            const float *arow = a + (ptrdiff_t)i * lda;
            for (int p = pb; p < pe;) {
                int w = 0;
                while (widths[rows][w] > (stream ? 1 : pe - p)) w++;
                int np = widths[rows][w];
                /* overlap: this tile's share of the same panels of the next group, when there is one */
                const float *pf = NULL;
                int pf_rows = 0, pn = pe + (p - pb);
                if (overlap && pn + np <= p1 && t * share < k) {
                    pf = bp + (size_t)pn * pstride + (size_t)t * share * PT_NR;
                    pf_rows = k - t * share < share ? k - t * share : share;
                }
                pt_gemm_prefetch_out(residual, ldr, c, ldc, i, rows, p * PT_NR, np, n);
                kern[rows][w](arow, lda, bp + (size_t)p * pstride, pstride, k, tile, pf, ntiles, pf_rows);
                for (int r = 0; r < rows; r++) {
                    ptrdiff_t row = i + r;
                    epilogue_avx512(tile + r * PT_GEMM512_TILE_LD, bias,
                                    residual != NULL ? residual + row * ldr : NULL, c + row * ldc,
                                    p * PT_NR, np, n, act);
                }
                p += np;
            }
        }
    }
}

int pt_gemm_packed_avx512(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                          const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                          int m, int n, int k, int act, int nthreads) {
    /* chunks of many rows are whole groups of the main kernel's panels: kernel_panels[PT_GEMM512_MR][0] */
    return pt_gemm_drive(region_avx512, PT_GEMM512_MR, PT_GEMM512_MAX_NP, kernel_panels[PT_GEMM512_MR][0],
                         PT_GEMM512_STREAM_ROWS, a, lda, bp, bias, residual, ldr, c, ldc, m, n, k, act, nthreads);
}

#else /* built without AVX-512: keep the symbols so the bindings link, and refuse the path */

long long pt_silu_check_paths(uint32_t first, uint64_t count, int nthreads, uint32_t *first_diff) {
    (void)first; (void)count; (void)nthreads; (void)first_diff;
    return -1;
}

int pt_gemm_packed_avx512(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                          const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                          int m, int n, int k, int act, int nthreads) {
    (void)a; (void)lda; (void)bp; (void)bias; (void)residual; (void)ldr; (void)c; (void)ldc;
    (void)m; (void)n; (void)k; (void)act; (void)nthreads;
    return PT_ERR_ISA;
}

#endif /* PT_HAVE_AVX512 */
