"""Speckle reducing anisotropic diffusion (SRAD, Yu & Acton 2002) and its multi-scale series.

Seed 002 despeckles every (augmented) breast-ultrasound image with SRAD and keeps a series of
``L = 8`` scales taken every ``n_t = 10`` iterations: noise falls with the scale while edges stay.
:func:`srad` is the explicit SRAD scheme, :func:`srad_series` the series in one run and
:func:`srad_bmode` the wrapper for log-compressed uint8 B-mode images.

NumPy in -> NumPy out (the reference: vectorised, in-place float buffers); CuPy in -> CuPy out
through the fused kernels of ``cuda/srad.cu``, which mirror the NumPy arithmetic operation by
operation (bitwise equal with a fixed ``q0``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from augengine._xp import get_array_module, is_cupy
from augengine.checks import check_int, check_number
from augengine.errors import ConfigError, InputError
from augengine.ops.reconstruction import check_dynamic_range, log_compress

#: Largest stable time step of the explicit scheme (derivation in :func:`srad`, Notes).
MAX_TIME_STEP = 1.0

# q0^2 is floored here: a constant reference region (var = 0) would make c = 0/0.
_Q0SQ_FLOOR = 1e-12
# Pixels are divided by their image's maximum and floored at this fraction of it, because the
# scheme divides by the neighbour sum (zero in an all-black patch). 1e-12 is -120 dB in
# intensity, far below any B-mode dynamic range.
_INTENSITY_FLOOR = 1e-12

# Launch geometry of cuda/srad.cu (SRAD_TILE_*, SRAD_BLOCK_*); tests/test_cuda_compile.py checks
# that the two agree.
_TILE = (32, 32)  # (x, y) output pixels per block
_BLOCK = (32, 8)  # (x, y) threads per block
# Threads per block of srad_series_u8 (SRAD_SERIES_THREADS).
_SERIES_THREADS = 512

#: Largest plane [pixels] that :func:`srad_series_bmode_pick` hands to the one-launch series
#: kernel on CuPy. That kernel gives each image one block for the whole series, so a batch of
#: large images would leave most of a GPU's SMs idle; from 512 x 512 on (512 pixels per thread)
#: the tiled kernels, two launches per iteration over every SM, take over. Not tuned on a GPU.
SERIES_BLOCK_MAX_PIXELS = 512 * 512


@dataclass(frozen=True)
class _Q0Schedule:
    """How q0(t) is obtained: a fixed value or an estimate, optionally decaying."""

    fixed_q0sq: float | None  # None: estimate var/mean^2 over the region of interest
    rho: float | None
    time_step: float

    @property
    def reestimate(self) -> bool:
        """Estimate again before every iteration (no fixed value, no decay law)."""
        return self.fixed_q0sq is None and self.rho is None

    def decay(self, iteration: int) -> float:
        """Factor on q0^2 at iteration ``iteration``: exp(-2 rho t), t = iteration * time_step."""
        if self.rho is None:
            return 1.0
        return math.exp(-2.0 * self.rho * iteration * self.time_step)


def srad(image, iterations, time_step=0.5, q0=None, rho=None, roi=None):
    """Speckle reducing anisotropic diffusion (Yu & Acton 2002), explicit scheme.

    Parameters
    ----------
    image : ndarray (H, W) or (N, H, W), real, intensities >= 0
        Speckled intensity image(s), e.g. the squared envelope. A batch is N independent images.
    iterations : int
        Number of explicit steps (>= 0).
    time_step : float, optional
        Time step ``dt`` per iteration, ``0 < dt <= 1`` (see Notes). Default 0.5.
    q0 : float, optional
        Speckle scale ``q0`` (> 0), the coefficient of variation of fully developed speckle.
        Default: estimated from the image (see Notes).
    rho : float, optional
        Decay rate (>= 0, per unit time): ``q0(t) = q0(0) exp(-rho t)`` with
        ``t = iteration * time_step``; ``q0(0)`` is ``q0`` or, without it, the estimate on the
        input. ``rho = 0`` keeps ``q0(0)``. Default: no decay law.
    roi : (slice, slice), optional
        Rows and columns of a homogeneous (pure speckle) region used to estimate ``q0``.
        Default: the whole image.

    Returns
    -------
    ndarray, same shape and array module as ``image``
        Diffused image; float64 for float64 input, float32 for any other real dtype.

    Raises
    ------
    InputError
        Not 2-D/3-D, empty, non-real dtype; NaN/Inf, negative values or an all-zero image (the
        message names the image of the batch).
    ConfigError
        ``iterations`` not an integer >= 0; ``time_step`` outside ``(0, 1]``; ``q0 <= 0``;
        ``rho < 0``; ``roi`` not a pair of unit-step slices selecting pixels.

    Notes
    -----
    With replicated borders, ``dN = J[i-1,j] - J``, ``dS = J[i+1,j] - J``, ``dW = J[i,j-1] - J``,
    ``dE = J[i,j+1] - J``, the normalised gradient ``G2 = (dN^2+dS^2+dW^2+dE^2) / J^2`` and
    Laplacian ``L = (dN+dS+dW+dE) / J`` give the instantaneous coefficient of variation

    ``q^2 = (G2/2 - L^2/16) / (1 + L/4)^2``,

    the diffusion coefficient ``c = 1 / (1 + (q^2 - q0^2) / (q0^2 (1 + q0^2)))`` clamped to
    ``[0, 1]``, and the update ``J <- J + dt/4 * (c (dN + dW) + c[i+1,j] dS + c[i,j+1] dE)``.
    Multiplying through by ``J^2`` gives the form evaluated here, free of division by ``J``:
    ``q^2 = (8 S - Lsum^2) / P^2`` with ``S`` the sum of squared differences, ``Lsum`` their sum
    and ``P = 4 J + Lsum`` the sum of the four neighbours, and ``c = a / (q^2 + b)`` with
    ``a = q0^2 (1 + q0^2)``, ``b = q0^4``. By Cauchy-Schwarz ``Lsum^2 <= 4 S``, so ``q^2 >= 0``,
    ``c > 0``, and only the upper clamp ever acts.

    *Stability.* Written as weights on the old values,
    ``J_new = (1 - dt/4 (2c + c_S + c_E)) J + dt/4 (c J_N + c J_W + c_S J_S + c_E J_E)``.
    The weights sum to one and those of the neighbours are >= 0; with every ``c`` in ``[0, 1]``
    the centre weight is at least ``1 - dt``. For ``dt <= 1`` each step is therefore a convex
    combination: the discrete maximum principle holds (``min J <= J_new <= max J``, so
    intensities stay positive) and nothing oscillates. The bound is sharp: where ``c = 1``
    (homogeneous speckle) a checkerboard ``+-e`` becomes ``+-e (1 - 2 dt)``, which grows for
    ``dt > 1``. Hence ``MAX_TIME_STEP = 1``; the default 0.5 halves it.

    *q0.* A float fixes ``q0``. By default (``q0=None``, ``rho=None``) ``q0^2 = var/mean^2`` is
    re-estimated before every iteration over ``roi``, or over the whole image when no
    homogeneous region is known, per image of a batch: Yu & Acton define ``q0(t)`` from a
    homogeneous area of the current image, and an augmentation engine has no such area per
    sample. The whole image over-estimates ``q0`` (anatomy adds variance), so it smooths more,
    and edges suffer: on a 100:1 step under exponential speckle, 100 iterations keep 0.15 of the
    contrast with the whole-image estimate (the same as linear diffusion, ``c = 1``), whereas
    ``q0`` from a homogeneous ``roi`` keeps 0.88 when the dark side is south/east of the edge
    and 0.35 when it is north/west (measured in tests/ops/test_srad.py). The asymmetry belongs
    to the scheme: a face's flux uses ``c`` of its south/east pixel, and a bright pixel beside a
    dark one has ``q^2 <= 7/9``. Pass ``roi`` or ``q0`` where edges matter. ``rho`` selects
    Yu & Acton's approximation ``q0(t) = q0(0) exp(-rho t)`` instead (no estimate after t = 0).
    ``q0^2`` is floored at 1e-12.

    *Non-positive pixels.* SRAD needs ``J > 0``. Each image is divided by its maximum and pixels
    below 1e-12 of it (-120 dB; zeros) are raised to that floor, so zeros come back as
    ``1e-12 * max``; the result is multiplied back by the maximum. The scheme is scale invariant,
    so this changes nothing else. Negative values, NaN/Inf and all-zero images raise InputError.

    References
    ----------
    Y. Yu, S. T. Acton, "Speckle reducing anisotropic diffusion", IEEE Trans. Image Process.
    11(11), 2002 (the explicit scheme; Rodinia's ``srad`` uses the same form of ``q^2``).
    Seed 002 (SRAD series: ``n_t = 10`` iterations per scale, ``L = 8`` scales).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> speckle = rng.exponential(1.0, size=(64, 64)).astype(np.float32)  # CoV 1
    >>> smooth = srad(speckle, 50)
    >>> bool(smooth.std() / smooth.mean() < 0.5 * speckle.std() / speckle.mean())
    True
    """
    return _srad(image, iterations, "srad", True, time_step=time_step, q0=q0, rho=rho, roi=roi)


def _srad(image, iterations, op: str, checked: bool, **srad_options):
    """:func:`srad`; ``checked=False`` skips the range checks of :func:`_prepare` (for input that
    cannot fail them, which saves a device-to-host copy on CuPy)."""
    iterations = check_int(iterations, "iterations", 0)
    work, peak, shape, schedule, bounds = _setup(image, op, checked, **srad_options)
    work = _diffuse(work, iterations, schedule, bounds)
    work *= peak
    return work.reshape(shape)


def srad_series(image, scales=8, iterations_per_scale=10, **srad_options):
    """Multi-scale SRAD series of seed 002: one snapshot every ``iterations_per_scale`` steps.

    One diffusion of ``scales * iterations_per_scale`` iterations; snapshot ``k`` is the image
    after ``(k + 1) * iterations_per_scale`` iterations, identical to
    ``srad(image, (k + 1) * iterations_per_scale, **srad_options)``.

    Parameters
    ----------
    image : ndarray (H, W) or (N, H, W), real, intensities >= 0
        As for :func:`srad`.
    scales : int, optional
        Number of snapshots ``L`` (>= 1). Seed 002: 8.
    iterations_per_scale : int, optional
        Iteration interval ``n_t`` between snapshots (>= 1). Seed 002: 10.
    **srad_options
        ``time_step``, ``q0``, ``rho``, ``roi`` of :func:`srad` (with ``rho`` the decay runs on
        across scales: ``t`` counts every iteration since the start).

    Returns
    -------
    ndarray (scales, H, W) or (N, scales, H, W)
        Snapshots, coarsest (most diffused) last; dtype and array module as :func:`srad`.

    Raises
    ------
    InputError, ConfigError
        As :func:`srad`; ConfigError for ``scales`` or ``iterations_per_scale`` < 1.

    References
    ----------
    Seed 002, Sec. "Bus image filtering" and experiments: ``n_t = 10``, ``L = 8``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> series = srad_series(rng.exponential(1.0, (2, 32, 32)), scales=3, iterations_per_scale=5)
    >>> series.shape
    (2, 3, 32, 32)
    """
    return _series(image, scales, iterations_per_scale, "srad_series", True, **srad_options)


def _series(image, scales, iterations_per_scale, op: str, checked: bool, **srad_options):
    """:func:`srad_series`; ``checked`` as in :func:`_srad`."""
    scales = check_int(scales, "scales", 1)
    every = check_int(iterations_per_scale, "iterations_per_scale", 1)
    _check_options(op, srad_options)
    work, peak, shape, schedule, bounds = _setup(image, op, checked, **srad_options)
    xp = get_array_module(work)
    series = xp.empty((work.shape[0], scales) + work.shape[1:], dtype=work.dtype)

    def snapshot(scale, current):
        xp.multiply(current, peak, out=series[:, scale])

    _diffuse(work, scales * every, schedule, bounds, snapshot, every)
    return series if len(shape) == 3 else series[0]


def srad_bmode(image_uint8, iterations, dynamic_range_db, **srad_options):
    """SRAD on a log-compressed uint8 B-mode image: expand to intensity, diffuse, compress back.

    Parameters
    ----------
    image_uint8 : ndarray of uint8 (H, W) or (N, H, W)
        Grey levels ``g`` mapped from ``[-DR, 0]`` dB as by
        :func:`augengine.ops.log_compress`.
    iterations : int
        SRAD iterations (>= 0).
    dynamic_range_db : float
        The dynamic range ``DR`` (dB, > 0) the image was compressed with (seed 001: 40-60 dB).
    **srad_options
        ``time_step``, ``q0``, ``rho``, ``roi`` of :func:`srad`.

    Returns
    -------
    ndarray of uint8, same shape and array module
        Despeckled grey levels on the same dB scale (0 dB = grey 255 stays the reference).

    Raises
    ------
    InputError
        Input not uint8, or as :func:`srad`.
    ConfigError
        Bad ``dynamic_range_db`` or SRAD options.

    Notes
    -----
    Inverse of the mapping of seed 001 (Eq. 1): ``A / A_max = 10^((g/255 - 1) DR / 20)``; SRAD
    runs on the intensity ``I = (A / A_max)^2``, where fully developed speckle has the
    multiplicative statistics the method assumes. The result is compressed back with
    ``log_compress(sqrt(I), DR, reference=1)``, so grey levels keep their dB meaning; by the
    maximum principle nothing exceeds 255. ``iterations = 0`` returns the input unchanged.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> speckle = np.sqrt(rng.exponential(1.0, (64, 64)))              # Rayleigh amplitude
    >>> image = log_compress(speckle, 50)
    >>> smooth = srad_bmode(image, 30, 50)
    >>> bool(smooth.astype(float).std() < image.astype(float).std())
    True
    """
    dynamic_range = check_dynamic_range(dynamic_range_db)
    # Grey levels expand to intensities in [10^(-DR/10), 1]: finite, positive, never all zero, so
    # the range checks cannot fail and are skipped (on CuPy they would cost a host sync).
    smooth = _srad(_bmode_intensity(image_uint8, dynamic_range, "srad_bmode"), iterations,
                   "srad_bmode", False, **srad_options)
    return _compress_intensity(smooth, dynamic_range)


def srad_series_bmode(image_uint8, dynamic_range_db, scales=8, iterations_per_scale=10,
                      **srad_options):
    """:func:`srad_series` for uint8 B-mode input: (H, W) -> (scales, H, W) uint8.

    The series of seed 002 (L = ``scales`` snapshots every ``iterations_per_scale`` iterations)
    computed in the intensity domain exactly as :func:`srad_bmode` does, each snapshot compressed
    back to grey levels with the same dynamic range.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> image = log_compress(np.sqrt(rng.exponential(1.0, (32, 32))), 50)
    >>> srad_series_bmode(image, 50, scales=3, iterations_per_scale=5).shape
    (3, 32, 32)
    """
    dynamic_range = check_dynamic_range(dynamic_range_db)
    intensity = _bmode_intensity(image_uint8, dynamic_range, "srad_series_bmode")
    series = _series(intensity, scales, iterations_per_scale, "srad_series_bmode", False,
                     **srad_options)  # unchecked: see srad_bmode
    return _compress_intensity(series, dynamic_range)


def srad_series_bmode_pick(images_uint8, dynamic_range_db, picks, scales=8,
                           iterations_per_scale=10, **srad_options):
    """Chosen snapshots of :func:`srad_series_bmode`: ``(N, H, W)`` uint8 images and ``R`` picks
    ``(image, scale)`` -> ``(R, H, W)`` uint8, row ``r`` the snapshot ``picks[r][1]`` of image
    ``picks[r][0]``, the same bytes as ``srad_series_bmode(images_uint8, ...)[image, scale]``.

    A batch asks for one or a few snapshots per image; each image is diffused once however many
    of its snapshots are picked. On CuPy, images of at most :data:`SERIES_BLOCK_MAX_PIXELS`
    pixels run in one launch for the whole batch and series (``srad_series_u8`` of
    cuda/srad.cu: one block per image, the iterations separated by barriers), writing only the
    picked snapshots, with no host sync; larger ones take the tiled kernels (two launches per
    iteration) and one gather.

    Parameters
    ----------
    images_uint8 : ndarray of uint8 (N, H, W)
        As for :func:`srad_series_bmode`.
    dynamic_range_db : float
        ``DR`` in dB (> 0), shared by the batch.
    picks : sequence of (int, int)
        ``(image index in [0, N), scale in [0, scales))`` per output row (host integers).
    scales, iterations_per_scale, **srad_options
        As for :func:`srad_series_bmode`.

    Returns
    -------
    ndarray of uint8 (R, H, W), the array module of ``images_uint8``

    Raises
    ------
    InputError, ConfigError
        As :func:`srad_series_bmode`; ConfigError for a pick outside the batch or the series.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> images = log_compress(np.sqrt(rng.exponential(1.0, (2, 32, 32))), 50)
    >>> picked = srad_series_bmode_pick(images, 50, [(1, 0), (0, 2)], 3, 5)
    >>> bool((picked[1] == srad_series_bmode(images[0], 50, 3, 5)[2]).all())
    True
    """
    dynamic_range = check_dynamic_range(dynamic_range_db)
    scales = check_int(scales, "scales", 1)
    every = check_int(iterations_per_scale, "iterations_per_scale", 1)
    _check_options("srad_series_bmode", srad_options)
    grey = images_uint8 if is_cupy(images_uint8) else np.asarray(images_uint8)
    if grey.ndim != 3 or grey.dtype != np.uint8:
        raise InputError(f"srad_series_bmode: images must be uint8 (N, H, W), got {grey.dtype} "
                         f"{tuple(grey.shape)}")
    rows = np.array([(int(image), int(scale)) for image, scale in picks], np.int64).reshape(-1, 2)
    outside = (rows[:, 0] < 0) | (rows[:, 0] >= grey.shape[0]) | (rows[:, 1] < 0) | (
        rows[:, 1] >= scales)
    if outside.any():
        bad = tuple(int(v) for v in rows[np.argmax(outside)])
        raise ConfigError(f"srad_series_bmode: pick {bad} is outside "
                          f"{grey.shape[0]} images x {scales} scales")
    if is_cupy(grey) and math.prod(grey.shape[1:]) <= SERIES_BLOCK_MAX_PIXELS:
        return _series_picked_cuda(grey, dynamic_range, rows, scales, every, **srad_options)
    xp = get_array_module(grey)
    series = srad_series_bmode(grey, dynamic_range, scales, every, **srad_options)
    return series[xp.asarray(rows[:, 0]), xp.asarray(rows[:, 1])]


def _bmode_intensity(image_uint8, dynamic_range: float, op: str):
    """Grey levels of a log-compressed image back to intensity: I = 10^(dB / 10)."""
    xp = get_array_module(image_uint8)
    grey = image_uint8 if is_cupy(image_uint8) else np.asarray(image_uint8)
    if grey.dtype != np.uint8:
        raise InputError(f"{op}: image must be uint8 grey levels, got dtype {grey.dtype}")
    # dB = g * DR / 255 - DR
    intensity = grey.astype(np.float32)
    intensity *= np.float32(dynamic_range / 255.0 * math.log(10.0) / 10.0)
    intensity -= np.float32(dynamic_range * math.log(10.0) / 10.0)
    return xp.exp(intensity, out=intensity)


def _compress_intensity(intensity, dynamic_range: float):
    """Intensity (max 1 by the maximum principle) back to uint8 with the same dB mapping."""
    xp = get_array_module(intensity)
    amplitude = xp.sqrt(intensity, out=intensity)
    if is_cupy(amplitude):
        from augengine.ops._reconstruction_cuda import log_compress_cuda

        # SRAD's maximum principle keeps the intensity in (0, 1]: the range checks of
        # log_compress cannot fail, and on CuPy they would cost a host sync.
        return log_compress_cuda(amplitude, dynamic_range, 1.0, checked=False)
    return log_compress(amplitude, dynamic_range, reference=1.0)


# --- validation -------------------------------------------------------------------------------


def _check_options(op: str, srad_options: dict) -> None:
    unknown = set(srad_options) - {"time_step", "q0", "rho", "roi"}
    if unknown:
        raise ConfigError(f"{op}: unknown SRAD option(s) {sorted(unknown)}")


def _setup(image, op: str, checked: bool = True, time_step=0.5, q0=None, rho=None, roi=None):
    """Validated working batch, per-image maxima, input shape, q0 schedule and ROI bounds."""
    work, peak, shape = _prepare(image, op, checked)
    return work, peak, shape, _schedule(time_step, q0, rho), _roi_bounds(roi, work.shape[1:])


def _schedule(time_step, q0, rho) -> _Q0Schedule:
    dt = check_number(time_step, "time_step", positive=True)
    if dt > MAX_TIME_STEP:
        raise ConfigError(
            f"time_step must be in (0, {MAX_TIME_STEP:g}] for the explicit SRAD scheme to stay "
            f"stable, got {time_step!r}"
        )
    fixed = None if q0 is None else check_number(q0, "q0", positive=True) ** 2
    decay = None if rho is None else check_number(rho, "rho", nonnegative=True)
    return _Q0Schedule(fixed, decay, dt)


def _roi_bounds(roi, plane_shape) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of the q0 region; the whole image when ``roi`` is None."""
    height, width = plane_shape
    if roi is None:
        return 0, height, 0, width
    if not (isinstance(roi, (tuple, list)) and len(roi) == 2):
        raise ConfigError(f"roi must be a pair of slices (rows, cols), got {roi!r}")
    bounds = []
    for axis_slice, size, what in zip(roi, plane_shape, ("rows", "cols")):
        if not isinstance(axis_slice, slice):
            raise ConfigError(f"roi {what} must be a slice, got {axis_slice!r}")
        start, stop, step = axis_slice.indices(size)
        if step != 1 or stop <= start:
            raise ConfigError(
                f"roi {what} {axis_slice} must select at least one of the image's {size} {what} "
                "with step 1"
            )
        bounds += [start, stop]
    return tuple(bounds)


def _prepare(image, op: str, checked: bool = True):
    """Validated working copy (N, H, W) divided by each image's max and floored, the max (N,1,1)
    and the input shape. With ``checked``, one device-to-host transfer (per-image min and max)
    for CuPy input."""
    x = image if is_cupy(image) else np.asarray(image)
    if x.ndim not in (2, 3) or x.size == 0:
        raise InputError(
            f"{op}: image must be a non-empty (H, W) or (N, H, W) array, got shape {x.shape}"
        )
    if np.dtype(x.dtype).kind not in "iuf":
        raise InputError(f"{op}: image must be real integers or floats, got dtype {x.dtype}")
    xp = get_array_module(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    work = x.reshape((-1,) + x.shape[-2:]).astype(dtype, copy=True)
    peak = work.max(axis=(1, 2), keepdims=True)
    if checked:
        _check_range(work, peak, x.ndim, op)
    work /= peak
    xp.maximum(work, dtype(_INTENSITY_FLOOR), out=work)
    return work, peak, x.shape


def _check_range(work, peak, ndim: int, op: str) -> None:
    """InputError for an image of the batch with NaN/Inf, negative values or only zeros."""
    xp = get_array_module(work)
    low = work.min(axis=(1, 2))
    summary = xp.stack([low, peak[:, 0, 0]])
    low_host, peak_host = summary.get() if is_cupy(summary) else summary
    for index, (lo, hi) in enumerate(zip(low_host, peak_host)):
        where = f"image {index} of the batch" if ndim == 3 else "image"
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(f"{op}: {where} contains NaN or Inf")
        if lo < 0:
            raise InputError(
                f"{op}: {where} has negative values (min {lo:g}); SRAD needs intensities >= 0 "
                "(use srad_bmode for log-compressed B-mode images)"
            )
        if hi == 0:
            raise InputError(f"{op}: {where} is all zeros; SRAD needs positive intensities")


# --- NumPy reference --------------------------------------------------------------------------


def _diffuse(work, iterations, schedule, bounds, snapshot=None, every=0):
    """Run ``iterations`` SRAD steps on the normalised batch ``work`` (N, H, W); after every
    ``every`` iterations call ``snapshot(k, current)``. Returns the final batch."""
    if is_cupy(work):
        return _diffuse_cuda(work, iterations, schedule, bounds, snapshot, every)
    buffers = _Buffers(work.shape, work.dtype)
    k = schedule.time_step / 4.0
    if schedule.fixed_q0sq is None:
        q0sq = _roi_q0sq(work, bounds)
    else:
        q0sq = np.full(work.shape[0], schedule.fixed_q0sq)
    for iteration in range(iterations):
        if iteration and schedule.reestimate:
            q0sq = _roi_q0sq(work, bounds)
        ka, b = _coefficient_params(q0sq, schedule.decay(iteration), k, work.dtype)
        _step(work, ka, b, work.dtype.type(k), buffers)
        if snapshot is not None and (iteration + 1) % every == 0:
            snapshot((iteration + 1) // every - 1, work)
    return work


def _roi_q0sq(work, bounds) -> np.ndarray:
    """q0^2 = var / mean^2 over the region, per image (float64, shape (N,)); two passes in the
    working precision (pairwise sums), which keeps the variance free of cancellation."""
    r0, r1, c0, c1 = bounds
    region = work[:, r0:r1, c0:c1]
    mean = region.mean(axis=(1, 2), keepdims=True)
    deviation = region - mean
    deviation *= deviation
    variance = deviation.mean(axis=(1, 2)).astype(np.float64)
    mean = mean[:, 0, 0].astype(np.float64)
    return variance / (mean * mean)


def _coefficient_params(q0sq, decay: float, k: float, dtype):
    """``k a`` and ``b`` of ``k c = min(k a / (q^2 + b), k)`` per image, shaped (N, 1).

    Computed in float64 and rounded once, exactly as ``srad_step`` in cuda/srad.cu does.
    """
    q = np.maximum(q0sq * decay, _Q0SQ_FLOOR)
    ka = (k * (q * (1.0 + q))).astype(dtype)
    b = (q * q).astype(dtype)
    return ka[:, None], b[:, None]


class _Buffers:
    """Scratch arrays of one iteration on the flattened batch (N*H*W pixels), allocated once.

    ``v[W + i] = J[i + W] - J[i]`` and ``h[1 + i] = J[i + 1] - J[i]`` are the differences to the
    pixel below and to the right of flat pixel ``i``, zero where that neighbour lies across an
    image border (the replicated border makes the difference exactly zero) and in the leading
    pad. Then ``v[W:]`` is dS, ``-v[:-W]`` dN, ``h[1:]`` dE and ``-h[:-1]`` dW of every pixel, all
    contiguous 1-D views: NumPy runs those at full speed, whereas column-shifted 2-D views
    (``J[:, :, 1:]``) take it about three times longer per operation.
    """

    def __init__(self, shape, dtype):
        n, height, width = shape
        size = n * height * width
        self.v = np.zeros(size + width, dtype)
        self.h = np.zeros(size + 1, dtype)
        self.v2 = np.zeros(size + width, dtype)
        self.h2 = np.zeros(size + 1, dtype)
        self.s = np.empty(size, dtype)
        self.l = np.empty(size, dtype)
        self.p = np.empty(size, dtype)


def _step(J, ka, b, k, buf: _Buffers) -> None:
    """One explicit SRAD iteration on J (N, H, W) in place (k = time_step / 4 folded into c).

    The order of operations is the one of ``srad_step`` in cuda/srad.cu.
    """
    n, height, width = J.shape
    size = J.size
    flat = J.reshape(-1)
    v, h = buf.v, buf.h
    np.subtract(flat[width:], flat[:-width], out=v[width:size])
    v[width:].reshape(n, height, width)[:, height - 1] = 0  # below the last row: border
    np.subtract(flat[1:], flat[:-1], out=h[1:size])
    h[width::width] = 0  # right of the last column: border
    np.multiply(v, v, out=buf.v2)
    np.multiply(h, h, out=buf.h2)
    s, lap, p = buf.s, buf.l, buf.p
    np.add(buf.v2[width:], buf.v2[:-width], out=s)  # dS^2 + dN^2
    s += buf.h2[1:]  # + dE^2
    s += buf.h2[:-1]  # + dW^2
    np.subtract(v[width:], v[:-width], out=lap)  # dS + dN
    lap += h[1:]
    lap -= h[:-1]  # + dE + dW
    np.multiply(flat, 4, out=p)
    p += lap  # neighbour sum
    s *= 8
    np.multiply(lap, lap, out=lap)
    s -= lap  # 8 S - L^2
    np.multiply(p, p, out=p)
    np.divide(s, p, out=s)  # q^2
    per_image = s.reshape(n, -1)
    per_image += b
    c = lap
    np.divide(ka, per_image, out=c.reshape(n, -1))
    np.minimum(c, k, out=c)  # k c, clamped at k
    # Flux through each face: c of the pixel below (right of) the face times the difference.
    np.multiply(c[width:], v[width:size], out=v[width:size])
    np.multiply(c[1:], h[1:size], out=h[1:size])
    d = s
    np.subtract(v[width:], v[:-width], out=d)
    d += h[1:]
    d -= h[:-1]
    flat += d


# --- CUDA -------------------------------------------------------------------------------------


def _diffuse_cuda(work, iterations, schedule, bounds, snapshot, every):
    """:func:`_diffuse` on the GPU: one fused kernel per iteration, q0 estimated on the device."""
    import cupy

    from augengine.ops._cuda import get_kernel

    n, height, width = work.shape
    ctype = "float" if work.dtype == np.float32 else "double"
    tiles_x, tiles_y = -(-width // _TILE[0]), -(-height // _TILE[1])
    grid, block = (tiles_x * n, tiles_y, 1), _BLOCK + (1,)
    plane = (np.int32(height), np.int32(width))
    region = tuple(np.int32(v) for v in bounds)
    partials = cupy.empty((n, tiles_x * tiles_y, 2), dtype=np.float64)
    q0sq = cupy.empty(n, dtype=np.float64)
    count = np.float64((bounds[1] - bounds[0]) * (bounds[3] - bounds[2]))
    reduce_q0sq = get_kernel("srad.cu", "srad_q0sq")
    q0sq_args = (partials, np.int32(tiles_x * tiles_y), count, q0sq)

    if schedule.fixed_q0sq is None:
        sums = get_kernel("srad.cu", f"srad_roi_sums<{ctype}>")
        sums(grid, block, (work, *plane, *region, partials))
        reduce_q0sq((n,), (_BLOCK[0] * _BLOCK[1],), q0sq_args)
    else:
        q0sq.fill(schedule.fixed_q0sq)
    step = get_kernel("srad.cu", f"srad_step<{ctype}>")
    k = np.float64(schedule.time_step / 4.0)
    other = cupy.empty_like(work)
    for iteration in range(iterations):
        with_stats = schedule.reestimate and iteration + 1 < iterations
        decay = np.float64(schedule.decay(iteration))
        step(
            grid,
            block,
            (work, other, *plane, q0sq, decay, k, np.int32(with_stats), *region, partials),
        )
        if with_stats:
            reduce_q0sq((n,), (_BLOCK[0] * _BLOCK[1],), q0sq_args)
        work, other = other, work
        if snapshot is not None and (iteration + 1) % every == 0:
            snapshot((iteration + 1) // every - 1, work)
    return work


def _series_picked_cuda(grey, dynamic_range: float, rows: np.ndarray, scales: int, every: int,
                        **srad_options):
    """:func:`srad_series_bmode_pick` on the GPU in one launch of ``srad_series_u8``."""
    import cupy

    from augengine.ops._cuda import get_kernel

    n, height, width = grey.shape
    schedule = _schedule(srad_options.get("time_step", 0.5), srad_options.get("q0"),
                         srad_options.get("rho"))
    bounds = _roi_bounds(srad_options.get("roi"), (height, width))
    iterations = scales * every
    # The rows that want snapshot k of image m, as linked lists: first[m * scales + k] heads
    # one, next[row] continues it (-1 ends both).
    first = np.full(n * scales, -1, np.int32)
    follow = np.full(max(len(rows), 1), -1, np.int32)
    for row in range(len(rows) - 1, -1, -1):
        slot = rows[row, 0] * scales + rows[row, 1]
        follow[row], first[slot] = first[slot], row
    decay = cupy.asarray(np.array([schedule.decay(i) for i in range(iterations)], np.float64))
    links = cupy.asarray(np.concatenate([first, follow]))
    work = cupy.empty((n, height, width), np.float32)
    other, coef = cupy.empty_like(work), cupy.empty_like(work)
    out = cupy.empty((len(rows), height, width), np.uint8)
    r0, r1, c0, c1 = bounds
    ln10 = math.log(10.0)
    fixed = -1.0 if schedule.fixed_q0sq is None else schedule.fixed_q0sq
    kernel = get_kernel("srad.cu", "srad_series_u8<float>")
    kernel((n,), (_SERIES_THREADS,), (
        grey, np.int32(height), np.int32(width),
        np.float32(dynamic_range / 255.0 * ln10 / 10.0), np.float32(dynamic_range * ln10 / 10.0),
        work, other, coef, np.float64(fixed), np.int32(schedule.reestimate), decay,
        np.float64(schedule.time_step / 4.0), np.int32(iterations), np.int32(every),
        *(np.int32(v) for v in bounds), np.float64((r1 - r0) * (c1 - c0)),
        np.float32(20.0 * 255.0 / dynamic_range), links[:first.size], links[first.size:],
        np.int32(scales), out))
    return out
