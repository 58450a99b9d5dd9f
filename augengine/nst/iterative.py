"""Iterative neural style transfer: optimise the output images themselves (Gatys et al. 2016).

The spec paper (seed 002, "XAI-based NST augmented model training", Step 1) minimises its total
loss (Eq. 1: LRP-weighted content loss, Eq. 2, plus the proposed style loss, Eq. 14, on ResNet-50
features) over the pixels of the generated image, starting from the content image, for 1000
iterations. :func:`stylize` does that for a batch of (content, style) pairs at once on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from augengine.checks import check_choice, check_int
from augengine.errors import ConfigError, InputError
from augengine.models import feature_extractor, imagenet_normalize
from augengine.nst.feedforward import check_images
from augengine.nst.losses import StyleTransferLoss
from augengine.nst_defaults import ITERATIONS

__all__ = ["DEFAULT_LR", "StylizeResult", "stylize"]

#: Step size per optimiser when ``lr`` is not given. Adam moves each pixel by about ``lr`` per
#: step, so 0.01 of the [0, 1] grey range lets 1000 steps travel far while staying smooth;
#: L-BFGS scales its own quasi-Newton step, 1 is its natural size (the line search adjusts it).
DEFAULT_LR = {"adam": 0.01, "lbfgs": 1.0}


@dataclass(frozen=True)
class StylizeResult:
    """Output of :func:`stylize`.

    Attributes
    ----------
    images : torch.Tensor (N, 1, H, W)
        Styled grey images in [0, 1], detached, dtype and device of the content images.
    history : torch.Tensor (T, N)
        Loss (Eq. 1) of each pair at each iteration, evaluated before that iteration's step;
        ``T`` is ``iterations`` unless the callback stopped early.
    """

    images: torch.Tensor
    history: torch.Tensor


def _check_style(style: torch.Tensor, n: int) -> None:
    if not isinstance(style, torch.Tensor) or not style.is_floating_point() or style.numel() == 0:
        raise InputError(f"style: expected a floating tensor, got {type(style).__name__}")
    single = style.ndim == 4 and style.shape[1] == 1
    multi = style.ndim == 5 and style.shape[2] == 1
    if not (single or multi) or style.shape[0] not in (1, n):
        raise InputError(
            f"style: expected (N or 1, 1, H, W) grey images or (N or 1, K, 1, H, W) reference "
            f"stacks with N = {n}, got shape {tuple(style.shape)}"
        )


def _style_features(extract, style: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """Style-layer features, ``(B, C, h, w)`` for one reference, ``(B, K, C, h, w)`` for K."""
    if style.ndim == 4:
        features = extract(imagenet_normalize(style))
        return {layer: features[layer] for layer in layers}
    batch, k = style.shape[:2]
    features = extract(imagenet_normalize(style.flatten(0, 1)))
    return {layer: features[layer].unflatten(0, (batch, k)) for layer in layers}


def stylize(
    content: torch.Tensor,
    style: torch.Tensor,
    loss: StyleTransferLoss,
    network: nn.Module,
    relevance: torch.Tensor | None = None,
    *,
    iterations: int = ITERATIONS,
    lr: float | None = None,
    optimizer: str = "adam",
    init: str | torch.Tensor = "content",
    callback: Callable[[int, torch.Tensor, torch.Tensor], bool | None] | None = None,
) -> StylizeResult:
    r"""Style a batch of content images by optimising their pixels against the paper's loss.

    Minimises, for every pair ``n`` independently,

    .. math:: L_n(\hat I_n) = \alpha \sum_{l \in content} L_{c,l}(\hat I_n, I_{c,n}, R_n)
              + \beta \sum_{l \in style} w_l L_{ps,l}(\hat I_n, I_{s,n})

    (Eq. 1 with Eqs. 2 and 14, :class:`~augengine.nst.losses.StyleTransferLoss`) over the pixels
    of ``I_hat`` in [0, 1], starting from the content image, with the features of ``network``
    seeing the grey images as three ImageNet-normalised channels. Content features and style
    targets are computed once. The optimiser minimises the *sum* over pairs, so with Adam each
    pair follows exactly the path it would follow alone (a batch is only faster). After every
    step the pixels are clipped to [0, 1] (projected gradient descent).

    Parameters
    ----------
    content : torch.Tensor (N, 1, H, W), floating
        Content images in [0, 1].
    style : torch.Tensor (N or 1, 1, H', W') or (N or 1, K, 1, H', W'), floating
        One style image per pair (batch 1: shared by all), or K references per pair for the
        multi-reference target of Eq. 9.
    loss : StyleTransferLoss
        The objective: layers, ``alpha``, ``beta``, ``w_l``, kernel offset ``c``.
    network : nn.Module
        Feature network in eval mode with named stages, on the images' device and dtype: the
        paper's ResNet-50 (:func:`augengine.models.resnet50` with local ImageNet weights loaded by
        :func:`augengine.models.load_weights`; nothing is downloaded). Its parameters receive no
        gradient.
    relevance : torch.Tensor (N, H, W) or (N, 1, H, W), optional
        LRP relevance of each content image at input resolution (e.g. :func:`augengine.explain.lrp`
        summed over channels), weighting the content loss; None: plain Eq. 2 ("without XAI").
    iterations : int, optional
        Optimiser steps (default 1000, the paper's count).
    lr : float, optional
        Step size; default :data:`DEFAULT_LR` of the optimiser.
    optimizer : {"adam", "lbfgs"}, optional
        Adam (default) or L-BFGS with a strong-Wolfe line search, one quasi-Newton step per
        iteration. L-BFGS shares its curvature history and line search across the whole batch,
        so batched pairs no longer evolve exactly as they would alone.
    init : "content" or torch.Tensor (N, 1, H, W), optional
        Start from the content images (default, as the paper) or from the given images (e.g.
        noise, as Gatys et al.).
    callback : callable, optional
        ``callback(iteration, images, losses)`` after every step, with the 1-based iteration, the
        current images (detached) and the ``(N,)`` losses evaluated before the step; returning
        True stops early.

    Returns
    -------
    StylizeResult
        ``images`` (N, 1, H, W) in [0, 1] and the loss ``history`` (T, N).

    Raises
    ------
    InputError
        Images of the wrong shape or dtype, a style batch that is neither N nor 1.
    ConfigError
        ``iterations < 1``, ``lr <= 0``, an unknown optimiser or init, a network in training
        mode (BatchNorm would mix the pairs and update its statistics).

    References
    ----------
    Gatys, Ecker & Bethge 2016; seed 002, Eqs. 1, 2, 14 and Step 1 (1000 iterations).

    Examples
    --------
    >>> import torch
    >>> from augengine.models import resnet18
    >>> from augengine.nst import StyleTransferLoss
    >>> loss = StyleTransferLoss(beta=1e3, style_layers=("relu", "layer1"))
    >>> content, style = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    >>> result = stylize(content, style, loss, resnet18().eval(), iterations=5)
    >>> result.images.shape, result.history.shape
    (torch.Size([2, 1, 32, 32]), torch.Size([5, 2]))
    """
    check_images("content", content)
    n = content.shape[0]
    _check_style(style, n)
    if not isinstance(loss, StyleTransferLoss):
        raise ConfigError(f"loss must be a StyleTransferLoss, got {type(loss).__name__}")
    if network.training:
        raise ConfigError("network is in training mode; call network.eval() first (BatchNorm "
                          "would mix the pairs of a batch and change its running statistics)")
    check_int(iterations, "iterations", 1)
    check_choice(optimizer, "optimizer", tuple(DEFAULT_LR))
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if isinstance(init, str):
        if init != "content":
            raise ConfigError(f"init must be 'content' or a tensor of images, got {init!r}")
        start = content
    else:
        check_images("init", init)
        if init.shape != content.shape:
            raise InputError(f"init: shape {tuple(init.shape)} differs from the content images' "
                             f"{tuple(content.shape)}")
        start = init.to(content)

    layers = tuple(dict.fromkeys((*loss.content_layers, *loss.style_layers)))
    extract = feature_extractor(network, layers)
    with torch.no_grad():
        content_features = extract(imagenet_normalize(content))
        targets = loss.style_targets(_style_features(extract, style, loss.style_layers))
        content_features = {layer: content_features[layer] for layer in loss.content_layers}

    image = start.detach().clone().clamp_(0.0, 1.0).requires_grad_(True)
    if optimizer == "adam":
        opt = torch.optim.Adam([image], lr=lr)
    else:
        opt = torch.optim.LBFGS([image], lr=lr, max_iter=1, line_search_fn="strong_wolfe")

    history: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        per_pair = loss(extract(imagenet_normalize(image)), content_features, targets,
                        relevance=relevance, reduction="none")
        objective = per_pair.sum()
        # Gradient for the pixels only: the network's parameters need none.
        (image.grad,) = torch.autograd.grad(objective, image)
        # L-BFGS's line search evaluates several times per step: keep the first, before the step.
        if len(history) < step:
            history.append(per_pair.detach())
        return objective.detach()

    for step in range(1, iterations + 1):
        opt.step(closure)
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
        if callback is not None and callback(step, image.detach(), history[-1]) is True:
            break
    return StylizeResult(image.detach(), torch.stack(history))
