"""test_screen.py - the 8-bit screen of the output projection (pytransformer/screen.py).

Kernels against NumPy references (the quantization of weights and rows, the error sums against
float64, the approximate logits bit for bit against exact integer arithmetic on every ISA path);
the error bound the screen relies on, over many magnitudes; the screened argmax against the float32
argmax on random, tied, nearly tied and banned columns; and whole models decoding the same tokens
with and without the screen.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pytransformer
from pytransformer import _kernels as K
from pytransformer.model import Linear
from pytransformer.screen import OutputScreen
from conftest import ISAS, with_threads


def packed_linear(rng, n, k, bias=True, scale=1.0):
    w = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    return w, b, Linear(w, b)


def unpack_q(q, n, k):
    """The screen's int8 layout (panel, group of 4 k values, column, k within the group) -> (n, k)."""
    groups = (k + 3) // 4
    panels = q.reshape(-1, groups, 16, 4).transpose(0, 2, 1, 3).reshape(-1, 16, groups * 4)
    return panels.reshape(-1, groups * 4)[:, :k][:n].astype(np.int64), panels


def reference_scales(w):
    """Per row of w (a column of the projection): 2^e with max |w| / 2^e in [64, 128), clamped."""
    amax = np.abs(w.astype(np.float64)).max(axis=1)
    e = np.where(amax > 0, np.frexp(amax)[1] - 7, 0)
    return np.ldexp(1.0, np.clip(e, -100, 121))


def reference_quantize_rows(x):
    """The screen's 14-bit quantization of rows: scale 2^e with max |x| / 2^e in [4096, 8192)."""
    x64 = x.astype(np.float64)
    amax = np.abs(x64).max(axis=1)
    sx = np.ldexp(1.0, np.where(amax > 0, np.frexp(amax)[1] - 13, 0))
    xq = np.clip(np.rint(x64 / sx[:, None]), -8191, 8191).astype(np.int64)
    return xq, sx


def reference_logits(screen, x, n, k, bias):
    """float32(sum xq q * s_j * s_x + b) with the sum in exact integers and the rest in float64:
    what every path must give, bit for bit."""
    qm, _ = unpack_q(screen.q, n, k)
    xq, sx = reference_quantize_rows(x)
    g = (xq @ qm.T).astype(np.float64) * screen.scale[None, :] * sx[:, None]
    if bias is not None:
        g = g + bias.astype(np.float64)
    return g.astype(np.float32)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("n,k", [(1, 1), (15, 7), (16, 64), (17, 300), (129, 33), (20, 1030)])
