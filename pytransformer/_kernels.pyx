# _kernels.pyx - checked NumPy bindings for the C kernels: validate, then call the selected ISA path without the GIL.
#
# Everything here takes float32 arrays whose last axis is contiguous (other axes may be strided),
# raises TypeError/ValueError quoting shapes for bad input, and never lets a bad pointer reach C.
# ISA selection: chosen once at import from CPUID (the widest available), overridable by
# PYTRANSFORMER_ISA=generic|avx2|avx512
# and by set_isa() (tests use it to run every path in one process). The avx512 path differs from
# avx2 only in the GEMM; the other kernels run their AVX2 versions under it.
import os
import warnings

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, uint32_t
from libc.limits cimport INT_MAX
from libc.math cimport sqrt

from pytransformer._kernels cimport *

cnp.import_array()

ACTIVATIONS = {"none": PT_ACT_NONE, "relu": PT_ACT_RELU, "gelu": PT_ACT_GELU,
               "gelu_tanh": PT_ACT_GELU_TANH, "silu": PT_ACT_SILU}
PANEL_WIDTH = PT_NR

# ---------------------------------------------------------------- runtime state
cdef enum:
    ISA_GENERIC = 0
    ISA_AVX2 = 1
    ISA_AVX512 = 2
ISA_NAMES = ("generic", "avx2", "avx512")
cdef int _isa = ISA_GENERIC   # the path in use
cdef int _isa_avx2 = 0        # 1 when the AVX2 versions of the non-GEMM kernels are used (avx2, avx512)
cdef int _nthreads = 1
cdef int _omp_used = 0         # a kernel was called with more than one thread: the OpenMP pool may exist
cdef int _fork_safe_mode = 0   # forked after the pool existed: OpenMP would hang here, stay serial

_FORK_WARNING = ("pytransformer: this process was forked after its parent ran multi-threaded kernels, and "
                 "the OpenMP runtime cannot be used after such a fork; kernels run single-threaded in this "
                 "process. To keep threads, load the model but run no inference before forking, or start "
                 "workers with the 'spawn' or 'forkserver' method.")


def avx2_available():
    """True when the AVX2+FMA kernels are compiled in and this CPU supports them."""
    return pt_cpu_has_avx2_fma() != 0


def avx512_available():
    """True when the AVX-512 GEMM is compiled in and this CPU supports AVX-512F."""
    return pt_cpu_has_avx512() != 0


def available_isas():
    """The kernel paths this build can run on this CPU, portable first."""
    return [n for n, ok in zip(ISA_NAMES, (True, avx2_available(), avx512_available())) if ok]


def set_isa(str name):
    """Select the kernel path: 'generic' (portable C), 'avx2' (AVX2+FMA) or 'avx512' (AVX-512F GEMM)."""
    global _isa, _isa_avx2
    if name not in ISA_NAMES:
        raise ValueError(f"unknown ISA {name!r}: expected one of {', '.join(ISA_NAMES)}")
    if name == "avx2" or name == "avx512":
        if not pt_avx2_compiled():
            raise RuntimeError(f"ISA {name!r} requested, but this build of pytransformer has no AVX2 kernels "
                               "(the compiler could not target AVX2+FMA)")
        if not pt_cpu_has_avx2_fma():
            raise RuntimeError(f"ISA {name!r} requested, but this CPU does not support AVX2 and FMA")
    if name == "avx512":
        if not pt_avx512_compiled():
            raise RuntimeError("ISA 'avx512' requested, but this build of pytransformer has no AVX-512 kernels")
        if not pt_cpu_has_avx512():
            raise RuntimeError("ISA 'avx512' requested, but this CPU does not support AVX-512F")
    _isa = ISA_NAMES.index(name)
    _isa_avx2 = 1 if _isa >= ISA_AVX2 else 0


def get_isa():
    """The kernel path in use: 'generic', 'avx2' or 'avx512'."""
    return ISA_NAMES[_isa]


def openmp_enabled():
    """True if the kernels were built with OpenMP (multi-threaded)."""
    return pt_openmp_enabled() != 0


def set_num_threads(n):
    """Set the number of threads the kernels use (>= 1). Without OpenMP only 1 is meaningful."""
    global _nthreads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"number of threads must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    if _fork_safe_mode and n > 1:
        warnings.warn(_FORK_WARNING, RuntimeWarning, stacklevel=2)
        n = 1
    _nthreads = int(n) if pt_openmp_enabled() else 1


def get_num_threads():
    """The number of threads the kernels use."""
    return _nthreads


def release_free_heap():
    """Return the heap memory malloc keeps free to the operating system (glibc; elsewhere a no-op).
    True if some was returned."""
    return pt_release_free_heap() != 0


