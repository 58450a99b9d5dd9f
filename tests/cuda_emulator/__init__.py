"""Run augengine's CUDA code paths on a CPU: a NumPy-backed stand-in for CuPy whose ``RawModule``
compiles ``cuda/*.cu`` with g++ against ``cuda_cpu.h`` (fibers for CUDA threads, real barrier and
warp-collective semantics).

It lets CI without a GPU execute the kernels *and* the Python code that launches them (launch
geometry, argument order and types, buffer sizes, dtype handling) and compare them with the NumPy
references. What it cannot show: speed, cuFFT (SciPy's FFT stands in), hardware memory-model
effects. A GPU run is still the only proof of the GPU path; this catches logic errors before one.

Fidelity choices, each to make a bug visible rather than hide it:

* CuPy arrays are wrapped, not subclassed: ``numpy.asarray(gpu_array)`` raises as it does in CuPy,
  and NumPy functions or ufuncs mixing host arrays with device arrays raise ``TypeError``.
* Only the CuPy API the project uses exists, each with CuPy 14's signature (:data:`SIGNATURES`
  and the classes below; ``test_emulator.py`` checks them against the installed CuPy): an
  argument CuPy rejects raises CuPy's ``TypeError``, and a function, method or ``Generator``
  method not listed raises ``AttributeError`` until its real signature is added.
* ``RawKernel`` is called as CuPy's is: grid and block tuples (a zero dimension launches as 1,
  as CuPy clamps it), keywords ``shared_mem`` and ``stream`` only.
* Kernels are compiled with the options CuPy's ``RawModule`` hands NVRTC
  (:func:`cupy_nvrtc_options`), honoured where they have a meaning on a CPU: ``--fmad=false`` and
  ``-ftz=true`` (``cuda_cpu.h``). An option the emulator does not know is refused.
* Every device allocation is surrounded by guard bytes (0xFF, a NaN pattern for floats): a kernel
  writing outside an argument's buffer fails with the argument named; reading outside it pulls in
  NaNs.
* A kernel's faults are asynchronous, as on a GPU: they surface at the next synchronisation
  (a device-to-host copy, ``Device().synchronize()``, ``Event.synchronize()``), not at the launch,
  and, as a fault poisons a CUDA context, at every synchronisation after it.
  ``CUDA_LAUNCH_BLOCKING=1`` raises them at the launch, as it makes CUDA do. A launch
  configuration the driver refuses raises at the launch either way, as in CUDA.
* Threads and blocks run in a seeded random order (``cuda_cpu.h``), so missing barriers change
  results.
* Launch limits (threads per block, grid dimensions) are checked as the CUDA driver checks them.

Work a GPU would do is counted for benchmarks (:func:`counting`): kernel launches, host syncs
and host-to-device copies, by name.

Stricter than CuPy on purpose: kernel arguments must be device arrays or fixed-width NumPy
scalars (CuPy also takes Python scalars, choosing a width, and size-1 host arrays).
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import inspect
import itertools
import os
import subprocess
import sys
import tempfile
import time
import types
import weakref
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
from numpy.lib.mixins import NDArrayOperatorsMixin

HEADER = Path(__file__).with_name("cuda_cpu.h")
GUARD = 4096  # bytes of 0xFF before and after every device allocation
_ROOTS: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
_SEEDS = itertools.count(int(os.environ.get("AUGENGINE_EMULATOR_SEED", "0")) * 1_000_003)
#: Launches per kernel name expression, for tests that must prove a path reached the kernels.
LAUNCHES: collections.Counter[str] = collections.Counter()


class EmulatorError(RuntimeError):
    """A launch the CUDA driver would reject or a kernel whose behaviour is undefined."""


# --- counters ------------------------------------------------------------------------------------

#: CuPy calls that allocate memory or return a view, without running a kernel on a GPU.
NO_KERNEL = frozenset({"empty", "empty_like", "flip", "reshape", "rot90", "view"})


@dataclasses.dataclass(eq=False)  # blocks are told apart by identity
class Counts:
    """Device work seen inside one :func:`counting` block, by name.

    ``launches``: one per ``RawKernel`` call (named by its name expression) and one per CuPy
    function, method, ufunc, random draw, fancy-index read or item assignment on device arrays
    that the emulator runs with NumPy/SciPy (named ``cupy.<function>``). On a GPU each of those
    runs at least one kernel, so for them this is a floor: a ``cupyx`` FFT or filter may run
    several, and an ``astype`` to the same dtype with ``copy=False`` none. Not counted:
    :data:`NO_KERNEL` and basic slicing (views). ``syncs``: each point where the host waits for
    the device: ``ndarray.get()``, ``float()``, ``int()``, ``bool()`` and ``__index__`` of a
    device array (each named apart), ``Device().synchronize()``, ``Event.synchronize()``.
    ``h2d``: host-to-device copies (``cupy.asarray`` of host data), counted apart: one transfer
    each, not a wait for the kernels before it. ``d2h_async``: device-to-host copies queued
    without waiting (``get(blocking=False)``); the wait is an event's ``synchronize()``, a sync.
    """

    launches: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    syncs: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    h2d: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    d2h_async: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def n_launches(self) -> int:
        return sum(self.launches.values())

    @property
    def n_syncs(self) -> int:
        return sum(self.syncs.values())

    @property
    def n_h2d(self) -> int:
        return sum(self.h2d.values())


_COUNTERS: list[Counts] = []


def _count(kind: str, name: str) -> None:
    for counts in _COUNTERS:
        getattr(counts, kind)[name] += 1


@contextlib.contextmanager
def counting():
    """Count the device work done inside the block (:class:`Counts`); blocks may nest."""
    counts = Counts()
    _COUNTERS.append(counts)
    try:
        yield counts
    finally:
        _COUNTERS.remove(counts)


# --- CuPy's signatures -------------------------------------------------------------------------

#: Parameters of the CuPy 14 functions and methods the project uses that the emulator forwards to
#: NumPy/SciPy, copied from the installed CuPy (``inspect.signature``, or the first docstring line
#: of Cython functions). Ufuncs take ``x`` or ``x1, x2``, ``out``, ``casting`` and ``dtype`` only.
SIGNATURES: dict[str, str] = {
    "cupy.arange": "(start, stop=None, step=1, dtype=None)",
    "cupy.ascontiguousarray": "(a, dtype=None)",
    "cupy.clip": "(a, a_min, a_max, out=None)",
    "cupy.copyto": "(dst, src, casting='same_kind', where=None)",
    "cupy.concatenate": "(tup, axis=0, out=None, *, dtype=None, casting='same_kind')",
    "cupy.empty": "(shape, dtype=float, order='C')",
    "cupy.empty_like": "(prototype, dtype=None, order='K', subok=None, shape=None)",
    "cupy.flatnonzero": "(a)",
    "cupy.flip": "(a, axis=None)",
    "cupy.full": "(shape, fill_value, dtype=None, order='C')",
    "cupy.ones": "(shape, dtype=float, order='C')",
    "cupy.rot90": "(a, k=1, axes=(0, 1))",
    "cupy.stack": "(tup, axis=0, out=None, *, dtype=None, casting='same_kind')",
    "cupy.where": "(condition, x=None, y=None)",
    "cupy.zeros": "(shape, dtype=float, order='C')",
    **{f"cupy.{name}": "(x, /, out=None, *, casting='same_kind', dtype=None)"
       for name in ("abs", "exp", "isfinite", "log10", "rint", "sqrt")},
    **{f"cupy.{name}": "(x1, x2, /, out=None, *, casting='same_kind', dtype=None)"
       for name in ("maximum", "multiply")},
    **{f"cupy.ndarray.{name}": "(self, axis=None, out=None, keepdims=False)"
       for name in ("all", "any", "max", "min")},
    "cupy.ndarray.astype": "(self, dtype, order='K', casting=None, subok=None, copy=True)",
    "cupy.ndarray.fill": "(self, value)",
    "cupy.ndarray.reshape": "(self, *shape, order='C', copy=None)",
    "cupy.ndarray.sum": "(self, axis=None, dtype=None, out=None, keepdims=False)",
    "cupy.ndarray.view": "(self, dtype=None, type=None)",
    "cupy.random.Generator.exponential": "(self, scale=1.0, size=None)",
    "cupy.random.Generator.standard_normal": "(self, size=None, dtype=numpy.float64, out=None)",
    "cupyx.scipy.fft.rfft": "(x, n=None, axis=-1, norm=None, overwrite_x=False, *, plan=None)",
    "cupyx.scipy.fft.irfft": "(x, n=None, axis=-1, norm=None, overwrite_x=False, *, plan=None)",
    "cupyx.scipy.ndimage.affine_transform": (
        "(input, matrix, offset=0.0, output_shape=None, output=None, order=3, mode='constant', "
        "cval=0.0, prefilter=True, *, texture_memory=False, float64_coords=False)"),
    "cupyx.scipy.ndimage.map_coordinates": (
        "(input, coordinates, output=None, order=3, mode='constant', cval=0.0, prefilter=True)"),
    "cupyx.scipy.ndimage.gaussian_filter": (
        "(input, sigma, order=0, output=None, mode='reflect', cval=0.0, truncate=4.0, "
        "radius=None, axes=None)"),
    "cupyx.scipy.signal.hilbert": "(x, N=None, axis=-1)",
}

#: Every CuPy callable the emulator provides, by its CuPy path: :data:`SIGNATURES` plus the ones
#: written out below with CuPy's signature. ``cupy.RawModule``'s constructor is checked by
#: behaviour instead (its docstring misstates it).
API: tuple[str, ...] = (*SIGNATURES, "cupy.asarray", "cupy.from_dlpack", "cupy.ndarray.get",
                        "cupy.RawModule.get_function", "cupy.RawKernel.__call__",
                        "cupy.cuda.Device", "cupy.cuda.Device.synchronize", "cupy.cuda.Event",
                        "cupy.cuda.Event.record", "cupy.cuda.Event.synchronize",
                        "cupy.cuda.get_elapsed_time", "cupyx.empty_pinned",
                        "cupy.cuda.runtime.getDeviceCount",
                        "cupy.cuda.runtime.getDeviceProperties", "cupy.random.default_rng")

#: Attributes of ``cupy.ndarray`` the project reads (checked to exist on CuPy's).
ATTRIBUTES: tuple[str, ...] = ("T", "data", "dtype", "flags", "nbytes", "ndim", "shape", "size",
                               "strides")


def _stub(path: str, parameters: str):
    """A do-nothing function named and parametrised as CuPy's ``path``: calling it raises the
    ``TypeError`` CuPy raises for arguments its signature refuses (same message)."""
    name = path.rsplit(".", 1)[1]
    namespace = {"numpy": np}
    exec(f"def {name}{parameters}:\n    pass", namespace)  # noqa: S102 - our own literals
    return namespace[name]


def _checked(path: str, implementation):
    """``implementation`` behind CuPy's signature of ``path``."""
    stub = _stub(path, SIGNATURES[path])

    @functools.wraps(stub)
    def checked(*args, **kwargs):
        stub(*args, **kwargs)
        return implementation(*args, **kwargs)

    return checked


