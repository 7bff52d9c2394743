"""common.py - what every pytransformer benchmark shares: machine facts, side-by-side timing, medians.

Machines here are shared and noisy, so engines are timed alternately in one run, each repetition
running every engine once, and the medians and their ratios are what we report.
"""
import datetime
import os
import platform
import statistics
import time

import numpy as np

import pytransformer
from pytransformer import _kernels as K


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads):
    info = pytransformer.cpu_info()
    return (f"{cpu_model()}, {os.cpu_count()} cores, ISA path {info['isa']}, {threads} thread(s), "
            f"numpy {np.__version__}, pytransformer {pytransformer.__version__}, "
            f"{datetime.date.today().isoformat()}")


SETTLE_SECONDS = 0.2


def cpu_ticks():
    """(stolen, total) CPU ticks of the whole machine so far, from /proc/stat ((0, 0) elsewhere):
    on a virtual machine, time the hypervisor gave the vCPUs to someone else is 'steal'."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def peak_rss_mb():
    """This process's peak resident set in MB: VmHWM from /proc/self/status, which belongs to the
    address space exec() gave it. (getrusage's ru_maxrss is not used where /proc exists: Linux carries
    it over exec() from the process that forked, so a probe started by a parent holding a large
    model would report the parent's peak.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steal_share(before, after):
    """Share of all CPU time stolen between two cpu_ticks() readings (None when unknown)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


def looped(fn):
    """fn as alternate_timed wants it: run(n) calls fn n times and returns the seconds per call."""
    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n
    return run


def alternate(fns, reps, min_time=0.0):
    """Time each callable in fns (dict name -> fn) `reps` times, interleaved; returns name -> median seconds.

    Each sample repeats the call until it lasts at least min_time, to get above timer noise."""
    return alternate_timed({name: looped(fn) for name, fn in fns.items()}, reps, min_time)


def alternate_timed(runs, reps, min_time=0.0, samples=None):
    """As alternate, for callables that time themselves: runs[name](n) makes n back-to-back calls and
    returns the seconds per call (an engine in another process measures there, without the pipe).
    samples: a dict that receives every sample, name -> list of seconds in the order taken (sample i
    of every engine comes from the same round), for ratios of paired samples."""
    samples = {} if samples is None else samples
    samples.update({name: [] for name in runs})
    inner = {}
    for name, run in runs.items():          # warm up and pick the inner repeat count
        run(1)
        dt = run(1)
        inner[name] = max(1, int(min_time / dt) if dt > 0 else 1)
    for _ in range(reps):
        for name, run in runs.items():
            # Thread pools (OpenMP, OpenBLAS) spin for a while after their last job; let the
            # previous engine's workers go to sleep so they do not steal this engine's cores.
            time.sleep(SETTLE_SECONDS)
            samples[name].append(run(inner[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def paired_ratios(num, den):
    """Per-round ratios num[i] / den[i] of two engines' alternated samples, sorted: the spread the
    machine's slow and fast phases leave in a ratio of medians."""
    return sorted(a / b for a, b in zip(num, den))


def quartiles(values):
    """(first quartile, median, third quartile) of a non-empty list."""
    v = sorted(values)
    if len(v) < 2:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[1], q[2]


def read_bandwidth(threads, mib=1024, reps=7):
    """Sustained read bandwidth in GB/s over a buffer far larger than the caches: the best of reps,
    since on a shared machine interference only ever lowers it."""
    buf = np.ones(mib * 1024 * 1024 // 4, dtype=np.float32)
    K.probe_read_bandwidth(buf, threads)  # fault the pages in
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        K.probe_read_bandwidth(buf, threads)
        times.append(time.perf_counter() - t0)
    return buf.nbytes / min(times) / 1e9


def fma_peak(threads, seconds=0.3, lanes=8):
    """Measured single-precision FMA throughput in GFLOP/s on `threads` threads, with 8-lane AVX2 FMAs
    or (lanes=16) 16-lane AVX-512 FMAs; None when the CPU or the build lacks that path."""
    if not (K.avx512_available() if lanes == 16 else K.avx2_available()):
        return None
    iters = 1_000_000
    t0 = time.perf_counter(); K.probe_fma(iters, threads, lanes); dt = time.perf_counter() - t0
    iters = max(iters, int(iters * seconds / max(dt, 1e-9)))
    best = 0.0
    for _ in range(5):      # best of 5: interference from other processes only lowers it
        t0 = time.perf_counter()
        flops = K.probe_fma(iters, threads, lanes)
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


_TORCH_GEMM_WORKER = """
import sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
print("ready", flush=True)
cache = {}
for line in sys.stdin:
    m, n, k, inner = map(int, line.split())
    if (m, n, k) not in cache:
        g = torch.Generator().manual_seed(0)
        cache[(m, n, k)] = (torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.empty(m, n))
    x, w, y = cache[(m, n, k)]
    torch.matmul(x, w.T, out=y)
    t0 = time.perf_counter()
    for _ in range(inner):
        torch.matmul(x, w.T, out=y)
    print((time.perf_counter() - t0) / inner, flush=True)
"""


class TorchGemm:
    """torch.matmul timed in a child process of its own (pytransformer.__main__.LineProcess says why)."""

    def __init__(self, threads):
        import sys
        from pytransformer.__main__ import LineProcess
        # started and torch imported before the first timing, so its start-up does not run beside it
        self.child = LineProcess([sys.executable, "-c", _TORCH_GEMM_WORKER, str(threads)],
                                 "the torch timing process", ready="ready")

    def timer(self, m, n, k):
        """For alternate_timed: run(inner) -> seconds per x (m, k) @ w.T (k, n) product."""
        return lambda inner: float(self.child.ask(f"{m} {n} {k} {inner}"))

    def close(self):
        self.child.close()


def torch_gemm_or_none(threads):
    """A TorchGemm when PyTorch is installed, else None (PyTorch is not imported here)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return None
    return TorchGemm(threads)
