"""Style-transfer losses of the spec paper (seed 002): Eqs. 1-9 and the proposed style loss, Eq. 14.

Notation of the paper: at layer ``l`` a feature map ``F_l`` has ``N_l`` channels (here ``C``) and
``M_l = H_l W_l`` positions; its Gram matrix ``G_l = F_l F_l^T`` (Eq. 5) is ``C x C``. The total
loss (Eq. 1) is ``alpha L_c + beta L_s`` with the content loss of Eq. 2 (here optionally weighted
by the content image's LRP relevance) and a style loss summed over layers with weights ``w_l``
(Eq. 3). The style term of a layer is, in order of generality:

* ``E_l`` of Gatys et al. (Eq. 4): squared Frobenius distance of Gram matrices, scaled by
  ``1 / (4 C^2 M^2)`` -- :func:`gram_loss`;
* ``MMD^2 / (4 C^2)`` with the polynomial kernel ``k(x, y) = (x^T y + c)^2`` between the sets of
  feature vectors at all positions (Li et al. 2017, Eq. 6) -- :func:`mmd_poly_loss`; for ``c = 0``
  it equals ``E_l`` exactly (proof in :func:`gram_loss`);
* the proposed ``L_ps`` (Eq. 14): that MMD term against the multi-reference target of Eqs. 7-9
  (element-wise max of K references, histogram-specified) -- :func:`proposed_style_loss`.

Every function takes batched torch feature maps ``(N, C, H, W)``, one row per content/style pair,
computes one loss value per pair and returns their mean (``reduction="mean"``) or the ``(N,)``
values (``reduction="none"``). Targets with batch 1 are shared by all N pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from augengine.checks import check_choice, check_int, check_number, check_tensor, describe
from augengine.errors import ConfigError, InputError
from augengine.nst.histogram import multi_reference_target
# RESNET50_LAYERS: stage outputs of ResNet-50 by their torchvision module names, from fine to
# coarse; at a 224 x 224 input 64 x 112^2 ("relu", after conv1), 256 x 56^2, 512 x 28^2,
# 1024 x 14^2, 2048 x 7^2.
from augengine.nst_defaults import ALPHA, CONTENT_LAYERS, RESNET50_LAYERS, STYLE_LAYERS

_REDUCTIONS = ("mean", "none")
_FEATURES = "(N, C, H, W)"

log = logging.getLogger(__name__)


def _check_target(name: str, target: torch.Tensor, features: torch.Tensor) -> None:
    """``target`` must pair with ``features``: batch N or 1, same channels and dtype."""
    check_tensor(target, name, (4,), _FEATURES)
    n, c = features.shape[:2]
    if target.shape[0] not in (1, n) or target.shape[1] != c or target.dtype != features.dtype:
        batch = "1" if n == 1 else f"{n} or 1"
        raise InputError(
            f"{name}: {describe(target)} does not pair with features, a {describe(features)} "
            f"(need batch {batch}, {c} channels, dtype {features.dtype})"
        )


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_sample.mean() if reduction == "mean" else per_sample


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of feature maps, Eq. 5: ``G_ij = sum_k F_ik F_jk`` over the M positions.

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W), floating
        Feature maps of one layer.

    Returns
    -------
    torch.Tensor (N, C, C), same dtype
        Unnormalised channel co-activations (the losses divide by ``M = H W`` themselves).

    References
    ----------
    Gatys, Ecker & Bethge 2016; Eq. 5 of the spec paper (seed 002).

    Examples
    --------
    >>> import torch
    >>> f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    >>> gram_matrix(f)
    tensor([[[ 5., 11.],
             [11., 25.]]])
    """
    check_tensor(features, "features", (4,), _FEATURES)
    flat = features.flatten(2)
    return flat @ flat.transpose(1, 2)


