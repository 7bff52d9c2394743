"""fuzz_models.py - mutation fuzzer for model directories: valid models in, hostile variants out.

A fuzz run builds a few small valid model directories (a *builder*), then for each case takes one,
applies 1-3 random *mutations* to its files in memory, writes the result to a scratch directory and
loads it. Every case must end in exactly one of two ways:

  * the directory loads, its tensors are exactly what an independent reading of the files says
    (builder.check), and generate() on a short input returns well-formed tokens and scores; or
  * loading raises pytransformer.WeightsError whose message names the file at fault (and, for a
    single targeted mutation, the tensor or config key that was changed).

Anything else -- another exception type, a crash (the run happens in a child process, so a
segfault is reported, not suffered), a hang (faulthandler watchdog per case plus the parent's
timeout), a Python-level allocation far beyond the size of the files (tracemalloc peak per case),
any allocation beyond a fixed address-space budget (RLIMIT_AS), or code execution / unpickling on
the load path (audit hook) -- is a failure, reported with the case number that reproduces it.

Builders and mutators are separate: a builder writes valid directories and says what kind each
file is ("json", "safetensors", "index" or "bytes"); mutators are chosen by file kind. Two builders
are registered in BUILDERS: "native" (pytransformer's own format) and "hf" (Hugging Face
directories of Marian, BART, mBART, M2M100, T5 and flan-T5, written without torch: config.json,
generation_config.json or not, model.safetensors or shards with model.safetensors.index.json,
F32/F16/BF16; test_fuzz.py checks that transformers loads them). To fuzz another layout, write a
builder and register it; the mutators carry over.

Run (also what tests/test_fuzz.py does, in a subprocess):
    python tests/fuzz_models.py --cases 3000 --seed 0 [--builder native|hf] [--first-case N] [-v]
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
import tracemalloc
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

import pytransformer
import pytransformer.hf
from pytransformer import WeightsError
from pytransformer.config import ModelConfig, expected_tensors
from pytransformer.safetensors import MAX_HEADER_BYTES, float32_to_bf16, write_safetensors

# A case may use at most this much traced (Python + NumPy) memory beyond what it started with:
# a fixed allowance for the interpreter's own work plus a multiple of the bytes on disk.
PEAK_FIXED_BYTES = 16 << 20  # the tensor list of a 1024-layer config alone is ~6 MB
PEAK_PER_FILE_BYTE = 32
# Hard backstop on the child's address space above its size after warm-up: anything asking the
# OS for more fails (MemoryError) instead of swapping the machine to death.
ADDRESS_SPACE_BUDGET = 512 << 20
CASE_TIMEOUT_S = 20.0


# =============================================================================================
# Builders: write valid model directories

@dataclass
class Builder:
    """How to make and use valid model directories of one layout.

    build(path, rng) writes a valid directory and returns {file name: kind}; load(path) is the
    public loader under test; check(path, model) raises AssertionError unless the loaded model
    holds exactly what the files say (called only when load succeeded)."""
    name: str
    build: Callable[[str, random.Random], Dict[str, str]]
    load: Callable[[str], object]
    check: Callable[[str, object], None]
    pristine_count: int = 6   # valid directories each run mutates (rng.pristine_index: 0, 1, ...)


# Tiny configs that between them need every kind of tensor: layer and RMS norms, learned positions
# with an offset, embedding and final norms, biases or none, tied/untied outputs, separate vocabularies.
NATIVE_CONFIGS = [
    dict(d_model=8, num_heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=16,
         src_vocab_size=11, tgt_vocab_size=11, shared_embeddings=True, eos_id=1,
         decoder_start_id=0, max_positions=16),
    dict(d_model=12, num_heads=3, encoder_layers=1, decoder_layers=2, ffn_dim=20,
         src_vocab_size=13, tgt_vocab_size=9, activation="gelu", norm_placement="pre",
         encoder_final_norm=True, decoder_final_norm=True, positional_encoding="learned",
         position_offset=2, max_positions=12, tie_output=False, output_bias=True,
         pad_id=0, eos_id=2, decoder_start_id=1),
    dict(d_model=8, num_heads=4, encoder_layers=2, decoder_layers=1, ffn_dim=8,
         src_vocab_size=10, tgt_vocab_size=10, shared_embeddings=True, activation="silu",
         norm_type="rms_norm", embedding_norm=True, sinusoidal_layout="halves",
         attention_bias=False, ffn_bias=False, layer_norm_eps=1e-6, pad_id=9, bos_id=0,
         eos_id=3, decoder_start_id=9, max_positions=10),
    dict(d_model=6, num_heads=1, encoder_layers=1, decoder_layers=1, ffn_dim=5,
         src_vocab_size=7, tgt_vocab_size=8, positional_encoding="none", scale_embeddings=False,
         activation="gelu_tanh", eos_id=0, decoder_start_id=7, max_positions=8),
]


def native_tensors(config: dict, rng: random.Random) -> Dict[str, np.ndarray]:
    cfg = ModelConfig.from_dict({"format": "pytransformer", "format_version": 1, **config})
    nrng = np.random.default_rng(rng.randrange(2**32))
    return {name: (0.5 * nrng.standard_normal(shape)).astype(np.float32)
            for name, shape in expected_tensors(cfg).items()}


def build_native(path: str, rng: random.Random) -> Dict[str, str]:
    """One of NATIVE_CONFIGS with seeded weights; some variants store F16/BF16 tensors."""
    config = dict(rng.choice(NATIVE_CONFIGS))
    tensors = native_tensors(config, rng)
    pytransformer.save(path, config, tensors)
    if rng.random() < 0.4:
        # Rewrite the weights with a mix of stored dtypes (the loader widens F16/BF16).
        stored, dtypes = {}, {}
        for name, array in tensors.items():
            kind = rng.choice(("F32", "F32", "F16", "BF16"))
            if kind == "F16":
                stored[name] = array.astype(np.float16)
            elif kind == "BF16":
                stored[name] = float32_to_bf16(array)
                dtypes[name] = "BF16"
            else:
                stored[name] = array
        write_safetensors(os.path.join(path, "model.safetensors"), stored,
                          metadata={"format": "pytransformer"}, dtypes=dtypes)
    return {"config.json": "json", "model.safetensors": "safetensors"}


# An independent reading of a safetensors file, written without pytransformer's reader, used to
# check what the loader returns for files it accepted.
_NP_DTYPE = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}


def independent_tensors(st_path: str) -> Dict[str, np.ndarray]:
    with open(st_path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=_NP_DTYPE[entry["dtype"]])
        if entry["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = array.astype(np.float32).reshape(entry["shape"])
    return out


def check_native(path: str, model) -> None:
    """The loaded model computes exactly what a model built from an independent reading of the
    files computes, and load_weights returns exactly those tensors."""
    with open(os.path.join(path, "config.json"), "rb") as f:
        config = json.loads(f.read())
    want_config = ModelConfig.from_dict(config)
    assert model.config == want_config, "loaded config differs from config.json"
    want = independent_tensors(os.path.join(path, "model.safetensors"))
    _, got = pytransformer.load_weights(path)
    assert set(got) == set(want) == set(expected_tensors(want_config)), "tensor names differ"
    for name, array in want.items():
        g = got[name]
        assert g.dtype == np.float32 and g.shape == array.shape, f"{name}: {g.dtype} {g.shape}"
        # bitwise, so NaN payloads and signed zeros count too
        assert np.array_equal(g.view(np.uint32), array.view(np.uint32)), f"{name}: values differ"
    reference = pytransformer.Model(want_config, want)
    check_same_outputs(model, reference)


def check_same_outputs(model, reference) -> None:
    """Teacher-forced logits of two models agree bitwise (NaN == NaN) on a short input."""
    cfg = model.config
    rng = np.random.default_rng(1)
    length = min(4, cfg.max_positions)
    src = [rng.integers(0, cfg.src_vocab_size, size=length), np.arange(min(cfg.src_vocab_size, length))]
    tgt = rng.integers(0, cfg.tgt_vocab_size, size=(2, length))
    tgt[:, 0] = cfg.decoder_start_id
    got, want = model.forward(src, tgt), reference.forward(src, tgt)
    assert np.array_equal(got, want, equal_nan=True), "logits differ from the independent reading"


# =============================================================================================
# Hugging Face directories: config.json (+ generation_config.json) and model.safetensors, or
# shards listed by model.safetensors.index.json, as transformers' save_pretrained writes them.
# Written here without torch; test_fuzz.py checks the names and shapes against transformers.

_BART_LIKE = dict(d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                  max_position_embeddings=12, vocab_size=11, is_encoder_decoder=True,
                  dropout=0.1, attention_dropout=0.0, init_std=0.02, use_cache=True,
                  tie_word_embeddings=True)
_T5_LIKE = dict(model_type="t5", architectures=["T5ForConditionalGeneration"], vocab_size=11,
                d_model=8, d_kv=4, num_heads=2, d_ff=16, num_layers=1, num_decoder_layers=2,
                relative_attention_num_buckets=8, relative_attention_max_distance=20,
                layer_norm_epsilon=1e-6, feed_forward_proj="relu", dense_act_fn="relu",
                is_gated_act=False, is_encoder_decoder=True, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0, scale_decoder_outputs=True, tie_word_embeddings=True,
                dropout_rate=0.1, use_cache=True)
# Generation keys live in generation_config.json (or, in old directories, in config.json only).
_GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                    "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "suppress_tokens",
                    "num_beams", "max_length")
HF_CONFIGS = {
    "marian": dict(_BART_LIKE, model_type="marian", architectures=["MarianMTModel"],
                   activation_function="swish", scale_embedding=True, pad_token_id=10,
                   eos_token_id=0, decoder_start_token_id=10, forced_eos_token_id=0,
                   bos_token_id=None, decoder_vocab_size=11, share_encoder_decoder_embeddings=True,
                   bad_words_ids=[[10]], num_beams=4, max_length=12),
    "marian_separate": dict(_BART_LIKE, model_type="marian", architectures=["MarianMTModel"],
                            activation_function="gelu", scale_embedding=False, pad_token_id=8,
                            eos_token_id=0, decoder_start_token_id=8, bos_token_id=None,
                            decoder_vocab_size=9, share_encoder_decoder_embeddings=False),
    "bart": dict(_BART_LIKE, model_type="bart", architectures=["BartForConditionalGeneration"],
                 decoder_layers=2, activation_function="gelu", scale_embedding=False,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                 forced_bos_token_id=0, forced_eos_token_id=2),
    "mbart": dict(_BART_LIKE, model_type="mbart", architectures=["MBartForConditionalGeneration"],
                  activation_function="relu", scale_embedding=True, pad_token_id=1,
                  bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2),
    "m2m_100": dict(_BART_LIKE, model_type="m2m_100", d_model=12, encoder_attention_heads=3,
                    decoder_attention_heads=3, encoder_layers=2,
                    architectures=["M2M100ForConditionalGeneration"], activation_function="relu",
                    scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                    decoder_start_token_id=2, forced_bos_token_id=5, suppress_tokens=[3, 4]),
    "t5": dict(_T5_LIKE),
    "flan_t5": dict(_T5_LIKE, num_heads=3, num_layers=2, num_decoder_layers=1, d_ff=12,
                    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                    scale_decoder_outputs=False, tie_word_embeddings=False),
}


def hf_tensor_shapes(hf: dict) -> Dict[str, tuple]:
    """The tensors save_pretrained writes for a config of HF_CONFIGS, by Hugging Face name, with
    the output head and embedding copies left out (the builder decides about those)."""
    out = {}
    if hf["model_type"] == "t5":
        d, a, f = hf["d_model"], hf["num_heads"] * hf["d_kv"], hf["d_ff"]
        gated = hf["feed_forward_proj"].startswith("gated-")
        out["shared.weight"] = (hf["vocab_size"], d)
        for side, n in (("encoder", hf["num_layers"]), ("decoder", hf["num_decoder_layers"])):
            for i in range(n):
                blocks = ["SelfAttention"] + (["EncDecAttention"] if side == "decoder" else [])
                for k, block in enumerate(blocks):
                    p = f"{side}.block.{i}.layer.{k}"
                    for proj in "qkv":
                        out[f"{p}.{block}.{proj}.weight"] = (a, d)
                    out[f"{p}.{block}.o.weight"] = (d, a)
                    if i == 0 and k == 0:
                        out[f"{p}.{block}.relative_attention_bias.weight"] = (
                            hf["relative_attention_num_buckets"], hf["num_heads"])
                    out[f"{p}.layer_norm.weight"] = (d,)
                p = f"{side}.block.{i}.layer.{len(blocks)}"
                for w in (("wi_0", "wi_1") if gated else ("wi",)):
                    out[f"{p}.DenseReluDense.{w}.weight"] = (f, d)
                out[f"{p}.DenseReluDense.wo.weight"] = (d, f)
                out[f"{p}.layer_norm.weight"] = (d,)
            out[f"{side}.final_layer_norm.weight"] = (d,)
        return out
    family, d, f = hf["model_type"], hf["d_model"], hf["encoder_ffn_dim"]
    vocab = hf["vocab_size"]
    tgt_vocab = hf["decoder_vocab_size"] if family == "marian" else vocab
    if family != "m2m_100":
        out["final_logits_bias"] = (1, tgt_vocab)
    if family == "marian" and not hf["share_encoder_decoder_embeddings"]:
        out["model.encoder.embed_tokens.weight"] = (vocab, d)
        out["model.decoder.embed_tokens.weight"] = (tgt_vocab, d)
    else:
        out["model.shared.weight"] = (vocab, d)
    for side in ("encoder", "decoder"):
        m = f"model.{side}"
        if family in ("bart", "mbart"):
            out[f"{m}.embed_positions.weight"] = (hf["max_position_embeddings"] + 2, d)
            out[f"{m}.layernorm_embedding.weight"] = out[f"{m}.layernorm_embedding.bias"] = (d,)
        if family in ("mbart", "m2m_100"):
            out[f"{m}.layer_norm.weight"] = out[f"{m}.layer_norm.bias"] = (d,)
        for i in range(hf[f"{side}_layers"]):
            p = f"{m}.layers.{i}"
            for block in ["self_attn"] + (["encoder_attn"] if side == "decoder" else []):
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    out[f"{p}.{block}.{proj}.weight"], out[f"{p}.{block}.{proj}.bias"] = (d, d), (d,)
                out[f"{p}.{block}_layer_norm.weight"] = out[f"{p}.{block}_layer_norm.bias"] = (d,)
            out[f"{p}.fc1.weight"], out[f"{p}.fc1.bias"] = (f, d), (f,)
            out[f"{p}.fc2.weight"], out[f"{p}.fc2.bias"] = (d, f), (d,)
            out[f"{p}.final_layer_norm.weight"] = out[f"{p}.final_layer_norm.bias"] = (d,)
    return out


def build_hf(path: str, rng: random.Random, variant: Optional[str] = None,
             sharded: Optional[bool] = None, mixed: Optional[bool] = None) -> Dict[str, str]:
    """One of HF_CONFIGS with seeded weights, stored in the ways real directories are: F32 or a
    mix with F16/BF16, one file or two shards and an index, generation settings in
    generation_config.json or only in config.json, old files' extra embedding copies. `variant`,
    `sharded` and `mixed` (dtypes) fix what is otherwise drawn from rng."""
    if variant is None and hasattr(rng, "pristine_index"):   # make_pristine: every variant in turn
        variant = sorted(HF_CONFIGS)[rng.pristine_index % len(HF_CONFIGS)]
    variant = variant or rng.choice(sorted(HF_CONFIGS))
    hf = dict(HF_CONFIGS[variant])
    nrng = np.random.default_rng(rng.randrange(2**32))
    tensors = {name: (0.5 * nrng.standard_normal(shape)).astype(np.float32)
               for name, shape in hf_tensor_shapes(hf).items()}
    if "final_logits_bias" in tensors and rng.random() < 0.5:
        tensors["final_logits_bias"][:] = 0.0   # what trained BART/Marian files mostly hold
    if variant == "flan_t5":
        tensors["lm_head.weight"] = (0.5 * nrng.standard_normal((hf["vocab_size"], hf["d_model"]))).astype(np.float32)
    if "model.shared.weight" in tensors and rng.random() < 0.25:
        # older save_pretrained wrote every tied copy
        for side in ("encoder", "decoder"):
            tensors[f"model.{side}.embed_tokens.weight"] = tensors["model.shared.weight"].copy()
        tensors["lm_head.weight"] = tensors["model.shared.weight"].copy()
    if hf["model_type"] == "marian" and rng.random() < 0.3:
        for side in ("encoder", "decoder"):   # old Marian files store the (ignored) sinusoid table
            tensors[f"model.{side}.embed_positions.weight"] = np.zeros(
                (hf["max_position_embeddings"], hf["d_model"]), np.float32)
    stored, dtypes = {}, {}
    mixed = rng.random() < 0.4 if mixed is None else mixed
    for name, array in tensors.items():
        kind = rng.choice(("F32", "F16", "BF16")) if mixed else "F32"
        if kind == "F16":
            stored[name] = array.astype(np.float16)
        elif kind == "BF16":
            stored[name], dtypes[name] = float32_to_bf16(array), "BF16"
        else:
            stored[name] = array
    if rng.random() < 0.8:
        generation = {k: hf[k] for k in _GENERATION_KEYS if k in hf}
        generation.update(_from_model_config=True, transformers_version="5.23.0")
        files = {"config.json": "json", "generation_config.json": "json"}
    else:
        generation, files = None, {"config.json": "json"}
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(hf, transformers_version="5.23.0", dtype="float32"), f, indent=2)
    if generation is not None:
        with open(os.path.join(path, "generation_config.json"), "w") as f:
            json.dump(generation, f, indent=2)
    if (rng.random() < 0.3 if sharded is None else sharded):
        names = sorted(stored)
        cut = rng.randrange(1, len(names))
        shards = {"model-00001-of-00002.safetensors": names[:cut],
                  "model-00002-of-00002.safetensors": names[cut:]}
        weight_map = {}
        for shard, members in shards.items():
            write_safetensors(os.path.join(path, shard), {n: stored[n] for n in members},
                              metadata={"format": "pt"}, dtypes={n: dtypes[n] for n in members if n in dtypes})
            weight_map.update((n, shard) for n in members)
            files[shard] = "safetensors"
        index = {"metadata": {"total_size": sum(a.nbytes for a in stored.values())},
                 "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
        files["model.safetensors.index.json"] = "index"
    else:
        write_safetensors(os.path.join(path, "model.safetensors"), stored,
                          metadata={"format": "pt"}, dtypes=dtypes)
        files["model.safetensors"] = "safetensors"
    return files


# ---- the independent reading ----------------------------------------------------------------

def _hf_weights(path: str) -> Dict[str, np.ndarray]:
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return independent_tensors(single)
    with open(os.path.join(path, "model.safetensors.index.json"), "rb") as f:
        shards = sorted(set(json.loads(f.read())["weight_map"].values()))
    out = {}
    for shard in shards:
        out.update(independent_tensors(os.path.join(path, shard)))
    return out


def _hf_to_ours(name: str) -> Optional[str]:
    """pytransformer's name for a Hugging Face tensor name (None: not a per-layer/norm tensor)."""
    import re
    m = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\.(\w+)\.(\w+)\.weight", name)
    if m:   # T5 blocks: attention projections and the feed-forward
        side, i, _, block, proj = m.groups()
        if block == "DenseReluDense":
            return f"{side}.layers.{i}.ffn." + {"wi": "fc1", "wi_0": "fc1", "wi_1": "fc1_linear", "wo": "fc2"}[proj] + ".weight"
        if proj == "relative_attention_bias":
            return f"{side}.relative_attention_bias.weight"
        block = "self_attn" if block == "SelfAttention" else "cross_attn"
        return f"{side}.layers.{i}.{block}." + {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}[proj] + ".weight"
    m = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\.layer_norm\.weight", name)
    if m:
        side, i, k = m.groups()
        kinds = ["self_attn_norm"] + (["cross_attn_norm"] if side == "decoder" else []) + ["ffn_norm"]
        return f"{side}.layers.{i}.{kinds[int(k)]}.weight"
    m = re.fullmatch(r"(encoder|decoder)\.final_layer_norm\.weight", name)
    if m:
        return f"{m.group(1)}.final_norm.weight"
    m = re.fullmatch(r"model\.(encoder|decoder)\.(.+)", name)
    if not m:
        return None
    side, rest = m.groups()
    for theirs, ours in (("encoder_attn_layer_norm", "cross_attn_norm"), ("self_attn_layer_norm", "self_attn_norm"),
                         ("final_layer_norm", "ffn_norm"), ("encoder_attn.", "cross_attn."),
                         ("fc1", "ffn.fc1"), ("fc2", "ffn.fc2"), ("layernorm_embedding", "embedding_norm"),
                         ("embed_positions", "positions")):
        rest = rest.replace(theirs, ours)
    if rest.startswith("layer_norm."):
        rest = "final_norm." + rest[len("layer_norm."):]
    return f"{side}.{rest}"


