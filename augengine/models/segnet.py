"""SegNet (Badrinarayanan, Kendall and Cipolla 2017): the encoder-decoder that seed 004 compares
with the U-Net for ROI segmentation.

Where the U-Net copies whole encoder maps into its decoder, SegNet keeps only the positions of
the maxima of each 2x2 max pooling and its decoder puts values back at those positions
(``MaxUnpool2d``), leaving the other three of each window zero for the convolutions to fill.
"""
from __future__ import annotations

import torch
from torch import nn

from augengine.checks import check_positive_ints
from augengine.models.unet import check_image_batch

__all__ = ["SegNet", "conv_bn_relu", "segnet"]

# Convolutions per level of VGG-16's five levels, which SegNet's encoder is.
_VGG16_CONVS = (2, 2, 3, 3, 3)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (zero padding 1, no bias) -> BatchNorm -> ReLU: SegNet's unit, size kept."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1,
                                   bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


def _stage(widths: list[int]) -> nn.Sequential:
    return nn.Sequential(*(conv_bn_relu(a, b) for a, b in zip(widths[:-1], widths[1:],
                                                              strict=True)))


class SegNet(nn.Module):
    """SegNet; built by :func:`segnet` (see there).

    Attributes
    ----------
    encoder : nn.ModuleList
        Level ``k``: ``convs[k]`` :func:`conv_bn_relu` units to width ``w_k``, then :attr:`pool`.
    decoder : nn.ModuleList
        Level ``k`` (applied deepest first): :attr:`unpool` with level ``k``'s indices, then
        ``convs[k]`` units, the last narrowing to ``w_{k-1}`` (``w_0`` at level 0).
    pool, unpool : nn.MaxPool2d, nn.MaxUnpool2d
        2x2, stride 2; the pooling returns the indices the unpooling uses.
    head : nn.Conv2d
        1x1 convolution to the class logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, base_channels: int = 64,
                 depth: int = 5):
        super().__init__()
        check_positive_ints(in_channels=in_channels, num_classes=num_classes,
                            base_channels=base_channels, depth=depth)
        convs = [_VGG16_CONVS[min(k, len(_VGG16_CONVS) - 1)] for k in range(depth)]
        widths = [base_channels * 2 ** min(k, 3) for k in range(depth)]
        inputs = [in_channels] + widths[:-1]
        self.depth = depth
        self.encoder = nn.ModuleList(_stage([inputs[k]] + [widths[k]] * convs[k])
                                     for k in range(depth))
        self.decoder = nn.ModuleList(_stage([widths[k]] * convs[k] + [widths[max(k - 1, 0)]])
                                     for k in range(depth))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, channels=(self.encoder[0][0][0].in_channels,),
                          multiple=2**self.depth, model=f"SegNet with depth={self.depth}")
        indices = []
        for block in self.encoder:
            x, where = self.pool(block(x))
            indices.append(where)
        for k in reversed(range(self.depth)):
            x = self.decoder[k](self.unpool(x, indices[k]))
        return self.head(x)


def segnet(in_channels: int = 1, num_classes: int = 1, base_channels: int = 64,
           depth: int = 5) -> SegNet:
    """SegNet: VGG-16's convolutional encoder with 2x2 max pooling that keeps its indices, a
    mirrored decoder that unpools with them, and a 1x1 convolution to class logits.

    Level ``k`` has width ``base_channels * 2**min(k, 3)`` (64, 128, 256, 512, 512 for the
    defaults, as VGG-16) and VGG-16's 2, 2, 3, 3, 3 convolutions. Badrinarayanan et al. end with
    a softmax over K classes; with ``num_classes=1`` the logits go through a sigmoid and binary
    cross-entropy, as seed 004 trains both its U-Net and its SegNet (Table 3).

    Parameters
    ----------
    in_channels : int
        1 for grey ultrasound.
    num_classes : int
        1 for a lesion mask, K for K-class segmentation.
    base_channels : int
        Width of the first level.
    depth : int
        Poolings (5 in the paper); sides must be divisible by ``2**depth``. Levels past the
        fifth repeat the fifth's three convolutions.

    Returns
    -------
    SegNet
        Randomly initialised. With the defaults: 29,470,977 parameters (the paper: 29.5M).

    Shape
    -----
    ``(N, in_channels, H, W)`` float -> logits ``(N, num_classes, H, W)``.

    References
    ----------
    V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A deep convolutional encoder-decoder
    architecture for image segmentation", IEEE TPAMI 39(12), 2481-2495, 2017. Seed 004
    (sections 2.5.2 and 3.3: UNet vs SegNet, IoU and Dice).

    Example
    -------
    >>> model = segnet(base_channels=4, depth=3).eval()
    >>> model(torch.rand(2, 1, 32, 24)).shape
    torch.Size([2, 1, 32, 24])
    """
    return SegNet(in_channels, num_classes, base_channels, depth)
