"""pytransformer command line: translate, info, export, verify, bench (also `python -m pytransformer`).

Results go to stdout (translate: exactly one line per input, in order); messages, progress bars
and heatmaps go to stderr, so `pytransformer translate < in.txt > out.txt` stays clean.
"""
import argparse
import os
import sys
import time


class UsageError(ValueError):
    """A problem with the command line or its inputs that the user can fix."""


# ---------------------------------------------------------------------------- helpers

def _model_dir(path):
    """The model directory to use: `path`, or the shipped dates model."""
    from .text import shipped_model_dir
    d = path if path is not None else shipped_model_dir()
    if not os.path.isdir(d):
        if path is None:
            raise UsageError(f"the shipped model is missing ({d}); reinstall pytransformer or pass --model DIR")
        raise UsageError(f"model directory {d!r} does not exist")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise UsageError(f"{d!r} is not a model directory: it has no config.json "
                         f"(a model directory holds config.json and model.safetensors)")
    return d


def _load(path, threads=None):
    """Load a model and its vocabulary (if any)."""
    import pytransformer
    from .text import check_compatible, load_tokenizer
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        pytransformer.set_num_threads(threads)
    d = _model_dir(path)
    model = pytransformer.load(d)
    from . import hf
    if hf.is_hf_directory(d):
        return model          # load_hf attached the directory's own tokenizer, if it can be read
    if getattr(model, "tokenizer", None) is None:
        model.tokenizer = load_tokenizer(d)
    if model.tokenizer is not None:
        check_compatible(model.tokenizer, model.config, where=d)
    return model


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total, stream=None, min_total=200):
        self.stream = stream or sys.stderr
        self.total = total
        self.enabled = total >= min_total and getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()

    def __call__(self, done, total):
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} lines, "
                          f"{rate:,.0f} lines/s ")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _read_stdin_lines():
    if sys.stdin.isatty():
        print("pytransformer: reading one input per line from the terminal; end with Ctrl-D",
              file=sys.stderr)
    return [line.rstrip("\r\n") for line in sys.stdin]


def _positive(name):
    def parse(value):
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {value!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {n}")
        return n
    return parse


def _dir_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))


# ---------------------------------------------------------------------------- translate

