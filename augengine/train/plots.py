"""Report figures as PNG files: ROC curve, confusion matrix, learning curves, images side by
side.

Figures are drawn on ``matplotlib.figure.Figure`` objects and saved with the Agg renderer,
never through ``pyplot``: no screen is needed, no global backend is switched, and a training
process that writes figures from several threads does not share pyplot's figure registry.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from augengine.errors import InputError

_DPI = 120


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=_DPI)
    return path


def _series(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    return array


def plot_roc(path, fpr, tpr, auc: float, operating_point: Mapping | None = None) -> Path:
    """Draw a ROC curve with its AUC and, optionally, the operating point closest to (0, 1).

    Parameters
    ----------
    path : str or Path
        PNG file to write (parent folders are created).
    fpr, tpr : array_like of float, shape (M,)
        From :func:`augengine.train.metrics.roc_curve`.
    auc : float
        Shown in the title; ``nan`` is shown as "undefined".
    operating_point : mapping, optional
        With ``sensitivity`` and ``specificity`` (and optionally ``threshold``), e.g.
        ``classification_metrics(...)["operating_point"]``; marked at
        ``(1 - specificity, sensitivity)``.

    Returns
    -------
    Path
        ``path``; a 600 x 600 pixel PNG.

    Examples
    --------
    >>> import tempfile, os
    >>> from augengine.train.metrics import roc_curve
    >>> fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> plot_roc(os.path.join(tempfile.mkdtemp(), "roc.png"), fpr, tpr, 0.75).suffix
    '.png'
    """
    fpr, tpr = _series("fpr", fpr), _series("tpr", tpr)
    if fpr.shape != tpr.shape:
        raise InputError(f"fpr has {fpr.size} points but tpr has {tpr.size}")
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", label="chance")
    auc_text = "undefined (one class only)" if not np.isfinite(auc) else f"{auc:.3f}"
    axes.plot(fpr, tpr, color="C0", linewidth=2, label=f"ROC, AUC = {auc_text}")
    if operating_point is not None:
        sensitivity = float(operating_point["sensitivity"])
        specificity = float(operating_point["specificity"])
        threshold = operating_point.get("threshold")
        label = f"closest to (0, 1): sens {sensitivity:.3f}, spec {specificity:.3f}"
        if threshold is not None:
            label += f", t = {float(threshold):.3g}"
        axes.plot([1 - specificity], [sensitivity], "o", color="C3", markersize=8, label=label)
    axes.set(xlim=(0, 1), ylim=(0, 1.02), aspect="equal",
             xlabel="1 - specificity (false-positive rate)",
             ylabel="sensitivity (true-positive rate)", title="ROC curve")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(path, cm, class_names: Sequence[str]) -> Path:
    """Draw a confusion matrix: counts and row percentages (share of each true class).

    Parameters
    ----------
    path : str or Path
        PNG file to write.
    cm : array_like of int, shape (K, K)
        True class in rows, predicted class in columns (as
        :func:`augengine.train.metrics.confusion_matrix`); counts >= 0.
    class_names : sequence of str, length K
        E.g. ``("benign", "malignant")``.

    Returns
    -------
    Path
        ``path``; a PNG of 132 (3 + K) x 120 (3 + K) pixels (660 x 600 for K = 2).
    """
    matrix = np.asarray(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise InputError(f"cm must be a square (K, K) matrix, got shape {matrix.shape}")
    if matrix.dtype.kind not in "iu" or (matrix < 0).any():
        raise InputError(f"cm must hold counts (integers >= 0), got dtype {matrix.dtype}")
    if len(class_names) != matrix.shape[0]:
        raise InputError(f"class_names has {len(class_names)} names for a "
                         f"{matrix.shape[0]}-class matrix")
    k = matrix.shape[0]
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = Figure(figsize=(1.1 * (3 + k), 3 + k))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    for i in range(k):
        for j in range(k):
            axes.text(j, i, f"{matrix[i, j]}\n{100 * shares[i, j]:.1f} %", ha="center",
                      va="center", color="white" if shares[i, j] > 0.5 else "black")
    axes.set(xticks=range(k), yticks=range(k), xlabel="predicted class", ylabel="true class",
             title="Confusion matrix")
    axes.set_xticklabels(class_names)
    axes.set_yticklabels(class_names)
    figure.tight_layout()
    return _save(figure, path)


def plot_curves(path, history: Mapping[str, Sequence[float]]) -> Path:
    """Draw learning curves: one panel per metric, train and val per epoch.

    Parameters
    ----------
    path : str or Path
        PNG file to write.
    history : mapping of str to sequence of float
        Per-epoch values, keyed ``"train_<metric>"`` / ``"val_<metric>"``, e.g. ``train_loss``,
        ``val_loss``, ``train_accuracy``, ``val_accuracy``. Series of one metric share a panel;
        a key without either prefix (e.g. ``lr``) gets a panel of its own. Loss comes first,
        accuracy second, other metrics after in name order; ``nan`` marks a missing epoch.

    Returns
    -------
    Path
        ``path``; a PNG 4.5 inches (540 pixels) wide per panel and 420 pixels high.

    Examples
    --------
    >>> import tempfile, os
    >>> history = {"train_loss": [0.9, 0.6, 0.4], "val_loss": [1.0, 0.7, 0.6],
    ...            "train_accuracy": [0.6, 0.75, 0.85], "val_accuracy": [0.55, 0.7, 0.75]}
    >>> plot_curves(os.path.join(tempfile.mkdtemp(), "curves.png"), history).name
    'curves.png'
    """
    if not isinstance(history, Mapping) or not history:
        raise InputError("history must be a non-empty mapping of per-epoch series")
    panels: dict[str, dict[str, np.ndarray]] = {}
    for key, values in history.items():
        split, _, metric = key.partition("_") if key.startswith(("train_", "val_")) \
            else (key, "", key)
        panels.setdefault(metric, {})[split] = _series(f"history[{key!r}]", values)
    order = sorted(panels, key=lambda m: ({"loss": 0, "accuracy": 1}.get(m, 2), m))
    figure = Figure(figsize=(4.5 * len(order), 3.5))
    for index, metric in enumerate(order):
        axes = figure.add_subplot(1, len(order), index + 1)
        for split, values in panels[metric].items():
            epochs = np.arange(1, values.size + 1)
            axes.plot(epochs, values, marker="o", markersize=3, label=split)
        axes.set(xlabel="epoch", ylabel=metric, title=metric)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_image_rows(path, rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str],
                    row_titles: Sequence[str] = ()) -> Path:
    """Draw grey images side by side: one row per sample, one column per version.

    Each image fills its cell whatever its size, so a low-resolution input shows its pixels
    (nearest-neighbour display) beside the full-size versions; grey levels are shown on a fixed
    [0, 1] scale, so brightness compares across cells.

    Parameters
    ----------
    path : str or Path
        PNG file to write.
    rows : sequence of sequence of ndarray (h, w) float
        ``rows[i][j]``: sample ``i``, version ``j``, intensities in [0, 1].
    column_titles : sequence of str
        One per version (e.g. "low resolution", "bicubic", "edsr", "ground truth").
    row_titles : sequence of str, optional
        One per sample, written left of the row.

    Returns
    -------
    Path
        ``path``; 2 inches (240 pixels) per cell.

    Examples
    --------
    >>> import tempfile, os
    >>> rows = [[np.zeros((4, 4)), np.ones((8, 8))]]
    >>> plot_image_rows(os.path.join(tempfile.mkdtemp(), "x.png"), rows, ("low", "high")).name
    'x.png'
    """
    if not rows or any(len(row) != len(column_titles) for row in rows):
        raise InputError(f"rows must be non-empty, each with {len(column_titles)} images (one per "
                         "column title)")
    figure = Figure(figsize=(2.0 * len(column_titles), 2.0 * len(rows)))
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            axes = figure.add_subplot(len(rows), len(column_titles), i * len(column_titles) + j + 1)
            axes.imshow(np.asarray(image), cmap="gray", vmin=0.0, vmax=1.0,
                        interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if i == 0:
                axes.set_title(column_titles[j], fontsize=9)
            if j == 0 and i < len(row_titles):
                axes.set_ylabel(row_titles[i], fontsize=8)
    figure.tight_layout()
    return _save(figure, path)
