"""test_fuzz.py - hostile model directories: mutation fuzzing plus the targeted cases it motivated.

The fuzzer lives in fuzz_models.py (builders of valid directories, mutators, the case runner).
Here it runs in a child process, so a segfault or a hang fails this test instead of killing
pytest; the child limits its own address space (RLIMIT_AS), checks each case's traced peak memory
against the size of its files, watches every case with a faulthandler watchdog, and fails on
exec/eval/unpickling on the load path (audit hook).

CI runs FUZZ_CASES cases per builder: 1500 of our own format ("native", ~10 s of CPU) and 1000
Hugging Face directories ("hf": Marian, BART, mBART, M2M100, T5, flan-T5; one file or shards; F32,
F16, BF16; ~17 s of CPU). A longer run is one command away:

    PYTRANSFORMER_FUZZ_CASES=100000 PYTRANSFORMER_FUZZ_SEED=7 pytest tests/test_fuzz.py -k fuzz

or directly, printing every case:   python tests/fuzz_models.py --cases 100000 --seed 7 -v
A failure names the case; `python tests/fuzz_models.py --seed S --first-case N --cases 1 -v`
replays it alone.
"""
import ast
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import pytransformer
from pytransformer import WeightsError
from pytransformer import safetensors as st
from pytransformer.config import ModelConfig, expected_tensors

import fuzz_models

HERE = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_CASES = {"native": 1500, "hf": 1000}
FUZZ_CASES = {b: int(os.environ.get("PYTRANSFORMER_FUZZ_CASES", _DEFAULT_CASES.get(b, 1000)))
              for b in fuzz_models.BUILDERS}
FUZZ_SEED = int(os.environ.get("PYTRANSFORMER_FUZZ_SEED", "0"))
# Generous: a case takes ~7 ms of CPU; the machine is shared.
FUZZ_TIMEOUT_S = {b: 120 + n * 0.1 for b, n in FUZZ_CASES.items()}


