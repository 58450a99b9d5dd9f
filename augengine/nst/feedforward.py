"""Feed-forward arbitrary-style transfer: frozen ResNet encoder, AdaIN, learned decoder.

The iterative mode (:mod:`augengine.nst.iterative`) optimises every output image for 1000 steps,
as the spec paper (seed 002) does. Generating the paper's 325,408 within-class pairs that way
costs 325,408 optimisations; a feed-forward network (Huang & Belongie 2017) produces each one
in a single pass instead:

    t = AdaIN(E(I_c), E(I_s)) = sigma(E(I_s)) * (E(I_c) - mu(E(I_c))) / sigma(E(I_c)) + mu(E(I_s))
    I_hat = D(t)

``E`` is a frozen ResNet up to one stage (the feature network of the paper's losses), ``mu`` and
``sigma`` are per-channel statistics over the spatial positions, and the decoder ``D`` is trained
(:mod:`augengine.train.nst_decoder`) with the paper's objective: the LRP-weighted content loss
(Eq. 2) and the proposed style loss (Eq. 14). Because ``E`` is frozen, the features and statistics of each
image can be computed once and reused for every pair it takes part in
(:func:`augengine.nst.generate.generate`).

Images are grey ``(N, 1, H, W)`` floats in [0, 1]; the encoder sees them as three identical,
ImageNet-normalised channels (:func:`augengine.models.imagenet_normalize`).

References
----------
Huang, X. & Belongie, S. 2017. Arbitrary style transfer in real-time with adaptive instance
normalization. ICCV, 1501-1510.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augengine.checks import check_in_range, describe
from augengine.errors import ConfigError, InputError
from augengine.models import feature_extractor, imagenet_normalize

__all__ = [
    "Decoder",
    "StyleNet",
    "adain",
    "align_statistics",
    "blend",
    "check_images",
    "feature_stats",
]

#: Spatial size of the probe image that measures the encoder's stride and width.
_PROBE = 64


def check_images(name: str, images) -> None:
    """Raise InputError unless ``images`` is a non-empty floating ``(N, 1, H, W)`` tensor."""
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or images.shape[1] != 1
        or not images.is_floating_point()
        or images.numel() == 0
    ):
        raise InputError(
            f"{name}: expected grey images, a floating (N, 1, H, W) tensor in [0, 1], "
            f"got {describe(images)}"
        )


def _check_features(name: str, features) -> None:
    if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.numel() == 0:
        raise InputError(f"{name}: expected (N, C, H, W) feature maps, got {describe(features)}")


def feature_stats(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-channel mean and standard deviation of feature maps over their spatial positions.

    .. math:: \mu_{nc} = \frac{1}{HW} \sum_{hw} F_{nchw}, \qquad
              \sigma_{nc} = \sqrt{\frac{1}{HW} \sum_{hw} (F_{nchw} - \mu_{nc})^2 + \epsilon}

    (biased variance, as instance normalisation uses). ``eps`` keeps ``sigma > 0`` for constant
    channels, which AdaIN divides by.

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W), floating
        Encoder features.
    eps : float, optional
        Variance floor (default 1e-5, Huang & Belongie 2017); ``0`` gives the plain deviation.

    Returns
    -------
    mean, std : torch.Tensor (N, C, 1, 1)
        In the units of the features; computed in at least float32 (bf16 features lose the
        statistics' precision otherwise).

    Examples
    --------
    >>> import torch
    >>> mean, std = feature_stats(torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2), eps=0.0)
    >>> mean.item(), std.item()
    (2.0, 1.0)
    """
    _check_features("features", features)
    if eps < 0:
        raise ConfigError(f"eps must be >= 0, got {eps}")
    work = features.to(torch.promote_types(features.dtype, torch.float32))
    var, mean = torch.var_mean(work, dim=(2, 3), keepdim=True, correction=0)
    return mean, (var + eps).sqrt()


