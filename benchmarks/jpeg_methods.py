"""Measurements behind docs/methods/dq.md and docs/methods/grid.md.

Usage (from the repository root):

    .venv/bin/python benchmarks/jpeg_methods.py casia dq 30      # first 30 casia1-dev images
    .venv/bin/python benchmarks/jpeg_methods.py synthetic dq     # corpus-built histories
    .venv/bin/python benchmarks/jpeg_methods.py synthetic grid
    .venv/bin/python benchmarks/jpeg_methods.py make-12mp /tmp/big.jpg
    /usr/bin/time -v .venv/bin/python benchmarks/jpeg_methods.py run dq /tmp/big.jpg

``casia``: mean F1 of ``result.mask`` against the mask (> 127) over the first N tampered images in
name order, plus mean score and flagged fraction on the first N authentic images.
``synthetic``: forgeries built here from the lossless urban100 corpus photos (hosts) and
sun_hays80 / urban100 donors; never from the dev set, so thresholds can be set on it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from forgectl import registry
from forgectl.intake import encode_jpeg, image_from_bytes, load_image

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))


def _decode(data: bytes) -> np.ndarray:
    return np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), 1)[:, :, ::-1])


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * float((pred & truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)


def casia(method: str, count: int) -> None:
    root = SHARED / "bench" / "casia1-dev"
    backend = registry.load(method)
    f1s, scores, fracs, flat, seconds = [], [], [], 0, 0.0
    for path in sorted((root / "images").glob("*.jpg"))[:count]:
        image = load_image(path)
        truth = np.asarray(Image.open(root / "masks" / f"{path.stem}.png").convert("L")) > 127
        start = time.perf_counter()
        result = backend.localize(image)
        seconds += time.perf_counter() - start
        f1s.append(_f1(result.mask, truth))
        scores.append(result.score)
        fracs.append(result.tampered_fraction)
        flat += int(result.heatmap.min() == result.heatmap.max())
        print(
            f"{path.name:44s} F1={f1s[-1]:.3f} score={result.score:.2f} "
            f"flagged={result.tampered_fraction:.3f}  {result.note[:50]}"
        )
    print(
        f"{method} tampered n={len(f1s)} meanF1={np.mean(f1s):.3f} "
        f"F1>0.5: {sum(f > 0.5 for f in f1s)} meanScore={np.mean(scores):.3f} "
        f"meanFlagged={np.mean(fracs):.3f} constant-heatmaps={flat} "
        f"s/img={seconds / max(len(f1s), 1):.2f}"
    )
    authentic = [
        backend.localize(load_image(p)) for p in sorted((root / "authentic").glob("*.jpg"))[:count]
    ]
    print(
        f"{method} authentic n={len(authentic)} "
        f"meanScore={np.mean([r.score for r in authentic]):.3f} "
        f"meanFlagged={np.mean([r.tampered_fraction for r in authentic]):.3f}"
    )


def _crop(rng, arr, h, w, aligned=True):
    y = int(rng.integers(0, arr.shape[0] - h))
    x = int(rng.integers(0, arr.shape[1] - w))
    if aligned:
        y, x = y // 8 * 8, x // 8 * 8
    return arr[y : y + h, x : x + w]


def synthetic(method: str, height: int = 384, width: int = 512) -> None:
    """Per-case mean F1 / score / flagged fraction over the 20 urban100 hosts."""
    rng = np.random.default_rng(7)
    urban = sorted((SHARED / "corpus" / "urban100").glob("*.png"))
    sun = sorted((SHARED / "corpus" / "sun_hays80").glob("*.jpg"))
    backend = registry.load(method)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    yy, xx = np.mgrid[:height, :width]
    for i, path in enumerate(urban):
        src = np.asarray(Image.open(path).convert("RGB"))
        host_raw = _crop(rng, src, height + 8, width + 8)
        q1 = int(rng.choice([60, 70, 75, 80]))
        q2 = int(rng.choice([85, 90, 95]))
        host = _decode(encode_jpeg(host_raw, q1))
        other = np.asarray(Image.open(urban[(i + 7) % len(urban)]).convert("RGB"))
        web = np.asarray(Image.open(sun[i]).convert("RGB"))
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        dy, dx = (int(v) for v in rng.integers(1, 8, 2))
        # Donors: never compressed (aligned paste), a web JPEG cropped off its grid, and an
        # urban100 crop compressed here at q_d and shifted by (dy, dx).
        pristine = _crop(rng, other, height, width)
        off_grid_web = _crop(rng, web, height, width, aligned=False)
        shifted = _decode(
            encode_jpeg(_crop(rng, other, height + 8, width + 8), int(rng.choice([60, 70, 80])))
        )[dy : dy + height, dx : dx + width]
        h0 = host[:height, :width]
        cases = {
            "untouched single": host_raw[:height, :width],
            "untouched double": h0,
            "untouched cropped-double": host[3 : 3 + height, 5 : 5 + width],
        }
        for name, donor in (
            ("paste never-compressed", pristine),
            ("paste web-JPEG off-grid", off_grid_web),
            ("paste JPEG shifted", shifted),
        ):
            forged = h0.copy()
            forged[mask] = donor[mask]
            cases[name] = forged
        for name, arr in cases.items():
            result = backend.localize(image_from_bytes(encode_jpeg(np.ascontiguousarray(arr), q2)))
            truth = mask if name.startswith("paste") else np.zeros_like(mask)
            rows.setdefault(name, []).append(
                (_f1(result.mask, truth), result.score, result.tampered_fraction)
            )
    print(f"{method} on {len(urban)} urban100 hosts, {height}x{width}, q1 in 60..80, q2 in 85..95")
    for name, vals in rows.items():
        v = np.array(vals)
        f1 = f"meanF1={v[:, 0].mean():.3f} medianF1={np.median(v[:, 0]):.3f}"
        print(
            f"  {name:26s} {f1 if name.startswith('paste') else ' ' * 31} "
            f"meanScore={v[:, 1].mean():.3f} meanFlagged={v[:, 2].mean():.3f}"
        )


def make_12mp(out: str) -> None:
    """4000x3000 JPEG: q70 host, a pristine patch (aligned) and an off-grid q70 patch, at q90."""
    from forgectl.synth.scenes import natural_image

    big = np.tile(natural_image(750, 1000, seed=5), (4, 4, 1))
    big = _decode(encode_jpeg(big, 70))
    big[1000:1800, 1500:2600] = natural_image(800, 1100, seed=9)
    donor = _decode(encode_jpeg(natural_image(700, 700, seed=3), 70))
    big[2003:2603, 301:901] = donor[5:605, 3:603]  # grid lands at (6, 2)
    Path(out).write_bytes(encode_jpeg(big, 90))


def run(method: str, path: str) -> None:
    start = time.perf_counter()
    image = load_image(path)
    loaded = time.perf_counter()
    result = registry.load(method).localize(image)
    done = time.perf_counter()
    print(
        f"{method} {image.width}x{image.height}: load {loaded - start:.1f}s, analyse "
        f"{done - loaded:.1f}s, score {result.score:.2f}, flagged {result.tampered_fraction:.3f}"
    )


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "casia":
        casia(args[0], int(args[1]) if len(args) > 1 else 30)
    elif command == "synthetic":
        synthetic(args[0], *(int(a) for a in args[1:3]))
    elif command == "make-12mp":
        make_12mp(args[0])
    elif command == "run":
        run(args[0], args[1])
    else:
        raise SystemExit(__doc__)
