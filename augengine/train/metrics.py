"""Evaluation metrics: binary classification (ROC, AUC, operating point), segmentation (Dice,
IoU), quality-score regression (MSE, Pearson LCC) and image fidelity (PSNR, SSIM).

NumPy only: inputs are anything ``numpy.asarray`` accepts (lists, NumPy arrays, CPU torch
tensors); copy GPU arrays to the host first. Every function returns plain Python floats or NumPy
arrays, and undefined values (a ratio with a zero denominator) come back as ``nan``, never as an
exception, so one degenerate validation batch cannot crash a training job.

Conventions follow scikit-learn: the positive class is label 1 (malignant, see
``augengine.sources._sample.LABELS``); a sample is called positive when ``score >= threshold``;
confusion matrices have true classes in rows and predicted classes in columns.
"""
from __future__ import annotations

import numpy as np

from augengine.checks import check_int, check_number
from augengine.errors import ConfigError, InputError


def _vector(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InputError(f"{name} must be 1-D (one value per sample), got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{name} is empty")
    return array


def _class_labels(name: str, values, num_classes: int) -> np.ndarray:
    labels = _vector(name, values)
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if labels.dtype.kind not in "iuf":
        raise InputError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    bad = ~np.isin(labels, np.arange(num_classes))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}[{index}] = {labels[index].item()!r}: class labels must be "
                         f"integers in [0, {num_classes - 1}]")
    return labels.astype(np.int64)


def _scores(name: str, values) -> np.ndarray:
    scores = _vector(name, values)
    if scores.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}[{index}] = {scores[index]}: scores must be finite")
    return scores


