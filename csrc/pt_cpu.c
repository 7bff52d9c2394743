/* pt_cpu.c - CPU feature detection (CPUID via the compiler's builtins), the L2 size, OpenMP facts, heap
 * trimming, huge-page advice. */
/* madvise and MADV_HUGEPAGE are not in strict C11 (-std=c11): ask the C library for them. */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__GLIBC__) || defined(__linux__)
#include <unistd.h>
#endif
#include "pt_cpu.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define PT_X86 1
#endif

int pt_avx2_compiled(void) {
#ifdef PT_HAVE_AVX2
    return 1;
#else
    return 0;
#endif
}

int pt_avx512_compiled(void) {
#ifdef PT_HAVE_AVX512
    return 1;
#else
    return 0;
#endif
}

int pt_avx512_vnni_compiled(void) {
#ifdef PT_HAVE_AVX512VNNI
    return 1;
#else
    return 0;
#endif
}

int pt_cpu_has(const char *feature) {
#ifdef PT_X86
    /* __builtin_cpu_supports checks both CPUID and that the OS saves the YMM state (XGETBV). */
    __builtin_cpu_init();
    if (strcmp(feature, "sse4.2") == 0) return __builtin_cpu_supports("sse4.2") != 0;
    if (strcmp(feature, "avx") == 0) return __builtin_cpu_supports("avx") != 0;
    if (strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2") != 0;
    if (strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma") != 0;
    if (strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f") != 0;
    if (strcmp(feature, "avx512vnni") == 0) return __builtin_cpu_supports("avx512vnni") != 0;
#else
    (void)feature;
#endif
    return 0;
}

int pt_cpu_has_avx2_fma(void) {
    return pt_avx2_compiled() && pt_cpu_has("avx2") && pt_cpu_has("fma");
}

int pt_cpu_has_avx512(void) {
    return pt_avx512_compiled() && pt_cpu_has_avx2_fma() && pt_cpu_has("avx512f");
}

int pt_cpu_has_avx512_vnni(void) {
    return pt_avx512_vnni_compiled() && pt_cpu_has_avx512() && pt_cpu_has("avx512vnni");
}

int pt_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int pt_num_procs(void) {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

long pt_cpu_l2_bytes(void) {
#if defined(__GLIBC__) && defined(_SC_LEVEL2_CACHE_SIZE)
    long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? v : 0;
#else
    return 0;
#endif
}

int pt_release_free_heap(void) {
#ifdef __GLIBC__
    return malloc_trim(0);
#else
    return 0;
#endif
}

void *pt_huge_alloc(size_t nbytes, int *advised) {
    return pt_pages_alloc(nbytes, 1, advised);
}

void *pt_pages_alloc(size_t nbytes, int huge, int *advised) {
    *advised = 0;
    if (nbytes == 0 || nbytes > ((size_t)1 << 46)) return NULL;
    size_t size = (nbytes + PT_HUGE_PAGE_BYTES - 1) & ~(PT_HUGE_PAGE_BYTES - 1);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* map one huge page more than asked, then unmap the unaligned head and the tail */
    char *raw = mmap(NULL, size + PT_HUGE_PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + PT_HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(PT_HUGE_PAGE_BYTES - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    char *end = raw + size + PT_HUGE_PAGE_BYTES;
    if (end > p + size) munmap(p + size, (size_t)(end - (p + size)));
    *advised = madvise(p, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) == 0;
    return p;
#else
    (void)huge;
    void *p = aligned_alloc(PT_HUGE_PAGE_BYTES, size);
    if (p != NULL) memset(p, 0, size);
    return p;
#endif
}

void pt_huge_free(void *p, size_t nbytes) {
    if (p == NULL) return;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    munmap(p, (nbytes + PT_HUGE_PAGE_BYTES - 1) & ~(PT_HUGE_PAGE_BYTES - 1));
#else
    (void)nbytes;
    free(p);
#endif
}
