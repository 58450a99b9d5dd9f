"""Figures are real PNGs of the documented size with something drawn; reports round-trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from augengine.errors import InputError
from augengine.train.metrics import classification_metrics, roc_curve
from augengine.train.plots import plot_confusion_matrix, plot_curves, plot_roc
from augengine.train.report import write_report

Y = [0, 0, 0, 0, 1, 1, 1]
S = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.9]
HISTORY = {"train_loss": [0.9, 0.6, 0.45, 0.4], "val_loss": [1.0, 0.75, 0.7, 0.72],
           "train_accuracy": [0.55, 0.7, 0.8, 0.85], "val_accuracy": [0.5, 0.65, 0.7, 0.7]}


def _check_png(path, size):
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path.name}: format {image.format}, expected PNG"
        assert image.size == size, f"{path.name}: size {image.size}, expected {size}"
        grey = np.asarray(image.convert("L"), dtype=float)
    # A blank canvas is all white; axes, text and curves put at least 2 % of pixels below 200.
    dark = np.mean(grey < 200)
    assert dark > 0.02, f"{path.name}: only {dark:.3%} dark pixels, figure looks empty"


def test_plot_roc_png(tmp_path):
    fpr, tpr, _ = roc_curve(Y, S)
    point = classification_metrics(Y, S)["operating_point"]
    path = plot_roc(tmp_path / "nested" / "roc.png", fpr, tpr, 11 / 12, point)
    assert path == tmp_path / "nested" / "roc.png"
    _check_png(path, (600, 600))


def test_plot_roc_undefined_auc(tmp_path):
    fpr, tpr, _ = roc_curve([1, 1, 1], [0.2, 0.5, 0.8])
    _check_png(plot_roc(tmp_path / "roc.png", fpr, tpr, float("nan")), (600, 600))


@pytest.mark.parametrize("cm, names, size", [
    ([[3, 1], [1, 2]], ["benign", "malignant"], (660, 600)),
    (np.array([[5, 0, 1], [0, 4, 0], [2, 0, 0]]), ["benign", "malignant", "normal"], (792, 720)),
    ([[0, 0], [0, 0]], ["benign", "malignant"], (660, 600)),
], ids=["2-class", "3-class", "all-zero"])
def test_plot_confusion_matrix_png(tmp_path, cm, names, size):
    _check_png(plot_confusion_matrix(tmp_path / "cm.png", cm, names), size)


def test_plot_curves_png(tmp_path):
    _check_png(plot_curves(tmp_path / "curves.png", HISTORY), (1080, 420))
    with_lr = dict(HISTORY, lr=[1e-3, 1e-3, 5e-4, 5e-4])
    _check_png(plot_curves(tmp_path / "curves3.png", with_lr), (1620, 420))


@pytest.mark.parametrize("call, words", [
    (lambda p: plot_roc(p, [0, 0.5, 1], [0, 1], 0.5), "fpr has 3 points but tpr has 2"),
    (lambda p: plot_confusion_matrix(p, [[1, 2, 3]], ["a"]), "square"),
    (lambda p: plot_confusion_matrix(p, [[1, 0], [0, 1]], ["a"]), "1 names for a 2-class"),
    (lambda p: plot_confusion_matrix(p, [[1.5, 0], [0, 1]], ["a", "b"]), "counts"),
    (lambda p: plot_curves(p, {}), "non-empty mapping"),
    (lambda p: plot_curves(p, {"train_loss": []}), "history['train_loss']"),
], ids=["roc-lengths", "cm-shape", "cm-names", "cm-float", "empty-history", "empty-series"])
def test_plot_bad_input(tmp_path, call, words):
    with pytest.raises(InputError) as info:
        call(tmp_path / "x.png")
    assert words in str(info.value), str(info.value)
    assert not (tmp_path / "x.png").exists(), "no file may be written for bad input"


def test_write_report_files_and_json_round_trip(tmp_path):
    metrics = classification_metrics(Y, S)
    metrics["lcc"] = np.float32(0.5)             # NumPy scalars must come back as plain numbers
    splits = {"train": {"sources": 5, "samples": 40, "samples_per_label": {"0": 24, "1": 16}},
              "val": {"sources": 1, "samples": 8, "samples_per_label": {"0": 8}},
              "test": {"sources": 1, "samples": 6, "samples_per_label": {"1": 6}}}
    report = write_report(tmp_path / "run", metrics, HISTORY, splits, roc=roc_curve(Y, S))
    run = tmp_path / "run"
    assert report == run / "report.md"
    for name, size in (("roc.png", (600, 600)), ("confusion_matrix.png", (660, 600)),
                       ("curves.png", (1080, 420))):
        _check_png(run / name, size)
    loaded = json.loads((run / "metrics.json").read_text())
    assert loaded["metrics"]["auc"] == pytest.approx(11 / 12)
    assert loaded["metrics"]["confusion_matrix"] == [[3, 1], [1, 2]]
    assert loaded["metrics"]["operating_point"]["threshold"] == 0.4
    assert loaded["metrics"]["lcc"] == 0.5
    assert loaded["history"] == HISTORY and loaded["splits"] == splits
    text = report.read_text()
    for image in ("roc.png", "confusion_matrix.png", "curves.png"):
        assert f"]({image})" in text, f"report.md must embed {image}"
    assert "| auc | 0.9167 |" in text, "AUC 11/12 should be tabulated as 0.9167"
    assert "| operating_point.threshold | 0.4000 |" in text
    assert "| train | 5 | 40 | 24 | 16 |" in text, "train row of the splits table"
    assert "| val_loss | 0.7200 |" in text, "final-epoch val_loss"


def test_nan_metrics_serialise_as_null(tmp_path):
    metrics = classification_metrics([1, 1, 1], [0.2, 0.6, 0.9])   # one class: AUC undefined
    metrics["extra"] = [float("inf"), 1.0]
    report = write_report(tmp_path, metrics, None, None, roc=roc_curve([1, 1, 1], [0.2, 0.6, 0.9]))
    raw = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in raw and "Infinity" not in raw, "metrics.json must be standard JSON"
    loaded = json.loads(raw)
    assert loaded["metrics"]["auc"] is None, "nan AUC must be written as null"
    assert loaded["metrics"]["specificity"] is None and loaded["metrics"]["extra"] == [None, 1.0]
    assert loaded["metrics"]["operating_point"]["threshold"] is None
    assert loaded["history"] == {} and loaded["splits"] == {}
    text = report.read_text()
    assert "| auc | n/a |" in text, "undefined AUC should read n/a in report.md"
    assert not (tmp_path / "curves.png").exists(), "no history, no learning-curve figure"
    assert math.isclose(loaded["metrics"]["accuracy"], 2 / 3), "2 of 3 scores >= 0.5"


def test_write_report_unserialisable_value_names_key(tmp_path):
    with pytest.raises(InputError, match=r"metrics\['model'\]: cannot write object to JSON"):
        write_report(tmp_path, {"model": object()}, None, None)
