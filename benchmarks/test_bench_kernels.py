"""test_bench_kernels.py - pytest-benchmark timings of the GEMM shapes, pytransformer beside numpy.

    pytest benchmarks/test_bench_kernels.py --benchmark-group-by=param:shape

Each case checks its result against float64 before timing. Figures for the README come from
kernel_report.py, which alternates the engines in one run and reports ratios.
"""
import numpy as np
import pytest

from pytransformer import _kernels as K

SHAPES = {"1024^3": (1024, 1024, 1024), "decode M=1 N=2048 K=512": (1, 2048, 512),
          "decode M=16 N=2048 K=512": (16, 2048, 512), "vocab M=1 N=58101 K=512": (1, 58101, 512)}


@pytest.fixture(scope="module", params=list(SHAPES))
def problem(request):
    m, n, k = SHAPES[request.param]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    return request.param, x, w, ref


@pytest.mark.parametrize("engine", ["pytransformer", "numpy"])
def test_linear(benchmark, problem, engine):
    shape, x, w, ref = problem
    benchmark.group = shape
    out = np.empty(ref.shape, np.float32)
    if engine == "pytransformer":
        wp = K.pack(w, transpose=True)
        fn = lambda: K.gemm(x, wp, out=out)
    else:
        fn = lambda: np.matmul(x, w.T, out=out)
    fn()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    benchmark(fn)
