"""Seed 001, Table I: train at 40, 50 or 60 dB or at all three ("TrainALL"), test at each.

The store holds every RF frame of the data reconstructed at 40, 50 and 60 dB, each cropped with
ROI margins of 2, 5 and 10 mm (nine originals per frame, six per lesion and dynamic range for
OASBUD's two scans per lesion, as in the seed). Each repeat splits the lesions anew (seeded by
``seed + r``) and trains the four arms on that split; every arm is tested on the test lesions'
images at each dynamic range.
"""
from __future__ import annotations

from pathlib import Path

from augengine.errors import ConfigError
from augengine.experiments.common import (ExperimentConfig, Progress, describe_data, lesion_split,
                                          log, prepare_data, repeats_done, score_cell, summarize,
                                          train_arm, write_results)
from augengine.experiments.data import (DYNAMIC_RANGES_DB, MARGINS_MM, RF_READERS, data_summary,
                                        reconstruction_steps, stage_store)

__all__ = ["CPU_MARGINS_MM", "dynamic_range_experiment", "dynamic_range_job"]

#: The ROI margin of the CPU-sized run, mm (seed 001's three margins: ``MARGINS_MM``).
CPU_MARGINS_MM = (5.0,)


def dynamic_range_job(source: dict, store: str | Path, image_size: int = 32, seed: int = 0,
                      margins_mm: tuple[float, ...] = MARGINS_MM, shard_size: int = 36) -> dict:
    """The runner job of the experiment: each RF frame at 40/50/60 dB x the ROI margins (seed
    001's 2/5/10 mm by default).

    Parameters
    ----------
    source : dict
        A job ``sources`` entry (:func:`augengine.experiments.data.source_config`) of an RF
        reader.

    Examples
    --------
    >>> job = dynamic_range_job({"reader": "oasbud", "path": "OASBUD.mat"}, "out/dr.zarr")
    >>> [step["op"] for step in job["steps"]]
    ['bmode', 'roi_crop', 'scan_convert', 'resize']
    """
    if source["reader"] not in RF_READERS:
        raise ConfigError(f"dynamic-range: {source['path']} is read by {source['reader']}, which "
                          "gives B-mode images; the experiment reconstructs RF (an OASBUD .mat "
                          "or .npz files)")
    return {"name": "exp-dynamic-range", "seed": seed, "sources": [source],
            "steps": reconstruction_steps(source["reader"], DYNAMIC_RANGES_DB, list(margins_mm)),
            "output": {"path": str(store), "size": [image_size, image_size],
                       "shard_size": shard_size}}


def dynamic_range_experiment(config: ExperimentConfig,
                             margins_mm: tuple[float, ...] = CPU_MARGINS_MM) -> dict:
    """Run seed 001's Table I on ``config.data`` (or phantoms) ``config.repeats`` times.

    ``margins_mm``: the ROI margins of the crops; the CPU default is 5 mm alone (three images
    per frame), seed 001's 2/5/10 mm (:data:`~augengine.experiments.data.MARGINS_MM`) triples
    the images and the training time.

    Files in ``config.out``: ``dataset.zarr``, ``repeat{r}/splits.json`` and one run folder per
    arm (``Train40dB``, ..., ``TrainALL``), ``results.json``, ``table.md`` and
    ``dynamic_range.png``.

    Returns
    -------
    dict
        The ``results.json`` document: ``experiment``, ``data`` (what was used), ``settings``,
        ``repeats`` (per repeat: ``seed``, ``split`` lesion counts, ``train_images`` per arm,
        ``cells`` ``{arm: {test: scores}}``) and ``summary`` (``{arm: {test: {metric: {mean,
        low, high}}}}``).
    """
    from augengine.manifest import rows_where
    from augengine.store import open_store

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    source, name = prepare_data(config)
    settings = config.classifier_settings()
    store = stage_store(dynamic_range_job(source, out / "dataset.zarr", settings["image_size"],
                                          config.seed, margins_mm), "dynamic-range job")
    used = data_summary(store, name)
    manifest = open_store(store).manifest
    index = manifest.column("index").to_numpy()
    source_of = dict(zip(index.tolist(), manifest.column("source_id").to_pylist()))
    rows_at = {db: index[rows_where(manifest, [("bmode.dynamic_range_db", db)])]
               for db in DYNAMIC_RANGES_DB}
    arms = {f"Train{db}dB": (("bmode.dynamic_range_db", db),) for db in DYNAMIC_RANGES_DB}
    arms["TrainALL"] = ()
    progress = Progress(config.repeats * len(arms), "classifier trainings")
    repeats, replicates = [], {arm: {f"Test{db}dB": [] for db in DYNAMIC_RANGES_DB}
                               for arm in arms}

    def report() -> dict:
        """Write the results of the repeats done so far (after each repeat)."""
        document = {"experiment": "dynamic-range", "data": {**used, "source": source},
                    "settings": {"classifier": settings, "repeats": config.repeats,
                                 "seed": config.seed, "fractions": list(config.fractions),
                                 "bootstrap": config.bootstrap, "loader": config.loader},
                    "repeats": repeats, "summary": summarize(repeats, replicates)}
        test_lesions = sorted({r["split"]["test"] for r in repeats})
        header = (f"Experiment 1 (seed 001 Table I): {describe_data(used)}; each frame at "
                  f"{'/'.join(map(str, DYNAMIC_RANGES_DB))} dB x ROI margins "
                  f"{'/'.join(f'{m:g}' for m in margins_mm)} mm. {repeats_done(repeats, config)} (split "
                  f"and training seeds {config.seed}..{config.seed + len(repeats) - 1}), "
                  f"{'/'.join(map(str, test_lesions))} test lesions per repeat, "
                  f"{config.bootstrap} bootstrap replicates of them per repeat; classifier "
                  f"{settings}.")
        log.info("results of %s in %s", repeats_done(repeats, config), out / "table.md")
        title = (f"Seed 001 Table I on {used['name']}: {repeats_done(repeats, config)}, "
                 f"{'/'.join(map(str, test_lesions))} test lesions each")
        return write_results(out, document, header, "dynamic_range", title,
                             train_images=_mean_train_images(repeats))

    for r in range(config.repeats):
        seed = config.seed + r
        folder = out / f"repeat{r}"
        splits = lesion_split(store, config.fractions, seed, folder / "splits.json")
        record = {"seed": seed, "split": {k: len(v) for k, v in splits.items()},
                  "train_images": {}, "cells": {}}
        for arm, where in arms.items():
            result, counts = train_arm(store, folder / arm, config, seed, folder / "splits.json",
                                       train_where=where)
            record["train_images"][arm] = counts["train"]
            record["cells"][arm] = {}
            for db in DYNAMIC_RANGES_DB:
                point, reps = score_cell(result.predictions, rows_at[db], source_of,
                                         config.bootstrap, seed)
                record["cells"][arm][f"Test{db}dB"] = point
                replicates[arm][f"Test{db}dB"].append(reps)
            progress.step(f"repeat {r}, {arm}")
        repeats.append(record)
        document = report()
    return document



def _mean_train_images(repeats) -> dict:
    arms = repeats[0]["train_images"]
    return {arm: round(sum(r["train_images"][arm] for r in repeats) / len(repeats))
            for arm in arms}
