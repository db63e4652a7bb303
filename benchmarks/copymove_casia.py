"""Evaluate the ``copymove`` method on the CASIA v1 dev split's copy-move images.

CASIA v1 names same-image copy-moves ``Sp_S_*``; its masks mark only the pasted (target)
region, while copymove marks both the source and the copy, so F1 against these masks is at most
about 0.67 for a perfect copy-move localization. The script also reports recall of the pasted
region, the detection rate, and the score distribution on the first N authentic images (sorted
by name). Usage::

    .venv/bin/python benchmarks/copymove_casia.py [CASIA_DIR] [--authentic 30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from forgectl import registry
from forgectl.intake import load_image
from forgectl.metrics import pixel_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "casia", nargs="?", default=Path(__file__).resolve().parents[2] / "shared/bench/casia1-dev"
    )
    parser.add_argument("--authentic", type=int, default=30)
    args = parser.parse_args()
    root = Path(args.casia)
    cv2.setNumThreads(1)
    backend = registry.load("copymove")

    rows = []
    start = time.time()
    for path in sorted((root / "images").glob("Sp_S_*")):
        image = load_image(path)
        result = backend.localize(image)
        gt = cv2.imread(str(root / "masks" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        scores = pixel_scores(result.mask, gt)
        rows.append(
            {
                "name": path.name,
                "score": result.score,
                **scores,
                "transforms": len(result.facts["transforms"]),
            }
        )
    tampered_seconds = time.time() - start

    auth = []
    for path in sorted((root / "authentic").glob("*"))[: args.authentic]:
        result = backend.localize(load_image(path))
        auth.append(
            {
                "name": path.name,
                "score": result.score,
                "flagged_fraction": float(result.mask.mean()),
            }
        )

    f1 = np.array([r["f1"] for r in rows])
    rec = np.array([r["recall"] for r in rows])
    det = np.array([r["transforms"] > 0 for r in rows])
    a_scores = np.array([a["score"] for a in auth])
    summary = {
        "copy_move_images": len(rows),
        "mean_f1": round(float(f1.mean()), 4),
        "mean_f1_detected_only": round(float(f1[det].mean()), 4) if det.any() else None,
        "mean_recall_of_pasted_region": round(float(rec.mean()), 4),
        "detected_fraction": round(float(det.mean()), 4),
        "tampered_scores_quantiles_10_50_90": [
            round(float(q), 3) for q in np.quantile([r["score"] for r in rows], [0.1, 0.5, 0.9])
        ],
        "authentic_images": len(auth),
        "authentic_score_quantiles_0_50_90_100": [
            round(float(q), 3) for q in np.quantile(a_scores, [0.0, 0.5, 0.9, 1.0])
        ],
        "authentic_with_score_above_0": int((a_scores > 0).sum()),
        "authentic_with_score_at_least_0.5": int((a_scores >= 0.5).sum()),
        "authentic_mean_flagged_fraction": round(
            float(np.mean([a["flagged_fraction"] for a in auth])), 5
        ),
        "seconds_per_copy_move_image": round(tampered_seconds / max(1, len(rows)), 3),
    }
    print(json.dumps(summary, indent=2))
    flagged = [a for a in auth if a["score"] > 0]
    if flagged:
        print("authentic images with score > 0:", json.dumps(flagged))


if __name__ == "__main__":
    main()
