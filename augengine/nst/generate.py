"""Mass generation with a trained :class:`~augengine.nst.feedforward.StyleNet`.

The paper's plan (seed 002) styles every image with every image of its class: 800 images give
325,408 pairs (:func:`augengine.nst.pairs.plan_pairs`). The encoder is frozen, so an image's
features and their channel statistics are the same in every pair it appears in. Generation
therefore runs in two phases:

1. encode each image used by the plan exactly once (in batches), keeping the content features
   and the per-channel mean/std of every image;
2. for each batch of pairs, align the stored content features to the stored style statistics
   (AdaIN) and decode.

For 800 images that is 800 encoder passes instead of 2 x 325,408, and the decoder does the rest.

Rows of K references (``multi_reference=True``) are styled by the multi-reference target of
Eqs. 7-9 instead of one style image: see :func:`multi_reference_statistics`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from augengine.checks import check_in_range, check_int
from augengine.determinism import Batches
from augengine.errors import InputError
from augengine.nst.feedforward import (
    StyleNet,
    align_statistics,
    blend,
    feature_stats,
)
from augengine.nst.histogram import multi_reference_target
from augengine.nst_defaults import ALPHA, BATCH_SIZE

__all__ = ["decoder_precision", "generate", "image_statistics", "multi_reference_statistics",
           "to_pixels", "to_uint8", "to_unit"]


def to_unit(images, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 grey images ``(B, H, W)`` (NumPy, or a tensor where it is) as a ``(B, 1, H, W)``
    float tensor in [0, 1] (``/ 255``).

    Examples
    --------
    >>> import numpy as np
    >>> to_unit(np.array([[[0, 255]]], dtype=np.uint8)).tolist()
    [[[[0.0, 1.0]]]]
    """
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.ascontiguousarray(images))
    return images.to(device=device, dtype=dtype).div_(255.0).unsqueeze(1)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` floats in [0, 1] as a uint8 ``(B, H, W)`` tensor where they are:
    ``round(255 x)``, clipped to [0, 255].

    Examples
    --------
    >>> import torch
    >>> to_pixels(torch.tensor([[[[0.0, 0.5, 1.2]]]])).tolist()
    [[[0, 128, 255]]]
    """
    return images[:, 0].float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """:func:`to_pixels` on the host, as a NumPy array."""
    return to_pixels(images).cpu().numpy()


def decoder_precision(precision: str, device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype, channels_last)`` for :func:`generate` under a job's
    ``nst.precision``: ``"auto"`` on a GPU is bf16 and channels-last (the decoder keeps its last
    convolution in float32, :class:`~augengine.nst.feedforward.Decoder`); anything else, and
    ``"auto"`` on a CPU (where bf16 convolutions are slower, not faster), is float32.

    Examples
    --------
    >>> decoder_precision("auto", "cpu"), decoder_precision("fp32", "cuda")
    ((None, False), (None, False))
    >>> decoder_precision("auto", "cuda")
    (torch.bfloat16, True)
    """
    if precision == "auto" and torch.device(device).type == "cuda":
        return torch.bfloat16, True
    return None, False


def _read(images, indices: np.ndarray) -> np.ndarray:
    """``images[indices]`` for a NumPy or Zarr array (Zarr needs orthogonal indexing)."""
    if hasattr(images, "oindex"):
        return np.asarray(images.oindex[indices])
    return np.asarray(images[indices])


def _check_images(images) -> tuple[int, int, int]:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 3 or np.dtype(getattr(images, "dtype", None)) != np.uint8:
        dtype = getattr(images, "dtype", type(images).__name__)
        raise InputError(
            f"images: expected a (N, H, W) uint8 array (NumPy or Zarr), got shape {shape} of "
            f"{dtype}"
        )
    return tuple(int(n) for n in shape)


def _check_pairs(pairs, n_images: int, multi_reference: bool) -> np.ndarray:
    array = np.asarray(pairs)
    k_columns = array.shape[1] - 1 if array.ndim == 2 else 0
    columns_ok = k_columns == 1 or (multi_reference and k_columns > 1)
    if not columns_ok or array.shape[0] == 0 or array.dtype.kind not in "iu":
        accepted = ("or (M, 1 + K) rows of K references" if multi_reference
                    else "(rows of K references need multi_reference=True)")
        raise InputError(
            f"pairs: expected a non-empty (M, 2) integer array of (content, style) indices "
            f"{accepted}, got shape {array.shape} of {array.dtype}"
        )
    outside = (array < 0) | (array >= n_images)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise InputError(
            f"pairs row {row}: image index {array[row, column]} is outside [0, {n_images})"
        )
    return array.astype(np.int64)


def _feature_budget(device: torch.device) -> float:
    """Bytes of device memory the content features may take: half of what is free on a GPU;
    unlimited on the CPU, where they sit in host memory anyway."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / 2
    return float("inf")


def generate(
    net: StyleNet,
    images,
    pairs,
    *,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    alpha: float = ALPHA,
    max_feature_bytes: float | None = None,
    statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    multi_reference: bool = False,
    fixed_batches: bool = False,
    to_host: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray | torch.Tensor]]:
    """Style every (content, style) pair of a plan, encoding each image once; yield uint8 batches.

    Phase 1 encodes every image the plan uses once, ``batch_size`` at a time, and keeps its
    per-channel statistics (:func:`~augengine.nst.feedforward.feature_stats`) and, for images
    used as content, its features. The features stay on ``device`` when they fit in
    ``max_feature_bytes``; otherwise they are kept in host memory and each pair batch's content
    features are copied over. Phase 2 runs AdaIN from the stored statistics and the
    decoder, ``batch_size`` pairs at a time, in the plan's row order.

    With ``multi_reference`` and rows of K >= 2 references, the style side of AdaIN is
    :func:`multi_reference_statistics` of each row's references, encoded per pair batch (each
    distinct reference of a batch once): the target's statistics are not a function of the
    per-image statistics, so only the content side comes from phase 1 or ``statistics``.

    Parameters
    ----------
    net : StyleNet
        Trained network; moved to ``device`` (and to channels-last when asked) and set to eval
        mode, in place.
    images : array (N, H, W) uint8
        Source images (NumPy, or a Zarr array such as a store's ``images``, read in batches);
        indices in ``pairs`` refer to its rows.
    pairs : array_like (M, 2) or, with ``multi_reference``, (M, 1 + K) of int
        ``(content, style)`` rows, e.g. :func:`augengine.nst.pairs.plan_pairs`; or
        ``(content, ref_1, ..., ref_K)`` rows (``rule="within_class_k"``), one image per row.
    batch_size : int, optional
        Images per encoder batch and pairs per decoder batch (default 32).
    device : str or torch.device, optional
        Where to run; default: where ``net``'s parameters are.
    dtype : torch.dtype, optional
        Autocast dtype of the decoder, e.g. ``torch.bfloat16`` on GPUs; None (default) runs
        it in the network's own dtype. The encoder (one pass per image, shared by all its
        pairs), the statistics and AdaIN stay in the network's dtype: bf16 features would move
        the uint8 result by whole grey levels.
    channels_last : bool, optional
        Use the channels-last memory format (faster convolutions on tensor-core GPUs).
    alpha : float, optional
        Content-style trade-off in [0, 1] (default 1, full style), see ``StyleNet.forward``.
    max_feature_bytes : float, optional
        Device memory the stored content features may take; default half the free memory of a
        GPU, unlimited on the CPU.
    statistics : (Tensor, Tensor), optional
        Channel mean and std of EVERY image of ``images`` from :func:`image_statistics`. A caller
        that generates many batches of pairs over the same images (a Ray actor working through
        shards) computes them once; then only the content images of ``pairs`` are encoded here.
    multi_reference : bool, optional
        Accept ``(M, 1 + K)`` rows and style each by the Eq. 7-9 target of its K references
        (default False: ``(M, 2)`` rows only). Rows with K = 1 give the plain pairs' images.
    fixed_batches : bool, optional
        Run every encoder and decoder batch with exactly ``batch_size`` rows, padding the last
        one (:func:`augengine.determinism.pad_rows`), so that on a GPU an image's bytes do not
        depend on how many others share its batch (default False: the last batch is smaller).
        Only the real rows are yielded.
    to_host : bool, optional
        Yield the images as NumPy arrays (default); False keeps them as uint8 tensors on
        ``device`` (:func:`to_pixels`), for a consumer on the same device (a CuPy chain
        taking them through DLPack).

    Yields
    ------
    rows : ndarray (B,) int64
        Row indices into ``pairs`` of this batch.
    images : ndarray or torch.Tensor (B, H, W) uint8
        The styled images, at the content images' size: ``round(255 x)``.

    Raises
    ------
    InputError
        ``images`` not (N, H, W) uint8, or ``pairs`` not (M, 2) (or, with ``multi_reference``,
        (M, 1 + K)) indices into it (raised at the call, before anything runs).
    ConfigError
        ``batch_size < 1`` or ``alpha`` outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from augengine.models import resnet18
    >>> from augengine.nst import StyleNet, plan_pairs
    >>> net = StyleNet(resnet18(), layer="layer2")
    >>> images = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    >>> pairs = plan_pairs([0, 0, 1])                      # (0,0) (0,1) (1,0) (1,1) (2,2)
    >>> [(rows.tolist(), out.shape) for rows, out in generate(net, images, pairs, batch_size=4)]
    [([0, 1, 2, 3], (4, 32, 32)), ([4], (1, 32, 32))]
    """
    n_images, height, width = _check_images(images)
    pairs = _check_pairs(pairs, n_images, multi_reference)
    check_int(batch_size, "batch_size", 1)
    check_in_range(alpha, "alpha", 0, 1)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device).eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    budget = _feature_budget(device) if max_feature_bytes is None else max_feature_bytes
    if statistics is not None and len(statistics[0]) != n_images:
        raise InputError(f"statistics cover {len(statistics[0])} images, images has {n_images}")
    batches = Batches(batch_size, fixed_batches)
    return _run(net, images, pairs, (height, width), batches, device=device, dtype=dtype,
                channels_last=channels_last, alpha=alpha, budget=budget, statistics=statistics,
                to_host=to_host)


def image_statistics(net: StyleNet, images, batch_size: int = BATCH_SIZE, device=None,
                     dtype: torch.dtype | None = None, channels_last: bool = False, *,
                     fixed_batches: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std of the encoder features of every image of ``images`` (N, H, W)
    uint8, each (N, C, 1, 1) on ``device``: the style side of AdaIN, for ``generate(...,
    statistics=...)``. ``fixed_batches`` as in :func:`generate`."""
    n_images, _, _ = _check_images(images)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device).eval()
    everything = np.arange(n_images)
    mean, std, _ = _encode(net, images, everything, np.full(n_images, -1),
                           Batches(batch_size, fixed_batches), device=device, dtype=dtype,
                           channels_last=channels_last, budget=0.0)
    return mean, std


def multi_reference_statistics(reference_features: torch.Tensor, eps: float = 1e-5,
                               bins: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    r"""AdaIN style statistics of K references together: channel mean and std of the Eq. 9 target.

    The feed-forward reading of the paper's multi-reference style loss (seed 002, Eqs. 7-9).
    AdaIN conditions the decoder on one ``(mean, std)`` per channel, so the K references' features
    at the decoder's layer are first turned into the multi-reference target

    .. math:: T = H\big(M(F_1, \dots, F_K), \bar h\big)

    (element-wise max ``M`` over the references, then histogram specification ``H`` onto their
    pooled density histogram ``h_bar``; :func:`augengine.nst.histogram.multi_reference_target`),
    and :func:`~augengine.nst.feedforward.feature_stats` of ``T`` is the style side of AdaIN.

    Since ``H`` gives ``T`` the references' pooled histogram, these statistics approach the pooled
    per-channel mean and std of the K references as the maps grow (up to the histogram's binning);
    the spatial arrangement that the max contributes is not seen by AdaIN. With ``K = 1`` the
    target is the reference itself and this is its plain ``feature_stats``.

    Parameters
    ----------
    reference_features : torch.Tensor (N, K, C, h, w), floating
        Encoder features of each row's K references at the decoder's layer.
    eps : float, optional
        Variance floor of ``feature_stats`` (use the network's ``eps``; default 1e-5).
    bins : int, optional
        Bins of ``h_bar`` (default 256, as the iterative loss).

    Returns
    -------
    mean, std : torch.Tensor (N, C, 1, 1), float32 or wider
        The style statistics of each row, for :func:`~augengine.nst.feedforward.align_statistics`.

    References
    ----------
    Huang & Belongie 2017 (AdaIN); Wang et al. 2020 (mr^2NST); Eqs. 7-9 of seed 002.

    Examples
    --------
    >>> import torch
    >>> refs = torch.rand(2, 3, 8, 4, 4)                # 2 rows, 3 references, 8 channels
    >>> [tuple(t.shape) for t in multi_reference_statistics(refs)]
    [(2, 8, 1, 1), (2, 8, 1, 1)]
    """
    work = torch.promote_types(reference_features.dtype, torch.float32)
    return feature_stats(multi_reference_target(reference_features.to(work), bins), eps)


def _reference_statistics(net, images, references: np.ndarray, batches, device, channels_last,
                          budget) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`multi_reference_statistics` of rows of reference indices ``(B, K)``, encoding each
    distinct reference once."""
    distinct, inverse = np.unique(references, return_inverse=True)
    bank_slot = np.full(int(distinct.max()) + 1, -1, dtype=np.int64)
    bank_slot[distinct] = np.arange(distinct.size)
    _, _, bank = _encode(net, images, distinct, bank_slot, batches, device=device, dtype=None,
                         channels_last=channels_last, budget=budget)
    stacks = bank[torch.from_numpy(inverse.reshape(-1)).to(bank.device)].to(device)
    return multi_reference_statistics(stacks.unflatten(0, references.shape), net.eps)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _encode(net, images, indices, content_slot, batches, *, device, dtype, channels_last, budget):
    """Encode ``images[indices]`` once each: their channel statistics (rows follow ``indices``)
    and a bank of the features of those with ``content_slot >= 0`` (rows = that slot)."""
    float_dtype = next(net.parameters()).dtype
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    n_contents = int((content_slot[indices] >= 0).sum())
    # Inference mode is entered per batch, never across a yield: it is thread-local state that
    # would otherwise leak into the caller's code between batches.
    means, stds, bank = [], [], None
    for rows in batches.split(indices.size):
        chunk = indices[rows]
        with torch.inference_mode():
            x = to_unit(_read(images, indices[batches.run(rows)]), device, float_dtype)
            with _autocast(device, dtype):
                features = net.encode(x.contiguous(memory_format=memory_format))[:rows.size]
            mean, std = feature_stats(features, net.eps)
            means.append(mean)
            stds.append(std)
            keep = np.flatnonzero(content_slot[chunk] >= 0)
            if keep.size:
                if bank is None:
                    bank = _allocate_bank(n_contents, features, device, budget)
                rows = torch.from_numpy(content_slot[chunk[keep]]).to(bank.device)
                bank[rows] = features[torch.from_numpy(keep).to(device)].to(bank.device)
    return torch.cat(means), torch.cat(stds), bank


def _run(net, images, pairs, size, batches, *, device, dtype, channels_last, alpha, budget,
         statistics, to_host):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    contents = np.unique(pairs[:, 0])
    multi = pairs.shape[1] > 2
    # Multi-reference styles are encoded per pair batch (see _reference_statistics).
    used = np.unique(pairs) if statistics is None and not multi else contents
    # slot: row of an image in the statistics; content_slot: its row in the feature bank.
    n_slots = max(int(pairs.max()) + 1, len(statistics[0]) if statistics is not None else 0)
    slot = np.full(n_slots, -1, dtype=np.int64)
    content_slot = np.full_like(slot, -1)
    content_slot[contents] = np.arange(contents.size)
    mean, std, bank = _encode(net, images, used, content_slot, batches, device=device,
                              dtype=None, channels_last=channels_last, budget=budget)
    if statistics is None:
        slot[used] = np.arange(used.size)
    else:
        slot[:] = np.arange(n_slots)
        mean, std = statistics

    for rows in batches.split(pairs.shape[0]):
        run = batches.run(rows)
        content = pairs[run, 0]
        with torch.inference_mode():
            features = bank[torch.from_numpy(content_slot[content]).to(bank.device)].to(device)
            c = torch.from_numpy(slot[content]).to(device)
            if multi:
                style_mean, style_std = _reference_statistics(
                    net, images, pairs[run, 1:], batches, device, channels_last, budget)
            else:
                s = torch.from_numpy(slot[pairs[run, 1]]).to(device)
                style_mean, style_std = mean[s], std[s]
            aligned = blend(align_statistics(features, mean[c], std[c], style_mean, style_std),
                            features, alpha)
            with _autocast(device, dtype):
                out = net.decode(aligned.contiguous(memory_format=memory_format), size)
            batch = to_uint8(out[:rows.size]) if to_host else to_pixels(out[:rows.size])
        yield rows, batch


def _allocate_bank(count: int, example: torch.Tensor, device: torch.device, budget: float):
    """Storage for ``count`` content feature maps shaped like ``example[0]``: on ``device`` when
    they fit in ``budget`` bytes, else in host memory."""
    shape = (count, *example.shape[1:])
    nbytes = count * example[0].numel() * example.element_size()
    target = device if nbytes <= budget else torch.device("cpu")
    return torch.empty(shape, dtype=example.dtype, device=target)