def child_env():
    """Environment for a child python that imports the same pytransformer as this process."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_child(args, timeout):
    try:
        # cwd: `python -c` puts the working directory first on sys.path, and from the repository
        # root that is the source tree (no compiled kernels) instead of the installed package
        return subprocess.run([sys.executable] + args, env=child_env(), cwd=HERE, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child {args[:2]} hung (> {timeout} s); stderr tail:\n{(exc.stderr or '')[-3000:]}")


def run_isolated(code, timeout=60, address_space=1 << 30):
    """Run a python snippet in a child whose address space is capped at `address_space` bytes
    above its size after imports; return (returncode, stdout, stderr)."""
    prelude = textwrap.dedent(f"""
        import resource
        import numpy, pytransformer, pytransformer.decoding
        def _vm():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        if "asan" not in __import__("os").environ.get("LD_PRELOAD", ""):
            resource.setrlimit(resource.RLIMIT_AS, (_vm() + {address_space}, resource.RLIM_INFINITY))
    """)
    result = run_child(["-c", prelude + textwrap.dedent(code)], timeout)
    return result.returncode, result.stdout, result.stderr


# ---------------------------------------------------------------------------------------------
# The fuzz run

@pytest.mark.parametrize("builder", sorted(fuzz_models.BUILDERS))
def test_fuzz_model_directories(builder, tmp_path):
    state = tmp_path / "case"
    result = run_child([os.path.join(HERE, "fuzz_models.py"), "--builder", builder,
                        "--cases", str(FUZZ_CASES[builder]), "--seed", str(FUZZ_SEED),
                        "--state-file", str(state)], FUZZ_TIMEOUT_S[builder])
    if result.returncode != 0:
        case = state.read_text() if state.exists() else "?"
        how = (f"killed by signal {-result.returncode}" if result.returncode < 0
               else f"exit status {result.returncode}")
        pytest.fail(f"fuzz child {how} at case {case} (replay: python tests/fuzz_models.py "
                    f"--builder {builder} --seed {FUZZ_SEED} --first-case {case} --cases 1 -v)\n"
                    f"stderr tail:\n{result.stderr[-4000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    cases = FUZZ_CASES[builder]
    assert summary["cases"] == cases
    # Both outcomes must be well represented, or the mutators have gone blind.
    assert summary["loaded"] >= cases // 50, summary
    assert summary["rejected"] >= cases // 2, summary


# ---------------------------------------------------------------------------------------------
# The fuzzer catches what it should (a fuzzer that cannot fail proves nothing)

def _tiny_builder(load):
    native = fuzz_models.BUILDERS["native"]
    return fuzz_models.Builder("test", native.build, load, native.check)


@pytest.mark.parametrize("error, reported", [(TypeError("boom"), "TypeError: boom"),
                                             (WeightsError("something is wrong"), "does not name a file")])
def test_fuzzer_reports_wrong_exception_or_vague_message(tmp_path, error, reported):
    def load(path):
        raise error
    builder = _tiny_builder(load)
    pristine = fuzz_models.make_pristine(builder, str(tmp_path), 1, 0)
    tracemalloc.start()
    try:
        with pytest.raises(fuzz_models.CaseFailure, match=reported):
            fuzz_models.run_case(builder, pristine, 0, 0, str(tmp_path))
    finally:
        tracemalloc.stop()


def test_fuzzer_reports_wrong_values(tmp_path):
    """A loader that returns different weights than the file holds is caught by builder.check."""
    native = fuzz_models.BUILDERS["native"]
    path = str(tmp_path / "m")
    native.build(path, fuzz_models.random.Random(3))
    model = pytransformer.load(path)
    native.check(path, model)  # the honest loader passes
    weights = os.path.join(path, "model.safetensors")
    header = st.read_safetensors_header(weights)
    info = header.tensors["encoder.layers.0.ffn.fc1.weight"]
    with open(weights, "r+b") as f:
        f.seek(header.data_start + info.begin)
        f.write(b"\x00\x00\x80\x3e" * ((info.end - info.begin) // 4))  # every value 0.25 (F32)
    # `model` still holds the old values: the file now says otherwise
    with pytest.raises(AssertionError, match="values differ|logits differ"):
        native.check(path, model)


def test_audit_hook_sees_unpickling_and_eval():
    code = """
        import pickle, fractions, fuzz_models, sys
        sys.addaudithook(fuzz_models._audit_hook)
        fuzz_models._AUDIT["armed"] = True
        pickle.loads(pickle.dumps(fractions.Fraction(1, 3)))
        eval("1 + 1")
        fuzz_models._AUDIT["armed"] = False
        print(sorted(set(fuzz_models._AUDIT["events"])))
    """
    result = run_child(["-c", textwrap.dedent(code)], 60)
    assert result.returncode == 0, result.stderr
    events = result.stdout.strip()
    assert "pickle.find_class" in events and "exec" in events, events


# ---------------------------------------------------------------------------------------------
# Targeted cases

TINY = dict(format="pytransformer", format_version=1, d_model=8, num_heads=2, encoder_layers=1,
            decoder_layers=1, ffn_dim=16, src_vocab_size=11, tgt_vocab_size=11,
            shared_embeddings=True, eos_id=1, decoder_start_id=0, max_positions=16)


def save_tiny(path, **overrides):
    config = dict(TINY, **overrides)
    rng = np.random.default_rng(0)
    cfg = ModelConfig.from_dict(config)
    tensors = {n: (0.5 * rng.standard_normal(s)).astype(np.float32)
               for n, s in expected_tensors(cfg).items()}
    pytransformer.save(path, config, tensors)
    return str(path)


# Imports and calls that deserialise or run code; none may appear in a module a load goes through.
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve",
                  "torch", "yaml"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_METHODS = {("np", "load"), ("numpy", "load"), ("torch", "load"), ("pickle", "load"),
                  ("pickle", "loads"), ("marshal", "loads"), ("yaml", "load")}


def unsafe_uses(source):
    """(line, what) for every unsafe import, call or keyword in a module's source (code only:
    comments and docstrings that mention pickle are fine)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_CALLS:
                found.append((node.lineno, f"{func.id}()"))
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and (func.value.id, func.attr) in UNSAFE_METHODS):
                found.append((node.lineno, f"{func.value.id}.{func.attr}()"))
            found += [(node.lineno, "allow_pickle=") for k in node.keywords if k.arg == "allow_pickle"]
    return found


