"""test_properties.py - property-based checks (hypothesis) of the kernels over random shapes and options."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytransformer import _kernels as K
from pytransformer import ops

from conftest import ATTENTION_ATOL, GEMM_RTOL, NORM_ATOL, SOFTMAX_ATOL, with_threads
import reference as ref

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
dims = st.integers(1, 70)
acts = st.sampled_from(["none", "relu", "gelu", "gelu_tanh", "silu"])
isas = st.sampled_from(K.available_isas())


def _arr(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@SETTINGS
@given(m=dims, n=dims, k=dims, act=acts, isa=isas, bias=st.booleans(), residual=st.booleans(),
       transpose=st.booleans(), row_pad=st.integers(0, 5), seed=st.integers(0, 2**31 - 1))
def test_gemm_any_shape(m, n, k, act, isa, bias, residual, transpose, row_pad, seed):
    before = K.get_isa()
    K.set_isa(isa)
    try:
        a = _arr(seed, m, k + row_pad)[:, :k]               # row stride != k
        w = _arr(seed + 1, n, k) if transpose else _arr(seed + 1, k, n)
        b_mat = w.T if transpose else w
        bp = K.pack(w, transpose=transpose)
        bvec = _arr(seed + 2, n) if bias else None
        res = _arr(seed + 3, m, n) if residual else None
        c1 = with_threads(1, K.gemm, a, bp, bvec, res, act)
        c2 = with_threads(2, K.gemm, a, bp, bvec, res, act)
        np.testing.assert_array_equal(c1, c2)
        want, scale = ref.gemm(a, b_mat, bvec, act, res)
        assert (np.abs(c1 - want) / scale).max() <= GEMM_RTOL
        i = m // 2                                           # a row alone equals the row in the batch
        np.testing.assert_array_equal(K.gemm(a[i:i + 1], bp, bvec, None if res is None else res[i:i + 1], act),
                                      c1[i:i + 1])
    finally:
        K.set_isa(before)


@SETTINGS
@given(rows=st.integers(1, 20), cols=st.integers(1, 300), data=st.data(), seed=st.integers(0, 2**31 - 1),
       isa=isas)
def test_softmax_any_lengths(rows, cols, data, seed, isa):
    valid = np.array(data.draw(st.lists(st.integers(-2, cols + 2), min_size=rows, max_size=rows)))
    x = _arr(seed, rows, cols, scale=10.0)
    before = K.get_isa()
    K.set_isa(isa)
    try:
        y = K.softmax_rows(x, np.clip(valid, -1, cols))
    finally:
        K.set_isa(before)
    assert not np.isnan(y).any()
    np.testing.assert_allclose(y, ref.softmax(x, np.clip(valid, 0, cols)), atol=SOFTMAX_ATOL)
    sums = y.sum(axis=1)
    np.testing.assert_allclose(sums[valid > 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(sums[valid <= 0], 0.0)


@SETTINGS
@given(rows=st.integers(1, 20), cols=st.integers(1, 600), shift=st.floats(-100, 100), seed=st.integers(0, 2**31 - 1),
       rms=st.booleans(), isa=isas)
def test_norms_any_shape(rows, cols, shift, seed, rms, isa):
    x = _arr(seed, rows, cols, scale=3.0) + np.float32(shift)
    r = _arr(seed + 1, rows, cols)
    w, b = _arr(seed + 2, cols), _arr(seed + 3, cols)
    before = K.get_isa()
    K.set_isa(isa)
    try:
        if rms:
            got, want = ops.rms_norm(x, w, residual=r), ref.rms_norm(x.astype(np.float64) + r, w, 1e-6)
        else:
            got, want = ops.layer_norm(x, w, b, residual=r), ref.layer_norm(x.astype(np.float64) + r, w, b, 1e-5)
    finally:
        K.set_isa(before)
    # a large common shift costs float32 precision in x itself: scale the tolerance by it
    np.testing.assert_allclose(got, want, atol=NORM_ATOL * (1 + abs(shift)) * np.abs(w).max())


@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 9), S=st.integers(1, 40), H=st.integers(1, 4), D=st.integers(1, 70),
       causal=st.booleans(), q_offset=st.integers(0, 10), use_bias=st.booleans(), data=st.data(),
       seed=st.integers(0, 2**31 - 1), isa=isas)
def test_attention_any_shape(B, T, S, H, D, causal, q_offset, use_bias, data, seed, isa):
    lengths = np.array(data.draw(st.lists(st.integers(0, S), min_size=B, max_size=B)))
    q, k, v = _arr(seed, B, T, H, D), _arr(seed + 1, B, S, H, D), _arr(seed + 2, B, S, H, D)
    bias = _arr(seed + 3, H, T, S) if use_bias else None
    before = K.get_isa()
    K.set_isa(isa)
    try:
        got1 = with_threads(1, ops.attention, q, k, v, lengths=lengths, causal=causal, bias=bias, q_offset=q_offset)
        got2 = with_threads(2, ops.attention, q, k, v, lengths=lengths, causal=causal, bias=bias, q_offset=q_offset)
    finally:
        K.set_isa(before)
    np.testing.assert_array_equal(got1, got2)
    want = ref.attention(q, k, v, lengths, causal=causal, q_offset=q_offset, bias=bias)
    np.testing.assert_allclose(got1, want, atol=ATTENTION_ATOL)
