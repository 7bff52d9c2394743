/* pt_embedding.c - token embedding gather (with scale and added positions) and sinusoidal position tables. */
#include <math.h>
#include "pt_embedding.h"
#include "pt_gemm.h"

/* Every id is checked before anything is written, so a bad id leaves out untouched. */
static int check_ids(const int32_t *ids, int n, int vocab, int *bad_index) {
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab) {
            if (bad_index) *bad_index = i;
            return PT_ERR_INDEX;
        }
    }
    return PT_OK;
}

/* Below this many output floats one thread does the whole gather (a decode step's few tokens). */
#define PT_EMBED_PARALLEL_GRAIN 32768

/* One gather's arguments, for the token ranges run by pt_parallel_ranges. */
typedef struct {
    const int32_t *ids;
    const float *table, *positions;
    float *out;
    ptrdiff_t ldt, ldp, ldo;
    int d, packed;
    float scale;
} embed_job;

static void embed_rows(void *ctx, int lo, int hi) {
    const embed_job *e = (const embed_job *)ctx;
    const int d = e->d;
    for (int i = lo; i < hi; i++) {
        float *o = e->out + (ptrdiff_t)i * e->ldo;
        const float *p = e->positions ? e->positions + (ptrdiff_t)i * e->ldp : NULL;
        if (e->packed) {
            /* column ids[i] % PT_NR of panel ids[i] / PT_NR: element j at j * PT_NR (pt_packed_get) */
            const float *col = e->table + (size_t)(e->ids[i] / PT_NR) * (size_t)d * PT_NR + e->ids[i] % PT_NR;
            for (int j = 0; j < d; j++) {
                float v = col[(size_t)j * PT_NR] * e->scale;
                o[j] = p ? v + p[j] : v;
            }
        } else {
            const float *row = e->table + (ptrdiff_t)e->ids[i] * e->ldt;
            if (p)
                for (int j = 0; j < d; j++) o[j] = row[j] * e->scale + p[j];
            else
                for (int j = 0; j < d; j++) o[j] = row[j] * e->scale;
        }
    }
}

static int gather(const embed_job *e, int n, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)n * e->d < PT_EMBED_PARALLEL_GRAIN) nt = 1;
    pt_parallel_ranges(nt, n, embed_rows, (void *)e);
    return PT_OK;
}

// ids: (n,); table: (vocab, d) row stride ldt; positions: (n, d) row stride ldp or NULL; out: (n, d) row stride ldo
int pt_embedding(const int32_t *ids, int n, const float *table, ptrdiff_t ldt, int vocab, int d,
                 float scale, const float *positions, ptrdiff_t ldp, float *out, ptrdiff_t ldo,
                 int *bad_index, int nthreads) {
    if (!ids || !table || !out || n <= 0 || vocab <= 0 || d <= 0) return PT_ERR_ARG;
    int st = check_ids(ids, n, vocab, bad_index);
    if (st != PT_OK) return st;
    embed_job e = {ids, table, positions, out, ldt, ldp, ldo, d, 0, scale};
    return gather(&e, n, nthreads);
}

// packed: pt_pack_b layout of B = table^T, i.e. k = d, n = vocab; token t's row is column t of B
int pt_embedding_packed(const int32_t *ids, int n, const float *packed, int vocab, int d,
                        float scale, const float *positions, ptrdiff_t ldp, float *out, ptrdiff_t ldo,
                        int *bad_index, int nthreads) {
    if (!ids || !packed || !out || n <= 0 || vocab <= 0 || d <= 0) return PT_ERR_ARG;
    int st = check_ids(ids, n, vocab, bad_index);
    if (st != PT_OK) return st;
    embed_job e = {ids, packed, positions, out, 0, ldp, ldo, d, 1, scale};
    return gather(&e, n, nthreads);
}

// out: (n, d) row stride ldo, rows for positions offset .. offset + n - 1
int pt_sinusoidal_positions(float *out, ptrdiff_t ldo, int n, int d, int offset, int layout) {
    if (!out || n <= 0 || d <= 0 || (d & 1) || offset < 0 ||
        (layout != PT_POS_INTERLEAVED && layout != PT_POS_HALVES))
        return PT_ERR_ARG;
    const int half = d / 2;
    const double log_base = log(10000.0);
    for (int r = 0; r < n; r++) {
        const double pos = (double)offset + r;
        float *o = out + (ptrdiff_t)r * ldo;
        for (int i = 0; i < half; i++) {
            /* p / 10000^(2i/d), all in double so the float result is rounded once */
            double angle = pos * exp(-log_base * (2.0 * i) / (double)d);
            if (layout == PT_POS_INTERLEAVED) {
                o[2 * i] = (float)sin(angle);
                o[2 * i + 1] = (float)cos(angle);
            } else {
                o[i] = (float)sin(angle);
                o[half + i] = (float)cos(angle);
            }
        }
    }
    return PT_OK;
}
