"""Relevance heatmaps as RGB images: red where pixels speak for the explained class, blue where
they speak against it, over the grey ultrasound image (seed 002, Fig. 3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from augengine.errors import InputError

__all__ = ["relevance_heatmap", "save_heatmap_png"]

_RED = np.array([1.0, 0.0, 0.0])
_BLUE = np.array([0.0, 0.0, 1.0])


def _to_numpy(array, what: str) -> np.ndarray:
    """A NumPy array from a NumPy, CuPy or torch array (heatmaps are written on the host)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    elif hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        array = array.get()
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{what} must be numeric, got dtype {array.dtype}")
    return array


def relevance_heatmap(relevance, image=None) -> np.ndarray:
    """Colour a relevance map: red for positive, blue for negative, blended over the grey image.

    With ``r = R / max|R|`` in [-1, 1] and grey level ``g`` in [0, 1] (white when no image),
    each pixel is ``(1 - |r|) * (g, g, g) + |r| * colour``, colour red for ``r > 0`` and blue for
    ``r < 0``: irrelevant pixels show the image, the most relevant ones pure red or blue.

    Parameters
    ----------
    relevance : array (H, W) or (C, H, W); NumPy, CuPy or torch
        LRP relevance of one image (:func:`augengine.explain.lrp` output of one sample); channels
        are summed into one value per pixel.
    image : array (H, W), optional
        Grey image: uint8 (0..255) or floats in [0, 1].

    Returns
    -------
    ndarray (H, W, 3) uint8
        RGB heatmap.

    Raises
    ------
    InputError
        Wrong rank, non-finite relevance, or an image of another size.

    Example
    -------
    >>> relevance_heatmap(np.array([[1.0, -1.0], [0.0, 0.25]]))[..., 0]
    array([[255,   0],
           [255, 255]], dtype=uint8)
    """
    r = _to_numpy(relevance, "relevance").astype(np.float64)
    if r.ndim == 3:
        r = r.sum(axis=0)
    if r.ndim != 2:
        raise InputError(f"relevance must be (H, W) or (C, H, W), got shape {r.shape}")
    if not np.isfinite(r).all():
        raise InputError("relevance contains NaN or Inf")
    peak = np.abs(r).max()
    r = r / peak if peak > 0 else r

    if image is None:
        grey = np.ones_like(r)
    else:
        raw = _to_numpy(image, "image")
        if raw.shape != r.shape:
            raise InputError(f"image shape {raw.shape} does not match relevance shape {r.shape}")
        grey = np.clip(raw / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float64), 0.0, 1.0)

    weight = np.abs(r)[..., None]
    colour = np.where((r > 0)[..., None], _RED, _BLUE)
    rgb = (1.0 - weight) * grey[..., None] + weight * colour
    return np.round(rgb * 255.0).astype(np.uint8)


def save_heatmap_png(path, relevance, image=None) -> Path:
    """Write :func:`relevance_heatmap` of ``relevance`` (over ``image``) as a PNG file.

    Parameters
    ----------
    path : str or Path
        Output file; its folder must exist.
    relevance, image
        As for :func:`relevance_heatmap`.

    Returns
    -------
    Path
        ``path``.

    Example
    -------
    >>> save_heatmap_png("case7_lrp.png", relevance[0], image=grey_uint8)  # doctest: +SKIP
    """
    from PIL import Image

    path = Path(path)
    rgb = relevance_heatmap(relevance, image)
    try:
        Image.fromarray(rgb).save(path, format="PNG")
    except OSError as error:
        raise InputError(f"{path}: cannot write heatmap PNG ({error.strerror or error})") from None
    return path
