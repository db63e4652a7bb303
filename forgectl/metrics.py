"""Evaluation metrics, each defined once here and in ``docs/METRICS.md``.

Pixel metrics compare a predicted mask with a ground-truth mask of the same (H, W); both are
read as "non-zero = manipulated". Ratios whose denominator is zero follow one rule (see
:func:`pixel_scores`), so an empty mask never produces NaN and the convention is visible.

Averaging is the caller's choice, made explicit: the benchmark averages per image (each image
counts once, whatever its size), and reports the pooled figure separately, labelled as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Heatmap thresholds of the best-threshold and oracle sweeps: 0.00, 0.01, ..., 1.00, refined to
#: steps of 0.001 below 0.05 and above 0.95. The fine ends matter for networks far less sure of
#: real forgeries than of synthetic ones: omni's best threshold on casia1-dev lies near 0.01,
#: where a 0.01 grid cannot pick between 5 % and 9 % of authentic pixels flagged. float32 like
#: the heatmaps, so ``heatmap >= t`` here equals the backends' own comparison.
THRESHOLDS: np.ndarray = np.unique(np.round(np.concatenate([
    np.linspace(0.0, 1.0, 101), np.arange(1, 50) / 1000, 1.0 - np.arange(1, 50) / 1000,
]), 3)).astype(np.float32)


def _as_bool_mask(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {arr.shape}")
    return arr.astype(bool)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")


def _ratio(num: float, den: float, both_empty: bool) -> float:
    """``num / den``; a 0/0 is 1.0 when both masks are empty (perfect agreement), else 0.0."""
    if den > 0:
        return float(num) / float(den)
    return 1.0 if both_empty else 0.0


def scores_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """F1, IoU, precision and recall from pixel counts (conventions of :func:`pixel_scores`)."""
    both_empty = tp == 0 and fp == 0 and fn == 0
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
    }


def pixel_scores(pred_mask: np.ndarray, gt_mask: np.ndarray) -> dict[str, float]:
    """Pixel-level F1, IoU, precision and recall of one predicted mask.

    Args:
        pred_mask: (H, W) predicted mask, non-zero = manipulated.
        gt_mask: (H, W) ground truth, non-zero = manipulated.

    Returns:
        ``{"f1", "iou", "precision", "recall"}`` with TP, FP, FN counted over pixels:
        F1 = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), precision = TP / (TP + FP),
        recall = TP / (TP + FN). A zero denominator gives 1.0 when *both* masks are empty
        (nothing to find, nothing flagged) and 0.0 otherwise: an empty prediction on a
        tampered image scores precision 0, recall 0, F1 0.

    Raises:
        ValueError: the masks are not 2-D or differ in shape.
    """
    return scores_from_counts(*mask_counts(pred_mask, gt_mask))


def mask_counts(pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` pixel counts of a predicted (H, W) mask against the ground truth."""
    pred = _as_bool_mask(pred_mask, "pred_mask")
    gt = _as_bool_mask(gt_mask, "gt_mask")
    _check_pair(pred, gt)
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    return tp, fp, fn


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half)."""
    from scipy.stats import rankdata

    n_pos = int(np.count_nonzero(positive))
    n_neg = int(positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores, method="average")
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * float(n_neg))


def pixel_auc(heatmap: np.ndarray, gt_mask: np.ndarray) -> float | None:
    """ROC AUC of one heatmap against its mask: the probability that a random manipulated pixel
    scores higher than a random pristine one (ties count one half).

    Args:
        heatmap: (H, W) float scores. gt_mask: (H, W), non-zero = manipulated.

    Returns:
        The AUC in [0, 1], or None when the mask has only one class (all or no pixels).
    """
    hm = np.asarray(heatmap, dtype=np.float64)
    gt = _as_bool_mask(gt_mask, "gt_mask")
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {hm.shape}")
    _check_pair(hm, gt)
    return _rank_auc(hm.ravel(), gt.ravel())


def _labels(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.asarray(labels).astype(bool).ravel()


def image_auc(
    scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray
) -> float | None:
    """Image-level ROC AUC of scores, tampered (label true) against authentic (label false).

    Returns:
        The AUC, or None unless both classes are present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = _labels(labels)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    return _rank_auc(s, y)


def balanced_accuracy(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    threshold: float = 0.5,
) -> float | None:
    """Mean of the true-positive and true-negative rates, calling ``score >= threshold``
    tampered.

    Returns:
        (TPR + TNR) / 2, or None unless both classes are present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = _labels(labels)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if y.all() or not y.any():
        return None
    flagged = s >= threshold
    tpr = float(np.mean(flagged[y]))
    tnr = float(np.mean(~flagged[~y]))
    return (tpr + tnr) / 2.0


def threshold_counts(
    heatmap: np.ndarray, gt_mask: np.ndarray, thresholds: np.ndarray = THRESHOLDS
) -> np.ndarray:
    """Pixel counts of the mask ``heatmap >= t`` for every threshold ``t``.

    Args:
        heatmap: (H, W) float. gt_mask: (H, W), non-zero = manipulated. thresholds: (T,).

    Returns:
        (T, 3) int64: TP, FP, FN at each threshold.
    """
    hm = np.asarray(heatmap, dtype=np.float32)
    gt = _as_bool_mask(gt_mask, "gt_mask")
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {hm.shape}")
    _check_pair(hm, gt)
    t = np.asarray(thresholds, dtype=np.float32)
    pos = np.sort(hm[gt])
    neg = np.sort(hm[~gt])
    # Values >= t are those from the left insertion point of t onwards.
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    fn = pos.size - tp
    return np.stack([tp, fp, fn], axis=1).astype(np.int64)


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """F1 for (..., 3) TP/FP/FN counts, with the empty-mask convention of :func:`pixel_scores`."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)


