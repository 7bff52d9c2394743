"""pytransformer.hf_torch - the torch side of Hugging Face support: convert a pytorch_model.bin once,
and compare a directory with transformers (for `pytransformer export` / `verify` and the tests).

Kept out of hf.py so that nothing a load goes through imports torch or unpickles anything.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from .errors import WeightsError
from .hf import (PYTORCH_FILE, PYTORCH_INDEX, SAFETENSORS_FILE, _pytorch_only_message, _read_json,
                 load_hf)
from .safetensors import write_safetensors


def convert_pytorch_checkpoint(path, out_dir=None) -> str:
    """Write model.safetensors (float32 kept as stored) from the directory's pytorch_model.bin
    (or its sharded index); needs torch. Tensors are read with torch.load(weights_only=True), which
    refuses arbitrary pickled objects. Returns the path written."""
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


def compare_with_transformers(path, sources, max_new_tokens=20, tgt_len=8, seed=0):
    """Run the directory through pytransformer and transformers on the same token ids and return
    {"max_logit_diff": float, "greedy_mismatches": [index, ...]}. Needs torch and transformers."""
    import torch
    from transformers import AutoModelForSeq2SeqLM
    model = load_hf(path)
    ref = AutoModelForSeq2SeqLM.from_pretrained(os.fspath(path), dtype=torch.float32)
    ref.train(False)
    cfg = model.config
    srcs = [np.asarray(s, dtype=np.int64) for s in sources]
    lens = np.array([len(s) for s in srcs])
    ids = np.full((len(srcs), lens.max()), cfg.pad_id, dtype=np.int64)
    for i, s in enumerate(srcs):
        ids[i, :len(s)] = s
    mask = (np.arange(ids.shape[1])[None, :] < lens[:, None]).astype(np.int64)
    rng = np.random.default_rng(seed)
    tgt = rng.integers(0, cfg.tgt_vocab_size, size=(len(srcs), tgt_len))
    tgt[:, 0] = cfg.decoder_start_id
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                   decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
        gen = ref.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           max_new_tokens=max_new_tokens, num_beams=1, do_sample=False).numpy()
    got = model.forward(srcs, tgt)
    ours = model.generate(srcs, max_new_tokens)
    mismatches = []
    for i, seq in enumerate(ours):
        theirs = strip_generated(gen[i, 1:], cfg.eos_id, cfg.pad_id)
        if list(theirs) != list(seq):
            mismatches.append(i)
    return {"max_logit_diff": float(np.abs(got - want).max()), "greedy_mismatches": mismatches}


def strip_generated(row, eos, pad):
    """transformers' generate output after the decoder start: up to and including the first
    EOS (later positions are padding of a finished sequence)."""
    row = list(int(t) for t in row)
    if eos in row:
        return row[:row.index(eos) + 1]
    return row
