"""test_kernels.py - every kernel against float64 NumPy references, on both ISA paths and 1/2 threads."""
import os
import sys

import numpy as np
import pytest

import pytransformer
from pytransformer.model import Linear
from pytransformer import _kernels as K
from pytransformer import ops

from conftest import (ATTENTION_ATOL, ELEMWISE_ATOL, ELEMWISE_RTOL, GEMM_RTOL, NORM_ATOL, SOFTMAX_ATOL,
                      UNDER_ASAN, with_threads)
import reference as ref

SIZES = [1, 2, 7, 15, 16, 17, 33, 511, 1025]
ACTS = ["none", "relu", "gelu", "gelu_tanh", "silu"]


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def assert_gemm_close(c, a, b, bias=None, act="none", residual=None):
    want, scale = ref.gemm(a, b, bias, act, residual)
    err = np.abs(c.astype(np.float64) - want) / scale
    assert err.max() <= GEMM_RTOL, f"max scaled error {err.max():.3g} for a {a.shape} @ b {b.shape}"


# ---------------------------------------------------------------- GEMM
GEMM_SHAPES = ([(s, 17, 33) for s in SIZES] + [(7, s, 16) for s in SIZES] + [(15, 33, s) for s in SIZES]
               + [(33, 1025, 511), (511, 64, 1025), (6, 16, 1), (1, 58, 512), (260, 200, 1100), (45, 530, 300)])


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm_matches_float64(isa, threads, m, n, k, rng):
    a, b = f32(rng, m, k), f32(rng, k, n)
    assert_gemm_close(ops.matmul(a, b), a, b)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("m,n,k", [(1, 33, 17), (7, 50, 64), (40, 129, 70)])
def test_linear_fused_bias_activation_residual(isa, act, m, n, k, rng):
    x, w, bias, res = f32(rng, m, k), f32(rng, n, k), f32(rng, n), f32(rng, m, n)
    assert_gemm_close(ops.linear(x, w, bias, activation=act), x, w.T, bias, act)
    assert_gemm_close(ops.linear(x, w, bias, activation=act, residual=res), x, w.T, bias, act, res)
    assert_gemm_close(ops.linear(x, w), x, w.T)


def test_gemm_residual_may_alias_output(isa, rng):
    x, w, bias = f32(rng, 9, 40), f32(rng, 37, 40), f32(rng, 37)
    res = f32(rng, 9, 37)
    expected = ops.linear(x, w, bias, residual=res)
    inplace = res.copy()
    K.gemm(x, K.pack(w, transpose=True), bias, inplace, "none", inplace)
    np.testing.assert_array_equal(inplace, expected)


def test_gemm_strided_and_transposed_inputs(isa, rng):
    big = f32(rng, 20, 50)
    a = big[::2, 3:43]                      # row stride 100 floats, offset start
    bt = f32(rng, 30, 40)                   # b = bt.T, a transposed view
    b_neg = f32(rng, 40, 30)[::-1]          # negative row stride
    for b in (bt.T, b_neg, f32(rng, 40, 60)[:, ::2]):
        assert_gemm_close(ops.matmul(a, b), a, b)


def test_gemm_leading_batch_axes(isa, rng):
    a, b = f32(rng, 2, 3, 5, 11), f32(rng, 11, 7)
    c = ops.matmul(a, b)
    assert c.shape == (2, 3, 5, 7)
    assert_gemm_close(c.reshape(-1, 7), a.reshape(-1, 11), b)


@pytest.mark.parametrize("m,n,k", [(1, 2048, 512), (16, 2048, 512), (37, 100, 1025), (600, 130, 64),
                                   (260, 200, 1100), (300, 1000, 512)])
def test_gemm_bitwise_same_for_1_and_2_threads(isa, m, n, k, rng):
    a, w, bias = f32(rng, m, k), f32(rng, n, k), f32(rng, n)
    wp = K.pack(w, transpose=True)
    c1 = with_threads(1, K.gemm, a, wp, bias, None, "gelu")
    c2 = with_threads(2, K.gemm, a, wp, bias, None, "gelu")
    np.testing.assert_array_equal(c1, c2)


@pytest.fixture
def gemm_l2():
    """Restores the detected L2 size after a test that sets another."""
    yield K.set_gemm_l2_bytes
    K.set_gemm_l2_bytes(0)


def test_gemm_l2_size_detected_and_fitted(gemm_l2):
    info = pytransformer.cpu_info()
    detected = info["l2_bytes"]
    sysconf = os.sysconf("SC_LEVEL2_CACHE_SIZE") if "SC_LEVEL2_CACHE_SIZE" in os.sysconf_names else None
    if sys.platform.startswith("linux") and sysconf is not None and sysconf > 0:
        assert detected == sysconf
    in_range = 16 << 10 <= detected <= 1 << 30
    assert K.gemm_l2_bytes() == info["gemm_l2_bytes"] == (detected if in_range else 0)
    gemm_l2(512 << 10)                     # a quarter of the 2 MiB the block sizes were measured on
    assert K.gemm_l2_bytes() == 512 << 10
    assert (K.gemm_fit_l2(1 << 20), K.gemm_fit_l2(384 << 10)) == (256 << 10, 96 << 10)
    gemm_l2(4 << 20)                       # larger than that: the measured sizes stay
    assert (K.gemm_fit_l2(1 << 20), K.gemm_fit_l2(384 << 10)) == (1 << 20, 384 << 10)
    gemm_l2(0)
    assert K.gemm_l2_bytes() == info["gemm_l2_bytes"]


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1000, ValueError), ((1 << 30) + 1, ValueError),
                                     (2.0, TypeError), (True, TypeError), ("512k", TypeError)])
def test_gemm_l2_size_rejects_bad_values(gemm_l2, bad, exc):
    before = K.gemm_l2_bytes()
    with pytest.raises(exc, match="nbytes"):
        gemm_l2(bad)
    assert K.gemm_l2_bytes() == before


