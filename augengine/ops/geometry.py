"""Geometric ops on one 2-D image or mask: scan conversion, ROI crop box, resize and augmentations.

Every op is a pure function of one array ``(H, W)`` plus parameters. The pipeline applies the same
op with the same parameters to the image and, with ``order=0`` (nearest), to its lesion mask, so
both stay aligned. Interpolating ops keep the dtype: floats stay floats, integer images are
rounded half to even and clipped to their range (uint8 in -> uint8 out), boolean masks come back
boolean (``> 0.5`` after interpolation; exact with ``order=0``).

Array-module generic: NumPy in -> NumPy out (``scipy.ndimage``), CuPy in -> CuPy out
(``cupyx.scipy.ndimage``); :func:`resize` is a pair of matrix products on NumPy and, on CuPy,
the two kernels of :func:`resize_many`, which resizes a list of images of any shapes at once.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from augengine._xp import get_array_module, is_cupy
from augengine.checks import check_image, check_number, check_per_image, check_stack
from augengine.errors import ConfigError, InputError
from augengine.ops._util import RESAMPLE_THREADS, ndimage, restore_dtype, work_dtype

#: Interpolation orders the ops accept: 0 nearest, 1 linear, 3 cubic.
ORDERS = (0, 1, 3)

# Keys' cubic convolution coefficient; -0.5 is the value PIL's BICUBIC (and Matlab's imresize) use.
_KEYS_A = -0.5


def _order(order) -> int:
    if isinstance(order, bool) or order not in ORDERS:
        raise ConfigError(f"order must be 0 (nearest), 1 (linear) or 3 (cubic), got {order!r}")
    return int(order)


def _pair(value, name: str, positive: bool = False) -> tuple[float, float]:
    """A scalar or a (rows, cols) pair of finite numbers."""
    if np.ndim(value) == 0:
        number = check_number(value, name, positive=positive)
        return number, number
    if np.ndim(value) != 1 or len(value) != 2:
        raise ConfigError(f"{name} must be a number or a (rows, cols) pair, got {value!r}")
    return (check_number(value[0], name, positive=positive),
            check_number(value[1], name, positive=positive))


def _warp(image, matrix, offset, order: int, fill: float):
    """``out[o] = image[matrix @ o + offset]`` in pixel-centre coordinates, ``fill`` outside.

    ``matrix`` (2, 2), or (2,) for a diagonal one: scipy.ndimage then evaluates the position as
    ``(o + offset / matrix) * matrix`` (its zoom_shift), which may differ in the last bit.
    On CuPy, orders 0 and 1 run :func:`_warp_stack_cuda` on a stack of one, so an image warped
    alone and in a batch give the same bytes (scipy's); order 3, which needs a B-spline
    prefilter pass first, runs cupyx's ``affine_transform``.
    """
    if is_cupy(image) and order < 3:
        return _warp_stack_cuda(image[None], np.asarray(matrix, np.float64)[None],
                                np.asarray(offset, np.float64)[None], order, fill)[0][0]
    xp = get_array_module(image)
    work = image.astype(work_dtype(image.dtype))
    result = ndimage(xp).affine_transform(
        work,
        xp.asarray(matrix, dtype=np.float64),
        offset=tuple(float(o) for o in offset),
        order=order,
        mode="constant",
        cval=fill,
    )
    return restore_dtype(result, image.dtype)


def _centre(shape) -> np.ndarray:
    return (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0


def rf_spacing_mm(fs_hz, c_m_s, pitch_m) -> tuple[float, float]:
    """Pixel spacing of an RF frame ``(depth samples, lines)`` of a linear array, in mm.

    Parameters
    ----------
    fs_hz : float
        RF sampling frequency [Hz] (OASBUD: 40 MHz).
    c_m_s : float
        Speed of sound [m/s] (1540 m/s in soft tissue).
    pitch_m : float
        Distance between neighbouring scan lines [m] (the element pitch for a linear array).

    Returns
    -------
    (axial_mm, lateral_mm) : tuple of float
        ``axial = c / (2 fs)`` (pulse-echo: the echo travels the depth twice) and
        ``lateral = pitch``, both in mm.

    Examples
    --------
    >>> rf_spacing_mm(40e6, 1540.0, 0.3e-3)
    (0.01925, 0.3)
    """
    fs = check_number(fs_hz, "fs_hz", positive=True)
    c = check_number(c_m_s, "c_m_s", positive=True)
    pitch = check_number(pitch_m, "pitch_m", positive=True)
    return c / (2.0 * fs) * 1e3, pitch * 1e3


def scan_convert(image, spacing_mm, pixel_size_mm=None, order: int = 3):
    """Resample an image on the RF grid of a linear array to square pixels.

    Parameters
    ----------
    image : ndarray (depth, lines), any real dtype or bool
        B-mode image (or mask) on the acquisition grid.
    spacing_mm : (float, float)
        ``(axial_mm, lateral_mm)`` of that grid, e.g. from :func:`rf_spacing_mm`.
    pixel_size_mm : float, optional
        Side of the square output pixels [mm]. Default: the geometric mean
        ``sqrt(axial_mm * lateral_mm)``, which keeps the pixel count ``H * W`` of the input: the
        finely sampled depth axis is decimated (with antialiasing) and the coarse lateral axis is
        interpolated by the same factor, so the image neither loses nor invents samples overall.
        (``max/2`` would still decimate little but oversample the lateral axis far more; the
        lateral step alone would throw away most of the axial speckle detail.)
    order : {0, 1, 3}, optional
        As :func:`resize` (3: bicubic; 0 for masks).

    Returns
    -------
    ndarray (H', W'), same dtype as ``image``
        ``H' = round(H * axial / p)``, ``W' = round(W * lateral / p)`` (at least 1), covering the
        same physical extent; its spacing is ``(p, p)`` up to that rounding (less than half a pixel
        over the whole image).

    Notes
    -----
    For a linear array the lines are parallel, so scan conversion is an anisotropic resampling;
    sector and convex geometries are not handled.

    Examples
    --------
    >>> image = np.zeros((2000, 100), np.uint8)
    >>> scan_convert(image, (0.02, 0.2), pixel_size_mm=0.1).shape
    (400, 200)
    """
    image = check_image(image, "scan_convert")
    return resize(image, scan_convert_shape(image.shape, spacing_mm, pixel_size_mm), order=order)


def scan_convert_shape(shape, spacing_mm, pixel_size_mm=None) -> tuple[int, int]:
    """The ``(H', W')`` :func:`scan_convert` makes from an image of ``shape``, computed without
    the image (so a caller can refuse a gigantic result before allocating it).

    >>> scan_convert_shape((2000, 100), (0.02, 0.2), pixel_size_mm=0.1)
    (400, 200)
    """
    axial, lateral = _pair(spacing_mm, "spacing_mm", positive=True)
    if pixel_size_mm is None:
        pixel = math.sqrt(axial * lateral)
    else:
        pixel = check_number(pixel_size_mm, "pixel_size_mm", positive=True)
    height, width = shape
    return max(1, round(height * axial / pixel)), max(1, round(width * lateral / pixel))


def roi_box(roi, margin_mm, spacing_mm) -> tuple[slice, slice]:
    """Crop box: the bounding box of an ROI grown by a physical margin, clipped to the image.

    Parameters
    ----------
    roi : ndarray (H, W), bool or any number (nonzero = inside)
        Lesion ROI drawn by the radiologist.
    margin_mm : float
        Band of surrounding tissue on every side [mm], >= 0 (seed 001: 2, 5 or 10 mm).
    spacing_mm : float or (float, float)
        Pixel spacing ``(rows_mm, cols_mm)`` of ``roi`` (anisotropic on the RF grid).

    Returns
    -------
    (slice, slice)
        ``image[box]`` is the crop. Rows ``[r0 - m_r, r1 + 1 + m_r)`` and columns likewise, with
        ``m = ceil(margin_mm / spacing_mm)`` per axis (rounded outwards, so the band is at least
        ``margin_mm`` wide) and clipped to ``[0, H)`` and ``[0, W)``.

    Raises
    ------
    InputError
        ROI not 2-D or with no pixel inside.
    ConfigError
        Negative or non-finite margin; spacing not > 0.

    Examples
    --------
    >>> roi = np.zeros((100, 50), bool); roi[40:60, 20:30] = True
    >>> roi_box(roi, 1.0, (0.1, 0.5))       # 10 rows and 2 columns of margin
    (slice(30, 70, None), slice(18, 32, None))
    """
    roi = check_image(roi, "roi_box")
    margin = check_number(margin_mm, "margin_mm")
    if margin < 0:
        raise ConfigError(f"margin_mm must be >= 0, got {margin_mm}")
    spacing = _pair(spacing_mm, "spacing_mm", positive=True)
    inside = roi.astype(bool)
    profiles = [inside.any(axis=1), inside.any(axis=0)]
    if is_cupy(inside):  # one device-to-host copy of both profiles, not a sync per bound
        import cupy

        both = cupy.concatenate(profiles).get()
        profiles = [both[:roi.shape[0]], both[roi.shape[0]:]]
    rows, cols = (np.flatnonzero(profile) for profile in profiles)
    if rows.size == 0:
        raise InputError("roi_box: ROI is empty (no pixel inside)")
    box = []
    for hits, step, length in zip((rows, cols), spacing, roi.shape):
        # The 1e-9 px slack keeps exact multiples (1.1 mm / 0.1 mm = 11.000000000000002) from
        # growing by a whole extra pixel through float rounding.
        grow = math.ceil(margin / step - 1e-9)
        box.append(slice(max(0, int(hits[0]) - grow), min(length, int(hits[-1]) + 1 + grow)))
    return box[0], box[1]


def _keys_cubic(x, xp):
    """Keys' cubic convolution kernel with ``a = -0.5`` (support 2)."""
    x = xp.abs(x)
    a = _KEYS_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return xp.where(x < 1.0, near, xp.where(x < 2.0, far, 0.0))


def _triangle(x, xp):
    return xp.maximum(0.0, 1.0 - xp.abs(x))


def _resample_matrix(n_in: int, n_out: int, order: int, dtype) -> np.ndarray:
    """Weights ``W (n_out, n_in)``, ``out = W @ in`` along one axis (PIL's convolution scheme).

    Computed with NumPy whatever the image's array module: a few small arrays, which on a GPU
    would cost a dozen element-wise launches per matrix; a CuPy caller copies the result over
    once (and gets NumPy's exact weights)."""
    scale = n_in / n_out
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    # Downscaling widens the kernel by the scale factor, which low-pass filters (antialiases).
    stretch = max(scale, 1.0)
    taps = np.arange(n_in, dtype=np.float64) + 0.5
    distance = (taps[None, :] - centres[:, None]) / stretch
    kernel = _keys_cubic if order == 3 else _triangle
    weights = kernel(distance, np)
    # Rows are renormalised, so at the borders the missing taps are simply left out.
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(dtype)


def _size(size) -> tuple[int, int]:
    """``size`` checked as an output ``(H, W)`` of :func:`resize`."""
    if np.ndim(size) != 1 or len(size) != 2:
        raise ConfigError(f"size must be a pair (H, W) of integers >= 1, got {size!r}")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
               for s in size):
        raise ConfigError(f"size must be a pair (H, W) of integers >= 1, got {tuple(size)}")
    return int(size[0]), int(size[1])


