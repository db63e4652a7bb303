"""Which image-level verdict for ``auto``: logistic regression against boosted trees, with and
without the members' ``peak`` feature (docs/methods/auto.md, "Choosing the verdict").

Reads the member outputs a fit already cached (``forgectl train --method auto ... --out RUN``
leaves ``RUN/synthetic`` and ``RUN/cache``), so it runs no member. For each candidate it prints
the image AUC of 5-fold cross-validation on the synthetic fitting set, of the fit on all of it
read on casia1-dev's half A (the two that choose), and on half B (reported, chose nothing)::

    python benchmarks/verdict_study.py runs/auto-trees --dev ../shared/bench/casia1-dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from forgectl import metrics as M
    from forgectl.evaluation.datasets import halves, load_dataset
    from forgectl.fusion.collect import collect
    from forgectl.fusion.features import IMAGE_FEATURES, image_features
    from forgectl.fusion.fit import FitConfig
    from forgectl.fusion.recipe import recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a fit's run folder (synthetic/ and cache/)")
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    members = list(recipe().config_for("tiny")["members"])
    datasets = [("synthetic", load_dataset(args.run / "synthetic")),
                (args.dev.name, load_dataset(args.dev))]
    examples = collect(datasets, members, args.run / "cache", lambda _msg: None)

    x = np.stack([image_features([ex.outputs[m] for m in members]) for ex in examples])
    y = np.array([ex.tampered for ex in examples])
    syn = np.array([ex.group == "synthetic" for ex in examples])
    real = np.flatnonzero(~syn)
    keys = [examples[i].key.split("/", 1)[-1] for i in real]
    strata = [(bool(y[i]), examples[i].manipulation) for i in real]
    half_a, half_b = (real[np.asarray(h, int)] for h in halves(keys, strata))
    no_peak = np.array([f != "peak" for _ in members for f in IMAGE_FEATURES])

    def logistic(c: float):
        def fit(xs: np.ndarray, ys: np.ndarray):
            mean, scale = xs.mean(0), xs.std(0) + 1e-3
            clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
            clf.fit((xs - mean) / scale, ys)
            return lambda q: clf.decision_function((q - mean) / scale)
        return fit

    def trees(n: int, depth: int, lr: float):
        def fit(xs: np.ndarray, ys: np.ndarray):
            from sklearn.ensemble import HistGradientBoostingClassifier

            # The settings of forgectl.fusion.fit._fit_tree_verdict (whose exported trees a
            # test checks against scikit-learn's own decision function).
            clf = HistGradientBoostingClassifier(
                max_iter=n, max_depth=depth, learning_rate=lr, class_weight="balanced",
                early_stopping=False, random_state=FitConfig().seed).fit(xs, ys)
            return clf.decision_function
        return fit

    candidates = [(f"logistic C={c}", logistic(c)) for c in (0.2, 0.5, 2.0)]
    candidates += [(f"trees n={n} depth={d} lr={lr}", trees(n, d, lr))
                   for n, d, lr in ((100, 2, 0.1), (300, 2, 0.03), (100, 3, 0.1))]
    xs, ys = x[syn], y[syn]
    rows = []
    print("| verdict | features | synthetic 5-fold CV AUC | half A AUC | mean (chooses) "
          "| half B AUC (reported) |")
    print("|---|---|---:|---:|---:|---:|")
    for label, fit in candidates:
        for feats, cols in (("with peak", slice(None)), ("without peak", no_peak)):
            cv = []
            for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(xs, ys):
                score = fit(xs[tr][:, cols], ys[tr])
                cv.append(M.image_auc(score(xs[te][:, cols]), ys[te]))
            score = fit(xs[:, cols], ys)(x[:, cols])
            a, b = M.image_auc(score[half_a], y[half_a]), M.image_auc(score[half_b], y[half_b])
            row = {"verdict": label, "features": feats, "cv": float(np.mean(cv)),
                   "half_a": a, "half_b": b}
            rows.append(row)
            print(f"| {label} | {feats} | {row['cv']:.3f} | {a:.3f} | "
                  f"{(row['cv'] + a) / 2:.3f} | {b:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
