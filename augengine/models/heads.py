"""The training jobs' classification and quality networks: ResNets with a task head, kept in
torchvision's ``state_dict`` layout so that checkpoints move freely between them, plain ResNets,
NST feature extraction and LRP.

Design (why the models stay plain :class:`~augengine.models.ResNet` objects): LRP
(:func:`augengine.explain.lrp`) walks a ResNet by its module names and needs ``fc`` to be a single
``nn.Linear``. The dropout of seed 002's head is therefore placed after the global average
pooling, as ``avgpool = Sequential(AdaptiveAvgPool2d(1), Dropout(p))``, not inside ``fc``. Dropout
has no parameters and is the identity in eval mode, so

* ``state_dict`` keys and shapes are torchvision's (``fc.weight``, ``fc.bias``, ...): an ImageNet
  checkpoint loads with ``load_weights(model, path, skip_head=True)``, and a trained checkpoint
  loads unchanged into ``resnet50(num_classes=2)`` (strict) for NST or LRP;
* ``augengine.explain.lrp(model.eval(), x, target)`` explains the trained model itself.
"""
from __future__ import annotations

from types import MappingProxyType

import torch
from torch import nn

from augengine.checks import check_positive_ints
from augengine.errors import ConfigError, InputError
from augengine.models.resnet import ResNet
from augengine.models.weights import ARCHITECTURES, load_weights

__all__ = ["BIRADS_CLASSES", "BIRADS_FEATURES", "QUALITY_SCORES", "classifier",
           "quality_regressor", "split_birads_logits"]

#: The four BI-RADS lesion features classified in seed 000, in output order.
BIRADS_FEATURES = ("orientation", "margin", "calcification", "shape")

#: Classes per BI-RADS feature in seed 000: each is a binary label, 0 for the benign-looking and
#: 1 for the malignant-looking finding -- orientation parallel / not parallel, margin
#: circumscribed / not circumscribed, calcification absent / present, shape regular (round, oval)
#: / irregular.
BIRADS_CLASSES = MappingProxyType({feature: 2 for feature in BIRADS_FEATURES})

#: Seed 003's pseudo-labels on the 0..100 quality scale: original images, their JPEG-compressed
#: and their Gaussian-blurred versions.
QUALITY_SCORES = MappingProxyType({"original": 100.0, "jpeg": 60.0, "blur": 30.0})


def _backbone(arch: str, outputs: int, pretrained) -> ResNet:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    model = ARCHITECTURES[arch](num_classes=outputs)
    if pretrained is not None:
        load_weights(model, pretrained, skip_head=True)
    return model


def classifier(arch: str = "resnet50", num_classes: int = 2, dropout: float = 0.5,
               pretrained=None, multilabel_birads: bool = False) -> ResNet:
    """Seed 002's lesion classifier: a ResNet, global average pooling, dropout, one dense layer.

    ``logits = fc(dropout(GAP(layer4(...))))``; class probabilities are ``softmax(logits)``
    (seed 002: 2 units, softmax, categorical cross-entropy, dropout 0.5). The model is a plain
    :class:`~augengine.models.ResNet` whose ``avgpool`` is ``Sequential(AdaptiveAvgPool2d(1),
    Dropout(dropout))`` and whose ``fc`` is ``Linear(features, outputs)`` (module docstring: why).

    Parameters
    ----------
    arch : {"resnet50", "resnet18"}
        Backbone (seed 002: ResNet-50, 2048 pooled features; ResNet-18: 512).
    num_classes : int
        Softmax classes, 2 for benign (0) / malignant (1).
    dropout : float
        Drop probability in [0, 1) on the pooled features, active in training mode only.
    pretrained : str or Path or None
        Local checkpoint for the backbone (e.g. torchvision's ImageNet ResNet-50), loaded with
        ``load_weights(..., skip_head=True)``: every layer but ``fc``, which keeps its random
        initialisation. To restore a trained classifier use ``load_weights`` on the result.
    multilabel_birads : bool
        Append one logit per BI-RADS feature (:data:`BIRADS_FEATURES`) to ``fc``: columns
        ``num_classes .. num_classes + 3`` are independent sigmoid logits of the malignant-looking
        finding of each feature (seed 000's binary labels), trained with binary cross-entropy.
        :func:`split_birads_logits` separates them.

    Returns
    -------
    ResNet
        In training mode. ResNet-50 with 2 classes: 23,512,130 parameters.

    Shape
    -----
    ``(N, 3, H, W)`` ImageNet-normalised images (grey repeated to three channels by
    :func:`augengine.models.imagenet_normalize`), ``H, W >= 32`` -> logits
    ``(N, num_classes)``, or ``(N, num_classes + 4)`` with ``multilabel_birads``.

    Raises
    ------
    ConfigError
        Unknown ``arch``, ``num_classes < 1``, ``dropout`` outside [0, 1).
    InputError
        ``pretrained`` missing, unreadable, or not a checkpoint of ``arch``.

    Example
    -------
    >>> import torch
    >>> from augengine.explain import lrp
    >>> model = classifier("resnet18").eval()
    >>> x = torch.rand(1, 3, 32, 32)
    >>> model(x).shape, lrp(model, x, target=1).shape
    (torch.Size([1, 2]), torch.Size([1, 3, 32, 32]))
    """
    check_positive_ints(num_classes=num_classes)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    outputs = num_classes + (len(BIRADS_FEATURES) if multilabel_birads else 0)
    model = _backbone(arch, outputs, pretrained)
    model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))
    return model