def resize(image, size, order: int = 3):
    """Resize an image or mask to ``size = (H, W)`` pixels.

    Parameters
    ----------
    image : ndarray (h, w), any real dtype or bool
    size : (int, int)
        Output ``(H, W)``, both >= 1.
    order : {0, 1, 3}, optional
        3: bicubic (default; seed 001 resizes ROI crops "using bi-cubic interpolation"),
        1: bilinear, 0: nearest (use for masks).

    Returns
    -------
    ndarray (H, W), same dtype as ``image``
        Integer images are rounded half to even and clipped; bool masks stay bool.

    Notes
    -----
    Separable convolution resampling with PIL's conventions (pixel centres at ``i + 0.5``, output
    pixel ``i`` centred at ``(i + 0.5) h / H`` of the input): order 3 uses Keys' cubic
    convolution kernel with ``a = -0.5``, order 1 the triangle kernel, and when downscaling the
    kernel is stretched by ``h / H`` so that it also low-pass filters (antialiasing), exactly as
    ``PIL.Image.resize(..., BICUBIC/BILINEAR)``. Order 0 picks input pixel
    ``floor((i + 0.5) h / H)``, like PIL's NEAREST (computed exactly; where an output centre
    falls exactly on an input pixel border PIL's float arithmetic may pick the pixel before).
    On NumPy each axis is one matrix product with a dense
    ``(H, h)`` weight matrix (memory ``H h + W w`` floats: fine for images up to a few thousand
    pixels a side), in float32 (float64 for float64 input). On CuPy, uint8, float32 and float64
    images go through :func:`resize_many`'s two kernels (the same weights, band-sparse, summed in
    tap order: within float32 rounding of NumPy's BLAS sums, so a uint8 pixel may land one grey
    level away where a sum sits on a .5), so that an image alone and in any batch give the same
    bytes; other dtypes use the matrix products. Float results match PIL's ``"F"`` mode to
    float32 precision. PIL's 8-bit mode
    rounds and clips to [0, 255] between the two passes and we do not, so uint8 results differ by
    at most one grey level on smooth images, more where cubic overshoot hits 0 or 255 after the
    first pass (e.g. upscaled noise).

    References
    ----------
    R. Keys, "Cubic convolution interpolation for digital image processing", IEEE Trans. ASSP
    29(6), 1981.

    Examples
    --------
    >>> image = np.full((30, 41), 7, np.uint8)
    >>> out = resize(image, (224, 224))
    >>> out.shape, out.dtype, int(out.min()), int(out.max())
    ((224, 224), dtype('uint8'), 7, 7)
    """
    image = check_image(image, "resize")
    order = _order(order)
    height, width = _size(size)
    xp = get_array_module(image)
    if order == 0:
        # Integer arithmetic: floor((2i + 1) h / 2H) is exact, even for a centre on a border.
        # Indices and weights are computed on the host (see _resample_matrix).
        rows = ((2 * np.arange(height) + 1) * image.shape[0]) // (2 * height)
        cols = ((2 * np.arange(width) + 1) * image.shape[1]) // (2 * width)
        return image[xp.asarray(rows[:, None]), xp.asarray(cols[None, :])]
    if is_cupy(image) and np.dtype(image.dtype) in _RAGGED_TYPES:
        # The kernels of resize_many, so that an image alone and in any batch give the same bytes.
        return _resize_ragged([image], [(height, width)], order, stack=False)[0]
    dtype = work_dtype(image.dtype)
    weights_rows = xp.asarray(_resample_matrix(image.shape[0], height, order, dtype))
    weights_cols = xp.asarray(_resample_matrix(image.shape[1], width, order, dtype))
    result = weights_rows @ image.astype(dtype) @ weights_cols.T
    return restore_dtype(result, image.dtype)


