"""pytransformer.ops - NumPy-in, NumPy-out access to the kernels, for users and for tests.

Every function takes float32 arrays and raises TypeError (wrong type or dtype) or ValueError
(shapes, empty dimensions, bad options) naming the shapes involved. Leading axes are flattened
into rows where the operation is row-wise. The model code calls pytransformer._kernels directly;
these wrappers add the conveniences (broadcast shapes, masks from lengths) a user expects.
"""
import numpy as np

from . import _kernels
from ._kernels import PackedMatrix, pack

__all__ = ["matmul", "linear", "pack", "PackedMatrix", "softmax", "layer_norm", "rms_norm", "relu",
           "gelu", "silu", "activation", "attention", "embedding", "sinusoidal_positions"]


def _as_f32(x, name):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype} with shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} has an empty dimension: shape {x.shape}")
    return x


def _rows(x, name):
    """View x (..., d) as 2-D rows with a contiguous last axis, copying only when it must."""
    x = _as_f32(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension, got a scalar")
    if x.ndim == 1:
        return np.ascontiguousarray(x).reshape(1, -1)
    if x.ndim == 2 and (x.strides[1] == 4 or x.shape[1] == 1) and x.strides[0] % 4 == 0:
        return x
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def matmul(a, b):
    """a @ b for a (..., k) and b (k, n) float32 (b may be strided or transposed)."""
    a = _as_f32(a, "a")
    if isinstance(b, PackedMatrix):
        bp = b
    else:
        b = _as_f32(b, "b")
        if b.ndim != 2:
            raise ValueError(f"b must be 2-D (k, n), got shape {b.shape}")
        bp = pack(b)
    if a.shape[-1] != bp.k:
        raise ValueError(f"shapes do not match for a @ b: a is {a.shape}, b is {(bp.k, bp.n)}")
    out = _kernels.gemm(_rows(a, "a"), bp)
    return out.reshape(a.shape[:-1] + (bp.n,))


def linear(x, weight, bias=None, activation="none", residual=None):
    """activation(x @ weight.T + bias) + residual, weight (out, in) as in torch.nn.Linear.

    weight may also be a PackedMatrix from pack(weight, transpose=True), packed once and reused."""
    x = _as_f32(x, "x")
    if isinstance(weight, PackedMatrix):
        wp = weight
    else:
        weight = _as_f32(weight, "weight")
        if weight.ndim != 2:
            raise ValueError(f"weight must be 2-D (out, in), got shape {weight.shape}")
        if weight.shape[1] != x.shape[-1]:
            raise ValueError(f"x has {x.shape[-1]} features but weight {weight.shape} expects {weight.shape[1]}")
        wp = pack(weight, transpose=True)
    if x.shape[-1] != wp.k:
        raise ValueError(f"x has {x.shape[-1]} features but the packed weight expects {wp.k}")
    res = None if residual is None else _rows(residual, "residual")
    if res is not None and res.shape != (int(np.prod(x.shape[:-1])), wp.n):
        raise ValueError(f"residual must have shape {x.shape[:-1] + (wp.n,)}, got {residual.shape}")
    out = _kernels.gemm(_rows(x, "x"), wp, bias=bias, residual=res, act=activation)
    return out.reshape(x.shape[:-1] + (wp.n,))


def softmax(x, lengths=None, causal=False):
    """Softmax over the last axis, max-subtracted.

    lengths: (B,) with B = x.shape[0]; in batch b only the first lengths[b] keys are valid.
    causal: the row at index t along axis -2 sees only keys 0..t. Masked entries are 0, and a row
    with no valid key is all zeros (never NaN)."""
    x = _as_f32(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension")
    cols = x.shape[-1]
    rows2 = _rows(x, "x")
    valid = None
    if lengths is not None or causal:
        if x.ndim < 2 and lengths is not None:
            raise ValueError(f"lengths needs x with a leading batch axis, got shape {x.shape}")
        if causal and x.ndim < 2:
            raise ValueError(f"causal needs x with at least 2 dimensions (..., T, S), got shape {x.shape}")
        valid = np.full(x.shape[:-1], cols, dtype=np.int64)
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (x.shape[0],) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"lengths must be {x.shape[0]} integers (one per batch row), "
                                 f"got shape {lengths.shape} dtype {lengths.dtype}")
            if lengths.min() < 0 or lengths.max() > cols:
                raise ValueError(f"lengths must lie in [0, {cols}], got {lengths.tolist()}")
            valid = np.minimum(valid, lengths.reshape((-1,) + (1,) * (x.ndim - 2)))
        if causal:
            t = np.arange(x.shape[-2]).reshape((-1,) if x.ndim == 2 else (1,) * (x.ndim - 2) + (-1,))
            valid = np.minimum(valid, t + 1)
        valid = valid.reshape(-1).astype(np.int32)
    return _kernels.softmax_rows(rows2, valid).reshape(x.shape)


def layer_norm(x, weight, bias=None, eps=1e-5, residual=None):
    """Layer norm over the last axis of (x + residual)."""
    x = _as_f32(x, "x")
    res = None if residual is None else _rows(_as_f32(residual, "residual"), "residual")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must have the shape of x {x.shape}, got {residual.shape}")
    return _kernels.norm(_rows(x, "x"), weight, bias, eps, False, res).reshape(x.shape)


def rms_norm(x, weight, eps=1e-6, residual=None):
    """RMS norm over the last axis of (x + residual): h / sqrt(mean(h^2) + eps) * weight."""
    x = _as_f32(x, "x")
    res = None if residual is None else _rows(_as_f32(residual, "residual"), "residual")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must have the shape of x {x.shape}, got {residual.shape}")
    return _kernels.norm(_rows(x, "x"), weight, None, eps, True, res).reshape(x.shape)


def activation(x, name, bias=None):
    """name(x + bias) for name in relu, gelu, gelu_tanh, silu, none."""
    x = _as_f32(x, "x")
    return _kernels.bias_activation(_rows(x, "x"), bias, name).reshape(x.shape)


def relu(x):
    return activation(x, "relu")


def gelu(x, approximate="none"):
    """GELU, exact (erf) by default or approximate='tanh'."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return activation(x, "gelu" if approximate == "none" else "gelu_tanh")


def silu(x):
    return activation(x, "silu")


def attention(q, k, v, lengths=None, causal=False, bias=None, scale=None, num_heads=None, q_offset=0):
    """Scaled dot-product attention.

    q (B, Tq, H, D), k and v (B, S, H, D); or 3-D (B, T, H*D) with num_heads given.
    lengths: (B,) valid keys per batch row; causal: query t sees keys <= q_offset + t;
    bias: (H, Tq, S) added to the scores. Returns the shape of q."""
    q = _as_f32(q, "q"); k = _as_f32(k, "k"); v = _as_f32(v, "v")
    three_d = q.ndim == 3
    if three_d:
        if num_heads is None or num_heads < 1:
            raise ValueError(f"3-D q {q.shape} needs num_heads >= 1")
        for name, a in (("q", q), ("k", k), ("v", v)):
            if a.ndim != 3 or a.shape[2] % num_heads:
                raise ValueError(f"{name} must be (B, T, H*D) with H={num_heads} dividing the last axis, got {a.shape}")
        q = q.reshape(q.shape[0], q.shape[1], num_heads, -1)
        k = k.reshape(k.shape[0], k.shape[1], num_heads, -1)
        v = v.reshape(v.shape[0], v.shape[1], num_heads, -1)
    out = _kernels.attention(q, k, v, kv_lengths=lengths, bias=bias, causal=causal, q_offset=q_offset, scale=scale)
    return out.reshape(out.shape[0], out.shape[1], -1) if three_d else out


def embedding(ids, table, scale=1.0):
    """table[ids] * scale for integer ids of any shape; out-of-range ids raise ValueError."""
    ids = np.asarray(ids)
    if ids.size == 0:
        raise ValueError(f"ids is empty: shape {ids.shape}")
    d = table.k if isinstance(table, PackedMatrix) else _as_f32(table, "table").shape[-1]
    return _kernels.embedding(ids.reshape(-1), table, scale).reshape(ids.shape + (d,))


def sinusoidal_positions(n, d, offset=0, layout="interleaved"):
    """The paper's table: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(same), p = offset..offset+n-1."""
    return _kernels.sinusoidal_positions(n, d, offset, layout)