# transformers' ACT2FN names -> ours
_HF_ACTIVATIONS = {"swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _one_id(value):
    return value[0] if isinstance(value, list) else value


def hf_reference(path: str):
    """(ModelConfig, tensors, generation rules) read from a Hugging Face directory without hf.py."""
    with open(os.path.join(path, "config.json"), "rb") as f:
        hf = json.loads(f.read())
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_path):
        with open(gen_path, "rb") as f:
            gen = json.loads(f.read())
    else:
        gen = hf
    weights = _hf_weights(path)
    family = hf["model_type"]
    def get(key, default=None):   # generation file first, then config.json (as hf.py documents)
        for source in (gen, hf):
            if source.get(key) is not None:
                return source[key]
        return default
    eos, bos, pad = _one_id(get("eos_token_id")), _one_id(get("bos_token_id")), _one_id(hf["pad_token_id"])
    start = _one_id(get("decoder_start_token_id", bos))
    t5 = family in ("t5", "mt5")
    shared = "shared.weight" if t5 else "model.shared.weight"
    prefix = "" if t5 else "model."
    src = weights.get(f"{prefix}encoder.embed_tokens.weight", weights.get(shared))
    tgt = weights.get(f"{prefix}decoder.embed_tokens.weight", weights.get(shared))
    head = weights.get("lm_head.weight")
    shared_emb = src is tgt or (src.shape == tgt.shape and np.array_equal(src, tgt))
    tie = head is None or (head.shape == tgt.shape and np.array_equal(head, tgt))
    tensors = {"src_embedding.weight": src}
    if not shared_emb:
        tensors["tgt_embedding.weight"] = tgt
    if not tie:
        tensors["output.weight"] = head
    if "final_logits_bias" in weights:
        tensors["output.bias"] = weights["final_logits_bias"].reshape(-1)
    for name, array in weights.items():
        ours = _hf_to_ours(name)
        if ours and "embed_tokens" not in ours and not (family == "marian" and ".positions." in ours):
            tensors[ours] = array
    fields = dict(d_model=hf["d_model"], src_vocab_size=hf["vocab_size"], tgt_vocab_size=tgt.shape[0],
                  shared_embeddings=bool(shared_emb), tie_output=bool(tie), pad_id=pad, eos_id=eos,
                  bos_id=bos, decoder_start_id=start)
    if t5:
        ffp = hf.get("feed_forward_proj", "relu")
        act = ffp.split("-")[-1]
        act = "gelu_tanh" if act in ("gelu", "gelu_new") and ffp.startswith("gated") else act
        scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
        fields.update(num_heads=hf["num_heads"], head_size=hf["d_kv"], encoder_layers=hf["num_layers"],
                      decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
                      ffn_dim=hf["d_ff"], activation=_HF_ACTIVATIONS.get(act, act),
                      ffn_gated=ffp.startswith("gated-"), norm_type="rms_norm", norm_placement="pre",
                      encoder_final_norm=True, decoder_final_norm=True,
                      layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
                      positional_encoding="relative",
                      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
                      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
                      scale_embeddings=False, scale_attention=False, attention_bias=False,
                      ffn_bias=False, output_bias=False,
                      output_scale=hf["d_model"] ** -0.5 if family == "t5" and scaled else 1.0)
    else:
        act = hf.get("activation_function", "gelu")
        fields.update(num_heads=hf["encoder_attention_heads"], ffn_dim=hf["encoder_ffn_dim"],
                      encoder_layers=hf["encoder_layers"], decoder_layers=hf["decoder_layers"],
                      activation=_HF_ACTIVATIONS.get(act, act),
                      scale_embeddings=bool(hf.get("scale_embedding", False)),
                      max_positions=hf["max_position_embeddings"], output_bias=family != "m2m_100")
        pre = family in ("mbart", "m2m_100")
        fields.update(norm_placement="pre" if pre else "post", encoder_final_norm=pre, decoder_final_norm=pre)
        if family == "marian":
            fields.update(positional_encoding="sinusoidal", sinusoidal_layout="halves")
        elif family == "m2m_100":
            fields.update(positional_encoding="sinusoidal", sinusoidal_layout="fairseq",
                          position_offset=pad + 1)
        else:
            fields.update(positional_encoding="learned", position_offset=2, embedding_norm=True)
    config = ModelConfig(format_version=2, **fields)
    suppressed = set()
    for key in ("bad_words_ids", "suppress_tokens"):
        for item in gen.get(key) or []:
            token = _one_id(item)
            if not (key == "bad_words_ids" and token == eos):
                suppressed.add(token)
    rules = dict(forced_bos_id=_one_id(gen.get("forced_bos_token_id")),
                 forced_eos_id=_one_id(gen.get("forced_eos_token_id")),
                 suppressed_ids=sorted(suppressed))
    return config, tensors, rules


