"""reference.py - float64 NumPy references for every kernel (the oracles of test_kernels.py)."""
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def act(x, name):
    x = np.asarray(x, dtype=np.float64)
    if name == "none":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "silu":
        with np.errstate(over="ignore"):
            return x / (1.0 + np.exp(-x))
    raise ValueError(name)


def gemm(a, b, bias=None, act_name="none", residual=None):
    """act(a @ b + bias) + residual in float64, and the error scale sum_k |a||b| per element."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c = a64 @ b64
    if bias is not None:
        c = c + np.asarray(bias, np.float64)
    c = act(c, act_name)
    if residual is not None:
        c = c + np.asarray(residual, np.float64)
    scale = np.abs(a64) @ np.abs(b64) + 1.0
    return c, scale


def softmax(x, valid=None):
    x = np.asarray(x, np.float64)
    rows, cols = x.shape
    y = np.zeros_like(x)
    for r in range(rows):
        n = cols if valid is None else int(valid[r])
        if n <= 0:
            continue
        z = x[r, :n]
        if np.all(np.isneginf(z)):
            continue
        e = np.exp(z - z.max())
        y[r, :n] = e / e.sum()
    return y


def layer_norm(x, w, b, eps):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y + b if b is not None else y


def rms_norm(x, w, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def attention(q, k, v, lengths=None, causal=False, q_offset=0, bias=None, scale=None):
    """q (B, T, H, D), k/v (B, S, H, D) -> (B, T, H, D) in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, T, H, D = q.shape
    S = k.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = np.zeros((B, T, H, D))
    for b in range(B):
        n = S if lengths is None else int(lengths[b])
        for h in range(H):
            s = scale * q[b, :, h] @ k[b, :, h].T
            if bias is not None:
                s = s + np.asarray(bias[h], np.float64)
            for t in range(T):
                hi = min(n, q_offset + t + 1) if causal else n
                if hi <= 0:
                    continue
                z = s[t, :hi]
                p = np.exp(z - z.max())
                p /= p.sum()
                out[b, t, h] = p @ v[b, :hi, h]
    return out


def sinusoidal(n, d, offset=0, layout="interleaved"):
    pos = np.arange(offset, offset + n, dtype=np.float64)[:, None]
    i = np.arange(d // 2, dtype=np.float64)[None, :]
    ang = pos / np.power(10000.0, 2.0 * i / d)
    out = np.empty((n, d))
    if layout == "interleaved":
        out[:, 0::2] = np.sin(ang)
        out[:, 1::2] = np.cos(ang)
    else:
        out[:, :d // 2] = np.sin(ang)
        out[:, d // 2:] = np.cos(ang)
    return out
