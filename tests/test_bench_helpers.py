"""The statistics and switches of the engine comparison (benchmarks/common.py, benchmarks/compare_engines.py):
what its report says about paired samples and instruction sets must be what was measured."""
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest

from pytransformer import _kernels as K

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)
import common  # noqa: E402
import compare_engines  # noqa: E402


def test_alternate_timed_records_samples_round_by_round(monkeypatch):
    monkeypatch.setattr(common, "SETTLE_SECONDS", 0.0)
    calls = []

    def runner(name, values):
        it = iter(values)

        def run(inner):
            calls.append((name, inner))
            return next(it)
        return run

    # two warm-up calls each, then 5 rounds
    a = [1.0, 1.0, 5.0, 1.0, 4.0, 2.0, 3.0]
    b = [2.0, 2.0, 10.0, 3.0, 8.0, 4.0, 9.0]
    samples = {}
    med = common.alternate_timed({"a": runner("a", a), "b": runner("b", b)}, 5, samples=samples)
    assert samples == {"a": a[2:], "b": b[2:]}
    assert med == {"a": statistics.median(a[2:]), "b": statistics.median(b[2:])}
    # the engines alternate within each round after the warm-up
    assert [n for n, _ in calls[4:]] == ["a", "b"] * 5
    assert common.paired_ratios(samples["b"], samples["a"]) == sorted([2.0, 3.0, 2.0, 2.0, 3.0])


def test_quartiles():
    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 9, 15, 16):
        v = list(rng.standard_normal(n))
        q1, med, q3 = common.quartiles(v)
        np.testing.assert_allclose([q1, med, q3], np.percentile(v, [25, 50, 75]), rtol=1e-12, atol=1e-12)
    assert common.quartiles([3.0]) == (3.0, 3.0, 3.0)


def test_isa_switch_reaches_every_engine_process():
    """--isa avx2 sets the variables each engine reads at start-up; a child process started with them
    runs pytransformer on the AVX2 path (or refuses, where the CPU has none)."""
    env = compare_engines.ISA_ENV["avx2"]
    assert env["PYTRANSFORMER_ISA"] == "avx2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["CT2_FORCE_CPU_ISA"] == "AVX2"
    if not K.avx2_available():
        pytest.skip("no AVX2 path on this CPU or build")
    out = subprocess.run([sys.executable, "-c", "import pytransformer; print(pytransformer.cpu_info()['isa'])"],
                         env=dict(os.environ, **env), capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "avx2"


def test_huge_pages_switch_reaches_the_pytransformer_engine(monkeypatch):
    """--huge-pages on/off sets a variable that every process of the run inherits; the pytransformer
    engine loads with huge_pages=True when it is "1", False when "0", and with load's default (True)
    when it is unset."""
    import engines
    dates = os.path.join(os.path.dirname(BENCH), "weights", "dates")
    for value, want in (("1", True), (None, True), ("0", False)):
        if value is None:
            monkeypatch.delenv(engines.HUGE_PAGES_ENV, raising=False)
        else:
            monkeypatch.setenv(engines.HUGE_PAGES_ENV, value)
        eng = engines.PytransformerEngine(dates, 1).load()
        assert eng.model.huge_pages is want


def test_probe_peak_rss_is_its_own_not_its_parents():
    # The load/RSS probes run in subprocesses of a parent that may hold a large model (the report's
    # parent builds the torch model first). Linux carries getrusage's ru_maxrss over exec() from the
    # forking process, so the probes read VmHWM instead; here the parent holds ~600 MB and the child,
    # which only imports numpy and pytransformer, must report far less.
    held = np.ones(600 << 18, dtype=np.float32)  # 600 MiB, every page touched
    code = "import common, resource; print(common.peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    # run in benchmarks/, where `python -c`'s current directory on sys.path holds no source tree
    # (from the repository root it would shadow the installed package)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BENCH, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=BENCH)
    assert out.returncode == 0, out.stderr[-3000:]
    own, inherited = (float(v) for v in out.stdout.split())
    assert held.sum() == 600 << 18
    assert 10 < own < 300, (own, inherited)
    if sys.platform.startswith("linux"):
        assert own < inherited  # the case the probes guard against, on this kernel


def test_load_probes_alternate_engines_and_report_medians(monkeypatch):
    calls = []
    loads = {"a": iter([0.8, 0.2, 0.3]), "b": iter([0.5, 0.6, 0.1])}

    def fake_probe(name, hf_dir, threads):
        calls.append(name)
        t = next(loads[name])
        return {"import_s": 0.1, "load_s": t - 0.05, "load_to_first_token_s": t,
                "peak_rss_mb_first_token": 300.0 + len(calls), "peak_rss_mb": 400.0}

    monkeypatch.setattr(compare_engines, "run_probe", fake_probe)
    out = compare_engines.probe_rounds(["a", "b"], "dir", 2, rounds=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert out["a"]["load_to_first_token_s"] == pytest.approx(0.3)
    assert out["a"]["load_to_first_token_each_s"] == [0.8, 0.2, 0.3]
    assert out["b"]["load_to_first_token_s"] == pytest.approx(0.5)
    assert out["b"]["peak_rss_mb_first_token"] == 304.0      # median of 302, 304, 306


def test_step_bound_pairs_each_greedy_sample_with_its_own_bandwidth():
    # (greedy - first token) / 63 steps, against 119 MB at the bandwidth read right before each sample
    got = compare_engines.step_bound_rounds([0.3165, 0.3165], 0.0165, [30.0, 20.0], 119e6)
    step = 0.3 / (compare_engines.NEW_TOKENS - 1)
    assert got == pytest.approx([step / (119e6 / 30e9), step / (119e6 / 20e9)])
    assert got[0] > got[1]          # the same step is nearer the bound when memory was slower