def _not_emulated(path: str) -> AttributeError:
    return AttributeError(f"{path} is not emulated: add CuPy's signature to "
                          "tests/cuda_emulator SIGNATURES (test_emulator.py checks it)")


class _Ufunc:
    """A CuPy ufunc: inputs and outputs positional, keywords ``out``, ``dtype``, ``casting``
    only, refused with CuPy's messages (``cupy/_core/_kernel.pyx``, ``ufunc.__call__``)."""

    def __init__(self, path: str, host: np.ufunc):
        self._host = host
        self.__name__ = host.__name__
        self.__signature__ = inspect.signature(_stub(path, SIGNATURES[path]))

    def __call__(self, *args, **kwargs):
        unknown = {k: v for k, v in kwargs.items() if k not in ("out", "dtype", "casting")}
        if unknown:
            raise TypeError(f"Wrong arguments {unknown}")
        host = self._host
        if not host.nin <= len(args) <= host.nargs:
            raise TypeError(f"Wrong number of arguments for {self.__name__!r}. It must be either "
                            f"{host.nin} or {host.nargs} (with outputs), but given {len(args)}.")
        return _device_call(host, args, kwargs)


# --- asynchronous errors -----------------------------------------------------------------------


class _Context:
    """The emulated CUDA context's sticky error: the first kernel fault since it was created."""

    error: EmulatorError | None = None
    reported = False


