"""The CUDA emulator must fail where a GPU would misbehave, or the parity tests it runs prove
nothing: each test here is a small kernel with a known defect (or a known right answer), or a
call CuPy refuses; the emulator's signatures are checked against the installed CuPy."""
from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import os
import re
from pathlib import Path

import numpy as np
import pytest

from augengine.ops import _cuda
from augengine.ops.despeckle import srad
from tests import cuda_emulator
from tests.cuda_emulator import EmulatorError, RawModule, emulated_cupy

BLOCK_SUM = r"""
// Sum of 256 values per block: shared-memory tree, then a warp shuffle for the last 32.
extern "C" __global__ void block_sum(const float* x, float* out, int skip_sync)
{
    __shared__ float partial[256];
    const int t = threadIdx.x;
    partial[t] = x[blockIdx.x * 256 + t];
    if (!skip_sync) __syncthreads();
    for (int half = 128; half >= 32; half >>= 1) {
        if (t < half) partial[t] += partial[t + half];
        __syncthreads();
    }
    if (t < 32) {
        float v = partial[t];
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (t == 0) out[blockIdx.x] = v;
    }
}

extern "C" __global__ void write_past_end(float* out, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;  // off by one
}

extern "C" __global__ void divergent_barrier(float* out)
{
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1.0f;
}

template <typename T>
__global__ void scale(T* x, long long n, T factor)
{
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] *= factor;
}

extern "C" __global__ void count_blocks(int* count)
{
    if (threadIdx.x == 0) *count += 1;  // one OS thread runs the blocks: no race
}

extern "C" __global__ void float_products(const float* x, float* out)
{
    out[0] = x[0] * x[1];  // 1e-20 * 1e-20: a denormal result
    out[1] = x[2] * x[3];  // a denormal input times 1
}
"""
NAMES = ("block_sum", "write_past_end", "divergent_barrier", "scale<double>", "count_blocks",
         "float_products")


@pytest.fixture
def cp():
    with emulated_cupy() as cupy:
        yield cupy


@pytest.fixture
def kernels(cp):
    module = RawModule(code=BLOCK_SUM, name_expressions=NAMES)
    return {name: module.get_function(name) for name in NAMES}


def test_block_reduction_with_shuffles_is_exact(cp, kernels):
    x = np.arange(4 * 256, dtype=np.float32) % 7
    out = cp.zeros(4, dtype=np.float32)
    kernels["block_sum"]((4,), (256,), (cp.asarray(x), out, np.int32(0)))
    np.testing.assert_array_equal(out.get(), x.reshape(4, 256).sum(axis=1))


def test_missing_barrier_changes_the_result(cp, kernels):
    # Without the first __syncthreads some threads add partial[t + half] before it is written;
    # the emulator runs threads in a random order, so across a few launches that shows.
    x = np.ones(256, dtype=np.float32)
    sums = []
    for _ in range(5):
        out = cp.zeros(1, dtype=np.float32)
        kernels["block_sum"]((1,), (256,), (cp.asarray(x), out, np.int32(1)))
        sums.append(float(out.get()[0]))
    assert any(total != 256.0 for total in sums), f"race not exposed: sums {sums}, expected != 256"


def test_out_of_bounds_write_names_the_argument_at_the_next_synchronisation(
        cp, kernels, monkeypatch):
    # As on a GPU the launch returns; the copy back reports the fault, and so does every
    # synchronisation after it (a faulted CUDA context stays unusable).
    out = cp.zeros(100, dtype=np.float32)
    kernels["write_past_end"]((1,), (128,), (out, np.int32(100)))
    unrelated = cp.ones(4)
    with pytest.raises(EmulatorError, match="write_past_end wrote outside argument 0"):
        unrelated.get()
    with pytest.raises(EmulatorError, match="write_past_end wrote outside argument 0"):
        cp.cuda.Device().synchronize()
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    with pytest.raises(EmulatorError, match="write_past_end wrote outside argument 0"):
        kernels["write_past_end"]((1,), (128,), (cp.zeros(100, dtype=np.float32), np.int32(100)))


def test_barrier_not_reached_by_every_thread_is_reported(cp, kernels):
    out = cp.zeros(32, dtype=np.float32)
    kernels["divergent_barrier"]((1,), (32,), (out,))
    with pytest.raises(EmulatorError, match="deadlock: 16 of 32 threads wait at __syncthreads"):
        cp.cuda.Event().synchronize()