def cpu_info():
    """CPU features found, the kernel path in use, threads and OpenMP status."""
    return {
        "features": {f: bool(pt_cpu_has(f.encode()))
                     for f in ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512vnni")},
        "avx2_compiled": bool(pt_avx2_compiled()),
        "avx512_compiled": bool(pt_avx512_compiled()),
        "avx512_vnni_compiled": bool(pt_avx512_vnni_compiled()),
        "isa": get_isa(),
        "openmp": openmp_enabled(),
        "num_threads": _nthreads,
        "num_procs": pt_num_procs(),
        "fork_safe_mode": bool(_fork_safe_mode),
        "thread_pool": bool(pt_pool_available()),
        "l2_bytes": int(pt_cpu_l2_bytes()),
        "gemm_l2_bytes": int(pt_gemm_l2_bytes()),
    }


def gemm_l2_bytes():
    """The per-core L2 size (bytes) the GEMM's cache blocks are fitted to: the one set with
    set_gemm_l2_bytes, else the detected one, else 0 (unknown: the blocks measured best on a 2 MiB L2)."""
    return int(pt_gemm_l2_bytes())


def set_gemm_l2_bytes(nbytes):
    """Fit the GEMM's cache blocks to a per-core L2 of nbytes (0: back to the detected size), e.g.
    where a virtual machine reports the cache wrongly. Results are bitwise the same at any setting."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    n = int(nbytes)
    if n != 0 and not PT_GEMM_MIN_L2_BYTES <= n <= PT_GEMM_MAX_L2_BYTES:
        raise ValueError(f"nbytes must be 0 (the detected size) or between {PT_GEMM_MIN_L2_BYTES} and "
                         f"{PT_GEMM_MAX_L2_BYTES}, got {n}")
    _status(pt_gemm_set_l2_bytes(<size_t>n), "set_gemm_l2_bytes")


def gemm_fit_l2(tuned_bytes):
    """A block size measured best on a 2 MiB L2 (bytes), as fitted to gemm_l2_bytes(); for tests."""
    if tuned_bytes < 0:
        raise ValueError(f"tuned_bytes must be >= 0, got {tuned_bytes}")
    return int(pt_gemm_fit_l2(<size_t>tuned_bytes))


def set_thread_pool(bint enabled):
    """Run the multi-threaded GEMMs, attention, norms, embedding gather and output screen on
    pytransformer's worker team (True, the default on Linux) or on OpenMP's threads (False), e.g.
    to compare the two in one process. Results are bitwise the same."""
    pt_pool_set_enabled(1 if enabled else 0)


def thread_pool_stats():
    """The worker team (csrc/pt_pool.h): whether it is used in this process, workers started,
    parallel loops it ran, and times a worker stopped spinning because it had been preempted."""
    return {"available": bool(pt_pool_available()), "workers": pt_pool_workers(),
            "loops": pt_pool_loops(), "backoffs": pt_pool_backoffs()}


def _after_fork_in_child():
    """GNU OpenMP's thread pool does not survive fork(): a parallel region in the child would wait
    forever for workers that do not exist. If the parent had started the pool, run serial here."""
    global _nthreads, _fork_safe_mode
    if _omp_used and pt_openmp_enabled():
        _fork_safe_mode = 1
        if _nthreads > 1:
            _nthreads = 1
            warnings.warn(_FORK_WARNING, RuntimeWarning)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _init_runtime():
    global _nthreads
    env_threads = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    n = pt_num_procs()
    if env_threads.isdigit() and int(env_threads) >= 1:
        n = int(env_threads)
    _nthreads = max(1, n) if pt_openmp_enabled() else 1
    forced = os.environ.get("PYTRANSFORMER_ISA", "").strip().lower()
    if forced:
        set_isa(forced)  # raises if the CPU or build lacks it
    else:
        # the widest path: the AVX-512 GEMM measured 1.6x the AVX2 one on compute-bound shapes here
        # (README); the others run their AVX2 kernels under it. (wraparound is off here: no [-1])
        isas = available_isas()
        set_isa(isas[len(isas) - 1])


_init_runtime()


# ---------------------------------------------------------------- argument checks
cdef inline str _shape(object a):
    return "(" + ", ".join([str(s) for s in a.shape]) + ")"


cdef cnp.ndarray _check(object a, str name, int ndim, bint writable=False):
    """a must be a float32 ndarray with `ndim` dims, non-empty, last axis contiguous, float-aligned strides."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32:
        raise TypeError(f"{name} must have dtype float32, got {arr.dtype} with shape {_shape(arr)}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {_shape(arr)}")
    cdef int i
    for i in range(ndim):
        if arr.shape[i] == 0:
            raise ValueError(f"{name} has an empty dimension: shape {_shape(arr)}")
        if arr.shape[i] > INT_MAX:
            raise ValueError(f"{name} dimension {i} is too large: shape {_shape(arr)}")
        if arr.strides[i] % 4 != 0:
            raise ValueError(f"{name} has strides {a.strides} that are not a multiple of 4 bytes")
    if ndim > 0 and arr.shape[ndim - 1] > 1 and arr.strides[ndim - 1] != 4:
        raise ValueError(f"{name} must be contiguous along its last axis (shape {_shape(arr)}, "
                         f"strides {a.strides}); pass np.ascontiguousarray({name})")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{name} is not aligned to 4 bytes")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} is read-only")
    return arr


cdef inline Py_ssize_t _ld(cnp.ndarray arr, int axis):
    return arr.strides[axis] // 4


cdef inline const float *_cptr(cnp.ndarray arr):
    return <const float *>cnp.PyArray_DATA(arr)


cdef inline float *_ptr(cnp.ndarray arr):
    return <float *>cnp.PyArray_DATA(arr)


