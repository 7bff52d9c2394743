"""Model configuration (config.json), format versions 1 and 2: strict validation and the tensor list.

ModelConfig holds every config.json key; constructing one validates it, so any ModelConfig in
hand is consistent. expected_tensors(config) is the single source of truth for which tensors
a model directory holds and their shapes: the loader checks files against it and exporters
(and the Hugging Face mapping in hf.py) build their output from it.

Version 2 adds what the Hugging Face families need (T5, M2M100/NLLB): head_size, scale_attention,
output_scale, gated FFNs, relative position buckets and the "fairseq" sinusoidal layout. A version-1
file may not use them, so an old file still means what it meant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Dict, Optional, Tuple

from .errors import WeightsError

FORMAT_NAME = "pytransformer"
FORMAT_VERSION = 2

# Sizes are passed to the C kernels as int; anything above this cannot be run.
MAX_SIZE = 2**31 - 1
# Bounds the tensor list built from a config, so a hostile config cannot exhaust memory.
MAX_LAYERS = 1024

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
NORM_TYPES = ("layer_norm", "rms_norm")
NORM_PLACEMENTS = ("post", "pre")
POSITIONAL_ENCODINGS = ("sinusoidal", "learned", "none", "relative")
SINUSOIDAL_LAYOUTS = ("interleaved", "halves", "fairseq")

_CHOICES = {
    "activation": ACTIVATIONS,
    "norm_type": NORM_TYPES,
    "norm_placement": NORM_PLACEMENTS,
    "positional_encoding": POSITIONAL_ENCODINGS,
    "sinusoidal_layout": SINUSOIDAL_LAYOUTS,
}
_BOOL_KEYS = ("shared_embeddings", "ffn_gated", "encoder_final_norm", "decoder_final_norm",
              "embedding_norm", "scale_embeddings", "tie_output", "output_bias",
              "attention_bias", "ffn_bias", "scale_attention")
# key -> (smallest, largest) allowed value
_INT_RANGES = {
    "d_model": (1, MAX_SIZE),
    "num_heads": (1, MAX_SIZE),
    "encoder_layers": (1, MAX_LAYERS),
    "decoder_layers": (1, MAX_LAYERS),
    "ffn_dim": (1, MAX_SIZE),
    "src_vocab_size": (1, MAX_SIZE),
    "tgt_vocab_size": (1, MAX_SIZE),
    "position_offset": (0, MAX_SIZE),
    "max_positions": (1, MAX_SIZE),
    "relative_attention_num_buckets": (4, 1 << 16),
    "relative_attention_max_distance": (1, MAX_SIZE),
}
_ID_KEYS = ("pad_id", "bos_id", "eos_id", "decoder_start_id")

# Keys a format-version-1 file may not contain, and the values of version-1 keys that only
# version 2 gives a meaning to.
_V2_KEYS = ("head_size", "scale_attention", "output_scale", "relative_attention_num_buckets",
            "relative_attention_max_distance")
_V2_VALUES = {"positional_encoding": ("relative",), "sinusoidal_layout": ("fairseq",),
              "ffn_gated": (True,)}


def _is_int(value) -> bool:
    # bool is a subclass of int; JSON true/false must not pass for 1/0.
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(key: str, expected: str, value) -> WeightsError:
    return WeightsError(f"config key {key!r}: expected {expected}, found {value!r}")


def _check_format_keys(fmt, version) -> None:
    if not isinstance(fmt, str) or fmt != FORMAT_NAME:
        raise _bad("format", repr(FORMAT_NAME), fmt)
    if not _is_int(version) or version < 1:
        raise _bad("format_version", "a positive integer", version)
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"config key 'format_version': {version} is newer than this version of "
            f"pytransformer supports ({FORMAT_VERSION}); upgrade pytransformer")


@dataclass(frozen=True)
class ModelConfig:
    """Every key of config.json (format version 2). See weights/README.md for meanings."""

    # Required keys (no default).
    d_model: int
    num_heads: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    src_vocab_size: int
    tgt_vocab_size: int
    eos_id: int
    decoder_start_id: int
    # Optional keys.
    shared_embeddings: bool = False
    activation: str = "relu"
    ffn_gated: bool = False
    norm_type: str = "layer_norm"
    norm_placement: str = "post"
    encoder_final_norm: bool = False
    decoder_final_norm: bool = False
    embedding_norm: bool = False
    layer_norm_eps: float = 1e-5
    positional_encoding: str = "sinusoidal"
    sinusoidal_layout: str = "interleaved"
    position_offset: int = 0
    max_positions: int = 1024
    scale_embeddings: bool = True
    tie_output: bool = True
    output_bias: bool = False
    attention_bias: bool = True
    ffn_bias: bool = True
    pad_id: int = 0
    bos_id: Optional[int] = None
    # Version-2 keys.
    head_size: Optional[int] = None
    scale_attention: bool = True
    output_scale: float = 1.0
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    # Required in config.json, defaulted here so code can build a config without repeating them.
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        self._check_types()
        self._check_values()

    # -- validation --------------------------------------------------------------------------

    def _check_types(self) -> None:
        _check_format_keys(self.format, self.format_version)
        for key, (low, high) in _INT_RANGES.items():
            value = getattr(self, key)
            if not _is_int(value):
                raise _bad(key, "an integer", value)
            if not low <= value <= high:
                raise _bad(key, f"an integer in [{low}, {high}]", value)
        for key in _BOOL_KEYS:
            value = getattr(self, key)
            if not isinstance(value, bool):
                raise _bad(key, "true or false", value)
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if not isinstance(value, str) or value not in choices:
                raise _bad(key, "one of " + ", ".join(map(repr, choices)), value)
        for key in _ID_KEYS:
            value = getattr(self, key)
            if not (_is_int(value) or (key == "bos_id" and value is None)):
                raise _bad(key, "an integer" + (" or null" if key == "bos_id" else ""), value)
        if not (self.head_size is None or (_is_int(self.head_size) and 1 <= self.head_size <= MAX_SIZE)):
            raise _bad("head_size", f"null or an integer in [1, {MAX_SIZE}]", self.head_size)
        for key in ("layer_norm_eps", "output_scale"):
            value = getattr(self, key)
            try:  # float() of a huge JSON integer overflows rather than giving inf
                as_float = float(value) if _is_int(value) or isinstance(value, float) else math.nan
            except OverflowError:
                as_float = math.inf
            if not math.isfinite(as_float) or as_float <= 0:
                raise _bad(key, "a finite number > 0", value)
            object.__setattr__(self, key, as_float)

    def _check_values(self) -> None:
        if self.format_version < 2:
            for key in _V2_KEYS:
                if getattr(self, key) != _FIELD_DEFAULTS[key]:
                    raise WeightsError(f"config key {key!r} needs format_version 2, the file "
                                       f"declares {self.format_version}")
            for key, values in _V2_VALUES.items():
                if getattr(self, key) in values:
                    raise WeightsError(f"config key {key!r}: {getattr(self, key)!r} needs "
                                       f"format_version 2, the file declares {self.format_version}")
        if self.head_size is None and self.d_model % self.num_heads:
            raise WeightsError(f"config key 'num_heads': {self.num_heads} does not divide "
                               f"d_model {self.d_model}")
        if self.num_heads * self.head_dim > MAX_SIZE:
            raise WeightsError(f"config key 'head_size': num_heads x head_size = "
                               f"{self.num_heads * self.head_dim} exceeds {MAX_SIZE}")
        if self.positional_encoding == "relative":
            # The logarithmic half of the buckets starts at max_exact (a quarter of the buckets
            # for the bidirectional encoder, half for the causal decoder) and ends at max_distance.
            exact = self.relative_attention_num_buckets // 2
            if self.relative_attention_max_distance <= exact:
                raise WeightsError(f"config key 'relative_attention_max_distance': must exceed "
                                   f"relative_attention_num_buckets // 2 = {exact}, found "
                                   f"{self.relative_attention_max_distance}")
        if self.positional_encoding == "sinusoidal" and self.d_model % 2:
            raise WeightsError(f"config key 'd_model': sinusoidal positions need an even "
                               f"d_model, found {self.d_model}")
        if self.max_positions + self.position_offset > MAX_SIZE:
            raise WeightsError(f"config key 'position_offset': {self.position_offset} plus "
                               f"max_positions {self.max_positions} exceeds {MAX_SIZE}")
        if self.shared_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise WeightsError(f"config key 'shared_embeddings': true needs equal vocab "
                               f"sizes, found src_vocab_size {self.src_vocab_size} and "
                               f"tgt_vocab_size {self.tgt_vocab_size}")
        # pad/bos/eos appear in source and target sequences; decoder_start only in the target.
        both = min(self.src_vocab_size, self.tgt_vocab_size)
        for key in _ID_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            limit, which = ((self.tgt_vocab_size, "tgt_vocab_size") if key == "decoder_start_id"
                            else (both, "min(src_vocab_size, tgt_vocab_size)"))
            if not 0 <= value < limit:
                raise WeightsError(f"config key {key!r}: {value} out of range for "
                                   f"{which} = {limit}")

    # -- conversion --------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d, source: str = "config") -> "ModelConfig":
        """Build a config from a parsed config.json object, rejecting unknown, missing or
        ill-typed keys. `source` (e.g. the file path) prefixes error messages."""
        try:
            if not isinstance(d, dict):
                raise WeightsError(f"must be a JSON object, found {type(d).__name__}")
            # Format and version first: a newer file may legitimately carry keys we do not
            # know, and "upgrade" is the useful message then.
            if "format" not in d:
                raise WeightsError(
                    "missing required config key 'format': this config.json is neither a pytransformer "
                    "config (\"format\": \"pytransformer\") nor a Hugging Face one (which names its "
                    "\"model_type\")" + (f", though it looks like one (it has {sorted(_HF_HINT_KEYS & set(d))[0]!r})"
                                         if _HF_HINT_KEYS & set(d) else ""))
            if "format_version" not in d:
                raise WeightsError("missing required config key 'format_version'")
            _check_format_keys(d["format"], d["format_version"])
            known = {f.name for f in fields(cls)}
            unknown = sorted(str(k) for k in d if k not in known)
            if unknown:
                raise WeightsError(f"unknown config key(s): {', '.join(map(repr, unknown))}")
            if d["format_version"] < 2:
                newer = sorted(k for k in _V2_KEYS if k in d)
                if newer:
                    raise WeightsError(f"config key(s) {', '.join(map(repr, newer))} need "
                                       f"format_version 2, the file declares {d['format_version']}")
            missing = [f.name for f in fields(cls) if f.name in _REQUIRED and f.name not in d]
            if missing:
                raise WeightsError(f"missing required config key(s): "
                                   f"{', '.join(map(repr, missing))}")
            return cls(**d)
        except WeightsError as exc:
            raise WeightsError(f"{source}: {exc}") from None

    def to_dict(self) -> dict:
        """All keys, defaults included, in documentation order, ready for json.dump. A config
        declaring format_version 1 leaves out the version-2 keys (which are then at their defaults)."""
        keys = _KEY_ORDER if self.format_version >= 2 else [k for k in _KEY_ORDER if k not in _V2_KEYS]
        return {key: getattr(self, key) for key in keys}

    # -- derived sizes -----------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        """Width of one attention head: head_size when set, else d_model / num_heads."""
        return self.d_model // self.num_heads if self.head_size is None else self.head_size

    @property
    def attention_dim(self) -> int:
        """Width of the concatenated heads (q/k/v projection outputs): num_heads x head_dim."""
        return self.num_heads * self.head_dim

    @property
    def position_rows(self) -> int:
        """Rows of a position table: positions p in [0, max_positions) use row p + offset."""
        return self.max_positions + self.position_offset

    def num_parameters(self) -> int:
        """Number of stored weights (sum of the sizes of expected_tensors)."""
        return sum(math.prod(shape) for shape in expected_tensors(self).values())


# keys of a Hugging Face config.json: with one of them and no "model_type", the error says so
_HF_HINT_KEYS = frozenset({"architectures", "transformers_version", "decoder_start_token_id"})

_REQUIRED = ("format", "format_version", "d_model", "num_heads", "encoder_layers",
             "decoder_layers", "ffn_dim", "src_vocab_size", "tgt_vocab_size", "eos_id",
             "decoder_start_id")
_KEY_ORDER = ("format", "format_version", "d_model", "num_heads", "encoder_layers",
              "decoder_layers", "ffn_dim", "src_vocab_size", "tgt_vocab_size",
              "shared_embeddings", "activation", "ffn_gated", "norm_type", "norm_placement",
              "encoder_final_norm", "decoder_final_norm", "embedding_norm", "layer_norm_eps",
              "positional_encoding", "sinusoidal_layout", "position_offset", "max_positions",
              "scale_embeddings", "tie_output", "output_bias", "attention_bias", "ffn_bias",
              "pad_id", "bos_id", "eos_id", "decoder_start_id", "head_size", "scale_attention",
              "output_scale", "relative_attention_num_buckets", "relative_attention_max_distance")
_FIELD_DEFAULTS = {f.name: f.default for f in fields(ModelConfig)}
assert set(_KEY_ORDER) == {f.name for f in fields(ModelConfig)}


def expected_tensors(config: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor name the config implies, with its shape, in a stable order."""
    d, f = config.d_model, config.ffn_dim
    a = config.attention_dim
    out: Dict[str, Tuple[int, ...]] = {}

    def norm(prefix: str) -> None:
        out[f"{prefix}.weight"] = (d,)
        if config.norm_type == "layer_norm":  # RMSNorm has no bias
            out[f"{prefix}.bias"] = (d,)

    def linear(prefix: str, rows: int, cols: int, bias: bool) -> None:
        out[f"{prefix}.weight"] = (rows, cols)  # [out, in], as in PyTorch
        if bias:
            out[f"{prefix}.bias"] = (rows,)

    def attention(prefix: str) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            linear(f"{prefix}.{proj}", a, d, config.attention_bias)
        linear(f"{prefix}.out_proj", d, a, config.attention_bias)

    def ffn(prefix: str) -> None:
        linear(f"{prefix}.fc1", f, d, config.ffn_bias)
        if config.ffn_gated:  # the un-activated branch: fc2(act(fc1 x) * fc1_linear x)
            linear(f"{prefix}.fc1_linear", f, d, config.ffn_bias)
        linear(f"{prefix}.fc2", d, f, config.ffn_bias)

    out["src_embedding.weight"] = (config.src_vocab_size, d)
    if not config.shared_embeddings:
        out["tgt_embedding.weight"] = (config.tgt_vocab_size, d)
    for side in ("encoder", "decoder"):
        if config.positional_encoding == "learned":
            out[f"{side}.positions.weight"] = (config.position_rows, d)
        elif config.positional_encoding == "relative":  # one bias per (bucket, head), T5
            out[f"{side}.relative_attention_bias.weight"] = (config.relative_attention_num_buckets,
                                                            config.num_heads)
        if config.embedding_norm:
            norm(f"{side}.embedding_norm")

    for i in range(config.encoder_layers):
        layer = f"encoder.layers.{i}"
        attention(f"{layer}.self_attn")
        norm(f"{layer}.self_attn_norm")
        ffn(f"{layer}.ffn")
        norm(f"{layer}.ffn_norm")
    if config.encoder_final_norm:
        norm("encoder.final_norm")

    for i in range(config.decoder_layers):
        layer = f"decoder.layers.{i}"
        attention(f"{layer}.self_attn")
        norm(f"{layer}.self_attn_norm")
        attention(f"{layer}.cross_attn")
        norm(f"{layer}.cross_attn_norm")
        ffn(f"{layer}.ffn")
        norm(f"{layer}.ffn_norm")
    if config.decoder_final_norm:
        norm("decoder.final_norm")

    if not config.tie_output:
        out["output.weight"] = (config.tgt_vocab_size, d)
    if config.output_bias:
        out["output.bias"] = (config.tgt_vocab_size,)
    return out
