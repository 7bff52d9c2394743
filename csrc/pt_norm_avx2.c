/* pt_norm_avx2.c - AVX2+FMA layer norm and RMS norm, each optionally fused with a residual add. */
#include <math.h>
#include "pt_norm.h"
#include "pt_simd_avx2.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(PT_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__)

#define PT_NORM_PARALLEL_GRAIN 16384

/* Same passes and aliasing rules as the portable version (see pt_norm_generic.c): each pass reads a
 * vector before writing the same vector; passes after the first read h from sum_out when it exists.
 * Sums use 8 lane accumulators reduced in a fixed order; tails are masked loads (zeros add nothing). */

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

/* First pass shared by both norms: h = x + res (stored to s), returns sum(h) or sum(h^2). */
static float first_pass(const float *x, const float *res, float *s, int cols, int squares) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi32(-1);
    for (int j = 0; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 h = load_h(x, res, NULL, j, m, full);
        if (s) store(s, j, m, full, h);
        acc = squares ? _mm256_fmadd_ps(h, h, acc) : _mm256_add_ps(acc, h);
    }
    return pt_hsum256(acc);
}

static void layer_norm_row(const float *x, const float *res, float *s, const float *w, const float *b,
                           float *y, int cols, float eps) {
    const __m256i ones = _mm256_set1_epi32(-1);
    const float mean = first_pass(x, res, s, cols, 0) / (float)cols;
    const __m256 vmean = _mm256_set1_ps(mean);
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 d = _mm256_sub_ps(load_h(x, res, s, j, m, full), vmean);
        if (!full) d = _mm256_and_ps(d, _mm256_castsi256_ps(m)); /* masked lanes held 0 - mean */
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(pt_hsum256(acc) / (float)cols + eps));
    for (int j = 0; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(load_h(x, res, s, j, m, full), vmean), rstd);
        __m256 wv = load_opt(w, j, m, full, 1.0f), bv = load_opt(b, j, m, full, 0.0f);
        store(y, j, m, full, _mm256_fmadd_ps(v, wv, bv));
    }
}

static void rms_norm_row(const float *x, const float *res, float *s, const float *w, float *y, int cols,
                         float eps) {
    const __m256i ones = _mm256_set1_epi32(-1);
    const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(first_pass(x, res, s, cols, 1) / (float)cols + eps));
    for (int j = 0; j < cols; j += 8) {
        int full = j + 8 <= cols;
        __m256i m = full ? ones : pt_tail_mask(cols - j);
        __m256 v = _mm256_mul_ps(load_h(x, res, s, j, m, full), rstd);
        store(y, j, m, full, _mm256_mul_ps(load_opt(w, j, m, full, 1.0f), v));
    }
}

/* weight == NULL is accepted as all ones (no affine scale). */
int pt_layer_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                       float *sum_out, ptrdiff_t lds, const float *weight, const float *bias,
                       float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_NORM_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows, layer_norm_row(x + (ptrdiff_t)r * ldx, residual ? residual + (ptrdiff_t)r * ldr : NULL,
                       sum_out ? sum_out + (ptrdiff_t)r * lds : NULL, weight, bias, y + (ptrdiff_t)r * ldy,
                       cols, eps);
    );
    (void)nt;
    return PT_OK;
}

int pt_rms_norm_avx2(const float *x, ptrdiff_t ldx, const float *residual, ptrdiff_t ldr,
                     float *sum_out, ptrdiff_t lds, const float *weight,
                     float *y, ptrdiff_t ldy, int rows, int cols, float eps, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_NORM_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows, rms_norm_row(x + (ptrdiff_t)r * ldx, residual ? residual + (ptrdiff_t)r * ldr : NULL,
                     sum_out ? sum_out + (ptrdiff_t)r * lds : NULL, weight, y + (ptrdiff_t)r * ldy, cols, eps);
    );
    (void)nt;
    return PT_OK;
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
