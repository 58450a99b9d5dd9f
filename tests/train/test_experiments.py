"""The seeds' experiments on phantoms: the jobs they build, the scoring, and tiny end-to-end runs
(simulate -> runner on the session's embedded Ray -> 4 and 2 classifier trainings).

The end-to-end runs read through the PyTorch loader (DALI is covered by test_jobs.py) and use
8 + 8 phantom scans (4 lesions per class) split 50/25/25, so that every test set holds both
classes; one epoch at 32 px.
"""
from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from augengine.config import parse_job
from augengine.plan import make_plan
from augengine.train.experiments import (
    augmentation_experiment,
    augmentation_job,
    dynamic_range_experiment,
    dynamic_range_job,
    evaluate_subset,
    format_table,
    main,
)

TINY = {"image_size": 32, "epochs": 1, "batch_size": 8, "fractions": (0.5, 0.25, 0.25)}


def test_docstring_examples():
    import augengine.train.experiments as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0, \
        f"{result.failed} of {result.attempted} examples failed"


def test_dynamic_range_job_makes_nine_originals_per_frame(phantom_dir, tmp_path):
    plan = make_plan(parse_job(dynamic_range_job(phantom_dir / "phantoms.mat",
                                                 tmp_path / "dr.zarr", image_size=48)))
    assert plan.n_samples == 4 * 9, f"4 frames x 3 dynamic ranges x 3 margins, got {plan.n_samples}"
    swept = sorted((chain[0][1]["dynamic_range_db"], chain[1][1]["margin_mm"])
                   for chain in plan.chains)
    assert swept == [(db, mm) for db in (40, 50, 60) for mm in (2, 5, 10)], f"chains {swept}"


def test_augmentation_job_makes_an_original_and_four_variants(phantom_dir, tmp_path):
    job = augmentation_job(phantom_dir / "phantoms.mat", tmp_path / "aug.zarr", image_size=64)
    plan = make_plan(parse_job(job))
    assert plan.n_samples == 4 * 5, f"4 frames x 5 versions, got {plan.n_samples}"
    translate = job["steps"][-1]["one_of"][-1]
    assert translate["dx_px"] == {"uniform": [-6.4, 6.4]}, "shift: 10 % of 64 pixels"


def test_evaluate_subset_scores_images_and_lesions_by_hand():
    predictions = {"index": np.arange(6), "label": np.array([0, 0, 0, 1, 1, 1]),
                   "score": np.array([0.1, 0.7, 0.2, 0.6, 0.3, 0.9])}
    lesion = {0: "b1", 1: "b1", 2: "b2", 3: "m1", 4: "m1", 5: "m2"}
    every = evaluate_subset(predictions, np.arange(6), lesion)
    # images: positive scores 0.6, 0.3, 0.9 vs negatives 0.1, 0.7, 0.2 -> 7 of 9 pairs ranked
    assert every["image_auc"] == pytest.approx(7 / 9), f"image AUC {every['image_auc']}"
    # lesions: b1 0.4, b2 0.2, m1 0.45, m2 0.9 -> every pair ranked right
    assert (every["lesions"], every["lesion_auc"], every["lesion_accuracy"]) == (4, 1.0, 1.0)
    some = evaluate_subset(predictions, np.array([0, 3, 99]), lesion)
    assert (some["images"], some["image_auc"]) == (2, 1.0), f"rows 0 and 3 only: {some}"
    one_class = evaluate_subset(predictions, np.array([0, 1]), lesion)
    assert np.isnan(one_class["image_auc"]), "benign images only: AUC undefined (nan)"


def test_format_table_puts_arms_in_rows_and_test_sets_in_columns():
    cell = {"lesion_auc": 0.5, "lesion_accuracy": 0.625}
    table = format_table({"Train40dB": {"Test40dB": cell, "Test60dB": cell},
                          "TrainALL": {"Test60dB": cell}}, "lesion")
    assert table.splitlines() == [
        "| lesion level: AUC / accuracy | Test40dB | Test60dB |", "|---|---|---|",
        "| Train40dB | 0.500 / 0.625 | 0.500 / 0.625 |", "| TrainALL |  | 0.500 / 0.625 |"]


def test_main_refuses_an_unknown_setting(tmp_path, capsys):
    assert main(["augmentation", "--out", str(tmp_path), "--set", "colour=red"]) == 2
    assert "'colour' is not a training setting --set may change" in capsys.readouterr().err


@pytest.fixture(scope="module")
def phantoms_8_8(tmp_path_factory):
    from augengine.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("exp")
    simulate_dataset(8, 8, out / "phantoms", seed=4)
    return out


@pytest.mark.slow
def test_dynamic_range_experiment_end_to_end(ray_session, phantoms_8_8, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = phantoms_8_8 / "dr"
    out.mkdir()
    (out / "phantoms").symlink_to(phantoms_8_8 / "phantoms")
    results = dynamic_range_experiment(out, 8, 8, seed=4, loader="torch", settings=TINY)
    assert list(results) == ["Train40dB", "Train50dB", "Train60dB", "TrainALL"]
    for arm, row in results.items():
        assert list(row) == ["Test40dB", "Test50dB", "Test60dB"], f"{arm}: columns {list(row)}"
        for test, cell in row.items():
            # 2 test lesions x 2 scans x 3 margins at one dynamic range; both classes present
            assert (cell["lesions"], cell["images"]) == (2, 12), f"{arm}/{test}: {cell}"
            assert 0 <= cell["image_auc"] <= 1 and 0 <= cell["lesion_auc"] <= 1, \
                f"{arm}/{test}: AUC must be defined with both classes in the test set"
    trained = json.loads((out / "Train40dB" / "metrics.json").read_text())["splits"]
    assert trained["train"]["used"] == 4 * 2 * 3, "Train40dB: 4 lesions x 2 scans x 3 margins"
    everything = json.loads((out / "TrainALL" / "metrics.json").read_text())["splits"]
    assert everything["train"]["used"] == 4 * 2 * 9
    table = (out / "table.md").read_text()
    assert table.count("| TrainALL |") == 2, "one lesion-level and one image-level table"


@pytest.mark.slow
def test_augmentation_experiment_end_to_end(ray_session, phantoms_8_8, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = phantoms_8_8 / "aug"
    out.mkdir()
    (out / "phantoms").symlink_to(phantoms_8_8 / "phantoms")
    results = augmentation_experiment(out, 8, 8, seed=4, loader="torch", settings=TINY)
    assert list(results) == ["NoAugmentation", "EngineVariants"]
    used = {arm: json.loads((out / arm / "metrics.json").read_text())["splits"]
            for arm in results}
    assert used["NoAugmentation"]["train"]["used"] == 4 * 2, "originals: 4 lesions x 2 scans"
    assert used["EngineVariants"]["train"]["used"] == 4 * 2 * 5, "originals + 4 variants each"
    for arm in results:
        assert used[arm]["test"]["used"] == 2 * 2, f"{arm}: test on 2 lesions' originals only"
        assert results[arm]["Test"]["lesions"] == 2
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == set(results), "results.json holds both arms"