def _same_length(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InputError(f"{name_a} has {a.shape[0]} samples but {name_b} has {b.shape[0]}")


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def confusion_matrix(y_true, y_pred, num_classes: int = 2) -> np.ndarray:
    """Count samples per (true class, predicted class).

    ``C[i, j]`` is the number of samples of true class ``i`` predicted as class ``j``; for two
    classes ``C = [[TN, FP], [FN, TP]]``, as in scikit-learn.

    Parameters
    ----------
    y_true, y_pred : array_like of int or bool, shape (N,)
        Class labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes ``K`` (rows and columns of the result), >= 1.

    Returns
    -------
    ndarray of int64, shape (K, K)

    Raises
    ------
    ConfigError
        ``num_classes`` < 1.
    InputError
        Labels outside ``[0, K)``, not 1-D, or of different lengths.

    Examples
    --------
    >>> confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]).tolist()
    [[1, 1], [1, 2]]
    """
    check_int(num_classes, "num_classes", 1)
    truth = _class_labels("y_true", y_true, num_classes)
    predicted = _class_labels("y_pred", y_pred, num_classes)
    _same_length("y_true", truth, "y_pred", predicted)
    counts = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic: one point per distinct score.

    For each threshold ``t`` taken, in decreasing order, from the distinct values of ``y_score``,
    samples with ``score >= t`` are called positive and

        TPR(t) = TP(t) / P,    FPR(t) = FP(t) / N,

    with ``P``/``N`` the numbers of positive/negative samples. Tied scores form one point, so the
    curve moves diagonally across a tie, exactly as scikit-learn's
    ``roc_curve(..., drop_intermediate=False)``; a first point ``(0, 0)`` at ``t = +inf`` is
    prepended. Collinear points are kept.

    Parameters
    ----------
    y_true : array_like of {0, 1} or bool, shape (N,)
        1 = positive (malignant).
    y_score : array_like of float, shape (N,)
        Any monotone score of the positive class (probability, logit); finite.

    Returns
    -------
    fpr, tpr : ndarray of float64, shape (M + 1,)
        False- and true-positive rates, non-decreasing, for the ``M`` distinct scores. ``fpr`` is
        all ``nan`` when there are no negatives, ``tpr`` all ``nan`` when there are no positives
        (the rate is undefined; scikit-learn does the same with a warning).
    thresholds : ndarray of float64, shape (M + 1,)
        Decreasing; ``thresholds[0] = inf``.

    Examples
    --------
    >>> fpr, tpr, thresholds = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    >>> thresholds.tolist()
    [inf, 0.8, 0.4, 0.35, 0.1]
    """
    truth = _class_labels("y_true", y_true, 2)
    scores = _scores("y_score", y_score)
    _same_length("y_true", truth, "y_score", scores)
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    # The last index of each run of equal scores: all tied samples cross the threshold together.
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_positives = np.r_[0, np.cumsum(truth)[last]]
    false_positives = np.r_[0, last + 1] - true_positives
    positives, negatives = true_positives[-1], false_positives[-1]
    nan = np.full(true_positives.shape, np.nan)
    fpr = false_positives / negatives if negatives else nan
    tpr = true_positives / positives if positives else nan.copy()
    return fpr, tpr, np.r_[np.inf, scores[last]]


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve by the trapezoid rule.

        AUC = sum_k (FPR_k+1 - FPR_k) * (TPR_k+1 + TPR_k) / 2

    over the points of :func:`roc_curve`. This equals the Mann-Whitney statistic
    ``P(score_pos > score_neg) + P(score_pos == score_neg) / 2`` over all (positive, negative)
    pairs, i.e. ties count one half. Used as the main figure of merit by Byra et al. (OASBUD
    reconstruction study, 0.857 for InceptionV3 features trained on all dynamic ranges).

    Parameters
    ----------
    y_true : array_like of {0, 1} or bool, shape (N,)
    y_score : array_like of float, shape (N,)

    Returns
    -------
    float
        In [0, 1]; ``nan`` when ``y_true`` holds one class only (no pair to rank).

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([1, 1, 1], [0.2, 0.5, 0.9])
    nan
    """
    fpr, tpr, _ = roc_curve(y_true, y_score)
    if np.isnan(fpr[0]) or np.isnan(tpr[0]):
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_operating_point(y_true, y_score) -> dict[str, float]:
    """The ROC point closest to the ideal corner (FPR, TPR) = (0, 1).

    Minimises ``d(t) = sqrt(FPR(t)^2 + (1 - TPR(t))^2)`` over the thresholds of
    :func:`roc_curve` that are actual scores (the ``+inf`` point is left out: it calls nothing
    positive). Byra et al. report sensitivity, specificity and accuracy at this point. Ties go to
    the highest threshold, i.e. the more specific point.

    Parameters
    ----------
    y_true : array_like of {0, 1} or bool, shape (N,)
    y_score : array_like of float, shape (N,)

    Returns
    -------
    dict
        ``threshold`` (call positive when ``score >= threshold``), ``sensitivity`` (TPR),
        ``specificity`` (1 - FPR), ``accuracy`` ((TP + TN) / N) and ``distance`` (``d``), all
        floats; all ``nan`` when ``y_true`` holds one class only.

    Examples
    --------
    >>> point = roc_operating_point([0, 0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.9])
    >>> point["threshold"], point["sensitivity"], point["specificity"], point["distance"]
    (0.4, 1.0, 0.75, 0.25)
    >>> round(point["accuracy"], 4)  # 6 of 7
    0.8571
    """
    fpr, tpr, thresholds = roc_curve(y_true, y_score)
    if np.isnan(fpr[0]) or np.isnan(tpr[0]):
        return dict.fromkeys(("threshold", "sensitivity", "specificity", "accuracy", "distance"),
                             float("nan"))
    distance = np.hypot(fpr[1:], 1.0 - tpr[1:])
    best = int(np.argmin(distance)) + 1  # argmin keeps the first, i.e. highest, threshold
    truth = np.asarray(y_true)
    positives = int(np.count_nonzero(truth))
    negatives = truth.size - positives
    correct = tpr[best] * positives + (1.0 - fpr[best]) * negatives
    return {
        "threshold": float(thresholds[best]),
        "sensitivity": float(tpr[best]),
        "specificity": float(1.0 - fpr[best]),
        "accuracy": float(correct / truth.size),
        "distance": float(distance[best - 1]),
    }


def classification_metrics(y_true, y_score, threshold: float = 0.5) -> dict:
    """Binary classification metrics at a fixed threshold, plus AUC and the ROC operating point.

    With ``TP, FP, TN, FN`` counted at ``score >= threshold`` (Nayak et al., Panigrahi et al.):

        accuracy    = (TP + TN) / N
        precision   = TP / (TP + FP)
        recall      = sensitivity = TP / (TP + FN)
        specificity = TN / (TN + FP)
        F1          = 2 TP / (2 TP + FP + FN)   (the harmonic mean of precision and recall)

    A ratio whose denominator is zero is ``nan`` (scikit-learn returns 0 with a warning), e.g.
    precision when nothing is called positive, specificity when there are no negatives.

    Parameters
    ----------
    y_true : array_like of {0, 1} or bool, shape (N,)
        1 = positive (malignant).
    y_score : array_like of float, shape (N,)
        Score of the positive class, e.g. the softmax probability of label 1.
    threshold : float
        Decision threshold on ``y_score``, finite.

    Returns
    -------
    dict
        JSON-ready: ``n_samples``, ``n_positive``, ``n_negative`` (int); ``threshold``,
        ``accuracy``, ``precision``, ``recall``, ``sensitivity``, ``specificity``, ``f1``,
        ``auc`` (float, see :func:`roc_auc`); ``confusion_matrix`` ``[[TN, FP], [FN, TP]]``
        (nested lists of int); ``operating_point`` (dict, see :func:`roc_operating_point`).

    Raises
    ------
    ConfigError
        Non-finite ``threshold``.
    InputError
        Labels other than 0/1, non-finite scores, or mismatched lengths.

    Examples
    --------
    >>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> m["accuracy"], m["precision"], m["recall"], m["specificity"], round(m["f1"], 4), m["auc"]
    (0.75, 1.0, 0.5, 1.0, 0.6667, 0.75)
    """
    threshold = check_number(threshold, "threshold")
    scores = _scores("y_score", y_score)
    matrix = confusion_matrix(y_true, (scores >= threshold).astype(np.int64))
    (tn, fp), (fn, tp) = matrix.tolist()
    n = tn + fp + fn + tp
    recall = _ratio(tp, tp + fn)
    return {
        "n_samples": n,
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "sensitivity": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(y_true, scores),
        "confusion_matrix": matrix.tolist(),
        "operating_point": roc_operating_point(y_true, scores),
    }


def _mask_counts(pred_mask, true_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masks = {}
    for name, values in (("pred_mask", pred_mask), ("true_mask", true_mask)):
        mask = np.asarray(values)
        if mask.ndim == 2:
            mask = mask[np.newaxis]
        if mask.ndim != 3 or mask.size == 0:
            raise InputError(f"{name} must be (H, W) or (N, H, W) and non-empty, "
                             f"got shape {mask.shape}")
        if mask.dtype != bool:
            bad = ~np.isin(mask, (0, 1))
            if bad.any():
                sample = int(np.argwhere(bad)[0, 0])
                raise InputError(f"{name} sample {sample}: values must be boolean or 0/1, found "
                                 f"{mask[bad][0].item()!r} (threshold probabilities first)")
            mask = mask.astype(bool)
        masks[name] = mask
    pred, true = masks["pred_mask"], masks["true_mask"]
    if pred.shape != true.shape:
        raise InputError(f"pred_mask shape {pred.shape} != true_mask shape {true.shape}")
    intersection = np.count_nonzero(pred & true, axis=(1, 2))
    return intersection, np.count_nonzero(pred, axis=(1, 2)), np.count_nonzero(true, axis=(1, 2))


def dice(pred_mask, true_mask) -> tuple[np.ndarray, float]:
    """Dice similarity coefficient per sample and its mean.

        Dice(A, B) = 2 |A ∩ B| / (|A| + |B|)

    (the F1 score of the pixels; Boudhane et al. segment lesion ROIs and report mean Dice).
    Two empty masks agree perfectly: Dice = 1.0 by convention, so a correctly empty prediction on
    a lesion-free ("normal") image is not counted as a failure.

    Parameters
    ----------
    pred_mask, true_mask : array_like of bool or {0, 1}, shape (H, W) or (N, H, W)
        Predicted and reference masks; a 2-D input is one sample.

    Returns
    -------
    per_sample : ndarray of float64, shape (N,)
        Dice of each sample, in [0, 1].
    mean : float
        Mean over the N samples.

    Examples
    --------
    >>> per_sample, mean = dice([[1, 1], [0, 0]], [[1, 0], [0, 0]])
    >>> per_sample.round(4).tolist(), round(mean, 4)
    ([0.6667], 0.6667)
    """
    intersection, size_pred, size_true = _mask_counts(pred_mask, true_mask)
    total = size_pred + size_true
    per_sample = np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))
    return per_sample, float(per_sample.mean())