def split_birads_logits(logits: torch.Tensor,
                        num_classes: int = 2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Split the output of ``classifier(..., multilabel_birads=True)`` into the class logits and
    one sigmoid logit per BI-RADS feature.

    Parameters
    ----------
    logits : Tensor (N, num_classes + 4)
    num_classes : int
        The ``num_classes`` the classifier was built with.

    Returns
    -------
    class_logits : Tensor (N, num_classes)
        Softmax logits (cross-entropy with the class labels).
    birads : dict str -> Tensor (N,)
        Keyed by :data:`BIRADS_FEATURES`; ``sigmoid`` gives the probability of the
        malignant-looking finding (binary cross-entropy with seed 000's 0/1 labels).

    Raises
    ------
    InputError
        ``logits`` not ``(N, num_classes + 4)``.

    Example
    -------
    >>> import torch
    >>> classes, birads = split_birads_logits(torch.arange(12.0).view(2, 6))
    >>> classes.tolist(), birads["shape"].tolist()
    ([[0.0, 1.0], [6.0, 7.0]], [5.0, 11.0])
    """
    width = num_classes + len(BIRADS_FEATURES)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != width:
        shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
        raise InputError(f"split_birads_logits expects logits (N, {num_classes} classes + "
                         f"{len(BIRADS_FEATURES)} BI-RADS features = {width}), got {shape}")
    birads = {feature: logits[:, num_classes + k] for k, feature in enumerate(BIRADS_FEATURES)}
    return logits[:, :num_classes], birads


def quality_regressor(arch: str = "resnet18", pretrained=None) -> ResNet:
    """Seed 003's image-quality regressor: a ResNet whose ``fc`` has a single linear output, the
    quality score.

    ``score = fc(GAP(layer4(...)))`` on the 0..100 scale of seed 003's pseudo-labels
    (:data:`QUALITY_SCORES`: original 100, JPEG 60, Gaussian blur 30), trained with the mean
    squared error ``MSE = mean((y - score)^2)`` (score units squared). The output is not clamped,
    so the loss keeps its gradient outside [0, 100]; clamp predictions for display only.

    Parameters
    ----------
    arch : {"resnet18", "resnet50"}
        Backbone (seed 003: ResNet-18 with ImageNet transfer learning).
    pretrained : str or Path or None
        Local backbone checkpoint, loaded with ``load_weights(..., skip_head=True)``.

    Returns
    -------
    ResNet
        In training mode; ``fc`` is ``Linear(512, 1)`` for ResNet-18 (11,177,025 parameters).
        LRP explains the score with ``lrp(model.eval(), x, target=0)``.

    Shape
    -----
    ``(N, 3, H, W)`` ImageNet-normalised images -> scores ``(N, 1)``.

    Raises
    ------
    ConfigError
        Unknown ``arch``.
    InputError
        ``pretrained`` missing, unreadable, or not a checkpoint of ``arch``.

    Example
    -------
    >>> import torch
    >>> model = quality_regressor().eval()
    >>> model(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 1])
    """
    return _backbone(arch, 1, pretrained)
