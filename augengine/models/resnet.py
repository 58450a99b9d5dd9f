"""ResNet-18 and ResNet-50 with torchvision's exact layout, defined here (torchvision cannot load
next to a CPU torch, see ENVIRONMENT.md).

Module names, parameter and buffer names and shapes are those of ``torchvision.models.resnet18``
and ``resnet50`` (ResNet v1.5: the stride of a down-sampling Bottleneck sits on its 3x3 conv), so
a ``state_dict`` saved from torchvision loads here unchanged and vice versa.

Two deliberate differences that leave the ``state_dict`` untouched: no in-place ReLU or in-place
residual add (a captured feature map or an activation kept for LRP would otherwise be overwritten
by a later layer), and an optional ``in_channels`` for single-channel input.

Grey ultrasound is fed as the seeds do: repeat the grey channel three times and normalise with the
ImageNet statistics (:func:`augengine.models.imagenet_normalize` does both), so ImageNet weights
apply unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``shortcut`` is
    ``downsample`` (1x1 conv + BN) when the stride or the width changes, the identity otherwise.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, "v1.5"), 1x1 expand by 4, plus a residual connection
    (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet (He et al. 2016) in torchvision's layout.

    Stem ``conv1`` (7x7, stride 2) -> ``bn1`` -> ``relu`` -> ``maxpool`` (3x3, stride 2), four
    stages ``layer1``..``layer4`` of widths 64/128/256/512 (times ``block.expansion``), stages 2-4
    starting with stride 2, then ``avgpool`` (global) and ``fc``.

    Parameters
    ----------
    block : type[BasicBlock] or type[Bottleneck]
    layers : sequence of 4 int
        Blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
    num_classes : int
        Outputs of ``fc``.
    in_channels : int
        Input channels of ``conv1``; 3 (torchvision's layout) unless stated.

    Shape
    -----
    ``(N, in_channels, H, W)`` float -> logits ``(N, num_classes)``; the feature map after
    ``layer4`` is ``H/32 x W/32`` (rounded up), so inputs down to 32x32 work.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers, num_classes: int = 1000,
                 in_channels: int = 3):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, layers[0], stride=1)
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, layers[2], stride=2)
        self.layer4 = self._make_stage(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        # torchvision's initialisation, so that untrained networks behave alike.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, *, in_channels: int = 3) -> ResNet:
    """ResNet-18: BasicBlocks ``(2, 2, 2, 2)``, 512 features into ``fc``; 122 ``state_dict``
    entries.

    Parameters
    ----------
    num_classes : int
        1000 for ImageNet checkpoints, 2 for benign/malignant.
    in_channels : int
        Keep 3 (torchvision's layout) to load ImageNet weights; feed grey images repeated to three
        channels (:func:`augengine.models.imagenet_normalize`).

    Returns
    -------
    ResNet
        Randomly initialised (torchvision's scheme), in training mode.

    Example
    -------
    >>> import torch
    >>> model = resnet18(num_classes=2).eval()
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2])
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


def resnet50(num_classes: int = 1000, *, in_channels: int = 3) -> ResNet:
    """ResNet-50 (v1.5): Bottlenecks ``(3, 4, 6, 3)``, 2048 features into ``fc``; 320 ``state_dict``
    entries. The seeds' classifier and NST feature network.

    Parameters
    ----------
    num_classes : int
        1000 for ImageNet checkpoints, 2 for benign/malignant.
    in_channels : int
        Keep 3 (torchvision's layout) to load ImageNet weights; feed grey images repeated to three
        channels (:func:`augengine.models.imagenet_normalize`).

    Returns
    -------
    ResNet
        Randomly initialised (torchvision's scheme), in training mode.

    Example
    -------
    >>> import torch
    >>> model = resnet50(num_classes=2).eval()
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2])
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
