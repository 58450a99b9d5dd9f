"""B-mode reconstruction from raw RF: Hilbert envelope and logarithmic compression.

Pipeline of Byra et al. (OASBUD, seed 001): the envelope of every RF line is the magnitude of its
analytic signal (Hilbert transform along time), the envelope is log-compressed with
``A_log = 20 log10(A / A_max)`` (Eq. 1), thresholded at ``-DR`` dB (40, 50 or 60 dB in the paper)
and mapped linearly onto grey levels [0, 255].

Layout: one frame is ``(depth, lines)``; any extra leading axes are frames, so a stack of frames is
``(..., depth, lines)``. NumPy in -> NumPy out; CuPy input is handed to the CUDA kernels in
``augengine.ops._reconstruction_cuda`` (imported only then, so CPU machines never import CuPy),
after the parameters and shapes are validated here; the CUDA functions receive ``axis`` already
resolved to an array axis (``rf.ndim - 2`` for depth-major frames).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.fft

from augengine._xp import is_cupy
from augengine.checks import check_number
from augengine.errors import ConfigError, InputError
from augengine.ops._util import frame_label

# scipy.fft parallelises over the independent lines of a frame; -1 means all cores.
_FFT_WORKERS = -1


def _time_axis(ndim: int, axis) -> int:
    """Array axis of ``axis`` counted within one frame (the last two axes; 1-D input is a line)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ConfigError(f"axis must be 0 (depth) or 1 (lines) of the frame, got {axis!r}")
    frame_ndim = min(ndim, 2)
    if not -frame_ndim <= axis < frame_ndim:
        allowed = "0" if frame_ndim == 1 else "0 (depth) or 1 (lines)"
        raise ConfigError(f"axis must be {allowed} of the frame, got {axis}")
    return ndim - frame_ndim + int(axis) % frame_ndim


def check_dynamic_range(dynamic_range_db) -> float:
    """The dynamic range ``DR`` in dB as a float: a finite number > 0, else ``ConfigError``."""
    return check_number(dynamic_range_db, "dynamic_range_db", positive=True, unit="dB")


def _as_array(array):
    """CuPy arrays pass through untouched; anything else becomes a NumPy array."""
    return array if is_cupy(array) else np.asarray(array)


def _check_real_array(array, what: str) -> None:
    if array.ndim == 0 or array.size == 0:
        raise InputError(f"{what} must be a non-empty array, got shape {tuple(array.shape)}")
    kind = np.dtype(array.dtype).kind
    if kind not in "iuf":
        raise InputError(f"{what} must be real integers or floats, got dtype {array.dtype}")


