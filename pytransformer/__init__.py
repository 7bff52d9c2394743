"""pytransformer - fast CPU inference for Transformer encoder-decoder models.

    import pytransformer
    model = pytransformer.load("weights/dates")          # a model directory
    tokens = model.generate([[5, 17, 9, 2]], max_new_tokens=32)

Kernels are C with OpenMP and AVX2+FMA (chosen at run time); NumPy is the only dependency.
"""
import os

from ._kernels import (cpu_info, get_isa, get_num_threads, openmp_enabled, set_num_threads)
from . import ops
from .errors import WeightsError
from .decoding import get_cache_limit, set_cache_limit
from .model import Model
from .weights import save, load_weights

__version__ = "0.1.0"

__all__ = ["load", "save", "Model", "WeightsError", "ops", "cpu_info", "get_isa", "openmp_enabled",
           "set_num_threads", "get_num_threads", "set_cache_limit", "get_cache_limit", "__version__"]


def load(path):
    """Load a model directory into a Model: pytransformer's own format (config.json +
    model.safetensors, optional vocab.json) or a Hugging Face directory of a supported family
    (MarianMT, BART/mBART, T5/flan-T5, M2M100/NLLB). Weights are validated, memory-mapped and
    packed once for the GEMM."""
    from . import hf
    from .text import check_compatible, load_tokenizer
    path = os.fspath(path)
    if hf.is_hf_directory(path):      # a Hugging Face directory, read as it is
        return hf.load_hf(path)
    config, tensors = load_weights(path)
    model = Model(config, tensors, path=path)
    tokenizer = load_tokenizer(path)
    if tokenizer is not None:
        check_compatible(tokenizer, config, where=path)
        model.tokenizer = tokenizer
    return model
