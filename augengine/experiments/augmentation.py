"""Seed 002, Table 2: the same classifier trained without augmentation, with the engine's
geometric variants, with feed-forward style transfer, and with both.

Arms, on the same lesion split within a repeat, all tested on the test lesions' originals:

``NoAugmentation``
    the training lesions' originals.
``Geometric``
    plus their four stored geometric variants (flip, rotation, zoom, shift: seed 002's x5).
``StyleTransfer``
    plus the originals styled by within-class references (seed 002's pairs, ``k`` references
    per content image by default, every pair with ``style_pairs="all"``) through the AdaIN
    decoder, then despeckled by SRAD (the paper's post-step).
``StyleTransfer+Geometric``
    the originals, their geometric variants and the styled images.

The loader's random geometry is off in every arm, so the stored images are the only difference.

Split discipline: the decoder trains on a store of the training split's originals only
(``repeat{r}/train_originals.zarr``), and the style-transfer job reads that same store, so every
content image, every style reference and every decoder-training image is a training lesion's.
:func:`style_sources` records them (``repeat{r}/style_sources.json``) and
:func:`check_training_only` refuses to go on if any belongs to a validation or test lesion.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from augengine.errors import InputError
from augengine.experiments.common import (ExperimentConfig, Progress, describe_data,
                                          known_fields, lesion_split, log, prepare_data,
                                          repeats_done, score_cell, summarize, train_arm,
                                          write_results)
from augengine.experiments.data import (compose_store, data_summary, geometric_variants,
                                        reconstruction_steps, stage_store)

__all__ = ["ARMS", "DECODER_SETTINGS", "StyleConfig", "augmentation_experiment",
           "augmentation_job", "check_training_only", "style_job", "style_sources"]

ARMS = ("NoAugmentation", "Geometric", "StyleTransfer", "StyleTransfer+Geometric")
#: Decoder training on a CPU at 64 px (docs/nst.md, "Decoder quality"): a seeded random
#: ResNet-18 encoder aligned and compared at its stride-2 stage, where its features can still be
#: decoded; one random within-class reference per content image and epoch; no LRP weighting
#: (the paper's "without XAI" row: a random classifier's relevance would mean nothing).
DECODER_SETTINGS = {"arch": "resnet18", "layer": "relu", "content_layers": ["relu"],
                    "style_layers": ["relu", "layer1", "layer2"], "lr": 1e-3, "epochs": 10,
                    "batch_size": 8, "lrp": False, "pairing": "within_class_k"}
#: train_feedforward keywords the experiment sets itself.
#: (``encoder_weights`` is :attr:`StyleConfig.encoder_weights`: the decoder trains and styles with
#: the same file.)
_OWN_DECODER = {"store_path", "out_dir", "seed", "horovod", "resume", "debug_rank_states",
                "encoder_weights"}


class StyleConfig(BaseModel):
    """Style-transfer settings of the augmentation experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: A trained decoder (``checkpoint.pt`` of ``train_feedforward``) instead of training one
    #: per repeat. It must not have seen the test lesions of any repeat: the experiment cannot
    #: check that, so the table says the decoder came from outside.
    checkpoint: str | None = None
    #: The encoder weights (local file) the decoder trains with, or was trained with when given
    #: as ``checkpoint``; None: the seeded random encoder.
    encoder_weights: str | None = None
    #: ``k``: each training original styled by ``references`` random others of its class;
    #: ``all``: by every training image of its class (seed 002's plan).
    style_pairs: Literal["k", "all"] = "k"
    references: int = Field(default=4, ge=1, le=1000)
    #: SRAD iterations after style transfer (seed 002: 10 per scale).
    srad_iterations: int = Field(default=10, ge=0, le=10000)
    #: Reconstruction dynamic range of RF data, and the one SRAD assumes (image sources do not
    #: record theirs).
    dynamic_range_db: float = Field(default=50.0, gt=0, le=120)
    #: ROI margin of RF data, mm.
    margin_mm: float = Field(default=5.0, ge=0)
    #: train_feedforward keywords over :data:`DECODER_SETTINGS` (e.g. ``epochs``, ``arch``).
    decoder: dict[str, Any] = Field(default_factory=dict)

    @field_validator("decoder")
    @classmethod
    def _known_decoder_settings(cls, value):
        from augengine.train.nst_decoder import DecoderTrainConfig

        return known_fields(value, DecoderTrainConfig, _OWN_DECODER, "a decoder setting")

    def decoder_settings(self) -> dict:
        return {**DECODER_SETTINGS, **self.decoder}


