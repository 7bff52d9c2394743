"""compare_engines.py - pytransformer beside transformers (PyTorch) and CTranslate2 on one MarianMT model.

    python benchmarks/compare_engines.py [--out DIR] [--threads 1,2] [--reps 5] [--isa avx2] [--huge-pages on|off]

The model: a seeded random MarianMT at the opus-mt-en-de size (engines.build_marian), the same weights
in every engine. Workloads, source length 32 (31 ids + EOS): encoder forward at batch 1 and 16; greedy
decoding of exactly 64 new tokens (EOS suppressed) at batch 1 and 16; first-token latency (encoder +
one step). Besides the issue's workloads: the batch-16 encoder on a padded batch, source lengths 8-32
(what a batch of real sentences looks like; pytransformer skips the padding rows, see model._PackedRows). Each engine runs in its own process (engines.RemoteEngine: PyTorch and pytransformer would
otherwise share one OpenMP runtime) and measures its own calls; its greedy tokens are checked against
transformers' before it is timed; the engines are timed alternately (common.alternate_timed),
medians and ratios reported.
Model load time, load-to-first-token and peak RSS come from one fresh subprocess per engine.
Also: the shipped dates model against its PyTorch reference (`pytransformer bench --vs torch`), the
memory-bandwidth bound of one decode step, and the profile of a step (`pytransformer bench --profile`).
Writes DIR/engines.md, DIR/engines.json and, with matplotlib, DIR/engines.png.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SRC_LEN = 32
NEW_TOKENS = 64
BATCHES = (1, 16)
VARIED_LENS = (8, SRC_LEN)     # the padded-batch encoder workload: lengths drawn from this range
MODEL_DIR = os.path.join(tempfile.gettempdir(), "pytransformer-marian-opus-size-s0")

# --isa avx2: every engine held to AVX2 + FMA, as on a machine without AVX-512 (the targets' reference
# machine is one). Set in the driver's environment before any engine process starts, so the workers,
# the load probes and the dates-model run all inherit it. PyTorch: MKL's GEMMs (MKL_ENABLE_INSTRUCTIONS),
# oneDNN and ATen's own vectorised kernels; CTranslate2: its kernels and the MKL it links.
ISA_ENV = {
    "avx2": {"PYTRANSFORMER_ISA": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "ATEN_CPU_CAPABILITY": "avx2", "CT2_FORCE_CPU_ISA": "AVX2"},
}


def sources(batch, vocab, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(1, vocab - 1, size=SRC_LEN - 1)] + [0] for _ in range(batch)]


def varied_sources(batch, vocab, seed):
    """Sources of lengths drawn from VARIED_LENS (the first one the longest), each ending in EOS."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lens = rng.integers(VARIED_LENS[0], VARIED_LENS[1] + 1, size=batch)
    lens[0] = VARIED_LENS[1]
    return [[int(t) for t in rng.integers(1, vocab - 1, size=int(n) - 1)] + [0] for n in lens]


def engine_path(name, hf_dir):
    import engines
    return engines.convert_ct2(hf_dir, hf_dir + "-ct2") if name == "ctranslate2" else hf_dir


# ---------------------------------------------------------------------------- one engine, fresh process

def probe(name, hf_dir, threads):
    """Run in a subprocess: import, load, first token, then the batch-16 greedy run; print JSON."""
    t0 = time.perf_counter()
    import engines
    from common import peak_rss_mb
    eng = engines.ENGINES[name](engine_path(name, hf_dir), threads)
    if name == "transformers":
        import torch  # noqa: F401  (the import is part of its start-up, timed apart from the load)
    t1 = time.perf_counter()
    eng.load()
    t2 = time.perf_counter()
    eng.generate(sources(1, 58101), 1)
    t3 = time.perf_counter()
    rss_first = peak_rss_mb()
    eng.generate(sources(16, 58101), NEW_TOKENS)
    rss = peak_rss_mb()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "load_to_first_token_s": t3 - t1,
                      "peak_rss_mb_first_token": rss_first, "peak_rss_mb": rss}))