def test_unsafe_use_detector_works():
    assert unsafe_uses("import pickle\nx = torch.load(f)\neval('1')\nnp.load(p, allow_pickle=True)")
    assert not unsafe_uses('"""no pickle, no torch.load, no eval"""\n# pickle\nx = json.loads(s)')


def test_no_pickle_torch_load_or_eval_in_the_load_path():
    """The modules a load goes through never deserialise or run code (the fuzz child also checks
    this at run time with an audit hook)."""
    package = os.path.dirname(pytransformer.__file__)
    load_path = ["__init__.py", "weights.py", "safetensors.py", "config.py", "model.py",
                 "decoding.py", "errors.py", "hf.py", "text.py"]
    checked = 0
    for name in load_path:
        path = os.path.join(package, name)
        if not os.path.exists(path):
            continue  # e.g. hf.py before it exists
        checked += 1
        with open(path) as f:
            assert unsafe_uses(f.read()) == [], name
    assert checked >= 6


def test_header_above_limit_is_rejected_before_it_is_read(tmp_path, monkeypatch):
    """A header length above MAX_HEADER_BYTES is refused from the 8-byte prefix alone: the JSON
    is never parsed and never even read (the file here is sparse: 100 MB of holes)."""
    path = save_tiny(tmp_path / "m")
    weights = os.path.join(path, "model.safetensors")
    n = st.MAX_HEADER_BYTES + 1
    with open(weights, "wb") as f:
        f.write(n.to_bytes(8, "little"))
        f.truncate(8 + n + 64)

    def parse_json_object(raw, where):
        raise AssertionError("header was parsed")
    monkeypatch.setattr(st, "parse_json_object", parse_json_object)
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match="exceeds the limit") as info:
            pytransformer.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "model.safetensors" in str(info.value)
    assert peak < 4 << 20, f"{peak} bytes traced while refusing a {n}-byte header"
    for reader in (st.read_safetensors, st.read_safetensors_header):
        with pytest.raises(WeightsError, match="exceeds the limit"):
            reader(weights)


def test_header_json_cannot_expand_far_beyond_the_file(tmp_path):
    """A header below MAX_HEADER_BYTES but full of tiny JSON values ('[[],[],...]') costs ~25x its
    size in Python objects when parsed. The loader knows from config.json how many tensors to
    expect, so a header far larger than they need must be refused before parsing.

    Here an 8 MB header for a 37-tensor model: parsing it would take ~200 MB."""
    path = save_tiny(tmp_path / "m")
    weights = os.path.join(path, "model.safetensors")
    junk = b'{"__junk__":[' + b"[]," * ((8 << 20) // 3) + b"[]]}"
    junk += b" " * (-len(junk) % 8)
    with open(weights, "wb") as f:
        f.write(len(junk).to_bytes(8, "little") + junk)
    size = os.path.getsize(weights)
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError) as info:
            pytransformer.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "model.safetensors" in str(info.value)
    assert peak <= 2 * size, (f"refusing an {size}-byte header of a 37-tensor model traced "
                              f"{peak} bytes ({peak / size:.1f}x the file): {info.value}")