@pytest.mark.parametrize("l2", [16 << 10, 96 << 10, 512 << 10, 64 << 20])
def test_gemm_cache_blocks_do_not_change_bits(isa, gemm_l2, l2, rng):
    """Blocks fitted to a smaller L2 (more panel blocks per row-tile sweep, smaller parallel chunks)
    change the order of the work, never a result's bits: k is not blocked."""
    for m, n, k in [(1, 2048, 512), (16, 2048, 512), (45, 530, 300), (260, 200, 1100), (300, 1000, 512),
                    (200, 96, 2048)]:
        a, w, bias, res = f32(rng, m, k), f32(rng, n, k), f32(rng, n), f32(rng, m, n)
        wp = K.pack(w, transpose=True)
        gemm_l2(0)
        want = [with_threads(t, K.gemm, a, wp, bias, res, "silu") for t in (1, 2)]
        np.testing.assert_array_equal(want[0], want[1])
        gemm_l2(l2)
        for t in (1, 2):
            np.testing.assert_array_equal(with_threads(t, K.gemm, a, wp, bias, res, "silu"), want[0],
                                          err_msg=f"{m}x{n}x{k}, {t} thread(s), L2 {l2}")


@pytest.mark.parametrize("m", [2, 5, 8, 9, 37, 100])
def test_gemm_row_alone_equals_row_in_batch(isa, threads, m, rng):
    """The determinism contract: a row's result does not depend on the rows around it."""
    a, w, bias = f32(rng, m, 96), f32(rng, 200, 96), f32(rng, 200)
    wp = K.pack(w, transpose=True)
    full = K.gemm(a, wp, bias, None, "silu")
    for i in (0, m // 2, m - 1):
        np.testing.assert_array_equal(K.gemm(a[i:i + 1], wp, bias, None, "silu"), full[i:i + 1])


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("n,k", [(389, 512), (2048, 64), (16, 300), (150, 2048)])
def test_gemm_few_rows_stream_panels_same_bits_as_wide_tiles(isa, m, n, k, rng):
    """Products of a few rows (decode steps of small batches) visit B one panel after the other
    (PT_GEMM_STREAM_ROWS, PT_GEMM512_STREAM_ROWS), in chunks of decreasing size on several threads
    (csrc/pt_gemm_generic.c: 25, 128 and 10 panels here); rows of a larger product take several
    panels per tile. Every panel must be computed once, to the bits the wide tiles give."""
    a, w, bias, res = f32(rng, 9, k), f32(rng, n, k), f32(rng, n), f32(rng, 9, n)
    wp = K.pack(w, transpose=True)
    wide = K.gemm(a, wp, bias, res, "silu")                  # 9 rows: never the streaming order (see below)
    for t in (1, 2, 3):
        few = with_threads(t, K.gemm, a[:m], wp, bias, res[:m], "silu")
        np.testing.assert_array_equal(few, wide[:m], err_msg=f"{m} rows, {n}x{k}, {t} thread(s)")
    assert_gemm_close(K.gemm(a[:m], wp), a[:m], w.T)


@pytest.mark.parametrize("m", [8, 9, 12, 16, 17, 24, 33, 48, 64])
@pytest.mark.parametrize("n,k", [(389, 512), (2048, 64), (16, 300), (150, 2048), (100, 7)])
def test_gemm_overlap_order_same_bits_as_blocked(isa, m, n, k, rng):
    """Products of a few row tiles (batched decode steps: PT_GEMM_OVERLAP_ROWS, PT_GEMM512_OVERLAP_ROWS)
    go through B one small block at a time and prefetch the next block's rows, each tile a share
    (k split unevenly here: 7, 300 over 2-8 tiles); a 100-row product takes the blocked order. Every
    panel once, to the same bits, on 1 and 2 threads."""
    a, w, bias, res = f32(rng, 100, k), f32(rng, n, k), f32(rng, n), f32(rng, 100, n)
    wp = K.pack(w, transpose=True)
    blocked = K.gemm(a, wp, bias, res, "silu")
    for t in (1, 2):
        few = with_threads(t, K.gemm, a[:m], wp, bias, res[:m], "silu")
        np.testing.assert_array_equal(few, blocked[:m], err_msg=f"{m} rows, {n}x{k}, {t} thread(s)")
    assert_gemm_close(K.gemm(a[:m], wp), a[:m], w.T)


# ---------------------------------------------------------------- memory for packed weights
MIB = 1 << 20
HAS_THP = sys.platform.startswith("linux") and os.path.exists("/sys/kernel/mm/transparent_hugepage")


def test_weight_arena_pieces_aligned_disjoint_and_chunked():
    arena = K.WeightArena(3 * MIB + 1)        # the first chunk reserves 4 MiB
    assert (arena.chunks, arena.reserved) == (0, 0)   # mapped at the first take
    sizes = (1, 100, 3 * MIB, 64, 5 * MIB, MIB, 7)
    pieces = [arena.take(n) for n in sizes]
    for p, n in zip(pieces, sizes):
        assert p.dtype == np.uint8 and p.shape == (n,) and p.flags.c_contiguous and p.flags.writeable
        assert p.ctypes.data % K.ARENA_ALIGN == 0
        assert not p.any()                    # fresh pages
    spans = sorted((p.ctypes.data, p.ctypes.data + p.size) for p in pieces)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), "pieces overlap"
    # 1 + 100 + 3 MiB + 64 fill the first chunk (each piece starts on 64 bytes): it starts on a
    # huge page and the pieces follow each other
    assert pieces[0].ctypes.data % K.HUGE_PAGE_BYTES == 0
    assert [p.ctypes.data - pieces[0].ctypes.data for p in pieces[:4]] == [0, 64, 192, 192 + 3 * MIB]
    # the 5 MiB piece, and the 1 MiB one (256 bytes too many for the rest of the first chunk), get
    # chunks of their own; the last 7 bytes still fit the first chunk
    assert pieces[4].ctypes.data % K.HUGE_PAGE_BYTES == 0 and pieces[5].ctypes.data % K.HUGE_PAGE_BYTES == 0
    assert pieces[6].ctypes.data == pieces[0].ctypes.data + 192 + 3 * MIB + 64
    assert (arena.chunks, arena.reserved, arena.taken) == (3, 4 * MIB + 6 * MIB + 2 * MIB, sum(sizes))
    if HAS_THP:
        assert arena.advised == 3
    for i, p in enumerate(pieces):   # writable and separate
        p[:] = i
    assert all(int(p[0]) == i and int(p[-1]) == i for i, p in enumerate(pieces))
    assert "chunks=3" in repr(arena)


