"""test_robustness.py - determinism, thread safety and memory stability of loaded models.

* Determinism: tokens and scores are bitwise identical across runs (fresh processes), kernel
  thread counts (1, 2, 4) and batch compositions (a sequence alone, or among others of different
  lengths, at any position in the batch).
* Concurrency: one model called from 8 Python threads at once gives exactly the results of
  sequential calls.
* Memory: 10,000 generate calls in one process (with varied shapes and some rejected inputs)
  stop growing the resident set after warm-up; loading the same directory again and again
  leaks neither file descriptors nor memory mappings.

Models are small and seeded: two test configs initialised by pytransformer.torch_reference, and a
tiny NumPy-built model for the 10,000-call and reload tests.
"""
import gc
import hashlib
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pytransformer
from pytransformer import _kernels as K
from pytransformer.config import ModelConfig, expected_tensors
from conftest import UNDER_ASAN, with_threads
from model_configs import PARITY_CONFIGS

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_NEW = 10

# Two real-sized test configs (learned positions + separate vocabularies + pre-norm; odd sizes
# with 3 heads) and a tiny one for the 10,000-call memory test.
CONFIG_NAMES = ["pre_gelu_learned_separate", "odd_sizes_gelu_tanh_halves"]
TINY = dict(format="pytransformer", format_version=1, d_model=16, num_heads=2, encoder_layers=1,
            decoder_layers=1, ffn_dim=32, src_vocab_size=20, tgt_vocab_size=20,
            shared_embeddings=True, eos_id=1, decoder_start_id=0, max_positions=32)


def seeded_tensors(config, seed):
    cfg = ModelConfig.from_dict(config)
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_tensors(cfg).items():
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            t = 0.1 * rng.standard_normal(shape)
        else:
            t = rng.standard_normal(shape) / np.sqrt(shape[-1]) * 2.0
        out[name] = t.astype(np.float32)
    return out


def build(path, config, seed=0):
    pytransformer.save(path, config, seeded_tensors(config, seed))
    return str(path)


@pytest.fixture(scope="module", params=CONFIG_NAMES)
def model(request, tmp_path_factory):
    # The reference's seeded init gives varied greedy outputs (checked below); NumPy weights
    # of the same scales often collapse to one repeated token on these configs.
    from pytransformer import export, torch_reference
    ref = torch_reference.init_seeded(PARITY_CONFIGS[request.param], seed=len(request.param))
    path = tmp_path_factory.mktemp(request.param)
    export.from_torch(ref, path)
    return pytransformer.load(path)


def sources(cfg, n, seed, max_len=30):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=n)
    lengths[0], lengths[-1] = 1, max_len  # the extremes, always
    return [rng.integers(0, cfg.src_vocab_size, size=int(k)) for k in lengths]


def generate(model, srcs, **kw):
    kw.setdefault("min_new_tokens", 3)  # so every sequence runs a few steps before EOS may win
    return model.generate(srcs, MAX_NEW, return_scores=True, **kw)


