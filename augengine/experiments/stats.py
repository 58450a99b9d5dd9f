"""Scoring of the experiments: seed 001's operating point and lesion averaging, a stratified
bootstrap over test lesions, and the mean and 95 % interval of a cell over repeats.

A *cell* is one (training arm, test set) pair. Each repeat (a new lesion split and training
seed) scores it once (:func:`evaluate_subset`) and resamples its test lesions
(:func:`bootstrap_lesions`); :func:`summarize_cell` reports the mean of the repeats' scores and
the 2.5/97.5 percentiles of all repeats' bootstrap replicates pooled, so the interval holds both
the spread between splits/trainings and the sampling of the test lesions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from augengine.train.metrics import roc_auc, roc_operating_point

__all__ = ["METRICS", "bootstrap_lesions", "evaluate_subset", "percentile_interval",
           "score_lesions", "summarize_cell", "cell_images"]

#: The four figures of every cell, in table order.
METRICS = ("lesion_auc", "lesion_accuracy", "image_auc", "image_accuracy")


def score_lesions(labels: np.ndarray, scores: np.ndarray, lesions: np.ndarray) -> dict:
    """AUC and operating-point accuracy per image and per lesion.

    Parameters
    ----------
    labels : ndarray (n_images,) of {0, 1}
    scores : ndarray (n_images,) of float
        Malignancy probability of each test image.
    lesions : ndarray (n_images,)
        Lesion (source id) of each image; a lesion's score is the mean of its images' scores
        (seed 001's lesion-level averaging).

    Returns
    -------
    dict
        ``images``, ``lesions`` (counts) and :data:`METRICS`; accuracies at the ROC point closest
        to (0, 1) (seed 001); ``nan`` where one class is missing.

    Examples
    --------
    >>> result = score_lesions(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.2, 0.9]),
    ...                        np.array(["a", "a", "b", "b"]))
    >>> result["image_auc"], result["lesion_auc"], result["lesions"]
    (0.75, 1.0, 2)
    """
    names, first, inverse = np.unique(lesions, return_index=True, return_inverse=True)
    lesion_scores = np.bincount(inverse, weights=scores) / np.bincount(inverse)
    lesion_labels = labels[first]
    return {"images": int(labels.size), "lesions": int(names.size),
            "lesion_auc": roc_auc(lesion_labels, lesion_scores),
            "lesion_accuracy": roc_operating_point(lesion_labels, lesion_scores)["accuracy"],
            "image_auc": roc_auc(labels, scores),
            "image_accuracy": roc_operating_point(labels, scores)["accuracy"]}


def cell_images(predictions: Mapping[str, np.ndarray], rows: np.ndarray,
                source_of: Mapping[int, str]):
    """Labels, scores and lesions of the test predictions whose store index is in ``rows``."""
    keep = np.isin(predictions["index"], rows)
    lesions = np.array([source_of[int(i)] for i in predictions["index"][keep]], dtype=object)
    return np.asarray(predictions["label"])[keep], np.asarray(predictions["score"])[keep], lesions


def evaluate_subset(predictions: Mapping[str, np.ndarray], rows: np.ndarray,
                    source_of: Mapping[int, str]) -> dict:
    """:func:`score_lesions` of a classifier's test predictions on the store ``rows``.

    Parameters
    ----------
    predictions : mapping
        ``index``, ``label``, ``score`` per test image (``TrainResult.predictions``).
    rows : ndarray of int
        The store indices to score (e.g. the rows reconstructed at 40 dB).
    source_of : mapping int -> str
        Lesion (source id) of each store index.

    Examples
    --------
    >>> predictions = {"index": np.array([0, 1, 2, 3]), "label": np.array([0, 0, 1, 1]),
    ...                "score": np.array([0.1, 0.3, 0.2, 0.9])}
    >>> result = evaluate_subset(predictions, np.array([0, 1, 2, 3]),
    ...                          {0: "a", 1: "a", 2: "b", 3: "b"})
    >>> result["image_auc"], result["lesion_auc"], result["lesions"]
    (0.75, 1.0, 2)
    """
    return score_lesions(*cell_images(predictions, rows, source_of))


def bootstrap_lesions(labels: np.ndarray, scores: np.ndarray, lesions: np.ndarray,
                      n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of :data:`METRICS` over test lesions drawn with replacement, per class.

    Each replicate draws as many benign lesions as the test set holds from its benign lesions,
    and as many malignant ones from its malignant lesions (a stratified bootstrap, as pROC's
    default for AUC: every replicate keeps both classes, so its AUC is defined), then scores the
    drawn lesions with all their images (a lesion drawn twice counts twice) by
    :func:`score_lesions`.

    Parameters
    ----------
    labels, scores, lesions : ndarray (n_images,)
        As :func:`score_lesions`.
    n_resamples : int
        Replicates (e.g. 1000).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray (n_resamples, 4) float
        Columns in :data:`METRICS` order; all ``nan`` when the test set holds one class only.

    Examples
    --------
    One benign lesion (score 0.2) and two malignant ones (0.1 and 0.9): a replicate draws the
    malignant pair (0.1, 0.1) -> AUC 0, (0.9, 0.9) -> 1, or one of each -> 0.5.

    >>> reps = bootstrap_lesions(np.array([0, 1, 1]), np.array([0.2, 0.1, 0.9]),
    ...                          np.array(["b", "m1", "m2"]), 8, np.random.default_rng(0))
    >>> sorted(set(reps[:, 0].tolist())) <= [0.0, 0.5, 1.0]
    True
    """
    names, first, inverse = np.unique(lesions, return_index=True, return_inverse=True)
    lesion_labels = labels[first]
    images_of = [np.flatnonzero(inverse == k) for k in range(names.size)]
    classes = [np.flatnonzero(lesion_labels == c) for c in (0, 1)]
    out = np.full((n_resamples, len(METRICS)), np.nan)
    if any(members.size == 0 for members in classes):
        return out
    for r in range(n_resamples):
        drawn = np.concatenate([rng.choice(members, members.size) for members in classes])
        rows = np.concatenate([images_of[k] for k in drawn])
        # Each draw is a new lesion, even when the same one is drawn twice.
        copies = np.repeat(np.arange(drawn.size), [images_of[k].size for k in drawn])
        result = score_lesions(labels[rows], scores[rows], copies)
        out[r] = [result[name] for name in METRICS]
    return out


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``values``: their ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles (linear interpolation, ``nan`` ignored).

    Examples
    --------
    Values 0..40: the 2.5 % quantile sits at position 0.025 x 40 = 1, the 97.5 % one at 39.

    >>> [round(end, 9) for end in percentile_interval(np.arange(41))]
    [1.0, 39.0]
    >>> percentile_interval([0.5, np.nan, 0.5])
    (0.5, 0.5)
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def summarize_cell(points: Sequence[Mapping], replicates: Sequence[np.ndarray],
                   level: float = 0.95) -> dict:
    """Mean over repeats and pooled-bootstrap interval of each metric of one cell.

    Parameters
    ----------
    points : sequence of dict
        :func:`score_lesions` of each repeat.
    replicates : sequence of ndarray (n_resamples, 4)
        :func:`bootstrap_lesions` of each repeat.

    Returns
    -------
    dict
        ``{metric: {"mean", "low", "high"}}`` for each of :data:`METRICS` (``nan`` mean where
        every repeat's value is undefined).

    Examples
    --------
    >>> reps = [np.full((4, 4), 0.5), np.full((4, 4), 1.0)]
    >>> cell = summarize_cell([dict.fromkeys(METRICS, 0.5), dict.fromkeys(METRICS, 1.0)], reps)
    >>> cell["lesion_auc"]
    {'mean': 0.75, 'low': 0.5, 'high': 1.0}
    """
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in replicates])
    out = {}
    for column, name in enumerate(METRICS):
        values = np.array([p[name] for p in points], dtype=np.float64)
        mean = float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() \
            else float("nan")
        low, high = percentile_interval(pooled[:, column], level)
        out[name] = {"mean": mean, "low": low, "high": high}
    return out
