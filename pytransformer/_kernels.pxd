# _kernels.pxd - Cython declarations mirroring the C kernel headers in csrc/ (all nogil).
from libc.stdint cimport int8_t, int32_t, uint32_t

cdef extern from "pt_common.h" nogil:
    enum:
        PT_OK
        PT_ERR_ARG
        PT_ERR_INDEX
        PT_ERR_ISA
    enum:
        PT_ACT_NONE
        PT_ACT_RELU
        PT_ACT_GELU
        PT_ACT_GELU_TANH
        PT_ACT_SILU
        PT_ACT_COUNT
    enum:
        PT_NR
    enum:
        PT_POS_INTERLEAVED
        PT_POS_HALVES

cdef extern from "pt_cpu.h" nogil:
    int pt_cpu_has_avx2_fma()
    int pt_avx2_compiled()
    int pt_cpu_has_avx512()
    int pt_cpu_has_avx512_vnni()
    int pt_avx512_vnni_compiled()
    int pt_avx512_compiled()
    int pt_cpu_has(const char *feature)
    int pt_openmp_enabled()
    int pt_num_procs()
    int pt_release_free_heap()
    const size_t PT_HUGE_PAGE_BYTES
    void *pt_huge_alloc(size_t nbytes, int *advised)
    void *pt_pages_alloc(size_t nbytes, int huge, int *advised)
    void pt_huge_free(void *p, size_t nbytes)
    long pt_cpu_l2_bytes()

cdef extern from "pt_pool.h" nogil:
    int pt_pool_available()
    int pt_pool_workers()
    void pt_pool_set_enabled(int on)
    long long pt_pool_loops()
    long long pt_pool_backoffs()

cdef extern from "pt_gemm.h" nogil:
    size_t pt_packed_b_size(int k, int n)
    int pt_pack_b(const float *b, Py_ssize_t rs, Py_ssize_t cs, int k, int n, float *packed)
    int pt_pack_b_mt(const float *b, Py_ssize_t rs, Py_ssize_t cs, int k, int n, float *packed, int nthreads)
    int pt_gemm_packed_generic(const float *a, Py_ssize_t lda, const float *bp, const float *bias,
                               const float *residual, Py_ssize_t ldr, float *c, Py_ssize_t ldc,
                               int m, int n, int k, int act, int nthreads)
    int pt_gemm_packed_avx2(const float *a, Py_ssize_t lda, const float *bp, const float *bias,
                            const float *residual, Py_ssize_t ldr, float *c, Py_ssize_t ldc,
                            int m, int n, int k, int act, int nthreads)
    int pt_gemm_packed_avx512(const float *a, Py_ssize_t lda, const float *bp, const float *bias,
                              const float *residual, Py_ssize_t ldr, float *c, Py_ssize_t ldc,
                              int m, int n, int k, int act, int nthreads)
    size_t pt_gemm_l2_bytes()
    int pt_gemm_set_l2_bytes(size_t nbytes)
    size_t pt_gemm_fit_l2(size_t tuned_bytes)
    enum:
        PT_GEMM_TUNED_L2_BYTES
        PT_GEMM_MIN_L2_BYTES
        PT_GEMM_MAX_L2_BYTES
    ctypedef int (*pt_gemm_packed_fn)(const float *a, Py_ssize_t lda, const float *bp, const float *bias,
                                      const float *residual, Py_ssize_t ldr, float *c, Py_ssize_t ldc,
                                      int m, int n, int k, int act, int nthreads)

cdef extern from "pt_screen.h" nogil:
    enum:
        PT_SCREEN_MAX_ROWS
        PT_SCREEN_MAX_ROWS_GENERIC
    int pt_screen_groups(int k)
    size_t pt_screen_q_size(int k, int n)
    int pt_pack_i8_generic(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                           double *sq_w, double *sq_d, int nthreads)
    int pt_pack_i8_avx2(const float *packed, int k, int n, int8_t *q, double *scale, int32_t *qsum,
                        double *sq_w, double *sq_d, int nthreads)
    ctypedef struct pt_screen:
        const int8_t *q
        const double *scale
        const int32_t *qsum
        const float *bp
        const float *bias
        const double *err
        double err_max
        double w_norm_max
        double bias_max
        double rel
        double slack
        double abs_err
        int n
        int k
    ctypedef int (*pt_screen_logits_fn)(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                                        const double *sx, int m, float *g, int nthreads)
    int pt_screen_logits_generic(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                                 const double *sx, int m, float *g, int nthreads)
    int pt_screen_logits_avx2(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                              const double *sx, int m, float *g, int nthreads)
    int pt_screen_logits_vnni(const pt_screen *s, const uint32_t *hi, const uint32_t *lo,
                              const double *sx, int m, float *g, int nthreads)
    int pt_screen_quantize(const float *x, Py_ssize_t ldx, int m, int k, uint32_t *hi, uint32_t *lo,
                           double *sx, double *x_norm, double *e_norm)
    int pt_screen_argmax(const pt_screen *s, pt_screen_logits_fn approx, pt_gemm_packed_fn exact,
                         const float *x, Py_ssize_t ldx, int m, const unsigned char *banned, int max_cand,
                         int nthreads, uint32_t *digits, float *g, int32_t *cand, long long *tokens)

