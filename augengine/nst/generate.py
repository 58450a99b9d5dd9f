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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from augengine.errors import ConfigError, InputError
from augengine.nst.feedforward import (
    StyleNet,
    _check_alpha,
    align_statistics,
    blend,
    feature_stats,
)

__all__ = ["generate", "image_statistics", "to_uint8", "to_unit"]


def to_unit(images: np.ndarray, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 grey images ``(B, H, W)`` as a ``(B, 1, H, W)`` float tensor in [0, 1] (``/ 255``).

    Examples
    --------
    >>> import numpy as np
    >>> to_unit(np.array([[[0, 255]]], dtype=np.uint8)).tolist()
    [[[[0.0, 1.0]]]]
    """
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    return pixels.to(device=device, dtype=dtype).div_(255.0).unsqueeze(1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 1, H, W)`` floats in [0, 1] as uint8 ``(B, H, W)`` on the host: ``round(255 x)``,
    clipped to [0, 255].

    Examples
    --------
    >>> import torch
    >>> to_uint8(torch.tensor([[[[0.0, 0.5, 1.2]]]])).tolist()
    [[[0, 128, 255]]]
    """
    scaled = images[:, 0].float().clamp(0.0, 1.0).mul(255.0).round()
    return scaled.to(torch.uint8).cpu().numpy()


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


def _check_pairs(pairs, n_images: int) -> np.ndarray:
    array = np.asarray(pairs)
    well_formed = array.ndim == 2 and array.shape[1] == 2 and array.shape[0] > 0
    if not well_formed or array.dtype.kind not in "iu":
        raise InputError(
            f"pairs: expected a non-empty (M, 2) integer array of (content, style) indices, got "
            f"shape {array.shape} of {array.dtype}"
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
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    alpha: float = 1.0,
    max_feature_bytes: float | None = None,
    statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Style every (content, style) pair of a plan, encoding each image once; yield uint8 batches.

    Phase 1 encodes every image the plan uses once, ``batch_size`` at a time, and keeps its
    per-channel statistics (:func:`~augengine.nst.feedforward.feature_stats`) and, for images
    used as content, its features. The features stay on ``device`` when they fit in
    ``max_feature_bytes``; otherwise they are kept in host memory and each pair batch's content
    features are copied over. Phase 2 runs AdaIN from the stored statistics and the
    decoder, ``batch_size`` pairs at a time, in the plan's row order.

    Parameters
    ----------
    net : StyleNet
        Trained network; moved to ``device`` (and to channels-last when asked) and set to eval
        mode, in place.
    images : array (N, H, W) uint8
        Source images (NumPy, or a Zarr array such as a store's ``images``, read in batches);
        indices in ``pairs`` refer to its rows.
    pairs : array_like (M, 2) of int
        ``(content, style)`` rows, e.g. :func:`augengine.nst.pairs.plan_pairs`.
    batch_size : int, optional
        Images per encoder batch and pairs per decoder batch (default 32).
    device : str or torch.device, optional
        Where to run; default: where ``net``'s parameters are.
    dtype : torch.dtype, optional
        Autocast dtype, e.g. ``torch.bfloat16`` on GPUs (statistics and AdaIN stay float32);
        None (default) runs in the network's own dtype.
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

    Yields
    ------
    rows : ndarray (B,) int64
        Row indices into ``pairs`` of this batch.
    images : ndarray (B, H, W) uint8
        The styled images, at the content images' size: ``round(255 x)``.

    Raises
    ------
    InputError
        ``images`` not (N, H, W) uint8, or ``pairs`` not (M, 2) indices into it (raised at the
        call, before anything runs).
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
    pairs = _check_pairs(pairs, n_images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_alpha(alpha)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device).eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    budget = _feature_budget(device) if max_feature_bytes is None else max_feature_bytes
    if statistics is not None and len(statistics[0]) != n_images:
        raise InputError(f"statistics cover {len(statistics[0])} images, images has {n_images}")
    return _run(net, images, pairs, (height, width), batch_size, device, dtype, channels_last,
                alpha, budget, statistics)


def image_statistics(net: StyleNet, images, batch_size: int = 32, device=None,
                     dtype: torch.dtype | None = None, channels_last: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std of the encoder features of every image of ``images`` (N, H, W)
    uint8, each (N, C, 1, 1) on ``device``: the style side of AdaIN, for ``generate(...,
    statistics=...)``."""
    n_images, _, _ = _check_images(images)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device).eval()
    everything = np.arange(n_images)
    mean, std, _ = _encode(net, images, everything, np.full(n_images, -1), batch_size, device,
                           dtype, channels_last, budget=0.0)
    return mean, std


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _encode(net, images, indices, content_slot, batch_size, device, dtype, channels_last, budget):
    """Encode ``images[indices]`` once each: their channel statistics (rows follow ``indices``)
    and a bank of the features of those with ``content_slot >= 0`` (rows = that slot)."""
    float_dtype = next(net.parameters()).dtype
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    n_contents = int((content_slot[indices] >= 0).sum())
    # Inference mode is entered per batch, never across a yield: it is thread-local state that
    # would otherwise leak into the caller's code between batches.
    means, stds, bank = [], [], None
    for start in range(0, indices.size, batch_size):
        chunk = indices[start:start + batch_size]
        with torch.inference_mode():
            x = to_unit(_read(images, chunk), device, float_dtype)
            with _autocast(device, dtype):
                features = net.encode(x.contiguous(memory_format=memory_format))
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


def _run(net, images, pairs, size, batch_size, device, dtype, channels_last, alpha, budget,
         statistics):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    contents = np.unique(pairs[:, 0])
    if statistics is None:
        used = np.unique(pairs)
    else:
        used = contents
    # slot: row of an image in the statistics; content_slot: its row in the feature bank.
    n_slots = max(int(pairs.max()) + 1, len(statistics[0]) if statistics is not None else 0)
    slot = np.full(n_slots, -1, dtype=np.int64)
    content_slot = np.full_like(slot, -1)
    content_slot[contents] = np.arange(contents.size)
    mean, std, bank = _encode(net, images, used, content_slot, batch_size, device, dtype,
                              channels_last, budget)
    if statistics is None:
        slot[used] = np.arange(used.size)
    else:
        slot[:] = np.arange(n_slots)
        mean, std = statistics

    for start in range(0, pairs.shape[0], batch_size):
        rows = np.arange(start, min(start + batch_size, pairs.shape[0]))
        content, style = pairs[rows, 0], pairs[rows, 1]
        with torch.inference_mode():
            features = bank[torch.from_numpy(content_slot[content]).to(bank.device)].to(device)
            c = torch.from_numpy(slot[content]).to(device)
            s = torch.from_numpy(slot[style]).to(device)
            aligned = blend(align_statistics(features, mean[c], std[c], mean[s], std[s]),
                            features, alpha)
            with _autocast(device, dtype):
                out = net.decode(aligned.contiguous(memory_format=memory_format), size)
            batch = to_uint8(out)
        yield rows, batch


def _allocate_bank(count: int, example: torch.Tensor, device: torch.device, budget: float):
    """Storage for ``count`` content feature maps shaped like ``example[0]``: on ``device`` when
    they fit in ``budget`` bytes, else in host memory."""
    shape = (count, *example.shape[1:])
    nbytes = count * example[0].numel() * example.element_size()
    target = device if nbytes <= budget else torch.device("cpu")
    return torch.empty(shape, dtype=example.dtype, device=target)
