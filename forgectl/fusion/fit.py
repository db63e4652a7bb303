"""Fitting the fusion (``forgectl train --method auto``) on synthetic forgeries only.

Data: synthetic forgeries (a ``forgectl synth`` folder) are the only fitting data. A real dev
set (e.g. casia1-dev), when given, is never fitted on: it is split into two fixed halves
(:func:`forgectl.evaluation.datasets.halves`); half A chooses the two thresholds (which map
value and which verdict read 0.5), half B is the figure to quote (not used to choose), and the
whole set is reported beside it.

Steps of one fit: the verdict (boosted decision trees or logistic regression, classes balanced:
the synthetic share of forgeries is arbitrary) on image features; the per-pixel map (logistic
regression, or a perceptron with one hidden layer) on sampled pixels (half inside, half outside
the mask of a forgery), with the verdict's logit as one more input; then both thresholds, on the
fitting examples (replaced by half A's when there is a dev set).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from forgectl import metrics as M
from forgectl.fusion.collect import LabelledImage
from forgectl.fusion.features import (
    IMAGE_FEATURES,
    PIXEL_FEATURES,
    MemberOutput,
    image_features,
    pixel_features,
)
from forgectl.fusion.model import TREE_ARRAYS, FusionModel

#: Pixels sampled per fitting image (half inside the mask for forgeries).
PIXELS_PER_IMAGE = 400
#: Candidate map thresholds (on the perceptron's probability).
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)
#: The map threshold keeps the authentic images' mean flagged fraction at most this.
MAX_AUTHENTIC_PIXELS = 0.05
#: The verdict threshold flags at most this share of the authentic images (a CI gate's false
#: alarms: ``--fail-on 0.5``).
MAX_AUTHENTIC_FLAGGED = 0.10
#: ``--fail-on`` values whose stopping rates the read-out reports.
FAIL_ON_GATES = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class FitConfig:
    """Hyper-parameters of one fit (configs as data)."""

    hidden: int = 8
    alpha: float = 1e-3
    verdict: str = "logistic"
    verdict_c: float = 0.5
    verdict_trees: int = 100
    verdict_depth: int = 2
    verdict_lr: float = 0.1
    #: Copies of the fitting examples the verdict also learns from, each with one member,
    #: drawn at random, made blind (its image features those of "not applicable"). Fitted
    #: on synthetic forgeries, the verdict otherwise leans on whichever member separates them
    #: best there, which need not be the one that transfers to real photos.
    verdict_blind: int = 0
    #: Tree verdicts fitted with ``seed``, ``seed + 1``, ... (each with its own blinded
    #: copies) and averaged in logit space; the logistic verdict is fitted once. The blinding
    #: draws alone moved the half-A image AUC by 0.04 between seeds; an average of five, 0.007.
    verdict_bags: int = 1
    seed: int = 0
    max_iter: int = 300

    def __post_init__(self) -> None:
        if self.verdict not in ("logistic", "trees"):
            raise ValueError(f"fit.verdict must be 'logistic' or 'trees', not {self.verdict!r}")
        if self.verdict_blind < 0:
            raise ValueError(f"fit.verdict_blind must be >= 0, not {self.verdict_blind}")
        if self.verdict_bags < 1:
            raise ValueError(f"fit.verdict_bags must be >= 1, not {self.verdict_bags}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Prepared:
    """Features of the fitting examples, computed once."""

    examples: list[LabelledImage]
    members: list[str]
    image_x: np.ndarray        # (E, Fi)
    labels: np.ndarray         # (E,) bool
    real: np.ndarray           # (E,) bool: from the real dev set
    pixel_x: list[np.ndarray]  # per example (K, Fp - 1)
    pixel_y: list[np.ndarray]  # per example (K,) bool


def prepare(examples: list[LabelledImage], members: list[str], real_group: str | None,
            seed: int = 0) -> Prepared:
    rng = np.random.default_rng(seed)
    image_x, pixel_x, pixel_y = [], [], []
    for ex in examples:
        outs = [ex.outputs[m] for m in members]
        image_x.append(image_features(outs))
        rows, cols = _sample_pixels(ex.truth, rng)
        pixel_x.append(pixel_features(outs, rows, cols))
        pixel_y.append(ex.truth[rows, cols])
    return Prepared(
        examples=examples, members=list(members), image_x=np.stack(image_x),
        labels=np.array([ex.tampered for ex in examples]),
        real=np.array([ex.group == real_group for ex in examples]),
        pixel_x=pixel_x, pixel_y=pixel_y)


def _sample_pixels(truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = PIXELS_PER_IMAGE
    inside = np.flatnonzero(truth.ravel())
    outside = np.flatnonzero(~truth.ravel())
    if inside.size:
        take = np.concatenate([rng.choice(inside, k // 2, replace=inside.size < k // 2),
                               rng.choice(outside, k // 2, replace=outside.size < k // 2)
                               if outside.size else np.empty(0, np.int64)])
    else:
        take = rng.choice(outside, k, replace=outside.size < k)
    return np.unravel_index(take, truth.shape)


def fit_model(data: Prepared, index: np.ndarray, cfg: FitConfig) -> FusionModel:
    """Fit on the examples ``index`` (the verdict, then the map), thresholds chosen on them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    xv = data.image_x[index]
    if cfg.verdict == "trees":
        bags = []
        for bag in range(cfg.verdict_bags):
            bag_cfg = replace(cfg, seed=cfg.seed + bag)
            xk, yk = with_blinded_copies(xv, data.labels[index], len(data.members),
                                         cfg.verdict_blind, bag_cfg.seed)
            bag_arrays, bag_logit = _fit_tree_verdict(xk, yk, bag_cfg)
            bags.append((bag_arrays, bag_logit[: len(xv)]))
        arrays, v_logit = average_tree_verdicts(bags)
    else:
        xb, yb = with_blinded_copies(xv, data.labels[index], len(data.members),
                                     cfg.verdict_blind, cfg.seed)
        v_mean, v_scale = xb.mean(0), xb.std(0) + 1e-3
        verdict = LogisticRegression(C=cfg.verdict_c, max_iter=2000, class_weight="balanced")
        verdict.fit((xb - v_mean) / v_scale, yb)
        v_logit = verdict.decision_function((xb - v_mean) / v_scale)
        arrays = {"verdict_mean": v_mean, "verdict_scale": v_scale,
                  "verdict_coef": verdict.coef_[0], "verdict_bias": verdict.intercept_}
    v_logit = v_logit[: len(xv)]  # the examples themselves come first

    xs, ys = [], []
    for j, i in enumerate(index):
        px = data.pixel_x[i]
        xs.append(np.concatenate([px, np.full((len(px), 1), v_logit[j], np.float32)], 1))
        ys.append(data.pixel_y[i])
    x, y = np.concatenate(xs), np.concatenate(ys)
    p_mean, p_scale = x.mean(0), x.std(0) + 1e-3
    xz = (x - p_mean) / p_scale
    arrays.update(pixel_mean=p_mean, pixel_scale=p_scale)
    if cfg.hidden > 0:
        mlp = MLPClassifier(hidden_layer_sizes=(cfg.hidden,), alpha=cfg.alpha,
                            max_iter=cfg.max_iter, random_state=cfg.seed,
                            early_stopping=False, learning_rate_init=3e-3, batch_size=512)
        mlp.fit(xz, y)
        arrays.update(hidden_w=mlp.coefs_[0], hidden_b=mlp.intercepts_[0],
                      out_w=mlp.coefs_[1][:, 0], out_b=mlp.intercepts_[1])
    else:
        pix = LogisticRegression(C=1.0, max_iter=2000)
        pix.fit(xz, y)
        arrays.update(hidden_w=np.zeros((xz.shape[1], 0), np.float32),
                      hidden_b=np.zeros(0, np.float32), out_w=pix.coef_[0],
                      out_b=pix.intercept_)
    model = FusionModel(members=data.members, arrays=arrays)
    choose_thresholds(model, data, index)
    return model


