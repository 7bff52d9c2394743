/* pt_screen_generic.c - the 8-bit copy with its error sums (portable build), the quantized row, the
 * screened argmax of a greedy step, the threaded driver of the screen's integer dot products and
 * their portable path. */
#include <float.h>
#include <math.h>
#include <string.h>
#include "pt_screen.h"
#include "pt_screen_pack.h"
#include "pt_gemm.h"

int pt_screen_groups(int k) {
    return k < 1 ? 0 : (k + PT_SCREEN_GROUP - 1) / PT_SCREEN_GROUP;
}

size_t pt_screen_q_size(int k, int n) {
    if (k < 1 || n < 1) return 0;
    return (size_t)((n + PT_NR - 1) / PT_NR) * (size_t)pt_screen_groups(k) * PT_SCREEN_GROUP_BYTES;
}

typedef struct {
    pt_pack_i8_range_fn range;
    const float *packed;
    int k, n;
    int8_t *q;
    double *scale, *sq_w, *sq_d;
    int32_t *qsum;
} pack_i8_job;

static void pack_i8_panels(void *ctx, int p0, int p1) {
    const pack_i8_job *j = (const pack_i8_job *)ctx;
    j->range(j->packed, j->k, j->n, j->q, j->scale, j->qsum, j->sq_w, j->sq_d, p0, p1);
}

int pt_pack_i8_drive(pt_pack_i8_range_fn range, const float *packed, int k, int n, int8_t *q, double *scale,
                     int32_t *qsum, double *sq_w, double *sq_d, int nthreads) {
    if (!pt_screen_pack_args_ok(packed, k, n, q, scale, qsum, sq_w, sq_d) || nthreads < 1) return PT_ERR_ARG;
    pack_i8_job j = {range, packed, k, n, q, scale, sq_w, sq_d, qsum};
    pt_team_ranges((size_t)k * (size_t)n < PT_PACK_PARALLEL_FLOATS ? 1 : nthreads, (n + PT_NR - 1) / PT_NR,
                   pack_i8_panels, &j);
    return PT_OK;
}

static void pack_i8_range_generic(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                                  double *sq_w, double *sq_d, int p0, int p1) {
    int groups = pt_screen_groups(k);
    for (int p = p0; p < p1; p++) {
        const float *src = packed + (size_t)p * k * PT_NR;
        int8_t *dst = q + (size_t)p * groups * PT_SCREEN_GROUP_BYTES;
        float amax[PT_NR] = {0}, s[PT_NR], inv[PT_NR], w2[PT_NR] = {0}, d2[PT_NR] = {0};
        int32_t sum[PT_NR] = {0};
        for (int kk = 0; kk < k; kk++)
            for (int jj = 0; jj < PT_NR; jj++) {
                float a = fabsf(src[(size_t)kk * PT_NR + jj]);
                amax[jj] = amax[jj] > a ? amax[jj] : a;
            }
        for (int jj = 0; jj < PT_NR; jj++) pt_screen_column_scale(amax[jj], &s[jj], &inv[jj]);
        memset(dst, 0, (size_t)groups * PT_SCREEN_GROUP_BYTES);
        for (int kk = 0; kk < k; kk++) {     /* the operations listed in pt_screen_pack.h */
            int8_t *grp = dst + (size_t)(kk / PT_SCREEN_GROUP) * PT_SCREEN_GROUP_BYTES + kk % PT_SCREEN_GROUP;
            for (int jj = 0; jj < PT_NR; jj++) {
                float w = src[(size_t)kk * PT_NR + jj];
                float v = w * inv[jj];
                v = v < (float)PT_SCREEN_Q_MAX ? v : (float)PT_SCREEN_Q_MAX;
                v = v > -(float)PT_SCREEN_Q_MAX ? v : -(float)PT_SCREEN_Q_MAX;
                float r = (v + PT_SCREEN_MAGIC) - PT_SCREEN_MAGIC;
                int32_t iq = (int32_t)r;
                grp[jj * PT_SCREEN_GROUP] = (int8_t)iq;
                sum[jj] += iq;
                float d = w - r * s[jj];
                w2[jj] += w * w;
                d2[jj] += d * d;
            }
        }
        pt_screen_panel_finish(p, k, n, s, sum, w2, d2, scale, qsum, sq_w, sq_d);
    }
}

