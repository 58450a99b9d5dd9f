"""Low/high-resolution pairs for the super-resolution job (seed 004), made from a store's images.

A high-resolution image ``x`` (grey, in [0, 1]) becomes its low-resolution partner by

    y = Q(D_s(G_sigma * x) + n),   n ~ Normal(0, (noise_std / 255)^2) per pixel

``G_sigma``: the Gaussian blur of :func:`augengine.ops.gaussian_blur` (optional, sigma in
high-resolution pixels); ``D_s``: bicubic downscaling by ``s`` with the project's
:func:`augengine.ops.resize` (Keys' cubic kernel, ``a = -0.5``, stretched by ``s`` so that it
antialiases, as ``PIL.Image.resize(BICUBIC)`` and MATLAB's ``imresize``, the degradation of the
EDSR and RDN benchmarks); ``Q``: rounding to 8-bit grey levels, as a stored low-resolution image
would be. The bicubic baseline upscales ``y`` with the same op.

``sigma`` and ``noise_std`` are drawn per sample, uniformly in ``[0, max]``, from a generator
keyed by ``(seed, store row)``, with the seed of the noise: any pair can be rebuilt from the
recorded values, on any rank count or batch size.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from augengine import ops
from augengine.checks import check_number
from augengine.errors import ConfigError

__all__ = ["Degradation", "bicubic_upscale", "draw_degradation", "low_resolution"]

# Mixed into the draw so it never coincides with another stream of the same seed.
_STREAM = zlib.crc32(b"augengine.train.superres.draw_degradation")


@dataclass(frozen=True)
class Degradation:
    """One sample's degradation (recorded in the run's ``metrics.json``).

    Attributes
    ----------
    blur_sigma : float
        Gaussian standard deviation, high-resolution pixels (0: no blur).
    noise_std : float
        Standard deviation of the added noise, grey levels of 255 (0: none).
    noise_seed : int
        Seed of the noise generator.
    """

    blur_sigma: float
    noise_std: float
    noise_seed: int


def draw_degradation(seed: int, index: int, max_blur_sigma: float = 0.0,
                     max_noise_std: float = 0.0) -> Degradation:
    """The degradation of store row ``index``: ``U(0, max)`` draws from
    ``default_rng((seed, index, stream))``.

    Examples
    --------
    >>> draw_degradation(0, 7, 2.0, 5.0) == draw_degradation(0, 7, 2.0, 5.0)
    True
    >>> draw_degradation(0, 7).blur_sigma, draw_degradation(0, 7).noise_std
    (0.0, 0.0)
    """
    max_blur_sigma = check_number(max_blur_sigma, "max_blur_sigma", nonnegative=True)
    max_noise_std = check_number(max_noise_std, "max_noise_std", nonnegative=True)
    rng = np.random.default_rng((int(seed), int(index), _STREAM))
    sigma, noise, noise_seed = rng.random(), rng.random(), rng.integers(2**63)
    return Degradation(float(sigma * max_blur_sigma), float(noise * max_noise_std),
                       int(noise_seed))


def low_resolution(image: np.ndarray, scale: int, degradation: Degradation) -> np.ndarray:
    """The low-resolution partner ``y`` of a high-resolution image (module docstring).

    Parameters
    ----------
    image : ndarray (H, W) float
        In [0, 1]; ``H`` and ``W`` divisible by ``scale``.
    scale : int
        ``s`` >= 2.
    degradation : Degradation

    Returns
    -------
    ndarray (H / s, W / s) float32
        Multiples of 1/255 in [0, 1].

    Examples
    --------
    >>> low_resolution(np.full((8, 6), 0.5), 2, Degradation(0.0, 0.0, 0)).shape
    (4, 3)
    """
    height, width = image.shape
    if height % scale or width % scale:
        raise ConfigError(f"image sides {height}x{width} must be divisible by the scale {scale}")
    work = np.asarray(image, dtype=np.float32)
    if degradation.blur_sigma > 0:
        work = ops.gaussian_blur(work, degradation.blur_sigma)
    small = ops.resize(work, (height // scale, width // scale), order=3)
    if degradation.noise_std > 0:
        noise = np.random.default_rng(degradation.noise_seed).standard_normal(small.shape)
        small = small + (degradation.noise_std / 255.0) * noise
    return (np.clip(np.round(small * 255.0), 0, 255) / 255.0).astype(np.float32)


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: :func:`augengine.ops.resize` (bicubic) by ``scale``, clipped to [0, 1].

    Examples
    --------
    >>> bicubic_upscale(np.full((4, 3), 0.25, np.float32), 3).shape
    (12, 9)
    """
    height, width = image.shape
    up = ops.resize(np.asarray(image, dtype=np.float32), (height * scale, width * scale), order=3)
    return np.clip(up, 0.0, 1.0)