def iou(pred_mask, true_mask) -> tuple[np.ndarray, float]:
    """Intersection over union (Jaccard index) per sample and its mean.

        IoU(A, B) = |A ∩ B| / |A ∪ B| = Dice / (2 - Dice)

    (Boudhane et al. report mean IoU 0.862 for UNet ROI segmentation). Two empty masks give
    IoU = 1.0 by convention, as in :func:`dice`.

    Parameters
    ----------
    pred_mask, true_mask : array_like of bool or {0, 1}, shape (H, W) or (N, H, W)
        Predicted and reference masks; a 2-D input is one sample.

    Returns
    -------
    per_sample : ndarray of float64, shape (N,)
        IoU of each sample, in [0, 1].
    mean : float
        Mean over the N samples.

    Examples
    --------
    >>> per_sample, mean = iou([[1, 1], [0, 0]], [[1, 0], [0, 0]])
    >>> per_sample.tolist(), mean
    ([0.5], 0.5)
    """
    intersection, size_pred, size_true = _mask_counts(pred_mask, true_mask)
    union = size_pred + size_true - intersection
    per_sample = np.where(union == 0, 1.0, intersection / np.maximum(union, 1))
    return per_sample, float(per_sample.mean())


def _regression_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    truth = _scores("y_true", y_true)
    predicted = _scores("y_pred", y_pred)
    _same_length("y_true", truth, "y_pred", predicted)
    return truth, predicted


