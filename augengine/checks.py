"""Argument checks shared by every layer: one home, one wording (cf. cupyx's ``_util.py``,
kornia's ``core/check.py``).

Each check returns the value in the type the caller computes with (``int``, ``float``, an array
of its own module) or raises one line naming the argument: :class:`~augengine.errors.ConfigError`
for a setting, :class:`~augengine.errors.InputError` for data. Both are ``ValueError``s. A caller
that needs a bound this module does not know writes its own check, worded the same way.

Torch is looked up only when the caller has already imported it (:func:`describe`,
:func:`check_tensor`), so the ops, which run on NumPy and CuPy alone, import this module freely.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from augengine._xp import is_cupy
from augengine.errors import ConfigError, InputError


def _shown(value) -> str:
    """``repr`` of a value for a message; NumPy scalars shown as the Python number they hold."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) with ``low <= value < high``.

    Examples
    --------
    >>> check_int(3, "batch_size", 1)
    3
    >>> check_int(2, "rank", 0, 2)
    Traceback (most recent call last):
    ...
    augengine.errors.ConfigError: rank must be an integer >= 0 and < 2, got 2
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or (low is not None and value < low) or (high is not None and value >= high):
        bounds = [f">= {low}"] * (low is not None) + [f"< {high}"] * (high is not None)
        bound = (" " + " and ".join(bounds)) if bounds else ""
        raise ConfigError(f"{name} must be an integer{bound}, got {_shown(value)}")
    return int(value)


def check_positive_ints(**values) -> None:
    """Raise :class:`ConfigError` naming the first argument that is not an integer >= 1.

    Examples
    --------
    >>> check_positive_ints(depth=4, base_channels=64)
    >>> check_positive_ints(depth=0)
    Traceback (most recent call last):
    ...
    augengine.errors.ConfigError: depth must be an integer >= 1, got 0
    """
    for name, value in values.items():
        check_int(value, name, 1)


def check_number(value, name: str, *, positive: bool = False, nonnegative: bool = False,
                 unit: str | None = None) -> float:
    """``value`` as a finite ``float``; with ``positive`` it must be > 0, with ``nonnegative``
    >= 0. ``unit`` (e.g. ``"dB"``) is named in the message.

    Examples
    --------
    >>> check_number("2.5", "sigma")
    2.5
    >>> check_number(0, "time_step", positive=True)
    Traceback (most recent call last):
    ...
    augengine.errors.ConfigError: time_step must be a finite number > 0, got 0
    """
    bound = " > 0" if positive else " >= 0" if nonnegative else ""
    need = f"a finite number{bound}" + (f" ({unit})" if unit else "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {need}, got {_shown(value)}") from None
    if not math.isfinite(number) or (positive and number <= 0) or (nonnegative and number < 0):
        raise ConfigError(f"{name} must be {need}, got {_shown(value)}")
    return number


def check_in_range(value, name: str, low: float, high: float) -> float:
    """``value`` as a ``float`` if it is a real number (not a bool) in ``[low, high]``.

    Examples
    --------
    >>> check_in_range(1.5, "alpha", 0, 1)
    Traceback (most recent call last):
    ...
    augengine.errors.ConfigError: alpha must be a number in [0, 1], got 1.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not low <= value <= high:
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {_shown(value)}")
    return float(value)


def check_choice(value, name: str, choices: Sequence):
    """``value`` if it is one of ``choices``.

    Examples
    --------
    >>> check_choice("sum", "reduction", ("mean", "none"))
    Traceback (most recent call last):
    ...
    augengine.errors.ConfigError: reduction must be one of mean, none, got 'sum'
    """
    if isinstance(value, bool) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, "
                          f"got {_shown(value)}")
    return value


def check_image(image, op: str, what: str = "image", layout: str = "(H, W)"):
    """A non-empty bool/integer/float array of ``layout``'s rank (an image or mask ``(H, W)``,
    or a stack ``(B, H, W)``), as an array of its own module (NumPy or CuPy).

    Raises :class:`InputError` naming ``op``: ``"rotate: expected a 2-D image (H, W), got shape
    (3,)"``.
    """
    image = image if is_cupy(image) else np.asarray(image)
    if image.ndim != layout.count(",") + 1:
        raise InputError(f"{op}: expected {'a 2-D' if what == 'image' else 'a'} {what} "
                         f"{layout}, got shape {tuple(image.shape)}")
    if image.size == 0:
        raise InputError(f"{op}: {what} is empty, shape {tuple(image.shape)}")
    if np.dtype(image.dtype).kind not in "biuf":
        raise InputError(f"{op}: {what} must be bool, integer or float, got dtype {image.dtype}")
    return image


def check_stack(images, op: str):
    """:func:`check_image` for a stack ``(B, H, W)``."""
    return check_image(images, op, "stack", "(B, H, W)")


def check_per_image(values, count: int, name: str, op: str) -> list:
    """``values`` as a list, if it holds one value per image of a stack of ``count``."""
    if len(values) != count:
        raise ConfigError(f"{op}: {count} images but {len(values)} values of {name}")
    return list(values)


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def describe(value) -> str:
    """``"torch.float32 tensor of shape (1, 3, 8, 8)"`` for a tensor, else the type's name."""
    if _is_tensor(value):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_tensor(value, name: str, ndims: tuple[int, ...], layout: str) -> None:
    """Raise :class:`InputError` unless ``value`` is a non-empty floating tensor whose rank is
    one of ``ndims`` (``layout`` says what it holds, e.g. ``"(N, C, H, W)"``)."""
    if not _is_tensor(value) or value.ndim not in ndims or not value.is_floating_point() \
            or value.numel() == 0:
        raise InputError(f"{name}: expected a non-empty floating {layout} tensor, "
                         f"got {describe(value)}")
