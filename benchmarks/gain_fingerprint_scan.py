"""How strongly undisturbed images show the histogram fingerprint of a gain below 1.

``forgectl.analysis.restoration.low_gain_fingerprint`` lets that fingerprint decide a
restoration where the classifier is unsure, so no undisturbed photo may reach its correlation
(0.7). This scans folders of photos nobody disturbed and prints the strongest correlations::

    .venv/bin/python benchmarks/gain_fingerprint_scan.py ../shared/corpus ../shared/bench/casia1-dev

(masks and other images with under 32 grey levels score 0: ``fit_contrast_gain`` needs a range).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from forgectl.analysis.restoration import (
    GAIN_SWITCH_MIN_CORRELATION,
    LOW_GAIN_RANGE,
    fit_contrast_gain,
)

SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--show", type=int, default=5, help="strongest files to list")
    args = ap.parse_args()
    lo, hi = LOW_GAIN_RANGE
    for folder in args.folders:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
        scores = []
        for path in files:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            _, corr = fit_contrast_gain(rgb, (lo + hi) / 2, span=(hi - lo) / 2)
            scores.append((corr, path))
        corr = np.array([c for c, _ in scores])
        over = int((corr >= GAIN_SWITCH_MIN_CORRELATION).sum())
        print(f"{folder}: {len(files)} images, {over} at or above "
              f"{GAIN_SWITCH_MIN_CORRELATION}, max {corr.max():.3f}")
        for c, path in sorted(scores, reverse=True)[: args.show]:
            print(f"  {c:.3f}  {path.relative_to(folder)}")


if __name__ == "__main__":
    main()