def test_a_fault_never_synchronised_is_raised_when_the_emulation_ends():
    launched = False
    with pytest.raises(EmulatorError, match="write_past_end wrote outside argument 0"):
        with emulated_cupy() as cp:
            module = RawModule(code=BLOCK_SUM, name_expressions=NAMES)
            out = cp.zeros(10, np.float32)
            module.get_function("write_past_end")((1,), (64,), (out, np.int32(10)))
            launched = True
    assert launched, "the launch itself raised: kernel faults must be asynchronous"


@pytest.mark.parametrize(
    "grid, block, message",
    [((1,), (2048,), "invalid block"), ((1, 70000), (32,), "invalid grid")],
)
def test_launch_limits_are_the_drivers(cp, kernels, grid, block, message):
    x = cp.ones(8, dtype=np.float64)
    with pytest.raises(EmulatorError, match=message):
        kernels["scale<double>"](grid, block, (x, np.int64(8), np.float64(2.0)))


def test_zero_grid_dimensions_launch_one_block_as_cupy_does(cp, kernels):
    # cupy/cuda/function.pyx: Function.__call__ launches max(1, grid[i]) blocks.
    count = cp.zeros(1, dtype=np.int32)
    kernels["count_blocks"]((0, 0), (32,), (count,))
    assert int(count.get()[0]) == 1


@pytest.mark.parametrize(
    "grid, block, more, keywords, message",
    [(4, (32,), (), {}, "Argument 'grid' has incorrect type \\(expected tuple, got int\\)"),
     ((4,), [32], (), {}, "Argument 'block' has incorrect type \\(expected tuple, got list\\)"),
     ((4,), (32,), (0,), {}, "positional arguments"),
     ((4,), (32,), (), {"enable_cooperative_groups": True}, "multiple values for keyword")],
    ids=["int-grid", "list-block", "positional-shared-mem", "cooperative-groups"],
)
def test_kernel_calls_cupy_refuses_are_refused(cp, kernels, grid, block, more, keywords, message):
    # CuPy's RawKernel.__call__(grid, block, args, **kwargs) hands grid and block to
    # Function.__call__(tuple grid, tuple block, args, size_t shared_mem=0, stream=None, ...).
    x = cp.ones(8)
    with pytest.raises(TypeError, match=message):
        kernels["scale<double>"](grid, block, (x, np.int64(8), np.float64(2.0)), *more, **keywords)
    kernels["scale<double>"]((4,), (32,), (x, np.int64(8), np.float64(2.0)), stream=None)
    np.testing.assert_array_equal(x.get(), np.full(8, 2.0))


def test_single_precision_denormals_flush_to_zero_as_cupy_compiles(cp, kernels):
    # CuPy compiles every RawModule with -ftz=true (cupy/cuda/compiler.py).
    x = cp.asarray(np.array([1e-20, 1e-20, 1e-40, 1.0], dtype=np.float32))
    out = cp.ones(2, dtype=np.float32)
    kernels["float_products"]((1,), (1,), (x, out))
    np.testing.assert_array_equal(out.get(), [0.0, 0.0])
    assert np.float32(1e-20) * np.float32(1e-20) != 0, "the launch left the host flushing"


def test_nvrtc_options_the_emulator_does_not_know_are_refused(cp):
    with pytest.raises(EmulatorError, match="NVRTC option '--use_fast_math'"):
        RawModule(code=BLOCK_SUM, options=("--use_fast_math",), name_expressions=NAMES)


def test_template_kernel_and_scalar_arguments(cp, kernels):
    x = cp.asarray(np.arange(1000, dtype=np.float64))
    kernels["scale<double>"]((3,), (64,), (x, np.int64(1000), np.float64(0.5)))
    np.testing.assert_array_equal(x.get(), np.arange(1000) * 0.5)


def test_python_scalars_are_refused(cp, kernels):
    # CuPy would pick a width for a Python int; the ops pass fixed-width NumPy scalars.
    with pytest.raises(TypeError, match="argument 1 is int"):
        kernels["scale<double>"]((1,), (32,), (cp.ones(4), 4, np.float64(2.0)))


def test_host_and_device_arrays_do_not_mix(cp):
    device = cp.ones(4)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(device)
    with pytest.raises(TypeError, match="Unsupported type"):
        device + np.ones(4)
    assert isinstance(device + 1.0, cp.ndarray) and type(device).__module__ == "cupy"