def envelope(rf, axis: int = 0):
    """Envelope of RF lines: magnitude of the analytic signal via an FFT Hilbert transform.

    Parameters
    ----------
    rf : ndarray (..., depth, lines), integer or float
        Raw RF, e.g. OASBUD int16. One frame is the last two axes (a 1-D array is one line); any
        leading axes are independent frames.
    axis : {0, 1}, optional
        Time (fast-time, depth) axis *within the frame*: 0 for ``(depth, lines)`` frames
        (default), 1 for ``(lines, depth)``. Negative values count from the frame's end.

    Returns
    -------
    ndarray, same shape as ``rf``
        Envelope ``A >= 0`` in the units of ``rf``. float64 for float64 input, float32 for
        everything else (int16, other integers, float16, float32).

    Raises
    ------
    InputError
        Empty, complex, boolean or non-numeric input, or NaN/Inf samples.
    ConfigError
        ``axis`` not 0 or 1.

    Notes
    -----
    The analytic signal of a line ``x[n]`` of length ``N`` is ``z = IFFT(h * FFT(x))`` with
    ``h = [1, 2, ..., 2, 1, 0, ..., 0]`` (``h[N/2] = 1`` only for even ``N``; zero for negative
    frequencies), and the envelope is ``A = |z|``. Its real part is ``x`` itself and its imaginary
    part is the Hilbert transform ``H{x} = IRFFT(-j * RFFT(x))`` with the DC (and, for even ``N``,
    Nyquist) bin zeroed, so ``A = sqrt(x**2 + H{x}**2)`` needs only one real forward and one real
    inverse FFT: the same result as ``|scipy.signal.hilbert(x)|`` at about a third of the cost.
    The transform is circular, like SciPy's, so the first and last few samples of a line see the
    other end of the line.

    References
    ----------
    M. Byra et al., "Impact of ultrasound image reconstruction method on breast lesion
    classification with deep learning", seed 001, Sec. II-B.

    Examples
    --------
    >>> t = np.arange(256)
    >>> line = np.cos(2 * np.pi * 16 * t / 256)           # 16 whole periods: a flat envelope
    >>> np.allclose(envelope(line), 1.0)
    True
    """
    rf = _as_array(rf)
    _check_real_array(rf, "RF")
    time_axis = _time_axis(rf.ndim, axis)
    if is_cupy(rf):
        from augengine.ops._reconstruction_cuda import envelope_cuda

        return envelope_cuda(rf, time_axis)

    dtype = np.float64 if rf.dtype == np.float64 else np.float32
    if rf.dtype.kind == "f" and not np.isfinite(rf).all():
        raise InputError("RF contains NaN or Inf samples")
    x = rf.astype(dtype, copy=True)
    n = x.shape[time_axis]
    spectrum = scipy.fft.rfft(x, axis=time_axis, workers=_FFT_WORKERS)
    spectrum *= -1j
    edge = [slice(None)] * x.ndim
    edge[time_axis] = 0
    spectrum[tuple(edge)] = 0
    if n % 2 == 0:
        edge[time_axis] = -1
        spectrum[tuple(edge)] = 0
    quadrature = scipy.fft.irfft(
        spectrum, n=n, axis=time_axis, workers=_FFT_WORKERS, overwrite_x=True
    )
    # sqrt(x*x + q*q) in place: np.hypot guards against overflow we cannot hit here (RF is far
    # below 1e19) and costs as much as both FFTs together.
    quadrature *= quadrature
    x *= x
    quadrature += x
    return np.sqrt(quadrature, out=quadrature)


