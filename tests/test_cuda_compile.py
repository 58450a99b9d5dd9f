"""Every ``cuda/*.cu`` compiles for real for sm_80 and sm_90 on a machine without a GPU.

Compiler: CuPy's low-level NVRTC binding (``createProgram``/``compileProgram``/``getCUBIN`` needs
no device). It needs the ``nvidia-cuda-nvrtc-cu12`` wheel next to ``cupy-cuda12x``; CuPy 14
locates that library by itself (checked with an empty environment: no ``CUDA_PATH`` or
``LD_LIBRARY_PATH`` needed). Fallback: ``nvcc`` on PATH or under ``/usr/local/cuda*/bin``.
With neither, the tests FAIL, unless ``AUGENGINE_SKIP_CUDA_COMPILE=1`` is set.

Each source is compiled with the name expressions the runtime uses (``augengine.ops._cuda``) and
the options CuPy's ``RawModule`` hands NVRTC for them: the project's, as CuPy's
``assemble_cupy_compiler_options`` extends them (C++ standard, include paths), then what
``cupy/cuda/compiler.py`` appends (``tests.cuda_emulator.cupy_nvrtc_options``, checked here against
that code). Every kernel name the Python side requests must be in the cubin. nvcc gets the
project's options and ``-ftz=true``; it has no ``--device-as-default-execution-space``.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from augengine.ops import _cuda, _reconstruction_cuda, _util, despeckle
from tests.cuda_emulator import cupy_nvrtc_options

ARCHS = ("sm_80", "sm_90")
SOURCES = sorted(path.name for path in _cuda.CUDA_DIR.glob("*.cu"))


class CompileError(Exception):
    """The compiler rejected the source; the message carries its log."""


def _cupy_options(options, arch: str) -> tuple[str, ...]:
    """What CuPy's RawModule(code=..., options=options) hands NVRTC for ``arch`` ("sm_80")."""
    from cupy._core.core import assemble_cupy_compiler_options
    from cupy.cuda import compiler

    pch = compiler._use_pch and compiler._get_nvrtc_version() >= (12, 8)
    return cupy_nvrtc_options(assemble_cupy_compiler_options(tuple(options)), arch[3:], pch)


class Nvrtc:
    name = "nvrtc"

    def __init__(self, nvrtc):
        self.nvrtc = nvrtc

    def compile(self, source: str, filename: str, kernels, options, arch: str) -> dict[str, bool]:
        """Compile to a cubin with CuPy's options; map each kernel name expression to 'its
        symbol is in the cubin'."""
        nvrtc = self.nvrtc
        program = nvrtc.createProgram(source, filename, [], [])
        try:
            for kernel in kernels:
                nvrtc.addNameExpression(program, kernel)
            try:
                nvrtc.compileProgram(program, list(_cupy_options(options, arch)))
            except nvrtc.NVRTCError as error:
                raise CompileError(f"{error}\n{nvrtc.getProgramLog(program)}") from None
            cubin = nvrtc.getCUBIN(program)
            return {k: nvrtc.getLoweredName(program, k).encode() in cubin for k in kernels}
        finally:
            nvrtc.destroyProgram(program)


class Nvcc:
    name = "nvcc"

    def __init__(self, path: str):
        self.path = path

    def compile(self, source: str, filename: str, kernels, options, arch: str) -> dict[str, bool]:
        """Compile a wrapper that takes each kernel's address, which instantiates every template
        and fails to compile for a name that does not exist."""
        with tempfile.TemporaryDirectory() as tmp:
            wrapper = Path(tmp) / filename
            keep = ", ".join(f"(void*)&{kernel}" for kernel in kernels)
            wrapper.write_text(f"{source}\nvoid* augengine_kernels[] = {{{keep}}};\n")
            cubin = Path(tmp) / "out.cubin"
            result = subprocess.run(
                [self.path, "-cubin", f"-arch={arch}", *options, "-ftz=true", "-o", str(cubin),
                 str(wrapper)],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise CompileError(result.stderr)
            data = cubin.read_bytes()
        return {k: re.sub(r"<.*", "", k).encode() in data for k in kernels}


def find_compiler():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
        return Nvrtc(nvrtc)
    except Exception:  # cupy missing, or libnvrtc not found
        pass
    candidates = [shutil.which("nvcc")] + sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))
    path = next((c for c in candidates if c), None)
    return Nvcc(path) if path else None


@pytest.fixture(scope="module")
def compiler():
    if os.environ.get("AUGENGINE_SKIP_CUDA_COMPILE") == "1":
        pytest.skip("AUGENGINE_SKIP_CUDA_COMPILE=1: CUDA compile check explicitly disabled")
    found = find_compiler()
    if found is None:
        pytest.fail(
            "no CUDA compiler: install cupy-cuda12x + nvidia-cuda-nvrtc-cu12, or put nvcc on PATH "
            "(set AUGENGINE_SKIP_CUDA_COMPILE=1 to skip this check on purpose)"
        )
    return found


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES)
def test_source_compiles_with_every_kernel(compiler, source, arch):
    kernels = _cuda.KERNELS[source]
    try:
        found = compiler.compile(
            _cuda.read_source(source), source, kernels, _cuda.OPTIONS[source], arch
        )
    except CompileError as error:
        pytest.fail(f"{source} does not compile for {arch} with {compiler.name}:\n{error}")
    missing = [kernel for kernel, present in found.items() if not present]
    assert not missing, f"{source} ({arch}, {compiler.name}): kernels not in the cubin: {missing}"


class _LoadedModule:
    """Stands in for ``cupy.cuda.function.Module``, whose load needs a GPU."""

    def load(self, cubin):
        self.cubin = cubin

    def _set_mapping(self, mapping):
        self.mapping = mapping