def mse(y_true, y_pred) -> float:
    """Mean squared error of predicted scores.

        MSE = (1 / n) sum_i (y_i - ŷ_i)^2

    (Eq. 4 of the ultrasound image-quality study, whose pseudo-labels are 100 original, 60 JPEG,
    30 Gaussian blur; it reports MSE 717.28).

    Parameters
    ----------
    y_true, y_pred : array_like of float, shape (n,)
        Reference and predicted scores, finite, same units.

    Returns
    -------
    float
        In squared score units (e.g. quality points squared), >= 0.

    Examples
    --------
    >>> mse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    1.3333333333333333
    """
    truth, predicted = _regression_pair(y_true, y_pred)
    return float(np.mean((truth - predicted) ** 2))


def pearson_lcc(y_true, y_pred) -> float:
    """Pearson linear correlation coefficient (LCC) between reference and predicted scores.

        r = sum_i (x_i - x̄)(y_i - ȳ) / sqrt( sum_i (x_i - x̄)^2 · sum_i (y_i - ȳ)^2 )

    (the image-quality study reports LCC 0.9458).

    Parameters
    ----------
    y_true, y_pred : array_like of float, shape (n,), n >= 2
        Reference and predicted scores, finite.

    Returns
    -------
    float
        In [-1, 1]; ``nan`` when either input is constant (zero variance: r is undefined).

    Examples
    --------
    >>> pearson_lcc([1, 2, 3, 4], [1, 3, 2, 4])
    0.8
    >>> pearson_lcc([1, 2, 3], [5, 5, 5])
    nan
    """
    truth, predicted = _regression_pair(y_true, y_pred)
    if truth.size < 2:
        raise InputError(f"pearson_lcc needs at least 2 samples, got {truth.size}")
    # ptp, not the centred sum, detects a constant: the mean of equal floats can be off by an ulp.
    if np.ptp(truth) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    x = truth - truth.mean()
    y = predicted - predicted.mean()
    r = np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.clip(r, -1.0, 1.0))


