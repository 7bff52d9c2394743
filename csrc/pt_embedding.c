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

// ids: (n,); table: (vocab, d) row stride ldt; positions: (n, d) row stride ldp or NULL; out: (n, d) row stride ldo
int pt_embedding(const int32_t *ids, int n, const float *table, ptrdiff_t ldt, int vocab, int d,
                 float scale, const float *positions, ptrdiff_t ldp, float *out, ptrdiff_t ldo,
                 int *bad_index) {
    if (!ids || !table || !out || n <= 0 || vocab <= 0 || d <= 0) return PT_ERR_ARG;
    int st = check_ids(ids, n, vocab, bad_index);
    if (st != PT_OK) return st;
    for (int i = 0; i < n; i++) {
        const float *row = table + (ptrdiff_t)ids[i] * ldt;
        float *o = out + (ptrdiff_t)i * ldo;
        if (positions) {
            const float *p = positions + (ptrdiff_t)i * ldp;
            for (int j = 0; j < d; j++) o[j] = row[j] * scale + p[j];
        } else {
            for (int j = 0; j < d; j++) o[j] = row[j] * scale;
        }
    }
    return PT_OK;
}

// packed: pt_pack_b layout of B = table^T, i.e. k = d, n = vocab; token t's row is column t of B
int pt_embedding_packed(const int32_t *ids, int n, const float *packed, int vocab, int d,
                        float scale, const float *positions, ptrdiff_t ldp, float *out, ptrdiff_t ldo,
                        int *bad_index) {
    if (!ids || !packed || !out || n <= 0 || vocab <= 0 || d <= 0) return PT_ERR_ARG;
    int st = check_ids(ids, n, vocab, bad_index);
    if (st != PT_OK) return st;
    for (int i = 0; i < n; i++) {
        float *o = out + (ptrdiff_t)i * ldo;
        const float *p = positions ? positions + (ptrdiff_t)i * ldp : NULL;
        for (int j = 0; j < d; j++) {
            float v = pt_packed_get(packed, d, j, ids[i]) * scale;
            o[j] = p ? v + p[j] : v;
        }
    }
    return PT_OK;
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
