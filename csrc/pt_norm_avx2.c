/* pt_norm_avx2.c - AVX2+FMA layer norm and RMS norm, each optionally fused with a residual add. */
#include <math.h>
#include "pt_norm.h"
#include "pt_simd_avx2.h"

#if defined(PT_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__)

#define PT_NORM_PARALLEL_GRAIN 16384

/* Same passes and aliasing rules as the portable version (see pt_norm_generic.c): each pass reads a
 * vector before writing the same vector; passes after the first read h from sum_out when it exists.
 * Sums use 32 lane accumulators reduced in a fixed order (row_sum); tails are masked loads (zeros
 * add nothing). Rows are independent: a row's result does not depend on the other rows or on the
 * thread that computes it. */

static inline __m256 load_h(const float *x, const float *res, const float *s, int j, __m256i m, int full) {
    if (s) return full ? _mm256_loadu_ps(s + j) : _mm256_maskload_ps(s + j, m);
    __m256 h = full ? _mm256_loadu_ps(x + j) : _mm256_maskload_ps(x + j, m);
    if (res) h = _mm256_add_ps(h, full ? _mm256_loadu_ps(res + j) : _mm256_maskload_ps(res + j, m));
    return h;
}

static inline __m256 load_opt(const float *p, int j, __m256i m, int full, float dflt) {
    if (!p) return _mm256_set1_ps(dflt);
    return full ? _mm256_loadu_ps(p + j) : _mm256_maskload_ps(p + j, m);
}

static inline void store(float *p, int j, __m256i m, int full, __m256 v) {
    if (full) _mm256_storeu_ps(p + j, v); else _mm256_maskstore_ps(p + j, m, v);
}

/* What row_sum adds up over a row of h. */
enum { SUM_H, SUM_SQUARES, SUM_CENTERED_SQUARES };

/* Sum over a row of h, h^2 or (h - mean)^2, where h is read back from s_in when given, else
 * x + res (and then stored to s_out when given). Four 8-lane accumulators, i.e. four independent
 * add chains (a single chain of 64 dependent adds was most of a 512-wide row's time), reduced in a
 * fixed order; vectors past the last multiple of 32 go to the first accumulator, and the tail is
 * masked so its lanes add zero. */
static inline __attribute__((always_inline)) float row_sum(const float *x, const float *res, float *s_out,
                                                          const float *s_in, int cols, int what, float mean) {
    const __m256i ones = _mm256_set1_epi32(-1);
    const __m256 vmean = _mm256_set1_ps(mean);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int j = 0;
    for (; j + 32 <= cols; j += 32) {
        for (int u = 0; u < 4; u++) {
            __m256 h = load_h(x, res, s_in, j + 8 * u, ones, 1);
            if (s_out) store(s_out, j + 8 * u, ones, 1, h);
            if (what == SUM_CENTERED_SQUARES) h = _mm256_sub_ps(h, vmean);
            acc[u] = what == SUM_H ? _mm256_add_ps(acc[u], h) : _mm256_fmadd_ps(h, h, acc[u]);
        }
    }
    for (; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 h = load_h(x, res, s_in, j, m, full);
        if (s_out) store(s_out, j, m, full, h);
        if (what == SUM_CENTERED_SQUARES) {
            h = _mm256_sub_ps(h, vmean);
            if (!full) h = _mm256_and_ps(h, _mm256_castsi256_ps(m)); /* masked lanes held 0 - mean */
        }
        acc[0] = what == SUM_H ? _mm256_add_ps(acc[0], h) : _mm256_fmadd_ps(h, h, acc[0]);
    }
    return pt_hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

static inline __attribute__((always_inline)) void layer_norm_row(const float *x, const float *res, float *s,
                                                                const float *w, const float *b, float *y, int cols,
                                                                float eps) {
    const __m256i ones = _mm256_set1_epi32(-1);
    const float mean = row_sum(x, res, s, NULL, cols, SUM_H, 0.0f) / (float)cols;
    const __m256 vmean = _mm256_set1_ps(mean);
    const float var = row_sum(x, res, NULL, s, cols, SUM_CENTERED_SQUARES, mean) / (float)cols;
    const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(var + eps));
    int j = 0;
    if (w && b) /* the usual case, without per-vector tests; the loop below does the same arithmetic */
        for (; j + 8 <= cols; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(load_h(x, res, s, j, ones, 1), vmean), rstd);
            _mm256_storeu_ps(y + j, _mm256_fmadd_ps(v, _mm256_loadu_ps(w + j), _mm256_loadu_ps(b + j)));
        }
    for (; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(load_h(x, res, s, j, m, full), vmean), rstd);
        __m256 wv = load_opt(w, j, m, full, 1.0f), bv = load_opt(b, j, m, full, 0.0f);
        store(y, j, m, full, _mm256_fmadd_ps(v, wv, bv));
    }
}