cdef cnp.ndarray _vector(object v, str name, Py_ssize_t n):
    cdef cnp.ndarray arr = _check(v, name, 1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {_shape(arr)}")
    if arr.shape[0] > 1 and arr.strides[0] != 4:
        raise ValueError(f"{name} must be contiguous")
    return arr


cdef cnp.ndarray _out2(object out, str name, Py_ssize_t rows, Py_ssize_t cols):
    if out is None:
        return np.empty((rows, cols), dtype=np.float32)
    cdef cnp.ndarray arr = _check(out, name, 2, True)
    if arr.shape[0] != rows or arr.shape[1] != cols:
        raise ValueError(f"{name} must have shape ({rows}, {cols}), got {_shape(arr)}")
    return arr


cdef bint _overlaps(cnp.ndarray x, cnp.ndarray y):
    if x is None or y is None:
        return False
    # the bounds test is cheap; the exact test only runs when the bounds overlap
    return np.may_share_memory(x, y) and np.shares_memory(x, y)


cdef inline void _mark_threads_used():
    global _omp_used
    _omp_used = 1


cdef bint _all_in_range(cnp.ndarray lengths, int lo, int hi):
    """lengths: contiguous int32 (n,); True if every entry lies in [lo, hi]."""
    cdef const int32_t *p = <const int32_t *>cnp.PyArray_DATA(lengths)
    cdef Py_ssize_t i
    for i in range(lengths.shape[0]):
        if p[i] < lo or p[i] > hi:
            return False
    return True


cdef int _act_id(object act) except -1:
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[act]
    if isinstance(act, bool) or not isinstance(act, (int, np.integer)) or not 0 <= act < PT_ACT_COUNT:
        raise ValueError(f"unknown activation {act!r}")
    return act


cdef int _status(int status, str what) except -1:
    if status == PT_OK:
        return 0
    if status == PT_ERR_ISA:
        raise RuntimeError(f"{what}: the selected ISA path is not available in this build")
    raise ValueError(f"{what}: the kernel rejected its arguments (status {status})")


# ---------------------------------------------------------------- GEMM
cdef class PackedMatrix:
    """A (k, n) float32 matrix packed once into 16-column panels for the GEMM micro-kernel.

    Build with pack(b) for a (k, n) matrix or pack(w, transpose=True) for a (n, k) Linear weight.
    """
    cdef readonly int k
    cdef readonly int n
    cdef readonly object data

    def __init__(self):
        raise TypeError("use pytransformer._kernels.pack() to build a PackedMatrix")

    @property
    def shape(self):
        return (self.k, self.n)

    @property
    def nbytes(self):
        return self.data.nbytes

    def __repr__(self):
        return f"PackedMatrix(k={self.k}, n={self.n})"


cdef tuple _pack_source(object b, bint transpose):
    """Checks a matrix to pack; returns (array with element strides, k, n, row stride, column stride)."""
    if not isinstance(b, np.ndarray):
        raise TypeError(f"matrix to pack must be a numpy.ndarray, got {type(b).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>b
    if arr.dtype != np.float32:
        raise TypeError(f"matrix to pack must have dtype float32, got {arr.dtype} with shape {_shape(arr)}")
    if arr.ndim != 2:
        raise ValueError(f"matrix to pack must be 2-D, got shape {_shape(arr)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"matrix to pack has an empty dimension: shape {_shape(arr)}")
    if arr.shape[0] > INT_MAX or arr.shape[1] > INT_MAX:
        raise ValueError(f"matrix to pack is too large: shape {_shape(arr)}")
    if arr.strides[0] % 4 or arr.strides[1] % 4 or not arr.flags.aligned:
        arr = np.ascontiguousarray(arr)
    if transpose:
        return arr, arr.shape[1], arr.shape[0], arr.strides[1] // 4, arr.strides[0] // 4
    return arr, arr.shape[0], arr.shape[1], arr.strides[0] // 4, arr.strides[1] // 4


cdef PackedMatrix _packed(int k, int n, cnp.ndarray data):
    cdef PackedMatrix pm = PackedMatrix.__new__(PackedMatrix)
    pm.k = k
    pm.n = n
    pm.data = data
    return pm


# ---------------------------------------------------------------- memory for packed weights
HUGE_PAGE_BYTES = PT_HUGE_PAGE_BYTES     # csrc/pt_cpu.h: what pt_huge_alloc aligns and rounds to
ARENA_ALIGN = 64


cdef class _HugeChunk:
    """One pt_huge_alloc mapping; the numpy views taken from it keep it alive, the last one frees it."""
    cdef void *ptr
    cdef size_t nbytes

    def __cinit__(self):
        self.ptr = NULL
        self.nbytes = 0

    def __dealloc__(self):
        if self.ptr != NULL:
            pt_huge_free(self.ptr, self.nbytes)
            self.ptr = NULL


cdef class WeightArena:
    """Memory for the packed weights of one model: 64-byte-aligned pieces carved from chunks that
    start on 2 MiB boundaries, each a mapping of its own advised for transparent huge pages
    (csrc/pt_cpu.h, pt_huge_alloc).

    A decode step reads every weight once, in long streams; on 4 KiB pages that is a TLB miss every
    4 KiB, and numpy's own huge-page advice covers only whole 2 MiB extents inside arrays of 4 MiB
    or more (about half of a 4 MiB weight, none of a 1 MiB one). take() returns numpy views; each
    keeps its chunk alive, so a chunk is unmapped with the last piece taken from it. Nothing is
    ever handed back: an arena belongs to something built once, such as a loaded model.

    nbytes: what the first chunk reserves (rounded up to 2 MiB), mapped at the first take(); a
    piece that does not fit in it gets a chunk of its own. Reserve enough for everything: pages
    never written cost address space only, while each chunk's last, partly used 2 MiB page is
    resident in full.

    huge=False: the chunks are advised against huge pages instead (MADV_NOHUGEPAGE), for packed
    weights whose reads do not gain from them (an encoder's GEMMs reuse every panel; the output
    projection behind the screen is read a few columns at a time). numpy advises its own large
    arrays for huge pages, and on a virtual machine that hands freed memory back to its host a
    huge page's first touch can cost much more than 4 KiB pages' (loading the opus-mt-size model
    right after other large processes: 0.30-0.38 s with numpy's advice off against 0.45-0.66 s
    with it, five alternated pairs)."""
    cdef _HugeChunk _chunk          # the chunk being filled
    cdef size_t _used
    cdef readonly size_t nbytes     # the first chunk's reservation
    cdef readonly size_t reserved   # bytes of all chunks mapped
    cdef readonly size_t taken      # bytes handed out (before alignment)
    cdef readonly int chunks        # chunks mapped
    cdef readonly int advised       # chunks the operating system took the advice for
    cdef readonly bint huge         # advice: huge pages (True) or not (False)

    def __init__(self, nbytes, huge=True):
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
            raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
        if not 0 < nbytes <= ARENA_MAX_BYTES:
            raise ValueError(f"nbytes must be from 1 to 2**40, got {nbytes}")
        if not isinstance(huge, bool):
            raise TypeError(f"huge must be True or False, got {huge!r}")
        self.huge = huge
        self.nbytes = nbytes
        self._chunk = None
        self._used = self.reserved = self.taken = 0
        self.chunks = self.advised = 0

    cdef _HugeChunk _map(self, size_t nbytes):
        cdef size_t size = (nbytes + HUGE_PAGE_BYTES - 1) // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
        cdef int advised = 0
        cdef _HugeChunk chunk = _HugeChunk.__new__(_HugeChunk)
        chunk.ptr = pt_pages_alloc(size, self.huge, &advised)
        if chunk.ptr == NULL:
            raise MemoryError(f"could not map {size} bytes for packed weights")
        chunk.nbytes = size
        self.chunks += 1
        self.advised += advised
        self.reserved += size
        return chunk

    def take(self, nbytes):
        """A new uint8 array of nbytes (> 0) starting on a 64-byte boundary, zero until written."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
            raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
        if not 0 < nbytes <= ARENA_MAX_BYTES:
            raise ValueError(f"nbytes must be from 1 to 2**40, got {nbytes}")
        cdef size_t n = nbytes
        cdef size_t start = 0
        cdef _HugeChunk chunk
        if self._chunk is None:
            self._chunk = self._map(max(n, self.nbytes))
            self._used = 0
        if self._used + n <= self._chunk.nbytes:
            chunk = self._chunk
            start = self._used
            self._used = (start + n + ARENA_ALIGN - 1) // ARENA_ALIGN * ARENA_ALIGN
        else:
            chunk = self._map(n)      # a chunk of its own; the current one keeps filling
        self.taken += n
        cdef cnp.npy_intp dims[1]
        dims[0] = <cnp.npy_intp>n
        arr = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT8, <char *>chunk.ptr + start)
        cnp.set_array_base(<cnp.ndarray>arr, chunk)
        return arr

    def __repr__(self):
        return (f"WeightArena(huge={self.huge}, chunks={self.chunks}, reserved={self.reserved}, "
                f"taken={self.taken}, advised={self.advised})")


# Packed weights below this many bytes in all stay in ordinary arrays: they are within the TLB's
# reach on 4 KiB pages, and a chunk's last 2 MiB page would be mostly waste.
ARENA_MIN_BYTES = 8 << 20
ARENA_MAX_BYTES = 1 << 40


def weight_arena(nbytes, huge=True):
    """A WeightArena(nbytes, huge) for packed weights, or None when nbytes is below ARENA_MIN_BYTES."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    return None if nbytes < ARENA_MIN_BYTES else WeightArena(nbytes, huge)


cdef cnp.ndarray _packed_storage(size_t count, object dtype, object arena):
    """count elements of dtype for a packed copy: from arena (a WeightArena) when given, else a new array."""
    if arena is None:
        return np.empty(count, dtype=dtype)
    if not isinstance(arena, WeightArena):
        raise TypeError(f"arena must be a WeightArena or None, got {type(arena).__name__}")
    dt = np.dtype(dtype)
    return (<WeightArena>arena).take(count * dt.itemsize).view(dt)


def pack(object b, bint transpose=False, object arena=None):
    """Pack B = b (shape (k, n)) or, with transpose=True, B = b.T for b of shape (n, k) (a Linear weight).

    Any strides are accepted (including non-contiguous views); the packed copy is owned by the result,
    or lives in arena (a WeightArena) when one is given."""
    arr, k, n, rs, cs = _pack_source(b, transpose)
    cdef cnp.ndarray data = _packed_storage(pt_packed_b_size(k, n), np.float32, arena)
    cdef const float *src = _cptr(arr)
    cdef float *dst = _ptr(data)
    cdef Py_ssize_t c_rs = rs, c_cs = cs
    cdef int c_k = k, c_n = n, status
    cdef int nt = _nthreads
    with nogil:
        status = pt_pack_b_mt(src, c_rs, c_cs, c_k, c_n, dst, nt)
    _status(status, "pack")
    return _packed(k, n, data)


def pack_stacked(object weights, object arena=None):
    """pack(np.concatenate(weights), transpose=True, arena=arena) for Linear weights of shapes (n_i, k),
    without building the concatenation (fused q/k/v projections): each weight fills its own panels,
    so every n_i but the last must be a multiple of 16, the panel width."""
    if not isinstance(weights, (list, tuple)) or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of (n_i, k) matrices")
    parts = [_pack_source(w, True) for w in weights]
    cdef int k = parts[0][1]
    cdef long long total = 0
    for i, (arr, kk, n, rs, cs) in enumerate(parts):
        if kk != k:
            raise ValueError(f"weights to stack must have the same input size: {k} and {kk} (weight {i})")
        if i + 1 < len(parts) and n % PT_NR:
            raise ValueError(f"weight {i} of the stack has {n} outputs, not a multiple of {PT_NR}")
        total += n
    if total > INT_MAX:
        raise ValueError(f"stacked matrix is too large: {total} outputs")
    cdef cnp.ndarray data = _packed_storage(pt_packed_b_size(k, <int>total), np.float32, arena)
    cdef float *dst = _ptr(data)
    cdef const float *src
    cdef Py_ssize_t c_rs, c_cs
    cdef int c_n, status
    cdef int nt = _nthreads
    cdef size_t offset = 0
    for arr, kk, n, rs, cs in parts:
        src = _cptr(arr)
        c_rs = rs; c_cs = cs; c_n = n
        with nogil:
            status = pt_pack_b_mt(src, c_rs, c_cs, k, c_n, dst + offset, nt)
        _status(status, "pack")
        offset += pt_packed_b_size(k, c_n)
    return _packed(k, <int>total, data)


cdef pt_gemm_packed_fn _gemm_fn() noexcept nogil:
    """The float32 GEMM of the ISA path in use."""
    if _isa == ISA_AVX512:
        return pt_gemm_packed_avx512
    if _isa == ISA_AVX2:
        return pt_gemm_packed_avx2
    return pt_gemm_packed_generic


cdef int _has_vnni = pt_cpu_has_avx512_vnni()


cdef pt_screen_logits_fn _screen_logits_fn() noexcept nogil:
    """The screen's integer dot products for the ISA path in use: AVX-512 VNNI where the CPU has it
    (a sixth of AVX2's instructions per row), else AVX2's pmaddubsw. The products are exact, so
    every path gives the same logits."""
    if _isa == ISA_AVX512 and _has_vnni:
        return pt_screen_logits_vnni
    if _isa_avx2:
        return pt_screen_logits_avx2
    return pt_screen_logits_generic


def gemm(object a, PackedMatrix b, object bias=None, object residual=None, object act=0, object out=None):
    """out = act(a @ B + bias) + residual for a (m, k) and packed B (k, n). out may be residual."""
    cdef cnp.ndarray A = _check(a, "a", 2)
    if b is None:
        raise TypeError("b must be a PackedMatrix, got None")
    if A.shape[1] != b.k:
        raise ValueError(f"shapes do not match for a @ b: a is {_shape(A)}, b is ({b.k}, {b.n})")
    cdef int m = A.shape[0]
    cdef int n = b.n
    cdef int k = b.k
    cdef int act_id = _act_id(act)
    cdef cnp.ndarray C = _out2(out, "out", m, n)
    cdef cnp.ndarray bias_arr = _vector(bias, "bias", n) if bias is not None else None
    cdef cnp.ndarray res_arr = None
    if residual is not None:
        res_arr = _check(residual, "residual", 2)
        if res_arr.shape[0] != m or res_arr.shape[1] != n:
            raise ValueError(f"residual must have shape ({m}, {n}), got {_shape(res_arr)}")
    cdef const float *pa = _cptr(A)
    cdef const float *pb = _cptr(b.data)
    cdef const float *pbias = _cptr(bias_arr) if bias_arr is not None else NULL
    cdef const float *pres = _cptr(res_arr) if res_arr is not None else NULL
    cdef Py_ssize_t ldr = _ld(res_arr, 0) if res_arr is not None else 0
    cdef float *pc = _ptr(C)
    cdef Py_ssize_t lda = _ld(A, 0), ldc = _ld(C, 0)
    if m == 1:
        lda = k
        ldc = n
        if res_arr is not None:
            ldr = n
    if pres != NULL and pres != pc and _overlaps(res_arr, C):
        raise ValueError("residual and out overlap without being the same array")
    if _overlaps(A, C):
        raise ValueError("a and out must not overlap")
    cdef int status
    cdef int nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    cdef pt_gemm_packed_fn fn = _gemm_fn()
    with nogil:
        status = fn(pa, lda, pb, pbias, pres, ldr, pc, ldc, m, n, k, act_id, nt)
    _status(status, "gemm")
    return C


def packed_columns(PackedMatrix b, int j0, int j1):
    """Columns [j0, j1) of a packed matrix as a PackedMatrix sharing its memory (j0 a multiple of
    PANEL_WIDTH). The GEMM computes each output column the same way whichever columns it is asked
    for, so gemm(a, packed_columns(b, j0, j1)) equals columns j0..j1 of gemm(a, b) bit for bit."""
    if b is None:
        raise TypeError("b must be a PackedMatrix, got None")
    if not (0 <= j0 < j1 <= b.n) or j0 % PT_NR:
        raise ValueError(f"columns [{j0}, {j1}) must be a non-empty range within [0, {b.n}) starting "
                         f"at a multiple of {PT_NR}")
    cdef Py_ssize_t start = <Py_ssize_t>(j0 // PT_NR) * b.k * PT_NR
    cdef PackedMatrix pm = PackedMatrix.__new__(PackedMatrix)
    pm.k = b.k
    pm.n = j1 - j0
    pm.data = b.data[start:start + <Py_ssize_t>pt_packed_b_size(b.k, j1 - j0)]
    return pm


def pack_i8(PackedMatrix b, object arena=None):
    """The screen's 8-bit copy of packed B (see pt_pack_i8_generic in csrc/pt_screen.h): the int8
    array in the screen's panel layout (in arena, a WeightArena, when given), and per column the
    power-of-two scale (float64), the sum of the integers (int32) and upper bounds of the sums over
    k of w^2 and (w - r)^2 (r = scale * q)."""
    if b is None:
        raise TypeError("b must be a PackedMatrix, got None")
    cdef int k = b.k, n = b.n
    cdef cnp.ndarray src = b.data
    cdef cnp.ndarray q = _packed_storage(pt_screen_q_size(k, n), np.int8, arena)
    cdef cnp.ndarray scale = np.empty(n, dtype=np.float64)
    cdef cnp.ndarray qsum = np.empty(n, dtype=np.int32)
    cdef cnp.ndarray sq_w = np.empty(n, dtype=np.float64)
    cdef cnp.ndarray sq_d = np.empty(n, dtype=np.float64)
    cdef int status
    cdef const float *ps = <const float *>cnp.PyArray_DATA(src)
    cdef int8_t *pq = <int8_t *>cnp.PyArray_DATA(q)
    cdef double *pscale = <double *>cnp.PyArray_DATA(scale)
    cdef int32_t *psum = <int32_t *>cnp.PyArray_DATA(qsum)
    cdef double *pw = <double *>cnp.PyArray_DATA(sq_w)
    cdef double *pd = <double *>cnp.PyArray_DATA(sq_d)
    cdef int use_avx2 = _isa_avx2
    cdef int nt = _nthreads
    with nogil:
        if use_avx2:
            status = pt_pack_i8_avx2(ps, k, n, pq, pscale, psum, pw, pd, nt)
        else:
            status = pt_pack_i8_generic(ps, k, n, pq, pscale, psum, pw, pd, nt)
    _status(status, "pack_i8")
    return q, scale, qsum, sq_w, sq_d


SCREEN_MAX_ROWS = PT_SCREEN_MAX_ROWS


def screen_max_rows():
    """The most rows screen_argmax screens on the path in use (see csrc/pt_screen.h): more rows
    return None, for the caller to compute the full logits."""
    return PT_SCREEN_MAX_ROWS_GENERIC if _isa == ISA_GENERIC else PT_SCREEN_MAX_ROWS


cdef class Screen:
    """The arrays and constants of a screened output projection (see pytransformer/screen.py),
    checked once; screen_logits and screen_argmax run it."""
    cdef pt_screen s
    cdef readonly object refs      # keeps the arrays behind the pointers alive

    def __init__(self, PackedMatrix b not None, object q, object scale, object qsum, object bias, object err,
                 double err_max, double w_norm_max, double bias_max, double rel, double slack, double abs_err):
        cdef int n = b.n
        if not isinstance(q, np.ndarray) or q.dtype != np.int8 or q.ndim != 1 or not q.flags.c_contiguous \
                or q.shape[0] != pt_screen_q_size(b.k, n):
            raise TypeError("q must be the contiguous int8 array pack_i8 returned for b")
        for name, arr, dtype in (("scale", scale, np.float64), ("qsum", qsum, np.int32), ("err", err, np.float64)):
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != (n,) \
                    or not arr.flags.c_contiguous:
                raise TypeError(f"{name} must be a contiguous {np.dtype(dtype).name} array of shape ({n},)")
        cdef cnp.ndarray bias_arr = _vector(bias, "bias", n) if bias is not None else None
        for name, v in (("err_max", err_max), ("w_norm_max", w_norm_max), ("bias_max", bias_max),
                        ("rel", rel), ("slack", slack), ("abs_err", abs_err)):
            if not (0.0 <= v < float("inf")):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        self.refs = (b, q, scale, qsum, bias_arr, err)
        self.s.q = <const int8_t *>cnp.PyArray_DATA(<cnp.ndarray>q)
        self.s.scale = <const double *>cnp.PyArray_DATA(<cnp.ndarray>scale)
        self.s.qsum = <const int32_t *>cnp.PyArray_DATA(<cnp.ndarray>qsum)
        self.s.bp = _cptr(<cnp.ndarray>b.data)
        self.s.bias = _cptr(bias_arr) if bias_arr is not None else NULL
        self.s.err = <const double *>cnp.PyArray_DATA(<cnp.ndarray>err)
        self.s.err_max = err_max
        self.s.w_norm_max = w_norm_max
        self.s.bias_max = bias_max
        self.s.rel = rel
        self.s.slack = slack
        self.s.abs_err = abs_err
        self.s.n = n
        self.s.k = b.k


cdef cnp.ndarray _screen_rows(Screen screen, object x):
    cdef cnp.ndarray X = _check(x, "x", 2)
    if X.shape[1] != screen.s.k:
        raise ValueError(f"x has {X.shape[1]} features but the projection expects {screen.s.k}")
    return X


def screen_quantize(Screen screen not None, object x):
    """The screen's quantization of the rows of x (at most SCREEN_MAX_ROWS): the digit words hi and
    lo (rows x groups uint32), the scales, ||x|| and ||x - scale * xq|| per row; None when a row is
    not finite."""
    cdef cnp.ndarray X = _screen_rows(screen, x)
    cdef int m = X.shape[0], k = screen.s.k, groups = pt_screen_groups(k)
    if m > PT_SCREEN_MAX_ROWS:
        raise ValueError(f"the screen takes at most {PT_SCREEN_MAX_ROWS} rows, got {m}")
    cdef cnp.ndarray hi = np.empty((m, groups), dtype=np.uint32)
    cdef cnp.ndarray lo = np.empty((m, groups), dtype=np.uint32)
    cdef cnp.ndarray sx = np.empty(m, dtype=np.float64)
    cdef cnp.ndarray xn = np.empty(m, dtype=np.float64)
    cdef cnp.ndarray en = np.empty(m, dtype=np.float64)
    cdef Py_ssize_t ldx = _ld(X, 0) if m > 1 else k
    cdef const float *px = _cptr(X)
    cdef int ok
    with nogil:
        ok = pt_screen_quantize(px, ldx, m, k, <uint32_t *>cnp.PyArray_DATA(hi),
                                <uint32_t *>cnp.PyArray_DATA(lo), <double *>cnp.PyArray_DATA(sx),
                                <double *>cnp.PyArray_DATA(xn), <double *>cnp.PyArray_DATA(en))
    return (hi, lo, sx, xn, en) if ok else None


def screen_logits(Screen screen not None, object x):
    """The screen's approximate logits of the rows of x (at most SCREEN_MAX_ROWS; see
    pt_screen_logits_fn in csrc/pt_screen.h): float32 (rows, n), the same bits on every path."""
    q = screen_quantize(screen, x)
    if q is None:
        raise ValueError("x must be finite")
    cdef cnp.ndarray hi = q[0], lo = q[1], sx = q[2]
    cdef int m = hi.shape[0]
    cdef cnp.ndarray g = np.empty((m, screen.s.n), dtype=np.float32)
    cdef int nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    cdef pt_screen_logits_fn fn = _screen_logits_fn()
    cdef float *pg = _ptr(g)
    cdef int status
    with nogil:
        status = fn(&screen.s, <const uint32_t *>cnp.PyArray_DATA(hi), <const uint32_t *>cnp.PyArray_DATA(lo),
                    <const double *>cnp.PyArray_DATA(sx), m, pg, nt)
    _status(status, "screen_logits")
    return g


def screen_argmax(Screen screen not None, object x, object banned=None, int max_cand=1024, object scratch=None):
    """Greedy tokens (int64, one per row of x) through the screen, or None when the caller must
    compute the full logits (see pt_screen_argmax in csrc/pt_screen.h). scratch: a writable
    (rows, n) float32 array for the approximate logits (a decoder state's logits buffer), so a
    step allocates none; its contents are overwritten."""
    cdef cnp.ndarray X = _screen_rows(screen, x)
    cdef int m = X.shape[0]
    cdef int n = screen.s.n
    if m > screen_max_rows():
        return None
    cdef cnp.ndarray M = None
    if banned is not None:
        if not isinstance(banned, np.ndarray) or banned.dtype not in (np.bool_, np.uint8) \
                or banned.shape != (n,) or not banned.flags.c_contiguous:
            raise TypeError(f"banned must be a contiguous bool or uint8 array of shape ({n},)")
        M = <cnp.ndarray>banned
    if max_cand < 1:
        raise ValueError(f"max_cand must be >= 1, got {max_cand}")
    cdef cnp.ndarray g
    if scratch is None:
        g = np.empty((m, n), dtype=np.float32)
    else:
        g = _out2(scratch, "scratch", m, n)
        if not g.flags.c_contiguous:
            raise ValueError("scratch must be C-contiguous")
        if _overlaps(X, g):
            raise ValueError("x and scratch must not overlap")
    cdef cnp.ndarray digits = np.empty(2 * m * pt_screen_groups(screen.s.k), dtype=np.uint32)
    cdef cnp.ndarray cand = np.empty(m * max_cand, dtype=np.int32)
    cdef cnp.ndarray tokens = np.empty(m, dtype=np.int64)
    cdef pt_screen_logits_fn approx = _screen_logits_fn()
    cdef pt_gemm_packed_fn exact = _gemm_fn()
    cdef const float *px = _cptr(X)
    cdef Py_ssize_t ldx = _ld(X, 0) if m > 1 else screen.s.k
    cdef const unsigned char *pm = <const unsigned char *>cnp.PyArray_DATA(M) if M is not None else NULL
    cdef uint32_t *pdig = <uint32_t *>cnp.PyArray_DATA(digits)
    cdef float *pg = _ptr(g)
    cdef int32_t *pc = <int32_t *>cnp.PyArray_DATA(cand)
    cdef long long *pt = <long long *>cnp.PyArray_DATA(tokens)
    cdef int nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    cdef int status
    with nogil:
        status = pt_screen_argmax(&screen.s, approx, exact, px, ldx, m, pm, max_cand, nt, pdig, pg, pc, pt)
    if status < 0:
        _status(-status, "screen_argmax")
    return tokens if status == 1 else None


# ---------------------------------------------------------------- element-wise
def bias_activation(object x, object bias=None, object act="relu", object out=None):
    """out = act(x + bias) row-wise for 2-D x; out may be x."""
    cdef cnp.ndarray X = _check(x, "x", 2)
    cdef int rows = X.shape[0], cols = X.shape[1]
    cdef int act_id = _act_id(act)
    cdef cnp.ndarray Y = _out2(out, "out", rows, cols)
    cdef cnp.ndarray B = _vector(bias, "bias", cols) if bias is not None else None
    cdef const float *px = _cptr(X)
    cdef const float *pb = _cptr(B) if B is not None else NULL
    cdef float *py = _ptr(Y)
    cdef Py_ssize_t ldx = _ld(X, 0) if rows > 1 else cols
    cdef Py_ssize_t ldy = _ld(Y, 0) if rows > 1 else cols
    cdef int status, nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    with nogil:
        if _isa_avx2:
            status = pt_bias_activation_avx2(px, ldx, pb, py, ldy, rows, cols, act_id, nt)
        else:
            status = pt_bias_activation_generic(px, ldx, pb, py, ldy, rows, cols, act_id, nt)
    _status(status, "activation")
    return Y


def softmax_rows(object x, object valid=None, object out=None):
    """Softmax of each row of 2-D x over its first valid[r] columns (all when valid is None); the rest 0."""
    cdef cnp.ndarray X = _check(x, "x", 2)
    cdef int rows = X.shape[0], cols = X.shape[1]
    cdef cnp.ndarray Y = _out2(out, "out", rows, cols)
    cdef cnp.ndarray V = None
    if valid is not None:
        V = np.ascontiguousarray(valid, dtype=np.int32)
        if V.ndim != 1 or V.shape[0] != rows:
            raise ValueError(f"valid must have shape ({rows},), got {_shape(V)}")
    cdef const float *px = _cptr(X)
    cdef float *py = _ptr(Y)
    cdef const int32_t *pv = <const int32_t *>cnp.PyArray_DATA(V) if V is not None else NULL
    cdef Py_ssize_t ldx = _ld(X, 0) if rows > 1 else cols
    cdef Py_ssize_t ldy = _ld(Y, 0) if rows > 1 else cols
    cdef int status, nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    with nogil:
        if _isa_avx2:
            status = pt_softmax_avx2(px, ldx, py, ldy, rows, cols, pv, nt)
        else:
            status = pt_softmax_generic(px, ldx, py, ldy, rows, cols, pv, nt)
    _status(status, "softmax")
    return Y


def norm(object x, object weight, object bias=None, double eps=1e-5, bint rms=False,
         object residual=None, object sum_out=None, object out=None):
    """out = norm(x + residual) * weight (+ bias); the sum x + residual is also stored in sum_out if given.

    Layer norm by default, RMS norm with rms=True (bias must then be None). 2-D arrays; out and
    sum_out may be x or residual."""
    cdef cnp.ndarray X = _check(x, "x", 2)
    cdef int rows = X.shape[0], cols = X.shape[1]
    cdef cnp.ndarray W = _vector(weight, "weight", cols)
    cdef cnp.ndarray B = _vector(bias, "bias", cols) if bias is not None else None
    if rms and B is not None:
        raise ValueError("rms_norm takes no bias")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    cdef cnp.ndarray R = None
    cdef cnp.ndarray S = None
    if residual is not None:
        R = _check(residual, "residual", 2)
        if R.shape[0] != rows or R.shape[1] != cols:
            raise ValueError(f"residual must have shape ({rows}, {cols}), got {_shape(R)}")
    if sum_out is not None:
        S = _out2(sum_out, "sum_out", rows, cols)
    cdef cnp.ndarray Y = _out2(out, "out", rows, cols)
    cdef const float *px = _cptr(X)
    cdef const float *pr = _cptr(R) if R is not None else NULL
    cdef float *ps = _ptr(S) if S is not None else NULL
    cdef const float *pw = _cptr(W)
    cdef const float *pb = _cptr(B) if B is not None else NULL
    cdef float *py = _ptr(Y)
    cdef Py_ssize_t ldx = _ld(X, 0) if rows > 1 else cols
    cdef Py_ssize_t ldr = (_ld(R, 0) if rows > 1 else cols) if R is not None else 0
    cdef Py_ssize_t lds = (_ld(S, 0) if rows > 1 else cols) if S is not None else 0
    cdef Py_ssize_t ldy = _ld(Y, 0) if rows > 1 else cols
    cdef float feps = eps
    cdef int status, nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    with nogil:
        if rms:
            if _isa_avx2:
                status = pt_rms_norm_avx2(px, ldx, pr, ldr, ps, lds, pw, py, ldy, rows, cols, feps, nt)
            else:
                status = pt_rms_norm_generic(px, ldx, pr, ldr, ps, lds, pw, py, ldy, rows, cols, feps, nt)
        else:
            if _isa_avx2:
                status = pt_layer_norm_avx2(px, ldx, pr, ldr, ps, lds, pw, pb, py, ldy, rows, cols, feps, nt)
            else:
                status = pt_layer_norm_generic(px, ldx, pr, ldr, ps, lds, pw, pb, py, ldy, rows, cols, feps, nt)
    _status(status, "norm")
    return Y


# ---------------------------------------------------------------- attention
cdef pt_strides _strides4(cnp.ndarray a):
    cdef pt_strides s
    s.batch = a.strides[0] // 4
    s.seq = a.strides[1] // 4
    s.head = a.strides[2] // 4
    return s


def attention_scratch_size(int kv_len, object nthreads=None):
    """Floats of scratch that attention() needs for kv_len keys at nthreads threads (default: the
    current setting); a caller that passes a buffer at least this large saves an allocation per call."""
    cdef int nt = _nthreads if nthreads is None else int(nthreads)
    if kv_len < 1 or nt < 1:
        raise ValueError(f"kv_len and nthreads must be >= 1, got {kv_len} and {nt}")
    return pt_attention_scratch_size(kv_len, nt)


def attention(object q, object k, object v, object out=None, object kv_lengths=None, object bias=None,
              bint causal=False, int q_offset=0, object scale=None, object scratch=None):
    """Multi-head attention on (batch, seq, heads, head_dim) views (any strides but a contiguous last axis).

    q: (B, Tq, H, D); k, v: (B, S, H, D); out: (B, Tq, H, D) (allocated if None).
    kv_lengths: (B,) valid keys per batch row; causal: query t sees keys s <= q_offset + t;
    bias: (H, Tq, S) additive score bias shared over the batch; scale defaults to 1/sqrt(D)."""
    cdef cnp.ndarray Q = _check(q, "q", 4)
    cdef cnp.ndarray K = _check(k, "k", 4)
    cdef cnp.ndarray Vv = _check(v, "v", 4)
    cdef int batch = Q.shape[0], q_len = Q.shape[1], heads = Q.shape[2], hd = Q.shape[3]
    cdef int kv_len = K.shape[1]
    if K.shape[0] != batch or K.shape[2] != heads or K.shape[3] != hd:
        raise ValueError(f"k must have shape ({batch}, S, {heads}, {hd}), got {_shape(K)}")
    if (<object>Vv).shape != (<object>K).shape:
        raise ValueError(f"v must have the shape of k {_shape(K)}, got {_shape(Vv)}")
    if q_offset < 0:
        raise ValueError(f"q_offset must be >= 0, got {q_offset}")
    cdef cnp.ndarray O
    if out is None:
        O = np.empty((batch, q_len, heads, hd), dtype=np.float32)
    else:
        O = _check(out, "out", 4, True)
        if (<object>O).shape != (<object>Q).shape:
            raise ValueError(f"out must have the shape of q {_shape(Q)}, got {_shape(O)}")
        if _overlaps(O, K) or _overlaps(O, Vv):
            raise ValueError("out must not overlap k or v")
    cdef cnp.ndarray L = None
    if kv_lengths is not None:
        L = np.ascontiguousarray(kv_lengths, dtype=np.int32)
        if L.ndim != 1 or L.shape[0] != batch:
            raise ValueError(f"kv_lengths must have shape ({batch},), got {_shape(L)}")
        if not _all_in_range(L, 0, kv_len):
            raise ValueError(f"kv_lengths must lie in [0, {kv_len}], got {L.tolist()}")
    cdef cnp.ndarray Bm = None
    cdef Py_ssize_t bstr[3]
    if bias is not None:
        Bm = _check(bias, "bias", 3)
        if Bm.shape[0] != heads or Bm.shape[1] != q_len or Bm.shape[2] != kv_len:
            raise ValueError(f"bias must have shape ({heads}, {q_len}, {kv_len}), got {_shape(Bm)}")
        bstr[0] = Bm.strides[0] // 4; bstr[1] = Bm.strides[1] // 4; bstr[2] = Bm.strides[2] // 4
    cdef float fscale = (1.0 / sqrt(<double>hd)) if scale is None else float(scale)
    cdef int nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    cdef size_t need = pt_attention_scratch_size(kv_len, nt)
    cdef cnp.ndarray Sc
    if scratch is None or not isinstance(scratch, np.ndarray) \
            or cnp.PyArray_TYPE(<cnp.ndarray>scratch) != cnp.NPY_FLOAT32 \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>scratch) or <size_t>scratch.size < need \
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>scratch):
        Sc = np.empty(max(need, <size_t>1), dtype=np.float32)
    else:
        Sc = scratch
    cdef pt_strides qs = _strides4(Q), ks = _strides4(K), vs = _strides4(Vv), os_ = _strides4(O)
    cdef const float *pq = _cptr(Q)
    cdef const float *pk = _cptr(K)
    cdef const float *pv = _cptr(Vv)
    cdef float *po = _ptr(O)
    cdef const int32_t *pl = <const int32_t *>cnp.PyArray_DATA(L) if L is not None else NULL
    cdef const float *pbias = _cptr(Bm) if Bm is not None else NULL
    cdef const Py_ssize_t *pbs = bstr if Bm is not None else NULL
    cdef float *psc = _ptr(Sc)
    cdef int status
    cdef int c_causal = causal
    with nogil:
        if _isa == ISA_AVX512:
            status = pt_attention_avx512(pq, qs, pk, ks, pv, vs, po, os_, pl, pbias, pbs,
                                         batch, heads, q_len, kv_len, hd, c_causal, q_offset, fscale, psc, nt)
        elif _isa_avx2:
            status = pt_attention_avx2(pq, qs, pk, ks, pv, vs, po, os_, pl, pbias, pbs,
                                       batch, heads, q_len, kv_len, hd, c_causal, q_offset, fscale, psc, nt)
        else:
            status = pt_attention_generic(pq, qs, pk, ks, pv, vs, po, os_, pl, pbias, pbs,
                                          batch, heads, q_len, kv_len, hd, c_causal, q_offset, fscale, psc, nt)
    _status(status, "attention")
    return O


# ---------------------------------------------------------------- embeddings and positions
def embedding(object ids, object table, double scale=1.0, object positions=None, object out=None):
    """out[i] = table[ids[i]] * scale (+ positions[i]); table is a (vocab, d) array or a PackedMatrix
    holding table^T (a tied output projection)."""
    cdef cnp.ndarray I = np.ascontiguousarray(ids)
    if I.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {_shape(I)}")
    if I.shape[0] == 0:
        raise ValueError("ids is empty")
    if not np.issubdtype(I.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {I.dtype}")
    I = I.astype(np.int32, copy=False) if I.dtype != np.int32 else I
    cdef int n = I.shape[0], vocab, d
    cdef cnp.ndarray T = None
    cdef PackedMatrix P = None
    if isinstance(table, PackedMatrix):
        P = table
        vocab = P.n
        d = P.k
    else:
        T = _check(table, "table", 2)
        vocab = T.shape[0]
        d = T.shape[1]
    cdef cnp.ndarray Pos = None
    if positions is not None:
        Pos = _check(positions, "positions", 2)
        if Pos.shape[0] != n or Pos.shape[1] != d:
            raise ValueError(f"positions must have shape ({n}, {d}), got {_shape(Pos)}")
    cdef cnp.ndarray O = _out2(out, "out", n, d)
    cdef const int32_t *pi = <const int32_t *>cnp.PyArray_DATA(I)
    cdef const float *pt = _cptr(T) if T is not None else _cptr(P.data)
    cdef Py_ssize_t ldt = (_ld(T, 0) if vocab > 1 else d) if T is not None else 0
    cdef const float *pp = _cptr(Pos) if Pos is not None else NULL
    cdef Py_ssize_t ldp = (_ld(Pos, 0) if n > 1 else d) if Pos is not None else 0
    cdef float *po = _ptr(O)
    cdef Py_ssize_t ldo = _ld(O, 0) if n > 1 else d
    cdef float fscale = scale
    cdef int bad = -1, status, nt = _nthreads
    if nt > 1:
        _mark_threads_used()
    with nogil:
        if P is not None:
            status = pt_embedding_packed(pi, n, pt, vocab, d, fscale, pp, ldp, po, ldo, &bad, nt)
        else:
            status = pt_embedding(pi, n, pt, ldt, vocab, d, fscale, pp, ldp, po, ldo, &bad, nt)
    if status == PT_ERR_INDEX:
        raise ValueError(f"token id {int(I[bad])} out of range for vocab of {vocab} (position {bad})")
    _status(status, "embedding")
    return O


def sinusoidal_positions(int n, int d, int offset=0, str layout="interleaved"):
    """(n, d) sinusoidal position table for positions offset..offset+n-1 (d even)."""
    if n < 1 or d < 2 or d % 2:
        raise ValueError(f"sinusoidal_positions needs n >= 1 and an even d >= 2, got n={n}, d={d}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    cdef int lay
    if layout == "interleaved":
        lay = PT_POS_INTERLEAVED
    elif layout == "halves":
        lay = PT_POS_HALVES
    else:
        raise ValueError(f"unknown layout {layout!r}: expected 'interleaved' or 'halves'")
    cdef cnp.ndarray O = np.empty((n, d), dtype=np.float32)
    cdef float *po = _ptr(O)
    cdef int status
    with nogil:
        status = pt_sinusoidal_positions(po, d, n, d, offset, lay)
    _status(status, "sinusoidal_positions")
    return O


# ---------------------------------------------------------------- machine probes (benchmarks)
def probe_read_bandwidth(object buf, int nthreads=0):
    """Read a contiguous float32 buffer once over nthreads (default: current setting); returns a value
    that depends on what was read (so the reads cannot be optimised away), not its sum.
    Time it over a buffer far larger than the caches to measure sustained read bandwidth."""
    cdef cnp.ndarray B = _check(buf, "buf", 1)
    if not B.flags.c_contiguous:
        raise ValueError("buf must be contiguous")
    cdef int nt = 1 if _fork_safe_mode else (nthreads if nthreads > 0 else _nthreads)
    if nt > 1:
        _mark_threads_used()
    cdef const float *p = _cptr(B)
    cdef size_t n = B.shape[0]
    cdef double s
    cdef int use_avx2 = _isa_avx2
    with nogil:
        if use_avx2:
            s = pt_probe_read_avx2(p, n, nt)
        else:
            s = pt_probe_read(p, n, nt)
    return s


def silu_check_paths(first=0, count=1 << 32, nthreads=0):
    """Compare the SiLU of the AVX-512 GEMM epilogue with the AVX2 one, bit for bit, on the count
    float32 bit patterns from first (a NaN only needs a NaN). Returns (patterns that differ, lowest
    such pattern or None). For the suite's check of every float32 input; raises RuntimeError when the
    CPU or this build has no AVX-512 path."""
    if not avx512_available():
        raise RuntimeError("silu_check_paths needs the AVX-512 path, which this CPU or build lacks")
    if not 0 <= first < 1 << 32:
        raise ValueError(f"first must be a float32 bit pattern in [0, 2**32), got {first}")
    if not 0 <= count <= 1 << 32:
        raise ValueError(f"count must be in [0, 2**32], got {count}")
    cdef uint32_t f = first, lowest = 0
    cdef unsigned long long c = count
    cdef int nt = 1 if _fork_safe_mode else (nthreads if nthreads > 0 else _nthreads)
    cdef long long diffs
    with nogil:
        diffs = pt_silu_check_paths(f, c, nt, &lowest)
    if diffs < 0:
        raise RuntimeError("silu_check_paths: the AVX-512 path is not compiled in")
    return int(diffs), (int(lowest) if diffs > 0 else None)


def probe_fma(long iters, int nthreads=0, int lanes=8):
    """iters rounds of independent FMAs per thread: PT_PROBE_CHAINS x 8 lanes on the AVX2 path, or with
    lanes=16 PT_PROBE_CHAINS_512 x 16 lanes on the AVX-512 path. Returns the flops done (0 when the
    CPU or this build lacks the path)."""
    if lanes not in (8, 16):
        raise ValueError(f"lanes must be 8 (AVX2) or 16 (AVX-512), got {lanes}")
    if not (avx512_available() if lanes == 16 else avx2_available()):
        return 0
    cdef int nt = 1 if _fork_safe_mode else (nthreads if nthreads > 0 else _nthreads)
    if nt > 1:
        _mark_threads_used()
    with nogil:
        if lanes == 16:
            pt_probe_fma_avx512(iters, nt)
        else:
            pt_probe_fma_avx2(iters, nt)
    if lanes == 16:
        return iters * PT_PROBE_CHAINS_512 * 16 * 2 * nt
    return iters * PT_PROBE_CHAINS * 8 * 2 * nt
