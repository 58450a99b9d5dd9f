"""Intermediate feature maps of a network (for NST losses) and the input normalisation that
ImageNet-trained ResNets expect."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from augengine.errors import ConfigError, InputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FeatureExtractor", "feature_extractor",
           "imagenet_normalize"]

#: Per-channel (R, G, B) mean and standard deviation of ImageNet images scaled to [0, 1]; the
#: statistics every torchvision ImageNet checkpoint was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Repeat grey images to three channels and normalise them with the ImageNet statistics.

    ``y_c = (x - mean_c) / std_c`` with ``mean = (0.485, 0.456, 0.406)`` and
    ``std = (0.229, 0.224, 0.225)`` (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`). Grey ultrasound
    is fed to ImageNet networks this way in the seeds (one grey channel copied to R, G and B).

    Parameters
    ----------
    x : Tensor (N, 1, H, W) or (N, 3, H, W), floating point
        Intensities in [0, 1] (``uint8 / 255``).

    Returns
    -------
    Tensor (N, 3, H, W)
        Same dtype and device as ``x``; differentiable (NST optimises the input through it).

    Example
    -------
    >>> import torch
    >>> imagenet_normalize(torch.full((1, 1, 2, 2), 0.5))[0, :, 0, 0]
    tensor([0.0655, 0.1964, 0.4178])
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise InputError(f"imagenet_normalize expects a tensor (N, 1 or 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise InputError(f"imagenet_normalize expects floats in [0, 1], got dtype {x.dtype}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


class _AllFeaturesCaptured(Exception):
    """Raised from a forward hook to skip the layers after the last requested one."""


class FeatureExtractor(nn.Module):
    """Runs ``model`` only as far as needed and returns the requested activations by name.

    Built by :func:`feature_extractor`; see there.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        super().__init__()
        if isinstance(layers, str):
            layers = (layers,)
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules or name == ""]
        if unknown or not layers:
            top = ", ".join(name for name, _ in model.named_children())
            raise ConfigError(f"feature_extractor: unknown layer names {unknown or '(none given)'};"
                              f" use module paths such as 'layer2.1' under: {top}")
        self.model = model
        self.layers = tuple(dict.fromkeys(layers))

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        captured: dict[str, torch.Tensor] = {}

        def capture(name):
            def hook(_module, _inputs, output):
                captured.setdefault(name, output)
                if len(captured) == len(self.layers):
                    raise _AllFeaturesCaptured
            return hook

        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(capture(name)) for name in self.layers]
        try:
            self.model(x)
        except _AllFeaturesCaptured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in self.layers if name not in captured]
        if missing:
            raise InputError(f"feature_extractor: layers {missing} never ran in the forward pass")
        return OrderedDict((name, captured[name]) for name in self.layers)


def feature_extractor(model: nn.Module,
                      layers: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"),
                      ) -> FeatureExtractor:
    """Wrap ``model`` so that calling it returns its activations at ``layers``.

    The forward pass stops as soon as every requested layer has run (asking for ``"layer2"`` never
    computes ``layer3``, ``layer4`` or ``fc``). Activations keep their autograd graph, so the same
    extractor serves under ``torch.no_grad()`` (style/content targets) and with gradients (NST
    optimises the input image through it).

    Parameters
    ----------
    model : nn.Module
        Usually :func:`augengine.models.resnet50` in eval mode (BatchNorm then uses its running
        statistics; in training mode every call would update them).
    layers : sequence of str
        Module paths as in ``model.named_modules()``: ``"relu"`` (stem, after BN+ReLU),
        ``"maxpool"``, ``"layer1"`` .. ``"layer4"`` (stage outputs), ``"layer2.1"`` (one block),
        ``"layer3.0.conv2"``, ... A module that runs several times in one pass (the ReLU shared
        inside a block) is captured at its first call.

    Returns
    -------
    FeatureExtractor
        ``extractor(x)`` -> ``OrderedDict`` name -> Tensor, in the order of ``layers``. For a
        ResNet and an input ``(N, 3, H, W)``: ``relu`` is ``(N, 64, H/2, W/2)``, ``layerK`` is
        ``(N, C_K, H/2^(K+1), W/2^(K+1))`` with ``C = 64, 128, 256, 512`` (ResNet-18) or
        ``256, 512, 1024, 2048`` (ResNet-50).

    Raises
    ------
    ConfigError
        A name that is not a module path of ``model``.

    Example
    -------
    >>> import torch
    >>> from augengine.models import resnet18
    >>> extract = feature_extractor(resnet18().eval(), layers=("relu", "layer2.1", "layer3"))
    >>> {name: tuple(f.shape) for name, f in extract(torch.zeros(1, 3, 64, 64)).items()}
    {'relu': (1, 64, 32, 32), 'layer2.1': (1, 128, 8, 8), 'layer3': (1, 256, 4, 4)}
    """
    return FeatureExtractor(model, layers)
