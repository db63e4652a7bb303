"""Cost of reading a JPEG history from pixels (`forgectl/analysis/jpeg_history.py`) at 12 MP.

A photo (``--photo``, else a generated smooth image with noise) is resized to 4000 x 3000, saved
as a JPEG at quality 85, decoded and wrapped as a PNG (a lossless re-save: the history is
found), the same cropped by (3, 5) (found on a grid offset by (5, 3): the JPEG methods' view is
padded back onto it), and the pixels before the JPEG save (never compressed: none is found).
Median of ``--repeats`` runs of ``attach_pixel_history`` each, and the process's peak RSS
before and after (the images themselves are held throughout).

Usage::

    .venv/bin/python benchmarks/jpeg_history_cost.py --photo ../shared/corpus/dresden_prnu/X.JPG
"""

from __future__ import annotations

import argparse
import resource
import time

import cv2
import numpy as np

from forgectl.analysis.jpeg_history import attach_pixel_history
from forgectl.intake import encode_jpeg, image_from_bytes, load_image
from forgectl.outputs import png_bytes


def _photo(path: str | None) -> np.ndarray:
    if path:
        return cv2.resize(load_image(path).rgb, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:3000, 0:4000].astype(np.float32)
    base = np.stack([xx / 4000 * 200, yy / 3000 * 200, (xx + yy) / 7000 * 200], -1) + 20
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", help="a photo to resize to 12 MP (default: generated)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rgb = _photo(args.photo)
    decoded = image_from_bytes(encode_jpeg(rgb, 85)).rgb
    cases = {
        "PNG re-save of a q85 JPEG": image_from_bytes(png_bytes(decoded)),
        "the same cropped by (3, 5)": image_from_bytes(
            png_bytes(np.ascontiguousarray(decoded[3:, 5:]))),
        "never compressed": image_from_bytes(png_bytes(rgb)),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, image in cases.items():
        times = []
        for _ in range(args.repeats):
            image.jpeg, image.jpeg_grid_view, image.pixel_history_checked = None, None, False
            start = time.perf_counter()
            attach_pixel_history(image)
            times.append(time.perf_counter() - start)
        found = "none"
        if image.jpeg is not None or image.jpeg_grid_view is not None:
            found = f"found at grid offset {tuple(image.pixel_history['grid_offset'])}"
        print(f"{name}: {found}, median {np.median(times):.2f} s")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {before:.0f} MB before, {after:.0f} MB after")


if __name__ == "__main__":
    main()
