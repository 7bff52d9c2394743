"""kernel_report.py - GEMM figures of the kernel issue, side by side with numpy (and torch), as a markdown table.

    python benchmarks/kernel_report.py [--threads 2] [--reps 15]

Reports GFLOP/s for 1024^3 and the decode shapes, the measured FMA peak and read bandwidth of
this machine in the same run, and the ratios the targets are stated in.
"""
import argparse
import sys

import numpy as np

import pytransformer
from pytransformer import _kernels as K

from common import alternate_timed, fma_peak, looped, machine_line, read_bandwidth, torch_gemm_or_none


def pytransformer_paths(fn):
    """One timed entry per ISA path of pytransformer's GEMM, each selecting its path first."""
    def on(isa):
        def run(inner):
            K.set_isa(isa)
            return looped(fn)(inner)
        return run
    return {f"pytransformer {isa}": on(isa) for isa in K.available_isas() if isa != "generic"} or \
        {"pytransformer generic": on("generic")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args(argv)
    nt = args.threads
    pytransformer.set_num_threads(nt)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(nt)
    except ImportError:
        import os
        if os.environ.get("OPENBLAS_NUM_THREADS") not in (None, str(nt)):
            print(f"warning: numpy's BLAS threads not limited to {nt}", file=sys.stderr)
    torch = torch_gemm_or_none(nt)
    rng = np.random.default_rng(0)

    peak = fma_peak(nt)
    peak512 = fma_peak(nt, lanes=16)
    bw = read_bandwidth(nt)
    print(f"Machine: {machine_line(nt)}")
    print(f"Measured FMA peak: AVX2 {peak or 0:.1f} GFLOP/s, AVX-512 {peak512 or 0:.1f} GFLOP/s; "
          f"sustained read bandwidth: {bw:.1f} GB/s; torch timed in a process of its own\n")

    rows = []
    # ---- square GEMM: C = A B with B packed once, as a model uses its weights
    default_isa = K.get_isa()
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    bp = K.pack(b)
    out = np.empty((1024, 1024), np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(K.gemm(a, bp) - want).max() < 1e-3 * np.abs(want).max()
    fns = {**pytransformer_paths(lambda: K.gemm(a, bp, out=out)),
           "numpy": looped(lambda: np.matmul(a, b, out=out))}
    if torch is not None:
        fns["torch"] = torch.timer(1024, 1024, 1024)
    t = alternate_timed(fns, args.reps, min_time=0.05)
    flops = 2 * 1024 ** 3
    rows.append(("1024 x 1024 x 1024", {k: flops / v / 1e9 for k, v in t.items()}, None))

    # ---- decode shapes, then a batch-16 x 32-token encoder's (q/k/v, attention out, FFN in, FFN
    # out): y = x W^T with W (N, K) as a Linear stores it
    for m, n, k in [(1, 2048, 512), (16, 2048, 512), (1, 58101, 512),
                    (512, 1536, 512), (512, 512, 512), (512, 2048, 512), (512, 512, 2048)]:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        wp = K.pack(w, transpose=True)
        y = np.empty((m, n), np.float32)
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        assert np.abs(K.gemm(x, wp) - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())
        fns = {**pytransformer_paths(lambda: K.gemm(x, wp, out=y)),
               "numpy": looped(lambda: np.matmul(x, w.T, out=y))}
        if torch is not None:
            fns["torch"] = torch.timer(m, n, k)
        t = alternate_timed(fns, args.reps, min_time=0.05)
        bound = (n * k * 4) / (bw * 1e9)   # streaming the weights: the limit of the decode shapes only
        rows.append((f"M={m}, N={n}, K={k}", {kk: 2 * m * n * k / v / 1e9 for kk, v in t.items()},
                     bound / min(t[e] for e in t if e.startswith("pytransformer")) if m <= 16 else None))

    # ---- the greedy argmax of the output layer through its 8-bit screen (the whole
    # screen_argmax call: integer dot products, candidates, exact rescoring); GFLOP/s of the
    # float32 product it replaces, and its share of the bound for the bytes it streams
    from pytransformer.model import Linear
    from pytransformer.screen import OutputScreen
    m, n, k = 1, 58101, 512
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    lin = Linear(w)
    screen = OutputScreen.build(lin)
    y = np.empty((m, n), np.float32)
    assert screen.argmax(x)[0] == np.argmax(x.astype(np.float64) @ w.T.astype(np.float64))
    fns = {**pytransformer_paths(lambda: screen.argmax(x)),
           "numpy": looped(lambda: np.argmax(np.matmul(x, w.T, out=y)))}
    t = alternate_timed(fns, args.reps, min_time=0.05)
    bound = (n * k + 12 * n) / (bw * 1e9)     # int8 weights, a float64 scale and an int32 sum per column
    rows.append((f"greedy argmax of M=1, N={n}, K={k} (8-bit screen)",
                 {kk: 2 * m * n * k / v / 1e9 for kk, v in t.items()},
                 bound / min(t[e] for e in t if e.startswith("pytransformer"))))

    K.set_isa(default_isa)
    if torch is not None:
        torch.close()
    engines = list(rows[0][1])
    print("| shape | " + " | ".join(f"{e} GFLOP/s" for e in engines)
          + " | best ours / numpy | of AVX2 FMA peak | of AVX-512 FMA peak | of bandwidth bound |")
    print("|---|" + "---|" * (len(engines) + 4))
    for shape, g, bwfrac in rows:
        ours = max(v for e, v in g.items() if e.startswith("pytransformer"))
        cells = " | ".join(f"{g[e]:.1f}" if e in g else "-" for e in engines)
        peak_cell = f"{ours / peak * 100:.0f}%" if peak else "-"
        peak512_cell = f"{ours / peak512 * 100:.0f}%" if peak512 else "-"
        bw_cell = f"{bwfrac * 100:.0f}%" if bwfrac else "-"
        print(f"| {shape} | {cells} | {ours / g['numpy']:.2f}x | {peak_cell} | {peak512_cell} | {bw_cell} |")

if __name__ == "__main__":
    main()
