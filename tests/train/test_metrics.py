"""Metrics against hand-computed cases (numbers worked out in the comments), then scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest

from augengine.errors import ConfigError, InputError
from augengine.train.metrics import (
    classification_metrics,
    confusion_matrix,
    dice,
    iou,
    mse,
    pearson_lcc,
    roc_auc,
    roc_curve,
    roc_operating_point,
)

# Four negatives, three positives, no ties. ROC points (fpr, tpr) for t = inf, .9, .7, .6, .4,
# .3, .2, .1: (0,0) (0,1/3) (0,2/3) (1/4,2/3) (1/4,1) (1/2,1) (3/4,1) (1,1).
# AUC: positive .4 beats 3 negatives, .7 and .9 beat all 4 -> 11 of 12 pairs.
Y7 = [0, 0, 0, 0, 1, 1, 1]
S7 = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.9]


def _mann_whitney(y, s):
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_confusion_matrix_hand_counts():
    # true 0 -> predicted 0, 1; true 1 -> predicted 1, 1, 0
    cm = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert cm.tolist() == [[1, 1], [1, 2]], f"binary 5 samples: expected [[1,1],[1,2]], got {cm}"
    cm3 = confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], num_classes=3)
    assert cm3.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]], f"3-class case: got {cm3}"
    assert cm3.dtype == np.int64


def test_roc_curve_hand_points():
    fpr, tpr, thresholds = roc_curve(Y7, S7)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1],
                               err_msg="Y7/S7 fpr at t = inf,.9,.7,.6,.4,.3,.2,.1")
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1],
                               err_msg="Y7/S7 tpr at t = inf,.9,.7,.6,.4,.3,.2,.1")
    assert thresholds.tolist() == [np.inf, 0.9, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]


def test_roc_ties_form_one_diagonal_point():
    # Scores .5 tie between a negative and a positive: points (0,0) (0,.5) (.5,1) (1,1).
    # Trapezoid: .5 * (.5 + 1) / 2 + .5 * 1 = .875; Mann-Whitney: (1 + 1 + 1 + .5) / 4 = .875.
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8]
    fpr, tpr, thresholds = roc_curve(y, s)
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1], (fpr, tpr)
    assert thresholds.tolist() == [np.inf, 0.8, 0.5, 0.2]
    assert roc_auc(y, s) == pytest.approx(0.875), "tie case: expected AUC 0.875"


@pytest.mark.parametrize("y, s, expected", [
    (Y7, S7, 11 / 12),
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
    ([0, 1], [0.9, 0.1], 0.0),
    ([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3], 0.5),
    ([True, False, True], [2.0, -1.0, 0.5], 1.0),   # bool labels, logit scores
], ids=["Y7", "sklearn-doc", "inverted", "all-tied", "bool-logits"])
def test_roc_auc_hand_values(y, s, expected):
    assert roc_auc(y, s) == pytest.approx(expected), f"AUC of {y}/{s}: expected {expected}"


def test_roc_auc_equals_mann_whitney_with_ties(rng):
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding makes many ties
    assert roc_auc(y, s) == pytest.approx(_mann_whitney(y, s), abs=1e-12)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0]], ids=["positives-only", "negatives-only"])
def test_one_class_gives_nan_not_crash(y):
    s = np.linspace(0.1, 0.9, len(y))
    assert math.isnan(roc_auc(y, s)), f"AUC of one class {y}: expected nan"
    fpr, tpr, _ = roc_curve(y, s)
    assert np.isnan(fpr).all() if y[0] == 1 else np.isnan(tpr).all()
    assert all(math.isnan(v) for v in roc_operating_point(y, s).values())
    metrics = classification_metrics(y, s)
    assert math.isnan(metrics["auc"])
    undefined = "specificity" if y[0] == 1 else "recall"
    assert math.isnan(metrics[undefined]), f"{undefined} with one class: expected nan"
    assert metrics["accuracy"] == pytest.approx(np.mean((s >= 0.5) == np.asarray(y)))


def test_operating_point_closest_to_corner():
    # Distances: (0, 2/3) -> 1/3; (1/4, 1) -> 1/4 (the minimum, t = .4); others larger.
    point = roc_operating_point(Y7, S7)
    assert point["threshold"] == 0.4, f"Y7/S7: expected threshold 0.4, got {point}"
    assert point["sensitivity"] == 1.0 and point["specificity"] == 0.75, point
    assert point["accuracy"] == pytest.approx(6 / 7), "Y7/S7 at t=.4: 3 TP + 3 TN of 7"
    assert point["distance"] == pytest.approx(0.25)


def test_operating_point_tie_takes_highest_threshold():
    # (0, .5) at t = .8 and (.5, 1) at t = .35 are both .5 from (0, 1).
    point = roc_operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert point["threshold"] == 0.8, f"tie: expected the more specific t = 0.8, got {point}"


def test_classification_metrics_hand_case():
    # t = .5 calls only .6, .7, .9 positive: TP 2 (.7, .9), FP 1 (.6), FN 1 (.4), TN 3.
    m = classification_metrics(Y7, S7, threshold=0.5)
    expected = {"accuracy": 5 / 7, "precision": 2 / 3, "recall": 2 / 3, "sensitivity": 2 / 3,
                "specificity": 3 / 4, "f1": 4 / 6, "auc": 11 / 12}
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), f"Y7/S7 t=.5 {key}: expected {value}, got {m[key]}"
    assert m["confusion_matrix"] == [[3, 1], [1, 2]]
    assert (m["n_samples"], m["n_positive"], m["n_negative"]) == (7, 3, 4)
    assert m["operating_point"]["threshold"] == 0.4


def test_classification_metrics_threshold_is_inclusive():
    m = classification_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert m["confusion_matrix"] == [[0, 1], [0, 1]], "score == threshold must count positive"


def test_precision_nan_when_nothing_called_positive():
    m = classification_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert math.isnan(m["precision"]), "no predicted positive: precision expected nan"
    assert m["f1"] == 0.0, "TP 0, FN 2: F1 = 0 / 2 = 0"


def test_dice_iou_hand_masks():
    # Sample 0: |A| 2, |B| 1, overlap 1 -> Dice 2/3, IoU 1/2. Sample 1: disjoint -> 0, 0.
    # Sample 2: both empty -> 1, 1 by convention. Sample 3: identical -> 1, 1.
    pred = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 1], [1, 1]]])
    true = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]], [[0, 0], [0, 0]], [[0, 1], [1, 1]]])
    per_dice, mean_dice = dice(pred, true)
    per_iou, mean_iou = iou(pred.astype(bool), true.astype(bool))
    np.testing.assert_allclose(per_dice, [2 / 3, 0, 1, 1], err_msg="per-sample Dice")
    np.testing.assert_allclose(per_iou, [1 / 2, 0, 1, 1], err_msg="per-sample IoU")
    assert mean_dice == pytest.approx((2 / 3 + 2) / 4) and mean_iou == pytest.approx(2.5 / 4)
    np.testing.assert_allclose(per_iou, per_dice / (2 - per_dice), err_msg="IoU = D / (2 - D)")


def test_dice_single_2d_mask_is_one_sample():
    per_sample, mean = dice([[1, 1], [0, 0]], [[1, 0], [0, 0]])
    assert per_sample.shape == (1,) and mean == pytest.approx(2 / 3)


def test_mse_and_lcc_hand_values():
    assert mse([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3), "errors 0, 0, 2 -> 4/3"
    # Centred: x (-1.5, -.5, .5, 1.5), y (-1.5, .5, -.5, 1.5): sum xy 4, sum x^2 = sum y^2 = 5.
    assert pearson_lcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson_lcc([1, 2, 3], [3, 5, 7]) == pytest.approx(1.0), "y = 2x + 1"
    assert pearson_lcc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0), "y = 4 - x"


@pytest.mark.parametrize("x, y", [([0.1, 0.1, 0.1], [1, 2, 3]), ([1, 2, 3], [7, 7, 7])],
                         ids=["constant-truth", "constant-prediction"])
def test_lcc_zero_variance_is_nan(x, y):
    assert math.isnan(pearson_lcc(x, y)), f"LCC of {x} and {y}: expected nan"


@pytest.mark.parametrize("call, error, words", [
    (lambda: confusion_matrix([0, 2], [0, 1]), InputError, "y_true[1] = 2"),
    (lambda: confusion_matrix([0, 1], [0, 1, 1]), InputError, "y_true has 2 samples"),
    (lambda: confusion_matrix([0, 1], [0, 1], num_classes=0), ConfigError, "num_classes"),
    (lambda: roc_curve([0, 1], [0.2, float("nan")]), InputError, "y_score[1]"),
    (lambda: roc_auc([[0, 1]], [[0.2, 0.3]]), InputError, "1-D"),
    (lambda: roc_auc([], []), InputError, "empty"),
    (lambda: classification_metrics([0, 1], [0.2, 0.3], threshold=float("inf")), ConfigError,
     "threshold"),
    (lambda: dice(np.zeros((2, 4, 4)), np.zeros((2, 4, 5))), InputError, "!= true_mask shape"),
    (lambda: iou(np.full((2, 3, 3), 0.7), np.zeros((2, 3, 3))), InputError,
     "pred_mask sample 0"),
    (lambda: dice(np.zeros(4), np.zeros(4)), InputError, "(N, H, W)"),
    (lambda: mse([1, 2], [1, 2, 3]), InputError, "y_pred has 3"),
    (lambda: pearson_lcc([1.0], [2.0]), InputError, "at least 2 samples"),
], ids=["label-out-of-range", "length-mismatch", "num-classes", "nan-score", "2-d-labels",
        "empty", "inf-threshold", "mask-shapes", "soft-mask", "1-d-mask", "mse-lengths",
        "lcc-one-sample"])
def test_bad_input_one_line_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert words in message and "\n" not in message, f"expected one line with {words!r}: {message}"


def test_sklearn_agreement(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + 1.2 * y, 1)
    fpr, tpr, thresholds = roc_curve(y, s)
    ref_fpr, ref_tpr, ref_thresholds = metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, err_msg="fpr vs sklearn")
    np.testing.assert_allclose(tpr, ref_tpr, err_msg="tpr vs sklearn")
    np.testing.assert_allclose(thresholds[1:], ref_thresholds[1:], err_msg="thresholds")
    assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    m = classification_metrics(y, s, threshold=0.4)
    pred = (s >= 0.4).astype(int)
    assert m["confusion_matrix"] == metrics.confusion_matrix(y, pred).tolist()
    for key, ref in (("accuracy", metrics.accuracy_score), ("precision", metrics.precision_score),
                     ("recall", metrics.recall_score), ("f1", metrics.f1_score)):
        assert m[key] == pytest.approx(ref(y, pred)), f"{key} vs sklearn"
    masks_a, masks_b = rng.random((5, 8, 8)) > 0.5, rng.random((5, 8, 8)) > 0.4
    per_iou, _ = iou(masks_a, masks_b)
    expected = [metrics.jaccard_score(a.ravel(), b.ravel()) for a, b in zip(masks_a, masks_b)]
    np.testing.assert_allclose(per_iou, expected, err_msg="IoU vs sklearn jaccard_score")
    per_dice, _ = dice(masks_a, masks_b)
    expected = [metrics.f1_score(b.ravel(), a.ravel()) for a, b in zip(masks_a, masks_b)]
    np.testing.assert_allclose(per_dice, expected, err_msg="Dice vs sklearn f1_score")
    truth, pred_scores = rng.normal(size=50), rng.normal(size=50)
    assert mse(truth, pred_scores) == pytest.approx(metrics.mean_squared_error(truth, pred_scores))
    assert pearson_lcc(truth, pred_scores) == pytest.approx(np.corrcoef(truth, pred_scores)[0, 1])
