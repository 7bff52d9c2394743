"""torch_reference.py - a PyTorch oracle for pytransformer models, built from torch.nn's own layers.

The engine is tested against this module, so it deliberately reuses PyTorch's implementation
(nn.TransformerEncoderLayer / nn.TransformerDecoderLayer inside nn.TransformerEncoder /
nn.TransformerDecoder, nn.Embedding, nn.LayerNorm, nn.Linear) rather than re-deriving the maths:
a mistake shared by the engine and a hand-written reference would go unnoticed.
torch is an optional dependency of pytransformer: only this module and export.py import it.

A model is described by a config dict with the keys of FORMAT.md (config.json). Supported here:
activation relu/gelu/gelu_tanh/silu; norm_placement post/pre; encoder/decoder final norms;
embedding_norm; positional_encoding sinusoidal (interleaved or halves) / learned / none, with
position_offset; scale_embeddings; shared_embeddings; tie_output; output_bias; layer_norm_eps.
Not supported (NotImplementedError): norm_type rms_norm, ffn_gated, and attention_bias != ffn_bias
(torch.nn's transformer layers have one `bias` flag for attention, FFN and norm biases alike).
When both bias flags are false the layer norms inside the layers have no bias either; the
exporter writes zeros for them, which is the same function.

Conventions (the engine must match them):
- Source ids are taken as given (the caller adds bos/eos if the model wants them). Padding is
  given by `src_lengths`: positions >= length are masked in every attention that reads the
  source (encoder self-attention keys, decoder cross-attention keys). Their encoder outputs are
  set to zero after the encoder, so they cannot leak into anything (a masked key contributes
  weight 0, and 0 * finite = 0). Every length must be >= 1.
- Sinusoidal tables (computed in float64, rounded once to float32), row r = position + offset:
    interleaved: pe[r, 2i] = sin(r / 10000^(2i/d)), pe[r, 2i+1] = cos(r / 10000^(2i/d))
    halves:      pe[r, i]  = sin(r / 10000^(2i/d)), pe[r, d/2 + i] = cos(r / 10000^(2i/d))
  (as csrc/pt_embedding.h; "halves" is Marian's table. fairseq/M2M100 use 10000^(i/(d/2-1)).)
- Input to layer 0 = embedding(ids) * (sqrt(d_model) if scale_embeddings else 1) + position
  row, then embedding_norm if set.
- greedy(): the returned tokens EXCLUDE the decoder start token and INCLUDE the eos token when
  one was generated (it is then the last token). A sequence that never produces eos has exactly
  max_new_tokens tokens. While fewer than min_new_tokens tokens have been generated the eos
  logit is set to -inf. Ties in argmax go to the lowest token id (torch.argmax's rule).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

FORMAT_NAME = "pytransformer"
FORMAT_VERSION = 1

# Every config key with its default (None = required). Mirrors FORMAT.md.
CONFIG_DEFAULTS = {
    "format": None,
    "format_version": None,
    "d_model": None,
    "num_heads": None,
    "encoder_layers": None,
    "decoder_layers": None,
    "ffn_dim": None,
    "src_vocab_size": None,
    "tgt_vocab_size": None,
    "shared_embeddings": False,
    "activation": "relu",
    "ffn_gated": False,
    "norm_type": "layer_norm",
    "norm_placement": "post",
    "encoder_final_norm": False,
    "decoder_final_norm": False,
    "embedding_norm": False,
    "layer_norm_eps": 1e-5,
    "positional_encoding": "sinusoidal",
    "sinusoidal_layout": "interleaved",
    "position_offset": 0,
    "max_positions": 1024,
    "scale_embeddings": True,
    "tie_output": True,
    "output_bias": False,
    "attention_bias": True,
    "ffn_bias": True,
    "pad_id": 0,
    "bos_id": None,
    "eos_id": None,
    "decoder_start_id": None,
}
_OPTIONAL_NONE = {"bos_id"}  # keys whose default really is None (not "required")


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


# Strings go to torch as strings so its fused fast path stays available for relu/gelu.
_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": _gelu_tanh, "silu": F.silu}


def normalize_config(config):
    """Return a complete config dict (defaults filled in) after checking it; raise on problems.

    The format/format_version keys may be omitted and are then filled in, so tests can write
    short configs. Raises ValueError for invalid values and NotImplementedError for valid
    features this reference cannot express with torch.nn layers.
    """
    unknown = sorted(set(config) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config keys: {unknown}")
    cfg = dict(CONFIG_DEFAULTS)
    cfg["format"] = FORMAT_NAME
    cfg["format_version"] = FORMAT_VERSION
    cfg.update(config)
    missing = [k for k, v in cfg.items() if v is None and k not in _OPTIONAL_NONE]
    if missing:
        raise ValueError(f"missing required config keys: {missing}")
    if cfg["format"] != FORMAT_NAME or cfg["format_version"] != FORMAT_VERSION:
        raise ValueError(f"expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, got "
                         f"{cfg['format']!r} version {cfg['format_version']!r}")
    for key in ("d_model", "num_heads", "encoder_layers", "decoder_layers", "ffn_dim",
                "src_vocab_size", "tgt_vocab_size", "max_positions"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] <= 0:
            raise ValueError(f"config {key} must be a positive int, got {cfg[key]!r}")
    if cfg["d_model"] % cfg["num_heads"]:
        raise ValueError(f"num_heads {cfg['num_heads']} does not divide d_model {cfg['d_model']}")
    if not isinstance(cfg["position_offset"], int) or cfg["position_offset"] < 0:
        raise ValueError(f"position_offset must be an int >= 0, got {cfg['position_offset']!r}")
    if not cfg["layer_norm_eps"] > 0:
        raise ValueError(f"layer_norm_eps must be > 0, got {cfg['layer_norm_eps']!r}")
    choices = {"activation": ("relu", "gelu", "gelu_tanh", "silu"),
               "norm_type": ("layer_norm", "rms_norm"),
               "norm_placement": ("post", "pre"),
               "positional_encoding": ("sinusoidal", "learned", "none"),
               "sinusoidal_layout": ("interleaved", "halves")}
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ValueError(f"config {key} must be one of {allowed}, got {cfg[key]!r}")
    if cfg["shared_embeddings"] and cfg["src_vocab_size"] != cfg["tgt_vocab_size"]:
        raise ValueError("shared_embeddings needs src_vocab_size == tgt_vocab_size, got "
                         f"{cfg['src_vocab_size']} and {cfg['tgt_vocab_size']}")
    if cfg["positional_encoding"] == "sinusoidal" and cfg["d_model"] % 2:
        raise ValueError(f"sinusoidal positions need an even d_model, got {cfg['d_model']}")
    # pad_id appears in source batches and in finished target rows, so it must fit both.
    id_limits = {"pad_id": min(cfg["src_vocab_size"], cfg["tgt_vocab_size"]),
                 "bos_id": max(cfg["src_vocab_size"], cfg["tgt_vocab_size"]),
                 "eos_id": cfg["tgt_vocab_size"], "decoder_start_id": cfg["tgt_vocab_size"]}
    for key, limit in id_limits.items():
        value = cfg[key]
        if value is None and key in _OPTIONAL_NONE:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
            raise ValueError(f"config {key} = {value!r} is out of range [0, {limit})")
    if cfg["norm_type"] != "layer_norm":
        raise NotImplementedError("the torch reference only supports norm_type 'layer_norm'")
    if cfg["ffn_gated"]:
        raise NotImplementedError("the torch reference does not support ffn_gated")
    if cfg["attention_bias"] != cfg["ffn_bias"]:
        raise NotImplementedError("torch.nn transformer layers have one bias flag: the reference "
                                  "needs attention_bias == ffn_bias")
    return cfg


def sinusoidal_table(rows, d_model, layout):
    """Sinusoidal position table [rows, d_model], computed in float64 and rounded once."""
    position = torch.arange(rows, dtype=torch.float64)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float64)[None, :]
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2.0 * i / d_model)
    table = torch.empty(rows, d_model, dtype=torch.float64)
    if layout == "interleaved":
        table[:, 0::2] = torch.sin(angle)
        table[:, 1::2] = torch.cos(angle)
    elif layout == "halves":
        table[:, : d_model // 2] = torch.sin(angle)
        table[:, d_model // 2:] = torch.cos(angle)
    else:
        raise ValueError(f"unknown sinusoidal layout {layout!r}")
    return table.to(torch.float32)


class _Positions(nn.Module):
    """Adds position rows (row = position + offset) to a [B, T, d] input."""

    def __init__(self, cfg):
        super().__init__()
        self.kind = cfg["positional_encoding"]
        self.offset = cfg["position_offset"]
        rows = cfg["max_positions"] + self.offset
        if self.kind == "learned":
            self.weight = nn.Parameter(torch.zeros(rows, cfg["d_model"]))
        elif self.kind == "sinusoidal":
            # Not persistent: it is a function of the config, so it is not exported or saved.
            self.register_buffer("table", sinusoidal_table(rows, cfg["d_model"],
                                                           cfg["sinusoidal_layout"]),
                                 persistent=False)

    def forward(self, x):
        if self.kind == "none":
            return x
        rows = torch.arange(x.shape[1]) + self.offset
        table = self.weight if self.kind == "learned" else self.table
        return x + table[rows][None, :, :]


class ReferenceTransformer(nn.Module):
    """Encoder-decoder Transformer described by a FORMAT.md config, made of torch.nn layers.

    Submodule names (the exporter relies on them): src_embedding, tgt_embedding (the same module
    as src_embedding when shared), encoder_positions, decoder_positions, encoder_embedding_norm,
    decoder_embedding_norm (only when embedding_norm), encoder (nn.TransformerEncoder; .norm is
    the final norm or None), decoder (nn.TransformerDecoder), output (nn.Linear; its weight is
    tgt_embedding.weight when tie_output).
    """

    def __init__(self, config):
        super().__init__()
        cfg = normalize_config(config)
        self.config = cfg
        d = cfg["d_model"]
        eps = cfg["layer_norm_eps"]
        bias = cfg["attention_bias"]
        self.embed_scale = math.sqrt(d) if cfg["scale_embeddings"] else 1.0

        self.src_embedding = nn.Embedding(cfg["src_vocab_size"], d)
        if cfg["shared_embeddings"]:
            self.tgt_embedding = self.src_embedding
        else:
            self.tgt_embedding = nn.Embedding(cfg["tgt_vocab_size"], d)
        self.encoder_positions = _Positions(cfg)
        self.decoder_positions = _Positions(cfg)
        if cfg["embedding_norm"]:
            self.encoder_embedding_norm = nn.LayerNorm(d, eps=eps)
            self.decoder_embedding_norm = nn.LayerNorm(d, eps=eps)
        else:
            self.encoder_embedding_norm = None
            self.decoder_embedding_norm = None

        layer_args = dict(d_model=d, nhead=cfg["num_heads"], dim_feedforward=cfg["ffn_dim"],
                          dropout=0.0, activation=_ACTIVATIONS[cfg["activation"]],
                          layer_norm_eps=eps, batch_first=True,
                          norm_first=cfg["norm_placement"] == "pre", bias=bias)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_args), num_layers=cfg["encoder_layers"],
            norm=nn.LayerNorm(d, eps=eps) if cfg["encoder_final_norm"] else None,
            enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer_args), num_layers=cfg["decoder_layers"],
            norm=nn.LayerNorm(d, eps=eps) if cfg["decoder_final_norm"] else None)

        self.output = nn.Linear(d, cfg["tgt_vocab_size"], bias=cfg["output_bias"])
        if cfg["tie_output"]:
            self.output.weight = self.tgt_embedding.weight
        self.train(False)   # inference mode: no dropout

    # ---- inputs

    def _check_ids(self, ids, vocab, what):
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{what} must be a [batch, length] integer tensor, got "
                             f"{tuple(ids.shape)} {ids.dtype}")
        if ids.shape[1] > self.config["max_positions"]:
            raise ValueError(f"{what} length {ids.shape[1]} exceeds max_positions "
                             f"{self.config['max_positions']}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"{what} has ids outside [0, {vocab})")

    def _source_padding(self, src_ids, src_lengths):
        """Bool [B, S] mask, True at padded source positions."""
        lengths = torch.as_tensor(src_lengths, dtype=torch.int64)
        batch, length = src_ids.shape
        if lengths.shape != (batch,):
            raise ValueError(f"src_lengths has shape {tuple(lengths.shape)}, expected ({batch},)")
        if int(lengths.min()) < 1 or int(lengths.max()) > length:
            raise ValueError(f"src_lengths must be in [1, {length}], got {lengths.tolist()}")
        return torch.arange(length)[None, :] >= lengths[:, None]

    # ---- model

    def encode(self, src_ids, src_lengths):
        """Encoder output [B, S, d] (rows at padded positions are zero) and the padding mask."""
        self._check_ids(src_ids, self.config["src_vocab_size"], "src_ids")
        padding = self._source_padding(src_ids, src_lengths)
        x = self.src_embedding(src_ids.long()) * self.embed_scale
        x = self.encoder_positions(x)
        if self.encoder_embedding_norm is not None:
            x = self.encoder_embedding_norm(x)
        memory = self.encoder(x, src_key_padding_mask=padding)
        return memory.masked_fill(padding[:, :, None], 0.0), padding

    def decode(self, memory, padding, tgt_ids):
        """Logits [B, T, V_t] for every target position given the encoder output (uncached)."""
        self._check_ids(tgt_ids, self.config["tgt_vocab_size"], "tgt_ids")
        length = tgt_ids.shape[1]
        y = self.tgt_embedding(tgt_ids.long()) * self.embed_scale
        y = self.decoder_positions(y)
        if self.decoder_embedding_norm is not None:
            y = self.decoder_embedding_norm(y)
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)  # True = may not attend
        y = self.decoder(y, memory, tgt_mask=causal, memory_key_padding_mask=padding,
                         tgt_is_causal=True)
        return self.output(y)

    def forward(self, src_ids, src_lengths, tgt_ids):
        """Teacher-forced logits [B, T, V_t]; tgt_ids[:, 0] is normally decoder_start_id."""
        memory, padding = self.encode(src_ids, src_lengths)
        return self.decode(memory, padding, tgt_ids)

    @torch.no_grad()
    def greedy(self, src_ids, src_lengths, max_new_tokens, min_new_tokens=0):
        """Greedy decoding, re-running the decoder on the whole prefix at each step.

        Returns a list of 1-D int64 tensors, one per sequence: the generated tokens without the
        decoder start token, ending with eos if eos was generated (see the module docstring).
        """
        if max_new_tokens < 0 or min_new_tokens < 0:
            raise ValueError("max_new_tokens and min_new_tokens must be >= 0")
        if max_new_tokens > self.config["max_positions"]:
            raise ValueError(f"max_new_tokens {max_new_tokens} exceeds max_positions "
                             f"{self.config['max_positions']}")
        eos = self.config["eos_id"]
        memory, padding = self.encode(src_ids, src_lengths)
        batch = src_ids.shape[0]
        prefix = torch.full((batch, 1), self.config["decoder_start_id"], dtype=torch.int64)
        finished = torch.zeros(batch, dtype=torch.bool)
        for step in range(max_new_tokens):
            logits = self.decode(memory, padding, prefix)[:, -1, :]
            if step < min_new_tokens:
                logits[:, eos] = float("-inf")
            token = logits.argmax(dim=-1)
            # Finished rows keep decoding (their tokens are discarded) so the batch stays square.
            token = token.masked_fill(finished, self.config["pad_id"])
            prefix = torch.cat([prefix, token[:, None]], dim=1)
            finished |= token == eos
            if bool(finished.all()):
                break
        results = []
        for row in prefix[:, 1:]:
            hits = (row == eos).nonzero()
            end = int(hits[0]) + 1 if len(hits) else len(row)
            results.append(row[:end].clone())
        return results


# ---- construction helpers

def init_seeded(config, seed):
    """A ReferenceTransformer with deterministic random weights from `seed`.

    Scales keep activations O(1) and logits of about unit spread:
      linear weights          N(0, 1/fan_in), except
        attention q/k rows    N(0, 2.25/fan_in): sharper attention, so outputs depend on the
                              input instead of averaging it away (much sharper makes float32
                              ill-conditioned: ~1e-4 from float64 at 3x)
        attention out_proj    N(0, 4/fan_in): sublayers outweigh the residual token embedding,
                              which otherwise makes tied models repeat their input token
      biases                  N(0, 0.05^2)
      norm weights / biases   N(1, 0.1^2) / N(0, 0.05^2)
      token embeddings        N(0, 1/d): unit scale after sqrt(d) scaling; tied logits ~ unit
      learned positions       N(0, 0.3^2)
    Parameters are drawn from one torch.Generator in module registration order, each shared
    parameter once, so the weights depend only on (config, seed).
    """
    model = ReferenceTransformer(config)
    cfg = model.config
    d = cfg["d_model"]
    generator = torch.Generator().manual_seed(int(seed))
    seen = set()

    def fill(param, mean, std):
        if param is None or id(param) in seen:
            return
        seen.add(id(param))
        values = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std + mean
        with torch.no_grad():
            param.copy_(values)

    embedding_std = 1.0 / math.sqrt(d)
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            fill(module.weight, 0.0, embedding_std)
        elif isinstance(module, _Positions) and module.kind == "learned":
            fill(module.weight, 0.0, 0.3)
        elif isinstance(module, nn.LayerNorm):
            fill(module.weight, 1.0, 0.1)
            fill(module.bias, 0.0, 0.05)
        elif isinstance(module, nn.MultiheadAttention):
            width = module.embed_dim
            fill(module.in_proj_weight, 0.0, 1.0 / math.sqrt(width))
            with torch.no_grad():
                module.in_proj_weight[: 2 * width] *= 1.5
            fill(module.in_proj_bias, 0.0, 0.05)
            fill(module.out_proj.weight, 0.0, 2.0 / math.sqrt(width))
            fill(module.out_proj.bias, 0.0, 0.05)
        elif isinstance(module, nn.Linear):
            fill(module.weight, 0.0, 1.0 / math.sqrt(module.in_features))
            fill(module.bias, 0.0, 0.05)
    leftover = [name for name, p in model.named_parameters() if id(p) not in seen]
    if leftover:
        raise AssertionError(f"init_seeded left parameters unset: {leftover}")
    return model


def save_checkpoint(module, path):
    """Save {"config": dict, "state_dict": ...} with torch.save."""
    torch.save({"config": dict(module.config), "state_dict": module.state_dict()}, path)


def from_model_dir(path):
    """A ReferenceTransformer holding the weights of a pytransformer model directory.

    The inverse of export.to_tensors: FORMAT.md names are mapped back onto the torch.nn modules
    (q/k/v projections are stacked into in_proj). Used by `pytransformer verify` and the parity
    tests of shipped models.
    """
    import numpy as np
    from .weights import load_weights

    config, tensors = load_weights(path)
    cfg = config.to_dict()
    module = ReferenceTransformer(cfg)
    cfg = module.config
    with_bias = cfg["attention_bias"]

    def t(name):
        return torch.from_numpy(np.array(tensors[name], dtype=np.float32))

    def copy(param, name):
        with torch.no_grad():
            param.copy_(t(name))

    def norm(mod, prefix):
        copy(mod.weight, prefix + ".weight")
        if mod.bias is not None:
            copy(mod.bias, prefix + ".bias")
        elif bool(np.any(tensors[prefix + ".bias"] != 0)):
            raise NotImplementedError(f"{path}: {prefix}.bias is not zero, but torch.nn layers without "
                                      "biases have bias-free layer norms")

    def attention(attn, prefix):
        with torch.no_grad():
            attn.in_proj_weight.copy_(torch.cat([t(f"{prefix}.{n}_proj.weight") for n in "qkv"]))
            if with_bias:
                attn.in_proj_bias.copy_(torch.cat([t(f"{prefix}.{n}_proj.bias") for n in "qkv"]))
        copy(attn.out_proj.weight, prefix + ".out_proj.weight")
        if with_bias:
            copy(attn.out_proj.bias, prefix + ".out_proj.bias")

    copy(module.src_embedding.weight, "src_embedding.weight")
    if not cfg["shared_embeddings"]:
        copy(module.tgt_embedding.weight, "tgt_embedding.weight")
    if not cfg["tie_output"]:
        copy(module.output.weight, "output.weight")
    if cfg["output_bias"]:
        copy(module.output.bias, "output.bias")
    for side in ("encoder", "decoder"):
        if cfg["positional_encoding"] == "learned":
            copy(getattr(module, f"{side}_positions").weight, f"{side}.positions.weight")
        if cfg["embedding_norm"]:
            norm(getattr(module, f"{side}_embedding_norm"), f"{side}.embedding_norm")
        stack = getattr(module, side)
        if cfg[f"{side}_final_norm"]:
            norm(stack.norm, f"{side}.final_norm")
        for i, layer in enumerate(stack.layers):
            prefix = f"{side}.layers.{i}"
            attention(layer.self_attn, prefix + ".self_attn")
            norm(layer.norm1, prefix + ".self_attn_norm")
            if side == "decoder":
                attention(layer.multihead_attn, prefix + ".cross_attn")
                norm(layer.norm2, prefix + ".cross_attn_norm")
                norm(layer.norm3, prefix + ".ffn_norm")
            else:
                norm(layer.norm2, prefix + ".ffn_norm")
            copy(layer.linear1.weight, prefix + ".ffn.fc1.weight")
            copy(layer.linear2.weight, prefix + ".ffn.fc2.weight")
            if cfg["ffn_bias"]:
                copy(layer.linear1.bias, prefix + ".ffn.fc1.bias")
                copy(layer.linear2.bias, prefix + ".ffn.fc2.bias")
    module.train(False)
    return module