def test_a_broken_srad_kernel_fails_parity(cp, monkeypatch, rng):
    """Mutation check on the real kernel: drop the barrier between loading the tile and computing
    the diffusion coefficients; the emulated SRAD must then disagree with NumPy."""
    source = _cuda.read_source("srad.cu")
    marker = "    const T kt = (T)k;\n    __syncthreads();\n"
    assert marker in source, "srad.cu changed: update the mutation in this test"
    monkeypatch.setattr(_cuda, "read_source", lambda name: source.replace(
        marker, "    const T kt = (T)k;\n"))
    _cuda._module.cache_clear()
    images = (rng.exponential(1.0, (2, 40, 40)) + 0.5).astype(np.float32)
    broken = srad(cp.asarray(images), 3, q0=0.8).get()
    assert not np.array_equal(broken, srad(images, 3, q0=0.8)), (
        "SRAD without its tile barrier still matched NumPy: the emulator hides races")


# --- CuPy's API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [(lambda cp: cp.random.default_rng(0).exponential(1.0, (4,), dtype=np.float32),
      "exponential\\(\\) got an unexpected keyword argument 'dtype'"),
     (lambda cp: cp.zeros(4, like=None), "zeros\\(\\) got an unexpected keyword argument 'like'"),
     (lambda cp: cp.ones(4).max(initial=0.0),
      "max\\(\\) got an unexpected keyword argument 'initial'"),
     (lambda cp: cp.sqrt(cp.ones(4), where=True), "Wrong arguments {'where': True}")],
    ids=["generator", "function", "method", "ufunc"],
)
def test_arguments_cupy_refuses_are_refused(cp, call, message):
    with pytest.raises(TypeError, match=message):
        call(cp)


def test_what_cupy_lacks_is_missing(cp):
    # CuPy 14's Generator has no normal(); NumPy's has.
    with pytest.raises(AttributeError, match="cupy.random.Generator.normal is not emulated"):
        cp.random.default_rng(0).normal(0.0, 1.0, (4,))
    with pytest.raises(AttributeError, match="cupy.ndarray.tolist is not emulated"):
        cp.ones(4).tolist()


@pytest.fixture(scope="module")
def real_cupy():
    """The installed CuPy (imports without a GPU; only allocations and launches need one)."""
    try:
        import cupy
    except ImportError as error:
        if os.environ.get("AUGENGINE_SKIP_CUDA_COMPILE") == "1":
            pytest.skip(f"CuPy not importable ({error}) and AUGENGINE_SKIP_CUDA_COMPILE=1")
        pytest.fail(f"CuPy not importable ({error}): install the gpu extra (its CuPy checks the "
                    "emulator's signatures), or set AUGENGINE_SKIP_CUDA_COMPILE=1 to skip")
    return cupy


def _signature_from_parameters(parameters: str) -> inspect.Signature:
    namespace = {"numpy": np}
    exec(f"def f{parameters}:\n    pass", namespace)  # noqa: S102 - CuPy's own text
    return inspect.signature(namespace["f"])