def test_pack_i8_quantizes_to_nearest_even_and_sums_match(rng, n, k):
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[0, :] = 0.0
    w[0, 0] = 127.5                        # scale 1: 127.5 is clamped to 127, the halves are ties
    if k >= 5:
        w[0, 1:5] = [2.5, 3.5, -2.5, 27.5]
    if n > 3:
        w[1] *= np.float32(1e-38)          # subnormal-range column: the scale is clamped at 2^-100
        w[2] = 0.0                         # an all-zero column
        w[3] *= np.float32(1e17)
    q, scale, qsum, sq_w, sq_d = K.pack_i8(K.pack(w, transpose=True))
    assert q.dtype == np.int8 and q.shape == (((n + 15) // 16) * ((k + 3) // 4) * 64,)
    qm, panels = unpack_q(q, n, k)
    s = reference_scales(w)
    np.testing.assert_array_equal(scale, s)
    want = np.clip(np.rint(w.astype(np.float64) / s[:, None]), -127, 127)   # rint: ties to even
    np.testing.assert_array_equal(qm, want)
    if k >= 5:
        np.testing.assert_array_equal(qm[0, :5], [127, 2, 4, -2, 28])
    assert qm[0, 0] == 127 and not panels.reshape(-1, panels.shape[-1])[n:].any()   # zero padding:
    assert not panels[:, :, k:].any()                                                  # columns, k
    np.testing.assert_array_equal(qsum, qm.sum(axis=1))
    nz = np.abs(w).max(axis=1) > 1e-30
    ratio = np.abs(w[nz]).max(axis=1) / s[nz]
    assert np.all((ratio >= 64) & (ratio < 128))
    # upper bounds of the float64 sums, within a factor 1 + ~k 2^-24 (float32 sums, widened)
    w64, r64 = w.astype(np.float64), qm * s[:, None]
    for got_sum, exact in ((sq_w, (w64 ** 2).sum(1)), (sq_d, ((w64 - r64) ** 2).sum(1))):
        assert np.all(got_sum >= exact)
        np.testing.assert_allclose(got_sum, exact, rtol=3 * (k + 1) * 2.0 ** -24, atol=1e-40)


def test_pack_i8_same_bits_on_every_path(rng):
    w = (rng.standard_normal((77, 130)) * 1e-3).astype(np.float32)
    w[5] *= np.float32(1e-36)
    w[9, ::3] = 0.0
    w[11, 7] = 1e30
    lin = Linear(w)
    before = K.get_isa()
    try:
        results = []
        for isa in ISAS:
            K.set_isa(isa)
            results.append(K.pack_i8(lin.packed))
    finally:
        K.set_isa(before)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            np.testing.assert_array_equal(a, b)


def test_pack_i8_threads_give_the_same_bits(isa, rng):
    """Large projections are quantized panel by panel on the worker team: the same bits as on one
    thread, including the last, partial panel."""
    w = (rng.standard_normal((1003, 300)) * 0.05).astype(np.float32)   # 63 panels, the last of 11 columns
    w[17, 3] = 0.0
    w[500] *= np.float32(1e-30)
    lin = Linear(w)
    one = with_threads(1, K.pack_i8, lin.packed)
    loops = K.thread_pool_stats()["loops"]
    two = with_threads(2, K.pack_i8, lin.packed)
    if with_threads(2, K.get_num_threads) == 2 and K.thread_pool_stats()["available"]:   # not in a serial build
        assert K.thread_pool_stats()["loops"] == loops + 1
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_pack_i8_non_finite_values_give_non_finite_sums(isa):
    w = np.ones((20, 8), dtype=np.float32)
    w[3, 2] = np.inf
    w[17, 5] = np.nan
    w[9, 0] = np.finfo(np.float32).max           # its square overflows
    _, _, _, sq_w, sq_d = K.pack_i8(K.pack(w, transpose=True))
    bad = ~np.isfinite(sq_w + sq_d)
    assert set(np.flatnonzero(bad)) == {3, 9, 17}


def test_screen_quantizes_rows_as_documented(rng):
    _, _, lin = packed_linear(rng, 40, 30)
    screen = OutputScreen.build(lin)
    x = rng.standard_normal((4, 30)).astype(np.float32)
    x[1] *= np.float32(1e-40)                    # subnormal row
    x[2] = 0.0
    x[3, 0] = 8191.5 / 8192 * 2.0 ** 20          # rounds to 8192 steps: clamped to 8191
    x[3, 1:] *= 1000
    hi, lo, sx, xn, en = K.screen_quantize(screen.kernel, x)
    xq, want_sx = reference_quantize_rows(x)
    np.testing.assert_array_equal(sx, want_sx)
    assert xq[3, 0] == 8191
    digits = (hi.astype(np.int64)[:, :, None] >> (8 * np.arange(4))) & 255
    low = (lo.astype(np.int64)[:, :, None] >> (8 * np.arange(4))) & 255
    assert digits.max() <= 127 and low.max() <= 127
    u = (digits * 128 + low).reshape(4, -1)
    np.testing.assert_array_equal(u[:, :30] - 8192, xq)
    assert not u[:, 30:].any()                   # the group's padding: zero digits
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(xn, np.sqrt((x64 ** 2).sum(1)), rtol=1e-14)
    np.testing.assert_allclose(en, np.sqrt(((x64 - xq * want_sx[:, None]) ** 2).sum(1)), rtol=1e-14)
    assert en[2] == 0 and xn[2] == 0
    x[0, 4] = np.nan
    assert K.screen_quantize(screen.kernel, x) is None


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 11, 16])
@pytest.mark.parametrize("n,k", [(1, 5), (16, 16), (33, 64), (200, 129), (70, 1100), (8300, 42)])
def test_screen_logits_are_exact_on_every_path(isa, threads, rng, m, n, k):
    """Integer dot products: every path (portable, AVX2, AVX-512 VNNI where the CPU has it) and any
    number of threads gives the reference bits; k = 1100 takes two blocks of 256 groups; more than
    4 rows run in groups of 4; n = 8300 (519 panels) is cut into chunks of 64 panels for up to 4
    rows and of 16 for more (csrc/pt_screen_generic.c), the last chunk partial."""
    w, b, lin = packed_linear(rng, n, k, bias=bool(n % 2))
    screen = OutputScreen.build(lin)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, 0] = 40.0                               # an outlier feature
    np.testing.assert_array_equal(screen.logits(x), reference_logits(screen, x, n, k, b))
    strided = np.zeros((m, k + 3), dtype=np.float32)
    strided[:, :k] = x
    np.testing.assert_array_equal(screen.logits(strided[:, :k]), reference_logits(screen, x, n, k, b))