def log_compress(envelope, dynamic_range_db, reference=None):
    """Log-compress an envelope to uint8 grey levels with a dynamic-range threshold.

    Parameters
    ----------
    envelope : ndarray (..., depth, lines), float (or integer), values >= 0
        Envelope amplitude ``A``. The last two axes are one frame (a 1-D array is one frame);
        leading axes are independent frames, each compressed against its own maximum.
    dynamic_range_db : float
        Threshold ``DR`` in dB (> 0): amplitudes ``DR`` dB or more below ``A_max`` map to 0.
        The paper uses 40, 50 and 60 dB.
    reference : float, optional
        ``A_max`` in the units of ``envelope`` (> 0). Default: the maximum of each frame. With a
        fixed reference, amplitudes above it saturate at 255.

    Returns
    -------
    ndarray of uint8, same shape as ``envelope``
        Grey levels.

    Raises
    ------
    ConfigError
        ``dynamic_range_db`` or ``reference`` not a finite number > 0.
    InputError
        Empty or non-real input; NaN, Inf or negative amplitudes; a frame that is all zeros when
        ``reference`` is not given ("envelope is all zeros (Amax = 0)").

    Notes
    -----
    Eq. (1) of seed 001, ``A_log = 20 log10(A / A_max)`` [dB], clipped to ``[-DR, 0]`` and mapped
    linearly, ``g = 255 (A_log + DR) / DR``, computed as
    ``255 + 20*255 / (DR ln 10) * (ln A - ln A_max)`` in the envelope's float precision (float32
    input stays float32; integer input is promoted to float64). ``A = 0`` gives ``-inf`` dB and
    maps to 0. Rounding is **round half to even** (``np.rint``), as in the CUDA kernel: with
    ``DR = 24`` and ``A / A_max = 0.1`` (-20 dB), ``g = 42.5`` rounds to 42 (``floor(g + 0.5)``
    would give 43); with ``DR = 40`` the same amplitude gives ``g = 127.5 -> 128``.

    References
    ----------
    M. Byra et al., seed 001, Eq. (1) and Fig. 1 (mapping functions for 40/50/60 dB).

    Examples
    --------
    >>> a = np.array([[1.0, 0.1, 0.01, 0.0]])
    >>> log_compress(a, 40)                      # 0, -20, -40 and -inf dB
    array([[255, 128,   0,   0]], dtype=uint8)
    """
    dynamic_range = check_dynamic_range(dynamic_range_db)
    if reference is not None:
        reference = check_number(reference, "reference", positive=True)
    env = _as_array(envelope)
    _check_real_array(env, "envelope")
    if is_cupy(env):
        from augengine.ops._reconstruction_cuda import log_compress_cuda

        return log_compress_cuda(env, dynamic_range, reference)

    dtype = env.dtype if env.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    frame_axes = tuple(range(-min(env.ndim, 2), 0))
    a_max = env.max(axis=frame_axes, keepdims=True)
    a_min = env.min(axis=frame_axes, keepdims=True)
    bad = ~np.isfinite(a_max) | ~np.isfinite(a_min)
    if bad.any():
        where = frame_label(tuple(np.argwhere(bad)[0]), env.ndim)
        raise InputError(f"envelope contains NaN or Inf{where}")
    if (a_min < 0).any():
        index = tuple(np.argwhere(a_min < 0)[0])
        raise InputError(
            f"envelope has negative values (min {a_min[index]:g}{frame_label(index, env.ndim)});"
            " pass the magnitude of the analytic signal"
        )
    if reference is None:
        _check_not_all_zero(a_max, env.ndim)
        log_max = np.log(a_max.astype(dtype))
    else:
        log_max = dtype.type(math.log(reference))
    return _grey_levels(env, log_max, dynamic_range, dtype)


def _check_not_all_zero(a_max: np.ndarray, ndim: int) -> None:
    if (a_max == 0).any():
        where = frame_label(tuple(np.argwhere(a_max == 0)[0]), ndim)
        raise InputError(f"envelope is all zeros (Amax = 0){where}")


def _grey_levels(env: np.ndarray, log_max, dynamic_range: float, dtype: np.dtype) -> np.ndarray:
    """Eq. (1) on NumPy: uint8 grey levels of ``env`` given ``ln A_max`` (per frame or scalar)."""
    # Natural log with 1/ln(10) folded into the scale: NumPy's SIMD ln is 2-4x faster than log10.
    with np.errstate(divide="ignore"):  # ln(0) = -inf is wanted: it clips to grey level 0
        grey = np.log(env, dtype=dtype)
    grey -= log_max
    grey *= dtype.type(20.0 * 255.0 / (dynamic_range * math.log(10.0)))
    grey += dtype.type(255.0)
    np.clip(grey, 0.0, 255.0, out=grey)
    np.rint(grey, out=grey)
    return grey.astype(np.uint8)


def bmode(rf, dynamic_range_db, axis: int = 0):
    """B-mode image from raw RF: ``log_compress(envelope(rf, axis), dynamic_range_db)``.

    Parameters
    ----------
    rf : ndarray (..., depth, lines), integer or float
        Raw RF; leading axes are frames (see :func:`envelope`).
    dynamic_range_db : float
        Threshold in dB (> 0); seed 001 uses 40, 50 and 60 dB.
    axis : {0, 1}, optional
        Time axis within the frame (0: rows are depth samples).

    Returns
    -------
    ndarray of uint8, same shape as ``rf``
        Grey levels, each frame normalised to its own maximum envelope (Eq. 1 of seed 001).

    Raises
    ------
    ConfigError, InputError
        As :func:`envelope` and :func:`log_compress` (an all-zero frame: "envelope is all zeros
        (Amax = 0)").

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rf = (rng.standard_normal((2048, 128)) * 1000).astype(np.int16)
    >>> image = bmode(rf, 50)
    >>> image.shape, image.dtype, int(image.max())
    ((2048, 128), dtype('uint8'), 255)
    """
    dynamic_range = check_dynamic_range(dynamic_range_db)
    return compress_envelope(*envelope_peaks(rf, axis), dynamic_range)


