"""export.py - writes a torch ReferenceTransformer or its checkpoint as a model directory.

The name mapping from torch.nn's transformer layers to FORMAT.md lives here and only here:
  src_embedding / tgt_embedding / output            -> same names (absent when shared / tied)
  {encoder,decoder}_positions.weight (learned)      -> {encoder,decoder}.positions.weight
  {encoder,decoder}_embedding_norm                  -> {encoder,decoder}.embedding_norm
  encoder.layers.i.self_attn.in_proj_{weight,bias}  -> ...self_attn.{q,k,v}_proj.{weight,bias}
  decoder.layers.i.multihead_attn                   -> decoder.layers.i.cross_attn
  linear1 / linear2                                 -> ffn.fc1 / ffn.fc2
  encoder layer norm1 / norm2                       -> self_attn_norm / ffn_norm
  decoder layer norm1 / norm2 / norm3               -> self_attn_norm / cross_attn_norm / ffn_norm
  encoder.norm / decoder.norm                       -> encoder.final_norm / decoder.final_norm
torch.nn's layers have one bias flag, so with biases off their layer norms have no bias; FORMAT.md
always stores a layer_norm bias, so a zero vector is written (the same function).
It also converts a Hugging Face directory that holds only pytorch_model.bin (convert_pytorch_checkpoint):
everything that unpickles (torch.load, weights_only=True) is here, on the export path, never on a load.
torch is imported inside the functions: `import pytransformer.export` works without it.
"""
import argparse
import os
import sys
from typing import Dict

import numpy as np


def _array(tensor):
    """A float32 C-contiguous NumPy copy of a torch tensor (never a view into torch memory)."""
    return np.array(tensor.detach().cpu().float().numpy(), dtype=np.float32, order="C", copy=True)


def _linear(out, prefix, weight, bias, with_bias):
    out[prefix + ".weight"] = _array(weight)
    if with_bias:
        out[prefix + ".bias"] = _array(bias)


def _norm(out, prefix, norm):
    out[prefix + ".weight"] = _array(norm.weight)
    if norm.bias is not None:
        out[prefix + ".bias"] = _array(norm.bias)
    else:
        out[prefix + ".bias"] = np.zeros(norm.weight.shape, dtype=np.float32)


def _attention(out, prefix, attn, with_bias):
    """Split nn.MultiheadAttention's packed in_proj (rows: q, k, v) into q/k/v projections."""
    if not attn._qkv_same_embed_dim:
        raise NotImplementedError(f"{prefix}: separate q/k/v projection weights are not supported")
    d = attn.embed_dim
    for index, name in enumerate(("q", "k", "v")):
        rows = slice(index * d, (index + 1) * d)
        bias = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
        _linear(out, f"{prefix}.{name}_proj", attn.in_proj_weight[rows], bias, with_bias)
    _linear(out, f"{prefix}.out_proj", attn.out_proj.weight, attn.out_proj.bias, with_bias)


def to_tensors(module):
    """(config dict, {FORMAT.md name: float32 ndarray}) for a ReferenceTransformer."""
    cfg = dict(module.config)
    attention_bias, ffn_bias = cfg["attention_bias"], cfg["ffn_bias"]
    out = {}
    out["src_embedding.weight"] = _array(module.src_embedding.weight)
    if not cfg["shared_embeddings"]:
        out["tgt_embedding.weight"] = _array(module.tgt_embedding.weight)
    if not cfg["tie_output"]:
        out["output.weight"] = _array(module.output.weight)
    if cfg["output_bias"]:
        out["output.bias"] = _array(module.output.bias)

    for side in ("encoder", "decoder"):
        if cfg["positional_encoding"] == "learned":
            out[f"{side}.positions.weight"] = _array(getattr(module, f"{side}_positions").weight)
        if cfg["embedding_norm"]:
            _norm(out, f"{side}.embedding_norm", getattr(module, f"{side}_embedding_norm"))
        stack = getattr(module, side)
        if cfg[f"{side}_final_norm"]:
            _norm(out, f"{side}.final_norm", stack.norm)
        for i, layer in enumerate(stack.layers):
            prefix = f"{side}.layers.{i}"
            _attention(out, f"{prefix}.self_attn", layer.self_attn, attention_bias)
            _norm(out, f"{prefix}.self_attn_norm", layer.norm1)
            if side == "decoder":
                _attention(out, f"{prefix}.cross_attn", layer.multihead_attn, attention_bias)
                _norm(out, f"{prefix}.cross_attn_norm", layer.norm2)
                ffn_norm = layer.norm3
            else:
                ffn_norm = layer.norm2
            _linear(out, f"{prefix}.ffn.fc1", layer.linear1.weight, layer.linear1.bias, ffn_bias)
            _linear(out, f"{prefix}.ffn.fc2", layer.linear2.weight, layer.linear2.bias, ffn_bias)
            _norm(out, f"{prefix}.ffn_norm", ffn_norm)
    return cfg, out


