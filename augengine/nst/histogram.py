"""Multi-reference style targets: element-wise max of reference features, histogram specification.

Eq. 9 of the spec paper (seed 002, after the mr^2NST model of Wang et al. 2020) builds the style
target of layer ``l`` from ``K`` reference images instead of one::

    G_l = H(M(F_l(I_s1), ..., F_l(I_sK)), h_bar)

``M`` takes the element-wise maximum over the ``K`` reference feature maps, ``H`` is a histogram
specification that maps the values of that max map onto ``h_bar``, the density histogram of the
references, and ``G_l`` is the Gram matrix (Eq. 5) of the result. The max keeps the strongest
response of every reference at every position (style diversity); the specification removes the
upward bias the max puts on the value distribution, so the target has the references' statistics.
This module builds the target *features*; ``augengine.nst.losses`` turns them into Gram matrices.

Layout: feature maps are ``(N, C, H, W)`` (one map per content/style pair) and reference stacks
``(N, K, C, H, W)``. Targets are constants of the optimisation, so no gradient flows back into the
references.
"""

from __future__ import annotations

import torch

from augengine.checks import check_int, check_tensor
from augengine.errors import InputError


def max_reference_features(reference_features: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over K reference feature maps, ``M`` of Eq. 9.

    Parameters
    ----------
    reference_features : torch.Tensor (K, C, H, W) or (N, K, C, H, W), floating
        Feature maps of the K style references at one layer (all references resized to the same
        input size, so the maps share C, H and W); the batched form holds one stack per pair.

    Returns
    -------
    torch.Tensor (C, H, W) or (N, C, H, W), same dtype
        ``out[..., c, i, j] = max_k F_k[c, i, j]``. Differentiable: at ties the gradient is shared
        evenly between the maximal references (``torch.amax``).

    References
    ----------
    Wang et al. 2020, multi-reference NST (mr^2NST); Eq. 9 of the spec paper (seed 002).

    Examples
    --------
    >>> import torch
    >>> refs = torch.tensor([[[[1.0, 5.0]]], [[[2.0, 4.0]]]])   # K=2, C=1, H=1, W=2
    >>> max_reference_features(refs)
    tensor([[[2., 5.]]])
    """
    check_tensor(
        reference_features, "reference_features", (4, 5), "(K, C, H, W) or (N, K, C, H, W)"
    )
    return reference_features.amax(dim=-4)


@torch.no_grad()
def histogram_specification(
    values: torch.Tensor, reference_values: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """Map each channel's value distribution onto the references' density histogram, ``H`` of Eq. 9.

    Classic histogram matching, channel by channel, ``out = F_ref^-1(F_src(v))``:

    * ``F_src`` is the empirical CDF of the channel's own values at mid-rank,
      ``F_src(v) = (#{u < v} + #{u <= v}) / (2 P)`` over its ``P`` positions, so distinct values
      sit at ``(r + 1/2) / P`` and tied values share one output.
    * ``F_ref`` is the CDF of ``h_bar``: the density histogram of all ``K`` references' values of
      that channel pooled (the mean of the K per-reference histograms on common edges), with
      ``bins`` equal-width bins spanning ``[min, max]`` of those values. Inside a bin the density
      is taken as uniform, so ``F_ref`` is piecewise linear and its inverse interpolates linearly
      inside the bin that holds the quantile.

    The output therefore has the histogram ``h_bar`` on those bins (exactly when the P input values
    are distinct and every bin's mass is a multiple of ``1/P``), keeps the order of the input
    values (ties stay tied), and lies in the references' ``[min, max]``; a channel whose references
    are constant maps to that constant. Within a bin, values are spread linearly, so each lands
    within one bin width, ``(max - min) / bins``, of the exact quantile of ``h_bar``.

    Parameters
    ----------
    values : torch.Tensor (N, C, H, W), floating
        Maps to re-shape, e.g. the element-wise max of the references (Eq. 9).
    reference_values : torch.Tensor (N, K, C, H', W') or (1, K, C, H', W'), floating
        The references whose pooled per-channel histogram is ``h_bar``; batch 1 is shared by all N.
    bins : int, optional
        Number of histogram bins per channel (default 256, the 8-bit grey-level count).

    Returns
    -------
    torch.Tensor (N, C, H, W), dtype of ``values``
        Specified values. No gradient: the result depends on ``values`` only through ranks, and it
        serves as a constant style target.

    References
    ----------
    Gonzalez & Woods, Digital Image Processing, histogram specification; Wang et al. 2020;
    Eq. 9 of the spec paper (seed 002).

    Examples
    --------
    Four distinct values onto references with 3/4 of their mass in ``[0.5, 2)`` and 1/4 in
    ``[2, 3.5]`` (two bins): quantiles 1/8, 3/8, 5/8 fall in the first bin, 7/8 in the second.

    >>> import torch
    >>> v = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 1, 4)
    >>> ref = torch.tensor([0.5, 0.5, 0.5, 3.5]).reshape(1, 1, 1, 1, 4)
    >>> histogram_specification(v, ref, bins=2).flatten()
    tensor([0.7500, 1.2500, 1.7500, 2.7500])
    """
    check_tensor(values, "values", (4,), "(N, C, H, W)")
    check_tensor(reference_values, "reference_values", (5,), "(N, K, C, H, W)")
    bins = check_int(bins, "bins", 1)
    n, c = values.shape[:2]
    if reference_values.shape[0] not in (1, n) or reference_values.shape[2] != c:
        batch = "1" if n == 1 else f"{n} or 1"
        raise InputError(
            f"reference_values: shape {tuple(reference_values.shape)} does not fit values of shape "
            f"{tuple(values.shape)} (need batch {batch} and {c} channels at axis 2)"
        )
    # Half precision cannot resolve the quantiles (r + 1/2) / P of maps beyond ~2,000 positions.
    work = torch.promote_types(values.dtype, torch.float32)
    src = values.to(work).reshape(n * c, -1).contiguous()
    ref = reference_values.to(work).expand(n, -1, -1, -1, -1).transpose(1, 2).reshape(n * c, -1)

    lo = ref.amin(dim=1, keepdim=True)
    width = (ref.amax(dim=1, keepdim=True) - lo) / bins
    # A constant reference channel has zero width: every value then lands on that constant.
    safe_width = torch.where(width > 0, width, torch.ones_like(width))
    index = ((ref - lo) / safe_width).floor().clamp_(0, bins - 1).long()
    # Integer counts, not float sums: exact, and the same whatever order a GPU adds them in
    # (float atomics are not; torch's deterministic mode refuses a float cumsum on CUDA).
    row_offset = torch.arange(n * c, device=ref.device).unsqueeze(1) * bins
    counts = torch.bincount((index + row_offset).flatten(), minlength=n * c * bins)
    counts = counts.view(n * c, bins)
    cumulative = torch.cat([torch.zeros_like(counts[:, :1]), counts.cumsum(dim=1)], dim=1)
    density = counts.to(work) / ref.shape[1]
    cdf = cumulative.to(work) / ref.shape[1]

    ordered = src.sort(dim=1).values
    below = torch.searchsorted(ordered, src, right=False)
    at_or_below = torch.searchsorted(ordered, src, right=True)
    quantile = (below + at_or_below).to(work) / (2 * src.shape[1])

    # right=True skips empty bins that end exactly at the quantile; the last bin holds the max,
    # so clamping into it never selects an empty bin.
    bin_index = (torch.searchsorted(cdf, quantile, right=True) - 1).clamp_(0, bins - 1)
    mass = density.gather(1, bin_index)
    inside = (quantile - cdf.gather(1, bin_index)) / torch.where(
        mass > 0, mass, torch.ones_like(mass)
    )
    out = lo + (bin_index + inside.clamp_(0, 1)) * width
    return out.reshape(values.shape).to(values.dtype)


def multi_reference_target(reference_features: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Style target features of Eq. 9: histogram-specified element-wise max of K references.

    ``T = H(M(F_1, ..., F_K), h_bar)`` with ``M`` = :func:`max_reference_features` and ``H`` =
    :func:`histogram_specification` against the references themselves. The style losses compare
    the Gram matrix (Eq. 5) of the generated features with that of ``T``.

    With ``K = 1`` the max is the identity and specifying a map onto its own histogram is the
    identity, so the single reference is returned unchanged (not re-binned): the multi-reference
    losses then reduce exactly to their single-reference forms (Eqs. 4 and 6).

    Parameters
    ----------
    reference_features : torch.Tensor (N, K, C, H, W), floating
        K reference feature maps per pair at one layer.
    bins : int, optional
        Bins of the density histogram ``h_bar`` (default 256); see :func:`histogram_specification`.

    Returns
    -------
    torch.Tensor (N, C, H, W), same dtype, detached
        The target features; constants of the style optimisation.

    References
    ----------
    Wang et al. 2020 (mr^2NST); Eqs. 7-9 of the spec paper (seed 002).

    Examples
    --------
    >>> import torch
    >>> refs = torch.rand(2, 3, 8, 5, 5)          # N=2 pairs, K=3 references, C=8
    >>> multi_reference_target(refs).shape
    torch.Size([2, 8, 5, 5])
    """
    check_tensor(reference_features, "reference_features", (5,), "(N, K, C, H, W)")
    bins = check_int(bins, "bins", 1)
    if reference_features.shape[1] == 1:
        return reference_features[:, 0].detach()
    return histogram_specification(
        max_reference_features(reference_features.detach()), reference_features, bins=bins
    )