def run_probe(name, hf_dir, threads):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", name, "--model", hf_dir,
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


PROBE_ROUNDS = 3


def probe_rounds(names, hf_dir, threads, rounds=PROBE_ROUNDS):
    """run_probe for every engine, `rounds` times, engines alternated: per engine the median of each
    field, and in load_to_first_token_each_s every probe's value in order. One probe is not enough
    on a virtual machine: memory the host has to back first is several times slower to touch (one
    load of the opus-mt-size model took 0.80 s there, the next three 0.20-0.23 s), and which probe
    meets such memory is luck. Every engine gets the same number of tries."""
    runs = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            runs[n].append(run_probe(n, hf_dir, threads))
    out = {}
    for n, rs in runs.items():
        out[n] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        out[n]["load_to_first_token_each_s"] = [r["load_to_first_token_s"] for r in rs]
    return out


# ---------------------------------------------------------------------------- timing, one process

SHORT_REPS_FACTOR = 3


READ_PROBE = "read probe"


def step_bound_rounds(greedy_s, first_token_s, read_gb_s, step_bytes):
    """Per round: the batch-1 step ((greedy - first token) / (NEW_TOKENS - 1), first token the run's
    median) over the time step_bytes take at the bandwidth read right before that greedy sample."""
    return [((g - first_token_s) / (NEW_TOKENS - 1)) / (step_bytes / (bw * 1e9))
            for g, bw in zip(greedy_s, read_gb_s)]


def time_engines(engs, threads, reps):
    """Check tokens, then time every workload with the engines alternated. Returns a dict of results."""
    from common import alternate_timed
    for e in engs.values():
        e.set_threads(threads)
    ref = engs["transformers"]
    res = {"check": {}, "time": {}, "samples": {}}
    timed = {}
    for B in BATCHES:
        src = sources(B, 58101, seed=B)
        want = ref.generate(src, NEW_TOKENS)
        for name, e in engs.items():
            got = e.generate(src, NEW_TOKENS)
            same = sum(a == b for a, b in zip(got, want))
            res["check"][f"{name} b{B}"] = f"{same}/{B}"
            if same == B:
                timed.setdefault(name, set()).add(B)
            else:
                print(f"WARNING: {name} differs from transformers on {B - same}/{B} sequences (batch {B}); "
                      f"not timed", file=sys.stderr)
    for B in BATCHES:
        src = sources(B, 58101, seed=B)
        ok = {n: e for n, e in engs.items() if B in timed.get(n, ())}
        for work, kind, n_new in (("encoder", "encoder", 0), ("first_token", "greedy", 1),
                                  ("greedy", "greedy", NEW_TOKENS)):
            # the short workloads (a fraction of a second each) get three times the samples: the
            # machine's slow and fast phases last seconds to minutes, and more alternations give
            # each engine a fairer share of both
            samples = {}
            runs = {n: (lambda inner, e=e: e.timed(kind, src, n_new, inner)) for n, e in ok.items()}
            probe_bw = work == "greedy" and B == 1 and "pytransformer" in ok
            if probe_bw:
                # the read bandwidth, measured each round right before pytransformer's batch-1 greedy
                # sample, for the step's bandwidth bound round by round: the machine's bandwidth moves
                # with its phases (29-52 GB/s within an hour here), and one reading at the end of the
                # run pairs a step with a bandwidth of another minute. (Returns seconds per GB.)
                pt = ok["pytransformer"]
                runs = {READ_PROBE: lambda inner, pt=pt: 1.0 / pt.call("bandwidth", threads=threads, mib=512,
                                                                       reps=3)["gb_s"], **runs}
            t = alternate_timed(runs, reps if work == "greedy" else SHORT_REPS_FACTOR * reps,
                                min_time=0.2 if work != "greedy" else 0.0, samples=samples)
            if probe_bw:
                t.pop(READ_PROBE)
                res["read_gb_s_rounds"] = [1.0 / v for v in samples.pop(READ_PROBE)]
            for n, sec in t.items():
                res["time"][f"{n} {work} b{B}"] = sec
                res["samples"][f"{n} {work} b{B}"] = samples[n]
            print(f"  {threads} thread(s) {work:<11} batch {B:>2}: " +
                  ", ".join(f"{n} {sec * 1e3:.1f} ms" for n, sec in t.items()), file=sys.stderr)
    # the padded batch: greedy tokens checked like the others, then the encoder timed
    src = varied_sources(16, 58101, seed=116)
    want = ref.generate(src, NEW_TOKENS)
    ok = {}
    for name, e in engs.items():
        same = sum(a == b for a, b in zip(e.generate(src, NEW_TOKENS), want))
        res["check"][f"{name} b16 padded"] = f"{same}/16"
        if same == 16:
            ok[name] = e
    samples = {}
    t = alternate_timed({n: (lambda inner, e=e: e.timed("encoder", src, 0, inner)) for n, e in ok.items()},
                        SHORT_REPS_FACTOR * reps, min_time=0.2, samples=samples)
    for n, sec in t.items():
        res["time"][f"{n} encoder_padded b16"] = sec
        res["samples"][f"{n} encoder_padded b16"] = samples[n]
    print(f"  {threads} thread(s) encoder, padded batch 16: " +
          ", ".join(f"{n} {sec * 1e3:.1f} ms" for n, sec in t.items()), file=sys.stderr)
    return res


