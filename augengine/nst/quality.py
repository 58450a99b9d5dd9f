"""Per-sample quality checks of style-transfer results: structure kept, style taken on.

A styled image should keep its content image's structure (the lesion, its margins: SSIM to the
content image close to 1) and move towards its style image's texture statistics (the style
distance to the style image falls from "content vs style" to "result vs style").
:func:`assess_quality` returns both for a batch of pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from augengine.checks import check_number
from augengine.errors import ConfigError, InputError
from augengine.models import imagenet_normalize
from augengine.nst.feedforward import check_images
from augengine.nst.histogram import multi_reference_target
from augengine.nst.losses import mmd_poly_loss

__all__ = ["QualityScores", "assess_quality", "is_assessed", "ssim", "style_distance"]

#: Stabilising constants of SSIM, ``C1 = (K1 L)^2`` and ``C2 = (K2 L)^2`` (Wang et al. 2004).
_K1, _K2 = 0.01, 0.03


def is_assessed(job_seed: int, input_key: str, fraction: float) -> bool:
    """Whether the output made from plan row ``input_key`` gets a quality check: its own uniform
    draw in [0, 1), a hash of (job seed, row), falls below ``fraction``.

    A function of the job and the row alone, so the same rows are checked however the plan is
    cut into shards and batches, on any actor, on a resume. ``fraction`` 1 checks every row, 0
    none; a larger fraction checks a superset of a smaller one's rows.

    Examples
    --------
    >>> keys = [f"t{i}:0~t{j}:0" for i in range(20) for j in range(20)]
    >>> sum(is_assessed(7, key, 0.25) for key in keys)      # about 0.25 x 400
    85
    >>> is_assessed(7, keys[0], 1.0), is_assessed(7, keys[0], 0.0)
    (True, False)
    """
    digest = hashlib.sha256(f"{job_seed}\x00{input_key}\x00quality".encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 11) < fraction * 2**53


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    window = torch.exp(-offsets.square() / (2 * sigma**2))
    return window / window.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    r"""Mean structural similarity of each image pair (Wang et al. 2004).

    .. math:: \mathrm{SSIM}(x, y) = \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}
              {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}

    with local means, variances and covariance under a Gaussian window (``window_size`` 11,
    ``sigma`` 1.5 pixels, the paper's values), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` for the
    data range ``L``, evaluated where the window fits inside the image ("valid" positions) and
    averaged over them and over channels.

    Parameters
    ----------
    x, y : torch.Tensor (N, C, H, W), floating
        Images to compare, same shape; ``H, W >= window_size``.
    data_range : float, optional
        ``L``: max - min of the intensity scale (1 for [0, 1] images, 255 for 8-bit).
    window_size : int, optional
        Side of the Gaussian window in pixels, odd (default 11).
    sigma : float, optional
        Standard deviation of the window in pixels (default 1.5).

    Returns
    -------
    torch.Tensor (N,)
        Mean SSIM per pair, dimensionless, 1 for identical images; dtype of the inputs.

    References
    ----------
    Wang, Bovik, Sheikh & Simoncelli 2004. Image quality assessment: from error visibility to
    structural similarity. IEEE Trans. Image Process. 13(4), 600-612.

    Examples
    --------
    Two flat images, 0.5 and 0.25: only the luminance term differs from 1,
    ``(2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4) = 0.8001``.

    >>> import torch
    >>> ssim(torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), 0.25))
    tensor([0.8001])
    """
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, torch.Tensor) or value.ndim != 4 or not value.is_floating_point():
            raise InputError(f"ssim: {name} must be a floating (N, C, H, W) tensor, got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
    if x.shape != y.shape:
        raise InputError(f"ssim: x {tuple(x.shape)} and y {tuple(y.shape)} differ in shape")
    odd = isinstance(window_size, int) and not isinstance(window_size, bool) and window_size % 2
    if not odd or window_size < 1:
        raise ConfigError(f"window_size must be an odd integer >= 1, got {window_size!r}")
    sigma = check_number(sigma, "sigma", positive=True)
    data_range = check_number(data_range, "data_range", positive=True)
    if min(x.shape[-2:]) < window_size:
        raise InputError(f"ssim: images of {tuple(x.shape[-2:])} pixels are smaller than the "
                         f"{window_size}-pixel window")

    channels = x.shape[1]
    window = _gaussian_window(window_size, sigma, x)
    rows = window.view(1, 1, 1, -1).expand(channels, 1, 1, window_size)
    cols = window.view(1, 1, -1, 1).expand(channels, 1, window_size, 1)

    def local_mean(image):
        return F.conv2d(F.conv2d(image, rows, groups=channels), cols, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x.square()
    var_y = local_mean(y * y) - mu_y.square()
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    return index.mean(dim=(1, 2, 3))


def style_distance(
    images: torch.Tensor,
    style: torch.Tensor | Mapping[str, torch.Tensor],
    extractor: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    c: float = 0.0,
    layer_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    r"""Style distance of each image to its style image, summed over the extractor's layers.

    .. math:: d = \sum_l w_l \frac{1}{4 C_l^2} \mathrm{MMD}^2[F_l(I), F_l(I_s)]

    the single-reference proposed style loss (Eqs. 3 and 14 of seed 002; with ``c = 0`` the Gram
    distance of Eq. 4), :func:`augengine.nst.losses.mmd_poly_loss` per layer.

    Parameters
    ----------
    images : torch.Tensor (N, 1, H, W), floating
        Grey images in [0, 1].
    style : torch.Tensor (N or 1, 1, H', W') or mapping layer -> (N or 1, C, h, w)
        The style images, or their features from ``extractor`` computed earlier.
    extractor : callable
        Maps ImageNet-normalised ``(N, 3, H, W)`` to ``{layer: features}``, e.g.
        :func:`augengine.models.feature_extractor` of the paper's ResNet-50 at its style layers.
    c : float, optional
        Polynomial-kernel offset (default 0, the Gram distance).
    layer_weights : mapping layer -> float, optional
        ``w_l`` (default 1 for every layer).

    Returns
    -------
    torch.Tensor (N,)
        Dimensionless; 0 when the images' feature statistics match the style's.

    Examples
    --------
    >>> import torch
    >>> from augengine.models import feature_extractor, resnet18
    >>> extract = feature_extractor(resnet18().eval(), ("relu", "layer1"))
    >>> x = torch.rand(2, 1, 32, 32)
    >>> style_distance(x, x, extract).tolist()
    [0.0, 0.0]
    """
    check_images("images", images)
    weights = dict(layer_weights or {})
    features = extractor(imagenet_normalize(images))
    unknown = sorted(set(weights) - set(features))
    if unknown:
        raise ConfigError(f"layer_weights names layers the extractor does not give: {unknown}")
    if isinstance(style, torch.Tensor):
        check_images("style", style)
        style = extractor(imagenet_normalize(style))
    distance = torch.zeros(images.shape[0], dtype=images.dtype, device=images.device)
    for layer, value in features.items():
        if layer not in style:
            raise InputError(f"style: missing features of layer {layer!r}")
        term = mmd_poly_loss(value, style[layer], c=c, reduction="none")
        distance = distance + weights.get(layer, 1.0) * term.to(distance.dtype)
    return distance


@dataclass(frozen=True)
class QualityScores:
    """Per-pair quality of style-transfer results, each a ``(N,)`` tensor on the inputs' device.

    Attributes
    ----------
    ssim : torch.Tensor
        SSIM of each result to its content image (1: structure fully kept).
    style_before : torch.Tensor
        Style distance of the content image to the style image.
    style_after : torch.Tensor
        Style distance of the result to the style image; below ``style_before`` when the
        transfer took on the style.
    """

    ssim: torch.Tensor
    style_before: torch.Tensor
    style_after: torch.Tensor


def assess_quality(
    result: torch.Tensor,
    content: torch.Tensor,
    style: torch.Tensor,
    extractor: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    c: float = 0.0,
    layer_weights: Mapping[str, float] | None = None,
) -> QualityScores:
    """SSIM to the content image and style distance to the style target, before and after.

    Parameters
    ----------
    result, content : torch.Tensor (N, 1, H, W), floating
        Styled images and their content images, in [0, 1]; ``H, W >= 11``.
    style : torch.Tensor (N or 1, 1, H', W') or (N, K, 1, H', W'), floating
        Style images in [0, 1], or K references per pair whose target is Eq. 9's
        (:func:`augengine.nst.histogram.multi_reference_target`; K = 1 is the reference itself).
    extractor, c, layer_weights
        As in :func:`style_distance`; the style features are computed once for both distances.

    Returns
    -------
    QualityScores
        ``ssim``, ``style_before``, ``style_after``, each ``(N,)``; no gradient.

    Examples
    --------
    >>> import torch
    >>> from augengine.models import feature_extractor, resnet18
    >>> extract = feature_extractor(resnet18().eval(), ("relu", "layer1"))
    >>> content, style = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    >>> scores = assess_quality(content, content, style, extract)   # "result" = the content
    >>> scores.ssim.tolist(), bool(torch.equal(scores.style_before, scores.style_after))
    ([1.0, 1.0], True)
    """
    check_images("result", result)
    check_images("content", content)
    stacks = style.shape[:2] if style.ndim == 5 else None
    if stacks is not None:
        style = style.flatten(0, 1)
    check_images("style", style)
    if result.shape != content.shape:
        raise InputError(f"result {tuple(result.shape)} and content {tuple(content.shape)} "
                         "differ in shape")
    with torch.no_grad():
        style_features = extractor(imagenet_normalize(style))
        if stacks is not None:
            style_features = {layer: multi_reference_target(value.unflatten(0, stacks))
                              for layer, value in style_features.items()}
        return QualityScores(
            ssim=ssim(result, content),
            style_before=style_distance(content, style_features, extractor, c, layer_weights),
            style_after=style_distance(result, style_features, extractor, c, layer_weights),
        )
