/* pt_cpu.h - CPU feature detection and OpenMP facts, queried once by the Python layer; heap trimming and
 * memory on huge pages for weights. */
#ifndef PT_CPU_H
#define PT_CPU_H

#include <stddef.h>

/* 1 if this CPU and OS support AVX2 and FMA (and the AVX2 path was compiled in), else 0. */
int pt_cpu_has_avx2_fma(void);
/* 1 if the AVX2 translation units were compiled into this build. */
int pt_avx2_compiled(void);
/* 1 if this CPU and OS support AVX-512F (with AVX2 and FMA) and the AVX-512 GEMM was compiled in. */
int pt_cpu_has_avx512(void);
int pt_avx512_compiled(void);
/* 1 if, besides that, the CPU has AVX-512 VNNI and the screen's VNNI kernel was compiled in. */
int pt_cpu_has_avx512_vnni(void);
int pt_avx512_vnni_compiled(void);
/* Individual features for reporting: sse4.2, avx, avx2, fma, avx512f, avx512vnni. */
int pt_cpu_has(const char *feature);
/* 1 if built with OpenMP. */
int pt_openmp_enabled(void);
/* omp_get_num_procs() with OpenMP, else 1. */
int pt_num_procs(void);
/* The per-core L2 data cache in bytes as the C library reports it (glibc reads it from CPUID), or 0
 * when it does not (another C library, a hypervisor that hides it). */
long pt_cpu_l2_bytes(void);
/* Return the heap memory that malloc keeps free to the operating system (glibc's malloc_trim);
 * 1 if some was returned, 0 if none or not available. */
int pt_release_free_heap(void);
/* Memory for data that is read again and again in long streams, such as packed weights (a
 * decode step reads every weight once; on 4 KiB pages that is a TLB miss every 4 KiB): nbytes
 * rounded up to 2 MiB, starting on a 2 MiB boundary, in a mapping of its own (on Linux an
 * anonymous mmap advised with MADV_HUGEPAGE, so transparent huge pages back it where the system
 * allows; elsewhere aligned_alloc). Pages are zero until written. *advised is set to 1 if the
 * huge-page advice was taken. NULL if the memory is not available or nbytes is 0 or above 2^46.
 * A mapping of its own keeps the C library's heap out of it: huge-page advice on heap memory
 * would stay on pages that later small allocations reuse. Free with pt_huge_free(p, nbytes).
 * pt_pages_alloc(nbytes, 0, advised) is the same mapping advised with MADV_NOHUGEPAGE instead:
 * 4 KiB pages, for weights whose reads do not gain from huge pages, where a huge page's first
 * touch can cost more (see WeightArena in pytransformer/_kernels.pyx). */
#define PT_HUGE_PAGE_BYTES ((size_t)2 << 20)
void *pt_pages_alloc(size_t nbytes, int huge, int *advised);
void *pt_huge_alloc(size_t nbytes, int *advised);
void pt_huge_free(void *p, size_t nbytes);

#endif
