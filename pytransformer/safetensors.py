"""Read and write the safetensors file format with NumPy alone (no torch, no pickle, no eval).

Layout of a safetensors file:
    8 bytes      little-endian unsigned header length N
    N bytes      UTF-8 JSON object: {"<name>": {"dtype": "F32", "shape": [..],
                 "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}} (optional)
    rest         raw little-endian, C-order tensor data; offsets are relative to its start

The file is treated as hostile: every header field is type- and bounds-checked before any
tensor data is touched, and every problem raises WeightsError naming the file and tensor.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from .errors import WeightsError

# Refuse headers above this size before reading them: a real header holds a few hundred bytes
# per tensor, so even models with 100k tensors stay far below it.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Numpy (before 2.0) supports at most 32 dimensions.
MAX_RANK = 32

# A tensor whose shape (zero dims counted as 1) would exceed this many bytes is absurd; numpy
# itself rejects such shapes even when one dimension is 0 and the tensor holds no data.
MAX_VIRTUAL_BYTES = 1 << 48

# Safetensors dtype name -> little-endian numpy dtype used to view the raw bytes. BF16 has no
# numpy equivalent, so it is returned as its raw uint16 bit pattern (see to_float32).
DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),  # read as bytes, then turned into a real bool array (see below)
}

# Numpy dtype (kind, itemsize) -> safetensors name, for writing. BF16 is only written on
# request, through write_safetensors(dtypes={name: "BF16"}) with a uint16 bit-pattern array.
_NAME_OF_NUMPY = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8",
    ("b", 1): "BOOL",
}

_METADATA_KEY = "__metadata__"
_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))


class TensorInfo(NamedTuple):
    """One validated header entry. begin/end are byte offsets relative to the data section."""
    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int


class SafetensorsHeader(NamedTuple):
    """A validated header: tensor entries in file order, metadata, and where data starts."""
    tensors: Dict[str, TensorInfo]
    metadata: Dict[str, str]
    data_start: int  # absolute file offset of the data section (8 + header length)


# ---------------------------------------------------------------------------------------------
# JSON helpers (shared with the config.json reader in weights.py)

def _reject_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            # json.loads would silently keep the last value; a hostile file could use that to
            # show one tensor to one reader and another to us.
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def parse_json_object(raw: bytes, where: str) -> dict:
    """Parse UTF-8 JSON bytes that must hold one object (dict); `where` names the source."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{where}: not valid UTF-8 ({exc})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise WeightsError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{where}: must be a JSON object, found {type(obj).__name__}")
    return obj


