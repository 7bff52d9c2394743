"""thread_pool.py - the GEMM worker team against OpenMP, side by side in one process.

    python benchmarks/thread_pool.py [--threads 2] [--batch 1] [--pairs 10] [--encoder] [--busy]

Alternates greedy calls (64 new tokens, EOS suppressed; or encoder calls with --encoder) with the
team on and off (pytransformer._kernels.set_thread_pool) on a seeded opus-mt-size model, and prints
both medians, the median per-pair ratio, the share of CPU the hypervisor stole meanwhile and the
team's counters. --busy runs one CPU-bound process beside it (a machine shared with other work).
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import pytransformer
from pytransformer import _kernels as K

from common import cpu_ticks, machine_line, steal_share
from models import build


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--encoder", action="store_true", help="time encoder calls instead of greedy decoding")
    ap.add_argument("--busy", action="store_true", help="run a CPU-bound process beside the timings")
    ap.add_argument("--model", default=None, help="model dir (default: a seeded opus-mt-size model in /tmp)")
    args = ap.parse_args(argv)
    pytransformer.set_num_threads(args.threads)
    model = pytransformer.load(args.model or build(tempfile.gettempdir() + "/pytransformer-opus-mt-size"))
    rng = np.random.default_rng(0)
    src = [rng.integers(1, model.config.src_vocab_size - 1, size=32) for _ in range(args.batch)]
    if args.encoder:
        def call():
            model.encode(src)
    else:
        def call():
            model.generate(src, 64, min_new_tokens=64)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        call()
        times = {True: [], False: []}
        ratios = []
        ticks = cpu_ticks()
        for i in range(args.pairs):
            pair = {}
            for on in ((True, False) if i % 2 == 0 else (False, True)):
                K.set_thread_pool(on)
                call()                                   # each mode's caches and threads warm
                t0 = time.perf_counter()
                call()
                pair[on] = time.perf_counter() - t0
                times[on].append(pair[on])
            ratios.append(pair[False] / pair[True])
        stolen = steal_share(ticks, cpu_ticks())
    finally:
        K.set_thread_pool(True)
        if hog is not None:
            hog.kill()
            hog.wait()
    what = "encoder" if args.encoder else "greedy 64 tokens"
    print(f"Machine: {machine_line(args.threads)}")
    print(f"{what}, batch {args.batch}, {args.threads} threads, {args.pairs} pairs"
          f"{', one CPU-bound process beside it' if args.busy else ''}")
    for on, name in ((True, "worker team"), (False, "OpenMP")):
        print(f"  {name:<12} median {statistics.median(times[on]) * 1e3:8.1f} ms  min {min(times[on]) * 1e3:8.1f} ms")
    print(f"  OpenMP / team, median of pairs: {statistics.median(ratios):.3f}")
    if stolen is not None:
        print(f"  CPU stolen by the hypervisor meanwhile: {100 * stolen:.1f}%")
    print(f"  team: {K.thread_pool_stats()}")


if __name__ == "__main__":
    main()
