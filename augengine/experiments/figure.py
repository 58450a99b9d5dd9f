"""The experiments' figure: AUC per training arm with its 95 % interval, lesion and image level.

Drawn on a ``matplotlib.figure.Figure`` and saved with the Agg renderer, never through
``pyplot`` (as :mod:`augengine.train.plots`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_auc"]


def plot_auc(path, summary: Mapping, repeats: Sequence[Mapping], title: str) -> Path:
    """One panel per level (lesion, image): a row per arm, a marker per test set at the mean
    AUC with a bar over its 95 % interval, and each repeat's AUC as a small dot.

    Parameters
    ----------
    path : str or Path
        The PNG to write.
    summary : mapping
        ``{arm: {test: {metric: {"mean", "low", "high"}}}}`` (:func:`~augengine.experiments.
        stats.summarize_cell` per cell).
    repeats : sequence of mapping
        Each with ``cells``: ``{arm: {test: {metric: value}}}``.
    title : str
    """
    arms = list(summary)
    tests = list(dict.fromkeys(test for row in summary.values() for test in row))
    figure = Figure(figsize=(10, 1.2 + 0.55 * len(arms) * max(1, len(tests) / 2)))
    axes = figure.subplots(1, 2, sharey=True)
    colours = [f"C{k}" for k in range(len(tests))]
    offsets = (np.arange(len(tests)) - (len(tests) - 1) / 2) * (0.6 / max(len(tests), 1))
    for ax, level in zip(axes, ("lesion", "image")):
        metric = f"{level}_auc"
        for t, test in enumerate(tests):
            ys, means, lows, highs = [], [], [], []
            for a, arm in enumerate(arms):
                if test not in summary[arm]:
                    continue
                cell = summary[arm][test][metric]
                ys.append(a + offsets[t])
                means.append(cell["mean"])
                lows.append(cell["mean"] - cell["low"])
                highs.append(cell["high"] - cell["mean"])
                dots = [r["cells"][arm][test][metric] for r in repeats]
                ax.plot(dots, [a + offsets[t]] * len(dots), ".", color=colours[t], alpha=0.5,
                        markersize=4)
            errors = np.abs(np.nan_to_num([lows, highs]))
            ax.errorbar(means, ys, xerr=errors, fmt="o", color=colours[t], capsize=3,
                        label=test if len(tests) > 1 else None)
        ax.set_title(f"{level} level")
        ax.set_xlabel("AUC, mean and 95 % interval")
        ax.set_xlim(min(0.4, ax.get_xlim()[0]), 1.02)
        ax.axvline(0.5, color="0.7", linewidth=0.8, linestyle="--")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(arms)), arms)
    axes[0].invert_yaxis()
    if len(tests) > 1:
        axes[1].legend(title="test set", fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path