def with_blinded_copies(x: np.ndarray, y: np.ndarray, n_members: int, copies: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (E, n_members * len(IMAGE_FEATURES)) followed by ``copies`` copies of it in which
    each row has one member, drawn at random, made blind (its features those
    :func:`image_features` gives a member that is not applicable); ``y`` repeated alike."""
    if copies == 0:
        return x, y
    rng = np.random.default_rng(seed)
    width = len(IMAGE_FEATURES)
    blind = image_features([MemberOutput.blind(str(k), (1, 1)) for k in range(n_members)])
    blocks = [x]
    for _ in range(copies):
        copy = x.copy()
        for row, member in enumerate(rng.integers(0, n_members, len(x))):
            cols = slice(member * width, (member + 1) * width)
            copy[row, cols] = blind[cols]
        blocks.append(copy)
    return np.concatenate(blocks), np.tile(y, copies + 1)


def average_tree_verdicts(bags: Sequence[tuple[dict[str, np.ndarray], np.ndarray]]
                          ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One tree verdict whose logit is the mean of the ``bags``' logits: their trees side by
    side (node arrays padded to the longest with unreachable leaves of value 0), each leaf
    value and the bias divided by the number of bags; and the mean of their fitted logits."""
    if len(bags) == 1:
        return bags[0]
    k = len(bags)
    size = max(a["verdict_tree_feature"].shape[1] for a, _ in bags)
    fill = {"verdict_tree_feature": -1}
    merged: dict[str, np.ndarray] = {}
    for key in TREE_ARRAYS:
        parts = []
        for a, _ in bags:
            part = a[key]
            pad = np.full((part.shape[0], size - part.shape[1]), fill.get(key, 0), part.dtype)
            parts.append(np.concatenate([part, pad], 1))
        merged[key] = np.concatenate(parts, 0)
    merged["verdict_tree_value"] = merged["verdict_tree_value"] / k
    merged["verdict_bias"] = np.mean([a["verdict_bias"] for a, _ in bags], 0)
    return merged, np.mean([logit for _, logit in bags], 0)


def _fit_tree_verdict(x: np.ndarray, y: np.ndarray, cfg: FitConfig
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Boosted trees (scikit-learn's histogram gradient boosting, classes balanced) on the
    ``(E, Fi)`` image features, exported as the arrays :class:`FusionModel` walks with numpy
    (model.TREE_ARRAYS), and the fitted logits of ``x``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=cfg.verdict_trees, max_depth=cfg.verdict_depth, learning_rate=cfg.verdict_lr,
        class_weight="balanced", early_stopping=False, random_state=cfg.seed)
    clf.fit(x, y)
    # The fitted trees are read from scikit-learn's private predictor arrays (no public API
    # exposes them); tests/test_auto.py checks the exported walk against clf's own logits, so
    # a scikit-learn that changes them fails there, not silently.
    trees = [predictors[0].nodes for predictors in clf._predictors]
    size = max(len(t) for t in trees)
    feature = np.full((len(trees), size), -1, np.int32)
    threshold = np.zeros((len(trees), size), np.float64)
    left = np.zeros((len(trees), size), np.int32)
    right = np.zeros((len(trees), size), np.int32)
    value = np.zeros((len(trees), size), np.float64)
    for i, nodes in enumerate(trees):
        n = len(nodes)
        inner = ~nodes["is_leaf"].astype(bool)
        feature[i, :n] = np.where(inner, nodes["feature_idx"], -1)
        threshold[i, :n] = nodes["num_threshold"]
        left[i, :n], right[i, :n] = nodes["left"], nodes["right"]
        value[i, :n] = np.where(inner, 0.0, nodes["value"])
    arrays = {"verdict_tree_feature": feature, "verdict_tree_threshold": threshold,
              "verdict_tree_left": left, "verdict_tree_right": right,
              "verdict_tree_value": value,
              "verdict_bias": np.asarray(clf._baseline_prediction, np.float64).reshape(1)}
    return arrays, clf.decision_function(x)


def predict(model: FusionModel, ex: LabelledImage) -> tuple[float, np.ndarray]:
    """(score, map), each remapped so its threshold reads 0.5, for one example."""
    outs = [ex.outputs[m] for m in model.members]
    verdict = model.verdict(image_features(outs))
    prob = model.pixel_probability(pixel_features(outs), verdict).reshape(ex.truth.shape)
    return model.to_score(verdict), model.to_map(prob)


def choose_thresholds(model: FusionModel, data: Prepared, index: Sequence[int]) -> None:
    """Set ``model``'s two thresholds from the examples ``index``.

    Map: the candidate with the best mean F1 over the forgeries, subject to the authentic
    images' mean flagged fraction staying at most :data:`MAX_AUTHENTIC_PIXELS`. Verdict: the
    lowest that flags at most :data:`MAX_AUTHENTIC_FLAGGED` of the authentic images (0.5
    without any).
    """
    f1 = np.zeros(len(THRESHOLDS))
    fpr = np.zeros(len(THRESHOLDS))
    n_t = 0
    authentic_verdicts = []
    for i in index:
        ex = data.examples[i]
        outs = [ex.outputs[m] for m in model.members]
        verdict = model.verdict(image_features(outs))
        prob = model.pixel_probability(pixel_features(outs), verdict)
        if ex.tampered:
            gt = ex.truth.ravel()
            for k, t in enumerate(THRESHOLDS):
                pred = prob >= t
                tp = int(np.count_nonzero(pred & gt))
                fp = int(np.count_nonzero(pred & ~gt))
                fn = int(np.count_nonzero(~pred & gt))
                f1[k] += M.scores_from_counts(tp, fp, fn)["f1"]
            n_t += 1
        else:
            fpr += np.array([(prob >= t).mean() for t in THRESHOLDS])
            authentic_verdicts.append(verdict)
    f1 /= max(1, n_t)
    fpr /= max(1, len(authentic_verdicts))
    model.pixel_threshold = M.best_threshold_bounded(
        f1, fpr if authentic_verdicts else None, THRESHOLDS, MAX_AUTHENTIC_PIXELS
    )
    if authentic_verdicts:
        v = np.sort(np.asarray(authentic_verdicts))[::-1]
        allowed = int(np.floor(MAX_AUTHENTIC_FLAGGED * len(v)))  # images flagged at most
        # Just above the highest authentic verdict that must stay below the threshold.
        t = float(np.nextafter(v[allowed], 1.0)) if allowed < len(v) else float(v[-1])
        model.verdict_threshold = float(np.clip(t, 1e-4, 1 - 1e-4))


# --------------------------------------------------------------------------- read-out


def evaluate(predictions: Sequence[tuple[LabelledImage, float, np.ndarray]]) -> dict[str, Any]:
    """Benchmark figures of (example, verdict, map) triples: mean F1/IoU at 0.5 over forgeries,
    image AUC and ECE of the verdict, authentic flagged fraction, and the share of forgeries /
    authentic images a ``--fail-on G`` gate stops for each G in ``FAIL_ON_GATES``."""
    f1, iou, fpr, scores, labels = [], [], [], [], []
    for ex, verdict, hm in predictions:
        scores.append(verdict)
        labels.append(ex.tampered)
        pred = hm >= 0.5
        if ex.tampered:
            s = M.scores_from_counts(*M.mask_counts(pred, ex.truth))
            f1.append(s["f1"])
            iou.append(s["iou"])
        else:
            fpr.append(float(pred.mean()))
    s, y = np.array(scores), np.array(labels, bool)
    return {
        "n_tampered": int(y.sum()), "n_authentic": int((~y).sum()),
        "f1": _r(np.mean(f1)) if f1 else None, "iou": _r(np.mean(iou)) if iou else None,
        "authentic_fpr": _r(np.mean(fpr)) if fpr else None,
        "image_auc": _r(M.image_auc(s, y)),
        "ece": _r(M.expected_calibration_error(s, y)),
        "fail_on_0.5_tampered": _r((s[y] >= 0.5).mean()) if y.any() else None,
        "fail_on_0.5_authentic": _r((s[~y] >= 0.5).mean()) if (~y).any() else None,
        # The CI-gate table of docs/methods/auto.md, kept with the fit that it describes.
        "fail_on": {
            f"{g:.1f}": {
                "tampered": _r((s[y] >= g).mean()) if y.any() else None,
                "authentic": _r((s[~y] >= g).mean()) if (~y).any() else None,
            }
            for g in FAIL_ON_GATES
        },
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def contributions(model: FusionModel, data: Prepared, index: Sequence[int]) -> dict[str, float]:
    """Each member's share of the fusion: how much mean F1 + image AUC fall on the examples
    ``index`` when that member alone is made blind, normalized to sum to 1."""
    chosen = [data.examples[i] for i in index]
    base = evaluate([(ex, *predict(model, ex)) for ex in chosen])
    drops = {}
    for m in model.members:
        preds = []
        for ex in chosen:
            blinded = dict(ex.outputs)
            blinded[m] = MemberOutput.blind(m, ex.truth.shape)
            view = LabelledImage(ex.key, ex.group, ex.image, ex.truth, ex.tampered, blinded)
            preds.append((ex, *predict(model, view)))
        out = evaluate(preds)
        drops[m] = max(0.0, (base["f1"] or 0) - (out["f1"] or 0)) + max(
            0.0, (base["image_auc"] or 0) - (out["image_auc"] or 0))
    total = sum(drops.values()) or 1.0
    return {m: round(d / total, 4) for m, d in drops.items()}


def fit_all(data: Prepared, cfg: FitConfig,
            progress: Callable[[str], None] | None = None) -> tuple[FusionModel, dict[str, Any]]:
    """The shipped model (fitted on the synthetic examples; thresholds on half A of the real
    ones when there are any) and its card's ``metrics`` section."""
    from forgectl.evaluation.datasets import halves

    start = time.monotonic()
    synthetic = np.flatnonzero(~data.real)
    real = np.flatnonzero(data.real)
    if not synthetic.size:
        raise ValueError("the fusion is fitted on synthetic examples: there are none")
    model = fit_model(data, synthetic, cfg)

    def figures(index: np.ndarray) -> dict[str, Any]:
        return evaluate([(data.examples[i], *predict(model, data.examples[i])) for i in index])

    report: dict[str, Any] = {
        "thresholds_on_synthetic": {"pixel": model.pixel_threshold,
                                    "verdict": round(model.verdict_threshold, 6)}}
    if progress:
        progress(f"fitted on {synthetic.size} synthetic images")
    if real.size:
        keys = [data.examples[i].key.split("/", 1)[-1] for i in real]
        strata = [(bool(data.labels[i]), data.examples[i].manipulation) for i in real]
        half_a, half_b = (real[np.asarray(h, int)] for h in halves(keys, strata))
        choose_thresholds(model, data, half_a)
        report.update({
            "thresholds_on_dev_half_a": {"pixel": model.pixel_threshold,
                                         "verdict": round(model.verdict_threshold, 6)},
            "dev_half_b": figures(half_b),
            "dev_half_a": figures(half_a),
            "dev_all": figures(real),
        })
    report["synthetic_in_sample"] = figures(synthetic)
    # Contributions feed the reliability map, so they come from the fitting data as well.
    model.contributions = contributions(model, data, synthetic)
    report.update({
        "fit_seconds": round(time.monotonic() - start, 1),
        "features": {"pixel": list(PIXEL_FEATURES) + ["verdict_logit (once)"],
                     "image": list(IMAGE_FEATURES)},
    })
    return model, report
