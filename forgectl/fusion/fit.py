"""Fitting the fusion (``forgectl train --method auto``), with a cross-validated read-out.

Data: synthetic forgeries (a ``forgectl synth`` folder: always in the fitting set) and,
optionally, a real dev set (e.g. casia1-dev). Because the dev set is both fitting data and the
yardstick, every figure on it is reported twice: *in-sample* (the shipped model on the data it
was fitted on) and *cross-validated* (5 folds: each dev image scored by a model fitted without
it, and without choosing anything on it). The model is small on purpose (a few hundred numbers,
counted in the card) so that it cannot memorise the dev set.

Steps of one fit: the verdict (logistic regression, L2) on image features; the per-pixel
perceptron on sampled pixels (half inside, half outside the mask of a forgery), with the
verdict's logit as one more input; the map threshold that maximizes mean F1 over the fitting
images (stored, so the map reads 0.5 there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgectl import metrics as M
from forgectl.fusion.collect import LabelledImage
from forgectl.fusion.features import IMAGE_FEATURES, PIXEL_FEATURES, image_features, pixel_features
from forgectl.fusion.model import FusionModel

#: Pixels sampled per fitting image (half inside the mask for forgeries).
PIXELS_PER_IMAGE = 400
#: Candidate map thresholds (on the perceptron's probability).
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)


@dataclass
class FitConfig:
    """Hyper-parameters of one fit (configs as data)."""

    hidden: int = 8
    alpha: float = 1e-3
    verdict_c: float = 0.5
    #: Weight of a synthetic example relative to a real one (there are often more of them, and
    #: they are further from the test data).
    synthetic_weight: float = 0.5
    seed: int = 0
    max_iter: int = 300

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
    """Fit on the examples ``index`` (the verdict, then the map, then its threshold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    w_img = np.where(data.real[index], 1.0, cfg.synthetic_weight)
    # The verdict is a probability, so it is fitted on real forgeries when there are any:
    # with the synthetic ones mixed in (easier, another share of forgeries) its calibration
    # error on casia1-dev doubled (0.089 against 0.040, 5-fold; docs/methods/auto.md).
    v_index = index[data.real[index]] if data.real[index].any() else index
    xv = data.image_x[v_index]
    v_mean, v_scale = xv.mean(0), xv.std(0) + 1e-3
    verdict = LogisticRegression(C=cfg.verdict_c, max_iter=2000)
    verdict.fit((xv - v_mean) / v_scale, data.labels[v_index])
    xi = data.image_x[index]
    v_logit = verdict.decision_function((xi - v_mean) / v_scale)

    xs, ys = [], []
    for j, i in enumerate(index):
        px = data.pixel_x[i]
        xs.append(np.concatenate([px, np.full((len(px), 1), v_logit[j], np.float32)], 1))
        ys.append(data.pixel_y[i])
    x, y = np.concatenate(xs), np.concatenate(ys)
    weights = np.concatenate([np.full(len(ys[j]), w_img[j]) for j in range(len(index))])
    p_mean, p_scale = x.mean(0), x.std(0) + 1e-3
    xz = (x - p_mean) / p_scale
    arrays = {"verdict_mean": v_mean, "verdict_scale": v_scale,
              "verdict_coef": verdict.coef_[0], "verdict_bias": verdict.intercept_,
              "pixel_mean": p_mean, "pixel_scale": p_scale}
    if cfg.hidden > 0:
        # MLPClassifier has no sample weights: repeat real examples' pixels instead.
        reps = np.where(weights >= 1.0, int(round(1 / max(cfg.synthetic_weight, 1e-3))), 1)
        order = np.repeat(np.arange(len(y)), reps)
        mlp = MLPClassifier(hidden_layer_sizes=(cfg.hidden,), alpha=cfg.alpha,
                            max_iter=cfg.max_iter, random_state=cfg.seed,
                            early_stopping=False, learning_rate_init=3e-3, batch_size=512)
        mlp.fit(xz[order], y[order])
        arrays.update(hidden_w=mlp.coefs_[0], hidden_b=mlp.intercepts_[0],
                      out_w=mlp.coefs_[1][:, 0], out_b=mlp.intercepts_[1])
    else:
        pix = LogisticRegression(C=1.0, max_iter=2000)
        pix.fit(xz, y, sample_weight=weights)
        arrays.update(hidden_w=np.zeros((xz.shape[1], 0), np.float32),
                      hidden_b=np.zeros(0, np.float32), out_w=pix.coef_[0],
                      out_b=pix.intercept_)
    model = FusionModel(members=data.members, arrays=arrays)
    model.pixel_threshold = _best_threshold(model, data, index)
    return model


def predict(model: FusionModel, ex: LabelledImage) -> tuple[float, np.ndarray]:
    """(verdict, map remapped so 0.5 is the threshold) for one example."""
    outs = [ex.outputs[m] for m in model.members]
    verdict = model.verdict(image_features(outs))
    prob = model.pixel_probability(pixel_features(outs), verdict).reshape(ex.truth.shape)
    return verdict, model.to_map(prob)


def _best_threshold(model: FusionModel, data: Prepared, index: np.ndarray) -> float:
    """The map threshold with the best mean F1 over the fitting forgeries, subject to the
    authentic images' mean flagged fraction staying at most 5 % (real examples only when
    there are any: they are what the threshold is for)."""
    chosen = [i for i in index if data.real[i]] or list(index)
    f1 = np.zeros(len(THRESHOLDS))
    fpr = np.zeros(len(THRESHOLDS))
    n_t = n_a = 0
    for i in chosen:
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
            n_a += 1
    f1 /= max(1, n_t)
    fpr /= max(1, n_a)
    ok = fpr <= 0.05 if n_a else np.ones(len(THRESHOLDS), bool)
    if not ok.any():
        return float(THRESHOLDS[-1])
    return float(THRESHOLDS[np.argmax(np.where(ok, f1, -1.0))])


# --------------------------------------------------------------------------- read-out


def evaluate(predictions: Sequence[tuple[LabelledImage, float, np.ndarray]]) -> dict[str, Any]:
    """Benchmark figures of (example, verdict, map) triples: mean F1/IoU at 0.5 over forgeries,
    image AUC and ECE of the verdict, authentic flagged fraction, ``--fail-on 0.5`` rates."""
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
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def cross_validate(data: Prepared, cfg: FitConfig, folds: int = 5,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Out-of-fold figures on the real examples (synthetic ones always fit)."""
    real = np.flatnonzero(data.real)
    synthetic = np.flatnonzero(~data.real)
    rng = np.random.default_rng(cfg.seed)
    # Stratified folds: tampered and authentic images spread evenly.
    fold_of = np.empty(len(real), int)
    for label in (True, False):
        members = np.flatnonzero(data.labels[real] == label)
        rng.shuffle(members)
        fold_of[members] = np.arange(len(members)) % folds
    predictions = []
    for f in range(folds):
        train = np.concatenate([synthetic, real[fold_of != f]])
        model = fit_model(data, train, cfg)
        for i in real[fold_of == f]:
            ex = data.examples[i]
            predictions.append((ex, *predict(model, ex)))
        if progress:
            progress(f"fold {f + 1}/{folds}")
    return evaluate(predictions)


def contributions(model: FusionModel, data: Prepared) -> dict[str, float]:
    """Each member's share of the fusion: how much mean F1 + image AUC fall on the real (else
    all) examples when that member alone is made blind, normalized to sum to 1."""
    from forgectl.fusion.features import MemberOutput

    chosen = [ex for ex, r in zip(data.examples, data.real, strict=True) if r] or data.examples
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


def fit_all(data: Prepared, cfg: FitConfig, folds: int = 5,
            progress: Callable[[str], None] | None = None) -> tuple[FusionModel, dict[str, Any]]:
    """The shipped model (fitted on everything) and its card's ``metrics`` section."""
    start = time.monotonic()
    cv = cross_validate(data, cfg, folds, progress) if data.real.any() else None
    model = fit_model(data, np.arange(len(data.examples)), cfg)
    model.contributions = contributions(model, data)
    real = [ex for ex, r in zip(data.examples, data.real, strict=True) if r]
    synthetic = [ex for ex, r in zip(data.examples, data.real, strict=True) if not r]
    report = {
        "cross_validated_dev": cv,
        "in_sample_dev": evaluate([(ex, *predict(model, ex)) for ex in real]) if real else None,
        "in_sample_synthetic": evaluate([(ex, *predict(model, ex)) for ex in synthetic])
        if synthetic else None,
        "folds": folds,
        "fit_seconds": round(time.monotonic() - start, 1),
        "features": {"pixel": list(PIXEL_FEATURES) + ["verdict_logit (once)"],
                     "image": list(IMAGE_FEATURES)},
    }
    return model, report
