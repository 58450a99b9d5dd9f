"""CUDA back end of :mod:`augengine.ops.reconstruction`: envelope, log compression, B-mode
(the envelope with its peaks, then the compression at each dynamic range).

Same semantics as the NumPy functions there, which validate the parameters and resolve ``axis``
to an array axis before handing CuPy arrays over (CuPy is imported only then). Both FFTs run in
cuFFT through ``cupyx.scipy.fft``; the custom kernels of ``cuda/bmode.cu`` fuse what cuFFT and
CuPy's elementwise ops would do in separate passes (conversion + transposition, spectrum
weighting, magnitude + per-frame maximum, dB mapping to uint8).

The only device-to-host transfers are the per-frame maxima (and minima for
:func:`log_compress_cuda`), a few bytes per frame that the NaN/Inf, negative and all-zero checks
need to raise the same errors as NumPy, and ``isfinite(rf).all()`` for float RF in
:func:`envelope_cuda`. :func:`envelope_peaks_cuda` and :func:`compress_envelope_cuda` copy
nothing back: ``envelope_peaks`` there copies the peaks for its check (``peaks_error``), unless
``check=False`` leaves that to the caller.
"""
from __future__ import annotations

import math

import numpy as np

from augengine.errors import InputError
from augengine.ops._cuda import get_kernel
from augengine.ops._util import frame_label

# Launch geometry of cuda/bmode.cu: TILE x TILE tiles on (TILE, TILE_ROWS) blocks; ITEMS
# elements per thread in analytic_magnitude_lines.
_TILE, _TILE_ROWS, _ITEMS = 32, 8, 8
_THREADS = 256
_MAX_BLOCKS = 1 << 20  # grid-stride kernels: enough blocks to fill any current GPU
_MAX_GRID_YZ = 65535

_CTYPES = {
    np.dtype(np.int16): "short",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}
_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def envelope_cuda(rf, axis: int):
    """Envelope ``|x + j H{x}|`` of RF lines along ``axis`` on the GPU.

    Parameters
    ----------
    rf : cupy.ndarray, integer or float, any shape
        Raw RF; ``axis`` is its time axis, already resolved to an array axis.
    axis : int
        Array axis of fast time, ``0 <= axis < rf.ndim``.

    Returns
    -------
    cupy.ndarray, same shape as ``rf``
        float64 for float64 input, float32 otherwise.

    Raises
    ------
    InputError
        Float RF with NaN/Inf samples; more than 2,097,120 samples per line with time not the last
        axis.

    Notes
    -----
    ``x`` is converted (and, when time is not the last axis, transposed) to contiguous lines in
    one kernel, ``X = RFFT(x)`` (cuFFT R2C), ``X <- -j X / n`` with the DC and Nyquist bins
    zeroed, ``H{x} = IRFFT(X)`` (cuFFT C2R, unscaled), and ``A = sqrt(x^2 + H{x}^2)`` is written
    back in the layout of ``rf``, as :func:`augengine.ops.reconstruction.envelope` does on the CPU.

    Example
    -------
    >>> env = envelope_cuda(cupy.asarray(rf_int16), axis=0)      # doctest: +SKIP
    """
    import cupy

    if rf.dtype.kind == "f" and not bool(cupy.isfinite(rf).all()):
        raise InputError("RF contains NaN or Inf samples")
    env, _ = _analytic_envelope(rf, axis, with_max=False)
    return env


def log_compress_cuda(env, dynamic_range_db: float, reference: float | None,
                      checked: bool = True):
    """Grey levels ``rint(clip(255 + (20*255/DR) log10(A / A_max), 0, 255))`` as uint8, on the GPU.

    Parameters
    ----------
    env : cupy.ndarray (..., depth, lines), real, values >= 0
        Envelope; the last two axes are a frame (1-D: one frame).
    dynamic_range_db : float
        ``DR`` in dB, validated (> 0).
    reference : float or None
        ``A_max``; None: each frame's maximum.
    checked : bool, optional
        False skips the range checks (and their device-to-host copy) for an envelope known to
        be finite and positive, such as SRAD's output; only with a ``reference``.

    Returns
    -------
    cupy.ndarray of uint8, same shape

    Raises
    ------
    InputError
        NaN/Inf or negative amplitudes; an all-zero frame without ``reference``.

    Notes
    -----
    Evaluated in the envelope's precision (float32 stays float32, integers and float16 become
    float64), in the operation order of the NumPy reference, with round half to even.

    Example
    -------
    >>> grey = log_compress_cuda(env, 50.0, None)                # doctest: +SKIP
    """
    import cupy

    dtype = env.dtype if env.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    env = cupy.ascontiguousarray(env, dtype=dtype)
    frames, frame_size = _frames(env.shape)
    if not checked and reference is not None:
        log_max = cupy.full(frames, math.log10(reference), dtype=dtype)
        return _grey_levels(env, frame_size, log_max, dynamic_range_db)
    per_frame = env.reshape(frames, frame_size)
    frame_max = per_frame.max(axis=1)
    low, high = cupy.stack([per_frame.min(axis=1), frame_max]).get()
    lead = env.shape[:-2]
    bad = ~np.isfinite(low) | ~np.isfinite(high)
    if bad.any():
        raise InputError(f"envelope contains NaN or Inf{_where(bad, lead, env.ndim)}")
    if (low < 0).any():
        first = int(np.argmax(low < 0))
        raise InputError(
            f"envelope has negative values (min {low[first]:g}"
            f"{_where(low < 0, lead, env.ndim)}); pass the magnitude of the analytic signal"
        )
    if reference is None:
        if (high == 0).any():
            raise InputError(f"envelope is all zeros (Amax = 0){_where(high == 0, lead, env.ndim)}")
        log_max = cupy.log10(frame_max)
    else:
        log_max = cupy.full(frames, math.log10(reference), dtype=dtype)
    return _grey_levels(env, frame_size, log_max, dynamic_range_db)