def _cmd_translate(args):
    from .text import translate
    if args.png and not args.show_attention:
        raise UsageError("--png goes with --show-attention")
    model = _load(args.model, args.threads)
    texts = args.text if args.text else _read_stdin_lines()
    if args.show_attention:
        if len(texts) != 1:
            raise UsageError(f"--show-attention draws one input, got {len(texts)}")
        from .attention_view import show
        out = show(model, texts[0], args.max_new_tokens, layer=args.layer, stream=sys.stderr, png=args.png)
        print(out)
        if args.png:
            print(f"pytransformer: wrote {args.png}", file=sys.stderr)
        return 0
    bar = ProgressBar(len(texts))
    try:
        outputs = translate(model, texts, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    sys.stdout.write("".join(o + "\n" for o in outputs))
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------- info

def _cmd_info(args):
    import pytransformer
    from .text import load_tokenizer
    if args.threads is not None:
        pytransformer.set_num_threads(args.threads)
    info = pytransformer.cpu_info()
    d = _model_dir(args.model)
    from . import hf
    if hf.is_hf_directory(d):
        desc = hf.describe(d)
        print(f"model:        {d}  (Hugging Face {desc['family']} directory)")
        for key, value in desc["config"].items():
            print(f"  {key}: {value}")
        print(f"generation:   {desc['generation']}")
        if desc["ignored_settings"]:
            print(f"not applied:  {desc['ignored_settings']}")
        print(f"tokenizer:    {', '.join(desc['tokenizer_files']) or 'none'}")
        print(f"weights:      {', '.join(desc['weights'])}; files {_dir_size(d) / 1e6:.2f} MB")
        _print_runtime(info)
        return 0
    from .weights import read_config
    cfg = read_config(d)
    tok = load_tokenizer(d)
    print(f"model:        {d}{'  (shipped dates model)' if args.model is None else ''}")
    print(f"architecture: d_model {cfg.d_model}, {cfg.num_heads} heads, {cfg.encoder_layers}+"
          f"{cfg.decoder_layers} layers, ffn {cfg.ffn_dim}, vocab {cfg.src_vocab_size}/{cfg.tgt_vocab_size}, "
          f"{cfg.norm_placement}-norm, {cfg.activation}, {cfg.positional_encoding} positions")
    print(f"parameters:   {cfg.num_parameters():,}")
    print(f"files:        {_dir_size(d) / 1e6:.2f} MB")
    if tok is not None:
        print(f"vocabulary:   {len(tok)} tokens, characters {tok.alphabet!r}")
    else:
        print("vocabulary:   none (token ids only; `translate` needs a vocab.json)")
    _print_runtime(info)
    return 0


def _print_runtime(info):
    print(f"isa:          {info['isa']} (avx2 compiled: {info['avx2_compiled']}, avx512 compiled: "
          f"{info['avx512_compiled']}; cpu avx2: {info['features']['avx2']}, fma: {info['features']['fma']}, "
          f"avx512f: {info['features']['avx512f']})")
    print(f"threads:      {info['num_threads']} (OpenMP: {info['openmp']}, cores: {info['num_procs']})")


def _cmd_export(args):
    from . import hf
    if len(args.rest) in (1, 2) and os.path.isdir(args.rest[0]) and hf.is_hf_directory(args.rest[0]):
        # a Hugging Face directory holding only pytorch_model.bin: write model.safetensors once
        from .export import convert_pytorch_checkpoint
        written = convert_pytorch_checkpoint(*args.rest)
        print(f"wrote {written}", file=sys.stderr)
        return 0
    from .export import main_export
    return main_export(args.rest)


# ---------------------------------------------------------------------------- verify / bench inputs

def _inputs(model, n, seed):
    """(source id sequences, texts or None): dates for a model whose vocabulary can spell them,
    otherwise random ids (never the special ids) of random lengths."""
    import numpy as np
    tok = model.tokenizer
    if tok is not None:
        try:
            from .text import dates_data
            pairs = dates_data().generate(n, seed)
            return [np.asarray(tok.encode(t), dtype=np.int64) for t, _ in pairs], pairs
        except (ImportError, ValueError):    # no generator, or a vocabulary that cannot spell dates
            pass
    cfg = model.config
    rng = np.random.default_rng(seed)
    special = {cfg.pad_id, cfg.eos_id, cfg.decoder_start_id} | ({cfg.bos_id} if cfg.bos_id is not None else set())
    allowed = np.array([i for i in range(cfg.src_vocab_size) if i not in special] or [0], dtype=np.int64)
    longest = min(32, cfg.max_positions)
    return [rng.choice(allowed, size=int(rng.integers(1, longest + 1))) for _ in range(n)], None


def _reference(model):
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    from .torch_reference import from_model_dir
    return from_model_dir(model.path)


# The PyTorch side of `bench --vs torch`, in a process of its own: the PyTorch wheel bundles a
# libgomp.so.1 under the system's soname, so in one process PyTorch would run on pytransformer's
# OpenMP runtime, with its sleeping workers, instead of its own (measured: about 30% fewer tokens/s
# for the reference at batch 1). torch is imported first, so it loads its own runtime.
_TORCH_WORKER = """
import sys, time
if sys.path and sys.path[0] == "":
    del sys.path[0]   # python -c puts the working directory first; a source checkout there has no _kernels
import torch
import numpy as np
from pytransformer.__main__ import _load, _inputs, _reference
path, threads, n, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = _load(path, threads)
ref = _reference(model)
srcs, _ = _inputs(model, n, seed)
print("ready", flush=True)
for line in sys.stdin:
    batch = srcs[:int(line)]
    lengths = [len(s) for s in batch]
    padded = np.full((len(batch), max(lengths)), model.config.pad_id, dtype=np.int64)
    for b, s in enumerate(batch):
        padded[b, :len(s)] = s
    t0 = time.perf_counter()
    ref.greedy(torch.from_numpy(padded), torch.tensor(lengths), steps, min_new_tokens=steps)
    print(time.perf_counter() - t0, flush=True)
"""


class LineProcess:
    """A child process spoken to one line at a time over its stdin and stdout. Benchmarks run
    PyTorch (and other engines) in processes of their own through it: the PyTorch wheel bundles a
    libgomp.so.1 under the system's soname, so in one process PyTorch and pytransformer would share
    one OpenMP runtime and its wait policy. `ready`: a first line the child prints once started."""

    def __init__(self, argv, what, ready=None):
        import subprocess
        self.what = what
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if ready is not None and self.read() != ready:
            raise RuntimeError(f"{what} failed to start")

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.what} exited (code {self.proc.wait()}); see its messages above")
        return line.rstrip("\n")

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def _torch_timer(path, threads, n, seed, steps):
    """The PyTorch reference's greedy decoding timed in a child process (see _TORCH_WORKER):
    returns (time(batch_size) -> seconds, the LineProcess to close)."""
    child = LineProcess([sys.executable, "-c", _TORCH_WORKER, path, str(threads), str(n), str(seed), str(steps)],
                        "the PyTorch reference process", ready="ready")
    return (lambda batch_size: float(child.ask(str(batch_size)))), child


