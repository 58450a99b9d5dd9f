"""The three training jobs: lesion classifier (seed 002), lesion segmenter (seeds 000, 004) and
image-quality regressor (seed 003), as tasks of the shared loop (:mod:`augengine.train.loop`).

A task says which store rows it can use, builds its network, computes its loss on a batch and
turns predictions into metrics; the loop does everything else (splits, loaders, ranks, early
stopping, checkpoints, reports). Recipe defaults, each from its seed:

=============  ===========================================  ==================================
task           network and loss                             optimiser, schedule
=============  ===========================================  ==================================
classifier     ResNet-50, GAP, dropout 0.5, 2-way softmax,  SGD lr 1e-4 momentum 0.9,
               cross-entropy (seed 002)                     ReduceLROnPlateau, early stop after
                                                            7 epochs, batch 32, <= 20 epochs
segmenter      U-Net or SegNet (seed 004) or DSA-U++        Adadelta lr 1e-3, batch 4, 40
               (seed 000), Dice + binary cross-entropy      epochs (seed 004)
quality        ResNet-18 regressing a score; MSE (seed 003) Adam lr 1e-3, batch 16, 10 epochs
superres       EDSR (32 blocks, 256 filters, scaling 0.1)   Adam lr 1e-4, batch 16 (Lim et
               or RDN (16 x 8, fusion 64), L1 (seed 004)    al.), 20 epochs (seed 004), x3
=============  ===========================================  ==================================

The loader's random geometry (flips, rot90, a small affine; :mod:`augengine.train.augment`) is
on for the segmenter (seeds 000, 004) and the quality regressor (seed 003), off for the
classifier: seed 002 augments offline, and rot90 would hide the lesion's orientation to the skin,
a BI-RADS sign of malignancy.

Quality pseudo-labels (seed 003) are made on the fly by the engine's own ops: each training image
is served as the original (score 100), its JPEG re-encoding (:func:`augengine.ops.jpeg`, 60) or
its Gaussian blur (:func:`augengine.ops.gaussian_blur`, 30), drawn per sample and epoch;
evaluation serves every image in all three versions. Seed 003 gives neither the JPEG quality nor
the blur width: the defaults here (quality 20, sigma 3 pixels at the store's resolution) are
this project's choice, blur the stronger degradation as its lower score implies.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augengine import ops
from augengine.errors import ConfigError
from augengine.models import QUALITY_SCORES, classifier, dsa_unetpp, quality_regressor, unet
from augengine.models.segnet import segnet
from augengine.models.superres import NETWORKS
from augengine.models.weights import ARCHITECTURES
from augengine.train.loader import StoreSource
from augengine.train.augment import normalization_stats
from augengine.train.metrics import (
    classification_metrics,
    dice,
    iou,
    mse,
    pearson_lcc,
    psnr,
    roc_curve,
    ssim,
)
from augengine.train.superres import bicubic_upscale, draw_degradation, low_resolution

__all__ = ["QUALITY_KINDS", "TASKS", "ClassifierTask", "PseudoLabelSource", "QualityTask",
           "SegmenterTask", "SuperResTask", "Task", "TrainingSource", "degrade", "dice_bce_loss",
           "pseudo_label_kind"]

#: The quality versions of an image, in label order: label ``k`` scores
#: ``QUALITY_SCORES[QUALITY_KINDS[k]]`` (100, 60, 30).
QUALITY_KINDS = ("original", "jpeg", "blur")

# Mixed into the pseudo-label draw so it never coincides with the augmentation's generator.
_KIND_STREAM = zlib.crc32(b"augengine.train.tasks.pseudo_label_kind")
_SEGMENTERS = ("unet", "dsa_unetpp", "segnet")
# Networks whose total stride is 2**depth (--depth sets it).
_DEPTH_STRIDED = ("unet", "segnet")
# DSA-U++'s ResNet-50 encoder has total stride 32.
_DSA_STRIDE = 32


# ------------------------------------------------------------------------------- pure functions

def dice_bce_loss(logits: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0,
                  reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy plus soft-Dice loss of mask logits, per sample.

        p = sigmoid(z),   BCE_i = mean_pixels[-m log p - (1 - m) log(1 - p)]
        Dice_i = (2 sum p m + s) / (sum p + sum m + s),   L_i = BCE_i + 1 - Dice_i

    with sums over the pixels of sample ``i`` and smoothing ``s`` (so an empty mask predicted
    empty scores Dice 1). Seed 004 trains its U-Net with binary cross-entropy and judges it by
    Dice and IoU; the Dice term optimises the judged overlap directly and is insensitive to how
    small the lesion is.

    Parameters
    ----------
    logits : Tensor (N, 1, H, W), floating
        Mask logits ``z``.
    masks : Tensor (N, 1, H, W)
        Reference masks ``m``, 0/1 (any dtype).
    smooth : float
        ``s``, > 0.
    reduction : {"mean", "none"}
        The batch mean of ``L_i`` (a scalar), or ``L`` per sample, shape (N,).

    Returns
    -------
    Tensor
        Dimensionless, in [0, inf); 0 only for a perfect, confident prediction.

    Examples
    --------
    >>> import torch
    >>> masks = torch.zeros(1, 1, 4, 4); masks[..., :2, :] = 1
    >>> round(dice_bce_loss(20 * (2 * masks - 1), masks).item(), 4)  # confident and right
    0.0
    >>> round(dice_bce_loss(torch.zeros(1, 1, 4, 4), masks).item(), 4)  # ln 2 + 1 - 9/17
    1.1637
    """
    if reduction not in ("mean", "none"):
        raise ConfigError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    target = masks.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    probs = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    soft_dice = (2 * (probs * target).sum(1) + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    loss = bce + 1 - soft_dice
    return loss.mean() if reduction == "mean" else loss


def pseudo_label_kind(seed: int, epoch: int, index: int) -> int:
    """The quality version (index into :data:`QUALITY_KINDS`) of store row ``index`` in ``epoch``.

    Uniform over the three versions, from ``default_rng((seed, epoch, index, stream))``: keyed by
    the store row, so the draw is the same whatever the rank count or batch size.

    Examples
    --------
    >>> pseudo_label_kind(0, 3, 17) == pseudo_label_kind(0, 3, 17)
    True
    >>> sorted({pseudo_label_kind(0, 0, i) for i in range(50)})
    [0, 1, 2]
    """
    rng = np.random.default_rng((int(seed), int(epoch), int(index), _KIND_STREAM))
    return int(rng.integers(len(QUALITY_KINDS)))


def degrade(image: np.ndarray, kind: int, jpeg_quality: int, blur_sigma: float) -> np.ndarray:
    """One quality version of a grey image (seed 003's pseudo-labels).

    Parameters
    ----------
    image : ndarray (H, W) uint8
    kind : {0, 1, 2}
        :data:`QUALITY_KINDS`: 0 the image itself, 1 :func:`augengine.ops.jpeg` at
        ``jpeg_quality``, 2 :func:`augengine.ops.gaussian_blur` of ``blur_sigma`` pixels.
    jpeg_quality : int
        libjpeg quality, 1..95.
    blur_sigma : float
        Gaussian standard deviation in pixels, >= 0.

    Returns
    -------
    ndarray (H, W) uint8

    Examples
    --------
    >>> image = np.zeros((16, 16), np.uint8); image[:, 8:] = 255
    >>> [int(degrade(image, k, 20, 3.0)[8, 7]) for k in (0, 2)]   # 255 Phi(-0.5 / 3) = 110.6
    [0, 111]
    """
    if kind == 0:
        return image
    if kind == 1:
        return ops.jpeg(image, jpeg_quality)
    if kind == 2:
        return ops.gaussian_blur(image, blur_sigma)
    raise ConfigError(f"quality kind must be 0, 1 or 2 ({', '.join(QUALITY_KINDS)}), got {kind!r}")


# ----------------------------------------------------------------------------------- sources

class TrainingSource(StoreSource):
    """A :class:`~augengine.train.loader.StoreSource` whose epoch count starts at ``first_epoch``.

    Loaders count epochs from 0; a resumed run sets ``first_epoch`` to the epochs already done so
    that its shard order and augmentation continue those of an uninterrupted run.
    """

    def __init__(self, *args, first_epoch: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_epoch = int(first_epoch)

    def num_batches(self, epoch: int) -> int:
        return super().num_batches(epoch + self.first_epoch)

    def read_batch(self, epoch: int, iteration: int):
        return super().read_batch(epoch + self.first_epoch, iteration)


class PseudoLabelSource(TrainingSource):
    """Serves each image as one of its quality versions; the batch ``labels`` are the version.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`TrainingSource`.
    kind : int, optional
        Serve every image in this version (evaluation); None draws one per sample and epoch with
        :func:`pseudo_label_kind`.
    jpeg_quality, blur_sigma
        See :func:`degrade`.
    """

    def __init__(self, *args, kind: int | None = None, jpeg_quality: int = 20,
                 blur_sigma: float = 3.0, **kwargs):
        super().__init__(*args, **kwargs)
        if kind is not None and kind not in range(len(QUALITY_KINDS)):
            raise ConfigError(f"kind must be None or 0..{len(QUALITY_KINDS) - 1}, got {kind!r}")
        self.kind, self.jpeg_quality, self.blur_sigma = kind, jpeg_quality, float(blur_sigma)

    def read_batch(self, epoch: int, iteration: int):
        batch = super().read_batch(epoch, iteration)
        if batch is None:
            return None
        kinds = np.array([self.kind if self.kind is not None else
                          pseudo_label_kind(self.seed, epoch + self.first_epoch, row)
                          for row in batch["indices"]], dtype=np.int64)
        for k, kind in enumerate(kinds):
            batch["images"][k, ..., 0] = degrade(batch["images"][k, ..., 0], int(kind),
                                                 self.jpeg_quality, self.blur_sigma)
        batch["labels"] = kinds
        return batch


# ------------------------------------------------------------------------------------- tasks

def _images(batch, device) -> torch.Tensor:
    return batch["images"].to(device, non_blocking=True)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


class Task:
    """What differs between the jobs; the loop (:func:`augengine.train.loop.train`) calls these.

    Attributes
    ----------
    name : str
    defaults : mapping
        The recipe: values of :class:`~augengine.train.loop.TrainConfig` fields left ``None``.
    with_masks : bool
        Serve ``masks`` in batches.
    channels : {1, 3}
        Network input channels (grey, or grey replicated with ImageNet statistics).
    monitor : tuple of str
        Per-sample values (beside ``loss``) that :meth:`train_step` sums and :meth:`summarize`
        reports, kept per epoch as ``train_<name>`` / ``val_<name>``.
    figure_samples : int
        Test samples :meth:`figures` shows (0: the task has no figures of its own).
    """

    name = ""
    defaults: Mapping[str, object] = MappingProxyType({})
    with_masks = False
    channels = 3
    monitor: tuple[str, ...] = ()
    figure_samples = 0

    def check(self, config) -> None:
        """Raise :class:`ConfigError` for settings this task cannot use."""

    def configured(self, config) -> Task:
        """This task for one run's resolved ``config`` (a task whose steps need settings, such
        as the super-resolution scale, returns a copy holding it)."""
        return self

    def usable_rows(self, manifest) -> np.ndarray:
        """Boolean mask of the manifest rows this task can train and evaluate on."""
        return np.ones(manifest.num_rows, dtype=bool)

    def build_model(self, config) -> nn.Module:
        raise NotImplementedError

    def eval_variants(self, config) -> tuple:
        """One evaluation pass per entry (``variant`` of :meth:`source`)."""
        return (None,)

    def source(self, store, indices, config, *, train: bool, rank: int = 0, world_size: int = 1,
               first_epoch: int = 0, variant=None) -> StoreSource:
        """The loader source of ``indices`` (see :class:`TrainingSource`)."""
        return TrainingSource(store, indices, batch_size=config.batch_size, rank=rank,
                              world_size=world_size, seed=config.seed, train=train,
                              with_masks=self.with_masks, output_size=config.image_size,
                              geometry=config.geometry if train else None,
                              first_epoch=first_epoch)

    def train_step(self, model, batch, device) -> tuple[torch.Tensor, dict[str, float]]:
        """``(mean loss to backpropagate, {"loss": sum, name: sum for name in monitor})``."""
        raise NotImplementedError

    def predict(self, model, batch, device) -> dict[str, np.ndarray]:
        """Per-sample ``index``, ``loss`` and the task's outputs of an evaluation batch."""
        raise NotImplementedError

    def summarize(self, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The :attr:`monitor` values of a set of predictions (epoch history)."""
        return {}

    def test_metrics(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict, object]:
        """``(metrics, roc)`` for the report; ``roc`` is ``(fpr, tpr, thresholds)`` or None."""
        raise NotImplementedError

    def figures(self, run_dir, model, loaders, device) -> list[str]:
        """Draw the task's own figures into ``run_dir`` from rank 0's test ``loaders`` (a list,
        built only when :attr:`figure_samples`); return the report's markdown lines for them."""
        return []


class ClassifierTask(Task):
    """Benign (0) vs malignant (1) lesions, seed 002's fine-tuned ResNet-50.

    Rows labelled otherwise (2, "normal" in BUSI) are not used. The malignant score is the
    softmax probability of class 1; test metrics are
    :func:`~augengine.train.metrics.classification_metrics` at threshold 0.5 plus the ROC
    operating point closest to (0, 1) (seed 001).
    """

    name = "classifier"
    defaults = MappingProxyType({
        "arch": "resnet50", "epochs": 20, "batch_size": 32, "optimizer": "sgd", "lr": 1e-4,
        "momentum": 0.9, "patience": 7, "lr_schedule": True, "image_size": 224,
        "augment": False})
    monitor = ("accuracy",)
    class_names = ("benign", "malignant")

    def check(self, config):
        if config.arch not in ARCHITECTURES:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHITECTURES)}, "
                              f"got {config.arch!r}")

    def usable_rows(self, manifest):
        labels = manifest.column("label").to_numpy()
        return np.isin(labels, (0, 1))

    def build_model(self, config):
        return classifier(config.arch, num_classes=2, dropout=config.dropout,
                          pretrained=config.init_weights)

    def train_step(self, model, batch, device):
        labels = batch["labels"].to(device)
        logits = model(_images(batch, device))
        losses = F.cross_entropy(logits, labels, reduction="none")
        correct = (logits.argmax(1) == labels).sum()
        return losses.mean(), {"loss": losses.sum().item(), "accuracy": correct.item()}

    def predict(self, model, batch, device):
        labels = batch["labels"].to(device)
        logits = model(_images(batch, device)).float()
        return {"index": _numpy(batch["indices"]), "label": _numpy(labels),
                "score": _numpy(torch.softmax(logits, 1)[:, 1]),
                "loss": _numpy(F.cross_entropy(logits, labels, reduction="none"))}

    def summarize(self, predictions):
        called = (predictions["score"] >= 0.5).astype(np.int64)
        return {"accuracy": float(np.mean(called == predictions["label"]))}

    def test_metrics(self, predictions):
        labels, scores = predictions["label"], predictions["score"]
        return classification_metrics(labels, scores), roc_curve(labels, scores)