def envelope_peaks_cuda(rf, axis: int):
    """Envelope and each frame's maximum on the GPU, unchecked and without a host sync: the
    device part of :func:`augengine.ops.reconstruction.envelope_peaks`, which checks the peaks
    (``peaks_error(peaks.get())``) unless asked not to.

    Parameters
    ----------
    rf : cupy.ndarray (..., depth, lines), integer or float (int16 for OASBUD)
        Raw RF; frames are the last two axes.
    axis : int
        Array axis of fast time (``rf.ndim - 2`` for depth-major frames).

    Returns
    -------
    envelope : cupy.ndarray, same shape as ``rf`` (float64 for float64 RF, float32 otherwise)
    peaks : cupy.ndarray, same dtype, shape ``rf.shape[:-2] + (1, 1)`` (1-D ``rf``: ``(1,)``)
        NaN or Inf where the RF of a frame has a NaN/Inf sample (the maximum of bit patterns
        orders NaN above Inf), 0 for an all-zero frame.

    Notes
    -----
    The envelope kernel also reduces each frame's maximum (one atomic per block), so no pass over
    the envelope is spent on it; the maxima (a few bytes per frame) are all a check needs to copy
    back. int16 RF in, no host copy of samples.

    Example
    -------
    >>> env, peaks = envelope_peaks_cuda(cupy.asarray(rf_int16), axis=1)  # doctest: +SKIP
    """
    env, frame_max = _analytic_envelope(rf, axis, with_max=True)
    return env, frame_max.reshape(env.shape[:-2] + (1,) * min(env.ndim, 2))


def compress_envelope_cuda(env, peaks, frames, dynamic_ranges_db):
    """uint8 grey levels of :func:`envelope_peaks_cuda` results, output ``p`` being frame
    ``frames[p]`` at ``dynamic_ranges_db[p]``, in ONE launch (``compress_envelope_u8``).

    Parameters
    ----------
    env : cupy.ndarray (..., depth, lines), float32 or float64
        Envelope; a frame is the last two axes (1-D: the whole array). A strided view is
        copied to a contiguous array first (one more launch).
    peaks : cupy.ndarray, one value per frame of ``env`` (any shape of that size)
        ``A_max`` of each frame, as :func:`envelope_peaks_cuda` returns it (not checked again).
    frames : sequence of int, length P
        Frame (flat index over ``env``'s leading axes) of each output, validated.
    dynamic_ranges_db : sequence of float, length P
        ``DR`` of each output in dB, validated (> 0).

    Returns
    -------
    cupy.ndarray of uint8, shape ``(P, frame_size)``
        The caller reshapes it.

    Notes
    -----
    ``g = rint(clip(255 + (20*255/DR) (log10 A - log10 A_max), 0, 255))`` with ``log10 A_max``
    taken in the kernel, in the envelope's precision and before the mapping, as
    ``cupy.log10(peaks)`` and ``log_compress_u8`` took it in two launches. The (frame, scale)
    table of the P outputs is one host-to-device copy of 16 bytes per output; no host sync.

    Example
    -------
    >>> images = compress_envelope_cuda(env, peaks, [0, 0, 0], [40.0, 50.0, 60.0])  # doctest: +SKIP
    """
    import cupy

    real = env.dtype
    if not env.flags.c_contiguous:  # the kernel reads frames as flat runs of frame_size
        env = cupy.ascontiguousarray(env)
    if peaks.dtype != real or not peaks.flags.c_contiguous:
        peaks = cupy.ascontiguousarray(peaks, dtype=real)
    _, frame_size = _frames(env.shape)
    table = np.empty(len(frames), dtype=[("frame", np.int64), ("scale", np.float64)])
    table["frame"] = frames
    table["scale"] = [20.0 * 255.0 / dr for dr in dynamic_ranges_db]
    out = cupy.empty((len(frames), frame_size), dtype=np.uint8)
    get_kernel("bmode.cu", f"compress_envelope_u8<{_CTYPES[real]}>")(
        (_blocks(frame_size, _THREADS), max(1, min(len(frames), _MAX_GRID_YZ))),
        (_THREADS,),
        (env, peaks, np.int64(frame_size), cupy.asarray(table.view(np.int64)),
         np.int64(len(frames)), out),
    )
    return out