@pytest.mark.parametrize("max_positions", [2**31 - 1, 10**7])
def test_sinusoidal_max_positions_does_not_allocate_the_whole_table(tmp_path, max_positions):
    """max_positions is a limit, not a size on disk: with sinusoidal positions nothing in the
    ~10 KB file grows with it, so loading must not allocate max_positions * d_model floats
    (2**31 - 1 rows is 64 GB here). Either the loader refuses the value with a WeightsError
    naming max_positions, or it loads with bounded memory and generates."""
    path = save_tiny(tmp_path / "m", max_positions=max_positions)
    rc, out, err = run_isolated(f"""
        import pytransformer, tracemalloc
        tracemalloc.start()
        try:
            model = pytransformer.load({path!r})
            tokens = model.generate([[3, 4, 5]], 4)
            print("loaded", tracemalloc.get_traced_memory()[1])
        except pytransformer.WeightsError as exc:
            assert "max_positions" in str(exc), exc
            print("rejected", exc)
    """, address_space=256 << 20)
    assert rc == 0, f"load with max_positions={max_positions} failed:\n{err[-2000:]}"
    outcome, detail = out.split(None, 1)
    if outcome == "loaded":
        assert int(detail) < 16 << 20, f"traced {int(detail)} bytes for a tiny model"


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_fifo_in_a_model_directory_does_not_hang(tmp_path, name):
    """A model directory from an untrusted archive can hold a FIFO: opening it for reading blocks
    until a writer appears, forever. The loader must refuse non-regular files without opening
    them blockingly."""
    path = save_tiny(tmp_path / "m")
    target = os.path.join(path, name)
    os.unlink(target)
    os.mkfifo(target)
    rc, out, err = run_isolated(f"""
        import pytransformer, pytransformer.safetensors as st
        for fn in (pytransformer.load, lambda p: st.read_safetensors(p + "/{name}")):
            try:
                fn({path!r})
                print("loaded")
            except pytransformer.WeightsError as exc:
                assert "{name}" in str(exc), exc
                print("rejected", exc)
    """, timeout=10)
    assert rc == 0, err[-2000:]
    assert out.count("rejected") == 2, out


@pytest.mark.parametrize("heads", [3, 5, 7, 9, 16])
def test_head_count_not_dividing_d_model(tmp_path, heads):
    path = save_tiny(tmp_path / "m")
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["num_heads"] = heads
    with open(config_path, "w") as f:
        json.dump(config, f)
    with pytest.raises(WeightsError, match="num_heads") as info:
        pytransformer.load(path)
    assert "config.json" in str(info.value) and "d_model" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 3e38, 1e-45])