class SegmenterTask(Task):
    """Lesion masks: U-Net or SegNet (seed 004) or DSA-U++ (seed 000), trained with
    :func:`dice_bce_loss`.

    Uses the rows with a mask (``has_mask``); grey one-channel input. Predicted masks are
    ``sigmoid(logits) >= 0.5``; metrics are the mean per-sample Dice and IoU on the test split.
    """

    name = "segmenter"
    defaults = MappingProxyType({
        "model": "unet", "epochs": 40, "batch_size": 4, "optimizer": "adadelta", "lr": 1e-3,
        "momentum": 0.0, "patience": 0, "lr_schedule": False, "image_size": 224,
        "augment": True})
    with_masks = True
    channels = 1
    monitor = ("dice", "iou")

    def check(self, config):
        if config.model not in _SEGMENTERS:
            raise ConfigError(f"--model must be one of {', '.join(_SEGMENTERS)}, "
                              f"got {config.model!r}")
        strided = config.model in _DEPTH_STRIDED
        stride = 2**config.depth if strided else _DSA_STRIDE
        if config.image_size % stride:
            raise ConfigError(f"--image-size must be a multiple of {stride} for {config.model}"
                              f"{f' with depth {config.depth}' if strided else ''}"
                              f", got {config.image_size}")
        if strided and config.init_weights is not None:
            raise ConfigError(f"--init-weights needs --model dsa_unetpp (a ResNet-50 encoder); "
                              f"the {config.model} has no pretrained encoder")

    def usable_rows(self, manifest):
        return np.asarray(manifest.column("has_mask").to_numpy(zero_copy_only=False), dtype=bool)

    def build_model(self, config):
        if config.model == "unet":
            return unet(in_channels=1, num_classes=1, base_channels=config.base_channels,
                        depth=config.depth)
        if config.model == "segnet":
            return segnet(in_channels=1, num_classes=1, base_channels=config.base_channels,
                          depth=config.depth)
        return dsa_unetpp(num_classes=1, pretrained_encoder=config.init_weights)

    @staticmethod
    def _overlap(logits, masks) -> tuple[np.ndarray, np.ndarray]:
        predicted = _numpy(logits[:, 0] >= 0)  # sigmoid(z) >= 0.5
        truth = _numpy(masks[:, 0]).astype(bool)
        return dice(predicted, truth)[0], iou(predicted, truth)[0]

    def train_step(self, model, batch, device):
        masks = batch["masks"].to(device)
        logits = model(_images(batch, device))
        losses = dice_bce_loss(logits, masks, reduction="none")
        dices, ious = self._overlap(logits.detach(), masks)
        return losses.mean(), {"loss": losses.sum().item(), "dice": float(dices.sum()),
                               "iou": float(ious.sum())}

    def predict(self, model, batch, device):
        masks = batch["masks"].to(device)
        logits = model(_images(batch, device)).float()
        dices, ious = self._overlap(logits, masks)
        return {"index": _numpy(batch["indices"]), "dice": dices, "iou": ious,
                "loss": _numpy(dice_bce_loss(logits, masks, reduction="none"))}

    def summarize(self, predictions):
        return {"dice": float(np.mean(predictions["dice"])),
                "iou": float(np.mean(predictions["iou"]))}

    def test_metrics(self, predictions):
        return {"n_samples": int(predictions["index"].size), **self.summarize(predictions)}, None