def align_statistics(
    features: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    style_mean: torch.Tensor,
    style_std: torch.Tensor,
) -> torch.Tensor:
    """AdaIN from precomputed statistics: ``style_std * (features - mean) / std + style_mean``.

    The core of :func:`adain`, for callers that keep each image's statistics (mass generation).

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W)
        Content features.
    mean, std : torch.Tensor (N, C, 1, 1)
        Their :func:`feature_stats`.
    style_mean, style_std : torch.Tensor (N or 1, C, 1, 1)
        The style image's :func:`feature_stats`.

    Returns
    -------
    torch.Tensor (N, C, H, W), in the statistics' dtype (float32 or wider)
    """
    return style_std * (features.to(mean.dtype) - mean) / std + style_mean


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Adaptive instance normalisation: give content features the style's channel statistics.

    .. math:: \mathrm{AdaIN}(x, y) = \sigma(y) \frac{x - \mu(x)}{\sigma(x)} + \mu(y)

    with :func:`feature_stats` per sample and channel. The output has the style's per-channel
    mean exactly and its standard deviation up to the factor
    ``sqrt(var_x / (var_x + eps)) ~ 1 - eps / (2 var_x)`` (exactly with ``eps = 0``).

    Parameters
    ----------
    content : torch.Tensor (N, C, H, W), floating
        Encoder features of the content images.
    style : torch.Tensor (N or 1, C, H', W'), floating
        Encoder features of the style images (any spatial size); batch 1 styles all N.
    eps : float, optional
        Variance floor of :func:`feature_stats` (default 1e-5).

    Returns
    -------
    torch.Tensor (N, C, H, W)
        Float32 or wider.

    References
    ----------
    Huang & Belongie 2017, Eq. 8.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2)     # mean 1, std 1
    >>> y = torch.tensor([5.0, 11.0]).reshape(1, 1, 1, 2)    # mean 8, std 3
    >>> adain(x, y, eps=0.0).flatten().tolist()
    [5.0, 11.0]
    """
    _check_features("content", content)
    _check_features("style", style)
    if style.shape[0] not in (1, content.shape[0]) or style.shape[1] != content.shape[1]:
        raise InputError(
            f"style: {describe(style)} does not pair with content {describe(content)} "
            f"(need batch {content.shape[0]} or 1 and {content.shape[1]} channels)"
        )
    return align_statistics(content, *feature_stats(content, eps), *feature_stats(style, eps))


class Decoder(nn.Module):
    """Upsampling decoder that mirrors an encoder of stride ``2**upsamplings``.

    Stage ``i`` (one per factor 2): reflect-padded 3x3 conv to ``w_i`` channels, ReLU, nearest
    x2 upsampling, 3x3 conv, ReLU, with ``w_i = max(in_channels / 2**(i+1), min_width)``; then a
    3x3 conv to one grey channel and a sigmoid, so the output lies in (0, 1). No normalisation
    layers (they would wash out the statistics AdaIN sets), nearest upsampling and reflect
    padding (no checkerboard or border artefacts), as in Huang & Belongie's decoder. The
    convolutions before a ReLU start from He initialisation (normal, fan-in, zero bias), which
    keeps the activation variance through the stages; PyTorch's default (weight variance
    ``1 / (3 fan_in)`` against ``2 / fan_in``) shrinks it about sixfold per layer, so an untrained
    decoder drew a constant grey (pixel standard deviation 2e-4 behind ResNet-18's ``layer2``)
    and short CPU trainings stayed washed out (docs/nst.md, "Decoder quality").

    Parameters
    ----------
    in_channels : int
        Channels of the encoder features.
    upsamplings : int
        ``log2`` of the encoder's stride (``"layer3"`` of a ResNet: 4).
    min_width : int, optional
        Smallest stage width (default 32).

    Shape
    -----
    ``(N, in_channels, h, w)`` -> ``(N, 1, h * 2**upsamplings, w * 2**upsamplings)``; ``h`` and
    ``w`` must be >= 2 (reflect padding).

    References
    ----------
    He, Zhang, Ren & Sun 2015. Delving deep into rectifiers. ICCV, 1026-1034.
    """

    def __init__(self, in_channels: int, upsamplings: int, min_width: int = 32):
        super().__init__()
        if in_channels < 1 or upsamplings < 1 or min_width < 1:
            raise ConfigError(
                "Decoder needs in_channels, upsamplings and min_width >= 1, got "
                f"{in_channels}, {upsamplings}, {min_width}"
            )
        layers: list[nn.Module] = []
        width = in_channels
        for stage in range(upsamplings):
            out = max(in_channels >> (stage + 1), min_width)
            layers += [
                _conv(width, out, before_relu=True),
                nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="nearest"),
                _conv(out, out, before_relu=True),
                nn.ReLU(),
            ]
            width = out
        layers += [_conv(width, 1, before_relu=False), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Decode; under autocast (bf16 on a GPU) every stage runs in the autocast dtype but the
        last convolution and the sigmoid run in the weights' dtype: bf16 keeps 8 significant
        bits, so a bf16 output near 1 would sit on a grid of 1/256, a whole grey level of the
        uint8 result."""
        hidden = self.layers[:-2](features)
        last = self.layers[-2]
        with torch.autocast(hidden.device.type, enabled=False):
            return self.layers[-1](last(hidden.to(last.weight.dtype)))


def _conv(in_channels: int, out_channels: int, before_relu: bool) -> nn.Conv2d:
    """Reflect-padded 3x3 convolution; He-initialised when a ReLU follows (see Decoder)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")
    if before_relu:
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    return conv


class StyleNet(nn.Module):
    """Arbitrary-style transfer network: frozen encoder, AdaIN, trainable :class:`Decoder`.

    Parameters
    ----------
    encoder : nn.Module
        A network with named stages, usually :func:`augengine.models.resnet50` (the paper's
        feature network) with local ImageNet weights loaded (:func:`augengine.models.load_weights`;
        nothing is downloaded, and a randomly initialised encoder still trains a decoder, with
        poorer style features). It is frozen: no gradients, always in eval mode (BatchNorm keeps
        its running statistics), also after ``StyleNet.train()``.
    layer : str, optional
        Encoder stage whose features are aligned (default ``"layer3"``: 1/16 resolution; on
        ResNet-50 1024 channels, 14 x 14 at 224 x 224). Shallower stages (``"layer2"``) keep
        more spatial detail, deeper ones transfer coarser style.
    eps : float, optional
        Variance floor of the AdaIN statistics (default 1e-5).
    min_width : int, optional
        Smallest decoder width (default 32).

    Attributes
    ----------
    encoder : nn.Module
    decoder : Decoder
        The only trainable part; its ``state_dict`` is what training checkpoints.
    channels, stride : int
        Width and spatial stride of the encoder at ``layer``.

    Examples
    --------
    >>> import torch
    >>> from augengine.models import resnet18
    >>> net = StyleNet(resnet18(), layer="layer2")
    >>> net.channels, net.stride
    (128, 8)
    >>> net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self, encoder: nn.Module, layer: str = "layer3", eps: float = 1e-5, min_width: int = 32
    ):
        super().__init__()
        if eps < 0:
            raise ConfigError(f"eps must be >= 0, got {eps}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.layer = layer
        self.eps = eps
        weight = next(encoder.parameters())
        with torch.no_grad():
            probe = self.encode(
                torch.zeros(1, 1, _PROBE, _PROBE, dtype=weight.dtype, device=weight.device)
            )
        self.channels = probe.shape[1]
        self.stride = _PROBE // probe.shape[-1]
        power_of_two = self.stride & (self.stride - 1) == 0
        if self.stride < 2 or not power_of_two or probe.shape[-1] * self.stride != _PROBE:
            raise ConfigError(
                f"layer {layer!r}: encoder stride must be a power of two >= 2, a {_PROBE}-pixel "
                f"image gives a {probe.shape[-1]}-position map"
            )
        self.decoder = Decoder(self.channels, self.stride.bit_length() - 1, min_width).to(weight)

    def train(self, mode: bool = True) -> StyleNet:
        super().train(mode)
        self.encoder.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features ``(N, channels, H / stride, W / stride)`` of grey images
        ``(N, 1, H, W)`` in [0, 1]; the forward pass stops at ``layer``."""
        check_images("images", images)
        extract = feature_extractor(self.encoder, (self.layer,))
        return extract(imagenet_normalize(images))[self.layer]

    def decode(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Images ``(N, 1, h * stride, w * stride)`` in (0, 1) from aligned features
        ``(N, channels, h, w)``; resized (bilinear) to ``size`` when given and different (inputs
        whose sides are not multiples of ``stride``)."""
        _check_features("features", features)
        if features.shape[1] != self.channels or min(features.shape[-2:]) < 2:
            raise InputError(
                f"features: expected ({self.channels} channels, at least 2 x 2 positions) for "
                f"the decoder, got {describe(features)}"
            )
        images = self.decoder(features)
        if size is not None and tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
        return images

    def forward(
        self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0
    ) -> torch.Tensor:
        """Stylise ``content`` ``(N, 1, H, W)`` with ``style`` ``(N or 1, 1, H', W')``.

        ``alpha`` in [0, 1] blends the aligned features with the content's own,
        ``alpha * AdaIN + (1 - alpha) * E(content)`` (Huang & Belongie's content-style
        trade-off); 1 (default) is full style. Returns ``(N, 1, H, W)`` in (0, 1).
        """
        check_images("content", content)
        check_images("style", style)
        content_features = self.encode(content)
        target = adain(content_features, self.encode(style), self.eps)
        return self.decode(blend(target, content_features, alpha), size=content.shape[-2:])


def blend(aligned: torch.Tensor, content_features: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * aligned + (1 - alpha) * content_features``, alpha in [0, 1] (1: full style)."""
    check_in_range(alpha, "alpha", 0, 1)
    if alpha == 1.0:
        return aligned
    return alpha * aligned + (1.0 - alpha) * content_features.to(aligned.dtype)
