"""The U-Net of Ronneberger et al. (2015) for lesion segmentation (seed 004), and the input checks
shared by the project's segmentation networks.

Seed 004 segments regions of interest with a U-Net trained with binary cross-entropy on sigmoid
outputs and reports Dice and IoU; :func:`unet` with ``num_classes=1`` gives the logits for that
(``torch.nn.BCEWithLogitsLoss``).
"""
from __future__ import annotations

import torch
from torch import nn

from augengine.checks import check_positive_ints
from augengine.errors import InputError

__all__ = ["UNet", "check_image_batch", "double_conv", "unet"]


def check_image_batch(x, *, channels: tuple[int, ...], multiple: int, model: str) -> None:
    """Raise :class:`InputError` (one line naming ``model`` and the offending size) unless ``x`` is
    a floating-point tensor ``(N, C, H, W)`` with ``C`` in ``channels`` and ``H`` and ``W``
    divisible by ``multiple``.

    Encoder-decoder networks halve the feature maps ``log2(multiple)`` times and concatenate each
    decoder map with the encoder map of the same level, so both must have the same size: the
    input must divide exactly. The message proposes the next sizes that do.

    Parameters
    ----------
    x : object
        The network input.
    channels : tuple of int
        Accepted channel counts.
    multiple : int
        Total stride of the encoder (``2**depth`` for a U-Net, 32 for a ResNet encoder).
    model : str
        How the message names the network, e.g. ``"UNet with depth=4"``.

    Example
    -------
    >>> import torch
    >>> check_image_batch(torch.zeros(1, 1, 65, 64), channels=(1,), multiple=16, model="UNet")
    Traceback (most recent call last):
    ...
    augengine.errors.InputError: UNet needs H and W divisible by 16, got 65x64 (H x W); pad or ...
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise InputError(f"{model} expects a batch of images (N, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise InputError(f"{model} expects floating-point images, got dtype {x.dtype}")
    if x.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise InputError(f"{model} expects {allowed} input channels, got {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple or height == 0 or width == 0:
        up = [max(multiple, -(-side // multiple) * multiple) for side in (height, width)]
        raise InputError(f"{model} needs H and W divisible by {multiple}, got {height}x{width} "
                         f"(H x W); pad or resize, e.g. to {up[0]}x{up[1]}")


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """U-Net's unit: ``(3x3 conv -> BatchNorm -> ReLU)`` twice, zero padding 1 (size kept).

    The convolutions have no bias (the BatchNorm after each supplies it). Ronneberger et al. use
    unpadded convolutions and no BatchNorm; padding keeps the mask the size of the image and
    BatchNorm is the now-standard stabiliser.

    Parameters
    ----------
    in_channels, out_channels : int

    Returns
    -------
    nn.Sequential
        ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``; ``9 in out + 9 out out + 4 out``
        parameters (2 per BatchNorm channel are learnt, 2 are running statistics).

    Example
    -------
    >>> import torch
    >>> block = double_conv(1, 8)
    >>> block(torch.zeros(2, 1, 16, 16)).shape, sum(p.numel() for p in block.parameters())
    (torch.Size([2, 8, 16, 16]), 680)
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """U-Net (Ronneberger, Fischer and Brox 2015). Built by :func:`unet`; see there.

    Attributes
    ----------
    encoder : nn.ModuleList
        ``depth`` :func:`double_conv` units of widths ``base * 2**k``, each followed by 2x2 max
        pooling.
    bottleneck : nn.Sequential
        :func:`double_conv` of width ``base * 2**depth`` at ``1 / 2**depth`` of the input size.
    upsamplers : nn.ModuleList
        ``upsamplers[k]`` doubles the size and halves the width to ``base * 2**k``: a 2x2
        transposed convolution with stride 2, or bilinear upsampling followed by a 1x1
        convolution.
    decoder : nn.ModuleList
        ``decoder[k]``: :func:`double_conv` on ``[encoder output k, upsampled]`` concatenated
        (``base * 2**(k+1)`` channels) down to ``base * 2**k``.
    head : nn.Conv2d
        1x1 convolution with bias to ``num_classes`` logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, base_channels: int = 64,
                 depth: int = 4, *, bilinear: bool = False):
        super().__init__()
        check_positive_ints(in_channels=in_channels, num_classes=num_classes,
                            base_channels=base_channels, depth=depth)
        self.depth = depth
        widths = [base_channels * 2**k for k in range(depth + 1)]
        inputs = [in_channels] + widths[:-2]
        self.encoder = nn.ModuleList(double_conv(c_in, c_out)
                                     for c_in, c_out in zip(inputs, widths[:-1], strict=True))
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.bottleneck = double_conv(widths[-2], widths[-1])
        self.upsamplers = nn.ModuleList(_upsampler(widths[k + 1], widths[k], bilinear)
                                        for k in range(depth))
        self.decoder = nn.ModuleList(double_conv(2 * widths[k], widths[k]) for k in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, channels=(self.encoder[0][0].in_channels,), multiple=2**self.depth,
                          model=f"UNet with depth={self.depth}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for k in reversed(range(self.depth)):
            x = self.decoder[k](torch.cat([skips[k], self.upsamplers[k](x)], dim=1))
        return self.head(x)


def _upsampler(in_channels: int, out_channels: int, bilinear: bool) -> nn.Module:
    if bilinear:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)


def unet(in_channels: int = 1, num_classes: int = 1, base_channels: int = 64, depth: int = 4, *,
         bilinear: bool = False) -> UNet:
    """The classic U-Net: a contracting path of :func:`double_conv` units and 2x2 max pooling,
    an expanding path that upsamples, concatenates the encoder map of the same size (the skip
    connection) and applies :func:`double_conv`, and a 1x1 convolution to class logits.

    Widths are ``base_channels * 2**k`` at level ``k = 0 .. depth`` (64 .. 1024 for the defaults,
    as in Ronneberger et al. 2015). Convolutions are zero-padded, so the logits have the input's
    size.

    Parameters
    ----------
    in_channels : int
        1 for grey ultrasound (intensities scaled, e.g. to [0, 1] or standardised).
    num_classes : int
        Output channels: 1 for a lesion mask (sigmoid + binary cross-entropy, as in seed 004), or
        K for K-class segmentation (softmax + cross-entropy).
    base_channels : int
        Width of the first level.
    depth : int
        Number of 2x2 poolings; the input sides must be divisible by ``2**depth``.
    bilinear : bool
        Upsample bilinearly then halve the width with a 1x1 convolution, instead of the 2x2
        transposed convolution ("up-convolution") of the paper.

    Returns
    -------
    UNet
        Randomly initialised (PyTorch defaults), in training mode. With the defaults it has
        31,036,481 parameters (transposed) or 28,947,521 (bilinear).

    Shape
    -----
    ``(N, in_channels, H, W)`` float -> logits ``(N, num_classes, H, W)``, with ``H`` and ``W``
    divisible by ``2**depth``.

    Raises
    ------
    ConfigError
        A size argument that is not an integer >= 1.
    InputError
        (when called) input that is not ``(N, in_channels, H, W)`` floats, or sides not divisible
        by ``2**depth``, e.g. ``"UNet with depth=4 needs H and W divisible by 16, got 100x64
        (H x W); pad or resize, e.g. to 112x64"``.

    References
    ----------
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional networks for biomedical image
    segmentation", MICCAI 2015. Seed 004 (UNet vs SegNet ROI segmentation; Dice, IoU).

    Example
    -------
    >>> import torch
    >>> model = unet(base_channels=8, depth=3).eval()
    >>> model(torch.rand(2, 1, 64, 48)).shape
    torch.Size([2, 1, 64, 48])
    """
    return UNet(in_channels, num_classes, base_channels, depth, bilinear=bilinear)
