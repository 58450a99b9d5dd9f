"""The training loop shared by the classifier, segmenter, quality and super-resolution jobs.

:func:`train` runs one job (a :class:`~augengine.train.tasks.Task`) on one store, on one process
or as one rank of several (:mod:`augengine.train.distributed`):

1. **Splits by source** (:func:`~augengine.train.splits.split_by_source`, 70/15/15 stratified
   by label, seeded), or a given split file; written to ``splits.json``. Training uses every
   train-split row (variants included); validation and test use the originals only
   (:func:`~augengine.train.splits.originals_only`) unless ``eval_all_variants``.
2. **Loaders**: each rank reads its share of the train split through the DALI pipeline (CPU here,
   GPU where one exists) or the PyTorch baseline (:mod:`augengine.train.loader`), with the
   training augmentation; validation and test rows are dealt round-robin to the ranks.
3. **Optimisation**: the learning rate is multiplied by the number of ranks (gradients are
   averaged over ``size`` times more samples per step); parameters and, on resume, optimizer
   state are broadcast from rank 0; BatchNorm statistics are averaged at each epoch end.
4. **Per epoch**: train loss (and the task's monitored values) summed over the ranks; validation
   predictions gathered from all ranks, so every rank computes the same validation loss and takes
   the same early-stopping and ReduceLROnPlateau decisions.
5. **Rank 0 writes** ``checkpoint.pt`` after every epoch (atomically,
   :mod:`augengine.train.checkpoint`), ``log.jsonl`` (one line per epoch), and at the end the
   test evaluation of the best-validation-loss weights through
   :func:`~augengine.train.report.write_report`: ``metrics.json``, the PNG figures, ``report.md``.

Files of a run directory:

* ``checkpoint.pt`` -- ``model`` (the best-validation-loss weights: ``load_weights`` reads them),
  ``last_model``, ``optimizer``, ``scheduler`` (the state to resume from), ``epoch``,
  ``history``, early-stopping state, ``config``, ``world_size`` and ``sha256`` (of
  ``last_model``, :func:`~augengine.models.weights.state_sha256`).
* ``splits.json``, ``log.jsonl``, ``metrics.json``, ``report.md``, ``curves.png`` and, for the
  classifier, ``roc.png`` and ``confusion_matrix.png``.
* ``rank{r}.json`` -- each rank's final ``sha256`` (``debug_rank_hashes``), to check that the
  ranks hold identical weights.

Resuming (``resume=True``) continues from ``checkpoint.pt`` at the saved epoch, with its splits,
history and early-stopping state; a run directory that already holds a checkpoint is refused
without it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from augengine.checks import check_int, check_number
from augengine.errors import ConfigError, InputError
from augengine.store import open_store
from augengine.train.augment import GeometryRange, normalization_stats
from augengine.models.weights import read_checkpoint, state_sha256
from augengine.train.checkpoint import (
    CHECKPOINT,
    LOG,
    append_log,
    check_resumable,
    cpu_state,
    save_checkpoint,
)
from augengine.train.distributed import Distributed, init_distributed
from augengine.train.loader import DaliLoader, TorchLoader, dali_pipeline
from augengine.train.splits import (
    assign_split,
    load_splits,
    originals_only,
    save_splits,
    split_by_source,
    summarize_splits,
)
from augengine.manifest import rows_where
from augengine.train.tasks import TASKS, Task

__all__ = ["CHECKPOINT", "OPTIMIZERS", "TrainConfig", "TrainResult", "load_checkpoint",
           "resolve_config", "train"]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adadelta")
_LOADERS = ("dali", "torch")
# Mixed into the per-epoch torch seed (dropout) so it never coincides with another stream.
_DROPOUT_STREAM = zlib.crc32(b"augengine.train.loop.dropout")
# Settings a resumed run may change; every other one must match the checkpoint.
_RESUMABLE = frozenset({"data", "out", "epochs", "resume", "debug_rank_hashes", "device",
                        "loader", "loader_workers", "loader_threads", "init_weights", "splits",
                        "patience"})
_NO_GEOMETRY = GeometryRange(flips=False, rot90=False, max_rotation_deg=0.0, scale_range=(1, 1),
                             max_translate=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; ``None`` means the task's recipe default.

    Parameters
    ----------
    task : {"classifier", "segmenter", "quality", "superres"}
    data : str
        The store to train on.
    out : str
        The run directory (created).
    epochs, batch_size : int, optional
        Most epochs; samples per step and rank.
    optimizer : {"sgd", "adam", "adadelta"}, optional
    lr : float, optional
        Learning rate of one rank (multiplied by the number of ranks).
    momentum : float, optional
        SGD momentum.
    patience : int, optional
        Stop after this many epochs without a lower validation loss; 0: never.
    lr_schedule : bool, optional
        ReduceLROnPlateau on the validation loss (factor ``lr_factor``, ``lr_patience`` epochs).
    lr_factor, lr_patience
        Seed 002 names ReduceLROnPlateau without its settings: 0.1 and 3 (Keras' factor, and a
        patience below the early-stopping one so that it can act).
    image_size : int, optional
        Side of the square network input, pixels.
    arch : {"resnet50", "resnet18"}, optional
        Backbone of the classifier and the quality regressor.
    model : {"unet", "dsa_unetpp", "segnet"} or {"edsr", "rdn", "edsr_small", "rdn_small"}
        The segmenter, or the super-resolution network.
    dropout : float
        Classifier dropout after global average pooling.
    base_channels, depth : int
        U-Net or SegNet width and depth.
    jpeg_quality, blur_sigma
        Quality pseudo-labels (:func:`augengine.train.tasks.degrade`).
    scale, max_blur_sigma, max_noise_std
        Super-resolution factor, and the largest Gaussian blur (high-resolution pixels) and
        noise (grey levels) drawn per sample (:func:`augengine.train.superres.draw_degradation`).
    init_weights : str, optional
        Local checkpoint for the backbone/encoder (nothing is downloaded).
    fractions : (float, float, float)
        Train/val/test fractions of the sources.
    splits : str, optional
        A splits JSON to use instead of splitting.
    seed : int
        Splits, initialisation, shuffling, augmentation and dropout derive from it.
    loader : {"dali", "torch"}
    loader_workers, loader_threads : int
        Reader processes (DALI ``py_num_workers`` / DataLoader ``num_workers``) and DALI CPU
        threads per rank (None: the cores shared among the local ranks).
    augment : bool, optional
        Random flips, rot90 and a small affine in the loader, drawn per sample and epoch (on for
        the segmenter, seeds 000 and 004, and the quality regressor, seed 003; off for the
        classifier, whose seed 002 recipe augments offline).
    train_originals_only : bool
        Train on the original rows only (no stored variants).
    eval_all_variants : bool
        Validate and test on every row of the split, not only the originals.
    train_where, test_where : tuple of (str, value)
        Row filters (:func:`augengine.manifest.rows_where`) of the train/validation rows and
        of the test rows, e.g. ``(("bmode.dynamic_range_db", 40),)``.
    resume : bool
        Continue from ``out/checkpoint.pt``.
    debug_rank_hashes : bool
        Every rank writes ``rank{r}.json`` with the sha256 of its final weights.
    device : str, optional
        ``cpu``, ``cuda``; default CUDA (``cuda:<local rank>``) when available.
    """

    task: str
    data: str
    out: str
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    patience: int | None = None
    lr_schedule: bool | None = None
    lr_factor: float = 0.1
    lr_patience: int = 3
    image_size: int | None = None
    arch: str | None = None
    model: str | None = None
    dropout: float = 0.5
    base_channels: int = 64
    depth: int = 4
    scale: int = 3
    max_blur_sigma: float = 0.0
    max_noise_std: float = 0.0
    jpeg_quality: int = 20
    blur_sigma: float = 3.0
    init_weights: str | None = None
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    splits: str | None = None
    seed: int = 0
    loader: str = "dali"
    loader_workers: int = 0
    loader_threads: int | None = None
    augment: bool | None = None
    train_originals_only: bool = False
    eval_all_variants: bool = False
    train_where: tuple[tuple[str, object], ...] = ()
    test_where: tuple[tuple[str, object], ...] = ()
    resume: bool = False
    debug_rank_hashes: bool = False
    device: str | None = None

    @property
    def geometry(self) -> GeometryRange:
        """The loader's training augmentation ranges (none when ``augment`` is off)."""
        return GeometryRange() if self.augment else _NO_GEOMETRY

    def to_json(self) -> dict:
        """JSON-ready fields (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the task's recipe defaults into ``config`` and check every setting.

    Returns
    -------
    TrainConfig
        No ``None`` left except ``init_weights``, ``splits``, ``loader_threads`` and ``device``.

    Raises
    ------
    ConfigError
        One line naming the setting, e.g. ``"lr must be a finite number > 0, got -1"``.

    Examples
    --------
    >>> resolve_config(TrainConfig("classifier", "ds.zarr", "run")).optimizer
    'sgd'
    """
    if config.task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {config.task!r}")
    task = TASKS[config.task]
    filled = {name: value for name, value in task.defaults.items()
              if getattr(config, name) is None}
    for name in ("arch", "model"):  # the other task's network setting stays unused
        if getattr(config, name) is None and name not in task.defaults:
            filled[name] = ""
    config = dataclasses.replace(config, **filled)
    for name in ("epochs", "batch_size", "lr_patience", "base_channels", "depth"):
        check_int(getattr(config, name), name, 0 if name == "lr_patience" else 1)
    check_int(config.patience, "patience", 0)
    check_int(config.seed, "seed", 0)
    check_int(config.loader_workers, "loader_workers", 0)
    if config.loader_threads is not None:
        check_int(config.loader_threads, "loader_threads", 1)
    check_int(config.image_size, "image_size", 32)
    check_number(config.lr, "lr", positive=True)
    check_number(config.momentum, "momentum", nonnegative=True)
    if not 0 < config.lr_factor < 1:
        raise ConfigError(f"lr_factor must be in (0, 1), got {config.lr_factor!r}")
    if not 0 <= config.dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {config.dropout!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                          f"got {config.optimizer!r}")
    if config.loader not in _LOADERS:
        raise ConfigError(f"loader must be one of {', '.join(_LOADERS)}, got {config.loader!r}")
    fractions = tuple(float(f) for f in config.fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 \
            or fractions[1] == 0 or fractions[2] == 0:
        raise ConfigError(f"fractions must be 3 numbers >= 0 summing to 1 with val and test > 0 "
                          f"(train, val, test), got {config.fractions!r}")
    where = {name: tuple((str(k), v) for k, v in getattr(config, name))
             for name in ("train_where", "test_where")}
    config = dataclasses.replace(config, fractions=fractions, **where)
    task.check(config)
    return config


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did (every rank returns one; only rank 0 wrote files).

    Attributes
    ----------
    run_dir : Path
    metrics : dict
        Test metrics of the best-validation-loss weights (``metrics.json``'s ``metrics``).
    history : dict of str to list of float
        Per-epoch ``train_loss``, ``val_loss``, the task's monitored values and ``lr``.
    predictions : dict of str to ndarray
        Per test sample (gathered from all ranks, sorted by store index): ``index``, ``loss``
        and the task's outputs (classifier ``label``, ``score``).
    start_epoch, epochs_run : int
        Epochs done before this call, and by it.
    stopped_early : bool
    best_epoch : int
        Epoch (1-based) of the lowest validation loss, whose weights were tested.
    rank, size : int
    sha256 : str
        Of this rank's final weights.
    """

    run_dir: Path
    metrics: dict
    history: dict
    predictions: dict
    start_epoch: int
    epochs_run: int
    stopped_early: bool
    best_epoch: int
    rank: int
    size: int
    sha256: str


@dataclass
class _LoopState:
    """What the loop carries from epoch to epoch (saved flat into the checkpoint).

    Attributes
    ----------
    epoch : int
        Epochs done.
    history : dict of str to list of float
        Per-epoch values (:func:`_record`).
    best_val_loss : float
    best_epoch : int
        1-based epoch of ``best_val_loss``; 0 before the first epoch.
    wait : int
        Epochs since the validation loss last fell (early stopping).
    stopped : bool
        Early stopping has ended the run.
    """

    epoch: int = 0
    history: dict = field(default_factory=dict)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    stopped: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping) -> _LoopState:
        return cls(**{name: checkpoint[name] for name in cls.names()})


# ------------------------------------------------------------------------------ data selection

def _select(config: TrainConfig, task: Task, view, splits_file: Path | None):
    """The splits and the store indices of the train, validation and test rows."""
    manifest = view.manifest
    usable = task.usable_rows(manifest)
    if not usable.any():
        raise InputError(f"{config.data}: no rows usable by the {task.name} (e.g. no labels 0/1 "
                         "for the classifier, no masks for the segmenter)")
    sources = np.asarray(manifest.column("source_id").to_pylist(), dtype=object)
    labels = manifest.column("label").to_numpy()
    if splits_file is not None:
        splits = load_splits(splits_file)
    else:
        splits = split_by_source(sources[usable].tolist(), config.fractions, config.seed,
                                 labels=labels[usable].tolist())
    names = np.full(manifest.num_rows, "", dtype="<U5")
    names[usable] = assign_split(sources[usable].tolist(), splits)
    original = np.ones(manifest.num_rows, dtype=bool)
    if manifest.num_rows:
        kept = set(originals_only(manifest.select(["index", "ops"])).column("index").to_pylist())
        original = np.isin(manifest.column("index").to_numpy(), list(kept))
    fit_rows = rows_where(manifest, config.train_where)
    test_rows = rows_where(manifest, config.test_where)
    evaluated = np.ones_like(original) if config.eval_all_variants else original
    chosen = {
        "train": (names == "train") & fit_rows & (original if config.train_originals_only
                                                  else True),
        "val": (names == "val") & fit_rows & evaluated,
        "test": (names == "test") & test_rows & evaluated,
    }
    index = manifest.column("index").to_numpy().astype(np.int64)
    selected = {}
    for split, mask in chosen.items():
        if not mask.any():
            raise InputError(f"{config.data}: no {split} rows left for the {task.name}: "
                             f"{len(splits[split])} sources in the split, none with rows passing "
                             "the originals-only and --train-where/--test-where filters")
        selected[split] = np.sort(index[mask])
    summary = summarize_splits(splits, sources[usable].tolist(), labels[usable].tolist())
    for split, rows in selected.items():
        summary[split]["used"] = int(rows.size)
    return splits, selected, summary


# ------------------------------------------------------------------------------------ loaders

def _make_loader(config: TrainConfig, task: Task, source, device: torch.device, threads: int):
    mean, std = normalization_stats(task.channels)
    if config.loader == "torch":
        return TorchLoader(source, device, mean, std, config.loader_workers)
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"--loader dali needs NVIDIA DALI (the train-cuda12 or train-cuda13 "
                          "extra, docs/install.md), "
                          f"which cannot be imported ({error}); or use --loader torch") from None
    pipeline = dali_pipeline(source, "gpu" if device.type == "cuda" else "cpu",
                             device.index if device.type == "cuda" else None, task.channels,
                             mean, std, threads, config.loader_workers)
    return DaliLoader(pipeline, source)


def _eval_loaders(config, task, view, indices, dist, device, threads) -> list:
    """This rank's evaluation loaders: rows ``indices[rank::size]``, one per task variant."""
    mine = indices[dist.rank::dist.size]
    if mine.size == 0:
        return []
    return [_make_loader(config, task, task.source(view, mine, config, train=False,
                                                   variant=variant), device, threads)
            for variant in task.eval_variants(config)]


def _predict(task: Task, model, loaders, device, dist: Distributed) -> dict[str, np.ndarray]:
    """Every rank's predictions over ``loaders``, gathered, sorted by store index (then kind)."""
    model.eval()
    parts = []
    with torch.no_grad():
        for loader in loaders:
            parts.extend(task.predict(model, batch, device) for batch in loader)
    gathered = [part for rank_parts in dist.gather_objects(parts) for part in rank_parts]
    merged = {key: np.concatenate([part[key] for part in gathered]) for key in gathered[0]}
    order = np.lexsort((merged.get("kind", np.zeros_like(merged["index"])), merged["index"]))
    return {key: values[order] for key, values in merged.items()}


# ---------------------------------------------------------------------------------- checkpoint

def load_checkpoint(path) -> dict:
    """Read a training checkpoint and check ``last_model`` against its recorded sha256.

    Raises
    ------
    InputError
        Missing, unreadable, foreign or corrupted file (one line naming it).
    """
    keys = ("task", "model", "last_model", "optimizer", "scheduler", *_LoopState.names(),
            "config", "world_size", "sha256")
    return read_checkpoint(path, "checkpoint not found (nothing to resume)", keys=keys,
                           weights="last_model", kind="an augengine training")


def _optimizer(config: TrainConfig, parameters, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    return torch.optim.Adadelta(parameters, lr=lr)


def _device(config: TrainConfig) -> str:
    if config.device is not None:
        kind = torch.device(config.device).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {config.device!r} asked for, but CUDA is not available")
        return kind
    return "cuda" if torch.cuda.is_available() else "cpu"


def _threads(dist: Distributed) -> int:
    """CPU threads of this rank: ``$OMP_NUM_THREADS`` when set (on a busy machine one thread can
    be several times faster than two), else the cores shared among the ranks of this machine."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, (os.cpu_count() or 1) // dist.local_size)


def _write_rank_hash(run_dir: Path, dist: Distributed, epoch: int, sha: str) -> None:
    record = {"rank": dist.rank, "size": dist.size, "epoch": epoch, "sha256": sha}
    (run_dir / f"rank{dist.rank}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------- train

def train(config: TrainConfig, backend: str | None = None) -> TrainResult:
    """Train one job on one store; evaluate it on the test split; write the run directory.

    Parameters
    ----------
    config : TrainConfig
        Resolved here (:func:`resolve_config`).
    backend : {"horovod", "ddp"}, optional
        The launcher's backend when this process is one of several ranks (started by
        ``horovodrun``, ``torchrun`` or ``horovod.ray.RayExecutor``); None or a process no
        launcher started trains alone.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        A missing or unusable store, an empty split, a bad checkpoint.
    ConfigError
        Bad settings, a checkpoint from other settings, a run directory holding a checkpoint
        without ``resume``, DALI or Horovod missing when asked for.

    Examples
    --------
    >>> config = TrainConfig("classifier", "out/dataset.zarr", "runs/cls", arch="resnet18",
    ...                      image_size=64, epochs=5)                    # doctest: +SKIP
    >>> train(config).metrics["auc"]                                     # doctest: +SKIP
    0.81
    """
    config = resolve_config(config)
    task = TASKS[config.task].configured(config)
    device_type = _device(config)
    dist = init_distributed(backend, device_type)
    finished = False
    try:
        device = torch.device(f"cuda:{dist.local_rank}" if device_type == "cuda" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        cores = _threads(dist)
        torch.set_num_threads(cores)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            result = _train(config, task, dist, device, config.loader_threads or cores)
        finished = True
        return result
    finally:
        dist.close(finished)


def _train(config: TrainConfig, task: Task, dist: Distributed, device: torch.device,
           threads: int) -> TrainResult:
    run_dir = Path(config.out)
    checkpoint_path = run_dir / CHECKPOINT
    view = open_store(config.data)
    if checkpoint_path.exists() and not config.resume:
        raise ConfigError(f"{run_dir} already holds {CHECKPOINT}; pass --resume to continue it "
                          "or choose another --out")
    checkpoint = load_checkpoint(checkpoint_path) if config.resume else None
    settings = dict(config.to_json(), store=view.attrs.get("manifest_sha256"))
    if checkpoint is not None:
        check_resumable(checkpoint["config"], settings, _RESUMABLE, checkpoint_path,
                        "resume with the same settings or use another --out")
    splits_file = run_dir / "splits.json" if checkpoint is not None else \
        (Path(config.splits) if config.splits else None)
    splits, indices, summary = _select(config, task, view, splits_file)
    if dist.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_splits(run_dir / "splits.json", splits)

    torch.manual_seed(config.seed)  # the same initial weights on every rank (then broadcast)
    model = task.build_model(config).to(device)
    optimizer = _optimizer(config, model.parameters(), config.lr * dist.size)
    trained, optimizer = dist.prepare(model, optimizer)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience) \
        if config.lr_schedule else None

    state = _LoopState()
    best_model = cpu_state(model)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["last_model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        # The saved rates were scaled by the saved run's ranks (and maybe reduced on plateau).
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] / checkpoint["world_size"] * dist.size
        state = _LoopState.from_checkpoint(checkpoint)
        best_model = checkpoint["model"]
    dist.broadcast_state(model, optimizer, with_optimizer=checkpoint is not None)
    start_epoch = state.epoch
    if dist.rank == 0:
        if start_epoch == 0:
            (run_dir / LOG).unlink(missing_ok=True)
        log.info("%s: %d train / %d val / %d test rows, %d rank(s) (%s), %s loader, from epoch %d",
                 task.name, indices["train"].size, indices["val"].size, indices["test"].size,
                 dist.size, dist.name, config.loader, start_epoch)

    train_loader = _make_loader(config, task, task.source(
        view, indices["train"], config, train=True, rank=dist.rank, world_size=dist.size,
        first_epoch=start_epoch), device, threads)
    val_loaders = _eval_loaders(config, task, view, indices["val"], dist, device, threads)
    for epoch in range(start_epoch, config.epochs):
        if state.stopped:
            break
        began = time.perf_counter()
        torch.manual_seed(int(np.random.default_rng(
            (config.seed, epoch, dist.rank, _DROPOUT_STREAM)).integers(2**62)))
        train_values = _train_epoch(task, trained, optimizer, train_loader, device, dist)
        dist.average_buffers(model)
        val = _predict(task, model, val_loaders, device, dist)
        val_values = {"loss": float(np.mean(val["loss"])), **task.summarize(val)}
        _record(state.history, train_values, val_values, optimizer.param_groups[0]["lr"])
        if val_values["loss"] < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.wait = val_values["loss"], epoch + 1, 0
            best_model = cpu_state(model)
        else:
            state.wait += 1
        state.stopped = bool(config.patience) and state.wait >= config.patience
        if scheduler is not None:
            scheduler.step(val_values["loss"])
        state.epoch = epoch + 1
        if dist.rank == 0:
            _save_checkpoint(checkpoint_path, task, model, best_model, optimizer, scheduler,
                             state, settings, dist.size)
            _log_epoch(run_dir, state, train_values, val_values, time.perf_counter() - began,
                       dist.size)

    final_sha = state_sha256(model.state_dict())
    if config.debug_rank_hashes:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_rank_hash(run_dir, dist, state.epoch, final_sha)
    model.load_state_dict(best_model)
    predictions = _predict(task, model, _eval_loaders(config, task, view, indices["test"], dist,
                                                      device, threads), device, dist)
    metrics, roc = task.test_metrics(predictions)
    metrics["training"] = {
        "epochs": state.epoch, "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss, "stopped_early": state.stopped,
        "world_size": dist.size, "backend": dist.name, "loader": config.loader,
    }
    if dist.rank == 0:
        from augengine.train.report import write_report  # matplotlib: only rank 0 needs it

        loaders = _eval_loaders(config, task, view, indices["test"], dist, device, threads) \
            if task.figure_samples else []
        write_report(run_dir, metrics, state.history, summary, roc=roc,
                     class_names=getattr(task, "class_names", ("benign", "malignant")),
                     sections=task.figures(run_dir, model, loaders, device))
    return TrainResult(run_dir, metrics, state.history, predictions, start_epoch,
                       state.epoch - start_epoch, state.stopped, state.best_epoch,
                       dist.rank, dist.size, final_sha)


def _train_epoch(task: Task, model, optimizer, loader, device, dist: Distributed) -> dict:
    """One pass over this rank's share; the sums of every rank, divided by the sample count."""
    model.train()
    names = ("loss", *task.monitor)
    sums = torch.zeros(len(names) + 1, dtype=torch.float64)
    for batch in loader:
        loss, values = task.train_step(model, batch, device)
        optimizer.zero_grad()  # Horovod's takes no set_to_none
        loss.backward()
        optimizer.step()
        sums += torch.tensor([*(values[name] for name in names), batch["indices"].numel()],
                             dtype=torch.float64)
    sums = dist.sum(sums)
    return {name: float(sums[k] / sums[-1]) for k, name in enumerate(names)}


def _record(history: dict, train_values: Mapping, val_values: Mapping, lr: float) -> None:
    for prefix, values in (("train", train_values), ("val", val_values)):
        for name, value in values.items():
            history.setdefault(f"{prefix}_{name}", []).append(value)
    history.setdefault("lr", []).append(lr)


def _save_checkpoint(path, task, model, best_model, optimizer, scheduler, state: _LoopState,
                     settings, world_size) -> None:
    save_checkpoint(path, {"task": task.name, "model": best_model, "last_model": cpu_state(model),
                           "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict() if scheduler is not None else {},
                           **dataclasses.asdict(state), "config": settings,
                           "world_size": world_size}, weights="last_model")


def _log_epoch(run_dir: Path, state: _LoopState, train_values: Mapping, val_values: Mapping,
               seconds: float, ranks: int) -> None:
    record = {"epoch": state.epoch, **{f"train_{k}": v for k, v in train_values.items()},
              **{f"val_{k}": v for k, v in val_values.items()}, "seconds": round(seconds, 3),
              "ranks": ranks}
    append_log(run_dir, record)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                      if k not in ("epoch", "seconds", "ranks"))
    log.info("epoch %d: %s (%.1f s on %d rank(s))%s", state.epoch, shown, seconds, ranks,
             "; early stop" if state.stopped else "")