def _image_pair(reference, test) -> tuple[np.ndarray, np.ndarray]:
    images = {}
    for name, values in (("reference", reference), ("test", test)):
        image = np.asarray(values, dtype=np.float64)
        if image.ndim == 2:
            image = image[np.newaxis]
        if image.ndim != 3 or image.size == 0 or not np.all(np.isfinite(image)):
            raise InputError(f"{name} must be finite (H, W) or (N, H, W) images, got shape "
                             f"{image.shape}")
        images[name] = image
    if images["reference"].shape != images["test"].shape:
        raise InputError(f"reference shape {images['reference'].shape} != test shape "
                         f"{images['test'].shape}")
    return images["reference"], images["test"]


def psnr(reference, test, data_range: float = 1.0) -> tuple[np.ndarray, float]:
    """Peak signal-to-noise ratio per image and its mean, in dB.

        PSNR = 10 log10(L^2 / MSE),   MSE = mean over the pixels of (x - y)^2

    with ``L = data_range`` (1 for intensities in [0, 1], 255 for 8-bit grey levels: the same
    PSNR for the same image). Seed 004 reports mean PSNR (EDSR 39.05 dB, RDN 32.68 dB).

    Parameters
    ----------
    reference, test : array_like of float, shape (H, W) or (N, H, W)
        Ground truth and estimate, same units.
    data_range : float
        ``L``, > 0.

    Returns
    -------
    per_image : ndarray of float64, shape (N,)
        dB; ``inf`` for identical images.
    mean : float
        Mean over the images (``inf`` if any is identical).

    Examples
    --------
    >>> per_image, _ = psnr([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.5]])
    >>> round(float(per_image[0]), 4)   # MSE 0.0625: 10 log10(16)
    12.0412
    """
    if not data_range > 0:
        raise ConfigError(f"data_range must be > 0, got {data_range!r}")
    x, y = _image_pair(reference, test)
    error = np.mean((x - y) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        per_image = 10 * np.log10(data_range**2 / error)
    return per_image, float(per_image.mean())


def _gaussian_window(sigma: float, radius: int) -> np.ndarray:
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable correlation of ``(N, H, W)`` with ``window``, valid part only."""
    k = window.size
    rows = sum(window[i] * images[:, i:images.shape[1] - k + 1 + i, :] for i in range(k))
    return sum(window[i] * rows[:, :, i:images.shape[2] - k + 1 + i] for i in range(k))


def ssim(reference, test, data_range: float = 1.0, *, sigma: float = 1.5,
         radius: int = 5) -> tuple[np.ndarray, float]:
    """Structural similarity (Wang et al. 2004) per image and its mean.

        SSIM(x, y) = mean over windows of
                     (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    with local means, variances and covariance weighted by an 11 x 11 Gaussian of standard
    deviation 1.5 pixels (the paper's window), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``,
    ``L = data_range``, averaged over the windows that lie wholly inside the image (no padding).
    Variances are the weighted population ones (Wang et al.; scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` averages
    over the same valid windows).

    Parameters
    ----------
    reference, test : array_like of float, shape (H, W) or (N, H, W)
        With ``H, W >= 2 radius + 1`` (11 pixels by default).
    data_range : float
        ``L``, > 0.
    sigma, radius : float, int
        The window's standard deviation and half-width, pixels.

    Returns
    -------
    per_image : ndarray of float64, shape (N,)
        In [-1, 1]; 1 for identical images.
    mean : float

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
    visibility to structural similarity", IEEE Trans. Image Process. 13(4), 600-612, 2004.

    Examples
    --------
    >>> import numpy as np
    >>> per_image, _ = ssim(np.full((11, 11), 0.5), np.full((11, 11), 0.25))
    >>> round(float(per_image[0]), 5)   # (2 (0.5)(0.25) + 1e-4) / (0.25 + 0.0625 + 1e-4)
    0.80006
    """
    if not data_range > 0:
        raise ConfigError(f"data_range must be > 0, got {data_range!r}")
    x, y = _image_pair(reference, test)
    if min(x.shape[1:]) < 2 * radius + 1:
        raise InputError(f"ssim needs images of at least {2 * radius + 1} x {2 * radius + 1} "
                         f"pixels, got {x.shape[1]} x {x.shape[2]}")
    window = _gaussian_window(sigma, radius)
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x**2
    var_y = _filter_valid(y * y, window) - mu_y**2
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / \
        ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_image = index.mean(axis=(1, 2))
    return per_image, float(per_image.mean())