def test_weight_arena_chunks_outlive_the_arena():
    arena = K.WeightArena(2 * MIB)
    piece = arena.take(1000)
    piece[:] = 7
    del arena
    import gc
    gc.collect()
    assert int(piece.sum()) == 7000           # the chunk is alive while a piece is


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-5, ValueError), ((1 << 40) + 1, ValueError),
                                     (None, TypeError), ("64", TypeError), (False, TypeError),
                                     (2.0 * MIB, TypeError)])
def test_weight_arena_rejects_bad_sizes(bad, exc):
    with pytest.raises(exc, match="nbytes"):
        K.WeightArena(bad)
    arena = K.WeightArena(2 * MIB)
    with pytest.raises(exc, match="nbytes"):
        arena.take(bad)
    assert arena.chunks == 0 and arena.taken == 0


def test_weight_arena_for_model_sizes():
    assert K.weight_arena(K.ARENA_MIN_BYTES - 1) is None
    assert K.weight_arena(K.ARENA_MIN_BYTES).nbytes == K.ARENA_MIN_BYTES
    assert K.weight_arena(K.ARENA_MIN_BYTES).huge and not K.weight_arena(K.ARENA_MIN_BYTES, huge=False).huge
    with pytest.raises(TypeError, match="nbytes must be an int"):
        K.weight_arena(1e9)
    with pytest.raises(TypeError, match="huge must be True or False"):
        K.WeightArena(2 * MIB, huge="no")


def _vm_flags(address):
    """The VmFlags of the mapping of this process that holds address (Linux /proc/self/smaps)."""
    flags = None
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                flags = line.split()[1:]
    return flags


@pytest.mark.skipif(not HAS_THP, reason="no transparent huge pages on this system")
def test_weight_arena_advice_reaches_the_mapping():
    """huge=True chunks are advised for huge pages (VmFlags hg), huge=False ones against (nh)."""
    for huge, flag in ((True, "hg"), (False, "nh")):
        arena = K.WeightArena(2 * MIB, huge=huge)
        piece = arena.take(4096)
        assert arena.advised == 1
        assert flag in _vm_flags(piece.ctypes.data), (huge, _vm_flags(piece.ctypes.data))


def test_packing_into_an_arena_gives_the_same_bits(isa, rng):
    arena = K.WeightArena(2 * MIB)
    w, parts = f32(rng, 100, 70), [f32(rng, 32, 70), f32(rng, 48, 70), f32(rng, 5, 70)]
    a = f32(rng, 3, 70)
    taken = 0
    for plain, inarena in ((K.pack(w, transpose=True), K.pack(w, transpose=True, arena=arena)),
                           (K.pack(w.T), K.pack(w.T, arena=arena)),
                           (K.pack_stacked(parts), K.pack_stacked(parts, arena=arena))):
        assert inarena.data.ctypes.data % K.ARENA_ALIGN == 0 and inarena.shape == plain.shape
        np.testing.assert_array_equal(inarena.data, plain.data)
        np.testing.assert_array_equal(K.gemm(a, inarena), K.gemm(a, plain))
        taken += inarena.nbytes
    q_plain, q_arena = K.pack_i8(plain)[0], K.pack_i8(plain, arena=arena)[0]
    np.testing.assert_array_equal(q_arena, q_plain)
    assert q_arena.dtype == np.int8
    # all of it came from the arena's one chunk
    assert (arena.chunks, arena.taken) == (1, taken + q_arena.nbytes)
    for bad in ("arena", np.empty(10, np.float32), 3):
        with pytest.raises(TypeError, match="arena must be a WeightArena or None"):
            K.pack(w, arena=bad)
    with pytest.raises(TypeError, match="arena must be a WeightArena"):
        K.pack_i8(plain, arena=object())


def test_isa_paths_agree(rng):
    if not K.avx2_available():
        pytest.skip("no AVX2 path here (CPU without AVX2+FMA, or a portable-only build)")
    a, b = f32(rng, 33, 129), f32(rng, 129, 65)
    before = K.get_isa()
    try:
        K.set_isa("generic"); g = ops.matmul(a, b)
        K.set_isa("avx2"); v = ops.matmul(a, b)
    finally:
        K.set_isa(before)
    assert_gemm_close(g, a, b)
    assert_gemm_close(v, a, b)
    assert not np.array_equal(g, np.zeros_like(g))


def test_avx512_gemm_bitwise_equals_avx2(rng):
    """Same per-element FMA sequence, wider vectors: the two x86 paths agree to the bit."""
    if not K.avx512_available():
        pytest.skip("this CPU or build has no AVX-512F: there is no avx512 path to compare")
    before = K.get_isa()
    try:
        for m, n, k in [(1, 2048, 512), (7, 33, 1025), (37, 100, 64), (300, 513, 129), (9, 58, 3), (300, 700, 2100),
                        (45, 530, 300)]:
            a, w, bias, res = f32(rng, m, k), f32(rng, n, k), f32(rng, n), f32(rng, m, n)
            wp = K.pack(w, transpose=True)
            for act in ACTS:
                K.set_isa("avx2"); c2 = with_threads(1, K.gemm, a, wp, bias, res, act)
                K.set_isa("avx512"); c5 = with_threads(2, K.gemm, a, wp, bias, res, act)
                np.testing.assert_array_equal(c2, c5)
            inplace = res.copy()                       # residual aliasing the output
            with_threads(2, K.gemm, a, wp, None, inplace, "relu", inplace)
            K.set_isa("avx2")
            np.testing.assert_array_equal(inplace, K.gemm(a, wp, None, res, "relu"))
    finally:
        K.set_isa(before)


def test_avx512_silu_equals_avx2_for_every_float32():
    """The AVX-512 epilogue's SiLU against the AVX2 one on all 2^32 float32 bit patterns (a NaN only
    needs a NaN), in C on both threads (silu_check_paths). Under AddressSanitizer, where the
    vector code runs several times slower, the 2^24 patterns around each of 0, 1, 80, 104 and
    their negatives, the ranges where the two ways of scaling e^x could part."""
    if not K.avx512_available():
        pytest.skip("this CPU or build has no AVX-512F: there is no avx512 path to compare")
    if UNDER_ASAN:
        centres = np.array([0.0, 1.0, 80.0, 104.0, -0.0, -1.0, -80.0, -104.0], np.float32).view(np.uint32)
        ranges = [(int(c) - (1 << 23)) % (1 << 32) for c in centres]
        results = [K.silu_check_paths(first, 1 << 24, 2) for first in ranges]
    else:
        results = [K.silu_check_paths(0, 1 << 32, 2)]
    for diffs, lowest in results:
        assert diffs == 0, f"{diffs} inputs differ, the lowest bit pattern 0x{lowest:08x}"


