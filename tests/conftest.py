"""conftest.py - shared fixtures and the one place where numerical tolerances are set."""
import os

import numpy as np
import pytest

from pytransformer import _kernels as K

# ---- tolerances (kernels vs float64 NumPy references; models vs PyTorch)
# GEMM / attention: error relative to the magnitude of the products summed, sum_k |a_ik| |b_kj|.
GEMM_RTOL = 1e-5
# element-wise kernels (activations, softmax, norms): absolute + relative on the output.
ELEMWISE_ATOL = 2e-6
ELEMWISE_RTOL = 2e-6
NORM_ATOL = 1e-5
SOFTMAX_ATOL = 2e-6
ATTENTION_ATOL = 2e-5
# whole models: teacher-forced logits against PyTorch / transformers (the issues ask <= 1e-4)
LOGITS_ATOL = 1e-4

ISAS = K.available_isas()
THREADS = [1, 2]
# .ci/sanitize runs the suite with AddressSanitizer preloaded
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per compiled-in ISA path, restoring the default afterwards."""
    before = K.get_isa()
    K.set_isa(request.param)
    yield request.param
    K.set_isa(before)


@pytest.fixture(params=THREADS)
def threads(request):
    before = K.get_num_threads()
    K.set_num_threads(request.param)
    yield request.param
    K.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def with_threads(n, fn, *args, **kwargs):
    before = K.get_num_threads()
    K.set_num_threads(n)
    try:
        return fn(*args, **kwargs)
    finally:
        K.set_num_threads(before)