# --- ragged lists -----------------------------------------------------------------------------
# A shard's crops have nearly all their own shapes (three ROI margins per frame, several frames),
# so stacks of one shape would cost launches per shape; resize_many takes them all at once.

#: dtypes :func:`resize_many` resamples on CuPy in its two kernels: ``(source, accumulator,
#: result)`` C types of cuda/resample.cu's ``resize_rows`` and ``resize_cols``.
_RAGGED_TYPES = {
    np.dtype(np.uint8): ("unsigned char", "float", "unsigned char"),
    np.dtype(np.float32): ("float", "float", "float"),
    np.dtype(np.float64): ("double", "double", "double"),
}

#: Fields per job of the ragged kernels' job table (cuda/resample.cu's RESIZE_JOB_FIELDS).
_RESIZE_JOB_FIELDS = 12


def _sizes(sizes, count: int, op: str) -> list[tuple[int, int]]:
    """``sizes`` as one checked ``(H, W)`` per image: a single pair is used for every image."""
    if np.ndim(sizes) == 1 and len(sizes) == 2:
        return [_size(sizes)] * count
    if np.ndim(sizes) != 2 or len(sizes) != count:
        raise ConfigError(f"{op}: {count} images but sizes {sizes!r}; give one (H, W) for all "
                          "or one per image")
    return [_size(size) for size in sizes]


def _images(images, op: str) -> list:
    """``images`` as a list of checked 2-D arrays of one array module and one dtype."""
    images = [check_image(image, op) for image in images]
    if len({is_cupy(image) for image in images}) > 1:
        raise InputError(f"{op}: images mix NumPy and CuPy arrays; move them to one device")
    dtypes = sorted({str(image.dtype) for image in images})
    if len(dtypes) > 1:
        raise InputError(f"{op}: images have different dtypes ({', '.join(dtypes)}); call it "
                         "once per dtype")
    return images


