"""pytransformer.screen - the exact greedy argmax of the output projection, reading half its bytes.

A decode step at small batch sizes is bound by memory bandwidth, and the output projection
(vocabulary x d_model float32 weights) is close to half of what a step reads. OutputScreen keeps a
bfloat16 copy of those weights and, for each row x of a step:

  1. computes approximate logits g = x R + b with the copy R (half the bytes of the float32 GEMM);
  2. bounds |f_j - g_j| <= e_j for every column j, where f is what the float32 GEMM computes;
  3. keeps the allowed columns whose interval [g_j - e_j, g_j + e_j] reaches g_i - e_i, the lower
     bound of the allowed column i with the largest g_i: any other column is below column i's
     exact value, so it cannot be the argmax;
  4. recomputes the kept columns with the float32 GEMM - bit for bit what the full GEMM gives them
     (the determinism contract of csrc/pt_gemm.h) - and takes the first maximum, as argmax does.

The token is therefore exactly that of logits.argmax() on the float32 path, ties included. Only
the token comes out: the scores (which need every logit) take the float32 path.

The bound. For a row x and column j, let w be the float32 weights, r their bf16 roundings,
s = fl(x . w) and t = fl(x . r) the float32 dot products (any order, with or without FMA), and
gamma = k u / (1 - k u), u = 2^-24. The standard dot-product bound, Cauchy-Schwarz and
||r|| <= ||w|| + ||w - r|| give
    |s - t| <= |x . (w - r)| + gamma (|x| . |w| + |x| . |r|)
            <= ||x|| (||w - r|| (1 + gamma) + 2 gamma ||w||) = ||x|| err_j,
err_j precomputed per column in float64 from upper bounds of the sums of squares that the
packing kernel returns. Adding the bias rounds once on each side (relative u), so
    |f_j - g_j| <= ||x|| err_j (1 + u) + 2u (|g_j| + |f_j - g_j|) / (1 - u),
which e_j = ||x|| err_j (1 + 2^-20) + 2^-21 |g_j| + k 2^-146 covers with room to spare: the slack
absorbs the float64 rounding of the norms and sums (~1e-13 relative), and the absolute term the
products that underflow (each off by at most 2^-150, k of them in each of the two dot products).
The dot-product bound needs k u < 1: wider projections get no screen.

When screening cannot decide cheaply - non-finite or huge values that could overflow, no allowed
column, more than MAX_CANDIDATES candidates - argmax returns None and the caller computes the full
logits. A model whose output weights are not all finite gets no screen at all.

In the kernel (pt_screen_argmax), a float32 prefilter with the largest err_j skips the
double-precision test for nearly every column.
"""

import numpy as np

from . import _kernels as K

_U = 2.0 ** -24
_ERR_SLACK = 1.0 + 2.0 ** -20
_REL = 2.0 ** -21


class OutputScreen:
    """Screened argmax over Linear `output` (its packed float32 weights stay the reference). The
    per-step work runs in one kernel call, pt_screen_argmax (csrc/pt_screen_generic.c)."""

    # Rows per step screened (PT_SCREEN_MAX_ROWS in csrc/pt_screen.h, where the measurement is).
    MAX_ROWS = K.SCREEN_MAX_ROWS
    # More candidates than this: the exact GEMM of the whole projection is about as cheap.
    MAX_CANDIDATES = 1024

    def __init__(self, output, bf16, err, w_norm_max):
        self.output = output
        self.k = output.packed.k
        self.n = output.packed.n
        self.bf16 = bf16
        self.err = err
        self.abs_err = self.k * 2.0 ** -146
        bias_max = 0.0 if output.bias is None else float(np.abs(output.bias).max())
        self.kernel = K.Screen(output.packed, bf16, output.bias, err, float(err.max()), w_norm_max,
                               bias_max, _REL, self.abs_err)

    @classmethod
    def build(cls, output):
        """The screen for Linear `output`, or None when its weights or bias are not all finite."""
        if output.bias is not None and not np.all(np.isfinite(output.bias)):
            return None
        k = output.packed.k
        if k * _U >= 0.5:
            return None
        bf16, sq_w, sq_d = K.pack_bf16(output.packed)
        gamma = k * _U / (1.0 - k * _U)
        w_norm, d_norm = np.sqrt(sq_w), np.sqrt(sq_d)
        err = (d_norm * (1.0 + gamma) + 2.0 * gamma * w_norm) * _ERR_SLACK
        if not np.all(np.isfinite(err)):
            return None
        return cls(output, bf16, err, float((w_norm + d_norm).max()))   # bounds ||w|| and ||r||

    def argmax(self, x, banned=None, scratch=None):
        """First index of the largest float32 logit of each row of x (B, k), banned columns (a bool
        mask of n, or None) excluded - or None when the caller must compute the full logits (also
        for more than MAX_ROWS rows). scratch: a (B, n) float32 buffer the call may overwrite."""
        return K.screen_argmax(self.kernel, x, banned, self.MAX_CANDIDATES, scratch)