def envelope_peaks(rf, axis: int = 0, check: bool = True):
    """The part of :func:`bmode` that does not depend on the dynamic range: the envelope and each
    frame's maximum ``A_max``, checked as :func:`bmode` checks them.

    Parameters
    ----------
    rf : ndarray (..., depth, lines), integer or float
        Raw RF; leading axes are frames (see :func:`envelope`).
    axis : {0, 1}, optional
        Time axis within the frame (0: rows are depth samples).
    check : bool, optional
        False skips the check of the peaks, and on CuPy the device-to-host copy it needs, so the
        call makes no host sync: the caller checks later with ``peaks_error(peaks.get())``,
        which gives the message this call would have raised. NaN/Inf RF on NumPy still raises
        (from :func:`envelope`).

    Returns
    -------
    envelope : ndarray, same shape as ``rf``
        ``A`` as :func:`envelope` returns it (float32, float64 for float64 RF).
    peaks : ndarray, same dtype
        ``A_max`` of each frame, shape ``rf.shape[:-2] + (1, 1)`` (a 1-D ``rf``: ``(1,)``).

    Raises
    ------
    ConfigError, InputError
        As :func:`bmode`: NaN/Inf RF, an all-zero frame ("envelope is all zeros (Amax = 0)"),
        the message of :func:`peaks_error`.

    Notes
    -----
    Several dynamic ranges of one frame (the 40, 50 and 60 dB of seed 001) share this result:
    ``compress_envelope(env, peaks, DR)`` for each is ``bmode(rf, DR)`` byte for byte, and on
    a GPU costs one mapping launch instead of the FFTs again (:func:`compress_envelope_batch`:
    one launch for all of them). On CuPy the check reads the peaks back (one small
    device-to-host copy, the only one; none with ``check=False``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rf = (rng.standard_normal((256, 16)) * 1000).astype(np.int16)
    >>> env, peaks = envelope_peaks(rf)
    >>> all((compress_envelope(env, peaks, dr) == bmode(rf, dr)).all() for dr in (40, 50, 60))
    True
    """
    rf = _as_array(rf)
    _check_real_array(rf, "RF")
    time_axis = _time_axis(rf.ndim, axis)
    if is_cupy(rf):
        from augengine.ops._reconstruction_cuda import envelope_peaks_cuda

        env, peaks = envelope_peaks_cuda(rf, time_axis)
        message = peaks_error(peaks.get()) if check else None  # the only sync
        if message is not None:
            raise InputError(message)
        return env, peaks
    env = envelope(rf, axis)
    frame_axes = tuple(range(-min(env.ndim, 2), 0))
    a_max = env.max(axis=frame_axes, keepdims=True)
    if check:
        # envelope() has rejected NaN/Inf RF, so a non-finite peak here is finite RF whose square
        # overflows: NumPy can tell the two apart, which the device path cannot without a sync.
        if not np.isfinite(a_max).all():
            where = frame_label(tuple(np.argwhere(~np.isfinite(a_max))[0]), env.ndim)
            raise InputError(f"envelope contains NaN or Inf{where}")
        message = peaks_error(a_max)  # only the all-zero case is left
        if message is not None:
            raise InputError(message)
    return env, a_max


