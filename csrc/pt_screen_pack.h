/* pt_screen_pack.h - what the portable and the AVX2 pt_pack_i8 share: the scale of each column and
 * the final bounds of the sums (the per-value work, in pt_screen_generic.c and pt_screen_avx2.c,
 * makes the same IEEE operations in the same order per column, so both give the same bits). Not
 * public API.
 *
 * Per value, in this order: v = w * inv (exact, power of two; or it underflows and q = 0);
 * v = min(v, 127) then max(v, -127) with a NaN giving 127 (the semantics of minps/maxps with the
 * constant second); r = (v + 1.5 * 2^23) - 1.5 * 2^23, the integer nearest v, ties to even;
 * q = (int)r; d = w - r * s, exact: s q is a float (power-of-two scale, |q| <= 127) and, when
 * q != 0, w and s q are within a factor 2 of each other, or w - s q is within one step s of 0;
 * w2 += w * w and d2 += d * d in float32, separately rounded, k ascending. */
#ifndef PT_SCREEN_PACK_H
#define PT_SCREEN_PACK_H

#include <math.h>
#include "pt_screen.h"

#define PT_SCREEN_MAGIC 12582912.0f

/* The argument checks of both pt_pack_i8 paths. */
static inline int pt_screen_pack_args_ok(const float *packed, int k, int n, const int8_t *q, const double *scale,
                                         const int32_t *qsum, const double *sq_w, const double *sq_d) {
    return packed != NULL && q != NULL && scale != NULL && qsum != NULL && sq_w != NULL && sq_d != NULL &&
           k >= 1 && n >= 1;
}

/* s = 2^e and inv = 2^-e for a column whose largest |w| is amax (amax = max(amax, |w|) with the
 * semantics of maxps(amax, |w|)): e brings amax / 2^e into [64, 128), clamped to the exponent
 * range; 0 for a zero, infinite or NaN amax (the sums then decide). */
static inline void pt_screen_column_scale(float amax, float *s, float *inv) {
    int e = 0;
    if (amax > 0.0f && amax <= 3.4e38f) {   /* finite and non-zero: amax = f 2^e, f in [0.5, 1) */
        (void)frexpf(amax, &e);
        e -= 7;                             /* amax / 2^e = 128 f in [64, 128) */
    }
    e = e < PT_SCREEN_EXP_MIN ? PT_SCREEN_EXP_MIN : e > PT_SCREEN_EXP_MAX ? PT_SCREEN_EXP_MAX : e;
    *s = ldexpf(1.0f, e);
    *inv = ldexpf(1.0f, -e);
}

/* The per-column results of panel p: sums of non-negative terms in float32 are within a factor
 * (1 +- gamma_k) of the exact sums (gamma_k = k u / (1 - k u), u = 2^-24, one more u for each
 * square), and squares that underflow lose less than 2^-150 each: (sum + k 2^-149) /
 * (1 - gamma_{k+1}) is an upper bound of the exact sum, so the caller's error bound stays one. */
static inline void pt_screen_panel_finish(int p, int k, int n, const float *s, const int32_t *sum,
                                          const float *w2, const float *d2, double *scale, int32_t *qsum,
                                          double *sq_w, double *sq_d) {
    double ku = (double)(k + 1) * 0x1p-24;
    double widen = ku < 0.5 ? 1.0 / (1.0 - ku / (1.0 - ku)) : HUGE_VAL;
    double tiny = (double)k * 0x1p-149;
    for (int jj = 0; jj < PT_NR && p * PT_NR + jj < n; jj++) {
        int j = p * PT_NR + jj;
        scale[j] = (double)s[jj];
        qsum[j] = sum[jj];
        sq_w[j] = ((double)w2[jj] + tiny) * widen;
        sq_d[j] = ((double)d2[jj] + tiny) * widen;
    }
}

/* One path's per-panel work on panels p0 .. p1-1 (all outputs of a panel are its own). */
typedef void (*pt_pack_i8_range_fn)(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                                    double *sq_w, double *sq_d, int p0, int p1);

/* Checks the arguments, then runs range over all panels on up to nthreads threads (pt_screen_generic.c). */
int pt_pack_i8_drive(pt_pack_i8_range_fn range, const float *packed, int k, int n, int8_t *q, double *scale,
                     int32_t *qsum, double *sq_w, double *sq_d, int nthreads);

#endif
