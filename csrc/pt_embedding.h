/* pt_embedding.h - token embedding gather (with scale and added positions) and sinusoidal position tables. */
#ifndef PT_EMBEDDING_H
#define PT_EMBEDDING_H

#include "pt_common.h"

/* out[i, :] = table[ids[i], :] * scale + (positions ? positions[i, :] : 0)
 * ids: (n,) int32; table: (vocab, d) row stride ldt; positions: (n, d) row stride ldp or NULL;
 * out: (n, d) row stride ldo. Returns PT_ERR_INDEX (and writes the offending index to *bad_index)
 * if an id is outside [0, vocab), before anything is written. Scalar: it is a copy, bounded by
 * memory; many tokens (an encoder batch) are split over nthreads threads. */
int pt_embedding(const int32_t *ids, int n, const float *table, ptrdiff_t ldt, int vocab, int d,
                 float scale, const float *positions, ptrdiff_t ldp, float *out, ptrdiff_t ldo,
                 int *bad_index, int nthreads);

/* Same, gathering rows from a table packed by pt_pack_b as B = table^T (k = d, n = vocab):
 * lets a tied output projection and the embedding share one packed copy. A token's row is then a
 * column of its panel, one float per 64-byte line. */
int pt_embedding_packed(const int32_t *ids, int n, const float *packed, int vocab, int d,
                        float scale, const float *positions, ptrdiff_t ldp, float *out, ptrdiff_t ldo,
                        int *bad_index, int nthreads);

/* out[p, :] for positions p = offset .. offset+n-1, d columns (d even), row stride ldo:
 *   PT_POS_INTERLEAVED: out[p, 2i] = sin(p / 10000^(2i/d)), out[p, 2i+1] = cos(same)
 *   PT_POS_HALVES:      out[p, i]  = sin(p / 10000^(2i/d)), out[p, d/2 + i] = cos(same), i < d/2
 * Computed in double, rounded once. */
int pt_sinusoidal_positions(float *out, ptrdiff_t ldo, int n, int d, int offset, int layout);

#endif
