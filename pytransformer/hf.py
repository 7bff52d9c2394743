"""pytransformer.hf - run Hugging Face encoder-decoder directories (config.json + model.safetensors) with NumPy alone.

Supported families (config.json "model_type"): marian (opus-mt), bart, mbart, m2m_100 (also NLLB),
t5 and mt5 (T5 v1.0, v1.1, flan-T5). Each Hugging Face config is mapped onto pytransformer's
ModelConfig (one model implementation with variants) and each tensor onto a pytransformer tensor
name; config.expected_tensors stays the list both sides are checked against. Anything the
mapping does not understand is an error that names it, never a silent guess.

Only the standard library and NumPy are needed. `tokenizers` or `sentencepiece`, when installed,
give the model a text tokenizer. Everything that needs torch (converting a pytorch_model.bin,
comparing with transformers) lives in export.py and hf_torch.py, off the load path.
"""
from __future__ import annotations

import importlib.util
import os
import re
import stat
from typing import Dict, List, Optional, Tuple

import numpy as np

from .config import FORMAT_VERSION, MAX_LAYERS, MAX_SIZE, ModelConfig, expected_tensors
from .errors import WeightsError
from .safetensors import parse_json_object, read_safetensors_with_header, to_float32
from .weights import MAX_CONFIG_BYTES, check_tensor_shapes

CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_FILE = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
MAX_JSON_BYTES = 16 << 20          # index files of large sharded models are a few MB
LOADABLE_DTYPES = ("F32", "F16", "BF16")

FAMILIES = ("marian", "bart", "mbart", "m2m_100", "t5", "mt5")
# Hugging Face activation names -> pytransformer's (ACT2FN semantics).
_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "swish": "silu", "silu": "silu"}
# Generation settings that choose a search strategy or its length: pytransformer's greedy search
# takes max_new_tokens / min_new_tokens per call, so these are reported, not applied.
_SEARCH_SETTINGS = ("num_beams", "max_length", "max_new_tokens", "min_length", "min_new_tokens",
                    "length_penalty", "early_stopping", "no_repeat_ngram_size", "repetition_penalty",
                    "do_sample", "temperature", "top_k", "top_p", "renormalize_logits",
                    "num_return_sequences", "diversity_penalty", "num_beam_groups")


# ---------------------------------------------------------------------------------------------
# reading the directory