static inline __attribute__((always_inline)) void rms_norm_row(const float *x, const float *res, float *s,
                                                              const float *w, float *y, int cols, float eps) {
    const __m256i ones = _mm256_set1_epi32(-1);
    const float ms = row_sum(x, res, s, NULL, cols, SUM_SQUARES, 0.0f) / (float)cols;
    const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(ms + eps));
    int j = 0;
    if (w) /* the usual case, without per-vector tests; the loop below does the same arithmetic */
        for (; j + 8 <= cols; j += 8) {
            __m256 v = _mm256_mul_ps(load_h(x, res, s, j, ones, 1), rstd);
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), v));
        }
    for (; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 v = _mm256_mul_ps(load_h(x, res, s, j, m, full), rstd);
        store(y, j, m, full, _mm256_mul_ps(load_opt(w, j, m, full, 1.0f), v));
    }
}

/* Arguments of one norm call, for the row ranges run by pt_parallel_ranges. */
typedef struct {
    const float *x, *residual, *weight, *bias;
    float *sum_out, *y;
    ptrdiff_t ldx, ldr, lds, ldy;
    int cols, rms;
    float eps;
} norm_job;

/* One row of either norm. Always inlined into norm_rows' cases below, where the pointers that are
 * absent are constant NULLs, so the per-vector tests on them fold away (with them, a 512-wide row
 * took ~14 instructions per 8 floats per pass). */
static inline __attribute__((always_inline)) void norm_row(const norm_job *j, const float *x, const float *res,
                                                          float *s, const float *w, const float *b, float *y) {
    if (j->rms)
        rms_norm_row(x, res, s, w, y, j->cols, j->eps);
    else
        layer_norm_row(x, res, s, w, b, y, j->cols, j->eps);
}

static void norm_rows(void *ctx, int lo, int hi) {
    const norm_job *j = (const norm_job *)ctx;
    for (int r = lo; r < hi; r++) {
        const float *x = j->x + (ptrdiff_t)r * j->ldx;
        const float *res = j->residual ? j->residual + (ptrdiff_t)r * j->ldr : NULL;
        float *s = j->sum_out ? j->sum_out + (ptrdiff_t)r * j->lds : NULL;
        float *y = j->y + (ptrdiff_t)r * j->ldy;
        /* the cases the models use: post-norm (x alone) and pre-norm (x + residual, kept in s) */
        if (res == NULL && s == NULL)
            norm_row(j, x, NULL, NULL, j->weight, j->bias, y);
        else if (res != NULL && s != NULL)
            norm_row(j, x, res, s, j->weight, j->bias, y);
        else
            norm_row(j, x, res, s, j->weight, j->bias, y);
    }
}

static int run_norm(const norm_job *j, int rows, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * j->cols < PT_NORM_PARALLEL_GRAIN || rows < 2) nt = 1;
    pt_parallel_ranges(nt, rows, norm_rows, (void *)j);
    return PT_OK;
}

/* weight == NULL is accepted as all ones (no affine scale). */
int pt_layer_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                       float *sum_out, ptrdiff_t lds, const float *weight, const float *bias,
                       float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    norm_job j = {x, residual, weight, bias, sum_out, y, ldx, ldr, lds, ldy, cols, 0, eps};
    return run_norm(&j, rows, nthreads);
}

int pt_rms_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                     float *sum_out, ptrdiff_t lds, const float *weight,
                     float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    norm_job j = {x, residual, weight, NULL, sum_out, y, ldx, ldr, lds, ldy, cols, 1, eps};
    return run_norm(&j, rows, nthreads);
}

#else /* built without AVX2 */

int pt_layer_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                       float *sum_out, ptrdiff_t lds, const float *weight, const float *bias,
                       float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    (void)x; (void)ldx; (void)residual; (void)ldr; (void)sum_out; (void)lds; (void)weight; (void)bias;
    (void)y; (void)ldy; (void)rows; (void)cols; (void)eps; (void)nthreads;
    return PT_ERR_ISA;
}

int pt_rms_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                     float *sum_out, ptrdiff_t lds, const float *weight,
                     float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    (void)x; (void)ldx; (void)residual; (void)ldr; (void)sum_out; (void)lds; (void)weight;
    (void)y; (void)ldy; (void)rows; (void)cols; (void)eps; (void)nthreads;
    return PT_ERR_ISA;
}

#endif