def open_regular_file(path: str):
    """Open `path` for binary reading, refusing anything but a regular file: open() on a FIFO
    blocks until a writer appears (forever), and devices can be endless."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # OSError: the caller's
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WeightsError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


# ---------------------------------------------------------------------------------------------
# Header validation

def _is_int(value) -> bool:
    # bool is a subclass of int in Python; JSON true/false must not pass as 1/0.
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_entry(path: str, name: str, entry, data_size: int) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise WeightsError(f"{where}: header entry must be an object, found {type(entry).__name__}")
    keys = set(entry)
    if keys != _ENTRY_KEYS:
        missing = sorted(_ENTRY_KEYS - keys)
        extra = sorted(keys - _ENTRY_KEYS)
        raise WeightsError(f"{where}: header entry must have exactly dtype, shape and "
                           f"data_offsets (missing {missing}, unexpected {extra})")

    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise WeightsError(f"{where}: unsupported dtype {dtype!r} "
                           f"(supported: {', '.join(DTYPES)})")

    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise WeightsError(f"{where}: shape must be a list of non-negative integers, "
                           f"found {shape!r}")
    if len(shape) > MAX_RANK:
        raise WeightsError(f"{where}: shape has {len(shape)} dimensions (at most {MAX_RANK})")

    offsets = entry["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)):
        raise WeightsError(f"{where}: data_offsets must be a list of two integers, "
                           f"found {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise WeightsError(f"{where}: data_offsets [{begin}, {end}] outside the data section "
                           f"of {data_size} bytes (file truncated or header corrupt)")

    itemsize = DTYPES[dtype].itemsize
    # Python ints do not overflow, so these products are exact however large the shape is.
    if math.prod(max(d, 1) for d in shape) * itemsize > MAX_VIRTUAL_BYTES:
        raise WeightsError(f"{where}: absurd shape {shape}")
    nbytes = math.prod(shape) * itemsize
    if end - begin != nbytes:
        raise WeightsError(f"{where}: shape {shape} with dtype {dtype} needs {nbytes} bytes "
                           f"but data_offsets [{begin}, {end}] span {end - begin}")
    return TensorInfo(dtype, tuple(shape), begin, end)


def _check_no_overlap(path: str, tensors: Mapping[str, TensorInfo]) -> None:
    # Zero-length ranges hold no bytes and cannot overlap anything. Gaps between tensors are
    # tolerated (some writers align tensor data); only shared bytes are rejected.
    spans = sorted((info.begin, info.end, name) for name, info in tensors.items()
                   if info.end > info.begin)
    for (_, prev_end, prev_name), (begin, _, name) in zip(spans, spans[1:]):
        if begin < prev_end:
            raise WeightsError(f"{path}: tensors {prev_name!r} and {name!r} overlap "
                               f"(bytes from {begin} to {prev_end} are shared)")


def _parse_header(path: str, prefix: bytes, file_size: int, read_header,
                  max_header_bytes: Optional[int] = None) -> SafetensorsHeader:
    """Validate the header. `prefix` is the first 8 bytes; read_header(n) returns the n header
    bytes and is only called once n has been bounds-checked."""
    if file_size < 8:
        raise WeightsError(f"{path}: file is {file_size} bytes, too small for a safetensors "
                           f"header (needs at least 8)")
    header_len = int.from_bytes(prefix, "little")
    if header_len > file_size - 8:
        raise WeightsError(f"{path}: header length {header_len} exceeds the file size "
                           f"({file_size} bytes); not a safetensors file or truncated")
    if max_header_bytes is None:
        max_header_bytes = MAX_HEADER_BYTES
    if header_len > max_header_bytes:
        raise WeightsError(f"{path}: header length {header_len} exceeds the limit of "
                           f"{max_header_bytes} bytes")
    header = parse_json_object(read_header(header_len), f"{path}: safetensors header")

    metadata = header.pop(_METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError(f"{path}: {_METADATA_KEY} must map strings to strings, "
                           f"found {metadata!r}")

    data_start = 8 + header_len
    data_size = file_size - data_start
    tensors = {name: _validate_entry(path, name, entry, data_size)
               for name, entry in header.items()}
    _check_no_overlap(path, tensors)
    return SafetensorsHeader(tensors, metadata, data_start)


def read_safetensors_header(path) -> SafetensorsHeader:
    """Read and validate only the header (names, dtypes, shapes, offsets, metadata)."""
    path = os.fspath(path)
    try:
        with open_regular_file(path) as f:
            file_size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)

            def read_header(n):
                data = f.read(n)
                if len(data) != n:
                    raise WeightsError(f"{path}: file shrank while reading its header")
                return data

            return _parse_header(path, prefix, file_size, read_header)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read safetensors file "
                           f"({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------------
# Reading

def _tensor_from_map(buf: mmap.mmap, data_start: int, info: TensorInfo) -> np.ndarray:
    stored = DTYPES[info.dtype]
    offset = data_start + info.begin
    count = (info.end - info.begin) // stored.itemsize
    if count == 0:
        array = np.empty(info.shape, dtype=stored)
    else:
        array = np.frombuffer(buf, dtype=stored, count=count, offset=offset).reshape(info.shape)
        # The mapping starts page-aligned, so the absolute offset decides alignment. Unaligned
        # or byte-swapped data is copied once so that compiled kernels always get native,
        # aligned memory; aligned native data stays a read-only view of the mapping.
        if not stored.isnative or offset % stored.itemsize:
            array = np.array(array, dtype=stored.newbyteorder("="), order="C")
    if info.dtype == "BOOL":
        array = array != 0  # any non-zero byte is true; a raw view would give invalid bools
    return array


def release_pages(array: np.ndarray) -> None:
    """Tell the OS that this process is done with the file pages under `array`, a view of a
    mapping made by this module (anything else is ignored).

    Loading packs every weight into a new buffer; without this, the mapped file pages it read
    stay resident too, and peak memory during load is about twice the model. The pages of a
    shared read-only file mapping are only dropped from this process's page tables: reading the
    array again faults them back in from the page cache, so nothing is lost if the range (rounded
    out to whole pages) covers a neighbouring tensor as well."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        # numpy views chain through .base; np.frombuffer(mapping) ends in a memoryview of it
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if advice is None or base is None or base.closed or array.size == 0:
        return
    try:
        start_addr = np.frombuffer(base, dtype=np.uint8, count=1).ctypes.data
        begin = array.ctypes.data - start_addr
        end = begin + array.nbytes
        page = mmap.PAGESIZE
        begin -= begin % page
        end = min(len(base), -(-end // page) * page)
        if 0 <= begin < end:
            base.madvise(advice, begin, end - begin)
    except (OSError, ValueError):  # advice is best effort
        pass


def read_safetensors_with_header(path, max_header_bytes: Optional[int] = None
                                 ) -> Tuple[SafetensorsHeader, Dict[str, np.ndarray]]:
    """Memory-map a safetensors file; return its validated header and its tensors.

    Tensors are read-only views into the mapping where possible (native byte order, offset
    aligned to the item size), copies otherwise. BF16 tensors come back as uint16 bit
    patterns; use to_float32(array, "BF16") to widen them. The mapping stays open for as
    long as any returned view is alive.
    """
    path = os.fspath(path)
    try:
        with open_regular_file(path) as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size < 8:
                raise WeightsError(f"{path}: file is {file_size} bytes, too small for a "
                                   f"safetensors header (needs at least 8)")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read safetensors file "
                           f"({exc.strerror or exc})") from None

    # Sizes come from the mapping itself so header checks and data accesses agree.
    size = len(buf)
    header = _parse_header(path, buf[:8], size, lambda n: buf[8:8 + n], max_header_bytes)
    tensors = {name: _tensor_from_map(buf, header.data_start, info)
               for name, info in header.tensors.items()}
    return header, tensors


def read_safetensors(path) -> Dict[str, np.ndarray]:
    """Memory-map a safetensors file and return {name: array} (see read_safetensors_with_header)."""
    return read_safetensors_with_header(path)[1]


def to_float32(array: np.ndarray, dtype_name: str) -> np.ndarray:
    """Widen a floating tensor read from a safetensors file to float32.

    F32 arrays are returned unchanged (no copy); F16 and F64 are converted; BF16 arrays (uint16
    bit patterns, as read_safetensors returns them) become the float32 values whose upper 16
    bits they are, which is exact.
    """
    if dtype_name == "F32":
        return array
    if dtype_name in ("F16", "F64"):
        return array.astype(np.float32)
    if dtype_name == "BF16":
        if array.dtype.kind != "u" or array.dtype.itemsize != 2:
            raise WeightsError(f"BF16 data must be held as uint16 bit patterns, got {array.dtype}")
        return (array.astype(np.uint32) << 16).view(np.float32)
    raise WeightsError(f"cannot convert dtype {dtype_name!r} to float32 "
                       f"(expected F32, F16, BF16 or F64)")


def float32_to_bf16(array: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); return the uint16 bit patterns.

    Used to write BF16 files (write_safetensors(..., dtypes={name: "BF16"})). NaN stays NaN.
    """
    bits = np.asarray(array, dtype=np.float32, order="C").view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    # Rounding could carry a NaN's payload into the exponent and make it infinite; keep NaN.
    nan = np.isnan(array)
    return np.where(nan, (bits >> 16).astype(np.uint16) | 0x0040, rounded).astype(np.uint16)


# ---------------------------------------------------------------------------------------------
# Writing

def _dtype_name(name: str, array: np.ndarray, requested: Optional[str]) -> str:
    natural = _NAME_OF_NUMPY.get((array.dtype.kind, array.dtype.itemsize))
    if requested is None:
        if natural is None:
            raise WeightsError(f"tensor {name!r}: dtype {array.dtype} cannot be stored in "
                               f"safetensors")
        return natural
    if requested == "BF16" and natural == "U16":
        return "BF16"
    if requested != natural:
        raise WeightsError(f"tensor {name!r}: cannot store a {array.dtype} array as "
                           f"{requested!r} (BF16 needs uint16 bit patterns, see float32_to_bf16)")
    return requested


def write_safetensors(path, tensors: Mapping[str, np.ndarray],
                      metadata: Optional[Mapping[str, str]] = None,
                      dtypes: Optional[Mapping[str, str]] = None) -> None:
    """Write tensors to a safetensors file atomically (temporary file, then rename).

    The header is padded with spaces so the data section starts at a multiple of 8, and
    tensors are laid out by decreasing item size so every tensor is aligned to its item size.
    Data is written C-ordered and little-endian. `dtypes` optionally overrides the stored
    dtype name of some tensors; its only use is {"name": "BF16"} for uint16 bit patterns.
    """
    path = os.fspath(path)
    dtypes = dict(dtypes or {})
    unknown = sorted(set(dtypes) - set(tensors))
    if unknown:
        raise WeightsError(f"{path}: dtypes given for tensors that are not written: {unknown}")
    if metadata is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError(f"{path}: metadata must map strings to strings")

    prepared = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == _METADATA_KEY:
            raise WeightsError(f"{path}: invalid tensor name {name!r}")
        array = np.asarray(value)
        dtype_name = _dtype_name(name, array, dtypes.get(name))
        little = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        # np.asarray, not ascontiguousarray, which would turn a 0-d array into shape (1,).
        prepared.append((name, dtype_name, np.asarray(array, dtype=little, order="C")))
    # Decreasing item size keeps every offset a multiple of its tensor's item size.
    prepared.sort(key=lambda item: (-item[2].dtype.itemsize, item[0]))

    header = {}
    if metadata:
        header[_METADATA_KEY] = dict(metadata)
    offset = 0
    for name, dtype_name, array in prepared:
        header[name] = {"dtype": dtype_name, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)

    def write_body(f):
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for _, _, array in prepared:
            if array.nbytes:
                f.write(array.reshape(-1).view(np.uint8).data)

    atomic_write(path, write_body)


def atomic_write(path: str, write_body) -> None:
    """Call write_body(binary file) on a temporary file beside `path`, flush it to disk and
    rename it over `path`, so readers never see a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    unique = f"{os.getpid()}-{os.urandom(4).hex()}"
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{unique}")
    try:
        # open(..., "xb") gives normal umask permissions, unlike tempfile.mkstemp (0600).
        with open(tmp, "xb") as f:
            write_body(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

