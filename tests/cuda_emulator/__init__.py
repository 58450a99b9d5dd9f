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
* Every device allocation is surrounded by guard bytes (0xFF, a NaN pattern for floats): a kernel
  writing outside an argument's buffer fails the launch with the argument named; reading outside
  it pulls in NaNs.
* Threads and blocks run in a seeded random order (``cuda_cpu.h``), so missing barriers change
  results.
* Launch limits (threads per block, grid dimensions) are checked as the CUDA driver checks them.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
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


def _device_call(function, args, kwargs, allow_host: bool = False):
    return _wrap(function(*_unwrap(args, allow_host), **_unwrap(kwargs, allow_host)))


class ndarray(NDArrayOperatorsMixin):  # lower case: the name CuPy uses
    """Device array stand-in: NumPy data in a guarded buffer, CuPy's host/device rules."""

    __module__ = "cupy"  # augengine._xp dispatches on the defining module

    def __init__(self, device: np.ndarray):
        self._a = device

    def get(self, stream=None, out=None):
        return self._a.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _device_call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _device_call(func, args, kwargs)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value, allow_host=True)

    def __getattr__(self, name):
        if name.startswith("__"):  # __array_interface__ & co. would hand NumPy the device memory
            raise AttributeError(name)
        attribute = getattr(self._a, name)
        if callable(attribute):
            return lambda *args, **kwargs: _device_call(attribute, args, kwargs)
        return _wrap(attribute) if isinstance(attribute, np.ndarray) else attribute

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return f"emulated cupy {self._a!r}"


def asarray(value, dtype=None, order=None):
    if isinstance(value, ndarray):
        return value if dtype is None or value.dtype == dtype else value.astype(dtype)
    return ndarray(_device_copy(np.asarray(value, dtype=dtype, order=order)))


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


def _compile(code: str, name_expressions) -> ctypes.CDLL:
    """g++-compiled shared library of ``code`` with one C launcher per name expression."""
    launchers = "\n".join(
        f"extern \"C\" int emu_launch_{i}(const unsigned* g, const unsigned* b, void** a, "
        f"unsigned long long s) {{ return emu::launch(&{expression}, g, b, a, s); }}"
        for i, expression in enumerate(name_expressions)
    )
    source = (f"{code}\n{launchers}\n"
              "extern \"C\" const char* emu_error() { return emu::state.error.c_str(); }\n")
    flags = ["-std=c++17", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-U_FORTIFY_SOURCE",
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


class RawKernel:
    """One kernel of an emulated ``RawModule``; called like CuPy's: ``kernel(grid, block, args)``."""

    def __init__(self, library: ctypes.CDLL, index: int, name: str):
        self._launch = getattr(library, f"emu_launch_{index}")
        self._launch.restype = ctypes.c_int
        self._error = library.emu_error
        self._error.restype = ctypes.c_char_p
        self.name = name

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        dims = [(tuple(d) + (1, 1))[:3] if isinstance(d, tuple) else (d, 1, 1)
                for d in (grid, block)]
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
        if status != 0:
            raise EmulatorError(f"{self.name} grid {dims[0]} block {dims[1]}: "
                                f"{self._error().decode()}")
        for position, root in roots:
            if root is None:
                raise EmulatorError(f"{self.name}: argument {position} is not a device buffer")
            spoiled = np.flatnonzero(np.concatenate([root[:GUARD], root[-GUARD:]]) != 0xFF)
            if spoiled.size:
                raise EmulatorError(f"{self.name} wrote outside argument {position} "
                                    f"({spoiled.size} guard bytes changed)")


class RawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` compiled for the CPU."""

    def __init__(self, code: str, options=(), name_expressions=()):
        self._names = list(name_expressions)
        self._library = _compile(code, self._names)

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(self._library, self._names.index(name), name)


# --- modules -------------------------------------------------------------------------------------


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise EmulatorError(f"the emulator has one device (0), not {self.id}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    """``cupy.cuda.Event``: the emulator is synchronous, so a host clock times the work."""

    def record(self, stream=None):
        self.seconds = time.perf_counter()

    def synchronize(self):
        return None


def _elapsed_ms(start: _Event, stop: _Event) -> float:
    return (stop.seconds - start.seconds) * 1e3


class _Generator:
    """``cupy.random.Generator``: NumPy's generator drawing into device arrays (CuPy's methods
    all take ``dtype``; NumPy's mostly do not, so draws are cast)."""

    def __init__(self, seed=None):
        self._host = np.random.default_rng(seed)

    def __getattr__(self, name):
        method = getattr(self._host, name)

        def draw(*args, dtype=None, **kwargs):
            values = np.asarray(method(*args, **kwargs))
            return _wrap(values if dtype is None else values.astype(dtype))

        return draw


def _mirror(name: str, host_module, **own) -> types.ModuleType:
    """Module ``name`` whose functions are ``host_module``'s on device arrays, plus ``own``."""
    module = types.ModuleType(name)
    module.__dict__.update(own)

    def __getattr__(attribute):
        value = getattr(host_module, attribute)
        if isinstance(value, type) or not callable(value):
            return value
        return lambda *args, **kwargs: _device_call(value, args, kwargs)

    module.__getattr__ = __getattr__
    return module


def modules() -> dict[str, types.ModuleType]:
    """``sys.modules`` entries that make ``import cupy`` (and the cupyx parts used) emulated."""
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda device: {"name": b"CPU emulation (tests/cuda_emulator)"})
    cuda = types.SimpleNamespace(Device=_Device, runtime=runtime, Event=_Event,
                                 get_elapsed_time=_elapsed_ms)
    random = types.SimpleNamespace(default_rng=_Generator)
    cupy = _mirror("cupy", np, ndarray=ndarray, asarray=asarray, RawModule=RawModule,
                   RawKernel=RawKernel, cuda=cuda, random=random)
    scipy_ = types.ModuleType("cupyx.scipy")
    fakes = {"cupy": cupy, "cupyx": types.ModuleType("cupyx"), "cupyx.scipy": scipy_}
    fakes["cupyx"].scipy = scipy_
    for part, host in (("fft", scipy.fft), ("ndimage", scipy.ndimage), ("signal", scipy.signal)):
        setattr(scipy_, part, _mirror(f"cupyx.scipy.{part}", host))
        fakes[f"cupyx.scipy.{part}"] = getattr(scipy_, part)
    return fakes


@contextlib.contextmanager
def emulated_cupy():
    """Within the block, ``import cupy`` gives the emulator and augengine's kernel cache is fresh."""
    from augengine.ops import _cuda

    fakes = modules()
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    _cuda._module.cache_clear()
    try:
        yield sys.modules["cupy"]
    finally:
        _cuda._module.cache_clear()
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