def test_extreme_weight_values_load_and_generate(tmp_path, value):
    """Non-finite or extreme weights are well-formed data: loading works and generate returns
    in-range tokens (garbage in, garbage out, but no crash or out-of-range index)."""
    path = save_tiny(tmp_path / "m")
    weights = os.path.join(path, "model.safetensors")
    header = st.read_safetensors_header(weights)
    with open(weights, "r+b") as f:
        for name in ("src_embedding.weight", "encoder.layers.0.ffn.fc1.weight",
                     "decoder.layers.0.self_attn.q_proj.weight"):
            info = header.tensors[name]
            f.seek(header.data_start + info.begin)
            f.write(np.full((info.end - info.begin) // 4, value, dtype="<f4").tobytes())
    model = pytransformer.load(path)
    tokens, scores = model.generate([[3, 4, 5], [2]], 6, return_scores=True)
    for t in tokens:
        assert t.dtype == np.int64 and 1 <= len(t) <= 6
        assert ((t >= 0) & (t < TINY["tgt_vocab_size"])).all()


# ---------------------------------------------------------------------------------------------
# Hugging Face directories: the fuzzer's builder writes what transformers writes, and the
# targeted cases the "hf" builder found in hf.py

def test_hf_builder_writes_directories_transformers_loads(tmp_path):
    """Every HF_CONFIGS variant, as build_hf writes it (mixed F32/F16/BF16), loads in transformers
    (one file or shards) with no missing or unexpected tensor, and pytransformer's logits match transformers' on it:
    the fuzzer mutates real Hugging Face directories, not an imitation only hf.py understands."""
    import torch
    import transformers
    from conftest import LOGITS_ATOL
    transformers.logging.set_verbosity_error()
    for i, variant in enumerate(sorted(fuzz_models.HF_CONFIGS)):
        sharded = i % 2 == 1
        path = str(tmp_path / variant)
        files = fuzz_models.build_hf(path, fuzz_models.random.Random(variant), variant=variant,
                                     sharded=sharded, mixed=True)
        assert ("model.safetensors.index.json" in files) == sharded
        ref, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
            path, output_loading_info=True, dtype=torch.float32)
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                          "mismatched_keys")}
        assert not bad, f"{variant}: {bad}"
        model = pytransformer.load(path)
        fuzz_models.check_hf(path, model)   # and the fuzzer's independent reading agrees
        src = np.array([[3, 4, 5, 6], [7, 5, 3, 2]])
        tgt = np.array([[model.config.decoder_start_id, 4, 2, 5]] * 2)
        with torch.no_grad():
            want = ref(input_ids=torch.from_numpy(src), decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
        got = model.forward(list(src), tgt)
        np.testing.assert_allclose(got, want, atol=LOGITS_ATOL, rtol=0, err_msg=variant)


def hf_dir(tmp_path, variant, sharded=False, config=None, generation=None):
    """A valid Hugging Face directory of one HF_CONFIGS variant with config.json /
    generation_config.json keys overridden (None as a value deletes the key)."""
    path = str(tmp_path / variant)
    fuzz_models.build_hf(path, fuzz_models.random.Random(0), variant=variant, sharded=sharded,
                         mixed=False)
    for name, overrides in (("config.json", config), ("generation_config.json", generation)):
        file = os.path.join(path, name)
        if overrides and os.path.exists(file):
            with open(file) as f:
                obj = json.load(f)
            obj.update(overrides)
            with open(file, "w") as f:
                json.dump(obj, f)
    return path


@pytest.mark.parametrize("variant, file, key, value", [
    ("t5", "config.json", "architectures", [5]),               # was AttributeError
    ("t5", "config.json", "architectures", 2**31),             # was TypeError
    ("bart", "config.json", "architectures", ["X", "Y"]),      # message said 'architecture'
    ("bart", "config.json", "model_type", "t5"),               # said only "missing 'num_layers'"
    ("t5", "config.json", "num_layers", "1"),                  # was TypeError
    ("bart", "config.json", "decoder_layers", -0.0),           # was TypeError
    ("bart", "config.json", "encoder_layers", True),           # bool is not a count
    ("t5", "config.json", "d_model", -0.0),                    # was ZeroDivisionError
    ("t5", "config.json", "layer_norm_epsilon", {"a": 1}),     # was TypeError
    ("t5", "config.json", "feed_forward_proj", 5),             # was AttributeError
    ("bart", "config.json", "activation_function", True),      # message said 'activation'
    ("bart", "config.json", "encoder_attention_heads", 3),     # message said 'num_heads'
    ("t5", "config.json", "d_ff", 1e-320),                     # message said 'ffn_dim'
    ("bart", "config.json", "pad_token_id", 2**63),            # message said 'pad_id'
    ("m2m_100", "config.json", "pad_token_id", 2**31 - 2),     # position offset; said 'position_offset'
    ("bart", "generation_config.json", "bos_token_id", [[]]),  # was TypeError (unhashable)
    ("bart", "generation_config.json", "eos_token_id", 11),    # message said config.json 'eos_id'
    ("marian_separate", "generation_config.json", "decoder_start_token_id", 255),
    ("bart", "generation_config.json", "forced_eos_token_id", 2**64),  # was IndexError in generate
    ("bart", "generation_config.json", "forced_bos_token_id", -1),     # was silently wrapped
    ("m2m_100", "generation_config.json", "suppress_tokens", [3, 11]), # was IndexError in generate
    ("m2m_100", "generation_config.json", "suppress_tokens", 5),       # was TypeError
])
def test_hf_config_values_found_by_the_fuzzer(tmp_path, variant, file, key, value):
    """Each value made hf.py raise something other than WeightsError, hang, accept an id that
    later broke generate(), or word its message in pytransformer's field names: the message must
    now name the file and the Hugging Face key."""
    where = {"config.json": "config", "generation_config.json": "generation"}[file]
    path = hf_dir(tmp_path, variant, **{where: {key: value}})
    assert os.path.exists(os.path.join(path, file))
    with pytest.raises(WeightsError) as info:
        model = pytransformer.load(path)
        model.generate([[3, 4]], 3)   # (only reached if the load wrongly succeeds)
    message = str(info.value)
    assert file in message and key in message, message


@pytest.mark.parametrize("key", ["num_layers", "num_decoder_layers"])
def test_hf_huge_layer_count_is_refused_before_names_are_built(tmp_path, key):
    """num_layers = 2**53 + 1 made hf.py build a tensor-name table of 2**53 layers (memory until
    the OOM killer came). Run capped, in a child, so a regression fails instead of swapping."""
    path = hf_dir(tmp_path, "t5", config={key: 2**53 + 1})
    rc, out, err = run_isolated(f"""
        import pytransformer
        try:
            pytransformer.load({path!r})
            print("loaded")
        except pytransformer.WeightsError as exc:
            assert "config.json" in str(exc) and {key!r} in str(exc), exc
            print("rejected")
    """, timeout=30, address_space=256 << 20)
    assert rc == 0 and out.strip() == "rejected", err[-2000:]


def test_hf_head_count_not_dividing_d_model_names_both(tmp_path):
    path = hf_dir(tmp_path, "bart", config={"encoder_attention_heads": 3, "decoder_attention_heads": 3})
    with pytest.raises(WeightsError, match="encoder_attention_heads.*does not divide d_model 8"):
        pytransformer.load(path)


def test_hf_missing_tensor_in_a_shard_names_the_shard(tmp_path):
    """A tensor the index lists in a shard that does not hold it: the message names the index and
    the shard (it used to name only the directory)."""
    path = hf_dir(tmp_path, "t5", sharded=True)
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    name = "encoder.final_layer_norm.weight"
    shard = os.path.join(path, weight_map[name])
    tensors = st.read_safetensors(shard)
    del tensors[name]
    st.write_safetensors(shard, {k: np.array(v) for k, v in tensors.items()})
    with pytest.raises(WeightsError) as info:
        pytransformer.load(path)
    message = str(info.value)
    assert "model.safetensors.index.json" in message and weight_map[name] in message and name in message


def test_hf_unused_tensor_with_integer_dtype_is_refused(tmp_path):
    """A tensor the mapping never reads (here old Marian files' ignored position table) with an
    integer dtype used to load silently; the fuzzer's independent reading choked on it."""
    path = hf_dir(tmp_path, "marian")
    weights = os.path.join(path, "model.safetensors")
    tensors = {k: np.array(v) for k, v in st.read_safetensors(weights).items()}
    tensors["model.encoder.embed_positions.weight"] = np.zeros((12, 8), np.int32)  # ignorable
    st.write_safetensors(weights, tensors)
    with pytest.raises(WeightsError, match="embed_positions.*I32") as info:
        pytransformer.load(path)
    assert "model.safetensors" in str(info.value)


@pytest.mark.parametrize("name, shape", [("model.encoder.layers.0.fc1.weight", [16, 9]),
                                         ("final_logits_bias", [1, 12]),
                                         ("model.shared.weight", [11]),
                                         ("model.shared.weight", [12, 8])])
def test_hf_wrong_shape_names_file_and_tensor(tmp_path, name, shape):
    """A stored shape that does not fit config.json is reported with the Hugging Face tensor name
    and the file holding it (it used to name pytransformer's tensor and the directory; a 1-D
    embedding table raised IndexError)."""
    path = hf_dir(tmp_path, "bart")
    weights = os.path.join(path, "model.safetensors")
    tensors = {k: np.array(v) for k, v in st.read_safetensors(weights).items()}
    tensors[name] = np.zeros(shape, np.float32)
    st.write_safetensors(weights, tensors)
    with pytest.raises(WeightsError) as info:
        pytransformer.load(path)
    message = str(info.value)
    assert "model.safetensors" in message and name in message, message
