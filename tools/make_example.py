"""Make the bundled example forgery `examples/splice.jpg` (+ its ground-truth mask).

A dog cut from one CC-BY-4.0 photo is pasted into another CC-BY-4.0 photo by the same author
(both from Debian's lomiri-wallpapers package, via ../shared/corpus). History: host resized and
saved at JPEG q=80, object cut with GrabCut, colour-matched, pasted, whole saved at q=92, so
the background is double-compressed and the object is not. Run from the repo root:

    python tools/make_example.py ../shared/corpus
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

WALL = "debian_wallpapers/lomiri-wallpapers-16.04"


def main(corpus: Path, out_dir: Path) -> None:
    host = Image.open(corpus / WALL / "life_by_Aitzol_Berasategi.jpg").convert("RGB")
    host = host.resize((1024, 682), Image.LANCZOS)
    buf = io.BytesIO()
    host.save(buf, "JPEG", quality=80)
    host_rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()

    donor_path = corpus / WALL / "friends_by_Aitzol_Berasategi.jpg"
    donor = np.asarray(Image.open(donor_path).convert("RGB"))
    h, w = donor.shape[:2]
    y0, y1, x0, x1 = int(0.26 * h), int(0.385 * h), int(0.28 * w), int(0.56 * w)
    crop = np.ascontiguousarray(donor[y0:y1, x0:x1])
    scale = 240 / crop.shape[1]
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    mask = np.zeros(crop.shape[:2], np.uint8)
    rect = (8, 8, crop.shape[1] - 16, crop.shape[0] - 16)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(crop[:, :, ::-1].copy(), mask, rect, bgd, fgd, 6, cv2.GC_INIT_WITH_RECT)
    obj = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(obj)
    obj = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    obj = cv2.morphologyEx(obj, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))

    # Partial colour transfer in Lab towards the host region, as a careful forger would.
    py, px = 330, 520
    region = host_rgb[py : py + crop.shape[0], px : px + crop.shape[1]]
    lab_c = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_h = cv2.cvtColor(region, cv2.COLOR_RGB2LAB).astype(np.float32)
    sel = obj.astype(bool)
    for c in range(3):
        mc, sc = lab_c[:, :, c][sel].mean(), lab_c[:, :, c][sel].std() + 1e-3
        mh, sh = lab_h[:, :, c].mean(), lab_h[:, :, c].std() + 1e-3
        target = (lab_c[:, :, c] - mc) * (0.5 + 0.5 * sh / sc) + (0.6 * mc + 0.4 * mh)
        lab_c[:, :, c] = target
    matched = cv2.cvtColor(np.clip(lab_c, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    alpha = cv2.GaussianBlur(obj.astype(np.float32), (0, 0), 1.2)[:, :, None]
    out = host_rgb.astype(np.float32)
    out[py : py + crop.shape[0], px : px + crop.shape[1]] = (
        alpha * matched + (1 - alpha) * region.astype(np.float32)
    )
    full_mask = np.zeros(host_rgb.shape[:2], np.uint8)
    full_mask[py : py + crop.shape[0], px : px + crop.shape[1]] = (alpha[:, :, 0] > 0.5) * 255
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(
        out_dir / "splice.jpg", "JPEG", quality=92
    )
    Image.fromarray(full_mask).save(out_dir / "splice.mask.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus"), Path("examples"))
