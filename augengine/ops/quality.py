"""Image-quality degradations: Gaussian blur and JPEG re-encoding.

Seed 003 builds image-quality pseudo-labels from exactly these two degradations (original = 100,
JPEG-compressed = 60, Gaussian-blurred = 30); seed 004 uses a blur of 1.5 as an augmentation.
"""
from __future__ import annotations

import io

import numpy as np

from augengine._xp import get_array_module, is_cupy
from augengine.errors import ConfigError, InputError
from augengine.checks import check_image, check_number, check_per_image, check_stack
from augengine.ops._util import ndimage, restore_dtype, work_dtype


def gaussian_blur(image, sigma):
    """Blur an image with an isotropic Gaussian of standard deviation ``sigma`` pixels.

    Parameters
    ----------
    image : ndarray (H, W), any real dtype or bool
    sigma : float
        Standard deviation in pixels, >= 0 (0 returns an unchanged copy).

    Returns
    -------
    ndarray (H, W), same dtype
        ``out = image * G_sigma`` with ``G_sigma(y, x) = exp(-(x^2 + y^2) / (2 sigma^2))``
        normalised to sum 1 and truncated at 4 sigma, applied separably; borders are mirrored
        (``scipy.ndimage`` mode ``"reflect"``). Computed in float32 (float64 for float64 input);
        integers are rounded half to even and clipped back to their range.

    Raises
    ------
    ConfigError
        ``sigma`` negative or not finite.
    InputError
        Image not 2-D, empty or not numeric.

    Examples
    --------
    >>> image = np.zeros((9, 9), np.uint8); image[4, 4] = 255
    >>> gaussian_blur(image, 1.0)[4, 2:7]       # 255 * g(0) * [g(2), g(1), g(0), g(1), g(2)]
    array([ 5, 25, 41, 25,  5], dtype=uint8)
    """
    image = check_image(image, "gaussian_blur")
    sigma = check_number(sigma, "sigma")
    if sigma < 0:
        raise ConfigError(f"sigma must be >= 0 pixels, got {sigma}")
    xp = get_array_module(image)
    work = image.astype(work_dtype(image.dtype))
    blurred = ndimage(xp).gaussian_filter(work, sigma, mode="reflect", truncate=4.0)
    return restore_dtype(blurred, image.dtype)


def jpeg(image, quality):
    """Re-encode a grey image as JPEG in memory and decode it again.

    Parameters
    ----------
    image : ndarray (H, W) of uint8
        Grey levels.
    quality : int
        libjpeg quality 1..95 (1 worst; above 95 the encoder's own docs advise against it).

    Returns
    -------
    ndarray (H, W) of uint8
        The decoded image: blocking and ringing artefacts of 8x8 DCT quantisation that grow as
        ``quality`` falls. Deterministic: the same input and quality give the same bytes (PIL's
        baseline encoder, no optimisation pass). CuPy input is encoded on the host and returned
        as CuPy.

    Raises
    ------
    ConfigError
        ``quality`` not an integer in 1..95.
    InputError
        Image not 2-D uint8.

    Examples
    --------
    >>> image = np.full((16, 16), 128, np.uint8)
    >>> np.array_equal(jpeg(image, 60), image)    # a flat image survives JPEG exactly
    True
    """
    from PIL import Image

    image = check_image(image, "jpeg")
    if image.dtype != np.uint8:
        raise InputError(f"jpeg: image must be uint8 grey levels, got dtype {image.dtype}")
    is_integer = isinstance(quality, (int, np.integer)) and not isinstance(quality, bool)
    if not is_integer or not 1 <= quality <= 95:
        raise ConfigError(f"quality must be an integer in 1..95, got {quality!r}")
    host = image.get() if is_cupy(image) else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(host)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        result = np.asarray(decoded.convert("L"))
    return get_array_module(image).asarray(result)


def gaussian_blur_batch(images, sigmas):
    """:func:`gaussian_blur` of each image of a stack (B, H, W) with its own ``sigmas[b]``.

    Parameters
    ----------
    images : ndarray (B, H, W), any real dtype or bool
    sigmas : sequence of B floats
        Standard deviations in pixels, each >= 0.

    Returns
    -------
    ndarray (B, H, W), same dtype
        Image for image the bytes of :func:`gaussian_blur`.

    Notes
    -----
    One separable filter call per distinct sigma, on the images that share it, with sigma
    ``(0, s, s)``: scipy.ndimage skips an axis of sigma 0, and filters the other two line by line
    exactly as it filters a single image. Draws from a continuous range make every sigma
    distinct, so such a batch costs one call per image.

    Examples
    --------
    >>> stack = np.zeros((2, 9, 9), np.uint8); stack[:, 4, 4] = 255
    >>> gaussian_blur_batch(stack, [0.0, 1.0])[:, 4, 4].tolist()
    [255, 41]
    """
    images = check_stack(images, "gaussian_blur_batch")
    sigmas = [check_number(s, "sigma") for s in check_per_image(sigmas, images.shape[0], "sigmas",
                                                      "gaussian_blur_batch")]
    if min(sigmas) < 0:
        raise ConfigError(f"sigma must be >= 0 pixels, got {min(sigmas)}")
    xp = get_array_module(images)
    work = images.astype(work_dtype(images.dtype))
    blurred = xp.empty_like(work)
    for sigma in sorted(set(sigmas)):
        chosen = [b for b, s in enumerate(sigmas) if s == sigma]
        picked = xp.asarray(np.array(chosen, dtype=np.int64))
        blurred[picked] = ndimage(xp).gaussian_filter(work[picked], (0.0, sigma, sigma),
                                                       mode="reflect", truncate=4.0)
    return restore_dtype(blurred, images.dtype)


def jpeg_batch(images, qualities):
    """:func:`jpeg` of each image of a stack (B, H, W) of uint8 with its own ``qualities[b]``.

    PIL encodes one image at a time, so this is a loop on the host; a CuPy stack crosses to the
    host and back once for the whole batch rather than once per image.

    >>> out = jpeg_batch(np.full((2, 16, 16), 128, np.uint8), [10, 90])
    >>> out.shape, int(out.min()), int(out.max())
    ((2, 16, 16), 128, 128)
    """
    images = check_stack(images, "jpeg_batch")
    qualities = check_per_image(qualities, images.shape[0], "qualities", "jpeg_batch")
    host = images.get() if is_cupy(images) else images
    result = np.stack([jpeg(image, quality) for image, quality in zip(host, qualities)])
    return get_array_module(images).asarray(result)
