"""test_bench_engines.py - pytest-benchmark timings of one MarianMT model in pytransformer, transformers
and CTranslate2 (when installed): encoder forward and 64-token greedy decoding at batch 1 and 16.

    pytest benchmarks/test_bench_engines.py --benchmark-group-by=param:workload

Every case first checks that the engine's greedy tokens equal transformers' on the same sources.
Each engine runs in its own process (engines.RemoteEngine), so the times here include one pipe
round trip per call (well under a millisecond). The README's figures come from compare_engines.py,
which alternates the engines and has each measure its own calls.
"""
import pytest

import engines
from compare_engines import MODEL_DIR, NEW_TOKENS, sources

THREADS = 2
NAMES = ["pytransformer", "transformers"] + (["ctranslate2"] if engines.ctranslate2_available() else [])


@pytest.fixture(scope="module")
def loaded():
    hf_dir = engines.build_marian(MODEL_DIR)
    out = {}
    for n in NAMES:
        path = engines.convert_ct2(hf_dir, hf_dir + "-ct2") if n == "ctranslate2" else hf_dir
        out[n] = engines.RemoteEngine(n, path, THREADS).load()
    yield out
    for e in out.values():
        e.close()


@pytest.fixture(scope="module")
def expected(loaded):
    return {B: loaded["transformers"].generate(sources(B, 58101, seed=B), NEW_TOKENS) for B in (1, 16)}


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("workload", ["greedy", "encoder"])
@pytest.mark.parametrize("name", NAMES)
def test_engine(benchmark, loaded, expected, name, workload, batch):
    eng = loaded[name]
    eng.set_threads(THREADS)
    src = sources(batch, 58101, seed=batch)
    assert eng.generate(src, NEW_TOKENS) == expected[batch], f"{name} greedy tokens differ from transformers"
    benchmark.group = f"{workload} batch {batch}"
    if workload == "greedy":
        benchmark.pedantic(eng.generate, args=(src, NEW_TOKENS), rounds=3, iterations=1)
    else:
        benchmark(eng.encode, src)
