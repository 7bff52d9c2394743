/* pt_screen_pack.h - the body of pt_pack_bf16, compiled once per ISA unit (the AVX2 unit's copy is
 * the same code vectorized 8 floats wide; integer rounding and per-column float32 sums in the same
 * order, so both give the same bits). Not public API. */
#ifndef PT_SCREEN_PACK_H
#define PT_SCREEN_PACK_H

#include <math.h>
#include <string.h>
#include "pt_screen.h"

static inline int pt_pack_bf16_body(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d) {
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

#endif