def derive(t, names):
    """tokens/s, ms per step, first-token ms, encoder ms per engine and batch from the raw medians."""
    out = {}
    for n in names:
        for B in BATCHES:
            g, f, e = (t.get(f"{n} {w} b{B}") for w in ("greedy", "first_token", "encoder"))
            if g is None:
                continue
            step = (g - f) / (NEW_TOKENS - 1)
            enc = e - step if n == "ctranslate2" else e   # CTranslate2's encode() also runs one step
            out[(n, B)] = {"tok_s": B * NEW_TOKENS / g, "ms_step": step * 1e3, "first_ms": f * 1e3,
                           "encoder_ms": enc * 1e3}
    return out


def decode_step_bytes(cfg, screened=False):
    """Bytes a batch-1 decode step must stream: decoder weights (self q/k/v/out, cross q/out, FFN)
    and, per layer, the cross-attention K/V of a 32-token source in float32, and the output
    projection: float32, or (screened) pytransformer's 8-bit screen, one byte per weight plus a
    float64 scale and an int32 sum per column (the exact rescoring of a few 16-column panels adds
    a negligible 32 KiB each)."""
    d, f, V, L = cfg["d_model"], cfg["decoder_ffn_dim"], cfg["vocab_size"], cfg["decoder_layers"]
    per_layer = 4 * d * d + 2 * d * d + 2 * d * f + 2 * SRC_LEN * d
    projection = V * d + 12 * V if screened else 4 * V * d
    return 4 * L * per_layer + projection