int pt_pack_i8_generic(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                       double *sq_w, double *sq_d, int nthreads) {
    return pt_pack_i8_drive(pack_i8_range_generic, packed, k, n, q, scale, qsum, sq_w, sq_d, nthreads);
}

int pt_screen_quantize(const float *x, ptrdiff_t ldx, int m, int k, uint32_t *hi, uint32_t *lo,
                       double *sx, double *x_norm, double *e_norm) {
    int groups = pt_screen_groups(k);
    for (int i = 0; i < m; i++) {
        const float *xi = x + (ptrdiff_t)i * ldx;
        double amax = 0.0, sum = 0.0;
        for (int kk = 0; kk < k; kk++) {
            double v = xi[kk];
            sum += v * v;
            amax = fabs(v) > amax ? fabs(v) : amax;
        }
        if (!(sum <= DBL_MAX)) return 0;                   /* inf or NaN */
        int e = 0;
        if (amax > 0.0) {
            (void)frexp(amax, &e);                         /* amax = f 2^e, f in [0.5, 1) */
            e -= 13;                                       /* amax / 2^e = 8192 f in [4096, 8192) */
        }
        double s = ldexp(1.0, e), inv = ldexp(1.0, -e);   /* e in [-162, 115]: exact doubles */
        double esum = 0.0;
        uint32_t *h = hi + (size_t)i * groups, *l = lo + (size_t)i * groups;
        memset(h, 0, (size_t)groups * sizeof *h);
        memset(l, 0, (size_t)groups * sizeof *l);
        for (int kk = 0; kk < k; kk++) {
            double v = nearbyint(xi[kk] * inv);            /* exact scaling, rounded to nearest */
            v = v > PT_SCREEN_X_MAX ? PT_SCREEN_X_MAX : v < -PT_SCREEN_X_MAX ? -PT_SCREEN_X_MAX : v;
            double err = xi[kk] - v * s;                   /* exact in float64 */
            esum += err * err;
            uint32_t u = (uint32_t)((int32_t)v + PT_SCREEN_X_OFFSET);   /* 1..16383 */
            int shift = 8 * (kk % PT_SCREEN_GROUP);
            h[kk / PT_SCREEN_GROUP] |= (u >> 7) << shift;
            l[kk / PT_SCREEN_GROUP] |= (u & 127u) << shift;
        }
        sx[i] = s;
        x_norm[i] = sqrt(sum);
        e_norm[i] = sqrt(esum);
    }
    return 1;
}

/* Columns per block of the scans over the approximate logits: a block's maximum (a loop the
 * compiler vectorizes) decides whether its values need a closer look, which few blocks do. */
#define PT_SCREEN_SCAN 32

static float block_max(const float *v, int len) {
    float m = v[0];
    if (len == PT_SCREEN_SCAN) {   /* 8 lanes side by side (no reassociation for the compiler to prove) */
        float lane[8];
        for (int l = 0; l < 8; l++) lane[l] = v[l];
        for (int j = 8; j < PT_SCREEN_SCAN; j += 8)
            for (int l = 0; l < 8; l++) lane[l] = v[j + l] > lane[l] ? v[j + l] : lane[l];
        m = lane[0];
        for (int l = 1; l < 8; l++) m = lane[l] > m ? lane[l] : m;
        return m;
    }
    for (int j = 1; j < len; j++) m = v[j] > m ? v[j] : m;
    return m;
}

/* The first index of the largest of g[0..n) not marked in banned (NULL: none), or -1 when every
 * column is banned. g holds no NaN. */
static int first_allowed_max(const float *g, int n, const uint8_t *banned) {
    int top = -1;
    for (int j0 = 0; j0 < n; j0 += PT_SCREEN_SCAN) {
        int j1 = n - j0 < PT_SCREEN_SCAN ? n : j0 + PT_SCREEN_SCAN;
        /* a block can only hold a new maximum (a later index needs a strictly larger value) if
         * its own maximum is larger */
        if (top >= 0 && !(block_max(g + j0, j1 - j0) > g[top])) continue;
        for (int j = j0; j < j1; j++)
            if ((banned == NULL || !banned[j]) && (top < 0 || g[j] > g[top])) top = j;
    }
    return top;
}

/* Beyond this ||x|| * max ||w_j|| + max |bias| a logit might overflow float32. */
#define PT_SCREEN_MAGNITUDE_LIMIT 1e36