def check_hf(path: str, model) -> None:
    """The loaded model has the config, tensors and generation rules an independent reading of the
    directory gives, and computes bitwise the logits of a model built from that reading."""
    config, tensors, rules = hf_reference(path)
    assert model.config == config, f"config differs from the files: {model.config} != {config}"
    got_rules = dict(forced_bos_id=model.forced_bos_id, forced_eos_id=model.forced_eos_id,
                     suppressed_ids=[] if model.suppressed_ids is None else model.suppressed_ids.tolist())
    assert got_rules == rules, f"generation rules {got_rules} != {rules}"
    _, got, _ = pytransformer.hf.load_hf_weights(path)
    assert set(got) == set(tensors) == set(expected_tensors(config)), \
        f"tensor names differ: {sorted(set(got) ^ set(tensors))}"
    for name, array in tensors.items():
        g = got[name]
        assert g.dtype == np.float32 and g.shape == array.shape, f"{name}: {g.dtype} {g.shape}"
        assert np.array_equal(g.view(np.uint32), array.view(np.uint32)), f"{name}: values differ"
    reference = pytransformer.Model(config, tensors)
    check_same_outputs(model, reference)


BUILDERS: Dict[str, Builder] = {
    "native": Builder("native", build_native, pytransformer.load, check_native),
    "hf": Builder("hf", build_hf, pytransformer.load, check_hf, pristine_count=2 * len(HF_CONFIGS)),
}


