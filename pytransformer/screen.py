"""pytransformer.screen - the exact greedy argmax of the output projection, reading a quarter of its bytes.

A decode step at small batch sizes is bound by memory bandwidth, and the output projection
(vocabulary x d_model float32 weights) is close to half of what a step reads. OutputScreen keeps an
8-bit copy of those weights and, for each row x of a step:

  1. computes approximate logits g from the copy and a 14-bit quantization of x, in exact integer
     arithmetic (a quarter of the bytes of the float32 GEMM; the same bits on every ISA path);
  2. bounds |f_j - g_j| <= e_j for every column j, where f is what the float32 GEMM computes;
  3. keeps the allowed columns whose interval [g_j - e_j, g_j + e_j] reaches g_i - e_i, the lower
     bound of the allowed column i with the largest g_i: any other column is below column i's
     exact value, so it cannot be the argmax;
  4. recomputes the kept columns with the float32 GEMM - bit for bit what the full GEMM gives them
     (the determinism contract of csrc/pt_gemm.h) - and takes the first maximum, as argmax does.

The token is therefore exactly that of logits.argmax() on the float32 path, ties included. Only
the token comes out: the scores (which need every logit) take the float32 path.

The copy (csrc/pt_screen.h). Column j is stored as integers q_j in [-127, 127] with a power-of-two
scale s_j; r_j = s_j q_j is then a float32 vector and d_j = w_j - r_j is exact in float32. The row
is quantized the same way, x' = s_x xq with |xq| <= 8191 and e_x = x - x' exact. The kernel
computes sum_k xq q_j exactly in integers, and g_j = float32(x' . r_j + b_j) with the sum and the
two power-of-two scalings exact and the bias added in float64.

The bound. Let f_j = fl(fl(x . w_j) + b_j) be the float32 GEMM's logit (any order of the sum, with
or without FMA), T = x . w_j + b_j the exact value and G = x' . r_j + b_j the exact value the
approximation rounds, u = 2^-24 and gamma = k u / (1 - k u). The standard dot-product bound,
Cauchy-Schwarz and x . w - x' . r = x . d + e_x . r give
    |f_j - T| <= (1 + u) gamma ||x|| ||w_j|| + u |T|,   |T - G| <= ||x|| ||d_j|| + ||e_x|| ||r_j||,
    |g_j - G| <= (2^-24 + 2^-53) |G|,
so with |T|, |G| <= |g_j| (1 + 2^-23) + |T - G|,
    |f_j - g_j| <= (||x|| (||d_j|| + (1 + u) gamma ||w_j||) + ||e_x|| ||r_j||)(1 + 2u) + 2^-22.9 |g_j|,
which e_j = (||x|| err_j + ||e_x|| max ||r||)(1 + 2^-20) + 2^-21 |g_j| + k 2^-146 covers with room
to spare: err_j = ||d_j|| + (1 + 2^-20) gamma ||w_j|| from upper bounds of the sums of squares the
packing kernel returns; the slack absorbs the float64 rounding of norms and sums (~1e-13
relative), and the absolute term the products and sums that underflow (at most 2^-150 each).
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
_SLACK = 1.0 + 2.0 ** -20
_REL = 2.0 ** -21


class OutputScreen:
    """Screened argmax over Linear `output` (its packed float32 weights stay the reference). The
    per-step work runs in one kernel call, pt_screen_argmax (csrc/pt_screen_generic.c)."""

    # More candidates than this: the exact GEMM of the whole projection is about as cheap.
    MAX_CANDIDATES = 1024

    def __init__(self, output, q, scale, qsum, err, r_norm_max):
        self.output = output
        self.k = output.packed.k
        self.n = output.packed.n
        self.q = q
        self.scale = scale
        self.qsum = qsum
        self.err = err
        self.r_norm_max = r_norm_max
        self.abs_err = self.k * 2.0 ** -146
        bias_max = 0.0 if output.bias is None else float(np.abs(output.bias).max())
        self.kernel = K.Screen(output.packed, q, scale, qsum, output.bias, err, float(err.max()), r_norm_max,
                               bias_max, _REL, _SLACK, self.abs_err)

    @classmethod
    def build(cls, output, huge_pages=False):
        """The screen for Linear `output`, or None when its weights or bias are not all finite.
        huge_pages: put the 8-bit copy on huge pages when it is large (see pytransformer.load)."""
        if output.bias is not None and not np.all(np.isfinite(output.bias)):
            return None
        k = output.packed.k
        if k * _U >= 0.5:
            return None
        # the int8 copy (a quarter of the float32 bytes), with huge_pages in a chunk of its own
        # (unmapped with the screen)
        arena = K.weight_arena(output.packed.nbytes // 4) if huge_pages else None
        q, scale, qsum, sq_w, sq_d = K.pack_i8(output.packed, arena=arena)
        gamma = k * _U / (1.0 - k * _U)
        w_norm, d_norm = np.sqrt(sq_w), np.sqrt(sq_d)
        err = d_norm + gamma * _SLACK * w_norm
        if not np.all(np.isfinite(err)):
            return None
        return cls(output, q, scale, qsum, err, float((w_norm + d_norm).max()))   # bounds ||w|| and ||r||

    @staticmethod
    def max_rows():
        """The most rows a step screens on the kernel path in use; larger batches get None."""
        return K.screen_max_rows()

    def logits(self, x):
        """The approximate logits of the rows of x (at most K.SCREEN_MAX_ROWS), float32 (rows, n)."""
        return K.screen_logits(self.kernel, x)

    def argmax(self, x, banned=None, scratch=None):
        """First index of the largest float32 logit of each row of x (B, k), banned columns (a bool
        mask of n, or None) excluded - or None when the caller must compute the full logits (also
        for more than max_rows() rows). scratch: a (B, n) float32 buffer the call may overwrite."""
        return K.screen_argmax(self.kernel, x, banned, self.MAX_CANDIDATES, scratch)