def _cmd_verify(args):
    import numpy as np
    model = _load(args.model, args.threads)
    cfg = model.config
    srcs, pairs = _inputs(model, args.n, args.seed)
    from . import hf
    if hf.is_hf_directory(model.path):
        return _verify_hf(model, srcs, args)
    max_new = args.max_new_tokens or (model.tokenizer.max_new_tokens if model.tokenizer is not None
                                      and model.tokenizer.max_new_tokens else min(32, cfg.max_positions))
    what = "generated dates" if pairs is not None else "random token sequences"
    print(f"verifying {model.path} on {len(srcs)} {what} (seed {args.seed}), greedy up to {max_new} tokens")
    t0 = time.perf_counter()
    ours = []
    for i in range(0, len(srcs), args.batch_size):
        ours += model.generate(srcs[i:i + args.batch_size], max_new)
    t_ours = time.perf_counter() - t0
    if pairs is not None:
        tok = model.tokenizer
        acc = np.mean([tok.decode(o) == iso for o, (_, iso) in zip(ours, pairs)])
        print(f"pytransformer exact match:  {acc:.2%} ({t_ours:.2f} s)")
    ref = _reference(model)
    if ref is None:
        print("torch is not installed: ran pytransformer only (pip install 'pytransformer[torch]' to compare "
              "with the PyTorch reference)")
        return 0
    import torch
    torch.set_num_threads(max(1, args.threads or os.cpu_count() or 1))
    agree_seq = agree_tok = total_tok = 0
    max_diff = 0.0
    for i in range(0, len(srcs), args.batch_size):
        chunk = srcs[i:i + args.batch_size]
        lengths = [len(s) for s in chunk]
        padded = np.full((len(chunk), max(lengths)), cfg.pad_id, dtype=np.int64)
        for b, s in enumerate(chunk):
            padded[b, :len(s)] = s
        theirs = ref.greedy(torch.from_numpy(padded), torch.tensor(lengths), max_new)
        for a, b in zip(ours[i:i + len(chunk)], theirs):
            b = b.numpy()
            agree_seq += int(len(a) == len(b) and bool(np.all(a == b)))
            n = min(len(a), len(b))
            agree_tok += int(np.sum(a[:n] == b[:n]))
            total_tok += max(len(a), len(b))
        # teacher-forced logits on the reference's own greedy path
        T = max(len(t) for t in theirs)
        tgt = np.full((len(chunk), T), cfg.pad_id, dtype=np.int64)
        tgt[:, 0] = cfg.decoder_start_id
        for b, t in enumerate(theirs):
            t = t.numpy()[:T - 1]
            tgt[b, 1:1 + len(t)] = t
        with torch.no_grad():
            want = ref(torch.from_numpy(padded), torch.tensor(lengths), torch.from_numpy(tgt)).numpy()
        got = model.forward(chunk, tgt)
        max_diff = max(max_diff, float(np.max(np.abs(got - want))))
    print(f"max |logit difference| vs PyTorch (teacher-forced): {max_diff:.2e}")
    print(f"greedy agreement: {agree_seq}/{len(srcs)} sequences identical, "
          f"{agree_tok}/{total_tok} tokens")
    ok = max_diff <= args.atol
    print("OK" if ok else f"FAILED: logits differ by more than --atol {args.atol}")
    return 0 if ok else 1