class QualityTask(Task):
    """Image-quality score regression (seed 003): ResNet-18, one output, MSE loss.

    Targets are the pseudo-label scores of :data:`QUALITY_KINDS` (100 / 60 / 30,
    :data:`augengine.models.QUALITY_SCORES`), made on the fly by :class:`PseudoLabelSource`.
    Evaluation scores every image in all three versions; metrics are the MSE (score points
    squared) and Pearson's linear correlation (LCC) between targets and predictions.
    """

    name = "quality"
    defaults = MappingProxyType({
        "arch": "resnet18", "epochs": 10, "batch_size": 16, "optimizer": "adam", "lr": 1e-3,
        "momentum": 0.0, "patience": 0, "lr_schedule": False, "image_size": 224,
        "augment": True})
    monitor = ()
    #: Target score per kind label, in :data:`QUALITY_KINDS` order.
    scores = torch.tensor([QUALITY_SCORES[kind] for kind in QUALITY_KINDS])

    def check(self, config):
        if config.arch not in ARCHITECTURES:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHITECTURES)}, "
                              f"got {config.arch!r}")
        if isinstance(config.jpeg_quality, bool) or not isinstance(config.jpeg_quality, int) \
                or not 1 <= config.jpeg_quality <= 95:
            raise ConfigError(f"--jpeg-quality must be an integer in 1..95, "
                              f"got {config.jpeg_quality!r}")
        if not config.blur_sigma > 0:
            raise ConfigError(f"--blur-sigma must be > 0 pixels, got {config.blur_sigma!r}")

    def build_model(self, config):
        return quality_regressor(config.arch, pretrained=config.init_weights)

    def eval_variants(self, config):
        return tuple(range(len(QUALITY_KINDS)))

    def source(self, store, indices, config, *, train, rank=0, world_size=1, first_epoch=0,
               variant=None):
        return PseudoLabelSource(store, indices, batch_size=config.batch_size, rank=rank,
                                 world_size=world_size, seed=config.seed, train=train,
                                 with_masks=False, output_size=config.image_size,
                                 geometry=config.geometry if train else None,
                                 first_epoch=first_epoch,
                                 kind=variant, jpeg_quality=config.jpeg_quality,
                                 blur_sigma=config.blur_sigma)

    def _targets(self, batch, device) -> torch.Tensor:
        return self.scores.to(device)[batch["labels"].to(device)]

    def train_step(self, model, batch, device):
        errors = (model(_images(batch, device))[:, 0] - self._targets(batch, device)) ** 2
        return errors.mean(), {"loss": errors.sum().item()}

    def predict(self, model, batch, device):
        predicted = model(_images(batch, device))[:, 0].float()
        target = self._targets(batch, device)
        return {"index": _numpy(batch["indices"]), "kind": _numpy(batch["labels"]),
                "target": _numpy(target), "score": _numpy(predicted),
                "loss": _numpy((predicted - target) ** 2)}

    def summarize(self, predictions):
        return {"lcc": pearson_lcc(predictions["target"], predictions["score"])}

    def test_metrics(self, predictions):
        target, score, kinds = predictions["target"], predictions["score"], predictions["kind"]
        mean_score = {name: float(np.mean(score[kinds == k]))
                      for k, name in enumerate(QUALITY_KINDS) if np.any(kinds == k)}
        return {"n_samples": int(target.size), "mse": mse(target, score),
                "lcc": pearson_lcc(target, score), "mean_predicted_score": mean_score}, None


