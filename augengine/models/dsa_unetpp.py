"""DSA-U++ (seed 000): a ResNet-50 encoder with atrous spatial pyramid pooling (the "R-AS"
encoder) and a UNet++ nested decoder built from depthwise-separable convolutions, for lesion
segmentation and, optionally, the four BI-RADS lesion features.

Layout (``H x W`` input, both divisible by 32)::

    level i   encoder node x^{i,0}                      size        channels
    0         stem: conv1 7x7/2 + bn1 + relu            H/2         64
    1         maxpool + layer1 (3 bottlenecks)          H/4         256
    2         layer2 (4 bottlenecks)                    H/8         512
    3         layer3 (6 bottlenecks)                    H/16        1024
    4         layer4 (3 bottlenecks) -> ASPP            H/32        aspp_channels (256)

Decoder nodes follow UNet++ (Zhou et al. 2018; seed 000, Eq. 2):
``x^{i,j} = H([x^{i,0}, ..., x^{i,j-1}, U(x^{i+1,j-1})])`` for ``j >= 1, i + j <= 4``, where
``U`` is 2x bilinear upsampling, ``[.]`` channel concatenation and ``H`` two depthwise-separable
units (:class:`DepthwiseSeparableConv`). The mask logits are a 1x1 convolution of ``x^{0,4}``
upsampled 2x to the input size.

Two choices where seed 000 is vague: ASPP runs on the deepest ResNet features (DeepLabv3's
placement; the seed's text can also be read as applying it to R-AS1, the stem), and the BI-RADS
heads read the globally pooled deepest features (the seed passes "the output of the decoder"
through a fully connected layer).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augengine.checks import check_positive_ints
from augengine.errors import ConfigError
from augengine.models.heads import BIRADS_CLASSES
from augengine.models.resnet import resnet50
from augengine.models.unet import check_image_batch
from augengine.models.weights import load_weights

__all__ = ["ASPP", "DSAUNetPP", "DepthwiseSeparableConv", "ENCODER_CHANNELS", "dsa_unetpp"]

#: Channels of the ResNet-50 encoder nodes x^{0,0} .. x^{3,0} (stem, layer1, layer2, layer3).
ENCODER_CHANNELS = (64, 256, 512, 1024)
_DEEPEST_CHANNELS = 2048  # layer4 of ResNet-50
_LEVELS = 5
_STRIDE = 32  # total stride of the ResNet encoder


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 convolution, pointwise 1x1 convolution, BatchNorm, ReLU (Howard et al. 2017).

    ``y = relu(bn(pointwise(depthwise(x))))``: ``depthwise`` filters each input channel on its own
    (``groups = in_channels``, ``C_1 * 9`` weights), ``pointwise`` mixes channels
    (``C_1 * C_2`` weights). Seed 000 (Sec. 2.4) gives the cost ratio to a full 3x3 convolution as
    ``1/C_2 + 1/9``.

    Parameters
    ----------
    in_channels, out_channels : int

    Shape
    -----
    ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)`` (zero padding 1).

    Example
    -------
    >>> import torch
    >>> unit = DepthwiseSeparableConv(4, 8)
    >>> unit.depthwise.groups, sum(p.numel() for p in unit.parameters())
    (4, 84)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.pointwise(self.depthwise(x))))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1,
                  dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                  dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017, DeepLabv3; seed 000, Sec. 2.5).

    Parallel branches on the same map, concatenated and fused by a 1x1 convolution:
    a 1x1 convolution, one 3x3 convolution per atrous rate ``r`` (dilation ``r``, padding ``r``,
    receptive field ``2r + 1``), and image pooling (global average, 1x1 convolution, broadcast back
    to the map size); each convolution is followed by BatchNorm and ReLU.

    The image-pooling branch has a bias and no BatchNorm: its map is 1x1, so with a batch of one
    image BatchNorm would have a single value per channel and cannot train.

    Parameters
    ----------
    in_channels : int
    out_channels : int
        Width of every branch and of the output (256 in DeepLabv3).
    rates : sequence of int
        Atrous rates, (6, 12, 18) in seed 000 and DeepLabv3.

    Shape
    -----
    ``(N, in_channels, h, w)`` -> ``(N, out_channels, h, w)``.

    Example
    -------
    >>> import torch
    >>> aspp = ASPP(16, 8)
    >>> [branch[0].dilation for branch in aspp.branches]
    [(1, 1), (6, 6), (12, 12), (18, 18)]
    >>> aspp.eval()(torch.rand(1, 16, 7, 7)).shape
    torch.Size([1, 8, 7, 7])
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 rates: Sequence[int] = (6, 12, 18)):
        super().__init__()
        rates = tuple(rates)
        check_positive_ints(**{f"atrous rate {k}": r for k, r in enumerate(rates)})
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, out_channels)]
            + [_conv_bn_relu(in_channels, out_channels, 3, rate) for rate in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                        nn.Conv2d(in_channels, out_channels, kernel_size=1),
                                        nn.ReLU())
        self.project = _conv_bn_relu((len(rates) + 2) * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Bilinear upsampling of a 1x1 map is a constant map: broadcast it exactly instead.
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


def _nested_node(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(DepthwiseSeparableConv(in_channels, out_channels),
                         DepthwiseSeparableConv(out_channels, out_channels))


class DSAUNetPP(nn.Module):
    """DSA-U++ (module docstring: layout). Built by :func:`dsa_unetpp`; see there.

    Attributes
    ----------
    encoder : ResNet
        :func:`augengine.models.resnet50` with ``fc`` replaced by ``nn.Identity`` (no unused
        parameters); its ``state_dict`` is a torchvision ResNet-50's without ``fc.*``.
    aspp : ASPP
        On ``layer4``.
    nodes : nn.ModuleDict
        Decoder nodes ``"x{i}_{j}"`` (``x^{i,j}``, ``j >= 1``, ``i + j <= 4``; 10 nodes), each two
        :class:`DepthwiseSeparableConv` units.
    head : nn.Conv2d
        1x1 convolution of ``x^{0,4}`` to ``num_classes`` logits.
    birads : nn.ModuleDict or None
        One ``nn.Linear(2048, classes)`` per BI-RADS feature on the globally pooled ``layer4``.
    """

    def __init__(self, num_classes: int = 1, *, birads_classes: Mapping[str, int] | None = None,
                 decoder_channels: Sequence[int] = (32, 64, 128, 256), aspp_channels: int = 256,
                 atrous_rates: Sequence[int] = (6, 12, 18)):
        super().__init__()
        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != _LEVELS - 1:
            raise ConfigError(f"decoder_channels needs {_LEVELS - 1} widths (levels 0-3), got "
                              f"{decoder_channels}")
        check_positive_ints(num_classes=num_classes, aspp_channels=aspp_channels,
                            **{f"decoder_channels[{i}]": c for i, c in enumerate(decoder_channels)})
        if birads_classes is not None:
            if not isinstance(birads_classes, Mapping) or not birads_classes:
                raise ConfigError(f"birads_classes must map feature names to class counts, got "
                                  f"{birads_classes!r}")
            check_positive_ints(**{f"birads_classes[{name!r}]": count
                                   for name, count in birads_classes.items()})
        # ASPP first: it checks the rates before the costly encoder is built.
        aspp = ASPP(_DEEPEST_CHANNELS, aspp_channels, atrous_rates)
        self.encoder = resnet50()
        self.encoder.fc = nn.Identity()
        self.aspp = aspp

        encoder_widths = ENCODER_CHANNELS + (aspp_channels,)
        nodes = {}
        for j in range(1, _LEVELS):
            for i in range(_LEVELS - j):
                upsampled = encoder_widths[i + 1] if j == 1 else decoder_channels[i + 1]
                width = encoder_widths[i] + (j - 1) * decoder_channels[i] + upsampled
                nodes[f"x{i}_{j}"] = _nested_node(width, decoder_channels[i])
        self.nodes = nn.ModuleDict(nodes)
        self.head = nn.Conv2d(decoder_channels[0], num_classes, kernel_size=1)
        self.birads = None if birads_classes is None else nn.ModuleDict(
            {name: nn.Linear(_DEEPEST_CHANNELS, count) for name, count in birads_classes.items()})

    def forward(self, x: torch.Tensor):
        check_image_batch(x, channels=(1, 3), multiple=_STRIDE, model="DSA-U++")
        x = x.expand(-1, 3, -1, -1)
        net = self.encoder
        grid = [[net.relu(net.bn1(net.conv1(x)))]]
        grid.append([net.layer1(net.maxpool(grid[0][0]))])
        grid.append([net.layer2(grid[1][0])])
        grid.append([net.layer3(grid[2][0])])
        deepest = net.layer4(grid[3][0])
        grid.append([self.aspp(deepest)])
        # Column by column: x^{i,j} needs the whole row i up to j-1 and x^{i+1,j-1}.
        for j in range(1, _LEVELS):
            for i in range(_LEVELS - j):
                upsampled = F.interpolate(grid[i + 1][j - 1], scale_factor=2, mode="bilinear",
                                          align_corners=False)
                grid[i].append(self.nodes[f"x{i}_{j}"](torch.cat(grid[i] + [upsampled], dim=1)))
        # 1x1 convolution and bilinear upsampling commute (both linear, weights summing to 1),
        # so the cheap order is taken.
        mask = F.interpolate(self.head(grid[0][-1]), scale_factor=2, mode="bilinear",
                             align_corners=False)
        if self.birads is None:
            return mask
        pooled = deepest.mean(dim=(2, 3))
        return {"mask": mask, "birads": {name: head(pooled) for name, head in self.birads.items()}}


def dsa_unetpp(num_classes: int = 1, pretrained_encoder=None, birads_head: bool = False, *,
               birads_classes: Mapping[str, int] | None = None,
               decoder_channels: Sequence[int] = (32, 64, 128, 256), aspp_channels: int = 256,
               atrous_rates: Sequence[int] = (6, 12, 18)) -> DSAUNetPP:
    """DSA-U++ of seed 000: ResNet-50 + ASPP encoder, UNet++ decoder of depthwise-separable
    convolutions, segmentation logits at input resolution, optional BI-RADS feature heads.

    Equations and layout in the module docstring: encoder nodes from the ResNet-50 stem and stages
    (strides 2 .. 32), ASPP (rates 6/12/18, 1x1 and image pooling) on ``layer4``, nested nodes
    ``x^{i,j} = H([x^{i,0..j-1}, U(x^{i+1,j-1})])``.

    Parameters
    ----------
    num_classes : int
        Mask channels: 1 for a lesion mask (sigmoid + binary cross-entropy), K for K classes.
    pretrained_encoder : str or Path or None
        Local ResNet-50 checkpoint (torchvision's ImageNet weights, or a ``state_dict`` saved from
        :func:`augengine.models.resnet50`) loaded into ``model.encoder`` with
        ``load_weights(..., skip_head=True)``. Nothing is downloaded.
    birads_head : bool
        Also classify the BI-RADS lesion features from the globally averaged ``layer4`` features
        (2048), one linear layer each.
    birads_classes : mapping str -> int or None
        Classes per feature when ``birads_head``; None takes
        :data:`augengine.models.heads.BIRADS_CLASSES`: orientation, margin, calcification, shape,
        2 classes each (seed 000 labels each feature 0 benign-looking / 1 malignant-looking:
        parallel / not parallel, circumscribed / not, no calcification / calcification, regular /
        irregular shape). E.g. ``{"margin": 5, "shape": 3, ...}`` for the full BI-RADS lexicon.
    decoder_channels : sequence of 4 int
        Width of the decoder nodes on levels 0..3; the defaults are UNet++'s (Zhou et al. 2018),
        seed 000 gives none.
    aspp_channels : int
        Width of the ASPP branches and output (level 4).
    atrous_rates : sequence of int
        ASPP rates (6, 12, 18 in seed 000).

    Returns
    -------
    DSAUNetPP
        In training mode; ResNet-50 weights as loaded (or torchvision's random initialisation),
        others PyTorch's default initialisation. With the defaults: 40,003,681 parameters
        (ResNet-50 encoder 23,508,032, ASPP 15,534,848, decoder 960,768, head 33), plus 16,392
        with the BI-RADS heads.

    Shape
    -----
    Input ``(N, 1, H, W)`` or ``(N, 3, H, W)`` float, ``H`` and ``W`` divisible by 32 (seed 000:
    224 x 224). One channel is repeated to three inside (a view, no copy), so grey images can be
    fed as they are; with ImageNet encoder weights feed
    :func:`augengine.models.imagenet_normalize` output (which also repeats). Output: without
    ``birads_head`` the mask logits, a Tensor ``(N, num_classes, H, W)``; with it a dict
    ``{"mask": (N, num_classes, H, W), "birads": {feature: (N, classes) logits}}`` (softmax and
    cross-entropy per feature).

    Raises
    ------
    ConfigError
        Non-positive sizes or rates, ``birads_classes`` without ``birads_head``.
    InputError
        A bad ``pretrained_encoder`` file; (when called) input that is not ``(N, 1 or 3, H, W)``
        floats or whose sides are not divisible by 32.

    References
    ----------
    Seed 000 (DSA-U++). Z. Zhou et al., "UNet++: A nested U-Net architecture for medical image
    segmentation", DLMIA 2018. L.-C. Chen et al., "Rethinking atrous convolution for semantic
    image segmentation" (DeepLabv3), 2017. A. G. Howard et al., "MobileNets", 2017.

    Example
    -------
    >>> import torch
    >>> model = dsa_unetpp(birads_head=True).eval()
    >>> with torch.no_grad():
    ...     out = model(torch.rand(1, 1, 64, 64))
    >>> out["mask"].shape
    torch.Size([1, 1, 64, 64])
    >>> {name: tuple(logits.shape) for name, logits in out["birads"].items()}
    {'orientation': (1, 2), 'margin': (1, 2), 'calcification': (1, 2), 'shape': (1, 2)}
    """
    if birads_classes is not None and not birads_head:
        raise ConfigError("birads_classes is given but birads_head=False; set birads_head=True")
    if birads_head and birads_classes is None:
        birads_classes = BIRADS_CLASSES
    model = DSAUNetPP(num_classes, birads_classes=birads_classes,
                      decoder_channels=decoder_channels, aspp_channels=aspp_channels,
                      atrous_rates=atrous_rates)
    if pretrained_encoder is not None:
        load_weights(model.encoder, pretrained_encoder, skip_head=True)
    return model