def test_silu_check_paths_arguments():
    if not K.avx512_available():
        with pytest.raises(RuntimeError, match="AVX-512"):
            K.silu_check_paths(0, 16)
        return
    assert K.silu_check_paths(0xfffffff0, 32) == (0, None)      # wraps past 0xffffffff
    assert K.silu_check_paths(0x3f800000, 0) == (0, None)
    for first, count in ((-1, 16), (1 << 32, 16), (0, -1), (0, (1 << 32) + 1)):
        with pytest.raises(ValueError):
            K.silu_check_paths(first, count)


def test_avx512_silu_epilogue_bitwise_equals_avx2(rng):
    """The AVX-512 GEMM runs SiLU 16 lanes at a time (pt_simd_avx512.h) with the AVX2 instruction
    sequence per lane, except that e^x 2^k is scaled by one vscalefps instead of two power-of-two
    multiplies: same bits for every input that is not NaN (a NaN stays NaN; which operand's NaN a
    multiply passes on is the compiler's choice, which commutes it). c = 0 * 1 + bias = bias
    exactly, so the bias row carries the values under test through the epilogue. Besides random bit
    patterns, a dense sweep of [-150, -80] and [80, 90], where e^-|x| 2^64 or the result nears the
    subnormal range and the two ways of scaling would part if either rounded twice."""
    if not K.avx512_available():
        pytest.skip("this CPU or build has no AVX-512F: there is no avx512 path to compare")
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.17e-38, -1.17e-38, 88.7, 89.0,
                         -88.7, -103.9, -104.0, -150.0, 3.4e38, -3.4e38, 1e-20, -1e-20, 0.5, -0.5],
                        dtype=np.float32)
    randbits = rng.integers(0, 2 ** 32, size=1 << 16, dtype=np.uint64).astype(np.uint32).view(np.float32)
    def sweep(lo, hi):      # every 37th float32 between lo and hi (same sign)
        a_, b_ = np.array([lo, hi], np.float32).view(np.uint32)
        return np.arange(min(a_, b_), max(a_, b_), 37, dtype=np.uint32).view(np.float32)
    values = np.concatenate([specials, randbits, rng.standard_normal(4096, dtype=np.float32) * 20,
                             sweep(-80.0, -150.0), sweep(80.0, 90.0)])
    wp = K.pack(np.ones((values.size, 1), np.float32), transpose=True)
    a = np.zeros((1, 1), np.float32)
    before = K.get_isa()
    try:
        K.set_isa("avx2"); c2 = K.gemm(a, wp, values, None, "silu")
        K.set_isa("avx512"); c5 = K.gemm(a, wp, values, None, "silu")
    finally:
        K.set_isa(before)
    nan = np.isnan(values)
    np.testing.assert_array_equal(np.isnan(c5[0]), nan)
    np.testing.assert_array_equal(c2[0, ~nan].view(np.uint32), c5[0, ~nan].view(np.uint32))
    finite = np.isfinite(values) & (np.abs(values) < 80)
    x = values[finite].astype(np.float64)
    np.testing.assert_allclose(c5[0, finite], x / (1 + np.exp(-x)), rtol=2e-6, atol=1e-37)


def test_pack_stacked_equals_packing_the_concatenation(rng):
    """Fused q/k/v weights are packed part by part into one matrix: the same bytes as packing their
    concatenation, for contiguous and strided parts, a last part of any size, at 1 and 2 threads."""
    k = 70
    big = f32(rng, 96, 2 * k)
    cases = [[f32(rng, 32, k), f32(rng, 48, k), f32(rng, 16, k)],
             [f32(rng, 16, k), f32(rng, 21, k)],                      # last part not a whole panel
             [big[:, ::2], f32(rng, 5, k)],                           # strided part
             [f32(rng, 1024, k), f32(rng, 512, k), f32(rng, 2048, k)]]  # above the threaded size
    for parts in cases:
        want = K.pack(np.concatenate(parts), transpose=True)
        for nt in (1, 2):
            got = with_threads(nt, K.pack_stacked, parts)
            assert got.shape == want.shape
            np.testing.assert_array_equal(got.data, want.data)
    # what the model layer does with parts that do not fill whole panels: the concatenation
    parts = [f32(rng, 20, k), f32(rng, 20, k), f32(rng, 20, k)]
    lin = Linear.fused(parts, [None] * 3)
    np.testing.assert_array_equal(lin.packed.data, K.pack(np.concatenate(parts), transpose=True).data)
    lin = Linear.fused(cases[0], [f32(rng, 32), f32(rng, 48), f32(rng, 16)])
    x = f32(rng, 3, k)
    np.testing.assert_allclose(lin(x), x @ np.concatenate(cases[0]).T + lin.bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="weight 0 of the stack has 20 outputs, not a multiple of 16"):
        K.pack_stacked(parts)
    with pytest.raises(ValueError, match="same input size: 70 and 69"):
        K.pack_stacked([f32(rng, 16, k), f32(rng, 16, k - 1)])
    with pytest.raises(ValueError, match="non-empty list"):
        K.pack_stacked([])
    with pytest.raises(TypeError, match="dtype float32"):
        K.pack_stacked([np.zeros((16, k))])


def test_packed_matrix_roundtrip(rng):
    w = f32(rng, 37, 20)
    p = K.pack(w, transpose=True)
    assert p.shape == (20, 37) and p.data.size % 16 == 0
    # the embedding gather reads rows of W back out of the packed panels
    ids = np.array([0, 36, 5, 16, 17], dtype=np.int32)
    np.testing.assert_array_equal(K.embedding(ids, p, 1.0), w[ids])


