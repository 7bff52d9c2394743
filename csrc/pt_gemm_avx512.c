/* pt_gemm_avx512.c - AVX-512F float32 GEMM on packed B panels (placeholder: forwards to the AVX2 kernels). */
#include "pt_gemm.h"

#ifdef PT_HAVE_AVX512
int pt_gemm_packed_avx512(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                          const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                          int m, int n, int k, int act, int nthreads) {
    return pt_gemm_packed_avx2(a, lda, bp, bias, residual, ldr, c, ldc, m, n, k, act, nthreads);
}
#else /* built without AVX-512: keep the symbol so the bindings link, and refuse the path */
int pt_gemm_packed_avx512(const float *a, ptrdiff_t lda, const float *bp, const float *bias,
                          const float *residual, ptrdiff_t ldr, float *c, ptrdiff_t ldc,
                          int m, int n, int k, int act, int nthreads) {
    (void)a; (void)lda; (void)bp; (void)bias; (void)residual; (void)ldr; (void)c; (void)ldc;
    (void)m; (void)n; (void)k; (void)act; (void)nthreads;
    return PT_ERR_ISA;
}
#endif