@pytest.mark.parametrize("pch", [False, True], ids=["default", "CUPY_NVRTC_USE_PCH=1"])
@pytest.mark.parametrize("arch", ARCHS)
def test_options_are_the_ones_cupy_passes(compiler, monkeypatch, arch, pch):
    """cupy_nvrtc_options retypes what cupy/cuda/compiler.py appends: run that code (RawModule's
    path below assemble_cupy_compiler_options) on srad.cu and record what reaches NVRTC. Its two
    device queries are replaced: the per-device memoised arch lookup by the function it wraps,
    the module load by a recorder."""
    if not isinstance(compiler, Nvrtc):
        pytest.skip("CuPy's NVRTC binding is not available (nvcc fallback)")
    from cupy._core.core import assemble_cupy_compiler_options
    from cupy.cuda import compiler as cupy_compiler

    recorded = []
    compile_program = cupy_compiler._NVRTCProgram.compile

    def record(program, options=(), log_stream=None):
        recorded.append(tuple(options))
        return compile_program(program, options, log_stream)

    monkeypatch.setattr(cupy_compiler._NVRTCProgram, "compile", record)
    monkeypatch.setattr(cupy_compiler, "_get_arch_for_options_for_nvrtc",
                        cupy_compiler._get_arch_for_options_for_nvrtc.__wrapped__)
    monkeypatch.setattr(cupy_compiler.function, "Module", _LoadedModule)
    monkeypatch.setattr(cupy_compiler, "_use_pch", pch)
    options = assemble_cupy_compiler_options(_cuda.OPTIONS["srad.cu"])
    module = cupy_compiler._compile_with_cache_cuda(
        _cuda.read_source("srad.cu"), options, arch[3:], name_expressions=_cuda.KERNELS["srad.cu"],
        cache_in_memory=True)
    assert set(module.mapping) == set(_cuda.KERNELS["srad.cu"])
    assert recorded[-1] == _cupy_options(_cuda.OPTIONS["srad.cu"], arch), (
        f"CuPy passes NVRTC {recorded[-1]}, the compile test and the emulator assume "
        f"{_cupy_options(_cuda.OPTIONS['srad.cu'], arch)}")


def test_every_source_is_registered():
    assert SOURCES == sorted(_cuda.KERNELS), (
        f"cuda/*.cu files {SOURCES} and augengine.ops._cuda.KERNELS {sorted(_cuda.KERNELS)} "
        "must list the same sources"
    )
    assert set(_cuda.OPTIONS) == set(_cuda.KERNELS), "every source needs its NVRTC options"


def test_broken_source_fails_to_compile(compiler):
    good = _cuda.read_source("srad.cu")
    broken = good.replace("const T p = T(4) * j0 + l;", "const T p = T(4) * j0 +;")
    assert broken != good, "the statement to break was not found in srad.cu"
    with pytest.raises(CompileError):
        compiler.compile(
            broken, "srad.cu", _cuda.KERNELS["srad.cu"], _cuda.OPTIONS["srad.cu"], "sm_80"
        )


def test_unknown_kernel_name_fails(compiler):
    source = 'extern "C" __global__ void present(float* x) { x[0] = 1.0f; }\n'
    with pytest.raises(CompileError):
        compiler.compile(source, "tiny.cu", ["present", "absent<float>"], (), "sm_80")


def _defines(source: str) -> dict[str, str]:
    return dict(re.findall(r"^#define (\w+) (\S+)", _cuda.read_source(source), flags=re.M))


def test_launch_geometry_matches_python():
    srad_cu = _defines("srad.cu")
    tile = (int(srad_cu["SRAD_TILE_X"]), int(srad_cu["SRAD_TILE_Y"]))
    block = (int(srad_cu["SRAD_BLOCK_X"]), int(srad_cu["SRAD_BLOCK_Y"]))
    assert tile == despeckle._TILE, f"srad.cu tile {tile} != despeckle._TILE {despeckle._TILE}"
    assert block == despeckle._BLOCK, f"srad.cu block {block} != despeckle._BLOCK"
    assert float(srad_cu["SRAD_Q0SQ_FLOOR"]) == despeckle._Q0SQ_FLOOR, "q0^2 floor differs"
    assert int(srad_cu["SRAD_SERIES_THREADS"]) == despeckle._SERIES_THREADS, (
        f"srad.cu SRAD_SERIES_THREADS {srad_cu['SRAD_SERIES_THREADS']} != "
        f"despeckle._SERIES_THREADS {despeckle._SERIES_THREADS}")
    assert float(srad_cu["SRAD_INTENSITY_FLOOR"]) == despeckle._INTENSITY_FLOOR, (
        "intensity floor differs")
    threads = int(_defines("resample.cu")["RESAMPLE_THREADS"])
    assert threads == _util.RESAMPLE_THREADS, (
        f"resample.cu RESAMPLE_THREADS {threads} != _util.RESAMPLE_THREADS "
        f"{_util.RESAMPLE_THREADS}")
    bmode_cu = _defines("bmode.cu")
    cuda = tuple(int(bmode_cu[name]) for name in ("TILE", "TILE_ROWS", "ITEMS"))
    rc = _reconstruction_cuda
    assert cuda == (rc._TILE, rc._TILE_ROWS, rc._ITEMS), (
        f"bmode.cu TILE/TILE_ROWS/ITEMS {cuda} != Python {(rc._TILE, rc._TILE_ROWS, rc._ITEMS)}"
    )


def test_importing_the_ops_compiles_nothing():
    code = (
        "import sys, augengine.ops, augengine.ops.despeckle, augengine.ops._reconstruction_cuda; "
        "print('cupy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[1], check=True,
    )
    assert result.stdout.strip() == "False", "importing the ops must not import CuPy"