@pytest.mark.parametrize("shape", [(1, 1), (17, 3), (33, 40), (600, 700), (1030, 515)])
def test_pack_layout_and_threads(rng, shape):
    """Every panel holds 16 columns of B k-major, zero past the last column, for B given directly,
    transposed (a Linear weight) or as a strided view, whatever the thread setting. Large matrices
    are packed on the worker team (never on OpenMP: processes forked after loading, as preforking
    servers do, would otherwise have to run serial; test_fork_and_limits checks that)."""
    k, n = shape
    b = f32(rng, k, n)
    npan = (n + 15) // 16
    want = np.zeros((npan, k, 16), np.float32)
    for p in range(npan):
        cols = b[:, p * 16:(p + 1) * 16]
        want[p, :, :cols.shape[1]] = cols
    wide = f32(rng, k, 2 * n)
    for source, transpose in ((b, False), (np.ascontiguousarray(b.T), True), (b.T, True),
                              (np.asfortranarray(b), False)):
        for nt in (1, 2):
            loops = K.thread_pool_stats()["loops"]
            got = with_threads(nt, K.pack, source, transpose)
            assert got.shape == (k, n)
            np.testing.assert_array_equal(got.data.reshape(npan, k, 16), want)
            if with_threads(nt, K.get_num_threads) == 2 and k * n >= 1 << 18 and K.thread_pool_stats()["available"]:
                assert K.thread_pool_stats()["loops"] == loops + 1
    strided = wide[:, ::2]
    want_s = np.zeros((npan, k, 16), np.float32)
    for p in range(npan):
        cols = strided[:, p * 16:(p + 1) * 16]
        want_s[p, :, :cols.shape[1]] = cols
    np.testing.assert_array_equal(with_threads(2, K.pack, strided).data.reshape(npan, k, 16), want_s)


# ---------------------------------------------------------------- activations
@pytest.mark.parametrize("act", ACTS[1:])
@pytest.mark.parametrize("n", SIZES)
def test_activations(isa, act, n, rng):
    x = f32(rng, 3, n, scale=4.0)
    x[0, :min(n, 6)] = np.array([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0], np.float32)[:min(n, 6)]
    bias = f32(rng, n)
    got = ops.activation(x, act, bias=bias)
    want = ref.act(x.astype(np.float64) + bias.astype(np.float64), act)
    np.testing.assert_allclose(got, want, rtol=ELEMWISE_RTOL, atol=ELEMWISE_ATOL)


def test_activation_named_wrappers(isa, rng):
    x = f32(rng, 4, 33, scale=3.0)
    np.testing.assert_allclose(ops.relu(x), ref.act(x, "relu"), atol=0)
    np.testing.assert_allclose(ops.gelu(x), ref.act(x, "gelu"), rtol=ELEMWISE_RTOL, atol=ELEMWISE_ATOL)
    np.testing.assert_allclose(ops.gelu(x, approximate="tanh"), ref.act(x, "gelu_tanh"),
                               rtol=ELEMWISE_RTOL, atol=ELEMWISE_ATOL)
    np.testing.assert_allclose(ops.silu(x), ref.act(x, "silu"), rtol=ELEMWISE_RTOL, atol=ELEMWISE_ATOL)


def test_activation_extremes(isa):
    x = np.array([[np.inf, -np.inf, 88.0, -88.0, 1e4, -1e4, 0.5]], np.float32)
    for act in ("relu", "gelu", "gelu_tanh", "silu"):
        y = ops.activation(x, act)
        np.testing.assert_allclose(y[0, 2:], ref.act(x[0, 2:], act), rtol=1e-6, atol=1e-6)
        assert y[0, 0] == np.inf and y[0, 1] == 0.0, (act, y)
    assert np.isnan(ops.activation(np.array([np.nan], np.float32), "gelu")).all()


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu"])
def test_activation_large_magnitudes(isa, act):
    """A dense grid over [-120, 120], through the ranges where e^-|x| (or the GELU tail) drops below
    2^-25 and the kernels stop computing it (1 +- t is then exactly 1) and where the results of
    negative x become subnormal: close to float64 everywhere, exactly x for large positive x."""
    x = np.arange(-12000, 12001, dtype=np.float64).astype(np.float32).reshape(1, -1) / np.float32(100)
    y = ops.activation(x, act)
    np.testing.assert_allclose(y, ref.act(x.astype(np.float64), act), rtol=ELEMWISE_RTOL, atol=ELEMWISE_ATOL)
    big = x[0] > 20
    np.testing.assert_array_equal(y[0, big], x[0, big])


def test_activation_position_independent(isa, rng):
    """The same value gives the same bits wherever it sits in a row (masked vector tails)."""
    x = f32(rng, 1, 23, scale=3.0)
    for act in ACTS[1:]:
        full = ops.activation(x, act)
        for j in range(23):
            np.testing.assert_array_equal(ops.activation(x[:, j:j + 1].copy(), act)[0, 0], full[0, j])


# ---------------------------------------------------------------- softmax
@pytest.mark.parametrize("cols", SIZES)
def test_softmax_rows(isa, threads, cols, rng):
    x = f32(rng, 5, cols, scale=5.0)
    np.testing.assert_allclose(ops.softmax(x), ref.softmax(x), atol=SOFTMAX_ATOL)


def test_softmax_lengths_and_causal(isa, rng):
    x = f32(rng, 3, 2, 6, 9, scale=3.0)
    lengths = np.array([9, 4, 0])
    got = ops.softmax(x, lengths=lengths, causal=True)
    for b in range(3):
        for h in range(2):
            valid = [min(lengths[b], t + 1) for t in range(6)]
            np.testing.assert_allclose(got[b, h], ref.softmax(x[b, h], valid), atol=SOFTMAX_ATOL)
    assert np.all(got[2] == 0.0) and not np.isnan(got).any()


def test_softmax_infinities_never_nan(isa):
    x = np.array([[-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, -np.inf], [1e30, -1e30, 1e30]], np.float32)
    y = ops.softmax(x)
    assert not np.isnan(y).any()
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_allclose(y[1], [0, 1, 0])
    np.testing.assert_allclose(y[2], [0.5, 0, 0.5])