def assert_bitwise(got, want, what):
    (gt, gs), (wt, ws) = got, want
    assert len(gt) == len(wt), what
    for i, (a, b) in enumerate(zip(gt, wt)):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{what}: tokens of sequence {i}: {a} vs {b}"
    for i, (a, b) in enumerate(zip(gs, ws)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{what}: scores of sequence {i}: {a} vs {b}"


def digest(result):
    tokens, scores = result
    h = hashlib.sha256()
    for t, s in zip(tokens, scores):
        h.update(np.int64(len(t)).tobytes() + t.astype("<i8").tobytes() + s.astype("<f8").tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Determinism

def test_outputs_are_not_degenerate(model):
    """The other tests compare outputs; they must vary with the input to prove anything."""
    tokens, scores = generate(model, sources(model.config, 12, 1))
    assert len({tuple(t) for t in tokens}) >= 3
    assert len({s.tobytes() for s in scores}) == 12  # the scores depend on every input token
    assert all(np.isfinite(s).all() and (s <= 0).all() for s in scores)


@pytest.mark.parametrize("threads", [2, 4])
def test_thread_counts_bitwise(model, threads):
    srcs = sources(model.config, 7, 2)
    one = with_threads(1, generate, model, srcs)
    assert_bitwise(with_threads(threads, generate, model, srcs), one, f"{threads} threads vs 1")


def test_batch_composition_bitwise(model):
    """Each sequence alone == the same sequence among others of different lengths, wherever it
    sits in the batch and whatever the batch size."""
    cfg = model.config
    srcs = sources(cfg, 9, 3)
    alone = [generate(model, [s]) for s in srcs]

    def check(batch_order, what):
        tokens, scores = generate(model, [srcs[i] for i in batch_order])
        for pos, i in enumerate(batch_order):
            assert_bitwise(([tokens[pos]], [scores[pos]]), alone[i], f"{what}: source {i} at {pos}")

    check(list(range(9)), "batch of 9")
    check(list(range(9))[::-1], "reversed batch of 9")
    check([4, 0], "pair")
    check([8, 1, 5], "three")
    rng = np.random.default_rng(4)
    check(list(rng.permutation(9)[:6]), "random six")
    # padded 2-D input with explicit lengths: same results again
    lens = np.array([len(s) for s in srcs])
    ids = np.full((len(srcs), lens.max()), cfg.pad_id, dtype=np.int64)
    for i, s in enumerate(srcs):
        ids[i, :len(s)] = s
    tokens, scores = generate(model, ids, lengths=lens)
    for i in range(len(srcs)):
        assert_bitwise(([tokens[i]], [scores[i]]), alone[i], f"padded array: source {i}")


RUN_SCRIPT = """
import sys, numpy as np, pytransformer
from test_robustness import sources, generate, digest
model = pytransformer.load(sys.argv[1])
print(digest(generate(model, sources(model.config, 8, 5))))
"""


def test_identical_across_runs_and_processes(tmp_path):
    """Fresh processes (different OMP_NUM_THREADS, different address layouts) print the same
    digest of tokens and scores as this process."""
    config = PARITY_CONFIGS["pre_gelu_learned_separate"]
    path = build(tmp_path / "m", config, seed=9)
    model = pytransformer.load(path)
    want = digest(generate(model, sources(model.config, 8, 5)))
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    digests = []
    for omp in ("1", "2", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=omp,
                   PYTHONPATH=os.pathsep.join([package_root, HERE, os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run([sys.executable, "-c", RUN_SCRIPT, path], env=env, cwd=HERE,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        digests.append(result.stdout.strip())
    assert digests == [want] * 3


# ---------------------------------------------------------------------------------------------
# Concurrency

N_PY_THREADS = 8


@pytest.mark.parametrize("kernel_threads", [1, 2])
def test_eight_python_threads_match_sequential(model, kernel_threads):
    """8 threads share one model and call generate at once (each with its own inputs, some
    batched, some single), several rounds; every result equals the sequential one bitwise."""
    cfg = model.config
    jobs = []
    for j in range(N_PY_THREADS):
        srcs = sources(cfg, 1 + j % 4, 100 + j, max_len=8 + 3 * j)
        jobs.append(srcs)
    before = K.get_num_threads()
    K.set_num_threads(kernel_threads)
    try:
        want = [generate(model, srcs) for srcs in jobs]
        rounds = 3
        got = [[None] * rounds for _ in jobs]
        errors = []
        barrier = threading.Barrier(N_PY_THREADS)

        def worker(j):
            try:
                for r in range(rounds):
                    barrier.wait(timeout=60)
                    got[j][r] = generate(model, jobs[j])
            except BaseException as exc:  # reported below, in the main thread
                errors.append((j, repr(exc)))
                barrier.abort()

        threads = [threading.Thread(target=worker, args=(j,)) for j in range(N_PY_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a generate call hung"
    finally:
        K.set_num_threads(before)
    assert not errors, errors
    for j in range(N_PY_THREADS):
        for r in range(rounds):
            assert_bitwise(got[j][r], want[j], f"thread {j}, round {r}")


def test_threads_with_one_shared_source(model):
    """The same input from 8 threads at once (same shapes, so any shared scratch would collide)."""
    srcs = sources(model.config, 3, 7)
    want = generate(model, srcs)
    results = [None] * N_PY_THREADS
    barrier = threading.Barrier(N_PY_THREADS)

    def worker(j):
        barrier.wait(timeout=60)
        results[j] = generate(model, srcs)

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(N_PY_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for j, r in enumerate(results):
        assert r is not None, f"thread {j} failed"
        assert_bitwise(r, want, f"thread {j}")


# ---------------------------------------------------------------------------------------------
# Memory

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


N_CALLS = 10_000
WARMUP_CALLS = 2_000
# After warm-up the resident set may move by allocator noise only: 2 MB over 8,000 calls would
# be a leak of ~260 bytes per call, which this catches.
RSS_GROWTH_LIMIT = 2 << 20


def _set_thp_disabled(on):
    """Linux prctl(PR_SET_THP_DISABLE): no transparent huge pages for this process while on. True if set."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    return ctypes.CDLL(None, use_errno=True).prctl(41, int(on), 0, 0, 0) == 0   # 41: PR_SET_THP_DISABLE


def test_ten_thousand_generate_calls_do_not_grow_memory(tmp_path):
    # khugepaged may fill a whole 2 MiB page around a few live 4 KiB pages of memory advised for
    # huge pages (numpy advises its arrays of 4 MiB and more), which moves the resident set by 2 MiB
    # steps that are not a leak: seen twice in CI on an AMD EPYC guest (one jump of 6.0 and of 7.6
    # MiB, then flat). The process runs without transparent huge pages while it is measured.
    thp_off = _set_thp_disabled(True)
    try:
        _ten_thousand_calls(tmp_path)
    finally:
        if thp_off:
            _set_thp_disabled(False)


def _ten_thousand_calls(tmp_path):
    model = pytransformer.load(build(tmp_path / "tiny", TINY, seed=1))
    cfg = model.config
    rng = np.random.default_rng(0)
    # A fixed cycle of varied calls: batch sizes 1-3, lengths 1-12, with and without scores,
    # and every 10th call a rejected input (error paths must not leak either).
    cycle = [[rng.integers(0, cfg.src_vocab_size, size=int(n)) for n in rng.integers(1, 13, size=1 + k % 3)]
             for k in range(50)]
    bad = [[0, 1, cfg.src_vocab_size]]

    def call(i):
        if i % 10 == 9:
            with pytest.raises(ValueError):
                model.generate(bad, 4)
        else:
            model.generate(cycle[i % len(cycle)], 1 + i % 6, return_scores=bool(i % 2))

    gc.collect()
    samples = []
    for i in range(N_CALLS):
        call(i)
        if i + 1 >= WARMUP_CALLS and (i + 1) % 1000 == 0:
            samples.append(rss_bytes())
    growth = samples[-1] - samples[0]
    assert growth <= RSS_GROWTH_LIMIT, (
        f"resident set grew by {growth} bytes over {N_CALLS - WARMUP_CALLS} calls after warm-up "
        f"(samples every 1000 calls: {[s >> 10 for s in samples]} KiB)")


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _mapping_count(path):
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(path))


def test_repeated_loads_release_files_and_mappings(tmp_path):
    path = build(tmp_path / "tiny", TINY, seed=2)
    weights = os.path.realpath(os.path.join(path, "model.safetensors"))
    src = [[3, 4, 5]]
    want = pytransformer.load(path).generate(src, 5)
    gc.collect()
    fds, maps, rss = _open_fds(), _mapping_count(weights), rss_bytes()
    for _ in range(300):
        model = pytransformer.load(path)
        got = model.generate(src, 5)
        del model
    gc.collect()
    assert [g.tolist() for g in got] == [w.tolist() for w in want]
    assert _open_fds() <= fds, "file descriptors leaked by load()"
    assert _mapping_count(weights) <= maps, "memory mappings of model.safetensors leaked"
    # Under AddressSanitizer (.ci/sanitize preloads it) freed memory waits in a quarantine of up to
    # 256 MB before it is reused, so the resident set grows whether or not anything leaks: there the
    # bound says nothing, and ASan itself checks the memory. Every other run checks it.
    if not UNDER_ASAN:
        assert rss_bytes() - rss <= 4 << 20


def test_model_survives_its_file_being_overwritten_in_place(tmp_path):
    """`cp new.safetensors model.safetensors` truncates the file in place while a server still
    has the old model loaded. A model that keeps views into the memory-mapped file then dies
    of SIGBUS on its next call (or silently mixes old and new weights). A loaded model must
    not depend on the file staying unchanged."""
    path = build(tmp_path / "m", dict(TINY, positional_encoding="learned", tie_output=False), seed=1)
    code = textwrap.dedent(f"""
        import os, pytransformer
        model = pytransformer.load({path!r})
        before = model.generate([[3, 4, 5]], 5)
        os.truncate({os.path.join(path, "model.safetensors")!r}, 0)
        after = model.generate([[3, 4, 5]], 5)
        assert [a.tolist() for a in after] == [b.tolist() for b in before]
        print("ok")
    """)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True, text=True,
                            timeout=120)
    how = f"signal {-result.returncode}" if result.returncode < 0 else f"status {result.returncode}"
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"generate after the file was truncated: {how}\n{result.stderr[-1500:]}")
