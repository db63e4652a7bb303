"""Fit FOCAL's image score on synthetic validation data and write it into the model card.

The clustering gives numbers that describe the cluster structure of an image
(:func:`forgectl.analysis.clustering.structure_features`: is there a forged cluster, its area,
its separation from the pristine one, HDBSCAN's persistence and noise, ...). A logistic
regression on them, fitted on synthetic forgeries and authentic images made from the *val*
photos of the corpus (never the benchmark), turns them into a probability that the image was
manipulated, so ``--fail-on`` means the same with focal as with the other methods. The fit is
stored in the card as ``calibration`` with the setup it belongs to (clustering, fusion,
separation rule); the backend applies it only to results made the same way.

Usage::

    .venv/bin/python tools/calibrate_focal_score.py weights/focal-tiny-lite0.safetensors \\
        --images ../shared/corpus --n 160
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from forgectl.analysis.clustering import STRUCTURE_FEATURES
    from forgectl.backends.focal import FocalBackend
    from forgectl.metrics import image_auc
    from forgectl.outputs import write_json
    from forgectl.synth.engine import SynthesisEngine, list_images, split_sources
    from forgectl.weights import card_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--fusion", action="store_true", help="calibrate the fused setup")
    ap.add_argument("--features", nargs="+", default=list(STRUCTURE_FEATURES),
                    choices=STRUCTURE_FEATURES,
                    help="inputs of the logistic (default: all); 'raw_score' alone is a "
                    "monotone (Platt) rescaling that keeps the raw score's ranking")
    args = ap.parse_args()
    features = tuple(args.features)

    backend = FocalBackend(weights=args.weights, fusion=args.fusion)
    engine = SynthesisEngine(split_sources(list_images(args.images), "val"), seed=args.seed)
    rows, labels, raw = [], [], []
    for i in range(args.n):
        sample = engine.sample(i)
        result = backend.localize(sample.image)
        rows.append([result.facts["structure"][k] for k in features])
        raw.append(result.facts["structure"]["raw_score"])
        labels.append(int(np.asarray(sample.mask).any()))
    x, y = np.asarray(rows, np.float64), np.asarray(labels)
    model = LogisticRegression(C=1.0, max_iter=2000)
    held_out = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    model.fit(x, y)
    coef = {"bias": float(model.intercept_[0]),
            **{k: float(w) for k, w in zip(features, model.coef_[0], strict=True)}}
    raw_auc = image_auc(np.asarray(raw, np.float64), y)
    fitted = model.predict_proba(x)[:, 1]
    fused = backend.second_path() is not None
    calibration = {
        "coef": coef,
        "setup": backend.score_setup(fused),
        "data": f"{args.n} synthetic samples (seed {args.seed}) from the corpus val photos "
                f"({int(y.sum())} manipulated, {int(len(y) - y.sum())} authentic)",
        "image_auc_raw_score": None if raw_auc is None else round(raw_auc, 4),
        "image_auc_5fold": round(float(image_auc(held_out, y)), 4),
        "ece_5fold": round(_ece(held_out, y), 4),
        "ece_raw_score": round(_ece(np.clip(np.asarray(raw, np.float64), 0, 1), y), 4),
        "ece_fitted": round(_ece(fitted, y), 4),
        "command": f"tools/calibrate_focal_score.py {args.weights} --images {args.images} "
                   f"--n {args.n} --seed {args.seed}" + (" --fusion" if args.fusion else "")
                   + (f" --features {' '.join(features)}"
                      if features != STRUCTURE_FEATURES else ""),
    }
    path = card_path(args.weights)
    card = json.loads(path.read_text())
    card["calibration"] = calibration
    write_json(path, card)
    print(json.dumps(calibration, indent=1))


def _ece(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(float(prob[sel].mean()) - float(label[sel].mean()))
    return float(total)


if __name__ == "__main__":
    main()