def _verify_hf(model, srcs, args):
    """A Hugging Face directory: compare with transformers itself on the same token ids."""
    try:
        from .hf_torch import compare_with_transformers
        import transformers  # noqa: F401
    except ImportError:
        print("torch/transformers are not installed: nothing to compare with "
              "(pip install torch==2.13.0 transformers)")
        return 0
    max_new = args.max_new_tokens or 20
    print(f"verifying {model.path} against transformers on {len(srcs)} random token sequences, "
          f"greedy up to {max_new} tokens")
    result = compare_with_transformers(model.path, srcs, max_new)
    bad = result["greedy_mismatches"]
    print(f"max |logit difference| vs transformers (teacher-forced): {result['max_logit_diff']:.2e}")
    print(f"greedy agreement: {len(srcs) - len(bad)}/{len(srcs)} sequences identical")
    ok = result["max_logit_diff"] <= args.atol and not bad
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


# ---------------------------------------------------------------------------- bench

def write_report(md_path, title, notes, header, rows, data, panels=None):
    """Write a markdown table to md_path, the raw numbers beside it (.json) and, when matplotlib is
    installed and panels are given, a bar chart (.png). Returns the paths written.

    rows: lists of cells (already formatted); data: anything JSON can hold; panels: list of
    {"title", "x" (labels), "series" {name: values}, "ylabel"}, one grouped-bar subplot each."""
    import json
    base = os.path.splitext(md_path)[0]
    lines = [f"## {title}", ""] + [n for n in notes] + ([""] if notes else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    written = [md_path]
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1, default=float)
    written.append(base + ".json")
    if panels:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return written
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, p in zip(axes[0], panels):
            names = list(p["series"])
            width = 0.8 / max(1, len(names))
            for i, name in enumerate(names):
                xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(p["x"]))]
                ax.bar(xs, [v or 0 for v in p["series"][name]], width, label=name)
            ax.set_xticks(range(len(p["x"])), [str(x) for x in p["x"]])
            ax.set_xlabel("batch size")
            ax.set_ylabel(p.get("ylabel", "tokens/s"))
            ax.set_title(p["title"], fontsize=10)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(base + ".png", dpi=110)
        plt.close(fig)
        written.append(base + ".png")
    return written


class _KernelTimer:
    """Times every kernel call of pytransformer.model while active (`with timer:` swaps the
    model module's kernel module for a timing stand-in): acc[category] += seconds per call, with
    GEMMs filed under gemm_category(packed weight) and their multiply-adds counted in flops."""

    def __init__(self, gemm_category):
        from . import _kernels as K
        self.K, self.acc, self.flops = K, {}, {}
        clock = time.perf_counter

        def timed(fn, cat_of):
            def wrapper(*a, **kw):
                t0 = clock()
                r = fn(*a, **kw)
                cat = cat_of(a)
                self.acc[cat] = self.acc.get(cat, 0.0) + clock() - t0
                if fn is K.gemm:
                    self.flops[cat] = self.flops.get(cat, 0) + 2 * a[0].shape[0] * a[1].n * a[1].k
                return r
            return wrapper

        class Timed:     # stands in for the kernel module inside pytransformer.model
            def __getattr__(self, name):
                return getattr(K, name)
        self.proxy = Timed()
        self.proxy.gemm = timed(K.gemm, lambda a: gemm_category(a[1]))
        for name, cat in (("attention", "attention"), ("norm", "norms"), ("embedding", "embedding"),
                          ("bias_activation", "activation")):
            setattr(self.proxy, name, timed(getattr(K, name), lambda a, cat=cat: cat))

    def __enter__(self):
        from . import model as model_mod
        self.acc.clear()
        self.flops.clear()
        model_mod.K = self.proxy
        return self

    def __exit__(self, *exc):
        from . import model as model_mod
        model_mod.K = self.K
        return False