# ---------------------------------------------------------------------------- report

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--model", default=MODEL_DIR)
    ap.add_argument("--isa", choices=sorted(ISA_ENV), help="hold every engine to this instruction set "
                    "(default: each engine's own choice for this CPU)")
    ap.add_argument("--huge-pages", choices=("on", "off"), nargs="?", const="on",
                    help="load pytransformer's model with huge_pages=True (on) or False (off) in every process "
                    "of the run (default: pytransformer.load's default, on: decoder weights and the 8-bit copy "
                    "on transparent huge pages)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return probe(args.probe, args.model, int(args.threads))
    if args.isa:
        os.environ.update(ISA_ENV[args.isa])
    import engines
    if args.huge_pages:
        os.environ[engines.HUGE_PAGES_ENV] = "1" if args.huge_pages == "on" else "0"
    from common import cpu_ticks, machine_line, paired_ratios, quartiles, steal_share
    from pytransformer.__main__ import write_report

    os.makedirs(args.out, exist_ok=True)
    threads_list = [int(x) for x in args.threads.split(",")]
    hf_dir = engines.build_marian(args.model)
    names = ["pytransformer", "transformers"] + (["ctranslate2"] if engines.ctranslate2_available() else [])
    for n in names:
        engine_path(n, hf_dir)
    uptime_before = os.getloadavg()
    started = time.time()

    print(f"load/RSS probes ({PROBE_ROUNDS} fresh subprocesses per engine, alternated)...", file=sys.stderr)
    probes = probe_rounds(names, hf_dir, max(threads_list))

    engs = {n: engines.RemoteEngine(n, engine_path(n, hf_dir), threads_list[0]).load() for n in names}
    timing, steal = {}, {}
    for th in threads_list:
        print(f"timing at {th} thread(s)...", file=sys.stderr)
        ticks = cpu_ticks()
        timing[th] = time_engines(engs, th, args.reps)
        steal[th] = steal_share(ticks, cpu_ticks())
    pt = engs["pytransformer"]
    bw = {th: pt.call("bandwidth", threads=th, mib=512, reps=5)["gb_s"] for th in threads_list}
    prof = {}
    pt.set_threads(max(threads_list))
    for B in BATCHES:
        prof[B] = pt.call("profile", src=sources(B, 58101, seed=B), n_new=NEW_TOKENS, reps=3)["profile"]
    enc_prof = pt.call("profile_encoder", src=sources(16, 58101, seed=16), reps=5)["profile"]
    peak = {lanes: pt.call("fma_peak", threads=max(threads_list), lanes=lanes)["gflop_s"] for lanes in (8, 16)}
    versions = {k: v for e in engs.values() for k, v in e.info["version"].items()}
    for e in engs.values():
        e.close()

    dates = subprocess.run([sys.executable, "-m", "pytransformer", "bench", "--vs", "torch", "--threads",
                            str(max(threads_list)), "--batch-sizes", "1,16", "--max-new-tokens", "12",
                            "--report", os.path.join(args.out, "dates.md")],
                           capture_output=True, text=True)
    uptime_after = os.getloadavg()

    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    step_bytes = decode_step_bytes(cfg)                            # what a float32 engine streams
    screened_bytes = decode_step_bytes(cfg, screened=True)    # what pytransformer streams
    rows, data_rows = [], []
    header = ["threads", "engine", "batch", "greedy tok/s", "ms/step", "first token ms", "encoder ms",
              "tok/s vs pytransformer"]
    panels = []
    for th in threads_list:
        d = derive(timing[th]["time"], names)
        series = {}
        for n in names:
            series[n] = [d.get((n, B), {}).get("tok_s") for B in BATCHES]
            for B in BATCHES:
                r = d.get((n, B))
                if r is None:
                    rows.append([th, n, B, "not timed (tokens differ)", "", "", "", ""])
                    continue
                rel = d[("pytransformer", B)]["tok_s"] / r["tok_s"] if ("pytransformer", B) in d else None
                enc = f"{r['encoder_ms']:.1f}" + (" (est.)" if n == "ctranslate2" else "")
                rows.append([th, n, B, f"{r['tok_s']:,.0f}", f"{r['ms_step']:.2f}", f"{r['first_ms']:.1f}",
                             enc, f"{rel:.2f}x" if rel else ""])
                data_rows.append(dict(threads=th, engine=n, batch=B, **r))
        panels.append({"title": f"MarianMT opus-mt size, {th} thread(s)", "x": list(BATCHES), "series": series})

    # targets at the largest thread count
    th = max(threads_list)
    d = derive(timing[th]["time"], names)
    targets = []

    def target(what, value, goal, higher=True):
        met = value >= goal if higher else value <= goal
        by = value / goal
        targets.append([what, f"{value:.2f}", f"{'>=' if higher else '<='} {goal}", "met" if met else
                        f"MISSED ({(1 - by) * 100 if higher else (by - 1) * 100:.0f}% short)"])

    spreads = []

    def spread(work, B, other):
        """Quartiles of the per-round ratios other / pytransformer (seconds per call): the same ratio
        as the target's, round by round."""
        smp = timing[th]["samples"]
        a, b = smp.get(f"pytransformer {work} b{B}"), smp.get(f"{other} {work} b{B}")
        if not a or not b:
            return
        q1, med, q3 = quartiles(paired_ratios(b, a))
        spreads.append(f"{work} batch {B} vs {other}: median {med:.2f}x, quartiles {q1:.2f}-{q3:.2f}x "
                       f"over {len(a)} rounds")

    def ratio(B, other, key="tok_s"):
        a, b = d.get(("pytransformer", B)), d.get((other, B))
        if a is None or b is None:
            return None
        return a[key] / b[key] if key == "tok_s" else b[key] / a[key]

    for B, goal_tf, goal_ct in ((1, 3.5, 1.3), (16, 2.0, 1.1)):
        if ratio(B, "transformers"):
            target(f"greedy batch {B}: tok/s vs transformers", ratio(B, "transformers"), goal_tf)
        if "ctranslate2" in names and ratio(B, "ctranslate2"):
            target(f"greedy batch {B}: tok/s vs CTranslate2 float32", ratio(B, "ctranslate2"), goal_ct)
    bound_ms = step_bytes / (bw[th] * 1e9) * 1e3
    own_bound_ms = screened_bytes / (bw[th] * 1e9) * 1e3
    step_ms = d[("pytransformer", 1)]["ms_step"]
    read_rounds = timing[th].get("read_gb_s_rounds")
    if read_rounds:
        per_round = step_bound_rounds(timing[th]["samples"]["pytransformer greedy b1"],
                                      d[("pytransformer", 1)]["first_ms"] / 1e3, read_rounds, screened_bytes)
        q1, med, q3 = quartiles(per_round)
        target(f"batch-1 step / bandwidth bound of the bytes it streams ({screened_bytes / 1e6:.0f} MB), round "
               f"by round: median over {len(per_round)} rounds, each greedy sample against the read bandwidth "
               f"measured right before it ({min(read_rounds):.1f}-{max(read_rounds):.1f} GB/s; quartiles "
               f"{q1:.2f}-{q3:.2f}; against the one reading at the end, {bw[th]:.1f} GB/s = "
               f"{own_bound_ms:.2f} ms: {step_ms / own_bound_ms:.2f})", med, 1.35, higher=False)
    else:
        target(f"batch-1 step / bandwidth bound of the bytes it streams ({screened_bytes / 1e6:.0f} MB at "
               f"{bw[th]:.1f} GB/s = {own_bound_ms:.2f} ms)", step_ms / own_bound_ms, 1.35, higher=False)
    ceiling = None
    if ("transformers", 1) in d:
        # no float32 engine can step faster than the bound: the best ratio its decode steps allow
        ceiling = d[("transformers", 1)]["ms_step"] / bound_ms
    if ratio(16, "transformers", "encoder_ms"):
        target("encoder batch 16: speed vs transformers", ratio(16, "transformers", "encoder_ms"), 1.2)
    if "ctranslate2" in names and ratio(16, "ctranslate2", "encoder_ms"):
        target("encoder batch 16: speed vs CTranslate2 float32 (CT2 encoder est.)",
               ratio(16, "ctranslate2", "encoder_ms"), 1.0)
    for other in names[1:]:
        for B in BATCHES:
            spread("greedy", B, other)
    spread("encoder", 16, "transformers")      # CTranslate2's encoder samples include a decode step
    spread("encoder_padded", 16, "transformers")
    padded_line = None
    tp = timing[th]["time"]
    if "pytransformer encoder_padded b16" in tp:
        vsrc = varied_sources(16, 58101, seed=116)
        share = 1 - sum(len(x) for x in vsrc) / (16 * max(len(x) for x in vsrc))
        ours = tp["pytransformer encoder_padded b16"]
        parts = [f"pytransformer {ours * 1e3:.1f} ms"]
        for n in names[1:]:
            if f"{n} encoder_padded b16" not in tp:
                continue
            other = tp[f"{n} encoder_padded b16"]
            if n == "ctranslate2" and ("ctranslate2", 16) in d:   # its encode() also runs one step
                other -= d[("ctranslate2", 16)]["ms_step"] / 1e3
            parts.append(f"{n} {other * 1e3:.1f} ms{' (est.)' if n == 'ctranslate2' else ''} "
                         f"({other / ours:.2f}x pytransformer's time)")
        padded_line = (f"Encoder on a padded batch ({th} threads): 16 sources of {VARIED_LENS[0]}-{VARIED_LENS[1]} "
                       f"tokens, {100 * share:.0f}% of the padded batch is padding: " + "; ".join(parts) +
                       f". pytransformer runs only the token rows through the layers; with full-length sources it "
                       f"took {d[('pytransformer', 16)]['encoder_ms']:.1f} ms.")
    target("peak RSS: pytransformer / transformers process",
           probes["pytransformer"]["peak_rss_mb"] / probes["transformers"]["peak_rss_mb"], 0.6, higher=False)
    target(f"load to first token, pytransformer (s; median of {PROBE_ROUNDS} processes)", probes["pytransformer"]["load_to_first_token_s"], 0.5,
           higher=False)

    machine = machine_line(",".join(map(str, threads_list)))
    versions_line = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "pytransformer")
    notes = [f"Machine: {machine}; {versions_line}; Python {platform.python_version()}." +
             (f" Every engine held to {args.isa.upper()} (--isa {args.isa}: " +
              ", ".join(f"{k}={v}" for k, v in ISA_ENV[args.isa].items()) + ")." if args.isa else
              " Each engine on its own choice of instruction set for this CPU.") +
             (f" pytransformer loaded with huge_pages={args.huge_pages == 'on'} (--huge-pages {args.huge_pages})."
              if args.huge_pages else " pytransformer loaded with its default, huge_pages=True."),
             f"Load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in uptime_before)}, after: "
             f"{' '.join(f'{x:.2f}' for x in uptime_after)}; run took {time.time() - started:.0f} s. "
             "CPU time stolen by the hypervisor while the engines were timed: " + ", ".join(
                 f"{th} thread(s) {'n/a' if v is None else f'{100 * v:.1f}%'}" for th, v in steal.items())
             + " (a vCPU taken away stalls every parallel region on it).",
             f"Model: seeded random MarianMT, d_model 512, 8 heads, 6+6 layers, FFN 2048, vocab 58101 "
             f"(engines.build_marian). Source length {SRC_LEN}; greedy = exactly {NEW_TOKENS} new tokens, "
             f"EOS suppressed; median of {args.reps} (greedy) or {SHORT_REPS_FACTOR * args.reps} (encoder, first token), engines alternated, each in its own process. ms/step = "
             f"(greedy - first token) / {NEW_TOKENS - 1}. CTranslate2 has no encoder-only call: its encoder "
             f"time is (encoder + 1 step) - ms/step.",
             "Greedy tokens identical to transformers: " + ", ".join(
                 f"{k} {v}" for th_ in threads_list for k, v in timing[th_]["check"].items()) + "."]
    table = ["", f"### Load and memory (fresh process per engine, {max(threads_list)} threads; median of "
             f"{PROBE_ROUNDS} such processes per engine, engines alternated)", "",
             "| engine | import s | load s | load to first token s | each probe s | peak RSS MB (first token) | "
             "peak RSS MB (after batch 16 x 64) |", "|---|---|---|---|---|---|---|"]
    table += [f"| {n} | {p['import_s']:.2f} | {p['load_s']:.2f} | {p['load_to_first_token_s']:.2f} | "
              f"{' / '.join(f'{v:.2f}' for v in p['load_to_first_token_each_s'])} | "
              f"{p['peak_rss_mb_first_token']:.0f} | {p['peak_rss_mb']:.0f} |" for n, p in probes.items()]
    table += ["", f"### Targets ({th} threads, ratios from this run)", "", "| target | measured | goal | |",
              "|---|---|---|---|"] + [f"| {' | '.join(t)} |" for t in targets]
    table += ["", "Round by round (each round times every engine once, so a pair of samples shares the machine's "
              "phase), the speed ratios were: " + "; ".join(spreads) + "."]
    if padded_line:
        table += ["", padded_line]
    if ceiling is not None:
        table += ["", f"Ceiling at batch 1: a decode step that streams all its weights in float32 "
                  f"({step_bytes / 1e6:.0f} MB) at the measured read bandwidth ({bound_ms:.2f} ms) would be "
                  f"{ceiling:.2f}x transformers' {d[('transformers', 1)]['ms_step']:.2f} ms step. pytransformer's "
                  f"greedy steps read an 8-bit copy of the output projection ({screened_bytes / 1e6:.0f} MB in all, "
                  f"{own_bound_ms:.2f} ms at that bandwidth, {d[('transformers', 1)]['ms_step'] / own_bound_ms:.2f}x) "
                  f"and recompute the few columns that could be the argmax in float32, so the tokens are those of "
                  f"the float32 model. The greedy ratio is lower than the step ratio: it includes the encoder "
                  f"and first step."]
    gem = enc_prof["gflop_s"]
    # the peak of the path pytransformer ran on (16 lanes on AVX-512, 8 on AVX2 or with --isa avx2)
    own_isa = str(versions.get("pytransformer ISA path", ""))
    lanes, path = (16, "AVX-512") if own_isa.startswith("avx512") else (8, "AVX2")
    table += ["", f"### Profile of the encoder, batch 16 x {SRC_LEN} tokens, {th} threads (best of 5; "
              f"uninstrumented {enc_prof['total']:.1f} ms, instrumented {enc_prof['instrumented']:.1f} ms)", "",
              f"FMA peak measured in the same run, {th} threads: "
              f"{peak[16] or 0:.0f} GFLOP/s with AVX-512, {peak[8] or 0:.0f} with AVX2. All GEMMs together: "
              f"{gem['all GEMMs']:.0f} GFLOP/s" + (f" ({100 * gem['all GEMMs'] / peak[lanes]:.0f}% of the {path} "
                                                 f"peak, the path pytransformer ran on)." if peak[lanes] else "."), "",
              "| part | ms | share | GFLOP/s |", "|---|---|---|---|"]
    enc_total = sum(enc_prof["ms"].values())
    table += [f"| {k} | {v:.2f} | {100 * v / enc_total:.1f}% | {gem[k]:.0f} |" if k in gem else
              f"| {k} | {v:.2f} | {100 * v / enc_total:.1f}% | |" for k, v in enc_prof["ms"].items()]
    for B in BATCHES:
        p = prof[B]
        parts = sum(v for k, v in p.items() if k != "total" and not k.startswith("softmax"))
        table += ["", f"### Profile of one decode step, batch {B}, {th} threads (pytransformer bench --profile; "
                  f"best of 3; uninstrumented {p['total']:.2f} ms, instrumented {parts:.2f} ms)", "",
                  "| part | ms | share |", "|---|---|---|"]
        table += [f"| {k} | {v:.3f} | {100 * v / parts:.1f}% |" for k, v in p.items() if k != "total"]
    table += ["", "### Shipped dates model vs its PyTorch reference", ""]
    dates_md = os.path.join(args.out, "dates.md")
    table += open(dates_md).read().splitlines()[2:] if os.path.exists(dates_md) else [dates.stderr[-500:]]
    data = {"machine": machine, "versions": versions_line, "loadavg_before": uptime_before, "loadavg_after": uptime_after,
            "steal_share": steal,
            "timing_raw_s": {str(k): v for k, v in timing.items()}, "derived": data_rows, "probes": probes,
            "bandwidth_gb_s": bw, "step_bytes": step_bytes, "screened_step_bytes": screened_bytes, "profile_ms": prof, "encoder_profile": enc_prof,
            "fma_peak_gflop_s": peak, "targets": targets}
    md = os.path.join(args.out, "engines.md")
    written = write_report(md, "pytransformer vs transformers vs CTranslate2 (MarianMT, opus-mt-en-de size)",
                           notes, header, rows, data, panels)
    with open(md, "a") as f:
        f.write("\n".join(table) + "\n")
    print(open(md).read())
    print("wrote", ", ".join(written), file=sys.stderr)


if __name__ == "__main__":
    main()