def test_pack_and_screen_kernels_reject_bad_arguments(rng):
    _, b, lin = packed_linear(rng, 20, 8)
    screen = OutputScreen.build(lin)
    with pytest.raises(TypeError):
        K.pack_i8(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(TypeError):
        K.pack_i8(None)
    with pytest.raises(ValueError, match="at most"):
        K.screen_logits(screen.kernel, np.ones((K.SCREEN_MAX_ROWS + 1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="features"):
        K.screen_logits(screen.kernel, np.ones((1, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        K.screen_logits(screen.kernel, np.full((1, 8), np.inf, dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        K.screen_logits(screen.kernel, np.ones((1, 8)))


def test_packed_columns_give_the_same_bits_as_the_whole_product(isa, rng):
    w, b, lin = packed_linear(rng, 70, 40)
    a = rng.standard_normal((3, 40)).astype(np.float32)
    full = K.gemm(a, lin.packed, b)
    for j0, j1 in [(0, 16), (16, 70), (64, 70), (32, 33), (0, 70)]:
        part = K.gemm(a, K.packed_columns(lin.packed, j0, j1), b[j0:j1])
        np.testing.assert_array_equal(part, full[:, j0:j1])
        np.testing.assert_array_equal(K.gemm(a[1:2], K.packed_columns(lin.packed, j0, j1), b[j0:j1]),
                                      full[1:2, j0:j1])
    for j0, j1 in [(1, 16), (0, 0), (16, 8), (0, 71), (-16, 4)]:
        with pytest.raises(ValueError, match="columns"):
            K.packed_columns(lin.packed, j0, j1)


# ---------------------------------------------------------------- the bound and the argmax

@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1.0, 1e4, 1e12])
def test_error_bound_holds_for_every_column(isa, rng, scale):
    """|float32 logits - screened logits| <= e_j for every column, over magnitudes from the
    subnormal range to large, with the float32 GEMM of every path; rows with outliers and zeros."""
    w, b, lin = packed_linear(rng, 500, 256, scale=0.05)
    screen = OutputScreen.build(lin)
    for trial in range(6):
        x = (rng.standard_normal((4, 256)) * scale * rng.uniform(0.5, 2)).astype(np.float32)
        if trial == 4:
            x[:, ::3] = 0.0
        if trial == 5:
            x[:, 7] *= 50                        # an outlier feature: coarser row quantization
        f = K.gemm(x, lin.packed, b).astype(np.float64)
        g = screen.logits(x).astype(np.float64)
        _, _, _, xn, en = K.screen_quantize(screen.kernel, x)
        e = ((xn[:, None] * screen.err + en[:, None] * screen.r_norm_max) * (1 + 2.0 ** -20)
             + 2.0 ** -21 * np.abs(g) + screen.abs_err)
        assert np.all(np.abs(f - g) <= e)
        # and it is not vacuous: the bound is far below the spread of the logits
        assert np.median(e) < 0.1 * (f.max() - f.min())


def full_argmax(lin, x, banned=None):
    logits = K.gemm(x, lin.packed, lin.bias)
    if banned is not None:
        logits[:, banned] = -np.inf
    return logits.argmax(axis=1)


def test_screened_argmax_equals_float32_argmax_on_random_rows(isa, threads, rng):
    w, b, lin = packed_linear(rng, 1000, 64)
    screen = OutputScreen.build(lin)
    assert screen.max_rows() == (4 if isa == "generic" else 16)
    for B in (1, 2, 3, 4, 5, 9, 16):
        for _ in range(10):
            x = rng.standard_normal((B, 64)).astype(np.float32)
            got = screen.argmax(x)
            if B > screen.max_rows():
                assert got is None
            else:
                np.testing.assert_array_equal(got, full_argmax(lin, x))


def test_ties_and_near_ties_resolve_as_argmax(isa, rng):
    """Duplicate columns give exactly equal logits (the first must win); columns one float32 ulp
    apart are indistinguishable to the 8-bit copy and must be settled exactly."""
    k = 32
    w = rng.standard_normal((400, k)).astype(np.float32)
    x = rng.standard_normal((1, k)).astype(np.float32)
    top = int(np.argmax(w @ x[0]))
    w[[17, 250, 399]] = w[top]                           # exact ties with the top column, before and after it
    w[300] = w[top]
    w[300, 0] = np.nextafter(w[top, 0], np.float32(np.inf) if x[0, 0] > 0 else np.float32(-np.inf))
    w[301] = w[top]
    w[301, 1] = np.nextafter(w[top, 1], np.float32(-np.inf) if x[0, 1] > 0 else np.float32(np.inf))
    lin = Linear(w, None)
    screen = OutputScreen.build(lin)
    want = full_argmax(lin, x)
    np.testing.assert_array_equal(screen.argmax(x), want)
    banned = np.zeros(400, dtype=bool)
    banned[[17, want[0]]] = True
    np.testing.assert_array_equal(screen.argmax(x, banned), full_argmax(lin, x, banned))


def test_banned_columns_are_never_chosen(rng):
    w, b, lin = packed_linear(rng, 300, 48)
    screen = OutputScreen.build(lin)
    x = rng.standard_normal((3, 48)).astype(np.float32)
    banned = np.zeros(300, dtype=bool)
    for _ in range(20):                    # ban the winner again and again
        got = screen.argmax(x, banned)
        np.testing.assert_array_equal(got, full_argmax(lin, x, banned))
        banned[got] = True
    only = np.ones(300, dtype=bool)
    only[123] = False
    np.testing.assert_array_equal(screen.argmax(x, only), [123, 123, 123])


def test_screen_declines_what_it_cannot_decide(rng):
    """The caller then computes the full logits: no screen answer is ever a guess."""
    w, b, lin = packed_linear(rng, 300, 48)
    screen = OutputScreen.build(lin)
    x = rng.standard_normal((2, 48)).astype(np.float32)
    rows = screen.max_rows() + 1                                               # too many rows
    assert screen.argmax(np.ones((rows, 48), dtype=np.float32)) is None
    assert screen.argmax(np.ones((2, 48), dtype=np.float32), np.ones(300, dtype=bool)) is None
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[1, 3] = bad
        assert screen.argmax(y) is None
    assert screen.argmax(x * np.float32(1e35)) is None                         # could overflow
    flat = Linear(np.ones((3000, 48), dtype=np.float32) + rng.standard_normal((3000, 48)).astype(np.float32) * 1e-4)
    assert OutputScreen.build(flat).argmax(x) is None                           # thousands of near-ties


def test_screen_kernel_rejects_bad_arguments(rng):
    w, b, lin = packed_linear(rng, 50, 12)
    screen = OutputScreen.build(lin)
    x = rng.standard_normal((2, 12)).astype(np.float32)
    with pytest.raises(ValueError, match="features"):
        K.screen_argmax(screen.kernel, np.ones((2, 13), dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        K.screen_argmax(screen.kernel, x.astype(np.float64))
    with pytest.raises(TypeError, match="banned"):
        K.screen_argmax(screen.kernel, x, np.zeros(49, dtype=bool))
    with pytest.raises(TypeError, match="banned"):
        K.screen_argmax(screen.kernel, x, np.zeros(50, dtype=np.int32))
    with pytest.raises(ValueError, match="max_cand"):
        K.screen_argmax(screen.kernel, x, None, 0)
    with pytest.raises(TypeError):
        K.screen_argmax(None, x)
    # a caller's scratch buffer for the approximate logits: same tokens, checked shape
    scratch = np.full((2, 50), 7.0, dtype=np.float32)
    np.testing.assert_array_equal(K.screen_argmax(screen.kernel, x, None, 1024, scratch),
                                  K.screen_argmax(screen.kernel, x))
    with pytest.raises(ValueError, match="scratch"):
        K.screen_argmax(screen.kernel, x, None, 1024, np.empty((2, 49), dtype=np.float32))
    with pytest.raises(ValueError, match="scratch"):
        K.screen_argmax(screen.kernel, x, None, 1024, np.empty((2, 100), dtype=np.float32)[:, ::2])
    args = dict(q=screen.q, scale=screen.scale, qsum=screen.qsum, bias=b, err=screen.err)
    consts = (1.0, 1.0, 1.0, 1e-6, 1.0, 0.0)
    for name, bad, exc in (("q", screen.q[:-1], TypeError), ("q", screen.q.view(np.uint8), TypeError),
                           ("scale", screen.scale[:-1], TypeError), ("scale", screen.scale.astype(np.float32), TypeError),
                           ("qsum", screen.qsum.astype(np.int64), TypeError), ("err", screen.err[:-1], TypeError),
                           ("bias", b[:-1], ValueError)):
        with pytest.raises(exc, match=name):
            K.Screen(lin.packed, **{**args, name: bad}, err_max=1.0, w_norm_max=1.0, bias_max=1.0, rel=1e-6,
                     slack=1.0, abs_err=0.0)
    with pytest.raises(ValueError, match="rel"):
        K.Screen(lin.packed, *args.values(), 1.0, 1.0, 1.0, float("nan"), 1.0, 0.0)
    with pytest.raises(ValueError, match="slack"):
        K.Screen(lin.packed, *args.values(), 1.0, 1.0, 1.0, 1e-6, float("inf"), 0.0)
    assert K.Screen(lin.packed, *args.values(), *consts) is not None
    # x = 0: the logits are the bias, exactly
    np.testing.assert_array_equal(K.screen_argmax(screen.kernel, np.zeros((1, 12), dtype=np.float32)),
                                  [np.argmax(b)])
    # two exactly tied columns are two candidates: with room for one, the screen declines
    w[30] *= 10 / np.linalg.norm(w[30])
    w[7] = w[30]
    tied = Linear(w, None)
    x1 = np.ascontiguousarray(w[30:31])         # logit 100 for columns 7 and 30, under 50 elsewhere
    s2 = OutputScreen.build(tied)
    assert K.screen_argmax(s2.kernel, x1, None, 1) is None
    np.testing.assert_array_equal(K.screen_argmax(s2.kernel, x1, None, 2), [7])


def test_non_finite_weights_or_bias_get_no_screen(rng):
    w = rng.standard_normal((40, 8)).astype(np.float32)
    w[5, 5] = np.nan
    assert OutputScreen.build(Linear(w)) is None
    w[5, 5] = 0.0
    bias = np.zeros(40, dtype=np.float32)
    bias[3] = np.inf
    assert OutputScreen.build(Linear(w, bias)) is None
    assert OutputScreen.build(Linear(w, np.zeros(40, dtype=np.float32))) is not None


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 300), k=st.integers(1, 80),
       B=st.integers(1, 16), dup=st.integers(0, 5), scale=st.sampled_from([1e-3, 1.0, 30.0]),
       n_banned=st.integers(0, 10))
def test_property_screened_argmax_is_the_float32_argmax(seed, n, k, B, dup, scale, n_banned):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    for _ in range(dup):                            # exact duplicate columns: ties
        w[rng.integers(n)] = w[rng.integers(n)]
    bias = rng.standard_normal(n).astype(np.float32) if seed % 2 else None
    lin = Linear(w, bias)
    x = rng.standard_normal((B, k)).astype(np.float32)
    banned = None
    if n_banned:
        banned = np.zeros(n, dtype=bool)
        banned[rng.integers(0, n, size=n_banned)] = True
    screen = OutputScreen.build(lin)
    got = screen.argmax(x, banned)
    if got is not None:
        np.testing.assert_array_equal(got, full_argmax(lin, x, banned))
    else:                                           # None only for every column banned, or too many rows
        assert (banned is not None and banned.all()) or B > screen.max_rows()


# ---------------------------------------------------------------- whole models

@pytest.fixture(scope="module")
def screened_model(tmp_path_factory):
    """A model whose vocabulary is large enough to be screened by default (8,000 x 256 floats)."""
    from pytransformer import export, torch_reference
    cfg = dict(format="pytransformer", format_version=1, encoder_layers=1, decoder_layers=2,
               max_positions=64, d_model=256, num_heads=4, ffn_dim=256, src_vocab_size=8000,
               tgt_vocab_size=8000, shared_embeddings=True, activation="relu", norm_placement="pre",
               encoder_final_norm=True, decoder_final_norm=True, positional_encoding="sinusoidal",
               sinusoidal_layout="halves", scale_embeddings=True, tie_output=True, output_bias=True,
               pad_id=0, bos_id=None, eos_id=1, decoder_start_id=0)
    path = tmp_path_factory.mktemp("screened")
    export.from_torch(torch_reference.init_seeded(cfg, seed=3).eval(), path)
    model = pytransformer.load(path)
    assert model.output_screen is not None, "8,000 x 256 float32 weights are above SCREEN_MIN_BYTES"
    return path, model


def test_model_decodes_the_same_tokens_with_and_without_the_screen(screened_model):
    """Greedy with suppressed ids, min_new_tokens and a forced BOS: identical tokens, batch 1-8."""
    path, model = screened_model
    rng = np.random.default_rng(2)
    srcs = [rng.integers(2, 8000, size=int(n)) for n in rng.integers(1, 30, size=8)]
    calls = []
    screen = model.output_screen
    original = screen.argmax
    screen.argmax = lambda *a, **kw: calls.append(1) or original(*a, **kw)
    try:
        for setup in ({}, {"suppressed_ids": np.array([5, 77, 4000])}, {"forced_bos_id": 9}):
            for name, value in setup.items():
                setattr(model, name, value)
            for B in (1, 2, 4, 8):
                for i in range(0, 8, B):
                    batch = srcs[i:i + B]
                    on = model.generate(batch, 20, min_new_tokens=3)
                    model.output_screen = None
                    off = model.generate(batch, 20, min_new_tokens=3)
                    model.output_screen = screen
                    for a, b in zip(on, off):
                        np.testing.assert_array_equal(a, b)
            for name in setup:
                setattr(model, name, None)
    finally:
        del screen.argmax
    assert len(calls) > 100, "the screen was not used"
    assert not model.set_output_screen(False) and model.output_screen is None
    assert model.set_output_screen(True)
    plain = pytransformer.load(path, output_screen=False)
    assert plain.output_screen is None
    np.testing.assert_array_equal(plain.generate(srcs[:1], 20)[0], model.generate(srcs[:1], 20)[0])
    with pytest.raises(TypeError, match="output_screen"):
        pytransformer.load(path, output_screen="no")


def test_python_threads_share_the_screen(screened_model):
    """8 Python threads decode through one model's screen at once (batches of 1-4, 2 kernel
    threads each): every result equals the sequential one."""
    import threading
    _, model = screened_model
    rng = np.random.default_rng(8)
    jobs = [[rng.integers(2, 8000, size=int(n)) for n in rng.integers(1, 25, size=1 + j % 4)]
            for j in range(8)]
    want = [model.generate(srcs, 12) for srcs in jobs]
    got, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def worker(j):
        try:
            barrier.wait(timeout=60)
            got[j] = [model.generate(jobs[j], 12) for _ in range(3)]
        except BaseException as exc:       # reported in the main thread
            errors.append((j, repr(exc)))
            barrier.abort()

    before = K.get_num_threads()
    K.set_num_threads(2)
    try:
        threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        K.set_num_threads(before)
    assert not errors, errors
    for j, rounds in enumerate(got):
        for r in rounds:
            for a, b in zip(r, want[j]):
                np.testing.assert_array_equal(a, b, err_msg=f"thread {j}")


def test_huge_pages_screen_copy_in_its_own_chunk_same_bits():
    """OutputScreen.build(huge_pages=True) puts a large 8-bit copy (here 8 MiB) in a chunk of its own
    on a 2 MiB boundary; the copy and the argmax are those of the ordinary build."""
    from pytransformer.model import Linear
    from pytransformer.screen import OutputScreen
    rng = np.random.default_rng(11)
    lin = Linear((rng.standard_normal((32768, 256)) / 16).astype(np.float32))
    plain, huge = OutputScreen.build(lin), OutputScreen.build(lin, huge_pages=True)
    assert huge.q.nbytes >= K.ARENA_MIN_BYTES
    assert huge.q.ctypes.data % K.HUGE_PAGE_BYTES == 0 and type(huge.q.base.base).__name__ == "_HugeChunk"
    assert plain.q.base is None or type(plain.q.base).__name__ != "_HugeChunk"
    np.testing.assert_array_equal(huge.q, plain.q)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    np.testing.assert_array_equal(huge.argmax(x), plain.argmax(x))