# --- helpers -----------------------------------------------------------------------------------


def _frames(shape) -> tuple[int, int]:
    """(number of frames, samples per frame): a frame is the last two axes (1-D: the array)."""
    frame_size = math.prod(shape[-2:])
    return math.prod(shape) // frame_size, frame_size


def _where(mask, lead_shape, ndim: int) -> str:
    """' in frame ...' for the first frame flagged in ``mask`` (per-frame, flattened)."""
    first = int(np.argmax(mask))
    index = np.unravel_index(first, lead_shape) if lead_shape else ()
    return frame_label(tuple(int(i) for i in index), ndim)


def _blocks(total: int, per_block: int) -> int:
    return max(1, min(-(-total // per_block), _MAX_BLOCKS))


def _analytic_envelope(rf, axis: int, with_max: bool):
    """Envelope of ``rf`` along ``axis`` and, with ``with_max``, each frame's maximum."""
    import cupy
    import cupyx.scipy.fft as cufft

    real = np.dtype(np.float64) if rf.dtype == np.float64 else np.dtype(np.float32)
    ctype = _CTYPES[real]
    rf = cupy.ascontiguousarray(rf)
    shape = rf.shape
    n = shape[axis]
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    tiles = (-(-inner // _TILE), -(-n // _TILE), min(outer, _MAX_GRID_YZ))
    if inner == 1:  # time is already the contiguous axis
        lines = rf.astype(real, copy=False)
        if axis != rf.ndim - 1:  # trailing axes of length 1
            lines = lines.reshape(outer, n)
    else:
        if tiles[1] > _MAX_GRID_YZ:
            raise InputError(
                f"RF lines of {n} samples are too long for the GPU transpose "
                f"(at most {_TILE * _MAX_GRID_YZ} with time not the last axis)"
            )
        if rf.dtype not in (np.int16, real):
            rf = rf.astype(real)
        lines = cupy.empty((outer, inner, n), dtype=real)
        get_kernel("bmode.cu", f"rf_to_lines<{_CTYPES[rf.dtype]}, {ctype}>")(
            tiles,
            (_TILE, _TILE_ROWS, 1),
            (rf, lines, np.int64(outer), np.int32(n), np.int32(inner)),
        )

    spectrum = cufft.rfft(lines, axis=-1)  # unscaled
    nfreq = spectrum.shape[-1]
    _, frame_size = _frames(shape)
    # Zeroed by hilbert_spectrum, before the magnitude kernel's atomicMax reads it.
    frame_max = cupy.empty(math.prod(shape) // frame_size if with_max else 1, dtype=_BITS[real])
    get_kernel("bmode.cu", f"hilbert_spectrum<{ctype}>")(
        (_blocks(max(spectrum.size, frame_max.size), _THREADS),),
        (_THREADS,),
        (spectrum, np.int64(spectrum.size), np.int32(nfreq), np.int32(n), real.type(1.0 / n),
         frame_max, np.int64(frame_max.size)),
    )
    # norm="forward" leaves the inverse unscaled: the 1/n is already in the spectrum.
    quadrature = cufft.irfft(spectrum, n=n, axis=-1, norm="forward", overwrite_x=True)
    del spectrum

    env = cupy.empty(shape, dtype=real)
    flags = (np.int64(frame_size), np.int32(with_max), frame_max)
    if inner == 1:
        get_kernel("bmode.cu", f"analytic_magnitude_lines<{ctype}>")(
            (_blocks(env.size, _THREADS * _ITEMS),),
            (_THREADS,),
            (lines, quadrature, env, np.int64(env.size), *flags),
        )
    else:
        get_kernel("bmode.cu", f"analytic_magnitude_transposed<{ctype}>")(
            tiles,
            (_TILE, _TILE_ROWS, 1),
            (lines, quadrature, env, np.int64(outer), np.int32(n), np.int32(inner), *flags),
        )
    return env, (frame_max.view(real) if with_max else None)


def _grey_levels(env, frame_size: int, log_max, dynamic_range_db: float):
    """uint8 grey levels of a contiguous envelope given log10 of each frame's reference."""
    import cupy

    real = env.dtype
    out = cupy.empty(env.shape, dtype=np.uint8)
    get_kernel("bmode.cu", f"log_compress_u8<{_CTYPES[real]}>")(
        (_blocks(env.size, _THREADS),),
        (_THREADS,),
        (
            env,
            np.int64(env.size),
            np.int64(frame_size),
            cupy.ascontiguousarray(log_max, dtype=real),
            real.type(20.0 * 255.0 / dynamic_range_db),
            out,
        ),
    )
    return out
