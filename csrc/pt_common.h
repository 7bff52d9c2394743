/* pt_common.h - status codes, activation ids and layout constants shared by all pytransformer kernels. */
#ifndef PT_COMMON_H
#define PT_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Kernels that can fail return one of these; the Cython layer turns them into exceptions. */
enum {
    PT_OK = 0,
    PT_ERR_ARG = 1,       /* an argument is out of range (size <= 0, bad enum, NULL where required) */
    PT_ERR_INDEX = 2,     /* a token id is outside the table */
    PT_ERR_ISA = 3        /* the requested ISA path is not compiled in */
};

/* Element-wise activations, usable alone or fused into the GEMM epilogue. */
enum {
    PT_ACT_NONE = 0,
    PT_ACT_RELU = 1,
    PT_ACT_GELU = 2,        /* 0.5 x (1 + erf(x / sqrt 2)) */
    PT_ACT_GELU_TANH = 3,   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    PT_ACT_SILU = 4         /* x * sigmoid(x) */
};
#define PT_ACT_COUNT 5

/* Width of a packed weight panel (columns of B per panel). Two 8-float AVX2 vectors.
 * The packed layout is shared by every ISA path, so a model packed once runs on any of them. */
#define PT_NR 16

/* Sinusoidal position table layouts. */
enum {
    PT_POS_INTERLEAVED = 0, /* the original paper: even dims sin, odd dims cos */
    PT_POS_HALVES = 1       /* first half sin, second half cos (Marian, fairseq, M2M100) */
};

#endif
