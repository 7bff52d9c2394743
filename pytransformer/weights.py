"""Model directories (config.json + model.safetensors): validated loading and saving.

load_weights() memory-maps model.safetensors and checks it against the tensor list implied
by config.json (config.expected_tensors); save() writes a directory that load_weights()
accepts. Both treat mismatches as WeightsError naming the file and the tensor or key.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Tuple, Union

import numpy as np

from .config import FORMAT_NAME, FORMAT_VERSION, ModelConfig, expected_tensors
from .errors import WeightsError
from .safetensors import (atomic_write, open_regular_file, parse_json_object, read_safetensors_with_header,
                          to_float32, write_safetensors)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# A config.json is a few hundred bytes; refuse to read anything absurdly larger.
MAX_CONFIG_BYTES = 1 << 20
# Stored dtypes the loader accepts; F16 and BF16 are widened to float32 once, at load.
LOADABLE_DTYPES = ("F32", "F16", "BF16")


def _list_names(names, limit: int = 8) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_tensor_shapes(config: ModelConfig, shapes: Mapping[str, Tuple[int, ...]],
                        where: str) -> None:
    """Raise WeightsError unless `shapes` holds exactly the tensors the config implies."""
    expected = expected_tensors(config)
    missing = expected.keys() - shapes.keys()
    if missing:
        raise WeightsError(f"{where}: missing tensor(s) required by the config: "
                           f"{_list_names(missing)}")
    unexpected = shapes.keys() - expected.keys()
    if unexpected:
        raise WeightsError(f"{where}: unexpected tensor(s) not implied by the config: "
                           f"{_list_names(unexpected)}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise WeightsError(f"{where}: tensor {name!r} has shape {list(shapes[name])}, "
                               f"the config implies {list(shape)}")


def read_config(path) -> ModelConfig:
    """Read and validate <path>/config.json."""
    config_path = os.path.join(os.fspath(path), CONFIG_FILE)
    try:
        with open_regular_file(config_path) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise WeightsError(f"{config_path}: not found; a model directory holds "
                           f"{CONFIG_FILE} and {WEIGHTS_FILE}") from None
    except OSError as exc:
        raise WeightsError(f"{config_path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise WeightsError(f"{config_path}: larger than {MAX_CONFIG_BYTES} bytes; "
                           f"not a model config")
    return ModelConfig.from_dict(parse_json_object(raw, config_path), source=config_path)


def load_weights(path) -> Tuple[ModelConfig, Dict[str, np.ndarray]]:
    """Load a model directory: return its config and {tensor name: float32 array}.

    F32 tensors are read-only views of the memory-mapped file (no copy, pages load on first
    touch); F16 and BF16 tensors are converted to new float32 arrays. Every tensor the config
    implies must be present with exactly its shape, and nothing else may be.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise WeightsError(f"{path}: not a model directory (expected a directory holding "
                           f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    config = read_config(path)
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise WeightsError(f"{weights_path}: not found")
    # A header holds ~100 bytes per tensor; parsing JSON costs up to ~25x its size in objects, so
    # refuse (before parsing) anything far larger than the tensors the config implies need.
    header_limit = (1 << 20) + 1024 * len(expected_tensors(config))
    header, raw = read_safetensors_with_header(weights_path, max_header_bytes=header_limit)

    check_tensor_shapes(config, {name: info.shape for name, info in header.tensors.items()},
                        weights_path)
    for name, info in header.tensors.items():
        if info.dtype not in LOADABLE_DTYPES:
            raise WeightsError(f"{weights_path}: tensor {name!r} has dtype {info.dtype}; "
                               f"weights must be {', '.join(LOADABLE_DTYPES)}")
    # Return tensors in the config's canonical order, whatever order the file used.
    tensors = {name: to_float32(raw[name], header.tensors[name].dtype)
               for name in expected_tensors(config)}
    return config, tensors


def save(path, config: Union[ModelConfig, Mapping], tensors: Mapping[str, np.ndarray]) -> str:
    """Write a model directory that load_weights() accepts; return its path.

    `config` is a ModelConfig or a dict of config.json keys ("format" and "format_version"
    may be left out). `tensors` must hold exactly the tensors the config implies (see
    expected_tensors), as finite floating-point arrays of the right shapes; they are stored
    as float32. The directory is created if needed; both files are replaced atomically.
    """
    path = os.fspath(path)
    if not isinstance(config, ModelConfig):
        if not isinstance(config, Mapping):
            raise WeightsError(f"config must be a ModelConfig or a dict, "
                               f"found {type(config).__name__}")
        config = ModelConfig.from_dict(
            {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **config})

    arrays = {}
    for name, value in tensors.items():
        array = np.asarray(value)
        if array.dtype.kind != "f":
            raise WeightsError(f"tensor {name!r}: expected a floating-point array, "
                               f"found dtype {array.dtype}")
        arrays[name] = array
    where = os.path.join(path, WEIGHTS_FILE)
    check_tensor_shapes(config, {name: a.shape for name, a in arrays.items()}, where)

    stored = {}
    for name in expected_tensors(config):
        array = np.asarray(arrays[name], dtype="<f4", order="C")
        if not np.isfinite(array).all():
            raise WeightsError(f"tensor {name!r}: contains NaN or infinite values "
                               f"(after conversion to float32)")
        stored[name] = array

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot create model directory "
                           f"({exc.strerror or exc})") from None
    write_safetensors(where, stored, metadata={"format": FORMAT_NAME,
                                               "format_version": str(FORMAT_VERSION)})
    config_text = json.dumps(config.to_dict(), indent=2, allow_nan=False) + "\n"
    atomic_write(os.path.join(path, CONFIG_FILE),
                 lambda f: f.write(config_text.encode("utf-8")))
    return path
