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
    args = ap.parse_args()

    backend = FocalBackend(weights=args.weights, fusion=args.fusion)
    engine = SynthesisEngine(split_sources(list_images(args.images), "val"), seed=args.seed)
    rows, labels = [], []
    for i in range(args.n):
        sample = engine.sample(i)
        result = backend.localize(sample.image)
        rows.append([result.facts["structure"][k] for k in STRUCTURE_FEATURES])
        labels.append(int(np.asarray(sample.mask).any()))
    x, y = np.asarray(rows, np.float64), np.asarray(labels)
    model = LogisticRegression(C=1.0, max_iter=2000)
    held_out = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    model.fit(x, y)
    coef = {"bias": float(model.intercept_[0]),
            **{k: float(w) for k, w in zip(STRUCTURE_FEATURES, model.coef_[0], strict=True)}}
    raw_auc = image_auc(x[:, STRUCTURE_FEATURES.index("raw_score")], y)
    fused = backend.second_path() is not None
    calibration = {
        "coef": coef,
        "setup": backend.score_setup(fused),
        "data": f"{args.n} synthetic samples (seed {args.seed}) from the corpus val photos "
                f"({int(y.sum())} manipulated, {int(len(y) - y.sum())} authentic)",
        "image_auc_raw_score": None if raw_auc is None else round(raw_auc, 4),
        "image_auc_5fold": round(float(image_auc(held_out, y)), 4),
        "command": f"tools/calibrate_focal_score.py {args.weights} --images {args.images} "
                   f"--n {args.n} --seed {args.seed}" + (" --fusion" if args.fusion else ""),
    }
    path = card_path(args.weights)
    card = json.loads(path.read_text())
    card["calibration"] = calibration
    write_json(path, card)
    print(json.dumps(calibration, indent=1))


if __name__ == "__main__":
    main()
