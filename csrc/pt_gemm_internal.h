/* pt_gemm_internal.h - argument checks and the work split shared by every GEMM path (not public API). */
#ifndef PT_GEMM_INTERNAL_H
#define PT_GEMM_INTERNAL_H

#include "pt_gemm.h"

/* Checks the arguments of pt_gemm_packed_*; PT_OK or PT_ERR_ARG. */
int pt_gemm_check_args(const float *a, ptrdiff_t lda, const float *bp, const float *residual, ptrdiff_t ldr,
                       const float *c, ptrdiff_t ldc, int m, int n, int k, int act, int nthreads);
/* Number of threads worth starting for an (m, n, k) product: 1 below the grain size. */
int pt_gemm_team_size(int m, int n, int k, int nthreads);
/* Static split of the output for thread tid of nth: rows [*r0, *r1) x panels [*p0, *p1). */
void pt_gemm_split(int m, int npanels, int row_unit, int tid, int nth, int *r0, int *r1, int *p0, int *p1);

#endif