# =============================================================================================
# Mutations. Each takes (rng, files) where files maps file name -> bytes (None: deleted), edits
# files in place and returns (description, hints): hints are substrings of which at least one
# must appear in a WeightsError message when this mutation is the only one applied (empty: any).

INTERESTING_INTS = [0, 1, 2, 3, 7, 8, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1,
                    2**63, 2**64 - 1, 2**64, 10**30, -1, -2, -(2**31), -(2**63)]
INTERESTING_VALUES = INTERESTING_INTS + [0.0, -0.0, 0.5, 1.5, 1e308, -1e308, 1e-320, "", "1",
                                         "F32", None, True, False, [], [1], {}, {"a": 1}]


def _st_split(data: Optional[bytes]):
    """(header dict, data section bytes, pad) of a well-formed file, or None."""
    if data is None or len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    return header, data[8 + n:]


def _st_join(header: dict, body: bytes, align: int = 8) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % align)
    return len(raw).to_bytes(8, "little") + raw + body


def _tensor_names(header: dict) -> List[str]:
    return [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]


def _pick_tensor(rng, files, name, dtypes=None):
    """(header, body, tensor) with a random tensor of safetensors file `name` (of one of `dtypes`,
    if given), or None when the file does not parse or holds no such tensor."""
    split = _st_split(files[name])
    if split is None:
        return None
    header, body = split
    names = [n for n in _tensor_names(header) if dtypes is None or header[n].get("dtype") in dtypes]
    if not names:
        return None
    return header, body, rng.choice(names)