def _read_json(path: str, limit: int = MAX_JSON_BYTES) -> dict:
    """A JSON object from a regular file of at most `limit` bytes (size checked before reading,
    so a huge or special file costs nothing)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise WeightsError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise WeightsError(f"{path}: larger than {limit} bytes")
            raw = f.read(size + 1)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise WeightsError(f"{path}: larger than {limit} bytes")
    return parse_json_object(raw, path)


def is_hf_directory(path) -> bool:
    """True when `path` is a directory whose config.json is a Hugging Face config (it has a
    "model_type") rather than a pytransformer one."""
    path = os.fspath(path)
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return False
    try:
        d = _read_json(config_path, MAX_CONFIG_BYTES)
    except WeightsError:
        return False
    return "model_type" in d and d.get("format") != "pytransformer"


def _single_id(value, key: str, where: str, allow_none: bool = False) -> Optional[int]:
    """A token id setting that may be an int or a one-element list (transformers allows lists)."""
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise WeightsError(f"{where}: {key} must be a token id or a list of token ids, "
                               f"found {value!r}")
        distinct = sorted(set(value))
        if len(distinct) != 1:
            raise WeightsError(f"{where}: {key} = {value}: several ids are not supported "
                               f"(pytransformer stops on one EOS id)")
        value = distinct[0]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeightsError(f"{where}: {key} must be a token id, found {value!r}")
    return value


class HFCheckpoint:
    """The tensors of a Hugging Face directory by their Hugging Face names: model.safetensors or the
    shards listed by model.safetensors.index.json, memory-mapped; read() widens to float32."""

    def __init__(self, path: str):
        self.path = path
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self._where: Dict[str, Tuple[str, str]] = {}   # name -> (file, dtype)
        self._files: Dict[str, dict] = {}
        self._weight_map: Dict[str, str] = {}
        single = os.path.join(path, SAFETENSORS_FILE)
        index = os.path.join(path, SAFETENSORS_INDEX)
        if os.path.isfile(single):
            files = [single]
            self.where = single
        elif os.path.isfile(index):
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(
                    isinstance(v, str) for v in weight_map.values()):
                raise WeightsError(f"{index}: 'weight_map' must map tensor names to file names")
            names = sorted(set(weight_map.values()))
            for name in names:  # shards must sit in the directory itself
                if os.path.basename(name) != name or name in ("", ".", ".."):
                    raise WeightsError(f"{index}: shard name {name!r} is not a plain file name")
            files = [os.path.join(path, n) for n in names]
            self._weight_map = weight_map
            self.where = index   # where a missing tensor should have been listed
        elif os.path.isfile(os.path.join(path, PYTORCH_FILE)) or \
                os.path.isfile(os.path.join(path, PYTORCH_INDEX)):
            raise WeightsError(_pytorch_only_message(path))
        else:
            raise WeightsError(f"{path}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} found")
        for file in files:
            if not os.path.isfile(file):
                raise WeightsError(f"{file}: shard listed in {SAFETENSORS_INDEX} is missing")
            header, arrays = read_safetensors_with_header(file)
            self._files[file] = arrays
            for name, info in header.tensors.items():
                # every tensor, read or not (tied copies, ignorable tables): a file holding
                # integer weights is not what the mapping thinks it is
                if info.dtype not in LOADABLE_DTYPES:
                    raise WeightsError(f"{file}: tensor {name!r} has dtype {info.dtype}; "
                                       f"supported are {', '.join(LOADABLE_DTYPES)}")
                if name in self._where:
                    raise WeightsError(f"{file}: tensor {name!r} also appears in "
                                       f"{self._where[name][0]}")
                self._where[name] = (file, info.dtype)
                self.shapes[name] = tuple(info.shape)

    def __contains__(self, name):
        return name in self._where

    def names(self):
        return self._where.keys()

    def listed_in(self, name) -> Optional[str]:
        """The shard the index names for a tensor (None for a single file or an unlisted name)."""
        shard = self._weight_map.get(name)
        return shard if isinstance(shard, str) else None

    def file_of(self, name: str) -> str:
        return self._where[name][0]

    def read(self, name: str) -> np.ndarray:
        file, dtype = self._where[name]
        if dtype not in LOADABLE_DTYPES:
            raise WeightsError(f"{file}: tensor {name!r} has dtype {dtype}; supported are "
                               f"{', '.join(LOADABLE_DTYPES)}")
        return to_float32(self._files[file][name], dtype)


def _pytorch_only_message(path: str) -> str:
    # find_spec looks for torch without importing it: this module is on the load path
    has_torch = importlib.util.find_spec("torch") is not None
    base = (f"{path}: holds only a PyTorch checkpoint ({PYTORCH_FILE}), which pytransformer does "
            f"not read at run time (it is a pickle). ")
    if has_torch:
        return base + f"Convert it once with `pytransformer export {path}`, which writes {SAFETENSORS_FILE} next to it."
    return base + (f"Converting it needs PyTorch, which is not installed: install torch and run "
                   f"`pytransformer export {path}` once (it writes {SAFETENSORS_FILE}), or save "
                   f"the model with transformers' save_pretrained(..., safe_serialization=True).")


# ---------------------------------------------------------------------------------------------
# config mapping

class HFModelSpec:
    """What a Hugging Face directory maps to: pytransformer config fields, the Hugging Face
    name of each pytransformer tensor, and the generation rules."""

    def __init__(self, family, fields, names, ignorable, generation, notes):
        self.family = family
        self.fields = fields            # ModelConfig keyword arguments, embedding choices pending
        self.names = names              # pytransformer name -> Hugging Face name
        self.ignorable = ignorable      # Hugging Face tensors known to carry nothing we need
        self.generation = generation    # forced_bos_id, forced_eos_id, suppressed_ids
        self.notes = notes              # settings read but not applied (for describe)


def _get(hf: dict, key: str, where: str, default=None, required=False):
    if key in hf and hf[key] is not None:
        return hf[key]
    if required:
        raise WeightsError(f"{where}: missing {key!r}, which this model_type requires")
    return default


def _size(hf: dict, key: str, where: str, default=None, high: int = MAX_SIZE) -> int:
    """A positive integer setting (not a bool, a float or a string) of at most `high`: layer
    counts size the tensor-name lists built here, so they are bounded before any is built."""
    value = _get(hf, key, where, default=default, required=default is None)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise WeightsError(f"{where}: {key} must be an integer in [1, {high}], found {value!r}")
    return value


def _activation(name, where: str, key: str = "activation_function") -> str:
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise WeightsError(f"{where}: {key} {name!r} is not supported (supported: "
                           f"{', '.join(sorted(_ACTIVATIONS))})")
    return _ACTIVATIONS[name]


def _same(hf: dict, a: str, b: str, where: str):
    if hf.get(a) != hf.get(b):
        raise WeightsError(f"{where}: {a} = {hf.get(a)} differs from {b} = {hf.get(b)}; "
                           f"pytransformer needs them equal")
    return hf.get(a)


def _generation_settings(path: str, hf: dict) -> dict:
    """generation_config.json when present (what transformers' generate() uses), else the
    generation keys of config.json."""
    gen_path = os.path.join(path, GENERATION_FILE)
    return _read_json(gen_path) if os.path.isfile(gen_path) else dict(hf)


def _bart_like_names(prefix: str, n_enc: int, n_dec: int, learned: bool, emb_norm: bool,
                     final_norms: bool) -> Dict[str, str]:
    m = prefix
    names = {}
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        if learned:
            names[f"{side}.positions.weight"] = f"{m}{side}.embed_positions.weight"
        for p in ("weight", "bias"):
            if emb_norm:
                names[f"{side}.embedding_norm.{p}"] = f"{m}{side}.layernorm_embedding.{p}"
            if final_norms:
                names[f"{side}.final_norm.{p}"] = f"{m}{side}.layer_norm.{p}"
        for i in range(n):
            ours, theirs = f"{side}.layers.{i}", f"{m}{side}.layers.{i}"
            blocks = [("self_attn", "self_attn")] + ([("cross_attn", "encoder_attn")] if side == "decoder" else [])
            for p in ("weight", "bias"):
                for our_block, their_block in blocks:
                    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                        names[f"{ours}.{our_block}.{proj}.{p}"] = f"{theirs}.{their_block}.{proj}.{p}"
                    names[f"{ours}.{our_block}_norm.{p}"] = f"{theirs}.{their_block}_layer_norm.{p}"
                names[f"{ours}.ffn.fc1.{p}"] = f"{theirs}.fc1.{p}"
                names[f"{ours}.ffn.fc2.{p}"] = f"{theirs}.fc2.{p}"
                names[f"{ours}.ffn_norm.{p}"] = f"{theirs}.final_layer_norm.{p}"
    names["output.bias"] = "final_logits_bias"
    return names


def _t5_names(n_enc: int, n_dec: int, gated: bool) -> Dict[str, str]:
    names = {}
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        names[f"{side}.relative_attention_bias.weight"] = \
            f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        names[f"{side}.final_norm.weight"] = f"{side}.final_layer_norm.weight"
        for i in range(n):
            ours, theirs = f"{side}.layers.{i}", f"{side}.block.{i}.layer"
            blocks = [("self_attn", 0, "SelfAttention")]
            if side == "decoder":
                blocks.append(("cross_attn", 1, "EncDecAttention"))
            for our_block, k, their_block in blocks:
                for proj, their_proj in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("out_proj", "o")):
                    names[f"{ours}.{our_block}.{proj}.weight"] = f"{theirs}.{k}.{their_block}.{their_proj}.weight"
                names[f"{ours}.{our_block}_norm.weight"] = f"{theirs}.{k}.layer_norm.weight"
            k = len(blocks)
            ffn = f"{theirs}.{k}.DenseReluDense"
            if gated:
                names[f"{ours}.ffn.fc1.weight"] = f"{ffn}.wi_0.weight"
                names[f"{ours}.ffn.fc1_linear.weight"] = f"{ffn}.wi_1.weight"
            else:
                names[f"{ours}.ffn.fc1.weight"] = f"{ffn}.wi.weight"
            names[f"{ours}.ffn.fc2.weight"] = f"{ffn}.wo.weight"
            names[f"{ours}.ffn_norm.weight"] = f"{theirs}.{k}.layer_norm.weight"
    return names


def read_spec(path) -> HFModelSpec:
    """Map a Hugging Face directory's config.json (and generation_config.json) without reading
    any tensor. Raises WeightsError naming whatever is not supported."""
    path = os.fspath(path)
    where = os.path.join(path, CONFIG_FILE)
    hf = _read_json(where, MAX_CONFIG_BYTES)
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise WeightsError(f"{where}: model_type {family!r} is not supported; supported are "
                           f"{', '.join(FAMILIES)}")
    if hf.get("is_encoder_decoder") is False:
        raise WeightsError(f"{where}: is_encoder_decoder is false; pytransformer runs "
                           f"encoder-decoder models only")
    archs = hf.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise WeightsError(f"{where}: architectures must be a list of class names, found {archs!r}")
    for arch in archs:
        if not (arch.endswith("ForConditionalGeneration") or arch.endswith("MTModel")
                or arch in ("BartModel", "MBartModel", "MarianModel", "M2M100Model", "T5Model", "MT5Model")):
            raise WeightsError(f"{where}: architectures entry {arch!r} is not supported (pytransformer "
                               f"runs the sequence-to-sequence models of its families)")

    gen = _generation_settings(path, hf)
    gwhere = os.path.join(path, GENERATION_FILE) if os.path.isfile(
        os.path.join(path, GENERATION_FILE)) else where
    fields = {}
    notes = []
    vocab = _get(hf, "vocab_size", where, required=True)
    pad = _single_id(_get(hf, "pad_token_id", where, required=True), "pad_token_id", where)
    eos = _single_id(_get(gen, "eos_token_id", gwhere, default=hf.get("eos_token_id")),
                     "eos_token_id", gwhere)
    bos = _single_id(_get(gen, "bos_token_id", gwhere, default=hf.get("bos_token_id")),
                     "bos_token_id", gwhere, allow_none=True)
    start = _get(gen, "decoder_start_token_id", gwhere, default=hf.get("decoder_start_token_id"))
    if start is None:
        start = bos   # what transformers' generate() falls back to
    if start is None:
        raise WeightsError(f"{where}: neither decoder_start_token_id nor bos_token_id is set")
    start = _single_id(start, "decoder_start_token_id", gwhere)

    if family in ("t5", "mt5"):
        ffp = hf.get("feed_forward_proj", "relu")
        if not isinstance(ffp, str):
            raise WeightsError(f"{where}: feed_forward_proj {ffp!r} is not supported")
        parts = ffp.split("-")
        gated = parts[0] == "gated" and len(parts) == 2
        if len(parts) > 2 or (len(parts) == 2 and not gated):
            raise WeightsError(f"{where}: feed_forward_proj {ffp!r} is not supported")
        act = parts[-1]
        if gated and act == "gelu":
            act = "gelu_new"   # transformers reads "gated-gelu" as the tanh approximation
        n_enc = _size(hf, "num_layers", where, high=MAX_LAYERS)
        n_dec = _size(hf, "num_decoder_layers", where, default=n_enc, high=MAX_LAYERS)
        d = _size(hf, "d_model", where)
        if family == "mt5":   # mT5 is T5 v1.1: never scaled, whatever the config says
            scale_out = False
        elif "scale_decoder_outputs" in hf:
            scale_out = bool(hf["scale_decoder_outputs"])
        else:   # configs written before transformers 5: an untied head means T5 v1.1, unscaled
            scale_out = hf.get("tie_word_embeddings", True) is not False
        fields.update(
            d_model=d, num_heads=_get(hf, "num_heads", where, required=True),
            head_size=_get(hf, "d_kv", where, required=True),
            encoder_layers=n_enc, decoder_layers=n_dec,
            ffn_dim=_get(hf, "d_ff", where, required=True),
            activation=_activation(act, where, "feed_forward_proj"), ffn_gated=gated,
            norm_type="rms_norm", norm_placement="pre", encoder_final_norm=True, decoder_final_norm=True,
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            positional_encoding="relative",
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            scale_embeddings=False, scale_attention=False, attention_bias=False, ffn_bias=False,
            output_bias=False, output_scale=d ** -0.5 if scale_out else 1.0)
        names = _t5_names(n_enc, n_dec, gated)
        embed_names = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
        ignorable = {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}
    else:
        heads = _same(hf, "encoder_attention_heads", "decoder_attention_heads", where)
        ffn = _same(hf, "encoder_ffn_dim", "decoder_ffn_dim", where)
        d = _get(hf, "d_model", where, required=True)
        max_pos = _get(hf, "max_position_embeddings", where, required=True)
        common = dict(d_model=d, num_heads=heads, ffn_dim=ffn,
                      encoder_layers=_size(hf, "encoder_layers", where, high=MAX_LAYERS),
                      decoder_layers=_size(hf, "decoder_layers", where, high=MAX_LAYERS),
                      activation=_activation(hf.get("activation_function", "gelu"), where),
                      scale_embeddings=bool(hf.get("scale_embedding", False)),
                      max_positions=max_pos, layer_norm_eps=1e-5)
        fields.update(common)
        m = "model."
        if family == "marian":
            fields.update(norm_placement="post", positional_encoding="sinusoidal",
                          sinusoidal_layout="halves", output_bias=True)
            learned, emb_norm, final_norms = False, False, False
            # Marian's position table is a frozen copy of the sinusoids; older files store it.
            ignorable = {f"{m}encoder.embed_positions.weight", f"{m}decoder.embed_positions.weight"}
        elif family in ("bart", "mbart"):
            fields.update(positional_encoding="learned", position_offset=2, embedding_norm=True,
                          output_bias=True)
            if family == "mbart":
                fields.update(norm_placement="pre", encoder_final_norm=True, decoder_final_norm=True)
            learned, emb_norm, final_norms = True, True, family == "mbart"
            ignorable = set()
        else:  # m2m_100 (and NLLB): fairseq sinusoids, positions counted from pad_token_id + 1
            fields.update(norm_placement="pre", encoder_final_norm=True, decoder_final_norm=True,
                          positional_encoding="sinusoidal", sinusoidal_layout="fairseq",
                          position_offset=pad + 1)
            learned, emb_norm, final_norms = False, False, True
            ignorable = set()
        names = _bart_like_names(m, fields["encoder_layers"], fields["decoder_layers"], learned,
                                 emb_norm, final_norms)
        if not fields.get("output_bias"):
            del names["output.bias"]
        embed_names = (f"{m}shared.weight", f"{m}encoder.embed_tokens.weight", f"{m}decoder.embed_tokens.weight")
        if family == "marian" and not hf.get("share_encoder_decoder_embeddings", True):
            embed_names = (None, f"{m}encoder.embed_tokens.weight", f"{m}decoder.embed_tokens.weight")
    fields.update(pad_id=pad, eos_id=eos, bos_id=bos, decoder_start_id=start, src_vocab_size=vocab,
                  tgt_vocab_size=vocab if family != "marian" else hf.get("decoder_vocab_size") or vocab)

    generation = {"forced_bos_id": None, "forced_eos_id": None, "suppressed_ids": []}
    if gen.get("forced_bos_token_id") is not None:
        generation["forced_bos_id"] = _single_id(gen["forced_bos_token_id"], "forced_bos_token_id", gwhere)
    if gen.get("forced_eos_token_id") is not None:
        generation["forced_eos_id"] = _single_id(gen["forced_eos_token_id"], "forced_eos_token_id", gwhere)
    for key in ("bad_words_ids", "suppress_tokens"):
        value = gen.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise WeightsError(f"{gwhere}: {key} must be a list of token ids, found {value!r}")
        ids = []
        for item in value:
            item = item if isinstance(item, list) else [item]
            if len(item) != 1:
                raise WeightsError(f"{gwhere}: {key} entry {item} spans several tokens; only "
                                   f"single-token entries are supported")
            ids.append(_single_id(item[0], key, gwhere))
        if key == "bad_words_ids":   # transformers never bans an EOS id this way
            ids = [i for i in ids if i != eos]
        generation["suppressed_ids"] += ids
    if gen.get("begin_suppress_tokens"):
        raise WeightsError(f"{gwhere}: begin_suppress_tokens is not supported")
    for key in _SEARCH_SETTINGS:
        if key in gen and gen[key] not in (None, False, 1, 1.0, 0) and key not in ("max_length",):
            notes.append(f"{key}={gen[key]!r} (search setting; pytransformer decodes greedily "
                         f"with the lengths given to generate)")
    spec = HFModelSpec(family, fields, names, ignorable, generation, notes)
    spec.embed_names = embed_names
    spec.generation_path = gwhere

    # Which file and Hugging Face key each ModelConfig field came from, so that a value
    # ModelConfig refuses is reported by the name the user sees in their files.
    def origin(key):
        return gwhere if gen is not hf and gen.get(key) is not None else where
    if family in ("t5", "mt5"):
        keys = dict(d_model="d_model", num_heads="num_heads", head_size="d_kv",
                    encoder_layers="num_layers", decoder_layers="num_decoder_layers",
                    ffn_dim="d_ff", layer_norm_eps="layer_norm_epsilon",
                    relative_attention_num_buckets="relative_attention_num_buckets",
                    relative_attention_max_distance="relative_attention_max_distance")
    else:
        keys = dict(d_model="d_model", num_heads="encoder_attention_heads",
                    ffn_dim="encoder_ffn_dim", encoder_layers="encoder_layers",
                    decoder_layers="decoder_layers", max_positions="max_position_embeddings",
                    position_offset="pad_token_id" if family == "m2m_100" else "max_position_embeddings")
    spec.sources = {ours: (where, theirs) for ours, theirs in keys.items()}
    spec.sources.update(
        src_vocab_size=(where, "vocab_size"),
        tgt_vocab_size=(where, "decoder_vocab_size" if family == "marian" else "vocab_size"),
        pad_id=(where, "pad_token_id"), eos_id=(origin("eos_token_id"), "eos_token_id"),
        bos_id=(origin("bos_token_id"), "bos_token_id"),
        decoder_start_id=(origin("decoder_start_token_id"), "decoder_start_token_id"),
        shared_embeddings=(where, "share_encoder_decoder_embeddings (or the embedding tensors)"))
    spec.config_path = where
    return spec


# ---------------------------------------------------------------------------------------------
# loading

def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and np.array_equal(a, b))


def _in_hf_terms(exc: WeightsError, spec: HFModelSpec) -> WeightsError:
    """A ModelConfig error about field X restated as one about the Hugging Face key X came from."""
    message = str(exc)
    found = re.match(r"config key '(\w+)'", message)
    if found and found.group(1) in spec.sources:
        file, key = spec.sources[found.group(1)]
        return WeightsError(f"{file}: {key} (pytransformer's {found.group(1)!r})"
                            f"{message[found.end():]}")
    return WeightsError(f"{spec.config_path}: {message}")


def load_hf_weights(path) -> Tuple[ModelConfig, Dict[str, np.ndarray], HFModelSpec]:
    """(ModelConfig, {pytransformer name: float32 array}, spec) for a Hugging Face directory."""
    path = os.fspath(path)
    spec = read_spec(path)
    ckpt = HFCheckpoint(path)
    where = spec.config_path
    fields = dict(spec.fields)

    # Embedding tables and the output head: tied wherever the file holds one table (or equal
    # copies), separate where it holds different ones -- what transformers does when loading.
    shared_name, enc_name, dec_name = spec.embed_names
    def first(*cands):
        for c in cands:
            if c is not None and c in ckpt:
                return c
        return None
    src_name = first(enc_name, shared_name)
    tgt_name = first(dec_name, shared_name)
    if src_name is None or tgt_name is None:
        raise WeightsError(f"{ckpt.where}: missing token embedding table (looked for "
                           f"{', '.join(n for n in spec.embed_names if n)})")
    src = ckpt.read(src_name)
    tgt = src if tgt_name == src_name else ckpt.read(tgt_name)
    shared = _same_array(src, tgt)
    head = ckpt.read("lm_head.weight") if "lm_head.weight" in ckpt else None
    tie = head is None or _same_array(head, tgt)
    fields.update(shared_embeddings=shared, tie_output=tie)
    for name, table in ((src_name, src), (tgt_name, tgt)):
        # the target table's row count sizes the target vocabulary below; check the tables here,
        # before ModelConfig would report a mismatch in its own terms
        if table.ndim != 2 or table.shape[1] != fields.get("d_model") or (
                name == src_name and table.shape[0] != fields.get("src_vocab_size")):
            raise WeightsError(f"{ckpt.file_of(name)}: tensor {name!r} has shape "
                               f"{list(table.shape)}; a token embedding table is (vocab, d_model) "
                               f"with {where}'s vocab_size {fields.get('src_vocab_size')} and "
                               f"d_model {fields.get('d_model')}")
    if fields.get("tgt_vocab_size") != tgt.shape[0]:
        fields["tgt_vocab_size"] = tgt.shape[0]
    try:
        config = ModelConfig(format_version=FORMAT_VERSION, **fields)
    except WeightsError as exc:
        raise _in_hf_terms(exc, spec) from None
    for key, value in (("forced_bos_token_id", spec.generation["forced_bos_id"]),
                       ("forced_eos_token_id", spec.generation["forced_eos_id"])) + tuple(
            ("suppress_tokens or bad_words_ids", i) for i in spec.generation["suppressed_ids"]):
        if value is not None and not 0 <= value < config.tgt_vocab_size:
            raise WeightsError(f"{spec.generation_path}: {key}: token id {value} out of range for "
                               f"the target vocabulary of {config.tgt_vocab_size}")

    tensors = {"src_embedding.weight": src}
    source = {"src_embedding.weight": src_name}   # pytransformer name -> Hugging Face name
    used = {n for n in (shared_name, enc_name, dec_name) if n is not None and n in ckpt}
    if not shared:
        tensors["tgt_embedding.weight"] = tgt
        source["tgt_embedding.weight"] = tgt_name
    if not tie:
        tensors["output.weight"] = head
        source["output.weight"] = "lm_head.weight"
    if "lm_head.weight" in ckpt:
        used.add("lm_head.weight")
    wanted = expected_tensors(config)
    for ours in wanted:
        if ours in tensors:
            continue
        theirs = spec.names.get(ours)
        if theirs is None or theirs not in ckpt:
            listed = ckpt.listed_in(theirs)
            raise WeightsError(f"{ckpt.where}: missing tensor {theirs or ours!r} "
                               f"(pytransformer's {ours!r})" + (f"; the index lists it in {listed}, "
                               f"which does not hold it" if listed else ""))
        array = ckpt.read(theirs)
        if ours == "output.bias":
            array = array.reshape(-1)   # final_logits_bias is stored (1, vocab)
        tensors[ours] = array
        source[ours] = theirs
        used.add(theirs)
    unexpected = sorted(set(ckpt.names()) - used - spec.ignorable)
    if unexpected:
        shown = ", ".join(map(repr, unexpected[:6])) + (f" and {len(unexpected) - 6} more"
                                                       if len(unexpected) > 6 else "")
        raise WeightsError(f"{ckpt.file_of(unexpected[0])}: tensor(s) this {spec.family} mapping does not know: {shown}; "
                           f"the model uses an option pytransformer does not support")
    for ours, shape in wanted.items():   # name the file and the Hugging Face tensor at fault
        if tuple(tensors[ours].shape) != shape:
            theirs = source[ours]
            implied = [1, shape[0]] if ours == "output.bias" else list(shape)  # (1, vocab) on disk
            raise WeightsError(f"{ckpt.file_of(theirs)}: tensor {theirs!r} has shape "
                               f"{list(ckpt.shapes[theirs])}; {where} implies {implied}")
    check_tensor_shapes(config, {k: v.shape for k, v in tensors.items()}, path)
    return config, {name: tensors[name] for name in wanted}, spec


def load_hf(path, output_screen=True, huge_pages=True):
    """Load a Hugging Face directory into a pytransformer Model; sets its generation rules and,
    when the directory ships tokenizer files and a tokenizer package is installed, model.tokenizer."""
    from .model import Model
    config, tensors, spec = load_hf_weights(path)
    model = Model(config, tensors, path=str(path), output_screen=output_screen, huge_pages=huge_pages)
    g = spec.generation
    model.forced_bos_id = g["forced_bos_id"]
    model.forced_eos_id = g["forced_eos_id"]
    model.suppressed_ids = np.array(sorted(set(g["suppressed_ids"])), dtype=np.int64) \
        if g["suppressed_ids"] else None
    model.hf_family = spec.family
    model.tokenizer, model.tokenizer_error = load_tokenizer(path, config)
    return model


def describe(path) -> dict:
    """What `pytransformer info` shows for a Hugging Face directory, without loading weights."""
    path = os.fspath(path)
    spec = read_spec(path)
    files = sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    tok_files = [f for f in files if f in _TOKENIZER_FILES]
    return {"family": spec.family, "config": spec.fields, "generation": spec.generation,
            "ignored_settings": spec.notes, "tokenizer_files": tok_files,
            "weights": [f for f in files if f.endswith(".safetensors") or f.endswith(".bin")]}


# ---------------------------------------------------------------------------------------------
# tokenizers

_TOKENIZER_FILES = ("tokenizer.json", "source.spm", "target.spm", "vocab.json", "target_vocab.json",
                    "spiece.model", "sentencepiece.bpe.model", "tokenizer_config.json")


class FastTokenizer:
    """A tokenizer.json read by the `tokenizers` package: encode adds the special tokens the
    file's post-processor adds (as transformers' tokenizer(text) does); decode drops them."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer
        self._tok = Tokenizer.from_file(path)
        self._tok.no_padding()
        self._tok.no_truncation()

    def encode(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


class MarianTokenizer:
    """opus-mt's tokenizer: SentencePiece pieces (source.spm / target.spm) looked up in vocab.json,
    a leading >>lang<< code kept as one token, </s> appended; needs `sentencepiece`."""

    def __init__(self, path: str, config: ModelConfig):
        import sentencepiece
        self._src = sentencepiece.SentencePieceProcessor()
        self._src.Load(os.path.join(path, "source.spm"))
        self._tgt = sentencepiece.SentencePieceProcessor()
        self._tgt.Load(os.path.join(path, "target.spm"))
        tok_cfg_path = os.path.join(path, "tokenizer_config.json")
        tok_cfg = _read_json(tok_cfg_path) if os.path.isfile(tok_cfg_path) else {}
        self.separate = bool(tok_cfg.get("separate_vocabs", False))
        self._vocab = _read_json(os.path.join(path, "vocab.json"))
        out_vocab = self._vocab
        if self.separate and os.path.isfile(os.path.join(path, "target_vocab.json")):
            out_vocab = _read_json(os.path.join(path, "target_vocab.json"))
        self._pieces = {int(v): k for k, v in out_vocab.items()}
        self._unk = self._vocab.get(tok_cfg.get("unk_token", "<unk>"))
        if self._unk is None:
            raise WeightsError(f"{path}: vocab.json has no <unk> token")
        self._eos = config.eos_id
        self._special = {config.eos_id, config.pad_id}

    def encode(self, text: str) -> List[int]:
        code = []
        if text.startswith(">>") and text.find("<<") != -1:
            end = text.find("<<") + 2
            code, text = [text[:end]], text[end:]
        pieces = code + self._src.encode(text, out_type=str)
        return [self._vocab.get(p, self._unk) for p in pieces] + [self._eos]

    def decode(self, ids) -> str:
        spm = self._tgt if self.separate else self._src
        pieces = [self._pieces.get(int(i), "<unk>") for i in ids if int(i) not in self._special]
        return spm.decode_pieces(pieces).replace("\u2581", " ").strip()


class SentencePieceTokenizer:
    """T5's spiece.model without tokenizer.json: SentencePiece ids, </s> appended."""

    def __init__(self, path: str, config: ModelConfig):
        import sentencepiece
        self._sp = sentencepiece.SentencePieceProcessor()
        self._sp.Load(path)
        self._eos = config.eos_id
        self._special = {config.eos_id, config.pad_id}

    def encode(self, text: str) -> List[int]:
        return list(self._sp.encode(text)) + [self._eos]

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids if int(i) not in self._special])


def load_tokenizer(path, config: ModelConfig):
    """(tokenizer or None, reason or None): the first tokenizer the directory and the installed
    packages allow; the reason says which package to install when files exist but none can be read."""
    path = os.fspath(path)
    has = lambda f: os.path.isfile(os.path.join(path, f))
    need = None
    if has("tokenizer.json"):
        try:
            return FastTokenizer(os.path.join(path, "tokenizer.json")), None
        except ImportError:
            need = "tokenizers"
    if has("source.spm") and has("target.spm") and has("vocab.json"):
        try:
            return MarianTokenizer(path, config), None
        except ImportError:
            need = need or "sentencepiece"
    if has("spiece.model"):
        try:
            return SentencePieceTokenizer(os.path.join(path, "spiece.model"), config), None
        except ImportError:
            need = need or "sentencepiece"
    if need:
        return None, (f"{path} has tokenizer files, but reading them needs the `{need}` package: "
                      f"pip install {need} (the token-id API works without it)")
    return None, (f"{path} has no tokenizer file pytransformer can read (tokenizer.json, "
                  f"Marian's source.spm/target.spm/vocab.json, or spiece.model); use the "
                  f"token-id API (generate) instead")
