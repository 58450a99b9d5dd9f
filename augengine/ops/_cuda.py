"""CUDA sources of the ops: read from the package, compiled once per device on first use.

The kernels live in ``augengine/cuda/*.cu`` (the repository's top-level ``cuda/``, shipped as
package data). :data:`KERNELS` lists, per source file, every kernel name the Python side looks
up, template instantiations included; they are the ``name_expressions`` handed to NVRTC, and the
CI compile test (``tests/test_cuda_compile.py``) checks each of them for sm_80 and sm_90 on a
machine without a GPU. Nothing here imports CuPy or compiles anything at import time.
"""
from __future__ import annotations

import functools
from pathlib import Path

import augengine

#: Folder of the ``.cu`` sources inside the installed package.
CUDA_DIR = Path(augengine.__file__).parent / "cuda"

#: Kernel names (NVRTC name expressions) of each source, exactly as the Python side requests them.
KERNELS: dict[str, tuple[str, ...]] = {
    "srad.cu": (
        "srad_roi_sums<float>",
        "srad_roi_sums<double>",
        "srad_step<float>",
        "srad_step<double>",
        "srad_q0sq",
        "srad_series_u8<float>",
    ),
    "bmode.cu": (
        "rf_to_lines<short, float>",
        "rf_to_lines<float, float>",
        "rf_to_lines<double, double>",
        "hilbert_spectrum<float>",
        "hilbert_spectrum<double>",
        "analytic_magnitude_lines<float>",
        "analytic_magnitude_lines<double>",
        "analytic_magnitude_transposed<float>",
        "analytic_magnitude_transposed<double>",
        "log_compress_u8<float>",
        "log_compress_u8<double>",
        "compress_envelope_u8<float>",
        "compress_envelope_u8<double>",
    ),
    "resample.cu": (
        "round_clip_u8<float>",
        "round_clip_u8<double>",
        "resize_rows<unsigned char, float>",
        "resize_rows<float, float>",
        "resize_rows<double, double>",
        "resize_cols<float, unsigned char>",
        "resize_cols<float, float>",
        "resize_cols<double, double>",
        "warp_affine<unsigned char>",
        "warp_affine<bool>",
        "warp_affine<float>",
        "warp_affine<double>",
    ),
}

#: NVRTC options per source. ``--fmad=false`` keeps every product and sum separately rounded, as
#: NumPy rounds them, so GPU and CPU results can be compared bit for bit where the maths allows.
OPTIONS: dict[str, tuple[str, ...]] = {
    "srad.cu": ("--std=c++17", "--fmad=false"),
    "bmode.cu": ("--std=c++17", "--fmad=false"),
    "resample.cu": ("--std=c++17", "--fmad=false"),
}


def read_source(name: str) -> str:
    """Text of ``augengine/cuda/<name>``.

    Parameters
    ----------
    name : str
        Source file name, a key of :data:`KERNELS` (e.g. ``"srad.cu"``).

    Returns
    -------
    str
        The CUDA C++ source.

    Example
    -------
    >>> "srad_step" in read_source("srad.cu")
    True
    """
    if name not in KERNELS:
        raise KeyError(f"unknown CUDA source {name!r}; known: {sorted(KERNELS)}")
    return (CUDA_DIR / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _module(name: str, device_id: int):
    """The compiled ``cupy.RawModule`` of ``name`` for one device (cached per device)."""
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(
            code=read_source(name), options=OPTIONS[name], name_expressions=KERNELS[name]
        )


def get_kernel(name: str, kernel: str):
    """The ``cupy.RawKernel`` ``kernel`` of source ``name`` on the current CUDA device.

    The source is compiled by NVRTC for the current device the first time any of its kernels is
    requested on that device; later calls return the cached module's function.

    Parameters
    ----------
    name : str
        Source file, e.g. ``"srad.cu"``.
    kernel : str
        Kernel name expression listed in ``KERNELS[name]``, e.g. ``"srad_step<float>"``.

    Returns
    -------
    cupy.RawKernel

    Example
    -------
    >>> step = get_kernel("srad.cu", "srad_step<float>")    # doctest: +SKIP
    """
    if kernel not in KERNELS.get(name, ()):
        raise KeyError(f"{kernel!r} is not a kernel of {name!r}; known: {KERNELS.get(name)}")
    import cupy

    return _module(name, cupy.cuda.Device().id).get_function(kernel)