def augmentation_job(source: dict, store: str | Path, image_size: int = 32, seed: int = 0,
                     style: StyleConfig = StyleConfig(), shard_size: int = 40) -> dict:
    """The runner job of the dataset: each original (RF at ``dynamic_range_db`` and
    ``margin_mm``; images resized) in five versions (:func:`~augengine.experiments.data.
    geometric_variants`).

    Examples
    --------
    >>> job = augmentation_job({"reader": "oasbud", "path": "x.mat"}, "out/aug.zarr")
    >>> [step.get("op", "one_of") for step in job["steps"]]
    ['bmode', 'roi_crop', 'scan_convert', 'resize', 'one_of']
    """
    return {"name": "exp-augmentation", "seed": seed, "sources": [source],
            "steps": [*reconstruction_steps(source["reader"], style.dynamic_range_db,
                                            style.margin_mm), geometric_variants(image_size)],
            "output": {"path": str(store), "size": [image_size, image_size],
                       "shard_size": shard_size}}


def style_job(originals: str | Path, checkpoint: str | Path, store: str | Path, image_size: int,
              seed: int, style: StyleConfig) -> dict:
    """The style-transfer job of one repeat: the training originals styled within their class
    through the decoder, then SRAD.

    Examples
    --------
    >>> job = style_job("train.zarr", "ckpt.pt", "nst.zarr", 64, 0, StyleConfig())
    >>> job["nst"]["pairing"], job["nst"]["k"], job["steps"]
    ('within_class_k', 4, [{'op': 'srad', 'iterations': 10, 'dynamic_range_db': 50.0}])
    """
    nst = {"mode": "feedforward", "checkpoint": str(checkpoint),
           "encoder_weights": style.encoder_weights, "quality_checks": 0.0}
    if style.style_pairs == "all":
        nst["pairing"] = "within_class_all"
    else:
        nst.update(pairing="within_class_k", k=style.references)
    steps = ([{"op": "srad", "iterations": style.srad_iterations,
               "dynamic_range_db": style.dynamic_range_db}] if style.srad_iterations else [])
    return {"name": "exp-style-transfer", "seed": seed,
            "sources": [{"reader": "store", "path": str(originals)}], "nst": nst, "steps": steps,
            "output": {"path": str(store), "size": [image_size, image_size], "shard_size": 128}}


def style_sources(style_store: str | Path, decoder_store: str | Path | None,
                  source_of_sample: dict[str, str]) -> dict:
    """Every image that fed style transfer in one repeat, by sample id and lesion.

    Parameters
    ----------
    style_store : str or Path
        The style-transfer job's output (its manifest's ``nst`` records name the content and
        style sample ids).
    decoder_store : str or Path or None
        The store the decoder trained on; None for a decoder from ``--nst-checkpoint``.
    source_of_sample : dict
        Lesion (source id) of every original's sample id.

    Returns
    -------
    dict
        ``content``, ``style``, ``decoder_training``: each ``{"samples": [...], "lesions":
        [...]}`` (sorted; ``decoder_training`` None for an outside decoder).
    """
    from augengine.store import open_store

    content, style = set(), set()
    for entry in open_store(style_store).manifest.column("ops").to_pylist():
        for step in json.loads(entry):
            if step.get("op") == "nst":
                content.add(step["content_id"])
                style.update(step.get("style_ids") or [step["style_id"]])

    def named(samples):
        return {"samples": sorted(samples),
                "lesions": sorted({source_of_sample[s] for s in samples})}

    decoder = None
    if decoder_store is not None:
        decoder = named(open_store(decoder_store).manifest.column("sample_id").to_pylist())
    return {"content": named(content), "style": named(style), "decoder_training": decoder}


