/* pt_screen_generic.c - bfloat16 packing with its error sums (portable build), the screened argmax
 * of a greedy step, the threaded driver of the screening GEMM and its portable path. */
#include <float.h>
#include <math.h>
#include <string.h>
#include "pt_screen.h"
#include "pt_screen_pack.h"
#include "pt_gemm.h"

int pt_pack_bf16_generic(const float *packed, int k, int n, uint16_t *out, double *sq_w, double *sq_d) {
    return pt_pack_bf16_body(packed, k, n, out, sq_w, sq_d);
}

/* Beyond this ||x|| * max ||w_j|| + max |bias| a logit might overflow float32. */
#define PT_SCREEN_MAGNITUDE_LIMIT 1e36

int pt_screen_argmax(const pt_screen *s, pt_gemm_bf16_fn approx, pt_gemm_packed_fn exact,
                     const float *x, ptrdiff_t ldx, int m, const uint8_t *banned, int max_cand,
                     int nthreads, float *g, int32_t *cand, long long *tokens) {
    if (s == NULL || approx == NULL || exact == NULL || x == NULL || g == NULL || cand == NULL ||
        tokens == NULL || m < 1 || m > PT_SCREEN_MAX_ROWS || max_cand < 1 || s->n < 1 || s->k < 1)
        return -PT_ERR_ARG;
    int n = s->n, k = s->k;
    double norm[PT_SCREEN_MAX_ROWS];
    for (int i = 0; i < m; i++) {
        double sum = 0.0;
        for (int kk = 0; kk < k; kk++) {
            double v = x[(ptrdiff_t)i * ldx + kk];
            sum += v * v;
        }
        norm[i] = sqrt(sum);
        if (!(norm[i] * s->w_norm_max + s->bias_max <= PT_SCREEN_MAGNITUDE_LIMIT)) return 0;  /* also NaN */
    }
    int status = approx(x, ldx, s->rp, s->bias, g, n, m, n, k, nthreads);
    if (status != PT_OK) return -status;
    const double rel = s->rel, abs_err = s->abs_err;
    for (int i = 0; i < m; i++) {
        const float *gi = g + (size_t)i * n;
        const double xn = norm[i];
        /* lower bound of the exact maximum: that of the allowed column with the largest g */
        int top = -1;
        for (int j = 0; j < n; j++)
            if ((banned == NULL || !banned[j]) && (top < 0 || gi[j] > gi[top])) top = j;
        if (top < 0) return 0;
        double gt = gi[top];
        double low = gt - (xn * s->err[top] + rel * fabs(gt) + abs_err);
        /* cheap float prefilter with the largest err: g_j + e_j >= low needs
         * g_j (1 +- rel) >= low - (xn * err_max + abs_err) whatever the sign of g_j */
        double reach = low - (xn * s->err_max + abs_err);
        double t = fmin(reach / (1.0 + rel), reach / (1.0 - rel));
        float t32 = t < -FLT_MAX ? -HUGE_VALF : (float)t;          /* |t| < 1e37 here, but be safe */
        if ((double)t32 > t) t32 = nextafterf(t32, -HUGE_VALF);   /* round down, never up */
        int count = 0;
        for (int j = 0; j < n; j++) {
            float v = gi[j];
            if (v < t32 || (banned != NULL && banned[j])) continue;
            if ((double)v + (xn * s->err[j] + rel * fabs((double)v) + abs_err) >= low) {
                if (count == max_cand) return 0;
                cand[count++] = j;
            }
        }
        /* exact float32 logits of the candidates' panels (ascending), first maximum wins */
        long long best = -1;
        float best_v = 0.0f;
        const float *xi = x + (ptrdiff_t)i * ldx;
        for (int c = 0; c < count;) {
            int j0 = cand[c] / PT_NR * PT_NR;
            int cols = n - j0 < PT_NR ? n - j0 : PT_NR;
            float vals[PT_NR];
            status = exact(xi, k, s->bp + (size_t)j0 * k, s->bias != NULL ? s->bias + j0 : NULL,
                           NULL, 0, vals, cols, 1, cols, k, PT_ACT_NONE, 1);
            if (status != PT_OK) return -status;
            for (; c < count && cand[c] < j0 + PT_NR; c++) {
                float v = vals[cand[c] - j0];
                if (best < 0 || v > best_v) {
                    best = cand[c];
                    best_v = v;
                }
            }
        }
        tokens[i] = best;
    }
    return 1;
}

