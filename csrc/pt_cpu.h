/* pt_cpu.h - CPU feature detection and OpenMP facts, queried once by the Python layer; heap trimming and
 * huge-page advice for weight memory. */
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
/* Ask the operating system to back the whole pages of [p, p + nbytes) with transparent huge pages
 * (Linux madvise(MADV_HUGEPAGE)), for memory that is read again and again in long streams, such as
 * packed weights: a decode step reads every weight once, and with 4 KiB pages that is a TLB miss
 * every 4 KiB. Only whole 2 MiB-aligned extents can become huge pages. Returns 1 if the advice was
 * taken, 0 if not (another OS, a kernel without transparent huge pages, no whole page in the range).
 * Advice only: the contents and every value computed from them are the same either way. */
int pt_advise_hugepages(void *p, size_t nbytes);

#endif