_context = _Context()


def _fault(message: str) -> None:
    error = EmulatorError(
        f"{message} (a kernel fault: raised at the first synchronisation after the launch, as "
        "CUDA reports it; CUDA_LAUNCH_BLOCKING=1 raises it at the launch)")
    if os.environ.get("CUDA_LAUNCH_BLOCKING") == "1":
        raise error
    if _context.error is None:
        _context.error = error


def _synchronize() -> None:
    """What a synchronising CUDA call does after a fault: raise it, every time."""
    if _context.error is not None:
        _context.reported = True
        raise _context.error


# --- device arrays -----------------------------------------------------------------------------


def _device_copy(host: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``host`` inside a guarded buffer (the emulated device memory)."""
    root = np.full(host.nbytes + 2 * GUARD, 0xFF, dtype=np.uint8)
    _ROOTS[id(root)] = root
    device = root[GUARD : GUARD + host.nbytes].view(host.dtype).reshape(host.shape)
    device[...] = host
    return device


def _guarded_root(array: np.ndarray) -> np.ndarray | None:
    base = array.base
    while base is not None and _ROOTS.get(id(base)) is not base:
        base = getattr(base, "base", None)
    return base


def _wrap(value):
    if isinstance(value, np.ndarray):
        # Fresh results become device allocations; views stay views of their device buffer.
        return ndarray(value if _guarded_root(value) is not None else _device_copy(value))
    if isinstance(value, np.generic):
        return ndarray(_device_copy(np.asarray(value)))  # CuPy reductions return 0-d arrays
    if isinstance(value, (tuple, list)):
        return type(value)(_wrap(v) for v in value)
    return value


def _unwrap(value, allow_host: bool = False):
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray) and value.ndim > 0 and not allow_host:
        raise TypeError(f"Unsupported type {type(value)} (a NumPy array where CuPy needs a "
                        "device array: missing cupy.asarray?)")
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v, allow_host) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, allow_host) for k, v in value.items()}
    return value


def _unchanged(args, kwargs) -> bool:
    """CuPy's ``ascontiguousarray`` of a C-contiguous array of the wanted dtype returns the
    array itself and runs no kernel."""
    if not args or not isinstance(args[0], ndarray):
        return False
    dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
    return args[0]._a.flags.c_contiguous and (dtype is None or args[0].dtype == dtype)


def _device_call(function, args, kwargs, allow_host: bool = False, name: str | None = None):
    name = name or function.__name__
    if name == "ascontiguousarray" and _unchanged(args, kwargs):
        return args[0]
    if name not in NO_KERNEL:
        _count("launches", f"cupy.{name}")
    return _wrap(function(*_unwrap(args, allow_host), **_unwrap(kwargs, allow_host)))


def _advanced_index(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys)


class ndarray(NDArrayOperatorsMixin):  # lower case: the name CuPy uses
    """Device array stand-in: NumPy data in a guarded buffer, CuPy's host/device rules."""

    __module__ = "cupy"  # augengine._xp dispatches on the defining module

    def __init__(self, device: np.ndarray):
        self._a = device

    def get(self, stream=None, order="C", out=None, blocking=True):
        if not blocking:
            # Emulated kernels have already run, so the copy is made now; a fault surfaces at
            # the next synchronisation, as the real copy's would.
            _count("d2h_async", "ndarray.get")
            if out is None:
                return np.array(self._a, order=order)
            out[...] = self._a
            return out
        return self._to_host("ndarray.get", order, out)

    @property
    def data(self):
        """``cupy.cuda.MemoryPointer`` of the array's first element: its ``ptr`` is what a
        kernel reads through a table of pointers (emulated device memory is host memory)."""
        return types.SimpleNamespace(ptr=self._a.ctypes.data)

    def _to_host(self, why: str, order="C", out=None):
        _count("syncs", why)
        _synchronize()  # a device-to-host copy waits for the kernels before it
        if out is None:
            return np.array(self._a, order=order)
        out[...] = self._a
        return out

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        return _device_call(getattr(ufunc, method), inputs, kwargs, name=name)

    def __array_function__(self, func, types, args, kwargs):
        # CuPy answers a NumPy function with its own function of that name, signature included
        # (one the emulator lacks raises its AttributeError).
        try:
            cupy_func = functools.reduce(getattr, func.__module__.split(".")[1:],
                                         sys.modules["cupy"])
            cupy_func = getattr(cupy_func, func.__name__)
        except KeyError:  # used outside emulated_cupy()
            return NotImplemented
        return cupy_func(*args, **kwargs)

    def __getitem__(self, key):
        if _advanced_index(key):  # a gather kernel; basic slicing is a view
            _count("launches", "cupy.ndarray.__getitem__")
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        _count("launches", "cupy.ndarray.__setitem__")
        self._a[_unwrap(key)] = _unwrap(value, allow_host=True)

    def __getattr__(self, name):
        if name not in ATTRIBUTES:  # __array_interface__ & co. would hand NumPy the device memory
            raise _not_emulated(f"cupy.ndarray.{name}")
        attribute = getattr(self._a, name)
        return _wrap(attribute) if isinstance(attribute, np.ndarray) else attribute

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    # Conversions to Python values copy to the host, as CuPy's do through get().
    def __bool__(self):
        return bool(self._to_host("bool()"))

    def __float__(self):
        return float(self._to_host("float()"))

    def __int__(self):
        return int(self._to_host("int()"))

    def __index__(self):
        return self._to_host("index").__index__()

    def __repr__(self):
        return f"emulated cupy {self.get()!r}"


def _methods(cls, owner: str, host) -> None:
    """Give ``cls`` the methods :data:`SIGNATURES` lists under ``owner``, each calling the method
    of that name of ``host(self)`` on device arrays."""
    for path in SIGNATURES:
        prefix, name = path.rsplit(".", 1)
        if prefix == owner:
            setattr(cls, name, _checked(path, lambda self, *args, _name=name, **kwargs:
                                        _device_call(getattr(host(self), _name), args, kwargs)))


_methods(ndarray, "cupy.ndarray", lambda array: array._a)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if copy is not None or blocking:
        raise EmulatorError("cupy.asarray(copy=..., blocking=...) is not emulated")
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    _count("h2d", "cupy.asarray")
    return ndarray(_device_copy(np.asarray(a, dtype=dtype, order=order)))


def from_dlpack(array, *, device=None, copy=None):
    """``cupy.from_dlpack``: a device array of another library's device tensor (CuPy shares its
    memory). Emulated device memory is host memory in guarded buffers, so a CPU exporter (a
    torch CPU tensor standing for a CUDA one in tests) is accepted and copied into a guarded
    buffer: the kernels' bounds checks hold; that CuPy shares the memory only a GPU shows. A
    NumPy array is refused: it is host memory in any run, a missing step to the device."""
    if device is not None or copy is not None:
        raise EmulatorError("cupy.from_dlpack(device=..., copy=...) is not emulated")
    if isinstance(array, np.ndarray):
        raise TypeError("from_dlpack: a NumPy array is host memory (cupy.asarray copies it)")
    return ndarray(_device_copy(np.from_dlpack(array)))


# --- kernels -------------------------------------------------------------------------------------

_SCALARS = {
    np.dtype(np.bool_): ctypes.c_bool,
    np.dtype(np.int8): ctypes.c_int8,
    np.dtype(np.int16): ctypes.c_int16,
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.uint8): ctypes.c_uint8,
    np.dtype(np.uint16): ctypes.c_uint16,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
}