def from_torch(module, path):
    """Write `module` (a ReferenceTransformer) as a model directory at `path`."""
    from . import weights

    config, tensors = to_tensors(module)
    return weights.save(path, config, tensors)


def load_checkpoint(path):
    """Load a checkpoint written by torch_reference.save_checkpoint (torch.load with weights_only=True,
    which refuses arbitrary pickled objects). Export time only: never on pytransformer's load path."""
    import torch
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # the unpickler raises many kinds of errors on a foreign file
        raise ValueError(f"{path}: cannot read as a torch checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict) or set(checkpoint) != {"config", "state_dict"}:
        raise ValueError(f"{path}: not a pytransformer reference checkpoint (expected a dict "
                         "with keys 'config' and 'state_dict')")
    from .torch_reference import ReferenceTransformer
    model = ReferenceTransformer(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    model.train(False)
    return model


def export_checkpoint(checkpoint_path, out_dir):
    """Convert a checkpoint written by torch_reference.save_checkpoint into a model directory."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("exporting a checkpoint needs PyTorch: pip install "
                           "'pytransformer[torch]'") from exc
    return from_torch(load_checkpoint(checkpoint_path), out_dir)


def main_export(argv=None):
    """`pytransformer export CHECKPOINT OUT_DIR`; returns a process exit status."""
    parser = argparse.ArgumentParser(
        prog="pytransformer export",
        description="Convert a PyTorch reference checkpoint ({'config', 'state_dict'}, saved by "
                    "pytransformer.torch_reference.save_checkpoint) into a pytransformer model "
                    "directory (config.json + model.safetensors).")
    parser.add_argument("checkpoint", help="path of the torch checkpoint file")
    parser.add_argument("out_dir", help="model directory to write (created if missing)")
    args = parser.parse_args(argv)
    try:
        export_checkpoint(args.checkpoint, args.out_dir)
    except (OSError, ValueError, RuntimeError, NotImplementedError) as exc:
        print(f"pytransformer export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out_dir}")
    return 0


# ---- Hugging Face directories that hold only pytorch_model.bin

def convert_pytorch_checkpoint(path, out_dir=None) -> str:
    """Write model.safetensors (float32 kept as stored) from the directory's pytorch_model.bin
    (or its sharded index), once, for `pytransformer export DIR`; needs torch. Tensors are read with
    torch.load(weights_only=True), which refuses arbitrary pickled objects. Returns the path written."""
    from .errors import WeightsError
    from .hf import PYTORCH_FILE, PYTORCH_INDEX, SAFETENSORS_FILE, _pytorch_only_message, _read_json
    from .safetensors import write_safetensors
    path = os.fspath(path)
    try:
        import torch
    except ImportError:
        raise ImportError(_pytorch_only_message(path)) from None
    index = os.path.join(path, PYTORCH_INDEX)
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map") or {}
        files = sorted(set(weight_map.values()))
    elif os.path.isfile(os.path.join(path, PYTORCH_FILE)):
        files = [PYTORCH_FILE]
    else:
        raise WeightsError(f"{path}: no {PYTORCH_FILE} to convert")
    tensors: Dict[str, np.ndarray] = {}
    for name in files:
        if os.path.basename(name) != name:
            raise WeightsError(f"{index}: shard name {name!r} is not a plain file name")
        state = torch.load(os.path.join(path, name), map_location="cpu", weights_only=True)
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            t = value.detach().contiguous()
            if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
                t = t.float()
            tensors[key] = t.numpy().copy()
    out_dir = os.fspath(out_dir) if out_dir is not None else path
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, SAFETENSORS_FILE)
    write_safetensors(out, tensors, metadata={"format": "pt"})
    return out