def _real_signature(path: str) -> inspect.Signature:
    """CuPy's signature of ``path``: inspect's, or for Cython functions without one the first
    docstring line (Cython's embedded signature, C types dropped); for a module that cannot be
    imported here (cupyx.scipy.signal needs cuBLAS) the ``def`` in its source."""
    parts = path.split(".")
    split = max(i for i in range(1, len(parts)) if importlib.util.find_spec(".".join(parts[:i])))
    module, attributes = ".".join(parts[:split]), parts[split:]
    try:
        obj = functools.reduce(getattr, attributes, importlib.import_module(module))
    except ImportError:
        folder = Path(importlib.util.find_spec(module).origin).parent
        for source in sorted(folder.glob("*.py")):
            for node in ast.parse(source.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name == attributes[-1]:
                    return _signature_from_parameters(f"({ast.unparse(node.args)})")
        raise
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        first = obj.__doc__.splitlines()[0]
        parameters = re.fullmatch(r"[\w.]+(\(.*\))(?: -> .*)?", first).group(1)
        parameters = re.sub(r"\b(?:int|str|bint|bool|tuple|object)\s+(?=\w)", "",
                            parameters.replace("\\*", "*"))
        return _signature_from_parameters(parameters)


def _parameters(signature: inspect.Signature):
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("path", cuda_emulator.API)
def test_signature_is_cupys(real_cupy, path):
    fakes = cuda_emulator.modules()
    parts = path.split(".")
    root = ".".join(parts[:2]) if parts[:2] == ["cupyx", "scipy"] else parts[0]
    emulated = functools.reduce(getattr, parts[root.count(".") + 1 :], fakes[root])
    assert _parameters(inspect.signature(emulated)) == _parameters(_real_signature(path)), (
        f"{path}: emulated {inspect.signature(emulated)}, CuPy {_real_signature(path)}")


def test_array_attributes_exist_in_cupy(real_cupy):
    missing = [name for name in cuda_emulator.ATTRIBUTES if not hasattr(real_cupy.ndarray, name)]
    assert not missing, f"cupy.ndarray has no {missing}"


@pytest.mark.parametrize(
    "args, kwargs, message",
    [(("code",), {}, "positional"),
     ((), {"code": BLOCK_SUM, "options": ["--std=c++17"]},
      "Argument 'options' has incorrect type \\(expected tuple, got list\\)")],
    ids=["positional-code", "options-list"],
)
def test_raw_module_refuses_what_cupy_refuses(real_cupy, cp, args, kwargs, message):
    # CuPy's RawModule compiles lazily, so its constructor runs here without a GPU.
    with pytest.raises(TypeError, match=message):
        real_cupy.RawModule(*args, **kwargs)
    with pytest.raises(TypeError, match=message):
        cp.RawModule(*args, **kwargs)


def test_counting_names_every_launch_sync_and_copy():
    """Hand-counted: one copy in, a view (no kernel), one ufunc, one reduction, then get() and
    float() wait for the device once each; SRAD launches its step kernel once per iteration."""
    with emulated_cupy() as cupy, cuda_emulator.counting() as outer:
        with cuda_emulator.counting() as counts:
            image = cupy.asarray(np.ones((8, 8), np.float32))
            scaled = cupy.multiply(image[2:6, 2:6], np.float32(2))
            total = scaled.sum()
            scaled.get()
            float(total)
        srad(image, 3, q0=0.5)
        cupy.cuda.Device().synchronize()
    assert counts.launches == {"cupy.multiply": 1, "cupy.sum": 1}, counts.launches
    assert counts.h2d == {"cupy.asarray": 1}, counts.h2d
    assert counts.syncs == {"ndarray.get": 1, "float()": 1}, counts.syncs
    assert outer.launches["srad_step<float>"] == 3, outer.launches
    assert outer.syncs["float()"] == 1 and outer.syncs["Device.synchronize"] == 1, (
        f"the outer block sees the inner block's work too: {outer.syncs}")
    assert outer.n_launches == sum(outer.launches.values()) > counts.n_launches == 2


def test_an_async_copy_waits_at_an_events_synchronize():
    """get(blocking=False) into pinned memory queues the copy; the one wait is an event's
    synchronize() after it, counted as the sync."""
    with emulated_cupy() as cupy, cuda_emulator.counting() as counts:
        import cupyx

        image = cupy.asarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
        pinned = cupyx.empty_pinned(image.shape, np.uint8)
        image.get(out=pinned, blocking=False)
        done = cupy.cuda.Event(block=True, disable_timing=True)
        done.record()
        done.synchronize()
    np.testing.assert_array_equal(pinned, np.arange(6).reshape(2, 3))
    assert counts.d2h_async == {"ndarray.get": 1}, counts.d2h_async
    assert counts.syncs == {"Event.synchronize": 1}, counts.syncs


def test_a_kernel_reads_through_a_table_of_pointers(cp):
    """``ndarray.data.ptr`` of views, gathered in a device table, as ragged kernels take them."""
    module = RawModule(code=r"""
extern "C" __global__ void first_of_each(const unsigned long long* ptrs, float* out, int n)
{
    const int i = threadIdx.x;
    if (i < n) out[i] = *(const float*)ptrs[i];
}""", name_expressions=["first_of_each"])
    base = cp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    views = [base[1, 2:], base[2:, 1:]]
    table = cp.asarray(np.array([v.data.ptr for v in views], np.uint64))
    out = cp.empty(2, np.float32)
    module.get_function("first_of_each")((1,), (32,), (table, out, np.int32(2)))
    np.testing.assert_array_equal(out.get(), [6.0, 9.0])


def test_ascontiguousarray_of_a_contiguous_array_is_no_launch():
    """As in CuPy, which returns the array itself; a view that needs a copy is a launch."""
    with emulated_cupy() as cupy, cuda_emulator.counting() as counts:
        image = cupy.asarray(np.ones((4, 6), np.float32))
        same = cupy.ascontiguousarray(image)
        copied = cupy.ascontiguousarray(image[:, ::2])
    assert same is image and copied.shape == (4, 3)
    assert counts.launches == {"cupy.ascontiguousarray": 1}, counts.launches