def cupy_nvrtc_options(options: tuple[str, ...], arch: str, pch: bool = False) -> tuple[str, ...]:
    """The options CuPy 14's ``RawModule(code=..., options=options)`` hands NVRTC on a device of
    compute capability ``arch`` (``"80"``), in CuPy's order (``cupy/cuda/compiler.py``):
    ``_compile_with_cache_cuda`` appends ``-ftz=true``; ``_compile_using_nvrtc_no_warning``
    appends ``-arch=sm_<arch>`` (a cubin, for any arch NVRTC knows), then
    ``--device-as-default-execution-space``, then ``--pch`` when ``CUPY_NVRTC_USE_PCH=1`` and
    NVRTC >= 12.8 (``pch``). ``tests/test_cuda_compile.py`` checks this against CuPy's code."""
    return (*options, "-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space",
            *(("--pch",) if pch else ()))


def _gxx_flags(options: tuple[str, ...]) -> list[str]:
    """g++ flags for the NVRTC ``options`` (as :func:`cupy_nvrtc_options` gives them)."""
    flags = ["-std=c++17", "-ffp-contract=off"]
    for option in options:
        if option == "-ftz=true":
            flags.append("-DEMU_FTZ=1")
        elif option in ("--std=c++17", "-std=c++17", "--fmad=false", "--pch",
                        "--device-as-default-execution-space") or option.startswith("-arch="):
            # Already so, or no meaning on a CPU: cuda_cpu.h makes every function callable from
            # a kernel. Products and sums are always rounded separately: without --fmad=false
            # NVRTC fuses them into FMAs, which x86-64's baseline cannot reproduce, so a kernel
            # compiled without it may differ from the GPU in the last bits.
            continue
        else:
            raise EmulatorError(f"NVRTC option {option!r}: the emulator does not know what it "
                                "means; teach tests/cuda_emulator before using it")
    return flags


