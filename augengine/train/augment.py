"""Training-time geometric augmentation: sampled parameters, one affine matrix, two executors.

One random geometry per sample and epoch (flips, a rot90, a small rotation/scale/translation, and
the resize to the network's input size) is composed into a single 2x3 matrix, so one warp does
all of it: DALI's ``fn.warp_affine`` in :mod:`augengine.train.loader`, or :func:`warp_affine`
(``torch.nn.functional.affine_grid`` + ``grid_sample``) here for the PyTorch baseline. Both read
the same matrices, so the two loaders apply identical augmentations, and a run can be replayed
from ``(seed, epoch, sample index)`` alone.

The augmentations are those of the seeds: random rot90 and horizontal/vertical flips on
224 x 224 inputs (seed 000), plus the small affine (rotation, scaling, translation) of seed 004.

Coordinates are continuous pixel coordinates ``(x, y)`` = (column, row) with ``(0, 0)`` at the
corner of the first pixel, so the centre of pixel ``[i, j]`` is ``(j + 0.5, i + 0.5)``: DALI's and
OpenCV's ``warpAffine`` convention, and ``align_corners=False`` in PyTorch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from augengine.errors import ConfigError, InputError
from augengine.models.features import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "GREY_MEAN",
    "GREY_STD",
    "GeometryRange",
    "geometry_matrix",
    "identity_geometry",
    "normalization_stats",
    "normalize",
    "sample_geometry",
    "sample_rng",
    "warp_affine",
]

#: One-channel statistics: the average of ImageNet's three (for ``channels=1`` networks).
GREY_MEAN = (0.449,)
GREY_STD = (0.226,)

# Forward (source -> destination) rot90 by k quarter turns counter-clockwise, as np.rot90(a, k),
# in (x right, y down) coordinates; exact integers so nearest sampling of masks stays exact.
_ROT90 = tuple(np.linalg.matrix_power(np.array([[0, 1], [-1, 0]]), k) for k in range(4))


class GeometryRange:
    """Ranges of the random geometry drawn per sample (parameters only; no state).

    Parameters
    ----------
    flips : bool
        Horizontal and vertical flip, each with probability 1/2 (seeds 000, 004).
    rot90 : bool
        Rotation by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3} (seeds 000, 004). With
        ``flips`` this is uniform over the 8 symmetries of the square.
    max_rotation_deg : float
        Extra rotation uniform in ``[-max, max]`` degrees, about the image centre.
    scale_range : (float, float)
        Isotropic zoom factor uniform in ``[lo, hi]`` (> 0); 1 keeps the size.
    max_translate : float
        Shift uniform in ``[-max, max]`` times the output size, per axis (seed 004 shifts ROIs by
        20 pixels, about 0.1 of 224).

    Examples
    --------
    >>> GeometryRange(max_rotation_deg=0).max_rotation_deg
    0.0
    """

    def __init__(self, flips: bool = True, rot90: bool = True, max_rotation_deg: float = 10.0,
                 scale_range: tuple[float, float] = (0.9, 1.1), max_translate: float = 0.1):
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ConfigError(f"scale_range must be 0 < lo <= hi, got ({lo:g}, {hi:g})")
        if not 0 <= max_rotation_deg <= 180:
            raise ConfigError(f"max_rotation_deg must be in [0, 180], got {max_rotation_deg}")
        if not 0 <= max_translate < 1:
            raise ConfigError(f"max_translate must be in [0, 1) of the output size, "
                              f"got {max_translate}")
        self.flips, self.rot90 = bool(flips), bool(rot90)
        self.max_rotation_deg = float(max_rotation_deg)
        self.scale_range = (lo, hi)
        self.max_translate = float(max_translate)

    def __repr__(self) -> str:
        return (f"GeometryRange(flips={self.flips}, rot90={self.rot90}, "
                f"max_rotation_deg={self.max_rotation_deg:g}, scale_range={self.scale_range}, "
                f"max_translate={self.max_translate:g})")


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """One sample's augmentation generator in one epoch: ``default_rng((seed, epoch, index))``.

    Keyed by the store index, not by position, rank or worker, so a sample gets the same
    augmentation whatever the world size, batch size or loader (DALI or PyTorch).

    Examples
    --------
    >>> float(sample_rng(0, 1, 7).random()) == float(sample_rng(0, 1, 7).random())
    True
    """
    return np.random.default_rng((int(seed), int(epoch), int(index)))


def identity_geometry() -> dict:
    """Parameters of no augmentation (evaluation): only the resize to the output size remains."""
    return {"flip_horizontal": False, "flip_vertical": False, "rot90_k": 0, "angle_deg": 0.0,
            "scale": 1.0, "translate_x": 0.0, "translate_y": 0.0}


def sample_geometry(rng: np.random.Generator, ranges: GeometryRange | None = None) -> dict:
    """Draw one sample's geometry from ``ranges`` (sampling only; apply with a matrix).

    Parameters
    ----------
    rng : numpy.random.Generator
        The sample's own generator, e.g. :func:`sample_rng`; draws are made in a fixed order.
    ranges : GeometryRange, optional
        Default ``GeometryRange()``: flips, rot90, +-10 degrees, zoom 0.9-1.1, shift +-0.1.

    Returns
    -------
    dict
        ``flip_horizontal``, ``flip_vertical`` (bool), ``rot90_k`` (int 0-3), ``angle_deg``
        (degrees, counter-clockwise), ``scale`` (factor), ``translate_x``, ``translate_y``
        (fractions of the output width/height), JSON-ready, as :func:`identity_geometry`.

    Examples
    --------
    >>> params = sample_geometry(sample_rng(0, 0, 3), GeometryRange(max_rotation_deg=0))
    >>> params["angle_deg"], params["rot90_k"] in (0, 1, 2, 3)
    (0.0, True)
    """
    ranges = ranges or GeometryRange()
    flip_h, flip_v = (bool(v) for v in rng.random(2) < 0.5)
    k = int(rng.integers(0, 4))
    angle, scale, tx, ty = rng.uniform(
        [-ranges.max_rotation_deg, ranges.scale_range[0], -ranges.max_translate,
         -ranges.max_translate],
        [ranges.max_rotation_deg, ranges.scale_range[1], ranges.max_translate,
         ranges.max_translate])
    return {"flip_horizontal": flip_h and ranges.flips, "flip_vertical": flip_v and ranges.flips,
            "rot90_k": k if ranges.rot90 else 0, "angle_deg": float(angle), "scale": float(scale),
            "translate_x": float(tx), "translate_y": float(ty)}


def geometry_matrix(params: dict, in_shape: tuple[int, int], out_shape: tuple[int, int]
                    ) -> np.ndarray:
    """The 2x3 matrix mapping output pixel coordinates to input coordinates for ``params``.

    The forward map (input -> output) about the centres ``c_in = (W/2, H/2)`` and
    ``c_out = (w/2, h/2)`` is

    ``p_out = c_out + t + s R(theta) R90^k F Z (p_in - c_in)``

    with ``Z = diag(w/W, h/H)`` the resize, ``F = diag(+-1, +-1)`` the flips,
    ``R90^k`` ``k`` exact quarter turns and ``R(theta)`` the small rotation (both
    counter-clockwise on screen, as ``numpy.rot90``), ``s`` the zoom and
    ``t = (t_x w, t_y h)`` the shift in pixels. Returned is its inverse,
    ``p_in = A p_out + b`` with ``A = Z^-1 F R90^-k R(-theta) / s`` and
    ``b = c_in - A (c_out + t)``: what a warp samples for every output pixel.

    Parameters
    ----------
    params : dict
        As from :func:`sample_geometry` or :func:`identity_geometry`.
    in_shape, out_shape : (int, int)
        ``(height, width)`` of the stored image and of the network input, pixels. Quarter turns
        are exact only for a square ``out_shape``.

    Returns
    -------
    ndarray (2, 3) float32
        ``[[A11, A12, b1], [A21, A22, b2]]``, the ``matrix`` of DALI's ``warp_affine``
        (``inverse_map=True``) and of :func:`warp_affine`.

    Examples
    --------
    >>> flip = dict(identity_geometry(), flip_horizontal=True)
    >>> geometry_matrix(flip, (4, 6), (4, 6)).tolist()       # x_in = 6 - x_out
    [[-1.0, 0.0, 6.0], [0.0, 1.0, 0.0]]
    """
    (in_h, in_w), (out_h, out_w) = in_shape, out_shape
    theta = np.deg2rad(params["angle_deg"])
    cos, sin = np.cos(theta), np.sin(theta)
    rotate_back = np.array([[cos, -sin], [sin, cos]])            # R(-theta)
    unturn = _ROT90[(-int(params["rot90_k"])) % 4]
    unflip = np.diag([-1.0 if params["flip_horizontal"] else 1.0,
                      -1.0 if params["flip_vertical"] else 1.0])
    unzoom = np.diag([in_w / out_w, in_h / out_h])
    linear = unzoom @ unflip @ unturn @ rotate_back / params["scale"]
    shift = np.array([out_w / 2 + params["translate_x"] * out_w,
                      out_h / 2 + params["translate_y"] * out_h])
    offset = np.array([in_w / 2, in_h / 2]) - linear @ shift
    return np.concatenate([linear, offset[:, None]], axis=1).astype(np.float32)


def warp_affine(images: torch.Tensor, matrices: torch.Tensor, out_shape: tuple[int, int],
                mode: str = "bilinear") -> torch.Tensor:
    """Warp a batch with per-sample pixel matrices (the PyTorch twin of DALI's ``warp_affine``).

    Each output pixel centre ``p`` samples the input at ``A p + b`` (:func:`geometry_matrix`),
    outside the image reads 0. The pixel matrix is converted to ``affine_grid``'s normalised
    one, ``theta = N_in M N_out^-1`` with ``N(x) = 2 x / size - 1`` (``align_corners=False``).

    Parameters
    ----------
    images : Tensor (B, C, H, W), floating point
        Any device.
    matrices : Tensor (B, 2, 3)
        Output-to-input pixel matrices.
    out_shape : (int, int)
        Output ``(height, width)``, pixels.
    mode : {"bilinear", "nearest"}
        ``"nearest"`` for masks, so labels are never blended.

    Returns
    -------
    Tensor (B, C, h, w)
        Same dtype and device as ``images``.

    Examples
    --------
    >>> x = torch.arange(6.0).view(1, 1, 2, 3)
    >>> m = torch.tensor([[[-1.0, 0.0, 3.0], [0.0, 1.0, 0.0]]])   # horizontal flip
    >>> warp_affine(x, m, (2, 3))[0, 0].tolist()
    [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]
    """
    if mode not in ("bilinear", "nearest"):
        raise ConfigError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if images.ndim != 4 or matrices.shape != (images.shape[0], 2, 3):
        raise InputError(f"warp_affine expects images (B, C, H, W) and matrices (B, 2, 3), "
                         f"got {tuple(images.shape)} and {tuple(matrices.shape)}")
    in_h, in_w = images.shape[-2:]
    out_h, out_w = out_shape
    dtype, device = images.dtype, images.device
    to_unit_in = torch.tensor([[2 / in_w, 0, -1], [0, 2 / in_h, -1], [0, 0, 1]],
                              dtype=torch.float64, device=device)
    from_unit_out = torch.tensor([[out_w / 2, 0, out_w / 2], [0, out_h / 2, out_h / 2], [0, 0, 1]],
                                 dtype=torch.float64, device=device)
    square = torch.zeros((matrices.shape[0], 3, 3), dtype=torch.float64, device=device)
    square[:, :2] = matrices.to(device=device, dtype=torch.float64)
    square[:, 2, 2] = 1
    theta = (to_unit_in @ square @ from_unit_out)[:, :2].to(dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_h, out_w],
                         align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def normalization_stats(channels: int, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None) -> tuple[tuple, tuple]:
    """Per-channel ``(mean, std)`` in [0, 1] units, checked; defaults: ImageNet (3) or grey (1).

    Examples
    --------
    >>> normalization_stats(1)
    ((0.449,), (0.226,))
    """
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3 (grey replicated to RGB), got {channels}")
    mean = tuple(float(v) for v in (mean if mean is not None else
                                    (IMAGENET_MEAN if channels == 3 else GREY_MEAN)))
    std = tuple(float(v) for v in (std if std is not None else
                                   (IMAGENET_STD if channels == 3 else GREY_STD)))
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"mean and std need {channels} value(s) each, got {len(mean)} and "
                          f"{len(std)}")
    if not all(s > 0 for s in std):
        raise ConfigError(f"std must be > 0, got {std}")
    return mean, std


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Grey levels to network input, ``y_c = (x / 255 - mean_c) / std_c``, grey copied to C.

    Parameters
    ----------
    images : Tensor (B, 1, H, W), floating point
        Grey levels in [0, 255].
    mean, std : sequence of float, length C (1 or 3)
        In [0, 1] units, as from :func:`normalization_stats`.

    Returns
    -------
    Tensor (B, C, H, W) float32

    Examples
    --------
    >>> normalize(torch.full((1, 1, 1, 1), 255.0), (0.5,), (0.5,)).item()
    1.0
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise InputError(f"normalize expects grey images (B, 1, H, W), got {tuple(images.shape)}")
    shape = (1, len(mean), 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return (images.float().expand(-1, len(mean), -1, -1) / 255 - mean_t) / std_t
