"""test_fork_and_limits.py - forked workers (pre-forking servers) and the up-front memory limit of generate()."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pytransformer
from pytransformer import export, torch_reference
from model_configs import PARITY_CONFIGS

CHILD_SCRIPT = textwrap.dedent("""
    import os, sys, time, signal, warnings, json
    import numpy as np
    import pytransformer
    model = pytransformer.load(sys.argv[1])
    src = [[3, 4, 5, 6, 7], [9, 2]]
    if sys.argv[2] == "after_inference":
        pytransformer.set_num_threads(2)
        want = [t.tolist() for t in model.generate(src, 8)]
        # a big GEMM so the OpenMP pool surely exists in the parent
        a = np.ones((256, 256), np.float32)
        pytransformer.ops.matmul(a, a)
    else:
        want = None
    if sys.argv[2] == "after_threaded_packing":
        # what loading a large model does on 2 threads: pack weights and the screen's 8-bit copy
        from pytransformer import _kernels as K
        pytransformer.set_num_threads(2)
        loops = K.thread_pool_stats()["loops"]
        packed = K.pack(np.ones((1024, 1024), np.float32), transpose=True)
        K.pack_i8(packed)
        print(json.dumps({"pack_loops": K.thread_pool_stats()["loops"] - loops,
                          "pool": K.thread_pool_stats()["available"]}), flush=True)
    pid = os.fork()
    if pid == 0:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = [t.tolist() for t in model.generate(src, 8)]
            pytransformer.set_num_threads(2)
            got2 = [t.tolist() for t in model.generate(src, 8)]
        info = pytransformer.cpu_info()
        print(json.dumps({"got": got, "got2": got2, "safe": info["fork_safe_mode"],
                          "threads": info["num_threads"],
                          "warned": any("forked" in str(w.message) for w in caught)}), flush=True)
        os._exit(0)
    for _ in range(300):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        print("HUNG", flush=True)
        sys.exit(3)
    if want is not None:
        print(json.dumps({"want": want}), flush=True)
""")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = PARITY_CONFIGS["paper_post_relu"]
    path = tmp_path_factory.mktemp("forkmodel")
    export.from_torch(torch_reference.init_seeded(cfg, seed=5), path)
    return str(path)


@pytest.mark.parametrize("when", ["after_inference", "before_inference", "after_threaded_packing"])
def test_forked_child_works_and_does_not_hang(model_dir, when, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), model_dir, when], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    child = next(x for x in lines if "got" in x)
    assert child["got"] == child["got2"]
    if when == "after_inference":
        parent = next(x for x in lines if "want" in x)
        assert child["got"] == parent["want"]
        if pytransformer.openmp_enabled():
            # the parent's OpenMP pool does not survive fork: the child must have gone serial, and said so
            assert child["safe"] and child["threads"] == 1 and child["warned"]
    else:
        # nothing ran on OpenMP before the fork (packing runs on the fork-safe worker team, or on
        # one thread): the child keeps its threads
        assert not child["safe"] and not child["warned"]
    if when == "after_threaded_packing":
        packing = next(x for x in lines if "pack_loops" in x)
        if pytransformer.openmp_enabled():          # a serial build has one thread throughout
            if packing["pool"]:
                assert packing["pack_loops"] == 2  # both packings ran on the team
            assert child["threads"] == 2


def test_generate_over_memory_limit_fails_up_front(model_dir):
    model = pytransformer.load(model_dir)
    before = pytransformer.get_cache_limit()
    try:
        pytransformer.set_cache_limit(1 << 20)
        with pytest.raises(MemoryError, match=r"batch of 64 sources of up to 40 tokens and 60 new tokens"):
            model.generate([[1] * 40] * 64, 60)
        out = model.generate([[1, 2, 3]], 4)          # a small request still runs
        assert len(out) == 1
        with pytest.raises(ValueError, match="positive"):
            pytransformer.set_cache_limit(0)
    finally:
        pytransformer.set_cache_limit(before)


def test_openmp_wait_policy_is_set_for_the_kernels_only(tmp_path):
    """Importing pytransformer makes its OpenMP threads sleep while they wait, without leaving
    OMP_WAIT_POLICY in the environment (children and other libraries keep their defaults), and a
    policy the user chose is left alone."""
    code = "import os, pytransformer; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=str(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"),
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert out.stdout.strip() == "ACTIVE"


LOAD_PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import pytransformer
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = pytransformer.load(sys.argv[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = model.generate([[3, 4, 5, 6]], 4, min_new_tokens=4)
    print(json.dumps({"grew": (peak - base) * 1024, "tokens": tokens[0].tolist()}))
""")


def test_load_does_not_hold_the_file_pages_beside_the_packed_weights(tmp_path):
    """Packing copies every weight; the mapped file pages it read are released as it goes, so the
    peak memory of a load is about one model, not two (and the model still runs correctly)."""
    from pytransformer.config import ModelConfig, expected_tensors
    cfg = dict(PARITY_CONFIGS["paper_post_relu"], d_model=256, num_heads=4, ffn_dim=1024,
               src_vocab_size=20000, tgt_vocab_size=20000, encoder_layers=3, decoder_layers=3)
    rng = np.random.default_rng(0)
    tensors = {name: (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1]))
               for name, shape in expected_tensors(ModelConfig.from_dict(cfg)).items()}
    file_bytes = sum(t.nbytes for t in tensors.values())
    pytransformer.save(tmp_path / "m", cfg, tensors)
    want = pytransformer.load(tmp_path / "m").generate([[3, 4, 5, 6]], 4, min_new_tokens=4)[0].tolist()
    script = tmp_path / "peak.py"
    script.write_text(LOAD_PEAK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "m")], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    import json
    result = json.loads(proc.stdout)
    grew = result["grew"]
    assert result["tokens"] == want
    # one packed copy of everything (~file_bytes) plus slack; holding the file pages too would be ~2x
    assert int(grew) < 1.45 * file_bytes, f"load grew RSS by {int(grew) / 2**20:.0f} MiB for a " \
                                          f"{file_bytes / 2**20:.0f} MiB model"