cdef extern from "pt_activation.h" nogil:
    int pt_bias_activation_generic(const float *x, Py_ssize_t ldx, const float *bias, float *y, Py_ssize_t ldy,
                                   int rows, int cols, int act, int nthreads)
    int pt_bias_activation_avx2(const float *x, Py_ssize_t ldx, const float *bias, float *y, Py_ssize_t ldy,
                                int rows, int cols, int act, int nthreads)
    long long pt_silu_check_paths(uint32_t first, unsigned long long count, int nthreads, uint32_t *first_diff)

cdef extern from "pt_softmax.h" nogil:
    int pt_softmax_generic(const float *x, Py_ssize_t ldx, float *y, Py_ssize_t ldy, int rows, int cols,
                           const int32_t *valid, int nthreads)
    int pt_softmax_avx2(const float *x, Py_ssize_t ldx, float *y, Py_ssize_t ldy, int rows, int cols,
                        const int32_t *valid, int nthreads)

cdef extern from "pt_norm.h" nogil:
    int pt_layer_norm_generic(const float *x, Py_ssize_t ldx, const float *residual, Py_ssize_t ldr,
                              float *sum_out, Py_ssize_t lds, const float *weight, const float *bias,
                              float *y, Py_ssize_t ldy, int rows, int cols, float eps, int nthreads)
    int pt_layer_norm_avx2(const float *x, Py_ssize_t ldx, const float *residual, Py_ssize_t ldr,
                           float *sum_out, Py_ssize_t lds, const float *weight, const float *bias,
                           float *y, Py_ssize_t ldy, int rows, int cols, float eps, int nthreads)
    int pt_rms_norm_generic(const float *x, Py_ssize_t ldx, const float *residual, Py_ssize_t ldr,
                            float *sum_out, Py_ssize_t lds, const float *weight,
                            float *y, Py_ssize_t ldy, int rows, int cols, float eps, int nthreads)
    int pt_rms_norm_avx2(const float *x, Py_ssize_t ldx, const float *residual, Py_ssize_t ldr,
                         float *sum_out, Py_ssize_t lds, const float *weight,
                         float *y, Py_ssize_t ldy, int rows, int cols, float eps, int nthreads)

cdef extern from "pt_attention.h" nogil:
    ctypedef struct pt_strides:
        Py_ssize_t batch
        Py_ssize_t seq
        Py_ssize_t head
    size_t pt_attention_scratch_size(int kv_len, int nthreads)
    int pt_attention_generic(const float *q, pt_strides qs, const float *k, pt_strides ks,
                             const float *v, pt_strides vs, float *out, pt_strides os,
                             const int32_t *kv_lengths, const float *bias, const Py_ssize_t *bias_strides,
                             int batch, int heads, int q_len, int kv_len, int head_dim,
                             int causal, int q_offset, float scale, float *scratch, int nthreads)
    int pt_attention_avx2(const float *q, pt_strides qs, const float *k, pt_strides ks,
                          const float *v, pt_strides vs, float *out, pt_strides os,
                          const int32_t *kv_lengths, const float *bias, const Py_ssize_t *bias_strides,
                          int batch, int heads, int q_len, int kv_len, int head_dim,
                          int causal, int q_offset, float scale, float *scratch, int nthreads)
    int pt_attention_avx512(const float *q, pt_strides qs, const float *k, pt_strides ks,
                            const float *v, pt_strides vs, float *out, pt_strides os,
                            const int32_t *kv_lengths, const float *bias, const Py_ssize_t *bias_strides,
                            int batch, int heads, int q_len, int kv_len, int head_dim,
                            int causal, int q_offset, float scale, float *scratch, int nthreads)

cdef extern from "pt_embedding.h" nogil:
    int pt_embedding(const int32_t *ids, int n, const float *table, Py_ssize_t ldt, int vocab, int d,
                     float scale, const float *positions, Py_ssize_t ldp, float *out, Py_ssize_t ldo,
                     int *bad_index, int nthreads)
    int pt_embedding_packed(const int32_t *ids, int n, const float *packed, int vocab, int d,
                            float scale, const float *positions, Py_ssize_t ldp, float *out, Py_ssize_t ldo,
                            int *bad_index, int nthreads)
    int pt_sinusoidal_positions(float *out, Py_ssize_t ldo, int n, int d, int offset, int layout)

cdef extern from "pt_probe.h" nogil:
    enum:
        PT_PROBE_CHAINS
        PT_PROBE_CHAINS_512
    double pt_probe_read(const float *buf, size_t n, int nthreads)
    double pt_probe_read_avx2(const float *buf, size_t n, int nthreads)
    double pt_probe_fma_avx2(long iters, int nthreads)
    double pt_probe_fma_avx512(long iters, int nthreads)
