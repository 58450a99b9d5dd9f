"""A run's evaluation report: ``metrics.json`` for machines, ``report.md`` with figures for
people."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from augengine.errors import InputError
from augengine.train.plots import plot_confusion_matrix, plot_curves, plot_roc


def _jsonable(value, where: str):
    """Plain JSON types; nan and inf become ``None`` (``null``): JSON has no nan."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise InputError(f"{where}: cannot write {type(value).__name__} to JSON")


def _flatten(mapping: Mapping, prefix: str = "") -> dict[str, object]:
    """Scalar entries of a nested mapping, keyed ``outer.inner``; lists are left out."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif not isinstance(value, (list, tuple, np.ndarray)):
            flat[name] = value
    return flat


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def write_report(run_dir, metrics: Mapping, history: Mapping | None,
                 splits_summary: Mapping | None, *, roc=None,
                 class_names: Sequence[str] = ("benign", "malignant"),
                 sections: Sequence[str] = ()) -> Path:
    """Write ``metrics.json``, the figures and ``report.md`` (which embeds them) into ``run_dir``.

    Files written (figures only when their data is given):

    - ``metrics.json``: ``{"metrics": ..., "history": ..., "splits": ...}``, standard JSON;
      ``nan``/``inf`` (undefined metrics) are written as ``null``.
    - ``curves.png``: learning curves from ``history`` (:func:`~augengine.train.plots.plot_curves`).
    - ``roc.png``: from ``roc``, with ``metrics["auc"]`` and ``metrics["operating_point"]``.
    - ``confusion_matrix.png``: from ``metrics["confusion_matrix"]``.
    - ``report.md``: tables of the scalar metrics (nested keys as ``outer.inner``; undefined
      ones as "n/a") and of the splits, and the figures, linked by relative path.

    Parameters
    ----------
    run_dir : str or Path
        Output folder, created if missing; existing files of these names are replaced.
    metrics : mapping
        E.g. :func:`augengine.train.metrics.classification_metrics`, plus anything JSON-able.
    history : mapping of str to sequence of float, or None
        Per-epoch series (``train_loss``, ``val_loss``, ``train_accuracy``, ...).
    splits_summary : mapping or None
        ``{split: {"sources": n, "samples": n, "samples_per_label": {...}}}`` as from
        :func:`augengine.train.splits.summarize_splits`.
    roc : (fpr, tpr) or (fpr, tpr, thresholds), optional
        From :func:`augengine.train.metrics.roc_curve`.
    class_names : sequence of str
        Row/column names of the confusion matrix.
    sections : sequence of str
        Markdown lines appended to ``report.md`` (a task's own figures, already written).

    Returns
    -------
    Path
        The ``report.md`` written.

    Raises
    ------
    InputError
        A value that cannot be written to JSON (the message names its key), or bad plot data.

    Examples
    --------
    >>> import tempfile
    >>> from augengine.train.metrics import classification_metrics, roc_curve
    >>> y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    >>> report = write_report(tempfile.mkdtemp(), classification_metrics(y, s),
    ...                       {"train_loss": [0.7, 0.5], "val_loss": [0.8, 0.6]}, None,
    ...                       roc=roc_curve(y, s))
    >>> sorted(p.name for p in report.parent.iterdir())
    ['confusion_matrix.png', 'curves.png', 'metrics.json', 'report.md', 'roc.png']
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    document = {"metrics": _jsonable(metrics, "metrics"),
                "history": _jsonable(history or {}, "history"),
                "splits": _jsonable(splits_summary or {}, "splits_summary")}
    (run_dir / "metrics.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")

    lines = ["# Evaluation report", "", "## Metrics", ""]
    lines += _table(("metric", "value"), list(_flatten(document["metrics"]).items()))
    lines += ["", "Full values, including lists, are in [metrics.json](metrics.json); n/a marks a "
              "metric that is undefined for this data (e.g. AUC with one class only)."]
    if splits_summary:
        flat = {name: _flatten(counts) for name, counts in document["splits"].items()}
        columns = list(dict.fromkeys(key for counts in flat.values() for key in counts))
        lines += ["", "## Data splits (by source: no source or group in two splits)", ""]
        lines += _table(("split", *columns),
                        [(name, *(counts.get(key, 0) for key in columns))
                         for name, counts in flat.items()])
    if roc is not None:
        auc = metrics.get("auc")
        plot_roc(run_dir / "roc.png", roc[0], roc[1], float("nan") if auc is None else float(auc),
                 metrics.get("operating_point"))
        lines += ["", "## ROC curve", "", "![ROC curve](roc.png)"]
    if "confusion_matrix" in metrics:
        plot_confusion_matrix(run_dir / "confusion_matrix.png", metrics["confusion_matrix"],
                              class_names)
        lines += ["", "## Confusion matrix", "", "![Confusion matrix](confusion_matrix.png)"]
    if history:
        plot_curves(run_dir / "curves.png", history)
        last = [(key, values[-1]) for key, values in document["history"].items() if values]
        lines += ["", "## Learning curves", "", "![Learning curves](curves.png)", ""]
        lines += _table(("final epoch", "value"), last)
    if sections:
        lines += ["", *sections]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