# ---------------------------------------------------------------- norms
@pytest.mark.parametrize("cols", SIZES)
def test_layer_norm_and_rms_norm(isa, threads, cols, rng):
    x = f32(rng, 6, cols, scale=3.0) + 2.0
    w, b = f32(rng, cols), f32(rng, cols)
    np.testing.assert_allclose(ops.layer_norm(x, w, b, eps=1e-5), ref.layer_norm(x, w, b, 1e-5), atol=NORM_ATOL)
    np.testing.assert_allclose(ops.layer_norm(x, w, None), ref.layer_norm(x, w, None, 1e-5), atol=NORM_ATOL)
    np.testing.assert_allclose(ops.rms_norm(x, w, eps=1e-6), ref.rms_norm(x, w, 1e-6), atol=NORM_ATOL)


def test_fused_residual_norm_and_aliasing(isa, rng):
    x, r = f32(rng, 7, 96), f32(rng, 7, 96)
    w, b = f32(rng, 96), f32(rng, 96)
    h = x.astype(np.float64) + r
    np.testing.assert_allclose(ops.layer_norm(x, w, b, residual=r), ref.layer_norm(h, w, b, 1e-5), atol=NORM_ATOL)
    np.testing.assert_allclose(ops.rms_norm(x, w, residual=r), ref.rms_norm(h, w, 1e-6), atol=NORM_ATOL)
    # sum_out keeps x + r for the pre-norm residual stream; outputs may overwrite the inputs
    x2, r2 = x.copy(), r.copy()
    K.norm(x2, w, b, 1e-5, False, r2, r2, x2)
    np.testing.assert_array_equal(r2, x + r)
    np.testing.assert_allclose(x2, ref.layer_norm(h, w, b, 1e-5), atol=NORM_ATOL)


@pytest.mark.parametrize("cols", [33, 100, 512, 1025])
@pytest.mark.parametrize("rms", [False, True])
def test_norm_residual_and_sum_out_combinations(isa, cols, rms, rng):
    """Every combination of residual / sum_out / weight / bias, 40 rows (enough to run on 2 threads):
    close to float64, a row alone gives the bits it gets in the batch, 1 and 2 threads agree."""
    rows = 40
    x, r = f32(rng, rows, cols, scale=3.0) + 1.0, f32(rng, rows, cols)
    w, b = f32(rng, cols), (None if rms else f32(rng, cols))
    eps = 1e-6 if rms else 1e-5
    for res in (None, r):
        for keep_sum in (False, True):
            for weight in (w, None):
                h = x.astype(np.float64) + (0 if res is None else r)
                want = (ref.rms_norm(h, np.ones(cols) if weight is None else weight, eps) if rms
                        else ref.layer_norm(h, np.ones(cols) if weight is None else weight, b, eps))
                outs = {}
                for nt in (1, 2):
                    s = np.empty_like(x) if keep_sum else None
                    outs[nt] = with_threads(nt, K.norm, x, np.ones(cols, np.float32) if weight is None else weight,
                                            b, eps, rms, res, s)
                    if keep_sum:
                        np.testing.assert_array_equal(s, x + (0 if res is None else r))
                np.testing.assert_array_equal(outs[1], outs[2])
                np.testing.assert_allclose(outs[2], want, atol=NORM_ATOL)
                i = rows // 2
                alone = K.norm(x[i:i + 1], np.ones(cols, np.float32) if weight is None else weight, b, eps, rms,
                               None if res is None else r[i:i + 1])
                np.testing.assert_array_equal(alone, outs[1][i:i + 1])


def test_norm_strided_rows(isa, rng):
    big = f32(rng, 10, 80)
    x = big[::3, 5:69]
    w = f32(rng, 64)
    np.testing.assert_allclose(ops.layer_norm(x, w), ref.layer_norm(x, w, None, 1e-5), atol=NORM_ATOL)


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("B,T,S,H,D", [(1, 1, 1, 1, 1), (2, 1, 17, 8, 64), (3, 7, 33, 3, 32), (2, 33, 33, 2, 16),
                                       (1, 5, 511, 2, 15)])
def test_attention_matches_float64(isa, threads, B, T, S, H, D, rng):
    q, k, v = f32(rng, B, T, H, D), f32(rng, B, S, H, D), f32(rng, B, S, H, D)
    lengths = rng.integers(1, S + 1, size=B)
    got = ops.attention(q, k, v, lengths=lengths)
    np.testing.assert_allclose(got, ref.attention(q, k, v, lengths), atol=ATTENTION_ATOL)


def test_attention_causal_offset_bias_and_empty_rows(isa, rng):
    B, T, S, H, D = 3, 4, 10, 2, 8
    q, k, v = f32(rng, B, T, H, D), f32(rng, B, S, H, D), f32(rng, B, S, H, D)
    bias = f32(rng, H, T, S)
    lengths = np.array([10, 3, 0])
    got = ops.attention(q, k, v, lengths=lengths, causal=True, q_offset=6, bias=bias, scale=0.3)
    want = ref.attention(q, k, v, lengths, causal=True, q_offset=6, bias=bias, scale=0.3)
    np.testing.assert_allclose(got, want, atol=ATTENTION_ATOL)
    assert np.all(got[2] == 0.0)


def test_attention_cache_layout_views(isa, rng):
    """K/V read through the (B, H, Tmax, D) cache layout as transposed strided views."""
    B, H, Tmax, D, t = 2, 4, 12, 16, 7
    kc, vc = f32(rng, B, H, Tmax, D), f32(rng, B, H, Tmax, D)
    q = f32(rng, B, 1, H, D)
    k = kc[:, :, :t].transpose(0, 2, 1, 3)
    v = vc[:, :, :t].transpose(0, 2, 1, 3)
    np.testing.assert_allclose(K.attention(q, k, v), ref.attention(q, k, v), atol=ATTENTION_ATOL)


def test_attention_sequence_alone_equals_in_padded_batch(isa, threads, rng):
    H, D = 4, 16
    lens = [5, 12, 9]
    S = max(lens)
    q, k, v = f32(rng, 3, S, H, D), f32(rng, 3, S, H, D), f32(rng, 3, S, H, D)
    batch = K.attention(q, k, v, kv_lengths=np.array(lens))
    for b, n in enumerate(lens):
        alone = K.attention(q[b:b + 1, :n].copy(), k[b:b + 1, :n].copy(), v[b:b + 1, :n].copy())
        np.testing.assert_array_equal(alone, batch[b:b + 1, :n])