def _compile(code: str, name_expressions, options: tuple[str, ...]) -> ctypes.CDLL:
    """g++-compiled shared library of ``code`` with one C launcher per name expression."""
    launchers = "\n".join(
        f"extern \"C\" int emu_launch_{i}(const unsigned* g, const unsigned* b, void** a, "
        f"unsigned long long s) {{ return emu::launch(&{expression}, g, b, a, s); }}"
        for i, expression in enumerate(name_expressions)
    )
    source = (f"{code}\n{launchers}\n"
              "extern \"C\" const char* emu_error() { return emu::state.error.c_str(); }\n")
    flags = ["-O2", "-fPIC", "-shared", *_gxx_flags(options), "-U_FORTIFY_SOURCE",
             "-include", str(HEADER)]
    key = hashlib.sha256("\0".join([HEADER.read_text(), source, *flags]).encode()).hexdigest()
    folder = Path(tempfile.gettempdir()) / "augengine-cuda-emulator"
    folder.mkdir(exist_ok=True)
    library = folder / f"{key[:24]}.so"
    if not library.exists():
        cpp = folder / f"{key[:24]}.{os.getpid()}.cpp"
        cpp.write_text(source)
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        result = subprocess.run(["g++", *flags, str(cpp), "-o", str(partial)],
                                capture_output=True, text=True, check=False)
        cpp.unlink()
        if result.returncode != 0:
            raise EmulatorError(f"g++ could not compile the kernels:\n{result.stderr[-4000:]}")
        os.replace(partial, library)
    return ctypes.CDLL(str(library))


