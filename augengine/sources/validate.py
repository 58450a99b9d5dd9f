"""Checks every reader applies to each sample it loads, so bad data fails early with one line.

The runner calls :func:`validate_sample` too, on samples that came from elsewhere. Every failure
is an :class:`~augengine.errors.InputError` whose message starts with the file and the sample id,
e.g. ``"data/x.mat: sample 'case7/rf1': RF is all zeros (Amax = 0)"``.
"""
from __future__ import annotations

import numpy as np

from augengine.errors import InputError
from augengine.sources._sample import LABEL_NAMES, LABELS, Sample

#: Label of a ``SampleRef`` whose label could not be read at discovery; loading it raises the
#: reason, so one bad sample does not hide the good ones of the same source.
UNKNOWN_LABEL = -1


def where(path, sample_id: str | None = None) -> str:
    """The prefix of every message about a sample: ``"<path>: sample '<id>'"``."""
    return f"{path}: sample {sample_id!r}" if sample_id is not None else str(path)


def parse_label(value, where_: str) -> int:
    """A label code from an int code (0, 1, 2) or a name (``"benign"``, ``"malignant"``, ...).

    Parameters
    ----------
    value : int, str, numpy scalar or 1-element array
        The stored label.
    where_ : str
        Names the file/sample in the error message.

    Returns
    -------
    int
        0 benign, 1 malignant, 2 normal (``LABELS``).

    Example
    -------
    >>> parse_label("malignant", "x.npz"), parse_label(np.array([[0.0]]), "x.mat")
    (1, 0)
    """
    item = value
    if isinstance(value, np.ndarray):
        item = value.item() if value.size == 1 else None
    if isinstance(item, bytes):
        item = item.decode(errors="replace")
    if isinstance(item, str):
        name = item.strip().lower()
        if name in LABELS:
            return LABELS[name]
        if name.isdigit():
            item = int(name)
    if isinstance(item, (bool, np.bool_)):
        item = None
    if isinstance(item, (int, float, np.integer, np.floating)) and float(item) in LABEL_NAMES:
        return int(item)
    allowed = ", ".join(f"{code} ({name})" for code, name in LABEL_NAMES.items())
    raise InputError(f"{where_}: label must be one of {allowed}, got {_short(value)}")


def check_rf(rf, where_: str) -> np.ndarray:
    """Check raw RF: a 2-D (depth, lines) array of finite real numbers, not all zero.

    Parameters
    ----------
    rf : ndarray (depth, lines)
        Raw RF, time along axis 0, integer or floating dtype.
    where_ : str
        Names the file/sample in the error message.

    Returns
    -------
    ndarray
        ``rf`` itself.

    Raises
    ------
    InputError
        Not an array, wrong dtype (complex, string, bool, object), rank != 2, empty, NaN/Inf,
        or all zeros (then ``Amax = 0`` and the log compression ``20 log10(A / Amax)`` of the
        OASBUD B-mode reconstruction is undefined).

    Example
    -------
    >>> check_rf(np.ones((4, 3), np.int16), "x.npz").shape
    (4, 3)
    """
    if not isinstance(rf, np.ndarray):
        raise InputError(f"{where_}: RF must be an array, got {type(rf).__name__}")
    if rf.dtype.kind not in "iuf":
        raise InputError(f"{where_}: RF has dtype {rf.dtype}; expected real integers or floats")
    if rf.ndim != 2:
        raise InputError(f"{where_}: RF must be 2-D (depth samples, lines), got shape {rf.shape}")
    if rf.size == 0:
        raise InputError(f"{where_}: RF is empty (shape {rf.shape})")
    if rf.dtype.kind == "f" and not np.isfinite(rf).all():
        bad = int(np.count_nonzero(~np.isfinite(rf)))
        raise InputError(f"{where_}: RF contains {bad} NaN/Inf values")
    if not rf.any():
        raise InputError(f"{where_}: RF is all zeros (Amax = 0)")
    return rf


def check_image(image, where_: str) -> np.ndarray:
    """Check a B-mode image: 2-D uint8 (H, W), non-empty."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        got = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise InputError(f"{where_}: image must be a 2-D uint8 array, got {got}")
    if image.size == 0:
        raise InputError(f"{where_}: image is empty (shape {image.shape})")
    return image


def as_roi(roi, shape: tuple[int, ...], where_: str) -> np.ndarray:
    """A stored ROI (0/1 numbers or bool) as a bool mask, checked against the data shape.

    Example
    -------
    >>> as_roi(np.array([[0, 1], [1, 0]], np.uint8), (2, 2), "x").dtype
    dtype('bool')
    """
    if not isinstance(roi, np.ndarray) or roi.dtype.kind not in "biuf":
        kind = roi.dtype if isinstance(roi, np.ndarray) else type(roi).__name__
        raise InputError(f"{where_}: ROI has type {kind}; expected a 0/1 or bool mask")
    if roi.shape != tuple(shape):
        raise InputError(f"{where_}: ROI shape {roi.shape} differs from data shape {tuple(shape)}")
    if roi.dtype.kind == "f" and not np.isfinite(roi).all():
        raise InputError(f"{where_}: ROI contains NaN/Inf values")
    return roi != 0


def validate_sample(sample: Sample) -> Sample:
    """Check one sample as the engine needs it; return it unchanged or raise ``InputError``.

    Checks: exactly one of ``rf``/``image``; RF per :func:`check_rf` with ``meta["fs_hz"] > 0``;
    image 2-D uint8; ROI, if any, bool with the data's shape; label in ``LABELS``.

    Parameters
    ----------
    sample : Sample

    Returns
    -------
    Sample
        The same object.

    Example
    -------
    >>> s = Sample("a", "a", 0, rf=np.ones((8, 4), np.int16), meta={"fs_hz": 40e6, "path": "a"})
    >>> validate_sample(s) is s
    True
    """
    at = where(sample.meta.get("path", "<memory>"), sample.sample_id)
    if (sample.rf is None) == (sample.image is None):
        raise InputError(f"{at}: exactly one of rf and image must be set")
    if sample.label not in LABEL_NAMES:
        raise InputError(f"{at}: label must be one of {sorted(LABEL_NAMES)}, got {sample.label!r}")
    if sample.rf is not None:
        data = check_rf(sample.rf, at)
        fs = sample.meta.get("fs_hz")
        if not isinstance(fs, (int, float, np.integer, np.floating)) or not np.isfinite(fs) \
                or fs <= 0:
            raise InputError(f"{at}: sampling frequency fs_hz must be > 0, got {fs!r}")
    else:
        data = check_image(sample.image, at)
    if sample.roi is not None:
        if not isinstance(sample.roi, np.ndarray) or sample.roi.dtype != np.bool_:
            raise InputError(f"{at}: ROI must be a bool array")
        if sample.roi.shape != data.shape:
            raise InputError(f"{at}: ROI shape {sample.roi.shape} differs from data shape "
                             f"{data.shape}")
    return sample


def _short(value) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."