/* One row of pt_screen_argmax after its approximate logits gi: 1 with *token set, 0 to decline,
 * or a PT_ERR_* code negated. */
static int select_row(const pt_screen *s, pt_gemm_packed_fn exact, const float *xi, const float *gi,
                      double norm, double enorm, const uint8_t *banned, int max_cand, int32_t *cand,
                      long long *token) {
    const int n = s->n, k = s->k;
    const double rel = s->rel;
    const double xn = norm * s->slack;
    /* the row's quantization error, the same for every column (bounded with max ||r_j||) */
    const double c0 = enorm * s->w_norm_max * s->slack + s->abs_err;
    /* lower bound of the exact maximum: that of the allowed column with the largest g */
    int top = first_allowed_max(gi, n, banned);
    if (top < 0) return 0;
    double gt = gi[top];
    double low = gt - (xn * s->err[top] + rel * fabs(gt) + c0);
    /* cheap float prefilter with the largest err: g_j + e_j >= low needs
     * g_j (1 +- rel) >= low - (xn * err_max + c0) whatever the sign of g_j */
    double reach = low - (xn * s->err_max + c0);
    double t = fmin(reach / (1.0 + rel), reach / (1.0 - rel));
    float t32 = t < -FLT_MAX ? -HUGE_VALF : (float)t;          /* |t| < 1e37 here, but be safe */
    if ((double)t32 > t) t32 = nextafterf(t32, -HUGE_VALF);   /* round down, never up */
    int count = 0;
    for (int j0 = 0; j0 < n; j0 += PT_SCREEN_SCAN) {
        int j1 = n - j0 < PT_SCREEN_SCAN ? n : j0 + PT_SCREEN_SCAN;
        if (block_max(gi + j0, j1 - j0) < t32) continue;
        for (int j = j0; j < j1; j++) {
            float v = gi[j];
            if (v < t32 || (banned != NULL && banned[j])) continue;
            if ((double)v + (xn * s->err[j] + rel * fabs((double)v) + c0) >= low) {
                if (count == max_cand) return 0;
                cand[count++] = j;
            }
        }
    }
    /* exact float32 logits of the candidates' panels (ascending), first maximum wins */
    long long best = -1;
    float best_v = 0.0f;
    for (int c = 0; c < count;) {
        int j0 = cand[c] / PT_NR * PT_NR;
        int cols = n - j0 < PT_NR ? n - j0 : PT_NR;
        float vals[PT_NR];
        int status = exact(xi, k, s->bp + (size_t)j0 * k, s->bias != NULL ? s->bias + j0 : NULL,
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
    *token = best;
    return 1;
}

/* One screened call's rows, for select_task. */
typedef struct {
    const pt_screen *s;
    pt_gemm_packed_fn exact;
    const float *x;
    ptrdiff_t ldx;
    const float *g;
    const double *norm, *enorm;
    const uint8_t *banned;
    int max_cand;
    int32_t *cand;
    long long *tokens;
    int *result;
} select_job;

static void select_task(void *ctx, int i) {
    const select_job *j = (const select_job *)ctx;
    j->result[i] = select_row(j->s, j->exact, j->x + (ptrdiff_t)i * j->ldx, j->g + (size_t)i * j->s->n, j->norm[i],
                              j->enorm[i], j->banned, j->max_cand, j->cand + (size_t)i * j->max_cand, &j->tokens[i]);
}

int pt_screen_argmax(const pt_screen *s, pt_screen_logits_fn approx, pt_gemm_packed_fn exact,
                     const float *x, ptrdiff_t ldx, int m, const uint8_t *banned, int max_cand,
                     int nthreads, uint32_t *digits, float *g, int32_t *cand, long long *tokens) {
    if (s == NULL || approx == NULL || exact == NULL || x == NULL || digits == NULL || g == NULL ||
        cand == NULL || tokens == NULL || m < 1 || m > PT_SCREEN_MAX_ROWS || max_cand < 1 || s->n < 1 ||
        s->k < 1)
        return -PT_ERR_ARG;
    int k = s->k, groups = pt_screen_groups(k);
    double sx[PT_SCREEN_MAX_ROWS], norm[PT_SCREEN_MAX_ROWS], enorm[PT_SCREEN_MAX_ROWS];
    uint32_t *hi = digits, *lo = digits + (size_t)m * groups;
    if (!pt_screen_quantize(x, ldx, m, k, hi, lo, sx, norm, enorm)) return 0;
    for (int i = 0; i < m; i++)
        if (!(norm[i] * s->w_norm_max + s->bias_max <= PT_SCREEN_MAGNITUDE_LIMIT)) return 0;
    int status = approx(s, hi, lo, sx, m, g, nthreads);
    if (status != PT_OK) return -status;
    int result[PT_SCREEN_MAX_ROWS];
    int nt = m < nthreads ? m : nthreads;
    select_job j = {s, exact, x, ldx, g, norm, enorm, banned, max_cand, cand, tokens, result};
    pt_parallel_tasks(nt, m, select_task, &j);
    int ret = 1;
    for (int i = 0; i < m; i++) {
        if (result[i] < 0) return result[i];
        if (result[i] == 0) ret = 0;
    }
    return ret;
}

/* Panels per chunk of work. With more than PT_SCREEN_TILE_ROWS rows every group of rows sweeps the
 * chunk again, so it should stay in L2: 16 panels of k = 512 are 128 KiB of the copy. With at most
 * that many rows the chunk is read once, and every chunk a thread takes starts a new stream from
 * memory: 64 panels (512 KiB) there. Screened logits of one row (opus-mt-size copy, 29.7 MB, 2
 * threads, L3 flushed, sizes alternated) on the AMD EPYC (Zen 4): in its fast-memory periods (the
 * read probe at 47-53 GB/s) 36.7 -> 41.5 GB/s from 16 to 64 panels (4 panels: 24.3; 454 or 908:
 * 37), in its slow ones (31-33 GB/s) 33.0 -> 33.8. Greedy decoding (32 tokens, alternated, 2
 * threads): batches 2 and 4 0.97-0.99x the time, batch 1 0.985x (slow periods) and 1.007x (fast). */
#define PT_SCREEN_CHUNK_PANELS 16
#define PT_SCREEN_CHUNK_PANELS_ONE_SWEEP 64

/* One row of a tile's approximate logits: sum xq q = sum (xq + 8192) q - 8192 sum q, exact; times
 * two powers of two, exact; the bias add rounds in float64 and the store to float32. Plain loops
 * over columns, which the compiler vectorizes. */
static void screen_epilogue(const double *restrict acc, const int32_t *restrict qsum, const double *restrict scale,
                            const float *restrict bias, double sx, float *restrict out, int cols) {
    if (bias != NULL)
        for (int j = 0; j < cols; j++)
            out[j] = (float)((acc[j] - (double)PT_SCREEN_X_OFFSET * qsum[j]) * scale[j] * sx + bias[j]);
    else
        for (int j = 0; j < cols; j++)
            out[j] = (float)((acc[j] - (double)PT_SCREEN_X_OFFSET * qsum[j]) * scale[j] * sx);
}

/* Rows [0, m) x panels [p0, p1) on the calling thread, PT_SCREEN_TILE_ROWS rows at a time (the
 * chunk's panels stay in L2 for the next group). */
static void screen_region(const pt_screen_tiles *tiles, const pt_screen *s, const uint32_t *hi,
                          const uint32_t *lo, const double *sx, int m, float *g, int p0, int p1) {
    int32_t part[PT_SCREEN_TILE_ROWS * PT_NR];
    double acc[PT_SCREEN_TILE_ROWS * PT_NR];
    int n = s->n, groups = pt_screen_groups(s->k);
    size_t pstride = (size_t)groups * PT_SCREEN_GROUP_BYTES;
    for (int r0 = 0; r0 < m; r0 += PT_SCREEN_TILE_ROWS) {
        int rows = m - r0 < PT_SCREEN_TILE_ROWS ? m - r0 : PT_SCREEN_TILE_ROWS;
        const uint32_t *h = hi + (size_t)r0 * groups, *l = lo + (size_t)r0 * groups;
        pt_screen_tile_fn fn = tiles->rows[rows];
        int vals = rows * PT_NR;
        for (int p = p0; p < p1; p++) {
            for (int v = 0; v < vals; v++) acc[v] = 0.0;
            for (int g0 = 0; g0 < groups; g0 += PT_SCREEN_BLOCK_GROUPS) {
                int g1 = groups - g0 < PT_SCREEN_BLOCK_GROUPS ? groups : g0 + PT_SCREEN_BLOCK_GROUPS;
                fn(h, l, groups, s->q + (size_t)p * pstride, g0, g1, part);
                for (int v = 0; v < vals; v++) acc[v] += part[v];      /* exact: |sum| < 2^53 */
            }
            int j0 = p * PT_NR, cols = j0 + PT_NR < n ? PT_NR : n - j0;
            for (int r = 0; r < rows; r++)
                screen_epilogue(acc + r * PT_NR, s->qsum + j0, s->scale + j0,
                                s->bias != NULL ? s->bias + j0 : NULL, sx[r0 + r], g + (size_t)(r0 + r) * n + j0, cols);
        }
    }
}

typedef struct {
    const pt_screen_tiles *tiles;
    const pt_screen *s;
    const uint32_t *hi, *lo;
    const double *sx;
    float *g;
    int m, npanels, chunk;
} screen_job;

static void screen_chunk(void *ctx, int ch) {
    const screen_job *j = (const screen_job *)ctx;
    int p0 = ch * j->chunk;
    int p1 = p0 + j->chunk < j->npanels ? p0 + j->chunk : j->npanels;
    screen_region(j->tiles, j->s, j->hi, j->lo, j->sx, j->m, j->g, p0, p1);
}

int pt_screen_drive(const pt_screen_tiles *tiles, const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                    const double *sx, int m, float *g, int nthreads) {
    if (tiles == NULL || s == NULL || s->q == NULL || s->scale == NULL || s->qsum == NULL || hi == NULL ||
        lo == NULL || sx == NULL || g == NULL || m < 1 || m > PT_SCREEN_MAX_ROWS || s->n < 1 || s->k < 1 ||
        nthreads < 1)
        return PT_ERR_ARG;
    screen_job j = {tiles, s, hi, lo, sx, g, m, (s->n + PT_NR - 1) / PT_NR,
                    m <= PT_SCREEN_TILE_ROWS ? PT_SCREEN_CHUNK_PANELS_ONE_SWEEP : PT_SCREEN_CHUNK_PANELS};
    /* at least 4 chunks per thread, so that the threads still share the work evenly */
    while (j.chunk > PT_SCREEN_CHUNK_PANELS && j.npanels < 4 * j.chunk * nthreads) j.chunk /= 2;
    int chunks = (j.npanels + j.chunk - 1) / j.chunk;
    int nt = chunks < nthreads ? chunks : nthreads;
    pt_parallel_tasks(nt, chunks, screen_chunk, &j);
    return PT_OK;
}

/* Portable tiles: MR rows x one panel, 32-bit integer multiply-adds. */
#define PT_DEFINE_SCREEN_GENERIC(MR)                                                                       \
    static void screen_generic_##MR(const uint32_t *hi, const uint32_t *lo, int ldg, const int8_t *qp,     \
                                    int g0, int g1, int32_t *tile) {                                       \
        int32_t acc[MR][PT_NR] = {{0}};                                                                    \
        for (int gg = g0; gg < g1; gg++) {                                                                 \
            const int8_t *grp = qp + (size_t)gg * PT_SCREEN_GROUP_BYTES;                                   \
            for (int r = 0; r < MR; r++) {                                                                 \
                uint32_t h = hi[(size_t)r * ldg + gg], l = lo[(size_t)r * ldg + gg];                       \
                for (int t = 0; t < PT_SCREEN_GROUP; t++) {                                                \
                    int32_t u = (int32_t)(((h >> (8 * t)) & 127u) * 128u + ((l >> (8 * t)) & 127u));       \
                    for (int jj = 0; jj < PT_NR; jj++) acc[r][jj] += u * grp[jj * PT_SCREEN_GROUP + t];    \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        memcpy(tile, acc, sizeof acc);                                                                     \
    }
PT_DEFINE_SCREEN_GENERIC(1)
PT_DEFINE_SCREEN_GENERIC(2)
PT_DEFINE_SCREEN_GENERIC(3)
PT_DEFINE_SCREEN_GENERIC(4)

static const pt_screen_tiles tiles_generic = {
    {NULL, screen_generic_1, screen_generic_2, screen_generic_3, screen_generic_4},
};

int pt_screen_logits_generic(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                             const double *sx, int m, float *g, int nthreads) {
    return pt_screen_drive(&tiles_generic, s, hi, lo, sx, m, g, nthreads);
}