def peaks_error(peaks) -> str | None:
    """The message :func:`envelope_peaks` with ``check=True`` raises on the device for these
    peaks, or None when they are fine: the deferred check of ``envelope_peaks(check=False)``.

    Parameters
    ----------
    peaks : numpy.ndarray (host) or float
        ``A_max`` per frame as :func:`envelope_peaks` returns them (after ``.get()`` on CuPy):
        shape ``lead + (1, 1)`` for frames stacked on the ``lead`` axes, ``(1, 1)`` for a single
        frame (``peaks[i]`` of a stack), ``(1,)`` for a single line.

    Returns
    -------
    str or None
        The first problem, non-finite peaks over all frames first, then all-zero frames:

        * ``"RF contains NaN or Inf samples"``: a NaN or Inf peak. On the device the envelope's
          maximum is the only trace of a NaN/Inf RF sample (the kernel's max orders NaN above
          Inf), so this is what a device check can say; the one other cause, float RF so large
          that ``x**2`` overflows (``|x|`` above about 1e19 in float32), reads the same. NumPy's
          :func:`envelope_peaks` rejects NaN/Inf RF first (same message) and reports the
          overflow as "envelope contains NaN or Inf".
        * ``"envelope is all zeros (Amax = 0)"``: a frame whose envelope is zero everywhere
          (NumPy and device alike).

        For stacked frames the first offending frame follows, ``" in frame 3"`` (``" in frame
        (1, 2)"`` with several lead axes); a single frame has no label.

    Examples
    --------
    >>> peaks_error(np.array([[[2.0]], [[0.0]]]))
    'envelope is all zeros (Amax = 0) in frame 1'
    >>> peaks_error(np.array([[np.nan]])) , peaks_error(np.array([[2.0]]))
    ('RF contains NaN or Inf samples', None)
    """
    peaks = np.asarray(peaks)
    for bad, what in ((~np.isfinite(peaks), "RF contains NaN or Inf samples"),
                      (peaks == 0, "envelope is all zeros (Amax = 0)")):
        if bad.any():
            return what + frame_label(tuple(int(i) for i in np.argwhere(bad)[0]), peaks.ndim)
    return None


def compress_envelope(envelope, peaks, dynamic_range_db):
    """uint8 grey levels of an :func:`envelope_peaks` result at one dynamic range (Eq. 1 of seed
    001, as :func:`log_compress` maps them, each frame against its own peak).

    Parameters
    ----------
    envelope, peaks : ndarray
        What :func:`envelope_peaks` returned (the peaks are not checked again).
    dynamic_range_db : float
        Threshold in dB (> 0).

    Returns
    -------
    ndarray of uint8, same shape as ``envelope``

    Notes
    -----
    On CuPy one launch of the kernel of :func:`compress_envelope_batch`, with every frame at
    ``dynamic_range_db``: the single and the batched call are the same code.

    Examples
    --------
    >>> env, peaks = envelope_peaks(np.array([[4.0, -4.0], [0.0, 1.0]]))
    >>> compress_envelope(env, peaks, 40).dtype
    dtype('uint8')
    """
    dynamic_range = check_dynamic_range(dynamic_range_db)
    if is_cupy(envelope):
        from augengine.ops._reconstruction_cuda import compress_envelope_cuda

        frames = math.prod(envelope.shape[:-2])  # 1 for a single frame or line
        out = compress_envelope_cuda(envelope, peaks, range(frames), [dynamic_range] * frames)
        return out.reshape(envelope.shape)
    return _grey_levels(envelope, np.log(peaks), dynamic_range, envelope.dtype)


