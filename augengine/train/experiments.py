"""The seeds' experiments, re-run end to end on simulated phantoms: simulate -> runner -> train.

1. :func:`dynamic_range_experiment` -- seed 001, Table I: B-mode images reconstructed from the
   same RF at 40, 50 and 60 dB (three ROI margins each, six images per lesion as in the seed);
   a classifier trained at one dynamic range or at all three ("TrainALL") and tested at each.
2. :func:`augmentation_experiment` -- the direction of seed 002, Table 2: the same classifier
   trained on the originals alone vs on the originals plus the engine's stored geometric variants
   (flip, rotation, scaling, translation: five images per scan, as seed 002's 800 -> 4000).

Both split by lesion (70/15/15, the same split for every arm), test on original test images
only, and report the AUC and the accuracy at the ROC point closest to (0, 1) (seed 001's
operating point), per image and per lesion (the mean malignancy probability of a lesion's test
images, as seed 001 averages them). The settings are tiny so that each experiment finishes in
minutes on two CPU cores; the numbers show that the pipeline works end to end. Phantoms are not
patients: these are not clinical results. docs/experiments.md holds the tables and the commands.

Command line::

    python -m augengine.train.experiments dynamic-range --out runs/exp1
    python -m augengine.train.experiments augmentation --out runs/exp2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from augengine.errors import AugengineError, ConfigError
from augengine.train.metrics import roc_auc, roc_operating_point

__all__ = ["DYNAMIC_RANGES_DB", "EXPERIMENT_SETTINGS", "augmentation_experiment",
           "augmentation_job", "dynamic_range_experiment", "dynamic_range_job", "evaluate_subset",
           "format_table", "main"]

#: Seed 001's thresholds of the log-compressed envelope, dB.
DYNAMIC_RANGES_DB = (40, 50, 60)
#: Seed 001's tissue margins around the ROI, mm.
_MARGINS_MM = (2, 5, 10)
#: Classifier settings of the experiments: seed 002's network (on ResNet-18, 64 px) with Adam at
#: 1e-3 instead of SGD at 1e-4, which learns nothing in a few CPU epochs from random weights.
EXPERIMENT_SETTINGS = {"arch": "resnet18", "image_size": 64, "epochs": 10, "batch_size": 16,
                       "optimizer": "adam", "lr": 1e-3, "patience": 0, "lr_schedule": False}


def dynamic_range_job(phantoms: str | Path, store: str | Path, image_size: int = 64,
                      seed: int = 0, shard_size: int = 36) -> dict:
    """The runner job of experiment 1: each RF frame at 40/50/60 dB x ROI margins 2/5/10 mm.

    Returns
    -------
    dict
        A job for :func:`augengine.config.parse_job`: 9 originals per RF frame (no
        augmentation op), ``image_size`` square.

    Examples
    --------
    >>> job = dynamic_range_job("phantoms/phantoms.mat", "out/dr.zarr")
    >>> [step["op"] for step in job["steps"]]
    ['bmode', 'roi_crop', 'scan_convert', 'resize']
    """
    return {
        "name": "exp-dynamic-range", "seed": seed,
        "sources": [{"reader": "oasbud", "path": str(phantoms)}],
        "steps": [{"op": "bmode", "sweep": {"dynamic_range_db": list(DYNAMIC_RANGES_DB)}},
                  {"op": "roi_crop", "sweep": {"margin_mm": list(_MARGINS_MM)}},
                  {"op": "scan_convert"}, {"op": "resize"}],
        "output": {"path": str(store), "size": [image_size, image_size],
                   "shard_size": shard_size},
    }


def augmentation_job(phantoms: str | Path, store: str | Path, image_size: int = 64,
                     seed: int = 0, shard_size: int = 40) -> dict:
    """The runner job of experiment 2: each RF frame at 50 dB, 5 mm margin, in five versions.

    The original (``identity``) and four geometric variants: a horizontal flip, a rotation
    uniform in [-15, 15] degrees, a zoom uniform in [0.85, 1.15] and a shift uniform in +-10 % of
    the side (seed 002's rotation, scaling and flipping; seed 004's translation).

    Examples
    --------
    >>> job = augmentation_job("phantoms/phantoms.mat", "out/aug.zarr")
    >>> [step["op"] for step in job["steps"][-1]["one_of"]]
    ['identity', 'flip', 'rotate', 'scale', 'translate']
    """
    shift = round(0.1 * image_size, 1)
    return {
        "name": "exp-augmentation", "seed": seed,
        "sources": [{"reader": "oasbud", "path": str(phantoms)}],
        "steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "roi_crop", "margin_mm": 5},
                  {"op": "scan_convert"}, {"op": "resize"},
                  {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "horizontal"},
                              {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}},
                              {"op": "scale", "factor": {"uniform": [0.85, 1.15]}},
                              {"op": "translate", "dy_px": {"uniform": [-shift, shift]},
                               "dx_px": {"uniform": [-shift, shift]}}]}],
        "output": {"path": str(store), "size": [image_size, image_size],
                   "shard_size": shard_size},
    }


def evaluate_subset(predictions: Mapping[str, np.ndarray], rows: np.ndarray,
                    source_of: Mapping[int, str]) -> dict:
    """AUC and operating-point accuracy of a classifier's test predictions on store ``rows``.

    Parameters
    ----------
    predictions : mapping
        ``index``, ``label``, ``score`` per test image (``TrainResult.predictions``).
    rows : ndarray of int
        The store indices to score (e.g. the rows reconstructed at 40 dB).
    source_of : mapping int -> str
        Lesion (source id) of each store index.

    Returns
    -------
    dict
        ``images``, ``lesions`` (counts); ``image_auc``, ``image_accuracy``; ``lesion_auc``,
        ``lesion_accuracy`` (each lesion scored by the mean of its images' scores, seed 001).
        Accuracies are at the ROC point closest to (0, 1); ``nan`` where one class is missing.

    Examples
    --------
    >>> predictions = {"index": np.array([0, 1, 2, 3]), "label": np.array([0, 0, 1, 1]),
    ...                "score": np.array([0.1, 0.3, 0.2, 0.9])}
    >>> result = evaluate_subset(predictions, np.array([0, 1, 2, 3]),
    ...                          {0: "a", 1: "a", 2: "b", 3: "b"})
    >>> result["image_auc"], result["lesion_auc"], result["lesions"]
    (0.75, 1.0, 2)
    """
    keep = np.isin(predictions["index"], rows)
    labels, scores = predictions["label"][keep], predictions["score"][keep]
    lesions = np.array([source_of[int(i)] for i in predictions["index"][keep]])
    names = sorted(set(lesions.tolist()))
    lesion_labels = np.array([labels[lesions == name][0] for name in names])
    lesion_scores = np.array([scores[lesions == name].mean() for name in names])
    return {"images": int(keep.sum()), "lesions": len(names),
            "image_auc": roc_auc(labels, scores),
            "image_accuracy": roc_operating_point(labels, scores)["accuracy"],
            "lesion_auc": roc_auc(lesion_labels, lesion_scores),
            "lesion_accuracy": roc_operating_point(lesion_labels, lesion_scores)["accuracy"]}


def format_table(results: Mapping[str, Mapping[str, Mapping]], level: str) -> str:
    """A markdown table: one row per training arm, one column per test set, ``AUC / accuracy``.

    Parameters
    ----------
    results : mapping
        ``{arm: {test set: evaluate_subset(...)}}``.
    level : {"image", "lesion"}

    Examples
    --------
    >>> cell = {"image_auc": 0.75, "image_accuracy": 0.5}
    >>> print(format_table({"Train40dB": {"Test40dB": cell}}, "image"))
    | image level: AUC / accuracy | Test40dB |
    |---|---|
    | Train40dB | 0.750 / 0.500 |
    """
    columns = list(dict.fromkeys(test for row in results.values() for test in row))
    lines = [f"| {level} level: AUC / accuracy | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for arm, row in results.items():
        cells = [f"{row[test][f'{level}_auc']:.3f} / {row[test][f'{level}_accuracy']:.3f}"
                 if test in row else "" for test in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _build_store(out: Path, job_builder, n_benign: int, n_malignant: int, image_size: int,
                 seed: int) -> Path:
    from augengine.config import parse_job
    from augengine.runner import run_job
    from augengine.simulate import simulate_dataset

    from augengine.store import manifest_file

    store = out / "dataset.zarr"
    if not manifest_file(store).exists():
        if not (out / "phantoms" / "phantoms.mat").exists():
            simulate_dataset(n_benign, n_malignant, out / "phantoms", seed=seed)
        job = parse_job(job_builder(out / "phantoms" / "phantoms.mat", store, image_size, seed),
                        origin="experiment job")
        run_job(job, progress=False)
    return store


def _lesions(store: Path) -> tuple[dict[int, str], object]:
    from augengine.store import open_store

    manifest = open_store(store).manifest
    indices = manifest.column("index").to_pylist()
    return dict(zip(indices, manifest.column("source_id").to_pylist())), manifest


def _settings(overrides: Mapping | None) -> dict:
    settings = dict(EXPERIMENT_SETTINGS)
    settings.update(overrides or {})
    return settings


def _train_arm(store: Path, run_dir: Path, settings: Mapping, seed: int, loader: str, **arm):
    from augengine.train.loop import TrainConfig, train

    config = TrainConfig("classifier", str(store), str(run_dir), seed=seed, loader=loader,
                         **{**settings, **arm})
    return train(config, backend=None)


def _null_nan(value):
    """Undefined metrics (nan: one class only) as JSON ``null``; JSON has no nan."""
    if isinstance(value, Mapping):
        return {key: _null_nan(item) for key, item in value.items()}
    return None if isinstance(value, float) and np.isnan(value) else value


def _write(out: Path, results: Mapping, header: str) -> None:
    tables = "\n\n".join(format_table(results, level) for level in ("lesion", "image"))
    (out / "results.json").write_text(json.dumps(_null_nan(results), indent=2) + "\n",
                                      encoding="utf-8")
    (out / "table.md").write_text(f"{header}\n\n{tables}\n", encoding="utf-8")


def dynamic_range_experiment(out: str | Path, n_benign: int = 24, n_malignant: int = 24,
                             seed: int = 0, loader: str = "dali",
                             settings: Mapping | None = None) -> dict:
    """Seed 001, Table I on phantoms: train at 40, 50, 60 dB or all three; test at each.

    Parameters
    ----------
    out : str or Path
        Working folder: ``phantoms/`` and ``dataset.zarr`` (re-used when present: delete them to
        change the phantom counts), one run directory per training arm (``Train40dB``, ...,
        ``TrainALL``), ``results.json`` and ``table.md``.
    n_benign, n_malignant : int
        Simulated scans (two per lesion).
    seed : int
        Phantoms, job, split and training.
    loader : {"dali", "torch"}
    settings : mapping, optional
        :class:`~augengine.train.loop.TrainConfig` fields overriding
        :data:`EXPERIMENT_SETTINGS` (e.g. ``{"epochs": 20}``).

    Returns
    -------
    dict
        ``{"Train40dB": {"Test40dB": evaluate_subset(...), ...}, ..., "TrainALL": {...}}``.
    """
    out = Path(out)
    settings = _settings(settings)
    store = _build_store(out, dynamic_range_job, n_benign, n_malignant, settings["image_size"],
                         seed)
    from augengine.manifest import rows_where

    source_of, manifest = _lesions(store)
    index = manifest.column("index").to_numpy()
    rows_at = {db: index[rows_where(manifest, [("bmode.dynamic_range_db", db)])]
               for db in DYNAMIC_RANGES_DB}
    arms = {f"Train{db}dB": (("bmode.dynamic_range_db", db),) for db in DYNAMIC_RANGES_DB}
    arms["TrainALL"] = ()
    results = {}
    for arm, where in arms.items():
        result = _train_arm(store, out / arm, settings, seed, loader, train_where=where)
        results[arm] = {f"Test{db}dB": evaluate_subset(result.predictions, rows_at[db],
                                                       source_of)
                        for db in DYNAMIC_RANGES_DB}
    _write(out, results,
           f"Experiment 1 (seed 001 Table I) on {n_benign}+{n_malignant} phantom scans, "
           f"settings {settings}")
    return results


def augmentation_experiment(out: str | Path, n_benign: int = 24, n_malignant: int = 24,
                            seed: int = 0, loader: str = "dali",
                            settings: Mapping | None = None) -> dict:
    """Seed 002, Table 2's direction on phantoms: no augmentation vs the engine's variants.

    Arms (loader augmentation off in both, so the stored variants are the only difference):
    ``NoAugmentation`` trains on the original train images; ``EngineVariants`` on the originals
    plus their four stored geometric variants (:func:`augmentation_job`). Both test on the
    original test images. Parameters as :func:`dynamic_range_experiment`.

    Returns
    -------
    dict
        ``{"NoAugmentation": {"Test": evaluate_subset(...)}, "EngineVariants": {...}}``.
    """
    out = Path(out)
    settings = _settings(settings)
    store = _build_store(out, augmentation_job, n_benign, n_malignant, settings["image_size"],
                         seed)
    source_of, manifest = _lesions(store)
    all_rows = manifest.column("index").to_numpy()
    arms = {"NoAugmentation": {"train_originals_only": True},
            "EngineVariants": {"train_originals_only": False}}
    results = {}
    for arm, options in arms.items():
        result = _train_arm(store, out / arm, settings, seed, loader, augment=False, **options)
        results[arm] = {"Test": evaluate_subset(result.predictions, all_rows, source_of)}
    _write(out, results,
           f"Experiment 2 (seed 002 Table 2 direction) on {n_benign}+{n_malignant} phantom "
           f"scans, settings {settings}")
    return results


_EXPERIMENTS = {"dynamic-range": dynamic_range_experiment,
                "augmentation": augmentation_experiment}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m augengine.train.experiments {dynamic-range,augmentation} --out DIR ...``."""
    from augengine.train.loop import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m augengine.train.experiments",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(_EXPERIMENTS))
    parser.add_argument("--out", required=True, help="working folder (the store is re-used)")
    parser.add_argument("--n-benign", type=int, default=24, help="benign scans (2 per lesion)")
    parser.add_argument("--n-malignant", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loader", choices=("dali", "torch"), default="dali")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a training setting, e.g. --set epochs=20 "
                             f"(defaults {EXPERIMENT_SETTINGS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # The experiment sets these itself (--out, --seed, --loader and the arms).
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {
        "task", "data", "out", "seed", "loader", "resume", "train_where", "test_where",
        "train_originals_only"}
    overrides = {}
    try:
        for item in args.set:
            name, _, value = item.partition("=")
            if name not in known:
                raise ConfigError(f"--set {item!r}: {name!r} is not a training setting --set may "
                                  "change (--out, --seed and --loader have flags of their own)")
            overrides[name] = _parse_value(value)
        _EXPERIMENTS[args.experiment](args.out, args.n_benign, args.n_malignant, args.seed,
                                      args.loader, overrides)
    except AugengineError as error:
        print(f"experiments {args.experiment}: error: {error}", file=sys.stderr)
        return 2
    print((Path(args.out) / "table.md").read_text(encoding="utf-8"))
    return 0


def _parse_value(text: str):
    """``--set`` values: JSON where it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


if __name__ == "__main__":
    sys.exit(main())
