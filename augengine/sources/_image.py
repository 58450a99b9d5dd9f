"""Grey-level conversion shared by the image readers (BUSI PNGs, DICOM frames)."""
from __future__ import annotations

import numpy as np

from augengine.errors import InputError

#: ITU-R BT.601 luma weights for R, G, B (the same weights Pillow's ``convert("L")`` uses).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def to_gray_uint8(pixels: np.ndarray, max_value: int, where_: str) -> np.ndarray:
    """Grey uint8 image from grey, grey+alpha, RGB or RGBA pixels of any unsigned bit depth.

    Colour becomes luma, ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601); alpha is dropped
    (ultrasound images are opaque). Levels are then mapped linearly from ``[0, max_value]`` to
    ``[0, 255]``: ``round(Y * 255 / max_value)``, so a 16-bit image (``max_value = 65535``)
    becomes ``round(Y / 257)`` and 8-bit images are unchanged.

    Parameters
    ----------
    pixels : ndarray (H, W) or (H, W, C), C in {1, 2, 3, 4}, unsigned integers or bool
        C = 2 is grey + alpha, C = 4 is RGBA.
    max_value : int
        The white level of the stored bit depth (255, 65535, ``2**BitsStored - 1``).
    where_ : str
        Names the file in error messages.

    Returns
    -------
    ndarray (H, W) uint8

    Example
    -------
    >>> to_gray_uint8(np.array([[0, 257, 65535]], np.uint16), 65535, "x.png")
    array([[  0,   1, 255]], dtype=uint8)
    """
    if pixels.dtype == np.bool_:
        pixels, max_value = pixels.astype(np.uint8), 1
    if pixels.dtype.kind not in "iu":
        raise InputError(f"{where_}: unsupported pixel type {pixels.dtype}; expected 8- or "
                         f"16-bit integers")
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2):
        pixels = pixels[:, :, 0]
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[:, :, :3] @ LUMA_WEIGHTS
    elif pixels.ndim != 2:
        raise InputError(f"{where_}: expected a grey or colour image, got pixel array of shape "
                         f"{pixels.shape}")
    low, high = pixels.min(initial=0), pixels.max(initial=0)
    if low < 0 or high > max_value + 0.5:
        raise InputError(f"{where_}: pixel values span [{low}, {high}], outside the stored "
                         f"range [0, {max_value}]")
    if max_value == 255 and pixels.dtype == np.uint8:
        return pixels
    return np.rint(pixels * (255.0 / max_value)).astype(np.uint8)