def best_threshold_f1(
    counts: np.ndarray, thresholds: np.ndarray = THRESHOLDS
) -> tuple[float, float] | None:
    """The one threshold for a whole dataset that maximizes the per-image mean F1.

    Args:
        counts: (N, T, 3) per-image TP/FP/FN from :func:`threshold_counts`.
        thresholds: (T,) the thresholds the counts were taken at.

    Returns:
        ``(threshold, mean F1 at it)``; ties go to the lowest threshold. None for N = 0.
        This threshold is chosen on the evaluation data itself: an optimistic figure.
    """
    c = np.asarray(counts)
    if c.ndim != 3 or c.shape[0] == 0:
        return None
    curve = f1_from_counts(c).mean(axis=0)
    k = int(np.argmax(curve))
    return float(np.asarray(thresholds)[k]), float(curve[k])


def best_threshold_bounded(
    f1_curve: np.ndarray,
    fpr_curve: np.ndarray | None,
    thresholds: np.ndarray = THRESHOLDS,
    max_fpr: float = 0.05,
) -> float:
    """The threshold with the best mean F1 among those whose authentic false alarms stay bounded.

    Args:
        f1_curve: (T,) mean F1 over the forgeries at each threshold.
        fpr_curve: (T,) mean flagged fraction of the authentic images at each threshold, or
            None when there are no authentic images (then the bound is not applied).
        thresholds: (T,) increasing thresholds.
        max_fpr: the bound on the authentic images' mean flagged fraction.

    Returns:
        The threshold; ties go to the lowest. When no threshold meets the bound, the highest
        (the fewest false alarms the curve offers).
    """
    f1 = np.asarray(f1_curve, dtype=float)
    t = np.asarray(thresholds, dtype=float)
    if f1.shape != t.shape:
        raise ValueError(f"f1_curve {f1.shape} and thresholds {t.shape} differ in shape")
    ok = np.ones(len(t), bool) if fpr_curve is None else np.asarray(fpr_curve) <= max_fpr
    if not ok.any():
        return float(t[-1])
    return float(t[int(np.argmax(np.where(ok, f1, -1.0)))])


def oracle_f1(counts: np.ndarray) -> float | None:
    """Per-image oracle F1: each image at its own best threshold, then the mean over images.

    Uses the ground truth to pick every threshold: an upper bound, not an achievable score.
    """
    c = np.asarray(counts)
    if c.ndim != 3 or c.shape[0] == 0:
        return None
    return float(f1_from_counts(c).max(axis=1).mean())


def bootstrap_ci(
    data: np.ndarray | Sequence[np.ndarray],
    statistic: Callable[..., float | None] = np.mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of ``statistic`` over images.

    Args:
        data: one (N,) array, or a tuple of (N,) arrays resampled with the same indices (for
            example scores and labels).
        statistic: maps the resampled array(s) to a number (or None, which is skipped).
        n_resamples: bootstrap replicates.
        confidence: coverage of the interval (0.95 -> 2.5th and 97.5th percentiles).
        seed: seed of the resampling, so a report is reproducible.
        strata: (N,) group labels; when given, each group is resampled within itself so every
            replicate keeps the group sizes (used for AUCs, which need both classes).

    Returns:
        ``(low, high)``, or None with fewer than two items or no valid replicate.
    """
    arrays = (data,) if isinstance(data, np.ndarray) else tuple(data)
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("bootstrap arrays differ in length")
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    if strata is None:
        groups = [np.arange(n)]
    else:
        s = np.asarray(strata)
        groups = [np.flatnonzero(s == g) for g in np.unique(s)]
    values = []
    for _ in range(n_resamples):
        idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
        v = statistic(*(a[idx] for a in arrays))
        if v is not None and np.isfinite(v):
            values.append(float(v))
    if not values:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def mean_or_none(values: Sequence[float | None] | np.ndarray) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


#: Equal-width probability bins of the calibration measures.
CALIBRATION_BINS = 10


def calibration_bins(
    scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray,
    bins: int = CALIBRATION_BINS,
) -> list[dict[str, float | int]]:
    """The reliability diagram's points: per equal-width score bin with images in it, the mean
    score (``confidence``), the fraction of tampered images (``observed``) and the count."""
    s = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    y = _labels(labels)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    idx = np.clip(np.floor(s * bins).astype(int), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            out.append({"low": b / bins, "high": (b + 1) / bins,
                        "confidence": float(s[sel].mean()), "observed": float(y[sel].mean()),
                        "n": int(sel.sum())})
    return out


def expected_calibration_error(
    scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray,
    bins: int = CALIBRATION_BINS,
) -> float | None:
    """ECE of image scores read as probabilities of "tampered": the count-weighted mean of
    |observed fraction - mean score| over equal-width bins (0 = perfectly calibrated).

    Returns:
        The ECE in [0, 1], or None without scores.
    """
    points = calibration_bins(scores, labels, bins)
    n = sum(int(p["n"]) for p in points)
    if n == 0:
        return None
    return float(sum(p["n"] * abs(p["observed"] - p["confidence"]) for p in points) / n)
