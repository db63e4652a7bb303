"""Which pooling of a method's heatmap makes the best image-level score?

The shipped score of a map method is the heatmap's 99th percentile (``Result.from_heatmap``).
This computes other poolings of the *same* heatmaps and reports each one's image AUC per
dataset, so a change of pooling can be chosen on one half of a dev split and read on the other:

    HF_HUB_OFFLINE=1 FORGECTL_THREADS=2 .venv/bin/python benchmarks/image_score_study.py \\
        --method omni /work/casia-A /work/casia-B
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

from forgectl import registry
from forgectl.evaluation.datasets import load_dataset
from forgectl.intake import load_image
from forgectl.metrics import image_auc


def poolings(heatmap: np.ndarray) -> dict[str, float]:
    """Candidate image scores of one (H, W) heatmap in [0, 1]."""
    values = np.sort(heatmap.ravel())[::-1]
    n = values.size
    labels, count = ndimage.label(heatmap >= 0.5)
    largest = np.bincount(labels.ravel())[1:].max() / n if count else 0.0
    return {
        "p99 (shipped)": float(np.percentile(heatmap, 99)),
        "max": float(values[0]),
        "p99.9": float(np.percentile(heatmap, 99.9)),
        "p95": float(np.percentile(heatmap, 95)),
        "mean": float(heatmap.mean()),
        "top 1 % mean": float(values[: max(1, n // 100)].mean()),
        "top 5 % mean": float(values[: max(1, n // 20)].mean()),
        "flagged fraction": float((heatmap >= 0.5).mean()),
        "largest flagged component": float(largest),
        "max of 15x15 mean": float(ndimage.uniform_filter(heatmap, 15).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="benchmark dataset folders")
    ap.add_argument("--method", default="omni")
    args = ap.parse_args()
    backend = registry.load(args.method)
    table = {}
    for path in args.datasets:
        items = [it for it in load_dataset(path).items if it.problem is None]
        pooled = [poolings(backend.localize(load_image(it.image)).heatmap) for it in items]
        labels = [it.tampered for it in items]
        table[path] = {k: round(float(image_auc([p[k] for p in pooled], labels)), 4)
                       for k in pooled[0]}
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
