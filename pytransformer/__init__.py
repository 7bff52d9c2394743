"""pytransformer - fast CPU inference for Transformer encoder-decoder models.

    import pytransformer
    model = pytransformer.load("weights/dates")          # a model directory
    tokens = model.generate([[5, 17, 9, 2]], max_new_tokens=32)

Kernels are C with OpenMP and AVX2+FMA (chosen at run time); NumPy is the only dependency.
"""
import os


def _import_kernels():
    """Import the compiled kernels with GNU OpenMP's waiting threads set to sleep, not spin.

    libgomp reads OMP_WAIT_POLICY once, when it is loaded (which importing _kernels does). Spinning
    workers save a few microseconds per parallel region on an idle machine, but when another
    process holds a core they burn the time slice the thread they wait for needs: with one busy
    process on 2 cores a decode step measured 15-25x slower. The variable is set only for that
    load and only if the user set neither it nor GOMP_SPINCOUNT; it does not leak into the
    environment of this process or its children. The GEMMs, attention, norms, embedding gather and
    output screen do not use these threads when they can help it: they run on pytransformer's own
    worker team (csrc/pt_pool.h), which spins a short, bounded time between a decode step's loops
    and stops spinning on contended cores."""
    chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if not chosen:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from . import _kernels
    finally:
        if not chosen:
            del os.environ["OMP_WAIT_POLICY"]
    return _kernels


_import_kernels()
from ._kernels import (cpu_info, get_isa, get_num_threads, openmp_enabled, set_num_threads)  # noqa: E402
from . import ops
from .errors import WeightsError
from .decoding import get_cache_limit, set_cache_limit
from .model import Model
from .weights import save, load_weights

__version__ = "0.1.0"

__all__ = ["load", "save", "Model", "WeightsError", "ops", "cpu_info", "get_isa", "openmp_enabled",
           "set_num_threads", "get_num_threads", "set_cache_limit", "get_cache_limit", "__version__"]


def load(path, output_screen=True, huge_pages=True):
    """Load a model directory into a Model: pytransformer's own format (config.json +
    model.safetensors, optional vocab.json) or a Hugging Face directory of a supported family
    (MarianMT, BART/mBART, T5/flan-T5, M2M100/NLLB). Weights are validated, memory-mapped and
    packed once for the GEMM.

    output_screen=False: never keep the 8-bit copy of the output projection that speeds up
    greedy decoding of small batches (a quarter of the projection's size in memory; same tokens either
    way; see Model.set_output_screen).

    huge_pages (default True): keep the decoder layers' packed weights (and the 8-bit copy) on
    transparent huge pages where the system allows (Linux; elsewhere, or with THP set to "never",
    ordinary pages). A decode step streams all of them, and on 4 KiB pages that is a TLB miss every
    4 KiB: greedy decoding of the opus-mt-size model at batch 1, both loads alternated in one
    process, took 0.88-0.94x the time on 2 threads and 0.86x on 1 (batch 16: 0.99x). The encoder's
    and the output projection's packed weights, which do not gain from huge pages, are then kept
    off them. False packs everything into ordinary arrays. First touches of huge pages are cheaper
    than of 4 KiB pages on memory the machine already backs, but on a virtual machine that hands
    freed memory back to its host they can cost more, which is why only the weights that gain
    from them get them: on ours, right after other large processes had exited, load to first
    token took 0.27-0.37 s with the default and 0.33-0.36 s with False (four alternated pairs).
    Same results either way."""
    from . import hf
    from .text import check_compatible, load_tokenizer
    if not isinstance(output_screen, bool):
        raise TypeError(f"output_screen must be True or False, got {output_screen!r}")
    if not isinstance(huge_pages, bool):
        raise TypeError(f"huge_pages must be True or False, got {huge_pages!r}")
    path = os.fspath(path)
    if hf.is_hf_directory(path):      # a Hugging Face directory, read as it is
        return hf.load_hf(path, output_screen=output_screen, huge_pages=huge_pages)
    config, tensors = load_weights(path)
    model = Model(config, tensors, path=path, output_screen=output_screen, huge_pages=huge_pages)
    tokenizer = load_tokenizer(path)
    if tokenizer is not None:
        check_compatible(tokenizer, config, where=path)
        model.tokenizer = tokenizer
    return model
