/* pt_screen_generic.c - bfloat16 packing with its error sums, the threaded driver of the screening
 * GEMM and its portable path. */
#include <math.h>
#include <string.h>
#include "pt_screen.h"
#include "pt_gemm.h"

int pt_pack_bf16(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d) {
    if (packed == NULL || out == NULL || sq_w == NULL || sq_d == NULL || k < 1 || n < 1)
        return PT_ERR_ARG;
    int npanels = (n + PT_NR - 1) / PT_NR;
    /* Sums of non-negative terms in float32 are within a factor (1 +- gamma_k) of the exact sums
     * (gamma_k = k u / (1 - k u), u = 2^-24, one more u for each square), and squares that
     * underflow lose less than 2^-150 each: (sum + k 2^-149) / (1 - gamma_{k+1}) is an upper
     * bound of the exact sum, so the caller's error bound stays a bound. */
    double ku = (double)(k + 1) * 0x1p-24;
    double widen = ku < 0.5 ? 1.0 / (1.0 - ku / (1.0 - ku)) : HUGE_VAL;
    double tiny = (double)k * 0x1p-149;
    for (int p = 0; p < npanels; p++) {
        const float *src = packed + (size_t)p * k * PT_NR;
        uint16_t *dst = out + (size_t)p * k * PT_NR;
        float w2[PT_NR] = {0}, d2[PT_NR] = {0};
        for (int kk = 0; kk < k; kk++) {
            for (int jj = 0; jj < PT_NR; jj++) {
                size_t i = (size_t)kk * PT_NR + jj;
                uint32_t u;
                memcpy(&u, &src[i], sizeof u);
                /* round to nearest, ties to even, on the bits (values within half a bf16 step of
                 * FLT_MAX become infinite); inf and NaN keep their high bits, so a NaN whose payload
                 * lies in the low 16 bits becomes an infinity. Either makes the sums non-finite. */
                uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
                if ((u & 0x7F800000u) == 0x7F800000u) rounded = u;
                uint16_t h = (uint16_t)(rounded >> 16);
                dst[i] = h;
                float w = src[i];
                float d = w - pt_bf16_to_float(h);   /* exact (Sterbenz): r is within 2^-8 |w| of w */
                w2[jj] += w * w;
                d2[jj] += d * d;
            }
        }
        for (int jj = 0; jj < PT_NR && p * PT_NR + jj < n; jj++) {
            sq_w[p * PT_NR + jj] = ((double)w2[jj] + tiny) * widen;
            sq_d[p * PT_NR + jj] = ((double)d2[jj] + tiny) * widen;
        }
    }
    return PT_OK;
}

/* Panels per chunk of work: 8 panels of k = 512 are 128 KiB of bf16. */
#define PT_SCREEN_CHUNK_PANELS 8

int pt_screen_drive(pt_screen_region_fn region, const float *a, ptrdiff_t lda, const uint16_t *rp,
                    const float *bias, float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    if (a == NULL || rp == NULL || c == NULL || m < 1 || n < 1 || k < 1 || nthreads < 1 ||
        lda < k || ldc < n)
        return PT_ERR_ARG;
    int npanels = (n + PT_NR - 1) / PT_NR;
    int chunks = (npanels + PT_SCREEN_CHUNK_PANELS - 1) / PT_SCREEN_CHUNK_PANELS;
    int nt = chunks < nthreads ? chunks : nthreads;
    PT_PARALLEL_FOR(nt, ch, chunks, {
        int p0 = ch * PT_SCREEN_CHUNK_PANELS;
        int p1 = p0 + PT_SCREEN_CHUNK_PANELS < npanels ? p0 + PT_SCREEN_CHUNK_PANELS : npanels;
        for (int r0 = 0; r0 < m; r0 += PT_SCREEN_MAX_ROWS) {
            int r1 = m - r0 < PT_SCREEN_MAX_ROWS ? m : r0 + PT_SCREEN_MAX_ROWS;
            region(a, lda, rp, bias, c, ldc, r0, r1, p0, p1, n, k);
        }
    });
    return PT_OK;
}

static void region_generic(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                           float *c, ptrdiff_t ldc, int r0, int r1, int p0, int p1, int n, int k) {
    for (int p = p0; p < p1; p++) {
        const uint16_t *panel = rp + (size_t)p * k * PT_NR;
        int j0 = p * PT_NR;
        int ncols = n - j0 < PT_NR ? n - j0 : PT_NR;
        for (int i = r0; i < r1; i++) {
            float acc[PT_NR] = {0};
            const float *arow = a + (ptrdiff_t)i * lda;
            for (int kk = 0; kk < k; kk++) {
                float av = arow[kk];
                for (int jj = 0; jj < PT_NR; jj++) acc[jj] += av * pt_bf16_to_float(panel[(size_t)kk * PT_NR + jj]);
            }
            for (int jj = 0; jj < ncols; jj++)
                c[(ptrdiff_t)i * ldc + j0 + jj] = bias != NULL ? acc[jj] + bias[j0 + jj] : acc[jj];
        }
    }
}

int pt_gemm_bf16_generic(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                         float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    return pt_screen_drive(region_generic, a, lda, rp, bias, c, ldc, m, n, k, nthreads);
}
