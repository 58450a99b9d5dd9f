"""What both experiments share: their settings, the data they run on, lesion splits per repeat,
classifier training per arm, progress, and the files they write (results.json, table.md, PNG).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from augengine.errors import ConfigError
from augengine.experiments.data import source_config
from augengine.experiments.stats import (bootstrap_lesions, cell_images, evaluate_subset,
                                         summarize_cell)

__all__ = ["EXPERIMENT_SETTINGS", "ExperimentConfig", "Progress", "describe_data", "format_table",
           "lesion_split", "prepare_data", "score_cell", "summarize", "train_arm", "validated",
           "write_results"]

log = logging.getLogger("augengine.experiments")

#: Classifier settings of the experiments, sized for two shared CPU cores: seed 002's network
#: (on ResNet-18, 32 px, 5 epochs) with Adam at 1e-3 instead of SGD at 1e-4, which learns nothing
#: in a few CPU epochs from random weights. On a GPU: ``--set arch=resnet50 --set image_size=224
#: --set epochs=50 --set optimizer=sgd --set lr=1e-4 --set patience=10`` (seed 002's recipe).
EXPERIMENT_SETTINGS = {"arch": "resnet18", "image_size": 32, "epochs": 5, "batch_size": 16,
                       "optimizer": "adam", "lr": 1e-3, "patience": 0, "lr_schedule": False}
#: TrainConfig fields an experiment sets itself (the data, run folder, seed, split and arms).
_OWN_FIELDS = {"task", "data", "out", "seed", "loader", "resume", "splits", "fractions",
               "train_where", "test_where", "train_originals_only", "eval_all_variants"}


class ExperimentConfig(BaseModel):
    """Settings of one experiment run (the command line's flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Working folder: stores, one folder per repeat and arm, results.json, table.md, the PNG.
    out: str
    #: The user's data (any source the job files read); None simulates phantoms.
    data: str | None = None
    reader: Literal["oasbud", "rf_npz", "busi", "dicom", "store"] | None = None
    #: Reader options, as a job's ``sources[].options`` (e.g. ``pitch_m`` for OASBUD files).
    options: dict[str, Any] = Field(default_factory=dict)
    #: Simulated scans per class (two per lesion), without ``data`` only.
    n_benign: int = Field(default=24, ge=2)
    n_malignant: int = Field(default=24, ge=2)
    #: Repeats, each with a new lesion split and training seed (``seed + r``).
    repeats: int = Field(default=3, ge=1, le=100)
    seed: int = Field(default=0, ge=0)
    #: The PyTorch loader works on every install; ``dali`` needs the ``train`` extra.
    loader: Literal["dali", "torch"] = "torch"
    #: Bootstrap replicates of the test lesions per repeat and cell.
    bootstrap: int = Field(default=1000, ge=10, le=100000)
    #: Train/val/test fractions of the lesions (stratified by label).
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    #: :class:`~augengine.train.loop.TrainConfig` fields over :data:`EXPERIMENT_SETTINGS`.
    train: dict[str, Any] = Field(default_factory=dict)

    @field_validator("train")
    @classmethod
    def _known_training_settings(cls, value):
        from augengine.train.loop import TrainConfig

        return known_fields(value, TrainConfig, _OWN_FIELDS,
                            "a training setting an experiment may change")

    def classifier_settings(self) -> dict:
        return {**EXPERIMENT_SETTINGS, **self.train}


def validated(model: type[BaseModel], **values) -> BaseModel:
    """``model(**values)``, a bad value as one ``ConfigError`` line naming the setting."""
    try:
        return model(**values)
    except ValidationError as error:
        item = error.errors()[0]
        where = ".".join(str(part) for part in item["loc"])
        raise ConfigError(f"{where}: {item['msg']}") from None


def prepare_data(config: ExperimentConfig) -> tuple[dict, str]:
    """The job ``sources`` entry and a display name: the user's data, else simulated phantoms
    (``OUT/phantoms``, re-used when present)."""
    if config.data is not None:
        source = source_config(config.data, config.reader, config.options)
        return source, f"{Path(config.data).name} (reader {source['reader']})"
    from augengine.simulate import simulate_dataset

    phantoms = Path(config.out) / "phantoms"
    if not (phantoms / "phantoms.mat").exists():
        simulate_dataset(config.n_benign, config.n_malignant, phantoms, seed=config.seed)
    return (source_config(phantoms / "phantoms.mat", "oasbud"),
            f"simulated phantoms (augengine.simulate, seed {config.seed}, "
            f"{config.n_benign}+{config.n_malignant} scans)")


class Progress:
    """Log lines with the rate and the time left of a stage of ``total`` steps."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done, self.began = total, what, 0, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.began
        each = elapsed / self.done
        log.info("%s %d/%d done (%s): %s elapsed, %s each, ETA %s", self.what, self.done,
                 self.total, label, _clock(elapsed), _clock(each),
                 _clock(each * (self.total - self.done)))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


def lesion_split(store: Path, fractions, seed: int, path: Path) -> dict[str, list[str]]:
    """Split the lesions of a store's classifier rows (labels 0/1) by source, stratified by
    label, and save the split where every arm of the repeat reads it."""
    from augengine.store import open_store
    from augengine.train.splits import save_splits, split_by_source

    table = open_store(store).manifest.select(["source_id", "label"]).to_pylist()
    rows = [row for row in table if row["label"] in (0, 1)]
    splits = split_by_source([row["source_id"] for row in rows], fractions, seed,
                             labels=[row["label"] for row in rows])
    save_splits(path, splits)
    return splits


def train_arm(store: Path, run_dir: Path, config: ExperimentConfig, seed: int, splits: Path,
              **arm):
    """Train the experiments' classifier on ``store`` with the repeat's split; resumes a run
    directory that holds a checkpoint."""
    from augengine.train.loop import TrainConfig, train

    settings = config.classifier_settings()
    train_config = TrainConfig("classifier", str(store), str(run_dir), seed=seed,
                               loader=config.loader, splits=str(splits),
                               resume=(run_dir / "checkpoint.pt").exists(), **settings, **arm)
    result = train(train_config, backend=None)
    used = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["splits"]
    return result, {split: used[split]["used"] for split in ("train", "val", "test")}


def score_cell(predictions: Mapping[str, np.ndarray], rows: np.ndarray,
               source_of: Mapping[int, str], n_resamples: int,
               seed: int) -> tuple[dict, np.ndarray]:
    """A cell's scores and their bootstrap replicates (seeded by the repeat)."""
    labels, scores, lesions = cell_images(predictions, rows, source_of)
    return (evaluate_subset(predictions, rows, source_of),
            bootstrap_lesions(labels, scores, lesions, n_resamples, np.random.default_rng(seed)))


def summarize(repeats: Sequence[Mapping], replicates: Mapping) -> dict:
    """``{arm: {test: summarize_cell(...)}}`` over the repeats."""
    arms = repeats[0]["cells"]
    return {arm: {test: summarize_cell([r["cells"][arm][test] for r in repeats],
                                       replicates[arm][test])
                  for test in arms[arm]} for arm in arms}


def format_table(summary: Mapping, level: str, train_images: Mapping | None = None) -> str:
    """A markdown table: one row per training arm, one column per test set, each cell
    ``AUC mean [low, high] / accuracy mean [low, high]``.

    Examples
    --------
    >>> cell = {"lesion_auc": {"mean": 0.9, "low": 0.8, "high": 1.0},
    ...         "lesion_accuracy": {"mean": 0.85, "low": 0.7, "high": 0.95}}
    >>> print(format_table({"NoAugmentation": {"Test": cell}}, "lesion"))
    | lesion level: AUC / accuracy, mean [95 % interval] | Test |
    |---|---|
    | NoAugmentation | 0.900 [0.800, 1.000] / 0.850 [0.700, 0.950] |
    """
    columns = list(dict.fromkeys(test for row in summary.values() for test in row))
    extra = " train images |" if train_images else ""
    lines = [f"| {level} level: AUC / accuracy, mean [95 % interval] |{extra} "
             + " | ".join(columns) + " |", "|---|" + ("---|" if extra else "")
             + "---|" * len(columns)]
    for arm, row in summary.items():
        cells = [" / ".join(_interval(row[test][f"{level}_{m}"]) for m in ("auc", "accuracy"))
                 if test in row else "" for test in columns]
        used = f" {train_images[arm]} |" if train_images else ""
        lines.append(f"| {arm} |{used} " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(value: Mapping) -> str:
    return f"{value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def _null_nan(value):
    """Undefined metrics (nan: one class only) as JSON ``null``; JSON has no nan."""
    if isinstance(value, Mapping):
        return {key: _null_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_nan(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_results(out: Path, document: Mapping, header: str, name: str, title: str,
                  train_images: Mapping | None = None) -> dict:
    """``results.json`` (every repeat's numbers and the summary), ``table.md`` (header and the
    lesion- and image-level tables) and ``NAME.png`` (AUC per arm with its interval)."""
    from augengine.experiments.figure import plot_auc

    tables = "\n\n".join(format_table(document["summary"], level, train_images)
                         for level in ("lesion", "image"))
    (out / "results.json").write_text(json.dumps(_null_nan(document), indent=2) + "\n",
                                      encoding="utf-8")
    (out / "table.md").write_text(f"{header}\n\n{tables}\n", encoding="utf-8")
    plot_auc(out / f"{name}.png", document["summary"], document["repeats"], title)
    return dict(document)


def describe_data(summary: Mapping) -> str:
    """``"NAME: 80 lesions (40 benign, 40 malignant), 160 images (80 benign, 80 malignant)"``."""
    lesions, images = summary["lesions"], summary["images"]
    left = f"; {summary['left_out']} samples left out by the runner" if summary["left_out"] else ""
    return (f"{summary['name']}: {sum(lesions.values())} lesions ({lesions['benign']} benign, "
            f"{lesions['malignant']} malignant), {sum(images.values())} original images "
            f"({images['benign']} benign, {images['malignant']} malignant){left}")


def repeats_done(repeats: list, config: ExperimentConfig) -> str:
    """How many repeats the table holds, for its header and log lines."""
    if len(repeats) == config.repeats:
        return f"{config.repeats} repeat(s)"
    return f"{len(repeats)} of {config.repeats} repeats (run still going)"


def known_fields(settings: dict, config_class, own: set[str], what: str) -> dict:
    """``settings`` if each key is a field of the dataclass ``config_class`` that the experiment
    does not set itself (``own``); else a ValueError naming the key, ``what`` it is not, and the
    choices."""
    allowed = {f.name for f in dataclasses.fields(config_class)} - own
    for name in settings:
        if name not in allowed:
            raise ValueError(f"{name!r} is not {what} (choose from {', '.join(sorted(allowed))})")
    return settings
