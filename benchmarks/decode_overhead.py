"""decode_overhead.py - how much of one decode step is matrix work, at the opus-mt-en-de shape.

    python benchmarks/decode_overhead.py [--threads 2] [--batch 1] [--steps 64]

Times Model.decode_step over a 64-step greedy run, and, in the same process, the GEMM calls of one
step alone (same packed weights, same shapes), alternating the two. The ratio step / GEMMs is the
cost of everything else: attention, norms, cache writes, embeddings, and the Python in between.
"""
import argparse
import statistics
import tempfile
import time

import numpy as np

import pytransformer
from pytransformer import _kernels as K

from common import machine_line
from models import build


def gemms_of_one_step(model, batch):
    """Closures running exactly the GEMMs a decode step runs, on preallocated inputs."""
    d = model.config.d_model
    x = np.random.default_rng(0).standard_normal((batch, d), dtype=np.float32)
    h = np.random.default_rng(1).standard_normal((batch, model.config.ffn_dim), dtype=np.float32)
    calls = []
    for layer in model.decoder_layers:
        calls += [(layer.self_attn.qkv, x), (layer.self_attn.out, x), (layer.cross_attn.q, x),
                  (layer.cross_attn.out, x), (layer.ffn.fc1, x), (layer.ffn.fc2, h)]
    calls.append((model.output, x))
    outs = [np.empty((batch, lin.out_features), np.float32) for lin, _ in calls]

    def run():
        for (lin, inp), out in zip(calls, outs):
            K.gemm(inp, lin.packed, lin.bias, None, 0, out)
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--model", default=None, help="model dir (default: a seeded opus-mt-size model in /tmp)")
    args = ap.parse_args(argv)
    pytransformer.set_num_threads(args.threads)
    path = args.model or build(tempfile.gettempdir() + "/pytransformer-opus-mt-size")
    model = pytransformer.load(path)
    cfg = model.config
    rng = np.random.default_rng(0)
    src = [rng.integers(1, cfg.src_vocab_size - 1, size=32) for _ in range(args.batch)]
    gemms = gemms_of_one_step(model, args.batch)
    tokens = np.full(args.batch, cfg.decoder_start_id, dtype=np.int32)

    step_times, gemm_times = [], []
    for _ in range(args.reps):
        state = model.start_decoding(src, args.steps)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            logits = model.decode_step(state, tokens)
            tokens = logits.argmax(axis=1).astype(np.int32)
        step_times.append((time.perf_counter() - t0) / args.steps)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            gemms()
        gemm_times.append((time.perf_counter() - t0) / args.steps)
    step, gemm = statistics.median(step_times), statistics.median(gemm_times)
    print(f"Machine: {machine_line(args.threads)}")
    print(f"batch {args.batch}, {args.steps} steps, median of {args.reps} runs")
    print(f"decode step: {step * 1e3:.3f} ms; its GEMMs alone: {gemm * 1e3:.3f} ms; "
          f"ratio {step / gemm:.3f} (target <= 1.15)")
    return step / gemm


if __name__ == "__main__":
    main()
