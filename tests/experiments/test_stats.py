"""The experiments' scoring: lesion averaging, the stratified bootstrap over test lesions, the
percentile interval and the summary over repeats, on hand-worked numbers."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from augengine.experiments import stats
from augengine.experiments.stats import (METRICS, bootstrap_lesions, evaluate_subset,
                                         percentile_interval, score_lesions, summarize_cell)


def test_docstring_examples():
    result = doctest.testmod(stats)
    assert result.attempted > 0 and result.failed == 0, \
        f"{result.failed} of {result.attempted} examples failed"


def test_scores_images_and_lesions_by_hand():
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


def test_percentile_interval_by_hand():
    assert percentile_interval(np.arange(41)) == pytest.approx((1.0, 39.0)), \
        "0..40: positions 1 and 39"
    # [1, 2, 3, 4] at 50 %: quantiles 0.25 and 0.75 -> positions 0.75 and 2.25 -> 1.75, 3.25
    assert percentile_interval([4, 1, 3, 2], level=0.5) == pytest.approx((1.75, 3.25))
    assert np.isnan(percentile_interval([np.nan, np.nan])[0]), "nothing defined: nan"


def test_bootstrap_of_one_benign_and_two_malignant_lesions_by_hand():
    # The benign lesion (0.2) is always drawn; the two malignant draws are (0.1, 0.1) -> AUC 0,
    # (0.9, 0.9) -> 1, or one of each -> 0.5, with probabilities 1/4, 1/4, 1/2.
    labels, scores = np.array([0, 1, 1]), np.array([0.2, 0.1, 0.9])
    reps = bootstrap_lesions(labels, scores, np.array(["b", "m1", "m2"]), 4000,
                             np.random.default_rng(1))
    auc = reps[:, METRICS.index("lesion_auc")]
    counts = {value: float(np.mean(auc == value)) for value in (0.0, 0.5, 1.0)}
    assert counts == pytest.approx({0.0: 0.25, 0.5: 0.5, 1.0: 0.25}, abs=0.03), counts
    assert percentile_interval(auc) == pytest.approx((0.0, 1.0)), \
        "both ends are drawn more than 2.5 % of the time"
    # One image per lesion: the image-level AUC is the lesion-level one.
    np.testing.assert_array_equal(reps[:, METRICS.index("image_auc")], auc)


def test_bootstrap_counts_a_lesion_drawn_twice_with_all_its_images():
    # Benign lesion b has images 0.1 and 0.3; malignant m1 0.2, m2 0.9. Drawing m1 twice gives a
    # lesion-level AUC of 0.5 (b's mean 0.2 ties m1's 0.2) from 2 lesions' copies, never nan.
    reps = bootstrap_lesions(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.2, 0.9]),
                             np.array(["b", "b", "m1", "m2"]), 500, np.random.default_rng(0))
    assert not np.isnan(reps).any(), "every replicate holds both classes"
    assert set(reps[:, METRICS.index("lesion_auc")].tolist()) <= {0.5, 0.75, 1.0}


def test_bootstrap_of_a_separable_set_stays_at_one_and_one_class_is_nan():
    labels = np.array([0, 0, 1, 1])
    perfect = bootstrap_lesions(labels, np.array([0.1, 0.2, 0.8, 0.9]),
                                np.array(["a", "b", "c", "d"]), 200, np.random.default_rng(0))
    assert (perfect == 1.0).all(), "every resample of a separable set ranks perfectly"
    one_class = bootstrap_lesions(np.array([1, 1]), np.array([0.3, 0.6]), np.array(["a", "b"]),
                                  5, np.random.default_rng(0))
    assert np.isnan(one_class).all(), "malignant lesions only: nothing to rank"


def test_summary_is_the_mean_of_repeats_and_the_interval_of_pooled_replicates():
    points = [dict.fromkeys(METRICS, 0.6), dict.fromkeys(METRICS, 0.8)]
    replicates = [np.tile(np.linspace(0.5, 0.7, 11)[:, None], (1, 4)),
                  np.tile(np.linspace(0.7, 0.9, 11)[:, None], (1, 4))]
    cell = summarize_cell(points, replicates)
    # Pooled: 22 values from 0.5 to 0.9; the 2.5 % quantile sits at position 0.525 between the
    # two smallest (0.5, 0.52) -> 0.5105; the 97.5 % one mirrors it -> 0.8895.
    assert cell["image_auc"] == pytest.approx({"mean": 0.7, "low": 0.5105, "high": 0.8895})
    score = score_lesions(np.array([0, 1]), np.array([0.4, 0.6]), np.array(["a", "b"]))
    assert (score["lesions"], score["images"]) == (2, 2)