_INVALID_LAUNCH, _KERNEL_FAULT = 1, 2  # cuda_cpu.h's Status


class RawKernel:
    """One kernel of an emulated ``RawModule``; called like CuPy's: ``kernel(grid, block, args)``."""

    def __init__(self, library: ctypes.CDLL, index: int, name: str):
        self._launch = getattr(library, f"emu_launch_{index}")
        self._launch.restype = ctypes.c_int
        self._error = library.emu_error
        self._error.restype = ctypes.c_char_p
        self.name = name

    def __call__(self, grid, block, args, **kwargs):
        # CuPy's RawKernel.__call__ (cupy/_core/raw.pyx) forwards kwargs to Function.__call__(
        # tuple grid, tuple block, args, size_t shared_mem=0, stream=None,
        # enable_cooperative_groups=False) (cupy/cuda/function.pyx), passing the last itself.
        if "enable_cooperative_groups" in kwargs:
            raise TypeError("__call__() got multiple values for keyword argument "
                            "'enable_cooperative_groups'")
        for keyword in kwargs:
            if keyword not in ("shared_mem", "stream"):
                raise TypeError(f"__call__() got an unexpected keyword argument '{keyword}'")
        if kwargs.get("shared_mem", 0):
            raise EmulatorError(f"{self.name}: dynamic shared memory is not emulated")
        for label, value in (("grid", grid), ("block", block)):
            if not isinstance(value, tuple):
                raise TypeError(f"Argument '{label}' has incorrect type (expected tuple, got "
                                f"{type(value).__name__})")
        # CuPy pads to three dimensions, drops any beyond and launches a 0 as 1.
        dims = [tuple(max(1, d) for d in (value + (1, 1))[:3]) for value in (grid, block)]
        values, roots = [], []
        for position, arg in enumerate(args):
            if isinstance(arg, ndarray):
                roots.append((position, _guarded_root(arg._a)))
                values.append(ctypes.c_void_p(arg._a.ctypes.data))
            elif isinstance(arg, np.generic) and arg.dtype in _SCALARS:
                values.append(_SCALARS[arg.dtype](arg.item()))
            else:
                raise TypeError(f"{self.name}: argument {position} is {type(arg).__name__}; "
                                "pass device arrays or NumPy scalars of a fixed width")
        pointers = (ctypes.c_void_p * max(1, len(values)))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        grid_dims, block_dims = ((ctypes.c_uint * 3)(*d) for d in dims)
        status = self._launch(grid_dims, block_dims, pointers, ctypes.c_ulonglong(next(_SEEDS)))
        LAUNCHES[self.name] += 1
        _count("launches", self.name)
        where = f"{self.name} grid {dims[0]} block {dims[1]}"
        if status == _INVALID_LAUNCH:
            raise EmulatorError(f"{where}: {self._error().decode()}")
        if status == _KERNEL_FAULT:
            _fault(f"{where}: {self._error().decode()}")
        for position, root in roots:
            if root is None:
                _fault(f"{self.name}: argument {position} is not a device buffer")
                continue
            spoiled = np.flatnonzero(np.concatenate([root[:GUARD], root[-GUARD:]]) != 0xFF)
            if spoiled.size:
                _fault(f"{self.name} wrote outside argument {position} "
                       f"({spoiled.size} guard bytes changed)")


class RawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` compiled for the CPU."""

    def __init__(self, *, code=None, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False,
                 name_expressions=None, jitify=None):
        if not isinstance(options, tuple):  # a Cython ``tuple options`` parameter in CuPy
            raise TypeError("Argument 'options' has incorrect type (expected tuple, got "
                            f"{type(options).__name__})")
        if (code is None or path is not None or backend != "nvrtc" or translate_cucomplex
                or enable_cooperative_groups or jitify):
            raise EmulatorError("the emulator compiles code= with the default NVRTC settings "
                                "only")
        self._names = list(name_expressions or ())
        self._library = _compile(code, self._names, cupy_nvrtc_options(options, "80"))

    def get_function(self, name):
        return RawKernel(self._library, self._names.index(name), name)


# --- modules -------------------------------------------------------------------------------------


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise EmulatorError(f"the emulator has one device (0), not {self.id}")

    def synchronize(self):
        _count("syncs", "Device.synchronize")
        _synchronize()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    """``cupy.cuda.Event``: the emulator runs kernels at their launch, so a host clock times the
    work."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.seconds = None

    def record(self, stream=None):
        self.seconds = time.perf_counter()

    def synchronize(self):
        _count("syncs", "Event.synchronize")
        _synchronize()


def empty_pinned(shape, dtype=float, order="C"):
    """``cupyx.empty_pinned``: page-locked host memory is host memory here."""
    return np.empty(shape, dtype=dtype, order=order)


def get_elapsed_time(start_event, end_event) -> float:
    return (end_event.seconds - start_event.seconds) * 1e3


def getDeviceCount():  # noqa: N802 - CuPy's name
    return 1


def getDeviceProperties(device):  # noqa: N802 - CuPy's name
    return {"name": b"CPU emulation (tests/cuda_emulator)"}


class _Generator:
    """``cupy.random.Generator``: NumPy's generator drawing into device arrays."""

    def __init__(self, seed):
        self._host = np.random.default_rng(seed)

    def __getattr__(self, name):
        raise _not_emulated(f"cupy.random.Generator.{name}")


_methods(_Generator, "cupy.random.Generator", lambda generator: generator._host)


def default_rng(seed=None):
    return _Generator(seed)


def _mirror(name: str, host_module, **own) -> types.ModuleType:
    """Module ``name`` with ``own`` and, on device arrays, ``host_module``'s functions that
    :data:`SIGNATURES` lists under ``name`` (CuPy's signatures); NumPy's types (dtypes) and
    constants pass through, its submodules do not (NumPy functions on device arrays)."""
    module = types.ModuleType(name)
    module.__dict__.update(own)
    for path in SIGNATURES:
        prefix, attribute = path.rsplit(".", 1)
        if prefix != name:
            continue
        host = getattr(host_module, attribute)
        setattr(module, attribute, _Ufunc(path, host) if isinstance(host, np.ufunc) else
                _checked(path, lambda *args, _host=host, **kwargs: _device_call(_host, args,
                                                                                kwargs)))

    def __getattr__(attribute):
        value = getattr(host_module, attribute)
        if isinstance(value, type) or not (callable(value) or isinstance(value, types.ModuleType)):
            return value
        raise _not_emulated(f"{name}.{attribute}")

    module.__getattr__ = __getattr__
    return module


def modules() -> dict[str, types.ModuleType]:
    """``sys.modules`` entries that make ``import cupy`` (and the cupyx parts used) emulated."""
    runtime = types.SimpleNamespace(getDeviceCount=getDeviceCount,
                                    getDeviceProperties=getDeviceProperties)
    cuda = types.SimpleNamespace(Device=_Device, runtime=runtime, Event=_Event,
                                 get_elapsed_time=get_elapsed_time)
    random = types.SimpleNamespace(default_rng=default_rng, Generator=_Generator)
    cupy = _mirror("cupy", np, ndarray=ndarray, asarray=asarray, from_dlpack=from_dlpack,
                   RawModule=RawModule, RawKernel=RawKernel, cuda=cuda, random=random)
    scipy_ = types.ModuleType("cupyx.scipy")
    fakes = {"cupy": cupy, "cupyx": types.ModuleType("cupyx"), "cupyx.scipy": scipy_}
    fakes["cupyx"].scipy = scipy_
    fakes["cupyx"].empty_pinned = empty_pinned
    for part, host in (("fft", scipy.fft), ("ndimage", scipy.ndimage), ("signal", scipy.signal)):
        setattr(scipy_, part, _mirror(f"cupyx.scipy.{part}", host))
        fakes[f"cupyx.scipy.{part}"] = getattr(scipy_, part)
    return fakes


@contextlib.contextmanager
def emulated_cupy():
    """Within the block, ``import cupy`` gives the emulator (a fresh CUDA context) and augengine's
    kernel cache is fresh. A kernel fault no synchronisation reported raises at the end."""
    from augengine.ops import _cuda

    fakes = modules()
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    _cuda._module.cache_clear()
    _context.error, _context.reported = None, False
    try:
        yield sys.modules["cupy"]
        if not _context.reported:
            _synchronize()  # else a test that never copies back would lose the fault
    finally:
        _context.error, _context.reported = None, False
        _cuda._module.cache_clear()
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
