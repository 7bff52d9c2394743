/* pt_activation_generic.c - portable element-wise activations (ReLU, GELU erf/tanh, SiLU), alone or after a bias. */
#include <math.h>
#include "pt_activation.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements a parallel region costs more than it saves. */
#define PT_ACT_PARALLEL_GRAIN 32768

/* The smooth activations are evaluated in double and rounded once, so this version is accurate to
 * ~0.5 ulp and serves as the oracle for the AVX2 one. Two identities avoid cancellation for x < 0:
 *   GELU(x) = x * 0.5 erfc(-x / sqrt 2)          (not 0.5 x (1 + erf), which cancels to 0)
 *   0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u))        (same for the tanh form)
 * At x = -inf the mathematical limit 0 is returned (the formulas would give -inf * 0 = NaN). */
static float act_one(float x, int act) {
    const double sqrt1_2 = 0.70710678118654752440;
    const double sqrt_2_pi = 0.79788456080286535588;
    double xd = x;
    switch (act) {
    case PT_ACT_RELU:
        return (x > 0.0f || x != x) ? x : 0.0f;
    case PT_ACT_GELU:
        if (isinf(x)) return x > 0.0f ? x : -0.0f;
        return (float)(xd * 0.5 * erfc(-xd * sqrt1_2));
    case PT_ACT_GELU_TANH:
        if (isinf(x)) return x > 0.0f ? x : -0.0f;
        return (float)(xd / (1.0 + exp(-2.0 * sqrt_2_pi * (xd + 0.044715 * xd * xd * xd))));
    case PT_ACT_SILU:
        if (isinf(x)) return x > 0.0f ? x : -0.0f;
        return (float)(xd / (1.0 + exp(-xd)));
    default:
        return x;
    }
}

void pt_activation_inplace_generic(float *x, size_t n, int act) {
    if (act <= PT_ACT_NONE || act >= PT_ACT_COUNT) return;
    for (size_t i = 0; i < n; i++) x[i] = act_one(x[i], act);
}

// x, y: (rows, cols), row strides ldx, ldy (y may equal x); bias: (cols,) or NULL
int pt_bias_activation_generic(const float *x, ptrdiff_t ldx, const float *bias, float *y, ptrdiff_t ldy,
                               int rows, int cols, int act, int nthreads) {
    if (!x || !y || rows <= 0 || cols <= 0 || act < 0 || act >= PT_ACT_COUNT) return PT_ERR_ARG;
    int nt = nthreads < 1 ? 1 : nthreads;
    if ((double)rows * cols < PT_ACT_PARALLEL_GRAIN || rows < 2) nt = 1;
    PT_PARALLEL_FOR(nt, r, rows,
        const float *xr = x + (ptrdiff_t)r * ldx;
        float *yr = y + (ptrdiff_t)r * ldy;
        for (int j = 0; j < cols; j++) {
            float h = bias ? xr[j] + bias[j] : xr[j];
            yr[j] = act_one(h, act);
        }
    );
    (void)nt;
    return PT_OK;
}
