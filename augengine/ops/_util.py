"""Helpers the ops modules share (private to :mod:`augengine.ops`; cf. cupyx's ``_util.py``).

Argument checks are not here but in :mod:`augengine.checks`, shared with every layer.
"""
from __future__ import annotations

import numpy as np

from augengine._xp import get_array_module, is_cupy

#: Threads per block of the kernels of cuda/resample.cu (its RESAMPLE_THREADS).
RESAMPLE_THREADS = 256


def work_dtype(dtype):
    """Float type the interpolation runs in: float64 stays float64, everything else float32."""
    return np.float64 if dtype == np.float64 else np.float32


def restore_dtype(result, dtype):
    """Cast an interpolated float result back to the input dtype (round/clip integers)."""
    xp = get_array_module(result)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return result > 0.5
    if dtype == np.uint8 and is_cupy(result):
        return round_clip_u8_cuda(result)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        result = xp.clip(xp.rint(result), info.min, info.max)
    return result.astype(dtype, copy=False)


def round_clip_u8_cuda(result):
    """``clip(rint(result), 0, 255).astype(uint8)`` of a float CuPy array in one launch
    (``round_clip_u8`` of cuda/resample.cu), not three."""
    import cupy

    from augengine.ops._cuda import get_kernel

    result = cupy.ascontiguousarray(result) if not result.flags.c_contiguous else result
    out = cupy.empty(result.shape, np.uint8)
    ctype = "double" if result.dtype == np.float64 else "float"
    blocks = max(1, min(-(-result.size // RESAMPLE_THREADS), 1 << 20))
    get_kernel("resample.cu", f"round_clip_u8<{ctype}>")(
        (blocks,), (RESAMPLE_THREADS,), (result, np.int64(result.size), out))
    return out


def ndimage(xp):
    """``scipy.ndimage`` for NumPy, ``cupyx.scipy.ndimage`` for CuPy."""
    if xp is np:
        import scipy.ndimage

        return scipy.ndimage
    import cupyx.scipy.ndimage

    return cupyx.scipy.ndimage


def frame_label(index: tuple, ndim: int) -> str:
    """' in frame 3' / ' in frame (1, 2)' for stacked frames; '' for a single frame."""
    lead = index[: max(ndim - 2, 0)]
    if not lead:
        return ""
    return f" in frame {lead[0]}" if len(lead) == 1 else f" in frame {tuple(int(i) for i in lead)}"