def check_training_only(record: dict, splits: dict[str, list[str]], where: str) -> None:
    """Refuse (``InputError``) a style-transfer input from a validation or test lesion.

    Examples
    --------
    >>> record = {"content": {"lesions": ["a"]}, "style": {"lesions": ["b"]},
    ...           "decoder_training": None}
    >>> check_training_only(record, {"train": ["a"], "val": [], "test": ["b"]}, "repeat0")
    Traceback (most recent call last):
    augengine.errors.InputError: repeat0: style lesion 'b' is in the test split
    """
    split_of = {lesion: name for name, lesions in splits.items() for lesion in lesions}
    for role in ("content", "style", "decoder_training"):
        for lesion in (record[role] or {}).get("lesions", []):
            if split_of.get(lesion) != "train":
                raise InputError(f"{where}: {role.replace('_', ' ')} lesion {lesion!r} is in the "
                                 f"{split_of.get(lesion, 'no')} split")


def augmentation_experiment(config: ExperimentConfig, style: StyleConfig = StyleConfig()) -> dict:
    """Run seed 002's Table 2 comparison on ``config.data`` (or phantoms) ``config.repeats``
    times.

    Files in ``config.out``: ``dataset.zarr`` (originals and geometric variants), per repeat
    ``repeat{r}/``: ``splits.json``, ``train_originals.zarr``, ``decoder/`` (unless
    ``style.checkpoint``), ``style.zarr`` (the styled training images), ``style_sources.json``,
    the arms' stores and run folders; ``results.json``, ``table.md``, ``augmentation.png``.

    Returns
    -------
    dict
        The ``results.json`` document (as :func:`~augengine.experiments.dynamic_range.
        dynamic_range_experiment`'s, one test column ``Test``; each repeat also has
        ``style_sources``).
    """
    from augengine.store import open_store
    from augengine.manifest import originals_only

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    source, name = prepare_data(config)
    settings = config.classifier_settings()
    size = settings["image_size"]
    store = stage_store(augmentation_job(source, out / "dataset.zarr", size, config.seed, style),
                        "augmentation job")
    used = data_summary(store, name)
    manifest = open_store(store).manifest
    every = manifest.column("index").to_numpy()
    originals = originals_only(manifest.select(["index", "sample_id", "source_id", "ops"]))
    original_rows = originals.column("index").to_numpy()
    source_of_sample = dict(zip(originals.column("sample_id").to_pylist(),
                                originals.column("source_id").to_pylist()))
    original_sources = np.asarray(originals.column("source_id").to_pylist(), dtype=object)

    steps = config.repeats * (len(ARMS) + 1 + (style.checkpoint is None))
    progress = Progress(steps, "stages (decoder, style transfer, classifier trainings)")
    repeats, replicates = [], {arm: {"Test": []} for arm in ARMS}

    def report() -> dict:
        """Write the results of the repeats done so far (after each repeat)."""
        decoder = (f"decoder from {style.checkpoint} (trained outside the experiment)"
                   if style.checkpoint else "decoder trained per repeat on the training "
                   f"originals ({style.decoder_settings()})")
        pairs = ("every within-class pair" if style.style_pairs == "all"
                 else f"{style.references} within-class references per original")
        test_lesions = sorted({r["split"]["test"] for r in repeats})
        header = (f"Experiment 2 (seed 002 Table 2): {describe_data(used)}; "
                  + (f"RF at {style.dynamic_range_db:g} dB, {style.margin_mm:g} mm margin; "
                     if source["reader"] in ("oasbud", "rf_npz") else "")
                  + f"style transfer: {pairs}, SRAD {style.srad_iterations} iterations, "
                  f"{decoder}. "
                  f"{repeats_done(repeats, config)} (split and training seeds {config.seed}.."
                  f"{config.seed + len(repeats) - 1}), {'/'.join(map(str, test_lesions))} test "
                  f"lesions per repeat, {config.bootstrap} bootstrap replicates of them per "
                  f"repeat; classifier {settings}, loader augmentation off.")
        document = {"experiment": "augmentation", "data": {**used, "source": source},
                    "settings": {"classifier": settings, "style": style.model_dump(),
                                 "decoder": style.decoder_settings(), "repeats": config.repeats,
                                 "seed": config.seed, "fractions": list(config.fractions),
                                 "bootstrap": config.bootstrap, "loader": config.loader},
                    "repeats": repeats, "summary": summarize(repeats, replicates)}
        log.info("results of %s in %s", repeats_done(repeats, config), out / "table.md")
        arms = repeats[0]["train_images"]
        title = (f"Seed 002 Table 2 on {used['name']}: {repeats_done(repeats, config)}, "
                 f"{'/'.join(map(str, test_lesions))} test lesions each")
        return write_results(out, document, header, "augmentation", title, train_images={
            arm: round(sum(r["train_images"][arm] for r in repeats) / len(repeats))
            for arm in arms})

    for r in range(config.repeats):
        seed = config.seed + r
        folder = out / f"repeat{r}"
        splits = lesion_split(store, config.fractions, seed, folder / "splits.json")
        train_rows = original_rows[np.isin(original_sources, splits["train"])]
        train_store = compose_store(folder / "train_originals.zarr", [(store, train_rows)])
        checkpoint, decoder_store = style.checkpoint, None
        if checkpoint is None:
            checkpoint = _train_decoder(train_store, folder / "decoder", seed, style)
            decoder_store = train_store
            progress.step(f"repeat {r}, decoder")
        styled = stage_store(style_job(train_store, checkpoint, folder / "style.zarr", size, seed,
                                       style), "style-transfer job")
        progress.step(f"repeat {r}, style transfer")
        sources = style_sources(styled, decoder_store, source_of_sample)
        (folder / "style_sources.json").write_text(json.dumps(sources, indent=2) + "\n",
                                                   encoding="utf-8")
        check_training_only(sources, splits, str(folder))
        styled_rows = open_store(styled).indices
        stores = {
            "NoAugmentation": (store, {"train_originals_only": True}),
            "Geometric": (store, {}),
            "StyleTransfer": (compose_store(folder / "style_arm.zarr", [
                (store, original_rows), (styled, styled_rows)]), {}),
            "StyleTransfer+Geometric": (compose_store(folder / "style_geometric_arm.zarr", [
                (store, every), (styled, styled_rows)]), {}),
        }
        record = {"seed": seed, "split": {k: len(v) for k, v in splits.items()},
                  "train_images": {}, "cells": {},
                  "style_sources": {role: None if value is None else len(value["samples"])
                                    for role, value in sources.items()}}
        for arm in ARMS:
            data, options = stores[arm]
            result, counts = train_arm(data, folder / arm, config, seed, folder / "splits.json",
                                       augment=False, **options)
            # Test rows are the test lesions' originals, indexed in the arm's own store.
            arm_view = open_store(data)
            point, reps = score_cell(result.predictions, result.predictions["index"],
                                     dict(zip(arm_view.indices.tolist(),
                                              arm_view.manifest.column("source_id").to_pylist())),
                                     config.bootstrap, seed)
            record["train_images"][arm] = counts["train"]
            record["cells"][arm] = {"Test": point}
            replicates[arm]["Test"].append(reps)
            progress.step(f"repeat {r}, {arm}")
        repeats.append(record)
        document = report()
    return document


def _train_decoder(store: Path, out_dir: Path, seed: int, style: StyleConfig) -> Path:
    from augengine.train.nst_decoder import train_feedforward

    settings = style.decoder_settings()
    for name in ("content_layers", "style_layers"):
        settings[name] = tuple(settings[name])
    result = train_feedforward(store_path=store, out_dir=out_dir, seed=seed, resume=True,
                               encoder_weights=style.encoder_weights, **settings)
    log.info("decoder: loss per epoch %s", ", ".join(f"{x:.4g}" for x in result.epoch_losses))
    return result.checkpoint
