"""Metrics on small cases computed by hand (docs/METRICS.md gives the definitions)."""

from __future__ import annotations

import numpy as np
import pytest

from forgectl import metrics as M


def test_pixel_scores_hand_case():
    pred = np.array([[1, 1, 0], [0, 0, 0]], bool)
    gt = np.array([[1, 0, 0], [1, 0, 0]], bool)
    # TP = 1 (top-left), FP = 1, FN = 1.
    s = M.pixel_scores(pred, gt)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)
    assert s["iou"] == pytest.approx(1 / 3)


def test_pixel_scores_unbalanced_case():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 tampered pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, :] = True  # 8 flagged: TP 4, FP 4, FN 0
    s = M.pixel_scores(pred, gt)
    assert s == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "iou": 0.5})


def test_pixel_scores_accepts_uint8_masks():
    pred = np.array([[255, 0], [0, 0]], np.uint8)
    gt = np.array([[1, 0], [0, 1]], np.uint8)
    assert M.pixel_scores(pred, gt)["f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("pred_any", "gt_any", "expected"),
    [
        (False, False, 1.0),  # nothing to find, nothing flagged: perfect agreement
        (False, True, 0.0),  # missed everything
        (True, False, 0.0),  # flagged pixels of an image with no manipulation
    ],
)
def test_empty_mask_conventions(pred_any, gt_any, expected):
    pred = np.zeros((3, 3), bool)
    gt = np.zeros((3, 3), bool)
    pred[1, 1] = pred_any
    gt[0, 0] = gt_any
    s = M.pixel_scores(pred, gt)
    assert s == {"f1": expected, "iou": expected, "precision": expected, "recall": expected}


def test_pixel_scores_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        M.pixel_scores(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="must be"):
        M.pixel_scores(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)))


def test_pixel_auc_hand_cases():
    # positives 0.35, 0.8; negatives 0.1, 0.4: 3 of 4 pairs ordered correctly.
    hm = np.array([[0.1, 0.4], [0.35, 0.8]])
    gt = np.array([[0, 0], [1, 1]])
    assert M.pixel_auc(hm, gt) == pytest.approx(0.75)
    # ties count one half: positives 0.5, 0.9; negatives 0.5, 0.5 -> (0.5 + 0.5 + 1 + 1) / 4.
    hm = np.array([[0.5, 0.5], [0.5, 0.9]])
    gt = np.array([[0, 1], [0, 1]])
    assert M.pixel_auc(hm, gt) == pytest.approx(0.75)
    assert M.pixel_auc(np.ones((2, 2)), np.array([[0, 0], [1, 1]])) == pytest.approx(0.5)


def test_pixel_auc_undefined_for_one_class():
    assert M.pixel_auc(np.random.rand(4, 4), np.zeros((4, 4))) is None
    assert M.pixel_auc(np.random.rand(4, 4), np.ones((4, 4))) is None


def test_pixel_auc_matches_sklearn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    gt = rng.random((20, 30)) < 0.3
    hm = np.round(rng.random((20, 30)) + 0.3 * gt, 2)  # rounded: many ties
    assert M.pixel_auc(hm, gt) == pytest.approx(roc_auc_score(gt.ravel(), hm.ravel()))


def test_image_auc_and_balanced_accuracy_hand_case():
    scores = [0.9, 0.2, 0.6, 0.4]
    labels = [1, 0, 0, 1]
    # pairs (pos, neg): (0.9, 0.2) (0.9, 0.6) (0.4, 0.2) correct, (0.4, 0.6) wrong.
    assert M.image_auc(scores, labels) == pytest.approx(0.75)
    # at 0.5: TPR = 1/2 (0.9 yes, 0.4 no), TNR = 1/2 (0.2 no, 0.6 flagged).
    assert M.balanced_accuracy(scores, labels, 0.5) == pytest.approx(0.5)
    # at 0.3: TPR = 1, TNR = 1/2.
    assert M.balanced_accuracy(scores, labels, 0.3) == pytest.approx(0.75)
    # score == threshold counts as flagged.
    assert M.balanced_accuracy([0.5, 0.49], [1, 0], 0.5) == pytest.approx(1.0)


def test_detection_metrics_need_both_classes():
    assert M.image_auc([0.1, 0.7], [1, 1]) is None
    assert M.balanced_accuracy([0.1, 0.7], [0, 0]) is None
    with pytest.raises(ValueError):
        M.image_auc([0.1, 0.2, 0.3], [1, 0])


def test_threshold_counts_hand_case():
    hm = np.array([[0.0, 0.2], [0.5, 1.0]], np.float32)
    gt = np.array([[0, 1], [1, 1]], bool)
    thresholds = np.array([0.0, 0.2, 0.5, 0.6, 1.0], np.float32)
    counts = M.threshold_counts(hm, gt, thresholds)
    expected = [[3, 1, 0], [3, 0, 0], [2, 0, 1], [1, 0, 2], [1, 0, 2]]
    assert counts.tolist() == expected