def compress_envelope_batch(envelope, peaks, frames, dynamic_ranges):
    """uint8 grey levels of P (frame, dynamic range) pairs of one :func:`envelope_peaks` result:
    ``out[p] == compress_envelope(envelope[frames[p]], peaks[frames[p]], dynamic_ranges[p])``.

    Parameters
    ----------
    envelope : ndarray (F, depth, lines), float32 or float64
        Envelope of F stacked frames, as :func:`envelope_peaks` returns it.
    peaks : ndarray (F, 1, 1), same dtype
        Their peaks, as :func:`envelope_peaks` returns them (not checked again).
    frames : sequence of int (P,)
        Frame of each output, ``0 <= frames[p] < F``; a frame may appear several times.
    dynamic_ranges : sequence of float (P,)
        Threshold ``DR`` of each output in dB (> 0).

    Returns
    -------
    ndarray of uint8 (P, depth, lines)
        Byte for byte the single :func:`compress_envelope` of each pair.

    Raises
    ------
    InputError
        Shapes other than the above, or ``frames`` and ``dynamic_ranges`` of different lengths.
    ConfigError
        A frame index outside ``[0, F)``, a dynamic range that is not a finite number > 0.

    Notes
    -----
    A loop over the pairs on NumPy; on CuPy ONE kernel launch for all P outputs
    (``compress_envelope_u8``: each output's frame and ``20*255/DR`` from a small table copied
    once, ``log10 A_max`` taken in the kernel), and no host sync: the demo job's 40, 50 and 60 dB
    of every frame of a shard in one launch.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rf = (rng.standard_normal((2, 256, 16)) * 1000).astype(np.int16)
    >>> env, peaks = envelope_peaks(rf)
    >>> out = compress_envelope_batch(env, peaks, [0, 0, 1], [40, 60, 50])
    >>> out.shape, bool((out[2] == bmode(rf[1], 50)).all())
    ((3, 256, 16), True)
    """
    frames, dynamic_ranges = _check_batch(envelope, peaks, frames, dynamic_ranges)
    if is_cupy(envelope):
        from augengine.ops._reconstruction_cuda import compress_envelope_cuda

        out = compress_envelope_cuda(envelope, peaks, frames, dynamic_ranges)
        return out.reshape((len(frames),) + envelope.shape[1:])
    out = np.empty((len(frames),) + envelope.shape[1:], dtype=np.uint8)
    for p, (frame, dynamic_range) in enumerate(zip(frames, dynamic_ranges)):
        out[p] = compress_envelope(envelope[frame], peaks[frame], dynamic_range)
    return out


def _check_batch(envelope, peaks, frames, dynamic_ranges) -> tuple[list[int], list[float]]:
    """:func:`compress_envelope_batch`'s arguments checked: (frame indices, dynamic ranges)."""
    shape = tuple(envelope.shape)
    if len(shape) != 3 or np.dtype(envelope.dtype) not in (np.float32, np.float64):
        raise InputError("compress_envelope_batch: envelope must be (frames, depth, lines) "
                         f"float32 or float64, got {envelope.dtype}{shape}")
    if tuple(peaks.shape) != (shape[0], 1, 1):
        raise InputError(f"compress_envelope_batch: peaks must be ({shape[0]}, 1, 1) for an "
                         f"envelope of {shape[0]} frames, got {tuple(peaks.shape)}")
    frames, dynamic_ranges = np.asarray(frames), np.asarray(dynamic_ranges, dtype=object)
    if frames.ndim != 1 or dynamic_ranges.ndim != 1 or len(frames) != len(dynamic_ranges):
        raise InputError("compress_envelope_batch: frames and dynamic_ranges must be 1-D of one "
                         f"length, got shapes {frames.shape} and {dynamic_ranges.shape}")
    if frames.dtype.kind not in "iu" and len(frames):
        raise ConfigError(f"compress_envelope_batch: frames must be integers, got {frames.dtype}")
    outside = (frames < 0) | (frames >= shape[0])
    if outside.any():
        p = int(np.argmax(outside))
        raise ConfigError(f"compress_envelope_batch: frames[{p}] = {frames[p]} is outside "
                          f"[0, {shape[0]}) for an envelope of {shape[0]} frames")
    return ([int(f) for f in frames],
            [check_dynamic_range(dynamic_range) for dynamic_range in dynamic_ranges])