def test_attention_threads_bitwise(isa, rng):
    q, k, v = f32(rng, 2, 9, 8, 64), f32(rng, 2, 40, 8, 64), f32(rng, 2, 40, 8, 64)
    a1 = with_threads(1, K.attention, q, k, v, None, np.array([40, 21]), None, True, 31)
    a2 = with_threads(2, K.attention, q, k, v, None, np.array([40, 21]), None, True, 31)
    np.testing.assert_array_equal(a1, a2)


def test_avx512_attention_bitwise_equals_avx2(rng):
    """The AVX-512 attention computes each score with the AVX2 kernels' 8-lane FMA chains and
    reduction tree, two queries per zmm, and each output element with their FMA chain over the keys:
    the same bits as the AVX2 path for every head size (masked tails), query count (groups of four,
    a pair, an odd query), key count, causal offset, bias, key lengths and thread count."""
    if not K.avx512_available():
        pytest.skip("this CPU or build has no AVX-512F: there is no avx512 path to compare")
    before = K.get_isa()
    try:
        cases = [(1, 1, 1, 1, 1), (2, 1, 17, 8, 64), (3, 7, 33, 3, 32), (2, 33, 33, 2, 16), (1, 5, 511, 2, 15),
                 (2, 9, 40, 2, 65), (1, 6, 19, 1, 130), (2, 3, 8, 2, 7), (1, 4, 12, 2, 80), (2, 32, 32, 8, 64),
                 (1, 2, 100, 2, 128), (1, 13, 27, 1, 47)]
        for B, T, S, H, D in cases:
            q, k, v = f32(rng, B, T, H, D), f32(rng, B, S, H, D), f32(rng, B, S, H, D)
            bias = f32(rng, H, T, S)
            lens = rng.integers(0, S + 1, size=B).astype(np.int32)
            for causal, q_offset, b, L in [(False, 0, None, None), (False, 0, None, lens), (True, S - T, bias, lens),
                                           (True, 0, None, None), (False, 0, bias, None)]:
                if causal and q_offset < 0:
                    continue
                K.set_isa("avx2")
                want = with_threads(1, K.attention, q, k, v, None, L, b, causal, q_offset)
                K.set_isa("avx512")
                for nt in (1, 2):
                    got = with_threads(nt, K.attention, q, k, v, None, L, b, causal, q_offset)
                    np.testing.assert_array_equal(got, want, err_msg=f"{(B, T, S, H, D)} causal={causal}")
        # keys and values read through the (B, H, Tmax, D) cache layout (decode steps)
        kc, vc, q = f32(rng, 2, 4, 50, 64), f32(rng, 2, 4, 50, 64), f32(rng, 2, 5, 4, 64)
        k, v = kc[:, :, :37].transpose(0, 2, 1, 3), vc[:, :, :37].transpose(0, 2, 1, 3)
        K.set_isa("avx2"); want = K.attention(q, k, v, causal=True, q_offset=32)
        K.set_isa("avx512"); got = K.attention(q, k, v, causal=True, q_offset=32)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, ref.attention(q, k, v, causal=True, q_offset=32), atol=ATTENTION_ATOL)
    finally:
        K.set_isa(before)


def test_attention_3d_with_num_heads(isa, rng):
    q, k, v = f32(rng, 2, 3, 12), f32(rng, 2, 5, 12), f32(rng, 2, 5, 12)
    got = ops.attention(q, k, v, num_heads=3)
    want = ref.attention(q.reshape(2, 3, 3, 4), k.reshape(2, 5, 3, 4), v.reshape(2, 5, 3, 4))
    np.testing.assert_allclose(got, want.reshape(2, 3, 12), atol=ATTENTION_ATOL)


def test_attention_scratch_size_is_enough(isa, rng):
    """A caller-owned scratch of attention_scratch_size floats (what a decoding state keeps) gives
    the same bits as letting attention() allocate its own, at 1 and 2 threads."""
    B, T, S, H, D = 3, 5, 40, 4, 16
    q, k, v = f32(rng, B, T, H, D), f32(rng, B, S, H, D), f32(rng, B, S, H, D)
    lens = np.array([40, 7, 23], np.int32)
    for nt in (1, 2):
        scratch = np.full(K.attention_scratch_size(S, nt), np.nan, np.float32)
        want = with_threads(nt, K.attention, q, k, v, None, lens)
        got = with_threads(nt, K.attention, q, k, v, None, lens, scratch=scratch)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="kv_len and nthreads must be >= 1"):
        K.attention_scratch_size(0)


# ---------------------------------------------------------------- embeddings and positions
def test_embedding_gather_scale(rng):
    table = f32(rng, 50, 24)
    ids = np.array([[3, 0, 49], [7, 7, 1]])
    got = ops.embedding(ids, table, scale=2.5)
    np.testing.assert_array_equal(got, table[ids] * np.float32(2.5))
    with pytest.raises(ValueError, match=r"token id 50 out of range for vocab of 50"):
        ops.embedding(np.array([1, 50]), table)
    with pytest.raises(ValueError, match=r"token id -1"):
        ops.embedding(np.array([-1]), table)


@pytest.mark.parametrize("threads", [1, 2])
def test_embedding_many_tokens_plain_and_packed(threads, rng):
    """An encoder batch's gather (enough tokens to be split over threads), from a row-major table and
    from the packed copy of a tied output projection, with and without positions: exactly the
    numpy gather; a bad id anywhere leaves out untouched."""
    vocab, d, n = 300, 72, 700
    table = f32(rng, vocab, d)
    packed = K.pack(table, transpose=True)
    ids = rng.integers(0, vocab, size=n).astype(np.int32)
    pos = f32(rng, n, d)
    scale = np.float32(1.7)
    for tab in (table, packed):
        got = with_threads(threads, K.embedding, ids, tab, 1.7)
        np.testing.assert_array_equal(got, table[ids] * scale)
        got = with_threads(threads, K.embedding, ids, tab, 1.7, pos)
        np.testing.assert_array_equal(got, table[ids] * scale + pos)
        out = np.full((n, d), 7.0, np.float32)
        bad = ids.copy()
        bad[n - 3] = vocab
        with pytest.raises(ValueError, match=rf"token id {vocab} out of range .*position {n - 3}"):
            with_threads(threads, K.embedding, bad, tab, 1.0, None, out)
        assert (out == 7.0).all()