def profile_decode_step(model, src, steps, reps=3):
    """Where the time of one greedy decode step goes, in ms per step (over reps runs of
    `steps` steps, best of reps): each kernel call is timed by wrapping pytransformer.model's kernel module;
    "Python/other" is the rest of the same instrumented run (the Python between kernels, numpy
    cache writes and position adds); "total" is an uninstrumented run, timed alternately. Softmax runs inside the fused attention
    kernel; its share is estimated by timing softmax_rows on score rows of the same shapes."""
    import numpy as np
    from . import _kernels as K
    out_packed = model.output.packed
    screened = "output projection (8-bit screen)"
    cats = ["GEMM (layers)", "output projection", screened, "attention", "norms", "embedding",
            "activation", "argmax"]
    timer = _KernelTimer(lambda packed: "output projection" if packed is out_packed else "GEMM (layers)")
    clock = time.perf_counter
    screen = model.output_screen

    def run(acc=None):
        # the steps of decoding.greedy: the screen when it decides, else full logits and argmax
        state = model.start_decoding(src, steps)
        tokens = np.full(state.batch, model.config.decoder_start_id, dtype=np.int32)
        t0 = clock()
        for _ in range(steps):
            h = model.decode_hidden(state, tokens)
            t1 = clock()
            nxt = None if screen is None else screen.argmax(h, scratch=state.logits)
            if nxt is None:
                logits = model.output(h, out=state.logits)
                t1 = clock()
                nxt = logits.argmax(axis=1)
                cat = "argmax"
            else:
                cat = screened
            if acc is not None:
                acc[cat] = acc.get(cat, 0.0) + clock() - t1
            tokens = nxt.astype(np.int32)
        return (clock() - t0) / steps

    run()                                         # warm-up
    totals, per_cat = [], {c: [] for c in cats + ["Python/other"]}
    for _ in range(reps):
        totals.append(run())
        with timer:
            instrumented = run(timer.acc)
        for c in cats:
            per_cat[c].append(timer.acc.get(c, 0.0) / steps)
        per_cat["Python/other"].append(max(0.0, instrumented - sum(timer.acc.values()) / steps))
    # best of reps: on a shared machine interference only ever adds time
    result = {c: min(v) * 1e3 for c, v in per_cat.items()}
    total = min(totals) * 1e3
    # softmax share inside attention: same rows as the step's self- (mean prefix) and cross-attention
    cfg = model.config
    B = len(src)
    rows = B * cfg.num_heads
    S = max(len(s) for s in src)
    self_scores = np.random.default_rng(0).standard_normal((rows, max(1, steps // 2)), dtype=np.float32)
    cross_scores = np.random.default_rng(1).standard_normal((rows, S), dtype=np.float32)
    n = 200
    t0 = clock()
    for _ in range(n):
        for _ in range(len(model.decoder_layers)):
            K.softmax_rows(self_scores, out=self_scores)
            K.softmax_rows(cross_scores, out=cross_scores)
    result["softmax (est., inside attention)"] = (clock() - t0) / n * 1e3
    result["total"] = total
    return result


def profile_encoder(model, src, reps=5):
    """Where the encoder's time goes for one batch of sources, in ms (best of reps): each kernel call
    timed as in profile_decode_step, the GEMMs split by the layer weight they use, with the GFLOP/s
    each reached; "total" is an uninstrumented run."""
    names = {}
    for layer in model.encoder_layers:
        names[id(layer.attn.qkv.packed)] = "GEMM q/k/v"
        names[id(layer.attn.out.packed)] = "GEMM attention out (+ residual)"
        names[id(layer.ffn.fc1.packed)] = "GEMM FFN in (+ activation)"
        names[id(layer.ffn.fc2.packed)] = "GEMM FFN out (+ residual)"
    timer = _KernelTimer(lambda packed: names.get(id(packed), "GEMM (other)"))
    ids, lens = model.prepare_source(src)

    def run():
        t0 = time.perf_counter()
        model._encode_ids(ids, lens)
        return time.perf_counter() - t0
    run()                                         # warm-up
    totals, best, best_instr = [], None, None
    for _ in range(reps):
        totals.append(run())
        with timer:
            t = run()
        if best_instr is None or t < best_instr:
            best_instr, best = t, (dict(timer.acc), dict(timer.flops))
    acc, flops = best
    result = {c: v * 1e3 for c, v in sorted(acc.items(), key=lambda kv: -kv[1])}
    result["Python/other"] = max(0.0, best_instr - sum(acc.values())) * 1e3
    gflops = {c: flops[c] / acc[c] / 1e9 for c in flops if acc[c] > 0}
    gemm_total = sum(acc[c] for c in flops)
    gflops["all GEMMs"] = sum(flops.values()) / gemm_total / 1e9 if gemm_total > 0 else 0.0
    return {"ms": result, "gflop_s": gflops, "total": min(totals) * 1e3, "instrumented": best_instr * 1e3}


def _print_profile(prof, batch, steps, stream=None):
    stream = stream or sys.stdout
    total = prof["total"]
    parts = sum(ms for cat, ms in prof.items() if cat != "total" and not cat.startswith("softmax"))
    print(f"decode step profile, batch {batch}, {steps} steps: {total:.3f} ms per step "
          f"(instrumented: {parts:.3f} ms; shares below are of the instrumented step)", file=stream)
    for cat, ms in prof.items():
        if cat == "total":
            continue
        indent = "    " if cat.startswith("softmax") else "  "
        print(f"{indent}{cat:<34} {ms:8.3f} ms {100 * ms / parts:6.1f}%", file=stream)


def _cmd_bench(args):
    import numpy as np
    import pytransformer
    model = _load(args.model, args.threads)
    threads = pytransformer.get_num_threads()
    steps = args.max_new_tokens
    if model.config.max_positions < steps:
        raise UsageError(f"--max-new-tokens {steps} exceeds the model's {model.config.max_positions} positions")
    sizes = args.batch_sizes
    srcs, _ = _inputs(model, max(sizes), args.seed)
    if args.profile:
        for B in sizes:
            _print_profile(profile_decode_step(model, srcs[:B], steps, reps=args.repeats), B, steps)
        return 0
    ref = None
    if args.vs == "torch":
        try:
            import importlib.util
            have_torch = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            have_torch = False
        if not have_torch:
            raise UsageError("--vs torch needs PyTorch: pip install 'pytransformer[torch]'")
        ref, ref_child = _torch_timer(model.path, threads, max(sizes), args.seed, steps)
    info = pytransformer.cpu_info()
    print(f"greedy decoding of {steps} tokens per sequence (EOS suppressed), {threads} threads, "
          f"isa {info['isa']}, median of {args.repeats}")
    try:
        load = os.getloadavg()
        print(f"machine load (1/5/15 min): {' '.join(f'{x:.2f}' for x in load)}")
    except OSError:
        load = None
    header = f"{'batch':>6} {'pytransformer tok/s':>20}"
    if ref is not None:
        header += f" {'torch tok/s':>14} {'ratio':>7}"
    print(header)
    results = []
    for B in sizes:
        batch = srcs[:B]
        ours, theirs = [], []
        model.generate(batch, steps, min_new_tokens=steps)                 # warm-up
        if ref is not None:
            ref(B)
        for _ in range(args.repeats):                                      # alternate the two engines
            t0 = time.perf_counter()
            model.generate(batch, steps, min_new_tokens=steps)
            ours.append(time.perf_counter() - t0)
            if ref is not None:
                theirs.append(ref(B))
        rate = B * steps / float(np.median(ours))
        line = f"{B:>6} {rate:>20,.0f}"
        row = {"batch": B, "pytransformer_tok_s": rate}
        if ref is not None:
            trate = B * steps / float(np.median(theirs))
            line += f" {trate:>14,.0f} {rate / trate:>6.1f}x"
            row.update(torch_tok_s=trate, ratio=rate / trate)
        results.append(row)
        print(line)
    if ref is not None:
        ref_child.close()
        print("(torch: pytransformer.torch_reference, torch.nn layers, re-running the decoder on the "
              "whole prefix at each step, in a process of its own)")
    if args.report:
        _bench_report(args.report, model, threads, steps, args.repeats, load, results, ref is not None)
    return 0


def _bench_report(path, model, threads, steps, repeats, load, results, with_torch):
    import datetime
    import platform
    import pytransformer
    info = pytransformer.cpu_info()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    machine = (f"{cpu}, {os.cpu_count()} cores, ISA path {info['isa']}, {threads} thread(s), "
               f"pytransformer {pytransformer.__version__}, {datetime.date.today().isoformat()}")
    notes = [f"Model {model.path}; greedy decoding of {steps} tokens per sequence (EOS suppressed), "
             f"median of {repeats}, engines alternated.", f"Machine: {machine}."]
    if load:
        notes.append(f"Load average (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.")
    header = ["batch", "pytransformer tok/s"] + (["PyTorch reference tok/s", "ratio"] if with_torch else [])
    rows = []
    for r in results:
        row = [r["batch"], f"{r['pytransformer_tok_s']:,.0f}"]
        if with_torch:
            row += [f"{r['torch_tok_s']:,.0f}", f"{r['ratio']:.1f}x"]
        rows.append(row)
    series = {"pytransformer": [r["pytransformer_tok_s"] for r in results]}
    if with_torch:
        series["PyTorch reference"] = [r["torch_tok_s"] for r in results]
    data = {"machine": machine, "model": model.path, "threads": threads, "steps": steps, "repeats": repeats,
            "loadavg": list(load) if load else None, "results": results}
    written = write_report(path, "Greedy decoding, tokens/s", notes, header, rows, data,
                           [{"title": f"{os.path.basename(str(model.path))}, {threads} thread(s)",
                             "x": [r["batch"] for r in results], "series": series}])
    print(f"wrote {', '.join(written)}", file=sys.stderr)


# ---------------------------------------------------------------------------- main

def _batch_sizes(value):
    try:
        sizes = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers separated by commas, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {value!r}")
    return sizes


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pytransformer",
        description="Fast CPU inference for Transformer encoder-decoder models. Without --model, "
                    "commands use the shipped model, which turns dates as people write them into ISO 8601.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("translate", help="translate text (arguments, or one input per line on stdin)",
                       description="Translate each TEXT (or each line of stdin when no TEXT is given) "
                                   "and print one output line per input, in order.")
    p.add_argument("text", nargs="*", help="inputs; when none are given, lines are read from stdin")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the shipped dates model)")
    p.add_argument("--threads", type=_positive("--threads"), help="CPU threads (default: all cores)")
    p.add_argument("--max-new-tokens", type=_positive("--max-new-tokens"),
                   help="longest output in tokens (default: from the model's vocab.json)")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=64,
                   help="inputs decoded together (default 64)")
    p.add_argument("--show-attention", action="store_true",
                   help="for one input, draw the decoder's cross-attention over the source as a heatmap (stderr)")
    p.add_argument("--layer", type=_positive("--layer"),
                   help="with --show-attention: decoder layer to draw (default: the most focused)")
    p.add_argument("--png", metavar="FILE", help="with --show-attention: also save the heatmap as a PNG (needs matplotlib)")
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("info", help="architecture, parameters, file size, ISA path and threads")
    p.add_argument("model", nargs="?", metavar="DIR", help="model directory (default: the shipped model)")
    p.add_argument("--threads", type=_positive("--threads"))
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="write a model directory from a PyTorch reference checkpoint "
                                      "(pytransformer export CHECKPOINT OUT_DIR)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("verify", help="compare the model with its PyTorch reference on generated inputs")
    p.add_argument("model", metavar="DIR", help="model directory")
    p.add_argument("-n", type=_positive("-n"), default=200, help="number of inputs (default 200)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=_positive("--threads"))
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=100)
    p.add_argument("--max-new-tokens", type=_positive("--max-new-tokens"))
    p.add_argument("--atol", type=float, default=1e-3, help="largest logit difference accepted (default 1e-3)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bench", help="greedy decoding speed in tokens/s at a few batch sizes")
    p.add_argument("model", nargs="?", metavar="DIR", help="model directory (default: the shipped model)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 64], help="comma-separated (default 1,8,64)")
    p.add_argument("--max-new-tokens", type=_positive("--max-new-tokens"), default=12,
                   help="tokens generated per sequence (default 12)")
    p.add_argument("--repeats", type=_positive("--repeats"), default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=_positive("--threads"))
    p.add_argument("--vs", choices=["torch"], help="also time the PyTorch reference, alternating runs")
    p.add_argument("--report", metavar="FILE.md",
                   help="also write the table as markdown to FILE.md, the raw numbers to FILE.json and, "
                        "when matplotlib is installed, a chart to FILE.png (the cross-engine report with "
                        "transformers and CTranslate2 is benchmarks/compare_engines.py)")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing whole runs, print where a decode step's time goes (GEMM, "
                        "output projection, attention, softmax, norms, Python/other) at each batch size")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pytransformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # e.g. `pytransformer translate < big.txt | head`
        return 0
    except Exception as e:           # a person reads this: one line, no traceback
        from .errors import WeightsError
        if isinstance(e, (WeightsError, ValueError, TypeError, FileNotFoundError, NotImplementedError,
                          ImportError, OSError)):
            print(f"pytransformer: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
