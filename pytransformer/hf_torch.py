"""pytransformer.hf_torch - compare a Hugging Face directory with transformers (for `pytransformer
verify` and the tests). The one-time conversion of a pytorch_model.bin is export.convert_pytorch_checkpoint.

Kept out of hf.py so that nothing a load goes through imports torch.
"""
from __future__ import annotations

import os

import numpy as np

from .hf import load_hf


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