def resize_many(images, sizes, order: int = 3, stack: bool = False):
    """:func:`resize` of each image of a list of any shapes to its own size, in one call.

    Parameters
    ----------
    images : sequence of ndarray (h_j, w_j), one dtype, all NumPy or all CuPy
        Images or masks; CuPy views with unit column stride (crops ``image[r0:r1, c0:c1]``,
        rows reversed) are read in place, other views copied first (one launch each).
    sizes : (int, int) or sequence of (int, int)
        Output ``(H_j, W_j)`` per image, or one pair for all.
    order : {0, 1, 3}, optional
        As :func:`resize` (3: bicubic, Keys ``a = -0.5`` with PIL's conventions; 0 for masks).
    stack : bool, optional
        Return one ``(B, H, W)`` array (all sizes must be equal) instead of a list.

    Returns
    -------
    list of ndarray (H_j, W_j), or ndarray (B, H, W) with ``stack``; dtype of the images
        Image for image ``resize(images[j], sizes[j], order)``, bit for bit (on CuPy, the
        per-image :func:`resize` runs these kernels too). On CuPy the list holds views of one
        flat buffer.

    Notes
    -----
    On CuPy, for orders 1 and 3 and uint8, float32 or float64 images, the separable resampling of
    :func:`resize` runs as two kernels for the whole list (cuda/resample.cu):

    .. math::

        t_j[o, c] = \\sum_k W^r_j[o, k]\\, s_j[f^r_j[o] + k, c], \\qquad
        y_j[o, p] = \\sum_k W^c_j[p, k]\\, t_j[o, f^c_j[p] + k]

    with the weights of ``_resample_matrix`` (computed on the host, cached per
    ``(h, H, order)``) stored as bands: first tap ``f``, tap count and taps per output row or
    column. Sums run in float32 (float64 for float64 images) in tap order, rows first as
    ``W_rows @ image @ W_cols.T`` associates; uint8 results are rounded half to even and clipped
    in the second kernel. Cost: one host-to-device copy of all tables (job table, prefix offsets,
    bands, source pointers and row strides), ``resize_rows`` and ``resize_cols`` (2 launches,
    each a grid-stride loop over all images' elements in which a thread finds its image by
    binary search over the prefix offsets), no synchronisation; the intermediate takes
    ``sum_j H_j w_j`` floats. Each output pixel is one thread's sum over its own taps, so an
    image's bytes do not depend on the other images of the call. Against NumPy's BLAS
    sums the results agree to float32 rounding (uint8: at most one grey level, where a sum sits
    on a .5). Other dtypes (bool masks), order 0, and NumPy input go image by image through
    :func:`resize` (no launch on NumPy; on CuPy a gather per image for order 0).

    Examples
    --------
    >>> frame = np.full((60, 50), 9, np.uint8)
    >>> crops = [frame[10:40, 5:45], frame[:, 20:], frame[3:8, 3:9]]
    >>> [out.shape for out in resize_many(crops, [(24, 24), (12, 30), (24, 24)])]
    [(24, 24), (12, 30), (24, 24)]
    >>> resize_many(crops, (16, 16), stack=True).shape
    (3, 16, 16)
    """
    images = _images(images, "resize_many")
    order = _order(order)
    sizes = _sizes(sizes, len(images), "resize_many")
    if stack and len(set(sizes)) > 1:
        raise ConfigError(f"resize_many: stack=True needs one size for all images, got "
                          f"{len(set(sizes))} different sizes")
    if not images:
        if stack:
            raise InputError("resize_many: no images to stack")
        return []
    if is_cupy(images[0]) and order > 0 and np.dtype(images[0].dtype) in _RAGGED_TYPES:
        return _resize_ragged(images, sizes, order, stack)
    results = [resize(image, size, order=order) for image, size in zip(images, sizes)]
    return get_array_module(images[0]).stack(results) if stack else results


def scan_convert_many(images, spacings_mm, pixel_size_mm=None, order: int = 3) -> list:
    """:func:`scan_convert` of each image of a list of any shapes on its own grid: one
    :func:`resize_many` call (on CuPy two launches for the list), image for image the bytes of
    :func:`scan_convert`.

    Parameters
    ----------
    images : sequence of ndarray (depth_j, lines_j), one dtype
    spacings_mm : (float, float) or sequence of (float, float)
        ``(axial_mm, lateral_mm)`` per image, or one pair for all.
    pixel_size_mm : float, optional
        As :func:`scan_convert` (default per image: ``sqrt(axial * lateral)``).
    order : {0, 1, 3}, optional

    Returns
    -------
    list of ndarray (H'_j, W'_j), dtype of the images
        Sizes from :func:`scan_convert_shape`.

    >>> outs = scan_convert_many([np.zeros((2000, 100), np.uint8), np.zeros((1000, 60),
    ...                           np.uint8)], (0.02, 0.2), pixel_size_mm=0.1)
    >>> [out.shape for out in outs]
    [(400, 200), (200, 120)]
    """
    images = _images(images, "scan_convert_many")
    if np.ndim(spacings_mm) < 2:
        spacings = [spacings_mm] * len(images)
    else:
        spacings = check_per_image(spacings_mm, len(images), "spacings_mm", "scan_convert_many")
    sizes = [scan_convert_shape(image.shape, spacing, pixel_size_mm)
             for image, spacing in zip(images, spacings)]
    return resize_many(images, sizes, order=order)


@functools.lru_cache(maxsize=256)
def _band_weights(n_in: int, n_out: int, order: int, dtype: str):
    """``_resample_matrix(n_in, n_out, order, dtype)`` as bands: per output index the first
    non-zero tap and the tap count, int32 (n_out,), and the taps (n_out, K), zero-padded to
    the widest band K. Cached: a shard resizes the same few shapes over and over."""
    weights = _resample_matrix(n_in, n_out, order, np.dtype(dtype))
    nonzero = weights != 0
    first = nonzero.argmax(axis=1)
    count = n_in - nonzero[:, ::-1].argmax(axis=1) - first
    width = int(count.max())
    tap = np.arange(width)
    inside = tap[None, :] < count[:, None]
    columns = np.minimum(first[:, None] + tap[None, :], n_in - 1)
    taps = np.where(inside, np.take_along_axis(weights, columns, axis=1), 0).astype(dtype)
    bands = first.astype(np.int32), count.astype(np.int32), np.ascontiguousarray(taps)
    for array in bands:
        array.flags.writeable = False
    return bands