/* Panels per chunk of work: 8 panels of k = 512 are 128 KiB of bf16. */
#define PT_SCREEN_CHUNK_PANELS 8

/* Rows [r0, r1) x panels [p0, p1) on the calling thread. */
static void screen_region(const pt_screen_tiles *tiles, const float *a, ptrdiff_t lda, const uint16_t *rp,
                          const float *bias, float *c, ptrdiff_t ldc, int r0, int r1, int p0, int p1,
                          int n, int k) {
    float tile[PT_SCREEN_MAX_ROWS * PT_SCREEN_MAX_NP * PT_NR];
    int rows = r1 - r0;
    size_t pstride = (size_t)k * PT_NR;
    const float *arow = a + (ptrdiff_t)r0 * lda;
    for (int p = p0; p < p1;) {
        int np = tiles->wide_np[rows] <= p1 - p ? tiles->wide_np[rows] : 1;
        (np > 1 ? tiles->wide[rows] : tiles->one[rows])(arow, lda, rp + (size_t)p * pstride, pstride, k, tile);
        for (int r = 0; r < rows; r++) {
            float *out = c + (ptrdiff_t)(r0 + r) * ldc;
            for (int j = p * PT_NR; j < (p + np) * PT_NR && j < n; j++) {
                float v = tile[r * np * PT_NR + (j - p * PT_NR)];
                out[j] = bias != NULL ? v + bias[j] : v;
            }
        }
        p += np;
    }
}

int pt_screen_drive(const pt_screen_tiles *tiles, const float *a, ptrdiff_t lda, const uint16_t *rp,
                    const float *bias, float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    if (tiles == NULL || a == NULL || rp == NULL || c == NULL || m < 1 || n < 1 || k < 1 || nthreads < 1 ||
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
            screen_region(tiles, a, lda, rp, bias, c, ldc, r0, r1, p0, p1, n, k);
        }
    });
    return PT_OK;
}

/* Portable tiles: MR rows x one panel, a plain multiply and add per value. */
#define PT_DEFINE_SCREEN_GENERIC(MR)                                                                       \
    static void screen_generic_##MR(const float *a, ptrdiff_t lda, const uint16_t *rp, size_t pstride,     \
                                    int k, float *tile) {                                                  \
        (void)pstride;                                                                                     \
        float acc[MR][PT_NR] = {{0}};                                                                      \
        for (int kk = 0; kk < k; kk++)                                                                     \
            for (int r = 0; r < MR; r++) {                                                                 \
                float av = a[r * lda + kk];                                                                \
                for (int jj = 0; jj < PT_NR; jj++)                                                         \
                    acc[r][jj] += av * pt_bf16_to_float(rp[(size_t)kk * PT_NR + jj]);                     \
            }                                                                                              \
        memcpy(tile, acc, sizeof acc);                                                                     \
    }
PT_DEFINE_SCREEN_GENERIC(1)
PT_DEFINE_SCREEN_GENERIC(2)
PT_DEFINE_SCREEN_GENERIC(3)
PT_DEFINE_SCREEN_GENERIC(4)

static const pt_screen_tiles tiles_generic = {
    {NULL, screen_generic_1, screen_generic_2, screen_generic_3, screen_generic_4},
    {NULL, screen_generic_1, screen_generic_2, screen_generic_3, screen_generic_4},
    {0, 1, 1, 1, 1},
};

int pt_gemm_bf16_generic(const float *a, ptrdiff_t lda, const uint16_t *rp, const float *bias,
                         float *c, ptrdiff_t ldc, int m, int n, int k, int nthreads) {
    return pt_screen_drive(&tiles_generic, a, lda, rp, bias, c, ldc, m, n, k, nthreads);
}
