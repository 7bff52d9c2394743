"""models.py - seeded random models for benchmarks, built with NumPy alone (no hub, no torch).

OPUS_MT_EN_DE is the shape of the Marian opus-mt-en-de model (d_model 512, 8 heads, 6+6 layers,
FFN 2048, vocab 58101) in pytransformer's own format.
"""
import os

import numpy as np

import pytransformer
from pytransformer.config import ModelConfig, expected_tensors

OPUS_MT_EN_DE = dict(
    format="pytransformer", format_version=1, d_model=512, num_heads=8, encoder_layers=6,
    decoder_layers=6, ffn_dim=2048, src_vocab_size=58101, tgt_vocab_size=58101,
    shared_embeddings=True, activation="silu", norm_placement="post",
    positional_encoding="sinusoidal", sinusoidal_layout="halves", max_positions=512,
    scale_embeddings=True, tie_output=True, output_bias=True,
    pad_id=58100, eos_id=0, decoder_start_id=58100)


def random_tensors(config, seed=0):
    """Weights with the scales of a trained model's (so activations stay O(1)), from one seeded generator."""
    cfg = ModelConfig.from_dict(config)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_tensors(cfg).items():
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            t = 0.02 * rng.standard_normal(shape, dtype=np.float32)
        elif "embedding" in name or "positions" in name:
            t = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])
        else:
            t = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])
        tensors[name] = t.astype(np.float32)
    return tensors


def build(path, config=OPUS_MT_EN_DE, seed=0):
    """Write the seeded model to `path` once (reused across runs) and return the path."""
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        pytransformer.save(path, config, random_tensors(config, seed))
    return path