def gram_loss(
    features: torch.Tensor, target_features: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""Gram-matrix style loss ``E_l`` of one layer, Eq. 4 (Gatys et al.).

    .. math:: E_l = \frac{1}{4 C^2} \Big\| \frac{G(F)}{M} - \frac{G(T)}{M_T} \Big\|_F^2

    with ``G`` the Gram matrix of Eq. 5, ``C`` channels and ``M = H W``, ``M_T = H_T W_T``
    positions. When both maps have ``M`` positions this is the paper's
    ``1 / (4 C^2 M^2) sum_ij (G(F) - G(T))_ij^2`` exactly; dividing each Gram matrix by its own
    position count keeps the loss defined when the style image's map has another size.

    **It equals MMD^2 / (4 C^2) with the kernel k(x, y) = (x^T y)^2** (Li et al. 2017). Let
    ``x_1..x_M`` and ``y_1..y_MT`` be the C-vectors at the positions of F and T. Then
    ``sum_ij (x_i^T y_j)^2 = sum_ij sum_ab x_ai x_bi y_aj y_bj = sum_ab G(F)_ab G(T)_ab``, the
    Frobenius product ``<G(F), G(T)>``, and likewise for the F-F and T-T sums, so

    ``MMD^2 = <G_F, G_F>/M^2 + <G_T, G_T>/M_T^2 - 2 <G_F, G_T>/(M M_T) = ||G_F/M - G_T/M_T||_F^2``.

    Hence ``E_l = MMD^2 / (4 C^2)``, the constant of Eq. 6; :func:`mmd_poly_loss` with ``c = 0``
    returns the same number.

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W), floating
        Features of the generated images at layer ``l``.
    target_features : torch.Tensor (N or 1, C, H_T, W_T), same dtype
        Features of the style image(s) (or a multi-reference target) at the same layer.
    reduction : {"mean", "none"}, optional
        ``"mean"`` (default): mean over the N pairs, a scalar; ``"none"``: the ``(N,)`` values.

    Returns
    -------
    torch.Tensor, scalar or (N,)
        Dimensionless; differentiable in both inputs.

    References
    ----------
    Gatys, Ecker & Bethge 2016; Li, Wang, Liu & Hou 2017 ("Demystifying neural style transfer");
    Eqs. 3-6 of the spec paper (seed 002).

    Examples
    --------
    One channel, two positions: ``G(F) = 1 + 1 = 2``, ``G(T) = 0``, so
    ``E = (2/2 - 0)^2 / 4 = 0.25``.

    >>> import torch
    >>> gram_loss(torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    tensor(0.2500)
    """
    check_choice(reduction, "reduction", _REDUCTIONS)
    check_tensor(features, "features", (4,), _FEATURES)
    _check_target("target_features", target_features, features)
    channels = features.shape[1]
    positions = features.shape[2] * features.shape[3]
    target_positions = target_features.shape[2] * target_features.shape[3]
    difference = gram_matrix(features) / positions - gram_matrix(target_features) / target_positions
    per_sample = difference.square().sum(dim=(1, 2)) / (4 * channels**2)
    return _reduce(per_sample, reduction)


def mmd_poly_loss(
    features: torch.Tensor,
    target_features: torch.Tensor,
    c: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""MMD style loss of one layer with the 2nd-order polynomial kernel, Eq. 6 (Li et al. 2017).

    .. math:: L = \frac{1}{4 C^2} \mathrm{MMD}^2[F, T], \qquad k(x, y) = (x^T y + c)^2

    between the set of C-vectors at the ``M`` positions of ``F`` and the ``M_T`` positions of
    ``T`` (biased estimate: every pair of positions, self-pairs included, as in Eq. 6). Expanding
    ``(x^T y + c)^2 = (x^T y)^2 + 2 c x^T y + c^2``: the ``c^2`` terms cancel in MMD^2 (weights
    ``1 + 1 - 2``), the first term gives the Gram distance of :func:`gram_loss`, and the middle
    one ``2 c ||mu_F - mu_T||^2`` with ``mu`` the mean feature vector over positions, so

    ``L = gram_loss(F, T) + c ||mu_F - mu_T||^2 / (2 C^2)``,

    computed in ``O(C^2 M)`` without forming the ``M x M_T`` kernel matrices.

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W), floating
        Features of the generated images at layer ``l``.
    target_features : torch.Tensor (N or 1, C, H_T, W_T), same dtype
        Features of the style image(s) or a multi-reference target.
    c : float, optional
        Kernel offset, >= 0 so the kernel stays positive semi-definite (MMD^2 >= 0). ``0``
        (default) is the Gram loss; ``c > 0`` also matches the mean activation per channel.
    reduction : {"mean", "none"}, optional
        Mean over the N pairs (default) or the ``(N,)`` values.

    Returns
    -------
    torch.Tensor, scalar or (N,)
        Dimensionless; differentiable in both inputs.

    References
    ----------
    Li, Wang, Liu & Hou 2017, Eqs. 1, 2 and 8; Eq. 6 of the spec paper (seed 002).

    Examples
    --------
    One channel, means 1 and 0: ``0.25 + 2 * 1 / 2 = 1.25``.

    >>> import torch
    >>> mmd_poly_loss(torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), c=2.0)
    tensor(1.2500)
    """
    c = check_number(c, "c", nonnegative=True)
    check_choice(reduction, "reduction", _REDUCTIONS)
    per_sample = gram_loss(features, target_features, reduction="none")
    if c:
        mean_gap = features.mean(dim=(2, 3)) - target_features.mean(dim=(2, 3))
        per_sample = per_sample + c * mean_gap.square().sum(dim=1) / (2 * features.shape[1] ** 2)
    return _reduce(per_sample, reduction)


def relevance_weights(relevance: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-position content weights from an input-resolution relevance map (LRP heatmap).

    ``w = P(max(R, 0)) / mean(P(max(R, 0)))``: negative relevance (evidence against the class) is
    clipped to 0 at the input resolution, ``P`` average-pools the map to the feature layer's
    ``H x W`` (``adaptive_avg_pool2d``, so each weight is the mean positive relevance of the input
    pixels under that feature position), and each image's weights are scaled to mean 1. Uniform
    relevance thus gives ``w = 1`` everywhere, and the weighted content loss has the scale of Eq. 2.

    Parameters
    ----------
    relevance : torch.Tensor (N, H0, W0) or (N, 1, H0, W0), floating
        Relevance of each input pixel of the content images (any units; only ratios matter).
    size : (int, int)
        ``(H, W)`` of the feature layer.

    Returns
    -------
    torch.Tensor (N, H, W), dtype of ``relevance``, detached
        Non-negative weights with mean 1 per image.

    Raises
    ------
    InputError
        If an image has no finite positive relevance (the weights would be 0/0).

    Examples
    --------
    >>> import torch
    >>> r = torch.zeros(1, 4, 4); r[0, :2, :2] = 1.0     # only the top-left quarter is relevant
    >>> relevance_weights(r, (2, 2))
    tensor([[[4., 0.],
             [0., 0.]]])
    """
    check_tensor(relevance, "relevance", (3, 4), "(N, H, W) or (N, 1, H, W)")
    if relevance.ndim == 4 and relevance.shape[1] != 1:
        raise InputError(f"relevance: expected one channel, got a {describe(relevance)}")
    maps = relevance.detach().reshape(relevance.shape[0], 1, *relevance.shape[-2:])
    pooled = F.adaptive_avg_pool2d(maps.clamp_min(0), size)[:, 0]
    mean = pooled.mean(dim=(1, 2), keepdim=True)
    usable = torch.isfinite(mean) & (mean > 0)
    if not bool(usable.all()):
        sample = int((~usable).flatten().nonzero()[0])
        raise InputError(
            f"relevance: sample {sample} has no finite positive relevance, so it cannot weight the "
            "content loss (pass relevance=None for plain Eq. 2)"
        )
    return pooled / mean


def content_loss(
    features: torch.Tensor,
    content_features: torch.Tensor,
    relevance: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Content loss of one layer, Eq. 2, optionally weighted by the content image's relevance.

    .. math:: L_c = \frac{1}{2} \sum_{j=1}^{M} w_j \sum_{i=1}^{C} (F_{ij} - P_{ij})^2

    with ``F`` the generated and ``P`` the content image's features, summed (not averaged) as in
    the paper. ``relevance=None`` sets ``w_j = 1``: plain Eq. 2, the paper's "without XAI" model.
    Otherwise ``w`` = :func:`relevance_weights` of the LRP heatmap pooled to this layer (mean 1
    per image), so the generated image must keep the content where the classifier found evidence
    for the class, and may take on style elsewhere; uniform relevance reproduces Eq. 2 exactly.

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W), floating
        Features of the generated images.
    content_features : torch.Tensor (N or 1, C, H, W), same dtype
        Features of the content images at the same layer and resolution.
    relevance : torch.Tensor (N or 1, H0, W0) or (N or 1, 1, H0, W0), optional
        Input-resolution relevance of the content images (e.g. LRP alpha-beta, Eq. 16); treated as
        a constant.
    reduction : {"mean", "none"}, optional
        Mean over the N pairs (default) or the ``(N,)`` values.

    Returns
    -------
    torch.Tensor, scalar or (N,)
        In squared feature units; differentiable in ``features`` and ``content_features``.

    References
    ----------
    Gatys, Ecker & Bethge 2016; Eq. 2 of the spec paper (seed 002); Montavon, Samek & Mueller
    2018 for LRP.

    Examples
    --------
    >>> import torch
    >>> f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    >>> content_loss(f, torch.zeros_like(f))                    # (1 + 4 + 9 + 16) / 2
    tensor(15.)
    >>> r = torch.zeros(1, 4, 4); r[0, :2, :2] = 1.0             # weights [[4, 0], [0, 0]]
    >>> content_loss(f, torch.zeros_like(f), relevance=r)        # 4 * 1 / 2
    tensor(2.)
    """
    check_choice(reduction, "reduction", _REDUCTIONS)
    check_tensor(features, "features", (4,), _FEATURES)
    _check_target("content_features", content_features, features)
    if content_features.shape[2:] != features.shape[2:]:
        raise InputError(
            f"content_features: {describe(content_features)} does not match the spatial size "
            f"{tuple(features.shape[2:])} of features"
        )
    squared = (features - content_features).square().sum(dim=1)
    if relevance is not None:
        weights = relevance_weights(relevance, tuple(features.shape[2:]))
        if weights.shape[0] not in (1, features.shape[0]):
            raise InputError(
                f"relevance: batch {weights.shape[0]} does not match features' batch "
                f"{features.shape[0]} (need {features.shape[0]} or 1)"
            )
        squared = squared * weights.to(squared.dtype)
    return _reduce(0.5 * squared.sum(dim=(1, 2)), reduction)


def proposed_style_loss(
    features: torch.Tensor,
    reference_features: torch.Tensor,
    c: float = 0.0,
    bins: int = 256,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Proposed style loss ``L_ps`` of one layer, Eq. 14: MMD against the multi-reference target.

    The paper combines the MMD style loss (Eq. 6) with the multi-reference loss (Eqs. 7-9):

    .. math:: L_{ps,l} = \frac{1}{4 C^2} \mathrm{MMD}^2[F_l, T_l], \qquad
              T_l = H(M(F_l(I_{s_1}), \dots, F_l(I_{s_K})), \bar h)

    with the kernel ``(x^T y + c)^2``, i.e. ``mmd_poly_loss(F, multi_reference_target(refs), c)``.
    Eq. 14 as printed is garbled; this reading is the one under which both parents are special
    cases: with ``c = 0`` it is ``E_l`` of Eq. 8 against the Gram matrix ``G_l`` of Eq. 9 (by the
    identity proven in :func:`gram_loss`), and with ``K = 1`` it is Eq. 6 (``c = 0``: Eq. 4).
    The layer sum ``sum_l w_l L_ps,l`` (Eqs. 3 and 7) is done by :func:`total_loss`.

    Parameters
    ----------
    features : torch.Tensor (N, C, H, W), floating
        Features of the generated images at layer ``l``.
    reference_features : torch.Tensor (N or 1, K, C, H', W'), same dtype
        Features of the K style references of each pair; they carry no gradient.
    c : float, optional
        Kernel offset >= 0 (default 0, the Gram kernel).
    bins : int, optional
        Bins of the references' density histogram (default 256), see
        :func:`augengine.nst.histogram.histogram_specification`.
    reduction : {"mean", "none"}, optional
        Mean over the N pairs (default) or the ``(N,)`` values.

    Returns
    -------
    torch.Tensor, scalar or (N,)
        Dimensionless; differentiable in ``features``.

    References
    ----------
    Li et al. 2017; Wang et al. 2020; Eqs. 6-9 and 14 of the spec paper (seed 002).

    Examples
    --------
    >>> import torch
    >>> gen, refs = torch.rand(2, 8, 6, 6), torch.rand(2, 3, 8, 6, 6)   # 3 references per pair
    >>> proposed_style_loss(gen, refs).shape
    torch.Size([])
    """
    check_tensor(features, "features", (4,), _FEATURES)
    target = multi_reference_target(reference_features, bins=bins)
    return mmd_poly_loss(features, target, c=c, reduction=reduction)


def total_loss(
    content_terms: Mapping[str, torch.Tensor],
    style_terms: Mapping[str, torch.Tensor],
    alpha: float,
    beta: float,
    layer_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    r"""Total style-transfer loss, Eq. 1 with the layer sum of Eq. 3.

    .. math:: L = \alpha \sum_{l \in content} L_{c,l} + \beta \sum_{l \in style} w_l L_{s,l}

    The paper uses one content layer and ``w_l = 1`` for every style layer (its Step 1), and sets
    ``alpha = 1`` and ``beta = gamma beta'`` without giving ``beta``'s value.

    Parameters
    ----------
    content_terms, style_terms : mapping of layer name -> torch.Tensor, scalar or (N,)
        Per-layer losses, e.g. from :func:`content_loss` and :func:`proposed_style_loss`; terms of
        shape (N,) give a per-pair total. Either mapping may be empty, not both.
    alpha, beta : float
        Content and style weights, finite and >= 0.
    layer_weights : mapping of style layer name -> float, optional
        ``w_l``; layers not named get 1.0. Every key must be a style layer.

    Returns
    -------
    torch.Tensor, scalar or (N,)

    Examples
    --------
    >>> import torch
    >>> total_loss({"layer2": torch.tensor(2.0)},
    ...            {"relu": torch.tensor(1.0), "layer1": torch.tensor(3.0)},
    ...            alpha=1.0, beta=10.0, layer_weights={"layer1": 0.5})   # 2 + 10 * (1 + 1.5)
    tensor(27.)
    """
    alpha = check_number(alpha, "alpha", nonnegative=True)
    beta = check_number(beta, "beta", nonnegative=True)
    if not content_terms and not style_terms:
        raise ConfigError("total_loss needs at least one content or style term, got none")
    weights = _check_layer_weights(layer_weights, tuple(style_terms))
    content = sum(content_terms.values())
    style = sum(weights.get(layer, 1.0) * term for layer, term in style_terms.items())
    return alpha * content + beta * style


def _check_layer_weights(layer_weights, style_layers: Sequence[str]) -> dict[str, float]:
    if layer_weights is None:
        return {}
    if not isinstance(layer_weights, Mapping):
        raise ConfigError(
            "layer_weights must map style layer names to weights, "
            f"got {type(layer_weights).__name__}"
        )
    for layer in layer_weights:
        if layer not in style_layers:
            raise ConfigError(
                f"layer_weights: {layer!r} is not a style layer (style layers: "
                f"{', '.join(style_layers)})"
            )
    return {
        layer: check_number(w, f"layer_weights[{layer!r}]", nonnegative=True)
        for layer, w in layer_weights.items()
    }


def _check_layers(name: str, layers) -> tuple[str, ...]:
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise ConfigError(f"{name} must be a list of layer names, got {layers!r}")
    layers = tuple(layers)
    if not layers or not all(isinstance(layer, str) and layer for layer in layers):
        raise ConfigError(f"{name} must be a non-empty list of layer names, got {list(layers)!r}")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"{name} names a layer twice: {list(layers)!r}")
    return layers


def _layer(name: str, features: Mapping[str, torch.Tensor], layer: str) -> torch.Tensor:
    if not isinstance(features, Mapping):
        raise InputError(
            f"{name}: expected a mapping of layer name -> features, got {type(features).__name__}"
        )
    if layer not in features:
        raise InputError(
            f"{name}: missing layer {layer!r} (have: {', '.join(map(str, features)) or 'none'})"
        )
    return features[layer]


@dataclass(frozen=True, kw_only=True)
class StyleTransferLoss:
    """The paper's NST objective (Eq. 1) as a configured callable over per-layer feature dicts.

    ``L = alpha sum_{l in content_layers} L_c,l + beta sum_{l in style_layers} w_l L_ps,l`` with
    :func:`content_loss` (relevance-weighted when a relevance map is given) and
    :func:`proposed_style_loss`.

    Default layers (ResNet-50 stage outputs, see ``RESNET50_LAYERS``): style on all five stages,
    one per resolution from 1/2 to 1/32, as Gatys et al. use one VGG layer per block
    (conv1_1 ... conv5_1) so that fine speckle texture and coarse echo patterns are both matched;
    content on ``"layer2"``, which at a 224 x 224 input has the resolution (28 x 28) and width
    (512) of VGG's conv4_2, the content layer of Gatys et al. -- deep enough to be invariant to
    texture, fine enough to keep lesion margins, and the resolution at which the relevance map
    is pooled.

    Parameters
    ----------
    beta : float
        Style weight (the paper's ``gamma beta'``, value not given there: required).
    alpha : float, optional
        Content weight (default 1, as in the paper).
    content_layers, style_layers : sequence of str, optional
        Layer names; defaults ``("layer2",)`` and ``RESNET50_LAYERS``.
    layer_weights : mapping of style layer -> float, optional
        ``w_l`` (default 1 for every layer, as in the paper).
    c : float, optional
        Polynomial-kernel offset of the MMD style term (default 0: Gram kernel).
    bins : int, optional
        Histogram bins of the multi-reference target (default 256).

    Notes
    -----
    The style targets do not change during an optimisation: compute
    ``targets = loss_fn.style_targets(style)`` once and pass ``targets`` as ``style`` on every
    step. Passing the ``(N, K, C, H, W)`` references instead rebuilds the Eq. 9 targets (a sort
    per channel) on each call: for 4 pairs, K = 3 and the five ResNet-50 stages at 224 x 224
    that measured 13.8 s against 2.5 s per loss + backward on 2 CPU cores.

    Examples
    --------
    >>> import torch
    >>> loss_fn = StyleTransferLoss(beta=1e3, content_layers=("layer2",), style_layers=("layer1",))
    >>> gen = {"layer1": torch.rand(2, 4, 8, 8, requires_grad=True),
    ...        "layer2": torch.rand(2, 8, 4, 4)}
    >>> content = {"layer2": torch.rand(2, 8, 4, 4)}
    >>> targets = loss_fn.style_targets({"layer1": torch.rand(2, 3, 4, 8, 8)})   # K=3 references
    >>> loss_fn(gen, content, targets).backward()
    """

    beta: float
    alpha: float = ALPHA
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    layer_weights: Mapping[str, float] | None = None
    c: float = 0.0
    bins: int = 256

    def __post_init__(self):
        check_number(self.alpha, "alpha", nonnegative=True)
        check_number(self.beta, "beta", nonnegative=True)
        check_number(self.c, "c", nonnegative=True)
        check_int(self.bins, "bins", 1)
        object.__setattr__(
            self, "content_layers", _check_layers("content_layers", self.content_layers)
        )
        object.__setattr__(self, "style_layers", _check_layers("style_layers", self.style_layers))
        _check_layer_weights(self.layer_weights, self.style_layers)

    def style_targets(self, style: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target features per style layer; compute once and pass back as ``style`` to reuse.

        ``style[layer]`` is ``(N, K, C, H, W)`` (K references, turned into the Eq. 9 target by
        :func:`augengine.nst.histogram.multi_reference_target`) or ``(N, C, H, W)`` (one
        reference, or a target computed earlier), used as is. Returns detached ``(N, C, H, W)``.
        """
        targets = {}
        for layer in self.style_layers:
            value = _layer("style", style, layer)
            check_tensor(value, f"style[{layer!r}]", (4, 5), "(N, C, H, W) or (N, K, C, H, W)")
            targets[layer] = (
                value.detach() if value.ndim == 4 else multi_reference_target(value, self.bins)
            )
        return targets

    def terms(
        self,
        generated: Mapping[str, torch.Tensor],
        content: Mapping[str, torch.Tensor],
        style: Mapping[str, torch.Tensor],
        relevance: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-layer ``(content_terms, style_terms)``, each ``{layer: (N,) tensor}`` (for logs)."""
        content_terms = {
            layer: content_loss(
                _layer("generated", generated, layer),
                _layer("content", content, layer),
                relevance=relevance,
                reduction="none",
            )
            for layer in self.content_layers
        }
        style_terms = {
            layer: mmd_poly_loss(
                _layer("generated", generated, layer), target, c=self.c, reduction="none"
            )
            for layer, target in self.style_targets(style).items()
        }
        return content_terms, style_terms

    def __call__(
        self,
        generated: Mapping[str, torch.Tensor],
        content: Mapping[str, torch.Tensor],
        style: Mapping[str, torch.Tensor],
        relevance: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Total loss (Eq. 1) of the generated features; mean over pairs or ``(N,)`` values.

        Parameters
        ----------
        generated : mapping layer -> torch.Tensor (N, C, H, W)
            Features of the images being optimised; must hold every content and style layer.
        content : mapping layer -> torch.Tensor (N or 1, C, H, W)
            Features of the content images at the content layers.
        style : mapping layer -> torch.Tensor (N or 1, K, C, H, W) or (N or 1, C, H, W)
            Style references (or precomputed :meth:`style_targets`) at the style layers.
        relevance : torch.Tensor (N, H0, W0) or (N, 1, H0, W0), optional
            Content-image relevance at input resolution; ``None`` is the "without XAI" loss.
        reduction : {"mean", "none"}, optional
        """
        check_choice(reduction, "reduction", _REDUCTIONS)
        content_terms, style_terms = self.terms(generated, content, style, relevance)
        total = total_loss(content_terms, style_terms, self.alpha, self.beta, self.layer_weights)
        return _reduce(total, reduction)


def uniform_where_unusable(relevance: torch.Tensor) -> torch.Tensor:
    """Relevance maps (N, ...) with uniform weights where an image has no finite positive
    relevance (plain Eq. 2 for it): the weighted content loss is undefined there and
    :func:`relevance_weights` would raise. A barely trained classifier can give such maps."""
    positive = relevance.clamp_min(0).flatten(1).sum(dim=1)
    unusable = ~(torch.isfinite(positive) & (positive > 0))
    if unusable.any():
        log.warning("%d image(s) have no positive LRP relevance; their content loss is unweighted",
                    int(unusable.sum()))
        relevance = relevance.clone()
        relevance[unusable] = 1.0
    return relevance