def _resize_tables(images, sizes, order: int, work) -> tuple[np.ndarray, dict]:
    """The host side of :func:`_resize_ragged`: every table its kernels read, packed into one
    byte buffer (each section 8-byte aligned), and the sections' ``(start, stop, dtype)``."""
    count = len(images)
    jobs = np.empty((count, _RESIZE_JOB_FIELDS), np.int64)
    starts_rows = np.zeros(count + 1, np.int64)
    starts_cols = np.zeros(count + 1, np.int64)
    index, taps, bands = [], [], {}
    lengths = {"index": 0, "taps": 0}

    def band(n_in, n_out):
        """(first offset, count offset, taps offset, K) of one axis' band, added once."""
        if (n_in, n_out) not in bands:
            first, counts, weights = _band_weights(n_in, n_out, order, np.dtype(work).name)
            bands[n_in, n_out] = (lengths["index"], lengths["index"] + n_out, lengths["taps"],
                                  weights.shape[1])
            index.extend((first, counts))
            taps.append(weights.ravel())
            lengths["index"] += 2 * n_out
            lengths["taps"] += weights.size
        return bands[n_in, n_out]

    for j, (image, (height, width)) in enumerate(zip(images, sizes)):
        rows_in, cols_in = image.shape
        jobs[j, 1:4] = image.strides[0] // image.dtype.itemsize, cols_in, width
        jobs[j, 4:8] = band(rows_in, height)
        jobs[j, 8:12] = band(cols_in, width)
        starts_rows[j + 1] = starts_rows[j] + height * cols_in
        starts_cols[j + 1] = starts_cols[j] + height * width
    # Device addresses are below 2**63 in practice, but they are unsigned: store their bits.
    jobs.view(np.uint64)[:, 0] = [image.data.ptr for image in images]
    sections = {"jobs": jobs, "starts_rows": starts_rows, "starts_cols": starts_cols,
                "index": np.concatenate(index), "taps": np.concatenate(taps)}
    layout, parts, offset = {}, [], 0
    for name, array in sections.items():
        raw = array.reshape(-1).view(np.uint8)
        pad = -raw.size % 8
        layout[name] = (offset, offset + raw.size, array.dtype)
        parts.extend((raw, np.zeros(pad, np.uint8)))
        offset += raw.size + pad
    return np.concatenate(parts), layout