class SuperResTask(Task):
    """Single-image super-resolution (seed 004): EDSR or RDN trained with the L1 loss on
    low/high-resolution pairs made on the fly (:mod:`augengine.train.superres`).

    Every row is usable. The loader serves the high-resolution image (``image_size``, grey); each
    sample's low-resolution partner is degraded from it by ``scale`` with the blur and noise of
    :func:`~augengine.train.superres.draw_degradation`, keyed by the store row (the same in every
    epoch). Networks work on intensities in [0, 1]. Test metrics: mean PSNR and SSIM (data range
    1, estimates clipped to [0, 1]) of the network and of the bicubic baseline on the same pairs,
    and each test sample's drawn degradation. Augmentation is off by default: the loader's affine
    warp resamples, and so blurs, the ground truth.
    """

    name = "superres"
    defaults = MappingProxyType({
        "model": "edsr", "epochs": 20, "batch_size": 16, "optimizer": "adam", "lr": 1e-4,
        "momentum": 0.0, "patience": 0, "lr_schedule": False, "image_size": 96,
        "augment": False})
    channels = 1
    monitor = ("psnr",)
    #: The networks (``--model``), built at the run's ``scale`` for one grey channel.
    networks = MappingProxyType(NETWORKS)
    #: How many test samples the report's side-by-side figure shows.
    figure_samples = 4

    def __init__(self, config=None):
        self.config = config

    def configured(self, config):
        return SuperResTask(config)

    def check(self, config):
        if config.model not in self.networks:
            raise ConfigError(f"--model must be one of {', '.join(self.networks)}, "
                              f"got {config.model!r}")
        if config.scale not in (2, 3, 4):
            raise ConfigError(f"--scale must be 2, 3 or 4, got {config.scale!r}")
        if config.image_size % config.scale:
            raise ConfigError(f"--image-size must be a multiple of the scale {config.scale}, "
                              f"got {config.image_size}")
        draw_degradation(0, 0, config.max_blur_sigma, config.max_noise_std)  # checks both

    def build_model(self, config):
        return self.networks[config.model](scale=config.scale, channels=1)

    @staticmethod
    def pairs(batch, config) -> tuple[np.ndarray, np.ndarray, list]:
        """``(low (B, h, w), high (B, H, W), degradations)``, float32 in [0, 1], on the host."""
        (mean,), (std,) = normalization_stats(1)
        high = np.clip(_numpy(batch["images"][:, 0]).astype(np.float32) * std + mean, 0, 1)
        drawn = [draw_degradation(config.seed, int(row), config.max_blur_sigma,
                                  config.max_noise_std) for row in _numpy(batch["indices"])]
        low = np.stack([low_resolution(image, config.scale, degradation)
                        for image, degradation in zip(high, drawn, strict=True)])
        return low, high, drawn

    def _run(self, model, batch, device):
        low, high, drawn = self.pairs(batch, self.config)
        estimate = model(torch.from_numpy(low[:, None]).to(device))
        target = torch.from_numpy(high[:, None]).to(device)
        losses = (estimate.float() - target).abs().flatten(1).mean(1)
        return losses, estimate, low, high, drawn

    def train_step(self, model, batch, device):
        losses, estimate, _, high, _ = self._run(model, batch, device)
        values = psnr(high, np.clip(_numpy(estimate[:, 0]), 0, 1))[0]
        return losses.mean(), {"loss": losses.sum().item(), "psnr": float(values.sum())}

    def predict(self, model, batch, device):
        losses, estimate, low, high, drawn = self._run(model, batch, device)
        estimate = np.clip(_numpy(estimate[:, 0].float()), 0, 1)
        bicubic = np.stack([bicubic_upscale(image, self.config.scale) for image in low])
        return {"index": _numpy(batch["indices"]), "loss": _numpy(losses),
                "psnr": psnr(high, estimate)[0], "ssim": ssim(high, estimate)[0],
                "psnr_bicubic": psnr(high, bicubic)[0], "ssim_bicubic": ssim(high, bicubic)[0],
                "blur_sigma": np.array([d.blur_sigma for d in drawn]),
                "noise_std": np.array([d.noise_std for d in drawn]),
                "noise_seed": np.array([d.noise_seed for d in drawn], dtype=np.uint64)}

    def summarize(self, predictions):
        return {"psnr": float(np.mean(predictions["psnr"]))}

    def test_metrics(self, predictions):
        means = {name: float(np.mean(predictions[name]))
                 for name in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic")}
        return {"n_samples": int(predictions["index"].size), "data_range": 1.0, **means,
                "psnr_gain_db": means["psnr"] - means["psnr_bicubic"],
                "ssim_gain": means["ssim"] - means["ssim_bicubic"],
                "per_sample": {name: predictions[name].tolist() for name in (
                    "index", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "blur_sigma",
                    "noise_std", "noise_seed")}}, None

    def figures(self, run_dir, model, loaders, device) -> list[str]:
        """Draw ``superres.png`` (low-res, bicubic, model, ground truth) for the first test
        samples of ``loaders``; return the report's section on it."""
        from augengine.train.plots import plot_image_rows

        batch = next(iter(loaders[0]), None) if loaders else None
        if batch is None:
            return []
        model.eval()
        with torch.no_grad():
            _, estimate, low, high, _ = self._run(model, batch, device)
        config = self.config
        shown = slice(0, self.figure_samples)
        rows = [[lr, bicubic_upscale(lr, config.scale), np.clip(sr, 0, 1), hr]
                for lr, sr, hr in zip(low[shown], _numpy(estimate[:, 0].float())[shown],
                                      high[shown], strict=True)]
        names = [f"row {int(row)}" for row in _numpy(batch["indices"])[shown]]
        plot_image_rows(Path(run_dir) / "superres.png", rows,
                        ("low resolution", "bicubic", config.model, "ground truth"), names)
        return ["## Super-resolution examples (test split)", "",
                f"x{config.scale}; PSNR/SSIM per sample are in metrics.json.", "",
                "![low resolution, bicubic, network, ground truth](superres.png)"]


#: The jobs by name (``augengine train <name>``).
TASKS: Mapping[str, Task] = MappingProxyType(
    {task.name: task for task in (ClassifierTask(), SegmenterTask(), QualityTask(),
                                  SuperResTask())})
