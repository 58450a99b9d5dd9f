"""Train the feed-forward style-transfer decoder on a store, single-process or on several ranks.

The decoder of :class:`~augengine.nst.feedforward.StyleNet` learns to invert AdaIN-aligned
encoder features into images that minimise the spec paper's objective (seed 002, Eq. 1):

    L = alpha * sum_l L_c,l(D(t), I_c; R) + beta * sum_l w_l L_ps,l(D(t), I_s),
    t = AdaIN(E(I_c), E(I_s))

with the content loss (Eq. 2) weighted per position by the content image's LRP relevance ``R``
(alpha-beta rule, Eq. 16, from a benign/malignant classifier; computed once per image and
cached) and the proposed style loss (Eq. 14), over the within-class (content, style) pairs of
the store (:func:`augengine.nst.pairs.plan_pairs`, 348^2 + 452^2 = 325,408 pairs for the paper's
800 images).

Distributed training follows the paper's Horovod recipe through
:class:`~augengine.train.distributed.Distributed` (the training loop's interface): one disjoint
slice of each epoch's pairs per rank, gradients averaged by ring all-reduce, parameters and
optimiser state broadcast from rank 0, learning rate scaled by the number of ranks; only rank 0
writes checkpoints and logs.

Files in ``out_dir`` (checkpoints in the format of :mod:`augengine.train.checkpoint`):

* ``checkpoint.pt`` -- ``{"decoder", "optimizer", "epoch", "config", "epoch_losses", "sha256"}``
  after every epoch (written atomically); ``sha256`` is :func:`state_sha256` of the decoder.
  :func:`augengine.nst.inference.load_style_net` rebuilds the network from it.
* ``log.jsonl`` -- one JSON line per epoch: epoch, mean loss, seconds, pairs, ranks.
* ``relevance.pt`` -- the cached LRP relevance of every image, keyed by store and classifier.
* ``rank{r}.pt`` -- each rank's final decoder state (``debug_rank_states=True`` only).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from augengine.checks import check_int, check_number
from augengine.errors import ConfigError, InputError
from augengine.explain import fold_batchnorm, lrp as lrp_relevance
from augengine.models import (
    ARCHITECTURES,
    feature_extractor,
    imagenet_normalize,
    load_classifier,
)
from augengine.models.weights import read_checkpoint, seeded, weights_sha256
from augengine.nst.feedforward import adain
from augengine.nst.losses import StyleTransferLoss, uniform_where_unusable
from augengine.nst.pairs import plan_pairs
from augengine.nst.inference import build_style_net, load_checkpoint
from augengine.nst_defaults import ALPHA, BETA, CONTENT_LAYERS, STYLE_LAYERS
from augengine.store import open_store
from augengine.train.checkpoint import (
    CHECKPOINT,
    LOG,
    append_log,
    atomic_save,
    check_resumable,
    cpu_state,
    save_checkpoint,
)
from augengine.train.distributed import Distributed, init_distributed

__all__ = ["CHECKPOINT", "DecoderTrainConfig", "DecoderTrainResult", "PAIRINGS", "train_decoder",
           "train_feedforward"]

log = logging.getLogger(__name__)

#: Pair plans the decoder trains on (:func:`augengine.nst.pairs.plan_pairs`).
PAIRINGS = ("within_class_all", "within_class_k")
_RELEVANCE = "relevance.pt"
# Mixed into the per-epoch shuffling seed so it never coincides with another stream of the job
# (named after the module that first drew it: a new name would change every run's pair order).
_STREAM = zlib.crc32(b"augengine.nst.training.epoch_order")
# Settings that may change when a run is resumed; every other one must match the checkpoint.
_RESUMABLE = ("epochs",)


@dataclass(frozen=True)
class DecoderTrainConfig:
    """Every setting of a decoder training run, checked when made; the defaults are the NST
    training defaults (``jobs/train_nst.py`` reads its own from here).

    Parameters
    ----------
    store_path : str or Path
        An augengine store: ``images`` (N, H, W) uint8, ``labels``, ``manifest.parquet`` (only
        its rows are used). Its images are read into host memory once (uint8: 800 images of
        256 x 256 take 52 MB).
    out_dir : str or Path
        Where the checkpoint, log and relevance cache go (created).
    encoder_weights : str or Path, optional
        Local checkpoint of the ``arch`` encoder, its ``fc`` ignored: ImageNet weights, or a
        classifier trained on the store (``augengine train classifier``; a recorded ``arch``
        must equal ``arch``; on the 64-pixel phantoms it trained no better decoder than the
        random encoder, docs/nst.md "Decoder quality"). None: seeded random initialisation,
        with a warning -- nothing is downloaded.
    classifier_weights : str or Path, optional
        Local benign/malignant classifier (e.g. ``checkpoint.pt`` of ``augengine train
        classifier``; its architecture and classes are read from the weights) whose LRP
        relevance weights the content loss. None: a seeded random classifier, with a warning.
    layer : str, optional
        Encoder stage of AdaIN (default ``"layer3"``).
    epochs : int, optional
        Total epochs; a resumed run trains only the missing ones (default 10).
    batch_size : int, optional
        Pairs per step and rank (default 8).
    lr : float, optional
        Adam learning rate of one process (default 1e-4, Huang & Belongie's); multiplied by the
        number of ranks.
    lrp : bool, optional
        Weight the content loss by LRP relevance (default True; False is the paper's "without
        XAI" model).
    pairing : {"within_class_all", "within_class_k"}, optional
        Pair plan (:func:`augengine.nst.pairs.plan_pairs`): all within-class pairs (default, the
        paper's) or one random other image of the class per content image (``k = 1``).
    seed : int, optional
        Seeds initialisation, the pair plan and every epoch's order (the same on every rank).
    horovod : bool, optional
        Distributed training as a rank of ``horovodrun`` (``horovod.ray.RayExecutor``); a process
        no launcher started trains alone.
    resume : bool, optional
        Continue from ``out_dir/checkpoint.pt`` when present (default True); its settings must
        match this run's except ``epochs``. False starts afresh and overwrites it.
    arch : {"resnet18", "resnet50"}, optional
        Encoder and loss network (default ResNet-50, the paper's).
    image_size : int, optional
        Train on ``image_size`` squared images (bilinear, antialiased); None keeps the store's.
    alpha, beta : float, optional
        Content and style weights of Eq. 1. The paper sets ``alpha = 1`` and does not give its
        ``beta``; the default 1e4 is a starting point to tune, not a value from the paper.
    content_layers, style_layers : sequence of str, optional
        Loss layers (defaults ``("layer2",)`` and all five ResNet stages).
    c : float, optional
        Polynomial-kernel offset of the MMD style loss (default 0).
    device : str or torch.device, optional
        Default ``cuda`` (on a rank ``cuda:<local rank>``) when available, else ``cpu``.
    debug_rank_states : bool, optional
        Every rank saves its final decoder to ``out_dir/rank{r}.pt`` (to check they agree).

    Raises
    ------
    ConfigError
        One line naming the setting, e.g. ``"epochs must be an integer >= 1, got 0"``.

    Examples
    --------
    >>> DecoderTrainConfig("out/busi.zarr", "out/nst", epochs=20).recorded()["lr"]
    0.0001
    """

    store_path: str | Path
    out_dir: str | Path
    encoder_weights: str | Path | None = None
    classifier_weights: str | Path | None = None
    layer: str = "layer3"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    lrp: bool = True
    pairing: str = "within_class_all"
    seed: int = 0
    horovod: bool = False
    resume: bool = True
    _: KW_ONLY
    arch: str = "resnet50"
    image_size: int | None = None
    alpha: float = ALPHA
    beta: float = BETA
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    c: float = 0.0
    device: str | torch.device | None = None
    debug_rank_states: bool = False

    def __post_init__(self):
        object.__setattr__(self, "lrp", bool(self.lrp))
        object.__setattr__(self, "content_layers", tuple(self.content_layers))
        object.__setattr__(self, "style_layers", tuple(self.style_layers))
        for name in ("epochs", "batch_size"):
            check_int(getattr(self, name), name, 1)
        check_number(self.lr, "lr", positive=True)
        if self.pairing not in PAIRINGS:
            raise ConfigError(f"pairing must be one of {', '.join(PAIRINGS)}, got "
                              f"{self.pairing!r}")
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"arch must be one of {', '.join(ARCHITECTURES)}, got "
                              f"{self.arch!r}")
        if self.image_size is not None:
            check_int(self.image_size, "image_size", 32)
        check_int(self.seed, "seed", 0)

    def recorded(self, encoder_sha256: str | None = None,
                 classifier_sha256: str | None = None) -> dict:
        """The settings a checkpoint records (and a resumed run must match, but ``epochs``),
        with the sha256 of the weights files; :func:`augengine.nst.inference.load_style_net`
        rebuilds the network from them."""
        return {"arch": self.arch, "layer": self.layer, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "lrp": self.lrp,
                "pairing": self.pairing, "seed": self.seed, "image_size": self.image_size,
                "alpha": self.alpha, "beta": self.beta,
                "content_layers": list(self.content_layers),
                "style_layers": list(self.style_layers), "c": self.c,
                "encoder_sha256": encoder_sha256, "classifier_sha256": classifier_sha256}


@dataclass(frozen=True)
class DecoderTrainResult:
    """What :func:`train_decoder` did.

    Attributes
    ----------
    checkpoint : Path
        ``out_dir/checkpoint.pt``.
    epoch_losses : tuple of float
        Mean training loss (Eq. 1) of every epoch so far, resumed ones included, averaged over
        all ranks' pairs.
    start_epoch : int
        Epochs already done when this call began (0 for a fresh run).
    epochs_run : int
        Epochs this call trained.
    rank : int
        This process's rank (0 alone); only rank 0 writes files.
    """

    checkpoint: Path
    epoch_losses: tuple[float, ...]
    start_epoch: int
    epochs_run: int
    rank: int = 0


# ------------------------------------------------------------------------------ data and LRP


def _load_store(store_path: Path):
    """All valid images (uint8 tensor (n, 1, H, W)), their labels (n,) and the store's identity."""
    view = open_store(store_path)
    indices = view.manifest.column("index").to_numpy().astype(np.int64)
    labels = view.manifest.column("label").to_numpy().astype(np.int64)
    if indices.size < 2:
        raise InputError(f"{store_path}: the manifest lists {indices.size} samples, need >= 2")
    images = view.group["images"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(f"{store_path}: images must be (N, H, W) uint8, got {images.shape} "
                         f"{images.dtype}")
    pixels = torch.from_numpy(np.ascontiguousarray(images.oindex[indices])).unsqueeze(1)
    identity = view.attrs.get("manifest_sha256") or hashlib.sha256(
        indices.tobytes() + labels.tobytes()
    ).hexdigest()
    return pixels, labels, identity


def _as_unit(pixels: torch.Tensor, image_size: int | None, device) -> torch.Tensor:
    """uint8 ``(B, 1, H, W)`` as floats in [0, 1] on ``device``, resized (bilinear, antialiased)
    to ``image_size`` squared when given."""
    x = pixels.to(device).float().div_(255.0)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return x


def _build_classifier(config: DecoderTrainConfig, num_labels: int):
    """The classifier LRP explains: ``classifier_weights`` (architecture and classes read from
    the weights), or a seeded random ``arch`` with a warning."""
    weights = config.classifier_weights
    if weights is None:
        warnings.warn(
            "no classifier_weights given: LRP explains a randomly initialised classifier, so the "
            "content-loss weights are not meaningful; train one with `augengine train "
            "classifier`",
            stacklevel=3,
        )
        model = seeded(config.seed + 2,
                       lambda: ARCHITECTURES[config.arch](num_classes=max(num_labels, 2)))
    else:
        model = load_classifier(weights)
    num_classes = model.fc.out_features
    if num_labels > num_classes:
        raise InputError(f"{weights}: classifier has {num_classes} classes, the store "
                         f"has labels up to {num_labels - 1}")
    return model.eval()


def _compute_relevance(classifier, pixels, labels, positions, config: DecoderTrainConfig,
                       device) -> torch.Tensor:
    """LRP relevance ``(len(positions), H, W)`` (summed over the 3 input channels) of each
    image's own label, in batches."""
    folded = fold_batchnorm(classifier.to(device))
    out = []
    for start in range(0, positions.size, config.batch_size):
        chunk = positions[start:start + config.batch_size]
        x = imagenet_normalize(_as_unit(pixels[chunk], config.image_size, device))
        target = torch.from_numpy(labels[chunk]).to(device)
        out.append(lrp_relevance(folded, x, target).sum(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0)


def _relevance(config: DecoderTrainConfig, settings: dict, pixels, labels, device,
               dist: Distributed) -> torch.Tensor:
    """The relevance of every image, from ``out_dir/relevance.pt`` when it was computed for the
    same store, classifier and image size; else computed (each rank a slice) and cached."""
    key = {"store": settings["store"], "classifier_sha256": settings["classifier_sha256"],
           "arch": config.arch, "image_size": config.image_size, "seed": config.seed}
    cache = Path(config.out_dir) / _RELEVANCE
    if cache.is_file():
        saved = read_checkpoint(cache)
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["relevance"]
    classifier = _build_classifier(config, int(labels.max()) + 1)
    positions = np.arange(labels.size)[dist.rank::dist.size]
    mine = _compute_relevance(classifier, pixels, labels, positions, config, device)
    relevance = torch.empty((labels.size, *mine.shape[1:]), dtype=mine.dtype)
    for part_positions, part in dist.gather_objects((positions, mine)):
        relevance[torch.from_numpy(part_positions)] = part
    relevance = uniform_where_unusable(relevance)
    if dist.rank == 0:
        atomic_save({"key": key, "relevance": relevance}, cache)
    return relevance


# ------------------------------------------------------------------------------ training


def _epoch_rows(n_pairs: int, epoch: int, seed: int, rank: int, size: int) -> np.ndarray:
    """This rank's pair rows for ``epoch``: a seeded shuffle of all pairs, cut to a multiple of
    ``size`` (every rank must run the same number of all-reduce steps), dealt round-robin."""
    order = np.random.default_rng((seed, epoch, _STREAM)).permutation(n_pairs)
    return order[: (n_pairs // size) * size][rank::size]


def train_decoder(config: DecoderTrainConfig) -> DecoderTrainResult:
    """Train the :class:`~augengine.nst.feedforward.StyleNet` decoder on a store's within-class
    pairs; checkpoint every epoch, resume.

    Parameters
    ----------
    config : DecoderTrainConfig

    Returns
    -------
    DecoderTrainResult

    Raises
    ------
    InputError
        Missing or malformed store, weights or checkpoint.
    ConfigError
        An unimportable Horovod on a Horovod rank, a checkpoint from other settings, fewer
        pairs than ranks.

    Examples
    --------
    >>> result = train_decoder(DecoderTrainConfig(
    ...     "out/busi.zarr", "out/nst", "resnet50-imagenet.pth",
    ...     "runs/cls/checkpoint.pt", epochs=20))                       # doctest: +SKIP
    >>> result.epoch_losses[-1] < result.epoch_losses[0]               # doctest: +SKIP
    True
    """
    settings = config.recorded(
        weights_sha256(config.encoder_weights),
        weights_sha256(config.classifier_weights) if config.lrp else None)
    cuda = torch.cuda.is_available()
    dist = init_distributed("horovod" if config.horovod else None, "cuda" if cuda else "cpu")
    finished = False
    try:
        device = torch.device(config.device if config.device is not None
                              else f"cuda:{dist.local_rank}" if cuda else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives run on the current device
        if dist.name != "single" and device.type == "cpu":
            # Ranks sharing a host would otherwise each start one thread per core.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.local_size))
        result = _train(config, settings, dist, device)
        finished = True
        return result
    finally:
        dist.close(finished)


def _train(config: DecoderTrainConfig, settings: dict, dist: Distributed,
           device: torch.device) -> DecoderTrainResult:
    store_path, out_dir = Path(config.store_path), Path(config.out_dir)
    loss_fn = StyleTransferLoss(alpha=config.alpha, beta=config.beta,
                                content_layers=config.content_layers,
                                style_layers=config.style_layers, c=config.c)
    pixels, labels, store_id = _load_store(store_path)
    settings["store"] = store_id
    pairs = plan_pairs(labels, rule=config.pairing,
                       k=1 if config.pairing == "within_class_k" else None, seed=config.seed)
    if pairs.shape[0] < dist.size:
        raise ConfigError(f"{store_path}: {pairs.shape[0]} pairs cannot be shared by "
                          f"{dist.size} ranks")
    out_dir.mkdir(parents=True, exist_ok=True)
    relevance = (_relevance(config, settings, pixels, labels, device, dist).to(device)
                 if config.lrp else None)

    net = build_style_net(settings, config.encoder_weights).to(device)
    loss_net = feature_extractor(net.encoder,
                                 tuple(dict.fromkeys((*config.content_layers,
                                                      *config.style_layers))))
    lr = config.lr * dist.size
    optimizer = torch.optim.Adam(net.decoder.parameters(), lr=lr)

    start_epoch, epoch_losses = 0, []
    checkpoint_path = out_dir / CHECKPOINT
    # Every rank reads and checks the checkpoint, so a mismatch stops all of them (rather than
    # leaving the others waiting in a broadcast); the state used is rank 0's, broadcast below.
    if config.resume and checkpoint_path.is_file():
        checkpoint = load_checkpoint(checkpoint_path)
        check_resumable(checkpoint["config"], settings, _RESUMABLE, checkpoint_path,
                        "use another out_dir or resume=False")
        net.decoder.load_state_dict(checkpoint["decoder"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, epoch_losses = int(checkpoint["epoch"]), list(checkpoint["epoch_losses"])
    for group in optimizer.param_groups:  # the saved rate was scaled by the saved run's ranks
        group["lr"] = lr
    start_epoch, epoch_losses = dist.broadcast_object((start_epoch, epoch_losses))
    _, optimizer = dist.prepare(net.decoder, optimizer)
    # Only a resumed optimizer state needs broadcasting (fresh ones are equal and empty).
    dist.broadcast_state(net.decoder, optimizer, with_optimizer=start_epoch > 0)
    if dist.rank == 0 and start_epoch == 0:
        (out_dir / LOG).unlink(missing_ok=True)  # a fresh run's log starts empty

    net.train()
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        rows = _epoch_rows(pairs.shape[0], epoch, config.seed, dist.rank, dist.size)
        total = torch.zeros(2, dtype=torch.float64)
        for start in range(0, rows.size, config.batch_size):
            batch = pairs[rows[start:start + config.batch_size]]
            value = _step(net, loss_net, loss_fn, optimizer, pixels, batch, relevance,
                          config.image_size, device)
            total += torch.tensor([value * len(batch), len(batch)], dtype=torch.float64)
        total = dist.sum(total)
        epoch_losses.append(float(total[0] / total[1]))
        if dist.rank == 0:
            seconds = time.perf_counter() - began
            save_checkpoint(checkpoint_path, {
                "decoder": cpu_state(net.decoder), "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1, "config": settings, "epoch_losses": list(epoch_losses),
            }, weights="decoder")
            _log_epoch(out_dir, epoch + 1, epoch_losses[-1], seconds, int(total[1]), dist.size)

    if config.debug_rank_states:
        save_checkpoint(out_dir / f"rank{dist.rank}.pt", {"decoder": cpu_state(net.decoder)},
                        weights="decoder")
    return DecoderTrainResult(checkpoint_path, tuple(epoch_losses), start_epoch,
                              max(0, config.epochs - start_epoch), dist.rank)


def _step(net, loss_net, loss_fn, optimizer, pixels, batch, relevance, image_size,
          device) -> float:
    """One optimiser step on a batch of (content, style) rows; returns the batch's mean loss."""
    content = _as_unit(pixels[batch[:, 0]], image_size, device)
    style = _as_unit(pixels[batch[:, 1]], image_size, device)
    with torch.no_grad():
        aligned = adain(net.encode(content), net.encode(style), net.eps)
        content_features = loss_net(imagenet_normalize(content))
        targets = loss_fn.style_targets(loss_net(imagenet_normalize(style)))
    generated = net.decode(aligned, size=content.shape[-2:])
    weights = None if relevance is None else relevance[torch.from_numpy(batch[:, 0]).to(device)]
    loss = loss_fn(loss_net(imagenet_normalize(generated)), content_features, targets,
                   relevance=weights)
    optimizer.zero_grad()  # Horovod's takes no set_to_none (torch's default is True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _log_epoch(out_dir: Path, epoch: int, loss: float, seconds: float, pairs: int,
               ranks: int) -> None:
    append_log(out_dir, {"epoch": epoch, "loss": loss, "seconds": round(seconds, 3),
                         "pairs": pairs, "ranks": ranks})
    log.info("epoch %d: loss %.6g, %d pairs, %.1f s on %d rank(s)", epoch, loss, pairs, seconds,
             ranks)


def train_feedforward(*args, **kwargs) -> DecoderTrainResult:
    """:func:`train_decoder` called with the fields of :class:`DecoderTrainConfig` as arguments.

    Examples
    --------
    >>> result = train_feedforward("out/busi.zarr", "out/nst", "resnet50-imagenet.pth",
    ...                            "runs/cls/checkpoint.pt", epochs=20)  # doctest: +SKIP
    >>> result.epoch_losses[-1] < result.epoch_losses[0]  # doctest: +SKIP
    True
    """
    return train_decoder(DecoderTrainConfig(*args, **kwargs))