def _resize_ragged(images, sizes, order: int, stack: bool):
    """:func:`resize_many` on CuPy (orders 1 and 3, dtypes of :data:`_RAGGED_TYPES`): one
    host-to-device copy of the tables, ``resize_rows`` and ``resize_cols`` over all images."""
    import cupy

    from augengine.ops._cuda import get_kernel

    dtype = np.dtype(images[0].dtype)
    source, accumulator, result = _RAGGED_TYPES[dtype]
    work = work_dtype(dtype)
    # The kernels step along a row one element at a time; any other view is copied first.
    images = [image if image.strides[1] == dtype.itemsize and image.strides[0] % dtype.itemsize
              == 0 else cupy.ascontiguousarray(image) for image in images]
    packed, layout = _resize_tables(images, sizes, order, work)
    device = cupy.asarray(packed)
    tables = {name: device[start:stop].view(kind) for name, (start, stop, kind) in layout.items()}
    count = np.int32(len(images))
    total_rows = sum(height * image.shape[1] for image, (height, _) in zip(images, sizes))
    total_cols = sum(height * width for height, width in sizes)
    tmp = cupy.empty(total_rows, work)
    out = cupy.empty(total_cols, dtype)
    for kernel, total, args in (
            (f"resize_rows<{source}, {accumulator}>", total_rows,
             (tables["jobs"], tables["starts_rows"], count, tables["index"], tables["taps"], tmp)),
            (f"resize_cols<{accumulator}, {result}>", total_cols,
             (tables["jobs"], tables["starts_rows"], tables["starts_cols"], count,
              tables["index"], tables["taps"], tmp, out))):
        blocks = max(1, min(-(-total // RESAMPLE_THREADS), 1 << 20))
        get_kernel("resample.cu", kernel)((blocks,), (RESAMPLE_THREADS,), args)
    if stack:
        return out.reshape(len(images), *sizes[0])
    ends = np.cumsum([height * width for height, width in sizes])
    return [out[end - height * width:end].reshape(height, width)
            for end, (height, width) in zip(ends.tolist(), sizes)]


def rotate90(image, k: int = 1):
    """Rotate by ``k`` quarter turns counter-clockwise (as displayed, rows pointing down).

    Parameters
    ----------
    image : ndarray (H, W), any dtype
    k : int
        Number of quarter turns; any integer (taken modulo 4; negative turns clockwise).

    Returns
    -------
    ndarray (W, H) for odd ``k``, (H, W) for even ``k``; same dtype, C-contiguous copy
        Exact (no interpolation). Seed 000 and seed 004 (rot_90, rot_180) use these.

    Examples
    --------
    >>> rotate90(np.array([[1, 2], [3, 4]]), 1)
    array([[2, 4],
           [1, 3]])
    """
    image = check_image(image, "rotate90")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer number of quarter turns, got {k!r}")
    xp = get_array_module(image)
    return xp.ascontiguousarray(xp.rot90(image, int(k) % 4))


_FLIP_AXES = {0: 0, 1: 1, "vertical": 0, "horizontal": 1}


def flip(image, axis):
    """Mirror an image: ``axis`` 0 / ``"vertical"`` flips up-down, 1 / ``"horizontal"`` left-right.

    Parameters
    ----------
    image : ndarray (H, W), any dtype
    axis : {0, 1, "vertical", "horizontal"}

    Returns
    -------
    ndarray (H, W), same dtype, C-contiguous copy
        Exact; an involution (``flip(flip(x, a), a) == x``). Seed 004: fliph, flipv.

    Examples
    --------
    >>> flip(np.array([[1, 2], [3, 4]]), "horizontal")
    array([[2, 1],
           [4, 3]])
    """
    image = check_image(image, "flip")
    key = axis.lower() if isinstance(axis, str) else axis
    if isinstance(key, bool) or key not in _FLIP_AXES:
        raise ConfigError(f"axis must be 0, 1, 'vertical' or 'horizontal', got {axis!r}")
    xp = get_array_module(image)
    return xp.ascontiguousarray(xp.flip(image, _FLIP_AXES[key]))


def _cos_sin_deg(angle: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact at multiples of 90 degrees."""
    quarter, rest = divmod(angle, 90.0)
    if rest == 0.0:
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    radians = math.radians(angle)
    return math.cos(radians), math.sin(radians)


def rotate(image, angle_deg, order: int = 1, fill=0):
    """Rotate about the image centre by ``angle_deg`` counter-clockwise, keeping the shape.

    Parameters
    ----------
    image : ndarray (H, W), any real dtype or bool
    angle_deg : float
        Angle in degrees, counter-clockwise as displayed (rows pointing down), like
        :func:`rotate90`.
    order : {0, 1, 3}, optional
        Interpolation: 0 nearest (masks), 1 linear (default), 3 cubic B-spline.
    fill : float, optional
        Value of pixels that come from outside the input (corners).

    Returns
    -------
    ndarray (H, W), same dtype
        ``out[o] = image[R (o - c) + c]`` with ``c = ((H-1)/2, (W-1)/2)`` and
        ``R = [[cos t, sin t], [-sin t, cos t]]`` in (row, col) coordinates. Multiples of 90
        degrees use exact cosines, so on a square image ``rotate(x, 90, order=0)`` equals
        ``rotate90(x, 1)``.

    Examples
    --------
    >>> x = np.arange(9).reshape(3, 3)
    >>> rotate(x, 90, order=0)
    array([[2, 5, 8],
           [1, 4, 7],
           [0, 3, 6]])
    """
    image = check_image(image, "rotate")
    order = _order(order)
    matrix, offset = _rotation(angle_deg, image.shape)
    fill = check_number(fill, "fill")
    return _warp(image, matrix, offset, order, fill)


def _rotation(angle_deg, shape) -> tuple[np.ndarray, np.ndarray]:
    """The (matrix, offset) of :func:`rotate` about the centre of an image of ``shape``."""
    cos, sin = _cos_sin_deg(check_number(angle_deg, "angle_deg"))
    matrix = np.array([[cos, sin], [-sin, cos]])
    centre = _centre(shape)
    return matrix, centre - matrix @ centre


def translate(image, shift_px, order: int = 1, fill=0):
    """Shift an image by ``shift_px = (dy, dx)`` pixels (may be fractional), keeping the shape.

    Parameters
    ----------
    image : ndarray (H, W), any real dtype or bool
    shift_px : (float, float)
        ``dy`` down, ``dx`` right, in pixels (seed 004: trans_20_20).
    order : {0, 1, 3}, optional
        Interpolation: 0 nearest (masks), 1 linear (default), 3 cubic B-spline.
    fill : float, optional
        Value of the pixels uncovered by the shift.

    Returns
    -------
    ndarray (H, W), same dtype
        ``out[y, x] = image[y - dy, x - dx]``; for integer shifts this is ``np.roll`` with the
        wrapped-around band replaced by ``fill``.

    Examples
    --------
    >>> translate(np.array([[1, 2, 3]]), (0, 1))
    array([[0, 1, 2]])
    """
    image = check_image(image, "translate")
    order = _order(order)
    offset = _translation(shift_px)
    fill = check_number(fill, "fill")
    return _warp(image, np.ones(2), offset, order, fill)


def _translation(shift_px) -> np.ndarray:
    """The offset of :func:`translate` (its matrix is the identity)."""
    if np.ndim(shift_px) != 1 or len(shift_px) != 2:
        raise ConfigError(f"shift_px must be a pair (dy, dx) in pixels, got {shift_px!r}")
    return -np.array([check_number(s, "shift_px") for s in shift_px])


def scale(image, factor, order: int = 1, fill=0):
    """Zoom about the image centre by ``factor``, keeping the shape (crop if > 1, pad if < 1).

    Parameters
    ----------
    image : ndarray (H, W), any real dtype or bool
    factor : float or (float, float)
        Magnification (> 0), one for both axes or ``(rows, cols)``.
    order : {0, 1, 3}, optional
        Interpolation: 0 nearest (masks), 1 linear (default), 3 cubic B-spline.
    fill : float, optional
        Value of the border that appears when ``factor < 1``.

    Returns
    -------
    ndarray (H, W), same dtype
        ``out[o] = image[(o - c) / factor + c]`` with ``c = ((H-1)/2, (W-1)/2)``.

    Examples
    --------
    >>> scale(np.arange(1, 6)[None, :], 0.5, order=0)
    array([[0, 1, 3, 5, 0]])
    """
    image = check_image(image, "scale")
    order = _order(order)
    diagonal, offset = _zoom(factor, image.shape)
    fill = check_number(fill, "fill")
    return _warp(image, diagonal, offset, order, fill)


def _zoom(factor, shape) -> tuple[np.ndarray, np.ndarray]:
    """The (diagonal of the matrix, offset) of :func:`scale` about the centre of ``shape``."""
    factors = np.array(_pair(factor, "factor", positive=True))
    centre = _centre(shape)
    return 1.0 / factors, centre - centre / factors


# --- batches ----------------------------------------------------------------------------------
# A shard runs each op of its chains once on a stack (B, H, W) of same-shaped images
# (augengine.pipeline.finish_chains). Every function below gives, image for image, the bytes of
# its per-image op above; tests/ops/test_batch.py checks it on NumPy and on emulated CuPy.

def affine_batch(images, matrices, offsets, order: int = 1, fill=0, masks=None):
    """Warp each image of a stack, and its mask, with the image's own affine map.

    Parameters
    ----------
    images : ndarray (B, H, W), any real dtype or bool
    matrices : array-like (B, 2, 2) of float
        ``A_b`` in (row, col) coordinates.
    offsets : array-like (B, 2) of float
        ``t_b`` in pixels.
    order : {0, 1}, optional
        0 nearest (masks), 1 linear (default). Cubic is refused: it needs a B-spline
        prefilter pass over each image before the warp (the per-image ops run it).
    fill : float, optional
        Value of output pixels that map outside the input.
    masks : ndarray (B, H, W) of bool or uint8, optional
        The images' lesion masks, warped by the same maps nearest (order 0) with fill 0.

    Returns
    -------
    ndarray (B, H, W), same dtype; ``(images_out, masks_out)`` when ``masks`` is given
        ``out[b, o] = images[b, A_b o + t_b]``, integers rounded half to even and clipped as the
        per-image ops do; ``masks_out`` has the dtype of ``masks``.

    Notes
    -----
    scipy.ndimage.affine_transform's arithmetic (a 2-D matrix, mode ``"constant"``): the
    position ``(t_b0 + A_b00 row) + A_b01 col`` (columns likewise) in float64, ``fill`` where it
    falls outside ``[0, H-1] x [0, W-1]``, no tap outside the image weighed. On CuPy one kernel
    launch for the images and their masks (``warp_affine`` of cuda/resample.cu, see there),
    which reads the images as their dtype (uint8, bool, float32, float64; other dtypes through
    a float32 copy) and rounds like scipy, so it gives scipy's bytes (tests/ops/test_batch.py
    and tests/ops/test_cuda_parity.py check it). On NumPy image by image through
    ``scipy.ndimage.affine_transform``: a call costs no launch there, and one 3-D
    ``map_coordinates`` over the stack (8 taps per pixel, plus the coordinates) ran 2-3x slower
    than image by image on this project's CPUs (32 images of 224 x 224).

    Examples
    --------
    >>> stack = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> shift = affine_batch(stack, [np.eye(2)] * 2, [(0, 0), (0, 1)], order=0)
    >>> shift[1].tolist()        # image 1 shifted left by one column, filled with 0
    [[5.0, 0.0], [7.0, 0.0]]
    """
    images = check_stack(images, "affine_batch")
    order = _affine_order(order, "affine_batch")
    fill = check_number(fill, "fill")
    count = images.shape[0]
    matrices = np.asarray(matrices, dtype=np.float64).reshape(count, 2, 2)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(count, 2)
    if masks is not None:
        masks = _check_masks(masks, images, "affine_batch")
    if is_cupy(images):
        out, masks_out = _warp_stack_cuda(images, matrices, offsets, order, fill, masks)
        return out if masks is None else (out, masks_out)
    out = np.stack([_warp(image, matrix, offset, order, fill)
                    for image, matrix, offset in zip(images, matrices, offsets)])
    if masks is None:
        return out
    return out, np.stack([_warp(mask, matrix, offset, 0, 0.0)
                          for mask, matrix, offset in zip(masks, matrices, offsets)])


def _affine_order(order, op: str) -> int:
    order = _order(order)
    if order > 1:
        raise ConfigError(f"{op}: order must be 0 or 1, got {order}")
    return order


def _check_masks(masks, images, op: str):
    """``masks`` checked as the (B, H, W) bool or uint8 masks of ``images``, on their device."""
    masks = check_image(masks, op, "mask stack", "(B, H, W)")
    if tuple(masks.shape) != tuple(images.shape):
        raise InputError(f"{op}: masks of shape {tuple(masks.shape)} for images of shape "
                         f"{tuple(images.shape)}")
    if np.dtype(masks.dtype) not in (np.dtype(bool), np.dtype(np.uint8)):
        raise InputError(f"{op}: masks must be bool or uint8, got dtype {masks.dtype}")
    if is_cupy(masks) != is_cupy(images):
        raise InputError(f"{op}: masks and images must both be NumPy or both CuPy arrays")
    return masks


#: Image dtypes ``warp_affine`` reads directly, with its instantiation's C type.
_WARP_TYPES = {np.dtype(np.uint8): "unsigned char", np.dtype(bool): "bool",
               np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _warp_stack_cuda(images, matrices: np.ndarray, offsets: np.ndarray, order: int,
                     fill: float, masks=None):
    """The warp of a CuPy stack (B, H, W) and of its masks (or None): ``(out, masks_out)``
    (``masks_out`` None without masks), in one launch of ``warp_affine`` (cuda/resample.cu).

    ``matrices`` (B, 2, 2), or (B, 2) for diagonal maps, and ``offsets`` (B, 2) are host
    float64, as :func:`_warp` takes them one by one: a diagonal map is evaluated as
    ``(o + offset / diagonal) * diagonal``, scipy's zoom_shift, with the quotient computed here
    as scipy computes it. One host-to-device copy of the maps, no sync."""
    import cupy

    from augengine.ops._cuda import get_kernel

    count, height, width = images.shape
    dtype = np.dtype(images.dtype)
    work = images if dtype in _WARP_TYPES else images.astype(np.float32)
    work = work if work.flags.c_contiguous else cupy.ascontiguousarray(work)
    zoom_shift = matrices.ndim == 2
    if zoom_shift:
        zeros = np.zeros((count, 2))
        maps = np.concatenate([matrices[:, :1], zeros, matrices[:, 1:], offsets / matrices], 1)
    else:
        maps = np.concatenate([matrices.reshape(count, 4), offsets], 1)
    out = cupy.empty(work.shape, work.dtype)
    if masks is None:
        masks_in, masks_out = cupy.empty(0, np.uint8), cupy.empty(0, np.uint8)
    else:
        masks_in = masks if masks.flags.c_contiguous else cupy.ascontiguousarray(masks)
        masks_out = cupy.empty(masks.shape, masks.dtype)
    blocks = max(1, min(-(-work.size // RESAMPLE_THREADS), 1 << 20))
    get_kernel("resample.cu", f"warp_affine<{_WARP_TYPES[np.dtype(work.dtype)]}>")(
        (blocks,), (RESAMPLE_THREADS,), (
            work, cupy.asarray(np.ascontiguousarray(maps)), np.int32(zoom_shift),
            np.int32(count), np.int32(height), np.int32(width), np.int32(order),
            np.float64(fill), out, np.int32(masks is not None), masks_in, masks_out))
    if work.dtype != dtype:
        out = restore_dtype(out, dtype)
    return out, None if masks is None else masks_out


def _batch_warp(op, images, values, masks, maps, order, fill):
    """A ``*_batch`` op of ``op`` (:func:`rotate`, :func:`translate` or :func:`scale`): on CuPy
    one :func:`_warp_stack_cuda` launch for the stack and its masks, with the (matrices,
    offsets) ``maps()`` gives; on NumPy image by image through ``op``, masks through ``op``
    with order 0 (as :func:`affine_batch` says why)."""
    name = f"{op.__name__}_batch"
    if masks is not None:
        masks = _check_masks(masks, images, name)
    if is_cupy(images):
        order = _affine_order(order, name)
        fill = check_number(fill, "fill")
        out, masks_out = _warp_stack_cuda(images, *maps(), order, fill, masks)
    else:
        out = np.stack([op(image, value, order=order, fill=fill)
                        for image, value in zip(images, values)])
        masks_out = None if masks is None else np.stack(
            [op(mask, value, order=0) for mask, value in zip(masks, values)])
    return out if masks is None else (out, masks_out)


def rotate_batch(images, angles_deg, order: int = 1, fill=0, masks=None):
    """:func:`rotate` of each image of a stack (B, H, W) by its own angle ``angles_deg[b]``,
    and of its mask (``masks`` (B, H, W) bool or uint8, nearest, fill 0) when given: then
    returns ``(images_out, masks_out)``. On CuPy one launch for both (orders 0 and 1), on NumPy
    image by image; the bytes of :func:`rotate` either way.

    >>> stack = np.arange(18).reshape(2, 3, 3)
    >>> bool((rotate_batch(stack, [0, 90], order=0)[1] == rotate(stack[1], 90, order=0)).all())
    True
    """
    images = check_stack(images, "rotate_batch")
    angles = check_per_image(angles_deg, images.shape[0], "angles_deg", "rotate_batch")

    def maps():
        matrices, offsets = zip(*(_rotation(angle, images.shape[1:]) for angle in angles))
        return np.stack(matrices), np.stack(offsets)

    return _batch_warp(rotate, images, angles, masks, maps, order, fill)


def translate_batch(images, shifts_px, order: int = 1, fill=0, masks=None):
    """:func:`translate` of each image of a stack (B, H, W) by its own ``shifts_px[b] =
    (dy, dx)``, and of its mask when given (as :func:`rotate_batch`); the bytes of
    :func:`translate`.

    >>> translate_batch(np.array([[[1, 2, 3]], [[1, 2, 3]]]), [(0, 1), (0, -1)]).tolist()
    [[[0, 1, 2]], [[2, 3, 0]]]
    """
    images = check_stack(images, "translate_batch")
    shifts = check_per_image(shifts_px, images.shape[0], "shifts_px", "translate_batch")

    def maps():
        return np.ones((len(shifts), 2)), np.stack([_translation(shift) for shift in shifts])

    return _batch_warp(translate, images, shifts, masks, maps, order, fill)


def scale_batch(images, factors, order: int = 1, fill=0, masks=None):
    """:func:`scale` of each image of a stack (B, H, W) by its own ``factors[b]`` (a number or a
    (rows, cols) pair), and of its mask when given (as :func:`rotate_batch`); the bytes of
    :func:`scale`.

    >>> bool((scale_batch(np.ones((2, 5, 5)), [1.0, 0.5], order=0)[1, 0] == 0).all())
    True
    """
    images = check_stack(images, "scale_batch")
    factors = check_per_image(factors, images.shape[0], "factors", "scale_batch")

    def maps():
        zooms = [_zoom(factor, images.shape[1:]) for factor in factors]
        return np.stack([diagonal for diagonal, _ in zooms]), np.stack([o for _, o in zooms])

    return _batch_warp(scale, images, factors, masks, maps, order, fill)


def rotate90_batch(images, k: int = 1):
    """:func:`rotate90` of every image of a stack (B, H, W) by the same ``k`` quarter turns:
    (B, W, H) for odd ``k``; exact, C-contiguous.

    >>> rotate90_batch(np.array([[[1, 2], [3, 4]]]), 1).tolist()
    [[[2, 4], [1, 3]]]
    """
    images = check_stack(images, "rotate90_batch")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer number of quarter turns, got {k!r}")
    xp = get_array_module(images)
    return xp.ascontiguousarray(xp.rot90(images, int(k) % 4, axes=(1, 2)))


def flip_batch(images, axis, masks=None):
    """:func:`flip` of every image of a stack (B, H, W) about the same ``axis``; exact.

    With ``masks`` (B, H, W) bool or uint8, returns ``(images, masks)``, both flipped. On CuPy
    a stack of a dtype ``warp_affine`` reads (uint8, bool, float32, float64) is flipped with
    its masks in one launch of it: the map ``(row, W - 1 - col)`` (or ``(H - 1 - row, col)``)
    lands on whole pixels, which nearest sampling copies exactly; other dtypes, and NumPy, copy
    a reversed view.

    >>> flip_batch(np.array([[[1, 2], [3, 4]]]), "horizontal").tolist()
    [[[2, 1], [4, 3]]]
    """
    images = check_stack(images, "flip_batch")
    key = axis.lower() if isinstance(axis, str) else axis
    if isinstance(key, bool) or key not in _FLIP_AXES:
        raise ConfigError(f"axis must be 0, 1, 'vertical' or 'horizontal', got {axis!r}")
    if masks is not None:
        masks = _check_masks(masks, images, "flip_batch")
    xp = get_array_module(images)
    if is_cupy(images) and np.dtype(images.dtype) in _WARP_TYPES:
        count, height, width = images.shape
        flipped_axis = _FLIP_AXES[key]
        matrix = np.diag([-1.0, 1.0] if flipped_axis == 0 else [1.0, -1.0])
        offset = [height - 1.0, 0.0] if flipped_axis == 0 else [0.0, width - 1.0]
        out, masks_out = _warp_stack_cuda(images, np.repeat(matrix[None], count, 0),
                                          np.repeat(np.array([offset]), count, 0), 0, 0.0,
                                          masks)
        return out if masks is None else (out, masks_out)

    def flipped(stack):
        return xp.ascontiguousarray(xp.flip(stack, _FLIP_AXES[key] + 1))

    return flipped(images) if masks is None else (flipped(images), flipped(masks))