@pytest.mark.parametrize("n,d,offset,layout", [(1, 2, 0, "interleaved"), (64, 96, 0, "interleaved"),
                                               (33, 512, 0, "interleaved"), (40, 16, 2, "halves"),
                                               (1025, 64, 0, "halves")])
def test_sinusoidal_positions(n, d, offset, layout):
    got = ops.sinusoidal_positions(n, d, offset, layout)
    np.testing.assert_allclose(got, ref.sinusoidal(n, d, offset, layout), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(rng):
    a = f32(rng, 4, 5)
    with pytest.raises(TypeError, match="float32"):
        ops.matmul(a.astype(np.float64), a.T)
    with pytest.raises(ValueError, match=r"a is \(4, 5\), b is \(4, 5\)"):
        ops.matmul(a, a)
    with pytest.raises(ValueError, match="empty"):
        ops.matmul(np.zeros((0, 5), np.float32), a.T)
    with pytest.raises(TypeError, match="numpy"):
        ops.matmul([[1.0]], a)
    with pytest.raises(ValueError, match="contiguous along its last axis"):
        K.gemm(a.T, K.pack(a), None, None, "none")
    with pytest.raises(ValueError, match=r"weight \(3, 7\) expects 7"):
        ops.linear(a, f32(rng, 3, 7))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        ops.linear(a, f32(rng, 3, 5), f32(rng, 4))
    with pytest.raises(ValueError, match="unknown activation"):
        ops.linear(a, f32(rng, 3, 5), activation="tanhh")
    with pytest.raises(ValueError, match=r"out must have shape \(4, 3\)"):
        K.gemm(a, K.pack(f32(rng, 3, 5), transpose=True), out=np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty((4, 3), np.float32); ro.flags.writeable = False
        K.gemm(a, K.pack(f32(rng, 3, 5), transpose=True), out=ro)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        ops.softmax(a, lengths=[1, 2, 3, 6])
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        ops.layer_norm(a, f32(rng, 4))
    with pytest.raises(ValueError, match="eps must be > 0"):
        ops.layer_norm(a, f32(rng, 5), eps=0.0)
    with pytest.raises(ValueError, match=r"k must have shape \(1, S, 2, 4\)"):
        ops.attention(f32(rng, 1, 3, 2, 4), f32(rng, 1, 3, 2, 5), f32(rng, 1, 3, 2, 5))
    with pytest.raises(ValueError, match="kv_lengths must lie"):
        ops.attention(f32(rng, 1, 3, 2, 4), f32(rng, 1, 3, 2, 4), f32(rng, 1, 3, 2, 4), lengths=[4])
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(a, approximate="fast")
    with pytest.raises(ValueError, match="even d"):
        ops.sinusoidal_positions(4, 7)


def test_runtime_controls():
    info = pytransformer.cpu_info()
    assert info["isa"] in K.available_isas()
    assert set(info["features"]) >= {"avx2", "fma"}
    assert info["avx2_compiled"] in (True, False)
    assert pytransformer.openmp_enabled() == info["openmp"]
    before = pytransformer.get_num_threads()
    try:
        pytransformer.set_num_threads(1)
        assert pytransformer.get_num_threads() == 1
        with pytest.raises(ValueError, match=">= 1"):
            pytransformer.set_num_threads(0)
        with pytest.raises(TypeError):
            pytransformer.set_num_threads(1.5)
    finally:
        pytransformer.set_num_threads(before)
    with pytest.raises(ValueError, match="unknown ISA"):
        K.set_isa("sse9")
    if not K.avx2_available():
        with pytest.raises(RuntimeError, match="AVX2"):
            K.set_isa("avx2")
    if not K.avx512_available():
        with pytest.raises(RuntimeError, match="AVX-512|AVX2"):
            K.set_isa("avx512")


@pytest.mark.parametrize("isa_name", ["generic", "avx2", "avx512", "sse9"])
def test_isa_environment_variable(isa_name):
    """PYTRANSFORMER_ISA forces a path at import, and is an error when the CPU or build lacks it."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTRANSFORMER_ISA=isa_name)
    code = "import pytransformer; print(pytransformer.get_isa())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(__file__))
    if isa_name in K.available_isas():
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == isa_name
    else:
        assert proc.returncode != 0
        assert ("unknown ISA" in proc.stderr) if isa_name == "sse9" else ("does not support" in proc.stderr
                                                                       or "no AVX" in proc.stderr)


def test_machine_probes():
    """The benchmark FMA probes report the flops they ran (0 where the CPU or the build lacks the
    path) and refuse an unknown width."""
    assert K.probe_fma(1000, 1) == (1000 * 12 * 8 * 2 if K.avx2_available() else 0)
    assert K.probe_fma(1000, 2, 16) == (1000 * 24 * 16 * 2 * 2 if K.avx512_available() else 0)
    with pytest.raises(ValueError, match="lanes"):
        K.probe_fma(10, 1, 4)


def test_read_probe_reads_and_runs_on_the_team():
    """The read probe's value depends on every thread's share of the buffer, and with 2 threads it
    runs on the kernels' worker team (an OpenMP region of its own left the team's spinning worker
    competing with OpenMP's thread, which made the worker stop spinning for the decode steps a
    benchmark timed right after the probe)."""
    ones = np.ones(32 * 1000, np.float32)
    base = with_threads(1, K.probe_read_bandwidth, ones, 1)
    assert base > 0
    for nt in (1, 2):
        assert with_threads(nt, K.probe_read_bandwidth, ones, nt) == base
        assert with_threads(nt, K.probe_read_bandwidth, ones * 2, nt) == 2 * base
        twos_in_second_half = ones.copy()
        twos_in_second_half[len(ones) // 2:] = 2
        assert with_threads(nt, K.probe_read_bandwidth, twos_in_second_half, nt) == 1.5 * base
    if K.thread_pool_stats()["available"] and with_threads(2, K.get_num_threads) == 2:
        loops = K.thread_pool_stats()["loops"]
        with_threads(2, K.probe_read_bandwidth, ones, 2)
        with_threads(2, K.probe_fma, 1000, 2)
        assert K.thread_pool_stats()["loops"] == loops + (2 if K.avx2_available() else 1)