# ---- byte-level mutators (any file) --------------------------------------------------------

def mut_flip_bits(rng, files, name):
    data = bytearray(files[name])
    if not data:
        return None
    for _ in range(rng.choice((1, 1, 2, 8))):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    files[name] = bytes(data)
    return f"{name}: flip bits", []


def mut_set_bytes(rng, files, name):
    data = bytearray(files[name])
    if not data:
        return None
    i = rng.randrange(len(data))
    n = min(len(data) - i, rng.choice((1, 2, 4, 8)))
    fill = rng.choice((b"\x00", b"\xff", b"\x7f", b"\x80", b"{", b"\"", b"9"))
    data[i:i + n] = fill * n
    files[name] = bytes(data)
    return f"{name}: set {n} bytes at {i} to {fill!r}", []


def mut_truncate(rng, files, name):
    data = files[name]
    cut = rng.choice([0, 1, 7, 8, 9, len(data) // 2, len(data) - 1, rng.randrange(len(data) + 1)])
    cut = max(0, min(cut, len(data)))
    files[name] = data[:cut]
    return f"{name}: truncate to {cut} of {len(data)} bytes", [name]


def mut_splice(rng, files, name):
    """Insert, delete or duplicate a run of bytes."""
    data = files[name]
    i = rng.randrange(len(data) + 1)
    n = rng.choice((1, 3, 8, 64))
    op = rng.choice(("insert", "delete", "duplicate", "append"))
    if op == "insert":
        data = data[:i] + bytes(rng.randrange(256) for _ in range(n)) + data[i:]
    elif op == "delete":
        data = data[:i] + data[i + n:]
    elif op == "duplicate":
        data = data[:i] + data[i:i + n] + data[i:]
    else:
        data = data + bytes(rng.randrange(256) for _ in range(n))
    files[name] = data
    return f"{name}: {op} {n} bytes at {i}", []


def mut_delete_file(rng, files, name):
    files[name] = None
    return f"{name}: delete the file", [name]


def mut_swap_files(rng, files, name):
    others = [n for n in files if n != name and files[n] is not None]
    if not others:
        return None
    other = rng.choice(others)
    files[name], files[other] = files[other], files[name]
    return f"{name}: swap contents with {other}", [name, other]


BYTE_MUTATORS = [(mut_flip_bits, 3), (mut_set_bytes, 3), (mut_truncate, 2), (mut_splice, 2),
                 (mut_delete_file, 0.3), (mut_swap_files, 0.2)]


# ---- safetensors-aware mutators ------------------------------------------------------------

def mut_header_length(rng, files, name):
    data = files[name]
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    size = len(data)
    value = rng.choice([0, 1, 2, n - 1, n + 1, n - 8, n + 8, size - 8, size - 7, size,
                        MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1, 2**32, 2**63, 2**64 - 1,
                        rng.randrange(2**64)])
    value %= 2**64
    files[name] = value.to_bytes(8, "little") + data[8:]
    return f"{name}: header length {n} -> {value}", [name]


def mut_header_bytes(rng, files, name):
    """Corrupt bytes inside the JSON header only (the length field stays consistent)."""
    data = files[name]
    split = _st_split(data)
    if split is None:
        return None
    n = int.from_bytes(data[:8], "little")
    raw = bytearray(data[8:8 + n])
    op = rng.choice(("byte", "delete", "insert"))
    i = rng.randrange(len(raw))
    if op == "byte":
        raw[i] = rng.choice(b'{}[]",:0123456789-.eE \x00\xff\xc3' + bytes([rng.randrange(256)]))
    elif op == "delete":
        del raw[i:i + rng.choice((1, 2, 10))]
    else:
        raw[i:i] = rng.choice((b",", b"{", b"]", b"\"x\":1,", b"\\u0000", b"\xed\xa0\x80", b"NaN"))
    raw = bytes(raw)
    files[name] = len(raw).to_bytes(8, "little") + raw + data[8 + n:]
    return f"{name}: header JSON {op} at {i}", [name]


def _entry_value(rng, field, entry, header, body_len):
    if field == "dtype":
        return rng.choice(["F32", "F16", "BF16", "F64", "I32", "I64", "I8", "U8", "BOOL",
                           "F8_E4M3", "f32", "float32", "", 5, None, ["F32"]])
    if field == "shape":
        shape = list(entry.get("shape", [1]))
        options = [[], [0], [1], shape[::-1], shape + [1], [1] + shape, shape[:-1],
                   [d * 2 for d in shape], [d + 1 for d in shape], [-1] + shape[1:],
                   [2**62, 2**62], [2**31] + shape[1:], [2**64] + shape[1:], [1] * 40,
                   [0, 2**62, 2**62], [str(d) for d in shape], [float(d) for d in shape],
                   [True] * len(shape), [shape], None, 7, "2,3"]
        return rng.choice(options)
    # data_offsets
    begin, end = entry.get("data_offsets", [0, 0])
    others = [header[n]["data_offsets"] for n in _tensor_names(header) if n in header
              and isinstance(header[n].get("data_offsets"), list)]
    other = rng.choice(others) if others else [0, 0]
    options = [[begin + 1, end + 1], [begin - 1, end - 1], [begin + 4, end + 4], [end, begin],
               [0, 0], [begin, begin], [begin, end + 4], [begin, end - 4], [-4, end - begin - 4],
               [body_len - (end - begin) + 4, body_len + 4], [body_len, body_len + end - begin],
               list(other), [other[0] + 2, other[0] + 2 + end - begin],
               [2**63, 2**63 + end - begin], [2**64 - 4, 2**64 - 4 + end - begin],
               [float(begin), float(end)], [str(begin), str(end)], [begin], [begin, end, end],
               None, {}, [True, end]]
    return rng.choice(options)


def mut_entry_field(rng, files, name):
    picked = _pick_tensor(rng, files, name)
    if picked is None:
        return None
    header, body, tensor = picked
    field = rng.choice(("dtype", "shape", "data_offsets"))
    entry = dict(header[tensor])
    new = _entry_value(rng, field, entry, header, len(body))
    if rng.random() < 0.1:
        entry.pop(field)
        desc = f"remove {field}"
    else:
        entry[field] = new
        desc = f"{field} {header[tensor].get(field)!r} -> {new!r}"
    if rng.random() < 0.05:
        entry["extra"] = 1
        desc += " + unknown field"
    header[tensor] = entry
    files[name] = _st_join(header, body)
    return f"{name}: tensor {tensor!r}: {desc}", [tensor]


def mut_entry_set(rng, files, name):
    """Delete, rename, duplicate or replace whole header entries; break the metadata."""
    picked = _pick_tensor(rng, files, name)
    if picked is None:
        return None
    header, body, tensor = picked
    op = rng.choice(("delete", "rename", "duplicate", "not_object", "metadata", "empty",
                     "raw_duplicate_key"))
    if op == "delete":
        del header[tensor]
        hints = [tensor]
    elif op == "rename":
        new = rng.choice((tensor.replace("layers.0", "layers.7"), tensor + "x", tensor.upper(),
                          "", "__metadata__", tensor.replace(".weight", ".bias")))
        header = {(new if k == tensor else k): v for k, v in header.items()}
        hints = [tensor, new]
    elif op == "duplicate":
        header[tensor + ".copy"] = dict(header[tensor])
        hints = [tensor]
    elif op == "not_object":
        header[tensor] = rng.choice(([], "F32", 0, None, [header[tensor]]))
        hints = [tensor]
    elif op == "metadata":
        header["__metadata__"] = rng.choice(([], "x", {"a": 1}, {"a": None}, {"a": ["b"]}, 3))
        hints = ["__metadata__"]
    elif op == "empty":
        header = {}
        hints = ["missing"]
    else:
        # JSON with the same key twice: readers that keep the last value would see another tensor
        raw = json.dumps(header, separators=(",", ":"))
        dup = json.dumps({tensor: header[rng.choice(_tensor_names(header))]}, separators=(",", ":"))[1:-1]
        raw = raw[:-1] + "," + dup + "}"
        raw_b = raw.encode() + b" " * (-len(raw) % 8)
        files[name] = len(raw_b).to_bytes(8, "little") + raw_b + body
        return f"{name}: duplicate key {tensor!r}", [tensor]
    files[name] = _st_join(header, body)
    return f"{name}: {op} entry {tensor!r}", hints


def mut_reencode(rng, files, name):
    """Store one tensor consistently in another dtype (F16/BF16 load; others are refused), or
    move it to an unaligned offset (the loader must copy it)."""
    picked = _pick_tensor(rng, files, name, _NP_DTYPE)
    if picked is None:
        return None
    header, body, tensor = picked
    entry = header[tensor]
    try:
        begin, end = entry["data_offsets"]
        values = np.frombuffer(body[begin:end], dtype=_NP_DTYPE[entry["dtype"]])
        if entry["dtype"] == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        values = values.astype(np.float32)
    except (ValueError, TypeError, KeyError):
        return None
    target = rng.choice(("F16", "BF16", "F64", "I32", "U8", "F32_unaligned"))
    if target == "F16":
        raw = values.astype("<f2").tobytes()
    elif target == "BF16":
        raw = float32_to_bf16(values).astype("<u2").tobytes()
    elif target == "F64":
        raw = values.astype("<f8").tobytes()
    elif target == "I32":
        raw = values.astype("<i4").tobytes()
    elif target == "U8":
        raw = values.astype("u1").tobytes()
    else:
        raw = b"\x00" + values.astype("<f4").tobytes()
    new_begin = len(body) + (1 if target == "F32_unaligned" else 0)
    body = body + raw
    header[tensor] = {"dtype": target.split("_")[0], "shape": entry["shape"],
                      "data_offsets": [new_begin, len(body)]}
    files[name] = _st_join(header, body)
    # the old bytes become a gap, which is allowed
    return f"{name}: tensor {tensor!r} re-encoded as {target}", [tensor]


def mut_data_values(rng, files, name):
    """Overwrite weights with extreme but well-formed values: NaN, inf, huge, denormal."""
    picked = _pick_tensor(rng, files, name, ("F32",))
    if picked is None:
        return None
    header, body, tensor = picked
    try:
        begin, end = header[tensor]["data_offsets"]
        assert 0 <= begin <= end <= len(body)
    except (ValueError, TypeError, KeyError, AssertionError):
        return None
    data_start = 8 + int.from_bytes(files[name][:8], "little")
    count = (end - begin) // 4
    if count == 0:
        return None
    values = np.frombuffer(body[begin:begin + 4 * count], dtype="<f4").copy()
    special = rng.choice((np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0, 1e20))
    which = rng.choice(("one", "all", "some"))
    if which == "one":
        values[rng.randrange(count)] = special
    elif which == "all":
        values[:] = special
    else:
        values[::3] = special
    data = bytearray(files[name])
    data[data_start + begin:data_start + begin + 4 * count] = values.tobytes()
    files[name] = bytes(data)
    return f"{name}: tensor {tensor!r}: {which} values = {special}", []


SAFETENSORS_MUTATORS = [(mut_header_length, 2), (mut_header_bytes, 2), (mut_entry_field, 5),
                        (mut_entry_set, 3), (mut_reencode, 1.5), (mut_data_values, 1.5)]


# ---- JSON (config) mutators ----------------------------------------------------------------

def _json_load(data):
    try:
        obj = json.loads(data)
    except (ValueError, TypeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _dump(obj) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _key_candidates(key, value, obj):
    """Values worth trying for one config key: the generic list half the time, else values
    chosen for this key and its neighbours (sizes off by one, non-dividing head counts...)."""
    out = []
    if isinstance(value, bool):
        out += [not value, 0, 1, "true"]
    elif isinstance(value, int):
        out += [value + 1, value - 1, value * 2, value // 2, value * 1000, -value, float(value)]
    elif isinstance(value, float):
        out += [0.0, -value, math.inf, -math.inf, math.nan, 1e-300, 1e300, 10**400]
    elif isinstance(value, str):
        out += [value.upper(), value + " ", "relu", "gelu", "rms_norm", "pre", "learned", "halves"]
    d = obj.get("d_model")
    if key == "num_heads" and isinstance(d, int) and d > 0:
        out += [h for h in (2, 3, 4, 5, 7, d - 1, d + 1, 2 * d) if h > 0]  # most do not divide d_model
    if key in ("max_positions", "position_offset"):
        out += [2**31 - 1, 2**31 - 2, 2**24, 10**6]
    if key in ("eos_id", "decoder_start_id", "pad_id", "bos_id"):
        for vkey in ("src_vocab_size", "tgt_vocab_size"):
            if isinstance(obj.get(vkey), int):
                out += [obj[vkey], obj[vkey] - 1]
    # Hugging Face config.json / generation_config.json keys
    if key in ("encoder_attention_heads", "decoder_attention_heads") and isinstance(d, int) and d > 0:
        out += [h for h in (3, 5, 7, d - 1, d + 1, 2 * d) if h > 0]
    if key in ("max_position_embeddings", "relative_attention_max_distance", "d_kv"):
        out += [2**31 - 1, 2**31, 2**24, 10**6, 1]
    if key == "relative_attention_num_buckets":
        out += [2, 3, 4, 5, 64, 2**16, 2**16 + 1, 2**31]
    if key.endswith("token_id") or key in ("bad_words_ids", "suppress_tokens"):
        vocab = obj.get("vocab_size")
        ids = [vocab, vocab - 1, vocab + 1] if isinstance(vocab, int) else [11, 10, 12, 2**31]
        out += ids + [-1, [0], [2, 3], [[1, 2]], [[ids[0]]], [ids[0]], [-1], [[]], [None], ["1"],
                      list(range(12)), [[i] for i in range(12)]]
    if key == "feed_forward_proj":
        out += ["gated-gelu", "gated-silu", "gated-relu", "gelu_new", "gated-", "gated-gelu-x",
                "relu-gated", "-relu", "gelu_pytorch_tanh", "swish"]
    if key == "activation_function":
        out += ["relu", "gelu", "gelu_new", "swish", "silu", "tanh", "gelu_fast", "quick_gelu"]
    if key == "model_type":
        out += ["t5", "mt5", "bart", "mbart", "marian", "m2m_100", "nllb", "pegasus", "T5"]
    if key == "architectures":
        out += [["T5Model"], ["BartForCausalLM"], [], "MarianMTModel", [5], [None], ["X", "Y"]]
    if key in ("share_encoder_decoder_embeddings", "tie_word_embeddings", "scale_embedding",
               "scale_decoder_outputs", "is_encoder_decoder"):
        out += [True, False, None, "false", 0]
    if key == "decoder_vocab_size" and isinstance(obj.get("vocab_size"), int):
        out += [obj["vocab_size"] - 2, obj["vocab_size"] + 1, None]
    return out


def mut_config_value(rng, files, name):
    obj = _json_load(files[name])
    if not obj:
        return None
    key = rng.choice(sorted(obj))
    specific = _key_candidates(key, obj[key], obj)
    new = rng.choice(specific if specific and rng.random() < 0.5 else INTERESTING_VALUES)
    old = obj[key]
    obj[key] = new
    files[name] = json.dumps(obj, indent=1, allow_nan=True).encode()
    # a changed size may surface as a tensor shape that no longer fits, naming the tensor
    return f"{name}: {key} {old!r} -> {new!r}", [key, "tensor", "positions"]


def mut_config_structure(rng, files, name):
    obj = _json_load(files[name])
    if obj is None:
        return None
    key = rng.choice(sorted(obj)) if obj else "d_model"
    op = rng.choice(("delete", "unknown", "duplicate", "not_object", "nested", "bom", "bad_utf8",
                     "huge", "empty", "nan_literal", "big_int_literal"))
    hints = [name]
    if op == "delete":
        obj.pop(key, None)
        data = _dump(obj)
        hints = [key, "tensor"]
        if key == "model_type":   # no longer a Hugging Face config: read as ours, which lacks "format"
            hints.append("format")
    elif op == "unknown":
        obj[rng.choice(("d_mdoel", "rope", "", "__class__", "quantization"))] = 1
        data = _dump(obj)
    elif op == "duplicate":
        text = json.dumps(obj)
        data = (text[:-1] + f', "{key}": {json.dumps(obj.get(key))}' + "}").encode()
        hints = [key]
    elif op == "not_object":
        data = rng.choice((b"[]", b"null", b"1", b"\"config\"", b"[" + _dump(obj) + b"]"))
    elif op == "nested":
        depth = rng.choice((100, 10000, 200000))
        data = b"{\"a\":" + b"[" * depth + b"]" * depth + b"}"
    elif op == "bom":
        data = b"\xef\xbb\xbf" + _dump(obj)
    elif op == "bad_utf8":
        data = _dump(obj).replace(b"\"", b"\xff", 1)
    elif op == "huge":
        data = _dump(obj)[:-1] + b"," + b" " * (1 << 20) + b"\"pad\": 0}"
    elif op == "empty":
        data = b""
    elif op == "nan_literal":
        obj[key] = "NANPLACEHOLDER"
        data = _dump(obj).replace(b"\"NANPLACEHOLDER\"", rng.choice((b"NaN", b"Infinity", b"-Infinity")))
        hints = [key]
    else:
        obj[key] = "BIGPLACEHOLDER"
        data = _dump(obj).replace(b"\"BIGPLACEHOLDER\"", b"9" * rng.choice((20, 400, 5000)))
        hints = [key, name]
    files[name] = data
    return f"{name}: {op} ({key})", hints


def mut_index(rng, files, name):
    """Edit a Hugging Face shard index (model.safetensors.index.json): move a tensor to another or
    a missing shard, drop or add entries, point outside the directory, break weight_map's type."""
    obj = _json_load(files[name])
    if obj is None or not isinstance(obj.get("weight_map"), dict) or not obj["weight_map"]:
        return None
    weight_map = obj["weight_map"]
    tensor = rng.choice(sorted(weight_map))
    shards = sorted(set(v for v in weight_map.values() if isinstance(v, str))) or ["x.safetensors"]
    op = rng.choice(("move", "missing_shard", "outside", "drop", "add", "not_str", "not_dict",
                     "drop_map", "one_shard", "absolute"))
    hints = [name]
    if op == "move":
        weight_map[tensor] = rng.choice(shards)
        hints = []
    elif op == "missing_shard":
        weight_map[tensor] = "model-00003-of-00002.safetensors"
        hints = ["model-00003-of-00002.safetensors"]
    elif op == "outside":
        weight_map[tensor] = rng.choice(("../model.safetensors", "sub/x.safetensors", "..", ".", ""))
    elif op == "absolute":
        weight_map[tensor] = "/etc/passwd"
    elif op == "drop":
        del weight_map[tensor]
        hints = []   # the shard still holds it (the index is only a list of files)
    elif op == "add":
        weight_map[tensor + ".extra"] = shards[0]
        hints = []
    elif op == "not_str":
        weight_map[tensor] = rng.choice((1, None, [shards[0]], {"a": shards[0]}))
    elif op == "not_dict":
        obj["weight_map"] = rng.choice(([], "x", None, 5, [[tensor, shards[0]]]))
    elif op == "drop_map":
        del obj["weight_map"]
    else:   # only one shard listed: the other shard's tensors are missing
        keep = rng.choice(shards)
        obj["weight_map"] = {k: v for k, v in weight_map.items() if v == keep}
        hints = ["missing"]
    files[name] = _dump(obj)
    return f"{name}: index {op} ({tensor})", hints


JSON_MUTATORS = [(mut_config_value, 6), (mut_config_structure, 2)]

MUTATORS_BY_KIND = {
    "safetensors": SAFETENSORS_MUTATORS + BYTE_MUTATORS,
    "json": JSON_MUTATORS + BYTE_MUTATORS,
    "index": [(mut_index, 6)] + JSON_MUTATORS + BYTE_MUTATORS,
    "bytes": BYTE_MUTATORS,
}


def mutate(rng: random.Random, files: Dict[str, Optional[bytes]], kinds: Dict[str, str]):
    """Apply 1-3 mutations; return [(description, hints)]."""
    applied = []
    count = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    attempts = 0
    while len(applied) < count and attempts < 20:
        attempts += 1
        present = [n for n in sorted(kinds) if files.get(n) is not None]
        if not present:
            break
        # weight the files so the weights file (the big attack surface) gets most cases
        name = rng.choices(present, weights=[3 if kinds[n] == "safetensors" else 2 for n in present])[0]
        mutators = MUTATORS_BY_KIND[kinds[name]]
        fn = rng.choices([m for m, _ in mutators], weights=[w for _, w in mutators])[0]
        if not files[name] and fn not in (mut_delete_file, mut_swap_files):
            continue
        result = fn(rng, files, name)
        if result is not None:
            applied.append(result)
    return applied


# =============================================================================================
# Running cases

class CaseFailure(AssertionError):
    pass


@dataclass
class Pristine:
    files: Dict[str, bytes]
    kinds: Dict[str, str]


def make_pristine(builder: Builder, root: str, count: int, seed: int) -> List[Pristine]:
    out = []
    for i in range(count):
        path = os.path.join(root, f"pristine-{i}")
        rng = random.Random(f"{seed}:pristine:{i}")
        rng.pristine_index = i
        kinds = builder.build(path, rng)
        files = {}
        for name in kinds:
            with open(os.path.join(path, name), "rb") as f:
                files[name] = f.read()
        out.append(Pristine(files, kinds))
    return out


def write_case(path: str, files: Dict[str, Optional[bytes]]) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    for name, data in files.items():
        if data is not None:
            with open(os.path.join(path, name), "wb") as f:
                f.write(data)


def check_generate(model) -> None:
    cfg = model.config
    rng = np.random.default_rng(0)
    longest = min(5, cfg.max_positions)
    srcs = [rng.integers(0, cfg.src_vocab_size, size=n) for n in (1, longest)]
    max_new = min(4, cfg.max_positions)
    tokens, scores = model.generate(srcs, max_new, return_scores=True)
    if len(tokens) != len(srcs) or len(scores) != len(srcs):
        raise CaseFailure(f"generate returned {len(tokens)} sequences for {len(srcs)} sources")
    for b, (t, s) in enumerate(zip(tokens, scores)):
        if t.dtype != np.int64 or t.ndim != 1 or not 1 <= len(t) <= max_new:
            raise CaseFailure(f"sequence {b}: bad tokens {t!r}")
        if ((t < 0) | (t >= cfg.tgt_vocab_size)).any():
            raise CaseFailure(f"sequence {b}: token out of range: {t.tolist()}")
        if cfg.eos_id in t[:-1].tolist():
            raise CaseFailure(f"sequence {b}: tokens continue after EOS: {t.tolist()}")
        if s.shape != t.shape or s.dtype != np.float64:
            raise CaseFailure(f"sequence {b}: scores {s.shape} {s.dtype} for tokens {t.shape}")


def _names_problem(message: str, files: Dict[str, Optional[bytes]], mutations) -> Optional[str]:
    """None if the WeightsError message is good enough, else what is missing."""
    if not any(name in message for name in files):
        return f"does not name a file ({', '.join(files)})"
    if len(mutations) == 1:
        hints = mutations[0][1]
        if hints and not any(h and h in message for h in hints):
            return f"names none of {hints}"
    return None


_AUDIT = {"armed": False, "events": []}
FORBIDDEN_EVENTS = ("exec", "compile", "pickle.find_class", "marshal.loads", "subprocess.Popen",
                    "os.system", "ctypes.dlopen")


def _audit_hook(event, args):
    if _AUDIT["armed"] and event in FORBIDDEN_EVENTS:
        _AUDIT["events"].append(event)


def run_case(builder: Builder, pristine: List[Pristine], seed: int, index: int, workdir: str):
    """Run one case; return (outcome, detail) with outcome "loaded" or "rejected"; raise
    CaseFailure otherwise."""
    rng = random.Random(f"{seed}:{index}")
    base = rng.choice(pristine)
    files = dict(base.files)
    mutations = mutate(rng, files, base.kinds)
    path = os.path.join(workdir, "case")
    write_case(path, files)
    total = sum(len(d) for d in files.values() if d is not None)
    desc = "; ".join(m[0] for m in mutations) or "(no mutation)"
    tracemalloc.reset_peak()
    start_mem = tracemalloc.get_traced_memory()[0]
    _AUDIT["armed"] = True
    try:
        try:
            model = builder.load(path)
        except WeightsError as exc:
            outcome, detail = "rejected", str(exc)
            problem = _names_problem(detail, files, mutations)
            if problem:
                raise CaseFailure(f"WeightsError message {problem}: {detail!r}") from None
        else:
            check_generate(model)
            outcome, detail = "loaded", ""
            del model
    except CaseFailure as exc:
        raise CaseFailure(f"case {index} [{desc}]: {exc}") from None
    except BaseException as exc:
        tb = traceback.format_exc()
        raise CaseFailure(f"case {index} [{desc}]: {type(exc).__name__}: {exc}\n{tb}") from None
    finally:
        _AUDIT["armed"] = False
    if _AUDIT["events"]:
        events = sorted(set(_AUDIT["events"]))
        _AUDIT["events"].clear()
        raise CaseFailure(f"case {index} [{desc}]: forbidden audit events on the load path: {events}")
    peak = tracemalloc.get_traced_memory()[1] - start_mem
    if peak > PEAK_FIXED_BYTES + PEAK_PER_FILE_BYTE * total:
        raise CaseFailure(f"case {index} [{desc}]: peak traced memory {peak} bytes for "
                          f"{total} bytes of files")
    if outcome == "loaded":
        try:
            builder.check(path, builder.load(path))
        except AssertionError as exc:
            raise CaseFailure(f"case {index} [{desc}]: loaded, but wrong: {exc}") from None
    return outcome, desc


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def fuzz(builder_name="native", cases=1000, seed=0, first_case=0, verbose=False,
         state_file=None, limit_memory=True, pristine_count=None):
    """Run cases [first_case, first_case + cases); return a summary dict; raise CaseFailure."""
    builder = BUILDERS[builder_name]
    counts = {"loaded": 0, "rejected": 0}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pt-fuzz-") as root:
        pristine = make_pristine(builder, root, pristine_count or builder.pristine_count, seed)
        # Warm up: load and run every pristine model once, so imports, OpenMP threads and
        # caches exist before memory is budgeted and the audit hook is armed.
        for i, p in enumerate(pristine):
            path = os.path.join(root, f"warm-{i}")
            write_case(path, p.files)
            model = builder.load(path)
            check_generate(model)
            builder.check(path, model)
        sys.addaudithook(_audit_hook)
        if limit_memory:
            limit = _vm_size() + ADDRESS_SPACE_BUDGET
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        tracemalloc.start()
        for index in range(first_case, first_case + cases):
            if state_file:
                with open(state_file, "w") as f:
                    f.write(str(index))
            faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
            outcome, desc = run_case(builder, pristine, seed, index, root)
            faulthandler.cancel_dump_traceback_later()
            counts[outcome] += 1
            if verbose:
                print(f"case {index}: {outcome}: {desc}", flush=True)
        tracemalloc.stop()
    return {"builder": builder_name, "seed": seed, "first_case": first_case, "cases": cases,
            **counts, "seconds": round(time.perf_counter() - t0, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builder", default="native", choices=sorted(BUILDERS))
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-case", type=int, default=0)
    parser.add_argument("--state-file", default=None,
                        help="file to hold the number of the case being run (for crash reports)")
    parser.add_argument("--no-memory-limit", action="store_true",
                        help="do not set RLIMIT_AS (needed under AddressSanitizer)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    faulthandler.enable()
    limit = not args.no_memory_limit and "asan" not in os.environ.get("LD_PRELOAD", "")
    try:
        summary = fuzz(args.builder, args.cases, args.seed, args.first_case, args.verbose,
                       args.state_file, limit)
    except CaseFailure as exc:
        print(f"FUZZ FAILURE (seed {args.seed}, builder {args.builder}): {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
