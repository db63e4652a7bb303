"""Quick dev-set check of one method on the first N casia1-dev images (sorted by name).

Reports the mean per-image F1 of ``result.mask`` against the ground truth (mask > 127), the F1
of an all-ones mask for context, the per-image best of 19 thresholds (an optimistic bound), and
the flagged fraction and image-level AUC on the first N authentic images. For the full,
stratified numbers use ``forgectl benchmark``. Usage::

    .venv/bin/python benchmarks/casia_first_n.py METHOD [N] [-p KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from forgectl import registry
from forgectl.commands.localize import parse_params
from forgectl.intake import load_image
from forgectl.metrics import image_auc, pixel_scores

CASIA = Path(__file__).resolve().parents[2] / "shared" / "bench" / "casia1-dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("n", nargs="?", type=int, default=30)
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("--casia", type=Path, default=CASIA)
    args = parser.parse_args()
    backend = registry.load(args.method, **parse_params(args.param))

    f1, ones, best, scores, flagged = [], [], [], [], []
    start = time.perf_counter()
    for path in sorted((args.casia / "images").glob("*.jpg"))[: args.n]:
        mask_path = args.casia / "masks" / f"{path.stem}.png"
        gt = np.asarray(Image.open(mask_path).convert("L")) > 127
        result = backend.localize(load_image(path))
        f1.append(pixel_scores(result.mask, gt)["f1"])
        ones.append(pixel_scores(np.ones_like(gt), gt)["f1"])
        thresholds = np.linspace(0.05, 0.95, 19)
        best.append(max(pixel_scores(result.heatmap >= t, gt)["f1"] for t in thresholds))
        scores.append(result.score)
        flagged.append(result.tampered_fraction)
    seconds = time.perf_counter() - start
    auth_scores, auth_flagged = [], []
    for path in sorted((args.casia / "authentic").glob("*.jpg"))[: args.n]:
        result = backend.localize(load_image(path))
        auth_scores.append(result.score)
        auth_flagged.append(result.tampered_fraction)
    auc = image_auc(scores + auth_scores, [1] * len(scores) + [0] * len(auth_scores))
    print(
        f"{args.method} tampered n={len(f1)}: mean F1 {np.mean(f1):.3f} "
        f"(all-ones mask {np.mean(ones):.3f}, best-of-19-thresholds {np.mean(best):.3f}), "
        f"mean flagged {np.mean(flagged):.3f}, {seconds:.1f} s"
    )
    print(
        f"authentic n={len(auth_flagged)}: mean flagged {np.mean(auth_flagged):.3f}; "
        f"image AUC of the score {auc:.3f}"
    )


if __name__ == "__main__":
    main()
