"""test_pool.py - the GEMM worker team (csrc/pt_pool.c): used when it should be, same bits as
OpenMP and as one thread, safe with many Python threads, and switched off by the environment."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pytransformer
from pytransformer import _kernels as K

LINUX = sys.platform.startswith("linux")
needs_threads = pytest.mark.skipif(not pytransformer.openmp_enabled(), reason="serial build: one thread only")


@pytest.fixture
def two_threads():
    before = pytransformer.get_num_threads()
    pytransformer.set_num_threads(2)
    K.set_thread_pool(True)
    yield
    K.set_thread_pool(True)
    pytransformer.set_num_threads(before)


def _case(rows, k, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    r = rng.standard_normal((rows, n), dtype=np.float32)
    return x, K.pack(w, transpose=True), b, r, w


@needs_threads
@pytest.mark.skipif(not LINUX, reason="the worker team is Linux-only (futex)")
def test_pool_runs_multi_threaded_gemms(two_threads):
    assert K.thread_pool_stats()["available"]
    x, p, b, r, w = _case(1, 512, 2048, 0)
    before = K.thread_pool_stats()["loops"]
    y = K.gemm(x, p, b)
    stats = K.thread_pool_stats()
    assert stats["loops"] > before and stats["workers"] >= 1
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64) + b, rtol=1e-4, atol=1e-3)
    # below the GEMM's grain size, one thread and no loop
    xs, ps, _, _, _ = _case(1, 16, 16, 1)
    n = K.thread_pool_stats()["loops"]
    K.gemm(xs, ps)
    assert K.thread_pool_stats()["loops"] == n


@needs_threads
@pytest.mark.parametrize("rows,k,n", [(1, 512, 2048), (3, 512, 1536), (16, 512, 512), (100, 96, 520),
                                      (1, 2048, 512),
                                      # blocks of rows x panels: a partial row block and panel block,
                                      # and (k = 2100) panel blocks of a single micro-kernel width
                                      (257, 512, 1000), (300, 2100, 700)])
@pytest.mark.parametrize("act", ["none", "relu", "silu"])
def test_pool_openmp_and_one_thread_give_the_same_bits(two_threads, rows, k, n, act):
    x, p, b, r, _ = _case(rows, k, n, rows + k + n)
    a = K.ACTIVATIONS[act]
    got = {}
    for mode in ("pool", "openmp", "serial"):
        pytransformer.set_num_threads(1 if mode == "serial" else 2)
        K.set_thread_pool(mode == "pool")
        got[mode] = (K.gemm(x, p, b, None, a), K.gemm(x, p, None, r, 0))
    for mode in ("openmp", "serial"):
        for g, want in zip(got[mode], got["pool"]):
            np.testing.assert_array_equal(g, want)


@needs_threads
def test_pool_screen_gives_the_same_logits_as_openmp(two_threads):
    from pytransformer.model import Linear
    from pytransformer.screen import OutputScreen
    rng = np.random.default_rng(3)
    lin = Linear(rng.standard_normal((3000, 64), dtype=np.float32), rng.standard_normal(3000, dtype=np.float32))
    screen = OutputScreen.build(lin)
    x = rng.standard_normal((5, 64), dtype=np.float32)
    K.set_thread_pool(True)
    a, tok_a = screen.logits(x), screen.argmax(x)
    K.set_thread_pool(False)
    b, tok_b = screen.logits(x), screen.argmax(x)
    np.testing.assert_array_equal(a, b)
    assert tok_a is not None
    np.testing.assert_array_equal(tok_a, tok_b)
    np.testing.assert_array_equal(tok_a, K.gemm(x, lin.packed, lin.bias).argmax(axis=1))


@needs_threads
@pytest.mark.parametrize("batch,q_len,kv_len,causal", [(16, 1, 40, False), (4, 32, 32, True), (3, 7, 300, False)])
def test_pool_attention_gives_the_same_bits_as_openmp_and_one_thread(two_threads, batch, q_len, kv_len, causal):
    rng = np.random.default_rng(batch * 1000 + kv_len)
    H, D = 8, 64
    q = rng.standard_normal((batch, q_len, H, D), dtype=np.float32)
    k = rng.standard_normal((batch, kv_len, H, D), dtype=np.float32)
    v = rng.standard_normal((batch, kv_len, H, D), dtype=np.float32)
    lens = rng.integers(1, kv_len + 1, size=batch).astype(np.int32)
    got = {}
    for mode in ("pool", "openmp", "serial"):
        pytransformer.set_num_threads(1 if mode == "serial" else 2)
        K.set_thread_pool(mode == "pool")
        loops = K.thread_pool_stats()["loops"]
        got[mode] = K.attention(q, k, v, kv_lengths=lens, causal=causal)
        if mode == "pool" and LINUX and pytransformer.get_isa() != "generic":
            assert K.thread_pool_stats()["loops"] > loops       # above the grain: it ran on the team
    np.testing.assert_array_equal(got["openmp"], got["pool"])
    np.testing.assert_array_equal(got["serial"], got["pool"])


@needs_threads
def test_pool_norms_and_embedding_give_the_same_bits_as_openmp_and_one_thread(two_threads):
    rng = np.random.default_rng(7)
    x, r = rng.standard_normal((300, 512), dtype=np.float32), rng.standard_normal((300, 512), dtype=np.float32)
    w, b = rng.standard_normal(512, dtype=np.float32), rng.standard_normal(512, dtype=np.float32)
    table = rng.standard_normal((1000, 512), dtype=np.float32)
    packed = K.pack(table, transpose=True)
    ids = rng.integers(0, 1000, size=300).astype(np.int32)
    got = {}
    for mode in ("pool", "openmp", "serial"):
        pytransformer.set_num_threads(1 if mode == "serial" else 2)
        K.set_thread_pool(mode == "pool")
        loops = K.thread_pool_stats()["loops"]
        s = np.empty_like(x)
        got[mode] = (K.norm(x, w, b), K.norm(x, w, None, 1e-6, True, r, s), s,
                     K.embedding(ids, packed, 2.0), K.embedding(ids, table, 2.0, x))
        if mode == "pool" and LINUX and K.avx2_available() and pytransformer.get_isa() != "generic":
            assert K.thread_pool_stats()["loops"] >= loops + 4   # every call ran on the team
    for mode in ("openmp", "serial"):
        for g, want in zip(got[mode], got["pool"]):
            np.testing.assert_array_equal(g, want)


@needs_threads
def test_more_threads_than_cores_then_fewer(two_threads):
    """Oversubscribed (4 threads on a 2-core machine) and back to 2: workers started for 4 stay,
    only as many as the thread count asks for take tasks, and the bits never change."""
    x, p, b, _, _ = _case(5, 512, 2048, 21)
    pytransformer.set_num_threads(1)
    want = K.gemm(x, p, b, None, K.ACTIVATIONS["relu"])
    for n in (4, 2, 3, 2):
        pytransformer.set_num_threads(n)
        for _ in range(20):
            np.testing.assert_array_equal(K.gemm(x, p, b, None, K.ACTIVATIONS["relu"]), want)
    if LINUX:
        assert K.thread_pool_stats()["workers"] >= 3


@needs_threads
def test_many_python_threads_share_the_pool(two_threads):
    """One caller at a time gets the team; the others run on OpenMP at the same time. Every result
    must still be exactly the one-thread result."""
    cases = [_case(rows, 256, 1024, 10 + rows) for rows in (1, 2, 4, 8)]
    pytransformer.set_num_threads(1)
    want = [K.gemm(x, p, b) for x, p, b, _, _ in cases]
    pytransformer.set_num_threads(2)
    errors = []

    def work(i):
        try:
            for it in range(60):
                j = (i + it) % len(cases)
                x, p, b, _, _ = cases[j]
                y = K.gemm(x, p, b)
                if not np.array_equal(y, want[j]):
                    errors.append((i, it, j))
        except Exception as e:       # reported below; a thread's exception would otherwise vanish
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []


@needs_threads
@pytest.mark.skipif(not LINUX, reason="the worker team is Linux-only (futex)")
def test_environment_switches_the_pool_off(tmp_path):
    code = ("import numpy as np, pytransformer\n"
            "from pytransformer import _kernels as K\n"
            "pytransformer.set_num_threads(2)\n"
            "x = np.ones((1, 512), np.float32); p = K.pack(np.ones((2048, 512), np.float32), transpose=True)\n"
            "assert float(K.gemm(x, p)[0, 0]) == 512.0\n"
            "s = K.thread_pool_stats(); print(s['available'], s['loops'], s['workers'])\n")
    env = dict(os.environ, PYTRANSFORMER_THREAD_POOL="0")
    # cwd outside the source tree: `python -c` puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0", "0"]
    env["PYTRANSFORMER_THREAD_POOL"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["True", "2"]     # the packing and the GEMM


@needs_threads
def test_generate_is_identical_with_and_without_the_pool(two_threads, tmp_path):
    from pytransformer import export, torch_reference
    from model_configs import PARITY_CONFIGS
    # wide enough that the layers' GEMMs are above the grain size and run multi-threaded
    cfg = dict(PARITY_CONFIGS["paper_post_relu"], d_model=256, ffn_dim=1024, num_heads=4)
    export.from_torch(torch_reference.init_seeded(cfg, seed=9), tmp_path)
    model = pytransformer.load(str(tmp_path))
    src = [[3, 4, 5, 6, 7, 8, 9, 10], [9, 2, 11], [5] * 12]
    K.set_thread_pool(True)
    loops = K.thread_pool_stats()["loops"]
    a = model.generate(src, 12, min_new_tokens=12, return_scores=True)
    if LINUX:
        assert K.thread_pool_stats()["loops"] > loops
    K.set_thread_pool(False)
    b = model.generate(src, 12, min_new_tokens=12, return_scores=True)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(x, y)