def test_threshold_counts_agree_with_pixel_scores():
    rng = np.random.default_rng(1)
    hm = rng.random((16, 16)).astype(np.float32)
    gt = rng.random((16, 16)) < 0.4
    counts = M.threshold_counts(hm, gt)
    f1 = M.f1_from_counts(counts)
    for k in (0, 13, 50, 77, 100, 150, 190):
        t = float(M.THRESHOLDS[k])
        assert f1[k] == pytest.approx(M.pixel_scores(hm >= t, gt)["f1"])


def test_sweep_thresholds_cover_the_unit_interval_finely_at_its_ends():
    t = M.THRESHOLDS.astype(np.float64)
    assert M.THRESHOLDS.dtype == np.float32
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)
    steps = np.diff(t)
    # 0.001 apart below 0.05 and above 0.95, 0.01 apart between; the backends' 0.5 is on it.
    assert np.allclose(steps[t[:-1] < 0.0495], 0.001, atol=1e-6)
    assert np.allclose(steps[t[1:] > 0.9505], 0.001, atol=1e-6)
    assert np.allclose(steps[(t[:-1] > 0.0495) & (t[1:] < 0.9505)], 0.01, atol=1e-6)
    assert np.float32(0.5) in M.THRESHOLDS


def test_best_threshold_and_oracle_hand_case():
    # Two images, two thresholds. Image A: F1 1.0 then 0.5; image B: F1 0.0 then 1.0.
    counts = np.array(
        [
            [[1, 0, 0], [1, 2, 0]],
            [[0, 1, 1], [2, 0, 0]],
        ]
    )
    thresholds = np.array([0.3, 0.7], np.float32)
    assert M.f1_from_counts(counts).tolist() == [[1.0, 0.5], [0.0, 1.0]]
    t, f1 = M.best_threshold_f1(counts, thresholds)
    assert t == pytest.approx(0.7) and f1 == pytest.approx(0.75)  # means 0.5 and 0.75
    assert M.oracle_f1(counts) == pytest.approx(1.0)  # each image at its own best
    assert M.best_threshold_f1(np.zeros((0, 2, 3)), thresholds) is None
    assert M.oracle_f1(np.zeros((0, 2, 3))) is None


def test_best_threshold_ties_go_to_lowest():
    counts = np.array([[[1, 0, 0], [1, 0, 0]]])
    assert M.best_threshold_f1(counts, np.array([0.2, 0.4]))[0] == pytest.approx(0.2)


def test_best_threshold_bounded_hand_cases():
    t = np.array([0.1, 0.3, 0.5, 0.7])
    f1 = np.array([0.6, 0.5, 0.4, 0.2])
    fpr = np.array([0.20, 0.08, 0.04, 0.01])
    assert M.best_threshold_bounded(f1, fpr, t, 0.05) == pytest.approx(0.5)  # 0.1, 0.3 excluded
    assert M.best_threshold_bounded(f1, fpr, t, 0.10) == pytest.approx(0.3)
    assert M.best_threshold_bounded(f1, None, t, 0.05) == pytest.approx(0.1)  # no authentic
    assert M.best_threshold_bounded(f1, fpr, t, 0.001) == pytest.approx(0.7)  # none: highest
    with pytest.raises(ValueError):
        M.best_threshold_bounded(f1[:3], fpr, t)


def test_f1_from_counts_empty_convention():
    assert M.f1_from_counts(np.array([0, 0, 0])) == 1.0
    assert M.f1_from_counts(np.array([0, 3, 0])) == 0.0


def test_bootstrap_ci_hand_cases():
    assert M.bootstrap_ci(np.full(10, 0.3)) == pytest.approx((0.3, 0.3))
    # Two values: a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles are 0 and 1.
    assert M.bootstrap_ci(np.array([0.0, 1.0]), n_resamples=2000) == pytest.approx((0.0, 1.0))
    assert M.bootstrap_ci(np.array([0.4])) is None


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = np.random.default_rng(3).random(200)
    a = M.bootstrap_ci(values, seed=7)
    assert a == M.bootstrap_ci(values, seed=7)
    assert a[0] < values.mean() < a[1]
    # The standard error of a mean of 200 uniform values is about 0.02: a 95% CI ~ 0.08 wide.
    assert 0.04 < a[1] - a[0] < 0.12


def test_bootstrap_ci_strata_keep_both_classes():
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.7])
    labels = np.array([1, 1, 0, 0, 0], bool)
    lo, hi = M.bootstrap_ci((scores, labels), M.image_auc, strata=labels, n_resamples=300)
    assert 0.0 <= lo <= M.image_auc(scores, labels) <= hi <= 1.0


def test_mean_or_none():
    assert M.mean_or_none([None, 0.2, 0.4]) == pytest.approx(0.3)
    assert M.mean_or_none([None]) is None
